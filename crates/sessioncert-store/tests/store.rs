//! Behavioural tests: one suite run against every backend, plus SQLite-only tests.

use std::path::{Path, PathBuf};

use sessioncert_proto::SessionState;
use sessioncert_store::{
    MemoryStore, OpenMode, SessionStore, SessionWrite, SqliteStore, StartupReport, StoreError,
    SCHEMA_VERSION,
};
use tempfile::TempDir;

mod common;

use common::shared;
use common::*;

struct SqliteFixture {
    // Field order matters: the store is dropped before its directory.
    store: SqliteStore,
    dir: TempDir,
}

impl SqliteFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = SqliteStore::open(&db_path(&dir), OpenMode::Server).unwrap();
        assert_eq!(report, StartupReport::default(), "a new database is clean");
        SqliteFixture { store, dir }
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("sessions.db")
}

fn open(path: &Path, mode: OpenMode) -> (SqliteStore, StartupReport) {
    SqliteStore::open(path, mode).unwrap()
}

/// Runs each property against `MemoryStore` and `SqliteStore`.
macro_rules! on_every_backend {
    ($($prop:ident),* $(,)?) => {$(
        mod $prop {
            #[tokio::test]
            async fn memory() {
                let store = sessioncert_store::MemoryStore::new();
                super::$prop(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fx = super::SqliteFixture::new();
                super::$prop(&fx.store).await;
                sessioncert_store::SessionStore::shutdown(&fx.store).await.unwrap();
            }
        }
    )*};
}

/// Two handles on one `MemoryStore::shared()`: the model the shared backends match.
async fn memory_shared_pair() -> (shared::Store, shared::Store, ()) {
    let store: shared::Store = std::sync::Arc::new(MemoryStore::shared());
    (store.clone(), store, ())
}

shared_contract!(memory_shared_pair);

on_every_backend!(
    insert_load_round_trip,
    progress_updates_fields_and_establishes,
    progress_does_not_resurrect_ended_sessions,
    close_wipes_secrets_and_shows_in_ended_since,
    list_filters_and_never_shows_secrets,
    sweep_expires_wipes_and_deletes,
    writes_are_visible_when_save_returns,
    a_batch_applies_in_order_or_not_at_all,
    ended_sessions_stay_ended,
    load_live_returns_exactly_the_live_sessions,
    load_ended_returns_recent_ends_that_kept_remains,
);

// ---------------------------------------------------------------- SQLite only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sessions_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let (store, _) = open(&path, OpenMode::Server);
        store
            .insert(record(1, SessionState::Established, 1_000))
            .await
            .unwrap();
        store
            .insert(record(2, SessionState::Matching, 2_000))
            .await
            .unwrap();
        store
            .record_progress(progress(1, SessionState::Established, 1_500, 9))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    let (store, report) = open(&path, OpenMode::Server);
    assert_eq!(report, StartupReport::default());
    let r1 = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r1.state, SessionState::Established);
    assert_eq!(r1.request_count, 9);
    assert_eq!(
        r1.sealed_secrets,
        progress(1, SessionState::Matching, 0, 9).sealed_secrets
    );
    assert_eq!(
        store.load(&id(2)).await.unwrap(),
        Some(record(2, SessionState::Matching, 2_000))
    );
    assert_eq!(store.list(true).await.unwrap().len(), 2);
    store.shutdown().await.unwrap();
}

/// A database restored from a backup (or copied back) after a later clean stop holds
/// replay windows that lag: the start must treat it like a crash and expire its live
/// sessions, although the database itself says "clean".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_restored_backup_is_treated_as_an_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let backup = dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    let files = |from: &Path, to: &Path| {
        for name in ["sessions.db", "sessions.db-wal", "sessions.db-shm"] {
            let src = from.join(name);
            if src.exists() {
                std::fs::copy(&src, to.join(name)).unwrap();
            } else {
                let _ = std::fs::remove_file(to.join(name));
            }
        }
    };
    {
        let (store, _) = open(&path, OpenMode::Server);
        store
            .insert(record(1, SessionState::Established, 1_000))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    files(dir.path(), &backup); // the backup: a clean stop, seq state as of now
    {
        let (store, report) = open(&path, OpenMode::Server);
        assert_eq!(
            report,
            StartupReport::default(),
            "an ordinary clean restart"
        );
        store
            .record_progress(progress(1, SessionState::Established, 2_000, 5))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    files(&backup, dir.path()); // restored: the database says "clean", but it is old
    let (store, report) = open(&path, OpenMode::Server);
    assert!(report.unclean_previous_shutdown, "{report:?}");
    assert_eq!(report.sessions_expired_by_recovery, 1);
    assert_eq!(
        store.load(&id(1)).await.unwrap().unwrap().state,
        SessionState::Expired
    );
    store.shutdown().await.unwrap();
    // The stop after that is clean again.
    let (store, report) = open(&path, OpenMode::Server);
    assert_eq!(report, StartupReport::default());
    store
        .insert(record(2, SessionState::Established, 3_000))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    // A whole-directory restore brings the old database *and* its clean-stop record
    // back, as new files (as untar or rsync write them): still not the stopped file.
    files(dir.path(), &backup);
    std::fs::copy(
        dir.path().join("sessions.db.clean-stop"),
        backup.join("sessions.db.clean-stop"),
    )
    .unwrap();
    {
        let (store, report) = open(&path, OpenMode::Server);
        assert_eq!(report, StartupReport::default());
        store.shutdown().await.unwrap();
    }
    for name in ["sessions.db", "sessions.db.clean-stop"] {
        let tmp = dir.path().join(format!("{name}.restoring"));
        std::fs::copy(backup.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    }
    let (store, report) = open(&path, OpenMode::Server);
    assert!(report.unclean_previous_shutdown, "{report:?}");
    assert_eq!(report.sessions_expired_by_recovery, 1);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unclean_stop_expires_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let (store, _) = open(&path, OpenMode::Server);
        for n in 1..=3 {
            store
                .insert(record(n, SessionState::Established, 1_000))
                .await
                .unwrap();
        }
        store
            .insert(record(4, SessionState::Matching, 1_000))
            .await
            .unwrap();
        assert!(store.close(&id(3), 2_000).await.unwrap());
        // Dropped without shutdown(), as in a crash.
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (store, report) = open(&path, OpenMode::Server);
    assert_eq!(
        report,
        StartupReport {
            unclean_previous_shutdown: true,
            sessions_expired_by_recovery: 3,
        }
    );
    for n in [1, 2, 4] {
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, SessionState::Expired, "#{n}");
        assert!(
            r.sealed_secrets.is_empty(),
            "#{n} secrets survived recovery"
        );
    }
    assert_eq!(
        store.load(&id(3)).await.unwrap().unwrap().state,
        SessionState::Closed
    );
    let mut ended = store.ended_since(before).await.unwrap();
    ended.sort();
    assert_eq!(ended, vec![id(1), id(2), id(4)]);
    assert!(store.list(true).await.unwrap().is_empty());

    // A new session in this run, then a clean stop: nothing is expired next time.
    store
        .insert(record(5, SessionState::Established, 3_000))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);
    let (store, report) = open(&path, OpenMode::Server);
    assert_eq!(report, StartupReport::default());
    assert_eq!(
        store.load(&id(5)).await.unwrap(),
        Some(record(5, SessionState::Established, 3_000))
    );
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_admin_sees_and_closes_while_server_runs() {
    let fx = SqliteFixture::new();
    let server = &fx.store;
    for n in 1..=3 {
        server
            .insert(record(n, SessionState::Established, u64::from(n) * 1_000))
            .await
            .unwrap();
    }

    let (admin, report) = open(&db_path(&fx.dir), OpenMode::Admin);
    assert_eq!(
        report,
        StartupReport::default(),
        "admin mode does no recovery"
    );
    let live = admin.list(true).await.unwrap();
    assert_eq!(
        live.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![id(3), id(2), id(1)]
    );
    assert!(admin.close(&id(2), 50_000).await.unwrap());
    assert!(!admin.close(&id(2), 50_001).await.unwrap());
    admin.shutdown().await.unwrap();

    // The running server learns about it and cannot bring it back.
    assert_eq!(server.ended_since(50_000).await.unwrap(), vec![id(2)]);
    server
        .record_progress(progress(2, SessionState::Established, 60_000, 7))
        .await
        .unwrap();
    let r = server.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Closed);
    assert!(r.sealed_secrets.is_empty());
    assert_eq!(server.list(true).await.unwrap().len(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_admin_mode_leaves_the_shutdown_flag_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (server, _) = open(&path, OpenMode::Server);
    server
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();

    // An admin open + clean admin shutdown while the server runs ...
    let (admin, _) = open(&path, OpenMode::Admin);
    assert_eq!(admin.list(true).await.unwrap().len(), 1);
    admin.shutdown().await.unwrap();
    drop(admin);
    // ... then the server crashes: the next server start must still recover.
    drop(server);
    let (admin, report) = open(&path, OpenMode::Admin);
    assert_eq!(report, StartupReport::default());
    assert_eq!(
        admin.list(true).await.unwrap().len(),
        1,
        "admin must not recover"
    );
    drop(admin);
    let (server, report) = open(&path, OpenMode::Server);
    assert_eq!(
        report,
        StartupReport {
            unclean_previous_shutdown: true,
            sessions_expired_by_recovery: 1,
        }
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqlite_second_server_is_refused() {
    let fx = SqliteFixture::new();
    let path = db_path(&fx.dir);
    match SqliteStore::open(&path, OpenMode::Server) {
        Err(StoreError::AlreadyInUse(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("two servers opened one database"),
    }
    // Admin opens are fine, and after a shutdown another server may start.
    let (admin, _) = open(&path, OpenMode::Admin);
    admin.shutdown().await.unwrap();
    fx.store.shutdown().await.unwrap();
    let (again, report) = open(&path, OpenMode::Server);
    assert_eq!(report, StartupReport::default());
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let (store, _) = open(&path, OpenMode::Server);
        store.shutdown().await.unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    for mode in [OpenMode::Server, OpenMode::Admin] {
        match SqliteStore::open(&path, mode) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a database with a newer schema ({mode:?})"),
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_creates_private_files_and_missing_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/sessions.db");
    let (store, _) = open(&path, OpenMode::Server);
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "database file");
    let wal = path.with_file_name("sessions.db-wal");
    assert_eq!(mode(&wal) & 0o077, 0, "WAL file readable by others");
    assert_eq!(mode(&dir.path().join("a/b/c")) & 0o077, 0, "new directory");
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqlite_wiped_secrets_do_not_stay_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (store, _) = open(&path, OpenMode::Server);
    // Blobs much longer than the rest of a row, so that the shorter row written over
    // them cannot happen to cover the old bytes: only zeroing removes them.
    let mut closed = record(1, SessionState::Established, 1_000);
    closed.sealed_secrets = secret(1).repeat(8);
    let mut expired = record(3, SessionState::Established, 1_000);
    expired.sealed_secrets = secret(3).repeat(8);
    expired.expires_at_ms = 1_500;
    store.insert(closed).await.unwrap();
    store.insert(expired).await.unwrap();
    store
        .insert(record(2, SessionState::Established, 1_000))
        .await
        .unwrap();
    assert!(store.close(&id(1), 2_000).await.unwrap());
    assert_eq!(store.sweep(2_000, u64::MAX, u64::MAX).await.unwrap(), 1);
    store.shutdown().await.unwrap();
    drop(store);

    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(path.with_file_name("sessions.db-wal")) {
        bytes.extend(wal);
    }
    assert!(
        contains(&bytes, &secret(2)),
        "live session's blob is stored"
    );
    assert!(
        !contains(&bytes, &secret(1)),
        "closed session's blob left on disk"
    );
}

#[tokio::test]
async fn sqlite_corrupt_rows_are_errors_not_panics() {
    let fx = SqliteFixture::new();
    let path = db_path(&fx.dir);
    fx.store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "UPDATE sessions SET state = 'bogus' WHERE id = ?1",
            [&id(1).as_bytes()[..]],
        )
        .unwrap();
    }
    match fx.store.load(&id(1)).await {
        Err(StoreError::CorruptRow(msg)) => assert!(msg.contains("bogus"), "{msg}"),
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
    assert!(matches!(
        fx.store.list(false).await,
        Err(StoreError::CorruptRow(_))
    ));

    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "UPDATE sessions SET state = 'established', id = X'0102', ended_at_ms = 5 \
             WHERE id = ?1",
            [&id(1).as_bytes()[..]],
        )
        .unwrap();
    }
    assert!(matches!(
        fx.store.list(true).await,
        Err(StoreError::CorruptRow(_))
    ));
    assert!(matches!(
        fx.store.ended_since(0).await,
        Err(StoreError::CorruptRow(_))
    ));

    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "UPDATE sessions SET id = ?1, request_count = -1",
            [&id(1).as_bytes()[..]],
        )
        .unwrap();
    }
    assert!(matches!(
        fx.store.load(&id(1)).await,
        Err(StoreError::CorruptRow(_))
    ));
    fx.store.shutdown().await.unwrap();
}

#[tokio::test]
async fn sqlite_writes_after_shutdown_fail_but_reads_work() {
    let fx = SqliteFixture::new();
    fx.store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    fx.store.shutdown().await.unwrap();
    assert!(matches!(
        fx.store
            .insert(record(2, SessionState::Established, 1_000))
            .await,
        Err(StoreError::WriterGone)
    ));
    assert!(matches!(
        fx.store
            .record_progress(progress(1, SessionState::Established, 2, 2))
            .await,
        Err(StoreError::WriterGone)
    ));
    assert!(matches!(
        fx.store.close(&id(1), 5).await,
        Err(StoreError::WriterGone)
    ));
    assert!(matches!(
        fx.store.shutdown().await,
        Err(StoreError::WriterGone)
    ));
    assert_eq!(fx.store.list(true).await.unwrap().len(), 1);
    assert!(fx.store.load(&id(1)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_burst_of_writes_all_lands() {
    const N: u32 = 20_000;
    let fx = SqliteFixture::new();
    let store = std::sync::Arc::new(fx.store);
    // Two concurrent producers, as request handlers on several workers would be.
    let mut tasks = Vec::new();
    for half in 0..2u32 {
        let store = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // Batches of 100 sessions, as a server's flush would send them.
            let ids: Vec<u32> = ((half * N / 2)..((half + 1) * N / 2)).collect();
            for chunk in ids.chunks(100) {
                let mut writes = Vec::new();
                for &n in chunk {
                    writes.push(SessionWrite::Insert(record(
                        n,
                        SessionState::Matching,
                        u64::from(n),
                    )));
                    writes.push(SessionWrite::Progress(progress(
                        n,
                        SessionState::Established,
                        10,
                        1,
                    )));
                    writes.push(SessionWrite::Progress(progress(
                        n,
                        SessionState::Established,
                        20,
                        2,
                    )));
                }
                store.save(writes).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Durable: a separate instance (reading only the file) sees all of it.
    let (admin, _) = open(&db_path(&fx.dir), OpenMode::Admin);
    let live = admin.list(true).await.unwrap();
    assert_eq!(live.len(), N as usize);
    assert!(live
        .iter()
        .all(|s| s.state == SessionState::Established && s.request_count == 2));
    let r = admin.load(&id(N - 1)).await.unwrap().unwrap();
    assert_eq!(
        r.sealed_secrets,
        progress(N - 1, SessionState::Matching, 0, 2).sealed_secrets
    );
    admin.shutdown().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);
    drop(fx.dir);
}

#[tokio::test]
async fn memory_store_is_usable_as_a_trait_object() {
    let store: std::sync::Arc<dyn SessionStore> = std::sync::Arc::new(MemoryStore::new());
    store
        .insert(record(1, SessionState::Established, 1))
        .await
        .unwrap();
    assert!(store.load(&id(1)).await.unwrap().is_some());
}

/// A server start with another storage key is refused before anything changes: no
/// recovery, the clean stop still counts, the sessions stay live for the right key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_another_storage_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let (store, _) = SqliteStore::open_server(&path, "key-a").unwrap();
        store
            .insert(record(1, SessionState::Established, 1_000))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    for _ in 0..2 {
        match SqliteStore::open_server(&path, "key-b") {
            Err(StoreError::StorageKeyMismatch {
                recorded,
                presented,
            }) => {
                assert_eq!((recorded.as_str(), presented.as_str()), ("key-a", "key-b"));
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a start with another storage key was accepted"),
        }
    }
    let (store, report) = SqliteStore::open_server(&path, "key-a").unwrap();
    assert_eq!(
        report,
        StartupReport::default(),
        "the clean stop still counts"
    );
    assert_eq!(store.load_live().await.unwrap().len(), 1);
    store.shutdown().await.unwrap();
}
