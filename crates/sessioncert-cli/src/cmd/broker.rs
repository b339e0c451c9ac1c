//! `sessioncert broker …`: the key broker's server (`serve`, `tenant`) and its client
//! (`register`, `verify`, `login`, `upload`, `ls`, `download`, `rm`, `share`, `shares`,
//! `unshare`, `open-share`, `logout`).
//!
//! The client keeps a profile (0600 JSON: the broker's URL and pin, tenant, address, the
//! key share, the encrypted data key) and, beside it, `PROFILE.session`: the sessioncert
//! session a login is bound to. Later commands use that session, so the login (and the
//! data key the broker derived for it) lasts as long as the session.

use super::request::{write_to_file, BodyError};
use super::server::{self, App, Listening, ServerArgs, StoreUrl, START_STOP};
use super::{parse_duration, parse_listen_addr, parse_size};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sessioncert_broker::password::RegistrationKey;
use sessioncert_broker::profile::Profile;
use sessioncert_broker::user_key::{EncryptedDataKey, KeyShare};
use sessioncert_broker_server::api::{Broker, BrokerSettings, PREFIX};
use sessioncert_broker_server::keys::{write_private, KeyFile, RootKeySource, ServedKms};
use sessioncert_broker_server::notify::{EmailDelivery, Notifier};
use sessioncert_broker_server::objects::{Objects, ObjectsSpec};
use sessioncert_client::{Client, Pin, Trust};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

/// `sessioncert broker …`.
#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Tenants (customer companies) and their master keys.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Run the key broker: accounts, files sealed at rest, shares by one-time code, all
    /// through the sessioncert channel (clients pin `sessioncert fingerprint --data DIR`).
    Serve(Box<BrokerServeArgs>),
    /// Register an account: makes the key share, writes the profile (0600), and the
    /// broker mails a verification code.
    Register(RegisterArgs),
    /// Enter the verification code mailed at registration.
    Verify(VerifyArgs),
    /// Log in: binds the account's data key to a session kept beside the profile
    /// (PROFILE.session); the first login stores the encrypted data key in the profile.
    Login(LoginArgs),
    /// Forget the login (the broker drops the data key) and close the session.
    Logout(ProfileArgs),
    /// Upload a file (sealed at rest); prints the new file id as the last line.
    Upload(UploadArgs),
    /// List the account's files.
    Ls(ListArgs),
    /// Download a file.
    Download(DownloadArgs),
    /// Delete a file (and revoke its shares).
    Rm(IdArgs),
    /// Share a file by one-time code: recipient and sharer are notified; prints the share
    /// id as the last line.
    Share(ShareArgs),
    /// List the shares the account made.
    Shares(ListArgs),
    /// Revoke a share.
    Unshare(IdArgs),
    /// Open a share with its one-time code (no account needed).
    OpenShare(OpenShareArgs),
    /// The operator's view of the audit log: who did what, when (newest first).
    Audit(AuditArgs),
}

/// `broker audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// The tenant.
    tenant: String,
    /// The broker's data directory (for the default SQLite database).
    #[arg(long, env = "SESSIONCERT_DATA", default_value = super::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// The broker's database, as given to `broker serve --store` (default: broker.db in --data).
    #[arg(long, env = "SESSIONCERT_STORE", value_name = "URL")]
    store: Option<String>,
    /// Events to show.
    #[arg(long, default_value_t = 50, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `sessioncert broker tenant …`.
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with a first master key (creates the root key if there is none).
    Create(TenantArgs),
    /// Add a master key version; users' encrypted data keys are re-wrapped at their next
    /// login. A running broker picks it up within a second.
    Rotate(TenantArgs),
    /// List tenants and their newest master key version.
    List(DataArgs),
}

/// Where the broker's keys are.
#[derive(Args)]
pub struct DataArgs {
    /// The broker's data directory.
    #[arg(long, env = "SESSIONCERT_DATA", default_value = super::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// The root key file (default: broker-root.key in --data). The environment variable
    /// SESSIONCERT_BROKER_ROOT_KEY (64 hex digits) wins over any file; keep the root key
    /// away from the database's backups.
    #[arg(long, env = "SESSIONCERT_BROKER_ROOT_KEY_FILE", value_name = "FILE")]
    root_key_file: Option<PathBuf>,
}

impl DataArgs {
    fn key_file(&self, create_root: bool) -> anyhow::Result<KeyFile> {
        let source = RootKeySource::new(&self.data, self.root_key_file.clone());
        let root = if create_root {
            source.load_or_create()?
        } else {
            source.load()?
        };
        Ok(KeyFile::new(&self.data, root))
    }
}

/// A tenant in a data directory.
#[derive(Args)]
pub struct TenantArgs {
    /// The tenant's name: lower-case letters, digits and '-'.
    name: String,
    #[command(flatten)]
    data: DataArgs,
}

/// `sessioncert broker serve`.
#[derive(Args)]
#[command(
    after_help = "--store names the broker's database: sqlite:PATH (default: \
broker.db in --data) or postgres://… (the broker's tables, shared by instances). Sessions \
stay in memory (a login is bound to its session; nothing on disk can resume one). Notifications \
need --smtp or --outbox (a directory outside --data: its mails carry codes). --config FILE: a TOML file whose keys are the \
long flag names (outbox = \"/var/mail/broker\", max-stream-body = \"2GiB\"); flags and \
environment variables override it.",
    // The flattened `serve` settings describe the demo server's session store; for the
    // broker --store is its database and sessions are always in memory.
    mut_arg("store", |a| a.help("The broker's database: sqlite:PATH (default: broker.db in --data) or postgres://USER@HOST/DB[?schema=NAME]").long_help(None::<&str>)),
    mut_arg("memory", |a| a.hide(true))
)]
pub struct BrokerServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SESSIONCERT_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen_addr)]
    addr: SocketAddr,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    broker: BrokerOptions,
}

/// The broker's own settings.
#[derive(Args)]
#[command(next_help_heading = "Broker")]
pub struct BrokerOptions {
    /// Where sealed file bodies are kept: a directory, or s3://BUCKET[/PREFIX] (endpoint
    /// and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION). Default: objects/ in --data.
    #[arg(
        long,
        env = "SESSIONCERT_BROKER_OBJECTS",
        value_name = "DIR|s3://BUCKET"
    )]
    objects: Option<String>,
    /// Send mail through this SMTP server (smtp://HOST:PORT, smtps://…).
    #[arg(
        long,
        env = "SESSIONCERT_BROKER_SMTP",
        value_name = "URL",
        conflicts_with = "outbox"
    )]
    smtp: Option<String>,
    /// Write every mail as an RFC 5322 .eml file into DIR instead of sending it, for
    /// another program to deliver. DIR must be outside --data: its mails carry codes, and
    /// a copy of the data directory must not hold them. One of --smtp and --outbox is
    /// needed.
    #[arg(long, env = "SESSIONCERT_BROKER_OUTBOX", value_name = "DIR")]
    outbox: Option<PathBuf>,
    /// POST notifications to phone numbers as JSON {"to", "text"} to this URL.
    #[arg(long, env = "SESSIONCERT_BROKER_SMS_WEBHOOK", value_name = "URL")]
    sms_webhook: Option<String>,
    /// The sender of the broker's mail.
    #[arg(
        long,
        env = "SESSIONCERT_BROKER_MAIL_FROM",
        default_value = "sessioncert-broker@localhost"
    )]
    mail_from: String,
    /// The URL clients reach the broker at, for the mails (default: http[s]://--addr).
    #[arg(long, env = "SESSIONCERT_BROKER_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// The root key file (default: broker-root.key in --data); SESSIONCERT_BROKER_ROOT_KEY
    /// (64 hex digits) wins over it.
    #[arg(long, env = "SESSIONCERT_BROKER_ROOT_KEY_FILE", value_name = "FILE")]
    root_key_file: Option<PathBuf>,
    /// The longest a share may last.
    #[arg(long, env = "SESSIONCERT_BROKER_SHARE_MAX_EXPIRY", default_value = "30d", allow_hyphen_values = true, value_parser = parse_duration)]
    share_max_expiry: Duration,
    /// Bytes (plaintext) one user may keep.
    #[arg(long, env = "SESSIONCERT_BROKER_MAX_BYTES_PER_USER", default_value = "10GiB", allow_hyphen_values = true, value_parser = parse_size)]
    max_bytes_per_user: usize,
    /// Files one user may keep.
    #[arg(long, env = "SESSIONCERT_BROKER_MAX_FILES_PER_USER", default_value_t = 10_000, allow_hyphen_values = true, value_parser = positive::<u64>)]
    max_files_per_user: u64,
    /// Shares one user may have open at once.
    #[arg(long, env = "SESSIONCERT_BROKER_MAX_OPEN_SHARES", default_value_t = 1_000, allow_hyphen_values = true, value_parser = positive::<u64>)]
    max_open_shares: u64,
    /// Shares one user may make per minute (also the burst).
    #[arg(long, env = "SESSIONCERT_BROKER_SHARES_PER_MINUTE", default_value_t = 6, allow_hyphen_values = true, value_parser = positive::<u32>)]
    shares_per_minute: u32,
    /// Mails one recipient may be sent per hour (also the burst): codes, shares, notices.
    #[arg(long, env = "SESSIONCERT_BROKER_MAILS_PER_HOUR", default_value_t = 20, allow_hyphen_values = true, value_parser = positive::<u32>)]
    mails_per_hour: u32,
    /// Uploads this instance runs at once (each holds up to 16 MiB of buffers).
    #[arg(long, env = "SESSIONCERT_BROKER_UPLOADS_AT_ONCE", default_value_t = 8, allow_hyphen_values = true, value_parser = positive::<u32>)]
    uploads_at_once: u32,
    /// Uploads one user may run at once.
    #[arg(long, env = "SESSIONCERT_BROKER_UPLOADS_PER_USER", default_value_t = 2, allow_hyphen_values = true, value_parser = positive::<u32>)]
    uploads_per_user: u32,
}

/// Runs a `broker` command.
/// `settings` is the one-line summary of `broker serve`'s effective settings.
pub async fn run(command: BrokerCommand, settings: String) -> anyhow::Result<ExitCode> {
    match command {
        BrokerCommand::Tenant { command } => tenant(command),
        BrokerCommand::Serve(a) => serve(*a, settings).await,
        BrokerCommand::Register(a) => register(a).await,
        BrokerCommand::Verify(a) => verify(a).await,
        BrokerCommand::Login(a) => login(a).await,
        BrokerCommand::Logout(a) => logout(a).await,
        BrokerCommand::Upload(a) => upload(a).await,
        BrokerCommand::Ls(a) => ls(a).await,
        BrokerCommand::Download(a) => download(a).await,
        BrokerCommand::Rm(a) => rm(a).await,
        BrokerCommand::Share(a) => share(a).await,
        BrokerCommand::Shares(a) => shares(a).await,
        BrokerCommand::Unshare(a) => unshare(a).await,
        BrokerCommand::OpenShare(a) => open_share(a).await,
        BrokerCommand::Audit(a) => audit(a).await,
    }
}

fn tenant(command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create(a) => {
            let file = a.data.key_file(true)?;
            // The server identity too, so `fingerprint --data` gives the pin before the
            // first start.
            sessioncert_server::ServerKeys::open_or_create(
                &a.data.data,
                sessioncert_server::now_ms(),
            )
            .with_context(|| {
                format!(
                    "cannot create the server identity in {}",
                    a.data.data.display()
                )
            })?;
            if file.create_tenant(&a.name)? {
                println!(
                    "created tenant {} (master key v1) in {}",
                    a.name,
                    file.path().display()
                );
                let root = if std::env::var_os("SESSIONCERT_BROKER_ROOT_KEY").is_some() {
                    "SESSIONCERT_BROKER_ROOT_KEY".to_owned()
                } else {
                    a.data
                        .root_key_file
                        .clone()
                        .unwrap_or_else(|| {
                            a.data
                                .data
                                .join(sessioncert_broker_server::keys::ROOT_KEY_FILE)
                        })
                        .display()
                        .to_string()
                };
                eprintln!(
                    "the KMS file is sealed under the root key in {root}: keep that key out of \
                     the data directory's backups (--root-key-file or SESSIONCERT_BROKER_ROOT_KEY)"
                );
            } else {
                println!("tenant {} exists already; nothing changed", a.name);
            }
        }
        TenantCommand::Rotate(a) => {
            let v = a.data.key_file(false)?.rotate(&a.name)?;
            println!("tenant {}: master key v{v} is now current; users' encrypted data keys are re-wrapped at their next login", a.name);
        }
        TenantCommand::List(a) => {
            let kms = a.key_file(false)?.load()?;
            for t in kms.tenants() {
                use sessioncert_broker::kms::Kms as _;
                println!("{t}\tv{}", kms.current_version(t)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The broker's memory holds the outbox key (which opens every mail this process
/// sealed, dead database copies included), logged-in users' data keys and codes on their
/// way out: no core dump may write it to disk, and no other process of this user may
/// read it (ptrace, /proc/PID/mem).
#[cfg(target_os = "linux")]
fn keep_memory_private() -> anyhow::Result<()> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .context("could not turn core dumps off")?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .context("could not make the process non-dumpable")?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn keep_memory_private() -> anyhow::Result<()> {
    Ok(())
}

async fn serve(mut a: BrokerServeArgs, settings: String) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.server.legacy_session_cert,
        "--legacy-session-cert is not offered by the broker (its clients speak the protocol)"
    );
    keep_memory_private()?;
    // --store names the broker's database. The sessions stay in memory: a login is bound
    // to its session, and session keys on disk (or in a shared database) would let a copy
    // of them act in a live login; logins end at a restart anyway.
    anyhow::ensure!(
        a.broker.share_max_expiry >= Duration::from_secs(1),
        "--share-max-expiry must be at least 1s"
    );
    anyhow::ensure!(
        a.broker.max_bytes_per_user >= 1,
        "--max-bytes-per-user must be at least 1 byte"
    );
    let data = a.server.data.clone();
    let store_address = match a.server.store.take() {
        None => format!("sqlite:{}", data.join("broker.db").display()),
        Some(StoreUrl::Sqlite(path)) => format!(
            "sqlite:{}",
            path.unwrap_or_else(|| data.join("broker.db")).display()
        ),
        Some(StoreUrl::Postgres(url)) => url,
        Some(StoreUrl::Memory) => bail!("--store memory: would lose the broker's accounts and files at every stop; use sqlite:PATH (default) or postgres://…"),
        Some(StoreUrl::Redis(_)) => bail!("--store for the broker is sqlite:PATH or postgres://… (Redis holds sessions, not the broker's records)"),
        Some(StoreUrl::Invalid(e)) => bail!("{e}"),
    };
    a.server.store = Some(StoreUrl::Memory);
    let b = a.broker;
    let kms = ServedKms::open(
        DataArgs {
            data: data.clone(),
            root_key_file: b.root_key_file.clone(),
        }
        .key_file(false)?,
    )?;
    // One broker per SQLite database (held until this function returns, i.e. the stop).
    let _serving = match store_address.strip_prefix("sqlite:") {
        Some(path) => Some(sessioncert_broker_server::store::lock_for_serving(
            Path::new(path),
        )?),
        None => None,
    };
    let store = sessioncert_broker_server::store::open(&store_address)
        .await
        .with_context(|| format!("--store {}", server::redact_url(&store_address)))?;
    let objects_spec: ObjectsSpec = match &b.objects {
        Some(s) => s.parse().context("--objects")?,
        None => ObjectsSpec::Dir(data.join("objects")),
    };
    let objects = Objects::open(&objects_spec).await.context("--objects")?;
    let email = match (&b.smtp, &b.outbox) {
        (Some(url), _) => EmailDelivery::Smtp(url.clone()),
        (None, Some(dir)) => {
            check_outbox_outside(dir, &data)?;
            EmailDelivery::Outbox(dir.clone())
        }
        (None, None) => bail!(
            "say where notifications go: --smtp smtp://HOST:PORT, or --outbox DIR (a directory \
             outside --data, e.g. ./broker-mail: every mail is written there as an .eml file)"
        ),
    };
    let notifier = Notifier::new(email, b.sms_webhook.clone(), &b.mail_from)?;
    let max_file_bytes = a.server.max_stream_body.0.unwrap_or(u64::MAX);
    let addr = a.addr;
    let settings = format!(
        "{settings}; broker: store={}, objects={}, notifications={}",
        server::redact_url(&store_address),
        objects.describe(),
        notifier.describe()
    );
    server::run(addr, a.server, settings, move |ready| {
        let scheme = if ready.tls { "https" } else { "http" };
        let public_url = b
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let settings = BrokerSettings {
            share_expiry_max: b.share_max_expiry,
            max_bytes_per_user: b.max_bytes_per_user as u64,
            max_files_per_user: b.max_files_per_user,
            max_open_shares_per_user: b.max_open_shares,
            share_burst: b.shares_per_minute,
            share_refill: Duration::from_secs(60) / b.shares_per_minute,
            recipient_mail_burst: b.mails_per_hour,
            recipient_mail_refill: Duration::from_secs(3600) / b.mails_per_hour,
            uploads_at_once: b.uploads_at_once as usize,
            uploads_per_user: b.uploads_per_user as usize,
            max_file_bytes,
            sender: b.mail_from.clone(),
            public_url,
            pin: ready.pin.to_string(),
            ..BrokerSettings::default()
        };
        let broker = Broker::new(
            store,
            objects,
            kms,
            notifier,
            ready.sc.manager().clone(),
            settings,
        )?;
        // Runs as long as the process.
        let _workers = broker.spawn_workers();
        let routes = ready.sc.router(broker.routes());
        let pin = ready.pin.to_string();
        Ok(App {
            routes,
            ready: None,
            hide_admin_paths: true,
            announce: Box::new(move |l: &Listening| {
                tracing::info!(
                    target: START_STOP,
                    addr = %l.addr,
                    scheme = l.scheme,
                    admin_addr = %l.admin,
                    pin = %pin,
                    "sessioncert key broker serving; clients pin this identity"
                );
            }),
        })
    })
    .await
}

// ---- the client ----

/// A profile file.
#[derive(Args)]
pub struct ProfileArgs {
    /// The profile file (its session is kept in PROFILE.session).
    #[arg(long, value_name = "FILE")]
    profile: PathBuf,
    /// A file holding the profile's passphrase, if it was registered with one.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// `broker register`.
#[derive(Args)]
pub struct RegisterArgs {
    /// The broker's URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// The broker's identity pin (`sessioncert fingerprint --data DIR` on its host).
    #[arg(long)]
    pin: String,
    /// The tenant (customer company).
    #[arg(long)]
    tenant: String,
    /// The account's e-mail address.
    #[arg(long)]
    email: String,
    /// A file holding the password (one trailing newline is ignored; `-`: standard
    /// input).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
    /// Where to write the profile (0600). An existing profile is used only to register
    /// its not yet verified address again (a new code is mailed); otherwise refused.
    #[arg(long, value_name = "FILE")]
    profile: PathBuf,
    /// Seal the key share in the profile under this file's passphrase (Argon2id).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// `broker verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The profile file.
    #[arg(long, value_name = "FILE")]
    profile: PathBuf,
    /// The code from the verification mail (visible to other local users in the
    /// process list: --code-file keeps it out).
    #[arg(
        long,
        required_unless_present = "code_file",
        conflicts_with = "code_file"
    )]
    code: Option<String>,
    /// A file holding the code (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    code_file: Option<PathBuf>,
}

/// `broker login`.
#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// A file holding the password (one trailing newline is ignored; `-`: standard
    /// input).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
}

/// `broker upload`.
#[derive(Args)]
pub struct UploadArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The file to upload.
    path: PathBuf,
    /// The name to keep it under (default: the file's name).
    #[arg(long)]
    name: Option<String>,
}

/// A listing.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Print the broker's JSON answer.
    #[arg(long)]
    json: bool,
}

/// `broker download`.
#[derive(Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The file id (from `upload` or `ls`).
    id: String,
    /// Where to write it (written whole or not at all; `-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
}

/// A command on one id.
#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The id.
    id: String,
}

/// `broker share`.
#[derive(Args)]
pub struct ShareArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The file id.
    id: String,
    /// The recipient: an e-mail address, or a phone number (+ and digits; needs the
    /// broker's --sms-webhook).
    #[arg(long)]
    to: String,
    /// How long the share opens.
    #[arg(long, default_value = "24h", allow_hyphen_values = true, value_parser = parse_duration)]
    expires: Duration,
    /// How many times it opens.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = super::parse_number::<u32>)]
    max_opens: u32,
}

/// `broker open-share`.
#[derive(Args)]
pub struct OpenShareArgs {
    /// The broker's URL.
    #[arg(long)]
    url: String,
    /// The broker's identity pin.
    #[arg(long)]
    pin: String,
    /// The share id (from the mail).
    share: String,
    /// The one-time code (from the mail; visible to other local users in the process
    /// list: --otp-file keeps it out).
    #[arg(
        long,
        required_unless_present = "otp_file",
        conflicts_with = "otp_file"
    )]
    otp: Option<String>,
    /// A file holding the one-time code (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    otp_file: Option<PathBuf>,
    /// Where to write the file (written whole or not at all; `-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: PathBuf,
}

/// A count of at least 1 (`0` and negative numbers refused, saying so).
fn positive<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = super::parse_number(s)?;
    if n < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// Refuses an outbox inside the data directory: its mails carry verification and
/// one-time codes, so a copy of the data directory (which holds the root key by default)
/// would open every live share.
fn check_outbox_outside(outbox: &Path, data: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(outbox)
        .with_context(|| format!("cannot create --outbox {}", outbox.display()))?;
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create --data {}", data.display()))?;
    let o = std::fs::canonicalize(outbox)?;
    let d = std::fs::canonicalize(data)?;
    anyhow::ensure!(
        !o.starts_with(&d) && !d.starts_with(&o),
        "--outbox {} is inside --data {} (or holds it): its mails carry codes that open shares; \
         put it outside the data directory",
        outbox.display(),
        data.display()
    );
    Ok(())
}

/// A code given on the command line or in a file (`-`: standard input).
fn code_arg(
    value: Option<&String>,
    file: Option<&PathBuf>,
    what: &str,
) -> anyhow::Result<Zeroizing<String>> {
    match (value, file) {
        (Some(v), _) => Ok(Zeroizing::new(v.trim().to_owned())),
        (None, Some(f)) => read_secret(f, what).map(|t| Zeroizing::new(t.trim().to_owned())),
        (None, None) => bail!("give the {what} (or a file holding it)"),
    }
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(if path == Path::new("-") {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        t
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?
    });
    let t = text.strip_suffix('\n').unwrap_or(&text);
    let t = t.strip_suffix('\r').unwrap_or(t);
    anyhow::ensure!(!t.is_empty(), "the {what} file {} is empty", path.display());
    Ok(Zeroizing::new(t.to_owned()))
}

fn session_path(profile: &Path) -> PathBuf {
    let mut p = profile.as_os_str().to_owned();
    p.push(".session");
    PathBuf::from(p)
}

fn load_profile(path: &Path) -> anyhow::Result<Profile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the profile {}", path.display()))?;
    Profile::from_json(&text).with_context(|| format!("cannot use the profile {}", path.display()))
}

fn save_profile(path: &Path, p: &Profile) -> anyhow::Result<()> {
    write_private(path, p.to_json().as_bytes())
        .with_context(|| format!("cannot write the profile {}", path.display()))
}

fn parse_pin(pin: &str) -> anyhow::Result<Pin> {
    pin.parse::<Pin>().with_context(|| {
        format!("bad --pin {pin:?} (expected what `sessioncert fingerprint` prints)")
    })
}

/// A client for the broker; with `session`, the session kept in that file.
async fn connect(url: &str, pin: &str, session: Option<&Path>) -> anyhow::Result<Client> {
    let base = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    // No total timeout: a file of any size may take long; the client's idle timeout
    // still ends a stalled transfer.
    let http = reqwest::Client::builder()
        .connect_timeout(sessioncert_client::DEFAULT_CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(45))
        .build()?;
    let mut b = Client::builder(&base, Trust::Pin(parse_pin(pin)?)).http_client(http);
    if let Some(s) = session {
        b = b.session_file(s.to_owned());
    }
    Ok(b.build().await?)
}

/// The client of a logged-in profile.
async fn logged_in(p: &ProfileArgs) -> anyhow::Result<(Profile, Client)> {
    let profile = load_profile(&p.profile)?;
    let session = session_path(&p.profile);
    anyhow::ensure!(
        session.exists(),
        "not logged in with {}: run `sessioncert broker login --profile {} --password-file FILE`",
        p.profile.display(),
        p.profile.display()
    );
    let client = connect(&profile.url, &profile.pin, Some(&session)).await?;
    Ok((profile, client))
}

/// The broker's refusal as an error: its message, and what to do.
fn refusal(status: http::StatusCode, body: &[u8]) -> anyhow::Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    match v.get("code").and_then(Value::as_str) {
        Some(code) => anyhow::anyhow!("the broker refused ({status}, {code}): {msg}"),
        None => anyhow::anyhow!("the broker refused ({status}): {msg}"),
    }
}

/// How long a JSON request may take (a login waits for a password-hashing slot; files
/// have no such bound, since their size sets their time).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends a JSON request; the answer's JSON on success.
async fn call(
    client: &Client,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    // Full-request mode: ids in the path and the headers travel sealed too (the broker
    // takes nothing else).
    let mut req = client
        .request(method, &format!("{PREFIX}{path}"))
        .full(true)
        .timeout(CALL_TIMEOUT);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    if !status.is_success() {
        return Err(refusal(status, resp.body()));
    }
    if resp.body().is_empty() {
        return Ok(Value::Null);
    }
    Ok(resp.json()?)
}

async fn close_quietly(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
}

async fn register(a: RegisterArgs) -> anyhow::Result<ExitCode> {
    let password = read_secret(&a.password_file, "password")?;
    let passphrase = match &a.passphrase_file {
        Some(f) => Some(read_secret(f, "passphrase")?),
        None => None,
    };
    parse_pin(&a.pin)?;
    let email = a.email.trim().to_ascii_lowercase();
    // An existing profile whose address is not verified yet registers again with the
    // same key share and registration key: a new code is mailed (the earlier one stops
    // working). Any other existing profile is never overwritten: it holds a key share
    // that cannot be made again.
    let (profile, registration, again) = if a.profile.exists() {
        let p = load_profile(&a.profile)?;
        let reg = p.registration()?;
        match reg {
            Some(reg)
                if p.tenant == a.tenant && p.email == email && p.url == a.url && p.pin == a.pin =>
            {
                (p, reg, true)
            }
            Some(_) => bail!(
                "{} holds a registration of {} in tenant {} at {}: register that again, or choose another profile path",
                a.profile.display(),
                p.email,
                p.tenant,
                p.url
            ),
            None => bail!(
                "{} exists and its address is verified: a profile holds a key share that cannot be made again; choose another path",
                a.profile.display()
            ),
        }
    } else {
        let share = KeyShare::generate()?;
        let registration = RegistrationKey::generate()?;
        let mut profile = Profile::new(
            &a.url,
            &a.pin,
            &a.tenant,
            &email,
            &share,
            passphrase.as_ref().map(|p| p.as_bytes()),
        )?;
        profile.set_registration(&registration);
        (profile, registration, false)
    };
    let registration_b64 = Zeroizing::new(STANDARD.encode(registration.as_bytes()));
    let client = connect(&a.url, &a.pin, None).await?;
    let answer = call(
        &client,
        http::Method::POST,
        "/register",
        Some(json!({
            "tenant": a.tenant,
            "email": a.email,
            "password": *password,
            "registration": *registration_b64,
        })),
    )
    .await;
    close_quietly(&client).await;
    answer?;
    if !again {
        save_profile(&a.profile, &profile)?;
    }
    eprintln!(
        "registered {} in tenant {}{}; the broker mailed a verification code. Next:\n  sessioncert broker verify --profile {} --code CODE",
        profile.email,
        a.tenant,
        if again {
            " again (the earlier code no longer works)"
        } else {
            ""
        },
        a.profile.display()
    );
    println!("{}", a.profile.display());
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut profile = load_profile(&a.profile)?;
    let Some(registration) = profile.registration()? else {
        bail!(
            "{} holds no registration to verify (verified already, or made by an older version: \
             then register again with a new profile)",
            a.profile.display()
        );
    };
    let code = code_arg(a.code.as_ref(), a.code_file.as_ref(), "verification code")?;
    let registration_b64 = Zeroizing::new(STANDARD.encode(registration.as_bytes()));
    let client = connect(&profile.url, &profile.pin, None).await?;
    let answer = call(
        &client,
        http::Method::POST,
        "/verify",
        Some(json!({
            "tenant": profile.tenant,
            "email": profile.email,
            "code": *code,
            "registration": *registration_b64,
        })),
    )
    .await;
    close_quietly(&client).await;
    answer?;
    profile.clear_registration();
    save_profile(&a.profile, &profile)?;
    println!("verified {}", profile.email);
    Ok(ExitCode::SUCCESS)
}

async fn login(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = read_secret(&a.password_file, "password")?;
    let mut profile = load_profile(&a.profile.profile)?;
    let passphrase = match (&a.profile.passphrase_file, profile.needs_passphrase()) {
        (Some(f), _) => Some(read_secret(f, "passphrase")?),
        (None, true) => bail!("this profile's key share is sealed: give --passphrase-file"),
        (None, false) => None,
    };
    anyhow::ensure!(
        profile.registration()?.is_none(),
        "{}'s registration was never verified: run `sessioncert broker verify --profile {} --code CODE` \
         (if the address was verified with another profile, that profile holds the account)",
        a.profile.profile.display(),
        a.profile.profile.display()
    );
    let share = profile.key_share(passphrase.as_ref().map(|p| p.as_bytes()))?;
    let edk = profile.encrypted_data_key()?;
    let session = session_path(&a.profile.profile);
    let client = connect(&profile.url, &profile.pin, Some(&session)).await?;
    let share_b64 = Zeroizing::new(STANDARD.encode(share.as_bytes()));
    let answer = call(
        &client,
        http::Method::POST,
        "/login",
        Some(json!({
            "tenant": profile.tenant,
            "email": profile.email,
            "password": *password,
            "key_share": *share_b64,
            "encrypted_data_key": edk.as_ref().map(|e| STANDARD.encode(e.encode())),
        })),
    )
    .await?;
    let first = answer.get("first_login").and_then(Value::as_bool) == Some(true);
    if let Some(new) = answer.get("encrypted_data_key").and_then(Value::as_str) {
        let bytes = STANDARD
            .decode(new)
            .context("the broker's encrypted data key")?;
        profile.set_encrypted_data_key(&EncryptedDataKey::decode(&bytes)?);
        // Kept before the broker counts it: a lost answer never loses the data key.
        save_profile(&a.profile.profile, &profile)?;
        if first {
            call(&client, http::Method::POST, "/login/confirm", None).await?;
        }
    }
    eprintln!(
        "logged in as {} (tenant {}){}; the login lasts as long as the session in {}",
        profile.email,
        profile.tenant,
        if first {
            ", first login: the data key was made and its encrypted copy kept in the profile"
        } else {
            ""
        },
        session.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn logout(a: ProfileArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a).await?;
    let answer = call(&client, http::Method::POST, "/logout", None).await;
    close_quietly(&client).await;
    drop(client);
    let _ = std::fs::remove_file(session_path(&a.profile));
    answer?;
    println!("logged out");
    Ok(ExitCode::SUCCESS)
}

async fn upload(a: UploadArgs) -> anyhow::Result<ExitCode> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("the path names no file; give --name")?,
    };
    let meta =
        std::fs::metadata(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "{} is not a file (upload takes one regular file)",
        a.path.display()
    );
    std::fs::File::open(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?;
    let (_, client) = logged_in(&a.profile).await?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("name", &name)
        .finish();
    let resp = client
        .post(&format!("{PREFIX}/files?{query}"))
        .full(true)
        // Each upload makes a new file: never sent twice on a forged refusal.
        .idempotent(false)
        .content_type("application/octet-stream")
        .body_file(a.path.clone())
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(refusal(resp.status(), resp.body()));
    }
    let v: Value = resp.json()?;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .context("the broker answered no id")?;
    eprintln!("uploaded {name} ({} bytes), sealed at rest", v["size"]);
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Vec<String>]) {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn time_of(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        })
        .unwrap_or_default()
}

async fn ls(a: ListArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    let v = call(&client, http::Method::GET, "/files", None).await?;
    if a.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "ID".into(),
        "SIZE".into(),
        "UPLOADED".into(),
        "NAME".into(),
    ]];
    for f in v["files"].as_array().into_iter().flatten() {
        rows.push(vec![
            f["id"].as_str().unwrap_or_default().to_owned(),
            f["size"].to_string(),
            time_of(&f["created_ms"]),
            f["name"]
                .as_str()
                .unwrap_or("(name does not open)")
                .to_owned(),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Writes a streamed file answer to `output`, whole or not at all.
async fn receive_file(
    mut resp: sessioncert_client::StreamingResponse,
    output: &Path,
) -> anyhow::Result<ExitCode> {
    let status = resp.status();
    if !status.is_success() {
        let mut body = Vec::new();
        while let Ok(Some(piece)) = resp.chunk().await {
            if body.len() < 64 * 1024 {
                body.extend_from_slice(&piece);
            }
        }
        return Err(refusal(status, &body));
    }
    // A decrypted file: readable by its owner only, unless it replaces one whose mode
    // the user chose.
    match write_to_file(&mut resp, output, Some(0o600)).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(BodyError::Client(e)) => Err(anyhow::Error::from(e).context(
            "the file did not arrive whole (cut short, or a chunk failed authentication); nothing was written",
        )),
        Err(BodyError::Local(e)) => Err(e),
        Err(BodyError::Interrupted) => {
            eprintln!("sessioncert: interrupted; nothing was left at the -o path");
            Ok(ExitCode::from(130))
        }
    }
}

async fn download(a: DownloadArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    let resp = client
        .get(&format!("{PREFIX}/files/{}", a.id.trim()))
        .full(true)
        .send_streaming()
        .await?;
    let code = receive_file(resp, &a.output).await?;
    if code == ExitCode::SUCCESS && a.output != Path::new("-") {
        eprintln!("downloaded {} to {}", a.id, a.output.display());
    }
    Ok(code)
}

async fn rm(a: IdArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    call(
        &client,
        http::Method::DELETE,
        &format!("/files/{}", a.id.trim()),
        None,
    )
    .await?;
    println!("deleted {}", a.id);
    Ok(ExitCode::SUCCESS)
}

async fn share(a: ShareArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    let v = call(
        &client,
        http::Method::POST,
        &format!("/files/{}/shares", a.id.trim()),
        Some(json!({ "to": a.to, "expires_secs": a.expires.as_secs(), "max_opens": a.max_opens })),
    )
    .await?;
    let id = v
        .get("share")
        .and_then(Value::as_str)
        .context("the broker answered no share id")?;
    eprintln!(
        "shared with {} until {} (opens allowed: {}); the one-time code went to the recipient and to you",
        a.to,
        time_of(&v["expires_ms"]),
        v["max_opens"]
    );
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

async fn shares(a: ListArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    let v = call(&client, http::Method::GET, "/shares", None).await?;
    if a.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "ID".into(),
        "FILE".into(),
        "TO".into(),
        "OPENS".into(),
        "EXPIRES".into(),
        "STATE".into(),
    ]];
    for s in v["shares"].as_array().into_iter().flatten() {
        let state = if !s["revoked_ms"].is_null() {
            "revoked"
        } else if s["open"].as_bool() == Some(true) {
            "open"
        } else {
            "closed"
        };
        rows.push(vec![
            s["id"].as_str().unwrap_or_default().to_owned(),
            s["file"].as_str().unwrap_or_default().to_owned(),
            s["to"].as_str().unwrap_or_default().to_owned(),
            format!("{}/{}", s["opens"], s["max_opens"]),
            time_of(&s["expires_ms"]),
            state.to_owned(),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn unshare(a: IdArgs) -> anyhow::Result<ExitCode> {
    let (_, client) = logged_in(&a.profile).await?;
    call(
        &client,
        http::Method::DELETE,
        &format!("/shares/{}", a.id.trim()),
        None,
    )
    .await?;
    println!("revoked {}", a.id);
    Ok(ExitCode::SUCCESS)
}

async fn open_share(a: OpenShareArgs) -> anyhow::Result<ExitCode> {
    let otp = code_arg(a.otp.as_ref(), a.otp_file.as_ref(), "one-time code")?;
    let client = connect(&a.url, &a.pin, None).await?;
    let resp = client
        .post(&format!("{PREFIX}/shares/{}/open", a.share.trim()))
        .full(true)
        .json(&json!({ "otp": *otp }))
        .send_streaming()
        .await;
    let result = match resp {
        Ok(resp) => receive_file(resp, &a.output).await,
        Err(e) => Err(e.into()),
    };
    close_quietly(&client).await;
    let code = result?;
    if code == ExitCode::SUCCESS && a.output != Path::new("-") {
        eprintln!("opened share {} to {}", a.share, a.output.display());
    }
    Ok(code)
}

async fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let address = a
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", a.data.join("broker.db").display()));
    if let Some(path) = address.strip_prefix("sqlite:") {
        anyhow::ensure!(
            Path::new(path).exists(),
            "no broker database at {path} (give --data or --store as `broker serve` had them)"
        );
    }
    let store = sessioncert_broker_server::store::open(&address)
        .await
        .with_context(|| format!("--store {}", server::redact_url(&address)))?;
    let events = store.audit_events(&a.tenant, a.limit).await?;
    if events.is_empty() {
        // Said on stderr so `--json` output stays clean; a mistyped tenant looks the same.
        eprintln!("no audit events for tenant {:?} in this database", a.tenant);
    }
    if a.json {
        for e in &events {
            println!(
                "{}",
                json!({"at_ms": e.at_ms, "tenant": e.tenant, "actor": e.actor, "action": e.action, "target": e.target, "detail": e.detail})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "WHEN".into(),
        "ACTOR".into(),
        "ACTION".into(),
        "TARGET".into(),
        "DETAIL".into(),
    ]];
    for e in &events {
        rows.push(vec![
            time_of(&json!(e.at_ms)),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            e.detail.clone(),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}
