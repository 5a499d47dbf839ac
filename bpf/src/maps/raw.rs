//! `#[repr(C)]` twins of the structs in `bpf/include/*.h`. Sizes are asserted
//! at compile time here (and with `_Static_assert` in C) and checked against
//! the loaded maps' key/value sizes when a map is opened. Addresses and ports
//! are stored in network byte order, as the C side reads them.

use aya::Pod;

/// Size of a Maglev lookup table (prime), as `MAGLEV_TABLE_SIZE` in lb.h.
pub const MAGLEV_TABLE_SIZE: usize = 16381;

macro_rules! pod {
    ($($t:ty => $size:expr),* $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], Copy, made only of integers with
            // explicit padding fields, so every bit pattern is valid.
            #[allow(unsafe_code)]
            unsafe impl Pod for $t {}
            const _: () = assert!(std::mem::size_of::<$t>() == $size);
        )*
    };
}

/// `struct lb_svc_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SvcKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct lb_svc_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcVal {
    pub svc_id: u32,
    pub backend_count: u16,
    pub flags: u16,
}

/// `struct lb_slot_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

/// `struct lb_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendVal {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub cluster_id: u8,
    pub flags: u32,
}

/// `struct lb_revnat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNatVal {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct lb_maglev`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MaglevVal {
    pub backend_ids: [u32; MAGLEV_TABLE_SIZE],
}

/// `struct lb_sk_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkRevNatKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct ipcache_key` without the LPM prefix length (aya's `lpm_trie::Key`
/// adds it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheAddr {
    pub addr: u32,
}

/// `struct ipcache_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheVal {
    pub identity: u32,
    pub tunnel_endpoint: u32,
    pub flags: u8,
    pub cluster_id: u8,
    pub pad: u16,
}

/// `struct policy_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKeyRaw {
    pub endpoint: u32,
    pub identity: u32,
    pub port: u16,
    pub proto: u8,
    pub direction: u8,
}

/// `struct policy_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValRaw {
    pub action: u8,
    pub pad: [u8; 3],
    pub rule_id: u32,
}

/// `struct policy_endpoint`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEndpointRaw {
    pub ingress_enforced: u8,
    pub egress_enforced: u8,
    pub endpoint_id: u16,
    pub identity: u32,
    pub ipv4: u32,
    pub mac: [u8; 6],
    pub audit: u8,
    pub pad: u8,
    pub ifname: [u8; 16],
}

/// `struct ct_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// `struct ct_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtVal {
    pub last_seen_ns: u64,
    pub backend_id: u32,
    pub rev_nat_id: u32,
    pub packets: u32,
    pub flags: u32,
}

/// `struct flow_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEventRaw {
    pub ts_ns: u64,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub verdict: u8,
    pub observation: u8,
    pub pad: u8,
    pub reason: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub ifindex: u32,
    pub svc_id: u32,
    pub rule_id: u32,
}

/// `struct encrypt_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncryptVal {
    pub node_ip: u32,
}

/// `struct frag_key` (packet.h): a datagram's fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct frag_val`: the ports its first fragment carried.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragVal {
    pub sport: u16,
    pub dport: u16,
}

/// `struct encrypt_cfg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncryptCfg {
    pub wg_ifindex: u32,
    pub flags: u32,
}

/// `struct lb_config` (lb.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbConfigRaw {
    pub maglev_seed: u32,
    pub pad: u32,
}

/// `struct masq_config` (nat.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqConfigRaw {
    pub node_addr: u32,
    pub pod_net: u32,
    pub pod_mask: u32,
    pub port_min: u16,
    pub port_max: u16,
    pub flags: u32,
}

/// `struct snat_key` (nat.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnatKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// `struct snat_val` (nat.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatVal {
    pub last_seen_ns: u64,
    pub addr: u32,
    pub port: u16,
    pub flags: u8,
    pub pad: u8,
}

/// `struct metric_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricVal {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct lb_affinity_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub client: u64,
    pub svc_id: u32,
    pub by_netns: u8,
    pub pad: [u8; 3],
}

/// `struct lb_affinity_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityVal {
    pub last_ns: u64,
    pub backend_id: u32,
    pub slot: u32,
}

pod! {
    AffinityKey => 16,
    AffinityVal => 16,
    SvcKey => 8,
    SvcVal => 8,
    SlotKey => 8,
    BackendVal => 12,
    RevNatVal => 8,
    MaglevVal => 4 * MAGLEV_TABLE_SIZE,
    SkRevNatKey => 16,
    IpcacheAddr => 4,
    IpcacheVal => 12,
    PolicyKeyRaw => 12,
    PolicyValRaw => 8,
    PolicyEndpointRaw => 36,
    CtKey => 16,
    CtVal => 24,
    FlowEventRaw => 48,
    MetricVal => 16,
    EncryptVal => 4,
    EncryptCfg => 8,
    FragKey => 12,
    FragVal => 4,
    LbConfigRaw => 8,
    MasqConfigRaw => 20,
    SnatKey => 16,
    SnatVal => 16,
}
