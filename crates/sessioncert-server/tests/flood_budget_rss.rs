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
use std::time::Duration;

const CONNS: usize = 100;
const BODY: usize = 4 << 20;
const BUDGET: usize = 16 << 20;

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
    let rss = RssSampler::start();
    let attacks: Vec<_> = (0..CONNS)
        .map(|_| {
            let flood = body_flood(srv.addr, sid.clone(), BODY, false, Duration::from_secs(20));
            tokio::spawn(flood)
        })
        .collect();
    let mut results = Vec::new();
    for a in attacks {
        results.push(a.await.unwrap());
    }
    let (base, growth_kib) = rss.stop().await;
    let busy = results
        .iter()
        .filter(|(_, l)| l.starts_with("HTTP/1.1 503"))
        .count();
    eprintln!("rss base {base} KiB, peak growth {growth_kib} KiB, {busy} of {CONNS} answered 503");
    for (i, (closed, line)) in results.iter().enumerate() {
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
