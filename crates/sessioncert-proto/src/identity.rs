//! The server's long-term identity (Ed25519) and its pin, and the rotating
//! X25519 handshake keys it signs.
//!
//! The identity key only signs key configurations; it never takes part in a key
//! exchange. Handshake keys can therefore rotate (or leak and be revoked) while
//! clients keep the same pin — the server acting as its own CA, as in the seed.

use crate::crypto::{self, fill_random};
use crate::ProtocolError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use core::fmt;
use core::str::FromStr;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// The text prefix of a pin.
pub const PIN_PREFIX: &str = "ed25519:";

/// A server's pinned identity: its Ed25519 public key. Printed as
/// `ed25519:<43 chars of unpadded base64url>`. It is public and may ship inside an app.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PIN_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// The text is not a pin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pin: expected ed25519:<base64url of 32 bytes>")]
pub struct MalformedPin;

impl FromStr for Pin {
    type Err = MalformedPin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = s.trim().strip_prefix(PIN_PREFIX).ok_or(MalformedPin)?;
        let v = URL_SAFE_NO_PAD.decode(b64).map_err(|_| MalformedPin)?;
        let key: [u8; 32] = v.try_into().map_err(|_| MalformedPin)?;
        // Refuse bytes that are not a valid Ed25519 point now rather than at first use.
        VerifyingKey::from_bytes(&key).map_err(|_| MalformedPin)?;
        Ok(Pin(key))
    }
}

/// The server's long-term Ed25519 signing key. Zeroized on drop; `Debug` is redacted.
pub struct IdentityKey(SigningKey);

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({}, [redacted])", self.pin())
    }
}

impl IdentityKey {
    /// A new random identity.
    pub fn generate() -> Result<Self, ProtocolError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        fill_random(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// The identity with this 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        IdentityKey(SigningKey::from_bytes(seed))
    }

    /// The secret seed, for writing to the key file.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The pin clients check the server against.
    pub fn pin(&self) -> Pin {
        Pin(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// Checks an Ed25519 signature by `pin` over `msg` (strict verification: no malleable
/// or small-order encodings).
pub(crate) fn verify(pin: &Pin, msg: &[u8], sig: &[u8; 64]) -> Result<(), ProtocolError> {
    let vk = VerifyingKey::from_bytes(&pin.0)
        .map_err(|_| ProtocolError::UntrustedConfig("identity key is not a valid point"))?;
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .map_err(|_| ProtocolError::UntrustedConfig("signature does not verify"))
}

/// One X25519 static key used as the Noise NK responder key, with its id and validity.
pub struct HandshakeKeyPair {
    /// The id clients name in their hello.
    pub key_id: u8,
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// First moment (unix ms) the key may be used.
    pub not_before_ms: u64,
    /// Last moment (unix ms) the key may be used.
    pub not_after_ms: u64,
}

impl fmt::Debug for HandshakeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeKeyPair")
            .field("key_id", &self.key_id)
            .field("public", &URL_SAFE_NO_PAD.encode(self.public))
            .field("not_before_ms", &self.not_before_ms)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

impl HandshakeKeyPair {
    /// A fresh random key.
    pub fn generate(
        key_id: u8,
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Result<Self, ProtocolError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        fill_random(secret.as_mut())?;
        Self::from_secret(key_id, &secret, not_before_ms, not_after_ms)
    }

    /// The key with this X25519 secret scalar.
    pub fn from_secret(
        key_id: u8,
        secret: &[u8; 32],
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> Result<Self, ProtocolError> {
        let public = x25519_public(secret)?;
        Ok(HandshakeKeyPair {
            key_id,
            secret: Zeroizing::new(*secret),
            public,
            not_before_ms,
            not_after_ms,
        })
    }

    /// The secret scalar, for writing to the key file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The public key published in the key configuration.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Whether `now_ms` is inside the validity period.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        self.not_before_ms <= now_ms && now_ms <= self.not_after_ms
    }
}

/// X25519 public key of a secret scalar, through the same backend the handshake uses.
fn x25519_public(secret: &[u8; 32]) -> Result<[u8; 32], ProtocolError> {
    use snow::params::DHChoice;
    let mut dh = crypto::resolver()
        .resolve_dh(&DHChoice::Curve25519)
        .ok_or(ProtocolError::Crypto("no X25519"))?;
    dh.set(secret);
    dh.pubkey()
        .try_into()
        .map_err(|_| ProtocolError::Crypto("X25519 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_text_round_trip_and_rejects_junk() {
        let id = IdentityKey::from_seed(&[1u8; 32]);
        let pin = id.pin();
        let s = pin.to_string();
        assert!(s.starts_with("ed25519:"));
        assert_eq!(s.parse::<Pin>().unwrap(), pin);
        assert!("ed25519:".parse::<Pin>().is_err());
        assert!(s.replace("ed25519:", "x25519:").parse::<Pin>().is_err());
        assert!(format!("{s}AA").parse::<Pin>().is_err());
    }

    #[test]
    fn signatures_verify_only_under_the_signing_pin() {
        let a = IdentityKey::from_seed(&[1u8; 32]);
        let b = IdentityKey::from_seed(&[2u8; 32]);
        let sig = a.sign(b"msg");
        assert!(verify(&a.pin(), b"msg", &sig).is_ok());
        assert!(verify(&b.pin(), b"msg", &sig).is_err());
        assert!(verify(&a.pin(), b"msh", &sig).is_err());
    }

    #[test]
    fn x25519_public_matches_rfc7748_vector() {
        // RFC 7748 §6.1, Alice's key pair.
        let sk: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let pk = HandshakeKeyPair::from_secret(1, &sk, 0, 1).unwrap();
        assert_eq!(
            hex::encode(pk.public()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert!(pk.is_valid_at(1));
        assert!(!pk.is_valid_at(2));
        assert!(!format!("{pk:?}").contains(&hex::encode(sk)));
    }
}
