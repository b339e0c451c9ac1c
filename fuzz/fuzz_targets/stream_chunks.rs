//! Streamed records (PROTOCOL §8.5): the chunk parser (`stream::complete_chunk`,
//! `ChunkHeader::parse`) and the opener (`ServerSession::open_request_stream`,
//! `ClientSession::open_response_stream`, `StreamOpener::open_chunk` / `finish`), fed
//! the way a receiver gets a body: in pieces split at arbitrary points.
//!
//! Invariants:
//! * `complete_chunk` agrees with an independent model of the chunk header (flag 0 or 1,
//!   length at most 64 KiB, only the last chunk empty) on any bytes, and
//!   `ChunkHeader::parse` with it;
//! * made-up bytes after a genuine stream start never open as a chunk; once a chunk
//!   fails, every later call fails and `finish` does too; a refused stream start leaves
//!   the replay window untouched;
//! * a genuine stream (fuzzer-chosen chunks, either direction, either mode) opens to
//!   exactly what was sealed; any edit of its bytes is refused, and whatever plaintext
//!   was released before the refusal is a prefix of what was sealed (a stream never
//!   opens as a different plaintext); a strict prefix of the body is never a success;
//! * the outcome does not depend on how the body was split into pieces.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{mutate, pair, Mutation};
use sessioncert_proto::record::RECORD_HEADER_LEN;
use sessioncert_proto::stream::{
    complete_chunk, ChunkHeader, OpenedChunk, StreamOpener, CHUNK_HEADER_LEN, MAX_CHUNK_LEN,
};
use sessioncert_proto::{
    ClientSession, ErrorCode, ProtocolError, RequestBinding, RequestLine, ResponseBinding,
    ServerSession,
};

const TAG_LEN: usize = 16;
const LINE: RequestLine<'static> = RequestLine {
    method: "PUT",
    target: "https://api.example",
    path: "/files/f",
    query: "",
    content_type: "application/octet-stream",
    covered: &[],
};
const RESPONSE: ResponseBinding<'static> = ResponseBinding::Header {
    status: 200,
    content_type: "text/event-stream",
};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Arbitrary bytes through the parser and, after a genuine first chunk, the opener.
    Raw {
        pair: u8,
        bytes: Vec<u8>,
        splits: Vec<u16>,
    },
    /// Arbitrary bytes as a whole request body (stream header and all).
    RawStart {
        pair: u8,
        full: bool,
        body: Vec<u8>,
        splits: Vec<u16>,
    },
    /// A genuine stream, edited.
    Sealed {
        pair: u8,
        full: bool,
        response: bool,
        chunks: Vec<Vec<u8>>,
        last: Vec<u8>,
        muts: Vec<Mutation>,
        splits: Vec<u16>,
        cut: u16,
    },
}

/// The chunk header of §8.5, from the text: how long the chunk at the start of `buf` is.
fn model(buf: &[u8]) -> Result<Option<usize>, ()> {
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
    if h[0] > 1 || len > MAX_CHUNK_LEN || (len == 0 && h[0] == 0) {
        return Err(());
    }
    let n = 4 + len + TAG_LEN;
    Ok((buf.len() >= n).then_some(n))
}

fn check_parser(bytes: &[u8]) {
    let got = complete_chunk(bytes);
    match (&got, model(bytes)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b),
        (Err(e), Err(())) => assert_eq!(e.code(), ErrorCode::Malformed),
        _ => panic!("complete_chunk {got:?} disagrees with the model on {bytes:02x?}"),
    }
    match ChunkHeader::parse(bytes) {
        Ok(Some(h)) => {
            assert!(bytes.len() >= CHUNK_HEADER_LEN);
            assert_eq!(h.frame_len(), CHUNK_HEADER_LEN + h.len + TAG_LEN);
            assert_eq!(
                got,
                Ok((bytes.len() >= h.frame_len()).then_some(h.frame_len()))
            );
        }
        Ok(None) => assert!(bytes.len() < CHUNK_HEADER_LEN),
        Err(_) => assert!(got.is_err()),
    }
}

/// Cuts `body` into pieces at the fuzzer's split points.
fn pieces<'a>(body: &'a [u8], splits: &[u16]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = splits
        .iter()
        .map(|s| *s as usize % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([body.len()]) {
        out.push(&body[at..c]);
        at = c;
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Opened(Vec<u8>),
    Refused { code: ErrorCode, released: Vec<u8> },
}

type Start<'s> =
    dyn FnMut(&[u8], &mut [u8]) -> Result<(OpenedChunk, StreamOpener), ProtocolError> + 's;

/// A receiver: takes the body piece by piece, opens the stream header and first chunk
/// with `start` as soon as both are whole, then each chunk as soon as it is whole;
/// when the body ends, the stream must have ended with its last chunk.
fn receive(pieces: &[&[u8]], start: &mut Start<'_>) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    let mut released = Vec::new();
    let mut opener: Option<StreamOpener> = None;
    let refuse = |e: ProtocolError, released: Vec<u8>| Outcome::Refused {
        code: e.code(),
        released,
    };
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match &mut opener {
                None => {
                    if buf.len() < RECORD_HEADER_LEN {
                        break;
                    }
                    let (header, rest) = buf.split_at_mut(RECORD_HEADER_LEN);
                    let n = match complete_chunk(rest) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => return refuse(e, released),
                    };
                    match start(header, &mut rest[..n]) {
                        Ok((c, o)) => {
                            released.extend_from_slice(&rest[c.plaintext]);
                            opener = Some(o);
                            buf.drain(..RECORD_HEADER_LEN + n);
                        }
                        Err(e) => return refuse(e, released),
                    }
                }
                Some(o) => match complete_chunk(&buf) {
                    Err(e) => return refuse(e, released),
                    Ok(None) => break,
                    Ok(Some(n)) => {
                        let mut frame: Vec<u8> = buf.drain(..n).collect();
                        match o.open_chunk(&mut frame) {
                            Ok(c) => released.extend_from_slice(&frame[c.plaintext]),
                            Err(e) => {
                                // A failed chunk poisons the opener.
                                assert!(o.open_chunk(&mut frame.clone()).is_err());
                                assert!(o.finish().is_err());
                                return refuse(e, released);
                            }
                        }
                    }
                },
            }
        }
    }
    match opener {
        None => Outcome::Refused {
            code: ErrorCode::Rejected,
            released,
        },
        Some(o) if o.is_finished() && !buf.is_empty() => Outcome::Refused {
            code: ErrorCode::Malformed,
            released,
        },
        Some(o) => match o.finish() {
            Ok(()) => Outcome::Opened(released),
            Err(e) => refuse(e, released),
        },
    }
}

fn binding(full: bool) -> RequestBinding<'static> {
    if full {
        RequestBinding::Full
    } else {
        RequestBinding::Header(LINE)
    }
}

fn response_binding(full: bool) -> ResponseBinding<'static> {
    if full {
        ResponseBinding::Full
    } else {
        RESPONSE
    }
}

fn server_start<'s>(server: &'s mut ServerSession, full: bool) -> Box<Start<'s>> {
    Box::new(move |h: &[u8], first: &mut [u8]| {
        server
            .open_request_stream(&binding(full), h, first)
            .map(|o| (o.first, o.opener))
    })
}

fuzz_target!(|input: Input| match input {
    Input::Raw {
        pair: sel,
        bytes,
        splits,
    } => {
        check_parser(&bytes);
        for p in pieces(&bytes, &splits) {
            check_parser(p);
        }
        // A genuine stream start, then the fuzzer's bytes as the rest of the stream.
        let p = pair(sel);
        let mut client = p.client_at(0);
        let start = client
            .seal_request_stream(&binding(false), b"first", false)
            .expect("seal");
        let body = [start.bytes.as_slice(), &bytes].concat();
        let mut server = p.server();
        let one = receive(&[&body], &mut *server_start(&mut server, false));
        let mut server = p.server();
        let split = receive(
            &pieces(&body, &splits),
            &mut *server_start(&mut server, false),
        );
        assert_eq!(one, split, "the outcome depends on the split");
        match one {
            // Made-up chunks never authenticate: only a stream that ends at "first" can
            // be refused without more, and it can never open.
            Outcome::Opened(pt) => panic!("made-up chunks opened: {pt:02x?}"),
            Outcome::Refused { released, .. } => assert_eq!(released, b"first"),
        }
    }
    Input::RawStart {
        pair: sel,
        full,
        body,
        splits,
    } => {
        let p = pair(sel);
        let mut server = p.server();
        let out = receive(
            &pieces(&body, &splits),
            &mut *server_start(&mut server, full),
        );
        assert!(
            matches!(out, Outcome::Refused { ref released, .. } if released.is_empty()),
            "made-up stream start: {out:?}"
        );
        assert_eq!(server.highest_seq(), None, "a refusal moved the window");
    }
    Input::Sealed {
        pair: sel,
        full,
        response,
        chunks,
        last,
        muts,
        splits,
        cut,
    } => {
        let p = pair(sel);
        let chunks: Vec<Vec<u8>> = chunks
            .into_iter()
            .take(6)
            .map(|mut c| {
                c.truncate(300);
                c
            })
            .filter(|c| !c.is_empty())
            .collect();
        let mut last = last;
        last.truncate(300);
        let genuine_pt: Vec<u8> = chunks.iter().flatten().chain(&last).copied().collect();
        let mut client = p.client_at(0);
        let mut server = p.server();
        // The genuine body, and what opens it afresh each time.
        let (body, expect) = if response {
            let (rec, exp) = client.seal_request(&binding(full), b"q").expect("seal");
            let o = server.open_request(&binding(full), &rec).expect("open");
            let (mut body, mut s) = server
                .seal_response_stream(o.sealer, &response_binding(full))
                .map_err(|f| f.error)
                .expect("seal stream");
            for c in &chunks {
                s.seal_chunk(c, &mut body).expect("seal chunk");
            }
            s.seal_last(&last, &mut body).expect("seal last");
            (body, Some(exp))
        } else {
            let (first, rest) = match chunks.split_first() {
                Some((f, r)) => (f.as_slice(), r),
                None => (last.as_slice(), &[][..]),
            };
            let start = client
                .seal_request_stream(&binding(full), first, chunks.is_empty())
                .expect("seal");
            let mut body = start.bytes;
            if let Some(mut s) = start.sealer {
                for c in rest {
                    s.seal_chunk(c, &mut body).expect("seal chunk");
                }
                s.seal_last(&last, &mut body).expect("seal last");
            }
            (body, None)
        };
        let client_export = client.export().to_vec();
        let run = |b: &[u8], splits: &[u16]| -> Outcome {
            let parts = pieces(b, splits);
            match &expect {
                Some(exp) => {
                    let mut c = ClientSession::import(&client_export).expect("import");
                    let mut start = |h: &[u8], first: &mut [u8]| {
                        c.open_response_stream(exp, &response_binding(full), h, first)
                    };
                    receive(&parts, &mut start)
                }
                None => {
                    let mut s = p.server();
                    let out = receive(&parts, &mut *server_start(&mut s, full));
                    out
                }
            }
        };
        assert_eq!(
            run(&body, &splits),
            Outcome::Opened(genuine_pt.clone()),
            "the genuine stream"
        );
        // Cut short: never a success, whatever was released is genuine.
        let cut = cut as usize % body.len();
        match run(&body[..cut], &[]) {
            Outcome::Opened(pt) => panic!("a stream cut at {cut} opened: {pt:02x?}"),
            Outcome::Refused { released, .. } => assert!(genuine_pt.starts_with(&released)),
        }
        // Edited: refused unless the edits cancel out; never another plaintext.
        let edited = mutate(&body, &muts);
        let out = run(&edited, &splits);
        assert_eq!(out, run(&edited, &[]), "the outcome depends on the split");
        match out {
            Outcome::Opened(pt) => {
                assert_eq!(edited, body, "an edited stream opened");
                assert_eq!(pt, genuine_pt);
            }
            Outcome::Refused { released, .. } => {
                assert!(
                    genuine_pt.starts_with(&released),
                    "forged plaintext released"
                );
                assert_ne!(edited, body, "the genuine stream was refused");
            }
        }
    }
});
