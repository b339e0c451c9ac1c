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

/// Splits `scheme://authority` and checks its shape: scheme `http` or `https`, a
/// non-empty lower-case authority without path, query, user info or whitespace.
pub(crate) fn split_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = origin.split_once("://")?;
    let ok = matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && authority.len() <= 255
        && authority
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]_".contains(&b));
    ok.then_some((scheme, authority))
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
    if headers.get_all(TARGET_HEADER).iter().count() != 1 {
        return Err(malformed());
    }
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| split_origin(t).is_some())
        .ok_or_else(malformed)?
        .to_owned();
    check_origin(&target, public)?;
    let mut covered: Vec<(String, String)> = Vec::new();
    for list in headers.get_all(COVERED_HEADER) {
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
    Ok(Bound { target, covered })
}

/// Makes the request headers what a handler may trust: the protocol's own headers and
/// `Transfer-Encoding` (the body is already de-framed) are removed, credential headers
/// reach it only if bound, and `Host` is the authority the request was sealed for (a
/// reverse proxy in front may have rewritten the one on the wire).
pub(crate) fn for_handler(headers: &mut HeaderMap, bound: &Bound) {
    for k in OWN {
        headers.remove(k);
    }
    // Anything else named sessioncert-* (rare): collect the names only then.
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("sessioncert-"))
    {
        let own: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("sessioncert-"))
            .cloned()
            .collect();
        for k in own {
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
    if let Some((_, authority)) = split_origin(&bound.target) {
        // Usually the Host on the wire already is the bound authority: no allocation then.
        if headers.get(header::HOST).map(|h| h.as_bytes()) != Some(authority.as_bytes()) {
            if let Ok(v) = HeaderValue::from_str(authority) {
                headers.insert(header::HOST, v);
            }
        }
    }
}

/// The protocol's own request headers, removed before the handler.
const OWN: [HeaderName; 7] = [
    HeaderName::from_static(sessioncert_proto::wire::SESSION_HEADER),
    HeaderName::from_static(TARGET_HEADER),
    HeaderName::from_static(COVERED_HEADER),
    HeaderName::from_static(sessioncert_proto::wire::CONFIRM_HEADER),
    HeaderName::from_static(sessioncert_proto::wire::RECORD_HEADER),
    HeaderName::from_static(sessioncert_proto::wire::CONTENT_TYPE_HEADER),
    HeaderName::from_static(sessioncert_proto::wire::STATUS_HEADER),
];

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

    #[test]
    fn origins_are_well_formed_and_checked_against_public_ones() {
        assert_eq!(
            split_origin("https://api.example:8443"),
            Some(("https", "api.example:8443"))
        );
        for bad in [
            "api.example",
            "ftp://a",
            "https://",
            "https://A.example",
            "https://a/b",
            "https://u@a",
        ] {
            assert!(split_origin(bad).is_none(), "{bad}");
        }
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
