//! Writes the policy CRDs generated from the Rust types into a directory
//! (the chart's `crds/`): `cargo run -p node-agent --example crdgen -- helm/meshwork/crds`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "helm/meshwork/crds".into());
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in node_agent::policy::crd::crd_yaml() {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(
            &path,
            format!(
                "# Generated from node-agent/src/policy/crd.rs by `make crds`; do not edit.\n{yaml}"
            ),
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
