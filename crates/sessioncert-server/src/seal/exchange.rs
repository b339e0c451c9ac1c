//! The one path every sealed request takes, in both modes:
//! **open** (session known before the body is read, record opened, replay window
//! advanced) → **dispatch** (the handler sees an ordinary request) → **seal** (the
//! handler's response, read up to a cap, sealed with the request's single-use sealer).
//!
//! Header mode and full-request mode differ only in how the request is carried (a
//! visible request line bound into the seal, or a sealed Binary HTTP message) and so in
//! how the handler's request is built and its response encoded; [`Mode`] holds those
//! two differences, everything else is shared.

use super::{
    binding, read_body, read_body_mut, record_from_header, require_sealed_type, sealed_response,
    session_id, SealedContext, H_INNER_CONTENT_TYPE, H_SESSION,
};
use crate::error::Refusal;
use crate::sessions::{Entry, SessionManager};
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::{
    ErrorCode, RequestBinding, RequestLine, ResponseBinding, ResponseSealer, SessionId,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How a sealed request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The request line is visible and bound into the seal; the body is the record.
    Header,
    /// The whole request is a sealed Binary HTTP message posted to the full endpoint.
    Full,
}

/// An opened request waiting for its response: what sealing it needs.
pub(crate) struct Opened {
    pub(crate) id: SessionId,
    pub(crate) entry: Arc<Entry>,
    pub(crate) sealer: ResponseSealer,
    /// Header mode: the request was `HEAD` (its response record travels in a header).
    head: bool,
}

/// Opens a request and builds the request the handler sees.
pub(crate) async fn open(
    manager: &SessionManager,
    req: Request<Body>,
    mode: Mode,
) -> Result<(Opened, Request<Body>), Refusal> {
    let (parts, body) = req.into_parts();
    let id = session_id(&parts.headers)?;
    require_sealed_type(&parts.headers)?;
    // Answers not yet taken by their peers are held in memory: past the budget, nothing
    // new is opened (the refusal is honest: this request did not run). A close is
    // exempt: its answer is empty, and it is what settles a client's unknown outcome.
    if manager.response_bytes.load(Ordering::Relaxed) > manager.limits().max_inflight_response_bytes
        && parts.uri.path() != sessioncert_proto::wire::CLOSE_PATH
    {
        return Err(Refusal::new(ErrorCode::Unavailable));
    }
    // Not a byte of the body before the session is known to be live: a made-up id must
    // not make the server buffer anything.
    manager.precheck(&id, &parts).await?;
    match mode {
        Mode::Header => open_header(manager, id, parts, body).await,
        Mode::Full => open_full(manager, id, parts, body).await,
    }
}

async fn open_header(
    manager: &SessionManager,
    id: SessionId,
    mut parts: Parts,
    body: Body,
) -> Result<(Opened, Request<Body>), Refusal> {
    let bound = binding::read(&parts.headers, manager.public_origins())?;
    let head = parts.method == http::Method::HEAD;
    let mut record = if head {
        // HTTP gives HEAD no body: its record travels in a header (PROTOCOL §13).
        record_from_header(&parts.headers)?
    } else {
        read_body_mut(body, manager.limits().max_body_bytes).await?
    };
    if parts.headers.get_all(&H_INNER_CONTENT_TYPE).iter().count() > 1 {
        return Err(Refusal::new(ErrorCode::Malformed));
    }
    let inner_ct = parts.headers.remove(&H_INNER_CONTENT_TYPE);
    let inner_ct_str = inner_ct
        .as_ref()
        .map(|v| v.to_str().map_err(|_| Refusal::new(ErrorCode::Malformed)))
        .transpose()?
        .unwrap_or("");
    let covered = bound.covered_refs();
    let line = RequestBinding::Header(RequestLine {
        method: parts.method.as_str(),
        target: &bound.target,
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        content_type: inner_ct_str,
        covered: &covered,
    });
    let (entry, opened) = manager.open_request(&id, &line, &mut record).await?;
    let plaintext = record.freeze().slice(opened.plaintext.clone());
    // The handler sees an ordinary request: the inner content type, the plaintext body,
    // no protocol headers, only the credentials the seal covers.
    match inner_ct {
        Some(ct) => parts.headers.insert(header::CONTENT_TYPE, ct),
        None => parts.headers.remove(header::CONTENT_TYPE),
    };
    binding::for_handler(&mut parts.headers, &bound);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(plaintext.len()));
    parts.extensions.insert(SealedContext {
        session_id: id,
        seq: opened.sealer.seq(),
        full: false,
    });
    let opened = Opened {
        id,
        entry,
        sealer: opened.sealer,
        head,
    };
    Ok((opened, Request::from_parts(parts, Body::from(plaintext))))
}

async fn open_full(
    manager: &SessionManager,
    id: SessionId,
    parts: Parts,
    body: Body,
) -> Result<(Opened, Request<Body>), Refusal> {
    let mut record = read_body_mut(body, manager.limits().max_body_bytes).await?;
    let (entry, opened) = manager
        .open_request(&id, &RequestBinding::Full, &mut record)
        .await?;
    let inner = FullRequest::decode(&record[opened.plaintext.clone()]).map_err(Refusal::from)?;
    // The inner request names its origin; it is sealed, so it is what the client meant.
    // It is checked as the header-mode target is (PROTOCOL §8.2, §11): the one canonical
    // spelling or `malformed` (nothing is lower-cased here), then against the public
    // origins. The record is already opened, so its seq is used; the handler never runs.
    let origin = format!("{}://{}", inner.scheme, inner.authority);
    if binding::split_origin(&origin).is_none() {
        tracing::debug!(session = %id, "full-mode request with a non-canonical scheme://authority");
        return Err(Refusal::new(ErrorCode::Malformed));
    }
    binding::check_origin(&origin, manager.public_origins())?;
    let authority = inner.authority;
    let uri = inner
        .path
        .parse::<Uri>()
        .map_err(|_| Refusal::new(ErrorCode::Malformed))?;
    let mut builder = Request::builder().method(inner.method.as_str()).uri(uri);
    for (k, v) in &inner.headers {
        // Hop-by-hop and framing headers describe the outer connection, not this message.
        if matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "host"
        ) || k.starts_with("sessioncert-")
        {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_slice());
    }
    builder = builder.header(header::HOST, authority.as_str());
    let mut handler_req = builder
        .body(Body::from(inner.body))
        .map_err(|_| Refusal::new(ErrorCode::Malformed))?;
    handler_req.extensions_mut().insert(SealedContext {
        session_id: id,
        seq: opened.sealer.seq(),
        full: true,
    });
    if let Some(ci) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        handler_req.extensions_mut().insert(*ci);
    }
    let opened = Opened {
        id,
        entry,
        sealer: opened.sealer,
        head: false,
    };
    Ok((opened, handler_req))
}

/// Seals the handler's response. Its body is read up to `max_response_bytes`; a larger
/// one is not sent (the request did run, so the client gets a sealed `500` rather than a
/// refusal that would let it believe otherwise).
pub(crate) async fn seal<B>(
    manager: &SessionManager,
    opened: Opened,
    response: http::Response<B>,
) -> Result<Response, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (parts, body) = response.into_parts();
    let limit = manager.limits().max_response_bytes;
    let body = if opened.head {
        // A response to HEAD has no content, whatever body the (GET) handler produced.
        Ok(Bytes::new())
    } else {
        read_body(Body::new(body), limit).await
    };
    let (status, headers, body) = match body {
        Ok(b) => (parts.status, parts.headers, b),
        Err(r) => {
            tracing::error!(
                session = %opened.id,
                seq = opened.sealer.seq(),
                limit,
                refusal = ?r.code,
                "the handler's response could not be read or exceeds max_response_bytes; answering 500"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                HeaderMap::new(),
                Bytes::new(),
            )
        }
    };
    let sealed = if opened.sealer.is_full() {
        seal_full(manager, opened, status, headers, body)
    } else {
        seal_header(manager, opened, status, headers, body)
    }?;
    // Charged to the response budget until the peer took it (or the connection dropped
    // it). Handed over in small pieces, so what waits for a slow peer stays here,
    // counted, rather than in the connection's write buffer.
    let (parts, body) = sealed.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal))?
        .to_bytes();
    Ok(Response::from_parts(
        parts,
        Body::new(Charged::new(bytes, manager.response_bytes.clone())),
    ))
}

/// A sealed response body, counted against the response budget until the memory holding
/// it is freed (the last piece the connection took was written and dropped), and handed
/// over [`CHARGED_CHUNK`] bytes at a time.
struct Charged {
    rest: Bytes,
}

/// How much of a sealed response the connection takes at once.
const CHARGED_CHUNK: usize = 64 * 1024;

/// Owns a sealed response's buffer; every piece handed out shares it, so it is dropped,
/// and the budget released, only when the last piece is.
struct ChargedBuffer {
    bytes: Bytes,
    budget: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for ChargedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for ChargedBuffer {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

impl Charged {
    fn new(bytes: Bytes, budget: Arc<AtomicUsize>) -> Self {
        budget.fetch_add(bytes.len(), Ordering::Relaxed);
        Charged {
            rest: Bytes::from_owner(ChargedBuffer { bytes, budget }),
        }
    }
}

impl http_body::Body for Charged {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(CHARGED_CHUNK);
        let chunk = self.rest.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

fn seal_header(
    manager: &SessionManager,
    opened: Opened,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let inner_ct = headers
        .get(header::CONTENT_TYPE)
        .filter(|v| !v.is_empty())
        .cloned();
    // A content type that is not visible ASCII cannot be bound: send none.
    let inner_ct = inner_ct.filter(|v| v.to_str().is_ok());
    let binding = ResponseBinding::Header {
        status: status.as_u16(),
        content_type: inner_ct
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    let record = manager.seal_response(&opened.entry, opened.sealer, &binding, &body)?;
    Ok(sealed_response(
        status,
        headers,
        inner_ct,
        record,
        opened.head,
    ))
}

fn seal_full(
    manager: &SessionManager,
    opened: Opened,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let headers = headers
        .iter()
        .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let plain = FullResponse {
        status: status.as_u16(),
        headers,
        body: body.to_vec(),
    }
    .encode()
    .map_err(|_| Refusal::new(ErrorCode::Internal))?;
    let record =
        manager.seal_response(&opened.entry, opened.sealer, &ResponseBinding::Full, &plain)?;
    let mut out = sealed_response(StatusCode::OK, HeaderMap::new(), None, record, false);
    if let Ok(v) = HeaderValue::from_str(&opened.id.to_string()) {
        out.headers_mut().insert(H_SESSION, v);
    }
    Ok(out)
}
