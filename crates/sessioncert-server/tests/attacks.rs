//! The attack suite: every way an active network attacker can touch a sealed exchange
//! is refused, and the server keeps serving honest traffic afterwards.

mod common;

use common::*;
use sessioncert_proto::config::VERSION_1;
use sessioncert_proto::replay::WINDOW;
use sessioncert_proto::wire::*;
use sessioncert_proto::{ClientHandshake, ClientOffer, Suite};
use sessioncert_server::{now_ms, Limits, ServerKeys};
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

#[tokio::test]
async fn sealed_echo_round_trip() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let (status, body) = c
        .call("POST", "/apiTest", br#"{"secret":"s3"}"#)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["requestData"]["secret"], "s3");
    assert_eq!(v["status"], true);
}

#[tokio::test]
async fn every_flipped_request_byte_is_rejected_and_server_keeps_serving() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let s = c.seal(
        "POST",
        "/apiTest",
        "application/json",
        br#"{"a":"bcdefgh"}"#,
    );
    for i in 0..s.record.len() {
        let mut t = Sealed {
            record: s.record.clone(),
            ..c.seal("POST", "/apiTest", "application/json", b"")
        };
        // Re-use the original record (and its sequence number) with one byte flipped.
        t.record[i] ^= 0x01;
        t.expect = s.expect;
        let r = c.send_raw(&t).await;
        let (status, code) = error_code(r).await;
        assert!((400..500).contains(&status), "byte {i}: status {status}");
        assert!(
            code == "rejected" || code == "malformed",
            "byte {i}: {code}"
        );
    }
    // The untouched original still goes through: nothing above moved the window.
    let r = c.send_raw(&s).await;
    let (status, _) = c.open(&s, r).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_flipped_response_byte_is_refused_by_the_client() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    let r = c.send_raw(&s).await;
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get(CONTENT_TYPE_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.bytes().await.unwrap().to_vec();
    let binding = sessioncert_proto::ResponseBinding::Header {
        status: 200,
        content_type: &ct,
    };
    for i in 0..body.len() {
        let mut t = body.clone();
        t[i] ^= 0x80;
        assert!(
            c.session.open_response(&s.expect, &binding, &t).is_err(),
            "byte {i}"
        );
    }
    // Status and content type are bound too.
    let wrong_status = sessioncert_proto::ResponseBinding::Header {
        status: 201,
        content_type: &ct,
    };
    assert!(c
        .session
        .open_response(&s.expect, &wrong_status, &body)
        .is_err());
    let wrong_ct = sessioncert_proto::ResponseBinding::Header {
        status: 200,
        content_type: "text/html",
    };
    assert!(c
        .session
        .open_response(&s.expect, &wrong_ct, &body)
        .is_err());
    assert!(c.session.open_response(&s.expect, &binding, &body).is_ok());
}

#[tokio::test]
async fn replayed_request_is_rejected() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    assert_eq!(c.send_raw(&s).await.status(), 200);
    let (status, code) = error_code(c.send_raw(&s).await).await;
    assert_eq!((status, code.as_str()), (400, "rejected"));
}

#[tokio::test]
async fn reorder_inside_window_accepted_outside_rejected() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let first = c.seal("POST", "/apiTest", "application/json", b"1");
    let second = c.seal("POST", "/apiTest", "application/json", b"2");
    // Later one first, then the earlier one: both accepted.
    assert_eq!(c.send_raw(&second).await.status(), 200);
    assert_eq!(c.send_raw(&first).await.status(), 200);
    // One far behind the window.
    let old = c.seal("POST", "/apiTest", "application/json", b"old");
    for _ in 0..WINDOW {
        let _ = c.seal("POST", "/apiTest", "application/json", b"skip");
    }
    let newest = c.seal("POST", "/apiTest", "application/json", b"new");
    assert_eq!(c.send_raw(&newest).await.status(), 200);
    let (status, code) = error_code(c.send_raw(&old).await).await;
    assert_eq!((status, code.as_str()), (400, "rejected"));
}

#[tokio::test]
async fn response_of_one_request_does_not_open_as_another() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let a = c.seal("POST", "/apiTest", "application/json", br#"{"req":"A"}"#);
    let b = c.seal("POST", "/apiTest", "application/json", br#"{"req":"B"}"#);
    let ra = c.send_raw(&a).await;
    let rb = c.send_raw(&b).await;
    let ct = ra
        .headers()
        .get(CONTENT_TYPE_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body_a = ra.bytes().await.unwrap();
    let _ = rb.bytes().await.unwrap();
    let binding = sessioncert_proto::ResponseBinding::Header {
        status: 200,
        content_type: &ct,
    };
    assert!(c
        .session
        .open_response(&b.expect, &binding, &body_a)
        .is_err());
    // Even with the sequence number field rewritten to B's.
    let mut spliced = body_a.to_vec();
    spliced[1..9].copy_from_slice(&b.expect.seq.to_be_bytes());
    assert!(c
        .session
        .open_response(&b.expect, &binding, &spliced)
        .is_err());
    assert!(c
        .session
        .open_response(&a.expect, &binding, &body_a)
        .is_ok());
}

#[tokio::test]
async fn request_line_and_content_type_are_bound() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    type Tamper = fn(&mut Sealed);
    let cases: [(&str, Tamper); 4] = [
        ("method", |s| s.method = http::Method::PUT),
        ("path", |s| s.path = "/status/200".into()),
        ("query", |s| s.query = "admin=1".into()),
        ("content type", |s| s.content_type = "text/plain".into()),
    ];
    for (what, tamper) in cases {
        let mut s = c.seal("POST", "/apiTest", "application/json", b"{}");
        tamper(&mut s);
        let (status, code) = error_code(c.send_raw(&s).await).await;
        assert!(status == 400 || status == 405, "{what}: {status}");
        if status == 400 {
            assert_eq!(code, "rejected", "{what}");
        }
    }
}

#[tokio::test]
async fn record_moved_to_another_session_is_rejected() {
    let srv = server().await;
    let mut a = RawClient::connect(&srv.base, srv.pin).await;
    let b = RawClient::connect(&srv.base, srv.pin).await;
    let s = a.seal("POST", "/apiTest", "application/json", b"{}");
    let (status, code) = error_code(b.send_raw(&s).await).await;
    assert_eq!((status, code.as_str()), (400, "rejected"));
}

#[tokio::test]
async fn plain_request_to_sealed_route_is_refused_plain_route_stays_plain() {
    let srv = server().await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/apiTest", srv.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "malformed"));
    let r = http
        .post(format!("{}/plain/apiTest", srv.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("requestData"));
}

#[tokio::test]
async fn unknown_session_is_401_with_a_rehandshake_code() {
    let srv = server().await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/apiTest", srv.base))
        .header(SESSION_HEADER, "AAAAAAAAAAAAAAAAAAAAAA")
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(vec![1u8; 40])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unknown_session".into()));
}

#[tokio::test]
async fn suite_downgrade_in_flight_fails_the_handshake() {
    let srv = server().await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (_hs, mut hello) =
        ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let (header, header_bytes, _) =
        sessioncert_proto::handshake::parse_client_hello(&hello).unwrap();
    assert_eq!(header.suites, vec![1, 2]);
    // Rewrite the offer to only ChaCha20 (same length): the prologue no longer matches.
    let n = header_bytes.len();
    hello[n - 4..n].copy_from_slice(&[0, 2, 0, 2]);
    let r = srv.post_hello(hello).await;
    assert_eq!(error_code(r).await, (400, "handshake_failed".into()));
}

#[tokio::test]
async fn version_downgrade_or_unknown_version_fails() {
    let srv = server().await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (_hs, mut hello) =
        ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    assert_eq!(&hello[1..4], &[1, 0, VERSION_1 as u8]);
    hello[3] = 0x07;
    let r = srv.post_hello(hello).await;
    assert_eq!(error_code(r).await, (400, "unsupported_version".into()));
}

#[tokio::test]
async fn a_server_that_accepts_only_chacha_negotiates_it() {
    let srv = TestServer::start_with(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        generous(),
        Default::default(),
        sessioncert_proto::ServerPolicy {
            suites: vec![Suite::ChaCha20Poly1305],
            ..Default::default()
        },
    )
    .await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c.session.suite(), Suite::ChaCha20Poly1305);
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
}

#[tokio::test]
async fn wrong_confirmation_is_refused_and_session_stays_unusable() {
    let srv = server().await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let (hs, hello) = ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
    let r = srv.post_hello(hello).await;
    let (uc, _) = hs.read_server_hello(&r.bytes().await.unwrap()).unwrap();
    // The real ticket with a wrong client_finished: refused, nothing created.
    let mut forged = uc.confirmation().to_vec();
    let n = forged.len();
    forged[n - 32..].copy_from_slice(&[0u8; 32]);
    let confirm = |body: Vec<u8>| {
        http.post(format!("{}{CONFIRM_PATH}", srv.base))
            .header(SESSION_HEADER, uc.id().to_string())
            .body(body)
            .send()
    };
    let r = confirm(forged).await.unwrap();
    assert_eq!(error_code(r).await, (400, "handshake_failed".into()));
    // A made-up ticket: the server cannot open it.
    let mut made_up = vec![0, 200];
    made_up.extend_from_slice(&[7u8; 200 + 32]);
    let r = confirm(made_up).await.unwrap();
    assert_eq!(error_code(r).await, (401, "unknown_session".into()));
    // Framing errors, and the old 32-byte body, are malformed.
    for body in [vec![0u8; 32], vec![], uc.confirmation()[..40].to_vec()] {
        let r = confirm(body).await.unwrap();
        assert_eq!(error_code(r).await, (400, "malformed".into()));
    }
    assert_eq!(srv.sc.manager().table_len(), 0);
    // An unconfirmed session carries no traffic (without its confirmation)...
    let mut session = uc.confirmed();
    let (record, _) = session
        .seal_request(
            &sessioncert_proto::RequestBinding::Header(sessioncert_proto::RequestLine {
                method: "POST",
                target: "https://api.example",
                path: "/apiTest",
                query: "",
                content_type: "",
                covered: &[],
            }),
            b"{}",
        )
        .unwrap();
    let r = http
        .post(format!("{}/apiTest", srv.base))
        .header(SESSION_HEADER, session.id().to_string())
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(record)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unknown_session".into()));
}

#[tokio::test]
async fn oversized_and_malformed_inputs_get_413_and_400_and_server_keeps_serving() {
    use sessioncert_proto::handshake::MAX_HANDSHAKE_LEN;
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..generous()
    };
    let srv = TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        limits,
    )
    .await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let big = c.seal(
        "POST",
        "/apiTest",
        "application/json",
        &vec![b'x'; 128 * 1024],
    );
    let (status, code) = error_code(c.send_raw(&big).await).await;
    assert_eq!((status, code.as_str()), (413, "too_large"));
    let http = reqwest::Client::new();
    // An oversized handshake is a malformed protocol message (PROTOCOL §6.6), also
    // exactly one byte over the limit.
    for len in [100_000, MAX_HANDSHAKE_LEN + 1] {
        let r = srv.post_hello(vec![1u8; len]).await;
        assert_eq!(error_code(r).await, (400, "malformed".into()), "{len}");
    }
    // Garbage handshakes of many shapes.
    for body in [
        vec![],
        vec![0u8],
        vec![1, 1, 0, 1, 0, 1, 7, 1, 0, 1, 0, 0],
        vec![0xff; 300],
    ] {
        let r = srv.post_hello(body).await;
        assert_eq!(error_code(r).await.0, 400);
    }
    // Garbage session ids, garbage records.
    for (sid, rec) in [
        ("short", vec![1u8; 30]),
        ("AAAAAAAAAAAAAAAAAAAAAA", vec![]),
        ("!!!!!!!!!!!!!!!!!!!!!!", vec![0; 5]),
    ] {
        let r = http
            .post(format!("{}/apiTest", srv.base))
            .header(SESSION_HEADER, sid)
            .header("content-type", SEALED_CONTENT_TYPE)
            .body(rec)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        assert!(s == 400 || s == 401, "{sid}: {s}");
    }
    let mut short = c.seal("POST", "/apiTest", "application/json", b"{}");
    short.record.truncate(10);
    assert_eq!(error_code(c.send_raw(&short).await).await.0, 400);
    // Confirm with a bogus id and an oversized body.
    let r = http
        .post(format!("{}{CONFIRM_PATH}", srv.base))
        .header(SESSION_HEADER, "x")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "malformed".into()));
    // Still serving.
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
    let mut c2 = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c2.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
}

#[tokio::test]
async fn handshake_flood_from_one_address_gets_429() {
    let limits = Limits {
        handshakes_per_sec: 1.0,
        handshake_burst: 3.0,
        exempt_loopback: false,
        ..Limits::default()
    };
    let srv = TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        limits,
    )
    .await;
    let http = reqwest::Client::new();
    let config = RawClient::fetch_config(&http, &srv.base, srv.pin).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (_hs, hello) =
            ClientHandshake::start(&config, ClientOffer::default(), now_ms()).unwrap();
        let r = srv.post_hello(hello).await;
        let retry = r.headers().get("retry-after").is_some();
        let (s, code) = error_code(r).await;
        if s == 429 {
            assert_eq!(code, "rate_limited");
            assert!(retry, "429 carries retry-after");
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn sessions_per_address_are_capped() {
    let limits = Limits {
        max_sessions_per_addr: 2,
        exempt_loopback: false,
        handshakes_per_sec: 1e6,
        handshake_burst: 1e6,
        ..Limits::default()
    };
    let srv = TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        limits,
    )
    .await;
    let _a = RawClient::connect(&srv.base, srv.pin).await;
    let _b = RawClient::connect(&srv.base, srv.pin).await;
    let (_hs, hello) =
        ClientHandshake::start(&_a.config, ClientOffer::default(), now_ms()).unwrap();
    let r = srv.post_hello(hello).await;
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
}

#[tokio::test]
async fn live_session_table_is_capped_server_wide() {
    let limits = Limits {
        max_live_sessions: 2,
        ..generous()
    };
    let srv = TestServer::start(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        limits,
    )
    .await;
    let a = RawClient::connect(&srv.base, srv.pin).await;
    let _b = RawClient::connect(&srv.base, srv.pin).await;
    let (_hs, hello) = ClientHandshake::start(&a.config, ClientOffer::default(), now_ms()).unwrap();
    let r = srv.post_hello(hello).await;
    // A server-wide cap is not the client's fault: 503, not "too many from you".
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(error_code(r).await, (503, "unavailable".into()));
    // Closing one frees a place (its tombstone does not count).
    let mut a = a;
    let s = a.seal("POST", CLOSE_PATH, "", b"");
    let r = a.send_raw(&s).await;
    assert_eq!(a.open(&s, r).await.unwrap().0, 200);
    let _c = RawClient::connect(&srv.base, srv.pin).await;
}

#[tokio::test]
async fn closed_session_gets_401_session_closed() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let s = c.seal("POST", CLOSE_PATH, "", b"");
    let r = c.send_raw(&s).await;
    assert_eq!(c.open(&s, r).await.unwrap().0, 200);
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    assert_eq!(
        error_code(c.send_raw(&s).await).await,
        (401, "session_closed".into())
    );
}

#[tokio::test]
async fn idle_session_expires_with_401() {
    let srv = TestServer::start_with(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        generous(),
        Default::default(),
        sessioncert_proto::ServerPolicy {
            idle_timeout_ms: 300,
            ..Default::default()
        },
    )
    .await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    assert_eq!(c.call("POST", "/apiTest", b"{}").await.unwrap().0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let s = c.seal("POST", "/apiTest", "application/json", b"{}");
    assert_eq!(
        error_code(c.send_raw(&s).await).await,
        (401, "session_expired".into())
    );
}

#[tokio::test]
async fn full_mode_hides_everything_but_the_session_id() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let inner = sessioncert_proto::full::FullRequest {
        method: "POST".into(),
        scheme: "http".into(),
        // The canonical authority of the server's origin (an empty one is malformed).
        authority: srv.base.trim_start_matches("http://").to_owned(),
        path: "/apiTest?secret-query=1".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-secret".into(), b"hdr".to_vec()),
        ],
        body: br#"{"secret":"full-mode-body"}"#.to_vec(),
    };
    let (record, expect) = c
        .session
        .seal_request(&sessioncert_proto::RequestBinding::Full, &inner.encode())
        .unwrap();
    for needle in [&b"secret"[..], b"apiTest", b"x-secret"] {
        assert!(!record.windows(needle.len()).any(|w| w == needle));
    }
    let r = c
        .http
        .post(format!("{}{FULL_PATH}", srv.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert!(!body.windows(14).any(|w| w == b"full-mode-body"));
    let plain = c
        .session
        .open_response(&expect, &sessioncert_proto::ResponseBinding::Full, &body)
        .unwrap();
    let resp = sessioncert_proto::full::FullResponse::decode(&plain).unwrap();
    assert_eq!(resp.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["requestData"]["secret"], "full-mode-body");
    // A full-mode record replayed, or sent to a header-mode route, is refused.
    let r = c
        .http
        .post(format!("{}{FULL_PATH}", srv.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "rejected".into()));
    let r = c
        .http
        .post(format!("{}/apiTest", srv.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(record)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 400);
}

#[tokio::test]
async fn concurrent_requests_out_of_order_all_succeed() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let sealed: Vec<Sealed> = (0..64)
        .map(|i| {
            c.seal(
                "POST",
                "/apiTest",
                "application/json",
                format!("{{\"i\":{i}}}").as_bytes(),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    // Send in reverse order, all at once.
    for s in sealed.iter().rev() {
        let http = c.http.clone();
        let url = format!("{}/apiTest", srv.base);
        let sid = c.session.id().to_string();
        let rec = s.record.clone();
        let target = s.target.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header(SESSION_HEADER, sid)
                .header(TARGET_HEADER, target)
                .header("content-type", SEALED_CONTENT_TYPE)
                .header(CONTENT_TYPE_HEADER, "application/json")
                .body(rec)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get(CONTENT_TYPE_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned()),
                r.bytes().await.unwrap(),
            )
        }));
    }
    let results: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (s, (status, ct, body)) in sealed.iter().rev().zip(results) {
        assert_eq!(status, 200);
        let b = sessioncert_proto::ResponseBinding::Header {
            status,
            content_type: ct.as_deref().unwrap_or(""),
        };
        c.session.open_response(&s.expect, &b, &body).unwrap();
    }
}
