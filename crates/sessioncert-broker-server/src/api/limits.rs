//! The broker's rate limits: token buckets keyed by a peer's network, an account or a
//! mail recipient, held in this process's memory and bounded in size.
//!
//! Each bucket holds up to `burst` tokens and gains one per `refill`; an action takes
//! one. A key whose bucket has filled up again is the same as an unseen key, so when the
//! table is full those are dropped first; if that is not enough the table is cleared
//! (everyone starts full again) rather than grow without bound.

use dashmap::DashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Keys tracked at most per table.
const MAX_TRACKED: usize = 100_000;

/// Token buckets, one per key.
pub(crate) struct TokenBuckets<K: Hash + Eq> {
    buckets: DashMap<K, (f64, Instant)>,
    burst: f64,
    refill: Duration,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    pub(crate) fn new(burst: u32, refill: Duration) -> Self {
        TokenBuckets {
            buckets: DashMap::new(),
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
        }
    }

    fn level_of(&self, stored: (f64, Instant), now: Instant) -> f64 {
        let refilled = now.duration_since(stored.1).as_secs_f64() / self.refill.as_secs_f64();
        (stored.0 + refilled).min(self.burst)
    }

    /// Tokens `key` has now.
    fn level(&self, key: &K, now: Instant) -> f64 {
        self.buckets
            .get(key)
            .map_or(self.burst, |b| self.level_of(*b, now))
    }

    /// Whether `key` has a token left (without taking it).
    pub(crate) fn allows(&self, key: &K) -> bool {
        self.level(key, Instant::now()) >= 1.0
    }

    /// Takes a token of `key` (down to none).
    pub(crate) fn take(&self, key: &K) {
        let now = Instant::now();
        self.prune(now);
        let mut e = self.buckets.entry(key.clone()).or_insert((self.burst, now));
        let level = self.level_of(*e, now);
        *e = ((level - 1.0).max(0.0), now);
    }

    /// Takes a token of `key` if it has one; `false` (nothing taken) if not. Check and
    /// take are one step: concurrent callers cannot share a token.
    pub(crate) fn try_take(&self, key: &K) -> bool {
        let now = Instant::now();
        self.prune(now);
        let mut e = self.buckets.entry(key.clone()).or_insert((self.burst, now));
        let level = self.level_of(*e, now);
        if level < 1.0 {
            return false;
        }
        *e = (level - 1.0, now);
        true
    }

    /// Gives back a token taken with [`TokenBuckets::try_take`] (the attempt it paid
    /// for succeeded).
    pub(crate) fn refund(&self, key: &K) {
        let now = Instant::now();
        if let Some(mut e) = self.buckets.get_mut(key) {
            let level = self.level_of(*e, now);
            *e = ((level + 1.0).min(self.burst), now);
        }
    }

    /// Gives `key` its full burst again (e.g. after a success).
    pub(crate) fn reset(&self, key: &K) {
        self.buckets.remove(key);
    }

    fn prune(&self, now: Instant) {
        if self.buckets.len() < MAX_TRACKED {
            return;
        }
        // Full buckets are the same as absent ones: drop them first.
        self.buckets
            .retain(|_, b| self.level_of(*b, now) < self.burst - 1e-9);
        if self.buckets.len() >= MAX_TRACKED {
            tracing::warn!(
                tracked = MAX_TRACKED,
                "broker rate-limit table full; starting it afresh"
            );
            self.buckets.clear();
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The network a peer's address counts in: its IPv4 /24 or its IPv6 /64 (one host
/// has a whole /64, and a rented /24 is as cheap as one address).
pub(crate) fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::from([o[0], o[1], o[2], 0])
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = a.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_refill_pace() {
        let b = TokenBuckets::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(b.try_take(&"k"));
        }
        assert!(!b.try_take(&"k") && !b.allows(&"k"));
        assert!(b.try_take(&"other"), "keys are separate");
        std::thread::sleep(Duration::from_millis(230));
        assert!(b.try_take(&"k"), "one token back after one refill period");
        assert!(!b.try_take(&"k"));
        b.refund(&"k");
        assert!(b.try_take(&"k"), "a refunded token can be taken again");
        assert!(!b.try_take(&"k"));
        b.reset(&"k");
        assert!(b.allows(&"k"));
        b.take(&"k");
        b.take(&"k");
        b.take(&"k");
        b.take(&"k");
        assert!(!b.allows(&"k"));
    }

    #[test]
    fn the_table_stays_bounded() {
        let b = TokenBuckets::new(2, Duration::from_secs(3600));
        for i in 0..(MAX_TRACKED + 10) {
            b.take(&i);
        }
        assert!(b.tracked() <= MAX_TRACKED, "{}", b.tracked());
    }

    #[test]
    fn networks_group_neighbours() {
        let n = |s: &str| network_of(s.parse().unwrap());
        assert_eq!(n("203.0.113.7"), n("203.0.113.200"));
        assert_ne!(n("203.0.113.7"), n("203.0.114.7"));
        assert_eq!(n("2001:db8:1:2:aaaa::1"), n("2001:db8:1:2:bbbb::9"));
        assert_ne!(n("2001:db8:1:2::1"), n("2001:db8:1:3::1"));
        assert_eq!(n("::ffff:203.0.113.7"), n("203.0.113.9"));
    }
}
