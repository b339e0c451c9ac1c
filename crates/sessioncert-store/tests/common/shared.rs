//! The shared-store contract ([`ReplayAuthority::SharedStore`]): every property takes
//! two handles on one backend, standing for two server instances. Run against
//! `MemoryStore::shared()` (the model, in store.rs) and the Redis and PostgreSQL stores.

use std::sync::Arc;

use sessioncert_proto::{SessionId, SessionState};
use sessioncert_store::{
    MemoryStore, ReplayAuthority, RequestCheck, RequestMark, SessionProgress, SessionRecord,
    SessionStore, SessionWrite, StoreError,
};

use super::{id, record, secret};

/// One instance's handle.
pub type Store = Arc<dyn SessionStore>;

pub fn mark(n: u32, seq: u64, now_ms: u64) -> RequestMark {
    RequestMark {
        id: id(n),
        seq,
        now_ms,
        close: false,
    }
}

fn accepted(request_count: u64) -> RequestCheck {
    RequestCheck::Accepted { request_count }
}

async fn check(s: &Store, n: u32, seq: u64, now: u64) -> RequestCheck {
    s.check_request(mark(n, seq, now)).await.unwrap()
}

async fn load(s: &Store, n: u32) -> SessionRecord {
    s.load(&id(n)).await.unwrap().expect("session stored")
}

/// Both handles answer as a shared store, and are reachable.
pub async fn answers_as_a_shared_store(a: Store, b: Store) {
    for s in [&a, &b] {
        assert_eq!(s.replay_authority(), ReplayAuthority::SharedStore);
        s.ping().await.unwrap();
    }
}

/// `create` stores a live session once: the first record wins, from any instance, and
/// an ended session is never brought back.
pub async fn create_is_atomic_and_first_wins(a: Store, b: Store) {
    let first = record(1, SessionState::Established, 1_000);
    assert!(a.create(first.clone()).await.unwrap());
    let mut other = record(1, SessionState::Matching, 2_000);
    other.sealed_secrets = b"other".to_vec();
    assert!(!b.create(other.clone()).await.unwrap());
    assert!(!a.create(other).await.unwrap());
    assert_eq!(load(&b, 1).await, first);

    for state in [
        SessionState::Init,
        SessionState::Closed,
        SessionState::Expired,
    ] {
        let err = a.create(record(2, state, 1)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidState(s) if s == state),
            "{err}"
        );
    }
    assert_eq!(a.load(&id(2)).await.unwrap(), None);

    assert!(b.close(&id(1), 5_000).await.unwrap());
    assert!(!a
        .create(record(1, SessionState::Established, 6_000))
        .await
        .unwrap());
    let r = load(&a, 1).await;
    assert_eq!(r.state, SessionState::Closed);
    assert!(r.sealed_secrets.is_empty());

    // Raced from two instances: exactly one wins, and its record is the one stored.
    for n in 100..140u32 {
        let mut ra = record(n, SessionState::Matching, 1_000);
        ra.sealed_secrets = b"from-a".to_vec();
        let mut rb = record(n, SessionState::Established, 1_000);
        rb.sealed_secrets = b"from-b".to_vec();
        let (sa, sb) = (a.clone(), b.clone());
        let ta = tokio::spawn(async move { sa.create(ra).await.unwrap() });
        let tb = tokio::spawn(async move { sb.create(rb).await.unwrap() });
        let (wa, wb) = (ta.await.unwrap(), tb.await.unwrap());
        assert!(wa ^ wb, "#{n}: created by a: {wa}, by b: {wb}");
        let stored = load(&a, n).await;
        let want: &[u8] = if wa { b"from-a" } else { b"from-b" };
        assert_eq!(stored.sealed_secrets, want, "#{n}");
    }
}

/// The window of PROTOCOL §9, checked and marked in the store.
pub async fn check_request_follows_the_window(a: Store, b: Store) {
    assert_eq!(check(&a, 1, 0, 1_001).await, RequestCheck::Unknown);
    assert!(a
        .create(record(1, SessionState::Established, 1_000))
        .await
        .unwrap());
    assert_eq!(check(&a, 1, 0, 1_001).await, accepted(1));
    assert_eq!(check(&b, 1, 0, 1_002).await, RequestCheck::Replayed);
    assert_eq!(check(&b, 1, 5, 1_003).await, accepted(2));
    assert_eq!(
        check(&a, 1, 3, 1_004).await,
        accepted(3),
        "out of order, in window"
    );
    assert_eq!(check(&a, 1, 3, 1_005).await, RequestCheck::Replayed);
    assert_eq!(check(&a, 1, 4, 1_006).await, accepted(4));
    // A jump of more than the window clears it: the top is now 2001.
    assert_eq!(check(&b, 1, 2_000, 1_007).await, accepted(5));
    assert_eq!(
        check(&a, 1, 976, 1_008).await,
        RequestCheck::Replayed,
        "1025 below top"
    );
    assert_eq!(
        check(&a, 1, 977, 1_009).await,
        accepted(6),
        "1024 below top"
    );
    assert_eq!(check(&a, 1, 977, 1_010).await, RequestCheck::Replayed);
    assert_eq!(
        check(&a, 1, 5, 1_011).await,
        RequestCheck::Replayed,
        "too old"
    );
    assert_eq!(check(&a, 1, 1_999, 1_012).await, accepted(7));
    // A step inside the window clears only the slots it slides over.
    assert_eq!(check(&a, 1, 2_500, 1_013).await, accepted(8));
    assert_eq!(
        check(&a, 1, 1_999, 1_014).await,
        RequestCheck::Replayed,
        "still seen"
    );
    assert_eq!(check(&a, 1, 2_499, 1_015).await, accepted(9));
    assert_eq!(
        check(&a, 1, 1_476, 1_016).await,
        RequestCheck::Replayed,
        "1025 below top"
    );
    assert_eq!(
        check(&a, 1, 1_477, 1_016).await,
        accepted(10),
        "1024 below top"
    );
    // The extremes of u64 are exact.
    assert_eq!(check(&a, 1, u64::MAX, 1_017).await, RequestCheck::Replayed);
    assert_eq!(check(&a, 1, u64::MAX - 1, 1_018).await, accepted(11));
    assert_eq!(
        check(&b, 1, u64::MAX - 1, 1_019).await,
        RequestCheck::Replayed
    );
    assert_eq!(check(&b, 1, u64::MAX - 2, 1_020).await, accepted(12));
    assert_eq!(
        check(&b, 1, u64::MAX - 1025, 1_021).await,
        RequestCheck::Replayed
    );
    assert_eq!(check(&b, 1, u64::MAX - 1024, 1_022).await, accepted(13));
    assert_eq!(check(&b, 1, 0, 1_023).await, RequestCheck::Replayed);

    // Last use never moves backwards (instances' clocks differ); the count is stored.
    assert_eq!(check(&a, 1, u64::MAX - 3, 900).await, accepted(14));
    let r = load(&b, 1).await;
    assert_eq!((r.last_used_at_ms, r.request_count), (1_022, 14));
    assert_eq!(r.state, SessionState::Established);
    assert_eq!(
        r.sealed_secrets,
        secret(1),
        "a check never touches the secrets"
    );

    // A slide of less than the window clears exactly the slots it passes: once the
    // top passes 1034, slot 10 means 1034, no longer 10.
    assert!(b
        .create(record(3, SessionState::Established, 1_000))
        .await
        .unwrap());
    assert_eq!(check(&a, 3, 10, 1_100).await, accepted(1));
    assert_eq!(
        check(&b, 3, 1_030, 1_100).await,
        accepted(2),
        "slide of 1020"
    );
    assert_eq!(
        check(&a, 3, 10, 1_100).await,
        RequestCheck::Replayed,
        "still in window"
    );
    assert_eq!(check(&b, 3, 1_040, 1_100).await, accepted(3), "slide of 10");
    assert_eq!(
        check(&a, 3, 1_034, 1_100).await,
        accepted(4),
        "slot 10 was cleared"
    );
    assert_eq!(
        check(&a, 3, 1_029, 1_100).await,
        accepted(5),
        "slot 5 was cleared"
    );
    assert_eq!(check(&a, 3, 1_034, 1_100).await, RequestCheck::Replayed);
    assert_eq!(
        check(&a, 3, 10, 1_100).await,
        RequestCheck::Replayed,
        "too old"
    );

    // A Matching session is live: accepted, and it stays Matching.
    assert!(a
        .create(record(2, SessionState::Matching, 1_000))
        .await
        .unwrap());
    assert_eq!(check(&b, 2, 7, 1_100).await, accepted(1));
    assert_eq!(load(&a, 2).await.state, SessionState::Matching);
}

/// A close, by an operator or by the session's own last request, ends it everywhere.
pub async fn close_then_check_is_ended(a: Store, b: Store) {
    for n in [1, 2] {
        assert!(a
            .create(record(n, SessionState::Established, 1_000))
            .await
            .unwrap());
        assert_eq!(check(&a, n, 10, 1_100).await, accepted(1));
    }
    assert!(b.close(&id(1), 2_000).await.unwrap());
    assert_eq!(
        check(&a, 1, 11, 2_100).await,
        RequestCheck::Ended(SessionState::Closed)
    );
    // Rule 1 first: a number that ran is refused as a replay, never tagged as ended.
    assert_eq!(check(&a, 1, 10, 2_100).await, RequestCheck::Replayed);
    assert_eq!(
        check(&b, 1, 11, 2_200).await,
        RequestCheck::Ended(SessionState::Closed),
        "a refused number is never marked"
    );

    let closing = RequestMark {
        close: true,
        ..mark(2, 11, 3_000)
    };
    assert_eq!(b.check_request(closing).await.unwrap(), accepted(2));
    assert_eq!(
        b.check_request(closing).await.unwrap(),
        RequestCheck::Replayed
    );
    assert_eq!(
        check(&a, 2, 12, 3_001).await,
        RequestCheck::Ended(SessionState::Closed)
    );
    let r = load(&a, 2).await;
    assert_eq!((r.state, r.request_count), (SessionState::Closed, 2));
    assert!(r.sealed_secrets.is_empty(), "secrets wiped at the close");
    assert!(!a.close(&id(2), 4_000).await.unwrap());
    assert_eq!(a.ended_since(0).await.unwrap(), vec![id(1), id(2)]);
    assert_eq!(b.ended_since(2_001).await.unwrap(), vec![id(2)]);
    let listed = b.list(false).await.unwrap();
    let s2 = listed.iter().find(|s| s.id == id(2)).unwrap();
    assert_eq!(s2.ended_at_ms, Some(3_000));
    assert!(a.list(true).await.unwrap().is_empty());
    assert!(b.load_live().await.unwrap().is_empty());
}

/// Lifetime and idle timeout end a session at the check that finds them run out.
pub async fn idle_and_lifetime_expiry(a: Store, b: Store) {
    // 1: lifetime ends at 5_000.
    let mut r = record(1, SessionState::Established, 1_000);
    r.expires_at_ms = 5_000;
    r.idle_timeout_ms = u64::MAX;
    assert!(a.create(r).await.unwrap());
    assert_eq!(check(&a, 1, 0, 4_999).await, accepted(1));
    assert_eq!(
        check(&b, 1, 1, 5_000).await,
        RequestCheck::Ended(SessionState::Expired)
    );
    let r1 = load(&a, 1).await;
    assert_eq!(r1.state, SessionState::Expired);
    assert!(r1.sealed_secrets.is_empty(), "secrets wiped at the expiry");
    assert_eq!(r1.request_count, 1);
    assert_eq!(check(&a, 1, 0, 5_001).await, RequestCheck::Replayed);
    assert_eq!(
        check(&a, 1, 1, 5_001).await,
        RequestCheck::Ended(SessionState::Expired)
    );

    // 2: idle timeout of 100 ms, counted from the last accepted request.
    let mut r = record(2, SessionState::Established, 10_000);
    r.idle_timeout_ms = 100;
    assert!(b.create(r).await.unwrap());
    assert_eq!(check(&a, 2, 0, 10_099).await, accepted(1));
    assert_eq!(check(&b, 2, 1, 10_198).await, accepted(2));
    assert_eq!(
        check(&a, 2, 2, 10_298).await,
        RequestCheck::Ended(SessionState::Expired)
    );
    assert_eq!(load(&b, 2).await.state, SessionState::Expired);

    // 3: "never" values (u64::MAX) never expire, whatever the clock says.
    let mut r = record(3, SessionState::Matching, 1);
    r.expires_at_ms = u64::MAX;
    r.idle_timeout_ms = u64::MAX;
    assert!(a.create(r).await.unwrap());
    assert_eq!(check(&b, 3, 0, 1u64 << 60).await, accepted(1));

    let mut ended = a.ended_since(0).await.unwrap();
    ended.sort();
    assert_eq!(ended, vec![id(1), id(2)]);
    assert_eq!(b.ended_since(10_298).await.unwrap(), vec![id(2)]);
    let live: Vec<SessionId> = a.load_live().await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(live, vec![id(3)]);
}

/// A server ends its sessions with `SessionWrite::End` carrying remains; when a check
/// already ended the session, the remains still land, and state and end time stay.
pub async fn end_after_check_stores_remains(a: Store, b: Store) {
    let mut r = record(1, SessionState::Established, 1_000);
    r.expires_at_ms = 5_000;
    assert!(a.create(r).await.unwrap());
    assert_eq!(
        check(&b, 1, 0, 6_000).await,
        RequestCheck::Ended(SessionState::Expired)
    );
    let end = |state, at_ms, remains: Vec<u8>| SessionWrite::End {
        id: id(1),
        state,
        at_ms,
        remains,
    };
    a.save(vec![end(SessionState::Closed, 6_005, vec![7; 40])])
        .await
        .unwrap();
    let r = load(&b, 1).await;
    assert_eq!(
        (r.state, r.sealed_secrets.clone()),
        (SessionState::Expired, vec![7; 40])
    );
    let ended = b.load_ended(6_000).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].0.id, ended[0].1), (id(1), 6_000), "end time kept");
    assert!(b.load_ended(6_001).await.unwrap().is_empty());
    // The first remains stay.
    b.save(vec![end(SessionState::Expired, 7_000, vec![9; 40])])
        .await
        .unwrap();
    assert_eq!(load(&a, 1).await.sealed_secrets, vec![7; 40]);
    assert_eq!(a.ended_since(0).await.unwrap(), vec![id(1)]);

    // Same after a close by the session's last request.
    assert!(a
        .create(record(2, SessionState::Established, 1_000))
        .await
        .unwrap());
    let closing = RequestMark {
        close: true,
        ..mark(2, 0, 2_000)
    };
    assert_eq!(a.check_request(closing).await.unwrap(), accepted(1));
    b.save(vec![SessionWrite::End {
        id: id(2),
        state: SessionState::Closed,
        at_ms: 2_001,
        remains: vec![5; 16],
    }])
    .await
    .unwrap();
    let ended = a.load_ended(0).await.unwrap();
    let two = ended.iter().find(|(r, _)| r.id == id(2)).unwrap();
    assert_eq!((two.0.state, two.1), (SessionState::Closed, 2_000));
    assert_eq!(two.0.sealed_secrets, vec![5; 16]);
}

/// `Progress` updates a live session's fields but never its window, and never brings
/// an ended session back.
pub async fn progress_never_touches_the_window_or_resurrects(a: Store, b: Store) {
    assert!(a
        .create(record(1, SessionState::Matching, 1_000))
        .await
        .unwrap());
    for seq in 0..10 {
        assert_eq!(check(&a, 1, seq, 1_100).await, accepted(seq + 1));
    }
    let progress = |state, at, count, secrets: &[u8]| {
        SessionWrite::Progress(SessionProgress {
            id: id(1),
            state,
            last_used_at_ms: at,
            request_count: count,
            sealed_secrets: secrets.to_vec(),
        })
    };
    b.save(vec![progress(SessionState::Established, 1_200, 99, b"s2")])
        .await
        .unwrap();
    let r = load(&a, 1).await;
    assert_eq!(
        (
            r.state,
            r.last_used_at_ms,
            r.request_count,
            &r.sealed_secrets[..]
        ),
        (SessionState::Established, 1_200, 99, &b"s2"[..])
    );
    for seq in 0..10 {
        assert_eq!(
            check(&b, 1, seq, 1_300).await,
            RequestCheck::Replayed,
            "#{seq}"
        );
    }
    assert_eq!(check(&b, 1, 10, 1_300).await, accepted(100));

    assert!(a.close(&id(1), 1_400).await.unwrap());
    b.save(vec![progress(SessionState::Established, 1_500, 7, b"s3")])
        .await
        .unwrap();
    let r = load(&a, 1).await;
    assert_eq!((r.state, r.request_count), (SessionState::Closed, 100));
    assert!(r.sealed_secrets.is_empty());
    assert_eq!(
        check(&a, 1, 11, 1_600).await,
        RequestCheck::Ended(SessionState::Closed)
    );
}

/// The same request fired at both instances from 32 tasks at once runs exactly once;
/// 32 different ones all run.
pub async fn one_of_32_concurrent_marks_runs(a: Store, b: Store) {
    assert!(a
        .create(record(1, SessionState::Established, 1_000))
        .await
        .unwrap());
    let mut total = 0;
    for seq in [0u64, 1, 5_000, 4_999, 4_500] {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { s.check_request(mark(1, seq, 2_000)).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let ok = answers
            .iter()
            .filter(|c| matches!(c, RequestCheck::Accepted { .. }))
            .count();
        assert_eq!(ok, 1, "seq {seq}: {answers:?}");
        assert!(answers
            .iter()
            .all(|c| matches!(c, RequestCheck::Accepted { .. } | RequestCheck::Replayed)));
        total += 1;
    }
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.check_request(mark(1, 5_001 + i, 2_000)).await.unwrap() })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            RequestCheck::Accepted { request_count } => counts.push(request_count),
            other => panic!("{other:?}"),
        }
    }
    total += 32;
    counts.sort_unstable();
    assert_eq!(
        counts,
        ((total - 31)..=total).collect::<Vec<_>>(),
        "each count once"
    );
    assert_eq!(load(&b, 1).await.request_count, total);
}

/// What one instance writes, the other sees at once; shared values agree; one
/// instance's shutdown does not stop the other.
pub async fn instances_see_each_others_writes(a: Store, b: Store) {
    assert!(a
        .create(record(1, SessionState::Matching, 1_000))
        .await
        .unwrap());
    assert_eq!(load(&b, 1).await.state, SessionState::Matching);
    assert_eq!(check(&b, 1, 0, 1_100).await, accepted(1));
    assert_eq!(check(&a, 1, 0, 1_101).await, RequestCheck::Replayed);
    b.save(vec![SessionWrite::Progress(SessionProgress {
        id: id(1),
        state: SessionState::Established,
        last_used_at_ms: 1_200,
        request_count: 1,
        sealed_secrets: b"confirmed".to_vec(),
    })])
    .await
    .unwrap();
    assert_eq!(load(&a, 1).await.state, SessionState::Established);
    assert_eq!(a.list(true).await.unwrap().len(), 1);

    assert_eq!(a.shared_value("seed", b"A".to_vec()).await.unwrap(), b"A");
    assert_eq!(b.shared_value("seed", b"B".to_vec()).await.unwrap(), b"A");
    assert_eq!(
        a.shared_value("other", vec![]).await.unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(
        b.shared_value("other", b"x".to_vec()).await.unwrap(),
        Vec::<u8>::new()
    );
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.shared_value("race", vec![i; 32]).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert!(got.iter().all(|v| v == &got[0]), "{got:?}");
    assert!(got[0].iter().all(|&x| x == got[0][0]) && got[0].len() == 32);

    a.shutdown().await.unwrap();
    assert_eq!(check(&b, 1, 1, 1_300).await, accepted(2));
    assert!(b.close(&id(1), 1_400).await.unwrap());
    assert_eq!(
        check(&a, 1, 2, 1_500).await,
        RequestCheck::Ended(SessionState::Closed),
        "closed anywhere, closed everywhere"
    );
    assert_eq!(a.ended_since(1_400).await.unwrap(), vec![id(1)]);
}

// ---------------------------------------------------------------- against the model

/// splitmix64: a seeded, dependency-free random source.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Runs `steps` random operations (mostly request checks: in order, reordered, replayed,
/// too old, slides within and past the window, extremes of u64; some closes, progress,
/// ends, sweeps, on both instances, with clocks that go back a little) on the backend
/// and on `MemoryStore::shared()`, and requires the same answers and the same stored
/// state. A session that ends is replaced by a new one, so most checks meet live ones.
pub async fn matches_the_model(a: Store, b: Store, seed: u64, steps: usize) {
    const SLOTS: u32 = 5;
    let model = MemoryStore::shared();
    let mut rng = Rng::new(seed);
    let mut now: u64 = 1_000_000;
    let mut live = [0u32; SLOTS as usize]; // each slot's current session number
    let mut cursor = [0u64; SLOTS as usize];
    let mut all = Vec::new();
    let mut next_id = 0u32;
    let mut tally = [0usize; 4]; // accepted, replayed, ended, unknown
    async fn fresh(rng: &mut Rng, n: u32, now: u64, model: &MemoryStore, s: &Store) {
        let mut r = record(n, SessionState::Established, now);
        if rng.chance(30) {
            r.state = SessionState::Matching;
        }
        r.expires_at_ms = if rng.chance(20) {
            u64::MAX
        } else {
            now + 5_000 + rng.below(60_000)
        };
        r.idle_timeout_ms = if rng.chance(30) {
            u64::MAX
        } else {
            800 + rng.below(4_000)
        };
        assert!(model.create(r.clone()).await.unwrap());
        assert!(s.create(r).await.unwrap());
    }
    for slot in live.iter_mut() {
        *slot = next_id;
        all.push(next_id);
        fresh(&mut rng, next_id, now, &model, &a).await;
        next_id += 1;
    }
    for step in 0..steps {
        let s = if step % 2 == 0 { &a } else { &b };
        now = if rng.chance(10) {
            now - rng.below(50)
        } else {
            now + rng.below(40)
        };
        let slot = rng.below(u64::from(SLOTS)) as usize;
        // Now and then an id the store never saw, or an earlier (mostly ended) session.
        let n = if rng.chance(2) {
            1_000_000
        } else if rng.chance(5) {
            all[rng.below(all.len() as u64) as usize]
        } else {
            live[slot]
        };
        let c = &mut cursor[slot];
        let op = rng.below(1_000);
        if op < 940 {
            let seq = match rng.below(10) {
                0..=4 => {
                    *c += 1 + rng.below(2);
                    *c
                }
                5 | 6 => c.saturating_sub(rng.below(1_100)),
                // Slides: mostly within the window (the ring's stale bits must be
                // cleared), some past it.
                7 => {
                    *c += if rng.chance(15) {
                        1_023 + rng.below(2_000)
                    } else {
                        1 + rng.below(600)
                    };
                    *c
                }
                8 => rng.below(*c + 2),
                // Rarely the extremes of u64: once one is accepted, every ordinary
                // number is too old for that session.
                _ if rng.chance(3) => {
                    *c = u64::MAX - 3; // this session is done with: see below
                    u64::MAX - rng.below(3)
                }
                _ => {
                    *c += 1;
                    *c
                }
            };
            let m = RequestMark {
                id: id(n),
                seq,
                now_ms: now,
                close: rng.chance(1) && rng.chance(50),
            };
            let want = model.check_request(m).await.unwrap();
            let got = s.check_request(m).await.unwrap();
            assert_eq!(got, want, "step {step} (seed {seed}): {m:?}");
            tally[match got {
                RequestCheck::Accepted { .. } => 0,
                RequestCheck::Replayed => 1,
                RequestCheck::Ended(_) => 2,
                RequestCheck::Unknown => 3,
            }] += 1;
        } else if op < 955 {
            let want = model.close(&id(n), now).await.unwrap();
            let got = s.close(&id(n), now).await.unwrap();
            assert_eq!(got, want, "step {step} (seed {seed}): close #{n}");
        } else if op < 990 {
            let what = if op < 975 {
                let mut secrets = vec![0u8; rng.below(40) as usize];
                secrets.iter_mut().for_each(|b| *b = rng.next() as u8);
                SessionWrite::Progress(SessionProgress {
                    id: id(n),
                    state: if rng.chance(50) {
                        SessionState::Established
                    } else {
                        SessionState::Matching
                    },
                    last_used_at_ms: now,
                    request_count: rng.below(1 << 40),
                    sealed_secrets: secrets,
                })
            } else {
                SessionWrite::End {
                    id: id(n),
                    state: if rng.chance(50) {
                        SessionState::Closed
                    } else {
                        SessionState::Expired
                    },
                    at_ms: now,
                    remains: if rng.chance(50) {
                        Vec::new()
                    } else {
                        vec![rng.next() as u8; 24]
                    },
                }
            };
            model.save(vec![what.clone()]).await.unwrap();
            s.save(vec![what]).await.unwrap();
        } else {
            let ttl = rng.below(5_000);
            let want = model.sweep(now, ttl, u64::MAX).await.unwrap();
            let got = s.sweep(now, ttl, u64::MAX).await.unwrap();
            assert_eq!(got, want, "step {step} (seed {seed}): sweep");
        }
        // A session that ended (or went out of reach) gets a successor.
        let current = live[slot];
        let ended = model
            .load(&id(current))
            .await
            .unwrap()
            .is_none_or(|r| !r.state.is_live());
        if ended || *c > u64::MAX / 2 {
            live[slot] = next_id;
            cursor[slot] = 0;
            all.push(next_id);
            fresh(&mut rng, next_id, now, &model, s).await;
            next_id += 1;
        }
        if step % 128 == 0 {
            same_state(&model, &b, &all, &format!("step {step} (seed {seed})")).await;
        }
    }
    same_state(&model, &a, &all, &format!("end (seed {seed})")).await;
    // The run exercised what it is for: live sessions, both answers of the window.
    eprintln!("seed {seed}: {} sessions, answers {tally:?}", all.len());
    assert!(
        all.len() < steps / 10,
        "{} sessions in {steps} steps",
        all.len()
    );
    assert!(
        tally[0] > steps / 2 && tally[1] > steps / 20 && tally[2] > steps / 100,
        "{tally:?}"
    );
}

async fn same_state(model: &MemoryStore, s: &Store, ids: &[u32], when: &str) {
    for &n in ids {
        let want = model.load(&id(n)).await.unwrap();
        let got = s.load(&id(n)).await.unwrap();
        // Only what the shared rule changes (a backend may store "never" differently).
        let key = |r: Option<SessionRecord>| {
            r.map(|r| {
                (
                    r.state,
                    r.last_used_at_ms,
                    r.request_count,
                    r.sealed_secrets,
                )
            })
        };
        assert_eq!(key(got), key(want), "{when}: session #{n}");
    }
    assert_eq!(
        s.ended_since(0).await.unwrap(),
        model.ended_since(0).await.unwrap(),
        "{when}: ended_since"
    );
    let live = |v: Vec<sessioncert_store::SessionSummary>| {
        v.into_iter()
            .map(|s| (s.id, s.state, s.ended_at_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        live(s.list(false).await.unwrap()),
        live(model.list(false).await.unwrap()),
        "{when}: list"
    );
}

/// Seeds for [`matches_the_model`]: a fixed set, or `SESSIONCERT_TEST_SEED` to repeat one.
pub fn seeds() -> Vec<u64> {
    match std::env::var("SESSIONCERT_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("SESSIONCERT_TEST_SEED is a number")],
        Err(_) => vec![1, 2, 0x5EED, 0xC0FFEE],
    }
}

/// Runs every shared-contract property with handles from `pair`, each on a fresh,
/// empty backend namespace.
#[macro_export]
macro_rules! shared_contract {
    ($pair:ident) => {
        mod shared_contract {
            use super::common::shared;
            $crate::shared_contract!(@each $pair;
                answers_as_a_shared_store,
                create_is_atomic_and_first_wins,
                check_request_follows_the_window,
                close_then_check_is_ended,
                idle_and_lifetime_expiry,
                end_after_check_stores_remains,
                progress_never_touches_the_window_or_resurrects,
                one_of_32_concurrent_marks_runs,
                instances_see_each_others_writes,
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn matches_the_model() {
                for seed in shared::seeds() {
                    let (a, b, _guard) = super::$pair().await;
                    shared::matches_the_model(a, b, seed, 2_500).await;
                }
            }
        }
    };
    (@each $pair:ident; $($prop:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $prop() {
            let (a, b, _guard) = super::$pair().await;
            shared::$prop(a, b).await;
        }
    )*};
}
