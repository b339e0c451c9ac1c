//! The same flood as `flood_rss.rs`, but under a *live* session id (a handshake costs an
//! attacker nothing): the session check lets the bodies through, and the server-wide
//! body budget is what bounds memory. The requests that do not fit are answered `503
//! unavailable`; none is held.
//!
//! One test in its own binary: it reads this process's RSS.

mod common;
mod listener_common;

use listener_common::*;
use sessioncert_server::listener::ListenerLimits;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNS: usize = 100;
const BODY: usize = 4 << 20;
const BUDGET: usize = 16 << 20;

/// Sends a 4 MiB body under `sid` as fast as the socket takes it; returns the status
/// line and when the server closed the connection.
async fn attacker(addr: std::net::SocketAddr, sid: String) -> (String, Option<Duration>) {
    static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        if w.write_all(&sealed_head("/apiTest", &sid, BODY))
            .await
            .is_err()
        {
            return;
        }
        let mut left = BODY;
        while left > 0 {
            let n = CHUNK.len().min(left);
            if w.write_all(&CHUNK[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
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
    (line, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_4mib_bodies_in_a_live_session_are_bounded_by_the_body_budget() {
    let limits = ListenerLimits {
        exempt_loopback: true,
        max_inflight_body_bytes: BUDGET,
        body_budget_wait: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ..ListenerLimits::default()
    };
    let srv = GuardedServer::start(generous_limits(), limits).await;
    let sid = common::RawClient::connect(&srv.base, srv.pin)
        .await
        .session
        .id()
        .to_string();
    let base = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = tokio::spawn({
        let (stop, peak) = (stop.clone(), peak.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let attacks: Vec<_> = (0..CONNS)
        .map(|_| tokio::spawn(attacker(srv.addr, sid.clone())))
        .collect();
    let mut results = Vec::new();
    for a in attacks {
        results.push(a.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let growth_kib = peak.load(Ordering::Relaxed).saturating_sub(base);
    let busy = results
        .iter()
        .filter(|(l, _)| l.starts_with("HTTP/1.1 503"))
        .count();
    eprintln!("rss base {base} KiB, peak growth {growth_kib} KiB, {busy} of {CONNS} answered 503");
    for (i, (line, closed)) in results.iter().enumerate() {
        // Whole bodies reach the record check (junk: 400); the rest are turned away.
        assert!(
            line.starts_with("HTTP/1.1 400") || line.starts_with("HTTP/1.1 503") || line.is_empty(),
            "attacker {i}: {line:?}"
        );
        assert!(
            closed.is_some(),
            "attacker {i} still held after 20 s: {line:?}"
        );
    }
    assert!(
        busy > 0,
        "a 16 MiB budget admitted 100 bodies of 4 MiB at once"
    );
    // Bounded by the budget, not by 100 x 4 MiB: the budget's bytes, a body's one-time
    // join into a contiguous buffer when it completes (at most the budget again), and
    // one small read buffer per connection. Without the budget this flood takes
    // ~320 MiB here.
    assert!(
        growth_kib < 3 * (BUDGET as u64 / 1024),
        "RSS grew by {growth_kib} KiB with a {} KiB budget",
        BUDGET / 1024
    );
}
