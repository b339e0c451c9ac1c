//! The broker's sealed HTTP routes (under `/broker/v1/`, served through
//! `SessionCert::router`, so every request and response is sealed) and the logins bound
//! to sessions.
//!
//! A login ties the user's data key to the sessioncert session it was made in, in this
//! process's memory only: a later request of that session finds it, a request of any
//! other session does not, and it is forgotten when the session ends (closed, expired,
//! or the server restarted). See `docs/BROKER.md` for each route.

mod account;
mod files;
mod shares;
mod stream;
mod workers;

use crate::keys::{ServedKms, ServerSecrets};
use crate::notify::Notifier;
use crate::objects::Objects;
use crate::store::{AuditEvent, BrokerStore, StoreError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dashmap::DashMap;
use sessioncert_broker::user_key::DataKey;
use sessioncert_proto::SessionId;
use sessioncert_server::{SealedContext, SessionManager};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every route's prefix.
pub const PREFIX: &str = "/broker/v1";

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// How long a verification code is good for.
    pub code_ttl: Duration,
    /// Tries a verification code allows.
    pub code_tries: u32,
    /// A share's lifetime when the sharer names none.
    pub share_expiry_default: Duration,
    /// The longest share lifetime.
    pub share_expiry_max: Duration,
    /// Opens of a share when the sharer names none.
    pub share_opens_default: u32,
    /// The most opens a share may allow.
    pub share_opens_max: u32,
    /// Wrong one-time codes after which a share is locked.
    pub share_max_failures: u32,
    /// Largest file (plaintext bytes).
    pub max_file_bytes: u64,
    /// Argon2id computations at once (each takes 19 MiB and tens of ms of a core);
    /// more wait briefly, then get 503.
    pub password_hashes_at_once: usize,
    /// Failed attempts (password, key share, verification or one-time code) an address
    /// may make in a burst; then one per `failure_refill`.
    pub failure_burst: u32,
    /// The pace at which failed attempts are allowed again.
    pub failure_refill: Duration,
    /// The sender of notifications.
    pub sender: String,
    /// How recipients reach the broker, for the mails: its URL.
    pub public_url: String,
    /// And its identity pin.
    pub pin: String,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            code_ttl: Duration::from_secs(600),
            code_tries: 5,
            share_expiry_default: Duration::from_secs(24 * 3600),
            share_expiry_max: Duration::from_secs(30 * 24 * 3600),
            share_opens_default: 1,
            share_opens_max: 1000,
            share_max_failures: 5,
            max_file_bytes: 1 << 30,
            password_hashes_at_once: 2,
            failure_burst: 20,
            failure_refill: Duration::from_secs(3),
            sender: "sessioncert-broker@localhost".to_owned(),
            public_url: String::new(),
            pin: String::new(),
        }
    }
}

/// A user's login, bound to one session.
pub(crate) struct Login {
    pub tenant: String,
    pub user: String,
    pub email: String,
    pub data_key: DataKey,
}

/// A refusal: status, a stable code and a message for a person.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A body the core's parser refused.
    pub(crate) fn request(e: sessioncert_broker::requests::RequestError) -> Self {
        ApiError::bad(e.0)
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "broker: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what}; nothing was changed"),
        )
    }

    pub(crate) fn not_logged_in() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not-logged-in",
            "this session is not logged in (or its login ended with it): run `sessioncert broker login`",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal("the broker database failed", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message, "code": self.code })),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Per-address budget of failed attempts (a token bucket per address).
struct FailureBudget {
    buckets: DashMap<IpAddr, (f64, Instant)>,
    burst: f64,
    refill: Duration,
}

/// Addresses tracked at most; beyond it the fullest buckets are dropped (they would
/// allow a full burst anyway).
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl FailureBudget {
    fn level(&self, addr: IpAddr, now: Instant) -> f64 {
        self.buckets.get(&addr).map_or(self.burst, |b| {
            let refilled =
                now.duration_since(b.1).as_secs_f64() / self.refill.as_secs_f64().max(1e-3);
            (b.0 + refilled).min(self.burst)
        })
    }

    /// Whether `addr` may try once more.
    fn allows(&self, addr: Option<IpAddr>) -> bool {
        addr.is_none_or(|a| self.level(a, Instant::now()) >= 1.0)
    }

    /// Counts a failure of `addr`.
    fn fail(&self, addr: Option<IpAddr>) {
        let Some(a) = addr else { return };
        let now = Instant::now();
        let level = self.level(a, now);
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES {
            self.buckets.retain(|_, b| b.0 < self.burst - 1.0);
        }
        self.buckets.insert(a, ((level - 1.0).max(0.0), now));
    }
}

pub(crate) struct Inner {
    pub store: Arc<dyn BrokerStore>,
    pub objects: Objects,
    pub kms: ServedKms,
    pub secrets: ServerSecrets,
    pub notifier: Notifier,
    pub manager: Arc<SessionManager>,
    pub settings: BrokerSettings,
    logins: DashMap<SessionId, Arc<Login>>,
    outbox_wake: tokio::sync::Notify,
    hashing: Arc<tokio::sync::Semaphore>,
    failures: FailureBudget,
}

/// The key broker: its routes and background work.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

impl Broker {
    /// Puts the broker together. `manager` is the sessioncert server's session table
    /// (logins are dropped when their session ends).
    pub fn new(
        store: Arc<dyn BrokerStore>,
        objects: Objects,
        kms: ServedKms,
        notifier: Notifier,
        manager: Arc<SessionManager>,
        settings: BrokerSettings,
    ) -> Broker {
        let secrets = kms.secrets();
        Broker {
            inner: Arc::new(Inner {
                store,
                objects,
                kms,
                secrets,
                notifier,
                manager,
                logins: DashMap::new(),
                outbox_wake: tokio::sync::Notify::new(),
                hashing: Arc::new(tokio::sync::Semaphore::new(
                    settings.password_hashes_at_once.max(1),
                )),
                failures: FailureBudget {
                    buckets: DashMap::new(),
                    burst: f64::from(settings.failure_burst.max(1)),
                    refill: settings.failure_refill,
                },
                settings,
            }),
        }
    }

    /// The sealed routes; hand them to `SessionCert::router`.
    pub fn routes(&self) -> Router {
        let p = |s: &str| format!("{PREFIX}{s}");
        Router::new()
            .route(&p("/register"), post(account::register))
            .route(&p("/verify"), post(account::verify))
            .route(&p("/login"), post(account::login))
            .route(&p("/login/confirm"), post(account::confirm))
            .route(&p("/logout"), post(account::logout))
            .route(&p("/files"), get(files::list).put(files::upload))
            .route(
                &p("/files/{id}"),
                get(files::download).delete(files::remove),
            )
            .route(&p("/files/{id}/shares"), post(shares::create))
            .route(&p("/shares"), get(shares::list))
            .route(&p("/shares/{id}"), delete(shares::revoke))
            .route(&p("/shares/{id}/open"), post(shares::open))
            .layer(axum::middleware::from_fn(full_request_mode_only))
            .with_state(self.clone())
    }

    /// Starts the background work: the outbox's delivery, the deletion of spent shares'
    /// copies, and forgetting logins whose session ended. Abort the handle to stop it.
    pub fn spawn_workers(&self) -> tokio::task::JoinHandle<()> {
        workers::spawn(self.clone())
    }

    /// Deletes the copies of shares that no longer open (revoked, expired, used up,
    /// locked); the workers do this every few seconds. Returns how many.
    pub async fn purge_spent_shares(&self) -> usize {
        workers::purge_spent_shares(self).await
    }

    /// Logins held now.
    pub fn logins(&self) -> usize {
        self.inner.logins.len()
    }

    pub(crate) fn login_of(&self, ctx: &SealedContext) -> ApiResult<Arc<Login>> {
        self.inner
            .logins
            .get(&ctx.session_id)
            .map(|l| l.value().clone())
            .ok_or_else(ApiError::not_logged_in)
    }

    pub(crate) fn bind_login(&self, session: SessionId, login: Login) {
        self.inner.logins.insert(session, Arc::new(login));
    }

    pub(crate) fn forget_login(&self, session: &SessionId) -> bool {
        self.inner.logins.remove(session).is_some()
    }

    pub(crate) fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }

    /// Appends an audit event; a failure to do so is logged, never shown to the peer
    /// (the action it records has happened).
    pub(crate) async fn audit(
        &self,
        tenant: &str,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) {
        let e = AuditEvent {
            at_ms: sessioncert_server::now_ms(),
            tenant: tenant.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        tracing::info!(target: "sessioncert::broker::audit", tenant, actor, action, target, detail, "audit");
        if let Err(err) = self.inner.store.audit(&e).await {
            tracing::error!(error = %err, action, "could not write an audit event");
        }
    }

    /// Refuses an address that spent its failed attempts.
    pub(crate) fn check_failures(&self, addr: Option<IpAddr>) -> ApiResult<()> {
        if self.inner.failures.allows(addr) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "too many failed attempts from this address; wait a minute",
            ))
        }
    }

    pub(crate) fn count_failure(&self, addr: Option<IpAddr>) {
        self.inner.failures.fail(addr);
    }

    /// Runs an Argon2id computation with the others bounded (memory and cores), off the
    /// async threads.
    pub(crate) async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the broker is busy checking passwords; try again shortly",
            )
        };
        let permit = tokio::time::timeout(
            Duration::from_secs(3),
            self.inner.hashing.clone().acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
        // The permit goes with the computation: a peer that hangs up does not free its
        // slot while its hash still runs.
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| ApiError::internal("a password check failed", e))
    }
}

/// Refuses a request sealed in header mode: its path (file and share ids, a file's
/// name in the query) and headers would cross the wire readable. In full-request mode
/// all of them are sealed; only the session id, sizes and timing show.
async fn full_request_mode_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match req.extensions().get::<SealedContext>() {
        Some(c) if c.full => next.run(req).await,
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "full-request-mode-required",
            "the broker takes full-request mode only (paths, names and headers sealed): \
             send requests with `.full(true)` / the sessioncert CLI",
        )
        .into_response(),
    }
}

/// A fresh random id: 16 bytes as 26 lower-case base32 characters.
pub(crate) fn new_id() -> ApiResult<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal("no randomness", e))?;
    Ok(data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase())
}

pub(crate) use sessioncert_broker::requests::valid_id;

pub(crate) fn client_addr(
    ci: Option<&axum::extract::ConnectInfo<std::net::SocketAddr>>,
) -> Option<IpAddr> {
    ci.map(|c| c.0.ip())
}
