//! The crate's one error type.

use ipnet::IpNet;

/// What can be wrong with a domain value. Every variant names the offending
/// input and what would have been accepted, so the message can be shown to a
/// person as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A cluster id outside 1–255.
    #[error("cluster id {id} is out of range: it must be 1-255 (0 is reserved, ids are 8 bits)")]
    ClusterIdOutOfRange {
        /// The rejected value.
        id: i64,
    },
    /// A cluster id that is not a number.
    #[error("cluster id {input:?} is not a number: it must be an integer 1-255")]
    ClusterIdNotANumber {
        /// The rejected text.
        input: String,
    },
    /// A cluster name that is not a DNS label of at most 32 characters.
    #[error(
        "cluster name {name:?} is invalid: {reason}; a cluster name is 1-32 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    InvalidClusterName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A node name that is not a DNS subdomain.
    #[error(
        "node name {name:?} is invalid: {reason}; a node name is a DNS subdomain: at most 253 lowercase letters, digits, '-' or '.'"
    )]
    InvalidNodeName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An identity number that cannot be built or decoded.
    #[error("identity {value}: {reason}")]
    InvalidIdentity {
        /// The rejected number.
        value: u64,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A label key or value that Kubernetes would not accept.
    #[error("label {key:?}={value:?} is invalid: {reason}")]
    InvalidLabel {
        /// The label key.
        key: String,
        /// The label value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A label selector expression that cannot be evaluated.
    #[error("label selector on key {key:?} is invalid: {reason}")]
    InvalidSelector {
        /// The key the expression is about.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A Service annotation with a value that is not allowed.
    #[error("annotation {annotation}: value {value:?} is not allowed; use one of {allowed}")]
    InvalidAnnotation {
        /// The annotation key.
        annotation: String,
        /// The rejected value.
        value: String,
        /// The accepted values.
        allowed: &'static str,
    },
    /// A port number outside 1–65535.
    #[error("{what}: port {port} is out of range: it must be 1-65535")]
    InvalidPort {
        /// Which port (service/name) it was.
        what: String,
        /// The rejected number.
        port: i64,
    },
    /// A protocol other than TCP, UDP and SCTP.
    #[error("protocol {protocol:?} is not supported: use TCP, UDP or SCTP")]
    InvalidProtocol {
        /// The rejected protocol.
        protocol: String,
    },
    /// Text that should be an IP address.
    #[error("{what}: {input:?} is not an IP address")]
    InvalidIp {
        /// Which field.
        what: &'static str,
        /// The rejected text.
        input: String,
    },
    /// Text that should be a CIDR.
    #[error("{what}: {input:?} is not a CIDR (expected e.g. 10.1.0.0/16)")]
    InvalidCidr {
        /// Which field.
        what: &'static str,
        /// The rejected text.
        input: String,
    },
    /// A CIDR whose address has bits set beyond its prefix.
    #[error("{what}: {cidr} has host bits set; did you mean {network}?")]
    CidrHostBits {
        /// Which field.
        what: &'static str,
        /// The rejected CIDR.
        cidr: IpNet,
        /// The network it probably meant.
        network: IpNet,
    },
    /// Pod CIDRs of two clusters overlap.
    #[error(
        "pod CIDR {a_cidr} of cluster {a_cluster} overlaps pod CIDR {b_cidr} of cluster {b_cluster}: connected clusters need disjoint pod CIDRs; change one cluster's pod CIDR"
    )]
    CidrOverlap {
        /// First cluster.
        a_cluster: String,
        /// Its overlapping CIDR.
        a_cidr: IpNet,
        /// Second cluster.
        b_cluster: String,
        /// Its overlapping CIDR.
        b_cidr: IpNet,
    },
    /// A WireGuard public key that is not 32 bytes of base64.
    #[error(
        "WireGuard public key {key:?} is invalid: {reason}; expected 44 characters of base64 encoding 32 bytes"
    )]
    InvalidWireGuardKey {
        /// The rejected key text.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A required field is missing from a message.
    #[error("{message}: field {field} is required")]
    MissingField {
        /// The message type.
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// An enum value unknown to this version.
    #[error("{message}: field {field} has unknown value {value}")]
    UnknownEnumValue {
        /// The message type.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A `meshwork-clustermesh` Secret entry that cannot be used.
    #[error(
        "meshwork-clustermesh entry {key:?}: {problem}; rewrite it with `meshctl connect` or fix the Secret"
    )]
    InvalidClusterMeshEntry {
        /// The Secret key (the remote cluster's name).
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A status document that cannot be read.
    #[error(
        "mesh-apiserver status is unreadable: {problem}; is the mesh-apiserver the same version as meshctl?"
    )]
    InvalidStatus {
        /// What is wrong.
        problem: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, for people: `outer: cause: root`,
/// leaving out a cause whose text the line already holds (the crates'
/// messages often name their cause, which also stays in the chain for
/// programs that walk it). What the binaries print when they fail.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests;
