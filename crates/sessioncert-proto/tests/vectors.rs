//! Checks the committed test vectors in `test-vectors/` against this crate.
//!
//! * the files are exactly what `examples/gen_vectors.rs` generates (no silent drift);
//! * every output is re-derived from the inputs in the files, byte for byte, through the
//!   crate's public API, and the intermediates through the from-the-spec reference
//!   implementation (so `docs/PROTOCOL.md` and the code cannot disagree unnoticed);
//! * every negative case is refused with the stated `ErrorCode`.
//!
//! Run under both crypto backends:
//! `cargo test -p sessioncert-proto --test vectors` and
//! `cargo test -p sessioncert-proto --test vectors --no-default-features --features rustcrypto`.

#[path = "../examples/gen_vectors.rs"]
mod gen_vectors;

use gen_vectors::*;
use serde::de::DeserializeOwned;
use sessioncert_proto::config::CONFIG_SIGNING_LABEL;
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::handshake::{parse_client_hello, respond_with_ephemeral_for_vectors};
use sessioncert_proto::{
    ClientSession, ErrorCode, HandshakeKeyPair, IdentityKey, KeyConfig, PendingServerSession, Pin,
    ServerSession, SessionId, SignedKeyConfig,
};
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
    let policy = f.policy.to_policy();
    assert_eq!(f.cases.len(), 2);

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
        let (ch, hello) = restart_client(&cfg, &c.offer, c.now_ms, &ce);
        assert_eq!(hx(&hello), c.client_hello, "{name}: client hello");
        let (header, header_bytes, msg1) = parse_client_hello(&hello).unwrap();
        assert_eq!(hx(header_bytes), c.client_hello_header);
        assert_eq!(hx(msg1), c.noise_msg1);
        assert_eq!(header.versions, c.offer.versions);
        assert_eq!(header.key_id, c.key_id);
        let resp =
            respond_with_ephemeral_for_vectors(&keys, &policy, &hello, sid, c.now_ms, &se).unwrap();
        assert_eq!(hx(&resp.message), c.server_hello, "{name}: server hello");
        let sh = &c.server_hello_fields;
        assert_eq!(resp.hello.version, sh.version);
        assert_eq!(resp.hello.suite.id(), sh.suite);
        assert_eq!(resp.hello.suite.id(), c.suite);
        assert_eq!(hx(resp.hello.session_id.as_bytes()), sh.session_id);
        assert_eq!(resp.hello.expires_at_ms, sh.expires_at_ms);
        assert_eq!(resp.hello.idle_timeout_ms, sh.idle_timeout_ms);
        assert_eq!(hx(&resp.pending.export()), c.server_pending_export);
        let (uc, client_view) = ch.read_server_hello(&resp.message).unwrap();
        assert_eq!(client_view, resp.hello);
        assert_eq!(hx(uc.client_finished()), c.client_finished);
        let server = resp.pending.confirm(uc.client_finished()).unwrap();
        let client = uc.confirmed();
        assert_eq!(client.suite().id(), c.suite);
        assert_eq!(
            hx(&client.export()),
            c.client_export,
            "{name}: client export"
        );
        assert_eq!(
            hx(&server.export()),
            c.server_export,
            "{name}: server export"
        );
        // Exports import back to the same bytes.
        assert_eq!(
            hx(&ClientSession::import(&unhx(&c.client_export))
                .unwrap()
                .export()),
            c.client_export
        );
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
        assert_eq!(c.msg1_payload, "0000");
        let mut payload2 = Vec::new();
        payload2.extend_from_slice(&sh.version.to_be_bytes());
        payload2.extend_from_slice(&sh.suite.to_be_bytes());
        payload2.extend_from_slice(&unhx(&sh.session_id));
        payload2.extend_from_slice(&sh.expires_at_ms.to_be_bytes());
        payload2.extend_from_slice(&sh.idle_timeout_ms.to_be_bytes());
        payload2.extend_from_slice(&[0, 0]);
        assert_eq!(hx(&payload2), c.msg2_payload);
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
        assert_eq!(hx(&server_hello[3..]), c.noise_msg2);
        let ks = reference::schedule(&nk.h, &nk.k1, &nk.k2);
        let k = &c.keys;
        for (label, got, want) in [
            ("prk", &ks.prk[..], &k.prk),
            ("c2s_key", &ks.c2s_key[..], &k.c2s_key),
            ("c2s_iv", &ks.c2s_iv[..], &k.c2s_iv),
            ("s2c_key", &ks.s2c_key[..], &k.s2c_key),
            ("s2c_iv", &ks.s2c_iv[..], &k.s2c_iv),
            ("finished_key", &ks.finished_key[..], &k.finished_key),
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
        // The export layout of PROTOCOL.md.
        let sid_bytes: [u8; 16] = unhx_n(&c.session_id);
        let dirs = [
            reference::direction_export(0, &ks.c2s_key, None, &ks.c2s_iv),
            reference::direction_export(0, &ks.s2c_key, None, &ks.s2c_iv),
        ]
        .concat();
        let client_export = [
            reference::export_head(1, sh.version, c.suite, &sid_bytes),
            dirs.clone(),
            0u64.to_be_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(hx(&client_export), c.client_export);
        let server_export = [
            reference::export_head(2, sh.version, c.suite, &sid_bytes),
            dirs,
            reference::window_state(&[]),
        ]
        .concat();
        assert_eq!(hx(&server_export), c.server_export);
        assert_eq!(
            hx(&[server_export, ks.client_finished.to_vec()].concat()),
            c.server_pending_export
        );
    }
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

        for sc in &s.scenarios {
            let what = format!("{}/{}", s.name, sc.name);
            let mut client = ClientSession::import(&unhx(&sc.client_export_start)).unwrap();
            let mut server = ServerSession::import(&unhx(&sc.server_export_start)).unwrap();
            let mut expectations = Vec::new();
            for ex in &sc.exchanges {
                check_full_plaintexts(ex);
                let rq = &ex.request;
                assert_eq!(client.next_seq(), rq.seq, "{what}/{}", ex.name);
                let (rec, exp) = client
                    .seal_request(&rq.binding.binding(), &unhx(&rq.plaintext))
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
                let opened = server
                    .open_request(&ex.request.binding.binding(), &unhx(&ex.request.record))
                    .unwrap_or_else(|e| panic!("{what}/{}: {e}", ex.name));
                assert_eq!(hx(&opened.plaintext), ex.request.plaintext);
                assert_eq!(opened.expectation(), expectations[i]);
                let resp = server
                    .seal_response(
                        &opened.expectation(),
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
    }
}

#[test]
fn record_negative_vectors() {
    let f: RecordsFile = load("records.json");
    for s in &f.suites {
        assert!(s.server_open_cases.len() >= 20);
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
            let err = client
                .seal_request(&c.binding.binding(), &unhx(&c.plaintext))
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
