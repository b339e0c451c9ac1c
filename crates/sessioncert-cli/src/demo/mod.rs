//! The demo API: the seed's echo route, a small notes resource, streamed files and
//! server-sent events.
//!
//! The same `echo` handler is mounted sealed at `/apiTest` and plain at
//! `/plain/apiTest`, so the two can be compared (and benchmarked) directly.

pub mod events;
pub mod files;

pub use files::Files;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sessioncert_server::LegacyContext;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The seed's `POST /apiTest`: answers `{"status":true,"message":…,"requestData":<body>}`.
/// A JSON body is echoed as JSON, anything else as a string. A legacy Session-Cert
/// request gets exactly the original's answer: its body always as a string, and the
/// original's message.
pub async fn echo(legacy: Option<Extension<LegacyContext>>, body: Bytes) -> Response {
    if legacy.is_some() {
        // In the original's key order (serde_json's maps sort theirs).
        let text = format!(
            r#"{{"status":true,"message":{},"requestData":{}}}"#,
            Value::from("보내오신 데이터를 확인해주세요."),
            Value::from(String::from_utf8_lossy(&body))
        );
        return ([(http::header::CONTENT_TYPE, "application/json")], text).into_response();
    }
    let data = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Json(json!({
        "status": true,
        "message": "apiTest: request received",
        "requestData": data,
    }))
    .into_response()
}

/// One note.
#[derive(Clone, Serialize)]
pub struct Note {
    id: u64,
    title: String,
    body: String,
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
    #[serde(default)]
    body: String,
}

#[derive(Default)]
struct Notes {
    next: u64,
    items: BTreeMap<u64, Note>,
    /// Title and body bytes of all notes.
    bytes: usize,
}

type Shared = Arc<RwLock<Notes>>;

const MAX_NOTES: usize = 10_000;
/// Title and body bytes the demo keeps in all (its list must stay far below the
/// server's response cap, and anonymous sessions must not fill memory).
const MAX_NOTE_BYTES: usize = 4 * 1024 * 1024;

async fn list(State(s): State<Shared>) -> Json<Vec<Note>> {
    let n = s.read().unwrap_or_else(|p| p.into_inner());
    Json(n.items.values().cloned().collect())
}

async fn create(State(s): State<Shared>, Json(new): Json<NewNote>) -> impl IntoResponse {
    let mut n = s.write().unwrap_or_else(|p| p.into_inner());
    let size = new.title.len() + new.body.len();
    if n.items.len() >= MAX_NOTES || n.bytes + size > MAX_NOTE_BYTES {
        return (
            StatusCode::INSUFFICIENT_STORAGE,
            Json(json!({"error": "too many notes"})),
        )
            .into_response();
    }
    n.next += 1;
    let note = Note {
        id: n.next,
        title: new.title,
        body: new.body,
    };
    n.bytes += size;
    n.items.insert(note.id, note.clone());
    (StatusCode::CREATED, Json(note)).into_response()
}

async fn fetch(State(s): State<Shared>, Path(id): Path<u64>) -> impl IntoResponse {
    let n = s.read().unwrap_or_else(|p| p.into_inner());
    match n.items.get(&id) {
        Some(note) => Json(note.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such note"})),
        )
            .into_response(),
    }
}

async fn remove(State(s): State<Shared>, Path(id): Path<u64>) -> StatusCode {
    let mut n = s.write().unwrap_or_else(|p| p.into_inner());
    if let Some(gone) = n.items.remove(&id) {
        n.bytes -= gone.title.len() + gone.body.len();
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// The routes served sealed; `files` is where `PUT /files/{name}` stores uploads.
/// `max_body` bounds what the routes that buffer their body whole (the echo, notes)
/// take, streamed or not (`--max-body`): axum's own default (2 MB) is not what the
/// server's settings say.
pub fn sealed_routes(files: Files, max_body: usize) -> Router {
    let notes: Shared = Arc::default();
    // Uploads may be as large as the files quota, whatever --max-stream-body says for
    // the other routes (each chunk is held only while it is written out).
    let upload_limit = sessioncert_server::seal::StreamLimit::new(Some(files.quota()));
    let file_routes = Router::new()
        .route(
            "/files/{name}",
            axum::routing::put(files::put)
                .route_layer(upload_limit)
                .get(files::get),
        )
        .with_state(files);
    Router::new()
        .route("/apiTest", post(echo))
        .route("/notes", get(list).post(create))
        .route("/notes/{id}", get(fetch).delete(remove))
        .route("/events", get(events::events))
        // Unknown paths answer a sealed 404, so a typo shows up as "not found".
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such route"})),
            )
        })
        .with_state(notes)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .merge(file_routes)
}

/// The routes served plain (for comparison; `/healthz` is with the operator's
/// endpoints in `admin`).
pub fn plain_routes() -> Router {
    Router::new().route("/plain/apiTest", post(echo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn post(app: &Router, size: usize) -> StatusCode {
        let body = serde_json::to_vec(&json!({"title": "t", "body": "x".repeat(size)})).unwrap();
        let req = axum::http::Request::post("/notes")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    /// The echo takes bodies up to the server's `--max-body` (here 4 MiB), not axum's
    /// 2 MB default, and answers 413 above it.
    #[tokio::test]
    async fn the_echo_takes_bodies_up_to_max_body() {
        let dir = tempfile::tempdir().unwrap();
        let app = sealed_routes(
            Files::open(dir.path().join("files"), 1 << 20).unwrap(),
            4 << 20,
        );
        for (size, want) in [
            (3 << 20, StatusCode::OK),
            ((4 << 20) + 1, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let req = axum::http::Request::post("/apiTest")
                .body(axum::body::Body::from(vec![b'a'; size]))
                .unwrap();
            assert_eq!(
                app.clone().oneshot(req).await.unwrap().status(),
                want,
                "{size}"
            );
        }
    }

    /// Anonymous sessions cannot fill the demo's memory: the notes hold at most
    /// `MAX_NOTE_BYTES`, and deleting one makes room again (attack review).
    #[tokio::test]
    async fn notes_are_capped_in_bytes_not_only_in_count() {
        let dir = tempfile::tempdir().unwrap();
        let app = sealed_routes(
            Files::open(dir.path().join("files"), 1 << 20).unwrap(),
            4 << 20,
        );
        let big = 1_500_000;
        assert_eq!(post(&app, big).await, StatusCode::CREATED);
        assert_eq!(post(&app, big).await, StatusCode::CREATED);
        assert_eq!(post(&app, big).await, StatusCode::INSUFFICIENT_STORAGE);
        let req = axum::http::Request::delete("/notes/1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(post(&app, big).await, StatusCode::CREATED);
    }
}
