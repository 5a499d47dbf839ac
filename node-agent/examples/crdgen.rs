//! Writes the policy CRDs generated from the Rust types into the chart: ours
//! into its `crds/` (always installed), Cilium's into
//! `templates/cilium-policy-crds.yaml` (installed with
//! `compat.ciliumPolicies`): `cargo run -p node-agent --example crdgen -- helm/meshwork`.

const HEADER: &str = "# Generated from node-agent/src/policy/crd.rs by `make crds`; do not edit.\n";

fn main() -> std::io::Result<()> {
    let chart = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "helm/meshwork".into()),
    );
    let crds = chart.join("crds");
    std::fs::create_dir_all(&crds)?;
    for (name, yaml) in node_agent::policy::crd::crd_yaml() {
        let path = crds.join(name);
        std::fs::write(&path, format!("{HEADER}{yaml}"))?;
        println!("wrote {}", path.display());
    }
    let docs: Vec<String> = node_agent::policy::crd::cilium_crd_yaml()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect();
    let path = chart.join("templates").join("cilium-policy-crds.yaml");
    std::fs::write(
        &path,
        format!(
            "{HEADER}{{{{- if .Values.compat.ciliumPolicies }}}}\n{}{{{{- end }}}}\n",
            docs.join("---\n")
        ),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
