//! Network policy: the `MeshNetworkPolicy` and `MeshClusterwideNetworkPolicy`
//! custom resources (group `meshwork.io/v1`), shaped like Cilium's
//! CiliumNetworkPolicy so existing policies translate field for field.
//!
//! The CRDs in the Helm chart are generated from these types
//! (`make crds`), never written by hand; a test compares them.

pub mod compile;
pub mod crd;
pub mod netpol;
