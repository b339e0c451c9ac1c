//! End-to-end tests of the client against an in-process mock server.

mod common;

use common::{capture_logs, Behavior, Mock, MockOptions};
use serde_json::Value;
use sessioncert_client::http::{Method, StatusCode};
use sessioncert_client::{Client, ClientError, ErrorCode, Pin, ProtocolError, Suite, Trust};
use sessioncert_proto::{IdentityKey, ServerPolicy};
use std::sync::atomic::Ordering;

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[test]
fn client_is_send_sync_clone() {
    assert_send_sync_clone::<Client>();
}

async fn connect(mock: &Mock) -> Client {
    Client::connect(&mock.base, Trust::Pin(mock.state.pin()))
        .await
        .expect("connect")
}

#[tokio::test]
async fn header_mode_echo_round_trip_under_a_path_prefix() {
    let logs = capture_logs();
    let mock = Mock::start_with(MockOptions {
        prefix: "/api".into(),
        ..Default::default()
    })
    .await;
    let client = connect(&mock).await;
    assert_eq!(mock.state.handshakes(), 1);
    // One round trip: the confirmation rides on the first request (PROTOCOL §6.8).
    assert_eq!(mock.state.confirms.load(Ordering::SeqCst), 0);
    assert_eq!(client.identity(), mock.state.pin());

    let secret = "top-secret-plaintext-marker";
    let r = client
        .post("/notes?tag=a%20b&x=1")
        .json(&serde_json::json!({ "text": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.state.confirms.load(Ordering::SeqCst), 1);
    assert_eq!(r.content_type(), Some("application/json"));
    assert!(!r.headers_authenticated());
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/notes");
    assert_eq!(echo["query"], "tag=a%20b&x=1");
    assert_eq!(echo["content_type"], "application/json");
    let inner: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["text"], secret);

    // GET and DELETE still carry a (sealed, empty) body; a custom content type is bound.
    let r = client.get("/items/%C3%A9t%C3%A9").send().await.unwrap();
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/items/%C3%A9t%C3%A9");
    assert_eq!(echo["body"], "");
    let r = client
        .put("relative/path")
        .content_type("text/x-custom")
        .body("raw")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["path"], "/api/relative/path");
    assert_eq!(echo["content_type"], "text/x-custom");
    assert_eq!(echo["body"], "raw");
    let r = client.delete("/items/1").send().await.unwrap();
    assert_eq!(r.json::<Value>().unwrap()["method"], "DELETE");
    let r = client
        .request(Method::PATCH, "/items/1")
        .header("x-trace", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["method"], "PATCH");

    // A non-2xx status from the application is authenticated and returned as is.
    let r = client.get("/status/418").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(r.text().unwrap(), "status 418");
    assert!(r.error_for_status().is_err());

    // Every request was sealed: the plaintext never crossed the wire.
    let seen = mock.state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        assert!(s.body.len() >= 25, "every sealed request has a record body");
        assert!(!String::from_utf8_lossy(&s.body).contains(secret));
    }
    let info = client.session_info().await.unwrap();
    assert_eq!(info.next_seq, 6);
    assert_eq!(info.suite, Suite::Aes256Gcm);
    assert_eq!(mock.state.handshakes(), 1);
    // Logs mention no plaintext.
    let text = logs.text();
    let established = text
        .lines()
        .find(|l| l.contains(&info.id.to_string()) && l.contains("handshake done"));
    assert!(established.is_some(), "{text}");
    assert!(!text.contains(secret));
}

#[tokio::test]
async fn full_mode_echo_round_trip() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let r = client
        .post("/notes?limit=5")
        .full(true)
        .header("x-secret-header", "hidden")
        .json(&serde_json::json!({"n": 1}))
        .send()
        .await
        .unwrap();
    // The inner status and headers are what the client sees.
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers_authenticated());
    assert_eq!(r.headers()["x-inner"], "sealed-header");
    assert_eq!(r.content_type(), Some("application/json"));
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/notes?limit=5");
    assert_eq!(echo["scheme"], "http");
    assert_eq!(echo["authority"], mock.addr.to_string());
    assert_eq!(echo["body"], r#"{"n":1}"#);
    let headers = echo["headers"].as_array().unwrap();
    assert!(headers.contains(&serde_json::json!(["content-type", "application/json"])));
    assert!(headers.contains(&serde_json::json!(["x-secret-header", "hidden"])));

    // On the wire only POST /.well-known/sessioncert/full was visible.
    let seen = mock.state.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/.well-known/sessioncert/full");
    assert_eq!(seen[0].query, "");
    let wire = String::from_utf8_lossy(&seen[0].body);
    assert!(!wire.contains("limit") && !wire.contains("hidden"));

    // HEAD works in full mode (sealed inner response); in header mode its records travel
    // in headers (against the real server: sessioncert-server/tests/binding.rs).
    let r = client.request(Method::HEAD, "/x").full(true).send().await;
    assert!(r.is_ok());
}

#[tokio::test]
async fn wrong_pin_is_untrusted_and_nothing_protected_is_sent() {
    let mock = Mock::start().await;
    let other = IdentityKey::from_seed(&[42; 32]).pin();
    let err = Client::connect(&mock.base, Trust::Pin(other))
        .await
        .unwrap_err();
    assert!(err.is_untrusted(), "{err:?}");
    match &err {
        ClientError::Untrusted { presented, .. } => {
            assert_eq!(*presented, Some(mock.state.pin()))
        }
        e => panic!("{e:?}"),
    }
    // Lazy client: the first request fails the same way, before anything is sealed.
    let client = Client::builder(&mock.base, Trust::Pin(other))
        .connect_lazily(true)
        .build()
        .await
        .unwrap();
    let err = client
        .post("/secret")
        .body("data")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_untrusted(), "{err:?}");
    assert_eq!(mock.state.handshakes(), 0);
    assert_eq!(mock.state.confirms.load(Ordering::SeqCst), 0);
    assert_eq!(mock.state.protected_hits(), 0);
    assert!(mock.state.config_fetches.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn trust_on_first_use_works_and_warns_with_the_pin() {
    let logs = capture_logs();
    let mock = Mock::start().await;
    let client = Client::connect(&mock.base, Trust::FirstUse).await.unwrap();
    assert_eq!(client.identity(), mock.state.pin());
    let r = client.get("/hello").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = logs.text();
    let pin = mock.state.pin().to_string();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("NOT pinned") && l.contains(&pin));
    assert!(warning.is_some(), "{text}");
    // The accepted identity can be pinned next time.
    let pinned: Pin = client.identity().to_string().parse().unwrap();
    Client::connect(&mock.base, Trust::Pin(pinned))
        .await
        .unwrap();
}

#[tokio::test]
async fn plaintext_response_to_a_sealed_request_is_an_error() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.set_behavior(Behavior {
        plaintext_reply: true,
        ..Default::default()
    });
    let err = client.get("/hello").send().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unsealed { status } if status == StatusCode::OK),
        "{err:?}"
    );
    let err = client.get("/hello").full(true).send().await.unwrap_err();
    assert!(matches!(err, ClientError::Unsealed { .. }), "{err:?}");
}

#[tokio::test]
async fn tampered_response_body_or_status_is_rejected() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.set_behavior(Behavior {
        tamper_body: true,
        ..Default::default()
    });
    let err = client.get("/hello").send().await.unwrap_err();
    assert!(err.is_bad_seal(), "{err:?}");
    let err = client.get("/hello").full(true).send().await.unwrap_err();
    assert!(err.is_bad_seal(), "{err:?}");
    mock.state.set_behavior(Behavior {
        tamper_status: true,
        ..Default::default()
    });
    let err = client.get("/hello").send().await.unwrap_err();
    assert!(err.is_bad_seal(), "{err:?}");
    // Behaving again: the session still works.
    mock.state.set_behavior(Behavior::default());
    assert!(client.get("/hello").send().await.is_ok());
}

#[tokio::test]
async fn sessioncert_status_is_one_line_of_204_205_or_304() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    // The form a server uses: 200 on the wire, the real status in one header line.
    mock.state.set_behavior(Behavior {
        status_lines: vec!["204"],
        ..Default::default()
    });
    let r = client.get("/status/204").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Two lines (even equal ones), or a status that never travels this way (here the
    // sealed one, 200): refused without opening.
    for (path, lines) in [
        ("/status/204", vec!["204", "204"]),
        ("/status/204", vec!["204", "205"]),
        ("/hello", vec!["200"]),
        ("/status/201", vec!["201"]),
    ] {
        mock.state.set_behavior(Behavior {
            status_lines: lines.clone(),
            ..Default::default()
        });
        let err = client.get(path).send().await.unwrap_err();
        assert!(
            matches!(err, ClientError::UnexpectedResponse { .. }),
            "{path} {lines:?}: {err:?}"
        );
    }
    mock.state.set_behavior(Behavior::default());
    assert!(client.get("/hello").send().await.is_ok());
}

#[tokio::test]
async fn forgotten_session_is_renewed_transparently_once() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let before = client.session_info().await.unwrap().id;
    mock.state.forget_all_sessions();
    // An idempotent request (PUT) is re-sent on a fresh session.
    let r = client.put("/after-restart").body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap()["body"], "x");
    assert_eq!(mock.state.handshakes(), 2);
    assert_ne!(client.session_info().await.unwrap().id, before);
    // One failed attempt plus the retry.
    assert_eq!(mock.state.protected_hits(), 2);
    // (A POST is not re-sent: see tests/retry.rs.)
}

#[tokio::test]
async fn a_second_unknown_session_is_returned_as_an_error() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.set_behavior(Behavior {
        forget_always: true,
        ..Default::default()
    });
    let err = client.get("/x").send().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownSession), "{err:?}");
    match err {
        ClientError::Rejected {
            status, message, ..
        } => {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(message.contains("mock refused"));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(mock.state.handshakes(), 2, "exactly one re-handshake");
    assert_eq!(mock.state.protected_hits(), 2, "exactly one retry");
}

#[tokio::test]
async fn refusals_become_rejected_with_retry_after() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let err = client.get("/limited").send().await.unwrap_err();
    match err {
        ClientError::Rejected {
            status,
            code,
            retry_after,
            ..
        } => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(code, ErrorCode::RateLimited);
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)));
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        mock.state.handshakes(),
        1,
        "no re-handshake for rate limits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_on_one_client() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("req-{i}");
            let r = c.post(&format!("/c/{i}")).body(body.clone()).send().await?;
            let echo: Value = r.json()?;
            assert_eq!(echo["body"], body);
            assert_eq!(echo["path"], format!("/c/{i}"));
            Ok::<_, ClientError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(mock.state.handshakes(), 1);
    assert_eq!(mock.state.protected_hits(), 50);
    assert_eq!(client.session_info().await.unwrap().next_seq, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_recovery_handshake() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.forget_all_sessions();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.get(&format!("/r/{i}")).send().await.map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(mock.state.handshakes(), 2, "single-flight re-handshake");
}

#[tokio::test]
async fn unknown_key_refetches_the_config_once() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 1);
    mock.state.rotate_key();
    mock.state.forget_all_sessions();
    let r = client.get("/after-rotation").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 2);
    // Handshake with the stale key (refused) + handshake with the new one.
    assert_eq!(mock.state.handshakes(), 3);
}

#[tokio::test]
async fn expired_session_is_renewed_before_use() {
    let mock = Mock::start_with(MockOptions {
        policy: Some(ServerPolicy {
            lifetime_ms: 0,
            ..ServerPolicy::default()
        }),
        ..Default::default()
    })
    .await;
    let client = connect(&mock).await;
    // The mock does not enforce lifetimes: only the client's own check renews.
    client.get("/a").send().await.unwrap();
    assert_eq!(mock.state.handshakes(), 2);
    assert_eq!(
        mock.state.protected_hits(),
        1,
        "no request on the expired session"
    );
}

#[tokio::test]
async fn close_closes_on_the_server_and_forgets_the_session() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    client.get("/a").send().await.unwrap();
    client.close().await.unwrap();
    assert_eq!(mock.state.closes.load(Ordering::SeqCst), 1);
    assert_eq!(mock.state.session_count(), 0);
    assert!(client.session_info().await.is_none());
    // Closing twice is fine; the next request handshakes anew.
    client.close().await.unwrap();
    client.get("/b").send().await.unwrap();
    assert_eq!(mock.state.handshakes(), 2);
}

#[tokio::test]
async fn rehandshake_forces_a_new_session() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let a = client.session_info().await.unwrap().id;
    client.rehandshake().await.unwrap();
    let b = client.session_info().await.unwrap().id;
    assert_ne!(a, b);
    assert_eq!(mock.state.handshakes(), 2);
    client.get("/x").send().await.unwrap();
}

#[tokio::test]
async fn suites_are_offered_as_configured() {
    let mock = Mock::start().await;
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .suites(vec![Suite::ChaCha20Poly1305])
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.session_info().await.unwrap().suite,
        Suite::ChaCha20Poly1305
    );
    client.get("/x").send().await.unwrap();
}

#[tokio::test]
async fn bad_base_urls_and_headers_are_refused() {
    let pin = IdentityKey::from_seed(&[1; 32]).pin();
    for bad in [
        "ftp://h/",
        "not a url",
        "http://h/?q=1",
        "http://h/#f",
        // No canonical origin (PROTOCOL §8.2): a trailing dot, port 0.
        "http://h./",
        "https://api.example.com./v1",
        "http://h:0/",
    ] {
        let e = Client::builder(bad, Trust::Pin(pin))
            .connect_lazily(true)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl(_)), "{bad}: {e:?}");
    }
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let e = client
        .get("/x")
        .header("sessioncert-id", "forged")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidRequest(_)), "{e:?}");
    assert_eq!(mock.state.protected_hits(), 0);
}

#[test]
fn protocol_errors_convert() {
    let e: ClientError = ProtocolError::BadSeal.into();
    assert!(e.is_bad_seal());
}
