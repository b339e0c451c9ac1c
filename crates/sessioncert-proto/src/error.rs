//! One error type for everything the protocol core can refuse, and the wire codes peers see.

/// The code a peer sees when something is refused. The operator's log gets the
/// precise [`ProtocolError`]; the peer gets only this, so failures do not leak
/// which check failed (BRIEF §4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The input could not be parsed (HTTP 400).
    Malformed,
    /// A body or header exceeded a limit (HTTP 413).
    TooLarge,
    /// Too many handshakes or sessions from one client (HTTP 429).
    RateLimited,
    /// No common protocol version (HTTP 400).
    UnsupportedVersion,
    /// No common suite (HTTP 400).
    NoCommonSuite,
    /// The handshake key id is unknown or no longer valid; fetch the key config again (HTTP 400).
    UnknownKey,
    /// The handshake did not authenticate (HTTP 400).
    HandshakeFailed,
    /// The session id is not known to the server; handshake again (HTTP 401).
    UnknownSession,
    /// The session ran out of lifetime, idle time or messages; handshake again (HTTP 401).
    SessionExpired,
    /// The session was closed; handshake again (HTTP 401).
    SessionClosed,
    /// A sealed message failed authentication or was a replay. Deliberately one code (HTTP 400).
    Rejected,
    /// The server failed internally (HTTP 500).
    Internal,
    /// The server is shutting down or at a server-wide capacity limit; nothing was
    /// executed. Retry after `retry-after` (HTTP 503).
    Unavailable,
    /// The request was sealed for an origin (scheme and authority) this server does not
    /// answer to (HTTP 421).
    Misdirected,
}

impl ErrorCode {
    /// The stable snake_case name used on the wire in `sessioncert-error` and JSON bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::NoCommonSuite => "no_common_suite",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::HandshakeFailed => "handshake_failed",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::SessionClosed => "session_closed",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Misdirected => "misdirected",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Every code, for docs and tests.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::UnsupportedVersion,
        ErrorCode::NoCommonSuite,
        ErrorCode::UnknownKey,
        ErrorCode::HandshakeFailed,
        ErrorCode::UnknownSession,
        ErrorCode::SessionExpired,
        ErrorCode::SessionClosed,
        ErrorCode::Rejected,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Misdirected,
    ];

    /// The HTTP status this code is sent with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::UnknownSession | ErrorCode::SessionExpired | ErrorCode::SessionClosed => 401,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::Misdirected => 421,
            _ => 400,
        }
    }

    /// Whether the client should run a fresh handshake and retry once.
    pub const fn needs_new_handshake(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownSession
                | ErrorCode::SessionExpired
                | ErrorCode::SessionClosed
                | ErrorCode::UnknownKey
        )
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the core can refuse. Peer-caused problems are values, never panics.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Input was truncated, too long, or had an impossible field.
    #[error("malformed {what}")]
    Malformed {
        /// Which structure failed to parse.
        what: &'static str,
    },
    /// The peer offered no version we speak.
    #[error("no common protocol version")]
    UnsupportedVersion,
    /// The peer offered no suite we accept.
    #[error("no common suite")]
    NoCommonSuite,
    /// The handshake key id is unknown or outside its validity.
    #[error("unknown or expired handshake key id {0}")]
    UnknownKey(u8),
    /// A Noise message did not authenticate, or a confirmation did not match.
    #[error("handshake failed: {0}")]
    HandshakeFailed(&'static str),
    /// The key configuration's signature or identity did not match the pin.
    #[error("key configuration not trusted: {0}")]
    UntrustedConfig(&'static str),
    /// A sealed record failed authentication.
    #[error("sealed message failed authentication")]
    BadSeal,
    /// A sequence number was already seen or is too old for the replay window.
    #[error("replayed or too old sequence number {0}")]
    Replay(u64),
    /// The message budget of the session is spent.
    #[error("session message budget exhausted")]
    Exhausted,
    /// A stream ended before its last chunk: it was cut short (PROTOCOL §8.5).
    #[error("sealed stream ended before its last chunk")]
    Truncated,
    /// The system random generator failed.
    #[error("random number generator failed")]
    Random,
    /// A primitive refused its input (wrong key length and similar; a local bug, not peer input).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Malformed`].
    pub(crate) const fn malformed(what: &'static str) -> Self {
        ProtocolError::Malformed { what }
    }

    /// The code a peer is told.
    pub const fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed { .. } => ErrorCode::Malformed,
            ProtocolError::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            ProtocolError::NoCommonSuite => ErrorCode::NoCommonSuite,
            ProtocolError::UnknownKey(_) => ErrorCode::UnknownKey,
            ProtocolError::HandshakeFailed(_) | ProtocolError::UntrustedConfig(_) => {
                ErrorCode::HandshakeFailed
            }
            ProtocolError::BadSeal | ProtocolError::Replay(_) | ProtocolError::Truncated => {
                ErrorCode::Rejected
            }
            ProtocolError::Exhausted => ErrorCode::SessionExpired,
            ProtocolError::Random | ProtocolError::Crypto(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_unique_names_that_parse_back() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn replay_and_bad_seal_look_the_same_to_the_peer() {
        assert_eq!(
            ProtocolError::Replay(3).code(),
            ProtocolError::BadSeal.code()
        );
    }
}
