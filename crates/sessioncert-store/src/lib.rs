//! Persistence of sessioncert server-side sessions.
//!
//! A running server keeps its live sessions in an in-memory cache and uses a
//! [`SessionStore`] to persist them (so they survive a restart), to list them for
//! operators, to learn about sessions an operator closed from another process, and to
//! sweep expired ones. Session secrets never reach the store in clear: callers hand in
//! an already-sealed opaque blob, which the store keeps as bytes and zeroes when the
//! session ends.
//!
//! Four backends implement the trait: [`MemoryStore`] (no persistence; tests and
//! servers that want none), [`SqliteStore`] (the embedded default), and the shared
//! stores [`RedisStore`] and [`PostgresStore`] (cargo features `redis` and `postgres`,
//! on by default) for several instances behind one name.
//!
//! # One authority for replay state
//!
//! A session's replay window decides whether a request runs. It must have exactly one
//! authority at a time and must never be re-read from a stale copy. With the stores in
//! this crate the authority is **the server process**: a server opens the store
//! exclusively ([`OpenMode::Server`] takes a lock), reads every live session once at
//! start ([`SessionStore::load_live`]), and from then on holds each live session —
//! keys and window — in memory, never reading it back. The store is where the server
//! writes snapshots so that sessions survive a clean restart, where operators list and
//! close sessions, and where closes made by another process show up
//! ([`SessionStore::ended_since`]). Writes are durable when the call returns; the
//! *server* decides how often to write (it batches every touched session into one
//! [`SessionStore::save`] per flush interval), so there is one write-behind, not two.
//!
//! A store shared by several server instances (PostgreSQL, Redis) cannot leave the
//! authority in any one process: there, the check-and-mark of the window happens
//! atomically in the store for every request ([`SessionStore::check_request`], see
//! [`shared`]), and the server never decides from a local copy.
//! [`SessionStore::replay_authority`] says which model a store implements.
//!
//! # Shared stores: Redis and PostgreSQL
//!
//! Both answer [`ReplayAuthority::SharedStore`] and apply [`shared::check_and_mark`]
//! exactly, atomically, on the server for every request: the tests run the same
//! contract against them and [`MemoryStore::shared`], including a seeded run of
//! thousands of random operations compared answer by answer with it. Every u64 of the
//! window is exact (sequence numbers up to `u64::MAX`). `shutdown` does nothing (other
//! instances keep using the store), and every error message leaves out the password.
//!
//! **[`RedisStore`]** (`redis://host:port[/db][?prefix=NAME][&retain=SECONDS]`, Redis 7
//! or newer, one server or a primary; not Redis Cluster, since a script touches a
//! session and the shared indexes). All calls share one multiplexed, reconnecting
//! connection, so concurrent calls are pipelined. Every read-modify-write is one Lua
//! script run by EVALSHA (`check_request`, `save`/`create`, `close`, the two halves of
//! `sweep`); `shared_value` is `SET NX GET`. Keys, all under the prefix (default
//! `sessioncert`, so deployments can share a server):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:s:<id hex>` | hash | the record's fields as decimal text (`sealed_secrets` as bytes), `ended_at_ms` once ended, `win_top` and `win_bits` (128 bytes, bit `seq % 1024`) |
//! | `P:all`, `P:live` | sorted sets | ids by creation time: listing and loading |
//! | `P:ended` | sorted set | ids by end time: `ended_since`, `load_ended`, deletion by `sweep` |
//! | `P:v:<name>` | string | a shared value |
//!
//! A session's hash expires (TTL, Redis's clock) its lifetime plus `retain` (default
//! 24 h) after creation, and `retain` after it ends; `sweep` deletes earlier when asked
//! to keep less, and drops index entries whose hash has gone. Lua numbers are doubles,
//! so the scripts keep every u64 as decimal text and compute on 10-digit halves; the
//! sorted-set scores are doubles, exact for times below 2^53 ms. Writes are as durable
//! as the server's persistence settings (`appendonly`/`appendfsync`) make them.
//!
//! **[`PostgresStore`]** (`postgres://user[:password]@host[:port]/db[?schema=NAME]`,
//! sqlx's own parameters such as `sslmode` pass through; no TLS in this build). On
//! connect it creates the schema if named (one per deployment if wanted) and runs the
//! migrations in `migrations/` (a schema migrated by a newer build is refused with
//! [`StoreError::SchemaTooNew`]). Tables (see `migrations/0001_shared_sessions.sql`):
//! `sessioncert_sessions` (the record, `ended_at_ms`, and the window as `win_top
//! numeric(20)` and `win_bits bytea` of 128 bytes; times as bigint, values above
//! `i64::MAX` stored as `i64::MAX` as in SQLite; fill factor 70 so the per-request
//! update is a HOT update) and `sessioncert_values`. `check_request` calls are
//! **batched**: callers queue their mark; one batcher task takes every queued mark (up
//! to 256) and sends them in one statement, `sessioncert_check(ids, seqs, nows,
//! closes)`, a plpgsql function that decides each mark on its row locked `FOR UPDATE`,
//! in id order then arrival order (two marks of one session apply in order; batches and
//! `save` lock rows in the same order, so they never deadlock), in one transaction:
//! one round trip and one commit for the batch, each call still atomic and isolated.
//! `sweep` skips rows locked by a check at that moment (`SKIP LOCKED`) instead of
//! waiting. Wiped secrets are overwritten, but PostgreSQL keeps old row versions until
//! vacuum reclaims them.
//!
//! # Group commit ([`SqliteStore`])
//!
//! Every write goes to one dedicated writer thread through a bounded queue. The writer
//! takes everything queued, applies it in **one** transaction, commits, and only then
//! answers the callers, who all wait for their commit. Reads use their own
//! connections on the blocking pool, so they never queue behind writes.
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

#[cfg(any(feature = "redis", feature = "postgres"))]
mod address;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod batch;
mod error;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "redis")]
mod redis;
pub mod shared;
mod sqlite;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use record::{SessionProgress, SessionRecord, SessionSummary, SessionWrite};
pub use shared::{RequestCheck, RequestMark};
pub use sqlite::{OpenMode, SqliteStore, StartupReport, SCHEMA_VERSION};

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use sessioncert_proto::SessionId;

/// Who decides whether a request's sequence number is fresh (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayAuthority {
    /// One server process at a time holds the store (the store enforces it) and keeps
    /// every live session's window in memory; the store holds snapshots.
    ExclusiveServer,
    /// Several instances use the store at once; each request's sequence number is
    /// checked and marked in the store atomically ([`SessionStore::check_request`]), a
    /// session is created there atomically ([`SessionStore::create`]) and instances
    /// keep only keys, never a window or a state they decide from.
    SharedStore,
}

/// Where a server's sessions are persisted. All times are Unix milliseconds.
///
/// Implementations must not block the async runtime. Every write is durable when it
/// returns.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Which replay-state model this store implements.
    fn replay_authority(&self) -> ReplayAuthority {
        ReplayAuthority::ExclusiveServer
    }

    /// Every live (`matching`/`established`) session, for a server to load **once**
    /// when it starts. A running server never reads a session back.
    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError>;

    /// Applies `writes` in order, in one transaction, and returns after the commit.
    /// See [`SessionWrite`] for what each write may change: no write resurrects an
    /// ended session. On error nothing of the batch is applied.
    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError>;

    /// The stored session, if any (operators and tests; never a server's hot path).
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

    /// Closes a live session: state `Closed`, secrets wiped, end time `now_ms`. Returns
    /// whether a live session was closed. The operator path (another process); a
    /// server ends its own sessions with [`SessionWrite::End`].
    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError>;

    /// Ended sessions whose end is at or after `since_ms` and that kept remains
    /// ([`SessionWrite::End`]), with their end time; `sealed_secrets` holds the remains.
    /// A server loads them once at start, beside [`SessionStore::load_live`], so ids it
    /// ended before a restart keep being refused with a tag.
    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError>;

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

    /// Records a clean shutdown: the caller has stopped accepting requests and saved
    /// every session, so the stored windows are current. Later writes fail with
    /// [`StoreError::WriterGone`] (for backends that have a writer).
    async fn shutdown(&self) -> Result<(), StoreError>;

    // ---- Shared stores ([`ReplayAuthority::SharedStore`]) ----------------------------
    // Exclusive stores keep the defaults, which refuse: a server only calls these on a
    // store that answers `SharedStore`.

    /// Stores a new live session unless its id is already stored (the first record
    /// wins; an ended session is never brought back). Returns whether this call created
    /// it. Durable, and visible to every instance, when it returns.
    async fn create(&self, record: SessionRecord) -> Result<bool, StoreError> {
        let _ = record;
        Err(StoreError::Unsupported("create"))
    }

    /// The atomic per-request step of a shared store: see [`shared::check_and_mark`] for
    /// the rule every backend applies. Durable when it returns. Implementations may send
    /// concurrent calls to the backend together (pipelined, or in one batch), but each
    /// call is decided atomically and in isolation.
    async fn check_request(&self, mark: RequestMark) -> Result<RequestCheck, StoreError> {
        let _ = mark;
        Err(StoreError::Unsupported("check_request"))
    }

    /// The value stored under `name` in the store's small table of shared values,
    /// storing `candidate` first if there is none (atomically: every instance gets the
    /// same value). Instances use it to agree on values such as the ticket-key seed; the
    /// caller seals what it stores.
    async fn shared_value(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let _ = (name, candidate);
        Err(StoreError::Unsupported("shared_value"))
    }

    /// Answers when the backend is reachable (readiness; store latency in metrics).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
