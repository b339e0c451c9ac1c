//! HTTPS end to end with the `sessioncert` binary: through a TLS-terminating reverse
//! proxy (a tokio-rustls forwarder, as a CDN or load balancer) in front of plain
//! `serve`, and with `serve --tls-cert/--tls-key` terminating TLS itself. Certificates
//! come from a test CA made with rcgen; `--cacert` and `-k` decide what is trusted, and
//! `-k` never relaxes the pin.

use serde_json::Value;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod common;
use common::{free_port, sc};

const CMD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn ok(&self) -> &str {
        assert!(self.status.success(), "command failed: {self:#?}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Out {
    let mut c = sc();
    c.args(args);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start sessioncert");
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// `sessioncert request --pin PIN ARGS… URL`.
fn request(pin: &str, args: &[&str], url: &str) -> Out {
    let mut all = vec!["request", "--pin", pin];
    all.extend_from_slice(args);
    all.push(url);
    run(&all)
}

fn fingerprint(data: &Path) -> String {
    run(&["fingerprint".as_ref(), "--data".as_ref(), data.as_os_str()])
        .ok()
        .trim()
        .to_string()
}

fn sessions(data: &Path) -> Vec<Value> {
    let out = run(&[
        "sessions".as_ref(),
        "list".as_ref(),
        "--all".as_ref(),
        "--json".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    match out.json() {
        Value::Array(v) => v,
        other => panic!("not an array: {other}"),
    }
}

fn assert_echo(out: &Out, sent: &Value) {
    let v = out.json();
    assert_eq!(v["status"], true, "{v}");
    assert_eq!(&v["requestData"], sent, "{v}");
}

// ---------------------------------------------------------------------------------------
// Certificates, servers, the proxy
// ---------------------------------------------------------------------------------------

/// A test CA and a server certificate it issued for localhost and 127.0.0.1, as files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sessioncert test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.cert, leaf.pem()).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&p.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

fn subdir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `sessioncert serve`; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, log: &Path, extra: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Server {
        let port = free_port();
        let mut c = sc();
        c.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut s = Server {
            child: c.spawn().unwrap(),
            port,
            log: log.to_owned(),
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("server exited ({st}): {}", s.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS-terminating TCP forwarder on 127.0.0.1 in front of 127.0.0.1:`upstream`:
/// decrypts and forwards the bytes unchanged (the Host header too). Counts the TLS
/// connections it accepted. Stops when dropped.
struct TlsProxy {
    port: u16,
    tls_connections: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

fn tls_proxy(upstream: u16, p: &Pki) -> TlsProxy {
    let config = sessioncert_server::listener::server_config_from_pem_files(&p.cert, &p.key)
        .expect("proxy certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls_connections = Arc::new(AtomicUsize::new(0));
    let count = tls_connections.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    TlsProxy {
        port,
        tls_connections,
        _runtime: runtime,
    }
}

/// A plain server and a TLS proxy in front of it.
struct Proxied {
    dir: TempDir,
    pki: Pki,
    data: PathBuf,
    pin: String,
    proxy: TlsProxy,
    server: Server,
}

fn proxied() -> Proxied {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&data, &dir.path().join("serve.log"), &[], &[]);
    let pin = fingerprint(&data);
    let proxy = tls_proxy(server.port, &pki);
    Proxied {
        dir,
        pki,
        data,
        pin,
        proxy,
        server,
    }
}

impl Proxied {
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.proxy.port)
    }

    fn ca(&self) -> &str {
        self.pki.ca.to_str().unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// The whole flow through a TLS-terminating reverse proxy: handshake, sealed POST,
/// the session kept in a file and reused, a one-shot request whose session is closed.
#[test]
fn the_whole_flow_runs_through_a_tls_terminating_proxy() {
    let f = proxied();
    let session = f.dir.path().join("session.json");
    let session = session.to_str().unwrap();
    let url = f.url("localhost", "/apiTest");
    let json = ["-H", "content-type: application/json"];
    let ca = ["--cacert", f.ca()];

    let sent = serde_json::json!({"over": "tls", "n": 1});
    let body = sent.to_string();
    let mut args = vec!["--session", session, "-d", &body];
    args.extend(json);
    args.extend(ca);
    assert_echo(&request(&f.pin, &args, &url), &sent);
    let first: Value = serde_json::from_slice(&std::fs::read(session).unwrap()).unwrap();
    let id = first["session_id"].as_str().unwrap().to_owned();

    let sent = serde_json::json!({"over": "tls", "n": 2});
    let body = sent.to_string();
    let mut args = vec!["--session", session, "-d", &body];
    args.extend(json);
    args.extend(ca);
    assert_echo(&request(&f.pin, &args, &url), &sent);
    let second: Value = serde_json::from_slice(&std::fs::read(session).unwrap()).unwrap();
    assert_eq!(
        second["session_id"],
        id.as_str(),
        "the session was not reused"
    );

    // A one-shot request (through 127.0.0.1 this time) closes its session at exit.
    let sent = serde_json::json!({"one": "shot"});
    let body = sent.to_string();
    let mut args = vec!["-d", &body];
    args.extend(json);
    args.extend(ca);
    assert_echo(
        &request(&f.pin, &args, &f.url("127.0.0.1", "/apiTest")),
        &sent,
    );

    // The server saves sessions in the background: wait for what it has saved.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = sessions(&f.data);
        let kept = rows.iter().find(|r| r["id"] == id.as_str());
        let other = rows.iter().find(|r| r["id"] != id.as_str());
        let done = rows.len() == 2
            && kept.is_some_and(|k| k["state"] == "established" && k["request_count"] == 2)
            && other.is_some_and(|o| o["state"] == "closed");
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(f.proxy.tls_connections.load(Ordering::SeqCst) >= 3);
}

#[test]
fn an_unknown_ca_is_refused_without_cacert_or_k_and_accepted_with_either() {
    let f = proxied();
    let url = f.url("localhost", "/apiTest");
    let out = request(&f.pin, &["-d", "{}"], &url);
    assert_eq!(out.code(), Some(7), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(
        lines[0].starts_with(
            "sessioncert: TLS: certificate for localhost not trusted (unknown issuer); pass --cacert FILE"
        ),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("-k"), "{}", lines[0]);
    let ca = f.ca();
    for trust in [&["--cacert", ca][..], &["-k"], &["--insecure"]] {
        let mut args = trust.to_vec();
        args.extend(["-H", "content-type: application/json", "-d", r#"{"t":1}"#]);
        assert_echo(&request(&f.pin, &args, &url), &serde_json::json!({"t": 1}));
    }
    // --cacert is repeatable: another CA beside the right one.
    let other = pki(&subdir(f.dir.path(), "other"));
    let out = request(
        &f.pin,
        &["--cacert", other.ca.to_str().unwrap(), "--cacert", ca],
        &f.url("localhost", "/notes"),
    );
    assert_eq!(out.ok().trim_start().chars().next(), Some('['), "{out:#?}");
    // Only the other CA: refused.
    let out = request(&f.pin, &["--cacert", other.ca.to_str().unwrap()], &url);
    assert_eq!(out.code(), Some(7), "{out:#?}");
}

#[test]
fn insecure_tls_never_relaxes_the_pin() {
    let f = proxied();
    let wrong = {
        let d = f.dir.path().join("other-id");
        run(&["keygen".as_ref(), "--out".as_ref(), d.as_os_str()]).ok();
        fingerprint(&d)
    };
    let out = request(&wrong, &["-k", "-d", "{}"], &f.url("localhost", "/apiTest"));
    assert_eq!(out.code(), Some(3), "{out:#?}");
    assert!(out.stderr.contains("identity"), "{out:#?}");
    let out = run(&[
        "bench",
        "handshake",
        "-k",
        "--url",
        &f.url("localhost", "/"),
        "--pin",
        &wrong,
        "--duration",
        "1s",
        "--json",
    ]);
    // bench fails (1) when anything failed; every handshake was refused for the pin.
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("server identity not trusted"),
        "{out:#?}"
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["count"], 0, "{v}");
    assert!(sessions(&f.data).is_empty());
}

#[test]
fn serve_terminates_tls_itself_from_flags_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    for via_env in [false, true] {
        let data = dir.path().join(format!("data-{via_env}"));
        let log = dir.path().join(format!("serve-{via_env}.log"));
        let server = if via_env {
            Server::start(
                &data,
                &log,
                &[],
                &[
                    ("SESSIONCERT_TLS_CERT", &p.cert),
                    ("SESSIONCERT_TLS_KEY", &p.key),
                ],
            )
        } else {
            Server::start(
                &data,
                &log,
                &[
                    "--tls-cert".as_ref(),
                    p.cert.as_os_str(),
                    "--tls-key".as_ref(),
                    p.key.as_os_str(),
                ],
                &[],
            )
        };
        assert!(
            server.log().contains("scheme=\"https\""),
            "{}",
            server.log()
        );
        let pin = fingerprint(&data);
        let url = format!("https://localhost:{}/apiTest", server.port);
        let ca = p.ca.to_str().unwrap();
        let out = request(
            &pin,
            &[
                "--cacert",
                ca,
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"direct":true}"#,
            ],
            &url,
        );
        assert_echo(&out, &serde_json::json!({"direct": true}));
        // Without the CA the certificate is refused; plain HTTP gets no answer it accepts.
        assert_eq!(request(&pin, &["-d", "{}"], &url).code(), Some(7));
        let plain = format!("http://127.0.0.1:{}/apiTest", server.port);
        assert!(!request(&pin, &["-d", "{}"], &plain).status.success());
    }
}

#[test]
fn bench_speaks_https_with_cacert() {
    let f = proxied();
    let ca = f.ca();
    let common = ["--duration", "1s", "--concurrency", "2", "--json"];
    let hs = f.url("localhost", "/");
    let mut args = vec![
        "bench",
        "handshake",
        "--cacert",
        ca,
        "--url",
        &hs,
        "--pin",
        &f.pin,
    ];
    args.extend(common);
    let v = run(&args).json();
    assert!(v["handshakes_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");

    let sealed = f.url("localhost", "/apiTest");
    let mut args = vec![
        "bench", "request", "--cacert", ca, "--url", &sealed, "--pin", &f.pin,
    ];
    args.extend(common);
    let v = run(&args).json();
    assert!(v["requests_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");

    let plain = f.url("localhost", "/plain/apiTest");
    let mut args = vec!["bench", "request", "-k", "--url", &plain, "--plain"];
    args.extend(common);
    let v = run(&args).json();
    assert_eq!(v["errors"], 0, "{v}");

    // Without trust, plain mode counts every failure as a TLS one and exits 1.
    let mut args = vec!["bench", "request", "--url", &plain, "--plain"];
    args.extend(common);
    let out = run(&args);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["count"], 0, "{v}");
    let kinds = v["errors_by_kind"].as_object().unwrap();
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["tls"], "{v}");
    // So do sealed handshakes; a sealed request bench cannot even start: exit 7.
    let mut args = vec!["bench", "handshake", "--url", &hs, "--pin", &f.pin];
    args.extend(common);
    let out = run(&args);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds = v["errors_by_kind"].as_object().unwrap();
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["tls"], "{v}");
    let mut args = vec!["bench", "request", "--url", &sealed, "--pin", &f.pin];
    args.extend(common);
    let out = run(&args);
    assert_eq!(out.code(), Some(7), "{out:#?}");
    assert!(
        out.stderr.contains("not trusted (unknown issuer)"),
        "{out:#?}"
    );
}

#[test]
fn a_cacert_that_cannot_be_used_is_an_error_naming_the_file() {
    let f = proxied();
    let url = f.url("localhost", "/apiTest");
    let missing = f.dir.path().join("missing.pem");
    let not_pem = f.dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (file, why) in [
        (&missing, "cannot read it"),
        (&not_pem, "no PEM certificate"),
    ] {
        let file = file.to_str().unwrap();
        for out in [
            request(&f.pin, &["--cacert", file], &url),
            run(&[
                "bench",
                "handshake",
                "--cacert",
                file,
                "--url",
                &url,
                "--pin",
                &f.pin,
            ]),
        ] {
            assert_eq!(out.code(), Some(1), "{out:#?}");
            assert!(out.stderr.contains(file), "{out:#?}");
            assert!(out.stderr.contains(why), "{out:#?}");
        }
    }
    assert_eq!(f.proxy.tls_connections.load(Ordering::SeqCst), 0);
}

#[test]
fn serve_refuses_unusable_tls_files_before_touching_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let other = pki(&subdir(dir.path(), "other"));
    let missing = dir.path().join("missing.pem");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let half_config = dir.path().join("half.toml");
    std::fs::write(&half_config, format!("tls-cert = {:?}\n", s(&p.cert))).unwrap();
    let open_key = dir.path().join("open-key.pem");
    std::fs::copy(&p.key, &open_key).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        &open_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let cases: Vec<(Vec<String>, Option<i32>, String)> = vec![
        (
            vec![
                "--tls-cert".into(),
                s(&missing),
                "--tls-key".into(),
                s(&p.key),
            ],
            Some(1),
            s(&missing),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&p.key),
                "--tls-key".into(),
                s(&p.key),
            ],
            Some(1),
            format!("{}: no PEM certificate", s(&p.key)),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&p.cert),
                "--tls-key".into(),
                s(&p.cert),
            ],
            Some(1),
            format!("{}: no PEM private key", s(&p.cert)),
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&p.cert),
                "--tls-key".into(),
                s(&other.key),
            ],
            Some(1),
            s(&other.key),
        ),
        // Both or neither, whatever the source: half a TLS setting never starts plain
        // HTTP (a value from the configuration file included).
        (
            vec!["--tls-cert".into(), s(&p.cert)],
            Some(1),
            "--tls-key is not".into(),
        ),
        (
            vec!["--tls-key".into(), s(&p.key)],
            Some(1),
            "--tls-cert is not".into(),
        ),
        (
            vec!["--config".into(), s(&half_config)],
            Some(1),
            "--tls-key is not".into(),
        ),
        // A private key others may read is refused, like the server's own key files.
        (
            vec![
                "--tls-cert".into(),
                s(&p.cert),
                "--tls-key".into(),
                s(&open_key),
            ],
            Some(1),
            "too open".into(),
        ),
    ];
    for (i, (args, code, names)) in cases.into_iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        let port = free_port();
        let mut all = vec![
            "serve".to_owned(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--data".into(),
            s(&data),
        ];
        all.extend(args.clone());
        let out = run(&all);
        assert_eq!(out.code(), code, "{args:?}: {out:#?}");
        assert!(out.stderr.contains(&names), "{args:?}: {out:#?}");
        assert!(!data.exists(), "{args:?} created the data directory");
    }
}

/// On a system without CA certificates (a minimal container) plain http:// works as
/// before, a CA given with --cacert is enough for https://, and without one an https://
/// server is refused as not trusted. rustls-native-certs reads SSL_CERT_FILE/SSL_CERT_DIR
/// instead of the system's store when they are set: here an empty file and directory.
#[test]
fn without_system_ca_certificates_http_works_and_https_needs_cacert() {
    let f = proxied();
    let empty_file = f.dir.path().join("no-certs.pem");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = subdir(f.dir.path(), "no-certs");
    let request_without_roots = |args: &[&str], url: &str| {
        let mut c = sc();
        c.args(["request", "--pin", &f.pin])
            .args(args)
            .arg(url)
            .env("SSL_CERT_FILE", &empty_file)
            .env("SSL_CERT_DIR", &empty_dir)
            .stdin(Stdio::null());
        let o = c.output().unwrap();
        Out {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    let plain = format!("http://127.0.0.1:{}/notes", f.server.port);
    assert!(request_without_roots(&[], &plain).ok().starts_with('['));
    let https = f.url("localhost", "/notes");
    assert!(request_without_roots(&["--cacert", f.ca()], &https)
        .ok()
        .starts_with('['));
    let out = request_without_roots(&[], &https);
    assert_eq!(out.code(), Some(7), "{out:#?}");
    assert!(
        out.stderr.contains("not trusted (unknown issuer)"),
        "{out:#?}"
    );
}
