//! Many instances behind one name (issue 15, item 3), as processes: two `sessioncert
//! gateway`s sharing one data directory and one store (Redis, then PostgreSQL), a
//! round-robin TCP balancer in front of them, a counting upstream behind them, and the
//! Rust client talking to the balancer. One gateway is killed (SIGKILL) in the middle of
//! a load run: requests the client may re-send (GET) succeed on the other instance,
//! nothing runs twice (every POST body reaches the upstream at most once, and exactly
//! once if the client saw it succeed), and an established session survives the instance
//! — no new handshake.

use sessioncert_client::{Client, ClientError, Trust};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{accepts, free_port, sc};

/// A plain upstream that counts how often each POST body arrived and answers GETs.
struct Upstream {
    port: u16,
    executed: Arc<Mutex<HashMap<String, usize>>>,
}

async fn upstream() -> Upstream {
    let executed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = executed.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            let method = req.method().clone();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            if method == http::Method::POST {
                *seen
                    .lock()
                    .unwrap()
                    .entry(String::from_utf8_lossy(&body).into_owned())
                    .or_default() += 1;
            }
            // A little work, so requests are in flight when the kill comes.
            tokio::time::sleep(Duration::from_millis(2)).await;
            "done"
        }
    });
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { port, executed }
}

/// A round-robin TCP balancer: each connection goes to the next backend that accepts it.
async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (backends, next) = (backends.clone(), next.clone());
            tokio::spawn(async move {
                let first = next.fetch_add(1, Ordering::Relaxed);
                for i in 0..backends.len() {
                    let port = backends[(first + i) % backends.len()];
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Gateway {
    child: Child,
    port: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(upstream: u16, data: &Path, store: &str, log: &Path) -> Gateway {
    let port = free_port();
    let child = sc()
        .args(["gateway", "--upstream"])
        .arg(format!("http://127.0.0.1:{upstream}"))
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .args(["--store", store])
        .env(
            "RUST_LOG",
            std::env::var("MULTI_LOG").unwrap_or_else(|_| "info,sessioncert::access=off".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut g = Gateway { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !accepts(port) {
        if let Some(st) = g.child.try_wait().unwrap() {
            panic!(
                "gateway exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    g
}

/// Two gateways on `store` behind a balancer; one is killed during the load.
async fn kill_one_instance_mid_load(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("id");
    let out = sc().arg("keygen").arg("--out").arg(&data).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pin: sessioncert_client::Pin = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let up = upstream().await;
    let g1 = gateway(up.port, &data, store, &dir.path().join("g1.log"));
    let g2 = gateway(up.port, &data, store, &dir.path().join("g2.log"));
    let lb = balancer(vec![g1.port, g2.port]).await;
    let client = Client::connect(&format!("http://127.0.0.1:{lb}"), Trust::Pin(pin))
        .await
        .unwrap();
    // A second client whose session is idle while the instance dies: established
    // sessions live in the store, not in an instance.
    let idle = Client::connect(&format!("http://127.0.0.1:{lb}"), Trust::Pin(pin))
        .await
        .unwrap();
    assert_eq!(
        idle.post("/orders")
            .body("idle-before")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let idle_session = idle.session_info().await.expect("connected").id;

    // Both instances serve the session (the balancer alternates connections).
    let tag = format!("{}-{}", std::process::id(), free_port());
    let posted: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let gets_ok = Arc::new(AtomicUsize::new(0));
    let gets_failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, posted, gets_ok, gets_failed, stop, tag) = (
            client.clone(),
            posted.clone(),
            gets_ok.clone(),
            gets_failed.clone(),
            stop.clone(),
            tag.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if n % 2 == 0 {
                    match client.get(&format!("/items/{w}/{n}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            gets_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => gets_failed
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => gets_failed.lock().unwrap().push(e.to_string()),
                    }
                } else {
                    let body = format!("{{\"order\":\"{tag}-{w}-{n}\"}}");
                    let ok = match client.post("/orders").body(body.clone()).send().await {
                        Ok(r) => r.status() == 200,
                        // The one failure a POST may have when its instance dies under
                        // it: the client cannot know whether it ran, and says so.
                        Err(ClientError::OutcomeUnknown { .. }) => false,
                        Err(e) => {
                            gets_failed.lock().unwrap().push(format!("POST: {e}"));
                            false
                        }
                    };
                    posted.lock().unwrap().push((body, ok));
                }
            }
        }));
    }
    // Counted, not timed: a busy machine runs fewer requests a second, not fewer in all.
    let posts_reach = |n: usize| {
        let posted = posted.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while posted.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    posts_reach(30).await;
    let mut g1 = g1;
    g1.child.kill().unwrap(); // SIGKILL: no drain, connections cut mid-request
    let _ = g1.child.wait();
    let at_kill = posted.lock().unwrap().len();
    posts_reach(at_kill + 30).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let posted = posted.lock().unwrap().clone();
    let executed = up.executed.lock().unwrap().clone();
    assert!(posted.len() > 50, "the load ran: {} POSTs", posted.len());
    for (body, ok) in &posted {
        let n = executed.get(body).copied().unwrap_or(0);
        assert!(n <= 1, "{body} ran {n} times");
        if *ok {
            assert_eq!(n, 1, "{body} answered 200 but did not run");
        }
    }
    let failed = gets_failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "GETs may be re-sent, so every one succeeds, and a POST fails only as an unknown \
         outcome: {failed:?}\ng1 log: {}\ng2 log: {}",
        std::fs::read_to_string(dir.path().join("g1.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("g2.log")).unwrap_or_default()
    );
    assert!(gets_ok.load(Ordering::Relaxed) > 50);
    // The idle session survived the instance: the same session, still usable, and the
    // loaded client goes on (its session may have been fenced by a close after an
    // unknown outcome: the client's own rule, not a loss).
    for _ in 0..4 {
        let r = idle
            .post("/orders")
            .body(format!("idle-after-{tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        idle.session_info().await.unwrap().id,
        idle_session,
        "no new handshake"
    );
    let r = client
        .post("/orders")
        .body(format!("after-{tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(g2);
}

fn unique(what: &str) -> String {
    format!("{what}_{}_{}", std::process::id(), free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_gateway_killed_mid_load() {
    let prefix = unique("scmi");
    kill_one_instance_mid_load(&format!("redis://127.0.0.1:6379/?prefix={prefix}")).await;
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -h 127.0.0.1 --scan --pattern '{prefix}:*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null"
        ))
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_gateway_killed_mid_load() {
    let schema = unique("scmi");
    kill_one_instance_mid_load(&format!(
        "postgres://postgres@127.0.0.1:5432/test?schema={schema}"
    ))
    .await;
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -d test -qc 'drop schema if exists \"{schema}\" cascade' >/dev/null"
        ))
        .status();
}
