//! `sessioncert serve` for operators (issue 12): `/metrics` counting what happened,
//! `/healthz` and `/readyz` (also on `--admin-addr` alone), one access-log line per
//! request without secrets, and a bounded number of refusal lines under a flood. Run as
//! a subprocess, as an operator would.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod common;
use common::{accepts, free_port, sc};

/// A running server; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    admin_port: Option<u16>,
    log: PathBuf,
    data: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// `serve` on a free port (and a free admin port with `admin`), logging at the
    /// default level unless `env` says otherwise.
    fn start(admin: bool, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("serve.log");
        let port = free_port();
        let admin_port = admin.then(free_port);
        let mut c = sc();
        c.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(p) = admin_port {
            c.args(["--admin-addr", &format!("127.0.0.1:{p}")]);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(accepts(port) && admin_port.is_none_or(accepts)) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "server exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            port,
            admin_port,
            log,
            data,
            _dir: dir,
        }
    }

    fn pin(&self) -> String {
        let out = sc()
            .args(["fingerprint", "--data"])
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port `/metrics` and friends are served on.
    fn ops_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.port)
    }

    fn scrape(&self) -> Metrics {
        let (status, body) = http(self.ops_port(), "GET", "/metrics", &[], "");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    fn request(&self, args: &[&str], url: &str) -> Output {
        sc().arg("request")
            .args(["--pin", &self.pin()])
            .args(args)
            .arg(url)
            .output()
            .unwrap()
    }

    fn terminate(&mut self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "no exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection: status and body.
fn http(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    (status, body)
}

/// A scrape: `name{k="v",…}` exactly as rendered, to value.
struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The series `name` with exactly these labels (in any order).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), "}"));
                let rest = rest.trim_end_matches('}');
                let mut have: Vec<&str> = rest.split(',').filter(|p| !p.is_empty()).collect();
                let mut want: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                have.sort_unstable();
                want.sort_unstable();
                n == name && have == want
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

fn moved(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

fn requests(m: &Metrics, mode: &str, outcome: &str) -> f64 {
    m.get(
        "sessioncert_request_duration_seconds_count",
        &[("mode", mode), ("outcome", outcome)],
    )
}

#[test]
fn metrics_count_a_handshake_a_sealed_request_and_a_plain_post() {
    let srv = Server::start(false, &[], &[]);
    let before = srv.scrape();
    let body = r#"{"counted":"by the metrics"}"#;
    let out = srv.request(&["-d", body], &srv.url("/apiTest"));
    assert!(out.status.success(), "{out:?}");
    let (status, _) = http(srv.port, "POST", "/apiTest", &[], "{}");
    assert_eq!(status, 400);
    let text = http(srv.port, "GET", "/metrics", &[], "").1;
    let after = Metrics::parse(&text);

    let hs = "sessioncert_handshakes_total";
    assert_eq!(
        moved(&before, &after, hs, &[("outcome", "answered")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(&before, &after, hs, &[("outcome", "established")]),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "sessioncert_refusals_total",
            &[("code", "malformed"), ("status", "400")]
        ),
        1.0,
        "{text}"
    );
    // The body was opened, the echo (what `request` printed) sealed; the close has none.
    assert_eq!(
        moved(&before, &after, "sessioncert_opened_bytes_total", &[]),
        body.len() as f64
    );
    assert_eq!(
        moved(&before, &after, "sessioncert_sealed_bytes_total", &[]),
        out.stdout.len() as f64
    );
    // Latency histograms: config + hello; the request + its close; the refused POST;
    // the first scrape (the second is counted after it rendered).
    for (mode, outcome, n) in [
        ("handshake", "answered", 2.0),
        ("sealed", "answered", 2.0),
        ("sealed", "refused", 1.0),
        ("plain", "answered", 1.0),
    ] {
        assert_eq!(
            requests(&after, mode, outcome) - requests(&before, mode, outcome),
            n,
            "{mode} {outcome}: {text}"
        );
    }
    assert!(text.contains("sessioncert_request_duration_seconds_bucket{"));
    assert!(text.contains("# HELP sessioncert_refusals_total"));
    // The session was closed by the one-shot request: one tombstone, nothing live.
    assert_eq!(
        after.get("sessioncert_sessions", &[("state", "closed")]),
        1.0
    );
    assert_eq!(
        after.get("sessioncert_sessions", &[("state", "established")]),
        0.0
    );
    assert_eq!(http(srv.port, "GET", "/healthz", &[], "").0, 200);
    assert_eq!(
        http(srv.port, "GET", "/readyz", &[], ""),
        (200, "ready".into())
    );
}

#[test]
fn admin_addr_serves_the_operator_endpoints_alone_and_readyz_turns_503_at_the_stop() {
    let mut srv = Server::start(true, &[], &[]);
    let admin = srv.admin_port.unwrap();
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            http(admin, "GET", path, &[], "").0,
            200,
            "{path} on the admin address"
        );
        assert_eq!(
            http(srv.port, "GET", path, &[], "").0,
            404,
            "{path} on the serving address"
        );
    }
    assert_eq!(http(srv.port, "POST", "/plain/apiTest", &[], "{}").0, 200);
    assert_eq!(http(admin, "POST", "/plain/apiTest", &[], "{}").0, 404);
    assert!(srv.log().contains(&format!("admin_addr=127.0.0.1:{admin}")));

    // A request whose body never comes holds the serving address in its shutdown grace.
    let mut held = TcpStream::connect((Ipv4Addr::LOCALHOST, srv.port)).unwrap();
    held.write_all(b"POST /plain/apiTest HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    srv.terminate();
    let deadline = Instant::now() + Duration::from_secs(4);
    let answer = loop {
        let got = http(admin, "GET", "/readyz", &[], "");
        if got.0 == 503 {
            break got;
        }
        assert_eq!(got.0, 200);
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(answer.1, "not ready: shutting down");
    assert!(srv.wait_exit(Duration::from_secs(20)).success());
    assert!(srv.log().contains("stopped cleanly"), "{}", srv.log());
    drop(held);
}

#[test]
fn a_busy_admin_port_fails_the_start_before_the_data_directory_is_touched() {
    let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = sc()
        .args(["serve", "--addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-addr"), "{err}");
    assert!(!data.exists(), "the data directory was created");
}

/// Text tokens of the data directory's key files (their keys are base64 lines).
fn key_material(srv: &Server) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["identity.key", "storage.key", "handshake.keys"] {
        let text = std::fs::read_to_string(srv.data.join(f)).unwrap();
        for tok in text.split_whitespace().filter(|t| t.len() >= 40) {
            out.push(tok.to_owned());
            out.push(tok[..20].to_owned());
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn one_access_line_per_request_with_its_fields_and_no_secrets() {
    let srv = Server::start(false, &[], &[]);
    let out = srv.request(
        &[
            "-H",
            "authorization: Bearer HEADERSECRET-7f3a",
            "-d",
            r#"{"marker":"BODYMARKER-91c2"}"#,
        ],
        &srv.url("/apiTest?token=QUERYSECRET-55d0"),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("BODYMARKER-91c2"));
    http(
        srv.port,
        "POST",
        "/apiTest",
        &[],
        "{\"marker\":\"BODYMARKER-91c2\"}",
    );
    let listed = sc()
        .args(["sessions", "list", "--all", "--json", "--data"])
        .arg(&srv.data)
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let id = rows[0]["id"].as_str().unwrap().to_owned();

    let log = srv.log();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sessioncert::access"))
        .collect();
    let sealed: Vec<&&str> = access
        .iter()
        .filter(|l| l.contains("path=/apiTest ") && l.contains("status=200"))
        .collect();
    assert_eq!(
        sealed.len(),
        1,
        "one line for the one sealed request:\n{log}"
    );
    let line = sealed[0];
    for field in [
        "INFO",
        "method=POST",
        "peer=127.0.0.1",
        &format!("session={}", &id[..8]),
        "latency_us=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        !line.contains(&id[..9]),
        "only the first 8 characters of the id: {line}"
    );
    for path in [
        "/.well-known/sessioncert/config",
        "/.well-known/sessioncert/handshake",
        "/.well-known/sessioncert/close",
    ] {
        let n = access
            .iter()
            .filter(|l| l.contains(&format!("path={path} ")))
            .count();
        assert_eq!(n, 1, "{path}: {log}");
    }
    let refused = access
        .iter()
        .find(|l| l.contains("status=400"))
        .expect("a line for the refused plain POST");
    assert!(refused.contains("refusal=malformed") && refused.contains("method=POST"));
    for secret in [
        "HEADERSECRET",
        "QUERYSECRET",
        "token=",
        "BODYMARKER",
        "Bearer",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    for key in key_material(&srv) {
        assert!(!log.contains(&key), "key material in the log");
    }
}

/// A legacy Session-Cert request is logged by the id its client sends (`legacy:N`, as
/// `sessions list` shows it), its refusals are counted, and not even at trace level does
/// its key, test string or plaintext reach the log.
#[test]
fn legacy_requests_are_logged_by_their_id_and_their_secrets_never() {
    use sessioncert_legacy::{client, cryptojs};
    let srv = Server::start(false, &["--legacy-session-cert"], &[("RUST_LOG", "trace")]);
    let (st, body) = http(srv.port, "GET", "/sessionCert/publicKey", &[], "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["sessionCert"]["id"].as_u64().unwrap();
    let key = client::new_key().unwrap().to_string();
    let wrapped = client::wrap_key(
        v["sessionCert"]["publicKey"].as_str().unwrap(),
        key.as_bytes(),
    )
    .unwrap();
    let (st, test_body) = http(
        srv.port,
        "POST",
        "/sessionCert/symmetricKey",
        &["content-type: application/json"],
        &serde_json::json!({ "id": id, "symmetricKey": wrapped }).to_string(),
    );
    assert_eq!(st, 201, "{test_body}");
    let test_plain = cryptojs::decrypt(key.as_bytes(), &test_body).unwrap();
    let test_string = serde_json::from_slice::<Value>(&test_plain).unwrap()["testString"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = client::answer_test_string(&test_body, key.as_bytes()).unwrap();
    let header = format!("session-cert-id: {id}");
    let (st, _) = http(
        srv.port,
        "PATCH",
        "/sessionCert/establish",
        &[&header],
        &answer,
    );
    assert_eq!(st, 200);
    let req = cryptojs::encrypt(key.as_bytes(), b"LEGACYMARKER-4b1e").unwrap();
    let (st, resp) = http(srv.port, "POST", "/apiTest", &[&header], &req);
    assert_eq!(st, 200);
    assert!(!resp.contains("LEGACYMARKER"));
    let (st, _) = http(srv.port, "POST", "/apiTest", &[&header], &req);
    assert_eq!(st, 403, "the replay");
    let m = Metrics::parse(&http(srv.port, "GET", "/metrics", &[], "").1);
    assert_eq!(
        m.get(
            "sessioncert_legacy_messages_total",
            &[("outcome", "opened")]
        ),
        1.0
    );
    assert!(
        m.get(
            "sessioncert_legacy_messages_total",
            &[("outcome", "refused")]
        ) >= 1.0
    );
    assert!(
        m.get(
            "sessioncert_refusals_total",
            &[("code", "rejected"), ("status", "403")]
        ) >= 1.0
    );

    let log = srv.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sessioncert::access") && l.contains("path=/apiTest "))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains(&format!("session=legacy:{id}")) && lines[0].contains("status=200"));
    assert!(
        lines[1].contains("status=403") && lines[1].contains("refusal=rejected"),
        "{}",
        lines[1]
    );
    for secret in [
        key.as_str(),
        test_string.as_str(),
        "LEGACYMARKER",
        &wrapped[..40],
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[test]
fn the_access_log_can_be_json_or_silenced() {
    let json = Server::start(false, &["--log-format", "json"], &[]);
    http(json.port, "POST", "/apiTest?q=QUERYSECRET", &[], "{}");
    let log = json.log();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["target"] == "sessioncert::access")
        .unwrap_or_else(|| panic!("no JSON access line:\n{log}"));
    assert_eq!(line["fields"]["status"], 400, "{line}");
    assert_eq!(line["fields"]["refusal"], "malformed", "{line}");
    assert_eq!(line["fields"]["path"], "/apiTest", "{line}");
    assert_eq!(line["fields"]["method"], "POST", "{line}");
    assert!(line["fields"]["latency_us"].is_u64(), "{line}");
    assert!(!log.contains("QUERYSECRET"));

    let quiet = Server::start(false, &[], &[("RUST_LOG", "info,sessioncert::access=off")]);
    http(quiet.port, "POST", "/apiTest", &[], "{}");
    http(quiet.port, "POST", "/plain/apiTest", &[], "{}");
    let log = quiet.log();
    assert!(log.contains("sessioncert serving"), "{log}");
    assert!(!log.contains("sessioncert::access"), "{log}");
}

/// Sends `n` bodiless POSTs to `path` on one connection, pipelined in batches, and
/// returns how many answers had `status` (once all `n` were answered).
fn flood(port: u16, path: &str, n: usize, status: u16) -> usize {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!("POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n");
    let status_line = format!("HTTP/1.1 {status} ");
    let (mut sent, mut answers, mut seen) = (0, 0, 0);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while sent < n {
        let batch = (n - sent).min(200);
        s.write_all(req.repeat(batch).as_bytes()).unwrap();
        sent += batch;
        while answers < sent {
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "the server closed the connection");
            pending.extend_from_slice(&buf[..k]);
            // Count in what ends with a line break: a status line is then whole.
            let Some(end) = pending.windows(2).rposition(|w| w == b"\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            answers += text.matches("HTTP/1.1 ").count();
            seen += text.matches(&status_line).count();
            pending.drain(..end);
        }
    }
    seen
}

#[test]
fn a_flood_of_bad_requests_writes_a_bounded_number_of_log_lines() {
    const N: usize = 10_000;
    let srv = Server::start(false, &[], &[]);
    let before = srv.scrape();
    let start = Instant::now();
    let answered: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| flood(srv.port, "/apiTest", N / 4, 400)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(answered, N, "every bad request was answered 400");

    // Lines for the refusals, and "suppressed" lines counting the rest; the count of
    // the last second is reported by the maintenance loop once it is over.
    let count = |log: &str| {
        let lines = log
            .lines()
            .filter(|l| l.contains("sessioncert::access") && l.contains("refusal=malformed"))
            .count();
        let (summaries, suppressed) = log
            .lines()
            .filter(|l| l.contains("refusal lines suppressed") && l.contains("code=malformed"))
            .map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("suppressed="))
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("a suppressed=K field")
            })
            .fold((0, 0), |(n, sum), k| (n + 1, sum + k));
        (lines, summaries, suppressed)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (lines, summaries, suppressed) = loop {
        let c = count(&srv.log());
        if c.0 + c.2 >= N || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        lines + suppressed,
        N,
        "every refusal is a line or counted in one"
    );
    let windows = secs.ceil() as usize + 2;
    assert!(
        lines <= 10 * windows,
        "{lines} refusal lines for {N} refusals in {secs:.1}s"
    );
    assert!(summaries <= windows + 1, "{summaries} summary lines");
    assert!(
        srv.log().lines().count() < 40 * windows,
        "the whole log stays small"
    );
    // The metrics count every one of them.
    let after = srv.scrape();
    assert_eq!(
        moved(
            &before,
            &after,
            "sessioncert_refusals_total",
            &[("code", "malformed"), ("status", "400")]
        ),
        N as f64
    );
}
