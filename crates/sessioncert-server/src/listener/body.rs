//! The request-body guard: a server-wide budget of request-body bytes held in memory,
//! and a minimum rate at which a body must arrive.
//!
//! Every request body is wrapped as it enters the application. As bytes arrive they are
//! charged to one budget shared by all connections (counted in KiB); the charge is held
//! until the handler has answered *and* the body is gone, because that is when the
//! buffered bytes are really freed (a sealed request's buffer lives until its handler
//! returns). When the budget is spent, a body waits up to [`ListenerLimits::body_budget_wait`]
//! for others to finish, then the request is answered `503` (`sessioncert-error:
//! unavailable`, `Retry-After`) and its connection closed; nothing was executed.
//!
//! The bodies of one client address may hold at most
//! [`ListenerLimits::max_inflight_body_per_addr`] of it; beyond that they get `503` at
//! once, so a single peer cannot starve everyone else.
//!
//! A body must also keep arriving: after a grace of [`ListenerLimits::body_timeout`],
//! every [`super::BODY_RATE_WINDOW`] must bring at least
//! [`ListenerLimits::body_min_rate`] bytes per second. A window is measured on its own,
//! so a fast start earns no credit for a later stall (a peer that sends most of a body
//! and then goes quiet holds its budget for one window, not for minutes). A slower body
//! is cut: `408` and the connection closed. Time spent waiting for the budget does not
//! count against the peer.
//!
//! [`BodyGuardLayer`] applies both to any service; [`super::serve`] applies it to every
//! request it accepts.

use super::ListenerLimits;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Request, StatusCode, Version};
use http_body::{Frame, SizeHint};
use sessioncert_proto::wire::ERROR_HEADER;
use sessioncert_proto::ErrorCode;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a guarded body stopped delivering bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyGuardError {
    /// The server-wide body budget stayed exhausted for the whole wait.
    #[error("server-wide request-body budget exhausted")]
    Busy,
    /// The body arrived more slowly than the minimum rate allows.
    #[error("request body arrived too slowly")]
    TooSlow,
}

impl BodyGuardError {
    /// The answer sent instead of the handler's: `503` or `408`, with a
    /// `sessioncert-error` code, and `Connection: close` on HTTP/1 (the rest of the body
    /// was never read, so the connection cannot be reused).
    fn response(self, retry_after: u64, http1: bool) -> Response {
        let (status, code, message) = match self {
            BodyGuardError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the server is at capacity; the request was not executed (a copy held on the way could still be: check before retrying a non-idempotent request)",
            ),
            BodyGuardError::TooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::Malformed,
                "the request body arrived too slowly",
            ),
        };
        let body = format!(
            "{{\"error\":\"{}\",\"message\":\"{message}\"}}",
            code.as_str()
        );
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.extensions_mut().insert(crate::telemetry::Refused(code));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self == BodyGuardError::Busy {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        if http1 {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The shared budget and the rate rule, built once per server.
#[derive(Debug)]
pub(crate) struct GuardConfig {
    budget: Arc<Semaphore>,
    total_kib: u64,
    wait: Duration,
    timeout: Duration,
    min_rate: u64,
    /// Each client address's share of the budget, KiB.
    per_addr_kib: u64,
    per_addr: dashmap::DashMap<IpAddr, Arc<Semaphore>>,
    exempt_loopback: bool,
}

impl GuardConfig {
    pub(crate) fn new(limits: &ListenerLimits) -> Arc<Self> {
        // Semaphore permits are `usize` with a cap; KiB units keep any sane budget far below it.
        // Permits count KiB; acquisitions take a u32.
        let total_kib = (limits.max_inflight_body_bytes / 1024)
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Arc::new(GuardConfig {
            budget: Arc::new(Semaphore::new(total_kib)),
            total_kib: total_kib as u64,
            wait: limits.body_budget_wait,
            timeout: limits.body_timeout,
            min_rate: limits.body_min_rate,
            per_addr_kib: (limits.max_inflight_body_per_addr / 1024).clamp(1, total_kib) as u64,
            per_addr: dashmap::DashMap::new(),
            exempt_loopback: limits.exempt_loopback,
        })
    }

    /// The budget share of `addr`, if it has one.
    fn share_of(&self, addr: Option<IpAddr>) -> Option<Arc<Semaphore>> {
        let a = addr.filter(|a| !(self.exempt_loopback && a.is_loopback()))?;
        Some(
            self.per_addr
                .entry(a)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_addr_kib as usize)))
                .clone(),
        )
    }

    /// Forgets the shares of addresses that hold nothing (called as bodies end).
    fn release_share(&self, addr: IpAddr) {
        let full = self.per_addr_kib as usize;
        self.per_addr.remove_if(&addr, |_, s| {
            s.available_permits() == full && Arc::strong_count(s) == 1
        });
    }

    /// Bytes of budget not charged to any body right now.
    pub(crate) fn available_bytes(&self) -> u64 {
        self.budget.available_permits() as u64 * 1024
    }
}

/// What a request's body and its handler future share: the budget charge (released
/// when both are gone) and the reason the body failed, if it did.
#[derive(Default)]
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// The same charge against the client address's share.
    addr_permit: Option<OwnedSemaphorePermit>,
    failure: Option<BodyGuardError>,
    /// Bytes the body's consumer said it no longer holds ([`BodyRelease`]).
    released_bytes: u64,
    /// KiB of the charge given back for them (`released_bytes / 1024`, rounded down).
    released_kib: u64,
}

type Shared = Arc<Mutex<Held>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Held> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Given to a consumer that reads a request body piece by piece and lets go of each
/// piece (a streamed sealed request: one chunk at a time; a body a proxy hands on), so
/// the budget counts the bytes it holds rather than every byte it ever read. Put into
/// the request's extensions by [`BodyGuard`].
#[derive(Clone)]
pub struct BodyRelease {
    shared: Shared,
}

impl BodyRelease {
    /// `bytes` more of the body are no longer held: their charge goes back to the
    /// budget (and the client address's share), in whole KiB.
    pub fn release(&self, bytes: u64) {
        let mut held = lock(&self.shared);
        held.released_bytes = held.released_bytes.saturating_add(bytes);
        let due = (held.released_bytes / 1024).saturating_sub(held.released_kib);
        let charged = held.permit.as_ref().map_or(0, |p| p.num_permits());
        let n = usize::try_from(due).unwrap_or(usize::MAX).min(charged);
        if n == 0 {
            return;
        }
        // Dropping the split-off permits gives them back.
        drop(held.permit.as_mut().and_then(|p| p.split(n)));
        if let Some(ap) = held.addr_permit.as_mut() {
            let m = n.min(ap.num_permits());
            drop(ap.split(m));
        }
        held.released_kib += n as u64;
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// How much budget a body pays ahead of reading its next chunk (at most; less when
/// the announced length says less is coming): about one chunk — hyper's HTTP/1 chunks
/// are at most its read buffer (`max_header_bytes`, 16 KiB by default), HTTP/2 chunks
/// a frame (16 KiB). A larger chunk pays the rest when it arrives.
const PREPAY_KIB: u64 = 16;

/// An acquisition of budget the body is waiting for, with the chunk that needs it if
/// one was already read (a chunk larger than what was paid ahead).
struct Waiting {
    frame: Option<Frame<Bytes>>,
    acquire: Acquire,
    give_up: Pin<Box<Sleep>>,
    since: Instant,
}

/// A request body charged to the budget and held to the minimum rate.
///
/// The budget is paid *before* a chunk is read (up to [`PREPAY_KIB`], so a connection
/// whose body is merely open holds at most that much of it): while the budget is spent,
/// a body waits without taking more, hyper buffers at most one chunk for it and the rest
/// of the peer's bytes stay in the kernel. The server's memory for bodies is the budget
/// plus about one read buffer per connection.
pub(crate) struct GuardedBody<B> {
    inner: B,
    cfg: Arc<GuardConfig>,
    shared: Shared,
    received: u64,
    /// KiB moved into the shared charge (`ceil(received / 1024)`).
    charged_kib: u64,
    /// Budget paid ahead for the next chunk; given back when the body ends or drops.
    prepaid: Option<OwnedSemaphorePermit>,
    /// When the server first asked for a byte, shifted by time spent waiting for budget.
    started: Option<Instant>,
    /// Time spent waiting for budget so far. A body may wait `body_budget_wait` in
    /// all, not per chunk: bodies that each hold part of the budget and wait for more
    /// would otherwise crawl forward only as others give up.
    waited: Duration,
    /// The current rate window: when it started and how much had arrived by then.
    window: Option<(Instant, u64)>,
    /// The client address's share of the budget.
    share: Option<Arc<Semaphore>>,
    /// The last charge failed because the address's share is spent.
    over_share: bool,
    deadline: Option<Pin<Box<Sleep>>>,
    waiting: Option<Waiting>,
    failed: Option<BodyGuardError>,
}

type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// What [`GuardedBody::take_or_wait`] did.
enum Taken {
    /// The budget was taken; here is the chunk that needed it, if any.
    Now(Option<Frame<Bytes>>),
    /// Waiting for the budget (holding the chunk, if any).
    Waiting,
    /// The body has already waited as long as it may: give up.
    GiveUp,
}

impl<B: http_body::Body> GuardedBody<B> {
    fn new(inner: B, cfg: Arc<GuardConfig>, shared: Shared, share: Option<Arc<Semaphore>>) -> Self {
        GuardedBody {
            window: None,
            share,
            over_share: false,
            inner,
            cfg,
            shared,
            received: 0,
            charged_kib: 0,
            prepaid: None,
            started: None,
            waited: Duration::ZERO,
            deadline: None,
            waiting: None,
            failed: None,
        }
    }

    fn fail(&mut self, e: BodyGuardError) -> FramePoll {
        self.failed = Some(e);
        self.waiting = None;
        self.prepaid = None;
        lock(&self.shared).failure.get_or_insert(e);
        Poll::Ready(Some(Err(Box::new(e))))
    }

    /// KiB of the charge given back by the consumer ([`BodyRelease`]).
    fn released_kib(&self) -> u64 {
        lock(&self.shared).released_kib
    }

    fn prepaid_kib(&self) -> u64 {
        self.prepaid.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    fn add_prepaid(&mut self, permit: OwnedSemaphorePermit) {
        match self.prepaid.as_mut() {
            Some(p) => p.merge(permit),
            None => self.prepaid = Some(permit),
        }
    }

    /// KiB the next chunk can need: up to [`PREPAY_KIB`] worth of bytes, or what the
    /// announced length has left; never more than the whole budget.
    fn prepay_target(&self) -> u64 {
        let next = self
            .inner
            .size_hint()
            .upper()
            .map_or(PREPAY_KIB * 1024, |left| left.min(PREPAY_KIB * 1024));
        let after = (self.received + next).div_ceil(1024);
        let target = after.saturating_sub(self.charged_kib);
        let held = self.charged_kib.saturating_sub(self.released_kib());
        target.min(self.cfg.total_kib.saturating_sub(held))
    }

    /// Takes `kib` (at most the whole budget, so it fits a `u32`) into the prepaid
    /// budget now, or starts waiting for it — holding `frame`, if a chunk is already in
    /// hand. Returns the chunk when the budget was taken at once.
    fn take_or_wait(&mut self, kib: u64, frame: Option<Frame<Bytes>>) -> Taken {
        let n = u32::try_from(kib).unwrap_or(u32::MAX);
        match self.cfg.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                self.add_prepaid(p);
                Taken::Now(frame)
            }
            Err(_) => {
                let left = self.cfg.wait.saturating_sub(self.waited);
                if left.is_zero() {
                    return Taken::GiveUp;
                }
                self.waiting = Some(Waiting {
                    frame,
                    acquire: Box::pin(self.cfg.budget.clone().acquire_many_owned(n)),
                    give_up: Box::pin(tokio::time::sleep(left)),
                    since: Instant::now(),
                });
                Taken::Waiting
            }
        }
    }

    /// Moves the charge for everything received so far from the prepaid budget into
    /// the shared charge. `false` when the prepaid budget does not cover it.
    fn commit(&mut self) -> bool {
        let need = self
            .received
            .div_ceil(1024)
            .saturating_sub(self.charged_kib);
        if need == 0 {
            return true;
        }
        let Ok(n) = usize::try_from(need) else {
            return false;
        };
        // The client address's share is charged at once or not at all: a peer over
        // its share is refused (the caller answers 503), never queued behind others.
        let addr_part = match &self.share {
            Some(share) => match share
                .clone()
                .try_acquire_many_owned(u32::try_from(need).unwrap_or(u32::MAX))
            {
                Ok(p) => Some(p),
                Err(_) => {
                    self.over_share = true;
                    return false;
                }
            },
            None => None,
        };
        let Some(part) = self.prepaid.as_mut().and_then(|p| p.split(n)) else {
            return false;
        };
        self.charged_kib += need;
        let mut held = lock(&self.shared);
        match held.permit.as_mut() {
            Some(p) => p.merge(part),
            None => held.permit = Some(part),
        }
        if let Some(ap) = addr_part {
            match held.addr_permit.as_mut() {
                Some(p) => p.merge(ap),
                None => held.addr_permit = Some(ap),
            }
        }
        true
    }

    /// When the body's progress is next checked: the end of the grace, then the end of
    /// each rate window. `None` when the rule is off.
    fn rate_deadline(&self) -> Option<Instant> {
        if self.cfg.timeout.is_zero() {
            return None;
        }
        match self.window {
            None => Some(self.started? + self.cfg.timeout),
            Some((since, _)) => Some(since + super::BODY_RATE_WINDOW),
        }
    }

    /// At a deadline: whether the body kept its rate. During the grace only a body that
    /// is still empty-handed with no rate rule fails; after it, each window must bring
    /// `min_rate` bytes per second. On success the next window starts now.
    fn rate_kept(&mut self, now: Instant) -> bool {
        let ok = match self.window {
            // End of the grace: with no rate rule the grace is the whole allowance.
            None => self.cfg.min_rate > 0,
            Some((_, at_start)) => {
                let need = self.cfg.min_rate as f64 * super::BODY_RATE_WINDOW.as_secs_f64();
                (self.received - at_start) as f64 >= need
            }
        };
        if ok {
            self.window = Some((now, self.received));
        }
        ok
    }

    /// A data chunk arrived: charge it, paying the part the prepaid budget does not
    /// cover (or waiting for it, holding the chunk).
    fn arrived(&mut self, frame: Frame<Bytes>) -> Option<FramePoll> {
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        self.received = self.received.saturating_add(len);
        let held = self
            .received
            .div_ceil(1024)
            .saturating_sub(self.released_kib());
        if held > self.cfg.total_kib {
            // Could never fit, however long it waited.
            return Some(self.fail(BodyGuardError::Busy));
        }
        if self.commit() {
            return Some(Poll::Ready(Some(Ok(frame))));
        }
        if self.over_share {
            return Some(self.fail(BodyGuardError::Busy));
        }
        let need = self.received.div_ceil(1024) - self.charged_kib;
        let short = need.saturating_sub(self.prepaid_kib());
        match self.take_or_wait(short, Some(frame)) {
            Taken::Now(Some(frame)) if self.commit() => Some(Poll::Ready(Some(Ok(frame)))),
            Taken::Now(_) | Taken::GiveUp => Some(self.fail(BodyGuardError::Busy)),
            Taken::Waiting => None, // with the chunk
        }
    }
}

impl<B> http_body::Body for GuardedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        if let Some(e) = this.failed {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        if this.started.is_none() {
            this.started = Some(Instant::now());
        }
        loop {
            // Budget being waited for.
            if let Some(w) = this.waiting.as_mut() {
                match w.acquire.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        let since = w.since;
                        let frame = this.waiting.take().and_then(|w| w.frame);
                        // The peer is not to blame for the time the server made it wait.
                        let waited = since.elapsed();
                        this.waited += waited;
                        if let Some(s) = this.started.as_mut() {
                            *s += waited;
                        }
                        if let Some((w, _)) = this.window.as_mut() {
                            *w += waited;
                        }
                        this.add_prepaid(permit);
                        if let Some(frame) = frame {
                            if !this.commit() {
                                return this.fail(BodyGuardError::Busy);
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    Poll::Ready(Err(_)) => return this.fail(BodyGuardError::Busy),
                    Poll::Pending => {
                        if w.give_up.as_mut().poll(cx).is_ready() {
                            return this.fail(BodyGuardError::Busy);
                        }
                        return Poll::Pending;
                    }
                }
            }
            // Pay ahead for the next chunk before reading it.
            let short = this.prepay_target().saturating_sub(this.prepaid_kib());
            if short > 0 {
                match this.take_or_wait(short, None) {
                    Taken::Waiting => continue,
                    Taken::GiveUp => return this.fail(BodyGuardError::Busy),
                    Taken::Now(_) => {}
                }
            }
            return match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_data() => match this.arrived(frame) {
                    Some(p) => p,
                    None => continue,
                },
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.prepaid = None;
                    Poll::Ready(None)
                }
                Poll::Pending => loop {
                    let Some(at) = this.rate_deadline() else {
                        return Poll::Pending;
                    };
                    let now = Instant::now();
                    if now >= at {
                        if !this.rate_kept(now) {
                            return this.fail(BodyGuardError::TooSlow);
                        }
                        continue; // the next window
                    }
                    let timer = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue; // checked at the top
                    }
                    return Poll::Pending;
                },
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A tower [`Layer`] that guards request bodies with a server-wide budget and a minimum
/// rate (see the module docs). [`super::serve`] applies it already; use it directly when
/// serving the app with another server (`axum::serve`, a TLS acceptor):
/// `app.layer(BodyGuardLayer::new(&ListenerLimits::default()))`.
#[derive(Clone)]
pub struct BodyGuardLayer {
    cfg: Arc<GuardConfig>,
}

impl BodyGuardLayer {
    /// A layer with its own budget, sized and timed by `limits`' body fields.
    pub fn new(limits: &ListenerLimits) -> Self {
        BodyGuardLayer {
            cfg: GuardConfig::new(limits),
        }
    }

    /// Bytes of budget not charged to any body right now (for metrics and tests).
    pub fn available_bytes(&self) -> u64 {
        self.cfg.available_bytes()
    }
}

impl<S> Layer<S> for BodyGuardLayer {
    type Service = BodyGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BodyGuard {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// See [`BodyGuardLayer`].
#[derive(Clone)]
pub struct BodyGuard<S> {
    inner: S,
    cfg: Arc<GuardConfig>,
}

impl<S, B> Service<Request<B>> for BodyGuard<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Call the instance that was polled ready; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cfg = self.cfg.clone();
        let http1 = req.version() <= Version::HTTP_11;
        let shared: Shared = Arc::default();
        let addr = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let share = cfg.share_of(addr);
        let mut req =
            req.map(|b| Body::new(GuardedBody::new(b, cfg.clone(), shared.clone(), share)));
        req.extensions_mut().insert(BodyRelease {
            shared: shared.clone(),
        });
        let fut = inner.call(req);
        Box::pin(async move {
            let Ok(resp) = fut.await;
            let failure = lock(&shared).failure;
            // The charge goes with the last of this future and the body: the handler
            // has answered, and whatever it buffered from the body is normally gone.
            drop(shared);
            if let Some(a) = addr {
                cfg.release_share(a);
            }
            Ok(match failure {
                None => resp,
                Some(e) => {
                    let mut r = e.response(cfg.wait.as_secs().max(1), http1);
                    // How the request was being served still holds (for the metrics).
                    if let Some(served) = resp.extensions().get::<crate::telemetry::Served>() {
                        r.extensions_mut().insert(*served);
                    }
                    r
                }
            })
        })
    }
}
