//! Streamed bodies (PROTOCOL §8.5) against a mock built directly on sessioncert_proto:
//! uploads sealed chunk by chunk as the connection takes them, the one-record fallback,
//! no streams without the negotiation, responses read chunk by chunk, cut short or
//! tampered, and server-sent events yielded one by one.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::BytesMut;
use common::{refuse, sealed_response, Mock, MockOptions, MockState};
use futures_util::{Stream, StreamExt};
use sessioncert_client::{Client, ClientError, Trust};
use sessioncert_proto::record::RECORD_HEADER_LEN;
use sessioncert_proto::stream::{complete_chunk, MAX_CHUNK_LEN};
use sessioncert_proto::{
    wire, ErrorCode, RequestBinding, RequestLine, ResponseBinding, ServerPolicy,
};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What a test shares with its mock's streaming routes.
#[derive(Default)]
struct Lab {
    uploads: Mutex<Vec<Upload>>,
    /// Bytes the client pulled from the test's generator body so far.
    pulled: Arc<AtomicU64>,
    /// `pulled` twice, 300 ms apart, while the mock stopped reading after chunk 0.
    pulled_while_paused: Mutex<Option<(u64, u64)>>,
    /// Whether the upload route pauses after the first chunk.
    pause: std::sync::atomic::AtomicBool,
    /// Permits for the download and event routes to send their next piece.
    gate: Gate,
    /// When the download route sent its last chunk.
    last_sent_at: Mutex<Option<Instant>>,
}

/// A semaphore that starts closed.
struct Gate(Semaphore);

impl Default for Gate {
    fn default() -> Self {
        Gate(Semaphore::new(0))
    }
}

impl std::ops::Deref for Gate {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}

#[derive(Debug, Clone)]
struct Upload {
    record_type: u8,
    bytes: u64,
    sha256: String,
    chunks: u64,
    /// Full mode: the Binary HTTP framing indicator of the plaintext.
    framing: Option<u8>,
    method: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type Frames = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, axum::Error>> + Send>>;

/// Reads from `frames` until `buf` holds `n` bytes; false at the end.
async fn fill(frames: &mut Frames, buf: &mut BytesMut, n: usize) -> bool {
    while buf.len() < n {
        match frames.next().await {
            Some(Ok(b)) => buf.extend_from_slice(&b),
            _ => return false,
        }
    }
    true
}

/// The next whole chunk of a stream body.
async fn next_frame(frames: &mut Frames, buf: &mut BytesMut) -> Option<BytesMut> {
    loop {
        if let Some(n) = complete_chunk(buf).unwrap() {
            return Some(buf.split_to(n));
        }
        match frames.next().await {
            Some(Ok(b)) => buf.extend_from_slice(&b),
            _ => return None,
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The header-mode binding of a request (no covered headers in these tests).
fn with_binding<R>(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    f: impl FnOnce(&RequestBinding<'_>) -> R,
) -> R {
    let target = header(headers, wire::TARGET_HEADER);
    let ct = header(headers, wire::CONTENT_TYPE_HEADER);
    f(&RequestBinding::Header(RequestLine {
        method: method.as_str(),
        target: &target,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        content_type: &ct,
        covered: &[],
    }))
}

const OK_JSON: ResponseBinding<'static> = ResponseBinding::Header {
    status: 200,
    content_type: "application/json",
};

/// `PUT /upload` (header mode) and `POST` full mode: opens a single record or a stream,
/// hashing the body, and answers `{sha256, bytes}` as one record.
async fn upload(st: Arc<MockState>, lab: Arc<Lab>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let full = parts.uri.path() == wire::FULL_PATH;
    let binding_of = |f: &mut dyn FnMut(&RequestBinding<'_>)| {
        if full {
            f(&RequestBinding::Full)
        } else {
            with_binding(&parts.method, &parts.uri, &parts.headers, |b| f(b))
        }
    };
    let mut frames: Frames = Box::pin(body.into_data_stream());
    let mut buf = BytesMut::new();
    if st.with_session(&parts.headers, |_| ()).is_err() {
        // Read the body away first, as the real listener's lingering close does: axum's
        // server would reset the connection under a client still writing, and the
        // refusal would be lost to a broken pipe (a race this test is not about).
        while let Some(Ok(_)) = frames.next().await {}
        return refuse(ErrorCode::UnknownSession);
    }
    if !fill(&mut frames, &mut buf, 1).await {
        return refuse(ErrorCode::Malformed);
    }
    let record_type = buf[0];
    let mut plain = Vec::new(); // full mode only: the Binary HTTP message
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut chunks = 0u64;
    let sealer = if record_type == 0x03 || record_type == 0x04 {
        fill(&mut frames, &mut buf, RECORD_HEADER_LEN).await;
        let head = buf.split_to(RECORD_HEADER_LEN);
        let mut first = next_frame(&mut frames, &mut buf).await.unwrap();
        let mut opened = None;
        binding_of(&mut |b| {
            opened = Some(
                st.with_session(&parts.headers, |s| {
                    s.open_request_stream(b, &head, &mut first)
                })
                .unwrap(),
            )
        });
        let o = match opened.unwrap() {
            Ok(o) => o,
            Err(e) => return refuse(e.code()),
        };
        let mut take = |p: &[u8]| {
            chunks += 1;
            if full {
                plain.extend_from_slice(p);
            } else {
                hasher.update(p);
                bytes += p.len() as u64;
            }
        };
        take(&first[o.first.plaintext.clone()]);
        if lab.pause.load(Ordering::SeqCst) {
            // Stop reading: a client that seals as the connection takes it stops too.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let a = lab.pulled.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let b = lab.pulled.load(Ordering::SeqCst);
            *lab.pulled_while_paused.lock().unwrap() = Some((a, b));
        }
        let mut opener = o.opener;
        while !opener.is_finished() {
            let Some(mut f) = next_frame(&mut frames, &mut buf).await else {
                break;
            };
            match opener.open_chunk(&mut f) {
                Ok(c) => take(&f[c.plaintext]),
                Err(e) => return refuse(e.code()),
            }
        }
        if opener.finish().is_err() || !buf.is_empty() {
            return refuse(ErrorCode::Rejected);
        }
        o.sealer
    } else {
        while frames.next().await.is_some_and(|f| {
            if let Ok(f) = f {
                buf.extend_from_slice(&f)
            }
            true
        }) {}
        let mut opened = None;
        binding_of(&mut |b| {
            opened = Some(
                st.with_session(&parts.headers, |s| s.open_request(b, &buf))
                    .unwrap(),
            )
        });
        let o = match opened.unwrap() {
            Ok(o) => o,
            Err(e) => return refuse(e.code()),
        };
        if full {
            plain = o.plaintext.to_vec();
        } else {
            hasher.update(&o.plaintext);
            bytes = o.plaintext.len() as u64;
        }
        o.sealer
    };
    let (mut framing, mut method) = (None, parts.method.to_string());
    if full {
        framing = plain.first().copied();
        let msg = bhttp::Message::read_bhttp::<_, std::io::Cursor<&[u8]>>(
            &mut std::io::Cursor::new(&plain[..]),
        )
        .unwrap();
        method = String::from_utf8_lossy(msg.control().method().unwrap()).to_string();
        hasher.update(msg.content());
        bytes = msg.content().len() as u64;
    }
    let sha256 = hex(&hasher.finalize());
    lab.uploads.lock().unwrap().push(Upload {
        record_type,
        bytes,
        sha256: sha256.clone(),
        chunks,
        framing,
        method,
    });
    let answer = serde_json::json!({ "sha256": sha256, "bytes": bytes }).to_string();
    let record = if full {
        let resp = sessioncert_proto::full::FullResponse {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: answer.into_bytes(),
        };
        st.with_session(&parts.headers, |s| {
            s.seal_response(sealer, &ResponseBinding::Full, &resp.encode().unwrap())
        })
    } else {
        st.with_session(&parts.headers, |s| {
            s.seal_response(sealer, &OK_JSON, answer.as_bytes())
        })
    };
    match record {
        Ok(Ok(r)) => sealed_response(
            StatusCode::OK,
            if full { "" } else { "application/json" },
            r,
        ),
        _ => refuse(ErrorCode::Internal),
    }
}

/// `GET /download?kind=…` (header or full mode): a streamed response of four chunks,
/// the last sent (for `ok` and `full`) only once the test opens the gate. `kind`: `ok`, `truncate` (no last
/// chunk), `tamper` (chunk 1 altered), `trailing` (bytes after the last chunk), `sse`
/// (three events, each after a permit), `full` (a Binary HTTP response).
async fn download(st: Arc<MockState>, lab: Arc<Lab>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let record = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let full = parts.uri.path() == wire::FULL_PATH;
    let opened = if full {
        st.with_session(&parts.headers, |s| {
            s.open_request(&RequestBinding::Full, &record)
        })
    } else {
        with_binding(&parts.method, &parts.uri, &parts.headers, |b| {
            st.with_session(&parts.headers, |s| s.open_request(b, &record))
        })
    };
    let o = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return refuse(e.code()),
        Err(code) => return refuse(code),
    };
    let kind = if full {
        let req = sessioncert_proto::full::FullRequest::decode(&o.plaintext).unwrap();
        req.path.split("kind=").nth(1).unwrap_or("ok").to_string()
    } else {
        parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("kind="))
            .unwrap_or("ok")
            .to_string()
    };
    let ct = if kind == "sse" {
        "text/event-stream"
    } else {
        "application/octet-stream"
    };
    let binding = if full {
        ResponseBinding::Full
    } else {
        ResponseBinding::Header {
            status: 200,
            content_type: ct,
        }
    };
    let (head, sealer) = st
        .with_session(&parts.headers, |s| {
            s.seal_response_stream(o.sealer, &binding)
        })
        .unwrap()
        .map_err(|_| ())
        .unwrap();
    let mut sealer = Some(sealer);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let send = |b: Vec<u8>| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(b))).await.is_ok() }
        };
        if kind == "sse" {
            let mut out = head;
            for i in 0..3 {
                if i > 0 {
                    lab.gate.acquire().await.unwrap().forget();
                }
                let event = format!(": comment\nevent: tick\ndata: {{\"i\":{i}}}\n\n");
                if i == 2 {
                    let s = sealer.take().unwrap();
                    s.seal_last(event.as_bytes(), &mut out).unwrap();
                    send(std::mem::take(&mut out)).await;
                    return;
                }
                let s = sealer.as_mut().unwrap();
                s.seal_chunk(event.as_bytes(), &mut out).unwrap();
                send(std::mem::take(&mut out)).await;
            }
            return;
        }
        let pieces: Vec<Vec<u8>> = if kind == "full" {
            // An indeterminate-length Binary HTTP response (framing indicator 3), its
            // head in the first chunk and its content chunks after.
            let mut m = bhttp::Message::response(bhttp::StatusCode::try_from(203u16).unwrap());
            m.put_header(b"content-type".to_vec(), b"text/plain".to_vec());
            m.put_header(b"x-inner".to_vec(), b"sealed".to_vec());
            let mut h = Vec::new();
            m.write_bhttp(bhttp::Mode::IndeterminateLength, &mut h)
                .unwrap();
            h.truncate(h.len() - 2);
            let c = |s: &[u8]| {
                let mut v = vec![s.len() as u8];
                v.extend_from_slice(s);
                v
            };
            vec![
                h,
                c(b"alpha "),
                c(b"beta "),
                [c(b"gamma"), vec![0, 0]].concat(),
            ]
        } else {
            vec![
                vec![b'a'; MAX_CHUNK_LEN],
                vec![b'b'; 1000],
                vec![b'c'; 10],
                vec![b'd'; 5],
            ]
        };
        let mut out = head;
        for (i, p) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            if last {
                if kind == "truncate" {
                    return; // the connection ends without a last chunk
                }
                if kind == "ok" || kind == "full" {
                    lab.gate.acquire().await.unwrap().forget();
                }
                *lab.last_sent_at.lock().unwrap() = Some(Instant::now());
                let s = sealer.take().unwrap();
                s.seal_last(p, &mut out).unwrap();
                if kind == "trailing" {
                    out.extend_from_slice(&[1, 0, 0, 0]);
                }
            } else {
                let start = out.len();
                sealer.as_mut().unwrap().seal_chunk(p, &mut out).unwrap();
                if kind == "tamper" && i == 1 {
                    out[start + 5] ^= 1;
                }
            }
            if !send(std::mem::take(&mut out)).await {
                return;
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert("content-type", wire::SEALED_CONTENT_TYPE.parse().unwrap());
    if !full {
        r.headers_mut()
            .insert(wire::CONTENT_TYPE_HEADER, ct.parse().unwrap());
    }
    r
}

async fn start(policy: Option<ServerPolicy>) -> (Mock, Arc<Lab>) {
    let lab = Arc::new(Lab::default());
    let (l1, l2, l3) = (lab.clone(), lab.clone(), lab.clone());
    let routes = Router::new()
        .route(
            "/upload",
            axum::routing::any(move |State(st): State<Arc<MockState>>, req: Request| {
                let lab = l1.clone();
                async move { upload(st, lab, req).await }
            }),
        )
        .route(
            "/download",
            axum::routing::get(move |State(st): State<Arc<MockState>>, req: Request| {
                let lab = l2.clone();
                async move { download(st, lab, req).await }
            }),
        )
        .route(
            wire::FULL_PATH,
            axum::routing::post(move |State(st): State<Arc<MockState>>, req: Request| {
                let lab = l3.clone();
                async move {
                    // Full mode: a streamed record (0x04) is an upload, a single one
                    // (0x02) a download.
                    let (parts, body) = req.into_parts();
                    let mut frames: Frames = Box::pin(body.into_data_stream());
                    let mut buf = BytesMut::new();
                    fill(&mut frames, &mut buf, 1).await;
                    let streamed = buf.first() == Some(&0x04);
                    let again =
                        futures_util::stream::once(async move { Ok(buf.freeze()) }).chain(frames);
                    let req = Request::from_parts(parts, Body::from_stream(again));
                    if streamed {
                        upload(st, lab, req).await
                    } else {
                        download(st, lab, req).await
                    }
                }
            }),
        );
    let mock = Mock::start_with(MockOptions {
        policy,
        routes: Some(routes),
        ..Default::default()
    })
    .await;
    (mock, lab)
}

async fn client(mock: &Mock) -> Client {
    Client::connect(&mock.base, Trust::Pin(mock.state.pin()))
        .await
        .unwrap()
}

/// `total` bytes in 16 KiB pieces, counting what the client pulled; and its SHA-256.
fn generator(
    total: u64,
    pulled: Arc<AtomicU64>,
) -> (
    impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    String,
) {
    const PIECE: u64 = 16 * 1024;
    let piece = |i: u64, n: u64| -> Vec<u8> { (0..n).map(|j| (i * 7 + j) as u8).collect() };
    let mut h = Sha256::new();
    let mut i = 0;
    while i * PIECE < total {
        h.update(piece(i, PIECE.min(total - i * PIECE)));
        i += 1;
    }
    let s = futures_util::stream::unfold(0u64, move |i| {
        let pulled = pulled.clone();
        async move {
            if i * PIECE >= total {
                return None;
            }
            let n = PIECE.min(total - i * PIECE);
            pulled.fetch_add(n, Ordering::SeqCst);
            Some((Ok(Bytes::from(piece(i, n))), i + 1))
        }
    });
    (s, hex(&h.finalize()))
}

#[tokio::test]
async fn a_large_upload_goes_as_a_stream_pulled_as_the_connection_takes_it() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    assert!(
        c.session_info().await.unwrap().streams,
        "streams negotiated"
    );
    lab.pause.store(true, Ordering::SeqCst);
    // Far more than the socket buffers on the way can hold.
    let total = 48 * 1024 * 1024;
    let (body, sha) = generator(total, lab.pulled.clone());
    let r = c.put("/upload").body_stream(body).send().await.unwrap();
    let answer: serde_json::Value = r.json().unwrap();
    assert_eq!(answer["sha256"], sha);
    let up = lab.uploads.lock().unwrap()[0].clone();
    assert_eq!((up.record_type, up.bytes), (0x03, total));
    assert_eq!(up.sha256, sha);
    assert_eq!(up.chunks, total / MAX_CHUNK_LEN as u64, "64 KiB chunks");
    let (a, b) = lab.pulled_while_paused.lock().unwrap().unwrap();
    // While the mock read nothing, the client stopped reading its source: back-pressure,
    // not the whole body in memory.
    assert_eq!(
        a, b,
        "the client kept pulling while the server did not read"
    );
    assert!(a < total / 2, "the client read {a} of {total} bytes ahead");
}

#[tokio::test]
async fn a_small_streamed_body_goes_as_one_record_and_a_file_as_a_stream() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let (body, sha) = generator(MAX_CHUNK_LEN as u64, Arc::default());
    let r = c.put("/upload").body_stream(body).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["sha256"], sha);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let r = c.put("/upload").body_file(&path).send().await.unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["sha256"],
        hex(&Sha256::digest(&data))
    );
    let ups = lab.uploads.lock().unwrap().clone();
    assert_eq!(
        ups.iter().map(|u| u.record_type).collect::<Vec<_>>(),
        [0x01, 0x03]
    );
    assert_eq!(ups[1].bytes, data.len() as u64);
}

#[tokio::test]
async fn without_the_negotiation_no_stream_is_sent() {
    let policy = ServerPolicy {
        streams: false,
        ..Default::default()
    };
    let (mock, lab) = start(Some(policy)).await;
    let c = client(&mock).await;
    assert!(!c.session_info().await.unwrap().streams);
    // buffered (1 MiB < the 4 MiB default) and sent as one record
    let (body, sha) = generator(1 << 20, Arc::default());
    let r = c.put("/upload").body_stream(body).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["sha256"], sha);
    assert_eq!(lab.uploads.lock().unwrap()[0].record_type, 0x01);
    // too large to buffer: a clear error, nothing sent
    let hits = mock.state.protected_hits() + lab.uploads.lock().unwrap().len();
    let (body, _) = generator(5 << 20, Arc::default());
    let e = c.put("/upload").body_stream(body).send().await.unwrap_err();
    assert!(
        matches!(e, ClientError::StreamsNotNegotiated { .. }),
        "{e:?}"
    );
    assert_eq!(
        mock.state.protected_hits() + lab.uploads.lock().unwrap().len(),
        hits
    );

    // a client that does not offer streams gets none either
    let (mock, _) = start(None).await;
    let c = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .streams(false)
        .build()
        .await
        .unwrap();
    assert!(!c.session_info().await.unwrap().streams);
}

#[tokio::test]
async fn a_streamed_response_is_read_chunk_by_chunk() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let mut r = c.get("/download?kind=ok").send_streaming().await.unwrap();
    assert!(r.is_streamed());
    assert_eq!(r.content_type(), Some("application/octet-stream"));
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first chunk came before the last was sent")
        .unwrap()
        .unwrap();
    let got_first_at = Instant::now();
    assert_eq!(first.len(), MAX_CHUNK_LEN);
    assert!(
        lab.last_sent_at.lock().unwrap().is_none(),
        "the mock had not sent its last chunk yet"
    );
    lab.gate.add_permits(1);
    let mut rest = Vec::new();
    while let Some(b) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&b);
    }
    assert!(lab.last_sent_at.lock().unwrap().unwrap() > got_first_at);
    assert_eq!(rest.len(), 1015);
    assert!(rest.starts_with(b"bbb") && rest.ends_with(b"ddddd"));

    // `send` collects a streamed response as one body
    lab.gate.add_permits(1);
    let r = c.get("/download?kind=ok").send().await.unwrap();
    assert_eq!(r.body().len(), MAX_CHUNK_LEN + 1015);
}

async fn read_to_error(r: &mut sessioncert_client::StreamingResponse) -> (usize, ClientError) {
    let mut n = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), r.chunk()).await;
        match next.unwrap_or_else(|_| panic!("stuck after {n} bytes")) {
            Ok(Some(b)) => n += b.len(),
            Ok(None) => panic!("ended cleanly after {n} bytes"),
            Err(e) => {
                // nothing follows an error
                assert!(r.chunk().await.unwrap().is_none());
                return (n, e);
            }
        }
    }
}

#[tokio::test]
async fn a_streamed_response_cut_short_tampered_or_followed_by_bytes_is_an_error() {
    let (mock, _lab) = start(None).await;
    let c = client(&mock).await;
    let mut r = c
        .get("/download?kind=truncate")
        .send_streaming()
        .await
        .unwrap();
    let (n, e) = read_to_error(&mut r).await;
    assert!(e.is_truncated(), "{e:?}");
    assert_eq!(
        n,
        MAX_CHUNK_LEN + 1010,
        "every chunk before the cut was yielded"
    );

    let mut r = c
        .get("/download?kind=tamper")
        .send_streaming()
        .await
        .unwrap();
    let (n, e) = read_to_error(&mut r).await;
    assert!(e.is_bad_seal(), "{e:?}");
    assert_eq!(n, MAX_CHUNK_LEN, "nothing from the tampered chunk on");

    let mut r = c
        .get("/download?kind=trailing")
        .send_streaming()
        .await
        .unwrap();
    let (_, e) = read_to_error(&mut r).await;
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");

    // `send` reports the same instead of a short body
    let e = c.get("/download?kind=truncate").send().await.unwrap_err();
    assert!(e.is_truncated(), "{e:?}");
}

#[tokio::test]
async fn server_sent_events_are_yielded_one_by_one() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let r = c.get("/download?kind=sse").send_streaming().await.unwrap();
    assert!(r.is_event_stream());
    let mut events = r.events();
    for i in 0..3 {
        // The mock sends event i+1 only after this one arrived: events held back
        // until the end would never come.
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("event {i} did not arrive on its own"))
            .unwrap()
            .unwrap();
        assert_eq!(e.event, "tick");
        assert_eq!(e.data, format!("{{\"i\":{i}}}"));
        lab.gate.add_permits(1);
    }
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn full_mode_streams_both_ways_as_binary_http() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let (body, sha) = generator(1 << 20, Arc::default());
    let r = c
        .put("/files/x")
        .full(true)
        .body_stream(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["sha256"], sha);
    let up = lab.uploads.lock().unwrap()[0].clone();
    assert_eq!(
        (up.record_type, up.framing, up.method.as_str()),
        (0x04, Some(2), "PUT")
    );
    assert_eq!(up.bytes, 1 << 20);

    let mut r = c
        .get("/download?kind=full")
        .full(true)
        .send_streaming()
        .await
        .unwrap();
    // status and sealed headers before the content's end was sent
    assert_eq!(r.status().as_u16(), 203);
    assert_eq!(r.headers()["x-inner"], "sealed");
    assert!(r.headers_authenticated());
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(first.as_ref(), b"alpha ");
    assert!(lab.last_sent_at.lock().unwrap().is_none());
    lab.gate.add_permits(1);
    let mut rest = Vec::new();
    while let Some(b) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&b);
    }
    assert_eq!(rest, b"beta gamma");
}

#[tokio::test]
async fn a_streamed_body_is_re_read_from_a_file_but_never_replayed_from_a_stream() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = vec![7u8; 200_000];
    std::fs::write(&path, &data).unwrap();
    // The server forgets the session: the PUT is refused and sent again on a new one.
    mock.state.forget_all_sessions();
    let r = c.put("/upload").body_file(&path).send().await.unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["sha256"],
        hex(&Sha256::digest(&data))
    );
    assert_eq!(lab.uploads.lock().unwrap().len(), 1);
    assert_eq!(mock.state.handshakes(), 2);

    mock.state.forget_all_sessions();
    let (body, _) = generator(200_000, Arc::default());
    let e = c.put("/upload").body_stream(body).send().await.unwrap_err();
    assert!(matches!(e, ClientError::BodyNotReplayable { .. }), "{e:?}");
    assert_eq!(lab.uploads.lock().unwrap().len(), 1, "not executed");
}

#[tokio::test]
async fn a_failing_source_fails_the_upload_and_the_server_sees_no_complete_body() {
    let (mock, lab) = start(None).await;
    let c = client(&mock).await;
    let (good, _) = generator(300_000, Arc::default());
    let failing = good.chain(futures_util::stream::once(async {
        Err(std::io::Error::other("disk on fire"))
    }));
    let e = c
        .put("/upload")
        .body_stream(failing)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Io(io) if io.to_string().contains("disk on fire")),
        "{e:?}"
    );
    assert!(
        lab.uploads.lock().unwrap().is_empty(),
        "a cut stream never completes"
    );
    // and a POST so cut is an unknown outcome (its first chunk went out)
    let (good, _) = generator(300_000, Arc::default());
    let failing = good.chain(futures_util::stream::once(async {
        Err(std::io::Error::other("disk on fire"))
    }));
    let e = c
        .request(Method::POST, "/upload")
        .body_stream(failing)
        .send()
        .await
        .unwrap_err();
    assert!(e.is_outcome_unknown(), "{e:?}");
}
