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

/// Spellings of an origin a server must refuse as `malformed` (PROTOCOL §8.2) in
/// `sessioncert-target` and as a full-mode request's `scheme://authority`.
const NON_CANONICAL: &[&str] = &[
    "http://127.0.0.1:80",
    "https://api.example.com:443",
    "http://127.0.0.1:0080",
    "http://127.0.0.1:08080",
    "http://127.0.0.1:",
    "http://127.0.0.1:0",
    "http://127.0.0.1:65536",
    "https://api.example.com.",
    "https://.api.example.com",
    "https://api..example.com",
    "https://API.example.com",
    "https://api.Example.com",
    "HTTPS://api.example.com",
    "Http://127.0.0.1:8080",
    "https://api.example.com/",
    "https://api.example.com/x",
    "https://user@api.example.com",
    "https://api.example.com?q",
    "http://127.000.0.1",
    "http://0x7f.0.0.1",
    "http://[0:0:0:0:0:0:0:1]",
    "http://[::1]:80",
    "http://[::1]:",
    "http://[::FFFF:102:304]",
    "ftp://api.example.com",
    "https://",
    "api.example.com",
];

/// Canonical spellings: accepted when no public origins are configured.
const CANONICAL: &[&str] = &[
    "https://api.example.com",
    "https://api.example.com:8443",
    "http://api.example.com",
    "http://127.0.0.1:8080",
    "http://127.0.0.1",
    "https://127.0.0.1:80",
    "http://[::1]:8080",
    "https://[2001:db8::1]",
    "https://xn--bcher-kva.example",
];

/// A server with `public` as its configured public origins (none: any origin).
async fn server_with_origins(public: &[&str]) -> (String, sessioncert_proto::Pin) {
    let keys = ServerKeys::ephemeral(now_ms()).unwrap();
    let pin = keys.pin();
    let mut b =
        sessioncert_server::SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new()))
            .limits(generous());
    if !public.is_empty() {
        b = b.public_origins(public.iter().copied()).unwrap();
    }
    let app = b.build().await.unwrap().router(sealed_routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    (base, pin)
}

/// Sends a header-mode `POST /apiTest` (which counts executions by body) sealed for (and
/// naming) `target`.
async fn header_mode(c: &mut RawClient, target: &str) -> reqwest::Response {
    let body = format!("header {target}");
    let s = c.seal_for(target, "POST", "/apiTest", "text/plain", body.as_bytes());
    c.send_raw(&s).await
}

/// Sends a full-mode `GET /headers` whose Binary HTTP request names `origin`
/// (`scheme://authority`, split at the first `://`; no `://` means an empty scheme).
async fn full_mode(
    c: &mut RawClient,
    origin: &str,
) -> (reqwest::Response, sessioncert_proto::ResponseExpectation) {
    let (scheme, authority) = origin.split_once("://").unwrap_or(("", origin));
    c.send_full(&sessioncert_proto::full::FullRequest {
        method: "GET".into(),
        scheme: scheme.into(),
        authority: authority.into(),
        path: "/headers".into(),
        headers: vec![],
        body: vec![],
    })
    .await
}

/// Opens a full-mode answer: the inner status and what the handler saw.
async fn open_full(
    c: &mut RawClient,
    expect: &sessioncert_proto::ResponseExpectation,
    r: reqwest::Response,
) -> (u16, serde_json::Value) {
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    assert_eq!(
        r.headers()[SESSION_HEADER].to_str().unwrap(),
        c.session.id().to_string(),
        "a full-mode response names its session"
    );
    let body = r.bytes().await.unwrap();
    let plain = c
        .session
        .open_response(expect, &ResponseBinding::Full, &body)
        .unwrap();
    let inner = sessioncert_proto::full::FullResponse::decode(&plain).unwrap();
    (inner.status, serde_json::from_slice(&inner.body).unwrap())
}

#[tokio::test]
async fn non_canonical_targets_are_malformed_with_or_without_public_origins() {
    for public in [&[][..], &["https://api.example.com"][..]] {
        let (base, pin) = server_with_origins(public).await;
        let mut c = RawClient::connect(&base, pin).await;
        for bad in NON_CANONICAL {
            let r = header_mode(&mut c, bad).await;
            assert_eq!(
                error_code(r).await,
                (400, "malformed".into()),
                "target {bad:?}, public origins {public:?}"
            );
            assert_eq!(executions(format!("header {bad}").as_bytes()), 0);
        }
    }
    // Without public origins every canonical spelling is served, and the handler sees
    // its authority as Host.
    let (base, pin) = server_with_origins(&[]).await;
    let mut c = RawClient::connect(&base, pin).await;
    for good in CANONICAL {
        let s = c.seal_for(good, "POST", "/headers", "text/plain", b"");
        let r = c.send_raw(&s).await;
        let (status, body) = c
            .open(&s, r)
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(status, 200, "{good}");
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["host"], good.split_once("://").unwrap().1, "{good}");
    }
    // With public origins: the canonical configured one is served, another is
    // misdirected.
    let (base, pin) = server_with_origins(&["https://api.example.com"]).await;
    let mut c = RawClient::connect(&base, pin).await;
    let s = c.seal_for("https://api.example.com", "POST", "/headers", "", b"");
    let r = c.send_raw(&s).await;
    assert_eq!(c.open(&s, r).await.unwrap().0, 200);
    let r = header_mode(&mut c, "https://api.example.com:8443").await;
    assert_eq!(error_code(r).await, (421, "misdirected".into()));
}

#[tokio::test]
async fn full_mode_inner_origins_are_checked_like_targets() {
    for public in [&[][..], &["https://api.example.com"][..]] {
        let (base, pin) = server_with_origins(public).await;
        let mut c = RawClient::connect(&base, pin).await;
        for bad in NON_CANONICAL.iter().chain(&["https://", "http://"]) {
            let (r, _) = full_mode(&mut c, bad).await;
            assert_eq!(
                error_code(r).await,
                (400, "malformed".into()),
                "inner origin {bad:?}, public origins {public:?}"
            );
        }
    }
    let (base, pin) = server_with_origins(&[]).await;
    let mut c = RawClient::connect(&base, pin).await;
    for good in CANONICAL {
        let (r, expect) = full_mode(&mut c, good).await;
        let (status, seen) = open_full(&mut c, &expect, r).await;
        assert_eq!(status, 200, "{good}");
        assert_eq!(seen["host"], good.split_once("://").unwrap().1, "{good}");
    }
    // Public origins are compared exactly: only the configured spelling passes.
    let (base, pin) = server_with_origins(&["https://api.example.com"]).await;
    let mut c = RawClient::connect(&base, pin).await;
    let (r, expect) = full_mode(&mut c, "https://api.example.com").await;
    let (status, seen) = open_full(&mut c, &expect, r).await;
    assert_eq!(
        (status, seen["host"].as_str()),
        (200, Some("api.example.com"))
    );
    let (r, _) = full_mode(&mut c, "http://api.example.com").await;
    assert_eq!(error_code(r).await, (421, "misdirected".into()));
}
