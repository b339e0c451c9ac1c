//! `serve --cors-origin ORIGIN`: Cross-Origin Resource Sharing for web apps on other
//! origins, with tower-http's `CorsLayer`.
//!
//! A page on `https://app.example` that calls this server through the browser client
//! sends requests the browser must preflight (`content-type:
//! application/sessioncert-sealed` and the `sessioncert-*` headers are not
//! CORS-safelisted), and may read only the response headers the server exposes. This
//! layer answers the preflights for the listed origins — before any sealing, so a
//! preflight is neither a sealed request nor refused as an unsealed one — and exposes the
//! headers the client must read (refusal codes, the real status of a 204, the inner
//! content type, …).
//!
//! Only a real preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`,
//! as the Fetch standard defines it) is answered here. tower-http's `Cors` answers *every*
//! `OPTIONS` request itself, which would swallow a sealed `OPTIONS` request (a method
//! sessioncert seals like any other); such a request goes on to the routes, still with
//! the CORS headers on its response.
//!
//! No credentials are allowed: sessioncert uses no cookies, a session is held by the
//! client in memory.

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method};
use sessioncert_proto::wire;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowOrigin, Cors, CorsLayer};

/// Response headers a cross-origin page may read: the ones the client must read.
pub const EXPOSED_RESPONSE_HEADERS: [&str; 7] = [
    wire::ERROR_HEADER,
    wire::STATUS_HEADER,
    wire::CONTENT_TYPE_HEADER,
    wire::REFUSAL_HEADER,
    wire::SESSION_HEADER,
    wire::RECORD_HEADER,
    "retry-after",
];

/// How long a browser may reuse a preflight's answer (Chromium caps it at 2 h, Firefox
/// at 24 h). A sealed request to a new URL needs a preflight; this keeps them rare.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Checks one `--cors-origin` value: an origin as a browser sends it in `Origin`
/// (`scheme://host[:port]`, http or https, lower case, no default port, no path). `*` is
/// refused: any web page could then use this server through its visitors' browsers
/// (their network position, e.g. an intranet server, without a cookie); list the apps.
pub fn check_origin(origin: &str) -> Result<HeaderValue, String> {
    let o = origin.trim();
    if o == "*" {
        return Err(format!(
            "--cors-origin {origin:?}: `*` is refused: it lets any web page call this server \
             through its visitors' browsers; list the origins of your apps instead, e.g. \
             https://app.example.com"
        ));
    }
    if !sessioncert_server::is_valid_origin(o) {
        return Err(format!(
            "--cors-origin {origin:?}: expected an origin as browsers send it, \
             scheme://host[:port] (http or https, lower case, no default port, no path or \
             trailing slash), e.g. https://app.example.com"
        ));
    }
    HeaderValue::from_str(o).map_err(|_| format!("--cors-origin {origin:?}: not a header value"))
}

/// The layer for `origins` (already checked with [`check_origin`]); `None` when there
/// are none (no CORS headers at all, as before).
pub fn layer(origins: Vec<HeaderValue>) -> Option<PreflightLayer> {
    if origins.is_empty() {
        return None;
    }
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter().map(|h| HeaderName::from_static(h)).collect()
    };
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        // Whatever headers the listed app asks for: the protocol's own, and the app's
        // (`authorization`, which the client always binds, custom ones). The origins are
        // the operator's own apps and no credentials are allowed, so a fixed list would
        // only break apps, not protect anything.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(names(&EXPOSED_RESPONSE_HEADERS))
        .max_age(PREFLIGHT_MAX_AGE);
    Some(PreflightLayer { cors })
}

/// Whether `req` is a CORS preflight (Fetch standard: `OPTIONS` carrying `Origin` and
/// `Access-Control-Request-Method`).
fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Marks a non-preflight `OPTIONS` request while it passes `Cors` as a `GET`.
#[derive(Clone, Copy)]
struct RealOptions;

/// tower-http's `CorsLayer`, answering only real preflights itself (see the module docs).
#[derive(Clone)]
pub struct PreflightLayer {
    cors: CorsLayer,
}

impl<S> Layer<S> for PreflightLayer {
    type Service = PreflightOnly<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PreflightOnly {
            cors: self.cors.layer(RestoreOptions(inner)),
        }
    }
}

/// The service of [`PreflightLayer`].
#[derive(Clone)]
pub struct PreflightOnly<S> {
    cors: Cors<RestoreOptions<S>>,
}

impl<S> Service<Request> for PreflightOnly<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.cors.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if req.method() == Method::OPTIONS && !is_preflight(&req) {
            // `Cors` would answer it as a preflight; let it through as a GET (for the
            // CORS headers of an actual request) and restore the method behind `Cors`.
            *req.method_mut() = Method::GET;
            req.extensions_mut().insert(RealOptions);
        }
        Box::pin(self.cors.call(req))
    }
}

/// Behind `Cors`: gives a request marked [`RealOptions`] its method back.
#[derive(Clone)]
pub struct RestoreOptions<S>(S);

impl<S> Service<Request> for RestoreOptions<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if req.extensions_mut().remove::<RealOptions>().is_some() {
            *req.method_mut() = Method::OPTIONS;
        }
        self.0.call(req)
    }
}
