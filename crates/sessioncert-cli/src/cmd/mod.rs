//! One module per subcommand.

pub mod bench;
pub mod keys;
pub mod request;
pub mod serve;
pub mod sessions;
pub mod tls;

use sessioncert_client::ClientError;

/// Exit status: 1 generic failure, 3 server identity not trusted (wrong pin), 4 refused
/// by the server, 5 could not connect to the server, 7 the TLS handshake failed (see
/// [`tls::EXIT_TLS`]). (clap uses 2 for usage errors.)
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(c) if c.is_untrusted() => 3,
        Some(c) if c.code().is_some() => 4,
        Some(c) if c.is_tls() => tls::EXIT_TLS,
        Some(ClientError::Http(e)) if e.is_connect() => 5,
        _ => 1,
    }
}

/// The one line printed for a failed command: the outermost context and its causes —
/// for a TLS failure its own message and what to do instead (its causes repeat it).
pub fn error_line(e: &anyhow::Error) -> String {
    let line = match e.downcast_ref::<ClientError>() {
        Some(c @ ClientError::Tls { .. }) => match tls::hint(c) {
            Some(h) => format!("{c}; {h}"),
            None => c.to_string(),
        },
        _ => format!("{e:#}"),
    };
    line.replace('\n', " ")
}

/// Parses durations like `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// A size in bytes: a plain number, or with a unit — `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive, space allowed:
/// `4MiB`, `512 KB`, `1048576`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "bad size {s:?}: unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("bad size {s:?}: expected a number with an optional unit, e.g. 4MiB")
    })?;
    let bytes = n * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > usize::MAX as f64 || bytes.fract() != 0.0 {
        return Err(format!("bad size {s:?}: not a whole number of bytes"));
    }
    Ok(bytes as usize)
}

/// A listening address: `host:port` (a name such as `localhost` is resolved), or
/// `:port` for every interface.
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let t = s.trim();
    if let Some(port) = t.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad address {s:?}: the port must be 0-65535"))?;
        return Ok(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = t.parse() {
        return Ok(a);
    }
    t.to_socket_addrs()
        .map_err(|e| {
            format!("bad address {s:?}: {e} (expected host:port, e.g. 127.0.0.1:8080, or :8080)")
        })?
        .next()
        .ok_or_else(|| format!("bad address {s:?}: the name resolves to no address"))
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./sessioncert-data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_human_units_and_refuse_nonsense() {
        for (text, bytes) in [
            ("4194304", 4 << 20),
            ("4MiB", 4 << 20),
            ("4 mib", 4 << 20),
            ("512KB", 512_000),
            ("1.5KiB", 1536),
            ("2G", 2_000_000_000),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "-1", "4XB", "NaN", "1.5B", "MiB", "4 MiB extra"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_take_names_and_a_bare_port() {
        assert_eq!(parse_listen_addr("127.0.0.1:8093").unwrap().port(), 8093);
        assert_eq!(
            parse_listen_addr(":8093").unwrap(),
            "0.0.0.0:8093".parse().unwrap()
        );
        assert!(parse_listen_addr("localhost:8093")
            .unwrap()
            .ip()
            .is_loopback());
        for bad in ["8093", ":99999", "localhost", "no such host:1"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }
}
