//! The records a store keeps and returns.

use core::fmt;

use serde::{Serialize, Serializer};
use sessioncert_proto::{SessionId, SessionState};
use zeroize::Zeroize;

/// One server-side session as stored. All times are Unix time in milliseconds.
///
/// `Debug` prints the length of `sealed_secrets`, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id.
    pub id: SessionId,
    /// Where the session is in its life.
    pub state: SessionState,
    /// Protocol version negotiated for the session.
    pub version: u16,
    /// AEAD suite name, e.g. `"AES-256-GCM"`.
    pub suite: String,
    /// The client's address as the server saw it, if recorded.
    pub client_addr: Option<String>,
    /// When the handshake created the session.
    pub created_at_ms: u64,
    /// Last time the session carried a request.
    pub last_used_at_ms: u64,
    /// Absolute end of the session's lifetime.
    pub expires_at_ms: u64,
    /// The session expires when `last_used_at_ms + idle_timeout_ms <= now`
    /// (use `u64::MAX` for no idle timeout).
    pub idle_timeout_ms: u64,
    /// Requests served so far.
    pub request_count: u64,
    /// The caller's already-sealed secrets (keys, replay window). Opaque to the store;
    /// when the session ends they are zeroed and replaced by the remains the end
    /// carried ([`SessionWrite::End`]), usually nothing.
    pub sealed_secrets: Vec<u8>,
}

impl SessionRecord {
    /// Everything but the secrets.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id,
            state: self.state,
            version: self.version,
            suite: self.suite.clone(),
            client_addr: self.client_addr.clone(),
            created_at_ms: self.created_at_ms,
            last_used_at_ms: self.last_used_at_ms,
            expires_at_ms: self.expires_at_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            request_count: self.request_count,
            ended_at_ms: None,
        }
    }

    /// Zeroes and empties `sealed_secrets`.
    pub fn wipe_secrets(&mut self) {
        self.sealed_secrets.zeroize();
    }

    /// Whether a live session is due to expire at `now_ms` (the sweep rule): its
    /// lifetime ran out (`expires_at_ms <= now`), it sat idle too long
    /// (`last_used_at_ms + idle_timeout_ms <= now`), or it is still `Matching` and
    /// older than `matching_ttl_ms` (`created_at_ms + matching_ttl_ms <= now`).
    /// Always `false` for sessions that are not live.
    pub fn is_due_to_expire(&self, now_ms: u64, matching_ttl_ms: u64) -> bool {
        self.state.is_live()
            && (self.expires_at_ms <= now_ms
                || self.last_used_at_ms.saturating_add(self.idle_timeout_ms) <= now_ms
                || (self.state == SessionState::Matching
                    && self.created_at_ms.saturating_add(matching_ttl_ms) <= now_ms))
    }

    /// Applies a progress update if the session is live; returns whether it did.
    ///
    /// The state only moves forward (`Matching -> Established`, never back); the other
    /// fields take the update's values.
    pub(crate) fn apply_progress(&mut self, progress: SessionProgress) -> bool {
        if !self.state.is_live() {
            return false;
        }
        if progress.state == SessionState::Established {
            self.state = SessionState::Established;
        }
        self.last_used_at_ms = progress.last_used_at_ms;
        self.request_count = progress.request_count;
        self.sealed_secrets.zeroize();
        self.sealed_secrets = progress.sealed_secrets;
        true
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("version", &self.version)
            .field("suite", &self.suite)
            .field("client_addr", &self.client_addr)
            .field("created_at_ms", &self.created_at_ms)
            .field("last_used_at_ms", &self.last_used_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("request_count", &self.request_count)
            .field("sealed_secrets_len", &self.sealed_secrets.len())
            .finish()
    }
}

/// What [`crate::SessionStore::list`] returns: everything but the secrets.
///
/// Serializes (for `--json`) with `id` as base64url text and `state` as its
/// lower-case name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session id (serialized as base64url).
    #[serde(serialize_with = "serialize_id")]
    pub id: SessionId,
    /// The state (serialized as `"matching"`, `"established"`, ...).
    #[serde(serialize_with = "serialize_state")]
    pub state: SessionState,
    /// Protocol version.
    pub version: u16,
    /// AEAD suite name.
    pub suite: String,
    /// Client address, if recorded.
    pub client_addr: Option<String>,
    /// Creation time.
    pub created_at_ms: u64,
    /// Last use.
    pub last_used_at_ms: u64,
    /// Absolute lifetime end.
    pub expires_at_ms: u64,
    /// Idle timeout.
    pub idle_timeout_ms: u64,
    /// Requests served.
    pub request_count: u64,
    /// When the session was closed or expired; `None` while live.
    pub ended_at_ms: Option<u64>,
}

fn serialize_id<S: Serializer>(id: &SessionId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

fn serialize_state<S: Serializer>(state: &SessionState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// An update of a live session (its replay window advanced, it was used, it was
/// confirmed).
///
/// `Debug` prints the length of `sealed_secrets`, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionProgress {
    /// The session.
    pub id: SessionId,
    /// `Matching` or `Established`; a stored session never moves back to `Matching`.
    pub state: SessionState,
    /// New last-use time.
    pub last_used_at_ms: u64,
    /// New request count.
    pub request_count: u64,
    /// New sealed secrets (e.g. with an advanced replay window).
    pub sealed_secrets: Vec<u8>,
}

impl fmt::Debug for SessionProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionProgress")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("last_used_at_ms", &self.last_used_at_ms)
            .field("request_count", &self.request_count)
            .field("sealed_secrets_len", &self.sealed_secrets.len())
            .finish()
    }
}

/// One write in a [`crate::SessionStore::save`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionWrite {
    /// Stores a new session (state `Matching` or `Established`). If the id is already
    /// stored nothing changes (the first record wins), so an ended session cannot be
    /// brought back this way.
    Insert(SessionRecord),
    /// Updates a stored live session. A closed or expired session is never
    /// resurrected; the state moves `Matching -> Established`, never back.
    Progress(SessionProgress),
    /// Ends a stored live session: `state` (`Closed` or `Expired`), end time `at_ms`,
    /// the secrets replaced by `remains`. An already ended session keeps its first end;
    /// in a shared store, one that a request check ended (its secrets wiped, no remains
    /// yet) takes these remains, keeping its state and end time.
    End {
        /// The session.
        id: SessionId,
        /// `Closed` or `Expired`.
        state: SessionState,
        /// When it ended.
        at_ms: u64,
        /// The caller's already-sealed remains of the session, kept in place of its
        /// secrets so a restarted server can still refuse its requests with a tag
        /// (`sessioncert-proto`'s `EndedSession`: refusal key and final window, no traffic
        /// key). Empty: nothing is kept.
        remains: Vec<u8>,
    },
}

impl SessionWrite {
    /// The session the write is about.
    pub fn id(&self) -> SessionId {
        match self {
            SessionWrite::Insert(r) => r.id,
            SessionWrite::Progress(p) => p.id,
            SessionWrite::End { id, .. } => *id,
        }
    }

    /// Refuses writes whose state does not fit their kind.
    pub(crate) fn check(&self) -> Result<(), crate::StoreError> {
        let (state, ok) = match self {
            SessionWrite::Insert(r) => (r.state, r.state.is_live()),
            SessionWrite::Progress(p) => (p.state, p.state.is_live()),
            SessionWrite::End { state, .. } => (
                *state,
                matches!(state, SessionState::Closed | SessionState::Expired),
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(crate::StoreError::InvalidState(state))
        }
    }
}
