//! Incremental reading of a Binary HTTP response (RFC 9292), as a streamed full-mode
//! response carries it: status and header fields as soon as they have arrived, then the
//! content piece by piece. Known-length (framing indicator 1) and indeterminate-length
//! (3) messages; informational responses are skipped, trailers read and dropped.
//!
//! The `bhttp` crate's own `stream` reader stalls when a field straddles two reads (it
//! returns `Pending` without a wake-up) and sizes buffers from the peer's lengths, so this
//! small sans-I/O decoder is used instead; the tests check it against `bhttp`'s encoder.

use bytes::{Buf, Bytes, BytesMut};
use sessioncert_proto::ProtocolError;

/// Largest status-and-header block (and trailer section) accepted.
pub(crate) const MAX_HEAD_LEN: usize = 256 * 1024;

fn bad() -> ProtocolError {
    ProtocolError::Malformed {
        what: "binary http message",
    }
}

use sessioncert_proto::full::read_varint as varint;

/// Reads `n` bytes at `*pos`, a varint-prefixed vector: `Ok(None)` when incomplete.
fn vec_at<'a>(b: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let Some((len, n)) = varint(b.get(*pos..).unwrap_or_default()) else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| bad())?;
    if len > MAX_HEAD_LEN {
        return Err(bad());
    }
    let start = *pos + n;
    let Some(v) = b.get(start..start + len) else {
        return Ok(None);
    };
    *pos = start + len;
    Ok(Some(v))
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A field section at `*pos`: `Ok(None)` when incomplete.
fn fields_at(
    b: &[u8],
    pos: &mut usize,
    indeterminate: bool,
) -> Result<Option<Fields>, ProtocolError> {
    let mut p = *pos;
    let mut fields = Vec::new();
    if indeterminate {
        loop {
            let Some(name) = vec_at(b, &mut p)? else {
                return Ok(None);
            };
            if name.is_empty() {
                break;
            }
            let Some(value) = vec_at(b, &mut p)? else {
                return Ok(None);
            };
            fields.push((name.to_vec(), value.to_vec()));
        }
    } else {
        let Some(section) = vec_at(b, &mut p)? else {
            return Ok(None);
        };
        let mut q = 0;
        while q < section.len() {
            // Inside a complete section, a field cut short is malformed.
            let name = vec_at(section, &mut q)?.ok_or_else(bad)?;
            let value = vec_at(section, &mut q)?.ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            fields.push((name.to_vec(), value.to_vec()));
        }
    }
    *pos = p;
    Ok(Some(fields))
}

/// Status and header fields of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub fields: Fields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Before a content length (known-length: the only one; indeterminate: each chunk's).
    ContentLen,
    Content {
        remaining: u64,
    },
    Trailer,
    Padding,
}

/// Decodes one Binary HTTP response fed to it in pieces.
#[derive(Debug)]
pub(crate) struct ResponseDecoder {
    buf: BytesMut,
    state: State,
    indeterminate: bool,
    /// Whether the (known-length) content's single length was read.
    content_started: bool,
}

impl ResponseDecoder {
    pub(crate) fn new() -> Self {
        ResponseDecoder {
            buf: BytesMut::new(),
            state: State::Head,
            indeterminate: false,
            content_started: false,
        }
    }

    pub(crate) fn feed(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The status and header fields, once all of them have arrived.
    pub(crate) fn head(&mut self) -> Result<Option<Head>, ProtocolError> {
        if self.state != State::Head {
            return Err(bad());
        }
        let b = &self.buf[..];
        let parsed = (|| {
            let mut p = 0;
            let Some((framing, n)) = varint(b) else {
                return Ok(None);
            };
            p += n;
            let indeterminate = match framing {
                1 => false,
                3 => true,
                _ => return Err(bad()),
            };
            loop {
                let Some((status, n)) = varint(&b[p..]) else {
                    return Ok(None);
                };
                p += n;
                let Some(fields) = fields_at(b, &mut p, indeterminate)? else {
                    return Ok(None);
                };
                match status {
                    100..=199 => continue,
                    200..=599 => {
                        return Ok(Some((
                            Head {
                                status: status as u16,
                                fields,
                            },
                            p,
                            indeterminate,
                        )))
                    }
                    _ => return Err(bad()),
                }
            }
        })()?;
        match parsed {
            Some((head, used, indeterminate)) => {
                self.buf.advance(used);
                self.indeterminate = indeterminate;
                self.state = State::ContentLen;
                Ok(Some(head))
            }
            None if self.buf.len() > MAX_HEAD_LEN => Err(bad()),
            None => Ok(None),
        }
    }

    /// The next piece of content available, `Ok(None)` when more input is needed (or the
    /// content is over).
    pub(crate) fn content(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            match self.state {
                State::Head => return Err(bad()),
                State::ContentLen => {
                    if !self.indeterminate && self.content_started {
                        self.state = State::Trailer;
                        continue;
                    }
                    let Some((len, n)) = varint(&self.buf) else {
                        return Ok(None);
                    };
                    self.buf.advance(n);
                    self.content_started = true;
                    self.state = if len == 0 && self.indeterminate {
                        State::Trailer
                    } else {
                        State::Content { remaining: len }
                    };
                }
                State::Content { remaining } => {
                    if remaining == 0 {
                        self.state = State::ContentLen;
                        continue;
                    }
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    let piece = self.buf.split_to(take).freeze();
                    self.state = State::Content {
                        remaining: remaining - take as u64,
                    };
                    return Ok(Some(piece));
                }
                State::Trailer => {
                    let mut p = 0;
                    let done = if self.indeterminate {
                        fields_at(&self.buf, &mut p, true)?.is_some()
                    } else {
                        vec_at(&self.buf, &mut p)?.is_some()
                    };
                    if !done {
                        if self.buf.len() > MAX_HEAD_LEN {
                            return Err(bad());
                        }
                        return Ok(None);
                    }
                    self.buf.advance(p);
                    self.state = State::Padding;
                }
                State::Padding => {
                    // RFC 9292 §3.8: only zeros may follow the message.
                    if self.buf.iter().any(|b| *b != 0) {
                        return Err(bad());
                    }
                    self.buf.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// At the end of the input: fine when it ended between sections or content chunks
    /// (RFC 9292 §3.8 lets a message be cut there), malformed inside one.
    pub(crate) fn finish(&mut self) -> Result<(), ProtocolError> {
        if self.state == State::Head {
            return Err(bad());
        }
        if self.content()?.is_some() {
            return Err(bad());
        }
        match self.state {
            State::Padding => Ok(()),
            // Truncation (RFC 9292 §3.8) only for known-length messages: an
            // indeterminate-length one must end each section with its terminator, as the
            // buffered decoder requires (PROTOCOL §11).
            State::ContentLen | State::Trailer if self.buf.is_empty() && !self.indeterminate => {
                Ok(())
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bhttp::{Message, Mode, StatusCode};

    fn encode(mode: Mode, content: &[u8], trailer: bool, info: bool) -> Vec<u8> {
        let mut m = Message::response(StatusCode::try_from(203u16).unwrap());
        m.put_header(b"content-type".to_vec(), b"text/event-stream".to_vec());
        m.put_header(b"x-long".to_vec(), vec![b'v'; 300]);
        m.write_content(content);
        if trailer {
            m.put_trailer(b"x-trailer".to_vec(), b"t".to_vec());
        }
        let mut out = Vec::new();
        m.write_bhttp(mode, &mut out).unwrap();
        if info {
            // An informational 103 before the final response (RFC 9292 §3.5.1).
            let framing = out[0];
            let mut with = vec![framing, 0x40, 103];
            match mode {
                Mode::KnownLength => with.extend_from_slice(&[4, 1, b'l', 1, b'x']),
                Mode::IndeterminateLength => with.extend_from_slice(&[1, b'l', 1, b'x', 0]),
            }
            with.extend_from_slice(&out[1..]);
            out = with;
        }
        out
    }

    /// Feeds `bytes` in pieces of `step`, returning the head and the content.
    fn decode(bytes: &[u8], step: usize) -> Result<(Head, Vec<u8>), ProtocolError> {
        let mut d = ResponseDecoder::new();
        let mut head = None;
        let mut content = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            d.feed(piece);
            if head.is_none() {
                head = d.head()?;
                if head.is_none() {
                    continue;
                }
            }
            while let Some(c) = d.content()? {
                content.extend_from_slice(&c);
            }
        }
        let head = head.ok_or_else(bad)?;
        d.finish()?;
        Ok((head, content))
    }

    #[test]
    fn decodes_what_bhttp_encodes_in_any_split() {
        let content: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for mode in [Mode::KnownLength, Mode::IndeterminateLength] {
            for trailer in [false, true] {
                for info in [false, true] {
                    let bytes = encode(mode, &content, trailer, info);
                    for step in [1, 2, 3, 7, 64, 1000, bytes.len()] {
                        let (head, got) = decode(&bytes, step)
                            .unwrap_or_else(|e| panic!("{mode:?} {trailer} {info} {step}: {e}"));
                        assert_eq!(head.status, 203);
                        assert_eq!(head.fields.len(), 2);
                        assert_eq!(head.fields[0].1, b"text/event-stream");
                        assert_eq!(got, content, "{mode:?} step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_head_is_known_before_the_content_arrives() {
        let bytes = encode(Mode::IndeterminateLength, b"0123456789", false, false);
        // everything up to the first content chunk's length
        let content_at = bytes.len() - 2 - 10 - 1;
        let mut d = ResponseDecoder::new();
        d.feed(&bytes[..content_at]);
        assert_eq!(d.head().unwrap().unwrap().status, 203);
        assert_eq!(d.content().unwrap(), None);
        d.feed(&bytes[content_at..content_at + 4]);
        assert_eq!(d.content().unwrap().unwrap().as_ref(), b"012");
    }

    #[test]
    fn indeterminate_chunks_stream_and_truncation_inside_a_chunk_fails() {
        // framing 3, status 200, no fields, chunks "ab" and "cde", end, empty trailer
        let msg = [3u8, 0x40, 200, 0, 2, b'a', b'b', 3, b'c', b'd', b'e', 0, 0];
        let (h, c) = decode(&msg, 1).unwrap();
        assert_eq!((h.status, c.as_slice()), (200, &b"abcde"[..]));
        // cut inside a chunk, between chunks, or before the trailer's terminator:
        // malformed (an indeterminate-length message must be whole, PROTOCOL §11)
        for cut in [9, 11, 12] {
            assert!(decode(&msg[..cut], 3).is_err(), "cut at {cut}");
        }
        // non-zero padding after the message
        let mut padded = msg.to_vec();
        padded.extend_from_slice(&[0, 0, 1]);
        assert!(decode(&padded, 4).is_err());
        padded.pop();
        assert!(decode(&padded, 4).is_ok());
    }

    #[test]
    fn requests_bad_statuses_and_huge_lengths_are_refused() {
        assert!(decode(&[0, 3, b'G', b'E', b'T'], 5).is_err(), "a request");
        assert!(decode(&[1, 0x42, 0x58, 0, 0, 0], 6).is_err(), "status 600");
        // a field section claiming 2^30 bytes is refused, not waited for
        let mut d = ResponseDecoder::new();
        d.feed(&[1, 0x40, 200, 0xc0, 0, 0, 0, 0x40, 0, 0, 0]);
        assert!(d.head().is_err());
        // a head that never ends is refused past the limit
        let mut d = ResponseDecoder::new();
        d.feed(&[3, 0x40, 200]);
        for _ in 0..(MAX_HEAD_LEN / 8 + 1) {
            d.feed(&[2, b'a', b'b', 4, b'v', b'v', b'v', b'v']);
        }
        assert!(d.head().is_err());
    }
}
