//! Rotating the server identity across instances without a pause (PROTOCOL §7 rule 8):
//! two instances on one data directory and one shared store; the next identity is
//! prepared, clients are given both pins, the next identity is promoted, and every
//! instance signs with it within a key check while sessions carry on.

#![forbid(unsafe_code)]

mod common;

use common::*;
use sessioncert_client::{Client, Trust};
use sessioncert_server::keys::{prepare_next_identity, promote_next_identity};
use sessioncert_server::{now_ms, ServerKeys, Timing};
use sessioncert_store::{MemoryStore, SessionStore};
use std::sync::Arc;
use std::time::Duration;

async fn served_identity(base: &str) -> (sessioncert_proto::Pin, Vec<u8>) {
    let bytes = reqwest::get(format!("{base}/.well-known/sessioncert/config"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let signed = sessioncert_proto::SignedKeyConfig::decode(&bytes).unwrap();
    let cfg = sessioncert_proto::KeyConfig::decode(&signed.config).unwrap();
    (cfg.identity, bytes)
}

async fn echo_ok(c: &Client, n: u32) {
    let r = c
        .post("/apiTest")
        .body(format!("{{\"n\":{n}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_identity_rotates_across_instances_while_sessions_carry_on() {
    let d = tempfile::tempdir().unwrap();
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::shared());
    let timing = || Timing {
        key_rotation_check: Duration::from_millis(100),
        ..Timing::default()
    };
    let instance = |_: u8| {
        let (keys, _) = ServerKeys::open_or_create(d.path(), now_ms()).unwrap();
        keys
    };
    let a = TestServer::start_with(
        instance(0),
        store.clone(),
        generous(),
        timing(),
        Default::default(),
    )
    .await;
    let b = TestServer::start_with(
        instance(1),
        store.clone(),
        generous(),
        timing(),
        Default::default(),
    )
    .await;
    let old = a.pin;
    let (ca, cb) = (
        served_identity(&a.base).await,
        served_identity(&b.base).await,
    );
    assert_eq!(
        ca, cb,
        "instances on one data directory serve the same bytes"
    );

    // Step 1: the next identity is made; nobody signs with it yet.
    let (next, _) = prepare_next_identity(d.path()).unwrap();
    let both = Client::connect(&a.base, Trust::pins([old, next]))
        .await
        .unwrap();
    let old_only = Client::connect(&b.base, Trust::Pin(old)).await.unwrap();
    echo_ok(&both, 1).await;
    echo_ok(&old_only, 1).await;
    assert!(
        Client::connect(&a.base, Trust::Pin(next)).await.is_err(),
        "the next identity signs nothing before it is promoted"
    );
    let (session_both, session_old) = (
        both.session_info().await.unwrap().id,
        old_only.session_info().await.unwrap().id,
    );

    // Step 2: promoted; both instances sign with it after their next key check.
    promote_next_identity(d.path(), now_ms()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (ia, ib) = (
            served_identity(&a.base).await,
            served_identity(&b.base).await,
        );
        // Both switched, and serve the same bytes again once each has read the change
        // time too (promote writes the identity first, then the time: for up to a key
        // check an instance may serve the new identity at the old time).
        if ia.0 == next && ib.0 == next && ia.1 == ib.1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "instances did not switch to one configuration: {:?} {:?}",
            (ia.0 == next, ib.0 == next),
            ia.1 == ib.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Established sessions are untouched (the identity takes no part in their keys),
    // at either instance.
    echo_ok(&both, 2).await;
    echo_ok(&old_only, 2).await;
    assert_eq!(both.session_info().await.unwrap().id, session_both);
    assert_eq!(old_only.session_info().await.unwrap().id, session_old);
    // New clients: either pin set that holds the new identity connects; the old pin
    // alone is refused, naming the identity presented.
    let fresh_both = Client::connect(&b.base, Trust::pins([old, next]))
        .await
        .unwrap();
    assert_eq!(fresh_both.identity(), next);
    echo_ok(&fresh_both, 3).await;
    let fresh_next = Client::connect(&a.base, Trust::Pin(next)).await.unwrap();
    echo_ok(&fresh_next, 3).await;
    let e = Client::connect(&a.base, Trust::Pin(old)).await.unwrap_err();
    assert!(e.is_untrusted(), "{e}");
    assert!(e.to_string().contains(&next.to_string()), "{e}");
    a.stop().await;
    b.stop().await;
}
