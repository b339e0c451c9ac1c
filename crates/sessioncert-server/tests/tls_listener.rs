//! `listener::serve_tls`: the hardened accept loop terminating TLS. Sealed requests work
//! over it, and an anonymous peer's TLS handshake is bounded like a request head: by
//! the header timeout, inside the connection caps; the write-stall watchdog still works
//! under TLS; ALPN offers h2 only when HTTP/2 is on. Certificates are made with rcgen.

mod common;
mod listener_common;

use listener_common::{generous_limits, BIG_RESPONSE};
use sessioncert_client::{Client, TlsOptions, Trust};
use sessioncert_proto::Pin;
use sessioncert_server::listener::rustls::{self, pki_types};
use sessioncert_server::listener::{
    serve_tls, server_config_from_pem_files, ListenerLimits, Stopped, TlsConfigError,
};
use sessioncert_server::{now_ms, ServerKeys, SessionCert};
use sessioncert_store::MemoryStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEC: Duration = Duration::from_secs(1);

/// A test CA and a server certificate it issued for 127.0.0.1 and localhost, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sessioncert test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The server configuration from PEM files, as `serve --tls-cert/--tls-key` loads it.
fn server_config(p: &Pki) -> Arc<rustls::ServerConfig> {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server_config_from_pem_files(&cert, &key).unwrap()
}

struct TlsServer {
    addr: SocketAddr,
    base: String,
    pin: Pin,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Stopped>>,
}

impl TlsServer {
    /// Sealed `/apiTest`, plain `/plain/apiTest`, plain `/big` ([`BIG_RESPONSE`] bytes)
    /// behind `serve_tls`.
    async fn start(p: &Pki, limits: ListenerLimits) -> TlsServer {
        let keys = ServerKeys::ephemeral(now_ms()).unwrap();
        let pin = keys.pin();
        let sc = SessionCert::builder(Arc::new(keys), Arc::new(MemoryStore::new()))
            .limits(generous_limits())
            .build()
            .await
            .unwrap();
        let app = sc
            .router(common::sealed_routes())
            .route("/plain/apiTest", axum::routing::post(common::echo))
            .route(
                "/big",
                axum::routing::get(|| async { vec![b'b'; BIG_RESPONSE] }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_tls(listener, server_config(p), app, limits, async {
            let _ = rx.await;
        }));
        TlsServer {
            addr,
            base: format!("https://{addr}"),
            pin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(&mut self) -> Stopped {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

/// A raw TLS client trusting the test CA, offering `alpn`.
fn connector(p: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki_types::CertificateDer::from_pem_slice(p.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(c))
}

async fn tls_connect(
    p: &Pki,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector(p, alpn).connect(name, tcp).await
}

/// Reads until the peer closes (EOF, reset or a TLS error), at most `limit`. Returns
/// what arrived and when it closed (`None`: still open).
async fn read_until_closed<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok();
    (got, closed)
}

async fn client(srv: &TlsServer, p: &Pki) -> Client {
    Client::builder(&srv.base, Trust::Pin(srv.pin))
        .tls(TlsOptions::new().add_ca_pem(p.ca_pem.as_bytes()).unwrap())
        .build()
        .await
        .expect("handshake over TLS")
}

#[tokio::test]
async fn sealed_requests_in_both_modes_over_tls() {
    let p = pki();
    let mut srv = TlsServer::start(&p, ListenerLimits::default()).await;
    let c = client(&srv, &p).await;
    for full in [false, true] {
        let body = format!("{{\"over\":\"tls\",\"full\":{full}}}");
        let r = c
            .post("/apiTest")
            .header("content-type", "application/json")
            .body(body.clone())
            .full(full)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["requestData"]["over"], "tls", "{v}");
        assert_eq!(common::executions(body.as_bytes()), 1);
    }
    // Without the CA the client refuses the server's certificate before sending.
    let e = Client::connect(&srv.base, Trust::Pin(srv.pin))
        .await
        .unwrap_err();
    assert!(e.is_tls(), "{e:?}");
    assert_eq!(srv.stop().await.connections_cut, 0);
}

#[tokio::test]
async fn alpn_offers_h2_only_when_http2_is_on() {
    let p = pki();
    let h1 = TlsServer::start(&p, ListenerLimits::default()).await;
    let s = tls_connect(&p, h1.addr, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A client that insists on h2 is refused by the TLS handshake.
    assert!(tls_connect(&p, h1.addr, &[b"h2"]).await.is_err());

    let h2 = TlsServer::start(
        &p,
        ListenerLimits {
            http2: true,
            ..ListenerLimits::default()
        },
    )
    .await;
    let s = tls_connect(&p, h2.addr, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // And the Rust client, which offers h2 too, works over it.
    let c = client(&h2, &p).await;
    let r = c.post("/apiTest").body("h2 body").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A peer that opens connections and never finishes (or never starts) the TLS handshake
/// holds its slots only until the header timeout; meanwhile the per-address cap counts
/// it, and a peer over the cap gets `429` over TLS.
#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_cut_at_the_header_timeout() {
    let p = pki();
    let limits = ListenerLimits {
        header_timeout: SEC,
        max_connections_per_addr: 2,
        exempt_loopback: false,
        ..ListenerLimits::default()
    };
    let srv = TlsServer::start(&p, limits).await;
    // One says nothing; one trickles a ClientHello's first bytes, one every 200 ms.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut trickler = TcpStream::connect(srv.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        let (mut r, mut w) = trickler.split();
        let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
        let read = read_until_closed(&mut r, 5 * SEC);
        tokio::pin!(read);
        for b in hello.iter().cycle() {
            tokio::select! {
                (_, closed) = &mut read => return closed,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    let _ = w.write_all(&[*b]).await;
                }
            }
        }
        unreachable!()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Both slots of this address are taken by the handshakes: a third peer is refused.
    let mut third = tls_connect(&p, srv.addr, &[b"http/1.1"]).await.unwrap();
    third
        .write_all(b"GET /plain HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut third, 3 * SEC).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.contains("sessioncert-error: rate_limited"),
        "{answer}"
    );
    assert!(closed.is_some());

    let (_, silent_closed) = read_until_closed(&mut silent, 5 * SEC).await;
    let silent_closed = silent_closed.expect("a silent connection was never cut");
    let trickle_closed = trickle
        .await
        .unwrap()
        .expect("a trickled handshake was never cut");
    for t in [silent_closed, trickle_closed] {
        assert!(
            t >= Duration::from_millis(500) && t < Duration::from_millis(2500),
            "cut after {t:?}, the header timeout is 1 s"
        );
    }
    // The slots are free again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = client(&srv, &p).await;
    assert_eq!(
        c.post("/apiTest")
            .body("after")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The server-wide cap counts a connection from its accept, TLS handshake included: a
/// stalled handshake holds the only slot until the header timeout cuts it.
#[tokio::test]
async fn a_stalled_handshake_holds_a_server_wide_slot_until_the_timeout() {
    let p = pki();
    let limits = ListenerLimits {
        header_timeout: SEC,
        max_connections: 1,
        ..ListenerLimits::default()
    };
    let srv = TlsServer::start(&p, limits).await;
    let _silent = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let mut s = tokio::time::timeout(5 * SEC, tls_connect(&p, srv.addr, &[b"http/1.1"]))
        .await
        .expect("the stalled handshake still held the only slot after 5 s")
        .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "a second handshake completed after {waited:?} with the only slot held"
    );
    s.write_all(b"POST /plain/apiTest HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, 3 * SEC).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

/// Under TLS the watchdog watches the TCP socket: a peer that stops reading a large
/// response is cut after the write-stall timeout.
#[tokio::test]
async fn a_tls_peer_that_stops_reading_is_cut_after_the_write_stall_timeout() {
    let p = pki();
    let limits = ListenerLimits {
        write_stall_timeout: SEC,
        idle_timeout: Duration::from_secs(60),
        ..ListenerLimits::default()
    };
    let mut srv = TlsServer::start(&p, limits).await;
    let mut s = tls_connect(&p, srv.addr, &[b"http/1.1"]).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (got, closed) = read_until_closed(&mut s, 10 * SEC).await;
    assert!(
        closed.is_some(),
        "still open after reading {} bytes",
        got.len()
    );
    assert!(
        got.len() < BIG_RESPONSE,
        "the whole response arrived ({} bytes): the connection was not cut",
        got.len()
    );
    // A peer that reads gets everything.
    let mut s = tls_connect(&p, srv.addr, &[b"http/1.1"]).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (all, _) = read_until_closed(&mut s, 30 * SEC).await;
    assert!(all.len() > BIG_RESPONSE, "{}", all.len());
    srv.stop().await;
}

#[test]
fn unusable_certificate_or_key_files_are_refused_naming_the_file() {
    let p = pki();
    let other = pki();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        // Private, as a key file must be (an open one is its own case below).
        #[cfg(unix)]
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        f
    };
    let cert = file("cert.pem", &p.cert_pem);
    let key = file("key.pem", &p.key_pem);
    let other_key = file("other-key.pem", &other.key_pem);
    let garbage = file("garbage.pem", "not pem at all\n");
    let missing = dir.path().join("missing.pem");
    // The three key encodings a PEM key may come in are accepted (here: PKCS#8).
    assert!(server_config_from_pem_files(&cert, &key).is_ok());
    let open_key = file("open-key.pem", &p.key_pem);
    #[cfg(unix)]
    std::fs::set_permissions(
        &open_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let cases: [(&std::path::Path, &std::path::Path, &str); 6] = [
        (
            &cert,
            &open_key,
            "open-key.pem: permissions 0644 are too open",
        ),
        (&missing, &key, "missing.pem: cannot read it"),
        (&garbage, &key, "garbage.pem: no PEM certificate"),
        (&key, &key, "key.pem: no PEM certificate"),
        (&cert, &cert, "cert.pem: no PEM private key"),
        (&cert, &other_key, "cert.pem with"),
    ];
    for (c, k, want) in cases {
        let e: TlsConfigError = server_config_from_pem_files(c, k).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(want), "{c:?} {k:?}: {text}");
    }
}
