//! The client's error type.

use http::{Method, StatusCode};
use sessioncert_proto::{ErrorCode, Pin, ProtocolError};
use std::path::PathBuf;
use std::time::Duration;

/// Whether a refusal (a response carrying `sessioncert-error`) is known to come from
/// the server.
///
/// Protocol v1 refusals are plain HTTP: anyone on the path can forge one, for example
/// after letting the real server execute the request. Such a refusal therefore says
/// nothing reliable about whether the request was executed, and the client never
/// re-sends a request that is not retry-safe because of one. A later protocol version
/// will MAC refusals under the session's key; such a refusal proves the server refused
/// the request without executing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalAuthenticity {
    /// A plain HTTP refusal. It may be forged.
    Unauthenticated,
    /// A refusal whose `sessioncert-refusal` tag verified under the session's refusal
    /// key (PROTOCOL §14.1): the server ended the session without executing this
    /// request, and nothing will ever execute in that session again.
    Authenticated,
}

/// The kinds of [`ClientError::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate was refused: not issued by a trusted CA, expired, not
    /// for this name, …
    Certificate,
    /// The server did not answer in TLS (an `https://` URL for a plain HTTP server).
    NotTls,
    /// Any other handshake failure (no common protocol version or cipher suite, an
    /// alert from the server, …).
    Handshake,
}

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
    /// sealed ([`RefusalAuthenticity::Unauthenticated`]), so an attacker on the path can
    /// forge them: the client treats them as denial of service at worst and never
    /// re-sends a request that is not retry-safe because of one (see
    /// [`ClientError::OutcomeUnknown`]).
    #[error(
        "server refused the request: {} (HTTP {status}){}",
        refusal_label(*.code, *.status),
        message_suffix(.message)
    )]
    Rejected {
        /// HTTP status of the refusal.
        status: StatusCode,
        /// The `sessioncert-error` code.
        code: ErrorCode,
        /// The server's short human-readable explanation (may be empty).
        message: String,
        /// The `retry-after` delay, if the server sent one (usually with `rate_limited`).
        retry_after: Option<Duration>,
        /// Whether the refusal is known to come from the server (PROTOCOL §14.1).
        authenticity: RefusalAuthenticity,
    },

    /// The request may or may not have been executed by the server, and the client did
    /// **not** re-send it.
    ///
    /// This happens to a request that is not retry-safe (see
    /// [`crate::RequestBuilder::idempotent`]) when, after it was sent,
    ///
    /// * the server (or someone on the path: refusals are not authenticated) answered
    ///   that the session is unknown, expired or closed — an attacker can let the real
    ///   server execute a request and then forge that answer, so re-sending
    ///   automatically could execute it twice; or
    /// * any other refusal came back (`rejected`, `unavailable`, `internal`, …): it is
    ///   just as unauthenticated; or
    /// * the connection failed (a timeout, a reset) after the request may have reached
    ///   the server.
    ///
    /// * the response could not be opened (unsealed, tampered with).
    ///
    /// The client then closes the session with a sealed close and drops it (the next
    /// request handshakes anew). When the server answers that close (`settled`), no
    /// copy of the request held on the path can ever run later: check whether it took
    /// effect (for example read the resource back), and a retry cannot make it run
    /// twice. When the close did not go through, a held copy could still run while the
    /// session lives. `cause` is the underlying error.
    #[error("{}", outcome_unknown_message(.method, .cause, *.settled))]
    OutcomeUnknown {
        /// The method of the request whose outcome is unknown.
        method: Method,
        /// What happened: a [`ClientError::Rejected`] refusal, a [`ClientError::Http`]
        /// transport failure, or a response that did not open.
        #[source]
        cause: Box<ClientError>,
        /// Whether the server confirmed (sealed) the close of the session afterwards,
        /// so the request can no longer run later.
        settled: bool,
    },

    /// A streamed response ended before its sealed last chunk: the connection closed or
    /// failed in the middle of the body. The part already yielded is authentic but
    /// incomplete; never take it for the whole body.
    #[error("the response was cut short after {received} bytes of its body{}", cause_suffix(.cause))]
    Truncated {
        /// Body bytes opened before the end.
        received: u64,
        /// The transport failure, if the connection did not simply close.
        #[source]
        cause: Option<Box<ClientError>>,
    },

    /// Nothing moved for `idle` while a streamed request was being sent or its response
    /// read ([`crate::ClientBuilder::idle_timeout`]).
    #[error("no progress for {} s while streaming", .idle.as_secs_f64())]
    Stalled {
        /// The idle timeout that ran out.
        idle: Duration,
    },

    /// A request body from a stream was larger than `limit` bytes and could not be sent
    /// as a stream because the server did not negotiate streamed records (an older
    /// server, or one that turned them off): it would have to be buffered whole, and
    /// the client buffers at most [`crate::ClientBuilder::max_buffered_body`]. Nothing
    /// was sent.
    #[error(
        "the request body is larger than {limit} bytes and the server did not negotiate \
         streamed bodies, so it would have to be buffered whole; nothing was sent"
    )]
    StreamsNotNegotiated {
        /// The most the client buffers.
        limit: usize,
    },

    /// The request had to be sent once more (after `cause`, a session refusal, it is
    /// safe to send twice), but its body was a one-shot stream that the first attempt
    /// consumed. Send it again with a fresh body, or give a file
    /// ([`crate::RequestBuilder::body_file`]), which is read anew for each attempt.
    #[error("the request would be sent again after: {cause}; but its body was a one-shot stream, already consumed")]
    BodyNotReplayable {
        /// Why it had to be sent again.
        #[source]
        cause: Box<ClientError>,
    },

    /// A protocol message failed to parse or authenticate (for example a tampered
    /// sealed response: [`ProtocolError::BadSeal`]).
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),

    /// The transport failed (connect, timeout, I/O).
    #[error("HTTP transport error")]
    Http(#[source] reqwest::Error),

    /// The TLS handshake with the server failed while connecting, so nothing of the
    /// request was sent: its certificate is not trusted (unknown issuer, expired, for
    /// another name; see [`crate::TlsOptions`] to trust a CA), it does not speak TLS,
    /// or the handshake broke off.
    #[error("TLS: {detail}")]
    Tls {
        /// What kind of failure.
        kind: TlsFailure,
        /// One line saying what went wrong, naming the host.
        detail: String,
        /// The transport error that carried it.
        #[source]
        source: reqwest::Error,
    },

    /// CA certificates given to [`crate::TlsOptions`] could not be used: the file is
    /// unreadable, holds no PEM certificate, or a certificate in it does not parse.
    #[error("CA certificates from {origin}: {reason}")]
    CaCertificates {
        /// Where they came from (the file's path).
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// The response to a sealed request was neither sealed nor a refusal. Its body was
    /// discarded: it is not authenticated and must not be mistaken for the answer.
    #[error("response to a sealed request was not sealed (HTTP {status}){}", unsealed_hint(*.status))]
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

    /// Another process — or another [`crate::Client`] in this process — is using this
    /// session file: it held the file's lock (`lock_path`) for longer than the wait
    /// allowed by [`crate::ClientBuilder::session_file_lock_timeout`]. Two users of one
    /// session file would seal different requests under the same nonce, so a session
    /// file is used by one client at a time.
    #[error(
        "session file {} is in use by another process (or another client in this process): \
         its lock {} was still held after waiting {}; use one session file per process, \
         or wait until the other one has finished",
        .path.display(),
        .lock_path.display(),
        wait_text(.waited)
    )]
    SessionFileBusy {
        /// The session file.
        path: PathBuf,
        /// The lock file beside it (`<file>.lock`).
        lock_path: PathBuf,
        /// How long the client waited for the lock.
        waited: Duration,
    },

    /// The path given for a session file holds something that is not a session file
    /// (another file, a directory, …). It was left untouched.
    #[error(
        "{} exists and is not a sessioncert session file ({reason}); refusing to overwrite \
         it: choose another path for the session file",
        .path.display()
    )]
    NotASessionFile {
        /// The path.
        path: PathBuf,
        /// What was found there.
        reason: String,
    },

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

impl From<reqwest::Error> for ClientError {
    /// A failed TLS handshake becomes [`ClientError::Tls`]; anything else
    /// [`ClientError::Http`].
    fn from(e: reqwest::Error) -> Self {
        #[cfg(feature = "tls")]
        if let Some((kind, detail)) = crate::tls::handshake_failure(&e) {
            return ClientError::Tls {
                kind,
                detail,
                source: e,
            };
        }
        ClientError::Http(e)
    }
}

fn cause_suffix(c: &Option<Box<ClientError>>) -> String {
    match c {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    }
}

fn presented_suffix(p: &Option<Pin>) -> String {
    match p {
        Some(p) => format!(" (configuration claims identity {p})"),
        None => String::new(),
    }
}

/// The name a refusal is reported under: its code, except where the code's name would
/// mislead (a body that arrived too slowly is refused with `malformed` on the wire).
fn refusal_label(code: ErrorCode, status: StatusCode) -> String {
    match status {
        StatusCode::REQUEST_TIMEOUT => format!("timed out ({code})"),
        _ => code.to_string(),
    }
}

/// What an unsealed answer with a limit's status most likely means.
fn unsealed_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        408 => ": the server or a proxy on the way timed out waiting for the request",
        413 => ": the server or a proxy on the way refused the request body as too large",
        414 => ": the server or a proxy on the way refused the URL as too long",
        429 => ": the server or a proxy on the way is rate limiting this client",
        431 => {
            ": the server or a proxy on the way refused the request's headers as too large \
             (fewer or smaller -H headers)"
        }
        502..=504 => ": a proxy on the way could not reach the server",
        _ => "",
    }
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

fn wait_text(d: &Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn outcome_unknown_message(method: &Method, cause: &ClientError, settled: bool) -> String {
    let what = match cause {
        ClientError::Rejected { code, status, .. } if code.needs_new_handshake() => format!(
            "The session was refused ({code}, HTTP {}) after the request was sent, and \
             refusals are not authenticated: this one may have been forged after the server \
             executed the request",
            status.as_u16()
        ),
        ClientError::Rejected { code, status, .. } => format!(
            "The server answered with a refusal ({code}, HTTP {}) after the request was \
             sent; refusals are not authenticated, so it may have been forged after the \
             server executed the request",
            status.as_u16()
        ),
        ClientError::Http(e) if e.is_timeout() => {
            "The request timed out after it was sent".to_string()
        }
        ClientError::Http(_) => "The connection failed after the request was sent".to_string(),
        other => format!("{other}"),
    };
    let after = if settled {
        "The session is now closed (the server confirmed it), so no copy of it can start \
         later (with several server instances, one already running at another instance \
         may still be finishing): check whether it took effect, then retry if it did not"
    } else {
        "Closing the session did not go through, so a copy held on the way could still \
         run until the session expires: check whether it took effect before retrying"
    };
    format!(
        "outcome unknown: the server may or may not have executed this {method} request. \
         {what}. It was not re-sent, because {method} is not marked safe to send twice. \
         {after}"
    )
}

fn status_suffix(s: &Option<StatusCode>) -> String {
    match s {
        Some(s) => format!(" (HTTP {})", s.as_u16()),
        None => String::new(),
    }
}

impl ClientError {
    /// The `sessioncert-error` code of a refusal, if this is one. `None` for
    /// [`ClientError::OutcomeUnknown`] even when its cause is a refusal: code that
    /// re-sends on a session refusal must not re-send a request whose outcome is unknown.
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

    /// Whether the TLS handshake with the server failed ([`ClientError::Tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls { .. })
    }

    /// Whether a sealed message failed authentication (tampering or a wrong key).
    pub fn is_bad_seal(&self) -> bool {
        match self {
            ClientError::Protocol(ProtocolError::BadSeal) => true,
            ClientError::OutcomeUnknown { cause, .. } => cause.is_bad_seal(),
            _ => false,
        }
    }

    /// Whether this is a timeout of the transport (also when it is the cause of a
    /// [`ClientError::OutcomeUnknown`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            ClientError::Http(e) => e.is_timeout(),
            ClientError::Stalled { .. } => true,
            ClientError::OutcomeUnknown { cause, .. } => cause.is_timeout(),
            _ => false,
        }
    }

    /// Whether a streamed response was cut short ([`ClientError::Truncated`]).
    pub fn is_truncated(&self) -> bool {
        matches!(self, ClientError::Truncated { .. })
    }

    /// Whether the server may or may not have executed the request
    /// ([`ClientError::OutcomeUnknown`]): check before sending it again.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown { .. })
    }

    pub(crate) fn unexpected(status: Option<StatusCode>, detail: impl Into<String>) -> Self {
        ClientError::UnexpectedResponse {
            status,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn a_slow_body_refusal_reads_as_a_timeout_not_as_malformed() {
        let e = ClientError::Rejected {
            status: StatusCode::REQUEST_TIMEOUT,
            code: ErrorCode::Malformed,
            message: "the request body arrived too slowly".into(),
            retry_after: None,
            authenticity: RefusalAuthenticity::Unauthenticated,
        };
        let text = e.to_string();
        assert!(
            text.starts_with("server refused the request: timed out"),
            "{text}"
        );
        let e = ClientError::Rejected {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::Malformed,
            message: String::new(),
            retry_after: None,
            authenticity: RefusalAuthenticity::Unauthenticated,
        };
        assert_eq!(
            e.to_string(),
            "server refused the request: malformed (HTTP 400 Bad Request)"
        );
    }

    #[test]
    fn an_unsealed_limit_answer_says_which_limit() {
        let e = ClientError::Unsealed {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        };
        assert!(e.to_string().contains("headers as too large"), "{e}");
        let e = ClientError::Unsealed {
            status: StatusCode::OK,
        };
        assert_eq!(
            e.to_string(),
            "response to a sealed request was not sealed (HTTP 200 OK)"
        );
    }
}
