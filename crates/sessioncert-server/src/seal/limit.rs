//! Per-route limits on streamed request bodies.

use http::Request;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Sets the largest streamed request body (plaintext bytes; PROTOCOL §8.5) the routes
/// it wraps accept, in place of [`crate::Limits::max_stream_body_bytes`]. `None`: no
/// limit. Past the limit the handler's body yields an error (the stream is aborted;
/// the handler never sees a short body as complete). Buffered requests (one record)
/// stay under [`crate::Limits::max_body_bytes`].
///
/// Apply it to the sealed routes with `route_layer` (or a method router's `layer`):
/// the sealing layer, outside it, reads the limit once the request is routed.
///
/// ```
/// use axum::{body::Body, routing::{post, put}, Router};
/// use sessioncert_server::seal::StreamLimit;
///
/// async fn store(body: Body) -> &'static str { let _ = body; "stored" }
/// async fn api(body: String) -> String { body }
///
/// let sealed: Router = Router::new()
///     // Uploads of any size (each chunk is held only while the handler reads it).
///     .route("/files/{name}", put(store).route_layer(StreamLimit::new(None)))
///     // At most 1 MiB streamed into this one.
///     .route("/apiTest", post(api).route_layer(StreamLimit::new(Some(1 << 20))));
/// // sc.router(sealed) seals both.
/// # let _ = sealed;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimit {
    limit: Option<u64>,
}

impl StreamLimit {
    /// A limit of `limit` plaintext bytes per streamed request body; `None`: unlimited.
    pub fn new(limit: Option<u64>) -> Self {
        StreamLimit { limit }
    }
}

impl<S> Layer<S> for StreamLimit {
    type Service = StreamLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StreamLimitService {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`StreamLimit`].
#[derive(Debug, Clone)]
pub struct StreamLimitService<S> {
    inner: S,
    limit: Option<u64>,
}

impl<S, B> Service<Request<B>> for StreamLimitService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(slot) = req.extensions().get::<LimitSlot>() {
            slot.set(self.limit);
        }
        self.inner.call(req)
    }
}

/// Where a route's [`StreamLimit`] reaches the streamed body of its request: put into
/// the handler's request by the sealing layer, read by the body at each chunk.
#[derive(Debug, Clone)]
pub(crate) struct LimitSlot(Arc<AtomicU64>);

/// No route set a limit: the server-wide default applies.
const UNSET: u64 = u64::MAX;
/// A route said "no limit".
const UNLIMITED: u64 = u64::MAX - 1;

impl LimitSlot {
    pub(crate) fn new() -> Self {
        LimitSlot(Arc::new(AtomicU64::new(UNSET)))
    }

    fn set(&self, limit: Option<u64>) {
        self.0
            .store(limit.unwrap_or(UNLIMITED).min(UNLIMITED), Ordering::Relaxed);
    }

    /// The limit in force: the route's if it set one, else `default`.
    pub(crate) fn get(&self, default: Option<u64>) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            UNSET => default,
            UNLIMITED => None,
            n => Some(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_limit_overrides_the_default_and_none_means_unlimited() {
        let slot = LimitSlot::new();
        assert_eq!(slot.get(Some(10)), Some(10));
        slot.set(Some(5));
        assert_eq!(slot.get(Some(10)), Some(5));
        slot.set(None);
        assert_eq!(slot.get(Some(10)), None);
    }
}
