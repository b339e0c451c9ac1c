//! Sealed records in header mode: `ServerSession::open_request{,_in_place}` with a
//! request-line binding on arbitrary and edited records, and the client's
//! `open_response{,_in_place}` on the answers, in an established session made by a
//! real handshake. See `sessioncert_fuzz::records` for the model and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::records::{run, Input};

fuzz_target!(|input: Input| run(input, false));
