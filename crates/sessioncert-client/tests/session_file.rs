//! Session files: save, load, continue; refuse files for another server.

mod common;

use common::{capture_logs, Mock};
use serde_json::Value;
use sessioncert_client::{Client, Trust};
use sessioncert_proto::IdentityKey;
use std::path::Path;
use std::sync::atomic::Ordering;

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
    // No stray temporary files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

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

    // A file for another base URL is ignored too.
    let mut v = read_json(&path);
    v["base_url"] = Value::String("http://127.0.0.1:1".into());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let _client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 3);

    // And garbage is ignored rather than fatal.
    std::fs::write(&path, b"{not json").unwrap();
    let _client = Client::builder(&mock.base, Trust::Pin(mock.state.pin()))
        .session_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(mock.state.handshakes(), 4);
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
async fn close_removes_the_session_file() {
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
    assert!(!path.exists());
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
    // The export ends with next_seq (u64 big-endian): set it to the budget.
    let mut v = read_json(&path);
    let mut secrets = URL_SAFE_NO_PAD
        .decode(v["secrets"].as_str().unwrap())
        .unwrap();
    let n = secrets.len();
    secrets[n - 8..].copy_from_slice(&sessioncert_proto::session::MAX_MESSAGES.to_be_bytes());
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
