//! A legacy session's two states, as types: [`PendingLegacy`] (key received, test string
//! sent) becomes [`EstablishedLegacy`] only through [`PendingLegacy::establish`].
//!
//! Both remember every salt seen in the session — the server's own and the client's —
//! and refuse a message whose salt was seen, before decrypting it. CryptoJS draws a fresh
//! random salt for every message, so an honest client never repeats one; a replayed
//! request, a response reflected back as a request, or a tampered copy of either (the
//! attacker cannot pick a new salt without the key) is refused without being opened,
//! which also leaves a CBC padding oracle nothing to ask. That memory is bounded by the
//! number of messages a session may carry.

use crate::cryptojs::{self, Salted, SALT_LEN};
use crate::wire::LegacyId;
use crate::LegacyError;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Establish attempts a pending session allows.
pub const ESTABLISH_ATTEMPTS: u8 = 3;
/// Length of the test string (as the original's).
pub const TEST_STRING_LEN: usize = 32;

/// Salts seen in a session, kept sorted (8 bytes each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Salts(Vec<u64>);

impl Salts {
    /// Records `salt`; `false` if it was there.
    fn insert(&mut self, salt: &[u8; SALT_LEN]) -> bool {
        let v = u64::from_be_bytes(*salt);
        match self.0.binary_search(&v) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, v);
                true
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A fresh salt this session has not seen, recorded.
fn fresh_salt(seen: &mut Salts) -> Result<[u8; SALT_LEN], LegacyError> {
    loop {
        let salt = cryptojs::random_salt()?;
        if seen.insert(&salt) {
            return Ok(salt);
        }
    }
}

/// A test string: 32 characters drawn uniformly by the system's CSPRNG from the
/// printable ASCII range `!`..=`~` (the original used `Math.random`).
fn test_string() -> Result<Zeroizing<String>, LegacyError> {
    const FIRST: u8 = b'!';
    const COUNT: u8 = b'~' - b'!' + 1; // 94
    let mut s = Zeroizing::new(String::with_capacity(TEST_STRING_LEN));
    let mut buf = [0u8; 64];
    while s.len() < TEST_STRING_LEN {
        getrandom::fill(&mut buf).map_err(|_| LegacyError::Random)?;
        // Rejection sampling: 188 = 2 × 94, so bytes below it map uniformly.
        for b in buf.iter().filter(|b| **b < 2 * COUNT) {
            if s.len() < TEST_STRING_LEN {
                s.push(char::from(FIRST + b % COUNT));
            }
        }
    }
    Ok(s)
}

/// Key received, test string sent, waiting for the client's re-encryption of it.
pub struct PendingLegacy {
    id: LegacyId,
    key: Zeroizing<Vec<u8>>,
    test_string: Zeroizing<String>,
    attempts_left: u8,
    seen: Salts,
}

impl std::fmt::Debug for PendingLegacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLegacy")
            .field("id", &self.id)
            .field("attempts_left", &self.attempts_left)
            .finish_non_exhaustive()
    }
}

/// A refused establish: why, and the pending session if attempts are left.
#[derive(Debug)]
pub struct EstablishRefused {
    /// Why (for logs; the peer is told nothing more than "refused").
    pub error: LegacyError,
    /// The session, to put back, while it has attempts left.
    pub pending: Option<PendingLegacy>,
}

impl PendingLegacy {
    /// Starts a session with the client's key (from [`crate::LegacyRsaKey::open_key`]).
    /// Returns it and the body of the `201` answer: the CryptoJS encryption of
    /// `{"testString":"…"}` under the key.
    pub fn start(
        id: LegacyId,
        key: Zeroizing<Vec<u8>>,
    ) -> Result<(PendingLegacy, String), LegacyError> {
        let test_string = test_string()?;
        let mut seen = Salts::default();
        let salt = fresh_salt(&mut seen)?;
        let body =
            Zeroizing::new(serde_json::json!({ "testString": test_string.as_str() }).to_string());
        let text = cryptojs::encrypt_with_salt(&key, &salt, body.as_bytes())?;
        Ok((
            PendingLegacy {
                id,
                key,
                test_string,
                attempts_left: ESTABLISH_ATTEMPTS,
                seen,
            },
            text,
        ))
    }

    /// The session's id.
    pub fn id(&self) -> LegacyId {
        self.id
    }

    /// Checks the `PATCH /sessionCert/establish` body: the client's CryptoJS encryption
    /// of a JSON object whose `testString` is the one sent. Every failure counts against
    /// the attempts; the last one drops the session.
    pub fn establish(mut self, body: &str) -> Result<EstablishedLegacy, EstablishRefused> {
        match self.check(body) {
            Ok(()) => Ok(EstablishedLegacy {
                id: self.id,
                key: std::mem::take(&mut self.key),
                seen: std::mem::take(&mut self.seen),
            }),
            Err(error) => {
                self.attempts_left = self.attempts_left.saturating_sub(1);
                let pending = (self.attempts_left > 0).then_some(self);
                Err(EstablishRefused { error, pending })
            }
        }
    }

    fn check(&mut self, body: &str) -> Result<(), LegacyError> {
        let salted = Salted::parse(body)?;
        if !self.seen.insert(&salted.salt) {
            return Err(LegacyError::Replayed);
        }
        let plain = salted.decrypt(&self.key)?;
        let v: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|_| LegacyError::Decrypt)?;
        let got = v
            .get("testString")
            .and_then(|t| t.as_str())
            .ok_or(LegacyError::Decrypt)?;
        if bool::from(got.as_bytes().ct_eq(self.test_string.as_bytes())) {
            Ok(())
        } else {
            Err(LegacyError::TestString)
        }
    }
}

/// An established session: opens requests, seals responses.
pub struct EstablishedLegacy {
    id: LegacyId,
    key: Zeroizing<Vec<u8>>,
    seen: Salts,
}

impl std::fmt::Debug for EstablishedLegacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstablishedLegacy")
            .field("id", &self.id)
            .field("salts_seen", &self.seen.len())
            .finish_non_exhaustive()
    }
}

/// What [`EstablishedLegacy::export`] starts with.
const EXPORT_MAGIC: &[u8; 4] = b"SCL1";

impl EstablishedLegacy {
    /// The session's id.
    pub fn id(&self) -> LegacyId {
        self.id
    }

    /// Messages (requests and responses, and the handshake's) seen so far.
    pub fn messages(&self) -> usize {
        self.seen.len()
    }

    /// Opens a protected request's body (CryptoJS text) to its plaintext, which must be
    /// UTF-8 (as the original required). The salt is recorded before decryption, so a
    /// message is opened at most once whatever its fate. `max_messages` bounds the salts
    /// kept: a request that would leave no room for its response is refused with
    /// [`LegacyError::RequestsExhausted`] (the session has served its share).
    pub fn open_request(
        &mut self,
        body: &str,
        max_messages: usize,
    ) -> Result<Zeroizing<Vec<u8>>, LegacyError> {
        let salted = Salted::parse(body)?;
        if self.seen.len() + 2 > max_messages {
            return Err(LegacyError::RequestsExhausted);
        }
        if !self.seen.insert(&salted.salt) {
            return Err(LegacyError::Replayed);
        }
        let plain = salted.decrypt(&self.key)?;
        if std::str::from_utf8(&plain).is_err() {
            return Err(LegacyError::Decrypt);
        }
        Ok(plain)
    }

    /// Admits a request that carries no message (a bodiless `GET` or `HEAD`; the caller
    /// decides which): nothing shows it comes from the key's holder, so only a request
    /// that changes nothing may be admitted this way — its answer is sealed, so only the
    /// holder reads it. Counts against `max_messages` like any request (room for its
    /// response).
    pub fn open_bodiless(&mut self, max_messages: usize) -> Result<(), LegacyError> {
        if self.seen.len() + 1 > max_messages {
            return Err(LegacyError::RequestsExhausted);
        }
        Ok(())
    }

    /// Seals a response body: CryptoJS text under a fresh salt, which is recorded so the
    /// response cannot be sent back as a request.
    pub fn seal_response(&mut self, body: &[u8]) -> Result<String, LegacyError> {
        let salt = fresh_salt(&mut self.seen)?;
        cryptojs::encrypt_with_salt(&self.key, &salt, body)
    }

    /// The session's secrets (key and salts seen) for the store; seal them first.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            4 + 8 + 2 + self.key.len() + 4 + 8 * self.seen.len(),
        ));
        out.extend_from_slice(EXPORT_MAGIC);
        out.extend_from_slice(&self.id.get().to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&(self.seen.len() as u32).to_be_bytes());
        for s in &self.seen.0 {
            out.extend_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// Reads back [`EstablishedLegacy::export`].
    pub fn import(b: &[u8]) -> Result<EstablishedLegacy, LegacyError> {
        let mut r = Reader(b);
        if r.take(4)? != EXPORT_MAGIC {
            return Err(LegacyError::Stored);
        }
        let id = LegacyId::new(r.u64()?).ok_or(LegacyError::Stored)?;
        let key_len = u16::from_be_bytes(r.array()?) as usize;
        let key = Zeroizing::new(r.take(key_len)?.to_vec());
        let n = u32::from_be_bytes(r.array()?) as usize;
        if r.0.len() != n.checked_mul(8).ok_or(LegacyError::Stored)? {
            return Err(LegacyError::Stored);
        }
        let mut seen = Vec::with_capacity(n);
        for _ in 0..n {
            seen.push(r.u64()?);
        }
        if key.is_empty() || !seen.windows(2).all(|w| w[0] < w[1]) {
            return Err(LegacyError::Stored);
        }
        Ok(EstablishedLegacy {
            id,
            key,
            seen: Salts(seen),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LegacyError> {
        if self.0.len() < n {
            return Err(LegacyError::Stored);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LegacyError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, LegacyError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cryptojs::{decrypt, encrypt};

    const KEY: &[u8] = b"0123456789abcdefghijklmnopqrstuv";

    fn pending() -> (PendingLegacy, String) {
        PendingLegacy::start(LegacyId::new(9).unwrap(), Zeroizing::new(KEY.to_vec())).unwrap()
    }

    /// What the original client does with the 201 body: decrypt, parse, re-encrypt.
    fn client_answer(body: &str) -> String {
        let plain = decrypt(KEY, body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        encrypt(KEY, v.to_string().as_bytes()).unwrap()
    }

    fn established() -> EstablishedLegacy {
        let (p, body) = pending();
        p.establish(&client_answer(&body)).unwrap()
    }

    #[test]
    fn test_strings_are_32_printable_characters_and_differ() {
        let a = test_string().unwrap();
        let b = test_string().unwrap();
        assert_eq!(a.len(), TEST_STRING_LEN);
        assert!(a.bytes().all(|c| (b'!'..=b'~').contains(&c)));
        assert_ne!(*a, *b);
    }

    #[test]
    fn the_original_clients_answer_establishes() {
        let (p, body) = pending();
        let plain = decrypt(KEY, &body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["testString"].as_str().unwrap().len(), TEST_STRING_LEN);
        let s = p.establish(&client_answer(&body)).unwrap();
        assert_eq!(s.id().get(), 9);
    }

    #[test]
    fn a_wrong_test_string_uses_an_attempt_and_the_last_drops_the_session() {
        let (mut p, body) = pending();
        for left in (0..ESTABLISH_ATTEMPTS).rev() {
            let wrong = encrypt(KEY, br#"{"testString":"nope"}"#).unwrap();
            let r = p.establish(&wrong).unwrap_err();
            assert_eq!(r.error, LegacyError::TestString);
            match r.pending {
                Some(next) => {
                    assert!(left > 0);
                    p = next;
                }
                None => {
                    assert_eq!(left, 0);
                    return;
                }
            }
        }
        let _ = body;
        panic!("attempts never ran out");
    }

    #[test]
    fn the_servers_own_message_sent_back_is_refused_unopened() {
        let (p, body) = pending();
        let r = p.establish(&body).unwrap_err();
        assert_eq!(r.error, LegacyError::Replayed);
    }

    #[test]
    fn padding_json_and_utf8_failures_are_one_error() {
        let (p, _) = pending();
        let other_key = encrypt(
            b"another key of thirty-two bytes!",
            br#"{"testString":"x"}"#,
        )
        .unwrap();
        let not_json = encrypt(KEY, b"not json").unwrap();
        let r = p.establish(&other_key).unwrap_err();
        assert_eq!(r.error, LegacyError::Decrypt);
        let r = r.pending.unwrap().establish(&not_json).unwrap_err();
        assert_eq!(r.error, LegacyError::Decrypt);
    }

    #[test]
    fn requests_open_once_and_responses_cannot_come_back_as_requests() {
        let mut s = established();
        let req = encrypt(KEY, b"hello").unwrap();
        assert_eq!(&s.open_request(&req, 100).unwrap()[..], b"hello");
        assert_eq!(
            s.open_request(&req, 100).unwrap_err(),
            LegacyError::Replayed
        );
        let resp = s.seal_response(br#"{"status":true}"#).unwrap();
        assert_eq!(&decrypt(KEY, &resp).unwrap()[..], br#"{"status":true}"#);
        assert_eq!(
            s.open_request(&resp, 100).unwrap_err(),
            LegacyError::Replayed
        );
    }

    #[test]
    fn a_tampered_request_burns_its_salt() {
        let mut s = established();
        let req = encrypt(KEY, b"0123456789abcdef0123456789abcdef").unwrap();
        let mut raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &req).unwrap();
        let n = raw.len();
        raw[n - 20] ^= 1; // the block before the last: the padding check may pass
        let tampered = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
        let _ = s.open_request(&tampered, 100);
        // The genuine message, arriving after its tampered copy, is refused: one query
        // per salt, so a padding oracle learns nothing.
        assert_eq!(
            s.open_request(&req, 100).unwrap_err(),
            LegacyError::Replayed
        );
    }

    #[test]
    fn non_utf8_plaintext_is_refused() {
        let mut s = established();
        let req = encrypt(KEY, &[0xff, 0xfe]).unwrap();
        assert_eq!(s.open_request(&req, 100).unwrap_err(), LegacyError::Decrypt);
    }

    #[test]
    fn a_session_carries_a_bounded_number_of_messages() {
        let mut s = established();
        let start = s.messages();
        let max = start + 4;
        for _ in 0..2 {
            s.open_request(&encrypt(KEY, b"x").unwrap(), max).unwrap();
            s.seal_response(b"y").unwrap();
        }
        assert_eq!(s.messages(), max);
        assert_eq!(
            s.open_request(&encrypt(KEY, b"x").unwrap(), max)
                .unwrap_err(),
            LegacyError::RequestsExhausted
        );
    }

    #[test]
    fn export_round_trips_and_keeps_refusing_replays() {
        let mut s = established();
        let req = encrypt(KEY, b"once").unwrap();
        s.open_request(&req, 100).unwrap();
        let mut back = EstablishedLegacy::import(&s.export()).unwrap();
        assert_eq!(back.id(), s.id());
        assert_eq!(
            back.open_request(&req, 100).unwrap_err(),
            LegacyError::Replayed
        );
        let fresh = encrypt(KEY, b"twice").unwrap();
        assert_eq!(&back.open_request(&fresh, 100).unwrap()[..], b"twice");
        let e = s.export();
        for cut in 0..e.len() {
            assert!(
                EstablishedLegacy::import(&e[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = e.to_vec();
        longer.push(0);
        assert!(EstablishedLegacy::import(&longer).is_err());
    }
}
