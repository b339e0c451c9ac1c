//! Session identifiers: 16 random bytes chosen by the server, sent as unpadded base64url.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use core::fmt;
use core::str::FromStr;

/// Length of a session id in bytes.
pub const SESSION_ID_LEN: usize = 16;

/// A session identifier. It is not secret (it travels in a header) but it is
/// unguessable, so it cannot be used to probe for other clients' sessions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Result<Self, crate::ProtocolError> {
        let mut b = [0u8; SESSION_ID_LEN];
        crate::crypto::fill_random(&mut b)?;
        Ok(SessionId(b))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }

    /// Parses raw bytes; `None` unless exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The text is not a base64url session id of 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed session id")]
pub struct MalformedSessionId;

impl FromStr for SessionId {
    type Err = MalformedSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 22 {
            return Err(MalformedSessionId);
        }
        // Decoded on the stack: this runs on every sealed request.
        let mut buf = [0u8; 18];
        let n = URL_SAFE_NO_PAD
            .decode_slice(s, &mut buf)
            .map_err(|_| MalformedSessionId)?;
        SessionId::from_slice(&buf[..n]).ok_or(MalformedSessionId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_rejects_junk() {
        let id = SessionId([7u8; 16]);
        let s = id.to_string();
        assert_eq!(s.len(), 22);
        assert_eq!(s.parse::<SessionId>().unwrap(), id);
        assert!("".parse::<SessionId>().is_err());
        assert!("!!!!!!!!!!!!!!!!!!!!!!".parse::<SessionId>().is_err());
        assert!(format!("{s}A").parse::<SessionId>().is_err());
    }
}
