//! What a header-mode request binds besides its body (PROTOCOL §8.2): the origin it was
//! sealed for and the request headers it covers; and what reaches the handler.

use crate::error::Refusal;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use sessioncert_proto::record::MAX_COVERED_HEADERS;
use sessioncert_proto::wire::{COVERED_HEADER, TARGET_HEADER};
use sessioncert_proto::ErrorCode;

/// The bound origin and covered headers of one request, as read from it.
pub(crate) struct Bound {
    /// `scheme://authority`, lower case.
    pub(crate) target: String,
    /// Where the authority starts in `target` (after `://`).
    authority_at: usize,
    /// Covered headers: lower-case name, value (field lines joined with `", "`).
    pub(crate) covered: Vec<(String, String)>,
}

impl std::fmt::Debug for Bound {
    // Covered values can be credentials: show the names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("target", &self.target)
            .field(
                "covered",
                &self
                    .covered
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Bound {
    /// The covered headers as the core's binding wants them.
    pub(crate) fn covered_refs(&self) -> Vec<(&str, &str)> {
        self.covered
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// Headers that may never be covered: they describe the hop, not the request, or are
/// the protocol's own.
fn uncoverable(name: &str) -> bool {
    name.starts_with("sessioncert-")
        || matches!(
            name,
            "content-length"
                | "content-type"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
                | "proxy-connection"
        )
}

/// Request headers that carry credentials: they reach the handler only when bound.
const CREDENTIALS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// Splits `scheme://authority` and checks that it is the one canonical spelling of an
/// origin (PROTOCOL §8.2), the WHATWG ASCII serialization of an origin:
///
/// - scheme `http` or `https`, lower case;
/// - host: a registered name (dot-separated non-empty labels of `a-z`, `0-9`, `-`, `_`;
///   no trailing dot), an IPv4 address in dotted decimal without leading zeros (a host
///   whose last label is numeric or `0x…` must be one), or a bracketed IPv6 address in
///   its RFC 5952 form (lower case, zeros compressed);
/// - optionally `:port`, 1–65535 in decimal without leading zeros and never the
///   scheme's default (80, 443);
/// - no user info, path, query or fragment; at most 255 bytes of authority.
///
/// Anything else is `None` (the caller answers `malformed`).
pub(crate) fn split_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if authority.is_empty() || authority.len() > 255 {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !canonical_ipv6(v6) {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&authority[..v6.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !host.starts_with('[') && !canonical_name_or_ipv4(host) {
        return None;
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && !p.starts_with('0')
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>()
                .is_ok_and(|n| n <= 65535 && n != default_port);
        if !ok {
            return None;
        }
    }
    Some((scheme, authority))
}

/// A lower-case registered name without empty labels (so no trailing dot), or, when
/// its last label is a number (as the WHATWG host parser decides), a dotted-decimal
/// IPv4 address written as that parser writes it.
fn canonical_name_or_ipv4(host: &str) -> bool {
    let labels_ok = host.split('.').all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return false;
    }
    let last = host.rsplit('.').next().unwrap_or("");
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    !numeric || canonical_ipv4(host)
}

/// Dotted decimal as the WHATWG serializer writes it: four numbers 0–255, no leading
/// zeros. (Checked by hand: this runs on every sealed request, and parsing then
/// printing the address allocated.)
fn canonical_ipv4(host: &str) -> bool {
    let mut parts = 0;
    for part in host.split('.') {
        parts += 1;
        let ok = match part.as_bytes() {
            [b'0'] => true,
            [b'1'..=b'9', rest @ ..] if rest.len() <= 2 => {
                rest.iter().all(u8::is_ascii_digit) && part.parse::<u8>().is_ok()
            }
            _ => false,
        };
        if !ok || parts > 4 {
            return false;
        }
    }
    parts == 4
}

/// An IPv6 address (without brackets) in the form the WHATWG URL serializer writes:
/// lower-case hex pieces without leading zeros, the first longest run of two or more
/// zero pieces compressed to `::`, no embedded IPv4 notation, no zone.
fn canonical_ipv6(text: &str) -> bool {
    let Ok(addr) = text.parse::<std::net::Ipv6Addr>() else {
        return false;
    };
    let pieces = addr.segments();
    // The first longest run of at least two zero pieces.
    let (mut best, mut best_len, mut i) = (None, 1, 0);
    while i < 8 {
        if pieces[i] == 0 {
            let start = i;
            while i < 8 && pieces[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best = Some(start);
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if Some(i) == best {
            out.push_str(if i == 0 { "::" } else { ":" });
            i += best_len;
            continue;
        }
        out.push_str(&format!("{:x}", pieces[i]));
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
    out == text
}

/// Refuses an origin this server does not answer to (`misdirected`, 421). With no
/// public origins configured every well-formed origin is accepted: the binding then
/// still stops it from being changed in flight, and the handler sees it as `Host`.
pub(crate) fn check_origin(origin: &str, public: &[String]) -> Result<(), Refusal> {
    if public.is_empty() || public.iter().any(|p| p == origin) {
        Ok(())
    } else {
        tracing::info!(
            origin,
            "request sealed for an origin this server does not answer to"
        );
        Err(Refusal::new(ErrorCode::Misdirected))
    }
}

/// Reads the bound origin and covered headers of a header-mode request.
pub(crate) fn read(headers: &HeaderMap, public: &[String]) -> Result<Bound, Refusal> {
    let malformed = || Refusal::new(ErrorCode::Malformed);
    // Exactly one target: with two, a proxy reading the last could act on another one
    // than the seal binds.
    let mut targets = headers.get_all(&H_TARGET).iter();
    let (Some(target), None) = (targets.next(), targets.next()) else {
        return Err(malformed());
    };
    let target = target.to_str().map_err(|_| malformed())?;
    let (_, authority) = split_origin(target).ok_or_else(malformed)?;
    let authority_at = target.len() - authority.len();
    let target = target.to_owned();
    check_origin(&target, public)?;
    let mut covered: Vec<(String, String)> = Vec::new();
    for list in headers.get_all(&H_COVERED) {
        let list = list.to_str().map_err(|_| malformed())?;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let valid = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
            if !valid
                || uncoverable(name)
                || covered.iter().any(|(n, _)| n == name)
                || covered.len() == MAX_COVERED_HEADERS
            {
                return Err(malformed());
            }
            let mut value = String::new();
            for (i, v) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    value.push_str(", ");
                }
                value.push_str(v.to_str().map_err(|_| malformed())?);
            }
            covered.push((name.to_owned(), value));
        }
    }
    Ok(Bound {
        target,
        authority_at,
        covered,
    })
}

/// Makes the request headers what a handler may trust: the protocol's own headers and
/// `Transfer-Encoding` (the body is already de-framed) are removed, credential headers
/// reach it only if bound, and `Host` is the authority the request was sealed for (a
/// reverse proxy in front may have rewritten the one on the wire).
pub(crate) fn for_handler(headers: &mut HeaderMap, bound: &Bound) {
    // Every sessioncert-* header (the protocol's own and any other): one pass to find
    // the two to four a request carries, rather than a lookup for each name it may have.
    let mut own: [Option<HeaderName>; OWN_SLOTS] = Default::default();
    let mut overflow = false;
    for (i, k) in headers
        .keys()
        .filter(|k| k.as_str().starts_with("sessioncert-"))
        .enumerate()
    {
        match own.get_mut(i) {
            Some(slot) => *slot = Some(k.clone()),
            None => {
                overflow = true;
                break;
            }
        }
    }
    for k in own.into_iter().flatten() {
        headers.remove(k);
    }
    if overflow {
        // More than fit above (only a peer making them up sends that many): the rest.
        let rest: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("sessioncert-"))
            .cloned()
            .collect();
        for k in rest {
            headers.remove(k);
        }
    }
    headers.remove(header::TRANSFER_ENCODING);
    for c in CREDENTIALS {
        if headers.contains_key(&c) && !bound.covered.iter().any(|(n, _)| n == c.as_str()) {
            headers.remove(&c);
            tracing::debug!(header = %c, "unbound credential header removed before the handler");
        }
    }
    let authority = &bound.target[bound.authority_at..];
    // Usually the Host on the wire already is the bound authority: no allocation then.
    if headers.get(header::HOST).map(|h| h.as_bytes()) != Some(authority.as_bytes()) {
        if let Ok(v) = HeaderValue::from_str(authority) {
            headers.insert(header::HOST, v);
        }
    }
}

/// sessioncert-* headers removed in the first pass of `for_handler`.
const OWN_SLOTS: usize = 8;

const H_TARGET: HeaderName = HeaderName::from_static(TARGET_HEADER);
const H_COVERED: HeaderName = HeaderName::from_static(COVERED_HEADER);

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Canonical origins, as the WHATWG URL "ASCII serialization of an origin" writes them.
    const CANONICAL_ORIGINS: &[&str] = &[
        "https://api.example",
        "https://api.example:8443",
        "http://127.0.0.1",
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "https://a.b_c-d.example:65535",
        "https://xn--bcher-kva.example",
        "http://[::1]",
        "http://[::1]:8080",
        "https://[2001:db8::1]",
        "https://[2001:db8:0:1:1:1:1:1]",
        "http://[::]",
        "http://[1::]:81",
        "http://[1:0:0:2::3]",
    ];

    /// Other spellings of an origin (or no origin at all): all `malformed`.
    const NON_CANONICAL_ORIGINS: &[&str] = &[
        "api.example",
        "ftp://a",
        "https://",
        "https://A.example",
        "HTTPS://api.example",
        "Https://api.example",
        "https://a/b",
        "https://a/",
        "https://u@a",
        "https://a?q",
        "https://a#f",
        "https://a b",
        "http://127.0.0.1:80",
        "https://api.example:443",
        "http://127.0.0.1:0080",
        "http://127.0.0.1:08080",
        "http://host:",
        "http://host:0",
        "http://host:65536",
        "http://host:99999999",
        "http://host:+80",
        "http://host:8080:1",
        "https://api.example.com.",
        "https://api.example.com..",
        "https://.api.example",
        "https://api..example",
        "http://127.000.0.1",
        "http://127.0.0.01",
        "http://0x7f.0.0.1",
        "http://2130706433",
        "http://1.2.3.4.5",
        "http://a.1",
        "http://256.0.0.1",
        "http://[::1",
        "http://[::1]x",
        "http://[::1]:",
        "http://[::1]:80",
        "http://[0:0:0:0:0:0:0:1]",
        "http://[::0001]",
        "http://[2001:DB8::1]",
        "http://[::ffff:1.2.3.4]",
        "http://[1:0:0:2:0:0:0:3]",
        "http://[fe80::1%25eth0]",
        "http://::1",
        "http://[]",
    ];

    #[test]
    fn origins_have_one_canonical_spelling_and_are_checked_against_public_ones() {
        assert_eq!(
            split_origin("https://api.example:8443"),
            Some(("https", "api.example:8443"))
        );
        assert_eq!(
            split_origin("http://[::1]:8080"),
            Some(("http", "[::1]:8080"))
        );
        for good in CANONICAL_ORIGINS {
            assert!(split_origin(good).is_some(), "{good}");
        }
        for bad in NON_CANONICAL_ORIGINS {
            assert!(split_origin(bad).is_none(), "{bad}");
        }
        let long = format!("https://{}", "a".repeat(256));
        assert!(split_origin(&long).is_none());
        let public = vec!["https://api.example".to_owned()];
        assert!(check_origin("https://api.example", &public).is_ok());
        assert_eq!(
            check_origin("http://api.example", &public)
                .unwrap_err()
                .code,
            ErrorCode::Misdirected
        );
        assert!(check_origin("https://anything.example", &[]).is_ok());
    }

    #[test]
    fn covered_headers_are_read_in_order_and_refused_when_odd() {
        let h = hm(&[
            (TARGET_HEADER, "https://api.example"),
            (COVERED_HEADER, "authorization, x-tenant"),
            ("authorization", "Bearer t"),
            ("x-tenant", "a"),
            ("x-tenant", "b"),
        ]);
        let b = read(&h, &[]).unwrap();
        assert_eq!(b.target, "https://api.example");
        assert_eq!(
            b.covered,
            vec![
                ("authorization".into(), "Bearer t".into()),
                ("x-tenant".into(), "a, b".into())
            ]
        );
        // A covered header that is absent binds as the empty string.
        let h = hm(&[
            (TARGET_HEADER, "https://a.example"),
            (COVERED_HEADER, "cookie"),
        ]);
        assert_eq!(
            read(&h, &[]).unwrap().covered,
            vec![("cookie".into(), String::new())]
        );
        for covered in [
            "Authorization",
            "content-length",
            "sessioncert-id",
            "a, a",
            "x y",
        ] {
            let h = hm(&[
                (TARGET_HEADER, "https://a.example"),
                (COVERED_HEADER, covered),
            ]);
            assert_eq!(
                read(&h, &[]).unwrap_err().code,
                ErrorCode::Malformed,
                "{covered}"
            );
        }
        let too_many: Vec<String> = (0..=MAX_COVERED_HEADERS)
            .map(|i| format!("x-{i}"))
            .collect();
        let h = hm(&[
            (TARGET_HEADER, "https://a.example"),
            (COVERED_HEADER, &too_many.join(",")),
        ]);
        assert_eq!(read(&h, &[]).unwrap_err().code, ErrorCode::Malformed);
        assert_eq!(read(&hm(&[]), &[]).unwrap_err().code, ErrorCode::Malformed);
        let two = hm(&[
            (TARGET_HEADER, "https://a.example"),
            (TARGET_HEADER, "https://b.example"),
        ]);
        assert_eq!(read(&two, &[]).unwrap_err().code, ErrorCode::Malformed);
    }

    proptest::proptest! {
        /// The hand-written check agrees with "parses as an address and prints back the
        /// same" (what it replaced) on strings made of digits and dots.
        #[test]
        fn ipv4_check_agrees_with_the_parse_and_print_round_trip(
            host in "[0-9.]{0,20}|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,4}"
        ) {
            let round_trip = host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.to_string() == host);
            proptest::prop_assert_eq!(canonical_ipv4(&host), round_trip, "{}", host);
        }
    }

    #[test]
    fn ipv4_edges() {
        for ok in ["0.0.0.0", "255.255.255.255", "127.0.0.1", "10.200.3.9"] {
            assert!(canonical_ipv4(ok), "{ok}");
        }
        for bad in [
            "256.0.0.1",
            "01.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "",
            "1.2.3.4.",
            "+1.2.3.4",
            "1.2.3.0x4",
        ] {
            assert!(!canonical_ipv4(bad), "{bad}");
        }
    }

    #[test]
    fn every_sessioncert_header_is_removed_however_many() {
        let mut pairs: Vec<(String, String)> = (0..20)
            .map(|i| (format!("sessioncert-made-up-{i}"), "x".to_owned()))
            .collect();
        pairs.push(("x-kept".into(), "1".into()));
        pairs.push(("sessioncert-target".into(), "https://a.example".into()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut h = hm(&refs);
        let bound = read(&h, &[]).unwrap();
        for_handler(&mut h, &bound);
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("sessioncert-")),
            "{h:?}"
        );
        assert_eq!(h["x-kept"], "1");
        assert_eq!(h["host"], "a.example");
    }

    #[test]
    fn handlers_see_only_bound_credentials_and_the_bound_host() {
        let mut h = hm(&[
            ("host", "10.0.0.5:8080"),
            ("authorization", "Bearer bound"),
            ("cookie", "sid=unbound"),
            ("proxy-authorization", "Basic x"),
            ("transfer-encoding", "chunked"),
            ("sessioncert-id", "abc"),
            ("x-other", "kept"),
        ]);
        let bound = Bound {
            target: "https://api.example".into(),
            authority_at: "https://".len(),
            covered: vec![("authorization".into(), "Bearer bound".into())],
        };
        for_handler(&mut h, &bound);
        assert_eq!(h["authorization"], "Bearer bound");
        assert!(h.get("cookie").is_none() && h.get("proxy-authorization").is_none());
        assert!(h.get("transfer-encoding").is_none() && h.get("sessioncert-id").is_none());
        assert_eq!(h["host"], "api.example");
        assert_eq!(h["x-other"], "kept");
    }
}
