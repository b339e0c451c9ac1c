//! The demo API: the seed's echo route and a small notes resource.
//!
//! The same `echo` handler is mounted sealed at `/apiTest` and plain at
//! `/plain/apiTest`, so the two can be compared (and benchmarked) directly.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The seed's `POST /apiTest`: answers `{"status":true,"message":…,"requestData":<body>}`.
/// A JSON body is echoed as JSON, anything else as a string.
pub async fn echo(body: Bytes) -> Json<Value> {
    let data = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Json(json!({
        "status": true,
        "message": "apiTest: request received",
        "requestData": data,
    }))
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
}

type Shared = Arc<RwLock<Notes>>;

const MAX_NOTES: usize = 10_000;

async fn list(State(s): State<Shared>) -> Json<Vec<Note>> {
    let n = s.read().unwrap_or_else(|p| p.into_inner());
    Json(n.items.values().cloned().collect())
}

async fn create(State(s): State<Shared>, Json(new): Json<NewNote>) -> impl IntoResponse {
    let mut n = s.write().unwrap_or_else(|p| p.into_inner());
    if n.items.len() >= MAX_NOTES {
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
    if n.items.remove(&id).is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// The routes served sealed.
pub fn sealed_routes() -> Router {
    let notes: Shared = Arc::default();
    Router::new()
        .route("/apiTest", post(echo))
        .route("/notes", get(list).post(create))
        .route("/notes/{id}", get(fetch).delete(remove))
        // Unknown paths answer a sealed 404, so a typo shows up as "not found".
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such route"})),
            )
        })
        .with_state(notes)
}

/// The routes served plain (for comparison and health checks).
pub fn plain_routes() -> Router {
    Router::new()
        .route("/plain/apiTest", post(echo))
        .route("/healthz", get(|| async { "ok" }))
}
