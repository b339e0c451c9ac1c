//! Issue 11, finding 5, the measured outcome: 100 connections sending 4 MiB bodies under
//! made-up session ids raise the server's memory by less than 32 MiB, the connections
//! are answered and closed rather than held, and honest clients are served meanwhile.
//!
//! One test in its own binary: it reads this process's RSS, which other tests running
//! in parallel would disturb.

mod common;
mod listener_common;

use listener_common::*;
use sessioncert_client::{Client, Trust};
use sessioncert_server::listener::ListenerLimits;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNS: usize = 100;
const BODY: usize = 4 << 20;

/// One attacker: a made-up session id, a 4 MiB body sent as fast as the socket takes
/// it (`slow` = 1 KiB every 50 ms). Returns when the server closed the connection
/// (from the start) and the status line it answered, if any arrived.
async fn attacker(addr: std::net::SocketAddr, slow: bool) -> (Option<Duration>, String) {
    static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        if w.write_all(&sealed_head("/apiTest", &made_up_session_id(), BODY))
            .await
            .is_err()
        {
            return;
        }
        let mut left = BODY;
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
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_connections_with_made_up_sessions_and_4mib_bodies_stay_under_32mib() {
    // All 100 come from 127.0.0.1: exempt loopback from the per-address cap, as if they
    // came from 100 addresses, so that what is measured is the session precheck.
    let limits = ListenerLimits {
        exempt_loopback: true,
        ..ListenerLimits::default()
    };
    let srv = GuardedServer::start(generous_limits(), limits).await;
    let client = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    // Warm up the honest path so its buffers are part of the baseline.
    for _ in 0..5 {
        let r = client
            .post("/apiTest")
            .json(&serde_json::json!({"warm": "up"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
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
    let honest = tokio::spawn({
        let (stop, client) = (stop.clone(), client.clone());
        async move {
            let (mut ok, mut failed, mut slowest) = (0u32, Vec::new(), Duration::ZERO);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                match client
                    .post("/apiTest")
                    .json(&serde_json::json!({ "honest": i }))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed, slowest)
        }
    });

    // Half send as fast as they can, half trickle.
    let attacks: Vec<_> = (0..CONNS)
        .map(|i| tokio::spawn(attacker(srv.addr, i % 2 == 1)))
        .collect();
    let mut results = Vec::new();
    for a in attacks {
        results.push(a.await.unwrap());
    }
    // Let the honest client run a little past the flood too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (ok, failed, slowest) = honest.await.unwrap();
    let growth_kib = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "rss base {} KiB, peak growth {} KiB; honest ok {ok}, failed {}, slowest {slowest:?}",
        base,
        growth_kib,
        failed.len()
    );

    // (a) Every attacker was answered and closed, none held; the trickling ones saw the
    // refusal itself (the fast ones may see a reset instead: they were still sending).
    for (i, (closed, line)) in results.iter().enumerate() {
        let closed = closed.unwrap_or_else(|| panic!("attacker {i} still open after 15 s"));
        assert!(
            closed < Duration::from_secs(5),
            "attacker {i} closed after {closed:?}"
        );
        if i % 2 == 1 {
            assert!(line.starts_with("HTTP/1.1 401"), "attacker {i}: {line:?}");
        }
    }
    // (b) Honest requests all succeeded meanwhile.
    assert!(failed.is_empty(), "honest requests failed: {failed:?}");
    assert!(ok >= 5, "only {ok} honest requests completed");
    assert!(
        slowest < Duration::from_secs(2),
        "an honest request took {slowest:?}"
    );
    // (c) Memory.
    assert!(
        growth_kib < 32 * 1024,
        "RSS grew by {growth_kib} KiB under the flood"
    );
}
