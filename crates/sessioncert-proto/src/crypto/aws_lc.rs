//! The native backend (aws-lc-rs): AES-256-GCM at well over 10 GB/s per core with
//! AES-NI/AVX-512 (`benches/core.rs`).

use super::{Suite, NONCE_LEN, TAG_LEN};
use crate::ProtocolError;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

pub(crate) struct Key(LessSafeKey);

impl Key {
    pub(crate) fn new(suite: Suite, raw: &[u8; 32]) -> Self {
        let alg = match suite {
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        // Both algorithms take exactly 32-byte keys, which the type guarantees.
        let k = UnboundKey::new(alg, raw).unwrap_or_else(|_| unreachable!());
        Key(LessSafeKey::new(k))
    }

    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ProtocolError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| ProtocolError::Crypto("seal"))?;
        tag.as_ref()
            .try_into()
            .map_err(|_| ProtocolError::Crypto("tag length"))
    }

    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, ProtocolError> {
        self.0
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map(|pt| pt.len())
            .map_err(|_| ProtocolError::BadSeal)
    }
}
