//! Checks the committed test vectors in `test-vectors/` against the protocol core.
//!
//! * the files are exactly what this crate's `generate` produces (no silent drift);
//! * every output is re-derived from the inputs in the files, byte for byte, through the
//!   crate's public API, and the intermediates through the from-the-spec reference
//!   implementation (so `docs/PROTOCOL.md` and the code cannot disagree unnoticed);
//! * every negative case is refused with the stated `ErrorCode`.
//!
//! Run under both crypto backends:
//! `cargo test -p sessioncert-vectors` and
//! `cargo test -p sessioncert-vectors --no-default-features --features rustcrypto`.

use serde::de::DeserializeOwned;
use sessioncert_proto::config::{CONFIG_SIGNING_LABEL, MAX_CLOCK_SKEW_MS, MAX_CONFIG_VALIDITY_MS};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::handshake::{
    parse_client_hello, respond_with_ephemeral_for_vectors, MAX_TICKET_LEN,
};
use sessioncert_proto::{
    ClientSession, Confirmation, ErrorCode, HandshakeKeyPair, IdentityKey, KeyConfig,
    PendingServerSession, Pin, ServerSession, SessionId, SignedKeyConfig,
};
use sessioncert_vectors::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_code(name: &str, got: &str, want: &str) {
    assert!(
        ErrorCode::parse(want).is_some(),
        "{name}: {want:?} is not an ErrorCode wire name"
    );
    assert_eq!(got, want, "{name}: wrong error code");
}

const REGENERATE: &str = "cargo run -p sessioncert-proto --example gen_vectors -- test-vectors";

#[test]
fn committed_files_are_what_the_generator_produces() {
    for (name, text) in generate() {
        let committed = read(name);
        assert!(
            committed == text,
            "test-vectors/{name} differs from the generator's output. If the protocol change \
             is intended, regenerate with `{REGENERATE}` and review the diff."
        );
    }
}

#[test]
fn no_stale_vector_files() {
    let mut json: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    json.sort();
    let mut want: Vec<String> = FILES.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(json, want);
}

// ---------------------------------------------------------------------------------------
// key-config.json
// ---------------------------------------------------------------------------------------

fn check_identity(v: &IdentityV) {
    let id = IdentityKey::from_seed(&unhx_n(&v.seed));
    assert_eq!(hx(&id.pin().0), v.public);
    assert_eq!(id.pin().to_string(), v.pin);
    assert_eq!(v.pin.parse::<Pin>().unwrap(), Pin(unhx_n(&v.public)));
    // Independently of the crate: the Ed25519 public key of the seed.
    let sk = ed25519_dalek::SigningKey::from_bytes(&unhx_n(&v.seed));
    assert_eq!(hx(sk.verifying_key().as_bytes()), v.public);
}

fn check_handshake_key(k: &HandshakeKeyV) -> HandshakeKeyPair {
    let pair = HandshakeKeyPair::from_secret(
        k.key_id,
        &unhx_n(&k.secret),
        k.not_before_ms,
        k.not_after_ms,
    )
    .unwrap();
    assert_eq!(hx(pair.public()), k.public);
    assert_eq!(hx(&reference::x25519_public(&unhx_n(&k.secret))), k.public);
    assert_eq!(k.hs_suite, 1);
    pair
}

#[test]
fn key_config_vectors() {
    let f: KeyConfigFile = load("key-config.json");
    check_identity(&f.identity);
    check_identity(&f.other_identity);
    assert_eq!(f.signing_label.as_bytes(), CONFIG_SIGNING_LABEL);
    assert_eq!(f.max_clock_skew_ms, MAX_CLOCK_SKEW_MS);
    assert_eq!(f.max_config_validity_ms, MAX_CONFIG_VALIDITY_MS);
    assert_eq!(
        (f.max_clock_skew_ms, f.max_config_validity_ms),
        (300_000, 604_800_000)
    );
    let keys: Vec<_> = f.handshake_keys.iter().map(check_handshake_key).collect();

    // Encoding of the fields.
    let cfg = f.config.to_config();
    assert_eq!(cfg.identity.0, unhx_n::<32>(&f.identity.public));
    for (k, p) in keys.iter().zip(&cfg.keys) {
        assert_eq!(k.key_id, p.key_id);
        assert_eq!(&k.public()[..], &p.public[..]);
    }
    assert_eq!(hx(&cfg.encode()), f.config_encoded);
    assert_eq!(KeyConfig::decode(&unhx(&f.config_encoded)).unwrap(), cfg);

    // Signing input, signature (Ed25519 is deterministic) and the served layout.
    let signing_input = [CONFIG_SIGNING_LABEL, &unhx(&f.config_encoded)].concat();
    assert_eq!(hx(&signing_input), f.signing_input);
    let id = IdentityKey::from_seed(&unhx_n(&f.identity.seed));
    let signed = cfg.sign(&id).unwrap();
    assert_eq!(hx(&signed.signature), f.signature);
    assert_eq!(hx(&signed.encode()), f.signed_config);
    let decoded = SignedKeyConfig::decode(&unhx(&f.signed_config)).unwrap();
    assert_eq!(decoded, signed);
    {
        use ed25519_dalek::Verifier;
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&unhx_n(&f.identity.public)).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&unhx_n(&f.signature));
        vk.verify(&signing_input, &sig).unwrap();
    }
    let served = unhx(&f.signed_config);
    assert_eq!(&served[..2], &[0, 1]);
    assert_eq!(hx(&served[2..66]), f.signature);
    assert_eq!(hx(&served[66..]), f.config_encoded);
    // The layout of §5.1 by hand: magic, format, identity, issued_at_ms, expires_at_ms.
    let enc = unhx(&f.config_encoded);
    assert_eq!(&enc[..5], b"SCKC\x01");
    assert_eq!(hx(&enc[5..37]), f.identity.public);
    assert_eq!(&enc[37..45], &f.config.issued_at_ms.to_be_bytes());
    assert_eq!(&enc[45..53], &f.config.expires_at_ms.to_be_bytes());
    assert!(reference::config_fresh(
        f.config.issued_at_ms,
        f.config.expires_at_ms,
        NOW_MS
    ));

    for c in &f.current_key {
        assert_eq!(
            cfg.current_key(c.now_ms).map(|k| k.key_id),
            c.key_id,
            "{c:?}"
        );
    }
    for c in &f.verify_ok {
        let got = decode_and_verify(&unhx(&c.signed_config), parse_trust(&c.trust), c.now_ms)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(hx(&got.encode()), c.config_encoded, "{}", c.name);
    }
    assert!(!f.verify_fail.is_empty());
    for c in &f.verify_fail {
        let err = decode_and_verify(&unhx(&c.signed_config), parse_trust(&c.trust), c.now_ms)
            .expect_err(&c.name);
        assert_code(&c.name, &code(&err), &c.error);
    }
    // Freshness (§5.3 rule 5) by the reference, from the layout: every case whose
    // configuration is long enough to hold both times is fresh, except the stale_ ones.
    for (name, served, now) in f
        .verify_ok
        .iter()
        .map(|c| (&c.name, &c.signed_config, c.now_ms))
        .chain(
            f.verify_fail
                .iter()
                .map(|c| (&c.name, &c.signed_config, c.now_ms)),
        )
    {
        let b = unhx(served);
        if b.len() < 66 + 53 {
            continue;
        }
        let at = |i: usize| u64::from_be_bytes(b[66 + i..66 + i + 8].try_into().unwrap());
        let fresh = reference::config_fresh(at(37), at(45), now);
        assert_eq!(fresh, !name.starts_with("stale_"), "{name}: freshness");
    }
    let fail = |name: &str| {
        let c = f.verify_fail.iter().find(|c| c.name == name);
        let c = c.unwrap_or_else(|| panic!("no verify_fail case {name}"));
        assert_eq!(c.error, "handshake_failed", "{name}");
        SignedKeyConfig::decode(&unhx(&c.signed_config)).unwrap()
    };
    for name in [
        "stale_expired_beyond_skew",
        "stale_issued_in_future_beyond_skew",
        "stale_validity_over_7_days",
        "stale_expires_at_issue",
        "stale_expires_before_issue",
    ] {
        fail(name);
    }
    // Strict Ed25519 (§5.3), independently of the crate: what a lax verifier accepts.
    {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let small = fail("small_order_identity");
        let identity = ed25519_identity_encoding();
        assert_eq!(hx(&small.config[5..37]), hx(&identity));
        assert_eq!(&small.signature[..32], &identity[..]);
        assert_eq!(&small.signature[32..], &[0u8; 32][..]);
        let vk = VerifyingKey::from_bytes(&identity).unwrap();
        let sig = Signature::from_bytes(&small.signature);
        for msg in [
            [CONFIG_SIGNING_LABEL, &small.config].concat(),
            b"any other message".to_vec(),
        ] {
            assert!(vk.verify(&msg, &sig).is_ok(), "a lax verifier accepts it");
            assert!(vk.verify_strict(&msg, &sig).is_err());
        }
        let nc = fail("non_canonical_s");
        assert_eq!(hx(&nc.config), f.config_encoded);
        assert_eq!(hx(&nc.signature[..32]), f.signature[..64]);
        let s: [u8; 32] = unhx_n::<64>(&f.signature)[32..].try_into().unwrap();
        assert_eq!(&nc.signature[32..], &add_le(&s, &ED25519_L)[..]);
        assert!(nc.signature[63] >= 0x10, "S + L >= 2^252 > L");
        let vk = VerifyingKey::from_bytes(&unhx_n(&f.identity.public)).unwrap();
        assert!(vk
            .verify_strict(&signing_input, &Signature::from_bytes(&nc.signature))
            .is_err());
    }
    for p in &f.invalid_pins {
        assert!(p.text.parse::<Pin>().is_err(), "{} ({})", p.text, p.reason);
    }
}

// ---------------------------------------------------------------------------------------
// handshake.json
// ---------------------------------------------------------------------------------------

#[test]
fn handshake_vectors() {
    let f: HandshakeFile = load("handshake.json");
    let kc: KeyConfigFile = load("key-config.json");
    assert_eq!(
        f.config_encoded, kc.config_encoded,
        "same configuration in both files"
    );
    assert_eq!(f.server_keys, kc.handshake_keys);
    assert_eq!(
        f.noise_protocol_name,
        sessioncert_proto::config::NOISE_NK_PARAMS
    );
    assert_eq!(f.noise_protocol_name.as_bytes(), reference::NOISE_NAME);
    assert_eq!(f.prologue_label.as_bytes(), reference::PROLOGUE_LABEL);
    let cfg = KeyConfig::decode(&unhx(&f.config_encoded)).unwrap();
    let keys: Vec<_> = f.server_keys.iter().map(check_handshake_key).collect();
    assert_eq!(f.cases.len(), 4);
    // Every combination of offer and acceptance that matters is here.
    let combos: Vec<(bool, bool)> = f
        .cases
        .iter()
        .map(|c| (c.offer.streams, c.policy.streams))
        .collect();
    for want in [(true, true), (false, true), (true, false)] {
        assert!(combos.contains(&want), "a case with offer/accept {want:?}");
    }
    for name in SUITE_CASES {
        assert!(
            f.case(name).server_hello_fields.streams,
            "{name} negotiates streams"
        );
    }

    for c in &f.cases {
        let name = &c.name;
        let ce: [u8; 32] = unhx_n(&c.client_ephemeral_secret);
        let se: [u8; 32] = unhx_n(&c.server_ephemeral_secret);
        let sid = SessionId(unhx_n(&c.session_id));
        assert_eq!(sid.to_string(), c.session_id_text);
        assert_eq!(
            hx(&reference::x25519_public(&ce)),
            c.client_ephemeral_public
        );
        assert_eq!(
            hx(&reference::x25519_public(&se)),
            c.server_ephemeral_public
        );
        let key = cfg.current_key(c.now_ms).unwrap();
        assert_eq!(key.key_id, c.key_id);
        assert_eq!(hx(&key.public), c.server_static_public);

        // The crate, from the inputs.
        let (ch, hello) = restart_client(&verified(&cfg), &c.offer, c.now_ms, &ce);
        assert_eq!(hx(&hello), c.client_hello, "{name}: client hello");
        let (header, header_bytes, msg1) = parse_client_hello(&hello).unwrap();
        assert_eq!(hx(header_bytes), c.client_hello_header);
        assert_eq!(hx(msg1), c.noise_msg1);
        assert_eq!(header.versions, c.offer.versions);
        assert_eq!(header.key_id, c.key_id);
        let policy = c.policy.to_policy();
        let resp =
            respond_with_ephemeral_for_vectors(&keys, &policy, &hello, sid, c.now_ms, &se).unwrap();
        let ticket = unhx(&c.ticket);
        assert!(!ticket.is_empty() && ticket.len() <= MAX_TICKET_LEN);
        let server_hello_bytes = resp.server_hello(&ticket).unwrap();
        assert_eq!(
            hx(&server_hello_bytes),
            c.server_hello,
            "{name}: server hello"
        );
        assert_eq!(hx(&resp.noise_message), c.noise_msg2);
        let sh = &c.server_hello_fields;
        assert_eq!(resp.hello.version, sh.version);
        assert_eq!(resp.hello.suite.id(), sh.suite);
        assert_eq!(resp.hello.suite.id(), c.suite);
        assert_eq!(hx(resp.hello.session_id.as_bytes()), sh.session_id);
        assert_eq!(resp.hello.expires_at_ms, sh.expires_at_ms);
        assert_eq!(resp.hello.idle_timeout_ms, sh.idle_timeout_ms);
        assert_eq!(resp.hello.streams, sh.streams);
        assert_eq!(sh.streams, c.offer.streams && c.policy.streams, "{name}");
        assert_eq!(hx(&resp.pending.export()), c.server_pending_export);
        let (uc, client_view) = ch.read_server_hello(&server_hello_bytes).unwrap();
        assert_eq!(client_view, resp.hello);
        assert_eq!(hx(uc.client_finished()), c.client_finished);
        assert_eq!(
            hx(uc.confirmation()),
            c.confirmation,
            "{name}: confirmation"
        );
        assert_eq!(b64(uc.confirmation()), c.confirmation_base64url);
        // What the server receives: the header value decodes to the confirmation, which
        // parses into the ticket and client_finished.
        let received = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&c.confirmation_base64url)
                .unwrap()
        };
        let conf = Confirmation::parse(&received).unwrap();
        assert_eq!(hx(conf.ticket), c.ticket);
        assert_eq!(hx(conf.client_finished), c.client_finished);
        let server = resp.pending.confirm(conf.client_finished).unwrap();
        let unconfirmed = uc.into_session();
        assert_eq!(
            hx(&unconfirmed.export()),
            c.client_export_unconfirmed,
            "{name}: unconfirmed client export"
        );
        let mut client = ClientSession::import(&unhx(&c.client_export_unconfirmed)).unwrap();
        assert_eq!(client.confirmation().map(hx), Some(c.confirmation.clone()));
        client.mark_confirmed();
        assert_eq!(client.suite().id(), c.suite);
        assert_eq!(
            (client.streams(), server.streams()),
            (sh.streams, sh.streams)
        );
        assert_eq!(
            hx(&client.export()),
            c.client_export,
            "{name}: client export"
        );
        assert_eq!(
            ClientSession::import(&unhx(&c.client_export))
                .unwrap()
                .confirmation(),
            None
        );
        assert_eq!(
            hx(&server.export()),
            c.server_export,
            "{name}: server export"
        );
        // Exports import back to the same bytes.
        for e in [&c.client_export, &c.client_export_unconfirmed] {
            assert_eq!(hx(&ClientSession::import(&unhx(e)).unwrap().export()), *e);
        }
        assert_eq!(
            hx(&ServerSession::import(&unhx(&c.server_export))
                .unwrap()
                .export()),
            c.server_export
        );
        assert_eq!(
            hx(
                &PendingServerSession::import(&unhx(&c.server_pending_export))
                    .unwrap()
                    .export()
            ),
            c.server_pending_export
        );

        // The reference implementation, from the same inputs.
        let prologue = [reference::PROLOGUE_LABEL, &unhx(&c.client_hello_header)].concat();
        assert_eq!(hx(&prologue), c.prologue);
        // §6.4: the offer is 0004 0001 0000, no offer 0000; the answer likewise.
        let offer_ext = if c.offer.streams {
            "000400010000"
        } else {
            "0000"
        };
        assert_eq!(c.msg1_payload, offer_ext, "{name}");
        assert_eq!(
            reference::read_extensions(&unhx(&c.msg1_payload)),
            Ok(c.offer.streams)
        );
        let answer = reference::answer_extensions(c.offer.streams, c.policy.streams);
        assert_eq!(reference::read_extensions(&answer), Ok(sh.streams));
        let payload2 = reference::server_hello_payload(
            sh.version,
            sh.suite,
            &unhx_n(&sh.session_id),
            sh.expires_at_ms,
            sh.idle_timeout_ms,
            &answer,
        );
        assert_eq!(hx(&payload2), c.msg2_payload);
        assert!(c
            .msg2_payload
            .ends_with(if sh.streams { "000400010000" } else { "0000" }));
        assert_eq!(sh.expires_at_ms, c.now_ms + f.policy.lifetime_ms);
        let nk = reference::noise_nk(
            &prologue,
            &unhx_n(&c.server_static_public),
            &ce,
            &se,
            &unhx(&c.msg1_payload),
            &payload2,
        );
        let t = &c.noise;
        for (label, got, want) in [
            ("h_init", &nk.h_init[..], &t.h_init),
            ("h_prologue", &nk.h_prologue[..], &t.h_prologue),
            ("h_pre_message", &nk.h_pre_message[..], &t.h_pre_message),
            ("h_msg1_e", &nk.h_msg1_e[..], &t.h_msg1_e),
            ("dh_es", &nk.dh_es[..], &t.dh_es),
            ("ck_es", &nk.ck_es[..], &t.ck_es),
            ("k_es", &nk.k_es[..], &t.k_es),
            ("h_msg1", &nk.h_msg1[..], &t.h_msg1),
            ("h_msg2_e", &nk.h_msg2_e[..], &t.h_msg2_e),
            ("dh_ee", &nk.dh_ee[..], &t.dh_ee),
            ("ck_ee", &nk.ck_ee[..], &t.ck_ee),
            ("k_ee", &nk.k_ee[..], &t.k_ee),
            ("handshake_hash", &nk.h[..], &t.handshake_hash),
            ("k1", &nk.k1[..], &t.k1),
            ("k2", &nk.k2[..], &t.k2),
            ("noise_msg1", &nk.msg1[..], &c.noise_msg1),
            ("noise_msg2", &nk.msg2[..], &c.noise_msg2),
        ] {
            assert_eq!(&hx(got), want, "{name}: {label}");
        }
        // es from the server's side gives the same value.
        let s_secret = f.server_keys.iter().find(|k| k.key_id == c.key_id).unwrap();
        assert_eq!(
            hx(&reference::x25519(
                &unhx_n(&s_secret.secret),
                &unhx_n(&c.client_ephemeral_public)
            )),
            t.dh_es
        );
        let server_hello = unhx(&c.server_hello);
        assert_eq!(server_hello[0], 0x02);
        assert_eq!(
            server_hello,
            reference::server_hello(&nk.msg2, &unhx(&c.ticket))
        );
        let ks = reference::schedule(&nk.h, &nk.k1, &nk.k2);
        let k = &c.keys;
        for (label, got, want) in [
            ("prk", &ks.prk[..], &k.prk),
            ("c2s_key", &ks.c2s_key[..], &k.c2s_key),
            ("c2s_iv", &ks.c2s_iv[..], &k.c2s_iv),
            ("s2c_key", &ks.s2c_key[..], &k.s2c_key),
            ("s2c_iv", &ks.s2c_iv[..], &k.s2c_iv),
            ("finished_key", &ks.finished_key[..], &k.finished_key),
            ("refusal_key", &ks.refusal_key[..], &k.refusal_key),
            (
                "client_finished",
                &ks.client_finished[..],
                &c.client_finished,
            ),
            (
                "c2s_key_epoch1",
                &reference::ratchet(&ks.c2s_key)[..],
                &k.c2s_key_epoch1,
            ),
            (
                "s2c_key_epoch1",
                &reference::ratchet(&ks.s2c_key)[..],
                &k.s2c_key_epoch1,
            ),
        ] {
            assert_eq!(&hx(got), want, "{name}: {label}");
        }
        let confirmation = reference::confirmation(&unhx(&c.ticket), &ks.client_finished);
        assert_eq!(hx(&confirmation), c.confirmation);
        // The export layout of PROTOCOL.md §12.
        let sid_bytes: [u8; 16] = unhx_n(&c.session_id);
        let keys_part = [
            reference::direction_export(0, &ks.c2s_key, None, &ks.c2s_iv),
            reference::direction_export(0, &ks.s2c_key, None, &ks.s2c_iv),
            ks.refusal_key.to_vec(),
        ]
        .concat();
        for (pending, want) in [
            (&confirmation[..], &c.client_export_unconfirmed),
            (&[][..], &c.client_export),
        ] {
            let client_export = [
                reference::export_head(1, sh.version, c.suite, sh.streams, &sid_bytes),
                keys_part.clone(),
                0u64.to_be_bytes().to_vec(),
                reference::bytes16(pending),
            ]
            .concat();
            assert_eq!(hx(&client_export), *want, "{name}: reference client export");
        }
        assert_eq!(unhx(&c.client_export).len(), 175);
        assert_eq!(client_next_seq_offset(&unhx(&c.client_export)), 165);
        let server_export = [
            reference::export_head(2, sh.version, c.suite, sh.streams, &sid_bytes),
            keys_part,
            reference::window_state(&[]),
        ]
        .concat();
        assert_eq!(server_export.len(), 301);
        assert_eq!(hx(&server_export), c.server_export);
        assert_eq!(
            hx(&[server_export, ks.client_finished.to_vec()].concat()),
            c.server_pending_export
        );
    }
}

/// The ticket may be 1 to 1024 bytes: the largest is accepted (the negative vectors
/// cover 0 and 1025).
#[test]
fn largest_ticket_is_accepted() {
    let f: HandshakeFile = load("handshake.json");
    let c = f.case("aes-256-gcm");
    let cfg = verified(&KeyConfig::decode(&unhx(&f.config_encoded)).unwrap());
    let (ch, _) = restart_client(
        &cfg,
        &c.offer,
        c.now_ms,
        &unhx_n(&c.client_ephemeral_secret),
    );
    let ticket = vec![0x5a; MAX_TICKET_LEN];
    let hello = reference::server_hello(&unhx(&c.noise_msg2), &ticket);
    let (uc, _) = ch.read_server_hello(&hello).unwrap();
    let conf = Confirmation::parse(uc.confirmation()).unwrap();
    assert_eq!(conf.ticket, &ticket[..]);
}

#[test]
fn handshake_negative_vectors() {
    let f: HandshakeFile = load("handshake.json");
    assert!(f.negative.len() >= 20);
    for n in &f.negative {
        let err = run_handshake_op(&f, &n.case, &n.op, &unhx(&n.input))
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", n.name));
        assert_code(&n.name, &err, &n.error);
        // Crafted payloads: the reference rebuilds the input and refuses the payload.
        if let Some(p) = &n.payload {
            let c = f.case(&n.case);
            let payload = unhx(p);
            assert_eq!(
                hx(&crafted_input(c, &n.op, &payload)),
                n.input,
                "{}",
                n.name
            );
            let offered = reference::read_extensions(&unhx(&c.msg1_payload)).unwrap();
            assert_eq!(
                reference_reads_payload(c, &n.op, &payload, offered),
                Err("malformed"),
                "{}: reference",
                n.name
            );
            assert_eq!(n.error, "malformed", "{}", n.name);
        }
    }
    for name in [
        "duplicate_extension",
        "streamed_records_with_data",
        "extension_entry_cut",
        "unsolicited_streams_acceptance",
    ] {
        assert!(
            f.negative
                .iter()
                .any(|n| n.name == name && n.payload.is_some()),
            "no negative case {name}"
        );
    }
}

#[test]
fn handshake_extension_vectors() {
    let f: HandshakeFile = load("handshake.json");
    assert!(f.extension_cases.iter().any(|e| e.op == "respond"));
    assert!(f
        .extension_cases
        .iter()
        .any(|e| e.op == "read_server_hello"));
    for e in &f.extension_cases {
        let c = f.case(&e.case);
        let payload = unhx(&e.payload);
        // An unknown type is really there.
        assert!(
            payload
                .windows(2)
                .any(|w| w == [0x7f, 0x00] || w == [0xfe, 0x01]),
            "{}",
            e.name
        );
        assert_eq!(
            hx(&crafted_input(c, &e.op, &payload)),
            e.input,
            "{}",
            e.name
        );
        let (streams, output) = run_extension_op(&f, &e.case, &e.op, &unhx(&e.input));
        assert_eq!(
            (streams, hx(&output)),
            (e.streams, e.output.clone()),
            "{}",
            e.name
        );
        let (ref_streams, ref_output) = reference_extension_op(c, &e.op, &payload);
        assert_eq!(
            (ref_streams, hx(&ref_output)),
            (e.streams, e.output.clone()),
            "{}: reference",
            e.name
        );
    }
}

#[test]
fn session_export_format_vectors() {
    let f: HandshakeFile = load("handshake.json");
    let c = f.case("aes-256-gcm");
    let (client, server) = (unhx(&c.client_export), unhx(&c.server_export));
    assert!(f.export_cases.iter().any(|e| e.error.is_none()));
    assert!(f.export_cases.iter().any(|e| e.error.is_some()));
    for e in &f.export_cases {
        let got = run_export_case(&e.role, &unhx(&e.input));
        match (&got, &e.error) {
            (Ok((export, streams)), None) => {
                assert_eq!(Some(hx(export)), e.reexport, "{}", e.name);
                assert_eq!(Some(*streams), e.streams, "{}", e.name);
                // Format 1 holds no flags: the same session, now without streams.
                let genuine = if e.role == "client" { &client } else { &server };
                assert_eq!(hx(&reference::export_as_format_1(genuine)), e.input);
                assert_eq!(*export, export_with_flags(genuine, 0), "{}", e.name);
            }
            (Err(code), Some(want)) => assert_code(&e.name, code, want),
            _ => panic!("{}: got {got:?}, want {:?}", e.name, e.error),
        }
    }
}

// ---------------------------------------------------------------------------------------
// records.json
// ---------------------------------------------------------------------------------------

fn check_full_plaintexts(ex: &ExchangeV) {
    if let Some(full) = &ex.request.full {
        assert_eq!(ex.request.binding, ReqBindingV::Full);
        let req = full.to_request();
        assert_eq!(hx(&req.encode()), ex.request.plaintext, "{}", ex.name);
        assert_eq!(
            FullRequest::decode(&unhx(&ex.request.plaintext)).unwrap(),
            req
        );
    } else {
        assert!(matches!(ex.request.binding, ReqBindingV::Header { .. }));
    }
    if let Some(full) = &ex.response.full {
        assert_eq!(ex.response.binding, RespBindingV::Full);
        let resp = full.to_response();
        assert_eq!(
            hx(&resp.encode().unwrap()),
            ex.response.plaintext,
            "{}",
            ex.name
        );
        assert_eq!(
            FullResponse::decode(&unhx(&ex.response.plaintext)).unwrap(),
            resp
        );
    } else {
        assert!(matches!(ex.response.binding, RespBindingV::Header { .. }));
    }
}

fn req_type(b: &ReqBindingV) -> u8 {
    match b {
        ReqBindingV::Header { .. } => 0x01,
        ReqBindingV::Full => 0x02,
    }
}

fn resp_type(b: &RespBindingV) -> u8 {
    match b {
        RespBindingV::Header { .. } => 0x81,
        RespBindingV::Full => 0x82,
    }
}

/// The fields of a request AD, split by hand along the layout of PROTOCOL.md §8.2.
#[derive(Debug, PartialEq)]
struct SplitRequestAd {
    record_type: u8,
    session_id: [u8; 16],
    seq: u64,
    /// Header mode: method, target, path, query, content type and the covered pairs.
    line: Option<HeaderLineV>,
}

/// Reads big-endian fields off the front of a byte string.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn bytes32(&mut self) -> String {
        let len = u32::from_be_bytes(self.take(4).try_into().unwrap()) as usize;
        String::from_utf8(self.take(len).to_vec()).unwrap()
    }
}

fn split_request_ad(ad: &[u8]) -> SplitRequestAd {
    let mut c = Cursor(ad);
    assert_eq!(c.take(21), b"sessioncert/1 request");
    let record_type = c.take(1)[0];
    let session_id: [u8; 16] = c.take(16).try_into().unwrap();
    let seq = u64::from_be_bytes(c.take(8).try_into().unwrap());
    let line = match record_type {
        0x01 => {
            let method = c.bytes32();
            let target = c.bytes32();
            let path = c.bytes32();
            let query = c.bytes32();
            let content_type = c.bytes32();
            let count = c.take(1)[0] as usize;
            assert!(count <= 16, "covered_count is 0..16");
            let covered = (0..count).map(|_| (c.bytes32(), c.bytes32())).collect();
            Some(HeaderLineV {
                method,
                target,
                path,
                query,
                content_type,
                covered,
            })
        }
        0x02 => None,
        t => panic!("request AD with record type {t:#04x}"),
    };
    assert!(c.0.is_empty(), "nothing after the last field");
    SplitRequestAd {
        record_type,
        session_id,
        seq,
        line,
    }
}

/// Whether `t` is an origin as §8.2 describes it: `http` or `https`, `://`, a lower-case
/// authority with no path, query, fragment or user info.
fn is_origin(t: &str) -> bool {
    let Some(authority) = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
    else {
        return false;
    };
    !authority.is_empty()
        && !authority
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b"/?#@ ".contains(&b))
}

/// Headers §8.2 forbids in `sessioncert-covered`, besides every `sessioncert-*` one.
const UNCOVERABLE: [&str; 9] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// §8.2 and §13 by hand: the target, inner content type and covered headers a server
/// rebuilds from the header fields it receives; method, path and query come from the
/// request line.
fn line_from_headers(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
) -> HeaderLineV {
    let one = |name: &str| -> Option<String> {
        let mut v = headers.iter().filter(|(n, _)| n == name);
        let first = v.next().map(|(_, v)| v.clone());
        assert!(v.next().is_none(), "one {name} header");
        first
    };
    let target = one("sessioncert-target").expect("sessioncert-target");
    assert!(is_origin(&target), "{target:?} is an origin");
    let content_type = one("sessioncert-content-type").unwrap_or_default();
    let names: Vec<String> = one("sessioncert-covered")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    assert!(names.len() <= 16, "at most 16 covered headers");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(*n, n.to_ascii_lowercase(), "covered names are lower case");
        assert!(!names[..i].contains(n), "no duplicate covered names");
        assert!(
            !UNCOVERABLE.contains(&n.as_str()) && !n.starts_with("sessioncert-"),
            "{n} may not be covered"
        );
    }
    let covered = names
        .into_iter()
        .map(|n| {
            let lines: Vec<&str> = headers
                .iter()
                .filter(|(h, _)| *h == n)
                .map(|(_, v)| v.as_str())
                .collect();
            let value = lines.join(", ");
            (n, value)
        })
        .collect();
    HeaderLineV {
        method: method.into(),
        target,
        path: path.into(),
        query: query.into(),
        content_type,
        covered,
    }
}

/// The binding, the AD and the HTTP transport of one request and its response, checked
/// from the text of §8.2 and §13 alone.
fn check_request_from_spec(what: &str, ex: &ExchangeV, sid: &[u8; 16]) {
    let rq = &ex.request;
    let split = split_request_ad(&unhx(&rq.ad));
    assert_eq!(split.record_type, req_type(&rq.binding), "{what}");
    assert_eq!(&split.session_id, sid, "{what}");
    assert_eq!(split.seq, rq.seq, "{what}");
    let head = match &rq.binding {
        ReqBindingV::Header(l) => {
            assert_eq!(split.line.as_ref(), Some(l), "{what}: AD fields");
            let rebuilt = line_from_headers(&l.method, &l.path, &l.query, &rq.headers);
            assert_eq!(&rebuilt, l, "{what}: binding rebuilt from the headers");
            l.method == "HEAD"
        }
        ReqBindingV::Full => {
            assert_eq!(split.line, None, "{what}");
            assert!(rq.headers.is_empty(), "{what}");
            false
        }
    };
    // §13: HEAD has no body either way; both records travel in sessioncert-record.
    let decode = |v: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .unwrap()
    };
    let rs = &ex.response;
    if head {
        assert!(rq.plaintext.is_empty() && rs.plaintext.is_empty(), "{what}");
        for (b64_record, record) in [
            (&rq.record_base64url, &rq.record),
            (&rs.record_base64url, &rs.record),
        ] {
            let v = b64_record
                .as_deref()
                .expect("HEAD records in sessioncert-record");
            assert_eq!(hx(&decode(v)), *record, "{what}: sessioncert-record");
            assert!(!v.contains('='), "{what}: unpadded");
        }
    } else {
        assert_eq!(rq.record_base64url, None, "{what}");
        assert_eq!(rs.record_base64url, None, "{what}");
    }
}

#[test]
fn record_vectors() {
    let f: RecordsFile = load("records.json");
    let hs: HandshakeFile = load("handshake.json");
    assert_eq!(f.rekey_interval, sessioncert_proto::session::REKEY_INTERVAL);
    assert_eq!(f.max_messages, sessioncert_proto::session::MAX_MESSAGES);
    assert_eq!(f.replay_window, sessioncert_proto::replay::WINDOW);
    assert_eq!(f.suites.len(), 2);
    for s in &f.suites {
        let hc = hs.case(&s.name);
        assert_eq!(s.suite, hc.suite);
        assert_eq!(s.session_id, hc.session_id);
        assert_eq!(s.client_export, hc.client_export);
        assert_eq!(s.server_export, hc.server_export);
        for (a, b) in [
            (&s.c2s_key, &hc.keys.c2s_key),
            (&s.c2s_iv, &hc.keys.c2s_iv),
            (&s.s2c_key, &hc.keys.s2c_key),
            (&s.s2c_iv, &hc.keys.s2c_iv),
            (&s.c2s_key_epoch1, &hc.keys.c2s_key_epoch1),
            (&s.s2c_key_epoch1, &hc.keys.s2c_key_epoch1),
            (&s.refusal_key, &hc.keys.refusal_key),
        ] {
            assert_eq!(a, b);
        }
        let sid: [u8; 16] = unhx_n(&s.session_id);
        let c2s_key: [u8; 32] = unhx_n(&s.c2s_key);
        let s2c_key: [u8; 32] = unhx_n(&s.s2c_key);
        let c2s_iv: [u8; 12] = unhx_n(&s.c2s_iv);
        let s2c_iv: [u8; 12] = unhx_n(&s.s2c_iv);
        assert_eq!(hx(&reference::ratchet(&c2s_key)), s.c2s_key_epoch1);
        assert_eq!(hx(&reference::ratchet(&s2c_key)), s.s2c_key_epoch1);
        assert!(s
            .scenarios
            .iter()
            .any(|sc| sc.exchanges.iter().any(|e| e.request.epoch == 1)));
        // What the scenarios must exercise of §8.2 and §13: a realistic target on every
        // header-mode request, a request covering two headers of which one has two field
        // lines, and a HEAD.
        let lines: Vec<&HeaderLineV> = s
            .scenarios
            .iter()
            .flat_map(|sc| &sc.exchanges)
            .filter_map(|e| match &e.request.binding {
                ReqBindingV::Header(l) => Some(l),
                ReqBindingV::Full => None,
            })
            .collect();
        assert!(lines.iter().all(|l| l.target == TARGET));
        assert!(lines
            .iter()
            .any(|l| { l.covered.len() >= 2 && l.covered.iter().any(|(_, v)| v.contains(", ")) }));
        assert!(lines.iter().any(|l| l.method == "HEAD"));

        for sc in &s.scenarios {
            let what = format!("{}/{}", s.name, sc.name);
            let mut client = ClientSession::import(&unhx(&sc.client_export_start)).unwrap();
            let mut server = ServerSession::import(&unhx(&sc.server_export_start)).unwrap();
            let mut expectations = Vec::new();
            for ex in &sc.exchanges {
                check_full_plaintexts(ex);
                check_request_from_spec(&format!("{what}/{}", ex.name), ex, &sid);
                let rq = &ex.request;
                assert_eq!(client.next_seq(), rq.seq, "{what}/{}", ex.name);
                let (rec, exp) = rq
                    .binding
                    .with_binding(|b| client.seal_request(b, &unhx(&rq.plaintext)))
                    .unwrap();
                assert_eq!(hx(&rec), rq.record, "{what}/{}: request record", ex.name);
                assert_eq!(exp.seq, rq.seq);
                assert_eq!(exp.full, rq.binding == ReqBindingV::Full);
                assert_eq!(&rec[rec.len() - 16..], &exp.request_tag);
                expectations.push(exp);

                // Reference: AD, nonce, epoch key, AEAD.
                assert_eq!(rq.epoch, rq.seq / f.rekey_interval);
                let ad = reference_request_ad(&sid, rq.seq, &rq.binding);
                assert_eq!(hx(&ad), rq.ad, "{what}/{}: request ad", ex.name);
                assert_eq!(hx(&reference::nonce(&c2s_iv, rq.seq)), rq.nonce);
                let key = reference::epoch_key(&c2s_key, rq.epoch);
                let r = reference::record(
                    s.suite,
                    &key,
                    &c2s_iv,
                    req_type(&rq.binding),
                    rq.seq,
                    &ad,
                    &unhx(&rq.plaintext),
                );
                assert_eq!(hx(&r), rq.record, "{what}/{}: reference request", ex.name);

                let rs = &ex.response;
                assert_eq!(rs.epoch, rq.epoch);
                let rad = reference_response_ad(&sid, rq.seq, &exp.request_tag, &rs.binding);
                assert_eq!(hx(&rad), rs.ad, "{what}/{}: response ad", ex.name);
                assert_eq!(hx(&reference::nonce(&s2c_iv, rq.seq)), rs.nonce);
                let rkey = reference::epoch_key(&s2c_key, rs.epoch);
                let r = reference::record(
                    s.suite,
                    &rkey,
                    &s2c_iv,
                    resp_type(&rs.binding),
                    rq.seq,
                    &rad,
                    &unhx(&rs.plaintext),
                );
                assert_eq!(hx(&r), rs.record, "{what}/{}: reference response", ex.name);
            }
            let mut order = sc.server_order.clone();
            order.sort();
            assert_eq!(order, (0..sc.exchanges.len()).collect::<Vec<_>>());
            for &i in &sc.server_order {
                let ex = &sc.exchanges[i];
                let opened = ex
                    .request
                    .binding
                    .with_binding(|b| server.open_request(b, &unhx(&ex.request.record)))
                    .unwrap_or_else(|e| panic!("{what}/{}: {e}", ex.name));
                assert_eq!(hx(&opened.plaintext), ex.request.plaintext);
                assert_eq!(opened.sealer.expectation(), expectations[i]);
                let resp = server
                    .seal_response(
                        opened.sealer,
                        &ex.response.binding.binding(),
                        &unhx(&ex.response.plaintext),
                    )
                    .unwrap();
                assert_eq!(
                    hx(&resp),
                    ex.response.record,
                    "{what}/{}: response",
                    ex.name
                );
                let pt = client
                    .open_response(
                        &expectations[i],
                        &ex.response.binding.binding(),
                        &unhx(&ex.response.record),
                    )
                    .unwrap_or_else(|e| panic!("{what}/{}: {e}", ex.name));
                assert_eq!(hx(&pt), ex.response.plaintext);
            }
            assert_eq!(
                hx(&client.export()),
                sc.client_export_end,
                "{what}: client end"
            );
            assert_eq!(
                hx(&server.export()),
                sc.server_export_end,
                "{what}: server end"
            );
            // The server's window at the end, by the reference (scenarios start fresh).
            let start = unhx(&sc.server_export_start);
            assert_eq!(
                &start[start.len() - 136..],
                &reference::window_state(&[])[..]
            );
            let accepted: Vec<u64> = sc.exchanges.iter().map(|e| e.request.seq).collect();
            let end = unhx(&sc.server_export_end);
            assert_eq!(
                &end[end.len() - 136..],
                &reference::window_state(&accepted)[..]
            );
        }

        // The main scenario from the unconfirmed client (the confirmation rides with the
        // requests, §6.8): every request still carries it until the first response opens,
        // and the client ends exactly as the confirmed one does.
        let sc = s.scenarios.iter().find(|sc| sc.name == "main").unwrap();
        let mut client = ClientSession::import(&unhx(&hc.client_export_unconfirmed)).unwrap();
        let mut expectations = Vec::new();
        for ex in &sc.exchanges {
            let (rec, exp) = ex
                .request
                .binding
                .with_binding(|b| client.seal_request(b, &unhx(&ex.request.plaintext)))
                .unwrap();
            assert_eq!(hx(&rec), ex.request.record);
            assert_eq!(client.confirmation().map(hx), Some(hc.confirmation.clone()));
            expectations.push(exp);
        }
        let first = sc.server_order[0];
        let ex = &sc.exchanges[first];
        client
            .open_response(
                &expectations[first],
                &ex.response.binding.binding(),
                &unhx(&ex.response.record),
            )
            .unwrap();
        assert_eq!(
            client.confirmation(),
            None,
            "{}: a response confirms",
            s.name
        );
        for &i in &sc.server_order[1..] {
            let ex = &sc.exchanges[i];
            client
                .open_response(
                    &expectations[i],
                    &ex.response.binding.binding(),
                    &unhx(&ex.response.record),
                )
                .unwrap();
        }
        assert_eq!(hx(&client.export()), sc.client_export_end);
    }
}

#[test]
fn record_negative_vectors() {
    let f: RecordsFile = load("records.json");
    for s in &f.suites {
        assert!(s.server_open_cases.len() >= 20);
        // The target and covered-header cases (§8.2): request 0 or 1 of the main scenario
        // under a binding that differs only in target or covered headers, refused.
        let main = s.scenarios.iter().find(|sc| sc.name == "main").unwrap();
        let sid: [u8; 16] = unhx_n(&s.session_id);
        for (name, request) in [
            ("target_scheme_changed", 0),
            ("target_host_changed", 0),
            ("target_default_port_written", 0),
            ("covered_value_changed", 0),
            ("covered_field_line_dropped", 0),
            ("covered_field_lines_reordered", 0),
            ("covered_lines_joined_without_space", 0),
            ("covered_header_absent", 0),
            ("covered_names_reordered", 0),
            ("covered_header_dropped_from_list", 0),
            ("covered_list_dropped", 0),
            ("covered_header_added", 1),
        ] {
            let c = s.server_open_cases.iter().find(|c| c.name == name);
            let c = c.unwrap_or_else(|| panic!("{}: no server_open_case {name}", s.name));
            let rq = &main.exchanges[request].request;
            assert_eq!(c.server_export, s.server_export, "{name}");
            assert_eq!(c.steps.len(), 1, "{name}");
            let st = &c.steps[0];
            assert_eq!(st.record, rq.record, "{name}");
            assert_eq!(st.expect.error.as_deref(), Some("rejected"), "{name}");
            let (got, genuine) = (st.binding.line(), rq.binding.line());
            assert_ne!(got, genuine, "{name}");
            assert_eq!(
                (&got.method, &got.path, &got.query, &got.content_type),
                (
                    &genuine.method,
                    &genuine.path,
                    &genuine.query,
                    &genuine.content_type
                ),
                "{name}: only target or covered headers differ"
            );
            assert_ne!(
                reference_request_ad(&sid, rq.seq, &st.binding),
                unhx(&rq.ad),
                "{name}: reference AD"
            );
        }
        for c in &s.server_open_cases {
            let steps: Vec<(ReqBindingV, Vec<u8>)> = c
                .steps
                .iter()
                .map(|st| (st.binding.clone(), unhx(&st.record)))
                .collect();
            let got = run_server_steps(&unhx(&c.server_export), &steps);
            for (i, (g, st)) in got.iter().zip(&c.steps).enumerate() {
                let name = format!("{}/{} step {i}", s.name, c.name);
                match (&st.expect.plaintext, &st.expect.error) {
                    (Some(pt), None) => assert_eq!(g.plaintext.as_ref(), Some(pt), "{name}"),
                    (None, Some(e)) => {
                        assert_code(&name, g.error.as_deref().unwrap_or("<accepted>"), e)
                    }
                    _ => panic!("{name}: expect must hold exactly one of plaintext, error"),
                }
            }
        }
        for c in &s.client_open_cases {
            let mut client = ClientSession::import(&unhx(&c.client_export)).unwrap();
            let err = client
                .open_response(
                    &c.expectation.to_expectation(),
                    &c.binding.binding(),
                    &unhx(&c.record),
                )
                .expect_err(&c.name);
            assert_code(&format!("{}/{}", s.name, c.name), &code(&err), &c.error);
        }
        for c in &s.client_seal_cases {
            let mut client = ClientSession::import(&unhx(&c.client_export)).unwrap();
            let err = c
                .binding
                .with_binding(|b| client.seal_request(b, &unhx(&c.plaintext)))
                .expect_err(&c.name);
            assert_code(&format!("{}/{}", s.name, c.name), &code(&err), &c.error);
        }
    }
}

// ---------------------------------------------------------------------------------------
// records.json: refusal tags (§14.1)
// ---------------------------------------------------------------------------------------

#[test]
fn refusal_tag_vectors() {
    let f: RecordsFile = load("records.json");
    for s in &f.suites {
        let sid: [u8; 16] = unhx_n(&s.session_id);
        let key: [u8; 32] = unhx_n(&s.refusal_key);
        let main = s.scenarios.iter().find(|sc| sc.name == "main").unwrap();
        assert!(s.refusal_tag_cases.iter().any(|c| c.tag.is_some()));
        assert!(s.refusal_tag_cases.iter().any(|c| c.tag.is_none()));
        for c in &s.refusal_tag_cases {
            let name = format!("{}/{}", s.name, c.name);
            assert!(ErrorCode::parse(&c.code).is_some(), "{name}");
            let export = unhx(&c.server_export);
            let record = unhx(&c.record);
            // The crate: the ended session, and the live one it was, issue the same tag.
            let got = run_refusal_tag(&export, &record, &c.code);
            let live = ServerSession::import(&export)
                .unwrap()
                .refusal_tag(&record, ErrorCode::parse(&c.code).unwrap());
            assert_eq!(got, live, "{name}");
            assert_eq!(got.map(|t| hx(&t)), c.tag, "{name}: tag");
            assert_eq!(got.map(|t| b64(&t)), c.tag_base64url, "{name}: base64url");
            // The reference, from the spec text.
            let want = reference_refusal_tag(&export, &key, &sid, &record, &c.code);
            assert_eq!(want.map(|t| hx(&t)), c.tag, "{name}: reference");
            match (&c.tag, &c.tag_input) {
                (Some(tag), Some(input)) => {
                    let seq = u64::from_be_bytes(record[1..9].try_into().unwrap());
                    let m = reference::refusal_tag_input(&sid, seq, &c.code);
                    assert_eq!(hx(&m), *input, "{name}: tag input");
                    assert_eq!(hx(&reference::hmac(&key, &[&m])), *tag);
                }
                (None, None) => {}
                _ => panic!("{name}: tag and tag_input go together"),
            }
        }
        let fresh = s
            .refusal_tag_cases
            .iter()
            .find(|c| c.name == "fresh_seq_session_closed")
            .unwrap();
        assert_eq!(fresh.server_export, main.server_export_end);
        assert!(fresh.tag.is_some());
        for c in &s.refusal_verify_cases {
            let name = format!("{}/{}", s.name, c.name);
            assert_eq!(c.client_export, main.client_export_end, "{name}");
            let tag = unhx(&c.tag);
            let got = run_refusal_verify(&unhx(&c.client_export), c.seq, &c.code, &tag);
            assert_eq!(got, c.verified, "{name}");
            let want = tag == reference::refusal_tag(&key, &sid, c.seq, &c.code);
            assert_eq!(want, c.verified, "{name}: reference");
        }
        assert!(s.refusal_verify_cases.iter().any(|c| c.verified));
        assert!(s.refusal_verify_cases.iter().any(|c| !c.verified));
    }
}

// ---------------------------------------------------------------------------------------
// streams.json
// ---------------------------------------------------------------------------------------

/// The layout of §8.5 by hand: the body is the header and the chunks, each chunk
/// `last || u24 len || ciphertext || tag` with only the last one flagged, only the last
/// one possibly empty, and its nonce `3 zero bytes || u64 index || u8 last`.
fn check_stream_layout(what: &str, s: &SealedBodyV) {
    let body = unhx(&s.body);
    assert_eq!(body[0], s.record_type, "{what}");
    assert_eq!(&body[1..9], &s.seq.to_be_bytes(), "{what}");
    assert_eq!(s.epoch, s.seq / sessioncert_proto::session::REKEY_INTERVAL);
    let is_stream = matches!(s.record_type, 0x03 | 0x04 | 0x83 | 0x84);
    assert_eq!(
        is_stream,
        !s.chunks.is_empty(),
        "{what}: a stream has chunks"
    );
    assert_eq!(s.nonce.is_none(), is_stream, "{what}");
    assert_eq!(s.stream_key.is_some(), is_stream, "{what}");
    if !is_stream {
        return;
    }
    let info = [
        reference::STREAM_LABEL,
        &[s.record_type],
        &s.seq.to_be_bytes(),
    ]
    .concat();
    assert_eq!(
        s.stream_key_info.as_deref(),
        Some(hx(&info).as_str()),
        "{what}"
    );
    let mut at = 9;
    let mut pt = Vec::new();
    for (i, c) in s.chunks.iter().enumerate() {
        let chunk = unhx(&c.chunk);
        let p = unhx(&c.plaintext);
        let last = i + 1 == s.chunks.len();
        assert_eq!((c.index, c.last), (i as u64, last), "{what} chunk {i}");
        assert_eq!(chunk[0], u8::from(last), "{what} chunk {i}");
        let len = u32::from_be_bytes([0, chunk[1], chunk[2], chunk[3]]) as usize;
        assert_eq!(len, p.len(), "{what} chunk {i}");
        assert!(len <= 65_536 && (last || len > 0), "{what} chunk {i}");
        assert_eq!(chunk.len(), 4 + len + 16, "{what} chunk {i}");
        let mut nonce = vec![0u8; 3];
        nonce.extend_from_slice(&(i as u64).to_be_bytes());
        nonce.push(u8::from(last));
        assert_eq!(c.nonce, hx(&nonce), "{what} chunk {i}");
        assert_eq!(&body[at..at + chunk.len()], &chunk[..], "{what} chunk {i}");
        at += chunk.len();
        pt.extend_from_slice(&p);
    }
    assert_eq!(at, body.len(), "{what}: nothing after the last chunk");
    assert_eq!(hx(&pt), s.plaintext, "{what}");
}

#[test]
fn stream_vectors() {
    let f: StreamsFile = load("streams.json");
    let hs: HandshakeFile = load("handshake.json");
    assert_eq!(
        f.max_chunk_len,
        sessioncert_proto::stream::MAX_CHUNK_LEN as u64
    );
    assert_eq!(f.max_chunk_len, reference::MAX_CHUNK_LEN as u64);
    assert_eq!(f.stream_label.as_bytes(), reference::STREAM_LABEL);
    assert_eq!(f.rekey_interval, sessioncert_proto::session::REKEY_INTERVAL);
    assert_eq!(f.suites.len(), 2);
    for s in &f.suites {
        let hc = hs.case(&s.name);
        assert!(hc.server_hello_fields.streams, "{}: negotiated", s.name);
        assert_eq!(
            (&s.suite, &s.session_id, &s.client_export, &s.server_export),
            (
                &hc.suite,
                &hc.session_id,
                &hc.client_export,
                &hc.server_export
            )
        );
        for (a, b) in [
            (&s.c2s_key, &hc.keys.c2s_key),
            (&s.c2s_iv, &hc.keys.c2s_iv),
            (&s.s2c_key, &hc.keys.s2c_key),
            (&s.s2c_iv, &hc.keys.s2c_iv),
        ] {
            assert_eq!(a, b);
        }
        let sid: [u8; 16] = unhx_n(&s.session_id);
        let (c2s_key, c2s_iv): ([u8; 32], [u8; 12]) = (unhx_n(&s.c2s_key), unhx_n(&s.c2s_iv));
        let (s2c_key, s2c_iv): ([u8; 32], [u8; 12]) = (unhx_n(&s.s2c_key), unhx_n(&s.s2c_iv));
        let mut types = std::collections::BTreeSet::new();
        let mut shapes = std::collections::BTreeSet::new();
        for sc in &s.scenarios {
            let what = format!("{}/{}", s.name, sc.name);
            let exs: Vec<FlowExchange> = sc.exchanges.iter().map(|e| e.flow()).collect();
            // The crate: seal every body from the plaintexts in the file, open them all.
            let flow = run_flow(
                &unhx(&sc.client_export_start),
                &unhx(&sc.server_export_start),
                &exs,
                &sc.server_order,
            );
            assert_eq!(hx(&flow.client_end), sc.client_export_end, "{what}");
            assert_eq!(hx(&flow.server_end), sc.server_export_end, "{what}");
            for ((e, fx), (req, exp, resp)) in sc.exchanges.iter().zip(&exs).zip(&flow.bodies) {
                let what = format!("{what}/{}", e.name);
                let (rq, rs) = (&e.request.sealed, &e.response.sealed);
                assert_eq!(hx(req), rq.body, "{what}: request body");
                assert_eq!(hx(resp), rs.body, "{what}: response body");
                assert_eq!((exp.seq, rs.seq), (rq.seq, rq.seq), "{what}");
                assert_eq!(hx(&exp.request_tag), e.response.request_tag, "{what}");
                check_stream_layout(&format!("{what} request"), rq);
                check_stream_layout(&format!("{what} response"), rs);
                types.insert(rq.record_type);
                types.insert(rs.record_type);
                shapes.insert((rq.chunks.len().min(2), rs.chunks.len().min(2), rq.epoch));
                // The reference: AD, stream key, nonces and every chunk, independently.
                let ad =
                    reference_request_ad_typed(&sid, rq.seq, rq.record_type, &e.request.binding);
                let want = reference_body(
                    s.suite,
                    &c2s_key,
                    &c2s_iv,
                    rq.record_type,
                    rq.seq,
                    &ad,
                    &fx.req_chunks,
                );
                assert_eq!(&want, rq, "{what}: reference request");
                let tag = reference_request_tag(&want);
                assert_eq!(
                    hx(&tag),
                    e.response.request_tag,
                    "{what}: bound to chunk 0's tag"
                );
                let rad = reference_response_ad_typed(
                    &sid,
                    rq.seq,
                    &tag,
                    rs.record_type,
                    &e.response.binding,
                );
                let want = reference_body(
                    s.suite,
                    &s2c_key,
                    &s2c_iv,
                    rs.record_type,
                    rs.seq,
                    &rad,
                    &fx.resp_chunks,
                );
                assert_eq!(&want, rs, "{what}: reference response");
                // Full mode: an indeterminate-length Binary HTTP message (framing 2 / 3)
                // that decodes to the HTTP message given.
                match (&e.request.full, &e.response.full) {
                    (Some(fq), Some(fr)) => {
                        let q = unhx(&rq.plaintext);
                        let r = unhx(&rs.plaintext);
                        assert_eq!((q[0], r[0]), (2, 3), "{what}: framing indicators");
                        assert_eq!(FullRequest::decode(&q).unwrap(), fq.to_request(), "{what}");
                        assert_eq!(
                            FullResponse::decode(&r).unwrap(),
                            fr.to_response(),
                            "{what}"
                        );
                        assert_eq!((rq.record_type, rs.record_type), (0x04, 0x84));
                    }
                    (None, None) => assert!(matches!(e.request.binding, ReqBindingV::Header(_))),
                    _ => panic!("{what}: full mode both ways"),
                }
            }
        }
        // What the scenarios exercise: every stream type, a stream answered by a record
        // and the other way round, a one-chunk stream, both epochs.
        for t in [0x01, 0x03, 0x04, 0x81, 0x83, 0x84] {
            assert!(types.contains(&t), "{}: type {t:#04x}", s.name);
        }
        for shape in [(2, 2, 0), (1, 0, 0), (0, 2, 0), (2, 1, 1)] {
            assert!(shapes.contains(&shape), "{}: {shape:?}", s.name);
        }

        // Negative cases: the crate and the reference model both give the stated outcome.
        for name in [
            "truncated_after_whole_chunk",
            "cut_mid_chunk",
            "reordered",
            "dropped",
            "duplicated",
            "spliced_from_another_stream",
            "last_flag_set_on_middle_chunk",
            "last_flag_cleared",
            "chunk_after_last",
            "flag_byte_2",
            "len_over_max",
            "empty_non_last_chunk",
            "stream_not_negotiated",
            "header_stream_as_full",
            "full_stream_as_header",
            "ok_then_replay",
        ] {
            assert!(
                s.server_open_cases.iter().any(|c| c.name == name),
                "{}: no server case {name}",
                s.name
            );
        }
        for c in &s.server_open_cases {
            let steps: Vec<(ReqBindingV, Vec<u8>)> = c
                .steps
                .iter()
                .map(|st| (st.binding.clone(), unhx(&st.body)))
                .collect();
            let want: Vec<StreamOutcomeV> = c.steps.iter().map(|st| st.expect.clone()).collect();
            let name = format!("{}/{}", s.name, c.name);
            for st in &c.steps {
                match (&st.expect.plaintext, &st.expect.error) {
                    (Some(_), None) => {}
                    (None, Some(e)) => assert_code(&name, e, e),
                    _ => panic!("{name}: exactly one of plaintext, error"),
                }
            }
            assert!(c.steps.iter().any(|st| st.expect.error.is_some()), "{name}");
            let export = unhx(&c.server_export);
            assert_eq!(run_server_stream_steps(&export, &steps), want, "{name}");
            assert_eq!(
                reference_server_stream_steps(&export, &steps),
                want,
                "{name}: reference"
            );
        }
        let trunc = s
            .server_open_cases
            .iter()
            .find(|c| c.name == "truncated_after_whole_chunk")
            .unwrap();
        assert_eq!(trunc.steps[0].expect.error.as_deref(), Some("rejected"));
        assert!(trunc.steps[0].expect.chunks_opened.unwrap() > 0);
        for name in [
            "truncated_after_whole_chunk",
            "reordered",
            "dropped",
            "duplicated",
            "chunk_after_last",
            "last_flag_cleared",
            "response_stream_of_another_request",
            "request_tag_of_last_chunk",
            "stream_not_negotiated",
        ] {
            assert!(
                s.client_open_cases.iter().any(|c| c.name == name),
                "{}: no client case {name}",
                s.name
            );
        }
        for c in &s.client_open_cases {
            let name = format!("{}/{}", s.name, c.name);
            let export = unhx(&c.client_export);
            let e = c.expectation.to_expectation();
            let body = unhx(&c.body);
            let got = client_open_body(
                &mut ClientSession::import(&export).unwrap(),
                &e,
                &c.binding,
                &body,
            );
            assert_eq!(got, c.expect, "{name}");
            let err = c.expect.error.as_deref().unwrap_or("<opened>");
            assert_code(&name, err, err);
            assert_eq!(
                RefClient::from_export(&export).open(&e, &c.binding, &body),
                c.expect,
                "{name}: reference"
            );
        }
        for c in &s.client_seal_cases {
            let mut client = ClientSession::import(&unhx(&c.client_export)).unwrap();
            let err = c
                .binding
                .with_binding(|b| client.seal_request_stream(b, &unhx(&c.first), c.last))
                .expect_err(&c.name);
            assert_code(&format!("{}/{}", s.name, c.name), &code(&err), &c.error);
        }
    }
}

// ---------------------------------------------------------------------------------------
// replay-window.json
// ---------------------------------------------------------------------------------------

#[test]
fn replay_window_vectors() {
    let f: ReplayFile = load("replay-window.json");
    assert_eq!(f.window, sessioncert_proto::replay::WINDOW);
    for c in &f.cases {
        let seqs: Vec<u64> = c.steps.iter().map(|s| s.seq).collect();
        let (steps, highest, state) = run_window(&seqs);
        for (got, want) in steps.iter().zip(&c.steps) {
            if want.expect == "accept" {
                assert_eq!(got.expect, "accept", "{} seq {}", c.name, want.seq);
            } else {
                assert_code(
                    &format!("{} seq {}", c.name, want.seq),
                    &got.expect,
                    &want.expect,
                );
            }
        }
        assert_eq!(highest, c.highest, "{}", c.name);
        assert_eq!(hx(&state), c.state, "{}", c.name);
        let accepted: Vec<u64> = c
            .steps
            .iter()
            .filter(|s| s.expect == "accept")
            .map(|s| s.seq)
            .collect();
        assert_eq!(
            hx(&reference::window_state(&accepted)),
            c.state,
            "{}",
            c.name
        );
        // The model of PROTOCOL.md: accepted iff never accepted and > highest - 1024.
        let mut seen = std::collections::HashSet::new();
        let mut top: Option<u64> = None;
        for s in &c.steps {
            let ok = !seen.contains(&s.seq) && top.is_none_or(|t| s.seq + f.window > t);
            assert_eq!(ok, s.expect == "accept", "{} seq {}", c.name, s.seq);
            if ok {
                seen.insert(s.seq);
                top = Some(top.map_or(s.seq, |t| t.max(s.seq)));
            }
        }
    }
}
