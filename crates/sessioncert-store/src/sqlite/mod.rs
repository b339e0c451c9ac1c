//! The embedded SQLite backend.

mod rows;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use sessioncert_proto::SessionId;
use tokio::sync::{mpsc, oneshot};

use crate::{SessionRecord, SessionStore, SessionSummary, SessionWrite, StoreError};
use writer::{Ack, Msg, Writer};

/// The newest schema version this build knows (SQLite `user_version`).
pub const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

/// Most idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// Who opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The running server: takes the exclusive server lock, runs crash recovery, marks
    /// the database as running, and `shutdown` marks it cleanly stopped.
    Server,
    /// An operator tool beside a possibly running server: no lock, no recovery, never
    /// touches the shutdown flag.
    Admin,
}

/// What a server-mode open found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartupReport {
    /// The previous server did not shut down cleanly (always `false` in admin mode).
    pub unclean_previous_shutdown: bool,
    /// Live sessions expired because of that.
    pub sessions_expired_by_recovery: u64,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent even if it unwinds.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Most messages waiting for the writer; callers beyond it wait for room (every
/// caller waits for its commit anyway, so this only bounds memory).
const QUEUE_CAPACITY: usize = 1024;

struct Shared {
    path: PathBuf,
    /// `None` once shut down or dropped: later writes fail with `WriterGone`.
    queue: Mutex<Option<mpsc::Sender<Msg>>>,
    readers: Mutex<Vec<Connection>>,
}

impl Shared {
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => schema::open_connection(&self.path, schema::Role::Reader)?,
        };
        let result = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        result
    }
}

/// The embedded [`SessionStore`]: one SQLite file in WAL mode, written by one writer
/// thread with group commit, read through a small pool of connections on tokio's
/// blocking pool. See the crate documentation for the design.
///
/// Dropping the store without calling [`SessionStore::shutdown`] writes what is
/// queued but leaves the database marked as running, so the next server-mode open
/// treats it like a crash.
pub struct SqliteStore {
    shared: Arc<Shared>,
    mode: OpenMode,
    writer: Mutex<Option<JoinHandle<()>>>,
    server_lock: Mutex<Option<File>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`: directory and file are
    /// created (file mode 0600 on unix), pragmas set, migrations applied. In
    /// [`OpenMode::Server`] it also takes the server lock (failing with
    /// [`StoreError::AlreadyInUse`] if another server holds it) and runs crash
    /// recovery. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(path: &Path, mode: OpenMode) -> Result<(SqliteStore, StartupReport), StoreError> {
        Self::open_checked(path, mode, None)
    }

    /// [`SqliteStore::open`] for a server whose session secrets are sealed under a
    /// storage key: `storage_key_id` (a public identifier of that key, e.g. a MAC of a
    /// fixed label under it) is recorded on first use, and a database recorded under
    /// another key is refused with [`StoreError::StorageKeyMismatch`] **before** anything
    /// in it changes (no recovery, not marked running), so a start with a forgotten or
    /// wrong key neither ends the stored sessions nor spoils the last clean stop.
    pub fn open_server(
        path: &Path,
        storage_key_id: &str,
    ) -> Result<(SqliteStore, StartupReport), StoreError> {
        Self::open_checked(path, OpenMode::Server, Some(storage_key_id))
    }

    fn open_checked(
        path: &Path,
        mode: OpenMode,
        storage_key_id: Option<&str>,
    ) -> Result<(SqliteStore, StartupReport), StoreError> {
        schema::prepare_files(path)?;
        let server_lock = match mode {
            OpenMode::Server => Some(schema::acquire_server_lock(path)?),
            OpenMode::Admin => None,
        };
        let mut conn = schema::open_connection(path, schema::Role::Writer)?;
        schema::migrate(&mut conn)?;
        let report = match mode {
            OpenMode::Server => {
                schema::recover_and_mark_running(&mut conn, path, now_ms(), storage_key_id)?
            }
            OpenMode::Admin => StartupReport::default(),
        };
        let reader = schema::open_connection(path, schema::Role::Reader)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            queue: Mutex::new(Some(tx)),
            readers: Mutex::new(vec![reader]),
        });
        let writer = Writer::new(conn, rx);
        let handle = thread::Builder::new()
            .name("sessioncert-store-writer".into())
            .spawn(move || writer.run())?;
        Ok((
            SqliteStore {
                shared,
                mode,
                writer: Mutex::new(Some(handle)),
                server_lock: Mutex::new(server_lock),
            },
            report,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How the store was opened.
    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    /// Queues a message and waits for the writer's answer (after its commit).
    async fn request<T>(&self, make: impl FnOnce(Ack<T>) -> Msg) -> Result<T, StoreError> {
        let (ack, answer) = oneshot::channel();
        let tx = lock(&self.shared.queue)
            .clone()
            .ok_or(StoreError::WriterGone)?;
        tx.send(make(ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.with_reader(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Disconnect the channel: the writer commits what is queued, then exits.
        lock(&self.shared.queue).take();
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        // The server lock (if any) is released when its field drops, after the writer
        // has closed its connection.
    }
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(rows::load_live).await
    }

    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        writes.iter().try_for_each(SessionWrite::check)?;
        if writes.is_empty() {
            return Ok(());
        }
        self.request(|ack| Msg::Save { writes, ack }).await
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let id = *id;
        self.read(move |conn| rows::load(conn, &id)).await
    }

    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        let id = *id;
        self.request(|ack| Msg::Close { id, now_ms, ack }).await
    }

    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        self.read(move |conn| rows::load_ended(conn, since_ms))
            .await
    }

    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        self.read(move |conn| rows::ended_since(conn, since_ms))
            .await
    }

    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        self.read(move |conn| rows::list(conn, live_only)).await
    }

    async fn sweep(
        &self,
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
    ) -> Result<u64, StoreError> {
        self.request(|ack| Msg::Sweep {
            now_ms,
            matching_ttl_ms,
            retain_ended_ms,
            ack,
        })
        .await
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        let (ack, answer) = oneshot::channel();
        // Close the queue first: anything after this fails with `WriterGone` instead
        // of being silently dropped. Writes already queued are committed before the
        // shutdown message, which goes last.
        let tx = lock(&self.shared.queue)
            .take()
            .ok_or(StoreError::WriterGone)?;
        tx.send(Msg::Shutdown {
            mark_clean: self.mode == OpenMode::Server,
            ack,
        })
        .await
        .map_err(|_| StoreError::WriterGone)?;
        drop(tx);
        let result = answer.await.map_err(|_| StoreError::WriterGone)?;
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        lock(&self.server_lock).take();
        result
    }
}
