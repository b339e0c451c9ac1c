//! After a full run (registration, login, upload, share, open, download), the
//! database (its outbox and audit tables included), the object store, the mail outbox
//! and the logs (at trace level) are searched for every secret the run used: the file's
//! plaintext, the password, the key share, the data key, the file and share keys, the
//! one-time and verification codes. Only the mails may hold the codes (that is their
//! job); nothing may hold the rest.

mod support;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use sessioncert_broker::file_crypt::file_key;
use sessioncert_broker::kms::{Kms as _, Wrapped};
use sessioncert_broker::share_code::OneTimeCode;
use sessioncert_broker_server::api::PREFIX;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::{call, fetch, line_value, pseudo_random, walk, TestBroker, PASSWORD};

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every spelling of a secret a log or a table might hold.
fn spellings(name: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (format!("{name} (raw)"), secret.to_vec()),
        (format!("{name} (hex)"), hex::encode(secret).into_bytes()),
        (
            format!("{name} (base64)"),
            STANDARD.encode(secret).into_bytes(),
        ),
        (
            format!("{name} (base64url)"),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
    ];
    if let Ok(s) = std::str::from_utf8(secret) {
        v.push((
            format!("{name} (lower case)"),
            s.to_lowercase().into_bytes(),
        ));
    }
    v
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 8 && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_material_at_rest_or_in_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let t = TestBroker::start(&["acme"]).await;
    let alice = t.user("acme", "alice@example.test").await;
    let verification = line_value(
        &t.mail_to("alice@example.test", "Verification code:").await,
        "Verification code:",
    );
    let marker = b"TOP-SECRET-PLAINTEXT-MARKER-0123456789".to_vec();
    let mut body = marker.clone();
    body.extend(pseudo_random(200_000, 9));
    body.extend_from_slice(&marker);
    let id = alice.upload("quarterly-results.xlsx", body.clone()).await;
    let (_, back) = alice.download(&id).await.unwrap();
    assert!(back == body);
    let r = call(
        &alice.client,
        "POST",
        &format!("/files/{id}/shares"),
        json!({"to": "bob@example.test", "max_opens": 2}),
    )
    .await;
    let share = r.1["share"].as_str().unwrap().to_owned();
    let otp = line_value(
        &t.mail_to("bob@example.test", "One-time code:").await,
        "One-time code:",
    );
    let anon = t.client().await;
    let (status, got) = fetch(
        anon.post(&format!("{PREFIX}/shares/{share}/open"))
            .full(true)
            .json(&json!({"otp": otp})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(got == body);
    let r = call(&alice.client, "GET", "/files", Value::Null).await;
    assert_eq!(r.1["files"][0]["name"], "quarterly-results.xlsx");
    // Let the outbox worker finish.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // The secrets, recomputed from what the test knows.
    let store = sessioncert_broker_server::store::open(&format!(
        "sqlite:{}",
        t.data().join("broker.db").display()
    ))
    .await
    .unwrap();
    let account = store
        .account("acme", "alice@example.test")
        .await
        .unwrap()
        .unwrap();
    let edk = STANDARD.decode(alice.edk.as_ref().unwrap()).unwrap();
    let wrapped = Wrapped {
        version: u32::from_be_bytes(edk[..4].try_into().unwrap()),
        blob: edk[4..].to_vec(),
    };
    let kms = t.key_file().load().unwrap();
    let split = kms
        .unwrap("acme", format!("user {}", account.id).as_bytes(), &wrapped)
        .unwrap()
        .unwrap();
    let data_key: Vec<u8> = split
        .iter()
        .zip(alice.share.as_bytes())
        .map(|(a, b)| a ^ b)
        .collect();
    let dk: [u8; 32] = data_key.clone().try_into().unwrap();
    let fkey = file_key(&dk, "acme", &account.id, id.as_bytes());
    let code = OneTimeCode::parse(&otp).unwrap();
    let share_key = code.share_key(share.as_bytes());

    let mut secrets = Vec::new();
    secrets.push(("plaintext".to_owned(), marker.clone()));
    secrets.push(("plaintext body".to_owned(), body[100..164].to_vec()));
    secrets.push(("file name".to_owned(), b"quarterly-results".to_vec()));
    secrets.extend(spellings("password", PASSWORD.as_bytes()));
    secrets.extend(spellings("key share", alice.share.as_bytes()));
    secrets.extend(spellings("data key", &data_key));
    secrets.extend(spellings("data key ⊕ share", &split));
    secrets.extend(spellings("file key", fkey.as_ref()));
    secrets.extend(spellings("share key", share_key.as_ref()));
    secrets.extend(spellings("root key", &RootKey::of(&t)));
    let codes: Vec<(String, Vec<u8>)> = [
        spellings("one-time code", otp.as_bytes()),
        spellings("verification code", verification.as_bytes()),
        spellings(
            "verification code (undashed)",
            verification.replace('-', "").as_bytes(),
        ),
    ]
    .concat();

    // Haystacks: the database files, every object, the logs, the mails.
    let mut at_rest: Vec<(String, Vec<u8>)> = Vec::new();
    for p in walk(&t.data()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // The data directory's own secrets files are what they are: the root key file,
        // the sealed KMS file, the server's identity keys.
        if name.starts_with("broker.db") {
            at_rest.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(!at_rest.is_empty());
    for p in walk(&t.objects()) {
        at_rest.push((p.display().to_string(), std::fs::read(&p).unwrap()));
    }
    let log_text = logs.0.lock().unwrap().clone();
    assert!(log_text.len() > 1000, "the logs were captured");
    at_rest.push(("logs".to_owned(), log_text));

    for (where_, bytes) in &at_rest {
        for (what, needle) in secrets.iter().chain(&codes) {
            assert!(!find(bytes, needle), "{what} found in {where_}");
        }
    }
    // The mails carry codes, never keys, passwords or content.
    let mails: Vec<_> = walk(&t.outbox());
    assert_eq!(
        mails.len(),
        3,
        "verification, and the share to recipient and sharer"
    );
    for p in mails {
        let bytes = std::fs::read(&p).unwrap();
        for (what, needle) in &secrets {
            if what == "file name" {
                continue; // a share mail names the file, by design
            }
            assert!(
                !find(&bytes, needle),
                "{what} found in mail {}",
                p.display()
            );
        }
    }
}

struct RootKey;

impl RootKey {
    fn of(t: &TestBroker) -> Vec<u8> {
        let text = std::fs::read_to_string(t.data().join("broker-root.key")).unwrap();
        hex::decode(text.trim()).unwrap()
    }
}
