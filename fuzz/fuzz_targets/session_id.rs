//! Session ids: `SessionId::from_str` (the `sessioncert-id` header of every sealed
//! request, parsed before anything else) and `SessionId::from_slice` (stored rows).
//!
//! Invariants:
//! * text parses iff it is the canonical unpadded base64url of 16 bytes, so
//!   parse → display is the identity on text (no two spellings of one id);
//! * bytes parse iff there are exactly 16 of them; display → parse round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessioncert_proto::{SessionId, SESSION_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for s in [&text[..], text.trim()] {
        if let Ok(id) = s.parse::<SessionId>() {
            assert_eq!(id.to_string(), s, "non-canonical spelling accepted");
            assert_eq!(s.len(), 22);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
    match SessionId::from_slice(data) {
        Some(id) => {
            assert_eq!(data.len(), SESSION_ID_LEN);
            assert_eq!(id.as_bytes(), data);
            let s = id.to_string();
            assert_eq!(s.parse::<SessionId>().expect("display parses"), id);
            let _ = format!("{id:?}");
        }
        None => assert_ne!(data.len(), SESSION_ID_LEN),
    }
    if data.len() >= SESSION_ID_LEN {
        let id = SessionId::from_slice(&data[..SESSION_ID_LEN]).unwrap();
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
    }
});
