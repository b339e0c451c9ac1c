//! A small sessioncert server for the client's tests, built directly on
//! `sessioncert_proto` and axum. It is not the real server: it implements just enough of
//! the HTTP binding, plus switches to misbehave, and counts what it sees.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use sessioncert_proto::config::{PublishedKey, HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::{
    respond, wire, ClientSession, ErrorCode, HandshakeKeyPair, IdentityKey, KeyConfig,
    PendingServerSession, Pin, RequestBinding, RequestLine, ResponseBinding, ServerPolicy,
    ServerSession, SessionId, Suite,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Ways the mock can misbehave.
#[derive(Debug, Default, Clone)]
pub struct Behavior {
    /// Answer sealed requests with a plaintext 200.
    pub plaintext_reply: bool,
    /// Flip a bit in the sealed response body.
    pub tamper_body: bool,
    /// Send a different status than the one sealed.
    pub tamper_status: bool,
    /// Forget every session on every sealed request (always 401 unknown_session).
    pub forget_always: bool,
    /// Header mode: send the sealed response as HTTP 200 with these
    /// `sessioncert-status` lines (as a server does for 204/205/304, or not).
    pub status_lines: Vec<&'static str>,
}

/// One sealed request the mock opened, i.e. that its "handler" executed.
#[derive(Debug, Clone)]
pub struct Executed {
    pub session: SessionId,
    pub seq: u64,
    /// The inner method (full mode: the sealed one).
    pub method: String,
    /// The path relative to the prefix (full mode: the sealed one).
    pub path: String,
    pub body: Vec<u8>,
}

/// One request the mock saw on a protected (non-handshake) route.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Vec<u8>,
}

pub struct MockState {
    pub prefix: String,
    pub identity: IdentityKey,
    keys: Mutex<Vec<HandshakeKeyPair>>,
    pub config: Mutex<Vec<u8>>,
    pub policy: Mutex<ServerPolicy>,
    pending: Mutex<HashMap<SessionId, PendingServerSession>>,
    sessions: Mutex<HashMap<SessionId, ServerSession>>,
    pub behavior: Mutex<Behavior>,
    pub seen: Mutex<Vec<Seen>>,
    /// Every sealed request that was opened and executed.
    pub executed: Mutex<Vec<Executed>>,
    /// Every refusal sent on a protected route (a replay gets `rejected`).
    pub refusals: Mutex<Vec<ErrorCode>>,
    /// The next this-many sealed requests are executed normally, and then — like an
    /// attacker on the path who forwarded the request and dropped the answer — the
    /// client gets a forged, unauthenticated `401 session_expired` instead of the
    /// sealed response. The session stays valid on the server.
    pub forge_expired_after_execute: AtomicUsize,
    /// If set, every sealed request checks that this session file already holds a
    /// `next_seq` beyond the request's sequence number (persist-before-send).
    pub check_file: Mutex<Option<PathBuf>>,
    pub file_violations: AtomicUsize,
    pub file_checks: AtomicUsize,
    pub config_fetches: AtomicUsize,
    pub handshakes: AtomicUsize,
    pub confirms: AtomicUsize,
    pub protected_hits: AtomicUsize,
    pub closes: AtomicUsize,
}

impl MockState {
    pub fn pin(&self) -> Pin {
        self.identity.pin()
    }

    pub fn forget_all_sessions(&self) {
        self.sessions.lock().unwrap().clear();
        // A restarted server cannot open the tickets it issued before either.
        self.pending.lock().unwrap().clear();
    }

    /// Runs `f` on the session the sealed request with `headers` names (confirming it
    /// from `sessioncert-confirm` first, as every protected route does).
    pub fn with_session<R>(
        &self,
        headers: &HeaderMap,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Result<R, ErrorCode> {
        let id = check_sealed_headers(headers)?;
        let mut sessions = self.sessions.lock().unwrap();
        confirm_from_header(self, headers, &id, &mut sessions);
        let s = sessions.get_mut(&id).ok_or(ErrorCode::UnknownSession)?;
        Ok(f(s))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    pub fn protected_hits(&self) -> usize {
        self.protected_hits.load(Ordering::SeqCst)
    }

    /// How many times a sealed request to `path` (relative to the prefix) was executed.
    pub fn executions(&self, path: &str) -> usize {
        self.executed
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.path == path)
            .count()
    }

    /// Arms the forged-refusal attack for the next `n` sealed requests.
    pub fn forge_expired_after_execute(&self, n: usize) {
        self.forge_expired_after_execute.store(n, Ordering::SeqCst);
    }

    /// Consumes one armed forgery, if any.
    fn take_forgery(&self) -> bool {
        self.forge_expired_after_execute
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }

    /// Replaces the handshake key with a new one (new id) and re-signs the config.
    pub fn rotate_key(&self) {
        let mut keys = self.keys.lock().unwrap();
        let next_id = keys.iter().map(|k| k.key_id).max().unwrap_or(0) + 1;
        *keys = vec![HandshakeKeyPair::generate(next_id, 0, u64::MAX).unwrap()];
        *self.config.lock().unwrap() = sign_config(&self.identity, &keys);
    }
}

fn sign_config(identity: &IdentityKey, keys: &[HandshakeKeyPair]) -> Vec<u8> {
    KeyConfig {
        identity: identity.pin(),
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + sessioncert_proto::config::CONFIG_VALIDITY_MS,
        versions: vec![VERSION_1],
        record_suites: Suite::ALL.iter().map(|s| s.id()).collect(),
        keys: keys
            .iter()
            .map(|k| PublishedKey {
                key_id: k.key_id,
                hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                public: k.public().to_vec(),
                not_before_ms: k.not_before_ms,
                not_after_ms: k.not_after_ms,
            })
            .collect(),
    }
    .sign(identity)
    .unwrap()
    .encode()
}

pub struct Mock {
    pub state: Arc<MockState>,
    pub addr: std::net::SocketAddr,
    /// Base URL including the prefix.
    pub base: String,
}

#[derive(Default)]
pub struct MockOptions {
    pub prefix: String,
    pub identity_seed: Option<[u8; 32]>,
    pub policy: Option<ServerPolicy>,
    /// Routes tried before the mock's own (streaming tests add theirs).
    pub routes: Option<Router<Arc<MockState>>>,
}

impl Mock {
    pub async fn start() -> Mock {
        Self::start_with(MockOptions::default()).await
    }

    pub async fn start_with(opts: MockOptions) -> Mock {
        let identity = match opts.identity_seed {
            Some(s) => IdentityKey::from_seed(&s),
            None => IdentityKey::generate().unwrap(),
        };
        let keys = vec![HandshakeKeyPair::generate(1, 0, u64::MAX).unwrap()];
        let config = sign_config(&identity, &keys);
        let state = Arc::new(MockState {
            prefix: opts.prefix.clone(),
            identity,
            keys: Mutex::new(keys),
            config: Mutex::new(config),
            policy: Mutex::new(opts.policy.unwrap_or_default()),
            pending: Mutex::default(),
            sessions: Mutex::default(),
            behavior: Mutex::default(),
            seen: Mutex::default(),
            executed: Mutex::default(),
            refusals: Mutex::default(),
            forge_expired_after_execute: AtomicUsize::new(0),
            check_file: Mutex::default(),
            file_violations: AtomicUsize::new(0),
            file_checks: AtomicUsize::new(0),
            config_fetches: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            confirms: AtomicUsize::new(0),
            protected_hits: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
        });
        let app = opts
            .routes
            .unwrap_or_default()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Mock {
            state,
            addr,
            base: format!("http://{addr}{}", opts.prefix),
        }
    }
}

pub fn refuse(code: ErrorCode) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    let body =
        serde_json::json!({"error": code.as_str(), "message": format!("mock refused: {code}")});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(wire::ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

pub fn sealed_response(status: StatusCode, inner_ct: &str, record: Vec<u8>) -> Response {
    let mut r = (status, record).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static(wire::SEALED_CONTENT_TYPE),
    );
    if !inner_ct.is_empty() {
        r.headers_mut().insert(
            wire::CONTENT_TYPE_HEADER,
            HeaderValue::from_str(inner_ct).unwrap(),
        );
    }
    r.headers_mut()
        .insert("x-outer-unprotected", HeaderValue::from_static("yes"));
    r
}

async fn handle(
    State(st): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(rel) = uri.path().strip_prefix(st.prefix.as_str()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rel = rel.to_string();
    match (method.clone(), rel.as_str()) {
        (Method::GET, wire::CONFIG_PATH) => {
            st.config_fetches.fetch_add(1, Ordering::SeqCst);
            let mut r = st.config.lock().unwrap().clone().into_response();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(wire::HANDSHAKE_CONTENT_TYPE),
            );
            r
        }
        (Method::POST, wire::HANDSHAKE_PATH) => {
            st.handshakes.fetch_add(1, Ordering::SeqCst);
            let keys = st.keys.lock().unwrap();
            let policy = st.policy.lock().unwrap().clone();
            match respond(
                &keys,
                &policy,
                &body,
                SessionId::random().unwrap(),
                now_ms(),
            ) {
                Ok(r) => {
                    // The mock keeps the pending session itself; its "ticket" is just
                    // the session id (a real server seals the pending state in it).
                    let id = r.pending.id();
                    let Ok(message) = r.server_hello(id.as_bytes()) else {
                        return refuse(ErrorCode::Internal);
                    };
                    st.pending.lock().unwrap().insert(id, r.pending);
                    let mut resp = message.into_response();
                    resp.headers_mut().insert(
                        "content-type",
                        HeaderValue::from_static(wire::HANDSHAKE_CONTENT_TYPE),
                    );
                    resp
                }
                Err(e) => refuse(e.code()),
            }
        }
        (Method::POST, wire::CONFIRM_PATH) => {
            st.confirms.fetch_add(1, Ordering::SeqCst);
            let Some(id) = session_id(&headers) else {
                return refuse(ErrorCode::Malformed);
            };
            let Ok(conf) = sessioncert_proto::Confirmation::parse(&body) else {
                return refuse(ErrorCode::Malformed);
            };
            let Some(pending) = st.pending.lock().unwrap().remove(&id) else {
                return refuse(ErrorCode::UnknownSession);
            };
            match pending.confirm(conf.client_finished) {
                Ok(s) => {
                    st.sessions.lock().unwrap().insert(id, s);
                    StatusCode::NO_CONTENT.into_response()
                }
                Err(f) => {
                    st.pending.lock().unwrap().insert(id, *f.pending);
                    refuse(ErrorCode::HandshakeFailed)
                }
            }
        }
        (Method::POST, wire::FULL_PATH) => sealed_full(&st, &uri, &headers, &body),
        _ => {
            let r = sealed_header(&st, &method, &uri, &rel, &headers, &body);
            // A slow handler: the answer comes a second after the request executed.
            if rel.starts_with("/slow") {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            r
        }
    }
}

/// What the protected routes answer after executing a request: the real (sealed)
/// response, or a forged refusal if the attack is armed.
fn after_execute(st: &MockState, real: Response) -> Response {
    if st.take_forgery() {
        refuse(ErrorCode::SessionExpired)
    } else {
        real
    }
}

fn refuse_protected(st: &MockState, code: ErrorCode) -> Response {
    st.refusals.lock().unwrap().push(code);
    refuse(code)
}

/// A request's `sessioncert-confirm` header creates its session (PROTOCOL §6.8).
fn confirm_from_header(
    st: &MockState,
    headers: &HeaderMap,
    id: &SessionId,
    sessions: &mut std::collections::HashMap<SessionId, sessioncert_proto::ServerSession>,
) {
    use base64::Engine as _;
    if sessions.contains_key(id) {
        return;
    }
    let Some(bytes) = headers.get(wire::CONFIRM_HEADER).and_then(|v| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.as_bytes())
            .ok()
    }) else {
        return;
    };
    let Ok(conf) = sessioncert_proto::Confirmation::parse(&bytes) else {
        return;
    };
    let Some(pending) = st.pending.lock().unwrap().remove(id) else {
        return;
    };
    match pending.confirm(conf.client_finished) {
        Ok(s) => {
            st.confirms.fetch_add(1, Ordering::SeqCst);
            sessions.insert(*id, s);
        }
        Err(f) => {
            st.pending.lock().unwrap().insert(*id, *f.pending);
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<SessionId> {
    headers
        .get(wire::SESSION_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn check_sealed_headers(headers: &HeaderMap) -> Result<SessionId, ErrorCode> {
    let id = session_id(headers).ok_or(ErrorCode::Malformed)?;
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    if ct != Some(wire::SEALED_CONTENT_TYPE) {
        return Err(ErrorCode::Malformed);
    }
    Ok(id)
}

/// Persist-before-send check: the session file must already be past `seq`.
fn check_file(st: &MockState, seq: u64) {
    let Some(path) = st.check_file.lock().unwrap().clone() else {
        return;
    };
    st.file_checks.fetch_add(1, Ordering::SeqCst);
    let ok = (|| {
        let text = std::fs::read(&path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let secrets = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.get("secrets")?.as_str()?)
            .ok()?;
        let s = ClientSession::import(&secrets).ok()?;
        Some(s.next_seq() > seq)
    })()
    .unwrap_or(false);
    if !ok {
        st.file_violations.fetch_add(1, Ordering::SeqCst);
    }
}

fn sealed_header(
    st: &MockState,
    method: &Method,
    uri: &Uri,
    rel: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    st.protected_hits.fetch_add(1, Ordering::SeqCst);
    st.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        body: body.to_vec(),
    });
    let id = match check_sealed_headers(headers) {
        Ok(id) => id,
        Err(code) => return refuse_protected(st, code),
    };
    let behavior = st.behavior.lock().unwrap().clone();
    let mut sessions = st.sessions.lock().unwrap();
    if behavior.forget_always {
        sessions.clear();
        st.pending.lock().unwrap().clear();
    }
    confirm_from_header(st, headers, &id, &mut sessions);
    let Some(session) = sessions.get_mut(&id) else {
        return refuse_protected(st, ErrorCode::UnknownSession);
    };
    let inner_ct = headers
        .get(wire::CONTENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let target = headers
        .get(wire::TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Covered headers as PROTOCOL §8.2 defines them (the mock trusts the list's shape).
    let covered: Vec<(String, String)> = headers
        .get(wire::COVERED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let vals: Vec<&str> = headers
                        .get_all(n)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    (n.to_string(), vals.join(", "))
                })
                .collect()
        })
        .unwrap_or_default();
    let covered_refs: Vec<(&str, &str)> = covered
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let binding = RequestBinding::Header(RequestLine {
        method: method.as_str(),
        target: &target,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        content_type: &inner_ct,
        covered: &covered_refs,
    });
    let opened = match session.open_request(&binding, body) {
        Ok(o) => o,
        Err(e) => return refuse_protected(st, e.code()),
    };
    check_file(st, opened.sealer.seq());
    st.executed.lock().unwrap().push(Executed {
        session: id,
        seq: opened.sealer.seq(),
        method: method.to_string(),
        path: rel.to_string(),
        body: opened.plaintext.to_vec(),
    });

    if behavior.plaintext_reply {
        let mut r = (StatusCode::OK, "plaintext, not sealed").into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        return r;
    }

    let (status, ct, out): (StatusCode, String, Vec<u8>) = if rel == wire::CLOSE_PATH {
        (StatusCode::OK, String::new(), Vec::new())
    } else if rel == "/limited" {
        let mut r = refuse(ErrorCode::RateLimited);
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("7"));
        return r;
    } else if let Some(code) = rel.strip_prefix("/status/") {
        (
            StatusCode::from_u16(code.parse().unwrap()).unwrap(),
            "text/plain".into(),
            format!("status {code}").into_bytes(),
        )
    } else {
        let echo = serde_json::json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query().unwrap_or(""),
            "content_type": inner_ct,
            "body": String::from_utf8_lossy(&opened.plaintext),
            "seq": opened.sealer.seq(),
        });
        (
            StatusCode::OK,
            "application/json".into(),
            echo.to_string().into_bytes(),
        )
    };
    let mut record = session
        .seal_response(
            opened.sealer,
            &ResponseBinding::Header {
                status: status.as_u16(),
                content_type: &ct,
            },
            &out,
        )
        .unwrap();
    if rel == wire::CLOSE_PATH {
        sessions.remove(&id);
        st.closes.fetch_add(1, Ordering::SeqCst);
    }
    if behavior.tamper_body {
        let n = record.len();
        record[n - 1] ^= 0x01;
    }
    let status = if behavior.tamper_status {
        StatusCode::from_u16(status.as_u16() + 1).unwrap()
    } else {
        status
    };
    let mut r = sealed_response(status, &ct, record);
    if !behavior.status_lines.is_empty() {
        *r.status_mut() = StatusCode::OK;
        for v in &behavior.status_lines {
            r.headers_mut()
                .append(wire::STATUS_HEADER, HeaderValue::from_static(v));
        }
    }
    after_execute(st, r)
}

fn sealed_full(st: &MockState, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    st.protected_hits.fetch_add(1, Ordering::SeqCst);
    st.seen.lock().unwrap().push(Seen {
        method: "POST".into(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        body: body.to_vec(),
    });
    let id = match check_sealed_headers(headers) {
        Ok(id) => id,
        Err(code) => return refuse_protected(st, code),
    };
    let behavior = st.behavior.lock().unwrap().clone();
    let mut sessions = st.sessions.lock().unwrap();
    if behavior.forget_always {
        sessions.clear();
        st.pending.lock().unwrap().clear();
    }
    confirm_from_header(st, headers, &id, &mut sessions);
    let Some(session) = sessions.get_mut(&id) else {
        return refuse_protected(st, ErrorCode::UnknownSession);
    };
    let opened = match session.open_request(&RequestBinding::Full, body) {
        Ok(o) => o,
        Err(e) => return refuse_protected(st, e.code()),
    };
    check_file(st, opened.sealer.seq());
    let req = match FullRequest::decode(&opened.plaintext) {
        Ok(r) => r,
        Err(e) => return refuse_protected(st, e.code()),
    };
    let inner_path = req.path.split('?').next().unwrap_or("");
    st.executed.lock().unwrap().push(Executed {
        session: id,
        seq: opened.sealer.seq(),
        method: req.method.clone(),
        path: inner_path
            .strip_prefix(st.prefix.as_str())
            .unwrap_or(inner_path)
            .to_string(),
        body: req.body.clone(),
    });
    if behavior.plaintext_reply {
        return (StatusCode::OK, "plaintext, not sealed").into_response();
    }
    let echo = serde_json::json!({
        "method": req.method,
        "scheme": req.scheme,
        "authority": req.authority,
        "path": req.path,
        "headers": req.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).to_string())).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&req.body),
    });
    let resp = FullResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-inner".into(), b"sealed-header".to_vec()),
        ],
        body: echo.to_string().into_bytes(),
    };
    let mut record = session
        .seal_response(
            opened.sealer,
            &ResponseBinding::Full,
            &resp.encode().unwrap(),
        )
        .unwrap();
    if behavior.tamper_body {
        let n = record.len();
        record[n - 1] ^= 0x01;
    }
    after_execute(st, sealed_response(StatusCode::OK, "", record))
}

/// Captures `tracing` output of this crate into a buffer (per thread: use a
/// current-thread runtime).
#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global subscriber that captures this crate's logs from every
/// test of the binary into one buffer; tests look for their own unique markers.
/// (A per-test `set_default` is unreliable when tests run in parallel threads.)
pub fn capture_logs() -> LogBuf {
    static BUF: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf::default();
        let b2 = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter("sessioncert_client=trace")
            .with_ansi(false)
            .with_writer(move || b2.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
    .clone()
}
