//! Who may start a handshake: per-address rate and session count, server-wide caps.
//! Checked before any key exchange, so a refused peer costs no X25519 work.

use super::SessionManager;
use crate::error::Refusal;
use crate::telemetry::{self, RefusalKind};
use sessioncert_proto::ErrorCode;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

impl SessionManager {
    /// The address the per-address limits apply to (`None`: exempt loopback or unknown).
    pub(crate) fn limited(&self, addr: Option<IpAddr>) -> Option<IpAddr> {
        addr.filter(|a| !(self.limits.exempt_loopback && a.is_loopback()))
    }

    /// Refuses a handshake that would exceed a limit. A handshake creates nothing, but
    /// it costs three X25519 operations, and a session it leads to must fit anyway.
    pub(crate) fn admit_handshake(&self, limited: Option<IpAddr>) -> Result<(), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Refusal::retry_after(ErrorCode::Unavailable, 1));
        }
        if let Some(a) = limited {
            if let Err(wait) = self.rate.take(a, &self.limits) {
                tracing::debug!(addr = %a, "handshake refused: rate limit");
                return Err(Refusal::retry_after(ErrorCode::RateLimited, wait));
            }
        }
        self.admit_session(limited)
    }

    /// Refuses a new session that would exceed the per-address or server-wide caps.
    pub(crate) fn admit_session(&self, limited: Option<IpAddr>) -> Result<(), Refusal> {
        if let Some(a) = limited {
            if self
                .per_addr
                .get(&a)
                .is_some_and(|n| *n >= self.limits.max_sessions_per_addr)
            {
                tracing::debug!(addr = %a, "refused: sessions per address");
                return Err(Refusal::retry_after(ErrorCode::RateLimited, 60));
            }
        }
        // Server-wide caps are not this client's fault: 503, not 429.
        if self.live_count.load(Ordering::Relaxed) >= self.limits.max_live_sessions {
            // The operator's problem, not the peer's: said at warn, but at most so often.
            if telemetry::refusal_line(RefusalKind::Code(ErrorCode::Unavailable)) {
                tracing::warn!(
                    max_sessions = self.limits.max_live_sessions,
                    "refused: live session table is full"
                );
            }
            return Err(Refusal::retry_after(ErrorCode::Unavailable, 60));
        }
        Ok(())
    }

    /// Counts a new session against its address.
    pub(crate) fn count_for_addr(&self, a: IpAddr) {
        *self.per_addr.entry(a).or_insert(0) += 1;
    }

    /// Releases a session's count against its address.
    pub(crate) fn uncount_for_addr(&self, a: IpAddr) {
        if let Some(mut n) = self.per_addr.get_mut(&a) {
            *n = n.saturating_sub(1);
        }
        self.per_addr.remove_if(&a, |_, n| *n == 0);
    }
}
