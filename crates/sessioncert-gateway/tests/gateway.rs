//! The gateway in front of a real upstream (an axum app on a free port), driven by the
//! real client: what the upstream receives, what the client gets back, streams both
//! ways, upstream failures, the route policy and readiness.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt as _;
use serde_json::Value;
use sessioncert_gateway::{Route, RoutePolicy, UpstreamOptions, SESSION_HEADER};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

fn sessioncert_headers(seen: &Seen) -> Vec<String> {
    seen.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("sessioncert-"))
        .collect()
}

/// Header mode and full mode: the upstream gets the method, path, query, headers and
/// body in plaintext, with the forwarding headers and the session's id; the client gets
/// the upstream's answer sealed, without the headers an upstream may not send.
#[tokio::test]
async fn sealed_requests_reach_the_upstream_in_plaintext_in_both_modes() {
    let up = upstream().await;
    let gw = gateway(&up.url(), RoutePolicy::new(), UpstreamOptions::default()).await;
    let client = gw.client().await;
    let session = client.session_info().await.unwrap().id.to_string();

    let body = serde_json::json!({"secret": "header-mode plaintext"});
    let r = client
        .post("/orders/42?x=1&y=caf%C3%A9")
        .header("x-app", "v1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(r.headers()["x-upstream"], "echo");
    assert!(r.headers().get("sessioncert-error").is_none());
    assert!(r.headers().get("keep-alive").is_none());
    let echoed: Value = r.json().unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/orders/42?x=1&y=caf%C3%A9");
    let seen = up.log.last();
    assert_eq!(seen.body, serde_json::to_vec(&body).unwrap());
    assert_eq!(header(&seen, "content-type"), Some("application/json"));
    assert_eq!(
        header(&seen, "content-length"),
        Some(seen.body.len().to_string().as_str())
    );
    assert_eq!(header(&seen, "x-app"), Some("v1"));
    assert_eq!(header(&seen, "host"), Some(up.addr.to_string().as_str()));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(header(&seen, SESSION_HEADER), Some(session.as_str()));
    assert_eq!(sessioncert_headers(&seen), [SESSION_HEADER]);

    let r = client
        .put("/items/7?q=full")
        .full(true)
        .header("x-app", "v2")
        .content_type("text/plain")
        .body("full-mode plaintext")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers_authenticated());
    assert_eq!(r.headers()["x-upstream"], "echo");
    assert!(r.headers().get("sessioncert-error").is_none());
    let seen = up.log.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.uri, "/items/7?q=full");
    assert_eq!(&seen.body[..], b"full-mode plaintext");
    assert_eq!(header(&seen, "content-type"), Some("text/plain"));
    assert_eq!(header(&seen, "x-app"), Some("v2"));
    assert_eq!(header(&seen, SESSION_HEADER), Some(session.as_str()));
    assert_eq!(sessioncert_headers(&seen), [SESSION_HEADER]);

    for (method, full) in [("GET", false), ("DELETE", false), ("GET", true)] {
        let r = client
            .request(method.parse().unwrap(), "/things?page=2")
            .full(full)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let seen = up.log.last();
        assert_eq!(
            (seen.method.as_str(), seen.uri.as_str()),
            (method, "/things?page=2")
        );
        assert!(seen.body.is_empty());
    }
}

/// A TCP relay in front of the gateway that adds headers to every request it carries:
/// an attacker on the path, whose additions the seal does not cover in header mode.
async fn injecting_proxy(target: SocketAddr, inject: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let text = &buf[..n];
                    let marker = b" HTTP/1.1\r\n";
                    let out = match text.windows(marker.len()).position(|w| w == marker) {
                        Some(i) => {
                            let mut o = text[..i + marker.len()].to_vec();
                            o.extend_from_slice(inject.as_bytes());
                            o.extend_from_slice(&text[i + marker.len()..]);
                            o
                        }
                        None => text.to_vec(),
                    };
                    if sw.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Hop-by-hop headers, the client's own forwarding headers and a made-up session header
/// never reach the upstream, on a plain route or a sealed one.
#[tokio::test]
async fn hop_by_hop_and_spoofed_headers_never_reach_the_upstream() {
    let up = upstream().await;
    let mut policy = RoutePolicy::new();
    policy.add("/public", Route::Plain).unwrap();
    let gw = gateway(&up.url(), policy, UpstreamOptions::default()).await;

    let spoofed = "sessioncert-session: 00000000000000000000000000000000\r\n\
                   x-forwarded-for: 6.6.6.6\r\nx-forwarded-host: evil.example\r\n\
                   x-forwarded-proto: https\r\nforwarded: for=6.6.6.6\r\n\
                   x-forwarded-prefix: /evil\r\n";
    let head = format!(
        "POST /public/form?a=1 HTTP/1.1\r\nhost: public.example\r\nconnection: close, x-hop\r\n\
         x-hop: 1\r\nkeep-alive: timeout=9\r\nte: trailers\r\ntrailer: x-t\r\n\
         upgrade: websocket\r\nproxy-authorization: Basic eDp5\r\nexpect: 100-continue\r\n\
         x-app: kept\r\ncontent-length: 5\r\n{spoofed}\r\n"
    );
    let (status, _, body) = raw(gw.addr, &head, b"hello").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = up.log.last();
    assert_eq!(seen.uri, "/public/form?a=1");
    assert_eq!(&seen.body[..], b"hello");
    let mut names: Vec<&str> = seen.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "content-length",
            "host",
            "x-app",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-host"), Some("public.example"));
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));

    // Sealed, through an attacker who adds the same headers on the wire.
    let proxy = injecting_proxy(gw.addr, spoofed).await;
    let client = sessioncert_client::Client::connect(
        &format!("http://{proxy}"),
        sessioncert_client::Trust::Pin(gw.pin),
    )
    .await
    .unwrap();
    let session = client.session_info().await.unwrap().id.to_string();
    for full in [false, true] {
        let r = client
            .post("/private")
            .full(full)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = up.log.last();
        assert_eq!(seen.uri, "/private");
        assert_eq!(
            header(&seen, SESSION_HEADER),
            Some(session.as_str()),
            "full={full}"
        );
        assert_eq!(seen.headers.get_all(SESSION_HEADER).iter().count(), 1);
        assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
        // The host the request was sealed for (the relay's address), never the
        // attacker's.
        assert_eq!(
            header(&seen, "x-forwarded-host"),
            Some(proxy.to_string().as_str())
        );
        assert!(seen.headers.get("forwarded").is_none());
        assert!(seen.headers.get("x-forwarded-prefix").is_none());
    }
}

/// Server-sent events from the upstream reach the client one by one, sealed, while the
/// upstream is still producing them; and plain, through a plain route.
#[tokio::test]
async fn server_sent_events_arrive_event_by_event() {
    let up = upstream().await;
    let gw = gateway(&up.url(), RoutePolicy::new(), UpstreamOptions::default()).await;
    let client = gw.client().await;
    let interval = Duration::from_millis(300);
    for full in [false, true] {
        let start = Instant::now();
        let r = client
            .get("/sse?n=4&interval_ms=300")
            .full(full)
            .send_streaming()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.is_event_stream());
        let mut events = r.events();
        let mut at = Vec::new();
        while let Some(ev) = events.next().await {
            let ev = ev.unwrap();
            assert_eq!(ev.data, format!("{{\"i\":{}}}", at.len()));
            at.push(start.elapsed());
        }
        assert_eq!(at.len(), 4, "full={full}");
        // The upstream needs 3 intervals for all four; the first arrived long before.
        assert!(at[0] < interval, "full={full}: first event at {:?}", at[0]);
        for w in at.windows(2) {
            assert!(
                w[1] - w[0] > interval / 2,
                "full={full}: events arrived together: {at:?}"
            );
        }
    }

    // Plain, through a plain route: the chunks come as the upstream writes them.
    let mut policy = RoutePolicy::new();
    policy.add("/sse", Route::Plain).unwrap();
    let gw2 = gateway(&up.url(), policy, UpstreamOptions::default()).await;
    let mut s = tokio::net::TcpStream::connect(gw2.addr).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET /sse?n=3&interval_ms=300 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut first_event_at = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if first_event_at.is_none() && String::from_utf8_lossy(&got).contains("{\"i\":0}") {
            first_event_at = Some(start.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("{\"i\":2}"), "{text}");
    assert!(first_event_at.unwrap() < interval, "{first_event_at:?}");
    assert!(start.elapsed() >= interval * 2);
}

/// A streamed upload reaches the upstream while the client is still sending it: the
/// client's stream waits for the upstream to have received the first MiB before it
/// sends the rest, which would never happen if the gateway read the body whole first.
#[tokio::test]
async fn a_big_upload_streams_to_the_upstream_as_it_is_sent() {
    let up = upstream().await;
    let gw = gateway(&up.url(), RoutePolicy::new(), UpstreamOptions::default()).await;
    let client = gw.client().await;
    const PIECE: usize = 64 * 1024;
    const PIECES: usize = 128; // 8 MiB
    let data = |i: usize| Bytes::from(vec![(i % 251) as u8; PIECE]);
    for full in [false, true] {
        up.log.uploaded.store(0, Ordering::SeqCst);
        let uploaded = up.log.uploaded.clone();
        let body = futures_util::stream::unfold(0usize, move |i| {
            let uploaded = uploaded.clone();
            async move {
                if i == PIECES {
                    return None;
                }
                if i == 32 {
                    // Half-way, wait for the upstream to hold the first MiB.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while uploaded.load(Ordering::SeqCst) < (PIECE * 16) as u64 {
                        assert!(
                            Instant::now() < deadline,
                            "the upstream got nothing while the upload was under way"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Some((Ok::<_, std::io::Error>(data(i)), i + 1))
            }
        });
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            client.put("/upload").full(full).body_stream(body).send(),
        )
        .await
        .expect("the upload finished")
        .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        let v: Value = r.json().unwrap();
        assert_eq!(v["bytes"], (PIECE * PIECES) as u64, "full={full}");
        let expected = checksum((0..PIECES).flat_map(|i| data(i).to_vec()));
        assert_eq!(v["sum"], expected, "full={full}");
        // Streamed: no length up front, chunked to the upstream.
        assert_eq!(v["content_length"], Value::Null);
        assert_eq!(v["transfer_encoding"], "chunked");
    }
}

/// A plain upload much larger than the listener's body budget goes through: each
/// piece gives its charge back once it is on its way to the upstream.
#[tokio::test]
async fn a_plain_upload_holds_one_piece_of_the_body_budget() {
    let up = upstream().await;
    let mut policy = RoutePolicy::new();
    policy.add("/upload", Route::Plain).unwrap();
    let gw = gateway_full(
        &up.url(),
        policy,
        UpstreamOptions::default(),
        sessioncert_server::Limits::default(),
        sessioncert_server::listener::ListenerLimits {
            max_inflight_body_bytes: 1 << 20,
            max_inflight_body_per_addr: 1 << 20,
            exempt_loopback: false,
            body_budget_wait: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await;
    let total: usize = 16 << 20;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        format!("PUT /upload HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: {total}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let piece = vec![7u8; 64 * 1024];
    for _ in 0..total / piece.len() {
        s.write_all(&piece).await.unwrap();
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&format!("\"bytes\":{total}")), "{text}");
}

/// No upstream → sealed 502; an upstream that does not answer in time → sealed 504;
/// neither names the upstream's address.
#[tokio::test]
async fn upstream_failures_become_sealed_502_and_504() {
    let port = dead_port();
    let gw = gateway(
        &format!("http://127.0.0.1:{port}"),
        RoutePolicy::new(),
        UpstreamOptions::default(),
    )
    .await;
    let client = gw.client().await;
    for full in [false, true] {
        let r = client
            .post("/anything")
            .full(full)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "full={full}");
        let text = r.text().unwrap();
        assert!(text.contains("bad gateway"), "{text}");
        assert!(!text.contains(&port.to_string()), "{text}");
    }

    let up = upstream().await;
    let gw = gateway(
        &up.url(),
        RoutePolicy::new(),
        UpstreamOptions {
            timeout: Duration::from_millis(300),
            ..UpstreamOptions::default()
        },
    )
    .await;
    let client = gw.client().await;
    for full in [false, true] {
        let start = Instant::now();
        let r = client.get("/slow?ms=3000").full(full).send().await.unwrap();
        assert_eq!(r.status(), 504, "full={full}");
        assert!(start.elapsed() < Duration::from_secs(2));
        let text = r.text().unwrap();
        assert!(text.contains("gateway timeout"), "{text}");
        assert!(!text.contains(&up.addr.port().to_string()), "{text}");
    }
    // A quick answer within the same timeout still goes through.
    let r = client.get("/slow?ms=10").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().unwrap().as_str()),
        (200, "late")
    );
}

/// An upstream body that breaks part-way cuts the sealed stream: the client sees it cut
/// short, never a clean end. One that breaks before a small body is whole is a 502.
#[tokio::test]
async fn an_upstream_body_that_breaks_cuts_the_response() {
    let up = upstream().await;
    let mut policy = RoutePolicy::new();
    policy.add("/plaincut", Route::Plain).unwrap();
    let gw = gateway(&up.url(), policy, UpstreamOptions::default()).await;
    let client = gw.client().await;
    for full in [false, true] {
        let mut r = client
            .get("/cut?len=1048576&sent=200000")
            .full(full)
            .send_streaming()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut got = 0usize;
        let err = loop {
            match r.chunk().await {
                Ok(Some(b)) => got += b.len(),
                Ok(None) => panic!("full={full}: a cut body ended cleanly after {got} bytes"),
                Err(e) => break e,
            }
        };
        assert!(err.is_truncated(), "full={full}: {err}");
        assert!(got <= 200_000, "{got}");

        let r = client
            .get("/cut?len=10000&sent=5000")
            .full(full)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "full={full}");
    }
    // The client's whole-body read fails too.
    assert!(client
        .get("/cut?len=1048576&sent=200000")
        .send()
        .await
        .is_err());
}

/// Plain prefixes pass without the channel, refused ones never reach the upstream, and
/// everything else needs a session.
#[tokio::test]
async fn plain_and_refused_prefixes() {
    let up = upstream().await;
    let mut policy = RoutePolicy::new();
    policy.add("/health", Route::Plain).unwrap();
    policy.add("/admin", Route::Refuse).unwrap();
    policy.add("/health/secret", Route::Sealed).unwrap();
    let gw = gateway(&up.url(), policy, UpstreamOptions::default()).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n");

    let (status, _, body) = raw(gw.addr, &get("/health"), b"").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"/health\""));
    assert_eq!(header(&up.log.last(), SESSION_HEADER), None);
    let (status, _, body) = raw(gw.addr, &get("/health/db?deep=1"), b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let before = up.log.all().len();
    for path in ["/healthz-admin", "/health/secret", "/HEALTH", "/other", "/"] {
        let (status, head, body) = raw(gw.addr, &get(path), b"").await;
        assert_eq!(status, 400, "{path}");
        assert!(
            head.contains("sessioncert-error: malformed"),
            "{path}: {head}"
        );
        assert!(
            String::from_utf8_lossy(&body).contains("sealed requests only"),
            "{path}"
        );
    }
    for path in [
        "/admin",
        "/admin/users",
        "/ADMIN",
        "//admin",
        "/%61dmin",
        "/admin;x",
    ] {
        let (status, _, body) = raw(gw.addr, &get(path), b"").await;
        assert_eq!(status, 404, "{path}: {}", String::from_utf8_lossy(&body));
    }
    for path in [
        "/health/../admin",
        "/health/%2e%2e/admin",
        "/health%2f..%2fadmin",
    ] {
        let (status, _, _) = raw(gw.addr, &get(path), b"").await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(up.log.all().len(), before, "{:?}", up.log.paths());

    // Sealed requests: refused routes answer a sealed 404, plain ones are served
    // sealed, and the protocol's own paths are never forwarded.
    let client = gw.client().await;
    for full in [false, true] {
        let r = client.get("/admin/users").full(full).send().await.unwrap();
        assert_eq!(r.status(), 404, "full={full}");
        let r = client.get("/health").full(full).send().await.unwrap();
        assert_eq!(r.status(), 200, "full={full}");
        assert!(header(&up.log.last(), SESSION_HEADER).is_some());
    }
    let r = client
        .get("/.well-known/sessioncert/config")
        .full(true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .get("/.well-known/sessioncert/nothing")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(up
        .log
        .paths()
        .iter()
        .all(|p| !p.contains("admin") && !p.contains("well-known")));
}

/// `upstream_ready` follows the upstream, through its one-second cache.
#[tokio::test]
async fn readiness_follows_the_upstream() {
    let port = dead_port();
    let gw = gateway(
        &format!("http://127.0.0.1:{port}"),
        RoutePolicy::new(),
        UpstreamOptions::default(),
    )
    .await;
    let e = gw.gateway.upstream_ready().await.unwrap_err();
    assert_eq!(e.to_string(), "the upstream is unreachable");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _up = upstream_on(listener);
    // Cached: still down for up to a second, then up.
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw.gateway.upstream_ready().await.is_err() {
        assert!(Instant::now() < deadline, "still not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Readiness probes are cached: a flood of checks makes about one connection a second.
#[tokio::test]
async fn readiness_probes_do_not_flood_the_upstream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let gw = gateway(
        &format!("http://{addr}"),
        RoutePolicy::new(),
        UpstreamOptions::default(),
    )
    .await;
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let all =
            futures_util::future::join_all((0..50).map(|_| gw.gateway.upstream_ready())).await;
        assert!(all.iter().all(Result::is_ok));
        checks += 50;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        checks > 1000 && (1..=3).contains(&n),
        "{checks} checks, {n} connections"
    );
}

/// A request whose upstream connection dies before the answer is answered 502 and was
/// sent to the upstream once: the gateway never sends a request again.
#[tokio::test]
async fn a_request_reaches_the_upstream_at_most_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let r = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                // Reads the request head and hangs up without answering.
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let gw = gateway(
        &format!("http://{addr}"),
        RoutePolicy::new(),
        UpstreamOptions::default(),
    )
    .await;
    let client = gw.client().await;
    for (i, full) in [false, true].into_iter().enumerate() {
        let r = client
            .post("/pay")
            .full(full)
            .body("once")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(requests.load(Ordering::SeqCst), i + 1, "full={full}");
    }
}
