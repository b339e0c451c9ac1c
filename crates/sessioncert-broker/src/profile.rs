//! The client's profile: where the broker is, who the user is, and the user's half of
//! the key — the key share (optionally sealed under a passphrase with Argon2id) and,
//! after the first login, the encrypted data key. The CLI writes it as a 0600 JSON file;
//! the broker never sees it whole.

use crate::password::RegistrationKey;
use crate::user_key::{EncryptedDataKey, KeyShare};
use crate::{random, BrokerError};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Why a profile could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Not a profile this version reads.
    #[error("not a broker profile: {0}")]
    Malformed(String),
    /// The key share is sealed and no passphrase was given.
    #[error("the key share is protected by a passphrase; give it")]
    NeedsPassphrase,
    /// The passphrase does not open the key share.
    #[error("wrong passphrase for the key share")]
    WrongPassphrase,
    /// The random source failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// How the key share is kept in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredShare {
    /// Base64 of the 32 bytes (the file's 0600 mode protects it).
    Plain(String),
    /// Sealed under a key Argon2id derives from a passphrase.
    Argon2id {
        salt: String,
        m_kib: u32,
        t: u32,
        p: u32,
        /// Base64 of `nonce[24] ‖ XChaCha20-Poly1305(share)`.
        sealed: String,
    },
}

/// A client's profile (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Format version (1).
    pub version: u32,
    /// The broker's URL.
    pub url: String,
    /// The broker's identity pin.
    pub pin: String,
    /// The tenant.
    pub tenant: String,
    /// The account (an e-mail address).
    pub email: String,
    key_share: StoredShare,
    /// Base64 of the encrypted data key, once the first login made one.
    pub encrypted_data_key: Option<String>,
    /// Base64 of the registration key, until the address is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registration: Option<String>,
}

/// Argon2id for passphrases: 64 MiB, 3 passes (a profile is opened once per command).
const PASSPHRASE_M_KIB: u32 = 64 * 1024;
const PASSPHRASE_T: u32 = 3;

fn passphrase_key(
    passphrase: &[u8],
    salt: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, ProfileError> {
    let params = Params::new(m_kib, t, p, Some(32))
        .map_err(|e| ProfileError::Malformed(format!("Argon2 parameters: {e}")))?;
    let mut k = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, k.as_mut())
        .map_err(|e| ProfileError::Malformed(format!("Argon2: {e}")))?;
    Ok(k)
}

impl Profile {
    fn ad(&self) -> Vec<u8> {
        let mut ad = b"sessioncert-broker/1 profile ".to_vec();
        ad.extend_from_slice(&(self.tenant.len() as u32).to_be_bytes());
        ad.extend_from_slice(self.tenant.as_bytes());
        ad.extend_from_slice(self.email.as_bytes());
        ad
    }

    /// A new profile holding `share`, sealed under `passphrase` if one is given.
    pub fn new(
        url: &str,
        pin: &str,
        tenant: &str,
        email: &str,
        share: &KeyShare,
        passphrase: Option<&[u8]>,
    ) -> Result<Profile, ProfileError> {
        let mut p = Profile {
            version: 1,
            url: url.to_owned(),
            pin: pin.to_owned(),
            tenant: tenant.to_owned(),
            email: email.to_owned(),
            key_share: StoredShare::Plain(String::new()),
            encrypted_data_key: None,
            registration: None,
        };
        p.key_share = match passphrase {
            None => StoredShare::Plain(STANDARD.encode(share.as_bytes())),
            Some(pass) => {
                let salt = random::<16>()?;
                let key = passphrase_key(pass, salt.as_ref(), PASSPHRASE_M_KIB, PASSPHRASE_T, 1)?;
                let nonce = random::<24>()?;
                let ct = XChaCha20Poly1305::new(key.as_ref().into())
                    .encrypt(
                        XNonce::from_slice(nonce.as_ref()),
                        Payload {
                            msg: share.as_bytes(),
                            aad: &p.ad(),
                        },
                    )
                    .map_err(|_| BrokerError::Random)?;
                let mut sealed = nonce.to_vec();
                sealed.extend_from_slice(&ct);
                StoredShare::Argon2id {
                    salt: STANDARD.encode(salt.as_ref()),
                    m_kib: PASSPHRASE_M_KIB,
                    t: PASSPHRASE_T,
                    p: 1,
                    sealed: STANDARD.encode(sealed),
                }
            }
        };
        Ok(p)
    }

    /// Whether the key share needs a passphrase.
    pub fn needs_passphrase(&self) -> bool {
        matches!(self.key_share, StoredShare::Argon2id { .. })
    }

    /// The key share (the passphrase is needed when [`Profile::needs_passphrase`]).
    pub fn key_share(&self, passphrase: Option<&[u8]>) -> Result<KeyShare, ProfileError> {
        let bad = |what: &str| ProfileError::Malformed(format!("key_share: {what}"));
        let bytes: Zeroizing<Vec<u8>> = match &self.key_share {
            StoredShare::Plain(b64) => {
                Zeroizing::new(STANDARD.decode(b64).map_err(|_| bad("not base64"))?)
            }
            StoredShare::Argon2id {
                salt,
                m_kib,
                t,
                p,
                sealed,
            } => {
                let pass = passphrase.ok_or(ProfileError::NeedsPassphrase)?;
                // Bounds, so a crafted profile cannot make a command allocate gigabytes.
                if *m_kib > 1024 * 1024 || *t > 16 || *p > 16 {
                    return Err(bad("Argon2 parameters out of range"));
                }
                let salt = STANDARD.decode(salt).map_err(|_| bad("salt"))?;
                let sealed = STANDARD.decode(sealed).map_err(|_| bad("sealed"))?;
                if sealed.len() < 24 {
                    return Err(bad("sealed"));
                }
                let key = passphrase_key(pass, &salt, *m_kib, *t, *p)?;
                let (nonce, ct) = sealed.split_at(24);
                Zeroizing::new(
                    XChaCha20Poly1305::new(key.as_ref().into())
                        .decrypt(
                            XNonce::from_slice(nonce),
                            Payload {
                                msg: ct,
                                aad: &self.ad(),
                            },
                        )
                        .map_err(|_| ProfileError::WrongPassphrase)?,
                )
            }
        };
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("not 32 bytes"))?;
        Ok(KeyShare::from_bytes(arr))
    }

    /// Keeps the key of this profile's registration (needed to verify it).
    pub fn set_registration(&mut self, key: &RegistrationKey) {
        self.registration = Some(STANDARD.encode(key.as_bytes()));
    }

    /// The key of this profile's registration; `None` once verified (or for a profile
    /// made before registrations had keys).
    pub fn registration(&self) -> Result<Option<RegistrationKey>, ProfileError> {
        let Some(b64) = &self.registration else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| ProfileError::Malformed("registration: not base64".into()))?,
        );
        let a: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ProfileError::Malformed("registration: not 32 bytes".into()))?;
        Ok(Some(RegistrationKey::from_bytes(a)))
    }

    /// Forgets the registration key (the address is verified).
    pub fn clear_registration(&mut self) {
        self.registration = None;
    }

    /// Records the encrypted data key the broker returned.
    pub fn set_encrypted_data_key(&mut self, edk: &EncryptedDataKey) {
        self.encrypted_data_key = Some(STANDARD.encode(edk.encode()));
    }

    /// The encrypted data key, once there is one.
    pub fn encrypted_data_key(&self) -> Result<Option<EncryptedDataKey>, ProfileError> {
        self.encrypted_data_key
            .as_deref()
            .map(|b64| {
                let b = STANDARD
                    .decode(b64)
                    .map_err(|_| ProfileError::Malformed("encrypted_data_key".into()))?;
                EncryptedDataKey::decode(&b)
                    .map_err(|_| ProfileError::Malformed("encrypted_data_key".into()))
            })
            .transpose()
    }

    /// The profile as its file holds it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a profile file's text.
    pub fn from_json(text: &str) -> Result<Profile, ProfileError> {
        let p: Profile =
            serde_json::from_str(text).map_err(|e| ProfileError::Malformed(e.to_string()))?;
        if p.version != 1 {
            return Err(ProfileError::Malformed(format!(
                "version {} (this build reads 1)",
                p.version
            )));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::LocalKms;
    use crate::user_key::first_login;

    #[test]
    fn a_plain_profile_round_trips_with_its_encrypted_data_key() {
        let share = KeyShare::generate().unwrap();
        let mut p = Profile::new("http://b", "ed25519:x", "acme", "a@x", &share, None).unwrap();
        assert!(!p.needs_passphrase());
        let mut kms = LocalKms::new();
        kms.create_tenant("acme").unwrap();
        let (_, edk, _) = first_login(&kms, "acme", "a@x", &share).unwrap();
        p.set_encrypted_data_key(&edk);
        let back = Profile::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.key_share(None).unwrap().as_bytes(), share.as_bytes());
        assert_eq!(back.encrypted_data_key().unwrap(), Some(edk));
    }

    #[test]
    fn a_passphrase_profile_opens_only_with_its_passphrase() {
        let share = KeyShare::generate().unwrap();
        let p = Profile::new(
            "http://b",
            "ed25519:x",
            "acme",
            "a@x",
            &share,
            Some(b"pass phrase"),
        )
        .unwrap();
        let text = p.to_json();
        assert!(!text.contains(&STANDARD.encode(share.as_bytes())));
        let back = Profile::from_json(&text).unwrap();
        assert!(back.needs_passphrase());
        assert_eq!(
            back.key_share(None).err(),
            Some(ProfileError::NeedsPassphrase)
        );
        assert_eq!(
            back.key_share(Some(b"wrong")).err(),
            Some(ProfileError::WrongPassphrase)
        );
        assert_eq!(
            back.key_share(Some(b"pass phrase")).unwrap().as_bytes(),
            share.as_bytes()
        );
        // Moved to another account, the sealed share does not open.
        let mut moved = back.clone();
        moved.email = "b@x".into();
        assert_eq!(
            moved.key_share(Some(b"pass phrase")).err(),
            Some(ProfileError::WrongPassphrase)
        );
    }

    #[test]
    fn malformed_profiles_are_refused_with_a_reason() {
        for bad in ["", "{}", "[]", r#"{"version":2}"#] {
            assert!(Profile::from_json(bad).is_err(), "{bad}");
        }
        let share = KeyShare::generate().unwrap();
        let p = Profile::new("u", "p", "t", "e", &share, Some(b"x")).unwrap();
        let huge = p
            .to_json()
            .replace("\"m_kib\": 65536", "\"m_kib\": 99999999");
        assert!(matches!(
            Profile::from_json(&huge).unwrap().key_share(Some(b"x")),
            Err(ProfileError::Malformed(_))
        ));
    }
}
