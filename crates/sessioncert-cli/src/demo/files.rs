//! `PUT /files/{name}` and `GET /files/{name}`: files streamed to and from the data
//! directory, never held whole in memory.
//!
//! An upload is written to a temporary file while its SHA-256 is computed, and renamed
//! into place only once the whole body was read without error: a streamed body that is
//! cut short or fails to open (PROTOCOL §8.5) leaves no file behind and never replaces
//! one. Anonymous sessions must not fill the disk, so the directory has a byte quota.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;

/// Bytes all stored files may take together (the demo's quota).
pub const DEFAULT_QUOTA_BYTES: u64 = 4 << 30;
/// Longest file name.
const MAX_NAME_LEN: usize = 128;
/// Prefix of uploads in progress (never a valid name: names cannot start with a dot).
const PARTIAL_PREFIX: &str = ".upload-";

/// Where files live and how much they may take.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    quota: u64,
    /// Bytes of stored files plus bytes reserved by uploads in progress.
    used: Mutex<u64>,
}

impl Files {
    /// Opens (and creates, owner-only) `dir`; uploads left over by a crash are removed.
    pub fn open(dir: PathBuf, quota: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut used = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
            } else if entry.file_type()?.is_file() {
                used += entry.metadata()?.len();
            }
        }
        Ok(Files {
            inner: Arc::new(Inner {
                dir,
                quota,
                used: Mutex::new(used),
            }),
        })
    }

    /// Bytes all files may take together.
    pub fn quota(&self) -> u64 {
        self.inner.quota
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        valid_name(name).then(|| self.inner.dir.join(name))
    }
}

/// Letters, digits, `.`, `_` and `-`, not starting with a dot: no path can be named.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn bad_name() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "a file name is 1-128 letters, digits, '.', '_' or '-', not starting with '.'",
    )
}

/// `PUT /files/{name}`: stores the body, answers `{"sha256":…,"bytes":…}` (201 when the
/// file is new, 200 when it replaced one).
pub async fn put(State(files): State<Files>, Path(name): Path<String>, body: Body) -> Response {
    let Some(path) = files.path(&name) else {
        return bad_name();
    };
    let mut suffix = [0u8; 8];
    if getrandom::fill(&mut suffix).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    }
    let partial = files
        .inner
        .dir
        .join(format!("{PARTIAL_PREFIX}{}", hex::encode(suffix)));
    let result = receive(&files, &partial, body).await;
    let (sha256, bytes) = match result {
        Ok(done) => done,
        Err(response) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return response;
        }
    };
    // What the rename replaces and the quota's count change together, under the
    // quota's lock: two uploads racing to one name would otherwise both release the old
    // file's size (attack review: 13 MB stored under a 10 MB quota).
    let replaced = {
        let mut used = files.inner.used.lock().await;
        let replaced = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
        if let Err(e) = tokio::fs::rename(&partial, &path).await {
            tracing::error!(error = %e, "could not store an upload");
            let _ = tokio::fs::remove_file(&partial).await;
            *used = used.saturating_sub(bytes);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the file",
            );
        }
        if let Some(old) = replaced {
            *used = used.saturating_sub(old);
        }
        replaced
    };
    let status = if replaced.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(json!({ "sha256": sha256, "bytes": bytes }))).into_response()
}

async fn release(files: &Files, bytes: u64) {
    let mut used = files.inner.used.lock().await;
    *used = used.saturating_sub(bytes);
}

/// Streams `body` into `partial`, reserving quota as it goes; on success the bytes stay
/// reserved (they are the new file's), on failure they are released.
async fn receive(
    files: &Files,
    partial: &std::path::Path,
    body: Body,
) -> Result<(String, u64), Response> {
    let mut out = tokio::fs::File::create(partial).await.map_err(|e| {
        tracing::error!(error = %e, "could not create an upload file");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not store the file",
        )
    })?;
    let mut hash = Sha256::new();
    let mut bytes: u64 = 0;
    let mut stream = body.into_data_stream();
    let outcome = loop {
        let chunk = match stream.next().await {
            None => break Ok(()),
            Some(Ok(c)) => c,
            // The body failed: cut short, a chunk that did not open, over a limit.
            Some(Err(e)) => {
                tracing::info!(error = %e, "an upload's body failed; nothing stored");
                break Err(error(
                    StatusCode::BAD_REQUEST,
                    "the body did not arrive whole; nothing was stored",
                ));
            }
        };
        {
            let mut used = files.inner.used.lock().await;
            if *used + chunk.len() as u64 > files.inner.quota {
                break Err(error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the files quota is full; nothing was stored",
                ));
            }
            *used += chunk.len() as u64;
        }
        bytes += chunk.len() as u64;
        hash.update(&chunk);
        if let Err(e) = out.write_all(&chunk).await {
            tracing::error!(error = %e, "could not write an upload");
            break Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the file",
            ));
        }
    };
    let outcome = match outcome {
        Ok(()) => out.sync_all().await.map_err(|e| {
            tracing::error!(error = %e, "could not sync an upload");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the file",
            )
        }),
        Err(r) => Err(r),
    };
    match outcome {
        Ok(()) => Ok((hex::encode(hash.finalize()), bytes)),
        Err(r) => {
            release(files, bytes).await;
            Err(r)
        }
    }
}

/// `GET /files/{name}`: the file, streamed in 64 KiB pieces.
pub async fn get(State(files): State<Files>, Path(name): Path<String>) -> Response {
    let Some(path) = files.path(&name) else {
        return bad_name();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, "no such file")
        }
        Err(e) => {
            tracing::error!(error = %e, "could not open a stored file");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "could not read the file");
        }
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::put as put_route;
    use axum::Router;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    fn app(files: Files) -> Router {
        Router::new()
            .route("/files/{name}", put_route(put).get(get))
            .with_state(files)
    }

    async fn call(app: &Router, method: &str, uri: &str, body: Body) -> (StatusCode, Vec<u8>) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        (
            status,
            res.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    #[tokio::test]
    async fn upload_answers_its_sha256_and_downloads_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(Files::open(dir.path().join("files"), 1 << 30).unwrap());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = data
            .chunks(10_000)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        let (status, answer) = call(&app, "PUT", "/files/a.bin", body).await;
        assert_eq!(status, StatusCode::CREATED);
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["sha256"], hex::encode(Sha256::digest(&data)));
        assert_eq!(v["bytes"], 300_000);
        let (status, back) = call(&app, "GET", "/files/a.bin", Body::empty()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(back, data);
        let (status, _) = call(&app, "PUT", "/files/a.bin", Body::from("x")).await;
        assert_eq!(status, StatusCode::OK, "replaced");
        assert_eq!(
            call(&app, "GET", "/files/a.bin", Body::empty()).await.1,
            b"x"
        );
    }

    #[tokio::test]
    async fn a_failed_body_stores_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path().join("files"), 1 << 30).unwrap();
        let app = app(files.clone());
        call(&app, "PUT", "/files/keep", Body::from("old")).await;
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from_static(b"new data")),
            Err(std::io::Error::other("stream cut short")),
        ];
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        let (status, _) = call(&app, "PUT", "/files/keep", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            call(&app, "GET", "/files/keep", Body::empty()).await.1,
            b"old"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path().join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["keep".to_owned()], "no partial file left");
        assert_eq!(*files.inner.used.lock().await, 3, "quota released");
    }

    #[tokio::test]
    async fn names_that_could_leave_the_directory_are_refused_and_the_quota_holds() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(Files::open(dir.path().join("files"), 10).unwrap());
        for name in ["..", ".hidden", "a%2Fb", "a%2F..%2Fb", "%2e%2e"] {
            let (status, _) = call(&app, "PUT", &format!("/files/{name}"), Body::from("x")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        }
        let (status, _) = call(&app, "PUT", "/files/big", Body::from("12345678901")).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(
            call(&app, "GET", "/files/big", Body::empty()).await.0,
            StatusCode::NOT_FOUND
        );
        let (status, _) = call(&app, "PUT", "/files/ok", Body::from("1234567890")).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    #[test]
    fn leftover_uploads_are_removed_and_stored_bytes_counted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("files");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(".upload-0011"), b"partial").unwrap();
        std::fs::write(d.join("kept"), b"12345").unwrap();
        let files = Files::open(d.clone(), 100).unwrap();
        assert!(!d.join(".upload-0011").exists());
        assert_eq!(*files.inner.used.try_lock().unwrap(), 5);
    }
}
