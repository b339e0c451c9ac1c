//! One request on an established session: sealing it (and persisting the session
//! before anything is sent), sending it, authenticating and opening the answer, turning
//! refusals into errors, and the at-most-once rules that decide whether a refused or
//! failed request may be sent again. Everything that touches a request's bytes is here.

use super::handshake::Slot;
use super::{lock, now_ms, read_limited, Inner};
use crate::bhttp_stream::ResponseDecoder;
use crate::body::{LoadedBody, Progress, SealingBody, SourceFailure};
use crate::request::{Prepared, Response};
use crate::streaming::{ChunkReader, Content};
use crate::{ClientError, RefusalAuthenticity, StreamingResponse};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::record::{
    RecordType, RequestBinding, RequestLine, ResponseBinding, RECORD_HEADER_LEN,
};
use sessioncert_proto::session::ResponseExpectation;
use sessioncert_proto::wire;
use sessioncert_proto::{ClientSession, ErrorCode, ProtocolError};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// Largest refusal body read (only its `message` is used).
const MAX_REFUSAL_LEN: usize = 16 * 1024;
/// Longest refusal message kept (it is unauthenticated text from the network).
const MAX_MESSAGE_CHARS: usize = 512;

/// Header names as values: `&str` names would be re-parsed on every request.
const H_SESSION: HeaderName = HeaderName::from_static(wire::SESSION_HEADER);
const H_INNER_CONTENT_TYPE: HeaderName = HeaderName::from_static(wire::CONTENT_TYPE_HEADER);
const H_STATUS: HeaderName = HeaderName::from_static(wire::STATUS_HEADER);
pub(super) const H_ERROR: HeaderName = HeaderName::from_static(wire::ERROR_HEADER);
const H_CONFIRM: HeaderName = HeaderName::from_static(wire::CONFIRM_HEADER);
const H_REFUSAL: HeaderName = HeaderName::from_static(wire::REFUSAL_HEADER);
const H_TARGET: HeaderName = HeaderName::from_static(wire::TARGET_HEADER);
const H_COVERED: HeaderName = HeaderName::from_static(wire::COVERED_HEADER);
const H_RECORD: HeaderName = HeaderName::from_static(wire::RECORD_HEADER);

/// Headers that carry credentials: bound whenever they are set.
const CREDENTIALS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
];

/// The headers a header-mode request binds (PROTOCOL §8.2): those the caller named,
/// then any credential header that is set; each with its field lines joined by `", "`.
fn covered_headers(p: &Prepared) -> Result<Vec<(String, String)>, ClientError> {
    let mut names: Vec<&HeaderName> = p.cover.iter().collect();
    for c in &CREDENTIALS {
        if p.headers.contains_key(c) && !names.contains(&c) {
            names.push(c);
        }
    }
    if names.len() > sessioncert_proto::record::MAX_COVERED_HEADERS {
        return Err(ClientError::InvalidRequest(format!(
            "at most {} headers can be covered",
            sessioncert_proto::record::MAX_COVERED_HEADERS
        )));
    }
    names
        .into_iter()
        .map(|n| {
            let mut value = String::new();
            for (i, v) in p.headers.get_all(n).iter().enumerate() {
                if i > 0 {
                    value.push_str(", ");
                }
                value.push_str(v.to_str().map_err(|_| {
                    ClientError::InvalidRequest(format!("covered header {n} is not text"))
                })?);
            }
            Ok((n.as_str().to_owned(), value))
        })
        .collect()
}

/// What is known, after an attempt failed once the request was handed to the
/// transport, about whether the server executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Execution {
    /// It certainly was not executed: the connection was never made (nothing was
    /// sent), or the server refused it with an authenticated refusal.
    NotExecuted,
    /// It may or may not have been executed.
    Unknown,
}

/// Classifies a failed attempt. An unauthenticated refusal proves nothing: anyone on
/// the path can forge one after letting the server execute the request.
fn execution_of(e: &ClientError) -> Execution {
    match e {
        ClientError::Rejected {
            authenticity: RefusalAuthenticity::Authenticated,
            ..
        } => Execution::NotExecuted,
        // Connect errors (refused, unreachable, connect timeout) come from the connector,
        // before any byte of the request was written; builder errors before that.
        ClientError::Http(h) if h.is_connect() || h.is_builder() => Execution::NotExecuted,
        // Only a TLS handshake that failed while connecting is classified as one.
        ClientError::Tls { .. } => Execution::NotExecuted,
        _ => Execution::Unknown,
    }
}

/// Whether the client may send a request again on its own after `e`: only when it
/// knows the first attempt was not executed or the request is safe to send twice.
fn may_resend(e: &ClientError, retry_safe: bool) -> bool {
    retry_safe || execution_of(e) == Execution::NotExecuted
}

/// How often a request that is safe to send twice is sent again after its connection
/// failed.
const RESENDS_AFTER_CUT: u32 = 3;

/// How long the close that settles an unknown outcome may take.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The protocol's header encoding of bytes: unpadded base64url (PROTOCOL §3).
fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text)
}

/// Turns a response carrying `sessioncert-error` into an error.
pub(super) async fn refusal(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let code_text = resp
        .headers()
        .get(&H_ERROR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_string();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message = read_limited(resp, MAX_REFUSAL_LEN)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_default();
    match ErrorCode::parse(&code_text) {
        Some(code) => ClientError::Rejected {
            status,
            code,
            message,
            retry_after,
            // Until its tag is checked against the session (PROTOCOL §14.1).
            authenticity: RefusalAuthenticity::Unauthenticated,
        },
        None => ClientError::unexpected(
            Some(status),
            format!(
                "unknown sessioncert-error code {:?}",
                code_text.chars().take(64).collect::<String>()
            ),
        ),
    }
}

fn is_sealed_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case(wire::SEALED_CONTENT_TYPE))
}

/// A session refusal after which one fresh handshake and one retry are worth it.
pub(super) fn needs_new_session(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownSession | ErrorCode::SessionExpired | ErrorCode::SessionClosed)
    )
}

/// What goes out as the body of a sealed request.
enum Payload {
    Record(Vec<u8>),
    Stream(Box<SealingBody>),
}

/// A request sealed and ready to go.
struct Outgoing {
    rb: reqwest::RequestBuilder,
    expect: ResponseExpectation,
    /// Whether the body goes as a stream of chunks.
    streamed: bool,
}

/// A total time limit far beyond any exchange: streamed exchanges are bounded by the
/// idle timeout instead of the HTTP client's total timeout.
const NO_TOTAL_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Waits for the response headers of a request, failing when nothing moved (no body
/// chunk sent) for `idle`.
async fn watch_idle(
    send: impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    progress: &Progress,
    idle: Duration,
) -> Result<reqwest::Response, ClientError> {
    tokio::pin!(send);
    loop {
        let wait = idle.saturating_sub(progress.idle());
        if wait.is_zero() {
            return Err(ClientError::Stalled { idle });
        }
        tokio::select! {
            r = &mut send => return r.map_err(ClientError::from),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The first non-empty piece of a body (empty at its end).
async fn first_piece(resp: &mut reqwest::Response) -> Result<bytes::Bytes, ClientError> {
    while let Some(b) = resp.chunk().await? {
        if !b.is_empty() {
            return Ok(b);
        }
    }
    Ok(bytes::Bytes::new())
}

/// The rest of a single-record body after `first`, at most `max` bytes in all.
async fn read_rest(
    mut resp: reqwest::Response,
    first: bytes::Bytes,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    let status = resp.status();
    let too_large = || ClientError::unexpected(Some(status), "response body too large");
    if first.len() > max || resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max as u64) as usize);
    out.extend_from_slice(&first);
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Header mode: the status a sealed response binds and its headers as the caller sees
/// them, with the inner content type.
fn header_mode_meta(
    status: StatusCode,
    outer_headers: HeaderMap,
) -> Result<(StatusCode, HeaderMap, String), ClientError> {
    // A status that forbids a body (204, 205, 304) arrives as 200 with the real
    // status in a header; the seal binds the real one.
    // Exactly one line, exactly `204`, `205` or `304`, and only on a 200
    // (PROTOCOL §13); anything else is refused unopened.
    let mut status_lines = outer_headers.get_all(&H_STATUS).iter();
    let status = match (status_lines.next(), status_lines.next()) {
        (None, _) => status,
        (Some(v), None) if status == StatusCode::OK => match v.as_bytes() {
            b"204" => StatusCode::NO_CONTENT,
            b"205" => StatusCode::RESET_CONTENT,
            b"304" => StatusCode::NOT_MODIFIED,
            _ => {
                return Err(ClientError::unexpected(
                    Some(status),
                    "bad sessioncert-status header",
                ))
            }
        },
        _ => {
            return Err(ClientError::unexpected(
                Some(status),
                "sessioncert-status on a status other than 200, or more than once",
            ))
        }
    };
    let mut headers = outer_headers;
    let inner_ct = headers.remove(&H_INNER_CONTENT_TYPE);
    let inner_ct_str = match &inner_ct {
        Some(v) => v
            .to_str()
            .map_err(|_| {
                ClientError::unexpected(Some(status), "sessioncert-content-type is not text")
            })?
            .to_string(),
        None => String::new(),
    };
    headers.remove(CONTENT_TYPE);
    headers.remove(CONTENT_LENGTH);
    headers.remove(&H_STATUS);
    headers.remove(&H_RECORD);
    if let Some(v) = inner_ct.filter(|_| !inner_ct_str.is_empty()) {
        headers.insert(CONTENT_TYPE, v);
    }
    Ok((status, headers, inner_ct_str))
}

/// A full-mode response's status and header fields as the caller sees them.
fn full_mode_meta(
    status: u16,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(StatusCode, HeaderMap), ClientError> {
    let status =
        StatusCode::from_u16(status).map_err(|_| ProtocolError::Malformed { what: "status" })?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (k, v) in fields {
        let name = http::HeaderName::from_bytes(&k)
            .map_err(|_| ProtocolError::Malformed { what: "header" })?;
        let value =
            HeaderValue::from_bytes(&v).map_err(|_| ProtocolError::Malformed { what: "header" })?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// The indeterminate-length Binary HTTP framing (RFC 9292 §3.2, framing indicator 2)
/// of a full-mode request up to its content: control data and header fields.
fn full_request_prefix(
    method: &str,
    scheme: &str,
    authority: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, ClientError> {
    let mut m = bhttp::Message::request(
        method.as_bytes().to_vec(),
        scheme.as_bytes().to_vec(),
        authority.as_bytes().to_vec(),
        path.as_bytes().to_vec(),
    );
    for (k, v) in headers {
        m.put_header(k.to_ascii_lowercase().into_bytes(), v.clone());
    }
    let mut out = Vec::new();
    m.write_bhttp(bhttp::Mode::IndeterminateLength, &mut out)
        .map_err(|_| ClientError::InvalidRequest("request cannot be framed".into()))?;
    // Without content or trailer the message ends with their two terminators; the
    // content goes in their place.
    match out.strip_suffix(&[0, 0]) {
        Some(prefix) => Ok(prefix.to_vec()),
        None => Err(ClientError::InvalidRequest(
            "request cannot be framed".into(),
        )),
    }
}

impl Inner {
    /// Seals with `slot` (through `f`) and persists the session before returning.
    async fn seal_with<T>(
        &self,
        slot: &Slot,
        f: impl FnOnce(&mut ClientSession) -> Result<T, ProtocolError>,
    ) -> Result<(T, Option<HeaderValue>), ClientError> {
        let (sealed, snapshot, confirm) = {
            let mut s = lock(&slot.session);
            let sealed = f(&mut s)?;
            // Checked under the session lock, so a concurrent `save_session` either
            // exported after this seal or registered its file before it.
            let snapshot = self.has_files().then(|| (s.export(), s.next_seq()));
            let confirm = s
                .confirmation()
                .and_then(|c| HeaderValue::from_str(&b64_encode(c)).ok());
            (sealed, snapshot, confirm)
        };
        slot.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if let Some((secrets, next_seq)) = snapshot {
            self.persist(slot, next_seq, secrets, false).await?;
        }
        Ok((sealed, confirm))
    }

    /// One sealed exchange with `slot`: seal, persist, send, authenticate the answer.
    pub(super) async fn exchange(
        &self,
        slot: &Slot,
        p: &Prepared,
    ) -> Result<Response, ClientError> {
        let mut body = p.body.load().await?.ok_or_else(|| {
            ClientError::InvalidRequest("the request body was already consumed".into())
        })?;
        let progress = Progress::new();
        let failure = SourceFailure::default();
        let out = self
            .prepare(slot, p, &mut body, false, &progress, &failure)
            .await?;
        self.send(slot, out, false, &progress)
            .await?
            .collect()
            .await
    }

    /// Seals the request with `slot` and persists the session: everything before any
    /// byte is sent. An error here means the request was not sent. A streamed body is
    /// taken out of `body` only once its first chunk is sealed.
    async fn prepare(
        &self,
        slot: &Slot,
        p: &Prepared,
        body: &mut LoadedBody,
        streaming: bool,
        progress: &Progress,
        failure: &SourceFailure,
    ) -> Result<Outgoing, ClientError> {
        if matches!(body, LoadedBody::Head(_)) && !lock(&slot.session).streams() {
            // No streams in this session: the whole body as one record, if it fits.
            if let LoadedBody::Head(c) = std::mem::replace(body, LoadedBody::Spent) {
                debug!(
                    session = %slot.id,
                    limit = self.max_buffered_body,
                    "the session has no streamed records: buffering the request body to send it as one record"
                );
                *body = LoadedBody::Whole(c.read_all(self.max_buffered_body).await?);
            }
        }
        let content_type = p.content_type.as_deref().unwrap_or("");
        let full_parts = p.full.then(|| {
            let authority = match (p.url.host_str(), p.url.port()) {
                (Some(h), Some(port)) => format!("{h}:{port}"),
                (Some(h), None) => h.to_string(),
                _ => String::new(),
            };
            let path = match p.url.query() {
                Some(q) => format!("{}?{q}", p.url.path()),
                None => p.url.path().to_string(),
            };
            let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(p.headers.len() + 1);
            if !content_type.is_empty() {
                headers.push((CONTENT_TYPE.as_str().into(), content_type.as_bytes().into()));
            }
            for (k, v) in &p.headers {
                headers.push((k.as_str().to_string(), v.as_bytes().to_vec()));
            }
            (authority, path, headers)
        });
        // The base URL's origin, serialized once; a request URL is always joined onto
        // the base, so it has the same origin (checked, to be safe).
        let origin;
        let target: &str = if p.url.host_str() == self.base.host_str()
            && p.url.port_or_known_default() == self.base.port_or_known_default()
            && p.url.scheme() == self.base.scheme()
        {
            &self.target
        } else {
            origin = p.url.origin().ascii_serialization();
            &origin
        };
        let covered = if p.full {
            Vec::new()
        } else {
            covered_headers(p)?
        };
        let covered_refs: Vec<(&str, &str)> = covered
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let binding = if p.full {
            RequestBinding::Full
        } else {
            RequestBinding::Header(RequestLine {
                method: p.method.as_str(),
                target,
                path: p.url.path(),
                query: p.url.query().unwrap_or(""),
                content_type,
                covered: &covered_refs,
            })
        };

        let (payload, expect, confirm, bytes) = match body {
            LoadedBody::Whole(b) => {
                let bytes = b.len();
                let ((record, expect), confirm) = match &full_parts {
                    Some((authority, path, headers)) => {
                        let inner = Zeroizing::new(
                            FullRequest {
                                method: p.method.as_str().to_string(),
                                scheme: p.url.scheme().to_string(),
                                authority: authority.clone(),
                                path: path.clone(),
                                headers: headers.clone(),
                                body: b.to_vec(),
                            }
                            .encode(),
                        );
                        self.seal_with(slot, |s| s.seal_request(&binding, &inner))
                            .await?
                    }
                    None => {
                        self.seal_with(slot, |s| s.seal_request(&binding, b))
                            .await?
                    }
                };
                (Payload::Record(record), expect, confirm, bytes)
            }
            LoadedBody::Head(chunker) => {
                if p.method == Method::HEAD {
                    return Err(ClientError::InvalidRequest(
                        "a HEAD request cannot carry a body of more than 64 KiB".into(),
                    ));
                }
                if let Some((authority, path, headers)) = &full_parts {
                    let prefix = full_request_prefix(
                        p.method.as_str(),
                        p.url.scheme(),
                        authority,
                        path,
                        headers,
                    )?;
                    chunker.frame_as_bhttp(prefix);
                }
                let (first, last) = chunker.first();
                let (start, confirm) = self
                    .seal_with(slot, |s| s.seal_request_stream(&binding, first, last))
                    .await?;
                chunker.advance();
                let LoadedBody::Head(chunker) = std::mem::replace(body, LoadedBody::Spent) else {
                    return Err(ClientError::InvalidRequest("request body lost".into()));
                };
                let sealing = SealingBody::new(
                    start.bytes,
                    chunker,
                    start.sealer,
                    progress.clone(),
                    failure.clone(),
                );
                (
                    Payload::Stream(Box::new(sealing)),
                    start.expectation,
                    confirm,
                    0,
                )
            }
            LoadedBody::Spent => {
                return Err(ClientError::InvalidRequest(
                    "the request body was already consumed".into(),
                ))
            }
        };
        let streamed = matches!(payload, Payload::Stream(_));
        debug!(
            session = %slot.id,
            seq = expect.seq,
            method = %p.method,
            path = p.url.path(),
            bytes,
            streamed,
            covered = covered.len(),
            "sending sealed request ({})",
            if p.full {
                "full mode: method, path, headers and body sealed"
            } else {
                "header mode: body sealed, method, origin, path and query bound"
            }
        );
        let mut rb = if p.full {
            self.http
                .post(self.url(wire::FULL_PATH)?)
                .header(H_SESSION, slot.id_header.clone())
                .header(CONTENT_TYPE, wire::SEALED_CONTENT_TYPE)
        } else {
            let mut rb = self
                .http
                .request(p.method.clone(), p.url.clone())
                .headers(p.headers.clone())
                .header(H_SESSION, slot.id_header.clone())
                .header(CONTENT_TYPE, wire::SEALED_CONTENT_TYPE)
                .header(
                    H_TARGET,
                    if std::ptr::eq(target, self.target.as_str()) {
                        self.target_header.clone()
                    } else {
                        HeaderValue::from_str(target).map_err(|_| {
                            ClientError::InvalidRequest("origin is not a header value".into())
                        })?
                    },
                );
            if !covered.is_empty() {
                let names: Vec<&str> = covered.iter().map(|(n, _)| n.as_str()).collect();
                rb = rb.header(H_COVERED, names.join(", "));
            }
            if !content_type.is_empty() {
                rb = rb.header(H_INNER_CONTENT_TYPE, content_type);
            }
            rb
        };
        if let Some(c) = confirm {
            rb = rb.header(H_CONFIRM, c);
        }
        rb = match payload {
            // HTTP gives HEAD no body: the record travels in a header (PROTOCOL §13).
            Payload::Record(record) if !p.full && p.method == Method::HEAD => {
                rb.header(H_RECORD, b64_encode(&record))
            }
            Payload::Record(record) => rb.body(record),
            Payload::Stream(s) => rb.body(reqwest::Body::wrap_stream(*s)),
        };
        if let Some(t) = p.timeout {
            rb = rb.timeout(t);
        } else if streamed || streaming {
            rb = rb.timeout(NO_TOTAL_LIMIT);
        }
        Ok(Outgoing {
            rb,
            expect,
            streamed,
        })
    }

    /// Sends a prepared request and authenticates the answer (its status and headers,
    /// and for a streamed response its first chunk).
    async fn send(
        &self,
        slot: &Slot,
        out: Outgoing,
        streaming: bool,
        progress: &Progress,
    ) -> Result<StreamingResponse, ClientError> {
        let started = std::time::Instant::now();
        let idle = self.idle_timeout.filter(|_| out.streamed || streaming);
        let resp = match idle {
            Some(idle) => watch_idle(out.rb.send(), progress, idle).await?,
            None => out.rb.send().await?,
        };
        let r = self.open(slot, &out.expect, resp, idle, progress).await;
        match &r {
            Ok(r) => debug!(
                session = %slot.id,
                seq = out.expect.seq,
                status = r.status().as_u16(),
                streamed = r.is_streamed(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "response opened: authentic, from this session, for this request"
            ),
            Err(e) => debug!(
                session = %slot.id,
                seq = out.expect.seq,
                error = %e,
                elapsed_us = started.elapsed().as_micros() as u64,
                "response not opened"
            ),
        }
        r
    }

    /// Authenticates and opens the answer to a sealed request: a single record whole,
    /// a stream up to its first chunk (and, in full mode, its status and headers).
    async fn open(
        &self,
        slot: &Slot,
        expect: &ResponseExpectation,
        resp: reqwest::Response,
        idle: Option<Duration>,
        progress: &Progress,
    ) -> Result<StreamingResponse, ClientError> {
        let status = resp.status();
        if resp.headers().contains_key(&H_ERROR) {
            let tag = resp.headers().get(&H_REFUSAL).cloned();
            let mut err = refusal(resp).await;
            if let (
                Some(tag),
                ClientError::Rejected {
                    code, authenticity, ..
                },
            ) = (tag, &mut err)
            {
                let verified = b64_decode(tag.as_bytes())
                    .is_ok_and(|t| lock(&slot.session).verify_refusal(expect.seq, *code, &t));
                if verified {
                    *authenticity = RefusalAuthenticity::Authenticated;
                } else {
                    warn!(session = %slot.id, "refusal carries a tag that does not verify; treated as unauthenticated");
                }
            }
            return Err(err);
        }
        if !is_sealed_content_type(resp.headers()) {
            warn!(
                status = status.as_u16(),
                "response to a sealed request is not sealed; discarding it"
            );
            return Err(ClientError::Unsealed { status });
        }
        let mut resp = resp;
        let outer_headers = std::mem::take(resp.headers_mut());
        // The body's first byte tells a single record from a stream (PROTOCOL §8.5).
        let first = first_piece(&mut resp).await?;
        let streamed = first
            .first()
            .and_then(|b| RecordType::from_byte(*b))
            .is_some_and(RecordType::is_stream);
        if streamed {
            progress.touch();
            let reader = ChunkReader {
                resp,
                buf: bytes::BytesMut::from(&first[..]),
                opener: None,
                idle,
                progress: progress.clone(),
                received: 0,
            };
            return self
                .open_stream(slot, expect, status, outer_headers, reader)
                .await;
        }
        let mut record = read_rest(resp, first, self.max_response_bytes).await?;
        if record.is_empty() {
            // A response to HEAD carries its record in a header (PROTOCOL §13).
            if let Some(v) = outer_headers.get(&H_RECORD) {
                record = b64_decode(v.as_bytes()).map_err(|_| ProtocolError::Malformed {
                    what: "sessioncert-record",
                })?;
            }
        }
        let response = if expect.full {
            let plain = Zeroizing::new(lock(&slot.session).open_response(
                expect,
                &ResponseBinding::Full,
                &record,
            )?);
            let inner = FullResponse::decode(&plain)?;
            let fields = inner
                .headers
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect();
            let (status, headers) = full_mode_meta(inner.status, fields)?;
            Response::new(status, headers, inner.body.into(), true)
        } else {
            let (status, headers, inner_ct) = header_mode_meta(status, outer_headers)?;
            let binding = ResponseBinding::Header {
                status: status.as_u16(),
                content_type: &inner_ct,
            };
            // Decrypted inside the received buffer; the body is a slice of it, not a copy.
            let range =
                lock(&slot.session).open_response_in_place(expect, &binding, &mut record)?;
            let body = bytes::Bytes::from(record).slice(range);
            Response::new(status, headers, body, false)
        };
        Ok(StreamingResponse::from_whole(
            response,
            self.max_response_bytes,
        ))
    }

    /// Opens the first chunk of a streamed response (and in full mode reads on until
    /// its status and headers are known).
    async fn open_stream(
        &self,
        slot: &Slot,
        expect: &ResponseExpectation,
        status: StatusCode,
        outer_headers: HeaderMap,
        mut reader: ChunkReader,
    ) -> Result<StreamingResponse, ClientError> {
        let cut = |received| ClientError::Truncated {
            received,
            cause: None,
        };
        if !reader.fill(RECORD_HEADER_LEN).await? {
            return Err(cut(0));
        }
        let header = reader.buf.split_to(RECORD_HEADER_LEN);
        let Some(mut frame) = reader.frame().await? else {
            return Err(cut(0));
        };
        if expect.full {
            let (chunk, opener) = lock(&slot.session).open_response_stream(
                expect,
                &ResponseBinding::Full,
                &header,
                &mut frame,
            )?;
            reader.opener = Some(opener);
            reader.received = chunk.plaintext.len() as u64;
            let mut decoder = ResponseDecoder::new();
            decoder.feed(&frame[chunk.plaintext]);
            let head = loop {
                if let Some(head) = decoder.head()? {
                    break head;
                }
                match reader.next_plain().await? {
                    Some(p) => decoder.feed(&p),
                    None => {
                        return Err(ProtocolError::Malformed {
                            what: "binary http message",
                        }
                        .into())
                    }
                }
            };
            let (status, headers) = full_mode_meta(head.status, head.fields)?;
            Ok(StreamingResponse::new(
                status,
                headers,
                true,
                Content::Full { reader, decoder },
                self.max_response_bytes,
            ))
        } else {
            let (status, headers, inner_ct) = header_mode_meta(status, outer_headers)?;
            let binding = ResponseBinding::Header {
                status: status.as_u16(),
                content_type: &inner_ct,
            };
            let (chunk, opener) =
                lock(&slot.session).open_response_stream(expect, &binding, &header, &mut frame)?;
            reader.opener = Some(opener);
            reader.received = chunk.plaintext.len() as u64;
            let first = frame.freeze().slice(chunk.plaintext);
            Ok(StreamingResponse::new(
                status,
                headers,
                false,
                Content::Header {
                    reader,
                    first: Some(first),
                },
                self.max_response_bytes,
            ))
        }
    }

    /// Sends a prepared request: fresh session if needed. If the answer is a session
    /// refusal, the session is dropped; the request is sent once more on a fresh
    /// session only if it was certainly not executed or is safe to send twice,
    /// otherwise the caller gets [`ClientError::OutcomeUnknown`] (as after a transport
    /// failure once the request may have reached the server). A body that was streamed
    /// is read again for that only from a file; a one-shot stream fails with
    /// [`ClientError::BodyNotReplayable`].
    pub(crate) async fn execute(
        &self,
        p: &Prepared,
        streaming: bool,
    ) -> Result<StreamingResponse, ClientError> {
        // Whether the request was already sent once more after a session refusal.
        let mut resent = false;
        // Re-sends after a failed connection so far (a separate allowance, only ever for
        // a request that is safe to send twice). More than one: the next pooled
        // connection can be a dead one too (an instance that went away had several).
        let mut resent_after_cut = 0;
        // Whether a fresh session was already taken because the old one was spent.
        let mut renewed_spent = false;
        // Read ahead before a session is taken: nothing is sealed until the body's start
        // is in hand.
        let mut body = p.body.load().await?.ok_or_else(|| {
            ClientError::InvalidRequest("the request body was already consumed".into())
        })?;
        loop {
            let slot = self.acquire().await?;
            let progress = Progress::new();
            let failure = SourceFailure::default();
            // Nothing is sent before this succeeds, so its errors leave the request
            // unexecuted; a spent session (found at seal time) is simply replaced.
            let out = match self
                .prepare(&slot, p, &mut body, streaming, &progress, &failure)
                .await
            {
                Ok(x) => x,
                Err(ClientError::Protocol(ProtocolError::Exhausted)) if !renewed_spent => {
                    slot.dead.store(true, Ordering::Release);
                    renewed_spent = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let e = match self.send(&slot, out, streaming, &progress).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            // The body's source failed: that, not the transport's view of it, is the cause.
            let e = match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(io) => ClientError::Io(io),
                None => e,
            };
            let resend = may_resend(&e, p.retry_safe);
            if needs_new_session(&e) {
                if !resend {
                    warn!(
                        session = %slot.id,
                        code = ?e.code(),
                        method = %p.method,
                        "session refused after the request was sent; it may have been executed, \
                         so it is not re-sent (outcome unknown); the next request handshakes anew"
                    );
                    return Err(self.outcome_unknown(&slot, p, e).await);
                }
                // Refused (really, or by a forgery): never use this session again, here
                // or in a later process reading the session file.
                self.drop_session(&slot).await;
                if resent {
                    return Err(e);
                }
                if matches!(body, LoadedBody::Spent) {
                    body = match p.body.load().await? {
                        Some(b) => b,
                        None => return Err(ClientError::BodyNotReplayable { cause: Box::new(e) }),
                    };
                }
                info!(session = %slot.id, code = ?e.code(), "server no longer accepts the session; handshaking anew and sending the request once more");
                resent = true;
                self.renew(Some(slot.generation)).await?;
                continue;
            }
            // The connection failed under a request that is safe to send twice (an
            // instance behind the name went away, a proxy cut it): once more, on a new
            // connection, in the same session — the session itself is fine. (Not after
            // a timeout: the caller's time budget is spent, and the request may still
            // be running.)
            if p.retry_safe
                && resent_after_cut < RESENDS_AFTER_CUT
                && matches!(e, ClientError::Http(_))
                && !e.is_timeout()
            {
                if matches!(body, LoadedBody::Spent) {
                    body = match p.body.load().await? {
                        Some(b) => b,
                        None => return Err(ClientError::BodyNotReplayable { cause: Box::new(e) }),
                    };
                }
                info!(session = %slot.id, method = %p.method, error = %e, "connection failed under a request that is safe to send twice; sending it once more");
                resent_after_cut += 1;
                continue;
            }
            // Any other refusal of a sent request is not authenticated either (a forger
            // could send it after the server executed the request), and a response that
            // does not open may hide one that ran.
            if !resend && execution_of(&e) == Execution::Unknown {
                return Err(self.outcome_unknown(&slot, p, e).await);
            }
            return Err(e);
        }
    }

    /// The error for a sent request whose outcome is unknown. First fences the session:
    /// a sealed close the server answers proves that no copy of the request held on the
    /// path can run later (its session is gone), so checking and retrying is safe.
    async fn outcome_unknown(&self, slot: &Slot, p: &Prepared, cause: ClientError) -> ClientError {
        let settled = match self.close_request() {
            Ok(close) => match self.exchange(slot, &close).await {
                Ok(r) => r.status().is_success(),
                Err(e) => {
                    debug!(session = %slot.id, error = %e, "closing the session after an unknown outcome failed");
                    false
                }
            },
            Err(_) => false,
        };
        self.drop_session(slot).await;
        ClientError::OutcomeUnknown {
            method: p.method.clone(),
            cause: Box::new(cause),
            settled,
        }
    }

    /// The sealed close of the current session (PROTOCOL §7).
    pub(super) fn close_request(&self) -> Result<Prepared, ClientError> {
        Ok(Prepared {
            method: Method::POST,
            url: self.url(wire::CLOSE_PATH)?,
            headers: HeaderMap::new(),
            content_type: None,
            body: crate::body::BodySource::Bytes(bytes::Bytes::new()),
            full: false,
            // A fence must not hang the caller on a path that swallows it.
            timeout: Some(CLOSE_TIMEOUT),
            retry_safe: false,
            cover: Vec::new(),
        })
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    fn refusal_with(code: ErrorCode, authenticity: RefusalAuthenticity) -> ClientError {
        ClientError::Rejected {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: String::new(),
            retry_after: None,
            authenticity,
        }
    }

    /// The decision a later protocol version plugs into: an authenticated refusal proves
    /// the request was not executed, so even a POST may be re-sent after one; an
    /// unauthenticated one (every v1 refusal) proves nothing.
    #[test]
    fn only_an_authenticated_refusal_or_a_retry_safe_request_allows_a_resend() {
        for code in [
            ErrorCode::UnknownSession,
            ErrorCode::SessionExpired,
            ErrorCode::SessionClosed,
        ] {
            let forged = refusal_with(code, RefusalAuthenticity::Unauthenticated);
            assert!(needs_new_session(&forged));
            assert_eq!(execution_of(&forged), Execution::Unknown);
            assert!(!may_resend(&forged, false), "{code}");
            assert!(may_resend(&forged, true), "{code}");

            let authentic = refusal_with(code, RefusalAuthenticity::Authenticated);
            assert_eq!(execution_of(&authentic), Execution::NotExecuted);
            assert!(may_resend(&authentic, false), "{code}");
        }
        assert_eq!(
            execution_of(&ClientError::Protocol(ProtocolError::BadSeal)),
            Execution::Unknown
        );
    }

    /// A connection that was never made sent nothing: not an unknown outcome.
    #[tokio::test]
    async fn a_refused_connection_is_known_not_executed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e: ClientError = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/notes"))
            .body("x")
            .send()
            .await
            .unwrap_err()
            .into();
        assert_eq!(execution_of(&e), Execution::NotExecuted, "{e:?}");
        assert!(may_resend(&e, false));
    }

    /// A TLS handshake that failed while connecting sent nothing either.
    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn a_failed_tls_handshake_is_known_not_executed() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::sync::Arc;
        // A TLS server whose certificate nobody trusts.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let http = crate::TlsOptions::new()
            .configure(reqwest::Client::builder())
            .unwrap()
            .build()
            .unwrap();
        let e: ClientError = http
            .post(format!("https://localhost:{port}/notes"))
            .body("x")
            .send()
            .await
            .unwrap_err()
            .into();
        assert!(e.is_tls(), "{e:?}");
        assert_eq!(execution_of(&e), Execution::NotExecuted, "{e:?}");
        assert!(may_resend(&e, false));
    }
}
