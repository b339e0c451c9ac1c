//! Delivery of SMS through a webhook: `POST {"to": "+…", "text": "…"}`.

use std::error::Error as _;
use std::time::Duration;

use reqwest::{redirect, Client, StatusCode, Url};
use serde::Serialize;

use super::{redact_webhook, NotifyError};

pub(super) struct Webhook {
    url: Url,
    client: Client,
    shown: String,
}

#[derive(Serialize)]
struct Payload<'a> {
    to: &'a str,
    text: &'a str,
}

impl Webhook {
    pub(super) fn new(raw: &str, timeout: Duration) -> Result<Webhook, NotifyError> {
        // The raw URL may hold a token: errors never show it.
        let url =
            Url::parse(raw).map_err(|e| NotifyError::Config(format!("SMS webhook URL: {e}")))?;
        let shown = redact_webhook(&url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NotifyError::Config(format!(
                "SMS webhook URL {shown}: the scheme must be http or https"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(NotifyError::Config(format!(
                "SMS webhook URL {shown}: no host"
            )));
        }
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would turn the POST into a GET elsewhere: a configuration error.
            .redirect(redirect::Policy::none())
            .build()
            .map_err(|e| {
                NotifyError::Config(format!("SMS webhook {shown}: {}", chain(&e.without_url())))
            })?;
        Ok(Webhook { url, client, shown })
    }

    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// 2xx is delivered; 5xx, 429, timeouts and connection errors may pass; any other
    /// answer is permanent. The answer's body is not read (it may echo the text).
    pub(super) async fn send(&self, to: &str, text: &str) -> Result<(), NotifyError> {
        let sent = self
            .client
            .post(self.url.clone())
            .json(&Payload { to, text })
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let builder = e.is_builder();
                let text = format!("SMS webhook {}: {}", self.shown, chain(&e.without_url()));
                return Err(if builder {
                    NotifyError::Permanent(text)
                } else {
                    NotifyError::Transient(text)
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = format!("SMS webhook {} answered {status}", self.shown);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(NotifyError::Transient(text))
        } else {
            Err(NotifyError::Permanent(text))
        }
    }
}

/// An error and its causes on one line (reqwest's own text says little: "error sending
/// request"); the URL is stripped beforehand.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
