//! Object storage for sealed file bodies.
//!
//! The broker stores users' files already encrypted, one object per file, in a local
//! directory or an S3-compatible bucket ([`ObjectsSpec`]), through the `object_store`
//! crate. Three properties matter and are kept here:
//!
//! - **Atomic**: an [`ObjectWriter`] streams through a multipart upload, so nothing is
//!   visible under the key (to [`Objects::get`] or [`Objects::list`]) until
//!   [`ObjectWriter::finish`] returns. A dropped or aborted writer leaves nothing; in a
//!   directory a crash leaves a staging file (`KEY#N`, the `object_store` local
//!   backend's name for an unfinished upload) that no list shows and that
//!   [`Objects::open`] removes.
//! - **Bounded memory**: an upload holds at most [`UPLOAD_MEMORY_BOUND`] bytes
//!   (one part uploading while the next one fills), and [`ObjectWriter::write`] waits
//!   rather than queueing; an [`ObjectReader`] streams.
//! - **No credentials in errors or logs**: the endpoint may not carry credentials, and
//!   every backend message is scrubbed of the configured keys.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of one uploaded part. S3 needs at least 5 MiB for every part but the last.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploading while the next one fills: one, so an upload holds two parts at most.
const PARTS_IN_FLIGHT: usize = 1;

/// The most an upload holds in memory: the part uploading and the part filling.
pub const UPLOAD_MEMORY_BOUND: usize = PART_SIZE * (PARTS_IN_FLIGHT + 1);

/// Chunk size of a download read from the local directory (the library's own is 8 KiB,
/// one blocking task each).
const LOCAL_READ_CHUNK: usize = 256 * 1024;

/// The longest key accepted (S3's limit is 1024 bytes, prefix included).
const MAX_KEY_LEN: usize = 512;

/// The longest segment of a key (file names are limited to 255 bytes, and the local
/// backend appends `#N` while uploading).
const MAX_SEGMENT_LEN: usize = 200;

/// Errors of the object storage layer.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// No object under this key.
    #[error("object not found: {0}")]
    NotFound(String),
    /// A key (or list prefix) outside the broker's alphabet or shape.
    #[error(
        "invalid object key {0:?}: keys use a-z 0-9 / _ . - with no empty, '.' or '..' segment"
    )]
    BadKey(String),
    /// The storage is misconfigured (spec, endpoint, bucket, credentials).
    #[error("object storage configuration: {0}")]
    Config(String),
    /// The storage failed an operation.
    #[error("object storage: {0}")]
    Backend(String),
}

/// Where objects live: `--objects DIR` or `--objects s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectsSpec {
    /// A local directory (created if missing).
    Dir(PathBuf),
    /// An S3-compatible bucket, objects under `PREFIX/` (empty: the bucket's root).
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The key prefix inside the bucket, without leading or trailing `/`.
        prefix: String,
    },
}

impl FromStr for ObjectsSpec {
    type Err = ObjectsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("s3://") else {
            if s.is_empty() {
                return Err(ObjectsError::Config(
                    "empty objects location: give a directory or s3://BUCKET[/PREFIX]".into(),
                ));
            }
            return Ok(ObjectsSpec::Dir(PathBuf::from(s)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ObjectsError::Config(format!(
                "{s:?}: no bucket (expected s3://BUCKET[/PREFIX])"
            )));
        }
        // Bucket names are DNS-like; anything else (an '@', a ':') is a typo or a URL
        // with credentials in it, refused before it can reach a log line.
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(ObjectsError::Config(
                "bucket names use letters, digits, '.', '-' and '_' only".into(),
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && !valid_path(prefix, true) {
            return Err(ObjectsError::Config(format!(
                "bad prefix {prefix:?} in s3://{bucket}/…: letters, digits, / _ . - \
                 with no empty, '.' or '..' segment"
            )));
        }
        Ok(ObjectsSpec::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// How to reach an S3-compatible store; everything else about the bucket is in the spec.
///
/// [`Objects::open`] reads these from the environment ([`S3Options::from_env`]);
/// [`Objects::open_with`] takes them explicitly, so tests need no process-wide state.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Endpoint URL (`http://127.0.0.1:9000`); `None`: AWS's own for the region.
    pub endpoint: Option<String>,
    /// Access key id; with `secret_key`, static credentials.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
}

// Never print the keys, not even in a debug dump of the configuration.
impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("region", &self.region)
            .finish()
    }
}

impl S3Options {
    /// From the environment: `AWS_ENDPOINT_URL` (or `SESSIONCERT_S3_ENDPOINT`, then
    /// `AWS_ENDPOINT`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
    /// (or `AWS_DEFAULT_REGION`). Empty values count as unset.
    pub fn from_env() -> S3Options {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Options {
            endpoint: var("AWS_ENDPOINT_URL")
                .or_else(|| var("SESSIONCERT_S3_ENDPOINT"))
                // object_store's own name for it, read here too so that `describe`
                // and allow-http follow it.
                .or_else(|| var("AWS_ENDPOINT")),
            access_key: var("AWS_ACCESS_KEY_ID"),
            secret_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
        }
    }
}

/// Removes configured secrets from backend messages before they become errors.
///
/// object_store's messages carry URLs and response bodies; some servers echo the access
/// key id in an error body, so every message passes through here.
#[derive(Default)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn new(options: &S3Options) -> Redactor {
        let secrets = [
            &options.access_key,
            &options.secret_key,
            &options.session_token,
        ]
        .into_iter()
        .flatten()
        // A very short "secret" would redact unrelated text and protects nothing.
        .filter(|s| s.len() >= 4)
        .cloned()
        .collect();
        Redactor { secrets }
    }

    fn scrub(&self, message: String) -> String {
        self.secrets.iter().fold(message, |m, secret| {
            m.replace(secret.as_str(), "[redacted]")
        })
    }

    fn backend(&self, key: &str, err: object_store::Error) -> ObjectsError {
        match err {
            object_store::Error::NotFound { .. } => ObjectsError::NotFound(key.to_string()),
            other => ObjectsError::Backend(self.scrub(other.to_string())),
        }
    }
}

/// The object store the broker writes sealed file bodies to.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Prepended (with `/`) to every key; empty for a directory.
    prefix: String,
    description: String,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("location", &self.description)
            .finish_non_exhaustive()
    }
}

impl Objects {
    /// Opens the store, S3 settings from the environment (the `AWS_*` variables that
    /// `object_store` knows, then [`S3Options::from_env`] on top).
    ///
    /// A directory is created (mode 0700) and cleared of the staging files of uploads a
    /// crash interrupted; a bucket is listed once so a wrong endpoint, bucket or
    /// credential fails here rather than at the first upload.
    pub async fn open(spec: &ObjectsSpec) -> Result<Objects, ObjectsError> {
        match spec {
            ObjectsSpec::Dir(dir) => open_dir(dir).await,
            ObjectsSpec::S3 { bucket, prefix } => {
                open_s3(
                    bucket,
                    prefix,
                    AmazonS3Builder::from_env(),
                    &S3Options::from_env(),
                )
                .await
            }
        }
    }

    /// Opens the store with explicit S3 settings and nothing from the environment
    /// (`options` is unused for a directory).
    pub async fn open_with(
        spec: &ObjectsSpec,
        options: &S3Options,
    ) -> Result<Objects, ObjectsError> {
        match spec {
            ObjectsSpec::Dir(dir) => open_dir(dir).await,
            ObjectsSpec::S3 { bucket, prefix } => {
                open_s3(bucket, prefix, AmazonS3Builder::new(), options).await
            }
        }
    }

    /// Wraps a store built elsewhere (another backend, or a throttled or in-memory one
    /// in tests), keys at its root. `description` is what [`Objects::describe`] says.
    pub fn from_store(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Objects {
        Objects {
            store,
            prefix: String::new(),
            description: description.into(),
            redactor: Arc::default(),
        }
    }

    /// Where the objects are, for logs: `dir /path` or `s3://bucket/prefix (endpoint …)`.
    /// Never holds credentials.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Starts a streamed upload to `key`, replacing any object there once finished.
    pub async fn writer(&self, key: &str) -> Result<ObjectWriter, ObjectsError> {
        check_key(key)?;
        let upload = self
            .store
            .put_multipart(&self.location(key))
            .await
            .map_err(|e| self.redactor.backend(key, e))?;
        Ok(ObjectWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            buffered: 0,
            total: 0,
            key: key.to_string(),
            redactor: Arc::clone(&self.redactor),
        })
    }

    /// Opens the object under `key` for a streamed read ([`ObjectsError::NotFound`] if
    /// there is none).
    pub async fn get(&self, key: &str) -> Result<ObjectReader, ObjectsError> {
        check_key(key)?;
        let result = self
            .store
            .get(&self.location(key))
            .await
            .map_err(|e| self.redactor.backend(key, e))?;
        let size = result.meta.size;
        let redactor = Arc::clone(&self.redactor);
        let owned_key = key.to_string();
        let stream = match result.payload {
            // Read the file ourselves in large chunks (the library's stream does 8 KiB
            // per blocking task), checking it still has the size it was opened with.
            GetResultPayload::File(file, _path) => {
                let file = tokio::fs::File::from_std(file);
                local_stream(file, size, owned_key)
            }
            GetResultPayload::Stream(stream) => stream
                .map_err(move |e| redactor.backend(&owned_key, e))
                .boxed(),
        };
        Ok(ObjectReader {
            size,
            inner: stream,
        })
    }

    /// Deletes the object under `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        check_key(key)?;
        match self.store.delete(&self.location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.redactor.backend(key, e)),
        }
    }

    /// The keys under `prefix` (whole segments: `u1` and `u1/` both list `u1/…`, not
    /// `u10/…`; empty lists everything), relative to the spec's prefix, sorted. Names
    /// that are not valid keys are left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectsError> {
        Ok(self
            .list_with_times(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// As [`Objects::list`], only the objects last written more than `age` ago.
    pub async fn list_older_than(
        &self,
        prefix: &str,
        age: Duration,
    ) -> Result<Vec<String>, ObjectsError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let cutoff = now_ms.saturating_sub(age.as_millis() as i64);
        Ok(self
            .list_with_times(prefix)
            .await?
            .into_iter()
            .filter(|(_, written_ms)| *written_ms <= cutoff)
            .map(|(k, _)| k)
            .collect())
    }

    /// The keys under `prefix` with when each was last written (Unix ms), sorted.
    async fn list_with_times(&self, prefix: &str) -> Result<Vec<(String, i64)>, ObjectsError> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_key(prefix)?;
        }
        let full = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (true, false) => Some(StorePath::from(prefix)),
            (false, true) => Some(StorePath::from(self.prefix.as_str())),
            (false, false) => Some(self.location(prefix)),
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<_> = self
            .store
            .list(full.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.redactor.backend(prefix, e))?;
        let mut keys: Vec<(String, i64)> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(strip.as_str())
                    .map(|k| (k.to_string(), m.last_modified.timestamp_millis()))
            })
            // Only names the broker could have written: a stray file (an operator's
            // note in the directory) is no object, and would fail every later call.
            .filter(|(k, _)| check_key(k).is_ok())
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn location(&self, key: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{key}", self.prefix))
        }
    }
}

async fn open_dir(dir: &FsPath) -> Result<Objects, ObjectsError> {
    let dir = dir.to_path_buf();
    let (root, removed) = tokio::task::spawn_blocking(move || prepare_dir(&dir))
        .await
        .map_err(|e| ObjectsError::Backend(format!("preparing the objects directory: {e}")))??;
    if removed > 0 {
        tracing::info!(
            removed,
            dir = %root.display(),
            "removed staging files of uploads left unfinished"
        );
    }
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| ObjectsError::Config(format!("objects directory: {e}")))?
        // Deleting a user's last file also removes the directories it leaves empty.
        .with_automatic_cleanup(true);
    Ok(Objects {
        store: Arc::new(store),
        prefix: String::new(),
        description: format!("dir {}", root.display()),
        redactor: Arc::default(),
    })
}

/// Creates the directory (0700) and removes staging files; returns the canonical root
/// and how many files were removed.
fn prepare_dir(dir: &FsPath) -> Result<(PathBuf, usize), ObjectsError> {
    let config = |what: &str, e: std::io::Error| {
        ObjectsError::Config(format!("objects directory {}: {what}: {e}", dir.display()))
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Bodies are sealed, but names and sizes are still nobody else's business.
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| config("create", e))?;
    let root = std::fs::canonicalize(dir).map_err(|e| config("canonicalize", e))?;
    let removed = remove_staging_files(&root).map_err(|e| config("clean up", e))?;
    Ok((root, removed))
}

/// True for the name LocalFileSystem gives an unfinished upload of `NAME`: `NAME#N`,
/// N decimal. Keys never hold `#`, so such a file is never an object.
fn is_staging_name(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((base, n)) => {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// How long a staging file must have been left alone before a start removes it: an
/// upload in progress writes to its file continuously, so only a dead one goes (another
/// instance on the same directory keeps its live uploads).
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(600);

fn is_stale(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= STALE_STAGING)
}

/// Removes stale staging files under `root`, recursively, following no symlinks. Run at open,
/// before any upload of this process can have started.
fn remove_staging_files(root: &FsPath) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file()
                && entry.file_name().to_str().is_some_and(is_staging_name)
                && is_stale(&entry)
            {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    // Gone already: nothing left to clean.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

async fn open_s3(
    bucket: &str,
    prefix: &str,
    builder: AmazonS3Builder,
    options: &S3Options,
) -> Result<Objects, ObjectsError> {
    let redactor = Arc::new(Redactor::new(options));
    let mut builder = builder.with_bucket_name(bucket);
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        // No overall deadline: a large download streams for as long as it takes; a
        // stalled connection is caught by the read timeout instead.
        .with_timeout_disabled()
        .with_read_timeout(Duration::from_secs(60));
    let endpoint_note = match &options.endpoint {
        Some(endpoint) => {
            let url = url::Url::parse(endpoint)
                .map_err(|e| ObjectsError::Config(format!("S3 endpoint is not a URL ({e})")))?;
            if !url.username().is_empty() || url.password().is_some() {
                // It would end up in every error message and log line.
                return Err(ObjectsError::Config(
                    "the S3 endpoint URL must not hold credentials; use \
                     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                        .into(),
                ));
            }
            match url.scheme() {
                "http" => client = client.with_allow_http(true),
                "https" => {}
                other => {
                    return Err(ObjectsError::Config(format!(
                        "S3 endpoint scheme {other:?}: expected http or https"
                    )))
                }
            }
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
            format!("endpoint {}", endpoint.trim_end_matches('/'))
        }
        None => "endpoint AWS".to_string(),
    };
    builder = builder
        .with_region(options.region.as_deref().unwrap_or("us-east-1"))
        .with_client_options(client)
        // Fewer, shorter retries than the library's (10 over 3 minutes), so a dead
        // endpoint fails open within seconds; transient errors still get retried.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
        });
    if let Some(key) = &options.access_key {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &options.secret_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &options.session_token {
        builder = builder.with_token(token);
    }
    let store = builder
        .build()
        .map_err(|e| ObjectsError::Config(redactor.scrub(e.to_string())))?;
    let description = if prefix.is_empty() {
        format!("s3://{bucket} ({endpoint_note})")
    } else {
        format!("s3://{bucket}/{prefix} ({endpoint_note})")
    };
    let objects = Objects {
        store: Arc::new(store),
        prefix: prefix.to_string(),
        description,
        redactor,
    };
    // One list request (the first page, dropped after one entry) proves the endpoint,
    // the bucket and the credentials before the broker takes requests.
    let probe_prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
    let mut listing = objects.store.list(probe_prefix.as_ref());
    if let Some(Err(e)) = listing.next().await {
        return Err(ObjectsError::Config(format!(
            "{} does not answer: {}",
            objects.description,
            // One line for the log, even when the server's XML reply spans several.
            objects
                .redactor
                .scrub(e.to_string())
                .replace(['\r', '\n'], " ")
        )));
    }
    Ok(objects)
}

/// A streamed upload: at most [`UPLOAD_MEMORY_BOUND`] bytes held, nothing visible until
/// [`ObjectWriter::finish`].
///
/// Dropped without `finish`, it aborts the upload in a task on the current tokio runtime
/// (without one, the directory backend still deletes its staging file).
pub struct ObjectWriter {
    /// `None` once finished, aborted, or failed.
    inner: Option<WriteMultipart>,
    /// Bytes in the part now filling.
    buffered: usize,
    total: u64,
    key: String,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("written", &self.total)
            .field("open", &self.inner.is_some())
            .finish()
    }
}

impl ObjectWriter {
    /// Appends `data`; waits while a full part is still uploading (backpressure).
    ///
    /// After an error the upload is aborted: later calls fail and nothing is stored. If
    /// this future is dropped before it completes, an unknown prefix of `data` was
    /// written: abort the writer then.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), ObjectsError> {
        while !data.is_empty() {
            let Some(inner) = self.inner.as_mut() else {
                return Err(self.closed());
            };
            let room = PART_SIZE - self.buffered;
            let take = room.min(data.len());
            if take == room {
                // This piece completes a part, which WriteMultipart sends at once: wait
                // for the part before it first, so at most one uploads while the next
                // fills, whatever the producer's pace.
                if let Err(e) = inner.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return Err(self.fail(e).await);
                }
            }
            let piece = data.split_to(take);
            // Copied into the part's buffer rather than referenced, so the caller's
            // allocations are not held by us and the bound counts everything.
            inner.write(&piece);
            self.buffered = (self.buffered + take) % PART_SIZE;
            self.total += take as u64;
        }
        Ok(())
    }

    /// Uploads the rest and completes the object, which becomes visible only now.
    /// Returns the object's size.
    pub async fn finish(mut self) -> Result<u64, ObjectsError> {
        let Some(inner) = self.inner.take() else {
            return Err(self.closed());
        };
        // WriteMultipart::finish aborts the upload itself when a part or the completion
        // fails.
        inner
            .finish()
            .await
            .map_err(|e| self.redactor.backend(&self.key, e))?;
        Ok(self.total)
    }

    /// Abandons the upload, deleting what was sent.
    pub async fn abort(mut self) -> Result<(), ObjectsError> {
        match self.inner.take() {
            Some(inner) => inner
                .abort()
                .await
                .map_err(|e| self.redactor.backend(&self.key, e)),
            None => Ok(()),
        }
    }

    /// Aborts after a failed part (so that a later `finish` cannot complete an object
    /// with a part missing) and returns the part's error.
    async fn fail(&mut self, err: object_store::Error) -> ObjectsError {
        if let Some(inner) = self.inner.take() {
            if let Err(abort) = inner.abort().await {
                tracing::warn!(
                    key = %self.key,
                    error = %self.redactor.scrub(abort.to_string()),
                    "aborting a failed upload failed"
                );
            }
        }
        self.redactor.backend(&self.key, err)
    }

    fn closed(&self) -> ObjectsError {
        ObjectsError::Backend(format!(
            "upload of {} was aborted after an earlier error",
            self.key
        ))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let key = std::mem::take(&mut self.key);
                let redactor = Arc::clone(&self.redactor);
                drop(runtime.spawn(async move {
                    if let Err(e) = inner.abort().await {
                        tracing::warn!(
                            key = %key,
                            error = %redactor.scrub(e.to_string()),
                            "aborting a dropped upload failed"
                        );
                    }
                }));
            }
            // No runtime to abort on: dropping the upload still deletes a local staging
            // file; an S3 upload's parts stay, invisible, for the bucket's lifecycle rule.
            Err(_) => drop(inner),
        }
    }
}

/// A streamed download: a [`Stream`] of the object's bytes, in order.
pub struct ObjectReader {
    /// The object's size in bytes.
    pub size: u64,
    inner: BoxStream<'static, Result<Bytes, ObjectsError>>,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Stream for ObjectReader {
    type Item = Result<Bytes, ObjectsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Streams `size` bytes of an opened local file; a file that ends early is an error
/// rather than a silently short object.
fn local_stream(
    file: impl AsyncRead + Unpin + Send + 'static,
    size: u64,
    key: String,
) -> BoxStream<'static, Result<Bytes, ObjectsError>> {
    futures_util::stream::try_unfold((file, size, key), |(mut file, remaining, key)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(LOCAL_READ_CHUNK);
        let mut buf = BytesMut::with_capacity(want);
        let read = (&mut file)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| ObjectsError::Backend(format!("reading {key}: {e}")))?;
        if read == 0 {
            return Err(ObjectsError::Backend(format!(
                "{key} ended {remaining} bytes early (changed while read)"
            )));
        }
        Ok(Some((buf.freeze(), (file, remaining - read as u64, key))))
    })
    .boxed()
}

/// Checks a key the broker made: `[a-z0-9/_.-]`, no empty, `.` or `..` segment (so no
/// leading or trailing `/`), at most [`MAX_KEY_LEN`] bytes.
pub fn check_key(key: &str) -> Result<(), ObjectsError> {
    if key.len() <= MAX_KEY_LEN && valid_path(key, false) {
        Ok(())
    } else {
        Err(ObjectsError::BadKey(key.to_string()))
    }
}

/// The shape shared by keys and the spec's prefix (which may also use capitals).
fn valid_path(path: &str, allow_upper: bool) -> bool {
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_LEN
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || (allow_upper && b.is_ascii_uppercase())
                        || matches!(b, b'_' | b'.' | b'-')
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("file#1"));
        assert!(is_staging_name("a.b#123"));
        assert!(!is_staging_name("file"));
        assert!(!is_staging_name("file#"));
        assert!(!is_staging_name("#1"));
        assert!(!is_staging_name("file#1a"));
    }

    #[test]
    fn redactor_scrubs_every_secret() {
        let r = Redactor::new(&S3Options {
            access_key: Some("AKIDEXAMPLE".into()),
            secret_key: Some("s3cr3t-value".into()),
            ..S3Options::default()
        });
        let out = r.scrub("id AKIDEXAMPLE and s3cr3t-value".into());
        assert_eq!(out, "id [redacted] and [redacted]");
    }
}
