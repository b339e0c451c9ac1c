//! The access log and the per-request metrics: tower-http's [`TraceLayer`] with a span
//! per request (method, path, peer, short session id) and one line when its response
//! head is ready (status, refusal code, mode, latency).
//!
//! Nothing secret is written: the path without its query string (a query may carry
//! tokens), no header values, no bodies; the session id is not secret and is cut to its
//! first 8 characters (as `sessions list` prints it), enough to find the session. In full
//! mode the line names the full-mode endpoint, never the sealed request inside it.
//!
//! Lines about refusals, and about plain responses with an error status, go through
//! [`telemetry::refusal_line`]: a flood of bad requests writes a bounded number of lines.

use crate::seal::H_SESSION;
use crate::telemetry::{self, RefusalKind, Refused, Served, ACCESS_LOG_TARGET};
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, Response};
use sessioncert_proto::{ErrorCode, SessionId};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tower::Layer as _;
use tower_http::classify::{
    NeverClassifyEos, ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier,
};
use tower_http::trace::{MakeSpan, OnResponse, ResponseBody, TraceLayer};
use tracing::field::{display, Empty};
use tracing::Span;

/// The access-log layer [`super::serve`] puts around every application.
pub(crate) type AccessLogLayer =
    TraceLayer<SharedClassifier<ServerErrorsAsFailures>, AccessSpan, (), AccessLine, (), (), ()>;

/// The access-log layer: a span per request, one line per response; the layer's other
/// callbacks are off (failures are refusals or handler errors, logged where they happen).
pub(crate) fn layer() -> AccessLogLayer {
    TraceLayer::new_for_http()
        .make_span_with(AccessSpan)
        .on_request(())
        .on_response(AccessLine)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// The response body the access-log layer hands on.
type AccessBody = ResponseBody<Body, NeverClassifyEos<ServerErrorsFailureClass>, (), (), ()>;

/// Wraps `app` in the access-log layer, its responses' bodies boxed back into [`Body`]
/// (what the connection code serves).
pub(crate) fn wrap<S>(
    app: S,
) -> tower::util::MapResponse<
    tower_http::trace::Trace<
        S,
        SharedClassifier<ServerErrorsAsFailures>,
        AccessSpan,
        (),
        AccessLine,
        (),
        (),
        (),
    >,
    fn(Response<AccessBody>) -> Response<Body>,
> {
    let unbox: fn(Response<AccessBody>) -> Response<Body> = |r| r.map(Body::new);
    tower::util::MapResponse::new(layer().layer(app), unbox)
}

/// The first 8 characters of a session id as `sessions list` prints it.
struct ShortId(SessionId);

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

/// Makes the request's span: method, path (no query), peer address, short session id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessSpan;

impl<B> MakeSpan<B> for AccessSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let span = tracing::info_span!(
            target: ACCESS_LOG_TARGET,
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            peer = Empty,
            session = Empty,
        );
        if span.is_disabled() {
            return span;
        }
        if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
            span.record("peer", display(addr.ip()));
        }
        // Only a well-formed id is written: the header's text is the peer's.
        if let Some(id) = req
            .headers()
            .get(&H_SESSION)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<SessionId>().ok())
        {
            span.record("session", display(ShortId(id)));
        }
        span
    }
}

/// Records the request's metrics and writes its line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine;

impl<B> OnResponse<B> for AccessLine {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        let served = response.extensions().get::<Served>().copied();
        let refused = response.extensions().get::<Refused>().map(|r| r.0);
        let status = response.status().as_u16();
        telemetry::request_done(served, refused, status, latency);
        if !tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO) {
            return;
        }
        let mode = match served {
            Some(Served::Sealed) => "sealed",
            Some(Served::Full) => "full",
            Some(Served::Handshake) => "handshake",
            None => "plain",
        };
        let latency_ms = latency.as_micros() as f64 / 1000.0;
        // Called inside the request's span: the line carries its fields.
        match refused {
            Some(code) => {
                if telemetry::refusal_line(RefusalKind::Code(code)) {
                    tracing::info!(
                        target: ACCESS_LOG_TARGET,
                        status,
                        refusal = %code.as_str(),
                        mode = %mode,
                        latency_ms
                    );
                }
            }
            None => {
                if served.is_none() && status >= 400 && !telemetry::plain_error_line() {
                    return;
                }
                tracing::info!(target: ACCESS_LOG_TARGET, status, mode = %mode, latency_ms);
            }
        }
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
