//! The MTUs the agent gives pods and the WireGuard device: derived from
//! the node interface's MTU (the underlay) and the encryption overhead, or
//! `--mtu` when set (Cilium's `mtu`). The CNI plugin asks the agent for
//! the pod MTU when its configuration names none.
//!
//! WireGuard over IPv4 adds 60 bytes (outer IPv4 20, UDP 8, WireGuard
//! header 16, tag 16); [`WIREGUARD_OVERHEAD`] reserves 80, the IPv6 outer
//! header's size, as wg-quick does, so one figure fits either underlay. With
//! encryption on, pods get the tunnel's MTU: a full-size pod packet then
//! fits the tunnel whole, never fragmented and never dropped for size.

pub use mesh_agent_api::status::MtuStatus;

/// Bytes WireGuard adds to a packet it carries (with room for an IPv6
/// outer header).
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// The MTU assumed when the node interface's cannot be read.
pub const FALLBACK_UNDERLAY_MTU: u32 = 1500;

/// The MTUs for an underlay of `underlay` bytes: `configured` (`--mtu`,
/// 0 = derive) overrides the pods' MTU; `encryption` reserves the tunnel's
/// overhead.
pub fn plan(underlay: u32, configured: u32, encryption: bool) -> MtuStatus {
    let tunnel = underlay.saturating_sub(WIREGUARD_OVERHEAD).max(576);
    let derived = if encryption { tunnel } else { underlay };
    MtuStatus {
        underlay,
        tunnel,
        pod: if configured != 0 { configured } else { derived },
        configured: configured != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_the_underlay_or_the_tunnel_mtu_unless_configured() {
        assert_eq!(
            plan(1500, 0, false),
            MtuStatus {
                underlay: 1500,
                tunnel: 1420,
                pod: 1500,
                configured: false
            }
        );
        assert_eq!(plan(1400, 0, true).pod, 1320);
        assert_eq!(plan(1400, 0, true).tunnel, 1320);
        let set = plan(9000, 1450, true);
        assert_eq!((set.pod, set.configured, set.tunnel), (1450, true, 8920));
        assert_eq!(plan(600, 0, true).tunnel, 576, "never below IPv4's minimum");
    }
}
