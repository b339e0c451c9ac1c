//! The `Service` that runs [`super::exchange`] around an inner service.

use super::exchange::{self, Mode};
use crate::error::Refusal;
use crate::sessions::SessionManager;
use crate::telemetry::Served;
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{Request, StatusCode};
use sessioncert_proto::ErrorCode;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// Opens sealed requests, runs the inner service on the plaintext and seals its
/// response (see [`super::SealLayer`]). Generic over the request body it receives and
/// the response body the inner service produces; the inner service always gets an
/// [`axum::body::Body`] holding the opened plaintext.
///
/// Readiness is forwarded: `poll_ready` drives the inner service, and `call` uses the
/// instance that was driven ready (swapping a fresh clone in its place), as tower
/// requires of services that clone their inner service.
pub struct SealService<S> {
    manager: Arc<SessionManager>,
    inner: S,
    mode: Mode,
    /// The inner service reported an error from `poll_ready`: the next call is refused
    /// (`503`, before its request is opened, so the client knows it did not run).
    inner_failed: bool,
}

impl<S: Clone> Clone for SealService<S> {
    fn clone(&self) -> Self {
        SealService {
            manager: self.manager.clone(),
            inner: self.inner.clone(),
            mode: self.mode,
            inner_failed: false,
        }
    }
}

impl<S> SealService<S> {
    /// Header mode: the request line stays visible, bound into the seal.
    pub(crate) fn header_mode(manager: Arc<SessionManager>, inner: S) -> Self {
        SealService {
            manager,
            inner,
            mode: Mode::Header,
            inner_failed: false,
        }
    }

    /// Full-request mode: the inner service receives the request decoded from the
    /// sealed Binary HTTP message.
    pub(crate) fn full_mode(manager: Arc<SessionManager>, inner: S) -> Self {
        SealService {
            manager,
            inner,
            mode: Mode::Full,
            inner_failed: false,
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SealService<S>
where
    S: Service<Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<axum::BoxError>,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<axum::BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // The inner service failed before any request reached it; this service
                // stays ready and refuses the next call (see `call`).
                let e: axum::BoxError = e.into();
                tracing::error!(error = %e, "the sealed service is not ready");
                self.inner_failed = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if std::mem::take(&mut self.inner_failed) {
            let mut refusal = Refusal::new(ErrorCode::Unavailable).into_response();
            refusal.extensions_mut().insert(served(self.mode));
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        // The instance driven ready goes to this call; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let manager = self.manager.clone();
        let mode = self.mode;
        let req = req.map(Body::new);
        Box::pin(async move {
            let mut response = serve(&manager, inner, req, mode).await;
            // For the access log and the request metrics.
            response.extensions_mut().insert(served(mode));
            Ok(response)
        })
    }
}

fn served(mode: Mode) -> Served {
    match mode {
        Mode::Header => Served::Sealed,
        Mode::Full => Served::Full,
    }
}

/// Open → dispatch → seal, or the refusal.
async fn serve<S, ResBody>(
    manager: &SessionManager,
    mut inner: S,
    req: Request<Body>,
    mode: Mode,
) -> Response
where
    S: Service<Request<Body>, Response = http::Response<ResBody>>,
    S::Error: Into<axum::BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    let (opened, handler_req) = match exchange::open(manager, req, mode).await {
        Ok(o) => o,
        Err(refusal) => return refusal.into_response(),
    };
    // Running until the handler answered: a close of the session waits for it.
    let running = crate::sessions::Running::enter(&opened.entry);
    let response = match inner.call(handler_req).await {
        Ok(r) => {
            drop(running);
            r.map(Body::new)
        }
        Err(e) => {
            // The request was opened (its seq is spent) and handed over: answer
            // sealed, so the client learns it reached the handler.
            drop(running);
            let e: axum::BoxError = e.into();
            tracing::error!(session = %opened.id, error = %e, "the sealed handler failed");
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    exchange::seal(manager, opened, response)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
