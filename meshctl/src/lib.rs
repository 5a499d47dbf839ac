//! The shapes of `meshctl`'s `-o json` output, for scripts and tests that
//! parse them (the CLI itself is the `meshctl` binary).
//!
//! What it is for: [`report`] — typed, serde-(de)serializable results of
//! `observe`, `encryption status|rotate-key`, `services` and `explain`.
//! What it is not for: the commands' logic (in the binary).

pub mod report;
