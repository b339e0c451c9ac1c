//! `PostgresStore` against the real server (`SESSIONCERT_TEST_POSTGRES`, default
//! postgres://postgres@127.0.0.1:5432/test). Every test uses its own schema and drops
//! it, even when it fails. An unreachable server fails these tests; nothing is skipped.
#![cfg(feature = "postgres")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::shared::{self, Store};
use common::*;
use sessioncert_proto::SessionState;
use sessioncert_store::{PostgresStore, RequestCheck, SessionStore, StoreError};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

fn server() -> String {
    std::env::var("SESSIONCERT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema no other test (or run) uses.
fn fresh_schema() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "sctest_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Runs SQL on its own connection, on its own thread and runtime (usable from Drop).
fn admin_sql(sql: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut c = PgConnection::connect(&server())
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Drops its schema when dropped (also when the test panics).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = admin_sql(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0)) {
            eprintln!("could not drop schema {}: {e}", self.0);
        }
    }
}

fn address(schema: &str) -> String {
    let base = server();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

async fn connect(schema: &str) -> PostgresStore {
    PostgresStore::connect(&address(schema))
        .await
        .expect("PostgreSQL must be running for these tests (see .ci/run)")
}

/// Two store objects ("instances") on one schema.
async fn postgres_pair() -> (Store, Store, Cleanup) {
    let schema = fresh_schema();
    let guard = Cleanup(schema.clone());
    let a = connect(&schema).await;
    let b = connect(&schema).await;
    (Arc::new(a), Arc::new(b), guard)
}

shared_contract!(postgres_pair);

/// Runs each backend-neutral property (tests/common) in a fresh schema.
macro_rules! on_postgres {
    ($($prop:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $prop() {
            let schema = fresh_schema();
            let _guard = Cleanup(schema.clone());
            let store = connect(&schema).await;
            common::$prop(&store).await;
        }
    )*};
}

on_postgres!(
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

async fn count(schema: &str, sql: &str) -> i64 {
    let mut c = PgConnection::connect(&server()).await.unwrap();
    sqlx::query_scalar(AssertSqlSafe(sql.replace("$S", &format!("\"{schema}\""))))
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_live_in_the_schema_and_schemas_are_separate() {
    let (sa, sb) = (fresh_schema(), fresh_schema());
    let (_ga, _gb) = (Cleanup(sa.clone()), Cleanup(sb.clone()));
    let (a, b) = (connect(&sa).await, connect(&sb).await);
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
    assert_eq!(
        count(&sa, "SELECT count(*) FROM $S.sessioncert_sessions").await,
        1
    );
    assert_eq!(
        count(&sb, "SELECT count(*) FROM $S.sessioncert_sessions").await,
        0
    );
    // The migrations ran once per schema; connecting again applies nothing new.
    drop(connect(&sa).await);
    assert_eq!(
        count(&sa, "SELECT count(*) FROM $S._sqlx_migrations").await,
        1
    );
    let public: i64 = count(
        &sa,
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name LIKE 'sessioncert%'",
    )
    .await;
    assert_eq!(public, 0, "nothing created outside the schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_build_is_refused() {
    let schema = fresh_schema();
    let _g = Cleanup(schema.clone());
    drop(connect(&schema).await);
    admin_sql(format!(
        "INSERT INTO \"{schema}\"._sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)"
    ))
    .unwrap();
    match PostgresStore::connect(&address(&schema)).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (9999, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_checks_stay_exact() {
    let schema = fresh_schema();
    let _g = Cleanup(schema.clone());
    let store: Store = Arc::new(connect(&schema).await);
    for n in 0..8 {
        store
            .create(record(n, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
    // 8 sessions x 100 sequence numbers, each fired twice, all at once: every number
    // runs exactly once, and each session's counts are 1..=100 with none repeated.
    let tasks: Vec<_> = (0..1_600u32)
        .map(|i| {
            let s = store.clone();
            let (n, seq) = (i % 8, u64::from(i / 16));
            tokio::spawn(async move {
                (
                    n,
                    s.check_request(shared::mark(n, seq, 2_000)).await.unwrap(),
                )
            })
        })
        .collect();
    let mut counts = vec![Vec::new(); 8];
    let mut replayed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (n, RequestCheck::Accepted { request_count }) => counts[n as usize].push(request_count),
            (_, RequestCheck::Replayed) => replayed += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(replayed, 800);
    for mut c in counts {
        c.sort_unstable();
        assert_eq!(c, (1..=100).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_errors_not_panics() {
    let schema = fresh_schema();
    let _g = Cleanup(schema.clone());
    let store = connect(&schema).await;
    store
        .create(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    for (set, col) in [
        ("request_count = -3", "request_count"),
        ("version = 70000", "version"),
        ("ended_at_ms = -1", "ended_at_ms"),
    ] {
        admin_sql(format!(
            "UPDATE \"{schema}\".sessioncert_sessions SET {set}"
        ))
        .unwrap();
        let listed = store.list(false).await;
        match listed {
            Err(StoreError::CorruptRow(msg)) => assert!(msg.contains(col), "{msg}"),
            other => panic!("{col}: {other:?}"),
        }
        admin_sql(format!("DELETE FROM \"{schema}\".sessioncert_sessions")).ok();
        store
            .create(record(1, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn bad_addresses_are_refused_without_the_password() {
    for (addr, needle) in [
        ("redis://u:hunter2@127.0.0.1:5432/test", "postgres://"),
        (
            "postgres://u:hunter2@127.0.0.1:5432/test?schema=a-b",
            "schema",
        ),
        (
            "postgres://u:hunter2@127.0.0.1:5432/test?schema=1x",
            "schema",
        ),
        (
            "postgres://u:hunter2@127.0.0.1:5432/test?scheme=x",
            "scheme",
        ),
        (
            "postgres://u:hunter2@127.0.0.1:5432/test?sslmode=sometimes",
            "sslmode",
        ),
        ("hunter2", "not a URL"),
    ] {
        match PostgresStore::connect(addr).await {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = PostgresStore::connect(&format!("postgres://u:hunter2@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Database(_)), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("refused"), "says why: {msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let schema = fresh_schema();
    let _g = Cleanup(schema.clone());
    let debug = format!("{:?}", connect(&schema).await);
    assert!(debug.contains("PostgresStore"), "{debug}");
}

#[tokio::test]
async fn an_unknown_database_is_a_clear_error_without_the_password() {
    let addr = server().replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    let addr = match addr.rfind('/') {
        Some(i) => format!("{}/no_such_db_sessioncert", &addr[..i]),
        None => addr,
    };
    let err = PostgresStore::connect(&addr).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Database(_)), "{msg}");
    assert!(msg.contains("no_such_db_sessioncert"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}
