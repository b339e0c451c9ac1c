//! One-time codes for shares.
//!
//! A code is 16 random bytes (128 bits) written as 26 base32 characters. The shared copy
//! of a file is sealed under a key derived from the code (HKDF-SHA-256, bound to the
//! share id); the broker keeps only a verifier derived the same way with another label,
//! so a stolen store is not enough to open a share: with 128 bits of entropy, guessing
//! the code from the verifier is out of reach (the choice the issue asks to document:
//! the entropy, not a KMS secret, protects a share). Wrong codes are limited by the
//! server; comparison is in constant time.

use crate::{random, BrokerError};
use data_encoding::BASE32_NOPAD;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Bytes of randomness in a code.
pub const CODE_BYTES: usize = 16;

/// A one-time code, as mailed.
pub struct OneTimeCode(Zeroizing<[u8; CODE_BYTES]>);

impl OneTimeCode {
    /// A fresh code.
    pub fn generate() -> Result<OneTimeCode, BrokerError> {
        Ok(OneTimeCode(random::<CODE_BYTES>()?))
    }

    /// The code as mailed: 26 characters, `A`–`Z` and `2`–`7`.
    pub fn text(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(self.0.as_ref()))
    }

    /// Reads a code as a person types it: case, spaces and dashes do not matter.
    pub fn parse(text: &str) -> Result<OneTimeCode, BrokerError> {
        let clean: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        let bytes = Zeroizing::new(
            BASE32_NOPAD
                .decode(clean.as_bytes())
                .map_err(|_| BrokerError::WrongCode)?,
        );
        let arr: [u8; CODE_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| BrokerError::WrongCode)?;
        Ok(OneTimeCode(Zeroizing::new(arr)))
    }

    fn derive(&self, share_id: &[u8], label: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(b"sessioncert-broker/1 share"), self.0.as_ref());
        let mut info = label.to_vec();
        info.extend_from_slice(share_id);
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(&info, out.as_mut())
            .expect("32 bytes is a valid HKDF length");
        out
    }

    /// The key the shared copy is sealed under.
    pub fn share_key(&self, share_id: &[u8]) -> Zeroizing<[u8; 32]> {
        self.derive(share_id, b"key ")
    }

    /// What the broker stores to check a code.
    pub fn verifier(&self, share_id: &[u8]) -> [u8; 32] {
        *self.derive(share_id, b"verifier ")
    }

    /// Whether this is the code `verifier` was made from (constant time).
    pub fn matches(&self, share_id: &[u8], verifier: &[u8; 32]) -> bool {
        bool::from(self.verifier(share_id).ct_eq(verifier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_crypt::{open_all, seal_all};

    #[test]
    fn a_code_opens_its_share_and_nothing_else() {
        let code = OneTimeCode::generate().unwrap();
        let text = code.text();
        assert_eq!(text.len(), 26);
        let v = code.verifier(b"share-1");
        let sealed = seal_all(&code.share_key(b"share-1"), b"the file").unwrap();
        // Typed back by a person.
        let typed = format!("{}-{} ", &text[..13].to_lowercase(), &text[13..]);
        let back = OneTimeCode::parse(&typed).unwrap();
        assert!(back.matches(b"share-1", &v));
        assert_eq!(
            open_all(&back.share_key(b"share-1"), &sealed).unwrap(),
            b"the file"
        );
        // Another share id, another code, garbage.
        assert!(!back.matches(b"share-2", &v));
        let other = OneTimeCode::generate().unwrap();
        assert!(!other.matches(b"share-1", &v));
        assert!(open_all(&other.share_key(b"share-1"), &sealed).is_err());
        for bad in [
            "",
            "ABC",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &format!("{}A", &*text),
        ] {
            assert!(OneTimeCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_verifier_is_not_the_key() {
        let code = OneTimeCode::generate().unwrap();
        assert_ne!(code.verifier(b"s"), *code.share_key(b"s"));
    }
}
