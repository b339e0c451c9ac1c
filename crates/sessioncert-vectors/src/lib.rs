//! The machine-readable test vectors of `docs/PROTOCOL.md`; `src/main.rs` writes them
//! into a directory:
//!
//! ```text
//! cargo run -p sessioncert-vectors -- test-vectors
//! ```
//!
//! Everything is deterministic: fixed identity seed, fixed handshake keys, fixed Noise
//! ephemerals (through the `*_for_vectors` entry points), fixed session ids and clock.
//! Every value is produced by the crate and, where the crate does not expose an
//! intermediate (Noise chaining keys, the handshake hash, associated data, nonces), by the
//! small from-the-spec reference implementation in [`reference`]; generation fails if the
//! two ever disagree, so the files also check that `docs/PROTOCOL.md` describes the code.
//!
//! `tests/vectors.rs` checks that [`generate`] still produces exactly the committed
//! files, and re-derives every value in them through the core's public API.
//!
//! This crate is unpublished: it turns on the core's `insecure-vectors` feature (fixed
//! Noise ephemerals), which nothing that ships may use.
#![allow(dead_code, clippy::vec_init_then_push)]
#![forbid(unsafe_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sessioncert_proto::config::{
    PublishedKey, HS_NOISE_NK_25519_AESGCM_SHA256, MAX_CLOCK_SKEW_MS, MAX_CONFIG_VALIDITY_MS,
    NOISE_NK_PARAMS, VERSION_1,
};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::handshake::{
    parse_client_hello, respond_with_ephemeral_for_vectors, ClientHandshake, ClientOffer,
    ServerPolicy, MAX_TICKET_LEN,
};
use sessioncert_proto::replay::{ReplayWindow, WINDOW};
use sessioncert_proto::session::{MAX_MESSAGES, REKEY_INTERVAL};
use sessioncert_proto::{
    ClientSession, Confirmation, ErrorCode, HandshakeKeyPair, IdentityKey, KeyConfig, Pin,
    ProtocolError, RequestBinding, RequestLine, ResponseBinding, ResponseExpectation,
    ServerSession, SessionId, SignedKeyConfig, Suite, Trust, VerifiedKeyConfig,
};

mod streams;
pub use streams::*;

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

/// The vector files as `(file name, file contents)`.
pub fn generate() -> Vec<(&'static str, String)> {
    let kc = gen_key_config();
    let hs = gen_handshake(&kc);
    let rec = gen_records(&hs);
    let rw = gen_replay_window();
    let st = gen_streams(&hs);
    vec![
        ("key-config.json", to_json(&kc)),
        ("handshake.json", to_json(&hs)),
        ("records.json", to_json(&rec)),
        ("replay-window.json", to_json(&rw)),
        ("streams.json", to_json(&st)),
    ]
}

/// The names of every vector file, for the test that the directory holds nothing stale.
pub const FILES: [&str; 5] = [
    "key-config.json",
    "handshake.json",
    "records.json",
    "replay-window.json",
    "streams.json",
];

fn to_json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serialize");
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Lower-case hex.
pub fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

/// Decodes hex, panicking on bad input (vector files are trusted test input).
pub fn unhx(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Decodes hex of exactly N bytes.
pub fn unhx_n<const N: usize>(s: &str) -> [u8; N] {
    unhx(s)
        .try_into()
        .unwrap_or_else(|_| panic!("expected {N} bytes of hex: {s:?}"))
}

/// 32 bytes counting up from `start` (a recognisable, fixed "secret").
fn pattern(start: u8) -> [u8; 32] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn sid(start: u8) -> SessionId {
    SessionId(core::array::from_fn(|i| start.wrapping_add(i as u8)))
}

/// The wire name of the code a refusal carries.
pub fn code(e: &ProtocolError) -> String {
    e.code().as_str().to_owned()
}

fn flip(b: &[u8], i: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[i] ^= 0x01;
    v
}

fn flip_last(b: &[u8]) -> Vec<u8> {
    flip(b, b.len() - 1)
}

/// Unpadded base64url, as in the `sessioncert-*` headers.
pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn lines(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| (*x).to_owned()).collect()
}

/// Parses a trust setting as written in the files: `first_use`, or one pin text, or
/// several separated by commas (accept any of them).
pub fn parse_trust(s: &str) -> Trust {
    if s == "first_use" {
        Trust::FirstUse
    } else {
        Trust::pins(s.split(',').map(|p| p.parse::<Pin>().expect("pin text")))
    }
}

// ---------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// The clock of every vector: 2026-01-01T00:00:00Z.
pub const NOW_MS: u64 = 1_767_225_600_000;
const KEY1_NOT_BEFORE: u64 = NOW_MS - 31 * DAY; // 2025-12-01
const KEY1_NOT_AFTER: u64 = NOW_MS - DAY; // 2025-12-31: expired at NOW_MS
const KEY2_NOT_BEFORE: u64 = NOW_MS - 7 * DAY; // 2025-12-25
const KEY2_NOT_AFTER: u64 = NOW_MS + 31 * DAY; // 2026-02-01
/// The configuration was signed an hour before the vectors' clock (2025-12-31T23:00Z)…
const ISSUED_AT: u64 = NOW_MS - HOUR;
/// …and, as this implementation's servers do, made valid for 24 hours.
const CONFIG_VALIDITY: u64 = DAY;

fn identity_seed() -> [u8; 32] {
    pattern(0x00)
}
fn other_identity_seed() -> [u8; 32] {
    pattern(0xe0)
}
fn key1_secret() -> [u8; 32] {
    pattern(0x20)
}
fn key2_secret() -> [u8; 32] {
    pattern(0x40)
}
fn impostor_secret() -> [u8; 32] {
    pattern(0xc0)
}

fn server_keys() -> Vec<HandshakeKeyPair> {
    vec![
        HandshakeKeyPair::from_secret(1, &key1_secret(), KEY1_NOT_BEFORE, KEY1_NOT_AFTER).unwrap(),
        HandshakeKeyPair::from_secret(2, &key2_secret(), KEY2_NOT_BEFORE, KEY2_NOT_AFTER).unwrap(),
    ]
}

fn published(k: &HandshakeKeyPair) -> PublishedKey {
    PublishedKey {
        key_id: k.key_id,
        hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
        public: k.public().to_vec(),
        not_before_ms: k.not_before_ms,
        not_after_ms: k.not_after_ms,
    }
}

fn key_config() -> KeyConfig {
    key_config_issued_at(ISSUED_AT)
}

/// The configuration as the server would have re-signed it at `issued_at_ms`: same keys,
/// valid for [`CONFIG_VALIDITY`].
fn key_config_issued_at(issued_at_ms: u64) -> KeyConfig {
    KeyConfig {
        identity: IdentityKey::from_seed(&identity_seed()).pin(),
        issued_at_ms,
        expires_at_ms: issued_at_ms + CONFIG_VALIDITY,
        versions: vec![VERSION_1],
        record_suites: Suite::ALL.iter().map(|s| s.id()).collect(),
        keys: server_keys().iter().map(published).collect(),
    }
}

// ---------------------------------------------------------------------------------------
// JSON shapes (shared with tests/vectors.rs)
// ---------------------------------------------------------------------------------------

/// A key pair of the identity.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IdentityV {
    /// Ed25519 secret seed.
    pub seed: String,
    /// Ed25519 public key (the pin's bytes).
    pub public: String,
    /// Pin text.
    pub pin: String,
}

/// A handshake key pair as the server holds it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HandshakeKeyV {
    pub key_id: u8,
    pub hs_suite: u16,
    pub secret: String,
    pub public: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// A published key inside a configuration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PublishedKeyV {
    pub key_id: u8,
    pub hs_suite: u16,
    pub public: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// The fields of a `KeyConfig`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ConfigV {
    pub identity: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub versions: Vec<u16>,
    pub record_suites: Vec<u16>,
    pub keys: Vec<PublishedKeyV>,
}

impl ConfigV {
    fn of(c: &KeyConfig) -> Self {
        ConfigV {
            identity: hx(&c.identity.0),
            issued_at_ms: c.issued_at_ms,
            expires_at_ms: c.expires_at_ms,
            versions: c.versions.clone(),
            record_suites: c.record_suites.clone(),
            keys: c
                .keys
                .iter()
                .map(|k| PublishedKeyV {
                    key_id: k.key_id,
                    hs_suite: k.hs_suite,
                    public: hx(&k.public),
                    not_before_ms: k.not_before_ms,
                    not_after_ms: k.not_after_ms,
                })
                .collect(),
        }
    }

    /// The `KeyConfig` these fields describe.
    pub fn to_config(&self) -> KeyConfig {
        KeyConfig {
            identity: Pin(unhx_n(&self.identity)),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            versions: self.versions.clone(),
            record_suites: self.record_suites.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| PublishedKey {
                    key_id: k.key_id,
                    hs_suite: k.hs_suite,
                    public: unhx(&k.public),
                    not_before_ms: k.not_before_ms,
                    not_after_ms: k.not_after_ms,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CurrentKeyV {
    pub now_ms: u64,
    pub key_id: Option<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VerifyOkV {
    pub name: String,
    pub signed_config: String,
    pub trust: String,
    pub now_ms: u64,
    /// The configuration `verify` returns, re-encoded.
    pub config_encoded: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VerifyFailV {
    pub name: String,
    pub description: String,
    pub signed_config: String,
    pub trust: String,
    pub now_ms: u64,
    pub error: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InvalidPinV {
    pub text: String,
    pub reason: String,
}

/// `key-config.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KeyConfigFile {
    pub description: Vec<String>,
    pub signing_label: String,
    /// `MAX_CLOCK_SKEW` of the freshness rule (PROTOCOL.md §5.3).
    pub max_clock_skew_ms: u64,
    /// `MAX_CONFIG_VALIDITY` of the freshness rule.
    pub max_config_validity_ms: u64,
    pub identity: IdentityV,
    pub other_identity: IdentityV,
    pub handshake_keys: Vec<HandshakeKeyV>,
    pub config: ConfigV,
    pub config_encoded: String,
    pub signing_input: String,
    pub signature: String,
    pub signed_config: String,
    pub current_key: Vec<CurrentKeyV>,
    pub verify_ok: Vec<VerifyOkV>,
    pub verify_fail: Vec<VerifyFailV>,
    pub invalid_pins: Vec<InvalidPinV>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyV {
    pub suites: Vec<u16>,
    pub lifetime_ms: u64,
    pub idle_timeout_ms: u64,
    /// Accept `streamed_records` when offered (PROTOCOL §6.4).
    pub streams: bool,
}

impl PolicyV {
    pub fn to_policy(&self) -> ServerPolicy {
        ServerPolicy {
            suites: self
                .suites
                .iter()
                .map(|id| Suite::from_id(*id).expect("suite id"))
                .collect(),
            lifetime_ms: self.lifetime_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            streams: self.streams,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OfferV {
    pub versions: Vec<u16>,
    pub suites: Vec<u16>,
    /// Offer `streamed_records` (PROTOCOL §6.4).
    pub streams: bool,
}

impl OfferV {
    pub fn to_offer(&self) -> ClientOffer {
        ClientOffer {
            versions: self.versions.clone(),
            suites: self
                .suites
                .iter()
                .map(|id| Suite::from_id(*id).expect("suite id"))
                .collect(),
            streams: self.streams,
        }
    }
}

impl PolicyV {
    fn of(p: &ServerPolicy) -> Self {
        PolicyV {
            suites: p.suites.iter().map(|s| s.id()).collect(),
            lifetime_ms: p.lifetime_ms,
            idle_timeout_ms: p.idle_timeout_ms,
            streams: p.streams,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServerHelloV {
    pub version: u16,
    pub suite: u16,
    pub session_id: String,
    pub expires_at_ms: u64,
    pub idle_timeout_ms: u64,
    /// The server echoed `streamed_records`: streams are negotiated.
    pub streams: bool,
}

/// Every intermediate value of the Noise NK run (see `docs/PROTOCOL.md` §6).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NoiseTraceV {
    /// `h = ck =` the protocol name padded with zeros to 32 bytes.
    pub h_init: String,
    /// After `MixHash(prologue)`.
    pub h_prologue: String,
    /// After `MixHash(rs)` (the pre-message `<- s`).
    pub h_pre_message: String,
    /// After `MixHash(e_client.public)`.
    pub h_msg1_e: String,
    /// `DH(e_client, s_server)`.
    pub dh_es: String,
    /// `ck` after `MixKey(dh_es)`.
    pub ck_es: String,
    /// The cipher key `k` after `MixKey(dh_es)`.
    pub k_es: String,
    /// After `EncryptAndHash(msg1 payload)`.
    pub h_msg1: String,
    /// After `MixHash(e_server.public)`.
    pub h_msg2_e: String,
    /// `DH(e_server, e_client)`.
    pub dh_ee: String,
    /// `ck` after `MixKey(dh_ee)`.
    pub ck_ee: String,
    /// `k` after `MixKey(dh_ee)`.
    pub k_ee: String,
    /// After `EncryptAndHash(msg2 payload)`: the final handshake hash `h`.
    pub handshake_hash: String,
    /// `Split()` outputs, raw.
    pub k1: String,
    pub k2: String,
}

/// The sessioncert key schedule on top of Noise.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KeyScheduleV {
    /// `HKDF-Extract(salt = handshake_hash, ikm = k1 || k2)`.
    pub prk: String,
    pub c2s_key: String,
    pub c2s_iv: String,
    pub s2c_key: String,
    pub s2c_iv: String,
    pub finished_key: String,
    /// `HKDF-Expand(PRK, "sessioncert/1 refusal", 32)`: authenticates refusals (§14.1).
    pub refusal_key: String,
    /// `HKDF-Expand(c2s_key, "sessioncert/1 rekey", 32)`: the epoch-1 key.
    pub c2s_key_epoch1: String,
    pub s2c_key_epoch1: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HandshakeCaseV {
    pub name: String,
    pub suite: u16,
    pub now_ms: u64,
    pub offer: OfferV,
    /// The server's policy for this case (`respond` negative cases of this case use it).
    pub policy: PolicyV,
    pub key_id: u8,
    pub server_static_public: String,
    pub client_ephemeral_secret: String,
    pub client_ephemeral_public: String,
    pub server_ephemeral_secret: String,
    pub server_ephemeral_public: String,
    pub session_id: String,
    pub session_id_text: String,
    pub client_hello_header: String,
    pub prologue: String,
    pub msg1_payload: String,
    pub noise_msg1: String,
    pub client_hello: String,
    pub server_hello_fields: ServerHelloV,
    pub msg2_payload: String,
    pub noise_msg2: String,
    /// The server's opaque ticket (fixed here; a real server seals its pending state).
    pub ticket: String,
    pub server_hello: String,
    pub noise: NoiseTraceV,
    pub keys: KeyScheduleV,
    pub client_finished: String,
    /// `bytes16(ticket) || client_finished`: the stand-alone confirm's body.
    pub confirmation: String,
    /// The same, unpadded base64url: the `sessioncert-confirm` header value.
    pub confirmation_base64url: String,
    /// The client session right after reading the server hello (pending confirmation).
    pub client_export_unconfirmed: String,
    /// The client session once the server accepted the confirmation.
    pub client_export: String,
    pub server_pending_export: String,
    pub server_export: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HandshakeNegV {
    pub name: String,
    pub description: String,
    /// Which case's state to use.
    pub case: String,
    /// `respond` (server reads `input` as a client hello), `read_server_hello` (the case's
    /// client reads `input` as a server hello) or `confirm` (`input` is parsed as a
    /// confirmation, then the case's pending server session checks its client_finished).
    pub op: String,
    pub input: String,
    /// Where the input was built by the reference implementation around a crafted
    /// plaintext: the msg1 payload (`respond`) or ServerHello payload
    /// (`read_server_hello`) it encrypted with the case's keys and ephemerals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub error: String,
}

/// A handshake whose msg1 or ServerHello payload carries an extension this version does
/// not define: it is skipped (PROTOCOL §6.4). Built by the reference implementation from
/// the case's inputs and `payload`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExtensionCaseV {
    pub name: String,
    pub description: String,
    pub case: String,
    /// `respond`: the server (the case's keys, policy, session id, ephemeral and clock)
    /// answers `input` as a client hello; `read_server_hello`: the case's client reads
    /// `input` as a server hello.
    pub op: String,
    /// The msg1 payload (`respond`) or ServerHello payload (`read_server_hello`) inside.
    pub payload: String,
    pub input: String,
    /// Whether streams end up negotiated.
    pub streams: bool,
    /// `respond`: the server hello it answers (with the case's ticket);
    /// `read_server_hello`: the client's export right after reading it (unconfirmed).
    pub output: String,
}

/// Importing a session export (PROTOCOL §12): format 1 (no flags byte) is still read as
/// "no streams"; unknown flag bits and unknown formats are refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExportCaseV {
    pub name: String,
    pub description: String,
    /// `client` (`ClientSession::import`) or `server` (`ServerSession::import`).
    pub role: String,
    pub input: String,
    /// What `export()` gives after the import (format 2); null when refused.
    pub reexport: Option<String>,
    /// Whether the imported session negotiated streams; null when refused.
    pub streams: Option<bool>,
    /// The ErrorCode wire name of the refusal; null when imported.
    pub error: Option<String>,
}

/// `handshake.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HandshakeFile {
    pub description: Vec<String>,
    pub noise_protocol_name: String,
    pub prologue_label: String,
    pub config_encoded: String,
    pub server_keys: Vec<HandshakeKeyV>,
    pub policy: PolicyV,
    pub cases: Vec<HandshakeCaseV>,
    pub extension_cases: Vec<ExtensionCaseV>,
    pub negative: Vec<HandshakeNegV>,
    pub export_cases: Vec<ExportCaseV>,
}

/// The origin every scenario request is sealed for (`sessioncert-target`, PROTOCOL §8.2).
pub const TARGET: &str = "https://api.example.com";

/// What a header-mode request record is bound to (PROTOCOL §8.2).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeaderLineV {
    pub method: String,
    /// The origin, `scheme://authority` (the `sessioncert-target` value).
    pub target: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// Covered headers as `[name, value]`, in the order `sessioncert-covered` lists them;
    /// a value joins every field line of that name with `", "`.
    pub covered: Vec<FieldV>,
}

/// How a request record is bound.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ReqBindingV {
    Header(HeaderLineV),
    Full,
}

impl ReqBindingV {
    /// Calls `f` with the crate's binding (which borrows the covered pairs as `&str`).
    pub fn with_binding<R>(&self, f: impl FnOnce(&RequestBinding<'_>) -> R) -> R {
        match self {
            ReqBindingV::Header(l) => {
                let covered: Vec<(&str, &str)> = l
                    .covered
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                f(&RequestBinding::Header(RequestLine {
                    method: &l.method,
                    target: &l.target,
                    path: &l.path,
                    query: &l.query,
                    content_type: &l.content_type,
                    covered: &covered,
                }))
            }
            ReqBindingV::Full => f(&RequestBinding::Full),
        }
    }

    /// A header-mode binding for [`TARGET`] that covers no headers.
    fn header(method: &str, path: &str, query: &str, content_type: &str) -> Self {
        ReqBindingV::Header(HeaderLineV {
            method: method.into(),
            target: TARGET.into(),
            path: path.into(),
            query: query.into(),
            content_type: content_type.into(),
            covered: Vec::new(),
        })
    }

    /// The header-mode line (panics in full mode).
    pub fn line(&self) -> &HeaderLineV {
        match self {
            ReqBindingV::Header(l) => l,
            ReqBindingV::Full => panic!("full-mode binding has no request line"),
        }
    }

    /// A copy with the header-mode line changed by `f`.
    fn changed(&self, f: impl FnOnce(&mut HeaderLineV)) -> Self {
        let mut l = self.line().clone();
        f(&mut l);
        ReqBindingV::Header(l)
    }
}

/// How a response record is bound (beyond its request).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RespBindingV {
    Header { status: u16, content_type: String },
    Full,
}

impl RespBindingV {
    pub fn binding(&self) -> ResponseBinding<'_> {
        match self {
            RespBindingV::Header {
                status,
                content_type,
            } => ResponseBinding::Header {
                status: *status,
                content_type,
            },
            RespBindingV::Full => ResponseBinding::Full,
        }
    }

    fn header(status: u16, content_type: &str) -> Self {
        RespBindingV::Header {
            status,
            content_type: content_type.into(),
        }
    }
}

/// A header field as `[name, value]` (values in these vectors are ASCII).
pub type FieldV = (String, String);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FullRequestV {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub headers: Vec<FieldV>,
    pub body: String,
}

impl FullRequestV {
    pub fn to_request(&self) -> FullRequest {
        FullRequest {
            method: self.method.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            path: self.path.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect(),
            body: unhx(&self.body),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FullResponseV {
    pub status: u16,
    pub headers: Vec<FieldV>,
    pub body: String,
}

impl FullResponseV {
    pub fn to_response(&self) -> FullResponse {
        FullResponse {
            status: self.status,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect(),
            body: unhx(&self.body),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RequestV {
    pub binding: ReqBindingV,
    /// Full mode: the HTTP request whose Binary HTTP encoding is `plaintext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullRequestV>,
    /// Header mode: the request's header fields that carry its binding, as they travel
    /// (PROTOCOL §8.2, §13), in order: `sessioncert-target`, `sessioncert-content-type`
    /// (absent when empty), `sessioncert-covered` (absent when nothing is covered), then
    /// the request's other header field lines, covered or not. The binding is rebuilt
    /// from these; headers not named in `sessioncert-covered` are not bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<FieldV>,
    pub plaintext: String,
    pub seq: u64,
    pub epoch: u64,
    pub ad: String,
    pub nonce: String,
    pub record: String,
    /// `HEAD` only: the record as it travels, in the `sessioncert-record` header
    /// (unpadded base64url, PROTOCOL §13), since a HEAD request has no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_base64url: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResponseV {
    pub binding: RespBindingV,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<FullResponseV>,
    pub plaintext: String,
    pub epoch: u64,
    pub ad: String,
    pub nonce: String,
    pub record: String,
    /// The response to a `HEAD` request only: the record as it travels, in the
    /// `sessioncert-record` header (unpadded base64url, PROTOCOL §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_base64url: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExchangeV {
    pub name: String,
    pub request: RequestV,
    pub response: ResponseV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScenarioV {
    pub name: String,
    pub description: String,
    pub client_export_start: String,
    pub server_export_start: String,
    /// In the order the client seals them (sequence numbers ascending).
    pub exchanges: Vec<ExchangeV>,
    /// Indices into `exchanges`, in the order the server opens each request and at once
    /// seals its response; the client opens the responses in the same order.
    pub server_order: Vec<usize>,
    pub client_export_end: String,
    pub server_export_end: String,
}

/// The expected outcome of one operation: exactly one of the two is set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExpectV {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExpectV {
    fn ok(pt: &[u8]) -> Self {
        ExpectV {
            plaintext: Some(hx(pt)),
            error: None,
        }
    }
    fn err(code: &str) -> Self {
        ExpectV {
            plaintext: None,
            error: Some(code.into()),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OpenStepV {
    pub binding: ReqBindingV,
    pub record: String,
    pub expect: ExpectV,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServerOpenCaseV {
    pub name: String,
    pub description: String,
    pub server_export: String,
    /// Opened one after another against the same server session.
    pub steps: Vec<OpenStepV>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExpectationV {
    pub seq: u64,
    pub request_tag: String,
    pub full: bool,
}

impl ExpectationV {
    pub fn to_expectation(&self) -> ResponseExpectation {
        ResponseExpectation {
            seq: self.seq,
            request_tag: unhx_n(&self.request_tag),
            full: self.full,
        }
    }
    fn of(e: &ResponseExpectation) -> Self {
        ExpectationV {
            seq: e.seq,
            request_tag: hx(&e.request_tag),
            full: e.full,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClientOpenCaseV {
    pub name: String,
    pub description: String,
    pub client_export: String,
    pub expectation: ExpectationV,
    pub binding: RespBindingV,
    pub record: String,
    pub error: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClientSealCaseV {
    pub name: String,
    pub description: String,
    pub client_export: String,
    pub binding: ReqBindingV,
    pub plaintext: String,
    pub error: String,
}

/// Whether (and with which tag) an ended session refuses a request with a tag (§14.1).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RefusalTagCaseV {
    pub name: String,
    pub description: String,
    /// The server session when it ended (closed or expired); import it and end it.
    pub server_export: String,
    /// The request record the ended session refuses.
    pub record: String,
    /// The refusal's code (`sessioncert-error`).
    pub code: String,
    /// The HMAC input; null when no tag may be issued.
    pub tag_input: Option<String>,
    /// `HMAC-SHA256(refusal_key, tag_input)`; null when no tag may be issued.
    pub tag: Option<String>,
    /// The `sessioncert-refusal` header value (unpadded base64url of tag), or null.
    pub tag_base64url: Option<String>,
}

/// Whether the client accepts a refusal tag as proof that its request did not run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RefusalVerifyCaseV {
    pub name: String,
    pub description: String,
    pub client_export: String,
    /// The seq of the request the client sent.
    pub seq: u64,
    /// The code in `sessioncert-error`.
    pub code: String,
    /// The tag received (decoded from `sessioncert-refusal`).
    pub tag: String,
    pub verified: bool,
}

/// Runs a refusal tag case through the crate: the tag the ended session issues, if any.
pub fn run_refusal_tag(server_export: &[u8], record: &[u8], code: &str) -> Option<[u8; 32]> {
    let code = ErrorCode::parse(code).expect("error code");
    ServerSession::import(server_export)
        .unwrap()
        .end()
        .refusal_tag(record, code)
}

/// Runs a refusal verification case through the crate.
pub fn run_refusal_verify(client_export: &[u8], seq: u64, code: &str, tag: &[u8]) -> bool {
    let code = ErrorCode::parse(code).expect("error code");
    ClientSession::import(client_export)
        .unwrap()
        .verify_refusal(seq, code, tag)
}

/// What the reference says an ended session may tag (§14.1): only `session_expired` and
/// `session_closed`, only a request record whose header parses, only a seq the window
/// never accepted (above it, or inside it and unmarked).
pub fn reference_refusal_tag(
    server_export: &[u8],
    refusal_key: &[u8; 32],
    session_id: &[u8; 16],
    record: &[u8],
    code: &str,
) -> Option<[u8; 32]> {
    let window = &server_export[server_export.len() - 136..];
    if !matches!(code, "session_expired" | "session_closed")
        || record.len() < 9 + 16
        || !matches!(record[0], 0x01..=0x04)
    {
        return None;
    }
    let seq = u64::from_be_bytes(record[1..9].try_into().unwrap());
    reference::window_accepts(window, seq)
        .then(|| reference::refusal_tag(refusal_key, session_id, seq, code))
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordSuiteV {
    pub name: String,
    pub suite: u16,
    pub session_id: String,
    /// Epoch-0 keys and IVs (the same values as in handshake.json).
    pub c2s_key: String,
    pub c2s_iv: String,
    pub s2c_key: String,
    pub s2c_iv: String,
    pub c2s_key_epoch1: String,
    pub s2c_key_epoch1: String,
    pub refusal_key: String,
    /// The confirmed sessions right after the handshake of handshake.json.
    pub client_export: String,
    pub server_export: String,
    pub scenarios: Vec<ScenarioV>,
    pub server_open_cases: Vec<ServerOpenCaseV>,
    pub client_open_cases: Vec<ClientOpenCaseV>,
    pub client_seal_cases: Vec<ClientSealCaseV>,
    /// After the main scenario (which ends with close): which refusals carry a tag.
    pub refusal_tag_cases: Vec<RefusalTagCaseV>,
    /// The main scenario's client checking refusal tags.
    pub refusal_verify_cases: Vec<RefusalVerifyCaseV>,
}

/// `records.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordsFile {
    pub description: Vec<String>,
    pub rekey_interval: u64,
    pub max_messages: u64,
    pub replay_window: u64,
    pub suites: Vec<RecordSuiteV>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReplayStepV {
    pub seq: u64,
    /// `accept` or the error code (`rejected`).
    pub expect: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReplayCaseV {
    pub name: String,
    pub description: String,
    pub steps: Vec<ReplayStepV>,
    pub highest: Option<u64>,
    /// The window's storage encoding afterwards: `u64 top || 16 × u64 bitmap words`.
    pub state: String,
}

/// `replay-window.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReplayFile {
    pub description: Vec<String>,
    pub window: u64,
    pub cases: Vec<ReplayCaseV>,
}

// ---------------------------------------------------------------------------------------
// Reference implementation, straight from docs/PROTOCOL.md, using only generic primitives
// ---------------------------------------------------------------------------------------

/// An independent implementation of the byte layouts and the key schedule. It shares no
/// code with the crate beyond the primitives (SHA-256, HMAC, HKDF, AES-GCM, ChaCha20-
/// Poly1305 from RustCrypto, X25519 from snow's default resolver).
pub mod reference {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use snow::params::DHChoice;
    use snow::resolvers::{CryptoResolver, DefaultResolver};

    pub const NOISE_NAME: &[u8] = b"Noise_NK_25519_AESGCM_SHA256";
    pub const PROLOGUE_LABEL: &[u8] = b"sessioncert/1 handshake";

    pub fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("x25519");
        dh.set(secret);
        let mut out = [0u8; 32];
        dh.dh(public, &mut out).expect("dh");
        out
    }

    pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        let mut base = [0u8; 32];
        base[0] = 9;
        x25519(secret, &base)
    }

    pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac key");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Noise's HKDF with two outputs.
    pub fn noise_hkdf(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
        let temp = hmac(ck, &[ikm]);
        let o1 = hmac(&temp, &[&[1u8]]);
        let o2 = hmac(&temp, &[&o1, &[2u8]]);
        (o1, o2)
    }

    /// RFC 5869 HKDF-Extract.
    pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
        hmac(salt, &[ikm])
    }

    /// RFC 5869 HKDF-Expand for at most 32 bytes (one block).
    pub fn hkdf_expand(prk: &[u8; 32], info: &[u8], len: usize) -> Vec<u8> {
        assert!(len <= 32);
        hmac(prk, &[info, &[1u8]])[..len].to_vec()
    }

    pub fn aes_gcm_seal(key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], pt: &[u8]) -> Vec<u8> {
        aes_gcm::Aes256Gcm::new(key.into())
            .encrypt(nonce.into(), Payload { msg: pt, aad: ad })
            .expect("seal")
    }

    /// Seals with record suite `suite` (1 = AES-256-GCM, 2 = ChaCha20-Poly1305).
    pub fn aead_seal(
        suite: u16,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        pt: &[u8],
    ) -> Vec<u8> {
        match suite {
            1 => aes_gcm_seal(key, nonce, ad, pt),
            2 => chacha20poly1305::ChaCha20Poly1305::new(key.into())
                .encrypt(nonce.into(), Payload { msg: pt, aad: ad })
                .expect("seal"),
            _ => panic!("unknown suite {suite}"),
        }
    }

    /// Opens with record suite `suite`; `None` when it does not authenticate.
    pub fn aead_open(
        suite: u16,
        key: &[u8; 32],
        nonce: &[u8; 12],
        ad: &[u8],
        ct: &[u8],
    ) -> Option<Vec<u8>> {
        let p = Payload { msg: ct, aad: ad };
        match suite {
            1 => aes_gcm::Aes256Gcm::new(key.into())
                .decrypt(nonce.into(), p)
                .ok(),
            2 => chacha20poly1305::ChaCha20Poly1305::new(key.into())
                .decrypt(nonce.into(), p)
                .ok(),
            _ => panic!("unknown suite {suite}"),
        }
    }

    /// Label of a stream key (§8.5).
    pub const STREAM_LABEL: &[u8] = b"sessioncert/1 stream";
    /// Most plaintext bytes in one chunk (§8.5).
    pub const MAX_CHUNK_LEN: usize = 65_536;

    /// `"sessioncert/1 stream" || u8 type || u64 seq`: the HKDF info of a stream key.
    pub fn stream_key_info(record_type: u8, seq: u64) -> Vec<u8> {
        [STREAM_LABEL, &[record_type], &seq.to_be_bytes()].concat()
    }

    /// `HKDF-Expand(epoch key of seq's direction, stream_key_info, 32)` (§8.5).
    pub fn stream_key(epoch_key: &[u8; 32], record_type: u8, seq: u64) -> [u8; 32] {
        hkdf_expand(epoch_key, &stream_key_info(record_type, seq), 32)
            .try_into()
            .unwrap()
    }

    /// Nonce of chunk `index`: `3 zero bytes || u64 index || u8 last` (§8.5).
    pub fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    /// `u8 last || u24 len || AEAD(stream key, chunk_nonce, ad, plaintext)` (§8.5).
    pub fn chunk(
        suite: u16,
        stream_key: &[u8; 32],
        index: u64,
        last: bool,
        ad: &[u8],
        pt: &[u8],
    ) -> Vec<u8> {
        assert!(pt.len() <= MAX_CHUNK_LEN && (last || !pt.is_empty()));
        let mut out = vec![u8::from(last)];
        out.extend_from_slice(&(pt.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&aead_seal(
            suite,
            stream_key,
            &chunk_nonce(index, last),
            ad,
            pt,
        ));
        out
    }

    /// How many bytes the chunk at the start of `buf` takes: `Ok(None)` when `buf` ends
    /// first, `Err` for a last flag other than 0 or 1, a length over 64 KiB or an empty
    /// chunk that is not the last.
    pub fn chunk_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
        let Some(h) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        if h[0] > 1 || len > MAX_CHUNK_LEN || (len == 0 && h[0] == 0) {
            return Err("malformed");
        }
        let n = 4 + len + 16;
        Ok((buf.len() >= n).then_some(n))
    }

    /// RFC 9000 §16 variable-length integer, as Binary HTTP (RFC 9292) uses it.
    pub fn varint(v: u64) -> Vec<u8> {
        match v {
            0..=63 => vec![v as u8],
            64..=16_383 => ((v as u16) | 0x4000).to_be_bytes().to_vec(),
            16_384..=1_073_741_823 => ((v as u32) | 0x8000_0000).to_be_bytes().to_vec(),
            _ => (v | 0xc000_0000_0000_0000).to_be_bytes().to_vec(),
        }
    }

    /// A length-prefixed Binary HTTP field: `varint(len) || bytes`.
    pub fn bhttp_bytes(b: &[u8]) -> Vec<u8> {
        [varint(b.len() as u64), b.to_vec()].concat()
    }

    /// A field section of the indeterminate-length form: each line `name || value`,
    /// then a zero length (RFC 9292 §3.6).
    pub fn bhttp_fields(fields: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            out.extend_from_slice(&bhttp_bytes(n.as_bytes()));
            out.extend_from_slice(&bhttp_bytes(v.as_bytes()));
        }
        out.push(0);
        out
    }

    fn noise_nonce(n: u64) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[4..].copy_from_slice(&n.to_be_bytes());
        out
    }

    /// Everything a Noise NK run produces.
    pub struct Nk {
        pub h_init: [u8; 32],
        pub h_prologue: [u8; 32],
        pub h_pre_message: [u8; 32],
        pub h_msg1_e: [u8; 32],
        pub dh_es: [u8; 32],
        pub ck_es: [u8; 32],
        pub k_es: [u8; 32],
        pub h_msg1: [u8; 32],
        pub h_msg2_e: [u8; 32],
        pub dh_ee: [u8; 32],
        pub ck_ee: [u8; 32],
        pub k_ee: [u8; 32],
        pub h: [u8; 32],
        pub k1: [u8; 32],
        pub k2: [u8; 32],
        pub msg1: Vec<u8>,
        pub msg2: Vec<u8>,
    }

    /// Runs Noise_NK_25519_AESGCM_SHA256 from the initiator's point of view (it knows
    /// `rs`, the responder's static public key, and both ephemeral secrets are fixed).
    pub fn noise_nk(
        prologue: &[u8],
        rs: &[u8; 32],
        e_client: &[u8; 32],
        e_server: &[u8; 32],
        payload1: &[u8],
        payload2: &[u8],
    ) -> Nk {
        let mut h_init = [0u8; 32];
        h_init[..NOISE_NAME.len()].copy_from_slice(NOISE_NAME);
        let ck = h_init;
        let h_prologue = sha256(&[&h_init, prologue]);
        let h_pre_message = sha256(&[&h_prologue, rs]);
        // -> e, es
        let ec_pub = x25519_public(e_client);
        let h_msg1_e = sha256(&[&h_pre_message, &ec_pub]);
        let dh_es = x25519(e_client, rs);
        let (ck_es, k_es) = noise_hkdf(&ck, &dh_es);
        let c1 = aes_gcm_seal(&k_es, &noise_nonce(0), &h_msg1_e, payload1);
        let h_msg1 = sha256(&[&h_msg1_e, &c1]);
        let msg1 = [ec_pub.as_slice(), &c1].concat();
        // <- e, ee
        let es_pub = x25519_public(e_server);
        let h_msg2_e = sha256(&[&h_msg1, &es_pub]);
        let dh_ee = x25519(e_client, &es_pub);
        let (ck_ee, k_ee) = noise_hkdf(&ck_es, &dh_ee);
        let c2 = aes_gcm_seal(&k_ee, &noise_nonce(0), &h_msg2_e, payload2);
        let h = sha256(&[&h_msg2_e, &c2]);
        let msg2 = [es_pub.as_slice(), &c2].concat();
        let (k1, k2) = noise_hkdf(&ck_ee, &[]);
        Nk {
            h_init,
            h_prologue,
            h_pre_message,
            h_msg1_e,
            dh_es,
            ck_es,
            k_es,
            h_msg1,
            h_msg2_e,
            dh_ee,
            ck_ee,
            k_ee,
            h,
            k1,
            k2,
            msg1,
            msg2,
        }
    }

    pub struct Schedule {
        pub prk: [u8; 32],
        pub c2s_key: [u8; 32],
        pub c2s_iv: [u8; 12],
        pub s2c_key: [u8; 32],
        pub s2c_iv: [u8; 12],
        pub finished_key: [u8; 32],
        pub client_finished: [u8; 32],
        pub refusal_key: [u8; 32],
    }

    pub const FINISHED_LABEL: &[u8] = b"sessioncert/1 client finished";
    pub const REKEY_LABEL: &[u8] = b"sessioncert/1 rekey";
    pub const REFUSAL_LABEL: &[u8] = b"sessioncert/1 refusal";

    pub fn schedule(h: &[u8; 32], k1: &[u8; 32], k2: &[u8; 32]) -> Schedule {
        let prk = hkdf_extract(h, &[k1.as_slice(), k2].concat());
        let e32 = |l: &[u8]| -> [u8; 32] { hkdf_expand(&prk, l, 32).try_into().unwrap() };
        let e12 = |l: &[u8]| -> [u8; 12] { hkdf_expand(&prk, l, 12).try_into().unwrap() };
        let finished_key = e32(FINISHED_LABEL);
        Schedule {
            prk,
            c2s_key: e32(b"sessioncert/1 c2s key"),
            c2s_iv: e12(b"sessioncert/1 c2s iv"),
            s2c_key: e32(b"sessioncert/1 s2c key"),
            s2c_iv: e12(b"sessioncert/1 s2c iv"),
            finished_key,
            client_finished: hmac(&finished_key, &[FINISHED_LABEL, h]),
            refusal_key: e32(REFUSAL_LABEL),
        }
    }

    /// `bytes16(x) = u16 len(x) || x`.
    pub fn bytes16(x: &[u8]) -> Vec<u8> {
        let mut out = (x.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(x);
        out
    }

    /// `ServerHello = 0x02 || bytes16(noise_msg2) || bytes16(ticket)` (§6.5).
    pub fn server_hello(noise_msg2: &[u8], ticket: &[u8]) -> Vec<u8> {
        [&[0x02u8][..], &bytes16(noise_msg2), &bytes16(ticket)].concat()
    }

    /// `ClientHello = header || bytes16(noise_msg1)` (§6.1).
    pub fn client_hello(header: &[u8], noise_msg1: &[u8]) -> Vec<u8> {
        [header, &bytes16(noise_msg1)].concat()
    }

    /// Extension type `streamed_records` (§6.4); its data is empty.
    pub const EXT_STREAMED_RECORDS: u16 = 0x0001;

    /// `extensions = bytes16(entries)`, each entry `u16 type || bytes16(data)` (§6.4).
    pub fn extensions(list: &[(u16, &[u8])]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (ty, data) in list {
            entries.extend_from_slice(&ty.to_be_bytes());
            entries.extend_from_slice(&bytes16(data));
        }
        bytes16(&entries)
    }

    /// The extensions of a payload that is exactly one extension list (the msg1 payload,
    /// or what follows the fixed ServerHello fields): whether `streamed_records` is in
    /// it, or `Err("malformed")` when the list is cut, overruns, repeats a type, carries
    /// data on `streamed_records` or is followed by anything. Unknown types are skipped.
    pub fn read_extensions(payload: &[u8]) -> Result<bool, &'static str> {
        const BAD: &str = "malformed";
        let u16_at = |b: &[u8], i: usize| -> Option<usize> {
            Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
        };
        let len = u16_at(payload, 0).ok_or(BAD)?;
        let list = payload.get(2..).ok_or(BAD)?;
        if list.len() != len {
            return Err(BAD);
        }
        let (mut at, mut seen, mut streams) = (0usize, Vec::new(), false);
        while at < list.len() {
            let ty = u16_at(list, at).ok_or(BAD)? as u16;
            let dlen = u16_at(list, at + 2).ok_or(BAD)?;
            let data = list.get(at + 4..at + 4 + dlen).ok_or(BAD)?;
            if seen.contains(&ty) || (ty == EXT_STREAMED_RECORDS && !data.is_empty()) {
                return Err(BAD);
            }
            seen.push(ty);
            streams |= ty == EXT_STREAMED_RECORDS;
            at += 4 + dlen;
        }
        Ok(streams)
    }

    /// The ServerHello payload (§6.5): `u16 version || u16 suite || session_id[16] ||
    /// u64 expires_at_ms || u64 idle_timeout_ms || extensions`.
    pub fn server_hello_payload(
        version: u16,
        suite: u16,
        session_id: &[u8; 16],
        expires_at_ms: u64,
        idle_timeout_ms: u64,
        extensions: &[u8],
    ) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&suite.to_be_bytes());
        out.extend_from_slice(session_id);
        out.extend_from_slice(&expires_at_ms.to_be_bytes());
        out.extend_from_slice(&idle_timeout_ms.to_be_bytes());
        out.extend_from_slice(extensions);
        out
    }

    /// What the server answers to an offer (§6.4): `streamed_records` iff offered and
    /// accepted by its policy.
    pub fn answer_extensions(offered: bool, accepts: bool) -> Vec<u8> {
        if offered && accepts {
            extensions(&[(EXT_STREAMED_RECORDS, &[])])
        } else {
            extensions(&[])
        }
    }

    /// `confirmation = bytes16(ticket) || client_finished[32]` (§6.8).
    pub fn confirmation(ticket: &[u8], client_finished: &[u8; 32]) -> Vec<u8> {
        [bytes16(ticket), client_finished.to_vec()].concat()
    }

    /// The input of a refusal tag (§14.1):
    /// `"sessioncert/1 refusal" || session_id[16] || u64 seq || u8 len || code`.
    pub fn refusal_tag_input(session_id: &[u8; 16], seq: u64, code: &str) -> Vec<u8> {
        let mut m = REFUSAL_LABEL.to_vec();
        m.extend_from_slice(session_id);
        m.extend_from_slice(&seq.to_be_bytes());
        m.push(code.len() as u8);
        m.extend_from_slice(code.as_bytes());
        m
    }

    /// `HMAC-SHA256(refusal_key, refusal_tag_input)`.
    pub fn refusal_tag(
        refusal_key: &[u8; 32],
        session_id: &[u8; 16],
        seq: u64,
        code: &str,
    ) -> [u8; 32] {
        hmac(refusal_key, &[&refusal_tag_input(session_id, seq, code)])
    }

    /// Whether the replay window with this encoding (§9: `u64 top || 16 × u64 word`) would
    /// accept `seq`, i.e. `seq` was never accepted and is not below the window.
    pub fn window_accepts(state: &[u8], seq: u64) -> bool {
        assert_eq!(state.len(), 8 + 16 * 8);
        let top = u64::from_be_bytes(state[..8].try_into().unwrap());
        if top == 0 || seq >= top {
            return true;
        }
        if seq + 1024 < top {
            return false; // below the window: top - 1024 is the oldest number inside
        }
        let i = (seq % 1024) as usize;
        let at = 8 + (i / 64) * 8;
        let word = u64::from_be_bytes(state[at..at + 8].try_into().unwrap());
        word & (1 << (i % 64)) == 0
    }

    /// The freshness rule of §5.3 (rule 5).
    pub fn config_fresh(issued_at_ms: u64, expires_at_ms: u64, now_ms: u64) -> bool {
        const SKEW: u64 = 300_000;
        const VALIDITY: u64 = 604_800_000;
        issued_at_ms < expires_at_ms
            && expires_at_ms - issued_at_ms <= VALIDITY
            && issued_at_ms <= now_ms + SKEW
            && now_ms <= expires_at_ms + SKEW
    }

    /// `key[e+1] = HKDF-Expand(key[e], "sessioncert/1 rekey", 32)`.
    pub fn ratchet(key: &[u8; 32]) -> [u8; 32] {
        hkdf_expand(key, REKEY_LABEL, 32).try_into().unwrap()
    }

    /// The key of epoch `epoch` given the epoch-0 key.
    pub fn epoch_key(key0: &[u8; 32], epoch: u64) -> [u8; 32] {
        let mut k = *key0;
        for _ in 0..epoch {
            k = ratchet(&k);
        }
        k
    }

    pub fn nonce(iv: &[u8; 12], seq: u64) -> [u8; 12] {
        let mut n = *iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    fn b32(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }

    /// The header-mode fields of a request AD (§8.2).
    pub struct Line<'a> {
        pub method: &'a str,
        pub target: &'a str,
        pub path: &'a str,
        pub query: &'a str,
        pub content_type: &'a str,
        /// `(name, value)` in `sessioncert-covered` order; at most 16.
        pub covered: &'a [(String, String)],
    }

    /// Most covered headers a request may bind (§8.2: `covered_count` is 0..16).
    pub const MAX_COVERED: usize = 16;

    /// Request AD; `line` is `Some` in header mode (type 0x01) only:
    ///
    /// ```text
    /// "sessioncert/1 request" || u8 type || session_id[16] || u64 seq
    /// -- header mode:
    /// || bytes32(method) || bytes32(target) || bytes32(path) || bytes32(query)
    /// || bytes32(content_type) || u8 covered_count
    /// || covered_count × (bytes32(name) || bytes32(value))
    /// ```
    pub fn request_ad(
        record_type: u8,
        session_id: &[u8; 16],
        seq: u64,
        line: Option<&Line<'_>>,
    ) -> Vec<u8> {
        let mut ad = b"sessioncert/1 request".to_vec();
        ad.push(record_type);
        ad.extend_from_slice(session_id);
        ad.extend_from_slice(&seq.to_be_bytes());
        if let Some(l) = line {
            for f in [l.method, l.target, l.path, l.query, l.content_type] {
                b32(&mut ad, f.as_bytes());
            }
            assert!(l.covered.len() <= MAX_COVERED, "at most 16 covered headers");
            ad.push(l.covered.len() as u8);
            for (name, value) in l.covered {
                b32(&mut ad, name.as_bytes());
                b32(&mut ad, value.as_bytes());
            }
        }
        ad
    }

    /// Response AD; `status` = Some((status, content_type)) in header mode.
    pub fn response_ad(
        record_type: u8,
        session_id: &[u8; 16],
        seq: u64,
        request_tag: &[u8; 16],
        status: Option<(u16, &str)>,
    ) -> Vec<u8> {
        let mut ad = b"sessioncert/1 response".to_vec();
        ad.push(record_type);
        ad.extend_from_slice(session_id);
        ad.extend_from_slice(&seq.to_be_bytes());
        ad.extend_from_slice(request_tag);
        if let Some((s, c)) = status {
            ad.extend_from_slice(&s.to_be_bytes());
            b32(&mut ad, c.as_bytes());
        }
        ad
    }

    /// `type || seq || AEAD(key, iv XOR seq, ad, plaintext)`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        suite: u16,
        key: &[u8; 32],
        iv: &[u8; 12],
        record_type: u8,
        seq: u64,
        ad: &[u8],
        pt: &[u8],
    ) -> Vec<u8> {
        let mut out = vec![record_type];
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&aead_seal(suite, key, &nonce(iv, seq), ad, pt));
        out
    }

    /// One direction's keys in a session export.
    pub fn direction_export(
        epoch: u64,
        current: &[u8; 32],
        previous: Option<&[u8; 32]>,
        iv: &[u8; 12],
    ) -> Vec<u8> {
        let mut out = epoch.to_be_bytes().to_vec();
        out.extend_from_slice(current);
        match previous {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p);
            }
            None => out.push(0),
        }
        out.extend_from_slice(iv);
        out
    }

    /// Export flag bit 0: the session negotiated streamed records.
    pub const EXPORT_FLAG_STREAMS: u8 = 0x01;

    /// The export head (format 2): magic, format, role, version, suite, flags, session id.
    pub fn export_head(
        role: u8,
        version: u16,
        suite: u16,
        streams: bool,
        session_id: &[u8; 16],
    ) -> Vec<u8> {
        let mut out = b"SCSX".to_vec();
        out.push(2);
        out.push(role);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&suite.to_be_bytes());
        out.push(if streams { EXPORT_FLAG_STREAMS } else { 0 });
        out.extend_from_slice(session_id);
        out
    }

    /// The same session exported in format 1 (no flags byte, so no streams), as
    /// versions before streamed records wrote it.
    pub fn export_as_format_1(format_2: &[u8]) -> Vec<u8> {
        assert_eq!(format_2.get(4), Some(&2));
        [&b"SCSX\x01"[..], &format_2[5..10], &format_2[11..]].concat()
    }

    /// The replay window's encoding given every sequence number ever accepted.
    pub fn window_state(accepted: &[u64]) -> Vec<u8> {
        let top = accepted.iter().max().map_or(0, |m| m + 1);
        let mut words = [0u64; 16];
        for &s in accepted {
            if top - s <= 1024 {
                let i = (s % 1024) as usize;
                words[i / 64] |= 1 << (i % 64);
            }
        }
        let mut out = top.to_be_bytes().to_vec();
        for w in words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// key-config.json
// ---------------------------------------------------------------------------------------

fn identity_v(seed: &[u8; 32]) -> IdentityV {
    let id = IdentityKey::from_seed(seed);
    IdentityV {
        seed: hx(seed),
        public: hx(&id.pin().0),
        pin: id.pin().to_string(),
    }
}

fn handshake_key_v(k: &HandshakeKeyPair) -> HandshakeKeyV {
    HandshakeKeyV {
        key_id: k.key_id,
        hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
        secret: hx(k.secret()),
        public: hx(k.public()),
        not_before_ms: k.not_before_ms,
        not_after_ms: k.not_after_ms,
    }
}

/// Runs what a client does with served config bytes.
pub fn decode_and_verify(
    bytes: &[u8],
    trust: Trust,
    now_ms: u64,
) -> Result<VerifiedKeyConfig, ProtocolError> {
    SignedKeyConfig::decode(bytes)?.verify(&trust, now_ms)
}

/// Signs `config` with the Ed25519 key of `seed` directly (no check that it names it).
fn raw_sign(seed: &[u8; 32], config: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    let sk = ed25519_dalek::SigningKey::from_bytes(seed);
    let msg = [sessioncert_proto::config::CONFIG_SIGNING_LABEL, config].concat();
    sk.sign(&msg).to_bytes()
}

/// The Ed25519 group order L, little-endian (RFC 8032 §5.1).
pub const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// `a + b` for 256-bit little-endian integers (no overflow for the values used here).
pub fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let t = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = t as u8;
        carry = t >> 8;
    }
    assert_eq!(carry, 0, "256-bit overflow");
    out
}

/// The encoding of the Ed25519 identity point (0, 1): y = 1, sign bit 0.
pub fn ed25519_identity_encoding() -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
}

fn gen_key_config() -> KeyConfigFile {
    let id = IdentityKey::from_seed(&identity_seed());
    let other = IdentityKey::from_seed(&other_identity_seed());
    let cfg = key_config();
    let signed = cfg.sign(&id).unwrap();
    let served = signed.encode();
    let signing_input = [
        sessioncert_proto::config::CONFIG_SIGNING_LABEL,
        &signed.config,
    ]
    .concat();
    let pin = id.pin().to_string();

    // Independent checks of the signature and the served layout.
    assert_eq!(raw_sign(&identity_seed(), &signed.config), signed.signature);
    assert_eq!(&served[..2], &[0, 1]);
    assert_eq!(&served[2..66], &signed.signature);
    assert_eq!(&served[66..], &signed.config[..]);

    let mut current_key = Vec::new();
    for now in [
        NOW_MS - 40 * DAY,
        KEY1_NOT_BEFORE,
        NOW_MS - 20 * DAY,
        NOW_MS - 3 * DAY,
        NOW_MS,
        KEY2_NOT_AFTER,
        KEY2_NOT_AFTER + 1,
    ] {
        current_key.push(CurrentKeyV {
            now_ms: now,
            key_id: cfg.current_key(now).map(|k| k.key_id),
        });
    }

    // A config of another identity, signed by it (fine under trust-on-first-use).
    let mut other_cfg = key_config();
    other_cfg.identity = other.pin();
    let other_served = other_cfg.sign(&other).unwrap().encode();

    // The same keys as the server re-signed them at other times (a configuration is
    // valid for 24 h only, so a client at another clock needs one signed near it).
    let served_at = |issued: u64| key_config_issued_at(issued).sign(&id).unwrap().encode();
    let expires = cfg.expires_at_ms;

    let mut verify_ok = Vec::new();
    for (name, bytes, trust, now) in [
        ("pinned", served.clone(), pin.clone(), NOW_MS),
        ("first_use", served.clone(), "first_use".to_owned(), NOW_MS),
        (
            "pinned_any_of_two",
            served.clone(),
            format!("{},{pin}", other.pin()),
            NOW_MS,
        ),
        (
            "pinned_only_key1_valid",
            served_at(NOW_MS - 20 * DAY - HOUR),
            pin.clone(),
            NOW_MS - 20 * DAY,
        ),
        (
            "first_use_accepts_another_identity",
            other_served.clone(),
            "first_use".to_owned(),
            NOW_MS,
        ),
        (
            "fresh_at_expiry_plus_skew",
            served.clone(),
            pin.clone(),
            expires + MAX_CLOCK_SKEW_MS,
        ),
        (
            "fresh_at_issue_minus_skew",
            served.clone(),
            pin.clone(),
            ISSUED_AT - MAX_CLOCK_SKEW_MS,
        ),
        (
            "validity_exactly_7_days",
            {
                let mut c = key_config();
                c.expires_at_ms = c.issued_at_ms + MAX_CONFIG_VALIDITY_MS;
                c.sign(&id).unwrap().encode()
            },
            pin.clone(),
            NOW_MS,
        ),
    ] {
        let got = decode_and_verify(&bytes, parse_trust(&trust), now).unwrap();
        verify_ok.push(VerifyOkV {
            name: name.into(),
            signed_config: hx(&bytes),
            trust,
            now_ms: now,
            config_encoded: hx(&got.encode()),
        });
    }

    let mut fails: Vec<(&str, &str, Vec<u8>, String, u64)> = Vec::new();
    fails.push((
        "wrong_pin",
        "A correctly signed configuration of our identity, checked against another pin.",
        served.clone(),
        other.pin().to_string(),
        NOW_MS,
    ));
    fails.push((
        "wrong_pins",
        "A correctly signed configuration of our identity, checked against a set of two other pins.",
        served.clone(),
        format!(
            "{},{}",
            other.pin(),
            IdentityKey::from_seed(&[0x77; 32]).pin()
        ),
        NOW_MS,
    ));
    fails.push((
        "other_identity_under_our_pin",
        "Another identity's correctly self-signed configuration, checked against our pin.",
        other_served.clone(),
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "flipped_signature_byte",
        "The first signature byte XOR 0x01.",
        flip(&served, 2),
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "flipped_config_byte",
        "The last config byte (inside key 2's not_after) XOR 0x01.",
        flip_last(&served),
        pin.clone(),
        NOW_MS,
    ));
    {
        let mut stripped = key_config();
        stripped.record_suites = vec![Suite::ChaCha20Poly1305.id()];
        let bytes = SignedKeyConfig {
            config: stripped.encode(),
            signature: signed.signature,
        }
        .encode();
        fails.push((
            "stripped_suite_old_signature",
            "AES-256-GCM removed from record_suites, original signature kept (downgrade).",
            bytes.clone(),
            pin.clone(),
            NOW_MS,
        ));
        fails.push((
            "stripped_suite_old_signature_first_use",
            "The same stripped configuration is refused under trust-on-first-use too.",
            bytes,
            "first_use".to_owned(),
            NOW_MS,
        ));
    }
    {
        let mut forged = key_config();
        forged.record_suites = vec![Suite::ChaCha20Poly1305.id()];
        let config = forged.encode();
        let signature = raw_sign(&other_identity_seed(), &config);
        fails.push((
            "names_our_identity_signed_by_another",
            "A configuration naming our identity, signed by another Ed25519 key.",
            SignedKeyConfig { config, signature }.encode(),
            "first_use".to_owned(),
            NOW_MS,
        ));
    }
    fails.push((
        "small_order_identity",
        "Strict Ed25519: identity = the encoding of the identity point (01 followed by 31 zero bytes, a point of small order), signature R = the same encoding and S = 0. A lax verifier accepts this for every message ([S]B = R + [k]A holds trivially); strict verification refuses a small-order A and R.",
        {
            let mut c = key_config();
            c.identity = Pin(ed25519_identity_encoding());
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&ed25519_identity_encoding());
            SignedKeyConfig {
                config: c.encode(),
                signature,
            }
            .encode()
        },
        "first_use".to_owned(),
        NOW_MS,
    ));
    fails.push((
        "non_canonical_s",
        "Strict Ed25519: the valid signature of signed_config with S replaced by S + L (little-endian, still 32 bytes). Equal to S modulo L, so a verifier that reduces S accepts it; S must be < L.",
        {
            let s: [u8; 32] = signed.signature[32..].try_into().unwrap();
            let mut signature = signed.signature;
            signature[32..].copy_from_slice(&add_le(&s, &ED25519_L));
            SignedKeyConfig {
                config: signed.config.clone(),
                signature,
            }
            .encode()
        },
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "stale_expired_beyond_skew",
        "Freshness: verified 1 ms after expires_at_ms + MAX_CLOCK_SKEW (5 min); handshake key 2 is still valid then.",
        served.clone(),
        pin.clone(),
        expires + MAX_CLOCK_SKEW_MS + 1,
    ));
    fails.push((
        "stale_issued_in_future_beyond_skew",
        "Freshness: verified 1 ms before issued_at_ms - MAX_CLOCK_SKEW (a client clock behind by more than the skew, or a configuration dated ahead); handshake key 2 is valid then.",
        served.clone(),
        pin.clone(),
        ISSUED_AT - MAX_CLOCK_SKEW_MS - 1,
    ));
    fails.push((
        "stale_validity_over_7_days",
        "Freshness: correctly signed, expires_at_ms = issued_at_ms + 7 days + 1 ms, longer than MAX_CONFIG_VALIDITY.",
        {
            let mut c = key_config();
            c.expires_at_ms = c.issued_at_ms + MAX_CONFIG_VALIDITY_MS + 1;
            c.sign(&id).unwrap().encode()
        },
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "stale_expires_at_issue",
        "Freshness: correctly signed, expires_at_ms = issued_at_ms (it must be later).",
        {
            let mut c = key_config();
            c.expires_at_ms = c.issued_at_ms;
            c.sign(&id).unwrap().encode()
        },
        pin.clone(),
        ISSUED_AT,
    ));
    fails.push((
        "stale_expires_before_issue",
        "Freshness: correctly signed, expires_at_ms = issued_at_ms - 1 ms (now is within the skew of both).",
        {
            let mut c = key_config();
            c.expires_at_ms = c.issued_at_ms - 1;
            c.sign(&id).unwrap().encode()
        },
        pin.clone(),
        ISSUED_AT,
    ));
    fails.push((
        "expired",
        "No current key: the configuration re-signed at 2026-02-28T23:00Z (fresh) and verified at 2026-03-01, after every key's not_after.",
        served_at(NOW_MS + 59 * DAY - HOUR),
        pin.clone(),
        NOW_MS + 59 * DAY,
    ));
    fails.push((
        "not_yet_valid",
        "No current key: the configuration re-signed at 2025-11-21T23:00Z (fresh) and verified at 2025-11-22, before every key's not_before.",
        served_at(NOW_MS - 40 * DAY - HOUR),
        pin.clone(),
        NOW_MS - 40 * DAY,
    ));
    {
        let mut only_unknown = key_config();
        for k in &mut only_unknown.keys {
            k.hs_suite = 0x0002;
        }
        fails.push((
            "only_unknown_handshake_suites",
            "Correctly signed, but every key is for handshake suite 0x0002, which this version does not speak: no usable key.",
            only_unknown.sign(&id).unwrap().encode(),
            pin.clone(),
            NOW_MS,
        ));
    }
    {
        let mut t = served.clone();
        t.push(0);
        fails.push((
            "trailing_byte",
            "One 0x00 byte appended to the served bytes (the config encoding must be consumed exactly).",
            t,
            pin.clone(),
            NOW_MS,
        ));
    }
    fails.push((
        "truncated",
        "The last byte removed.",
        served[..served.len() - 1].to_vec(),
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "unknown_signature_algorithm",
        "sig_alg 0x0002 instead of 0x0001.",
        {
            let mut t = served.clone();
            t[1] = 2;
            t
        },
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "bad_magic",
        "Config magic \"SCKD\" instead of \"SCKC\" (re-signed, so only the parse fails).",
        {
            let mut c = cfg.encode();
            c[3] = b'D';
            let signature = raw_sign(&identity_seed(), &c);
            SignedKeyConfig {
                config: c,
                signature,
            }
            .encode()
        },
        pin.clone(),
        NOW_MS,
    ));
    fails.push((
        "signature_only",
        "Only sig_alg and the signature, no config.",
        served[..66].to_vec(),
        pin.clone(),
        NOW_MS,
    ));

    let verify_fail = fails
        .into_iter()
        .map(|(name, description, bytes, trust, now)| {
            let err = decode_and_verify(&bytes, parse_trust(&trust), now).expect_err(name);
            VerifyFailV {
                name: name.into(),
                description: description.into(),
                signed_config: hx(&bytes),
                trust,
                now_ms: now,
                error: code(&err),
            }
        })
        .collect();

    let mut invalid_pins = Vec::new();
    let pin_b64 = pin.strip_prefix("ed25519:").unwrap().to_owned();
    for (text, reason) in [
        (format!("x25519:{pin_b64}"), "wrong prefix"),
        (
            format!("ed25519:{pin_b64}A"),
            "33 bytes after decoding / bad length",
        ),
        (format!("ed25519:{}", &pin_b64[..42]), "too short"),
        (format!("ed25519:{}=", pin_b64), "padding is not allowed"),
        (
            format!("ed25519:{}", pin_b64.replace(['-', '_'], "+")),
            "standard base64 alphabet instead of base64url (only if the pin contains - or _)",
        ),
        ("ed25519:".to_owned(), "empty key"),
    ] {
        if text.parse::<Pin>().is_err() {
            invalid_pins.push(InvalidPinV {
                text,
                reason: reason.into(),
            });
        }
    }

    KeyConfigFile {
        description: lines(&[
            "sessioncert key configuration vectors (docs/PROTOCOL.md §4-5). All byte strings are lower-case hex.",
            "signed_config is what GET /.well-known/sessioncert/config serves: u16 sig_alg (1 = Ed25519) || signature[64] || config_encoded.",
            "signing_input = signing_label (with its trailing 0x00) || config_encoded; signature = Ed25519(identity seed, signing_input).",
            "trust is either pin texts separated by commas (accept only those identities: one pin, or the current and next pin while an identity is rotated) or \"first_use\" (accept any identity that signs the config).",
            "verify = decode signed_config, check the pin, check the signature (strict Ed25519: S < L, A and R not of small order, cofactorless equation), require the configuration to be fresh at now_ms, require a usable handshake key at now_ms; error is the ErrorCode wire name.",
            "fresh at now: issued_at_ms < expires_at_ms, expires_at_ms - issued_at_ms <= max_config_validity_ms, issued_at_ms <= now + max_clock_skew_ms and now <= expires_at_ms + max_clock_skew_ms.",
            "current_key: the key a client uses at now_ms (valid, suite 1, 32-byte key; newest not_before wins; null = none).",
        ]),
        signing_label: String::from_utf8_lossy(sessioncert_proto::config::CONFIG_SIGNING_LABEL)
            .into_owned(),
        max_clock_skew_ms: MAX_CLOCK_SKEW_MS,
        max_config_validity_ms: MAX_CONFIG_VALIDITY_MS,
        identity: identity_v(&identity_seed()),
        other_identity: identity_v(&other_identity_seed()),
        handshake_keys: server_keys().iter().map(handshake_key_v).collect(),
        config: ConfigV::of(&cfg),
        config_encoded: hx(&cfg.encode()),
        signing_input: hx(&signing_input),
        signature: hx(&signed.signature),
        signed_config: hx(&served),
        current_key,
        verify_ok,
        verify_fail,
        invalid_pins,
    }
}

// ---------------------------------------------------------------------------------------
// handshake.json
// ---------------------------------------------------------------------------------------

struct CaseInput {
    name: &'static str,
    suite: Suite,
    offer: ClientOffer,
    policy: ServerPolicy,
    client_e: [u8; 32],
    server_e: [u8; 32],
    session_id: SessionId,
    ticket: Vec<u8>,
}

/// A fixed 48-byte ticket counting up from `start`. A real server seals its pending
/// state into the ticket (PROTOCOL.md §6.5); to the client it is opaque.
fn ticket(start: u8) -> Vec<u8> {
    (0..48u8).map(|i| start.wrapping_add(i)).collect()
}

fn case_inputs() -> Vec<CaseInput> {
    vec![
        CaseInput {
            name: "aes-256-gcm",
            suite: Suite::Aes256Gcm,
            offer: ClientOffer {
                versions: vec![VERSION_1],
                suites: vec![Suite::Aes256Gcm, Suite::ChaCha20Poly1305],
                streams: true,
            },
            policy: ServerPolicy::default(),
            client_e: pattern(0x60),
            server_e: pattern(0x80),
            session_id: sid(0xa0),
            ticket: ticket(0xd0),
        },
        CaseInput {
            name: "chacha20-poly1305",
            suite: Suite::ChaCha20Poly1305,
            offer: ClientOffer {
                versions: vec![VERSION_1],
                suites: vec![Suite::ChaCha20Poly1305, Suite::Aes256Gcm],
                streams: true,
            },
            policy: ServerPolicy::default(),
            client_e: pattern(0x70),
            server_e: pattern(0x90),
            session_id: sid(0xb0),
            ticket: ticket(0x30),
        },
        CaseInput {
            name: NO_STREAMS_OFFERED,
            suite: Suite::Aes256Gcm,
            offer: ClientOffer {
                versions: vec![VERSION_1],
                suites: vec![Suite::Aes256Gcm],
                streams: false,
            },
            policy: ServerPolicy::default(),
            client_e: pattern(0x64),
            server_e: pattern(0x84),
            session_id: sid(0xc0),
            ticket: ticket(0x50),
        },
        CaseInput {
            name: STREAMS_REFUSED,
            suite: Suite::Aes256Gcm,
            offer: ClientOffer {
                versions: vec![VERSION_1],
                suites: vec![Suite::Aes256Gcm],
                streams: true,
            },
            policy: ServerPolicy {
                streams: false,
                ..ServerPolicy::default()
            },
            client_e: pattern(0x68),
            server_e: pattern(0x88),
            session_id: sid(0xc8),
            ticket: ticket(0x70),
        },
    ]
}

/// The handshake case whose client does not offer `streamed_records`.
pub const NO_STREAMS_OFFERED: &str = "aes-256-gcm-no-streams-offered";
/// The handshake case whose server does not accept `streamed_records`.
pub const STREAMS_REFUSED: &str = "aes-256-gcm-streams-refused";
/// The handshake cases that negotiate streams, one per record suite; records.json and
/// streams.json start from their sessions.
pub const SUITE_CASES: [&str; 2] = ["aes-256-gcm", "chacha20-poly1305"];

/// A configuration in the only form a handshake starts from: signed with the vectors'
/// identity and verified at `NOW_MS` (the signature does not enter the client hello).
pub fn verified(config: &KeyConfig) -> VerifiedKeyConfig {
    let id = IdentityKey::from_seed(&identity_seed());
    config
        .sign(&id)
        .expect("sign")
        .verify(&Trust::Pin(id.pin()), NOW_MS)
        .expect("the vectors' configuration verifies")
}

/// Starts the client of a case again (the fixed ephemeral makes it deterministic).
pub fn restart_client(
    config: &VerifiedKeyConfig,
    offer: &OfferV,
    now_ms: u64,
    client_e: &[u8; 32],
) -> (ClientHandshake, Vec<u8>) {
    ClientHandshake::start_with_ephemeral_for_vectors(config, offer.to_offer(), now_ms, client_e)
        .expect("client start")
}

fn reference_header(versions: &[u16], key_id: u8, suites: &[u16]) -> Vec<u8> {
    let mut out = vec![0x01, versions.len() as u8];
    for v in versions {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&HS_NOISE_NK_25519_AESGCM_SHA256.to_be_bytes());
    out.push(key_id);
    out.push(suites.len() as u8);
    for s in suites {
        out.extend_from_slice(&s.to_be_bytes());
    }
    out
}

fn gen_handshake(kc: &KeyConfigFile) -> HandshakeFile {
    let cfg = verified(&KeyConfig::decode(&unhx(&kc.config_encoded)).unwrap());
    let keys = server_keys();
    let mut cases = Vec::new();
    let mut negative = Vec::new();
    let mut hellos = Vec::new();

    for ci in case_inputs() {
        let key = cfg.current_key(NOW_MS).unwrap().clone();
        let policy = &ci.policy;
        let offer_v = OfferV {
            versions: ci.offer.versions.clone(),
            suites: ci.offer.suites.iter().map(|s| s.id()).collect(),
            streams: ci.offer.streams,
        };
        let (ch, client_hello) = restart_client(&cfg, &offer_v, NOW_MS, &ci.client_e);
        let resp = respond_with_ephemeral_for_vectors(
            &keys,
            policy,
            &client_hello,
            ci.session_id,
            NOW_MS,
            &ci.server_e,
        )
        .unwrap();
        let server_hello = resp.server_hello(&ci.ticket).unwrap();
        let streams = ci.offer.streams && policy.streams;
        let (uc, sh) = ch.read_server_hello(&server_hello).unwrap();
        assert_eq!(sh, resp.hello);
        assert_eq!(sh.suite, ci.suite);
        let client_finished = *uc.client_finished();
        let confirmation = uc.confirmation().to_vec();
        let parsed = Confirmation::parse(&confirmation).unwrap();
        assert_eq!(parsed.ticket, &ci.ticket[..]);
        assert_eq!(parsed.client_finished, &client_finished);
        let pending_export = resp.pending.export().to_vec();
        let server = resp.pending.confirm(parsed.client_finished).unwrap();
        let unconfirmed = ClientSession::import(&uc.into_session().export()).unwrap();
        assert_eq!(unconfirmed.confirmation(), Some(&confirmation[..]));
        let client_export_unconfirmed = unconfirmed.export().to_vec();
        let mut client = unconfirmed;
        client.mark_confirmed();
        assert_eq!((client.streams(), server.streams()), (streams, streams));
        let client_export = client.export().to_vec();
        let server_export = server.export().to_vec();

        // The reference implementation must produce the same bytes.
        let (_, header_bytes, noise1) = parse_client_hello(&client_hello).unwrap();
        let header = reference_header(&offer_v.versions, key.key_id, &offer_v.suites);
        assert_eq!(header_bytes, &header[..]);
        let prologue = [reference::PROLOGUE_LABEL, &header].concat();
        let payload1 = if ci.offer.streams {
            reference::extensions(&[(reference::EXT_STREAMED_RECORDS, &[])])
        } else {
            reference::extensions(&[])
        };
        assert_eq!(reference::read_extensions(&payload1), Ok(ci.offer.streams));
        let payload2 = reference::server_hello_payload(
            sh.version,
            sh.suite.id(),
            ci.session_id.as_bytes(),
            NOW_MS + policy.lifetime_ms,
            policy.idle_timeout_ms,
            &reference::answer_extensions(ci.offer.streams, policy.streams),
        );
        assert_eq!(sh.streams, streams);
        let rs: [u8; 32] = key.public.clone().try_into().unwrap();
        let nk = reference::noise_nk(
            &prologue,
            &rs,
            &ci.client_e,
            &ci.server_e,
            &payload1,
            &payload2,
        );
        assert_eq!(noise1, &nk.msg1[..]);
        assert_eq!(client_hello, reference::client_hello(&header, &nk.msg1));
        assert_eq!(resp.noise_message, nk.msg2);
        assert_eq!(server_hello, reference::server_hello(&nk.msg2, &ci.ticket));
        let ks = reference::schedule(&nk.h, &nk.k1, &nk.k2);
        assert_eq!(client_finished, ks.client_finished);
        assert_eq!(
            confirmation,
            reference::confirmation(&ci.ticket, &ks.client_finished)
        );
        let sid_bytes = ci.session_id.as_bytes();
        let keys_part = [
            reference::direction_export(0, &ks.c2s_key, None, &ks.c2s_iv),
            reference::direction_export(0, &ks.s2c_key, None, &ks.s2c_iv),
            ks.refusal_key.to_vec(),
        ]
        .concat();
        let ref_client_export = |pending: &[u8]| {
            [
                reference::export_head(1, VERSION_1, ci.suite.id(), streams, sid_bytes),
                keys_part.clone(),
                0u64.to_be_bytes().to_vec(),
                reference::bytes16(pending),
            ]
            .concat()
        };
        assert_eq!(client_export_unconfirmed, ref_client_export(&confirmation));
        assert_eq!(client_export, ref_client_export(&[]));
        let ref_server_export = [
            reference::export_head(2, VERSION_1, ci.suite.id(), streams, sid_bytes),
            keys_part.clone(),
            reference::window_state(&[]),
        ]
        .concat();
        assert_eq!(server_export, ref_server_export);
        assert_eq!(
            pending_export,
            [ref_server_export, ks.client_finished.to_vec()].concat()
        );

        hellos.push((
            client_hello.clone(),
            server_hello.clone(),
            confirmation.clone(),
        ));
        cases.push(HandshakeCaseV {
            name: ci.name.into(),
            suite: ci.suite.id(),
            now_ms: NOW_MS,
            offer: offer_v,
            policy: PolicyV::of(policy),
            key_id: key.key_id,
            server_static_public: hx(&key.public),
            client_ephemeral_secret: hx(&ci.client_e),
            client_ephemeral_public: hx(&reference::x25519_public(&ci.client_e)),
            server_ephemeral_secret: hx(&ci.server_e),
            server_ephemeral_public: hx(&reference::x25519_public(&ci.server_e)),
            session_id: hx(sid_bytes),
            session_id_text: ci.session_id.to_string(),
            client_hello_header: hx(&header),
            prologue: hx(&prologue),
            msg1_payload: hx(&payload1),
            noise_msg1: hx(&nk.msg1),
            client_hello: hx(&client_hello),
            server_hello_fields: ServerHelloV {
                version: sh.version,
                suite: sh.suite.id(),
                session_id: hx(sh.session_id.as_bytes()),
                expires_at_ms: sh.expires_at_ms,
                idle_timeout_ms: sh.idle_timeout_ms,
                streams: sh.streams,
            },
            msg2_payload: hx(&payload2),
            noise_msg2: hx(&nk.msg2),
            ticket: hx(&ci.ticket),
            server_hello: hx(&server_hello),
            noise: NoiseTraceV {
                h_init: hx(&nk.h_init),
                h_prologue: hx(&nk.h_prologue),
                h_pre_message: hx(&nk.h_pre_message),
                h_msg1_e: hx(&nk.h_msg1_e),
                dh_es: hx(&nk.dh_es),
                ck_es: hx(&nk.ck_es),
                k_es: hx(&nk.k_es),
                h_msg1: hx(&nk.h_msg1),
                h_msg2_e: hx(&nk.h_msg2_e),
                dh_ee: hx(&nk.dh_ee),
                ck_ee: hx(&nk.ck_ee),
                k_ee: hx(&nk.k_ee),
                handshake_hash: hx(&nk.h),
                k1: hx(&nk.k1),
                k2: hx(&nk.k2),
            },
            keys: KeyScheduleV {
                prk: hx(&ks.prk),
                c2s_key: hx(&ks.c2s_key),
                c2s_iv: hx(&ks.c2s_iv),
                s2c_key: hx(&ks.s2c_key),
                s2c_iv: hx(&ks.s2c_iv),
                finished_key: hx(&ks.finished_key),
                refusal_key: hx(&ks.refusal_key),
                c2s_key_epoch1: hx(&reference::ratchet(&ks.c2s_key)),
                s2c_key_epoch1: hx(&reference::ratchet(&ks.s2c_key)),
            },
            client_finished: hx(&client_finished),
            confirmation: hx(&confirmation),
            confirmation_base64url: b64(&confirmation),
            client_export_unconfirmed: hx(&client_export_unconfirmed),
            client_export: hx(&client_export),
            server_pending_export: hx(&pending_export),
            server_export: hx(&server_export),
        });
    }

    // ---- negative cases -------------------------------------------------------------
    let aes = &cases[0];
    let (hello, server_hello, confirmation) = hellos[0].clone();
    let (chacha_hello, chacha_server_hello, chacha_confirmation) = hellos[1].clone();
    let aes_ticket = unhx(&aes.ticket);
    let finished: [u8; 32] = unhx_n(&aes.client_finished);
    let chacha_finished = &chacha_confirmation[chacha_confirmation.len() - 32..];
    // Layout of a server hello: 02 | u16 len | noise_msg2 | u16 len | ticket.
    let msg2_end = 3 + unhx(&aes.noise_msg2).len();
    assert_eq!(
        &server_hello[msg2_end..msg2_end + 2],
        &(aes_ticket.len() as u16).to_be_bytes()
    );
    let too_long_ticket = vec![0x5a; MAX_TICKET_LEN + 1];
    // Layout of the AES case's client hello: 01 | 01 0001 | 0001 | 02 | 02 0001 0002 | len | msg1
    assert_eq!(&hello[..12], &[1, 1, 0, 1, 0, 1, 2, 2, 0, 1, 0, 2]);
    let msg1_at = 14;
    let rewrite_header = |new_header: &[u8]| -> Vec<u8> { [new_header, &hello[12..]].concat() };

    let mut neg: Vec<(&str, String, &str, &str, Vec<u8>)> = Vec::new();
    let n =
        |name: &'static str, desc: &str, case: &'static str, op: &'static str, input: Vec<u8>| {
            (name, desc.to_owned(), case, op, input)
        };
    neg.push(n(
        "downgrade_strip_suite",
        "The offer [AES-256-GCM, ChaCha20-Poly1305] rewritten in flight to [ChaCha20-Poly1305]; msg1 untouched. The server would accept the header, but the prologue differs, so msg1's payload does not authenticate.",
        "aes-256-gcm",
        "respond",
        rewrite_header(&[1, 1, 0, 1, 0, 1, 2, 1, 0, 2]),
    ));
    neg.push(n(
        "downgrade_reorder_suites",
        "The offer reordered to [ChaCha20-Poly1305, AES-256-GCM] so the server would pick ChaCha20-Poly1305.",
        "aes-256-gcm",
        "respond",
        rewrite_header(&[1, 1, 0, 1, 0, 1, 2, 2, 0, 2, 0, 1]),
    ));
    neg.push(n(
        "tampered_version_list",
        "Version 0x0002 prepended to the offered versions (the server still picks 1, but the prologue differs).",
        "aes-256-gcm",
        "respond",
        rewrite_header(&[1, 2, 0, 2, 0, 1, 0, 1, 2, 2, 0, 1, 0, 2]),
    ));
    neg.push(n(
        "unknown_key_id",
        "key_id 9, which the server does not have.",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[6] = 9;
            h
        },
    ));
    neg.push(n(
        "expired_key_id",
        "key_id 1, whose validity ended the day before now_ms.",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[6] = 1;
            h
        },
    ));
    neg.push(n(
        "unsupported_version",
        "Only version 0x0009 offered.",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[3] = 9;
            h
        },
    ));
    neg.push(n(
        "unknown_handshake_suite",
        "hs_suite 0x0002.",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[5] = 2;
            h
        },
    ));
    neg.push(n(
        "no_common_record_suite",
        "Offered record suites [0x0003, 0x0004], which do not exist.",
        "aes-256-gcm",
        "respond",
        rewrite_header(&[1, 1, 0, 1, 0, 1, 2, 2, 0, 3, 0, 4]),
    ));
    neg.push(n(
        "wrong_message_type",
        "First byte 0x02 instead of 0x01.",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[0] = 2;
            h
        },
    ));
    neg.push(n(
        "client_hello_truncated",
        "The last byte removed.",
        "aes-256-gcm",
        "respond",
        hello[..hello.len() - 1].to_vec(),
    ));
    neg.push(n(
        "client_hello_trailing_byte",
        "One 0x00 byte appended.",
        "aes-256-gcm",
        "respond",
        [hello.as_slice(), &[0]].concat(),
    ));
    neg.push(n(
        "client_hello_too_large",
        "4097 bytes: a valid hello followed by zeros, over MAX_HANDSHAKE_LEN (4096).",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h.resize(4097, 0);
            h
        },
    ));
    neg.push(n(
        "flipped_client_ephemeral",
        "First byte of the client's ephemeral public key XOR 0x01.",
        "aes-256-gcm",
        "respond",
        flip(&hello, msg1_at),
    ));
    neg.push(n(
        "flipped_msg1_tag",
        "Last byte of msg1 (its AEAD tag) XOR 0x01.",
        "aes-256-gcm",
        "respond",
        flip_last(&hello),
    ));
    neg.push(n(
        "low_order_client_ephemeral",
        "The client's ephemeral public key replaced by 32 zero bytes (a low-order point: the DH result is all zero and is refused).",
        "aes-256-gcm",
        "respond",
        {
            let mut h = hello.clone();
            h[msg1_at..msg1_at + 32].fill(0);
            h
        },
    ));
    // A client that was given an impostor's key (same key id) instead of the server's,
    // and the impostor's answer to it.
    let impostor =
        HandshakeKeyPair::from_secret(2, &impostor_secret(), KEY2_NOT_BEFORE, KEY2_NOT_AFTER)
            .unwrap();
    let mut impostor_cfg = KeyConfig::clone(&cfg);
    impostor_cfg.keys[1].public = impostor.public().to_vec();
    let (_, impostor_hello) = restart_client(
        &verified(&impostor_cfg),
        &aes.offer,
        NOW_MS,
        &unhx_n(&aes.client_ephemeral_secret),
    );
    let impostor_resp = respond_with_ephemeral_for_vectors(
        &[impostor],
        &ServerPolicy::default(),
        &impostor_hello,
        SessionId(unhx_n(&aes.session_id)),
        NOW_MS,
        &unhx_n(&aes.server_ephemeral_secret),
    )
    .unwrap();
    neg.push(n(
        "hello_encrypted_to_another_key",
        "A client hello (same header, same ephemeral) made for an impostor's static key 2: the server cannot open msg1 (es differs).",
        "aes-256-gcm",
        "respond",
        impostor_hello,
    ));
    neg.push(n(
        "server_hello_from_impostor",
        "The impostor's server hello: made with the impostor's static key, it does not authenticate for a client that encrypted to the real key.",
        "aes-256-gcm",
        "read_server_hello",
        impostor_resp.server_hello(&aes_ticket).unwrap(),
    ));
    neg.push(n(
        "flipped_server_ephemeral",
        "First byte of the server's ephemeral public key XOR 0x01.",
        "aes-256-gcm",
        "read_server_hello",
        flip(&server_hello, 3),
    ));
    neg.push(n(
        "flipped_server_hello_ciphertext",
        "First byte of the encrypted ServerHello payload XOR 0x01 (e.g. an attacker changing the chosen suite or lifetime).",
        "aes-256-gcm",
        "read_server_hello",
        flip(&server_hello, 3 + 32),
    ));
    neg.push(n(
        "flipped_server_hello_tag",
        "Last byte of noise_msg2 (its AEAD tag, just before the ticket) XOR 0x01.",
        "aes-256-gcm",
        "read_server_hello",
        flip(&server_hello, msg2_end - 1),
    ));
    neg.push(n(
        "server_hello_of_another_handshake",
        "The server hello of the chacha20-poly1305 case (a splice across handshakes).",
        "aes-256-gcm",
        "read_server_hello",
        chacha_server_hello,
    ));
    neg.push(n(
        "server_hello_wrong_type",
        "First byte 0x01 instead of 0x02.",
        "aes-256-gcm",
        "read_server_hello",
        {
            let mut h = server_hello.clone();
            h[0] = 1;
            h
        },
    ));
    neg.push(n(
        "server_hello_trailing_byte",
        "One 0x00 byte appended.",
        "aes-256-gcm",
        "read_server_hello",
        [server_hello.as_slice(), &[0]].concat(),
    ));
    neg.push(n(
        "server_hello_truncated",
        "The last byte removed (the ticket's length prefix no longer matches).",
        "aes-256-gcm",
        "read_server_hello",
        server_hello[..server_hello.len() - 1].to_vec(),
    ));
    neg.push(n(
        "server_hello_without_ticket",
        "The server hello without its ticket field (0x02 || bytes16(noise_msg2), the layout before the ticket was added).",
        "aes-256-gcm",
        "read_server_hello",
        server_hello[..msg2_end].to_vec(),
    ));
    neg.push(n(
        "server_hello_empty_ticket",
        "A ticket of length 0 (tickets are 1 to 1024 bytes); noise_msg2 untouched.",
        "aes-256-gcm",
        "read_server_hello",
        [&server_hello[..msg2_end], &[0, 0][..]].concat(),
    ));
    neg.push(n(
        "server_hello_ticket_too_long",
        "A ticket of 1025 bytes (0x5a), one more than MAX_TICKET_LEN; noise_msg2 untouched.",
        "aes-256-gcm",
        "read_server_hello",
        [
            &server_hello[..msg2_end],
            &reference::bytes16(&too_long_ticket)[..],
        ]
        .concat(),
    ));
    neg.push(n(
        "flipped_client_finished",
        "The confirmation with the first byte of client_finished XOR 0x01.",
        "aes-256-gcm",
        "confirm",
        flip(&confirmation, 2 + aes_ticket.len()),
    ));
    neg.push(n(
        "short_client_finished",
        "The confirmation without its last byte (client_finished is 31 bytes).",
        "aes-256-gcm",
        "confirm",
        confirmation[..confirmation.len() - 1].to_vec(),
    ));
    neg.push(n(
        "client_finished_of_another_session",
        "This case's ticket with the chacha20-poly1305 case's client_finished.",
        "aes-256-gcm",
        "confirm",
        reference::confirmation(&aes_ticket, chacha_finished.try_into().unwrap()),
    ));
    neg.push(n(
        "empty_confirmation",
        "An empty body.",
        "aes-256-gcm",
        "confirm",
        Vec::new(),
    ));
    neg.push(n(
        "confirmation_truncated_in_ticket",
        "The first 20 bytes of the confirmation: the ticket's length says 48, only 18 follow.",
        "aes-256-gcm",
        "confirm",
        confirmation[..20].to_vec(),
    ));
    neg.push(n(
        "confirmation_trailing_byte",
        "One 0x00 byte appended after client_finished.",
        "aes-256-gcm",
        "confirm",
        [confirmation.as_slice(), &[0]].concat(),
    ));
    neg.push(n(
        "confirmation_empty_ticket",
        "bytes16(empty ticket) || the right client_finished.",
        "aes-256-gcm",
        "confirm",
        reference::confirmation(&[], &finished),
    ));
    neg.push(n(
        "confirmation_ticket_too_long",
        "A 1025-byte ticket (0x5a) || the right client_finished.",
        "aes-256-gcm",
        "confirm",
        reference::confirmation(&too_long_ticket, &finished),
    ));
    neg.push(n(
        "bare_client_finished",
        "The 32 bytes of client_finished alone (the stand-alone confirm's body before the ticket was added).",
        "aes-256-gcm",
        "confirm",
        finished.to_vec(),
    ));
    neg.push(n(
        "chacha_downgrade_to_aes",
        "The chacha20-poly1305 case's offer [ChaCha20-Poly1305, AES-256-GCM] rewritten to [AES-256-GCM].",
        "chacha20-poly1305",
        "respond",
        [&[1u8, 1, 0, 1, 0, 1, 2, 1, 0, 1][..], &chacha_hello[12..]].concat(),
    ));

    // Extension lists the reference encrypted with the case's keys (§6.4): the Noise
    // messages authenticate, so only the payload's content is wrong.
    let no_offer = cases.iter().find(|c| c.name == NO_STREAMS_OFFERED).unwrap();
    let sr = reference::EXT_STREAMED_RECORDS;
    let mut crafted: Vec<(&str, &str, &HandshakeCaseV, &str, Vec<u8>)> = Vec::new();
    for (name, desc, payload1) in [
        (
            "duplicate_extension",
            "msg1 payload offers streamed_records twice.",
            reference::extensions(&[(sr, &[]), (sr, &[])]),
        ),
        (
            "duplicate_unknown_extension",
            "msg1 payload carries the unknown type 0x7f00 twice: no type may appear twice, known or not.",
            reference::extensions(&[(0x7f00, &[]), (0x7f00, &[9])]),
        ),
        (
            "streamed_records_with_data",
            "msg1 payload offers streamed_records with one byte of data (its data must be empty).",
            reference::extensions(&[(sr, &[0])]),
        ),
        (
            "extension_list_overruns_payload",
            "msg1 payload 0005 00010000: the list's length says 5, 4 bytes follow.",
            vec![0, 5, 0, 1, 0, 0],
        ),
        (
            "extension_entry_cut",
            "msg1 payload 0003 000100: the list ends inside an entry's data length.",
            vec![0, 3, 0, 1, 0],
        ),
        (
            "extension_data_overruns_list",
            "msg1 payload 0005 7f00 0003 09: an entry's data length runs past the end of the list.",
            vec![0, 5, 0x7f, 0, 0, 3, 9],
        ),
        (
            "msg1_payload_trailing_byte",
            "msg1 payload 0004 00010000 00: a byte after the extension list.",
            vec![0, 4, 0, 1, 0, 0, 0],
        ),
        (
            "msg1_payload_empty",
            "An empty msg1 payload: the extension list is not optional (an empty list is 0000).",
            Vec::new(),
        ),
    ] {
        crafted.push((name, desc, aes, "respond", payload1));
    }
    let payload2_with = |c: &HandshakeCaseV, ext: &[u8]| -> Vec<u8> {
        let f = &c.server_hello_fields;
        reference::server_hello_payload(
            f.version,
            f.suite,
            &unhx_n(&f.session_id),
            f.expires_at_ms,
            f.idle_timeout_ms,
            ext,
        )
    };
    for (name, desc, c, ext) in [
        (
            "unsolicited_streams_acceptance",
            "The server hello of a client that did not offer streamed_records accepts it: a client never accepts an extension it did not offer.",
            no_offer,
            reference::extensions(&[(sr, &[])]),
        ),
        (
            "server_hello_duplicate_extension",
            "The server hello's extensions hold streamed_records twice.",
            aes,
            reference::extensions(&[(sr, &[]), (sr, &[])]),
        ),
        (
            "server_hello_streamed_records_with_data",
            "The server hello accepts streamed_records with one byte of data.",
            aes,
            reference::extensions(&[(sr, &[1])]),
        ),
        (
            "server_hello_extension_list_cut",
            "The server hello's extensions 0004 000100: the list's length says 4, 3 bytes follow.",
            aes,
            vec![0, 4, 0, 1, 0],
        ),
        (
            "server_hello_without_extensions",
            "The server hello payload ends after idle_timeout_ms, without its extension list.",
            aes,
            Vec::new(),
        ),
    ] {
        crafted.push((name, desc, c, "read_server_hello", payload2_with(c, &ext)));
    }

    let extension_inputs: Vec<(&str, &str, &HandshakeCaseV, &str, Vec<u8>)> = vec![
        (
            "unknown_extension_before_streamed_records",
            "msg1 payload: the unknown type 0x7f00 with data \"future\", then streamed_records. The unknown one is skipped; streams are negotiated and the server hello is the ordinary answer to that payload.",
            aes,
            "respond",
            reference::extensions(&[(0x7f00, b"future"), (sr, &[])]),
        ),
        (
            "only_an_unknown_extension",
            "msg1 payload: only the unknown type 0xfe01 (empty data). Skipped; nothing is negotiated and the server answers with an empty list.",
            aes,
            "respond",
            reference::extensions(&[(0xfe01, &[])]),
        ),
        (
            "unknown_extension_in_server_hello",
            "Server hello extensions: streamed_records, then the unknown type 0x7f00 with data 010203. The client skips the unknown one; streams are negotiated.",
            aes,
            "read_server_hello",
            payload2_with(aes, &reference::extensions(&[(sr, &[]), (0x7f00, &[1, 2, 3])])),
        ),
        (
            "unknown_extension_in_server_hello_without_offer",
            "Server hello extensions to a client that offered nothing: only the unknown type 0x7f00. Skipped; no streams.",
            no_offer,
            "read_server_hello",
            payload2_with(no_offer, &reference::extensions(&[(0x7f00, &[])])),
        ),
    ];

    let file_cases = cases.clone();
    let hs_file_stub = HandshakeFile {
        description: Vec::new(),
        noise_protocol_name: String::new(),
        prologue_label: String::new(),
        config_encoded: kc.config_encoded.clone(),
        server_keys: keys.iter().map(handshake_key_v).collect(),
        policy: PolicyV::of(&ServerPolicy::default()),
        cases: file_cases,
        extension_cases: Vec::new(),
        negative: Vec::new(),
        export_cases: Vec::new(),
    };
    for (name, description, case, op, input) in neg {
        let err = run_handshake_op(&hs_file_stub, case, op, &input).expect_err(name);
        negative.push(HandshakeNegV {
            name: name.into(),
            description,
            case: case.into(),
            op: op.into(),
            input: hx(&input),
            payload: None,
            error: err,
        });
    }
    for (name, description, c, op, payload) in crafted {
        let input = crafted_input(c, op, &payload);
        let err = run_handshake_op(&hs_file_stub, &c.name, op, &input).expect_err(name);
        // The reference's reading of the same payload: refused as malformed.
        let offered = reference::read_extensions(&unhx(&c.msg1_payload)).unwrap();
        assert_eq!(
            reference_reads_payload(c, op, &payload, offered),
            Err("malformed"),
            "{name}"
        );
        negative.push(HandshakeNegV {
            name: name.into(),
            description: description.into(),
            case: c.name.clone(),
            op: op.into(),
            input: hx(&input),
            payload: Some(hx(&payload)),
            error: err,
        });
    }
    let extension_cases: Vec<ExtensionCaseV> = extension_inputs
        .into_iter()
        .map(|(name, description, c, op, payload)| {
            let input = crafted_input(c, op, &payload);
            let (streams, output) = run_extension_op(&hs_file_stub, &c.name, op, &input);
            let (ref_streams, ref_output) = reference_extension_op(c, op, &payload);
            assert_eq!((streams, &output), (ref_streams, &ref_output), "{name}");
            ExtensionCaseV {
                name: name.into(),
                description: description.into(),
                case: c.name.clone(),
                op: op.into(),
                payload: hx(&payload),
                input: hx(&input),
                streams,
                output: hx(&output),
            }
        })
        .collect();
    let export_cases = gen_export_cases(aes);

    HandshakeFile {
        description: lines(&[
            "sessioncert handshake vectors (docs/PROTOCOL.md §6). All byte strings are lower-case hex.",
            "Every case uses the key configuration of key-config.json (config_encoded) at now_ms; the client encrypts to its current key (key_id 2). aes-256-gcm and chacha20-poly1305 negotiate streamed records (records.json and streams.json start from their sessions); aes-256-gcm-no-streams-offered's client does not offer them, aes-256-gcm-streams-refused's server (policy.streams false) does not accept them.",
            "msg1_payload = extensions (PROTOCOL §6.4) = bytes16(entries), entry = u16 type || bytes16(data); streamed_records is type 0x0001 with empty data, so an offer is 0004 0001 0000 and no offer is 0000. The ServerHello payload (msg2_payload) = u16 version || u16 suite || session_id || u64 expires_at_ms || u64 idle_timeout_ms || extensions, which echo streamed_records iff the client offered it and the server accepts it.",
            "Fixed ephemerals: a real implementation draws them at random; use them only to reproduce these bytes.",
            "client_hello = client_hello_header || u16 len || noise_msg1; prologue = prologue_label || client_hello_header.",
            "server_hello = 0x02 || u16 len || noise_msg2 || u16 len || ticket; msg2_payload is the ServerHello plaintext inside noise_msg2. The ticket is opaque to the client (a fixed 48-byte pattern here; a real server seals its pending state into it).",
            "noise: every intermediate of the Noise NK run; keys: the sessioncert key schedule on top of it (refusal_key included).",
            "confirmation = u16 len || ticket || client_finished: the body of POST /.well-known/sessioncert/confirm; confirmation_base64url (unpadded) is the sessioncert-confirm header value.",
            "client_export_unconfirmed = ClientSession::export() right after reading the server hello (it ends with bytes16(confirmation)); client_export = the same once confirmed (it ends with 0000); server_pending_export = PendingServerSession::export() (what a ticket carries); server_export = ServerSession::export() after confirmation (layouts in PROTOCOL.md §12; format 2: a flags byte after the suite, bit 0 = streams negotiated).",
            "extension_cases: unknown extension types are skipped. input is built by the reference from the case's keys and ephemerals around payload (the msg1 payload for op respond, the ServerHello payload for op read_server_hello); output is the server hello the server answers (with the case's ticket) or the client's unconfirmed export.",
            "export_cases: import input as a session of role; reexport is what export() gives afterwards (null when refused), error the ErrorCode wire name. Format 1 (no flags byte) still imports, as a session without streams.",
            "negative: op respond = the server (server_keys, the case's policy, session id, server ephemeral and now_ms) answers input as a client hello; read_server_hello = the case's client (restarted with its fixed ephemeral) reads input as a server hello; confirm = input is parsed as a confirmation (malformed if its framing is wrong), then the case's pending server session checks its client_finished (the ticket itself is not opened here). error = ErrorCode wire name. Where payload is given, input was built by the reference around that crafted msg1 or ServerHello payload (bad extension lists, an unsolicited acceptance).",
        ]),
        noise_protocol_name: NOISE_NK_PARAMS.into(),
        prologue_label: String::from_utf8_lossy(reference::PROLOGUE_LABEL).into_owned(),
        extension_cases,
        export_cases,
        ..hs_file_stub
    }
    .with_negative(negative)
}

/// The input of a crafted handshake case: `respond` → a client hello of case `c` whose
/// msg1 payload is `payload`; `read_server_hello` → a server hello answering `c`'s
/// genuine client hello whose payload is `payload`. Built by the reference alone from
/// the case's keys and ephemerals.
pub fn crafted_input(c: &HandshakeCaseV, op: &str, payload: &[u8]) -> Vec<u8> {
    let nk = |p1: &[u8], p2: &[u8]| {
        reference::noise_nk(
            &unhx(&c.prologue),
            &unhx_n(&c.server_static_public),
            &unhx_n(&c.client_ephemeral_secret),
            &unhx_n(&c.server_ephemeral_secret),
            p1,
            p2,
        )
    };
    match op {
        "respond" => reference::client_hello(&unhx(&c.client_hello_header), &nk(payload, &[]).msg1),
        "read_server_hello" => {
            reference::server_hello(&nk(&unhx(&c.msg1_payload), payload).msg2, &unhx(&c.ticket))
        }
        other => panic!("unknown op {other}"),
    }
}

/// How the reference reads a crafted payload: `respond` → whether the client offered
/// streams (the msg1 payload is one extension list); `read_server_hello` → whether
/// streams are negotiated (the extensions after the fixed ServerHello fields, refused
/// when they accept what was not `offered`).
pub fn reference_reads_payload(
    c: &HandshakeCaseV,
    op: &str,
    payload: &[u8],
    offered: bool,
) -> Result<bool, &'static str> {
    match op {
        "respond" => reference::read_extensions(payload),
        "read_server_hello" => {
            let fixed = 2 + 2 + 16 + 8 + 8;
            let accepted = reference::read_extensions(payload.get(fixed..).ok_or("malformed")?)?;
            assert_eq!(&payload[..4], &unhx(&c.msg2_payload)[..4]);
            if accepted && !offered {
                return Err("malformed");
            }
            Ok(accepted)
        }
        other => panic!("unknown op {other}"),
    }
}

/// Runs an extension case through the crate: whether streams are negotiated, and the
/// server hello (`respond`, with the case's ticket) or the unconfirmed client export
/// (`read_server_hello`).
pub fn run_extension_op(hs: &HandshakeFile, case: &str, op: &str, input: &[u8]) -> (bool, Vec<u8>) {
    let c = hs.case(case);
    match op {
        "respond" => {
            let resp = respond_with_ephemeral_for_vectors(
                &hs.keys(),
                &c.policy.to_policy(),
                input,
                SessionId(unhx_n(&c.session_id)),
                c.now_ms,
                &unhx_n(&c.server_ephemeral_secret),
            )
            .expect("respond");
            let streams = resp.hello.streams;
            assert_eq!(resp.pending.export()[EXPORT_FLAGS_AT], u8::from(streams));
            (streams, resp.server_hello(&unhx(&c.ticket)).unwrap())
        }
        "read_server_hello" => {
            let cfg = verified(&KeyConfig::decode(&unhx(&hs.config_encoded)).unwrap());
            let (ch, _) = restart_client(
                &cfg,
                &c.offer,
                c.now_ms,
                &unhx_n(&c.client_ephemeral_secret),
            );
            let (uc, hello) = ch.read_server_hello(input).expect("read_server_hello");
            let session = uc.into_session();
            assert_eq!(session.streams(), hello.streams);
            (hello.streams, session.export().to_vec())
        }
        other => panic!("unknown op {other}"),
    }
}

/// The same outputs from the reference alone.
pub fn reference_extension_op(c: &HandshakeCaseV, op: &str, payload: &[u8]) -> (bool, Vec<u8>) {
    let offered = reference::read_extensions(&unhx(&c.msg1_payload)).unwrap();
    let streams = reference_reads_payload(c, op, payload, offered).expect("extensions");
    let f = &c.server_hello_fields;
    let sid: [u8; 16] = unhx_n(&c.session_id);
    let nk = |p1: &[u8], p2: &[u8]| {
        reference::noise_nk(
            &unhx(&c.prologue),
            &unhx_n(&c.server_static_public),
            &unhx_n(&c.client_ephemeral_secret),
            &unhx_n(&c.server_ephemeral_secret),
            p1,
            p2,
        )
    };
    match op {
        "respond" => {
            let answer = reference::answer_extensions(streams, c.policy.streams);
            let p2 = reference::server_hello_payload(
                f.version,
                f.suite,
                &sid,
                f.expires_at_ms,
                f.idle_timeout_ms,
                &answer,
            );
            let negotiated = reference::read_extensions(&answer).unwrap();
            (
                negotiated,
                reference::server_hello(&nk(payload, &p2).msg2, &unhx(&c.ticket)),
            )
        }
        "read_server_hello" => {
            let run = nk(&unhx(&c.msg1_payload), payload);
            let ks = reference::schedule(&run.h, &run.k1, &run.k2);
            let confirmation = reference::confirmation(&unhx(&c.ticket), &ks.client_finished);
            let export = [
                reference::export_head(1, f.version, f.suite, streams, &sid),
                reference::direction_export(0, &ks.c2s_key, None, &ks.c2s_iv),
                reference::direction_export(0, &ks.s2c_key, None, &ks.s2c_iv),
                ks.refusal_key.to_vec(),
                0u64.to_be_bytes().to_vec(),
                reference::bytes16(&confirmation),
            ]
            .concat();
            (streams, export)
        }
        other => panic!("unknown op {other}"),
    }
}

/// Imports `input` as a session of `role` and exports it again: `(export, streams)`,
/// or the refusal's wire code.
pub fn run_export_case(role: &str, input: &[u8]) -> Result<(Vec<u8>, bool), String> {
    match role {
        "client" => ClientSession::import(input)
            .map(|s| (s.export().to_vec(), s.streams()))
            .map_err(|e| code(&e)),
        "server" => ServerSession::import(input)
            .map(|s| (s.export().to_vec(), s.streams()))
            .map_err(|e| code(&e)),
        other => panic!("unknown role {other}"),
    }
}

fn gen_export_cases(c: &HandshakeCaseV) -> Vec<ExportCaseV> {
    let client = unhx(&c.client_export);
    let server = unhx(&c.server_export);
    let with_format = |e: &[u8], f: u8| {
        let mut e = e.to_vec();
        e[4] = f;
        e
    };
    let inputs: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "format_1_client",
            "The aes-256-gcm client export written in format 1 (format byte 01, no flags byte), as versions before streamed records stored it: imported as a session without streams, exported again in format 2 with flags 00.",
            "client",
            reference::export_as_format_1(&client),
        ),
        (
            "format_1_server",
            "The aes-256-gcm server export in format 1: imported without streams.",
            "server",
            reference::export_as_format_1(&server),
        ),
        (
            "unknown_flag_bit_client",
            "The client export with flags 02: only bit 0 is defined, other bits must be 0.",
            "client",
            export_with_flags(&client, 0x02),
        ),
        (
            "unknown_flag_bits_server",
            "The server export with flags 81.",
            "server",
            export_with_flags(&server, 0x81),
        ),
        (
            "format_3",
            "The client export with format byte 03 (unknown).",
            "client",
            with_format(&client, 3),
        ),
        (
            "format_1_byte_on_format_2_layout",
            "The server export with its format byte set to 01 but the flags byte kept: read as format 1, the fields are shifted by one byte.",
            "server",
            with_format(&server, 1),
        ),
    ];
    inputs
        .into_iter()
        .map(|(name, description, role, input)| {
            let got = run_export_case(role, &input);
            match (name, &got) {
                ("format_1_client", Ok((e, false))) => {
                    assert_eq!(*e, export_with_flags(&client, 0))
                }
                ("format_1_server", Ok((e, false))) => {
                    assert_eq!(*e, export_with_flags(&server, 0))
                }
                (_, Err(code)) => assert_eq!(code, "malformed", "{name}"),
                _ => panic!("{name}: unexpected {got:?}"),
            }
            ExportCaseV {
                name: name.into(),
                description: description.into(),
                role: role.into(),
                input: hx(&input),
                reexport: got.as_ref().ok().map(|(e, _)| hx(e)),
                streams: got.as_ref().ok().map(|(_, s)| *s),
                error: got.err(),
            }
        })
        .collect()
}

impl HandshakeFile {
    fn with_negative(mut self, negative: Vec<HandshakeNegV>) -> Self {
        self.negative = negative;
        self
    }

    /// The case named `name`.
    pub fn case(&self, name: &str) -> &HandshakeCaseV {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    }

    pub fn keys(&self) -> Vec<HandshakeKeyPair> {
        self.server_keys
            .iter()
            .map(|k| {
                HandshakeKeyPair::from_secret(
                    k.key_id,
                    &unhx_n(&k.secret),
                    k.not_before_ms,
                    k.not_after_ms,
                )
                .unwrap()
            })
            .collect()
    }
}

/// Runs one handshake operation of a negative case; `Err` carries the wire code.
pub fn run_handshake_op(
    hs: &HandshakeFile,
    case: &str,
    op: &str,
    input: &[u8],
) -> Result<(), String> {
    let c = hs.case(case);
    let cfg = verified(&KeyConfig::decode(&unhx(&hs.config_encoded)).unwrap());
    match op {
        "respond" => respond_with_ephemeral_for_vectors(
            &hs.keys(),
            &c.policy.to_policy(),
            input,
            SessionId(unhx_n(&c.session_id)),
            c.now_ms,
            &unhx_n(&c.server_ephemeral_secret),
        )
        .map(|_| ())
        .map_err(|e| code(&e)),
        "read_server_hello" => {
            let (ch, _) = restart_client(
                &cfg,
                &c.offer,
                c.now_ms,
                &unhx_n(&c.client_ephemeral_secret),
            );
            ch.read_server_hello(input)
                .map(|_| ())
                .map_err(|e| code(&e))
        }
        "confirm" => {
            // §6.8 steps 2 and 5; opening the ticket (steps 3-4) is the server's business.
            let conf = Confirmation::parse(input).map_err(|e| code(&e))?;
            let pending =
                sessioncert_proto::PendingServerSession::import(&unhx(&c.server_pending_export))
                    .unwrap();
            pending
                .confirm(conf.client_finished)
                .map(|_| ())
                .map_err(|f| code(&f.error))
        }
        other => panic!("unknown op {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// records.json
// ---------------------------------------------------------------------------------------

/// What one exchange sends and answers.
struct ExSpec {
    name: &'static str,
    req: ReqBindingV,
    /// Header mode: the request's header field lines besides the `sessioncert-*` ones.
    req_lines: Vec<FieldV>,
    req_full: Option<FullRequestV>,
    req_pt: Vec<u8>,
    resp: RespBindingV,
    resp_full: Option<FullResponseV>,
    resp_pt: Vec<u8>,
}

fn header_ex(
    name: &'static str,
    req: ReqBindingV,
    req_pt: &[u8],
    status: u16,
    ct: &str,
    resp_pt: &[u8],
) -> ExSpec {
    ExSpec {
        name,
        req,
        req_lines: Vec::new(),
        req_full: None,
        req_pt: req_pt.to_vec(),
        resp: RespBindingV::header(status, ct),
        resp_full: None,
        resp_pt: resp_pt.to_vec(),
    }
}

fn full_ex(name: &'static str, req: FullRequestV, resp: FullResponseV) -> ExSpec {
    let req_pt = req.to_request().encode();
    let resp_pt = resp.to_response().encode().unwrap();
    ExSpec {
        name,
        req: ReqBindingV::Full,
        req_lines: Vec::new(),
        req_full: Some(req),
        req_pt,
        resp: RespBindingV::Full,
        resp_full: Some(resp),
        resp_pt,
    }
}

fn fields(f: &[(&str, &str)]) -> Vec<FieldV> {
    f.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

/// The value a covered header is bound with (§8.2): every field line of that name, in
/// order, joined with `", "`; `""` when the request has none.
fn covered_value(lines: &[FieldV], name: &str) -> String {
    lines
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A header-mode exchange whose request carries the header field lines `lines` and
/// covers the headers `names` (in that order), as a client builds it.
fn covering(mut ex: ExSpec, names: &[&str], lines: &[(&str, &str)]) -> ExSpec {
    let lines = fields(lines);
    ex.req = ex.req.changed(|l| {
        l.covered = names
            .iter()
            .map(|n| ((*n).to_owned(), covered_value(&lines, n)))
            .collect();
    });
    ex.req_lines = lines;
    ex
}

/// The header fields of a header-mode request that carry its binding (`RequestV::headers`).
fn request_headers(b: &ReqBindingV, lines: &[FieldV]) -> Vec<FieldV> {
    let ReqBindingV::Header(l) = b else {
        assert!(lines.is_empty());
        return Vec::new();
    };
    let mut h = vec![("sessioncert-target".to_owned(), l.target.clone())];
    if !l.content_type.is_empty() {
        h.push(("sessioncert-content-type".into(), l.content_type.clone()));
    }
    if !l.covered.is_empty() {
        let names: Vec<&str> = l.covered.iter().map(|(n, _)| n.as_str()).collect();
        h.push(("sessioncert-covered".into(), names.join(", ")));
    }
    h.extend(lines.iter().cloned());
    h
}

/// Whether the records of this request and its response travel in `sessioncert-record`.
fn is_head(b: &ReqBindingV) -> bool {
    matches!(b, ReqBindingV::Header(l) if l.method == "HEAD")
}

fn main_exchanges() -> Vec<ExSpec> {
    vec![
        covering(
            header_ex(
                "create_note",
                ReqBindingV::header("POST", "/api/notes", "", "application/json"),
                br#"{"title":"hello","body":"first note"}"#,
                201,
                "application/json",
                br#"{"id":1}"#,
            ),
            &["authorization", "x-tenant"],
            &[
                ("authorization", "Bearer vec-access-token"),
                ("x-tenant", "acme"),
                ("accept", "application/json"),
                ("x-tenant", "eu-west"),
            ],
        ),
        header_ex(
            "list_notes_with_query",
            ReqBindingV::header("GET", "/api/notes", "limit=5&tag=caf%C3%A9", ""),
            b"",
            200,
            "application/json",
            br#"[{"id":1,"title":"hello"}]"#,
        ),
        header_ex(
            "delete_percent_encoded_path",
            ReqBindingV::header("DELETE", "/api/tags/caf%C3%A9", "", ""),
            b"",
            204,
            "",
            b"",
        ),
        full_ex(
            "full_mode",
            FullRequestV {
                method: "POST".into(),
                scheme: "https".into(),
                authority: "api.example.com".into(),
                path: "/api/notes?draft=true".into(),
                headers: fields(&[
                    ("content-type", "application/json"),
                    ("x-request-id", "vec-3"),
                ]),
                body: hx(br#"{"title":"secret path"}"#),
            },
            FullResponseV {
                status: 201,
                headers: fields(&[
                    ("content-type", "application/json"),
                    ("location", "/api/notes/2"),
                ]),
                body: hx(br#"{"id":2}"#),
            },
        ),
        header_ex(
            "concurrent_a",
            ReqBindingV::header("PUT", "/api/notes/2", "", "application/json"),
            br#"{"title":"renamed"}"#,
            200,
            "application/json",
            br#"{"id":2,"title":"renamed"}"#,
        ),
        header_ex(
            "concurrent_b",
            ReqBindingV::header("GET", "/api/profile", "", ""),
            b"",
            200,
            "application/json",
            br#"{"name":"Ada"}"#,
        ),
        header_ex(
            "head_note",
            ReqBindingV::header("HEAD", "/api/notes/1", "", ""),
            b"",
            200,
            "application/json",
            b"",
        ),
        header_ex(
            "close",
            ReqBindingV::header("POST", "/.well-known/sessioncert/close", "", ""),
            b"",
            200,
            "",
            b"",
        ),
    ]
}

fn ping_binding() -> ReqBindingV {
    ReqBindingV::header("POST", "/api/ping", "", "text/plain")
}

fn ping_ex(seq: u64) -> ExSpec {
    ExSpec {
        name: "ping",
        req: ping_binding(),
        req_lines: Vec::new(),
        req_full: None,
        req_pt: format!("ping {seq}").into_bytes(),
        resp: RespBindingV::header(200, "text/plain"),
        resp_full: None,
        resp_pt: format!("pong {seq}").into_bytes(),
    }
}

/// Where `next_seq` starts in a client export (PROTOCOL.md §12): after the 27-byte head,
/// both directions (each `u64 epoch || key[32] || u8 has_previous || [previous[32]] ||
/// iv[12]`) and the 32-byte refusal key.
pub fn client_next_seq_offset(export: &[u8]) -> usize {
    let mut at = EXPORT_HEAD_LEN;
    for _ in 0..2 {
        at += 8 + 32;
        let previous = if export[at] == 1 { 32 } else { 0 };
        at += 1 + previous + 12;
    }
    at + 32
}

/// A client export with `next_seq` replaced.
pub fn client_export_at(export: &[u8], next_seq: u64) -> Vec<u8> {
    let mut e = export.to_vec();
    let at = client_next_seq_offset(&e);
    e[at..at + 8].copy_from_slice(&next_seq.to_be_bytes());
    e
}

/// Length of a format-2 export head: magic, format, role, version, suite, flags, id.
pub const EXPORT_HEAD_LEN: usize = 4 + 1 + 1 + 2 + 2 + 1 + 16;
/// Offset of the flags byte in a format-2 export.
pub const EXPORT_FLAGS_AT: usize = 10;

/// A server export with the session id replaced (bytes 11..27 of any format-2 export).
pub fn export_with_session_id(export: &[u8], id: &[u8; 16]) -> Vec<u8> {
    let mut e = export.to_vec();
    e[EXPORT_FLAGS_AT + 1..EXPORT_HEAD_LEN].copy_from_slice(id);
    e
}

/// An export (either role) with its flags byte replaced.
pub fn export_with_flags(export: &[u8], flags: u8) -> Vec<u8> {
    let mut e = export.to_vec();
    e[EXPORT_FLAGS_AT] = flags;
    e
}

/// A record with its sequence number field replaced.
pub fn with_seq(record: &[u8], seq: u64) -> Vec<u8> {
    let mut r = record.to_vec();
    r[1..9].copy_from_slice(&seq.to_be_bytes());
    r
}

/// Keys of one suite's session as the reference sees them.
struct RefKeys {
    suite: u16,
    sid: [u8; 16],
    c2s_key: [u8; 32],
    c2s_iv: [u8; 12],
    s2c_key: [u8; 32],
    s2c_iv: [u8; 12],
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

/// The reference AD of a request.
pub fn reference_request_ad(sid: &[u8; 16], seq: u64, b: &ReqBindingV) -> Vec<u8> {
    match b {
        ReqBindingV::Header(l) => reference::request_ad(
            req_type(b),
            sid,
            seq,
            Some(&reference::Line {
                method: &l.method,
                target: &l.target,
                path: &l.path,
                query: &l.query,
                content_type: &l.content_type,
                covered: &l.covered,
            }),
        ),
        ReqBindingV::Full => reference::request_ad(req_type(b), sid, seq, None),
    }
}

/// The reference AD of a response.
pub fn reference_response_ad(
    sid: &[u8; 16],
    seq: u64,
    tag: &[u8; 16],
    b: &RespBindingV,
) -> Vec<u8> {
    let status = match b {
        RespBindingV::Header {
            status,
            content_type,
        } => Some((*status, content_type.as_str())),
        RespBindingV::Full => None,
    };
    reference::response_ad(resp_type(b), sid, seq, tag, status)
}

/// Runs a scenario through the crate, checking every record against the reference.
fn run_scenario(
    rk: &RefKeys,
    name: &str,
    description: &str,
    client_start: &[u8],
    server_start: &[u8],
    specs: Vec<ExSpec>,
    server_order: Vec<usize>,
) -> ScenarioV {
    let mut client = ClientSession::import(client_start).unwrap();
    let mut server = ServerSession::import(server_start).unwrap();
    let mut sealed = Vec::new();
    for s in &specs {
        let (rec, exp) = s
            .req
            .with_binding(|b| client.seal_request(b, &s.req_pt))
            .unwrap();
        sealed.push((rec, exp));
    }
    let mut responses = vec![Vec::new(); specs.len()];
    for &i in &server_order {
        let s = &specs[i];
        let opened = s
            .req
            .with_binding(|b| server.open_request(b, &sealed[i].0))
            .unwrap();
        assert_eq!(opened.plaintext, s.req_pt);
        assert_eq!(opened.sealer.expectation(), sealed[i].1);
        let resp = server
            .seal_response(opened.sealer, &s.resp.binding(), &s.resp_pt)
            .unwrap();
        let got = client
            .open_response(&sealed[i].1, &s.resp.binding(), &resp)
            .unwrap();
        assert_eq!(got, s.resp_pt);
        responses[i] = resp;
    }
    let exchanges = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (rec, exp) = &sealed[i];
            let seq = exp.seq;
            let epoch = seq / REKEY_INTERVAL;
            let ad = reference_request_ad(&rk.sid, seq, &s.req);
            let key = reference::epoch_key(&rk.c2s_key, epoch);
            let ref_rec = reference::record(
                rk.suite,
                &key,
                &rk.c2s_iv,
                req_type(&s.req),
                seq,
                &ad,
                &s.req_pt,
            );
            assert_eq!(rec, &ref_rec, "request {i} of {name}");
            let rad = reference_response_ad(&rk.sid, seq, &exp.request_tag, &s.resp);
            let rkey = reference::epoch_key(&rk.s2c_key, epoch);
            let ref_resp = reference::record(
                rk.suite,
                &rkey,
                &rk.s2c_iv,
                resp_type(&s.resp),
                seq,
                &rad,
                &s.resp_pt,
            );
            assert_eq!(responses[i], ref_resp, "response {i} of {name}");
            let head = is_head(&s.req);
            if head {
                assert!(
                    s.req_pt.is_empty() && s.resp_pt.is_empty(),
                    "HEAD has no body"
                );
            }
            ExchangeV {
                name: s.name.into(),
                request: RequestV {
                    binding: s.req.clone(),
                    full: s.req_full.clone(),
                    headers: request_headers(&s.req, &s.req_lines),
                    plaintext: hx(&s.req_pt),
                    seq,
                    epoch,
                    ad: hx(&ad),
                    nonce: hx(&reference::nonce(&rk.c2s_iv, seq)),
                    record: hx(rec),
                    record_base64url: head.then(|| b64(rec)),
                },
                response: ResponseV {
                    binding: s.resp.clone(),
                    full: s.resp_full.clone(),
                    plaintext: hx(&s.resp_pt),
                    epoch,
                    ad: hx(&rad),
                    nonce: hx(&reference::nonce(&rk.s2c_iv, seq)),
                    record: hx(&responses[i]),
                    record_base64url: head.then(|| b64(&responses[i])),
                },
            }
        })
        .collect::<Vec<_>>();
    // The server's window after the scenario, by the reference.
    let server_end = server.export().to_vec();
    // Scenarios start from a fresh window (checked here), so the accepted set is theirs.
    let mut accepted: Vec<u64> = Vec::new();
    assert_eq!(
        &server_start[server_start.len() - 136..],
        &reference::window_state(&[])[..]
    );
    accepted.extend(sealed.iter().map(|(_, e)| e.seq));
    assert_eq!(
        &server_end[server_end.len() - 136..],
        &reference::window_state(&accepted)[..]
    );
    ScenarioV {
        name: name.into(),
        description: description.into(),
        client_export_start: hx(client_start),
        server_export_start: hx(server_start),
        exchanges,
        server_order,
        client_export_end: hx(&client.export()),
        server_export_end: hx(&server_end),
    }
}

/// Seals one ping request at `seq` from a fresh client of `client_export`.
fn ping_at(client_export: &[u8], seq: u64) -> (Vec<u8>, ResponseExpectation) {
    let mut c = ClientSession::import(&client_export_at(client_export, seq)).unwrap();
    ping_binding()
        .with_binding(|b| c.seal_request(b, &ping_ex(seq).req_pt))
        .unwrap()
}

/// Runs the steps of a server open case; returns the outcome of each.
pub fn run_server_steps(server_export: &[u8], steps: &[(ReqBindingV, Vec<u8>)]) -> Vec<ExpectV> {
    let mut server = ServerSession::import(server_export).unwrap();
    steps
        .iter()
        .map(
            |(b, rec)| match b.with_binding(|b| server.open_request(b, rec)) {
                Ok(o) => ExpectV::ok(&o.plaintext),
                Err(e) => ExpectV::err(&code(&e)),
            },
        )
        .collect()
}

fn gen_records(hs: &HandshakeFile) -> RecordsFile {
    let mut suites = Vec::new();
    let suite_cases: Vec<&HandshakeCaseV> = SUITE_CASES.iter().map(|n| hs.case(n)).collect();
    for (ci, case) in suite_cases.iter().copied().enumerate() {
        let other = suite_cases[1 - ci];
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

        let main = run_scenario(
            &rk,
            "main",
            "Header-mode and full-mode requests from the fresh session, every header-mode request sealed for https://api.example.com. Request 0 covers authorization and x-tenant (two x-tenant field lines, bound as \"acme, eu-west\"). Requests 4 and 5 are concurrent: the server opens 5 before 4 (accepted: both inside the replay window). Request 6 is a HEAD: no body either way, both records travel in sessioncert-record. Request 7 closes the session.",
            &cexp,
            &sexp,
            main_exchanges(),
            vec![0, 1, 2, 3, 5, 4, 6, 7],
        );
        let rekey_start = client_export_at(&cexp, REKEY_INTERVAL - 2);
        let rekey = run_scenario(
            &rk,
            "rekey",
            "The fresh session with the client's next_seq set to REKEY_INTERVAL - 2 (65534) in its export. Seqs 65534 and 65535 use the epoch-0 keys, 65536 and 65537 the epoch-1 keys. The server opens 65536 before 65535: 65535 then opens with the retained previous-epoch key, and its response is sealed with the previous s2c key.",
            &rekey_start,
            &sexp,
            (0..4).map(|i| ping_ex(REKEY_INTERVAL - 2 + i)).collect(),
            vec![0, 2, 1, 3],
        );

        // Records used by the negative cases.
        let ex = &main.exchanges;
        let r0 = unhx(&ex[0].request.record);
        let b0 = ex[0].request.binding.clone();
        let r1 = unhx(&ex[1].request.record);
        let b1 = ex[1].request.binding.clone();
        let r3 = unhx(&ex[3].request.record);
        let resp0 = unhx(&ex[0].response.record);
        let resp1 = unhx(&ex[1].response.record);
        let resp3 = unhx(&ex[3].response.record);
        let other_main_r0 = {
            let mut c = ClientSession::import(&unhx(&other.client_export)).unwrap();
            b0.with_binding(|b| c.seal_request(b, &unhx(&ex[0].request.plaintext)))
                .unwrap()
                .0
        };
        let (r76, _) = ping_at(&cexp, 76);
        let (r77, _) = ping_at(&cexp, 77);
        let (r1100, _) = ping_at(&cexp, 1100);
        let ping = ping_binding();
        let pt0 = unhx(&ex[0].request.plaintext);

        let with = |f: &dyn Fn(&mut HeaderLineV)| -> ReqBindingV { b0.changed(f) };
        let covered_as = |covered: &[(&str, &str)]| -> ReqBindingV {
            b0.changed(|l| l.covered = fields(covered))
        };
        // Request 0 covers authorization and x-tenant (two field lines, "acme, eu-west").
        assert_eq!(
            b0.line().covered,
            fields(&[
                ("authorization", "Bearer vec-access-token"),
                ("x-tenant", "acme, eu-west"),
            ])
        );
        let full_endpoint_binding =
            ReqBindingV::header("POST", "/.well-known/sessioncert/full", "", "");

        type Steps = Vec<(ReqBindingV, Vec<u8>)>;
        let mut sc: Vec<(&str, &str, Vec<u8>, Steps)> = Vec::new();
        sc.push((
            "ok_then_replay",
            "Request 0 opens; the identical record presented again is a replay.",
            sexp.clone(),
            vec![(b0.clone(), r0.clone()), (b0.clone(), r0.clone())],
        ));
        sc.push((
            "method_changed",
            "Request 0 presented with method PUT instead of POST.",
            sexp.clone(),
            vec![(with(&|l| l.method = "PUT".into()), r0.clone())],
        ));
        sc.push((
            "method_case_changed",
            "Method \"post\": the method is bound byte for byte, as sent.",
            sexp.clone(),
            vec![(with(&|l| l.method = "post".into()), r0.clone())],
        ));
        sc.push((
            "path_changed",
            "Request 0 presented on path /api/notes/1.",
            sexp.clone(),
            vec![(with(&|l| l.path = "/api/notes/1".into()), r0.clone())],
        ));
        sc.push((
            "query_added",
            "Request 0 presented with query \"admin=1\".",
            sexp.clone(),
            vec![(with(&|l| l.query = "admin=1".into()), r0.clone())],
        ));
        sc.push((
            "query_changed",
            "Request 1 presented with limit=6 instead of limit=5.",
            sexp.clone(),
            vec![(
                b1.changed(|l| l.query = "limit=6&tag=caf%C3%A9".into()),
                r1.clone(),
            )],
        ));
        sc.push((
            "query_moved_into_path",
            "Request 1 with its query moved into the path (path \"/api/notes?limit=5&tag=caf%C3%A9\", query \"\"): the fields are length-prefixed, so this is a different binding.",
            sexp.clone(),
            vec![(
                b1.changed(|l| {
                    l.path = "/api/notes?limit=5&tag=caf%C3%A9".into();
                    l.query.clear();
                }),
                r1.clone(),
            )],
        ));
        sc.push((
            "content_type_changed",
            "Request 0 presented with inner content type text/plain.",
            sexp.clone(),
            vec![(with(&|l| l.content_type = "text/plain".into()), r0.clone())],
        ));
        sc.push((
            "content_type_dropped",
            "Request 0 presented without the sessioncert-content-type header (bound as \"\").",
            sexp.clone(),
            vec![(with(&|l| l.content_type.clear()), r0.clone())],
        ));
        sc.push((
            "target_scheme_changed",
            "Request 0 (sealed for https://api.example.com) presented with sessioncert-target http://api.example.com: the target origin is bound, scheme included.",
            sexp.clone(),
            vec![(with(&|l| l.target = "http://api.example.com".into()), r0.clone())],
        ));
        sc.push((
            "target_host_changed",
            "Request 0 presented with sessioncert-target https://other.example.com (another host).",
            sexp.clone(),
            vec![(
                with(&|l| l.target = "https://other.example.com".into()),
                r0.clone(),
            )],
        ));
        sc.push((
            "target_default_port_written",
            "Request 0 presented with sessioncert-target https://api.example.com:443: the same origin, but the bound bytes are the origin's serialization, which omits the default port.",
            sexp.clone(),
            vec![(with(&|l| l.target = "https://api.example.com:443".into()), r0.clone())],
        ));
        sc.push((
            "covered_value_changed",
            "Request 0 with its covered authorization header replaced (Bearer other-token).",
            sexp.clone(),
            vec![(
                covered_as(&[
                    ("authorization", "Bearer other-token"),
                    ("x-tenant", "acme, eu-west"),
                ]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_field_line_dropped",
            "Request 0 with the second x-tenant field line (eu-west) removed in flight: the covered value becomes \"acme\".",
            sexp.clone(),
            vec![(
                covered_as(&[
                    ("authorization", "Bearer vec-access-token"),
                    ("x-tenant", "acme"),
                ]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_field_lines_reordered",
            "Request 0 with its two x-tenant field lines swapped: the value becomes \"eu-west, acme\" (field lines are joined in order).",
            sexp.clone(),
            vec![(
                covered_as(&[
                    ("authorization", "Bearer vec-access-token"),
                    ("x-tenant", "eu-west, acme"),
                ]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_lines_joined_without_space",
            "Request 0 with the x-tenant field lines joined as \"acme,eu-west\": the join is exactly \", \" (a proxy that merges the lines into one field line without the space breaks the request).",
            sexp.clone(),
            vec![(
                covered_as(&[
                    ("authorization", "Bearer vec-access-token"),
                    ("x-tenant", "acme,eu-west"),
                ]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_header_absent",
            "Request 0 with both x-tenant field lines removed but the name still listed in sessioncert-covered: an absent header is bound as \"\".",
            sexp.clone(),
            vec![(
                covered_as(&[("authorization", "Bearer vec-access-token"), ("x-tenant", "")]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_names_reordered",
            "Request 0 with sessioncert-covered rewritten to \"x-tenant, authorization\" (same headers, other order).",
            sexp.clone(),
            vec![(
                covered_as(&[
                    ("x-tenant", "acme, eu-west"),
                    ("authorization", "Bearer vec-access-token"),
                ]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_header_dropped_from_list",
            "Request 0 with x-tenant removed from sessioncert-covered (\"authorization\" only): covered_count 1 instead of 2.",
            sexp.clone(),
            vec![(
                covered_as(&[("authorization", "Bearer vec-access-token")]),
                r0.clone(),
            )],
        ));
        sc.push((
            "covered_list_dropped",
            "Request 0 with the sessioncert-covered header removed: covered_count 0.",
            sexp.clone(),
            vec![(covered_as(&[]), r0.clone())],
        ));
        sc.push((
            "covered_header_added",
            "Request 1 (which covers nothing) presented with sessioncert-covered: authorization and an authorization header added in flight.",
            sexp.clone(),
            vec![(
                b1.changed(|l| l.covered = fields(&[("authorization", "Bearer injected")])),
                r1.clone(),
            )],
        ));
        sc.push((
            "session_id_changed",
            "Request 0 opened by a server session with the same keys but another session id (the export's session id field patched): the session id is bound.",
            export_with_session_id(&sexp, &[0x55; 16]),
            vec![(b0.clone(), r0.clone())],
        ));
        sc.push((
            "flipped_ciphertext_byte",
            "First ciphertext byte of request 0 (offset 9) XOR 0x01.",
            sexp.clone(),
            vec![(b0.clone(), flip(&r0, 9))],
        ));
        sc.push((
            "flipped_tag_byte",
            "Last byte of request 0 (in its tag) XOR 0x01.",
            sexp.clone(),
            vec![(b0.clone(), flip_last(&r0))],
        ));
        sc.push((
            "seq_field_changed",
            "Request 0 with its sequence number field set to 1 (nonce and AD change, so it does not open); the genuine request 1 still opens afterwards.",
            sexp.clone(),
            vec![(b0.clone(), with_seq(&r0, 1)), (b1.clone(), r1.clone())],
        ));
        sc.push((
            "header_record_as_full",
            "Header-mode request 0 presented to the full-mode endpoint (binding full, record type 0x01): refused before decryption.",
            sexp.clone(),
            vec![(ReqBindingV::Full, r0.clone())],
        ));
        sc.push((
            "header_record_retyped_as_full",
            "Header-mode request 0 with its type byte rewritten to 0x02 and presented as full mode: the type is in the AD.",
            sexp.clone(),
            vec![(ReqBindingV::Full, {
                let mut r = r0.clone();
                r[0] = 0x02;
                r
            })],
        ));
        sc.push((
            "full_record_as_header",
            "Full-mode request 3 presented as a header-mode request to POST /.well-known/sessioncert/full.",
            sexp.clone(),
            vec![(full_endpoint_binding.clone(), r3.clone())],
        ));
        sc.push((
            "full_record_retyped_as_header",
            "Full-mode request 3 with its type byte rewritten to 0x01, presented in header mode.",
            sexp.clone(),
            vec![(full_endpoint_binding, {
                let mut r = r3.clone();
                r[0] = 0x01;
                r
            })],
        ));
        sc.push((
            "response_reflected_as_request",
            "The server's own response 0 (type 0x81) sent back to it as a request.",
            sexp.clone(),
            vec![(b0.clone(), resp0.clone())],
        ));
        sc.push((
            "response_retyped_as_request",
            "Response 0 with its type byte rewritten to 0x01: the directions use different keys.",
            sexp.clone(),
            vec![(b0.clone(), {
                let mut r = resp0.clone();
                r[0] = 0x01;
                r
            })],
        ));
        sc.push((
            "record_of_another_session",
            "Request 0 of the other suite's session (same binding and plaintext) presented to this session.",
            sexp.clone(),
            vec![(b0.clone(), other_main_r0)],
        ));
        sc.push((
            "replay_window_edges",
            "Seq 1100 opens (highest = 1100). 77 = 1100 - 1023 is the oldest number still inside the window and opens; 76 and 0 were never seen but are too old; 1100 and 77 again are replays.",
            sexp.clone(),
            vec![
                (ping.clone(), r1100.clone()),
                (ping.clone(), r77.clone()),
                (ping.clone(), r76.clone()),
                (b0.clone(), r0.clone()),
                (ping.clone(), r1100.clone()),
                (ping.clone(), r77.clone()),
            ],
        ));
        sc.push((
            "out_of_order_inside_window",
            "Requests 1 then 0: an older unseen number inside the window is accepted.",
            sexp.clone(),
            vec![(b1.clone(), r1.clone()), (b0.clone(), r0.clone())],
        ));
        sc.push((
            "forged_seq_does_not_move_window",
            "Request 0 with seq rewritten to 1100 is refused, and must not advance the window: the genuine request 0 still opens.",
            sexp.clone(),
            vec![(b0.clone(), with_seq(&r0, 1100)), (b0.clone(), r0.clone())],
        ));
        sc.push((
            "forged_next_epoch_does_not_rekey",
            "Request 0 with seq rewritten to 65536 (next epoch) is refused and must not ratchet the key: request 0 still opens.",
            sexp.clone(),
            vec![
                (b0.clone(), with_seq(&r0, REKEY_INTERVAL)),
                (b0.clone(), r0.clone()),
            ],
        ));
        sc.push((
            "seq_two_epochs_ahead",
            "Request 0 with seq rewritten to 2 × 65536.",
            sexp.clone(),
            vec![(b0.clone(), with_seq(&r0, 2 * REKEY_INTERVAL))],
        ));
        sc.push((
            "seq_beyond_max_messages",
            "Request 0 with seq rewritten to 2^32 (MAX_MESSAGES): an unauthenticated number past the budget is a forgery (rejected, not session_expired); the genuine request 0 still opens.",
            sexp.clone(),
            vec![(b0.clone(), with_seq(&r0, MAX_MESSAGES)), (b0.clone(), r0.clone())],
        ));
        sc.push((
            "record_too_short",
            "24 bytes: a header and 15 bytes, shorter than a tag.",
            sexp.clone(),
            vec![(b0.clone(), r0[..24].to_vec())],
        ));
        sc.push((
            "unknown_record_type",
            "Type byte 0x05 (0x03 and 0x04 are stream types, PROTOCOL §8.5).",
            sexp.clone(),
            vec![(b0.clone(), {
                let mut r = r0.clone();
                r[0] = 0x05;
                r
            })],
        ));
        sc.push((
            "empty_record",
            "An empty body.",
            sexp.clone(),
            vec![(b0.clone(), Vec::new())],
        ));

        let server_open_cases = sc
            .into_iter()
            .map(|(name, description, export, steps)| {
                let outcomes = run_server_steps(&export, &steps);
                ServerOpenCaseV {
                    name: name.into(),
                    description: description.into(),
                    server_export: hx(&export),
                    steps: steps
                        .into_iter()
                        .zip(outcomes)
                        .map(|((binding, record), expect)| OpenStepV {
                            binding,
                            record: hx(&record),
                            expect,
                        })
                        .collect(),
                }
            })
            .collect();

        // ---- client side --------------------------------------------------------
        let exp_of = |i: usize| -> ResponseExpectation {
            let rec = unhx(&ex[i].request.record);
            ResponseExpectation {
                seq: ex[i].request.seq,
                request_tag: rec[rec.len() - 16..].try_into().unwrap(),
                full: matches!(ex[i].request.binding, ReqBindingV::Full),
            }
        };
        let rb0 = ex[0].response.binding.clone();
        let rb1 = ex[1].response.binding.clone();
        let other_resp0 = {
            let o = other;
            let mut s = ServerSession::import(&unhx(&o.server_export)).unwrap();
            let mut c = ClientSession::import(&unhx(&o.client_export)).unwrap();
            let (rec, _) = b0.with_binding(|b| c.seal_request(b, &pt0)).unwrap();
            let op = b0.with_binding(|b| s.open_request(b, &rec)).unwrap();
            // Sealed under the other session, for *our* request 0's expectation.
            let mut e = op.sealer.expectation();
            e.request_tag = exp_of(0).request_tag;
            s.seal_response_for_vectors(&e, &rb0.binding(), &unhx(&ex[0].response.plaintext))
                .unwrap()
        };
        let mut cc: Vec<(&str, &str, ResponseExpectation, RespBindingV, Vec<u8>)> = Vec::new();
        cc.push((
            "response_of_another_request",
            "Response 0 delivered as the answer to request 1 (a splice): its seq does not match.",
            exp_of(1),
            rb1.clone(),
            resp0.clone(),
        ));
        cc.push((
            "response_of_another_request_seq_rewritten",
            "Response 0 with its seq field rewritten to 1, delivered as the answer to request 1, under response 0's binding.",
            exp_of(1),
            rb0.clone(),
            with_seq(&resp0, 1),
        ));
        cc.push((
            "request_tag_mismatch",
            "Response 0 opened with an expectation whose request tag has its first byte XOR 0x01: a response is bound to the exact request record.",
            {
                let mut e = exp_of(0);
                e.request_tag[0] ^= 1;
                e
            },
            rb0.clone(),
            resp0.clone(),
        ));
        cc.push((
            "status_changed",
            "Response 0 (201) presented with status 200.",
            exp_of(0),
            RespBindingV::header(200, "application/json"),
            resp0.clone(),
        ));
        cc.push((
            "content_type_changed",
            "Response 0 presented with inner content type text/html.",
            exp_of(0),
            RespBindingV::header(201, "text/html"),
            resp0.clone(),
        ));
        cc.push((
            "flipped_ciphertext_byte",
            "First ciphertext byte of response 0 XOR 0x01.",
            exp_of(0),
            rb0.clone(),
            flip(&resp0, 9),
        ));
        cc.push((
            "flipped_tag_byte",
            "Last byte of response 0 XOR 0x01.",
            exp_of(0),
            rb0.clone(),
            flip_last(&resp0),
        ));
        cc.push((
            "request_reflected_as_response",
            "The client's own request 0 (type 0x01) returned as its response.",
            exp_of(0),
            rb0.clone(),
            r0.clone(),
        ));
        cc.push((
            "request_retyped_as_response",
            "Request 0 with its type byte rewritten to 0x81: the directions use different keys.",
            exp_of(0),
            rb0.clone(),
            {
                let mut r = r0.clone();
                r[0] = 0x81;
                r
            },
        ));
        cc.push((
            "full_response_as_header",
            "Full-mode response 3 opened as a header-mode response (status 200, no content type) to header-mode request 0.",
            exp_of(0),
            RespBindingV::header(200, ""),
            resp3.clone(),
        ));
        cc.push((
            "header_response_for_full_request",
            "Header-mode response 1 delivered as the answer to full-mode request 3.",
            exp_of(3),
            RespBindingV::Full,
            with_seq(&resp1, 3),
        ));
        cc.push((
            "response_of_another_session",
            "A response for the same seq, request tag and binding, sealed by the other suite's session.",
            exp_of(0),
            rb0.clone(),
            other_resp0,
        ));
        cc.push((
            "response_too_short",
            "Nine header bytes and no tag.",
            exp_of(0),
            rb0.clone(),
            resp0[..9].to_vec(),
        ));
        let client_open_cases = cc
            .into_iter()
            .map(|(name, description, e, binding, record)| {
                let mut c = ClientSession::import(&cexp).unwrap();
                let err = c
                    .open_response(&e, &binding.binding(), &record)
                    .expect_err(name);
                ClientOpenCaseV {
                    name: name.into(),
                    description: description.into(),
                    client_export: hx(&cexp),
                    expectation: ExpectationV::of(&e),
                    binding,
                    record: hx(&record),
                    error: code(&err),
                }
            })
            .collect();

        let spent = client_export_at(&cexp, MAX_MESSAGES);
        let client_seal_cases = vec![{
            let mut c = ClientSession::import(&spent).unwrap();
            assert!(c.is_exhausted());
            let err = ping
                .with_binding(|b| c.seal_request(b, b"ping"))
                .expect_err("spent");
            ClientSealCaseV {
                name: "message_budget_spent".into(),
                description: "next_seq = 2^32 = MAX_MESSAGES: the client refuses to seal and must handshake again.".into(),
                client_export: hx(&spent),
                binding: ping.clone(),
                plaintext: hx(b"ping"),
                error: code(&err),
            }
        }];

        // ---- refusal tags (§14.1), after the main scenario -------------------------
        let refusal_key: [u8; 32] = unhx_n(&case.keys.refusal_key);
        let closed = ErrorCode::SessionClosed.as_str();
        let expired = ErrorCode::SessionExpired.as_str();
        // The main scenario ended with close (seq 7): the server's window holds 0..=7 and
        // the client's next_seq is 8.
        let ended = unhx(&main.server_export_end);
        let client_end = unhx(&main.client_export_end);
        let mut late_client = ClientSession::import(&client_end).unwrap();
        let (late, late_exp) = b0
            .with_binding(|b| late_client.seal_request(b, &pt0))
            .unwrap();
        assert_eq!(late_exp.seq, 8);
        assert_eq!(main.exchanges.len(), 8);
        // The same session had it opened seq 1100 before it ended.
        let ended_moved = {
            let mut s = ServerSession::import(&ended).unwrap();
            ping.with_binding(|b| s.open_request(b, &r1100)).unwrap();
            s.export().to_vec()
        };
        // (name, description, server export when the session ended, record, code)
        type TagCase<'a> = (&'a str, &'a str, &'a [u8], Vec<u8>, &'a str);
        let mut rt: Vec<TagCase> = Vec::new();
        rt.push((
            "fresh_seq_session_closed",
            "The client sealed POST /api/notes (request 0's binding and plaintext) at seq 8, its next_seq after the main scenario; it reached the server after the close. Seq 8 is above the window: never accepted, so the session_closed refusal carries a tag.",
            &ended,
            late.clone(),
            closed,
        ));
        rt.push((
            "fresh_seq_session_expired",
            "The same request refused with session_expired: the code is in the tag.",
            &ended,
            late.clone(),
            expired,
        ));
        let late_stream = {
            let mut c = ClientSession::import(&client_end).unwrap();
            b0.with_binding(|b| c.seal_request_stream(b, &pt0, true))
                .unwrap()
                .bytes
        };
        rt.push((
            "stream_request_session_closed",
            "The same request sent as a one-chunk stream (type 0x03, PROTOCOL §8.5) at seq 8, refused with session_closed: a streamed request is tagged as a single record is (the tag covers seq and code only).",
            &ended,
            late_stream,
            closed,
        ));
        rt.push((
            "accepted_seq",
            "Request 0 of the main scenario (seq 0) presented again after the close: the window accepted seq 0 (it ran), so no tag.",
            &ended,
            r0.clone(),
            closed,
        ));
        rt.push((
            "code_rejected",
            "The seq-8 request refused with rejected: only session_expired and session_closed may carry a tag.",
            &ended,
            late.clone(),
            ErrorCode::Rejected.as_str(),
        ));
        rt.push((
            "code_unavailable",
            "The seq-8 request refused with unavailable: not an end of the session, no tag.",
            &ended,
            late.clone(),
            ErrorCode::Unavailable.as_str(),
        ));
        rt.push((
            "record_too_short",
            "The first 24 bytes of the seq-8 request: the record header does not parse, no tag.",
            &ended,
            late[..24].to_vec(),
            closed,
        ));
        rt.push((
            "inside_window_unmarked",
            "The session had opened seq 1100 before it ended (highest 1100). Seq 77 = 1100 - 1023, the oldest number inside the window, was never accepted: tagged.",
            &ended_moved,
            r77.clone(),
            closed,
        ));
        rt.push((
            "below_window_edge",
            "Same session: seq 76 is below the window. It was never accepted, but the window cannot prove it: no tag.",
            &ended_moved,
            r76.clone(),
            closed,
        ));
        rt.push((
            "below_window",
            "Same session: the seq-8 request that was tagged above gets no tag once the window has moved past it.",
            &ended_moved,
            late.clone(),
            closed,
        ));
        let refusal_tag_cases: Vec<RefusalTagCaseV> = rt
            .into_iter()
            .map(|(name, description, export, record, code)| {
                let tag = run_refusal_tag(export, &record, code);
                assert_eq!(
                    tag,
                    reference_refusal_tag(export, &refusal_key, &rk.sid, &record, code),
                    "{name}"
                );
                let seq = u64::from_be_bytes(record[1..9].try_into().unwrap());
                RefusalTagCaseV {
                    name: name.into(),
                    description: description.into(),
                    server_export: hx(export),
                    record: hx(&record),
                    code: code.into(),
                    tag_input: tag.map(|_| hx(&reference::refusal_tag_input(&rk.sid, seq, code))),
                    tag: tag.map(|t| hx(&t)),
                    tag_base64url: tag.map(|t| b64(&t)),
                }
            })
            .collect();
        let tag_of = |name: &str| -> Vec<u8> {
            let c = refusal_tag_cases.iter().find(|c| c.name == name).unwrap();
            unhx(c.tag.as_ref().unwrap())
        };
        let tag_closed = tag_of("fresh_seq_session_closed");
        let tag_expired = tag_of("fresh_seq_session_expired");
        let tag_77 = tag_of("inside_window_unmarked");
        let other_tag = {
            let mut c =
                ClientSession::import(&client_export_at(&unhx(&other.client_export), 8)).unwrap();
            let (rec, _) = b0.with_binding(|b| c.seal_request(b, &pt0)).unwrap();
            run_refusal_tag(&unhx(&other.server_export), &rec, closed).unwrap()
        };
        let mut rv: Vec<(&str, &str, u64, &str, Vec<u8>)> = Vec::new();
        rv.push((
            "right_tag_session_closed",
            "The tag of fresh_seq_session_closed, for the request the client sent at seq 8: verified (the request did not run and never will).",
            8,
            closed,
            tag_closed.clone(),
        ));
        rv.push((
            "right_tag_session_expired",
            "The tag of fresh_seq_session_expired with code session_expired: verified.",
            8,
            expired,
            tag_expired.clone(),
        ));
        rv.push((
            "right_tag_inside_window",
            "The tag of inside_window_unmarked for the request sent at seq 77: verified.",
            77,
            closed,
            tag_77,
        ));
        rv.push((
            "tag_for_another_seq",
            "The seq-8 session_closed tag checked for a request sent at seq 9.",
            9,
            closed,
            tag_closed.clone(),
        ));
        rv.push((
            "tag_for_another_code",
            "The seq-8 session_closed tag presented with code session_expired.",
            8,
            expired,
            tag_closed.clone(),
        ));
        rv.push((
            "tag_of_another_session",
            "The other suite's session's session_closed tag for its own seq 8.",
            8,
            closed,
            other_tag.to_vec(),
        ));
        rv.push((
            "flipped_tag",
            "The seq-8 session_closed tag with its first byte XOR 0x01.",
            8,
            closed,
            flip(&tag_closed, 0),
        ));
        rv.push((
            "truncated_tag",
            "The seq-8 session_closed tag without its last byte.",
            8,
            closed,
            tag_closed[..31].to_vec(),
        ));
        rv.push((
            "empty_tag",
            "No tag (an empty sessioncert-refusal value).",
            8,
            closed,
            Vec::new(),
        ));
        let refusal_verify_cases = rv
            .into_iter()
            .map(|(name, description, seq, code, tag)| {
                let verified = run_refusal_verify(&client_end, seq, code, &tag);
                assert_eq!(
                    verified,
                    tag == reference::refusal_tag(&refusal_key, &rk.sid, seq, code),
                    "{name}"
                );
                RefusalVerifyCaseV {
                    name: name.into(),
                    description: description.into(),
                    client_export: hx(&client_end),
                    seq,
                    code: code.into(),
                    tag: hx(&tag),
                    verified,
                }
            })
            .collect();

        suites.push(RecordSuiteV {
            name: case.name.clone(),
            suite: case.suite,
            session_id: case.session_id.clone(),
            c2s_key: case.keys.c2s_key.clone(),
            c2s_iv: case.keys.c2s_iv.clone(),
            s2c_key: case.keys.s2c_key.clone(),
            s2c_iv: case.keys.s2c_iv.clone(),
            c2s_key_epoch1: case.keys.c2s_key_epoch1.clone(),
            s2c_key_epoch1: case.keys.s2c_key_epoch1.clone(),
            refusal_key: case.keys.refusal_key.clone(),
            client_export: case.client_export.clone(),
            server_export: case.server_export.clone(),
            scenarios: vec![main, rekey],
            server_open_cases,
            client_open_cases,
            client_seal_cases,
            refusal_tag_cases,
            refusal_verify_cases,
        });
    }
    RecordsFile {
        description: lines(&[
            "sessioncert sealed record vectors (docs/PROTOCOL.md §8-12). All byte strings are lower-case hex.",
            "Each suite starts from the confirmed sessions of the same-named case in handshake.json (client_export / server_export).",
            "record = type || u64 seq || AEAD ciphertext || 16-byte tag; nonce = iv XOR seq (last 8 bytes); ad = the associated data; epoch = seq / rekey_interval selects the key (epoch-1 keys given).",
            "scenarios: import client_export_start / server_export_start; seal every request in order (seq ascending); then in server_order the server opens each request and seals its response, and the client opens that response. Every record and both end exports must match.",
            "server_open_cases: import server_export, open each step's record with its binding in order; expect is the plaintext or the ErrorCode wire name.",
            "client_open_cases: import client_export and open record as the response described by expectation and binding; error is the ErrorCode wire name.",
            "client_seal_cases: import client_export, seal plaintext with binding; error is the ErrorCode wire name.",
            "refusal_tag_cases (PROTOCOL.md §14.1): import server_export, end the session, refuse record with code; tag is HMAC-SHA256(refusal_key, tag_input) with tag_input = \"sessioncert/1 refusal\" || session_id || u64 seq || u8 len(code) || code, or null where no tag may be issued; tag_base64url is the sessioncert-refusal header value.",
            "refusal_verify_cases: import client_export; the client checks tag for the request it sent at seq and the code in sessioncert-error; verified = the tag proves that request did not run.",
            "A header-mode request binding holds method, target (the origin, sessioncert-target), path, query, content_type and covered ([name, value] in sessioncert-covered order; a value joins the field lines of that name with \", \", \"\" when absent); headers lists the header fields it is read from, as they travel (PROTOCOL.md §8.2).",
            "HEAD requests and their responses carry no body: record_base64url is the sessioncert-record header value that carries each record (PROTOCOL.md §13).",
            "In full mode, plaintext is the known-length Binary HTTP (RFC 9292) encoding of full.",
            "A header-mode response binding holds the real status (over HTTP, 204/205/304 travel as 200 plus a sessioncert-status header; PROTOCOL.md §13).",
        ]),
        rekey_interval: REKEY_INTERVAL,
        max_messages: MAX_MESSAGES,
        replay_window: WINDOW,
        suites,
    }
}

// ---------------------------------------------------------------------------------------
// replay-window.json
// ---------------------------------------------------------------------------------------

/// Runs a sequence through a fresh window: the outcome of each step, the highest
/// accepted number and the encoded state.
pub fn run_window(seqs: &[u64]) -> (Vec<ReplayStepV>, Option<u64>, Vec<u8>) {
    let mut w = ReplayWindow::new();
    let steps = seqs
        .iter()
        .map(|&seq| ReplayStepV {
            seq,
            expect: match w.mark(seq) {
                Ok(()) => "accept".into(),
                Err(e) => code(&e),
            },
        })
        .collect();
    let mut state = Vec::new();
    w.encode_into(&mut state);
    (steps, w.highest(), state)
}

fn gen_replay_window() -> ReplayFile {
    let max = MAX_MESSAGES - 1;
    let inputs: Vec<(&str, &str, Vec<u64>)> = vec![
        (
            "in_order",
            "Consecutive numbers are accepted once each.",
            vec![0, 1, 2, 3, 2, 3],
        ),
        (
            "first_number_not_zero",
            "The first number may be anything; lower unseen numbers inside the window are still accepted.",
            vec![5, 0, 4, 0, 5],
        ),
        (
            "out_of_order",
            "Concurrent requests arriving out of order.",
            vec![10, 8, 9, 7, 10, 8, 11, 6],
        ),
        (
            "window_boundary",
            "Highest 2000: 977 (= 2000 - 1023) is the oldest acceptable number, 976 is too old.",
            vec![2000, 977, 976, 1999, 977, 2001, 977, 978],
        ),
        (
            "slide_by_exactly_window",
            "0 then 1024 (the window moves by 1024: 0 falls out).",
            vec![0, 1024, 0, 1, 1],
        ),
        (
            "ring_slot_reuse",
            "1 and 1025 share a bitmap slot; after 1025, 1 is too old and 2 is the oldest acceptable.",
            vec![1, 1025, 1, 1025, 2, 2],
        ),
        (
            "partial_slide_clears_slots",
            "0..9 accepted, then 1030: slots of numbers that slid into the window unseen are cleared (1029 and 10 accepted), 7 (= 1030 - 1023) was seen, 6 is too old.",
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1030, 1029, 10, 7, 6, 1030],
        ),
        (
            "big_jump",
            "A jump far beyond the window clears it entirely.",
            vec![3, 100_000, 3, 99_000, 98_977, 98_976, 99_999],
        ),
        (
            "near_max_messages",
            "Numbers just below 2^32 (the highest usable sequence number is 2^32 - 1).",
            vec![max, max - 1023, max - 1024, max, max - 1],
        ),
    ];
    let cases = inputs
        .into_iter()
        .map(|(name, description, seqs)| {
            let (steps, highest, state) = run_window(&seqs);
            // The reference view of the state.
            let accepted: Vec<u64> = steps
                .iter()
                .filter(|s| s.expect == "accept")
                .map(|s| s.seq)
                .collect();
            assert_eq!(state, reference::window_state(&accepted), "{name}");
            ReplayCaseV {
                name: name.into(),
                description: description.into(),
                steps,
                highest,
                state: hx(&state),
            }
        })
        .collect();
    ReplayFile {
        description: lines(&[
            "sessioncert replay window vectors (docs/PROTOCOL.md §9). Each case starts from an empty window and offers the numbers in order.",
            "A number is accepted iff it was never accepted before and (nothing was accepted yet, or it is > highest - 1024, i.e. >= highest - 1023).",
            "expect: accept, or the ErrorCode wire name of the refusal (rejected: replay and forgery look the same to a peer).",
            "state: u64 top (= highest + 1, 0 if empty) || 16 big-endian u64 words; bit (s mod 1024) — word (s mod 1024) / 64, bit (s mod 1024) % 64 — is set iff s in [top - 1024, top - 1] was accepted.",
        ]),
        window: WINDOW,
        cases,
    }
}
