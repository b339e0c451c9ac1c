//! The client: configuration, handshake, session lifecycle and sealed exchanges.

use crate::file::{self, FileState, SessionLock, SessionSnapshot};
use crate::request::{Prepared, RequestBuilder, Response};
use crate::{ClientError, RefusalAuthenticity};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use reqwest::Url;
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::handshake::{MAX_HANDSHAKE_LEN, SUPPORTED_VERSIONS};
use sessioncert_proto::record::{RequestBinding, RequestLine, ResponseBinding};
use sessioncert_proto::session::ResponseExpectation;
use sessioncert_proto::wire;
use sessioncert_proto::{
    ClientHandshake, ClientOffer, ClientSession, ErrorCode, KeyConfig, Pin, ProtocolError,
    SessionId, SignedKeyConfig, Suite, Trust, VerifiedKeyConfig,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// Default connect timeout of the built-in HTTP client.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default total request timeout of the built-in HTTP client.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on a response body (sealed record or refusal) read into memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Default longest wait for the lock of a session file another client holds.
pub const DEFAULT_SESSION_FILE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key configuration accepted.
const MAX_CONFIG_LEN: usize = 64 * 1024;
/// Largest refusal body read (only its `message` is used).
const MAX_REFUSAL_LEN: usize = 16 * 1024;
/// Longest refusal message kept (it is unauthenticated text from the network).
const MAX_MESSAGE_CHARS: usize = 512;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks a std mutex, ignoring poisoning (every critical section here leaves the data
/// consistent: the protocol types update themselves atomically or not at all).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What is known about the current session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id (public; sent in every request).
    pub id: SessionId,
    /// The negotiated record suite.
    pub suite: Suite,
    /// The negotiated protocol version.
    pub version: u16,
    /// Absolute end of the session's life, unix ms (server clock).
    pub expires_at_ms: u64,
    /// The server's idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// The sequence number the next request will use.
    pub next_seq: u64,
}

/// One established session, shared by the requests that use it. Requests keep an
/// `Arc` to the slot they sealed with, so a concurrent re-handshake never leaves a
/// response without the keys to open it.
pub(crate) struct Slot {
    generation: u64,
    id: SessionId,
    suite: Suite,
    version: u16,
    expires_at_ms: u64,
    idle_timeout_ms: u64,
    /// The id as a ready header value (built once, sent on every request).
    id_header: HeaderValue,
    session: Mutex<ClientSession>,
    last_used_ms: AtomicU64,
    dead: AtomicBool,
}

/// How long before a session's end (lifetime or idle) the client stops using it.
const EXPIRY_MARGIN_MS: u64 = 30_000;

/// Header names as values: `&str` names would be re-parsed on every request.
const H_SESSION: HeaderName = HeaderName::from_static(wire::SESSION_HEADER);
const H_INNER_CONTENT_TYPE: HeaderName = HeaderName::from_static(wire::CONTENT_TYPE_HEADER);
const H_STATUS: HeaderName = HeaderName::from_static(wire::STATUS_HEADER);
const H_ERROR: HeaderName = HeaderName::from_static(wire::ERROR_HEADER);
const H_CONFIRM: HeaderName = HeaderName::from_static(wire::CONFIRM_HEADER);
const H_REFUSAL: HeaderName = HeaderName::from_static(wire::REFUSAL_HEADER);
const H_TARGET: HeaderName = HeaderName::from_static(wire::TARGET_HEADER);
const H_COVERED: HeaderName = HeaderName::from_static(wire::COVERED_HEADER);
const H_RECORD: HeaderName = HeaderName::from_static(wire::RECORD_HEADER);

/// Headers that carry credentials: bound whenever they are set.
const CREDENTIALS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// The headers a header-mode request binds (PROTOCOL §8.2): those the caller named,
/// then any credential header that is set; each with its field lines joined by `", "`.
fn covered_headers(p: &Prepared) -> Result<Vec<(String, String)>, ClientError> {
    let mut names: Vec<&HeaderName> = p.cover.iter().collect();
    for c in &CREDENTIALS {
        if p.headers.contains_key(c) && !names.contains(&c) {
            names.push(c);
        }
    }
    if names.len() > sessioncert_proto::record::MAX_COVERED_HEADERS {
        return Err(ClientError::InvalidRequest(format!(
            "at most {} headers can be covered",
            sessioncert_proto::record::MAX_COVERED_HEADERS
        )));
    }
    names
        .into_iter()
        .map(|n| {
            let mut value = String::new();
            for (i, v) in p.headers.get_all(n).iter().enumerate() {
                if i > 0 {
                    value.push_str(", ");
                }
                value.push_str(v.to_str().map_err(|_| {
                    ClientError::InvalidRequest(format!("covered header {n} is not text"))
                })?);
            }
            Ok((n.as_str().to_owned(), value))
        })
        .collect()
}

impl Slot {
    fn new(
        generation: u64,
        session: ClientSession,
        expires_at_ms: u64,
        idle_timeout_ms: u64,
        last_used_ms: u64,
    ) -> Self {
        Slot {
            generation,
            id: session.id(),
            suite: session.suite(),
            version: session.version(),
            expires_at_ms,
            idle_timeout_ms,
            // A session id is base64url text, always a valid header value.
            id_header: HeaderValue::from_str(&session.id().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            session: Mutex::new(session),
            last_used_ms: AtomicU64::new(last_used_ms),
            dead: AtomicBool::new(false),
        }
    }

    /// Whether requests can still be sealed with this session (as far as the client
    /// can tell; the server may still have forgotten it).
    ///
    /// A session close to its end by the client's clock is not used: a request the
    /// server refuses as expired may not be re-sendable (PROTOCOL §14.1), so handshaking
    /// anew a little early is cheaper than an outcome that is unknown.
    fn usable(&self, now: u64) -> bool {
        if self.dead.load(Ordering::Acquire)
            || now.saturating_add(EXPIRY_MARGIN_MS) >= self.expires_at_ms
        {
            return false;
        }
        let idle = now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        // The server counts idle time from when it opened the last request, a little
        // before the client's count starts: keep a margin of a tenth, at most 30 s.
        let margin = (self.idle_timeout_ms / 10).min(EXPIRY_MARGIN_MS);
        if self.idle_timeout_ms > 0 && idle.saturating_add(margin) >= self.idle_timeout_ms {
            return false;
        }
        !lock(&self.session).is_exhausted()
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id,
            suite: self.suite,
            version: self.version,
            expires_at_ms: self.expires_at_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            next_seq: lock(&self.session).next_seq(),
        }
    }
}

/// A sealed request, ready to send.
struct SealedRequest {
    record: Vec<u8>,
    expect: ResponseExpectation,
    /// `sessioncert-confirm`, while the server is not known to hold the session.
    confirm: Option<HeaderValue>,
}

/// What is known, after an attempt failed once the request was handed to the
/// transport, about whether the server executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Execution {
    /// It certainly was not executed: the connection was never made (nothing was
    /// sent), or the server refused it with an authenticated refusal.
    NotExecuted,
    /// It may or may not have been executed.
    Unknown,
}

/// Classifies a failed attempt. An unauthenticated refusal proves nothing: anyone on
/// the path can forge one after letting the server execute the request.
fn execution_of(e: &ClientError) -> Execution {
    match e {
        ClientError::Rejected {
            authenticity: RefusalAuthenticity::Authenticated,
            ..
        } => Execution::NotExecuted,
        // Connect errors (refused, unreachable, connect timeout) come from the connector,
        // before any byte of the request was written; builder errors before that.
        ClientError::Http(h) if h.is_connect() || h.is_builder() => Execution::NotExecuted,
        _ => Execution::Unknown,
    }
}

/// Whether the client may send a request again on its own after `e`: only when it
/// knows the first attempt was not executed or the request is safe to send twice.
fn may_resend(e: &ClientError, retry_safe: bool) -> bool {
    retry_safe || execution_of(e) == Execution::NotExecuted
}

/// A refusal the client cannot authenticate (so it proves nothing about execution).
fn unauthenticated_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected {
            authenticity: RefusalAuthenticity::Unauthenticated,
            ..
        }
    )
}

/// A transport failure after the request may have reached the server.
fn transport_failed_after_send(e: &ClientError) -> bool {
    matches!(e, ClientError::Http(_)) && execution_of(e) == Execution::Unknown
}

pub(crate) struct Inner {
    base: Url,
    /// `base`'s origin as `sessioncert-target` carries it (PROTOCOL §8.2).
    target: String,
    /// The same, as a ready header value.
    target_header: HeaderValue,
    /// `base` as text without a trailing `/` (what session files record).
    base_str: String,
    http: reqwest::Client,
    identity: Pin,
    suites: Vec<Suite>,
    max_response_bytes: usize,
    config: Mutex<Option<VerifiedKeyConfig>>,
    /// The highest `issued_at_ms` of any configuration accepted (PROTOCOL §5.3 rule 7).
    config_high_water: AtomicU64,
    current: Mutex<Option<Arc<Slot>>>,
    next_generation: AtomicU64,
    /// Single-flight for handshakes.
    handshake_lock: tokio::sync::Mutex<()>,
    /// Files the session is persisted to after every seal. Lock order: a slot's
    /// `session` before `files`.
    files: Mutex<Vec<PathBuf>>,
    /// The exclusive locks of those files, held as long as this client lives.
    file_locks: Mutex<Vec<SessionLock>>,
    /// Longest wait for a session file's lock.
    lock_timeout: Duration,
    /// `(generation, next_seq)` most recently written to every file; writes happen
    /// under this lock, so the files never go back to an older state.
    persisted: tokio::sync::Mutex<Option<(u64, u64)>>,
}

/// An encrypted-session HTTP client. Cheap to clone (all clones share one session);
/// `Send + Sync`; any number of requests may run concurrently.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session = lock(&self.inner.current).as_ref().map(|s| s.id);
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_str)
            .field("identity", &self.inner.identity)
            .field("session", &session)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`]; see [`Client::builder`].
#[must_use]
pub struct ClientBuilder {
    base_url: String,
    trust: Trust,
    http: Option<reqwest::Client>,
    suites: Vec<Suite>,
    session_file: Option<PathBuf>,
    lock_timeout: Duration,
    lazy: bool,
    max_response_bytes: usize,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("trust", &self.trust)
            .field("suites", &self.suites)
            .field("session_file", &self.session_file)
            .field("session_file_lock_timeout", &self.lock_timeout)
            .field("connect_lazily", &self.lazy)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Uses this HTTP client (for TLS settings, proxies, timeouts, …) instead of the
    /// built-in one (connect timeout 10 s, request timeout 60 s, no TLS unless the
    /// `rustls-tls` feature is on).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Record suites to offer, preferred first (default: AES-256-GCM, ChaCha20-Poly1305).
    pub fn suites(mut self, suites: Vec<Suite>) -> Self {
        self.suites = suites;
        self
    }

    /// Keeps the session in this file: it is loaded at build time when it exists and
    /// matches the base URL and the pinned identity (otherwise it is ignored and a new
    /// handshake overwrites it), and rewritten after every sealed request *before* the
    /// request is sent, so a crash can never make the client reuse a sequence number.
    /// With [`Trust::FirstUse`], the identity recorded in a matching file is trusted.
    ///
    /// The file is **exclusive**: [`ClientBuilder::build`] takes an OS advisory lock on
    /// `<file>.lock` beside it before reading it, and the client holds that lock until
    /// it (and every clone) is dropped, so no other process or client can load the same
    /// sequence number. Another holder is waited for at most
    /// [`ClientBuilder::session_file_lock_timeout`], then the build fails with
    /// [`ClientError::SessionFileBusy`]. The OS releases the lock of a process that dies.
    ///
    /// A path that exists but is not a session file (nor an empty file) is never
    /// overwritten: the build fails with [`ClientError::NotASessionFile`].
    pub fn session_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.session_file = Some(path.into());
        self
    }

    /// How long [`ClientBuilder::build`] (and [`Client::save_session`]) wait for the
    /// lock of a session file that another process or client holds before failing with
    /// [`ClientError::SessionFileBusy`] (default
    /// [`DEFAULT_SESSION_FILE_LOCK_TIMEOUT`], 5 s; zero: do not wait).
    pub fn session_file_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// When `true`, [`ClientBuilder::build`] does not handshake; the first request does.
    /// (With [`Trust::FirstUse`] and no usable session file, the key configuration is
    /// still fetched at build time, so that [`Client::identity`] is known.)
    pub fn connect_lazily(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Largest response body read into memory (default 64 MiB).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Builds the client: loads the session file or fetches and verifies the key
    /// configuration, handshakes and confirms (unless connecting lazily).
    pub async fn build(self) -> Result<Client, ClientError> {
        let (base, base_str) = parse_base(&self.base_url)?;
        if self.suites.is_empty() {
            return Err(ClientError::InvalidRequest(
                "no record suite to offer".into(),
            ));
        }
        let http = match self.http {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
                // Below the server's 60 s keep-alive, so a request is never written to a
                // connection the server is closing (a failure after sending would leave
                // its outcome unknown).
                .pool_idle_timeout(Duration::from_secs(45))
                .timeout(DEFAULT_REQUEST_TIMEOUT)
                .build()?,
        };
        // Lock first, then read: the sequence number read can never be stale.
        let file_lock = match &self.session_file {
            Some(path) => Some(SessionLock::acquire(path, self.lock_timeout).await?),
            None => None,
        };
        let now = now_ms();
        let loaded = match &self.session_file {
            Some(path) => load_matching(path, &base_str, self.trust, &self.suites, now)?,
            None => None,
        };

        let mut config = None;
        let identity = match (self.trust, &loaded) {
            (Trust::Pin(pin), _) => pin,
            (Trust::FirstUse, Some(l)) => {
                warn!(
                    pin = %l.pin,
                    "server identity is NOT pinned (trust on first use): trusting the identity \
                     recorded in the session file; pin it with Trust::Pin(\"{}\")",
                    l.pin
                );
                l.pin
            }
            (Trust::FirstUse, None) => {
                let cfg = fetch_config(&http, &base, Trust::FirstUse).await?;
                let pin = cfg.identity;
                config = Some(cfg);
                pin
            }
        };

        let inner = Arc::new(Inner {
            target: base.origin().ascii_serialization(),
            target_header: HeaderValue::from_str(&base.origin().ascii_serialization())
                .map_err(|_| ClientError::InvalidUrl("origin is not a header value".into()))?,
            base,
            base_str,
            http,
            identity,
            suites: self.suites,
            max_response_bytes: self.max_response_bytes,
            config_high_water: AtomicU64::new(config.as_ref().map_or(0, |c| c.issued_at_ms)),
            config: Mutex::new(config),
            current: Mutex::new(None),
            next_generation: AtomicU64::new(1),
            handshake_lock: tokio::sync::Mutex::new(()),
            files: Mutex::new(self.session_file.into_iter().collect()),
            file_locks: Mutex::new(file_lock.into_iter().collect()),
            lock_timeout: self.lock_timeout,
            persisted: tokio::sync::Mutex::new(None),
        });

        if let Some(l) = loaded {
            let generation = inner.next_generation.fetch_add(1, Ordering::Relaxed);
            let last_used = l.modified_ms.unwrap_or(now).min(now);
            let slot = Slot::new(
                generation,
                l.session,
                l.expires_at_ms,
                l.idle_timeout_ms,
                last_used,
            );
            info!(session = %slot.id, next_seq = slot.info().next_seq, "continuing session from session file");
            *lock(&inner.current) = Some(Arc::new(slot));
        } else if !self.lazy {
            inner.renew(None).await?;
        }
        Ok(Client { inner })
    }
}

/// Loads the session file if it exists and may be used; logs why not otherwise. A
/// path holding something that is not a session file is an error (never overwritten).
fn load_matching(
    path: &Path,
    base_str: &str,
    trust: Trust,
    suites: &[Suite],
    now: u64,
) -> Result<Option<file::LoadedSession>, ClientError> {
    let l = match file::load(path)? {
        FileState::Session(l) => *l,
        FileState::Missing => {
            debug!(path = %path.display(), "no session file yet");
            return Ok(None);
        }
        FileState::Unusable(reason) => {
            warn!(path = %path.display(), error = %reason, "ignoring unusable session file; a new handshake will replace it");
            return Ok(None);
        }
    };
    let why_not = if l.base_url != base_str {
        Some(format!(
            "it is for base URL {} (this client: {base_str})",
            l.base_url
        ))
    } else if matches!(trust, Trust::Pin(p) if p != l.pin) {
        Some(format!(
            "it is for server identity {} which is not the pinned one",
            l.pin
        ))
    } else if now >= l.expires_at_ms {
        Some("its session has expired".to_string())
    } else if !suites.contains(&l.session.suite()) {
        Some(format!(
            "its suite {} is not among the allowed suites",
            l.session.suite()
        ))
    } else if l.session.is_exhausted() {
        Some("its session's message budget is spent".to_string())
    } else {
        None
    };
    match why_not {
        Some(reason) => {
            info!(path = %path.display(), "ignoring session file: {reason}; handshaking anew");
            Ok(None)
        }
        None => Ok(Some(l)),
    }
}

fn parse_base(s: &str) -> Result<(Url, String), ClientError> {
    let url = Url::parse(s).map_err(|e| ClientError::InvalidUrl(format!("{s}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl(format!(
            "{s}: scheme must be http or https"
        )));
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(ClientError::InvalidUrl(format!("{s}: no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::InvalidUrl(format!(
            "{s}: a base URL cannot have a query or fragment"
        )));
    }
    let base_str = url.as_str().trim_end_matches('/').to_string();
    Ok((url, base_str))
}

/// `base` joined with an absolute path (and query) below it. Built by setting the path
/// and query on a copy of the parsed base (the same percent-encoding and dot-segment
/// rules as a full parse) so the host is not parsed again on every request.
fn join(base: &Url, path_and_query: &str) -> Result<Url, ClientError> {
    let without_fragment = path_and_query.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    let prefix = base.path().trim_end_matches('/');
    let mut full = String::with_capacity(prefix.len() + path.len() + 1);
    full.push_str(prefix);
    if !path.starts_with('/') {
        full.push('/');
    }
    full.push_str(path);
    let mut url = base.clone();
    url.set_path(&full);
    url.set_query(query);
    Ok(url)
}

/// `GET` the signed key configuration and verify it against `trust`.
async fn fetch_config(
    http: &reqwest::Client,
    base: &Url,
    trust: Trust,
) -> Result<VerifiedKeyConfig, ClientError> {
    let url = join(base, wire::CONFIG_PATH)?;
    let resp = http.get(url).send().await?;
    if resp.headers().contains_key(wire::ERROR_HEADER) {
        return Err(refusal(resp).await);
    }
    let status = resp.status();
    if status != StatusCode::OK {
        return Err(ClientError::unexpected(
            Some(status),
            "key configuration endpoint did not answer 200",
        ));
    }
    let body = read_limited(resp, MAX_CONFIG_LEN).await?;
    let signed = SignedKeyConfig::decode(&body)?;
    let config = signed.verify(trust, now_ms()).map_err(|e| match e {
        ProtocolError::UntrustedConfig(reason) => ClientError::Untrusted {
            reason,
            presented: KeyConfig::decode(&signed.config).ok().map(|c| c.identity),
        },
        other => ClientError::Protocol(other),
    })?;
    match trust {
        Trust::FirstUse => warn!(
            pin = %config.identity,
            "server identity is NOT pinned (trust on first use): accepted {}; \
             pin it next time with Trust::Pin(\"{}\")",
            config.identity,
            config.identity
        ),
        Trust::Pin(_) => debug!(identity = %config.identity, "key configuration verified"),
    }
    Ok(config)
}

/// Reads a body of at most `max` bytes.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    let status = resp.status();
    let too_large = || ClientError::unexpected(Some(status), "response body too large");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let cap = resp.content_length().unwrap_or(0).min(max as u64) as usize;
    let mut out = Vec::with_capacity(cap);
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Turns a response carrying `sessioncert-error` into an error.
async fn refusal(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let code_text = resp
        .headers()
        .get(wire::ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message = read_limited(resp, MAX_REFUSAL_LEN)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_default();
    match ErrorCode::parse(&code_text) {
        Some(code) => ClientError::Rejected {
            status,
            code,
            message,
            retry_after,
            // Until its tag is checked against the session (PROTOCOL §14.1).
            authenticity: RefusalAuthenticity::Unauthenticated,
        },
        None => ClientError::unexpected(
            Some(status),
            format!(
                "unknown sessioncert-error code {:?}",
                code_text.chars().take(64).collect::<String>()
            ),
        ),
    }
}

fn is_sealed_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case(wire::SEALED_CONTENT_TYPE))
}

/// A session refusal after which one fresh handshake and one retry are worth it.
fn needs_new_session(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownSession | ErrorCode::SessionExpired | ErrorCode::SessionClosed)
    )
}

impl Inner {
    fn url(&self, path_and_query: &str) -> Result<Url, ClientError> {
        join(&self.base, path_and_query)
    }

    fn current(&self) -> Option<Arc<Slot>> {
        lock(&self.current).clone()
    }

    fn has_files(&self) -> bool {
        !lock(&self.files).is_empty()
    }

    /// The cached configuration if it still has a usable key, else a fresh one.
    async fn config(&self, force_fetch: bool) -> Result<(VerifiedKeyConfig, bool), ClientError> {
        if !force_fetch {
            if let Some(c) = lock(&self.config).as_ref() {
                let now = now_ms();
                if c.is_fresh(now) && c.current_key(now).is_some() {
                    return Ok((c.clone(), false));
                }
            }
        }
        let c = fetch_config(&self.http, &self.base, Trust::Pin(self.identity)).await?;
        // Never walked back to an older configuration than one already accepted
        // (PROTOCOL §5.3 rule 7): it may list a handshake key the server has removed.
        let newest = self
            .config_high_water
            .fetch_max(c.issued_at_ms, Ordering::AcqRel);
        if c.issued_at_ms < newest {
            return Err(ClientError::Untrusted {
                reason: "the server sent an older key configuration than one already accepted",
                presented: Some(c.identity),
            });
        }
        *lock(&self.config) = Some(c.clone());
        Ok((c, true))
    }

    /// Config (cached or fetched), handshake, confirmation. Refetches the
    /// configuration once if the server answers `unknown_key` to a cached one.
    async fn handshake(&self) -> Result<Slot, ClientError> {
        let mut force_fetch = false;
        loop {
            let (config, fresh) = self.config(force_fetch).await?;
            let offer = ClientOffer {
                versions: SUPPORTED_VERSIONS.to_vec(),
                suites: self.suites.clone(),
            };
            let (hs, hello) = ClientHandshake::start(&config, offer, now_ms())?;
            let resp = self
                .http
                .post(self.url(wire::HANDSHAKE_PATH)?)
                .header(CONTENT_TYPE, wire::HANDSHAKE_CONTENT_TYPE)
                .body(hello)
                .send()
                .await?;
            if resp.headers().contains_key(&H_ERROR) {
                let err = refusal(resp).await;
                if err.code() == Some(ErrorCode::UnknownKey) && !fresh {
                    info!("server does not know the cached handshake key; refetching the key configuration");
                    force_fetch = true;
                    continue;
                }
                return Err(err);
            }
            let status = resp.status();
            if status != StatusCode::OK {
                return Err(ClientError::unexpected(
                    Some(status),
                    "handshake endpoint did not answer 200",
                ));
            }
            let server_hello = read_limited(resp, MAX_HANDSHAKE_LEN).await?;
            let (unconfirmed, hello) = hs.read_server_hello(&server_hello)?;
            // No separate confirmation round trip: the session's first requests carry
            // it (`sessioncert-confirm`) until one response has opened (PROTOCOL §6.8).
            let session = unconfirmed.into_session();
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            info!(
                session = %hello.session_id,
                suite = %hello.suite,
                version = hello.version,
                expires_at_ms = hello.expires_at_ms,
                "sessioncert handshake done; the first request confirms the session"
            );
            return Ok(Slot::new(
                generation,
                session,
                hello.expires_at_ms,
                hello.idle_timeout_ms,
                now_ms(),
            ));
        }
    }

    /// Makes sure there is a usable session other than generation `stale`. Concurrent
    /// callers share one handshake: whoever gets the lock second finds the new session.
    async fn renew(&self, stale: Option<u64>) -> Result<Arc<Slot>, ClientError> {
        let _single_flight = self.handshake_lock.lock().await;
        if let Some(cur) = self.current() {
            if Some(cur.generation) != stale && cur.usable(now_ms()) {
                return Ok(cur);
            }
        }
        self.install_new_session().await
    }

    /// Handshakes and makes the result the current session (caller holds
    /// `handshake_lock`).
    async fn install_new_session(&self) -> Result<Arc<Slot>, ClientError> {
        let slot = Arc::new(self.handshake().await?);
        *lock(&self.current) = Some(slot.clone());
        let snapshot = {
            let s = lock(&slot.session);
            self.has_files().then(|| (s.export(), s.next_seq()))
        };
        if let Some((secrets, next_seq)) = snapshot {
            self.persist(&slot, next_seq, secrets, false).await?;
        }
        Ok(slot)
    }

    /// The session to seal the next request with, handshaking first when there is
    /// none or it is expired, idle too long or spent.
    async fn acquire(&self) -> Result<Arc<Slot>, ClientError> {
        let cur = self.current();
        match cur {
            Some(s) if s.usable(now_ms()) => Ok(s),
            other => {
                if let Some(s) = &other {
                    debug!(session = %s.id, "session expired or spent; handshaking anew");
                }
                self.renew(other.map(|s| s.generation)).await
            }
        }
    }

    /// Writes the session to every session file unless a newer state is already there.
    async fn persist(
        &self,
        slot: &Slot,
        next_seq: u64,
        secrets: Zeroizing<Vec<u8>>,
        force: bool,
    ) -> Result<(), ClientError> {
        let mut mark = self.persisted.lock().await;
        let state = (slot.generation, next_seq);
        if !force && mark.is_some_and(|m| m >= state) {
            return Ok(());
        }
        let files = lock(&self.files).clone();
        if files.is_empty() {
            return Ok(());
        }
        let json = SessionSnapshot {
            base_url: self.base_str.clone(),
            pin: self.identity,
            session_id: slot.id,
            suite: slot.suite,
            expires_at_ms: slot.expires_at_ms,
            idle_timeout_ms: slot.idle_timeout_ms,
            secrets,
        }
        .to_json()?;
        tokio::task::spawn_blocking(move || {
            for f in &files {
                file::write_atomic(f, &json).map_err(|e| {
                    ClientError::SessionFile(format!("writing {}: {e}", f.display()))
                })?;
            }
            Ok::<(), ClientError>(())
        })
        .await
        .map_err(|e| ClientError::SessionFile(format!("writer task failed: {e}")))??;
        if mark.is_none_or(|m| m < state) {
            *mark = Some(state);
        }
        Ok(())
    }

    /// Seals with `slot` and persists the session before returning.
    async fn seal(
        &self,
        slot: &Slot,
        binding: &RequestBinding<'_>,
        body: &[u8],
    ) -> Result<SealedRequest, ClientError> {
        let (record, expect, snapshot, confirm) = {
            let mut s = lock(&slot.session);
            let (record, expect) = s.seal_request(binding, body)?;
            // Checked under the session lock, so a concurrent `save_session` either
            // exported after this seal or registered its file before it.
            let snapshot = self.has_files().then(|| (s.export(), s.next_seq()));
            let confirm = s.confirmation().and_then(|c| {
                use base64::Engine as _;
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c);
                HeaderValue::from_str(&text).ok()
            });
            (record, expect, snapshot, confirm)
        };
        slot.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if let Some((secrets, next_seq)) = snapshot {
            self.persist(slot, next_seq, secrets, false).await?;
        }
        Ok(SealedRequest {
            record,
            expect,
            confirm,
        })
    }

    /// One sealed exchange with `slot`: seal, persist, send, authenticate the answer.
    async fn exchange(&self, slot: &Slot, p: &Prepared) -> Result<Response, ClientError> {
        let (rb, expect) = self.prepare(slot, p).await?;
        self.send(slot, rb, &expect).await
    }

    /// Seals the request with `slot` and persists the session: everything before any
    /// byte is sent. An error here means the request was not sent.
    async fn prepare(
        &self,
        slot: &Slot,
        p: &Prepared,
    ) -> Result<(reqwest::RequestBuilder, ResponseExpectation), ClientError> {
        let content_type = p.content_type.as_deref().unwrap_or("");
        let req = if p.full {
            let authority = match (p.url.host_str(), p.url.port()) {
                (Some(h), Some(port)) => format!("{h}:{port}"),
                (Some(h), None) => h.to_string(),
                _ => String::new(),
            };
            let path = match p.url.query() {
                Some(q) => format!("{}?{q}", p.url.path()),
                None => p.url.path().to_string(),
            };
            let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(p.headers.len() + 1);
            if !content_type.is_empty() {
                headers.push((CONTENT_TYPE.as_str().into(), content_type.as_bytes().into()));
            }
            for (k, v) in &p.headers {
                headers.push((k.as_str().to_string(), v.as_bytes().to_vec()));
            }
            let inner = Zeroizing::new(
                FullRequest {
                    method: p.method.as_str().to_string(),
                    scheme: p.url.scheme().to_string(),
                    authority,
                    path,
                    headers,
                    body: p.body.to_vec(),
                }
                .encode(),
            );
            let sealed = self.seal(slot, &RequestBinding::Full, &inner).await?;
            debug!(session = %slot.id, seq = sealed.expect.seq, "sending sealed full-mode request");
            let mut rb = self
                .http
                .post(self.url(wire::FULL_PATH)?)
                .header(H_SESSION, slot.id_header.clone())
                .header(CONTENT_TYPE, wire::SEALED_CONTENT_TYPE);
            if let Some(c) = sealed.confirm {
                rb = rb.header(H_CONFIRM, c);
            }
            (rb.body(sealed.record), sealed.expect)
        } else {
            // The base URL's origin, serialized once; a request URL is always joined onto
            // the base, so it has the same origin (checked, to be safe).
            let origin;
            let target: &str = if p.url.host_str() == self.base.host_str()
                && p.url.port_or_known_default() == self.base.port_or_known_default()
                && p.url.scheme() == self.base.scheme()
            {
                &self.target
            } else {
                origin = p.url.origin().ascii_serialization();
                &origin
            };
            let covered = covered_headers(p)?;
            let covered_refs: Vec<(&str, &str)> = covered
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let binding = RequestBinding::Header(RequestLine {
                method: p.method.as_str(),
                target,
                path: p.url.path(),
                query: p.url.query().unwrap_or(""),
                content_type,
                covered: &covered_refs,
            });
            let sealed = self.seal(slot, &binding, &p.body).await?;
            debug!(session = %slot.id, seq = sealed.expect.seq, method = %p.method, "sending sealed request");
            let mut rb = self
                .http
                .request(p.method.clone(), p.url.clone())
                .headers(p.headers.clone())
                .header(H_SESSION, slot.id_header.clone())
                .header(CONTENT_TYPE, wire::SEALED_CONTENT_TYPE)
                .header(
                    H_TARGET,
                    if std::ptr::eq(target, self.target.as_str()) {
                        self.target_header.clone()
                    } else {
                        HeaderValue::from_str(target).map_err(|_| {
                            ClientError::InvalidRequest("origin is not a header value".into())
                        })?
                    },
                );
            if !covered.is_empty() {
                let names: Vec<&str> = covered.iter().map(|(n, _)| n.as_str()).collect();
                rb = rb.header(H_COVERED, names.join(", "));
            }
            if !content_type.is_empty() {
                rb = rb.header(H_INNER_CONTENT_TYPE, content_type);
            }
            if let Some(c) = sealed.confirm {
                rb = rb.header(H_CONFIRM, c);
            }
            if p.method == Method::HEAD {
                // HTTP gives HEAD no body: the record travels in a header (PROTOCOL §13).
                use base64::Engine as _;
                let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&sealed.record);
                rb = rb.header(H_RECORD, text);
                (rb, sealed.expect)
            } else {
                (rb.body(sealed.record), sealed.expect)
            }
        };
        let (mut rb, expect) = req;
        if let Some(t) = p.timeout {
            rb = rb.timeout(t);
        }
        Ok((rb, expect))
    }

    /// Sends a prepared request and authenticates the answer.
    async fn send(
        &self,
        slot: &Slot,
        rb: reqwest::RequestBuilder,
        expect: &ResponseExpectation,
    ) -> Result<Response, ClientError> {
        let resp = rb.send().await?;
        self.open(slot, expect, resp).await
    }

    /// Authenticates and opens the answer to a sealed request.
    async fn open(
        &self,
        slot: &Slot,
        expect: &ResponseExpectation,
        resp: reqwest::Response,
    ) -> Result<Response, ClientError> {
        let status = resp.status();
        if resp.headers().contains_key(&H_ERROR) {
            let tag = resp.headers().get(&H_REFUSAL).cloned();
            let mut err = refusal(resp).await;
            if let (
                Some(tag),
                ClientError::Rejected {
                    code, authenticity, ..
                },
            ) = (tag, &mut err)
            {
                use base64::Engine as _;
                let verified = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(tag.as_bytes())
                    .is_ok_and(|t| lock(&slot.session).verify_refusal(expect.seq, *code, &t));
                if verified {
                    *authenticity = RefusalAuthenticity::Authenticated;
                } else {
                    warn!(session = %slot.id, "refusal carries a tag that does not verify; treated as unauthenticated");
                }
            }
            return Err(err);
        }
        if !is_sealed_content_type(resp.headers()) {
            warn!(
                status = status.as_u16(),
                "response to a sealed request is not sealed; discarding it"
            );
            return Err(ClientError::Unsealed { status });
        }
        let mut resp = resp;
        let outer_headers = std::mem::take(resp.headers_mut());
        let mut record = read_limited(resp, self.max_response_bytes).await?;
        if record.is_empty() {
            // A response to HEAD carries its record in a header (PROTOCOL §13).
            if let Some(v) = outer_headers.get(&H_RECORD) {
                use base64::Engine as _;
                record = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(v.as_bytes())
                    .map_err(|_| ProtocolError::Malformed {
                        what: "sessioncert-record",
                    })?;
            }
        }
        if expect.full {
            let plain = Zeroizing::new(lock(&slot.session).open_response(
                expect,
                &ResponseBinding::Full,
                &record,
            )?);
            let inner = FullResponse::decode(&plain)?;
            let status = StatusCode::from_u16(inner.status)
                .map_err(|_| ProtocolError::Malformed { what: "status" })?;
            let mut headers = HeaderMap::with_capacity(inner.headers.len());
            for (k, v) in inner.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| ProtocolError::Malformed { what: "header" })?;
                let value = HeaderValue::from_bytes(&v)
                    .map_err(|_| ProtocolError::Malformed { what: "header" })?;
                headers.append(name, value);
            }
            Ok(Response::new(status, headers, inner.body.into(), true))
        } else {
            // A status that forbids a body (204, 205, 304) arrives as 200 with the real
            // status in a header; the seal binds the real one.
            let status = match outer_headers.get(&H_STATUS) {
                Some(v) if status == StatusCode::OK => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| {
                        ClientError::unexpected(Some(status), "bad sessioncert-status header")
                    })?,
                _ => status,
            };
            let mut headers = outer_headers;
            let inner_ct = headers.remove(&H_INNER_CONTENT_TYPE);
            let inner_ct_str = match &inner_ct {
                Some(v) => v.to_str().map_err(|_| {
                    ClientError::unexpected(Some(status), "sessioncert-content-type is not text")
                })?,
                None => "",
            };
            let binding = ResponseBinding::Header {
                status: status.as_u16(),
                content_type: inner_ct_str,
            };
            let has_inner_ct = !inner_ct_str.is_empty();
            // Decrypted inside the received buffer; the body is a slice of it, not a copy.
            let range =
                lock(&slot.session).open_response_in_place(expect, &binding, &mut record)?;
            let body = bytes::Bytes::from(record).slice(range);
            headers.remove(CONTENT_TYPE);
            headers.remove(CONTENT_LENGTH);
            headers.remove(&H_STATUS);
            headers.remove(&H_RECORD);
            if let Some(v) = inner_ct.filter(|_| has_inner_ct) {
                headers.insert(CONTENT_TYPE, v);
            }
            Ok(Response::new(status, headers, body, false))
        }
    }

    /// Sends a prepared request: fresh session if needed. If the answer is a session
    /// refusal, the session is dropped; the request is sent once more on a fresh
    /// session only if it was certainly not executed or is safe to send twice,
    /// otherwise the caller gets [`ClientError::OutcomeUnknown`] (as after a transport
    /// failure once the request may have reached the server).
    pub(crate) async fn execute(&self, p: &Prepared) -> Result<Response, ClientError> {
        // Whether the request was already sent once more after a session refusal.
        let mut resent = false;
        // Whether a fresh session was already taken because the old one was spent.
        let mut renewed_spent = false;
        loop {
            let slot = self.acquire().await?;
            // Nothing is sent before this succeeds, so its errors leave the request
            // unexecuted; a spent session (found at seal time) is simply replaced.
            let (rb, expect) = match self.prepare(&slot, p).await {
                Ok(x) => x,
                Err(ClientError::Protocol(ProtocolError::Exhausted)) if !renewed_spent => {
                    slot.dead.store(true, Ordering::Release);
                    renewed_spent = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let e = match self.send(&slot, rb, &expect).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let resend = may_resend(&e, p.retry_safe);
            if needs_new_session(&e) {
                // Refused (really, or by a forgery): never use this session again, here
                // or in a later process reading the session file.
                self.drop_session(&slot).await;
                if !resend {
                    warn!(
                        session = %slot.id,
                        code = ?e.code(),
                        method = %p.method,
                        "session refused after the request was sent; it may have been executed, \
                         so it is not re-sent (outcome unknown); the next request handshakes anew"
                    );
                    return Err(ClientError::OutcomeUnknown {
                        method: p.method.clone(),
                        cause: Box::new(e),
                    });
                }
                if resent {
                    return Err(e);
                }
                info!(session = %slot.id, code = ?e.code(), "server no longer accepts the session; handshaking anew and sending the request once more");
                resent = true;
                self.renew(Some(slot.generation)).await?;
                continue;
            }
            // Any other refusal of a sent request is not authenticated either: a
            // forger could send it after the server executed the request.
            if !resend && (transport_failed_after_send(&e) || unauthenticated_refusal(&e)) {
                return Err(ClientError::OutcomeUnknown {
                    method: p.method.clone(),
                    cause: Box::new(e),
                });
            }
            return Err(e);
        }
    }

    /// Stops using `slot`: marks it dead, un-installs it if it is current, and removes
    /// it from the session files unless a newer session is already there (so a later
    /// process handshakes anew instead of loading it).
    async fn drop_session(&self, slot: &Slot) {
        slot.dead.store(true, Ordering::Release);
        {
            let mut cur = lock(&self.current);
            if cur
                .as_ref()
                .is_some_and(|c| c.generation == slot.generation)
            {
                *cur = None;
            }
        }
        let mut mark = self.persisted.lock().await;
        if mark.is_some_and(|(generation, _)| generation > slot.generation) {
            return;
        }
        // Late writes of this (or an older) session must not resurrect the file.
        *mark = Some((slot.generation, u64::MAX));
        let files = lock(&self.files).clone();
        for f in files {
            if let Err(e) = file::remove(&f) {
                warn!(path = %f.display(), error = %e, "could not remove session file");
            }
        }
    }
}

impl Client {
    /// Fetches and verifies the key configuration, handshakes and confirms the session.
    pub async fn connect(base_url: &str, trust: Trust) -> Result<Client, ClientError> {
        Client::builder(base_url, trust).build().await
    }

    /// A builder for more options.
    pub fn builder(base_url: &str, trust: Trust) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_string(),
            trust,
            http: None,
            suites: Suite::ALL.to_vec(),
            session_file: None,
            lock_timeout: DEFAULT_SESSION_FILE_LOCK_TIMEOUT,
            lazy: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// A sealed request. `path_and_query` is relative to the base URL (which may have
    /// a path prefix): with base `https://api.example/v1`, `"/notes?limit=5"` goes to
    /// `https://api.example/v1/notes?limit=5`.
    pub fn request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, path_and_query)
    }

    /// A sealed `GET`.
    pub fn get(&self, path_and_query: &str) -> RequestBuilder {
        self.request(Method::GET, path_and_query)
    }

    /// A sealed `POST`.
    pub fn post(&self, path_and_query: &str) -> RequestBuilder {
        self.request(Method::POST, path_and_query)
    }

    /// A sealed `PUT`.
    pub fn put(&self, path_and_query: &str) -> RequestBuilder {
        self.request(Method::PUT, path_and_query)
    }

    /// A sealed `PATCH`.
    pub fn patch(&self, path_and_query: &str) -> RequestBuilder {
        self.request(Method::PATCH, path_and_query)
    }

    /// A sealed `DELETE`.
    pub fn delete(&self, path_and_query: &str) -> RequestBuilder {
        self.request(Method::DELETE, path_and_query)
    }

    pub(crate) fn url(&self, path_and_query: &str) -> Result<Url, ClientError> {
        self.inner.url(path_and_query)
    }

    /// Closes the session on the server (sealed `POST /.well-known/sessioncert/close`)
    /// and forgets it, deleting its session files. The next request handshakes anew.
    /// The session is forgotten even if the close request fails (the error is
    /// returned); a server that already forgot the session counts as success.
    pub async fn close(&self) -> Result<(), ClientError> {
        let _single_flight = self.inner.handshake_lock.lock().await;
        let Some(slot) = self.inner.current() else {
            return Ok(());
        };
        let result = if slot.usable(now_ms()) {
            let p = Prepared {
                method: Method::POST,
                url: self.url(wire::CLOSE_PATH)?,
                headers: HeaderMap::new(),
                content_type: None,
                body: Bytes::new(),
                full: false,
                timeout: None,
                retry_safe: false,
                cover: Vec::new(),
            };
            match self.inner.exchange(&slot, &p).await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(ClientError::unexpected(
                    Some(r.status()),
                    "server did not close the session",
                )),
                Err(e) if needs_new_session(&e) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        self.inner.drop_session(&slot).await;
        info!(session = %slot.id, "session closed");
        result
    }

    /// Runs a fresh handshake now and makes it the current session (requests already
    /// in flight finish on the old one).
    pub async fn rehandshake(&self) -> Result<(), ClientError> {
        let _single_flight = self.inner.handshake_lock.lock().await;
        self.inner.install_new_session().await.map(|_| ())
    }

    /// The current session, if any.
    pub async fn session_info(&self) -> Option<SessionInfo> {
        self.inner.current().map(|s| s.info())
    }

    /// Saves the current session to `path` (atomically, mode 0600 on unix) so another
    /// process can continue it with [`ClientBuilder::session_file`]. From then on this
    /// client keeps `path` up to date after every sealed request as well, so the file
    /// can never hold a sequence number this client already used.
    ///
    /// Like [`ClientBuilder::session_file`], this takes the file's exclusive lock (held
    /// until the client is dropped; [`ClientError::SessionFileBusy`] if another holder
    /// keeps it past the lock timeout) and never overwrites a file that is not a session
    /// file ([`ClientError::NotASessionFile`]).
    pub async fn save_session(&self, path: &Path) -> Result<(), ClientError> {
        let slot = self.inner.current().ok_or(ClientError::NoSession)?;
        let lock_path = file::lock_path(path)?;
        let held = lock(&self.inner.file_locks)
            .iter()
            .any(|l| l.lock_path() == lock_path);
        if !held {
            let new_lock = SessionLock::acquire(path, self.inner.lock_timeout).await?;
            file::check_replaceable(path)?;
            let mut locks = lock(&self.inner.file_locks);
            // A concurrent `save_session` to the same file may have won; one lock is enough.
            if !locks.iter().any(|l| l.lock_path() == new_lock.lock_path()) {
                locks.push(new_lock);
            }
        }
        let (secrets, next_seq) = {
            let s = lock(&slot.session);
            let mut files = lock(&self.inner.files);
            if !files.iter().any(|f| f == path) {
                files.push(path.to_path_buf());
            }
            (s.export(), s.next_seq())
        };
        self.inner.persist(&slot, next_seq, secrets, true).await
    }

    /// The verified server identity (the pin, or what was accepted on first use).
    pub fn identity(&self) -> Pin {
        self.inner.identity
    }

    /// The base URL requests are relative to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    /// The fast join must give exactly what a full parse of the concatenation gives,
    /// because the path and query it produces are bound into every seal.
    #[test]
    fn join_matches_a_full_parse() {
        for base in [
            "http://127.0.0.1:8080",
            "http://h:1/api",
            "https://example.com/api/",
        ] {
            let b = Url::parse(base).unwrap();
            for pq in [
                "/apiTest",
                "/a b/c?x=1 2&y=%20",
                "/notes/1?q=é",
                "/../x/./y",
                "//double",
                "/p?",
                "/frag#x",
                "rel",
                "/%7Euser",
            ] {
                let mut s = b.as_str().trim_end_matches('/').to_string();
                if !pq.starts_with('/') {
                    s.push('/');
                }
                s.push_str(pq);
                let mut want = Url::parse(&s).unwrap();
                want.set_fragment(None);
                assert_eq!(
                    join(&b, pq).unwrap().as_str(),
                    want.as_str(),
                    "{base} + {pq}"
                );
            }
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    fn refusal_with(code: ErrorCode, authenticity: RefusalAuthenticity) -> ClientError {
        ClientError::Rejected {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: String::new(),
            retry_after: None,
            authenticity,
        }
    }

    /// The decision a later protocol version plugs into: an authenticated refusal proves
    /// the request was not executed, so even a POST may be re-sent after one; an
    /// unauthenticated one (every v1 refusal) proves nothing.
    #[test]
    fn only_an_authenticated_refusal_or_a_retry_safe_request_allows_a_resend() {
        for code in [
            ErrorCode::UnknownSession,
            ErrorCode::SessionExpired,
            ErrorCode::SessionClosed,
        ] {
            let forged = refusal_with(code, RefusalAuthenticity::Unauthenticated);
            assert!(needs_new_session(&forged));
            assert_eq!(execution_of(&forged), Execution::Unknown);
            assert!(!may_resend(&forged, false), "{code}");
            assert!(may_resend(&forged, true), "{code}");

            let authentic = refusal_with(code, RefusalAuthenticity::Authenticated);
            assert_eq!(execution_of(&authentic), Execution::NotExecuted);
            assert!(may_resend(&authentic, false), "{code}");
        }
        assert!(!transport_failed_after_send(&refusal_with(
            ErrorCode::SessionExpired,
            RefusalAuthenticity::Unauthenticated
        )));
        assert_eq!(
            execution_of(&ClientError::Protocol(ProtocolError::BadSeal)),
            Execution::Unknown
        );
    }

    /// A connection that was never made sent nothing: not an unknown outcome.
    #[tokio::test]
    async fn a_refused_connection_is_known_not_executed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e: ClientError = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/notes"))
            .body("x")
            .send()
            .await
            .unwrap_err()
            .into();
        assert_eq!(execution_of(&e), Execution::NotExecuted, "{e:?}");
        assert!(may_resend(&e, false));
        assert!(!transport_failed_after_send(&e));
    }
}
