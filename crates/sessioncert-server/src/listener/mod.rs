//! Serving an app over TCP with bounded unauthenticated cost.
//!
//! `axum::serve` has no read timeouts, no connection cap, and speaks cleartext HTTP/2 to
//! anyone who asks. [`serve`] is the accept loop to use instead:
//!
//! - **connections**: at most [`ListenerLimits::max_connections`] at once (further peers
//!   wait in the kernel's accept queue) and at most
//!   [`ListenerLimits::max_connections_per_addr`] from one client address (further ones
//!   get `429` `rate_limited` and are closed);
//! - **request heads** must be complete within [`ListenerLimits::header_timeout`] of
//!   their first byte (of the connection's start, for the first request);
//! - **bodies** are charged to a server-wide budget and must arrive at a minimum rate
//!   (see [`BodyGuardLayer`]);
//! - **idle connections** — nothing in flight, no byte moving either way: a keep-alive
//!   connection between requests, a peer that stopped reading its response, an HTTP/2
//!   connection left open — are closed after [`ListenerLimits::idle_timeout`];
//! - **HTTP/2** over cleartext (prior knowledge) is off unless
//!   [`ListenerLimits::http2`] is set, and then capped at
//!   [`ListenerLimits::http2_max_streams`] concurrent streams per connection.
//!
//! Every request carries `ConnectInfo<SocketAddr>` in its extensions, as with
//! `into_make_service_with_connect_info`. TCP_NODELAY is set on every connection.
//!
//! [`serve_tls`] is the same loop terminating TLS (rustls): a connection's TLS handshake
//! runs inside its connection slot and per-address slot, and must finish — together with
//! the first request head — within [`ListenerLimits::header_timeout`] of the connection's
//! start; every other limit applies to the decrypted connection unchanged (the
//! idle and write-stall watchdogs watch the TCP socket under TLS). ALPN offers
//! `http/1.1`, and `h2` only when [`ListenerLimits::http2`] is set (the same HTTP/2
//! limits apply).
//!
//! Every answer — the application's, the body guard's, the listener's own refusals — is
//! written to the access log (target `sessioncert::access`, refusal lines limited under
//! floods) and recorded in the metrics of [`crate::telemetry`].

pub(crate) mod access;
mod body;
mod tls;

pub use body::{BodyGuard, BodyGuardError, BodyGuardLayer, BodyRelease};
pub use tls::{server_config_from_pem_files, TlsConfigError};
/// The TLS library [`serve_tls`] takes its configuration from.
pub use tokio_rustls::rustls;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::{Layer, Service, ServiceExt};

/// Connection-side limits: what an anonymous peer can make the server hold before it
/// has proved anything. Every limit is enforced by [`serve`]; the body fields also by
/// [`BodyGuardLayer`] on its own.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Connections open at once, server-wide. Further peers wait in the kernel's accept
    /// queue until one closes.
    pub max_connections: usize,
    /// Connections open at once from one client address; further ones are answered
    /// `429` (`rate_limited`) and closed.
    pub max_connections_per_addr: usize,
    /// Do not apply the per-address cap to loopback peers (as [`crate::Limits`]'s
    /// `exempt_loopback`; turn off behind a local reverse proxy).
    pub exempt_loopback: bool,
    /// Time a request head may take, from its first byte (from the connection's start
    /// for the first request, so under [`serve_tls`] the TLS handshake counts too) to its
    /// end; the connection is closed when it runs out. Zero disables.
    pub header_timeout: Duration,
    /// Grace before a request body's rate is checked; after it, every
    /// [`BODY_RATE_WINDOW`] must bring at least `body_min_rate` bytes per second, or the
    /// request gets `408` and its connection is closed. Zero disables the rate rule.
    pub body_timeout: Duration,
    /// Bytes per second a body must keep arriving at, measured over each
    /// [`BODY_RATE_WINDOW`] after `body_timeout` (a burst earns no credit for a later
    /// stall). Zero: `body_timeout` is a fixed limit for the whole body.
    pub body_min_rate: u64,
    /// Request-body bytes the bodies from one client address may hold at once (the rest
    /// get `503` at once), so one peer cannot take the whole server-wide budget. At
    /// least the largest body. Loopback is exempt with `exempt_loopback`.
    pub max_inflight_body_per_addr: usize,
    /// Request-body bytes held in memory at once, server-wide. Should be at least
    /// [`crate::Limits::max_body_bytes`]: a larger body never fits.
    pub max_inflight_body_bytes: usize,
    /// How long a body waits for the budget before its request gets `503`.
    pub body_budget_wait: Duration,
    /// A connection with no request in flight and no byte moving either way for this
    /// long is closed (the keep-alive timeout). Zero disables.
    pub idle_timeout: Duration,
    /// A connection whose peer accepts none of the response bytes it is sent for this
    /// long is closed, and the response it held freed: a peer that stops reading cannot
    /// keep a server's answers in memory. Zero disables.
    pub write_stall_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; `431` above (HTTP/1).
    /// It is also the size of a connection's read buffer (at least 8 KiB), which is
    /// the memory a connection holds outside the body budget: keep it small.
    pub max_header_bytes: usize,
    /// Accept HTTP/2: cleartext with prior knowledge (h2c), and offered by ALPN under
    /// [`serve_tls`]. Off: HTTP/1.1 only.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// After the shutdown signal: how long connections may take to finish what they
    /// are doing before they are cut.
    pub shutdown_grace: Duration,
}

/// The window over which a body's minimum rate is measured once its grace is over.
pub const BODY_RATE_WINDOW: Duration = Duration::from_secs(2);

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            max_connections_per_addr: 64,
            exempt_loopback: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 8 * 1024,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            max_inflight_body_per_addr: 16 * 1024 * 1024,
            body_budget_wait: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            http2: false,
            http2_max_streams: 32,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// Connections still busy when the shutdown grace ran out, and cut.
    pub connections_cut: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets open
/// connections finish for up to [`ListenerLimits::shutdown_grace`], cuts the rest and
/// returns. See the module docs for what is limited.
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// use sessioncert_server::listener::{serve, ListenerLimits};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let stopped = serve(listener, app, ListenerLimits::default(), async {
///     let _ = tokio::signal::ctrl_c().await;
/// }).await;
/// # let _ = stopped; Ok(()) }
/// ```
pub async fn serve<S, F>(
    listener: TcpListener,
    app: S,
    limits: ListenerLimits,
    shutdown: F,
) -> Stopped
where
    S: Service<axum::http::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send,
{
    serve_with(listener, None, app, limits, shutdown).await
}

/// [`serve`], terminating TLS with `tls` (for example from
/// [`server_config_from_pem_files`]). Its ALPN list is replaced: `http/1.1`, plus `h2`
/// first when [`ListenerLimits::http2`] is set. See the module docs for how the TLS
/// handshake is bounded.
pub async fn serve_tls<S, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: S,
    limits: ListenerLimits,
    shutdown: F,
) -> Stopped
where
    S: Service<axum::http::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send,
{
    let mut config = (*tls).clone();
    config.alpn_protocols = if limits.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = TlsAcceptor::from(Arc::new(config));
    serve_with(listener, Some(acceptor), app, limits, shutdown).await
}

async fn serve_with<S, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: S,
    limits: ListenerLimits,
    shutdown: F,
) -> Stopped
where
    S: Service<axum::http::Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send,
{
    let app = BodyGuardLayer::new(&limits).layer(app);
    // Outermost: the access log and request metrics see every answer, the body guard's too.
    let app = access::wrap(app);
    let (cut_tx, cut_rx) = watch::channel(false);
    let builder = Arc::new(http_builder(&limits, StreamExec { cut: cut_rx }));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Refusals of peers over their per-address cap have their own small pool: they
    // must never take the server-wide slots honest peers wait for. Beyond it, such a
    // connection is closed at once, unanswered.
    let refusal_slots = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let per_addr = Arc::new(PerAddr::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);

    'accept: loop {
        // A free slot first: at the cap, peers wait in the kernel's queue.
        let slot = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                Some(r) = conns.join_next(), if !conns.is_empty() => reaped(r),
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => break s,
                    Err(_) => break 'accept,
                },
            }
        };
        let (tcp, remote) = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                Some(r) = conns.join_next(), if !conns.is_empty() => reaped(r),
                r = listener.accept() => match r {
                    Ok(c) => break c,
                    Err(e) => accept_error(e).await,
                },
            }
        };
        let _ = tcp.set_nodelay(true);
        let addr_slot = if limits.exempt_loopback && remote.ip().is_loopback() {
            None
        } else {
            match per_addr.enter(remote.ip(), limits.max_connections_per_addr) {
                Some(s) => Some(s),
                None => {
                    access::connection_refused(remote);
                    drop(slot);
                    if let Ok(refusing) = refusal_slots.clone().try_acquire_owned() {
                        conns.spawn(refuse(tcp, tls.clone(), refusing));
                    }
                    continue;
                }
            }
        };
        conns.spawn(connection(
            tcp,
            tls.clone(),
            remote,
            app.clone(),
            builder.clone(),
            limits.clone(),
            stop_rx.clone(),
            (slot, addr_slot),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    let connections_cut = if drained.is_err() { conns.len() } else { 0 };
    // Cut: the connections, and any HTTP/2 stream still running on its own task.
    let _ = cut_tx.send(true);
    conns.shutdown().await;
    Stopped { connections_cut }
}

/// A finished connection task. A panic (in a handler) ends only its connection.
fn reaped(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            tracing::error!("a connection task panicked; the connection was dropped");
        }
    }
}

/// Runs HTTP/2 streams on their own tasks (as hyper requires) and drops them when
/// [`serve`] cuts what outlived the shutdown grace.
#[derive(Clone)]
struct StreamExec {
    cut: watch::Receiver<bool>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut cut = self.cut.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                _ = cut.wait_for(|c| *c) => {}
            }
        });
    }
}

/// Accept failed: per-connection errors are dropped; anything else (out of file
/// descriptors) is logged and accepting pauses briefly rather than spinning.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn http_builder(limits: &ListenerLimits, exec: StreamExec) -> auto::Builder<StreamExec> {
    let mut b = auto::Builder::new(exec);
    b.http1()
        .timer(TokioTimer::new())
        // hyper's own header timer runs from the end of the previous response, so it
        // would also be the keep-alive timeout; the connection watchdog times heads
        // from their first byte instead.
        .header_read_timeout(None)
        // hyper's read buffer: a head that does not fit gets 431, and it bounds a
        // connection's share of memory while reading a body (8 KiB is hyper's minimum).
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    if limits.http2 {
        b
    } else {
        b.http1_only()
    }
}

/// Connections per client address.
#[derive(Default)]
struct PerAddr {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddr {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddrSlot> {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddrSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PerAddr`]; given back when dropped.
struct AddrSlot {
    owner: Arc<PerAddr>,
    ip: IpAddr,
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut m = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Refusals of over-cap connections answered at once, server-wide (each for at most
/// two seconds); further over-cap connections are closed unanswered.
const REFUSAL_SLOTS: usize = 64;

/// Most bytes of a refused connection's request head read before it is answered.
const REFUSED_HEAD_MAX: usize = 16 * 1024;

/// The answer to a connection over the per-address cap: a plain HTTP/1.1 `429`.
fn refused_response() -> Vec<u8> {
    let body = "{\"error\":\"rate_limited\",\"message\":\"too many connections from this client address\"}";
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         sessioncert-error: rate_limited\r\nretry-after: 1\r\ncache-control: no-store\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `429` to the first request head, then closes (over TLS after the handshake);
/// within two seconds in all, holding one of [`REFUSAL_SLOTS`], not a connection slot.
///
/// The head is awaited (at most [`REFUSED_HEAD_MAX`] bytes and half a second, then
/// discarded) so that the answer arrives as the response to a request: an answer sent
/// before the client has written anything reads, to an HTTP client, as a broken
/// connection ("unexpected message") instead of a refusal. Afterwards it reads (and
/// discards) a little more for a moment, so the close does not reset the connection
/// before the peer has read the answer.
async fn refuse(tcp: TcpStream, tls: Option<TlsAcceptor>, _refusing: OwnedSemaphorePermit) {
    async fn answer<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut read = 0usize;
            // The last bytes seen, to find the blank line that ends the head across reads.
            let mut tail = [0u8; 4];
            while read < REFUSED_HEAD_MAX {
                let n = tokio::io::AsyncReadExt::read(&mut io, &mut buf).await?;
                if n == 0 {
                    break;
                }
                read += n;
                let mut end = false;
                for &b in &buf[..n] {
                    tail = [tail[1], tail[2], tail[3], b];
                    end |= &tail == b"\r\n\r\n";
                }
                if end {
                    break;
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
        io.write_all(&refused_response()).await?;
        io.shutdown().await?;
        // A moment for the peer to read the answer before the close (a close with
        // unread input would reset the connection and could destroy the answer).
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let mut left = 64 * 1024usize;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut io, &mut buf).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
        Ok(())
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        match tls {
            None => answer(tcp).await,
            Some(acceptor) => answer(acceptor.accept(tcp).await?).await,
        }
    })
    .await;
}

/// What the connection watchdog looks at: the last time a byte moved, how many requests
/// are being handled, and when the request head now arriving began. Times are
/// milliseconds since the connection's start.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// [`NO_HEAD`] while no head is arriving.
    head_since_ms: AtomicU64,
    /// Wakes the watchdog when a head begins.
    head_started: Notify,
    /// Since when a write has been waiting for the peer to read ([`NO_HEAD`]: none).
    write_blocked_ms: AtomicU64,
    /// Wakes the watchdog when a write starts waiting.
    write_blocked: Notify,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes moved. Bytes read while no request is in flight begin a request head.
    fn touch(&self, read: bool) {
        let ms = self.now_ms();
        self.last_ms.store(ms, Ordering::Relaxed);
        if read
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_since_ms
                .compare_exchange(NO_HEAD, ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// A write went through (`true`) or had to wait for the peer (`false`).
    fn wrote(&self, progressed: bool) {
        if progressed {
            self.write_blocked_ms.store(NO_HEAD, Ordering::Relaxed);
        } else if self
            .write_blocked_ms
            .compare_exchange(NO_HEAD, self.now_ms(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.write_blocked.notify_one();
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch(false);
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct InFlightBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for InFlightBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket that records when bytes move. Under TLS it is the TCP socket below the
/// TLS stream, so the watchdogs see the bytes on the wire.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch(true);
        }
        r
    }
}

impl Tracked {
    fn note_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.touch(false);
                self.activity.wrote(true);
            }
            Poll::Pending => self.activity.wrote(false),
            _ => {}
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, the watchdog closes it, or (after the shutdown
/// signal) it finishes gracefully. The slots are given back when this returns.
#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    remote: SocketAddr,
    app: S,
    builder: Arc<auto::Builder<StreamExec>>,
    limits: ListenerLimits,
    mut stop: watch::Receiver<bool>,
    _slots: (OwnedSemaphorePermit, Option<AddrSlot>),
) where
    S: Service<axum::http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _open = crate::telemetry::OpenConnection::new();
    // A second handle on the socket, so that closing hyper's does not close it: after
    // the last response the rest of what the peer sends is read and dropped (`linger`).
    let (tcp, spare) = match split_for_linger(tcp) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "connection dropped: socket could not be duplicated");
            return;
        }
    };
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        // The first head is timed from the connection's start.
        head_since_ms: AtomicU64::new(0),
        head_started: Notify::new(),
        write_blocked_ms: AtomicU64::new(NO_HEAD),
        write_blocked: Notify::new(),
    });
    let tracked = Tracked {
        io: tcp,
        activity: activity.clone(),
    };
    let ended_normally = match tls {
        None => {
            serve_connection(
                TokioIo::new(tracked),
                activity,
                remote,
                app,
                builder,
                limits,
                stop,
            )
            .await
        }
        Some(acceptor) => {
            // The handshake counts against the first request head's time, which runs
            // from the connection's start: a peer that never finishes it is cut at the
            // header timeout, holding its slots no longer than a slow plain head would.
            let handshake = async {
                if limits.header_timeout.is_zero() {
                    Ok(acceptor.accept(tracked).await)
                } else {
                    tokio::time::timeout_at(
                        activity.at(0) + limits.header_timeout,
                        acceptor.accept(tracked),
                    )
                    .await
                }
            };
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "connection closed: TLS handshake not complete within the header timeout");
                        return;
                    }
                },
                // Shutting down: a handshake in progress has no request to finish.
                _ = stop.wait_for(|s| *s) => return,
            };
            serve_connection(
                TokioIo::new(stream),
                activity,
                remote,
                app,
                builder,
                limits,
                stop,
            )
            .await
        }
    };
    if ended_normally {
        linger(spare).await;
    }
}

/// How long, and for how many bytes, a closed connection is still read (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// The socket, and a second handle on it for [`linger`].
fn split_for_linger(tcp: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std = tcp.into_std()?;
    let spare = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, spare))
}

/// A "lingering close", as web servers do it: when a response was sent before its
/// request body was read — a refusal before the body (unknown session, a spent session
/// after its first chunk), a handler that answers without reading a streamed upload —
/// closing the socket at once makes the kernel reset the connection, and the client,
/// still writing its body, loses the answer (a broken pipe instead of a refusal it could
/// act on). So the write side is shut (FIN), and what the peer still sends is read and
/// dropped until it closes, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], while the
/// connection still holds its slots (so lingering sockets count against the limits).
async fn linger(spare: std::net::TcpStream) {
    let Ok(mut tcp) = TcpStream::from_std(spare) else {
        return;
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tcp.shutdown().await;
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut dropped = 0usize;
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => break,
        }
    }
}

/// The HTTP part of [`connection`] over `io` (plain or TLS), with its watchdog. Returns
/// whether the connection ended by itself (not cut by a watchdog, nor shutting down):
/// only then is it worth lingering.
async fn serve_connection<I, S>(
    io: TokioIo<I>,
    activity: Arc<Activity>,
    remote: SocketAddr,
    app: S,
    builder: Arc<auto::Builder<StreamExec>>,
    limits: ListenerLimits,
    mut stop: watch::Receiver<bool>,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<axum::http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let a = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        let in_flight = InFlight::enter(&a);
        req.extensions_mut().insert(ConnectInfo(remote));
        let fut = app.clone().oneshot(req);
        async move {
            let r = fut.await;
            // A response of unknown length (a stream, server-sent events) is in flight
            // until its body ends: the idle timeout must not cut it between two events.
            // One of known length is written at once (the write-stall timeout covers a
            // peer that does not take it).
            Ok::<_, Infallible>(match r {
                Ok(resp) if http_body::Body::size_hint(resp.body()).exact().is_none() => {
                    resp.map(|b| {
                        Body::new(InFlightBody {
                            body: b,
                            _in_flight: in_flight,
                        })
                    })
                }
                Ok(resp) => {
                    drop(in_flight);
                    resp
                }
                Err(never) => match never {},
            })
        }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let now = Instant::now();
        // The watchdog: a request head must be complete within the header timeout of its
        // first byte (this also covers the HTTP/2 preface), and a connection with nothing
        // in flight must not sit silent past the idle timeout.
        let mut wake = now + Duration::from_secs(3600);
        let head_since = activity.head_since_ms.load(Ordering::Relaxed);
        if head_since != NO_HEAD && !limits.header_timeout.is_zero() {
            let by = activity.at(head_since) + limits.header_timeout;
            if now >= by {
                tracing::debug!(%remote, "connection closed: request head not complete within the header timeout");
                crate::telemetry::connection_cut("header_timeout");
                return false;
            }
            wake = wake.min(by);
        }
        let blocked_since = activity.write_blocked_ms.load(Ordering::Relaxed);
        if blocked_since != NO_HEAD && !limits.write_stall_timeout.is_zero() {
            let by = activity.at(blocked_since) + limits.write_stall_timeout;
            if now >= by {
                tracing::debug!(%remote, "connection closed: the peer stopped reading its response");
                crate::telemetry::connection_cut("write_stall");
                return false;
            }
            wake = wake.min(by);
        }
        if !limits.idle_timeout.is_zero() {
            if activity.in_flight.load(Ordering::Relaxed) == 0 {
                let idle_until =
                    activity.at(activity.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout;
                if now >= idle_until {
                    tracing::debug!(%remote, "connection closed: idle");
                    return false;
                }
                wake = wake.min(idle_until);
            } else {
                wake = wake.min(now + limits.idle_timeout);
            }
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    access::connection_error(remote, &*e);
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                    return false;
                }
                return !draining;
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(wake) => {}
            () = activity.head_started.notified() => {}
            () = activity.write_blocked.notified() => {}
        }
    }
}
