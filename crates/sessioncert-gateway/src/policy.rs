//! The route policy: which paths must arrive sealed, which may pass plain, which are
//! refused without reaching the upstream.
//!
//! Prefixes match whole path segments (`/health` matches `/health` and `/health/db`,
//! not `/healthz`), the longest prefix wins, and everything no prefix names is sealed.
//! The protocol's own paths (`/.well-known/sessioncert/…`) belong to the gateway and
//! cannot be given a policy.
//!
//! # Matching what the upstream will see
//!
//! The upstream decides what a path means, and upstreams normalise paths in different
//! ways: a policy matched on the bytes of the request line alone would let
//! `/public/../admin`, `/%61dmin`, `//admin`, `/ADMIN` or `/admin;x=1` past a
//! `refuse /admin` to an upstream that reads them all as `/admin`. So a path is first
//! decoded (percent-escapes), empty segments dropped, and refused outright (`400`) when
//! it holds a dot segment (`.`, `..`, also percent-encoded) or an encoded `/`, `\` or
//! NUL, whose meaning differs between upstreams. The decoded segments are then matched
//! four ways — as they are, ASCII-lower-cased, with `;parameters` cut from each segment,
//! and both — and the most restrictive answer wins (refuse over sealed over plain): a
//! path passes plain only if every reading of it is plain. The path forwarded is the
//! one the client sent, untouched (in header mode it is bound into the seal).

use sessioncert_proto::wire;

/// What happens to requests under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// Forwarded as it came, without the channel (health checks, public assets). A
    /// request that arrives sealed anyway is opened and its answer sealed.
    Plain,
    /// Must arrive sealed in an established session (the default for every path); a
    /// plain request gets the protocol's refusal (`400`, "this route takes sealed
    /// requests only").
    Sealed,
    /// Answered `404` by the gateway; the upstream never sees it.
    Refuse,
}

impl Route {
    /// `plain`, `sealed` or `refuse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Plain => "plain",
            Route::Sealed => "sealed",
            Route::Refuse => "refuse",
        }
    }
}

/// What the gateway does with one request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// One of the protocol's own paths: the gateway answers it (handshake, full mode,
    /// close), never the upstream.
    Protocol,
    /// The route policy's answer.
    Route(Route),
}

/// A prefix the policy refuses to take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not an absolute path, or holding characters a prefix cannot have.
    #[error("{0:?} is not a path prefix: it must start with `/` and hold no `?`, `#`, `%`, `\\`, whitespace or control characters")]
    NotAPrefix(String),
    /// A `.` or `..` segment, or an empty one (`//`).
    #[error("{0:?} is not a path prefix: no `.`, `..` or empty segments")]
    BadSegment(String),
    /// Under `/.well-known/sessioncert/`, which the gateway itself serves.
    #[error("{0:?} is under {prefix}, the protocol's own paths, which the gateway serves itself and no policy can change", prefix = PROTOCOL_PREFIX)]
    Protocol(String),
    /// The same prefix given two different routes.
    #[error("{prefix:?} is given twice, as {first} and as {second}")]
    Conflict {
        /// The prefix.
        prefix: String,
        /// Its first route.
        first: &'static str,
        /// The other one.
        second: &'static str,
    },
}

/// A request path the gateway will not forward under any policy (`400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// It does not start with `/` (`*`, or an authority-form target).
    #[error("the request path does not start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    /// An encoded `/`, `\` or NUL, or a raw `\`.
    #[error("the request path encodes a separator or NUL")]
    EncodedSeparator,
    /// A `.` or `..` segment (also percent-encoded).
    #[error("the request path has a dot segment")]
    DotSegment,
}

/// The protocol's own path prefix, without its trailing slash.
pub const PROTOCOL_PREFIX: &str = "/.well-known/sessioncert";

/// The route policy: prefixes with their routes; everything else is sealed.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Longest (most segments) first.
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// The prefix as given (trailing slash removed), for errors and listings.
    text: String,
    segments: Vec<Vec<u8>>,
    route: Route,
}

impl RoutePolicy {
    /// A policy that seals everything.
    pub fn new() -> Self {
        RoutePolicy::default()
    }

    /// Gives `prefix` (`/health`, `/assets/`; a trailing slash changes nothing) the
    /// route `route`. `/` names every path.
    pub fn add(&mut self, prefix: &str, route: Route) -> Result<(), PolicyError> {
        let text = prefix.trim();
        let bad =
            |c: char| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\');
        if !text.starts_with('/') || text.contains(bad) {
            return Err(PolicyError::NotAPrefix(prefix.to_owned()));
        }
        if text.contains("//") {
            return Err(PolicyError::BadSegment(prefix.to_owned()));
        }
        let trimmed = if text.len() > 1 {
            text.strip_suffix('/').unwrap_or(text)
        } else {
            text
        };
        let mut segments = Vec::new();
        if trimmed != "/" {
            for s in trimmed[1..].split('/') {
                if s.is_empty() || s == "." || s == ".." {
                    return Err(PolicyError::BadSegment(prefix.to_owned()));
                }
                segments.push(s.as_bytes().to_vec());
            }
        }
        if is_protocol(&segments, Variant::AS_IS) || is_protocol(&segments, Variant::FOLDED) {
            return Err(PolicyError::Protocol(prefix.to_owned()));
        }
        if let Some(r) = self.rules.iter().find(|r| r.segments == segments) {
            if r.route == route {
                return Ok(());
            }
            return Err(PolicyError::Conflict {
                prefix: trimmed.to_owned(),
                first: r.route.as_str(),
                second: route.as_str(),
            });
        }
        self.rules.push(Rule {
            text: trimmed.to_owned(),
            segments,
            route,
        });
        self.rules
            .sort_by_key(|r| std::cmp::Reverse(r.segments.len()));
        Ok(())
    }

    /// The prefixes given, with their routes, longest first.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Route)> {
        self.rules.iter().map(|r| (r.text.as_str(), r.route))
    }

    /// What to do with a request for `path` (the path of the request target, without
    /// the query).
    pub fn decide(&self, path: &str) -> Result<Decision, BadPath> {
        let decoded = decode(path)?;
        let segments = split(&decoded)?;
        let variants = [
            Variant::AS_IS,
            Variant::FOLDED,
            Variant::NO_PARAMS,
            Variant::FOLDED_NO_PARAMS,
        ];
        if variants.iter().any(|v| is_protocol(&segments, *v)) {
            return Ok(Decision::Protocol);
        }
        if self.rules.is_empty() {
            return Ok(Decision::Route(Route::Sealed));
        }
        let route = variants
            .iter()
            .map(|v| self.route_of(&segments, *v))
            .max()
            .unwrap_or(Route::Sealed);
        Ok(Decision::Route(route))
    }

    /// The longest matching prefix's route under one reading of the path.
    fn route_of(&self, segments: &[&[u8]], v: Variant) -> Route {
        self.rules
            .iter()
            .find(|r| prefix_matches(&r.segments, segments, v))
            .map_or(Route::Sealed, |r| r.route)
    }
}

/// One reading of a decoded path.
#[derive(Debug, Clone, Copy)]
struct Variant {
    fold_case: bool,
    cut_params: bool,
}

impl Variant {
    const AS_IS: Variant = Variant {
        fold_case: false,
        cut_params: false,
    };
    const FOLDED: Variant = Variant {
        fold_case: true,
        cut_params: false,
    };
    const NO_PARAMS: Variant = Variant {
        fold_case: false,
        cut_params: true,
    };
    const FOLDED_NO_PARAMS: Variant = Variant {
        fold_case: true,
        cut_params: true,
    };
}

fn prefix_matches<P: AsRef<[u8]>>(prefix: &[P], segments: &[&[u8]], v: Variant) -> bool {
    prefix.len() <= segments.len()
        && prefix
            .iter()
            .zip(segments)
            .all(|(p, s)| segment_eq(p.as_ref(), s, v))
}

/// Whether a prefix's segment `p` names the path segment `s` under one reading.
fn segment_eq(p: &[u8], s: &[u8], v: Variant) -> bool {
    let s = if v.cut_params {
        s.split(|b| *b == b';').next().unwrap_or_default()
    } else {
        s
    };
    if v.fold_case {
        p.eq_ignore_ascii_case(s)
    } else {
        p == s
    }
}

/// [`PROTOCOL_PREFIX`] as segments.
const PROTOCOL_SEGMENTS: [&[u8]; 2] = [b".well-known", b"sessioncert"];

fn is_protocol<P: AsRef<[u8]>>(segments: &[P], v: Variant) -> bool {
    PROTOCOL_SEGMENTS.len() <= segments.len()
        && PROTOCOL_SEGMENTS
            .iter()
            .zip(segments)
            .all(|(p, s)| segment_eq(p, s.as_ref(), v))
}

/// Percent-decodes `path`; refuses malformed escapes and encoded separators. (Runs on
/// every request: a path without `%` or a backslash is used as it is.)
fn decode(path: &str) -> Result<std::borrow::Cow<'_, [u8]>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    let bytes = path.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'%' | b'\\')) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(BadPath::BadEscape);
                };
                let b = (h * 16 + l) as u8;
                if matches!(b, b'/' | b'\\' | 0) {
                    return Err(BadPath::EncodedSeparator);
                }
                out.push(b);
                i += 3;
            }
            b'\\' => return Err(BadPath::EncodedSeparator),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The non-empty segments of a decoded path; refuses dot segments (also `.;x`, which
/// servers that cut parameters read as `.`).
fn split(decoded: &[u8]) -> Result<Vec<&[u8]>, BadPath> {
    let mut out = Vec::new();
    for s in decoded.split(|b| *b == b'/').filter(|s| !s.is_empty()) {
        let bare = s.split(|b| *b == b';').next().unwrap_or_default();
        if matches!(bare, b"." | b"..") {
            return Err(BadPath::DotSegment);
        }
        out.push(s);
    }
    Ok(out)
}

/// Whether `path` is exactly one of the protocol's endpoints (as the gateway's router
/// matches them).
pub fn is_protocol_endpoint(path: &str) -> bool {
    [
        wire::CONFIG_PATH,
        wire::HANDSHAKE_PATH,
        wire::CONFIRM_PATH,
        wire::CLOSE_PATH,
        wire::FULL_PATH,
    ]
    .contains(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(&str, Route)]) -> RoutePolicy {
        let mut p = RoutePolicy::new();
        for (prefix, route) in rules {
            p.add(prefix, *route).unwrap();
        }
        p
    }

    fn route(p: &RoutePolicy, path: &str) -> Route {
        match p.decide(path) {
            Ok(Decision::Route(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn everything_is_sealed_by_default() {
        let p = RoutePolicy::new();
        for path in ["/", "/a", "/health", "/a/b?c"] {
            assert_eq!(route(&p, path), Route::Sealed, "{path}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let p = policy(&[
            ("/health", Route::Plain),
            ("/assets/", Route::Plain),
            ("/assets/private", Route::Sealed),
            ("/admin", Route::Refuse),
        ]);
        assert_eq!(route(&p, "/health"), Route::Plain);
        assert_eq!(route(&p, "/health/"), Route::Plain);
        assert_eq!(route(&p, "/health/db"), Route::Plain);
        assert_eq!(route(&p, "/healthz-admin"), Route::Sealed);
        assert_eq!(route(&p, "/healthz"), Route::Sealed);
        assert_eq!(route(&p, "/assets"), Route::Plain);
        assert_eq!(route(&p, "/assets/app.js"), Route::Plain);
        assert_eq!(route(&p, "/assets/private/key"), Route::Sealed);
        assert_eq!(route(&p, "/assets/privateer"), Route::Plain);
        assert_eq!(route(&p, "/admin/users"), Route::Refuse);
        assert_eq!(route(&p, "/administrator"), Route::Sealed);
        let root = policy(&[("/", Route::Refuse), ("/api", Route::Sealed)]);
        assert_eq!(route(&root, "/anything"), Route::Refuse);
        assert_eq!(route(&root, "/api/x"), Route::Sealed);
    }

    /// The readings an upstream may give a path cannot carry it past the policy.
    #[test]
    fn paths_the_upstream_would_normalise_get_the_strictest_route() {
        let p = policy(&[
            ("/public", Route::Plain),
            ("/admin", Route::Refuse),
            ("/health", Route::Plain),
        ]);
        for path in [
            "//admin",
            "/%61dmin",
            "/ADMIN",
            "/Admin/x",
            "/admin;jsessionid=1",
            "/admin/",
        ] {
            assert_eq!(route(&p, path), Route::Refuse, "{path}");
        }
        // Plain only when every reading is plain.
        assert_eq!(route(&p, "/HEALTH"), Route::Sealed);
        assert_eq!(route(&p, "/health;x"), Route::Sealed);
        assert_eq!(route(&p, "/%68ealth"), Route::Plain);
        assert_eq!(route(&p, "//health//db"), Route::Plain);
        for bad in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/public/.;/admin",
            "/./admin",
            "/public/..",
        ] {
            assert_eq!(p.decide(bad), Err(BadPath::DotSegment), "{bad}");
        }
        for bad in [
            "/public%2fadmin",
            "/public%5cadmin",
            "/public\\..\\admin",
            "/a%00",
        ] {
            assert_eq!(p.decide(bad), Err(BadPath::EncodedSeparator), "{bad}");
        }
        assert_eq!(p.decide("/a%2"), Err(BadPath::BadEscape));
        assert_eq!(p.decide("/a%zz"), Err(BadPath::BadEscape));
        assert_eq!(p.decide("*"), Err(BadPath::NotAbsolute));
        // Dots inside a segment are names, not dot segments.
        assert_eq!(route(&p, "/public/.well-known-ish/..x"), Route::Plain);
    }

    #[test]
    fn the_protocols_paths_are_the_gateways_whatever_the_policy() {
        let p = policy(&[("/", Route::Refuse)]);
        for path in [
            "/.well-known/sessioncert/handshake",
            "/.well-known/sessioncert/",
            "/.well-known/sessioncert",
            "//.well-known/sessioncert/other",
            "/.WELL-KNOWN/sessioncert/x",
            "/.well-known/%73essioncert/x",
        ] {
            assert_eq!(p.decide(path), Ok(Decision::Protocol), "{path}");
        }
        assert_eq!(
            route(&p, "/.well-known/sessioncertx"),
            Route::Refuse,
            "a segment, not a string prefix"
        );
        for prefix in [
            "/.well-known/sessioncert",
            "/.well-known/sessioncert/",
            "/.well-known/sessioncert/full",
            "/.Well-Known/sessioncert",
        ] {
            assert!(
                matches!(
                    RoutePolicy::new().add(prefix, Route::Plain),
                    Err(PolicyError::Protocol(_))
                ),
                "{prefix}"
            );
        }
        // A prefix above the protocol's paths is allowed; they still stay the gateway's.
        let mut p = RoutePolicy::new();
        p.add("/.well-known", Route::Plain).unwrap();
        assert_eq!(p.decide(wire::HANDSHAKE_PATH), Ok(Decision::Protocol));
        assert!(is_protocol_endpoint(wire::FULL_PATH));
        assert!(!is_protocol_endpoint("/.well-known/sessioncert/other"));
    }

    #[test]
    fn bad_prefixes_are_refused_saying_why() {
        let mut p = RoutePolicy::new();
        for bad in ["health", "", "/a?b", "/a#b", "/a%20b", "/a b", "/a\\b"] {
            assert!(
                matches!(p.add(bad, Route::Plain), Err(PolicyError::NotAPrefix(_))),
                "{bad}"
            );
        }
        for bad in ["/a//b", "/a/./b", "/a/..", "//"] {
            assert!(
                matches!(p.add(bad, Route::Plain), Err(PolicyError::BadSegment(_))),
                "{bad}"
            );
        }
        p.add("/x", Route::Plain).unwrap();
        p.add("/x/", Route::Plain).unwrap();
        let e = p.add("/x", Route::Refuse).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"/x\" is given twice, as plain and as refuse"
        );
        assert_eq!(p.rules().count(), 1);
    }
}
