//! The protocol's own endpoints: key configuration, handshake, confirmation, close.
//! (The full-request endpoint is a [`crate::SealService`] in full mode; see `lib.rs`.)

use crate::error::Refusal;
use crate::seal::exchange::{self, Mode};
use crate::seal::{read_body, sealed_response, session_id};
use crate::sessions::SessionManager;
use crate::telemetry::{self, HandshakeOutcome, Served};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use sessioncert_proto::handshake::MAX_HANDSHAKE_LEN;
use sessioncert_proto::wire::HANDSHAKE_CONTENT_TYPE;
use sessioncert_proto::ResponseBinding;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

/// Marks a protocol endpoint's response for the request metrics.
fn served_as(mut r: Response, served: Served) -> Response {
    r.extensions_mut().insert(served);
    r
}

pub(crate) async fn get_config(State(m): State<Arc<SessionManager>>) -> Response {
    served_as(
        handshake_bytes(m.config_bytes().as_ref().clone(), true),
        Served::Handshake,
    )
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
    let response = match result {
        Ok(msg) => {
            telemetry::handshake(HandshakeOutcome::Answered);
            handshake_bytes(msg, false)
        }
        Err(r) => {
            telemetry::handshake(HandshakeOutcome::Refused);
            r.into_response()
        }
    };
    served_as(response, Served::Handshake)
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
    let response = match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    };
    served_as(response, Served::Handshake)
}

pub(crate) async fn post_close(State(m): State<Arc<SessionManager>>, req: Request) -> Response {
    let result = async {
        let (opened, _) = exchange::open(&m, req, Mode::Header).await?;
        let binding = ResponseBinding::Header {
            status: 200,
            content_type: "",
        };
        let record = m
            .seal_and_close(&opened.entry, opened.sealer, &binding)
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
    served_as(
        result.unwrap_or_else(IntoResponse::into_response),
        Served::Sealed,
    )
}
