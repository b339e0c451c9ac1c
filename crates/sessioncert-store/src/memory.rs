//! A store that keeps everything in memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sessioncert_proto::{SessionId, SessionState};

use crate::{SessionRecord, SessionStore, SessionSummary, SessionWrite, StoreError};

struct Entry {
    record: SessionRecord,
    ended_at_ms: Option<u64>,
}

/// An in-memory [`SessionStore`]: nothing survives the process. Used by tests and by
/// servers that want no persistence. Behaves exactly like [`crate::SqliteStore`].
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<SessionId, Entry>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions (of any state) are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        // A panic while holding the lock cannot leave a half-applied update (every
        // update is a plain field assignment), so a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn end(entry: &mut Entry, state: SessionState, now_ms: u64, remains: Vec<u8>) {
    entry.record.state = state;
    entry.record.wipe_secrets();
    entry.record.sealed_secrets = remains;
    entry.ended_at_ms = Some(now_ms);
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn load_live(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter(|e| e.record.state.is_live())
            .map(|e| e.record.clone())
            .collect())
    }

    async fn load_ended(&self, since_ms: u64) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter_map(|e| {
                let ended = e.ended_at_ms?;
                (ended >= since_ms && !e.record.sealed_secrets.is_empty())
                    .then(|| (e.record.clone(), ended))
            })
            .collect())
    }

    async fn save(&self, writes: Vec<SessionWrite>) -> Result<(), StoreError> {
        // All or nothing, like a transaction: check the batch before applying any of it.
        writes.iter().try_for_each(SessionWrite::check)?;
        let mut map = self.lock();
        for w in writes {
            match w {
                SessionWrite::Insert(record) => {
                    map.entry(record.id).or_insert(Entry {
                        record,
                        ended_at_ms: None,
                    });
                }
                SessionWrite::Progress(progress) => {
                    if let Some(entry) = map.get_mut(&progress.id) {
                        entry.record.apply_progress(progress);
                    }
                }
                SessionWrite::End {
                    id,
                    state,
                    at_ms,
                    remains,
                } => {
                    if let Some(entry) = map.get_mut(&id) {
                        if entry.record.state.is_live() {
                            end(entry, state, at_ms, remains);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().get(id).map(|e| e.record.clone()))
    }

    async fn close(&self, id: &SessionId, now_ms: u64) -> Result<bool, StoreError> {
        match self.lock().get_mut(id) {
            Some(entry) if entry.record.state.is_live() => {
                end(entry, SessionState::Closed, now_ms, Vec::new());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ended_since(&self, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
        let map = self.lock();
        let mut ended: Vec<(u64, SessionId)> = map
            .values()
            .filter_map(|e| e.ended_at_ms.map(|t| (t, e.record.id)))
            .filter(|(t, _)| *t >= since_ms)
            .collect();
        ended.sort_unstable();
        Ok(ended.into_iter().map(|(_, id)| id).collect())
    }

    async fn list(&self, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
        let map = self.lock();
        let mut out: Vec<SessionSummary> = map
            .values()
            .filter(|e| !live_only || e.record.state.is_live())
            .map(|e| SessionSummary {
                ended_at_ms: e.ended_at_ms,
                ..e.record.summary()
            })
            .collect();
        out.sort_unstable_by_key(|s| std::cmp::Reverse((s.created_at_ms, s.id)));
        Ok(out)
    }

    async fn sweep(
        &self,
        now_ms: u64,
        matching_ttl_ms: u64,
        retain_ended_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut map = self.lock();
        let mut expired = 0;
        for entry in map.values_mut() {
            if entry.record.is_due_to_expire(now_ms, matching_ttl_ms) {
                end(entry, SessionState::Expired, now_ms, Vec::new());
                expired += 1;
            }
        }
        if let Some(cutoff) = now_ms.checked_sub(retain_ended_ms) {
            map.retain(|_, e| !matches!(e.ended_at_ms, Some(t) if t < cutoff));
        }
        Ok(expired)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
