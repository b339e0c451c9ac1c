//! The live session table: an in-memory cache in front of a [`SessionStore`].
//!
//! The hot path (open a request, seal a response) touches only memory: a map lookup,
//! a short per-session lock and the AEAD. Changes reach the store write-behind: a
//! session touched by a request is flagged dirty once and a background task re-seals
//! and persists all dirty sessions every `flush_interval`. State transitions
//! (new, established, closed) are queued to the store immediately. After an unclean
//! stop the store expires every live session (see `sessioncert-store`), because the
//! stored replay windows may lag behind.

use crate::error::Refusal;
use crate::keys::ServerKeys;
use crate::limits::{HandshakeRate, Limits};
use crate::ServerError;
use dashmap::DashMap;
use sessioncert_proto::handshake::respond;
use sessioncert_proto::{
    ErrorCode, OpenedInPlace, PendingServerSession, RequestBinding, ResponseBinding,
    ResponseExpectation, ServerPolicy, ServerSession, SessionId, SessionState, SignedKeyConfig,
};
use sessioncert_store::{SessionProgress, SessionRecord, SessionStore};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Timing of background work.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often dirty sessions are persisted.
    pub flush_interval: Duration,
    /// How often the store is asked for sessions closed elsewhere (another process).
    pub poll_interval: Duration,
    /// How often expired sessions are swept.
    pub sweep_interval: Duration,
    /// How long a session may stay MATCHING before it is dropped.
    pub matching_ttl_ms: u64,
    /// How long ended sessions stay listed in the store.
    pub retain_ended_ms: u64,
    /// How often the handshake keys are checked for renewal.
    pub key_rotation_check: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            flush_interval: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(30),
            matching_ttl_ms: 60_000,
            retain_ended_ms: 24 * 3600 * 1000,
            key_rotation_check: Duration::from_secs(3600),
        }
    }
}

enum Live {
    Matching(PendingServerSession),
    Established(ServerSession),
    Ended(SessionState),
}

impl Live {
    fn state(&self) -> SessionState {
        match self {
            Live::Matching(_) => SessionState::Matching,
            Live::Established(_) => SessionState::Established,
            Live::Ended(s) => *s,
        }
    }
}

struct Mutable {
    live: Live,
    last_used_at_ms: u64,
    request_count: u64,
}

/// One session in the cache.
pub struct Entry {
    id: SessionId,
    suite: &'static str,
    version: u16,
    client_addr: Option<IpAddr>,
    counted_for_addr: bool,
    created_at_ms: u64,
    expires_at_ms: u64,
    idle_timeout_ms: u64,
    dirty: AtomicBool,
    /// Whether the store has a row for this session yet.
    stored: AtomicBool,
    inner: Mutex<Mutable>,
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mutable> {
        // A panic while holding the lock cannot leave keys half-updated in a way that
        // matters more than refusing service; recover the guard rather than poison forever.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why this session cannot carry traffic at `now`, if it cannot.
    fn end_reason(&self, m: &Mutable, now: u64) -> Option<SessionState> {
        match m.live {
            Live::Ended(s) => Some(s),
            _ if now >= self.expires_at_ms => Some(SessionState::Expired),
            _ if now >= m.last_used_at_ms.saturating_add(self.idle_timeout_ms) => {
                Some(SessionState::Expired)
            }
            _ => None,
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

fn refusal_for_end(state: SessionState) -> Refusal {
    Refusal::new(match state {
        SessionState::Closed => ErrorCode::SessionClosed,
        _ => ErrorCode::SessionExpired,
    })
}

/// How long a new session may stay MATCHING before it is written to the store.
const UNSTORED_GRACE_MS: u64 = 1000;

/// A write for the store.
enum StoreWrite {
    Insert(SessionRecord),
    Progress(SessionProgress),
}

/// Counters for operators.
#[derive(Debug, Default)]
pub struct Stats {
    /// Handshakes answered (sessions created, MATCHING).
    pub handshakes: AtomicU64,
    /// Sessions confirmed (ESTABLISHED).
    pub established: AtomicU64,
    /// Sealed requests opened.
    pub requests: AtomicU64,
    /// Sealed requests or confirmations refused.
    pub rejected: AtomicU64,
}

/// The session table and everything needed to create and use sessions.
pub struct SessionManager {
    keys: Arc<ServerKeys>,
    config: RwLock<Arc<Vec<u8>>>,
    policy: ServerPolicy,
    limits: Limits,
    timing: Timing,
    store: Arc<dyn SessionStore>,
    cache: DashMap<SessionId, Arc<Entry>>,
    dirty: Mutex<Vec<SessionId>>,
    unstored: Mutex<std::collections::VecDeque<(SessionId, u64)>>,
    per_addr: DashMap<IpAddr, u32>,
    pending: AtomicU64,
    rate: HandshakeRate,
    stats: Stats,
}

impl SessionManager {
    /// Creates the manager (background work starts with [`SessionManager::spawn_maintenance`]).
    pub fn new(
        keys: Arc<ServerKeys>,
        store: Arc<dyn SessionStore>,
        policy: ServerPolicy,
        limits: Limits,
        timing: Timing,
    ) -> Result<Self, ServerError> {
        let config = keys.signed_config(&policy.suites, now_ms())?.encode();
        Ok(SessionManager {
            keys,
            config: RwLock::new(Arc::new(config)),
            policy,
            limits,
            timing,
            store,
            cache: DashMap::new(),
            dirty: Mutex::new(Vec::new()),
            unstored: Mutex::new(std::collections::VecDeque::new()),
            per_addr: DashMap::new(),
            pending: AtomicU64::new(0),
            rate: HandshakeRate::default(),
            stats: Stats::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Operator counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Number of sessions in the cache.
    pub fn cached_sessions(&self) -> usize {
        self.cache.len()
    }

    /// The encoded signed key configuration currently served.
    pub fn config_bytes(&self) -> Arc<Vec<u8>> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Renews the handshake keys when they near their end and re-signs the configuration.
    pub async fn rotate_keys_if_due(self: &Arc<Self>) {
        let me = self.clone();
        let rotated = tokio::task::spawn_blocking(move || me.keys.rotate_if_due(now_ms())).await;
        match rotated {
            Ok(Ok(true)) => match self.refresh_config() {
                Ok(_) => tracing::info!("handshake keys rotated; key configuration re-signed"),
                Err(e) => tracing::error!(error = %e, "re-signing the key configuration failed"),
            },
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "handshake key rotation failed"),
            Err(e) => tracing::error!(error = %e, "handshake key rotation task failed"),
        }
    }

    /// Re-signs the key configuration (after a key rotation, or to refresh `issued_at`).
    pub fn refresh_config(&self) -> Result<SignedKeyConfig, ServerError> {
        let s = self.keys.signed_config(&self.policy.suites, now_ms())?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s.encode());
        Ok(s)
    }

    fn limited(&self, addr: Option<IpAddr>) -> Option<IpAddr> {
        addr.filter(|a| !(self.limits.exempt_loopback && a.is_loopback()))
    }

    /// Answers a client hello: a new session in state MATCHING and the server hello.
    pub async fn handshake(&self, msg: &[u8], addr: Option<IpAddr>) -> Result<Vec<u8>, Refusal> {
        let limited = self.limited(addr);
        if let Some(a) = limited {
            if let Err(wait) = self.rate.take(a, &self.limits) {
                tracing::info!(addr = %a, "handshake refused: rate limit");
                return Err(Refusal {
                    code: ErrorCode::RateLimited,
                    retry_after: Some(wait),
                });
            }
            if self
                .per_addr
                .get(&a)
                .is_some_and(|n| *n >= self.limits.max_sessions_per_addr)
            {
                tracing::info!(addr = %a, "handshake refused: sessions per address");
                return Err(Refusal {
                    code: ErrorCode::RateLimited,
                    retry_after: Some(60),
                });
            }
        }
        if self.cache.len() >= self.limits.max_live_sessions {
            tracing::warn!("handshake refused: live session table is full");
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                retry_after: Some(60),
            });
        }
        if self.pending.load(Ordering::Relaxed) >= self.limits.max_pending_sessions as u64 {
            tracing::warn!("handshake refused: too many unconfirmed sessions");
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                retry_after: Some(5),
            });
        }
        let now = now_ms();
        let id = SessionId::random().map_err(Refusal::from)?;
        let resp =
            respond(&self.keys.handshake_keys(), &self.policy, msg, id, now).map_err(|e| {
                tracing::info!(error = %e, "handshake refused");
                Refusal::from(e)
            })?;
        let entry = Arc::new(Entry {
            id,
            suite: resp.hello.suite.name(),
            version: resp.hello.version,
            client_addr: addr,
            counted_for_addr: limited.is_some(),
            created_at_ms: now,
            expires_at_ms: resp.hello.expires_at_ms,
            idle_timeout_ms: resp.hello.idle_timeout_ms,
            dirty: AtomicBool::new(false),
            stored: AtomicBool::new(false),
            inner: Mutex::new(Mutable {
                live: Live::Matching(resp.pending),
                last_used_at_ms: now,
                request_count: 0,
            }),
        });
        if let Some(a) = limited {
            *self.per_addr.entry(a).or_insert(0) += 1;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.cache.insert(id, entry.clone());
        self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        // Not written yet: most sessions are confirmed within a round trip, and the
        // confirmation writes the row. One still MATCHING a second later is written by
        // the flush, so operators see stalled handshakes.
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((id, now));
        Ok(resp.message)
    }

    /// Looks a session up in the cache, or loads it from the store.
    async fn entry(&self, id: &SessionId) -> Result<Arc<Entry>, Refusal> {
        if let Some(e) = self.cache.get(id) {
            return Ok(e.clone());
        }
        let rec = match self.store.load(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Refusal::new(ErrorCode::UnknownSession)),
            Err(e) => {
                tracing::error!(error = %e, "session store load failed");
                return Err(Refusal::new(ErrorCode::Internal));
            }
        };
        if !rec.state.is_live() {
            return Err(refusal_for_end(rec.state));
        }
        let secrets = self
            .keys
            .storage_key()
            .open(id, &rec.sealed_secrets)
            .map_err(|e| {
                tracing::warn!(session = %id, error = %e, "stored session unusable");
                Refusal::new(ErrorCode::UnknownSession)
            })?;
        let live = match rec.state {
            SessionState::Matching => PendingServerSession::import(&secrets).map(Live::Matching),
            _ => ServerSession::import(&secrets).map(Live::Established),
        }
        .map_err(|e| {
            tracing::warn!(session = %id, error = %e, "stored session unusable");
            Refusal::new(ErrorCode::UnknownSession)
        })?;
        if matches!(live, Live::Matching(_)) {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        let suite = sessioncert_proto::Suite::from_name(&rec.suite)
            .map(|s| s.name())
            .unwrap_or("unknown");
        let entry = Arc::new(Entry {
            id: *id,
            suite,
            version: rec.version,
            client_addr: rec.client_addr.as_deref().and_then(|a| a.parse().ok()),
            counted_for_addr: false,
            created_at_ms: rec.created_at_ms,
            expires_at_ms: rec.expires_at_ms,
            idle_timeout_ms: rec.idle_timeout_ms,
            dirty: AtomicBool::new(false),
            stored: AtomicBool::new(true),
            inner: Mutex::new(Mutable {
                live,
                last_used_at_ms: rec.last_used_at_ms,
                request_count: rec.request_count,
            }),
        });
        // Two requests may have loaded the same session at once: keep the first.
        Ok(self.cache.entry(*id).or_insert(entry).clone())
    }

    /// Checks the client's key confirmation; MATCHING → ESTABLISHED.
    pub async fn confirm(&self, id: &SessionId, finished: &[u8]) -> Result<(), Refusal> {
        let entry = self.entry(id).await?;
        let progress = {
            let mut m = entry.lock();
            let now = now_ms();
            if let Some(end) = entry.end_reason(&m, now) {
                return Err(refusal_for_end(end));
            }
            let live = std::mem::replace(&mut m.live, Live::Ended(SessionState::Expired));
            match live {
                Live::Matching(p) => match p.confirm(finished) {
                    Ok(s) => {
                        m.live = Live::Established(s);
                        m.last_used_at_ms = now;
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                        self.stats.established.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(failed) => {
                        m.live = Live::Matching(*failed.pending);
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(session = %id, "key confirmation refused");
                        return Err(Refusal::new(ErrorCode::HandshakeFailed));
                    }
                },
                other => {
                    // Already established (a repeated confirmation) or ended.
                    m.live = other;
                    return Err(Refusal::new(ErrorCode::HandshakeFailed));
                }
            }
            self.write_of(&entry, &m)
        };
        let was_update = matches!(progress, Some(StoreWrite::Progress(_)));
        self.persist(progress).await;
        if was_update {
            // A flush wrote the MATCHING row first and may still be queueing it; the
            // next flush rewrites the current state whatever the order.
            self.mark_dirty(&entry);
        }
        Ok(())
    }

    /// Opens a sealed request. The returned entry is what the response is sealed with.
    /// The record is decrypted in place; the returned range locates the plaintext.
    pub async fn open_request(
        &self,
        id: &SessionId,
        binding: &RequestBinding<'_>,
        record: &mut [u8],
    ) -> Result<(Arc<Entry>, OpenedInPlace), Refusal> {
        let entry = self.entry(id).await?;
        let now = now_ms();
        let opened = {
            let mut m = entry.lock();
            if let Some(end) = entry.end_reason(&m, now) {
                drop(m);
                self.evict(&entry, end);
                return Err(refusal_for_end(end));
            }
            let Live::Established(s) = &mut m.live else {
                // MATCHING: the client has not confirmed; it must finish the handshake.
                return Err(Refusal::new(ErrorCode::UnknownSession));
            };
            match s.open_request_in_place(binding, record) {
                Ok(o) => {
                    m.last_used_at_ms = now;
                    m.request_count += 1;
                    o
                }
                Err(e) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(session = %id, error = %e, "sealed request refused");
                    // Unparseable records are "malformed"; everything that fails
                    // authentication or the replay window is one uniform "rejected".
                    return Err(Refusal::new(match e.code() {
                        ErrorCode::Malformed => ErrorCode::Malformed,
                        _ => ErrorCode::Rejected,
                    }));
                }
            }
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.mark_dirty(&entry);
        Ok((entry, opened))
    }

    /// Seals the response to a request opened with [`SessionManager::open_request`].
    pub fn seal_response(
        &self,
        entry: &Entry,
        request: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
        body: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let mut m = entry.lock();
        let Live::Established(s) = &mut m.live else {
            // Closed while the handler ran (e.g. this was the close request itself).
            return Err(Refusal::new(ErrorCode::SessionClosed));
        };
        s.seal_response(request, binding, body).map_err(|e| {
            tracing::error!(session = %entry.id, error = %e, "sealing a response failed");
            Refusal::new(ErrorCode::Internal)
        })
    }

    /// Seals the response to a close request and closes the session.
    pub async fn seal_and_close(
        &self,
        entry: &Arc<Entry>,
        request: &ResponseExpectation,
        binding: &ResponseBinding<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let sealed = self.seal_response(entry, request, binding, b"")?;
        self.close(&entry.id).await;
        Ok(sealed)
    }

    /// Closes a session (client request or operator). Returns whether it was live.
    pub async fn close(&self, id: &SessionId) -> bool {
        let in_cache = match self.cache.get(id).map(|e| e.clone()) {
            Some(e) => {
                self.evict(&e, SessionState::Closed);
                true
            }
            None => false,
        };
        match self.store.close(id, now_ms()).await {
            Ok(in_store) => in_cache || in_store,
            Err(e) => {
                tracing::error!(error = %e, "session store close failed");
                in_cache
            }
        }
    }

    /// Removes an entry from the cache and marks it ended.
    fn evict(&self, entry: &Entry, end: SessionState) {
        {
            let mut m = entry.lock();
            if matches!(m.live, Live::Matching(_)) {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            if !matches!(m.live, Live::Ended(_)) {
                m.live = Live::Ended(end);
            }
        }
        if self.cache.remove(&entry.id).is_some() && entry.counted_for_addr {
            if let Some(a) = entry.client_addr {
                if let Some(mut n) = self.per_addr.get_mut(&a) {
                    *n = n.saturating_sub(1);
                }
                self.per_addr.remove_if(&a, |_, n| *n == 0);
            }
        }
    }

    fn mark_dirty(&self, entry: &Entry) {
        if !entry.dirty.swap(true, Ordering::AcqRel) {
            self.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry.id);
        }
    }

    /// What to send to the store for this session now: its first row, or an update.
    fn write_of(&self, entry: &Entry, m: &Mutable) -> Option<StoreWrite> {
        let secrets = match &m.live {
            Live::Matching(p) => p.export(),
            Live::Established(s) => s.export(),
            Live::Ended(_) => return None,
        };
        let sealed = match self.keys.storage_key().seal(&entry.id, &secrets) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::error!(error = %e, "sealing session at rest failed");
                return None;
            }
        };
        if entry.stored.swap(true, Ordering::AcqRel) {
            return Some(StoreWrite::Progress(SessionProgress {
                id: entry.id,
                state: m.live.state(),
                last_used_at_ms: m.last_used_at_ms,
                request_count: m.request_count,
                sealed_secrets: sealed,
            }));
        }
        Some(StoreWrite::Insert(SessionRecord {
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
        }))
    }

    async fn persist(&self, write: Option<StoreWrite>) {
        let result = match write {
            Some(StoreWrite::Insert(r)) => self.store.insert(r).await,
            Some(StoreWrite::Progress(p)) => self.store.record_progress(p).await,
            None => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "session store write failed");
        }
    }

    /// Persists every session touched since the last flush, and sessions still waiting
    /// for their key confirmation a second after the handshake.
    pub async fn flush_dirty(&self) {
        let stalled: Vec<SessionId> = {
            let cutoff = now_ms().saturating_sub(UNSTORED_GRACE_MS);
            let mut q = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            while q.front().is_some_and(|(_, t)| *t <= cutoff) {
                if let Some((id, _)) = q.pop_front() {
                    out.push(id);
                }
            }
            out
        };
        for id in stalled {
            let Some(entry) = self.cache.get(&id).map(|e| e.clone()) else {
                continue;
            };
            if entry.stored.load(Ordering::Acquire) {
                continue;
            }
            let write = {
                let m = entry.lock();
                self.write_of(&entry, &m)
            };
            self.persist(write).await;
        }
        self.flush_touched().await;
    }

    async fn flush_touched(&self) {
        let ids = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            let Some(entry) = self.cache.get(&id).map(|e| e.clone()) else {
                continue;
            };
            entry.dirty.store(false, Ordering::Release);
            let write = {
                let m = entry.lock();
                self.write_of(&entry, &m)
            };
            self.persist(write).await;
        }
    }

    /// Drops sessions closed or expired elsewhere (another process, the store's sweep).
    pub async fn poll_ended(&self, since_ms: u64) {
        match self.store.ended_since(since_ms).await {
            Ok(ids) => {
                for id in ids {
                    if let Some(e) = self.cache.get(&id).map(|e| e.clone()) {
                        tracing::info!(session = %id, "session ended elsewhere; dropped");
                        self.evict(&e, SessionState::Closed);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "session store poll failed"),
        }
    }

    /// Expires sessions past their lifetime, idle timeout or confirmation deadline.
    pub async fn sweep(&self) -> u64 {
        let now = now_ms();
        let mut expired = Vec::new();
        for e in self.cache.iter() {
            let m = e.lock();
            let stale_matching = matches!(m.live, Live::Matching(_))
                && now >= e.created_at_ms.saturating_add(self.timing.matching_ttl_ms);
            if stale_matching || e.end_reason(&m, now).is_some() {
                expired.push(e.value().clone());
            }
        }
        for e in &expired {
            self.evict(e, SessionState::Expired);
        }
        self.rate.prune(&self.limits);
        match self
            .store
            .sweep(
                now,
                self.timing.matching_ttl_ms,
                self.timing.retain_ended_ms,
            )
            .await
        {
            Ok(n) => n.max(expired.len() as u64),
            Err(e) => {
                tracing::error!(error = %e, "session store sweep failed");
                expired.len() as u64
            }
        }
    }

    /// Starts the background flush, poll and sweep loops; they stop when the manager is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let timing = self.timing.clone();
        tokio::spawn(async move {
            let mut flush = tokio::time::interval(timing.flush_interval);
            let mut poll = tokio::time::interval(timing.poll_interval);
            let mut sweep = tokio::time::interval(timing.sweep_interval);
            let mut rotate = tokio::time::interval(timing.key_rotation_check);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_poll = now_ms();
            loop {
                tokio::select! {
                    _ = flush.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        m.flush_dirty().await;
                    }
                    _ = poll.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        let now = now_ms();
                        // Overlap the window: clocks of other processes may differ slightly.
                        m.poll_ended(last_poll.saturating_sub(5_000)).await;
                        last_poll = now;
                    }
                    _ = rotate.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        m.rotate_keys_if_due().await;
                    }
                    _ = sweep.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        let n = m.sweep().await;
                        if n > 0 {
                            tracing::info!(expired = n, "swept sessions");
                        }
                    }
                }
            }
        })
    }

    /// Persists everything and records a clean shutdown in the store.
    pub async fn shutdown(&self) -> Result<(), ServerError> {
        self.flush_dirty().await;
        self.store.shutdown().await?;
        Ok(())
    }
}
