//! Label sets: the security-relevant labels an identity stands for, and the
//! label selectors policies use to pick identities.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterName, dns_label_problem, dns_subdomain_problem};
use crate::error::{Error, Result};

/// The label every identity carries with its cluster's name.
pub const CLUSTER_LABEL: &str = "meshwork.io/cluster";
/// The label every pod identity carries with its namespace (the key Cilium
/// uses, so selectors written for Cilium keep working).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Pod label keys that carry no security meaning: they change with every
/// rollout or differ per replica, and would split one workload into many
/// identities.
const IGNORED_KEYS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "controller-uid",
    "job-name",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// Whether a pod label is left out of identities.
pub fn is_ignored_label(key: &str) -> bool {
    IGNORED_KEYS.contains(&key)
}

/// Checks a Kubernetes label key (`[prefix/]name`) and value.
pub fn validate_label(key: &str, value: &str) -> Result<()> {
    let bad = |reason| Error::InvalidLabel {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if dns_subdomain_problem(prefix).is_some() {
                return Err(bad("the key prefix is not a DNS subdomain"));
            }
            name
        }
        None => key,
    };
    if let Some(reason) = label_name_problem(name, false) {
        return Err(bad(reason));
    }
    if let Some(reason) = label_name_problem(value, true) {
        return Err(bad(reason));
    }
    Ok(())
}

/// Kubernetes "qualified name" / label value rule: at most 63 characters,
/// alphanumerics with '-', '_' or '.' inside.
fn label_name_problem(s: &str, may_be_empty: bool) -> Option<&'static str> {
    if s.is_empty() {
        return (!may_be_empty).then_some("the key name is empty");
    }
    if s.len() > 63 {
        return Some("longer than 63 characters");
    }
    let ok_inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = s.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Some("must start and end with a letter or digit");
    }
    if !bytes.iter().all(|b| ok_inner(*b)) {
        return Some("only letters, digits, '-', '_' and '.' are allowed");
    }
    None
}

/// A validated, sorted set of labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct LabelSet(BTreeMap<String, String>);

impl LabelSet {
    /// Validates every label.
    pub fn new(labels: BTreeMap<String, String>) -> Result<Self> {
        for (k, v) in &labels {
            validate_label(k, v)?;
        }
        Ok(LabelSet(labels))
    }

    /// The identity labels of a pod: its labels minus the ignored ones, plus
    /// its namespace and cluster.
    pub fn for_pod(
        cluster: &ClusterName,
        namespace: &str,
        pod_labels: &BTreeMap<String, String>,
    ) -> Result<Self> {
        if let Some(reason) = dns_label_problem(namespace, 63) {
            return Err(Error::InvalidLabel {
                key: NAMESPACE_LABEL.to_string(),
                value: namespace.to_string(),
                reason,
            });
        }
        let mut labels: BTreeMap<String, String> = pod_labels
            .iter()
            .filter(|(k, _)| !is_ignored_label(k) && *k != CLUSTER_LABEL && *k != NAMESPACE_LABEL)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
        labels.insert(CLUSTER_LABEL.to_string(), cluster.to_string());
        LabelSet::new(labels)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The labels, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl TryFrom<BTreeMap<String, String>> for LabelSet {
    type Error = Error;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self> {
        LabelSet::new(m)
    }
}

impl From<LabelSet> for BTreeMap<String, String> {
    fn from(l: LabelSet) -> Self {
        l.0
    }
}

/// The canonical form `k1=v1,k2=v2` (sorted): one string per label set, used
/// in store keys for identity allocation.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// How a selector expression compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: SelectorOperator,
    /// Values for In/NotIn; empty for Exists/DoesNotExist.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A Kubernetes label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// Checks the expressions are well-formed (In/NotIn need values,
    /// Exists/DoesNotExist take none).
    pub fn validate(&self) -> Result<()> {
        for (k, v) in &self.match_labels {
            validate_label(k, v)?;
        }
        for r in &self.match_expressions {
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values && r.values.is_empty() {
                return Err(Error::InvalidSelector {
                    key: r.key.clone(),
                    reason: "operators In and NotIn need at least one value",
                });
            }
            if !needs_values && !r.values.is_empty() {
                return Err(Error::InvalidSelector {
                    key: r.key.clone(),
                    reason: "operators Exists and DoesNotExist take no values",
                });
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    SelectorOperator::NotIn => {
                        value.is_none_or(|v| r.values.iter().all(|x| x != v))
                    }
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests;
