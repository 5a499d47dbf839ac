//! Endpoints as the CNI plugin registers them (`POST /v1/endpoints`) and
//! the agent lists them (`GET /v1/endpoints`).

use std::net::IpAddr;

use mesh_api::Identity;
use serde::{Deserialize, Serialize};

use crate::datapath::EndpointId;

/// What the CNI plugin tells the agent about a new endpoint (`POST
/// /v1/endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRegistration {
    /// The container id (CNI_CONTAINERID).
    pub container_id: String,
    /// The interface name in the pod (CNI_IFNAME).
    pub ifname: String,
    /// The pod's network namespace path (CNI_NETNS).
    pub netns: String,
    /// Host side of the veth.
    pub host_ifname: String,
    /// Its interface index in the node's namespace.
    pub host_ifindex: u32,
    /// The pod side's MAC address.
    #[serde(default)]
    pub pod_mac: Option<String>,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
    /// Pod namespace (K8S_POD_NAMESPACE), when the runtime gave it.
    #[serde(default)]
    pub pod_namespace: Option<String>,
    /// Pod name (K8S_POD_NAME), when the runtime gave it.
    #[serde(default)]
    pub pod_name: Option<String>,
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Node-local endpoint id.
    pub id: EndpointId,
    /// What the CNI registered.
    #[serde(flatten)]
    pub registration: EndpointRegistration,
    /// Security identity (`init` until the labels are resolved).
    pub identity: Identity,
}
