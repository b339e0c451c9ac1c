//! Opening sealed requests and sealing responses around handlers.
//!
//! Header mode: [`SealLayer`] wraps any axum handler or router; the request line stays
//! visible but is bound into the seal. Full-request mode: one endpoint takes a sealed
//! Binary HTTP request, dispatches it into the sealed routes and seals the whole
//! response. Both run the same open → dispatch → seal path (`exchange`) inside
//! [`SealService`].

mod bhttp_stream;
pub(crate) mod binding;
pub(crate) mod exchange;
mod layer;
mod limit;
mod service;
mod streaming;

pub(crate) use exchange::Charged;
pub use layer::SealLayer;
pub use limit::{StreamLimit, StreamLimitService};
pub use service::SealService;
pub use streaming::{ResponseStreamCut, StreamBodyError};

use crate::error::Refusal;
use axum::body::{Body, Bytes};
use axum::response::Response;
use bytes::BytesMut;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use sessioncert_proto::wire::{
    CONTENT_TYPE_HEADER, SEALED_CONTENT_TYPE, SESSION_HEADER, STATUS_HEADER,
};
use sessioncert_proto::{ErrorCode, SessionId};

/// Header names as values: using `&str` names re-parses them on every request.
pub(crate) const H_SESSION: HeaderName = HeaderName::from_static(SESSION_HEADER);
pub(crate) const H_INNER_CONTENT_TYPE: HeaderName = HeaderName::from_static(CONTENT_TYPE_HEADER);
pub(crate) const H_STATUS: HeaderName = HeaderName::from_static(STATUS_HEADER);

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

/// What a plain request to a sealed route is told.
pub(crate) const NOT_SEALED: &str = "this route takes sealed requests only, and this one is \
not sealed (no sessioncert-id header): send it through a sessioncert client, e.g. \
`sessioncert request --pin PIN URL` or, from JavaScript, the sessioncert client's \
`connect(origin, { pin })` (the pin comes from `sessioncert fingerprint`)";

/// Reads the session id header.
pub(crate) fn session_id(headers: &HeaderMap) -> Result<SessionId, Refusal> {
    let Some(v) = headers.get(&H_SESSION) else {
        return Err(Refusal::new(ErrorCode::Malformed).with_detail(NOT_SEALED));
    };
    v.to_str()
        .ok()
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

/// The first bytes of a request body, read before its kind (one record or a stream)
/// is known.
pub(crate) struct BodyStart {
    chunks: Vec<Bytes>,
    len: usize,
}

impl BodyStart {
    /// The first byte (the record or stream type), if any arrived.
    pub(crate) fn first_byte(&self) -> Option<u8> {
        self.chunks.iter().find_map(|c| c.first().copied())
    }

    /// The bytes read, joined.
    pub(crate) fn into_bytes_mut(self) -> BytesMut {
        let mut joined = BytesMut::with_capacity(self.len);
        for c in self.chunks {
            joined.extend_from_slice(&c);
        }
        joined
    }
}

/// Reads `body` until at least `n` bytes are in (fewer only if it ends first).
pub(crate) async fn read_start(body: &mut Body, n: usize) -> Result<BodyStart, Refusal> {
    use http_body_util::BodyExt as _;
    let mut start = BodyStart {
        chunks: Vec::new(),
        len: 0,
    };
    while start.len < n {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|_| Refusal::new(ErrorCode::Malformed))?;
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                start.len += data.len();
                start.chunks.push(data);
            }
        }
    }
    Ok(start)
}

/// Reads a body up to `limit` bytes; 413 above it. A body that arrives as one chunk
/// (the common case) is returned as is, without the copy a general collect makes.
///
/// Chunks are kept as they arrive and joined once, into a buffer of the exact size,
/// when the body is complete: memory follows the bytes actually received (which the
/// listener's body budget charges), never the length a peer announced — a body that
/// stalls or is turned away never caused a large allocation.
///
/// An oversized body is still read (and discarded) up to [`DRAIN_FACTOR`] times the
/// limit before the 413 goes out: a client that is still sending would otherwise see
/// a broken pipe instead of the answer. Beyond that the connection is dropped.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    read_body_from(
        BodyStart {
            chunks: Vec::new(),
            len: 0,
        },
        body,
        limit,
    )
    .await
}

/// [`read_body`], for a body whose first bytes were already read into `start`.
pub(crate) async fn read_body_from(
    start: BodyStart,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, Refusal> {
    use axum::body::HttpBody as _;
    use http_body_util::BodyExt as _;
    let drain_limit = limit.saturating_mul(DRAIN_FACTOR) as u64;
    let mut len = start.len as u64;
    if len.saturating_add(body.size_hint().lower()) > drain_limit {
        return Err(Refusal::new(ErrorCode::TooLarge));
    }
    let mut chunks: Vec<Bytes> = start.chunks;
    if len > limit as u64 {
        chunks = Vec::new();
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::new(ErrorCode::Malformed))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        len = len.saturating_add(data.len() as u64);
        if len > limit as u64 {
            if len > drain_limit {
                break;
            }
            chunks = Vec::new();
            continue;
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    if len > limit as u64 {
        return Err(Refusal::new(ErrorCode::TooLarge));
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(len as usize);
            for c in chunks.drain(..) {
                joined.extend_from_slice(&c);
            }
            joined.freeze()
        }
    })
}

/// How far past the body limit a request is still drained before the 413.
pub(crate) const DRAIN_FACTOR: usize = 4;

/// Largest record carried in a header (HEAD has an empty body, so its record is small).
const MAX_HEADER_RECORD: usize = 1024;

/// A record sent in the `sessioncert-record` header (unpadded base64url).
pub(crate) fn record_from_header(headers: &HeaderMap) -> Result<BytesMut, Refusal> {
    use base64::Engine as _;
    let v = headers
        .get(sessioncert_proto::wire::RECORD_HEADER)
        .ok_or(Refusal::new(ErrorCode::Malformed))?;
    if v.len() > MAX_HEADER_RECORD * 4 / 3 + 4 {
        return Err(Refusal::new(ErrorCode::Malformed));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.as_bytes())
        .map(|b| BytesMut::from(&b[..]))
        .map_err(|_| Refusal::new(ErrorCode::Malformed))
}

/// A sealed response: the status stays, the body is the record.
pub(crate) fn sealed_response(
    status: StatusCode,
    headers: HeaderMap,
    inner_ct: Option<HeaderValue>,
    record: Vec<u8>,
    head: bool,
) -> Response {
    sealed_response_with(status, headers, inner_ct, SealedBody::Record(record), head)
}

/// The body of a sealed response: one record, or a stream sealed as it goes.
pub(crate) enum SealedBody {
    Record(Vec<u8>),
    Stream(Body),
}

/// [`sealed_response`] for either kind of sealed body.
pub(crate) fn sealed_response_with(
    status: StatusCode,
    mut headers: HeaderMap,
    inner_ct: Option<HeaderValue>,
    body: SealedBody,
    head: bool,
) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SEALED_CONTENT_TYPE),
    );
    match inner_ct {
        Some(ct) => {
            headers.insert(H_INNER_CONTENT_TYPE, ct);
        }
        None => {
            headers.remove(&H_INNER_CONTENT_TYPE);
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
        headers.insert(H_STATUS, HeaderValue::from(status.as_u16()));
        StatusCode::OK
    } else {
        headers.remove(&H_STATUS);
        status
    };
    // A response to HEAD has no body: the record travels in a header (PROTOCOL §13).
    let body = match body {
        SealedBody::Record(record) if head => {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&record);
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.insert(sessioncert_proto::wire::RECORD_HEADER, v);
            }
            Body::empty()
        }
        SealedBody::Record(record) => {
            headers.remove(sessioncert_proto::wire::RECORD_HEADER);
            Body::from(record)
        }
        SealedBody::Stream(body) => {
            headers.remove(sessioncert_proto::wire::RECORD_HEADER);
            body
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advice names the header the protocol really uses (it once named one that
    /// does not exist).
    #[test]
    fn the_not_sealed_advice_names_the_session_header() {
        assert!(NOT_SEALED.contains(&format!(
            "no {} header",
            sessioncert_proto::wire::SESSION_HEADER
        )));
    }
}
