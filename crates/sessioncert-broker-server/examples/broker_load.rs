//! Load for a running broker (`scripts/bench-broker.sh` drives it): N clients, each
//! with its own account, doing one operation for a while; prints operations per second.
//!
//! ```text
//! broker_load URL PIN TENANT OUTBOX_DIR OPERATION SECONDS CLIENTS
//! OPERATION: login | upload-1k | share | sealed-echo
//! ```
//! `sealed-echo` is the baseline: `GET /broker/v1/files` on a logged-in session (one
//! sealed round trip and a database read, no password check, no file).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sessioncert_broker::user_key::KeyShare;
use sessioncert_client::{Client, Pin, Trust};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "load test password";

async fn call(c: &Client, method: &str, path: &str, body: Value) -> Value {
    let m = http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = c.request(m, &format!("/broker/v1{path}")).full(true);
    if !body.is_null() {
        r = r.json(&body);
    }
    let resp = r.send().await.expect("request");
    assert!(
        resp.status().is_success(),
        "{path}: {} {}",
        resp.status(),
        String::from_utf8_lossy(resp.body())
    );
    serde_json::from_slice(resp.body()).unwrap_or(Value::Null)
}

fn code_for(outbox: &Path, email: &str) -> String {
    for _ in 0..200 {
        for e in std::fs::read_dir(outbox).unwrap().flatten() {
            let t = std::fs::read_to_string(e.path()).unwrap_or_default();
            if t.lines().any(|l| l.starts_with("To:") && l.contains(email)) {
                if let Some(c) = t
                    .lines()
                    .find_map(|l| l.strip_prefix("Verification code: "))
                {
                    return c.trim().to_owned();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no verification code for {email}");
}

struct Account {
    client: Client,
    login: Value,
}

async fn account(url: &str, pin: Pin, tenant: &str, outbox: &Path, n: usize) -> Account {
    let client = Client::builder(url, Trust::Pin(pin)).build().await.unwrap();
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).unwrap();
    let email = format!("load{n}-{}@example.test", hex::encode(tag));
    call(
        &client,
        "POST",
        "/register",
        json!({"tenant": tenant, "email": email, "password": PASSWORD,
               "registration": STANDARD.encode(tag.repeat(8))}),
    )
    .await;
    let code = code_for(outbox, &email);
    call(
        &client,
        "POST",
        "/verify",
        json!({"tenant": tenant, "email": email, "code": code,
               "registration": STANDARD.encode(tag.repeat(8))}),
    )
    .await;
    let share = KeyShare::generate().unwrap();
    let mut login = json!({"tenant": tenant, "email": email, "password": PASSWORD,
                           "key_share": STANDARD.encode(share.as_bytes())});
    let r = call(&client, "POST", "/login", login.clone()).await;
    call(&client, "POST", "/login/confirm", Value::Null).await;
    login["encrypted_data_key"] = r["encrypted_data_key"].clone();
    Account { client, login }
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(
        a.len(),
        8,
        "usage: broker_load URL PIN TENANT OUTBOX_DIR OPERATION SECONDS CLIENTS"
    );
    let (url, pin, tenant) = (a[1].clone(), a[2].parse::<Pin>().unwrap(), a[3].clone());
    let outbox = PathBuf::from(&a[4]);
    let op = a[5].clone();
    let seconds: u64 = a[6].parse().unwrap();
    let clients: usize = a[7].parse().unwrap();
    let mut accounts = Vec::new();
    for n in 0..clients {
        accounts.push(account(&url, pin, &tenant, &outbox, n).await);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for acc in accounts {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let file = if op == "share" {
                let r = acc
                    .client
                    .post("/broker/v1/files?name=s")
                    .full(true)
                    .body(vec![7u8; 1024])
                    .send()
                    .await
                    .unwrap();
                r.json::<Value>().unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            } else {
                String::new()
            };
            while Instant::now() < until {
                match op.as_str() {
                    "login" => {
                        call(&acc.client, "POST", "/login", acc.login.clone()).await;
                    }
                    "upload-1k" => {
                        let r = acc
                            .client
                            .post("/broker/v1/files?name=k")
                            .full(true)
                            .body(vec![1u8; 1024])
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201);
                    }
                    "share" => {
                        call(
                            &acc.client,
                            "POST",
                            &format!("/files/{file}/shares"),
                            json!({"to": "r@example.test"}),
                        )
                        .await;
                    }
                    "sealed-echo" => {
                        call(&acc.client, "GET", "/files", Value::Null).await;
                    }
                    other => panic!("unknown operation {other}"),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "{op}: {n} in {secs:.1} s = {:.1}/s ({clients} clients)",
        n as f64 / secs
    );
}
