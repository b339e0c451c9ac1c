//! The one path every sealed request takes, in both modes:
//! **open** (session known before the body is read, record opened, replay window
//! advanced) → **dispatch** (the handler sees an ordinary request) → **seal** (the
//! handler's response, read up to a cap, sealed with the request's single-use sealer).
//!
//! Header mode and full-request mode differ only in how the request is carried (a
//! visible request line bound into the seal, or a sealed Binary HTTP message) and so in
//! how the handler's request is built and its response encoded; [`Mode`] holds those
//! two differences, everything else is shared.

use super::bhttp_stream;
use super::limit::LimitSlot;
use super::streaming::{
    ChargedBuffer, FullContent, RequestStream, RequestStreamParts, SealedStream, SealedStreamParts,
    StreamLabel,
};
use super::{
    binding, read_body, read_body_from, read_start, record_from_header, require_sealed_type,
    sealed_response, sealed_response_with, session_id, SealedBody, SealedContext,
    H_INNER_CONTENT_TYPE, H_SESSION,
};
use crate::error::Refusal;
use crate::listener::BodyRelease;
use crate::sessions::{Entry, SessionManager};
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::response::Response;
use bytes::BytesMut;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::BodyExt as _;
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::record::{RecordType, RECORD_HEADER_LEN};
use sessioncert_proto::stream::complete_chunk;
use sessioncert_proto::{
    ErrorCode, RequestBinding, RequestLine, ResponseBinding, ResponseSealer, SessionId,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// A request body as it arrived: one record, or the start of a stream.
enum Incoming {
    Record(BytesMut),
    /// The stream's header and its first chunk, exactly, then what followed them
    /// already and the rest of the body.
    Stream {
        start: BytesMut,
        rest: BytesMut,
        body: Body,
    },
}

/// Reads a request body far enough to know its kind: a single record whole (up to
/// `max_body_bytes`), a stream up to the end of its first chunk (at most one chunk
/// frame, whatever the body's length).
async fn read_incoming(manager: &SessionManager, mut body: Body) -> Result<Incoming, Refusal> {
    let start = read_start(&mut body, RECORD_HEADER_LEN).await?;
    let stream = start
        .first_byte()
        .and_then(RecordType::from_byte)
        .is_some_and(RecordType::is_stream);
    if !stream {
        let limit = manager.limits().max_body_bytes;
        let b = read_body_from(start, body, limit).await?;
        return Ok(Incoming::Record(
            b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..])),
        ));
    }
    let malformed = || Refusal::new(ErrorCode::Malformed);
    let mut buf = start.into_bytes_mut();
    let first_len = loop {
        let chunk = buf.get(RECORD_HEADER_LEN..).unwrap_or_default();
        if let Some(n) = complete_chunk(chunk).map_err(|_| malformed())? {
            break RECORD_HEADER_LEN + n;
        }
        // A body that ends before its first chunk is whole was cut short: `rejected`,
        // as a stream cut anywhere else is (PROTOCOL §8.5); nothing was opened.
        match body.frame().await {
            None | Some(Err(_)) => return Err(Refusal::new(ErrorCode::Rejected)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    };
    let rest = buf.split_off(first_len);
    Ok(Incoming::Stream {
        start: buf,
        rest,
        body,
    })
}

/// Opens the start of a streamed request and builds the body that opens the rest.
async fn open_stream(
    manager: &SessionManager,
    id: SessionId,
    binding: &RequestBinding<'_>,
    mut start: BytesMut,
    rest: BytesMut,
    body: Body,
    release: Option<BodyRelease>,
) -> Result<(Arc<Entry>, ResponseSealer, RequestStream, LimitSlot), Refusal> {
    let (entry, opened) = manager
        .open_request_stream(&id, binding, &mut start)
        .await?;
    let counters = manager.byte_counters();
    counters.request_streams.increment(1);
    let first_wire = start.len() as u64;
    let range = opened.first.plaintext.clone();
    let first = start
        .freeze()
        .slice(RECORD_HEADER_LEN + range.start..RECORD_HEADER_LEN + range.end);
    let limit = LimitSlot::new();
    let seq = opened.sealer.seq();
    let stream = RequestStream::new(
        body,
        RequestStreamParts {
            opener: opened.opener,
            first,
            first_wire,
            rest,
            limit: limit.clone(),
            default_limit: manager.limits().max_stream_body_bytes,
            release,
            opened_bytes: counters.opened.clone(),
            label: StreamLabel {
                session: id,
                seq,
                started: Instant::now(),
            },
            entry: entry.clone(),
            end_check: manager.is_shared().then(|| {
                let store = manager.store().clone();
                Arc::new(move || {
                    let store = store.clone();
                    Box::pin(async move {
                        matches!(store.load(&id).await, Ok(Some(r)) if r.state.is_live())
                    })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
                }) as super::streaming::LiveCheck
            }),
        },
    );
    Ok((entry, opened.sealer, stream, limit))
}

async fn open_header(
    manager: &SessionManager,
    id: SessionId,
    mut parts: Parts,
    body: Body,
) -> Result<(Opened, Request<Body>), Refusal> {
    let bound = binding::read(&parts.headers, manager.public_origins())?;
    let head = parts.method == http::Method::HEAD;
    let incoming = if head {
        // HTTP gives HEAD no body: its record travels in a header (PROTOCOL §13).
        Incoming::Record(record_from_header(&parts.headers)?)
    } else {
        read_incoming(manager, body).await?
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
    let (entry, sealer, handler_body) = match incoming {
        Incoming::Record(mut record) => {
            let (entry, opened) = manager.open_request(&id, &line, &mut record).await?;
            let plaintext = record.freeze().slice(opened.plaintext.clone());
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(plaintext.len()));
            (entry, opened.sealer, Body::from(plaintext))
        }
        Incoming::Stream { start, rest, body } => {
            let release = parts.extensions.get::<BodyRelease>().cloned();
            let (entry, sealer, stream, limit) =
                open_stream(manager, id, &line, start, rest, body, release).await?;
            // The outer length is the sealed stream's; the plaintext's is not known.
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.extensions.insert(limit);
            (entry, sealer, Body::new(stream))
        }
    };
    // The handler sees an ordinary request: the inner content type, the plaintext body,
    // no protocol headers, only the credentials the seal covers.
    match inner_ct {
        Some(ct) => parts.headers.insert(header::CONTENT_TYPE, ct),
        None => parts.headers.remove(header::CONTENT_TYPE),
    };
    binding::for_handler(&mut parts.headers, &bound);
    parts.extensions.insert(SealedContext {
        session_id: id,
        seq: sealer.seq(),
        full: false,
    });
    let opened = Opened {
        id,
        entry,
        sealer,
        head,
    };
    Ok((opened, Request::from_parts(parts, handler_body)))
}

async fn open_full(
    manager: &SessionManager,
    id: SessionId,
    parts: Parts,
    body: Body,
) -> Result<(Opened, Request<Body>), Refusal> {
    let (entry, sealer, inner, handler_body, limit) = match read_incoming(manager, body).await? {
        Incoming::Record(mut record) => {
            let (entry, opened) = manager
                .open_request(&id, &RequestBinding::Full, &mut record)
                .await?;
            let mut inner =
                FullRequest::decode(&record[opened.plaintext.clone()]).map_err(Refusal::from)?;
            let content = Body::from(std::mem::take(&mut inner.body));
            (entry, opened.sealer, inner, content, None)
        }
        Incoming::Stream { start, rest, body } => {
            let release = parts.extensions.get::<BodyRelease>().cloned();
            let (entry, sealer, mut stream, limit) = open_stream(
                manager,
                id,
                &RequestBinding::Full,
                start,
                rest,
                body,
                release,
            )
            .await?;
            let head = read_full_head(&mut stream).await?;
            let content = FullContent::new(stream, head.content, head.rest);
            (entry, sealer, head.request, Body::new(content), Some(limit))
        }
    };
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
        .body(handler_body)
        .map_err(|_| Refusal::new(ErrorCode::Malformed))?;
    handler_req.extensions_mut().insert(SealedContext {
        session_id: id,
        seq: sealer.seq(),
        full: true,
    });
    if let Some(limit) = limit {
        handler_req.extensions_mut().insert(limit);
    }
    if let Some(ci) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        handler_req.extensions_mut().insert(*ci);
    }
    let opened = Opened {
        id,
        entry,
        sealer,
        head: false,
    };
    Ok((opened, handler_req))
}

/// Reads a streamed full-mode request until its Binary HTTP head is complete (at most
/// [`bhttp_stream::MAX_HEAD`]). Its seq is spent already: a failure here is answered
/// as a malformed buffered full-mode request is, and the handler never runs.
async fn read_full_head(stream: &mut RequestStream) -> Result<bhttp_stream::RequestHead, Refusal> {
    let malformed = || Refusal::new(ErrorCode::Malformed);
    // A client puts the head in the first chunk; one spread over many tiny chunks is
    // parsed again only every PARSE_STEP bytes and refused past MAX_HEAD_CHUNKS, so it
    // cannot make the server re-parse (and copy) the head once per byte (attack review:
    // 2.7 s of CPU for a 64 KiB head sent a byte per chunk).
    const PARSE_STEP: usize = 4096;
    const MAX_HEAD_CHUNKS: usize = 256;
    let mut joined = BytesMut::new();
    let mut parsed_at = 0usize;
    let mut chunks = 0usize;
    loop {
        let frame = match stream.frame().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "streamed full-mode request failed before its head");
                return Err(malformed());
            }
            None => {
                // The end: what there is must hold the whole head.
                return match bhttp_stream::request_head(&joined.freeze()).map_err(Refusal::from)? {
                    Some(head) => Ok(head),
                    None => Err(malformed()),
                };
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        chunks += 1;
        if chunks > MAX_HEAD_CHUNKS {
            return Err(malformed());
        }
        // Usually the head is inside the first chunk: no copy then.
        if joined.is_empty() {
            if let Some(head) = bhttp_stream::request_head(&data).map_err(Refusal::from)? {
                return Ok(head);
            }
            parsed_at = data.len();
            joined.extend_from_slice(&data);
            continue;
        }
        joined.extend_from_slice(&data);
        if joined.len() < parsed_at + PARSE_STEP && joined.len() < bhttp_stream::MAX_HEAD {
            continue;
        }
        parsed_at = joined.len();
        let have = joined.split().freeze();
        if let Some(head) = bhttp_stream::request_head(&have).map_err(Refusal::from)? {
            return Ok(head);
        }
        // Nothing refers to `have` any more: take its buffer back without a copy.
        joined = have
            .try_into_mut()
            .unwrap_or_else(|b| BytesMut::from(&b[..]));
    }
}

/// Seals the handler's response.
///
/// When the session negotiated streams, the handler's body is first read as far as it
/// is ready at once: if it ends within one chunk (64 KiB), it goes out as one record,
/// as it would without streams. Otherwise — it pends before ending (server-sent events)
/// or is larger — the response becomes a stream, sealed chunk by chunk as the body
/// produces it ([`SealedStream`]); a body that fails then cuts the stream.
///
/// Without streams the body is read up to `max_response_bytes`; a larger one is not
/// sent (the request did run, so the client gets a sealed `500` rather than a refusal
/// that would let it believe otherwise).
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
    } else if opened.entry.streams {
        match start_reading(Body::new(body)).await {
            Started::Whole(b) => Ok(b),
            Started::Failed => Err(Refusal::new(ErrorCode::Internal)),
            Started::Stream(collected, rest) => {
                return seal_stream(manager, opened, parts, collected, rest);
            }
        }
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

/// Largest response body sent as one record when its exact size is known (it is in
/// memory already) and all of it is ready when first polled: one record costs one copy
/// and one AEAD pass where a stream of chunks costs more (measured: 64 KiB and 1 MiB
/// echoes fell from 0.73× to 0.68× of plain when streamed). A body that is larger, of
/// unknown size, or not complete at once (server-sent events, a file read from disk)
/// is streamed.
const SINGLE_RECORD_MAX: usize = 4 << 20;

/// How the start of a handler's response body turned out.
enum Started {
    /// It ended within [`SINGLE_RECORD_MAX`], with the frames ready at once.
    Whole(Bytes),
    /// It failed before anything was sent.
    Failed,
    /// It pended, or grew past a chunk: what was collected, and the rest.
    Stream(Vec<Bytes>, Body),
}

/// Reads the frames of `body` that are ready at once, up to one chunk.
async fn start_reading(mut body: Body) -> Started {
    use std::task::Poll;
    // A body whose exact size is known and small is in memory already (axum's `Json`,
    // bytes, a string): one record costs nothing more. Any other is collected only up
    // to one chunk before it streams, so a body produced as it is read is never
    // gathered here beyond 64 KiB.
    let limit = match http_body::Body::size_hint(&body).exact() {
        Some(n) if n <= SINGLE_RECORD_MAX as u64 => SINGLE_RECORD_MAX,
        _ => sessioncert_proto::stream::MAX_CHUNK_LEN,
    };
    let mut collected: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let next = std::future::poll_fn(|cx| {
            Poll::Ready(http_body::Body::poll_frame(
                std::pin::Pin::new(&mut body),
                cx,
            ))
        })
        .await;
        match next {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    if !data.is_empty() {
                        collected.push(data);
                    }
                    if len > limit {
                        return Started::Stream(collected, body);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::error!(error = %e, "the handler's response body failed");
                return Started::Failed;
            }
            Poll::Ready(None) => {
                return Started::Whole(match collected.len() {
                    0 => Bytes::new(),
                    1 => collected.swap_remove(0),
                    _ => {
                        let mut joined = BytesMut::with_capacity(len);
                        for c in collected {
                            joined.extend_from_slice(&c);
                        }
                        joined.freeze()
                    }
                })
            }
            Poll::Pending => return Started::Stream(collected, body),
        }
    }
}

/// Answers with a streamed response: the head now, the body sealed as it is produced.
fn seal_stream(
    manager: &SessionManager,
    opened: Opened,
    parts: http::response::Parts,
    collected: Vec<Bytes>,
    rest: Body,
) -> Result<Response, Refusal> {
    let full = opened.sealer.is_full();
    let seq = opened.sealer.seq();
    let (status, headers, inner_ct) = if full {
        (StatusCode::OK, HeaderMap::new(), None)
    } else {
        let ct = bindable_content_type(&parts.headers);
        (parts.status, parts.headers.clone(), ct)
    };
    let binding = if full {
        ResponseBinding::Full
    } else {
        ResponseBinding::Header {
            status: status.as_u16(),
            content_type: inner_ct
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        }
    };
    let (header, sealer) = manager.start_response_stream(&opened.entry, opened.sealer, &binding)?;
    let counters = manager.byte_counters();
    counters.response_streams.increment(1);
    let stream = SealedStream::new(
        rest,
        SealedStreamParts {
            header,
            sealer,
            full_head: full
                .then(|| bhttp_stream::response_head(parts.status.as_u16(), &parts.headers)),
            collected,
            budget: manager.response_bytes.clone(),
            sealed_bytes: counters.sealed.clone(),
            label: StreamLabel {
                session: opened.id,
                seq,
                started: Instant::now(),
            },
            entry: opened.entry.clone(),
        },
    );
    let mut out = sealed_response_with(
        status,
        headers,
        inner_ct,
        SealedBody::Stream(Body::new(stream)),
        false,
    );
    if full {
        if let Ok(v) = HeaderValue::from_str(&opened.id.to_string()) {
            out.headers_mut().insert(H_SESSION, v);
        }
    }
    Ok(out)
}

/// The handler's content type when it can be bound (visible ASCII), else none.
fn bindable_content_type(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(header::CONTENT_TYPE)
        .filter(|v| !v.is_empty() && v.to_str().is_ok())
        .cloned()
}

/// A sealed response body, counted against the response budget until the memory holding
/// it is freed (the last piece the connection took was written and dropped), and handed
/// over [`CHARGED_CHUNK`] bytes at a time.
pub(crate) struct Charged {
    rest: Bytes,
}

/// How much of a sealed response the connection takes at once.
const CHARGED_CHUNK: usize = 64 * 1024;

impl Charged {
    pub(crate) fn new(bytes: Bytes, budget: Arc<AtomicUsize>) -> Self {
        Charged {
            rest: ChargedBuffer::charge(bytes, &budget),
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
    // A content type that is not visible ASCII cannot be bound: send none.
    let inner_ct = bindable_content_type(&headers);
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
