//! The Redis backend: a shared store ([`crate::ReplayAuthority::SharedStore`]).
//!
//! Every call goes over one multiplexed connection (a [`ConnectionManager`], which
//! reconnects), so concurrent calls are pipelined. Each operation that reads and then
//! writes is one Lua script (EVALSHA), so it runs atomically on the server.
//! `check_request` calls are batched ([`crate::batch`]): the queued marks go in one
//! script, which decides them one by one, in order; a round trip to Redis costs more
//! CPU on both sides than deciding a mark. See the crate documentation for the data
//! layout.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use sessioncert_proto::{SessionId, SessionState};

use crate::address::{check_name, Address};
use crate::batch::{BatchAnswer, CheckBatcher};
use crate::{
    ReplayAuthority, RequestCheck, RequestMark, SessionRecord, SessionStore, SessionSummary,
    SessionWrite, StoreError,
};

/// Longest TTL set on a session (about 100 years); a longer one (a session that never
/// expires) gets none, and waits for a sweep.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// Sessions handed to one sweep script, so no script runs long.
const SWEEP_CHUNK: usize = 256;
/// Batcher tasks for `check_request`. One: the next batch gathers while one is in
/// flight. Measured here (16 clients, `scripts/bench-stores.sh`-like load), batching
/// cut Redis's CPU per check from 58 to 43-46 µs; a second batcher changed nothing.
const CHECK_BATCHERS: usize = 1;
/// Most marks in one check script (each is a few microseconds of Redis's one thread).
const MAX_CHECK_BATCH: usize = 64;
/// Queued marks beyond which callers wait for room.
const CHECK_QUEUE: usize = 4096;
/// Sessions read per pipeline by the listing calls.
const READ_CHUNK: usize = 512;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("common.lua"), include_str!($file))))
    };
}

static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("common.lua"),
        include_str!("check_one.lua"),
        include_str!("check.lua")
    ))
});
static SAVE: LazyLock<Script> = script!("save.lua");
static CLOSE: LazyLock<Script> = script!("close.lua");
static SWEEP_EXPIRE: LazyLock<Script> = script!("sweep_expire.lua");
static SWEEP_DELETE: LazyLock<Script> = script!("sweep_delete.lua");

/// The hash fields a record is read from, in this order.
const FIELDS: [&str; 11] = [
    "state",
    "version",
    "suite",
    "client_addr",
    "created_at_ms",
    "last_used_at_ms",
    "expires_at_ms",
    "idle_timeout_ms",
    "request_count",
    "sealed_secrets",
    "ended_at_ms",
];

/// A [`SessionStore`] on Redis (7.0 or newer), shared by every instance that uses the
/// same server and prefix. Made by [`RedisStore::connect`].
///
/// `Debug` shows the address without its password.
pub struct RedisStore {
    conn: ConnectionManager,
    checks: CheckBatcher,
    keys: Arc<Keys>,
    retain_ms: u64,
    addr: Arc<Address>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.addr.display())
            .field("prefix", &self.keys.prefix)
            .field("retain_ms", &self.retain_ms)
            .finish()
    }
}

struct Keys {
    prefix: String,
    all: String,
    live: String,
    ended: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            all: format!("{prefix}:all"),
            live: format!("{prefix}:live"),
            ended: format!("{prefix}:ended"),
        }
    }

    fn session(&self, member: &str) -> String {
        format!("{}:s:{member}", self.prefix)
    }

    fn value(&self, name: &str) -> String {
        format!("{}:v:{name}", self.prefix)
    }
}

/// A session's member in the indexes (and the end of its key): lower-case hex, which
/// sorts like the id's bytes.
fn member(id: &SessionId) -> String {
    hex::encode(id.0)
}

fn id_of(member: &str) -> Result<SessionId, StoreError> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(member, &mut b).map_err(|_| {
        StoreError::CorruptRow(format!("index member {member:?} is not a session id"))
    })?;
    Ok(SessionId(b))
}

impl RedisStore {
    /// The key prefix when the address names none.
    pub const DEFAULT_PREFIX: &'static str = "sessioncert";
    /// How long an ended session stays (seconds) when the address names no `retain`:
    /// the server's default `retain_ended_ms`.
    pub const DEFAULT_RETAIN_S: u64 = 24 * 3600;

    /// Connects to `redis://[user:password@]host:port[/db][?prefix=NAME][&retain=SECONDS]`.
    ///
    /// Every key lives under `prefix` (default [`RedisStore::DEFAULT_PREFIX`]; letters,
    /// digits, `_`, `-`, `.`), so several deployments can share one Redis. `retain` is
    /// how long an ended session's keys stay before Redis drops them (default
    /// [`RedisStore::DEFAULT_RETAIN_S`]); a sweep deletes them earlier if asked to keep
    /// less.
    ///
    /// Fails with [`StoreError::BadAddress`] for an address it cannot use and
    /// [`StoreError::Database`] when the server cannot be reached; neither message
    /// contains the password.
    pub async fn connect(address: &str) -> Result<RedisStore, StoreError> {
        let mut addr = Address::parse(address, &["redis"], "Redis")?;
        let [prefix, retain] = addr
            .take_params(&["prefix", "retain"], &[], "Redis")?
            .try_into()
            .map_err(|_| StoreError::BadAddress("Redis address parameters".into()))?;
        let prefix = prefix.unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned());
        check_name(&prefix, &['-', '.'], "Redis key prefix")?;
        let retain_s = match retain {
            None => Self::DEFAULT_RETAIN_S,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_TTL_MS / 1000).contains(s))
                .ok_or_else(|| {
                    StoreError::BadAddress(format!(
                        "Redis address {}: retain must be a number of seconds, at least 1",
                        addr.display()
                    ))
                })?,
        };
        let client = redis::Client::open(addr.driver_url()).map_err(|e| {
            StoreError::BadAddress(format!(
                "Redis address {}: {}",
                addr.display(),
                addr.scrub(e)
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // Long enough for a sweep chunk on a busy machine; a timed-out check is an
            // error (the request does not run), never an acceptance.
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| {
                StoreError::Database(format!(
                    "cannot connect to Redis at {}: {}",
                    addr.display(),
                    addr.scrub(e)
                ))
            })?;
        let keys = Arc::new(Keys::new(&prefix));
        let addr = Arc::new(addr);
        let retain_ms = retain_s * 1000;
        let checks = {
            let (conn, keys, addr) = (conn.clone(), keys.clone(), addr.clone());
            let retain = Arc::<str>::from(retain_ms.to_string());
            CheckBatcher::spawn(CHECK_BATCHERS, MAX_CHECK_BATCH, CHECK_QUEUE, move |marks| {
                let (conn, keys, addr, retain) =
                    (conn.clone(), keys.clone(), addr.clone(), retain.clone());
                async move { check_batch(conn, &keys, &retain, &addr, &marks).await }
            })
        };
        let store = RedisStore {
            conn,
            checks,
            keys,
            retain_ms,
            addr,
        };
        store.ping().await?;
        Ok(store)
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    fn err(&self, e: RedisError) -> StoreError {
        StoreError::Database(format!("redis: {}", self.addr.scrub(e)))
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Reads the records of `members` (missing ones are skipped), with their end times.
    async fn read(
        &self,
        members: &[String],
    ) -> Result<Vec<(SessionRecord, Option<u64>)>, StoreError> {
        let mut out = Vec::with_capacity(members.len());
        for chunk in members.chunks(READ_CHUNK) {
            let mut pipe = redis::pipe();
            for m in chunk {
                pipe.cmd("HMGET").arg(self.keys.session(m)).arg(&FIELDS[..]);
            }
            let mut conn = self.conn.clone();
            let rows: Vec<Vec<Option<Vec<u8>>>> =
                pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
            for (m, row) in chunk.iter().zip(rows) {
                if let Some(r) = decode(id_of(m)?, row)? {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    async fn members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("ZRANGE").arg(index).arg(0).arg(-1))
            .await
    }

    async fn ended_members(&self, min: &str, max: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.ended)
                .arg(min)
                .arg(max),
        )
        .await
    }

    fn retain_arg(&self) -> String {
        self.retain_ms.to_string()
    }

    async fn apply(&self, writes: &[SessionWrite]) -> Result<Vec<i64>, StoreError> {
        let mut inv = SAVE.prepare_invoke();
        inv.key(&self.keys.all)
            .key(&self.keys.live)
            .key(&self.keys.ended)
            .arg(self.retain_arg());
        for w in writes {
            let m = member(&w.id());
            inv.key(self.keys.session(&m));
            match w {
                SessionWrite::Insert(r) => {
                    let ttl = r
                        .expires_at_ms
                        .saturating_sub(r.created_at_ms)
                        .saturating_add(self.retain_ms);
                    inv.arg("I")
                        .arg(&m)
                        .arg(r.state.as_str())
                        .arg(r.version.to_string())
                        .arg(&r.suite)
                        .arg(if r.client_addr.is_some() { "1" } else { "0" })
                        .arg(r.client_addr.as_deref().unwrap_or(""))
                        .arg(r.created_at_ms.to_string())
                        .arg(r.last_used_at_ms.to_string())
                        .arg(r.expires_at_ms.to_string())
                        .arg(r.idle_timeout_ms.to_string())
                        .arg(r.request_count.to_string())
                        .arg(&r.sealed_secrets[..])
                        .arg(if ttl <= MAX_TTL_MS {
                            ttl.to_string()
                        } else {
                            String::new()
                        });
                }
                SessionWrite::Progress(p) => {
                    inv.arg("P")
                        .arg(&m)
                        .arg(p.state.as_str())
                        .arg(p.last_used_at_ms.to_string())
                        .arg(p.request_count.to_string())
                        .arg(&p.sealed_secrets[..]);
                }
                SessionWrite::End {
                    state,
                    at_ms,
                    remains,
                    ..
                } => {
                    inv.arg("E")
                        .arg(&m)
                        .arg(state.as_str())
                        .arg(at_ms.to_string())
                        .arg(&remains[..]);
                }
            }
        }
        self.run(&inv).await
    }
}

fn corrupt(id: &SessionId, what: impl fmt::Display) -> StoreError {
    StoreError::CorruptRow(format!("session {id}: {what}"))
}

fn text(id: &SessionId, name: &str, v: Option<Vec<u8>>) -> Result<String, StoreError> {
    let v = v.ok_or_else(|| corrupt(id, format!("field {name} missing")))?;
    String::from_utf8(v).map_err(|_| corrupt(id, format!("field {name} is not text")))
}

fn number<T: std::str::FromStr>(
    id: &SessionId,
    name: &str,
    v: Option<Vec<u8>>,
) -> Result<T, StoreError> {
    let t = text(id, name, v)?;
    t.parse()
        .map_err(|_| corrupt(id, format!("field {name} is not a valid number ({t:?})")))
}

/// A record from its HMGET row ([`FIELDS`]); `None` when the hash does not exist.
fn decode(
    id: SessionId,
    row: Vec<Option<Vec<u8>>>,
) -> Result<Option<(SessionRecord, Option<u64>)>, StoreError> {
    let Ok::<[Option<Vec<u8>>; 11], _>(
        [state, version, suite, addr, created, used, expires, idle, count, secrets, ended],
    ) = row.try_into()
    else {
        return Err(corrupt(&id, "unexpected reply shape"));
    };
    if state.is_none() {
        return Ok(None);
    }
    let state_text = text(&id, "state", state)?;
    let state: SessionState = state_text
        .parse()
        .map_err(|e| corrupt(&id, format!("field state: {e}")))?;
    let record = SessionRecord {
        id,
        state,
        version: number(&id, "version", version)?,
        suite: text(&id, "suite", suite)?,
        client_addr: addr
            .map(|a| text(&id, "client_addr", Some(a)))
            .transpose()?,
        created_at_ms: number(&id, "created_at_ms", created)?,
        last_used_at_ms: number(&id, "last_used_at_ms", used)?,
        expires_at_ms: number(&id, "expires_at_ms", expires)?,
        idle_timeout_ms: number(&id, "idle_timeout_ms", idle)?,
        request_count: number(&id, "request_count", count)?,
        sealed_secrets: secrets.unwrap_or_default(),
    };
    let ended = ended
        .map(|e| number(&id, "ended_at_ms", Some(e)))
        .transpose()?;
    Ok(Some((record, ended)))
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    fn replay_authority(&self) -> ReplayAuthority {
        ReplayAuthority::SharedStore
    }

    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let members = self.members(&self.keys.live).await?;
        Ok(self
            .read(&members)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.state.is_live())
            .collect())
    }

    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        writes.iter().try_for_each(SessionWrite::check)?;
        if !writes.is_empty() {
            self.apply(&writes).await?;
        }
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.read(&[member(id)]).await?.pop().map(|(r, _)| r))
    }

    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        let m = member(id);
        let mut inv = CLOSE.prepare_invoke();
        inv.key(self.keys.session(&m))
            .key(&self.keys.live)
            .key(&self.keys.ended)
            .arg(now_ms.to_string())
            .arg(&m)
            .arg(self.retain_arg());
        Ok(self.run::<i64>(&inv).await? == 1)
    }

    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        let members = self.ended_members(&since_ms.to_string(), "+inf").await?;
        Ok(self
            .read(&members)
            .await?
            .into_iter()
            .filter_map(|(r, ended)| {
                let ended = ended?;
                (ended >= since_ms && !r.state.is_live() && !r.sealed_secrets.is_empty())
                    .then_some((r, ended))
            })
            .collect())
    }

    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        // Ordered by end time, then id (the members' hex sorts like the ids' bytes).
        self.ended_members(&since_ms.to_string(), "+inf")
            .await?
            .iter()
            .map(|m| id_of(m))
            .collect()
    }

    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        let index = if live_only {
            &self.keys.live
        } else {
            &self.keys.all
        };
        let members = self.members(index).await?;
        let mut out: Vec<SessionSummary> = self
            .read(&members)
            .await?
            .into_iter()
            .filter(|(r, _)| !live_only || r.state.is_live())
            .map(|(r, ended_at_ms)| SessionSummary {
                ended_at_ms,
                ..r.summary()
            })
            .collect();
        // Sorted here, exactly: index scores are doubles.
        out.sort_unstable_by_key(|s| std::cmp::Reverse((s.created_at_ms, s.id)));
        Ok(out)
    }

    async fn sweep(
        &self,
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
    ) -> Result<u64, StoreError> {
        let now = now_ms.to_string();
        let ttl = matching_ttl_ms.to_string();
        let mut expired = 0u64;
        let live = self.members(&self.keys.live).await?;
        for chunk in live.chunks(SWEEP_CHUNK) {
            let mut inv = SWEEP_EXPIRE.prepare_invoke();
            inv.key(&self.keys.all)
                .key(&self.keys.live)
                .key(&self.keys.ended)
                .arg(&now)
                .arg(&ttl)
                .arg(self.retain_arg());
            for m in chunk {
                inv.key(self.keys.session(m)).arg(m);
            }
            expired += self.run::<u64>(&inv).await?;
        }
        if let Some(cutoff) = now_ms.checked_sub(retain_ended_ms) {
            let cutoff = cutoff.to_string();
            // Inclusive bound: the script decides exactly which are older.
            let old = self.ended_members("-inf", &cutoff).await?;
            for chunk in old.chunks(SWEEP_CHUNK) {
                let mut inv = SWEEP_DELETE.prepare_invoke();
                inv.key(&self.keys.all)
                    .key(&self.keys.live)
                    .key(&self.keys.ended)
                    .arg(&cutoff);
                for m in chunk {
                    inv.key(self.keys.session(m)).arg(m);
                }
                self.run::<u64>(&inv).await?;
            }
        }
        Ok(expired)
    }

    /// Nothing to do: every write is already in Redis, and other instances keep using it.
    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create(&self, record: SessionRecord) -> Result<bool, StoreError> {
        let write = SessionWrite::Insert(record);
        write.check()?;
        Ok(self.apply(std::slice::from_ref(&write)).await?.first() == Some(&1))
    }

    async fn check_request(&self, mark: RequestMark) -> Result<RequestCheck, StoreError> {
        self.checks
            .check(mark, || {
                StoreError::Database("redis: the check batcher has stopped".into())
            })
            .await
    }

    async fn shared_value(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        // SET NX GET (Redis 7): stores the candidate unless a value exists, and answers
        // the value that was there, in one atomic command.
        let old: Option<Vec<u8>> = self
            .query(
                redis::cmd("SET")
                    .arg(self.keys.value(name))
                    .arg(&candidate[..])
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        Ok(old.unwrap_or(candidate))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

/// Decides a batch of marks in one script (`check.lua`).
async fn check_batch(
    mut conn: ConnectionManager,
    keys: &Keys,
    retain: &str,
    addr: &Address,
    marks: &[RequestMark],
) -> BatchAnswer {
    let mut inv = CHECK.prepare_invoke();
    inv.key(&keys.live).key(&keys.ended).arg(retain);
    for mark in marks {
        let m = member(&mark.id);
        inv.key(keys.session(&m))
            .arg(mark.seq.to_string())
            .arg(
                mark.seq
                    .checked_add(1)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .arg((mark.seq % sessioncert_proto::replay::WINDOW).to_string())
            .arg(mark.now_ms.to_string())
            .arg(if mark.close { "1" } else { "0" })
            .arg(m);
    }
    let answers: Vec<(i64, String)> = inv
        .invoke_async(&mut conn)
        .await
        .map_err(|e| StoreError::Database(format!("redis: {}", addr.scrub(e))))?;
    if answers.len() != marks.len() {
        return Err(StoreError::Database(format!(
            "redis: check script answered {} of {} marks",
            answers.len(),
            marks.len()
        )));
    }
    Ok(marks
        .iter()
        .zip(answers)
        .map(|(mark, (code, detail))| match code {
            0 => detail
                .parse()
                .map(|request_count| RequestCheck::Accepted { request_count })
                .map_err(|_| corrupt(&mark.id, format!("request_count {detail:?}"))),
            1 => Ok(RequestCheck::Replayed),
            2 => detail
                .parse()
                .map(RequestCheck::Ended)
                .map_err(|e| corrupt(&mark.id, format!("field state: {e}"))),
            3 => Ok(RequestCheck::Unknown),
            4 => Err(corrupt(&mark.id, detail)),
            other => Err(StoreError::Database(format!(
                "redis: check script answered {other}"
            ))),
        })
        .collect())
}
