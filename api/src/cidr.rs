//! CIDR parsing and overlap checks: connected clusters need disjoint pod
//! CIDRs (service CIDRs may overlap: global services match by name).

use ipnet::IpNet;

use crate::cluster::ClusterName;
use crate::error::{Error, Result};

/// Parses a CIDR; a CIDR with host bits set is refused with the network it
/// probably meant. `what` names the field in errors.
pub fn parse_cidr(what: &'static str, s: &str) -> Result<IpNet> {
    let net: IpNet = s.trim().parse().map_err(|_| Error::InvalidCidr {
        what,
        input: s.to_string(),
    })?;
    if net.trunc() != net {
        return Err(Error::CidrHostBits {
            what,
            cidr: net,
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first overlapping pair between two lists, if any.
pub fn first_overlap(a: &[IpNet], b: &[IpNet]) -> Option<(IpNet, IpNet)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (*x, *y)))
        .find(|(x, y)| overlaps(x, y))
}

/// Refuses two clusters whose pod CIDRs overlap.
pub fn check_pod_cidrs_disjoint(
    a_cluster: &ClusterName,
    a: &[IpNet],
    b_cluster: &ClusterName,
    b: &[IpNet],
) -> Result<()> {
    match first_overlap(a, b) {
        None => Ok(()),
        Some((a_cidr, b_cidr)) => Err(Error::CidrOverlap {
            a_cluster: a_cluster.to_string(),
            a_cidr,
            b_cluster: b_cluster.to_string(),
            b_cidr,
        }),
    }
}

#[cfg(test)]
mod tests;
