//! Session files: a session saved to disk so a later process can continue it.
//!
//! ```json
//! {"format":1,"base_url":"https://api.example","pin":"ed25519:…","session_id":"…",
//!  "suite":"AES-256-GCM","expires_at_ms":…,"idle_timeout_ms":…,"secrets":"<base64url>",
//!  "config_issued_at_ms":…}
//! ```
//!
//! `secrets` is `ClientSession::export()` (keys and the next sequence number);
//! `config_issued_at_ms` is the newest signed key configuration the client accepted, so a
//! later process never walks back to an older one (it may list a removed key). The file
//! is written atomically (temporary file, fsync, rename) with mode 0600 on unix.
//!
//! A session file is used by one client at a time: the client holds an exclusive OS
//! advisory lock on the sibling file `<file>.lock` (not on the session file itself, which
//! every write replaces by a rename) from before it reads the file until the client is
//! dropped. The OS releases the lock when the process exits, however it exits, so a
//! crashed process never leaves a stale lock behind. The lock file stays on disk (empty);
//! deleting it while a client runs would let a second client in.

use crate::ClientError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sessioncert_proto::{ClientSession, Pin, SessionId, Suite};
use std::fs::{File, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The only session file format this version reads and writes.
pub const SESSION_FILE_FORMAT: u32 = 1;

/// Largest session file we read (a real one is well under 1 KiB).
const MAX_FILE_LEN: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct FileRepr {
    format: u32,
    base_url: String,
    pin: String,
    session_id: String,
    suite: String,
    expires_at_ms: u64,
    idle_timeout_ms: u64,
    secrets: String,
    /// `issued_at_ms` of the newest key configuration this client accepted from the
    /// server: a later process refuses an older one (PROTOCOL §5.3 rule 7). Absent in
    /// files written before it existed (then 0: no floor).
    #[serde(default)]
    config_issued_at_ms: u64,
}

impl Drop for FileRepr {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secrets);
    }
}

/// What goes into a session file (the secrets stay zeroized-on-drop).
pub(crate) struct SessionSnapshot {
    pub base_url: String,
    pub pin: Pin,
    pub session_id: SessionId,
    pub suite: Suite,
    pub expires_at_ms: u64,
    pub idle_timeout_ms: u64,
    pub secrets: Zeroizing<Vec<u8>>,
    pub config_issued_at_ms: u64,
}

impl SessionSnapshot {
    /// The JSON bytes of the file (zeroized on drop: they hold the session keys).
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let repr = FileRepr {
            format: SESSION_FILE_FORMAT,
            base_url: self.base_url.clone(),
            pin: self.pin.to_string(),
            session_id: self.session_id.to_string(),
            suite: self.suite.name().to_string(),
            expires_at_ms: self.expires_at_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            secrets: URL_SAFE_NO_PAD.encode(self.secrets.as_slice()),
            config_issued_at_ms: self.config_issued_at_ms,
        };
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        serde_json::to_writer(&mut *out, &repr)?;
        out.push(b'\n');
        Ok(out)
    }
}

/// What a session file keeps once its session is gone (refused, closed, spent): the
/// server it was for, the identity the client trusted there and the configuration floor,
/// with `session_id` and `secrets` null. Like ssh's `known_hosts`, it keeps a client in
/// trust-on-first-use mode refusing a changed identity: a single refusal (real or
/// forged) must not make the next run trust whoever answers.
#[derive(Deserialize)]
struct KnownServerRepr {
    format: u32,
    base_url: String,
    pin: String,
    #[serde(default)]
    config_issued_at_ms: u64,
    session_id: Option<serde::de::IgnoredAny>,
    secrets: Option<serde::de::IgnoredAny>,
}

/// The server a session file was for, without a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KnownServer {
    pub base_url: String,
    pub pin: Pin,
    pub config_issued_at_ms: u64,
}

impl KnownServer {
    /// The JSON bytes of the file.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, ClientError> {
        #[derive(Serialize)]
        struct Out<'a> {
            format: u32,
            base_url: &'a str,
            pin: String,
            config_issued_at_ms: u64,
            session_id: Option<()>,
            secrets: Option<()>,
        }
        let mut out = serde_json::to_vec(&Out {
            format: SESSION_FILE_FORMAT,
            base_url: &self.base_url,
            pin: self.pin.to_string(),
            config_issued_at_ms: self.config_issued_at_ms,
            session_id: None,
            secrets: None,
        })?;
        out.push(b'\n');
        Ok(out)
    }
}

/// A session read back from a file and checked for internal consistency.
pub(crate) struct LoadedSession {
    pub base_url: String,
    pub pin: Pin,
    pub session: ClientSession,
    pub expires_at_ms: u64,
    pub idle_timeout_ms: u64,
    /// When the file was last written (≈ when the session was last used), unix ms.
    pub modified_ms: Option<u64>,
    /// The newest key configuration's `issued_at_ms` the writer had accepted.
    pub config_issued_at_ms: u64,
}

/// What a session file path holds.
pub(crate) enum FileState {
    /// Nothing (or an empty file): a new session may be written there.
    Missing,
    /// A session file this version can use.
    Session(Box<LoadedSession>),
    /// A session file whose session is gone: only the server and its trusted identity.
    KnownServer(KnownServer),
    /// A session file (it has the fields of one) that cannot be used: another format
    /// version, damaged secrets, …; it may be replaced. The reason is for the log.
    Unusable(String),
}

/// Fields every session file format has: enough to tell a session file (which may be
/// replaced) from anything else (which must not be).
#[derive(Deserialize)]
struct Marker {
    #[allow(dead_code)]
    format: u64,
    #[allow(dead_code)]
    session_id: serde::de::IgnoredAny,
    #[allow(dead_code)]
    secrets: serde::de::IgnoredAny,
}

/// Parses a file whose session is gone (`session_id` and `secrets` null).
fn parse_known_server(bytes: &[u8]) -> Option<KnownServer> {
    let r: KnownServerRepr = serde_json::from_slice(bytes).ok()?;
    if r.format != SESSION_FILE_FORMAT || r.session_id.is_some() || r.secrets.is_some() {
        return None;
    }
    Some(KnownServer {
        base_url: r.base_url,
        pin: r.pin.parse().ok()?,
        config_issued_at_ms: r.config_issued_at_ms,
    })
}

/// Reads and parses a session file. A path that holds something else than a session
/// file (or an empty file) is [`ClientError::NotASessionFile`].
pub(crate) fn load(path: &Path) -> Result<FileState, ClientError> {
    let io_err = |e: std::io::Error| ClientError::SessionFile(format!("{}: {e}", path.display()));
    let not_session = |reason: &str| ClientError::NotASessionFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Missing),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.is_file() {
        return Err(not_session(if meta.is_dir() {
            "it is a directory"
        } else {
            "it is not a regular file"
        }));
    }
    if meta.len() == 0 {
        return Ok(FileState::Missing);
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(not_session("it is larger than any session file"));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io_err)?);
    if bytes.is_empty() {
        return Ok(FileState::Missing);
    }
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    match classify(&bytes).map_err(not_session)? {
        FileState::Session(mut l) => {
            l.modified_ms = modified_ms;
            Ok(FileState::Session(l))
        }
        other => Ok(other),
    }
}

/// What non-empty bytes read from a session file path are: a usable session, a session
/// file that cannot be used (may be replaced), or — the `Err` reason — something else,
/// which must never be overwritten.
fn classify(bytes: &[u8]) -> Result<FileState, &'static str> {
    // Only a JSON object can be a session file (serde would read structs from arrays).
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes).is_err() {
        return Err(
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
                "JSON, but not a session file"
            } else {
                "not JSON"
            },
        );
    }
    let e = match parse(bytes) {
        Ok(l) => return Ok(FileState::Session(Box::new(l))),
        Err(e) => e,
    };
    if let Some(k) = parse_known_server(bytes) {
        return Ok(FileState::KnownServer(k));
    }
    if serde_json::from_slice::<Marker>(bytes).is_ok() {
        Ok(FileState::Unusable(e.to_string()))
    } else if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        Err("JSON, but not a session file")
    } else {
        Err("not JSON")
    }
}

/// What the client makes of the bytes of a session file (for the fuzz target in
/// `fuzz/`; not a supported API).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFileVerdict {
    /// A usable session: what it names, and the file the client would write back for it.
    Session {
        /// The session id.
        session_id: SessionId,
        /// The server it belongs to.
        base_url: String,
        /// The next request sequence number.
        next_seq: u64,
        /// The bytes the client writes for this session (a canonical file).
        rewritten: Zeroizing<Vec<u8>>,
    },
    /// A file whose session is gone, naming the server and the identity trusted there.
    KnownServer {
        /// The server it was for.
        base_url: String,
        /// The bytes the client writes for it (a canonical file).
        rewritten: Vec<u8>,
    },
    /// A session file that cannot be used; the client may replace it.
    Unusable,
    /// Not a session file; the client refuses to overwrite it.
    NotASessionFile,
}

/// Classifies session-file bytes exactly as [`load`] does after reading them (for the
/// fuzz target; not a supported API).
#[doc(hidden)]
pub fn inspect_session_file(bytes: &[u8]) -> SessionFileVerdict {
    match classify(bytes) {
        Ok(FileState::Session(l)) => {
            let snapshot = SessionSnapshot {
                base_url: l.base_url.clone(),
                pin: l.pin,
                session_id: l.session.id(),
                suite: l.session.suite(),
                expires_at_ms: l.expires_at_ms,
                idle_timeout_ms: l.idle_timeout_ms,
                secrets: l.session.export(),
                config_issued_at_ms: l.config_issued_at_ms,
            };
            SessionFileVerdict::Session {
                session_id: l.session.id(),
                base_url: l.base_url.clone(),
                next_seq: l.session.next_seq(),
                rewritten: snapshot.to_json().unwrap_or_default(),
            }
        }
        Ok(FileState::KnownServer(k)) => SessionFileVerdict::KnownServer {
            rewritten: k.to_json().unwrap_or_default(),
            base_url: k.base_url,
        },
        Ok(FileState::Unusable(_)) => SessionFileVerdict::Unusable,
        Ok(FileState::Missing) | Err(_) => SessionFileVerdict::NotASessionFile,
    }
}

/// Checks that a new session may be written to `path` (nothing there, an empty file or
/// a session file); otherwise [`ClientError::NotASessionFile`].
pub(crate) fn check_replaceable(path: &Path) -> Result<(), ClientError> {
    load(path).map(|_| ())
}

fn parse(bytes: &[u8]) -> Result<LoadedSession, ClientError> {
    // (The caller holds `bytes` zeroized; the secrets string of `repr` is zeroized on drop.)
    let bad = |what: &str| ClientError::SessionFile(format!("invalid session file: {what}"));
    let repr: FileRepr = serde_json::from_slice(bytes).map_err(|_| bad("not the expected JSON"))?;
    if repr.format != SESSION_FILE_FORMAT {
        return Err(bad("unsupported format"));
    }
    let pin: Pin = repr.pin.parse().map_err(|_| bad("pin"))?;
    let session_id: SessionId = repr.session_id.parse().map_err(|_| bad("session_id"))?;
    let suite = Suite::from_name(&repr.suite).ok_or_else(|| bad("suite"))?;
    let secrets = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(repr.secrets.as_bytes())
            .map_err(|_| bad("secrets"))?,
    );
    let session = ClientSession::import(&secrets).map_err(|_| bad("secrets"))?;
    if session.id() != session_id || session.suite() != suite {
        return Err(bad("secrets do not match session_id/suite"));
    }
    Ok(LoadedSession {
        base_url: repr.base_url.clone(),
        pin,
        session,
        expires_at_ms: repr.expires_at_ms,
        idle_timeout_ms: repr.idle_timeout_ms,
        modified_ms: None,
        config_issued_at_ms: repr.config_issued_at_ms,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `data` to `path` atomically: a temporary file beside it (mode 0600 on
/// unix), fsync, rename over `path`, fsync of the directory (best effort).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "session file has no name")
    })?;
    // A random name, created exclusively: nothing planted at a guessable name (a
    // symbolic link in a shared directory, say) is ever opened or followed.
    let mut suffix = [0u8; 8];
    sessioncert_proto::crypto::fill_random(&mut suffix)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex_lower(&suffix)));
    let tmp = dir.join(tmp_name);

    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses a session file reached through a symbolic link or holding several hard
/// links: the lock is taken per name, so two names for one session would let two
/// processes seal under the same sequence numbers (nonce reuse). Copies are refused by
/// nobody: never copy or restore a session file that may still be in use.
fn refuse_second_names(path: &Path) -> Result<(), ClientError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ClientError::SessionFile(format!("{}: {e}", path.display()))),
    };
    if meta.file_type().is_symlink() {
        return Err(ClientError::SessionFile(format!(
            "{} is a symbolic link; give the session file's own path (a second name for one \
             session would let two processes use it at once)",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if meta.is_file() && meta.nlink() > 1 {
            return Err(ClientError::SessionFile(format!(
                "{} has {} hard links; a session file must have one name (a second name \
                 would let two processes use it at once)",
                path.display(),
                meta.nlink()
            )));
        }
    }
    Ok(())
}

/// An exclusive lock on a session file, held until dropped (the OS releases it when the
/// file handle closes, including when the process dies).
pub(crate) struct SessionLock {
    /// The lock file, with its directory canonicalized (identifies the session file).
    lock_path: PathBuf,
    _file: File,
}

impl std::fmt::Debug for SessionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLock")
            .field("lock_path", &self.lock_path)
            .finish_non_exhaustive()
    }
}

/// The lock file of session file `path`: `<file>.lock` beside it, in the canonical form
/// of its directory (so two spellings of one path share one lock).
pub(crate) fn lock_path(path: &Path) -> Result<PathBuf, ClientError> {
    refuse_second_names(path)?;
    let name = path.file_name().ok_or_else(|| {
        ClientError::SessionFile(format!(
            "{}: a session file needs a file name",
            path.display()
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        ClientError::SessionFile(format!(
            "{}: its directory {}: {e}",
            path.display(),
            dir.display()
        ))
    })?;
    let mut lock_name = name.to_os_string();
    lock_name.push(".lock");
    Ok(dir.join(lock_name))
}

impl SessionLock {
    /// Takes the lock of session file `path`, waiting at most `timeout` for another
    /// holder to let go ([`ClientError::SessionFileBusy`] then).
    pub(crate) async fn acquire(
        path: &Path,
        timeout: Duration,
    ) -> Result<SessionLock, ClientError> {
        let lock_path = lock_path(path)?;
        let lock_err = |e: std::io::Error| {
            ClientError::SessionFile(format!(
                "cannot lock {} (lock file {}): {e}",
                path.display(),
                lock_path.display()
            ))
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let file = opts.open(&lock_path).map_err(lock_err)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(SessionLock {
                        lock_path,
                        _file: file,
                    })
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(lock_err(e)),
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(ClientError::SessionFileBusy {
                    path: path.to_path_buf(),
                    lock_path,
                    waited,
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The lock file's path.
    pub(crate) fn lock_path(&self) -> &Path {
        &self.lock_path
    }
}
