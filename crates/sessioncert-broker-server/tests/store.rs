//! The broker's metadata store, the same checks on SQLite and on the real PostgreSQL
//! server (`SESSIONCERT_TEST_POSTGRES`, default postgres://postgres@127.0.0.1:5432/test;
//! each test in its own schema, dropped after).

use sessioncert_broker_server::store::{
    self, Account, AuditEvent, BrokerStore, FileRow, NewAccount, NewOutbox, ShareClaim, ShareRow,
    StoreError,
};
use std::sync::Arc;

fn account(id: &str, tenant: &str, email: &str, now: u64) -> NewAccount {
    NewAccount {
        account: Account {
            id: id.into(),
            tenant: tenant.into(),
            email: email.into(),
            password_phc: "$argon2id$phc".into(),
            verified: false,
            key_verifier: None,
            pending_verifier: None,
            created_ms: now,
            registration_digest: Some([id.len() as u8; 32]),
        },
        code_digest: [7; 32],
        code_expires_ms: now + 600_000,
        code_tries: 5,
    }
}

/// The outbox key id the tests' rows are sealed under.
const KEY: &[u8] = b"test-key";

fn mail(to: &str) -> NewOutbox {
    sealed_by(KEY, to)
}

fn sealed_by(key_id: &[u8], to: &str) -> NewOutbox {
    let mut sealed_text = key_id.to_vec();
    sealed_text.extend_from_slice(&[1, 2, 3]);
    NewOutbox {
        recipient: to.into(),
        subject: "s".into(),
        sealed_text,
    }
}

fn file(id: &str, tenant: &str, owner: &str) -> FileRow {
    FileRow {
        id: id.into(),
        tenant: tenant.into(),
        owner: owner.into(),
        name: "sealed-name".into(),
        size: 10,
        created_ms: 1,
        object_key: format!("files/{tenant}/{id}"),
    }
}

fn share(id: &str, file_id: &str, max_opens: u32, expires_ms: u64) -> ShareRow {
    ShareRow {
        id: id.into(),
        tenant: "acme".into(),
        owner: "u1".into(),
        file_id: file_id.into(),
        recipient: "bob@example.test".into(),
        verifier: [9; 32],
        object_key: format!("shares/{id}"),
        name: "n".into(),
        size: 10,
        created_ms: 1,
        expires_ms,
        max_opens,
        opens: 0,
        failed_tries: 0,
        revoked_ms: None,
    }
}

async fn accounts(s: &Arc<dyn BrokerStore>) {
    let now = 1_000_000;
    s.create_account(&account("u1", "acme", "a@x.test", now), &[mail("a@x.test")])
        .await
        .unwrap();
    let a = s.account("acme", "a@x.test").await.unwrap().unwrap();
    assert_eq!(a.registration_digest, Some([2; 32]));
    // The same address again while unverified, code still valid: the new registration
    // replaces the old one (new id, code and registration key) and queues its mail.
    let mut again = account("u2", "acme", "a@x.test", now + 1);
    again.account.registration_digest = Some([42; 32]);
    s.create_account(&again, &[mail("a@x.test")]).await.unwrap();
    assert_eq!(s.outbox_pending().await.unwrap(), 2);
    let a = s.account("acme", "a@x.test").await.unwrap().unwrap();
    assert_eq!(
        (a.id.as_str(), a.registration_digest),
        ("u2", Some([42; 32]))
    );
    // The replaced registration's tries are gone with its id.
    assert!(s.take_verification_try("u1").await.unwrap().is_none());
    // Another tenant may have the same address.
    s.create_account(&account("u3", "other", "a@x.test", now), &[])
        .await
        .unwrap();
    s.create_account(&account("u4", "acme", "a@x.test", now + 700_000), &[])
        .await
        .unwrap();
    let a = s.account("acme", "a@x.test").await.unwrap().unwrap();
    assert_eq!(a.id, "u4");
    assert!(!a.verified);

    // Five tries, taken before comparing; none after.
    for _ in 0..5 {
        let (d, exp) = s.take_verification_try("u4").await.unwrap().unwrap();
        assert_eq!(d, [7; 32]);
        assert_eq!(exp, now + 700_000 + 600_000);
    }
    assert!(s.take_verification_try("u4").await.unwrap().is_none());
    assert!(
        !s.mark_verified("u1").await.unwrap(),
        "a replaced registration"
    );
    assert!(s.mark_verified("u4").await.unwrap());
    assert!(!s.mark_verified("u4").await.unwrap(), "verified once");
    let a = s.account("acme", "a@x.test").await.unwrap().unwrap();
    assert!(a.verified);
    assert_eq!(a.registration_digest, None, "kept after verification");
    // A verified account is never replaced.
    let r = s
        .create_account(&account("u5", "acme", "a@x.test", now + 10_000_000), &[])
        .await;
    assert!(matches!(r, Err(StoreError::Exists)));

    // Verifier: pending, replaced by another first login, committed only if it is the
    // pending one, then fixed.
    assert!(s.set_pending_verifier("u4", &[1; 32]).await.unwrap());
    assert!(s.set_pending_verifier("u4", &[2; 32]).await.unwrap());
    assert!(!s.commit_verifier("u4", &[1; 32]).await.unwrap());
    assert!(s.commit_verifier("u4", &[2; 32]).await.unwrap());
    assert!(!s.set_pending_verifier("u4", &[3; 32]).await.unwrap());
    let a = s.account("acme", "a@x.test").await.unwrap().unwrap();
    assert_eq!(a.key_verifier, Some([2; 32]));
    assert_eq!(a.pending_verifier, None);

    // An unverified account goes once its code has expired long enough; a verified
    // one never.
    let expired = now + 600_000;
    assert_eq!(s.delete_stale(0, expired).await.unwrap().accounts, 0);
    assert_eq!(s.delete_stale(0, expired + 1).await.unwrap().accounts, 1);
    assert!(s.account("other", "a@x.test").await.unwrap().is_none());
    assert_eq!(s.delete_stale(0, u64::MAX / 4).await.unwrap().accounts, 0);
    assert!(
        s.account("acme", "a@x.test")
            .await
            .unwrap()
            .unwrap()
            .verified
    );
}

async fn files_and_shares(s: &Arc<dyn BrokerStore>) {
    s.insert_file(&file("f1", "acme", "u1")).await.unwrap();
    s.insert_file(&file("f2", "acme", "u1")).await.unwrap();
    s.insert_file(&file("g1", "other", "u9")).await.unwrap();
    assert_eq!(s.files("acme", "u1").await.unwrap().len(), 2);
    // Another tenant's or user's id finds nothing.
    assert!(s.file("acme", "u1", "g1").await.unwrap().is_none());
    assert!(s.file("other", "u1", "f1").await.unwrap().is_none());
    assert!(s.file("acme", "u2", "f1").await.unwrap().is_none());
    assert_eq!(
        s.file("acme", "u1", "f1").await.unwrap().unwrap(),
        file("f1", "acme", "u1")
    );

    let now = 5_000;
    s.insert_share(
        &share("s1", "f1", 1, now + 1000),
        &[mail("b@x"), mail("a@x")],
    )
    .await
    .unwrap();
    // A share of a file that is gone (deleted while its copy was made) is refused.
    let gone = s
        .insert_share(&share("sx", "no-such-file", 3, now + 1000), &[])
        .await;
    assert!(matches!(gone, Err(StoreError::Gone)), "{gone:?}");
    assert!(s.share("sx").await.unwrap().is_none());
    // A share whose copy was deleted opens no more, whatever its counters say.
    s.insert_share(&share("s9", "f1", 3, now + 1000), &[])
        .await
        .unwrap();
    s.mark_share_purged("s9", now).await.unwrap();
    assert_eq!(
        s.claim_share_open("s9", now, 5).await.unwrap(),
        ShareClaim::Closed
    );
    s.insert_share(&share("s2", "f1", 3, now + 1000), &[])
        .await
        .unwrap();
    s.insert_share(&share("s3", "f2", 3, now + 1000), &[])
        .await
        .unwrap();
    assert_eq!(s.shares("acme", "u1").await.unwrap().len(), 4);
    assert!(s
        .revoke_share("acme", "u2", "s3", now)
        .await
        .unwrap()
        .is_none());

    // A one-open share: concurrent claims, exactly one granted.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_share_open("s1", 5_000, 5).await.unwrap()
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            ShareClaim::Granted(r) => {
                assert_eq!(r.opens, 1);
                granted += 1
            }
            ShareClaim::Closed => {}
            ShareClaim::Missing => panic!("missing"),
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(
        s.claim_share_open("nope", now, 5).await.unwrap(),
        ShareClaim::Missing
    );
    // Expired: closed.
    assert_eq!(
        s.claim_share_open("s2", now + 1000, 5).await.unwrap(),
        ShareClaim::Closed
    );
    // Wrong codes lock it.
    // A try taken and given back (a right code) leaves the count as it was.
    assert_eq!(s.take_share_try("s2", 5).await.unwrap(), Some(1));
    s.refund_share_try("s2").await.unwrap();
    for i in 1..=5 {
        assert_eq!(s.take_share_try("s2", 5).await.unwrap(), Some(i));
    }
    // None left: no sixth try, however many ask at once.
    let tries = futures_util::future::join_all((0..8).map(|_| s.take_share_try("s2", 5))).await;
    assert!(tries.iter().all(|t| matches!(t, Ok(None))), "{tries:?}");
    assert_eq!(
        s.claim_share_open("s2", now, 5).await.unwrap(),
        ShareClaim::Closed
    );
    // Revoked: closed.
    let r = s
        .revoke_share("acme", "u1", "s3", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.revoked_ms, Some(now));
    assert_eq!(
        s.claim_share_open("s3", now, 5).await.unwrap(),
        ShareClaim::Closed
    );

    // Spent: s1 used up, s2 locked, s3 revoked; purged ones are not listed again.
    let mut spent: Vec<String> = s
        .spent_shares(now, 5, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    spent.sort();
    assert_eq!(spent, ["s1", "s2", "s3"]);
    s.mark_share_purged("s3", now).await.unwrap();
    assert_eq!(s.spent_shares(now, 5, 10).await.unwrap().len(), 2);

    // Deleting a file removes its shares; the unpurged copies are returned.
    let (f, mut objects) = s.delete_file("acme", "u1", "f1").await.unwrap().unwrap();
    objects.sort();
    assert_eq!(f.id, "f1");
    assert_eq!(objects, ["shares/s1", "shares/s2"]);
    assert!(s.delete_file("acme", "u1", "f1").await.unwrap().is_none());
    assert!(s.delete_file("acme", "u1", "g1").await.unwrap().is_none());
    assert_eq!(s.shares("acme", "u1").await.unwrap().len(), 1);
}

async fn outbox_and_audit(s: &Arc<dyn BrokerStore>) {
    // What the earlier steps queued goes first.
    for r in s.outbox_claim(KEY, 10_000_000, 0, 100).await.unwrap() {
        s.outbox_sent(r.id, 1).await.unwrap();
    }
    assert_eq!(s.outbox_pending().await.unwrap(), 0);
    s.enqueue(&[mail("a@x"), mail("b@x"), mail("c@x")], 100)
        .await
        .unwrap();
    let rows = s.outbox_claim(KEY, 100, 1000, 2).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].sealed_text, b"test-key\x01\x02\x03");
    // Leased: another claim gets only the third.
    let more = s.outbox_claim(KEY, 100, 1000, 10).await.unwrap();
    assert_eq!(more.len(), 1);
    assert!(s.outbox_claim(KEY, 100, 1000, 10).await.unwrap().is_empty());
    s.outbox_sent(rows[0].id, 150).await.unwrap();
    s.outbox_retry(rows[1].id, 500, "421 try later")
        .await
        .unwrap();
    s.outbox_give_up(more[0].id, 150, "550 no such user")
        .await
        .unwrap();
    assert_eq!(s.outbox_pending().await.unwrap(), 1);
    // The retry is due at 500, not before; a lease that ran out frees a row.
    assert!(s.outbox_claim(KEY, 499, 1000, 10).await.unwrap().is_empty());
    let again = s.outbox_claim(KEY, 500, 1000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let after_lease = s.outbox_claim(KEY, 1500, 1000, 10).await.unwrap();
    assert_eq!(after_lease.len(), 1, "an expired lease releases the row");
    s.outbox_sent(after_lease[0].id, 1600).await.unwrap();

    // Rows sealed under another instance's key are never claimed here; once old
    // enough they are given up (their key is gone) and their texts wiped.
    s.enqueue(&[sealed_by(b"other-ky", "d@x"), mail("e@x")], 2000)
        .await
        .unwrap();
    s.enqueue(&[sealed_by(b"other-ky", "f@x")], 3000)
        .await
        .unwrap();
    let mine = s.outbox_claim(KEY, 5000, 1000, 10).await.unwrap();
    assert_eq!(
        mine.iter()
            .map(|r| r.recipient.as_str())
            .collect::<Vec<_>>(),
        ["e@x"]
    );
    s.outbox_sent(mine[0].id, 5000).await.unwrap();
    assert_eq!(s.outbox_pending().await.unwrap(), 2);
    // Only what is old enough goes (no heartbeat ever came from "other-ky"), and never
    // this key's own rows.
    s.enqueue(&[mail("g@x")], 2000).await.unwrap();
    assert_eq!(
        s.outbox_give_up_foreign(KEY, 2500, 5000, "gone")
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.outbox_pending().await.unwrap(), 2);
    assert_eq!(
        s.outbox_give_up_foreign(KEY, 1500, 5000, "gone")
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.outbox_pending().await.unwrap(), 1, "this key's row stays");
    // Another instance that still beats keeps its rows, however old they are (a
    // backlog, or clocks that differ); once silent long enough, they go.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    s.enqueue(&[sealed_by(b"alive-ky", "i@x")], 1)
        .await
        .unwrap();
    s.outbox_heartbeat(b"alive-ky", now).await.unwrap();
    assert_eq!(s.outbox_pending_of(b"alive-ky").await.unwrap(), 1);
    assert_eq!(s.outbox_pending_of(KEY).await.unwrap(), 1, "g@x");
    assert_eq!(
        s.outbox_give_up_foreign(KEY, 60_000, now, "gone")
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.outbox_pending().await.unwrap(), 2);
    assert_eq!(
        s.outbox_give_up_foreign(KEY, 0, now + 1, "gone")
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.outbox_pending().await.unwrap(), 1);
    assert!(s
        .outbox_claim(b"other-ky", 9000, 1000, 10)
        .await
        .unwrap()
        .is_empty());
    let last = s.outbox_claim(KEY, 9000, 1000, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    s.outbox_sent(last[0].id, 9000).await.unwrap();

    // Finished rows go once old enough; pending ones never.
    s.enqueue(&[mail("h@x")], 9500).await.unwrap();
    let stale = s.delete_stale(5001, 0).await.unwrap();
    assert!(stale.notifications >= 4, "{stale:?}");
    assert_eq!(stale.accounts, 0);
    assert_eq!(s.outbox_pending().await.unwrap(), 1);
    let kept = s.delete_stale(9001, 0).await.unwrap();
    assert_eq!(
        kept.notifications, 1,
        "only g@x, sent at 9000, is left to go"
    );
    assert_eq!(s.outbox_pending().await.unwrap(), 1, "h@x is pending");
    for r in s.outbox_claim(KEY, 10_000, 1000, 10).await.unwrap() {
        s.outbox_sent(r.id, 10_000).await.unwrap();
    }

    for i in 0..3 {
        s.audit(&AuditEvent {
            at_ms: i,
            tenant: "acme".into(),
            actor: "u1".into(),
            action: format!("a{i}"),
            target: "t".into(),
            detail: String::new(),
        })
        .await
        .unwrap();
    }
    let ev = s.audit_events("acme", 2).await.unwrap();
    assert_eq!(
        ev.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["a2", "a1"]
    );
    assert!(s.audit_events("other", 10).await.unwrap().is_empty());
}

async fn all(s: Arc<dyn BrokerStore>) {
    accounts(&s).await;
    files_and_shares(&s).await;
    outbox_and_audit(&s).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.db");
    let s = store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    all(s.clone()).await;
    // A wiped notification's text is in neither the database nor its log once the
    // store is compacted (SQLite's WAL keeps old pages until a checkpoint).
    let marker = [KEY, b"SEALED-TEXT-MARKER-7f3a"].concat();
    s.enqueue(
        &[NewOutbox {
            recipient: "m@x.test".into(),
            subject: "s".into(),
            sealed_text: marker.clone(),
        }],
        1,
    )
    .await
    .unwrap();
    let rows = s.outbox_claim(KEY, u64::MAX / 4, 1000, 100).await.unwrap();
    let row = rows.iter().find(|r| r.sealed_text == marker).unwrap();
    s.outbox_sent(row.id, 2).await.unwrap();
    let holds_marker = |p: &std::path::Path| {
        std::fs::read(p)
            .unwrap_or_default()
            .windows(marker.len())
            .any(|w| w == marker.as_slice())
    };
    let wal = dir.path().join("broker.db-wal");
    assert!(
        holds_marker(&wal) || holds_marker(&path),
        "the marker was never written"
    );
    s.compact().await.unwrap();
    assert!(!holds_marker(&wal), "the WAL still holds a wiped text");
    assert!(
        !holds_marker(&path),
        "the database still holds a wiped text"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

fn pg_url() -> String {
    std::env::var("SESSIONCERT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_store() {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    let schema = format!("broker_test_{}", hex::encode(b));
    let url = format!("{}?schema={schema}", pg_url());
    let s = store::open(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {} must be running for this test: {e}",
            pg_url()
        )
    });
    // Migrating twice is harmless (a second instance starting).
    store::open(&url).await.unwrap();
    all(s).await;
    assert!(drop_schema(&schema), "schema dropped");
}

fn drop_schema(schema: &str) -> bool {
    let status = std::process::Command::new("psql")
        .env("PGOPTIONS", "--client-min-messages=warning")
        .args([
            "-q",
            &pg_url(),
            "-c",
            &format!("DROP SCHEMA \"{schema}\" CASCADE"),
        ])
        .status();
    matches!(status, Ok(s) if s.success())
}
