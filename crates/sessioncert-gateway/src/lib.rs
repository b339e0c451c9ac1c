//! sessioncert in front of any HTTP API: a reverse proxy that opens sealed requests,
//! forwards them in plain HTTP/1.1 to an upstream, and seals the upstream's responses
//! back — the way a TLS terminator fronts an application.
//!
//! ```no_run
//! use sessioncert_gateway::{Gateway, GatewayConfig, Route, RoutePolicy, UpstreamOptions};
//! use sessioncert_server::{now_ms, ServerKeys, SessionCert};
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (keys, _) = ServerKeys::open_or_create("./data".as_ref(), now_ms())?;
//! let store = Arc::new(sessioncert_store::MemoryStore::new());
//! let sc = SessionCert::builder(Arc::new(keys), store).build().await?;
//! let mut policy = RoutePolicy::new();          // everything sealed…
//! policy.add("/health", Route::Plain)?;          // …but the health check
//! policy.add("/admin", Route::Refuse)?;          // and never the admin pages
//! let gateway = Gateway::new(GatewayConfig {
//!     upstream: "http://127.0.0.1:9000".parse()?,
//!     options: UpstreamOptions::default(),
//!     policy,
//!     tls: false,
//! });
//! let app = gateway.router(&sc);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! sessioncert_server::listener::serve(listener, app, Default::default(), stop).await;
//! sc.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # What happens to a request
//!
//! The gateway's router is the [`SessionCert`] router (handshake, key confirmation,
//! close, full-request mode) with the forwarder as its one sealed handler, behind a
//! dispatcher that applies the [`RoutePolicy`] first:
//!
//! - **sealed** (every path unless a prefix says otherwise): the existing [`SealLayer`]
//!   opens the request (header mode, or full mode through the full-mode endpoint), the
//!   forwarder sends the plaintext to the upstream, and the layer seals the upstream's
//!   response. Bodies stream both ways, chunk by chunk, never whole: an upload is read
//!   from the client as the upstream takes it, a response (server-sent events included)
//!   is sealed and sent as the upstream produces it. A plain request gets the
//!   protocol's refusal;
//! - **plain**: forwarded as it came, its response returned unsealed (a request that
//!   arrives sealed anyway is served sealed);
//! - **refuse**: `404` from the gateway, sealed for a sealed request; the upstream
//!   never sees it.
//!
//! A path is matched as the upstream may read it (see [`policy`]); the protocol's own
//! paths are always the gateway's. Headers are filtered both ways (see [`headers`]):
//! the upstream gets `X-Forwarded-For`/`-Proto`/`-Host` and, for a sealed request,
//! [`SESSION_HEADER`] naming the session, and no copy of any of them that a client
//! sent.
//!
//! # Upstream failures
//!
//! No connection → sealed `502`; no response head within
//! [`UpstreamOptions::timeout`] → sealed `504`; the upstream's body failing part-way →
//! the sealed stream is cut, so the client sees it cut short, never a clean end. The
//! client gets a short line, never the upstream's address (the operator's log has the
//! cause). A request is sent to the upstream at most once.
//!
//! [`SealLayer`]: sessioncert_server::SealLayer
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod headers;
pub mod policy;
pub mod telemetry;
mod upstream;

pub use headers::SESSION_HEADER;
pub use policy::{BadPath, Decision, PolicyError, Route, RoutePolicy};
pub use upstream::{Upstream, UpstreamError, UpstreamOptions};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, StatusCode};
use sessioncert_server::{LegacyContext, SealedContext, SessionCert};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt as _};
use upstream::{answer, Forwarder};

/// What a [`Gateway`] is made of.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where requests go.
    pub upstream: Upstream,
    /// How the gateway talks to it.
    pub options: UpstreamOptions,
    /// Which paths are sealed, plain or refused.
    pub policy: RoutePolicy,
    /// Whether clients reach the gateway over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// The sealing reverse proxy. Cheap to clone; every clone shares one connection pool.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    forwarder: Forwarder,
    policy: RoutePolicy,
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

/// How long a readiness probe of the upstream is reused: `/readyz` cannot be turned into
/// a flood of connections to the upstream.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

/// The longest a readiness probe waits for a connection to the upstream.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The upstream did not take a connection (readiness).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the upstream is unreachable")]
pub struct UpstreamDown {
    detail: String,
}

impl UpstreamDown {
    /// What the probe saw (for the operator's log; may name the upstream's address).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl Gateway {
    /// A gateway for `config`. Records its metrics with the recorder installed now
    /// (install one first, as for [`SessionCert`]).
    pub fn new(config: GatewayConfig) -> Gateway {
        Gateway {
            shared: Arc::new(Shared {
                forwarder: Forwarder::new(config.upstream, &config.options, config.tls),
                policy: config.policy,
                probe: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The upstream requests go to.
    pub fn upstream(&self) -> &Upstream {
        self.shared.forwarder.upstream()
    }

    /// The route policy.
    pub fn policy(&self) -> &RoutePolicy {
        &self.shared.policy
    }

    /// The whole application: `sc`'s protocol endpoints, every other path by the route
    /// policy. Serve it with `sessioncert_server::listener::serve` (which gives the
    /// forwarder the peer's address for `X-Forwarded-For`).
    pub fn router(&self, sc: &SessionCert) -> Router {
        self.router_with(sc, |r| r)
    }

    /// [`Gateway::router`], with `wrap` applied to the sealed part (the protocol
    /// endpoints, sealed requests and their refusals) — for a CORS layer, say, which
    /// must answer preflights there but leave the plain routes to the upstream.
    pub fn router_with(&self, sc: &SessionCert, wrap: impl FnOnce(Router) -> Router) -> Router {
        let inner = Router::new().fallback_service(Inner {
            gateway: self.clone(),
        });
        let sealed = wrap(sc.router(inner));
        Router::new().fallback_service(Dispatch {
            gateway: self.clone(),
            sealed,
            legacy: sc.manager().legacy_enabled(),
        })
    }

    /// `Ok` when the upstream takes a TCP connection (nothing is sent on it). One probe
    /// at a time, its answer reused for [`PROBE_CACHE`]: callers of `/readyz` cannot
    /// make the gateway flood the upstream.
    pub async fn upstream_ready(&self) -> Result<(), UpstreamDown> {
        let mut cached = self.shared.probe.lock().await;
        let result = match &*cached {
            Some((at, r)) if at.elapsed() < PROBE_CACHE => r.clone(),
            previous => {
                let was_up = previous.as_ref().map(|(_, r)| r.is_ok());
                let r = self.shared.forwarder.probe(PROBE_TIMEOUT).await;
                match (&r, was_up) {
                    (Err(e), Some(true) | None) => {
                        tracing::warn!(upstream = %self.upstream(), error = %e, "the upstream is unreachable: not ready")
                    }
                    (Ok(()), Some(false)) => {
                        tracing::info!(upstream = %self.upstream(), "the upstream is reachable again")
                    }
                    _ => {}
                }
                *cached = Some((Instant::now(), r.clone()));
                r
            }
        };
        result.map_err(|detail| UpstreamDown { detail })
    }
}

/// Applies the route policy before anything else (see the crate docs).
#[derive(Clone)]
struct Dispatch {
    gateway: Gateway,
    sealed: Router,
    /// Legacy Session-Cert mode is on: its handshake paths are the sealing side's, and a
    /// request carrying `session-cert-id` is opened there like a sealed one.
    legacy: bool,
}

/// Whether `path` is under the legacy Session-Cert handshake's `/sessionCert/` however
/// it is spelled (extra slashes, case, percent-encoding, `;` parameters: an upstream
/// such as Express may match any of them): with legacy mode on, none of it is forwarded.
fn is_legacy_path(path: &str) -> bool {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let first = first.split(';').next().unwrap_or_default();
    percent_decode(first).is_some_and(|s| s.eq_ignore_ascii_case("sessioncert"))
}

/// `%XX`-decodes `s` (`None` if that is not valid UTF-8 or an escape is broken).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let shared = &self.gateway.shared;
        let sealed_request = req
            .headers()
            .contains_key(sessioncert_proto::wire::SESSION_HEADER)
            || (self.legacy
                && req
                    .headers()
                    .contains_key(sessioncert_legacy::wire::ID_HEADER));
        if self.legacy && is_legacy_path(req.uri().path()) {
            return Box::pin(self.sealed.clone().oneshot(req));
        }
        match shared.policy.decide(req.uri().path()) {
            Err(bad) => {
                shared.forwarder.metrics().bad_path();
                tracing::debug!(error = %bad, "request path refused");
                ready(answer(StatusCode::BAD_REQUEST, "bad request path"))
            }
            Ok(Decision::Route(Route::Plain)) if !sealed_request => {
                let gateway = self.gateway.clone();
                Box::pin(async move { Ok(gateway.shared.forwarder.forward(req, None).await) })
            }
            Ok(Decision::Route(Route::Refuse)) if !sealed_request => {
                shared.forwarder.metrics().refused();
                ready(answer(StatusCode::NOT_FOUND, "not found"))
            }
            // Sealed routes, the protocol's, and sealed requests to any route: the
            // sealing layer opens them (or refuses them) and `Inner` forwards them or
            // not. A header-mode request keeps its extensions through the layer, so the
            // decision goes with it; a full-mode request's path is decided there.
            Ok(decision) => {
                let mut req = req;
                req.extensions_mut().insert(Decided(decision));
                Box::pin(self.sealed.clone().oneshot(req))
            }
        }
    }
}

/// The route `Dispatch` decided for a request it passed to the sealing layer.
#[derive(Debug, Clone, Copy)]
struct Decided(Decision);

/// The handler behind the sealing layer: the route policy again (for full-mode
/// requests, whose path was sealed, and sealed requests to refused routes), then the
/// upstream.
#[derive(Clone)]
struct Inner {
    gateway: Gateway,
}

impl Service<Request<Body>> for Inner {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let shared = &self.gateway.shared;
        let ctx = match (
            req.extensions().get::<SealedContext>().copied(),
            req.extensions().get::<LegacyContext>().copied(),
        ) {
            (Some(c), _) => Opened {
                full: c.full,
                session: c.session_id.to_string(),
            },
            // Opened by the legacy layer: a header-mode request, named as operators see
            // it in `sessions list`.
            (None, Some(l)) => Opened {
                full: false,
                session: format!("legacy:{}", l.id),
            },
            (None, None) => {
                // Only the sealing layers call this; a request without their context was
                // not opened by them and must not pass as sealed.
                tracing::error!("a request reached the gateway's sealed handler unopened");
                return ready(answer(StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
            }
        };
        let decided = match req.extensions().get::<Decided>() {
            // Decided by `Dispatch` on this very path (header mode keeps the request's
            // path and extensions); a full-mode request carries a path of its own.
            Some(Decided(d)) if !ctx.full => Ok(*d),
            _ => shared.policy.decide(req.uri().path()),
        };
        match decided {
            Err(bad) => {
                shared.forwarder.metrics().bad_path();
                tracing::debug!(error = %bad, session = %ctx.session, "sealed request path refused");
                ready(answer(StatusCode::BAD_REQUEST, "bad request path"))
            }
            // The protocol's paths are never forwarded (a full-mode request can name
            // one; a header-mode one reaches here only if it matched no endpoint).
            Ok(Decision::Protocol | Decision::Route(Route::Refuse)) => {
                shared.forwarder.metrics().refused();
                ready(answer(StatusCode::NOT_FOUND, "not found"))
            }
            Ok(Decision::Route(Route::Plain | Route::Sealed)) => {
                let session = HeaderValue::from_str(&ctx.session).ok();
                let gateway = self.gateway.clone();
                Box::pin(async move { Ok(gateway.shared.forwarder.forward(req, session).await) })
            }
        }
    }
}

/// What `Inner` needs of the layer that opened a request.
struct Opened {
    full: bool,
    session: String,
}

fn ready(r: Response) -> BoxFuture<'static, Result<Response, Infallible>> {
    Box::pin(std::future::ready(Ok(r)))
}

#[cfg(test)]
mod tests {
    use super::is_legacy_path;

    #[test]
    fn the_legacy_handshake_paths_are_recognised_however_spelled() {
        for p in [
            "/sessionCert/publicKey",
            "//sessionCert/publicKey",
            "/sessioncert/publickey",
            "/SESSIONCERT/establish",
            "/sessionCert/publicKey/",
            "/%73essionCert/symmetricKey",
            "/sessionCert;x=1/publicKey",
            "/sessionCert",
        ] {
            assert!(is_legacy_path(p), "{p}");
        }
        for p in [
            "/",
            "/sessionCerts/publicKey",
            "/api/sessionCert/publicKey",
            "/.well-known/sessioncert/config",
        ] {
            assert!(!is_legacy_path(p), "{p}");
        }
    }
}
