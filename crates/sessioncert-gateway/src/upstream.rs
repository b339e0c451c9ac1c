//! The upstream: where the gateway forwards, and the pooled HTTP/1.1 client that does it.

use crate::headers;
use crate::telemetry::{ErrorKind, UpstreamMetrics};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sessioncert_server::listener::BodyRelease;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An upstream address: `http://host:port[/base]`. Requests for `/x?q` go to
/// `/base/x?q` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: Authority,
    host: String,
    port: u16,
    /// The base path without its trailing slash; empty for none.
    base: String,
}

/// Why an upstream address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {given:?}: {why} (expected http://host:port[/base], e.g. http://127.0.0.1:9000)")]
pub struct UpstreamError {
    given: String,
    why: &'static str,
}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        let fail = |why| UpstreamError {
            given: redacted(given),
            why,
        };
        let uri: Uri = given.parse().map_err(|_| fail("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(fail(
                    "https upstreams are not supported: the gateway speaks plain HTTP/1.1 to an upstream on a network it trusts",
                ))
            }
            _ => return Err(fail("the scheme must be http")),
        }
        let authority = uri.authority().ok_or_else(|| fail("no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(fail("user info is not allowed"));
        }
        if authority.host().is_empty() {
            return Err(fail("no host"));
        }
        if uri.query().is_some() || given.contains('#') {
            return Err(fail("no query or fragment"));
        }
        let path = uri.path();
        if path
            .split('/')
            .any(|s| s == "." || s == ".." || s.contains('%'))
        {
            return Err(fail(
                "the base path may not hold dot segments or percent-escapes",
            ));
        }
        let base = path.trim_end_matches('/').to_owned();
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        Ok(Upstream {
            port: authority.port_u16().unwrap_or(80),
            host,
            authority,
            base,
        })
    }
}

/// `given` with any user info (which may hold a password) replaced by `***`.
fn redacted(given: &str) -> String {
    let Some(at) = given.find("://").map(|i| i + 3) else {
        return given.to_owned();
    };
    let end = given[at..].find('/').map_or(given.len(), |i| at + i);
    match given[at..end].rfind('@') {
        Some(i) => format!("{}***{}", &given[..at], &given[at + i..]),
        None => given.to_owned(),
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.base)
    }
}

impl Upstream {
    /// The host (a name or an address, without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when none was given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base path every forwarded path is put under (empty for none).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The upstream's URI for a request's path and query.
    pub(crate) fn uri_for(&self, pq: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = match (pq, self.base.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (Some(pq), false) => PathAndQuery::from_str(&format!("{}{}", self.base, pq))?,
            (None, true) => PathAndQuery::from_static("/"),
            (None, false) => PathAndQuery::from_str(&format!("{}/", self.base))?,
        };
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// How the gateway talks to its upstream.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The longest wait for the upstream's response head, connecting included (`504`
    /// after it). The body may take as long as it takes (server-sent events).
    pub timeout: Duration,
    /// Idle keep-alive connections kept to the upstream.
    pub max_idle: usize,
    /// How long an idle connection is kept. Keep it below the upstream's own keep-alive
    /// timeout (Node's is 5 s), so the gateway rarely picks a connection the upstream is
    /// closing.
    pub idle_timeout: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            timeout: Duration::from_secs(60),
            max_idle: 128,
            idle_timeout: Duration::from_secs(4),
        }
    }
}

/// Largest upstream response (by its `Content-Length`) read whole before it is sealed:
/// one chunk, so it leaves as one record (cheaper than a stream of one chunk) instead
/// of a stream started because hyper had not yet handed over bytes that are there.
const READ_WHOLE_MAX: u64 = sessioncert_proto::stream::MAX_CHUNK_LEN as u64;

/// The pooled client and what forwarding needs besides it.
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Body>,
    upstream: Upstream,
    /// The upstream's authority as a `Host` value, made once.
    host: HeaderValue,
    timeout: Duration,
    proto: HeaderValue,
    metrics: UpstreamMetrics,
}

impl Forwarder {
    pub(crate) fn new(upstream: Upstream, opts: &UpstreamOptions, tls: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // HTTP/1.1 only, pooled. hyper re-sends a request only when it never left the
        // gateway (a pooled connection found closed before a byte of it was written;
        // the request is handed back only then), so every request reaches the upstream
        // at most once.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(opts.max_idle)
            .pool_idle_timeout(opts.idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Forwarder {
            client,
            host: HeaderValue::from_str(upstream.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            upstream,
            timeout: opts.timeout,
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            metrics: UpstreamMetrics::new(),
        }
    }

    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(crate) fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// Sends `req` to the upstream and answers with its response, or with the
    /// gateway's `502`/`504`. `session`: the session of a sealed request (its response
    /// is about to be sealed).
    pub(crate) async fn forward(
        &self,
        req: Request<Body>,
        session: Option<HeaderValue>,
    ) -> Response {
        let (mut parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let sealed = session.is_some();
        headers::request(
            &mut parts.headers,
            headers::Forwarded {
                peer,
                proto: &self.proto,
                session,
            },
        );
        let uri = match self.upstream.uri_for(parts.uri.path_and_query()) {
            Ok(u) => u,
            Err(_) => return answer(StatusCode::BAD_REQUEST, "bad request target"),
        };
        // A plain body goes on piece by piece; each piece's charge in the listener's
        // body budget is given back once hyper has written and dropped it (as the
        // sealing layer does for a streamed sealed body), so a long upload holds
        // about one piece of the budget, not all it ever sent.
        let body = match parts.extensions.get::<BodyRelease>() {
            Some(release) if !sealed => Body::new(Releasing {
                inner: body,
                release: release.clone(),
            }),
            _ => body,
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method;
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = parts.headers;
        up.headers_mut().insert(header::HOST, self.host.clone());
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let res = match tokio::time::timeout_at(deadline, self.client.request(up)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    ErrorKind::Connect
                } else {
                    ErrorKind::Request
                };
                self.metrics.error(kind);
                // The cause for the operator; the client gets a short line without it.
                tracing::warn!(error = %ErrorChain(&e), kind = ?kind, "the upstream request failed; answering 502");
                return answer(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the upstream is unreachable or failed",
                );
            }
            Err(_) => {
                self.metrics.error(ErrorKind::Timeout);
                tracing::warn!(
                    timeout = ?self.timeout,
                    "no response head from the upstream in time; answering 504"
                );
                return answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway timeout: the upstream did not answer in time",
                );
            }
        };
        self.metrics
            .answered(res.status().as_u16(), started.elapsed());
        let (mut parts, incoming) = res.into_parts();
        headers::response(&mut parts.headers);
        let small = http_body::Body::size_hint(&incoming)
            .exact()
            .is_some_and(|n| n <= READ_WHOLE_MAX);
        let body = if sealed && small {
            // Bounded by its length (hyper delivers no more than it announced).
            match tokio::time::timeout_at(deadline, http_body_util::BodyExt::collect(incoming))
                .await
            {
                Ok(Ok(c)) => Body::from(c.to_bytes()),
                Ok(Err(e)) => {
                    self.metrics.error(ErrorKind::Body);
                    tracing::warn!(error = %ErrorChain(&e), "the upstream's response body failed; answering 502");
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        "bad gateway: the upstream's response failed",
                    );
                }
                Err(_) => {
                    self.metrics.error(ErrorKind::Timeout);
                    tracing::warn!(
                        "the upstream's response body did not arrive in time; answering 504"
                    );
                    return answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway timeout: the upstream did not answer in time",
                    );
                }
            }
        } else {
            Body::new(UpstreamBody {
                inner: incoming,
                errors: self.metrics.body_error_counter(),
            })
        };
        Response::from_parts(parts, body)
    }

    /// A request to the upstream for readiness: a TCP connection, nothing sent.
    pub(crate) async fn probe(&self, within: Duration) -> Result<(), String> {
        let addr = (self.upstream.host.as_str(), self.upstream.port);
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {within:?}")),
        }
    }
}

/// The gateway's own short answer (never naming the upstream).
pub(crate) fn answer(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// An error and its causes on one line.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// The upstream's response body, counted and logged when it fails part-way. The error
/// goes on: the sealing layer then cuts the sealed stream (the client sees it cut short,
/// never a clean end), and a plain response is cut the same way by the HTTP layer.
struct UpstreamBody {
    inner: Incoming,
    errors: metrics::Counter,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            self.errors.increment(1);
            tracing::warn!(error = %ErrorChain(e), "the upstream's response body failed part-way; cutting the response");
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body whose pieces give their budget charge back when dropped.
struct Releasing {
    inner: Body,
    release: BodyRelease,
}

/// One piece of a [`Releasing`] body.
struct Piece {
    bytes: Bytes,
    release: BodyRelease,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.release.release(self.bytes.len() as u64);
    }
}

impl http_body::Body for Releasing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let release = self.release.clone();
        Pin::new(&mut self.inner).poll_frame(cx).map(|f| {
            f.map(|r| {
                r.map(|frame| frame.map_data(|bytes| Bytes::from_owner(Piece { bytes, release })))
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses_parse_with_a_base_path() {
        let u: Upstream = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!((u.host(), u.port(), u.base()), ("127.0.0.1", 9000, ""));
        assert_eq!(u.to_string(), "http://127.0.0.1:9000");
        let pq = PathAndQuery::from_static("/orders/42?x=1");
        assert_eq!(
            u.uri_for(Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:9000/orders/42?x=1"
        );
        let u: Upstream = "http://app.internal/api/v1/".parse().unwrap();
        assert_eq!(
            (u.host(), u.port(), u.base()),
            ("app.internal", 80, "/api/v1")
        );
        assert_eq!(
            u.uri_for(Some(&pq)).unwrap().to_string(),
            "http://app.internal/api/v1/orders/42?x=1"
        );
        let u: Upstream = "http://[::1]:9000/".parse().unwrap();
        assert_eq!((u.host(), u.base()), ("::1", ""));
        for bad in [
            "127.0.0.1:9000",
            "https://127.0.0.1:9000",
            "ftp://a",
            "http://user:pw@a:1",
            "http://a:1/?q=1",
            "http://a:1/x#f",
            "http://a:1/../x",
            "http://a:1/%2e",
            "",
            "http://",
        ] {
            let e = bad.parse::<Upstream>().unwrap_err().to_string();
            assert!(e.contains("expected http://host:port[/base]"), "{bad}: {e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }
}
