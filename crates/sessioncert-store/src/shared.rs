//! The contract of a store shared by several server instances (PostgreSQL, Redis).
//!
//! With [`crate::ReplayAuthority::SharedStore`] no process holds a session's replay
//! window: every request's sequence number is checked **and** marked in the store in one
//! atomic step ([`crate::SessionStore::check_request`]), after the instance has
//! authenticated the record and before its handler runs. So a request captured at one
//! instance and replayed to another is refused, the same record fired at two instances
//! at once runs once, and a response is never sealed twice under one nonce (each
//! sequence number opens at most once across the whole deployment).
//!
//! The window rule is PROTOCOL §9 exactly: `top` is the highest accepted number plus one
//! (0: none yet) and a 1024-bit ring remembers which of `top − 1024 … top − 1` were
//! accepted. [`check_and_mark`] is the reference implementation; the Lua script and the
//! SQL function of the shared backends do the same, and their tests compare against it.

use sessioncert_proto::replay::ReplayWindow;
use sessioncert_proto::{SessionId, SessionState};

/// What the store decided about one request ([`crate::SessionStore::check_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCheck {
    /// The sequence number was fresh and is now marked; the session was live and is now
    /// used at the request's time (and closed, if the request was its close).
    Accepted {
        /// Requests the session has served, this one included.
        request_count: u64,
    },
    /// The sequence number was accepted before, or is older than the window: the request
    /// must not run. Nothing changed.
    Replayed,
    /// The session has ended (`Closed` or `Expired`; an idle or lifetime end found by this
    /// check is recorded by it). The sequence number was **not** marked and never will be,
    /// so a refusal may prove that the request did not run.
    Ended(SessionState),
    /// The store holds no session with this id.
    Unknown,
}

/// One request to check ([`crate::SessionStore::check_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMark {
    /// The session.
    pub id: SessionId,
    /// The request record's sequence number (authenticated by the caller).
    pub seq: u64,
    /// The caller's clock (Unix milliseconds): last-use time on success, and the time
    /// against which lifetime and idle timeout are checked.
    pub now_ms: u64,
    /// The request is the session's close: on success the session ends `Closed` in the
    /// same atomic step, so no request is accepted after the close anywhere.
    pub close: bool,
}

/// The per-session state a shared store keeps beside the record's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    /// Where the session is in its life.
    pub state: SessionState,
    /// Absolute lifetime end.
    pub expires_at_ms: u64,
    /// Last accepted request (or the creation).
    pub last_used_at_ms: u64,
    /// Idle timeout.
    pub idle_timeout_ms: u64,
    /// Requests accepted.
    pub request_count: u64,
    /// When it ended, once it has.
    pub ended_at_ms: Option<u64>,
    /// The replay window.
    pub window: ReplayWindow,
}

/// The reference rule, in the order every backend applies it:
///
/// 1. a sequence number seen or older than the window → [`RequestCheck::Replayed`]
///    (checked first, so an ended session's refusal is only ever tagged for a number
///    that never ran);
/// 2. an ended session → [`RequestCheck::Ended`];
/// 3. lifetime (`expires_at_ms <= now`) or idle time (`last_used_at_ms +
///    idle_timeout_ms <= now`) run out → the session becomes `Expired` (ended now) and
///    the answer is [`RequestCheck::Ended`];
/// 4. otherwise mark, set `last_used_at_ms = now` (never backwards), count, and close if
///    asked → [`RequestCheck::Accepted`].
pub fn check_and_mark(s: &mut SharedState, m: &RequestMark) -> RequestCheck {
    if s.window.check(m.seq).is_err() {
        return RequestCheck::Replayed;
    }
    if !s.state.is_live() {
        return RequestCheck::Ended(s.state);
    }
    if s.expires_at_ms <= m.now_ms
        || s.last_used_at_ms.saturating_add(s.idle_timeout_ms) <= m.now_ms
    {
        s.state = SessionState::Expired;
        s.ended_at_ms = Some(m.now_ms);
        return RequestCheck::Ended(SessionState::Expired);
    }
    if s.window.mark(m.seq).is_err() {
        return RequestCheck::Replayed;
    }
    s.last_used_at_ms = s.last_used_at_ms.max(m.now_ms);
    s.request_count += 1;
    if m.close {
        s.state = SessionState::Closed;
        s.ended_at_ms = Some(m.now_ms);
    }
    RequestCheck::Accepted {
        request_count: s.request_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> SharedState {
        SharedState {
            state: SessionState::Established,
            expires_at_ms: 10_000,
            last_used_at_ms: 100,
            idle_timeout_ms: 1_000,
            request_count: 0,
            ended_at_ms: None,
            window: ReplayWindow::new(),
        }
    }

    fn mark(seq: u64, now_ms: u64) -> RequestMark {
        RequestMark {
            id: SessionId([1; 16]),
            seq,
            now_ms,
            close: false,
        }
    }

    #[test]
    fn each_number_is_accepted_once_and_old_ones_never() {
        let mut s = live();
        assert_eq!(
            check_and_mark(&mut s, &mark(5, 200)),
            RequestCheck::Accepted { request_count: 1 }
        );
        assert_eq!(
            check_and_mark(&mut s, &mark(5, 201)),
            RequestCheck::Replayed
        );
        // Out of order inside the window: accepted once.
        assert!(matches!(
            check_and_mark(&mut s, &mark(2, 202)),
            RequestCheck::Accepted { .. }
        ));
        assert!(matches!(
            check_and_mark(&mut s, &mark(2000, 203)),
            RequestCheck::Accepted { .. }
        ));
        // 2000 − 1023 = 977 is the oldest still accepted; 976 never ran but is too old.
        assert_eq!(
            check_and_mark(&mut s, &mark(976, 204)),
            RequestCheck::Replayed
        );
        assert!(matches!(
            check_and_mark(&mut s, &mark(977, 205)),
            RequestCheck::Accepted { request_count: 4 }
        ));
        assert_eq!(s.last_used_at_ms, 205);
        // A late request never moves the last use back.
        check_and_mark(&mut s, &mark(1999, 150));
        assert_eq!(s.last_used_at_ms, 205);
    }

    #[test]
    fn an_ended_session_reports_replays_first_and_never_marks() {
        let mut s = live();
        check_and_mark(&mut s, &mark(1, 200));
        let close = RequestMark {
            close: true,
            ..mark(2, 300)
        };
        assert!(matches!(
            check_and_mark(&mut s, &close),
            RequestCheck::Accepted { request_count: 2 }
        ));
        assert_eq!((s.state, s.ended_at_ms), (SessionState::Closed, Some(300)));
        // The number that ran is a replay (no tag may vouch for it); a new one is
        // "ended" and stays unmarked.
        assert_eq!(
            check_and_mark(&mut s, &mark(1, 400)),
            RequestCheck::Replayed
        );
        assert_eq!(
            check_and_mark(&mut s, &mark(3, 400)),
            RequestCheck::Ended(SessionState::Closed)
        );
        assert_eq!(
            check_and_mark(&mut s, &mark(3, 401)),
            RequestCheck::Ended(SessionState::Closed)
        );
        assert_eq!(s.request_count, 2);
    }

    #[test]
    fn idle_time_and_lifetime_end_the_session_at_the_check() {
        let mut s = live();
        // Last use 100, idle 1000: at 1100 it is over.
        assert_eq!(
            check_and_mark(&mut s, &mark(0, 1_100)),
            RequestCheck::Ended(SessionState::Expired)
        );
        assert_eq!(
            (s.state, s.ended_at_ms),
            (SessionState::Expired, Some(1_100))
        );
        let mut s = live();
        s.idle_timeout_ms = u64::MAX;
        assert!(matches!(
            check_and_mark(&mut s, &mark(0, 9_999)),
            RequestCheck::Accepted { .. }
        ));
        assert_eq!(
            check_and_mark(&mut s, &mark(1, 10_000)),
            RequestCheck::Ended(SessionState::Expired)
        );
    }
}
