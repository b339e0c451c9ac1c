//! A broker on 127.0.0.1 behind a real sessioncert server, and clients for it.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sessioncert_broker::user_key::KeyShare;
use sessioncert_broker_server::api::{Broker, BrokerSettings, PREFIX};
use sessioncert_broker_server::keys::{KeyFile, RootKeySource, ServedKms};
use sessioncert_broker_server::notify::{EmailDelivery, Notifier};
use sessioncert_broker_server::objects::{Objects, ObjectsSpec};
use sessioncert_client::{Client, Trust};
use sessioncert_server::{ServerKeys, SessionCert};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestBroker {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub pin: sessioncert_client::Pin,
    pub broker: Broker,
    pub sc: SessionCert,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestBroker {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }
    pub fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }
    pub fn key_file(&self) -> KeyFile {
        let root = RootKeySource::new(&self.data(), None).load().unwrap();
        KeyFile::new(&self.data(), root)
    }

    pub async fn start(tenants: &[&str]) -> TestBroker {
        Self::start_with(tenants, BrokerSettings::default()).await
    }

    pub async fn start_with(tenants: &[&str], settings: BrokerSettings) -> TestBroker {
        Self::serve(Self::tenants(tenants), settings, true).await
    }

    /// A broker whose outbox worker does not run: its mail stays queued.
    pub async fn start_without_workers(tenants: &[&str]) -> TestBroker {
        Self::serve(Self::tenants(tenants), BrokerSettings::default(), false).await
    }

    /// Stops this broker and starts another on the same data directory, database,
    /// root key and objects (a restart).
    pub async fn restart(mut self) -> TestBroker {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // TestBroker stops its listener on drop; the data directory moves on.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        Self::serve(dir, BrokerSettings::default(), true).await
    }

    fn tenants(tenants: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let root = RootKeySource::new(&data, None).load_or_create().unwrap();
        let file = KeyFile::new(&data, root);
        for t in tenants {
            assert!(file.create_tenant(t).unwrap());
        }
        dir
    }

    async fn serve(dir: tempfile::TempDir, settings: BrokerSettings, workers: bool) -> TestBroker {
        let data = dir.path().join("data");
        let root = RootKeySource::new(&data, None).load().unwrap();
        let kms = ServedKms::open(KeyFile::new(&data, root)).unwrap();
        let store = sessioncert_broker_server::store::open(&format!(
            "sqlite:{}",
            data.join("broker.db").display()
        ))
        .await
        .unwrap();
        let objects = Objects::open(&ObjectsSpec::Dir(dir.path().join("objects")))
            .await
            .unwrap();
        let notifier = Notifier::new(
            EmailDelivery::Outbox(dir.path().join("outbox")),
            None,
            "broker@example.test",
        )
        .unwrap();
        let (keys, _) = ServerKeys::open_or_create(&data, sessioncert_server::now_ms()).unwrap();
        let pin = keys.pin();
        let sc = SessionCert::builder(
            Arc::new(keys),
            Arc::new(sessioncert_store::MemoryStore::new()),
        )
        .build()
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = BrokerSettings {
            public_url: url.clone(),
            pin: pin.to_string(),
            ..settings
        };
        let broker = Broker::new(
            store,
            objects,
            kms,
            notifier,
            sc.manager().clone(),
            settings,
        )
        .unwrap();
        if workers {
            broker.spawn_workers();
        }
        let app = sc.router(broker.routes());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sessioncert_server::listener::serve(
            listener,
            app,
            Default::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestBroker {
            dir,
            url,
            pin,
            broker,
            sc,
            stop: Some(stop),
        }
    }

    pub async fn client(&self) -> Client {
        Client::builder(&self.url, Trust::Pin(self.pin))
            .build()
            .await
            .unwrap()
    }

    /// The newest mail to `to` (an .eml file's text), waiting for the outbox worker.
    pub async fn mail_to(&self, to: &str, containing: &str) -> String {
        self.mail_with(to, &[containing]).await
    }

    /// The newest mail to `to` holding every one of `needles`.
    pub async fn mail_with(&self, to: &str, needles: &[&str]) -> String {
        for _ in 0..100 {
            let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(self.outbox())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .map(|p| {
                    let t = std::fs::read_to_string(&p).unwrap_or_default();
                    (p, t)
                })
                .filter(|(_, t)| {
                    t.lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to))
                        && needles.iter().all(|n| t.contains(n))
                })
                .collect();
            found.sort();
            if let Some((_, t)) = found.pop() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail to {to} containing {needles:?} in the outbox");
    }

    /// Registers, verifies and logs in `email` in `tenant`; the logged-in client.
    pub async fn user(&self, tenant: &str, email: &str) -> User {
        let share = KeyShare::generate().unwrap();
        let c = self.client().await;
        let r = call(
            &c,
            "POST",
            "/register",
            json!({"tenant": tenant, "email": email, "password": PASSWORD,
                   "registration": registration(email)}),
        )
        .await;
        assert_eq!(r.0, 202, "{:?}", r.1);
        let mail = self
            .mail_with(email, &["Verification code:", &format!("tenant {tenant}.")])
            .await;
        let code = line_value(&mail, "Verification code:");
        let r = call(
            &c,
            "POST",
            "/verify",
            json!({"tenant": tenant, "email": email, "code": code,
                   "registration": registration(email)}),
        )
        .await;
        assert_eq!(r.0, 200, "{:?}", r.1);
        let mut u = User {
            client: c,
            tenant: tenant.into(),
            email: email.into(),
            share,
            edk: None,
        };
        let r = u.login().await;
        assert_eq!(r.0, 200, "{:?}", r.1);
        assert_eq!(r.1["first_login"], true);
        let r = call(&u.client, "POST", "/login/confirm", Value::Null).await;
        assert_eq!(r.0, 200, "{:?}", r.1);
        u
    }

    pub fn file_objects(&self) -> Vec<PathBuf> {
        walk(&self.objects())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The value after `label` on its line.
pub fn line_value(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
        .trim()
        .to_owned()
}

pub struct User {
    pub client: Client,
    pub tenant: String,
    pub email: String,
    pub share: KeyShare,
    pub edk: Option<String>,
}

impl User {
    pub async fn login(&mut self) -> (u16, Value) {
        let r = call(
            &self.client,
            "POST",
            "/login",
            json!({
                "tenant": self.tenant, "email": self.email, "password": PASSWORD,
                "key_share": STANDARD.encode(self.share.as_bytes()),
                "encrypted_data_key": self.edk,
            }),
        )
        .await;
        if let Some(e) = r.1.get("encrypted_data_key").and_then(Value::as_str) {
            self.edk = Some(e.to_owned());
        }
        r
    }

    pub async fn upload(&self, name: &str, body: Vec<u8>) -> String {
        let r = self
            .client
            .post(&format!("{PREFIX}/files?name={name}"))
            .full(true)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", String::from_utf8_lossy(r.body()));
        r.json::<Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `(status, body)`; a body that fails midway is `Err`.
    pub async fn download(&self, id: &str) -> Result<(u16, Vec<u8>), String> {
        fetch(self.client.get(&format!("{PREFIX}/files/{id}")).full(true)).await
    }
}

pub async fn fetch(req: sessioncert_client::RequestBuilder) -> Result<(u16, Vec<u8>), String> {
    let mut r = req.send_streaming().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(b)) => body.extend_from_slice(&b),
            Ok(None) => return Ok((status, body)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A JSON call: `(status, answer)`.
pub async fn call(c: &Client, method: &str, path: &str, body: Value) -> (u16, Value) {
    let m = http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = c.request(m, &format!("{PREFIX}{path}")).full(true);
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let v = if r.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(r.body()).unwrap_or(Value::Null)
    };
    (r.status().as_u16(), v)
}

/// A registration key for `seed` (base64 of 32 bytes), as a client would keep it.
pub fn registration(seed: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(seed.as_bytes()))
}

/// Deterministic bytes that do not compress: `n` bytes of a counter's SHA-256 stream.
pub fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(n + 32);
    let mut i: u64 = 0;
    while out.len() < n {
        let mut h = Sha256::new();
        h.update([seed]);
        h.update(i.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(n);
    out
}
