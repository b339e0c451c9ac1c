//! `RedisStore` against the real server (`SESSIONCERT_TEST_REDIS`, default
//! redis://127.0.0.1:6379). Every test uses its own key prefix and deletes its keys,
//! even when it fails. An unreachable server fails these tests; nothing is skipped.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::shared::{self, Store};
use common::*;
use sessioncert_proto::SessionState;
use sessioncert_store::{RedisStore, RequestCheck, SessionStore, StoreError};

fn server() -> String {
    std::env::var("SESSIONCERT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test (or run) uses.
fn fresh_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "sctest-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Deletes every key under its prefix when dropped (also when the test panics).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let keys = keys_under(&self.0);
        if !keys.is_empty() {
            let mut c = sync_conn();
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
    }
}

fn sync_conn() -> redis::Connection {
    redis::Client::open(server())
        .and_then(|c| c.get_connection())
        .expect("Redis reachable")
}

fn keys_under(prefix: &str) -> Vec<String> {
    let mut c = sync_conn();
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, mut batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .expect("SCAN");
        out.append(&mut batch);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

async fn connect(prefix: &str) -> RedisStore {
    RedisStore::connect(&format!("{}?prefix={prefix}&retain=3600", server()))
        .await
        .expect("Redis must be running for these tests (see .ci/run)")
}

/// Two store objects ("instances") on one prefix.
async fn redis_pair() -> (Store, Store, Cleanup) {
    let prefix = fresh_prefix();
    let guard = Cleanup(prefix.clone());
    let a = connect(&prefix).await;
    let b = connect(&prefix).await;
    (Arc::new(a), Arc::new(b), guard)
}

shared_contract!(redis_pair);

/// Runs each backend-neutral property (tests/common) on a fresh prefix.
macro_rules! on_redis {
    ($($prop:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $prop() {
            let prefix = fresh_prefix();
            let _guard = Cleanup(prefix.clone());
            let store = connect(&prefix).await;
            common::$prop(&store).await;
        }
    )*};
}

on_redis!(
    insert_load_round_trip,
    progress_updates_fields_and_establishes,
    progress_does_not_resurrect_ended_sessions,
    close_wipes_secrets_and_shows_in_ended_since,
    list_filters_and_never_shows_secrets,
    sweep_expires_wipes_and_deletes,
    writes_are_visible_when_save_returns,
    a_batch_applies_in_order_or_not_at_all,
    ended_sessions_stay_ended,
    load_live_returns_exactly_the_live_sessions,
    load_ended_returns_recent_ends_that_kept_remains,
);

#[tokio::test]
async fn keys_stay_under_the_prefix_and_prefixes_are_separate() {
    let (pa, pb) = (fresh_prefix(), fresh_prefix());
    let (_ga, _gb) = (Cleanup(pa.clone()), Cleanup(pb.clone()));
    let (a, b) = (connect(&pa).await, connect(&pb).await);
    assert_eq!(a.prefix(), pa);
    a.create(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    a.shared_value("seed", b"x".to_vec()).await.unwrap();
    assert_eq!(
        a.check_request(shared::mark(1, 0, 1_001)).await.unwrap(),
        RequestCheck::Accepted { request_count: 1 }
    );
    assert_eq!(b.load(&id(1)).await.unwrap(), None, "other deployment");
    assert_eq!(
        b.check_request(shared::mark(1, 0, 1_001)).await.unwrap(),
        RequestCheck::Unknown
    );
    assert_eq!(b.shared_value("seed", b"y".to_vec()).await.unwrap(), b"y");
    let mut keys = keys_under(&pa);
    keys.sort();
    let hex = hex::encode(id(1).0);
    assert_eq!(
        keys,
        vec![
            format!("{pa}:all"),
            format!("{pa}:live"),
            format!("{pa}:s:{hex}"),
            format!("{pa}:v:seed"),
        ]
    );
    // Nothing in another prefix's namespace: pb holds only its own value.
    assert_eq!(keys_under(&pb), vec![format!("{pb}:v:seed")]);
}

#[tokio::test]
async fn sessions_carry_a_ttl_of_lifetime_then_retention() {
    let prefix = fresh_prefix();
    let _g = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    let mut r = record(1, SessionState::Established, 1_000);
    r.expires_at_ms = 1_000 + 600_000;
    store.create(r).await.unwrap();
    let mut never = record(2, SessionState::Established, 1_000);
    never.expires_at_ms = u64::MAX;
    store.create(never).await.unwrap();
    let mut c = sync_conn();
    let ttl = |c: &mut redis::Connection, n: u32| -> i64 {
        redis::cmd("PTTL")
            .arg(format!("{prefix}:s:{}", hex::encode(id(n).0)))
            .query(c)
            .unwrap()
    };
    // Lifetime (600 s) plus retention (3600 s, from the address).
    let t = ttl(&mut c, 1);
    assert!((4_190_000..=4_200_000).contains(&t), "{t}");
    assert_eq!(
        ttl(&mut c, 2),
        -1,
        "a session that never expires waits for a sweep"
    );
    // Ended: retention from now.
    assert!(store.close(&id(1), 2_000).await.unwrap());
    assert!(store.close(&id(2), 2_000).await.unwrap());
    for n in [1, 2] {
        let t = ttl(&mut c, n);
        assert!((3_590_000..=3_600_000).contains(&t), "#{n}: {t}");
    }
}

#[tokio::test]
async fn a_session_dropped_by_its_ttl_leaves_no_trace() {
    let prefix = fresh_prefix();
    let _g = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    for n in 1..=3 {
        store
            .create(record(n, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
    assert!(store.close(&id(3), 1_500).await.unwrap());
    // What Redis does when a TTL runs out, done now.
    let mut c = sync_conn();
    for n in [1, 3] {
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:s:{}", hex::encode(id(n).0)))
            .query(&mut c)
            .unwrap();
    }
    assert_eq!(store.load(&id(1)).await.unwrap(), None);
    let listed: Vec<_> = store
        .list(false)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![id(2)]);
    assert_eq!(store.load_live().await.unwrap().len(), 1);
    assert_eq!(
        store
            .check_request(shared::mark(1, 0, 2_000))
            .await
            .unwrap(),
        RequestCheck::Unknown
    );
    // A sweep drops the dangling index entries.
    assert_eq!(store.sweep(2_000, 60_000, 1_000_000).await.unwrap(), 0);
    assert_eq!(store.sweep(2_000, 60_000, 0).await.unwrap(), 0);
    let mut keys = keys_under(&prefix);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("{prefix}:all"),
            format!("{prefix}:live"),
            format!("{prefix}:s:{}", hex::encode(id(2).0)),
        ]
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:all"))
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(members, vec![hex::encode(id(2).0)]);
}

#[tokio::test]
async fn corrupt_data_is_an_error_not_a_panic() {
    let prefix = fresh_prefix();
    let _g = Cleanup(prefix.clone());
    let store = connect(&prefix).await;
    store
        .create(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    let key = format!("{prefix}:s:{}", hex::encode(id(1).0));
    let mut c = sync_conn();
    for (field, value, what) in [
        ("win_bits", &b"short"[..], "window"),
        ("request_count", b"-3", "number"),
        ("state", b"bogus", "state"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(field)
            .arg(value)
            .query(&mut c)
            .unwrap();
        let check = store.check_request(shared::mark(1, 9, 1_001)).await;
        let load = store.load(&id(1)).await;
        assert!(check.is_err(), "{what}: {check:?}");
        if field != "win_bits" {
            assert!(
                matches!(load, Err(StoreError::CorruptRow(_))),
                "{what}: {load:?}"
            );
        }
        let _: () = redis::cmd("DEL").arg(&key).query(&mut c).unwrap();
        store
            .create(record(1, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_addresses_are_refused_without_the_password() {
    for (addr, needle) in [
        ("http://:hunter2@127.0.0.1:6379", "redis://"),
        ("rediss://:hunter2@127.0.0.1:6379", "redis://"),
        ("redis://:hunter2@127.0.0.1:6379?prefix=a%20b", "prefix"),
        ("redis://:hunter2@127.0.0.1:6379?prefix=", "prefix"),
        ("redis://:hunter2@127.0.0.1:6379?prefx=a", "prefx"),
        ("redis://:hunter2@127.0.0.1:6379?retain=0", "retain"),
        ("redis://:hunter2@127.0.0.1:6379?retain=soon", "retain"),
        ("hunter2", "not a URL"),
    ] {
        match RedisStore::connect(addr).await {
            Err(StoreError::BadAddress(msg)) => {
                assert!(msg.contains(needle), "{addr}: {msg}");
                assert!(!msg.contains("hunter2"), "{addr}: password in {msg}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_soon() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://:hunter2@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Database(_)), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let addr = server().replacen("redis://", "redis://nobody:hunter2@", 1);
    let err = RedisStore::connect(&addr).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Database(_)), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let debug = format!("{:?}", connect(&fresh_prefix()).await);
    assert!(debug.contains("RedisStore"), "{debug}");
}
