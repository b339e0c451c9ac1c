//! Several instances on one shared store (`ReplayAuthority::SharedStore`): two servers
//! in one process, each with its own store object — its own connections — on one
//! backend: `MemoryStore::shared()` (one object for both), a Redis prefix, a PostgreSQL
//! schema (the real servers on 127.0.0.1; these tests fail, never skip, without them).
//! The store, not either server, decides each request's freshness and each session's
//! state. The same runs with two gateway processes in the CLI's multi-instance tests.

mod common;

use base64::Engine as _;
use common::*;
use sessioncert_proto::wire::{CONFIRM_PATH, HANDSHAKE_PATH, REFUSAL_HEADER, SESSION_HEADER};
use sessioncert_proto::{ClientHandshake, ClientOffer, ErrorCode, SessionState};
use sessioncert_server::{now_ms, ServerKeys, StorageKey, Timing};
use sessioncert_store::{MemoryStore, PostgresStore, RedisStore, SessionStore};
use std::sync::Arc;

type Stores = (Arc<dyn SessionStore>, Arc<dyn SessionStore>, Cleanup);

/// Removes a test's Redis keys or PostgreSQL schema when dropped (panics included).
enum Cleanup {
    None,
    Redis(String),
    Postgres(String),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |cmd: &str| {
            let _ = std::process::Command::new("sh").arg("-c").arg(cmd).status();
        };
        match self {
            Cleanup::None => {}
            Cleanup::Redis(p) => run(&format!(
                "redis-cli -h 127.0.0.1 --scan --pattern '{p}:*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null"
            )),
            Cleanup::Postgres(s) => run(&format!(
                "PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -d test -qc 'drop schema if exists \"{s}\" cascade' >/dev/null"
            )),
        }
    }
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now_ms() % 1_000_000
    )
}

async fn memory() -> Stores {
    let s: Arc<dyn SessionStore> = Arc::new(MemoryStore::shared());
    (s.clone(), s, Cleanup::None)
}

async fn redis() -> Stores {
    let p = unique("scsrv");
    let guard = Cleanup::Redis(p.clone());
    let url = format!("redis://127.0.0.1:6379/?prefix={p}");
    let open = || async {
        Arc::new(
            RedisStore::connect(&url)
                .await
                .expect("Redis must answer on 127.0.0.1:6379 (see .ci/run)"),
        ) as Arc<dyn SessionStore>
    };
    (open().await, open().await, guard)
}

async fn postgres() -> Stores {
    let s = unique("scsrv");
    let guard = Cleanup::Postgres(s.clone());
    let url = format!("postgres://postgres@127.0.0.1:5432/test?schema={s}");
    let open = || async {
        Arc::new(
            PostgresStore::connect(&url)
                .await
                .expect("PostgreSQL must answer on 127.0.0.1:5432 (see .ci/run)"),
        ) as Arc<dyn SessionStore>
    };
    (open().await, open().await, guard)
}

/// Two instances with one identity and one storage key (one data directory), each on
/// its own store object.
async fn pair(stores: &Stores) -> (TestServer, TestServer, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let (a_keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let (b_keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
    let a = TestServer::start_with(
        a_keys,
        stores.0.clone(),
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    let b = TestServer::start_with(
        b_keys,
        stores.1.clone(),
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    assert!(a.sc.manager().is_shared() && b.sc.manager().is_shared());
    (a, b, d)
}

/// Runs each scenario on every backend.
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::memory().await).await }
        )* }
        mod redis_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::redis().await).await }
        )* }
        mod postgres_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::postgres().await).await }
        )* }
    };
}

on_every_store!(
    a_session_made_at_one_instance_works_at_the_other_and_replays_never_run_twice,
    a_handshake_answered_by_one_instance_is_confirmed_at_the_other,
    closing_at_one_instance_closes_everywhere_with_tags_only_for_requests_that_never_ran,
    an_instance_with_another_storage_key_refuses_to_join,
);

async fn a_session_made_at_one_instance_works_at_the_other_and_replays_never_run_twice(
    stores: Stores,
) {
    let (a, b, _d) = pair(&stores).await;
    let mut c = RawClient::connect(&a.base, a.pin).await;
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"at\":\"a\"}")
            .await
            .unwrap()
            .0,
        200
    );
    // The next request goes to the other instance: usable at once.
    c.base = b.base.clone();
    // Bodies are unique per run: the execution counts are shared by every test here.
    let shared_body = format!("{{\"shared\":\"{}\"}}", unique("s"));
    let req = c.seal(
        "POST",
        "/apiTest",
        "application/json",
        shared_body.as_bytes(),
    );
    assert_eq!(c.send_raw(&req).await.status(), 200);
    // Replayed to either instance: refused, never run again.
    for base in [&a.base, &b.base] {
        c.base = base.clone();
        assert_eq!(
            error_code(c.send_raw(&req).await).await,
            (400, "rejected".into())
        );
    }
    assert_eq!(executions(shared_body.as_bytes()), 1);
    // One captured record fired at both instances at once, many times: runs once.
    for round in 0..10 {
        let body = format!("{{\"race\":{round},\"run\":\"{}\"}}", unique("r"));
        let req = Arc::new(c.seal("POST", "/apiTest", "application/json", body.as_bytes()));
        let c = Arc::new(RawClient {
            http: c.http.clone(),
            base: a.base.clone(),
            config: c.config.clone(),
            session: sessioncert_proto::ClientSession::import(&c.session.export()).unwrap(),
        });
        let mut tasks = Vec::new();
        for i in 0..8 {
            let base = if i % 2 == 0 { &a.base } else { &b.base }.clone();
            let (c, req) = (c.clone(), req.clone());
            tasks.push(tokio::spawn(async move {
                let mut raw = reqwest::Client::new()
                    .post(format!("{base}{}", req.path))
                    .header(SESSION_HEADER, c.session.id().to_string())
                    .header(sessioncert_proto::wire::TARGET_HEADER, req.target.as_str())
                    .header("content-type", sessioncert_proto::wire::SEALED_CONTENT_TYPE)
                    .header(
                        sessioncert_proto::wire::CONTENT_TYPE_HEADER,
                        "application/json",
                    );
                raw = raw.body(req.record.clone());
                raw.send().await.unwrap().status().as_u16()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => ok += 1,
                400 => {}
                s => panic!("round {round}: answered {s}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one attempt answered");
        assert_eq!(executions(body.as_bytes()), 1, "round {round}");
    }
    a.stop().await;
    b.stop().await;
}

async fn a_handshake_answered_by_one_instance_is_confirmed_at_the_other(stores: Stores) {
    let (a, b, _d) = pair(&stores).await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &a.base, a.pin).await;
    let (hs, hello) = ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let r = http
        .post(format!("{}{HANDSHAKE_PATH}", a.base))
        .body(hello)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (uc, _) = hs.read_server_hello(&r.bytes().await.unwrap()).unwrap();
    let confirm = |base: String, conf: Vec<u8>, id: String| {
        let http = http.clone();
        async move {
            http.post(format!("{base}{CONFIRM_PATH}"))
                .header(SESSION_HEADER, id)
                .body(conf)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (id, conf) = (uc.id().to_string(), uc.confirmation().to_vec());
    // Confirmed at B (the ticket came from A), and again at A: one session, both 204.
    assert_eq!(confirm(b.base.clone(), conf.clone(), id.clone()).await, 204);
    assert_eq!(confirm(a.base.clone(), conf.clone(), id.clone()).await, 204);
    let mut c = RawClient {
        http: http.clone(),
        base: a.base.clone(),
        config,
        session: uc.confirmed(),
    };
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"x\":1}").await.unwrap().0,
        200
    );
    c.base = b.base.clone();
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"x\":2}").await.unwrap().0,
        200
    );
    let listed = a.sc.manager().store().list(true).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].request_count, 2,
        "both requests counted in the store"
    );
    // A replayed confirmation after a close cannot bring the session back anywhere.
    assert!(b.sc.manager().close(&c.session.id()).await);
    assert_eq!(confirm(a.base.clone(), conf, id).await, 401);
    a.stop().await;
    b.stop().await;
}

async fn closing_at_one_instance_closes_everywhere_with_tags_only_for_requests_that_never_ran(
    stores: Stores,
) {
    let (a, b, d) = pair(&stores).await;
    // A third instance that never holds the session before the close.
    let third = TestServer::start_with(
        ServerKeys::open_or_create(d.path(), now_ms()).unwrap().0,
        stores.1.clone(),
        generous(),
        Timing::default(),
        Default::default(),
    )
    .await;
    let mut c = RawClient::connect(&a.base, a.pin).await;
    // B learns the session (and holds it) before A closes it.
    c.base = b.base.clone();
    let ran = c.seal("POST", "/apiTest", "application/json", b"{\"closed\":0}");
    let delayed_body = format!("{{\"closed\":\"{}\"}}", unique("c"));
    assert_eq!(c.send_raw(&ran).await.status(), 200);
    let delayed = c.seal(
        "POST",
        "/apiTest",
        "application/json",
        delayed_body.as_bytes(),
    );
    let delayed_elsewhere = c.seal("POST", "/apiTest", "application/json", b"{\"third\":1}");
    // Closed by the client through A (the close endpoint).
    c.base = a.base.clone();
    let close = c.seal("POST", sessioncert_proto::wire::CLOSE_PATH, "", b"");
    assert_eq!(c.send_raw(&close).await.status(), 200);
    // At once at the third instance, which reads the session from the store for the
    // first time: the refusal is tagged too (the remains were stored before the close
    // was answered, not with the next flush).
    c.base = third.base.clone();
    let r = c.send_raw(&delayed_elsewhere).await;
    let tag = r.headers().get(REFUSAL_HEADER).cloned();
    assert_eq!(error_code(r).await, (401, "session_closed".into()));
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(
            tag.expect("tagged at an instance that never held the session")
                .as_bytes(),
        )
        .unwrap();
    assert!(c
        .session
        .verify_refusal(delayed_elsewhere.expect.seq, ErrorCode::SessionClosed, &tag));
    // At B, which still held the session live: closed, and the delayed request's
    // refusal carries a tag proving it never ran; the one that ran gets none.
    c.base = b.base.clone();
    let r = c.send_raw(&delayed).await;
    let tag = r.headers().get(REFUSAL_HEADER).cloned();
    assert_eq!(error_code(r).await, (401, "session_closed".into()));
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag.expect("tagged").as_bytes())
        .unwrap();
    assert!(c
        .session
        .verify_refusal(delayed.expect.seq, ErrorCode::SessionClosed, &tag));
    let r = c.send_raw(&ran).await;
    assert!(
        r.headers().get(REFUSAL_HEADER).is_none(),
        "the request that ran is not vouched for"
    );
    assert_eq!(error_code(r).await.0, 400);
    assert_eq!(executions(delayed_body.as_bytes()), 0);
    let stored =
        a.sc.manager()
            .store()
            .load(&c.session.id())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.state, SessionState::Closed);
    a.stop().await;
    b.stop().await;
    third.stop().await;
}

async fn an_instance_with_another_storage_key_refuses_to_join(stores: Stores) {
    let store = stores.1.clone();
    let (a, b, _d) = pair(&stores).await;
    let other = ServerKeys::from_parts(
        sessioncert_proto::IdentityKey::generate().unwrap(),
        ServerKeys::ephemeral(now_ms())
            .unwrap()
            .handshake_keys()
            .iter()
            .map(|k| {
                sessioncert_proto::HandshakeKeyPair::from_secret(
                    k.key_id,
                    k.secret(),
                    k.not_before_ms,
                    k.not_after_ms,
                )
                .unwrap()
            })
            .collect(),
        StorageKey::generate().unwrap(),
    );
    let err = sessioncert_server::SessionCert::builder(Arc::new(other), store)
        .build()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("storage key"), "{err}");
    a.stop().await;
    b.stop().await;
}
