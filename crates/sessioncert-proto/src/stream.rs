//! Streamed bodies (PROTOCOL §8.5): the STREAM construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár, as age uses it, under a key of its own per request and direction.
//!
//! ```text
//! stream = type (u8) || seq (u64) || chunk_0 || chunk_1 || … || chunk_n
//! chunk  = last (u8: 0 or 1) || len (u24) || ciphertext[len] || tag (16)
//! ```
//!
//! - The stream key is `HKDF-Expand(key[epoch(seq)], "sessioncert/1 stream" || type || seq,
//!   32)` from the direction's epoch key, so no chunk nonce can meet a record nonce of the
//!   session, nor a chunk nonce of another stream (splicing between streams fails).
//! - Chunk `i` is sealed with nonce `u88 i || u8 last` (age's STREAM nonce) and the
//!   associated data a single record of the same request or response would have, with
//!   the stream's type byte: reordering, dropping and duplicating chunks fail to open,
//!   and a stream cut short is detected because only a chunk sealed with `last = 1` may
//!   end it.
//! - A chunk holds at most [`MAX_CHUNK_LEN`] bytes of plaintext, so a receiver never
//!   buffers more than one chunk; every chunk but the last holds at least one byte.
//!
//! This module is sans-I/O: [`complete_chunk`] says whether buffered bytes start with a
//! whole chunk, [`StreamSealer`] and [`StreamOpener`] seal and open one at a time.

use crate::codec::Writer;
use crate::crypto::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::record::RecordType;
use crate::ProtocolError;

/// Most plaintext bytes in one chunk (64 KiB).
pub const MAX_CHUNK_LEN: usize = 1 << 16;
/// Length of a chunk's header (`last` and `len`).
pub const CHUNK_HEADER_LEN: usize = 4;
/// Longest chunk on the wire: header, [`MAX_CHUNK_LEN`] bytes and the tag.
pub const MAX_CHUNK_FRAME_LEN: usize = CHUNK_HEADER_LEN + MAX_CHUNK_LEN + TAG_LEN;

pub(crate) const STREAM_LABEL: &[u8] = b"sessioncert/1 stream";

/// The parsed header of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Whether this is the stream's last chunk.
    pub last: bool,
    /// Plaintext (and ciphertext) length of the chunk.
    pub len: usize,
}

impl ChunkHeader {
    /// Parses a chunk header from the first [`CHUNK_HEADER_LEN`] bytes of `bytes`:
    /// `Ok(None)` when fewer are there yet; `malformed` for a flag other than 0 or 1, a
    /// length over [`MAX_CHUNK_LEN`], or an empty chunk that is not the last.
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>, ProtocolError> {
        let Some(h) = bytes.get(..CHUNK_HEADER_LEN) else {
            return Ok(None);
        };
        let last = match h[0] {
            0 => false,
            1 => true,
            _ => return Err(ProtocolError::malformed("stream chunk")),
        };
        let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        if len > MAX_CHUNK_LEN || (len == 0 && !last) {
            return Err(ProtocolError::malformed("stream chunk"));
        }
        Ok(Some(ChunkHeader { last, len }))
    }

    /// Bytes of the whole chunk on the wire: header, ciphertext and tag.
    pub const fn frame_len(&self) -> usize {
        CHUNK_HEADER_LEN + self.len + TAG_LEN
    }
}

/// Whether `buf` starts with a whole chunk: `Ok(Some(n))` when its first `n` bytes are
/// one, `Ok(None)` when more bytes are needed, `malformed` when its header is invalid.
pub fn complete_chunk(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    Ok(ChunkHeader::parse(buf)?
        .map(|h| h.frame_len())
        .filter(|&n| buf.len() >= n))
}

/// Derives the key of the stream of type `record_type` for `seq` from the epoch key of
/// the direction it travels in.
pub(crate) fn stream_key(epoch_key: &AeadKey, record_type: RecordType, seq: u64) -> AeadKey {
    let mut info = [0u8; STREAM_LABEL.len() + 1 + 8];
    info[..STREAM_LABEL.len()].copy_from_slice(STREAM_LABEL);
    info[STREAM_LABEL.len()] = record_type.byte();
    info[STREAM_LABEL.len() + 1..].copy_from_slice(&seq.to_be_bytes());
    epoch_key.ratchet(&info)
}

/// Nonce of chunk `index`: the index as an 88-bit big-endian number, then the last flag.
fn chunk_nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals the chunks of one stream, in order. Made by
/// [`ClientSession::seal_request_stream`](crate::ClientSession::seal_request_stream) or
/// [`ServerSession::seal_response_stream`](crate::ServerSession::seal_response_stream);
/// [`StreamSealer::seal_last`] consumes it, so nothing can follow the last chunk:
///
/// ```compile_fail,E0382
/// # fn f(s: sessioncert_proto::stream::StreamSealer, out: &mut Vec<u8>) {
/// s.seal_last(b"end", out).unwrap();
/// s.seal_last(b"again", out).unwrap();
/// # }
/// ```
pub struct StreamSealer {
    key: AeadKey,
    ad: Vec<u8>,
    next: u64,
}

impl core::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl StreamSealer {
    pub(crate) fn new(key: AeadKey, ad: Vec<u8>) -> Self {
        StreamSealer { key, ad, next: 0 }
    }

    /// Seals `plaintext` as chunks that are not the last, appending them to `out`; more
    /// than [`MAX_CHUNK_LEN`] bytes become several chunks, and nothing is sealed for an
    /// empty slice (only the last chunk may be empty).
    pub fn seal_chunk(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        for piece in plaintext.chunks(MAX_CHUNK_LEN) {
            self.seal_one(piece, false, out)?;
        }
        Ok(())
    }

    /// Seals `plaintext` as the end of the stream (its last chunk, after as many others
    /// as it takes) and appends it to `out`. An empty `plaintext` gives an empty last chunk.
    pub fn seal_last(mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let split = plaintext.len().saturating_sub(1) / MAX_CHUNK_LEN * MAX_CHUNK_LEN;
        self.seal_chunk(&plaintext[..split], out)?;
        self.seal_one(&plaintext[split..], true, out)?;
        Ok(())
    }

    /// How many chunks were sealed so far.
    pub fn chunks_sealed(&self) -> u64 {
        self.next
    }

    /// Seals one chunk of at most [`MAX_CHUNK_LEN`] bytes; returns its tag.
    pub(crate) fn seal_one(
        &mut self,
        plaintext: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<[u8; TAG_LEN], ProtocolError> {
        debug_assert!(plaintext.len() <= MAX_CHUNK_LEN && (last || !plaintext.is_empty()));
        let index = self.next;
        // 2^64 chunks of 64 KiB will never be sealed; refuse rather than wrap.
        self.next = index
            .checked_add(1)
            .ok_or(ProtocolError::Crypto("stream chunk counter"))?;
        out.reserve(CHUNK_HEADER_LEN + plaintext.len() + TAG_LEN);
        out.put_u8(u8::from(last));
        let len = plaintext.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_detached(&chunk_nonce(index, last), &self.ad, &mut out[start..])?;
        out.extend_from_slice(&tag);
        Ok(tag)
    }
}

/// One chunk opened in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedChunk {
    /// Where the plaintext now lies inside the chunk's buffer.
    pub plaintext: core::ops::Range<usize>,
    /// Whether it was the stream's last chunk.
    pub last: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenerState {
    Open,
    Finished,
    Failed,
}

/// Opens the chunks of one stream, in order. Made by
/// [`ServerSession::open_request_stream`](crate::ServerSession::open_request_stream) or
/// [`ClientSession::open_response_stream`](crate::ClientSession::open_response_stream),
/// which open the first chunk themselves.
///
/// A chunk that fails to open poisons the opener (every later call fails too), so no
/// plaintext that follows a forgery is ever released; a chunk after the last is
/// refused. At the end of the transport, [`StreamOpener::finish`] fails unless the last
/// chunk opened: a stream cut short is an error, never a short success.
pub struct StreamOpener {
    key: AeadKey,
    ad: Vec<u8>,
    next: u64,
    state: OpenerState,
}

impl core::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("next", &self.next)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl StreamOpener {
    pub(crate) fn new(key: AeadKey, ad: Vec<u8>) -> Self {
        StreamOpener {
            key,
            ad,
            next: 0,
            state: OpenerState::Open,
        }
    }

    /// Opens the next chunk; `frame` must be exactly one chunk (header, ciphertext and
    /// tag), as [`complete_chunk`] measures it. On failure the buffer's content is
    /// unspecified and must be discarded, and the opener refuses everything after.
    pub fn open_chunk(&mut self, frame: &mut [u8]) -> Result<OpenedChunk, ProtocolError> {
        match self.state {
            OpenerState::Open => {}
            // Bytes after the last chunk: not part of any stream a peer sealed.
            OpenerState::Finished => return Err(ProtocolError::malformed("stream chunk")),
            OpenerState::Failed => return Err(ProtocolError::BadSeal),
        }
        let result = self.open_one(frame);
        self.state = match &result {
            Ok(c) if c.last => OpenerState::Finished,
            Ok(_) => OpenerState::Open,
            Err(_) => OpenerState::Failed,
        };
        result
    }

    fn open_one(&mut self, frame: &mut [u8]) -> Result<OpenedChunk, ProtocolError> {
        let h = ChunkHeader::parse(frame)?.ok_or(ProtocolError::malformed("stream chunk"))?;
        if frame.len() != h.frame_len() {
            return Err(ProtocolError::malformed("stream chunk"));
        }
        let n = self.key.open_in_place(
            &chunk_nonce(self.next, h.last),
            &self.ad,
            &mut frame[CHUNK_HEADER_LEN..],
        )?;
        self.next += 1;
        Ok(OpenedChunk {
            plaintext: CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + n,
            last: h.last,
        })
    }

    /// Whether the last chunk has opened.
    pub fn is_finished(&self) -> bool {
        self.state == OpenerState::Finished
    }

    /// How many chunks have opened.
    pub fn chunks_opened(&self) -> u64 {
        self.next
    }

    /// Call when the transport ends: `Truncated` (code `rejected`) unless the last
    /// chunk opened, `rejected` if a chunk failed.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.state {
            OpenerState::Finished => Ok(()),
            OpenerState::Open => Err(ProtocolError::Truncated),
            OpenerState::Failed => Err(ProtocolError::BadSeal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Suite;
    use proptest::prelude::*;

    fn pair() -> (StreamSealer, StreamOpener) {
        let k = AeadKey::new(Suite::Aes256Gcm, &[7; 32]);
        (
            StreamSealer::new(k.clone(), b"ad".to_vec()),
            StreamOpener::new(k, b"ad".to_vec()),
        )
    }

    /// Splits a stream body into its chunk frames.
    fn frames(mut body: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(n) = complete_chunk(body).unwrap() {
            out.push(body[..n].to_vec());
            body = &body[n..];
        }
        assert!(body.is_empty(), "trailing partial chunk");
        out
    }

    fn open_all(o: &mut StreamOpener, frames: &[Vec<u8>]) -> Result<Vec<u8>, ProtocolError> {
        let mut got = Vec::new();
        for f in frames {
            let mut f = f.clone();
            let c = o.open_chunk(&mut f)?;
            got.extend_from_slice(&f[c.plaintext]);
        }
        o.finish()?;
        Ok(got)
    }

    #[test]
    fn round_trip_splits_large_writes_and_ends_with_the_last_flag() {
        let (mut s, mut o) = pair();
        let data: Vec<u8> = (0..(2 * MAX_CHUNK_LEN + 5)).map(|i| i as u8).collect();
        let mut body = Vec::new();
        s.seal_chunk(&data[..10], &mut body).unwrap();
        s.seal_chunk(&[], &mut body).unwrap(); // nothing sealed
        s.seal_last(&data[10..], &mut body).unwrap();
        let f = frames(&body);
        assert_eq!(
            f.len(),
            3,
            "10 bytes, then 64 KiB and the rest (64 KiB - 5)"
        );
        assert!(f.iter().all(|c| c.len() <= MAX_CHUNK_FRAME_LEN));
        assert_eq!(f.iter().filter(|c| c[0] == 1).count(), 1);
        assert_eq!(f[2][0], 1);
        assert_eq!(open_all(&mut o, &f).unwrap(), data);
    }

    #[test]
    fn last_chunk_exactly_full_is_not_followed_by_an_empty_one() {
        let (s, mut o) = pair();
        let mut body = Vec::new();
        s.seal_last(&vec![1u8; MAX_CHUNK_LEN], &mut body).unwrap();
        let f = frames(&body);
        assert_eq!(f.len(), 1);
        assert_eq!(open_all(&mut o, &f).unwrap().len(), MAX_CHUNK_LEN);
        let (s, mut o) = pair();
        let mut body = Vec::new();
        s.seal_last(&[], &mut body).unwrap();
        assert_eq!(body.len(), CHUNK_HEADER_LEN + TAG_LEN);
        assert_eq!(open_all(&mut o, &frames(&body)).unwrap(), b"");
    }

    fn three() -> Vec<Vec<u8>> {
        let (mut s, _) = pair();
        let mut body = Vec::new();
        s.seal_chunk(b"one", &mut body).unwrap();
        s.seal_chunk(b"two", &mut body).unwrap();
        s.seal_last(b"three", &mut body).unwrap();
        frames(&body)
    }

    #[test]
    fn truncation_reordering_dropping_duplication_and_flag_flips_fail() {
        let f = three();
        let fresh = || pair().1;
        assert_eq!(open_all(&mut fresh(), &f).unwrap(), b"onetwothree");
        // cut after a whole chunk: everything opened but no last chunk
        assert_eq!(
            open_all(&mut fresh(), &f[..2]).unwrap_err(),
            ProtocolError::Truncated
        );
        assert_eq!(
            open_all(&mut fresh(), &[]).unwrap_err(),
            ProtocolError::Truncated
        );
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("reordered", vec![f[1].clone(), f[0].clone(), f[2].clone()]),
            ("dropped", vec![f[0].clone(), f[2].clone()]),
            (
                "duplicated",
                vec![f[0].clone(), f[0].clone(), f[1].clone(), f[2].clone()],
            ),
            ("last flag set early", {
                let mut g = f.clone();
                g[1][0] = 1;
                g.truncate(2);
                g
            }),
            ("last flag cleared", {
                let mut g = f.clone();
                g[2][0] = 0;
                g
            }),
            ("flipped ciphertext", {
                let mut g = f.clone();
                g[1][CHUNK_HEADER_LEN] ^= 1;
                g
            }),
        ];
        for (name, g) in cases {
            assert!(open_all(&mut fresh(), &g).is_err(), "{name} opened");
        }
    }

    #[test]
    fn another_key_or_associated_data_does_not_open() {
        let f = three();
        let k = AeadKey::new(Suite::Aes256Gcm, &[7; 32]);
        let mut o = StreamOpener::new(k, b"other ad".to_vec());
        assert_eq!(open_all(&mut o, &f).unwrap_err(), ProtocolError::BadSeal);
        let k = AeadKey::new(Suite::Aes256Gcm, &[8; 32]);
        let mut o = StreamOpener::new(k, b"ad".to_vec());
        assert_eq!(open_all(&mut o, &f).unwrap_err(), ProtocolError::BadSeal);
    }

    #[test]
    fn a_failed_chunk_poisons_the_opener_and_nothing_follows_the_last() {
        let f = three();
        let (_, mut o) = pair();
        let mut bad = f[0].clone();
        bad[5] ^= 1;
        assert!(o.open_chunk(&mut bad).is_err());
        let mut good = f[0].clone();
        assert_eq!(o.open_chunk(&mut good), Err(ProtocolError::BadSeal));
        assert_eq!(o.finish(), Err(ProtocolError::BadSeal));

        let (_, mut o) = pair();
        assert_eq!(open_all(&mut o, &f).unwrap(), b"onetwothree");
        let mut again = f[2].clone();
        assert_eq!(
            o.open_chunk(&mut again).unwrap_err().code(),
            crate::ErrorCode::Malformed
        );
    }

    #[test]
    fn chunk_headers_are_checked() {
        assert_eq!(ChunkHeader::parse(&[0, 0, 0]).unwrap(), None);
        assert_eq!(
            ChunkHeader::parse(&[1, 0, 0, 0]).unwrap(),
            Some(ChunkHeader { last: true, len: 0 })
        );
        assert!(ChunkHeader::parse(&[0, 0, 0, 0]).is_err(), "empty non-last");
        assert!(ChunkHeader::parse(&[2, 0, 0, 1]).is_err(), "flag 2");
        assert_eq!(
            ChunkHeader::parse(&[0, 1, 0, 0]).unwrap().unwrap().len,
            MAX_CHUNK_LEN
        );
        assert!(ChunkHeader::parse(&[0, 1, 0, 1]).is_err(), "over 64 KiB");
        assert_eq!(complete_chunk(&[0, 0, 0, 1]).unwrap(), None);
        assert_eq!(complete_chunk(&[0, 0, 0, 1, 9]).unwrap(), None);
        assert_eq!(
            complete_chunk(&[0u8, 0, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap(),
            Some(21)
        );
        // a frame given to open_chunk must be exactly one chunk
        let (_, mut o) = pair();
        let mut long = three()[0].clone();
        long.push(0);
        assert!(o.open_chunk(&mut long).is_err());
    }

    #[test]
    fn nonces_carry_the_index_and_the_last_flag() {
        assert_eq!(chunk_nonce(0, false), [0; 12]);
        assert_eq!(
            chunk_nonce(0x0102, true),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1]
        );
    }

    proptest! {
        #[test]
        fn any_split_of_writes_round_trips(sizes in proptest::collection::vec(0usize..70_000, 0..5), end in 0usize..70_000) {
            let (mut s, mut o) = pair();
            let mut body = Vec::new();
            let mut want = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let piece = vec![i as u8; *n];
                s.seal_chunk(&piece, &mut body).unwrap();
                want.extend_from_slice(&piece);
            }
            let tail = vec![0xee; end];
            s.seal_last(&tail, &mut body).unwrap();
            want.extend_from_slice(&tail);
            prop_assert_eq!(open_all(&mut o, &frames(&body)).unwrap(), want);
        }

        #[test]
        fn chunk_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = complete_chunk(&bytes);
            let (_, mut o) = pair();
            let mut b = bytes.clone();
            let _ = o.open_chunk(&mut b);
        }
    }
}
