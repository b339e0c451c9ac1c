//! Which headers cross the gateway, each way.
//!
//! Removed from requests before they are forwarded: the hop-by-hop headers
//! (`Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`), `Expect` (the gateway answered it already), `Host`
//! (the upstream gets its own authority), every `sessioncert-*` header (the protocol's
//! own, and any a client makes up), the legacy Session-Cert `session-cert-id`, and the client's `X-Forwarded-*` and `Forwarded`.
//! Then the gateway adds its own `X-Forwarded-For` (the peer's address),
//! `X-Forwarded-Proto`, `X-Forwarded-Host` (the host the client asked for; for a sealed
//! request the authority it was sealed for) and, on sealed requests only,
//! [`SESSION_HEADER`] naming the session. So nothing a client sends can pose as one of
//! them.
//!
//! Removed from responses: the same hop-by-hop headers and every `sessioncert-*`
//! header, so an upstream cannot speak for the protocol (a `sessioncert-error` or
//! `sessioncert-status` of its own).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The header naming the session of a sealed request, for the upstream's logs.
pub const SESSION_HEADER: &str = "sessioncert-session";

pub(crate) const H_SESSION: HeaderName = HeaderName::from_static(SESSION_HEADER);
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop headers of RFC 9110 §7.6.1 (and their old spellings), by name.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a header of this name never crosses the gateway (either way), whatever
/// `Connection` says: the `Proxy-*` family and the protocol's `sessioncert-*` headers.
fn never_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("proxy-")
        || n.starts_with("sessioncert-")
        || n == sessioncert_legacy::wire::ID_HEADER
}

/// Removes the hop-by-hop headers: the fixed ones and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    // Usually none: a scan, and a list only when something must go.
    if headers.keys().any(never_forwarded) {
        let gone: Vec<HeaderName> = headers
            .keys()
            .filter(|k| never_forwarded(k))
            .cloned()
            .collect();
        for n in gone {
            headers.remove(n);
        }
    }
}

/// What the gateway adds to a forwarded request.
pub(crate) struct Forwarded<'a> {
    /// The peer's address, when the listener told it.
    pub(crate) peer: Option<std::net::IpAddr>,
    /// `http` or `https`: how the client reached the gateway.
    pub(crate) proto: &'a HeaderValue,
    /// The session of a sealed request.
    pub(crate) session: Option<HeaderValue>,
}

/// Makes a request's headers what the upstream gets (see the module docs).
pub(crate) fn request(headers: &mut HeaderMap, add: Forwarded<'_>) {
    let host = headers.remove(header::HOST);
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    headers.remove(header::FORWARDED);
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("x-forwarded-"))
    {
        let gone: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-forwarded-"))
            .cloned()
            .collect();
        for n in gone {
            headers.remove(n);
        }
    }
    if let Some(ip) = add.peer {
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, add.proto.clone());
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST, h);
    }
    if let Some(s) = add.session {
        headers.insert(H_SESSION, s);
    }
}

/// Makes an upstream response's headers what leaves the gateway.
pub(crate) fn response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn requests_lose_hop_by_hop_protocol_and_spoofed_headers() {
        let mut h = map(&[
            ("host", "api.example"),
            ("connection", "keep-alive, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("expect", "100-continue"),
            ("sessioncert-session", "spoofed"),
            ("sessioncert-id", "x"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.0.0.1"),
            ("authorization", "Bearer t"),
            ("x-app", "kept"),
            ("content-length", "5"),
        ]);
        let proto = HeaderValue::from_static("http");
        request(
            &mut h,
            Forwarded {
                peer: Some("127.0.0.2".parse().unwrap()),
                proto: &proto,
                session: Some(HeaderValue::from_static("sid")),
            },
        );
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "content-length",
                "sessioncert-session",
                "x-app",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
            ]
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.2");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["sessioncert-session"], "sid");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);

        // A plain request names no session, whatever the client sent.
        let mut h = map(&[
            ("sessioncert-session", "spoofed"),
            ("SessionCert-Session", "2"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/evil"),
        ]);
        request(
            &mut h,
            Forwarded {
                peer: None,
                proto: &proto,
                session: None,
            },
        );
        assert!(h.get(SESSION_HEADER).is_none());
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-forwarded-port").is_none());
        assert!(h.get("x-forwarded-prefix").is_none());
    }

    #[test]
    fn responses_lose_hop_by_hop_and_protocol_headers() {
        let mut h = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("sessioncert-error", "rejected"),
            ("sessioncert-status", "204"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "application/json"),
            ("set-cookie", "a=b"),
        ]);
        response(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "set-cookie"]);
    }
}
