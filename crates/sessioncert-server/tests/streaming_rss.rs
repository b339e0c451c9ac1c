//! A 256 MiB streamed upload and download through the seal layer and the hardened
//! listener, with the process's resident memory growing by less than 32 MiB (its own
//! test binary, so no other test allocates meanwhile).

mod common;

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use common::streams::*;
use common::RawClient;
use sessioncert_proto::record::RequestLine;
use sessioncert_proto::wire::*;
use sessioncert_proto::{RequestBinding, ResponseBinding};
use sessioncert_server::listener::{serve, ListenerLimits};
use sessioncert_server::seal::StreamLimit;
use sessioncert_server::{now_ms, Limits, ServerKeys, SessionCert};
use sessioncert_store::MemoryStore;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

const TOTAL: usize = 256 << 20;
const PIECE: usize = 64 * 1024;
const PERIOD: usize = 251;

/// Byte `i` of the body.
fn pattern_from(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % PERIOD) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_round_trip_streams_in_bounded_memory() {
    let keys = ServerKeys::ephemeral(now_ms()).unwrap();
    let pin = keys.pin();
    let sc = SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new()))
        .limits(Limits {
            max_stream_body_bytes: Some(16 << 20),
            ..Limits::default()
        })
        .build()
        .await
        .unwrap();
    // The route takes any size; the server default (16 MiB) would refuse this one.
    let sealed = Router::new().route(
        "/echo",
        post(|b: Body| async move { b }).route_layer(StreamLimit::new(None)),
    );
    let app = sc.router(sealed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, ListenerLimits::default(), async {
        let _ = rx.await;
    }));
    let mut c = RawClient::connect(&base, pin).await;

    // Warm up (allocator arenas, connection buffers) with a small round trip, then
    // measure the peak while the big one runs.
    let sample = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut baseline = 0;
    for total in [4 << 20, TOTAL] {
        if total == TOTAL {
            baseline = rss_bytes();
            let (sample, running) = (sample.clone(), running.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::SeqCst) {
                    sample.fetch_max(rss_bytes(), Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
        }
        let ct = "application/octet-stream";
        let line = RequestLine {
            method: "POST",
            target: &base,
            path: "/echo",
            query: "",
            content_type: ct,
            covered: &[],
        };
        let mut up = StreamUpload::start(
            &mut c.session,
            &RequestBinding::Header(line),
            &pattern_from(0, PIECE),
            false,
        );
        let mut conn = H1::connect(&base).await;
        let headers = vec![
            (SESSION_HEADER.to_owned(), c.session.id().to_string()),
            ("content-type".to_owned(), SEALED_CONTENT_TYPE.to_owned()),
            (TARGET_HEADER.to_owned(), base.clone()),
            (CONTENT_TYPE_HEADER.to_owned(), ct.to_owned()),
        ];
        conn.request("POST", "/echo", &headers, None).await;
        conn.send(&up.start).await;
        // The upload is produced as it is sent (never whole in memory) by a task of
        // its own, while this one reads the answer and checks it as it comes: the echo
        // handler answers as the upload arrives, so both must move together.
        let expect = up.expect;
        let mut w = conn.take_writer();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut off = PIECE;
            while off < total {
                let len = PIECE.min(total - off);
                let plain = pattern_from(off, len);
                let frame = if off + len == total {
                    up.last(&plain)
                } else {
                    up.chunk(&plain)
                };
                off += len;
                let framed =
                    [format!("{:x}\r\n", frame.len()).as_bytes(), &frame, b"\r\n"].concat();
                w.write_all(&framed).await.unwrap();
            }
            w.write_all(b"0\r\n\r\n").await.unwrap();
            w
        });
        let head = conn.head().await;
        assert_eq!(head.status, 200);
        let binding = ResponseBinding::Header {
            status: 200,
            content_type: "",
        };
        let mut reader = ResponseStreamReader::default();
        let mut got = 0usize;
        while let Some(piece) = conn.piece().await.unwrap() {
            for plain in reader
                .feed(&mut c.session, &expect, &binding, &piece)
                .unwrap()
            {
                let expected = pattern_from(got, plain.len());
                assert!(plain == expected, "content differs at {got}");
                got += plain.len();
            }
        }
        reader.finish().unwrap();
        assert_eq!(got, total);
        drop(writer.await.unwrap());
    }
    running.store(false, Ordering::SeqCst);
    let peak = sample.load(Ordering::SeqCst).max(rss_bytes());
    let grew = peak.saturating_sub(baseline);
    eprintln!("baseline {baseline} peak {peak} grew {grew}");
    assert!(
        grew < 32 << 20,
        "RSS grew by {} MiB during a 256 MiB round trip",
        grew >> 20
    );
}
