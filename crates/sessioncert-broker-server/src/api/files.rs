//! A logged-in user's files: upload (streamed and sealed), list, download (opened as it
//! streams), delete.

use super::stream::{open_stream, seal_into, SealError};
use super::{new_id, valid_id, ApiError, ApiResult, Broker, Login};
use crate::objects::ObjectsError;
use crate::store::FileRow;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures_util::StreamExt as _;
use hkdf::Hkdf;
use serde::Deserialize;
use serde_json::json;
use sessioncert_broker::file_crypt::file_key;
use sessioncert_broker::requests::check_file_name;
use sessioncert_server::seal::StreamBodyError;
use sessioncert_server::{now_ms, SealedContext};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The key a name is sealed under: from the file's (or share's) key, bound to its id.
pub(crate) fn name_key(key: &[u8; 32], id: &str) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(b"sessioncert-broker/1 file name"), key);
    let mut k = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = hk.expand(id.as_bytes(), k.as_mut());
    k
}

/// Seals a file name (the database keeps names sealed too): base64 of
/// `nonce[24] ‖ XChaCha20-Poly1305(name key, name, ad = id)`.
pub(crate) fn seal_name(key: &[u8; 32], id: &str, name: &str) -> ApiResult<String> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| ApiError::internal("no randomness", e))?;
    let ct = XChaCha20Poly1305::new(name_key(key, id).as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: name.as_bytes(),
                aad: id.as_bytes(),
            },
        )
        .map_err(|e| ApiError::internal("could not seal a name", e))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(STANDARD.encode(out))
}

/// Opens a sealed name; `None` if it does not open.
pub(crate) fn open_name(key: &[u8; 32], id: &str, sealed: &str) -> Option<String> {
    let b = STANDARD.decode(sealed).ok()?;
    if b.len() < 24 {
        return None;
    }
    let (nonce, ct) = b.split_at(24);
    let plain = XChaCha20Poly1305::new(name_key(key, id).as_ref().into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: id.as_bytes(),
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

/// The key of one of `login`'s files.
pub(crate) fn key_of(login: &Login, id: &str) -> Zeroizing<[u8; 32]> {
    file_key(
        login.data_key.as_bytes(),
        &login.tenant,
        &login.user,
        id.as_bytes(),
    )
}

/// Where a file's object lives (tenant names are object-store safe).
fn object_key(tenant: &str, id: &str) -> String {
    format!("files/{tenant}/{id}")
}

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    name: String,
}

/// `POST /files?name=NAME` with the file as the (streamed) body: `201 {"id", "size"}`.
pub(crate) async fn upload(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    check_file_name(&q.name).map_err(ApiError::request)?;
    // Held until the upload ends: the instance's upload memory is bounded, and one user
    // cannot take every slot.
    let _slot = b.upload_slot(&login).await?;
    let s = &b.inner.settings;
    let usage = b
        .inner
        .store
        .usage(&login.tenant, &login.user, now_ms(), s.share_max_failures)
        .await?;
    if usage.files >= s.max_files_per_user {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "quota-exceeded",
            format!(
                "this account keeps {} files, its most: delete some first",
                usage.files
            ),
        ));
    }
    // Concurrent uploads of one user (at most `uploads_per_user`) may each fill the
    // room left; the quota can be passed by that much, no more.
    let room = s.max_bytes_per_user.saturating_sub(usage.bytes);
    let quota_bound = room < s.max_file_bytes;
    let id = new_id()?;
    let key = key_of(&login, &id);
    let object = object_key(&login.tenant, &id);
    let writer = b
        .inner
        .objects
        .writer(&object)
        .await
        .map_err(|e| ApiError::internal("the object store failed", e))?;
    let max = s.max_file_bytes.min(room);
    // The channel's own streamed-body limit (`--max-stream-body`) may end the body
    // before the broker's count does: both are "too large" to the user.
    let over_limit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = over_limit.clone();
    let body = body.into_data_stream().map(move |piece| {
        piece.map_err(|e| {
            let inner = e.into_inner();
            if matches!(
                inner.downcast_ref::<StreamBodyError>(),
                Some(StreamBodyError::TooLarge)
            ) {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            inner.to_string()
        })
    });
    let sealed = match seal_into(writer, &key, body, max).await {
        Err(SealError::Body(_)) if over_limit.load(std::sync::atomic::Ordering::Relaxed) => {
            Err(SealError::TooLarge(max))
        }
        other => other,
    };
    let size = match sealed {
        Ok(size) => size,
        Err(SealError::Body(e)) => {
            tracing::info!(error = %e, "an upload's body failed; nothing stored");
            return Err(ApiError::bad(
                "the file did not arrive whole; nothing was stored",
            ));
        }
        Err(SealError::TooLarge(_)) if quota_bound => {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "quota-exceeded",
                format!(
                    "the file does not fit in this account's {} bytes of storage ({} in use); nothing was stored",
                    s.max_bytes_per_user, usage.bytes
                ),
            ))
        }
        Err(SealError::TooLarge(_)) => return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the file is larger than this broker takes (its --max-stream-body); nothing was stored",
        )),
        Err(e) => return Err(ApiError::internal("could not store the file", e)),
    };
    let row = FileRow {
        id: id.clone(),
        tenant: login.tenant.clone(),
        owner: login.user.clone(),
        name: seal_name(&key, &id, &q.name)?,
        size,
        created_ms: now_ms(),
        object_key: object.clone(),
    };
    if let Err(e) = b.inner.store.insert_file(&row).await {
        // No row names the object: remove it so nothing is left behind.
        let _ = b.inner.objects.delete(&object).await;
        return Err(e.into());
    }
    b.audit(
        &login.tenant,
        &login.user,
        "file.upload",
        &id,
        &format!("{size} bytes"),
    )
    .await;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "size": size }))).into_response())
}

/// `GET /files`: `{"files": [{"id", "name", "size", "created_ms"}]}`.
pub(crate) async fn list(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let files = b.inner.store.files(&login.tenant, &login.user).await?;
    let files: Vec<_> = files
        .iter()
        .map(|f| {
            let name = open_name(&key_of(&login, &f.id), &f.id, &f.name);
            json!({ "id": f.id, "name": name, "size": f.size, "created_ms": f.created_ms })
        })
        .collect();
    Ok(Json(json!({ "files": files })).into_response())
}

pub(crate) fn no_such_file() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-file",
        "no such file in this account",
    )
}

/// One of `login`'s files; another tenant's or user's id is "no such file" exactly as
/// an unknown one.
pub(crate) async fn own_file(b: &Broker, login: &Login, id: &str) -> ApiResult<FileRow> {
    if !valid_id(id) {
        return Err(no_such_file());
    }
    b.inner
        .store
        .file(&login.tenant, &login.user, id)
        .await?
        .ok_or_else(no_such_file)
}

/// `GET /files/{id}`: the file, opened chunk by chunk as it streams. A chunk that does
/// not authenticate ends the body with an error (the client discards what it got).
pub(crate) async fn download(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    let f = own_file(&b, &login, &id).await?;
    let reader = match b.inner.objects.get(&f.object_key).await {
        Ok(r) => r,
        Err(ObjectsError::NotFound(_)) => {
            return Err(ApiError::internal(
                "the file's object is missing",
                &f.object_key,
            ))
        }
        Err(e) => return Err(ApiError::internal("the object store failed", e)),
    };
    let stream = open_stream(reader, key_of(&login, &f.id));
    b.audit(&login.tenant, &login.user, "file.download", &id, "")
        .await;
    let name = open_name(&key_of(&login, &f.id), &f.id, &f.name).unwrap_or_default();
    Ok(file_response(stream, f.size, &name))
}

/// A streamed plaintext response with the size and name as headers.
pub(crate) fn file_response(
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, super::stream::OpenError>> + Send>,
    >,
    size: u64,
    name: &str,
) -> Response {
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-broker-size", size.into());
    // The name as percent-encoded UTF-8 (header values are ASCII).
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    if let Ok(v) = header::HeaderValue::from_str(&encoded) {
        h.insert("x-broker-name", v);
    }
    r
}

/// `DELETE /files/{id}`: the file and its shares.
pub(crate) async fn remove(
    State(b): State<Broker>,
    Extension(ctx): Extension<SealedContext>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let login = b.login_of(&ctx)?;
    if !valid_id(&id) {
        return Err(no_such_file());
    }
    let Some((f, share_objects)) = b
        .inner
        .store
        .delete_file(&login.tenant, &login.user, &id)
        .await?
    else {
        return Err(no_such_file());
    };
    for o in std::iter::once(&f.object_key).chain(&share_objects) {
        if let Err(e) = b.inner.objects.delete(o).await {
            // Its row is gone: nothing names it any more; an operator may sweep it.
            tracing::warn!(error = %e, object = %o, "could not delete a deleted file's object");
        }
    }
    b.audit(
        &login.tenant,
        &login.user,
        "file.delete",
        &id,
        &format!("{} shares revoked", share_objects.len()),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
