//! Registration, verification, login (the split key) and logout.

use super::{client_addr, new_id, ApiError, ApiResult, Broker, Login};
use crate::notify::Recipient;
use crate::store::{Account, NewAccount, NewOutbox, StoreError};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use sessioncert_broker::password::{hash_password, verify_password, VerificationCode};
use sessioncert_broker::requests::{self, Register, Verify};
use sessioncert_broker::user_key::{self, Verifier};
use sessioncert_broker::BrokerError;
use sessioncert_server::{now_ms, SealedContext};
use std::net::SocketAddr;
use zeroize::Zeroizing;

/// A PHC string of a password nobody has: unknown accounts cost the same check.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2Vzc2lvbmNlcnRkdW1teQ$3m2OT6pdQbzBH1HULOQ7o2mKAqTnuTqkJCVOdeGLylU";

/// Checks that the tenant exists and the address is one mail can reach. An unknown
/// tenant counts as a failed attempt of `addr` (tenant names are guessable, not free).
fn check_account(
    b: &Broker,
    addr: Option<std::net::IpAddr>,
    tenant: &str,
    email: &str,
) -> ApiResult<()> {
    if !b.inner.kms.has_tenant(tenant) {
        b.count_failure(addr);
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-tenant",
            format!("no tenant {tenant:?} on this broker"),
        ));
    }
    match Recipient::parse(email) {
        Ok(Recipient::Email(_)) => Ok(()),
        _ => Err(ApiError::bad(format!("{email:?} is not an e-mail address"))),
    }
}

/// `POST /register {tenant, email, password, registration}`: makes an unverified
/// account and mails its verification code. Registering an address that is not yet
/// verified replaces that registration (its code stops working): the address's owner
/// gets the newest code, and a code verifies only together with the registration key
/// of the registration it was mailed for. A verified address gets the same answer (and
/// its owner a notice), so the route does not tell who has an account.
pub(crate) async fn register(
    State(b): State<Broker>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> ApiResult<Response> {
    // Every registration costs an address one attempt: each hashes a password and
    // mails someone, so none may be free for an anonymous peer.
    let addr = client_addr(ci.as_ref().map(|e| &e.0));
    // Taken before anything is checked: concurrent registrations cannot share a token.
    b.spend_attempt(addr)?;
    let req = Register::parse(&body).map_err(ApiError::request)?;
    // (This registration was counted already.)
    check_account(&b, None, &req.tenant, &req.email)?;
    // Every registration mails the address: its owner's inbox has a budget too.
    b.take_mail(&req.email)?;
    let email = req.email.clone();
    let password = req.password.clone();
    let phc = b
        .hashing(move || hash_password(password.as_bytes()))
        .await?
        .map_err(|e| ApiError::internal("could not hash the password", e))?;
    let now = now_ms();
    let id = new_id()?;
    let code = VerificationCode::generate().map_err(|e| ApiError::internal("no randomness", e))?;
    let s = &b.inner.settings;
    let minutes = s.code_ttl.as_secs() / 60;
    let text = Zeroizing::new(format!(
        "Someone (hopefully you) registered {email} with the sessioncert key broker at {url}, tenant {tenant}.\n\
         \n\
         Verification code: {code}\n\
         \n\
         It expires in {minutes} minutes and allows {tries} tries. Enter it with:\n\
         \n\
         sessioncert broker verify --profile PROFILE --code {code}\n\
         \n\
         If this was not you, ignore this mail: the account stays unusable.\n",
        url = s.public_url,
        tenant = req.tenant,
        code = code.text(),
        tries = s.code_tries,
    ));
    let mail = NewOutbox {
        recipient: email.clone(),
        subject: "Your sessioncert broker verification code".to_owned(),
        sealed_text: b
            .inner
            .outbox_key
            .seal(&email, &text)
            .map_err(|e| ApiError::internal("could not seal a notification", e))?,
    };
    let account = NewAccount {
        account: Account {
            id: id.clone(),
            tenant: req.tenant.clone(),
            email: email.clone(),
            password_phc: phc,
            verified: false,
            key_verifier: None,
            pending_verifier: None,
            created_ms: now,
            registration_digest: Some(req.registration.digest()),
        },
        code_digest: code.digest(&b.inner.secrets.verification, &id),
        code_expires_ms: now.saturating_add(s.code_ttl.as_millis() as u64),
        code_tries: s.code_tries,
    };
    match b.inner.store.create_account(&account, &[mail]).await {
        Ok(()) => {
            b.audit(&req.tenant, &id, "account.register", &email, "")
                .await;
        }
        Err(StoreError::Exists) => {
            let notice = Zeroizing::new(format!(
                "Someone tried to register {email} again with the sessioncert key broker at {}, tenant {}.\n\
                 Your account is unchanged. If this was you, log in with the profile you registered with.\n",
                s.public_url, req.tenant
            ));
            let sealed = b
                .inner
                .outbox_key
                .seal(&email, &notice)
                .map_err(|e| ApiError::internal("could not seal a notification", e))?;
            b.inner
                .store
                .enqueue(
                    &[NewOutbox {
                        recipient: email.clone(),
                        subject: "Registration attempt for your sessioncert broker account".into(),
                        sealed_text: sealed,
                    }],
                    now,
                )
                .await?;
            b.audit(
                &req.tenant,
                "anonymous",
                "account.register.again",
                &email,
                "",
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    b.wake_outbox();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "verification code mailed", "email": email })),
    )
        .into_response())
}

/// `POST /verify {tenant, email, code, registration}`: the code counts only with the
/// key of the registration it was mailed for; without it no try is spent.
pub(crate) async fn verify(
    State(b): State<Broker>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> ApiResult<Response> {
    let addr = client_addr(ci.as_ref().map(|e| &e.0));
    b.check_failures(addr)?;
    let req = Verify::parse(&body).map_err(ApiError::request)?;
    check_account(&b, addr, &req.tenant, &req.email)?;
    let email = req.email.clone();
    let wrong = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-code",
            "wrong verification code, or not the latest registration of this address: \
             a code verifies only the registration it was mailed for, with the profile \
             that registered (if the address was registered again since, register again)",
        )
    };
    let Some(account) = b.inner.store.account(&req.tenant, &email).await? else {
        b.count_failure(addr);
        return Err(wrong());
    };
    if account.verified {
        // Its code is gone: any code is wrong now, and the answer must not tell a
        // stranger that the address has a verified account.
        b.count_failure(addr);
        return Err(wrong());
    }
    // Only the client that made this registration may spend its tries: a code mailed
    // to the address's owner never verifies someone else's registration of it.
    // A refusal that reached this account costs a failure and is audited.
    let refused = |why: &'static str| {
        let (b, tenant, id, email) = (&b, &req.tenant, &account.id, &email);
        async move {
            b.count_failure(addr);
            b.audit(tenant, id, "account.verify.refused", email, why)
                .await;
            wrong()
        }
    };
    if !account
        .registration_digest
        .is_some_and(|d| req.registration.matches(&d))
    {
        return Err(refused("not the registration's key").await);
    }
    // The try is taken before the code is compared: concurrent guesses cannot share one.
    let Some((digest, expires)) = b.inner.store.take_verification_try(&account.id).await? else {
        return Err(ApiError::new(
            StatusCode::GONE,
            "no-tries-left",
            "this code allows no more tries: register again once it has expired",
        ));
    };
    if now_ms() >= expires {
        return Err(ApiError::new(
            StatusCode::GONE,
            "code-expired",
            "the verification code has expired: register again",
        ));
    }
    if !VerificationCode::check(
        &req.code,
        &b.inner.secrets.verification,
        &account.id,
        &digest,
    ) {
        return Err(refused("wrong code").await);
    }
    if !b.inner.store.mark_verified(&account.id).await? {
        // Registered again between the check and now: that registration's code counts.
        return Err(wrong());
    }
    b.audit(&req.tenant, &account.id, "account.verify", &email, "")
        .await;
    Ok(Json(json!({ "status": "verified" })).into_response())
}

fn key_error(e: BrokerError) -> ApiError {
    match e {
        BrokerError::WrongKeyShare => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong-key-share",
            "wrong key share: this profile's key share does not open this account's data key",
        ),
        BrokerError::BadEncryptedDataKey => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-encrypted-data-key",
            "the encrypted data key is malformed or belongs to another account",
        ),
        // A client's encrypted data key names a master key version this broker does
        // not hold (made elsewhere, or edited): the request's fault, not the server's.
        BrokerError::NoMasterKey { version, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-encrypted-data-key",
            format!("the encrypted data key names master key version {version}, which this tenant does not have"),
        ),
        e => ApiError::internal("the KMS failed", e),
    }
}

/// After a failed login (already counted against the account): when the account has
/// no attempt left, tells its owner (a verified address only), at most once an hour per
/// mailbox (not from the owner's mail budget: the notice must not crowd out their
/// codes).
async fn account_failure(b: &Broker, tenant: &str, email: &str, verified: bool) {
    if !verified || !b.account_locked_now(tenant, email) {
        return;
    }
    let s = &b.inner.settings;
    let text = Zeroizing::new(format!(
        "There were {} failed logins to your sessioncert broker account {email} (tenant {tenant}) at {} lately.\n\
         Logins to it are paused for a few minutes; after that one try per {} s is allowed until they succeed.\n\
         If this was not you, someone is guessing your password or key share: choose a long password.\n",
        s.account_failure_burst,
        s.public_url,
        s.account_failure_refill.as_secs(),
    ));
    let sealed = match b.inner.outbox_key.seal(email, &text) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "could not seal a notification");
            return;
        }
    };
    let mail = NewOutbox {
        recipient: email.to_owned(),
        subject: "Failed logins to your sessioncert broker account".into(),
        sealed_text: sealed,
    };
    match b.inner.store.enqueue(&[mail], now_ms()).await {
        Ok(()) => b.wake_outbox(),
        Err(e) => tracing::error!(error = %e, "could not queue a notice"),
    }
    b.audit(tenant, "anonymous", "login.locked", email, "")
        .await;
}

/// Checks address and password; the account on success.
async fn authenticate(
    b: &Broker,
    addr: Option<std::net::IpAddr>,
    tenant: &str,
    email: &str,
    password: &Zeroizing<String>,
) -> ApiResult<Account> {
    // Both attempts are taken before any hashing, so requests sent at once cannot all
    // pass on the last token; a success gives them back, a refusal or a `503 busy`
    // does not.
    b.spend_attempt(addr)?;
    check_account(b, None, tenant, email)?;
    b.spend_account_attempt(tenant, email)?;
    let account = b.inner.store.account(tenant, email).await?;
    let phc = account
        .as_ref()
        .map_or(DUMMY_PHC.to_owned(), |a| a.password_phc.clone());
    let pw = password.clone();
    let ok = b
        .hashing(move || verify_password(pw.as_bytes(), &phc))
        .await?;
    match account {
        Some(a) if ok => {
            if !a.verified {
                // Not a wrong password, but a refused check all the same: it cost an
                // Argon2 computation and must not be free to repeat (its attempt stays
                // spent).
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not-verified",
                    "verify the address first: `sessioncert broker verify --profile PROFILE --code CODE` with the code mailed at registration",
                ));
            }
            b.refund_attempt(addr);
            b.refund_account_attempt(tenant, email);
            Ok(a)
        }
        _ => {
            // Only a verified address is told: an unverified one may be anyone's,
            // registered by whoever wants to mail it.
            let verified = account.as_ref().is_some_and(|a| a.verified);
            account_failure(b, tenant, email, verified).await;
            b.audit(
                tenant,
                "anonymous",
                "login.refused",
                email,
                "wrong address or password",
            )
            .await;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong-password",
                "wrong address or password",
            ))
        }
    }
}

/// `POST /login {tenant, email, password, key_share, encrypted_data_key?}`: binds the
/// user's data key to this session. The first login (no encrypted data key, none
/// committed) makes the data key and answers the encrypted data key for the client to
/// keep; it counts once the client shows it back (`/login/confirm` or its next login),
/// so a lost answer never leaves an account whose data key nobody holds.
pub(crate) async fn login(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> ApiResult<Response> {
    let addr = client_addr(ci.as_ref().map(|e| &e.0));
    b.check_failures(addr)?;
    let req = requests::Login::parse(&body).map_err(ApiError::request)?;
    let account = authenticate(&b, addr, &req.tenant, &req.email, &req.password).await?;
    let share = &req.key_share;
    let kms = &b.inner.kms;
    let (data_key, answer, first, detail) = match (&req.encrypted_data_key, account.key_verifier) {
        (None, None) => {
            let (dk, edk, verifier) =
                user_key::first_login(kms, &account.tenant, &account.id, share)
                    .map_err(key_error)?;
            if !b
                .inner
                .store
                .set_pending_verifier(&account.id, &verifier.0)
                .await?
            {
                b.count_failure(addr);
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "first-login-raced",
                    "another first login of this account completed meanwhile: log in with its profile",
                ));
            }
            (dk, Some(edk), true, "first login".to_owned())
        }
        (None, Some(_)) => {
            // A refused check (it cost a password hash): counted like a failure.
            b.count_failure(addr);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "missing-encrypted-data-key",
                "this account has logged in before: its encrypted data key is in the profile that did; log in with that profile",
            ));
        }
        (Some(e), committed) => {
            let stored = committed.or(account.pending_verifier).ok_or_else(|| {
                ApiError::bad("this account has no data key yet: log in without encrypted_data_key")
            })?;
            let l = match user_key::login(
                kms,
                &account.tenant,
                &account.id,
                share,
                e,
                &Verifier(stored),
            ) {
                Ok(l) => l,
                Err(err) => {
                    if err == BrokerError::WrongKeyShare {
                        b.count_failure(addr);
                        b.count_account_failure(&account.tenant, &account.email);
                        account_failure(&b, &account.tenant, &account.email, true).await;
                        b.audit(
                            &account.tenant,
                            &account.id,
                            "login.refused",
                            &account.email,
                            "wrong key share",
                        )
                        .await;
                    }
                    return Err(key_error(err));
                }
            };
            if committed.is_none() {
                b.inner.store.commit_verifier(&account.id, &stored).await?;
            }
            let detail = match &l.rewrapped {
                Some(r) => format!(
                    "re-wrapped from master key v{} to v{}",
                    e.0.version, r.0.version
                ),
                None => String::new(),
            };
            (l.data_key, l.rewrapped, false, detail)
        }
    };
    b.clear_account_failures(&account.tenant, &account.email);
    b.bind_login(
        ctx.session_id,
        Login {
            tenant: account.tenant.clone(),
            user: account.id.clone(),
            email: account.email.clone(),
            data_key,
        },
    );
    b.audit(
        &account.tenant,
        &account.id,
        "login",
        &account.email,
        &detail,
    )
    .await;
    Ok(Json(json!({
        "first_login": first,
        "encrypted_data_key": answer.map(|e| STANDARD.encode(e.encode())),
    }))
    .into_response())
}

/// `POST /login/confirm`: the client has kept the first login's encrypted data key;
/// commit the verifier of this session's data key.
pub(crate) async fn confirm(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let verifier = user_key::verifier(&login.data_key, &login.tenant, &login.user);
    let account = b
        .inner
        .store
        .account(&login.tenant, &login.email)
        .await?
        .ok_or_else(ApiError::not_logged_in)?;
    if account.key_verifier == Some(verifier.0) {
        return Ok(Json(json!({ "status": "confirmed" })).into_response());
    }
    if !b
        .inner
        .store
        .commit_verifier(&login.user, &verifier.0)
        .await?
    {
        // This session's data key was never committed: nothing may be stored under it.
        b.forget_login(&ctx.session_id);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "first-login-raced",
            "another first login of this account replaced this one: log in again",
        ));
    }
    b.audit(
        &login.tenant,
        &login.user,
        "login.confirm",
        &login.email,
        "",
    )
    .await;
    Ok(Json(json!({ "status": "confirmed" })).into_response())
}

/// `POST /logout`: forgets this session's login (the data key with it).
pub(crate) async fn logout(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    b.forget_login(&ctx.session_id);
    b.audit(&login.tenant, &login.user, "logout", &login.email, "")
        .await;
    Ok(Json(json!({ "status": "logged out" })).into_response())
}
