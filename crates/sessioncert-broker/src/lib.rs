//! The key broker's cryptographic core (issue 17; seed `002`, BRIEF §5), sans-I/O.
//!
//! - [`kms`]: per-tenant master keys with versions behind the [`kms::Kms`] trait;
//!   [`kms::LocalKms`] keeps them sealed under a root key that lives outside the
//!   database.
//! - [`user_key`]: the split per-user key. The client keeps a 32-byte key share; the
//!   server makes a 32-byte data key at first login and stores it nowhere: the client
//!   keeps `wrap(master, data key ⊕ share)` (tenant and user bound as associated data),
//!   the server a verifier, so a wrong share is a clear error and the data key exists
//!   only while a session holds both halves.
//! - [`file_crypt`]: files as STREAM chunks under a per-file key derived from the data
//!   key (truncation, reordering and swapping are detected).
//! - [`share_code`]: one-time codes of 128 bits for shares, stored only as a verifier.
//! - [`password`]: Argon2id account passwords and the verification codes of
//!   registration (stored as HMACs).
//! - [`profile`]: the client's profile file (its key share, optionally under an
//!   Argon2id passphrase, and its encrypted data key).
//!
//! Nothing here invents a primitive or a mode: XChaCha20-Poly1305, its STREAM
//! construction from RustCrypto's `aead`, HKDF-SHA-256 and HMAC-SHA-256.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod file_crypt;
pub mod kms;
pub mod password;
pub mod profile;
pub mod requests;
pub mod share_code;
pub mod user_key;

/// Why a broker operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The key share does not open this user's encrypted data key.
    #[error("wrong key share")]
    WrongKeyShare,
    /// The encrypted data key is malformed or not this user's (another tenant or user).
    #[error("encrypted data key is malformed or belongs to another user")]
    BadEncryptedDataKey,
    /// The KMS holds no such tenant or key version.
    #[error("no master key for tenant {tenant:?} version {version}")]
    NoMasterKey {
        /// The tenant.
        tenant: String,
        /// The version asked for.
        version: u32,
    },
    /// A file chunk failed authentication, is out of order, or the file was cut short.
    #[error("file data failed authentication (tampered, reordered, truncated or not this file)")]
    FileAuth,
    /// A file's header is malformed.
    #[error("malformed file header")]
    FileHeader,
    /// The one-time code is wrong.
    #[error("wrong one-time code")]
    WrongCode,
    /// The KMS key file is malformed or does not open under the root key.
    #[error("KMS key file does not open under the root key, or is malformed")]
    KeyFile,
    /// The system's random source failed.
    #[error("random source failed")]
    Random,
}

pub(crate) fn random<const N: usize>() -> Result<zeroize::Zeroizing<[u8; N]>, BrokerError> {
    let mut b = zeroize::Zeroizing::new([0u8; N]);
    getrandom::fill(b.as_mut()).map_err(|_| BrokerError::Random)?;
    Ok(b)
}
