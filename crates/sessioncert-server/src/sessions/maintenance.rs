//! Background work: flush changed sessions, expire and forget old ones, renew keys,
//! and learn about sessions closed by another process (the operator CLI).

use super::table::{Live, TOMBSTONE_TICKET_LIFETIMES};
use super::{now_ms, SessionManager};
use sessioncert_proto::{SessionId, SessionState};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl SessionManager {
    /// Ends sessions closed or expired elsewhere (another process, the store's sweep).
    /// Returns whether the store answered (a failed poll must be repeated from the same
    /// point, or a close made meanwhile would be missed).
    pub async fn poll_ended(&self, since_ms: u64) -> bool {
        match self.store.ended_since(since_ms).await {
            Ok(ids) => {
                for id in ids {
                    let Some(e) = self.cache.get(&id).map(|e| e.value().clone()) else {
                        continue;
                    };
                    if self.end(&e, SessionState::Closed) {
                        tracing::info!(session = %id, "session ended elsewhere; closed here");
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "session store poll failed");
                false
            }
        }
    }

    /// Expires sessions past their lifetime, idle timeout or confirmation deadline, and
    /// forgets tombstones whose end is saved and that would have expired by now.
    /// Returns how many sessions it expired.
    pub async fn sweep(&self) -> u64 {
        let now = now_ms();
        let min_tombstone = self
            .timing
            .ticket_lifetime_ms
            .saturating_mul(TOMBSTONE_TICKET_LIFETIMES);
        let mut expired = Vec::new();
        let mut forget: Vec<(SessionId, SessionState)> = Vec::new();
        let mut forgettable: Vec<(SessionId, SessionState)> = Vec::new();
        let mut idle_copies: Vec<SessionId> = Vec::new();
        for e in self.cache.iter() {
            let entry = e.value();
            let mut m = entry.lock();
            match m.live {
                Live::Ended(state, _) if !m.unsaved() => {
                    if !m.stored && entry.suite == sessioncert_legacy::wire::SUITE {
                        // A legacy session that never got established: nothing of it
                        // was stored and no refusal of it carries a tag; its id goes.
                        forget.push((entry.id, state));
                    } else if now >= entry.tombstone_until(&m, min_tombstone) {
                        forget.push((entry.id, state));
                    } else if now >= m.ended_at_ms.saturating_add(min_tombstone) {
                        // Never before its ticket is long dead (PROTOCOL §6.8).
                        forgettable.push((entry.id, state));
                    }
                }
                Live::Ended(..) => {}
                Live::Established(_) if self.shared => {
                    // The store judges idle time (other instances use the session too);
                    // a copy idle *here* is only dropped, and read again if it is used.
                    if entry.end_reason(&m, now).is_some() {
                        idle_copies.push(entry.id);
                    }
                }
                Live::Established(_) | Live::Legacy(_) => {
                    if let Some(end) = entry.end_reason(&m, now) {
                        self.end_locked(entry, &mut m, end);
                        expired.push(entry.clone());
                    }
                }
                Live::LegacyPending(_) => {
                    // Unstored: ended past its establish deadline, forgotten with the
                    // tombstones once saved (nothing to save).
                    if now
                        >= entry
                            .created_at_ms
                            .saturating_add(self.legacy_establish_within_ms())
                    {
                        self.end_locked(entry, &mut m, SessionState::Expired);
                    }
                }
            }
        }
        for e in &expired {
            self.queue_save(e);
        }
        for id in &idle_copies {
            self.forget(id);
        }
        // Tombstones only make a refusal more precise (no path reads a session back),
        // so when there are too many, some saved ones go early.
        let tombstones = forgettable.len();
        if tombstones > self.limits.max_live_sessions {
            forget.extend(
                forgettable
                    .into_iter()
                    .take(tombstones - self.limits.max_live_sessions),
            );
        }
        for (id, state) in forget {
            // Only ended, saved entries were picked; nothing can change them since.
            if self.cache.remove(&id).is_some() {
                self.tombstones.remove(state);
            }
        }
        self.rate.prune(&self.limits);
        match self
            .store
            .sweep(
                now,
                self.timing.ticket_lifetime_ms,
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

    /// Starts the background flush, poll, key check and sweep loops; they stop when the manager
    /// is dropped or shutdown begins.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let timing = self.timing.clone();
        tokio::spawn(async move {
            let mut flush = tokio::time::interval(timing.flush_interval);
            let mut poll = tokio::time::interval(timing.poll_interval);
            let mut sweep = tokio::time::interval(timing.sweep_interval);
            let mut rotate = tokio::time::interval(timing.key_rotation_check);
            // Nothing is unsaved at start: the first flush comes one interval later,
            // not at whatever moment this task first runs (which made when a change was
            // first written depend on scheduling).
            flush.tick().await;
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_poll = now_ms();
            loop {
                tokio::select! {
                    _ = flush.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        if m.closing.load(Ordering::SeqCst) { break }
                        // Errors are logged where they happen; the sessions stay queued.
                        let _ = m.flush().await;
                        m.publish_gauges();
                        crate::telemetry::report_suppressed();
                    }
                    _ = poll.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        let now = now_ms();
                        // Overlap the window: clocks of other processes may differ slightly.
                        if m.poll_ended(last_poll.saturating_sub(5_000)).await {
                            last_poll = now;
                        }
                    }
                    _ = rotate.tick() => {
                        let Some(m) = weak.upgrade() else { break };
                        m.rotate_keys_if_due().await;
                        m.rotate_legacy_key_if_due().await;
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
}
