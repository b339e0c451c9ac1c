//! moto's S3-compatible server on 127.0.0.1 for tests (`pip install 'moto[server]'`),
//! started on a free port in 19000-19499 and killed on drop. Shared by this crate's
//! object-store tests and the CLI's broker tests (included by path).
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials the tests give (moto accepts any).
pub const ACCESS_KEY: &str = "TESTACCESSKEYID";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "test-secret-access-key";

/// moto's S3 server on 127.0.0.1, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MOTO_MISSING: &str = "moto's S3 server is needed for this test: pip install 'moto[server]'";

impl Moto {
    pub fn start() -> Moto {
        let log_dir = tempfile::tempdir().unwrap();
        let seed = std::process::id() as usize;
        let mut last_error = String::new();
        for attempt in 0..10 {
            // A spread-out port in the project's 19000-19499 range, free right now.
            let port = 19000 + ((seed.wrapping_mul(7) + attempt * 53) % 500) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let log_path = log_dir.path().join(format!("moto-{port}.log"));
            let mut child = Self::spawn(port, &log_path);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!(
                        "moto_server exited ({status}): {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto {
                        child,
                        port,
                        _log_dir: log_dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "moto_server did not listen within 60 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("could not start moto_server ({last_error}). {MOTO_MISSING}");
    }

    fn spawn(port: u16, log_path: &Path) -> Child {
        let port_arg = port.to_string();
        let log = || std::fs::File::create(log_path).unwrap();
        let mut errors = Vec::new();
        let commands: [(&str, &[&str]); 2] =
            [("moto_server", &[]), ("python3", &["-m", "moto.server"])];
        for (program, prefix) in commands {
            let spawned = Command::new(program)
                .args(prefix)
                .args(["-H", "127.0.0.1", "-p", &port_arg])
                .stdin(Stdio::null())
                .stdout(log())
                .stderr(log())
                .spawn();
            match spawned {
                Ok(mut child) => {
                    // `python3 -m moto.server` without moto exits at once.
                    std::thread::sleep(Duration::from_millis(300));
                    match child.try_wait().unwrap() {
                        Some(status) if program == "python3" && !status.success() => {
                            errors.push(format!(
                                "{program}: {status}: {}",
                                std::fs::read_to_string(log_path).unwrap_or_default()
                            ))
                        }
                        _ => return child,
                    }
                }
                Err(e) => errors.push(format!("{program}: {e}")),
            }
        }
        panic!("{MOTO_MISSING} ({})", errors.join("; "));
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain unsigned HTTP request (moto accepts them): (status, body).
    pub fn request(&self, method: &str, target: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "creating bucket {bucket}: {body}");
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        let (status, body) = self.request("GET", &format!("/{bucket}?uploads"));
        assert_eq!(status, 200, "listing uploads: {body}");
        body.matches("<Upload>").count()
    }
}
