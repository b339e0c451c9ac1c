//! What the CLI's integration tests share: the binary, a clean command for it, and ports.
// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// The `sessioncert` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sessioncert");

/// `sessioncert` without the caller's `SESSIONCERT_*` settings or `RUST_LOG`, and
/// without colour, so a test sees only the settings it gives.
pub fn sc() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SESSIONCERT_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG").env("NO_COLOR", "1");
    c
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
