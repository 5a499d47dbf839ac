//! Compiles the eBPF programs in bpf/*.c with clang into OUT_DIR; src/lib.rs
//! embeds the objects with `include_bytes_aligned!`.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["tc_pod", "sock_lb"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=include");
    for entry in std::fs::read_dir(manifest.join("include")).expect("read bpf/include") {
        let path = entry.expect("dir entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for prog in PROGRAMS {
        let src = manifest.join(format!("{prog}.c"));
        let obj = out.join(format!("{prog}.o"));
        println!("cargo:rerun-if-changed={}", src.display());
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to build {}: {e}; install clang (scripts/setup.sh does)",
                    src.display()
                )
            });
        assert!(
            status.success(),
            "{clang} failed to compile {} ({status})",
            src.display()
        );
    }
}
