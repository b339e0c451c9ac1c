//! Shared fixtures for the fuzz targets: a fixed server identity and handshake key, a
//! signed key configuration, a real established session pair per suite (made once per
//! process through the public handshake API), and byte-level mutations that let the
//! fuzzer start from a valid message and change it.
//!
//! Everything here goes through `sessioncert_proto`'s public API only.

use arbitrary::Arbitrary;
use sessioncert_proto::config::{
    PublishedKey, CONFIG_VALIDITY_MS, HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1,
};
use sessioncert_proto::handshake::{respond, ClientHandshake, ClientOffer, ServerPolicy};
use sessioncert_proto::{
    ClientSession, HandshakeKeyPair, IdentityKey, KeyConfig, PendingServerSession, Pin,
    RequestBinding, ServerSession, SessionId, SignedKeyConfig, Suite, Trust, VerifiedKeyConfig,
};
use std::sync::OnceLock;

/// The "now" every target uses (inside every key's validity).
pub const NOW_MS: u64 = 1_000_000;
/// Seed of the fixed server identity.
pub const IDENTITY_SEED: [u8; 32] = [1; 32];
/// Secret scalar of the fixed handshake key.
pub const HS_SECRET: [u8; 32] = [2; 32];
/// Id of the fixed handshake key.
pub const HS_KEY_ID: u8 = 7;
/// The Noise prologue prefix (PROTOCOL §6.2).
pub const PROLOGUE_LABEL: &[u8] = b"sessioncert/1 handshake";
/// The Noise protocol name (PROTOCOL §6.3).
pub const NOISE_PARAMS: &str = "Noise_NK_25519_AESGCM_SHA256";

/// A session pair made by a real handshake, kept as exports so every fuzz iteration
/// starts from the same state (`import` is cheap; the handshake is not).
pub struct Pair {
    /// The suite negotiated.
    pub suite: Suite,
    /// `ClientSession::export()` right after confirmation (next_seq = 0).
    pub client: Vec<u8>,
    /// `ServerSession::export()` right after confirmation (empty window).
    pub server: Vec<u8>,
    /// `PendingServerSession::export()` before confirmation.
    pub pending: Vec<u8>,
    /// The client's key confirmation.
    pub finished: [u8; 32],
    /// What the client sends to confirm: `bytes16(ticket) || client_finished`, with
    /// `pending` as the ticket.
    pub confirmation: Vec<u8>,
    /// The session id.
    pub id: SessionId,
    /// Where `next_seq` (a big-endian u64) sits in a confirmed client's export, counted
    /// from the end (the key fields before it grow once a direction has re-keyed).
    pub next_seq_from_end: usize,
    /// Where the replay window (`ReplayWindow::encode_into`, 136 bytes) sits in a server
    /// export, counted from the end.
    pub window_from_end: usize,
}

/// Length of an encoded replay window.
pub const WINDOW_LEN: usize = 8 + 8 * (sessioncert_proto::replay::WINDOW as usize / 64);

/// The offset of the u64 that reads `1`, `2`, `3` in the three buffers (the export
/// layout is found, not assumed, so format changes elsewhere do not break the targets).
fn find_counter(exports: &[Vec<u8>; 3]) -> usize {
    let at = |e: &Vec<u8>, i: usize| {
        e.get(i..i + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    };
    let len = exports[0].len();
    assert!(
        exports.iter().all(|e| e.len() == len),
        "export length changed with the counter"
    );
    let hits: Vec<usize> = (0..len.saturating_sub(7))
        .filter(|&i| (0..3).all(|k| at(&exports[k], i) == Some(k as u64 + 1)))
        .collect();
    assert_eq!(hits.len(), 1, "counter not found in the export");
    hits[0]
}

/// Process-wide fixtures.
pub struct Fixture {
    /// The server identity.
    pub identity: IdentityKey,
    /// Its pin.
    pub pin: Pin,
    /// The handshake key (secret [`HS_SECRET`], id [`HS_KEY_ID`], valid forever).
    pub keys: Vec<HandshakeKeyPair>,
    /// The key configuration naming that key, verified.
    pub config: VerifiedKeyConfig,
    /// The configuration signed by `identity`.
    pub signed: SignedKeyConfig,
    /// `signed.encode()`.
    pub signed_bytes: Vec<u8>,
    /// One established pair per suite, in `Suite::ALL` order.
    pub pairs: Vec<Pair>,
}

fn handshake_key() -> HandshakeKeyPair {
    HandshakeKeyPair::from_secret(HS_KEY_ID, &HS_SECRET, 0, u64::MAX).expect("handshake key")
}

fn make_pair(config: &VerifiedKeyConfig, keys: &[HandshakeKeyPair], suite: Suite) -> Pair {
    let offer = ClientOffer {
        versions: vec![VERSION_1],
        suites: vec![suite],
        streams: true,
    };
    let (c, hello) = ClientHandshake::start(config, offer, NOW_MS).expect("client hello");
    let id = SessionId([0x5a; 16]);
    let resp = respond(keys, &ServerPolicy::default(), &hello, id, NOW_MS).expect("respond");
    let pending = resp.pending.export().to_vec();
    // The server seals the pending export into its ticket; the targets use the export
    // itself as the ticket (sealing is the server crate's business).
    let hello = resp.server_hello(&pending).expect("ticket");
    let (uc, _) = c.read_server_hello(&hello).expect("server hello");
    let finished = *uc.client_finished();
    let confirmation = uc.confirmation().to_vec();
    let mut server = resp.pending.confirm(&finished).expect("confirm");
    let mut client = uc.confirmed();
    // Locate the client's counter and the server's window: seal three requests, open
    // them, and look for the fields that count 1, 2, 3.
    let line = RequestBinding::Full;
    let mut client_exports: [Vec<u8>; 3] = Default::default();
    let mut server_exports: [Vec<u8>; 3] = Default::default();
    for k in 0..3 {
        let (rec, _) = client.seal_request(&line, b"").expect("seal");
        server.open_request(&line, &rec).expect("open");
        client_exports[k] = client.export().to_vec();
        server_exports[k] = server.export().to_vec();
    }
    let next_seq_from_end = client_exports[2].len() - find_counter(&client_exports);
    let client = set_next_seq(&client_exports[2], next_seq_from_end, 0);
    // The window starts with `top` = highest + 1: 1, 2, 3 after seqs 0, 1, 2.
    let window_at = find_counter(&server_exports);
    let mut server = server_exports[2].clone();
    server[window_at..window_at + WINDOW_LEN].fill(0); // an empty window
    let window_from_end = server.len() - window_at;
    let p = Pair {
        suite,
        client,
        server,
        pending,
        finished,
        confirmation,
        id,
        next_seq_from_end,
        window_from_end,
    };
    assert_eq!(p.client_at(0).next_seq(), 0);
    assert_eq!(p.server().highest_seq(), None);
    p
}

/// The fixtures, built on first use.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let identity = IdentityKey::from_seed(&IDENTITY_SEED);
        let pin = identity.pin();
        let hk = handshake_key();
        let config = KeyConfig {
            identity: pin,
            issued_at_ms: NOW_MS - 1,
            expires_at_ms: NOW_MS - 1 + CONFIG_VALIDITY_MS,
            versions: vec![VERSION_1],
            record_suites: Suite::ALL.iter().map(|s| s.id()).collect(),
            keys: vec![PublishedKey {
                key_id: HS_KEY_ID,
                hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                public: hk.public().to_vec(),
                not_before_ms: 0,
                not_after_ms: u64::MAX,
            }],
        };
        let signed = config.sign(&identity).expect("sign");
        let signed_bytes = signed.encode();
        let config = signed.verify(&Trust::Pin(pin), NOW_MS).expect("verify");
        let keys = vec![hk];
        let pairs = Suite::ALL
            .iter()
            .map(|s| make_pair(&config, &keys, *s))
            .collect();
        Fixture {
            identity,
            pin,
            keys,
            config,
            signed,
            signed_bytes,
            pairs,
        }
    })
}

impl Pair {
    /// A fresh server side of the pair (empty replay window).
    pub fn server(&self) -> ServerSession {
        ServerSession::import(&self.server).expect("server import")
    }

    /// A fresh pending server side of the pair.
    pub fn pending(&self) -> PendingServerSession {
        PendingServerSession::import(&self.pending).expect("pending import")
    }

    /// The client side with its next sequence number set to `seq` (both directions'
    /// keys still in epoch 0).
    pub fn client_at(&self, seq: u64) -> ClientSession {
        ClientSession::import(&set_next_seq(&self.client, self.next_seq_from_end, seq))
            .expect("client import")
    }

    /// The server side with `window` (encoded) as its replay window.
    pub fn server_with_window(
        &self,
        window: &[u8],
    ) -> Result<ServerSession, sessioncert_proto::ProtocolError> {
        let mut e = self.server.clone();
        let at = e.len() - self.window_from_end;
        e.splice(at..at + WINDOW_LEN, window.iter().copied());
        ServerSession::import(&e)
    }

    /// The window bytes of a server export made from this pair's layout.
    pub fn window_of<'a>(&self, export: &'a [u8]) -> &'a [u8] {
        let at = export.len() - self.window_from_end;
        &export[at..at + WINDOW_LEN]
    }
}

/// `export` (a confirmed client's export) with `next_seq`, `from_end` bytes before
/// the end, replaced by `seq`.
pub fn set_next_seq(export: &[u8], from_end: usize, seq: u64) -> Vec<u8> {
    let mut e = export.to_vec();
    let at = e.len() - from_end;
    e[at..at + 8].copy_from_slice(&seq.to_be_bytes());
    e
}

/// Picks a pair by a fuzzer-chosen byte.
pub fn pair(sel: u8) -> &'static Pair {
    let f = fixture();
    &f.pairs[sel as usize % f.pairs.len()]
}

/// One edit of a byte string.
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    /// XOR one byte (position taken modulo the length).
    Flip {
        /// Position.
        pos: u16,
        /// XOR mask.
        mask: u8,
    },
    /// Cut the string to this length (modulo length + 1).
    Truncate(u16),
    /// Insert bytes at a position.
    Insert {
        /// Position.
        pos: u16,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// Remove a range.
    Remove {
        /// Start.
        pos: u16,
        /// How many.
        len: u8,
    },
    /// Overwrite a big-endian u64 at a position (lengths, sequence numbers, epochs).
    PutU64 {
        /// Position.
        pos: u16,
        /// Value.
        value: u64,
    },
}

/// Applies `muts` to a copy of `orig`.
pub fn mutate(orig: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = orig.to_vec();
    for m in muts {
        match m {
            Mutation::Flip { pos, mask } => {
                if !v.is_empty() {
                    let i = *pos as usize % v.len();
                    v[i] ^= mask;
                }
            }
            Mutation::Truncate(n) => {
                let n = *n as usize % (v.len() + 1);
                v.truncate(n);
            }
            Mutation::Insert { pos, bytes } => {
                let i = *pos as usize % (v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove { pos, len } => {
                if !v.is_empty() {
                    let i = *pos as usize % v.len();
                    let j = (i + *len as usize).min(v.len());
                    v.drain(i..j);
                }
            }
            Mutation::PutU64 { pos, value } => {
                if v.len() >= 8 {
                    let i = *pos as usize % (v.len() - 7);
                    v[i..i + 8].copy_from_slice(&value.to_be_bytes());
                }
            }
        }
    }
    v
}

/// A Noise NK state for playing the peer of the code under test, with the standard
/// resolver of `snow` (independent of the crate's own resolver).
pub fn noise_builder(prologue: &[u8]) -> snow::Builder<'_> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("params"))
        .prologue(prologue)
        .expect("prologue")
}

/// `PROLOGUE_LABEL || header`.
pub fn prologue(header: &[u8]) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    p.extend_from_slice(header);
    p
}

/// A big-endian u16 length prefix followed by `b`.
pub fn bytes16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

pub mod records;

/// Extension type `streamed_records` (PROTOCOL §6.4).
pub const EXT_STREAMED_RECORDS: u16 = 0x0001;

/// Reference reading of an extension list that must fill `b` exactly (PROTOCOL §6.4):
/// `bytes16(entries)`, each entry `u16 type || bytes16(data)`. `None` (malformed) when
/// the framing is wrong, a type appears twice or `streamed_records` carries data;
/// otherwise whether `streamed_records` is in it (unknown types are skipped).
pub fn extensions_ref(b: &[u8]) -> Option<bool> {
    let len = u16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize;
    let list = &b[2..];
    if list.len() != len {
        return None;
    }
    let (mut at, mut seen, mut streams) = (0, Vec::new(), false);
    while at < list.len() {
        let ty = u16::from_be_bytes([*list.get(at)?, *list.get(at + 1)?]);
        let n = u16::from_be_bytes([*list.get(at + 2)?, *list.get(at + 3)?]) as usize;
        let data = list.get(at + 4..at + 4 + n)?;
        if seen.contains(&ty) || (ty == EXT_STREAMED_RECORDS && !data.is_empty()) {
            return None;
        }
        seen.push(ty);
        streams |= ty == EXT_STREAMED_RECORDS;
        at += 4 + n;
    }
    Some(streams)
}

/// Encodes extension entries as a list (`bytes16` of the entries), without checking them.
pub fn encode_extensions(entries: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut inner = Vec::new();
    for (ty, data) in entries {
        inner.extend_from_slice(&ty.to_be_bytes());
        bytes16(&mut inner, &data[..data.len().min(256)]);
    }
    let mut out = Vec::new();
    bytes16(&mut out, &inner);
    out
}

/// The header list a `FullRequest`/`FullResponse` with `headers` comes back with after
/// `encode` → `decode`: names lower-cased, and repeated `cookie` fields joined with
/// `"; "` into the first one (the `bhttp` reader does this, as RFC 9113 §8.2.3 allows).
/// `None` if the list is not representable: an empty field name is written but is the
/// end-of-section marker to the reader, so such a message never decodes.
pub fn bhttp_headers_after_round_trip(
    headers: &[(String, Vec<u8>)],
) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut cookie: Option<usize> = None;
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        if k.is_empty() {
            return None;
        }
        if k == "cookie" {
            if let Some(i) = cookie {
                out[i].1.extend_from_slice(b"; ");
                out[i].1.extend_from_slice(v);
                continue;
            }
            cookie = Some(out.len());
        }
        out.push((k, v.clone()));
    }
    Some(out)
}
