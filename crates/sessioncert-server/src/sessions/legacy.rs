//! Sessions of the original Session-Cert prototype's clients (`--legacy-session-cert`),
//! in the same table, store, limits and metrics as the protocol's own.
//!
//! - `GET /sessionCert/publicKey` costs nothing and holds nothing: a random id and the
//!   server's RSA public key (one per server, in memory only, replaced every
//!   [`LegacySettings::key_lifetime`]; the one before stays usable for
//!   [`PREVIOUS_KEY_GRACE`]).
//! - `POST /sessionCert/symmetricKey` takes a handshake token of the client's address (the
//!   RSA decryption is the expensive step) and a place among
//!   [`crate::Limits::max_pending_sessions`]; the session then waits in the table,
//!   unstored, at most a ticket lifetime (60 s) for its establish. An id is taken once: a
//!   second key for it is refused (the original let anyone replace a session's key).
//! - `PATCH /sessionCert/establish` counts the session against its address and the live
//!   cap like a confirmed handshake, and stores it (its key sealed under the storage key)
//!   before answering.
//! - Protected requests open under the session's lock, which records the message's salt
//!   first (see `sessioncert_legacy::session`); the response's salt is recorded too.
//!
//! Every refusal after the request's shape was checked is the same [`LegacyRefusal::Refused`]
//! (`403 {"status":false}`): the peer never learns which check failed.
//!
//! Legacy sessions need a store held by one instance (SQLite, memory): their replay state
//! (the salts) lives in this table, which a shared store cannot take over yet.

use super::table::{Entry, Live, Mutable, Running};
use super::{now_ms, SessionManager};
use crate::ServerError;
use sessioncert_legacy::{
    EstablishRefused, EstablishedLegacy, LegacyError, LegacyId, LegacyRsaKey, PendingLegacy,
    RsaBits,
};
use sessioncert_proto::SessionState;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long the RSA key before the current one still opens keys after a rotation: a
/// client that fetched it just before finishes its handshake.
pub const PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(600);

/// Settings of legacy mode.
#[derive(Debug, Clone)]
pub struct LegacySettings {
    /// Size of the server's RSA key.
    pub rsa_bits: RsaBits,
    /// How long one RSA key serves before it is replaced.
    pub key_lifetime: Duration,
    /// Protected requests one session may carry; past it the session expires (each
    /// request and response leaves 8 bytes of salt in memory until the session ends).
    pub max_requests: u32,
    /// Legacy sessions held at once, waiting or established (`503` above): with
    /// `max_requests` this bounds the memory legacy mode can be made to hold.
    pub max_sessions: usize,
    /// How long a session waits for its establish after its key arrived.
    pub establish_within: Duration,
}

impl Default for LegacySettings {
    fn default() -> Self {
        LegacySettings {
            rsa_bits: RsaBits::B2048,
            key_lifetime: Duration::from_secs(24 * 3600),
            max_requests: 1000,
            max_sessions: 20_000,
            establish_within: Duration::from_secs(300),
        }
    }
}

/// Minutes after its issue an id still takes a key (a page may wait between fetching the
/// public key and sending its key; the prototype's demo page did so at a click).
pub const KEY_WITHIN_MINUTES: u64 = 10;

impl LegacySettings {
    /// Salts a session may hold: the test string's, the establish's, and two per request.
    fn max_messages(&self) -> usize {
        (self.max_requests as usize)
            .saturating_mul(2)
            .saturating_add(2)
    }
}

struct LegacyKeys {
    current: Arc<LegacyRsaKey>,
    made_at_ms: u64,
    previous: Option<(Arc<LegacyRsaKey>, u64)>,
}

/// Legacy mode's state in a [`SessionManager`].
pub(crate) struct LegacyMode {
    settings: LegacySettings,
    keys: RwLock<LegacyKeys>,
}

/// What a legacy route answers when it does not serve the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyRefusal {
    /// The request's shape is wrong, before any cryptography (`400`): safe to explain.
    BadRequest(&'static str),
    /// Any check from decryption on, an unknown, ended or used-up session (`403
    /// {"status":false}`), one answer for all.
    Refused,
    /// Too many handshakes from this address (`429`, seconds to wait).
    RateLimited(u64),
    /// The server is full or shutting down (`503`, seconds to wait).
    Unavailable(u64),
}

/// One place among the legacy sessions waiting for their establish; given back when
/// dropped unless kept.
struct PendingSlot<'a>(Option<&'a AtomicUsize>);

impl<'a> PendingSlot<'a> {
    fn take(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(Some(count)))
    }

    /// The session was made: the place stays taken until it is established or ends.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn refused(why: LegacyError, id: Option<LegacyId>) -> LegacyRefusal {
    // The peer gets one uniform answer; the log says why.
    tracing::debug!(legacy_id = id.map(|i| i.get()), reason = %why, "legacy Session-Cert message refused");
    crate::telemetry::legacy_refused();
    LegacyRefusal::Refused
}

impl SessionManager {
    /// Turns legacy mode on: makes the first RSA key (off the async runtime; RSA key
    /// generation takes up to a second). Refused on a shared store.
    pub async fn enable_legacy(&mut self, settings: LegacySettings) -> Result<(), ServerError> {
        if self.shared {
            return Err(ServerError::Config(
                "legacy Session-Cert mode keeps its sessions' replay state in one server's \
                 memory, so it needs a store held by one instance (SQLite or memory), not a \
                 shared Redis or PostgreSQL store"
                    .to_owned(),
            ));
        }
        let bits = settings.rsa_bits;
        let key = tokio::task::spawn_blocking(move || LegacyRsaKey::generate(bits))
            .await
            .map_err(|e| ServerError::Config(format!("legacy RSA key generation: {e}")))?
            .map_err(|e| ServerError::Config(format!("legacy RSA key generation: {e}")))?;
        self.legacy = Some(LegacyMode {
            settings,
            keys: RwLock::new(LegacyKeys {
                current: Arc::new(key),
                made_at_ms: now_ms(),
                previous: None,
            }),
        });
        Ok(())
    }

    /// How long a legacy session waits for its establish (the sweep's deadline).
    pub(super) fn legacy_establish_within_ms(&self) -> u64 {
        self.legacy
            .as_ref()
            .map_or(0, |m| m.settings.establish_within.as_millis() as u64)
    }

    /// Whether legacy mode is on.
    pub fn legacy_enabled(&self) -> bool {
        self.legacy.is_some()
    }

    fn legacy_mode(&self) -> Result<&LegacyMode, LegacyRefusal> {
        self.legacy
            .as_ref()
            .ok_or(LegacyRefusal::BadRequest("legacy Session-Cert mode is off"))
    }

    /// Replaces the RSA key when it has served its time (maintenance).
    pub(crate) async fn rotate_legacy_key_if_due(&self) {
        let Some(mode) = &self.legacy else { return };
        let now = now_ms();
        let due = {
            let k = mode.keys.read().unwrap_or_else(|p| p.into_inner());
            now >= k
                .made_at_ms
                .saturating_add(mode.settings.key_lifetime.as_millis() as u64)
        };
        if !due {
            return;
        }
        let bits = mode.settings.rsa_bits;
        match tokio::task::spawn_blocking(move || LegacyRsaKey::generate(bits)).await {
            Ok(Ok(key)) => {
                let mut k = mode.keys.write().unwrap_or_else(|p| p.into_inner());
                let old = std::mem::replace(&mut k.current, Arc::new(key));
                k.previous = Some((
                    old,
                    now.saturating_add(PREVIOUS_KEY_GRACE.as_millis() as u64),
                ));
                k.made_at_ms = now;
                tracing::info!("legacy Session-Cert RSA key replaced");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "legacy RSA key generation failed"),
            Err(e) => tracing::error!(error = %e, "legacy RSA key generation task failed"),
        }
    }

    /// `GET /sessionCert/publicKey`: a fresh id and the current public key. Holds nothing.
    pub fn legacy_public_key(&self) -> Result<(LegacyId, String), LegacyRefusal> {
        let mode = self.legacy_mode()?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(LegacyRefusal::Unavailable(1));
        }
        let id = LegacyId::issue(now_ms()).map_err(|_| LegacyRefusal::Unavailable(1))?;
        let k = mode.keys.read().unwrap_or_else(|p| p.into_inner());
        Ok((id, k.current.public_pem().to_owned()))
    }

    /// `POST /sessionCert/symmetricKey`: opens the client's key and answers the test
    /// string encrypted under it (the `201` body).
    pub async fn legacy_symmetric_key(
        &self,
        body: &[u8],
        addr: Option<IpAddr>,
    ) -> Result<String, LegacyRefusal> {
        let mode = self.legacy_mode()?;
        let (id, wrapped) =
            sessioncert_legacy::wire::parse_symmetric_key_body(body).map_err(|_| {
                LegacyRefusal::BadRequest(
                    "expected JSON {\"id\": <id>, \"symmetricKey\": \"<base64>\"}",
                )
            })?;
        if !id.issued_within(now_ms(), KEY_WITHIN_MINUTES) {
            // Not an id this server handed out lately: perhaps one whose session ended.
            return Err(refused(LegacyError::UnknownSession, Some(id)));
        }
        let limited = self.limited(addr);
        self.admit_handshake(limited)
            .map_err(|r| match r.retry_after {
                Some(s) if r.code == sessioncert_proto::ErrorCode::RateLimited => {
                    LegacyRefusal::RateLimited(s)
                }
                s => LegacyRefusal::Unavailable(s.unwrap_or(1)),
            })?;
        // A place among the pending, taken before the RSA work (so concurrent handshakes
        // cannot overshoot the cap) and given back unless the session is made.
        let slot = PendingSlot::take(&self.legacy_pending, self.limits.max_pending_sessions)
            .ok_or(LegacyRefusal::Unavailable(60))?;
        if self.legacy_pending.load(Ordering::Relaxed) + self.legacy_live.load(Ordering::Relaxed)
            > mode.settings.max_sessions
        {
            return Err(LegacyRefusal::Unavailable(60));
        }
        // An id takes one key, ever: not one held here, and not one the store knows
        // (a session that ended before a restart).
        if self.cache.contains_key(&id.session_id()) {
            return Err(refused(LegacyError::IdTaken, Some(id)));
        }
        match self.store.load(&id.session_id()).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err(refused(LegacyError::IdTaken, Some(id))),
            Err(e) => {
                tracing::error!(error = %e, "session store read failed");
                return Err(LegacyRefusal::Unavailable(1));
            }
        }
        let (current, previous) = {
            let k = mode.keys.read().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            (
                k.current.clone(),
                k.previous
                    .as_ref()
                    .filter(|(_, until)| now < *until)
                    .map(|(key, _)| key.clone()),
            )
        };
        // The RSA decryption (about a millisecond at 2048 bits, more for larger keys)
        // runs off the async workers.
        let key = tokio::task::spawn_blocking(move || {
            current
                .open_key(&wrapped)
                .or_else(|e| previous.map_or(Err(e), |p| p.open_key(&wrapped)))
        })
        .await
        .map_err(|_| LegacyRefusal::Unavailable(1))?
        .map_err(|e| refused(e, Some(id)))?;
        let (pending, answer) = PendingLegacy::start(id, key).map_err(|e| refused(e, Some(id)))?;
        let now = now_ms();
        // Counted against its address from now on, as a session (released when it ends).
        let entry = Arc::new(Entry::new(
            id.session_id(),
            sessioncert_legacy::wire::SUITE,
            sessioncert_legacy::wire::VERSION,
            addr,
            limited.is_some(),
            now,
            now.saturating_add(self.policy.lifetime_ms),
            self.policy.idle_timeout_ms,
            Mutable::new(Live::LegacyPending(Box::new(pending)), now, 0, false),
        ));
        match self.cache.entry(id.session_id()) {
            dashmap::mapref::entry::Entry::Occupied(_) => {
                return Err(refused(LegacyError::IdTaken, Some(id)))
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
        if let Some(a) = limited {
            self.count_for_addr(a);
        }
        slot.keep();
        crate::telemetry::legacy_handshake("key_accepted");
        Ok(answer)
    }

    /// `PATCH /sessionCert/establish`: checks the client's re-encryption of the test
    /// string; on success the session is established and stored before this returns.
    pub async fn legacy_establish(
        &self,
        id: LegacyId,
        body: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), LegacyRefusal> {
        let mode = self.legacy_mode()?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(LegacyRefusal::Unavailable(1));
        }
        let sid = id.session_id();
        let entry = self
            .cache
            .get(&sid)
            .map(|e| e.value().clone())
            .ok_or_else(|| refused(LegacyError::UnknownSession, Some(id)))?;
        let now = now_ms();
        let too_old = now
            >= entry
                .created_at_ms
                .saturating_add(mode.settings.establish_within.as_millis() as u64);
        let _ = addr;
        {
            // Decided and applied under the entry's lock (AES and a JSON parse:
            // microseconds): two establishes of one id go one after the other, and no
            // other path ever sees the session half-way.
            let mut m = entry.lock();
            let live = std::mem::replace(&mut m.live, Live::Ended(SessionState::Expired, None));
            let Live::LegacyPending(pending) = live else {
                m.live = live;
                return Err(refused(LegacyError::AttemptsExhausted, Some(id)));
            };
            let outcome = if too_old {
                Err(EstablishRefused {
                    error: LegacyError::AttemptsExhausted,
                    pending: None,
                })
            } else {
                pending.establish(body)
            };
            let session = match outcome {
                Ok(s) => s,
                Err(EstablishRefused {
                    error,
                    pending: Some(p),
                }) => {
                    // Attempts left: it waits again, as it was.
                    m.live = Live::LegacyPending(Box::new(p));
                    return Err(refused(error, Some(id)));
                }
                Err(EstablishRefused {
                    error,
                    pending: None,
                }) => {
                    // Spent: ended here (the sweep forgets it; it was never stored).
                    self.pending_ended(&entry, &mut m, SessionState::Expired);
                    return Err(refused(error, Some(id)));
                }
            };
            // Its address counted it since its key arrived; the table must have room.
            if self.live_count.load(Ordering::Relaxed) >= self.limits.max_live_sessions {
                self.pending_ended(&entry, &mut m, SessionState::Expired);
                return Err(LegacyRefusal::Unavailable(60));
            }
            m.live = Live::Legacy(Box::new(session));
            m.last_used_at_ms = now;
            m.touch();
            self.legacy_pending.fetch_sub(1, Ordering::Relaxed);
            self.live_count.fetch_add(1, Ordering::Relaxed);
            self.legacy_live.fetch_add(1, Ordering::Relaxed);
        }
        crate::telemetry::legacy_handshake("established");
        self.queue_save(&entry);
        // Stored before the client is told: a session that answered is listed and
        // survives a clean restart. A failed save is logged and retried by the flush.
        let _ = self.flush().await;
        Ok(())
    }

    /// Ends a legacy session that was waiting for its establish (under its lock): never
    /// stored and never counted as live, it only gives back its place among the pending
    /// and stays as a tombstone until the sweep forgets it.
    pub(super) fn pending_ended(&self, entry: &Entry, m: &mut Mutable, end: SessionState) {
        m.live = Live::Ended(end, None);
        self.legacy_pending.fetch_sub(1, Ordering::Relaxed);
        entry.ended.store(true, Ordering::SeqCst);
        m.ended_at_ms = now_ms();
        self.tombstones.add(end);
        if entry.counted_for_addr.load(Ordering::SeqCst) {
            if let Some(a) = entry.client_addr {
                self.uncount_for_addr(a);
            }
        }
    }

    /// Before a protected request's body is read: refuses it unless the session it names
    /// is an established legacy session here, the server is not shutting down and the
    /// response budget has room — a made-up id makes the server read nothing.
    pub(crate) fn legacy_precheck(&self, id: LegacyId) -> Result<(), LegacyRefusal> {
        self.legacy_mode()?;
        if self.closing.load(Ordering::SeqCst)
            || self.response_bytes.load(Ordering::Relaxed) > self.limits.max_inflight_response_bytes
        {
            return Err(LegacyRefusal::Unavailable(1));
        }
        match self.cache.get(&id.session_id()).map(|e| e.value().clone()) {
            Some(e) if matches!(e.lock().live, Live::Legacy(_)) => Ok(()),
            _ => Err(refused(LegacyError::UnknownSession, Some(id))),
        }
    }

    /// Opens a protected request's body; returns the session's entry (to seal the
    /// response with) and the plaintext. The caller holds [`Running`] while its
    /// handler runs.
    pub(crate) fn legacy_open(
        &self,
        id: LegacyId,
        body: Option<&str>,
    ) -> Result<(Arc<Entry>, Zeroizing<Vec<u8>>), LegacyRefusal> {
        let mode = self.legacy_mode()?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(LegacyRefusal::Unavailable(1));
        }
        let entry = self
            .cache
            .get(&id.session_id())
            .map(|e| e.value().clone())
            .ok_or_else(|| refused(LegacyError::UnknownSession, Some(id)))?;
        let now = now_ms();
        let mut m = entry.lock();
        // Under the lock: the final flush takes every entry's lock after `closing` is
        // set, so a salt recorded here is always in it.
        if self.closing.load(Ordering::SeqCst) {
            return Err(LegacyRefusal::Unavailable(1));
        }
        if !matches!(m.live, Live::Legacy(_)) {
            return Err(refused(LegacyError::UnknownSession, Some(id)));
        }
        if let Some(end) = entry.end_reason(&m, now) {
            let changed = self.end_locked(&entry, &mut m, end);
            drop(m);
            if changed {
                self.queue_save(&entry);
            }
            return Err(refused(LegacyError::RequestsExhausted, Some(id)));
        }
        let Live::Legacy(s) = &mut m.live else {
            return Err(refused(LegacyError::UnknownSession, Some(id)));
        };
        // `None`: a bodiless safe request (the caller checked the method).
        let opened = match body {
            Some(body) => s.open_request(body, mode.settings.max_messages()),
            None => s
                .open_bodiless(mode.settings.max_messages())
                .map(|()| Zeroizing::new(Vec::new())),
        };
        match opened {
            Ok(plain) => {
                m.last_used_at_ms = now;
                m.request_count += 1;
                m.touch();
                drop(m);
                self.queue_save(&entry);
                self.bytes.opened.increment(plain.len() as u64);
                crate::telemetry::legacy_request();
                Ok((entry, plain))
            }
            Err(LegacyError::RequestsExhausted) => {
                let changed = self.end_locked(&entry, &mut m, SessionState::Expired);
                drop(m);
                if changed {
                    self.queue_save(&entry);
                }
                Err(refused(LegacyError::RequestsExhausted, Some(id)))
            }
            Err(e) => {
                // Its salt is recorded (refused for good while the server runs) but not
                // written now: junk must not cost a write of the session each time. It
                // reaches the store with the session's next change.
                drop(m);
                Err(refused(e, Some(id)))
            }
        }
    }

    /// Seals a protected request's response body.
    pub(crate) fn legacy_seal(
        &self,
        entry: &Arc<Entry>,
        body: &[u8],
    ) -> Result<String, LegacyRefusal> {
        let mut m = entry.lock();
        if self.closing.load(Ordering::SeqCst) {
            // The final flush may have saved this session already: a salt recorded now
            // would be lost, and the answer could come back as a request after a restart.
            return Err(LegacyRefusal::Unavailable(1));
        }
        let Live::Legacy(s) = &mut m.live else {
            // Ended while the handler ran.
            return Err(LegacyRefusal::Refused);
        };
        let sealed = s.seal_response(body).map_err(|e| {
            tracing::error!(error = %e, "sealing a legacy response failed");
            LegacyRefusal::Unavailable(1)
        })?;
        m.touch();
        drop(m);
        self.queue_save(entry);
        self.bytes.sealed.increment(body.len() as u64);
        Ok(sealed)
    }

    /// Counts a protected request's handler as running in its session.
    pub(crate) fn legacy_running(entry: &Arc<Entry>) -> Running {
        Running::enter(entry)
    }

    /// A stored legacy session's secrets, opened under the storage key.
    pub(super) fn open_stored_legacy(
        &self,
        rec: &sessioncert_store::SessionRecord,
    ) -> Result<EstablishedLegacy, String> {
        let secrets = Zeroizing::new(
            self.keys
                .storage_key()
                .open(&rec.id, &rec.sealed_secrets)
                .map_err(|e| e.to_string())?,
        );
        let s = EstablishedLegacy::import(&secrets).map_err(|e| e.to_string())?;
        if s.id().session_id() != rec.id {
            return Err("stored secrets belong to another session".to_owned());
        }
        Ok(s)
    }

    /// Live legacy sessions: (waiting for their establish, established).
    pub fn legacy_sessions(&self) -> (usize, usize) {
        (
            self.legacy_pending.load(Ordering::Relaxed),
            self.legacy_live.load(Ordering::Relaxed),
        )
    }
}
