//! The broker's secrets outside the database: the root key (a 0600 file or an
//! environment variable), the KMS key file sealed under it, and the server secrets
//! derived from it (the verification codes' HMAC key), and the outbox's sealing key,
//! which lives only in the running process.
//!
//! A stolen database holds none of these: without the root key the encrypted data keys
//! cannot be unwrapped and the verification digests cannot be tested offline; the
//! queued notifications do not open even with the root key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sessioncert_broker::kms::{Kms, LocalKms, Wrapped};
use sessioncert_broker::BrokerError;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// The environment variable that may hold the root key (64 hex digits); it wins over
/// the file.
pub const ROOT_KEY_ENV: &str = "SESSIONCERT_BROKER_ROOT_KEY";
/// The root key file's name in the data directory (the default place).
pub const ROOT_KEY_FILE: &str = "broker-root.key";
/// The KMS key file's name in the data directory.
pub const KMS_FILE: &str = "broker-kms.bin";

/// Why the broker's keys could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No root key: neither the variable nor the file.
    #[error("no broker root key: set {ROOT_KEY_ENV} or create tenants first (`sessioncert broker tenant create NAME --data DIR` writes {0})")]
    NoRootKey(PathBuf),
    /// The root key is not 32 bytes in hex.
    #[error("the broker root key ({0}) is not 64 hex digits")]
    BadRootKey(String),
    /// The key file does not open under this root key.
    #[error("{0} does not open under this root key (another root key, or a damaged file)")]
    WrongRootKey(PathBuf),
    /// No tenants yet.
    #[error(
        "no tenants in {0}: create one with `sessioncert broker tenant create NAME --data DIR`"
    )]
    NoTenants(PathBuf),
    /// A tenant name is not usable.
    #[error(
        "tenant names are 1-63 lower-case letters, digits and '-', starting with a letter or digit"
    )]
    BadTenant,
    /// The tenant does not exist.
    #[error("no tenant {0:?}")]
    NoSuchTenant(String),
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        error: std::io::Error,
    },
    /// A core operation failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub use sessioncert_broker::requests::valid_tenant;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), owner-only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|_| BrokerError::Random)?;
    let tmp = dir.join(format!(".{}.tmp", hex::encode(suffix)));
    let result = (|| {
        use std::io::Write as _;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}

/// Where the root key comes from.
#[derive(Debug, Clone)]
pub struct RootKeySource {
    /// The file used when the environment variable is not set.
    pub file: PathBuf,
}

impl RootKeySource {
    /// The default: `broker-root.key` in the data directory, unless `file` is given.
    pub fn new(data: &Path, file: Option<PathBuf>) -> RootKeySource {
        RootKeySource {
            file: file.unwrap_or_else(|| data.join(ROOT_KEY_FILE)),
        }
    }

    fn parse(text: &str, origin: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut())
            .map_err(|_| KeyError::BadRootKey(origin.to_owned()))?;
        Ok(key)
    }

    /// Reads the root key: the variable, else the file.
    pub fn load(&self) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        if let Ok(v) = std::env::var(ROOT_KEY_ENV) {
            let v = Zeroizing::new(v);
            return Self::parse(&v, ROOT_KEY_ENV);
        }
        match std::fs::read_to_string(&self.file) {
            Ok(t) => Self::parse(&Zeroizing::new(t), &self.file.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyError::NoRootKey(self.file.clone()))
            }
            Err(e) => Err(io(&self.file)(e)),
        }
    }

    /// Reads the root key, or makes one in the file (0600) when there is none.
    pub fn load_or_create(&self) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        match self.load() {
            Err(KeyError::NoRootKey(_)) => {
                let mut key = Zeroizing::new([0u8; 32]);
                getrandom::fill(key.as_mut()).map_err(|_| BrokerError::Random)?;
                let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
                write_private(&self.file, text.as_bytes())?;
                Ok(key)
            }
            other => other,
        }
    }
}

/// The KMS key file: tenants' master keys sealed under the root key.
pub struct KeyFile {
    path: PathBuf,
    root: Zeroizing<[u8; 32]>,
}

impl KeyFile {
    /// The key file in `data`, under `root`.
    pub fn new(data: &Path, root: Zeroizing<[u8; 32]>) -> KeyFile {
        KeyFile {
            path: data.join(KMS_FILE),
            root,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads it (an empty KMS when the file does not exist yet).
    pub fn load(&self) -> Result<LocalKms, KeyError> {
        match std::fs::read(&self.path) {
            Ok(b) => LocalKms::open(&self.root, &b).map_err(|e| match e {
                BrokerError::KeyFile => KeyError::WrongRootKey(self.path.clone()),
                e => e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalKms::new()),
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    fn save(&self, kms: &LocalKms) -> Result<(), KeyError> {
        write_private(&self.path, &kms.seal(&self.root)?)
    }

    /// Creates a tenant; returns whether it is new.
    pub fn create_tenant(&self, name: &str) -> Result<bool, KeyError> {
        if !valid_tenant(name) {
            return Err(KeyError::BadTenant);
        }
        let mut kms = self.load()?;
        let new = kms.create_tenant(name)?;
        if new {
            self.save(&kms)?;
        }
        Ok(new)
    }

    /// Adds a master key version to a tenant; returns it.
    pub fn rotate(&self, name: &str) -> Result<u32, KeyError> {
        let mut kms = self.load()?;
        if !kms.tenants().any(|t| t == name) {
            return Err(KeyError::NoSuchTenant(name.to_owned()));
        }
        let v = kms.rotate(name)?;
        self.save(&kms)?;
        Ok(v)
    }

    /// The server secrets derived from the root key.
    pub fn secrets(&self) -> ServerSecrets {
        ServerSecrets::derive(&self.root)
    }
}

/// Secrets the server derives from the root key.
pub struct ServerSecrets {
    /// HMAC key of the verification codes' digests.
    pub verification: Zeroizing<[u8; 32]>,
}

impl ServerSecrets {
    fn derive(root: &[u8; 32]) -> ServerSecrets {
        let hk = Hkdf::<Sha256>::new(Some(b"sessioncert-broker/1 server secrets"), root);
        let mut verification = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA-256 output length.
        let _ = hk.expand(b"verification codes", verification.as_mut());
        ServerSecrets { verification }
    }
}

/// Length of the key id that starts every sealed outbox text.
pub const OUTBOX_KEY_ID_LEN: usize = 8;

/// The key sealing this instance's queued notifications. It is made at start and lives
/// only in this process's memory: a notification carries a one-time or verification
/// code, and a database keeps what it once held (PostgreSQL's dead row versions, its
/// WAL, backups) after the text is wiped. Sealed under a key no file holds, those
/// copies stay closed to anyone who later has the database and the root key. The price:
/// notifications still queued when the process ends are never delivered.
///
/// A sealed text is `key id (8) ‖ nonce (24) ‖ XChaCha20-Poly1305(text)` with the
/// recipient as associated data; the key id lets each instance claim only its own.
pub struct OutboxKey {
    id: [u8; OUTBOX_KEY_ID_LEN],
    key: Zeroizing<[u8; 32]>,
}

impl OutboxKey {
    /// A fresh random key and id.
    pub fn generate() -> Result<OutboxKey, BrokerError> {
        let mut id = [0u8; OUTBOX_KEY_ID_LEN];
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut id).map_err(|_| BrokerError::Random)?;
        getrandom::fill(key.as_mut()).map_err(|_| BrokerError::Random)?;
        Ok(OutboxKey { id, key })
    }

    /// The id every text this key seals starts with.
    pub fn id(&self) -> &[u8; OUTBOX_KEY_ID_LEN] {
        &self.id
    }

    /// Seals a notification's text for the outbox table, bound to its recipient.
    pub fn seal(&self, recipient: &str, text: &str) -> Result<Vec<u8>, BrokerError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|_| BrokerError::Random)?;
        let ct = XChaCha20Poly1305::new(self.key.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: text.as_bytes(),
                    aad: recipient.as_bytes(),
                },
            )
            .map_err(|_| BrokerError::Random)?;
        let mut out = Vec::with_capacity(OUTBOX_KEY_ID_LEN + nonce.len() + ct.len());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`OutboxKey::seal`] sealed; `None` for another key's text or a
    /// damaged one.
    pub fn open(&self, recipient: &str, sealed: &[u8]) -> Option<Zeroizing<String>> {
        let rest = sealed.strip_prefix(self.id.as_slice())?;
        if rest.len() < 24 {
            return None;
        }
        let (nonce, ct) = rest.split_at(24);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(self.key.as_ref().into())
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: recipient.as_bytes(),
                    },
                )
                .ok()?,
        );
        std::str::from_utf8(&plain)
            .ok()
            .map(|t| Zeroizing::new(t.to_owned()))
    }
}

/// The KMS a running broker uses: the key file, read again when it changes (a
/// `tenant create` or `tenant rotate` beside the running server takes effect within a
/// second, without a restart).
pub struct ServedKms {
    file: KeyFile,
    state: RwLock<Arc<LocalKms>>,
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl ServedKms {
    /// Loads the key file; refuses to start without tenants.
    pub fn open(file: KeyFile) -> Result<ServedKms, KeyError> {
        let kms = file.load()?;
        if kms.tenants().next().is_none() {
            return Err(KeyError::NoTenants(file.path.clone()));
        }
        let mtime = std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .ok();
        Ok(ServedKms {
            file,
            state: RwLock::new(Arc::new(kms)),
            checked: Mutex::new((Instant::now(), mtime)),
        })
    }

    /// The secrets derived from the root key.
    pub fn secrets(&self) -> ServerSecrets {
        self.file.secrets()
    }

    /// The keys now, re-read if the file changed (checked at most once a second).
    pub fn current(&self) -> Arc<LocalKms> {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.0.elapsed() >= Duration::from_secs(1) {
                checked.0 = Instant::now();
                let mtime = std::fs::metadata(&self.file.path)
                    .and_then(|m| m.modified())
                    .ok();
                if mtime != checked.1 {
                    match self.file.load() {
                        Ok(kms) => {
                            checked.1 = mtime;
                            *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(kms);
                            tracing::info!("broker key file changed; reloaded");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "broker key file changed but does not load; keeping the keys in memory")
                        }
                    }
                }
            }
        }
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `tenant` exists.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.current().tenants().any(|t| t == tenant)
    }
}

impl Kms for ServedKms {
    fn current_version(&self, tenant: &str) -> Result<u32, BrokerError> {
        self.current().current_version(tenant)
    }

    fn wrap(&self, tenant: &str, context: &[u8], secret: &[u8]) -> Result<Wrapped, BrokerError> {
        self.current().wrap(tenant, context, secret)
    }

    fn unwrap(
        &self,
        tenant: &str,
        context: &[u8],
        wrapped: &Wrapped,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, BrokerError> {
        self.current().unwrap(tenant, context, wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_texts_open_only_under_their_own_key_and_recipient() {
        let k = OutboxKey::generate().unwrap();
        let sealed = k.seal("a@x.test", "One-time code: ABC").unwrap();
        assert_eq!(&sealed[..OUTBOX_KEY_ID_LEN], k.id());
        assert_eq!(
            k.open("a@x.test", &sealed).unwrap().as_str(),
            "One-time code: ABC"
        );
        // Another recipient, another instance's key, a flipped byte, a short text.
        assert!(k.open("b@x.test", &sealed).is_none());
        let other = OutboxKey::generate().unwrap();
        assert_ne!(other.id(), k.id());
        assert!(other.open("a@x.test", &sealed).is_none());
        // Another key's text relabelled with this key's id.
        let mut relabelled = other.seal("a@x.test", "x").unwrap();
        relabelled[..OUTBOX_KEY_ID_LEN].copy_from_slice(k.id());
        assert!(k.open("a@x.test", &relabelled).is_none());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(k.open("a@x.test", &flipped).is_none());
        assert!(k
            .open("a@x.test", &sealed[..OUTBOX_KEY_ID_LEN + 10])
            .is_none());
        assert!(k.open("a@x.test", &[]).is_none());
    }
}
