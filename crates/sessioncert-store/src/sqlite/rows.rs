//! Encoding of values into SQLite and decoding of rows out of it.

use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use sessioncert_proto::{SessionId, SessionState};

use crate::{SessionRecord, SessionSummary, StoreError};

/// SQL list of the live states, for `state IN ...`.
pub(super) const LIVE: &str = "('matching', 'established')";

/// SQLite integers are signed 64-bit. Unix milliseconds are far below `i64::MAX`;
/// larger values (e.g. `u64::MAX` for "never") are stored as `i64::MAX`, which means
/// the same thing for every comparison the store makes.
pub(super) fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corrupt(id: Option<&SessionId>, what: impl core::fmt::Display) -> StoreError {
    match id {
        Some(id) => StoreError::CorruptRow(format!("session {id}: {what}")),
        None => StoreError::CorruptRow(what.to_string()),
    }
}

fn col<T: FromSql>(
    row: &Row<'_>,
    idx: usize,
    name: &str,
    id: Option<&SessionId>,
) -> Result<T, StoreError> {
    row.get(idx).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            corrupt(id, format!("column {name}: {e}"))
        }
        other => other.into(),
    })
}

fn u64_col(row: &Row<'_>, idx: usize, name: &str, id: &SessionId) -> Result<u64, StoreError> {
    let v: i64 = col(row, idx, name, Some(id))?;
    u64::try_from(v).map_err(|_| corrupt(Some(id), format!("column {name} is negative ({v})")))
}

fn id_col(row: &Row<'_>, idx: usize) -> Result<SessionId, StoreError> {
    let bytes: Vec<u8> = col(row, idx, "id", None)?;
    SessionId::from_slice(&bytes)
        .ok_or_else(|| corrupt(None, format!("id is {} bytes, not 16", bytes.len())))
}

fn state_col(row: &Row<'_>, idx: usize, id: &SessionId) -> Result<SessionState, StoreError> {
    let text: String = col(row, idx, "state", Some(id))?;
    text.parse()
        .map_err(|_| corrupt(Some(id), format!("unknown state {text:?}")))
}

fn version_col(row: &Row<'_>, idx: usize, id: &SessionId) -> Result<u16, StoreError> {
    let v: i64 = col(row, idx, "version", Some(id))?;
    u16::try_from(v).map_err(|_| corrupt(Some(id), format!("version {v} out of range")))
}

const RECORD_COLUMNS: &str = "id, state, version, suite, client_addr, created_at_ms, \
     last_used_at_ms, expires_at_ms, idle_timeout_ms, request_count, sealed_secrets";

const SUMMARY_COLUMNS: &str = "id, state, version, suite, client_addr, created_at_ms, \
     last_used_at_ms, expires_at_ms, idle_timeout_ms, request_count, ended_at_ms";

fn record_from_row(row: &Row<'_>) -> Result<SessionRecord, StoreError> {
    let id = id_col(row, 0)?;
    Ok(SessionRecord {
        id,
        state: state_col(row, 1, &id)?,
        version: version_col(row, 2, &id)?,
        suite: col(row, 3, "suite", Some(&id))?,
        client_addr: col(row, 4, "client_addr", Some(&id))?,
        created_at_ms: u64_col(row, 5, "created_at_ms", &id)?,
        last_used_at_ms: u64_col(row, 6, "last_used_at_ms", &id)?,
        expires_at_ms: u64_col(row, 7, "expires_at_ms", &id)?,
        idle_timeout_ms: u64_col(row, 8, "idle_timeout_ms", &id)?,
        request_count: u64_col(row, 9, "request_count", &id)?,
        sealed_secrets: col(row, 10, "sealed_secrets", Some(&id))?,
    })
}

fn summary_from_row(row: &Row<'_>) -> Result<SessionSummary, StoreError> {
    let id = id_col(row, 0)?;
    let ended: Option<i64> = col(row, 10, "ended_at_ms", Some(&id))?;
    Ok(SessionSummary {
        id,
        state: state_col(row, 1, &id)?,
        version: version_col(row, 2, &id)?,
        suite: col(row, 3, "suite", Some(&id))?,
        client_addr: col(row, 4, "client_addr", Some(&id))?,
        created_at_ms: u64_col(row, 5, "created_at_ms", &id)?,
        last_used_at_ms: u64_col(row, 6, "last_used_at_ms", &id)?,
        expires_at_ms: u64_col(row, 7, "expires_at_ms", &id)?,
        idle_timeout_ms: u64_col(row, 8, "idle_timeout_ms", &id)?,
        request_count: u64_col(row, 9, "request_count", &id)?,
        ended_at_ms: ended
            .map(|v| {
                u64::try_from(v).map_err(|_| {
                    corrupt(Some(&id), format!("column ended_at_ms is negative ({v})"))
                })
            })
            .transpose()?,
    })
}

pub(super) fn load(conn: &Connection, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM sessions WHERE id = ?1"
    ))?;
    let mut rows = stmt.query(params![&id.as_bytes()[..]])?;
    match rows.next()? {
        Some(row) => record_from_row(row).map(Some),
        None => Ok(None),
    }
}

pub(super) fn load_live(conn: &Connection) -> Result<Vec<SessionRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM sessions WHERE state IN {LIVE}"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(record_from_row(row)?);
    }
    Ok(out)
}

pub(super) fn load_ended(
    conn: &Connection,
    since_ms: u64,
) -> Result<Vec<(SessionRecord, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS}, ended_at_ms FROM sessions \
         WHERE state NOT IN {LIVE} AND ended_at_ms >= ?1 AND length(sealed_secrets) > 0"
    ))?;
    let mut rows = stmt.query(params![to_db(since_ms)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let ended: i64 = row.get(11)?; // after RECORD_COLUMNS
        out.push((record_from_row(row)?, u64::try_from(ended).unwrap_or(0)));
    }
    Ok(out)
}

pub(super) fn list(conn: &Connection, live_only: bool) -> Result<Vec<SessionSummary>, StoreError> {
    let filter = if live_only {
        format!("WHERE state IN {LIVE}")
    } else {
        String::new()
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM sessions {filter} ORDER BY created_at_ms DESC, id DESC"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(summary_from_row(row)?);
    }
    Ok(out)
}

pub(super) fn ended_since(conn: &Connection, since_ms: u64) -> Result<Vec<SessionId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM sessions WHERE ended_at_ms >= ?1 ORDER BY ended_at_ms, id",
    )?;
    let mut rows = stmt.query(params![to_db(since_ms)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(id_col(row, 0)?);
    }
    Ok(out)
}

pub(super) fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}
