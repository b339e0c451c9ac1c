//! The ciphertext format of CryptoJS's `AES.encrypt(text, passphrase)`: OpenSSL's
//! `enc` format with a passphrase.
//!
//! `base64("Salted__" ‖ salt[8] ‖ AES-256-CBC(key, iv, PKCS#7(plaintext)))`, where
//! `key ‖ iv = EVP_BytesToKey(MD5, count 1, passphrase, salt)`: `D_1 = MD5(passphrase ‖
//! salt)`, `D_i = MD5(D_{i-1} ‖ passphrase ‖ salt)`, concatenated to 48 bytes. The
//! passphrase is the UTF-8 of the key string. This is the format the field clients
//! speak; it has no integrity check and its KDF is weak, which is why it exists here only
//! for them (see the crate docs for what servers add around it).

use crate::LegacyError;
use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use md5::{Digest as _, Md5};
use zeroize::{Zeroize as _, Zeroizing};

/// The 8 bytes every such ciphertext starts with.
pub const MAGIC: &[u8; 8] = b"Salted__";
/// Salt length.
pub const SALT_LEN: usize = 8;
const BLOCK: usize = 16;
const KEY_LEN: usize = 32;

/// A parsed ciphertext: its salt and its AES blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salted {
    /// The salt (also what a session remembers to refuse replays).
    pub salt: [u8; SALT_LEN],
    /// Whole AES blocks, at least one.
    pub blocks: Vec<u8>,
}

impl Salted {
    /// Parses the base64 text. Refuses anything but `"Salted__"`, a salt and at least one
    /// whole block (CryptoJS's unsalted form is never produced by `AES.encrypt` with a
    /// passphrase).
    pub fn parse(text: &str) -> Result<Salted, LegacyError> {
        let raw = STANDARD
            .decode(text.trim().as_bytes())
            .map_err(|_| LegacyError::Format)?;
        if raw.len() < MAGIC.len() + SALT_LEN + BLOCK
            || &raw[..MAGIC.len()] != MAGIC
            || !(raw.len() - MAGIC.len() - SALT_LEN).is_multiple_of(BLOCK)
        {
            return Err(LegacyError::Format);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&raw[MAGIC.len()..MAGIC.len() + SALT_LEN]);
        Ok(Salted {
            salt,
            blocks: raw[MAGIC.len() + SALT_LEN..].to_vec(),
        })
    }

    /// Decrypts under `passphrase`. A bad padding is [`LegacyError::Decrypt`], like
    /// every other failure after this point.
    pub fn decrypt(mut self, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, LegacyError> {
        let (key, iv) = evp_bytes_to_key(passphrase, &self.salt);
        let n = cbc::Decryptor::<Aes256>::new(key.as_ref().into(), iv.as_ref().into())
            .decrypt_padded_mut::<Pkcs7>(&mut self.blocks)
            .map_err(|_| LegacyError::Decrypt)?
            .len();
        self.blocks.truncate(n);
        Ok(Zeroizing::new(std::mem::take(&mut self.blocks)))
    }
}

impl Drop for Salted {
    fn drop(&mut self) {
        self.blocks.zeroize();
    }
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration, for AES-256-CBC: the key and
/// the IV.
pub fn evp_bytes_to_key(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
) -> (Zeroizing<[u8; KEY_LEN]>, Zeroizing<[u8; BLOCK]>) {
    let mut out = Zeroizing::new([0u8; KEY_LEN + BLOCK]);
    let mut prev: Option<Zeroizing<[u8; 16]>> = None;
    for chunk in out.chunks_mut(16) {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p.as_ref());
        }
        h.update(passphrase);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        chunk.copy_from_slice(&d);
        prev = Some(Zeroizing::new(d));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut iv = Zeroizing::new([0u8; BLOCK]);
    key.copy_from_slice(&out[..KEY_LEN]);
    iv.copy_from_slice(&out[KEY_LEN..]);
    (key, iv)
}

/// A fresh random salt.
pub fn random_salt() -> Result<[u8; SALT_LEN], LegacyError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| LegacyError::Random)?;
    Ok(salt)
}

/// `CryptoJS.AES.encrypt(plaintext, passphrase).toString()` with the given salt.
pub fn encrypt_with_salt(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    plaintext: &[u8],
) -> Result<String, LegacyError> {
    let (key, iv) = evp_bytes_to_key(passphrase, salt);
    let body = Zeroizing::new(
        cbc::Encryptor::<Aes256>::new(key.as_ref().into(), iv.as_ref().into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext),
    );
    let mut buf = Vec::with_capacity(MAGIC.len() + SALT_LEN + body.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(salt);
    buf.extend_from_slice(&body);
    Ok(STANDARD.encode(buf))
}

/// `CryptoJS.AES.encrypt(plaintext, passphrase).toString()`: a fresh random salt.
pub fn encrypt(passphrase: &[u8], plaintext: &[u8]) -> Result<String, LegacyError> {
    encrypt_with_salt(passphrase, &random_salt()?, plaintext)
}

/// `CryptoJS.AES.decrypt(text, passphrase)` as bytes.
pub fn decrypt(passphrase: &[u8], text: &str) -> Result<Zeroizing<Vec<u8>>, LegacyError> {
    Salted::parse(text)?.decrypt(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with crypto-js 4.2.0 in Node 20:
    //   CryptoJS.AES.encrypt(JSON.stringify({testString:'ab"c\\d'}),
    //     '0123456789abcdefghijklmnopqrstuv', {salt: CryptoJS.enc.Hex.parse('0102030405060708')})
    const PASS: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    const SALT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    const CRYPTOJS: &str = "U2FsdGVkX18BAgMEBQYHCMPKT4Z6t9pqHGUzZLkwcYrg0Bc/imZsd2hbL4axIEzn";
    const PLAIN: &str = r#"{"testString":"ab\"c\\d"}"#;

    #[test]
    fn key_and_iv_match_cryptojs_evpkdf() {
        // CryptoJS.algo.EvpKDF.create({keySize: 12, hasher: MD5}).compute(PASS, SALT)
        let (key, iv) = evp_bytes_to_key(PASS, &SALT);
        assert_eq!(
            hex::encode(key.as_ref()),
            "965b515c34b30ee8afeca51899c9ad0a59cd91cc9eeebc51baf111a9c77ad4fa"
        );
        assert_eq!(hex::encode(iv.as_ref()), "cc961f698a189dd55765cb18242459e7");
    }

    #[test]
    fn encrypts_exactly_as_cryptojs_and_decrypts_its_output() {
        assert_eq!(
            encrypt_with_salt(PASS, &SALT, PLAIN.as_bytes()).unwrap(),
            CRYPTOJS
        );
        assert_eq!(&decrypt(PASS, CRYPTOJS).unwrap()[..], PLAIN.as_bytes());
    }

    /// More values from crypto-js 4.2.0 (`CryptoJS.AES.encrypt(t, p, {salt}).toString()`):
    /// a non-ASCII passphrase (UTF-8), a plaintext of exactly one block (a whole block of
    /// padding follows), an empty one, and a long one ending in a multi-byte character.
    #[test]
    fn matches_cryptojs_on_edge_cases() {
        let long = format!("{}한", "x".repeat(100));
        let cases: [(&str, [u8; 8], &str, &str); 3] = [
            (
                "한국어 키 passphrase ✓ 0123456789",
                [0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11],
                "exactly16bytes!!",
                "U2FsdGVkX18KCwwNDg8QEVYUzliklDbxEcuTZSA7TJGSybv9RxqotNpxidsEkyGJ",
            ),
            (
                "!#$%&()*+,-./0123456789:;<=>?@AB",
                [0xff; 8],
                "",
                "U2FsdGVkX1///////////24P3nkeNA80u9s4/DiBsQQ=",
            ),
            (
                "0123456789abcdefghijklmnopqrstuv",
                [0; 8],
                &long,
                "U2FsdGVkX18AAAAAAAAAADBoFiG6gG77dnX2GwxA54mfxp+fqBKK4poC4EP70ddmL7YB5+XHr588hePw/1HbV57BnWATFY1Q276lyJyJnJdOlQPuwHWxTLQ90nYuHMkJoV4YvV56LFVVztsxYSHwKP0tZco3Kvi0mIiVoTrnCB4=",
            ),
        ];
        for (pass, salt, plain, expected) in cases {
            assert_eq!(
                encrypt_with_salt(pass.as_bytes(), &salt, plain.as_bytes()).unwrap(),
                expected,
                "{pass:?}"
            );
            assert_eq!(
                &decrypt(pass.as_bytes(), expected).unwrap()[..],
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn random_salts_round_trip_and_differ() {
        let a = encrypt(PASS, b"hello").unwrap();
        let b = encrypt(PASS, b"hello").unwrap();
        assert_ne!(a, b);
        assert_eq!(&decrypt(PASS, &a).unwrap()[..], b"hello");
        // Empty plaintext is one block of padding.
        let e = encrypt(PASS, b"").unwrap();
        assert_eq!(&decrypt(PASS, &e).unwrap()[..], b"");
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "",
            "!!!",
            "U2FsdGVkX18BAgMEBQYHCA==", // magic and salt, no block
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // no magic
        ] {
            assert_eq!(
                decrypt(PASS, bad).unwrap_err(),
                LegacyError::Format,
                "{bad:?}"
            );
        }
        // Magic, salt and 17 bytes: not whole blocks.
        let mut raw = STANDARD.decode(CRYPTOJS).unwrap();
        raw.push(0);
        assert_eq!(
            decrypt(PASS, &STANDARD.encode(&raw)).unwrap_err(),
            LegacyError::Format
        );
    }

    #[test]
    fn a_wrong_passphrase_or_a_flipped_bit_fails_or_yields_other_bytes() {
        // CBC has no integrity: a flip in the last block breaks the padding (almost
        // always); one elsewhere garbles a block. Either way the plaintext is not the same.
        assert!(
            decrypt(b"another passphrase", CRYPTOJS).map_or(true, |p| &p[..] != PLAIN.as_bytes())
        );
        let raw = STANDARD.decode(CRYPTOJS).unwrap();
        for i in 16..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 0x01;
            let got = decrypt(PASS, &STANDARD.encode(&r));
            assert!(got.map_or(true, |p| &p[..] != PLAIN.as_bytes()), "byte {i}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_plaintext_round_trips(pass in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                                     plain in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let text = encrypt(&pass, &plain).unwrap();
            proptest::prop_assert_eq!(&decrypt(&pass, &text).unwrap()[..], &plain[..]);
        }

        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = decrypt(PASS, &text);
        }
    }
}
