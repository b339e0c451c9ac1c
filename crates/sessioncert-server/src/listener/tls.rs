//! TLS termination for [`super::serve_tls`]: loading a certificate chain and key from
//! PEM files into a rustls server configuration (aws-lc-rs provider).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS certificate or key could not be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("{}: cannot read it: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not usable PEM of the kind expected.
    #[error("{}: {reason}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key do not go together, or rustls refused them.
    #[error("{} with {}: {reason}", .cert.display(), .key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn pem_error(path: &Path, e: pem::Error, what: &str) -> TlsConfigError {
    match e {
        pem::Error::Io(source) => TlsConfigError::Read {
            path: path.to_owned(),
            source,
        },
        pem::Error::NoItemsFound => TlsConfigError::Pem {
            path: path.to_owned(),
            reason: format!("no {what} in it"),
        },
        other => TlsConfigError::Pem {
            path: path.to_owned(),
            reason: format!("not valid PEM: {other:?}"),
        },
    }
}

/// The certificate chain in `cert_pem` (leaf first, then intermediates) and the
/// private key in `key_pem` (PKCS#8, PKCS#1 RSA or SEC1 EC) as a rustls server
/// configuration on the aws-lc-rs provider, TLS 1.2 and 1.3, no client certificates.
/// ALPN is set by [`super::serve_tls`] from its limits.
pub fn server_config_from_pem_files(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| pem_error(cert_pem, e, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert_pem, e, "certificate"))?;
    if chain.is_empty() {
        return Err(TlsConfigError::Pem {
            path: cert_pem.to_owned(),
            reason: "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| {
        pem_error(
            key_pem,
            e,
            "PEM private key (PKCS#8, RSA or EC: -----BEGIN PRIVATE KEY-----)",
        )
    })?;
    // A key file, once known to be one. Like the server's own key files (see `keys.rs`): a private key that group or
    // others may read is refused, as ssh refuses one.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_pem)
            .map_err(|source| TlsConfigError::Read {
                path: key_pem.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(TlsConfigError::Pem {
                path: key_pem.to_owned(),
                reason: format!(
                    "permissions {:04o} are too open: a private key must be private to its \
                     owner (chmod 600 {})",
                    mode & 0o777,
                    key_pem.display()
                ),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| TlsConfigError::Mismatch {
            cert: cert_pem.to_owned(),
            key: key_pem.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}
