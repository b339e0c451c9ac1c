//! Streamed bodies (PROTOCOL §8.5) around handlers.
//!
//! - [`RequestStream`]: the handler's body for a streamed request. It opens the
//!   stream's chunks lazily, as the handler polls it: one chunk frame is buffered at a
//!   time, so back-pressure reaches the peer through TCP, and each chunk's bytes count
//!   in the listener's body budget only until the handler lets go of its plaintext.
//!   Truncation, a chunk that does not open, bytes after the last chunk, a body
//!   over its limit or the session's end (close, expiry) end it with an error, never a
//!   short success.
//! - [`FullContent`]: the content of a streamed full-mode request, taken out of the
//!   Binary HTTP message the stream carries.
//! - [`SealedStream`]: a response sealed chunk by chunk as the handler's body produces
//!   it; frames that are ready together are coalesced up to a chunk, and whatever is
//!   collected is sealed and handed on as soon as the handler's body pends. A frame it
//!   holds counts in the response budget until sealed; the session's end cuts it.

use super::bhttp_stream::{self, ContentDecoder};
use crate::listener::BodyRelease;
use crate::seal::limit::LimitSlot;
use crate::sessions::Entry;
use crate::telemetry::ACCESS_LOG_TARGET;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use sessioncert_proto::stream::{complete_chunk, StreamOpener, StreamSealer, MAX_CHUNK_LEN};
use sessioncert_proto::SessionId;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Why a streamed request body stopped short. The handler sees it as its body's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamBodyError {
    /// The body ended before the stream's last chunk.
    #[error("the streamed request body was cut short")]
    Truncated,
    /// A chunk did not open (tampered, reordered, duplicated or from another stream),
    /// or was not a valid chunk.
    #[error("a chunk of the streamed request body did not open")]
    Rejected,
    /// Bytes followed the stream's last chunk.
    #[error("bytes after the last chunk of the streamed request body")]
    TrailingBytes,
    /// The stream exceeded the streamed-body limit of its route.
    #[error("the streamed request body exceeds its limit")]
    TooLarge,
    /// The stream's Binary HTTP message (full mode) is malformed.
    #[error("the streamed request's message is malformed")]
    Malformed,
    /// The connection failed while the body was read.
    #[error("the streamed request body could not be read")]
    Transport,
    /// The session ended (closed, expired) before the stream did: nothing more of it
    /// is handed to the handler (PROTOCOL §7).
    #[error("the session ended before the streamed request body did")]
    SessionEnded,
}

/// Who a stream belongs to, for its end-of-stream log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLabel {
    pub(crate) session: SessionId,
    pub(crate) seq: u64,
    pub(crate) started: Instant,
}

impl StreamLabel {
    fn ended(&self, direction: &'static str, bytes: u64, chunks: u64, error: Option<&str>) {
        let latency_us = self.started.elapsed().as_micros() as u64;
        match error {
            None => tracing::info!(
                target: ACCESS_LOG_TARGET,
                session = %crate::listener::access::ShortId(self.session),
                seq = self.seq,
                direction,
                bytes,
                chunks,
                latency_us,
                "stream complete"
            ),
            Some(e) => tracing::warn!(
                target: ACCESS_LOG_TARGET,
                session = %crate::listener::access::ShortId(self.session),
                seq = self.seq,
                direction,
                bytes,
                chunks,
                latency_us,
                error = e,
                "stream failed"
            ),
        }
    }
}

/// Plaintext handed to the handler, whose wire bytes stay charged to the listener's
/// body budget until the handler drops it.
struct Released {
    bytes: Bytes,
    release: BodyRelease,
    wire: u64,
}

impl AsRef<[u8]> for Released {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        self.release.release(self.wire);
    }
}

/// What a request stream's `poll_frame` returns.
type RequestPoll = Poll<Option<Result<Frame<Bytes>, StreamBodyError>>>;

/// Asks the shared store, when a streamed request's body is complete, whether its
/// session is still live (`false` on any doubt). Another instance may have closed it
/// while the stream was under way; this instance's `ended` flag learns of that only at
/// its next poll of the store.
pub(crate) type LiveCheck =
    Arc<dyn Fn() -> Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

/// What the stream path needs besides the body, handed over by the open step.
pub(crate) struct RequestStreamParts {
    pub(crate) opener: StreamOpener,
    /// The opened first chunk's plaintext.
    pub(crate) first: Bytes,
    /// Wire bytes of the header and first chunk (released with its plaintext).
    pub(crate) first_wire: u64,
    /// Bytes after the first chunk already received.
    pub(crate) rest: BytesMut,
    pub(crate) limit: LimitSlot,
    pub(crate) default_limit: Option<u64>,
    pub(crate) release: Option<BodyRelease>,
    pub(crate) opened_bytes: metrics::Counter,
    pub(crate) label: StreamLabel,
    /// The session's entry: its `ended` flag stops the stream.
    pub(crate) entry: Arc<Entry>,
    /// With a shared store: asked before the body's end is handed to the handler.
    pub(crate) end_check: Option<LiveCheck>,
}

/// See the module docs.
pub(crate) struct RequestStream {
    body: Body,
    buf: BytesMut,
    opener: StreamOpener,
    first: Option<(Bytes, u64)>,
    limit: LimitSlot,
    default_limit: Option<u64>,
    release: Option<BodyRelease>,
    opened_bytes: metrics::Counter,
    label: StreamLabel,
    entry: Arc<Entry>,
    end_check: Option<LiveCheck>,
    /// The store's answer being awaited once the body is complete.
    checking: Option<Pin<Box<dyn std::future::Future<Output = bool> + Send>>>,
    /// Plaintext bytes handed out so far.
    plaintext: u64,
    /// `Some` once the body ended: `Ok` cleanly, or the error it gave.
    ended: Option<Result<(), StreamBodyError>>,
}

impl RequestStream {
    pub(crate) fn new(body: Body, p: RequestStreamParts) -> Self {
        RequestStream {
            body,
            buf: p.rest,
            opener: p.opener,
            first: Some((p.first, p.first_wire)),
            limit: p.limit,
            default_limit: p.default_limit,
            release: p.release,
            opened_bytes: p.opened_bytes,
            label: p.label,
            entry: p.entry,
            end_check: p.end_check,
            checking: None,
            plaintext: 0,
            ended: None,
        }
    }

    fn session_ended(&self) -> bool {
        self.entry.ended.load(Ordering::SeqCst)
    }

    fn end(&mut self, result: Result<(), StreamBodyError>) {
        if self.ended.is_none() {
            let error = result.err().map(|e| e.to_string());
            self.label.ended(
                "request",
                self.plaintext,
                self.opener.chunks_opened(),
                error.as_deref(),
            );
            self.ended = Some(result);
        }
    }

    fn fail(&mut self, e: StreamBodyError) -> RequestPoll {
        self.end(Err(e));
        Poll::Ready(Some(Err(e)))
    }

    /// Hands out a chunk's plaintext (charged until dropped), after the limit check.
    fn hand_out(&mut self, plain: Bytes, wire: u64) -> Option<RequestPoll> {
        self.plaintext = self.plaintext.saturating_add(plain.len() as u64);
        if self
            .limit
            .get(self.default_limit)
            .is_some_and(|l| self.plaintext > l)
        {
            return Some(self.fail(StreamBodyError::TooLarge));
        }
        if plain.is_empty() {
            if let Some(r) = &self.release {
                r.release(wire);
            }
            return None;
        }
        let data = match &self.release {
            Some(r) => Bytes::from_owner(Released {
                bytes: plain,
                release: r.clone(),
                wire,
            }),
            None => plain,
        };
        Some(Poll::Ready(Some(Ok(Frame::data(data)))))
    }
}

impl http_body::Body for RequestStream {
    type Data = Bytes;
    type Error = StreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match this.ended {
            Some(Ok(())) => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {}
        }
        if let Some(check) = this.checking.as_mut() {
            let live = std::task::ready!(std::future::Future::poll(check.as_mut(), cx));
            this.checking = None;
            if !live || this.session_ended() {
                return this.fail(StreamBodyError::SessionEnded);
            }
            this.end(Ok(()));
            return Poll::Ready(None);
        }
        if let Some((first, wire)) = this.first.take() {
            if let Some(p) = this.hand_out(first, wire) {
                return p;
            }
        }
        loop {
            match complete_chunk(&this.buf) {
                Err(_) => return this.fail(StreamBodyError::Rejected),
                Ok(Some(_)) if this.opener.is_finished() => {
                    return this.fail(StreamBodyError::TrailingBytes)
                }
                Ok(Some(n)) => {
                    let mut frame = this.buf.split_to(n);
                    let opened = match this.opener.open_chunk(&mut frame) {
                        Ok(c) => c,
                        Err(_) => return this.fail(StreamBodyError::Rejected),
                    };
                    // Checked before anything more is released: a session closed while
                    // its stream was held gets nothing more of it to run on.
                    if this.session_ended() {
                        return this.fail(StreamBodyError::SessionEnded);
                    }
                    this.opened_bytes.increment(opened.plaintext.len() as u64);
                    let plain = frame.freeze().slice(opened.plaintext);
                    if let Some(p) = this.hand_out(plain, n as u64) {
                        return p;
                    }
                    continue;
                }
                Ok(None) if this.opener.is_finished() && !this.buf.is_empty() => {
                    return this.fail(StreamBodyError::TrailingBytes)
                }
                Ok(None) => {}
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if this.opener.is_finished() && !data.is_empty() {
                            return this.fail(StreamBodyError::TrailingBytes);
                        }
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(_))) => return this.fail(StreamBodyError::Transport),
                Poll::Ready(None) => {
                    if this.opener.finish().is_ok() && this.buf.is_empty() {
                        // The end of the body is what a handler commits on: not after
                        // the session ended.
                        if this.session_ended() {
                            return this.fail(StreamBodyError::SessionEnded);
                        }
                        if let Some(check) = &this.end_check {
                            this.checking = Some(check());
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        this.end(Ok(()));
                        return Poll::Ready(None);
                    }
                    return this.fail(StreamBodyError::Truncated);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.ended, Some(Ok(())))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        // A handler that stopped reading early (an early 413 or 507, say): not a failure
        // of the stream, so only at debug level.
        if self.ended.is_none() {
            tracing::debug!(
                target: ACCESS_LOG_TARGET,
                session = %crate::listener::access::ShortId(self.label.session),
                seq = self.label.seq,
                bytes = self.plaintext,
                chunks = self.opener.chunks_opened(),
                "stream not read to its end by the handler"
            );
        }
    }
}

/// The content of a streamed full-mode request (see the module docs).
pub(crate) struct FullContent {
    stream: RequestStream,
    decoder: ContentDecoder,
    /// Stream plaintext not yet decoded.
    pending: Bytes,
    failed: Option<StreamBodyError>,
    done: bool,
}

impl FullContent {
    pub(crate) fn new(stream: RequestStream, decoder: ContentDecoder, pending: Bytes) -> Self {
        FullContent {
            stream,
            decoder,
            pending,
            failed: None,
            done: false,
        }
    }
}

impl http_body::Body for FullContent {
    type Data = Bytes;
    type Error = StreamBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(e) = this.failed {
            return Poll::Ready(Some(Err(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.decoder.feed(&mut this.pending) {
                Ok(Some(content)) if !content.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(content))))
                }
                Ok(_) if !this.pending.is_empty() => continue,
                Ok(_) => {}
                Err(_) => {
                    this.failed = Some(StreamBodyError::Malformed);
                    return Poll::Ready(Some(Err(StreamBodyError::Malformed)));
                }
            }
            match Pin::new(&mut this.stream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.pending = data;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.failed = Some(e);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    if this.decoder.finish().is_err() {
                        this.failed = Some(StreamBodyError::Malformed);
                        return Poll::Ready(Some(Err(StreamBodyError::Malformed)));
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Owns a sealed piece of a response and keeps it counted against the in-flight
/// response budget until the connection has written and dropped it.
pub(crate) struct ChargedBuffer {
    bytes: Bytes,
    budget: Arc<AtomicUsize>,
}

impl ChargedBuffer {
    /// `bytes`, counted in `budget` until the last piece of it is dropped.
    pub(crate) fn charge(bytes: Bytes, budget: &Arc<AtomicUsize>) -> Bytes {
        budget.fetch_add(bytes.len(), Ordering::Relaxed);
        Bytes::from_owner(ChargedBuffer {
            bytes,
            budget: budget.clone(),
        })
    }
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

/// The handler's response body failed after the stream had started: the stream is cut
/// without its last chunk, so the client sees an error, never a short success.
#[derive(Debug, thiserror::Error)]
#[error("the handler's response body failed; the sealed stream was cut")]
pub struct ResponseStreamCut;

impl Drop for SealedStream {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.carry.len(), Ordering::Relaxed);
    }
}

/// See the module docs.
pub(crate) struct SealedStream {
    handler: Body,
    sealer: Option<StreamSealer>,
    /// Full mode: the Binary HTTP head still to send (content is framed in chunks).
    full_head: Option<Vec<u8>>,
    full: bool,
    /// The stream header, sent with the first sealed chunk.
    header: Option<Vec<u8>>,
    /// Handler bytes received and not yet sealed (at most a chunk's worth).
    collect: Vec<u8>,
    /// A handler frame only partly moved into `collect`. Its bytes are charged to the
    /// response budget until they move on (a handler may hand over one frame of many
    /// MiB, which the stream then holds while the peer reads it 64 KiB at a time).
    carry: Bytes,
    handler_done: bool,
    budget: Arc<AtomicUsize>,
    sealed_bytes: metrics::Counter,
    label: StreamLabel,
    entry: Arc<Entry>,
    bytes: u64,
    /// Sealed pieces handed on (each one chunk or more).
    chunks: u64,
    finished: bool,
}

pub(crate) struct SealedStreamParts {
    pub(crate) header: Vec<u8>,
    pub(crate) sealer: StreamSealer,
    /// Full mode: the Binary HTTP response head.
    pub(crate) full_head: Option<Vec<u8>>,
    /// What the handler's body produced before the switch to a stream.
    pub(crate) collected: Vec<Bytes>,
    pub(crate) budget: Arc<AtomicUsize>,
    pub(crate) sealed_bytes: metrics::Counter,
    pub(crate) label: StreamLabel,
    /// The session's entry: a response stream stops when the session ends.
    pub(crate) entry: Arc<Entry>,
}

impl SealedStream {
    pub(crate) fn new(handler: Body, p: SealedStreamParts) -> Self {
        let full = p.full_head.is_some();
        let cap = if full {
            MAX_CHUNK_LEN - bhttp_stream::CHUNK_PREFIX_MAX
        } else {
            MAX_CHUNK_LEN
        };
        let total: usize = p.collected.iter().map(Bytes::len).sum();
        // What was collected before the switch goes first; it is at most a chunk and
        // one frame, so joining it costs little.
        let carry = match p.collected.len() {
            0 => Bytes::new(),
            1 => p.collected.into_iter().next().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(total);
                for c in p.collected {
                    joined.extend_from_slice(&c);
                }
                joined.freeze()
            }
        };
        p.budget.fetch_add(carry.len(), Ordering::Relaxed);
        SealedStream {
            handler,
            sealer: Some(p.sealer),
            full_head: p.full_head,
            full,
            header: Some(p.header),
            collect: Vec::with_capacity(cap.min(total.max(4096))),
            carry,
            handler_done: false,
            budget: p.budget,
            sealed_bytes: p.sealed_bytes,
            label: p.label,
            entry: p.entry,
            bytes: 0,
            chunks: 0,
            finished: false,
        }
    }

    fn cap(&self) -> usize {
        if self.full {
            MAX_CHUNK_LEN - bhttp_stream::CHUNK_PREFIX_MAX
        } else {
            MAX_CHUNK_LEN
        }
    }

    /// Seals what is collected — the end of the stream when `last` — and hands it on.
    /// Nothing more is sealed in a session that ended (closed, expired): the stream is
    /// cut instead, and the client sees it cut short (PROTOCOL §7).
    fn emit(&mut self, last: bool) -> Poll<Option<Result<Frame<Bytes>, ResponseStreamCut>>> {
        if self.entry.ended.load(Ordering::SeqCst) {
            return self.cut("the session ended");
        }
        let mut out = self.header.take().unwrap_or_default();
        let content = std::mem::take(&mut self.collect);
        self.bytes += content.len() as u64;
        self.sealed_bytes.increment(content.len() as u64);
        let plain = if self.full {
            let mut p = self.full_head.take().unwrap_or_default();
            if !content.is_empty() {
                bhttp_stream::content_chunk(&content, &mut p);
            }
            if last {
                p.extend_from_slice(&bhttp_stream::END);
            }
            p
        } else {
            content
        };
        out.reserve(plain.len() + plain.len() / MAX_CHUNK_LEN * 20 + 20);
        let sealed = match (last, self.sealer.as_mut()) {
            (false, Some(s)) => s.seal_chunk(&plain, &mut out),
            (true, Some(_)) => match self.sealer.take() {
                Some(s) => s.seal_last(&plain, &mut out),
                None => Ok(()),
            },
            (_, None) => Ok(()),
        };
        if let Err(e) = sealed {
            tracing::error!(session = %self.label.session, error = %e, "sealing a response chunk failed");
            return self.cut("sealing failed");
        }
        self.collect = plain;
        self.collect.clear();
        self.chunks += (out.len() / (MAX_CHUNK_LEN + 20)) as u64 + 1;
        if last {
            self.finished = true;
            self.label.ended("response", self.bytes, self.chunks, None);
        }
        let data = ChargedBuffer::charge(Bytes::from(out), &self.budget);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn cut(&mut self, why: &str) -> Poll<Option<Result<Frame<Bytes>, ResponseStreamCut>>> {
        self.finished = true;
        self.sealer = None;
        self.label
            .ended("response", self.bytes, self.chunks, Some(why));
        Poll::Ready(Some(Err(ResponseStreamCut)))
    }
}

impl http_body::Body for SealedStream {
    type Data = Bytes;
    type Error = ResponseStreamCut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let cap = this.cap();
        loop {
            if !this.carry.is_empty() {
                let n = (cap - this.collect.len()).min(this.carry.len());
                let piece = this.carry.split_to(n);
                this.collect.extend_from_slice(&piece);
                this.budget.fetch_sub(n, Ordering::Relaxed);
            }
            if this.collect.len() >= cap {
                return this.emit(false);
            }
            if this.handler_done {
                return this.emit(true);
            }
            match Pin::new(&mut this.handler).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        // `carry` is empty here: the handler is polled only then.
                        this.budget.fetch_add(data.len(), Ordering::Relaxed);
                        this.carry = data;
                    }
                }
                Poll::Ready(None) => this.handler_done = true,
                Poll::Ready(Some(Err(e))) => {
                    tracing::error!(
                        session = %this.label.session,
                        seq = this.label.seq,
                        error = %e,
                        "the handler's response body failed mid-stream; cutting the sealed stream"
                    );
                    return this.cut("the handler's body failed");
                }
                // Flush what is collected: the peer gets each piece as it is produced.
                Poll::Pending if !this.collect.is_empty() || this.header.is_some() => {
                    return this.emit(false)
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
