//! Responses read as they arrive: a streamed response (PROTOCOL §8.5) opened chunk by
//! chunk, with at most one chunk buffered, and server-sent events on top of it.

use crate::bhttp_stream::ResponseDecoder;
use crate::body::Progress;
use crate::sse::{Event, Parser};
use crate::{ClientError, Response};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use sessioncert_proto::stream::{complete_chunk, StreamOpener};
use sessioncert_proto::ProtocolError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// Reads the chunks of a streamed response body from the transport and opens them.
pub(crate) struct ChunkReader {
    pub(crate) resp: reqwest::Response,
    /// Transport bytes not yet opened: less than one chunk, or one chunk and what came
    /// with it in the same read.
    pub(crate) buf: BytesMut,
    pub(crate) opener: Option<StreamOpener>,
    pub(crate) idle: Option<Duration>,
    pub(crate) progress: Progress,
    /// Plaintext bytes opened so far.
    pub(crate) received: u64,
}

impl ChunkReader {
    /// Reads more from the transport: `Ok(false)` at its end.
    pub(crate) async fn read_more(&mut self) -> Result<bool, ClientError> {
        let read = self.resp.chunk();
        let next = match self.idle {
            Some(idle) => tokio::time::timeout(idle, read)
                .await
                .map_err(|_| ClientError::Stalled { idle })?,
            None => read.await,
        };
        match next {
            Ok(Some(b)) => {
                self.progress.touch();
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(ClientError::Truncated {
                received: self.received,
                cause: Some(Box::new(ClientError::from(e))),
            }),
        }
    }

    /// Reads until `buf` holds `n` bytes: `Ok(false)` if the transport ended first.
    pub(crate) async fn fill(&mut self, n: usize) -> Result<bool, ClientError> {
        while self.buf.len() < n {
            if !self.read_more().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads until `buf` starts with a whole chunk and splits it off.
    pub(crate) async fn frame(&mut self) -> Result<Option<BytesMut>, ClientError> {
        loop {
            if let Some(n) = complete_chunk(&self.buf)? {
                return Ok(Some(self.buf.split_to(n)));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// The next chunk's plaintext; `Ok(None)` after the last chunk, once the transport
    /// ended with nothing after it.
    pub(crate) async fn next_plain(&mut self) -> Result<Option<Bytes>, ClientError> {
        let Some(opener) = self.opener.as_ref() else {
            return Ok(None);
        };
        if opener.is_finished() {
            // Anything after the last chunk was not sealed as part of this stream.
            if !self.buf.is_empty() || self.read_more().await? {
                return Err(ProtocolError::Malformed {
                    what: "bytes after the last stream chunk",
                }
                .into());
            }
            self.opener = None;
            return Ok(None);
        }
        let Some(mut frame) = self.frame().await? else {
            // The transport ended before the last chunk: cut short.
            let finished = self.opener.as_ref().map(StreamOpener::finish);
            let err = match finished.unwrap_or(Err(ProtocolError::Truncated)) {
                Err(ProtocolError::Truncated) | Ok(()) => ClientError::Truncated {
                    received: self.received,
                    cause: None,
                },
                Err(e) => e.into(),
            };
            return Err(err);
        };
        let opener = self.opener.as_mut().ok_or(ProtocolError::BadSeal)?;
        let chunk = opener.open_chunk(&mut frame)?;
        self.received += chunk.plaintext.len() as u64;
        Ok(Some(frame.freeze().slice(chunk.plaintext)))
    }
}

/// Where the opened content comes from.
pub(crate) enum Content {
    /// A single record, already opened whole.
    Whole(Option<Bytes>),
    /// A streamed response: header mode, the chunks' plaintext is the content.
    Header {
        reader: ChunkReader,
        /// The first chunk's plaintext, opened before the response was returned.
        first: Option<Bytes>,
    },
    /// A streamed full-mode response: the chunks carry a Binary HTTP message whose
    /// head was already read.
    Full {
        reader: ChunkReader,
        decoder: ResponseDecoder,
    },
}

impl Content {
    /// The next piece of content, `None` at the authenticated end.
    async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self {
            Content::Whole(b) => Ok(b.take()),
            Content::Header { reader, first } => {
                if let Some(f) = first.take().filter(|f| !f.is_empty()) {
                    return Ok(Some(f));
                }
                loop {
                    match reader.next_plain().await? {
                        // Only the last chunk may be empty; it says nothing.
                        Some(p) if p.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
            }
            Content::Full { reader, decoder } => loop {
                if let Some(c) = decoder.content()? {
                    return Ok(Some(c));
                }
                match reader.next_plain().await? {
                    Some(p) => decoder.feed(&p),
                    None => {
                        decoder.finish()?;
                        return Ok(None);
                    }
                }
            },
        }
    }
}

/// The body as a stream that ends after its first error.
fn body_stream(content: Content) -> BodyStream {
    Box::pin(futures_util::stream::unfold(
        Some(content),
        |state| async move {
            let mut content = state?;
            match content.next().await {
                Ok(Some(b)) => Some((Ok(b), Some(content))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

/// An authenticated response whose body is read as it arrives
/// ([`crate::RequestBuilder::send_streaming`]).
///
/// The status and (as in [`Response`]) the content type — all headers in full-request
/// mode — were authenticated before it was returned. The body is a
/// `Stream<Item = Result<Bytes, ClientError>>` of opened pieces, each yielded as soon as
/// its chunk arrived and opened. It ends cleanly only at the sealed end of the
/// response: a body cut short yields [`ClientError::Truncated`], a chunk that does not
/// open a [`ClientError::Protocol`] error, and nothing follows an error.
pub struct StreamingResponse {
    status: StatusCode,
    headers: HeaderMap,
    full: bool,
    streamed: bool,
    max_bytes: usize,
    body: BodyStream,
}

impl fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type())
            .field("full", &self.full)
            .field("streamed", &self.streamed)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        full: bool,
        content: Content,
        max_bytes: usize,
    ) -> Self {
        let streamed = !matches!(content, Content::Whole(_));
        StreamingResponse {
            status,
            headers,
            full,
            streamed,
            max_bytes,
            body: body_stream(content),
        }
    }

    /// A response that arrived as one record.
    pub(crate) fn from_whole(r: Response, max_bytes: usize) -> Self {
        let full = r.headers_authenticated();
        let (status, headers, body) = r.into_parts();
        Self::new(status, headers, full, Content::Whole(Some(body)), max_bytes)
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

    /// Whether the body comes as a stream of sealed chunks (rather than one record).
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    /// The inner content type, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// Whether the content type is `text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        self.content_type().is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
    }

    /// The next opened piece of the body; `Ok(None)` at its authenticated end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.body.next().await.transpose()
    }

    /// Reads the whole body (at most the client's
    /// [`crate::ClientBuilder::max_response_bytes`]) into a [`Response`].
    pub async fn collect(mut self) -> Result<Response, ClientError> {
        // The pieces are kept as they opened and joined once at the end, into a buffer
        // of the exact size: growing one as they come copied the body about twice and
        // made the allocator fetch fresh pages for every large response.
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut have = 0usize;
        while let Some(b) = self.chunk().await? {
            if have + b.len() > self.max_bytes {
                return Err(ClientError::unexpected(
                    Some(self.status),
                    "response body too large",
                ));
            }
            have += b.len();
            pieces.push(b);
        }
        let body = match pieces.len() {
            // One piece (a single record) is kept as it is, without a copy.
            0 | 1 => pieces.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(have);
                for p in &pieces {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        };
        Ok(Response::new(self.status, self.headers, body, self.full))
    }

    /// The body parsed as server-sent events (`text/event-stream`), each event yielded
    /// as soon as the chunk that completes it has opened. An event larger than the
    /// client's [`crate::ClientBuilder::max_response_bytes`] is an error.
    pub fn events(self) -> EventStream {
        EventStream {
            parser: Parser::new(self.max_bytes),
            ready: std::collections::VecDeque::new(),
            body: Some(self.body),
        }
    }
}

impl Stream for StreamingResponse {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.body.as_mut().poll_next(cx)
    }
}

/// Server-sent events of a [`StreamingResponse`]; see [`StreamingResponse::events`].
/// An event the body ended in the middle of is dropped (as the standard says), but a
/// body that was cut short still ends with its error.
pub struct EventStream {
    parser: Parser,
    ready: std::collections::VecDeque<Event>,
    body: Option<BodyStream>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<Event, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(e) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.body = None,
                Poll::Ready(Some(Err(e))) => {
                    this.body = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(b))) => {
                    let mut out = Vec::new();
                    if this.parser.feed(&b, &mut out).is_err() {
                        this.body = None;
                        return Poll::Ready(Some(Err(ClientError::unexpected(
                            None,
                            "server-sent event larger than the response limit",
                        ))));
                    }
                    this.ready.extend(out);
                }
            }
        }
    }
}
