//! The harness behind `record_header_mode` and `record_full_mode`: a real client and
//! server session (from a real handshake) exchange sealed records while the fuzzer
//! chooses bodies, bindings, sequence-number jumps, edits, reorderings, replays and
//! raw bytes. A small model predicts every outcome:
//!
//! * a request record opens iff it is byte for byte one the client sealed, under the
//!   same binding, its sequence number passes the replay window (the crate's public
//!   `ReplayWindow`, itself checked against a set model by `replay_window`), and its key
//!   epoch is the server's current, previous or next one (PROTOCOL §9–10);
//! * a refused record leaves the server unchanged (the model does not move, so every
//!   later prediction checks that);
//! * the opened plaintext is what was sealed, and the opened request's response handle
//!   equals the client's;
//! * a response opens at the client iff it is the server's own seal for that request
//!   and binding, and its epoch is acceptable; responses never open as requests and
//!   requests never open as responses;
//! * bytes the fuzzer makes up never open on either side;
//! * the server issues a refusal tag (live or after `end()`, the same) exactly for
//!   `session_expired`/`session_closed` and a request record whose seq it never
//!   accepted; the client accepts that tag for that seq and code only, and accepts no
//!   made-up tag.

use crate::{mutate, pair, Mutation};
use arbitrary::Arbitrary;
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::record::{RecordHeader, MAX_COVERED_HEADERS};
use sessioncert_proto::replay::ReplayWindow;
use sessioncert_proto::session::{MAX_MESSAGES, REKEY_INTERVAL};
use sessioncert_proto::{
    ClientSession, ErrorCode, ProtocolError, RequestBinding, RequestLine, ResponseBinding,
    ResponseExpectation, ResponseSealer, ServerSession,
};

/// The request line bound in header mode.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct Line {
    method: String,
    target: String,
    path: String,
    query: String,
    content_type: String,
    covered: Vec<(String, String)>,
}

/// A request binding: header mode (a request line) or full mode.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Bind {
    /// Header mode.
    Header(Line),
    /// Full-request mode.
    Full,
}

/// A [`Bind`] with the borrowed covered-header list `RequestLine` wants.
pub struct Prepared<'a> {
    bind: &'a Bind,
    covered: Vec<(&'a str, &'a str)>,
}

impl Prepared<'_> {
    fn get(&self) -> RequestBinding<'_> {
        match self.bind {
            Bind::Header(l) => RequestBinding::Header(RequestLine {
                method: &l.method,
                target: &l.target,
                path: &l.path,
                query: &l.query,
                content_type: &l.content_type,
                covered: &self.covered,
            }),
            Bind::Full => RequestBinding::Full,
        }
    }
}

impl Bind {
    fn prep(&self) -> Prepared<'_> {
        let covered = match self {
            Bind::Header(l) => l
                .covered
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            Bind::Full => Vec::new(),
        };
        Prepared {
            bind: self,
            covered,
        }
    }

    /// Within the documented limits (callers keep the covered list to
    /// `MAX_COVERED_HEADERS`; `RequestLine` does not check it).
    fn norm(mut self) -> Self {
        if let Bind::Header(l) = &mut self {
            l.covered.truncate(MAX_COVERED_HEADERS);
        }
        self
    }
}

/// A response binding.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum RBind {
    /// Header mode: status and content type.
    Header(u16, String),
    /// Full-request mode.
    Full,
}

impl RBind {
    fn binding(&self) -> ResponseBinding<'_> {
        match self {
            RBind::Header(status, ct) => ResponseBinding::Header {
                status: *status,
                content_type: ct,
            },
            RBind::Full => ResponseBinding::Full,
        }
    }
    fn is_full(&self) -> bool {
        matches!(self, RBind::Full)
    }
}

/// A body: raw bytes, or (full mode) a Binary HTTP message.
#[derive(Debug, Clone, Arbitrary)]
pub enum Body {
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A request/response built from fields and encoded with the crate's codec.
    Http {
        /// Method.
        method: String,
        /// Authority.
        authority: String,
        /// Path after the leading `/`.
        path: String,
        /// Headers.
        headers: Vec<(String, Vec<u8>)>,
        /// Status for a response.
        status: u16,
        /// Body.
        body: Vec<u8>,
    },
}

/// How the client's next sequence number moves before a seal.
#[derive(Debug, Clone, Arbitrary)]
pub enum Jump {
    /// No jump.
    None,
    /// Skip a few numbers.
    Small(u8),
    /// To `k` numbers before the next epoch boundary.
    ToEpochEnd(u8),
    /// To an absolute value.
    Abs(u64),
    /// Close to the message budget.
    NearBudget(u8),
}

/// One step.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// The client seals a request.
    Seal {
        /// Jump first.
        jump: Jump,
        /// Alternative binding (else the target's mode).
        bind: Option<Bind>,
        /// Body.
        body: Body,
    },
    /// The server receives one of the sealed requests, possibly edited / re-bound.
    Deliver {
        /// Which sealed request.
        which: u8,
        /// Bind differently (None: as sealed).
        rebind: Option<Bind>,
        /// Edits.
        muts: Vec<Mutation>,
        /// Open in place rather than copying.
        in_place: bool,
    },
    /// The server receives made-up bytes.
    RawRequest {
        /// Bytes.
        data: Vec<u8>,
        /// Binding.
        bind: Option<Bind>,
        /// Make the header plausible: this type byte and this seq.
        header: Option<(bool, u64)>,
    },
    /// The server seals the response to an opened request.
    Respond {
        /// Which opened request.
        which: u8,
        /// Binding (header mode status/content type; ignored if the request was full).
        status: u16,
        /// Content type.
        content_type: String,
        /// Body.
        body: Body,
    },
    /// The client receives one of the responses, possibly edited / re-bound.
    ReceiveResponse {
        /// Which response.
        which: u8,
        /// Bind differently.
        rebind: Option<RBind>,
        /// Edits.
        muts: Vec<Mutation>,
        /// Open in place.
        in_place: bool,
    },
    /// The client receives made-up bytes as the response to one of its requests.
    RawResponse {
        /// Which request.
        which: u8,
        /// Bytes.
        data: Vec<u8>,
        /// Binding.
        bind: RBind,
    },
    /// A response is sent back to the server as a request, and a request to the client
    /// as a response.
    Reflect {
        /// Which.
        which: u8,
    },
    /// The server refuses a record (one of the sealed ones, or made-up bytes) with a
    /// refusal code, asking for a refusal tag (PROTOCOL §14.1), live or after `end()`.
    Refuse {
        /// Which sealed request.
        which: u8,
        /// Made-up bytes instead.
        raw: Option<Vec<u8>>,
        /// Index into `ErrorCode::ALL`.
        code: u8,
    },
    /// The client checks a made-up refusal tag.
    ForgeRefusal {
        /// Sequence number (or, if small, an index into the sealed requests).
        seq: u64,
        /// Index into `ErrorCode::ALL`.
        code: u8,
        /// Tag.
        tag: Vec<u8>,
    },
}

/// The whole input.
#[derive(Debug, Arbitrary)]
pub struct Input {
    suite: u8,
    ops: Vec<Op>,
}

struct Sealed {
    bytes: Vec<u8>,
    bind: Bind,
    seq: u64,
    exp: ResponseExpectation,
    plaintext: Vec<u8>,
    full_msg: Option<FullRequest>,
}

struct Response {
    bytes: Vec<u8>,
    bind: RBind,
    seq: u64,
    /// Index of the request in `sealed`.
    req: usize,
    plaintext: Vec<u8>,
}

/// Key epochs of one direction, as the model sees them.
#[derive(Default, Clone, Copy)]
struct Epochs {
    epoch: u64,
}

impl Epochs {
    /// `Ok(true)` if the seq is in the next epoch (a successful use ratchets).
    fn relation(&self, seq: u64) -> Result<bool, ()> {
        if seq >= MAX_MESSAGES {
            return Err(());
        }
        let e = seq / REKEY_INTERVAL;
        if e == self.epoch || (e + 1 == self.epoch && self.epoch > 0) {
            Ok(false)
        } else if e == self.epoch + 1 {
            Ok(true)
        } else {
            Err(())
        }
    }
}

fn body_bytes(b: &Body, response: bool) -> (Vec<u8>, Option<FullRequest>) {
    match b {
        Body::Bytes(v) => (v.clone(), None),
        Body::Http {
            method,
            authority,
            path,
            headers,
            status,
            body,
        } => {
            if response {
                let r = FullResponse {
                    status: *status,
                    headers: headers.clone(),
                    body: body.clone(),
                };
                (r.encode().unwrap_or_default(), None)
            } else {
                let r = FullRequest {
                    method: method.clone(),
                    scheme: "https".into(),
                    authority: authority.clone(),
                    path: format!("/{path}"),
                    headers: headers.clone(),
                    body: body.clone(),
                };
                (r.encode(), Some(r))
            }
        }
    }
}

fn open_req(
    server: &mut ServerSession,
    bind: &Bind,
    bytes: &[u8],
    in_place: bool,
) -> Result<(ResponseSealer, Vec<u8>), ProtocolError> {
    if in_place {
        let mut buf = bytes.to_vec();
        let o = server.open_request_in_place(&bind.prep().get(), &mut buf)?;
        Ok((o.sealer, buf[o.plaintext].to_vec()))
    } else {
        let o = server.open_request(&bind.prep().get(), bytes)?;
        Ok((o.sealer, o.plaintext))
    }
}

fn open_resp(
    client: &mut ClientSession,
    exp: &ResponseExpectation,
    bind: &RBind,
    bytes: &[u8],
    in_place: bool,
) -> Result<Vec<u8>, ProtocolError> {
    if in_place {
        let mut buf = bytes.to_vec();
        let r = client.open_response_in_place(exp, &bind.binding(), &mut buf)?;
        Ok(buf[r].to_vec())
    } else {
        client.open_response(exp, &bind.binding(), bytes)
    }
}

/// Runs one input. `full` picks the target's mode (the default binding of a seal).
pub fn run(input: Input, full: bool) {
    let p = pair(input.suite);
    let mut client = p.client_at(0);
    let mut server = p.server();
    let mut window = ReplayWindow::new();
    let mut c2s_client = Epochs::default();
    let mut c2s_server = Epochs::default();
    let mut s2c_server = Epochs::default();
    let mut s2c_client = Epochs::default();
    let mut sealed: Vec<Sealed> = Vec::new();
    // Requests the server opened: index into `sealed`, and the response sealer until
    // it is used (it seals once).
    let mut opened: Vec<(usize, Option<ResponseSealer>)> = Vec::new();
    let mut responses: Vec<Response> = Vec::new();
    // Refusal tags the server issued: (seq, code, tag).
    let mut refusals: Vec<(u64, ErrorCode, Vec<u8>)> = Vec::new();
    let default_bind = |b: Option<Bind>| -> Bind {
        match b {
            Some(b) => b.norm(),
            None if full => Bind::Full,
            None => Bind::Header(Line {
                method: "POST".into(),
                target: "https://api.example".into(),
                path: "/apiTest".into(),
                query: String::new(),
                content_type: "application/json".into(),
                covered: vec![("authorization".into(), "Bearer x".into())],
            }),
        }
    };

    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Seal { jump, bind, body } => {
                let next = client.next_seq();
                let to = match jump {
                    Jump::None => next,
                    Jump::Small(k) => next.saturating_add(k as u64),
                    Jump::ToEpochEnd(k) => ((next / REKEY_INTERVAL) + 1)
                        .saturating_mul(REKEY_INTERVAL)
                        .saturating_sub(1 + k as u64 % 4),
                    Jump::Abs(v) => v,
                    Jump::NearBudget(k) => MAX_MESSAGES - 1 - (k as u64 % 4) + (k as u64 >> 6),
                };
                if to != next {
                    // Moving the counter is what a restored session file can do; only
                    // forward moves are meaningful (backwards would reuse nonces).
                    if to < next {
                        continue;
                    }
                    let e = crate::set_next_seq(&client.export(), p.next_seq_from_end, to);
                    client = ClientSession::import(&e).expect("client re-import");
                }
                let bind = default_bind(bind);
                let (plaintext, full_msg) = body_bytes(&body, false);
                let seq = client.next_seq();
                let r = client.seal_request(&bind.prep().get(), &plaintext);
                let want = if seq >= MAX_MESSAGES {
                    Err(())
                } else {
                    c2s_client.relation(seq)
                };
                match (r, want) {
                    (Ok((bytes, exp)), Ok(next_epoch)) => {
                        if next_epoch {
                            c2s_client.epoch += 1;
                        }
                        assert_eq!(exp.seq, seq);
                        assert_eq!(exp.full, matches!(bind, Bind::Full));
                        assert_eq!(bytes.len(), 9 + plaintext.len() + 16);
                        assert_eq!(client.next_seq(), seq + 1);
                        sealed.push(Sealed {
                            bytes,
                            bind,
                            seq,
                            exp,
                            plaintext,
                            full_msg,
                        });
                    }
                    (Err(e), Err(())) => {
                        if seq >= MAX_MESSAGES {
                            assert!(matches!(e, ProtocolError::Exhausted), "{e:?}");
                            assert_eq!(client.next_seq(), seq);
                        } else {
                            // The number is consumed even though nothing was sealed.
                            assert_eq!(client.next_seq(), seq + 1);
                        }
                    }
                    (r, want) => panic!("seal seq {seq}: got {:?}, model {want:?}", r.err()),
                }
            }
            Op::Deliver {
                which,
                rebind,
                muts,
                in_place,
            } => {
                if sealed.is_empty() {
                    continue;
                }
                let i = which as usize % sealed.len();
                let data = mutate(&sealed[i].bytes, &muts);
                let bind = rebind
                    .map(Bind::norm)
                    .unwrap_or_else(|| sealed[i].bind.clone());
                // The genuine record these bytes are, if any (an edit could in principle
                // produce another sealed record).
                let genuine = sealed
                    .iter()
                    .position(|s| s.bytes == data && s.bind == bind);
                let r = open_req(&mut server, &bind, &data, in_place);
                let Some(g) = genuine else {
                    assert!(r.is_err(), "an edited or re-bound request opened");
                    continue;
                };
                let seq = sealed[g].seq;
                let want = match window.check(seq) {
                    Err(_) => Err(()),
                    Ok(()) => c2s_server.relation(seq),
                };
                match (r, want) {
                    (Ok((sealer, pt)), Ok(next_epoch)) => {
                        let exp = sealer.expectation();
                        if next_epoch {
                            c2s_server.epoch += 1;
                        }
                        window.mark(seq).expect("model window");
                        assert_eq!(server.highest_seq(), window.highest());
                        assert_eq!(
                            exp, sealed[g].exp,
                            "server and client response handles differ"
                        );
                        assert_eq!(pt, sealed[g].plaintext, "wrong plaintext");
                        if let Some(m) = &sealed[g].full_msg {
                            // What the server's full-mode route does next.
                            let d = FullRequest::decode(&pt);
                            match crate::bhttp_headers_after_round_trip(&m.headers) {
                                Some(headers) => {
                                    let d = d.expect("sealed Binary HTTP decodes");
                                    assert_eq!(
                                        d,
                                        FullRequest {
                                            headers,
                                            ..m.clone()
                                        }
                                    );
                                }
                                None => assert!(d.is_err()),
                            }
                        }
                        opened.push((g, Some(sealer)));
                    }
                    (Err(e), Err(())) => {
                        assert_eq!(e.code(), sessioncert_proto::ErrorCode::Rejected, "{e:?}");
                        assert_eq!(server.highest_seq(), window.highest());
                    }
                    (r, want) => panic!("deliver seq {seq}: got {:?}, model {want:?}", r.err()),
                }
            }
            Op::RawRequest { data, bind, header } => {
                let mut data = data;
                if let Some((full_type, seq)) = header {
                    let mut h = vec![if full_type { 0x02 } else { 0x01 }];
                    h.extend_from_slice(&seq.to_be_bytes());
                    h.extend_from_slice(&data);
                    data = h;
                }
                let bind = default_bind(bind);
                if sealed.iter().any(|s| s.bytes == data) {
                    continue;
                }
                let before = server.highest_seq();
                assert!(
                    open_req(&mut server, &bind, &data, false).is_err(),
                    "made-up request opened"
                );
                assert!(
                    open_req(&mut server, &bind, &data, true).is_err(),
                    "made-up request opened"
                );
                assert_eq!(server.highest_seq(), before);
            }
            Op::Respond {
                which,
                status,
                content_type,
                body,
            } => {
                if opened.is_empty() {
                    continue;
                }
                let k = which as usize % opened.len();
                let req = opened[k].0;
                // Each opened request's response is sealed once: the sealer is gone.
                let Some(sealer) = opened[k].1.take() else {
                    continue;
                };
                let s = &sealed[req];
                // A response in the other mode is refused, and the sealer handed back.
                let other = if s.exp.full {
                    RBind::Header(200, String::new())
                } else {
                    RBind::Full
                };
                let sealer = server
                    .seal_response(sealer, &other.binding(), b"x")
                    .expect_err("a response in the other mode sealed")
                    .sealer;
                let bind = if s.exp.full {
                    RBind::Full
                } else {
                    RBind::Header(status, content_type)
                };
                let (plaintext, _) = body_bytes(&body, true);
                let r = server.seal_response(sealer, &bind.binding(), &plaintext);
                let want = s2c_server.relation(s.seq);
                match (r, want) {
                    (Ok(bytes), Ok(next_epoch)) => {
                        if next_epoch {
                            s2c_server.epoch += 1;
                        }
                        assert_eq!(bytes.len(), 9 + plaintext.len() + 16);
                        responses.push(Response {
                            bytes,
                            bind,
                            seq: s.seq,
                            req,
                            plaintext,
                        });
                    }
                    (Err(failed), Err(())) => opened[k].1 = Some(failed.sealer),
                    (r, want) => panic!(
                        "seal response seq {}: got {:?}, model {want:?}",
                        s.seq,
                        r.err()
                    ),
                }
            }
            Op::ReceiveResponse {
                which,
                rebind,
                muts,
                in_place,
            } => {
                if responses.is_empty() {
                    continue;
                }
                let i = which as usize % responses.len();
                let data = mutate(&responses[i].bytes, &muts);
                let bind = rebind.unwrap_or_else(|| responses[i].bind.clone());
                let exp = sealed[responses[i].req].exp;
                let genuine = responses
                    .iter()
                    .position(|r| r.bytes == data && r.bind == bind && r.req == responses[i].req);
                let r = open_resp(&mut client, &exp, &bind, &data, in_place);
                let Some(g) = genuine else {
                    assert!(r.is_err(), "an edited or re-bound response opened");
                    continue;
                };
                let want = s2c_client.relation(responses[g].seq);
                match (r, want) {
                    (Ok(pt), Ok(next_epoch)) => {
                        if next_epoch {
                            s2c_client.epoch += 1;
                        }
                        assert_eq!(pt, responses[g].plaintext);
                        assert_eq!(bind.is_full(), exp.full);
                    }
                    (Err(_), Err(())) => {}
                    (r, want) => panic!(
                        "receive response seq {}: got {:?}, model {want:?}",
                        responses[g].seq,
                        r.err()
                    ),
                }
            }
            Op::RawResponse { which, data, bind } => {
                if sealed.is_empty() {
                    continue;
                }
                let exp = sealed[which as usize % sealed.len()].exp;
                if responses.iter().any(|r| r.bytes == data) {
                    continue;
                }
                assert!(
                    open_resp(&mut client, &exp, &bind, &data, false).is_err(),
                    "made-up response opened"
                );
                assert!(
                    open_resp(&mut client, &exp, &bind, &data, true).is_err(),
                    "made-up response opened"
                );
            }
            Op::Refuse { which, raw, code } => {
                let record = match (raw, sealed.is_empty()) {
                    (Some(r), _) => r,
                    (None, false) => sealed[which as usize % sealed.len()].bytes.clone(),
                    (None, true) => continue,
                };
                let code = ErrorCode::ALL[code as usize % ErrorCode::ALL.len()];
                let before = server.highest_seq();
                let live = server.refusal_tag(&record, code);
                let ended = ServerSession::import(&server.export())
                    .expect("server re-import")
                    .end()
                    .refusal_tag(&record, code);
                assert_eq!(live, ended, "a live and an ended session tag differently");
                assert_eq!(
                    server.highest_seq(),
                    before,
                    "a refusal tag changed the window"
                );
                // PROTOCOL §14.1: only the ends of a session, only for a request record
                // whose seq this session never accepted.
                let header = RecordHeader::parse(&record).ok().filter(|h| {
                    h.record_type.is_request()
                });
                let want = matches!(code, ErrorCode::SessionExpired | ErrorCode::SessionClosed)
                    && header.is_some_and(|h| window.check(h.seq).is_ok());
                assert_eq!(live.is_some(), want, "refusal tag for {code:?} {header:?}");
                if let (Some(tag), Some(h)) = (live, header) {
                    assert!(
                        client.verify_refusal(h.seq, code, &tag),
                        "the client refused a genuine refusal tag"
                    );
                    for other in ErrorCode::ALL {
                        if other != code {
                            assert!(
                                !client.verify_refusal(h.seq, other, &tag),
                                "tag valid for another code"
                            );
                        }
                    }
                    assert!(
                        !client.verify_refusal(h.seq ^ 1, code, &tag),
                        "tag valid for another seq"
                    );
                    refusals.push((h.seq, code, tag.to_vec()));
                }
            }
            Op::ForgeRefusal { seq, code, tag } => {
                let seq = match sealed.get(seq as usize) {
                    Some(s) if seq < 64 => s.seq,
                    _ => seq,
                };
                let code = ErrorCode::ALL[code as usize % ErrorCode::ALL.len()];
                if client.verify_refusal(seq, code, &tag) {
                    assert!(
                        refusals
                            .iter()
                            .any(|(s, c, t)| *s == seq && *c == code && *t == tag),
                        "a made-up refusal tag verified"
                    );
                }
            }
            Op::Reflect { which } => {
                if let Some(r) = responses.get(which as usize % responses.len().max(1)) {
                    let bind = sealed[r.req].bind.clone();
                    assert!(
                        open_req(&mut server, &bind, &r.bytes, false).is_err(),
                        "response opened as a request"
                    );
                }
                if let Some(s) = sealed.get(which as usize % sealed.len().max(1)) {
                    let bind = if s.exp.full {
                        RBind::Full
                    } else {
                        RBind::Header(200, String::new())
                    };
                    assert!(
                        open_resp(&mut client, &s.exp, &bind, &s.bytes, false).is_err(),
                        "request opened as a response"
                    );
                }
            }
        }
    }
}
