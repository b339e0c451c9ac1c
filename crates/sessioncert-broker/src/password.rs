//! Account passwords (Argon2id, RFC 9106, as PHC strings with their own salt and
//! parameters) and the verification codes mailed at registration (8 characters,
//! stored as HMAC-SHA-256 under a server key, never in clear).

use crate::{random, BrokerError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Argon2id with 19 MiB, 2 passes, 1 lane (OWASP's first recommended setting): about
/// 25 ms here, so a login flood is bounded by the server's login rate limit, not by
/// this.
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

/// Hashes a password: the PHC string to store.
pub fn hash_password(password: &[u8]) -> Result<String, BrokerError> {
    let salt_bytes = random::<16>()?;
    let salt = SaltString::encode_b64(salt_bytes.as_ref()).map_err(|_| BrokerError::Random)?;
    argon2()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| BrokerError::Random)
}

/// Whether `password` is the one `phc` was made from (any Argon2 variant and parameters
/// the string names; a malformed string never matches).
pub fn verify_password(password: &[u8], phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false)
}

/// A verification code: 8 base32 characters (40 bits), shown as `XXXX-XXXX`. Short on
/// purpose (a person types it from a mail); it is safe because it expires in minutes,
/// allows few tries, and is stored only as an HMAC under a key the database does not
/// hold.
pub struct VerificationCode(Zeroizing<String>);

impl VerificationCode {
    /// A fresh code.
    pub fn generate() -> Result<VerificationCode, BrokerError> {
        let b = random::<5>()?;
        Ok(VerificationCode(Zeroizing::new(
            BASE32_NOPAD.encode(b.as_ref()),
        )))
    }

    /// As mailed: `XXXX-XXXX`.
    pub fn text(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }

    /// What to store: HMAC-SHA-256 under `server_key`, bound to the account.
    pub fn digest(&self, server_key: &[u8; 32], account: &str) -> [u8; 32] {
        digest(&self.0, server_key, account)
    }

    /// Whether `typed` (case, spaces and dashes ignored) is the code `stored` was made
    /// from, for `account` (constant time).
    pub fn check(typed: &str, server_key: &[u8; 32], account: &str, stored: &[u8; 32]) -> bool {
        let clean: Zeroizing<String> = Zeroizing::new(
            typed
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        bool::from(digest(&clean, server_key, account).ct_eq(stored))
    }
}

/// A registration key: 32 random bytes the registering client makes and keeps in its
/// profile until the address is verified. The broker stores only its digest, and a
/// verification code counts only together with the key of the registration it was mailed
/// for: someone who registers a stranger's address cannot have the stranger's code verify
/// their account, and strangers cannot use up the code's tries.
pub struct RegistrationKey(Zeroizing<[u8; 32]>);

impl RegistrationKey {
    /// A fresh key.
    pub fn generate() -> Result<RegistrationKey, crate::BrokerError> {
        Ok(RegistrationKey(crate::random::<32>()?))
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(b: [u8; 32]) -> RegistrationKey {
        RegistrationKey(Zeroizing::new(b))
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// What the broker stores: SHA-256 under a label.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = Sha256::new();
        h.update(b"sessioncert-broker/1 registration ");
        h.update(self.0.as_ref());
        h.finalize().into()
    }

    /// Whether this is the key `stored` was made from (constant time).
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        bool::from(self.digest().ct_eq(stored))
    }
}

fn digest(code: &str, server_key: &[u8; 32], account: &str) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(server_key).expect("HMAC takes any key length");
    m.update(b"sessioncert-broker/1 verification ");
    m.update(&(account.len() as u32).to_be_bytes());
    m.update(account.as_bytes());
    m.update(code.as_bytes());
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_wrong_ones_do_not() {
        let phc = hash_password(b"correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(b"correct horse battery staple", &phc));
        assert!(!verify_password(b"correct horse battery stapler", &phc));
        assert!(!verify_password(b"x", "not a phc string"));
        // Salted: the same password hashes differently.
        assert_ne!(phc, hash_password(b"correct horse battery staple").unwrap());
    }

    #[test]
    fn registration_keys_match_only_their_digest() {
        let k = RegistrationKey::generate().unwrap();
        let stored = k.digest();
        assert!(k.matches(&stored));
        assert!(RegistrationKey::from_bytes(*k.as_bytes()).matches(&stored));
        assert!(!RegistrationKey::generate().unwrap().matches(&stored));
        assert_ne!(&stored, k.as_bytes());
    }

    #[test]
    fn verification_codes_check_as_typed_and_only_for_their_account() {
        let key = [5u8; 32];
        let c = VerificationCode::generate().unwrap();
        let shown = c.text();
        assert_eq!(shown.len(), 9);
        assert_eq!(&shown[4..5], "-");
        let stored = c.digest(&key, "acme/alice@example.test");
        assert!(VerificationCode::check(
            &shown,
            &key,
            "acme/alice@example.test",
            &stored
        ));
        assert!(VerificationCode::check(
            &shown.to_lowercase().replace('-', " "),
            &key,
            "acme/alice@example.test",
            &stored
        ));
        assert!(!VerificationCode::check(
            &shown,
            &key,
            "acme/bob@example.test",
            &stored
        ));
        assert!(!VerificationCode::check(
            &shown,
            &[6u8; 32],
            "acme/alice@example.test",
            &stored
        ));
        assert!(
            !VerificationCode::check("AAAA-AAAA", &key, "acme/alice@example.test", &stored)
                || shown == "AAAA-AAAA"
        );
    }
}
