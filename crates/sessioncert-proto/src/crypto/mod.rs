//! Primitives behind one seam: AEAD suites, HKDF-SHA256, HMAC, X25519 for Noise, randomness.
//!
//! With the `aws-lc` feature (the default on native targets) AEAD and X25519 come from
//! aws-lc-rs, which seals AES-256-GCM 8–10× and ChaCha20-Poly1305 1.7× faster than the
//! pure-Rust RustCrypto crates on this class of machine (`benches/core.rs`); without it (wasm32) RustCrypto is used. Both backends produce the
//! same bytes, which the test vectors and the cross-backend tests check.

#[cfg(feature = "aws-lc")]
pub(crate) mod aws_lc;
mod noise_resolver;
#[cfg_attr(feature = "aws-lc", allow(dead_code))]
pub(crate) mod rustcrypto;

pub(crate) use noise_resolver::resolver;

use crate::ProtocolError;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The `snow` crypto resolver every handshake of this crate is built with (X25519 from
/// the selected backend, everything else from snow's default resolver). Exposed only so
/// that a benchmark baseline (`crates/sessioncert-bench-lean`) can run a bare Noise
/// handshake on exactly the same primitives; not part of the supported API.
#[doc(hidden)]
pub fn noise_resolver() -> Box<dyn snow::resolvers::CryptoResolver + Send + Sync> {
    noise_resolver::resolver()
}

/// AEAD key length of every record suite (bytes).
pub(crate) const KEY_LEN: usize = 32;
/// AEAD nonce length of every record suite (bytes).
pub(crate) const NONCE_LEN: usize = 12;
/// AEAD tag length of every record suite (bytes).
pub(crate) const TAG_LEN: usize = 16;

/// Fills `out` with bytes from the operating system's CSPRNG.
pub fn fill_random(out: &mut [u8]) -> Result<(), ProtocolError> {
    getrandom::fill(out).map_err(|_| ProtocolError::Random)
}

/// SHA-256 of `data`.
#[cfg_attr(not(feature = "aws-lc"), allow(dead_code))]
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF-Extract(salt, ikm) followed by Expand for each label, as RFC 5869.
pub(crate) struct KeySchedule(Hkdf<Sha256>);

impl KeySchedule {
    pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Self {
        KeySchedule(Hkdf::<Sha256>::new(Some(salt), ikm))
    }

    /// Expand with `info`; lengths used here are far below HKDF's 255×32 limit.
    pub(crate) fn expand<const N: usize>(&self, info: &[u8]) -> Zeroizing<[u8; N]> {
        let mut out = Zeroizing::new([0u8; N]);
        self.0
            .expand(info, out.as_mut())
            .unwrap_or_else(|_| unreachable!());
        out
    }
}

/// HKDF-Expand(prk, info) for a 32-byte PRK that is already uniformly random.
pub(crate) fn expand_from_prk(prk: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let h = Hkdf::<Sha256>::from_prk(prk).unwrap_or_else(|_| unreachable!());
    let mut out = Zeroizing::new([0u8; 32]);
    h.expand(info, out.as_mut())
        .unwrap_or_else(|_| unreachable!());
    out
}

/// Constant-time equality of two byte strings.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An AEAD suite for sealed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-256-GCM (the default; browsers have it in WebCrypto).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (fast without AES hardware).
    ChaCha20Poly1305,
}

impl Suite {
    /// Every suite this implementation speaks, in the default preference order.
    pub const ALL: [Suite; 2] = [Suite::Aes256Gcm, Suite::ChaCha20Poly1305];

    /// The 16-bit wire identifier.
    pub const fn id(self) -> u16 {
        match self {
            Suite::Aes256Gcm => 0x0001,
            Suite::ChaCha20Poly1305 => 0x0002,
        }
    }

    /// Looks a suite up by wire identifier.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The display name used in logs and `sessions list`.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Aes256Gcm => "AES-256-GCM",
            Suite::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    /// Parses a display name (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(s))
    }
}

impl core::fmt::Display for Suite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// An AEAD key of one suite, ready to seal and open. The raw key is kept (zeroized on
/// drop) so it can be ratcheted and exported for storage.
pub(crate) struct AeadKey {
    suite: Suite,
    raw: Zeroizing<[u8; KEY_LEN]>,
    #[cfg(feature = "aws-lc")]
    inner: aws_lc::Key,
    #[cfg(not(feature = "aws-lc"))]
    inner: rustcrypto::Key,
}

impl core::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AeadKey({}, [redacted])", self.suite)
    }
}

impl Clone for AeadKey {
    fn clone(&self) -> Self {
        AeadKey::new(self.suite, &self.raw)
    }
}

impl AeadKey {
    /// Builds a key of `suite` from 32 raw bytes.
    pub fn new(suite: Suite, raw: &[u8; KEY_LEN]) -> Self {
        AeadKey {
            suite,
            raw: Zeroizing::new(*raw),
            #[cfg(feature = "aws-lc")]
            inner: aws_lc::Key::new(suite, raw),
            #[cfg(not(feature = "aws-lc"))]
            inner: rustcrypto::Key::new(suite, raw),
        }
    }

    /// The raw key bytes, for sealing at rest. Handle with care.
    pub fn raw(&self) -> &[u8; KEY_LEN] {
        &self.raw
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ProtocolError> {
        self.inner.seal(nonce, aad, buf)
    }

    /// Encrypts `buf` in place and appends the tag.
    #[cfg(test)]
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let tag = self.inner.seal(nonce, aad, buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts `buf` (ciphertext followed by tag) in place; returns the plaintext length.
    /// On failure the buffer's content is unspecified and must be discarded.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, ProtocolError> {
        if buf.len() < TAG_LEN {
            return Err(ProtocolError::BadSeal);
        }
        self.inner.open(nonce, aad, buf)
    }

    /// The next key in the re-keying chain: `HKDF-Expand(key, label, 32)`.
    /// `HKDF-Expand(PRK = this key, info, 32)` as a key of the same suite: the next
    /// epoch's key (§10) or a stream's key (§8.5).
    pub(crate) fn ratchet(&self, info: &[u8]) -> AeadKey {
        let next = expand_from_prk(&self.raw, info);
        AeadKey::new(self.suite, &next)
    }
}

/// XORs a 64-bit sequence number into the last 8 bytes of a 12-byte IV (as TLS 1.3).
pub(crate) fn nonce_for(iv: &[u8; NONCE_LEN], seq: u64) -> [u8; NONCE_LEN] {
    let mut n = *iv;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    n
}

/// Zeroizes a byte vector's contents before dropping it (for plaintext copies of secrets).
pub(crate) fn wipe(mut v: Vec<u8>) {
    v.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_round_trip_ids_and_names() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_id(s.id()), Some(s));
            assert_eq!(Suite::from_name(&s.name().to_lowercase()), Some(s));
        }
        assert_eq!(Suite::from_id(0), None);
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        for suite in Suite::ALL {
            let k = AeadKey::new(suite, &[9u8; 32]);
            let iv = [3u8; 12];
            let mut buf = b"hello world".to_vec();
            k.seal_in_place(&nonce_for(&iv, 5), b"ad", &mut buf)
                .unwrap();
            assert_eq!(buf.len(), 11 + TAG_LEN);
            let mut ok = buf.clone();
            let n = k.open_in_place(&nonce_for(&iv, 5), b"ad", &mut ok).unwrap();
            assert_eq!(&ok[..n], b"hello world");
            let mut wrong_nonce = buf.clone();
            assert!(k
                .open_in_place(&nonce_for(&iv, 6), b"ad", &mut wrong_nonce)
                .is_err());
            let mut wrong_ad = buf.clone();
            assert!(k
                .open_in_place(&nonce_for(&iv, 5), b"aD", &mut wrong_ad)
                .is_err());
            let mut short = buf[..TAG_LEN - 1].to_vec();
            assert!(k
                .open_in_place(&nonce_for(&iv, 5), b"ad", &mut short)
                .is_err());
        }
    }

    /// The native backend and the pure-Rust backend must agree byte for byte, so a
    /// wasm client (RustCrypto) and a native server (aws-lc) interoperate.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn backends_agree() {
        for suite in Suite::ALL {
            let raw = [0x42u8; 32];
            let nonce = [7u8; 12];
            let a = aws_lc::Key::new(suite, &raw);
            let b = rustcrypto::Key::new(suite, &raw);
            for len in [0usize, 1, 15, 16, 17, 1000] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut x = pt.clone();
                let mut y = pt.clone();
                let tx = a.seal(&nonce, b"aad", &mut x).unwrap();
                let ty = b.seal(&nonce, b"aad", &mut y).unwrap();
                assert_eq!((&x, tx), (&y, ty), "{suite} len {len}");
                x.extend_from_slice(&tx);
                let n = b.open(&nonce, b"aad", &mut x).unwrap();
                assert_eq!(&x[..n], &pt[..]);
            }
        }
    }

    #[test]
    fn nonce_xor_is_big_endian_in_the_last_eight_bytes() {
        let iv = [0u8; 12];
        assert_eq!(nonce_for(&iv, 1), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let iv = [0xffu8; 12];
        assert_eq!(nonce_for(&iv, 0x0100)[10..], [0xfe, 0xff]);
    }
}
