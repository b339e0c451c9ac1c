//! The pure-Rust backend (RustCrypto): always compiled, the only one on wasm32.

use super::{Suite, NONCE_LEN, TAG_LEN};
use crate::ProtocolError;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;

pub(crate) enum Key {
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

impl Key {
    pub(crate) fn new(suite: Suite, raw: &[u8; 32]) -> Self {
        match suite {
            Suite::Aes256Gcm => Key::Aes(Box::new(Aes256Gcm::new(raw.into()))),
            Suite::ChaCha20Poly1305 => Key::ChaCha(Box::new(ChaCha20Poly1305::new(raw.into()))),
        }
    }

    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ProtocolError> {
        let r = match self {
            Key::Aes(k) => k.encrypt_in_place_detached(nonce.into(), aad, buf),
            Key::ChaCha(k) => k.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        r.map(Into::into).map_err(|_| ProtocolError::Crypto("seal"))
    }

    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, ProtocolError> {
        let n = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(ProtocolError::BadSeal)?;
        let (ct, tag) = buf.split_at_mut(n);
        let tag = aes_gcm::Tag::clone_from_slice(tag);
        let r = match self {
            Key::Aes(k) => k.decrypt_in_place_detached(nonce.into(), aad, ct, &tag),
            Key::ChaCha(k) => k.decrypt_in_place_detached(nonce.into(), aad, ct, &tag),
        };
        r.map_err(|_| ProtocolError::BadSeal)?;
        Ok(n)
    }
}
