//! What a header-mode request binds besides its body (PROTOCOL §8.2, §13): the origin it
//! was sealed for, the headers it covers, and `HEAD`; and what reaches handlers.

mod common;

use common::*;
use sessioncert_proto::wire::*;
use sessioncert_proto::{RequestBinding, RequestLine, ResponseBinding};
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

struct Raw {
    record: Vec<u8>,
    expect: sessioncert_proto::ResponseExpectation,
}

fn seal(
    c: &mut RawClient,
    method: &str,
    path: &str,
    target: &str,
    covered: &[(&str, &str)],
) -> Raw {
    let (record, expect) = c
        .session
        .seal_request(
            &RequestBinding::Header(RequestLine {
                method,
                target,
                path,
                query: "",
                content_type: "",
                covered,
            }),
            b"",
        )
        .unwrap();
    Raw { record, expect }
}

fn request(
    c: &RawClient,
    method: http::Method,
    path: &str,
    target: &str,
    raw: &Raw,
) -> reqwest::RequestBuilder {
    c.http
        .request(method, format!("{}{path}", c.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header(TARGET_HEADER, target)
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(raw.record.clone())
}

async fn open_json(c: &mut RawClient, raw: &Raw, r: reqwest::Response) -> serde_json::Value {
    let status = r.status().as_u16();
    assert!(
        r.headers().get(ERROR_HEADER).is_none(),
        "refused: {:?}",
        r.headers()
    );
    let ct = r.headers()[CONTENT_TYPE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.bytes().await.unwrap();
    let plain = c
        .session
        .open_response(
            &raw.expect,
            &ResponseBinding::Header {
                status,
                content_type: &ct,
            },
            &body,
        )
        .unwrap();
    serde_json::from_slice(&plain).unwrap()
}

#[tokio::test]
async fn the_target_origin_is_bound_and_checked_against_public_origins() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    // Sealed for one origin, presented as another: rejected.
    let raw = seal(&mut c, "GET", "/headers", "https://api.example.com", &[]);
    let r = request(
        &c,
        http::Method::GET,
        "/headers",
        "http://api.example.com",
        &raw,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(error_code(r).await, (400, "rejected".into()));
    // No target at all: malformed.
    let raw = seal(&mut c, "GET", "/headers", "https://api.example.com", &[]);
    let r = c
        .http
        .get(format!("{}/headers", c.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header("content-type", SEALED_CONTENT_TYPE)
        .body(raw.record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "malformed".into()));
    // Any origin is accepted when none is configured; the handler sees it as Host,
    // whatever Host the connection carried.
    let raw = seal(&mut c, "GET", "/headers", "https://api.example.com", &[]);
    let r = request(
        &c,
        http::Method::GET,
        "/headers",
        "https://api.example.com",
        &raw,
    )
    .send()
    .await
    .unwrap();
    let seen = open_json(&mut c, &raw, r).await;
    assert_eq!(seen["host"], "api.example.com");
    assert_eq!(seen["sessioncert"], false);

    // With public origins configured, another origin is misdirected and never runs.
    let keys = ServerKeys::ephemeral(now_ms()).unwrap();
    let pin = keys.pin();
    let sc = sessioncert_server::SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new()))
        .limits(generous())
        .public_origins(["https://api.example.com"])
        .unwrap()
        .build()
        .await
        .unwrap();
    let app = sc.router(sealed_routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut c = RawClient::connect(&base, pin).await;
    let body = b"{\"misdirected\":1}";
    let s = c.seal_for(
        "https://other.example.com",
        "POST",
        "/apiTest",
        "application/json",
        body,
    );
    assert_eq!(
        error_code(c.send_raw(&s).await).await,
        (421, "misdirected".into())
    );
    assert_eq!(executions(body), 0);
    let s = c.seal_for(
        "https://api.example.com",
        "POST",
        "/apiTest",
        "application/json",
        b"{}",
    );
    assert_eq!(c.send_raw(&s).await.status(), 200);
    // Configuration errors are refused up front.
    assert!(sessioncert_server::SessionCert::builder(
        Arc::new(ServerKeys::ephemeral(now_ms()).unwrap()),
        Arc::new(MemoryStore::new())
    )
    .public_origins(["api.example.com"])
    .is_err());
}

#[tokio::test]
async fn covered_headers_are_bound_and_only_bound_credentials_reach_handlers() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let t = srv.base.clone();
    let covered = [("authorization", "Bearer good"), ("x-tenant", "a, b")];
    // Bound: the handler sees them; the unbound cookie and the framing header do not.
    let raw = seal(&mut c, "GET", "/headers", &t, &covered);
    let r = request(&c, http::Method::GET, "/headers", &t, &raw)
        .header(COVERED_HEADER, "authorization, x-tenant")
        .header("authorization", "Bearer good")
        .header("x-tenant", "a")
        .header("x-tenant", "b")
        .header("cookie", "sid=stolen")
        .send()
        .await
        .unwrap();
    let seen = open_json(&mut c, &raw, r).await;
    assert_eq!(seen["authorization"], "Bearer good");
    assert_eq!(seen["x-tenant"], "a");
    assert_eq!(seen["cookie"], serde_json::Value::Null);
    // An unbound Authorization never reaches the handler.
    let raw = seal(&mut c, "GET", "/headers", &t, &[]);
    let r = request(&c, http::Method::GET, "/headers", &t, &raw)
        .header("authorization", "Bearer injected")
        .send()
        .await
        .unwrap();
    let seen = open_json(&mut c, &raw, r).await;
    assert_eq!(seen["authorization"], serde_json::Value::Null);
    // Changed value, reordered list, dropped name: each refused.
    for (list, auth, tenant) in [
        ("authorization, x-tenant", "Bearer evil", vec!["a", "b"]),
        ("x-tenant, authorization", "Bearer good", vec!["a", "b"]),
        ("authorization", "Bearer good", vec!["a", "b"]),
        ("authorization, x-tenant", "Bearer good", vec!["b", "a"]),
    ] {
        let raw = seal(&mut c, "GET", "/headers", &t, &covered);
        let mut rb = request(&c, http::Method::GET, "/headers", &t, &raw)
            .header(COVERED_HEADER, list)
            .header("authorization", auth);
        for v in tenant {
            rb = rb.header("x-tenant", v);
        }
        assert_eq!(
            error_code(rb.send().await.unwrap()).await,
            (400, "rejected".into()),
            "{list} {auth}"
        );
    }
}

#[tokio::test]
async fn head_carries_its_records_in_headers() {
    let srv = server().await;
    let mut c = RawClient::connect(&srv.base, srv.pin).await;
    let t = srv.base.clone();
    let raw = seal(&mut c, "HEAD", "/headers", &t, &[]);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let r = c
        .http
        .head(format!("{}/headers", c.base))
        .header(SESSION_HEADER, c.session.id().to_string())
        .header(TARGET_HEADER, t.as_str())
        .header("content-type", SEALED_CONTENT_TYPE)
        .header(RECORD_HEADER, b64.encode(&raw.record))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 200);
    let ct = r.headers()[CONTENT_TYPE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let record = b64.decode(r.headers()[RECORD_HEADER].as_bytes()).unwrap();
    assert!(r.bytes().await.unwrap().is_empty());
    let plain = c
        .session
        .open_response(
            &raw.expect,
            &ResponseBinding::Header {
                status,
                content_type: &ct,
            },
            &record,
        )
        .unwrap();
    assert!(plain.is_empty(), "a HEAD response has no body to seal");
}

#[tokio::test]
async fn the_rust_client_binds_its_origin_credentials_and_head() {
    let srv = server().await;
    let client =
        sessioncert_client::Client::connect(&srv.base, sessioncert_proto::Trust::Pin(srv.pin))
            .await
            .unwrap();
    let r = client
        .get("/headers")
        .header("authorization", "Bearer from-client")
        .header("x-tenant", "t1")
        .cover("x-tenant")
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = r.json().unwrap();
    assert_eq!(seen["authorization"], "Bearer from-client");
    assert_eq!(seen["x-tenant"], "t1");
    assert_eq!(seen["host"], srv.base.trim_start_matches("http://"));
    let r = client
        .request(http::Method::HEAD, "/headers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().is_empty());
}
