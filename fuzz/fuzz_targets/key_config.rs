//! Key configuration: `SignedKeyConfig::decode` → `verify` (→ `KeyConfig::decode`), the
//! path a client runs on the body of `GET /.well-known/sessioncert/config`.
//!
//! Invariants:
//! * decode → encode is the identity on bytes (signed wrapper and inner config);
//! * a configuration that verifies under the pin is byte for byte one the identity
//!   signed (re-signing the parsed config reproduces the input), it is fresh
//!   (`is_fresh`) and it has a usable key;
//! * under trust-on-first-use, nothing but the fixture identity's own configs verify
//!   (the fuzzer cannot forge an Ed25519 signature);
//! * any change to a correctly signed configuration makes verification fail.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{fixture, mutate, Mutation, NOW_MS};
use sessioncert_proto::config::PublishedKey;
use sessioncert_proto::{KeyConfig, SignedKeyConfig, Trust};

#[derive(Debug, Arbitrary)]
struct ArbKey {
    key_id: u8,
    hs_suite: u16,
    public: Vec<u8>,
    not_before_ms: u64,
    not_after_ms: u64,
}

#[derive(Debug, Arbitrary)]
struct ArbConfig {
    issued_at_ms: u64,
    /// `Ok(d)`: expires `d` seconds after issue; `Err(t)`: expires at `t`.
    expires: Result<u32, u64>,
    versions: Vec<u16>,
    record_suites: Vec<u16>,
    keys: Vec<ArbKey>,
}

#[derive(Debug, Arbitrary)]
enum Input {
    /// Bytes off the wire.
    Raw { data: Vec<u8>, now: u64 },
    /// The fixture's signed configuration, edited.
    Edited { muts: Vec<Mutation>, now: u64 },
    /// A configuration built by the fuzzer, signed by the fixture identity, then edited.
    Built {
        cfg: ArbConfig,
        muts: Vec<Mutation>,
        now: u64,
    },
}

/// Checks every invariant that holds for any input bytes.
fn check_bytes(data: &[u8], now: u64) -> bool {
    let f = fixture();
    let signed = match SignedKeyConfig::decode(data) {
        Ok(s) => s,
        Err(_) => {
            assert!(
                data.len() < 66 || data[..2] != [0, 1],
                "valid framing refused"
            );
            return false;
        }
    };
    assert_eq!(signed.encode(), data, "signed config does not round-trip");
    if let Ok(cfg) = KeyConfig::decode(&signed.config) {
        assert_eq!(
            cfg.encode(),
            signed.config,
            "key config does not round-trip"
        );
    }
    let pinned = signed.verify(&Trust::Pin(f.pin), now);
    let tofu = signed.verify(&Trust::FirstUse, now);
    assert_eq!(
        pinned.is_ok(),
        tofu.is_ok(),
        "pin and TOFU disagree on our identity"
    );
    match pinned {
        Ok(cfg) => {
            assert_eq!(cfg.identity, f.pin);
            assert!(
                cfg.current_key(now).is_some(),
                "verified without a usable key"
            );
            assert!(cfg.is_fresh(now), "verified a stale configuration");
            assert_eq!(cfg.encode(), signed.config);
            let again = cfg.sign(&f.identity).expect("re-sign");
            assert_eq!(
                again, signed,
                "accepted a configuration the identity did not sign"
            );
            true
        }
        Err(_) => false,
    }
}

fn build(cfg: &ArbConfig) -> KeyConfig {
    // The encoding carries u8 counts and u16 lengths; stay inside them.
    let f = fixture();
    KeyConfig {
        identity: f.pin,
        issued_at_ms: cfg.issued_at_ms,
        expires_at_ms: match cfg.expires {
            Ok(d) => cfg.issued_at_ms.saturating_add(d as u64 * 1000),
            Err(t) => t,
        },
        versions: cfg.versions.iter().copied().take(255).collect(),
        record_suites: cfg.record_suites.iter().copied().take(255).collect(),
        keys: cfg
            .keys
            .iter()
            .take(255)
            .map(|k| PublishedKey {
                key_id: k.key_id,
                hs_suite: k.hs_suite,
                public: k.public.iter().copied().take(u16::MAX as usize).collect(),
                not_before_ms: k.not_before_ms,
                not_after_ms: k.not_after_ms,
            })
            .collect(),
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    match input {
        Input::Raw { data, now } => {
            let now = if now & 1 == 0 { NOW_MS } else { now };
            check_bytes(&data, now);
        }
        Input::Edited { muts, now } => {
            let now = if now & 1 == 0 { NOW_MS } else { now };
            let data = mutate(&f.signed_bytes, &muts);
            let ok = check_bytes(&data, now);
            if data != f.signed_bytes {
                assert!(!ok, "an edited configuration verified");
            } else if now == NOW_MS {
                assert!(ok, "the genuine configuration did not verify");
            }
        }
        Input::Built { cfg, muts, now } => {
            let cfg = build(&cfg);
            // Mostly "now" inside the validity, so the signature check is reached.
            let now = if now & 1 == 0 {
                cfg.issued_at_ms.saturating_add(now >> 40)
            } else {
                now
            };
            assert_eq!(
                KeyConfig::decode(&cfg.encode()).expect("decode own encoding"),
                cfg
            );
            let signed = cfg.sign(&f.identity).expect("sign").encode();
            let data = mutate(&signed, &muts);
            let ok = check_bytes(&data, now);
            if data != signed {
                assert!(!ok, "an edited configuration verified");
            } else {
                assert_eq!(ok, cfg.current_key(now).is_some() && cfg.is_fresh(now));
            }
        }
    }
});
