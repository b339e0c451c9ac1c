//! The notification delivery layer: `.eml` files in an outbox directory, SMTP against a
//! real local server (aiosmtpd, started here: `pip install aiosmtpd`), the SMS webhook
//! against a receiver started here. Every server listens on 127.0.0.1, ports 19500-19999.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use sessioncert_broker_server::notify::{
    EmailDelivery, Notification, Notifier, NotifyError, Recipient,
};

const FROM: &str = "broker@localhost";
const CODE_TEXT: &str =
    "Welcome to the key broker.\n\nVerification code: K7QF-93XD-2M\n\nIt expires in 15 minutes.\n";

// ---------------------------------------------------------------------------------------
// Ports 19500-19999 on 127.0.0.1.

const PORT_LOW: u16 = 19500;
const PORT_SPAN: u16 = 500;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Candidate ports in the range, spread by process id so concurrent runs rarely collide.
fn next_port() -> u16 {
    let offset = (std::process::id() % u32::from(PORT_SPAN)) as u16;
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    PORT_LOW + (offset + n * 7) % PORT_SPAN
}

fn bind_in_range() -> StdTcpListener {
    for _ in 0..PORT_SPAN {
        if let Ok(listener) = StdTcpListener::bind(("127.0.0.1", next_port())) {
            return listener;
        }
    }
    panic!("no free port in 127.0.0.1:19500-19999");
}

/// A port in the range with nothing listening on it.
fn closed_port() -> u16 {
    let listener = bind_in_range();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

// ---------------------------------------------------------------------------------------
// The local SMTP server: tests/support/smtp_sink.py on aiosmtpd.

struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        for _ in 0..50 {
            let port = next_port();
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .arg(dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run python3 for the SMTP test server ({e}); install Python 3 and `pip install aiosmtpd`")
                });
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
            if line.trim() == "READY" {
                return SmtpSink { child, port, dir };
            }
            let _ = child.kill();
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            if status.code() == Some(4) {
                continue; // the port was taken: try another
            }
            panic!(
                "the SMTP test server (aiosmtpd) did not start ({status}): {stderr}\n\
                 install it with `pip install aiosmtpd`"
            );
        }
        panic!("the SMTP test server found no free port in 19500-19999");
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// (envelope JSON, raw message) of each message received, in order.
    fn received(&self) -> Vec<(serde_json::Value, String)> {
        let mut stems: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        stems.sort();
        stems
            .into_iter()
            .map(|json| {
                let envelope = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
                let eml = std::fs::read_to_string(json.with_extension("eml")).unwrap();
                (envelope, eml)
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The SMS webhook receiver.

/// What the receiver got: the Content-Type and the JSON body of one POST.
type Posted = (Option<String>, serde_json::Value);

#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<Posted>>>,
}

async fn record(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    hook.got.lock().unwrap().push((content_type, json));
    StatusCode::NO_CONTENT
}

/// Echoes the text back in a 400: the error must not carry it.
async fn reject_echo(body: axum::body::Bytes) -> (StatusCode, axum::body::Bytes) {
    (StatusCode::BAD_REQUEST, body)
}

async fn start_hook() -> (Hook, String) {
    let hook = Hook::default();
    let app = Router::new()
        .route("/sms", post(record))
        .route(
            "/fail500",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/fail503",
            post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route("/fail429", post(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route("/fail400", post(reject_echo))
        .route("/fail404", post(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        )
        .with_state(hook.clone());
    let listener = bind_in_range();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hook, base)
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn email(to: &str) -> Notification {
    Notification::new(
        Recipient::parse(to).unwrap(),
        "Your verification code",
        CODE_TEXT,
    )
}

fn split_message(raw: &str) -> (Vec<&str>, Vec<&str>) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("headers, blank line, body");
    (head.split("\r\n").collect(), body.split("\r\n").collect())
}

fn header<'a>(headers: &[&'a str], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    headers.iter().find_map(|h| h.strip_prefix(prefix.as_str()))
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------
// Recipients and values.

#[test]
fn recipients_parse_into_phones_and_emails() {
    assert_eq!(
        Recipient::parse("+4912345678").unwrap(),
        Recipient::Phone("+4912345678".into())
    );
    assert_eq!(
        Recipient::parse("+123456").unwrap(),
        Recipient::Phone("+123456".into())
    );
    assert_eq!(
        Recipient::parse("+123456789012345").unwrap(),
        Recipient::Phone("+123456789012345".into())
    );
    assert_eq!(
        Recipient::parse("alice@example.org").unwrap(),
        Recipient::Email("alice@example.org".into())
    );
    // A plus at the start of an address's local part is still an address.
    assert_eq!(
        Recipient::parse("+tag@example.org").unwrap(),
        Recipient::Email("+tag@example.org".into())
    );
    for bad in [
        "+12345",            // too short
        "+1234567890123456", // too long
        "+49 123 456 78",    // spaces
        "+49-123456",        // punctuation
        "+0123456789",       // no country code starts with 0
        "+",
        "4912345678", // no +: not a phone, not an address
        "",
        "alice",
        "alice@",
        "@example.org",
        "alice @example.org",
        "Alice <alice@example.org>",
        "alice@example.org\r\nBcc: eve@example.org",
    ] {
        match Recipient::parse(bad) {
            Err(NotifyError::BadRecipient(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(
        Recipient::parse("+4912345678").unwrap().as_str(),
        "+4912345678"
    );
}

#[test]
fn notifier_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let notifier = Notifier::new(EmailDelivery::Disabled, None, FROM).unwrap();
    send_sync(&notifier);
    let n = email("alice@example.org");
    // The worker spawns deliveries: the future must be Send.
    send(notifier.deliver(&n));
}

#[test]
fn notification_debug_hides_the_text() {
    let n = email("alice@example.org");
    let shown = format!("{n:?}");
    assert!(shown.contains("alice@example.org"), "{shown}");
    assert!(!shown.contains("K7QF"), "{shown}");
}

#[test]
fn configuration_is_checked() {
    let config = |email: EmailDelivery, hook: Option<&str>, from: &str| match Notifier::new(
        email,
        hook.map(str::to_owned),
        from,
    ) {
        Err(NotifyError::Config(msg)) => msg,
        Err(other) => panic!("not a Config error: {other:?}"),
        Ok(n) => panic!("accepted: {}", n.describe()),
    };
    config(EmailDelivery::Disabled, None, "not an address");
    config(EmailDelivery::Disabled, Some("ftp://127.0.0.1/sms"), FROM);
    config(EmailDelivery::Disabled, Some("not a url"), FROM);
    config(
        EmailDelivery::Smtp("http://127.0.0.1:25".into()),
        None,
        FROM,
    );
    config(
        EmailDelivery::Smtp("smtp://127.0.0.1:25?tls=maybe".into()),
        None,
        FROM,
    );
    config(EmailDelivery::Smtp("127.0.0.1:25".into()), None, FROM);
    let msg = config(
        EmailDelivery::Smtp("smtp://user:hunter2@127.0.0.1:25?tls=sometimes".into()),
        None,
        FROM,
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = config(
        EmailDelivery::Disabled,
        Some("ftp://127.0.0.1/sms?token=s3cret"),
        FROM,
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    // An outbox that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    config(EmailDelivery::Outbox(file), None, FROM);

    // Accepted: display-name senders, every SMTP form, http(s) webhooks.
    for url in [
        "smtp://127.0.0.1:2525",
        "smtp://127.0.0.1:2525?tls=required",
        "smtp://127.0.0.1?tls=opportunistic",
        "smtps://127.0.0.1:465",
        "smtp://user:pa%20ss@127.0.0.1:587?tls=required",
    ] {
        Notifier::new(EmailDelivery::Smtp(url.into()), None, FROM)
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    Notifier::new(
        EmailDelivery::Disabled,
        Some("https://sms.example.org/send".into()),
        "Key broker <broker@example.org>",
    )
    .unwrap();
}

#[test]
fn describe_hides_passwords_and_tokens() {
    let n = Notifier::new(
        EmailDelivery::Smtp("smtp://mailer:hunter2@127.0.0.1:587?tls=required".into()),
        Some("https://hookuser:hookpass@sms.example.org/send?token=s3cret".into()),
        FROM,
    )
    .unwrap();
    let shown = n.describe();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("hookpass"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("127.0.0.1:587"), "{shown}");
    assert!(shown.contains("sms.example.org/send"), "{shown}");
    assert!(!format!("{n:?}").contains("hunter2"));
    let delivery = EmailDelivery::Smtp("smtps://u:hunter2@mail.example.org".into());
    assert!(!format!("{delivery:?}").contains("hunter2"));
}

// ---------------------------------------------------------------------------------------
// The outbox directory.

#[tokio::test]
async fn outbox_gets_one_readable_eml_file_per_message() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mail/outbox");
    let notifier = Notifier::new(EmailDelivery::Outbox(dir.clone()), None, FROM).unwrap();
    assert_eq!(notifier.outbox_dir(), Some(dir.as_path()));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(notifier.describe().contains("mail/outbox"));

    notifier.deliver(&email("alice@example.org")).await.unwrap();
    let utf8 = Notification::new(
        Recipient::parse("bob@example.org").unwrap(),
        "Ein geteilter Schlüssel",
        "Jörg hat Ihnen eine Datei geteilt.\nOne-time code: 7H2K-QQ4R-ZT9W-XM3P\n",
    );
    notifier.deliver(&utf8).await.unwrap();

    let files = eml_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (millis, rest) = name.split_once('-').unwrap();
        assert!(millis.parse::<u64>().unwrap() > 1_600_000_000_000, "{name}");
        let hex = rest.strip_suffix(".eml").unwrap();
        assert!(
            !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Which file is which: by content, as the names' random part decides the order
    // within one millisecond.
    let raws: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let alice = raws.iter().find(|r| r.contains("alice@")).unwrap();
    let bob = raws.iter().find(|r| r.contains("bob@")).unwrap();

    let (headers, body) = split_message(alice);
    assert_eq!(header(&headers, "From"), Some("broker@localhost"));
    assert_eq!(header(&headers, "To"), Some("alice@example.org"));
    assert_eq!(header(&headers, "Subject"), Some("Your verification code"));
    assert!(header(&headers, "Date").is_some());
    let id = header(&headers, "Message-ID").unwrap();
    assert!(id.starts_with('<') && id.ends_with("@localhost>"), "{id}");
    assert_eq!(header(&headers, "MIME-Version"), Some("1.0"));
    assert_eq!(
        header(&headers, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&headers, "Content-Transfer-Encoding"), Some("7bit"));
    assert!(
        body.contains(&"Verification code: K7QF-93XD-2M"),
        "{body:?}"
    );
    // The same check as a grep for `^Verification code: [0-9A-Z-]+$`.
    let matching: Vec<&str> = alice
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            l.strip_prefix("Verification code: ").is_some_and(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b == b'-')
            })
        })
        .collect();
    assert_eq!(matching, ["Verification code: K7QF-93XD-2M"]);

    let (headers, body) = split_message(bob);
    assert_eq!(header(&headers, "To"), Some("bob@example.org"));
    assert_eq!(header(&headers, "Content-Transfer-Encoding"), Some("8bit"));
    assert!(
        body.contains(&"One-time code: 7H2K-QQ4R-ZT9W-XM3P"),
        "{body:?}"
    );
    assert!(
        body.contains(&"Jörg hat Ihnen eine Datei geteilt."),
        "{body:?}"
    );
    // The non-ASCII subject is encoded (RFC 2047), not raw.
    let subject = header(&headers, "Subject").unwrap();
    assert!(
        subject.is_ascii() && subject.contains("=?utf-8?"),
        "{subject}"
    );
}

#[tokio::test]
async fn outbox_keeps_an_existing_directory_and_strips_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let notifier = Notifier::new(EmailDelivery::Outbox(dir.path().into()), None, FROM).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let n = Notification::new(
        Recipient::parse("alice@example.org").unwrap(),
        "Code\r\nBcc: eve@example.org",
        "Verification code: AAAA-BBBB\n",
    );
    notifier.deliver(&n).await.unwrap();
    let files = eml_files(dir.path());
    assert_eq!(files.len(), 1);
    let raw = std::fs::read_to_string(&files[0]).unwrap();
    let (headers, _) = split_message(&raw);
    assert!(header(&headers, "Bcc").is_none(), "{raw}");
    assert!(!raw.contains("\r\nBcc:"), "{raw}");
}

#[tokio::test]
async fn missing_channels_and_bad_recipients_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Notifier::new(EmailDelivery::Outbox(dir.path().into()), None, FROM).unwrap();
    let sms = Notification::new(
        Recipient::parse("+4912345678").unwrap(),
        "Code",
        "One-time code: ABCD\n",
    );
    match outbox.deliver(&sms).await {
        Err(NotifyError::Permanent(msg)) => assert!(msg.contains("no SMS webhook"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(
        eml_files(dir.path()).is_empty(),
        "a phone never goes to the outbox"
    );

    let disabled = Notifier::new(EmailDelivery::Disabled, None, FROM).unwrap();
    let err = disabled
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
    assert!(!err.is_transient());

    // Recipients built without `parse` are checked too.
    for to in [
        Recipient::Email("not an address".into()),
        Recipient::Phone("+12".into()),
    ] {
        let n = Notification::new(to, "Code", "Verification code: ABCD\n");
        let err = outbox.deliver(&n).await.unwrap_err();
        assert!(matches!(err, NotifyError::BadRecipient(_)), "{err:?}");
    }
    assert!(eml_files(dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------
// SMTP against aiosmtpd.

#[tokio::test]
async fn smtp_delivers_to_a_local_server() {
    let sink = SmtpSink::start();
    let notifier = Notifier::new(EmailDelivery::Smtp(sink.url()), None, FROM).unwrap();
    assert!(notifier.describe().contains(&sink.url()));
    notifier.deliver(&email("alice@example.org")).await.unwrap();

    let got = sink.received();
    assert_eq!(got.len(), 1);
    let (envelope, raw) = &got[0];
    assert_eq!(envelope["from"], "broker@localhost");
    assert_eq!(envelope["to"], serde_json::json!(["alice@example.org"]));
    let (headers, body) = split_message(raw);
    assert_eq!(header(&headers, "To"), Some("alice@example.org"));
    assert_eq!(header(&headers, "From"), Some("broker@localhost"));
    assert_eq!(header(&headers, "Subject"), Some("Your verification code"));
    assert!(
        body.contains(&"Verification code: K7QF-93XD-2M"),
        "{body:?}"
    );
}

#[tokio::test]
async fn smtp_sends_non_ascii_text_as_quoted_printable() {
    // 8bit needs the server's 8BITMIME (lettre refuses otherwise); quoted-printable
    // goes anywhere, and keeps the ASCII code line as it is.
    let sink = SmtpSink::start();
    let notifier = Notifier::new(EmailDelivery::Smtp(sink.url()), None, FROM).unwrap();
    let n = Notification::new(
        Recipient::parse("bob@example.org").unwrap(),
        "Ein geteilter Schlüssel",
        "Jörg hat Ihnen eine Datei geteilt.\nOne-time code: 7H2K-QQ4R-ZT9W-XM3P\n",
    );
    notifier.deliver(&n).await.unwrap();
    let got = sink.received();
    assert_eq!(got.len(), 1);
    let (headers, body) = split_message(&got[0].1);
    assert_eq!(header(&headers, "To"), Some("bob@example.org"));
    assert_eq!(
        header(&headers, "Content-Transfer-Encoding"),
        Some("quoted-printable")
    );
    assert!(got[0].1.is_ascii());
    assert!(
        body.contains(&"One-time code: 7H2K-QQ4R-ZT9W-XM3P"),
        "{body:?}"
    );
}

#[tokio::test]
async fn smtp_tls_required_never_falls_back_to_plain_text() {
    // aiosmtpd here offers no STARTTLS.
    let sink = SmtpSink::start();
    let notifier = Notifier::new(
        EmailDelivery::Smtp(format!("{}?tls=required", sink.url())),
        None,
        FROM,
    )
    .unwrap();
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");

    // smtps:// (TLS from the first byte, rustls) to the same plain server: the
    // handshake fails, a transient failure, and nothing goes out in clear.
    let notifier = Notifier::new(
        EmailDelivery::Smtp(format!("smtps://127.0.0.1:{}", sink.port)),
        None,
        FROM,
    )
    .unwrap();
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn smtp_4xx_is_transient_and_5xx_permanent() {
    let sink = SmtpSink::start();
    let notifier = Notifier::new(EmailDelivery::Smtp(sink.url()), None, FROM).unwrap();

    let err = notifier
        .deliver(&email("tempfail@example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("451"), "{err}");
    assert!(!err.to_string().contains("K7QF"), "{err}");

    let err = notifier
        .deliver(&email("permfail@example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("550"), "{err}");
    assert!(!err.to_string().contains("K7QF"), "{err}");

    assert!(sink.received().is_empty());
    // The server is fine afterwards: a good recipient still gets through.
    notifier.deliver(&email("bob@example.org")).await.unwrap();
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn smtp_refused_connection_is_transient() {
    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let notifier = Notifier::new(EmailDelivery::Smtp(url), None, FROM).unwrap();
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn smtp_silent_server_times_out_as_transient() {
    // Accepts connections but never greets.
    let listener = bind_in_range();
    let port = listener.local_addr().unwrap().port();
    let notifier = Notifier::with_timeout(
        EmailDelivery::Smtp(format!("smtp://127.0.0.1:{port}")),
        None,
        FROM,
        Duration::from_millis(300),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn smtp_password_never_shows_in_errors() {
    let url = format!("smtp://mailer:hunter2@127.0.0.1:{}", closed_port());
    let notifier = Notifier::new(EmailDelivery::Smtp(url), None, FROM).unwrap();
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// The SMS webhook.

#[tokio::test]
async fn webhook_receives_the_json() {
    let (hook, base) = start_hook().await;
    let notifier =
        Notifier::new(EmailDelivery::Disabled, Some(format!("{base}/sms")), FROM).unwrap();
    let n = Notification::new(
        Recipient::parse("+4912345678").unwrap(),
        "ignored in an SMS",
        "One-time code: 7H2K-QQ4R-ZT9W-XM3P",
    );
    notifier.deliver(&n).await.unwrap();
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.as_deref(), Some("application/json"));
    assert_eq!(
        got[0].1,
        serde_json::json!({"to": "+4912345678", "text": "One-time code: 7H2K-QQ4R-ZT9W-XM3P"})
    );
    // E-mail is disabled on this notifier.
    let err = notifier
        .deliver(&email("alice@example.org"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
}

#[tokio::test]
async fn webhook_answers_are_classified() {
    let (_hook, base) = start_hook().await;
    let sms = Notification::new(
        Recipient::parse("+4912345678").unwrap(),
        "",
        "One-time code: SECRET-CODE-1",
    );
    for (path, transient) in [
        ("fail500", true),
        ("fail503", true),
        ("fail429", true),
        ("fail400", false),
        ("fail404", false),
    ] {
        let notifier = Notifier::new(
            EmailDelivery::Disabled,
            Some(format!("{base}/{path}?token=s3cret")),
            FROM,
        )
        .unwrap();
        let err = notifier.deliver(&sms).await.unwrap_err();
        if transient {
            assert!(matches!(err, NotifyError::Transient(_)), "{path}: {err:?}");
        } else {
            assert!(matches!(err, NotifyError::Permanent(_)), "{path}: {err:?}");
        }
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SECRET-CODE"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[tokio::test]
async fn webhook_refused_and_timed_out_are_transient() {
    let notifier = Notifier::new(
        EmailDelivery::Disabled,
        Some(format!(
            "http://127.0.0.1:{}/sms?token=s3cret",
            closed_port()
        )),
        FROM,
    )
    .unwrap();
    let sms = Notification::new(Recipient::parse("+4912345678").unwrap(), "", "code");
    let err = notifier.deliver(&sms).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let (_hook, base) = start_hook().await;
    let notifier = Notifier::with_timeout(
        EmailDelivery::Disabled,
        Some(format!("{base}/slow")),
        FROM,
        Duration::from_millis(300),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = notifier.deliver(&sms).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
