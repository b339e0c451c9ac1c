//! A server behind `sessioncert_server::listener::serve`, and raw-socket helpers for
//! tests that play a slow or hostile peer.
#![allow(dead_code)]

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use sessioncert_proto::Pin;
use sessioncert_server::listener::{serve, ListenerLimits, Stopped};
use sessioncert_server::{now_ms, Limits, ServerKeys, SessionCert};
use sessioncert_store::MemoryStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Size of the plain `/big` response: far more than socket buffers hold.
pub const BIG_RESPONSE: usize = 32 << 20;

pub struct GuardedServer {
    pub addr: SocketAddr,
    pub base: String,
    pub pin: Pin,
    pub sc: SessionCert,
    /// How many times `/slow` was entered.
    slow_started: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Stopped>>,
}

impl GuardedServer {
    /// The test app (sealed `/apiTest`, plain `/plain/apiTest`, plain `/slow` that takes
    /// 300 ms, plain `/big` answering [`BIG_RESPONSE`] bytes, plain `/whoami` answering
    /// the peer address) behind the listener.
    pub async fn start(limits: Limits, listener_limits: ListenerLimits) -> Self {
        let keys = ServerKeys::ephemeral(now_ms()).unwrap();
        let pin = keys.pin();
        let slow_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sc = SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new()))
            .limits(limits)
            .build()
            .await
            .unwrap();
        let app = sc
            .router(crate::common::sealed_routes())
            .route("/plain/apiTest", post(crate::common::echo))
            .route(
                "/slow",
                get({
                    let started = slow_started.clone();
                    move || async move {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "slow done"
                    }
                }),
            )
            .route("/big", get(|| async { vec![b'b'; BIG_RESPONSE] }))
            .route(
                "/whoami",
                get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.ip().to_string() }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, listener_limits, async {
            let _ = rx.await;
        }));
        GuardedServer {
            addr,
            base: format!("http://{addr}"),
            pin,
            sc,
            slow_started,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Waits (up to 10 s) until `/slow` has been entered `n` times in all: a request is
    /// then known to be in flight, however loaded the machine is.
    pub async fn slow_entered(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.slow_started.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "/slow was never reached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(&mut self) -> Stopped {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

/// Limits that stay out of the way of tests about something else.
pub fn generous_limits() -> Limits {
    crate::common::generous()
}

/// The head of a sealed-looking POST under session `sid` announcing `len` body bytes.
pub fn sealed_head(path: &str, sid: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nsessioncert-id: {sid}\r\n\
         sessioncert-target: http://test\r\n\
         content-type: application/sessioncert-sealed\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes()
}

/// A random, well-formed session id the server never issued.
pub fn made_up_session_id() -> String {
    sessioncert_proto::SessionId::random().unwrap().to_string()
}

/// What a peer saw on a connection until the server closed it (or `limit` passed).
#[derive(Debug)]
pub struct Seen {
    pub bytes: Vec<u8>,
    /// When the server closed the connection (EOF or reset), from the call.
    pub closed_after: Option<Duration>,
}

impl Seen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn status(&self) -> Option<u16> {
        let t = self.text();
        let line = t.lines().next()?;
        line.split(' ').nth(1)?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let t = self.text();
        let head = t.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Reads until the server closes the connection, at most `limit`.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Seen {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => {
                return Seen {
                    bytes,
                    closed_after: None,
                }
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Seen {
                    bytes,
                    closed_after: Some(start.elapsed()),
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `data` in pieces of `piece` bytes, one every `every`, until done or the
/// server stops taking them. Returns how much was written.
pub async fn trickle(
    s: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
    piece: usize,
    every: Duration,
) -> usize {
    let mut sent = 0;
    for chunk in data.chunks(piece.max(1)) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
        tokio::time::sleep(every).await;
    }
    sent
}

/// A complete `GET path` on an open connection; returns the response head and body
/// as text (reads until the announced length).
pub async fn get_on(s: &mut TcpStream, path: &str, limit: Duration) -> Option<String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The process's resident set size in KiB (Linux).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// One flooding peer: a sealed-request head for `sid` announcing `len` body bytes, then
/// the body as fast as the socket takes it (`slow`: 1 KiB every 50 ms), then holding
/// the write half open. Returns when the server closed the connection (from the start;
/// `None` if still open after `listen`) and the status line it answered, if any.
pub async fn body_flood(
    addr: SocketAddr,
    sid: String,
    len: usize,
    slow: bool,
    listen: Duration,
) -> (Option<Duration>, String) {
    static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        if w.write_all(&sealed_head("/apiTest", &sid, len))
            .await
            .is_err()
        {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = if slow { 1024 } else { CHUNK.len() }.min(left);
            if w.write_all(&CHUNK[..n]).await.is_err() {
                return;
            }
            left -= n;
            if slow {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Keep the write half open (a peer that holds on).
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(listen, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok();
    writer.abort();
    let line = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    (closed, line)
}

/// Samples this process's RSS every 20 ms from `start` until `stop`, which returns the
/// baseline and the peak growth over it, in KiB.
pub struct RssSampler {
    base: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let base = rss_kib();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let peak = std::sync::Arc::new(AtomicU64::new(base));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        RssSampler {
            base,
            stop,
            peak,
            task,
        }
    }

    /// `(baseline, peak growth)` in KiB.
    pub async fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let peak = self.peak.load(Ordering::Relaxed);
        (self.base, peak.saturating_sub(self.base))
    }
}
