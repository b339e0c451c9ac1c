//! HTTPS in the client: the mock server behind a TLS-terminating forwarder (tokio-rustls,
//! certificates made with rcgen), reached with the platform's trust store, extra CA
//! certificates, or with the certificate check off — which never relaxes the pin.

mod common;

use common::Mock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sessioncert_client::{Client, ClientError, TlsFailure, TlsOptions, Trust};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

/// A server certificate, its key, and the PEM a client would be given to trust it.
struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    trust_pem: String,
}

/// A certificate for `names` issued by a fresh test CA; `trust_pem` is the CA's.
fn ca_issued(names: &[&str]) -> ServerCert {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sessioncert test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    ServerCert {
        chain: vec![leaf.der().clone()],
        key_der: key.serialize_der(),
        trust_pem: ca.pem(),
    }
}

/// A self-signed certificate marked as a CA, as `openssl req -x509` makes them; it is
/// its own trust anchor. `expired`: its validity ended in 2001.
fn self_signed_ca(names: &[&str], expired: bool) -> ServerCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
        trust_pem: cert.pem(),
    }
}

/// A TLS-terminating forwarder on 127.0.0.1 in front of `upstream`, offering `alpn`;
/// records the protocol each connection negotiated.
struct TlsFront {
    addr: SocketAddr,
    negotiated: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

async fn tls_front(upstream: SocketAddr, cert: &ServerCert, alpn: &[&[u8]]) -> TlsFront {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let negotiated = Arc::new(Mutex::new(Vec::new()));
    let seen = negotiated.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.lock()
                    .unwrap()
                    .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    TlsFront { addr, negotiated }
}

fn tls_kind(e: &ClientError) -> Option<(TlsFailure, String)> {
    match e {
        ClientError::Tls { kind, detail, .. } => Some((*kind, detail.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_before_anything_is_sent() {
    let mock = Mock::start().await;
    let cert = ca_issued(&["localhost"]);
    let front = tls_front(mock.addr, &cert, &[]).await;
    let url = format!("https://localhost:{}", front.addr.port());
    let e = Client::connect(&url, Trust::Pin(mock.state.pin()))
        .await
        .unwrap_err();
    let (kind, detail) = tls_kind(&e).unwrap_or_else(|| panic!("not a TLS error: {e:?}"));
    assert_eq!(kind, TlsFailure::Certificate);
    assert_eq!(
        e.to_string(),
        "TLS: certificate for localhost not trusted (unknown issuer)",
        "{detail}"
    );
    assert!(e.is_tls());
    // Nothing reached the server, not even the key configuration request.
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 0);
    assert_eq!(mock.state.handshakes(), 0);
}

#[tokio::test]
async fn with_the_ca_given_the_whole_flow_runs_over_https() {
    let mock = Mock::start().await;
    let cert = ca_issued(&["localhost", "127.0.0.1"]);
    let front = tls_front(mock.addr, &cert, &[]).await;
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}", front.addr.port());
        let client = Client::builder(&url, Trust::Pin(mock.state.pin()))
            .tls(
                TlsOptions::new()
                    .add_ca_pem(cert.trust_pem.as_bytes())
                    .unwrap(),
            )
            .build()
            .await
            .unwrap();
        let r = client
            .post("/notes")
            .json(&serde_json::json!({"over": "https"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let echo: serde_json::Value = r.json().unwrap();
        assert!(echo["body"].as_str().unwrap().contains("https"), "{echo}");
        client.close().await.unwrap();
    }
    assert_eq!(mock.state.handshakes(), 2);
}

#[tokio::test]
async fn insecure_tls_still_checks_the_pin() {
    let mock = Mock::start().await;
    let cert = ca_issued(&["some.other.name"]);
    let front = tls_front(mock.addr, &cert, &[]).await;
    let url = format!("https://127.0.0.1:{}", front.addr.port());
    let insecure = TlsOptions::new().danger_accept_invalid_certs(true);
    assert!(insecure.accepts_invalid_certs());
    // The right pin: an untrusted certificate for another name is accepted.
    let client = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(insecure.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(client.get("/x").send().await.unwrap().status(), 200);
    let handshakes = mock.state.handshakes();
    // A wrong pin is refused all the same, before any handshake.
    let wrong = sessioncert_proto::IdentityKey::generate().unwrap().pin();
    let e = Client::builder(&url, Trust::Pin(wrong))
        .tls(insecure)
        .build()
        .await
        .unwrap_err();
    assert!(e.is_untrusted(), "{e:?}");
    assert_eq!(mock.state.handshakes(), handshakes);
}

/// `openssl req -x509` makes a self-signed certificate marked as a CA; webpki refuses a
/// CA certificate as a server's own, curl accepts it when told to trust it. So does the
/// client — for exactly that certificate, for its names, while it is valid.
#[tokio::test]
async fn a_self_signed_ca_certificate_is_trusted_only_when_given() {
    let mock = Mock::start().await;
    let cert = self_signed_ca(&["localhost"], false);
    let front = tls_front(mock.addr, &cert, &[]).await;
    let given = TlsOptions::new()
        .add_ca_pem(cert.trust_pem.as_bytes())
        .unwrap();
    let url = format!("https://localhost:{}", front.addr.port());
    let client = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(given.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(client.get("/x").send().await.unwrap().status(), 200);

    // Not given: refused.
    let e = Client::connect(&url, Trust::Pin(mock.state.pin()))
        .await
        .unwrap_err();
    assert_eq!(
        tls_kind(&e).map(|k| k.0),
        Some(TlsFailure::Certificate),
        "{e:?}"
    );
    // Given, but another self-signed certificate is presented: refused.
    let other = self_signed_ca(&["localhost"], false);
    let e = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(
            TlsOptions::new()
                .add_ca_pem(other.trust_pem.as_bytes())
                .unwrap(),
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        tls_kind(&e).map(|k| k.0),
        Some(TlsFailure::Certificate),
        "{e:?}"
    );
    // Given, but reached under a name it is not for: refused.
    let url = format!("https://127.0.0.1:{}", front.addr.port());
    let e = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(given)
        .build()
        .await
        .unwrap_err();
    let (kind, detail) = tls_kind(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(kind, TlsFailure::Certificate);
    assert!(detail.contains("another name"), "{detail}");
}

/// The exception for a self-signed CA certificate relies on webpki checking the
/// validity period before the CA flag: an expired one must still be refused.
#[tokio::test]
async fn an_expired_self_signed_ca_is_refused() {
    let mock = Mock::start().await;
    let cert = self_signed_ca(&["localhost"], true);
    let front = tls_front(mock.addr, &cert, &[]).await;
    let url = format!("https://localhost:{}", front.addr.port());
    let e = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(
            TlsOptions::new()
                .add_ca_pem(cert.trust_pem.as_bytes())
                .unwrap(),
        )
        .build()
        .await
        .unwrap_err();
    let (kind, detail) = tls_kind(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(kind, TlsFailure::Certificate);
    assert!(detail.contains("expired"), "{detail}");
    assert_eq!(mock.state.config_fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn h2_is_used_when_the_server_offers_it() {
    let mock = Mock::start().await;
    let cert = ca_issued(&["localhost"]);
    let front = tls_front(mock.addr, &cert, &[b"h2", b"http/1.1"]).await;
    let url = format!("https://localhost:{}", front.addr.port());
    let client = Client::builder(&url, Trust::Pin(mock.state.pin()))
        .tls(
            TlsOptions::new()
                .add_ca_pem(cert.trust_pem.as_bytes())
                .unwrap(),
        )
        .build()
        .await
        .unwrap();
    let r = client.post("/h2").body("over h2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let negotiated = front.negotiated.lock().unwrap().clone();
    assert!(!negotiated.is_empty());
    assert!(
        negotiated.iter().all(|p| p.as_deref() == Some(&b"h2"[..])),
        "{negotiated:?}"
    );
}

#[tokio::test]
async fn an_https_url_for_a_plain_http_server_says_so() {
    let mock = Mock::start().await;
    let url = format!("https://127.0.0.1:{}", mock.addr.port());
    let e = Client::connect(&url, Trust::Pin(mock.state.pin()))
        .await
        .unwrap_err();
    let (kind, detail) = tls_kind(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(kind, TlsFailure::NotTls);
    assert!(detail.contains("plain http://"), "{detail}");
}

#[test]
fn ca_files_that_cannot_be_used_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = ca_issued(&["localhost"]);
    let two = format!("{}{}", good.trust_pem, ca_issued(&["x"]).trust_pem);
    let file = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    // Several certificates in one file, and other PEM blocks beside them, are fine.
    let key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert!(TlsOptions::new()
        .add_ca_file(file("bundle.pem", &format!("{two}{key_pem}")))
        .is_ok());
    let missing = dir.path().join("missing.pem");
    let cases = [
        (missing, "cannot read it"),
        (file("key.pem", &key_pem), "no PEM certificate"),
        (file("text.pem", "hello\n"), "no PEM certificate"),
        (
            file(
                "bad-base64.pem",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            ),
            "not valid PEM",
        ),
        (
            file(
                "not-a-cert.pem",
                "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
            ),
            "certificate 1 is not usable",
        ),
    ];
    for (path, want) in cases {
        let e = TlsOptions::new().add_ca_file(&path).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ClientError::CaCertificates { .. }), "{e:?}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(want), "{path:?}: {text}");
    }
}
