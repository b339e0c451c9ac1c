//! ClientHello: the server's `handshake::respond` on arbitrary bytes (what
//! `sessioncert-server`'s session table calls with the body of
//! `POST /.well-known/sessioncert/handshake`), and `parse_client_hello` under it.
//!
//! Invariants:
//! * `parse_client_hello` returns a header whose bytes are exactly the input's prefix it
//!   claims and re-encode to it, and the Noise message length matches the frame;
//! * random bytes never complete a handshake;
//! * a genuine ClientHello is answered, and the client completes the handshake with the
//!   answer through the ticket flow (confirmation parsed, pending session rebuilt from
//!   the ticket and confirmed, one sealed round trip, confirmation dropped once a
//!   response opens); any edit of the ClientHello is refused;
//! * for a ClientHello built by a hostile client with a real Noise state (so the
//!   authenticated payload and every header field are fuzzer-chosen), the result is
//!   exactly what PROTOCOL §6.6 says, error code included.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{
    bytes16, extensions_ref, fixture, mutate, noise_builder, prologue, Mutation, HS_KEY_ID, NOW_MS,
};
use sessioncert_proto::config::{HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1};
use sessioncert_proto::handshake::{
    parse_client_hello, respond, ClientHandshake, ClientOffer, ServerPolicy, CLIENT_HELLO,
    MAX_HANDSHAKE_LEN,
};
use sessioncert_proto::{
    Confirmation, ErrorCode, PendingServerSession, ProtocolError, RequestBinding, ResponseBinding,
    SessionId, Suite,
};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Genuine {
        versions: Vec<u16>,
        suites: Vec<bool>,
        policy: u8,
        muts: Vec<Mutation>,
    },
    Hostile {
        versions: Vec<u16>,
        hs_suite: u16,
        key_id: u8,
        suites: Vec<u16>,
        payload: Vec<u8>,
        policy: u8,
        trailing: Vec<u8>,
    },
}

fn policy(sel: u8) -> ServerPolicy {
    let suites = match sel % 4 {
        0 | 1 => Suite::ALL.to_vec(),
        2 => vec![Suite::Aes256Gcm],
        _ => vec![Suite::ChaCha20Poly1305],
    };
    ServerPolicy {
        suites,
        ..ServerPolicy::default()
    }
}

fn u16list(out: &mut Vec<u8>, v: &[u16]) {
    out.push(v.len() as u8);
    for x in v {
        out.extend_from_slice(&x.to_be_bytes());
    }
}

fn check_parse(data: &[u8]) {
    if let Ok((h, header_bytes, noise)) = parse_client_hello(data) {
        assert!(data.len() <= MAX_HANDSHAKE_LEN);
        let mut enc = vec![CLIENT_HELLO];
        u16list(&mut enc, &h.versions);
        enc.extend_from_slice(&h.hs_suite.to_be_bytes());
        enc.push(h.key_id);
        u16list(&mut enc, &h.suites);
        assert_eq!(enc, header_bytes, "header does not re-encode to its bytes");
        assert_eq!(&data[..header_bytes.len()], header_bytes);
        let mut whole = enc;
        bytes16(&mut whole, noise);
        assert_eq!(whole, data, "frame does not re-encode");
    }
}

fn respond_to(
    data: &[u8],
    pol: &ServerPolicy,
) -> Result<sessioncert_proto::handshake::ServerResponse, ProtocolError> {
    let f = fixture();
    let r = respond(&f.keys, pol, data, SessionId([0x11; 16]), NOW_MS);
    if let Ok(resp) = &r {
        assert_eq!(resp.hello.session_id, SessionId([0x11; 16]));
        assert_eq!(resp.hello.version, VERSION_1);
        assert!(pol.suites.contains(&resp.hello.suite));
        assert_eq!(resp.pending.id(), resp.hello.session_id);
        assert_eq!(resp.pending.suite(), resp.hello.suite);
        let hello = resp.server_hello(b"t").expect("server hello");
        assert!(hello.len() <= MAX_HANDSHAKE_LEN);
    }
    r
}

fuzz_target!(|input: Input| {
    let f = fixture();
    match input {
        Input::Raw(data) => {
            check_parse(&data);
            let r = respond_to(&data, &ServerPolicy::default());
            assert!(r.is_err(), "random bytes completed a handshake");
        }
        Input::Genuine {
            versions,
            suites,
            policy: psel,
            muts,
        } => {
            let mut versions: Vec<u16> = versions.into_iter().take(8).collect();
            if !versions.contains(&VERSION_1) {
                versions.push(VERSION_1);
            }
            let mut offered: Vec<Suite> = suites
                .iter()
                .take(2)
                .enumerate()
                .filter(|(_, on)| **on)
                .map(|(i, _)| Suite::ALL[i])
                .collect();
            if suites.len() > 2 && suites[2] {
                offered.reverse();
            }
            if offered.is_empty() {
                offered = Suite::ALL.to_vec();
            }
            let offer = ClientOffer {
                versions,
                suites: offered.clone(),
                streams: psel & 0x10 == 0,
            };
            let (client, hello) = ClientHandshake::start(&f.config, offer, NOW_MS).expect("start");
            let pol = policy(psel);
            let data = mutate(&hello, &muts);
            check_parse(&data);
            let r = respond_to(&data, &pol);
            if data != hello {
                assert!(r.is_err(), "an edited ClientHello was answered");
                return;
            }
            let want = offered.iter().find(|s| pol.suites.contains(s)).copied();
            let resp = match (r, want) {
                (Ok(resp), Some(s)) => {
                    assert_eq!(resp.hello.suite, s, "client preference not honoured");
                    resp
                }
                (Err(e), None) => {
                    assert_eq!(e.code(), ErrorCode::NoCommonSuite);
                    return;
                }
                (r, want) => panic!("genuine hello: {:?} (want suite {want:?})", r.err()),
            };
            // The stateless flow (PROTOCOL §6.8): the pending export travels as the
            // ticket (the server seals it; here it goes as is), comes back in the
            // confirmation with the first request, and the server rebuilds the session.
            let ticket = resp.pending.export();
            let (uc, sh) = client
                .read_server_hello(&resp.server_hello(&ticket).expect("ticket"))
                .expect("client reads the answer");
            assert_eq!(sh, resp.hello);
            let conf = Confirmation::parse(uc.confirmation()).expect("own confirmation parses");
            assert_eq!(conf.ticket, &ticket[..]);
            assert_eq!(conf.client_finished, uc.client_finished());
            let mut server = PendingServerSession::import(conf.ticket)
                .expect("ticket imports")
                .confirm(conf.client_finished)
                .expect("confirm");
            let mut c = uc.into_session();
            let (rec, exp) = c
                .seal_request(&RequestBinding::Full, b"ping")
                .expect("seal");
            assert!(
                c.confirmation().is_some(),
                "confirmation dropped before a response"
            );
            let o = server
                .open_request(&RequestBinding::Full, &rec)
                .expect("open");
            assert_eq!(o.plaintext, b"ping");
            let r = server
                .seal_response(o.sealer, &ResponseBinding::Full, b"pong")
                .expect("seal response");
            assert_eq!(
                c.open_response(&exp, &ResponseBinding::Full, &r)
                    .expect("open response"),
                b"pong"
            );
            assert!(
                c.confirmation().is_none(),
                "confirmation kept after a response"
            );
        }
        Input::Hostile {
            versions,
            hs_suite,
            key_id,
            suites,
            payload,
            policy: psel,
            trailing,
        } => {
            // Mostly well-formed fields, so the fuzzer reaches each check in turn.
            let hs_suite = if hs_suite & 0x8000 == 0 {
                HS_NOISE_NK_25519_AESGCM_SHA256
            } else {
                hs_suite & 0x7fff
            };
            let key_id = if key_id & 0x80 == 0 {
                HS_KEY_ID
            } else {
                key_id & 0x7f
            };
            let versions: Vec<u16> = versions.into_iter().take(255).collect();
            let suites: Vec<u16> = suites.into_iter().take(255).collect();
            let payload: Vec<u8> = payload.into_iter().take(8192).collect();
            let mut header = vec![CLIENT_HELLO];
            u16list(&mut header, &versions);
            header.extend_from_slice(&hs_suite.to_be_bytes());
            header.push(key_id);
            u16list(&mut header, &suites);
            let p = prologue(&header);
            let mut noise = noise_builder(&p)
                .remote_public_key(f.keys[0].public())
                .expect("remote key")
                .build_initiator()
                .expect("initiator");
            let mut msg1 = vec![0u8; payload.len() + 64];
            let n = noise
                .write_message(&payload, &mut msg1)
                .expect("write msg1");
            msg1.truncate(n);
            let mut data = header;
            bytes16(&mut data, &msg1);
            data.extend_from_slice(&trailing);
            check_parse(&data);
            let pol = policy(psel);
            let r = respond_to(&data, &pol);
            // PROTOCOL §6.6, in order.
            // §6.4: the payload is one extension list, checked entry by entry.
            let offered_streams = extensions_ref(&payload);
            let payload_ok = offered_streams.is_some();
            let first_suite = suites
                .iter()
                .filter_map(|id| Suite::from_id(*id))
                .find(|s| pol.suites.contains(s));
            let want: Result<Suite, ErrorCode> =
                if data.len() > MAX_HANDSHAKE_LEN || !trailing.is_empty() {
                    Err(ErrorCode::Malformed)
                } else if hs_suite != HS_NOISE_NK_25519_AESGCM_SHA256 {
                    Err(ErrorCode::NoCommonSuite)
                } else if !versions.contains(&VERSION_1) {
                    Err(ErrorCode::UnsupportedVersion)
                } else if key_id != HS_KEY_ID {
                    Err(ErrorCode::UnknownKey)
                } else if first_suite.is_none() {
                    Err(ErrorCode::NoCommonSuite)
                } else if !payload_ok {
                    Err(ErrorCode::Malformed)
                } else {
                    Ok(first_suite.unwrap())
                };
            match (r, want) {
                (Ok(resp), Ok(s)) => {
                    assert_eq!(resp.hello.suite, s);
                    // Accepted iff offered and the policy accepts streams.
                    assert_eq!(
                        resp.hello.streams,
                        offered_streams == Some(true) && pol.streams
                    );
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e:?}"),
                (r, want) => panic!("hostile hello: got {:?}, want {want:?}", r.map(|x| x.hello)),
            }
        }
    }
});
