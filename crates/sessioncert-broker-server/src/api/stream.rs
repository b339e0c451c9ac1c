//! Files streamed through the STREAM construction: a body sealed chunk by chunk into
//! an object, and an object opened chunk by chunk into a body. One 64 KiB chunk (and
//! the object store's bounded buffer) is held at a time, whatever the file's size.

use crate::objects::{ObjectReader, ObjectWriter};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use sessioncert_broker::file_crypt::{FileOpener, FileSealer, CHUNK, HEADER};
use sessioncert_broker::BrokerError;
use std::pin::Pin;

/// Why sealing a body into an object stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    /// The body failed (cut short, did not open, over the channel's limit).
    #[error("the body did not arrive whole")]
    Body(String),
    /// The body is larger than allowed.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(String),
    /// Sealing failed (no randomness).
    #[error("sealing: {0}")]
    Crypto(BrokerError),
}

/// Seals `body` under `key` into `writer`, finishing it when the body ends whole;
/// returns the plaintext size. On any error the writer is aborted: nothing is visible.
pub(crate) async fn seal_into<S, E>(
    mut writer: ObjectWriter,
    key: &[u8; 32],
    mut body: S,
    max: u64,
) -> Result<u64, SealError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let result = async {
        let (mut sealer, header) = FileSealer::new(key).map_err(SealError::Crypto)?;
        writer
            .write(Bytes::from(header))
            .await
            .map_err(|e| SealError::Store(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut size: u64 = 0;
        while let Some(piece) = body.next().await {
            let mut piece = piece.map_err(|e| SealError::Body(e.to_string()))?;
            size += piece.len() as u64;
            if size > max {
                return Err(SealError::TooLarge(max));
            }
            while !piece.is_empty() {
                let take = (CHUNK - buf.len()).min(piece.len());
                buf.extend_from_slice(&piece.split_to(take));
                if buf.len() == CHUNK {
                    let sealed = sealer.chunk(&buf).map_err(SealError::Crypto)?;
                    buf.clear();
                    writer
                        .write(Bytes::from(sealed))
                        .await
                        .map_err(|e| SealError::Store(e.to_string()))?;
                }
            }
        }
        let last = sealer.finish(&buf).map_err(SealError::Crypto)?;
        writer
            .write(Bytes::from(last))
            .await
            .map_err(|e| SealError::Store(e.to_string()))?;
        Ok(size)
    }
    .await;
    match result {
        Ok(size) => {
            writer
                .finish()
                .await
                .map_err(|e| SealError::Store(e.to_string()))?;
            Ok(size)
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "could not abort an unfinished object");
            }
            Err(e)
        }
    }
}

/// Why opening an object stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The stored bytes failed authentication, are out of order or cut short.
    #[error("{0}")]
    Auth(BrokerError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(String),
}

/// A stored file that does not authenticate: tampered, reordered or cut at rest — the
/// operator must hear of it.
fn auth_failed(e: BrokerError) -> OpenError {
    tracing::error!(error = %e, "a stored file failed authentication; its transfer was ended");
    OpenError::Auth(e)
}

struct Opening {
    reader: ObjectReader,
    key: zeroize::Zeroizing<[u8; 32]>,
    header: Vec<u8>,
    opener: Option<FileOpener>,
    done: bool,
}

/// The plaintext of the sealed object `reader` reads, as it authenticates: every item
/// is a whole authenticated chunk (or several), the stream ends only after the last
/// chunk authenticated as last, and any failure ends it with an error (the consumer
/// must then discard what it got).
pub(crate) fn open_stream(
    reader: ObjectReader,
    key: zeroize::Zeroizing<[u8; 32]>,
) -> Pin<Box<dyn Stream<Item = Result<Bytes, OpenError>> + Send>> {
    let state = Opening {
        reader,
        key,
        header: Vec::with_capacity(HEADER),
        opener: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            match s.reader.next().await {
                Some(Ok(mut bytes)) => {
                    if s.opener.is_none() {
                        let take = (HEADER - s.header.len()).min(bytes.len());
                        s.header.extend_from_slice(&bytes.split_to(take));
                        if s.header.len() < HEADER {
                            continue;
                        }
                        match FileOpener::new(&s.key, &s.header) {
                            Ok(o) => s.opener = Some(o),
                            Err(e) => {
                                s.done = true;
                                return Some((Err(auth_failed(e)), s));
                            }
                        }
                    }
                    let Some(opener) = s.opener.as_mut() else {
                        continue;
                    };
                    match opener.push(&bytes) {
                        Ok(plain) if plain.is_empty() => continue,
                        Ok(plain) => return Some((Ok(Bytes::from(plain)), s)),
                        Err(e) => {
                            s.done = true;
                            return Some((Err(auth_failed(e)), s));
                        }
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(OpenError::Store(e.to_string())), s));
                }
                None => {
                    s.done = true;
                    let result = match s.opener.take() {
                        Some(o) => o.finish().map_err(auth_failed),
                        None => Err(auth_failed(BrokerError::FileHeader)),
                    };
                    return match result {
                        Ok(plain) if plain.is_empty() => None,
                        Ok(plain) => Some((Ok(Bytes::from(plain)), s)),
                        Err(e) => Some((Err(e), s)),
                    };
                }
            }
        }
    }))
}
