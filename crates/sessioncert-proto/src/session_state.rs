//! The lifecycle states of a session as operators see them (the seed's states).

use core::fmt;
use core::str::FromStr;

/// Where a session is in its life.
///
/// `Init` exists only inside a handshake in progress and is never stored; a server
/// stores a session first as `Matching` (server hello sent, client key confirmation
/// outstanding), then `Established`, and finally `Expired` or `Closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// The handshake has started and nothing is agreed yet.
    Init,
    /// Keys are derived on both sides; the client has not yet proven it holds them.
    Matching,
    /// Both sides proved they hold the same keys; sealed traffic is accepted.
    Established,
    /// Lifetime, idle timeout or message budget ran out, or the server restarted uncleanly.
    Expired,
    /// Closed by the client or an operator.
    Closed,
}

impl SessionState {
    /// The stable lower-case name used in storage, logs and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionState::Init => "init",
            SessionState::Matching => "matching",
            SessionState::Established => "established",
            SessionState::Expired => "expired",
            SessionState::Closed => "closed",
        }
    }

    /// Whether sealed traffic may still flow (or become able to) in this state.
    pub const fn is_live(self) -> bool {
        matches!(self, SessionState::Matching | SessionState::Established)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the five state names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown session state {0:?}")]
pub struct UnknownSessionState(pub String);

impl FromStr for SessionState {
    type Err = UnknownSessionState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "init" => SessionState::Init,
            "matching" => SessionState::Matching,
            "established" => SessionState::Established,
            "expired" => SessionState::Expired,
            "closed" => SessionState::Closed,
            other => return Err(UnknownSessionState(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            SessionState::Init,
            SessionState::Matching,
            SessionState::Established,
            SessionState::Expired,
            SessionState::Closed,
        ] {
            assert_eq!(s.as_str().parse::<SessionState>().unwrap(), s);
        }
        assert!("ESTABLISHED".parse::<SessionState>().is_err());
    }
}
