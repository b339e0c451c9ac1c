//! Tenant master keys behind a KMS.
//!
//! A [`Kms`] wraps and unwraps small secrets under a tenant's master key, the way cloud
//! KMSs do (`Encrypt`/`Decrypt`): master keys never leave it. Each tenant has numbered
//! key versions; wrapping uses the newest, unwrapping the one a wrap names, so rotation
//! ([`LocalKms::rotate`]) needs no re-encryption at once (the broker re-wraps a user's
//! data key at their next login).
//!
//! [`LocalKms`] is the default: master keys in memory, persisted as one blob sealed
//! under a root key that lives outside the database (a 0600 file or an environment
//! variable; the caller reads and writes it).

use crate::{random, BrokerError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// A secret wrapped under a tenant's master key: which version, and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The master key version it was wrapped under.
    pub version: u32,
    /// `nonce[24] ‖ XChaCha20-Poly1305 ciphertext and tag`.
    pub blob: Vec<u8>,
}

/// Wraps and unwraps secrets under tenants' master keys.
pub trait Kms: Send + Sync {
    /// The newest key version of `tenant`.
    fn current_version(&self, tenant: &str) -> Result<u32, BrokerError>;
    /// Wraps `secret` under `tenant`'s newest key, bound to `context` (associated data).
    fn wrap(&self, tenant: &str, context: &[u8], secret: &[u8]) -> Result<Wrapped, BrokerError>;
    /// Unwraps what [`Kms::wrap`] made for the same tenant and context; `None` if it does
    /// not open (tampered, another tenant, another context).
    fn unwrap(
        &self,
        tenant: &str,
        context: &[u8],
        wrapped: &Wrapped,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BrokerError>;
}

/// Associated data of a wrap: the tenant, the version and the caller's context, each
/// length-prefixed so no two combinations share a spelling.
fn wrap_ad(tenant: &str, version: u32, context: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(40 + tenant.len() + context.len());
    ad.extend_from_slice(b"sessioncert-broker/1 wrap");
    ad.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    ad.extend_from_slice(tenant.as_bytes());
    ad.extend_from_slice(&version.to_be_bytes());
    ad.extend_from_slice(&(context.len() as u32).to_be_bytes());
    ad.extend_from_slice(context);
    ad
}

/// Master keys in memory; see the module docs.
#[derive(Default)]
pub struct LocalKms {
    /// Tenant → versions (1, 2, …) → key.
    tenants: BTreeMap<String, BTreeMap<u32, Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKms")
            .field("tenants", &self.tenants.keys().collect::<Vec<_>>())
            .finish()
    }
}

const FILE_MAGIC: &[u8; 8] = b"SCBKMS1\n";

impl LocalKms {
    /// An empty KMS.
    pub fn new() -> Self {
        LocalKms::default()
    }

    /// Creates `tenant` with a first key (version 1). Returns whether it was new.
    pub fn create_tenant(&mut self, tenant: &str) -> Result<bool, BrokerError> {
        if self.tenants.contains_key(tenant) {
            return Ok(false);
        }
        let mut versions = BTreeMap::new();
        versions.insert(1, random::<32>()?);
        self.tenants.insert(tenant.to_owned(), versions);
        Ok(true)
    }

    /// Adds a new key version for `tenant` and returns it; older versions still unwrap.
    pub fn rotate(&mut self, tenant: &str) -> Result<u32, BrokerError> {
        let key = random::<32>()?;
        let versions = self
            .tenants
            .get_mut(tenant)
            .ok_or_else(|| no_key(tenant, 0))?;
        let next = versions.keys().next_back().copied().unwrap_or(0) + 1;
        versions.insert(next, key);
        Ok(next)
    }

    /// The tenants, by name.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    fn key(&self, tenant: &str, version: u32) -> Result<&Zeroizing<[u8; 32]>, BrokerError> {
        self.tenants
            .get(tenant)
            .and_then(|v| v.get(&version))
            .ok_or_else(|| no_key(tenant, version))
    }

    /// Every key, sealed under `root` (XChaCha20-Poly1305, the file's magic as associated
    /// data): what the caller writes to the key file.
    pub fn seal(&self, root: &[u8; 32]) -> Result<Vec<u8>, BrokerError> {
        let mut plain = Zeroizing::new(Vec::new());
        plain.extend_from_slice(&(self.tenants.len() as u32).to_be_bytes());
        for (name, versions) in &self.tenants {
            plain.extend_from_slice(&(name.len() as u32).to_be_bytes());
            plain.extend_from_slice(name.as_bytes());
            plain.extend_from_slice(&(versions.len() as u32).to_be_bytes());
            for (v, k) in versions {
                plain.extend_from_slice(&v.to_be_bytes());
                plain.extend_from_slice(k.as_ref());
            }
        }
        let nonce = random::<24>()?;
        let ct = XChaCha20Poly1305::new(root.into())
            .encrypt(
                XNonce::from_slice(nonce.as_ref()),
                Payload {
                    msg: &plain,
                    aad: FILE_MAGIC,
                },
            )
            .map_err(|_| BrokerError::KeyFile)?;
        let mut out = FILE_MAGIC.to_vec();
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Reads what [`LocalKms::seal`] wrote.
    pub fn open(root: &[u8; 32], sealed: &[u8]) -> Result<LocalKms, BrokerError> {
        let rest = sealed
            .strip_prefix(FILE_MAGIC)
            .ok_or(BrokerError::KeyFile)?;
        if rest.len() < 24 {
            return Err(BrokerError::KeyFile);
        }
        let (nonce, ct) = rest.split_at(24);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(root.into())
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: FILE_MAGIC,
                    },
                )
                .map_err(|_| BrokerError::KeyFile)?,
        );
        let mut r = Reader(&plain);
        let mut kms = LocalKms::new();
        for _ in 0..r.u32()? {
            let n = r.u32()? as usize;
            let name = std::str::from_utf8(r.take(n)?)
                .map_err(|_| BrokerError::KeyFile)?
                .to_owned();
            let mut versions = BTreeMap::new();
            for _ in 0..r.u32()? {
                let v = r.u32()?;
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(r.take(32)?);
                versions.insert(v, k);
            }
            if versions.is_empty() {
                return Err(BrokerError::KeyFile);
            }
            kms.tenants.insert(name, versions);
        }
        if !r.0.is_empty() {
            return Err(BrokerError::KeyFile);
        }
        Ok(kms)
    }
}

fn no_key(tenant: &str, version: u32) -> BrokerError {
    BrokerError::NoMasterKey {
        tenant: tenant.to_owned(),
        version,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BrokerError> {
        if self.0.len() < n {
            return Err(BrokerError::KeyFile);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, BrokerError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
}

impl Kms for LocalKms {
    fn current_version(&self, tenant: &str) -> Result<u32, BrokerError> {
        self.tenants
            .get(tenant)
            .and_then(|v| v.keys().next_back().copied())
            .ok_or_else(|| no_key(tenant, 0))
    }

    fn wrap(&self, tenant: &str, context: &[u8], secret: &[u8]) -> Result<Wrapped, BrokerError> {
        let version = self.current_version(tenant)?;
        let key = self.key(tenant, version)?;
        let nonce = random::<24>()?;
        let ad = wrap_ad(tenant, version, context);
        let ct = XChaCha20Poly1305::new(key.as_ref().into())
            .encrypt(
                XNonce::from_slice(nonce.as_ref()),
                Payload {
                    msg: secret,
                    aad: &ad,
                },
            )
            .map_err(|_| BrokerError::Random)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(Wrapped { version, blob })
    }

    fn unwrap(
        &self,
        tenant: &str,
        context: &[u8],
        wrapped: &Wrapped,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BrokerError> {
        let key = self.key(tenant, wrapped.version)?;
        if wrapped.blob.len() < 24 {
            return Ok(None);
        }
        let (nonce, ct) = wrapped.blob.split_at(24);
        let ad = wrap_ad(tenant, wrapped.version, context);
        Ok(XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &ad })
            .ok()
            .map(Zeroizing::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms() -> LocalKms {
        let mut k = LocalKms::new();
        assert!(k.create_tenant("acme").unwrap());
        assert!(!k.create_tenant("acme").unwrap());
        k.create_tenant("globex").unwrap();
        k
    }

    #[test]
    fn a_wrap_opens_only_for_its_tenant_and_context() {
        let k = kms();
        let w = k.wrap("acme", b"user:alice", b"secret").unwrap();
        assert_eq!(w.version, 1);
        assert_eq!(
            &k.unwrap("acme", b"user:alice", &w).unwrap().unwrap()[..],
            b"secret"
        );
        assert!(k.unwrap("acme", b"user:bob", &w).unwrap().is_none());
        assert!(k.unwrap("globex", b"user:alice", &w).unwrap().is_none());
        let mut t = w.clone();
        t.blob[30] ^= 1;
        assert!(k.unwrap("acme", b"user:alice", &t).unwrap().is_none());
        assert!(matches!(
            k.wrap("initech", b"", b"x"),
            Err(BrokerError::NoMasterKey { .. })
        ));
    }

    #[test]
    fn rotation_wraps_under_the_new_version_and_old_wraps_still_open() {
        let mut k = kms();
        let old = k.wrap("acme", b"c", b"s").unwrap();
        assert_eq!(k.rotate("acme").unwrap(), 2);
        let new = k.wrap("acme", b"c", b"s").unwrap();
        assert_eq!((old.version, new.version), (1, 2));
        assert!(k.unwrap("acme", b"c", &old).unwrap().is_some());
        // The version is bound: a blob relabelled with another version does not open.
        let relabelled = Wrapped {
            version: 2,
            blob: old.blob.clone(),
        };
        assert!(k.unwrap("acme", b"c", &relabelled).unwrap().is_none());
    }

    #[test]
    fn the_key_file_round_trips_under_its_root_key_only() {
        let mut k = kms();
        k.rotate("globex").unwrap();
        let w = k.wrap("globex", b"c", b"s").unwrap();
        let root = [7u8; 32];
        let sealed = k.seal(&root).unwrap();
        let back = LocalKms::open(&root, &sealed).unwrap();
        assert_eq!(back.tenants().collect::<Vec<_>>(), ["acme", "globex"]);
        assert_eq!(&back.unwrap("globex", b"c", &w).unwrap().unwrap()[..], b"s");
        assert_eq!(
            LocalKms::open(&[8u8; 32], &sealed).unwrap_err(),
            BrokerError::KeyFile
        );
        for cut in [0, 8, 20, sealed.len() - 1] {
            assert!(LocalKms::open(&root, &sealed[..cut]).is_err());
        }
        // The master keys are nowhere in the sealed file.
        let k1 = k.key("acme", 1).unwrap();
        assert!(!sealed.windows(32).any(|w| w == k1.as_ref()));
    }
}
