//! check_request throughput of each shared store, in one run: `callers` concurrent tasks
//! (default 64), each the client of its own session sending in-order sequence numbers
//! as fast as the store answers, for `secs` seconds per store.
//!
//! ```sh
//! cargo run --release -p sessioncert-store --example check_throughput -- \
//!     [--secs 5] [--callers 64] [--sessions 64] \
//!     [--redis redis://127.0.0.1:6379] [--postgres postgres://postgres@127.0.0.1:5432/test]
//! ```
//!
//! Redis keys go under a fresh prefix and PostgreSQL tables into a fresh schema; both
//! are deleted at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessioncert_proto::{SessionId, SessionState};
use sessioncert_store::{
    MemoryStore, PostgresStore, RedisStore, RequestCheck, RequestMark, SessionRecord, SessionStore,
};

struct Args {
    secs: u64,
    callers: u32,
    sessions: u32,
    redis: String,
    postgres: String,
}

fn args() -> Args {
    let mut a = Args {
        secs: 5,
        callers: 64,
        sessions: 64,
        redis: "redis://127.0.0.1:6379".into(),
        postgres: "postgres://postgres@127.0.0.1:5432/test".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--secs" => a.secs = value.parse().expect("--secs N"),
            "--callers" => a.callers = value.parse().expect("--callers N"),
            "--sessions" => a.sessions = value.parse().expect("--sessions N"),
            "--redis" => a.redis = value,
            "--postgres" => a.postgres = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn id(n: u32) -> SessionId {
    let mut b = [0x5Cu8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    SessionId(b)
}

struct Result {
    name: &'static str,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn measure(name: &'static str, store: Arc<dyn SessionStore>, a: &Args) -> Result {
    let start = now_ms();
    for n in 0..a.sessions {
        let r = SessionRecord {
            id: id(n),
            state: SessionState::Established,
            version: 1,
            suite: "AES-256-GCM".into(),
            client_addr: None,
            created_at_ms: start,
            last_used_at_ms: start,
            expires_at_ms: start + 3_600_000,
            idle_timeout_ms: 600_000,
            request_count: 0,
            sealed_secrets: vec![7; 96],
        };
        assert!(store.create(r).await.expect("create"), "fresh session");
    }
    // One sequence counter per session, shared by the callers that use it.
    let seqs: Arc<Vec<AtomicU64>> = Arc::new((0..a.sessions).map(|_| AtomicU64::new(0)).collect());
    let run = |deadline: Instant| {
        (0..a.callers)
            .map(|c| {
                let (store, seqs) = (store.clone(), seqs.clone());
                let n = c % a.sessions;
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let seq = seqs[n as usize].fetch_add(1, Ordering::Relaxed);
                        let mark = RequestMark {
                            id: id(n),
                            seq,
                            now_ms: now_ms(),
                            close: false,
                        };
                        let t = Instant::now();
                        let answer = store.check_request(mark).await.expect("check");
                        lat.push(t.elapsed().as_micros() as u64);
                        // Callers sharing a session can overtake each other by more
                        // than the window only in theory; anything else is a bug.
                        assert!(
                            matches!(answer, RequestCheck::Accepted { .. }),
                            "{answer:?}"
                        );
                    }
                    lat
                })
            })
            .collect::<Vec<_>>()
    };
    // Warm up (connections, statement caches, scripts), then measure.
    for t in run(Instant::now() + Duration::from_millis(500)) {
        t.await.expect("caller");
    }
    let began = Instant::now();
    let mut lat = Vec::new();
    for t in run(began + Duration::from_secs(a.secs)) {
        lat.extend(t.await.expect("caller"));
    }
    let elapsed = began.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Result {
        name,
        per_sec: lat.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let tag = format!("bench{}", std::process::id());
    let mut results = Vec::new();

    results.push(measure("memory (shared)", Arc::new(MemoryStore::shared()), &a).await);

    let redis_addr = format!("{}?prefix={tag}&retain=600", a.redis);
    let redis = RedisStore::connect(&redis_addr).await.expect("Redis");
    results.push(measure("redis", Arc::new(redis), &a).await);
    let mut c = redis::Client::open(a.redis.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis for cleanup");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{tag}:*"))
        .query(&mut c)
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query(&mut c).expect("DEL");
    }

    let sep = if a.postgres.contains('?') { '&' } else { '?' };
    let pg_addr = format!("{}{sep}schema={tag}", a.postgres);
    let pg = PostgresStore::connect(&pg_addr).await.expect("PostgreSQL");
    results.push(measure("postgres", Arc::new(pg), &a).await);
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&a.postgres)
            .await
            .expect("PostgreSQL for cleanup");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{tag}\" CASCADE"
        )))
        .execute(&mut c)
        .await
        .expect("drop schema");
    }

    let base = results[0].per_sec;
    println!(
        "check_request, {} callers on {} sessions, {} s each:",
        a.callers, a.sessions, a.secs
    );
    println!(
        "{:<16} {:>12} {:>8} {:>9} {:>9}",
        "store", "checks/s", "x memory", "p50 µs", "p99 µs"
    );
    for r in &results {
        println!(
            "{:<16} {:>12.0} {:>8.3} {:>9} {:>9}",
            r.name,
            r.per_sec,
            r.per_sec / base,
            r.p50_us,
            r.p99_us
        );
    }
}
