//! The other small text parsers that take peer or stored input: `ErrorCode::parse` (the
//! `sessioncert-error` header and JSON refusal bodies a client reads), `Pin::from_str`
//! (pins from configuration and session files), `SessionState::from_str` (stored rows)
//! and `Suite::from_name` (stored rows, session files).
//!
//! Invariants: each accepts only its canonical spellings (parse → display gives the
//! input back, modulo the documented trimming / case-insensitivity), and display →
//! parse round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessioncert_proto::{ErrorCode, Pin, SessionState, Suite};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(c) = ErrorCode::parse(&s) {
        assert_eq!(c.as_str(), s);
        assert!(ErrorCode::ALL.contains(&c));
    }
    if let Ok(p) = s.parse::<Pin>() {
        assert_eq!(p.to_string(), s.trim(), "non-canonical pin accepted");
        assert_eq!(p.to_string().parse::<Pin>().unwrap(), p);
    }
    if let Ok(st) = s.parse::<SessionState>() {
        assert_eq!(st.as_str(), s);
    }
    if let Some(suite) = Suite::from_name(&s) {
        assert!(suite.name().eq_ignore_ascii_case(&s));
        assert_eq!(Suite::from_id(suite.id()), Some(suite));
    }
    if data.len() >= 32 {
        let p = Pin(data[..32].try_into().unwrap());
        // Not every 32 bytes is a point; those that are must round-trip.
        if let Ok(q) = p.to_string().parse::<Pin>() {
            assert_eq!(q, p);
        }
    }
});
