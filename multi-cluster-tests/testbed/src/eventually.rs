//! Waiting for something to hold: one poll loop, bounded, whose panic names
//! what was awaited (and, when the caller gives one, what was last seen).
//!
//! Tests poll because the system under test converges on its own time:
//! agents reconcile, clusters resync, a capture arms. Every such wait goes
//! through [`Wait`] (or its shorthands [`eventually`] and
//! [`eventually_async`]) so that a failure reads the same everywhere:
//! `"<what>: not after <timeout>"`.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// A bounded wait: what is awaited, for how long, how often to look.
#[derive(Debug, Clone)]
#[must_use = "a Wait does nothing until one of its `until…` methods runs"]
pub struct Wait {
    what: String,
    timeout: Duration,
    interval: Duration,
}

impl Wait {
    /// A wait for `what` (said in the panic), 30 s at most, looking every 100 ms.
    pub fn new(what: impl Into<String>) -> Wait {
        Wait {
            what: what.into(),
            timeout: Duration::from_secs(30),
            interval: Duration::from_millis(100),
        }
    }

    /// The longest it waits.
    pub fn timeout(mut self, timeout: Duration) -> Wait {
        self.timeout = timeout;
        self
    }

    /// The pause between two looks.
    pub fn interval(mut self, interval: Duration) -> Wait {
        self.interval = interval;
        self
    }

    /// What is awaited.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Polls `cond` until it holds; panics once the timeout has passed.
    pub fn until(&self, mut cond: impl FnMut() -> bool) {
        self.until_some(|| cond().then_some(()));
    }

    /// Polls `f` until it returns `Some`, and returns that.
    pub fn until_some<R>(&self, f: impl FnMut() -> Option<R>) -> R {
        self.until_some_or(f, String::new)
    }

    /// As [`Wait::until_some`]; on timeout the panic adds `last()`, what was
    /// last seen (the state that did not converge), asked for only then.
    pub fn until_some_or<R>(
        &self,
        mut f: impl FnMut() -> Option<R>,
        last: impl Fn() -> String,
    ) -> R {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(r) = f() {
                return r;
            }
            if Instant::now() >= deadline {
                self.fail(&last());
            }
            std::thread::sleep(self.interval);
        }
    }

    /// Polls `f` until it returns `Ok`, and returns that; each `Err` says
    /// what this look saw, and the last one is in the panic.
    pub fn until_ok<R, E: Display>(&self, mut f: impl FnMut() -> Result<R, E>) -> R {
        let deadline = Instant::now() + self.timeout;
        loop {
            let seen = match f() {
                Ok(r) => return r,
                Err(seen) => seen,
            };
            if Instant::now() >= deadline {
                self.fail(&seen.to_string());
            }
            std::thread::sleep(self.interval);
        }
    }

    /// Polls the future `cond` makes until it yields true, sleeping on the
    /// tokio clock (so paused-time tests advance it).
    pub async fn until_async<F, Fut>(&self, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if cond().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                self.fail("");
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    fn fail(&self, last: &str) -> ! {
        if last.is_empty() {
            panic!("{}: not after {:?}", self.what, self.timeout);
        }
        panic!("{}: not after {:?}; last: {last}", self.what, self.timeout);
    }
}

/// Polls `cond` (every 100 ms) until it holds, at most `timeout`; panics
/// naming `what` otherwise.
pub fn eventually(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    Wait::new(what).timeout(timeout).until(cond);
}

/// The async [`eventually`]: polls the future `cond` makes (every 50 ms, on
/// the tokio clock) until it yields true, at most `timeout`.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Wait::new(what)
        .timeout(timeout)
        .interval(Duration::from_millis(50))
        .until_async(cond)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut n = 0;
        let got = Wait::new("three looks")
            .interval(Duration::from_millis(1))
            .until_some(|| {
                n += 1;
                (n == 3).then_some(n)
            });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "the moon: not after 20ms; last: still cheese")]
    fn panics_naming_what_was_awaited_and_what_was_seen() {
        Wait::new("the moon")
            .timeout(Duration::from_millis(20))
            .interval(Duration::from_millis(5))
            .until_some_or(|| None::<()>, || "still cheese".to_string());
    }

    #[test]
    #[should_panic(expected = "a phase: not after 10ms; last: phase \"one\"")]
    fn the_last_error_seen_is_in_the_panic() {
        Wait::new("a phase")
            .timeout(Duration::from_millis(10))
            .interval(Duration::ZERO)
            .until_ok(|| Err::<(), _>(format!("phase {:?}", "one")));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "a flag: not after 1s")]
    async fn the_async_wait_runs_on_the_tokio_clock() {
        eventually_async("a flag", Duration::from_secs(1), || async { false }).await;
    }
}
