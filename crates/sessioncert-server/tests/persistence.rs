//! Sessions in SQLite: they survive a clean restart, die after an unclean one, can be
//! closed by an operator from another process, and no session key is ever found in the
//! database file or the logs.

mod common;

use common::*;
use sessioncert_server::keys::DATABASE_FILE;
use sessioncert_server::{now_ms, ServerKeys, Timing};
use sessioncert_store::{OpenMode, SessionStore, SqliteStore};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn open_store(dir: &Path) -> Arc<dyn SessionStore> {
    let (s, _) = SqliteStore::open(&dir.join(DATABASE_FILE), OpenMode::Server).unwrap();
    Arc::new(s)
}

async fn start(dir: &Path) -> TestServer {
    let (keys, _) = ServerKeys::open_or_create(dir, now_ms()).unwrap();
    TestServer::start(keys, open_store(dir), generous()).await
}

#[tokio::test]
async fn sessions_survive_a_clean_restart() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path()).await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
    let replay = c.seal("POST", "/apiTest", "application/json", b"{\"n\":1}");
    assert_eq!(c.send_raw(&replay).await.status(), 200);
    srv.stop().await;

    let srv = start(d.path()).await;
    c.base = srv.base.clone();
    c.http = reqwest::Client::new();
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"after\":1}")
            .await
            .unwrap()
            .0,
        200
    );
    // The replay window was persisted too: the old request is still refused.
    assert_eq!(
        error_code(c.send_raw(&replay).await).await,
        (400, "rejected".into())
    );
    srv.sc.manager().flush().await.unwrap();
    let listed = srv.sc.manager().store().list(true).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request_count, 3);
    srv.stop().await;
}

#[tokio::test]
async fn sessions_do_not_survive_an_unclean_stop() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path()).await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
    srv.sc.manager().flush().await.unwrap();
    // Simulate a crash: the store is never shut down cleanly.
    drop(srv);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (store, report) = loop {
        match SqliteStore::open(&d.path().join(DATABASE_FILE), OpenMode::Server) {
            Ok(x) => break x,
            Err(sessioncert_store::StoreError::AlreadyInUse(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(report.unclean_previous_shutdown);
    assert_eq!(report.sessions_expired_by_recovery, 1);
    let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let srv = TestServer::start(keys, Arc::new(store), generous()).await;
    c.base = srv.base.clone();
    c.http = reqwest::Client::new();
    // Recovery ended it in the store, so the new server never loaded it.
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    assert_eq!(
        error_code(c.send_raw(&s).await).await,
        (401, "unknown_session".into())
    );
    assert_eq!(srv.sc.load_report().loaded, 0);
}

#[tokio::test]
async fn operator_close_from_another_process_takes_effect() {
    let d = tempfile::tempdir().unwrap();
    let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let timing = Timing {
        poll_interval: Duration::from_millis(100),
        ..Timing::default()
    };
    let srv = TestServer::start_with(
        keys,
        open_store(d.path()),
        generous(),
        timing,
        Default::default(),
    )
    .await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
    srv.sc.manager().flush().await.unwrap();
    let (admin, _) = SqliteStore::open(&d.path().join(DATABASE_FILE), OpenMode::Admin).unwrap();
    let listed = admin.list(true).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state.as_str(), "established");
    assert!(admin.close(&c.session.id(), now_ms()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    assert_eq!(
        error_code(c.send_raw(&s).await).await,
        (401, "session_closed".into())
    );
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every encoding of a secret we might plausibly leak.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(secret)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(secret)
            .into_bytes(),
        format!("{secret:?}").into_bytes(),
    ]
}

#[tokio::test]
async fn no_session_key_in_the_database_file_or_the_logs() {
    let logs = Capture::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path()).await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    for i in 0..5 {
        c.call("POST", "/apiTest", format!("{{\"i\":{i}}}").as_bytes())
            .await
            .unwrap();
    }
    // Also provoke the refusal paths, which log.
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    c.send_raw(&s).await;
    c.send_raw(&s).await;
    srv.stop().await;

    // The export layout is documented: magic(4) format(1) role(1) version(2) suite(2)
    // flags(1) id(16), then per direction epoch(8) key(32) has_prev(1) [prev(32)] iv(12).
    let export = c.session.export();
    assert_eq!(export[4], 2, "export format 2 (with the flags byte)");
    let c2s_key = &export[35..67];
    let s2c_start = 67 + 1 + 12;
    let s2c_key = &export[s2c_start + 8..s2c_start + 40];
    assert_eq!(export[67], 0, "no previous epoch key in a fresh session");

    let mut files = Vec::new();
    for entry in std::fs::read_dir(d.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sessions.db")
        {
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(!files.is_empty());
    let logs = logs.0.lock().unwrap().clone();
    assert!(
        contains(&logs, b"sealed request refused"),
        "the test captured the server's logs"
    );
    for key in [c2s_key, s2c_key] {
        for enc in encodings(key) {
            for (p, bytes) in &files {
                assert!(
                    !contains(bytes, &enc),
                    "session key found in {}",
                    p.display()
                );
            }
            assert!(!contains(&logs, &enc), "session key found in the logs");
        }
    }
    // The plaintext bodies never reach the database either.
    for (p, bytes) in &files {
        assert!(
            !contains(bytes, b"{\"i\":3}"),
            "plaintext in {}",
            p.display()
        );
    }
}

#[tokio::test]
async fn operators_see_established_sessions_unconfirmed_handshakes_cost_nothing() {
    use sessioncert_proto::{ClientHandshake, ClientOffer, SessionState};
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path()).await;
    // A confirmed session is written by the next flush.
    let c = RawClient::connect(&srv.base, srv.pin).await;
    srv.sc.manager().flush().await.unwrap();
    let rows = srv.sc.manager().store().list(true).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, c.session.id());
    assert_eq!(rows[0].state, SessionState::Established);
    // A handshake left unconfirmed costs neither memory nor a row: its state went to
    // the client in the ticket.
    let (_hs, hello) = ClientHandshake::start(&c.config, ClientOffer::default(), now_ms()).unwrap();
    let r = srv.post_hello(hello).await;
    assert_eq!(r.status(), 200);
    srv.sc.manager().flush().await.unwrap();
    assert_eq!(srv.sc.manager().live_sessions(), 1);
    assert_eq!(srv.sc.manager().table_len(), 1);
    let rows = srv.sc.manager().store().list(true).await.unwrap();
    assert_eq!(rows.len(), 1);
    srv.stop().await;
}

/// A session the server closed (or expired) stays a tombstone across a restart: its
/// requests that never ran keep getting a tagged `session_closed`, so clients re-send
/// them safely; one that ran gets no tag. After an unclean stop the same holds for
/// sessions whose end was saved before the crash.
#[tokio::test]
async fn closed_sessions_keep_tagged_refusals_across_restarts() {
    use base64::Engine as _;
    use sessioncert_proto::wire::REFUSAL_HEADER;
    use sessioncert_proto::ErrorCode;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path()).await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let ran = c.seal("POST", "/apiTest", "application/json", b"{\"t\":0}");
    assert_eq!(c.send_raw(&ran).await.status(), 200);
    let delayed = c.seal("POST", "/apiTest", "application/json", b"{\"t\":1}");
    assert!(srv.sc.manager().close(&c.session.id()).await);
    srv.stop().await;

    // Started after a clean stop, stopped by a crash, started after the crash.
    for restart in ["after a clean stop", "to crash", "after a crash"] {
        let store = loop {
            match SqliteStore::open(&d.path().join(DATABASE_FILE), OpenMode::Server) {
                Ok((s, report)) => {
                    assert_eq!(
                        report.unclean_previous_shutdown,
                        restart == "after a crash",
                        "{restart}"
                    );
                    break s;
                }
                Err(sessioncert_store::StoreError::AlreadyInUse(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
        let srv = TestServer::start(keys, Arc::new(store), generous()).await;
        assert_eq!(srv.sc.load_report().tombstones, 1, "{restart}");
        c.base = srv.base.clone();
        c.http = reqwest::Client::new();
        let r = c.send_raw(&delayed).await;
        let tag = r
            .headers()
            .get(REFUSAL_HEADER)
            .map(|v| b64.decode(v.as_bytes()).unwrap())
            .unwrap_or_else(|| panic!("{restart}: no tag"));
        assert_eq!(error_code(r).await, (401, "session_closed".into()));
        assert!(c.session.verify_refusal(1, ErrorCode::SessionClosed, &tag));
        let r = c.send_raw(&ran).await;
        assert!(
            r.headers().get(REFUSAL_HEADER).is_none(),
            "{restart}: ran, yet tagged"
        );
        assert_eq!(executions(b"{\"t\":1}"), 0);
        if restart == "to crash" {
            drop(srv); // never shut down: the next start finds an unclean stop
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            srv.stop().await;
        }
    }
}
