//! The client's error type.

use http::StatusCode;
use sessioncert_proto::{ErrorCode, Pin, ProtocolError};
use std::time::Duration;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server's key configuration is not trusted: its identity differs from the
    /// pin, its signature does not verify, or it has no handshake key valid now.
    /// Nothing was sent to the server's protected routes.
    #[error("server identity not trusted: {reason}{}", presented_suffix(.presented))]
    Untrusted {
        /// Why the configuration was refused.
        reason: &'static str,
        /// The identity the configuration *claims* (unverified), if it could be parsed.
        presented: Option<Pin>,
    },

    /// The server refused a request with a `sessioncert-error` code. Refusals are not
    /// sealed, so an attacker on the path can forge them (denial of service only).
    #[error("server refused the request: {code} (HTTP {status}){}", message_suffix(.message))]
    Rejected {
        /// HTTP status of the refusal.
        status: StatusCode,
        /// The `sessioncert-error` code.
        code: ErrorCode,
        /// The server's short human-readable explanation (may be empty).
        message: String,
        /// The `retry-after` delay, if the server sent one (usually with `rate_limited`).
        retry_after: Option<Duration>,
    },

    /// A protocol message failed to parse or authenticate (for example a tampered
    /// sealed response: [`ProtocolError::BadSeal`]).
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),

    /// The transport failed (connect, timeout, I/O).
    #[error("HTTP transport error")]
    Http(#[from] reqwest::Error),

    /// The response to a sealed request was neither sealed nor a refusal. Its body was
    /// discarded: it is not authenticated and must not be mistaken for the answer.
    #[error("response to a sealed request was not sealed (HTTP {status})")]
    Unsealed {
        /// HTTP status of the unsealed response.
        status: StatusCode,
    },

    /// An authenticated response had an error status (from
    /// [`crate::Response::error_for_status`]).
    #[error("HTTP status {status}")]
    Status {
        /// The (authenticated) status.
        status: StatusCode,
        /// The decrypted body.
        body: bytes::Bytes,
    },

    /// The server answered something the protocol does not allow (wrong status on a
    /// handshake endpoint, an unknown error code, an oversized body, …).
    #[error("unexpected response{}: {detail}", status_suffix(.status))]
    UnexpectedResponse {
        /// HTTP status, when there was a response.
        status: Option<StatusCode>,
        /// What was wrong.
        detail: String,
    },

    /// The base URL is unusable.
    #[error("invalid base URL: {0}")]
    InvalidUrl(String),

    /// The request could not be built (bad header, reserved header, unsupported method
    /// for the mode, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// There is no session (e.g. [`crate::Client::save_session`] before any handshake).
    #[error("no session established")]
    NoSession,

    /// A session file could not be written or parsed.
    #[error("session file: {0}")]
    SessionFile(String),

    /// Local I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A JSON body could not be encoded or decoded.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    /// A body was not valid UTF-8.
    #[error("body is not valid UTF-8")]
    Utf8(#[from] std::string::FromUtf8Error),
}

fn presented_suffix(p: &Option<Pin>) -> String {
    match p {
        Some(p) => format!(" (configuration claims identity {p})"),
        None => String::new(),
    }
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

fn status_suffix(s: &Option<StatusCode>) -> String {
    match s {
        Some(s) => format!(" (HTTP {})", s.as_u16()),
        None => String::new(),
    }
}

impl ClientError {
    /// The `sessioncert-error` code of a refusal, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the server's identity was not trusted.
    pub fn is_untrusted(&self) -> bool {
        matches!(self, ClientError::Untrusted { .. })
    }

    /// Whether a sealed message failed authentication (tampering or a wrong key).
    pub fn is_bad_seal(&self) -> bool {
        matches!(self, ClientError::Protocol(ProtocolError::BadSeal))
    }

    /// Whether this is a timeout of the transport.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Http(e) if e.is_timeout())
    }

    pub(crate) fn unexpected(status: Option<StatusCode>, detail: impl Into<String>) -> Self {
        ClientError::UnexpectedResponse {
            status,
            detail: detail.into(),
        }
    }
}
