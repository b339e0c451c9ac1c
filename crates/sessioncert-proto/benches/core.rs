//! Speed of the sans-I/O core, always against a baseline measured in the same run.
//!
//! * `handshake/*`: a complete in-memory handshake, each side alone, and the floor it
//!   stands on: raw X25519 from aws-lc-rs (`x25519/three_dh` = one key generation plus
//!   two DH, which is exactly the client's share of Noise NK).
//! * `seal/*` and `open/*`: header-mode request records of 64 B … 1 MiB for both suites,
//!   next to the raw AEAD primitives (aws-lc-rs, and RustCrypto for sealing) run on the
//!   same body length with associated data of the same length as ours, so the gap is our
//!   framing (AD encoding, allocation, copies, replay window), not the AEAD itself.
//!
//! Run `cargo bench -p sessioncert-proto --bench core`; `-- --test` runs every case once.

#[cfg(feature = "aws-lc")]
mod benches {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aws_lc_rs::{aead, agreement};
    use criterion::{black_box, BatchSize, BenchmarkId, Criterion, Throughput};
    use sessioncert_proto::config::{PublishedKey, HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1};
    use sessioncert_proto::{
        respond, ClientHandshake, ClientOffer, ClientSession, HandshakeKeyPair, IdentityKey,
        KeyConfig, RequestBinding, RequestLine, ServerPolicy, ServerSession, SessionId, Suite,
        Trust, VerifiedKeyConfig,
    };
    use std::time::{Duration, Instant};

    const NOW_MS: u64 = 1000;
    const SIZES: [usize; 4] = [64, 1024, 64 * 1024, 1024 * 1024];

    /// A stand-in for the server's ticket, about the size of a real one (the server
    /// crate seals it; that XChaCha20-Poly1305 seal is not part of these timings).
    const TICKET: [u8; 381] = [0x5a; 381];

    /// The server's key configuration and handshake key, as in the handshake tests.
    fn setup() -> (VerifiedKeyConfig, Vec<HandshakeKeyPair>) {
        let id = IdentityKey::from_seed(&[1; 32]);
        let hk = HandshakeKeyPair::from_secret(7, &[2; 32], 0, u64::MAX).unwrap();
        let cfg = KeyConfig {
            identity: id.pin(),
            issued_at_ms: 0,
            expires_at_ms: sessioncert_proto::config::CONFIG_VALIDITY_MS,
            versions: vec![VERSION_1],
            record_suites: Suite::ALL.iter().map(|s| s.id()).collect(),
            keys: vec![PublishedKey {
                key_id: 7,
                hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                public: hk.public().to_vec(),
                not_before_ms: 0,
                not_after_ms: u64::MAX,
            }],
        };
        let cfg = cfg
            .sign(&id)
            .unwrap()
            .verify(&Trust::Pin(id.pin()), NOW_MS)
            .unwrap();
        (cfg, vec![hk])
    }

    fn offer(suite: Suite) -> ClientOffer {
        ClientOffer {
            versions: vec![VERSION_1],
            suites: vec![suite],
            streams: true,
        }
    }

    /// A session pair from a real handshake.
    fn session_pair(suite: Suite) -> (ClientSession, ServerSession) {
        let (cfg, keys) = setup();
        let (c, hello) = ClientHandshake::start(&cfg, offer(suite), NOW_MS).unwrap();
        let resp = respond(
            &keys,
            &ServerPolicy::default(),
            &hello,
            SessionId([9; 16]),
            NOW_MS,
        )
        .unwrap();
        let (uc, _) = c
            .read_server_hello(&resp.server_hello(&TICKET).unwrap())
            .unwrap();
        let s = resp.pending.confirm(uc.client_finished()).unwrap();
        let c = uc.confirmed();
        assert_eq!(c.suite(), suite);
        (c, s)
    }

    fn line() -> RequestBinding<'static> {
        RequestBinding::Header(RequestLine {
            method: "POST",
            target: "https://api.example",
            path: "/api/v1/items",
            query: "",
            content_type: "application/json",
            covered: &[],
        })
    }

    /// Length of the associated data a header-mode request with [`line`] carries:
    /// label, record type, session id, seq, and four u32-prefixed strings.
    const fn request_ad_len() -> usize {
        b"sessioncert/1 request".len()
            + 1
            + 16
            + 8
            + (4 + "POST".len())
            + (4 + "https://api.example".len())
            + (4 + "/api/v1/items".len())
            + 4
            + (4 + "application/json".len())
            + 1
    }

    fn suite_slug(suite: Suite) -> &'static str {
        match suite {
            Suite::Aes256Gcm => "aes256gcm",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }

    fn awslc_alg(suite: Suite) -> &'static aead::Algorithm {
        match suite {
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    fn awslc_key(suite: Suite) -> aead::LessSafeKey {
        aead::LessSafeKey::new(aead::UnboundKey::new(awslc_alg(suite), &[0x42; 32]).unwrap())
    }

    fn configure(c: Criterion) -> Criterion {
        c.sample_size(20)
            .warm_up_time(Duration::from_millis(400))
            .measurement_time(Duration::from_secs(2))
            .without_plots()
    }

    pub fn handshake(c: &mut Criterion) {
        let (cfg, keys) = setup();
        let policy = ServerPolicy::default();
        let sid = SessionId([9; 16]);
        let mut g = c.benchmark_group("handshake");

        g.bench_function("full", |b| {
            b.iter(|| {
                let (ch, hello) =
                    ClientHandshake::start(&cfg, ClientOffer::default(), NOW_MS).expect("start");
                let resp = respond(&keys, &policy, &hello, sid, NOW_MS).expect("respond");
                let (uc, _) = ch
                    .read_server_hello(&resp.server_hello(&TICKET).unwrap())
                    .expect("server hello");
                let s = resp.pending.confirm(uc.client_finished()).expect("confirm");
                (uc.confirmed(), s)
            })
        });

        // Client: `start` + `read_server_hello`; the server's answer is made untimed.
        g.bench_function("client_side", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let (ch, hello) =
                        ClientHandshake::start(&cfg, ClientOffer::default(), NOW_MS).unwrap();
                    spent += t.elapsed();
                    let resp = respond(&keys, &policy, &hello, sid, NOW_MS).unwrap();
                    let t = Instant::now();
                    let out = ch
                        .read_server_hello(&resp.server_hello(&TICKET).unwrap())
                        .unwrap();
                    spent += t.elapsed();
                    black_box(out);
                }
                spent
            })
        });

        // Server: `respond` + `confirm`; the client's steps are made untimed.
        g.bench_function("server_side", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let (ch, hello) =
                        ClientHandshake::start(&cfg, ClientOffer::default(), NOW_MS).unwrap();
                    let t = Instant::now();
                    let resp = respond(&keys, &policy, &hello, sid, NOW_MS).unwrap();
                    spent += t.elapsed();
                    let (uc, _) = ch
                        .read_server_hello(&resp.server_hello(&TICKET).unwrap())
                        .unwrap();
                    let t = Instant::now();
                    let s = resp.pending.confirm(uc.client_finished()).unwrap();
                    spent += t.elapsed();
                    black_box(s);
                }
                spent
            })
        });

        // The floor: raw X25519 on aws-lc-rs.
        let peer_a = agreement::PrivateKey::generate(&agreement::X25519)
            .unwrap()
            .compute_public_key()
            .unwrap();
        let peer_b = agreement::PrivateKey::generate(&agreement::X25519)
            .unwrap()
            .compute_public_key()
            .unwrap();
        let dh = |k: &agreement::PrivateKey, peer: &[u8]| -> [u8; 32] {
            agreement::agree(
                k,
                agreement::UnparsedPublicKey::new(&agreement::X25519, peer),
                (),
                |s| s.try_into().map_err(|_| ()),
            )
            .unwrap()
        };
        let keygen = || {
            let k = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
            let p = k.compute_public_key().unwrap();
            (k, p)
        };
        g.bench_function("x25519/three_dh", |b| {
            b.iter(|| {
                let (k, p) = keygen();
                let s1 = dh(&k, peer_a.as_ref());
                let s2 = dh(&k, peer_b.as_ref());
                (p, s1, s2)
            })
        });
        g.bench_function("x25519/keygen", |b| b.iter(keygen));
        let fixed = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
        g.bench_function("x25519/dh", |b| {
            b.iter(|| dh(&fixed, black_box(peer_a.as_ref())))
        });
        g.finish();
    }

    pub fn seal(c: &mut Criterion) {
        let mut g = c.benchmark_group("seal");
        let aad = vec![0x5a; request_ad_len()];
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let body = vec![0xabu8; size];
            for suite in Suite::ALL {
                let slug = suite_slug(suite);

                let (mut client, _) = session_pair(suite);
                let binding = line();
                g.bench_with_input(
                    BenchmarkId::new(format!("{slug}/sessioncert"), size),
                    &body,
                    |b, body| b.iter(|| client.seal_request(&binding, body).unwrap()),
                );

                let key = awslc_key(suite);
                let mut buf = body.clone();
                g.bench_function(BenchmarkId::new(format!("{slug}/raw_awslc"), size), |b| {
                    b.iter(|| {
                        key.seal_in_place_separate_tag(
                            aead::Nonce::assume_unique_for_key([7; 12]),
                            aead::Aad::from(&aad[..]),
                            &mut buf,
                        )
                        .unwrap()
                    })
                });

                let mut buf = body.clone();
                let nonce = [7u8; 12];
                match suite {
                    Suite::Aes256Gcm => {
                        let k = aes_gcm::Aes256Gcm::new(&[0x42; 32].into());
                        g.bench_function(
                            BenchmarkId::new(format!("{slug}/raw_rustcrypto"), size),
                            |b| {
                                b.iter(|| {
                                    k.encrypt_in_place_detached(&nonce.into(), &aad, &mut buf)
                                        .unwrap()
                                })
                            },
                        );
                    }
                    Suite::ChaCha20Poly1305 => {
                        let k = chacha20poly1305::ChaCha20Poly1305::new(&[0x42; 32].into());
                        g.bench_function(
                            BenchmarkId::new(format!("{slug}/raw_rustcrypto"), size),
                            |b| {
                                b.iter(|| {
                                    k.encrypt_in_place_detached(&nonce.into(), &aad, &mut buf)
                                        .unwrap()
                                })
                            },
                        );
                    }
                }
            }
        }
        g.finish();
    }

    /// Small records are batched many to a timing; large ones one at a time, so the
    /// batch of sealed inputs stays small in memory.
    fn batch_size(size: usize) -> BatchSize {
        if size >= 64 * 1024 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        }
    }

    pub fn open(c: &mut Criterion) {
        let mut g = c.benchmark_group("open");
        let aad = vec![0x5a; request_ad_len()];
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let body = vec![0xabu8; size];
            for suite in Suite::ALL {
                let slug = suite_slug(suite);
                let binding = line();

                // Every record carries a fresh sequence number (the replay window would
                // refuse a repeat), so records are sealed in the untimed setup.
                let (mut client, mut server) = session_pair(suite);
                g.bench_function(BenchmarkId::new(format!("{slug}/sessioncert"), size), |b| {
                    b.iter_batched(
                        || client.seal_request(&binding, &body).unwrap().0,
                        |rec| (server.open_request(&binding, &rec).unwrap(), rec),
                        batch_size(size),
                    )
                });

                let (mut client, mut server) = session_pair(suite);
                g.bench_function(
                    BenchmarkId::new(format!("{slug}/sessioncert_in_place"), size),
                    |b| {
                        b.iter_batched(
                            || client.seal_request(&binding, &body).unwrap().0,
                            |mut rec| {
                                let o = server.open_request_in_place(&binding, &mut rec).unwrap();
                                (o, rec)
                            },
                            batch_size(size),
                        )
                    },
                );

                // Raw aws-lc open of one sealed buffer, re-copied in the untimed setup.
                let key = awslc_key(suite);
                let nonce = [7u8; 12];
                let mut sealed = body.clone();
                let tag = key
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(&aad[..]),
                        &mut sealed,
                    )
                    .unwrap();
                sealed.extend_from_slice(tag.as_ref());
                g.bench_function(BenchmarkId::new(format!("{slug}/raw_awslc"), size), |b| {
                    b.iter_batched(
                        || sealed.clone(),
                        |mut buf| {
                            let n = key
                                .open_in_place(
                                    aead::Nonce::assume_unique_for_key(nonce),
                                    aead::Aad::from(&aad[..]),
                                    &mut buf,
                                )
                                .unwrap()
                                .len();
                            (n, buf)
                        },
                        batch_size(size),
                    )
                });
            }
        }
        g.finish();
    }

    pub fn main() {
        let mut c = configure(Criterion::default()).configure_from_args();
        handshake(&mut c);
        seal(&mut c);
        open(&mut c);
        c.final_summary();
    }
}

#[cfg(feature = "aws-lc")]
fn main() {
    benches::main();
}

/// The baselines need aws-lc-rs; without the `aws-lc` feature there is nothing to run.
#[cfg(not(feature = "aws-lc"))]
fn main() {}
