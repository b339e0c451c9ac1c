//! Legacy Session-Cert mode (`sessioncert-legacy`): everything a peer sends to
//! `serve --legacy-session-cert` before and after its key: the `session-cert-id` header,
//! the `symmetricKey` JSON body, CryptoJS passphrase ciphertexts (establish bodies and
//! protected requests, raw or edited from genuine ones), and stored sessions.
//!
//! Invariants:
//! * `LegacyId::parse_header` accepts exactly 1–16 ASCII digits whose value is in
//!   1..=2^53 − 1, and `from_json` agrees with it on strings;
//! * whatever decrypts re-encrypts, under its own salt, to the bytes that came in;
//! * the genuine establish answer establishes; an edited one establishes only if it still
//!   decrypts to the test string; one of the server's own messages never does;
//! * in an established session no salt opens twice, the genuine request opens to its
//!   plaintext exactly once, a response never opens as a request, and what opens is UTF-8;
//! * an imported session exports back to the input bytes.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{mutate, Mutation};
use sessioncert_legacy::cryptojs::{self, Salted};
use sessioncert_legacy::wire::{parse_symmetric_key_body, LegacyId, MAX_ID};
use sessioncert_legacy::{EstablishedLegacy, PendingLegacy};
use std::collections::HashSet;
use zeroize::Zeroizing;

const KEY: &[u8] = b"0123456789abcdefghijklmnopqrstuv";

#[derive(Debug, Arbitrary)]
enum Message {
    /// A fresh genuine request with this plaintext.
    Genuine(Vec<u8>),
    /// The previous genuine request again.
    Again,
    /// The last response sent back.
    Reflect,
    /// The previous genuine request, edited in its raw bytes.
    Edited(Vec<Mutation>),
    /// Any text.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Input {
    Header(Vec<u8>),
    KeyBody(Vec<u8>),
    Text(String),
    Establish { edits: Vec<Mutation>, raw: Option<String> },
    Session(Vec<Message>),
    Import(Vec<u8>),
}

fn edit_text(text: &str, edits: &[Mutation]) -> String {
    let raw = STANDARD.decode(text).expect("own base64");
    STANDARD.encode(mutate(&raw, edits))
}

fn established() -> EstablishedLegacy {
    let (p, body) = PendingLegacy::start(LegacyId::new(1).unwrap(), Zeroizing::new(KEY.to_vec())).unwrap();
    let plain = cryptojs::decrypt(KEY, &body).unwrap();
    let answer = cryptojs::encrypt(KEY, &plain).unwrap();
    p.establish(&answer).expect("the genuine answer establishes")
}

fuzz_target!(|input: Input| match input {
    Input::Header(h) => {
        let expect = !h.is_empty()
            && h.len() <= 16
            && h.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(&h)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|v| (1..=MAX_ID).contains(&v));
        let got = LegacyId::parse_header(&h);
        assert_eq!(got.is_some(), expect, "{h:?}");
        if let Ok(s) = std::str::from_utf8(&h) {
            assert_eq!(LegacyId::from_json(&serde_json::Value::from(s)), got);
        }
        if let Some(id) = got {
            assert_eq!(LegacyId::from_session_id(&id.session_id()), Some(id));
        }
    }
    Input::KeyBody(b) => {
        if let Ok((id, key)) = parse_symmetric_key_body(&b) {
            assert!((1..=MAX_ID).contains(&id.get()));
            let v: serde_json::Value = serde_json::from_slice(&b).expect("accepted non-JSON");
            assert_eq!(v["symmetricKey"].as_str(), Some(key.as_str()));
        }
    }
    Input::Text(t) => {
        let Ok(salted) = Salted::parse(&t) else { return };
        let salt = salted.salt;
        if let Ok(plain) = salted.decrypt(KEY) {
            let again = cryptojs::encrypt_with_salt(KEY, &salt, &plain).unwrap();
            assert_eq!(
                STANDARD.decode(again).unwrap(),
                STANDARD.decode(t.trim()).unwrap(),
                "decrypt → encrypt is not the identity"
            );
        }
    }
    Input::Establish { edits, raw } => {
        let (p, body) = PendingLegacy::start(LegacyId::new(7).unwrap(), Zeroizing::new(KEY.to_vec())).unwrap();
        let test = cryptojs::decrypt(KEY, &body).unwrap();
        let genuine = cryptojs::encrypt(KEY, &test).unwrap();
        let sent = match raw {
            Some(r) => r,
            None => edit_text(&genuine, &edits),
        };
        let outcome = p.establish(&sent);
        if sent == genuine {
            assert!(outcome.is_ok(), "the genuine answer was refused");
        }
        if sent == body {
            assert!(outcome.is_err(), "the server's own message established");
        }
        if outcome.is_ok() {
            let plain = cryptojs::decrypt(KEY, &sent).expect("established on what does not decrypt");
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            let want: serde_json::Value = serde_json::from_slice(&test).unwrap();
            assert_eq!(v["testString"], want["testString"]);
        }
    }
    Input::Session(msgs) => {
        let mut s = established();
        let mut opened: HashSet<[u8; 8]> = HashSet::new();
        let mut responses: Vec<String> = Vec::new();
        let mut last: Option<(String, Vec<u8>)> = None;
        for m in msgs.into_iter().take(64) {
            let (text, genuine) = match m {
                Message::Genuine(p) => {
                    let t = cryptojs::encrypt(KEY, &p).unwrap();
                    last = Some((t.clone(), p.clone()));
                    (t, Some(p))
                }
                Message::Again => match &last {
                    Some((t, _)) => (t.clone(), None),
                    None => continue,
                },
                Message::Reflect => match responses.last() {
                    Some(t) => (t.clone(), None),
                    None => continue,
                },
                Message::Edited(e) => match &last {
                    Some((t, _)) => (edit_text(t, &e), None),
                    None => continue,
                },
                Message::Raw(t) => (t, None),
            };
            let salt = Salted::parse(&text).map(|x| x.salt).ok();
            match s.open_request(&text, 1 << 20) {
                Ok(plain) => {
                    let salt = salt.expect("opened what does not parse");
                    assert!(opened.insert(salt), "a salt opened twice");
                    assert!(!responses.contains(&text), "a response opened as a request");
                    assert!(std::str::from_utf8(&plain).is_ok());
                    if let Some(p) = &genuine {
                        assert_eq!(&plain[..], &p[..]);
                    }
                    responses.push(s.seal_response(&plain).unwrap());
                }
                Err(_) => {
                    if let Some(p) = &genuine {
                        assert!(std::str::from_utf8(p).is_err(), "a genuine UTF-8 request was refused");
                    }
                }
            }
        }
        let back = EstablishedLegacy::import(&s.export()).unwrap();
        assert_eq!(&back.export()[..], &s.export()[..]);
    }
    Input::Import(b) => {
        if let Ok(s) = EstablishedLegacy::import(&b) {
            assert_eq!(&s.export()[..], &b[..], "import → export is not the identity");
        }
    }
});
