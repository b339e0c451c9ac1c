//! The server's key material on disk: identity, handshake keys, storage key.
//!
//! ```text
//! DATA/identity.key        Ed25519 identity seed (0600)  — the pin derives from it
//! DATA/identity.next.key   the next identity while one is rotated (`sessioncert identity`)
//! DATA/identity.previous.key  the identity before the last promotion (kept for a rollback)
//! DATA/handshake.keys      X25519 handshake keys, one per line, rotated under the identity (0600)
//! DATA/storage.key         key that seals session secrets at rest (0600), unless
//!                          SESSIONCERT_STORAGE_KEY is set; never inside the database
//! DATA/sessions.db         SQLite sessions (sessioncert-store)
//! ```

use crate::ServerError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sessioncert_proto::config::{PublishedKey, HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1};
use sessioncert_proto::{HandshakeKeyPair, IdentityKey, KeyConfig, Pin, SignedKeyConfig, Suite};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// File name of the identity key inside a data directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the next identity, made ahead of a rotation.
pub const NEXT_IDENTITY_FILE: &str = "identity.next.key";
/// File name the current identity is moved to when the next one is promoted.
pub const PREVIOUS_IDENTITY_FILE: &str = "identity.previous.key";
/// File name of the handshake keys inside a data directory.
pub const HANDSHAKE_FILE: &str = "handshake.keys";
/// File name of the storage key inside a data directory.
pub const STORAGE_KEY_FILE: &str = "storage.key";
/// File name of the SQLite database inside a data directory.
pub const DATABASE_FILE: &str = "sessions.db";
/// Environment variable that, when set, supplies the storage key (base64url, 32 bytes).
pub const STORAGE_KEY_ENV: &str = "SESSIONCERT_STORAGE_KEY";

const IDENTITY_HEADER: &str = "sessioncert identity v1";
const HANDSHAKE_HEADER: &str = "sessioncert handshake keys v1";
const STORAGE_HEADER: &str = "sessioncert storage key v1";

/// How long a new handshake key is valid.
pub const HANDSHAKE_KEY_LIFETIME_MS: u64 = 30 * 24 * 3600 * 1000;
/// A new handshake key is made when the newest one has less than this left.
pub const HANDSHAKE_KEY_RENEW_BEFORE_MS: u64 = 7 * 24 * 3600 * 1000;
/// A key added beside keys still in use starts this long after it was made. Clients
/// pick the newest key that has started, so until then they keep using the old one, and
/// every instance sharing the data directory has re-read the key file (each does every
/// [`crate::Timing::key_rotation_check`]) before any client uses the new key.
pub const HANDSHAKE_KEY_PUBLISH_DELAY_MS: u64 = 10 * 60_000;
/// The server accepts a key this long before its published start: a client whose clock
/// runs ahead may use it a little early.
pub const HANDSHAKE_KEY_EARLY_MS: u64 = 5 * 60_000;
/// A served configuration's `issued_at_ms` is the start of the current period of this
/// length (or the key set's last change, if later), so instances holding the same keys
/// serve the same configuration (PROTOCOL §7 rule 7). Also how often it is re-signed.
pub const CONFIG_PERIOD_MS: u64 = sessioncert_proto::config::CONFIG_VALIDITY_MS / 4;
/// How far ahead of this clock a key set's change time may be and still be served as
/// the configuration's `issued_at` (well within clients' 5-minute skew allowance).
const CHANGE_AHEAD_MS: u64 = 60_000;
/// File locked while the handshake key file is rotated, so instances sharing a data
/// directory never rotate it at once.
pub const HANDSHAKE_LOCK_FILE: &str = "handshake.keys.lock";

/// Creates `dir` (and parents) if missing; a directory this creates is private (0700 on
/// unix): it holds key files. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| ServerError::io(dir, e))
}

/// Writes `contents` to `path` with mode 0600, atomically: a new temporary file with a
/// random name, created exclusively (`O_EXCL`, so a file planted or left behind under
/// that name can never be reused with its old mode or owner), synced, then renamed
/// over `path`, and the directory synced.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut suffix = [0u8; 8];
    sessioncert_proto::crypto::fill_random(&mut suffix)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex_lower(&suffix)));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| ServerError::io(&tmp, e))?;
    let written = f
        .write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| ServerError::io(&tmp, e))
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| ServerError::io(path, e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a key file, refusing one that group or others may read or write (as ssh does
/// with a private key): whoever can read it can impersonate the server or open its
/// stored sessions.
fn read_text(path: &Path) -> Result<Zeroizing<String>, ServerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| ServerError::io(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ServerError::KeyFileTooOpen {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| ServerError::io(path, e))
}

fn decode_32(s: &str, path: &Path) -> Result<Zeroizing<[u8; 32]>, ServerError> {
    let v = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| ServerError::KeyFile(path.to_owned(), "not base64url"))?,
    );
    let a: [u8; 32] = v
        .as_slice()
        .try_into()
        .map_err(|_| ServerError::KeyFile(path.to_owned(), "not 32 bytes"))?;
    Ok(Zeroizing::new(a))
}

/// `header\n<base64url of secret>\n`, built inside one zeroizing buffer of sufficient
/// capacity so no copy of the secret is left behind in freed memory.
fn key_file_text(header: &str, secret: &[u8]) -> Zeroizing<String> {
    let mut t = Zeroizing::new(String::with_capacity(header.len() + secret.len() * 2 + 8));
    t.push_str(header);
    t.push('\n');
    URL_SAFE_NO_PAD.encode_string(secret, &mut t);
    t.push('\n');
    t
}

/// Creates a new identity in `dir`. Refuses to overwrite an existing one.
pub fn create_identity(dir: &Path) -> Result<IdentityKey, ServerError> {
    create_identity_file(&dir.join(IDENTITY_FILE))
}

fn create_identity_file(path: &Path) -> Result<IdentityKey, ServerError> {
    let path = path.to_owned();
    if path.exists() {
        return Err(ServerError::KeyFile(
            path,
            "already exists; refusing to overwrite",
        ));
    }
    let id = IdentityKey::generate()?;
    let text = key_file_text(IDENTITY_HEADER, id.to_seed().as_ref());
    write_secret_file(&path, text.as_bytes())?;
    Ok(id)
}

/// Loads the identity of `dir`.
pub fn load_identity(dir: &Path) -> Result<IdentityKey, ServerError> {
    load_identity_file(&dir.join(IDENTITY_FILE))
}

fn load_identity_file(path: &Path) -> Result<IdentityKey, ServerError> {
    let path = path.to_owned();
    let text = read_text(&path)?;
    let mut lines = text.lines();
    if lines.next() != Some(IDENTITY_HEADER) {
        return Err(ServerError::KeyFile(
            path,
            "not a sessioncert identity file",
        ));
    }
    let seed = decode_32(lines.next().unwrap_or(""), &path)?;
    Ok(IdentityKey::from_seed(&seed))
}

/// The pin of the identity in `dir`.
pub fn fingerprint(dir: &Path) -> Result<Pin, ServerError> {
    Ok(load_identity(dir)?.pin())
}

/// The pin of the next identity in `dir`, if one was prepared.
pub fn next_fingerprint(dir: &Path) -> Result<Option<Pin>, ServerError> {
    let path = dir.join(NEXT_IDENTITY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(load_identity_file(&path)?.pin()))
}

/// Makes the next identity of `dir` (the first step of an identity rotation), or finds
/// the one already made. Returns its pin and whether it was made now. Servers keep
/// signing with the current identity until [`promote_next_identity`].
pub fn prepare_next_identity(dir: &Path) -> Result<(Pin, bool), ServerError> {
    load_identity(dir)?; // a data directory with an identity, not a typo
    let _lock = lock_key_file(dir)?;
    let path = dir.join(NEXT_IDENTITY_FILE);
    if path.exists() {
        return Ok((load_identity_file(&path)?.pin(), false));
    }
    Ok((create_identity_file(&path)?.pin(), true))
}

/// Makes the prepared next identity the current one: the current one is kept as
/// [`PREVIOUS_IDENTITY_FILE`], and the key file's change time is set to `now_ms` so the
/// configurations signed from now on are newer than every one signed before. Servers
/// sharing the directory switch at their next key check (within a minute). Returns the
/// old and the new pin.
pub fn promote_next_identity(dir: &Path, now_ms: u64) -> Result<(Pin, Pin), ServerError> {
    let _lock = lock_key_file(dir)?;
    let next_path = dir.join(NEXT_IDENTITY_FILE);
    if !next_path.exists() {
        return Err(ServerError::KeyFile(
            next_path,
            "no next identity to promote; make one first with `sessioncert identity prepare`",
        ));
    }
    let next = load_identity_file(&next_path)?;
    let current_path = dir.join(IDENTITY_FILE);
    let current = load_identity_file(&current_path)?;
    // Copy, then rename: at every moment identity.key holds a whole identity.
    let previous_path = dir.join(PREVIOUS_IDENTITY_FILE);
    let text = key_file_text(IDENTITY_HEADER, current.to_seed().as_ref());
    write_secret_file(&previous_path, text.as_bytes())?;
    fs::rename(&next_path, &current_path).map_err(|e| ServerError::io(&current_path, e))?;
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // The identity first, then the change time: an instance that reads the new time
    // reads the new identity too.
    let hs_path = dir.join(HANDSHAKE_FILE);
    if hs_path.exists() {
        let mut file = read_handshake_file(&hs_path)?;
        file.changed_at_ms = now_ms;
        write_handshake_file(&hs_path, &file)?;
    }
    Ok((current.pin(), next.pin()))
}

/// All key material a server needs, loaded from (or created in) a data directory.
///
/// The handshake keys can be swapped while the server runs ([`ServerKeys::rotate_if_due`],
/// [`ServerKeys::reload`]), and so can the identity when a data directory's next identity
/// is promoted; the storage key never changes.
pub struct ServerKeys {
    identity: RwLock<Arc<IdentityKey>>,
    /// When the key set (handshake keys or identity) last changed: the floor of the
    /// configuration's `issued_at_ms`.
    changed_at_ms: AtomicU64,
    /// As published (in the key file and the signed configuration).
    handshake: RwLock<Arc<Vec<HandshakeKeyPair>>>,
    /// As accepted in handshakes: the same keys, each from [`HANDSHAKE_KEY_EARLY_MS`]
    /// before its published start.
    accepted: RwLock<Arc<Vec<HandshakeKeyPair>>>,
    storage: StorageKey,
    /// Where rotated handshake keys are written; `None` keeps them in memory only.
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys")
            .field("pin", &self.pin().to_string())
            .field("handshake", &self.handshake)
            .finish_non_exhaustive()
    }
}

impl ServerKeys {
    /// Keys held only in memory (tests, embedded use).
    pub fn ephemeral(now_ms: u64) -> Result<Self, ServerError> {
        Ok(Self::from_parts(
            IdentityKey::generate()?,
            vec![HandshakeKeyPair::generate(
                1,
                now_ms.saturating_sub(60_000),
                now_ms + HANDSHAKE_KEY_LIFETIME_MS,
            )?],
            StorageKey::generate()?,
        ))
    }

    /// Builds from parts; rotated handshake keys stay in memory.
    pub fn from_parts(
        identity: IdentityKey,
        handshake: Vec<HandshakeKeyPair>,
        storage: StorageKey,
    ) -> Self {
        ServerKeys {
            identity: RwLock::new(Arc::new(identity)),
            changed_at_ms: AtomicU64::new(0),
            accepted: RwLock::new(Arc::new(accepted_early(&handshake))),
            handshake: RwLock::new(Arc::new(handshake)),
            storage,
            dir: None,
        }
    }

    /// Opens `dir`, creating the identity, handshake key and storage key on first use, and
    /// rotating the handshake key when the newest one nears its end (old ones stay until
    /// they expire, so clients holding an older configuration keep working).
    /// Returns the keys and whether a new identity was created.
    pub fn open_or_create(dir: &Path, now_ms: u64) -> Result<(Self, bool), ServerError> {
        // The storage key first: a bad SESSIONCERT_STORAGE_KEY must be refused before
        // an identity is created in an empty directory.
        StorageKey::check_env()?;
        create_private_dir(dir)?;
        // Under the key-file lock: instances started at once on a new directory must
        // not each make an identity or a storage key (one would lose, and refuse to
        // start as "set up under another storage key").
        let _lock = lock_key_file(dir)?;
        let created = !dir.join(IDENTITY_FILE).exists();
        let identity = if created {
            create_identity(dir)?
        } else {
            load_identity(dir)?
        };
        let file = load_or_rotate_handshake_keys(dir, now_ms)?;
        let handshake = file.keys;
        let storage = StorageKey::load_or_create(dir)?;
        Ok((
            ServerKeys {
                identity: RwLock::new(Arc::new(identity)),
                changed_at_ms: AtomicU64::new(file.changed_at_ms),
                accepted: RwLock::new(Arc::new(accepted_early(&handshake))),
                handshake: RwLock::new(Arc::new(handshake)),
                storage,
                dir: Some(dir.to_owned()),
            },
            created,
        ))
    }

    /// The identity's pin.
    pub fn pin(&self) -> Pin {
        self.identity().pin()
    }

    fn identity(&self) -> Arc<IdentityKey> {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `issued_at_ms` of the configuration to serve at `now_ms`: the start of the
    /// current [`CONFIG_PERIOD_MS`], or the key set's last change if later (never after
    /// `now_ms`). The same at every instance holding the same keys (PROTOCOL §7 rule 7).
    pub fn config_issued_at(&self, now_ms: u64) -> u64 {
        let (period_start, changed) = self.config_basis(now_ms);
        // A change time slightly ahead of this clock (written on a machine whose clock
        // runs ahead) is used as it is, so every instance still serves the same
        // configuration; clients accept `issued_at` up to their skew ahead. Further
        // ahead, this clock bounds it (keep the clocks synchronised).
        period_start.max(changed.min(now_ms.saturating_add(CHANGE_AHEAD_MS)))
    }

    /// What the configuration at `now_ms` is made from: the period's start and the key
    /// set's change time. While it stays the same the configuration need not be re-signed
    /// (even when the change time is ahead of this clock, another machine's).
    pub fn config_basis(&self, now_ms: u64) -> (u64, u64) {
        (
            now_ms - now_ms % CONFIG_PERIOD_MS,
            self.changed_at_ms.load(Ordering::Acquire),
        )
    }

    /// The handshake keys as published.
    pub fn handshake_keys(&self) -> Arc<Vec<HandshakeKeyPair>> {
        self.handshake
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The handshake keys a ClientHello may use: the published ones, each accepted from
    /// [`HANDSHAKE_KEY_EARLY_MS`] before its start.
    pub fn accepted_handshake_keys(&self) -> Arc<Vec<HandshakeKeyPair>> {
        self.accepted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_handshake_keys(&self, keys: Vec<HandshakeKeyPair>, changed_at_ms: u64) {
        let accepted = Arc::new(accepted_early(&keys));
        *self.handshake.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        *self.accepted.write().unwrap_or_else(|p| p.into_inner()) = accepted;
        self.changed_at_ms.store(changed_at_ms, Ordering::Release);
    }

    /// Re-reads the handshake key file and the identity (another instance sharing the
    /// data directory, `sessioncert rotate-keys` or `sessioncert identity promote` may
    /// have changed them). Returns whether anything changed (then the key configuration
    /// must be re-signed). Keys held in memory only: `false`.
    pub fn reload(&self) -> Result<bool, ServerError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let path = dir.join(HANDSHAKE_FILE);
        if !path.exists() {
            return Ok(false);
        }
        // The key file first, then the identity (the order `promote_next_identity`
        // writes them in reversed): a new change time comes with the new identity.
        let read = read_handshake_file(&path)?;
        let identity = load_identity(dir)?;
        let mut changed = false;
        if identity.pin() != self.pin() {
            *self.identity.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(identity);
            changed = true;
        }
        let same_keys = {
            let now = self.handshake_keys();
            now.len() == read.keys.len()
                && now.iter().zip(&read.keys).all(|(a, b)| {
                    (a.key_id, a.not_before_ms, a.not_after_ms, a.public())
                        == (b.key_id, b.not_before_ms, b.not_after_ms, b.public())
                })
        };
        if same_keys && read.changed_at_ms == self.changed_at_ms.load(Ordering::Acquire) {
            return Ok(changed);
        }
        self.set_handshake_keys(read.keys, read.changed_at_ms);
        Ok(true)
    }

    /// Whether the handshake keys need renewing at `now_ms`: the newest one ends within
    /// [`HANDSHAKE_KEY_RENEW_BEFORE_MS`], or an expired one is still listed.
    pub fn rotation_due(&self, now_ms: u64) -> bool {
        let keys = self.handshake_keys();
        let newest_end = keys.iter().map(|k| k.not_after_ms).max().unwrap_or(0);
        newest_end < now_ms.saturating_add(HANDSHAKE_KEY_RENEW_BEFORE_MS)
            || keys.iter().any(|k| k.not_after_ms < now_ms)
    }

    /// Adds a fresh handshake key and drops expired ones when [`ServerKeys::rotation_due`],
    /// writing the key file when the keys came from a data directory. Keys still valid
    /// stay, so clients holding an older configuration keep working. Returns whether the
    /// set changed (then the key configuration must be re-signed).
    pub fn rotate_if_due(&self, now_ms: u64) -> Result<bool, ServerError> {
        if !self.rotation_due(now_ms) {
            return Ok(false);
        }
        let (next, changed_at_ms) = match &self.dir {
            Some(dir) => {
                let file = rotate_handshake_file(dir, now_ms)?;
                (file.keys, file.changed_at_ms)
            }
            None => {
                let mut keys = Vec::new();
                for k in self.handshake_keys().iter() {
                    keys.push(HandshakeKeyPair::from_secret(
                        k.key_id,
                        k.secret(),
                        k.not_before_ms,
                        k.not_after_ms,
                    )?);
                }
                renew_key_set(&mut keys, now_ms)?;
                (keys, now_ms)
            }
        };
        self.set_handshake_keys(next, changed_at_ms);
        Ok(true)
    }

    /// The storage key.
    pub fn storage_key(&self) -> &StorageKey {
        &self.storage
    }

    /// Signs the key configuration to serve at `now_ms`, listing every handshake key
    /// still valid, issued at [`ServerKeys::config_issued_at`].
    pub fn signed_config(
        &self,
        suites: &[Suite],
        now_ms: u64,
    ) -> Result<SignedKeyConfig, ServerError> {
        let identity = self.identity();
        let issued_at_ms = self.config_issued_at(now_ms);
        let cfg = KeyConfig {
            identity: identity.pin(),
            issued_at_ms,
            expires_at_ms: issued_at_ms
                .saturating_add(sessioncert_proto::config::CONFIG_VALIDITY_MS),
            versions: vec![VERSION_1],
            record_suites: suites.iter().map(|s| s.id()).collect(),
            keys: self
                .handshake_keys()
                .iter()
                .filter(|k| k.not_after_ms >= now_ms)
                .map(|k| PublishedKey {
                    key_id: k.key_id,
                    hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                    public: k.public().to_vec(),
                    not_before_ms: k.not_before_ms,
                    not_after_ms: k.not_after_ms,
                })
                .collect(),
        };
        Ok(cfg.sign(&identity)?)
    }
}

/// The keys as a ClientHello may use them: from [`HANDSHAKE_KEY_EARLY_MS`] before
/// their published start.
fn accepted_early(keys: &[HandshakeKeyPair]) -> Vec<HandshakeKeyPair> {
    keys.iter()
        .filter_map(|k| {
            HandshakeKeyPair::from_secret(
                k.key_id,
                k.secret(),
                k.not_before_ms.saturating_sub(HANDSHAKE_KEY_EARLY_MS),
                k.not_after_ms,
            )
            .ok()
        })
        .collect()
}

/// Adds a handshake key to `dir`'s key file now, whatever the keys' ages (an operator's
/// rotation, e.g. after a suspected exposure of a handshake key; drop that key from the
/// file by hand once the new one has started). The new key starts after
/// [`HANDSHAKE_KEY_PUBLISH_DELAY_MS`] when other keys are in use. Returns the new key's
/// id and start.
pub fn add_handshake_key(dir: &Path, now_ms: u64) -> Result<(u8, u64), ServerError> {
    let _lock = lock_key_file(dir)?;
    let path = dir.join(HANDSHAKE_FILE);
    let mut file = if path.exists() {
        read_handshake_file(&path)?
    } else {
        HandshakeKeyFile::default()
    };
    file.keys.retain(|k| k.not_after_ms >= now_ms);
    let k = new_handshake_key(&file.keys, now_ms)?;
    let made = (k.key_id, k.not_before_ms);
    file.keys.push(k);
    file.changed_at_ms = now_ms;
    write_handshake_file(&path, &file)?;
    Ok(made)
}

/// Holds the rotation lock of a data directory's key file until dropped.
fn lock_key_file(dir: &Path) -> Result<fs::File, ServerError> {
    use fs4::fs_std::FileExt as _;
    let path = dir.join(HANDSHAKE_LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServerError::io(&path, e))?;
    f.lock_exclusive().map_err(|e| ServerError::io(&path, e))?;
    Ok(f)
}

/// Renews the key file under its lock, re-reading it first: another instance sharing
/// the directory may have renewed it already, and then its keys are the ones used.
fn rotate_handshake_file(dir: &Path, now_ms: u64) -> Result<HandshakeKeyFile, ServerError> {
    let _lock = lock_key_file(dir)?;
    load_or_rotate_handshake_keys(dir, now_ms)
}

/// The handshake key file: the keys, and when the key set last changed.
///
/// ```text
/// sessioncert handshake keys v1
/// changed_at <unix ms>                      (absent in older files: 0)
/// <key id> <not before ms> <not after ms> <secret, base64url>
/// ```
#[derive(Default)]
struct HandshakeKeyFile {
    keys: Vec<HandshakeKeyPair>,
    changed_at_ms: u64,
}

fn read_handshake_file(path: &Path) -> Result<HandshakeKeyFile, ServerError> {
    let mut keys = Vec::new();
    let mut changed_at_ms = 0;
    let path = path.to_owned();
    let text = read_text(&path)?;
    {
        let mut lines = text.lines();
        if lines.next() != Some(HANDSHAKE_HEADER) {
            return Err(ServerError::KeyFile(
                path,
                "not a sessioncert handshake key file",
            ));
        }
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || ServerError::KeyFile(path.clone(), "bad handshake key line");
            if let ["changed_at", ms] = f.as_slice() {
                changed_at_ms = ms.parse().map_err(|_| bad())?;
                continue;
            }
            if f.len() != 4 {
                return Err(bad());
            }
            let id: u8 = f[0].parse().map_err(|_| bad())?;
            let nb: u64 = f[1].parse().map_err(|_| bad())?;
            let na: u64 = f[2].parse().map_err(|_| bad())?;
            let secret = decode_32(f[3], &path)?;
            keys.push(HandshakeKeyPair::from_secret(id, &secret, nb, na)?);
        }
    }
    Ok(HandshakeKeyFile {
        keys,
        changed_at_ms,
    })
}

fn write_handshake_file(path: &Path, file: &HandshakeKeyFile) -> Result<(), ServerError> {
    let mut text = Zeroizing::new(String::with_capacity(96 + file.keys.len() * 96));
    text.push_str(HANDSHAKE_HEADER);
    text.push('\n');
    text.push_str(&format!("changed_at {}\n", file.changed_at_ms));
    for k in &file.keys {
        let prefix = format!("{} {} {} ", k.key_id, k.not_before_ms, k.not_after_ms);
        text.push_str(&prefix);
        URL_SAFE_NO_PAD.encode_string(k.secret(), &mut text);
        text.push('\n');
    }
    write_secret_file(path, text.as_bytes())
}

fn load_or_rotate_handshake_keys(dir: &Path, now_ms: u64) -> Result<HandshakeKeyFile, ServerError> {
    let path = dir.join(HANDSHAKE_FILE);
    let mut file = if path.exists() {
        read_handshake_file(&path)?
    } else {
        HandshakeKeyFile::default()
    };
    if renew_key_set(&mut file.keys, now_ms)? {
        file.changed_at_ms = now_ms;
        write_handshake_file(&path, &file)?;
    }
    Ok(file)
}

/// Drops expired handshake keys and adds a fresh one when the newest ends within
/// [`HANDSHAKE_KEY_RENEW_BEFORE_MS`]. Returns whether the set changed.
fn renew_key_set(keys: &mut Vec<HandshakeKeyPair>, now_ms: u64) -> Result<bool, ServerError> {
    let before = keys.len();
    keys.retain(|k| k.not_after_ms >= now_ms);
    let newest_end = keys.iter().map(|k| k.not_after_ms).max().unwrap_or(0);
    let add = newest_end < now_ms.saturating_add(HANDSHAKE_KEY_RENEW_BEFORE_MS);
    if add {
        let k = new_handshake_key(keys, now_ms)?;
        keys.push(k);
    }
    Ok(add || keys.len() != before)
}

/// A fresh handshake key to join `keys`. With no key valid now it starts at once
/// (slightly in the past, for clients whose clock runs behind); beside keys in use it
/// starts [`HANDSHAKE_KEY_PUBLISH_DELAY_MS`] from now, so every instance sharing the
/// key file holds it before any client picks it.
fn new_handshake_key(
    keys: &[HandshakeKeyPair],
    now_ms: u64,
) -> Result<HandshakeKeyPair, ServerError> {
    let next_id = keys
        .iter()
        .map(|k| k.key_id)
        .max()
        .map_or(1, |m| m.wrapping_add(1));
    let in_use = keys
        .iter()
        .any(|k| k.not_before_ms <= now_ms && now_ms <= k.not_after_ms);
    let start = if in_use {
        now_ms + HANDSHAKE_KEY_PUBLISH_DELAY_MS
    } else {
        now_ms.saturating_sub(5 * 60_000)
    };
    Ok(HandshakeKeyPair::generate(
        next_id,
        start,
        start + HANDSHAKE_KEY_LIFETIME_MS,
    )?)
}

/// The key that seals session secrets before they reach the store.
///
/// XChaCha20-Poly1305 with a random 192-bit nonce per seal: sessions are re-sealed on
/// every write-behind flush, far more often than a 96-bit random nonce tolerates. The
/// session id is the associated data, so a sealed blob cannot be moved to another row.
pub struct StorageKey(Zeroizing<[u8; 32]>);

const AT_REST_AD: &[u8] = b"sessioncert/1 at rest";
const SHARED_VALUE_AD: &[u8] = b"sessioncert/1 shared value ";

impl StorageKey {
    /// A random key.
    pub fn generate() -> Result<Self, ServerError> {
        let mut k = Zeroizing::new([0u8; 32]);
        sessioncert_proto::crypto::fill_random(k.as_mut())?;
        Ok(StorageKey(k))
    }

    /// Refuses a `SESSIONCERT_STORAGE_KEY` that is set but is not a key.
    pub fn check_env() -> Result<(), ServerError> {
        match std::env::var(STORAGE_KEY_ENV) {
            Ok(v) => decode_32(&Zeroizing::new(v), Path::new(STORAGE_KEY_ENV)).map(drop),
            Err(std::env::VarError::NotPresent) => Ok(()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ServerError::KeyFile(
                PathBuf::from(STORAGE_KEY_ENV),
                "is not valid UTF-8 (expected 32 bytes in base64url)",
            )),
        }
    }

    /// A public identifier of this key: HMAC-SHA256 under the key of a fixed label,
    /// first 16 bytes in hex. Recorded beside the sessions it seals, so a start with
    /// another key is told so instead of finding none of them readable; it reveals
    /// nothing about the key.
    pub fn key_id(&self) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(b"sessioncert storage key id v1");
        hex_lower(&mac.finalize().into_bytes()[..16])
    }

    /// From the environment variable if set, else from `dir/storage.key`, created if missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, ServerError> {
        if let Ok(v) = std::env::var(STORAGE_KEY_ENV) {
            let v = Zeroizing::new(v);
            return Ok(StorageKey(decode_32(&v, Path::new(STORAGE_KEY_ENV))?));
        }
        let path: PathBuf = dir.join(STORAGE_KEY_FILE);
        if path.exists() {
            let text = read_text(&path)?;
            let mut lines = text.lines();
            if lines.next() != Some(STORAGE_HEADER) {
                return Err(ServerError::KeyFile(
                    path,
                    "not a sessioncert storage key file",
                ));
            }
            return Ok(StorageKey(decode_32(lines.next().unwrap_or(""), &path)?));
        }
        let k = Self::generate()?;
        let text = key_file_text(STORAGE_HEADER, k.0.as_ref());
        write_secret_file(&path, text.as_bytes())?;
        Ok(k)
    }

    fn ad(id: &sessioncert_proto::SessionId) -> Vec<u8> {
        let mut ad = AT_REST_AD.to_vec();
        ad.extend_from_slice(id.as_bytes());
        ad
    }

    /// Seals a value that instances sharing a store keep there under `name` (the name
    /// is the associated data, so a value cannot be moved to another name or be taken
    /// for a session's secrets).
    pub fn seal_shared_value(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, ServerError> {
        self.seal_with_ad(&[SHARED_VALUE_AD, name.as_bytes()].concat(), value)
    }

    /// Opens what [`StorageKey::seal_shared_value`] made under the same name.
    pub fn open_shared_value(
        &self,
        name: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        self.open_with_ad(&[SHARED_VALUE_AD, name.as_bytes()].concat(), sealed)
    }

    /// `nonce (24) || ciphertext || tag`.
    pub fn seal(
        &self,
        id: &sessioncert_proto::SessionId,
        secrets: &[u8],
    ) -> Result<Vec<u8>, ServerError> {
        self.seal_with_ad(&Self::ad(id), secrets)
    }

    fn seal_with_ad(&self, ad: &[u8], secrets: &[u8]) -> Result<Vec<u8>, ServerError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::XChaCha20Poly1305;
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let mut nonce = [0u8; 24];
        sessioncert_proto::crypto::fill_random(&mut nonce)?;
        let ct = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: secrets,
                    aad: ad,
                },
            )
            .map_err(|_| ServerError::AtRest)?;
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`StorageKey::seal`] made for the same session id.
    pub fn open(
        &self,
        id: &sessioncert_proto::SessionId,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        self.open_with_ad(&Self::ad(id), sealed)
    }

    fn open_with_ad(&self, ad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::XChaCha20Poly1305;
        if sealed.len() < 24 + 16 {
            return Err(ServerError::AtRest);
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let (nonce, ct) = sealed.split_at(24);
        cipher
            .decrypt(nonce.into(), Payload { msg: ct, aad: ad })
            .map(Zeroizing::new)
            .map_err(|_| ServerError::AtRest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessioncert_proto::{SessionId, Trust};

    #[test]
    fn data_dir_is_created_once_and_reloads_the_same_identity() {
        let d = tempfile::tempdir().unwrap();
        let (k1, created) = ServerKeys::open_or_create(d.path(), 1_000_000).unwrap();
        assert!(created);
        let (k2, created) = ServerKeys::open_or_create(d.path(), 1_000_000).unwrap();
        assert!(!created);
        assert_eq!(k1.pin(), k2.pin());
        assert_eq!(
            k1.handshake_keys()[0].public(),
            k2.handshake_keys()[0].public()
        );
        assert_eq!(fingerprint(d.path()).unwrap(), k1.pin());
        #[cfg(unix)]
        for f in [IDENTITY_FILE, HANDSHAKE_FILE, STORAGE_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(
            create_identity(d.path()).is_err(),
            "never overwrites an identity"
        );
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_private_whatever_was_there_before() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("new").join("data");
        ServerKeys::open_or_create(&data, 1_000_000).unwrap();
        let mode = fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a data directory we create is private");
        // A world-readable file under the target name (and the old fixed temporary
        // name) does not lend its mode to the secret written over it.
        let target = data.join("secret.key");
        for p in [&target, &data.join("secret.tmp")] {
            fs::write(p, b"old").unwrap();
            fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_secret_file(&target, b"new secret").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new secret");
        let mode = fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn handshake_key_rotates_under_the_same_identity() {
        let d = tempfile::tempdir().unwrap();
        let t0 = 1_000_000;
        let (k1, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        let later = t0 + HANDSHAKE_KEY_LIFETIME_MS - HANDSHAKE_KEY_RENEW_BEFORE_MS + 1;
        let (k2, _) = ServerKeys::open_or_create(d.path(), later).unwrap();
        assert_eq!(
            k2.handshake_keys().len(),
            2,
            "old key kept until it expires"
        );
        let cfg = k2.signed_config(&Suite::ALL, later).unwrap();
        let parsed = cfg.verify(&Trust::Pin(k1.pin()), later).unwrap();
        // The new key is published ahead: clients move to it once it has started.
        assert_eq!(parsed.current_key(later).unwrap().key_id, 1);
        let started = later + HANDSHAKE_KEY_PUBLISH_DELAY_MS;
        assert_eq!(parsed.current_key(started).unwrap().key_id, 2);
        let (k3, _) =
            ServerKeys::open_or_create(d.path(), t0 + HANDSHAKE_KEY_LIFETIME_MS + 1).unwrap();
        assert_eq!(k3.handshake_keys().len(), 1, "expired key dropped");
    }

    #[test]
    fn running_server_rotates_handshake_keys_on_disk_and_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let t0 = 1_000_000;
        let (k, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        assert!(!k.rotation_due(t0));
        assert!(!k.rotate_if_due(t0).unwrap());
        let later = t0 + HANDSHAKE_KEY_LIFETIME_MS - HANDSHAKE_KEY_RENEW_BEFORE_MS + 1;
        assert!(k.rotate_if_due(later).unwrap());
        assert_eq!(k.handshake_keys().len(), 2);
        // The file was written: a restart sees the same two keys.
        let (k2, _) = ServerKeys::open_or_create(d.path(), later).unwrap();
        assert_eq!(
            k2.handshake_keys()[1].public(),
            k.handshake_keys()[1].public()
        );

        let mem = ServerKeys::ephemeral(t0).unwrap();
        assert!(mem.rotate_if_due(later).unwrap());
        assert_eq!(mem.handshake_keys().len(), 2);
        let much_later = t0 + 2 * HANDSHAKE_KEY_LIFETIME_MS;
        assert!(mem.rotate_if_due(much_later).unwrap());
        assert_eq!(mem.handshake_keys().len(), 1, "expired keys dropped");
        assert!(mem.handshake_keys()[0].is_valid_at(much_later));
    }

    #[test]
    fn instances_sharing_a_data_directory_agree_on_rotated_handshake_keys() {
        let d = tempfile::tempdir().unwrap();
        let t0 = now_for_tests();
        let (a, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        let (b, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        assert!(!b.reload().unwrap(), "nothing changed yet");
        // Both find the keys due at once (rotation takes the file lock, then re-reads).
        let due = t0 + HANDSHAKE_KEY_LIFETIME_MS - HANDSHAKE_KEY_RENEW_BEFORE_MS + 1;
        let (a2, b2) = (Arc::new(a), Arc::new(b));
        let threads: Vec<_> = [a2.clone(), b2.clone()]
            .into_iter()
            .map(|k| std::thread::spawn(move || k.rotate_if_due(due).unwrap()))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        a2.reload().unwrap();
        b2.reload().unwrap();
        let ids = |k: &ServerKeys| {
            k.handshake_keys()
                .iter()
                .map(|h| (h.key_id, *h.public()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a2).len(), 2, "one new key");
        assert_eq!(ids(&a2), ids(&b2), "both hold the same keys");
        // An operator's rotation reaches the other instance at its next reload; the new
        // key starts later, and is accepted a little before its start.
        let (id, start) = add_handshake_key(d.path(), due).unwrap();
        assert_eq!(start, due + HANDSHAKE_KEY_PUBLISH_DELAY_MS);
        assert!(b2.reload().unwrap());
        let accepted = b2.accepted_handshake_keys();
        let new = accepted.iter().find(|k| k.key_id == id).unwrap();
        assert!(new.is_valid_at(start - HANDSHAKE_KEY_EARLY_MS));
        assert!(!new.is_valid_at(start - HANDSHAKE_KEY_EARLY_MS - 1));
        let cfg = b2.signed_config(&Suite::ALL, due).unwrap();
        let parsed = cfg.verify(&Trust::Pin(a2.pin()), due).unwrap();
        assert_ne!(parsed.current_key(due).unwrap().key_id, id);
        assert_eq!(parsed.current_key(start).unwrap().key_id, id);
    }

    #[test]
    fn instances_started_at_different_times_serve_the_same_configuration() {
        let d = tempfile::tempdir().unwrap();
        let t0 = now_for_tests();
        let (a, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        let (b, _) = ServerKeys::open_or_create(d.path(), t0 + 1_000).unwrap();
        // Signed at different moments of one period: the same bytes (a client sent to
        // the one started earlier after the other must not find it older, §5.3 rule 7).
        let next_period = t0 - t0 % CONFIG_PERIOD_MS + CONFIG_PERIOD_MS;
        let (sa, sb) = (
            a.signed_config(&Suite::ALL, t0 + 1).unwrap(),
            b.signed_config(&Suite::ALL, next_period - 1).unwrap(),
        );
        assert_eq!(sa.encode(), sb.encode());
        let issued = KeyConfig::decode(&sa.config).unwrap().issued_at_ms;
        assert_eq!(issued, t0, "a new key set: issued when the keys were made");
        // The next period: re-issued at its start, whoever signs.
        let c = KeyConfig::decode(
            &a.signed_config(&Suite::ALL, next_period + 7)
                .unwrap()
                .config,
        )
        .unwrap();
        assert_eq!(c.issued_at_ms, next_period);
        assert_eq!(
            b.signed_config(&Suite::ALL, next_period + 60_000)
                .unwrap()
                .encode(),
            a.signed_config(&Suite::ALL, next_period + 7)
                .unwrap()
                .encode()
        );
        // A key added by an operator moves `issued_at` to the change, at both once
        // they have re-read the file.
        let change = next_period + 120_000;
        add_handshake_key(d.path(), change).unwrap();
        assert!(a.reload().unwrap() && b.reload().unwrap());
        let at = |k: &ServerKeys, now| {
            KeyConfig::decode(&k.signed_config(&Suite::ALL, now).unwrap().config)
                .unwrap()
                .issued_at_ms
        };
        assert_eq!(at(&a, change + 1), change);
        assert_eq!(at(&b, change + 50_000), change);
        // A change written by a machine whose clock runs 30 s ahead: served as it is at
        // once, by both (attack review: each instance served its own signing moment).
        let ahead = change + 3_600_000;
        add_handshake_key(d.path(), ahead + 30_000).unwrap();
        assert!(a.reload().unwrap() && b.reload().unwrap());
        assert_eq!(at(&a, ahead), ahead + 30_000);
        assert_eq!(at(&b, ahead + 10_000), ahead + 30_000);
    }

    #[test]
    fn promoting_the_next_identity_switches_every_instance_and_supersedes_older_configs() {
        let d = tempfile::tempdir().unwrap();
        let t0 = now_for_tests();
        let (a, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        let (b, _) = ServerKeys::open_or_create(d.path(), t0).unwrap();
        let old = a.pin();
        assert!(
            promote_next_identity(d.path(), t0).is_err(),
            "nothing prepared to promote"
        );
        let (next, made) = prepare_next_identity(d.path()).unwrap();
        assert!(made);
        assert_eq!(prepare_next_identity(d.path()).unwrap(), (next, false));
        assert_eq!(next_fingerprint(d.path()).unwrap(), Some(next));
        assert_ne!(next, old);
        // Prepared only: nobody signs with it yet.
        assert!(!a.reload().unwrap());
        assert_eq!(a.pin(), old);
        let before = a.signed_config(&Suite::ALL, t0 + 1_000).unwrap();

        let switch = t0 + 2_000;
        assert_eq!(
            promote_next_identity(d.path(), switch).unwrap(),
            (old, next)
        );
        assert_eq!(fingerprint(d.path()).unwrap(), next);
        assert_eq!(next_fingerprint(d.path()).unwrap(), None);
        assert_eq!(
            load_identity_file(&d.path().join(PREVIOUS_IDENTITY_FILE))
                .unwrap()
                .pin(),
            old
        );
        assert!(a.reload().unwrap() && b.reload().unwrap());
        assert_eq!((a.pin(), b.pin()), (next, next));
        let after = b.signed_config(&Suite::ALL, switch + 10).unwrap();
        // A client holding both pins accepts both; the new one is newer, so one that
        // has seen it refuses the old identity's configuration (rule 7).
        let both = Trust::pins([old, next]);
        let (c_before, c_after) = (
            before.verify(&both, t0 + 1_000).unwrap(),
            after.verify(&both, switch + 10).unwrap(),
        );
        assert_eq!((c_before.identity, c_after.identity), (old, next));
        assert!(c_after.issued_at_ms > c_before.issued_at_ms);
        assert!(after.verify(&Trust::Pin(old), switch + 10).is_err());
        // The handshake keys stay: sessions and handshakes carry on.
        assert_eq!(
            c_before.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
            c_after.keys.iter().map(|k| k.key_id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn instances_opening_a_new_directory_at_once_agree_on_every_key() {
        for _ in 0..5 {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("data");
            let t0 = now_for_tests();
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        ServerKeys::open_or_create(&dir, t0).unwrap().0
                    })
                })
                .collect();
            let keys: Vec<ServerKeys> = opened.into_iter().map(|t| t.join().unwrap()).collect();
            for k in &keys[1..] {
                assert_eq!(k.pin(), keys[0].pin());
                let sealed = keys[0]
                    .storage_key()
                    .seal_shared_value("t", b"same")
                    .unwrap();
                assert_eq!(
                    k.storage_key()
                        .open_shared_value("t", &sealed)
                        .unwrap()
                        .as_slice(),
                    b"same"
                );
                assert_eq!(
                    k.handshake_keys()
                        .iter()
                        .map(|h| *h.public())
                        .collect::<Vec<_>>(),
                    keys[0]
                        .handshake_keys()
                        .iter()
                        .map(|h| *h.public())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    fn now_for_tests() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn at_rest_seal_binds_the_session_id() {
        let k = StorageKey::generate().unwrap();
        let a = SessionId([1; 16]);
        let b = SessionId([2; 16]);
        let sealed = k.seal(&a, b"secret keys").unwrap();
        assert_eq!(k.open(&a, &sealed).unwrap().as_slice(), b"secret keys");
        assert!(k.open(&b, &sealed).is_err());
        let mut t = sealed.clone();
        t[30] ^= 1;
        assert!(k.open(&a, &t).is_err());
        assert!(StorageKey::generate().unwrap().open(&a, &sealed).is_err());
        assert!(k.open(&a, &sealed[..10]).is_err());
    }

    #[test]
    fn corrupt_key_files_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(IDENTITY_FILE), "garbage").unwrap();
        let e = load_identity(d.path()).unwrap_err().to_string();
        assert!(e.contains("identity"), "{e}");
    }
}
