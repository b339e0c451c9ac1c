//! Operators' metrics (issue 12): what the server records through the `metrics` facade,
//! read back from the Prometheus recorder the `sessioncert` binary installs — counts that
//! move by exactly what happened, refusals made by the listener before any handler,
//! label values from fixed sets only, and readiness.
//!
//! The recorder is process-wide, so the tests here take turns (`SERIAL`) and compare
//! scrapes taken before and after what they do.

mod common;
mod listener_common;

use listener_common::*;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sessioncert_client::{Client, Trust};
use sessioncert_proto::wire::{ERROR_HEADER, SESSION_HEADER};
use sessioncert_proto::SessionId;
use sessioncert_server::listener::{serve, ListenerLimits};
use sessioncert_server::{now_ms, telemetry, Limits, ServerKeys, SessionCert, Timing};
use sessioncert_store::{
    MemoryStore, SessionRecord, SessionStore, SessionSummary, SessionWrite, StoreError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let r = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(telemetry::REQUEST_DURATION.to_owned()),
                telemetry::REQUEST_DURATION_BUCKETS,
            )
            .unwrap()
            .build_recorder();
        let h = r.handle();
        metrics::set_global_recorder(r).unwrap();
        h
    })
}

/// One scrape: series (`name{k=v,…}`, labels sorted) to value.
struct Scrape(HashMap<String, f64>);

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// An exposition line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses one exposition line.
fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => {
            let rest = rest.strip_suffix('}')?;
            let labels = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (n.to_owned(), labels)
        }
        None => (series.to_owned(), Vec::new()),
    };
    Some((name, labels, value))
}

fn scrape() -> (Scrape, String) {
    let text = recorder().render();
    let mut m = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels, value) = parse_line(line).expect(line);
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        m.insert(series_key(&name, &labels), value);
    }
    (Scrape(m), text)
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(&series_key(name, labels))
            .copied()
            .unwrap_or(0.0)
    }
}

/// How much a series moved between two scrapes.
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

fn duration_count(mode: &str, outcome: &str) -> (String, Vec<(&'static str, String)>) {
    (
        format!("{}_count", telemetry::REQUEST_DURATION),
        vec![("mode", mode.to_owned()), ("outcome", outcome.to_owned())],
    )
}

fn moved_requests(before: &Scrape, after: &Scrape, mode: &str, outcome: &str) -> f64 {
    let (name, labels) = duration_count(mode, outcome);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    moved(before, after, &name, &labels)
}

#[tokio::test]
async fn a_handshake_a_sealed_request_and_a_plain_post_move_the_counts_exactly() {
    let _turn = SERIAL.lock().await;
    recorder();
    let mut srv = GuardedServer::start(generous_limits(), ListenerLimits::default()).await;
    let (before, _) = scrape();

    let client = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    let body = br#"{"metrics":"a sealed body of known length"}"#;
    let resp = client
        .post("/apiTest")
        .content_type("application/json")
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer_len = resp.body().len();
    client.close().await.unwrap();
    // A plain POST to a sealed route: refused `malformed`, 400.
    let plain = reqwest::Client::new()
        .post(format!("{}/apiTest", srv.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    srv.sc.manager().publish_gauges();
    let (after, text) = scrape();

    let hs = telemetry::HANDSHAKES;
    assert_eq!(
        moved(&before, &after, hs, &[("outcome", "answered")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(&before, &after, hs, &[("outcome", "established")]),
        1.0
    );
    assert_eq!(moved(&before, &after, hs, &[("outcome", "refused")]), 0.0);
    assert_eq!(
        moved(&before, &after, hs, &[("outcome", "confirmation_refused")]),
        0.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            telemetry::REFUSALS,
            &[("code", "malformed"), ("status", "400")]
        ),
        1.0,
        "{text}"
    );
    // Plaintext bytes: the request body opened; the echo sealed. The close carries none.
    assert_eq!(
        moved(&before, &after, telemetry::OPENED_BYTES, &[]),
        body.len() as f64
    );
    assert_eq!(
        moved(&before, &after, telemetry::SEALED_BYTES, &[]),
        answer_len as f64
    );
    // Latency: configuration + hello; the request and the close; the refused plain POST.
    assert_eq!(
        moved_requests(&before, &after, "handshake", "answered"),
        2.0
    );
    assert_eq!(moved_requests(&before, &after, "sealed", "answered"), 2.0);
    assert_eq!(moved_requests(&before, &after, "sealed", "refused"), 1.0);
    let sum = format!("{}_sum", telemetry::REQUEST_DURATION);
    assert!(
        moved(
            &before,
            &after,
            &sum,
            &[("mode", "sealed"), ("outcome", "answered")]
        ) > 0.0
    );
    // The one session is closed: its tombstone is counted, nothing established.
    assert_eq!(
        after.get(telemetry::SESSIONS, &[("state", "established")]),
        0.0
    );
    assert_eq!(after.get(telemetry::SESSIONS, &[("state", "closed")]), 1.0);
    srv.stop().await;
    srv.sc.shutdown().await.unwrap();
}

/// A raw request on its own connection; what came back before the server closed it.
async fn raw(srv: &GuardedServer, bytes: &[u8], limit: Duration) -> Seen {
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_until_closed(&mut s, limit).await
}

#[tokio::test]
async fn refusals_made_by_the_listener_are_counted_by_code_and_status() {
    let _turn = SERIAL.lock().await;
    recorder();
    let limits = ListenerLimits {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(300),
        body_min_rate: 0,
        max_inflight_body_bytes: 64 * 1024,
        max_inflight_body_per_addr: 64 * 1024,
        max_header_bytes: 8 * 1024,
        ..ListenerLimits::default()
    };
    let server_limits = Limits {
        max_body_bytes: 2048,
        ..generous_limits()
    };
    let mut srv = GuardedServer::start(server_limits, limits).await;
    let (before, _) = scrape();
    let s = Duration::from_secs(3);

    // 431: a head larger than the read buffer, refused by the HTTP layer.
    let big = format!(
        "GET /plain/apiTest HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(raw(&srv, big.as_bytes(), s).await.status(), Some(431));
    // 503: a body larger than the whole body budget.
    let mut huge =
        b"POST /plain/apiTest HTTP/1.1\r\nhost: t\r\ncontent-length: 102400\r\n\r\n".to_vec();
    huge.extend(vec![b'x'; 100 * 1024]);
    let seen = raw(&srv, &huge, s).await;
    assert_eq!(seen.status(), Some(503), "{}", seen.text());
    assert_eq!(seen.header(ERROR_HEADER).as_deref(), Some("unavailable"));
    // 408: a body that stops arriving.
    let slow = b"POST /plain/apiTest HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n0123456789";
    let seen = raw(&srv, slow, s).await;
    assert_eq!(seen.status(), Some(408), "{}", seen.text());
    // A head that never completes: the connection is cut, nothing answered.
    let seen = raw(&srv, b"GET /plain/apiTest HTTP/1.1\r\nhost:", s).await;
    assert!(seen.bytes.is_empty() && seen.closed_after.is_some());
    // 413: a sealed body over max_body_bytes (the session is live, so it is read).
    let client = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap();
    client.post("/apiTest").body("{}").send().await.unwrap();
    let err = client
        .post("/apiTest")
        .body(vec![b'x'; 4096])
        .idempotent(true)
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too_large"), "{err}");

    let (after, text) = scrape();
    let r = telemetry::REFUSALS;
    for (code, status) in [
        ("request_head_too_large", "431"),
        ("unavailable", "503"),
        ("malformed", "408"),
        ("too_large", "413"),
    ] {
        assert_eq!(
            moved(&before, &after, r, &[("code", code), ("status", status)]),
            1.0,
            "{code} {status}: {text}"
        );
    }
    assert_eq!(
        moved(
            &before,
            &after,
            telemetry::CONNECTIONS_CUT,
            &[("reason", "header_timeout")]
        ),
        1.0
    );
    // The guard's 503 and 408 replaced a plain handler's answer: still `plain`, refused.
    assert_eq!(moved_requests(&before, &after, "plain", "refused"), 2.0);
    srv.stop().await;
    srv.sc.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_counted_and_open_ones_gauged() {
    let _turn = SERIAL.lock().await;
    recorder();
    let limits = ListenerLimits {
        max_connections_per_addr: 1,
        exempt_loopback: false,
        ..ListenerLimits::default()
    };
    let mut srv = GuardedServer::start(generous_limits(), limits).await;
    let (before, _) = scrape();
    let mut first = TcpStream::connect(srv.addr).await.unwrap();
    assert!(get_on(&mut first, "/whoami", Duration::from_secs(3))
        .await
        .is_some());
    let (during, _) = scrape();
    assert_eq!(
        moved(&before, &during, telemetry::CONNECTIONS_OPEN, &[]),
        1.0,
        "the open connection is gauged"
    );
    let seen = raw(
        &srv,
        b"GET /whoami HTTP/1.1\r\nhost: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(seen.status(), Some(429), "{}", seen.text());
    drop(first);
    srv.stop().await;
    let (after, _) = scrape();
    assert_eq!(
        moved(
            &before,
            &after,
            telemetry::REFUSALS,
            &[("code", "rate_limited"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(
        moved(&before, &after, telemetry::CONNECTIONS_OPEN, &[]),
        0.0,
        "closed connections leave the gauge"
    );
    srv.sc.shutdown().await.unwrap();
}

#[tokio::test]
async fn label_values_come_from_fixed_sets_whatever_peers_send() {
    let _turn = SERIAL.lock().await;
    recorder();
    let mut srv = GuardedServer::start(generous_limits(), ListenerLimits::default()).await;
    let http = reqwest::Client::new();
    for i in 0..50 {
        let made_up = SessionId::random().unwrap().to_string();
        let requests = [
            http.get(format!("{}/zzpeer-path-{i}?zzpeer-query={i}", srv.base)),
            http.post(format!("{}/apiTest", srv.base))
                .header(SESSION_HEADER, made_up)
                .header("content-type", "application/sessioncert-sealed")
                .header(
                    "sessioncert-target",
                    format!("http://zzpeer-origin-{i}.example"),
                )
                .body("zzpeer-body"),
            http.post(format!("{}/apiTest", srv.base))
                .header(SESSION_HEADER, format!("zzpeer-id-{i}"))
                .header("content-type", format!("zzpeer/type-{i}")),
            http.request(
                reqwest::Method::from_bytes(format!("ZZPEER{i}").as_bytes()).unwrap(),
                format!("{}/.well-known/sessioncert/handshake", srv.base),
            ),
            http.post(format!("{}/.well-known/sessioncert/handshake", srv.base))
                .body(format!("zzpeer-hello-{i}")),
        ];
        for r in requests {
            r.send().await.unwrap();
        }
    }
    srv.sc.manager().publish_gauges();
    let text = recorder().render();
    assert!(
        !text.to_ascii_lowercase().contains("zzpeer"),
        "peer text reached the metrics:\n{text}"
    );
    let codes: Vec<&str> = sessioncert_proto::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(["request_head_too_large", "bad_request_head"])
        .collect();
    let allowed = |k: &str, v: &str| -> bool {
        match k {
            "code" => codes.contains(&v),
            "status" => v == "other" || (v.len() == 3 && v.parse::<u16>().is_ok()),
            "mode" => ["sealed", "full", "handshake", "legacy", "plain"].contains(&v),
            "outcome" => [
                "answered",
                "refused",
                "established",
                "confirmation_refused",
                // Legacy Session-Cert's handshake steps and messages.
                "key_accepted",
                "opened",
            ]
            .contains(&v),
            "state" => ["matching", "established", "closed", "expired"].contains(&v),
            "reason" => ["header_timeout", "write_stall"].contains(&v),
            "direction" => ["request", "response"].contains(&v),
            "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
            _ => false,
        }
    };
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("sessioncert_")) {
        let (_, labels, _) = parse_line(line).unwrap();
        for (k, v) in &labels {
            assert!(
                allowed(k, v),
                "label {k}={v:?} is not from a fixed set: {line}"
            );
            seen += 1;
        }
    }
    assert!(seen > 20, "the scrape had labelled series:\n{text}");
    srv.stop().await;
    srv.sc.shutdown().await.unwrap();
}

/// A memory store whose writes fail while `failing` is set.
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl SessionStore for FlakyStore {
    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.load_live().await
    }
    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Database("disk full (test)".into()));
        }
        self.inner.save(writes).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.load(id).await
    }
    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        self.inner.close(id, now_ms).await
    }
    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        self.inner.load_ended(since_ms).await
    }
    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        self.inner.ended_since(since_ms).await
    }
    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        self.inner.list(live_only).await
    }
    async fn sweep(&self, now: u64, ttl: u64, retain: u64) -> Result<u64, StoreError> {
        self.inner.sweep(now, ttl, retain).await
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
}

#[tokio::test]
async fn readiness_follows_the_store_and_ends_with_shutdown() {
    let _turn = SERIAL.lock().await;
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        failing: AtomicBool::new(false),
    });
    let keys = ServerKeys::ephemeral(now_ms()).unwrap();
    let pin = keys.pin();
    let sc = SessionCert::builder(Arc::new(keys), store.clone())
        .limits(generous_limits())
        .timing(Timing {
            flush_interval: Duration::from_millis(20),
            ..Timing::default()
        })
        .build()
        .await
        .unwrap();
    let app = sc.router(common::sealed_routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, ListenerLimits::default(), async {
        let _ = stopped.await;
    }));
    let m = sc.manager().clone();
    assert!(m.is_ready() && m.store_writable());

    // A new session must be written; the store refuses: not ready (the request still runs).
    store.failing.store(true, Ordering::SeqCst);
    let client = Client::connect(&base, Trust::Pin(pin)).await.unwrap();
    client.post("/apiTest").body("{}").send().await.unwrap();
    assert!(!m.store_writable() && !m.is_ready());
    // The store recovers: the queued session is written at the next flush, ready again.
    store.failing.store(false, Ordering::SeqCst);
    let ready_again = async {
        while !m.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ready_again)
        .await
        .expect("ready again once the store takes writes");

    let _ = stop.send(());
    task.await.unwrap();
    sc.shutdown().await.unwrap();
    assert!(m.is_shutting_down() && !m.is_ready());
}
