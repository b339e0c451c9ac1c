//! A real upstream (a small axum app on a free port) and a real gateway in front of it,
//! both on 127.0.0.1, for the gateway's tests.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use sessioncert_client::{Client, Pin, Trust};
use sessioncert_gateway::{Gateway, GatewayConfig, RoutePolicy, UpstreamOptions};
use sessioncert_server::listener::{serve, ListenerLimits};
use sessioncert_server::{now_ms, ServerKeys, SessionCert};
use sessioncert_store::MemoryStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the upstream records.
#[derive(Clone, Default)]
pub struct Log {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of `PUT /upload` bodies received so far.
    pub uploaded: Arc<AtomicU64>,
}

impl Log {
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.all().pop().expect("the upstream saw a request")
    }

    pub fn paths(&self) -> Vec<String> {
        self.all().into_iter().map(|s| s.uri).collect()
    }
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in h {
        m.entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    json!(m)
}

/// Every path not routed below: records the request and echoes it as JSON.
async fn echo(axum::extract::State(log): axum::extract::State<Log>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    log.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let mut r = Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers_json(&parts.headers),
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response();
    // A header of its own, and ones an upstream must not get through: a hop-by-hop one
    // and one posing as the protocol's.
    let h = r.headers_mut();
    h.insert("x-upstream", "echo".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("sessioncert-error", "rejected".parse().unwrap());
    r
}

#[derive(serde::Deserialize)]
struct SseParams {
    n: u32,
    interval_ms: u64,
}

/// `n` server-sent events, one every `interval_ms`.
async fn sse(Query(p): Query<SseParams>) -> Response {
    let stream = futures_util::stream::unfold(0u32, move |i| async move {
        if i == p.n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(p.interval_ms)).await;
        }
        let ev = format!("data: {{\"i\":{i}}}\n\n");
        Some((Ok::<_, std::io::Error>(Bytes::from(ev)), i + 1))
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct SlowParams {
    ms: u64,
}

async fn slow(Query(p): Query<SlowParams>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    "late"
}

#[derive(serde::Deserialize)]
struct CutParams {
    /// Announced length.
    len: usize,
    /// Bytes actually sent before the body fails.
    sent: usize,
}

/// Announces `len` bytes, sends `sent` of them, then fails the body.
async fn cut(Query(p): Query<CutParams>) -> Response {
    let piece = 16 * 1024;
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let mut left = p.sent;
    while left > 0 {
        let n = left.min(piece);
        chunks.push(Ok(Bytes::from(vec![b'c'; n])));
        left -= n;
    }
    chunks.push(Err(std::io::Error::other("upstream broke")));
    let stream = futures_util::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        c
    });
    (
        [
            ("content-type", "application/octet-stream".to_owned()),
            ("content-length", p.len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

use futures_util::StreamExt as _;

#[derive(serde::Deserialize)]
struct DownloadParams {
    bytes: usize,
}

/// `bytes` bytes (byte `i` is `i % 251`), produced 64 KiB at a time as they are read.
async fn download(Query(p): Query<DownloadParams>) -> Response {
    let piece = 64 * 1024;
    let stream = futures_util::stream::unfold(0usize, move |at| async move {
        if at >= p.bytes {
            return None;
        }
        let n = piece.min(p.bytes - at);
        let data: Vec<u8> = (at..at + n).map(|i| (i % 251) as u8).collect();
        Some((Ok::<_, std::io::Error>(Bytes::from(data)), at + n))
    });
    (
        [("content-type", "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Counts the bytes of the body as they arrive (visible in `Log::uploaded` at once) and
/// answers how many there were and a checksum of their pattern.
async fn upload(
    axum::extract::State(log): axum::extract::State<Log>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    let mut sum = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("body failed: {e}")).into_response()
            }
        };
        for b in piece.iter() {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        n += piece.len() as u64;
        log.uploaded.fetch_add(piece.len() as u64, Ordering::SeqCst);
    }
    Json(json!({
        "bytes": n,
        "sum": sum,
        "content_length": headers.get("content-length").map(|v| v.to_str().unwrap().to_owned()),
        "transfer_encoding": headers.get("transfer-encoding").map(|v| v.to_str().unwrap().to_owned()),
    }))
    .into_response()
}

/// The checksum `upload` computes.
pub fn checksum(data: impl IntoIterator<Item = u8>) -> u64 {
    data.into_iter()
        .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub log: Log,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub async fn upstream() -> Upstream {
    upstream_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
}

pub fn upstream_on(listener: tokio::net::TcpListener) -> Upstream {
    let log = Log::default();
    let app = Router::new()
        .route("/sse", get(sse))
        .route("/slow", get(slow))
        .route("/cut", get(cut))
        .route("/upload", put(upload))
        .route("/download", get(download))
        .fallback(echo)
        .with_state(log.clone());
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Upstream { addr, log }
}

/// A port nothing listens on (a moment ago).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway.
pub struct Gw {
    pub base: String,
    pub addr: SocketAddr,
    pub pin: Pin,
    pub gateway: Gateway,
    pub sc: SessionCert,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Gw {
    pub async fn client(&self) -> Client {
        Client::connect(&self.base, Trust::Pin(self.pin))
            .await
            .expect("handshake with the gateway")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A gateway in front of `upstream` with `policy` and `options`.
pub async fn gateway(upstream: &str, policy: RoutePolicy, options: UpstreamOptions) -> Gw {
    gateway_with(
        upstream,
        policy,
        options,
        sessioncert_server::Limits::default(),
    )
    .await
}

pub async fn gateway_with(
    upstream: &str,
    policy: RoutePolicy,
    options: UpstreamOptions,
    limits: sessioncert_server::Limits,
) -> Gw {
    gateway_full(upstream, policy, options, limits, ListenerLimits::default()).await
}

pub async fn gateway_full(
    upstream: &str,
    policy: RoutePolicy,
    options: UpstreamOptions,
    limits: sessioncert_server::Limits,
    listener_limits: ListenerLimits,
) -> Gw {
    gateway_built(upstream, policy, options, limits, listener_limits, false).await
}

/// A gateway that also serves legacy Session-Cert clients (`--legacy-session-cert`).
pub async fn gateway_legacy(upstream: &str, policy: RoutePolicy) -> Gw {
    gateway_built(
        upstream,
        policy,
        UpstreamOptions::default(),
        sessioncert_server::Limits::default(),
        ListenerLimits::default(),
        true,
    )
    .await
}

async fn gateway_built(
    upstream: &str,
    policy: RoutePolicy,
    options: UpstreamOptions,
    limits: sessioncert_server::Limits,
    listener_limits: ListenerLimits,
    legacy: bool,
) -> Gw {
    let keys = ServerKeys::ephemeral(now_ms()).unwrap();
    let pin = keys.pin();
    let mut builder =
        SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new())).limits(limits);
    if legacy {
        builder = builder.legacy_session_cert(Default::default());
    }
    let sc = builder.build().await.unwrap();
    let gateway = Gateway::new(GatewayConfig {
        upstream: upstream.parse().unwrap(),
        options,
        policy,
        tls: false,
    });
    let app = gateway.router(&sc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, listener_limits, async {
        let _ = stopped.await;
    }));
    Gw {
        base: format!("http://{addr}"),
        addr,
        pin,
        gateway,
        sc,
        _stop: stop,
    }
}

/// One HTTP/1.1 request on its own connection, written as given: status, headers, body.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    // Interim answers (100 Continue) first: the final one is what counts.
    while text.starts_with("HTTP/1.1 1") {
        match text.split_once("\r\n\r\n") {
            Some((_, rest)) => text = rest.to_owned(),
            None => break,
        }
    }
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), rest.as_bytes().to_vec())
}
