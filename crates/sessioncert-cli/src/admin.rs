//! The operator's endpoints of `serve`: `GET /metrics` (Prometheus text), `/healthz`
//! (the process answers) and `/readyz` (it should get traffic). Served on the serving
//! address, or with `--admin-addr` only there.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sessioncert_server::{telemetry, SessionCert};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The paths served here (and answered `404` on the serving address when they are
/// served on an admin address).
pub const PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// How often the recorder drains its histograms when nobody scrapes: without it, every
/// observation since the last scrape would be held in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's `metrics` recorder (no listener of
/// its own: `/metrics` is served by [`routes`]) and starts its upkeep.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::REQUEST_DURATION.to_owned()),
            telemetry::REQUEST_DURATION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    telemetry::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub metrics: PrometheusHandle,
    pub sc: SessionCert,
    /// Set when the stop signal arrives: from then on `/readyz` answers 503.
    pub stopping: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn routes(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

/// For the serving address when the endpoints live on an admin address.
pub fn not_here() -> Router {
    PATHS.iter().fold(Router::new(), |r, p| {
        r.route(p, axum::routing::any(|| async { StatusCode::NOT_FOUND }))
    })
}

async fn metrics(State(a): State<Admin>) -> Response {
    // The session gauges are set from counters kept as sessions change: exact and cheap.
    a.sc.manager().publish_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        a.metrics.render(),
    )
        .into_response()
}

/// 200 while serving; 503 once the stop signal arrived (load balancers take the server
/// out while it finishes what is in flight and saves its sessions) or while the session
/// store refuses writes (new sessions would not survive a restart).
async fn readyz(State(a): State<Admin>) -> Response {
    let m = a.sc.manager();
    let unready = if a.stopping.load(Ordering::SeqCst) || m.is_shutting_down() {
        Some("shutting down")
    } else if !m.store_writable() {
        Some("the session store refuses writes")
    } else {
        None
    };
    match unready {
        None => (StatusCode::OK, "ready").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("not ready: {why}"),
        )
            .into_response(),
    }
}
