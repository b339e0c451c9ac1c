//! Building sealed requests and reading their (authenticated) responses.

use crate::body::{reader_stream, BodySource};
use crate::{Client, ClientError, StreamingResponse};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Everything needed to (re)send one request.
pub(crate) struct Prepared {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub content_type: Option<String>,
    pub body: BodySource,
    pub full: bool,
    pub timeout: Option<Duration>,
    /// Whether the client may send the request a second time on its own (after a
    /// session refusal) without knowing that the first attempt was not executed.
    pub retry_safe: bool,
    /// Headers the caller asked to bind (header mode); credential headers are added.
    pub cover: Vec<HeaderName>,
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has the same
/// intended effect as sending it once.
pub(crate) fn is_idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A sealed request being built; see [`Client::request`].
#[must_use = "a request does nothing until you `.send().await` it"]
pub struct RequestBuilder {
    client: Client,
    method: Method,
    path: String,
    headers: HeaderMap,
    content_type: Option<String>,
    body: BodySource,
    full: bool,
    timeout: Option<Duration>,
    idempotent: Option<bool>,
    cover: Vec<HeaderName>,
    error: Option<ClientError>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("full", &self.full)
            .field("body_len", &self.body.len_hint())
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    pub(crate) fn new(client: Client, method: Method, path: &str) -> Self {
        RequestBuilder {
            client,
            method,
            path: path.to_string(),
            headers: HeaderMap::new(),
            content_type: None,
            body: BodySource::Bytes(Bytes::new()),
            full: false,
            timeout: None,
            idempotent: None,
            cover: Vec::new(),
            error: None,
        }
    }

    /// Binds request header `name` into the seal (header mode): the server refuses the
    /// request if it arrives with another value, and only bound credentials
    /// (`authorization`, `proxy-authorization`, `cookie`) reach its handlers — those
    /// three are bound automatically whenever they are set. Other headers travel
    /// unprotected. (In full-request mode every header is sealed anyway.) At most 16.
    pub fn cover<K>(mut self, name: K) -> Self
    where
        HeaderName: TryFrom<K>,
    {
        match HeaderName::try_from(name) {
            Ok(n)
                if n.as_str().starts_with("sessioncert-")
                    || matches!(
                        n.as_str(),
                        "content-type"
                            | "content-length"
                            | "transfer-encoding"
                            | "connection"
                            | "keep-alive"
                            | "proxy-connection"
                            | "te"
                            | "trailer"
                            | "upgrade"
                    ) =>
            {
                self.fail(ClientError::InvalidRequest(format!(
                    "header {n} cannot be covered (PROTOCOL §8.2)"
                )))
            }
            Ok(n) => {
                if !self.cover.contains(&n) {
                    self.cover.push(n);
                }
                self
            }
            Err(_) => self.fail(ClientError::InvalidRequest("header name to cover".into())),
        }
    }

    fn fail(mut self, e: ClientError) -> Self {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self
    }

    /// Adds a header. In header mode (the default) headers travel **unprotected**
    /// beside the sealed body; in full-request mode ([`RequestBuilder::full`]) they are
    /// sealed. `content-type` sets the inner (sealed) content type; `sessioncert-*`,
    /// `content-length`, `transfer-encoding` and `host` are refused.
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        let name = match HeaderName::try_from(name) {
            Ok(n) => n,
            Err(e) => {
                let e: http::Error = e.into();
                return self.fail(ClientError::InvalidRequest(format!("header name: {e}")));
            }
        };
        let value = match HeaderValue::try_from(value) {
            Ok(v) => v,
            Err(e) => {
                let e: http::Error = e.into();
                return self.fail(ClientError::InvalidRequest(format!("header value: {e}")));
            }
        };
        self.add_header(name, value)
    }

    /// Adds several headers (same rules as [`RequestBuilder::header`]).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        let mut last = None;
        for (name, value) in headers {
            let name = match name {
                Some(n) => {
                    last = Some(n.clone());
                    n
                }
                None => match &last {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            self = self.add_header(name, value);
        }
        self
    }

    fn add_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        if name == CONTENT_TYPE {
            return match value.to_str() {
                Ok(v) => self.content_type(v),
                Err(_) => self.fail(ClientError::InvalidRequest(
                    "content-type must be visible ASCII".into(),
                )),
            };
        }
        if name.as_str().starts_with("sessioncert-")
            || name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == HOST
        {
            return self.fail(ClientError::InvalidRequest(format!(
                "header {name} is set by the client itself"
            )));
        }
        self.headers.append(name, value);
        self
    }

    /// The plaintext body (sealed before it leaves the process).
    /// Takes `Vec<u8>`, `String`, `&'static str` or `Bytes` without copying. Up to 64 KiB
    /// it travels as one sealed record; a larger one as a stream of 64 KiB chunks when
    /// the session negotiated streams (PROTOCOL §8.5), else as one record.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = BodySource::Bytes(body.into());
        self
    }

    /// The plaintext body from a stream, read as it is sent: never held whole in memory.
    ///
    /// When the session negotiated streamed records (see [`crate::SessionInfo`]) a body
    /// that ends within its first 64 KiB goes as one sealed record, as
    /// [`RequestBuilder::body`] would send it; a longer one goes as a stream of sealed
    /// chunks (PROTOCOL §8.5), each read and sealed only when the connection can take
    /// it. When the server did not negotiate streams, the body is buffered up to
    /// [`crate::ClientBuilder::max_buffered_body`] and sent as one record; a larger one
    /// fails with [`ClientError::StreamsNotNegotiated`] before anything is sent.
    ///
    /// A stream can be read only once: if the request has to be sent again (after a
    /// session refusal, for a request safe to send twice) and its body was already
    /// consumed, the request fails with [`ClientError::BodyNotReplayable`]; use
    /// [`RequestBuilder::body_file`] for a body that can be read again. A source that
    /// fails in the middle fails the request ([`ClientError::Io`]); the server then sees
    /// a stream cut short, never a complete body.
    pub fn body_stream<S, B, E>(mut self, stream: S) -> Self
    where
        S: futures_core::Stream<Item = Result<B, E>> + Send + 'static,
        B: Into<Bytes>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use futures_util::StreamExt;
        let s = stream.map(|item| item.map(Into::into).map_err(std::io::Error::other));
        self.body = BodySource::Stream(std::sync::Mutex::new(Some(Box::pin(s))));
        self
    }

    /// The plaintext body read from `reader` as it is sent (see
    /// [`RequestBuilder::body_stream`]).
    pub fn body_reader<R>(mut self, reader: R) -> Self
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        self.body = BodySource::Stream(std::sync::Mutex::new(Some(reader_stream(reader))));
        self
    }

    /// The plaintext body read from the file at `path` as it is sent (see
    /// [`RequestBuilder::body_stream`]). The file is opened when the request is sent,
    /// and opened again if the request has to be sent again.
    pub fn body_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.body = BodySource::File(path.into());
        self
    }

    /// Serializes `value` as the JSON body and sets the content type to
    /// `application/json` unless one was set.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(b) => {
                self.body = BodySource::Bytes(b.into());
                if self.content_type.is_none() {
                    self.content_type = Some("application/json".into());
                }
                self
            }
            Err(e) => self.fail(ClientError::Json(e)),
        }
    }

    /// The inner content type (sealed in full mode; bound to the seal and sent as
    /// `sessioncert-content-type` in header mode).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        let ct = content_type.into();
        if HeaderValue::from_str(&ct).is_err() {
            return self.fail(ClientError::InvalidRequest(
                "content type is not a valid header value".into(),
            ));
        }
        self.content_type = Some(ct);
        self
    }

    /// Full-request mode: method, path, query, headers and body all travel sealed in a
    /// `POST /.well-known/sessioncert/full`; the response's status and headers come
    /// back sealed too. Default: header mode.
    pub fn full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }

    /// A timeout for this request (each attempt), overriding the HTTP client's.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether this request is safe to send twice, overriding the method's default.
    ///
    /// When the answer to a sent request is a session refusal (`unknown_session`,
    /// `session_expired`, `session_closed`), the client drops the session and — only if
    /// the request is safe to send twice — handshakes anew and sends it once more.
    /// Refusals are not authenticated: an attacker on the path can let the server
    /// execute a request and then forge one, so a request that is not safe to send twice
    /// fails with [`ClientError::OutcomeUnknown`] instead (as it does when the
    /// connection fails after it was sent).
    ///
    /// Default: `true` for the idempotent methods of RFC 9110 (`GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`, `PUT`, `DELETE`), `false` for the others (`POST`, `PATCH`, …).
    /// Pass `true` for a request the server deduplicates (an idempotency key) or that is
    /// harmless to repeat; pass `false` for, say, a `GET` with side effects.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Seals and sends the request and authenticates the response. A response that is
    /// not sealed (and not a refusal) is an error, never returned as if it were. A
    /// request that is not safe to send twice ([`RequestBuilder::idempotent`]) is never
    /// re-sent after it may have reached the server: it fails with
    /// [`ClientError::OutcomeUnknown`] instead.
    pub async fn send(self) -> Result<Response, ClientError> {
        self.execute(false).await?.collect().await
    }

    /// As [`RequestBuilder::send`], but returns as soon as the response's status and
    /// headers are authenticated, with a body read as it arrives
    /// ([`StreamingResponse`]): a streamed response chunk by chunk, a single record as
    /// one piece. Server-sent events: [`StreamingResponse::events`].
    ///
    /// A streamed exchange has no total time limit unless one is set with
    /// [`RequestBuilder::timeout`]; instead it fails with [`ClientError::Stalled`] when
    /// nothing moves for [`crate::ClientBuilder::idle_timeout`].
    pub async fn send_streaming(self) -> Result<StreamingResponse, ClientError> {
        self.execute(true).await
    }

    async fn execute(self, streaming: bool) -> Result<StreamingResponse, ClientError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let url = self.client.url(&self.path)?;
        let retry_safe = self
            .idempotent
            .unwrap_or_else(|| is_idempotent_method(&self.method));
        let prepared = Prepared {
            retry_safe,
            method: self.method,
            url,
            headers: self.headers,
            content_type: self.content_type,
            body: self.body,
            full: self.full,
            timeout: self.timeout,
            cover: self.cover,
        };
        self.client.inner.execute(&prepared, streaming).await
    }
}

/// An authenticated response.
///
/// The status and the body are always authenticated. In header mode, `content-type`
/// (the inner content type) is authenticated but every other header came through
/// unprotected; in full-request mode all headers are authenticated
/// (see [`Response::headers_authenticated`]).
#[derive(Clone)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    full: bool,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type())
            .field("body_len", &self.body.len())
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl Response {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, body: Bytes, full: bool) -> Self {
        Response {
            status,
            headers,
            body,
            full,
        }
    }

    /// The HTTP status (authenticated).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers; `content-type` is the inner content type.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether all headers were authenticated (full-request mode) or only the
    /// content type (header mode).
    pub fn headers_authenticated(&self) -> bool {
        self.full
    }

    /// The inner content type, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// The decrypted body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The decrypted body (cheap clone).
    pub fn bytes(&self) -> Bytes {
        self.body.clone()
    }

    pub(crate) fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }

    /// The decrypted body, consuming the response.
    pub fn into_bytes(self) -> Bytes {
        self.body
    }

    /// The decrypted body as UTF-8 text.
    pub fn text(&self) -> Result<String, ClientError> {
        Ok(String::from_utf8(self.body.to_vec())?)
    }

    /// The decrypted body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// `Err` with the status if it is a client or server error (4xx/5xx).
    pub fn error_for_status(self) -> Result<Self, ClientError> {
        if self.status.is_client_error() || self.status.is_server_error() {
            Err(ClientError::Status {
                status: self.status,
                body: self.body,
            })
        } else {
            Ok(self)
        }
    }
}
