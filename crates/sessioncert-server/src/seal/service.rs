//! The `Service` half of header-mode sealing.

use super::{open_header_mode, read_body, sealed_response, SealedContext, H_INNER_CONTENT_TYPE};
use crate::error::Refusal;
use crate::sessions::SessionManager;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Request};
use sessioncert_proto::ResponseBinding;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};

/// See [`super::SealLayer`].
#[derive(Clone)]
pub struct SealService<S> {
    manager: Arc<SessionManager>,
    inner: S,
}

impl<S> SealService<S> {
    pub(crate) fn new(manager: Arc<SessionManager>, inner: S) -> Self {
        SealService { manager, inner }
    }
}

impl<S> Service<Request<Body>> for SealService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked on the clone that serves the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let manager = self.manager.clone();
        Box::pin(async move {
            Ok(match serve_sealed(manager, inner, req).await {
                Ok(r) => r,
                Err(refusal) => refusal.into_response(),
            })
        })
    }
}

async fn serve_sealed<S>(
    manager: Arc<SessionManager>,
    inner: S,
    req: Request<Body>,
) -> Result<Response, Refusal>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let (mut parts, body) = req.into_parts();
    let (id, entry, opened, plaintext, bound) = open_header_mode(&manager, &parts, body).await?;
    let head = parts.method == http::Method::HEAD;
    let expect = opened.expectation();
    // The handler sees an ordinary request: the inner content type, the plaintext body.
    match parts.headers.remove(&H_INNER_CONTENT_TYPE) {
        Some(ct) => {
            parts.headers.insert(header::CONTENT_TYPE, ct);
        }
        None => {
            parts.headers.remove(header::CONTENT_TYPE);
        }
    }
    super::binding::for_handler(&mut parts.headers, &bound);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(opened.plaintext.len()),
    );
    parts.extensions.insert(SealedContext {
        session_id: id,
        seq: opened.seq,
        full: false,
    });
    let req = Request::from_parts(parts, Body::from(plaintext));
    let Ok(resp) = inner.oneshot(req).await;
    let (rparts, rbody) = resp.into_parts();
    // A response to HEAD has no content, whatever body the (GET) handler produced.
    let plain = if head {
        axum::body::Bytes::new()
    } else {
        read_body(rbody, usize::MAX)
            .await
            .map_err(|_| Refusal::new(sessioncert_proto::ErrorCode::Internal))?
    };
    let inner_ct = rparts.headers.get(header::CONTENT_TYPE).cloned();
    let ct_str = inner_ct
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let binding = ResponseBinding::Header {
        status: rparts.status.as_u16(),
        content_type: ct_str,
    };
    let record = manager.seal_response(&entry, &expect, &binding, &plain)?;
    let inner_ct = if ct_str.is_empty() { None } else { inner_ct };
    Ok(sealed_response(
        rparts.status,
        rparts.headers,
        inner_ct,
        record,
        head,
    ))
}
