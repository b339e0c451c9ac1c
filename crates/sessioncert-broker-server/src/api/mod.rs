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
mod limits;
mod shares;
mod stream;
mod workers;

use crate::keys::{OutboxKey, ServedKms, ServerSecrets};
use crate::notify::Notifier;
use crate::objects::Objects;
use crate::store::{AuditEvent, BrokerStore, StoreError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dashmap::DashMap;
use limits::{network_of, TokenBuckets};
use sessioncert_broker::user_key::DataKey;
use sessioncert_broker::BrokerError;
use sessioncert_proto::SessionId;
use sessioncert_server::{SealedContext, SessionManager};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// Failed logins (wrong password or key share) one account may see in a burst,
    /// from anywhere; then one per `account_failure_refill`. Checked before the
    /// password is: guesses spread over many addresses still meet it.
    pub account_failure_burst: u32,
    /// The pace at which an account's failed logins are allowed again.
    pub account_failure_refill: Duration,
    /// Mails one recipient may be sent in a burst (verification codes, shares,
    /// notices); then one per `recipient_mail_refill`.
    pub recipient_mail_burst: u32,
    /// The pace of a recipient's mails after the burst.
    pub recipient_mail_refill: Duration,
    /// Shares one user may make in a burst; then one per `share_refill`.
    pub share_burst: u32,
    /// The pace of a user's shares after the burst.
    pub share_refill: Duration,
    /// Uploads running at once on this instance (each holds up to 16 MiB of buffers
    /// for the object store): the bound on upload memory. More wait briefly, then 503.
    pub uploads_at_once: usize,
    /// Uploads one user may run at once.
    pub uploads_per_user: usize,
    /// Files one user may keep.
    pub max_files_per_user: u64,
    /// Bytes (plaintext) one user may keep.
    pub max_bytes_per_user: u64,
    /// Shares one user may have open at once.
    pub max_open_shares_per_user: u64,
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
            account_failure_burst: 10,
            account_failure_refill: Duration::from_secs(30),
            recipient_mail_burst: 20,
            recipient_mail_refill: Duration::from_secs(180),
            share_burst: 6,
            share_refill: Duration::from_secs(10),
            uploads_at_once: 8,
            uploads_per_user: 2,
            max_files_per_user: 10_000,
            max_bytes_per_user: 10 << 30,
            max_open_shares_per_user: 1_000,
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
        // The channel's access log sees only the sealed envelope's status: the broker's
        // own answer is logged here (status and stable code; the message may name an
        // address, so it stays out).
        if self.status.is_server_error() {
            tracing::warn!(target: "sessioncert::broker", status = self.status.as_u16(), code = self.code, "broker refused");
        } else {
            tracing::info!(target: "sessioncert::broker", status = self.status.as_u16(), code = self.code, "broker refused");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message, "code": self.code })),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) struct Inner {
    pub store: Arc<dyn BrokerStore>,
    pub objects: Objects,
    pub kms: ServedKms,
    pub secrets: ServerSecrets,
    /// Seals this instance's queued notifications; never leaves memory.
    pub outbox_key: OutboxKey,
    pub notifier: Notifier,
    pub manager: Arc<SessionManager>,
    pub settings: BrokerSettings,
    logins: DashMap<SessionId, Arc<Login>>,
    outbox_wake: tokio::sync::Notify,
    hashing: Arc<tokio::sync::Semaphore>,
    /// Failed attempts per peer network.
    failures: TokenBuckets<IpAddr>,
    /// Failed logins per account (`tenant/email`).
    account_failures: TokenBuckets<String>,
    /// Lock notices per mailbox: one an hour.
    lock_notices: TokenBuckets<String>,
    /// Mails per recipient.
    recipient_mails: TokenBuckets<String>,
    /// Shares made per user (`tenant/user`).
    share_creations: TokenBuckets<String>,
    /// Upload slots on this instance.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Uploads running per user (`tenant/user`).
    user_uploads: DashMap<String, usize>,
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
    ) -> Result<Broker, BrokerError> {
        let secrets = kms.secrets();
        let outbox_key = OutboxKey::generate()?;
        Ok(Broker {
            inner: Arc::new(Inner {
                store,
                objects,
                kms,
                secrets,
                outbox_key,
                notifier,
                manager,
                logins: DashMap::new(),
                outbox_wake: tokio::sync::Notify::new(),
                hashing: Arc::new(tokio::sync::Semaphore::new(
                    settings.password_hashes_at_once.max(1),
                )),
                failures: TokenBuckets::new(settings.failure_burst, settings.failure_refill),
                account_failures: TokenBuckets::new(
                    settings.account_failure_burst,
                    settings.account_failure_refill,
                ),
                lock_notices: TokenBuckets::new(1, Duration::from_secs(3600)),
                recipient_mails: TokenBuckets::new(
                    settings.recipient_mail_burst,
                    settings.recipient_mail_refill,
                ),
                share_creations: TokenBuckets::new(settings.share_burst, settings.share_refill),
                uploads: Arc::new(tokio::sync::Semaphore::new(settings.uploads_at_once.max(1))),
                user_uploads: DashMap::new(),
                settings,
            }),
        })
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
            .route(&p("/files"), get(files::list).post(files::upload))
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

    /// Deletes objects at least `min_age` old that no file or share names (left by a
    /// crash between an object's completion and its row); the workers do this hourly
    /// for objects an hour old. Returns how many.
    pub async fn sweep_orphans(&self, min_age: Duration) -> usize {
        workers::sweep_orphans(self, min_age).await
    }

    /// Gives up the pending notifications sealed by an instance silent for
    /// `silent_for` (another that stopped, or this one before a restart): their key is
    /// gone with its process. The workers do this every minute, after 5 minutes'
    /// silence. Returns how many.
    pub async fn give_up_foreign_notifications(&self, silent_for: Duration) -> u64 {
        workers::give_up_foreign(self, silent_for).await
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

    /// Refuses a peer whose network spent its failed attempts.
    pub(crate) fn check_failures(&self, addr: Option<IpAddr>) -> ApiResult<()> {
        if addr.is_none_or(|a| self.inner.failures.allows(&network_of(a))) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "too many failed attempts from this address; wait a minute",
            ))
        }
    }

    /// Counts a failed attempt against the peer's network.
    pub(crate) fn count_failure(&self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.inner.failures.take(&network_of(a));
        }
    }

    /// Takes one attempt of the peer's network *before* an expensive check (a password
    /// hash), so concurrent requests cannot all pass on the last token; `429` when none
    /// is left. Give it back with [`Broker::refund_attempt`] if the check succeeds.
    pub(crate) fn spend_attempt(&self, addr: Option<IpAddr>) -> ApiResult<()> {
        match addr {
            Some(a) if !self.inner.failures.try_take(&network_of(a)) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "too many failed attempts from this address; wait a minute",
            )),
            _ => Ok(()),
        }
    }

    /// Gives back an attempt taken by [`Broker::spend_attempt`].
    pub(crate) fn refund_attempt(&self, addr: Option<IpAddr>) {
        if let Some(a) = addr {
            self.inner.failures.refund(&network_of(a));
        }
    }

    /// Takes one login attempt of an account (whoever asks, so a guesser with many
    /// addresses meets the same limit) before its password is checked; `429` when it
    /// saw too many failed ones lately.
    pub(crate) fn spend_account_attempt(&self, tenant: &str, email: &str) -> ApiResult<()> {
        if self
            .inner
            .account_failures
            .try_take(&format!("{tenant}/{email}"))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "account-locked",
                "too many failed logins to this account lately; wait a few minutes \
                 (its owner has been notified)",
            ))
        }
    }

    /// After a failed login (its attempt was taken before the check): `true` when the
    /// owner should be told now — the account has no attempt left and was not reported
    /// within the hour.
    pub(crate) fn account_locked_now(&self, tenant: &str, email: &str) -> bool {
        let key = format!("{tenant}/{email}");
        !self.inner.account_failures.allows(&key)
            && self.inner.lock_notices.try_take(&mailbox_of(email))
    }

    /// Takes one login attempt of an account after the password check (a wrong key
    /// share): counted, not checked.
    pub(crate) fn count_account_failure(&self, tenant: &str, email: &str) {
        self.inner
            .account_failures
            .take(&format!("{tenant}/{email}"));
    }

    /// Gives back an account's attempt taken before a check that succeeded.
    pub(crate) fn refund_account_attempt(&self, tenant: &str, email: &str) {
        self.inner
            .account_failures
            .refund(&format!("{tenant}/{email}"));
    }

    /// Forgets an account's failed logins (a login succeeded).
    pub(crate) fn clear_account_failures(&self, tenant: &str, email: &str) {
        self.inner
            .account_failures
            .reset(&format!("{tenant}/{email}"));
    }

    /// Takes one mail of `recipient`'s budget; a refusal when it is spent.
    pub(crate) fn take_mail(&self, recipient: &str) -> ApiResult<()> {
        self.take_mails(&[recipient])
    }

    /// Takes one mail of each recipient's budget, or none when one of them is spent
    /// (checked first, so a refused share costs nobody's budget).
    pub(crate) fn take_mails(&self, recipients: &[&str]) -> ApiResult<()> {
        let mails = &self.inner.recipient_mails;
        if let Some(spent) = recipients.iter().find(|r| !mails.allows(&mailbox_of(r))) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-mails",
                format!("{spent} was sent too many mails by this broker lately; try again later"),
            ));
        }
        for r in recipients {
            mails.take(&mailbox_of(r));
        }
        Ok(())
    }

    /// Takes one of a user's share creations; a refusal when they are spent.
    pub(crate) fn take_share_creation(&self, login: &Login) -> ApiResult<()> {
        if self
            .inner
            .share_creations
            .try_take(&format!("{}/{}", login.tenant, login.user))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-shares",
                "too many shares made lately; wait a minute",
            ))
        }
    }

    /// An upload slot for `login`: one of the instance's (waiting up to 5 s) and one of
    /// the user's. Held until the upload ends; the bound on upload memory.
    pub(crate) async fn upload_slot(&self, login: &Login) -> ApiResult<UploadSlot> {
        let user = format!("{}/{}", login.tenant, login.user);
        {
            let mut n = self.inner.user_uploads.entry(user.clone()).or_insert(0);
            if *n >= self.inner.settings.uploads_per_user.max(1) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-uploads",
                    format!(
                        "this account has {} upload(s) or share copies running, its most; wait for one to end",
                        *n
                    ),
                ));
            }
            *n += 1;
        }
        let user_slot = UserUpload {
            broker: self.clone(),
            user,
        };
        let permit = tokio::time::timeout(
            Duration::from_secs(5),
            self.inner.uploads.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the broker is taking as many uploads as it can; try again shortly",
            )
        })?;
        Ok(UploadSlot {
            _permit: permit,
            _user: user_slot,
        })
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

/// The mailbox an address reaches, for its mail budget: `user+tag@host` is
/// `user@host` (subaddresses would otherwise each get a budget of their own).
fn mailbox_of(recipient: &str) -> String {
    let r = recipient.to_ascii_lowercase();
    match r.split_once('@') {
        Some((local, domain)) => {
            let base = local.split_once('+').map_or(local, |(b, _)| b);
            format!("{base}@{domain}")
        }
        None => r,
    }
}

/// An upload's share of the instance's and the user's upload slots.
pub(crate) struct UploadSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _user: UserUpload,
}

struct UserUpload {
    broker: Broker,
    user: String,
}

impl Drop for UserUpload {
    fn drop(&mut self) {
        let uploads = &self.broker.inner.user_uploads;
        if let Some(mut n) = uploads.get_mut(&self.user) {
            *n = n.saturating_sub(1);
        }
        uploads.remove_if(&self.user, |_, n| *n == 0);
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

#[cfg(test)]
mod tests {
    #[test]
    fn subaddresses_share_their_mailbox_budget() {
        assert_eq!(super::mailbox_of("Bob+x@Example.test"), "bob@example.test");
        assert_eq!(
            super::mailbox_of("bob+a+b@example.test"),
            "bob@example.test"
        );
        assert_eq!(super::mailbox_of("bob@example.test"), "bob@example.test");
        assert_eq!(super::mailbox_of("+15551234567"), "+15551234567");
    }
}
