//! The wire format of the original Session-Cert prototype, so that its clients in the
//! field keep working against a sessioncert server while they are moved to the real
//! protocol. Sans-I/O: the server crate puts it behind HTTP routes.
//!
//! The format (kept exactly, so the clients need no change):
//!
//! 1. `GET /sessionCert/publicKey` → `{"sessionCert":{"id":…,"publicKey":"<PEM>"}}`.
//! 2. The client makes a 32-character key string, encrypts it with RSA-OAEP (SHA-1) to
//!    that key ([`LegacyRsaKey`]) and posts `{"id":…,"symmetricKey":"<base64>"}` →
//!    `201` with the test string encrypted under its key ([`PendingLegacy::start`]).
//! 3. `PATCH /sessionCert/establish` with `session-cert-id` and the client's
//!    re-encryption of that JSON ([`PendingLegacy::establish`]).
//! 4. Protected requests and responses are CryptoJS passphrase ciphertexts
//!    ([`cryptojs`]) under the key ([`EstablishedLegacy`]).
//!
//! What this crate adds around it, at no cost to those clients: random 53-bit ids
//! instead of a counter, CSPRNG test strings, one server RSA key instead of one per
//! request, single-use test strings and limited establish attempts, and a record of
//! every salt a session has seen, so a replayed, reflected or tampered message is refused
//! before it is decrypted. What it cannot add — the format has no integrity check beyond
//! what decryption catches, no forward secrecy and no server authentication — is why it
//! is for migrating, not for new clients.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "rsa")]
pub mod client;
pub mod cryptojs;
mod error;
#[cfg(feature = "rsa")]
pub mod rsa;
pub mod session;
pub mod wire;

pub use error::LegacyError;
#[cfg(feature = "rsa")]
pub use rsa::{LegacyRsaKey, RsaBits};
pub use session::{EstablishRefused, EstablishedLegacy, PendingLegacy};
pub use wire::LegacyId;
