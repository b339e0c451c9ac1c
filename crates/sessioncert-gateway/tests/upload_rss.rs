//! A 256 MiB sealed upload and download through the gateway, with the process's
//! resident memory (client, gateway and upstream together: its own test binary, so no
//! other test allocates meanwhile) growing by far less than the body: nothing holds a
//! body whole. `scripts/gateway-rss.sh` measures the gateway process alone with 1 GiB.

mod common;

use bytes::Bytes;
use common::*;
use sessioncert_gateway::{RoutePolicy, UpstreamOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024
}

const PIECE: usize = 64 * 1024;

fn upload(total: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter(
        (0..total / PIECE).map(|i| Ok(Bytes::from(vec![(i % 251) as u8; PIECE]))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_and_download_stream_through_in_bounded_memory() {
    let up = upstream().await;
    let gw = gateway(&up.url(), RoutePolicy::new(), UpstreamOptions::default()).await;
    let client = gw.client().await;
    let peak = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut baseline = 0;
    // Warm up (allocator arenas, connection buffers, the pool), then measure.
    for total in [8 << 20, 256 << 20] {
        if total == 256 << 20 {
            baseline = rss_bytes();
            let (peak, running) = (peak.clone(), running.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::SeqCst) {
                    peak.fetch_max(rss_bytes(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let r = client
            .put("/upload")
            .body_stream(upload(total))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["bytes"], total as u64);
        let mut down = client
            .get(&format!("/download?bytes={total}"))
            .send_streaming()
            .await
            .unwrap();
        assert_eq!(down.status(), 200);
        let mut got = 0usize;
        while let Some(piece) = down.chunk().await.unwrap() {
            assert!(piece
                .iter()
                .enumerate()
                .all(|(i, b)| *b == ((got + i) % 251) as u8));
            got += piece.len();
        }
        assert_eq!(got, total);
    }
    running.store(false, Ordering::SeqCst);
    let grown = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!(
        "baseline {:.1} MiB, peak {:.1} MiB, grown {:.1} MiB",
        baseline as f64 / 1048576.0,
        peak.load(Ordering::SeqCst) as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    assert!(
        grown < 32 << 20,
        "RSS grew by {grown} bytes while 256 MiB went each way"
    );
}
