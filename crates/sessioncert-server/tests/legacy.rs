//! Legacy Session-Cert mode through real HTTP on 127.0.0.1: the handshake, protected
//! requests, and what the server adds around the format (single use, attempts, bounds,
//! persistence, uniform refusals). The original client itself is driven by
//! `e2e/legacy` (Node, npm crypto-js).

mod common;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use common::{generous, RawClient};
use sessioncert_legacy::{client, cryptojs, LegacyId};
use sessioncert_server::{Limits, ServerKeys, SessionCert, Timing};
use sessioncert_store::{MemoryStore, OpenMode, SessionStore, SqliteStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts its runs (per server) and echoes the body it was handed.
async fn counted(State(runs): State<Arc<AtomicUsize>>, body: String) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    format!(r#"{{"got":{}}}"#, serde_json::Value::from(body))
}

struct Server {
    base: String,
    pin: sessioncert_proto::Pin,
    sc: SessionCert,
    runs: Arc<AtomicUsize>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(
        keys: ServerKeys,
        store: Arc<dyn SessionStore>,
        limits: Limits,
        timing: Timing,
        settings: sessioncert_server::LegacySettings,
    ) -> Server {
        let pin = keys.pin();
        let sc = SessionCert::builder(Arc::new(keys), store)
            .limits(limits)
            .timing(timing)
            .legacy_session_cert(settings)
            .build()
            .await
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let routes = Router::new()
            .route("/count", post(counted))
            .route(
                "/notes/{id}",
                axum::routing::get(
                    |axum::extract::Path(id): axum::extract::Path<u64>| async move {
                        format!("note {id}")
                    },
                ),
            )
            .route("/big", axum::routing::get(|| async { vec![b'x'; 8 << 20] }))
            .with_state(runs.clone());
        let (base, task, stop) = common::serve_app(sc.router(routes)).await;
        Server {
            base,
            pin,
            sc,
            runs,
            stop,
            task,
        }
    }

    async fn memory() -> Server {
        Server::memory_with(generous(), Timing::default(), Default::default()).await
    }

    /// A server with fresh keys and the in-memory store.
    async fn memory_with(
        limits: Limits,
        timing: Timing,
        settings: sessioncert_server::LegacySettings,
    ) -> Server {
        Server::start(
            ServerKeys::ephemeral(sessioncert_server::now_ms()).unwrap(),
            Arc::new(MemoryStore::new()),
            limits,
            timing,
            settings,
        )
        .await
    }

    async fn stop(mut self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.sc.shutdown().await.unwrap();
    }
}

struct Cert {
    id: u64,
    key: String,
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn public_key(base: &str) -> (u64, String) {
    let r = http()
        .get(format!("{base}/sessionCert/publicKey"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    (
        v["sessionCert"]["id"].as_u64().unwrap(),
        v["sessionCert"]["publicKey"].as_str().unwrap().to_owned(),
    )
}

async fn post_key(base: &str, id: u64, pem: &str, key: &str) -> reqwest::Response {
    let wrapped = client::wrap_key(pem, key.as_bytes()).unwrap();
    http()
        .post(format!("{base}/sessionCert/symmetricKey"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "id": id, "symmetricKey": wrapped }).to_string())
        .send()
        .await
        .unwrap()
}

async fn patch_establish(base: &str, id: impl ToString, body: String) -> reqwest::Response {
    http()
        .patch(format!("{base}/sessionCert/establish"))
        .header("session-cert-id", id.to_string())
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn establish(base: &str) -> Cert {
    let (id, pem) = public_key(base).await;
    let key = client::new_key().unwrap().to_string();
    let r = post_key(base, id, &pem, &key).await;
    assert_eq!(r.status(), 201);
    let answer = client::answer_test_string(&r.text().await.unwrap(), key.as_bytes()).unwrap();
    let r = patch_establish(base, id, answer).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["status"], true);
    Cert { id, key }
}

async fn protected(base: &str, id: impl ToString, body: &str) -> (u16, String) {
    let r = http()
        .post(format!("{base}/count"))
        .header("session-cert-id", id.to_string())
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

const REFUSED: &str = r#"{"status":false,"message":"session cert refused"}"#;

#[tokio::test]
async fn a_legacy_client_is_served_and_each_message_opens_at_most_once() {
    let s = Server::memory().await;
    let c = establish(&s.base).await;
    let req = cryptojs::encrypt(c.key.as_bytes(), b"pay 10").unwrap();
    let before = s.runs.load(Ordering::SeqCst);
    let (status, body) = protected(&s.base, c.id, &req).await;
    assert_eq!(status, 200);
    let plain = cryptojs::decrypt(c.key.as_bytes(), &body).unwrap();
    assert_eq!(&plain[..], br#"{"got":"pay 10"}"#);
    // The same request again, and the response sent back as a request: refused, unrun.
    assert_eq!(
        protected(&s.base, c.id, &req).await,
        (403, REFUSED.to_owned())
    );
    assert_eq!(
        protected(&s.base, c.id, &body).await,
        (403, REFUSED.to_owned())
    );
    // Fired at once from many connections: one runs.
    let fresh = cryptojs::encrypt(c.key.as_bytes(), b"pay 20").unwrap();
    let tries = (0..16).map(|_| protected(&s.base, c.id, &fresh));
    let answers = futures_util::future::join_all(tries).await;
    assert_eq!(answers.iter().filter(|(st, _)| *st == 200).count(), 1);
    assert_eq!(s.runs.load(Ordering::SeqCst) - before, 2);
    s.stop().await;
}

#[tokio::test]
async fn refusals_are_uniform_whatever_failed() {
    let s = Server::memory().await;
    let c = establish(&s.base).await;
    let good = cryptojs::encrypt(c.key.as_bytes(), b"0123456789abcdef0123456789abcdef").unwrap();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &good).unwrap();
    let n = raw.len();
    raw[n - 1] ^= 1; // padding
    let bad_padding = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
    let other_key = cryptojs::encrypt(b"some other key string, 32 chars", b"x").unwrap();
    let not_utf8 = cryptojs::encrypt(c.key.as_bytes(), &[0xff, 0xfe, 0xfd]).unwrap();
    let cases = [
        ("bad padding", c.id, bad_padding),
        ("other key", c.id, other_key),
        ("not UTF-8", c.id, not_utf8),
        ("unknown id", c.id ^ 1, good.clone()),
    ];
    for (what, id, body) in cases {
        assert_eq!(
            protected(&s.base, id, &body).await,
            (403, REFUSED.to_owned()),
            "{what}"
        );
    }
    // Shape errors before any cryptography say what is wrong.
    let (st, body) = protected(&s.base, "12x", &good).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("session-cert-id"));
    // Two ids: which one would count is not guessed.
    let r = http()
        .post(format!("{}/count", s.base))
        .header("session-cert-id", c.id.to_string())
        .header("session-cert-id", (c.id ^ 1).to_string())
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn a_taken_id_keeps_its_key_and_establish_is_single_use_with_limited_attempts() {
    let s = Server::memory().await;
    let (id, pem) = public_key(&s.base).await;
    let key = client::new_key().unwrap().to_string();
    let r = post_key(&s.base, id, &pem, &key).await;
    assert_eq!(r.status(), 201);
    let test_body = r.text().await.unwrap();
    // Someone else's key for the same id: refused (the original replaced the key).
    let r = post_key(&s.base, id, &pem, &client::new_key().unwrap()).await;
    assert_eq!(r.status(), 403);
    // Two wrong answers use up two of the three attempts; the right one still works.
    for _ in 0..2 {
        let wrong = cryptojs::encrypt(key.as_bytes(), br#"{"testString":"guess"}"#).unwrap();
        assert_eq!(patch_establish(&s.base, id, wrong).await.status(), 403);
    }
    let answer = client::answer_test_string(&test_body, key.as_bytes()).unwrap();
    assert_eq!(
        patch_establish(&s.base, id, answer.clone()).await.status(),
        200
    );
    // Replayed establish: refused.
    assert_eq!(patch_establish(&s.base, id, answer).await.status(), 403);

    // Three wrong answers: the pending session is gone, the right answer comes too late.
    let (id, pem) = public_key(&s.base).await;
    let key = client::new_key().unwrap().to_string();
    let r = post_key(&s.base, id, &pem, &key).await;
    let test_body = r.text().await.unwrap();
    let pending = s.sc.manager().legacy_sessions().0;
    for _ in 0..3 {
        let wrong = cryptojs::encrypt(key.as_bytes(), br#"{"testString":"guess"}"#).unwrap();
        assert_eq!(patch_establish(&s.base, id, wrong).await.status(), 403);
    }
    assert_eq!(s.sc.manager().legacy_sessions().0, pending - 1);
    let answer = client::answer_test_string(&test_body, key.as_bytes()).unwrap();
    assert_eq!(patch_establish(&s.base, id, answer).await.status(), 403);
    s.stop().await;
}

#[tokio::test]
async fn pending_handshakes_are_bounded_rate_limited_and_expire() {
    // The cap: two may wait (for as long as a ticket lives, 60 s); a third is refused.
    let limits = Limits {
        max_pending_sessions: 2,
        ..generous()
    };
    let s = Server::memory_with(limits, Timing::default(), Default::default()).await;
    // Six at once: the places are taken before the RSA work, so exactly two get one.
    let mut tries = Vec::new();
    for _ in 0..6 {
        let (id, pem) = public_key(&s.base).await;
        let key = client::new_key().unwrap().to_string();
        let base = s.base.clone();
        tries.push(async move { post_key(&base, id, &pem, &key).await });
    }
    let answers = futures_util::future::join_all(tries).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        4,
        "{statuses:?}"
    );
    assert!(answers
        .iter()
        .filter(|r| r.status() == 503)
        .all(|r| r.headers().contains_key("retry-after")));
    assert_eq!(s.sc.manager().legacy_sessions().0, 2);
    s.stop().await;

    // The deadline: past it the establish is refused and nothing of the session stays.
    let timing = Timing {
        sweep_interval: Duration::from_millis(100),
        ..Timing::default()
    };
    let s = Server::memory_with(
        generous(),
        timing,
        sessioncert_server::LegacySettings {
            establish_within: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let (id, pem) = public_key(&s.base).await;
    let key = client::new_key().unwrap().to_string();
    let r = post_key(&s.base, id, &pem, &key).await;
    assert_eq!(r.status(), 201);
    let body = r.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = client::answer_test_string(&body, key.as_bytes()).unwrap();
    assert_eq!(patch_establish(&s.base, id, answer).await.status(), 403);
    assert_eq!(s.sc.manager().legacy_sessions().0, 0);
    for _ in 0..50 {
        if s.sc.manager().table_len() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.sc.manager().table_len(), 0, "nothing of it stays");
    s.stop().await;

    // The per-address handshake rate applies to the key transport.
    let limits = Limits {
        handshakes_per_sec: 0.001,
        handshake_burst: 2.0,
        exempt_loopback: false,
        ..Limits::default()
    };
    let s = Server::memory_with(limits, Timing::default(), Default::default()).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (id, pem) = public_key(&s.base).await;
        statuses.push(
            post_key(&s.base, id, &pem, &client::new_key().unwrap())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [201, 201, 429]);
    s.stop().await;
}

#[tokio::test]
async fn a_session_carries_a_bounded_number_of_requests() {
    let s = Server::memory_with(
        generous(),
        Timing::default(),
        sessioncert_server::LegacySettings {
            max_requests: 2,
            ..Default::default()
        },
    )
    .await;
    let c = establish(&s.base).await;
    for i in 0..2 {
        let req = cryptojs::encrypt(c.key.as_bytes(), format!("r{i}").as_bytes()).unwrap();
        assert_eq!(protected(&s.base, c.id, &req).await.0, 200);
    }
    let req = cryptojs::encrypt(c.key.as_bytes(), b"r2").unwrap();
    assert_eq!(protected(&s.base, c.id, &req).await.0, 403);
    assert_eq!(s.sc.manager().legacy_sessions().1, 0, "the session expired");
    s.stop().await;
}

#[tokio::test]
async fn sessions_survive_a_clean_restart_sealed_at_rest_with_their_replay_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let keys_dir = dir.path().join("keys");
    let open = || {
        let (keys, _) =
            ServerKeys::open_or_create(&keys_dir, sessioncert_server::now_ms()).unwrap();
        let (store, _) = SqliteStore::open(&db, OpenMode::Server).unwrap();
        (keys, Arc::new(store) as Arc<dyn SessionStore>)
    };
    let (keys, store) = open();
    let s = Server::start(
        keys,
        store,
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    let c = establish(&s.base).await;
    let req = cryptojs::encrypt(c.key.as_bytes(), b"before").unwrap();
    assert_eq!(protected(&s.base, c.id, &req).await.0, 200);
    s.stop().await;

    // At rest: listed as legacy, the key nowhere in the database in clear.
    let (admin, _) = SqliteStore::open(&db, OpenMode::Admin).unwrap();
    let rows = admin.list(true).await.unwrap();
    let row = rows
        .iter()
        .find(|r| LegacyId::from_session_id(&r.id).map(LegacyId::get) == Some(c.id))
        .unwrap();
    assert_eq!(row.suite, "session-cert-legacy");
    assert_eq!(row.request_count, 1);
    drop(admin);
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(c.key.len()).any(|w| w == c.key.as_bytes()),
            "key in clear at rest"
        );
    }

    let (keys, store) = open();
    let s = Server::start(
        keys,
        store,
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    assert_eq!(
        protected(&s.base, c.id, &req).await.0,
        403,
        "replay after restart"
    );
    let again = cryptojs::encrypt(c.key.as_bytes(), b"after").unwrap();
    let (st, body) = protected(&s.base, c.id, &again).await;
    assert_eq!(st, 200);
    assert_eq!(
        &cryptojs::decrypt(c.key.as_bytes(), &body).unwrap()[..],
        br#"{"got":"after"}"#
    );
    s.stop().await;
}

#[tokio::test]
async fn a_modern_request_naming_a_legacy_session_does_not_touch_it() {
    let s = Server::memory().await;
    let c = establish(&s.base).await;
    let sid = LegacyId::new(c.id).unwrap().session_id();
    let sealed_to = |id: String| {
        http()
            .post(format!("{}/count", s.base))
            .header("sessioncert-id", id)
            .header("content-type", "application/sessioncert-sealed")
            .body(vec![0u8; 64])
            .send()
    };
    // Answered exactly as a request naming an unknown id.
    let legacy_answer = sealed_to(sid.to_string()).await.unwrap();
    let unknown_answer = sealed_to(sessioncert_proto::SessionId([9; 16]).to_string())
        .await
        .unwrap();
    assert_eq!(legacy_answer.status(), unknown_answer.status());
    assert_eq!(
        legacy_answer.headers().get("sessioncert-error"),
        unknown_answer.headers().get("sessioncert-error")
    );
    let req = cryptojs::encrypt(c.key.as_bytes(), b"still mine").unwrap();
    assert_eq!(protected(&s.base, c.id, &req).await.0, 200);
    // A stand-alone confirmation naming it is answered as for an unknown id.
    let confirm = |id: String| {
        http()
            .post(format!("{}/.well-known/sessioncert/confirm", s.base))
            .header("sessioncert-id", id)
            .body(vec![0u8; 40])
            .send()
    };
    let legacy_answer = confirm(sid.to_string()).await.unwrap();
    let unknown_answer = confirm(sessioncert_proto::SessionId([9; 16]).to_string())
        .await
        .unwrap();
    assert_eq!(legacy_answer.status(), unknown_answer.status());
    assert_eq!(
        legacy_answer.headers().get("sessioncert-error"),
        unknown_answer.headers().get("sessioncert-error")
    );
    // And the modern protocol beside it is unaffected.
    let mut modern = RawClient::connect(&s.base, s.pin).await;
    let (status, body) = modern.call("POST", "/count", b"modern").await.unwrap();
    assert_eq!((status, &body[..]), (200, &br#"{"got":"modern"}"#[..]));
    s.stop().await;
}

#[tokio::test]
async fn legacy_mode_is_refused_on_a_shared_store() {
    let r = SessionCert::builder(
        Arc::new(ServerKeys::ephemeral(sessioncert_server::now_ms()).unwrap()),
        Arc::new(MemoryStore::shared()),
    )
    .legacy_session_cert(Default::default())
    .build()
    .await;
    let e = r
        .err()
        .expect("a shared store with legacy mode must be refused")
        .to_string();
    assert!(e.contains("SQLite or memory"), "{e}");
}

/// One request written as given on its own connection; returns the connection unread.
async fn raw_request(base: &str, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    c
}

async fn read_status(c: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("no answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_made_up_id_is_refused_before_any_body_byte_is_read() {
    let s = Server::memory().await;
    // 4 MB announced, none sent: the answer comes at once, without the body.
    let mut c = raw_request(
        &s.base,
        "POST /count HTTP/1.1\r\nhost: x\r\nsession-cert-id: 123456\r\ncontent-length: 4000000\r\n\r\n",
    )
    .await;
    assert_eq!(read_status(&mut c).await, 403);
    s.stop().await;
}

#[tokio::test]
async fn legacy_answers_held_for_slow_peers_count_against_the_response_budget() {
    let limits = Limits {
        max_inflight_response_bytes: 1 << 20,
        ..generous()
    };
    let s = Server::memory_with(limits, Timing::default(), Default::default()).await;
    let c = establish(&s.base).await;
    // A peer that asks for 8 MB (about 11 MB encrypted) and reads none of it.
    let body = cryptojs::encrypt(c.key.as_bytes(), b"").unwrap();
    let head = format!(
        "GET /big HTTP/1.1\r\nhost: x\r\nsession-cert-id: {}\r\ncontent-length: {}\r\n\r\n{body}",
        c.id,
        body.len()
    );
    let slow = raw_request(&s.base, &head).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let req = cryptojs::encrypt(c.key.as_bytes(), b"next").unwrap();
    let (status, _) = protected(&s.base, c.id, &req).await;
    assert_eq!(
        status, 503,
        "nothing new is opened while the budget is spent"
    );
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = protected(&s.base, c.id, &req).await;
    assert_eq!(
        status, 200,
        "the refused request did not run, so it can be sent again"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_bodiless_get_is_served_sealed_and_other_bodiless_requests_are_refused() {
    let s = Server::memory().await;
    let c = establish(&s.base).await;
    let r = http()
        .get(format!("{}/notes/3", s.base))
        .header("session-cert-id", c.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        &cryptojs::decrypt(c.key.as_bytes(), &text).unwrap()[..],
        b"note 3"
    );
    // A POST without a message proves nothing: refused, and its handler never runs.
    let before = s.runs.load(Ordering::SeqCst);
    let (st, _) = protected(&s.base, c.id, "").await;
    assert_eq!(st, 403);
    assert_eq!(s.runs.load(Ordering::SeqCst), before);
    s.stop().await;
}

#[tokio::test]
async fn routes_with_path_parameters_serve_legacy_requests() {
    let s = Server::memory().await;
    let c = establish(&s.base).await;
    let r = http()
        .get(format!("{}/notes/7", s.base))
        .header("session-cert-id", c.id.to_string())
        .body(cryptojs::encrypt(c.key.as_bytes(), b"").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        &cryptojs::decrypt(c.key.as_bytes(), &text).unwrap()[..],
        b"note 7"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_id_takes_a_key_only_when_issued_lately_and_never_again_after_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let keys_dir = dir.path().join("keys");
    let open = || {
        let (keys, _) =
            ServerKeys::open_or_create(&keys_dir, sessioncert_server::now_ms()).unwrap();
        let (store, _) = SqliteStore::open(&db, OpenMode::Server).unwrap();
        (keys, Arc::new(store) as Arc<dyn SessionStore>)
    };
    let (keys, store) = open();
    let s = Server::start(
        keys,
        store,
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    let (_, pem) = public_key(&s.base).await;
    // An id of an hour ago (or any made-up one with an old minute) takes no key.
    let old = LegacyId::issue(sessioncert_server::now_ms() - 3_600_000).unwrap();
    let r = post_key(&s.base, old.get(), &pem, &client::new_key().unwrap()).await;
    assert_eq!(r.status(), 403);
    // A session that ended, then a restart (the table forgot it): its id stays taken.
    let c = establish(&s.base).await;
    assert!(
        s.sc.manager()
            .close(&LegacyId::new(c.id).unwrap().session_id())
            .await
    );
    s.stop().await;
    let (keys, store) = open();
    let s = Server::start(
        keys,
        store,
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    let (_, pem) = public_key(&s.base).await;
    let r = post_key(&s.base, c.id, &pem, &client::new_key().unwrap()).await;
    assert_eq!(r.status(), 403, "a closed session's id was taken again");
    s.stop().await;
}

#[tokio::test]
async fn a_session_counts_against_the_address_that_sent_its_key_from_then_until_it_ends() {
    let limits = Limits {
        max_sessions_per_addr: 1,
        exempt_loopback: false,
        ..generous()
    };
    let s = Server::memory_with(limits, Timing::default(), Default::default()).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (a, b) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    let post = |c: reqwest::Client, id: u64, pem: String, key: String| {
        let base = s.base.clone();
        async move {
            c.post(format!("{base}/sessionCert/symmetricKey"))
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({ "id": id, "symmetricKey": client::wrap_key(&pem, key.as_bytes()).unwrap() })
                        .to_string(),
                )
                .send()
                .await
                .unwrap()
        }
    };
    // Key from .2, establish from .3.
    let (id, pem) = public_key(&s.base).await;
    let key = client::new_key().unwrap().to_string();
    let r = post(a.clone(), id, pem.clone(), key.clone()).await;
    assert_eq!(r.status(), 201);
    let answer = client::answer_test_string(&r.text().await.unwrap(), key.as_bytes()).unwrap();
    let r = b
        .patch(format!("{}/sessionCert/establish", s.base))
        .header("session-cert-id", id.to_string())
        .body(answer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // .2 is at its cap (the session counts there); .3 is not.
    let (id2, _) = public_key(&s.base).await;
    assert_eq!(
        post(
            a.clone(),
            id2,
            pem.clone(),
            client::new_key().unwrap().to_string()
        )
        .await
        .status(),
        429
    );
    let (id3, _) = public_key(&s.base).await;
    let r = post(
        b.clone(),
        id3,
        pem.clone(),
        client::new_key().unwrap().to_string(),
    )
    .await;
    assert_eq!(r.status(), 201, "the establish's address was not charged");
    // The first session ends: .2 has room again.
    assert!(
        s.sc.manager()
            .close(&LegacyId::new(id).unwrap().session_id())
            .await
    );
    let (id4, _) = public_key(&s.base).await;
    assert_eq!(
        post(a, id4, pem, client::new_key().unwrap().to_string())
            .await
            .status(),
        201
    );
    s.stop().await;
}
