//! How the client uses session files: loading a matching one at build time, writing
//! the session after every seal (never going back to an older state), removing it when
//! the session is dropped, and [`Client::save_session`] with its exclusive lock. The
//! file format itself is `crate::file`; this is the interplay with the running client.

use super::handshake::{Slot, EXPIRY_MARGIN_MS};
use super::{lock, Client, Inner};
use crate::file::{self, FileState, SessionLock, SessionSnapshot};
use crate::ClientError;
use sessioncert_proto::{Pin, Suite, Trust};
use std::path::Path;
use std::sync::atomic::Ordering;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// What a session file gives a new client: the session, if it may be used, and the
/// floor for key configurations (from any file of this server, even one whose session
/// cannot be used any more).
pub(super) struct FromFile {
    pub(super) session: Option<file::LoadedSession>,
    pub(super) config_issued_at_ms: u64,
    /// The identity this client trusted at this base URL (for trust on first use).
    pub(super) known_pin: Option<Pin>,
    /// A live session the file holds with another server (base URL or identity): the
    /// file is about to be given to this one, so that session is closed on its own
    /// server first instead of being left live there until it expires.
    pub(super) other_server: Option<file::LoadedSession>,
}

/// Loads the session file if it exists and may be used; logs why not otherwise. A
/// path holding something that is not a session file is an error (never overwritten).
pub(super) fn load_matching(
    path: &Path,
    base_str: &str,
    trust: &Trust,
    suites: &[Suite],
    now: u64,
) -> Result<FromFile, ClientError> {
    let none = FromFile {
        session: None,
        config_issued_at_ms: 0,
        known_pin: None,
        other_server: None,
    };
    let l = match file::load(path)? {
        FileState::Session(l) => *l,
        FileState::KnownServer(k) => {
            debug!(path = %path.display(), "session file holds no session; handshaking anew");
            let same_server = k.base_url == base_str;
            let pinned_elsewhere = !trust.accepts(&k.pin);
            return Ok(FromFile {
                session: None,
                config_issued_at_ms: if same_server && !pinned_elsewhere {
                    k.config_issued_at_ms
                } else {
                    0
                },
                known_pin: same_server.then_some(k.pin),
                other_server: None,
            });
        }
        FileState::Missing => {
            debug!(path = %path.display(), "no session file yet");
            return Ok(none);
        }
        FileState::Unusable(reason) => {
            warn!(path = %path.display(), error = %reason, "ignoring unusable session file; a new handshake will replace it");
            return Ok(none);
        }
    };
    let same_server = l.base_url == base_str && trust.accepts(&l.pin);
    let config_issued_at_ms = if same_server {
        l.config_issued_at_ms
    } else {
        0
    };
    let why_not = if l.base_url != base_str {
        Some(format!(
            "it is for base URL {} (this client: {base_str})",
            l.base_url
        ))
    } else if !trust.accepts(&l.pin) {
        Some(format!(
            "it is for server identity {} which is not the pinned one",
            l.pin
        ))
    } else if now.saturating_add(EXPIRY_MARGIN_MS) >= l.expires_at_ms {
        // The same margin a live session gets (`Slot::usable`): not worth loading.
        Some("its session has expired (or is about to)".to_string())
    } else if !suites.contains(&l.session.suite()) {
        Some(format!(
            "its suite {} is not among the allowed suites",
            l.session.suite()
        ))
    } else if l.session.is_exhausted() {
        Some("its session's message budget is spent".to_string())
    } else {
        None
    };
    let live_elsewhere = !same_server && now.saturating_add(EXPIRY_MARGIN_MS) < l.expires_at_ms;
    match why_not {
        Some(reason) => {
            info!(path = %path.display(), "ignoring session file: {reason}; handshaking anew");
            Ok(FromFile {
                session: None,
                config_issued_at_ms,
                known_pin: (l.base_url == base_str).then_some(l.pin),
                other_server: live_elsewhere.then_some(l),
            })
        }
        None => Ok(FromFile {
            known_pin: Some(l.pin),
            session: Some(l),
            config_issued_at_ms,
            other_server: None,
        }),
    }
}

impl Inner {
    pub(super) fn has_files(&self) -> bool {
        !lock(&self.files).is_empty()
    }

    /// Writes the session to every session file unless a newer state is already there.
    pub(super) async fn persist(
        &self,
        slot: &Slot,
        next_seq: u64,
        secrets: Zeroizing<Vec<u8>>,
        force: bool,
    ) -> Result<(), ClientError> {
        let mut mark = self.persisted.lock().await;
        let state = (slot.generation, next_seq);
        if !force && mark.is_some_and(|m| m >= state) {
            return Ok(());
        }
        let files = lock(&self.files).clone();
        if files.is_empty() {
            return Ok(());
        }
        let json = SessionSnapshot {
            base_url: self.base_str.clone(),
            pin: *lock(&self.identity),
            session_id: slot.id,
            suite: slot.suite,
            expires_at_ms: slot.expires_at_ms,
            idle_timeout_ms: slot.idle_timeout_ms,
            secrets,
            config_issued_at_ms: self.config_high_water.load(Ordering::Acquire),
        }
        .to_json()?;
        tokio::task::spawn_blocking(move || {
            for f in &files {
                file::write_atomic(f, &json).map_err(|e| {
                    ClientError::SessionFile(format!("writing {}: {e}", f.display()))
                })?;
            }
            Ok::<(), ClientError>(())
        })
        .await
        .map_err(|e| ClientError::SessionFile(format!("writer task failed: {e}")))??;
        if mark.is_none_or(|m| m < state) {
            *mark = Some(state);
        }
        Ok(())
    }

    /// Stops using `slot`: marks it dead, un-installs it if it is current, and clears it
    /// from the session files unless a newer session is already there (so a later
    /// process handshakes anew instead of loading it); the files keep the server's
    /// identity.
    pub(super) async fn drop_session(&self, slot: &Slot) {
        slot.dead.store(true, Ordering::Release);
        {
            let mut cur = lock(&self.current);
            if cur
                .as_ref()
                .is_some_and(|c| c.generation == slot.generation)
            {
                *cur = None;
            }
        }
        let mut mark = self.persisted.lock().await;
        if mark.is_some_and(|(generation, _)| generation > slot.generation) {
            return;
        }
        // Late writes of this (or an older) session must not resurrect the file.
        *mark = Some((slot.generation, u64::MAX));
        // The files keep the server and the identity trusted there (not the session):
        // a refusal, real or forged, must not make the next run trust a new identity.
        let known = file::KnownServer {
            base_url: self.base_str.clone(),
            pin: *lock(&self.identity),
            config_issued_at_ms: self.config_high_water.load(Ordering::Acquire),
        };
        let json = match known.to_json() {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "could not encode the session file");
                return;
            }
        };
        let files = lock(&self.files).clone();
        for f in files {
            if let Err(e) = file::write_atomic(&f, &json) {
                warn!(path = %f.display(), error = %e, "could not clear the session from its file");
            }
        }
    }
}

impl Client {
    /// Saves the current session to `path` (atomically, mode 0600 on unix) so another
    /// process can continue it with
    /// [`ClientBuilder::session_file`](super::ClientBuilder::session_file). From then on
    /// this client keeps `path` up to date after every sealed request as well, so the
    /// file can never hold a sequence number this client already used.
    ///
    /// Like [`ClientBuilder::session_file`](super::ClientBuilder::session_file), this
    /// takes the file's exclusive lock (held until the client is dropped;
    /// [`ClientError::SessionFileBusy`] if another holder keeps it past the lock
    /// timeout) and never overwrites a file that is not a session file
    /// ([`ClientError::NotASessionFile`]).
    pub async fn save_session(&self, path: &Path) -> Result<(), ClientError> {
        let slot = self.inner.current().ok_or(ClientError::NoSession)?;
        let lock_path = file::lock_path(path)?;
        let held = lock(&self.inner.file_locks)
            .iter()
            .any(|l| l.lock_path() == lock_path);
        if !held {
            let new_lock = SessionLock::acquire(path, self.inner.lock_timeout).await?;
            file::check_replaceable(path)?;
            let mut locks = lock(&self.inner.file_locks);
            // A concurrent `save_session` to the same file may have won; one lock is enough.
            if !locks.iter().any(|l| l.lock_path() == new_lock.lock_path()) {
                locks.push(new_lock);
            }
        }
        let (secrets, next_seq) = {
            let s = lock(&slot.session);
            let mut files = lock(&self.inner.files);
            if !files.iter().any(|f| f == path) {
                files.push(path.to_path_buf());
            }
            (s.export(), s.next_seq())
        };
        self.inner.persist(&slot, next_seq, secrets, true).await
    }
}
