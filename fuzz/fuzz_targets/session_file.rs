//! Session files: what `sessioncert request --session FILE` (and the Rust client's
//! `session_file`) make of the bytes at that path, through the client's own
//! classification (`sessioncert_client::inspect_session_file`, the code `load` runs).
//!
//! Invariants:
//! * any bytes give one of four verdicts — a usable session, a file whose session is gone
//!   (the server and its trusted identity), an unusable session file (may be replaced),
//!   not a session file (never overwritten) — without panicking;
//! * what is usable is what the client can write back: the file it would write
//!   classifies the same (session id, server, next seq; or server) and is a fixed point;
//! * a genuine file (a real session of the fixture, any suite and next seq, any server
//!   URL) is usable and names exactly that session; edited, it obeys the first two.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sessioncert_client::{inspect_session_file, SessionFileVerdict};
use sessioncert_fuzz::{fixture, mutate, Mutation};
use sessioncert_proto::ClientSession;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Raw bytes at the path.
    Raw(Vec<u8>),
    /// A genuine file of one of the fixture's sessions, then edited.
    Genuine {
        suite: u8,
        next_seq: u32,
        base_url: String,
        edits: Vec<Mutation>,
    },
}

fn check_usable(v: &SessionFileVerdict) {
    if let SessionFileVerdict::KnownServer {
        base_url,
        rewritten,
    } = v
    {
        match inspect_session_file(rewritten) {
            SessionFileVerdict::KnownServer {
                base_url: url2,
                rewritten: re2,
            } => assert_eq!((&url2, &re2), (base_url, rewritten)),
            other => panic!("the client's own identity file is not one: {other:?}"),
        }
    }
    if let SessionFileVerdict::Session {
        session_id,
        base_url,
        next_seq,
        rewritten,
    } = v
    {
        let again = inspect_session_file(rewritten);
        match &again {
            SessionFileVerdict::Session {
                session_id: id2,
                base_url: url2,
                next_seq: seq2,
                rewritten: re2,
            } => {
                assert_eq!((id2, url2, seq2), (session_id, base_url, next_seq));
                assert_eq!(re2, rewritten, "the written file is not a fixed point");
            }
            other => panic!("the client's own file is not usable: {other:?}"),
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(bytes) => check_usable(&inspect_session_file(&bytes)),
        Input::Genuine {
            suite,
            next_seq,
            base_url,
            edits,
        } => {
            let f = fixture();
            let pair = &f.pairs[suite as usize % f.pairs.len()];
            let session: ClientSession = pair.client_at(u64::from(next_seq));
            let file = serde_json::json!({
                "format": 1,
                "base_url": base_url,
                "pin": f.pin.to_string(),
                "session_id": session.id().to_string(),
                "suite": session.suite().name(),
                "expires_at_ms": 1u64 << 50,
                "idle_timeout_ms": 1_800_000u64,
                "secrets": URL_SAFE_NO_PAD.encode(session.export().as_slice()),
            })
            .to_string();
            let v = inspect_session_file(file.as_bytes());
            match &v {
                SessionFileVerdict::Session {
                    session_id,
                    base_url: url,
                    next_seq: seq,
                    ..
                } => {
                    assert_eq!(*session_id, session.id());
                    assert_eq!(url, &base_url);
                    assert_eq!(*seq, u64::from(next_seq));
                }
                other => panic!("a genuine session file is not usable: {other:?}"),
            }
            check_usable(&v);
            let edited = mutate(file.as_bytes(), &edits);
            check_usable(&inspect_session_file(&edited));
        }
    }
});
