//! Why a legacy message was refused.

/// Why a legacy message was refused. Servers answer every variant from the moment
/// decryption begins with one uniform refusal (see the crate docs): the variants are
/// for logs and tests, never for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// Not base64 of `"Salted__" ‖ salt ‖ whole AES blocks`.
    #[error("not a CryptoJS passphrase ciphertext (base64 of \"Salted__\", an 8-byte salt and whole AES blocks)")]
    Format,
    /// The salt was used before in this session (a replayed or reflected message).
    #[error("salt already used in this session (replayed or reflected message)")]
    Replayed,
    /// Padding, UTF-8 or the expected JSON did not check out after decryption.
    #[error("message does not decrypt to what was expected")]
    Decrypt,
    /// The establish body did not carry the session's test string.
    #[error("test string does not match")]
    TestString,
    /// No establish attempts are left for this session.
    #[error("no establish attempts left")]
    AttemptsExhausted,
    /// The session has carried as many requests as it may.
    #[error("session used up its requests")]
    RequestsExhausted,
    /// The RSA-wrapped key did not decrypt under the server's keys, or is unfit.
    #[error("symmetric key does not decrypt under the server's RSA keys, or is unfit")]
    KeyTransport,
    /// A stored session could not be read back.
    #[error("stored legacy session is malformed")]
    Stored,
    /// No such session here (unknown, ended, not yet established, or an id this server
    /// did not issue lately).
    #[error("no such legacy session")]
    UnknownSession,
    /// The id already has a key (held here, or known to the store).
    #[error("session id already taken")]
    IdTaken,
    /// The system's random source failed.
    #[error("random source failed")]
    Random,
    /// The crypto library refused an operation it should not have.
    #[error("cryptographic operation failed")]
    Crypto,
}
