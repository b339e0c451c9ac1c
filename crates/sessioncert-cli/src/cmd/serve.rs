//! `sessioncert serve`: the demo server.

use super::{parse_duration, DEFAULT_DATA_DIR};
use crate::demo;
use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Args;
use sessioncert_proto::{ServerPolicy, Suite};
use sessioncert_server::keys::DATABASE_FILE;
use sessioncert_server::{now_ms, Limits, ServerKeys, SessionCert};
use sessioncert_store::{MemoryStore, OpenMode, SessionStore, SqliteStore, StoreError};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long open connections may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `sessioncert serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SESSIONCERT_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Data directory: identity, handshake keys, storage key, sessions.db. Created on first start.
    #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Keep sessions in memory only (nothing survives a restart).
    #[arg(long)]
    memory: bool,
    /// Session lifetime.
    #[arg(long, env = "SESSIONCERT_SESSION_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    session_lifetime: Duration,
    /// Idle timeout of a session.
    #[arg(long, env = "SESSIONCERT_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Record suites to accept, comma separated: aes-256-gcm, chacha20-poly1305.
    #[arg(
        long,
        env = "SESSIONCERT_SUITES",
        default_value = "aes-256-gcm,chacha20-poly1305"
    )]
    suites: String,
    /// Largest sealed request body in bytes (413 above).
    #[arg(long, env = "SESSIONCERT_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    max_body: usize,
    /// Handshakes per second per client address (429 above).
    #[arg(long, env = "SESSIONCERT_HANDSHAKE_RATE", default_value_t = 20.0)]
    handshake_rate: f64,
    /// Burst of handshakes per client address.
    #[arg(long, env = "SESSIONCERT_HANDSHAKE_BURST", default_value_t = 60.0)]
    handshake_burst: f64,
    /// Live sessions per client address (429 above).
    #[arg(long, env = "SESSIONCERT_MAX_SESSIONS_PER_ADDR", default_value_t = 256)]
    max_sessions_per_addr: u32,
    /// Live sessions held at once, server-wide (429 above; about 2 KiB each).
    #[arg(long, env = "SESSIONCERT_MAX_SESSIONS", default_value_t = 500_000)]
    max_sessions: usize,
    /// Apply the per-address limits to loopback clients too (by default they are exempt so
    /// local benchmarks measure the protocol; turn this on behind a local reverse proxy).
    #[arg(long, env = "SESSIONCERT_LIMIT_LOOPBACK")]
    limit_loopback: bool,
    /// Log format.
    #[arg(long, env = "SESSIONCERT_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
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

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Opens the SQLite store, waiting briefly if a previous server is still shutting down.
async fn open_store(path: PathBuf) -> anyhow::Result<Arc<dyn SessionStore>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = path.clone();
        match tokio::task::spawn_blocking(move || SqliteStore::open(&p, OpenMode::Server)).await? {
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
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the demo server until SIGINT/SIGTERM, then persists sessions and exits.
pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(&a.log_format);
    let suites = parse_suites(&a.suites)?;
    let data = a.data.clone();
    let (keys, created) =
        tokio::task::spawn_blocking(move || ServerKeys::open_or_create(&data, now_ms()))
            .await?
            .with_context(|| format!("cannot open data directory {}", a.data.display()))?;
    if created {
        tracing::info!(data = %a.data.display(), "created a new identity");
    }
    let pin = keys.pin();
    let store: Arc<dyn SessionStore> = if a.memory {
        Arc::new(MemoryStore::new())
    } else {
        open_store(a.data.join(DATABASE_FILE)).await?
    };
    let policy = ServerPolicy {
        suites,
        lifetime_ms: a.session_lifetime.as_millis() as u64,
        idle_timeout_ms: a.idle_timeout.as_millis() as u64,
    };
    let limits = Limits {
        max_body_bytes: a.max_body,
        handshakes_per_sec: a.handshake_rate,
        handshake_burst: a.handshake_burst,
        max_sessions_per_addr: a.max_sessions_per_addr,
        exempt_loopback: !a.limit_loopback,
        max_live_sessions: a.max_sessions,
        ..Limits::default()
    };
    let sc = SessionCert::builder(Arc::new(keys), store)
        .policy(policy)
        .limits(limits)
        .build()?;
    let app = sc.router(demo::sealed_routes()).merge(demo::plain_routes());
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?
        // Small request/response exchanges: never hold a segment back (Nagle).
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(addr = %a.addr, pin = %pin, "sessioncert serving; clients pin this identity");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future(),
    );
    shutdown_signal().await;
    let _ = stop_tx.send(());
    // Connections still busy after the grace period are cut: the sessions must be
    // persisted (and the stop recorded as clean) before a supervisor gives up on us.
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(r)) => r.context("server failed")?,
        Ok(Err(e)) => return Err(e).context("server task failed"),
        Err(_) => tracing::warn!("connections still open after the grace period; closing them"),
    }
    tracing::info!("shutting down: persisting sessions");
    sc.shutdown().await.context("clean shutdown failed")?;
    Ok(ExitCode::SUCCESS)
}
