//! The agent's sources of desired state beyond the CNI: the mesh feed (one
//! Watch to the local mesh-apiserver, all clusters) and its own Node.

pub mod mesh;
pub mod node;
