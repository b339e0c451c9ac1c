//! A store that keeps everything in memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sessioncert_proto::replay::ReplayWindow;
use sessioncert_proto::{SessionId, SessionState};

use crate::shared::{check_and_mark, SharedState};
use crate::{
    ReplayAuthority, RequestCheck, RequestMark, SessionRecord, SessionStore, SessionSummary,
    SessionWrite, StoreError,
};

struct Entry {
    record: SessionRecord,
    ended_at_ms: Option<u64>,
    /// The window of a shared-mode store (unused by an exclusive one).
    window: ReplayWindow,
}

impl Entry {
    fn new(record: SessionRecord) -> Self {
        Entry {
            record,
            ended_at_ms: None,
            window: ReplayWindow::new(),
        }
    }
}

/// An in-memory [`SessionStore`]: nothing survives the process. Used by tests and by
/// servers that want no persistence. Behaves exactly like [`crate::SqliteStore`]; made
/// with [`MemoryStore::shared`] it behaves like a shared store instead (one `Arc` handed
/// to several servers in one process stands for several instances on one backend).
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    shared: bool,
    values: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store (exclusive: one server process is the replay authority).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store in the shared model ([`ReplayAuthority::SharedStore`]): the replay
    /// check happens here for every request.
    pub fn shared() -> Self {
        MemoryStore {
            shared: true,
            ..Self::default()
        }
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
    fn replay_authority(&self) -> ReplayAuthority {
        if self.shared {
            ReplayAuthority::SharedStore
        } else {
            ReplayAuthority::ExclusiveServer
        }
    }

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
                    map.entry(record.id).or_insert_with(|| Entry::new(record));
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
                        } else if self.shared && entry.record.sealed_secrets.is_empty() {
                            // Ended by a request check: the remains follow (shared model).
                            entry.record.sealed_secrets = remains;
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

    async fn create(&self, record: SessionRecord) -> Result<bool, StoreError> {
        if !self.shared {
            return Err(StoreError::Unsupported("create"));
        }
        SessionWrite::Insert(record.clone()).check()?;
        let mut map = self.lock();
        if map.contains_key(&record.id) {
            return Ok(false);
        }
        map.insert(record.id, Entry::new(record));
        Ok(true)
    }

    async fn check_request(&self, mark: RequestMark) -> Result<RequestCheck, StoreError> {
        if !self.shared {
            return Err(StoreError::Unsupported("check_request"));
        }
        let mut map = self.lock();
        let Some(entry) = map.get_mut(&mark.id) else {
            return Ok(RequestCheck::Unknown);
        };
        let r = &entry.record;
        let mut state = SharedState {
            state: r.state,
            expires_at_ms: r.expires_at_ms,
            last_used_at_ms: r.last_used_at_ms,
            idle_timeout_ms: r.idle_timeout_ms,
            request_count: r.request_count,
            ended_at_ms: entry.ended_at_ms,
            window: entry.window.clone(),
        };
        let answer = check_and_mark(&mut state, &mark);
        if state.state != entry.record.state {
            // Ended by this check: the secrets go, as with every end.
            entry.record.wipe_secrets();
        }
        entry.record.state = state.state;
        entry.record.last_used_at_ms = state.last_used_at_ms;
        entry.record.request_count = state.request_count;
        entry.ended_at_ms = state.ended_at_ms;
        entry.window = state.window;
        Ok(answer)
    }

    async fn shared_value(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if !self.shared {
            return Err(StoreError::Unsupported("shared_value"));
        }
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        Ok(values.entry(name.to_owned()).or_insert(candidate).clone())
    }
}
