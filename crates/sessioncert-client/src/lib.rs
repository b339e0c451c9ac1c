//! Async client for sessioncert: application-layer encryption for HTTP APIs.
//!
//! [`Client::connect`] fetches the server's signed key configuration, verifies it
//! against a pinned identity ([`Trust::Pin`]), runs a Noise NK handshake inside two
//! ordinary HTTP requests and confirms the session. From then on every request body is
//! sealed (bound to the method, path, query and content type) and every response is
//! authenticated before you see it: a response that is not sealed, or that was
//! tampered with, is an error — never returned as if it were the server's answer.
//!
//! ```no_run
//! use sessioncert_client::{Client, Pin, Trust};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pin: Pin = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".parse()?;
//! let client = Client::connect("https://api.example/v1", Trust::Pin(pin)).await?;
//!
//! // Header mode: the body is sealed; method, path and query stay visible but bound.
//! let resp = client
//!     .post("/notes")
//!     .json(&serde_json::json!({ "text": "hello" }))
//!     .send()
//!     .await?;
//! println!("{} {}", resp.status(), resp.text()?);
//!
//! // Full-request mode: method, path, query and headers travel sealed too.
//! let resp = client.get("/notes?limit=5").full(true).send().await?;
//! let notes: serde_json::Value = resp.json()?;
//! # let _ = notes;
//!
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! * **Concurrency.** A [`Client`] is cheap to clone and safe to share; the session is
//!   locked only while a record is sealed or opened, never across network I/O.
//! * **Recovery, and no double execution.** If the server answers `unknown_session`,
//!   `session_expired` or `session_closed`, the client drops the session. It runs one
//!   fresh handshake (shared by all requests that hit it at once) and sends the request
//!   once more **only if that cannot execute it twice**: the method is idempotent
//!   (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), the request was marked
//!   [`RequestBuilder::idempotent`], or the client knows the first attempt was not
//!   executed. Refusals are plain HTTP, so an attacker on the path can let the server
//!   execute a `POST` and then forge a refusal; such a request fails with
//!   [`ClientError::OutcomeUnknown`] (the server may or may not have executed it —
//!   check before sending it again), as it does when the connection fails after the
//!   request was sent. A connection that was never made is not an unknown outcome.
//!   A request that is safe to send twice whose connection failed (not timed out)
//!   after it was sent goes again, on a new connection in the same session, up to three
//!   times: behind a load balancer that reaches another instance of the server. The
//!   client also handshakes proactively when the session is past its lifetime, idle
//!   timeout or message budget. A handshake refused with `unknown_key` refetches the key
//!   configuration once.
//! * **Session files.** With [`ClientBuilder::session_file`] the session survives the
//!   process: it is written (atomically, mode 0600) after every seal and before the
//!   request is sent, so a crash can never make the client reuse a sequence number. A
//!   session file is exclusive: the client holds an OS lock on `<file>.lock` from before
//!   it reads the file until it is dropped, so two processes (or two clients) never seal
//!   with the same sequence number; a second one waits a bounded time and then fails
//!   with [`ClientError::SessionFileBusy`]. A path holding anything but a session file
//!   is never overwritten ([`ClientError::NotASessionFile`]).
//! * **Trust on first use.** [`Trust::FirstUse`] accepts whatever identity signs the
//!   configuration and logs a warning with the pin to use next time
//!   ([`Client::identity`] returns it).
//! * **HTTPS.** With the default `tls` feature the built-in HTTP client speaks
//!   `https://` on rustls (aws-lc-rs), trusting the platform's trust store plus the CA
//!   certificates given in [`TlsOptions`] ([`ClientBuilder::tls`]). TLS sits under the
//!   protocol: the pin is checked whatever TLS accepted, also with
//!   [`TlsOptions::danger_accept_invalid_certs`]. A failed TLS handshake is
//!   [`ClientError::Tls`] (nothing was sent).
//! * **Streamed bodies.** The client offers streamed records (PROTOCOL §8.5; off with
//!   [`ClientBuilder::streams`]). A body given as a stream, reader or file
//!   ([`RequestBuilder::body_stream`], [`RequestBuilder::body_reader`],
//!   [`RequestBuilder::body_file`]) longer than 64 KiB is then sealed chunk by chunk as
//!   the connection takes it, never held whole. [`RequestBuilder::send_streaming`]
//!   returns once the status and headers are authenticated and yields the body as its
//!   chunks open ([`StreamingResponse`]), or as server-sent events
//!   ([`StreamingResponse::events`]); a body cut short is an error
//!   ([`ClientError::Truncated`]), never a short success.
//! * **Limits of header mode.** Only the status, the inner content type and the body
//!   of a response are authenticated; other headers pass unprotected, and `HEAD` (no
//!   response body) needs full-request mode.
//!
//! Logs go through `tracing`; keys, key confirmations and bodies are never logged.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bhttp_stream;
mod body;
mod client;
mod error;
mod file;
mod request;
mod sse;
mod streaming;
#[cfg(feature = "tls")]
mod tls;

pub use client::{
    Client, ClientBuilder, SessionInfo, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BODY, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SESSION_FILE_LOCK_TIMEOUT,
};
pub use error::{ClientError, RefusalAuthenticity, TlsFailure};
pub use file::SESSION_FILE_FORMAT;
#[doc(hidden)]
pub use file::{inspect_session_file, SessionFileVerdict};
pub use request::{RequestBuilder, Response};
pub use sessioncert_proto::{ErrorCode, Pin, ProtocolError, SessionId, Suite, Trust};
pub use sse::Event;
pub use streaming::{EventStream, StreamingResponse};
#[cfg(feature = "tls")]
pub use tls::TlsOptions;

/// Re-exported so callers can name methods, statuses and headers without adding `http`.
pub use http;
