//! ServerHello: the client's `ClientHandshake::read_server_hello` on arbitrary bytes,
//! after a real ClientHello (the body a client gets back from
//! `POST /.well-known/sessioncert/handshake`).
//!
//! Invariants:
//! * random bytes never complete the client's handshake;
//! * the genuine answer completes it (the key confirmation matches the server's, and
//!   the confirmation to send carries the ticket unchanged); an edited answer is
//!   accepted only if the Noise message is untouched (the ticket is opaque to the client
//!   by design; the server authenticates it), and then the edited ticket is what the
//!   confirmation carries;
//!   a ticket outside 1..=MAX_TICKET_LEN bytes is refused on both sides;
//! * for an answer from a hostile server holding the real handshake key (so the
//!   authenticated payload and the ticket are fuzzer-chosen), the result is exactly what
//!   PROTOCOL §6.5/§6.7 say: framing and ticket length checked, payload parsed exactly
//!   (its extension list entry by entry, §6.4), unknown suite → malformed, version and
//!   suite must be ones the client offered, `streamed_records` accepted only if offered
//!   — error code included — and the returned ServerHello and session carry the
//!   payload's fields (streams included).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sessioncert_fuzz::{
    bytes16, encode_extensions, extensions_ref, fixture, mutate, noise_builder, prologue, Mutation,
    HS_SECRET, NOW_MS,
};
use sessioncert_proto::config::VERSION_1;
use sessioncert_proto::handshake::{
    parse_client_hello, respond, ClientHandshake, ClientOffer, ServerPolicy, MAX_HANDSHAKE_LEN,
    MAX_TICKET_LEN, SERVER_HELLO,
};
use sessioncert_proto::{Confirmation, ErrorCode, SessionId, Suite};

#[derive(Debug, Arbitrary)]
struct Payload {
    version: u16,
    suite: u16,
    session_id: [u8; 16],
    expires_at_ms: u64,
    idle_timeout_ms: u64,
    /// Extension entries (type, data), encoded as a list (PROTOCOL §6.4).
    extensions: Vec<(u16, Vec<u8>)>,
}

#[derive(Debug, Arbitrary)]
enum Body {
    /// A well-formed payload (fields mostly valid).
    Fields(Payload),
    /// Any bytes.
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Genuine {
        ticket: Vec<u8>,
        muts: Vec<Mutation>,
    },
    Hostile {
        extra_version: u16,
        suites: u8,
        body: Body,
        ticket: Vec<u8>,
        frame_muts: Vec<Mutation>,
    },
}

struct Ref {
    version: u16,
    suite: u16,
    id: [u8; 16],
    expires: u64,
    idle: u64,
    /// `streamed_records` accepted.
    streams: bool,
}

/// Reference parser of payload2 (PROTOCOL §6.5).
fn parse_ref(b: &[u8]) -> Option<Ref> {
    if b.len() < 38 {
        return None;
    }
    let u16at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u64at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
    let streams = extensions_ref(&b[36..])?;
    Some(Ref {
        version: u16at(0),
        suite: u16at(2),
        id: b[4..20].try_into().unwrap(),
        expires: u64at(20),
        idle: u64at(28),
        streams,
    })
}

/// `0x02 || bytes16(noise) || bytes16(ticket)`, exactly (PROTOCOL §6.5).
fn split_hello(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = b.split_first()?;
    if t != SERVER_HELLO || rest.len() < 2 {
        return None;
    }
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let noise = rest.get(2..2 + n)?;
    let rest = &rest[2 + n..];
    if rest.len() < 2 {
        return None;
    }
    let m = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    (rest.len() == 2 + m).then(|| (noise, &rest[2..]))
}

/// An edited ServerHello may be accepted only if the edit left the Noise message alone:
/// the ticket is opaque to the client (the server seals it; only the server can check
/// it), so edits inside the ticket are carried, unchanged, into the confirmation.
fn check_edit_accepted(data: &[u8], noise: &[u8], confirmation: &[u8]) {
    let (n2, t2) = split_hello(data).expect("accepted a ServerHello that does not frame");
    assert_eq!(n2, noise, "an edited Noise message was accepted");
    let conf = Confirmation::parse(confirmation).expect("confirmation parses");
    assert_eq!(conf.ticket, t2, "the ticket was not carried as received");
}

fuzz_target!(|input: Input| {
    let f = fixture();
    match input {
        Input::Raw(data) => {
            let (c, _) =
                ClientHandshake::start(&f.config, ClientOffer::default(), NOW_MS).expect("start");
            assert!(
                c.read_server_hello(&data).is_err(),
                "random bytes completed a handshake"
            );
        }
        Input::Genuine { ticket, muts } => {
            let (c, hello) =
                ClientHandshake::start(&f.config, ClientOffer::default(), NOW_MS).expect("start");
            let resp = respond(
                &f.keys,
                &ServerPolicy::default(),
                &hello,
                SessionId([3; 16]),
                NOW_MS,
            )
            .expect("respond");
            let ticket = match resp.server_hello(&ticket) {
                Ok(_) => ticket,
                Err(_) => {
                    assert!(
                        ticket.is_empty() || ticket.len() > MAX_TICKET_LEN,
                        "valid ticket refused"
                    );
                    b"t".to_vec()
                }
            };
            let message = resp.server_hello(&ticket).expect("server hello");
            let data = mutate(&message, &muts);
            let r = c.read_server_hello(&data);
            if data != message {
                if let Ok((uc, _)) = r {
                    check_edit_accepted(&data, &resp.noise_message, uc.confirmation());
                }
            } else {
                let (uc, sh) = r.expect("genuine ServerHello refused");
                assert_eq!(sh, resp.hello);
                assert_eq!(uc.id(), SessionId([3; 16]));
                let conf = Confirmation::parse(uc.confirmation()).expect("confirmation parses");
                assert_eq!(
                    conf.ticket,
                    &ticket[..],
                    "ticket not carried into the confirmation"
                );
                assert_eq!(conf.client_finished, uc.client_finished());
                assert!(
                    resp.pending.confirm(uc.client_finished()).is_ok(),
                    "finished mismatch"
                );
            }
        }
        Input::Hostile {
            extra_version,
            suites,
            body,
            ticket,
            frame_muts,
        } => {
            let mut versions = vec![VERSION_1];
            if extra_version != VERSION_1 && extra_version & 1 == 0 {
                versions.push(extra_version);
            }
            let offered: Vec<Suite> = match suites % 4 {
                0 => Suite::ALL.to_vec(),
                1 => vec![Suite::Aes256Gcm],
                2 => vec![Suite::ChaCha20Poly1305],
                _ => vec![Suite::ChaCha20Poly1305, Suite::Aes256Gcm],
            };
            let offer_streams = suites & 0x10 == 0;
            let offer = ClientOffer {
                versions: versions.clone(),
                suites: offered.clone(),
                streams: offer_streams,
            };
            let (c, hello) = ClientHandshake::start(&f.config, offer, NOW_MS).expect("start");
            let (_, header, msg1) = parse_client_hello(&hello).expect("own hello parses");
            let p = prologue(header);
            let mut noise = noise_builder(&p)
                .local_private_key(&HS_SECRET)
                .expect("local key")
                .build_responder()
                .expect("responder");
            let mut buf = vec![0u8; msg1.len()];
            noise
                .read_message(msg1, &mut buf)
                .expect("hostile server reads msg1");
            let payload = match body {
                Body::Bytes(b) => b.into_iter().take(8192).collect(),
                Body::Fields(p) => {
                    let mut v = Vec::new();
                    v.extend_from_slice(&p.version.to_be_bytes());
                    v.extend_from_slice(&p.suite.to_be_bytes());
                    v.extend_from_slice(&p.session_id);
                    v.extend_from_slice(&p.expires_at_ms.to_be_bytes());
                    v.extend_from_slice(&p.idle_timeout_ms.to_be_bytes());
                    let n = p.extensions.len().min(16);
                    v.extend_from_slice(&encode_extensions(&p.extensions[..n]));
                    v
                }
            };
            let mut msg2 = vec![0u8; payload.len() + 64];
            let n = noise
                .write_message(&payload, &mut msg2)
                .expect("write msg2");
            msg2.truncate(n);
            let ticket: Vec<u8> = ticket.into_iter().take(2 * MAX_TICKET_LEN).collect();
            let mut genuine = vec![SERVER_HELLO];
            bytes16(&mut genuine, &msg2);
            bytes16(&mut genuine, &ticket);
            let data = mutate(&genuine, &frame_muts);
            let r = c.read_server_hello(&data);
            if data != genuine {
                if let Ok((uc, _)) = &r {
                    check_edit_accepted(&data, &msg2, uc.confirmation());
                }
                return;
            }
            let want: Result<Ref, ErrorCode> = if data.len() > MAX_HANDSHAKE_LEN
                || ticket.is_empty()
                || ticket.len() > MAX_TICKET_LEN
            {
                Err(ErrorCode::Malformed)
            } else {
                match parse_ref(&payload) {
                    None => Err(ErrorCode::Malformed),
                    Some(r) => match Suite::from_id(r.suite) {
                        None => Err(ErrorCode::Malformed),
                        Some(s) if !versions.contains(&r.version) => {
                            let _ = s;
                            Err(ErrorCode::UnsupportedVersion)
                        }
                        Some(s) if !offered.contains(&s) => Err(ErrorCode::NoCommonSuite),
                        // Never accept an extension that was not offered (§6.4).
                        Some(_) if r.streams && !offer_streams => Err(ErrorCode::Malformed),
                        Some(_) => Ok(r),
                    },
                }
            };
            match (r, want) {
                (Ok((uc, sh)), Ok(w)) => {
                    assert_eq!(sh.version, w.version);
                    assert_eq!(sh.suite.id(), w.suite);
                    assert_eq!(sh.session_id, SessionId(w.id));
                    assert_eq!(sh.expires_at_ms, w.expires);
                    assert_eq!(sh.idle_timeout_ms, w.idle);
                    assert_eq!(uc.id(), sh.session_id);
                    let conf = Confirmation::parse(uc.confirmation()).expect("confirmation parses");
                    assert_eq!(conf.ticket, &ticket[..]);
                    assert_eq!(sh.streams, w.streams);
                    let session = uc.confirmed();
                    assert_eq!(session.suite(), sh.suite);
                    assert_eq!(session.streams(), sh.streams);
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e:?}"),
                (r, want) => panic!(
                    "hostile server hello: got {:?}, want {:?}",
                    r.map(|x| x.1),
                    want.map(|w| (w.version, w.suite))
                ),
            }
        }
    }
});
