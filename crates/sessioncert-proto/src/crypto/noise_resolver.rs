//! The crypto seam for `snow`: X25519 from the selected backend, everything else from
//! snow's default (RustCrypto) resolver. Handshake hashing and the two small Noise
//! AEAD operations are cheap; the scalar multiplications are what a handshake costs.

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// The resolver every handshake in this crate is built with.
pub(crate) fn resolver() -> Box<dyn CryptoResolver + Send + Sync> {
    Box::new(Resolver)
}

struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            #[cfg(feature = "aws-lc")]
            DHChoice::Curve25519 => Some(Box::new(aws_lc_x25519::X25519::default())),
            #[cfg(not(feature = "aws-lc"))]
            DHChoice::Curve25519 => {
                Some(Box::new(RejectAllZero(DefaultResolver.resolve_dh(choice)?)))
            }
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Refuses an all-zero shared secret (a low-order peer point), as aws-lc does, so both
/// backends accept and reject exactly the same handshakes.
#[cfg(not(feature = "aws-lc"))]
struct RejectAllZero(Box<dyn Dh>);

#[cfg(not(feature = "aws-lc"))]
impl Dh for RejectAllZero {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn pub_len(&self) -> usize {
        self.0.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.0.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey)
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.0.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        self.0.pubkey()
    }
    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if pubkey.len() < 32 {
            return Err(snow::Error::Dh);
        }
        self.0.dh(pubkey, out)?;
        if out[..32].iter().all(|b| *b == 0) {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
}

#[cfg(feature = "aws-lc")]
mod aws_lc_x25519 {
    use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519 as ALG};
    use snow::types::{Dh, Random};
    use std::sync::{Arc, Mutex, OnceLock};
    use zeroize::Zeroizing;

    /// X25519 on aws-lc-rs. snow's `Dh` trait hands private keys around as bytes, so the
    /// raw scalar is kept beside aws-lc's key object and zeroized on drop.
    #[derive(Default)]
    pub(super) struct X25519 {
        raw: Zeroizing<[u8; 32]>,
        public: [u8; 32],
        key: Option<Arc<PrivateKey>>,
    }

    /// A static key seen before: snow sets the server's static key on every handshake,
    /// and loading it into aws-lc costs a scalar multiplication (about a tenth of the
    /// server's handshake). Keyed by a hash of the scalar, so the table holds no extra
    /// copy of it; aws-lc's key objects are the ones the server uses anyway.
    struct Cached {
        digest: [u8; 32],
        key: Arc<PrivateKey>,
        public: [u8; 32],
    }

    const CACHE_MAX: usize = 8;

    fn cache() -> &'static Mutex<Vec<Cached>> {
        static CACHE: OnceLock<Mutex<Vec<Cached>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(Vec::new()))
    }

    fn load(raw: &[u8; 32]) -> Option<(Arc<PrivateKey>, [u8; 32])> {
        let key = PrivateKey::from_private_key(&ALG, raw).ok()?;
        let pk = key.compute_public_key().ok()?;
        let public: [u8; 32] = pk.as_ref().try_into().ok()?;
        Some((Arc::new(key), public))
    }

    impl X25519 {
        fn install(&mut self, raw: &[u8; 32], loaded: Option<(Arc<PrivateKey>, [u8; 32])>) {
            *self.raw = *raw;
            match loaded {
                Some((key, public)) => {
                    self.key = Some(key);
                    self.public = public;
                }
                None => self.key = None,
            }
        }
    }

    impl Dh for X25519 {
        fn name(&self) -> &'static str {
            "25519"
        }
        fn pub_len(&self) -> usize {
            32
        }
        fn priv_len(&self) -> usize {
            32
        }
        /// Static keys (and fixed test ephemerals) arrive here; fresh ephemerals come
        /// through `generate` and never touch the cache.
        fn set(&mut self, privkey: &[u8]) {
            let Ok(raw) = <[u8; 32]>::try_from(privkey) else {
                self.key = None;
                return;
            };
            let digest =
                crate::crypto::sha256(&[b"sessioncert x25519 cache\x00".as_slice(), &raw].concat());
            let mut table = cache().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = table.iter().find(|c| c.digest == digest) {
                let hit = (c.key.clone(), c.public);
                drop(table);
                self.install(&raw, Some(hit));
                return;
            }
            let loaded = load(&raw);
            if let Some((key, public)) = &loaded {
                if table.len() >= CACHE_MAX {
                    table.remove(0);
                }
                table.push(Cached {
                    digest,
                    key: key.clone(),
                    public: *public,
                });
            }
            drop(table);
            self.install(&raw, loaded);
        }
        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
            let mut raw = Zeroizing::new([0u8; 32]);
            rng.try_fill_bytes(raw.as_mut())?;
            let loaded = load(&raw);
            self.install(&raw, loaded);
            if self.key.is_none() {
                return Err(snow::Error::Dh);
            }
            Ok(())
        }
        fn pubkey(&self) -> &[u8] {
            &self.public
        }
        fn privkey(&self) -> &[u8] {
            self.raw.as_ref()
        }
        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
            // snow hands over its fixed-size buffer; the key is the first 32 bytes.
            let pubkey = pubkey.get(..32).ok_or(snow::Error::Dh)?;
            // aws-lc refuses an all-zero result (low-order peer point).
            agreement::agree(
                key,
                UnparsedPublicKey::new(&ALG, pubkey),
                snow::Error::Dh,
                |secret| {
                    out.get_mut(..secret.len())
                        .ok_or(snow::Error::Dh)?
                        .copy_from_slice(secret);
                    Ok(())
                },
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cached_static_key_gives_the_same_public_key_and_shared_secret() {
            let raw = [7u8; 32];
            let mut a = X25519::default();
            a.set(&raw);
            let mut b = X25519::default();
            b.set(&raw); // served from the cache
            assert_eq!(a.pubkey(), b.pubkey());
            let mut peer = X25519::default();
            peer.set(&[9u8; 32]);
            let (mut s1, mut s2) = ([0u8; 32], [0u8; 32]);
            a.dh(peer.pubkey(), &mut s1).unwrap();
            b.dh(peer.pubkey(), &mut s2).unwrap();
            assert_eq!(s1, s2);
            let mut s3 = [0u8; 32];
            peer.dh(a.pubkey(), &mut s3).unwrap();
            assert_eq!(s1, s3);
            // Many distinct keys: the table stays bounded and results stay right.
            for i in 0..(2 * CACHE_MAX as u8) {
                let mut k = X25519::default();
                k.set(&[i.wrapping_add(100); 32]);
                assert!(k.key.is_some());
            }
            assert!(cache().lock().unwrap().len() <= CACHE_MAX);
        }
    }
}
