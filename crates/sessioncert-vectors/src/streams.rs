//! `streams.json`: streamed records (PROTOCOL §8.5), generated through the crate and
//! re-derived by the reference implementation.

use crate::*;
use sessioncert_proto::record::{RecordType, RECORD_HEADER_LEN};
use sessioncert_proto::stream::{complete_chunk, StreamOpener, MAX_CHUNK_LEN};
use sessioncert_proto::ResponseSealer;
use sha2::Digest as _;

// ---------------------------------------------------------------------------------------
// File layout
// ---------------------------------------------------------------------------------------

/// One chunk of a stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ChunkV {
    pub index: u64,
    pub last: bool,
    pub plaintext: String,
    /// `3 zero bytes || u64 index || u8 last`.
    pub nonce: String,
    /// The chunk on the wire: `u8 last || u24 len || ciphertext || tag`.
    pub chunk: String,
}

/// A sealed body: one record (types 0x01/0x02/0x81/0x82) or a stream (0x03/0x04/0x83/0x84).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SealedBodyV {
    pub record_type: u8,
    pub seq: u64,
    pub epoch: u64,
    /// The associated data (with this body's type byte).
    pub ad: String,
    /// The whole plaintext (a stream's chunks concatenated).
    pub plaintext: String,
    /// A record's nonce (iv XOR seq); absent for a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// A stream's HKDF info: `"sessioncert/1 stream" || u8 type || u64 seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_key_info: Option<String>,
    /// A stream's key: `HKDF-Expand(epoch key, stream_key_info, 32)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    /// A stream's chunks, in order; empty for a record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkV>,
    /// The whole body: the record, or `type || u64 seq || chunk_0 || … || chunk_n`.
    pub body: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamRequestV {
    pub binding: ReqBindingV,
    /// Full mode: the HTTP request whose indeterinate-length Binary HTTP encoding is
    /// the plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullRequestV>,
    #[serde(flatten)]
    pub sealed: SealedBodyV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamResponseV {
    pub binding: RespBindingV,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullResponseV>,
    /// The request's tag the response is bound to: a record's tag, or the tag of a
    /// streamed request's first chunk.
    pub request_tag: String,
    #[serde(flatten)]
    pub sealed: SealedBodyV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamExchangeV {
    pub name: String,
    pub description: String,
    pub request: StreamRequestV,
    pub response: StreamResponseV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamScenarioV {
    pub name: String,
    pub description: String,
    pub client_export_start: String,
    pub server_export_start: String,
    /// In the order the client seals them.
    pub exchanges: Vec<StreamExchangeV>,
    /// Indices into `exchanges`: the order in which the server opens each request and
    /// at once seals its response, and the client opens it.
    pub server_order: Vec<usize>,
    pub client_export_end: String,
    pub server_export_end: String,
}

/// The outcome of opening a body: exactly one of `plaintext` and `error`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamOutcomeV {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a stream body: how many chunks opened (their plaintext may have been
    /// released) before the outcome. Absent for a single record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_opened: Option<u64>,
}

impl StreamOutcomeV {
    fn ok(pt: &[u8], chunks: Option<u64>) -> Self {
        StreamOutcomeV {
            plaintext: Some(hx(pt)),
            error: None,
            chunks_opened: chunks,
        }
    }
    fn err(code: &str, chunks: Option<u64>) -> Self {
        StreamOutcomeV {
            plaintext: None,
            error: Some(code.to_owned()),
            chunks_opened: chunks,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamServerStepV {
    pub binding: ReqBindingV,
    pub body: String,
    pub expect: StreamOutcomeV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamServerCaseV {
    pub name: String,
    pub description: String,
    pub server_export: String,
    /// Opened one after another against the same server session.
    pub steps: Vec<StreamServerStepV>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamClientCaseV {
    pub name: String,
    pub description: String,
    pub client_export: String,
    pub expectation: ExpectationV,
    pub binding: RespBindingV,
    pub body: String,
    pub expect: StreamOutcomeV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamSealCaseV {
    pub name: String,
    pub description: String,
    pub client_export: String,
    pub binding: ReqBindingV,
    /// The first chunk's plaintext.
    pub first: String,
    pub last: bool,
    pub error: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamSuiteV {
    pub name: String,
    pub suite: u16,
    pub session_id: String,
    pub c2s_key: String,
    pub c2s_iv: String,
    pub s2c_key: String,
    pub s2c_iv: String,
    /// The confirmed sessions of the same-named handshake case (streams negotiated).
    pub client_export: String,
    pub server_export: String,
    pub scenarios: Vec<StreamScenarioV>,
    pub server_open_cases: Vec<StreamServerCaseV>,
    pub client_open_cases: Vec<StreamClientCaseV>,
    pub client_seal_cases: Vec<StreamSealCaseV>,
}

/// `streams.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamsFile {
    pub description: Vec<String>,
    pub stream_label: String,
    pub max_chunk_len: u64,
    pub rekey_interval: u64,
    pub suites: Vec<StreamSuiteV>,
}

// ---------------------------------------------------------------------------------------
// Through the crate
// ---------------------------------------------------------------------------------------

fn is_stream_body(body: &[u8]) -> bool {
    body.first()
        .and_then(|b| RecordType::from_byte(*b))
        .is_some_and(|t| t.is_stream())
}

/// Opens the chunks after the first, then ends the stream where the body ends.
fn read_chunks(mut opener: StreamOpener, mut rest: &[u8], mut pt: Vec<u8>) -> StreamOutcomeV {
    while !rest.is_empty() {
        match complete_chunk(rest) {
            Err(e) => return StreamOutcomeV::err(&code(&e), Some(opener.chunks_opened())),
            // Bytes after the last chunk that are not even a chunk.
            Ok(None) if opener.is_finished() => {
                return StreamOutcomeV::err("malformed", Some(opener.chunks_opened()))
            }
            // The body ends inside a chunk: finish() reports the cut.
            Ok(None) => break,
            Ok(Some(n)) => {
                let mut frame = rest[..n].to_vec();
                match opener.open_chunk(&mut frame) {
                    Ok(c) => pt.extend_from_slice(&frame[c.plaintext]),
                    Err(e) => return StreamOutcomeV::err(&code(&e), Some(opener.chunks_opened())),
                }
                rest = &rest[n..];
            }
        }
    }
    match opener.finish() {
        Ok(()) => StreamOutcomeV::ok(&pt, Some(opener.chunks_opened())),
        Err(e) => StreamOutcomeV::err(&code(&e), Some(opener.chunks_opened())),
    }
}

/// The first chunk of a stream body after its header: `Ok(None)` when the body ends
/// before it is whole (the stream was cut), an error when its header is invalid (the
/// receiver refuses at once, as it would any later chunk: the outcome must not depend
/// on how many bytes had arrived).
fn first_chunk(rest: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
    Ok(complete_chunk(rest)?.map(|n| rest[..n].to_vec()))
}

/// What a server does with a request body: a single record or a stream, told apart by
/// the first byte; a stream is read chunk by chunk and ends where the body ends. Returns
/// the outcome and, when the request opened, the sealer of its response.
pub fn server_open_body(
    server: &mut ServerSession,
    binding: &ReqBindingV,
    body: &[u8],
) -> (StreamOutcomeV, Option<ResponseSealer>) {
    if !is_stream_body(body) {
        return match binding.with_binding(|b| server.open_request(b, body)) {
            Ok(o) => (StreamOutcomeV::ok(&o.plaintext, None), Some(o.sealer)),
            Err(e) => (StreamOutcomeV::err(&code(&e), None), None),
        };
    }
    let fail = |e: &ProtocolError| (StreamOutcomeV::err(&code(e), Some(0)), None);
    if body.len() < RECORD_HEADER_LEN {
        // Cut inside the stream header: cut short, like a stream cut anywhere (§8.5).
        return fail(&ProtocolError::Truncated);
    }
    let (header, rest) = body.split_at(RECORD_HEADER_LEN);
    let mut first = match first_chunk(rest) {
        Ok(Some(f)) => f,
        Ok(None) => return fail(&ProtocolError::Truncated),
        Err(e) => return fail(&e),
    };
    let o = match binding.with_binding(|b| server.open_request_stream(b, header, &mut first)) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let pt = first[o.first.plaintext.clone()].to_vec();
    let outcome = read_chunks(o.opener, &rest[first.len()..], pt);
    (outcome, Some(o.sealer))
}

/// What a client does with a response body, as [`server_open_body`] does with requests.
pub fn client_open_body(
    client: &mut ClientSession,
    expect: &ResponseExpectation,
    binding: &RespBindingV,
    body: &[u8],
) -> StreamOutcomeV {
    let b = binding.binding();
    if !is_stream_body(body) {
        return match client.open_response(expect, &b, body) {
            Ok(pt) => StreamOutcomeV::ok(&pt, None),
            Err(e) => StreamOutcomeV::err(&code(&e), None),
        };
    }
    let fail = |e: &ProtocolError| StreamOutcomeV::err(&code(e), Some(0));
    if body.len() < RECORD_HEADER_LEN {
        // Cut inside the stream header: cut short, like a stream cut anywhere (§8.5).
        return fail(&ProtocolError::Truncated);
    }
    let (header, rest) = body.split_at(RECORD_HEADER_LEN);
    let mut first = match first_chunk(rest) {
        Ok(Some(f)) => f,
        Ok(None) => return fail(&ProtocolError::Truncated),
        Err(e) => return fail(&e),
    };
    match client.open_response_stream(expect, &b, header, &mut first) {
        Ok((c, opener)) => {
            let pt = first[c.plaintext].to_vec();
            read_chunks(opener, &rest[first.len()..], pt)
        }
        Err(e) => fail(&e),
    }
}

/// The inputs of one exchange, as the crate seals them.
#[derive(Debug, Clone)]
pub struct FlowExchange {
    pub req: ReqBindingV,
    /// `None`: a single record of this plaintext; `Some`: a stream of these chunks.
    pub req_chunks: Chunks,
    pub resp: RespBindingV,
    pub resp_chunks: Chunks,
}

/// A body's plaintext: one record, or the chunks of a stream (the last one flagged).
#[derive(Debug, Clone)]
pub enum Chunks {
    Record(Vec<u8>),
    Stream(Vec<Vec<u8>>),
}

impl Chunks {
    fn plaintext(&self) -> Vec<u8> {
        match self {
            Chunks::Record(p) => p.clone(),
            Chunks::Stream(c) => c.concat(),
        }
    }
}

/// Seals a streamed request through the crate.
pub fn seal_request_body(
    client: &mut ClientSession,
    binding: &ReqBindingV,
    chunks: &Chunks,
) -> (Vec<u8>, ResponseExpectation) {
    match chunks {
        Chunks::Record(pt) => binding
            .with_binding(|b| client.seal_request(b, pt))
            .expect("seal request"),
        Chunks::Stream(c) => {
            let start = binding
                .with_binding(|b| client.seal_request_stream(b, &c[0], c.len() == 1))
                .expect("seal request stream");
            let mut body = start.bytes;
            if let Some(mut sealer) = start.sealer {
                let (last, middle) = c[1..].split_last().expect("a last chunk");
                for m in middle {
                    assert!(!m.is_empty(), "only the last chunk may be empty");
                    sealer.seal_chunk(m, &mut body).expect("seal chunk");
                }
                sealer.seal_last(last, &mut body).expect("seal last");
            }
            (body, start.expectation)
        }
    }
}

fn seal_response_body(
    server: &mut ServerSession,
    sealer: ResponseSealer,
    binding: &RespBindingV,
    chunks: &Chunks,
) -> Vec<u8> {
    let b = binding.binding();
    match chunks {
        Chunks::Record(pt) => server
            .seal_response(sealer, &b, pt)
            .map_err(|f| f.error)
            .expect("seal response"),
        Chunks::Stream(c) => {
            let (mut body, mut s) = server
                .seal_response_stream(sealer, &b)
                .map_err(|f| f.error)
                .expect("seal response stream");
            let (last, middle) = c.split_last().expect("a last chunk");
            for m in middle {
                assert!(!m.is_empty(), "only the last chunk may be empty");
                s.seal_chunk(m, &mut body).expect("seal chunk");
            }
            s.seal_last(last, &mut body).expect("seal last");
            body
        }
    }
}

/// Everything one scenario produces through the crate.
pub struct Flow {
    /// Per exchange: request body, its expectation, response body.
    pub bodies: Vec<(Vec<u8>, ResponseExpectation, Vec<u8>)>,
    pub client_end: Vec<u8>,
    pub server_end: Vec<u8>,
}

/// Runs a scenario through the crate: the client seals every request in order; then
/// in `order` the server opens each one and seals its response, which the client opens.
pub fn run_flow(
    client_start: &[u8],
    server_start: &[u8],
    exs: &[FlowExchange],
    order: &[usize],
) -> Flow {
    let mut client = ClientSession::import(client_start).unwrap();
    let mut server = ServerSession::import(server_start).unwrap();
    let sealed: Vec<_> = exs
        .iter()
        .map(|e| seal_request_body(&mut client, &e.req, &e.req_chunks))
        .collect();
    let mut responses = vec![Vec::new(); exs.len()];
    for &i in order {
        let e = &exs[i];
        let (outcome, sealer) = server_open_body(&mut server, &e.req, &sealed[i].0);
        assert_eq!(
            outcome.plaintext,
            Some(hx(&e.req_chunks.plaintext())),
            "request {i}: {outcome:?}"
        );
        let sealer = sealer.unwrap();
        assert_eq!(sealer.expectation(), sealed[i].1, "request {i}");
        let resp = seal_response_body(&mut server, sealer, &e.resp, &e.resp_chunks);
        let back = client_open_body(&mut client, &sealed[i].1, &e.resp, &resp);
        assert_eq!(
            back.plaintext,
            Some(hx(&e.resp_chunks.plaintext())),
            "response {i}: {back:?}"
        );
        responses[i] = resp;
    }
    Flow {
        bodies: sealed
            .into_iter()
            .zip(responses)
            .map(|((req, exp), resp)| (req, exp, resp))
            .collect(),
        client_end: client.export().to_vec(),
        server_end: server.export().to_vec(),
    }
}

impl StreamExchangeV {
    /// The crate's inputs, read back from the file.
    pub fn flow(&self) -> FlowExchange {
        fn chunks(s: &SealedBodyV) -> Chunks {
            if s.chunks.is_empty() {
                Chunks::Record(unhx(&s.plaintext))
            } else {
                Chunks::Stream(s.chunks.iter().map(|c| unhx(&c.plaintext)).collect())
            }
        }
        FlowExchange {
            req: self.request.binding.clone(),
            req_chunks: chunks(&self.request.sealed),
            resp: self.response.binding.clone(),
            resp_chunks: chunks(&self.response.sealed),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference: sealing and opening from the text of §8.5 (RustCrypto directly)
// ---------------------------------------------------------------------------------------

/// The stream type of a request binding (0x03 header mode, 0x04 full mode).
pub fn req_stream_type(b: &ReqBindingV) -> u8 {
    match b {
        ReqBindingV::Header(_) => 0x03,
        ReqBindingV::Full => 0x04,
    }
}

/// The stream type of a response binding (0x83 header mode, 0x84 full mode).
pub fn resp_stream_type(b: &RespBindingV) -> u8 {
    match b {
        RespBindingV::Header { .. } => 0x83,
        RespBindingV::Full => 0x84,
    }
}

/// A request AD with the given type byte (a record's or a stream's).
pub fn reference_request_ad_typed(sid: &[u8; 16], seq: u64, t: u8, b: &ReqBindingV) -> Vec<u8> {
    let mut ad = reference_request_ad(sid, seq, b);
    ad[b"sessioncert/1 request".len()] = t;
    ad
}

/// A response AD with the given type byte.
pub fn reference_response_ad_typed(
    sid: &[u8; 16],
    seq: u64,
    tag: &[u8; 16],
    t: u8,
    b: &RespBindingV,
) -> Vec<u8> {
    let mut ad = reference_response_ad(sid, seq, tag, b);
    ad[b"sessioncert/1 response".len()] = t;
    ad
}

/// Seals a body by the reference alone: `key0` and `iv` are the direction's epoch-0 key
/// and IV, `chunks` `None` for a single record of `pt`.
#[allow(clippy::too_many_arguments)]
pub fn reference_body(
    suite: u16,
    key0: &[u8; 32],
    iv: &[u8; 12],
    record_type: u8,
    seq: u64,
    ad: &[u8],
    body: &Chunks,
) -> SealedBodyV {
    let epoch = seq / REKEY_INTERVAL;
    let key = reference::epoch_key(key0, epoch);
    let mut v = SealedBodyV {
        record_type,
        seq,
        epoch,
        ad: hx(ad),
        plaintext: hx(&body.plaintext()),
        nonce: None,
        stream_key_info: None,
        stream_key: None,
        chunks: Vec::new(),
        body: String::new(),
    };
    match body {
        Chunks::Record(pt) => {
            let rec = reference::record(suite, &key, iv, record_type, seq, ad, pt);
            v.nonce = Some(hx(&reference::nonce(iv, seq)));
            v.body = hx(&rec);
        }
        Chunks::Stream(chunks) => {
            let skey = reference::stream_key(&key, record_type, seq);
            let mut wire = vec![record_type];
            wire.extend_from_slice(&seq.to_be_bytes());
            for (i, pt) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                let c = reference::chunk(suite, &skey, i as u64, last, ad, pt);
                wire.extend_from_slice(&c);
                v.chunks.push(ChunkV {
                    index: i as u64,
                    last,
                    plaintext: hx(pt),
                    nonce: hx(&reference::chunk_nonce(i as u64, last)),
                    chunk: hx(&c),
                });
            }
            v.stream_key_info = Some(hx(&reference::stream_key_info(record_type, seq)));
            v.stream_key = Some(hx(&skey));
            v.body = hx(&wire);
        }
    }
    v
}

/// The tag a response is bound to: a record's last 16 bytes, or those of a stream's
/// first chunk.
pub fn reference_request_tag(s: &SealedBodyV) -> [u8; 16] {
    let b = match s.chunks.first() {
        Some(c) => unhx(&c.chunk),
        None => unhx(&s.body),
    };
    b[b.len() - 16..].try_into().unwrap()
}

/// One direction's keys, read from an export by the layout of §12.
#[derive(Debug, Clone)]
pub struct RefDirection {
    pub epoch: u64,
    pub current: [u8; 32],
    pub previous: Option<[u8; 32]>,
    pub iv: [u8; 12],
}

impl RefDirection {
    fn read(e: &[u8], at: usize) -> (Self, usize) {
        let epoch = u64::from_be_bytes(e[at..at + 8].try_into().unwrap());
        let current: [u8; 32] = e[at + 8..at + 40].try_into().unwrap();
        let (previous, at) = match e[at + 40] {
            1 => (Some(e[at + 41..at + 73].try_into().unwrap()), at + 73),
            _ => (None, at + 41),
        };
        let iv = e[at..at + 12].try_into().unwrap();
        (
            RefDirection {
                epoch,
                current,
                previous,
                iv,
            },
            at + 12,
        )
    }

    /// The epoch key that opens `seq` (§10), and whether the direction moves to the next
    /// epoch once something under it authenticated. Past the budget, two epochs ahead,
    /// or older than the previous epoch: `rejected`.
    fn key_for(&self, seq: u64) -> Result<([u8; 32], bool), &'static str> {
        if seq >= MAX_MESSAGES {
            return Err("rejected");
        }
        let e = seq / REKEY_INTERVAL;
        match (e, self.previous) {
            (e, _) if e == self.epoch => Ok((self.current, false)),
            (e, Some(p)) if e + 1 == self.epoch => Ok((p, false)),
            (e, _) if e == self.epoch + 1 => Ok((reference::ratchet(&self.current), true)),
            _ => Err("rejected"),
        }
    }

    fn advance(&mut self) {
        let next = reference::ratchet(&self.current);
        self.previous = Some(self.current);
        self.current = next;
        self.epoch += 1;
    }
}

fn export_head(e: &[u8], role: u8) -> (u16, bool, [u8; 16]) {
    assert_eq!(&e[..6], &[b'S', b'C', b'S', b'X', 2, role]);
    let suite = u16::from_be_bytes([e[8], e[9]]);
    let streams = e[EXPORT_FLAGS_AT] & reference::EXPORT_FLAG_STREAMS != 0;
    (suite, streams, e[11..27].try_into().unwrap())
}

/// Opens the chunks after the first by the reference: chunk `i` under nonce `(i, last)`;
/// a chunk header that is invalid, or bytes after the last chunk, are `malformed`; a
/// chunk that does not open, or a body that ends before the last chunk, `rejected`.
fn reference_rest(
    suite: u16,
    skey: &[u8; 32],
    ad: &[u8],
    rest: &[u8],
    mut pt: Vec<u8>,
    mut finished: bool,
) -> StreamOutcomeV {
    let (mut at, mut opened) = (0usize, 1u64);
    while at < rest.len() {
        let n = match reference::chunk_len(&rest[at..]) {
            Err(e) => return StreamOutcomeV::err(e, Some(opened)),
            Ok(None) if finished => return StreamOutcomeV::err("malformed", Some(opened)),
            Ok(None) => return StreamOutcomeV::err("rejected", Some(opened)),
            Ok(Some(n)) => n,
        };
        if finished {
            return StreamOutcomeV::err("malformed", Some(opened));
        }
        let c = &rest[at..at + n];
        let last = c[0] == 1;
        let nonce = reference::chunk_nonce(opened, last);
        match reference::aead_open(suite, skey, &nonce, ad, &c[4..]) {
            Some(p) => pt.extend_from_slice(&p),
            None => return StreamOutcomeV::err("rejected", Some(opened)),
        }
        opened += 1;
        finished = last;
        at += n;
    }
    if finished {
        StreamOutcomeV::ok(&pt, Some(opened))
    } else {
        StreamOutcomeV::err("rejected", Some(opened))
    }
}

/// Opens chunk 0 of a stream by the reference; `first` is its length when whole.
fn reference_first(
    suite: u16,
    skey: &[u8; 32],
    ad: &[u8],
    rest: &[u8],
    n: usize,
) -> Result<(Vec<u8>, bool, usize), StreamOutcomeV> {
    let c = &rest[..n];
    let last = c[0] == 1;
    match reference::aead_open(suite, skey, &reference::chunk_nonce(0, last), ad, &c[4..]) {
        Some(p) => Ok((p, last, n)),
        None => Err(StreamOutcomeV::err("rejected", Some(0))),
    }
}

/// The first chunk's length, before any session check: the body ends before it is
/// whole (cut: `rejected`) or its header is invalid (`malformed`).
/// What a receiver checks of a stream before its session state (§8.5), the same on
/// both sides: the 9-byte header and chunk 0 read whole (a cut anywhere is `rejected`,
/// a bad chunk header `malformed`), then the negotiation (`malformed`). Returns the
/// bytes after the header and chunk 0's length.
fn reference_stream_start(body: &[u8], streams: bool) -> Result<(&[u8], usize), StreamOutcomeV> {
    let Some(rest) = body.get(9..) else {
        // cut inside the header: cut short
        return Err(StreamOutcomeV::err("rejected", Some(0)));
    };
    let first = reference_split(rest)?;
    if !streams {
        return Err(StreamOutcomeV::err("malformed", Some(0)));
    }
    Ok((rest, first))
}

fn reference_split(rest: &[u8]) -> Result<usize, StreamOutcomeV> {
    match reference::chunk_len(rest) {
        Ok(None) => Err(StreamOutcomeV::err("rejected", Some(0))),
        Ok(Some(n)) => Ok(n),
        Err(e) => Err(StreamOutcomeV::err(e, Some(0))),
    }
}

/// A server session as the reference models it from its export (§12): the request
/// direction's keys, the negotiated flag and the replay window (§9), plus the numbers
/// accepted since.
pub struct RefServer {
    suite: u16,
    sid: [u8; 16],
    streams: bool,
    c2s: RefDirection,
    window: Vec<u8>,
    accepted: Vec<u64>,
}

impl RefServer {
    pub fn from_export(e: &[u8]) -> Self {
        let (suite, streams, sid) = export_head(e, 2);
        let (c2s, _) = RefDirection::read(e, EXPORT_HEAD_LEN);
        RefServer {
            suite,
            sid,
            streams,
            c2s,
            window: e[e.len() - 136..].to_vec(),
            accepted: Vec::new(),
        }
    }

    fn fresh(&self, seq: u64) -> bool {
        reference::window_accepts(&self.window, seq)
            && !self.accepted.contains(&seq)
            && self.accepted.iter().all(|&a| seq + WINDOW > a)
    }

    /// Opens a request body, in the order of checks of §8.4/§8.5: framing, negotiation,
    /// type against the binding, replay window, epoch, then the AEAD.
    pub fn open(&mut self, binding: &ReqBindingV, body: &[u8]) -> StreamOutcomeV {
        let Some(&t) = body.first() else {
            return StreamOutcomeV::err("malformed", None);
        };
        let seq = || u64::from_be_bytes(body[1..9].try_into().unwrap());
        match t {
            0x03 | 0x04 | 0x83 | 0x84 => {
                let (rest, first) = match reference_stream_start(body, self.streams) {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                if t != req_stream_type(binding) {
                    return StreamOutcomeV::err("rejected", Some(0));
                }
                let seq = seq();
                if !self.fresh(seq) {
                    return StreamOutcomeV::err("rejected", Some(0));
                }
                let (key, next) = match self.c2s.key_for(seq) {
                    Ok(k) => k,
                    Err(e) => return StreamOutcomeV::err(e, Some(0)),
                };
                let skey = reference::stream_key(&key, t, seq);
                let ad = reference_request_ad_typed(&self.sid, seq, t, binding);
                let (pt, last, n) = match reference_first(self.suite, &skey, &ad, rest, first) {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                if next {
                    self.c2s.advance();
                }
                self.accepted.push(seq);
                reference_rest(self.suite, &skey, &ad, &rest[n..], pt, last)
            }
            0x01 | 0x02 | 0x81 | 0x82 => {
                if body.len() < 9 + 16 {
                    return StreamOutcomeV::err("malformed", None);
                }
                let seq = seq();
                if t != req_type(binding) || !self.fresh(seq) {
                    return StreamOutcomeV::err("rejected", None);
                }
                let (key, next) = match self.c2s.key_for(seq) {
                    Ok(k) => k,
                    Err(e) => return StreamOutcomeV::err(e, None),
                };
                let ad = reference_request_ad_typed(&self.sid, seq, t, binding);
                let nonce = reference::nonce(&self.c2s.iv, seq);
                match reference::aead_open(self.suite, &key, &nonce, &ad, &body[9..]) {
                    Some(pt) => {
                        if next {
                            self.c2s.advance();
                        }
                        self.accepted.push(seq);
                        StreamOutcomeV::ok(&pt, None)
                    }
                    None => StreamOutcomeV::err("rejected", None),
                }
            }
            _ => StreamOutcomeV::err("malformed", None),
        }
    }
}

/// A client session as the reference models it: the response direction's keys and the
/// negotiated flag.
pub struct RefClient {
    suite: u16,
    sid: [u8; 16],
    streams: bool,
    s2c: RefDirection,
}

impl RefClient {
    pub fn from_export(e: &[u8]) -> Self {
        let (suite, streams, sid) = export_head(e, 1);
        let (_, at) = RefDirection::read(e, EXPORT_HEAD_LEN);
        let (s2c, _) = RefDirection::read(e, at);
        RefClient {
            suite,
            sid,
            streams,
            s2c,
        }
    }

    /// Opens a response body to the request `expect` describes.
    pub fn open(
        &mut self,
        expect: &ResponseExpectation,
        binding: &RespBindingV,
        body: &[u8],
    ) -> StreamOutcomeV {
        let Some(&t) = body.first() else {
            return StreamOutcomeV::err("malformed", None);
        };
        let seq = || u64::from_be_bytes(body[1..9].try_into().unwrap());
        match t {
            0x03 | 0x04 | 0x83 | 0x84 => {
                let (rest, first) = match reference_stream_start(body, self.streams) {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                let want = if expect.full { 0x84 } else { 0x83 };
                let seq = seq();
                if t != want || resp_stream_type(binding) != want || seq != expect.seq {
                    return StreamOutcomeV::err("rejected", Some(0));
                }
                let (key, next) = match self.s2c.key_for(seq) {
                    Ok(k) => k,
                    Err(e) => return StreamOutcomeV::err(e, Some(0)),
                };
                let skey = reference::stream_key(&key, t, seq);
                let ad =
                    reference_response_ad_typed(&self.sid, seq, &expect.request_tag, t, binding);
                let (pt, last, n) = match reference_first(self.suite, &skey, &ad, rest, first) {
                    Ok(x) => x,
                    Err(o) => return o,
                };
                if next {
                    self.s2c.advance();
                }
                reference_rest(self.suite, &skey, &ad, &rest[n..], pt, last)
            }
            0x01 | 0x02 | 0x81 | 0x82 => {
                if body.len() < 9 + 16 {
                    return StreamOutcomeV::err("malformed", None);
                }
                let want = if expect.full { 0x82 } else { 0x81 };
                let seq = seq();
                if t != want || resp_type(binding) != want || seq != expect.seq {
                    return StreamOutcomeV::err("rejected", None);
                }
                let (key, next) = match self.s2c.key_for(seq) {
                    Ok(k) => k,
                    Err(e) => return StreamOutcomeV::err(e, None),
                };
                let ad =
                    reference_response_ad_typed(&self.sid, seq, &expect.request_tag, t, binding);
                let nonce = reference::nonce(&self.s2c.iv, seq);
                match reference::aead_open(self.suite, &key, &nonce, &ad, &body[9..]) {
                    Some(pt) => {
                        if next {
                            self.s2c.advance();
                        }
                        StreamOutcomeV::ok(&pt, None)
                    }
                    None => StreamOutcomeV::err("rejected", None),
                }
            }
            _ => StreamOutcomeV::err("malformed", None),
        }
    }
}

/// Builds a scenario's exchange records by the reference from the crate's flow, and
/// checks both agree.
fn reference_exchange(
    rk: &RefKeys,
    name: &str,
    description: &str,
    spec: &StreamSpec,
    flow: &(Vec<u8>, ResponseExpectation, Vec<u8>),
) -> StreamExchangeV {
    let (req_body, exp, resp_body) = flow;
    let seq = exp.seq;
    let rt = match &spec.ex.req_chunks {
        Chunks::Record(_) => req_type(&spec.ex.req),
        Chunks::Stream(_) => req_stream_type(&spec.ex.req),
    };
    let ad = reference_request_ad_typed(&rk.sid, seq, rt, &spec.ex.req);
    let req = reference_body(
        rk.suite,
        &rk.c2s_key,
        &rk.c2s_iv,
        rt,
        seq,
        &ad,
        &spec.ex.req_chunks,
    );
    assert_eq!(req.body, hx(req_body), "{name}: request");
    let tag = reference_request_tag(&req);
    assert_eq!(tag, exp.request_tag, "{name}: request tag");
    let st = match &spec.ex.resp_chunks {
        Chunks::Record(_) => resp_type(&spec.ex.resp),
        Chunks::Stream(_) => resp_stream_type(&spec.ex.resp),
    };
    let rad = reference_response_ad_typed(&rk.sid, seq, &tag, st, &spec.ex.resp);
    let resp = reference_body(
        rk.suite,
        &rk.s2c_key,
        &rk.s2c_iv,
        st,
        seq,
        &rad,
        &spec.ex.resp_chunks,
    );
    assert_eq!(resp.body, hx(resp_body), "{name}: response");
    StreamExchangeV {
        name: name.into(),
        description: description.into(),
        request: StreamRequestV {
            binding: spec.ex.req.clone(),
            full: spec.req_full.clone(),
            sealed: req,
        },
        response: StreamResponseV {
            binding: spec.ex.resp.clone(),
            full: spec.resp_full.clone(),
            request_tag: hx(&tag),
            sealed: resp,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

struct StreamSpec {
    name: &'static str,
    description: &'static str,
    ex: FlowExchange,
    req_full: Option<FullRequestV>,
    resp_full: Option<FullResponseV>,
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A request in the indeterminate-length Binary HTTP form (RFC 9292 §3.2, framing
/// indicator 2), cut where a streaming sender would send it: control data and header
/// section, then one content chunk per piece, then the end (content terminator and an
/// empty trailer section).
pub fn indeterminate_request(r: &FullRequestV, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut head = reference::varint(2);
    for f in [&r.method, &r.scheme, &r.authority, &r.path] {
        head.extend_from_slice(&reference::bhttp_bytes(f.as_bytes()));
    }
    head.extend_from_slice(&reference::bhttp_fields(&r.headers));
    let mut out = vec![head];
    out.extend(pieces.iter().map(|p| reference::bhttp_bytes(p)));
    out.push(vec![0, 0]);
    out
}

/// A response in the indeterminate-length form (framing indicator 3), cut likewise.
pub fn indeterminate_response(r: &FullResponseV, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut head = reference::varint(3);
    head.extend_from_slice(&reference::varint(u64::from(r.status)));
    head.extend_from_slice(&reference::bhttp_fields(&r.headers));
    let mut out = vec![head];
    out.extend(pieces.iter().map(|p| reference::bhttp_bytes(p)));
    out.push(vec![0, 0]);
    out
}

fn main_specs() -> Vec<StreamSpec> {
    let csv = ["id,na", "me\n", "1,Ada\n", ""];
    let upload: String = csv.concat();
    let digest = hx(&sha2::Sha256::digest(upload.as_bytes()));
    let full_req = FullRequestV {
        method: "PUT".into(),
        scheme: "https".into(),
        authority: "api.example.com".into(),
        path: "/files/notes.txt".into(),
        headers: fields(&[("content-type", "text/plain")]),
        body: hx(b"first line\nsecond line\n"),
    };
    let full_digest = hx(&sha2::Sha256::digest(b"first line\nsecond line\n"));
    let full_body = format!(r#"{{"sha256":"{full_digest}","bytes":23}}"#);
    let full_resp = FullResponseV {
        status: 200,
        headers: fields(&[("content-type", "application/json")]),
        body: hx(full_body.as_bytes()),
    };
    vec![
        StreamSpec {
            name: "upload_stream",
            description: "A header-mode streamed request (type 0x03): chunks of 5, 3 and 6 bytes and an empty last chunk. Its streamed response (0x83) is bound to the tag of the request's first chunk: two chunks, the last one not empty.",
            ex: FlowExchange {
                req: ReqBindingV::header("PUT", "/files/people.csv", "", "text/csv"),
                req_chunks: Chunks::Stream(csv.iter().map(|c| b(c)).collect()),
                resp: RespBindingV::header(200, "application/json"),
                resp_chunks: Chunks::Stream(vec![
                    b(&format!(r#"{{"sha256":"{digest}","#)),
                    b(&format!(r#""bytes":{}}}"#, upload.len())),
                ]),
            },
            req_full: None,
            resp_full: None,
        },
        StreamSpec {
            name: "one_chunk_stream",
            description: "A streamed request of one chunk (chunk 0 is the last), answered by a single record (0x81) bound to that chunk's tag.",
            ex: FlowExchange {
                req: ReqBindingV::header("POST", "/api/echo", "", "text/plain"),
                req_chunks: Chunks::Stream(vec![b("hello")]),
                resp: RespBindingV::header(200, "text/plain"),
                resp_chunks: Chunks::Record(b("hello")),
            },
            req_full: None,
            resp_full: None,
        },
        StreamSpec {
            name: "full_mode_stream",
            description: "Full mode (0x04 / 0x84): the plaintext of each stream is an indeterminate-length Binary HTTP message (framing indicator 2 for the request, 3 for the response), sent as it comes: chunk 0 holds the control data and header section, each content chunk of the message its own stream chunk, the last stream chunk 0000 (content terminator and empty trailer section).",
            ex: FlowExchange {
                req: ReqBindingV::Full,
                req_chunks: Chunks::Stream(indeterminate_request(
                    &full_req,
                    &[b"first line\n", b"second line\n"],
                )),
                resp: RespBindingV::Full,
                resp_chunks: Chunks::Stream(indeterminate_response(
                    &full_resp,
                    &[full_body.as_bytes()],
                )),
            },
            req_full: Some(full_req),
            resp_full: Some(full_resp),
        },
        StreamSpec {
            name: "events",
            description: "A single-record request (0x01) answered by a streamed response (0x83): server-sent events, one per chunk, then an empty last chunk. The server answers it before full_mode_stream.",
            ex: FlowExchange {
                req: ReqBindingV::header("GET", "/events", "n=3&interval_ms=100", ""),
                req_chunks: Chunks::Record(Vec::new()),
                resp: RespBindingV::header(200, "text/event-stream"),
                resp_chunks: Chunks::Stream(vec![
                    b("data: {\"i\":0}\n\n"),
                    b("data: {\"i\":1}\n\n"),
                    b("data: {\"i\":2}\n\n"),
                    Vec::new(),
                ]),
            },
            req_full: None,
            resp_full: None,
        },
    ]
}

fn rekey_specs() -> Vec<StreamSpec> {
    let ping = |name: &'static str, seq: u64| StreamSpec {
        name,
        description: if seq < REKEY_INTERVAL {
            "Seq 65535, the last of epoch 0: stream keys derived from the epoch-0 keys."
        } else {
            "Seq 65536, the first of epoch 1: stream keys derived from the epoch-1 keys (the ratchet of §10)."
        },
        ex: FlowExchange {
            req: ReqBindingV::header("POST", "/api/ping", "", "text/plain"),
            req_chunks: Chunks::Stream(vec![b("ping "), b(&seq.to_string())]),
            resp: RespBindingV::header(200, "text/plain"),
            resp_chunks: Chunks::Stream(vec![b(&format!("pong {seq}"))]),
        },
        req_full: None,
        resp_full: None,
    };
    vec![
        ping("ping_65535", REKEY_INTERVAL - 1),
        ping("ping_65536", REKEY_INTERVAL),
    ]
}

fn scenario(
    rk: &RefKeys,
    name: &str,
    description: &str,
    client_start: &[u8],
    server_start: &[u8],
    specs: &[StreamSpec],
    order: Vec<usize>,
) -> StreamScenarioV {
    let exs: Vec<FlowExchange> = specs.iter().map(|s| s.ex.clone()).collect();
    let flow = run_flow(client_start, server_start, &exs, &order);
    let exchanges = specs
        .iter()
        .zip(&flow.bodies)
        .map(|(s, f)| reference_exchange(rk, s.name, s.description, s, f))
        .collect();
    StreamScenarioV {
        name: name.into(),
        description: description.into(),
        client_export_start: hx(client_start),
        server_export_start: hx(server_start),
        exchanges,
        server_order: order,
        client_export_end: hx(&flow.client_end),
        server_export_end: hx(&flow.server_end),
    }
}

/// Splits a stream body into its header and chunks.
pub fn split_stream(body: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (h, mut rest) = body.split_at(RECORD_HEADER_LEN);
    let mut chunks = Vec::new();
    while let Some(n) = complete_chunk(rest).unwrap() {
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    assert!(rest.is_empty());
    (h.to_vec(), chunks)
}

fn join(h: &[u8], chunks: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = h.to_vec();
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

fn with_byte(b: &[u8], i: usize, v: u8) -> Vec<u8> {
    let mut b = b.to_vec();
    b[i] = v;
    b
}

/// A chunk with its length field replaced (the rest untouched).
fn with_len(c: &[u8], len: u32) -> Vec<u8> {
    let mut c = c.to_vec();
    c[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    c
}

pub(crate) fn gen_streams(hs: &HandshakeFile) -> StreamsFile {
    let mut suites = Vec::new();
    for (ci, name) in SUITE_CASES.iter().enumerate() {
        let case = hs.case(name);
        let other = hs.case(SUITE_CASES[1 - ci]);
        let rk = RefKeys {
            suite: case.suite,
            sid: unhx_n(&case.session_id),
            c2s_key: unhx_n(&case.keys.c2s_key),
            c2s_iv: unhx_n(&case.keys.c2s_iv),
            s2c_key: unhx_n(&case.keys.s2c_key),
            s2c_iv: unhx_n(&case.keys.s2c_iv),
        };
        let cexp = unhx(&case.client_export);
        let sexp = unhx(&case.server_export);
        let specs = main_specs();
        let main = scenario(
            &rk,
            "main",
            "From the fresh sessions of the handshake: a header-mode streamed upload and its streamed answer, a one-chunk stream answered by a record, a full-mode exchange streamed both ways, and a record answered by a stream of events. The server opens the requests in the order 0, 1, 3, 2.",
            &cexp,
            &sexp,
            &specs,
            vec![0, 1, 3, 2],
        );
        let rekey = scenario(
            &rk,
            "rekey",
            "The client's next_seq set to 65535 in its export: two streamed requests at seq 65535 (epoch 0) and 65536 (epoch 1), each answered by a one-chunk stream. The server opens 65536 first (it ratchets both directions), then 65535 with the retained previous keys.",
            &client_export_at(&cexp, REKEY_INTERVAL - 1),
            &sexp,
            &rekey_specs(),
            vec![1, 0],
        );

        // ---- bodies the negative cases are made of ---------------------------------
        let ex = &main.exchanges;
        let body = |s: &SealedBodyV| unhx(&s.body);
        let up = body(&ex[0].request.sealed);
        let (uh, uc) = split_stream(&up);
        assert_eq!(uc.len(), 4);
        let b_up = ex[0].request.binding.clone();
        let one = body(&ex[1].request.sealed);
        let full = body(&ex[2].request.sealed);
        let (fh, fc) = split_stream(&full);
        let events_req = body(&ex[3].request.sealed);
        // The same upload sealed again by the client after the scenario (seq 4): a
        // second stream of the session with the same binding and chunk lengths.
        let (again, again_exp) = {
            let mut c = ClientSession::import(&unhx(&main.client_export_end)).unwrap();
            seal_request_body(&mut c, &b_up, &specs[0].ex.req_chunks)
        };
        assert_eq!(again_exp.seq, 4);
        let (_, ac) = split_stream(&again);
        let other_up = {
            let mut c = ClientSession::import(&unhx(&other.client_export)).unwrap();
            seal_request_body(&mut c, &b_up, &specs[0].ex.req_chunks).0
        };
        let unnegotiated = export_with_flags(&sexp, 0);

        type Steps = Vec<(ReqBindingV, Vec<u8>)>;
        let mut sc: Vec<(&str, &str, Vec<u8>, Steps)> = Vec::new();
        let s1 = |body: Vec<u8>| vec![(b_up.clone(), body)];
        sc.push((
            "ok_then_replay",
            "The upload stream opens; presented again it is a replay (its seq was marked when chunk 0 opened).",
            sexp.clone(),
            vec![(b_up.clone(), up.clone()), (b_up.clone(), up.clone())],
        ));
        sc.push((
            "truncated_after_whole_chunk",
            "The upload stream without its last chunk: three chunks open, then the body ends (Truncated). The seq was marked when chunk 0 opened: the whole stream presented afterwards is a replay.",
            sexp.clone(),
            vec![
                (b_up.clone(), join(&uh, &[&uc[0], &uc[1], &uc[2]])),
                (b_up.clone(), up.clone()),
            ],
        ));
        sc.push((
            "cut_mid_chunk",
            "The upload stream cut inside chunk 2 (after its header and 3 bytes).",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[1], &uc[2][..7].to_vec()])),
        ));
        sc.push((
            "cut_inside_first_chunk",
            "The upload stream cut inside chunk 0: the body ends before the first chunk is whole (Truncated); nothing is marked, the whole stream opens afterwards.",
            sexp.clone(),
            vec![
                (b_up.clone(), up[..RECORD_HEADER_LEN + 10].to_vec()),
                (b_up.clone(), up.clone()),
            ],
        ));
        sc.push((
            "stream_header_only",
            "The 9-byte stream header (type 0x03, seq 0) and no chunk.",
            sexp.clone(),
            s1(uh.clone()),
        ));
        sc.push((
            "stream_header_cut",
            "The first 5 bytes of the stream header: cut short, rejected.",
            sexp.clone(),
            s1(up[..5].to_vec()),
        ));
        sc.push((
            "reordered",
            "Chunks 1 and 2 swapped.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[2], &uc[1], &uc[3]])),
        ));
        sc.push((
            "dropped",
            "Chunk 1 dropped.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[2], &uc[3]])),
        ));
        sc.push((
            "duplicated",
            "Chunk 1 sent twice.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[1], &uc[1], &uc[2], &uc[3]])),
        ));
        sc.push((
            "spliced_from_another_stream",
            "Chunk 1 replaced by chunk 1 of another stream of the same session (the same upload sealed again at seq 4: same binding, same plaintext, same position).",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &ac[1], &uc[2], &uc[3]])),
        ));
        sc.push((
            "chunks_under_another_header",
            "The seq-4 stream's chunks under the seq-0 stream's header: chunk 0 does not open, nothing is marked, and the genuine seq-0 stream opens afterwards.",
            sexp.clone(),
            vec![
                (b_up.clone(), join(&uh, &[&ac[0], &ac[1], &ac[2], &ac[3]])),
                (b_up.clone(), up.clone()),
            ],
        ));
        sc.push((
            "last_flag_set_on_middle_chunk",
            "Chunk 1's flag set to 1 (the stream would end there): its nonce differs, it does not open.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &with_byte(&uc[1], 0, 1)])),
        ));
        sc.push((
            "last_flag_cleared_on_empty_last_chunk",
            "The empty last chunk's flag cleared: an empty chunk that is not the last is malformed.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[1], &uc[2], &with_byte(&uc[3], 0, 0)])),
        ));
        sc.push((
            "last_flag_cleared",
            "The full-mode stream (binding full) with its last chunk (0000, not empty) flagged 0: it does not open under the nonce of a middle chunk.",
            sexp.clone(),
            vec![(
                ReqBindingV::Full,
                join(&fh, &[&fc[0], &fc[1], &fc[2], &with_byte(&fc[3], 0, 0)]),
            )],
        ));
        sc.push((
            "one_chunk_stream_flag_cleared",
            "The one-chunk stream (request 1) with its only chunk flagged 0.",
            sexp.clone(),
            vec![(
                ex[1].request.binding.clone(),
                with_byte(&one, RECORD_HEADER_LEN, 0),
            )],
        ));
        sc.push((
            "chunk_after_last",
            "The whole upload stream followed by a copy of its last chunk.",
            sexp.clone(),
            s1(join(&uh, &[&uc[0], &uc[1], &uc[2], &uc[3], &uc[3]])),
        ));
        sc.push((
            "byte_after_last",
            "The whole upload stream followed by one 0x00 byte.",
            sexp.clone(),
            s1([up.clone(), vec![0]].concat()),
        ));
        sc.push((
            "flag_byte_2",
            "Chunk 1's flag byte set to 2.",
            sexp.clone(),
            s1(join(
                &uh,
                &[&uc[0], &with_byte(&uc[1], 0, 2), &uc[2], &uc[3]],
            )),
        ));
        sc.push((
            "len_over_max",
            "Chunk 1's length field set to 65537 (one more than 64 KiB).",
            sexp.clone(),
            s1(join(
                &uh,
                &[&uc[0], &with_len(&uc[1], 65_537), &uc[2], &uc[3]],
            )),
        ));
        sc.push((
            "empty_non_last_chunk",
            "An empty chunk that is not the last (00 000000 and 16 bytes) inserted after chunk 0.",
            sexp.clone(),
            s1(join(
                &uh,
                &[
                    &uc[0],
                    &[vec![0u8; 4], uc[1][uc[1].len() - 16..].to_vec()].concat(),
                    &uc[1],
                    &uc[2],
                    &uc[3],
                ],
            )),
        ));
        sc.push((
            "stream_not_negotiated",
            "The upload stream presented to the same session with its export's flags byte 00: a session that did not negotiate streams refuses stream types.",
            unnegotiated,
            s1(up.clone()),
        ));
        sc.push((
            "header_stream_as_full",
            "The header-mode stream (0x03) presented to the full-mode endpoint (binding full).",
            sexp.clone(),
            vec![(ReqBindingV::Full, up.clone())],
        ));
        sc.push((
            "header_stream_retyped_as_full",
            "The header-mode stream with its type byte rewritten to 0x04 and presented in full mode: the type is in the stream key and the AD.",
            sexp.clone(),
            vec![(ReqBindingV::Full, with_byte(&up, 0, 0x04))],
        ));
        sc.push((
            "full_stream_as_header",
            "The full-mode stream (0x04) presented as a header-mode request (the upload's binding).",
            sexp.clone(),
            s1(full.clone()),
        ));
        sc.push((
            "full_stream_retyped_as_header",
            "The full-mode stream with its type byte rewritten to 0x03, presented in header mode.",
            sexp.clone(),
            s1(with_byte(&full, 0, 0x03)),
        ));
        sc.push((
            "stream_retyped_as_record",
            "The upload stream with its type byte rewritten to 0x01: read as a single record, it does not open.",
            sexp.clone(),
            s1(with_byte(&up, 0, 0x01)),
        ));
        sc.push((
            "record_retyped_as_stream",
            "Request 3 (a single record, 0x01, with an empty body: header and tag) with its type byte rewritten to 0x03.",
            sexp.clone(),
            vec![(ex[3].request.binding.clone(), with_byte(&events_req, 0, 0x03))],
        ));
        sc.push((
            "binding_changed",
            "The upload stream presented on path /files/other.csv: the binding is in every chunk's AD.",
            sexp.clone(),
            vec![(
                b_up.changed(|l| l.path = "/files/other.csv".into()),
                up.clone(),
            )],
        ));
        sc.push((
            "response_stream_reflected",
            "The server's own streamed response 0 (0x83) sent back as a request.",
            sexp.clone(),
            s1(body(&ex[0].response.sealed)),
        ));
        sc.push((
            "forged_next_epoch_does_not_rekey",
            "The upload stream with its seq rewritten to 65536: refused, and neither the window nor the key moves: the genuine stream opens afterwards.",
            sexp.clone(),
            vec![
                (b_up.clone(), with_seq(&up, REKEY_INTERVAL)),
                (b_up.clone(), up.clone()),
            ],
        ));
        sc.push((
            "stream_of_another_session",
            "The same upload sealed by the other suite's session.",
            sexp.clone(),
            s1(other_up),
        ));

        let server_open_cases: Vec<StreamServerCaseV> = sc
            .into_iter()
            .map(|(name, description, export, steps)| {
                let got = run_server_stream_steps(&export, &steps);
                let reference = reference_server_stream_steps(&export, &steps);
                assert_eq!(got, reference, "{name}");
                StreamServerCaseV {
                    name: name.into(),
                    description: description.into(),
                    server_export: hx(&export),
                    steps: steps
                        .into_iter()
                        .zip(got)
                        .map(|((binding, body), expect)| StreamServerStepV {
                            binding,
                            body: hx(&body),
                            expect,
                        })
                        .collect(),
                }
            })
            .collect();

        // ---- client side --------------------------------------------------------
        let exp_of = |i: usize| ResponseExpectation {
            seq: ex[i].request.sealed.seq,
            request_tag: unhx_n(&ex[i].response.request_tag),
            full: ex[i].request.binding == ReqBindingV::Full,
        };
        let r_up = body(&ex[0].response.sealed);
        let (rh, rc) = split_stream(&r_up);
        let ev = body(&ex[3].response.sealed);
        let (eh, ec) = split_stream(&ev);
        assert_eq!(ec.len(), 4);
        let r_full = body(&ex[2].response.sealed);
        let rb_up = ex[0].response.binding.clone();
        let rb_ev = ex[3].response.binding.clone();
        type ClientCase<'a> = (
            &'a str,
            &'a str,
            Vec<u8>,
            ResponseExpectation,
            RespBindingV,
            Vec<u8>,
        );
        let mut cc: Vec<ClientCase> = Vec::new();
        let ev_case =
            |name, desc, b: Vec<u8>| (name, desc, cexp.clone(), exp_of(3), rb_ev.clone(), b);
        cc.push(ev_case(
            "truncated_after_whole_chunk",
            "The events stream without its empty last chunk: three events open, then the body ends (Truncated).",
            join(&eh, &[&ec[0], &ec[1], &ec[2]]),
        ));
        cc.push(ev_case(
            "cut_mid_chunk",
            "The events stream cut inside chunk 1.",
            join(&eh, &[&ec[0], &ec[1][..10].to_vec()]),
        ));
        cc.push(ev_case(
            "reordered",
            "Events 1 and 2 swapped.",
            join(&eh, &[&ec[0], &ec[2], &ec[1], &ec[3]]),
        ));
        cc.push(ev_case(
            "dropped",
            "Event 1 dropped.",
            join(&eh, &[&ec[0], &ec[2], &ec[3]]),
        ));
        cc.push(ev_case(
            "duplicated",
            "Event 0 sent twice.",
            join(&eh, &[&ec[0], &ec[0], &ec[1], &ec[2], &ec[3]]),
        ));
        cc.push(ev_case(
            "last_flag_set_early",
            "Event 1 flagged as the last chunk, and the body ends there.",
            join(&eh, &[&ec[0], &with_byte(&ec[1], 0, 1)]),
        ));
        cc.push(ev_case(
            "chunk_after_last",
            "The whole events stream followed by a copy of event 2.",
            join(&eh, &[&ec[0], &ec[1], &ec[2], &ec[3], &ec[2]]),
        ));
        cc.push(ev_case(
            "flag_byte_2",
            "Event 1's flag byte set to 2.",
            join(&eh, &[&ec[0], &with_byte(&ec[1], 0, 2), &ec[2], &ec[3]]),
        ));
        cc.push(ev_case(
            "len_over_max",
            "Event 1's length field set to 65537.",
            join(&eh, &[&ec[0], &with_len(&ec[1], 65_537), &ec[2], &ec[3]]),
        ));
        cc.push(ev_case(
            "empty_non_last_chunk",
            "Event 1 replaced by an empty chunk that is not the last.",
            join(
                &eh,
                &[
                    &ec[0],
                    &[vec![0u8; 4], ec[1][ec[1].len() - 16..].to_vec()].concat(),
                    &ec[2],
                    &ec[3],
                ],
            ),
        ));
        cc.push((
            "last_flag_cleared",
            "Response 0's last chunk (not empty) flagged 0.",
            cexp.clone(),
            exp_of(0),
            rb_up.clone(),
            join(&rh, &[&rc[0], &with_byte(&rc[1], 0, 0)]),
        ));
        cc.push((
            "response_stream_of_another_request",
            "Response 0 (a stream for seq 0) delivered as the answer to request 3 (seq 3), under response 0's binding.",
            cexp.clone(),
            exp_of(3),
            rb_up.clone(),
            r_up.clone(),
        ));
        cc.push((
            "response_stream_seq_rewritten",
            "Response 0 with its seq rewritten to 3, delivered as the answer to request 3 under response 0's binding: the seq is in the stream key and the AD.",
            cexp.clone(),
            exp_of(3),
            rb_up.clone(),
            with_seq(&r_up, 3),
        ));
        cc.push((
            "request_tag_mismatch",
            "Response 0 opened with an expectation whose request tag has its first byte XOR 0x01.",
            cexp.clone(),
            {
                let mut e = exp_of(0);
                e.request_tag[0] ^= 1;
                e
            },
            rb_up.clone(),
            r_up.clone(),
        ));
        cc.push((
            "request_tag_of_last_chunk",
            "Response 0 opened as bound to the tag of the request's last chunk: a response is bound to the first chunk's tag.",
            cexp.clone(),
            ResponseExpectation {
                request_tag: uc[3][uc[3].len() - 16..].try_into().unwrap(),
                ..exp_of(0)
            },
            rb_up.clone(),
            r_up.clone(),
        ));
        cc.push((
            "status_changed",
            "Response 0 presented with status 201.",
            cexp.clone(),
            exp_of(0),
            RespBindingV::header(201, "application/json"),
            r_up.clone(),
        ));
        cc.push((
            "stream_not_negotiated",
            "The events stream to a client session whose export's flags byte is 00.",
            export_with_flags(&cexp, 0),
            exp_of(3),
            rb_ev.clone(),
            ev.clone(),
        ));
        cc.push((
            "full_stream_as_header",
            "The full-mode response stream (0x84) to request 2 opened as a header-mode response (status 200, no content type).",
            cexp.clone(),
            ResponseExpectation {
                full: false,
                ..exp_of(2)
            },
            RespBindingV::header(200, ""),
            r_full.clone(),
        ));
        cc.push((
            "header_stream_retyped_as_full",
            "Response 0 with its type byte rewritten to 0x84, opened as a full-mode response to request 0.",
            cexp.clone(),
            ResponseExpectation {
                full: true,
                ..exp_of(0)
            },
            RespBindingV::Full,
            with_byte(&r_up, 0, 0x84),
        ));
        cc.push((
            "request_stream_reflected",
            "The client's own upload stream (0x03) returned as the response to it.",
            cexp.clone(),
            exp_of(0),
            rb_up.clone(),
            up.clone(),
        ));
        let client_open_cases: Vec<StreamClientCaseV> = cc
            .into_iter()
            .map(|(name, description, export, e, binding, body)| {
                let got = client_open_body(
                    &mut ClientSession::import(&export).unwrap(),
                    &e,
                    &binding,
                    &body,
                );
                let reference = RefClient::from_export(&export).open(&e, &binding, &body);
                assert_eq!(got, reference, "{name}");
                assert!(got.error.is_some(), "{name} opened");
                StreamClientCaseV {
                    name: name.into(),
                    description: description.into(),
                    client_export: hx(&export),
                    expectation: ExpectationV::of(&e),
                    binding,
                    body: hx(&body),
                    expect: got,
                }
            })
            .collect();

        let client_seal_cases = vec![{
            let export = export_with_flags(&cexp, 0);
            let mut c = ClientSession::import(&export).unwrap();
            let err = b_up
                .with_binding(|b| c.seal_request_stream(b, b"id,na", false))
                .expect_err("not negotiated");
            assert_eq!(c.next_seq(), 0, "a refused stream takes no seq");
            StreamSealCaseV {
                name: "stream_not_negotiated".into(),
                description: "A client session whose export's flags byte is 00 refuses to start a stream (and takes no seq).".into(),
                client_export: hx(&export),
                binding: b_up.clone(),
                first: hx(b"id,na"),
                last: false,
                error: code(&err),
            }
        }];

        suites.push(StreamSuiteV {
            name: case.name.clone(),
            suite: case.suite,
            session_id: case.session_id.clone(),
            c2s_key: case.keys.c2s_key.clone(),
            c2s_iv: case.keys.c2s_iv.clone(),
            s2c_key: case.keys.s2c_key.clone(),
            s2c_iv: case.keys.s2c_iv.clone(),
            client_export: case.client_export.clone(),
            server_export: case.server_export.clone(),
            scenarios: vec![main, rekey],
            server_open_cases,
            client_open_cases,
            client_seal_cases,
        });
    }
    StreamsFile {
        description: lines(&[
            "sessioncert streamed record vectors (docs/PROTOCOL.md §8.5). All byte strings are lower-case hex.",
            "Each suite starts from the confirmed sessions of the same-named case in handshake.json, which negotiated streamed_records (export flags 01).",
            "stream body = u8 type || u64 seq || chunk_0 || ... || chunk_n; type 0x03 header-mode request, 0x04 full-mode request, 0x83 header-mode response, 0x84 full-mode response (single records keep 0x01/0x02/0x81/0x82: a receiver tells them apart by the first byte).",
            "chunk = u8 last (0 or 1) || u24 len || ciphertext[len] || tag[16]; len <= max_chunk_len; only the last chunk may be empty; only the last chunk has last = 1.",
            "stream_key = HKDF-Expand(epoch key of the direction for seq, stream_key_info = stream_label || u8 type || u64 seq, 32); chunk i is sealed under nonce = 3 zero bytes || u64 i || u8 last with the AD a record of the same request or response would have, with the stream's type byte.",
            "A response to a streamed request is bound (request_tag) to the tag of the request's first chunk. The server marks seq in the replay window once chunk 0 opens.",
            "scenarios: import client_export_start / server_export_start; the client seals every request in order (record: plaintext; stream: the chunks' plaintexts, the last flagged); then in server_order the server opens each request and seals its response, and the client opens it. Every body and both end exports must match.",
            "Opening a body (server_open_cases, client_open_cases): the first byte tells a record from a stream. A stream is read as it arrives: its 9-byte header, then chunk by chunk; a chunk header that is invalid is malformed; a body that ends before the last chunk (after a whole chunk, inside one, or before chunk 0 is whole) is cut short: rejected (Truncated); anything after the last chunk is malformed. Session checks (negotiation: malformed; type against the binding or expectation, seq, replay window, epoch: rejected) come before chunk 0 is opened, once it is whole; a chunk header that is invalid is malformed wherever it is, at once. expect: plaintext or error (ErrorCode wire name), and for a stream chunks_opened: how many chunks authenticated before that outcome.",
            "server_open_cases: import server_export and open each step's body with its binding, one after another on the same session. client_open_cases: import client_export and open body as the response described by expectation and binding. client_seal_cases: import client_export and start a stream with binding and first chunk; error is the ErrorCode wire name.",
            "In full mode the stream's plaintext is an indeterminate-length Binary HTTP (RFC 9292) message; full gives the HTTP message it decodes to.",
        ]),
        stream_label: String::from_utf8_lossy(reference::STREAM_LABEL).into_owned(),
        max_chunk_len: MAX_CHUNK_LEN as u64,
        rekey_interval: REKEY_INTERVAL,
        suites,
    }
}

/// Runs a server case's steps through the crate.
pub fn run_server_stream_steps(
    server_export: &[u8],
    steps: &[(ReqBindingV, Vec<u8>)],
) -> Vec<StreamOutcomeV> {
    let mut server = ServerSession::import(server_export).unwrap();
    steps
        .iter()
        .map(|(b, body)| server_open_body(&mut server, b, body).0)
        .collect()
}

/// Runs a server case's steps through the reference model.
pub fn reference_server_stream_steps(
    server_export: &[u8],
    steps: &[(ReqBindingV, Vec<u8>)],
) -> Vec<StreamOutcomeV> {
    let mut server = RefServer::from_export(server_export);
    steps.iter().map(|(b, body)| server.open(b, body)).collect()
}
