//! The public client: [`Client`], [`ClientBuilder`], [`SessionInfo`], the shared state
//! behind them ([`Inner`]) and a few small helpers. The work is split along the data
//! flow, one submodule per step, so a change has an obvious home:
//!
//! * [`config`]: fetching and verifying the signed key configuration, and its cache.
//! * [`handshake`]: starting sessions ([`Slot`]) and deciding when to start a new one.
//! * [`persist`]: keeping the session in session files (the format is `crate::file`).
//! * [`exchange`]: sealing a request, sending it, opening the answer, refusals and the
//!   at-most-once retry rules.

mod config;
mod exchange;
mod handshake;
mod persist;

use self::handshake::Slot;
use crate::file::SessionLock;
use crate::request::RequestBuilder;
use crate::ClientError;
use http::{HeaderValue, Method};
use reqwest::Url;
use sessioncert_proto::{Pin, SessionId, Suite, Trust, VerifiedKeyConfig};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{info, warn};

/// Default connect timeout of the built-in HTTP client.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default total request timeout of the built-in HTTP client.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on a response body (sealed record or refusal) read into memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Default longest time a streamed exchange may go without progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most bytes of a streamed request body buffered when the server did not
/// negotiate streams.
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 4 * 1024 * 1024;
/// Default longest wait for the lock of a session file another client holds.
pub const DEFAULT_SESSION_FILE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Whether the session negotiated streamed records (PROTOCOL §8.5): request bodies
    /// over 64 KiB from a stream go as sealed chunks, and responses may come so.
    pub streams: bool,
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
    /// The pins configurations are checked against (never trust on first use here: that
    /// was narrowed to the identity accepted first).
    trust: Trust,
    /// The identity of the configuration accepted last (what session files record).
    identity: Mutex<Pin>,
    suites: Vec<Suite>,
    max_response_bytes: usize,
    /// Whether handshakes offer streamed records.
    offer_streams: bool,
    /// Most bytes of a streamed body buffered when the session has no streams.
    max_buffered_body: usize,
    /// Longest time a streamed exchange may go without progress.
    idle_timeout: Option<Duration>,
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

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn new(
        base: Url,
        base_str: String,
        http: reqwest::Client,
        trust: Trust,
        identity: Pin,
        suites: Vec<Suite>,
        max_response_bytes: usize,
        config: Option<VerifiedKeyConfig>,
        config_floor: u64,
        files: Vec<PathBuf>,
        file_locks: Vec<SessionLock>,
        lock_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let origin = base.origin().ascii_serialization();
        Ok(Inner {
            target_header: HeaderValue::from_str(&origin)
                .map_err(|_| ClientError::InvalidUrl("origin is not a header value".into()))?,
            target: origin,
            base,
            base_str,
            http,
            trust,
            identity: Mutex::new(identity),
            suites,
            max_response_bytes,
            offer_streams: true,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            // Never below what an earlier process accepted (kept in the session file).
            config_high_water: AtomicU64::new(
                config
                    .as_ref()
                    .map_or(0, |c| c.issued_at_ms)
                    .max(config_floor),
            ),
            config: Mutex::new(config),
            current: Mutex::new(None),
            next_generation: AtomicU64::new(1),
            handshake_lock: tokio::sync::Mutex::new(()),
            files: Mutex::new(files),
            file_locks: Mutex::new(file_locks),
            lock_timeout,
            persisted: tokio::sync::Mutex::new(None),
        })
    }

    /// Makes a session loaded from a file the current one.
    fn install_loaded(&self, l: crate::file::LoadedSession, now: u64) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let last_used = l.modified_ms.unwrap_or(now).min(now);
        let slot = Slot::new(
            generation,
            l.session,
            l.expires_at_ms,
            l.idle_timeout_ms,
            last_used,
        );
        info!(session = %slot.id, next_seq = slot.info().next_seq, "continuing session from session file");
        *lock(&self.current) = Some(Arc::new(slot));
    }
}

/// The session file `path` holds a live session with another server and is about to
/// be given to this one: close that session on its own server (sealed close) so it is
/// not left live there until it expires. The session is cleared from the file first
/// (the file keeps that server's identity), so its keys can never seal another message
/// after this close, whatever happens next. Best effort: a failure is logged and the
/// session then lives on there until it expires, as it would have.
async fn close_other_servers_session(
    path: &std::path::Path,
    other: crate::file::LoadedSession,
    http: &reqwest::Client,
    max_response_bytes: usize,
) {
    let cleared = crate::file::KnownServer {
        base_url: other.base_url.clone(),
        pin: other.pin,
        config_issued_at_ms: other.config_issued_at_ms,
    }
    .to_json()
    .and_then(|json| crate::file::write_atomic(path, &json).map_err(ClientError::from));
    if let Err(e) = cleared {
        warn!(path = %path.display(), error = %e, "could not clear the other server's session from the session file; leaving it");
        return;
    }
    let (old_base, old_base_str) = match parse_base(&other.base_url) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "session file names an unusable base URL; its session is not closed");
            return;
        }
    };
    let now = now_ms();
    let inner = match Inner::new(
        old_base,
        old_base_str,
        http.clone(),
        Trust::Pin(other.pin),
        other.pin,
        vec![other.session.suite()],
        max_response_bytes,
        None,
        other.config_issued_at_ms,
        Vec::new(),
        Vec::new(),
        Duration::ZERO,
    ) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            warn!(error = %e, "cannot close the other server's session");
            return;
        }
    };
    let base = other.base_url.clone();
    inner.install_loaded(other, now);
    // Briefly: the old server may be gone, and this is not the request the user asked for.
    let closed = tokio::time::timeout(Duration::from_secs(2), (Client { inner }).close())
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::unexpected(
                None,
                "no answer to the close within 2 s",
            ))
        });
    match closed {
        Ok(()) => info!(
            path = %path.display(),
            server = %base,
            "the session file held a session with another server; closed it there"
        ),
        Err(e) => warn!(
            path = %path.display(),
            server = %base,
            error = %e,
            "the session file held a session with another server; closing it there failed, so it stays live there until it expires"
        ),
    }
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
            .field("identity", &*lock(&self.inner.identity))
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
    streams: bool,
    max_buffered_body: usize,
    idle_timeout: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: crate::TlsOptions,
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
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Uses this HTTP client (for proxies, timeouts, …) instead of the built-in one
    /// (connect timeout 10 s, request timeout 60 s, HTTPS with the `tls` feature, on by
    /// default). [`crate::TlsOptions::configure`] gives one the same TLS settings as
    /// the built-in client.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// TLS settings of the built-in HTTP client (default: the platform's trust store;
    /// ignored with [`ClientBuilder::http_client`]). Whatever TLS accepts, the server's
    /// identity is still checked against the trust given to [`Client::builder`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::TlsOptions) -> Self {
        self.tls = tls;
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

    /// Whether to offer streamed records in handshakes (default `true`). Off, bodies
    /// always travel as single records, as with a server that does not support them.
    pub fn streams(mut self, offer: bool) -> Self {
        self.streams = offer;
        self
    }

    /// Most bytes of a stream, reader or file body buffered to send it as one record
    /// when the session did not negotiate streamed records (default 4 MiB); a larger
    /// one fails with [`ClientError::StreamsNotNegotiated`].
    pub fn max_buffered_body(mut self, max: usize) -> Self {
        self.max_buffered_body = max;
        self
    }

    /// Longest time a streamed exchange — a streamed request body being sent, or a
    /// response read with [`crate::RequestBuilder::send_streaming`] — may go without a
    /// chunk moving before it fails with [`ClientError::Stalled`] (default 60 s; `None`:
    /// no limit). Such exchanges have no total time limit unless the request sets one.
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
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
            None => {
                let builder = reqwest::Client::builder();
                #[cfg(feature = "tls")]
                let builder = self.tls.configure(builder)?;
                builder
                    .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
                    // Below the server's 60 s keep-alive, so a request is never written to
                    // a connection the server is closing (a failure after sending would
                    // leave its outcome unknown).
                    .pool_idle_timeout(Duration::from_secs(45))
                    .timeout(DEFAULT_REQUEST_TIMEOUT)
                    .build()?
            }
        };
        // Lock first, then read: the sequence number read can never be stale.
        let file_lock = match &self.session_file {
            Some(path) => Some(SessionLock::acquire(path, self.lock_timeout).await?),
            None => None,
        };
        let now = now_ms();
        let (loaded, config_floor, known_pin) = match &self.session_file {
            Some(path) => {
                let f = persist::load_matching(path, &base_str, &self.trust, &self.suites, now)?;
                if let Some(other) = f.other_server {
                    close_other_servers_session(path, other, &http, self.max_response_bytes).await;
                }
                (f.session, f.config_issued_at_ms, f.known_pin)
            }
            None => (None, 0, None),
        };

        let mut config = None;
        let (trust, identity) = match (&self.trust, known_pin) {
            (Trust::Pin(pin), _) => (Trust::Pin(*pin), *pin),
            // Before a configuration is fetched: the identity a matching file recorded,
            // else the first pin (replaced by the identity of the first configuration).
            (Trust::AnyOf(pins), known) => {
                let first = known
                    .filter(|k| pins.contains(k))
                    .or_else(|| pins.first().copied())
                    .ok_or(ClientError::Untrusted {
                        reason: "no pin given: the set of trusted pins is empty",
                        presented: None,
                    })?;
                (self.trust.clone(), first)
            }
            // Trust on first use means first: an identity this file recorded for this
            // server stays the trusted one (as ssh's known_hosts), session or not.
            (Trust::FirstUse, Some(pin)) => {
                warn!(
                    pin = %pin,
                    "server identity is NOT pinned (trust on first use): trusting the identity \
                     recorded in the session file; pin it with Trust::Pin(\"{}\")",
                    pin
                );
                (Trust::Pin(pin), pin)
            }
            (Trust::FirstUse, None) => {
                let cfg = config::fetch_config(&http, &base, &Trust::FirstUse).await?;
                let pin = cfg.identity;
                config = Some(cfg);
                (Trust::Pin(pin), pin)
            }
        };

        if let Some(c) = &config {
            if c.issued_at_ms < config_floor {
                return Err(ClientError::Untrusted {
                    reason: "the server sent an older key configuration than one already accepted",
                    presented: Some(c.identity),
                });
            }
        }
        let mut inner = Inner::new(
            base,
            base_str,
            http,
            trust,
            identity,
            self.suites,
            self.max_response_bytes,
            config,
            config_floor,
            self.session_file.into_iter().collect(),
            file_lock.into_iter().collect(),
            self.lock_timeout,
        )?;
        inner.offer_streams = self.streams;
        inner.max_buffered_body = self.max_buffered_body;
        inner.idle_timeout = self.idle_timeout;
        let inner = Arc::new(inner);

        if let Some(l) = loaded {
            inner.install_loaded(l, now);
        } else if !self.lazy {
            inner.renew(None).await?;
        }
        Ok(Client { inner })
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
    if !has_canonical_origin(&url) {
        return Err(ClientError::InvalidUrl(format!(
            "{s}: the origin has no canonical spelling (PROTOCOL §8.2): use a host without \
             a trailing dot, of letters, digits, '-', '_' and '.', and a port other than 0"
        )));
    }
    let base_str = url.as_str().trim_end_matches('/').to_string();
    Ok((url, base_str))
}

/// Whether the origin of `url` (as `ascii_serialization` writes it, the
/// `sessioncert-target` value) is one a server accepts (PROTOCOL §8.2). The url crate
/// already writes the scheme and host in lower case, omits the default port and
/// normalizes IP addresses; it keeps a trailing dot (`api.example.com.`, which names the
/// same host as `api.example.com`), port 0, empty labels and a few characters a
/// registered name may not hold here.
fn has_canonical_origin(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host_ok = host.starts_with('[')
        || host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    host_ok && url.port() != Some(0)
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

impl Inner {
    fn url(&self, path_and_query: &str) -> Result<Url, ClientError> {
        join(&self.base, path_and_query)
    }

    fn current(&self) -> Option<Arc<Slot>> {
        lock(&self.current).clone()
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
            streams: true,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            #[cfg(feature = "tls")]
            tls: crate::TlsOptions::default(),
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
            let p = self.inner.close_request()?;
            match self.inner.exchange(&slot, &p).await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(ClientError::unexpected(
                    Some(r.status()),
                    "server did not close the session",
                )),
                Err(e) if exchange::needs_new_session(&e) => Ok(()),
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

    /// The server identity verified last (the pin, one of the pins, or what was
    /// accepted on first use).
    pub fn identity(&self) -> Pin {
        *lock(&self.inner.identity)
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
