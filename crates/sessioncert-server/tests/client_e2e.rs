//! The Rust client against the real server over HTTP on 127.0.0.1.

mod common;

use common::*;
use sessioncert_client::{Client, ClientError, Trust};
use sessioncert_server::keys::DATABASE_FILE;
use sessioncert_server::{now_ms, ServerKeys};
use sessioncert_store::{MemoryStore, OpenMode, SqliteStore};
use std::sync::atomic::Ordering;
use std::sync::Arc;

async fn server() -> TestServer {
    TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        generous(),
    )
    .await
}

fn handshakes(srv: &TestServer) -> u64 {
    srv.sc.manager().stats().handshakes.load(Ordering::Relaxed)
}

#[tokio::test]
async fn header_and_full_mode_round_trips() {
    let srv = server().await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    let r = c
        .post("/apiTest")
        .json(&serde_json::json!({"k": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["requestData"]["k"], "v");
    let r = c
        .post("/apiTest?x=1")
        .json(&serde_json::json!({"k": "full"}))
        .full(true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers_authenticated());
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["requestData"]["k"],
        "full"
    );
    // A sealed route that does not exist answers a sealed 404 in full mode.
    let r = c.get("/nope").full(true).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(handshakes(&srv), 1);
}

#[tokio::test]
async fn bodiless_statuses_arrive_authenticated() {
    let srv = server().await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    for code in [200u16, 201, 204, 304, 404, 418, 500] {
        let r = c.get(&format!("/status/{code}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code);
    }
}

#[tokio::test]
async fn wrong_pin_is_refused_before_any_session_exists() {
    let srv = server().await;
    let other = sessioncert_proto::IdentityKey::generate().unwrap().pin();
    let e = Client::connect(&srv.base, Trust::Pin(other))
        .await
        .unwrap_err();
    assert!(e.is_untrusted(), "{e}");
    assert_eq!(handshakes(&srv), 0);
}

#[tokio::test]
async fn closed_and_forgotten_sessions_are_replaced_transparently() {
    let srv = server().await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    c.post("/apiTest").body("{}").send().await.unwrap();
    let first = c.session_info().await.unwrap().id;
    // Operator closes it: the next request (a POST) gets 401 session_closed with a tag
    // proving it did not run (PROTOCOL §14.1), so the client handshakes anew and sends
    // it again, transparently.
    assert!(srv.sc.manager().close(&first).await);
    let r = c.post("/apiTest").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let second = c.session_info().await.unwrap().id;
    assert_ne!(first, second);
    assert_eq!(handshakes(&srv), 2);
}

#[tokio::test]
async fn expired_session_is_replaced_transparently() {
    let srv = TestServer::start_with(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        generous(),
        Default::default(),
        sessioncert_proto::ServerPolicy {
            idle_timeout_ms: 200,
            ..Default::default()
        },
    )
    .await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    c.post("/apiTest").body("{}").send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = c.post("/apiTest").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(handshakes(&srv), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_on_one_client() {
    let srv = server().await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let r = c
                    .post("/apiTest")
                    .json(&serde_json::json!({"i": i}))
                    .send()
                    .await
                    .unwrap();
                r.json::<serde_json::Value>().unwrap()["requestData"]["i"]
                    .as_i64()
                    .unwrap()
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), i as i64);
    }
    assert_eq!(handshakes(&srv), 1);
    assert_eq!(srv.sc.manager().stats().rejected.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn saved_session_survives_a_server_restart_without_a_new_handshake() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("client-session.json");
    let start = |dir: std::path::PathBuf| async move {
        let (keys, _) = ServerKeys::open_or_create(&dir, now_ms()).unwrap();
        let (store, _) = SqliteStore::open(&dir.join(DATABASE_FILE), OpenMode::Server).unwrap();
        TestServer::start(keys, Arc::new(store), generous()).await
    };
    let srv = start(d.path().to_owned()).await;
    let c = Client::builder(&srv.base, Trust::Pin(srv.pin))
        .session_file(&file)
        .build()
        .await
        .unwrap();
    c.post("/apiTest").body("{}").send().await.unwrap();
    let id = c.session_info().await.unwrap().id;
    drop(c);
    let base = srv.base.clone();
    srv.stop().await;

    // Same data dir, new process (same port is not needed: the session file names the URL,
    // so we rebind on the old address).
    let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let (store, _) = SqliteStore::open(&d.path().join(DATABASE_FILE), OpenMode::Server).unwrap();
    let sc = sessioncert_server::SessionCert::builder(Arc::new(keys), Arc::new(store))
        .limits(generous())
        .build()
        .await
        .unwrap();
    let app = sc.router(sealed_routes());
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let c = Client::builder(&base, Trust::Pin(srv_pin(d.path())))
        .session_file(&file)
        .build()
        .await
        .unwrap();
    let r = c
        .post("/apiTest")
        .body("{\"again\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.session_info().await.unwrap().id,
        id,
        "same session, no new handshake"
    );
    assert_eq!(sc.manager().stats().handshakes.load(Ordering::Relaxed), 0);
}

fn srv_pin(dir: &std::path::Path) -> sessioncert_proto::Pin {
    sessioncert_server::keys::fingerprint(dir).unwrap()
}

#[tokio::test]
async fn rejected_is_not_retried_and_is_reported() {
    let srv = server().await;
    let c = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    // The plain route answers unsealed: the client must refuse to treat it as sealed.
    // The POST reached a handler (the plain one ran), so its outcome is unknown...
    let e = c
        .post("/plain/apiTest")
        .body("{}")
        .send()
        .await
        .unwrap_err();
    match &e {
        ClientError::OutcomeUnknown { cause, .. } => {
            assert!(
                matches!(cause.as_ref(), ClientError::Unsealed { .. }),
                "{e:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // ... while a request safe to repeat just gets the refusal.
    let e = c
        .post("/plain/apiTest")
        .idempotent(true)
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unsealed { .. }), "{e:?}");
}
