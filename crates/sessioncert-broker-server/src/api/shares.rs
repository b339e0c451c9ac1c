//! Shares: a copy of a file sealed under a key derived from a one-time code that only
//! the mails carry (the broker keeps a verifier), opened by anyone holding the code.

use super::files::{file_response, key_of, no_such_file, open_name, own_file, seal_name};
use super::stream::{open_stream, seal_into, SealError};
use super::{client_addr, new_id, valid_id, ApiError, ApiResult, Broker};
use crate::notify::Recipient;
use crate::store::{NewOutbox, ShareClaim, ShareRow, StoreError};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::json;
use sessioncert_broker::requests::check_file_name;
use sessioncert_broker::requests::{CreateShare, OpenShare};
use sessioncert_broker::share_code::OneTimeCode;
use sessioncert_server::{now_ms, SealedContext};
use std::net::SocketAddr;
use zeroize::Zeroizing;

fn format_time(ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// `POST /files/{id}/shares {to, expires_secs?, max_opens?}`: copies the file under a
/// fresh one-time code's key, mails the code to the recipient and the sharer, and
/// answers `201 {"share", "expires_ms", "max_opens"}`.
pub(crate) async fn create(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let req = CreateShare::parse(&body).map_err(ApiError::request)?;
    let s = &b.inner.settings;
    let recipient = match Recipient::parse(&req.to) {
        Ok(Recipient::Email(e)) => e.to_ascii_lowercase(),
        Ok(Recipient::Phone(p)) if b.inner.notifier.reaches_phones() => p,
        Ok(Recipient::Phone(_)) => {
            return Err(ApiError::bad(
                "this broker sends no text messages (it has no --sms-webhook): share to an e-mail address",
            ))
        }
        Err(_) => {
            return Err(ApiError::bad(format!(
                "{:?} is neither an e-mail address nor a phone number (+ and digits)",
                req.to
            )))
        }
    };
    let expires_secs = req.expires_secs.unwrap_or(s.share_expiry_default.as_secs());
    if expires_secs == 0 || expires_secs > s.share_expiry_max.as_secs() {
        return Err(ApiError::bad(format!(
            "a share lasts 1 s to {} s",
            s.share_expiry_max.as_secs()
        )));
    }
    let max_opens = req.max_opens.unwrap_or(s.share_opens_default);
    if max_opens == 0 || max_opens > s.share_opens_max {
        return Err(ApiError::bad(format!(
            "a share opens 1 to {} times",
            s.share_opens_max
        )));
    }
    let f = own_file(&b, &login, &file_id).await?;
    let usage = b
        .inner
        .store
        .usage(&login.tenant, &login.user, now_ms(), s.share_max_failures)
        .await?;
    if usage.open_shares >= s.max_open_shares_per_user {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "quota-exceeded",
            format!(
                "this account has {} open shares, its most: revoke some first",
                usage.open_shares
            ),
        ));
    }
    // A share is a copy: it counts in the byte quota and, while it is written, holds an
    // upload slot like an upload.
    if usage.bytes.saturating_add(f.size) > s.max_bytes_per_user {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "quota-exceeded",
            format!(
                "a share is a copy of the file: {} more bytes do not fit in this account's {} ({} in use, shares' copies included)",
                f.size, s.max_bytes_per_user, usage.bytes
            ),
        ));
    }
    // Each share copies a file and mails two people (the sharer's copy counts too):
    // none of it may be free to repeat.
    // The slot first: a share refused for want of one costs no budget.
    let _slot = b.upload_slot(&login).await?;
    b.take_share_creation(&login)?;
    b.take_mails(&[&recipient, &login.email])?;
    let name = open_name(&key_of(&login, &f.id), &f.id, &f.name).unwrap_or_default();
    check_file_name(&name).map_err(|_| ApiError::internal("a stored name does not open", &f.id))?;

    // The copy: opened under the file's key, sealed under the code's.
    let code = OneTimeCode::generate().map_err(|e| ApiError::internal("no randomness", e))?;
    let share_id = new_id()?;
    let share_key = code.share_key(share_id.as_bytes());
    let object = format!("shares/{share_id}");
    let reader = b
        .inner
        .objects
        .get(&f.object_key)
        .await
        .map_err(|e| ApiError::internal("the object store failed", e))?;
    let writer = b
        .inner
        .objects
        .writer(&object)
        .await
        .map_err(|e| ApiError::internal("the object store failed", e))?;
    let plain = open_stream(reader, key_of(&login, &f.id));
    match seal_into(writer, &share_key, plain, u64::MAX).await {
        Ok(_) => {}
        Err(SealError::Body(e)) => {
            return Err(ApiError::internal(
                "the stored file failed authentication; no share was made",
                e,
            ))
        }
        Err(e) => return Err(ApiError::internal("could not store the shared copy", e)),
    }

    let now = now_ms();
    let expires_ms = now.saturating_add(expires_secs.saturating_mul(1000));
    let code_text = code.text();
    let how = Zeroizing::new(format!(
        "sessioncert broker open-share --url {} --pin {} {share_id} --otp {} -o FILE",
        s.public_url, s.pin, *code_text
    ));
    let terms = format!(
        "It can be opened {max_opens} time(s) until {}.",
        format_time(expires_ms)
    );
    let to_recipient = Zeroizing::new(format!(
        "{sharer} shared a file with you through the sessioncert key broker at {url}:\n\
         {name:?}, {size} bytes.\n\
         \n\
         One-time code: {code}\n\
         Share id: {share_id}\n\
         \n\
         {terms} Open it with:\n\
         \n\
         {how}\n",
        how = *how,
        sharer = login.email,
        url = s.public_url,
        size = f.size,
        code = *code_text,
    ));
    let to_sharer = Zeroizing::new(format!(
        "You shared {name:?} ({size} bytes) with {recipient}.\n\
         \n\
         One-time code: {code}\n\
         Share id: {share_id}\n\
         \n\
         {terms} The broker does not keep the code: pass it on yourself if the recipient's \
         mail goes astray. Revoke the share with:\n\
         \n\
         sessioncert broker unshare --profile PROFILE {share_id}\n",
        size = f.size,
        code = *code_text,
    ));
    let seal = |to: &str, text: &str| {
        b.inner
            .outbox_key
            .seal(to, text)
            .map_err(|e| ApiError::internal("could not seal a notification", e))
    };
    let mail = [
        NewOutbox {
            recipient: recipient.clone(),
            subject: format!("{} shared a file with you", login.email),
            sealed_text: seal(&recipient, &to_recipient)?,
        },
        NewOutbox {
            recipient: login.email.clone(),
            subject: format!("You shared a file with {recipient}"),
            sealed_text: seal(&login.email, &to_sharer)?,
        },
    ];
    let row = ShareRow {
        id: share_id.clone(),
        tenant: login.tenant.clone(),
        owner: login.user.clone(),
        file_id: f.id.clone(),
        recipient: recipient.clone(),
        verifier: code.verifier(share_id.as_bytes()),
        object_key: object.clone(),
        name: seal_name(&share_key, &share_id, &name)?,
        size: f.size,
        created_ms: now,
        expires_ms,
        max_opens,
        opens: 0,
        failed_tries: 0,
        revoked_ms: None,
    };
    if let Err(e) = b.inner.store.insert_share(&row, &mail).await {
        let _ = b.inner.objects.delete(&object).await;
        return Err(match e {
            // Deleted while its copy was made: no share of it may stay.
            StoreError::Gone => no_such_file(),
            e => e.into(),
        });
    }
    b.wake_outbox();
    b.audit(
        &login.tenant,
        &login.user,
        "share.create",
        &share_id,
        &format!(
            "file {} to {recipient}, {max_opens} opens, expires {expires_ms}",
            f.id
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "share": share_id, "expires_ms": expires_ms, "max_opens": max_opens })),
    )
        .into_response())
}

/// `GET /shares`: the shares this account made.
pub(crate) async fn list(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let now = now_ms();
    let max_failures = b.inner.settings.share_max_failures;
    let shares: Vec<_> = b
        .inner
        .store
        .shares(&login.tenant, &login.user)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id, "file": s.file_id, "to": s.recipient, "created_ms": s.created_ms,
                "expires_ms": s.expires_ms, "opens": s.opens, "max_opens": s.max_opens,
                "failed_tries": s.failed_tries, "revoked_ms": s.revoked_ms,
                "open": s.opens_at(now, max_failures),
            })
        })
        .collect();
    Ok(Json(json!({ "shares": shares })).into_response())
}

/// `DELETE /shares/{id}`: revokes a share and deletes its copy.
pub(crate) async fn revoke(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no-such-share",
            "no such share among this account's",
        )
    };
    if !valid_id(&id) {
        return Err(missing());
    }
    let now = now_ms();
    let Some(s) = b
        .inner
        .store
        .revoke_share(&login.tenant, &login.user, &id, now)
        .await?
    else {
        return Err(missing());
    };
    match b.inner.objects.delete(&s.object_key).await {
        Ok(()) => b.inner.store.mark_share_purged(&id, now).await?,
        // The share is revoked (it no longer opens); the purge worker retries.
        Err(e) => tracing::warn!(error = %e, "could not delete a revoked share's copy yet"),
    }
    b.audit(&login.tenant, &login.user, "share.revoke", &id, "")
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /shares/{id}/open {otp}`: no login needed; the file, opened under the code's
/// key as it streams. Wrong codes count against the share (it locks after a few) and
/// against the address.
pub(crate) async fn open(
    State(b): State<Broker>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let addr = client_addr(ci.as_ref().map(|e| &e.0));
    b.check_failures(addr)?;
    let req = OpenShare::parse(&body).map_err(ApiError::request)?;
    let s = &b.inner.settings;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "no-such-share", "no such share");
    let closed = || {
        ApiError::new(
            StatusCode::GONE,
            "share-closed",
            "this share no longer opens (revoked, expired, used up, or locked after wrong codes)",
        )
    };
    if !valid_id(&id) {
        b.count_failure(addr);
        return Err(missing());
    }
    let Some(share) = b.inner.store.share(&id).await? else {
        b.count_failure(addr);
        return Err(missing());
    };
    let now = now_ms();
    if !share.opens_at(now, s.share_max_failures) {
        return Err(closed());
    }
    // A try is taken before the code is compared and given back if it was right:
    // concurrent guesses cannot evaluate more codes than the lock allows.
    let Some(tries) = b
        .inner
        .store
        .take_share_try(&id, s.share_max_failures)
        .await?
    else {
        return Err(closed());
    };
    let code = OneTimeCode::parse(&req.otp).ok();
    let Some(code) = code.filter(|c| c.matches(id.as_bytes(), &share.verifier)) else {
        b.count_failure(addr);
        let left = s.share_max_failures.saturating_sub(tries);
        b.audit(
            &share.tenant,
            &format!("share:{id}"),
            "share.open.refused",
            &id,
            &format!("wrong one-time code, {left} tries left"),
        )
        .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-code",
            if left == 0 {
                "wrong one-time code; the share is now locked".to_owned()
            } else {
                format!("wrong one-time code ({left} tries left before the share locks)")
            },
        ));
    };
    b.inner.store.refund_share_try(&id).await?;
    // The open is counted by the statement that allows it: concurrent opens of a
    // one-open share cannot both pass.
    let share = match b
        .inner
        .store
        .claim_share_open(&id, now, s.share_max_failures)
        .await?
    {
        ShareClaim::Granted(share) => share,
        ShareClaim::Closed => return Err(closed()),
        ShareClaim::Missing => return Err(missing()),
    };
    let reader = b
        .inner
        .objects
        .get(&share.object_key)
        .await
        .map_err(|e| ApiError::internal("the object store failed", e))?;
    let key = code.share_key(id.as_bytes());
    let name = open_name(&key, &id, &share.name).unwrap_or_default();
    b.audit(
        &share.tenant,
        &format!("share:{id}"),
        "share.open",
        &id,
        &format!("open {} of {}", share.opens, share.max_opens),
    )
    .await;
    Ok(file_response(open_stream(reader, key), share.size, &name))
}
