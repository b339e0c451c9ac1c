//! A Rust client for the example server: it checks the server's identity against the
//! pin, handshakes, and sends sealed requests.
//!
//! ```sh
//! cargo run -p sessioncert-examples --bin client -- http://127.0.0.1:3000 ed25519:…
//! ```
#![forbid(unsafe_code)]

use anyhow::Context;
use serde_json::{json, Value};
use sessioncert_client::{Client, Pin, Trust};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(pin)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: client URL PIN   (the server prints both when it starts)");
    };
    // The pin is public; ship it with your app. A server with another identity (an
    // impostor on the path) is refused before any request is sent.
    let pin: Pin = pin.parse().context("bad pin")?;
    let client = Client::connect(&url, Trust::Pin(pin)).await?;

    // A sealed GET: the response body travels encrypted and is authenticated.
    let resp = client
        .get("/hello/newcomer")
        .send()
        .await?
        .error_for_status()?;
    println!("GET /hello/newcomer -> {}: {}", resp.status(), resp.text()?);

    // A sealed POST with a JSON body.
    let resp = client
        .post("/orders")
        .json(&json!({"item": "coffee", "quantity": 2}))
        .send()
        .await?
        .error_for_status()?;
    let receipt: Value = resp.json()?;
    println!("POST /orders -> {}: {receipt}", resp.status());

    // End the session on the server now rather than at its idle timeout.
    client.close().await?;
    Ok(())
}
