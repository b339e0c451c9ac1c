//! `sessioncert sessions list|close`: the operator's view. Never shows keys.

use super::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Subcommand;
use sessioncert_proto::SessionId;
use sessioncert_server::keys::DATABASE_FILE;
use sessioncert_server::now_ms;
use sessioncert_store::{OpenMode, SessionStore, SessionSummary, SqliteStore};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `sessions` subcommands.
#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List sessions: id, state, suite, created, last used, expiry, request count.
    List {
        /// Data directory of the server.
        #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Include expired and closed sessions.
        #[arg(long)]
        all: bool,
    },
    /// Close a session; a running server drops it within about a second.
    Close {
        /// The session id (as shown by `sessions list`; it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Data directory of the server.
        #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
        data: PathBuf,
    },
}

fn open(data: &Path) -> anyhow::Result<SqliteStore> {
    let db = data.join(DATABASE_FILE);
    anyhow::ensure!(db.exists(), "no session database at {}", db.display());
    let (store, _) = SqliteStore::open(&db, OpenMode::Admin)
        .with_context(|| format!("cannot open {}", db.display()))?;
    Ok(store)
}

fn time(ms: u64) -> String {
    if ms >= i64::MAX as u64 {
        return "never".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn expiry(s: &SessionSummary) -> u64 {
    s.expires_at_ms
        .min(s.last_used_at_ms.saturating_add(s.idle_timeout_ms))
}

fn print_table(rows: &[SessionSummary]) {
    println!(
        "{:<22}  {:<11}  {:<17}  {:<20}  {:<20}  {:<20}  {:>8}  CLIENT",
        "ID", "STATE", "SUITE", "CREATED", "LAST USED", "EXPIRES", "REQUESTS"
    );
    for s in rows {
        println!(
            "{:<22}  {:<11}  {:<17}  {:<20}  {:<20}  {:<20}  {:>8}  {}",
            s.id.to_string(),
            s.state.as_str().to_uppercase(),
            s.suite,
            time(s.created_at_ms),
            time(s.last_used_at_ms),
            time(expiry(s)),
            s.request_count,
            s.client_addr.as_deref().unwrap_or("-"),
        );
    }
}

/// Runs a `sessions` subcommand.
pub async fn run(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCommand::List { data, json, all } => {
            let store = open(&data)?;
            let rows = store.list(!all).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Close { id, data } => {
            let sid: SessionId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("{id:?} is not a session id"))?;
            let store = open(&data)?;
            if store.close(&sid, now_ms()).await? {
                println!("closed {sid}");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no live session {sid}")
            }
        }
    }
}
