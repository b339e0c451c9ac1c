//! What `serve` and `gateway` share: the server's settings (keys and data, the session
//! store, limits, the TLS listener, the operator's endpoints, logs) and the one startup
//! path that turns them into a running server and stops it cleanly. Each command adds
//! only its own routes.

use super::{parse_duration, DEFAULT_DATA_DIR};
use crate::admin;
use anyhow::Context;
use clap::Args;
use sessioncert_proto::{Pin, ServerPolicy, Suite};
use sessioncert_server::keys::{DATABASE_FILE, STORAGE_KEY_ENV, STORAGE_KEY_FILE};
use sessioncert_server::{now_ms, Limits, ListenerLimits, ServerKeys, SessionCert};
use sessioncert_store::{MemoryStore, SessionStore, SqliteStore, StoreError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Log target of the start and stop lines, shown at any log level.
pub const START_STOP: &str = "sessioncert::start_stop";

/// How long open connections may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The settings `serve` and `gateway` share (each adds `--addr` with its own default,
/// and its own settings).
#[derive(Args)]
pub struct ServerArgs {
    /// Read settings from this TOML file (keys: the long flag names). Flags and
    /// environment variables override it.
    #[arg(long, env = "SESSIONCERT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: identity, handshake keys, storage key, sessions.db. Created on first start.
    #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Keep sessions in memory only (nothing survives a restart); the same as
    /// `--store memory:`.
    #[arg(long)]
    pub memory: bool,
    /// Where sessions are kept: `sqlite:PATH`, `memory:`, `redis://…` or `postgres://…`.
    /// Default: SQLite in --data (sessions.db).
    #[arg(long, env = "SESSIONCERT_STORE", value_name = "URL", value_parser = parse_store_url)]
    pub store: Option<StoreUrl>,
    /// Session lifetime.
    #[arg(long, env = "SESSIONCERT_SESSION_LIFETIME", default_value = "24h", allow_hyphen_values = true, value_parser = parse_duration)]
    pub session_lifetime: Duration,
    /// Idle timeout of a session.
    #[arg(long, env = "SESSIONCERT_IDLE_TIMEOUT", default_value = "30m", allow_hyphen_values = true, value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Record suites to accept, comma separated: aes-256-gcm, chacha20-poly1305.
    #[arg(
        long,
        env = "SESSIONCERT_SUITES",
        default_value = "aes-256-gcm,chacha20-poly1305"
    )]
    pub suites: String,
    /// Largest buffered sealed request body in bytes (413 above). Streamed bodies have
    /// their own limit, --max-stream-body.
    #[arg(long, env = "SESSIONCERT_MAX_BODY", default_value_t = 4 * 1024 * 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    pub max_body: usize,
    /// Largest streamed request body (plaintext) a handler is given, or `none`; a route
    /// may set its own. A stream holds one 64 KiB chunk in memory whatever its size, so
    /// this bounds what one request can make a handler consume or store.
    #[arg(long, env = "SESSIONCERT_MAX_STREAM_BODY", default_value = "1GiB", allow_hyphen_values = true, value_parser = parse_size_or_none)]
    pub max_stream_body: SizeOrNone,
    /// Largest response body a sealed handler may produce for a client that did not
    /// negotiate streamed bodies, in bytes (sealing it as one record holds it whole;
    /// above it the client gets a sealed 500). Streamed responses hold one 64 KiB chunk
    /// and have no such limit.
    #[arg(long, env = "SESSIONCERT_MAX_RESPONSE", default_value_t = 16 * 1024 * 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    pub max_response: usize,
    /// Bytes of sealed responses held at once server-wide until their peers take them;
    /// above it new sealed requests get 503 before they run.
    #[arg(long, env = "SESSIONCERT_MAX_INFLIGHT_RESPONSE", default_value_t = 128 * 1024 * 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    pub max_inflight_response: usize,
    /// Handshakes per second per client address (429 above).
    #[arg(long, env = "SESSIONCERT_HANDSHAKE_RATE", default_value_t = 20.0, allow_hyphen_values = true, value_parser = super::parse_number::<f64>)]
    pub handshake_rate: f64,
    /// Burst of handshakes per client address.
    #[arg(long, env = "SESSIONCERT_HANDSHAKE_BURST", default_value_t = 60.0, allow_hyphen_values = true, value_parser = super::parse_number::<f64>)]
    pub handshake_burst: f64,
    /// Live sessions per client address (429 above).
    #[arg(long, env = "SESSIONCERT_MAX_SESSIONS_PER_ADDR", default_value_t = 256, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    pub max_sessions_per_addr: u32,
    /// Live sessions held at once, server-wide (503 above; about 2 KiB each).
    #[arg(long, env = "SESSIONCERT_MAX_SESSIONS", default_value_t = 500_000, allow_hyphen_values = true, value_parser = super::parse_number::<usize>)]
    pub max_sessions: usize,
    /// Apply the per-address limits to loopback clients too (by default they are exempt so
    /// local benchmarks measure the protocol; turn this on behind a local reverse proxy).
    #[arg(long, env = "SESSIONCERT_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Connections open at once, server-wide (further peers wait to be accepted).
    #[arg(long, env = "SESSIONCERT_MAX_CONNECTIONS", default_value_t = 1024, allow_hyphen_values = true, value_parser = super::parse_number::<usize>)]
    pub max_connections: usize,
    /// Connections open at once from one client address (429 above; loopback exempt
    /// unless --limit-loopback).
    #[arg(
        long,
        env = "SESSIONCERT_MAX_CONNECTIONS_PER_ADDR",
        default_value_t = 64,
        allow_hyphen_values = true,
        value_parser = super::parse_number::<usize>
    )]
    pub max_connections_per_addr: usize,
    /// Time a request head may take from its first byte (from the connection's start for
    /// the first request, TLS handshake included); the connection is closed after it. 0s
    /// disables.
    #[arg(long, env = "SESSIONCERT_HEADER_TIMEOUT", default_value = "10s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Time a request body may take, extended by 1 s per --body-min-rate bytes received
    /// (408 and the connection closed when slower). 0s disables.
    #[arg(long, env = "SESSIONCERT_BODY_TIMEOUT", default_value = "10s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Bytes per second a request body must keep up after --body-timeout.
    #[arg(long, env = "SESSIONCERT_BODY_MIN_RATE", default_value_t = 8 * 1024, allow_hyphen_values = true, value_parser = super::parse_number::<u64>)]
    pub body_min_rate: u64,
    /// Request-body bytes held in memory at once, server-wide (503 when spent; at least --max-body).
    #[arg(long, env = "SESSIONCERT_MAX_INFLIGHT_BODY", default_value_t = 64 * 1024 * 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    pub max_inflight_body: usize,
    /// Request-body bytes the bodies of one client address may hold at once (503 above;
    /// loopback exempt unless --limit-loopback). At least --max-body.
    #[arg(
        long,
        env = "SESSIONCERT_MAX_INFLIGHT_BODY_PER_ADDR",
        default_value_t = 16 * 1024 * 1024,
        allow_hyphen_values = true,
        value_parser = super::parse_size
    )]
    pub max_inflight_body_per_addr: usize,
    /// How long a request body waits for that budget before its request gets 503.
    #[arg(long, env = "SESSIONCERT_BODY_BUDGET_WAIT", default_value = "2s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub body_budget_wait: Duration,
    /// Close a connection with no request in flight and no byte moving for this long
    /// (the keep-alive timeout; also a peer that stopped reading). 0s disables.
    #[arg(long, env = "SESSIONCERT_CONN_IDLE_TIMEOUT", default_value = "60s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub conn_idle_timeout: Duration,
    /// Close a connection whose peer accepts none of its response bytes for this long,
    /// freeing the response it held. 0s disables.
    #[arg(long, env = "SESSIONCERT_WRITE_STALL_TIMEOUT", default_value = "10s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub write_stall_timeout: Duration,
    /// Largest request head (request line + headers) in bytes (431 above); also each
    /// connection's read buffer.
    #[arg(long, env = "SESSIONCERT_MAX_HEADER_BYTES", default_value_t = 16 * 1024, allow_hyphen_values = true, value_parser = super::parse_size)]
    pub max_header_bytes: usize,
    /// Also accept HTTP/2: cleartext with prior knowledge (h2c), or h2 offered by ALPN
    /// with --tls-cert. Off: HTTP/1.1 only.
    #[arg(long, env = "SESSIONCERT_HTTP2")]
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, env = "SESSIONCERT_HTTP2_MAX_STREAMS", default_value_t = 32, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    pub http2_max_streams: u32,
    /// Origins clients may seal requests for, as they call the server (scheme://host[:port],
    /// lower case, default port omitted; repeat or comma-separate). Others get 421
    /// misdirected. Default: any origin.
    #[arg(
        long = "public-origin",
        env = "SESSIONCERT_PUBLIC_ORIGINS",
        value_delimiter = ','
    )]
    pub public_origins: Vec<String>,
    /// Answer CORS for web apps on this origin (scheme://host[:port], as browsers send
    /// it; repeat or comma-separate): preflights of the protocol endpoints, the sealed
    /// routes and /sessioncert.js, and the protocol's response headers exposed. `*` is
    /// refused. Default: none (same-origin pages only).
    #[arg(
        long = "cors-origin",
        env = "SESSIONCERT_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_cors_origin
    )]
    pub cors_origins: Vec<http::HeaderValue>,
    /// Terminate TLS: the certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, env = "SESSIONCERT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC). Needs --tls-cert.
    #[arg(long, env = "SESSIONCERT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Also serve clients of the original Session-Cert prototype (its /sessionCert/…
    /// handshake and session-cert-id requests to the same routes), beside the protocol's
    /// own, while they migrate. Needs a store held by one instance (SQLite or memory).
    #[arg(long, env = "SESSIONCERT_LEGACY_SESSION_CERT")]
    pub legacy_session_cert: bool,
    /// Size of the legacy mode's RSA key (made at start, in memory only, replaced daily):
    /// 2048, 3072 or 4096 bits.
    #[arg(long, env = "SESSIONCERT_LEGACY_RSA_BITS", default_value_t = 2048, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    pub legacy_rsa_bits: u32,
    /// Protected requests one legacy session may carry before it expires (each keeps 16
    /// bytes in memory until the session ends, so replays stay refused).
    #[arg(long, env = "SESSIONCERT_LEGACY_MAX_REQUESTS", default_value_t = 1000, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    pub legacy_max_requests: u32,
    /// Legacy sessions held at once, waiting for their establish or established (503
    /// above): with --legacy-max-requests it bounds what legacy mode can hold (about
    /// 16 bytes a request each).
    #[arg(long, env = "SESSIONCERT_LEGACY_MAX_SESSIONS", default_value_t = 20_000, allow_hyphen_values = true, value_parser = super::parse_number::<usize>)]
    pub legacy_max_sessions: usize,
    /// Log format.
    #[arg(long, env = "SESSIONCERT_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// Serve /metrics, /healthz and /readyz on this address only (the serving address
    /// then answers them 404). Default: on the serving address.
    #[arg(long, env = "SESSIONCERT_ADMIN_ADDR", value_parser = super::parse_listen_addr)]
    pub admin_addr: Option<SocketAddr>,
}

fn parse_cors_origin(s: &str) -> Result<http::HeaderValue, String> {
    crate::web::cors::check_origin(s)
}

fn parse_suites(s: &str) -> anyhow::Result<Vec<Suite>> {
    let suites: Vec<Suite> = s
        .split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| Suite::from_name(x).with_context(|| format!("unknown suite {x:?}")))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!suites.is_empty(), "no suites given");
    Ok(suites)
}

/// Where sessions are kept (`--store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// SQLite at this path (`sqlite:PATH`); `None`: `sessions.db` in the data directory.
    Sqlite(Option<PathBuf>),
    /// In memory only (`memory:`).
    Memory,
    /// A Redis server (`redis://…`, `rediss://…`), shared by instances.
    Redis(String),
    /// A PostgreSQL database (`postgres://…`, `postgresql://…`), shared by instances.
    Postgres(String),
    /// A value that is none of these but may hold a password: refused when the server
    /// starts, with this message (clap's own error would repeat the value as given).
    Invalid(String),
}

impl StoreUrl {
    /// The URL without any password it holds, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(None) => "sqlite: (sessions.db in --data)".to_owned(),
            StoreUrl::Sqlite(Some(p)) => format!("sqlite:{}", p.display()),
            StoreUrl::Memory => "memory:".to_owned(),
            StoreUrl::Redis(u) | StoreUrl::Postgres(u) => redact_url(u),
            StoreUrl::Invalid(_) => "(invalid)".to_owned(),
        }
    }
}

// Never the password: a `Debug` of the settings must not print it.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with the password of its user info (`scheme://user:PASSWORD@host`) replaced by
/// `***`.
pub fn redact_url(url: &str) -> String {
    let Some(at) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[at..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| at + i);
    let Some(userinfo_end) = url[at..end].rfind('@').map(|i| at + i) else {
        return url.to_owned();
    };
    match url[at..userinfo_end].find(':') {
        Some(colon) => format!("{}:***{}", &url[..at + colon], &url[userinfo_end..]),
        None => url.to_owned(),
    }
}

/// Parses `--store`.
pub fn parse_store_url(s: &str) -> Result<StoreUrl, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    if lower == "memory:" || lower == "memory" {
        return Ok(StoreUrl::Memory);
    }
    if lower.starts_with("redis://") || lower.starts_with("rediss://") {
        return Ok(StoreUrl::Redis(t.to_owned()));
    }
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(t.to_owned()));
    }
    if lower.starts_with("sqlite:") {
        let path = &t["sqlite:".len()..];
        // `sqlite:///abs/path` as in other tools' URLs: the third slash starts the path.
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(StoreUrl::Sqlite(
            (!path.is_empty()).then(|| PathBuf::from(path)),
        ));
    }
    let e = format!(
        "unknown store {:?}: expected sqlite:PATH, memory:, redis://HOST[:PORT][/DB][?prefix=NAME] or postgres://USER@HOST/DB",
        redact_url(t)
    );
    if t.contains('@') {
        return Ok(StoreUrl::Invalid(format!("--store: {e}")));
    }
    Err(e)
}

/// The store the settings choose (`--memory` is `--store memory:`; the default is SQLite
/// in --data).
fn store_choice(a: &ServerArgs) -> anyhow::Result<StoreUrl> {
    match (&a.store, a.memory) {
        (Some(StoreUrl::Invalid(e)), _) => anyhow::bail!("{e}"),
        (Some(s), true) if *s != StoreUrl::Memory => anyhow::bail!(
            "--memory and --store {} say different things: set one (--memory is --store memory:)",
            s.redacted()
        ),
        (Some(s), _) => Ok(s.clone()),
        (None, true) => Ok(StoreUrl::Memory),
        (None, false) => Ok(StoreUrl::Sqlite(None)),
    }
}

/// Opens the session store the settings choose: the one place the CLI does.
pub async fn open_store(
    a: &ServerArgs,
    keys: &ServerKeys,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    let choice = store_choice(a)?;
    match choice {
        StoreUrl::Invalid(e) => anyhow::bail!("{e}"),
        StoreUrl::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreUrl::Sqlite(path) => {
            let path = path.unwrap_or_else(|| a.data.join(DATABASE_FILE));
            open_sqlite(path, &a.data, keys.storage_key().key_id()).await
        }
        // Shared stores: every instance on the same URL (and prefix or schema) serves the
        // same sessions. The store's errors never repeat a password.
        StoreUrl::Redis(url) => Ok(Arc::new(
            sessioncert_store::RedisStore::connect(&url)
                .await
                .with_context(|| format!("--store {}", redact_url(&url)))?,
        )),
        StoreUrl::Postgres(url) => Ok(Arc::new(
            sessioncert_store::PostgresStore::connect(&url)
                .await
                .with_context(|| format!("--store {}", redact_url(&url)))?,
        )),
    }
}

/// Opens the SQLite store, waiting briefly if a previous server is still shutting down.
async fn open_sqlite(
    path: PathBuf,
    data: &Path,
    storage_key_id: String,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = path.clone();
        let id = storage_key_id.clone();
        match tokio::task::spawn_blocking(move || SqliteStore::open_server(&p, &id)).await? {
            Ok((store, report)) => {
                if report.unclean_previous_shutdown {
                    tracing::warn!(
                        expired = report.sessions_expired_by_recovery,
                        "previous run did not shut down cleanly: live sessions expired (clients re-handshake)"
                    );
                }
                return Ok(Arc::new(store));
            }
            Err(StoreError::AlreadyInUse(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e @ StoreError::StorageKeyMismatch { .. }) => {
                let source = if std::env::var_os(STORAGE_KEY_ENV).is_some() {
                    format!("{STORAGE_KEY_ENV} (set now)")
                } else {
                    format!(
                        "{} ({STORAGE_KEY_ENV} is not set now)",
                        data.join(STORAGE_KEY_FILE).display()
                    )
                };
                return Err(e).with_context(|| {
                    format!(
                        "refusing to start: {} was written with another storage key than this \
                         start's, from {source}. Start with the key the sessions were sealed \
                         under (was {STORAGE_KEY_ENV} set before?), or move {} away to start \
                         with no sessions. Nothing was changed",
                        path.display(),
                        path.display()
                    )
                });
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The start and stop lines (address, pin, sessions kept) whatever the level:
        // an operator who turns logs down to warnings still needs the pin.
        .add_directive(
            format!("{START_STOP}=info")
                .parse()
                .expect("a valid directive"),
        );
    // Colour only for a person at a terminal: never into files and pipes, never with
    // NO_COLOR (https://no-color.org) set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    // A log line that cannot be written (a full disk, a closed pipe) is lost, never
    // reported with `eprintln!`, which panics when stderr fails and took the server down.
    if format == "json" {
        b.json().log_internal_errors(false).init();
    } else {
        b.log_internal_errors(false).init();
    }
}

/// Binds `addr` without listening yet (a busy port fails here, before any other work).
fn reserve_port(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's listener: a port in TIME_WAIT is reusable, one that is listened on is not.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // SIGTERM, and SIGHUP (a closed terminal or ssh session): both stop cleanly, as
    // Ctrl-C does; dying on SIGHUP expired every session at the next start.
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut t), Ok(mut h)) => {
                let which = tokio::select! {
                    _ = t.recv() => "SIGTERM",
                    _ = h.recv() => "SIGHUP",
                };
                tracing::info!(signal = which, "stopping");
            }
            _ => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "stopping"),
        _ = term => {},
    }
}

/// What a command gets to build its routes from, once the server is ready to.
pub struct Ready<'a> {
    /// The session table and protocol endpoints.
    pub sc: &'a SessionCert,
    /// The identity's pin.
    pub pin: &'a Pin,
    /// Whether the serving address terminates TLS.
    pub tls: bool,
    /// The settings.
    pub args: &'a ServerArgs,
}

/// What a command serves.
pub struct App {
    /// The serving address's routes, without the operator's endpoints.
    pub routes: axum::Router,
    /// A readiness condition of the command's own (the gateway's upstream), beside the
    /// server's (not stopping, the store reachable and writable).
    pub ready: Option<admin::ReadyCheck>,
    /// With --admin-addr, answer the operator's paths `404` on the serving address
    /// (`serve`), rather than leave them to `routes` (`gateway`: they may be the
    /// upstream's).
    pub hide_admin_paths: bool,
    /// Writes the start line, once the server listens.
    pub announce: Box<dyn FnOnce(&Listening) + Send>,
}

/// Where the server listens, for the start line.
pub struct Listening {
    /// The address really listened on (`--addr :0` picks a free port).
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The operator's address, or "the serving address".
    pub admin: String,
}

/// Runs a server until SIGINT, SIGTERM or SIGHUP, then lets in-flight requests finish
/// (within the grace), persists sessions and returns. `settings` is the one-line summary
/// of the effective settings, logged first; `build` makes the command's routes once the
/// keys, the store and the session table are ready.
pub async fn run(
    addr: SocketAddr,
    a: ServerArgs,
    settings: String,
    build: impl FnOnce(Ready<'_>) -> anyhow::Result<App>,
) -> anyhow::Result<ExitCode> {
    // Checked before anything is opened: a refused start must leave no trace.
    for o in &a.public_origins {
        anyhow::ensure!(
            sessioncert_server::is_valid_origin(o.trim()),
            "--public-origin {o:?}: expected the one canonical spelling scheme://host[:port] (lower case, no default port, no trailing dot; PROTOCOL §8.2), e.g. https://api.example.com"
        );
    }
    store_choice(&a)?;
    init_logs(&a.log_format);
    match &a.config {
        Some(file) => tracing::info!(config = %file.display(), "settings: {settings}"),
        None => tracing::info!("settings: {settings}"),
    }
    let metrics = admin::install_metrics()?;
    let suites = parse_suites(&a.suites)?;
    anyhow::ensure!(
        a.max_inflight_body >= a.max_body,
        "--max-inflight-body ({}) must be at least --max-body ({}): a larger body could never be accepted",
        a.max_inflight_body,
        a.max_body
    );
    anyhow::ensure!(
        a.max_inflight_body_per_addr >= a.max_body
            && a.max_inflight_body_per_addr <= a.max_inflight_body,
        "--max-inflight-body-per-addr ({}) must be between --max-body ({}) and --max-inflight-body ({})",
        a.max_inflight_body_per_addr,
        a.max_body,
        a.max_inflight_body
    );
    // Settings under which the server could start but serve nothing are refused here,
    // naming the setting, rather than discovered by clients.
    anyhow::ensure!(
        !a.session_lifetime.is_zero(),
        "--session-lifetime must be longer than 0s"
    );
    anyhow::ensure!(
        !a.idle_timeout.is_zero(),
        "--idle-timeout must be longer than 0s"
    );
    anyhow::ensure!(
        a.max_body >= 1024,
        "--max-body ({}) must be at least 1KiB: every sealed request carries a record",
        a.max_body
    );
    anyhow::ensure!(
        a.max_response >= 1024,
        "--max-response ({}) must be at least 1KiB",
        a.max_response
    );
    anyhow::ensure!(
        a.max_stream_body.0.is_none_or(|n| n >= 1024),
        "--max-stream-body ({}) must be at least 1KiB, or none: a smaller one would refuse \
         every streamed body (and bodies over 64 KiB are always streamed)",
        a.max_stream_body.0.unwrap_or(0)
    );
    anyhow::ensure!(
        a.max_inflight_response >= a.max_response,
        "--max-inflight-response ({}) must be at least --max-response ({})",
        a.max_inflight_response,
        a.max_response
    );
    anyhow::ensure!(
        a.handshake_rate.is_finite() && a.handshake_rate > 0.0,
        "--handshake-rate must be a number above 0 (per second), not {}",
        a.handshake_rate
    );
    anyhow::ensure!(
        a.handshake_burst.is_finite() && a.handshake_burst >= 1.0,
        "--handshake-burst must be a number of at least 1, not {}",
        a.handshake_burst
    );
    anyhow::ensure!(a.max_sessions > 0, "--max-sessions must be at least 1");
    anyhow::ensure!(
        sessioncert_legacy::RsaBits::from_bits(a.legacy_rsa_bits).is_some(),
        "--legacy-rsa-bits {}: expected 2048, 3072 or 4096",
        a.legacy_rsa_bits
    );
    anyhow::ensure!(
        (1..=100_000).contains(&a.legacy_max_requests),
        "--legacy-max-requests must be between 1 and 100000 (each request keeps 16 bytes per session), not {}",
        a.legacy_max_requests
    );
    anyhow::ensure!(
        a.legacy_max_sessions > 0,
        "--legacy-max-sessions must be at least 1"
    );
    if a.legacy_session_cert {
        if let Ok(StoreUrl::Redis(_) | StoreUrl::Postgres(_)) = store_choice(&a) {
            anyhow::bail!(
                "--legacy-session-cert needs a store held by one instance (--store sqlite:… or \
                 memory:): legacy sessions' replay memory lives in the server, so they cannot \
                 be shared by several instances"
            );
        }
    }
    anyhow::ensure!(
        a.max_sessions_per_addr > 0,
        "--max-sessions-per-addr must be at least 1"
    );
    anyhow::ensure!(
        a.max_header_bytes >= 8 * 1024,
        "--max-header-bytes ({}) must be at least 8KiB (the HTTP layer's smallest read buffer)",
        a.max_header_bytes
    );
    anyhow::ensure!(
        a.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        a.max_connections_per_addr > 0,
        "--max-connections-per-addr must be at least 1"
    );
    anyhow::ensure!(
        a.http2_max_streams > 0,
        "--http2-max-streams must be at least 1"
    );
    // Read now: unusable certificate or key files are refused before anything else.
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(
            sessioncert_server::listener::server_config_from_pem_files(cert, key)
                .context("--tls-cert/--tls-key")?,
        ),
        // Checked here, not by clap: a value from the configuration file is a clap
        // default, which `requires` ignores, and half a TLS setting must never start a
        // plain-HTTP server.
        (Some(_), None) => anyhow::bail!(
            "--tls-cert is set but --tls-key is not (set both, by flag, environment or configuration file, or neither)"
        ),
        (None, Some(_)) => anyhow::bail!(
            "--tls-key is set but --tls-cert is not (set both, by flag, environment or configuration file, or neither)"
        ),
        (None, None) => None,
    };
    // The port first: a start that cannot listen must not touch the data directory
    // (create an identity, open the store and so mark the last stop unclean). Bound
    // now, listened on only once everything is ready, so no client connects early.
    let socket = reserve_port(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let admin_socket = match a.admin_addr {
        Some(admin_addr) => {
            anyhow::ensure!(
                admin_addr != addr,
                "--admin-addr must differ from --addr ({admin_addr})"
            );
            Some(
                reserve_port(admin_addr)
                    .with_context(|| format!("cannot listen on {admin_addr} (--admin-addr)"))?,
            )
        }
        None => None,
    };
    let data = a.data.clone();
    let (keys, created) =
        tokio::task::spawn_blocking(move || ServerKeys::open_or_create(&data, now_ms()))
            .await?
            .with_context(|| format!("cannot open data directory {}", a.data.display()))?;
    if created {
        tracing::info!(data = %a.data.display(), "created a new identity");
    }
    let pin = keys.pin();
    let store = open_store(&a, &keys).await?;
    let sessions_in_memory = matches!(store_choice(&a), Ok(StoreUrl::Memory));
    let policy = ServerPolicy {
        suites,
        lifetime_ms: a.session_lifetime.as_millis() as u64,
        idle_timeout_ms: a.idle_timeout.as_millis() as u64,
        streams: true,
    };
    let limits = Limits {
        max_body_bytes: a.max_body,
        max_stream_body_bytes: a.max_stream_body.0,
        max_response_bytes: a.max_response,
        max_inflight_response_bytes: a.max_inflight_response,
        handshakes_per_sec: a.handshake_rate,
        handshake_burst: a.handshake_burst,
        max_sessions_per_addr: a.max_sessions_per_addr,
        exempt_loopback: !a.limit_loopback,
        max_live_sessions: a.max_sessions,
        ..Limits::default()
    };
    let listener_limits = ListenerLimits {
        max_connections: a.max_connections,
        max_connections_per_addr: a.max_connections_per_addr,
        exempt_loopback: !a.limit_loopback,
        header_timeout: a.header_timeout,
        body_timeout: a.body_timeout,
        body_min_rate: a.body_min_rate,
        max_inflight_body_bytes: a.max_inflight_body,
        max_inflight_body_per_addr: a.max_inflight_body_per_addr,
        body_budget_wait: a.body_budget_wait,
        idle_timeout: a.conn_idle_timeout,
        write_stall_timeout: a.write_stall_timeout,
        max_header_bytes: a.max_header_bytes,
        http2: a.http2,
        http2_max_streams: a.http2_max_streams,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    let mut builder = SessionCert::builder(Arc::new(keys), store)
        .policy(policy)
        .limits(limits)
        .public_origins(a.public_origins.iter().map(|o| o.trim().to_owned()))?;
    if a.legacy_session_cert {
        let rsa_bits =
            sessioncert_legacy::RsaBits::from_bits(a.legacy_rsa_bits).unwrap_or_default();
        builder = builder.legacy_session_cert(sessioncert_server::LegacySettings {
            rsa_bits,
            max_requests: a.legacy_max_requests,
            max_sessions: a.legacy_max_sessions,
            ..Default::default()
        });
    }
    let sc = builder.build().await?;
    let app = build(Ready {
        sc: &sc,
        pin: &pin,
        tls: tls.is_some(),
        args: &a,
    })?;
    let stopping = Arc::new(AtomicBool::new(false));
    let admin_routes = admin::routes(admin::Admin::new(
        metrics,
        sc.clone(),
        stopping.clone(),
        app.ready,
    ));
    let (routes, admin_routes) = match admin_socket {
        None => (app.routes.merge(admin_routes), None),
        Some(socket) if app.hide_admin_paths => (
            app.routes.merge(admin::not_here()),
            Some((socket, admin_routes)),
        ),
        Some(socket) => (app.routes, Some((socket, admin_routes))),
    };
    let listener = socket
        .listen(1024)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The admin address runs until the sessions are saved, answering /readyz 503 from
    // the stop signal on; it has the serving address's connection limits.
    let admin_task = match admin_routes {
        Some((socket, routes)) => {
            let listener = socket.listen(64).context("cannot listen on --admin-addr")?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(sessioncert_server::listener::serve(
                listener,
                routes,
                listener_limits.clone(),
                async {
                    let _ = stopped.await;
                },
            ));
            Some((stop, task))
        }
        None => None,
    };
    (app.announce)(&Listening {
        addr: listener.local_addr().unwrap_or(addr),
        scheme,
        admin: a
            .admin_addr
            .map_or_else(|| "the serving address".to_owned(), |x| x.to_string()),
    });
    // On SIGTERM/SIGINT: stop accepting, give open connections the grace period to
    // finish, cut the rest and return — the sessions must be persisted (and the stop
    // recorded as clean) before a supervisor gives up on us.
    let signal = async {
        shutdown_signal().await;
        stopping.store(true, Ordering::SeqCst);
    };
    let stopped = match tls {
        Some(tls) => {
            sessioncert_server::listener::serve_tls(listener, tls, routes, listener_limits, signal)
                .await
        }
        None => {
            sessioncert_server::listener::serve(listener, routes, listener_limits, signal).await
        }
    };
    if stopped.connections_cut > 0 {
        tracing::warn!(
            cut = stopped.connections_cut,
            "connections still open after the grace period; closed them"
        );
    }
    if sessions_in_memory {
        tracing::info!("shutting down: sessions are in memory only and end now");
    } else {
        tracing::info!("shutting down: persisting sessions");
    }
    let saved = sc.shutdown().await.context("clean shutdown failed");
    if let Some((stop, task)) = admin_task {
        let _ = stop.send(());
        let _ = task.await;
    }
    saved?;
    tracing::info!(
        target: START_STOP,
        live_sessions = sc.manager().live_sessions(),
        "stopped cleanly"
    );
    Ok(ExitCode::SUCCESS)
}

/// A size, or `none` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeOrNone(pub Option<u64>);

/// Parses `--max-stream-body`: a size as `--max-body` takes it, or `none`.
fn parse_size_or_none(s: &str) -> Result<SizeOrNone, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(SizeOrNone(None));
    }
    super::parse_size(s).map(|n| SizeOrNone(Some(n as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_stream_body_takes_a_size_or_none() {
        assert_eq!(parse_size_or_none("none"), Ok(SizeOrNone(None)));
        assert_eq!(parse_size_or_none("NONE"), Ok(SizeOrNone(None)));
        assert_eq!(
            parse_size_or_none("2GiB"),
            Ok(SizeOrNone(Some(2 * 1024 * 1024 * 1024)))
        );
        assert!(parse_size_or_none("-1").is_err());
        assert!(parse_size_or_none("lots").is_err());
    }

    #[test]
    fn store_urls_parse_and_never_show_a_password() {
        assert_eq!(parse_store_url("memory:"), Ok(StoreUrl::Memory));
        assert_eq!(parse_store_url("sqlite:"), Ok(StoreUrl::Sqlite(None)));
        assert_eq!(
            parse_store_url("sqlite:data/s.db"),
            Ok(StoreUrl::Sqlite(Some("data/s.db".into())))
        );
        assert_eq!(
            parse_store_url("sqlite:///var/lib/s.db"),
            Ok(StoreUrl::Sqlite(Some("/var/lib/s.db".into())))
        );
        assert_eq!(
            parse_store_url("redis://127.0.0.1:6379/?prefix=a"),
            Ok(StoreUrl::Redis("redis://127.0.0.1:6379/?prefix=a".into()))
        );
        assert_eq!(
            parse_store_url("postgresql://u@h/db"),
            Ok(StoreUrl::Postgres("postgresql://u@h/db".into()))
        );
        let secret = "redis://user:hunter2@cache:6379/0?prefix=x";
        let s = parse_store_url(secret).unwrap();
        assert_eq!(s.redacted(), "redis://user:***@cache:6379/0?prefix=x");
        assert_eq!(format!("{s:?}"), s.redacted());
        assert_eq!(
            redact_url("postgres://app:p%40ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        // Refused later, by the server (clap's error would repeat the value).
        match parse_store_url("mysql://root:hunter2@db/x") {
            Ok(StoreUrl::Invalid(e)) => {
                assert!(e.contains("unknown store") && !e.contains("hunter2"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_store_url("sessions.db").is_err());
    }
}
