//! The broker's metadata in PostgreSQL, shared by every broker instance on the same
//! database (and schema).

use super::{
    digest, to_i64, to_u32, to_u64, Account, AuditEvent, BrokerStore, FileRow, NewAccount,
    NewOutbox, OutboxRow, ShareClaim, ShareRow, Stale, StoreError, Usage,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS broker_accounts (
      id TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      email TEXT NOT NULL,
      password_phc TEXT NOT NULL,
      verified BOOLEAN NOT NULL DEFAULT FALSE,
      code_digest BYTEA,
      code_expires_ms BIGINT NOT NULL DEFAULT 0,
      code_tries INTEGER NOT NULL DEFAULT 0,
      key_verifier BYTEA,
      pending_verifier BYTEA,
      created_ms BIGINT NOT NULL,
      UNIQUE (tenant, email))",
    // Databases made before registrations were bound to a key.
    "ALTER TABLE broker_accounts ADD COLUMN IF NOT EXISTS registration_digest BYTEA",
    "CREATE TABLE IF NOT EXISTS broker_files (
      id TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      owner TEXT NOT NULL,
      name TEXT NOT NULL,
      size BIGINT NOT NULL,
      created_ms BIGINT NOT NULL,
      object_key TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS broker_files_owner ON broker_files (tenant, owner)",
    "CREATE TABLE IF NOT EXISTS broker_shares (
      id TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      owner TEXT NOT NULL,
      file_id TEXT NOT NULL,
      recipient TEXT NOT NULL,
      verifier BYTEA NOT NULL,
      object_key TEXT NOT NULL,
      name TEXT NOT NULL,
      size BIGINT NOT NULL,
      created_ms BIGINT NOT NULL,
      expires_ms BIGINT NOT NULL,
      max_opens INTEGER NOT NULL,
      opens INTEGER NOT NULL DEFAULT 0,
      failed_tries INTEGER NOT NULL DEFAULT 0,
      revoked_ms BIGINT,
      purged_ms BIGINT)",
    "CREATE INDEX IF NOT EXISTS broker_shares_owner ON broker_shares (tenant, owner)",
    // Each instance's outbox key id and when (database time) it was last alive: mail
    // sealed under a key whose instance stopped beating is given up, never a live one's.
    "CREATE TABLE IF NOT EXISTS broker_outbox_keys (
      key_id BYTEA PRIMARY KEY,
      seen_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS broker_outbox (
      id BIGSERIAL PRIMARY KEY,
      recipient TEXT NOT NULL,
      subject TEXT NOT NULL,
      sealed_text BYTEA,
      created_ms BIGINT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_ms BIGINT NOT NULL DEFAULT 0,
      sent_ms BIGINT,
      failed_ms BIGINT,
      last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS broker_outbox_due ON broker_outbox (next_attempt_ms)
      WHERE sent_ms IS NULL AND failed_ms IS NULL",
    "CREATE TABLE IF NOT EXISTS broker_audit (
      id BIGSERIAL PRIMARY KEY,
      at_ms BIGINT NOT NULL,
      tenant TEXT NOT NULL,
      actor TEXT NOT NULL,
      action TEXT NOT NULL,
      target TEXT NOT NULL,
      detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS broker_audit_tenant ON broker_audit (tenant, id)",
];

macro_rules! account_columns {
    () => {
        "id, tenant, email, password_phc, verified, key_verifier, created_ms, pending_verifier, \
         registration_digest"
    };
}
macro_rules! file_columns {
    () => {
        "id, tenant, owner, name, size, created_ms, object_key"
    };
}
macro_rules! share_columns {
    () => {
        "id, tenant, owner, file_id, recipient, verifier, object_key, name, size, created_ms, \
         expires_ms, max_opens, opens, failed_tries, revoked_ms"
    };
}

/// The broker's metadata in PostgreSQL. `postgres://USER@HOST/DB[?schema=NAME]`: with
/// `schema`, its tables live in that schema (created if missing).
#[derive(Clone)]
pub struct PostgresBrokerStore {
    pool: PgPool,
    address: String,
}

impl std::fmt::Debug for PostgresBrokerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBrokerStore")
            .field("address", &self.address)
            .finish()
    }
}

/// The address without its password.
fn redact(address: &str) -> String {
    match url::Url::parse(address) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable address)".to_owned(),
    }
}

fn account_row(r: &PgRow) -> Result<Account, sqlx::Error> {
    let verifier: Option<Vec<u8>> = r.try_get(5)?;
    Ok(Account {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        email: r.try_get(2)?,
        password_phc: r.try_get(3)?,
        verified: r.try_get(4)?,
        key_verifier: verifier.and_then(|v| v.try_into().ok()),
        created_ms: to_u64(r.try_get(6)?),
        pending_verifier: r
            .try_get::<Option<Vec<u8>>, _>(7)?
            .and_then(|v| v.try_into().ok()),
        registration_digest: r
            .try_get::<Option<Vec<u8>>, _>(8)?
            .and_then(|v| v.try_into().ok()),
    })
}

fn file_row(r: &PgRow) -> Result<FileRow, sqlx::Error> {
    Ok(FileRow {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        owner: r.try_get(2)?,
        name: r.try_get(3)?,
        size: to_u64(r.try_get(4)?),
        created_ms: to_u64(r.try_get(5)?),
        object_key: r.try_get(6)?,
    })
}

fn share_row(r: &PgRow) -> Result<ShareRow, sqlx::Error> {
    let verifier: Vec<u8> = r.try_get(5)?;
    Ok(ShareRow {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        owner: r.try_get(2)?,
        file_id: r.try_get(3)?,
        recipient: r.try_get(4)?,
        verifier: digest(verifier).map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
        object_key: r.try_get(6)?,
        name: r.try_get(7)?,
        size: to_u64(r.try_get(8)?),
        created_ms: to_u64(r.try_get(9)?),
        expires_ms: to_u64(r.try_get(10)?),
        max_opens: to_u32(i64::from(r.try_get::<i32, _>(11)?)),
        opens: to_u32(i64::from(r.try_get::<i32, _>(12)?)),
        failed_tries: to_u32(i64::from(r.try_get::<i32, _>(13)?)),
        revoked_ms: r.try_get::<Option<i64>, _>(14)?.map(to_u64),
    })
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    mail: &[NewOutbox],
    now: u64,
) -> Result<(), sqlx::Error> {
    for m in mail {
        sqlx::query(
            "INSERT INTO broker_outbox (recipient, subject, sealed_text, created_ms, next_attempt_ms)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&m.recipient)
        .bind(&m.subject)
        .bind(&m.sealed_text)
        .bind(to_i64(now))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl PostgresBrokerStore {
    /// Connects (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]`).
    pub async fn connect(address: &str) -> Result<PostgresBrokerStore, StoreError> {
        let shown = redact(address);
        let mut url = url::Url::parse(address)
            .map_err(|e| StoreError::BadAddress(format!("{shown}: {e}")))?;
        let mut schema = None;
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "schema" {
                    schema = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        if let Some(s) = &schema {
            if s.is_empty()
                || s.len() > 63
                || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::BadAddress(
                    "schema: letters, digits and _ only, at most 63".into(),
                ));
            }
        }
        let mut options = PgConnectOptions::from_str(url.as_str())
            .map_err(|_| StoreError::BadAddress(format!("{shown}: not a PostgreSQL address")))?
            .application_name("sessioncert-broker");
        if let Some(s) = &schema {
            options = options.options([("search_path", s.as_str())]);
        }
        let connect_error = |e: sqlx::Error| {
            // sqlx's messages name the host and the database, never the password.
            StoreError::Database(format!("cannot connect to PostgreSQL at {shown}: {e}"))
        };
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        if let Some(s) = &schema {
            // Checked above: letters, digits and _ only.
            let create = format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"");
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&pool)
                .await
            {
                // Two instances creating it at once: one sees a unique violation.
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                )
                .bind(s)
                .fetch_one(&pool)
                .await
                .unwrap_or(false);
                if !exists {
                    return Err(StoreError::Database(e.to_string()));
                }
            }
        }
        Ok(PostgresBrokerStore {
            pool,
            address: shown,
        })
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

#[async_trait]
impl BrokerStore for PostgresBrokerStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // One migration at a time across instances.
        sqlx::query("SELECT pg_advisory_xact_lock(7017200101)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for s in SCHEMA {
            sqlx::query(*s).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn create_account(&self, a: &NewAccount, mail: &[NewOutbox]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let n = sqlx::query(
            "INSERT INTO broker_accounts (id, tenant, email, password_phc, verified,
               code_digest, code_expires_ms, code_tries, key_verifier, created_ms,
               registration_digest)
             VALUES ($1, $2, $3, $4, FALSE, $5, $6, $7, NULL, $8, $9)
             ON CONFLICT (tenant, email) DO UPDATE SET
               id = excluded.id, password_phc = excluded.password_phc,
               code_digest = excluded.code_digest, code_expires_ms = excluded.code_expires_ms,
               code_tries = excluded.code_tries, created_ms = excluded.created_ms,
               pending_verifier = NULL, registration_digest = excluded.registration_digest
             WHERE broker_accounts.verified = FALSE",
        )
        .bind(&a.account.id)
        .bind(&a.account.tenant)
        .bind(&a.account.email)
        .bind(&a.account.password_phc)
        .bind(a.code_digest.to_vec())
        .bind(to_i64(a.code_expires_ms))
        .bind(to_i32(a.code_tries))
        .bind(to_i64(a.account.created_ms))
        .bind(a.account.registration_digest.map(|d| d.to_vec()))
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Exists);
        }
        queue(&mut tx, mail, a.account.created_ms)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn enqueue(&self, mail: &[NewOutbox], now_ms: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        queue(&mut tx, mail, now_ms).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn account(&self, tenant: &str, email: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM broker_accounts WHERE tenant = $1 AND email = $2"
        ))
        .bind(tenant)
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(account_row).transpose().map_err(db)
    }

    async fn take_verification_try(
        &self,
        account_id: &str,
    ) -> Result<Option<([u8; 32], u64)>, StoreError> {
        let row = sqlx::query(
            "UPDATE broker_accounts SET code_tries = code_tries - 1
             WHERE id = $1 AND verified = FALSE AND code_tries > 0 AND code_digest IS NOT NULL
             RETURNING code_digest, code_expires_ms",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let d: Vec<u8> = r.try_get(0).map_err(db)?;
                let e: i64 = r.try_get(1).map_err(db)?;
                Ok(Some((digest(d)?, to_u64(e))))
            }
        }
    }

    async fn mark_verified(&self, account_id: &str) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE broker_accounts SET verified = TRUE, code_digest = NULL, code_tries = 0,
               registration_digest = NULL
             WHERE id = $1 AND verified = FALSE",
        )
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(|r| r.rows_affected() == 1)
    }

    async fn usage(
        &self,
        tenant: &str,
        owner: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<Usage, StoreError> {
        let r = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM broker_files WHERE tenant = $1 AND owner = $2),
               (SELECT COALESCE(SUM(size), 0)::BIGINT FROM broker_files
                  WHERE tenant = $1 AND owner = $2)
               + (SELECT COALESCE(SUM(size), 0)::BIGINT FROM broker_shares
                  WHERE tenant = $1 AND owner = $2 AND purged_ms IS NULL),
               (SELECT COUNT(*) FROM broker_shares
                  WHERE tenant = $1 AND owner = $2 AND revoked_ms IS NULL AND expires_ms > $3
                    AND opens < max_opens AND failed_tries < $4)",
        )
        .bind(tenant)
        .bind(owner)
        .bind(to_i64(now_ms))
        .bind(to_i32(max_failures))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let get = |i: usize| r.try_get::<i64, _>(i).map(to_u64).map_err(db);
        Ok(Usage {
            files: get(0)?,
            bytes: get(1)?,
            open_shares: get(2)?,
        })
    }

    async fn file_exists(&self, id: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM broker_files WHERE id = $1)")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn compact(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn set_pending_verifier(
        &self,
        account_id: &str,
        v: &[u8; 32],
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE broker_accounts SET pending_verifier = $2
             WHERE id = $1 AND key_verifier IS NULL",
        )
        .bind(account_id)
        .bind(v.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(|r| r.rows_affected() == 1)
    }

    async fn commit_verifier(&self, account_id: &str, v: &[u8; 32]) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE broker_accounts SET key_verifier = $2, pending_verifier = NULL
             WHERE id = $1 AND key_verifier IS NULL AND pending_verifier = $2",
        )
        .bind(account_id)
        .bind(v.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(|r| r.rows_affected() == 1)
    }

    async fn insert_file(&self, f: &FileRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO broker_files (",
            file_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&f.id)
        .bind(&f.tenant)
        .bind(&f.owner)
        .bind(&f.name)
        .bind(to_i64(f.size))
        .bind(to_i64(f.created_ms))
        .bind(&f.object_key)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn files(&self, tenant: &str, owner: &str) -> Result<Vec<FileRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM broker_files WHERE tenant = $1 AND owner = $2 ORDER BY created_ms, id"
        ))
        .bind(tenant)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(file_row)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            file_columns!(),
            " FROM broker_files WHERE tenant = $1 AND owner = $2 AND id = $3"
        ))
        .bind(tenant)
        .bind(owner)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(file_row).transpose().map_err(db)
    }

    async fn delete_file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<(FileRow, Vec<String>)>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(concat!(
            "DELETE FROM broker_files WHERE tenant = $1 AND owner = $2 AND id = $3 RETURNING ",
            file_columns!()
        ))
        .bind(tenant)
        .bind(owner)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let f = file_row(&row).map_err(db)?;
        let objects: Vec<Option<String>> = sqlx::query_scalar(
            "DELETE FROM broker_shares WHERE tenant = $1 AND owner = $2 AND file_id = $3
             RETURNING CASE WHEN purged_ms IS NULL THEN object_key END",
        )
        .bind(tenant)
        .bind(owner)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let objects: Vec<String> = objects.into_iter().flatten().collect();
        tx.commit().await.map_err(db)?;
        Ok(Some((f, objects)))
    }

    async fn insert_share(&self, s: &ShareRow, mail: &[NewOutbox]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The file row is locked until this commits: a `delete_file` (which deletes the
        // file row first, then its shares) either finished before — no row, no share —
        // or waits and then deletes this share with the others.
        let file: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM broker_files WHERE id = $1 AND tenant = $2 AND owner = $3 FOR SHARE",
        )
        .bind(&s.file_id)
        .bind(&s.tenant)
        .bind(&s.owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if file.is_none() {
            return Err(StoreError::Gone);
        }
        sqlx::query(concat!(
            "INSERT INTO broker_shares (",
            share_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.owner)
        .bind(&s.file_id)
        .bind(&s.recipient)
        .bind(s.verifier.to_vec())
        .bind(&s.object_key)
        .bind(&s.name)
        .bind(to_i64(s.size))
        .bind(to_i64(s.created_ms))
        .bind(to_i64(s.expires_ms))
        .bind(to_i32(s.max_opens))
        .bind(to_i32(s.opens))
        .bind(to_i32(s.failed_tries))
        .bind(s.revoked_ms.map(to_i64))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        queue(&mut tx, mail, s.created_ms).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn shares(&self, tenant: &str, owner: &str) -> Result<Vec<ShareRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            share_columns!(),
            " FROM broker_shares WHERE tenant = $1 AND owner = $2 ORDER BY created_ms DESC, id"
        ))
        .bind(tenant)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(share_row)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn revoke_share(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<Option<ShareRow>, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE broker_shares SET revoked_ms = COALESCE(revoked_ms, $4)
             WHERE tenant = $1 AND owner = $2 AND id = $3 RETURNING ",
            share_columns!()
        ))
        .bind(tenant)
        .bind(owner)
        .bind(id)
        .bind(to_i64(now_ms))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(share_row).transpose().map_err(db)
    }

    async fn share(&self, id: &str) -> Result<Option<ShareRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            share_columns!(),
            " FROM broker_shares WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(share_row).transpose().map_err(db)
    }

    async fn take_share_try(&self, id: &str, max_failures: u32) -> Result<Option<u32>, StoreError> {
        let n: Option<i32> = sqlx::query_scalar(
            "UPDATE broker_shares SET failed_tries = failed_tries + 1
             WHERE id = $1 AND failed_tries < $2
             RETURNING failed_tries",
        )
        .bind(id)
        .bind(to_i32(max_failures))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(n.map(|n| to_u32(i64::from(n))))
    }

    async fn refund_share_try(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE broker_shares SET failed_tries = failed_tries - 1
             WHERE id = $1 AND failed_tries > 0",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn claim_share_open(
        &self,
        id: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<ShareClaim, StoreError> {
        let row = sqlx::query(concat!(
            "UPDATE broker_shares SET opens = opens + 1
             WHERE id = $1 AND revoked_ms IS NULL AND expires_ms > $2
               AND opens < max_opens AND failed_tries < $3 AND purged_ms IS NULL
             RETURNING ",
            share_columns!()
        ))
        .bind(id)
        .bind(to_i64(now_ms))
        .bind(to_i32(max_failures))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(r) = row {
            return Ok(ShareClaim::Granted(Box::new(share_row(&r).map_err(db)?)));
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM broker_shares WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(if exists {
            ShareClaim::Closed
        } else {
            ShareClaim::Missing
        })
    }

    async fn spent_shares(
        &self,
        now_ms: u64,
        max_failures: u32,
        limit: u32,
    ) -> Result<Vec<ShareRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            share_columns!(),
            " FROM broker_shares WHERE purged_ms IS NULL
              AND (revoked_ms IS NOT NULL OR expires_ms <= $1 OR opens >= max_opens
                   OR failed_tries >= $2)
              LIMIT $3"
        ))
        .bind(to_i64(now_ms))
        .bind(to_i32(max_failures))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(share_row)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn mark_share_purged(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE broker_shares SET purged_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(to_i64(now_ms))
            .execute(&self.pool)
            .await
            .map_err(db)
            .map(drop)
    }

    async fn outbox_claim(
        &self,
        key_id: &[u8],
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // SKIP LOCKED: instances claiming at once take different rows.
        let rows = sqlx::query(
            "UPDATE broker_outbox SET next_attempt_ms = $2
             WHERE id IN (SELECT id FROM broker_outbox
                          WHERE sent_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= $1
                            AND substring(sealed_text from 1 for $5) = $4
                          ORDER BY next_attempt_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, recipient, subject, sealed_text, attempts",
        )
        .bind(to_i64(now_ms))
        .bind(to_i64(now_ms.saturating_add(lease_ms)))
        .bind(i64::from(limit))
        .bind(key_id)
        .bind(key_id.len() as i32)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get(0)?,
                    recipient: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    sealed_text: r.try_get::<Option<Vec<u8>>, _>(3)?.unwrap_or_default(),
                    attempts: to_u32(i64::from(r.try_get::<i32, _>(4)?)),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    async fn outbox_sent(&self, id: i64, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE broker_outbox SET sent_ms = $2, sealed_text = NULL,
               attempts = attempts + 1, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(to_i64(now_ms))
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn outbox_retry(&self, id: i64, next_ms: u64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE broker_outbox SET next_attempt_ms = $2, attempts = attempts + 1,
               last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(to_i64(next_ms))
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn outbox_give_up(&self, id: i64, now_ms: u64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE broker_outbox SET failed_ms = $2, sealed_text = NULL,
               attempts = attempts + 1, last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(to_i64(now_ms))
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn outbox_heartbeat(&self, key_id: &[u8], _now_ms: u64) -> Result<(), StoreError> {
        // The database's clock, not this host's: instances on hosts whose clocks differ
        // still agree on who is alive.
        sqlx::query(
            "INSERT INTO broker_outbox_keys (key_id, seen_ms)
             VALUES ($1, (extract(epoch from clock_timestamp()) * 1000)::BIGINT)
             ON CONFLICT (key_id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn outbox_give_up_foreign(
        &self,
        key_id: &[u8],
        silent_for_ms: u64,
        now_ms: u64,
        error: &str,
    ) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE broker_outbox SET failed_ms = $3, sealed_text = NULL, last_error = $4
             WHERE sent_ms IS NULL AND failed_ms IS NULL AND created_ms < $3 - $2
               AND (sealed_text IS NULL OR substring(sealed_text from 1 for $5) <> $1)
               AND NOT EXISTS (
                 SELECT 1 FROM broker_outbox_keys k
                 WHERE k.key_id = substring(broker_outbox.sealed_text from 1 for $5)
                   AND k.seen_ms > (extract(epoch from clock_timestamp()) * 1000)::BIGINT - $2)",
        )
        .bind(key_id)
        .bind(to_i64(silent_for_ms))
        .bind(to_i64(now_ms))
        .bind(error)
        .bind(key_id.len() as i32)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        // Keys silent for a day are forgotten (their rows were given up long since).
        sqlx::query(
            "DELETE FROM broker_outbox_keys
             WHERE seen_ms < (extract(epoch from clock_timestamp()) * 1000)::BIGINT - 86400000",
        )
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(n)
    }

    async fn delete_stale(
        &self,
        finished_before_ms: u64,
        code_expired_before_ms: u64,
    ) -> Result<Stale, StoreError> {
        let notifications =
            sqlx::query("DELETE FROM broker_outbox WHERE COALESCE(sent_ms, failed_ms) < $1")
                .bind(to_i64(finished_before_ms))
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        let accounts = sqlx::query(
            "DELETE FROM broker_accounts WHERE verified = FALSE AND code_expires_ms < $1",
        )
        .bind(to_i64(code_expired_before_ms))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(Stale {
            notifications,
            accounts,
        })
    }

    async fn outbox_pending_of(&self, key_id: &[u8]) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM broker_outbox WHERE sent_ms IS NULL AND failed_ms IS NULL
               AND substring(sealed_text from 1 for $2) = $1",
        )
        .bind(key_id)
        .bind(key_id.len() as i32)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(to_u64(n))
    }

    async fn outbox_pending(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM broker_outbox WHERE sent_ms IS NULL AND failed_ms IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(to_u64(n))
    }

    async fn audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO broker_audit (at_ms, tenant, actor, action, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(to_i64(e.at_ms))
        .bind(&e.tenant)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(db)
        .map(drop)
    }

    async fn audit_events(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, tenant, actor, action, target, detail FROM broker_audit
             WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    at_ms: to_u64(r.try_get(0)?),
                    tenant: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }
}
