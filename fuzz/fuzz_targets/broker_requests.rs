//! The key broker's request bodies (`sessioncert-broker::requests`): what every
//! `/broker/v1` route parses before it acts, fed arbitrary bytes and edited genuine
//! bodies.
//!
//! Invariants: nothing panics; whatever parses is in range (a valid tenant, a lower-case
//! address of at most 254 bytes, a password of 8-1024 bytes, a 32-byte key share, a
//! well-formed encrypted data key) and parses again to the same values from a body
//! rebuilt from them; a refusal never repeats the password it was given.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sessioncert_broker::requests::{
    check_file_name, normal_email, valid_id, valid_tenant, CreateShare, Login, OpenShare,
    Register, Verify, MAX_EMAIL, MAX_PASSWORD, MIN_PASSWORD,
};
use sessioncert_fuzz::{mutate, Mutation};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(u8, Vec<u8>),
    Login { tenant: String, email: String, password: String, share: Vec<u8>, edk: Option<Vec<u8>>, edits: Vec<Mutation> },
    Text(String),
}

fn check_login(body: &[u8], password: Option<&str>) {
    match Login::parse(body) {
        Ok(l) => {
            assert!(valid_tenant(&l.tenant));
            assert!(l.email.len() <= MAX_EMAIL && l.email == l.email.to_ascii_lowercase());
            assert!((MIN_PASSWORD..=MAX_PASSWORD).contains(&l.password.len()));
            let rebuilt = serde_json::json!({
                "tenant": l.tenant, "email": l.email, "password": *l.password,
                "key_share": STANDARD.encode(l.key_share.as_bytes()),
                "encrypted_data_key": l.encrypted_data_key.as_ref().map(|e| STANDARD.encode(e.encode())),
            });
            let again = Login::parse(rebuilt.to_string().as_bytes()).expect("a rebuilt body parses");
            assert_eq!(again.email, l.email);
            assert_eq!(again.key_share.as_bytes(), l.key_share.as_bytes());
            assert_eq!(again.encrypted_data_key, l.encrypted_data_key);
        }
        Err(e) => {
            if let Some(p) = password {
                assert!(!e.0.contains(p), "a refusal repeated the password");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(route, bytes) => match route % 6 {
            0 => {
                if let Ok(r) = Register::parse(&bytes) {
                    assert!(valid_tenant(&r.tenant) && normal_email(&r.email).as_deref() == Some(r.email.as_str()));
                }
            }
            1 => {
                if let Ok(v) = Verify::parse(&bytes) {
                    assert!(v.code.len() <= 64);
                }
            }
            2 => check_login(&bytes, None),
            3 => {
                if let Ok(s) = CreateShare::parse(&bytes) {
                    assert!(!s.to.is_empty() && s.to.len() <= MAX_EMAIL && s.to.trim() == s.to);
                }
            }
            4 => {
                if let Ok(o) = OpenShare::parse(&bytes) {
                    assert!(o.otp.len() <= 128);
                }
            }
            _ => {
                let s = String::from_utf8_lossy(&bytes);
                let _ = check_file_name(&s);
                let _ = valid_id(&s);
                if let Some(e) = normal_email(&s) {
                    assert_eq!(normal_email(&e).as_deref(), Some(e.as_str()), "normalising is idempotent");
                }
            }
        },
        Input::Login { tenant, email, password, share, edk, edits } => {
            // A password no fixed message can contain ('#' and upper-case "PW" appear
            // in none), so finding it in a refusal means the refusal echoed it.
            let password = format!("PW#{}#", password.escape_default());
            let body = serde_json::json!({
                "tenant": tenant, "email": email, "password": password,
                "key_share": STANDARD.encode(&share),
                "encrypted_data_key": edk.map(|e| STANDARD.encode(e)),
            })
            .to_string();
            let edited = mutate(body.as_bytes(), &edits);
            check_login(&edited, Some(&password));
        }
        Input::Text(s) => {
            if valid_id(&s) {
                assert_eq!(s.len(), 26);
            }
            if valid_tenant(&s) {
                assert!(!s.is_empty() && s.len() <= 63);
            }
        }
    }
});
