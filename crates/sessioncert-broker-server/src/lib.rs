//! The key broker (issue 17; seed `002`, BRIEF §5) served through sessioncert.
//!
//! - [`store`]: the broker's metadata (accounts, files, shares, the outbox, the audit
//!   log) behind one trait, on SQLite (default) or PostgreSQL.
//! - [`objects`]: sealed file bodies in a local directory or S3-compatible storage,
//!   written atomically (nothing is visible until the whole object is).
//! - [`notify`]: delivery of the outbox's notifications (`.eml` files, SMTP, an SMS
//!   webhook).
//! - [`api`]: the sealed HTTP routes and the logins bound to sessions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod keys;
pub mod notify;
pub mod objects;
pub mod store;
