//! The PostgreSQL backend: a shared store ([`crate::ReplayAuthority::SharedStore`]).
//!
//! `check_request` calls are batched ([`crate::batch`]): the queued marks go in **one**
//! statement (`sessioncert_check` over arrays, one round trip and one commit), and each
//! caller gets its own row. The function decides each mark on its locked row, in order,
//! so every call stays atomic and isolated. See the crate documentation for the data
//! layout.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sessioncert_proto::{SessionId, SessionState};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::address::{check_name, Address};
use crate::batch::{BatchAnswer, CheckBatcher};
use crate::{
    ReplayAuthority, RequestCheck, RequestMark, SessionRecord, SessionStore, SessionSummary,
    SessionWrite, StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connections in the pool: the batchers' plus a few for everything else; small,
/// since every check batch is one statement.
const POOL_SIZE: u32 = 4;
/// Batcher tasks. One: while its batch is in flight the next one gathers, so batches
/// grow with the load; measured here (64 callers), one costs PostgreSQL 70-80 µs of CPU
/// per check against 85-100 µs with two or three, at the same throughput.
const BATCHERS: usize = 1;
/// Most marks in one statement.
const MAX_BATCH: usize = 256;
/// Queued marks beyond which callers wait for room.
const QUEUE: usize = 4096;
/// Times a batch is retried when PostgreSQL aborted it for a deadlock or a
/// serialization failure (nothing of it was applied).
const RETRIES: usize = 3;

// Pieces of SQL, as macros so every statement is one `concat!`ed literal (sqlx only
// takes static SQL, which keeps values out of statements).
macro_rules! live {
    () => {
        "('matching', 'established')"
    };
}
macro_rules! record_columns {
    () => {
        "id, state, version, suite, client_addr, created_at_ms, last_used_at_ms, \
         expires_at_ms, idle_timeout_ms, request_count, sealed_secrets, ended_at_ms"
    };
}
/// The record's columns with NULL for the secrets: listing never reads them.
macro_rules! summary_columns {
    () => {
        "id, state, version, suite, client_addr, created_at_ms, last_used_at_ms, \
         expires_at_ms, idle_timeout_ms, request_count, NULL::bytea, ended_at_ms"
    };
}

/// Address parameters handed on to sqlx unchanged.
const DRIVER_PARAMS: &[&str] = &[
    "sslmode",
    "application_name",
    "options",
    "statement-cache-capacity",
    "host",
    "port",
    "dbname",
    "user",
    "password",
];

/// A [`SessionStore`] on PostgreSQL, shared by every instance that uses the same
/// database and schema. Made by [`PostgresStore::connect`].
///
/// `Debug` shows the address without its password.
pub struct PostgresStore {
    pool: PgPool,
    checks: CheckBatcher,
    addr: Arc<Address>,
    schema: Option<String>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("address", &self.addr.display())
            .field("schema", &self.schema)
            .finish()
    }
}

/// u64 to bigint: values above i64::MAX ("never") become i64::MAX, which compares the
/// same way against any time the store sees.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn db_err(addr: &Address, e: impl fmt::Display) -> StoreError {
    StoreError::Database(format!("postgres: {}", addr.scrub(e)))
}

impl PostgresStore {
    /// Connects to `postgres://[user[:password]@]host[:port]/database[?schema=NAME]`
    /// (also `postgresql://`; sqlx's own parameters such as `sslmode` pass through),
    /// creates `schema` if it is named (the deployment's tables then live there, so
    /// deployments can share a database), and runs the migrations.
    ///
    /// Fails with [`StoreError::BadAddress`] for an address it cannot use,
    /// [`StoreError::SchemaTooNew`] when a newer build migrated the schema, and
    /// [`StoreError::Database`] otherwise; no message contains the password.
    pub async fn connect(address: &str) -> Result<PostgresStore, StoreError> {
        let mut addr = Address::parse(address, &["postgres", "postgresql"], "PostgreSQL")?;
        let [schema] = addr
            .take_params(&["schema"], DRIVER_PARAMS, "PostgreSQL")?
            .try_into()
            .map_err(|_| StoreError::BadAddress("PostgreSQL address parameters".into()))?;
        if let Some(s) = &schema {
            check_name(s, &[], "PostgreSQL schema")?;
        }
        let mut options = PgConnectOptions::from_str(addr.driver_url())
            .map_err(|e| {
                StoreError::BadAddress(format!(
                    "PostgreSQL address {}: {}",
                    addr.display(),
                    addr.scrub(e)
                ))
            })?
            .application_name("sessioncert")
            .statement_cache_capacity(64);
        if let Some(s) = &schema {
            options = options.options([("search_path", s)]);
        }
        // One direct connection first: the pool would retry until its timeout and then
        // report only that, not why (refused, unknown database, authentication).
        let probe = PgConnection::connect_with(&options).await.map_err(|e| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {}: {}",
                addr.display(),
                addr.scrub(e)
            ))
        })?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    addr.display(),
                    addr.scrub(e)
                ))
            })?;
        if let Some(s) = &schema {
            // The name was checked above: letters, digits and _ only.
            let created = sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{s}\""
            )))
            .execute(&pool)
            .await;
            if let Err(e) = created {
                // Two instances creating it at once: one of them sees a unique violation.
                let exists: Result<bool, _> = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                )
                .bind(s)
                .fetch_one(&pool)
                .await;
                if !matches!(exists, Ok(true)) {
                    return Err(db_err(&addr, e));
                }
            }
        }
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            MigrateError::VersionMissing(found) => StoreError::SchemaTooNew {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0) as u32,
            },
            e => db_err(&addr, e),
        })?;

        let addr = Arc::new(addr);
        let checks = {
            let (pool, addr) = (pool.clone(), addr.clone());
            CheckBatcher::spawn(BATCHERS, MAX_BATCH, QUEUE, move |marks| {
                let (pool, addr) = (pool.clone(), addr.clone());
                async move { check_batch(&pool, &marks, &addr).await }
            })
        };
        Ok(PostgresStore {
            pool,
            checks,
            addr,
            schema,
        })
    }

    fn err(&self, e: impl fmt::Display) -> StoreError {
        db_err(&self.addr, e)
    }

    async fn records(
        &self,
        sql: &'static str,
        bind: Option<i64>,
    ) -> Result<Vec<(SessionRecord, Option<u64>)>, StoreError> {
        let mut q = sqlx::query(sql);
        if let Some(v) = bind {
            q = q.bind(v);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter().map(record_from_row).collect()
    }
}

/// Decides a batch of marks in one statement.
async fn check_batch(pool: &PgPool, jobs: &[RequestMark], addr: &Address) -> BatchAnswer {
    let ids: Vec<Vec<u8>> = jobs.iter().map(|j| j.id.0.to_vec()).collect();
    // Bit-cast: the function reads negative values back as u64.
    let seqs: Vec<i64> = jobs
        .iter()
        .map(|j| i64::from_ne_bytes(j.seq.to_ne_bytes()))
        .collect();
    let nows: Vec<i64> = jobs.iter().map(|j| to_db(j.now_ms)).collect();
    let closes: Vec<bool> = jobs.iter().map(|j| j.close).collect();
    let mut tries = 0;
    let rows = loop {
        let result: Result<Vec<(i32, i16, Option<String>)>, sqlx::Error> =
            sqlx::query_as("SELECT ord, outcome, detail FROM sessioncert_check($1, $2, $3, $4)")
                .bind(&ids)
                .bind(&seqs)
                .bind(&nows)
                .bind(&closes)
                .fetch_all(pool)
                .await;
        match result {
            Ok(rows) => break rows,
            Err(e) if tries < RETRIES && retryable(&e) => tries += 1,
            Err(e) => return Err(db_err(addr, e)),
        }
    };
    let mut answers: Vec<Option<Result<RequestCheck, StoreError>>> =
        (0..jobs.len()).map(|_| None).collect();
    for (ord, outcome, detail) in rows {
        let index = usize::try_from(ord)
            .ok()
            .and_then(|o| o.checked_sub(1))
            .filter(|&i| i < jobs.len());
        let (Some(i), Some(job)) = (index, index.and_then(|i| jobs.get(i))) else {
            return Err(db_err(addr, format!("check answered for mark {ord}")));
        };
        let id = job.id;
        let corrupt = |what: String| StoreError::CorruptRow(format!("session {id}: {what}"));
        let detail = detail.unwrap_or_default();
        answers[i] = Some(match outcome {
            0 => detail
                .parse()
                .map(|request_count| RequestCheck::Accepted { request_count })
                .map_err(|_| corrupt(format!("request_count {detail:?}"))),
            1 => Ok(RequestCheck::Replayed),
            2 => detail
                .parse()
                .map(RequestCheck::Ended)
                .map_err(|e| corrupt(format!("state: {e}"))),
            3 => Ok(RequestCheck::Unknown),
            other => Err(StoreError::Database(format!(
                "postgres: check answered outcome {other}"
            ))),
        });
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(db_err(addr, "a mark got no answer"))))
        .collect())
}

/// Deadlock detected or serialization failure: PostgreSQL rolled the statement back.
fn retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

fn corrupt(id: Option<&SessionId>, what: impl fmt::Display) -> StoreError {
    match id {
        Some(id) => StoreError::CorruptRow(format!("session {id}: {what}")),
        None => StoreError::CorruptRow(what.to_string()),
    }
}

fn col<'r, T>(row: &'r PgRow, i: usize, name: &str, id: Option<&SessionId>) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i)
        .map_err(|e| corrupt(id, format!("column {name}: {e}")))
}

fn u64_col(row: &PgRow, i: usize, name: &str, id: &SessionId) -> Result<u64, StoreError> {
    let v: i64 = col(row, i, name, Some(id))?;
    u64::try_from(v).map_err(|_| corrupt(Some(id), format!("column {name} is negative ({v})")))
}

fn id_col(row: &PgRow, i: usize) -> Result<SessionId, StoreError> {
    let b: Vec<u8> = col(row, i, "id", None)?;
    <[u8; 16]>::try_from(b.as_slice())
        .map(SessionId)
        .map_err(|_| corrupt(None, format!("id of {} bytes", b.len())))
}

/// A row of `record_columns!()` (or `summary_columns!()`, whose secrets are NULL).
fn record_from_row(row: &PgRow) -> Result<(SessionRecord, Option<u64>), StoreError> {
    let id = id_col(row, 0)?;
    let state: String = col(row, 1, "state", Some(&id))?;
    let state = SessionState::from_str(&state).map_err(|e| corrupt(Some(&id), e))?;
    let version: i32 = col(row, 2, "version", Some(&id))?;
    let ended: Option<i64> = col(row, 11, "ended_at_ms", Some(&id))?;
    let record = SessionRecord {
        id,
        state,
        version: u16::try_from(version)
            .map_err(|_| corrupt(Some(&id), format!("version {version} out of range")))?,
        suite: col(row, 3, "suite", Some(&id))?,
        client_addr: col(row, 4, "client_addr", Some(&id))?,
        created_at_ms: u64_col(row, 5, "created_at_ms", &id)?,
        last_used_at_ms: u64_col(row, 6, "last_used_at_ms", &id)?,
        expires_at_ms: u64_col(row, 7, "expires_at_ms", &id)?,
        idle_timeout_ms: u64_col(row, 8, "idle_timeout_ms", &id)?,
        request_count: u64_col(row, 9, "request_count", &id)?,
        sealed_secrets: col::<Option<Vec<u8>>>(row, 10, "sealed_secrets", Some(&id))?
            .unwrap_or_default(),
    };
    let ended = ended
        .map(|v| {
            u64::try_from(v)
                .map_err(|_| corrupt(Some(&id), format!("column ended_at_ms is negative ({v})")))
        })
        .transpose()?;
    Ok((record, ended))
}

const INSERT: &str = "INSERT INTO sessioncert_sessions (id, state, version, suite, client_addr, \
     created_at_ms, last_used_at_ms, expires_at_ms, idle_timeout_ms, request_count, \
     sealed_secrets) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO NOTHING";

fn insert(
    r: &SessionRecord,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(INSERT)
        .bind(&r.id.0[..])
        .bind(r.state.as_str())
        .bind(i32::from(r.version))
        .bind(&r.suite)
        .bind(r.client_addr.as_deref())
        .bind(to_db(r.created_at_ms))
        .bind(to_db(r.last_used_at_ms))
        .bind(to_db(r.expires_at_ms))
        .bind(to_db(r.idle_timeout_ms))
        .bind(to_db(r.request_count))
        .bind(&r.sealed_secrets[..])
}

#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    fn replay_authority(&self) -> ReplayAuthority {
        ReplayAuthority::SharedStore
    }

    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            record_columns!(),
            " FROM sessioncert_sessions WHERE state IN ",
            live!()
        );
        Ok(self
            .records(sql, None)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        writes.iter().try_for_each(SessionWrite::check)?;
        if writes.is_empty() {
            return Ok(());
        }
        // Rows are locked in id order, like the check batches, so the two never
        // deadlock; the sort is stable, so one session's writes keep their order
        // (and writes to different sessions commute).
        let mut writes = writes;
        writes.sort_by_key(SessionWrite::id);
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for w in &writes {
            let q = match w {
                SessionWrite::Insert(r) => insert(r),
                SessionWrite::Progress(p) => sqlx::query(concat!(
                    "UPDATE sessioncert_sessions SET ",
                    "state = CASE WHEN $2 = 'established' THEN 'established' ELSE state END, ",
                    "last_used_at_ms = $3, request_count = $4, sealed_secrets = $5 ",
                    "WHERE id = $1 AND state IN ",
                    live!()
                ))
                .bind(&p.id.0[..])
                .bind(p.state.as_str())
                .bind(to_db(p.last_used_at_ms))
                .bind(to_db(p.request_count))
                .bind(&p.sealed_secrets[..]),
                // A live session ends; one a request check ended (secrets wiped, no
                // remains yet) takes the remains and keeps its state and end time.
                SessionWrite::End {
                    id,
                    state,
                    at_ms,
                    remains,
                } => sqlx::query(concat!(
                    "UPDATE sessioncert_sessions SET ",
                    "state = CASE WHEN state IN ",
                    live!(),
                    " THEN $2 ELSE state END, ",
                    "ended_at_ms = CASE WHEN state IN ",
                    live!(),
                    " THEN $3 ELSE ended_at_ms END, ",
                    "sealed_secrets = $4 ",
                    "WHERE id = $1 AND (state IN ",
                    live!(),
                    " OR length(sealed_secrets) = 0)"
                ))
                .bind(&id.0[..])
                .bind(state.as_str())
                .bind(to_db(*at_ms))
                .bind(&remains[..]),
            };
            q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM sessioncert_sessions WHERE id = $1"
        ))
        .bind(&id.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.as_ref()
            .map(record_from_row)
            .transpose()
            .map(|r| r.map(|(r, _)| r))
    }

    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE sessioncert_sessions ",
            "SET state = 'closed', ended_at_ms = $2, sealed_secrets = '\\x'::bytea ",
            "WHERE id = $1 AND state IN ",
            live!()
        ))
        .bind(&id.0[..])
        .bind(to_db(now_ms))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        let sql = concat!(
            "SELECT ",
            record_columns!(),
            " FROM sessioncert_sessions WHERE ended_at_ms >= $1 AND state NOT IN ",
            live!(),
            " AND length(sealed_secrets) > 0"
        );
        Ok(self
            .records(sql, Some(to_db(since_ms)))
            .await?
            .into_iter()
            .filter_map(|(r, ended)| Some((r, ended?)))
            .collect())
    }

    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM sessioncert_sessions WHERE ended_at_ms >= $1 \
             ORDER BY ended_at_ms, id",
        )
        .bind(to_db(since_ms))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| id_col(r, 0)).collect()
    }

    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        let sql = if live_only {
            concat!(
                "SELECT ",
                summary_columns!(),
                " FROM sessioncert_sessions WHERE state IN ",
                live!(),
                " ORDER BY created_at_ms DESC, id DESC"
            )
        } else {
            concat!(
                "SELECT ",
                summary_columns!(),
                " FROM sessioncert_sessions ORDER BY created_at_ms DESC, id DESC"
            )
        };
        Ok(self
            .records(sql, None)
            .await?
            .into_iter()
            .map(|(r, ended_at_ms)| SessionSummary {
                ended_at_ms,
                ..r.summary()
            })
            .collect())
    }

    async fn sweep(
        &self,
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
    ) -> Result<u64, StoreError> {
        // Rows being checked right now are skipped (SKIP LOCKED): the check applies the
        // same rule, and the next sweep gets them. So a sweep never waits for, or
        // deadlocks with, request checks.
        let expired = sqlx::query(concat!(
            "WITH due AS (SELECT id FROM sessioncert_sessions WHERE state IN ",
            live!(),
            " AND (expires_at_ms <= $1 OR idle_timeout_ms <= $1 - last_used_at_ms ",
            "OR (state = 'matching' AND $2 <= $1 - created_at_ms)) ",
            "ORDER BY id FOR UPDATE SKIP LOCKED) ",
            "UPDATE sessioncert_sessions s ",
            "SET state = 'expired', ended_at_ms = $1, sealed_secrets = '\\x'::bytea ",
            "FROM due WHERE s.id = due.id"
        ))
        .bind(to_db(now_ms))
        .bind(to_db(matching_ttl_ms))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        if let Some(cutoff) = now_ms.checked_sub(retain_ended_ms) {
            sqlx::query(
                "DELETE FROM sessioncert_sessions WHERE id IN ( \
                     SELECT id FROM sessioncert_sessions WHERE ended_at_ms < $1 \
                     ORDER BY id FOR UPDATE SKIP LOCKED)",
            )
            .bind(to_db(cutoff))
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(expired)
    }

    /// Nothing to do: every write is already committed, and other instances keep using
    /// the database.
    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create(&self, record: SessionRecord) -> Result<bool, StoreError> {
        SessionWrite::Insert(record.clone()).check()?;
        let done = insert(&record)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn check_request(&self, mark: RequestMark) -> Result<RequestCheck, StoreError> {
        self.checks
            .check(mark, || self.err("the check batcher has stopped"))
            .await
    }

    async fn shared_value(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        // One statement: inserts the candidate, or (on conflict) returns the stored
        // value, locking its row so every caller gets the same answer.
        sqlx::query_scalar(
            "INSERT INTO sessioncert_values (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING value",
        )
        .bind(name)
        .bind(&candidate[..])
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
