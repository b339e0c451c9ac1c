//! `gateway --legacy-session-cert`: a client of the original Session-Cert prototype talks
//! to a plain upstream through the gateway; the upstream sees plaintext, never the
//! legacy header, and the client gets the upstream's answer encrypted.

mod common;

use common::{gateway_legacy, upstream};
use sessioncert_gateway::{Route, RoutePolicy};
use sessioncert_legacy::{client, cryptojs};

struct Cert {
    id: u64,
    key: String,
}

async fn establish(base: &str) -> Cert {
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/sessionCert/publicKey"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let id = v["sessionCert"]["id"].as_u64().unwrap();
    let pem = v["sessionCert"]["publicKey"].as_str().unwrap().to_owned();
    let key = client::new_key().unwrap().to_string();
    let wrapped = client::wrap_key(&pem, key.as_bytes()).unwrap();
    let r = http
        .post(format!("{base}/sessionCert/symmetricKey"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "id": id, "symmetricKey": wrapped }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let answer = client::answer_test_string(&r.text().await.unwrap(), key.as_bytes()).unwrap();
    let r = http
        .patch(format!("{base}/sessionCert/establish"))
        .header("session-cert-id", id.to_string())
        .body(answer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Cert { id, key }
}

async fn send(base: &str, path: &str, c: &Cert, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("session-cert-id", c.id.to_string())
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_legacy_client_reaches_a_plain_upstream_through_the_gateway() {
    let up = upstream().await;
    // Even with every path plain, the legacy handshake stays the gateway's and a
    // legacy request is opened before it is forwarded.
    let mut policy = RoutePolicy::new();
    policy.add("/", Route::Plain).unwrap();
    let gw = gateway_legacy(&up.url(), policy).await;
    let c = establish(&gw.base).await;
    assert!(
        up.log
            .all()
            .iter()
            .all(|s| !s.uri.starts_with("/sessionCert")),
        "the legacy handshake was forwarded"
    );
    let req = cryptojs::encrypt(c.key.as_bytes(), b"to the upstream").unwrap();
    let (status, body) = send(&gw.base, "/api/echo", &c, &req).await;
    assert_eq!(status, 200);
    let seen = up.log.last();
    assert_eq!(&seen.body[..], b"to the upstream");
    assert!(seen.headers.get("session-cert-id").is_none());
    assert_eq!(
        seen.headers.get("sessioncert-session").unwrap(),
        &format!("legacy:{}", c.id)
    );
    let answer = cryptojs::decrypt(c.key.as_bytes(), &body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["body"], "to the upstream");
    // Replayed: refused by the gateway, never forwarded.
    let before = up.log.all().len();
    assert_eq!(send(&gw.base, "/api/echo", &c, &req).await.0, 403);
    assert_eq!(up.log.all().len(), before);
}

#[tokio::test]
async fn a_made_up_legacy_header_is_not_forwarded_on_a_plain_route() {
    let up = upstream().await;
    let mut policy = RoutePolicy::new();
    policy.add("/public", Route::Plain).unwrap();
    let gw = gateway_legacy(&up.url(), policy).await;
    let (status, _) = send(
        &gw.base,
        "/public/x",
        &Cert {
            id: 12345,
            key: String::new(),
        },
        "U2FsdGVkX19hYWFhYWFhYWFhYWFhYWFhYWFhYQ==",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        up.log.all().is_empty(),
        "a legacy request went upstream unopened"
    );
}
