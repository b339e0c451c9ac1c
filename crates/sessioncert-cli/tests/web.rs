//! `sessioncert serve` for browsers (issue 14): the served client module and demo page,
//! and CORS with `--cors-origin` (flag, environment, configuration file). Run as a
//! subprocess, spoken to over raw HTTP/1.1 so every header is seen as sent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod common;
use common::{accepts, free_port, sc};

const APP: &str = "http://app.example:8000";
const OTHER: &str = "https://evil.example";

/// The request headers the protocol uses, as a browser lists them in a preflight.
const PROTOCOL_REQUEST_HEADERS: [&str; 7] = [
    "content-type",
    "sessioncert-id",
    "sessioncert-target",
    "sessioncert-content-type",
    "sessioncert-confirm",
    "sessioncert-covered",
    "sessioncert-record",
];
/// Headers of the app's own that a header-mode request carries (and binds, for
/// `authorization`): refused in the preflight, the browser would never send it.
const APP_REQUEST_HEADERS: [&str; 2] = ["authorization", "x-app-version"];
/// The response headers the client must be able to read.
const PROTOCOL_RESPONSE_HEADERS: [&str; 7] = [
    "sessioncert-error",
    "sessioncert-status",
    "sessioncert-content-type",
    "sessioncert-refusal",
    "sessioncert-id",
    "sessioncert-record",
    "retry-after",
];

/// A running server; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("serve.log");
        let port = free_port();
        let mut c = sc();
        c.args([
            "serve",
            "--memory",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(&data)
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !accepts(port) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "server exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            port,
            data,
            log,
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

    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(self.port, method, path, headers, body)
    }

    fn request(&self, args: &[&str], path: &str) -> Output {
        sc().arg("request")
            .args(["--pin", &self.pin()])
            .args(args)
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap()
    }

    fn scrape(&self) -> HashMap<String, f64> {
        let r = self.http("GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        String::from_utf8(r.body)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "server log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    /// Lower-case names; repeated fields joined with ", ".
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The comma-separated list in `name`, lower-cased.
    fn list(&self, name: &str) -> Vec<String> {
        self.header(name)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// One HTTP/1.1 request on its own connection.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers: HashMap<String, String> = HashMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_owned();
        headers
            .entry(k)
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let mut body = out[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

fn preflight(s: &Server, path: &str, origin: &str, method: &str) -> Resp {
    s.http(
        "OPTIONS",
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                &[&PROTOCOL_REQUEST_HEADERS[..], &APP_REQUEST_HEADERS[..]]
                    .concat()
                    .join(","),
            ),
        ],
        b"",
    )
}

/// Every path a cross-origin page calls, with the method it would use.
const CROSS_ORIGIN_CALLS: [(&str, &str); 10] = [
    ("/.well-known/sessioncert/config", "GET"),
    ("/.well-known/sessioncert/handshake", "POST"),
    ("/.well-known/sessioncert/confirm", "POST"),
    ("/.well-known/sessioncert/full", "POST"),
    ("/.well-known/sessioncert/close", "POST"),
    ("/apiTest", "POST"),
    ("/notes/7", "DELETE"),
    ("/files/a.txt", "PUT"),
    ("/no/such/route", "GET"),
    ("/sessioncert.js", "GET"),
];

fn assert_preflight_allowed(r: &Resp, path: &str, method: &str) {
    assert_eq!(r.status, 200, "{path}: {r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(APP),
        "{path}: {r:?}"
    );
    assert!(
        r.header("sessioncert-error").is_none(),
        "{path}: refused: {r:?}"
    );
    assert!(
        r.list("access-control-allow-methods")
            .contains(&method.to_ascii_lowercase()),
        "{path}: {r:?}"
    );
    let allowed = r.list("access-control-allow-headers");
    for h in PROTOCOL_REQUEST_HEADERS.iter().chain(&APP_REQUEST_HEADERS) {
        assert!(
            allowed.iter().any(|a| a == h),
            "{path}: {h} not allowed: {r:?}"
        );
    }
    assert!(
        r.header("access-control-max-age").is_some(),
        "{path}: {r:?}"
    );
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "{path}: {r:?}"
    );
}

/// With `--cors-origin`, the listed origin's preflights to the protocol endpoints, the
/// sealed routes and the module are answered (before sealing: none is refused as
/// unsealed, none counts as a sealed request), its actual requests get
/// `access-control-allow-origin` and the protocol's headers exposed — refusals too, as
/// the client must read `sessioncert-error` — and another origin gets no CORS header.
/// Sealed requests, OPTIONS included, still reach the routes.
#[test]
fn cors_origin_answers_preflights_and_exposes_the_protocol_headers() {
    let s = Server::start(
        &[
            "--cors-origin",
            APP,
            "--cors-origin",
            "https://second.example",
        ],
        &[],
    );
    let before = s.scrape();
    for (path, method) in CROSS_ORIGIN_CALLS {
        assert_preflight_allowed(&preflight(&s, path, APP, method), path, method);
        let r = preflight(&s, path, "https://second.example", method);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://second.example")
        );
        let r = preflight(&s, path, OTHER, method);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path}: {r:?}"
        );
    }
    // Preflights are plain requests to the operator: no sealed request, no refusal.
    let after = s.scrape();
    let sum = |m: &HashMap<String, f64>, f: &dyn Fn(&str) -> bool| -> f64 {
        m.iter().filter(|(k, _)| f(k)).map(|(_, v)| v).sum()
    };
    let sealed = |k: &str| {
        k.starts_with("sessioncert_request_duration_seconds_count") && !k.contains("mode=\"plain\"")
    };
    let refusals = |k: &str| k.starts_with("sessioncert_refusals_total");
    let plain = |k: &str| {
        k.starts_with("sessioncert_request_duration_seconds_count") && k.contains("mode=\"plain\"")
    };
    assert_eq!(sum(&after, &sealed), sum(&before, &sealed), "{after:?}");
    assert_eq!(sum(&after, &refusals), sum(&before, &refusals), "{after:?}");
    assert!(
        sum(&after, &plain) >= sum(&before, &plain) + 30.0,
        "{after:?}"
    );

    // An actual request: a plain POST to a sealed route is refused, and the page may
    // read why.
    let r = s.http(
        "POST",
        "/apiTest",
        &[("origin", APP), ("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("sessioncert-error"), Some("malformed"));
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let exposed = r.list("access-control-expose-headers");
    for h in PROTOCOL_RESPONSE_HEADERS {
        assert!(exposed.iter().any(|e| e == h), "{h} not exposed: {r:?}");
    }
    assert!(r.list("vary").contains(&"origin".to_owned()), "{r:?}");
    let r = s.http("POST", "/apiTest", &[("origin", OTHER)], b"{}");
    assert_eq!(r.status, 400);
    // (tower-http lists the exposed headers whatever the origin; without
    // access-control-allow-origin the browser lets the page read nothing.)
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");

    let r = s.http(
        "GET",
        "/.well-known/sessioncert/config",
        &[("origin", APP)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let r = s.http("GET", "/sessioncert.js", &[("origin", APP)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));

    // Same-origin only: the plain comparison route and the page.
    for (path, method) in [("/plain/apiTest", "POST"), ("/", "GET")] {
        let r = preflight(&s, path, APP, method);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path}: {r:?}"
        );
    }

    // Sealed requests are unchanged, a sealed OPTIONS included: it reaches the sealed
    // routes (the echo's 405, sealed and opened by the client) instead of being
    // answered as a preflight (an unsealed 200 the client would refuse).
    let out = s.request(&["--json", r#"{"cors":1}"#], "/apiTest");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""cors":1"#),
        "{out:?}"
    );
    let out = s.request(&["-i", "-X", "OPTIONS"], "/apiTest");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("HTTP 405") && text.contains("allow: POST"),
        "{out:?}"
    );
}

/// Without `--cors-origin` nothing changes: no CORS header, and an OPTIONS to a sealed
/// route is refused as unsealed like any plain request.
#[test]
fn without_cors_origin_there_are_no_cors_headers() {
    let s = Server::start(&[], &[]);
    let r = preflight(&s, "/apiTest", APP, "POST");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("sessioncert-error"), Some("malformed"));
    assert!(r.header("access-control-allow-origin").is_none());
    let r = s.http(
        "GET",
        "/.well-known/sessioncert/config",
        &[("origin", APP)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

/// `--cors-origin` also comes from `SESSIONCERT_CORS_ORIGINS` (comma-separated) and the
/// configuration file, and every source refuses `*` and non-origins, naming the setting.
#[test]
fn cors_origin_from_env_and_file_and_bad_values_refused() {
    let s = Server::start(
        &[],
        &[(
            "SESSIONCERT_CORS_ORIGINS",
            "https://one.example,http://localhost:5173",
        )],
    );
    for o in ["https://one.example", "http://localhost:5173"] {
        let r = preflight(&s, "/apiTest", o, "POST");
        assert_eq!(r.header("access-control-allow-origin"), Some(o), "{r:?}");
    }
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "cors-origin = [\"https://file.example\"]\n").unwrap();
    let s = Server::start(&["--config", file.to_str().unwrap()], &[]);
    let r = preflight(&s, "/apiTest", "https://file.example", "POST");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://file.example"),
        "{r:?}"
    );
    drop(s);

    let refused = |args: &[&str], env: &[(&str, &str)]| -> String {
        let out = sc()
            .args(["serve", "--memory", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("never"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            !dir.path().join("never").exists(),
            "a refused start created its data directory"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(&["--cors-origin", "*"], &[]);
    assert!(
        e.contains("--cors-origin") && e.contains("`*` is refused"),
        "{e}"
    );
    let e = refused(&["--cors-origin", "https://app.example/"], &[]);
    assert!(e.contains("expected an origin as browsers send it"), "{e}");
    let e = refused(
        &[],
        &[(
            "SESSIONCERT_CORS_ORIGINS",
            "https://ok.example,HTTPS://BAD.example",
        )],
    );
    assert!(e.contains("HTTPS://BAD.example"), "{e}");
    std::fs::write(&file, "cors-origin = \"*\"\n").unwrap();
    let e = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        e.contains("serve.toml: cors-origin:") && e.contains("`*` is refused"),
        "{e}"
    );
}

/// The module and the page are served plain, with their content types, an ETag and
/// `cache-control: no-cache`; the module is the committed `clients/js/dist` build; the
/// page carries a strict CSP and the server's pin.
#[test]
fn serves_the_module_and_the_demo_page() {
    let s = Server::start(&[], &[]);
    // The start line says where the page is.
    let start = format!("demo=http://127.0.0.1:{}/", s.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&s.log).unwrap().contains(&start) {
        assert!(Instant::now() < deadline, "no {start} in the start line");
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/dist");
    for (path, file, ctype) in [
        (
            "/sessioncert.js",
            "sessioncert.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/sessioncert.d.ts",
            "sessioncert.d.ts",
            "application/typescript; charset=utf-8",
        ),
    ] {
        let r = s.http("GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.body, std::fs::read(root.join(file)).unwrap(), "{path}");
        let etag = r.header("etag").unwrap().to_owned();
        let r = s.http("GET", path, &[("if-none-match", &etag)], b"");
        assert_eq!(r.status, 304, "{path}");
        assert!(r.body.is_empty());
        let r = s.http("HEAD", path, &[], b"");
        assert_eq!(r.status, 200);
    }
    let r = s.http("GET", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains(&format!(
        r#"<meta name="sessioncert-pin" content="{}">"#,
        s.pin()
    )));
    for asset in ["/demo/demo.js", "/demo/demo.css", "/demo/icon.svg"] {
        assert!(html.contains(asset), "{asset}");
        assert_eq!(s.http("GET", asset, &[], b"").status, 200, "{asset}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing external"
    );
    let js = String::from_utf8(s.http("GET", "/demo/demo.js", &[], b"").body).unwrap();
    assert!(js.contains(r#"from "/sessioncert.js""#));
    assert!(
        !js.contains("innerHTML"),
        "user text is set as textContent only"
    );
}
