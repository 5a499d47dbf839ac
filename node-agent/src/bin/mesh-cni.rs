//! `mesh-cni`: Meshwork's CNI plugin. See `node_agent::cni`.

use std::io::Read as _;
use std::process::ExitCode;

use node_agent::cni::{self, CNI_VERSION, CniEnv};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let env = CniEnv::from_vars(|k| std::env::var(k).ok());
    // VERSION needs no stdin; everything else reads the configuration.
    let needs_stdin = !matches!(&env, Ok(e) if e.command == cni::Command::Version);
    if needs_stdin && let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("mesh-cni: cannot read stdin: {e}");
    }
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CNI_VERSION.to_string());
    match env.and_then(|env| cni::run(&env, &stdin)) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("{}", cni::error_json(&err, &version));
            eprintln!("mesh-cni: {err}");
            ExitCode::FAILURE
        }
    }
}
