//! The signed key configuration: what `GET /.well-known/sessioncert/config` returns.
//!
//! It names the server's identity, the handshake keys clients may use (with ids and
//! validity), and the versions and suites the server speaks, all signed by the
//! identity key. A client that pins the identity can therefore trust handshake keys it
//! has never seen, and an attacker cannot strip suites or versions from the list
//! without breaking the signature.

use crate::codec::{Reader, Writer};
use crate::identity::{verify, IdentityKey, Pin};
use crate::ProtocolError;

/// Magic bytes that open every encoded key configuration.
pub const CONFIG_MAGIC: &[u8; 4] = b"SCKC";
/// Encoding format of the key configuration.
pub const CONFIG_FORMAT: u8 = 1;
/// Signature algorithm id for Ed25519 in a signed configuration.
pub const SIG_ED25519: u16 = 0x0001;
/// Domain-separation label prepended to the configuration before signing.
pub const CONFIG_SIGNING_LABEL: &[u8] = b"sessioncert/1 key config\x00";

/// Protocol version 1.
pub const VERSION_1: u16 = 0x0001;
/// Handshake suite `Noise_NK_25519_AESGCM_SHA256`.
pub const HS_NOISE_NK_25519_AESGCM_SHA256: u16 = 0x0001;
/// The Noise protocol name of [`HS_NOISE_NK_25519_AESGCM_SHA256`].
pub const NOISE_NK_PARAMS: &str = "Noise_NK_25519_AESGCM_SHA256";

/// Clock difference tolerated between client and server when checking a
/// configuration's validity (5 minutes).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Longest validity a client accepts for one signed configuration (7 days).
pub const MAX_CONFIG_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;
/// The validity this implementation's servers give their configurations (24 h).
pub const CONFIG_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// A handshake key as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    /// Id the client names in its hello.
    pub key_id: u8,
    /// Handshake suite this key is for.
    pub hs_suite: u16,
    /// The public key (32 bytes for X25519).
    pub public: Vec<u8>,
    /// Validity start, unix ms.
    pub not_before_ms: u64,
    /// Validity end, unix ms.
    pub not_after_ms: u64,
}

/// The contents of a key configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// The identity that signs this configuration.
    pub identity: Pin,
    /// When it was issued, unix ms.
    pub issued_at_ms: u64,
    /// The configuration is valid until then (unix ms); servers re-sign it as they run.
    pub expires_at_ms: u64,
    /// Protocol versions, preferred first.
    pub versions: Vec<u16>,
    /// Record suite ids, preferred first.
    pub record_suites: Vec<u16>,
    /// Handshake keys.
    pub keys: Vec<PublishedKey>,
}

impl KeyConfig {
    /// The canonical byte encoding (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(CONFIG_MAGIC);
        out.put_u8(CONFIG_FORMAT);
        out.extend_from_slice(&self.identity.0);
        out.put_u64(self.issued_at_ms);
        out.put_u64(self.expires_at_ms);
        out.put_u16_list(&self.versions);
        out.put_u16_list(&self.record_suites);
        out.put_u8(self.keys.len() as u8);
        for k in &self.keys {
            out.put_u8(k.key_id);
            out.put_u16(k.hs_suite);
            out.put_bytes16(&k.public);
            out.put_u64(k.not_before_ms);
            out.put_u64(k.not_after_ms);
        }
        out
    }

    /// Parses the canonical encoding; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "key config");
        if r.take(4)? != CONFIG_MAGIC || r.u8()? != CONFIG_FORMAT {
            return Err(ProtocolError::malformed("key config"));
        }
        let identity = Pin(r.array()?);
        let issued_at_ms = r.u64()?;
        let expires_at_ms = r.u64()?;
        let versions = r.u16_list()?;
        let record_suites = r.u16_list()?;
        let n = r.u8()?;
        let mut keys = Vec::with_capacity(n as usize);
        for _ in 0..n {
            keys.push(PublishedKey {
                key_id: r.u8()?,
                hs_suite: r.u16()?,
                public: r.bytes16()?.to_vec(),
                not_before_ms: r.u64()?,
                not_after_ms: r.u64()?,
            });
        }
        r.finish()?;
        Ok(KeyConfig {
            identity,
            issued_at_ms,
            expires_at_ms,
            versions,
            record_suites,
            keys,
        })
    }

    /// The key a client should use at `now_ms`: valid, of a handshake suite we speak,
    /// and the most recently started among those.
    pub fn current_key(&self, now_ms: u64) -> Option<&PublishedKey> {
        self.keys
            .iter()
            .filter(|k| {
                k.hs_suite == HS_NOISE_NK_25519_AESGCM_SHA256
                    && k.public.len() == 32
                    && k.not_before_ms <= now_ms
                    && now_ms <= k.not_after_ms
            })
            .max_by_key(|k| (k.not_before_ms, k.key_id))
    }

    /// Whether the configuration is within its own validity at `now_ms` (PROTOCOL §5.3
    /// rule 5): issued before it expires, valid for at most [`MAX_CONFIG_VALIDITY_MS`],
    /// and `now` inside `[issued_at, expires_at]` give or take [`MAX_CLOCK_SKEW_MS`].
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.issued_at_ms < self.expires_at_ms
            && self.expires_at_ms - self.issued_at_ms <= MAX_CONFIG_VALIDITY_MS
            && self.issued_at_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
            && now_ms <= self.expires_at_ms.saturating_add(MAX_CLOCK_SKEW_MS)
    }

    /// Signs this configuration with `identity`, which must be the one it names.
    pub fn sign(&self, identity: &IdentityKey) -> Result<SignedKeyConfig, ProtocolError> {
        if identity.pin() != self.identity {
            return Err(ProtocolError::Crypto("config names a different identity"));
        }
        let config = self.encode();
        let signature = identity.sign(&signing_input(&config));
        Ok(SignedKeyConfig { config, signature })
    }
}

fn signing_input(config: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONFIG_SIGNING_LABEL.len() + config.len());
    m.extend_from_slice(CONFIG_SIGNING_LABEL);
    m.extend_from_slice(config);
    m
}

/// How a client decides to trust a server's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept only this identity (the normal, safe choice).
    Pin(Pin),
    /// Accept any of these identities: the current one and the next one while a server's
    /// identity is rotated (PROTOCOL §4). An empty set accepts nothing.
    AnyOf(Vec<Pin>),
    /// Trust-on-first-use: accept whatever identity signs the config. An active attacker
    /// on first contact can impersonate the server; callers must warn loudly.
    FirstUse,
}

impl Trust {
    /// Trust in exactly these pins: one pin is [`Trust::Pin`], several [`Trust::AnyOf`]
    /// (duplicates removed, order kept).
    pub fn pins(pins: impl IntoIterator<Item = Pin>) -> Trust {
        let mut set: Vec<Pin> = Vec::new();
        for p in pins {
            if !set.contains(&p) {
                set.push(p);
            }
        }
        match set.as_slice() {
            [one] => Trust::Pin(*one),
            _ => Trust::AnyOf(set),
        }
    }

    /// Whether a configuration signed by `identity` is trusted (always, on first use).
    pub fn accepts(&self, identity: &Pin) -> bool {
        match self {
            Trust::Pin(p) => p == identity,
            Trust::AnyOf(set) => set.contains(identity),
            Trust::FirstUse => true,
        }
    }

    /// Whether this is trust on first use (no pin at all).
    pub fn is_first_use(&self) -> bool {
        matches!(self, Trust::FirstUse)
    }
}

/// A key configuration with its signature, as served.
///
/// Wire form: `u16 sig_alg (= 1, Ed25519) || signature[64] || config bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKeyConfig {
    /// The canonical encoding of a [`KeyConfig`].
    pub config: Vec<u8>,
    /// Ed25519 signature over `CONFIG_SIGNING_LABEL || config`.
    pub signature: [u8; 64],
}

impl SignedKeyConfig {
    /// The served bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(66 + self.config.len());
        out.put_u16(SIG_ED25519);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.config);
        out
    }

    /// Parses served bytes (does not verify).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "signed key config");
        if r.u16()? != SIG_ED25519 {
            return Err(ProtocolError::malformed("signed key config"));
        }
        let signature = r.array()?;
        let config = r.rest().to_vec();
        Ok(SignedKeyConfig { config, signature })
    }

    /// Verifies the signature and the identity against `trust`, and that at least one
    /// handshake key is usable at `now_ms`. Returns the parsed configuration, in the only
    /// form a handshake can start from.
    pub fn verify(&self, trust: &Trust, now_ms: u64) -> Result<VerifiedKeyConfig, ProtocolError> {
        let cfg = KeyConfig::decode(&self.config)?;
        if !trust.accepts(&cfg.identity) {
            return Err(ProtocolError::UntrustedConfig(
                "server identity does not match the pin",
            ));
        }
        verify(&cfg.identity, &signing_input(&self.config), &self.signature)?;
        if !cfg.is_fresh(now_ms) {
            return Err(ProtocolError::UntrustedConfig(
                "stale configuration (outside its validity; check the clock)",
            ));
        }
        if cfg.current_key(now_ms).is_none() {
            return Err(ProtocolError::UntrustedConfig(
                "no handshake key is valid now (check the clock)",
            ));
        }
        Ok(VerifiedKeyConfig(cfg))
    }
}

/// A key configuration whose signature, identity and freshness were checked by
/// [`SignedKeyConfig::verify`]: the only value [`crate::ClientHandshake::start`] accepts,
/// so a handshake can never start from bytes nobody verified. Read it through `Deref`;
/// it cannot be built or changed any other way.
///
/// ```
/// # use sessioncert_proto::{ClientHandshake, ClientOffer, SignedKeyConfig, Trust};
/// fn hello(signed: &SignedKeyConfig, trust: &Trust, now_ms: u64) {
///     let config = signed.verify(trust, now_ms).unwrap();
///     let _ = ClientHandshake::start(&config, ClientOffer::default(), now_ms);
/// }
/// ```
/// An unverified configuration does not compile:
/// ```compile_fail,E0308
/// # use sessioncert_proto::{ClientHandshake, ClientOffer, KeyConfig};
/// fn hello(config: &KeyConfig, now_ms: u64) {
///     let _ = ClientHandshake::start(config, ClientOffer::default(), now_ms);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKeyConfig(KeyConfig);

impl core::ops::Deref for VerifiedKeyConfig {
    type Target = KeyConfig;
    fn deref(&self) -> &KeyConfig {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &IdentityKey) -> KeyConfig {
        KeyConfig {
            identity: id.pin(),
            issued_at_ms: 1_000,
            expires_at_ms: 1_000 + CONFIG_VALIDITY_MS,
            versions: vec![VERSION_1],
            record_suites: vec![1, 2],
            keys: vec![
                PublishedKey {
                    key_id: 1,
                    hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                    public: vec![9; 32],
                    not_before_ms: 0,
                    not_after_ms: 10_000,
                },
                PublishedKey {
                    key_id: 2,
                    hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                    public: vec![8; 32],
                    not_before_ms: 5_000,
                    not_after_ms: 20_000,
                },
            ],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let id = IdentityKey::from_seed(&[3; 32]);
        let c = sample(&id);
        assert_eq!(KeyConfig::decode(&c.encode()).unwrap(), c);
        let s = c.sign(&id).unwrap();
        assert_eq!(SignedKeyConfig::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn current_key_picks_newest_valid() {
        let id = IdentityKey::from_seed(&[3; 32]);
        let c = sample(&id);
        assert_eq!(c.current_key(1_000).unwrap().key_id, 1);
        assert_eq!(c.current_key(6_000).unwrap().key_id, 2);
        assert_eq!(c.current_key(15_000).unwrap().key_id, 2);
        assert!(c.current_key(25_000).is_none());
    }

    #[test]
    fn verify_checks_pin_signature_and_validity() {
        let id = IdentityKey::from_seed(&[3; 32]);
        let other = IdentityKey::from_seed(&[4; 32]);
        let s = sample(&id).sign(&id).unwrap();
        assert!(s.verify(&Trust::Pin(id.pin()), 1_000).is_ok());
        assert!(s.verify(&Trust::FirstUse, 1_000).is_ok());
        assert!(matches!(
            s.verify(&Trust::Pin(other.pin()), 1_000),
            Err(ProtocolError::UntrustedConfig(_))
        ));
        assert!(s.verify(&Trust::Pin(id.pin()), 30_000).is_err());
        // An attacker who strips a suite must re-sign, which they cannot.
        let mut stripped = s.clone();
        let mut cfg = KeyConfig::decode(&s.config).unwrap();
        cfg.record_suites = vec![2];
        stripped.config = cfg.encode();
        assert!(stripped.verify(&Trust::FirstUse, 1_000).is_err());
        // Signed by someone else but naming our identity: refused.
        let mut forged = sample(&id);
        forged.identity = other.pin();
        let forged = forged.sign(&other).unwrap();
        assert!(forged.verify(&Trust::Pin(id.pin()), 1_000).is_err());
    }

    #[test]
    fn signing_with_the_wrong_identity_is_refused() {
        let id = IdentityKey::from_seed(&[3; 32]);
        let other = IdentityKey::from_seed(&[4; 32]);
        assert!(sample(&id).sign(&other).is_err());
    }

    #[test]
    fn configurations_are_fresh_only_inside_their_validity() {
        let id = IdentityKey::from_seed(&[3; 32]);
        let mut c = sample(&id);
        let (issued, expires) = (c.issued_at_ms, c.expires_at_ms);
        assert!(c.is_fresh(issued) && c.is_fresh(expires));
        assert!(c.is_fresh(issued - MAX_CLOCK_SKEW_MS.min(issued)));
        assert!(c.is_fresh(expires + MAX_CLOCK_SKEW_MS));
        assert!(!c.is_fresh(expires + MAX_CLOCK_SKEW_MS + 1));
        c.issued_at_ms = 10 * MAX_CLOCK_SKEW_MS;
        c.expires_at_ms = c.issued_at_ms + CONFIG_VALIDITY_MS;
        assert!(
            !c.is_fresh(c.issued_at_ms - MAX_CLOCK_SKEW_MS - 1),
            "issued in the future"
        );
        c.expires_at_ms = c.issued_at_ms;
        assert!(!c.is_fresh(c.issued_at_ms), "expires when issued");
        c.expires_at_ms = c.issued_at_ms + MAX_CONFIG_VALIDITY_MS + 1;
        assert!(!c.is_fresh(c.issued_at_ms), "valid for too long");
        // `verify` applies it, after the signature.
        let s = sample(&id).sign(&id).unwrap();
        assert!(s.verify(&Trust::FirstUse, 2_000).is_ok());
        assert!(matches!(
            s.verify(&Trust::FirstUse, expires + MAX_CLOCK_SKEW_MS + 1),
            Err(ProtocolError::UntrustedConfig(m)) if m.starts_with("stale")
        ));
    }
}
