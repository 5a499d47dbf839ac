//! The portable scenarios against the kube contexts named in
//! `MESHWORK_E2E_CONTEXTS` (real clusters with Meshwork installed, e.g. the
//! kind clusters of `kind-mesh.sh`). Not part of `cargo test`'s default run
//! (`test = false`): it needs those clusters; run it with
//! `cargo test -p mesh-e2e --test contexts`. The same scenarios run against
//! the local lab in `tests/lab.rs`.

use mesh_e2e::portable::{Contexts, scenarios};
use mesh_e2e::run_scenarios;

#[test]
fn portable_scenarios_against_the_given_contexts() {
    run_scenarios(&Contexts::from_env(), &scenarios());
}
