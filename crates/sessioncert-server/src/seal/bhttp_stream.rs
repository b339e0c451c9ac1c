//! Binary HTTP (RFC 9292) framing read and written piece by piece, for full-mode
//! streams: the request's head is found in the first bytes of its stream and its
//! content handed on as it arrives; a streamed response is written in the
//! indeterminate-length form (framing indicator 3) so content can follow as produced.
//!
//! The head itself is decoded by the same `bhttp` parser as a buffered full-mode
//! request ([`FullRequest::decode`]); only the boundaries are found here. Why not
//! `bhttp`'s own `stream` feature (0.8): its reader allocates whatever length a peer
//! announces for a field before reading it (a varint up to 2^62), and it returns
//! `Pending` without arranging a wake-up when its source delivers part of a field.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use sessioncert_proto::full::FullRequest;
use sessioncert_proto::ProtocolError;

/// Longest head (control data and header section) of a streamed full-mode request.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

fn bad() -> ProtocolError {
    ProtocolError::Malformed {
        what: "binary http message",
    }
}

use sessioncert_proto::full::read_varint as varint;
pub(crate) use sessioncert_proto::full::write_varint;

/// A length-prefixed field at `pos`: where it ends, and its length. `Ok(None)` when
/// `b` does not hold all of it yet.
fn vec_at(b: &[u8], pos: usize) -> Result<Option<(usize, u64)>, ProtocolError> {
    let Some((len, n)) = b.get(pos..).and_then(varint) else {
        return Ok(None);
    };
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(n)?.checked_add(l))
        .ok_or_else(bad)?;
    Ok((end <= b.len()).then_some((end, len)))
}

/// Where the head of a Binary HTTP request that starts `b` ends, and whether the
/// message is in the indeterminate-length form; `Ok(None)` when `b` ends inside it.
fn scan_request_head(b: &[u8]) -> Result<Option<(usize, bool)>, ProtocolError> {
    let Some((indicator, mut pos)) = varint(b) else {
        return Ok(None);
    };
    let indeterminate = match indicator {
        0 => false,
        2 => true,
        _ => return Err(bad()),
    };
    // method, scheme, authority, path
    for _ in 0..4 {
        let Some((end, _)) = vec_at(b, pos)? else {
            return Ok(None);
        };
        pos = end;
    }
    if !indeterminate {
        return Ok(vec_at(b, pos)?.map(|(end, _)| (end, false)));
    }
    loop {
        let Some((end, name_len)) = vec_at(b, pos)? else {
            return Ok(None);
        };
        pos = end;
        if name_len == 0 {
            return Ok(Some((pos, true)));
        }
        let Some((end, _)) = vec_at(b, pos)? else {
            return Ok(None);
        };
        pos = end;
    }
}

/// The decoded head of a streamed full-mode request, the decoder of its content, and
/// the bytes after the head already received.
pub(crate) struct RequestHead {
    pub(crate) request: FullRequest,
    pub(crate) content: ContentDecoder,
    pub(crate) rest: Bytes,
}

/// Decodes the head of the request whose first bytes are `b`: `Ok(None)` when more
/// are needed (at most [`MAX_HEAD`]: `malformed` beyond).
pub(crate) fn request_head(b: &Bytes) -> Result<Option<RequestHead>, ProtocolError> {
    let Some((len, indeterminate)) = scan_request_head(b)? else {
        if b.len() > MAX_HEAD {
            return Err(bad());
        }
        return Ok(None);
    };
    if len > MAX_HEAD {
        return Err(bad());
    }
    // The head with empty content and an empty trailer section appended is a whole
    // message in either form: the buffered path's parser decodes it.
    let mut whole = Vec::with_capacity(len + 2);
    whole.extend_from_slice(&b[..len]);
    whole.extend_from_slice(&[0, 0]);
    let request = FullRequest::decode(&whole)?;
    Ok(Some(RequestHead {
        request,
        content: ContentDecoder::new(indeterminate),
        rest: b.slice(len..),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Known-length: the content's length (the message may end here).
    KnownLen,
    KnownData(u64),
    /// Known-length: the trailer section's length (the message may end here).
    KnownTrailerLen,
    /// Indeterminate: the first chunk's length (the message may end here).
    FirstChunkLen,
    ChunkLen,
    ChunkData(u64),
    /// Indeterminate trailer: the first field name's length (may end here).
    TrailerFirst,
    TrailerName,
    TrailerValue,
    /// Trailer bytes, skipped (handlers get no trailers, as in the buffered path).
    Skip(u64, After),
    /// Only zero bytes may follow (RFC 9292 §3.8).
    Padding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Padding,
    Value,
    Name,
}

/// Takes the bytes of a Binary HTTP request after its head and gives back its content.
pub(crate) struct ContentDecoder {
    state: State,
    /// A variable-length integer split between two pieces of input.
    partial: [u8; 8],
    partial_len: usize,
}

impl ContentDecoder {
    fn new(indeterminate: bool) -> Self {
        ContentDecoder {
            state: if indeterminate {
                State::FirstChunkLen
            } else {
                State::KnownLen
            },
            partial: [0; 8],
            partial_len: 0,
        }
    }

    fn read_varint(&mut self, input: &mut Bytes) -> Option<u64> {
        while let Some(&next) = input.first() {
            let first = if self.partial_len > 0 {
                self.partial[0]
            } else {
                next
            };
            let need = 1usize << (first >> 6);
            let take = (need - self.partial_len).min(input.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&input[..take]);
            input.advance(take);
            self.partial_len += take;
            if self.partial_len == need {
                self.partial_len = 0;
                return varint(&self.partial[..need]).map(|(v, _)| v);
            }
        }
        None
    }

    /// Consumes `input` up to the next piece of content, which it returns; `None` when
    /// `input` is used up without one.
    pub(crate) fn feed(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, ProtocolError> {
        while !input.is_empty() {
            match self.state {
                State::KnownData(left) | State::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let out = input.split_to(n);
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::KnownData(_), 0) => State::KnownTrailerLen,
                        (State::KnownData(_), l) => State::KnownData(l),
                        (_, 0) => State::ChunkLen,
                        (_, l) => State::ChunkData(l),
                    };
                    return Ok(Some(out));
                }
                State::Skip(left, after) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    input.advance(n);
                    let left = left - n as u64;
                    self.state = if left > 0 {
                        State::Skip(left, after)
                    } else {
                        match after {
                            After::Padding => State::Padding,
                            After::Value => State::TrailerValue,
                            After::Name => State::TrailerName,
                        }
                    };
                }
                State::Padding => {
                    if input.iter().any(|b| *b != 0) {
                        return Err(bad());
                    }
                    input.clear();
                }
                _ => {
                    let Some(v) = self.read_varint(input) else {
                        return Ok(None);
                    };
                    self.state = match (self.state, v) {
                        (State::KnownLen, 0) => State::KnownTrailerLen,
                        (State::KnownLen, v) => State::KnownData(v),
                        (State::KnownTrailerLen, 0) => State::Padding,
                        (State::KnownTrailerLen, v) => State::Skip(v, After::Padding),
                        (State::FirstChunkLen | State::ChunkLen, 0) => State::TrailerFirst,
                        (State::FirstChunkLen | State::ChunkLen, v) => State::ChunkData(v),
                        (State::TrailerFirst | State::TrailerName, 0) => State::Padding,
                        (State::TrailerFirst | State::TrailerName, v) => {
                            State::Skip(v, After::Value)
                        }
                        (_, 0) => State::TrailerName,
                        (_, v) => State::Skip(v, After::Name),
                    };
                }
            }
        }
        Ok(None)
    }

    /// At the end of the stream: whether the message ended where it may (after a whole
    /// section; RFC 9292 §3.8 lets a message end where only empty sections follow).
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        // Truncation (RFC 9292 §3.8) only for known-length messages: an
        // indeterminate-length one must end its content and trailer sections with their
        // terminators, as the buffered decoder requires (PROTOCOL §11); one that stops
        // short fails the body, never reads as complete.
        let may_end = matches!(
            self.state,
            State::KnownLen | State::KnownTrailerLen | State::Padding
        );
        if may_end && self.partial_len == 0 {
            Ok(())
        } else {
            Err(ProtocolError::Truncated)
        }
    }
}

/// The head of a streamed full-mode response: framing indicator 3 (indeterminate-length
/// response), the status and the header section with its terminator. Content follows
/// as [`content_chunk`]s, then [`END`].
pub(crate) fn response_head(status: u16, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_varint(3, &mut out);
    write_varint(u64::from(status), &mut out);
    for (k, v) in headers {
        // Framing describes the outer message, not this one.
        if *k == http::header::CONTENT_LENGTH || *k == http::header::TRANSFER_ENCODING {
            continue;
        }
        write_varint(k.as_str().len() as u64, &mut out);
        out.extend_from_slice(k.as_str().as_bytes());
        write_varint(v.len() as u64, &mut out);
        out.extend_from_slice(v.as_bytes());
    }
    write_varint(0, &mut out);
    out
}

/// Appends one non-empty content chunk of an indeterminate-length message.
pub(crate) fn content_chunk(content: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!content.is_empty());
    write_varint(content.len() as u64, out);
    out.extend_from_slice(content);
}

/// The end of an indeterminate-length message: the content terminator and an empty
/// trailer section.
pub(crate) const END: [u8; 2] = [0, 0];

/// The most a content chunk's length prefix takes here (chunks stay under 2^30).
pub(crate) const CHUNK_PREFIX_MAX: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use bhttp::{Message, Mode};

    fn request(mode: Mode, content: &[u8]) -> Vec<u8> {
        let mut m = Message::request(
            b"PUT".to_vec(),
            b"https".to_vec(),
            b"api.example".to_vec(),
            b"/files/a".to_vec(),
        );
        m.put_header(
            b"content-type".to_vec(),
            b"application/octet-stream".to_vec(),
        );
        m.put_trailer(b"x-t".to_vec(), b"v".to_vec());
        m.write_content(content);
        let mut out = Vec::new();
        m.write_bhttp(mode, &mut out).unwrap();
        out
    }

    /// Feeds `wire` in pieces of `step` bytes; returns the content or the error.
    fn decode(wire: &[u8], step: usize) -> Result<(FullRequest, Vec<u8>), ProtocolError> {
        let mut head_buf = bytes::BytesMut::new();
        let mut pieces = wire.chunks(step);
        let head = loop {
            let Some(p) = pieces.next() else {
                return Err(ProtocolError::Truncated);
            };
            head_buf.extend_from_slice(p);
            if let Some(h) = request_head(&head_buf.clone().freeze())? {
                break h;
            }
        };
        let RequestHead {
            request,
            mut content,
            mut rest,
        } = head;
        let mut got = Vec::new();
        loop {
            while let Some(c) = content.feed(&mut rest)? {
                got.extend_from_slice(&c);
            }
            match pieces.next() {
                Some(p) => rest = Bytes::copy_from_slice(p),
                None => break,
            }
        }
        content.finish()?;
        Ok((request, got))
    }

    #[test]
    fn both_forms_decode_in_any_split() {
        let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for mode in [Mode::KnownLength, Mode::IndeterminateLength] {
            let wire = request(mode, &body);
            for step in [1, 2, 3, 7, 64, 4999, wire.len()] {
                let (req, got) = decode(&wire, step).unwrap();
                assert_eq!(req.method, "PUT");
                assert_eq!(req.path, "/files/a");
                assert_eq!(got, body, "{mode:?} step {step}");
            }
            // Zero padding may follow; anything else may not.
            let mut padded = wire.clone();
            padded.extend_from_slice(&[0; 9]);
            assert_eq!(decode(&padded, 5).unwrap().1, body);
            let mut junk = wire.clone();
            junk.push(1);
            assert!(decode(&junk, 5).is_err(), "{mode:?}: non-zero padding");
            // Cut inside the content: an error, never a short body.
            for cut in [wire.len() - 10, wire.len() / 2] {
                assert!(decode(&wire[..cut], 3).is_err(), "{mode:?} cut at {cut}");
            }
        }
        // An indeterminate-length message ends with the content's and the trailer's
        // terminators (`00 00`): without either it is cut short, as the buffered decoder
        // says (PROTOCOL §11), even where a known-length one could stop.
        // (`request` has a trailer field `x-t: v`, so the message ends `01 76 00`.)
        let wire = request(Mode::IndeterminateLength, &body);
        assert_eq!(&wire[wire.len() - 3..], &[1, b'v', 0]);
        assert!(decode(&wire, 7).is_ok());
        assert!(
            decode(&wire[..wire.len() - 1], 7).is_err(),
            "no trailer terminator"
        );
        // Without the trailer section at all: content terminator only, then the end.
        let no_trailer_start = wire.len() - (1 + 3 + 1 + 1 + 1);
        assert_eq!(wire[no_trailer_start - 1], 0, "the content terminator");
        assert!(
            decode(&wire[..no_trailer_start], 7).is_err(),
            "no trailer section"
        );
    }

    #[test]
    fn heads_are_bounded_and_checked() {
        let mut m = Message::request(
            b"GET".to_vec(),
            b"https".to_vec(),
            b"a.example".to_vec(),
            b"/".to_vec(),
        );
        m.put_header(b"x-big".to_vec(), vec![b'a'; MAX_HEAD]);
        let mut wire = Vec::new();
        m.write_bhttp(Mode::IndeterminateLength, &mut wire).unwrap();
        assert!(request_head(&Bytes::from(wire)).is_err());
        // A response is not a request; an announced length past 2^62 never allocates.
        assert!(request_head(&Bytes::from_static(&[3, 0x40, 200])).is_err());
        let huge = Bytes::from_static(&[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(request_head(&huge), Ok(None) | Err(_)));
    }

    #[test]
    fn the_streamed_response_form_is_what_bhttp_reads() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/event-stream".parse().unwrap());
        headers.insert("content-length", "3".parse().unwrap());
        let mut wire = response_head(201, &headers);
        content_chunk(b"abc", &mut wire);
        content_chunk(&[7; 70_000], &mut wire);
        wire.extend_from_slice(&END);
        let r = sessioncert_proto::full::FullResponse::decode(&wire).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![("content-type".into(), b"text/event-stream".to_vec())]
        );
        assert_eq!(r.body.len(), 70_003);
        let mut v = Vec::new();
        for x in [0u64, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30] {
            v.clear();
            write_varint(x, &mut v);
            assert_eq!(varint(&v), Some((x, v.len())));
        }
    }
}
