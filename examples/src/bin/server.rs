//! An API of your own, sealed by sessioncert: two routes that answer only sealed
//! requests, and a plain health check, served by sessioncert's hardened listener.
//!
//! ```sh
//! cargo run -p sessioncert-examples --bin server                # 127.0.0.1:3000, ./example-data
//! cargo run -p sessioncert-examples --bin server -- 127.0.0.1:4000 /var/lib/my-api
//! ```
//!
//! It prints the pin (the server's public identity, which clients check) and the command
//! that runs the example client against it. Ctrl-C stops it cleanly: sessions are saved
//! and live on after the next start.
#![forbid(unsafe_code)]

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use sessioncert_server::{now_ms, ListenerLimits, SealedContext, ServerKeys, SessionCert};
use sessioncert_store::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;

/// The body of `POST /orders`.
#[derive(Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

/// Its answer.
#[derive(Serialize)]
struct Receipt {
    item: String,
    quantity: u32,
    total_cents: u64,
}

/// A sealed route. The body arrived encrypted; the handler gets plain JSON, and its
/// answer is sealed on the way out. Nothing here knows about the protocol.
async fn place_order(Json(order): Json<Order>) -> Json<Receipt> {
    Json(Receipt {
        total_cents: 350 * u64::from(order.quantity),
        item: order.item,
        quantity: order.quantity,
    })
}

/// Another sealed route. `SealedContext` tells a handler which session the request came
/// in (the id is public: it travels in a header).
async fn hello(Path(name): Path<String>, Extension(ctx): Extension<SealedContext>) -> String {
    format!("hello {name}, over session {}", ctx.session_id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let data = PathBuf::from(args.next().unwrap_or_else(|| "./example-data".into()));

    // Bind first: a start that cannot listen should not create keys or open the store.
    let listener = tokio::net::TcpListener::bind(&addr).await?;

    // The identity (its public half is the pin) and the session store live in the data
    // directory; both are created on the first start and reused after.
    let (keys, _created) = ServerKeys::open_or_create(&data, now_ms())?;
    let pin = keys.pin();
    // The store records which storage key seals its sessions: a start with another key
    // (a forgotten SESSIONCERT_STORAGE_KEY) is refused instead of ending them all.
    let (store, _report) =
        SqliteStore::open_server(&data.join("sessions.db"), &keys.storage_key().key_id())?;
    let sc = SessionCert::builder(Arc::new(keys), Arc::new(store))
        .build()
        .await?;

    // Your routes, unchanged: everything in `sealed` answers only sealed requests.
    let sealed = Router::new()
        .route("/orders", post(place_order))
        .route("/hello/{name}", get(hello));
    let app = sc
        .router(sealed) // adds the handshake endpoints under /.well-known/sessioncert/
        .route("/healthz", get(|| async { "ok" })); // merged outside: stays plain

    let url = format!("http://{}", listener.local_addr()?);
    println!("example server on {url}");
    println!("pin: {pin}");
    println!("try: cargo run -p sessioncert-examples --bin client -- {url} {pin}");

    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Timeouts, connection caps and a body budget that plain `axum::serve` lacks.
    sessioncert_server::listener::serve(listener, app, ListenerLimits::default(), stop).await;
    sc.shutdown().await?; // save the sessions and mark the stop clean
    println!("stopped cleanly");
    Ok(())
}
