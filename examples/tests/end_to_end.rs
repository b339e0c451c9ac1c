//! Runs the example server and the example client against it, as a newcomer would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The example server; killed when dropped.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The next line the server prints (bounded by the caller's test timeout).
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("server stdout");
        assert!(!line.is_empty(), "the server exited");
        line.trim_end().to_owned()
    }
}

fn client(url: &str, pin: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args([url, pin])
        .output()
        .expect("cannot run the example client")
}

/// A plain HTTP/1.1 request: status code and body.
fn plain(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[test]
fn the_example_client_talks_to_the_example_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("127.0.0.1:0")
        .arg(&data)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start the example server");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut server = Server { child, stdout };

    let url = server.line();
    let url = url
        .strip_prefix("example server on ")
        .expect(&url)
        .to_owned();
    let pin = server.line();
    let pin = pin.strip_prefix("pin: ").expect(&pin).to_owned();
    let hint = server.line();
    assert_eq!(
        hint,
        format!("try: cargo run -p sessioncert-examples --bin client -- {url} {pin}")
    );
    assert!(data.join("sessions.db").exists());

    let out = client(&url, &pin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("GET /hello/newcomer -> 200 OK: hello newcomer, over session "),
        "{text}"
    );
    assert!(
        text.contains(
            r#"POST /orders -> 200 OK: {"item":"coffee","quantity":2,"total_cents":700}"#
        ),
        "{text}"
    );

    // The routes of the API are sealed: a plain request is refused, the health check
    // merged outside is not.
    let addr = url.trim_start_matches("http://");
    let (status, _) = plain(addr, "POST", "/orders");
    assert_eq!(status, 400);
    assert_eq!(plain(addr, "GET", "/healthz"), (200, "ok".to_owned()));

    // Another server's pin: refused before any request is sent.
    let other = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = client(&url, other);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the pin"),
        "{out:?}"
    );

    // Ctrl-C: a clean stop.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(server.line(), "stopped cleanly");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            assert!(st.success(), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}
