//! The stateless handshake and authenticated refusals (PROTOCOL §6.8, §14.1): the server
//! holds nothing until a confirmation arrives, the confirmation rides on the first
//! request, a replayed first request runs nothing twice, replayed hellos cost no memory,
//! and refusals of requests that never ran carry a tag the client can check.

mod common;

use common::*;
use sessioncert_proto::wire::{CONFIRM_HEADER, REFUSAL_HEADER, SESSION_HEADER};
use sessioncert_proto::{ClientHandshake, ClientOffer, ErrorCode};
use sessioncert_server::{now_ms, ServerKeys};
use sessioncert_store::MemoryStore;
use std::sync::Arc;

async fn server() -> TestServer {
    TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        generous(),
    )
    .await
}

/// A handshake without the stand-alone confirm: the session's requests carry it.
async fn handshake_only(srv: &TestServer) -> RawClient {
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (hs, hello) = ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let r = srv.post_hello(hello).await;
    assert_eq!(r.status(), 200);
    let (uc, _) = hs.read_server_hello(&r.bytes().await.unwrap()).unwrap();
    RawClient {
        http,
        base: srv.base.clone(),
        config,
        session: uc.into_session(),
    }
}

fn confirm_header(c: &RawClient) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.session.confirmation().unwrap())
}

async fn send_with(c: &RawClient, s: &Sealed, confirm: Option<&str>) -> reqwest::Response {
    let mut rb = c
        .http
        .request(s.method.clone(), format!("{}{}", c.base, s.path))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header(sessioncert_proto::wire::TARGET_HEADER, s.target.as_str())
        .header("content-type", sessioncert_proto::wire::SEALED_CONTENT_TYPE)
        .header(
            sessioncert_proto::wire::CONTENT_TYPE_HEADER,
            s.content_type.as_str(),
        )
        .body(s.record.clone());
    if let Some(h) = confirm {
        rb = rb.header(CONFIRM_HEADER, h);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn the_first_request_confirms_the_session_and_its_replays_run_nothing() {
    let srv = server().await;
    let mut c = handshake_only(&srv).await;
    assert_eq!(
        srv.sc.manager().table_len(),
        0,
        "nothing held before the confirmation"
    );
    let confirm = confirm_header(&c);
    let body = b"{\"first-request\":1}";
    let first = c.seal("POST", "/apiTest", "application/json", body);
    // Without the confirmation the session does not exist.
    assert_eq!(
        error_code(send_with(&c, &first, None).await).await,
        (401, "unknown_session".into())
    );
    let r = send_with(&c, &first, Some(&confirm)).await;
    let (status, _) = c.open(&first, r).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(executions(body), 1);
    assert!(
        c.session.confirmation().is_none(),
        "an opened response confirms it"
    );
    assert_eq!(srv.sc.manager().live_sessions(), 1);
    // The whole first request, confirmation included, replayed: refused, not re-run.
    for _ in 0..3 {
        assert_eq!(
            error_code(send_with(&c, &first, Some(&confirm)).await).await,
            (400, "rejected".into())
        );
    }
    // After the session ends, the replayed confirmation cannot bring it back.
    assert!(srv.sc.manager().close(&c.session.id()).await);
    let r = send_with(&c, &first, Some(&confirm)).await;
    assert!(
        r.headers().get(REFUSAL_HEADER).is_none(),
        "seq 0 ran: no proof it did not"
    );
    assert_eq!(error_code(r).await, (401, "session_closed".into()));
    assert_eq!(executions(body), 1);
    assert_eq!(srv.sc.manager().live_sessions(), 0);
    // The stand-alone confirm is idempotent only while the session lives.
    let r = c
        .http
        .post(format!(
            "{}{}",
            c.base,
            sessioncert_proto::wire::CONFIRM_PATH
        ))
        .header(SESSION_HEADER, c.session.id().to_string())
        .body({
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&confirm)
                .unwrap()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "session_closed".into()));
}

#[tokio::test]
async fn concurrent_first_requests_create_one_session() {
    let srv = server().await;
    let mut c = handshake_only(&srv).await;
    let confirm = confirm_header(&c);
    let reqs: Vec<Sealed> = (0..8)
        .map(|i| {
            c.seal(
                "POST",
                "/apiTest",
                "application/json",
                format!("{{\"conc\":{i}}}").as_bytes(),
            )
        })
        .collect();
    let c = Arc::new(c);
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|s| {
            let (c, confirm) = (c.clone(), confirm.clone());
            tokio::spawn(async move { send_with(&c, &s, Some(&confirm)).await.status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(srv.sc.manager().live_sessions(), 1);
    assert_eq!(
        srv.sc
            .manager()
            .stats()
            .established
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_client_hellos_cost_no_memory_and_honest_clients_still_connect() {
    // Per-address limits on, as on the internet; the replays come from many addresses.
    let limits = sessioncert_server::Limits {
        max_live_sessions: 100,
        ..sessioncert_server::Limits::default()
    };
    let srv = TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        limits,
    )
    .await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (_hs, hello) = ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let m = srv.sc.manager();
    let mut answered = 0;
    for i in 0..3000u32 {
        let addr = std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        if m.handshake(&hello, Some(addr)).await.is_ok() {
            answered += 1;
        }
    }
    assert_eq!(
        answered, 3000,
        "every replay is answered (it costs CPU only)"
    );
    assert_eq!(m.table_len(), 0, "and nothing is held for any of them");
    // Far more replays than the session cap, yet an honest client connects and works.
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(
        c.call("POST", "/apiTest", b"{\"honest\":1}")
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test]
async fn refusals_of_requests_that_never_ran_carry_a_tag_the_client_checks() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let ran = c.seal("POST", "/apiTest", "application/json", b"{\"tag\":0}");
    assert_eq!(c.send_raw(&ran).await.status(), 200);
    let delayed = c.seal("POST", "/apiTest", "application/json", b"{\"tag\":1}");
    assert!(srv.sc.manager().close(&c.session.id()).await);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The delayed request never ran: tagged, and the tag verifies for its seq only.
    let r = c.send_raw(&delayed).await;
    let tag = b64.decode(r.headers()[REFUSAL_HEADER].as_bytes()).unwrap();
    assert_eq!(error_code(r).await, (401, "session_closed".into()));
    assert!(c.session.verify_refusal(1, ErrorCode::SessionClosed, &tag));
    assert!(!c.session.verify_refusal(0, ErrorCode::SessionClosed, &tag));
    assert!(!c.session.verify_refusal(1, ErrorCode::SessionExpired, &tag));
    // The one that ran gets no tag.
    let r = c.send_raw(&ran).await;
    assert!(r.headers().get(REFUSAL_HEADER).is_none());
    assert_eq!(executions(b"{\"tag\":1}"), 0);
}
