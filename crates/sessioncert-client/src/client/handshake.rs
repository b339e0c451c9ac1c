//! Starting sessions: the [`Slot`] that holds one established session and decides
//! whether it is still usable (lifetime, idle timeout, message budget), the handshake
//! itself, and the single-flight logic that replaces a session that is gone or about
//! to be. Kept apart from [`super::exchange`] so that what a request does and when a
//! session is (re)started can be read separately.

use super::exchange::{refusal, H_ERROR};
use super::{lock, now_ms, read_limited, Inner, SessionInfo};
use crate::ClientError;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use sessioncert_proto::handshake::{MAX_HANDSHAKE_LEN, SUPPORTED_VERSIONS};
use sessioncert_proto::wire;
use sessioncert_proto::{ClientHandshake, ClientOffer, ClientSession, ErrorCode, SessionId, Suite};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, info};

/// One established session, shared by the requests that use it. Requests keep an
/// `Arc` to the slot they sealed with, so a concurrent re-handshake never leaves a
/// response without the keys to open it.
pub(super) struct Slot {
    pub(super) generation: u64,
    pub(super) id: SessionId,
    pub(super) suite: Suite,
    version: u16,
    pub(super) expires_at_ms: u64,
    pub(super) idle_timeout_ms: u64,
    /// The id as a ready header value (built once, sent on every request).
    pub(super) id_header: HeaderValue,
    pub(super) session: Mutex<ClientSession>,
    pub(super) last_used_ms: AtomicU64,
    pub(super) dead: AtomicBool,
}

/// How long before a session's end (lifetime or idle) the client stops using it.
pub(super) const EXPIRY_MARGIN_MS: u64 = 30_000;

impl Slot {
    pub(super) fn new(
        generation: u64,
        session: ClientSession,
        expires_at_ms: u64,
        idle_timeout_ms: u64,
        last_used_ms: u64,
    ) -> Self {
        Slot {
            generation,
            id: session.id(),
            suite: session.suite(),
            version: session.version(),
            expires_at_ms,
            idle_timeout_ms,
            // A session id is base64url text, always a valid header value.
            id_header: HeaderValue::from_str(&session.id().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            session: Mutex::new(session),
            last_used_ms: AtomicU64::new(last_used_ms),
            dead: AtomicBool::new(false),
        }
    }

    /// Whether requests can still be sealed with this session (as far as the client
    /// can tell; the server may still have forgotten it).
    ///
    /// A session close to its end by the client's clock is not used: a request the
    /// server refuses as expired may not be re-sendable (PROTOCOL §14.1), so handshaking
    /// anew a little early is cheaper than an outcome that is unknown.
    pub(super) fn usable(&self, now: u64) -> bool {
        if self.dead.load(Ordering::Acquire)
            || now.saturating_add(EXPIRY_MARGIN_MS) >= self.expires_at_ms
        {
            return false;
        }
        let idle = now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        // The server counts idle time from when it opened the last request, a little
        // before the client's count starts: keep a margin of a tenth, at most 30 s.
        let margin = (self.idle_timeout_ms / 10).min(EXPIRY_MARGIN_MS);
        if self.idle_timeout_ms > 0 && idle.saturating_add(margin) >= self.idle_timeout_ms {
            return false;
        }
        !lock(&self.session).is_exhausted()
    }

    pub(super) fn info(&self) -> SessionInfo {
        let s = lock(&self.session);
        SessionInfo {
            id: self.id,
            suite: self.suite,
            version: self.version,
            expires_at_ms: self.expires_at_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            next_seq: s.next_seq(),
            streams: s.streams(),
        }
    }
}

impl Inner {
    /// Config (cached or fetched), handshake, confirmation. Refetches the
    /// configuration once if the server answers `unknown_key` to a cached one.
    async fn handshake(&self) -> Result<Slot, ClientError> {
        let mut force_fetch = false;
        loop {
            let (config, fresh) = self.config(force_fetch).await?;
            let offer = ClientOffer {
                versions: SUPPORTED_VERSIONS.to_vec(),
                suites: self.suites.clone(),
                streams: self.offer_streams,
            };
            let (hs, hello) = ClientHandshake::start(&config, offer, now_ms())?;
            let started = std::time::Instant::now();
            debug!(
                suites = ?self.suites,
                bytes = hello.len(),
                "handshake: sending the client hello"
            );
            let resp = self
                .http
                .post(self.url(wire::HANDSHAKE_PATH)?)
                .header(CONTENT_TYPE, wire::HANDSHAKE_CONTENT_TYPE)
                .body(hello)
                .send()
                .await?;
            if resp.headers().contains_key(&H_ERROR) {
                let err = refusal(resp).await;
                if err.code() == Some(ErrorCode::UnknownKey) && !fresh {
                    info!("server does not know the cached handshake key; refetching the key configuration");
                    force_fetch = true;
                    continue;
                }
                return Err(err);
            }
            let status = resp.status();
            if status != StatusCode::OK {
                return Err(ClientError::unexpected(
                    Some(status),
                    "handshake endpoint did not answer 200",
                ));
            }
            let server_hello = read_limited(resp, MAX_HANDSHAKE_LEN).await?;
            let (unconfirmed, hello) = hs.read_server_hello(&server_hello)?;
            // No separate confirmation round trip: the session's first requests carry
            // it (`sessioncert-confirm`) until one response has opened (PROTOCOL §6.8).
            let session = unconfirmed.into_session();
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            info!(
                session = %hello.session_id,
                suite = %hello.suite,
                version = hello.version,
                expires_at_ms = hello.expires_at_ms,
                elapsed_us = started.elapsed().as_micros() as u64,
                "sessioncert handshake done; the first request confirms the session"
            );
            return Ok(Slot::new(
                generation,
                session,
                hello.expires_at_ms,
                hello.idle_timeout_ms,
                now_ms(),
            ));
        }
    }

    /// Makes sure there is a usable session other than generation `stale`. Concurrent
    /// callers share one handshake: whoever gets the lock second finds the new session.
    pub(super) async fn renew(&self, stale: Option<u64>) -> Result<Arc<Slot>, ClientError> {
        let _single_flight = self.handshake_lock.lock().await;
        if let Some(cur) = self.current() {
            if Some(cur.generation) != stale && cur.usable(now_ms()) {
                return Ok(cur);
            }
        }
        self.install_new_session().await
    }

    /// Handshakes and makes the result the current session (caller holds
    /// `handshake_lock`).
    pub(super) async fn install_new_session(&self) -> Result<Arc<Slot>, ClientError> {
        let slot = Arc::new(self.handshake().await?);
        *lock(&self.current) = Some(slot.clone());
        let snapshot = {
            let s = lock(&slot.session);
            self.has_files().then(|| (s.export(), s.next_seq()))
        };
        if let Some((secrets, next_seq)) = snapshot {
            self.persist(&slot, next_seq, secrets, false).await?;
        }
        Ok(slot)
    }

    /// The session to seal the next request with, handshaking first when there is
    /// none or it is expired, idle too long or spent.
    pub(super) async fn acquire(&self) -> Result<Arc<Slot>, ClientError> {
        let cur = self.current();
        match cur {
            Some(s) if s.usable(now_ms()) => Ok(s),
            other => {
                if let Some(s) = &other {
                    debug!(session = %s.id, "session expired or spent; handshaking anew");
                }
                self.renew(other.map(|s| s.generation)).await
            }
        }
    }
}
