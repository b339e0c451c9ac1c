//! A real server on 127.0.0.1 and a raw protocol client for tests that need to reach
//! inside the messages (flip bytes, replay, reorder).
#![allow(dead_code)]

pub mod streams;

use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use sessioncert_proto::record::RequestLine;
use sessioncert_proto::wire::*;
use sessioncert_proto::{
    ClientHandshake, ClientOffer, ClientSession, Pin, RequestBinding, ResponseBinding,
    ResponseExpectation, SignedKeyConfig, Trust, VerifiedKeyConfig,
};
use sessioncert_server::{now_ms, Limits, ServerKeys, SessionCert, Timing};
use sessioncert_store::SessionStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often each request body reached a handler, across every test server in this
/// test binary (tests use unique bodies).
static EXECUTIONS: std::sync::Mutex<Option<std::collections::HashMap<Vec<u8>, usize>>> =
    std::sync::Mutex::new(None);

/// How many times a handler ran with exactly this body.
pub fn executions(body: &[u8]) -> usize {
    EXECUTIONS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(body).copied())
        .unwrap_or(0)
}

pub async fn echo(body: Bytes) -> Json<serde_json::Value> {
    *EXECUTIONS
        .lock()
        .unwrap()
        .get_or_insert_with(Default::default)
        .entry(body.to_vec())
        .or_default() += 1;
    let data = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    Json(serde_json::json!({"status": true, "message": "ok", "requestData": data}))
}

/// Echoes what a handler sees of the request's headers (for binding tests).
pub async fn seen_headers(headers: http::HeaderMap) -> Json<serde_json::Value> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(serde_json::json!({
        "host": get("host"),
        "authorization": get("authorization"),
        "cookie": get("cookie"),
        "x-tenant": get("x-tenant"),
        "transfer-encoding": get("transfer-encoding"),
        "sessioncert": headers.keys().any(|k| k.as_str().starts_with("sessioncert-")),
    }))
}

pub fn sealed_routes() -> Router {
    Router::new()
        .route("/headers", get(seen_headers).post(seen_headers))
        .route("/apiTest", post(echo))
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(c): axum::extract::Path<u16>| async move {
                    (http::StatusCode::from_u16(c).unwrap(), "status body")
                },
            ),
        )
}

pub struct TestServer {
    pub base: String,
    pub sc: SessionCert,
    pub pin: Pin,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(keys: ServerKeys, store: Arc<dyn SessionStore>, limits: Limits) -> Self {
        Self::start_with(keys, store, limits, Timing::default(), Default::default()).await
    }

    pub async fn start_with(
        keys: ServerKeys,
        store: Arc<dyn SessionStore>,
        limits: Limits,
        timing: Timing,
        policy: sessioncert_proto::ServerPolicy,
    ) -> Self {
        Self::start_routes(keys, store, limits, timing, policy, sealed_routes()).await
    }

    /// As [`TestServer::start_with`], serving `routes` sealed.
    pub async fn start_routes(
        keys: ServerKeys,
        store: Arc<dyn SessionStore>,
        limits: Limits,
        timing: Timing,
        policy: sessioncert_proto::ServerPolicy,
        routes: Router,
    ) -> Self {
        let pin = keys.pin();
        let sc = SessionCert::builder(Arc::new(keys), store)
            .limits(limits)
            .timing(timing)
            .policy(policy)
            .build()
            .await
            .unwrap();
        let app = sc.router(routes).route("/plain/apiTest", post(echo));
        let (base, task, tx) = serve_app(app).await;
        TestServer {
            base,
            sc,
            pin,
            task,
            stop: Some(tx),
        }
    }

    /// POSTs raw bytes to the handshake endpoint, as an attacker or a custom client would.
    pub async fn post_hello(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{HANDSHAKE_PATH}", self.base))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Stops accepting, then persists sessions and records a clean shutdown.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.sc.shutdown().await.unwrap();
    }
}

/// Serves `app` on a free 127.0.0.1 port (peer addresses passed to handlers) until the
/// sender is used or dropped: the base URL, the server's task, the stop sender.
pub async fn serve_app(
    app: Router,
) -> (
    String,
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), task, tx)
}

pub fn generous() -> Limits {
    Limits {
        handshakes_per_sec: 1e6,
        handshake_burst: 1e6,
        max_sessions_per_addr: 1_000_000,
        ..Limits::default()
    }
}

/// A sealed request as it would go on the wire.
pub struct Sealed {
    pub method: http::Method,
    /// The origin the record is bound to (`sessioncert-target`).
    pub target: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub record: Vec<u8>,
    pub expect: ResponseExpectation,
}

/// A protocol-level client on reqwest, for tests that tamper with messages.
pub struct RawClient {
    pub http: reqwest::Client,
    pub base: String,
    pub config: VerifiedKeyConfig,
    pub session: ClientSession,
}

impl RawClient {
    pub async fn fetch_config(http: &reqwest::Client, base: &str, pin: Pin) -> VerifiedKeyConfig {
        let b = http
            .get(format!("{base}{CONFIG_PATH}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        SignedKeyConfig::decode(&b)
            .unwrap()
            .verify(&Trust::Pin(pin), now_ms())
            .unwrap()
    }

    pub async fn connect(base: &str, pin: Pin) -> Self {
        Self::connect_with(base, pin, ClientOffer::default()).await
    }

    pub async fn connect_with(base: &str, pin: Pin, offer: ClientOffer) -> Self {
        let http = reqwest::Client::new();
        let config = Self::fetch_config(&http, base, pin).await;
        let (hs, hello) = ClientHandshake::start(&config, offer, now_ms()).unwrap();
        let r = http
            .post(format!("{base}{HANDSHAKE_PATH}"))
            .body(hello)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (uc, _) = hs.read_server_hello(&r.bytes().await.unwrap()).unwrap();
        let r = http
            .post(format!("{base}{CONFIRM_PATH}"))
            .header(SESSION_HEADER, uc.id().to_string())
            .body(uc.confirmation().to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        RawClient {
            http,
            base: base.to_owned(),
            config,
            session: uc.confirmed(),
        }
    }

    pub fn seal(&mut self, method: &str, path_query: &str, ct: &str, body: &[u8]) -> Sealed {
        let target = self.base.clone();
        self.seal_for(&target, method, path_query, ct, body)
    }

    /// Seals a header-mode request bound to the origin `target`.
    pub fn seal_for(
        &mut self,
        target: &str,
        method: &str,
        path_query: &str,
        ct: &str,
        body: &[u8],
    ) -> Sealed {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let (record, expect) = self
            .session
            .seal_request(
                &RequestBinding::Header(RequestLine {
                    method,
                    target,
                    path,
                    query,
                    content_type: ct,
                    covered: &[],
                }),
                body,
            )
            .unwrap();
        Sealed {
            target: target.to_owned(),
            method: method.parse().unwrap(),
            path: path.into(),
            query: query.into(),
            content_type: ct.into(),
            record,
            expect,
        }
    }

    /// Sends a sealed request exactly as given (possibly tampered).
    pub async fn send_raw(&self, s: &Sealed) -> reqwest::Response {
        let url = if s.query.is_empty() {
            format!("{}{}", self.base, s.path)
        } else {
            format!("{}{}?{}", self.base, s.path, s.query)
        };
        let mut rb = self
            .http
            .request(s.method.clone(), url)
            .header(SESSION_HEADER, self.session.id().to_string())
            .header(TARGET_HEADER, s.target.as_str())
            .header("content-type", SEALED_CONTENT_TYPE)
            .body(s.record.clone());
        if !s.content_type.is_empty() {
            rb = rb.header(CONTENT_TYPE_HEADER, s.content_type.as_str());
        }
        rb.send().await.unwrap()
    }

    /// Seals a full-mode request and posts it to the full-request endpoint.
    pub async fn send_full(
        &mut self,
        req: &sessioncert_proto::full::FullRequest,
    ) -> (reqwest::Response, ResponseExpectation) {
        let (record, expect) = self
            .session
            .seal_request(&RequestBinding::Full, &req.encode())
            .unwrap();
        let r = self
            .http
            .post(format!("{}{FULL_PATH}", self.base))
            .header(SESSION_HEADER, self.session.id().to_string())
            .header("content-type", SEALED_CONTENT_TYPE)
            .body(record)
            .send()
            .await
            .unwrap();
        (r, expect)
    }

    /// Opens a response to `s`.
    pub async fn open(
        &mut self,
        s: &Sealed,
        r: reqwest::Response,
    ) -> Result<(u16, Vec<u8>), String> {
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let body = r.bytes().await.unwrap();
        self.open_parts(s, status, &headers, &body)
    }

    /// Opens a response to `s` given as status, headers and body.
    pub fn open_parts(
        &mut self,
        s: &Sealed,
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        if let Some(code) = headers.get(ERROR_HEADER) {
            return Err(format!("{status} {}", code.to_str().unwrap()));
        }
        let ct = headers
            .get(CONTENT_TYPE_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        // A session that negotiated streams may be answered with one.
        streams::open_response(
            &mut self.session,
            &s.expect,
            &ResponseBinding::Header {
                status,
                content_type: &ct,
            },
            body,
        )
        .map(|b| (status, b))
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let s = self.seal(method, path, "application/json", body);
        let r = self.send_raw(&s).await;
        self.open(&s, r).await
    }
}

pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let code = r
        .headers()
        .get(ERROR_HEADER)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, code)
}
