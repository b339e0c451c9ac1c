//! sessioncert for axum servers.
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use sessioncert_server::{SessionCert, ServerKeys};
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (keys, _) = ServerKeys::open_or_create("./data".as_ref(), sessioncert_server::now_ms())?;
//! let (store, _) = sessioncert_store::SqliteStore::open("./data/sessions.db".as_ref(),
//!     sessioncert_store::OpenMode::Server)?;
//! let sc = SessionCert::builder(Arc::new(keys), Arc::new(store)).build().await?;
//! let sealed = Router::new().route("/echo", post(|b: String| async move { b }));
//! let app = sc.router(sealed).route("/health", axum::routing::get(|| async { "ok" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // The hardened accept loop (body budget, timeouts, connection caps, HTTP/1.1 only);
//! // plain `axum::serve` works too but has none of those limits.
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! sessioncert_server::listener::serve(listener, app, Default::default(), stop).await;
//! sc.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! [`SessionCert::router`] adds the protocol endpoints under `/.well-known/sessioncert/`,
//! wraps the given routes in [`SealLayer`] (header mode) and serves the same routes in
//! full-request mode. Routes merged outside stay plain.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod keys;
pub mod legacy;
pub mod limits;
pub mod listener;
mod routes;
pub mod seal;
pub mod sessions;
pub mod telemetry;
mod tickets;

pub use error::{Refusal, ServerError};
pub use keys::{ServerKeys, StorageKey};
pub use legacy::LegacyContext;
pub use limits::Limits;
pub use listener::ListenerLimits;
pub use seal::{SealLayer, SealService, SealedContext};
pub use sessioncert_proto::ServerPolicy;
pub use sessions::{now_ms, LegacySettings, LoadReport, SessionManager, Timing};

use axum::routing::{get, post, post_service};
use axum::Router;
use sessioncert_proto::wire;
use sessioncert_store::SessionStore;
use std::sync::Arc;

/// Whether `origin` is an origin in its one canonical spelling (PROTOCOL §8.2):
/// `scheme://authority` with scheme `http` or `https`, a lower-case host without a
/// trailing dot, a port only when it is not the scheme's default (no leading zeros),
/// no path (see [`SessionCertBuilder::public_origins`]).
pub fn is_valid_origin(origin: &str) -> bool {
    crate::seal::binding::split_origin(origin).is_some()
}

/// Builds a [`SessionCert`].
pub struct SessionCertBuilder {
    keys: Arc<ServerKeys>,
    store: Arc<dyn SessionStore>,
    policy: ServerPolicy,
    limits: Limits,
    timing: Timing,
    public_origins: Vec<String>,
    legacy: Option<LegacySettings>,
}

impl SessionCertBuilder {
    /// Also serves the original Session-Cert prototype's clients (its
    /// `/sessionCert/…` handshake and `session-cert-id` requests to the sealed routes;
    /// see [`legacy`]). Off by default; refused with a shared store.
    pub fn legacy_session_cert(mut self, settings: LegacySettings) -> Self {
        self.legacy = Some(settings);
        self
    }

    /// The origins clients may seal requests for, `scheme://authority` as they call the
    /// server (`https://api.example.com`; lower case, default port omitted, no trailing
    /// dot: the canonical spelling of PROTOCOL §8.2, or the builder refuses it). A request
    /// sealed for any other origin gets `421 misdirected`. Set this to the public names
    /// the server answers to — not the `Host` a reverse proxy hands on. Default: any.
    pub fn public_origins<I, S>(mut self, origins: I) -> Result<Self, ServerError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let origins: Vec<String> = origins.into_iter().map(Into::into).collect();
        if let Some(bad) = origins
            .iter()
            .find(|o| crate::seal::binding::split_origin(o).is_none())
        {
            return Err(ServerError::Config(format!(
                "public origin {bad:?} is not scheme://authority in its canonical spelling (lower case, no default port, no trailing dot; e.g. https://api.example.com)"
            )));
        }
        self.public_origins = origins;
        Ok(self)
    }

    /// Session policy (suites, lifetime, idle timeout).
    pub fn policy(mut self, policy: ServerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Abuse limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Background timing.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Loads the store's live sessions into memory (the only time the server reads
    /// them), then starts background maintenance. Needs a tokio runtime.
    pub async fn build(self) -> Result<SessionCert, ServerError> {
        let mut manager =
            SessionManager::new(self.keys, self.store, self.policy, self.limits, self.timing)?
                .with_public_origins(self.public_origins);
        if manager.is_shared() {
            manager.join_shared_store().await?;
        }
        if let Some(settings) = self.legacy {
            manager.enable_legacy(settings).await?;
        }
        let manager = Arc::new(manager);
        let loaded = manager.load_from_store().await?;
        if loaded.loaded > 0 || loaded.unusable > 0 {
            tracing::info!(
                sessions = loaded.loaded,
                unusable = loaded.unusable,
                "resumed sessions from the store"
            );
        }
        let maintenance = manager.spawn_maintenance();
        Ok(SessionCert {
            manager,
            maintenance: Arc::new(maintenance),
            loaded,
        })
    }
}

/// The sessioncert server: endpoints, layer and session table.
#[derive(Clone)]
pub struct SessionCert {
    manager: Arc<SessionManager>,
    maintenance: Arc<tokio::task::JoinHandle<()>>,
    loaded: LoadReport,
}

impl SessionCert {
    /// Starts building with keys and a store.
    pub fn builder(keys: Arc<ServerKeys>, store: Arc<dyn SessionStore>) -> SessionCertBuilder {
        SessionCertBuilder {
            keys,
            store,
            policy: ServerPolicy::default(),
            limits: Limits::default(),
            timing: Timing::default(),
            public_origins: Vec::new(),
            legacy: None,
        }
    }

    /// What the start found in the store.
    pub fn load_report(&self) -> LoadReport {
        self.loaded
    }

    /// The session table.
    pub fn manager(&self) -> &Arc<SessionManager> {
        &self.manager
    }

    /// A header-mode sealing layer for any service.
    pub fn layer(&self) -> SealLayer {
        SealLayer::new(self.manager.clone())
    }

    /// The protocol endpoints only (and the legacy handshake's, when legacy mode is on).
    pub fn protocol_routes(&self) -> Router {
        let legacy = if self.manager.legacy_enabled() {
            legacy::routes(self.manager.clone())
        } else {
            Router::new()
        };
        legacy.merge(
            Router::new()
                .route(wire::CONFIG_PATH, get(routes::get_config))
                .route(wire::HANDSHAKE_PATH, post(routes::post_handshake))
                .route(wire::CONFIRM_PATH, post(routes::post_confirm))
                .route(wire::CLOSE_PATH, post(routes::post_close))
                .with_state(self.manager.clone()),
        )
    }

    /// Protocol endpoints + `sealed` in header mode + `sealed` in full-request mode.
    pub fn router(&self, sealed: Router) -> Router {
        let full = Router::new().route(
            wire::FULL_PATH,
            post_service(SealService::full_mode(self.manager.clone(), sealed.clone())),
        );
        let modern = self
            .protocol_routes()
            .merge(full)
            .merge(sealed.clone().layer(self.layer()));
        if !self.manager.legacy_enabled() {
            return modern;
        }
        Router::new().fallback_service(legacy::LegacySwitch::new(
            self.manager.clone(),
            sealed,
            modern,
        ))
    }

    /// Stops opening requests, persists every session and records a clean shutdown.
    /// Call after the HTTP server stopped accepting connections (requests still in
    /// flight are refused with `503 unavailable` from here on).
    pub async fn shutdown(&self) -> Result<(), ServerError> {
        self.maintenance.abort();
        self.manager.shutdown().await
    }
}
