//! Files at rest: XChaCha20-Poly1305 in the STREAM construction (RustCrypto `aead`'s
//! `EncryptorBE32`: a 19-byte random nonce prefix, a 32-bit chunk counter and a
//! last-chunk flag in each nonce), under a key derived for this one file from the user's
//! data key. Reordered, dropped, repeated or swapped chunks fail authentication, and a
//! file cut short has no last chunk and fails at its end.
//!
//! Layout: `header = "SCBF1\0\0\0" ‖ nonce prefix[19]` (also every chunk's associated
//! data), then chunks of [`CHUNK`] plaintext bytes (`CHUNK + 16` on disk) and one last
//! chunk of `0 … CHUNK − 1` bytes (so a file whose size is a multiple of `CHUNK` ends
//! with an empty last chunk).

use crate::{random, BrokerError};
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag per chunk.
pub const TAG: usize = 16;
const MAGIC: &[u8; 8] = b"SCBF1\0\0\0";
const PREFIX: usize = 19;
/// Header length.
pub const HEADER: usize = MAGIC.len() + PREFIX;

/// The key of one file: HKDF-SHA-256 of the data key, bound to tenant, user and file id.
pub fn file_key(
    data_key: &[u8; 32],
    tenant: &str,
    user: &str,
    file_id: &[u8],
) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(b"sessioncert-broker/1 file key"), data_key);
    let mut info = Vec::new();
    for part in [tenant.as_bytes(), user.as_bytes(), file_id] {
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part);
    }
    let mut k = Zeroizing::new([0u8; 32]);
    hk.expand(&info, k.as_mut())
        .expect("32 bytes is a valid HKDF length");
    k
}

/// Seals a file chunk by chunk.
pub struct FileSealer {
    enc: EncryptorBE32<XChaCha20Poly1305>,
    header: Vec<u8>,
}

impl FileSealer {
    /// Starts a file; returns the sealer and the header to write first.
    pub fn new(key: &[u8; 32]) -> Result<(FileSealer, Vec<u8>), BrokerError> {
        let prefix = random::<PREFIX>()?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(prefix.as_ref());
        let aead = XChaCha20Poly1305::new(key.into());
        let enc = EncryptorBE32::from_aead(aead, prefix.as_ref().into());
        Ok((
            FileSealer {
                enc,
                header: header.clone(),
            },
            header,
        ))
    }

    /// Seals one full chunk (exactly [`CHUNK`] bytes).
    pub fn chunk(&mut self, plain: &[u8]) -> Result<Vec<u8>, BrokerError> {
        debug_assert_eq!(plain.len(), CHUNK);
        self.enc
            .encrypt_next(Payload {
                msg: plain,
                aad: &self.header,
            })
            .map_err(|_| BrokerError::FileAuth)
    }

    /// Seals the last chunk (fewer than [`CHUNK`] bytes, possibly none).
    pub fn finish(self, plain: &[u8]) -> Result<Vec<u8>, BrokerError> {
        debug_assert!(plain.len() < CHUNK);
        self.enc
            .encrypt_last(Payload {
                msg: plain,
                aad: &self.header,
            })
            .map_err(|_| BrokerError::FileAuth)
    }
}

/// Opens a file as its bytes arrive: releases plaintext only chunk by chunk, each
/// authenticated, and the end only when the last chunk authenticates.
pub struct FileOpener {
    dec: DecryptorBE32<XChaCha20Poly1305>,
    header: Vec<u8>,
    pending: Vec<u8>,
}

impl FileOpener {
    /// Starts opening a file from its header.
    pub fn new(key: &[u8; 32], header: &[u8]) -> Result<FileOpener, BrokerError> {
        if header.len() != HEADER || &header[..MAGIC.len()] != MAGIC {
            return Err(BrokerError::FileHeader);
        }
        let aead = XChaCha20Poly1305::new(key.into());
        let dec = DecryptorBE32::from_aead(aead, header[MAGIC.len()..].into());
        Ok(FileOpener {
            dec,
            header: header.to_vec(),
            pending: Vec::new(),
        })
    }

    /// Takes more stored bytes; returns the plaintext of every chunk now known not to be
    /// the last.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, BrokerError> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        // A chunk is not the last while more bytes follow it. The opened chunks are
        // removed once, at the end: pushing many chunks at a time stays linear.
        let mut start = 0;
        while self.pending.len() - start > CHUNK + TAG {
            let plain = self
                .dec
                .decrypt_next(Payload {
                    msg: &self.pending[start..start + CHUNK + TAG],
                    aad: &self.header,
                })
                .map_err(|_| BrokerError::FileAuth)?;
            out.extend_from_slice(&plain);
            start += CHUNK + TAG;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// The end of the stored bytes: the last chunk, which must authenticate as last.
    pub fn finish(self) -> Result<Vec<u8>, BrokerError> {
        if self.pending.len() < TAG || self.pending.len() >= CHUNK + TAG {
            return Err(BrokerError::FileAuth);
        }
        self.dec
            .decrypt_last(Payload {
                msg: &self.pending,
                aad: &self.header,
            })
            .map_err(|_| BrokerError::FileAuth)
    }
}

/// Seals a whole file held in memory (tests and small files).
pub fn seal_all(key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>, BrokerError> {
    let (mut s, mut out) = FileSealer::new(key)?;
    let full = plain.len() / CHUNK * CHUNK;
    for c in plain[..full].chunks(CHUNK) {
        out.extend_from_slice(&s.chunk(c)?);
    }
    out.extend_from_slice(&s.finish(&plain[full..])?);
    Ok(out)
}

/// Opens a whole sealed file held in memory.
pub fn open_all(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, BrokerError> {
    if sealed.len() < HEADER {
        return Err(BrokerError::FileHeader);
    }
    let (header, body) = sealed.split_at(HEADER);
    let mut o = FileOpener::new(key, header)?;
    let mut out = o.push(body)?;
    out.extend_from_slice(&o.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Zeroizing<[u8; 32]> {
        file_key(&[3; 32], "acme", "alice", b"file-1")
    }

    #[test]
    fn files_of_every_size_round_trip_and_arrive_in_any_pieces() {
        let k = key();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = seal_all(&k, &plain).unwrap();
            assert_eq!(sealed.len(), HEADER + len + (len / CHUNK + 1) * TAG);
            assert_eq!(open_all(&k, &sealed).unwrap(), plain, "{len}");
            // Fed a few bytes at a time, as from a network or a disk.
            let mut o = FileOpener::new(&k, &sealed[..HEADER]).unwrap();
            let mut got = Vec::new();
            for piece in sealed[HEADER..].chunks(5000) {
                got.extend(o.push(piece).unwrap());
            }
            got.extend(o.finish().unwrap());
            assert_eq!(got, plain);
        }
    }

    #[test]
    fn truncation_reordering_swapping_and_tampering_fail() {
        let k = key();
        let plain = vec![7u8; 3 * CHUNK + 10];
        let sealed = seal_all(&k, &plain).unwrap();
        let c = CHUNK + TAG;
        // Cut at a chunk boundary: the last full chunk is not a last chunk.
        assert_eq!(
            open_all(&k, &sealed[..HEADER + 2 * c]),
            Err(BrokerError::FileAuth)
        );
        // Cut anywhere else.
        assert!(open_all(&k, &sealed[..sealed.len() - 1]).is_err());
        // Two chunks swapped.
        let mut swapped = sealed.clone();
        let (a, b) = (HEADER, HEADER + c);
        let first = sealed[a..a + c].to_vec();
        swapped[a..a + c].copy_from_slice(&sealed[b..b + c]);
        swapped[b..b + c].copy_from_slice(&first);
        assert!(open_all(&k, &swapped).is_err());
        // A chunk repeated in place of the next.
        let mut repeated = sealed.clone();
        repeated[b..b + c].copy_from_slice(&first);
        assert!(open_all(&k, &repeated).is_err());
        // A bit flipped anywhere after the header, or in the header.
        for pos in [0, 10, HEADER, HEADER + c + 5, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[pos] ^= 1;
            assert!(open_all(&k, &t).is_err(), "{pos}");
        }
        // Another file's key (same data key, other file id).
        let other = file_key(&[3; 32], "acme", "alice", b"file-2");
        assert!(open_all(&other, &sealed).is_err());
        // A chunk of another file with the same key but its own nonce prefix.
        let sealed2 = seal_all(&k, &plain).unwrap();
        let mut spliced = sealed.clone();
        spliced[b..b + c].copy_from_slice(&sealed2[b..b + c]);
        assert!(open_all(&k, &spliced).is_err());
    }

    #[test]
    fn file_keys_are_bound_to_tenant_user_and_file() {
        let base = file_key(&[1; 32], "acme", "alice", b"f");
        assert_ne!(*base, *file_key(&[1; 32], "globex", "alice", b"f"));
        assert_ne!(*base, *file_key(&[1; 32], "acme", "bob", b"f"));
        assert_ne!(*base, *file_key(&[1; 32], "acme", "alice", b"g"));
        assert_ne!(*base, *file_key(&[2; 32], "acme", "alice", b"f"));
        // Length-prefixed: no two (tenant, user) spellings collide.
        assert_ne!(
            *file_key(&[1; 32], "ab", "c", b"f"),
            *file_key(&[1; 32], "a", "bc", b"f")
        );
    }
}
