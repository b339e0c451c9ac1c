//! `sessioncert gateway` as an operator runs it, as a subprocess in front of a plain
//! upstream (a small axum app in the test): sealed and plain requests by prefix, the
//! configuration file's `[gateway]` table, `/readyz` following the upstream, upstream
//! metrics, a graceful stop that lets an in-flight request finish, and `--store`.

use axum::extract::Request;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod common;
use common::{accepts, free_port, sc};

/// A plain upstream: records every request (method, target, headers, body) and echoes
/// it as JSON; `/slow` answers after 1.5 s.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    fn start() -> Upstream {
        Upstream::start_on(free_port())
    }

    fn start_on(port: u16) -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let headers: serde_json::Map<String, Value> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                    .collect();
                let v = json!({
                    "method": parts.method.as_str(),
                    "uri": parts.uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                log.lock().unwrap().push(v.clone());
                if parts.uri.path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    return "slow answer".into_response();
                }
                axum::Json(v).into_response()
            }
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            port,
            seen,
            _rt: rt,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// A running gateway; killed when dropped.
struct Gateway {
    child: Child,
    port: u16,
    admin_port: Option<u16>,
    log: PathBuf,
    data: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    fn start(upstream: &str, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        let mut c = sc();
        c.args([
            "gateway",
            "--upstream",
            upstream,
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data")
        .arg(&data)
        .args(extra);
        Gateway::spawn(c, dir, data, port, None)
    }

    fn spawn(
        mut c: Command,
        dir: TempDir,
        data: PathBuf,
        port: u16,
        admin_port: Option<u16>,
    ) -> Gateway {
        let log = dir.path().join("gateway.log");
        let child = c
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut g = Gateway {
            child,
            port,
            admin_port,
            log,
            data,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(accepts(port) && admin_port.is_none_or(accepts)) {
            if let Some(st) = g.child.try_wait().unwrap() {
                panic!("gateway exited ({st}): {}", g.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pin(&self) -> String {
        pin_of(&self.data)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn request(&self, args: &[&str], path: &str) -> Output {
        sc().arg("request")
            .args(["--pin", &self.pin()])
            .args(args)
            .arg(self.url(path))
            .output()
            .unwrap()
    }

    fn ops_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.port)
    }

    fn terminate(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
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

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pin_of(data: &Path) -> String {
    let out = sc()
        .args(["fingerprint", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One plain HTTP/1.1 request on its own connection: status and body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sealed by default, plain and refused by prefix; the start line names the upstream.
#[test]
fn the_gateway_forwards_sealed_and_plain_requests_by_prefix() {
    let up = Upstream::start();
    let g = Gateway::start(&up.url(), &["--plain", "/health", "--refuse", "/admin"]);
    let o = g.request(
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"m":"sealed-plaintext"}"#,
        ],
        "/orders/42?x=1",
    );
    assert!(o.status.success(), "{o:?}\n{}", g.log());
    let echoed: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(echoed["uri"], "/orders/42?x=1");
    assert_eq!(echoed["body"], r#"{"m":"sealed-plaintext"}"#);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["headers"]["content-type"], "application/json");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"]["sessioncert-session"].is_string(), "{seen}");

    let (status, body) = http(g.port, "GET", "/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.seen().last().unwrap()["uri"], "/health");
    assert!(up.seen().last().unwrap()["headers"]
        .get("sessioncert-session")
        .is_none());
    let before = up.seen().len();
    let (status, _) = http(g.port, "GET", "/admin/users");
    assert_eq!(status, 404);
    let (status, body) = http(g.port, "GET", "/orders/42");
    assert_eq!(status, 400);
    assert!(body.contains("sealed requests only"), "{body}");
    // Without --admin-addr the operator's endpoints are the gateway's, on this address.
    assert_eq!(http(g.port, "GET", "/healthz"), (200, "ok".to_owned()));
    assert_eq!(http(g.port, "GET", "/readyz"), (200, "ready".to_owned()));
    assert_eq!(
        up.seen().len(),
        before,
        "refused requests reached the upstream"
    );

    let log = g.log();
    let start = log
        .lines()
        .find(|l| l.contains("sessioncert gateway serving"))
        .unwrap_or_else(|| panic!("no start line: {log}"));
    assert!(start.contains(&g.pin()), "{start}");
    assert!(start.contains(&format!("upstream={}", up.url())), "{start}");
    assert!(start.contains("/health=plain"), "{start}");
    assert!(start.contains("/admin=refuse"), "{start}");
}

/// The file's `[gateway]` table and its top-level settings configure a real gateway.
#[test]
fn a_gateway_runs_with_the_files_settings() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let port = free_port();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "addr = \"127.0.0.1:{port}\"\ndata = {:?}\nstore = \"memory:\"\n\n[gateway]\nupstream = \"{}/base\"\nplain = [\"/status\"]\n",
            data.to_str().unwrap(),
            up.url()
        ),
    )
    .unwrap();
    let mut c = sc();
    c.current_dir(dir.path())
        .arg("gateway")
        .arg("--config")
        .arg(&file);
    let g = Gateway::spawn(c, dir, data.clone(), port, None);
    let (status, body) = http(port, "GET", "/status?x=1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.seen().last().unwrap()["uri"], "/base/status?x=1");
    let o = g.request(&["-d", "through the file"], "/echo");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(up.seen().last().unwrap()["uri"], "/base/echo");
    let log = g.log();
    assert!(
        log.contains(&format!("upstream={}/base [file]", up.url())),
        "{log}"
    );
    assert!(log.contains("store=memory: [file]"), "{log}");
    assert!(
        !data.join("sessions.db").exists(),
        "--store memory: wrote a database"
    );
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `/readyz` follows the upstream; `/metrics` counts upstream latency by status class
/// and upstream errors; with --admin-addr the operator's paths on the serving address
/// are the upstream's.
#[test]
fn readiness_and_metrics_follow_the_upstream() {
    let upstream_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, admin) = (free_port(), free_port());
    let mut c = sc();
    c.args([
        "gateway",
        "--upstream",
        &format!("http://127.0.0.1:{upstream_port}"),
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--admin-addr",
        &format!("127.0.0.1:{admin}"),
        "--plain",
        "/healthz",
    ])
    .arg("--data")
    .arg(&data);
    let g = Gateway::spawn(c, dir, data, port, Some(admin));
    let (status, body) = http(admin, "GET", "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: the upstream is unreachable")
    );
    let (status, _) = http(admin, "GET", "/healthz");
    assert_eq!(status, 200);
    let o = g.request(&["--fail", "-d", "x"], "/down");
    assert_eq!(o.status.code(), Some(22), "{o:?}");
    assert!(stderr(&o).contains("502"), "{o:?}");
    let o = g.request(&["-d", "x"], "/down");
    assert!(stdout(&o).contains("bad gateway"), "{o:?}");
    assert!(!stdout(&o).contains(&upstream_port.to_string()), "{o:?}");

    let up = Upstream::start_on(upstream_port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http(admin, "GET", "/readyz");
        if status == 200 {
            assert_eq!(body, "ready");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = g.request(&["-d", "x"], "/up");
    assert!(o.status.success(), "{o:?}");
    // The upstream's own /healthz, plain, on the serving address.
    let (status, _) = http(port, "GET", "/healthz");
    assert_eq!(status, 200);
    assert_eq!(up.seen().last().unwrap()["uri"], "/healthz");

    let (status, text) = http(g.ops_port(), "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        metric(
            &text,
            "sessioncert_gateway_upstream_duration_seconds_count{class=\"2xx\"}"
        ) >= 2.0,
        "{text}"
    );
    assert!(
        text.contains(
            "sessioncert_gateway_upstream_duration_seconds_bucket{class=\"2xx\",le=\"0.001\"}"
        ),
        "buckets, not a summary: {text}"
    );
    assert!(
        metric(
            &text,
            "sessioncert_gateway_upstream_errors_total{kind=\"connect\"}"
        ) >= 1.0,
        "{text}"
    );
}

/// SIGTERM: the gateway stops accepting, the request it is forwarding finishes, and it
/// exits cleanly.
#[test]
fn a_graceful_stop_lets_an_in_flight_request_finish() {
    let up = Upstream::start();
    let mut g = Gateway::start(&up.url(), &[]);
    let pin = g.pin();
    let url = g.url("/slow");
    let request = std::thread::spawn(move || {
        sc().args(["request", "--pin", &pin, &url])
            .output()
            .unwrap()
    });
    // Stopped while the upstream works on the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Instant::now();
    g.terminate();
    let o = request.join().unwrap();
    assert!(o.status.success(), "{o:?}\n{}", g.log());
    assert_eq!(stdout(&o).trim(), "slow answer");
    let st = g.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}: {}", g.log());
    assert!(stop.elapsed() < Duration::from_secs(6));
    assert!(g.log().contains("stopped cleanly"), "{}", g.log());
    assert!(!accepts(g.port));
}

/// `--store`: `memory:` and `sqlite:PATH` run; a Redis or PostgreSQL store that refuses
/// the login stops the start with the store's reason, never the password; nonsense is a
/// usage error.
#[test]
fn the_store_flag() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere.db");
    let g = Gateway::start(&up.url(), &["--store", &format!("sqlite:{}", db.display())]);
    let o = g.request(&["-d", "x"], "/a");
    assert!(o.status.success(), "{o:?}");
    assert!(db.exists(), "the database is where --store said");
    assert!(!g.data.join("sessions.db").exists());
    drop(g);

    // The machine's Redis has no user `app`; its PostgreSQL has no role `app`.
    for (url, shown) in [
        (
            "redis://app:hunter2@127.0.0.1:6379/?prefix=x",
            "--store redis://app:***@127.0.0.1:6379",
        ),
        (
            "postgres://app:hunter2@127.0.0.1/test",
            "--store postgres://app:***@127.0.0.1/test",
        ),
    ] {
        for command in ["serve", "gateway"] {
            let data = dir.path().join(format!("d-{command}"));
            let mut c = sc();
            c.args([command, "--addr", "127.0.0.1:0", "--store", url]);
            if command == "gateway" {
                c.args(["--upstream", &up.url()]);
            }
            let o = c.arg("--data").arg(&data).output().unwrap();
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{command} {url}: {err}");
            assert!(err.contains(shown), "{command}: {err}");
            assert!(!err.contains("hunter2"), "{command}: {err}");
        }
    }
    let o = sc()
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--store",
            "mysql://root:hunter2@db/x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("unknown store"), "{o:?}");
    assert!(!stderr(&o).contains("hunter2"), "{o:?}");
}

/// Without --upstream, or with a bad one, the gateway refuses to start, saying why,
/// before it writes anything.
#[test]
fn the_upstream_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let o = sc()
        .args(["gateway", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("--upstream is required"), "{o:?}");
    // A value clap refuses is a usage error (2); one that may hold a password is refused
    // by the gateway (1), so that no message repeats it.
    for (bad, code) in [
        ("https://127.0.0.1:1", 2),
        ("127.0.0.1:1", 2),
        ("http://u:hunter2@h:1", 1),
    ] {
        let o = sc()
            .args([
                "gateway",
                "--addr",
                "127.0.0.1:0",
                "--upstream",
                bad,
                "--data",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{bad}: {o:?}");
        assert!(stderr(&o).contains("expected http://host:port"), "{o:?}");
        assert!(!stderr(&o).contains("hunter2"), "{o:?}");
    }
    let o = sc()
        .args([
            "gateway",
            "--addr",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
        ])
        .args(["--refuse", "/.well-known/sessioncert/config", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("the protocol's own paths"), "{o:?}");
    assert!(!data.exists(), "a refused start wrote the data directory");
}

/// With --tls-cert the gateway terminates TLS itself and tells the upstream so.
#[test]
fn the_gateway_terminates_tls_and_says_so_upstream() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (ca_pem, cert, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        &key_pem,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let g = Gateway::start(
        &up.url(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let o = sc()
        .args(["request", "--pin", &g.pin(), "--cacert"])
        .arg(&ca_pem)
        .args(["-d", "over tls"])
        .arg(format!("https://127.0.0.1:{}/tls", g.port))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}\n{}", g.log());
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen["body"], "over tls");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert!(g.log().contains("scheme=\"https\""), "{}", g.log());
}
