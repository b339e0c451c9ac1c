//! The one error type every backend returns.

use std::path::PathBuf;

use sessioncert_proto::SessionState;

/// Why a store operation failed.
///
/// Backend-neutral on purpose: a PostgreSQL or Redis backend reports its driver's
/// failures as [`StoreError::Database`] with the driver's message, so callers never
/// see a driver type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database (or backend) reported an error; the message is the driver's own.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row could not be decoded (bad id length, unknown state text, negative
    /// or out-of-range number, wrong column type). The store never panics on one.
    #[error("corrupt session row: {0}")]
    CorruptRow(String),
    /// The database was written by a newer build whose schema this build does not know.
    #[error(
        "database schema version {found} is newer than the newest this build supports \
         ({supported}); refusing to open it"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// Creating or opening the database's files or directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread has stopped: the store was shut down, or the thread died.
    #[error("the store's writer is gone (store shut down or writer thread exited)")]
    WriterGone,
    /// A blocking background task (a read) panicked or was cancelled.
    #[error("store background task failed: {0}")]
    Task(String),
    /// The operation does not accept a session in this state (only `matching` and
    /// `established` sessions can be inserted or progressed).
    #[error("session state {0} is not allowed for this operation")]
    InvalidState(SessionState),
    /// The database's sessions are sealed under another storage key than the one this
    /// server presented ([`crate::SqliteStore::open_server`]). Nothing was changed.
    #[error(
        "the sessions in this database are sealed under another storage key (key id {recorded}; \
         this start has key id {presented})"
    )]
    StorageKeyMismatch {
        /// The key id recorded in the database.
        recorded: String,
        /// The key id of the key this start uses.
        presented: String,
    },
    /// The store does not implement this operation (a shared-store operation asked of
    /// an exclusive store).
    #[error("this session store does not support {0}")]
    Unsupported(&'static str),
    /// The store's address (`--store`) is not one this build understands.
    #[error("bad store address: {0}")]
    BadAddress(String),
    /// Another server-mode instance (this or another process) holds the database.
    #[error("another server already has the session database open (lock file {})", .0.display())]
    AlreadyInUse(PathBuf),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}
