//! What of a remote's export is cached: every record is judged by
//! [`mesh_api::trust::check_record`] and the remote's [`Quotas`] before it
//! reaches the store. A refused record is kept out (and removed, if an
//! earlier version was cached), logged with its reason and counted per kind
//! and reason; everything valid from the same remote keeps flowing.
//!
//! Pure bookkeeping: the session feeds it changes and writes what it lets
//! through.

use std::collections::BTreeMap;

use mesh_api::clustermesh::{RecordCounts, RecordRefusal, RefusalCount};
use mesh_api::trust::{Quotas, Refusal, RefusalCode, RemoteScope, check_record};
use mesh_api::{Kind, Record};

use crate::state::{self, BatchOp};

/// How many of the latest refusals the status keeps.
const RECENT: usize = 20;

/// A remote's admission state: what is kept, what is refused, and why.
#[derive(Debug)]
pub(super) struct Admission {
    scope: RemoteScope,
    quotas: Quotas,
    /// Encoded size of every kept record.
    kept: BTreeMap<(Kind, String), usize>,
    kept_per_kind: BTreeMap<Kind, usize>,
    bytes: usize,
    /// Records refused now, with the reason.
    refused: BTreeMap<(Kind, String), Refusal>,
    /// Refusals since this process started, by kind and reason.
    totals: BTreeMap<(Kind, RefusalCode), u64>,
    recent: Vec<RecordRefusal>,
}

/// One judgement: write this op (or nothing).
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Cache it.
    Write(BatchOp),
    /// Refused: withdraw what an earlier version cached, if anything.
    Withdraw(BatchOp),
    /// Nothing to write.
    Nothing,
}

impl Admission {
    /// Empty state for `scope`.
    pub(super) fn new(scope: RemoteScope, quotas: Quotas) -> Self {
        Admission {
            scope,
            quotas,
            kept: BTreeMap::new(),
            kept_per_kind: BTreeMap::new(),
            bytes: 0,
            refused: BTreeMap::new(),
            totals: BTreeMap::new(),
            recent: Vec::new(),
        }
    }

    /// The scope changed (another remote's CIDRs, the remote's own): new
    /// records are judged by it.
    pub(super) fn set_scope(&mut self, scope: RemoteScope) {
        self.scope = scope;
    }

    /// Judges an upsert.
    pub(super) fn upsert(&mut self, record: Record) -> Verdict {
        self.judge(record, true)
    }

    /// Counts a record as kept without judging it: the cached state, loaded
    /// before the remote's scope is known ([`Admission::rejudge`] follows).
    pub(super) fn assume_kept(&mut self, record: &Record) {
        let id = (record.kind(), record.key());
        let size = state::encode(record).len();
        if let Some(old) = self.kept.insert(id.clone(), size) {
            self.bytes -= old;
        } else {
            *self.kept_per_kind.entry(id.0).or_default() += 1;
        }
        self.bytes += size;
    }

    /// Judges `records` (everything the remote holds) again under the
    /// current scope: returns the writes that bring the store in line (a
    /// kept record refused now is withdrawn, a refused one admitted now is
    /// written). A refusal already counted is not counted twice.
    pub(super) fn rejudge(&mut self, records: Vec<Record>) -> Vec<BatchOp> {
        let was_kept: std::collections::BTreeSet<(Kind, String)> =
            self.kept.keys().cloned().collect();
        let was_refused = std::mem::take(&mut self.refused);
        self.kept.clear();
        self.kept_per_kind.clear();
        self.bytes = 0;
        let mut ops = Vec::new();
        for record in records {
            let id = (record.kind(), record.key());
            let count = !was_refused.contains_key(&id);
            match self.judge(record, count) {
                Verdict::Write(op) => {
                    if !was_kept.contains(&id) {
                        ops.push(op);
                    }
                }
                Verdict::Withdraw(_) | Verdict::Nothing => {
                    if was_kept.contains(&id) {
                        ops.push(BatchOp::Delete(id.0, id.1));
                    }
                }
            }
        }
        ops
    }

    fn judge(&mut self, record: Record, count: bool) -> Verdict {
        let id = (record.kind(), record.key());
        let size = state::encode(&record).len();
        let previous = self.kept.get(&id).copied();
        let judged = check_record(&self.scope, &record)
            .and_then(|()| self.quotas.check_labels(&record))
            .and_then(|()| match previous {
                // An update replaces what it held.
                Some(old) => self.quotas.check_bytes(self.bytes - old, size),
                None => self
                    .quotas
                    .check_count(id.0, self.kept_per_kind.get(&id.0).copied().unwrap_or(0))
                    .and_then(|()| self.quotas.check_bytes(self.bytes, size)),
            });
        match judged {
            Ok(()) => {
                self.refused.remove(&id);
                if let Some(old) = previous {
                    self.bytes -= old;
                } else {
                    *self.kept_per_kind.entry(id.0).or_default() += 1;
                }
                self.bytes += size;
                self.kept.insert(id, size);
                Verdict::Write(BatchOp::Upsert(record))
            }
            Err(refusal) if !count => {
                self.refused.insert(id.clone(), refusal);
                if self.forget(id.0, &id.1) {
                    Verdict::Withdraw(BatchOp::Delete(id.0, id.1))
                } else {
                    Verdict::Nothing
                }
            }
            Err(refusal) => {
                tracing::warn!(
                    remote = %self.scope.cluster,
                    kind = %id.0,
                    key = %id.1,
                    reason = %refusal,
                    "record refused: not cached"
                );
                *self.totals.entry((id.0, refusal.code)).or_default() += 1;
                self.recent.push(RecordRefusal {
                    kind: id.0,
                    key: id.1.clone(),
                    code: refusal.code,
                    reason: refusal.detail.clone(),
                });
                if self.recent.len() > RECENT {
                    self.recent.remove(0);
                }
                self.refused.insert(id.clone(), refusal);
                if self.forget(id.0, &id.1) {
                    Verdict::Withdraw(BatchOp::Delete(id.0, id.1))
                } else {
                    Verdict::Nothing
                }
            }
        }
    }

    /// A delete: forget the record; write the delete only if it was kept.
    pub(super) fn delete(&mut self, kind: Kind, key: String) -> Verdict {
        self.refused.remove(&(kind, key.clone()));
        if self.forget(kind, &key) {
            Verdict::Write(BatchOp::Delete(kind, key))
        } else {
            Verdict::Nothing
        }
    }

    fn forget(&mut self, kind: Kind, key: &str) -> bool {
        match self.kept.remove(&(kind, key.to_string())) {
            Some(size) => {
                self.bytes -= size;
                if let Some(n) = self.kept_per_kind.get_mut(&kind) {
                    *n -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Forgets everything kept (the store's copy was withdrawn); the
    /// counters stay.
    pub(super) fn clear(&mut self) {
        self.kept.clear();
        self.kept_per_kind.clear();
        self.bytes = 0;
        self.refused.clear();
    }

    /// Records kept, per kind.
    pub(super) fn kept_counts(&self) -> RecordCounts {
        let mut c = RecordCounts::default();
        for (kind, _) in self.kept.keys() {
            c.add(*kind);
        }
        c
    }

    /// Records refused now, per kind.
    pub(super) fn refused_now(&self) -> RecordCounts {
        let mut c = RecordCounts::default();
        for (kind, _) in self.refused.keys() {
            c.add(*kind);
        }
        c
    }

    /// Refusals since start, per kind and reason.
    pub(super) fn totals(&self) -> Vec<RefusalCount> {
        self.totals
            .iter()
            .map(|((kind, code), count)| RefusalCount {
                kind: *kind,
                code: *code,
                count: *count,
            })
            .collect()
    }

    /// The latest refusals, oldest first.
    pub(super) fn recent(&self) -> &[RecordRefusal] {
        &self.recent
    }

    /// Why the remote is degraded, if a quota refuses some of its records now.
    pub(super) fn degraded(&self) -> Option<String> {
        let over: Vec<&Refusal> = self
            .refused
            .values()
            .filter(|r| r.code == RefusalCode::OverQuota)
            .collect();
        let first = over.first()?;
        Some(format!(
            "{} record(s) over quota are not cached ({}); raise the quota in the chart's clustermesh.quotas or reduce what the remote exports",
            over.len(),
            first.detail
        ))
    }

    /// Bytes kept.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests;
