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
