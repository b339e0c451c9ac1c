//! The server's RSA key for the legacy key transport: the client encrypts its key string
//! with RSA-OAEP (SHA-1, MGF1-SHA-1: Node's `publicEncrypt` default) to this key's public
//! half, served as PEM SubjectPublicKeyInfo.
//!
//! One key per server, made when it starts and replaced on a schedule (the original made
//! a 4096-bit key for every `GET /publicKey`, which let anyone burn a core per request).
//! It lives in memory only: a restart or a rotation leaves nothing on disk that could
//! later open recorded handshakes.

use crate::LegacyError;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// Shortest key string accepted (the field clients send 32 characters).
pub const MIN_KEY_LEN: usize = 16;

/// Sizes offered for the legacy RSA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaBits {
    /// 2048 bits (the default: about 1 ms per key transport here).
    #[default]
    B2048,
    /// 3072 bits.
    B3072,
    /// 4096 bits (what the original used).
    B4096,
}

impl RsaBits {
    /// From a bit count: 2048, 3072 or 4096.
    pub fn from_bits(bits: u32) -> Option<RsaBits> {
        match bits {
            2048 => Some(RsaBits::B2048),
            3072 => Some(RsaBits::B3072),
            4096 => Some(RsaBits::B4096),
            _ => None,
        }
    }

    fn size(self) -> KeySize {
        match self {
            RsaBits::B2048 => KeySize::Rsa2048,
            RsaBits::B3072 => KeySize::Rsa3072,
            RsaBits::B4096 => KeySize::Rsa4096,
        }
    }
}

/// An RSA key pair for the key transport, with its public half as PEM.
pub struct LegacyRsaKey {
    key: OaepPrivateDecryptingKey,
    public_pem: String,
}

impl std::fmt::Debug for LegacyRsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyRsaKey")
            .field("bits", &self.key.key_size_bits())
            .finish_non_exhaustive()
    }
}

impl LegacyRsaKey {
    /// Makes a new key (tens to hundreds of milliseconds: call it off the async runtime).
    pub fn generate(bits: RsaBits) -> Result<LegacyRsaKey, LegacyError> {
        let private =
            PrivateDecryptingKey::generate(bits.size()).map_err(|_| LegacyError::Crypto)?;
        Self::from_private(private)
    }

    /// A key from PKCS#8 DER (tests and tools).
    pub fn from_pkcs8(der: &[u8]) -> Result<LegacyRsaKey, LegacyError> {
        let private = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| LegacyError::Crypto)?;
        Self::from_private(private)
    }

    fn from_private(private: PrivateDecryptingKey) -> Result<LegacyRsaKey, LegacyError> {
        let spki = private
            .public_key()
            .as_der()
            .map_err(|_| LegacyError::Crypto)?;
        let public_pem = pem("PUBLIC KEY", spki.as_ref());
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| LegacyError::Crypto)?;
        Ok(LegacyRsaKey { key, public_pem })
    }

    /// The public key as Node writes it: PEM, SubjectPublicKeyInfo (`-----BEGIN PUBLIC
    /// KEY-----`), 64-character lines, `\n` line ends.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// Opens the base64 `symmetricKey` of `POST /sessionCert/symmetricKey`: the client's
    /// key string, as the passphrase bytes CryptoJS will use. A key that is not UTF-8 is
    /// refused (the original server turned such bytes into U+FFFD, so any six of them
    /// made the same public passphrase; the original client only ever sends ASCII), and
    /// so is one shorter than [`MIN_KEY_LEN`] bytes.
    pub fn open_key(&self, symmetric_key_b64: &str) -> Result<Zeroizing<Vec<u8>>, LegacyError> {
        let ct = STANDARD
            .decode(symmetric_key_b64.trim().as_bytes())
            .map_err(|_| LegacyError::KeyTransport)?;
        if ct.len() != self.key.key_size_bytes() {
            return Err(LegacyError::KeyTransport);
        }
        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let n = self
            .key
            .decrypt(&OAEP_SHA1_MGF1SHA1, &ct, &mut out, None)
            .map_err(|_| LegacyError::KeyTransport)?
            .len();
        out.truncate(n);
        if std::str::from_utf8(&out).is_err() || out.len() < MIN_KEY_LEN {
            return Err(LegacyError::KeyTransport);
        }
        Ok(out)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_encrypt(key: &LegacyRsaKey, plain: &[u8]) -> String {
        crate::client::wrap_key(key.public_pem(), plain).unwrap()
    }

    #[test]
    fn a_key_encrypted_to_the_served_pem_opens() {
        let key = LegacyRsaKey::generate(RsaBits::B2048).unwrap();
        assert_eq!(key.bits(), 2048);
        let pem = key.public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let k = b"!#$%&'()*+,-./0123456789:;<=>?@A";
        assert_eq!(&key.open_key(&client_encrypt(&key, k)).unwrap()[..], k);
    }

    #[test]
    fn refuses_short_keys_other_keys_and_junk() {
        let key = LegacyRsaKey::generate(RsaBits::B2048).unwrap();
        let other = LegacyRsaKey::generate(RsaBits::B2048).unwrap();
        assert_eq!(
            key.open_key(&client_encrypt(&key, b"short")).unwrap_err(),
            LegacyError::KeyTransport
        );
        assert_eq!(
            key.open_key(&client_encrypt(&other, b"0123456789abcdefghijklmnopqrstuv"))
                .unwrap_err(),
            LegacyError::KeyTransport
        );
        for junk in ["", "not base64!", "AAAA"] {
            assert_eq!(key.open_key(junk).unwrap_err(), LegacyError::KeyTransport);
        }
    }

    #[test]
    fn a_key_that_is_not_utf8_is_refused() {
        let key = LegacyRsaKey::generate(RsaBits::B2048).unwrap();
        let mut k = b"0123456789abcdefghijklmnopqrstu".to_vec();
        k.push(0xff);
        assert_eq!(
            key.open_key(&client_encrypt(&key, &k)).unwrap_err(),
            LegacyError::KeyTransport
        );
        // Non-ASCII UTF-8 is a key string like any other.
        let k = "키 0123456789abcdefghijklmn".as_bytes();
        assert_eq!(&key.open_key(&client_encrypt(&key, k)).unwrap()[..], k);
    }
}
