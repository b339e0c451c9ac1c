//! The key broker's stored-file format (`sessioncert-broker::file_crypt`): a header
//! and XChaCha20-Poly1305 STREAM chunks, read back by `FileOpener` as the object store
//! hands the bytes over (in pieces split at fuzzer-chosen points).
//!
//! Invariants:
//! * a genuine file (fuzzer-chosen length, 0 to 3 chunks and a bit) opens to its
//!   plaintext, however its bytes are split;
//! * any edit (flipped, cut, inserted or removed bytes, chunks swapped or repeated) is
//!   refused — at some push or at the end — and what was released before is a prefix of
//!   the genuine plaintext; a strict prefix of a file never opens;
//! * raw bytes never open under the key, and nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_broker::file_crypt::{seal_all, FileOpener, CHUNK, HEADER, TAG};
use sessioncert_fuzz::{mutate, Mutation};

const KEY: [u8; 32] = [5; 32];

#[derive(Debug, Arbitrary)]
enum Edit {
    Bytes(Vec<Mutation>),
    SwapChunks(u8, u8),
    RepeatChunk(u8),
    DropChunk(u8),
    OtherKey,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Genuine { len: u32, seed: u8, splits: Vec<u32>, edit: Option<Edit> },
    Raw { bytes: Vec<u8>, splits: Vec<u32> },
}

fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Opens `stored` in pieces; returns what was released and whether it ended authentic.
fn open(stored: &[u8], splits: &[u32]) -> (Vec<u8>, bool) {
    if stored.len() < HEADER {
        return (Vec::new(), false);
    }
    let Ok(mut o) = FileOpener::new(&KEY, &stored[..HEADER]) else {
        return (Vec::new(), false);
    };
    let body = &stored[HEADER..];
    let mut cuts: Vec<usize> = splits.iter().map(|s| *s as usize % (body.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(body.len());
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        match o.push(&body[at..c]) {
            Ok(p) => out.extend_from_slice(&p),
            Err(_) => return (out, false),
        }
        at = c;
    }
    match o.finish() {
        Ok(p) => {
            out.extend_from_slice(&p);
            (out, true)
        }
        Err(_) => (out, false),
    }
}

fn chunk_range(stored: &[u8], i: u8) -> Option<std::ops::Range<usize>> {
    let n = (stored.len() - HEADER).div_ceil(CHUNK + TAG);
    if n == 0 {
        return None;
    }
    let i = i as usize % n;
    let start = HEADER + i * (CHUNK + TAG);
    Some(start..(start + CHUNK + TAG).min(stored.len()))
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { bytes, splits } => {
            let (_, ok) = open(&bytes, &splits);
            assert!(!ok, "made-up bytes opened");
        }
        Input::Genuine { len, seed, splits, edit } => {
            let plain = plaintext(len as usize % (3 * CHUNK + 100), seed);
            let stored = seal_all(&KEY, &plain).unwrap();
            let edited = match &edit {
                None => stored.clone(),
                Some(Edit::Bytes(m)) => mutate(&stored, m),
                Some(Edit::SwapChunks(a, b)) => {
                    let mut v = stored.clone();
                    if let (Some(ra), Some(rb)) = (chunk_range(&v, *a), chunk_range(&v, *b)) {
                        let (ca, cb) = (v[ra.clone()].to_vec(), v[rb.clone()].to_vec());
                        if ra.start < rb.start {
                            v.splice(rb, ca);
                            v.splice(ra, cb);
                        } else {
                            v.splice(ra, cb);
                            v.splice(rb, ca);
                        }
                    }
                    v
                }
                Some(Edit::RepeatChunk(i)) => {
                    let mut v = stored.clone();
                    if let Some(r) = chunk_range(&v, *i) {
                        let c = v[r.clone()].to_vec();
                        v.splice(r.end..r.end, c);
                    }
                    v
                }
                Some(Edit::DropChunk(i)) => {
                    let mut v = stored.clone();
                    if let Some(r) = chunk_range(&v, *i) {
                        v.drain(r);
                    }
                    v
                }
                Some(Edit::OtherKey) => seal_all(&[6; 32], &plain).unwrap(),
            };
            let (released, ok) = open(&edited, &splits);
            if edited == stored {
                assert!(ok, "the genuine file did not open");
                assert!(released == plain, "the genuine file opened to other bytes");
            } else {
                assert!(!ok, "an edited file opened: {edit:?}");
                assert!(plain.starts_with(&released), "released bytes that are not the file's");
            }
        }
    }
});
