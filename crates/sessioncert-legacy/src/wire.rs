//! The original prototype's HTTP surface: paths, the id header, ids and JSON bodies.

use crate::LegacyError;
use sessioncert_proto::SessionId;

/// `GET`: `{"sessionCert":{"id":<integer>,"publicKey":"<PEM>"}}`.
pub const PUBLIC_KEY_PATH: &str = "/sessionCert/publicKey";
/// `POST` `{"id":<id>,"symmetricKey":"<base64 RSA-OAEP>"}`: `201`, the test string
/// encrypted under the client's key.
pub const SYMMETRIC_KEY_PATH: &str = "/sessionCert/symmetricKey";
/// `PATCH` with the id header and the client's re-encryption of the test string.
pub const ESTABLISH_PATH: &str = "/sessionCert/establish";
/// The header naming a legacy session on `establish` and on protected routes.
pub const ID_HEADER: &str = "session-cert-id";
/// What a legacy session's record says in the store's `suite` column.
pub const SUITE: &str = "session-cert-legacy";
/// What a legacy session's record says in the store's `version` column (modern
/// sessions are version 1 and up).
pub const VERSION: u16 = 0;
/// The largest id: JavaScript clients hold it as a `number`, exact up to 2^53 − 1.
pub const MAX_ID: u64 = (1 << 53) - 1;
/// The first eight bytes of the session id a legacy session has in the store.
const SESSION_ID_PREFIX: [u8; 8] = *b"LEGACY\0\0";

/// A legacy session's id: an integer in `1..=2^53 − 1` made by the server (the original
/// counted up from 1, so anyone could name anyone's session). Its top 16 bits are the
/// minute it was issued (Unix minutes mod 2^16), the other 37 are random: a server takes
/// a key only for an id issued in the last few minutes ([`LegacyId::issued_within`]), so
/// the id of a session that ended cannot be taken again by someone else later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegacyId(u64);

/// Random bits of an id.
const RANDOM_BITS: u32 = 37;
/// Minutes an id's issue minute counts, before it wraps (about 45 days).
const MINUTE_MOD: u64 = 1 << (53 - RANDOM_BITS);

fn minute(now_ms: u64) -> u64 {
    (now_ms / 60_000) % MINUTE_MOD
}

impl LegacyId {
    /// A fresh id issued at `now_ms`.
    pub fn issue(now_ms: u64) -> Result<LegacyId, LegacyError> {
        let mut b = [0u8; 8];
        loop {
            getrandom::fill(&mut b).map_err(|_| LegacyError::Random)?;
            let v = (minute(now_ms) << RANDOM_BITS)
                | (u64::from_be_bytes(b) & ((1 << RANDOM_BITS) - 1));
            if v != 0 {
                return Ok(LegacyId(v));
            }
        }
    }

    /// Whether the id was issued at most `minutes` whole minutes before `now_ms`, by its
    /// issue minute (an id from the future, or from longer ago, is not).
    pub fn issued_within(self, now_ms: u64, minutes: u64) -> bool {
        let issued = self.0 >> RANDOM_BITS;
        (minute(now_ms) + MINUTE_MOD - issued) % MINUTE_MOD <= minutes
    }

    /// The id if `v` is in range.
    pub fn new(v: u64) -> Option<LegacyId> {
        (1..=MAX_ID).contains(&v).then_some(LegacyId(v))
    }

    /// The integer.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses the `session-cert-id` header: decimal digits only.
    pub fn parse_header(v: &[u8]) -> Option<LegacyId> {
        if v.is_empty() || v.len() > 16 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(v)
            .ok()?
            .parse()
            .ok()
            .and_then(LegacyId::new)
    }

    /// The id in a JSON body: a number, or a string of digits (the original looked it
    /// up either way).
    pub fn from_json(v: &serde_json::Value) -> Option<LegacyId> {
        match v {
            serde_json::Value::Number(n) => n.as_u64().and_then(LegacyId::new),
            serde_json::Value::String(s) => LegacyId::parse_header(s.as_bytes()),
            _ => None,
        }
    }

    /// The session id the session has in the store (and in the server's table).
    pub fn session_id(self) -> SessionId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&SESSION_ID_PREFIX);
        b[8..].copy_from_slice(&self.0.to_be_bytes());
        SessionId(b)
    }

    /// The legacy id of a store session id, if it is one.
    pub fn from_session_id(id: &SessionId) -> Option<LegacyId> {
        let b = id.as_bytes();
        if b[..8] != SESSION_ID_PREFIX {
            return None;
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[8..]);
        LegacyId::new(u64::from_be_bytes(n))
    }
}

impl std::fmt::Display for LegacyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The body of `GET /sessionCert/publicKey`.
pub fn public_key_body(id: LegacyId, public_pem: &str) -> String {
    serde_json::json!({ "sessionCert": { "id": id.get(), "publicKey": public_pem } }).to_string()
}

/// Why a `symmetricKey` body was refused before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected a JSON object {{\"id\": <session id>, \"symmetricKey\": \"<base64>\"}}")]
pub struct BadKeyBody;

/// Parses the body of `POST /sessionCert/symmetricKey`: the id and the base64 text.
pub fn parse_symmetric_key_body(body: &[u8]) -> Result<(LegacyId, String), BadKeyBody> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| BadKeyBody)?;
    let id = v
        .get("id")
        .and_then(LegacyId::from_json)
        .ok_or(BadKeyBody)?;
    let key = v
        .get("symmetricKey")
        .and_then(|k| k.as_str())
        .ok_or(BadKeyBody)?;
    Ok((id, key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_in_range_and_map_to_store_ids_and_back() {
        for _ in 0..100 {
            let id = LegacyId::issue(1_700_000_000_000).unwrap();
            assert!((1..=MAX_ID).contains(&id.get()));
            assert_eq!(LegacyId::from_session_id(&id.session_id()), Some(id));
        }
        assert_eq!(LegacyId::new(0), None);
        assert_eq!(LegacyId::new(MAX_ID + 1), None);
        assert_eq!(LegacyId::from_session_id(&SessionId([7; 16])), None);
    }

    #[test]
    fn ids_carry_their_issue_minute() {
        let t = 1_700_000_000_000u64;
        let id = LegacyId::issue(t).unwrap();
        assert!(id.issued_within(t, 0));
        assert!(id.issued_within(t + 59_999 - t % 60_000, 0));
        assert!(id.issued_within(t + 10 * 60_000, 10));
        assert!(!id.issued_within(t + 11 * 60_000, 10));
        assert!(!id.issued_within(t - 60_000, 10), "from the future");
        // Across the wrap of the minute counter.
        let wrap = (MINUTE_MOD - 1) * 60_000;
        let late = LegacyId::issue(wrap).unwrap();
        assert!(late.issued_within(wrap + 2 * 60_000, 5));
        // Ids issued in one minute differ.
        let ids: std::collections::HashSet<u64> = (0..1000)
            .map(|_| LegacyId::issue(t).unwrap().get())
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn header_takes_digits_only() {
        assert_eq!(LegacyId::parse_header(b"42").map(LegacyId::get), Some(42));
        assert_eq!(
            LegacyId::parse_header(b"9007199254740991").map(LegacyId::get),
            Some(MAX_ID)
        );
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"+1",
            b"12abc",
            b" 1",
            b"9007199254740992",
            b"1e3",
        ] {
            assert_eq!(LegacyId::parse_header(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_body_parses_as_the_original_client_sends_it() {
        let (id, k) = parse_symmetric_key_body(br#"{"id":17,"symmetricKey":"QUJD"}"#).unwrap();
        assert_eq!((id.get(), k.as_str()), (17, "QUJD"));
        let (id, _) = parse_symmetric_key_body(br#"{"id":"17","symmetricKey":"QUJD"}"#).unwrap();
        assert_eq!(id.get(), 17);
        for bad in [
            &b""[..],
            b"[]",
            br#"{"id":17}"#,
            br#"{"id":-1,"symmetricKey":"QUJD"}"#,
            br#"{"id":1.5,"symmetricKey":"QUJD"}"#,
            br#"{"id":17,"symmetricKey":5}"#,
        ] {
            assert!(parse_symmetric_key_body(bad).is_err());
        }
    }

    #[test]
    fn public_key_body_is_the_originals_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&public_key_body(LegacyId::new(5).unwrap(), "PEM\n")).unwrap();
        assert_eq!(v["sessionCert"]["id"], 5);
        assert_eq!(v["sessionCert"]["publicKey"], "PEM\n");
    }
}
