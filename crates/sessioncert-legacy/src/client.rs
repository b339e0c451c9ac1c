//! The client's side of the format, as the original front end does it (for tests,
//! benchmarks and tools; a new client should speak the real protocol instead).

use crate::cryptojs;
use crate::LegacyError;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// A 32-character key string (printable ASCII from the system's CSPRNG; the original
/// used `Math.random`).
pub fn new_key() -> Result<Zeroizing<String>, LegacyError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|_| LegacyError::Random)?;
    // 94 printable characters; the tiny bias of `% 94` does not matter for a test key.
    Ok(Zeroizing::new(
        b.iter().map(|x| char::from(b'!' + x % 94)).collect(),
    ))
}

/// `publicEncrypt(publicKeyPem, Buffer.from(key)).toString("base64")`: RSA-OAEP with
/// SHA-1 to the served PEM SubjectPublicKeyInfo.
pub fn wrap_key(public_pem: &str, key: &[u8]) -> Result<String, LegacyError> {
    let body: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(body.trim())
        .map_err(|_| LegacyError::KeyTransport)?;
    let public = PublicEncryptingKey::from_der(&der)
        .map_err(|_| LegacyError::KeyTransport)
        .and_then(|k| OaepPublicEncryptingKey::new(k).map_err(|_| LegacyError::KeyTransport))?;
    let mut out = vec![0u8; public.ciphertext_size()];
    let ct = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, key, &mut out, None)
        .map_err(|_| LegacyError::KeyTransport)?;
    Ok(STANDARD.encode(ct))
}

/// What the original client sends to `establish`: the `201` body decrypted, parsed and
/// encrypted again under a fresh salt.
pub fn answer_test_string(body_201: &str, key: &[u8]) -> Result<String, LegacyError> {
    let plain = cryptojs::decrypt(key, body_201)?;
    let v: serde_json::Value = serde_json::from_slice(&plain).map_err(|_| LegacyError::Decrypt)?;
    cryptojs::encrypt(key, v.to_string().as_bytes())
}
