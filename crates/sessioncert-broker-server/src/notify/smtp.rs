//! Delivery over SMTP (lettre, TLS on rustls with the aws-lc-rs provider).

use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{redact_smtp, NotifyError};

/// An SMTP relay from its URL. No connection pool: one connection per message, as
/// notifications are few and a pooled connection may have gone stale between them.
pub(super) struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    shown: String,
}

impl Smtp {
    pub(super) fn new(raw: &str, timeout: Duration) -> Result<Smtp, NotifyError> {
        let shown = redact_smtp(raw);
        // Errors name the redacted URL at most: the raw one may hold a password.
        let url = url::Url::parse(raw)
            .map_err(|e| NotifyError::Config(format!("SMTP URL {shown}: {e}")))?;
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(NotifyError::Config(format!(
                "SMTP URL {shown}: the scheme must be smtp or smtps"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(NotifyError::Config(format!("SMTP URL {shown}: no host")));
        }
        for (key, value) in url.query_pairs() {
            if key != "tls" || !matches!(&*value, "required" | "opportunistic") {
                return Err(NotifyError::Config(format!(
                    "SMTP URL {shown}: the only query is tls=required or tls=opportunistic"
                )));
            }
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(raw)
            .map_err(|e| NotifyError::Config(format!("SMTP URL {shown}: {e}")))?
            .timeout(Some(timeout))
            .build();
        Ok(Smtp { transport, shown })
    }

    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// Sends one message; `overall` bounds the whole exchange (lettre's timeout is per
    /// step, so a server trickling replies could otherwise hold the worker).
    pub(super) async fn send(
        &self,
        message: Message,
        overall: Duration,
    ) -> Result<(), NotifyError> {
        match tokio::time::timeout(overall, self.transport.send(message)).await {
            Err(_) => Err(NotifyError::Transient(format!(
                "SMTP {}: no answer within {overall:?}",
                self.shown
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&self.shown, &e)),
        }
    }
}

/// 5xx replies and errors in the message itself are permanent; 4xx replies, connection
/// and TLS failures, timeouts and garbled replies may pass.
fn classify(shown: &str, e: &SmtpError) -> NotifyError {
    // lettre's text holds the reply code and the server's words, or the I/O error;
    // never the message.
    let text = format!("SMTP {shown}: {e}");
    if e.is_permanent() || e.is_client() {
        NotifyError::Permanent(text)
    } else {
        NotifyError::Transient(text)
    }
}
