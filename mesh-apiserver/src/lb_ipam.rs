//! LB-IPAM: LoadBalancer Services get addresses from pools the operator
//! configures (`--lb-ipam-pools`, chart `lbIPAM.pools`), written to
//! `status.loadBalancer.ingress`, so a cluster without a cloud load
//! balancer serves LoadBalancer Services (every node serves the address).
//!
//! [`plan`] is pure and stateless: from every Service as the API server
//! holds it, what each should get. An address already written from a
//! pool stays; a Service asking for one (`spec.loadBalancerIP`) gets it
//! when it is in a pool and free; the others get the lowest free address
//! of the first pool with one. When no pool has one the Service stays
//! pending with the reason (the controller records a Warning Event) and
//! nothing else changes. Addresses outside every pool, and Services with a
//! `loadBalancerClass`, belong to someone else and are left alone. A
//! pool's network and broadcast addresses are never handed out (prefixes
//! shorter than /31). The controller ([`controller::run`]) applies the
//! plan while this replica leads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub mod controller;

/// One pool: a name (named in events and errors) and its CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its CIDRs, in order.
    pub cidrs: Vec<Ipv4Net>,
}

impl Pool {
    /// Parses `name=cidr[,cidr...]`.
    pub fn parse(text: &str) -> Result<Pool, String> {
        let (name, cidrs) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: expected NAME=CIDR[,CIDR...], e.g. default=192.168.77.232/29")
        })?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "{text:?}: the pool name must be letters, digits, '-' or '.'"
            ));
        }
        let cidrs = cidrs
            .split(',')
            .map(|c| {
                let net: Ipv4Net = c.trim().parse().map_err(|_| {
                    format!("pool {name}: {c:?} is not an IPv4 CIDR (e.g. 192.168.77.232/29)")
                })?;
                if net.trunc() != net {
                    return Err(format!(
                        "pool {name}: {net} has host bits set; did you mean {}?",
                        net.trunc()
                    ));
                }
                Ok(net)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pool {
            name: name.to_string(),
            cidrs,
        })
    }

    /// Whether `ip` is one of this pool's addresses.
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.cidrs.iter().any(|c| c.contains(&ip))
    }

    /// Every address it hands out, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.cidrs.iter().flat_map(|c| {
            let skip_ends = c.prefix_len() < 31;
            c.hosts()
                .filter(move |ip| !skip_ends || (*ip != c.network() && *ip != c.broadcast()))
        })
    }

    /// How many addresses it hands out.
    pub fn size(&self) -> usize {
        self.addresses().count()
    }
}

/// Checks that no two pools share a name or an address.
pub fn check_pools(pools: &[Pool]) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for p in pools {
        if !names.insert(p.name.as_str()) {
            return Err(format!("pool {} is given twice", p.name));
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            for x in &a.cidrs {
                for y in &b.cidrs {
                    if x.contains(&y.network()) || y.contains(&x.network()) {
                        return Err(format!(
                            "pools {} ({x}) and {} ({y}) overlap",
                            a.name, b.name
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A Service as LB-IPAM sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// `namespace/name`.
    pub key: String,
    /// `spec.type` is LoadBalancer and no `loadBalancerClass` is set.
    pub ours: bool,
    /// `spec.loadBalancerIP`, when it is an IPv4 address.
    pub requested: Option<Ipv4Addr>,
    /// The IPv4 addresses of `status.loadBalancer.ingress`.
    pub current: Vec<Ipv4Addr>,
}

/// What one Service should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write this address (from this pool) to its status.
    Assign {
        /// The address.
        ip: Ipv4Addr,
        /// Its pool.
        pool: String,
    },
    /// No address: the reason, naming the pool(s).
    Pending(String),
    /// Clear the status: it holds a pool's address but is no longer a
    /// LoadBalancer Service of ours (or holds a duplicate).
    Release,
}

/// What changes, by Service key (Services that keep what they have are
/// not listed).
pub fn plan(pools: &[Pool], services: &[ServiceView]) -> BTreeMap<String, Decision> {
    let pool_of = |ip: Ipv4Addr| pools.iter().find(|p| p.holds(ip));
    let mut sorted: Vec<&ServiceView> = services.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut out = BTreeMap::new();
    let mut needing = Vec::new();
    // First, what is kept (the first holder of an address keeps it).
    for s in &sorted {
        let from_pools: Vec<Ipv4Addr> = s
            .current
            .iter()
            .copied()
            .filter(|ip| pool_of(*ip).is_some())
            .collect();
        if !s.ours {
            if !from_pools.is_empty() {
                out.insert(s.key.clone(), Decision::Release);
            }
            continue;
        }
        if s.current.iter().any(|ip| pool_of(*ip).is_none()) {
            continue; // someone else's address: not ours to manage
        }
        match from_pools.first() {
            Some(ip) if !used.contains(ip) && s.requested.is_none_or(|r| r == *ip) => {
                used.insert(*ip);
            }
            _ => needing.push(*s),
        }
    }
    if pools.is_empty() {
        return out;
    }
    let total: usize = pools.iter().map(Pool::size).sum();
    // Services asking for an address first, so the lowest free one never
    // goes to another Service before the one that asked for it.
    needing.sort_by_key(|s| s.requested.is_none());
    for s in needing {
        let decision = match s.requested {
            Some(r) => match pool_of(r) {
                None => Decision::Pending(format!(
                    "spec.loadBalancerIP {r} is in no pool ({})",
                    names(pools)
                )),
                Some(_) if used.contains(&r) => Decision::Pending(format!(
                    "spec.loadBalancerIP {r} is already assigned to another Service"
                )),
                Some(p) => Decision::Assign {
                    ip: r,
                    pool: p.name.clone(),
                },
            },
            None => pools
                .iter()
                .find_map(|p| {
                    p.addresses()
                        .find(|ip| !used.contains(ip))
                        .map(|ip| Decision::Assign {
                            ip,
                            pool: p.name.clone(),
                        })
                })
                .unwrap_or_else(|| {
                    Decision::Pending(format!(
                        "no free address in pool {} ({total} of {total} assigned)",
                        names(pools)
                    ))
                }),
        };
        if let Decision::Assign { ip, .. } = &decision {
            used.insert(*ip);
        }
        out.insert(s.key.clone(), decision);
    }
    out
}

fn names(pools: &[Pool]) -> String {
    pools
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
