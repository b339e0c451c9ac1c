//! Abuse limits: body size, handshake rate and live sessions per client address.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Limits applied to peers. Every refusal carries a clear error code.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest *buffered* sealed request body accepted (413 above): a request sent as
    /// one record is held whole before it is opened. Streamed requests (PROTOCOL §8.5)
    /// are not held whole and have their own limit, `max_stream_body_bytes`.
    pub max_body_bytes: usize,
    /// Largest streamed request body (plaintext bytes of the stream) a handler is given,
    /// unless its route sets its own with [`crate::seal::StreamLimit`]; `None`: no
    /// limit. Past it the handler's body yields an error. A stream holds one chunk
    /// (64 KiB) in memory whatever its size, so this bounds what a handler can be made
    /// to consume or store per request, not memory. Default 1 GiB: large uploads work
    /// out of the box, and a route that takes more (or must take less) says so.
    pub max_stream_body_bytes: Option<u64>,
    /// Largest response body read from a sealed handler for a session that did not
    /// negotiate streamed bodies: sealing it as one record holds the whole body, so a
    /// handler that produces more gets its client a sealed `500` instead. Streamed
    /// responses hold one chunk at a time and are not limited by this.
    pub max_response_bytes: usize,
    /// Bytes of sealed responses held at once, server-wide, until their peers have
    /// taken them: while more are held, new sealed requests get `503 unavailable`
    /// before they are opened (so nothing runs), and a peer that stops reading is cut
    /// by the listener's write stall timeout.
    pub max_inflight_response_bytes: usize,
    /// Sustained handshakes per second per client address (429 above).
    pub handshakes_per_sec: f64,
    /// Burst of handshakes per client address.
    pub handshake_burst: f64,
    /// Live sessions per client address (429 above).
    pub max_sessions_per_addr: u32,
    /// Sessions waiting for key confirmation, server-wide (429 above): bounds the memory
    /// a flood of unconfirmed handshakes can take.
    pub max_pending_sessions: usize,
    /// Live sessions held in memory, server-wide (429 above): a session takes about
    /// 2 KiB, so the default bounds the table near 1 GiB however many addresses a flood
    /// comes from.
    pub max_live_sessions: usize,
    /// Do not rate-limit loopback peers (local benchmarks, sidecars). Turn off when a
    /// local reverse proxy forwards internet traffic.
    pub exempt_loopback: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_stream_body_bytes: Some(DEFAULT_MAX_STREAM_BODY),
            max_response_bytes: 16 * 1024 * 1024,
            max_inflight_response_bytes: 128 * 1024 * 1024,
            handshakes_per_sec: 20.0,
            handshake_burst: 60.0,
            max_sessions_per_addr: 256,
            max_pending_sessions: 100_000,
            max_live_sessions: 500_000,
            exempt_loopback: false,
        }
    }
}

/// The default of [`Limits::max_stream_body_bytes`]: 1 GiB.
pub const DEFAULT_MAX_STREAM_BODY: u64 = 1024 * 1024 * 1024;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-address token buckets for handshakes.
#[derive(Default)]
pub(crate) struct HandshakeRate {
    buckets: DashMap<IpAddr, Bucket>,
}

impl HandshakeRate {
    /// Takes one token for `addr`; `Err(seconds to wait)` when empty.
    pub(crate) fn take(&self, addr: IpAddr, limits: &Limits) -> Result<(), u64> {
        let now = Instant::now();
        let mut b = self.buckets.entry(addr).or_insert(Bucket {
            tokens: limits.handshake_burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limits.handshakes_per_sec).min(limits.handshake_burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / limits.handshakes_per_sec.max(1e-9);
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// Drops buckets that have refilled completely (they carry no state).
    pub(crate) fn prune(&self, limits: &Limits) {
        let full_after = limits.handshake_burst / limits.handshakes_per_sec.max(1e-9);
        self.buckets
            .retain(|_, b| b.last.elapsed().as_secs_f64() < full_after);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let l = Limits {
            handshakes_per_sec: 1.0,
            handshake_burst: 3.0,
            ..Limits::default()
        };
        let r = HandshakeRate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(r.take(a, &l).is_ok());
        }
        assert!(r.take(a, &l).unwrap_err() >= 1);
        assert!(r.take(b, &l).is_ok(), "other addresses unaffected");
        assert_eq!(r.len(), 2);
    }
}
