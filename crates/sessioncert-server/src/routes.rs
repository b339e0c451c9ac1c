//! The protocol's own endpoints: key configuration, handshake, confirmation, close,
//! and the full-request mode entry point.

use crate::error::Refusal;
use crate::seal::{
    open_header_mode, read_body, read_body_mut, require_sealed_type, sealed_response, session_id,
    SealedContext,
};
use crate::sessions::SessionManager;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::handshake::MAX_HANDSHAKE_LEN;
use sessioncert_proto::wire::{HANDSHAKE_CONTENT_TYPE, SESSION_HEADER};
use sessioncert_proto::{ErrorCode, RequestBinding, ResponseBinding};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tower::ServiceExt;

/// Largest stand-alone confirmation: `bytes16(ticket ≤ 1024) || client_finished[32]`.
const CONFIRMATION_MAX: usize = 2 + sessioncert_proto::handshake::MAX_TICKET_LEN + 32;

fn as_malformed_if_too_large(r: Refusal) -> Refusal {
    if r.code == sessioncert_proto::ErrorCode::TooLarge {
        Refusal::new(sessioncert_proto::ErrorCode::Malformed)
    } else {
        r
    }
}

fn client_addr(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn handshake_bytes(body: Vec<u8>, cache: bool) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(HANDSHAKE_CONTENT_TYPE),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if cache { "max-age=300" } else { "no-store" }),
    );
    r
}

pub(crate) async fn get_config(State(m): State<Arc<SessionManager>>) -> Response {
    handshake_bytes(m.config_bytes().as_ref().clone(), true)
}

pub(crate) async fn post_handshake(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let addr = client_addr(&req);
    let result = async {
        // An oversized hello is a malformed protocol message (PROTOCOL §6.6), not a 413.
        let body = read_body(req.into_body(), MAX_HANDSHAKE_LEN)
            .await
            .map_err(as_malformed_if_too_large)?;
        m.handshake(&body, addr).await
    }
    .await;
    match result {
        Ok(msg) => handshake_bytes(msg, false),
        Err(r) => r.into_response(),
    }
}

pub(crate) async fn post_confirm(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let addr = client_addr(&req);
    let result = async {
        let id = session_id(req.headers())?;
        // bytes16(ticket ≤ 1024) || client_finished[32]; longer is malformed, not 413.
        let body = read_body(req.into_body(), CONFIRMATION_MAX)
            .await
            .map_err(as_malformed_if_too_large)?;
        m.confirm(&id, &body, addr).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}

pub(crate) async fn post_close(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let result = async {
        let (parts, body) = req.into_parts();
        let (_, entry, opened, _, _) = open_header_mode(&m, &parts, body).await?;
        let binding = ResponseBinding::Header {
            status: 200,
            content_type: "",
        };
        let record = m
            .seal_and_close(&entry, &opened.expectation(), &binding)
            .await?;
        Ok::<_, Refusal>(sealed_response(
            StatusCode::OK,
            HeaderMap::new(),
            None,
            record,
            false,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// State of the full-request endpoint: the manager and the sealed routes to dispatch into.
#[derive(Clone)]
pub(crate) struct FullState {
    pub(crate) manager: Arc<SessionManager>,
    pub(crate) sealed: Router,
}

pub(crate) async fn post_full(State(s): State<FullState>, req: Request) -> Response {
    serve_full(s, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve_full(s: FullState, req: Request) -> Result<Response, Refusal> {
    let (parts, body) = req.into_parts();
    let id = session_id(&parts.headers)?;
    require_sealed_type(&parts.headers)?;
    // Refused before a byte of the body is read (see `open_header_mode`).
    s.manager.precheck(&id, &parts).await?;
    let mut record = read_body_mut(body, s.manager.limits().max_body_bytes).await?;
    let (entry, opened) = s
        .manager
        .open_request(&id, &RequestBinding::Full, &mut record)
        .await?;
    let expect = opened.expectation();
    let inner = FullRequest::decode(&record[opened.plaintext.clone()]).map_err(Refusal::from)?;
    // The inner request names its origin; it is sealed, so it is what the client meant.
    let authority = inner.authority.to_ascii_lowercase();
    let origin = format!("{}://{authority}", inner.scheme.to_ascii_lowercase());
    if !s.manager.public_origins().is_empty() {
        crate::seal::binding::check_origin(&origin, s.manager.public_origins())?;
    }
    let mut builder = http::Request::builder().method(inner.method.as_str()).uri(
        inner
            .path
            .parse::<Uri>()
            .map_err(|_| Refusal::new(ErrorCode::Malformed))?,
    );
    for (k, v) in &inner.headers {
        // Hop-by-hop and framing headers describe the outer connection, not this message.
        if matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "host"
        ) || k.starts_with("sessioncert-")
        {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_slice());
    }
    if !authority.is_empty() {
        builder = builder.header(header::HOST, authority.as_str());
    }
    let mut inner_req = builder
        .body(Body::from(inner.body))
        .map_err(|_| Refusal::new(ErrorCode::Malformed))?;
    inner_req.extensions_mut().insert(SealedContext {
        session_id: id,
        seq: opened.seq,
        full: true,
    });
    if let Some(ci) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        inner_req.extensions_mut().insert(*ci);
    }
    let Ok(resp) = s.sealed.oneshot(inner_req).await;
    let (rparts, rbody) = resp.into_parts();
    let body = read_body(rbody, usize::MAX)
        .await
        .map_err(|_| Refusal::new(ErrorCode::Internal))?;
    let headers = rparts
        .headers
        .iter()
        .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let plain = FullResponse {
        status: rparts.status.as_u16(),
        headers,
        body: body.to_vec(),
    }
    .encode()
    .map_err(|_| Refusal::new(ErrorCode::Internal))?;
    let record = s
        .manager
        .seal_response(&entry, &expect, &ResponseBinding::Full, &plain)?;
    let mut out = sealed_response(StatusCode::OK, HeaderMap::new(), None, record, false);
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        out.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(out)
}
