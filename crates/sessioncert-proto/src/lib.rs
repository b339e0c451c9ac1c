//! The sans-I/O core of sessioncert.
//!
//! No sockets, no async runtime, no clock: every function takes bytes (and the time,
//! where it matters) and returns bytes or a typed error, so the same code runs in the
//! server, the clients and on wasm32. The wire format is specified in
//! `docs/PROTOCOL.md`; `test-vectors/` pins it byte for byte.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
pub mod config;
pub mod crypto;
mod error;
pub mod full;
pub mod handshake;
pub mod identity;
pub mod record;
pub mod replay;
pub mod session;
mod session_id;
mod session_state;
pub mod stream;

pub use config::{KeyConfig, SignedKeyConfig, Trust, VerifiedKeyConfig};
pub use crypto::Suite;
pub use error::{ErrorCode, ProtocolError};
pub use handshake::{
    respond, ClientHandshake, ClientOffer, ConfirmFailed, Confirmation, PendingServerSession,
    ServerHello, ServerPolicy, UnconfirmedClientSession,
};
pub use identity::{HandshakeKeyPair, IdentityKey, Pin};
pub use record::{RequestBinding, RequestLine, ResponseBinding};
pub use session::{
    ClientSession, EndedSession, OpenedInPlace, OpenedRequest, OpenedRequestStream,
    RequestStreamStart, ResponseExpectation, ResponseSealer, SealFailed, ServerSession,
};
pub use session_id::{MalformedSessionId, SessionId, SESSION_ID_LEN};
pub use session_state::{SessionState, UnknownSessionState};
pub use stream::{StreamOpener, StreamSealer};

/// HTTP names shared by every implementation.
pub mod wire {
    /// Path of the signed key configuration (GET).
    pub const CONFIG_PATH: &str = "/.well-known/sessioncert/config";
    /// Path of the handshake (POST, client hello → server hello).
    pub const HANDSHAKE_PATH: &str = "/.well-known/sessioncert/handshake";
    /// Path of the stand-alone key confirmation (POST, confirmation → 204).
    pub const CONFIRM_PATH: &str = "/.well-known/sessioncert/confirm";
    /// Path of explicit session close (POST, sealed empty request → sealed empty response).
    pub const CLOSE_PATH: &str = "/.well-known/sessioncert/close";
    /// Path of full-request mode (POST, sealed Binary HTTP request).
    pub const FULL_PATH: &str = "/.well-known/sessioncert/full";
    /// Header carrying the session id.
    pub const SESSION_HEADER: &str = "sessioncert-id";
    /// Header carrying the inner (sealed) content type in header mode.
    pub const CONTENT_TYPE_HEADER: &str = "sessioncert-content-type";
    /// Header carrying the real status in header mode when that status forbids a body
    /// (204, 205, 304): the sealed response then goes out as 200 with this header, and the
    /// real status is what the seal binds.
    pub const STATUS_HEADER: &str = "sessioncert-status";
    /// Header carrying an error code on a refusal.
    pub const ERROR_HEADER: &str = "sessioncert-error";
    /// Header carrying the key confirmation (unpadded base64url) on the first requests
    /// of a session (PROTOCOL §6.8).
    pub const CONFIRM_HEADER: &str = "sessioncert-confirm";
    /// Header carrying a refusal's authentication tag (unpadded base64url, §14.1).
    pub const REFUSAL_HEADER: &str = "sessioncert-refusal";
    /// Header naming the origin a header-mode request is sealed for,
    /// `scheme://authority` (PROTOCOL §8.2); bound in the associated data.
    pub const TARGET_HEADER: &str = "sessioncert-target";
    /// Header listing the request headers a header-mode request binds: lower-case names,
    /// comma-separated (this implementation writes `", "`; PROTOCOL §8.2).
    pub const COVERED_HEADER: &str = "sessioncert-covered";
    /// Header carrying a record (unpadded base64url) where HTTP allows no body: the
    /// request and the response of `HEAD` (PROTOCOL §13).
    pub const RECORD_HEADER: &str = "sessioncert-record";
    /// Content type of sealed bodies.
    pub const SEALED_CONTENT_TYPE: &str = "application/sessioncert-sealed";
    /// Content type of handshake messages and the key configuration.
    pub const HANDSHAKE_CONTENT_TYPE: &str = "application/sessioncert-handshake";
}
