//! The broker's flows over the real channel on 127.0.0.1: registration, the split-key
//! login, files, tenant isolation, shares by one-time code, and the refusals.

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sessioncert_broker::file_crypt::{CHUNK, HEADER, TAG};
use sessioncert_broker::user_key::KeyShare;
use sessioncert_broker_server::api::{BrokerSettings, PREFIX};
use std::time::Duration;
use support::{call, fetch, line_value, pseudo_random, registration, TestBroker, PASSWORD};

#[tokio::test]
async fn register_verify_login_upload_download() {
    let t = TestBroker::start(&["acme"]).await;
    let c = t.client().await;
    // Registration mails a code; a wrong one is refused, the right one verifies.
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": "Alice@Example.test", "password": PASSWORD, "registration": registration("alice@example.test")}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let mail = t.mail_to("alice@example.test", "Verification code:").await;
    let code = line_value(&mail, "Verification code:");
    assert_eq!(code.len(), 9, "{code}");
    // Unverified: no login.
    let share = KeyShare::generate().unwrap();
    let login_body = |edk: Option<&str>| {
        json!({"tenant": "acme", "email": "alice@example.test", "password": PASSWORD,
               "key_share": STANDARD.encode(share.as_bytes()), "encrypted_data_key": edk})
    };
    let r = call(&c, "POST", "/login", login_body(None)).await;
    assert_eq!((r.0, r.1["code"].as_str()), (403, Some("not-verified")));
    let r = call(
        &c,
        "POST",
        "/verify",
        json!({"tenant": "acme", "email": "alice@example.test", "code": "AAAA-AAAA", "registration": registration("alice@example.test")}),
    )
    .await;
    assert_eq!((r.0, r.1["code"].as_str()), (403, Some("wrong-code")));
    let r = call(
        &c,
        "POST",
        "/verify",
        json!({"tenant": "acme", "email": "alice@example.test", "code": code.to_lowercase(), "registration": registration("alice@example.test")}),
    )
    .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    // A wrong password.
    let mut bad = login_body(None);
    bad["password"] = json!("not the password");
    let r = call(&c, "POST", "/login", bad).await;
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("wrong-password")));
    // Not logged in: no files.
    let r = call(&c, "GET", "/files", Value::Null).await;
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("not-logged-in")));
    // First login: the encrypted data key comes back.
    let r = call(&c, "POST", "/login", login_body(None)).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["first_login"], true);
    let edk = r.1["encrypted_data_key"].as_str().unwrap().to_owned();
    let r = call(&c, "POST", "/login/confirm", Value::Null).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    // Committed: a login without it is refused, with it works and returns nothing new.
    let r = call(&c, "POST", "/login", login_body(None)).await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (409, Some("missing-encrypted-data-key"))
    );
    let r = call(&c, "POST", "/login", login_body(Some(&edk))).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert!(r.1["encrypted_data_key"].is_null());

    // Files: 3 chunks and a bit, name kept (sealed), content back byte for byte.
    let body = pseudo_random(3 * CHUNK + 1234, 1);
    let r = c
        .post(&format!("{PREFIX}/files?name=report%20%C3%A9t%C3%A9.pdf"))
        .full(true)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(&c, "GET", "/files", Value::Null).await;
    assert_eq!(r.1["files"][0]["id"], id.as_str());
    assert_eq!(r.1["files"][0]["name"], "report été.pdf");
    assert_eq!(r.1["files"][0]["size"], body.len());
    let (status, back) = fetch(c.get(&format!("{PREFIX}/files/{id}")).full(true))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(back == body, "downloaded bytes differ");
    // At rest: header + sealed chunks, no plaintext.
    let objects = t.file_objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let stored = std::fs::read(&objects[0]).unwrap();
    assert_eq!(stored.len(), HEADER + 4 * TAG + body.len());
    assert!(!stored.windows(64).any(|w| w == &body[1000..1064]));
    // An empty file and one of exactly one chunk.
    for n in [0, CHUNK] {
        let b = pseudo_random(n, 2);
        let r = c
            .post(&format!("{PREFIX}/files?name=f{n}"))
            .full(true)
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, back) = fetch(c.get(&format!("{PREFIX}/files/{id}")).full(true))
            .await
            .unwrap();
        assert!(back == b, "size {n}");
    }
    // Delete: gone from the list and the store.
    let r = call(&c, "DELETE", &format!("/files/{id}"), Value::Null).await;
    assert_eq!(r.0, 204);
    let r = call(&c, "DELETE", &format!("/files/{id}"), Value::Null).await;
    assert_eq!(r.0, 404);
    assert_eq!(t.file_objects().len(), 2);
    // Logout forgets the data key: nothing more on this session.
    let r = call(&c, "POST", "/logout", Value::Null).await;
    assert_eq!(r.0, 200);
    let r = call(&c, "GET", "/files", Value::Null).await;
    assert_eq!(r.0, 401);
}

#[tokio::test]
async fn a_login_is_bound_to_its_session_and_ends_with_it() {
    let t = TestBroker::start(&["acme"]).await;
    let u = t.user("acme", "alice@example.test").await;
    let id = u.upload("a.txt", b"hello".to_vec()).await;
    // Another session (another client) is not logged in.
    let other = t.client().await;
    let r = call(&other, "GET", &format!("/files/{id}"), Value::Null).await;
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("not-logged-in")));
    assert_eq!(t.broker.logins(), 1);
    // The session closes: the login (and its data key) is forgotten.
    u.client.close().await.unwrap();
    for _ in 0..50 {
        if t.broker.logins() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(t.broker.logins(), 0, "the login outlived its session");
}

#[tokio::test]
async fn wrong_key_share_is_a_clear_error_and_binds_nothing() {
    let t = TestBroker::start(&["acme"]).await;
    let mut u = t.user("acme", "alice@example.test").await;
    u.client.close().await.unwrap();
    u.client = t.client().await;
    let right = std::mem::replace(&mut u.share, KeyShare::generate().unwrap());
    let r = u.login().await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (401, Some("wrong-key-share")),
        "{:?}",
        r.1
    );
    let r = call(&u.client, "GET", "/files", Value::Null).await;
    assert_eq!(r.0, 401, "a refused login bound nothing");
    // Another user's encrypted data key: refused as not this account's.
    let mut bob = t.user("acme", "bob@example.test").await;
    let bob_own = bob.edk.clone();
    let alice_edk = u.edk.clone();
    bob.edk = alice_edk;
    let r = bob.login().await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (400, Some("bad-encrypted-data-key")),
        "{:?}",
        r.1
    );
    // An encrypted data key naming a master key version the tenant lacks: the
    // request's fault (400), not the server's (500).
    let mut edk = STANDARD.decode(bob_own.as_deref().unwrap()).unwrap();
    edk[..4].copy_from_slice(&99u32.to_be_bytes());
    bob.edk = Some(STANDARD.encode(edk));
    let r = bob.login().await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (400, Some("bad-encrypted-data-key")),
        "{:?}",
        r.1
    );
    assert!(
        r.1["error"].as_str().unwrap().contains("version 99"),
        "{:?}",
        r.1
    );
    // The right share works again.
    u.share = right;
    let r = u.login().await;
    assert_eq!(r.0, 200, "{:?}", r.1);
}

#[tokio::test]
async fn a_lost_first_login_answer_loses_nothing() {
    let t = TestBroker::start(&["acme"]).await;
    let mut u = t.user("acme", "alice@example.test").await;
    // `user` confirmed; make a second account and lose its first answer.
    let share = KeyShare::generate().unwrap();
    let c = t.client().await;
    call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": "carol@example.test", "password": PASSWORD, "registration": registration("carol@example.test")}),
    )
    .await;
    let code = line_value(
        &t.mail_to("carol@example.test", "Verification code:").await,
        "Verification code:",
    );
    call(
        &c,
        "POST",
        "/verify",
        json!({"tenant": "acme", "email": "carol@example.test", "code": code, "registration": registration("carol@example.test")}),
    )
    .await;
    let body = json!({"tenant": "acme", "email": "carol@example.test", "password": PASSWORD,
                      "key_share": STANDARD.encode(share.as_bytes())});
    let lost = call(&c, "POST", "/login", body.clone()).await;
    assert_eq!(lost.0, 200);
    // The client never saw it: it logs in again as a first login, and that one counts.
    let r = call(&c, "POST", "/login", body.clone()).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["first_login"], true);
    let kept = r.1["encrypted_data_key"].as_str().unwrap().to_owned();
    // The lost one no longer opens the account; the kept one does (and commits it).
    let mut with = body.clone();
    with["encrypted_data_key"] = lost.1["encrypted_data_key"].clone();
    let r = call(&c, "POST", "/login", with).await;
    assert_eq!(r.1["code"], "wrong-key-share", "{:?}", r.1);
    let mut with = body.clone();
    with["encrypted_data_key"] = json!(kept);
    let r = call(&c, "POST", "/login", with).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let r = call(&c, "POST", "/login", body).await;
    assert_eq!(r.1["code"], "missing-encrypted-data-key");
    let _ = u.login().await;
}

#[tokio::test]
async fn master_key_rotation_rewraps_at_the_next_login() {
    let t = TestBroker::start(&["acme"]).await;
    let mut u = t.user("acme", "alice@example.test").await;
    let id = u.upload("a.txt", b"before rotation".to_vec()).await;
    let old = u.edk.clone().unwrap();
    assert_eq!(&STANDARD.decode(&old).unwrap()[..4], &1u32.to_be_bytes());
    assert_eq!(t.key_file().rotate("acme").unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = u.login().await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let new = r.1["encrypted_data_key"]
        .as_str()
        .expect("re-wrapped")
        .to_owned();
    assert_eq!(&STANDARD.decode(&new).unwrap()[..4], &2u32.to_be_bytes());
    // Same data key: the file uploaded before still opens.
    let (_, back) = u.download(&id).await.unwrap();
    assert_eq!(back, b"before rotation");
    let r = u.login().await;
    assert!(r.1["encrypted_data_key"].is_null(), "already current");
}

#[tokio::test]
async fn tenants_and_users_are_isolated() {
    let t = TestBroker::start(&["acme", "globex"]).await;
    let alice = t.user("acme", "alice@example.test").await;
    let bob = t.user("acme", "bob@example.test").await;
    let mallory = t.user("globex", "mallory@example.test").await;
    // The same address in another tenant is another account.
    let alice_g = t.user("globex", "alice@example.test").await;
    let id = alice.upload("secret.txt", b"acme secret".to_vec()).await;
    for (who, u) in [
        ("bob", &bob),
        ("mallory", &mallory),
        ("alice@globex", &alice_g),
    ] {
        let (status, body) = u.download(&id).await.unwrap();
        assert_eq!(status, 404, "{who} read alice's file");
        assert!(!String::from_utf8_lossy(&body).contains("acme secret"));
        let r = call(&u.client, "DELETE", &format!("/files/{id}"), Value::Null).await;
        assert_eq!(r.0, 404, "{who} deleted alice's file");
        let r = call(
            &u.client,
            "POST",
            &format!("/files/{id}/shares"),
            json!({"to": "x@example.test"}),
        )
        .await;
        assert_eq!(r.0, 404, "{who} shared alice's file");
        let r = call(&u.client, "GET", "/files", Value::Null).await;
        assert_eq!(r.1["files"].as_array().unwrap().len(), 0);
    }
    // An unknown tenant cannot register.
    let c = t.client().await;
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "initech", "email": "x@example.test", "password": PASSWORD, "registration": registration("x@example.test")}),
    )
    .await;
    assert_eq!(r.0, 404);
    let (status, _) = alice.download(&id).await.unwrap();
    assert_eq!(status, 200);
}

/// A change to a stored object.
type Tamper = Box<dyn Fn(&mut Vec<u8>)>;

/// Replaces the object of `id` with `f(stored)`.
fn tamper(t: &TestBroker, f: impl Fn(&mut Vec<u8>)) {
    let objects = t.file_objects();
    assert_eq!(objects.len(), 1);
    let mut b = std::fs::read(&objects[0]).unwrap();
    f(&mut b);
    std::fs::write(&objects[0], b).unwrap();
}

#[tokio::test]
async fn tampered_truncated_or_reordered_files_are_refused() {
    let t = TestBroker::start(&["acme"]).await;
    let u = t.user("acme", "alice@example.test").await;
    let body = pseudo_random(3 * CHUNK + 100, 3);
    let id = u.upload("a.bin", body.clone()).await;
    let original = std::fs::read(&t.file_objects()[0]).unwrap();
    let sealed = CHUNK + TAG;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "a flipped bit in chunk 2",
            Box::new(move |b: &mut Vec<u8>| b[HEADER + sealed + 10] ^= 1),
        ),
        (
            "a flipped bit in the header",
            Box::new(|b: &mut Vec<u8>| b[HEADER - 1] ^= 1),
        ),
        (
            "the last chunk cut off",
            Box::new(move |b: &mut Vec<u8>| b.truncate(HEADER + 3 * sealed)),
        ),
        (
            "cut inside the last chunk",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len() - 5;
                b.truncate(n)
            }),
        ),
        (
            "chunks 1 and 2 swapped",
            Box::new(move |b: &mut Vec<u8>| {
                let (first, rest) = b[HEADER..].split_at_mut(sealed);
                first.swap_with_slice(&mut rest[..sealed]);
            }),
        ),
        (
            "a chunk repeated",
            Box::new(move |b: &mut Vec<u8>| {
                let c1 = b[HEADER..HEADER + sealed].to_vec();
                b.splice(HEADER + sealed..HEADER + sealed, c1);
            }),
        ),
    ];
    for (what, f) in cases {
        std::fs::write(&t.file_objects()[0], &original).unwrap();
        tamper(&t, f);
        match u.download(&id).await {
            // Cut off midway, or refused before the first byte (the first stored bytes
            // read already failed).
            Err(_) => {}
            Ok((status, got)) if status >= 500 => assert!(got.len() < 200, "{what}: {status}"),
            Ok((status, got)) => panic!(
                "{what}: served whole ({status}, {} bytes, equal: {})",
                got.len(),
                got == body
            ),
        }
    }
    std::fs::write(&t.file_objects()[0], &original).unwrap();
    let (_, back) = u.download(&id).await.unwrap();
    assert!(back == body);
}

#[tokio::test]
async fn an_upload_cut_short_leaves_nothing() {
    let t = TestBroker::start(&["acme"]).await;
    let mut u = t.user("acme", "alice@example.test").await;
    let first = pseudo_random(5 * CHUNK, 4);
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(first)),
        Err(std::io::Error::other("the disk went away")),
    ]);
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=cut.bin"))
        .full(true)
        .body_stream(stream)
        .send()
        .await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|r| r.status() != 201),
        "{:?}",
        r.map(|r| r.status())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client may have dropped its session (a POST whose outcome it cannot know):
    // log in again where it now is, then look.
    let mut r = call(&u.client, "GET", "/files", Value::Null).await;
    if r.0 == 401 {
        assert_eq!(u.login().await.0, 200);
        r = call(&u.client, "GET", "/files", Value::Null).await;
    }
    assert_eq!(r.1["files"].as_array().unwrap().len(), 0, "{r:?}");
    assert!(t.file_objects().is_empty(), "{:?}", t.file_objects());
}

#[tokio::test]
async fn files_above_the_limit_are_refused_and_not_kept() {
    let settings = BrokerSettings {
        max_file_bytes: 2 * CHUNK as u64,
        ..BrokerSettings::default()
    };
    let t = TestBroker::start_with(&["acme"], settings).await;
    let u = t.user("acme", "alice@example.test").await;
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=big"))
        .full(true)
        .body(pseudo_random(2 * CHUNK + 1, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.file_objects().is_empty());
}

#[tokio::test]
async fn sharing_by_one_time_code() {
    let t = TestBroker::start(&["acme"]).await;
    let alice = t.user("acme", "alice@example.test").await;
    let body = pseudo_random(2 * CHUNK + 7, 6);
    let id = alice.upload("plan.pdf", body.clone()).await;
    let r = call(
        &alice.client,
        "POST",
        &format!("/files/{id}/shares"),
        json!({"to": "bob@example.test"}),
    )
    .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let share = r.1["share"].as_str().unwrap().to_owned();
    // Both mails carry the code; the recipient's says how to open it.
    let to_bob = t.mail_to("bob@example.test", "One-time code:").await;
    let to_alice = t.mail_to("alice@example.test", "One-time code:").await;
    let otp = line_value(&to_bob, "One-time code:");
    assert_eq!(otp, line_value(&to_alice, "One-time code:"));
    assert_eq!(otp.len(), 26);
    assert!(to_bob.contains(&share) && to_bob.contains("open-share"));

    // Anyone (no account, a fresh session) opens it with the code; wrong codes fail.
    let anon = t.client().await;
    let open = |code: String| {
        anon.post(&format!("{PREFIX}/shares/{share}/open"))
            .full(true)
            .json(&json!({ "otp": code }))
    };
    let (status, got) = fetch(open(format!("WRONG-{otp}"))).await.unwrap();
    assert_eq!(status, 403);
    assert!(!got.windows(32).any(|w| w == &body[..32]));
    let mut flipped = otp.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let (status, _) = fetch(open(String::from_utf8(flipped).unwrap()))
        .await
        .unwrap();
    assert_eq!(status, 403);
    // Dashes, spaces and case do not matter.
    let typed = format!(
        "{}-{} {}",
        &otp[..5],
        &otp[5..10].to_lowercase(),
        &otp[10..]
    );
    let (status, got) = fetch(open(typed)).await.unwrap();
    assert_eq!(status, 200);
    assert!(got == body);
    // One open by default: used up.
    let (status, _) = fetch(open(otp.clone())).await.unwrap();
    assert_eq!(status, 410);
    // The sharer sees it; the copy goes once spent.
    let r = call(&alice.client, "GET", "/shares", Value::Null).await;
    assert_eq!(r.1["shares"][0]["opens"], 1);
    assert_eq!(r.1["shares"][0]["failed_tries"], 2);
    let n = t.broker.purge_spent_shares().await;
    assert_eq!(n, 1);
    assert_eq!(t.file_objects().len(), 1, "only the file itself is left");
}

#[tokio::test]
async fn shares_expire_lock_and_can_be_revoked() {
    let t = TestBroker::start(&["acme"]).await;
    let alice = t.user("acme", "alice@example.test").await;
    let id = alice.upload("a", b"shared bytes".to_vec()).await;
    let mk = |body: Value| {
        let c = &alice.client;
        let id = id.clone();
        async move {
            let r = call(c, "POST", &format!("/files/{id}/shares"), body).await;
            assert_eq!(r.0, 201, "{:?}", r.1);
            r.1["share"].as_str().unwrap().to_owned()
        }
    };
    let anon = t.client().await;
    let open = |share: &str, otp: &str| {
        fetch(
            anon.post(&format!("{PREFIX}/shares/{share}/open"))
                .full(true)
                .json(&json!({ "otp": otp })),
        )
    };
    let code_of = |mail: &str| line_value(mail, "One-time code:");
    // Revoked: no longer opens, copy deleted at once.
    let s1 = mk(json!({"to": "r1@example.test", "max_opens": 5})).await;
    let otp1 = code_of(&t.mail_to("r1@example.test", "One-time code:").await);
    assert_eq!(open(&s1, &otp1).await.unwrap().0, 200);
    let r = call(
        &alice.client,
        "DELETE",
        &format!("/shares/{s1}"),
        Value::Null,
    )
    .await;
    assert_eq!(r.0, 204);
    assert_eq!(open(&s1, &otp1).await.unwrap().0, 410);
    // Expired.
    let s2 = mk(json!({"to": "r2@example.test", "expires_secs": 1})).await;
    let otp2 = code_of(&t.mail_to("r2@example.test", "One-time code:").await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(open(&s2, &otp2).await.unwrap().0, 410);
    // Locked after five wrong codes, even for the right one.
    let s3 = mk(json!({"to": "r3@example.test", "max_opens": 5})).await;
    let otp3 = code_of(&t.mail_to("r3@example.test", "One-time code:").await);
    for _ in 0..5 {
        assert_eq!(
            open(&s3, "AAAAAAAAAAAAAAAAAAAAAAAAAA").await.unwrap().0,
            403
        );
    }
    assert_eq!(open(&s3, &otp3).await.unwrap().0, 410);
    // Unknown share.
    assert_eq!(
        open("aaaaaaaaaaaaaaaaaaaaaaaaaa", &otp3).await.unwrap().0,
        404
    );
    // Someone else's share cannot be revoked.
    let bob = t.user("acme", "bob@example.test").await;
    let s4 = mk(json!({"to": "r4@example.test"})).await;
    let r = call(&bob.client, "DELETE", &format!("/shares/{s4}"), Value::Null).await;
    assert_eq!(r.0, 404);
    // Bad requests.
    for bad in [
        json!({"to": "not an address"}),
        json!({"to": "a@b.test", "max_opens": 0}),
        json!({"to": "a@b.test", "expires_secs": 0}),
    ] {
        let r = call(
            &alice.client,
            "POST",
            &format!("/files/{id}/shares"),
            bad.clone(),
        )
        .await;
        assert_eq!(r.0, 400, "{bad}");
    }
    // A phone recipient needs an SMS webhook, which this broker lacks: refused at once.
    let r = call(
        &alice.client,
        "POST",
        &format!("/files/{id}/shares"),
        json!({"to": "+4915112345678"}),
    )
    .await;
    assert_eq!(r.0, 400, "{:?}", r.1);
    assert!(r.1["error"].as_str().unwrap().contains("sms-webhook"));
}

#[tokio::test]
async fn failed_attempts_are_limited_per_address() {
    let settings = BrokerSettings {
        failure_burst: 3,
        failure_refill: Duration::from_secs(3600),
        ..BrokerSettings::default()
    };
    let t = TestBroker::start_with(&["acme"], settings).await;
    let c = t.client().await;
    let body = json!({"tenant": "acme", "email": "nobody@example.test", "password": "wrong password",
                      "key_share": STANDARD.encode([0u8; 32])});
    for _ in 0..3 {
        let r = call(&c, "POST", "/login", body.clone()).await;
        assert_eq!(r.0, 401);
    }
    let r = call(&c, "POST", "/login", body).await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (429, Some("too-many-failures"))
    );
}

/// Someone who registers a stranger's address first cannot have the stranger's code
/// verify their account: a later registration replaces an unverified one, and a code
/// counts only with the registration key of the registration it was mailed for (whose
/// tries nobody else can spend).
#[tokio::test]
async fn a_code_verifies_only_its_own_registration() {
    let t = TestBroker::start(&["acme"]).await;
    let c = t.client().await;
    let email = "alice@example.test";
    let (mallory, alice) = (registration("mallory's key"), registration("alice's key"));
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": email, "password": "mallory's password", "registration": mallory}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let first = line_value(
        &t.mail_to(email, "Verification code:").await,
        "Verification code:",
    );
    // Alice registers too: her registration replaces Mallory's, with a new code.
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": email, "password": PASSWORD, "registration": alice}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let mut second = first.clone();
    for _ in 0..100 {
        second = line_value(
            &t.mail_to(email, "Verification code:").await,
            "Verification code:",
        );
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(first, second, "no second code mailed");
    let verify = |code: &str, key: &str| json!({"tenant": "acme", "email": email, "code": code, "registration": key});
    // Mallory's code is dead; Alice's code with Mallory's key does nothing, however
    // often, and spends none of Alice's five tries.
    let r = call(&c, "POST", "/verify", verify(&first, &mallory)).await;
    assert_eq!((r.0, r.1["code"].as_str()), (403, Some("wrong-code")));
    for _ in 0..6 {
        let r = call(&c, "POST", "/verify", verify(&second, &mallory)).await;
        assert_eq!((r.0, r.1["code"].as_str()), (403, Some("wrong-code")));
    }
    let r = call(&c, "POST", "/verify", verify(&first, &alice)).await;
    assert_eq!((r.0, r.1["code"].as_str()), (403, Some("wrong-code")));
    let r = call(&c, "POST", "/verify", verify(&second, &alice)).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    // The account is Alice's: her password opens it, Mallory's does not.
    let share = STANDARD.encode(KeyShare::generate().unwrap().as_bytes());
    let login =
        |pw: &str| json!({"tenant": "acme", "email": email, "password": pw, "key_share": share});
    let r = call(&c, "POST", "/login", login("mallory's password")).await;
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("wrong-password")));
    let r = call(&c, "POST", "/login", login(PASSWORD)).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    // A registration of the now verified address changes nothing.
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": email, "password": "mallory's password", "registration": mallory}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let r = call(&c, "POST", "/login", login("mallory's password")).await;
    assert_eq!((r.0, r.1["code"].as_str()), (401, Some("wrong-password")));
}

/// Header mode would leave paths (file and share ids, a file's name) and headers
/// readable on the wire: the broker takes full-request mode only.
#[tokio::test]
async fn header_mode_requests_are_refused() {
    let t = TestBroker::start(&["acme"]).await;
    let u = t.user("acme", "alice@example.test").await;
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=secret-plans.pdf"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["code"], "full-request-mode-required", "{v}");
    let r = u
        .client
        .get(&format!("{PREFIX}/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was stored; in full-request mode the same session works.
    let r = call(&u.client, "GET", "/files", Value::Null).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["files"].as_array().unwrap().len(), 0);
}

/// Guesses spread over many addresses still meet the account's own limit, which holds
/// before any password is checked (the right password too, until it refills), tells the
/// owner, and leaves other accounts alone; a refused check that is not a wrong password
/// (an unverified account) costs the address as well.
#[tokio::test]
async fn failed_logins_are_limited_per_account_and_refused_checks_cost() {
    let settings = BrokerSettings {
        account_failure_burst: 3,
        account_failure_refill: Duration::from_secs(3600),
        ..BrokerSettings::default()
    };
    let t = TestBroker::start_with(&["acme"], settings).await;
    let mut alice = t.user("acme", "alice@example.test").await;
    let mut bob = t.user("acme", "bob@example.test").await;
    let c = t.client().await;
    let wrong = json!({"tenant": "acme", "email": "alice@example.test", "password": "wrong password",
                       "key_share": STANDARD.encode([0u8; 32])});
    // Sent at once (the attempts are taken before the password is hashed): exactly as
    // many are checked as the account allows, however many are in flight.
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(t.client().await);
    }
    let answers = futures_util::future::join_all(
        clients
            .iter()
            .map(|c| call(c, "POST", "/login", wrong.clone())),
    )
    .await;
    let checked = answers.iter().filter(|r| r.0 == 401).count();
    let locked = answers
        .iter()
        .filter(|r| r.1["code"] == "account-locked")
        .count();
    assert_eq!((checked, locked), (3, 9), "{answers:?}");
    let r = call(&c, "POST", "/login", wrong).await;
    assert_eq!((r.0, r.1["code"].as_str()), (429, Some("account-locked")));
    let r = alice.login().await;
    assert_eq!((r.0, r.1["code"].as_str()), (429, Some("account-locked")));
    let notice = t
        .mail_to(
            "alice@example.test",
            "failed logins to your sessioncert broker account",
        )
        .await;
    assert!(notice.contains("paused"), "{notice}");
    // One notice, however often the locked account is tried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let notices = std::fs::read_dir(t.outbox())
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("failed logins to your sessioncert broker account")
        })
        .count();
    assert_eq!(notices, 1);
    let r = bob.login().await;
    assert_eq!(r.0, 200, "{:?}", r.1);

    // An unverified account with its right password: refused, and counted.
    let settings = BrokerSettings {
        failure_burst: 4,
        failure_refill: Duration::from_secs(3600),
        ..BrokerSettings::default()
    };
    let t = TestBroker::start_with(&["acme"], settings).await;
    let c = t.client().await;
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": "carol@example.test", "password": PASSWORD,
               "registration": registration("carol")}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let login = json!({"tenant": "acme", "email": "carol@example.test", "password": PASSWORD,
                       "key_share": STANDARD.encode([0u8; 32])});
    for _ in 0..3 {
        let r = call(&c, "POST", "/login", login.clone()).await;
        assert_eq!((r.0, r.1["code"].as_str()), (403, Some("not-verified")));
    }
    let r = call(&c, "POST", "/login", login).await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (429, Some("too-many-failures"))
    );
}

/// Per-user quotas (files, bytes, open shares), share and mail budgets, and upload slots.
#[tokio::test]
async fn quotas_and_budgets_hold() {
    let settings = BrokerSettings {
        max_files_per_user: 3,
        max_bytes_per_user: 3 * CHUNK as u64,
        max_open_shares_per_user: 2,
        recipient_mail_burst: 3,
        recipient_mail_refill: Duration::from_secs(3600),
        uploads_per_user: 1,
        ..BrokerSettings::default()
    };
    let t = TestBroker::start_with(&["acme"], settings).await;
    let u = t.user("acme", "alice@example.test").await;
    let a = u.upload("a", pseudo_random(2 * CHUNK, 1)).await;
    // Over the bytes left: refused, nothing kept.
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=big"))
        .full(true)
        .body(pseudo_random(2 * CHUNK + 1, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507, "{}", String::from_utf8_lossy(r.body()));
    assert!(String::from_utf8_lossy(r.body()).contains("quota-exceeded"));
    let b = u.upload("b", pseudo_random(10, 3)).await;
    let c_id = u.upload("c", pseudo_random(10, 4)).await;
    // Over the file count.
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=d"))
        .full(true)
        .body(b"d".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let r = call(&u.client, "GET", "/files", Value::Null).await;
    assert_eq!(r.1["files"].as_array().unwrap().len(), 3);
    assert_eq!(t.file_objects().len(), 3, "{:?}", t.file_objects());

    // Mails: three per recipient (the sharer's copies count: Alice had her code and
    // gets a copy of each share); open shares: two, then refused.
    // A share is a copy and counts in the byte quota: file `a` (two chunks) does not fit.
    let r = call(
        &u.client,
        "POST",
        &format!("/files/{a}/shares"),
        json!({"to": "bob@example.test"}),
    )
    .await;
    assert_eq!((r.0, r.1["code"].as_str()), (507, Some("quota-exceeded")));
    let path = format!("/files/{c_id}/shares");
    let share = |to: &str| call(&u.client, "POST", &path, json!({ "to": to }));
    assert_eq!(share("bob@example.test").await.0, 201);
    assert_eq!(share("bob@example.test").await.0, 201);
    let r = share("carol@example.test").await;
    assert_eq!((r.0, r.1["code"].as_str()), (507, Some("quota-exceeded")));
    let r = call(&u.client, "GET", "/shares", Value::Null).await;
    let first = r.1["shares"][0]["id"].as_str().unwrap().to_owned();
    let r = call(
        &u.client,
        "DELETE",
        &format!("/shares/{first}"),
        Value::Null,
    )
    .await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    // Bob has a mail left, Alice (the sharer) none: refused, naming her.
    let r = share("bob@example.test").await;
    assert_eq!((r.0, r.1["code"].as_str()), (429, Some("too-many-mails")));
    assert!(
        r.1["error"]
            .as_str()
            .unwrap()
            .contains("alice@example.test"),
        "{:?}",
        r.1
    );

    // One upload at a time for this user: a second one meanwhile is refused.
    let r = call(&u.client, "DELETE", &format!("/files/{b}"), Value::Null).await;
    assert!(r.0 < 300, "{:?}", r);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<bytes::Bytes, std::io::Error>>();
    // More than a chunk, so the request reaches the broker while its body is still open.
    tx.send(Ok(bytes::Bytes::from(vec![1u8; 100_000]))).unwrap();
    let rx = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let slow = tokio::spawn({
        let c = u.client.clone();
        async move {
            c.post(&format!("{PREFIX}/files?name=slow"))
                .full(true)
                .body_stream(rx)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = u
        .client
        .post(&format!("{PREFIX}/files?name=second"))
        .full(true)
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "{}", String::from_utf8_lossy(r.body()));
    assert!(String::from_utf8_lossy(r.body()).contains("too-many-uploads"));
    drop(tx);
    let _ = slow.await;
}

/// A crash between an object's completion and its row leaves an object no id names;
/// the sweep deletes those once they are old enough, and nothing a row names.
#[tokio::test]
async fn orphan_objects_are_swept() {
    let t = TestBroker::start(&["acme"]).await;
    let u = t.user("acme", "alice@example.test").await;
    let body = pseudo_random(CHUNK + 3, 9);
    let id = u.upload("kept.bin", body.clone()).await;
    let path = format!("/files/{id}/shares");
    let r = call(&u.client, "POST", &path, json!({"to": "bob@example.test"})).await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let objects = t.objects();
    let stray_file = objects.join("files/acme/aaaaaaaaaaaaaaaaaaaaaaaaaa");
    let stray_share = objects.join("shares/bbbbbbbbbbbbbbbbbbbbbbbbbb");
    for p in [&stray_file, &stray_share] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"left by a crash").unwrap();
    }
    assert_eq!(t.file_objects().len(), 4);
    // Too young: an upload on another instance may be about to write its row.
    assert_eq!(t.broker.sweep_orphans(Duration::from_secs(3600)).await, 0);
    assert_eq!(t.file_objects().len(), 4);
    assert_eq!(t.broker.sweep_orphans(Duration::ZERO).await, 2);
    assert!(!stray_file.exists() && !stray_share.exists());
    assert_eq!(t.file_objects().len(), 2);
    let (status, back) = u.download(&id).await.unwrap();
    assert_eq!((status, back == body), (200, true));
}

/// Someone holding the database and the root key (here: a broker started on both) can
/// neither deliver nor open the mail another instance queued: its sealing key lived only
/// in that instance's memory. The stale row is given up, its text wiped.
#[tokio::test]
async fn mail_queued_by_a_stopped_instance_opens_for_no_one() {
    let first = TestBroker::start_without_workers(&["acme"]).await;
    let c = first.client().await;
    let r = call(
        &c,
        "POST",
        "/register",
        json!({"tenant": "acme", "email": "alice@example.test", "password": PASSWORD,
               "registration": registration("alice@example.test")}),
    )
    .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let db = format!("sqlite:{}", first.data().join("broker.db").display());
    let store = sessioncert_broker_server::store::open(&db).await.unwrap();
    assert_eq!(store.outbox_pending().await.unwrap(), 1);

    let second = first.restart().await;
    // The new instance's own mail flows (so its worker has passed over the old row)...
    let _ = second.user("acme", "bob@example.test").await;
    // ...but the old row was not delivered, and is not given up while it may still
    // belong to a live instance.
    let eml_to_alice = || {
        std::fs::read_dir(second.outbox())
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .contains("alice@example.test")
            })
            .count()
    };
    assert_eq!(eml_to_alice(), 0);
    assert_eq!(store.outbox_pending().await.unwrap(), 1);
    assert_eq!(
        second
            .broker
            .give_up_foreign_notifications(Duration::from_secs(3600))
            .await,
        0
    );
    assert_eq!(
        second
            .broker
            .give_up_foreign_notifications(Duration::ZERO)
            .await,
        1
    );
    assert_eq!(store.outbox_pending().await.unwrap(), 0);
    assert_eq!(eml_to_alice(), 0);
    // Alice registers again and gets a code that works.
    let u = second.user("acme", "alice@example.test").await;
    assert_eq!(u.email, "alice@example.test");
}
