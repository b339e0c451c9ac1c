//! Request bodies that are not in memory: a stream, an `AsyncRead` or a file, sent as one
//! sealed record when they turn out small and as a STREAM (PROTOCOL §8.5), sealed chunk
//! by chunk as the connection takes it, when they do not.

use crate::ClientError;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;
use sessioncert_proto::stream::{StreamSealer, MAX_CHUNK_LEN};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A body's bytes as they come; errors are the source's.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// How many bytes a reader or file is read in at a time: one chunk's worth.
const READ_SIZE: usize = MAX_CHUNK_LEN;

/// Where a request's body comes from.
pub(crate) enum BodySource {
    /// In memory: one record up to one chunk (64 KiB), a stream of 64 KiB pieces above
    /// when the session negotiated streams (so neither side allocates the whole body
    /// again), sent as many times as the request needs.
    Bytes(Bytes),
    /// A one-shot stream: taken by the first attempt, so it cannot be sent twice.
    Stream(Mutex<Option<ByteStream>>),
    /// A file, opened anew for every attempt (so a request on a refused session can
    /// be sent again).
    File(PathBuf),
}

impl BodySource {
    pub(crate) fn len_hint(&self) -> Option<usize> {
        match self {
            BodySource::Bytes(b) => Some(b.len()),
            _ => None,
        }
    }

    /// The body for one attempt: what is in memory, or the first chunk's worth read
    /// ahead (plus one byte, to know whether more follows). `Ok(None)`: a one-shot
    /// stream already used by an earlier attempt.
    pub(crate) async fn load(&self) -> Result<Option<LoadedBody>, ClientError> {
        let source = match self {
            BodySource::Bytes(b) if b.len() <= MAX_CHUNK_LEN => {
                return Ok(Some(LoadedBody::Whole(b.clone())))
            }
            BodySource::Bytes(b) => {
                // Pieces of the same buffer: no copy until each is sealed.
                let pieces: Vec<std::io::Result<Bytes>> = (0..b.len())
                    .step_by(MAX_CHUNK_LEN)
                    .map(|at| Ok(b.slice(at..b.len().min(at + MAX_CHUNK_LEN))))
                    .collect();
                let mut chunker = Chunker::new(Box::pin(futures_util::stream::iter(pieces)));
                chunker.whole = Some(b.clone());
                chunker.fill(MAX_CHUNK_LEN).await.map_err(ClientError::Io)?;
                return Ok(Some(LoadedBody::Head(chunker)));
            }
            BodySource::Stream(s) => match s.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(s) => s,
                None => return Ok(None),
            },
            BodySource::File(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    ClientError::Io(std::io::Error::new(
                        e.kind(),
                        format!("cannot open {}: {e}", path.display()),
                    ))
                })?;
                reader_stream(file)
            }
        };
        let mut chunker = Chunker::new(source);
        chunker.fill(MAX_CHUNK_LEN).await.map_err(ClientError::Io)?;
        Ok(Some(if chunker.ended {
            LoadedBody::Whole(chunker.buf.freeze())
        } else {
            LoadedBody::Head(chunker)
        }))
    }
}

/// `reader` as a stream of buffers of up to one chunk.
pub(crate) fn reader_stream<R>(reader: R) -> ByteStream
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    Box::pin(tokio_util::io::ReaderStream::with_capacity(
        reader, READ_SIZE,
    ))
}

/// A body ready for one attempt.
pub(crate) enum LoadedBody {
    /// All of it (at most one chunk, or buffered because streams were not negotiated).
    Whole(Bytes),
    /// More than one chunk: its start is buffered, the rest still at the source.
    Head(Chunker),
    /// Handed to the transport by an earlier attempt.
    Spent,
}

/// Reads a byte stream into pieces of [`MAX_CHUNK_LEN`] bytes, holding back enough to
/// know whether a piece is the last one.
pub(crate) struct Chunker {
    source: ByteStream,
    buf: BytesMut,
    ended: bool,
    /// Whether [`Chunker::frame_as_bhttp`] was applied.
    framed: bool,
    /// The whole body, when it was in memory from the start: sent as one record as it
    /// is if the session has no streams.
    whole: Option<Bytes>,
}

impl Chunker {
    pub(crate) fn new(source: ByteStream) -> Self {
        Chunker {
            source,
            buf: BytesMut::new(),
            ended: false,
            framed: false,
            whole: None,
        }
    }

    /// Turns the body into the content of an indeterminate-length Binary HTTP message
    /// after `prefix` (its framing up to the content): what is buffered becomes one
    /// content chunk, each later buffer another. Done once, however often it is asked.
    pub(crate) fn frame_as_bhttp(&mut self, prefix: Vec<u8>) {
        if self.framed {
            return;
        }
        self.framed = true;
        let mut buf = prefix;
        bhttp_chunk(&self.buf, &mut buf);
        self.buf = BytesMut::from(&buf[..]);
        let source = std::mem::replace(&mut self.source, Box::pin(futures_util::stream::empty()));
        self.source = if self.ended {
            self.ended = false;
            Box::pin(futures_util::stream::once(async {
                Ok(Bytes::from_static(&[0, 0]))
            }))
        } else {
            bhttp_content_chunks(source)
        };
    }

    /// Reads until more than `want` bytes are buffered or the source ended.
    async fn fill(&mut self, want: usize) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_fill(cx, want)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<()>> {
        while !self.ended && self.buf.len() <= want {
            match self.source.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(b))) => self.buf.extend_from_slice(&b),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => self.ended = true,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Buffers the whole rest of the source, failing past `limit` bytes in all; a body
    /// that was in memory from the start is returned as it is, whatever its size.
    pub(crate) async fn read_all(mut self, limit: usize) -> Result<Bytes, ClientError> {
        if let Some(b) = self.whole.take() {
            return Ok(b);
        }
        while !self.ended {
            self.fill(self.buf.len()).await.map_err(ClientError::Io)?;
            if self.buf.len() > limit {
                return Err(ClientError::StreamsNotNegotiated { limit });
            }
        }
        Ok(self.buf.freeze())
    }

    /// The first chunk's plaintext: at most [`MAX_CHUNK_LEN`] bytes, and whether it is
    /// the last. Nothing is taken until [`Chunker::advance`].
    pub(crate) fn first(&self) -> (&[u8], bool) {
        let n = self.buf.len().min(MAX_CHUNK_LEN);
        (&self.buf[..n], self.ended && n == self.buf.len())
    }

    /// Drops the first chunk's plaintext (once it was sealed).
    pub(crate) fn advance(&mut self) {
        let n = self.buf.len().min(MAX_CHUNK_LEN);
        let _ = self.buf.split_to(n);
    }
}

/// Progress of a streamed exchange, for the idle timeout: the time (ms since the
/// exchange started) of the last chunk sent or received.
#[derive(Clone)]
pub(crate) struct Progress {
    started: std::time::Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            started: std::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// How long nothing moved.
    pub(crate) fn idle(&self) -> std::time::Duration {
        let now = self.started.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// What the source's failure was, if the upload ended because the body could not be
/// read (reqwest only reports that the body failed).
pub(crate) type SourceFailure = Arc<Mutex<Option<std::io::Error>>>;

/// The rest of a streamed request after its first chunk: each poll reads up to one
/// chunk from the source and seals it, so only as much is read as the connection takes.
pub(crate) struct SealingBody {
    /// The stream header and first chunk, sealed before the request was sent.
    first: Option<Bytes>,
    chunker: Chunker,
    sealer: Option<StreamSealer>,
    progress: Progress,
    failure: SourceFailure,
    /// Plaintext bytes sealed so far (for the log).
    pub(crate) sealed: Arc<AtomicU64>,
}

impl SealingBody {
    pub(crate) fn new(
        first: Vec<u8>,
        chunker: Chunker,
        sealer: Option<StreamSealer>,
        progress: Progress,
        failure: SourceFailure,
    ) -> Self {
        SealingBody {
            first: Some(first.into()),
            chunker,
            sealer,
            progress,
            failure,
            sealed: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Stream for SealingBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.progress.touch();
            return Poll::Ready(Some(Ok(first)));
        }
        if this.sealer.is_none() {
            return Poll::Ready(None);
        }
        match this.chunker.poll_fill(cx, MAX_CHUNK_LEN) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                this.sealer = None;
                let reported = std::io::Error::new(e.kind(), "the request body could not be read");
                *this.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Poll::Ready(Some(Err(reported)));
            }
            Poll::Ready(Ok(())) => {}
        }
        let last = this.chunker.buf.len() <= MAX_CHUNK_LEN;
        let piece = if last {
            this.chunker.buf.split()
        } else {
            this.chunker.buf.split_to(MAX_CHUNK_LEN)
        };
        let mut out = Vec::with_capacity(piece.len() + 32);
        let sealed = if last {
            match this.sealer.take() {
                Some(s) => s.seal_last(&piece, &mut out),
                None => return Poll::Ready(None),
            }
        } else {
            match this.sealer.as_mut() {
                Some(s) => s.seal_chunk(&piece, &mut out),
                None => return Poll::Ready(None),
            }
        };
        if let Err(e) = sealed {
            this.sealer = None;
            return Poll::Ready(Some(Err(std::io::Error::other(e))));
        }
        this.sealed.fetch_add(piece.len() as u64, Ordering::Relaxed);
        this.progress.touch();
        Poll::Ready(Some(Ok(out.into())))
    }
}

pub(crate) use sessioncert_proto::full::write_varint as put_varint;

/// The content of an indeterminate-length Binary HTTP message (RFC 9292 §3.2) from its
/// bytes: each buffer as a length-prefixed chunk (empty ones skipped: a zero length
/// ends the content), then the content terminator and an empty trailer section.
pub(crate) fn bhttp_content_chunks(source: ByteStream) -> ByteStream {
    let framed = source.filter_map(|item| async move {
        match item {
            Ok(b) if b.is_empty() => None,
            Ok(b) => {
                let mut v = Vec::with_capacity(8 + b.len());
                put_varint(b.len() as u64, &mut v);
                v.extend_from_slice(&b);
                Some(Ok(Bytes::from(v)))
            }
            Err(e) => Some(Err(e)),
        }
    });
    let end = futures_util::stream::once(async { Ok(Bytes::from_static(&[0, 0])) });
    Box::pin(framed.chain(end))
}

/// The content already read ahead as one Binary HTTP content chunk.
pub(crate) fn bhttp_chunk(content: &[u8], out: &mut Vec<u8>) {
    if !content.is_empty() {
        put_varint(content.len() as u64, out);
        out.extend_from_slice(content);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(pieces: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(
            pieces.into_iter().map(|p| Ok(Bytes::from(p))),
        ))
    }

    #[tokio::test]
    async fn bytes_in_memory_stream_above_one_chunk_and_stay_whole_without_streams() {
        let small = BodySource::Bytes(Bytes::from(vec![1u8; MAX_CHUNK_LEN]));
        assert!(
            matches!(small.load().await.unwrap().unwrap(), LoadedBody::Whole(b) if b.len() == MAX_CHUNK_LEN)
        );
        let data: Vec<u8> = (0..3 * MAX_CHUNK_LEN + 7).map(|i| i as u8).collect();
        let big = BodySource::Bytes(Bytes::from(data.clone()));
        for _ in 0..2 {
            // every attempt gets the whole body again, in chunk-sized pieces
            let LoadedBody::Head(mut c) = big.load().await.unwrap().unwrap() else {
                panic!("more than one chunk streams");
            };
            let mut got = Vec::new();
            loop {
                let (first, last) = c.first();
                got.extend_from_slice(first);
                c.advance();
                if last {
                    break;
                }
                c.fill(MAX_CHUNK_LEN).await.unwrap();
            }
            assert_eq!(got, data);
        }
        // without streams the same body goes as one record, however large
        let LoadedBody::Head(c) = big.load().await.unwrap().unwrap() else {
            panic!("more than one chunk streams");
        };
        assert_eq!(c.read_all(1024).await.unwrap().len(), data.len());
    }

    #[tokio::test]
    async fn a_body_within_one_chunk_loads_whole_and_a_larger_one_as_its_head() {
        let small = BodySource::Stream(Mutex::new(Some(stream_of(vec![
            vec![1; 1000],
            vec![2; MAX_CHUNK_LEN - 1000],
        ]))));
        match small.load().await.unwrap().unwrap() {
            LoadedBody::Whole(b) => assert_eq!(b.len(), MAX_CHUNK_LEN),
            _ => panic!("exactly one chunk is one record"),
        }
        // one-shot: a second attempt gets nothing
        assert!(small.load().await.unwrap().is_none());

        let big = BodySource::Stream(Mutex::new(Some(stream_of(vec![
            vec![1; MAX_CHUNK_LEN],
            vec![2; 1],
            vec![3; 5],
        ]))));
        let LoadedBody::Head(mut c) = big.load().await.unwrap().unwrap() else {
            panic!("one byte more than a chunk streams");
        };
        // read ahead only as far as needed to know more follows
        assert_eq!(c.buf.len(), MAX_CHUNK_LEN + 1);
        let (first, last) = c.first();
        assert_eq!((first.len(), last), (MAX_CHUNK_LEN, false));
        c.advance();
        assert_eq!(c.read_all(10).await.unwrap().as_ref(), &[2, 3, 3, 3, 3, 3]);
    }

    #[tokio::test]
    async fn buffering_past_the_limit_says_streams_were_not_negotiated() {
        let c = Chunker::new(stream_of(vec![vec![0; 100]; 10]));
        let e = c.read_all(550).await.unwrap_err();
        assert!(
            matches!(e, ClientError::StreamsNotNegotiated { limit: 550 }),
            "{e:?}"
        );
        assert!(e.to_string().contains("did not negotiate"), "{e}");
    }

    #[test]
    fn varints_match_rfc_9000_examples() {
        for (v, want) in [
            (37u64, &[0x25][..]),
            (15293, &[0x7b, 0xbd]),
            (494_878_333, &[0x9d, 0x7f, 0x3e, 0x7d]),
            (
                151_288_809_941_952_652,
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out, want, "{v}");
        }
    }
}
