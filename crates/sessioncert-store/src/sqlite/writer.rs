//! The single writer thread: drains the queue, applies a batch in one transaction,
//! commits, then acknowledges waiters.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use rusqlite::{params, Connection, TransactionBehavior};
use sessioncert_proto::{SessionId, SessionState};
use tokio::sync::oneshot;
use zeroize::Zeroize;

use super::rows::{self, to_db, LIVE};
use super::schema::CLEAN_SHUTDOWN;
use super::Shared;
use crate::{SessionProgress, SessionRecord, StoreError};

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 8192;
/// How long fire-and-forget writes wait for company before they are committed.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

pub(super) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued write.
pub(super) enum Msg {
    Insert {
        seq: u64,
        record: SessionRecord,
    },
    Progress {
        seq: u64,
        progress: SessionProgress,
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
    /// `report`: whether to report (and forget) earlier fire-and-forget failures;
    /// internal read-your-writes syncs do not.
    Flush {
        report: bool,
        ack: Ack<()>,
    },
    /// Last message the writer handles; `mark_clean` sets the clean-shutdown flag.
    Shutdown {
        mark_clean: bool,
        ack: Ack<()>,
    },
}

impl Msg {
    fn seq(&self) -> Option<u64> {
        match self {
            Msg::Insert { seq, .. } | Msg::Progress { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// Drops every progress update that a later progress update of the same session in
/// the same batch supersedes with no other write to that session in between. The
/// later update is applied at its own position, with the state merged so that an
/// earlier `Established` is not lost. Anything that is not per-session (sweep, flush,
/// shutdown) is a barrier.
pub(super) fn coalesce(batch: Vec<Msg>) -> Vec<Msg> {
    let mut out: Vec<Option<Msg>> = Vec::with_capacity(batch.len());
    let mut last_progress: HashMap<SessionId, usize> = HashMap::new();
    for msg in batch {
        match msg {
            Msg::Progress { seq, mut progress } => {
                if let Some(i) = last_progress.insert(progress.id, out.len()) {
                    if let Some(Msg::Progress {
                        progress: mut earlier,
                        ..
                    }) = out[i].take()
                    {
                        if earlier.state == SessionState::Established {
                            progress.state = SessionState::Established;
                        }
                        earlier.sealed_secrets.zeroize();
                    }
                }
                out.push(Some(Msg::Progress { seq, progress }));
            }
            Msg::Insert { ref record, .. } => {
                last_progress.remove(&record.id);
                out.push(Some(msg));
            }
            Msg::Close { id, .. } => {
                last_progress.remove(&id);
                out.push(Some(msg));
            }
            Msg::Sweep { .. } | Msg::Flush { .. } | Msg::Shutdown { .. } => {
                last_progress.clear();
                out.push(Some(msg));
            }
        }
    }
    out.into_iter().flatten().collect()
}

enum Outcome {
    Done,
    Closed(bool),
    Swept(u64),
}

fn apply(conn: &Connection, msg: &Msg) -> Result<Outcome, StoreError> {
    match msg {
        Msg::Insert { record: r, .. } => {
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
            Ok(Outcome::Done)
        }
        Msg::Progress { progress: p, .. } => {
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
            Ok(Outcome::Done)
        }
        Msg::Close { id, now_ms, .. } => {
            let n = conn
                .prepare_cached(&format!(
                    "UPDATE sessions SET state = 'closed', sealed_secrets = X'', \
                     ended_at_ms = ?2 WHERE id = ?1 AND state IN {LIVE}"
                ))?
                .execute(params![&id.as_bytes()[..], to_db(*now_ms)])?;
            Ok(Outcome::Closed(n > 0))
        }
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
        Msg::Flush { .. } => Ok(Outcome::Done),
        Msg::Shutdown { mark_clean, .. } => {
            if *mark_clean {
                rows::meta_set(conn, CLEAN_SHUTDOWN, "1")?;
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
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// Fire-and-forget writes that failed since the last reporting flush.
    lost: u64,
    last_loss: String,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: Receiver<Msg>, shared: Arc<Shared>) -> Self {
        Writer {
            conn,
            rx,
            shared,
            lost: 0,
            last_loss: String::new(),
        }
    }

    /// Runs until shutdown or until every sender is gone (the store was dropped), in
    /// which case whatever is still queued is written first.
    pub(super) fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut stop = matches!(first, Msg::Shutdown { .. });
            // Someone waits for this batch: commit as soon as the queue is drained.
            let urgent = first.seq().is_none();
            let mut batch = vec![first];
            // Fire-and-forget writes linger briefly so that a burst shares one commit
            // (one WAL append instead of thousands); nobody waits on them. The thread
            // sleeps rather than waiting on the channel, so senders never wake it
            // one message at a time.
            if !urgent && !stop {
                std::thread::sleep(LINGER);
            }
            while !stop && batch.len() < MAX_BATCH {
                match self.rx.try_recv().ok() {
                    Some(msg) => {
                        stop = matches!(msg, Msg::Shutdown { .. });
                        batch.push(msg);
                    }
                    None => break,
                }
            }
            self.process(batch);
            if stop {
                break;
            }
        }
    }

    fn process(&mut self, batch: Vec<Msg>) {
        let max_seq = batch.iter().filter_map(Msg::seq).max();
        let msgs = coalesce(batch);
        let outcomes: Vec<Result<Outcome, StoreError>> =
            match apply_in_transaction(&mut self.conn, &msgs) {
                Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "session store batch failed; retrying one by one");
                    // Retry one message per transaction so one bad write cannot sink the
                    // others; each message then gets its own result.
                    msgs.iter()
                        .map(|m| {
                            apply_in_transaction(&mut self.conn, std::slice::from_ref(m))
                                .map(|mut o| o.pop().unwrap_or(Outcome::Done))
                        })
                        .collect()
                }
            };
        if let Some(max_seq) = max_seq {
            super::lock(&self.shared.queue)
                .dirty
                .retain(|_, seq| *seq > max_seq);
        }
        for (msg, outcome) in msgs.into_iter().zip(outcomes) {
            self.deliver(msg, outcome);
        }
    }

    fn take_loss(&mut self) -> Result<(), StoreError> {
        if self.lost == 0 {
            return Ok(());
        }
        let err = StoreError::Database(format!(
            "{} queued session write(s) could not be stored; last error: {}",
            self.lost, self.last_loss
        ));
        self.lost = 0;
        self.last_loss.clear();
        Err(err)
    }

    fn deliver(&mut self, msg: Msg, outcome: Result<Outcome, StoreError>) {
        // A dropped receiver means the caller stopped waiting; nothing to do then.
        match msg {
            Msg::Insert { .. } | Msg::Progress { .. } => {
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "queued session write lost");
                    self.lost += 1;
                    self.last_loss = e.to_string();
                }
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
            Msg::Flush { report, ack } => {
                let result = match outcome {
                    Ok(_) if report => self.take_loss(),
                    other => other.map(|_| ()),
                };
                let _ = ack.send(result);
            }
            Msg::Shutdown { ack, .. } => {
                let result = outcome.and_then(|_| self.take_loss());
                // Fold the WAL into the database file and truncate it, so no page image
                // (e.g. of wiped secrets) lingers in the -wal file after a clean stop.
                if let Err(e) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
                }
                let _ = ack.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(id: u8, state: SessionState, n: u64) -> Msg {
        Msg::Progress {
            seq: n,
            progress: SessionProgress {
                id: SessionId([id; 16]),
                state,
                last_used_at_ms: n,
                request_count: n,
                sealed_secrets: vec![id; 4],
            },
        }
    }

    fn progress_of(m: &Msg) -> Option<(u8, SessionState, u64)> {
        match m {
            Msg::Progress { progress: p, .. } => Some((p.id.0[0], p.state, p.request_count)),
            _ => None,
        }
    }

    #[test]
    fn coalesces_to_last_and_keeps_established() {
        let out = coalesce(vec![
            progress(1, SessionState::Established, 1),
            progress(2, SessionState::Matching, 2),
            progress(1, SessionState::Matching, 3),
            progress(1, SessionState::Matching, 4),
        ]);
        let got: Vec<_> = out.iter().filter_map(progress_of).collect();
        assert_eq!(
            got,
            vec![
                (2, SessionState::Matching, 2),
                (1, SessionState::Established, 4)
            ]
        );
    }

    #[test]
    fn close_and_flush_are_barriers() {
        let (ack, _rx) = oneshot::channel();
        let (flush_ack, _frx) = oneshot::channel();
        let out = coalesce(vec![
            progress(1, SessionState::Established, 1),
            Msg::Close {
                id: SessionId([1; 16]),
                now_ms: 5,
                ack,
            },
            progress(1, SessionState::Established, 2),
            progress(3, SessionState::Established, 3),
            Msg::Flush {
                report: true,
                ack: flush_ack,
            },
            progress(3, SessionState::Established, 4),
        ]);
        assert_eq!(out.len(), 6, "nothing may be coalesced across a barrier");
    }
}
