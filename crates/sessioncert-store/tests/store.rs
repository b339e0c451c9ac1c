//! Behavioural tests: one suite run against every backend, plus SQLite-only tests.

use std::path::{Path, PathBuf};

use sessioncert_proto::{SessionId, SessionState};
use sessioncert_store::{
    MemoryStore, OpenMode, SessionProgress, SessionRecord, SessionStore, SessionWrite, SqliteStore,
    StartupReport, StoreError, SCHEMA_VERSION,
};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn id(n: u32) -> SessionId {
    let mut b = [0xA5u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    SessionId(b)
}

/// Distinctive bytes, easy to look for in output and on disk.
fn secret(n: u32) -> Vec<u8> {
    format!("SEALED-SECRET-{n:08}-").repeat(3).into_bytes()
}

fn record(n: u32, state: SessionState, created_at_ms: u64) -> SessionRecord {
    SessionRecord {
        id: id(n),
        state,
        version: 1,
        suite: "AES-256-GCM".into(),
        client_addr: Some(format!("192.0.2.{}:443", n % 250)),
        created_at_ms,
        last_used_at_ms: created_at_ms,
        expires_at_ms: created_at_ms + 3_600_000,
        idle_timeout_ms: 600_000,
        request_count: 0,
        sealed_secrets: secret(n),
    }
}

fn progress(n: u32, state: SessionState, at: u64, count: u64) -> SessionProgress {
    SessionProgress {
        id: id(n),
        state,
        last_used_at_ms: at,
        request_count: count,
        sealed_secrets: secret(n + 1_000_000 + count as u32),
    }
}

/// One-write shorthands over `save` (each write its own durable batch).
#[async_trait::async_trait]
trait SingleWrites {
    async fn insert(&self, r: SessionRecord) -> Result<(), StoreError>;
    async fn record_progress(&self, p: SessionProgress) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl<S: SessionStore + ?Sized> SingleWrites for S {
    async fn insert(&self, r: SessionRecord) -> Result<(), StoreError> {
        self.save(vec![SessionWrite::Insert(r)]).await
    }
    async fn record_progress(&self, p: SessionProgress) -> Result<(), StoreError> {
        self.save(vec![SessionWrite::Progress(p)]).await
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

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

// ---------------------------------------------------------------- properties

async fn insert_load_round_trip(store: &dyn SessionStore) {
    let a = record(1, SessionState::Established, 1_000);
    let mut b = record(2, SessionState::Matching, 2_000);
    b.client_addr = None;
    b.version = u16::MAX;
    b.expires_at_ms = u64::MAX / 4;
    store.insert(a.clone()).await.unwrap();
    store.insert(b.clone()).await.unwrap();

    assert_eq!(store.load(&id(1)).await.unwrap(), Some(a.clone()));
    assert_eq!(store.load(&id(2)).await.unwrap(), Some(b));
    assert_eq!(store.load(&id(3)).await.unwrap(), None);

    // Only live states can be inserted.
    for state in [
        SessionState::Init,
        SessionState::Expired,
        SessionState::Closed,
    ] {
        let err = store.insert(record(4, state, 1)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidState(s) if s == state),
            "{err}"
        );
    }
    assert_eq!(store.load(&id(4)).await.unwrap(), None);

    // Re-inserting an existing id changes nothing.
    let mut again = record(1, SessionState::Matching, 9_999);
    again.sealed_secrets = b"other".to_vec();
    store.insert(again).await.unwrap();
    assert_eq!(store.load(&id(1)).await.unwrap(), Some(a));
}

async fn progress_updates_fields_and_establishes(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Matching, 1_000))
        .await
        .unwrap();

    store
        .record_progress(progress(1, SessionState::Matching, 1_500, 1))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Matching);
    assert_eq!((r.last_used_at_ms, r.request_count), (1_500, 1));
    assert_eq!(
        r.sealed_secrets,
        progress(1, SessionState::Matching, 0, 1).sealed_secrets
    );

    store
        .record_progress(progress(1, SessionState::Established, 2_000, 2))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (2_000, 2));

    // Never back to Matching, even when the updates share a batch.
    store
        .record_progress(progress(1, SessionState::Matching, 2_500, 3))
        .await
        .unwrap();
    store
        .record_progress(progress(1, SessionState::Matching, 3_000, 4))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (3_000, 4));
    assert_eq!(
        r.sealed_secrets,
        progress(1, SessionState::Matching, 0, 4).sealed_secrets
    );
    // Unchanged fields stay.
    assert_eq!(r.created_at_ms, 1_000);
    assert_eq!(r.suite, "AES-256-GCM");

    // Same when the updates are queued back to back (one write batch in SQLite).
    store
        .insert(record(2, SessionState::Matching, 1_000))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Established, 1_100, 1))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Matching, 1_200, 2))
        .await
        .unwrap();
    let r = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (1_200, 2));

    // Progress for an unknown session creates nothing; non-live states are refused.
    store
        .record_progress(progress(7, SessionState::Established, 1, 1))
        .await
        .unwrap();
    assert_eq!(store.load(&id(7)).await.unwrap(), None);
    let err = store
        .record_progress(progress(1, SessionState::Closed, 1, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidState(SessionState::Closed)
    ));
    assert_eq!(store.load(&id(7)).await.unwrap(), None);
}

async fn progress_does_not_resurrect_ended_sessions(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Established, 1_000))
        .await
        .unwrap();
    assert!(store.close(&id(1), 5_000).await.unwrap());
    assert!(!store.close(&id(1), 6_000).await.unwrap(), "already closed");
    assert!(!store.close(&id(9), 6_000).await.unwrap(), "unknown");

    // Expire #2 by lifetime.
    assert_eq!(
        store
            .sweep(1_000 + 3_600_000, u64::MAX, u64::MAX)
            .await
            .unwrap(),
        1
    );

    for (n, state) in [(1, SessionState::Closed), (2, SessionState::Expired)] {
        store
            .record_progress(progress(n, SessionState::Established, 7_000, 42))
            .await
            .unwrap();
        store
            .record_progress(progress(n, SessionState::Matching, 8_000, 43))
            .await
            .unwrap();
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, state);
        assert!(r.sealed_secrets.is_empty(), "secrets came back: {r:?}");
        assert_eq!(r.request_count, 0);
        assert!(!store.close(&id(n), 9_000).await.unwrap());
    }
    assert!(store.list(true).await.unwrap().is_empty());
}

async fn close_wipes_secrets_and_shows_in_ended_since(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Matching, 1_000))
        .await
        .unwrap();
    assert!(store.close(&id(1), 5_000).await.unwrap());

    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Closed);
    assert!(r.sealed_secrets.is_empty());
    let untouched = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(untouched.sealed_secrets, secret(2));

    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(1)]);
    assert_eq!(store.ended_since(5_000).await.unwrap(), vec![id(1)]);
    assert!(store.ended_since(5_001).await.unwrap().is_empty());

    // A Matching session can be closed too.
    assert!(store.close(&id(2), 6_000).await.unwrap());
    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(1), id(2)]);
    assert_eq!(store.ended_since(5_500).await.unwrap(), vec![id(2)]);

    let all = store.list(false).await.unwrap();
    let s1 = all.iter().find(|s| s.id == id(1)).unwrap();
    assert_eq!(s1.ended_at_ms, Some(5_000));
}

async fn list_filters_and_never_shows_secrets(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Matching, 3_000))
        .await
        .unwrap();
    store
        .insert(record(3, SessionState::Established, 2_000))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Established, 3_500, 5))
        .await
        .unwrap();
    assert!(store.close(&id(3), 4_000).await.unwrap());

    let all = store.list(false).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id(2), id(3), id(1)], "newest first");
    assert_eq!(all[0].state, SessionState::Established);
    assert_eq!(all[0].request_count, 5);
    assert_eq!(all[0].ended_at_ms, None);
    assert_eq!(all[1].state, SessionState::Closed);

    let live = store.list(true).await.unwrap();
    let ids: Vec<_> = live.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id(2), id(1)]);
    assert!(live.iter().all(|s| s.state.is_live()));

    // No secret bytes anywhere an operator looks.
    let rec = store.load(&id(1)).await.unwrap().unwrap();
    let prog = progress(1, SessionState::Established, 1, 1);
    let json = serde_json::to_string(&all).unwrap();
    let outputs = [
        format!("{all:?}"),
        format!("{rec:?}"),
        format!("{prog:?}"),
        json.clone(),
    ];
    for out in &outputs {
        assert!(!out.contains("SEALED-SECRET"), "{out}");
        for n in 1..=3 {
            let bytes = format!("{:?}", &secret(n)[..8]);
            assert!(!out.contains(bytes.trim_matches(['[', ']'])), "{out}");
        }
    }
    assert!(outputs[1].contains(&format!("sealed_secrets_len: {}", secret(1).len())));
    assert!(!json.contains("sealed"));

    // Ids and states serialize as their text forms.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["id"], id(2).to_string());
    assert_eq!(v[0]["state"], "established");
    assert_eq!(v[1]["state"], "closed");
    assert_eq!(v[1]["ended_at_ms"], 4_000);
    assert_eq!(v[2]["client_addr"], "192.0.2.1:443");
    assert_eq!(id(2).to_string().parse::<SessionId>().unwrap(), id(2));
}

async fn sweep_expires_wipes_and_deletes(store: &dyn SessionStore) {
    let now = 10_000_000;
    let ttl = 30_000;

    // 1: lifetime ends exactly now.
    let mut r = record(1, SessionState::Established, now - 100_000);
    r.expires_at_ms = now;
    r.last_used_at_ms = now - 1;
    store.insert(r).await.unwrap();
    // 2: idle exactly long enough.
    let mut r = record(2, SessionState::Established, now - 100_000);
    r.last_used_at_ms = now - 5_000;
    r.idle_timeout_ms = 5_000;
    store.insert(r).await.unwrap();
    // 3: stale Matching (created exactly ttl ago).
    let mut r = record(3, SessionState::Matching, now - ttl);
    r.last_used_at_ms = now;
    store.insert(r).await.unwrap();
    // 4: Established 1 ms short of every limit: stays.
    let mut r = record(4, SessionState::Established, now - ttl * 10);
    r.expires_at_ms = now + 1;
    r.last_used_at_ms = now - 4_999;
    r.idle_timeout_ms = 5_000;
    store.insert(r).await.unwrap();
    // 5: fresh Matching: stays.
    let mut r = record(5, SessionState::Matching, now - ttl + 1);
    r.last_used_at_ms = now - ttl + 1;
    store.insert(r).await.unwrap();
    // 6: ended long ago: deleted. 7: ended recently: kept.
    store
        .insert(record(6, SessionState::Established, now - 100_000))
        .await
        .unwrap();
    store
        .insert(record(7, SessionState::Established, now - 100_000))
        .await
        .unwrap();
    // 8: live, idle timeout "never", last used in the "future" (clock skew): stays.
    let mut r = record(8, SessionState::Established, now - 100_000);
    r.last_used_at_ms = now + 50;
    r.idle_timeout_ms = u64::MAX;
    store.insert(r).await.unwrap();
    let retain = 60_000;
    assert!(store.close(&id(6), now - retain - 1).await.unwrap());
    assert!(store.close(&id(7), now - retain).await.unwrap());

    assert_eq!(store.sweep(now, ttl, retain).await.unwrap(), 3);

    for n in [1, 2, 3] {
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, SessionState::Expired, "#{n}");
        assert!(r.sealed_secrets.is_empty(), "#{n} secrets not wiped");
    }
    for n in [4, 5, 8] {
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert!(r.state.is_live(), "#{n} expired too early");
        assert_eq!(r.sealed_secrets, secret(n));
    }
    assert_eq!(
        store.load(&id(6)).await.unwrap(),
        None,
        "old ended row kept"
    );
    assert_eq!(
        store.load(&id(7)).await.unwrap().unwrap().state,
        SessionState::Closed
    );

    let mut ended = store.ended_since(now).await.unwrap();
    ended.sort();
    assert_eq!(ended, vec![id(1), id(2), id(3)]);

    // Nothing left to expire now.
    assert_eq!(store.sweep(now, ttl, retain).await.unwrap(), 0);
    // Later, #4's lifetime is over, and everything that ended before `later - retain`
    // is deleted.
    let later = now + retain + 1;
    assert_eq!(store.sweep(later, u64::MAX, retain).await.unwrap(), 1);
    for n in [1, 2, 3, 7] {
        assert_eq!(store.load(&id(n)).await.unwrap(), None, "#{n} kept");
    }
    assert_eq!(
        store.load(&id(4)).await.unwrap().unwrap().state,
        SessionState::Expired
    );
    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(4)]);
    let live: Vec<_> = store
        .list(true)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&id(5)) && live.contains(&id(8)));
}

async fn a_batch_applies_in_order_or_not_at_all(store: &dyn SessionStore) {
    // In order: insert, progress, end of one session and a second insert, one batch.
    store
        .save(vec![
            SessionWrite::Insert(record(1, SessionState::Matching, 1_000)),
            SessionWrite::Progress(progress(1, SessionState::Established, 1_100, 3)),
            SessionWrite::Insert(record(2, SessionState::Established, 1_000)),
            SessionWrite::End {
                id: id(2),
                state: SessionState::Closed,
                at_ms: 1_200,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    let r1 = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!((r1.state, r1.request_count), (SessionState::Established, 3));
    let r2 = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(r2.state, SessionState::Closed);
    assert!(r2.sealed_secrets.is_empty());
    // One invalid write refuses the whole batch: the valid insert before it is not applied.
    let err = store
        .save(vec![
            SessionWrite::Insert(record(3, SessionState::Established, 1_000)),
            SessionWrite::End {
                id: id(1),
                state: SessionState::Established,
                at_ms: 1_300,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidState(SessionState::Established)
    ));
    assert_eq!(store.load(&id(3)).await.unwrap(), None);
    assert_eq!(
        store.load(&id(1)).await.unwrap().unwrap().state,
        SessionState::Established
    );
    // An empty batch is fine.
    store.save(Vec::new()).await.unwrap();
}

async fn ended_sessions_stay_ended(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .save(vec![SessionWrite::End {
            id: id(1),
            state: SessionState::Expired,
            at_ms: 2_000,
            remains: Vec::new(),
        }])
        .await
        .unwrap();
    // Nothing that arrives later brings it back or changes its first end.
    store
        .save(vec![
            SessionWrite::Insert(record(1, SessionState::Established, 1_000)),
            SessionWrite::Progress(progress(1, SessionState::Established, 3_000, 9)),
            SessionWrite::End {
                id: id(1),
                state: SessionState::Closed,
                at_ms: 4_000,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    assert!(!store.close(&id(1), 5_000).await.unwrap());
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!((r.state, r.request_count), (SessionState::Expired, 0));
    assert!(r.sealed_secrets.is_empty());
    let summary = store.list(false).await.unwrap();
    assert_eq!(summary[0].ended_at_ms, Some(2_000));
    assert!(store.load_live().await.unwrap().is_empty());
}

async fn load_ended_returns_recent_ends_that_kept_remains(store: &dyn SessionStore) {
    for n in 1..=4 {
        store
            .insert(record(n, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
    store
        .save(vec![
            // Ended with remains, recently: loaded, remains in place of the secrets.
            SessionWrite::End {
                id: id(1),
                state: SessionState::Closed,
                at_ms: 5_000,
                remains: vec![7; 40],
            },
            // Ended with remains, long ago: not loaded.
            SessionWrite::End {
                id: id(2),
                state: SessionState::Expired,
                at_ms: 2_000,
                remains: vec![8; 40],
            },
            // Ended without remains: not loaded.
            SessionWrite::End {
                id: id(3),
                state: SessionState::Expired,
                at_ms: 5_000,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    // Closed by an operator (no remains): not loaded.
    assert!(store.close(&id(4), 6_000).await.unwrap());
    let ended = store.load_ended(4_000).await.unwrap();
    assert_eq!(
        ended.len(),
        1,
        "{:?}",
        ended.iter().map(|e| e.0.id).collect::<Vec<_>>()
    );
    let (r, at) = &ended[0];
    assert_eq!((r.id, r.state, *at), (id(1), SessionState::Closed, 5_000));
    assert_eq!(r.sealed_secrets, vec![7; 40]);
    // A later End never replaces the first one's remains.
    store
        .save(vec![SessionWrite::End {
            id: id(1),
            state: SessionState::Expired,
            at_ms: 9_000,
            remains: vec![9; 40],
        }])
        .await
        .unwrap();
    let ended = store.load_ended(0).await.unwrap();
    let first = ended.iter().find(|(r, _)| r.id == id(1)).unwrap();
    assert_eq!(first.0.sealed_secrets, vec![7; 40]);
    assert!(store.load_live().await.unwrap().is_empty());
}

async fn load_live_returns_exactly_the_live_sessions(store: &dyn SessionStore) {
    for n in 0..6 {
        let state = if n % 2 == 0 {
            SessionState::Established
        } else {
            SessionState::Matching
        };
        store.insert(record(n, state, 1_000)).await.unwrap();
    }
    store
        .record_progress(progress(0, SessionState::Established, 2_000, 7))
        .await
        .unwrap();
    store.close(&id(2), 3_000).await.unwrap();
    store
        .save(vec![SessionWrite::End {
            id: id(3),
            state: SessionState::Expired,
            at_ms: 3_000,
            remains: Vec::new(),
        }])
        .await
        .unwrap();
    let mut live = store.load_live().await.unwrap();
    live.sort_by_key(|r| r.id);
    let ids: Vec<SessionId> = live.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id(0), id(1), id(4), id(5)]);
    // Full records, secrets included: this is what a server resumes from.
    assert_eq!(live[0].request_count, 7);
    assert_eq!(
        live[0].sealed_secrets,
        progress(0, SessionState::Established, 0, 7).sealed_secrets
    );
    assert_eq!(live[1].state, SessionState::Matching);
    assert_eq!(live[2].sealed_secrets, secret(4));
}

async fn writes_are_visible_when_save_returns(store: &dyn SessionStore) {
    for n in 0..500 {
        store
            .insert(record(n, SessionState::Matching, 1_000 + u64::from(n)))
            .await
            .unwrap();
        store
            .record_progress(progress(n, SessionState::Established, 5_000, u64::from(n)))
            .await
            .unwrap();
    }
    let r = store.load(&id(499)).await.unwrap().unwrap();
    assert_eq!((r.state, r.request_count), (SessionState::Established, 499));
    store
        .record_progress(progress(0, SessionState::Established, 6_000, 1_000))
        .await
        .unwrap();
    let live = store.list(true).await.unwrap();
    assert_eq!(live.len(), 500);
    assert_eq!(live[0].id, id(499));
    assert_eq!(live.last().unwrap().request_count, 1_000);
    assert!(live.iter().all(|s| s.state == SessionState::Established));
}

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
