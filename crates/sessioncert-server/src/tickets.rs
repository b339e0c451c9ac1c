//! Tickets: the server's half of an unconfirmed handshake, sealed so that the client
//! can carry it and the server keeps nothing (PROTOCOL §6.5, §6.8).
//!
//! A ticket is `u8 key_id || nonce[24] || XChaCha20-Poly1305(ticket key, nonce,
//! ad = "sessioncert ticket" || key_id, plaintext)` with
//! `plaintext = u64 issued_at_ms || u64 expires_at_ms || u64 idle_timeout_ms ||
//! pending session export`. The ticket keys are random, made in memory, replaced every
//! [`TICKET_LIFETIME_MS`] (the previous one stays for one more period so tickets issued
//! just before a rotation still open) and never written anywhere: a restart invalidates
//! every outstanding ticket, and a copy of the server's disk opens none.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use sessioncert_proto::handshake::TICKET_LIFETIME_MS;
use std::sync::RwLock;
use zeroize::Zeroizing;

const AD_LABEL: &[u8] = b"sessioncert ticket";
const NONCE_LEN: usize = 24;

/// What a ticket carries besides the pending session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TicketTimes {
    pub(crate) issued_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) idle_timeout_ms: u64,
}

struct TicketKey {
    id: u8,
    cipher: XChaCha20Poly1305,
    made_at_ms: u64,
}

impl TicketKey {
    fn generate(id: u8, now_ms: u64) -> Result<Self, sessioncert_proto::ProtocolError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        sessioncert_proto::crypto::fill_random(raw.as_mut())?;
        Ok(TicketKey {
            id,
            cipher: XChaCha20Poly1305::new(raw.as_ref().into()),
            made_at_ms: now_ms,
        })
    }
}

struct Keys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

/// The server's ticket keys (in memory only).
pub(crate) struct TicketKeys {
    keys: RwLock<Keys>,
    /// Instances that share a session store derive each period's key from one seed kept
    /// (sealed) in the store, so a ticket issued by one instance opens at any other;
    /// `None`: random keys of this process only.
    seed: Option<Zeroizing<[u8; 32]>>,
}

/// The shared key of ticket period `period` (`now / TICKET_LIFETIME_MS`): HKDF-SHA256
/// of the seed, the period in the info. Its id is the period's low byte.
fn derive_shared(seed: &[u8; 32], period: u64) -> TicketKey {
    let mut raw = Zeroizing::new([0u8; 32]);
    let info = [SHARED_INFO, &period.to_be_bytes()[..]].concat();
    hkdf::Hkdf::<sha2::Sha256>::new(None, seed)
        .expand(&info, raw.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    TicketKey {
        id: period as u8,
        cipher: XChaCha20Poly1305::new(raw.as_ref().into()),
        made_at_ms: period.saturating_mul(TICKET_LIFETIME_MS),
    }
}

const SHARED_INFO: &[u8] = b"sessioncert/1 shared ticket key ";

impl TicketKeys {
    pub(crate) fn new(now_ms: u64) -> Result<Self, sessioncert_proto::ProtocolError> {
        Ok(TicketKeys {
            keys: RwLock::new(Keys {
                current: TicketKey::generate(0, now_ms)?,
                previous: None,
            }),
            seed: None,
        })
    }

    /// Keys derived from a seed every instance sharing a store holds: period `p`'s key
    /// is current during `[p, p + 1) × TICKET_LIFETIME_MS` and previous during the next
    /// period, at every instance alike.
    pub(crate) fn shared(seed: Zeroizing<[u8; 32]>, now_ms: u64) -> Self {
        let period = now_ms / TICKET_LIFETIME_MS;
        let keys = Keys {
            current: derive_shared(&seed, period),
            previous: period.checked_sub(1).map(|p| derive_shared(&seed, p)),
        };
        TicketKeys {
            keys: RwLock::new(keys),
            seed: Some(seed),
        }
    }

    /// Replaces the current key once it is a ticket lifetime old; the old one is kept
    /// for one more lifetime, the one before it is dropped.
    pub(crate) fn rotate_if_due(&self, now_ms: u64) {
        let due = {
            let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
            now_ms.saturating_sub(k.current.made_at_ms) >= TICKET_LIFETIME_MS
        };
        if !due {
            return;
        }
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if now_ms.saturating_sub(k.current.made_at_ms) < TICKET_LIFETIME_MS {
            return;
        }
        if let Some(seed) = &self.seed {
            let period = now_ms / TICKET_LIFETIME_MS;
            k.current = derive_shared(seed, period);
            k.previous = period.checked_sub(1).map(|p| derive_shared(seed, p));
            return;
        }
        match TicketKey::generate(k.current.id.wrapping_add(1), now_ms) {
            Ok(next) => {
                let old = std::mem::replace(&mut k.current, next);
                k.previous = Some(old);
            }
            Err(e) => tracing::error!(error = %e, "ticket key rotation failed"),
        }
    }

    /// Seals a pending session export into a ticket.
    pub(crate) fn seal(
        &self,
        times: TicketTimes,
        pending_export: &[u8],
    ) -> Result<Vec<u8>, sessioncert_proto::ProtocolError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(24 + pending_export.len()));
        plain.extend_from_slice(&times.issued_at_ms.to_be_bytes());
        plain.extend_from_slice(&times.expires_at_ms.to_be_bytes());
        plain.extend_from_slice(&times.idle_timeout_ms.to_be_bytes());
        plain.extend_from_slice(pending_export);
        let mut nonce = [0u8; NONCE_LEN];
        sessioncert_proto::crypto::fill_random(&mut nonce)?;
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let ad = [AD_LABEL, &[k.current.id]].concat();
        let ct = k
            .current
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plain,
                    aad: &ad,
                },
            )
            .map_err(|_| sessioncert_proto::ProtocolError::Crypto("ticket seal"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(k.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a ticket made by this process (or, with a shared seed, by any instance)
    /// within the last two key periods as of `now_ms`. `None` for anything else (forged,
    /// truncated, from another server or an earlier run). The keys move forward first:
    /// an instance that answered no handshake since the period changed must still open
    /// a ticket another instance issued in the new period.
    pub(crate) fn open(
        &self,
        ticket: &[u8],
        now_ms: u64,
    ) -> Option<(TicketTimes, Zeroizing<Vec<u8>>)> {
        if ticket.len() < 1 + NONCE_LEN + 16 + 24 {
            return None;
        }
        self.rotate_if_due(now_ms);
        let (id, rest) = (ticket[0], &ticket[1..]);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = [Some(&k.current), k.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == id)?;
        let ad = [AD_LABEL, &[id]].concat();
        let plain = Zeroizing::new(
            key.cipher
                .decrypt(nonce.into(), Payload { msg: ct, aad: &ad })
                .ok()?,
        );
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&plain[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let times = TicketTimes {
            issued_at_ms: u64_at(0),
            expires_at_ms: u64_at(8),
            idle_timeout_ms: u64_at(16),
        };
        Some((times, Zeroizing::new(plain[24..].to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TicketTimes = TicketTimes {
        issued_at_ms: 1,
        expires_at_ms: 2,
        idle_timeout_ms: 3,
    };

    #[test]
    fn tickets_open_only_here_only_unaltered_and_only_for_two_periods() {
        let keys = TicketKeys::new(0).unwrap();
        let t = keys.seal(T, b"pending").unwrap();
        let (times, export) = keys.open(&t, 0).unwrap();
        assert_eq!((times, export.as_slice()), (T, &b"pending"[..]));
        // Any flipped bit, any cut, another server's keys: nothing.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(keys.open(&bad, 0).is_none(), "bit flip at {i}");
        }
        assert!(keys.open(&t[..t.len() - 1], 0).is_none());
        assert!(TicketKeys::new(0).unwrap().open(&t, 0).is_none());
        // One rotation later it still opens; two rotations later it does not.
        keys.rotate_if_due(TICKET_LIFETIME_MS - 1);
        assert!(
            keys.open(&t, TICKET_LIFETIME_MS - 1).is_some(),
            "not yet rotated"
        );
        keys.rotate_if_due(TICKET_LIFETIME_MS);
        assert!(
            keys.open(&t, TICKET_LIFETIME_MS).is_some(),
            "previous key kept"
        );
        let t2 = keys.seal(T, b"second").unwrap();
        keys.rotate_if_due(2 * TICKET_LIFETIME_MS);
        assert!(
            keys.open(&t, 2 * TICKET_LIFETIME_MS).is_none(),
            "dropped after two periods"
        );
        assert!(keys.open(&t2, 2 * TICKET_LIFETIME_MS).is_some());
    }

    #[test]
    fn shared_tickets_open_at_every_instance_of_the_seed_and_only_for_two_periods() {
        let seed = || Zeroizing::new([7u8; 32]);
        let t0 = 10 * TICKET_LIFETIME_MS + 5;
        let a = TicketKeys::shared(seed(), t0);
        let b = TicketKeys::shared(seed(), t0 + 100);
        let t = a.seal(T, b"pending").unwrap();
        assert!(
            b.open(&t, t0 + 200).is_some(),
            "another instance of the seed opens it"
        );
        assert!(TicketKeys::shared(Zeroizing::new([8u8; 32]), t0)
            .open(&t, t0)
            .is_none());
        assert!(TicketKeys::new(t0).unwrap().open(&t, t0).is_none());
        // An instance started in the next period still opens it (previous key);
        // two periods later none does.
        let next = t0 + TICKET_LIFETIME_MS;
        let c = TicketKeys::shared(seed(), next);
        assert!(c.open(&t, next).is_some());
        // A ticket issued in the next period by an instance that moved on opens at one
        // that answered no handshake since (its keys move forward as it opens).
        let d = TicketKeys::shared(seed(), t0);
        let e = TicketKeys::shared(seed(), t0);
        d.rotate_if_due(next);
        let t_next = d.seal(T, b"pending").unwrap();
        assert!(e.open(&t_next, next).is_some());
        assert!(b.open(&t, next).is_some());
        assert!(b.open(&t, t0 + 2 * TICKET_LIFETIME_MS).is_none());
        assert!(TicketKeys::shared(seed(), t0 + 2 * TICKET_LIFETIME_MS)
            .open(&t, t0 + 2 * TICKET_LIFETIME_MS)
            .is_none());
    }

    proptest::proptest! {
        /// The ticket opener is fed bytes from the network (the `sessioncert-confirm`
        /// header, the confirm body): made-up tickets of any length, even carrying the
        /// live key id, never open and never panic, and a genuine ticket with any byte
        /// range replaced opens only if the bytes are unchanged.
        #[test]
        fn made_up_or_edited_tickets_never_open(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..200,
            patch in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40),
        ) {
            let keys = TicketKeys::new(0).unwrap();
            proptest::prop_assert!(keys.open(&junk, 0).is_none());
            let mut with_id = junk.clone();
            with_id.insert(0, 0);
            proptest::prop_assert!(keys.open(&with_id, 0).is_none());
            let t = keys.seal(T, b"pending export").unwrap();
            let mut edited = t.clone();
            let at = at % edited.len();
            let end = (at + patch.len()).min(edited.len());
            edited.splice(at..end, patch.iter().copied());
            proptest::prop_assert_eq!(keys.open(&edited, 0).is_some(), edited == t);
        }
    }
}
