//! The timer thread: drives boringtun's timers (handshake retries, rekey,
//! keepalives) for every peer and resets the handshake rate limiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use boringtun::noise::errors::WireGuardError;

use crate::shared::{MAX_PACKET, Peer, Shared};

const TIMER_TICK: Duration = Duration::from_millis(250);

/// Drives boringtun's timers (handshake retries, rekey, keepalives) and
/// resets the handshake rate limiter every second.
pub(crate) fn timer_loop(s: &Shared) {
    let mut out = vec![0u8; MAX_PACKET];
    let mut last_reset = Instant::now();
    while !s.is_stopping() {
        std::thread::sleep(TIMER_TICK);
        if last_reset.elapsed() >= Duration::from_secs(1) {
            s.key.read().rate_limiter.reset_count();
            last_reset = Instant::now();
        }
        let peers: Vec<Arc<Peer>> = s.table.read().by_key.values().cloned().collect();
        for p in peers {
            let mut st = p.state.lock();
            let ep = st.endpoint;
            match st.tunn.update_timers(&mut out) {
                TunnResult::WriteToNetwork(pkt) => {
                    if let Some(ep) = ep {
                        let _ = s.udps[0].send_to(pkt, ep);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(error = ?e, "timers"),
                _ => {}
            }
        }
    }
}
