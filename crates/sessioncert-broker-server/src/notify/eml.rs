//! RFC 5322 messages and the outbox directory of `.eml` files.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::{Address, Message};
use zeroize::{Zeroize, Zeroizing};

use super::NotifyError;

/// Creates the outbox directory (0700) when missing; an existing one must be a
/// directory and is left as it is.
pub(super) fn prepare_dir(dir: &Path) -> Result<PathBuf, NotifyError> {
    if dir.as_os_str().is_empty() {
        return Err(NotifyError::Config("the outbox directory is empty".into()));
    }
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), "the outbox directory is readable by others; its messages hold codes");
            }
        }
        Ok(_) => {
            return Err(NotifyError::Config(format!(
                "the outbox {} is not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    NotifyError::Config(format!("cannot create the outbox {}: {e}", dir.display()))
                })?;
            // The mode given above passes through the umask; make it exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                NotifyError::Config(format!("cannot restrict the outbox {}: {e}", dir.display()))
            })?;
        }
        Err(e) => {
            return Err(NotifyError::Config(format!(
                "cannot use the outbox {}: {e}",
                dir.display()
            )))
        }
    }
    Ok(dir.to_path_buf())
}

/// How the text body is encoded.
#[derive(Clone, Copy)]
pub(super) enum Transfer {
    /// 7bit, or 8bit when the text is not ASCII: every line stays readable in a file.
    Readable,
    /// 7bit for ASCII, quoted-printable otherwise: an SMTP server without 8BITMIME takes
    /// it (lettre refuses to send 8bit to one).
    SevenBitSafe,
}

/// Builds the message: From, To, Subject, Date, Message-ID, a text/plain UTF-8 body.
pub(super) fn build(
    from: &Mailbox,
    to: Address,
    subject: &str,
    text: &str,
    transfer: Transfer,
) -> Result<Message, NotifyError> {
    let id = format!(
        "<{}.{}@{}>",
        unix_millis(),
        random_hex()?,
        from.email.domain()
    );
    let part = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(match transfer {
            Transfer::Readable => readable_body(text),
            Transfer::SevenBitSafe => Body::new(text.to_owned()),
        });
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(clean_subject(subject))
        .date_now()
        .message_id(Some(id))
        .singlepart(part)
        .map_err(|e| NotifyError::Permanent(format!("cannot build the message: {e}")))
}

/// 7bit for ASCII, 8bit for other UTF-8; lettre picks quoted-printable or base64 only
/// when neither is valid (a line over 998 bytes, NUL or bare CR).
fn readable_body(text: &str) -> Body {
    for encoding in [
        ContentTransferEncoding::SevenBit,
        ContentTransferEncoding::EightBit,
    ] {
        match Body::new_with_encoding(text.to_owned(), encoding) {
            Ok(body) => return body,
            // The rejected copy holds the codes.
            Err(mut rejected) => rejected.zeroize(),
        }
    }
    Body::new(text.to_owned())
}

/// No CR, LF or other control characters in a header.
fn clean_subject(subject: &str) -> String {
    subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn random_hex() -> Result<String, NotifyError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| NotifyError::Transient(format!("no randomness for a name: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Writes `DIR/<unix-millis>-<random hex>.eml` atomically: a temporary `.tmp` file
/// (never matched by `*.eml`), fsync, rename, fsync of the directory. Mode 0600.
pub(super) async fn write(dir: &Path, bytes: Zeroizing<Vec<u8>>) -> Result<PathBuf, NotifyError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_blocking(&dir, &bytes))
        .await
        .map_err(|e| NotifyError::Transient(format!("outbox writer task failed: {e}")))?
}

fn write_blocking(dir: &Path, bytes: &[u8]) -> Result<PathBuf, NotifyError> {
    let stem = format!("{}-{}", unix_millis(), random_hex()?);
    let tmp = dir.join(format!(".{stem}.tmp"));
    let path = dir.join(format!("{stem}.eml"));
    let io_error = |what: &str, e: std::io::Error| {
        NotifyError::Transient(format!("outbox {}: {what}: {e}", dir.display()))
    };
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot write a message", e));
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot rename a message into place", e));
    }
    // The message is in place; a failed directory fsync only weakens durability across
    // a crash, and reporting it would make the worker deliver the message twice.
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the outbox directory");
    }
    Ok(path)
}
