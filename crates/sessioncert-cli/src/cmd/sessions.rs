//! `sessioncert sessions list|close`: the operator's view. Never shows keys.

use super::server::{redact_url, StoreUrl};
use super::DEFAULT_DATA_DIR;
use anyhow::Context;
use clap::Subcommand;
use sessioncert_legacy::LegacyId;
use sessioncert_proto::{SessionId, SessionState};
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
        /// The servers' session store, as given to `serve`/`gateway --store`
        /// (default: sessions.db in --data).
        #[arg(long, env = "SESSIONCERT_STORE", value_parser = super::server::parse_store_url)]
        store: Option<StoreUrl>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Include expired and closed sessions.
        #[arg(long)]
        all: bool,
        /// Only sessions in this state (established, expired, closed; implies --all for
        /// the ended ones).
        #[arg(long)]
        state: Option<String>,
        /// Only sessions from this client address.
        #[arg(long)]
        client: Option<String>,
        /// Order: created (newest first, the default) or last-used (most recent first).
        #[arg(long, default_value = "created", value_parser = ["created", "last-used"])]
        sort: String,
        /// At most this many rows (after filtering and sorting).
        #[arg(long, allow_hyphen_values = true, value_parser = super::parse_number::<usize>)]
        limit: Option<usize>,
        /// Print only the counts by state.
        #[arg(long)]
        count: bool,
    },
    /// Close a session, or every live session of a client address; a running server
    /// drops them within about a second.
    Close {
        /// The session id as `sessions list` shows it (it may start with `-`); a legacy
        /// Session-Cert session as legacy:N.
        #[arg(allow_hyphen_values = true, required_unless_present = "client")]
        id: Option<String>,
        /// Close every live session from this client address instead.
        #[arg(long, conflicts_with = "id")]
        client: Option<String>,
        /// Data directory of the server.
        #[arg(long, env = "SESSIONCERT_DATA", default_value = DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// The servers' session store, as given to `serve`/`gateway --store`
        /// (default: sessions.db in --data). Closing in a shared store closes the
        /// session at every instance at its next request.
        #[arg(long, env = "SESSIONCERT_STORE", value_parser = super::server::parse_store_url)]
        store: Option<StoreUrl>,
    },
}

/// Opens the store beside a running server: SQLite in admin mode (no lock, no recovery),
/// or the shared store the servers use.
async fn open(data: &Path, store: Option<StoreUrl>) -> anyhow::Result<Box<dyn SessionStore>> {
    let sqlite = |db: PathBuf| -> anyhow::Result<Box<dyn SessionStore>> {
        anyhow::ensure!(db.exists(), "no session database at {}", db.display());
        let (store, _) = SqliteStore::open(&db, OpenMode::Admin)
            .with_context(|| format!("cannot open {}", db.display()))?;
        Ok(Box::new(store))
    };
    match store {
        None | Some(StoreUrl::Sqlite(None)) => sqlite(data.join(DATABASE_FILE)),
        Some(StoreUrl::Sqlite(Some(db))) => sqlite(db),
        Some(StoreUrl::Memory) => {
            anyhow::bail!("--store memory: keeps sessions inside the server process; there is nothing to open from here")
        }
        Some(StoreUrl::Invalid(e)) => anyhow::bail!("{e}"),
        Some(StoreUrl::Redis(url)) => Ok(Box::new(
            sessioncert_store::RedisStore::connect(&url)
                .await
                .with_context(|| format!("--store {}", redact_url(&url)))?,
        )),
        Some(StoreUrl::Postgres(url)) => Ok(Box::new(
            sessioncert_store::PostgresStore::connect(&url)
                .await
                .with_context(|| format!("--store {}", redact_url(&url)))?,
        )),
    }
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

/// How a session id is shown and typed: a legacy Session-Cert session as `legacy:N`
/// (the id its client sends), any other as its base64url text.
fn id_text(id: &SessionId) -> String {
    match LegacyId::from_session_id(id) {
        Some(l) => format!("legacy:{l}"),
        None => id.to_string(),
    }
}

/// Parses what [`id_text`] prints.
fn parse_id(text: &str) -> Option<SessionId> {
    match text.strip_prefix("legacy:") {
        Some(n) => LegacyId::parse_header(n.as_bytes()).map(LegacyId::session_id),
        None => text.parse().ok(),
    }
}

fn print_table(rows: &[SessionSummary]) {
    println!(
        "{:<23}  {:<11}  {:<19}  {:<20}  {:<20}  {:<20}  {:>8}  CLIENT",
        "ID", "STATE", "SUITE", "CREATED", "LAST USED", "EXPIRES", "REQUESTS"
    );
    for s in rows {
        println!(
            "{:<23}  {:<11}  {:<19}  {:<20}  {:<20}  {:<20}  {:>8}  {}",
            id_text(&s.id),
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
        SessionsCommand::List {
            data,
            store,
            json,
            all,
            state,
            client,
            sort,
            limit,
            count,
        } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(s.parse::<SessionState>().map_err(|_| {
                    anyhow::anyhow!("--state {s:?}: expected established, expired or closed")
                })?),
            };
            let store = open(&data, store).await?;
            let live_only = !all && state.is_none_or(|s| s.is_live());
            let mut rows = store.list(live_only).await?;
            // A live row whose lifetime or idle time ran out is expired now, whether or
            // not a server has swept it yet: it can no longer be used.
            let now = now_ms();
            for r in rows.iter_mut() {
                if r.state.is_live() && expiry(r) <= now {
                    r.state = SessionState::Expired;
                    r.ended_at_ms.get_or_insert(expiry(r));
                }
            }
            if live_only {
                rows.retain(|r| r.state.is_live());
            }
            rows.retain(|r| state.is_none_or(|s| r.state == s));
            if let Some(c) = &client {
                rows.retain(|r| r.client_addr.as_deref() == Some(c.as_str()));
            }
            if sort == "last-used" {
                rows.sort_by_key(|r| std::cmp::Reverse(r.last_used_at_ms));
            }
            if count {
                let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
                for r in &rows {
                    *by_state.entry(r.state.as_str()).or_default() += 1;
                }
                if json {
                    println!("{}", serde_json::to_string(&by_state)?);
                } else {
                    for (s, n) in &by_state {
                        println!("{s} {n}");
                    }
                    println!("total {}", rows.len());
                }
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(n) = limit {
                rows.truncate(n);
            }
            if json {
                // Ids as the table shows them and `sessions close` takes them (a legacy
                // session as legacy:N).
                let mut out = serde_json::to_value(&rows)?;
                if let Some(list) = out.as_array_mut() {
                    for (v, r) in list.iter_mut().zip(&rows) {
                        v["id"] = serde_json::Value::from(id_text(&r.id));
                    }
                }
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Close {
            id,
            client,
            data,
            store,
        } => {
            let store = open(&data, store).await?;
            if let Some(addr) = client {
                let ids: Vec<SessionId> = store
                    .list(true)
                    .await?
                    .into_iter()
                    .filter(|r| r.client_addr.as_deref() == Some(addr.as_str()))
                    .map(|r| r.id)
                    .collect();
                let mut closed = 0;
                for sid in &ids {
                    if store.close(sid, now_ms()).await? {
                        closed += 1;
                    }
                }
                println!(
                    "closed {closed} session{} of {addr}",
                    if closed == 1 { "" } else { "s" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let id = id.unwrap_or_default();
            let sid = parse_id(&id).ok_or_else(|| {
                anyhow::anyhow!(
                    "{id:?} is not a session id (as `sessions list` shows it: 22 base64url \
                     characters, or legacy:N for a legacy Session-Cert session)"
                )
            })?;
            if store.close(&sid, now_ms()).await? {
                println!("closed {}", id_text(&sid));
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no live session {}", id_text(&sid))
            }
        }
    }
}
