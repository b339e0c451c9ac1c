//! Session export/import: `ServerSession::import`, `PendingServerSession::import` (what
//! the server runs on a stored row's secrets after unsealing them) and
//! `ClientSession::import` (what the client runs on a session file's `secrets`).
//!
//! Invariants:
//! * import → export is the identity on bytes (exports are canonical);
//! * whatever imports is safe to use: opening, sealing, confirming on it return values
//!   or errors, never panic, whatever epochs, sequence numbers and window it carries;
//! * an imported session is usable with the real peer only if it is that session: a
//!   genuine request opens only on a server session with the real id, a key
//!   confirmation is accepted only if it is the `client_finished` stored in the export
//!   (and the genuine one confirms the genuine export), and the real server opens an
//!   imported client's request only if it carries the real id;
//! * every edit of a genuine export either fails to import or round-trips exactly.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{mutate, pair, Mutation};
use sessioncert_proto::session::REKEY_INTERVAL;
use sessioncert_proto::{
    ClientSession, PendingServerSession, RequestBinding, RequestLine, ResponseBinding,
    ServerSession,
};

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Kind {
    Server,
    Pending,
    Client,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw {
        kind: Kind,
        data: Vec<u8>,
        pair: u8,
        seq: u64,
        finished: [u8; 32],
    },
    Edited {
        kind: Kind,
        pair: u8,
        muts: Vec<Mutation>,
        seq: u64,
        finished: [u8; 32],
    },
}

const LINE: RequestBinding<'static> = RequestBinding::Header(RequestLine {
    method: "POST",
    target: "https://api.example",
    path: "/notes",
    query: "",
    content_type: "application/json",
    covered: &[],
});
const OK: ResponseBinding<'static> = ResponseBinding::Header {
    status: 200,
    content_type: "application/json",
};

/// Exercises a server session that imported; `p` is the real pair.
fn use_server(s: &mut ServerSession, p: &sessioncert_fuzz::Pair, seq: u64) {
    let _ = s.highest_seq();
    let _ = format!("{s:?}");
    // A genuine request at seq 0, and one at a fuzzer-chosen seq (epoch edges included).
    for q in [0, seq, seq % (2 * REKEY_INTERVAL), REKEY_INTERVAL] {
        let mut c = p.client_at(q);
        let Ok((rec, exp)) = c.seal_request(&LINE, b"{}") else {
            continue;
        };
        match s.open_request(&LINE, &rec) {
            Ok(o) => {
                assert_eq!(
                    s.id(),
                    p.id,
                    "a session with another id opened a genuine request"
                );
                assert_eq!(s.suite(), p.suite);
                assert_eq!(o.sealer.expectation(), exp);
                // Opens at the real client only if the imported s2c keys are the real
                // ones; either way it must not panic, and what opens is what was sealed.
                if let Ok(resp) = s.seal_response(o.sealer, &OK, b"ok") {
                    if let Ok(pt) = c.open_response(&exp, &OK, &resp) {
                        assert_eq!(pt, b"ok");
                    }
                }
                assert!(s.open_request(&LINE, &rec).is_err(), "replay accepted");
            }
            Err(_) => {}
        }
    }
    // (A response can be sealed only with the sealer an opened request returns; there
    // is no arbitrary handle to try.)
}

fn use_client(c: &mut ClientSession, p: &sessioncert_fuzz::Pair) {
    let _ = (
        c.next_seq(),
        c.is_exhausted(),
        c.version(),
        format!("{c:?}"),
    );
    let mut server = p.server();
    for _ in 0..2 {
        let Ok((rec, exp)) = c.seal_request(&LINE, b"{}") else {
            continue;
        };
        if let Ok(o) = server.open_request(&LINE, &rec) {
            assert_eq!(
                c.id(),
                p.id,
                "the real server opened a request from another id"
            );
            if let Ok(resp) = server.seal_response(o.sealer, &OK, b"ok") {
                let _ = c.open_response(&exp, &OK, &resp);
            }
        }
        let _ = c.open_response(&exp, &OK, &rec);
    }
}

fn check(
    kind: Kind,
    data: &[u8],
    p: &sessioncert_fuzz::Pair,
    seq: u64,
    finished: &[u8; 32],
) -> bool {
    match kind {
        Kind::Server => match ServerSession::import(data) {
            Ok(mut s) => {
                assert_eq!(&s.export()[..], data, "server export not canonical");
                use_server(&mut s, p, seq);
                true
            }
            Err(_) => false,
        },
        Kind::Pending => match PendingServerSession::import(data) {
            Ok(pe) => {
                assert_eq!(&pe.export()[..], data, "pending export not canonical");
                let _ = (pe.id(), pe.suite(), format!("{pe:?}"));
                // The expected confirmation is stored in the export, so whatever is
                // accepted must appear in it (layout-free check).
                let stored = |x: &[u8; 32]| data.windows(32).any(|w| w == x);
                let pe = match pe.confirm(finished) {
                    Ok(mut s) => {
                        assert!(
                            stored(finished),
                            "a key confirmation not in the export was accepted"
                        );
                        use_server(&mut s, p, seq);
                        return true;
                    }
                    Err(failed) => failed.pending,
                };
                match pe.confirm(&p.finished) {
                    Ok(mut s) => {
                        assert!(
                            stored(&p.finished),
                            "a key confirmation not in the export was accepted"
                        );
                        use_server(&mut s, p, seq);
                    }
                    Err(_) => {
                        assert_ne!(data, &p.pending[..], "the genuine confirmation was refused")
                    }
                }
                true
            }
            Err(_) => false,
        },
        Kind::Client => match ClientSession::import(data) {
            Ok(mut c) => {
                assert_eq!(&c.export()[..], data, "client export not canonical");
                use_client(&mut c, p);
                true
            }
            Err(_) => false,
        },
    }
}

fuzz_target!(|input: Input| match input {
    Input::Raw {
        kind,
        data,
        pair: sel,
        seq,
        finished,
    } => {
        check(kind, &data, pair(sel), seq, &finished);
    }
    Input::Edited {
        kind,
        pair: sel,
        muts,
        seq,
        finished,
    } => {
        let p = pair(sel);
        let orig = match kind {
            Kind::Server => &p.server,
            Kind::Pending => &p.pending,
            Kind::Client => &p.client,
        };
        let data = mutate(orig, &muts);
        let ok = check(kind, &data, p, seq, &finished);
        if data == *orig {
            assert!(ok, "a genuine export did not import");
        }
    }
});
