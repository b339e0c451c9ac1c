//! HTTPS for the HTTP clients the client builds: reqwest on rustls (aws-lc-rs provider),
//! certificates checked by the platform's verifier (rustls-platform-verifier) with the
//! CA certificates given added to its trust store, and the classification of TLS
//! handshake failures into [`ClientError::Tls`].
//!
//! TLS is a transport layer under the protocol: whatever it accepts, the signed key
//! configuration is still verified against the pinned identity before anything is
//! sealed. [`TlsOptions::danger_accept_invalid_certs`] therefore never lets a stranger
//! pass as the server; it only makes the TLS layer worth what plain HTTP is.

use crate::error::{ClientError, TlsFailure};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// TLS settings for the HTTP client: extra CA certificates trusted beside the
/// platform's trust store, and whether to skip the certificate check altogether.
///
/// ```no_run
/// # async fn demo(pin: sessioncert_client::Pin) -> Result<(), sessioncert_client::ClientError> {
/// use sessioncert_client::{Client, TlsOptions, Trust};
/// let tls = TlsOptions::new().add_ca_file("internal-ca.pem")?;
/// let client = Client::builder("https://api.internal", Trust::Pin(pin))
///     .tls(tls)
///     .build()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct TlsOptions {
    extra_roots: Vec<CertificateDer<'static>>,
    accept_invalid_certs: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_roots", &self.extra_roots.len())
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

impl TlsOptions {
    /// The platform's trust store, certificates checked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts the CA certificates in this PEM file (one or several
    /// `-----BEGIN CERTIFICATE-----` blocks; other blocks such as keys are ignored).
    /// A self-signed server certificate given here is trusted as it is, as curl does,
    /// even when it is marked as a CA (as `openssl req -x509` makes them). A file that
    /// cannot be read, holds no certificate or a certificate that does not parse is
    /// refused with [`ClientError::CaCertificates`] naming it.
    pub fn add_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| ClientError::CaCertificates {
            origin: origin.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        self.add_ca_pem_from(&pem, origin)
    }

    /// Also trusts the CA certificates in this PEM text (as [`TlsOptions::add_ca_file`]).
    pub fn add_ca_pem(self, pem: &[u8]) -> Result<Self, ClientError> {
        self.add_ca_pem_from(pem, "the PEM data given".into())
    }

    fn add_ca_pem_from(mut self, pem: &[u8], origin: String) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject as _;
        let bad = |reason: String| ClientError::CaCertificates {
            origin: origin.clone(),
            reason,
        };
        let mut found = 0;
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|e| bad(format!("not valid PEM: {e}")))?;
            found += 1;
            // Parsed now as a trust anchor, so a broken certificate is reported here,
            // naming its file, not as a failure to connect later.
            rustls::RootCertStore::empty()
                .add(der.clone())
                .map_err(|e| bad(format!("certificate {found} is not usable as a CA: {e}")))?;
            self.extra_roots.push(der);
        }
        if found == 0 {
            return Err(bad(
                "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        Ok(self)
    }

    /// Accepts any TLS certificate: expired, self-signed, for another name. **For tests
    /// and debugging only.** The server's identity is still checked against the pin
    /// (sealed bodies and covered headers stay confidential and authenticated), but
    /// everything outside the seal — the method, path and query, uncovered headers such
    /// as cookies, the handshake's public messages — is open to whoever sits on the
    /// path, exactly as over plain HTTP.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Whether [`TlsOptions::danger_accept_invalid_certs`] is on.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }

    /// Sets these TLS settings on a reqwest client builder (timeouts, pools and the
    /// rest are left as they are). HTTP/2 is offered in ALPN beside HTTP/1.1.
    pub fn configure(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.accept_invalid_certs {
            Arc::new(Unchecked {
                provider: provider.clone(),
                accept: true,
            })
        } else {
            Arc::new(PlatformOnFirstUse {
                provider: provider.clone(),
                extra_roots: self.extra_roots.clone(),
                verifier: OnceLock::new(),
            })
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::InvalidRequest(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(builder.tls_backend_preconfigured(config))
    }
}

/// The platform's verifier, made at the first certificate to check: loading the system's
/// trust store costs milliseconds (about a third of a one-shot `request`), which a
/// client that only speaks `http://` should not pay.
#[derive(Debug)]
struct PlatformOnFirstUse {
    provider: Arc<CryptoProvider>,
    extra_roots: Vec<CertificateDer<'static>>,
    verifier: OnceLock<Arc<dyn ServerCertVerifier>>,
}

impl PlatformOnFirstUse {
    fn verifier(&self) -> &Arc<dyn ServerCertVerifier> {
        self.verifier.get_or_init(|| {
            match rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.extra_roots.iter().cloned(),
                self.provider.clone(),
            ) {
                Ok(v) => Arc::new(SelfSignedToo {
                    inner: v,
                    trusted: self.extra_roots.clone(),
                }),
                Err(e) => {
                    // A minimal container has no CA certificates: an https:// server
                    // then fails as not trusted (plain http:// never gets here).
                    tracing::warn!(
                        error = %e,
                        "no CA certificate could be loaded from the system, and none was \
                         given: https:// servers cannot be trusted"
                    );
                    Arc::new(Unchecked {
                        provider: self.provider.clone(),
                        accept: false,
                    })
                }
            }
        })
    }
}

impl ServerCertVerifier for PlatformOnFirstUse {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    /// Asked before any certificate arrives (for the ClientHello); the platform's
    /// verifier answers its provider's list on every platform, so it is not made here.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The platform's verifier, plus: a certificate the user gave as trusted that the
/// server presents as its own is accepted even when it is marked as a CA. webpki
/// refuses a CA certificate as a server's (`CaUsedAsEndEntity`), which rejects the
/// self-signed certificates `openssl req -x509` makes; OpenSSL and so curl accept
/// them when they are trusted directly.
#[derive(Debug)]
struct SelfSignedToo {
    inner: rustls_platform_verifier::Verifier,
    trusted: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for SelfSignedToo {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) && self
                    .trusted
                    .iter()
                    .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                // webpki checks the validity period before the CA flag, so this
                // certificate is in date (the test `an_expired_self_signed_ca_is_refused`
                // holds that); its name is checked here.
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// No certificate check: every certificate accepted (`-k`), or every one refused as
/// of an unknown issuer (no trust anchor at all). The handshake's signatures are still
/// verified, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
    accept: bool,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls error somewhere in `e`'s chain of causes. An I/O error hides the error it
/// wraps from `source()` (it shows it as its own message), and the TLS connector wraps
/// tokio-rustls's I/O error in another, so I/O errors are looked into.
fn rustls_error_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

/// What went wrong, when `e` is a failed TLS handshake while connecting (nothing of the
/// request was sent). TLS errors later in a connection stay transport errors.
pub(crate) fn handshake_failure(e: &reqwest::Error) -> Option<(TlsFailure, String)> {
    if !e.is_connect() {
        return None;
    }
    use rustls::{CertificateError as C, Error as R};
    let r = rustls_error_in(e)?;
    let host = e
        .url()
        .and_then(|u| u.host_str())
        .unwrap_or("the server")
        .to_owned();
    let cert = |why: &str| {
        (
            TlsFailure::Certificate,
            format!("certificate for {host} not trusted ({why})"),
        )
    };
    Some(match r {
        R::InvalidCertificate(c) => match c {
            C::UnknownIssuer => cert("unknown issuer"),
            C::BadSignature => cert("bad signature"),
            C::NotValidForName | C::NotValidForNameContext { .. } => cert("it is for another name"),
            C::Expired | C::ExpiredContext { .. } => cert("expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => cert("not valid yet"),
            C::Revoked => cert("revoked"),
            C::Other(o) => match o.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => {
                    cert("a CA certificate presented as the server's own, and not one trusted")
                }
                _ => cert(&o.to_string()),
            },
            other => cert(&format!("{other:?}")),
        },
        R::NoCertificatesPresented => cert("the server presented none"),
        R::InvalidMessage(_) | R::InappropriateMessage { .. } => (
            TlsFailure::NotTls,
            format!("{host} did not answer in TLS (is it a plain http:// server?)"),
        ),
        other => (
            TlsFailure::Handshake,
            format!("handshake with {host} failed: {other}"),
        ),
    })
}
