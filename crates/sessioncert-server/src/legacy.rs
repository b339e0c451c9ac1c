//! The original Session-Cert prototype's HTTP surface (`--legacy-session-cert`): its
//! three handshake routes and its protected requests, beside the protocol's own.
//!
//! [`SessionCert::router`](crate::SessionCert::router) adds both when the builder turned
//! legacy mode on: the routes under `/sessionCert/`, and a switch in front of the whole
//! router. A request carrying `session-cert-id` (and no `sessioncert-id`) is opened by
//! the legacy session it names, handed to the same routes as plaintext with a
//! [`LegacyContext`], and its response body encrypted back; any other request goes on to
//! the protocol's routes and the sealing layer as before. The session state is in
//! [`crate::sessions`] (`sessions::legacy`).

use crate::seal::read_body;
use crate::sessions::{LegacyRefusal, SessionManager};
use crate::telemetry::{Refused, Served};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use sessioncert_legacy::wire::{self, LegacyId};
use sessioncert_proto::ErrorCode;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt as _};

/// Largest body of `symmetricKey` and `establish` (a 4096-bit key's ciphertext is 684
/// base64 characters; the test string's JSON encrypts to about 90).
const HANDSHAKE_BODY_MAX: usize = 8 * 1024;

/// What the establish answers on success (the original's words).
const ESTABLISHED_MESSAGE: &str = "session cert 설정이 완료되었습니다.";

/// Put into the extensions of every request that arrived as a legacy Session-Cert
/// protected request, so handlers can tell which legacy session they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyContext {
    /// The legacy session's id, as its client knows it.
    pub id: LegacyId,
    /// The session's id in the store and in `sessions list`.
    pub session_id: sessioncert_proto::SessionId,
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

impl IntoResponse for LegacyRefusal {
    fn into_response(self) -> Response {
        // `code`: how the refusal is counted and logged (`sessioncert_refusals_total`, the
        // access log), in the real protocol's terms; the peer sees only status and body.
        let (status, code, message, retry) = match self {
            LegacyRefusal::BadRequest(m) => {
                (StatusCode::BAD_REQUEST, ErrorCode::Malformed, m, None)
            }
            LegacyRefusal::Refused => (
                StatusCode::FORBIDDEN,
                ErrorCode::Rejected,
                "session cert refused",
                None,
            ),
            LegacyRefusal::RateLimited(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many handshakes or sessions from this address",
                Some(s),
            ),
            LegacyRefusal::Unavailable(s) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "server busy or shutting down; try again",
                Some(s),
            ),
        };
        let mut r = json(status, status_body(false, message));
        r.extensions_mut().insert(Refused(code));
        if let Some(s) = retry {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// `{"status":…,"message":…}` in the original's key order.
fn status_body(status: bool, message: &str) -> String {
    format!(
        r#"{{"status":{status},"message":{}}}"#,
        serde_json::Value::from(message)
    )
}

fn served(mut r: Response) -> Response {
    r.extensions_mut().insert(Served::Legacy);
    r
}

fn client_addr(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Reads a legacy body as text: 413 above `limit`, 400 if it is not UTF-8 (a CryptoJS
/// ciphertext is base64, a key body JSON).
async fn read_text(body: Body, limit: usize) -> Result<String, Response> {
    let bytes = read_body(body, limit).await.map_err(|r| {
        if r.code == ErrorCode::TooLarge {
            let mut too_large = json(
                StatusCode::PAYLOAD_TOO_LARGE,
                status_body(false, "body too large"),
            );
            too_large
                .extensions_mut()
                .insert(Refused(ErrorCode::TooLarge));
            too_large
        } else {
            LegacyRefusal::BadRequest("body could not be read").into_response()
        }
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| LegacyRefusal::BadRequest("body is not text").into_response())
}

fn legacy_id(headers: &HeaderMap) -> Result<LegacyId, LegacyRefusal> {
    if headers.get_all(wire::ID_HEADER).iter().nth(1).is_some() {
        return Err(LegacyRefusal::BadRequest(
            "more than one session-cert-id header",
        ));
    }
    headers
        .get(wire::ID_HEADER)
        .and_then(|v| LegacyId::parse_header(v.as_bytes()))
        .ok_or(LegacyRefusal::BadRequest(
            "session-cert-id header missing or not a session id",
        ))
}

/// The three handshake routes.
pub(crate) fn routes(manager: Arc<SessionManager>) -> Router {
    Router::new()
        .route(wire::PUBLIC_KEY_PATH, get(public_key))
        .route(wire::SYMMETRIC_KEY_PATH, post(symmetric_key))
        .route(wire::ESTABLISH_PATH, patch(establish))
        .with_state(manager)
}

async fn public_key(State(m): State<Arc<SessionManager>>) -> Response {
    served(match m.legacy_public_key() {
        Ok((id, pem)) => json(StatusCode::OK, wire::public_key_body(id, &pem)),
        Err(r) => r.into_response(),
    })
}

async fn symmetric_key(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let addr = client_addr(&req);
    let body = match read_text(req.into_body(), HANDSHAKE_BODY_MAX).await {
        Ok(b) => b,
        Err(r) => return served(r),
    };
    served(match m.legacy_symmetric_key(body.as_bytes(), addr).await {
        Ok(answer) => text(StatusCode::CREATED, answer),
        Err(r) => r.into_response(),
    })
}

async fn establish(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let addr = client_addr(&req);
    let id = match legacy_id(req.headers()) {
        Ok(id) => id,
        Err(r) => return served(r.into_response()),
    };
    let body = match read_text(req.into_body(), HANDSHAKE_BODY_MAX).await {
        Ok(b) => b,
        Err(r) => return served(r),
    };
    served(match m.legacy_establish(id, &body, addr).await {
        Ok(()) => json(StatusCode::OK, status_body(true, ESTABLISHED_MESSAGE)),
        Err(r) => r.into_response(),
    })
}

/// In front of the whole router when legacy mode is on: a request carrying
/// `session-cert-id` (and no `sessioncert-id`), to any path but the legacy handshake's,
/// is a legacy protected request, opened and dispatched into the unwrapped `routes`;
/// anything else goes to `modern` (the protocol's routes and the sealed ones) as before.
/// In front of the router rather than per route, so the request is routed once, as sent.
#[derive(Clone)]
pub(crate) struct LegacySwitch {
    manager: Arc<SessionManager>,
    routes: Router,
    modern: Router,
}

impl LegacySwitch {
    pub(crate) fn new(manager: Arc<SessionManager>, routes: Router, modern: Router) -> Self {
        LegacySwitch {
            manager,
            routes,
            modern,
        }
    }
}

/// Whether `req` is a legacy protected request (see [`LegacySwitch`]).
fn is_legacy_request(req: &Request) -> bool {
    req.headers().contains_key(wire::ID_HEADER)
        && !req
            .headers()
            .contains_key(sessioncert_proto::wire::SESSION_HEADER)
        && ![
            wire::PUBLIC_KEY_PATH,
            wire::SYMMETRIC_KEY_PATH,
            wire::ESTABLISH_PATH,
        ]
        .contains(&req.uri().path())
}

impl Service<Request> for LegacySwitch {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !is_legacy_request(&req) {
            return Box::pin(self.modern.clone().oneshot(req));
        }
        let manager = self.manager.clone();
        let routes = self.routes.clone();
        Box::pin(async move { Ok(served(serve(&manager, routes, req).await)) })
    }
}

/// Open → dispatch → encrypt, or the refusal.
async fn serve(manager: &Arc<SessionManager>, routes: Router, req: Request) -> Response {
    let id = match legacy_id(req.headers()) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    // Not a byte of the body before the session is known: a made-up id must not make
    // the server buffer anything.
    if let Err(r) = manager.legacy_precheck(id) {
        return r.into_response();
    }
    let (mut parts, body) = req.into_parts();
    let body = match read_text(body, manager.limits().max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Browsers and axios send `GET` and `HEAD` without a body: such a request carries no
    // proof of the key, and is served only because it changes nothing and its answer is
    // sealed (docs/LEGACY.md §4). Every other request must carry a message.
    let bodiless = body.is_empty() && matches!(parts.method, Method::GET | Method::HEAD);
    let opened = if bodiless {
        manager.legacy_open(id, None)
    } else {
        manager.legacy_open(id, Some(&body))
    };
    let (entry, plain) = match opened {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    drop(body);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Ok(v) = HeaderValue::from_str(&plain.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    parts.extensions.insert(LegacyContext {
        id,
        session_id: id.session_id(),
    });
    let handler_req = Request::from_parts(parts, Body::from(Bytes::from(plain.to_vec())));
    drop(plain);
    // Running until the handler answered: a close of the session waits for it.
    let running = SessionManager::legacy_running(&entry);
    let response = match routes.oneshot(handler_req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    drop(running);
    let (mut parts, body) = response.into_parts();
    let limit = manager.limits().max_response_bytes;
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            tracing::error!(
                legacy_id = id.get(),
                limit,
                "legacy handler's response too large or unreadable"
            );
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            Bytes::from_static(br#"{"status":false,"message":"internal error"}"#)
        }
    };
    let sealed = match manager.legacy_seal(&entry, &bytes) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(h);
    }
    // Held, and counted against the response budget, until the peer took it.
    let mut r = text(parts.status, String::new());
    *r.body_mut() = Body::new(crate::seal::Charged::new(
        Bytes::from(sealed),
        manager.response_bytes.clone(),
    ));
    let own: Vec<header::HeaderName> = r.headers().keys().cloned().collect();
    for (k, v) in parts.headers.iter() {
        if !own.contains(k) {
            r.headers_mut().append(k.clone(), v.clone());
        }
    }
    r
}
