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
    use zeroize::Zeroizing;

    /// X25519 on aws-lc-rs. snow's `Dh` trait hands private keys around as bytes, so the
    /// raw scalar is kept beside aws-lc's key object and zeroized on drop.
    #[derive(Default)]
    pub(super) struct X25519 {
        raw: Zeroizing<[u8; 32]>,
        public: [u8; 32],
        key: Option<PrivateKey>,
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
        fn set(&mut self, privkey: &[u8]) {
            let Ok(raw) = <[u8; 32]>::try_from(privkey) else {
                self.key = None;
                return;
            };
            *self.raw = raw;
            self.key = PrivateKey::from_private_key(&ALG, &raw).ok();
            if let Some(pk) = self.key.as_ref().and_then(|k| k.compute_public_key().ok()) {
                self.public.copy_from_slice(pk.as_ref());
            } else {
                self.key = None;
            }
        }
        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
            let mut raw = Zeroizing::new([0u8; 32]);
            rng.try_fill_bytes(raw.as_mut())?;
            self.set(raw.as_ref());
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
}
