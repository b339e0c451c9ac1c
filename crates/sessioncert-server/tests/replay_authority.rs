//! One authority for replay state: while a server runs, a live session's window lives
//! only in its memory and is never re-read from the store; closed sessions stay closed;
//! shutdown stops opening requests before its final save. Each test here failed on the
//! design where `close` dropped the session from memory and a later request reloaded
//! the (lagging) stored row, or where shutdown kept opening requests while it saved.

mod common;

use common::*;
use sessioncert_proto::wire::{CONFIRM_PATH, HANDSHAKE_PATH, SESSION_HEADER};
use sessioncert_proto::{ClientHandshake, ClientOffer, SessionId, SessionState};
use sessioncert_server::keys::DATABASE_FILE;
use sessioncert_server::{now_ms, ServerKeys, Timing};
use sessioncert_store::{
    OpenMode, SessionRecord, SessionStore, SessionSummary, SessionWrite, SqliteStore, StoreError,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A SQLite store that counts how often sessions are read back.
struct ReadCounting {
    inner: SqliteStore,
    load: AtomicUsize,
    load_live: AtomicUsize,
    load_ended: AtomicUsize,
}

#[async_trait::async_trait]
impl SessionStore for ReadCounting {
    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.load_live.fetch_add(1, Ordering::SeqCst);
        self.inner.load_live().await
    }
    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        self.inner.save(writes).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.load.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }
    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        self.inner.close(id, now_ms).await
    }
    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        self.load_ended.fetch_add(1, Ordering::SeqCst);
        self.inner.load_ended(since_ms).await
    }
    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        self.inner.ended_since(since_ms).await
    }
    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        self.inner.list(live_only).await
    }
    async fn sweep(&self, now: u64, ttl: u64, retain: u64) -> Result<u64, StoreError> {
        self.inner.sweep(now, ttl, retain).await
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
}

fn sqlite(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join(DATABASE_FILE), OpenMode::Server)
        .unwrap()
        .0
}

/// Flushes only when asked: the stored windows lag as far as they ever could.
fn lagging() -> Timing {
    Timing {
        flush_interval: Duration::from_secs(3600),
        ..Timing::default()
    }
}

async fn start(dir: &Path, store: Arc<dyn SessionStore>, timing: Timing) -> TestServer {
    let (keys, _) = ServerKeys::open_or_create(dir, now_ms()).unwrap();
    TestServer::start_with(keys, store, generous(), timing, Default::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_is_never_read_back_and_its_replays_never_run() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(ReadCounting {
        inner: sqlite(d.path()),
        load: AtomicUsize::new(0),
        load_live: AtomicUsize::new(0),
        load_ended: AtomicUsize::new(0),
    });
    let srv = start(d.path(), store.clone(), lagging()).await;
    for round in 0..20 {
        let mut c = RawClient::connect(&srv.base, srv.pin).await;
        let body = format!("{{\"close-race\":{round}}}");
        let req = c.seal("POST", "/apiTest", "application/json", body.as_bytes());
        assert_eq!(c.send_raw(&req).await.status(), 200);
        // The close and a burst of replays of the executed request race each other.
        let id = c.session.id();
        let manager = srv.sc.manager().clone();
        let closer = tokio::spawn(async move { manager.close(&id).await });
        let c = Arc::new(c);
        let req = Arc::new(req);
        let replays: Vec<_> = (0..8)
            .map(|_| {
                let (c, req) = (c.clone(), req.clone());
                tokio::spawn(async move { error_code(c.send_raw(&req).await).await })
            })
            .collect();
        assert!(closer.await.unwrap(), "the session was live");
        for r in replays {
            let (status, code) = r.await.unwrap();
            assert!(
                (status, code.as_str()) == (400, "rejected")
                    || (status, code.as_str()) == (401, "session_closed"),
                "replay answered {status} {code}"
            );
        }
        assert_eq!(executions(body.as_bytes()), 1, "round {round}");
        // Once closed, the id keeps answering "closed" (a tombstone, not a reload).
        assert_eq!(
            error_code(c.send_raw(&req).await).await,
            (401, "session_closed".into())
        );
    }
    assert_eq!(
        store.load.load(Ordering::SeqCst),
        0,
        "a session was read back"
    );
    assert_eq!(
        (
            store.load_live.load(Ordering::SeqCst),
            store.load_ended.load(Ordering::SeqCst)
        ),
        (1, 1),
        "loaded once, at start"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_opening_requests_before_the_final_save() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), Arc::new(sqlite(d.path())), lagging()).await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let reqs: Vec<(Vec<u8>, Sealed)> = (0..300)
        .map(|i| {
            let body = format!("{{\"shutdown-race\":{i}}}").into_bytes();
            let s = c.seal("POST", "/apiTest", "application/json", &body);
            (body, s)
        })
        .collect();
    let c = Arc::new(c);
    let reqs = Arc::new(reqs);
    // Four senders, out of order within the window, while shutdown begins mid-way.
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let (c, reqs) = (c.clone(), reqs.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (k..reqs.len()).step_by(4) {
                    let r = c.send_raw(&reqs[i].1).await;
                    out.push((i, error_code(r).await));
                }
                out
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    srv.sc.manager().shutdown().await.unwrap();
    let mut accepted = Vec::new();
    let mut refused_after = 0;
    for s in senders {
        for (i, (status, code)) in s.await.unwrap() {
            match (status, code.as_str()) {
                (200, "") => accepted.push(i),
                (503, "unavailable") => refused_after += 1,
                other => panic!("request {i}: {other:?}"),
            }
        }
    }
    assert!(
        !accepted.is_empty() && refused_after > 0,
        "shutdown landed mid-run: {} accepted",
        accepted.len()
    );
    // After shutdown nothing opens any more.
    let late = &reqs[reqs.len() - 1].1;
    assert_eq!(
        error_code(c.send_raw(late).await).await,
        (503, "unavailable".into())
    );
    drop(srv);

    // A clean restart resumes the session with a window that includes every request
    // the first run accepted: none of them runs twice.
    let srv = start(d.path(), Arc::new(sqlite(d.path())), lagging()).await;
    assert_eq!(srv.sc.load_report().loaded, 1);
    let mut c = Arc::try_unwrap(c).ok().unwrap();
    c.base = srv.base.clone();
    c.http = reqwest::Client::new();
    for &i in &accepted {
        assert_eq!(
            error_code(c.send_raw(&reqs[i].1).await).await,
            (400, "rejected".into()),
            "request {i} accepted again after the restart"
        );
        assert_eq!(executions(&reqs[i].0), 1);
    }
    // The session itself still works.
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"after-restart\":1}")
            .await
            .unwrap()
            .0,
        200
    );
    srv.stop().await;
}

#[tokio::test]
async fn closed_sessions_stay_closed_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), Arc::new(sqlite(d.path())), lagging()).await;
    // One session closed before any flush, one saved and then closed.
    let mut early = RawClient::connect(&srv.base, srv.pin).await;
    let early_req = early.seal("POST", "/apiTest", "application/json", b"{\"early\":1}");
    assert_eq!(early.send_raw(&early_req).await.status(), 200);
    assert!(srv.sc.manager().close(&early.session.id()).await);
    let mut saved = RawClient::connect(&srv.base, srv.pin).await;
    let saved_req = saved.seal("POST", "/apiTest", "application/json", b"{\"saved\":1}");
    assert_eq!(saved.send_raw(&saved_req).await.status(), 200);
    srv.sc.manager().flush().await.unwrap();
    assert!(srv.sc.manager().close(&saved.session.id()).await);
    srv.stop().await;

    let srv = start(d.path(), Arc::new(sqlite(d.path())), lagging()).await;
    assert_eq!(srv.sc.load_report().loaded, 0);
    for (c, req) in [(&mut early, &early_req), (&mut saved, &saved_req)] {
        c.base = srv.base.clone();
        let (status, _) = error_code(c.send_raw(req).await).await;
        assert_eq!(status, 401);
    }
    // New sessions are written when they are created, so both have rows: neither is
    // live, and the saved one is closed.
    let rows = srv.sc.manager().store().list(false).await.unwrap();
    assert!(rows.iter().all(|r| !r.state.is_live()), "{rows:?}");
    let saved_row = rows.iter().find(|r| r.id == saved.session.id()).unwrap();
    assert_eq!(saved_row.state, SessionState::Closed);
    srv.stop().await;
}

#[tokio::test]
async fn a_ticket_is_confirmable_only_within_its_lifetime_and_costs_nothing_before() {
    let d = tempfile::tempdir().unwrap();
    let timing = Timing {
        ticket_lifetime_ms: 300,
        ..Timing::default()
    };
    let srv = start(d.path(), Arc::new(sqlite(d.path())), timing).await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (hs, hello) = ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let r = http
        .post(format!("{}{HANDSHAKE_PATH}", srv.base))
        .body(hello)
        .send()
        .await
        .unwrap();
    let (uc, _) = hs.read_server_hello(&r.bytes().await.unwrap()).unwrap();
    // The server holds nothing for an unconfirmed handshake.
    assert_eq!(srv.sc.manager().table_len(), 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = http
        .post(format!("{}{CONFIRM_PATH}", srv.base))
        .header(SESSION_HEADER, uc.id().to_string())
        .body(uc.confirmation().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "session_expired".into()));
    assert_eq!(srv.sc.manager().live_sessions(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn tombstones_are_forgotten_once_saved_and_past_their_expiry() {
    let d = tempfile::tempdir().unwrap();
    let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let policy = sessioncert_proto::ServerPolicy {
        idle_timeout_ms: 400,
        ..Default::default()
    };
    // Tombstones outlive tickets (5 ticket lifetimes): 250 ms here.
    let timing = Timing {
        ticket_lifetime_ms: 50,
        ..lagging()
    };
    let srv =
        TestServer::start_with(keys, Arc::new(sqlite(d.path())), generous(), timing, policy).await;
    let c = RawClient::connect(&srv.base, srv.pin).await;
    let m = srv.sc.manager();
    // The new session was written when it was created; from here only an explicit flush
    // (the interval is an hour here) saves anything.
    assert!(m.close(&c.session.id()).await);
    assert_eq!((m.live_sessions(), m.table_len()), (0, 1));
    m.sweep().await;
    assert_eq!(m.table_len(), 1, "kept while it would still be live");
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.sweep().await;
    assert_eq!(m.table_len(), 1, "kept until its end is saved");
    m.flush().await.unwrap();
    m.sweep().await;
    assert_eq!(m.table_len(), 0);
    srv.stop().await;
}
