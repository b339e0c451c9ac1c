//! Sessions in a store shared by several server instances
//! ([`ReplayAuthority::SharedStore`]: PostgreSQL, Redis).
//!
//! There the store, not this process, is the authority for every session's state and
//! replay window. This process keeps, per session it has seen, only what cannot go stale:
//! the keys (the traffic keys of an epoch derive from the session's keys and the sequence
//! number, PROTOCOL §10) and the refusal key. For every request it:
//!
//! 1. opens the record locally (authentication first, so a forged record costs the
//!    store nothing and marks nothing);
//! 2. asks the store to check and mark its sequence number atomically
//!    ([`SessionStore::check_request`]), which also decides lifetime, idle time and
//!    whether the session was closed anywhere;
//! 3. runs the handler only on [`RequestCheck::Accepted`].
//!
//! The local window is still updated by step 1 but never decides alone: every number it
//! holds was also marked in the store (or refused there), so it can only refuse what the
//! store would refuse too. A session made at another instance is read from the store on
//! its first request here; one ended anywhere is found ended by the next check. Sessions
//! are created in the store (atomically, first one wins) before their first request runs,
//! and ticket keys derive from a seed the instances agree on through the store, so a
//! handshake answered by one instance is confirmed at any other.

use super::table::{Entry, Live, Mutable};
use super::{now_ms, refusal_for_end, SessionManager};
use crate::error::Refusal;
use crate::telemetry::store_call;
use crate::tickets::TicketKeys;
use crate::ServerError;
use sessioncert_proto::record::RecordHeader;
use sessioncert_proto::SessionState;
use sessioncert_proto::{ErrorCode, ProtocolError, ServerSession, SessionId};
use sessioncert_store::{RequestCheck, RequestMark, SessionRecord};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The name of the ticket-key seed among the store's shared values.
const TICKET_SEED: &str = "ticket-seed";

/// What a request gets when the shared store cannot answer: it did not run, and the
/// client may try again shortly (untagged: the client cannot know that from outside).
const STORE_UNAVAILABLE: Refusal = Refusal::retry_after(ErrorCode::Unavailable, 1);

impl SessionManager {
    /// Agrees with the other instances on the ticket-key seed (the first instance's
    /// random seed wins), so tickets open at every instance. Fails when the stored seed
    /// does not open under this instance's storage key: instances sharing a store must
    /// share the storage key (one `--data` directory, or `SESSIONCERT_STORAGE_KEY`).
    pub(crate) async fn join_shared_store(&mut self) -> Result<(), ServerError> {
        let mut candidate = Zeroizing::new([0u8; 32]);
        sessioncert_proto::crypto::fill_random(candidate.as_mut())?;
        let storage = self.keys.storage_key();
        let sealed = storage.seal_shared_value(TICKET_SEED, candidate.as_ref())?;
        let stored = self.store.shared_value(TICKET_SEED, sealed).await?;
        let seed = storage
            .open_shared_value(TICKET_SEED, &stored)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok())
            .ok_or_else(|| {
                ServerError::Config(format!(
                    "the shared session store was set up under another storage key (this \
                     instance's key id is {}): instances that share a store must share the \
                     storage key (point --data at one directory, or set {} alike); a store \
                     prefix or schema left by another deployment needs a name of its own",
                    storage.key_id(),
                    crate::keys::STORAGE_KEY_ENV
                ))
            })?;
        self.tickets = TicketKeys::shared(Zeroizing::new(seed), now_ms());
        Ok(())
    }

    /// Reads a session this instance does not hold from the store (made or ended at
    /// another instance) and holds it. Unknown ids cost one store read and hold nothing.
    pub(crate) async fn load_shared(&self, id: &SessionId) -> Result<(), Refusal> {
        let record = match store_call("load", self.store.load(id)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Refusal::new(ErrorCode::UnknownSession)),
            Err(e) => {
                tracing::error!(session = %id, error = %e, "session store read failed");
                return Err(STORE_UNAVAILABLE);
            }
        };
        let Some(entry) = self.entry_from_record(&record) else {
            return Err(Refusal::new(ErrorCode::UnknownSession));
        };
        self.hold(entry);
        Ok(())
    }

    /// Puts a session read from the store into the table, unless one is there already
    /// (a concurrent request loaded or created it first: that copy stays).
    fn hold(&self, entry: Entry) {
        if let dashmap::mapref::entry::Entry::Vacant(v) = self.cache.entry(entry.id) {
            let state = entry.lock().live.state();
            v.insert(Arc::new(entry));
            if state.is_live() {
                self.live_count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.tombstones.add(state);
            }
        }
    }

    /// The table entry for a stored session: live with its keys, or a tombstone with its
    /// remains (if it kept any). `None` when a live session's secrets do not open.
    fn entry_from_record(&self, rec: &SessionRecord) -> Option<Entry> {
        if rec.suite == sessioncert_legacy::wire::SUITE {
            // Legacy mode is refused on a shared store; a legacy record found there
            // (written by a single-instance server on the same database) is not ours.
            return None;
        }
        let live = if rec.state == SessionState::Established {
            match self.open_stored_session(rec) {
                Ok(s) => Live::Established(Box::new(s)),
                Err(e) => {
                    tracing::warn!(session = %rec.id, error = %e, "stored session's secrets do not open here (another storage key?)");
                    return None;
                }
            }
        } else if rec.state.is_live() {
            // Only confirmed sessions are ever stored; anything else is not usable.
            return None;
        } else {
            Live::Ended(rec.state, self.open_stored_remains(rec))
        };
        let ended = !live.state().is_live();
        let mut m = Mutable::new(live, rec.last_used_at_ms, rec.request_count, true);
        if ended {
            m.ended_at_ms = now_ms();
        }
        Some(super::persistence::entry_from_stored(rec, m))
    }

    /// Stores a session this instance just confirmed, before its first request runs, so
    /// it is usable at every instance at once, and only then puts it into the table. If
    /// the id is already stored (the same confirmation reached another instance, or this
    /// one, first, or was replayed after the session ended) the stored session is what
    /// counts: it is read from the store instead.
    pub(crate) async fn store_created(
        &self,
        entry: Arc<Entry>,
        limited: Option<std::net::IpAddr>,
    ) -> Result<(), Refusal> {
        let record = {
            let m = entry.lock();
            let Live::Established(s) = &m.live else {
                return Ok(());
            };
            let sealed = self
                .keys
                .storage_key()
                .seal(&entry.id, &s.export())
                .map_err(|e| {
                    tracing::error!(error = %e, "sealing session at rest failed");
                    Refusal::new(ErrorCode::Internal)
                })?;
            SessionRecord {
                id: entry.id,
                state: SessionState::Established,
                version: entry.version,
                suite: entry.suite.to_owned(),
                client_addr: entry.client_addr.map(|a| a.to_string()),
                created_at_ms: entry.created_at_ms,
                last_used_at_ms: m.last_used_at_ms,
                expires_at_ms: entry.expires_at_ms,
                idle_timeout_ms: entry.idle_timeout_ms,
                request_count: 0,
                sealed_secrets: sealed,
            }
        };
        match store_call("create", self.store.create(record)).await {
            Ok(true) => {
                self.insert_created(&entry, limited);
                Ok(())
            }
            // Someone else's record wins: hold that one (unless this instance already
            // holds the session, read by a concurrent request).
            Ok(false) if self.cache.contains_key(&entry.id) => Ok(()),
            Ok(false) => self.load_shared(&entry.id).await,
            Err(e) => {
                tracing::error!(session = %entry.id, error = %e, "storing a new session failed");
                Err(STORE_UNAVAILABLE)
            }
        }
    }

    /// A stand-alone confirmation of a session this instance holds: answered from the
    /// store's record, so a confirmation replayed after a close at another instance is
    /// refused as closed (it never brings the session back either way: the store's
    /// `create` keeps the first record).
    pub(crate) async fn confirm_held_shared(&self, entry: &Arc<Entry>) -> Result<(), Refusal> {
        let record = match store_call("load", self.store.load(&entry.id)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(session = %entry.id, error = %e, "session store read failed");
                return Err(STORE_UNAVAILABLE);
            }
        };
        match record.map(|r| r.state) {
            Some(state) if state.is_live() => Ok(()),
            Some(state) => {
                let end = if state == SessionState::Closed {
                    SessionState::Closed
                } else {
                    SessionState::Expired
                };
                self.end(entry, end);
                Err(refusal_for_end(end))
            }
            None => {
                self.forget(&entry.id);
                Err(Refusal::new(ErrorCode::UnknownSession))
            }
        }
    }

    /// Drops a session from this instance's table (the store keeps it).
    pub(crate) fn forget(&self, id: &SessionId) {
        if let Some((_, e)) = self.cache.remove(id) {
            let m = e.lock();
            match m.live.state() {
                s if s.is_live() => {
                    self.live_count.fetch_sub(1, Ordering::Relaxed);
                    if e.counted_for_addr.load(Ordering::SeqCst) {
                        if let Some(a) = e.client_addr {
                            self.uncount_for_addr(a);
                        }
                    }
                }
                s => self.tombstones.remove(s),
            }
        }
    }

    /// Opens a request of a session in a shared store: locally first (authentication),
    /// then the store's atomic check and mark decides (see the module docs).
    pub(crate) async fn open_shared<T>(
        &self,
        id: &SessionId,
        record: &mut [u8],
        open: impl FnOnce(&mut ServerSession, &mut [u8]) -> Result<T, ProtocolError>,
        seq_of: impl FnOnce(&T) -> u64,
        plaintext_len: impl FnOnce(&T) -> usize,
    ) -> Result<(Arc<Entry>, T), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(super::SHUTTING_DOWN);
        }
        let entry = self.entry(id)?;
        let now = now_ms();
        let opened = {
            let mut m = entry.lock();
            match &mut m.live {
                Live::Established(s) => match open(s, record) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        drop(m);
                        return Err(self.refused_locally(id, e));
                    }
                },
                // Ended here: the store decides whether the refusal may carry a tag.
                Live::Ended(..) => None,
                // Legacy sessions are never held with a shared store.
                Live::Legacy(_) | Live::LegacyPending(_) => {
                    return Err(Refusal::new(ErrorCode::UnknownSession))
                }
            }
        };
        let seq = match &opened {
            Some(o) => seq_of(o),
            None => {
                RecordHeader::parse_prefix(record)
                    .map_err(|_| Refusal::new(ErrorCode::Malformed))?
                    .seq
            }
        };
        let mark = RequestMark {
            id: *id,
            seq,
            now_ms: now,
            close: false,
        };
        let check = match store_call("check", self.store.check_request(mark)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(session = %id, error = %e, "session store check failed");
                return Err(STORE_UNAVAILABLE);
            }
        };
        match (check, opened) {
            (RequestCheck::Accepted { request_count }, Some(o)) => {
                {
                    let mut m = entry.lock();
                    m.last_used_at_ms = m.last_used_at_ms.max(now);
                    m.request_count = request_count;
                }
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.bytes.opened.increment(plaintext_len(&o) as u64);
                Ok((entry, o))
            }
            (RequestCheck::Accepted { .. }, None) => {
                // The store had the session live while this instance holds it ended: the
                // number is now marked but the request does not run here. Untagged, so
                // the client cannot take it for proof either way; the copy is dropped so
                // the next request reads the store's.
                tracing::warn!(session = %id, "session ended here but live in the store; request refused");
                self.forget(id);
                Err(Refusal::new(ErrorCode::Rejected))
            }
            (RequestCheck::Replayed, _) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = %id, seq, "sealed request refused by the shared replay check");
                Err(Refusal::new(ErrorCode::Rejected))
            }
            (RequestCheck::Ended(state), _) => {
                let end = if state == SessionState::Closed {
                    SessionState::Closed
                } else {
                    SessionState::Expired
                };
                self.end(&entry, end);
                let mut refusal = refusal_for_end(end);
                // The store says this number never ran and never will: a tag may say so.
                if let Live::Ended(_, Some(ended)) = &entry.lock().live {
                    refusal.tag = ended.refusal_tag_unrun(record, refusal.code);
                }
                Err(refusal)
            }
            (RequestCheck::Unknown, _) => {
                // Swept from the store (long ended): this copy is stale.
                self.forget(id);
                Err(Refusal::new(ErrorCode::UnknownSession))
            }
        }
    }

    /// Closes a session in the shared store (every instance finds it closed at its next
    /// request), then here. Returns whether it was live in the store.
    pub(crate) async fn close_shared(&self, id: &SessionId) -> Result<bool, Refusal> {
        let closed = store_call("close", self.store.close(id, now_ms()))
            .await
            .map_err(|e| {
                tracing::error!(session = %id, error = %e, "closing a session in the store failed");
                STORE_UNAVAILABLE
            })?;
        if let Ok(e) = self.entry(id) {
            self.end(&e, SessionState::Closed);
            // The remains (refusal key) reach the store before the close is answered, so
            // every instance tags the refusals of requests sent after it (§7 rule 5);
            // with the next flush, another instance that never held the session would
            // answer untagged for up to a flush interval.
            if let Err(e) = self.save_now(&e).await {
                tracing::warn!(session = %id, error = %e, "saving a closed session's remains failed; the next flush retries");
            }
        }
        Ok(closed)
    }

    /// A local refusal (parse, authentication, the local window): nothing reached the
    /// store.
    fn refused_locally(&self, id: &SessionId, e: ProtocolError) -> Refusal {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %id, error = %e, "sealed request refused");
        Refusal::new(match e.code() {
            ErrorCode::Malformed => ErrorCode::Malformed,
            _ => ErrorCode::Rejected,
        })
    }

    /// Whether this manager's store is shared by several instances.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}
