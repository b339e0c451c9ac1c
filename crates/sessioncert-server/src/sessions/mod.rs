//! The live session table and everything that creates, uses and ends sessions.
//!
//! - `table`: the in-memory entries — the one authority for every live session's keys
//!   and replay window while the server runs; ended sessions stay as tombstones.
//! - `admission`: rate and capacity checks before a handshake costs anything.
//! - `persistence`: the one write-behind path to the store, the load at start and the
//!   final flush.
//! - `maintenance`: background flush, sweep, key rotation and closes made elsewhere.
//!
//! The hot path (open a request, seal a response) touches only memory: a map lookup,
//! a short per-session lock and the AEAD. Shutdown first stops opening requests, then
//! saves every session, and only then marks the store clean — so a clean restart never
//! resumes a window older than the last request it accepted.

mod admission;
mod legacy;
mod maintenance;
mod persistence;
mod shared;
mod table;

pub use legacy::{LegacyRefusal, LegacySettings, PREVIOUS_KEY_GRACE};
pub use persistence::LoadReport;
pub use table::Entry;
pub(crate) use table::Running;

use crate::error::Refusal;
use crate::keys::ServerKeys;
use crate::limits::{HandshakeRate, Limits};
use crate::telemetry::{self, HandshakeOutcome};
use crate::tickets::{TicketKeys, TicketTimes};
use crate::ServerError;
use base64::Engine as _;
use dashmap::DashMap;
use sessioncert_proto::handshake::respond;
use sessioncert_proto::record::RECORD_HEADER_LEN;
use sessioncert_proto::stream::StreamSealer;
use sessioncert_proto::{
    Confirmation, ErrorCode, OpenedInPlace, OpenedRequestStream, PendingServerSession,
    ProtocolError, RequestBinding, ResponseBinding, ResponseSealer, ServerPolicy, ServerSession,
    SessionId, SessionState, Suite,
};
use sessioncert_store::{ReplayAuthority, SessionStore};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest a close waits for the session's running requests (see
/// [`SessionManager::seal_and_close`]).
pub const CLOSE_DRAIN: Duration = Duration::from_secs(5);
use table::{Live, Mutable};

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
    /// How often changed sessions are persisted.
    pub flush_interval: Duration,
    /// How often the store is asked for sessions closed elsewhere (another process).
    pub poll_interval: Duration,
    /// How often expired sessions are swept.
    pub sweep_interval: Duration,
    /// How long a ticket may be confirmed after its handshake (at most the protocol's
    /// `TICKET_LIFETIME_MS`; shorter only for tests). The ticket key rotates at the
    /// protocol's lifetime regardless.
    pub ticket_lifetime_ms: u64,
    /// How long ended sessions stay listed in the store.
    pub retain_ended_ms: u64,
    /// How often the key files (handshake keys, identity) are re-read and the keys
    /// checked for renewal. (The configuration is re-signed when it is served after its
    /// period ended or the keys changed: `keys::CONFIG_PERIOD_MS`.)
    pub key_rotation_check: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            flush_interval: Duration::from_millis(100),
            poll_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(30),
            ticket_lifetime_ms: sessioncert_proto::handshake::TICKET_LIFETIME_MS,
            retain_ended_ms: 24 * 3600 * 1000,
            // Also how soon a key another instance added is picked up: well within
            // `HANDSHAKE_KEY_PUBLISH_DELAY_MS`.
            key_rotation_check: Duration::from_secs(60),
        }
    }
}

fn client_addr(parts: &http::request::Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn refusal_for_end(state: SessionState) -> Refusal {
    Refusal::new(match state {
        SessionState::Closed => ErrorCode::SessionClosed,
        _ => ErrorCode::SessionExpired,
    })
}

/// Refusal of anything that would change a session once shutdown has begun.
const SHUTTING_DOWN: Refusal = Refusal::retry_after(ErrorCode::Unavailable, 1);

/// Counters for operators.
#[derive(Debug, Default)]
pub struct Stats {
    /// Handshakes answered (tickets issued; nothing stored).
    pub handshakes: AtomicU64,
    /// Sessions created by a confirmation (ESTABLISHED).
    pub established: AtomicU64,
    /// Sealed requests opened.
    pub requests: AtomicU64,
    /// Sealed requests or confirmations refused.
    pub rejected: AtomicU64,
}

/// The session table and everything needed to create and use sessions.
pub struct SessionManager {
    keys: Arc<ServerKeys>,
    config: RwLock<Arc<ServedConfig>>,
    policy: ServerPolicy,
    limits: Limits,
    timing: Timing,
    store: Arc<dyn SessionStore>,
    /// Live sessions and tombstones of ended ones.
    cache: DashMap<SessionId, Arc<Entry>>,
    /// Live (matching or established) entries in `cache`.
    live_count: AtomicUsize,
    /// Ticket keys (memory only; derived from a seed agreed through a shared store).
    tickets: TicketKeys,
    /// The store is shared by several instances: it, not this table, decides every
    /// request's freshness and every session's state (see `shared`).
    shared: bool,
    per_addr: DashMap<IpAddr, u32>,
    rate: HandshakeRate,
    stats: Stats,
    /// Entries changed since the last flush.
    save_queue: Mutex<Vec<Arc<Entry>>>,
    /// Serializes flushes, so an older snapshot never lands after a newer one.
    flush_lock: tokio::sync::Mutex<()>,
    /// The origins (`scheme://authority`) requests may be sealed for; empty: any.
    public_origins: Vec<String>,
    /// Set when shutdown begins: from then on no request is opened and no session
    /// changes, so the final flush sees every window as it will stay.
    closing: AtomicBool,
    /// Bytes of sealed responses built and not yet fully sent (or dropped).
    pub(crate) response_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// Tombstones in `cache`, by how their session ended (for the sessions gauge).
    tombstones: Tombstones,
    /// Whether the last write to the store went through (readiness).
    store_writable: AtomicBool,
    /// Plaintext bytes opened and sealed (metrics).
    bytes: telemetry::ByteCounters,
    /// Legacy Session-Cert mode, when on (`legacy`).
    legacy: Option<legacy::LegacyMode>,
    /// Legacy sessions waiting for their establish (in `cache`, not in `live_count`).
    legacy_pending: AtomicUsize,
    /// Established legacy sessions (in `cache`, and counted in `live_count` too).
    legacy_live: AtomicUsize,
}

/// Tombstones in the table by state: kept as counts so the sessions gauge never walks
/// the table.
#[derive(Default)]
struct Tombstones {
    closed: AtomicUsize,
    expired: AtomicUsize,
}

impl Tombstones {
    fn of(&self, state: SessionState) -> &AtomicUsize {
        match state {
            SessionState::Closed => &self.closed,
            _ => &self.expired,
        }
    }

    pub(crate) fn add(&self, state: SessionState) {
        self.of(state).fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, state: SessionState) {
        let _ = self
            .of(state)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl SessionManager {
    /// Creates the manager. Before it serves, load the store's live sessions with
    /// [`SessionManager::load_from_store`]; background work starts with
    /// [`SessionManager::spawn_maintenance`]. ([`crate::SessionCert`] does both.)
    pub fn new(
        keys: Arc<ServerKeys>,
        store: Arc<dyn SessionStore>,
        policy: ServerPolicy,
        limits: Limits,
        timing: Timing,
    ) -> Result<Self, ServerError> {
        let config = ServedConfig::sign(&keys, &policy.suites, now_ms())?;
        let shared = store.replay_authority() == ReplayAuthority::SharedStore;
        Ok(SessionManager {
            shared,
            keys,
            config: RwLock::new(Arc::new(config)),
            policy,
            limits,
            timing,
            store,
            cache: DashMap::new(),
            live_count: AtomicUsize::new(0),
            tickets: TicketKeys::new(now_ms())?,
            per_addr: DashMap::new(),
            rate: HandshakeRate::default(),
            stats: Stats::default(),
            save_queue: Mutex::new(Vec::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
            response_bytes: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            public_origins: Vec::new(),
            tombstones: Tombstones::default(),
            store_writable: AtomicBool::new(true),
            bytes: telemetry::ByteCounters::new(),
            legacy: None,
            legacy_pending: AtomicUsize::new(0),
            legacy_live: AtomicUsize::new(0),
        })
    }

    /// Restricts the origins requests may be sealed for (`scheme://authority`, lower
    /// case, default port omitted, e.g. `https://api.example.com`); others get
    /// `421 misdirected`. Empty (the default): any origin.
    pub fn with_public_origins(mut self, origins: Vec<String>) -> Self {
        self.public_origins = origins;
        self
    }

    /// The origins requests may be sealed for (empty: any).
    pub fn public_origins(&self) -> &[String] {
        &self.public_origins
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

    /// Live (matching or established) sessions held in memory.
    pub fn live_sessions(&self) -> usize {
        self.live_count.load(Ordering::Relaxed)
    }

    /// Entries in the table, tombstones of ended sessions included.
    pub fn table_len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the last write to the store went through. A store that fails is noticed
    /// at the next write (every `flush_interval` while sessions change); sessions that
    /// could not be saved stay queued and are retried.
    pub fn store_writable(&self) -> bool {
        self.store_writable.load(Ordering::Relaxed)
    }

    /// Whether shutdown has begun (no request is opened any more).
    pub fn is_shutting_down(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Ready to serve: shutdown has not begun and the store takes writes.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.store_writable()
    }

    /// Sets the gauges read from the table — sessions by state, response bytes held —
    /// from counts kept as sessions change (no walk of the table, no lock). Called by the
    /// maintenance loop; call it before rendering metrics for an exact reading.
    pub fn publish_gauges(&self) {
        let gauge = |state: &'static str, n: usize| {
            metrics::gauge!(telemetry::SESSIONS, "state" => state).set(n as f64);
        };
        gauge("established", self.live_count.load(Ordering::Relaxed));
        gauge("closed", self.tombstones.closed.load(Ordering::Relaxed));
        gauge("expired", self.tombstones.expired.load(Ordering::Relaxed));
        metrics::gauge!(telemetry::RESPONSE_BYTES_HELD)
            .set(self.response_bytes.load(Ordering::Relaxed) as f64);
        let (pending, legacy) = self.legacy_sessions();
        metrics::gauge!(telemetry::LEGACY_SESSIONS, "state" => "matching").set(pending as f64);
        metrics::gauge!(telemetry::LEGACY_SESSIONS, "state" => "established").set(legacy as f64);
    }

    /// The encoded signed key configuration to serve now; re-signed first when its
    /// period ended or the keys changed (a signature per period, not per request).
    pub fn config_bytes(&self) -> Arc<Vec<u8>> {
        let now = now_ms();
        let current = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if current.is_current(&self.keys, now) {
            return current.bytes.clone();
        }
        match self.refresh_config() {
            Ok(c) => c.bytes.clone(),
            Err(e) => {
                tracing::error!(error = %e, "re-signing the key configuration failed");
                current.bytes.clone()
            }
        }
    }

    /// Picks up handshake keys another instance (or `sessioncert rotate-keys`) wrote to
    /// the shared key file, renews them when they near their end, and re-signs the
    /// configuration when they changed.
    pub async fn rotate_keys_if_due(self: &Arc<Self>) {
        let me = self.clone();
        let rotated = tokio::task::spawn_blocking(move || {
            let reloaded = me.keys.reload()?;
            Ok::<_, ServerError>(me.keys.rotate_if_due(now_ms())? || reloaded)
        })
        .await;
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

    /// Re-signs the key configuration (after a key change, or for a new period).
    pub fn refresh_config(&self) -> Result<Arc<ServedConfig>, ServerError> {
        let c = Arc::new(ServedConfig::sign(
            &self.keys,
            &self.policy.suites,
            now_ms(),
        )?);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = c.clone();
        Ok(c)
    }

    /// Answers a client hello with the server hello and a ticket. Nothing is stored:
    /// the session exists only once a confirmation arrives.
    pub async fn handshake(&self, msg: &[u8], addr: Option<IpAddr>) -> Result<Vec<u8>, Refusal> {
        self.admit_handshake(self.limited(addr))?;
        let now = now_ms();
        self.tickets.rotate_if_due(now);
        let id = SessionId::random().map_err(Refusal::from)?;
        let resp = respond(
            &self.keys.accepted_handshake_keys(),
            &self.policy,
            msg,
            id,
            now,
        )
        .map_err(|e| {
            // The access log has the refusal's code; this says why.
            tracing::debug!(error = %e, "handshake refused");
            Refusal::from(e)
        })?;
        let times = TicketTimes {
            issued_at_ms: now,
            expires_at_ms: resp.hello.expires_at_ms,
            idle_timeout_ms: resp.hello.idle_timeout_ms,
        };
        let ticket = self
            .tickets
            .seal(times, &resp.pending.export())
            .map_err(Refusal::from)?;
        let message = resp.server_hello(&ticket).map_err(Refusal::from)?;
        self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        Ok(message)
    }

    /// Admits a request before any byte of its body is read: a session this server
    /// holds (live, or ended — its refusal needs the record), or one the request's
    /// `sessioncert-confirm` header creates (PROTOCOL §6.8). Anything else is refused
    /// here, so an anonymous peer cannot make the server buffer a body by naming a
    /// made-up session id. Touches the store only to write a session it creates.
    pub async fn precheck(
        &self,
        id: &SessionId,
        parts: &http::request::Parts,
    ) -> Result<(), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(SHUTTING_DOWN);
        }
        // A legacy session's id names nothing in this protocol: it is answered exactly
        // as an unknown id is.
        if self
            .cache
            .get(id)
            .is_some_and(|e| e.suite != sessioncert_legacy::wire::SUITE)
        {
            return Ok(());
        }
        let Some(header) = parts.headers.get(sessioncert_proto::wire::CONFIRM_HEADER) else {
            if self.shared {
                // Made, or ended, at another instance.
                return self.load_shared(id).await;
            }
            return Err(Refusal::new(ErrorCode::UnknownSession));
        };
        // bytes16(ticket ≤ 1024) || 32 bytes, in base64url: at most 1,411 characters.
        if header.len() > 1500 {
            return Err(Refusal::new(ErrorCode::Malformed));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.as_bytes())
            .map_err(|_| Refusal::new(ErrorCode::Malformed))?;
        self.establish(id, &bytes, client_addr(parts)).await
    }

    /// Stand-alone key confirmation (`POST /.well-known/sessioncert/confirm`):
    /// idempotent — a session that already exists answers as it is.
    pub async fn confirm(
        &self,
        id: &SessionId,
        confirmation: &[u8],
        addr: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(SHUTTING_DOWN);
        }
        // (A legacy session's id is answered as an unknown id is: its confirmation
        // cannot open.)
        if let Some(e) = self
            .cache
            .get(id)
            .map(|e| e.value().clone())
            .filter(|e| e.suite != sessioncert_legacy::wire::SUITE)
        {
            if self.shared {
                // The store knows whether another instance ended it meanwhile.
                return self.confirm_held_shared(&e).await;
            }
            let m = e.lock();
            return match e.end_reason(&m, now_ms()) {
                Some(end) => Err(refusal_for_end(end)),
                None => Ok(()),
            };
        }
        self.establish(id, confirmation, addr).await
    }

    /// Creates a session from a confirmation (PROTOCOL §6.8 steps 2–7) and saves it
    /// (group-committed with whatever else is queued) before its first request runs, so
    /// a session that has answered a request is listed and survives a clean restart. A
    /// concurrent request with the same confirmation finds it created and goes on as
    /// any request of the session.
    async fn establish(
        &self,
        id: &SessionId,
        confirmation: &[u8],
        addr: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if self.shared {
            // Into the table only once the store holds it: before that, another
            // request of the session here must not find it and ask the store about it.
            if self.cache.contains_key(id) {
                return Ok(());
            }
            let (entry, limited) = self.confirmed_entry(id, confirmation, addr)?;
            return self.store_created(entry, limited).await;
        }
        if self.create(id, confirmation, addr)? {
            // A failed save is logged by `flush` and the session stays queued; the
            // session itself is valid in memory, so the request goes on.
            let _ = self.flush().await;
        }
        Ok(())
    }

    /// The synchronous part of [`Self::establish`]: checks and inserts. Returns whether
    /// this call created the session.
    fn create(
        &self,
        id: &SessionId,
        confirmation: &[u8],
        addr: Option<IpAddr>,
    ) -> Result<bool, Refusal> {
        let (entry, limited) = self.confirmed_entry(id, confirmation, addr)?;
        let created = self.insert_created(&entry, limited);
        if created {
            entry.lock().touch();
            self.queue_save(&entry);
        }
        Ok(created)
    }

    /// Checks a confirmation (PROTOCOL §6.8 steps 2–6) and builds the session's entry,
    /// not yet in the table. Also returns the address the session counts against.
    fn confirmed_entry(
        &self,
        id: &SessionId,
        confirmation: &[u8],
        addr: Option<IpAddr>,
    ) -> Result<(Arc<Entry>, Option<IpAddr>), Refusal> {
        let refused = |code: ErrorCode, why: &str| {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            telemetry::handshake(HandshakeOutcome::ConfirmationRefused);
            // The access log has the refusal's code; this says why.
            tracing::debug!(session = %id, reason = why, "confirmation refused");
            Refusal::new(code)
        };
        let conf = Confirmation::parse(confirmation)
            .map_err(|_| refused(ErrorCode::Malformed, "unparseable"))?;
        let (times, export) = self
            .tickets
            .open(conf.ticket, now_ms())
            .ok_or_else(|| refused(ErrorCode::UnknownSession, "ticket does not open"))?;
        let pending = PendingServerSession::import(&export)
            .map_err(|_| refused(ErrorCode::UnknownSession, "ticket content unusable"))?;
        if pending.id() != *id {
            return Err(refused(
                ErrorCode::UnknownSession,
                "ticket of another session",
            ));
        }
        let now = now_ms();
        if now
            >= times
                .issued_at_ms
                .saturating_add(self.timing.ticket_lifetime_ms)
        {
            return Err(refused(ErrorCode::SessionExpired, "ticket too old"));
        }
        let session = pending
            .confirm(conf.client_finished)
            .map_err(|_| refused(ErrorCode::HandshakeFailed, "client_finished mismatch"))?;
        let limited = self.limited(addr);
        self.admit_session(limited).inspect_err(|_| {
            telemetry::handshake(HandshakeOutcome::ConfirmationRefused);
        })?;
        let entry = Arc::new(Entry::new(
            *id,
            session.suite().name(),
            session.version(),
            addr,
            limited.is_some(),
            now,
            times.expires_at_ms,
            times.idle_timeout_ms,
            // A shared store gets the session from `store_created`, never from a flush.
            Mutable::new(Live::Established(Box::new(session)), now, 0, self.shared),
        ));
        Ok((entry, limited))
    }

    /// Puts a session just created into the table unless its id is there already, and
    /// counts it. Returns whether it did.
    pub(crate) fn insert_created(&self, entry: &Arc<Entry>, limited: Option<IpAddr>) -> bool {
        let created = match self.cache.entry(entry.id) {
            dashmap::mapref::entry::Entry::Occupied(_) => false,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(entry.clone());
                true
            }
        };
        if created {
            if let Some(a) = limited {
                self.count_for_addr(a);
            }
            self.live_count.fetch_add(1, Ordering::Relaxed);
            self.stats.established.fetch_add(1, Ordering::Relaxed);
            telemetry::handshake(HandshakeOutcome::Established);
        }
        created
    }

    /// Whether `id` is a session this process holds that has not ended (closed or
    /// expired). Applications that bind state to a session (the key broker's logins)
    /// drop it once this turns false.
    pub fn is_live(&self, id: &SessionId) -> bool {
        self.cache
            .get(id)
            .is_some_and(|e| !matches!(e.value().lock().live, table::Live::Ended(..)))
    }

    /// The session's entry. Memory only: the table is the authority for every live
    /// session, so an id it does not hold is unknown.
    fn entry(&self, id: &SessionId) -> Result<Arc<Entry>, Refusal> {
        self.cache
            .get(id)
            .map(|e| e.value().clone())
            .ok_or(Refusal::new(ErrorCode::UnknownSession))
    }

    /// Opens a sealed request. The returned entry is what the response is sealed with.
    /// The record is decrypted in place; the returned range locates the plaintext.
    pub async fn open_request(
        &self,
        id: &SessionId,
        binding: &RequestBinding<'_>,
        record: &mut [u8],
    ) -> Result<(Arc<Entry>, OpenedInPlace), Refusal> {
        if self.shared {
            return self
                .open_shared(
                    id,
                    record,
                    |s, record| s.open_request_in_place(binding, record),
                    |o| o.sealer.seq(),
                    |o| o.plaintext.len(),
                )
                .await;
        }
        self.open_with(
            id,
            record,
            |s, record| s.open_request_in_place(binding, record),
            |o| o.plaintext.len(),
        )
    }

    /// Opens the start of a streamed request (PROTOCOL §8.5): `record` holds the
    /// stream's 9-byte header followed by exactly its first chunk, which is opened in
    /// place. Refused exactly as a single record is (the replay window first, nothing
    /// changed by a refusal, a refusal tag computed over the header and first chunk).
    pub(crate) async fn open_request_stream(
        &self,
        id: &SessionId,
        binding: &RequestBinding<'_>,
        record: &mut [u8],
    ) -> Result<(Arc<Entry>, OpenedRequestStream), Refusal> {
        let open = |s: &mut ServerSession, record: &mut [u8]| {
            if record.len() < RECORD_HEADER_LEN {
                return Err(ProtocolError::Malformed { what: "stream" });
            }
            let (header, first) = record.split_at_mut(RECORD_HEADER_LEN);
            s.open_request_stream(binding, header, first)
        };
        if self.shared {
            return self
                .open_shared(
                    id,
                    record,
                    open,
                    |o: &OpenedRequestStream| o.sealer.seq(),
                    |o| o.first.plaintext.len(),
                )
                .await;
        }
        self.open_with(id, record, open, |o| o.first.plaintext.len())
    }

    /// The one path that opens a request of a session: under the session's lock, ends
    /// it (and refuses with a tag where PROTOCOL §14.1 allows) if its time is up,
    /// otherwise runs `open` on it and counts the request.
    fn open_with<T>(
        &self,
        id: &SessionId,
        record: &mut [u8],
        open: impl FnOnce(&mut ServerSession, &mut [u8]) -> Result<T, ProtocolError>,
        plaintext_len: impl FnOnce(&T) -> usize,
    ) -> Result<(Arc<Entry>, T), Refusal> {
        let entry = self.entry(id)?;
        let now = now_ms();
        let opened = {
            let mut m = entry.lock();
            // Checked under the entry lock: the final flush takes every entry's lock
            // after setting `closing`, so a window advanced here is always in it.
            if self.closing.load(Ordering::SeqCst) {
                return Err(SHUTTING_DOWN);
            }
            if let Some(end) = entry.end_reason(&m, now) {
                let changed = self.end_locked(&entry, &mut m, end);
                let mut refusal = refusal_for_end(end);
                if let Live::Ended(_, Some(ended)) = &m.live {
                    refusal.tag = ended.refusal_tag(record, refusal.code);
                }
                drop(m);
                if changed {
                    self.queue_save(&entry);
                }
                return Err(refusal);
            }
            let Live::Established(s) = &mut m.live else {
                return Err(Refusal::new(ErrorCode::UnknownSession));
            };
            match open(s, record) {
                Ok(o) => {
                    m.last_used_at_ms = now;
                    m.request_count += 1;
                    m.touch();
                    o
                }
                Err(e) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    // The access log has the refusal's code; this says why.
                    tracing::debug!(session = %id, error = %e, "sealed request refused");
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
        self.bytes.opened.increment(plaintext_len(&opened) as u64);
        self.queue_save(&entry);
        Ok((entry, opened))
    }

    /// Starts the streamed response to a request (its sealer consumed): the 9-byte
    /// stream header and the sealer of its chunks, which seals outside the session's
    /// lock.
    pub(crate) fn start_response_stream(
        &self,
        entry: &Entry,
        sealer: ResponseSealer,
        binding: &ResponseBinding<'_>,
    ) -> Result<(Vec<u8>, StreamSealer), Refusal> {
        let mut m = entry.lock();
        let Live::Established(s) = &mut m.live else {
            return Err(Refusal::new(ErrorCode::SessionClosed));
        };
        s.seal_response_stream(sealer, binding).map_err(|failed| {
            tracing::error!(session = %entry.id, error = %failed.error, "starting a response stream failed");
            Refusal::new(ErrorCode::Internal)
        })
    }

    /// The sealed- and opened-bytes counters (streams count their chunks as they go).
    pub(crate) fn byte_counters(&self) -> &telemetry::ByteCounters {
        &self.bytes
    }

    /// Seals the response to a request opened with [`SessionManager::open_request`].
    pub fn seal_response(
        &self,
        entry: &Entry,
        sealer: ResponseSealer,
        binding: &ResponseBinding<'_>,
        body: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        let mut m = entry.lock();
        let Live::Established(s) = &mut m.live else {
            // Closed while the handler ran (e.g. this was the close request itself).
            return Err(Refusal::new(ErrorCode::SessionClosed));
        };
        let record = s.seal_response(sealer, binding, body).map_err(|failed| {
            tracing::error!(session = %entry.id, error = %failed.error, "sealing a response failed");
            Refusal::new(ErrorCode::Internal)
        })?;
        self.bytes.sealed.increment(body.len() as u64);
        Ok(record)
    }

    /// Seals the response to a close request and closes the session. Requests of the
    /// session whose handler is still running (their whole body arrived before the
    /// close; a streamed one still arriving fails at its next chunk) are waited for, at
    /// most [`CLOSE_DRAIN`], before the close is answered: a client told "closed" after
    /// giving up on a request can retry it without the first attempt completing later.
    pub async fn seal_and_close(
        &self,
        entry: &Arc<Entry>,
        sealer: ResponseSealer,
        binding: &ResponseBinding<'_>,
    ) -> Result<Vec<u8>, Refusal> {
        let sealed = self.seal_response(entry, sealer, binding, b"")?;
        if self.shared {
            // Closed in the store first: from then on no instance accepts a request.
            self.close_shared(&entry.id).await?;
        }
        self.end(entry, SessionState::Closed);
        let deadline = std::time::Instant::now() + CLOSE_DRAIN;
        while entry.running.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let still = entry.running.load(Ordering::SeqCst);
        if still > 0 {
            tracing::warn!(
                session = %entry.id,
                running = still,
                "session closed while a request in it was still running after the wait"
            );
        }
        Ok(sealed)
    }

    /// Closes a session (client request or operator in this process). Returns whether
    /// it was live. The session ends in memory at once — no request can use it after
    /// this returns — and its end reaches the store with the next flush.
    pub async fn close(&self, id: &SessionId) -> bool {
        if self.shared {
            return self.close_shared(id).await.unwrap_or(false);
        }
        match self.entry(id) {
            Ok(e) => self.end(&e, SessionState::Closed),
            Err(_) => false,
        }
    }

    /// Ends a session (it stays as a tombstone). Returns whether it was live.
    pub(crate) fn end(&self, entry: &Arc<Entry>, end: SessionState) -> bool {
        let changed = {
            let mut m = entry.lock();
            self.end_locked(entry, &mut m, end)
        };
        if changed {
            self.queue_save(entry);
        }
        changed
    }

    /// Ends a live session under its lock: traffic keys dropped (the refusal key and
    /// window stay in the tombstone), counts released. Returns whether it was live.
    fn end_locked(&self, entry: &Entry, m: &mut Mutable, end: SessionState) -> bool {
        let live = std::mem::replace(&mut m.live, Live::Ended(end, None));
        match live {
            Live::Established(session) => m.live = Live::Ended(end, Some((*session).end())),
            // A legacy session keeps nothing: its refusals carry no tag.
            Live::Legacy(_) => {
                self.legacy_live.fetch_sub(1, Ordering::Relaxed);
            }
            Live::LegacyPending(_) => {
                self.pending_ended(entry, m, end);
                return true;
            }
            Live::Ended(..) => {
                m.live = live;
                return false;
            }
        }
        entry.ended.store(true, Ordering::SeqCst);
        m.ended_at_ms = now_ms();
        m.touch();
        self.live_count.fetch_sub(1, Ordering::Relaxed);
        self.tombstones.add(end);
        if entry.counted_for_addr.load(Ordering::SeqCst) {
            if let Some(a) = entry.client_addr {
                self.uncount_for_addr(a);
            }
        }
        true
    }

    /// Stops opening requests, saves every session, then records a clean shutdown in
    /// the store. If the final save fails the store is *not* marked clean, so the next
    /// start expires the sessions instead of trusting stale windows.
    pub async fn shutdown(&self) -> Result<(), ServerError> {
        self.closing.store(true, Ordering::SeqCst);
        let written = self.flush_all().await?;
        tracing::info!(
            live = self.live_count.load(Ordering::Relaxed),
            written,
            "sessions written to the store"
        );
        self.store.shutdown().await?;
        Ok(())
    }
}

/// The signed key configuration as served, with what it was signed from.
pub struct ServedConfig {
    /// `ServerKeys::config_basis` when it was signed.
    basis: (u64, u64),
    identity: sessioncert_proto::Pin,
    bytes: Arc<Vec<u8>>,
}

impl ServedConfig {
    fn sign(keys: &ServerKeys, suites: &[Suite], now_ms: u64) -> Result<Self, ServerError> {
        let basis = keys.config_basis(now_ms);
        let signed = keys.signed_config(suites, now_ms)?;
        let parsed = sessioncert_proto::KeyConfig::decode(&signed.config)?;
        Ok(ServedConfig {
            basis,
            identity: parsed.identity,
            bytes: Arc::new(signed.encode()),
        })
    }

    /// Whether this is still the configuration to serve at `now_ms`. (A key set change
    /// that keeps the change time, e.g. keys reloaded from an older file, is re-signed by
    /// the caller of [`ServerKeys::reload`].)
    fn is_current(&self, keys: &ServerKeys, now_ms: u64) -> bool {
        self.basis == keys.config_basis(now_ms) && self.identity == keys.pin()
    }
}
