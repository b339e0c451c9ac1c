//! The split per-user key (seed `002`, kept; its AES-CBC replaced).
//!
//! - The **key share** (32 bytes) is made and kept by the client; the server never
//!   stores it.
//! - The **data key** (32 bytes) is made by the server at the user's first login and is
//!   stored nowhere.
//! - The **encrypted data key** is `wrap(master key of the tenant, data key ⊕ share)`
//!   under the KMS, with the user bound as context (and the tenant and key version by
//!   the KMS): the client keeps it beside its share and sends both at login.
//! - The server keeps a **verifier**, `HMAC-SHA-256(data key, label ‖ tenant ‖ user)`,
//!   so a wrong share is told apart from a broken blob, and gets a clear error.
//!
//! So a stolen database holds neither key; a stolen client profile holds the share and
//! the blob, which open only through the tenant's master key in the KMS.

use crate::kms::{Kms, Wrapped};
use crate::{random, BrokerError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// The client's half: 32 random bytes it keeps (and never sends except at login).
pub struct KeyShare(Zeroizing<[u8; 32]>);

/// The user's data key: in memory only, while a session holds it.
pub struct DataKey(Zeroizing<[u8; 32]>);

/// What the server stores to recognise the right share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier(pub [u8; 32]);

/// What the client keeps beside its share: the wrapped `data key ⊕ share`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedDataKey(pub Wrapped);

impl KeyShare {
    /// A fresh share (the client makes it).
    pub fn generate() -> Result<KeyShare, BrokerError> {
        Ok(KeyShare(random::<32>()?))
    }

    /// A share from its bytes.
    pub fn from_bytes(b: [u8; 32]) -> KeyShare {
        KeyShare(Zeroizing::new(b))
    }

    /// Its bytes (for the client's profile).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl DataKey {
    /// Its bytes (file keys derive from them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl EncryptedDataKey {
    /// `version u32 ‖ blob`, for the client's profile.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.0.version.to_be_bytes().to_vec();
        out.extend_from_slice(&self.0.blob);
        out
    }

    /// Reads [`EncryptedDataKey::encode`].
    pub fn decode(b: &[u8]) -> Result<EncryptedDataKey, BrokerError> {
        if b.len() < 4 + 24 + 32 + 16 {
            return Err(BrokerError::BadEncryptedDataKey);
        }
        let (v, blob) = b.split_at(4);
        let mut version = [0u8; 4];
        version.copy_from_slice(v);
        Ok(EncryptedDataKey(Wrapped {
            version: u32::from_be_bytes(version),
            blob: blob.to_vec(),
        }))
    }
}

fn context(user: &str) -> Vec<u8> {
    let mut c = b"user ".to_vec();
    c.extend_from_slice(user.as_bytes());
    c
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// The verifier of a data key for `tenant` and `user` (what the broker stores).
pub fn verifier(dk: &DataKey, tenant: &str, user: &str) -> Verifier {
    verifier_raw(dk.as_bytes(), tenant, user)
}

fn verifier_raw(dk: &[u8; 32], tenant: &str, user: &str) -> Verifier {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(dk).expect("HMAC takes any key length");
    m.update(b"sessioncert-broker/1 verifier");
    m.update(&(tenant.len() as u32).to_be_bytes());
    m.update(tenant.as_bytes());
    m.update(user.as_bytes());
    Verifier(m.finalize().into_bytes().into())
}

/// The first login: makes the data key, returns it with the encrypted data key (for the
/// client) and the verifier (for the server).
pub fn first_login(
    kms: &dyn Kms,
    tenant: &str,
    user: &str,
    share: &KeyShare,
) -> Result<(DataKey, EncryptedDataKey, Verifier), BrokerError> {
    let dk = random::<32>()?;
    let split = xor(&dk, share.as_bytes());
    let wrapped = kms.wrap(tenant, &context(user), split.as_ref())?;
    let v = verifier_raw(&dk, tenant, user);
    Ok((DataKey(dk), EncryptedDataKey(wrapped), v))
}

/// A later login's result.
pub struct Login {
    /// The data key, for this session only.
    pub data_key: DataKey,
    /// The encrypted data key re-wrapped under the tenant's newest master key, when the
    /// one presented was older: the client replaces what it keeps.
    pub rewrapped: Option<EncryptedDataKey>,
}

/// A login: recovers the data key from the share and the encrypted data key, checks it
/// against the verifier, and re-wraps it if the master key rotated since.
pub fn login(
    kms: &dyn Kms,
    tenant: &str,
    user: &str,
    share: &KeyShare,
    edk: &EncryptedDataKey,
    stored: &Verifier,
) -> Result<Login, BrokerError> {
    let split = kms
        .unwrap(tenant, &context(user), &edk.0)?
        .ok_or(BrokerError::BadEncryptedDataKey)?;
    let split: [u8; 32] = split
        .as_slice()
        .try_into()
        .map_err(|_| BrokerError::BadEncryptedDataKey)?;
    let split = Zeroizing::new(split);
    let dk = xor(&split, share.as_bytes());
    if !bool::from(verifier_raw(&dk, tenant, user).0.ct_eq(&stored.0)) {
        return Err(BrokerError::WrongKeyShare);
    }
    let rewrapped = if edk.0.version < kms.current_version(tenant)? {
        Some(EncryptedDataKey(kms.wrap(
            tenant,
            &context(user),
            split.as_ref(),
        )?))
    } else {
        None
    };
    Ok(Login {
        data_key: DataKey(dk),
        rewrapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::LocalKms;

    fn kms() -> LocalKms {
        let mut k = LocalKms::new();
        k.create_tenant("acme").unwrap();
        k.create_tenant("globex").unwrap();
        k
    }

    #[test]
    fn the_right_share_recovers_the_data_key_and_a_wrong_one_is_told_so() {
        let k = kms();
        let share = KeyShare::generate().unwrap();
        let (dk, edk, v) = first_login(&k, "acme", "alice", &share).unwrap();
        let back = login(&k, "acme", "alice", &share, &edk, &v).unwrap();
        assert_eq!(back.data_key.as_bytes(), dk.as_bytes());
        assert!(back.rewrapped.is_none());
        let wrong = KeyShare::generate().unwrap();
        assert_eq!(
            login(&k, "acme", "alice", &wrong, &edk, &v).err(),
            Some(BrokerError::WrongKeyShare)
        );
    }

    #[test]
    fn another_users_or_tenants_blob_does_not_open() {
        let k = kms();
        let share = KeyShare::generate().unwrap();
        let (_, edk, v) = first_login(&k, "acme", "alice", &share).unwrap();
        assert_eq!(
            login(&k, "acme", "bob", &share, &edk, &v).err(),
            Some(BrokerError::BadEncryptedDataKey)
        );
        assert_eq!(
            login(&k, "globex", "alice", &share, &edk, &v).err(),
            Some(BrokerError::BadEncryptedDataKey)
        );
        let mut broken = edk.encode();
        let n = broken.len();
        broken[n - 1] ^= 1;
        let broken = EncryptedDataKey::decode(&broken).unwrap();
        assert_eq!(
            login(&k, "acme", "alice", &share, &broken, &v).err(),
            Some(BrokerError::BadEncryptedDataKey)
        );
    }

    #[test]
    fn after_a_master_key_rotation_the_next_login_rewraps() {
        let mut k = kms();
        let share = KeyShare::generate().unwrap();
        let (dk, edk, v) = first_login(&k, "acme", "alice", &share).unwrap();
        k.rotate("acme").unwrap();
        let l = login(&k, "acme", "alice", &share, &edk, &v).unwrap();
        let new = l.rewrapped.expect("re-wrapped under version 2");
        assert_eq!(new.0.version, 2);
        assert_eq!(EncryptedDataKey::decode(&new.encode()).unwrap(), new);
        let again = login(&k, "acme", "alice", &share, &new, &v).unwrap();
        assert_eq!(again.data_key.as_bytes(), dk.as_bytes());
        assert!(again.rewrapped.is_none());
    }

    #[test]
    fn neither_half_alone_is_the_data_key() {
        let k = kms();
        let share = KeyShare::generate().unwrap();
        let (dk, edk, _) = first_login(&k, "acme", "alice", &share).unwrap();
        let blob = edk.encode();
        assert!(!blob.windows(32).any(|w| w == dk.as_bytes()));
        assert_ne!(share.as_bytes(), dk.as_bytes());
    }
}
