//! Opening sealed requests and sealing responses around handlers.
//!
//! Header mode: [`SealLayer`] wraps any axum handler or router; the request line stays
//! visible but is bound into the seal. Full-request mode: one endpoint takes a sealed
//! Binary HTTP request, dispatches it into the sealed routes and seals the whole
//! response (see `crate::routes`).

mod layer;
mod service;

pub use layer::SealLayer;
pub use service::SealService;

use crate::error::Refusal;
use crate::sessions::{Entry, SessionManager};
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use sessioncert_proto::wire::{
    CONTENT_TYPE_HEADER, SEALED_CONTENT_TYPE, SESSION_HEADER, STATUS_HEADER,
};
use sessioncert_proto::{ErrorCode, OpenedRequest, RequestBinding, RequestLine, SessionId};
use std::sync::Arc;

/// Put into the extensions of every request that arrived sealed, so handlers can tell
/// which session (and so which peer) they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedContext {
    /// The session the request came in.
    pub session_id: SessionId,
    /// Its sequence number.
    pub seq: u64,
    /// Whether it came in full-request mode.
    pub full: bool,
}

/// Reads the session id header.
pub(crate) fn session_id(headers: &HeaderMap) -> Result<SessionId, Refusal> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .ok_or(Refusal::new(ErrorCode::Malformed))
}

/// Checks the content type says "sealed".
pub(crate) fn require_sealed_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SEALED_CONTENT_TYPE));
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(ErrorCode::Malformed))
    }
}

/// Reads a body up to `limit` bytes; 413 above it.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        Refusal::new(if too_large {
            ErrorCode::TooLarge
        } else {
            ErrorCode::Malformed
        })
    })
}

/// Opens a header-mode request from its parts and body.
pub(crate) async fn open_header_mode(
    manager: &SessionManager,
    parts: &Parts,
    body: Body,
) -> Result<(SessionId, Arc<Entry>, OpenedRequest), Refusal> {
    let id = session_id(&parts.headers)?;
    require_sealed_type(&parts.headers)?;
    let record = read_body(body, manager.limits().max_body_bytes).await?;
    let inner_ct = parts
        .headers
        .get(CONTENT_TYPE_HEADER)
        .map(|v| v.to_str().map_err(|_| Refusal::new(ErrorCode::Malformed)))
        .transpose()?
        .unwrap_or("");
    let binding = RequestBinding::Header(RequestLine {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        content_type: inner_ct,
    });
    let (entry, opened) = manager.open_request(&id, &binding, &record).await?;
    Ok((id, entry, opened))
}

/// A sealed response: the status stays, the body is the record.
pub(crate) fn sealed_response(
    status: StatusCode,
    mut headers: HeaderMap,
    inner_ct: Option<HeaderValue>,
    record: Vec<u8>,
) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SEALED_CONTENT_TYPE),
    );
    match inner_ct {
        Some(ct) => {
            headers.insert(CONTENT_TYPE_HEADER, ct);
        }
        None => {
            headers.remove(CONTENT_TYPE_HEADER);
        }
    }
    // Intermediaries must not cache or transform sealed bodies.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-transform"),
    );
    // A record always has a body; statuses that forbid one travel as 200 plus the real
    // status in a header (which the seal binds, so it cannot be altered).
    let status = if matches!(status.as_u16(), 204 | 205 | 304) {
        headers.insert(STATUS_HEADER, HeaderValue::from(status.as_u16()));
        StatusCode::OK
    } else {
        headers.remove(STATUS_HEADER);
        status
    };
    let mut r = (status, Body::from(record)).into_response();
    *r.headers_mut() = headers;
    r
}
