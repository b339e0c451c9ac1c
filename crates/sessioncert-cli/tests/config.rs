//! `serve --config FILE`, run as a subprocess: precedence (flag > environment > file >
//! default) seen in the start's settings line and in what a running server enforces;
//! bad files refused naming file and setting; the README's example file accepted;
//! negative durations, sizes and numbers refused naming the setting.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::sc;

/// Runs `c` to completion, killing it after 30 s.
fn output(mut c: Command) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start sessioncert");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{c:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A port that is taken while the returned listener lives: `serve` on it logs its
/// settings, then fails to listen, before it touches its data directory.
fn busy_port() -> (TcpListener, String) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// The settings message of a `serve` run's log (text or JSON).
fn settings_line(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("settings: "))
        .unwrap_or_else(|| panic!("no settings line in: {log}"));
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => v["fields"]["message"].as_str().unwrap().to_owned(),
        Err(_) => line.to_owned(),
    }
}

/// `serve` with `args` and `env` on a busy port: the settings line it logged (the start
/// must then fail on the port alone, leaving `data` unwritten).
fn settings_of(dir: &Path, args: &[&OsStr], env: &[(&str, &str)]) -> String {
    let (_held, addr) = busy_port();
    let data = dir.join("never-written");
    let mut c = sc();
    c.current_dir(dir)
        .env("RUST_LOG", "info")
        .arg("serve")
        .args(args)
        .args([
            "--addr".as_ref(),
            addr.as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
        ]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = output(c);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot listen"), "{log}");
    assert!(!data.exists(), "a failed start wrote its data directory");
    settings_line(&log)
}

#[test]
fn a_flag_wins_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        "max-body = \"2KiB\"\nidle_timeout = \"5m\"\nlimit-loopback = true\n",
    )
    .unwrap();
    let config: [&OsStr; 2] = ["--config".as_ref(), file.as_os_str()];
    let env = [("SESSIONCERT_MAX_BODY", "3KiB")];

    let line = settings_of(
        dir.path(),
        &[&config[..], &["--max-body".as_ref(), "4KiB".as_ref()]].concat(),
        &env,
    );
    assert!(line.contains("max-body=4KiB [flag]"), "{line}");
    assert!(line.contains("idle-timeout=5m [file]"), "{line}");
    assert!(line.contains("limit-loopback=true [file]"), "{line}");
    assert!(
        line.contains("session-lifetime=24h,"),
        "a default is untagged: {line}"
    );

    let line = settings_of(dir.path(), &config, &env);
    assert!(line.contains("max-body=3KiB [env]"), "{line}");

    let line = settings_of(dir.path(), &config, &[]);
    assert!(line.contains("max-body=2KiB [file]"), "{line}");
    assert!(line.contains("config="), "the file is named: {line}");

    // A variable that says `false` beats the file's `true`.
    let line = settings_of(
        dir.path(),
        &config,
        &[("SESSIONCERT_LIMIT_LOOPBACK", "false")],
    );
    assert!(line.contains("limit-loopback=false [env]"), "{line}");

    // SESSIONCERT_CONFIG names the file as --config does.
    let line = settings_of(
        dir.path(),
        &[],
        &[("SESSIONCERT_CONFIG", file.to_str().unwrap())],
    );
    assert!(line.contains("max-body=2KiB [file]"), "{line}");
}

/// A running `serve`; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(server: &mut Server, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            panic!(
                "server exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The file alone configures a real server: its address, its data directory and its
/// body limit are the ones in force.
#[test]
fn a_server_runs_with_the_files_settings() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("from-file");
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        format!(
            "addr = \"127.0.0.1:{port}\"\ndata = {:?}\nmax-body = \"2KiB\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut server = Server(
        sc().current_dir(dir.path()) // should the file be ignored, defaults land here
            .args(["serve", "--config"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_listening(&mut server, port, &log);
    let mut pin = String::new();
    let o = output({
        let mut c = sc();
        c.args(["fingerprint", "--data"]).arg(&data);
        c
    });
    assert!(
        o.status.success(),
        "no identity in the file's data directory: {o:?}"
    );
    pin.push_str(String::from_utf8_lossy(&o.stdout).trim());
    let url = format!("http://127.0.0.1:{port}/apiTest");
    let send = |size: usize| {
        let mut c = sc();
        c.args(["request", "--pin", &pin, "-d", &"x".repeat(size), &url]);
        output(c)
    };
    let small = send(1500);
    assert!(small.status.success(), "{small:?}");
    let big = send(3000);
    assert!(
        !big.status.success(),
        "a 3000-byte body passed a 2KiB limit: {big:?}"
    );
    assert!(stderr(&big).contains("413"), "{big:?}");
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        settings_line(&text).contains("max-body=2KiB [file]"),
        "{text}"
    );
}

/// Refused before anything is opened, exit 2, one line naming the file and the setting.
#[test]
fn bad_files_are_refused_naming_the_file_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let file = dir.path().join("bad.toml");
    for (content, expected) in [
        ("max-bdy = \"4MiB\"\n", "bad.toml: max-bdy: unknown setting (did you mean max-body?)"),
        ("max-body = \"4XB\"\n", "bad.toml: max-body: invalid value '4XB' for '--max-body"),
        ("idle-timeout = \"-5s\"\n", "idle-timeout: invalid value '-5s' for '--idle-timeout <IDLE_TIMEOUT>': negative durations are not allowed"),
        ("limit-loopback = 1\n", "bad.toml: limit-loopback: expected true or false"),
        ("config = \"other.toml\"\n", "bad.toml: config: the configuration file cannot name another one"),
        ("max-body = \n", "bad.toml:1:"),
    ] {
        std::fs::write(&file, content).unwrap();
        let o = output({
            let mut c = sc();
            c.args(["serve", "--addr", "127.0.0.1:0", "--data"])
                .arg(&data)
                .arg("--config")
                .arg(&file);
            c
        });
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{content}: {err}");
        assert!(err.contains(expected), "{content}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{content}: {err}");
        assert!(!data.exists(), "{content}: the data directory was written");
    }
    let o = output({
        let mut c = sc();
        c.args(["serve", "--config", "/no/such/dir/serve.toml"]);
        c
    });
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("cannot read configuration file /no/such/dir/serve.toml: No such file"),
        "{o:?}"
    );
}

/// The README's example configuration file is accepted as it stands, every key of it
/// applied from the file.
#[test]
fn the_readmes_example_file_is_accepted() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("README has a ```toml block");
    let block = &readme[start + "```toml\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let table: toml::Table = block.parse().expect("the README's TOML parses");
    assert!(table.len() >= 5, "{table:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessioncert.toml");
    std::fs::write(&file, block).unwrap();
    let line = settings_of(dir.path(), &["--config".as_ref(), file.as_os_str()], &[]);
    let shown: BTreeMap<&str, &str> = line
        .split_once("settings: ")
        .unwrap()
        .1
        .split(", ")
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for (key, value) in &table {
        if key == "addr" || key == "data" {
            continue; // given as flags by settings_of, so they win
        }
        let expected = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let got = shown
            .get(key.as_str())
            .unwrap_or_else(|| panic!("{key} not shown: {line}"));
        let got = got.trim_end_matches(" [file]").trim_matches('"');
        assert!(
            shown[key.as_str()].ends_with(" [file]") && got == expected,
            "{key}: README says {expected}, the server shows {}",
            shown[key.as_str()]
        );
    }
}

/// `-5s`, `-1` reach the setting's parser (not clap's "unexpected argument") and the
/// message names the setting. Every serve flag with a numeric default is tried.
#[test]
fn negative_values_are_refused_naming_the_setting() {
    let help = output({
        let mut c = sc();
        c.args(["serve", "--help"]);
        c
    });
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut numeric: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("--") {
            current = rest.split_whitespace().next().map(|s| format!("--{s}"));
        }
        if let (Some(flag), Some(i)) = (&current, line.find("[default: ")) {
            // 24h, 10s, 4194304, 20: a duration, size or number (not 127.0.0.1:8080).
            let value = &line[i + 10..line[i..].find(']').map_or(line.len(), |j| i + j)];
            let unit = value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
            if value.starts_with(|c: char| c.is_ascii_digit())
                && !value.contains(':')
                && unit.chars().all(|c| c.is_ascii_alphabetic())
            {
                numeric.push(flag.clone());
            }
        }
    }
    assert!(numeric.len() >= 21, "{numeric:?} from {help}");
    let mut cases: Vec<Vec<String>> = numeric
        .iter()
        .map(|f| vec!["serve".into(), f.clone(), "-1".into()])
        .collect();
    for case in [
        &["serve", "--idle-timeout", "-5s"][..],
        &["serve", "--max-body", "-1KiB"],
        &["request", "--max-time", "-1s", "http://127.0.0.1:1/"],
        &[
            "bench",
            "request",
            "--plain",
            "--url",
            "http://127.0.0.1:1/",
            "--duration",
            "-1s",
        ],
        &[
            "bench",
            "handshake",
            "--url",
            "x",
            "--pin",
            "y",
            "--concurrency",
            "-4",
        ],
        &["sessions", "list", "--limit", "-1"],
    ] {
        cases.push(case.iter().map(|s| s.to_string()).collect());
    }
    for case in cases {
        let o = output({
            let mut c = sc();
            c.args(&case).env("SESSIONCERT_DATA", "/nonexistent");
            c
        });
        let err = stderr(&o);
        let flag = case
            .iter()
            .find(|a| a.starts_with("--") && !["--plain", "--url", "--pin"].contains(&a.as_str()))
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{case:?}: {err}");
        assert!(err.contains(&format!("'{flag} <")), "{case:?}: {err}");
        assert!(
            err.contains("negative") && err.contains("not allowed"),
            "{case:?}: {err}"
        );
        assert!(!err.contains("unexpected argument"), "{case:?}: {err}");
    }
}
