//! The access log and the per-request metrics: a layer around the whole application that
//! writes one line when a request's response head is ready — method, path (no query),
//! status, refusal code, short session id, peer address, latency — and records the
//! request's latency and refusal.
//!
//! Nothing secret is written: the path without its query string (a query may carry
//! tokens), no header values, no bodies; the session id is not secret and is cut to its
//! first 8 characters (as `sessions list` prints it), enough to find the session. In full
//! mode the line names the full-mode endpoint, never the sealed request inside it.
//!
//! Lines about refusals, and about plain responses with an error status, go through
//! [`telemetry::refusal_line`]: a flood of bad requests writes a bounded number of lines.
//!
//! Why not tower-http's `TraceLayer`: it needs a span per request to carry the request's
//! fields to the line, and under callgrind that span (created, its fields formatted,
//! entered on every poll, closed) cost as much as the line itself — about a quarter of a
//! plain request's server instructions. One event with all fields costs half as much.

use crate::seal::H_SESSION;
use crate::telemetry::{self, RefusalKind, Refused, RequestMetrics, Served, ACCESS_LOG_TARGET};
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::{Method, Request, Uri};
use sessioncert_proto::{ErrorCode, SessionId};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Service;

/// Wraps `app` (whose futures are boxed, as the body guard's are) in the access log.
pub(crate) fn wrap<S>(app: S) -> AccessLog<S> {
    AccessLog {
        inner: app,
        metrics: Arc::new(RequestMetrics::new()),
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

/// What the line needs from the request (taken only while the line is enabled).
struct RequestInfo {
    method: Method,
    uri: Uri,
    peer: Option<IpAddr>,
    session: Option<LoggedSession>,
}

/// The session a request names, as its access line shows it.
enum LoggedSession {
    /// The real protocol's: the first 8 characters.
    Sealed(SessionId),
    /// A legacy Session-Cert request's `session-cert-id`: `legacy:N`, as `sessions list`
    /// shows it.
    Legacy(sessioncert_legacy::LegacyId),
}

impl fmt::Display for LoggedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggedSession::Sealed(id) => ShortId(*id).fmt(f),
            LoggedSession::Legacy(id) => write!(f, "legacy:{id}"),
        }
    }
}

impl RequestInfo {
    fn of<B>(req: &Request<B>) -> Self {
        RequestInfo {
            method: req.method().clone(),
            uri: req.uri().clone(),
            peer: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            // Only a well-formed id is written: the header's text is the peer's.
            session: req
                .headers()
                .get(&H_SESSION)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse().ok())
                .map(LoggedSession::Sealed)
                .or_else(|| {
                    req.headers()
                        .get(sessioncert_legacy::wire::ID_HEADER)
                        .and_then(|v| sessioncert_legacy::LegacyId::parse_header(v.as_bytes()))
                        .map(LoggedSession::Legacy)
                }),
        }
    }
}

impl<S, B> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let info = tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO)
            .then(|| RequestInfo::of(&req));
        AccessFuture {
            inner: self.inner.call(req),
            start,
            info,
            metrics: self.metrics.clone(),
        }
    }
}

/// The application's future; records and logs the response when it is ready.
pub(crate) struct AccessFuture<F> {
    inner: F,
    start: Instant,
    info: Option<RequestInfo>,
    metrics: Arc<RequestMetrics>,
}

impl<F> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(r)) => r,
        };
        let latency = this.start.elapsed();
        let served = response.extensions().get::<Served>().copied();
        let refused = response.extensions().get::<Refused>().map(|r| r.0);
        let status = response.status().as_u16();
        this.metrics.record(served, refused, status, latency);
        if let Some(info) = this.info.take() {
            write_line(&info, served, refused, status, latency.as_micros() as u64);
        }
        Poll::Ready(Ok(response))
    }
}

fn write_line(
    info: &RequestInfo,
    served: Option<Served>,
    refused: Option<ErrorCode>,
    status: u16,
    latency_us: u64,
) {
    let write = match refused {
        Some(code) => telemetry::refusal_line(RefusalKind::Code(code)),
        None if served.is_none() && status >= 400 => telemetry::plain_error_line(),
        None => true,
    };
    if !write {
        return;
    }
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        method = %info.method,
        // The peer's text: escaped, so it cannot fake fields or reorder a terminal line.
        path = %LogSafe(info.uri.path()),
        status,
        refusal = refused.map(|c| display(c.as_str())),
        session = info.session.as_ref().map(display),
        peer = info.peer.map(display),
        latency_us,
    );
}

/// The first 8 characters of a session id as `sessions list` prints it.
pub(crate) struct ShortId(pub(crate) SessionId);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        // The id prints as unpadded base64url: its first 8 characters are those of its
        // first 6 bytes.
        let mut out = [0u8; 8];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(&self.0.as_bytes()[..6], &mut out)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&out[..n]).map_err(|_| fmt::Error)?)
    }
}

/// A connection over the per-address cap, answered `429` before any request was read.
pub(crate) fn connection_refused(remote: SocketAddr) {
    let kind = RefusalKind::Code(ErrorCode::RateLimited);
    telemetry::refusal(kind, 429);
    if telemetry::refusal_line(kind) {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            peer = %remote.ip(),
            status = 429,
            refusal = %kind.label(),
            "connection refused: too many connections from this address"
        );
    }
}

/// A connection ended with an error: counts the HTTP layer's own refusals of a request
/// head (hyper answers `431` to a head larger than its buffer, `400` to one it cannot
/// parse, before the application sees a request).
pub(crate) fn connection_error(remote: SocketAddr, e: &(dyn std::error::Error + 'static)) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    let (kind, status) = if e.is_parse_too_large() {
        (RefusalKind::HeadTooLarge, 431)
    } else if e.is_parse() {
        (RefusalKind::BadHead, 400)
    } else {
        return;
    };
    telemetry::refusal(kind, status);
    if telemetry::refusal_line(kind) {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            peer = %remote.ip(),
            status,
            refusal = %kind.label(),
            "request head refused by the HTTP layer"
        );
    }
}

/// A peer's text for a log line: printable ASCII stays as it is; `"`, `\\`, `%` and every
/// other byte (controls, non-ASCII such as U+202E) are percent-encoded.
struct LogSafe<'a>(&'a str);

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &b in self.0.as_bytes() {
            if (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b'%') {
                std::fmt::Write::write_char(f, b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod log_safe_tests {
    use super::LogSafe;

    #[test]
    fn peer_text_cannot_fake_fields_or_reorder_a_line() {
        assert_eq!(
            LogSafe("/apiTest/a-b_c.d~e").to_string(),
            "/apiTest/a-b_c.d~e"
        );
        assert_eq!(
            LogSafe("/a\u{202e}\"status=200").to_string(),
            "/a%E2%80%AE%22status=200"
        );
        assert_eq!(
            LogSafe("/x\"}{\"s\":1 %").to_string(),
            "/x%22}{%22s%22:1%20%25"
        );
    }
}
