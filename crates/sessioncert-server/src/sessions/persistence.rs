//! The one path from the session table to the store.
//!
//! Every change the store must learn about bumps the entry's change counter under its
//! lock and queues the entry once. A flush (every `flush_interval`, and once more at
//! shutdown) snapshots each queued entry under its lock — sealing its secrets at rest —
//! and hands the batch to [`SessionStore::save`], which returns after the commit. Only
//! then does the entry count as saved; a failed save re-queues it. Flushes are
//! serialized, so an older snapshot can never be committed after a newer one.
//!
//! The store is read once, when the server starts ([`SessionManager::load_from_store`]);
//! after that the table is the authority and nothing is read back.

use super::table::{Entry, Live, Mutable};
use super::{now_ms, SessionManager};
use crate::ServerError;
use sessioncert_proto::{EndedSession, ServerSession, SessionState};
use sessioncert_store::{SessionProgress, SessionRecord, SessionWrite};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most sessions written in one store transaction.
const MAX_BATCH: usize = 4096;

/// What the load at start found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Live sessions now held in memory.
    pub loaded: usize,
    /// Stored live sessions that could not be used (wrong storage key, corrupt row);
    /// they are ended in the store.
    pub unusable: usize,
    /// Sessions ended before the start whose ids keep being refused with a tag.
    pub tombstones: usize,
}

impl SessionManager {
    /// Queues an entry for the next flush (once, however often it changes meanwhile).
    pub(crate) fn queue_save(&self, entry: &Arc<Entry>) {
        if entry.set_queued() {
            self.save_queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry.clone());
        }
    }

    /// The write that brings the store up to date with `m`, if one is needed.
    fn write_of(&self, entry: &Entry, m: &Mutable) -> Option<SessionWrite> {
        let secrets = match &m.live {
            Live::Ended(state, ended) => {
                if !m.stored {
                    return None;
                }
                // What a restarted server needs to keep refusing this id with a tag: the
                // refusal key and the final window (exact: nothing changes it after the
                // end), sealed like the secrets it replaces.
                let remains = ended
                    .as_ref()
                    .and_then(|e| self.keys.storage_key().seal(&entry.id, &e.export()).ok())
                    .unwrap_or_default();
                return Some(SessionWrite::End {
                    id: entry.id,
                    state: *state,
                    at_ms: if m.ended_at_ms > 0 {
                        m.ended_at_ms
                    } else {
                        now_ms()
                    },
                    remains,
                });
            }
            // A shared store holds the live session's state itself (created once by
            // `store_created`, advanced by every request's check): nothing to write.
            Live::Established(_) if self.shared => return None,
            Live::Established(s) => s.export(),
            // Key and salts seen, so a restarted server keeps refusing replays.
            Live::Legacy(s) => s.export(),
            // Waiting for its establish: memory only.
            Live::LegacyPending(_) => return None,
        };
        let sealed = match self.keys.storage_key().seal(&entry.id, &secrets) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::error!(error = %e, "sealing session at rest failed");
                return None;
            }
        };
        Some(if m.stored {
            SessionWrite::Progress(SessionProgress {
                id: entry.id,
                state: m.live.state(),
                last_used_at_ms: m.last_used_at_ms,
                request_count: m.request_count,
                sealed_secrets: sealed,
            })
        } else {
            SessionWrite::Insert(SessionRecord {
                id: entry.id,
                state: m.live.state(),
                version: entry.version,
                suite: entry.suite.to_owned(),
                client_addr: entry.client_addr.map(|a| a.to_string()),
                created_at_ms: entry.created_at_ms,
                last_used_at_ms: m.last_used_at_ms,
                expires_at_ms: entry.expires_at_ms,
                idle_timeout_ms: entry.idle_timeout_ms,
                request_count: m.request_count,
                sealed_secrets: sealed,
            })
        })
    }

    /// Persists every session changed since the last flush. Returns the number of
    /// sessions written, or the store's error (the sessions stay queued).
    pub async fn flush(&self) -> Result<usize, ServerError> {
        let _serial = self.flush_lock.lock().await;
        let queued =
            std::mem::take(&mut *self.save_queue.lock().unwrap_or_else(|p| p.into_inner()));
        for e in &queued {
            // Cleared before the snapshot: a change after this point queues it again.
            e.queued.store(false, Ordering::Release);
        }
        self.save_entries(queued).await
    }

    /// Saves `entry` now instead of with the next flush (it stays queued; that flush
    /// then finds nothing to write).
    pub(crate) async fn save_now(&self, entry: &Arc<Entry>) -> Result<usize, ServerError> {
        let _serial = self.flush_lock.lock().await;
        self.save_entries(vec![entry.clone()]).await
    }

    /// Snapshots and saves `entries` in batches; on failure re-queues what was not saved.
    async fn save_entries(&self, entries: Vec<Arc<Entry>>) -> Result<usize, ServerError> {
        let mut written = 0;
        let mut rest = entries.into_iter();
        loop {
            let mut batch: Vec<(Arc<Entry>, u64)> = Vec::new();
            let mut writes = Vec::new();
            for entry in rest.by_ref() {
                let mut m = entry.lock();
                if !m.unsaved() {
                    continue;
                }
                match self.write_of(&entry, &m) {
                    Some(w) => {
                        let changes = m.changes;
                        drop(m);
                        writes.push(w);
                        batch.push((entry, changes));
                    }
                    // Nothing the store needs (e.g. ended before it was ever stored).
                    None => m.saved_changes = m.changes,
                }
                if writes.len() >= MAX_BATCH {
                    break;
                }
            }
            if writes.is_empty() {
                return Ok(written);
            }
            let saved = self.store.save(writes).await;
            self.store_writable.store(saved.is_ok(), Ordering::Relaxed);
            match saved {
                Ok(()) => {
                    for (entry, changes) in &batch {
                        let mut m = entry.lock();
                        m.saved_changes = m.saved_changes.max(*changes);
                        m.stored = true;
                    }
                    written += batch.len();
                }
                Err(e) => {
                    tracing::error!(error = %e, sessions = batch.len(), "saving sessions failed; will retry");
                    for (entry, _) in batch {
                        self.queue_save(&entry);
                    }
                    for entry in rest {
                        self.queue_save(&entry);
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// The final flush: called after `closing` is set, so no request can change a
    /// window any more. Looks at every entry (not only queued ones): a request that
    /// advanced a window just before `closing` may not have queued its entry yet.
    pub(crate) async fn flush_all(&self) -> Result<usize, ServerError> {
        let _serial = self.flush_lock.lock().await;
        self.save_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let all: Vec<Arc<Entry>> = self.cache.iter().map(|e| e.value().clone()).collect();
        self.save_entries(all).await
    }

    /// Loads every live session from the store into the table. Called once, before
    /// the server handles any request; the store is never read for a session again.
    pub async fn load_from_store(&self) -> Result<LoadReport, ServerError> {
        if self.shared {
            // Sessions are read on their first request here, never all at once: the
            // store, not this table, holds them (see `shared`).
            return Ok(LoadReport::default());
        }
        let records = self.store.load_live().await?;
        let mut report = LoadReport::default();
        let mut unusable = Vec::new();
        let now = now_ms();
        for rec in records {
            let legacy = rec.suite == sessioncert_legacy::wire::SUITE;
            let live = if legacy && rec.state == SessionState::Established {
                self.open_stored_legacy(&rec)
                    .map(|s| Live::Legacy(Box::new(s)))
            } else if rec.state == SessionState::Established {
                self.open_stored_session(&rec)
                    .map(|s| Live::Established(Box::new(s)))
            } else {
                // Written by an earlier version that stored unconfirmed handshakes.
                Err("unconfirmed handshake".to_owned())
            };
            let live = match live {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(session = %rec.id, error = %e, "stored session unusable; ending it");
                    unusable.push(SessionWrite::End {
                        id: rec.id,
                        state: SessionState::Expired,
                        at_ms: now,
                        remains: Vec::new(),
                    });
                    continue;
                }
            };
            let entry = Arc::new(entry_from_stored(
                &rec,
                Mutable::new(live, rec.last_used_at_ms, rec.request_count, true),
            ));
            if self.cache.insert(rec.id, entry).is_none() {
                self.live_count.fetch_add(1, Ordering::Relaxed);
                if legacy {
                    self.legacy_live.fetch_add(1, Ordering::Relaxed);
                }
                report.loaded += 1;
            }
        }
        let (_, legacy) = self.legacy_sessions();
        if legacy > 0 && !self.legacy_enabled() {
            tracing::warn!(
                sessions = legacy,
                "live legacy Session-Cert sessions are stored, but legacy mode is off: their \
                 clients are refused until they move to the protocol (or the server runs with \
                 --legacy-session-cert again)"
            );
        }
        report.tombstones = self.load_tombstones(now).await?;
        report.unusable = unusable.len();
        if !unusable.is_empty() {
            self.store.save(unusable).await?;
        }
        Ok(report)
    }

    /// Loads the remains of sessions that ended before this start (closed or expired by
    /// this server, whose end it saved with them) for as long as they would have lived:
    /// their requests keep getting tagged `session_closed`/`session_expired` refusals,
    /// which let clients re-send safely. Sessions ended without remains (closed with
    /// `sessions close` while no server ran, expired after an unclean stop) are unknown
    /// ids: their refusals carry no tag, since a stale window could vouch for a request
    /// that did run.
    async fn load_tombstones(&self, now: u64) -> Result<usize, ServerError> {
        let since = now.saturating_sub(self.timing.retain_ended_ms);
        let min_tombstone = self
            .timing
            .ticket_lifetime_ms
            .saturating_mul(super::table::TOMBSTONE_TICKET_LIFETIMES);
        let mut loaded = 0;
        for (rec, ended_at_ms) in self.store.load_ended(since).await? {
            let ended = self.open_stored_remains(&rec);
            let Some(ended) = ended else {
                tracing::debug!(session = %rec.id, "ended session's remains unusable; it stays unknown");
                continue;
            };
            let mut m = Mutable::new(
                Live::Ended(rec.state, Some(ended)),
                rec.last_used_at_ms,
                rec.request_count,
                true,
            );
            m.ended_at_ms = ended_at_ms;
            let entry = entry_from_stored(&rec, m);
            if now >= entry.tombstone_until(&entry.lock(), min_tombstone) {
                continue;
            }
            if self.cache.insert(rec.id, Arc::new(entry)).is_none() {
                self.tombstones.add(rec.state);
                loaded += 1;
            }
        }
        Ok(loaded)
    }
}

impl SessionManager {
    /// A stored established session's keys, opened under the storage key.
    pub(super) fn open_stored_session(&self, rec: &SessionRecord) -> Result<ServerSession, String> {
        let secrets = self
            .keys
            .storage_key()
            .open(&rec.id, &rec.sealed_secrets)
            .map_err(|e| e.to_string())?;
        let session = ServerSession::import(&secrets).map_err(|e| e.to_string())?;
        if session.id() != rec.id {
            return Err("stored secrets belong to another session".to_owned());
        }
        Ok(session)
    }

    /// A stored ended session's remains (its refusal key), if they open here.
    pub(super) fn open_stored_remains(&self, rec: &SessionRecord) -> Option<EndedSession> {
        self.keys
            .storage_key()
            .open(&rec.id, &rec.sealed_secrets)
            .ok()
            .and_then(|b| EndedSession::import(&b).ok())
            .filter(|e| e.id() == rec.id)
    }
}

/// The table entry of a stored session, in the state `m` holds.
pub(super) fn entry_from_stored(rec: &SessionRecord, m: Mutable) -> Entry {
    Entry::new(
        rec.id,
        if rec.suite == sessioncert_legacy::wire::SUITE {
            sessioncert_legacy::wire::SUITE
        } else {
            sessioncert_proto::Suite::from_name(&rec.suite)
                .map(|s| s.name())
                .unwrap_or("unknown")
        },
        rec.version,
        rec.client_addr.as_deref().and_then(|a| a.parse().ok()),
        false,
        rec.created_at_ms,
        rec.expires_at_ms,
        rec.idle_timeout_ms,
        m,
    )
}
