//! Established sessions: sealing and opening records, re-keying, export for storage.
//!
//! Each direction has its own key and IV (a record sealed by the client can never be
//! reflected back as a response). The nonce is `iv XOR seq`, so it never repeats under
//! one key as long as a sequence number is used once per direction — which the client's
//! counter and the server's replay window guarantee. A response is sealed under the
//! server-to-client key with its request's sequence number.
//!
//! Keys ratchet forward every [`REKEY_INTERVAL`] messages
//! (`key[e+1] = HKDF-Expand(key[e], "sessioncert/1 rekey", 32)`); the previous epoch's
//! key is kept until the next ratchet (for requests of that epoch still in flight) and
//! older ones are gone, so a key compromised late in a session does not open its early
//! traffic.

use crate::codec::{Reader, Writer};
use crate::crypto::{nonce_for, AeadKey, Suite, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::record::{
    record_tag, request_ad, response_ad, RecordHeader, RecordType, RequestBinding, ResponseBinding,
    RECORD_HEADER_LEN,
};
use crate::replay::ReplayWindow;
use crate::stream::{stream_key, OpenedChunk, StreamOpener, StreamSealer};
use crate::{ErrorCode, ProtocolError, SessionId};
use zeroize::Zeroizing;

/// Messages per key epoch before both sides ratchet the key.
pub const REKEY_INTERVAL: u64 = 1 << 16;
/// Sequence numbers must stay below this; then the session is spent and the client
/// handshakes again.
pub const MAX_MESSAGES: u64 = 1 << 32;

pub(crate) const REKEY_LABEL: &[u8] = b"sessioncert/1 rekey";

/// The last key epoch a session can reach: the one holding sequence number
/// `MAX_MESSAGES - 1`.
const MAX_EPOCH: u64 = (MAX_MESSAGES - 1) / REKEY_INTERVAL;

/// The keys of one direction.
pub(crate) struct DirectionKeys {
    epoch: u64,
    current: AeadKey,
    previous: Option<AeadKey>,
    iv: [u8; NONCE_LEN],
}

enum Epoch {
    Current,
    Previous,
    Next,
}

impl DirectionKeys {
    pub(crate) fn new(key: AeadKey, iv: [u8; NONCE_LEN]) -> Self {
        DirectionKeys {
            epoch: 0,
            current: key,
            previous: None,
            iv,
        }
    }

    fn relation(&self, seq: u64) -> Result<Epoch, ProtocolError> {
        if seq >= MAX_MESSAGES {
            return Err(ProtocolError::Exhausted);
        }
        let e = seq / REKEY_INTERVAL;
        if e == self.epoch {
            Ok(Epoch::Current)
        } else if e + 1 == self.epoch && self.previous.is_some() {
            Ok(Epoch::Previous)
        } else if e == self.epoch + 1 {
            Ok(Epoch::Next)
        } else if e < self.epoch {
            Err(ProtocolError::Replay(seq))
        } else {
            // More than one epoch ahead: no honest peer skips 65,536 messages.
            Err(ProtocolError::BadSeal)
        }
    }

    fn advance(&mut self, next: AeadKey) {
        self.previous = Some(core::mem::replace(&mut self.current, next));
        self.epoch += 1;
    }

    fn seal(
        &mut self,
        seq: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ProtocolError> {
        let nonce = nonce_for(&self.iv, seq);
        match self.relation(seq)? {
            Epoch::Current => self.current.seal_detached(&nonce, ad, buf),
            Epoch::Previous => match &self.previous {
                Some(k) => k.seal_detached(&nonce, ad, buf),
                None => Err(ProtocolError::Replay(seq)),
            },
            Epoch::Next => {
                let k = self.current.ratchet(REKEY_LABEL);
                let tag = k.seal_detached(&nonce, ad, buf)?;
                self.advance(k);
                Ok(tag)
            }
        }
    }

    /// Opens in place; only ratchets forward once a next-epoch record authenticated, so
    /// forged sequence numbers cannot move the key schedule.
    fn open(&mut self, seq: u64, ad: &[u8], buf: &mut [u8]) -> Result<usize, ProtocolError> {
        let nonce = nonce_for(&self.iv, seq);
        // An unauthenticated sequence number past the budget is a forgery, not a reason
        // to tell the peer its session ran out.
        let relation = self.relation(seq).map_err(|e| match e {
            ProtocolError::Exhausted => ProtocolError::BadSeal,
            e => e,
        })?;
        match relation {
            Epoch::Current => self.current.open_in_place(&nonce, ad, buf),
            Epoch::Previous => match &self.previous {
                Some(k) => k.open_in_place(&nonce, ad, buf),
                None => Err(ProtocolError::Replay(seq)),
            },
            Epoch::Next => {
                let k = self.current.ratchet(REKEY_LABEL);
                let n = k.open_in_place(&nonce, ad, buf)?;
                self.advance(k);
                Ok(n)
            }
        }
    }

    /// The key of the stream of `record_type` for `seq` when sealing: ratchets at once
    /// when `seq` lies in the next epoch, as sealing a record does.
    fn stream_key_for_seal(
        &mut self,
        record_type: RecordType,
        seq: u64,
    ) -> Result<AeadKey, ProtocolError> {
        match self.relation(seq)? {
            Epoch::Current => Ok(stream_key(&self.current, record_type, seq)),
            Epoch::Previous => match &self.previous {
                Some(k) => Ok(stream_key(k, record_type, seq)),
                None => Err(ProtocolError::Replay(seq)),
            },
            Epoch::Next => {
                let k = self.current.ratchet(REKEY_LABEL);
                let stream = stream_key(&k, record_type, seq);
                self.advance(k);
                Ok(stream)
            }
        }
    }

    /// The key of the stream of `record_type` for `seq` when opening, and the next
    /// epoch's key when `seq` lies there: the caller commits it with [`Self::advance`]
    /// only once the first chunk authenticated, so a forged `seq` moves nothing.
    fn stream_key_for_open(
        &self,
        record_type: RecordType,
        seq: u64,
    ) -> Result<(AeadKey, Option<AeadKey>), ProtocolError> {
        let relation = self.relation(seq).map_err(|e| match e {
            ProtocolError::Exhausted => ProtocolError::BadSeal,
            e => e,
        })?;
        match relation {
            Epoch::Current => Ok((stream_key(&self.current, record_type, seq), None)),
            Epoch::Previous => match &self.previous {
                Some(k) => Ok((stream_key(k, record_type, seq), None)),
                None => Err(ProtocolError::Replay(seq)),
            },
            Epoch::Next => {
                let k = self.current.ratchet(REKEY_LABEL);
                Ok((stream_key(&k, record_type, seq), Some(k)))
            }
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u64(self.epoch);
        out.extend_from_slice(self.current.raw());
        match &self.previous {
            Some(p) => {
                out.put_u8(1);
                out.extend_from_slice(p.raw());
            }
            None => out.put_u8(0),
        }
        out.extend_from_slice(&self.iv);
    }

    fn read(r: &mut Reader<'_>, suite: Suite) -> Result<Self, ProtocolError> {
        let epoch = r.u64()?;
        // No sequence number below MAX_MESSAGES lies in a later epoch; a larger one is
        // corrupt and would overflow `relation`'s `epoch + 1`.
        if epoch > MAX_EPOCH {
            return Err(ProtocolError::malformed("session export"));
        }
        let current = AeadKey::new(suite, &Zeroizing::new(r.array::<KEY_LEN>()?));
        let previous = match r.u8()? {
            0 => None,
            1 => Some(AeadKey::new(suite, &Zeroizing::new(r.array::<KEY_LEN>()?))),
            _ => return Err(ProtocolError::malformed("session export")),
        };
        let iv = r.array()?;
        Ok(DirectionKeys {
            epoch,
            current,
            previous,
            iv,
        })
    }
}

/// Seals `body` into `type || seq || ciphertext || tag` with one copy of the body.
fn seal_record(
    keys: &mut DirectionKeys,
    record_type: RecordType,
    seq: u64,
    ad: &[u8],
    body: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len() + TAG_LEN);
    RecordHeader { record_type, seq }.write(&mut out);
    out.extend_from_slice(body);
    let tag = keys.seal(seq, ad, &mut out[RECORD_HEADER_LEN..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a record in place; returns where the plaintext now lies inside `record`.
fn open_record_in_place(
    keys: &mut DirectionKeys,
    seq: u64,
    ad: &[u8],
    record: &mut [u8],
) -> Result<core::ops::Range<usize>, ProtocolError> {
    let n = keys.open(seq, ad, &mut record[RECORD_HEADER_LEN..])?;
    Ok(RECORD_HEADER_LEN..RECORD_HEADER_LEN + n)
}

/// Opens a record's ciphertext into a fresh buffer (the input stays untouched).
fn open_record(
    keys: &mut DirectionKeys,
    seq: u64,
    ad: &[u8],
    record: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = record[RECORD_HEADER_LEN..].to_vec();
    match keys.open(seq, ad, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e) => {
            crate::crypto::wipe(buf);
            Err(e)
        }
    }
}

/// The label of a refusal tag (PROTOCOL §14.1).
const REFUSAL_LABEL: &[u8] = b"sessioncert/1 refusal";

/// The key that authenticates the server's refusals of requests that did not run
/// (PROTOCOL §14.1). Both sides hold it for the life of the session.
#[derive(Clone)]
pub(crate) struct RefusalKey(Zeroizing<[u8; KEY_LEN]>);

impl RefusalKey {
    pub(crate) fn new(raw: [u8; KEY_LEN]) -> Self {
        RefusalKey(Zeroizing::new(raw))
    }

    fn tag(&self, id: &SessionId, seq: u64, code: ErrorCode) -> [u8; 32] {
        let name = code.as_str().as_bytes();
        crate::crypto::hmac_sha256(
            self.0.as_ref(),
            &[
                REFUSAL_LABEL,
                id.as_bytes(),
                &seq.to_be_bytes(),
                &[name.len() as u8],
                name,
            ],
        )
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_ref());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(RefusalKey(Zeroizing::new(r.array::<KEY_LEN>()?)))
    }
}

/// Whether a refusal code may carry a tag: only the ends of a session, after which
/// nothing in it ever runs again.
const fn taggable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::SessionExpired | ErrorCode::SessionClosed)
}

/// Longest confirmation a client keeps (PROTOCOL §6.8: a ticket of at most 1024 bytes).
pub(crate) const MAX_CONFIRMATION_LEN: usize = 2 + 1024 + 32;

const EXPORT_MAGIC: &[u8; 4] = b"SCSX";
/// Format 2 adds the `flags` byte after the suite; format 1 (no flags: nothing
/// negotiated) is still read, so sessions saved before streams survive an upgrade.
const EXPORT_FORMAT: u8 = 2;
const EXPORT_FORMAT_1: u8 = 1;
/// Export flag: the session negotiated streamed records (PROTOCOL §6.4, §8.5).
const FLAG_STREAMS: u8 = 0x01;
/// Tombstones have kept format 1: they hold no flags.
const ENDED_FORMAT: u8 = 1;
const ROLE_CLIENT: u8 = 1;
const ROLE_SERVER: u8 = 2;

/// What a client needs to open the response to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseExpectation {
    /// The request's sequence number.
    pub seq: u64,
    /// The request record's tag.
    pub request_tag: [u8; TAG_LEN],
    /// Whether the request was sent in full-request mode.
    pub full: bool,
}

/// The start of a streamed request: its first bytes and what follows from them.
#[derive(Debug)]
pub struct RequestStreamStart {
    /// The stream header and the first chunk, to send first.
    pub bytes: Vec<u8>,
    /// What opens the response (bound to the first chunk's tag).
    pub expectation: ResponseExpectation,
    /// Seals the chunks that follow; `None` when the first chunk was the last.
    pub sealer: Option<StreamSealer>,
}

/// A streamed request the server opened: its first chunk, the opener of the rest and
/// the sealer of its response.
#[derive(Debug)]
pub struct OpenedRequestStream {
    /// The first chunk, opened inside the buffer that held it.
    pub first: OpenedChunk,
    /// Opens the following chunks (already finished when the first chunk was the last).
    pub opener: StreamOpener,
    /// The single-use sealer of the response.
    pub sealer: ResponseSealer,
}

/// The client side of a session.
///
/// Right after the handshake the server has not yet accepted the client's key
/// confirmation: until a response of the session opens, [`ClientSession::confirmation`]
/// returns the bytes to send with every request (PROTOCOL §6.8).
pub struct ClientSession {
    id: SessionId,
    version: u16,
    suite: Suite,
    c2s: DirectionKeys,
    s2c: DirectionKeys,
    refusal: RefusalKey,
    /// Whether the handshake negotiated streamed records (PROTOCOL §6.4).
    streams: bool,
    next_seq: u64,
    /// The confirmation to send until the server is known to hold the session.
    confirmation: Option<Zeroizing<Vec<u8>>>,
}

impl core::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.id)
            .field("suite", &self.suite)
            .field("next_seq", &self.next_seq)
            .field("confirmed", &self.confirmation.is_none())
            .finish_non_exhaustive()
    }
}

/// The keys a handshake gives both sides.
pub(crate) struct SessionKeys {
    pub(crate) c2s: DirectionKeys,
    pub(crate) s2c: DirectionKeys,
    pub(crate) refusal: RefusalKey,
}

impl ClientSession {
    pub(crate) fn new(
        id: SessionId,
        version: u16,
        suite: Suite,
        keys: SessionKeys,
        streams: bool,
        confirmation: Option<Zeroizing<Vec<u8>>>,
    ) -> Self {
        let SessionKeys { c2s, s2c, refusal } = keys;
        ClientSession {
            id,
            version,
            suite,
            c2s,
            s2c,
            refusal,
            streams,
            next_seq: 0,
            confirmation,
        }
    }

    /// Whether the handshake negotiated streamed records: only then may requests be
    /// sent as streams, and may responses come as streams.
    pub fn streams(&self) -> bool {
        self.streams
    }

    /// The key confirmation to send with requests (`sessioncert-confirm`, base64url) or
    /// to `/.well-known/sessioncert/confirm`, as long as the server is not known to
    /// hold the session; `None` once a response of the session has opened (or
    /// [`ClientSession::mark_confirmed`] was called).
    pub fn confirmation(&self) -> Option<&[u8]> {
        self.confirmation.as_deref().map(|v| v.as_slice())
    }

    /// Records that the server accepted the confirmation (a stand-alone confirm was
    /// answered `204`). Opening any response does this too.
    pub fn mark_confirmed(&mut self) {
        self.confirmation = None;
    }

    /// Checks a `sessioncert-refusal` tag (PROTOCOL §14.1) for the refusal `code` of
    /// the request sealed with `seq`. `true` proves the request did not run and never
    /// will, so it may be sent again in a new session whatever its method.
    pub fn verify_refusal(&self, seq: u64, code: ErrorCode, tag: &[u8]) -> bool {
        taggable(code) && crate::crypto::ct_eq(&self.refusal.tag(&self.id, seq, code), tag)
    }

    /// The session id to send in the `sessioncert-id` header.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The negotiated record suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The sequence number the next request will use.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether the message budget is spent (a new handshake is needed).
    pub fn is_exhausted(&self) -> bool {
        self.next_seq >= MAX_MESSAGES
    }

    /// Seals a request body. The sequence number is consumed even if the request is
    /// never sent, so a nonce is never reused.
    pub fn seal_request(
        &mut self,
        binding: &RequestBinding<'_>,
        body: &[u8],
    ) -> Result<(Vec<u8>, ResponseExpectation), ProtocolError> {
        binding.check()?;
        let seq = self.take_seq()?;
        let record_type = binding.record_type();
        let ad = request_ad(&self.id, seq, record_type, binding);
        let record = seal_record(&mut self.c2s, record_type, seq, &ad, body)?;
        let request_tag = record_tag(&record).ok_or(ProtocolError::Crypto("tag"))?;
        Ok((
            record,
            ResponseExpectation {
                seq,
                request_tag,
                full: matches!(binding, RequestBinding::Full),
            },
        ))
    }

    fn take_seq(&mut self) -> Result<u64, ProtocolError> {
        let seq = self.next_seq;
        if seq >= MAX_MESSAGES {
            return Err(ProtocolError::Exhausted);
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Starts a streamed request (PROTOCOL §8.5) and seals its first chunk, `first`
    /// (at most [`MAX_CHUNK_LEN`](crate::stream::MAX_CHUNK_LEN) bytes; empty only when
    /// `last`): the response is bound to that chunk's tag, so it is sealed now. The
    /// sequence number is consumed even if the stream is never sent. Refused
    /// (`malformed`, nothing consumed) when the session did not negotiate streams.
    pub fn seal_request_stream(
        &mut self,
        binding: &RequestBinding<'_>,
        first: &[u8],
        last: bool,
    ) -> Result<RequestStreamStart, ProtocolError> {
        binding.check()?;
        if !self.streams {
            return Err(ProtocolError::malformed("stream not negotiated"));
        }
        if first.len() > crate::stream::MAX_CHUNK_LEN || (first.is_empty() && !last) {
            return Err(ProtocolError::malformed("stream chunk"));
        }
        let seq = self.take_seq()?;
        let record_type = binding.stream_type();
        let key = self.c2s.stream_key_for_seal(record_type, seq)?;
        let mut sealer = StreamSealer::new(key, request_ad(&self.id, seq, record_type, binding));
        let mut bytes = Vec::with_capacity(RECORD_HEADER_LEN + 4 + first.len() + TAG_LEN);
        RecordHeader { record_type, seq }.write(&mut bytes);
        let request_tag = sealer.seal_one(first, last, &mut bytes)?;
        Ok(RequestStreamStart {
            bytes,
            expectation: ResponseExpectation {
                seq,
                request_tag,
                full: matches!(binding, RequestBinding::Full),
            },
            sealer: (!last).then_some(sealer),
        })
    }

    /// Opens the start of a streamed response to the request described by `expect`:
    /// `header` is the body's first [`RECORD_HEADER_LEN`] bytes, `first` its first
    /// chunk (opened in place). The returned opener opens the rest; call its
    /// [`finish`](StreamOpener::finish) when the body ends.
    pub fn open_response_stream(
        &mut self,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        header: &[u8],
        first: &mut [u8],
    ) -> Result<(OpenedChunk, StreamOpener), ProtocolError> {
        let h = RecordHeader::parse_prefix(header)?;
        if header.len() != RECORD_HEADER_LEN {
            return Err(ProtocolError::malformed("sealed record"));
        }
        if !self.streams {
            return Err(ProtocolError::malformed("stream not negotiated"));
        }
        let want = if expect.full {
            RecordType::FullResponseStream
        } else {
            RecordType::ResponseStream
        };
        if h.record_type != want || binding.stream_type() != want || h.seq != expect.seq {
            return Err(ProtocolError::BadSeal);
        }
        check_chunk_frame(first)?;
        let (key, next_epoch) = self.s2c.stream_key_for_open(want, h.seq)?;
        let ad = response_ad(&self.id, h.seq, &expect.request_tag, want, binding);
        let mut opener = StreamOpener::new(key, ad);
        let chunk = opener.open_chunk(first)?;
        if let Some(k) = next_epoch {
            self.s2c.advance(k);
        }
        self.confirmation = None;
        Ok((chunk, opener))
    }

    /// Opens the response to the request described by `expect`.
    pub fn open_response(
        &mut self,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        record: &[u8],
    ) -> Result<Vec<u8>, ProtocolError> {
        let h = self.check_response_header(expect, binding, record)?;
        let ad = response_ad(&self.id, h.seq, &expect.request_tag, h.record_type, binding);
        let plaintext = open_record(&mut self.s2c, h.seq, &ad, record)?;
        // Only a server holding the session can seal a response in it.
        self.confirmation = None;
        Ok(plaintext)
    }

    /// As [`ClientSession::open_response`], decrypting inside `record` instead of
    /// copying: returns the range of `record` that holds the plaintext. On failure the
    /// buffer's content is unspecified and must be discarded.
    pub fn open_response_in_place(
        &mut self,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        record: &mut [u8],
    ) -> Result<core::ops::Range<usize>, ProtocolError> {
        let h = self.check_response_header(expect, binding, record)?;
        let ad = response_ad(&self.id, h.seq, &expect.request_tag, h.record_type, binding);
        let range = open_record_in_place(&mut self.s2c, h.seq, &ad, record)?;
        self.confirmation = None;
        Ok(range)
    }

    fn check_response_header(
        &self,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        record: &[u8],
    ) -> Result<RecordHeader, ProtocolError> {
        let h = RecordHeader::parse(record)?;
        let want = if expect.full {
            RecordType::FullResponse
        } else {
            RecordType::Response
        };
        if h.record_type != want || binding.record_type() != want || h.seq != expect.seq {
            return Err(ProtocolError::BadSeal);
        }
        Ok(h)
    }

    /// Serializes the session's secrets (to save a session to a file). Keep it secret.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(200));
        out.extend_from_slice(EXPORT_MAGIC);
        out.put_u8(EXPORT_FORMAT);
        out.put_u8(ROLE_CLIENT);
        out.put_u16(self.version);
        out.put_u16(self.suite.id());
        out.put_u8(flags(self.streams));
        out.extend_from_slice(self.id.as_bytes());
        self.c2s.encode_into(&mut out);
        self.s2c.encode_into(&mut out);
        self.refusal.encode_into(&mut out);
        out.put_u64(self.next_seq);
        out.put_bytes16(self.confirmation().unwrap_or_default());
        out
    }

    /// Restores a session from [`ClientSession::export`].
    pub fn import(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "session export");
        let (version, suite, streams, id) = read_export_head(&mut r, ROLE_CLIENT)?;
        let c2s = DirectionKeys::read(&mut r, suite)?;
        let s2c = DirectionKeys::read(&mut r, suite)?;
        let refusal = RefusalKey::read(&mut r)?;
        let next_seq = r.u64()?;
        let confirmation = r.bytes16()?;
        r.finish()?;
        if confirmation.len() > MAX_CONFIRMATION_LEN {
            return Err(ProtocolError::malformed("session export"));
        }
        Ok(ClientSession {
            id,
            version,
            suite,
            c2s,
            s2c,
            refusal,
            streams,
            next_seq,
            confirmation: (!confirmation.is_empty()).then(|| Zeroizing::new(confirmation.to_vec())),
        })
    }
}

/// `malformed` unless `frame` is exactly one chunk with a valid header (PROTOCOL §8.5:
/// checked before the replay window, like a record's header).
fn check_chunk_frame(frame: &[u8]) -> Result<(), ProtocolError> {
    match crate::stream::complete_chunk(frame)? {
        Some(n) if n == frame.len() => Ok(()),
        _ => Err(ProtocolError::malformed("stream chunk")),
    }
}

fn flags(streams: bool) -> u8 {
    if streams {
        FLAG_STREAMS
    } else {
        0
    }
}

/// Reads magic, format, role, version, suite, flags (format 2) and id; returns whether
/// the session negotiated streams.
fn read_export_head(
    r: &mut Reader<'_>,
    role: u8,
) -> Result<(u16, Suite, bool, SessionId), ProtocolError> {
    let bad = || ProtocolError::malformed("session export");
    if r.take(4)? != EXPORT_MAGIC {
        return Err(bad());
    }
    let format = r.u8()?;
    if !(format == EXPORT_FORMAT || format == EXPORT_FORMAT_1) || r.u8()? != role {
        return Err(bad());
    }
    let version = r.u16()?;
    let suite = Suite::from_id(r.u16()?).ok_or_else(bad)?;
    let flags = if format == EXPORT_FORMAT { r.u8()? } else { 0 };
    if flags & !FLAG_STREAMS != 0 {
        return Err(bad());
    }
    let id = SessionId(r.array()?);
    Ok((version, suite, flags & FLAG_STREAMS != 0, id))
}

/// The single-use right to seal the response to one opened request.
///
/// Only opening a request makes one (its sequence number is then marked in the replay
/// window, so no second one exists for that number), it cannot be cloned, and
/// [`ServerSession::seal_response`] consumes it: a response nonce can be used only once.
/// A sealer of another session is refused.
///
/// Sealing once compiles:
/// ```
/// # use sessioncert_proto::{OpenedRequest, ResponseBinding, ServerSession};
/// fn answer(s: &mut ServerSession, o: OpenedRequest) {
///     let _ = s.seal_response(o.sealer, &ResponseBinding::Full, b"a");
/// }
/// ```
/// sealing twice does not:
/// ```compile_fail,E0382
/// # use sessioncert_proto::{OpenedRequest, ResponseBinding, ServerSession};
/// fn answer(s: &mut ServerSession, o: OpenedRequest) {
///     let _ = s.seal_response(o.sealer, &ResponseBinding::Full, b"a");
///     let _ = s.seal_response(o.sealer, &ResponseBinding::Full, b"b");
/// }
/// ```
#[must_use = "the request's response must be sealed with this"]
pub struct ResponseSealer {
    session: SessionId,
    seq: u64,
    request_tag: [u8; TAG_LEN],
    full: bool,
}

impl core::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseSealer")
            .field("seq", &self.seq)
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl ResponseSealer {
    /// The request's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the request came in full-request mode (its response must too).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// What the client holds to open this response (for tests and logs; it cannot seal).
    pub fn expectation(&self) -> ResponseExpectation {
        ResponseExpectation {
            seq: self.seq,
            request_tag: self.request_tag,
            full: self.full,
        }
    }
}

/// A response that could not be sealed, with the sealer handed back so the server can
/// still seal an error response instead.
#[derive(Debug)]
pub struct SealFailed {
    /// The unused sealer.
    pub sealer: ResponseSealer,
    /// Why sealing failed.
    pub error: ProtocolError,
}

/// A request the server opened: its plaintext and the sealer for its response.
pub struct OpenedRequest {
    /// The decrypted body (header mode) or Binary HTTP message (full mode).
    pub plaintext: Vec<u8>,
    /// The single-use sealer of the response.
    pub sealer: ResponseSealer,
}

impl core::fmt::Debug for OpenedRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The plaintext may be sensitive: show only its length.
        f.debug_struct("OpenedRequest")
            .field("sealer", &self.sealer)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// A request opened in place: where its plaintext lies and the sealer for its response.
#[derive(Debug)]
pub struct OpenedInPlace {
    /// The plaintext's range inside the record buffer.
    pub plaintext: core::ops::Range<usize>,
    /// The single-use sealer of the response.
    pub sealer: ResponseSealer,
}

/// The server side of an established session.
pub struct ServerSession {
    id: SessionId,
    version: u16,
    suite: Suite,
    c2s: DirectionKeys,
    s2c: DirectionKeys,
    refusal: RefusalKey,
    /// Whether the handshake negotiated streamed records (PROTOCOL §6.4).
    streams: bool,
    window: ReplayWindow,
}

impl core::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerSession")
            .field("id", &self.id)
            .field("suite", &self.suite)
            .field("highest_seq", &self.window.highest())
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    pub(crate) fn new(
        id: SessionId,
        version: u16,
        suite: Suite,
        keys: SessionKeys,
        streams: bool,
    ) -> Self {
        let SessionKeys { c2s, s2c, refusal } = keys;
        ServerSession {
            id,
            version,
            suite,
            c2s,
            s2c,
            refusal,
            streams,
            window: ReplayWindow::new(),
        }
    }

    /// Whether the handshake negotiated streamed records: only then may the client
    /// send streamed requests, and may responses be sealed as streams.
    pub fn streams(&self) -> bool {
        self.streams
    }

    /// Ends the session: the traffic keys are dropped; what remains can only refuse
    /// requests, with a tag where PROTOCOL §14.1 allows one.
    pub fn end(self) -> EndedSession {
        EndedSession {
            id: self.id,
            refusal: self.refusal,
            window: self.window,
        }
    }

    /// The refusal tag for a request of this (still live) session that is refused
    /// because the session just ended; see [`EndedSession::refusal_tag`].
    pub fn refusal_tag(&self, record: &[u8], code: ErrorCode) -> Option<[u8; 32]> {
        refusal_tag(&self.id, &self.refusal, Some(&self.window), record, code)
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The negotiated record suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The highest request sequence number accepted so far.
    pub fn highest_seq(&self) -> Option<u64> {
        self.window.highest()
    }

    /// Authenticates and decrypts a request record, and records its sequence number in
    /// the replay window. A replayed, reordered-too-far, tampered or re-bound record is
    /// refused, and the session state is unchanged by a refusal.
    pub fn open_request(
        &mut self,
        binding: &RequestBinding<'_>,
        record: &[u8],
    ) -> Result<OpenedRequest, ProtocolError> {
        let mut buf = record.to_vec();
        match self.open_request_in_place(binding, &mut buf) {
            Ok(opened) => {
                buf.truncate(opened.plaintext.end);
                buf.drain(..opened.plaintext.start);
                Ok(OpenedRequest {
                    plaintext: buf,
                    sealer: opened.sealer,
                })
            }
            Err(e) => {
                crate::crypto::wipe(buf);
                Err(e)
            }
        }
    }

    /// As [`ServerSession::open_request`], decrypting inside `record` instead of
    /// copying; the returned `plaintext` range says where the plaintext now lies. On
    /// failure the buffer's content is unspecified and must be discarded.
    pub fn open_request_in_place(
        &mut self,
        binding: &RequestBinding<'_>,
        record: &mut [u8],
    ) -> Result<OpenedInPlace, ProtocolError> {
        binding.check()?;
        let h = RecordHeader::parse(record)?;
        if h.record_type != binding.record_type() {
            return Err(ProtocolError::BadSeal);
        }
        self.window.check(h.seq)?;
        let request_tag = record_tag(record).ok_or(ProtocolError::BadSeal)?;
        let ad = request_ad(&self.id, h.seq, h.record_type, binding);
        let plaintext = open_record_in_place(&mut self.c2s, h.seq, &ad, record)?;
        self.window.mark(h.seq)?;
        Ok(OpenedInPlace {
            plaintext,
            sealer: ResponseSealer {
                session: self.id,
                seq: h.seq,
                request_tag,
                full: matches!(binding, RequestBinding::Full),
            },
        })
    }

    /// Opens the start of a streamed request (PROTOCOL §8.5): `header` is the body's
    /// first [`RECORD_HEADER_LEN`] bytes and `first` its first chunk, opened in place.
    /// As for a single record, the replay window is checked first and the sequence
    /// number marked only once the first chunk authenticated; a refusal changes nothing.
    /// The rest of the body is opened with the returned opener, outside this session.
    pub fn open_request_stream(
        &mut self,
        binding: &RequestBinding<'_>,
        header: &[u8],
        first: &mut [u8],
    ) -> Result<OpenedRequestStream, ProtocolError> {
        binding.check()?;
        let h = RecordHeader::parse_prefix(header)?;
        if header.len() != RECORD_HEADER_LEN {
            return Err(ProtocolError::malformed("sealed record"));
        }
        if !self.streams {
            return Err(ProtocolError::malformed("stream not negotiated"));
        }
        if h.record_type != binding.stream_type() {
            return Err(ProtocolError::BadSeal);
        }
        check_chunk_frame(first)?;
        let first_tag = record_tag(first).ok_or(ProtocolError::malformed("stream chunk"))?;
        self.window.check(h.seq)?;
        let (key, next_epoch) = self.c2s.stream_key_for_open(h.record_type, h.seq)?;
        let mut opener =
            StreamOpener::new(key, request_ad(&self.id, h.seq, h.record_type, binding));
        let chunk = opener.open_chunk(first)?;
        if let Some(k) = next_epoch {
            self.c2s.advance(k);
        }
        self.window.mark(h.seq)?;
        Ok(OpenedRequestStream {
            first: chunk,
            opener,
            sealer: ResponseSealer {
                session: self.id,
                seq: h.seq,
                request_tag: first_tag,
                full: matches!(binding, RequestBinding::Full),
            },
        })
    }

    /// Starts the streamed response to an opened request, consuming its sealer: returns
    /// the stream header to send first and the sealer of its chunks. Refused when the
    /// session did not negotiate streams (the response must then be one record), with
    /// the sealer handed back.
    pub fn seal_response_stream(
        &mut self,
        sealer: ResponseSealer,
        binding: &ResponseBinding<'_>,
    ) -> Result<(Vec<u8>, StreamSealer), SealFailed> {
        let refuse = |sealer, error| Err(SealFailed { sealer, error });
        if let Err(error) = self.check_sealer(&sealer, binding) {
            return refuse(sealer, error);
        }
        if !self.streams {
            return refuse(sealer, ProtocolError::Crypto("stream not negotiated"));
        }
        let record_type = binding.stream_type();
        let key = match self.s2c.stream_key_for_seal(record_type, sealer.seq) {
            Ok(k) => k,
            Err(error) => return refuse(sealer, error),
        };
        let ad = response_ad(
            &self.id,
            sealer.seq,
            &sealer.request_tag,
            record_type,
            binding,
        );
        let mut header = Vec::with_capacity(RECORD_HEADER_LEN);
        RecordHeader {
            record_type,
            seq: sealer.seq,
        }
        .write(&mut header);
        Ok((header, StreamSealer::new(key, ad)))
    }

    fn check_sealer(
        &self,
        sealer: &ResponseSealer,
        binding: &ResponseBinding<'_>,
    ) -> Result<(), ProtocolError> {
        if sealer.session != self.id {
            return Err(ProtocolError::Crypto("sealer of another session"));
        }
        if matches!(binding, ResponseBinding::Full) != sealer.full {
            return Err(ProtocolError::Crypto(
                "response mode differs from request mode",
            ));
        }
        Ok(())
    }

    /// Seals the response to an opened request, consuming its sealer (so no nonce is
    /// used twice). On failure nothing was sealed and the sealer comes back.
    pub fn seal_response(
        &mut self,
        sealer: ResponseSealer,
        binding: &ResponseBinding<'_>,
        body: &[u8],
    ) -> Result<Vec<u8>, SealFailed> {
        let refuse = |sealer, error| Err(SealFailed { sealer, error });
        if let Err(error) = self.check_sealer(&sealer, binding) {
            return refuse(sealer, error);
        }
        let record_type = binding.record_type();
        let ad = response_ad(
            &self.id,
            sealer.seq,
            &sealer.request_tag,
            record_type,
            binding,
        );
        match seal_record(&mut self.s2c, record_type, sealer.seq, &ad, body) {
            Ok(record) => Ok(record),
            Err(error) => refuse(sealer, error),
        }
    }

    /// Seals a response for any expectation, opened or not: the negative vectors need
    /// responses bound to requests that were never opened. Reuses nonces at will, so it
    /// exists only with the `insecure-vectors` feature.
    #[cfg(feature = "insecure-vectors")]
    #[doc(hidden)]
    pub fn seal_response_for_vectors(
        &mut self,
        expect: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        body: &[u8],
    ) -> Result<Vec<u8>, ProtocolError> {
        let ad = response_ad(
            &self.id,
            expect.seq,
            &expect.request_tag,
            binding.record_type(),
            binding,
        );
        seal_record(&mut self.s2c, binding.record_type(), expect.seq, &ad, body)
    }

    /// Serializes the session's secrets and replay window for sealed storage.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(400));
        out.extend_from_slice(EXPORT_MAGIC);
        out.put_u8(EXPORT_FORMAT);
        out.put_u8(ROLE_SERVER);
        out.put_u16(self.version);
        out.put_u16(self.suite.id());
        out.put_u8(flags(self.streams));
        out.extend_from_slice(self.id.as_bytes());
        self.c2s.encode_into(&mut out);
        self.s2c.encode_into(&mut out);
        self.refusal.encode_into(&mut out);
        self.window.encode_into(&mut out);
        out
    }

    /// Restores a session from [`ServerSession::export`].
    pub fn import(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "session export");
        let s = Self::read(&mut r)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let (version, suite, streams, id) = read_export_head(r, ROLE_SERVER)?;
        let c2s = DirectionKeys::read(r, suite)?;
        let s2c = DirectionKeys::read(r, suite)?;
        let refusal = RefusalKey::read(r)?;
        let window = ReplayWindow::read(r)?;
        Ok(ServerSession {
            id,
            version,
            suite,
            c2s,
            s2c,
            refusal,
            streams,
            window,
        })
    }
}

/// What the server keeps of an ended session (a tombstone): its id, its refusal key
/// and its final replay window — no traffic key. Nothing ever runs in it again.
pub struct EndedSession {
    id: SessionId,
    refusal: RefusalKey,
    window: ReplayWindow,
}

impl core::fmt::Debug for EndedSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EndedSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EndedSession {
    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The `sessioncert-refusal` tag for refusing `record` with `code` (PROTOCOL §14.1):
    /// `Some` only for `session_expired`/`session_closed` and a record whose header
    /// parses and whose `seq` this session never accepted (above the window, or inside
    /// it and unmarked). A `seq` below the window may have run long ago: no tag.
    pub fn refusal_tag(&self, record: &[u8], code: ErrorCode) -> Option<[u8; 32]> {
        refusal_tag(&self.id, &self.refusal, Some(&self.window), record, code)
    }

    /// The tag for refusing `record` with `code` when the replay authority is not this
    /// copy but a store shared by several server instances, which checks and marks every
    /// `seq` atomically and has answered that this record's `seq` was never accepted and
    /// now never will be (the session ended first). This copy's window may lag behind
    /// that store, so it is not consulted. Only `session_expired`/`session_closed` and a
    /// request record whose header parses get a tag.
    pub fn refusal_tag_unrun(&self, record: &[u8], code: ErrorCode) -> Option<[u8; 32]> {
        refusal_tag(&self.id, &self.refusal, None, record, code)
    }

    /// Serializes what is left of the session (its id, refusal key and final replay
    /// window; no traffic key) for sealed storage, so a restarted server still refuses
    /// its requests with a tag. The window must be the final one: export only after the
    /// session ended, never from a copy that could lag behind requests it accepted.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(200));
        out.extend_from_slice(ENDED_MAGIC);
        out.put_u8(ENDED_FORMAT);
        out.extend_from_slice(self.id.as_bytes());
        self.refusal.encode_into(&mut out);
        self.window.encode_into(&mut out);
        out
    }

    /// Parses [`EndedSession::export`].
    pub fn import(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "ended session export");
        if r.array::<4>()? != *ENDED_MAGIC || r.u8()? != ENDED_FORMAT {
            return Err(ProtocolError::malformed("ended session export"));
        }
        let id = SessionId(r.array()?);
        let refusal = RefusalKey::read(&mut r)?;
        let window = ReplayWindow::read(&mut r)?;
        r.finish()?;
        Ok(EndedSession {
            id,
            refusal,
            window,
        })
    }
}

const ENDED_MAGIC: &[u8; 4] = b"SCSE";

fn refusal_tag(
    id: &SessionId,
    key: &RefusalKey,
    window: Option<&ReplayWindow>,
    record: &[u8],
    code: ErrorCode,
) -> Option<[u8; 32]> {
    if !taggable(code) {
        return None;
    }
    let h = RecordHeader::parse(record).ok()?;
    if !h.record_type.is_request() {
        return None;
    }
    if let Some(window) = window {
        window.check(h.seq).ok()?;
    }
    Some(key.tag(id, h.seq, code))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::RequestLine;

    pub(crate) fn pair(suite: Suite) -> (ClientSession, ServerSession) {
        let id = SessionId([5; 16]);
        let k1 = AeadKey::new(suite, &[1; 32]);
        let k2 = AeadKey::new(suite, &[2; 32]);
        let keys = |k1: AeadKey, k2: AeadKey| SessionKeys {
            c2s: DirectionKeys::new(k1, [3; 12]),
            s2c: DirectionKeys::new(k2, [4; 12]),
            refusal: RefusalKey::new([6; 32]),
        };
        let c = ClientSession::new(id, 1, suite, keys(k1.clone(), k2.clone()), true, None);
        let s = ServerSession::new(id, 1, suite, keys(k1, k2), true);
        (c, s)
    }

    fn line() -> RequestBinding<'static> {
        RequestBinding::Header(RequestLine {
            method: "POST",
            target: "https://api.example",
            path: "/apiTest",
            query: "",
            content_type: "application/json",
            covered: &[],
        })
    }

    const OK: ResponseBinding<'static> = ResponseBinding::Header {
        status: 200,
        content_type: "application/json",
    };

    #[test]
    fn request_response_round_trip_across_rekeys() {
        for suite in Suite::ALL {
            let (mut c, mut s) = pair(suite);
            // Fast-forward both sides close to an epoch boundary.
            c.next_seq = REKEY_INTERVAL - 2;
            for i in 0..5u8 {
                let (rec, exp) = c.seal_request(&line(), &[i; 40]).unwrap();
                let opened = s.open_request(&line(), &rec).unwrap();
                assert_eq!(opened.plaintext, vec![i; 40]);
                let resp = s.seal_response(opened.sealer, &OK, b"{}").unwrap();
                assert_eq!(c.open_response(&exp, &OK, &resp).unwrap(), b"{}");
            }
            assert_eq!(c.c2s.epoch, 1);
            assert_eq!(s.c2s.epoch, 1);
        }
    }

    #[test]
    fn previous_epoch_request_still_opens_after_rekey() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        c.next_seq = REKEY_INTERVAL - 1;
        let (old, _) = c.seal_request(&line(), b"old").unwrap();
        let (new, _) = c.seal_request(&line(), b"new").unwrap();
        assert_eq!(s.open_request(&line(), &new).unwrap().plaintext, b"new");
        assert_eq!(s.open_request(&line(), &old).unwrap().plaintext, b"old");
    }

    #[test]
    fn forged_far_future_seq_does_not_move_the_key_schedule() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (mut rec, _) = c.seal_request(&line(), b"x").unwrap();
        rec[1..9].copy_from_slice(&(REKEY_INTERVAL + 3).to_be_bytes());
        assert!(s.open_request(&line(), &rec).is_err());
        assert_eq!(s.c2s.epoch, 0);
        let (rec2, _) = c.seal_request(&line(), b"y").unwrap();
        assert!(s.open_request(&line(), &rec2).is_ok());
    }

    #[test]
    fn forged_seq_past_the_budget_is_a_bad_seal_not_an_expiry() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (mut rec, _) = c.seal_request(&line(), b"x").unwrap();
        rec[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        let e = s.open_request(&line(), &rec).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Rejected, "{e:?}");
    }

    #[test]
    fn exports_round_trip() {
        let (mut c, mut s) = pair(Suite::ChaCha20Poly1305);
        let (rec, _) = c.seal_request(&line(), b"a").unwrap();
        s.open_request(&line(), &rec).unwrap();
        let mut c2 = ClientSession::import(&c.export()).unwrap();
        let mut s2 = ServerSession::import(&s.export()).unwrap();
        assert!(
            s2.open_request(&line(), &rec).is_err(),
            "window survived export"
        );
        let (rec, exp) = c2.seal_request(&line(), b"b").unwrap();
        let o = s2.open_request(&line(), &rec).unwrap();
        let resp = s2.seal_response(o.sealer, &OK, b"r").unwrap();
        assert_eq!(c2.open_response(&exp, &OK, &resp).unwrap(), b"r");
        assert!(ClientSession::import(&s.export()).is_err(), "role checked");
        let e = c.export();
        assert!(ClientSession::import(&e[..e.len() - 1]).is_err());
    }

    /// Found by `fuzz/` (`session_export`): an export whose epoch is `u64::MAX` imported,
    /// and the next seal or open overflowed `epoch + 1` (a panic in debug builds, a
    /// wrapped epoch in release).
    #[test]
    fn import_refuses_an_epoch_past_the_message_budget() {
        let (c, s) = pair(Suite::Aes256Gcm);
        // Epoch fields: c2s right after the 29-byte head, s2c after c2s's 8 + 32 + 1 + 12.
        let c2s_epoch = 4 + 1 + 1 + 2 + 2 + 1 + 16;
        let s2c_epoch = c2s_epoch + 8 + KEY_LEN + 1 + NONCE_LEN;
        for at in [c2s_epoch, s2c_epoch] {
            for (epoch, ok) in [(MAX_EPOCH, true), (MAX_EPOCH + 1, false), (u64::MAX, false)] {
                let mut e = s.export();
                e[at..at + 8].copy_from_slice(&epoch.to_be_bytes());
                let imported = ServerSession::import(&e);
                assert_eq!(imported.is_ok(), ok, "server, epoch {epoch} at {at}");
                if let Ok(mut s2) = imported {
                    // Usable without panicking: old-epoch records are refused.
                    let (mut c2, _) = pair(Suite::Aes256Gcm);
                    let (rec, _) = c2.seal_request(&line(), b"x").unwrap();
                    if let Ok(o) = s2.open_request(&line(), &rec) {
                        let _ = s2.seal_response(o.sealer, &OK, b"y");
                    }
                }
                let mut e = c.export();
                e[at..at + 8].copy_from_slice(&epoch.to_be_bytes());
                assert_eq!(
                    ClientSession::import(&e).is_ok(),
                    ok,
                    "client, epoch {epoch} at {at}"
                );
            }
        }
    }

    #[test]
    fn in_place_and_copying_opens_agree() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (rec, exp) = c.seal_request(&line(), b"hello in place").unwrap();
        let mut buf = rec.clone();
        let o = s.open_request_in_place(&line(), &mut buf).unwrap();
        assert_eq!(&buf[o.plaintext.clone()], b"hello in place");
        assert!(
            s.open_request(&line(), &rec).is_err(),
            "in-place open marked the window"
        );
        let resp = s.seal_response(o.sealer, &OK, b"answer").unwrap();
        let mut rbuf = resp.clone();
        let r = c.open_response_in_place(&exp, &OK, &mut rbuf).unwrap();
        assert_eq!(&rbuf[r], b"answer");
        let mut bad = resp.clone();
        bad[12] ^= 1;
        assert!(c.open_response_in_place(&exp, &OK, &mut bad).is_err());
    }

    #[test]
    fn exhausted_session_refuses_to_seal() {
        let (mut c, _) = pair(Suite::Aes256Gcm);
        c.next_seq = MAX_MESSAGES;
        assert!(c.is_exhausted());
        assert!(matches!(
            c.seal_request(&line(), b"x"),
            Err(ProtocolError::Exhausted)
        ));
    }

    #[test]
    fn refusal_tags_prove_only_that_a_never_accepted_request_will_never_run() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let mut records = Vec::new();
        for _ in 0..3 {
            records.push(c.seal_request(&line(), b"x").unwrap().0);
        }
        // seq 0 and 2 run; seq 1 is delayed.
        s.open_request(&line(), &records[0]).unwrap();
        s.open_request(&line(), &records[2]).unwrap();
        let ended = s.end();
        let closed = ErrorCode::SessionClosed;
        // Accepted requests never get a tag: they ran.
        for seq in [0usize, 2] {
            assert!(
                ended.refusal_tag(&records[seq], closed).is_none(),
                "seq {seq}"
            );
        }
        // Seq 1 never ran and never will: tagged, and the client can check it.
        let tag = ended.refusal_tag(&records[1], closed).unwrap();
        assert!(c.verify_refusal(1, closed, &tag));
        // Bound to seq, code and session.
        assert!(!c.verify_refusal(0, closed, &tag));
        assert!(!c.verify_refusal(1, ErrorCode::SessionExpired, &tag));
        assert!(!c.verify_refusal(1, closed, &tag[..31]));
        let (other, _) = {
            let (mut c2, s2) = pair(Suite::Aes256Gcm);
            c2.id = SessionId([6; 16]);
            (c2, s2)
        };
        assert!(!other.verify_refusal(1, closed, &tag));
        // Codes that do not end the session never carry a tag, on either side.
        assert!(ended
            .refusal_tag(&records[1], ErrorCode::Rejected)
            .is_none());
        assert!(!c.verify_refusal(1, ErrorCode::Rejected, &tag));
        // A future seq is tagged too; an unparseable record or a response record is not.
        let (future, _) = c.seal_request(&line(), b"y").unwrap();
        assert!(ended
            .refusal_tag(&future, ErrorCode::SessionExpired)
            .is_some());
        assert!(ended.refusal_tag(&future[..5], closed).is_none());
        let mut response_typed = future.clone();
        response_typed[0] = 0x81;
        assert!(ended.refusal_tag(&response_typed, closed).is_none());
    }

    #[test]
    fn a_seq_below_the_window_gets_no_refusal_tag() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (old, _) = c.seal_request(&line(), b"old").unwrap();
        for _ in 0..1100 {
            let (r, _) = c.seal_request(&line(), b"x").unwrap();
            s.open_request(&line(), &r).unwrap();
        }
        // seq 0 never opened, but it is too old for the window to know: no proof.
        let ended = s.end();
        assert!(ended.refusal_tag(&old, ErrorCode::SessionClosed).is_none());
    }

    #[test]
    fn client_export_keeps_the_refusal_key_and_a_pending_confirmation() {
        let (mut c, mut s) = pair(Suite::ChaCha20Poly1305);
        c.confirmation = Some(Zeroizing::new(vec![0, 1, 7, 1, 2, 3]));
        let c2 = ClientSession::import(&c.export()).unwrap();
        assert_eq!(c2.confirmation(), Some(&[0u8, 1, 7, 1, 2, 3][..]));
        let (rec, exp) = c.seal_request(&line(), b"q").unwrap();
        let opened = s.open_request(&line(), &rec).unwrap();
        let resp = s.seal_response(opened.sealer, &OK, b"a").unwrap();
        c.open_response(&exp, &OK, &resp).unwrap();
        assert_eq!(
            c.confirmation(),
            None,
            "a response proves the server holds it"
        );
        let c3 = ClientSession::import(&c.export()).unwrap();
        assert_eq!(c3.confirmation(), None);
        let ended = s.end();
        let (late, _) = c.seal_request(&line(), b"z").unwrap();
        let tag = ended.refusal_tag(&late, ErrorCode::SessionClosed).unwrap();
        assert!(c3.verify_refusal(1, ErrorCode::SessionClosed, &tag));
    }

    #[test]
    fn a_sealer_is_refused_by_another_session_or_mode_and_handed_back() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (rec, exp) = c.seal_request(&line(), b"q").unwrap();
        let opened = s.open_request(&line(), &rec).unwrap();
        assert_eq!(opened.sealer.expectation(), exp);
        // Another session with the same keys but another id must not seal it.
        let (_, mut other) = pair(Suite::Aes256Gcm);
        other.id = SessionId([0xEE; 16]);
        let failed = other.seal_response(opened.sealer, &OK, b"a").unwrap_err();
        assert!(matches!(failed.error, ProtocolError::Crypto(m) if m.contains("another session")));
        // A full-mode response to a header-mode request: refused, sealer returned.
        let failed = s
            .seal_response(failed.sealer, &ResponseBinding::Full, b"a")
            .unwrap_err();
        assert!(matches!(failed.error, ProtocolError::Crypto(m) if m.contains("mode")));
        // The returned sealer still seals exactly the response the client expects.
        let resp = s.seal_response(failed.sealer, &OK, b"a").unwrap();
        assert_eq!(c.open_response(&exp, &OK, &resp).unwrap(), b"a");
    }

    #[test]
    fn a_replayed_request_yields_no_second_sealer() {
        let (mut c, mut s) = pair(Suite::ChaCha20Poly1305);
        let (rec, _) = c.seal_request(&line(), b"q").unwrap();
        let opened = s.open_request(&line(), &rec).unwrap();
        assert!(matches!(
            s.open_request(&line(), &rec),
            Err(ProtocolError::Replay(0))
        ));
        assert!(s.seal_response(opened.sealer, &OK, b"a").is_ok());
    }

    #[test]
    fn an_ended_session_exports_and_imports_its_refusals_exactly() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let mut records = Vec::new();
        for _ in 0..5 {
            records.push(c.seal_request(&line(), b"x").unwrap().0);
        }
        // Requests 0, 1 and 3 ran; 2 and 4 did not.
        for i in [0, 1, 3] {
            s.open_request(&line(), &records[i]).unwrap();
        }
        let ended = s.end();
        let back = EndedSession::import(&ended.export()).unwrap();
        assert_eq!(back.id(), ended.id());
        for (i, r) in records.iter().enumerate() {
            for code in [ErrorCode::SessionClosed, ErrorCode::SessionExpired] {
                assert_eq!(back.refusal_tag(r, code), ended.refusal_tag(r, code), "{i}");
            }
            assert_eq!(
                back.refusal_tag(r, ErrorCode::SessionClosed).is_some(),
                [2, 4].contains(&i),
                "record {i}"
            );
        }
        let e = ended.export();
        for cut in 0..e.len() {
            assert!(EndedSession::import(&e[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = e.to_vec();
        longer.push(0);
        assert!(EndedSession::import(&longer).is_err());
        assert!(
            EndedSession::import(&s_export_for_test()).is_err(),
            "a live export is not one"
        );
    }

    fn s_export_for_test() -> Vec<u8> {
        pair(Suite::ChaCha20Poly1305).1.export().to_vec()
    }

    /// Sends `chunks` as one streamed request (the first sealed by the session), opens
    /// it on the server and answers with a streamed response of `answer`.
    fn stream_exchange(
        c: &mut ClientSession,
        s: &mut ServerSession,
        chunks: &[&[u8]],
        answer: &[&[u8]],
    ) -> Result<(Vec<u8>, Vec<u8>), ProtocolError> {
        let (wire, exp) = seal_stream(c, chunks);
        let (got, sealer) = open_stream(s, &wire)?;
        let resp = respond_stream(s, sealer, answer);
        let back = open_response_body(c, &exp, &resp)?;
        Ok((got, back))
    }

    fn seal_stream(c: &mut ClientSession, chunks: &[&[u8]]) -> (Vec<u8>, ResponseExpectation) {
        let start = c
            .seal_request_stream(&line(), chunks[0], chunks.len() == 1)
            .unwrap();
        let mut wire = start.bytes;
        if let Some(mut sealer) = start.sealer {
            for (i, ch) in chunks[1..].iter().enumerate() {
                if i + 2 == chunks.len() {
                    sealer.seal_last(ch, &mut wire).unwrap();
                    break;
                }
                sealer.seal_chunk(ch, &mut wire).unwrap();
            }
        }
        (wire, start.expectation)
    }

    fn frames(mut body: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(n) = crate::stream::complete_chunk(body).unwrap() {
            out.push(body[..n].to_vec());
            body = &body[n..];
        }
        assert!(body.is_empty());
        out
    }

    fn open_stream(
        s: &mut ServerSession,
        wire: &[u8],
    ) -> Result<(Vec<u8>, ResponseSealer), ProtocolError> {
        let f = frames(&wire[RECORD_HEADER_LEN..]);
        let mut first = f[0].clone();
        let o = s.open_request_stream(&line(), &wire[..RECORD_HEADER_LEN], &mut first)?;
        let mut got = first[o.first.plaintext].to_vec();
        let mut opener = o.opener;
        for frame in &f[1..] {
            let mut frame = frame.clone();
            let c = opener.open_chunk(&mut frame)?;
            got.extend_from_slice(&frame[c.plaintext]);
        }
        opener.finish()?;
        Ok((got, o.sealer))
    }

    fn respond_stream(s: &mut ServerSession, sealer: ResponseSealer, answer: &[&[u8]]) -> Vec<u8> {
        let (mut resp, mut rs) = s.seal_response_stream(sealer, &OK).unwrap();
        for a in &answer[..answer.len() - 1] {
            rs.seal_chunk(a, &mut resp).unwrap();
        }
        rs.seal_last(answer[answer.len() - 1], &mut resp).unwrap();
        resp
    }

    fn open_response_body(
        c: &mut ClientSession,
        exp: &ResponseExpectation,
        resp: &[u8],
    ) -> Result<Vec<u8>, ProtocolError> {
        let f = frames(&resp[RECORD_HEADER_LEN..]);
        let mut first = f[0].clone();
        let (chunk, mut opener) =
            c.open_response_stream(exp, &OK, &resp[..RECORD_HEADER_LEN], &mut first)?;
        let mut back = first[chunk.plaintext].to_vec();
        for frame in &f[1..] {
            let mut frame = frame.clone();
            let ch = opener.open_chunk(&mut frame)?;
            back.extend_from_slice(&frame[ch.plaintext]);
        }
        opener.finish()?;
        Ok(back)
    }

    #[test]
    fn streams_round_trip_both_ways_across_a_rekey() {
        for suite in Suite::ALL {
            let (mut c, mut s) = pair(suite);
            c.next_seq = REKEY_INTERVAL - 2;
            for i in 0..4u8 {
                let (got, back) = stream_exchange(
                    &mut c,
                    &mut s,
                    &[&[i; 10], &[i; 70_000], b"end"],
                    &[b"a", &[i; 3], b""],
                )
                .unwrap();
                assert_eq!(got.len(), 10 + 70_000 + 3);
                assert_eq!(back, [b"a".as_slice(), &[i; 3]].concat());
            }
            assert_eq!(
                (c.c2s.epoch, s.c2s.epoch, s.s2c.epoch, c.s2c.epoch),
                (1, 1, 1, 1)
            );
            // single records still work beside streams, and a one-chunk stream too
            let (rec, exp) = c.seal_request(&line(), b"single").unwrap();
            let o = s.open_request(&line(), &rec).unwrap();
            let resp = respond_stream(&mut s, o.sealer, &[b"streamed answer"]);
            assert_eq!(
                open_response_body(&mut c, &exp, &resp).unwrap(),
                b"streamed answer"
            );
            let (got, back) = stream_exchange(&mut c, &mut s, &[b"only"], &[b""]).unwrap();
            assert_eq!(
                (got.as_slice(), back.as_slice()),
                (b"only".as_slice(), b"".as_slice())
            );
        }
    }

    #[test]
    fn a_replayed_stream_is_refused_and_a_forged_one_moves_nothing() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (wire, _) = seal_stream(&mut c, &[b"pay", b"once"]);
        assert_eq!(open_stream(&mut s, &wire).unwrap().0, b"payonce");
        assert!(matches!(
            open_stream(&mut s, &wire).unwrap_err(),
            ProtocolError::Replay(0)
        ));
        // a stream header naming the next epoch, with a chunk that does not open
        let (mut wire, _) = seal_stream(&mut c, &[b"x", b"y"]);
        wire[1..9].copy_from_slice(&(REKEY_INTERVAL + 1).to_be_bytes());
        assert!(open_stream(&mut s, &wire).is_err());
        assert_eq!((s.c2s.epoch, s.highest_seq()), (0, Some(0)));
    }

    #[test]
    fn chunks_spliced_between_two_streams_of_one_session_do_not_open() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (a, _) = seal_stream(&mut c, &[b"a0", b"a1", b"a2"]);
        let (b, _) = seal_stream(&mut c, &[b"b0", b"b1", b"b2"]);
        let fa = frames(&a[RECORD_HEADER_LEN..]);
        let fb = frames(&b[RECORD_HEADER_LEN..]);
        // b's header and first chunk, then a's middle chunk at the same position
        let spliced = [&b[..RECORD_HEADER_LEN], &fb[0], &fa[1], &fb[2]].concat();
        assert_eq!(
            open_stream(&mut s, &spliced).unwrap_err(),
            ProtocolError::BadSeal
        );
        // a's header with b's chunks: the first chunk does not open, seq 0 stays unused
        let relabeled = [&a[..RECORD_HEADER_LEN], &fb[0], &fb[1], &fb[2]].concat();
        assert!(open_stream(&mut s, &relabeled).is_err());
        assert_eq!(open_stream(&mut s, &a).unwrap().0, b"a0a1a2");
    }

    #[test]
    fn a_stream_cut_short_is_an_error_in_both_directions() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (wire, exp) = seal_stream(&mut c, &[b"one", b"two", b"three"]);
        let cut = wire.len() - frames(&wire[RECORD_HEADER_LEN..])[2].len();
        assert_eq!(
            open_stream(&mut s, &wire[..cut]).unwrap_err(),
            ProtocolError::Truncated
        );
        // the seq was marked when the first chunk opened: the whole stream cannot follow
        assert!(open_stream(&mut s, &wire).is_err());
        let (wire, exp2) = seal_stream(&mut c, &[b"x", b"y"]);
        let (_, sealer) = open_stream(&mut s, &wire).unwrap();
        let resp = respond_stream(&mut s, sealer, &[b"r1", b"r2", b"r3"]);
        let cut = resp.len() - frames(&resp[RECORD_HEADER_LEN..])[2].len();
        assert_eq!(
            open_response_body(&mut c, &exp2, &resp[..cut]).unwrap_err(),
            ProtocolError::Truncated
        );
        // and the response does not open as the answer to another request
        assert_eq!(
            open_response_body(&mut c, &exp, &resp).unwrap_err(),
            ProtocolError::BadSeal
        );
    }

    #[test]
    fn streams_need_the_negotiation_and_the_right_type() {
        let (mut c, mut s) = pair(Suite::Aes256Gcm);
        let (wire, _) = seal_stream(&mut c, &[b"a", b"b"]);
        s.streams = false;
        assert_eq!(
            open_stream(&mut s, &wire).unwrap_err().code(),
            ErrorCode::Malformed
        );
        assert_eq!(s.highest_seq(), None);
        s.streams = true;
        c.streams = false;
        let seq = c.next_seq();
        assert_eq!(
            c.seal_request_stream(&line(), b"x", true)
                .unwrap_err()
                .code(),
            ErrorCode::Malformed
        );
        assert_eq!(c.next_seq(), seq, "a refused stream takes no seq");
        c.streams = true;
        // a single record where a stream is expected and the other way round
        let (rec, _) = c.seal_request(&line(), b"single").unwrap();
        let mut f = rec[RECORD_HEADER_LEN..].to_vec();
        assert!(s
            .open_request_stream(&line(), &rec[..RECORD_HEADER_LEN], &mut f)
            .is_err());
        assert!(s.open_request(&line(), &wire).is_err());
        // a full-mode binding does not open a header-mode stream
        let ff = frames(&wire[RECORD_HEADER_LEN..]);
        let mut first = ff[0].clone();
        assert_eq!(
            s.open_request_stream(
                &RequestBinding::Full,
                &wire[..RECORD_HEADER_LEN],
                &mut first
            )
            .unwrap_err(),
            ProtocolError::BadSeal
        );
        assert!(
            open_stream(&mut s, &wire).is_ok(),
            "nothing was consumed by the refusals"
        );
        // a server without the negotiation cannot seal a stream and keeps its sealer
        let (rec, _) = c.seal_request(&line(), b"q").unwrap();
        let o = s.open_request(&line(), &rec).unwrap();
        s.streams = false;
        let failed = s.seal_response_stream(o.sealer, &OK).unwrap_err();
        assert!(s.seal_response(failed.sealer, &OK, b"one record").is_ok());
    }

    #[test]
    fn format_1_exports_still_import_without_streams() {
        let (c, s) = pair(Suite::Aes256Gcm);
        for (export, client) in [(c.export(), true), (s.export(), false)] {
            // format 2 -> format 1: drop the flags byte after the suite
            let mut old = export.to_vec();
            old[4] = 1;
            old.remove(10);
            if client {
                let c1 = ClientSession::import(&old).unwrap();
                assert!(!c1.streams());
                assert_eq!(ClientSession::import(&c1.export()).unwrap().export()[10], 0);
            } else {
                assert!(!ServerSession::import(&old).unwrap().streams());
            }
            let mut bad_flags = export.to_vec();
            bad_flags[10] = 0x02;
            assert!(ClientSession::import(&bad_flags).is_err());
            assert!(ServerSession::import(&bad_flags).is_err());
        }
        assert!(ServerSession::import(&s.export()).unwrap().streams());
    }
}
