//! One module per subcommand.

pub mod bench;
pub mod keys;
pub mod request;
pub mod serve;
pub mod sessions;

use sessioncert_client::ClientError;

/// Exit status: 1 generic failure, 3 server identity not trusted (wrong pin), 4 refused
/// by the server, 5 could not connect to the server. (clap uses 2 for usage errors.)
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(c) if c.is_untrusted() => 3,
        Some(c) if c.code().is_some() => 4,
        Some(ClientError::Http(e)) if e.is_connect() => 5,
        _ => 1,
    }
}

/// Parses durations like `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./sessioncert-data";
