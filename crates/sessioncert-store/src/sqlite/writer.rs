//! The single writer thread: drains the queue, applies a batch in one transaction,
//! commits, then answers every caller.

use rusqlite::{params, Connection, TransactionBehavior};
use sessioncert_proto::SessionId;
use tokio::sync::{mpsc, oneshot};

use super::rows::{self, to_db, LIVE};
use super::schema::CLEAN_SHUTDOWN;
use crate::{SessionWrite, StoreError};

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 1024;

pub(super) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write; every one has a caller waiting for its commit.
pub(super) enum Msg {
    Save {
        writes: Vec<SessionWrite>,
        ack: Ack<()>,
    },
    Close {
        id: SessionId,
        now_ms: u64,
        ack: Ack<bool>,
    },
    Sweep {
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
        ack: Ack<u64>,
    },
    /// Last message the writer handles; `mark_clean` sets the clean-shutdown flag.
    Shutdown { mark_clean: bool, ack: Ack<()> },
}

enum Outcome {
    Done,
    Closed(bool),
    Swept(u64),
}

fn apply_write(conn: &Connection, w: &SessionWrite) -> Result<(), StoreError> {
    match w {
        SessionWrite::Insert(r) => {
            conn.prepare_cached(
                "INSERT INTO sessions (id, state, version, suite, client_addr, created_at_ms, \
                 last_used_at_ms, expires_at_ms, idle_timeout_ms, request_count, sealed_secrets) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT(id) DO NOTHING",
            )?
            .execute(params![
                &r.id.as_bytes()[..],
                r.state.as_str(),
                i64::from(r.version),
                r.suite,
                r.client_addr,
                to_db(r.created_at_ms),
                to_db(r.last_used_at_ms),
                to_db(r.expires_at_ms),
                to_db(r.idle_timeout_ms),
                to_db(r.request_count),
                r.sealed_secrets,
            ])?;
        }
        SessionWrite::Progress(p) => {
            conn.prepare_cached(&format!(
                "UPDATE sessions SET \
                 state = CASE WHEN ?2 = 'established' THEN 'established' ELSE state END, \
                 last_used_at_ms = ?3, request_count = ?4, sealed_secrets = ?5 \
                 WHERE id = ?1 AND state IN {LIVE}"
            ))?
            .execute(params![
                &p.id.as_bytes()[..],
                p.state.as_str(),
                to_db(p.last_used_at_ms),
                to_db(p.request_count),
                p.sealed_secrets,
            ])?;
        }
        SessionWrite::End {
            id,
            state,
            at_ms,
            remains,
        } => {
            end_session(conn, id, state.as_str(), *at_ms, remains)?;
        }
    }
    Ok(())
}

/// Ends a live session; returns whether it was live.
fn end_session(
    conn: &Connection,
    id: &SessionId,
    state: &str,
    at_ms: u64,
    remains: &[u8],
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(&format!(
            "UPDATE sessions SET state = ?2, sealed_secrets = ?4, \
             ended_at_ms = ?3 WHERE id = ?1 AND state IN {LIVE}"
        ))?
        .execute(params![&id.as_bytes()[..], state, to_db(at_ms), remains])?;
    Ok(n > 0)
}

fn apply(conn: &Connection, msg: &Msg) -> Result<Outcome, StoreError> {
    match msg {
        Msg::Save { writes, .. } => {
            for w in writes {
                apply_write(conn, w)?;
            }
            Ok(Outcome::Done)
        }
        Msg::Close { id, now_ms, .. } => Ok(Outcome::Closed(end_session(
            conn,
            id,
            "closed",
            *now_ms,
            &[],
        )?)),
        Msg::Sweep {
            now_ms,
            matching_ttl_ms,
            retain_ended_ms,
            ..
        } => {
            // Written without additions that could overflow; same rule as
            // `SessionRecord::is_due_to_expire`.
            let expired = conn
                .prepare_cached(&format!(
                    "UPDATE sessions SET state = 'expired', sealed_secrets = X'', ended_at_ms = ?1 \
                     WHERE state IN {LIVE} AND ( \
                       expires_at_ms <= ?1 \
                       OR (last_used_at_ms <= ?1 AND ?1 - last_used_at_ms >= idle_timeout_ms) \
                       OR (state = 'matching' AND created_at_ms <= ?1 \
                           AND ?1 - created_at_ms >= ?2))"
                ))?
                .execute(params![to_db(*now_ms), to_db(*matching_ttl_ms)])?;
            if let Some(cutoff) = now_ms.checked_sub(*retain_ended_ms) {
                conn.prepare_cached(&format!(
                    "DELETE FROM sessions WHERE ended_at_ms < ?1 AND state NOT IN {LIVE}"
                ))?
                .execute(params![to_db(cutoff)])?;
            }
            Ok(Outcome::Swept(expired as u64))
        }
        Msg::Shutdown { mark_clean, .. } => {
            if *mark_clean {
                // The token file first: if the commit below fails, the database still
                // says "running" and the next start treats the stop as unclean.
                let db = conn
                    .path()
                    .map(std::path::PathBuf::from)
                    .ok_or_else(|| StoreError::Io(std::io::Error::other("database has no path")))?;
                let token = super::schema::write_clean_stop_token(&db)?;
                rows::meta_set(conn, CLEAN_SHUTDOWN, &token)?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// Applies `msgs` in one immediate transaction and commits.
fn apply_in_transaction(conn: &mut Connection, msgs: &[Msg]) -> Result<Vec<Outcome>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcomes = msgs
        .iter()
        .map(|m| apply(&tx, m))
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(outcomes)
}

pub(super) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: mpsc::Receiver<Msg>) -> Self {
        Writer { conn, rx }
    }

    /// Runs until shutdown or until every sender is gone (the store was dropped), in
    /// which case whatever is still queued is written first.
    pub(super) fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut stop = matches!(first, Msg::Shutdown { .. });
            // Everything queued meanwhile shares this commit (group commit): callers
            // that arrive while a commit is on disk are answered by the next one.
            let mut batch = vec![first];
            while !stop && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        stop = matches!(msg, Msg::Shutdown { .. });
                        batch.push(msg);
                    }
                    Err(_) => break,
                }
            }
            self.process(batch);
            if stop {
                break;
            }
        }
    }

    fn process(&mut self, batch: Vec<Msg>) {
        let outcomes: Vec<Result<Outcome, StoreError>> =
            match apply_in_transaction(&mut self.conn, &batch) {
                Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "session store batch failed; retrying one by one");
                    // Retry one message per transaction so one bad write cannot sink the
                    // others; each caller then gets its own result.
                    batch
                        .iter()
                        .map(|m| {
                            apply_in_transaction(&mut self.conn, std::slice::from_ref(m))
                                .map(|mut o| o.pop().unwrap_or(Outcome::Done))
                        })
                        .collect()
                }
            };
        for (msg, outcome) in batch.into_iter().zip(outcomes) {
            self.deliver(msg, outcome);
        }
    }

    fn deliver(&mut self, msg: Msg, outcome: Result<Outcome, StoreError>) {
        // A dropped receiver means the caller stopped waiting; nothing to do then.
        match msg {
            Msg::Save { ack, .. } => {
                let _ = ack.send(outcome.map(|_| ()));
            }
            Msg::Close { ack, .. } => {
                let _ = ack.send(outcome.map(|o| matches!(o, Outcome::Closed(true))));
            }
            Msg::Sweep { ack, .. } => {
                let _ = ack.send(outcome.map(|o| match o {
                    Outcome::Swept(n) => n,
                    _ => 0,
                }));
            }
            Msg::Shutdown { ack, .. } => {
                // Fold the WAL into the database file and truncate it, so no page image
                // (e.g. of wiped secrets) lingers in the -wal file after a clean stop.
                // A concurrent reader can make this fail; the data is committed anyway.
                if let Err(e) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
                }
                let _ = ack.send(outcome.map(|_| ()));
            }
        }
    }
}
