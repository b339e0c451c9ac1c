//! The signed key configuration: fetching it, verifying it against the trusted
//! identity, and the in-memory cache that is reused while it is fresh and is never
//! replaced by an older configuration than one already accepted (the high-water mark).
//! Kept on its own because it is where trust in the server is decided; every
//! handshake asks it for a configuration first.

use super::exchange::{refusal, H_ERROR};
use super::{join, lock, now_ms, read_limited, Inner};
use crate::ClientError;
use http::StatusCode;
use reqwest::Url;
use sessioncert_proto::wire;
use sessioncert_proto::{KeyConfig, ProtocolError, SignedKeyConfig, Trust, VerifiedKeyConfig};
use std::sync::atomic::Ordering;
use tracing::{debug, warn};

/// Largest key configuration accepted.
const MAX_CONFIG_LEN: usize = 64 * 1024;

/// `GET` the signed key configuration and verify it against `trust`.
pub(super) async fn fetch_config(
    http: &reqwest::Client,
    base: &Url,
    trust: &Trust,
) -> Result<VerifiedKeyConfig, ClientError> {
    let url = join(base, wire::CONFIG_PATH)?;
    let started = std::time::Instant::now();
    debug!(%url, "fetching the server's signed key configuration");
    let resp = http.get(url).send().await?;
    if resp.headers().contains_key(&H_ERROR) {
        return Err(refusal(resp).await);
    }
    let status = resp.status();
    if status != StatusCode::OK {
        return Err(ClientError::unexpected(
            Some(status),
            "key configuration endpoint did not answer 200",
        ));
    }
    let body = read_limited(resp, MAX_CONFIG_LEN).await?;
    let signed = SignedKeyConfig::decode(&body)?;
    let config = signed.verify(trust, now_ms()).map_err(|e| match e {
        ProtocolError::UntrustedConfig(reason) => ClientError::Untrusted {
            reason,
            presented: KeyConfig::decode(&signed.config).ok().map(|c| c.identity),
        },
        other => ClientError::Protocol(other),
    })?;
    match trust {
        Trust::FirstUse => warn!(
            pin = %config.identity,
            "server identity is NOT pinned (trust on first use): accepted {}; \
             pin it next time with Trust::Pin(\"{}\")",
            config.identity,
            config.identity
        ),
        Trust::Pin(_) | Trust::AnyOf(_) => debug!(
            identity = %config.identity,
            handshake_keys = config.keys.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "key configuration verified: signed by the pinned identity"
        ),
    }
    Ok(config)
}

impl Inner {
    /// The cached configuration if it still has a usable key, else a fresh one.
    pub(super) async fn config(
        &self,
        force_fetch: bool,
    ) -> Result<(VerifiedKeyConfig, bool), ClientError> {
        if !force_fetch {
            if let Some(c) = lock(&self.config).as_ref() {
                let now = now_ms();
                if c.is_fresh(now) && c.current_key(now).is_some() {
                    return Ok((c.clone(), false));
                }
            }
        }
        let c = fetch_config(&self.http, &self.base, &self.trust).await?;
        // Never walked back to an older configuration than one already accepted
        // (PROTOCOL §5.3 rule 7): it may list a handshake key the server has removed.
        let newest = self
            .config_high_water
            .fetch_max(c.issued_at_ms, Ordering::AcqRel);
        if c.issued_at_ms < newest {
            // Never used. But when the newest accepted is still usable, it is kept: an
            // instance that has not yet re-read a rotated key file serves the older one
            // for up to a minute (PROTOCOL §7 rule 7), and the newer one still works.
            if let Some(kept) = still_usable(lock(&self.config).as_ref(), newest, now_ms()) {
                debug!(
                    older = c.issued_at_ms,
                    kept = newest,
                    "the server sent an older key configuration; keeping the newer one"
                );
                return Ok((kept, false));
            }
            return Err(ClientError::Untrusted {
                reason: "the server sent an older key configuration than one already accepted",
                presented: Some(c.identity),
            });
        }
        *lock(&self.identity) = c.identity;
        *lock(&self.config) = Some(c.clone());
        Ok((c, true))
    }
}

/// The configuration held, if it is the newest accepted (`newest`) and still usable at
/// `now`: what a client keeps using when a server sends an older one.
fn still_usable(
    held: Option<&VerifiedKeyConfig>,
    newest: u64,
    now: u64,
) -> Option<VerifiedKeyConfig> {
    held.filter(|c| c.issued_at_ms == newest && c.is_fresh(now) && c.current_key(now).is_some())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessioncert_proto::config::{PublishedKey, HS_NOISE_NK_25519_AESGCM_SHA256, VERSION_1};
    use sessioncert_proto::IdentityKey;

    fn verified(issued: u64) -> VerifiedKeyConfig {
        let id = IdentityKey::from_seed(&[7; 32]);
        KeyConfig {
            identity: id.pin(),
            issued_at_ms: issued,
            expires_at_ms: issued + 24 * 3_600_000,
            versions: vec![VERSION_1],
            record_suites: vec![1],
            keys: vec![PublishedKey {
                key_id: 1,
                hs_suite: HS_NOISE_NK_25519_AESGCM_SHA256,
                public: vec![9; 32],
                not_before_ms: 0,
                not_after_ms: issued + 48 * 3_600_000,
            }],
        }
        .sign(&id)
        .unwrap()
        .verify(&Trust::Pin(id.pin()), issued)
        .unwrap()
    }

    #[test]
    fn an_older_configuration_leaves_the_newest_held_in_use_while_it_is_usable() {
        let newest = verified(1_000_000);
        let at = 1_000_000 + 3_600_000;
        assert_eq!(
            still_usable(Some(&newest), 1_000_000, at),
            Some(newest.clone())
        );
        // Not held (a new process): nothing to keep, the older one is refused.
        assert_eq!(still_usable(None, 1_000_000, at), None);
        // Held but not the newest accepted (a newer one was seen and lost): refused.
        assert_eq!(still_usable(Some(&newest), 2_000_000, at), None);
        // Held but expired: refused (the older one is never used either).
        assert_eq!(
            still_usable(Some(&newest), 1_000_000, 1_000_000 + 30 * 3_600_000),
            None
        );
    }
}
