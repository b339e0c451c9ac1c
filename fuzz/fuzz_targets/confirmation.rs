//! Key confirmation: `handshake::Confirmation::parse` (the `sessioncert-confirm` header
//! of a session's first requests and the body of `POST …/confirm`, from anyone), then
//! what the server does with it: rebuild the pending session from the ticket
//! (`PendingServerSession::import`; the server crate unseals the ticket first, which
//! this target skips) and check `client_finished`.
//!
//! Invariants:
//! * a confirmation parses iff it is exactly `bytes16(ticket) || client_finished[32]`
//!   with a ticket of 1..=MAX_TICKET_LEN bytes, and re-encodes to the input;
//! * the genuine confirmation confirms; with the genuine ticket, only the genuine
//!   `client_finished` confirms (a confirmation cannot be forged), and whatever confirms
//!   is the value the ticket holds.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{bytes16, mutate, pair, Mutation};
use sessioncert_proto::handshake::{FINISHED_LEN, MAX_TICKET_LEN};
use sessioncert_proto::{Confirmation, PendingServerSession, RequestBinding};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Edited { pair: u8, muts: Vec<Mutation> },
}

fn check_parse(data: &[u8]) -> Option<Confirmation<'_>> {
    let c = Confirmation::parse(data).ok()?;
    assert!(!c.ticket.is_empty() && c.ticket.len() <= MAX_TICKET_LEN);
    let mut enc = Vec::new();
    bytes16(&mut enc, c.ticket);
    enc.extend_from_slice(c.client_finished);
    assert_eq!(enc, data, "confirmation does not re-encode");
    assert_eq!(data.len(), 2 + c.ticket.len() + FINISHED_LEN);
    Some(c)
}

fuzz_target!(|input: Input| match input {
    Input::Raw(data) => {
        let _ = check_parse(&data);
    }
    Input::Edited { pair: sel, muts } => {
        let p = pair(sel);
        let data = mutate(&p.confirmation, &muts);
        let Some(c) = check_parse(&data) else {
            assert_ne!(
                data, p.confirmation,
                "the genuine confirmation does not parse"
            );
            return;
        };
        let Ok(pending) = PendingServerSession::import(c.ticket) else {
            assert_ne!(
                c.ticket,
                &p.pending[..],
                "the genuine ticket does not import"
            );
            return;
        };
        match pending.confirm(c.client_finished) {
            Ok(mut s) => {
                // The ticket is what holds the expected value (in the product it is
                // sealed, so a peer cannot edit it; here it is not).
                assert!(
                    c.ticket
                        .windows(FINISHED_LEN)
                        .any(|w| w == c.client_finished),
                    "accepted a client_finished the ticket does not hold"
                );
                if c.ticket == &p.pending[..] {
                    assert_eq!(
                        c.client_finished, &p.finished,
                        "a forged confirmation was accepted"
                    );
                }
                // Usable with the real client only if the ticket is the real session.
                let mut client = p.client_at(0);
                let (rec, _) = client
                    .seal_request(&RequestBinding::Full, b"x")
                    .expect("seal");
                if s.open_request(&RequestBinding::Full, &rec).is_ok() {
                    assert_eq!(s.id(), p.id);
                }
            }
            Err(_) => assert_ne!(data, p.confirmation, "the genuine confirmation was refused"),
        }
    }
});
