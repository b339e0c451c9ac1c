//! `sessioncert serve` under an unauthenticated flood (issue 11, finding 5), run as a
//! subprocess: memory measured from the server process, honest requests through
//! `sessioncert request`, and the connection-limit flags reaching the listener.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

mod common;
use common::{free_port, sc};

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    data: PathBuf,
    _dir: TempDir,
}

impl Server {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("serve.log");
        let port = free_port();
        let mut c = sc();
        c.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "server exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            addr,
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

    fn rss_kib(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn honest_request(pin: &str, addr: SocketAddr, n: u32) -> Output {
    sc().args([
        "request",
        "--pin",
        pin,
        "-H",
        "content-type: application/json",
        "-d",
        &format!("{{\"honest\":{n}}}"),
        &format!("http://{addr}/apiTest"),
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap()
}

fn random_session_id() -> String {
    sessioncert_proto::SessionId::random().unwrap().to_string()
}

/// One attacker: a made-up session id and a 4 MiB body, fast or 1 KiB every 50 ms.
/// Returns how long until the server closed the connection, and the first line it sent.
fn attack(addr: SocketAddr, slow: bool) -> (Option<Duration>, String) {
    const BODY: usize = 4 << 20;
    static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /apiTest HTTP/1.1\r\nhost: x\r\nsessioncert-id: {}\r\n\
         content-type: application/sessioncert-sealed\r\ncontent-length: {BODY}\r\n\r\n",
        random_session_id()
    );
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = BODY;
        while left > 0 {
            let n = if slow { 1024 } else { CHUNK.len() }.min(left);
            if w.write_all(&CHUNK[..n]).is_err() {
                return;
            }
            left -= n;
            if slow {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break Some(start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None
            }
            Err(_) => break Some(start.elapsed()),
        }
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let line = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    (closed, line)
}

#[test]
fn serve_flood_of_made_up_sessions_stays_under_32mib_and_honest_clients_are_served() {
    let srv = Server::start(&[], &[]);
    let pin = srv.pin();
    // Warm up: the honest path's buffers belong to the baseline.
    for i in 0..3 {
        let out = honest_request(&pin, srv.addr, i);
        assert!(out.status.success(), "{out:?}");
    }
    let base = srv.rss_kib();
    assert!(base > 0, "cannot read the server's RSS");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let pid = srv.child.id();
    let sampler = std::thread::spawn({
        let (stop, peak) = (stop.clone(), peak.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let honest = std::thread::spawn({
        let (stop, pin, addr) = (stop.clone(), pin.clone(), srv.addr);
        move || {
            let mut outs = Vec::new();
            let mut n = 100;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let out = honest_request(&pin, addr, n);
                outs.push((out, t.elapsed()));
            }
            outs
        }
    });
    let attackers: Vec<_> = (0..100)
        .map(|i| {
            let addr = srv.addr;
            std::thread::spawn(move || attack(addr, i % 2 == 1))
        })
        .collect();
    let results: Vec<_> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let outs = honest.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "server RSS {base} KiB, peak growth {growth} KiB, {} honest requests",
        outs.len()
    );
    for (i, (closed, line)) in results.iter().enumerate() {
        let closed = closed.unwrap_or_else(|| panic!("attacker {i} was still held after 15 s"));
        assert!(
            closed < Duration::from_secs(5),
            "attacker {i} held {closed:?}"
        );
        if i % 2 == 1 {
            assert!(line.starts_with("HTTP/1.1 401"), "attacker {i}: {line:?}");
        }
    }
    assert!(!outs.is_empty());
    for (out, took) in &outs {
        assert!(out.status.success(), "honest request failed: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"honest\""));
        assert!(
            *took < Duration::from_secs(5),
            "honest request took {took:?}"
        );
    }
    assert!(growth < 32 * 1024, "server RSS grew by {growth} KiB");
}

/// The client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Sends the HTTP/2 preface; returns the server's SETTINGS_MAX_CONCURRENT_STREAMS if it
/// answered with an HTTP/2 SETTINGS frame, `None` if it did not speak HTTP/2.
fn h2_max_streams(addr: SocketAddr) -> Option<u32> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(H2_PREFACE).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    if head[3] != 4 {
        return None;
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    p.chunks(6)
        .find(|c| c.len() == 6 && u16::from_be_bytes([c[0], c[1]]) == 3)
        .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
}

/// Trickles a request head one byte every 100 ms; returns when the server closed it.
fn slowloris(addr: SocketAddr) -> Duration {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut r = s.try_clone().unwrap();
    let start = Instant::now();
    let w = std::thread::spawn(move || {
        for b in b"GET /.well-known/sessioncert/config HTTP/1.1\r\nhost: slow-slow-slow-slow\r\n" {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    let took = start.elapsed();
    let _ = r.shutdown(std::net::Shutdown::Both);
    let _ = w.join();
    took
}

#[test]
fn serve_is_http1_only_by_default_and_h2c_is_opt_in_with_a_stream_cap() {
    let plain = Server::start(&[], &[]);
    assert_eq!(h2_max_streams(plain.addr), None, "h2c served by default");
    let h2 = Server::start(
        &["--http2-max-streams", "5"],
        &[("SESSIONCERT_HTTP2", "true")],
    );
    assert_eq!(h2_max_streams(h2.addr), Some(5));
}

#[test]
fn serve_header_timeout_flag_and_env_cut_a_slowloris() {
    let by_flag = Server::start(&["--header-timeout", "1s"], &[]);
    let by_env = Server::start(&[], &[("SESSIONCERT_HEADER_TIMEOUT", "1500ms")]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| slowloris(by_flag.addr));
        let b = s.spawn(|| slowloris(by_env.addr));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a >= Duration::from_millis(900) && a < Duration::from_millis(2500),
        "{a:?}"
    );
    assert!(
        b >= Duration::from_millis(1400) && b < Duration::from_millis(3000),
        "{b:?}"
    );
    let log = std::fs::read_to_string(&by_flag.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn serve_per_address_connection_cap_with_limit_loopback() {
    let srv = Server::start(
        &["--max-connections-per-addr", "2", "--limit-loopback"],
        &[],
    );
    // Let the start-up probe's connection go, then hold two that were surely accepted.
    std::thread::sleep(Duration::from_millis(300));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"GET /.well-known/sessioncert/config HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"GET /.well-known/sessioncert/config HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    let r = c.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 429"),
        "{got:?} {r:?} after {:?}",
        t.elapsed()
    );
    assert!(got.contains("sessioncert-error: rate_limited"), "{got}");
}

#[test]
fn serve_refuses_a_body_budget_smaller_than_the_largest_body() {
    let dir = tempfile::tempdir().unwrap();
    let out = sc()
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{}", free_port()),
            "--memory",
            "--max-body",
            "1000000",
            "--max-inflight-body",
            "500000",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-inflight-body"), "{err}");
}
