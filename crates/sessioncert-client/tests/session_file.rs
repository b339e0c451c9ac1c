//! Session files: save, load, continue; refuse files for another server.

mod common;

use common::{capture_logs, Mock};
use serde_json::Value;
use sessioncert_client::{Client, ClientError, Pin, Trust};
use sessioncert_proto::IdentityKey;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt as _;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn session_file_round_trip_continues_the_same_session() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    let secret = "plaintext-that-must-not-hit-the-disk";

    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    let first = client.session_info().await.unwrap();
    client.post("/one").body(secret).send().await.unwrap();
    client
        .get(&format!("/two?q={secret}"))
        .send()
        .await
        .unwrap();
    drop(client);

    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(!raw.contains(secret));
    assert!(!raw.contains("/one") && !raw.contains("/two"));
    let v = read_json(&path);
    assert_eq!(v["format"], 1);
    assert_eq!(v["base_url"], mock.base.as_str());
    assert_eq!(v["pin"], mock.state.pin().to_string());
    assert_eq!(v["session_id"], first.id.to_string());
    assert_eq!(v["suite"], first.suite.name());
    assert_eq!(v["expires_at_ms"], first.expires_at_ms);
    assert_eq!(v["idle_timeout_ms"], first.idle_timeout_ms);
    assert!(v["secrets"].as_str().unwrap().len() > 100);
    // No stray temporary files: the session file and its (empty) lock file.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["session.json", "session.json.lock"]);
    assert_eq!(
        std::fs::metadata(dir.path().join("session.json.lock"))
            .unwrap()
            .len(),
        0
    );

    // A new client (as a new process would) continues the session: no handshake.
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    let info = client.session_info().await.unwrap();
    assert_eq!(info.id, first.id);
    assert_eq!(info.next_seq, 2);
    let r = client.post("/three").body("b").send().await.unwrap();
    let echo: Value = r.json().unwrap();
    assert_eq!(echo["seq"], 2);
    assert_eq!(mock.state.handshakes(), 1, "no new handshake");
    assert_eq!(mock.state.protected_hits(), 3);
}

#[tokio::test]
async fn session_file_is_written_before_each_request_is_sent() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    *mock.state.check_file.lock().unwrap() = Some(path.clone());
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    for i in 0..5 {
        client.get(&format!("/{i}")).send().await.unwrap();
    }
    client.get("/full").full(true).send().await.unwrap();
    // Concurrent requests must never leave an older state in the file.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.get(&format!("/c{i}")).send().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(mock.state.file_checks.load(Ordering::SeqCst), 16);
    assert_eq!(mock.state.file_violations.load(Ordering::SeqCst), 0);
    let v = read_json(&path);
    assert!(v["secrets"].is_string());
    assert_eq!(client.session_info().await.unwrap().next_seq, 16);
}

#[tokio::test]
async fn session_file_for_another_pin_is_ignored() {
    let logs = capture_logs();
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    client.get("/a").send().await.unwrap();
    drop(client);

    // Rewrite the file's pin to another identity.
    let mut v = read_json(&path);
    let other = IdentityKey::from_seed(&[9; 32]).pin();
    v["pin"] = Value::String(other.to_string());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();

    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 2, "file ignored, new handshake");
    assert_eq!(client.session_info().await.unwrap().next_seq, 0);
    client.get("/b").send().await.unwrap();
    let text = logs.text();
    let why = text.lines().find(|l| {
        l.contains("ignoring session file")
            && l.contains(&path.display().to_string())
            && l.contains("not the pinned one")
    });
    assert!(why.is_some(), "{text}");
    // The file now holds the new session for the right identity.
    let v = read_json(&path);
    assert_eq!(v["pin"], mock.state.pin().to_string());

    drop(client);

    // A file for another base URL is ignored too.
    let mut v = read_json(&path);
    v["base_url"] = Value::String("http://127.0.0.1:1".into());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 3);
    drop(client);

    // And a session file of another format version, or with damaged secrets, is
    // replaced rather than fatal (it is recognizably a session file).
    let mut v = read_json(&path);
    v["format"] = Value::from(99);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 4);
    assert_eq!(read_json(&path)["format"], 1);
    drop(client);
    let mut v = read_json(&path);
    v["secrets"] = Value::String("AAAA".into());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let _client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 5);
}

#[tokio::test]
async fn save_session_then_continue_elsewhere() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saved.json");
    let client = Client::connect(&mock.base, Trust::Pin(mock.state.pin()))
        .await
        .unwrap();
    client.get("/a").send().await.unwrap();
    client.save_session(&path).await.unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // Using the client after saving keeps the file current (no seq reuse later).
    client.get("/b").send().await.unwrap();
    let id = client.session_info().await.unwrap().id;
    drop(client);

    let client = Client::builder(&mock.base, Trust::FirstUse)
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(
        client.identity(),
        mock.state.pin(),
        "TOFU remembers the file's identity"
    );
    let info = client.session_info().await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.next_seq, 2);
    client.get("/c").send().await.unwrap();
    assert_eq!(mock.state.handshakes(), 1);
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_clears_the_session_from_its_file_and_keeps_the_identity() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert!(path.exists());
    client.close().await.unwrap();
    let v = read_json(&path);
    assert_eq!(v["session_id"], Value::Null);
    assert_eq!(v["secrets"], Value::Null);
    assert_eq!(v["pin"], mock.state.pin().to_string());
    assert_eq!(v["base_url"], mock.base.as_str());
    // The next request handshakes and writes the file again.
    client.get("/x").send().await.unwrap();
    assert!(path.exists());
    assert_eq!(mock.state.handshakes(), 2);
}

#[tokio::test]
async fn lazy_client_with_session_file_does_no_network_at_build() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .connect_lazily(true)
        .build()
        .await
        .unwrap();
    assert!(client.session_info().await.is_none());
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 0);
    client.get("/x").send().await.unwrap();
    assert_eq!(mock.state.handshakes(), 1);
    assert!(path.exists());
}

#[tokio::test]
async fn session_file_with_a_spent_message_budget_is_ignored() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    drop(client);
    // In a fresh session's export next_seq (u64 big-endian) is at 164..172 (PROTOCOL
    // §12; the pending confirmation follows it): set it to the budget.
    let mut v = read_json(&path);
    let mut secrets = URL_SAFE_NO_PAD
        .decode(v["secrets"].as_str().unwrap())
        .unwrap();
    secrets[164..172].copy_from_slice(&sessioncert_proto::session::MAX_MESSAGES.to_be_bytes());
    assert!(sessioncert_proto::ClientSession::import(&secrets)
        .unwrap()
        .is_exhausted());
    v["secrets"] = Value::String(URL_SAFE_NO_PAD.encode(&secrets));
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();

    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 2);
    assert_eq!(client.session_info().await.unwrap().next_seq, 0);
}

// ---------------------------------------------------------------------------------------
// Exclusive session files
// ---------------------------------------------------------------------------------------

fn assert_busy(err: &ClientError, path: &Path, at_least: Duration) {
    match err {
        ClientError::SessionFileBusy {
            path: p,
            lock_path,
            waited,
        } => {
            assert_eq!(p, path);
            let mut lock_name = path.file_name().unwrap().to_os_string();
            lock_name.push(".lock");
            assert_eq!(lock_path.file_name().unwrap(), lock_name.as_os_str());
            assert!(*waited >= at_least, "waited only {waited:?}");
        }
        other => panic!("expected SessionFileBusy, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("in use by another process"), "{text}");
}

#[tokio::test]
async fn a_second_client_on_one_session_file_waits_then_fails_while_the_first_lives() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let builder = || {
        Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
            .session_file(&path)
            .session_file_lock_timeout(Duration::from_millis(300))
    };
    let first = builder().build().await.unwrap();
    first.get("/a").send().await.unwrap();
    let id = first.session_info().await.unwrap().id;

    // The second waits its 300 ms, then fails naming the file; it read nothing and
    // sent nothing.
    let started = Instant::now();
    let err = builder().build().await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_busy(&err, &path, Duration::from_millis(300));
    // Another spelling of the same path is the same file.
    let dotted = dir.path().join(".").join("s.json");
    let err = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&dotted)
        .session_file_lock_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::SessionFileBusy { .. }),
        "{err:?}"
    );
    // Saving another client's session into the file is refused the same way.
    let other = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file_lock_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let err = other.save_session(&path).await.unwrap_err();
    assert_busy(&err, &path, Duration::from_millis(100));
    assert_eq!(read_json(&path)["session_id"], id.to_string());
    assert_eq!(
        mock.state.handshakes(),
        2,
        "only `first` and `other` handshook"
    );

    // The first keeps working; a clone keeps the lock after the original is dropped.
    first.get("/b").send().await.unwrap();
    let clone = first.clone();
    drop(first);
    let err = builder().build().await.unwrap_err();
    assert_busy(&err, &path, Duration::from_millis(300));

    // A waiting client gets the file as soon as the last clone is dropped, and
    // continues the session exactly where the first left it.
    let waiting = tokio::spawn({
        let b = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
            .session_file(&path)
            .session_file_lock_timeout(Duration::from_secs(10));
        async move {
            let started = Instant::now();
            let c = b.build().await;
            (c, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "the second client did not wait");
    drop(clone);
    let (second, waited) = waiting.await.unwrap();
    let second = second.unwrap();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let info = second.session_info().await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.next_seq, 2);
    let echo: Value = second.get("/c").send().await.unwrap().json().unwrap();
    assert_eq!(echo["seq"], 2);
    assert_eq!(mock.state.handshakes(), 2);
    assert!(mock.state.refusals.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_path_that_is_not_a_session_file_is_never_overwritten() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let build = |path: PathBuf| {
        Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
            .session_file(path)
            .build()
    };
    let cases: [(&str, &[u8], &str); 4] = [
        ("notes.txt", b"my precious notes\n", "not JSON"),
        (
            "config.json",
            b"{\"server\":\"prod\",\"format\":1}\n",
            "not a session file",
        ),
        ("binary", &[0xff, 0x00, 0x13, 0x37], "not JSON"),
        ("array.json", b"[1,2,3]", "not a session file"),
    ];
    for (name, content, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = build(path.clone()).await.unwrap_err();
        match &err {
            ClientError::NotASessionFile { path: p, reason: r } => {
                assert_eq!(p, &path);
                assert!(r.contains(reason), "{name}: {r}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("refusing to overwrite"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), content, "{name} was changed");
    }
    // A directory is not a session file either.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let err = build(sub.clone()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotASessionFile { .. }),
        "{err:?}"
    );
    assert!(sub.is_dir());
    assert_eq!(mock.state.handshakes(), 0, "refused before any network");

    // `save_session` refuses the same way.
    let client = Client::connect(&mock.base, Trust::Pin(mock.state.pin()))
        .await
        .unwrap();
    let notes = dir.path().join("notes.txt");
    let err = client.save_session(&notes).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotASessionFile { .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&notes).unwrap(), b"my precious notes\n");
    client.get("/x").send().await.unwrap();
    assert_eq!(std::fs::read(&notes).unwrap(), b"my precious notes\n");
    drop(client);

    // An empty file (say, from mktemp) holds nothing to lose: it becomes the session file.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let client = build(empty.clone()).await.unwrap();
    let v = read_json(&empty);
    assert_eq!(
        v["session_id"],
        client.session_info().await.unwrap().id.to_string()
    );
}

// ---------------------------------------------------------------------------------------
// Two real processes
// ---------------------------------------------------------------------------------------

/// Not a test on its own: the body of the child processes that the tests below start
/// (this same test binary, run with `--ignored --exact child_process_client`). Its
/// instructions come from `SC_CHILD_*` variables; without them it does nothing.
#[tokio::test]
#[ignore = "run as a child process by the two-process tests in this file"]
async fn child_process_client() {
    let Ok(mode) = std::env::var("SC_CHILD_MODE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let pin: Pin = var("SC_CHILD_PIN").parse().unwrap();
    let wait = Duration::from_millis(var("SC_CHILD_WAIT_MS").parse().unwrap());
    let built = Client::builder(&var("SC_CHILD_BASE"), Trust::Pin(pin))
        .session_file(var("SC_CHILD_FILE"))
        .session_file_lock_timeout(wait)
        .build()
        .await;
    let client = match built {
        Ok(c) => c,
        Err(e @ ClientError::SessionFileBusy { .. }) => {
            println!("CHILD BUSY {e}");
            return;
        }
        Err(e) => panic!("CHILD build failed: {e:?}"),
    };
    match mode.as_str() {
        // Take the file, use it once, then hold it until killed.
        "hold" => {
            let echo: Value = client.get("/held").send().await.unwrap().json().unwrap();
            println!("CHILD LOCKED {}", echo["seq"]);
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        // Send a burst of requests and report the sequence numbers the server saw.
        "burst" => {
            let n: usize = var("SC_CHILD_N").parse().unwrap();
            let mut seqs = Vec::new();
            for i in 0..n {
                let r = client
                    .post(&format!("/burst/{i}"))
                    .body(format!("{}-{i}", std::process::id()))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("CHILD request {i}: {e:?}"));
                seqs.push(r.json::<Value>().unwrap()["seq"].to_string());
            }
            println!("CHILD SEQS {}", seqs.join(","));
        }
        other => panic!("unknown SC_CHILD_MODE {other}"),
    }
}

/// Starts this test binary as a child running [`child_process_client`].
fn child(mock: &Mock, path: &Path, mode: &str, wait: Duration, n: usize) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_client",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SC_CHILD_MODE", mode)
        .env("SC_CHILD_BASE", &mock.base)
        .env("SC_CHILD_PIN", mock.state.pin().to_string())
        .env("SC_CHILD_FILE", path)
        .env("SC_CHILD_WAIT_MS", wait.as_millis().to_string())
        .env("SC_CHILD_N", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child process")
}

/// The `CHILD …` part of a line of the child's output (the test harness may print
/// `test child_process_client ... ` before it on the same line).
fn child_line(line: &str) -> Option<String> {
    line.find("CHILD ").map(|i| line[i..].to_owned())
}

/// The `CHILD …` lines a finished child printed; asserts it succeeded.
async fn child_output(c: tokio::process::Child) -> Vec<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), c.wait_with_output())
        .await
        .expect("child did not finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout.lines().filter_map(child_line).collect();
    assert!(
        !lines.is_empty(),
        "the child printed no result:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_holding_the_file_excludes_us_until_it_dies() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");

    let mut holder = child(&mock, &path, "hold", Duration::from_secs(5), 0);
    let mut lines = tokio::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    let locked = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(l) = child_line(&l) {
                return l;
            }
        }
        panic!("the child exited without taking the file");
    })
    .await
    .expect("the child did not take the file in time");
    assert_eq!(locked, "CHILD LOCKED 0");

    // While the other process lives, this one cannot have the file.
    let builder = || {
        Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
            .session_file(&path)
            .session_file_lock_timeout(Duration::from_millis(300))
    };
    let err = builder().build().await.unwrap_err();
    assert_busy(&err, &path, Duration::from_millis(300));

    // The other process crashes (SIGKILL: no destructor runs); the OS drops its lock.
    holder.kill().await.unwrap();
    let client = builder().build().await.unwrap();
    let info = client.session_info().await.unwrap();
    assert_eq!(info.id.to_string(), read_json(&path)["session_id"]);
    assert_eq!(
        info.next_seq, 1,
        "continues after the dead process's request"
    );
    let echo: Value = client.get("/after").send().await.unwrap().json().unwrap();
    assert_eq!(echo["seq"], 1);
    assert_eq!(mock.state.handshakes(), 1);
    assert!(mock.state.refusals.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_session_file_never_seal_under_the_same_nonce() {
    const N: usize = 15;
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    // One session in the file, used once.
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    client.get("/setup").send().await.unwrap();
    drop(client);

    // Two processes start at once on the same file, each sending N requests.
    let a = child(&mock, &path, "burst", Duration::from_secs(30), N);
    let b = child(&mock, &path, "burst", Duration::from_secs(30), N);
    let (a, b) = tokio::join!(child_output(a), child_output(b));

    // Both were served in full: no replay refusal, no error.
    assert!(
        mock.state.refusals.lock().unwrap().is_empty(),
        "refusals: {:?}",
        mock.state.refusals.lock().unwrap()
    );
    let mut reported = BTreeSet::new();
    for out in [&a, &b] {
        assert_eq!(out.len(), 1, "{out:?}");
        let seqs = out[0].strip_prefix("CHILD SEQS ").expect("seqs");
        for s in seqs.split(',') {
            assert!(reported.insert(s.parse::<u64>().unwrap()), "seq {s} twice");
        }
    }
    assert_eq!(reported, (1..=2 * N as u64).collect::<BTreeSet<_>>());
    // Every (session, seq) the server executed is distinct: no nonce was used twice.
    let executed = mock.state.executed.lock().unwrap().clone();
    assert_eq!(executed.len(), 1 + 2 * N);
    let pairs: BTreeSet<(String, u64)> = executed
        .iter()
        .map(|e| (e.session.to_string(), e.seq))
        .collect();
    assert_eq!(pairs.len(), executed.len());
    assert_eq!(mock.state.handshakes(), 1, "both continued the one session");
}

/// PROTOCOL §5.3 rule 7 across processes: the newest key configuration a client accepted
/// is kept in its session file, so a later process refuses an older one (which may list a
/// handshake key the server has since removed), even before it handshakes.
#[tokio::test]
async fn a_later_process_refuses_a_key_configuration_older_than_one_in_its_session_file() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    let old_config = mock.state.config.lock().unwrap().clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The server removes its handshake key (a leak, say) and re-signs its configuration.
    mock.state.rotate_key();
    let new_config = mock.state.config.lock().unwrap().clone();
    let issued = |bytes: &[u8]| {
        let signed = sessioncert_proto::SignedKeyConfig::decode(bytes).unwrap();
        sessioncert_proto::KeyConfig::decode(&signed.config)
            .unwrap()
            .issued_at_ms
    };
    assert!(issued(&new_config) > issued(&old_config));

    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    client.get("/one").send().await.unwrap();
    drop(client);
    assert_eq!(read_json(&path)["config_issued_at_ms"], issued(&new_config));

    // An attacker now serves the old configuration, still validly signed.
    *mock.state.config.lock().unwrap() = old_config;
    let later = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    match later.rehandshake().await {
        Err(ClientError::Untrusted { reason, .. }) => {
            assert!(reason.contains("older key configuration"), "{reason}")
        }
        other => panic!("an older configuration was accepted: {other:?}"),
    }
    drop(later);
    // The floor comes from the file: a client without it accepts the old configuration
    // and handshakes to the removed key (which this server no longer has; an attacker
    // holding the leaked key would answer).
    let fresh = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .build()
        .await;
    assert!(
        matches!(
            fresh,
            Err(ClientError::Rejected {
                code: sessioncert_client::ErrorCode::UnknownKey,
                ..
            })
        ),
        "{:?}",
        fresh.err()
    );
}

/// Trust on first use remembers the first identity like ssh's `known_hosts`: a refused
/// session (here the server forgot it; a forged refusal does the same) leaves the file
/// holding the server and its identity, so a later run still refuses a server presenting
/// another identity, however often it is tried.
#[tokio::test]
async fn tofu_keeps_refusing_a_changed_identity_after_its_session_is_refused() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let tofu = || {
        Client::builder(&mock.base, Trust::FirstUse)
            .session_file(&path)
            .build()
    };
    let client = tofu().await.unwrap();
    client.get("/a").send().await.unwrap();
    mock.state.forget_all_sessions();
    let err = client.post("/b").body("x").send().await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    drop(client);
    let v = read_json(&path);
    assert_eq!(v["session_id"], Value::Null, "the refused session is gone");
    assert_eq!(
        v["pin"],
        mock.state.pin().to_string(),
        "its identity is kept"
    );

    // The same server: trusted, a new session.
    let again = tofu().await.unwrap();
    again.get("/c").send().await.unwrap();
    drop(again);

    // Another identity at this URL (the file says it was someone else): refused, and
    // still refused on the next try (the file is left as it is).
    let other = IdentityKey::from_seed(&[0x42; 32]).pin();
    let mut v = read_json(&path);
    v["pin"] = Value::String(other.to_string());
    v["session_id"] = Value::Null;
    v["secrets"] = Value::Null;
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    for attempt in 0..2 {
        match tofu().await {
            Err(ClientError::Untrusted { .. }) => {}
            other => panic!("attempt {attempt}: a changed identity was trusted: {other:?}"),
        }
        assert_eq!(read_json(&path)["pin"], other.to_string());
    }
}

/// The lock is per name, so a second name for one session file (a symbolic or hard
/// link) would let two processes seal under the same sequence numbers: refused, and the
/// session file is left untouched.
#[cfg(unix)]
#[tokio::test]
async fn a_session_file_reached_by_a_second_name_is_refused() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("s.json");
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&real)
        .build()
        .await
        .unwrap();
    client.get("/a").send().await.unwrap();
    drop(client);
    let before = std::fs::read(&real).unwrap();
    let soft = dir.path().join("alias.json");
    std::os::unix::fs::symlink(&real, &soft).unwrap();
    let hard = dir.path().join("hard.json");
    std::fs::hard_link(&real, &hard).unwrap();
    for (what, path) in [
        ("symbolic link", &soft),
        ("hard link", &real),
        ("hard link", &hard),
    ] {
        let err = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
            .session_file(path)
            .build()
            .await
            .unwrap_err();
        match &err {
            ClientError::SessionFile(m) => assert!(m.contains(what), "{m}"),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    assert_eq!(std::fs::read(&real).unwrap(), before);
    // One name again: usable.
    std::fs::remove_file(&hard).unwrap();
    std::fs::remove_file(&soft).unwrap();
    let client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&real)
        .build()
        .await
        .unwrap();
    client.get("/b").send().await.unwrap();
}
