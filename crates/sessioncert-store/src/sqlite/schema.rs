//! Files, connections, migrations and crash recovery.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::rows::{self, to_db, LIVE};
use super::StartupReport;
use crate::StoreError;

/// How long a connection waits for another writer's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Meta key of the clean-shutdown flag: "1" after a clean shutdown, "0" while a
/// server runs.
pub(super) const CLEAN_SHUTDOWN: &str = "clean_shutdown";
/// Meta key: the public identifier of the storage key the sessions are sealed under.
pub(super) const STORAGE_KEY_ID: &str = "storage_key_id";

/// The file beside the database that holds the token of the last clean stop. A stop
/// counts as clean only when the database and this file name the same token, and the
/// file is removed at start: a database restored from a backup (or copied back) names
/// an older token and is treated as after a crash, since its replay windows are old.
pub(super) fn clean_stop_token_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".clean-stop");
    PathBuf::from(name)
}

/// The database file's identity on its file system (device and inode on unix).
fn file_identity(db: &Path) -> Result<String, StoreError> {
    let meta = fs::metadata(db)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Ok(format!("{}:{}", meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok("-".to_owned())
    }
}

/// Whether the clean-stop record beside `db` names `token` and this very file.
fn clean_stop_matches(db: &Path, token: &str) -> bool {
    let Ok(record) = fs::read_to_string(clean_stop_token_path(db)) else {
        return false;
    };
    let mut parts = record.split_whitespace();
    let (Some(t), Some(id)) = (parts.next(), parts.next()) else {
        return false;
    };
    token != "0" && t == token && file_identity(db).is_ok_and(|now| now == id)
}

/// Writes a fresh clean-stop token next to `db` (synced) and returns it.
pub(super) fn write_clean_stop_token(db: &Path) -> Result<String, StoreError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = clean_stop_token_path(db);
    // The database file's identity goes with it: restoring a backup (untar, rsync, a
    // copy made elsewhere) creates a new file, so a restored pair does not match either.
    let record = format!("{token} {}", file_identity(db)?);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    std::io::Write::write_all(&mut f, record.as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(token)
}

/// The ordered schema migrations; migration `i` takes `user_version` from `i` to
/// `i + 1`. Append only: never edit a migration that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: sessions and meta.
    "CREATE TABLE sessions (
        id              BLOB PRIMARY KEY NOT NULL,
        state           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        suite           TEXT NOT NULL,
        client_addr     TEXT,
        created_at_ms   INTEGER NOT NULL,
        last_used_at_ms INTEGER NOT NULL,
        expires_at_ms   INTEGER NOT NULL,
        idle_timeout_ms INTEGER NOT NULL,
        request_count   INTEGER NOT NULL,
        sealed_secrets  BLOB NOT NULL,
        ended_at_ms     INTEGER
    );
    -- sweep (live rows by state, stale matching by age) and `list --live`
    CREATE INDEX sessions_state_created ON sessions (state, created_at_ms);
    -- ended_since and deletion of old ended rows
    CREATE INDEX sessions_ended ON sessions (ended_at_ms) WHERE ended_at_ms IS NOT NULL;
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );",
];

/// Creates the database's directory (mode 0700 on unix, for directories it creates)
/// and file (mode 0600 on unix) if missing. Existing ones are left as they are.
pub(super) fn prepare_files(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    create_private(path)?;
    Ok(())
}

fn create_private(path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    Ok(options.open(path)?)
}

/// The side file a server-mode instance holds an exclusive lock on.
pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".server-lock");
    path.with_file_name(name)
}

/// Takes the exclusive server lock, or fails if another server holds it. The lock is
/// released when the returned file is dropped (or the process dies).
pub(super) fn acquire_server_lock(path: &Path) -> Result<File, StoreError> {
    use fs4::fs_std::FileExt;
    let lock_path = lock_path(path);
    let file = create_private(&lock_path)?;
    if file.try_lock_exclusive()? {
        Ok(file)
    } else {
        Err(StoreError::AlreadyInUse(lock_path))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Writer,
    Reader,
}

pub(super) fn open_connection(path: &Path, role: Role) -> Result<Connection, StoreError> {
    let flags = match role {
        Role::Writer => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
        Role::Reader => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if role == Role::Writer {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "could not switch the database to WAL journal mode (got {mode:?})"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Freed space (old secret blobs) is overwritten with zeros in the database file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v)
        .map_err(|_| StoreError::Database(format!("invalid schema version (user_version {v})")))
}

/// Brings the schema up to date in one transaction; refuses a newer schema.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = super::SCHEMA_VERSION;
    let check = |found: u32| {
        if found > supported {
            Err(StoreError::SchemaTooNew { found, supported })
        } else {
            Ok(found)
        }
    };
    if check(user_version(conn)?)? == supported {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let found = check(user_version(&tx)?)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", supported)?;
    tx.commit()?;
    Ok(())
}

/// The crash-recovery step of a server-mode open: if the previous server did not shut
/// down cleanly, expire every live session; then mark the database as running, synced
/// to disk before any session can be accepted.
pub(super) fn recover_and_mark_running(
    conn: &mut Connection,
    db: &Path,
    now_ms: u64,
    storage_key_id: Option<&str>,
) -> Result<StartupReport, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // First, before anything changes: sessions sealed under another key would all
        // fail to open and be ended; refuse instead (dropping `tx` rolls back).
        if let Some(id) = storage_key_id {
            match rows::meta_get(&tx, STORAGE_KEY_ID)? {
                Some(recorded) if recorded != id => {
                    return Err(StoreError::StorageKeyMismatch {
                        recorded,
                        presented: id.to_owned(),
                    })
                }
                Some(_) => {}
                None => rows::meta_set(&tx, STORAGE_KEY_ID, id)?,
            }
        }
        let token_file = clean_stop_token_path(db);
        let unclean = match rows::meta_get(&tx, CLEAN_SHUTDOWN)? {
            // Clean only if the stop's token is still beside the database (§ above).
            Some(token) => !clean_stop_matches(db, &token),
            // A brand-new database is clean. A database that has live sessions but no
            // flag was not left by a clean shutdown of this code, so treat it as unclean.
            None => tx.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM sessions WHERE state IN {LIVE})"),
                [],
                |r| r.get::<_, bool>(0),
            )?,
        };
        let expired = if unclean {
            tx.execute(
                &format!(
                    "UPDATE sessions SET state = 'expired', sealed_secrets = X'', \
                     ended_at_ms = ?1 WHERE state IN {LIVE}"
                ),
                [to_db(now_ms)],
            )? as u64
        } else {
            0
        };
        rows::meta_set(&tx, CLEAN_SHUTDOWN, "0")?;
        tx.commit()?;
        // Only after "running" is on disk: this stop's token can never vouch again.
        match std::fs::remove_file(&token_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(StartupReport {
            unclean_previous_shutdown: unclean,
            sessions_expired_by_recovery: expired,
        })
    })();
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    result
}
