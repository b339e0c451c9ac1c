//! The bodies of the broker's requests, parsed and checked before anything acts on
//! them (the server's routes take them through these functions; the fuzz target
//! `broker_requests` drives them with arbitrary bytes).
//!
//! Every parser refuses unknown fields, sizes out of range and malformed keys with a
//! [`RequestError`] that says what is wrong, and never echoes a secret field.

use crate::password::RegistrationKey;
use crate::user_key::{EncryptedDataKey, KeyShare};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Shortest password (bytes).
pub const MIN_PASSWORD: usize = 8;
/// Longest password (bytes).
pub const MAX_PASSWORD: usize = 1024;
/// Longest e-mail address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest request body a route reads (the largest is a login: about 400 bytes).
pub const MAX_BODY: usize = 8 * 1024;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn err(m: impl Into<String>) -> RequestError {
    RequestError(m.into())
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, RequestError> {
    if body.len() > MAX_BODY {
        return Err(err(format!("a request body has at most {MAX_BODY} bytes")));
    }
    // serde's own messages may quote what was sent (an unknown field's name, a value of
    // the wrong type): say what is wrong and where, never repeat the body.
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let what = if msg.starts_with("missing field") {
            msg.split(" at line")
                .next()
                .unwrap_or("missing field")
                .to_owned()
        } else if msg.starts_with("unknown field") {
            "a field this route does not take".to_owned()
        } else {
            match e.classify() {
                serde_json::error::Category::Syntax => "not JSON".to_owned(),
                serde_json::error::Category::Eof => "cut short".to_owned(),
                serde_json::error::Category::Data => "a value of the wrong type".to_owned(),
                serde_json::error::Category::Io => "unreadable".to_owned(),
            }
        };
        err(format!(
            "malformed request: {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Whether `name` can be a tenant: 1-63 lower-case letters, digits and `-`, not
/// starting with `-` (it also names object-store folders).
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Whether `id` is a broker id: 26 lower-case base32 characters (16 random bytes).
pub fn valid_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// An e-mail address as the broker keeps it (trimmed, lower case), if it looks like
/// one: one `@`, a non-empty local part, a dotless-or-dotted domain of letters, digits,
/// `-` and `.`, no spaces or control characters, at most [`MAX_EMAIL`] bytes. (Delivery
/// checks it again against RFC 5322.)
pub fn normal_email(email: &str) -> Option<String> {
    let e = email.trim().to_ascii_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && e.len() <= MAX_EMAIL
        && !domain.contains('@')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !local.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        });
    ok.then_some(e)
}

/// Checks a file name: 1-255 bytes, no control characters.
pub fn check_file_name(name: &str) -> Result<(), RequestError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(err(
            "a file name has 1 to 255 bytes and no control characters",
        ));
    }
    Ok(())
}

fn check_password(p: &str) -> Result<(), RequestError> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&p.len()) {
        return Err(err(format!(
            "a password has {MIN_PASSWORD} to {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

fn account(tenant: &str, email: &str) -> Result<String, RequestError> {
    if !valid_tenant(tenant) {
        return Err(err("tenant: 1-63 lower-case letters, digits and '-'"));
    }
    normal_email(email).ok_or_else(|| err("email: not an e-mail address"))
}

fn key32(field: &str, b64: &str) -> Result<Zeroizing<[u8; 32]>, RequestError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(b64.trim())
            .map_err(|_| err(format!("{field}: not base64")))?,
    );
    let a: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| err(format!("{field}: not 32 bytes")))?;
    Ok(Zeroizing::new(a))
}

/// `POST /register`.
pub struct Register {
    /// The tenant.
    pub tenant: String,
    /// The address (normalised).
    pub email: String,
    /// The password.
    pub password: Zeroizing<String>,
    /// The registering client's registration key.
    pub registration: RegistrationKey,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterJson {
    tenant: String,
    email: String,
    password: Zeroizing<String>,
    registration: Zeroizing<String>,
}

impl Register {
    /// Parses and checks a body.
    pub fn parse(body: &[u8]) -> Result<Register, RequestError> {
        let j: RegisterJson = json(body)?;
        let email = account(&j.tenant, &j.email)?;
        check_password(&j.password)?;
        let registration = RegistrationKey::from_bytes(*key32("registration", &j.registration)?);
        Ok(Register {
            tenant: j.tenant,
            email,
            password: j.password,
            registration,
        })
    }
}

/// `POST /verify`.
pub struct Verify {
    /// The tenant.
    pub tenant: String,
    /// The address (normalised).
    pub email: String,
    /// The code as typed.
    pub code: Zeroizing<String>,
    /// The key the registration was made with.
    pub registration: RegistrationKey,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyJson {
    tenant: String,
    email: String,
    code: Zeroizing<String>,
    registration: Zeroizing<String>,
}

impl Verify {
    /// Parses and checks a body.
    pub fn parse(body: &[u8]) -> Result<Verify, RequestError> {
        let j: VerifyJson = json(body)?;
        let email = account(&j.tenant, &j.email)?;
        if j.code.len() > 64 {
            return Err(err("code: too long"));
        }
        let registration = RegistrationKey::from_bytes(*key32("registration", &j.registration)?);
        Ok(Verify {
            tenant: j.tenant,
            email,
            code: j.code,
            registration,
        })
    }
}

/// `POST /login`.
pub struct Login {
    /// The tenant.
    pub tenant: String,
    /// The address (normalised).
    pub email: String,
    /// The password.
    pub password: Zeroizing<String>,
    /// The client's key share.
    pub key_share: KeyShare,
    /// The encrypted data key; `None` at the first login.
    pub encrypted_data_key: Option<EncryptedDataKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginJson {
    tenant: String,
    email: String,
    password: Zeroizing<String>,
    key_share: Zeroizing<String>,
    #[serde(default)]
    encrypted_data_key: Option<String>,
}

impl Login {
    /// Parses and checks a body.
    pub fn parse(body: &[u8]) -> Result<Login, RequestError> {
        let j: LoginJson = json(body)?;
        let email = account(&j.tenant, &j.email)?;
        check_password(&j.password)?;
        let share = key32("key_share", &j.key_share)?;
        let encrypted_data_key = match &j.encrypted_data_key {
            None => None,
            Some(e) => {
                let b = STANDARD
                    .decode(e.trim())
                    .map_err(|_| err("encrypted_data_key: not base64"))?;
                Some(
                    EncryptedDataKey::decode(&b)
                        .map_err(|_| err("encrypted_data_key: malformed"))?,
                )
            }
        };
        Ok(Login {
            tenant: j.tenant,
            email,
            password: j.password,
            key_share: KeyShare::from_bytes(*share),
            encrypted_data_key,
        })
    }
}

/// `POST /files/{id}/shares`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateShare {
    /// The recipient as given: an e-mail address or a phone number.
    pub to: String,
    /// Lifetime in seconds, if given.
    pub expires_secs: Option<u64>,
    /// Opens allowed, if given.
    pub max_opens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateShareJson {
    to: String,
    #[serde(default)]
    expires_secs: Option<u64>,
    #[serde(default)]
    max_opens: Option<u32>,
}

impl CreateShare {
    /// Parses and checks a body (ranges are the server's settings, checked by it).
    pub fn parse(body: &[u8]) -> Result<CreateShare, RequestError> {
        let j: CreateShareJson = json(body)?;
        let to = j.to.trim().to_owned();
        if to.is_empty() || to.len() > MAX_EMAIL {
            return Err(err("to: an e-mail address or a phone number"));
        }
        Ok(CreateShare {
            to,
            expires_secs: j.expires_secs,
            max_opens: j.max_opens,
        })
    }
}

/// `POST /shares/{id}/open`.
pub struct OpenShare {
    /// The one-time code as typed.
    pub otp: Zeroizing<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenShareJson {
    otp: Zeroizing<String>,
}

impl OpenShare {
    /// Parses and checks a body.
    pub fn parse(body: &[u8]) -> Result<OpenShare, RequestError> {
        let j: OpenShareJson = json(body)?;
        if j.otp.len() > 128 {
            return Err(err("otp: too long"));
        }
        Ok(OpenShare { otp: j.otp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies() {
        let share = STANDARD.encode([7u8; 32]);
        let ok = format!(
            r#"{{"tenant":"acme","email":" Alice@Example.TEST ","password":"12345678","key_share":"{share}"}}"#
        );
        let l = Login::parse(ok.as_bytes()).unwrap();
        assert_eq!(l.email, "alice@example.test");
        assert_eq!(l.key_share.as_bytes(), &[7u8; 32]);
        assert!(l.encrypted_data_key.is_none());
        for (bad, why) in [
            (ok.replace("acme", "Acme"), "tenant"),
            (ok.replace("12345678", "1234567"), "password"),
            (ok.replace(&share, &STANDARD.encode([7u8; 31])), "key_share"),
            (ok.replace(&share, "!!"), "key_share"),
            (
                ok.replace("}", r#","encrypted_data_key":"AAAA"}"#),
                "encrypted_data_key",
            ),
            (ok.replace("}", r#","admin":true}"#), "does not take"),
            (ok.replace("Alice@Example.TEST", "alice"), "email"),
            ("[]".to_owned(), "malformed"),
        ] {
            let e = Login::parse(bad.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(e.0.contains(why), "{bad}: {e}");
            assert!(!e.0.contains("12345678"), "a secret echoed: {e}");
        }
        let reg = STANDARD.encode([9u8; 32]);
        let ok = format!(
            r#"{{"tenant":"acme","email":"a@b.test","code":"ABCD-EFGH","registration":"{reg}"}}"#
        );
        assert_eq!(
            Verify::parse(ok.as_bytes())
                .unwrap()
                .registration
                .as_bytes(),
            &[9u8; 32]
        );
        for bad in [
            ok.replace(&reg, &STANDARD.encode([9u8; 31])),
            ok.replace(&reg, "%%"),
            ok.replace(&format!(r#","registration":"{reg}""#), ""),
        ] {
            assert!(Verify::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
        let huge = format!(
            r#"{{"tenant":"acme","email":"a@b","password":"{}"}}"#,
            "x".repeat(MAX_BODY)
        );
        let e = Register::parse(huge.as_bytes()).err().unwrap();
        assert!(e.0.contains("at most"), "{e}");
    }

    #[test]
    fn addresses_ids_and_names() {
        assert_eq!(normal_email("A@B.test").as_deref(), Some("a@b.test"));
        for bad in [
            "", "a", "@b", "a@", "a@b@c", "a b@c", "a@-b", "a@b.", "<a>@b", "a@b_c",
        ] {
            assert!(normal_email(bad).is_none(), "{bad}");
        }
        assert!(valid_id("abcdefghijklmnopqrstuvwxyz"));
        assert!(!valid_id("abcdefghijklmnopqrstuvwxy1"));
        assert!(!valid_id("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
        assert!(valid_tenant("acme-2") && !valid_tenant("-acme") && !valid_tenant("ac_me"));
        assert!(check_file_name("report été.pdf").is_ok());
        assert!(check_file_name("a\nb").is_err() && check_file_name("").is_err());
    }
}
