//! The TLS options of every command that takes a URL (`--cacert`, `-k`), and the
//! HTTP clients built with them.

use clap::Args;
use sessioncert_client::{ClientError, TlsFailure, TlsOptions};
use std::path::PathBuf;

/// Exit status when the TLS handshake with the server failed (its certificate is not
/// trusted, it does not speak TLS, …): nothing was sent.
pub const EXIT_TLS: u8 = 7;

/// `--cacert FILE…` and `-k/--insecure`.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// Also trust the CA certificate(s) in this PEM file for https:// URLs, beside the
    /// system's trust store (repeatable).
    #[arg(long = "cacert", value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Accept any TLS certificate for https:// URLs (expired, self-signed, another
    /// name). TLS only: the server's identity is still checked against --pin.
    #[arg(short = 'k', long)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The TLS settings these arguments ask for; a CA file that is missing, unreadable
    /// or holds no PEM certificate is an error naming it.
    pub fn options(&self) -> Result<TlsOptions, ClientError> {
        let mut tls = TlsOptions::new().danger_accept_invalid_certs(self.insecure);
        for f in &self.cacert {
            tls = tls.add_ca_file(f)?;
        }
        Ok(tls)
    }
}

/// What to do about a TLS failure, appended to its error line.
pub fn hint(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Tls {
            kind: TlsFailure::Certificate,
            ..
        } => Some(
            "pass --cacert FILE (the CA that issued it) or -k (skips the TLS certificate \
             check only; the pin is still checked)",
        ),
        ClientError::Tls {
            kind: TlsFailure::NotTls,
            ..
        } => Some("use an http:// URL for a plain HTTP server"),
        _ => None,
    }
}
