//! The in-memory session table: the one authority for every live session's keys and
//! replay window while the server runs.
//!
//! An entry is created by a confirmed handshake (or loaded once at start) and stays in
//! the table until it has ended *and* would have expired anyway: a closed or expired
//! session stays as a tombstone — its traffic keys dropped, its refusal key and final
//! replay window kept — so its id keeps answering `session_closed`/`session_expired`,
//! with a tag where PROTOCOL §14.1 allows, and so a confirmation replayed while its
//! ticket still lives finds the id taken and cannot re-create the session.

use sessioncert_legacy::{EstablishedLegacy, PendingLegacy};
use sessioncert_proto::{EndedSession, ServerSession, SessionId, SessionState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Where a session is in its life, with the keys it needs there.
pub(crate) enum Live {
    /// Confirmed; carries sealed traffic. Boxed so a tombstone stays small.
    Established(Box<ServerSession>),
    /// A legacy Session-Cert session that received its key and waits for its establish
    /// (memory only, never stored; see `sessions::legacy`).
    LegacyPending(Box<PendingLegacy>),
    /// An established legacy Session-Cert session.
    Legacy(Box<EstablishedLegacy>),
    /// Closed or expired: a tombstone. `None` for a session that ended before this
    /// process held its keys (closed elsewhere and learned from the store).
    Ended(SessionState, Option<EndedSession>),
}

impl Live {
    pub(crate) fn state(&self) -> SessionState {
        match self {
            Live::Established(_) | Live::Legacy(_) => SessionState::Established,
            Live::LegacyPending(_) => SessionState::Matching,
            Live::Ended(s, _) => *s,
        }
    }
}

/// A tombstone stays at least this many ticket lifetimes after the session ended
/// (PROTOCOL §6.8: longer than any ticket of the session can be confirmed): 5 minutes
/// with the protocol's 60-second tickets.
pub(crate) const TOMBSTONE_TICKET_LIFETIMES: u64 = 5;

/// The part of an entry that changes, behind its lock.
pub(crate) struct Mutable {
    pub(crate) live: Live,
    pub(crate) last_used_at_ms: u64,
    pub(crate) request_count: u64,
    /// Bumped on every change the store should learn about.
    pub(crate) changes: u64,
    /// `changes` as of the last snapshot the store committed.
    pub(crate) saved_changes: u64,
    /// Whether the store has a row for this session.
    pub(crate) stored: bool,
    /// When the session ended (tombstones only).
    pub(crate) ended_at_ms: u64,
}

impl Mutable {
    pub(crate) fn new(live: Live, last_used_at_ms: u64, request_count: u64, stored: bool) -> Self {
        Mutable {
            live,
            last_used_at_ms,
            request_count,
            changes: 0,
            saved_changes: 0,
            stored,
            ended_at_ms: 0,
        }
    }

    /// Records a change the store should learn about.
    pub(crate) fn touch(&mut self) {
        self.changes += 1;
    }

    pub(crate) fn unsaved(&self) -> bool {
        self.changes != self.saved_changes
    }
}

/// One session in the table.
pub struct Entry {
    pub(crate) id: SessionId,
    pub(crate) suite: &'static str,
    pub(crate) version: u16,
    pub(crate) client_addr: Option<IpAddr>,
    /// Whether the per-address session count includes this session.
    /// (Set once more when a legacy session is established in place.)
    pub(crate) counted_for_addr: AtomicBool,
    pub(crate) created_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) idle_timeout_ms: u64,
    /// Whether the session negotiated streamed records (fixed by its handshake; read
    /// without the lock on every response).
    pub(crate) streams: bool,
    /// Queued for the next flush (set when pushed, cleared when taken).
    pub(crate) queued: AtomicBool,
    /// Set when the session ends (closed, expired): streams still under way in it read
    /// this before each chunk and stop (PROTOCOL §7), so a closed session runs nothing
    /// more — a held stream cannot complete its request after the close was confirmed.
    pub(crate) ended: AtomicBool,
    /// Requests of the session whose handler is running: a close waits for them (a
    /// bounded time), so that "closed" means nothing more runs in the session.
    pub(crate) running: std::sync::atomic::AtomicUsize,
    inner: Mutex<Mutable>,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: SessionId,
        suite: &'static str,
        version: u16,
        client_addr: Option<IpAddr>,
        counted_for_addr: bool,
        created_at_ms: u64,
        expires_at_ms: u64,
        idle_timeout_ms: u64,
        inner: Mutable,
    ) -> Self {
        let (streams, ended) = match &inner.live {
            Live::Established(s) => (s.streams(), false),
            Live::Legacy(_) | Live::LegacyPending(_) => (false, false),
            Live::Ended(..) => (false, true),
        };
        Entry {
            id,
            streams,
            suite,
            version,
            client_addr,
            counted_for_addr: AtomicBool::new(counted_for_addr),
            created_at_ms,
            expires_at_ms,
            idle_timeout_ms,
            queued: AtomicBool::new(false),
            ended: AtomicBool::new(ended),
            running: std::sync::atomic::AtomicUsize::new(0),
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panic while holding the lock cannot leave keys half-updated in a way that
        // matters more than refusing service; recover the guard rather than poison forever.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why this session cannot carry traffic at `now`, if it cannot.
    pub(crate) fn end_reason(&self, m: &Mutable, now: u64) -> Option<SessionState> {
        match m.live {
            Live::Ended(s, _) => Some(s),
            _ if now >= self.expires_at_ms => Some(SessionState::Expired),
            _ if now >= m.last_used_at_ms.saturating_add(self.idle_timeout_ms) => {
                Some(SessionState::Expired)
            }
            _ => None,
        }
    }

    /// Until when an ended session stays as a tombstone: when it would have expired
    /// had it stayed live and idle, and at least `min_tombstone_ms` after its end.
    pub(crate) fn tombstone_until(&self, m: &Mutable, min_tombstone_ms: u64) -> u64 {
        self.expires_at_ms
            .min(m.last_used_at_ms.saturating_add(self.idle_timeout_ms))
            .max(m.ended_at_ms.saturating_add(min_tombstone_ms))
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Marks the entry queued; returns whether it was not queued before.
    pub(crate) fn set_queued(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }
}

/// Counts a request's handler as running in its session until dropped.
pub(crate) struct Running(std::sync::Arc<Entry>);

impl Running {
    pub(crate) fn enter(entry: &std::sync::Arc<Entry>) -> Self {
        entry
            .running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(entry.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
