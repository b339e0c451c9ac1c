//! The operator's endpoints of `serve` and `gateway`: `GET /metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (it should get traffic). Served on the
//! serving address, or with `--admin-addr` only there.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sessioncert_server::{telemetry, SessionCert};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        .set_buckets_for_metric(
            Matcher::Full(telemetry::STORE_DURATION.to_owned()),
            telemetry::REQUEST_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(sessioncert_gateway::telemetry::UPSTREAM_DURATION.to_owned()),
            sessioncert_gateway::telemetry::UPSTREAM_DURATION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    telemetry::describe();
    sessioncert_gateway::telemetry::describe();
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

/// A readiness condition of a command's own (the gateway's upstream): `Err(why)` makes
/// `/readyz` answer 503 with `why`, which must not name anything internal (the endpoint
/// may be on the public address). It must be cheap or cached: `/readyz` is unauthenticated.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long a check of the session store is reused (`/readyz` must not become a way to
/// flood the store) and how long one may take.
const STORE_CHECK_CACHE: Duration = Duration::from_secs(1);
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the endpoints read.
#[derive(Clone)]
pub struct Admin {
    metrics: PrometheusHandle,
    sc: SessionCert,
    /// Set when the stop signal arrives: from then on `/readyz` answers 503.
    stopping: Arc<AtomicBool>,
    extra: Option<ReadyCheck>,
    /// The last check of the store: when, and whether it answered.
    store_check: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

impl Admin {
    pub fn new(
        metrics: PrometheusHandle,
        sc: SessionCert,
        stopping: Arc<AtomicBool>,
        extra: Option<ReadyCheck>,
    ) -> Self {
        Admin {
            metrics,
            sc,
            stopping,
            extra,
            store_check: Arc::default(),
        }
    }

    /// Whether the store answers, checked at most once per [`STORE_CHECK_CACHE`] (one
    /// check at a time; callers meanwhile get its answer).
    async fn store_reachable(&self) -> bool {
        let mut last = self.store_check.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < STORE_CHECK_CACHE {
                return ok;
            }
        }
        let ok = match tokio::time::timeout(STORE_CHECK_TIMEOUT, self.sc.manager().store().ping())
            .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the session store does not answer: not ready");
                false
            }
            Err(_) => {
                tracing::warn!("the session store did not answer within 1 s: not ready");
                false
            }
        };
        *last = Some((Instant::now(), ok));
        ok
    }
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
/// out while it finishes what is in flight and saves its sessions), while the session
/// store refuses writes (new sessions would not survive a restart) or does not answer,
/// or while the command's own check fails (the gateway's upstream is unreachable).
async fn readyz(State(a): State<Admin>) -> Response {
    let m = a.sc.manager();
    let unready = if a.stopping.load(Ordering::SeqCst) || m.is_shutting_down() {
        Some("shutting down".to_owned())
    } else if !m.store_writable() {
        Some("the session store refuses writes".to_owned())
    } else if !a.store_reachable().await {
        Some("the session store is unreachable".to_owned())
    } else if let Some(check) = &a.extra {
        check().await.err()
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

#[cfg(test)]
mod tests {
    use super::*;
    use sessioncert_proto::SessionId;
    use sessioncert_store::{
        MemoryStore, SessionRecord, SessionStore, SessionSummary, SessionWrite, StoreError,
    };
    use std::sync::atomic::AtomicUsize;

    /// A memory store whose `ping` fails while `down` is set, counting pings.
    struct FlakyStore {
        inner: MemoryStore,
        down: AtomicBool,
        pings: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SessionStore for FlakyStore {
        async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
            self.inner.load_live().await
        }
        async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
            self.inner.save(writes).await
        }
        async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
            self.inner.load(id).await
        }
        async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
            self.inner.close(id, now_ms).await
        }
        async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
            self.inner.load_ended(since_ms).await
        }
        async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
            self.inner.ended_since(since_ms).await
        }
        async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
            self.inner.list(live_only).await
        }
        async fn sweep(&self, now: u64, ttl: u64, retain: u64) -> Result<u64, StoreError> {
            self.inner.sweep(now, ttl, retain).await
        }
        async fn shutdown(&self) -> Result<(), StoreError> {
            self.inner.shutdown().await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.pings.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Database("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    async fn readyz_of(admin: &Admin) -> (StatusCode, String) {
        let r = readyz(State(admin.clone())).await;
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `/readyz` answers 503 while the store does not answer, and asks it at most once
    /// a second however often it is called.
    #[tokio::test]
    async fn readyz_follows_the_store_and_asks_it_at_most_once_a_second() {
        let store = Arc::new(FlakyStore {
            inner: MemoryStore::new(),
            down: AtomicBool::new(true),
            pings: AtomicUsize::new(0),
        });
        let keys = sessioncert_server::ServerKeys::ephemeral(sessioncert_server::now_ms()).unwrap();
        let sc = SessionCert::builder(Arc::new(keys), store.clone())
            .build()
            .await
            .unwrap();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let admin = Admin::new(handle, sc, Arc::default(), None);
        for _ in 0..100 {
            assert_eq!(
                readyz_of(&admin).await,
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the session store is unreachable".to_owned()
                )
            );
        }
        assert_eq!(store.pings.load(Ordering::SeqCst), 1);
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(STORE_CHECK_CACHE + Duration::from_millis(50)).await;
        assert_eq!(readyz_of(&admin).await.0, StatusCode::OK);
        assert_eq!(store.pings.load(Ordering::SeqCst), 2);
    }
}
