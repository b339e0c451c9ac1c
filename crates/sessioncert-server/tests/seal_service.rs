//! `SealService`: the one open → dispatch → seal path of both modes, the cap on what it
//! reads from a handler, any body types, and readiness forwarded to the inner service.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use sessioncert_proto::full::{FullRequest, FullResponse};
use sessioncert_proto::wire::*;
use sessioncert_proto::ResponseBinding;
use sessioncert_server::{now_ms, Limits, ServerKeys, Timing};
use sessioncert_store::MemoryStore;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer as _, Service, ServiceExt};

const CAP: usize = 4096;

async fn server(routes: axum::Router) -> TestServer {
    TestServer::start_routes(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        Limits {
            max_response_bytes: CAP,
            ..generous()
        },
        Timing::default(),
        Default::default(),
        routes,
    )
    .await
}

fn sized_routes(ran: Arc<AtomicUsize>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(
        "/bytes/{n}",
        get(move |axum::extract::Path(n): axum::extract::Path<usize>| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                vec![b'x'; n]
            }
        }),
    )
}

/// Sends a full-mode request for `GET path` and opens the answer.
async fn full_get(c: &mut RawClient, path: &str) -> (u16, FullResponse) {
    let authority = c.base.trim_start_matches("http://").to_owned();
    let (r, expect) = c
        .send_full(&FullRequest {
            method: "GET".into(),
            scheme: "http".into(),
            authority,
            path: path.into(),
            headers: vec![],
            body: vec![],
        })
        .await;
    let status = r.status().as_u16();
    assert!(r.headers().get(ERROR_HEADER).is_none(), "refused: {status}");
    let body = r.bytes().await.unwrap();
    let plain = c
        .session
        .open_response(&expect, &ResponseBinding::Full, &body)
        .unwrap();
    (status, FullResponse::decode(&plain).unwrap())
}

#[tokio::test]
async fn a_handler_response_over_the_cap_becomes_a_sealed_500_in_both_modes() {
    let ran = Arc::new(AtomicUsize::new(0));
    let s = server(sized_routes(ran.clone())).await;
    // The cap is on buffered responses: a session that negotiated streams is sent a
    // larger answer as a stream instead (tests/streaming.rs).
    let no_streams = sessioncert_proto::ClientOffer {
        streams: false,
        ..Default::default()
    };
    let mut c = RawClient::connect_with(&s.base, s.pin, no_streams).await;

    // Header mode: at the cap it is served; one byte over, the client gets a sealed
    // 500 (the handler did run, so it must not look like a refusal).
    let (status, body) = c.call("GET", &format!("/bytes/{CAP}"), b"").await.unwrap();
    assert_eq!((status, body.len()), (200, CAP));
    let (status, body) = c
        .call("GET", &format!("/bytes/{}", CAP + 1), b"")
        .await
        .unwrap();
    assert_eq!((status, body.len()), (500, 0));

    // Full mode runs the same path.
    let (outer, resp) = full_get(&mut c, &format!("/bytes/{CAP}")).await;
    assert_eq!((outer, resp.status, resp.body.len()), (200, 200, CAP));
    let (outer, resp) = full_get(&mut c, &format!("/bytes/{}", CAP + 1)).await;
    assert_eq!((outer, resp.status, resp.body.len()), (200, 500, 0));

    assert_eq!(
        ran.load(Ordering::SeqCst),
        4,
        "every request ran exactly once"
    );
    s.stop().await;
}

/// An inner service with its own body types and error type, whose readiness the test
/// controls: `Pending` until `ready` is set, an error once when `fail` is set.
#[derive(Clone)]
struct Gate {
    ready: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    /// Calls made on an instance that was never driven ready (a contract breach).
    unready_calls: Arc<AtomicUsize>,
    driven: bool,
}

impl Service<http::Request<axum::body::Body>> for Gate {
    type Response = http::Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::Error::other("backend down")));
        }
        if self.ready.load(Ordering::SeqCst) {
            self.driven = true;
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        if !std::mem::take(&mut self.driven) {
            self.unready_calls.fetch_add(1, Ordering::SeqCst);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if body.as_ref() == b"error" {
                return Err(std::io::Error::other("handler failed"));
            }
            let mut out = body.to_vec();
            out.reverse();
            Ok(http::Response::builder()
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(out)))
                .unwrap())
        })
    }
}

/// The wire request of a sealed header-mode message, with any body type.
fn wire_request(c: &RawClient, s: &Sealed) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(s.method.clone())
        .uri(&s.path)
        .header(SESSION_HEADER, c.session.id().to_string())
        .header(TARGET_HEADER, s.target.as_str())
        .header("content-type", SEALED_CONTENT_TYPE)
        .header(CONTENT_TYPE_HEADER, s.content_type.as_str())
        .body(Full::new(Bytes::from(s.record.clone())))
        .unwrap()
}

/// Opens a response the service returned directly (no HTTP in between).
async fn open_direct(
    c: &mut RawClient,
    s: &Sealed,
    resp: http::Response<axum::body::Body>,
) -> Result<(u16, Vec<u8>), String> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    c.open_parts(s, parts.status.as_u16(), &parts.headers, &body)
}

/// Drives `svc` ready and calls it with the wire form of `sealed` (a `Full<Bytes>` body).
async fn call_ready<S>(
    svc: &mut S,
    c: &RawClient,
    sealed: &Sealed,
) -> http::Response<axum::body::Body>
where
    S: Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<axum::body::Body>,
        Error = std::convert::Infallible,
    >,
{
    let svc = ServiceExt::<http::Request<Full<Bytes>>>::ready(svc)
        .await
        .unwrap();
    svc.call(wire_request(c, sealed)).await.unwrap()
}

#[tokio::test]
async fn seal_service_forwards_readiness_and_takes_any_body_types() {
    let s = server(sized_routes(Arc::new(AtomicUsize::new(0)))).await;
    let mut c = RawClient::connect(&s.base, s.pin).await;
    let gate = Gate {
        ready: Arc::new(AtomicBool::new(false)),
        fail: Arc::new(AtomicBool::new(false)),
        calls: Arc::new(AtomicUsize::new(0)),
        unready_calls: Arc::new(AtomicUsize::new(0)),
        driven: false,
    };
    let mut svc = s.sc.layer().layer(gate.clone());
    type Req = http::Request<Full<Bytes>>;

    // Not ready while the inner service is not.
    assert!(
        ServiceExt::<Req>::ready(&mut svc).now_or_never().is_none(),
        "ready before the inner service"
    );
    gate.ready.store(true, Ordering::SeqCst);

    // Ready now; the call goes to the instance that was driven ready, and a
    // `Full<Bytes>` request body and response body pass through.
    let sealed = c.seal("POST", "/anything", "text/plain", b"abc");
    assert!(
        ServiceExt::<Req>::ready(&mut svc).now_or_never().is_some(),
        "not ready although the inner service is"
    );
    let resp = call_ready(&mut svc, &c, &sealed).await;
    assert_eq!(
        open_direct(&mut c, &sealed, resp).await.unwrap(),
        (200, b"cba".to_vec())
    );

    // A handler error after the request was opened: a sealed 500 (it reached the handler).
    let sealed = c.seal("POST", "/anything", "text/plain", b"error");
    let resp = call_ready(&mut svc, &c, &sealed).await;
    assert_eq!(
        open_direct(&mut c, &sealed, resp).await.unwrap(),
        (500, vec![])
    );

    // The inner service fails readiness: the next call is refused with 503 before its
    // request is opened, so the same record is still good afterwards.
    gate.fail.store(true, Ordering::SeqCst);
    let calls_before = gate.calls.load(Ordering::SeqCst);
    let sealed = c.seal("POST", "/anything", "text/plain", b"later");
    let resp = call_ready(&mut svc, &c, &sealed).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers().get(ERROR_HEADER).unwrap(),
        "unavailable",
        "refused, not executed"
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), calls_before);
    let resp = call_ready(&mut svc, &c, &sealed).await;
    assert_eq!(
        open_direct(&mut c, &sealed, resp).await.unwrap(),
        (200, b"retal".to_vec())
    );

    assert_eq!(
        gate.unready_calls.load(Ordering::SeqCst),
        0,
        "a call reached an inner instance that was not driven ready"
    );
    s.stop().await;
}

/// Sealed answers a peer has not taken yet count against a server-wide budget: while a
/// peer sits on a 24 MiB answer (socket buffers take some MiB of it; the rest is over
/// the 4 MiB budget), new sealed requests are
/// refused `503 unavailable` before they are opened; once it lets go, they run again.
#[tokio::test]
async fn answers_held_by_a_peer_that_does_not_read_are_bounded_by_the_response_budget() {
    use tokio::io::AsyncWriteExt as _;
    const BIG: usize = 24 << 20;
    let ran = Arc::new(AtomicUsize::new(0));
    let s = TestServer::start_routes(
        ServerKeys::ephemeral(now_ms()).unwrap(),
        Arc::new(MemoryStore::new()),
        Limits {
            max_response_bytes: 32 << 20,
            max_inflight_response_bytes: 4 << 20,
            ..generous()
        },
        Timing::default(),
        Default::default(),
        sized_routes(ran.clone()),
    )
    .await;
    // Buffered answers (no streams negotiated) are what the budget holds; a streamed
    // one waits in the handler instead (tests/streaming.rs).
    let no_streams = sessioncert_proto::ClientOffer {
        streams: false,
        ..Default::default()
    };
    let mut holder = RawClient::connect_with(&s.base, s.pin, no_streams).await;
    let sealed = holder.seal("GET", &format!("/bytes/{BIG}"), "", b"");
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /bytes/{BIG} HTTP/1.1\r\nhost: {addr}\r\n{SESSION_HEADER}: {}\r\n\
         {TARGET_HEADER}: {}\r\ncontent-type: {SEALED_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
        holder.session.id(),
        sealed.target,
        sealed.record.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&sealed.record).await.unwrap();
    // The handler ran and its sealed answer waits for a reader that never comes.
    let mut other = RawClient::connect(&s.base, s.pin).await;
    let refused = wait_until(|| ran.load(Ordering::SeqCst) == 1).await;
    assert!(refused, "the big handler never ran");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = other.call("GET", "/bytes/10", b"").await.unwrap_err();
    assert_eq!(err, "503 unavailable", "served while the budget was held");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the refused request ran");
    // A close is still served: it is what settles a client's unknown outcome.
    let mut closer = RawClient::connect(&s.base, s.pin).await;
    let close = closer.seal("POST", CLOSE_PATH, "", b"");
    let r = closer.send_raw(&close).await;
    assert_eq!(closer.open(&close, r).await.map(|r| r.0), Ok(200));
    // The holder hangs up: its answer is dropped and the budget freed.
    drop(sock);
    let mut served = false;
    for _ in 0..50 {
        if other.call("GET", "/bytes/10", b"").await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "still refused after the holder left");
    s.stop().await;
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
