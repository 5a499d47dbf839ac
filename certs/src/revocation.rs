//! Revocation that reaches open streams. A handshake checks a client once;
//! a watch stream then lives for days. [`until_revoked`] re-runs the
//! handshake's checks on an open stream whenever what they depend on
//! changes (the access policy, e.g. a remote removed from the config; the
//! trust bundle, e.g. the last step of a CA rotation), when the client's
//! certificate expires, and at least every `recheck` in any case, and
//! resolves with the reason once the client would be refused: the server
//! then closes the stream.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::refusal::Refusal;
use crate::reload::LiveTls;
use crate::tls::Authorizer;

/// How often the cheap change test runs.
const TICK: Duration = Duration::from_millis(500);

/// Resolves when the client that presented `chain` is no longer allowed.
pub async fn until_revoked(
    live: LiveTls,
    authorizer: Authorizer,
    chain: Vec<CertificateDer<'static>>,
    recheck: Duration,
) -> Refusal {
    let not_after = chain
        .first()
        .and_then(|c| crate::inspect::parse(c, "client certificate").ok())
        .map(|c| {
            let t = c.validity().not_after.timestamp();
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
        });
    let mut seen = (live.generation(), authorizer.generation());
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let now = (live.generation(), authorizer.generation());
        let expired = not_after.is_some_and(|t| SystemTime::now() >= t);
        if now == seen && !expired && last.elapsed() < recheck {
            continue;
        }
        seen = now;
        last = tokio::time::Instant::now();
        if let Err(refusal) = live.recheck_client(&authorizer, &chain) {
            return refusal;
        }
    }
}

#[cfg(test)]
mod tests;
