//! One module per subcommand.

pub mod bench;
pub mod broker;
pub mod gateway;
pub mod generate;
pub mod keys;
pub mod request;
pub mod serve;
pub mod server;
pub mod sessions;
pub mod tls;

use sessioncert_client::ClientError;

/// Exit status: 1 generic failure, 3 server identity not trusted (wrong pin), 4 refused
/// by the server, 5 could not connect to the server or it did not answer in time, 7 the
/// TLS handshake failed (see [`tls::EXIT_TLS`]). (clap uses 2 for usage errors.)
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(c) if c.is_untrusted() => 3,
        Some(c) if c.code().is_some() => 4,
        Some(c) if c.is_tls() => tls::EXIT_TLS,
        // Could not connect, or no answer in time before the request was sent (a sent
        // request that timed out is an unknown outcome, exit 6, unless idempotent).
        Some(ClientError::Http(e)) if e.is_connect() || e.is_timeout() => 5,
        _ => 1,
    }
}

/// Whether `s` is written as a negative value. Arguments taking durations, sizes and
/// numbers set `allow_hyphen_values`, so `-5s` reaches their parser (which says what is
/// wrong) instead of being taken for an unknown flag.
fn is_negative(s: &str) -> bool {
    s.trim_start().starts_with('-')
}

/// The one line printed for a failed command: the outermost context and its causes —
/// for a TLS failure its own message and what to do instead (its causes repeat it).
pub fn error_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(c @ ClientError::Tls { .. }) => match tls::hint(c) {
            Some(h) => format!("{c}; {h}"),
            None => c.to_string(),
        }
        .replace(['\n', '\r'], " "),
        _ => chain_once(e),
    }
}

/// The outermost context and its causes, each cause once. Many errors print their
/// source in their own message too (an OS error would show twice), so a cause already
/// said by the text before it is left out.
fn chain_once(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Parses durations like `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if is_negative(s) {
        return Err("negative durations are not allowed".into());
    }
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// A duration as [`parse_duration`] takes it, or a plain number of seconds (`30`,
/// `1.5`), as curl's `--max-time` and `--connect-timeout` take them.
pub fn parse_seconds_or_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
            .ok_or_else(|| format!("bad duration {s:?}"));
    }
    parse_duration(s)
}

/// Parses a number (`64`, `20.5`), refusing a negative one with a message that says so.
pub fn parse_number<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if is_negative(s) {
        return Err("negative numbers are not allowed".into());
    }
    s.trim()
        .parse()
        .map_err(|e| format!("bad number {s:?}: {e}"))
}

/// A size in bytes: a plain number, or with a unit — `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive, space allowed:
/// `4MiB`, `512 KB`, `1048576`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    if is_negative(s) {
        return Err("negative sizes are not allowed".into());
    }
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
    fn seconds_as_curl_takes_them_or_a_duration() {
        use std::time::Duration;
        assert_eq!(parse_seconds_or_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_seconds_or_duration("1.5"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_seconds_or_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_seconds_or_duration("2m"),
            Ok(Duration::from_secs(120))
        );
        for bad in ["-1", "1.2.3", ".", "NaN", "inf", "1e400", ""] {
            assert!(parse_seconds_or_duration(bad).is_err(), "{bad}");
        }
    }

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
    fn negative_values_are_refused_saying_so() {
        assert_eq!(
            parse_duration("-5s").unwrap_err(),
            "negative durations are not allowed"
        );
        assert_eq!(
            parse_size(" -1KiB").unwrap_err(),
            "negative sizes are not allowed"
        );
        assert_eq!(
            parse_number::<f64>("-1").unwrap_err(),
            "negative numbers are not allowed"
        );
        assert_eq!(
            parse_number::<u32>("-0").unwrap_err(),
            "negative numbers are not allowed"
        );
        assert_eq!(parse_number::<u32>(" 64 "), Ok(64));
        assert_eq!(parse_number::<f64>("20.5"), Ok(20.5));
        assert!(parse_number::<usize>("many").unwrap_err().contains("many"));
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

#[cfg(test)]
mod error_line_tests {
    use super::chain_once as one_line;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let os = std::io::Error::from_raw_os_error(2);
        let text = os.to_string();
        let e = anyhow::Error::new(os).context(format!("/x/identity.key: {text}"));
        let e = e.context("no identity in /x");
        assert_eq!(
            one_line(&e),
            format!("no identity in /x: /x/identity.key: {text}")
        );
        assert_eq!(one_line(&e).matches(&text).count(), 1);
        let e = anyhow::anyhow!("plain").context("outer");
        assert_eq!(one_line(&e), "outer: plain");
    }
}
