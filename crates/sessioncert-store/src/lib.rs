//! Persistence of sessioncert server-side sessions.
//!
//! A running server keeps its live sessions in an in-memory cache and uses a
//! [`SessionStore`] to persist them (so they survive a restart), to list them for
//! operators, to learn about sessions an operator closed from another process, and to
//! sweep expired ones. Session secrets never reach the store in clear: callers hand in
//! an already-sealed opaque blob, which the store keeps as bytes and zeroes when the
//! session ends.
//!
//! Two backends implement the trait: [`MemoryStore`] (no persistence; tests and
//! servers that want none) and [`SqliteStore`] (the embedded default).
//!
//! # Write-behind and group commit ([`SqliteStore`])
//!
//! Every write goes to one dedicated writer thread through a channel. The writer
//! takes everything queued, applies it in **one** transaction, commits, and only then
//! acknowledges the callers that wait. `insert` and `record_progress` are fire and
//! forget: they return once queued, so the hot path (handshakes, sealed requests)
//! never waits for disk and thousands of updates share one commit. Consecutive
//! progress updates of one session in one batch are coalesced into the last.
//! `flush`, `close`, `sweep` and `shutdown` wait for the commit that carries them.
//! Reads use their own connections on the blocking pool, so they never queue behind
//! writes. Read-your-writes holds per instance: `load` of an id with a queued,
//! uncommitted write, and `list` while anything is queued, first wait for the writer
//! to drain; other reads go straight to the database.
//!
//! # Crash recovery
//!
//! The server persists each session's replay window write-behind, so after an
//! unclean stop the stored windows can be stale and an attacker could replay recent
//! requests. So a server-mode open ([`OpenMode::Server`]) reads the `clean_shutdown`
//! flag: if the previous server did not call [`SessionStore::shutdown`], every live
//! session is marked expired (secrets wiped) before anything else happens, and the
//! [`StartupReport`] says how many. The flag is then set to "running" (synced to
//! disk) until the next clean shutdown. A brand-new database counts as clean. The
//! operator CLI opens with [`OpenMode::Admin`], which neither recovers nor touches
//! the flag, so it can run beside a live server. Only one server-mode instance can
//! hold a database at a time (an exclusive lock on a side file), so a second server
//! cannot clobber the flag of the first.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod memory;
mod record;
mod sqlite;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use record::{SessionProgress, SessionRecord, SessionSummary};
pub use sqlite::{OpenMode, SqliteStore, StartupReport, SCHEMA_VERSION};

use sessioncert_proto::SessionId;

/// Where a server's sessions are persisted. All times are Unix milliseconds.
///
/// Implementations must not block the async runtime.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a new session (state `Matching` or `Established`; other states are
    /// refused with [`StoreError::InvalidState`]). May be written behind, but a later
    /// `load`/`list` on this instance sees it and `flush` makes it durable. Inserting
    /// an id that is already stored changes nothing (the first record wins), so a
    /// closed session cannot be brought back this way.
    async fn insert(&self, record: SessionRecord) -> Result<(), StoreError>;

    /// Applies a progress update without waiting for disk. Only live
    /// (`matching`/`established`) sessions are updated: a closed or expired session is
    /// never resurrected. The state may move `Matching -> Established`, never back.
    async fn record_progress(&self, progress: SessionProgress) -> Result<(), StoreError>;

    /// The stored session, if any.
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Closes a live session: state `Closed`, secrets wiped, end time `now_ms`.
    /// Returns whether a live session was closed.
    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError>;

    /// Ids of sessions closed or expired at or after `since_ms` (by anyone, including
    /// another process on the same database), oldest end first.
    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError>;

    /// Summaries, newest (by creation) first; `live_only` keeps matching/established.
    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError>;

    /// Expires live sessions whose lifetime ran out (`expires_at_ms <= now`), that sat
    /// idle (`last_used_at_ms + idle_timeout_ms <= now`), or that are `Matching` and
    /// `created_at_ms + matching_ttl_ms <= now`, wiping their secrets; then deletes
    /// ended sessions whose end is older than `retain_ended_ms`
    /// (`ended_at_ms < now - retain_ended_ms`). Returns how many were expired.
    async fn sweep(
        &self,
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Waits until every write issued before the call is durable. Reports an error if
    /// a fire-and-forget write issued since the previous `flush` could not be stored.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Flushes and records a clean shutdown. Later calls fail with
    /// [`StoreError::WriterGone`] (for backends that have a writer).
    async fn shutdown(&self) -> Result<(), StoreError>;
}
