//! Replay window state: `replay::ReplayWindow` (`check`, `mark`, `encode_into`) against a
//! set model, and the window's decoder, which is reachable only through
//! `ServerSession::import` (the window's 136 bytes sit inside a server export).
//!
//! Invariants:
//! * a sequence number is accepted iff it was never accepted, is not `u64::MAX`, and is
//!   within `WINDOW` of the highest accepted so far (RFC 4303 / 6479); `check` never
//!   changes the window and `mark` changes it only when it accepts;
//! * `highest()` is the model's highest; encode → import → export round-trips, and the
//!   imported session reports the same highest sequence number;
//! * any 136 bytes decode as a window (import succeeds, export is identical), and with
//!   such a window a genuine request still opens at most once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{pair, WINDOW_LEN as WINDOW_BYTES};
use sessioncert_proto::replay::{ReplayWindow, WINDOW};
use sessioncert_proto::session::REKEY_INTERVAL;
use sessioncert_proto::{RequestBinding, ServerSession};
use std::collections::HashSet;

#[derive(Debug, Arbitrary)]
enum Seq {
    /// Relative to the model's highest (+/-).
    Near(i16),
    /// Absolute.
    Abs(u64),
    /// Near the top of the u64 range.
    Top(u8),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Mark(Seq),
    Check(Seq),
    /// Encode, import into a server session, export again.
    Persist,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Model(Vec<Op>),
    Decode { window: Vec<u8>, seqs: Vec<u16> },
}

fn server_with_window(bytes: &[u8]) -> Result<ServerSession, sessioncert_proto::ProtocolError> {
    pair(0).server_with_window(bytes)
}

fuzz_target!(|input: Input| match input {
    Input::Model(ops) => {
        let mut w = ReplayWindow::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut top: Option<u64> = None;
        for op in ops.into_iter().take(512) {
            let resolve = |s: &Seq| -> u64 {
                match s {
                    Seq::Near(d) => {
                        (top.unwrap_or(0) as i128 + *d as i128).clamp(0, u64::MAX as i128) as u64
                    }
                    Seq::Abs(v) => *v,
                    Seq::Top(k) => u64::MAX - *k as u64,
                }
            };
            let accept = |s: u64| -> bool {
                s != u64::MAX
                    && !seen.contains(&s)
                    && top.is_none_or(|t| s as u128 + WINDOW as u128 > t as u128)
            };
            match op {
                Op::Mark(s) => {
                    let s = resolve(&s);
                    let want = accept(s);
                    let before = w.clone();
                    assert_eq!(w.mark(s).is_ok(), want, "mark {s}, top {top:?}");
                    if want {
                        seen.insert(s);
                        top = Some(top.map_or(s, |t| t.max(s)));
                    } else {
                        assert_eq!(w, before, "a refused mark changed the window");
                    }
                }
                Op::Check(s) => {
                    let s = resolve(&s);
                    let before = w.clone();
                    assert_eq!(w.check(s).is_ok(), accept(s), "check {s}, top {top:?}");
                    assert_eq!(w, before, "check changed the window");
                }
                Op::Persist => {
                    let mut b = Vec::new();
                    w.encode_into(&mut b);
                    assert_eq!(b.len(), WINDOW_BYTES);
                    let s = server_with_window(&b).expect("an encoded window imports");
                    assert_eq!(s.highest_seq(), top);
                    assert_eq!(pair(0).window_of(&s.export()), &b[..]);
                }
            }
            assert_eq!(w.highest(), top);
            // Keep the model small: numbers below the window can never come back.
            if seen.len() > 4096 {
                let t = top.unwrap();
                seen.retain(|s| *s as u128 + WINDOW as u128 > t as u128);
            }
        }
    }
    Input::Decode { window, seqs } => {
        let p = pair(0);
        let mut bytes = window;
        bytes.resize(WINDOW_BYTES, 0);
        let mut s = server_with_window(&bytes).expect("any window bytes import");
        assert_eq!(p.window_of(&s.export()), &bytes[..]);
        let line = RequestBinding::Full;
        for q in seqs.into_iter().take(32) {
            let q = q as u64 % REKEY_INTERVAL;
            let mut c = p.client_at(q);
            let (rec, _) = c.seal_request(&line, b"x").expect("seal");
            let before = s.highest_seq();
            if s.open_request(&line, &rec).is_ok() {
                assert!(s.open_request(&line, &rec).is_err(), "opened twice");
                let h = s.highest_seq().expect("highest after an open");
                assert!(
                    h >= q && before.is_none_or(|b| h >= b),
                    "highest moved back"
                );
            } else {
                assert_eq!(s.highest_seq(), before);
            }
        }
    }
});
