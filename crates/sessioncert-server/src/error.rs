//! Server errors (for the operator) and refusals (what a peer sees).

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use sessioncert_proto::wire::{ERROR_HEADER, REFUSAL_HEADER};
use sessioncert_proto::{ErrorCode, ProtocolError};
use std::path::{Path, PathBuf};

/// Errors setting up or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file exists but is not usable.
    #[error("{0}: {1}")]
    KeyFile(PathBuf, &'static str),
    /// A key file that group or others may access.
    #[error(
        "{}: permissions {mode:04o} are too open: a key file must be private to its owner \
         (chmod 600 {})",
        .path.display(),
        .path.display()
    )]
    KeyFileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Session secrets at rest did not open (wrong storage key or corrupt row).
    #[error("sealed session secrets did not open (wrong storage key?)")]
    AtRest,
    /// The protocol core refused something.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The session store failed.
    #[error("session store: {0}")]
    Store(#[from] sessioncert_store::StoreError),
}

impl ServerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A refusal sent to a peer: a code it may act on; the reason stays in the log.
#[derive(Debug)]
pub struct Refusal {
    /// The wire code.
    pub code: ErrorCode,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The `sessioncert-refusal` tag proving the request did not run (PROTOCOL §14.1).
    pub tag: Option<[u8; 32]>,
    /// A more precise explanation than the code's own, for the body's `message`.
    pub detail: Option<&'static str>,
}

impl Refusal {
    /// A refusal with `code`.
    pub const fn new(code: ErrorCode) -> Self {
        Refusal {
            code,
            retry_after: None,
            tag: None,
            detail: None,
        }
    }

    /// A refusal with `code` and a `retry-after` of `seconds`.
    pub const fn retry_after(code: ErrorCode, seconds: u64) -> Self {
        Refusal {
            code,
            retry_after: Some(seconds),
            tag: None,
            detail: None,
        }
    }

    /// The same refusal, explained by `detail` instead of the code's own message.
    pub const fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    fn message(&self) -> &'static str {
        if let Some(d) = self.detail {
            return d;
        }
        match self.code {
            ErrorCode::Malformed => "the request could not be parsed",
            ErrorCode::TooLarge => "the request body is too large",
            ErrorCode::RateLimited => "too many handshakes or sessions from this client address",
            ErrorCode::UnsupportedVersion => "no common protocol version",
            ErrorCode::NoCommonSuite => "no common cipher suite",
            ErrorCode::UnknownKey => "unknown handshake key; fetch the key configuration again",
            ErrorCode::HandshakeFailed => "the handshake failed",
            ErrorCode::UnknownSession => "unknown session; run a new handshake",
            ErrorCode::SessionExpired => "the session expired; run a new handshake",
            ErrorCode::SessionClosed => "the session was closed; run a new handshake",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Internal => "internal error",
            ErrorCode::Misdirected => {
                "the request was sealed for an origin this server does not answer to"
            }
            ErrorCode::Unavailable => {
                "the server is shutting down or at capacity; the request was not executed (a copy held on the way could still be: check before retrying a non-idempotent request)"
            }
        }
    }
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal::new(e.code())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = format!(
            "{{\"error\":\"{}\",\"message\":\"{}\"}}",
            self.code.as_str(),
            self.message()
        );
        let mut r = (status, body).into_response();
        // Read by the access log and the refusal counter (one place for every refusal).
        r.extensions_mut()
            .insert(crate::telemetry::Refused(self.code));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code.as_str()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(tag) = self.tag {
            use base64::Engine as _;
            let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(REFUSAL_HEADER, v);
            }
        }
        r
    }
}
