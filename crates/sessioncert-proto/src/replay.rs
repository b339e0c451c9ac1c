//! The sliding replay window for client-to-server sequence numbers.
//!
//! Concurrent HTTP requests on one session can arrive out of order, so a strict
//! "greater than the last" rule would reject honest traffic. The window remembers the
//! highest sequence number accepted and a bitmap of the [`WINDOW`] numbers below it
//! (the RFC 4303 / RFC 6479 scheme): anything inside the window and not yet seen is
//! accepted once; anything older, or seen before, is refused.

use crate::codec::{Reader, Writer};
use crate::ProtocolError;

/// How many sequence numbers below the highest one are still accepted.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// The window state of one direction of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted sequence number plus one (0 = nothing accepted yet).
    top: u64,
    /// Bit `i` of the ring is set when `seq` with `seq % WINDOW == i` was accepted.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; WORDS],
        }
    }

    /// The highest accepted sequence number, if any.
    pub fn highest(&self) -> Option<u64> {
        self.top.checked_sub(1)
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = (seq % WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    /// Whether `seq` would be accepted now. Does not change the window, so a caller can
    /// check first, authenticate, and only then [`ReplayWindow::mark`].
    pub fn check(&self, seq: u64) -> Result<(), ProtocolError> {
        // The top of the window is stored as highest + 1, so u64::MAX can never be
        // accepted (sessions end at `MAX_MESSAGES`, far below).
        if seq == u64::MAX {
            return Err(ProtocolError::Replay(seq));
        }
        if seq >= self.top {
            return Ok(());
        }
        if self.top - seq > WINDOW {
            return Err(ProtocolError::Replay(seq));
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            return Err(ProtocolError::Replay(seq));
        }
        Ok(())
    }

    /// Records `seq` as seen. Fails (and changes nothing) if [`ReplayWindow::check`] would.
    pub fn mark(&mut self, seq: u64) -> Result<(), ProtocolError> {
        self.check(seq)?;
        if seq >= self.top {
            let advance = seq - self.top;
            if advance >= WINDOW - 1 {
                self.bits = [0; WORDS];
            } else {
                // Clear the slots of the numbers that slide into the window unseen.
                for s in self.top..=seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            self.top = seq + 1;
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] |= m;
        Ok(())
    }

    /// Byte encoding for storage: `u64 top || u64[16] bits`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u64(self.top);
        for w in self.bits {
            out.put_u64(w);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let top = r.u64()?;
        let mut bits = [0u64; WORDS];
        for w in bits.iter_mut() {
            *w = r.u64()?;
        }
        Ok(ReplayWindow { top, bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_then_replay() {
        let mut w = ReplayWindow::new();
        for s in 0..3000 {
            w.mark(s).unwrap();
            assert!(w.mark(s).is_err());
        }
        assert_eq!(w.highest(), Some(2999));
    }

    #[test]
    fn reorder_inside_window_accepted_outside_rejected() {
        let mut w = ReplayWindow::new();
        w.mark(5000).unwrap();
        w.mark(5000 - WINDOW + 1).unwrap();
        w.mark(4999).unwrap();
        assert!(w.check(5000 - WINDOW).is_err(), "just outside the window");
        assert!(w.check(0).is_err());
        assert!(w.check(4999).is_err(), "already seen");
        assert!(w.check(4998).is_ok());
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::new();
        w.mark(1).unwrap();
        w.mark(1 + WINDOW).unwrap();
        // 1 + WINDOW shares a slot with 1; slot must now mean the new number only.
        assert!(w.check(1).is_err(), "1 is now too old");
        assert!(w.check(2).is_ok());
        w.mark(10 * WINDOW).unwrap();
        for s in (9 * WINDOW + 1)..(10 * WINDOW) {
            assert!(w.check(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn extreme_sequence_numbers_do_not_overflow() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(u64::MAX).is_err());
        w.mark(u64::MAX - 1).unwrap();
        assert!(w.mark(u64::MAX - 1).is_err());
        assert!(w.mark(u64::MAX).is_err());
        assert!(w.check(0).is_err());
    }

    #[test]
    fn encoding_round_trip() {
        let mut w = ReplayWindow::new();
        for s in [3u64, 9, 700, 1500, 1499] {
            w.mark(s).unwrap();
        }
        let mut b = Vec::new();
        w.encode_into(&mut b);
        let mut r = Reader::new(&b, "w");
        assert_eq!(ReplayWindow::read(&mut r).unwrap(), w);
        r.finish().unwrap();
    }

    proptest! {
        /// Against a model (a set of everything accepted): a number is accepted iff it
        /// was never accepted and is within WINDOW of the highest accepted so far.
        #[test]
        fn matches_model(seqs in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut top: Option<u64> = None;
            for s in seqs {
                let fresh = !seen.contains(&s);
                let in_window = top.is_none_or(|t| s + WINDOW > t);
                let expect = fresh && in_window;
                prop_assert_eq!(w.mark(s).is_ok(), expect, "seq {}", s);
                if expect {
                    seen.insert(s);
                    top = Some(top.map_or(s, |t| t.max(s)));
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = Reader::new(&bytes, "w");
            let _ = ReplayWindow::read(&mut r);
        }
    }
}
