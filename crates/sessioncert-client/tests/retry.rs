//! No double execution: after a session refusal (which an attacker on the path can
//! forge once the server has executed the request) or a transport failure after
//! sending, the client re-sends a request on its own only when that cannot execute it
//! twice; otherwise the caller gets `ClientError::OutcomeUnknown`.

mod common;

use common::{Behavior, Mock};
use serde_json::Value;
use sessioncert_client::http::{Method, StatusCode};
use sessioncert_client::{Client, ClientError, ErrorCode, RefusalAuthenticity, Trust};
use std::error::Error as _;
use std::time::Duration;

async fn connect(mock: &Mock) -> Client {
    Client::connect(&mock.base, Trust::Pin(mock.state.pin()))
        .await
        .expect("connect")
}

/// How many requests with `method` to `path` the mock executed.
fn executed(mock: &Mock, method: &str, path: &str) -> usize {
    mock.state
        .executed
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.method == method && e.path == path)
        .count()
}

/// Asserts `err` is an unknown outcome of a `method` request caused by an
/// unauthenticated `401 session_expired`, with a message a developer can act on.
fn assert_outcome_unknown_after_forged_refusal(err: &ClientError, method: &Method) {
    match err {
        ClientError::OutcomeUnknown {
            method: m, cause, ..
        } => {
            assert_eq!(m, method, "{err:?}");
            match cause.as_ref() {
                ClientError::Rejected {
                    status,
                    code,
                    authenticity,
                    ..
                } => {
                    assert_eq!(*status, StatusCode::UNAUTHORIZED);
                    assert_eq!(*code, ErrorCode::SessionExpired);
                    assert_eq!(*authenticity, RefusalAuthenticity::Unauthenticated);
                }
                other => panic!("cause is not the refusal: {other:?}"),
            }
        }
        other => panic!("not OutcomeUnknown: {other:?}"),
    }
    assert!(err.is_outcome_unknown());
    // Code that re-sends on a session refusal must not see one here.
    assert_eq!(err.code(), None);
    let text = err.to_string();
    for needle in [
        "may or may not have executed",
        method.as_str(),
        "session_expired",
        "not authenticated",
        "not re-sent",
        "check whether it took effect",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    // The underlying cause is reachable through `source()`.
    let source = err.source().expect("a source");
    assert!(source.to_string().contains("session_expired"), "{source}");
}

#[tokio::test]
async fn forged_refusal_after_an_executed_post_is_an_unknown_outcome_not_a_second_note() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let first = client.session_info().await.unwrap().id;

    // The attacker forwards the sealed POST, the server executes it, the client gets a
    // forged 401 session_expired.
    mock.state.forge_expired_after_execute(1);
    let err = client
        .post("/notes")
        .json(&serde_json::json!({"title": "once"}))
        .send()
        .await
        .unwrap_err();
    assert_outcome_unknown_after_forged_refusal(&err, &Method::POST);
    assert_eq!(
        executed(&mock, "POST", "/notes"),
        1,
        "the note was created once"
    );
    assert_eq!(
        mock.state.protected_hits(),
        2,
        "the request was not re-sent (the other sealed request is the settling close)"
    );
    assert_eq!(
        mock.state.closes.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(
        matches!(err, ClientError::OutcomeUnknown { settled: true, .. }),
        "the server confirmed the close: {err:?}"
    );
    assert_eq!(mock.state.handshakes(), 1, "no handshake for a re-send");

    // The refused session is dropped: the next request handshakes anew and works.
    assert!(client.session_info().await.is_none());
    let r = client.get("/notes").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.state.handshakes(), 2);
    assert_ne!(client.session_info().await.unwrap().id, first);
    assert_eq!(executed(&mock, "POST", "/notes"), 1);

    // Full-request mode: the sealed inner method decides, and it is a POST.
    mock.state.forge_expired_after_execute(1);
    let err = client
        .post("/notes")
        .full(true)
        .json(&serde_json::json!({"title": "full"}))
        .send()
        .await
        .unwrap_err();
    assert_outcome_unknown_after_forged_refusal(&err, &Method::POST);
    assert_eq!(executed(&mock, "POST", "/notes"), 2, "one per send() call");
    assert_eq!(mock.state.handshakes(), 2);

    // PATCH is not idempotent either.
    mock.state.forge_expired_after_execute(1);
    let err = client.patch("/notes/1").body("x").send().await.unwrap_err();
    assert_outcome_unknown_after_forged_refusal(&err, &Method::PATCH);
    assert_eq!(executed(&mock, "PATCH", "/notes/1"), 1);
}

#[tokio::test]
async fn forged_refusal_after_an_idempotent_request_is_retried_transparently() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    let mut handshakes = 1;
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
        mock.state.forge_expired_after_execute(1);
        let before = client.session_info().await.unwrap().id;
        let r = client
            .request(method.clone(), "/notes/7")
            .body("same")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert_eq!(r.status(), StatusCode::OK, "{method}");
        let echo: Value = r.json().unwrap();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["body"], "same");
        handshakes += 1;
        assert_eq!(
            mock.state.handshakes(),
            handshakes,
            "{method}: one re-handshake"
        );
        assert_ne!(client.session_info().await.unwrap().id, before, "{method}");
        assert_eq!(executed(&mock, method.as_str(), "/notes/7"), 2, "{method}");
    }
    // HEAD (full-request mode only) too.
    mock.state.forge_expired_after_execute(1);
    let r = client
        .request(Method::HEAD, "/notes/7")
        .full(true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(executed(&mock, "HEAD", "/notes/7"), 2);
    assert_eq!(mock.state.handshakes(), handshakes + 1);
}

#[tokio::test]
async fn the_caller_decides_with_idempotent() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;

    // A POST the caller marks safe to send twice (say, it carries an idempotency key)
    // is re-sent on a fresh session.
    mock.state.forge_expired_after_execute(1);
    let r = client
        .post("/notes")
        .header("idempotency-key", "k-1")
        .body("n")
        .idempotent(true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap()["body"], "n");
    assert_eq!(executed(&mock, "POST", "/notes"), 2);
    assert_eq!(mock.state.handshakes(), 2);

    // A GET with side effects, marked not safe to send twice, is not re-sent.
    mock.state.forge_expired_after_execute(1);
    let err = client
        .get("/counter/increment")
        .idempotent(false)
        .send()
        .await
        .unwrap_err();
    assert_outcome_unknown_after_forged_refusal(&err, &Method::GET);
    assert_eq!(executed(&mock, "GET", "/counter/increment"), 1);
    assert_eq!(mock.state.handshakes(), 2);
}

#[tokio::test]
async fn a_real_refusal_of_a_post_is_still_an_unknown_outcome_and_the_next_post_works() {
    // The server really forgot the session (it did not execute the POST), but an
    // unauthenticated refusal cannot prove that, so the client cannot tell it from the
    // forgery above.
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.forget_all_sessions();
    let err = client.post("/notes").body("a").send().await.unwrap_err();
    match &err {
        ClientError::OutcomeUnknown { cause, .. } => {
            assert_eq!(cause.code(), Some(ErrorCode::UnknownSession), "{err:?}")
        }
        other => panic!("{other:?}"),
    }
    // The close that would settle it is refused too (the server has no such session),
    // so the error says the outcome is not settled.
    assert!(
        matches!(err, ClientError::OutcomeUnknown { settled: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("did not go through"), "{err}");
    assert_eq!(executed(&mock, "POST", "/notes"), 0);
    let r = client.post("/notes").body("b").send().await.unwrap();
    assert_eq!(r.json::<Value>().unwrap()["body"], "b");
    assert_eq!(executed(&mock, "POST", "/notes"), 1);
    assert_eq!(mock.state.handshakes(), 2);
    assert_eq!(
        mock.state.refusals.lock().unwrap().len(),
        2,
        "the POST and the close"
    );
}

#[tokio::test]
async fn a_timeout_after_sending_a_post_is_an_unknown_outcome() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    // The handler runs, the answer comes a second later, the client gives up first.
    let err = client
        .post("/slow")
        .body("x")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert!(err.is_timeout(), "{err:?}");
    match &err {
        ClientError::OutcomeUnknown { method, cause, .. } => {
            assert_eq!(method, Method::POST);
            assert!(matches!(cause.as_ref(), ClientError::Http(_)), "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("may or may not have executed") && text.contains("timed out"),
        "{text}"
    );
    assert_eq!(executed(&mock, "POST", "/slow"), 1, "not re-sent");

    // An idempotent request that times out is an ordinary timeout (never re-sent either).
    let err = client
        .get("/slow")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http(_)) && err.is_timeout(),
        "{err:?}"
    );
    assert_eq!(executed(&mock, "GET", "/slow"), 1);
    // The POST's session was closed to settle its outcome (so the GET handshook anew);
    // the GET's session was not refused, so it is kept.
    assert_eq!(
        mock.state.closes.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(mock.state.handshakes(), 2);
    client.get("/fine").send().await.unwrap();
    assert_eq!(mock.state.handshakes(), 2);
}

#[tokio::test]
async fn a_connection_that_was_never_made_is_not_an_unknown_outcome() {
    // A session saved for a server that is no longer listening: the connect fails
    // before any byte of the request is sent, so nothing can have been executed.
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    drop(client);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["base_url"] = Value::String(dead.clone());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let client = Client::builder(&dead, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert!(
        client.session_info().await.is_some(),
        "the session file was used"
    );
    let err = client.post("/notes").body("x").send().await.unwrap_err();
    match &err {
        ClientError::Http(h) => assert!(h.is_connect(), "{err:?}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(!err.is_outcome_unknown());
}

#[tokio::test]
async fn other_failures_after_sending_are_unknown_outcomes_and_never_re_sent() {
    let mock = Mock::start().await;
    let client = connect(&mock).await;
    mock.state.set_behavior(Behavior {
        tamper_body: true,
        ..Default::default()
    });
    // A tampered answer hides one that ran: an unknown outcome, not a plain failure.
    let err = client.post("/notes").body("t").send().await.unwrap_err();
    assert!(err.is_outcome_unknown() && err.is_bad_seal(), "{err:?}");
    assert_eq!(executed(&mock, "POST", "/notes"), 1);
    mock.state.set_behavior(Behavior::default());
    // A refusal that is not about the session is not a reason to re-send anything; for a
    // POST it is an unknown outcome too (it may be forged after the request ran) ...
    let err = client.post("/limited").send().await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    match &err {
        ClientError::OutcomeUnknown { cause, .. } => {
            assert_eq!(cause.code(), Some(ErrorCode::RateLimited), "{err:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(executed(&mock, "POST", "/limited"), 1);
    // ... while an idempotent request gets the refusal itself.
    let err = client.get("/limited").send().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err:?}");
    // Each unknown outcome closed its session (settled) and the next request
    // handshook anew; the idempotent one kept its session.
    assert_eq!(
        mock.state.closes.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert_eq!(mock.state.handshakes(), 3);
}
