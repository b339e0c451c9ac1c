//! Delivery of notifications: the verification code sent at registration and the
//! one-time share codes.
//!
//! The outbox worker (elsewhere) takes each queued notification and calls
//! [`Notifier::deliver`]; it retries [`NotifyError::Transient`] failures and gives up on
//! the others. Channels:
//!
//! - e-mail ([`EmailDelivery`]): one RFC 5322 `.eml` file per message in an outbox
//!   directory (written atomically, mode 0600; the text as 7bit, or 8bit when not ASCII,
//!   so `grep '^Verification code: '` finds its line), or SMTP (`smtp://`, `smtps://`,
//!   `smtp://…?tls=required` for STARTTLS; TLS on rustls; the text as 7bit, or
//!   quoted-printable when not ASCII, which any server takes), or disabled;
//! - SMS: a JSON `POST {"to": "+…", "text": "…"}` to a webhook.
//!
//! Bodies hold codes: they are never logged, and no error carries a body or a password.
//! [`Notification`] wipes its text on drop; the copies made inside lettre and reqwest
//! while a message is built and sent are freed without wiping (their types offer no way
//! to), and the bytes of an `.eml` file are wiped once written.

mod eml;
mod smtp;
mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::Address;
use zeroize::{Zeroize, Zeroizing};

/// How long one network step (connect, one SMTP command, one webhook request) may take
/// before the delivery counts as a transient failure.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a notification goes: an e-mail address or a phone number for SMS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// An e-mail address (`local@domain`, as lettre's address parser accepts it).
    Email(String),
    /// A phone number in E.164 form: `+` and 6 to 15 digits, the first not 0.
    Phone(String),
}

impl Recipient {
    /// Parses a recipient: a string starting with `+` and holding no `@` is a phone
    /// number (E.164: `+` then 6 to 15 digits, the first not 0); anything else must be an
    /// e-mail address. Nothing is trimmed or rewritten.
    pub fn parse(s: &str) -> Result<Recipient, NotifyError> {
        if s.starts_with('+') && !s.contains('@') {
            return if is_e164(s) {
                Ok(Recipient::Phone(s.to_owned()))
            } else {
                Err(NotifyError::BadRecipient(
                    "a phone number is + and 6 to 15 digits, the first not 0 (E.164)".into(),
                ))
            };
        }
        parse_address(s).map(|_| Recipient::Email(s.to_owned()))
    }

    /// The address or number as given.
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Email(s) | Recipient::Phone(s) => s,
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (6..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn parse_address(s: &str) -> Result<Address, NotifyError> {
    s.parse::<Address>()
        .map_err(|_| NotifyError::BadRecipient("not a valid e-mail address".into()))
}

/// One message to deliver. `text` holds codes: it is wiped when the value is dropped,
/// and `Debug` does not show it.
#[derive(Clone)]
pub struct Notification {
    /// The recipient.
    pub to: Recipient,
    /// The subject (e-mail only; an SMS carries the text alone). Control characters are
    /// replaced by spaces when the message is built.
    pub subject: String,
    /// The plain text, lines separated by `\n` (sent as CRLF in e-mail), e.g. a line
    /// `Verification code: CODE`.
    pub text: String,
}

impl Notification {
    /// A notification from its parts.
    pub fn new(to: Recipient, subject: impl Into<String>, text: impl Into<String>) -> Self {
        Notification {
            to,
            subject: subject.into(),
            text: text.into(),
        }
    }
}

impl Drop for Notification {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notification")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Why a notification was not delivered. No variant carries a message body or a
/// password.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The recipient is not a valid e-mail address or E.164 phone number; retrying will
    /// not help.
    #[error("bad recipient: {0}")]
    BadRecipient(String),
    /// A failure that may pass (connection refused or reset, timeout, SMTP 4xx, HTTP 5xx
    /// or 429, a full disk): retry later.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// A failure that retrying will not fix (SMTP 5xx, HTTP 4xx other than 429, no
    /// channel configured for the recipient's kind).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
    /// The delivery configuration is unusable (a bad URL, sender or directory).
    #[error("notification configuration: {0}")]
    Config(String),
}

impl NotifyError {
    /// Whether retrying later may succeed (only [`NotifyError::Transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, NotifyError::Transient(_))
    }
}

/// How e-mail is delivered.
#[derive(Clone)]
pub enum EmailDelivery {
    /// One `.eml` file per message in this directory (created 0700 when missing).
    Outbox(PathBuf),
    /// Through an SMTP server: `smtp://HOST:PORT` (plain), `smtp://HOST:PORT?tls=required`
    /// (STARTTLS, port 587 by default), `smtp://…?tls=opportunistic` (STARTTLS when the
    /// server offers it), `smtps://HOST:PORT` (TLS from the start, port 465 by default);
    /// `user:password@` logs in (percent-encoded). A path names the EHLO host.
    Smtp(String),
    /// No e-mail: e-mail notifications fail permanently.
    Disabled,
}

impl fmt::Debug for EmailDelivery {
    // By hand: an SMTP URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmailDelivery::Outbox(dir) => f.debug_tuple("Outbox").field(dir).finish(),
            EmailDelivery::Smtp(url) => f.debug_tuple("Smtp").field(&redact_smtp(url)).finish(),
            EmailDelivery::Disabled => f.write_str("Disabled"),
        }
    }
}

enum EmailChannel {
    Outbox(PathBuf),
    Smtp(smtp::Smtp),
    Disabled,
}

/// Delivers notifications over the configured channels.
pub struct Notifier {
    from: Mailbox,
    email: EmailChannel,
    sms: Option<webhook::Webhook>,
    timeout: Duration,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.describe())
            .finish()
    }
}

impl Notifier {
    /// Checks the configuration and prepares the channels: creates the outbox directory
    /// (mode 0700) if missing, parses the SMTP and webhook URLs (scheme `http` or
    /// `https`) and sets up TLS. `from` is the sender, `broker@example.org` or
    /// `Key broker <broker@example.org>`. Network steps time out after
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(
        email: EmailDelivery,
        sms_webhook: Option<String>,
        from: &str,
    ) -> Result<Notifier, NotifyError> {
        Self::with_timeout(email, sms_webhook, from, DEFAULT_TIMEOUT)
    }

    /// [`Notifier::new`] with another timeout for each network step (connecting, each
    /// SMTP command, the webhook request); a whole SMTP delivery may take three times it.
    pub fn with_timeout(
        email: EmailDelivery,
        sms_webhook: Option<String>,
        from: &str,
        timeout: Duration,
    ) -> Result<Notifier, NotifyError> {
        let from: Mailbox = from.parse().map_err(|_| {
            NotifyError::Config("the sender (from) is not a valid e-mail address".into())
        })?;
        let email = match email {
            EmailDelivery::Outbox(dir) => EmailChannel::Outbox(eml::prepare_dir(&dir)?),
            EmailDelivery::Smtp(url) => EmailChannel::Smtp(smtp::Smtp::new(&url, timeout)?),
            EmailDelivery::Disabled => EmailChannel::Disabled,
        };
        let sms = sms_webhook
            .map(|url| webhook::Webhook::new(&url, timeout))
            .transpose()?;
        Ok(Notifier {
            from,
            email,
            sms,
            timeout,
        })
    }

    /// Delivers one notification: an e-mail recipient through the e-mail channel, a
    /// phone number through the SMS webhook. A recipient kind with no channel fails
    /// with [`NotifyError::Permanent`].
    pub async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        match &n.to {
            Recipient::Email(to) => {
                let to = parse_address(to)?;
                match &self.email {
                    EmailChannel::Outbox(dir) => {
                        let message = eml::build(
                            &self.from,
                            to,
                            &n.subject,
                            &n.text,
                            eml::Transfer::Readable,
                        )?;
                        // The formatted bytes hold the codes: wiped once written.
                        let bytes = Zeroizing::new(message.formatted());
                        drop(message);
                        let path = eml::write(dir, bytes).await?;
                        tracing::debug!(file = %path.display(), "notification written to the outbox directory");
                        Ok(())
                    }
                    EmailChannel::Smtp(relay) => {
                        let message = eml::build(
                            &self.from,
                            to,
                            &n.subject,
                            &n.text,
                            eml::Transfer::SevenBitSafe,
                        )?;
                        relay.send(message, self.timeout * 3).await?;
                        tracing::debug!("notification sent over SMTP");
                        Ok(())
                    }
                    EmailChannel::Disabled => {
                        Err(NotifyError::Permanent("e-mail delivery is disabled".into()))
                    }
                }
            }
            Recipient::Phone(to) => {
                if !is_e164(to) {
                    return Err(NotifyError::BadRecipient(
                        "a phone number is + and 6 to 15 digits, the first not 0 (E.164)".into(),
                    ));
                }
                match &self.sms {
                    Some(hook) => {
                        hook.send(to, &n.text).await?;
                        tracing::debug!("notification sent to the SMS webhook");
                        Ok(())
                    }
                    None => Err(NotifyError::Permanent("no SMS webhook configured".into())),
                }
            }
        }
    }

    /// Whether notifications to phone numbers have a way out (an SMS webhook).
    pub fn reaches_phones(&self) -> bool {
        self.sms.is_some()
    }

    /// The channels for logs, without passwords (an SMTP URL's password is shown as
    /// `***`; a webhook URL loses its user part and query, which may hold tokens).
    pub fn describe(&self) -> String {
        let email = match &self.email {
            EmailChannel::Outbox(dir) => format!("e-mail to .eml files in {}", dir.display()),
            EmailChannel::Smtp(relay) => format!("e-mail over SMTP {}", relay.shown()),
            EmailChannel::Disabled => "e-mail disabled".to_owned(),
        };
        let sms = match &self.sms {
            Some(hook) => format!("SMS to webhook {}", hook.shown()),
            None => "SMS disabled".to_owned(),
        };
        format!("{email}; {sms}; from {}", self.from)
    }

    /// The outbox directory, when e-mail goes to `.eml` files.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.email {
            EmailChannel::Outbox(dir) => Some(dir),
            _ => None,
        }
    }
}

/// An SMTP URL for logs: the password replaced by `***`.
fn redact_smtp(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() && u.set_password(Some("***")).is_err() {
                return "<unparsable SMTP URL>".to_owned();
            }
            u.to_string()
        }
        Err(_) => "<unparsable SMTP URL>".to_owned(),
    }
}

/// A webhook URL for logs: no user part, the query replaced by `…`.
fn redact_webhook(u: &url::Url) -> String {
    let mut shown = format!("{}://", u.scheme());
    if !u.username().is_empty() || u.password().is_some() {
        shown.push_str("***@");
    }
    if let Some(host) = u.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = u.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(u.path());
    if u.query().is_some() {
        shown.push_str("?…");
    }
    shown
}
