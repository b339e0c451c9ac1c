//! What every backend's tests share: helpers, and the behaviour every
//! `SessionStore` must show (run by store.rs, redis.rs and postgres.rs).
#![allow(dead_code)] // each test binary uses a different part

pub mod shared;

use sessioncert_proto::{SessionId, SessionState};
use sessioncert_store::{SessionProgress, SessionRecord, SessionStore, SessionWrite, StoreError};

pub fn id(n: u32) -> SessionId {
    let mut b = [0xA5u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    SessionId(b)
}

/// Distinctive bytes, easy to look for in output and on disk.
pub fn secret(n: u32) -> Vec<u8> {
    format!("SEALED-SECRET-{n:08}-").repeat(3).into_bytes()
}

pub fn record(n: u32, state: SessionState, created_at_ms: u64) -> SessionRecord {
    SessionRecord {
        id: id(n),
        state,
        version: 1,
        suite: "AES-256-GCM".into(),
        client_addr: Some(format!("192.0.2.{}:443", n % 250)),
        created_at_ms,
        last_used_at_ms: created_at_ms,
        expires_at_ms: created_at_ms + 3_600_000,
        idle_timeout_ms: 600_000,
        request_count: 0,
        sealed_secrets: secret(n),
    }
}

pub fn progress(n: u32, state: SessionState, at: u64, count: u64) -> SessionProgress {
    SessionProgress {
        id: id(n),
        state,
        last_used_at_ms: at,
        request_count: count,
        sealed_secrets: secret(n + 1_000_000 + count as u32),
    }
}

/// One-write shorthands over `save` (each write its own durable batch).
#[async_trait::async_trait]
pub trait SingleWrites {
    async fn insert(&self, r: SessionRecord) -> Result<(), StoreError>;
    async fn record_progress(&self, p: SessionProgress) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl<S: SessionStore + ?Sized> SingleWrites for S {
    async fn insert(&self, r: SessionRecord) -> Result<(), StoreError> {
        self.save(vec![SessionWrite::Insert(r)]).await
    }
    async fn record_progress(&self, p: SessionProgress) -> Result<(), StoreError> {
        self.save(vec![SessionWrite::Progress(p)]).await
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
// ---------------------------------------------------------------- properties

pub async fn insert_load_round_trip(store: &dyn SessionStore) {
    let a = record(1, SessionState::Established, 1_000);
    let mut b = record(2, SessionState::Matching, 2_000);
    b.client_addr = None;
    b.version = u16::MAX;
    b.expires_at_ms = u64::MAX / 4;
    store.insert(a.clone()).await.unwrap();
    store.insert(b.clone()).await.unwrap();

    assert_eq!(store.load(&id(1)).await.unwrap(), Some(a.clone()));
    assert_eq!(store.load(&id(2)).await.unwrap(), Some(b));
    assert_eq!(store.load(&id(3)).await.unwrap(), None);

    // Only live states can be inserted.
    for state in [
        SessionState::Init,
        SessionState::Expired,
        SessionState::Closed,
    ] {
        let err = store.insert(record(4, state, 1)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidState(s) if s == state),
            "{err}"
        );
    }
    assert_eq!(store.load(&id(4)).await.unwrap(), None);

    // Re-inserting an existing id changes nothing.
    let mut again = record(1, SessionState::Matching, 9_999);
    again.sealed_secrets = b"other".to_vec();
    store.insert(again).await.unwrap();
    assert_eq!(store.load(&id(1)).await.unwrap(), Some(a));
}

pub async fn progress_updates_fields_and_establishes(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Matching, 1_000))
        .await
        .unwrap();

    store
        .record_progress(progress(1, SessionState::Matching, 1_500, 1))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Matching);
    assert_eq!((r.last_used_at_ms, r.request_count), (1_500, 1));
    assert_eq!(
        r.sealed_secrets,
        progress(1, SessionState::Matching, 0, 1).sealed_secrets
    );

    store
        .record_progress(progress(1, SessionState::Established, 2_000, 2))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (2_000, 2));

    // Never back to Matching, even when the updates share a batch.
    store
        .record_progress(progress(1, SessionState::Matching, 2_500, 3))
        .await
        .unwrap();
    store
        .record_progress(progress(1, SessionState::Matching, 3_000, 4))
        .await
        .unwrap();
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (3_000, 4));
    assert_eq!(
        r.sealed_secrets,
        progress(1, SessionState::Matching, 0, 4).sealed_secrets
    );
    // Unchanged fields stay.
    assert_eq!(r.created_at_ms, 1_000);
    assert_eq!(r.suite, "AES-256-GCM");

    // Same when the updates are queued back to back (one write batch in SQLite).
    store
        .insert(record(2, SessionState::Matching, 1_000))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Established, 1_100, 1))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Matching, 1_200, 2))
        .await
        .unwrap();
    let r = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Established);
    assert_eq!((r.last_used_at_ms, r.request_count), (1_200, 2));

    // Progress for an unknown session creates nothing; non-live states are refused.
    store
        .record_progress(progress(7, SessionState::Established, 1, 1))
        .await
        .unwrap();
    assert_eq!(store.load(&id(7)).await.unwrap(), None);
    let err = store
        .record_progress(progress(1, SessionState::Closed, 1, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidState(SessionState::Closed)
    ));
    assert_eq!(store.load(&id(7)).await.unwrap(), None);
}

pub async fn progress_does_not_resurrect_ended_sessions(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Established, 1_000))
        .await
        .unwrap();
    assert!(store.close(&id(1), 5_000).await.unwrap());
    assert!(!store.close(&id(1), 6_000).await.unwrap(), "already closed");
    assert!(!store.close(&id(9), 6_000).await.unwrap(), "unknown");

    // Expire #2 by lifetime.
    assert_eq!(
        store
            .sweep(1_000 + 3_600_000, u64::MAX, u64::MAX)
            .await
            .unwrap(),
        1
    );

    for (n, state) in [(1, SessionState::Closed), (2, SessionState::Expired)] {
        store
            .record_progress(progress(n, SessionState::Established, 7_000, 42))
            .await
            .unwrap();
        store
            .record_progress(progress(n, SessionState::Matching, 8_000, 43))
            .await
            .unwrap();
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, state);
        assert!(r.sealed_secrets.is_empty(), "secrets came back: {r:?}");
        assert_eq!(r.request_count, 0);
        assert!(!store.close(&id(n), 9_000).await.unwrap());
    }
    assert!(store.list(true).await.unwrap().is_empty());
}

pub async fn close_wipes_secrets_and_shows_in_ended_since(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Matching, 1_000))
        .await
        .unwrap();
    assert!(store.close(&id(1), 5_000).await.unwrap());

    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!(r.state, SessionState::Closed);
    assert!(r.sealed_secrets.is_empty());
    let untouched = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(untouched.sealed_secrets, secret(2));

    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(1)]);
    assert_eq!(store.ended_since(5_000).await.unwrap(), vec![id(1)]);
    assert!(store.ended_since(5_001).await.unwrap().is_empty());

    // A Matching session can be closed too.
    assert!(store.close(&id(2), 6_000).await.unwrap());
    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(1), id(2)]);
    assert_eq!(store.ended_since(5_500).await.unwrap(), vec![id(2)]);

    let all = store.list(false).await.unwrap();
    let s1 = all.iter().find(|s| s.id == id(1)).unwrap();
    assert_eq!(s1.ended_at_ms, Some(5_000));
}

pub async fn list_filters_and_never_shows_secrets(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .insert(record(2, SessionState::Matching, 3_000))
        .await
        .unwrap();
    store
        .insert(record(3, SessionState::Established, 2_000))
        .await
        .unwrap();
    store
        .record_progress(progress(2, SessionState::Established, 3_500, 5))
        .await
        .unwrap();
    assert!(store.close(&id(3), 4_000).await.unwrap());

    let all = store.list(false).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id(2), id(3), id(1)], "newest first");
    assert_eq!(all[0].state, SessionState::Established);
    assert_eq!(all[0].request_count, 5);
    assert_eq!(all[0].ended_at_ms, None);
    assert_eq!(all[1].state, SessionState::Closed);

    let live = store.list(true).await.unwrap();
    let ids: Vec<_> = live.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![id(2), id(1)]);
    assert!(live.iter().all(|s| s.state.is_live()));

    // No secret bytes anywhere an operator looks.
    let rec = store.load(&id(1)).await.unwrap().unwrap();
    let prog = progress(1, SessionState::Established, 1, 1);
    let json = serde_json::to_string(&all).unwrap();
    let outputs = [
        format!("{all:?}"),
        format!("{rec:?}"),
        format!("{prog:?}"),
        json.clone(),
    ];
    for out in &outputs {
        assert!(!out.contains("SEALED-SECRET"), "{out}");
        for n in 1..=3 {
            let bytes = format!("{:?}", &secret(n)[..8]);
            assert!(!out.contains(bytes.trim_matches(['[', ']'])), "{out}");
        }
    }
    assert!(outputs[1].contains(&format!("sealed_secrets_len: {}", secret(1).len())));
    assert!(!json.contains("sealed"));

    // Ids and states serialize as their text forms.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["id"], id(2).to_string());
    assert_eq!(v[0]["state"], "established");
    assert_eq!(v[1]["state"], "closed");
    assert_eq!(v[1]["ended_at_ms"], 4_000);
    assert_eq!(v[2]["client_addr"], "192.0.2.1:443");
    assert_eq!(id(2).to_string().parse::<SessionId>().unwrap(), id(2));
}

pub async fn sweep_expires_wipes_and_deletes(store: &dyn SessionStore) {
    let now = 10_000_000;
    let ttl = 30_000;

    // 1: lifetime ends exactly now.
    let mut r = record(1, SessionState::Established, now - 100_000);
    r.expires_at_ms = now;
    r.last_used_at_ms = now - 1;
    store.insert(r).await.unwrap();
    // 2: idle exactly long enough.
    let mut r = record(2, SessionState::Established, now - 100_000);
    r.last_used_at_ms = now - 5_000;
    r.idle_timeout_ms = 5_000;
    store.insert(r).await.unwrap();
    // 3: stale Matching (created exactly ttl ago).
    let mut r = record(3, SessionState::Matching, now - ttl);
    r.last_used_at_ms = now;
    store.insert(r).await.unwrap();
    // 4: Established 1 ms short of every limit: stays.
    let mut r = record(4, SessionState::Established, now - ttl * 10);
    r.expires_at_ms = now + 1;
    r.last_used_at_ms = now - 4_999;
    r.idle_timeout_ms = 5_000;
    store.insert(r).await.unwrap();
    // 5: fresh Matching: stays.
    let mut r = record(5, SessionState::Matching, now - ttl + 1);
    r.last_used_at_ms = now - ttl + 1;
    store.insert(r).await.unwrap();
    // 6: ended long ago: deleted. 7: ended recently: kept.
    store
        .insert(record(6, SessionState::Established, now - 100_000))
        .await
        .unwrap();
    store
        .insert(record(7, SessionState::Established, now - 100_000))
        .await
        .unwrap();
    // 8: live, idle timeout "never", last used in the "future" (clock skew): stays.
    let mut r = record(8, SessionState::Established, now - 100_000);
    r.last_used_at_ms = now + 50;
    r.idle_timeout_ms = u64::MAX;
    store.insert(r).await.unwrap();
    let retain = 60_000;
    assert!(store.close(&id(6), now - retain - 1).await.unwrap());
    assert!(store.close(&id(7), now - retain).await.unwrap());

    assert_eq!(store.sweep(now, ttl, retain).await.unwrap(), 3);

    for n in [1, 2, 3] {
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert_eq!(r.state, SessionState::Expired, "#{n}");
        assert!(r.sealed_secrets.is_empty(), "#{n} secrets not wiped");
    }
    for n in [4, 5, 8] {
        let r = store.load(&id(n)).await.unwrap().unwrap();
        assert!(r.state.is_live(), "#{n} expired too early");
        assert_eq!(r.sealed_secrets, secret(n));
    }
    assert_eq!(
        store.load(&id(6)).await.unwrap(),
        None,
        "old ended row kept"
    );
    assert_eq!(
        store.load(&id(7)).await.unwrap().unwrap().state,
        SessionState::Closed
    );

    let mut ended = store.ended_since(now).await.unwrap();
    ended.sort();
    assert_eq!(ended, vec![id(1), id(2), id(3)]);

    // Nothing left to expire now.
    assert_eq!(store.sweep(now, ttl, retain).await.unwrap(), 0);
    // Later, #4's lifetime is over, and everything that ended before `later - retain`
    // is deleted.
    let later = now + retain + 1;
    assert_eq!(store.sweep(later, u64::MAX, retain).await.unwrap(), 1);
    for n in [1, 2, 3, 7] {
        assert_eq!(store.load(&id(n)).await.unwrap(), None, "#{n} kept");
    }
    assert_eq!(
        store.load(&id(4)).await.unwrap().unwrap().state,
        SessionState::Expired
    );
    assert_eq!(store.ended_since(0).await.unwrap(), vec![id(4)]);
    let live: Vec<_> = store
        .list(true)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&id(5)) && live.contains(&id(8)));
}

pub async fn a_batch_applies_in_order_or_not_at_all(store: &dyn SessionStore) {
    // In order: insert, progress, end of one session and a second insert, one batch.
    store
        .save(vec![
            SessionWrite::Insert(record(1, SessionState::Matching, 1_000)),
            SessionWrite::Progress(progress(1, SessionState::Established, 1_100, 3)),
            SessionWrite::Insert(record(2, SessionState::Established, 1_000)),
            SessionWrite::End {
                id: id(2),
                state: SessionState::Closed,
                at_ms: 1_200,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    let r1 = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!((r1.state, r1.request_count), (SessionState::Established, 3));
    let r2 = store.load(&id(2)).await.unwrap().unwrap();
    assert_eq!(r2.state, SessionState::Closed);
    assert!(r2.sealed_secrets.is_empty());
    // One invalid write refuses the whole batch: the valid insert before it is not applied.
    let err = store
        .save(vec![
            SessionWrite::Insert(record(3, SessionState::Established, 1_000)),
            SessionWrite::End {
                id: id(1),
                state: SessionState::Established,
                at_ms: 1_300,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidState(SessionState::Established)
    ));
    assert_eq!(store.load(&id(3)).await.unwrap(), None);
    assert_eq!(
        store.load(&id(1)).await.unwrap().unwrap().state,
        SessionState::Established
    );
    // An empty batch is fine.
    store.save(Vec::new()).await.unwrap();
}

pub async fn ended_sessions_stay_ended(store: &dyn SessionStore) {
    store
        .insert(record(1, SessionState::Established, 1_000))
        .await
        .unwrap();
    store
        .save(vec![SessionWrite::End {
            id: id(1),
            state: SessionState::Expired,
            at_ms: 2_000,
            remains: Vec::new(),
        }])
        .await
        .unwrap();
    // Nothing that arrives later brings it back or changes its first end.
    store
        .save(vec![
            SessionWrite::Insert(record(1, SessionState::Established, 1_000)),
            SessionWrite::Progress(progress(1, SessionState::Established, 3_000, 9)),
            SessionWrite::End {
                id: id(1),
                state: SessionState::Closed,
                at_ms: 4_000,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    assert!(!store.close(&id(1), 5_000).await.unwrap());
    let r = store.load(&id(1)).await.unwrap().unwrap();
    assert_eq!((r.state, r.request_count), (SessionState::Expired, 0));
    assert!(r.sealed_secrets.is_empty());
    let summary = store.list(false).await.unwrap();
    assert_eq!(summary[0].ended_at_ms, Some(2_000));
    assert!(store.load_live().await.unwrap().is_empty());
}

pub async fn load_ended_returns_recent_ends_that_kept_remains(store: &dyn SessionStore) {
    for n in 1..=4 {
        store
            .insert(record(n, SessionState::Established, 1_000))
            .await
            .unwrap();
    }
    store
        .save(vec![
            // Ended with remains, recently: loaded, remains in place of the secrets.
            SessionWrite::End {
                id: id(1),
                state: SessionState::Closed,
                at_ms: 5_000,
                remains: vec![7; 40],
            },
            // Ended with remains, long ago: not loaded.
            SessionWrite::End {
                id: id(2),
                state: SessionState::Expired,
                at_ms: 2_000,
                remains: vec![8; 40],
            },
            // Ended without remains: not loaded.
            SessionWrite::End {
                id: id(3),
                state: SessionState::Expired,
                at_ms: 5_000,
                remains: Vec::new(),
            },
        ])
        .await
        .unwrap();
    // Closed by an operator (no remains): not loaded.
    assert!(store.close(&id(4), 6_000).await.unwrap());
    let ended = store.load_ended(4_000).await.unwrap();
    assert_eq!(
        ended.len(),
        1,
        "{:?}",
        ended.iter().map(|e| e.0.id).collect::<Vec<_>>()
    );
    let (r, at) = &ended[0];
    assert_eq!((r.id, r.state, *at), (id(1), SessionState::Closed, 5_000));
    assert_eq!(r.sealed_secrets, vec![7; 40]);
    // A later End never replaces the first one's remains.
    store
        .save(vec![SessionWrite::End {
            id: id(1),
            state: SessionState::Expired,
            at_ms: 9_000,
            remains: vec![9; 40],
        }])
        .await
        .unwrap();
    let ended = store.load_ended(0).await.unwrap();
    let first = ended.iter().find(|(r, _)| r.id == id(1)).unwrap();
    assert_eq!(first.0.sealed_secrets, vec![7; 40]);
    assert!(store.load_live().await.unwrap().is_empty());
}

pub async fn load_live_returns_exactly_the_live_sessions(store: &dyn SessionStore) {
    for n in 0..6 {
        let state = if n % 2 == 0 {
            SessionState::Established
        } else {
            SessionState::Matching
        };
        store.insert(record(n, state, 1_000)).await.unwrap();
    }
    store
        .record_progress(progress(0, SessionState::Established, 2_000, 7))
        .await
        .unwrap();
    store.close(&id(2), 3_000).await.unwrap();
    store
        .save(vec![SessionWrite::End {
            id: id(3),
            state: SessionState::Expired,
            at_ms: 3_000,
            remains: Vec::new(),
        }])
        .await
        .unwrap();
    let mut live = store.load_live().await.unwrap();
    live.sort_by_key(|r| r.id);
    let ids: Vec<SessionId> = live.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id(0), id(1), id(4), id(5)]);
    // Full records, secrets included: this is what a server resumes from.
    assert_eq!(live[0].request_count, 7);
    assert_eq!(
        live[0].sealed_secrets,
        progress(0, SessionState::Established, 0, 7).sealed_secrets
    );
    assert_eq!(live[1].state, SessionState::Matching);
    assert_eq!(live[2].sealed_secrets, secret(4));
}

pub async fn writes_are_visible_when_save_returns(store: &dyn SessionStore) {
    for n in 0..500 {
        store
            .insert(record(n, SessionState::Matching, 1_000 + u64::from(n)))
            .await
            .unwrap();
        store
            .record_progress(progress(n, SessionState::Established, 5_000, u64::from(n)))
            .await
            .unwrap();
    }
    let r = store.load(&id(499)).await.unwrap().unwrap();
    assert_eq!((r.state, r.request_count), (SessionState::Established, 499));
    store
        .record_progress(progress(0, SessionState::Established, 6_000, 1_000))
        .await
        .unwrap();
    let live = store.list(true).await.unwrap();
    assert_eq!(live.len(), 500);
    assert_eq!(live[0].id, id(499));
    assert_eq!(live.last().unwrap().request_count, 1_000);
    assert!(live.iter().all(|s| s.state == SessionState::Established));
}
