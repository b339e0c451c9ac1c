//! The broker's metadata in an embedded SQLite file (the default, one instance).

use super::{
    digest, to_i64, to_u32, to_u64, Account, AuditEvent, BrokerStore, FileRow, NewAccount,
    NewOutbox, OutboxRow, ShareClaim, ShareRow, Stale, StoreError, Usage,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS broker_accounts (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  email TEXT NOT NULL,
  password_phc TEXT NOT NULL,
  verified INTEGER NOT NULL DEFAULT 0,
  code_digest BLOB,
  code_expires_ms INTEGER NOT NULL DEFAULT 0,
  code_tries INTEGER NOT NULL DEFAULT 0,
  key_verifier BLOB,
  pending_verifier BLOB,
  created_ms INTEGER NOT NULL,
  registration_digest BLOB,
  UNIQUE (tenant, email)
);
CREATE TABLE IF NOT EXISTS broker_files (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  object_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_files_owner ON broker_files (tenant, owner);
CREATE TABLE IF NOT EXISTS broker_shares (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  owner TEXT NOT NULL,
  file_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  verifier BLOB NOT NULL,
  object_key TEXT NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  max_opens INTEGER NOT NULL,
  opens INTEGER NOT NULL DEFAULT 0,
  failed_tries INTEGER NOT NULL DEFAULT 0,
  revoked_ms INTEGER,
  purged_ms INTEGER
);
CREATE INDEX IF NOT EXISTS broker_shares_owner ON broker_shares (tenant, owner);
CREATE TABLE IF NOT EXISTS broker_outbox_keys (
  key_id BLOB PRIMARY KEY,
  seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient TEXT NOT NULL,
  subject TEXT NOT NULL,
  sealed_text BLOB,
  created_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  sent_ms INTEGER,
  failed_ms INTEGER,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS broker_outbox_due ON broker_outbox (next_attempt_ms)
  WHERE sent_ms IS NULL AND failed_ms IS NULL;
CREATE TABLE IF NOT EXISTS broker_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_audit_tenant ON broker_audit (tenant, id);
";

const ACCOUNT_COLUMNS: &str = "id, tenant, email, password_phc, verified, key_verifier, \
     created_ms, pending_verifier, registration_digest";
const FILE_COLUMNS: &str = "id, tenant, owner, name, size, created_ms, object_key";
const SHARE_COLUMNS: &str = "id, tenant, owner, file_id, recipient, verifier, object_key, name, \
     size, created_ms, expires_ms, max_opens, opens, failed_tries, revoked_ms";

/// The broker's metadata in a SQLite file. Statements run on the blocking pool, one at a
/// time (SQLite serialises writers anyway).
#[derive(Clone)]
pub struct SqliteBrokerStore {
    conn: Arc<Mutex<Connection>>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<Account> {
    let verifier: Option<Vec<u8>> = r.get(5)?;
    Ok(Account {
        id: r.get(0)?,
        tenant: r.get(1)?,
        email: r.get(2)?,
        password_phc: r.get(3)?,
        verified: r.get::<_, i64>(4)? != 0,
        key_verifier: verifier.and_then(|v| v.try_into().ok()),
        created_ms: to_u64(r.get(6)?),
        pending_verifier: r
            .get::<_, Option<Vec<u8>>>(7)?
            .and_then(|v| v.try_into().ok()),
        registration_digest: r
            .get::<_, Option<Vec<u8>>>(8)?
            .and_then(|v| v.try_into().ok()),
    })
}

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        size: to_u64(r.get(4)?),
        created_ms: to_u64(r.get(5)?),
        object_key: r.get(6)?,
    })
}

fn share_row(r: &Row<'_>) -> rusqlite::Result<ShareRow> {
    let verifier: Vec<u8> = r.get(5)?;
    Ok(ShareRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        owner: r.get(2)?,
        file_id: r.get(3)?,
        recipient: r.get(4)?,
        verifier: digest(verifier).map_err(|_| rusqlite::Error::InvalidQuery)?,
        object_key: r.get(6)?,
        name: r.get(7)?,
        size: to_u64(r.get(8)?),
        created_ms: to_u64(r.get(9)?),
        expires_ms: to_u64(r.get(10)?),
        max_opens: to_u32(r.get(11)?),
        opens: to_u32(r.get(12)?),
        failed_tries: to_u32(r.get(13)?),
        revoked_ms: r.get::<_, Option<i64>>(14)?.map(to_u64),
    })
}

fn queue(tx: &rusqlite::Transaction<'_>, mail: &[NewOutbox], now: u64) -> rusqlite::Result<()> {
    for m in mail {
        tx.execute(
            "INSERT INTO broker_outbox (recipient, subject, sealed_text, created_ms, next_attempt_ms)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![m.recipient, m.subject, m.sealed_text, to_i64(now)],
        )?;
    }
    Ok(())
}

/// Takes the lock a broker holds on the SQLite database it serves (`PATH.serve-lock`),
/// so a second broker started on the same database refuses to start: its rate limits,
/// upload slots and mail budgets would be separate, allowing twice as much. Other
/// readers (`broker audit`) do not take it. Released when the file is dropped or the
/// process ends.
pub fn lock_for_serving(db: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".serve-lock");
    let lock = db.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options
        .open(&lock)
        .map_err(|e| StoreError::Database(format!("{}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(db.display().to_string())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Database(format!("{}: {e}", lock.display())))
        }
    }
}

impl SqliteBrokerStore {
    /// Opens (or creates, owner-only) the database file.
    pub async fn open(path: &Path) -> Result<SqliteBrokerStore, StoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let fresh = !path.exists();
            let conn = Connection::open(&path).map_err(db)?;
            #[cfg(unix)]
            if fresh {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Database(e.to_string()))?;
            }
            #[cfg(not(unix))]
            let _ = fresh;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(db)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(db)?;
            // Deleted rows (wiped notifications) are overwritten, not left in free pages.
            conn.pragma_update(None, "secure_delete", "ON")
                .map_err(db)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(SqliteBrokerStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
        .map_err(db)
    }
}

#[async_trait]
impl BrokerStore for SqliteBrokerStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute_batch(SCHEMA)?;
            // Databases made before registrations were bound to a key.
            let has: bool = c
                .prepare("SELECT 1 FROM pragma_table_info('broker_accounts') WHERE name = 'registration_digest'")?
                .exists([])?;
            if !has {
                c.execute_batch("ALTER TABLE broker_accounts ADD COLUMN registration_digest BLOB")?;
            }
            Ok(())
        })
        .await
    }

    async fn create_account(&self, a: &NewAccount, mail: &[NewOutbox]) -> Result<(), StoreError> {
        let a = a.clone();
        let mail = mail.to_vec();
        let created = self
            .run(move |c| {
                let tx = c.transaction()?;
                let n = tx.execute(
                    "INSERT INTO broker_accounts (id, tenant, email, password_phc, verified,
                       code_digest, code_expires_ms, code_tries, key_verifier, created_ms,
                       registration_digest)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, NULL, ?8, ?9)
                     ON CONFLICT (tenant, email) DO UPDATE SET
                       id = excluded.id, password_phc = excluded.password_phc,
                       code_digest = excluded.code_digest,
                       code_expires_ms = excluded.code_expires_ms,
                       code_tries = excluded.code_tries, created_ms = excluded.created_ms,
                       pending_verifier = NULL,
                       registration_digest = excluded.registration_digest
                     WHERE broker_accounts.verified = 0",
                    params![
                        a.account.id,
                        a.account.tenant,
                        a.account.email,
                        a.account.password_phc,
                        a.code_digest.to_vec(),
                        to_i64(a.code_expires_ms),
                        a.code_tries,
                        to_i64(a.account.created_ms),
                        a.account.registration_digest.map(|d| d.to_vec()),
                    ],
                )?;
                if n == 1 {
                    queue(&tx, &mail, a.account.created_ms)?;
                    tx.commit()?;
                }
                Ok(n == 1)
            })
            .await?;
        if created {
            Ok(())
        } else {
            Err(StoreError::Exists)
        }
    }

    async fn enqueue(&self, mail: &[NewOutbox], now_ms: u64) -> Result<(), StoreError> {
        let mail = mail.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            queue(&tx, &mail, now_ms)?;
            tx.commit()
        })
        .await
    }

    async fn account(&self, tenant: &str, email: &str) -> Result<Option<Account>, StoreError> {
        let (tenant, email) = (tenant.to_owned(), email.to_owned());
        self.run(move |c| {
            c.query_row(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM broker_accounts WHERE tenant = ?1 AND email = ?2"
                ),
                params![tenant, email],
                account_row,
            )
            .optional()
        })
        .await
    }

    async fn take_verification_try(
        &self,
        account_id: &str,
    ) -> Result<Option<([u8; 32], u64)>, StoreError> {
        let id = account_id.to_owned();
        let row = self
            .run(move |c| {
                c.query_row(
                    "UPDATE broker_accounts SET code_tries = code_tries - 1
                     WHERE id = ?1 AND verified = 0 AND code_tries > 0 AND code_digest IS NOT NULL
                     RETURNING code_digest, code_expires_ms",
                    params![id],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
            })
            .await?;
        row.map(|(d, e)| Ok((digest(d)?, to_u64(e)))).transpose()
    }

    async fn mark_verified(&self, account_id: &str) -> Result<bool, StoreError> {
        let id = account_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE broker_accounts SET verified = 1, code_digest = NULL, code_tries = 0,
                   registration_digest = NULL
                 WHERE id = ?1 AND verified = 0",
                params![id],
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn usage(
        &self,
        tenant: &str,
        owner: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<Usage, StoreError> {
        let (tenant, owner) = (tenant.to_owned(), owner.to_owned());
        self.run(move |c| {
            let (files, bytes) = c.query_row(
                "SELECT (SELECT COUNT(*) FROM broker_files WHERE tenant = ?1 AND owner = ?2),
                        (SELECT COALESCE(SUM(size), 0) FROM broker_files
                           WHERE tenant = ?1 AND owner = ?2)
                      + (SELECT COALESCE(SUM(size), 0) FROM broker_shares
                           WHERE tenant = ?1 AND owner = ?2 AND purged_ms IS NULL)",
                params![tenant, owner],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let open_shares = c.query_row(
                "SELECT COUNT(*) FROM broker_shares
                 WHERE tenant = ?1 AND owner = ?2 AND revoked_ms IS NULL AND expires_ms > ?3
                   AND opens < max_opens AND failed_tries < ?4",
                params![tenant, owner, to_i64(now_ms), max_failures],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(Usage {
                files: to_u64(files),
                bytes: to_u64(bytes),
                open_shares: to_u64(open_shares),
            })
        })
        .await
    }

    async fn file_exists(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.prepare("SELECT 1 FROM broker_files WHERE id = ?1")?
                .exists(params![id])
        })
        .await
    }

    async fn compact(&self) -> Result<(), StoreError> {
        self.run(|c| {
            // (busy, log frames, checkpointed frames): busy means a reader held it back;
            // the next batch tries again.
            let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy != 0 {
                tracing::debug!("broker database checkpoint held back by a reader");
            }
            Ok(())
        })
        .await
    }

    async fn set_pending_verifier(
        &self,
        account_id: &str,
        v: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let (id, v) = (account_id.to_owned(), v.to_vec());
        self.run(move |c| {
            c.execute(
                "UPDATE broker_accounts SET pending_verifier = ?2
                 WHERE id = ?1 AND key_verifier IS NULL",
                params![id, v],
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn commit_verifier(&self, account_id: &str, v: &[u8; 32]) -> Result<bool, StoreError> {
        let (id, v) = (account_id.to_owned(), v.to_vec());
        self.run(move |c| {
            c.execute(
                "UPDATE broker_accounts SET key_verifier = ?2, pending_verifier = NULL
                 WHERE id = ?1 AND key_verifier IS NULL AND pending_verifier = ?2",
                params![id, v],
            )
        })
        .await
        .map(|n| n == 1)
    }

    async fn insert_file(&self, f: &FileRow) -> Result<(), StoreError> {
        let f = f.clone();
        self.run(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO broker_files ({FILE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    f.id,
                    f.tenant,
                    f.owner,
                    f.name,
                    to_i64(f.size),
                    to_i64(f.created_ms),
                    f.object_key
                ],
            )
        })
        .await
        .map(drop)
    }

    async fn files(&self, tenant: &str, owner: &str) -> Result<Vec<FileRow>, StoreError> {
        let (tenant, owner) = (tenant.to_owned(), owner.to_owned());
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM broker_files WHERE tenant = ?1 AND owner = ?2
                 ORDER BY created_ms, id"
            ))?;
            let rows = st.query_map(params![tenant, owner], file_row)?;
            rows.collect()
        })
        .await
    }

    async fn file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        let (tenant, owner, id) = (tenant.to_owned(), owner.to_owned(), id.to_owned());
        self.run(move |c| {
            c.query_row(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM broker_files
                     WHERE tenant = ?1 AND owner = ?2 AND id = ?3"
                ),
                params![tenant, owner, id],
                file_row,
            )
            .optional()
        })
        .await
    }

    async fn delete_file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<(FileRow, Vec<String>)>, StoreError> {
        let (tenant, owner, id) = (tenant.to_owned(), owner.to_owned(), id.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let Some(f) = tx
                .query_row(
                    &format!(
                        "DELETE FROM broker_files WHERE tenant = ?1 AND owner = ?2 AND id = ?3
                         RETURNING {FILE_COLUMNS}"
                    ),
                    params![tenant, owner, id],
                    file_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let objects = {
                let mut st = tx.prepare(
                    "DELETE FROM broker_shares WHERE tenant = ?1 AND owner = ?2 AND file_id = ?3
                     AND purged_ms IS NULL RETURNING object_key",
                )?;
                let rows = st.query_map(params![tenant, owner, id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()?
            };
            tx.execute(
                "DELETE FROM broker_shares WHERE tenant = ?1 AND owner = ?2 AND file_id = ?3",
                params![tenant, owner, id],
            )?;
            tx.commit()?;
            Ok(Some((f, objects)))
        })
        .await
    }

    async fn insert_share(&self, s: &ShareRow, mail: &[NewOutbox]) -> Result<(), StoreError> {
        let s = s.clone();
        let mail = mail.to_vec();
        let inserted = self
            .run(move |c| {
                let tx = c.transaction()?;
                let n = tx.execute(
                    &format!(
                        "INSERT INTO broker_shares ({SHARE_COLUMNS})
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
                     WHERE EXISTS (SELECT 1 FROM broker_files
                                   WHERE id = ?4 AND tenant = ?2 AND owner = ?3)"
                    ),
                    params![
                        s.id,
                        s.tenant,
                        s.owner,
                        s.file_id,
                        s.recipient,
                        s.verifier.to_vec(),
                        s.object_key,
                        s.name,
                        to_i64(s.size),
                        to_i64(s.created_ms),
                        to_i64(s.expires_ms),
                        s.max_opens,
                        s.opens,
                        s.failed_tries,
                        s.revoked_ms.map(to_i64)
                    ],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                queue(&tx, &mail, s.created_ms)?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if inserted {
            Ok(())
        } else {
            Err(StoreError::Gone)
        }
    }

    async fn shares(&self, tenant: &str, owner: &str) -> Result<Vec<ShareRow>, StoreError> {
        let (tenant, owner) = (tenant.to_owned(), owner.to_owned());
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SHARE_COLUMNS} FROM broker_shares WHERE tenant = ?1 AND owner = ?2
                 ORDER BY created_ms DESC, id"
            ))?;
            let rows = st.query_map(params![tenant, owner], share_row)?;
            rows.collect()
        })
        .await
    }

    async fn revoke_share(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<Option<ShareRow>, StoreError> {
        let (tenant, owner, id) = (tenant.to_owned(), owner.to_owned(), id.to_owned());
        self.run(move |c| {
            c.query_row(
                &format!(
                    "UPDATE broker_shares SET revoked_ms = COALESCE(revoked_ms, ?4)
                     WHERE tenant = ?1 AND owner = ?2 AND id = ?3 RETURNING {SHARE_COLUMNS}"
                ),
                params![tenant, owner, id, to_i64(now_ms)],
                share_row,
            )
            .optional()
        })
        .await
    }

    async fn share(&self, id: &str) -> Result<Option<ShareRow>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {SHARE_COLUMNS} FROM broker_shares WHERE id = ?1"),
                params![id],
                share_row,
            )
            .optional()
        })
        .await
    }

    async fn take_share_try(&self, id: &str, max_failures: u32) -> Result<Option<u32>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                "UPDATE broker_shares SET failed_tries = failed_tries + 1
                 WHERE id = ?1 AND failed_tries < ?2
                 RETURNING failed_tries",
                params![id, max_failures],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .await
        .map(|n| n.map(to_u32))
    }

    async fn refund_share_try(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE broker_shares SET failed_tries = failed_tries - 1
                 WHERE id = ?1 AND failed_tries > 0",
                params![id],
            )
        })
        .await
        .map(drop)
    }

    async fn claim_share_open(
        &self,
        id: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<ShareClaim, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let granted = c
                .query_row(
                    &format!(
                        "UPDATE broker_shares SET opens = opens + 1
                         WHERE id = ?1 AND revoked_ms IS NULL AND expires_ms > ?2
                           AND opens < max_opens AND failed_tries < ?3 AND purged_ms IS NULL
                         RETURNING {SHARE_COLUMNS}"
                    ),
                    params![id, to_i64(now_ms), max_failures],
                    share_row,
                )
                .optional()?;
            if let Some(s) = granted {
                return Ok(ShareClaim::Granted(Box::new(s)));
            }
            let exists: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM broker_shares WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(if exists.is_some() {
                ShareClaim::Closed
            } else {
                ShareClaim::Missing
            })
        })
        .await
    }

    async fn spent_shares(
        &self,
        now_ms: u64,
        max_failures: u32,
        limit: u32,
    ) -> Result<Vec<ShareRow>, StoreError> {
        self.run(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {SHARE_COLUMNS} FROM broker_shares WHERE purged_ms IS NULL
                 AND (revoked_ms IS NOT NULL OR expires_ms <= ?1 OR opens >= max_opens
                      OR failed_tries >= ?2)
                 LIMIT ?3"
            ))?;
            let rows = st.query_map(params![to_i64(now_ms), max_failures, limit], share_row)?;
            rows.collect()
        })
        .await
    }

    async fn mark_share_purged(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE broker_shares SET purged_ms = ?2 WHERE id = ?1",
                params![id, to_i64(now_ms)],
            )
        })
        .await
        .map(drop)
    }

    async fn outbox_claim(
        &self,
        key_id: &[u8],
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let key_id = key_id.to_vec();
        self.run(move |c| {
            // The lease is the next attempt time: a claimed row is due again only when
            // its worker neither finished nor rescheduled it in time.
            let mut st = c.prepare(
                "UPDATE broker_outbox SET next_attempt_ms = ?2
                 WHERE id IN (SELECT id FROM broker_outbox
                              WHERE sent_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= ?1
                                AND substr(sealed_text, 1, ?5) = ?4
                              ORDER BY next_attempt_ms, id LIMIT ?3)
                 RETURNING id, recipient, subject, sealed_text, attempts",
            )?;
            let rows = st.query_map(
                params![
                    to_i64(now_ms),
                    to_i64(now_ms.saturating_add(lease_ms)),
                    limit,
                    key_id,
                    key_id.len() as i64
                ],
                |r| {
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        recipient: r.get(1)?,
                        subject: r.get(2)?,
                        sealed_text: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                        attempts: to_u32(r.get(4)?),
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn outbox_sent(&self, id: i64, now_ms: u64) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE broker_outbox SET sent_ms = ?2, sealed_text = NULL,
                   attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, to_i64(now_ms)],
            )
        })
        .await
        .map(drop)
    }

    async fn outbox_retry(&self, id: i64, next_ms: u64, error: &str) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE broker_outbox SET next_attempt_ms = ?2, attempts = attempts + 1,
                   last_error = ?3 WHERE id = ?1",
                params![id, to_i64(next_ms), error],
            )
        })
        .await
        .map(drop)
    }

    async fn outbox_give_up(&self, id: i64, now_ms: u64, error: &str) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE broker_outbox SET failed_ms = ?2, sealed_text = NULL,
                   attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
                params![id, to_i64(now_ms), error],
            )
        })
        .await
        .map(drop)
    }

    async fn outbox_heartbeat(&self, key_id: &[u8], now_ms: u64) -> Result<(), StoreError> {
        let key_id = key_id.to_vec();
        self.run(move |c| {
            c.execute(
                "INSERT INTO broker_outbox_keys (key_id, seen_ms) VALUES (?1, ?2)
                 ON CONFLICT (key_id) DO UPDATE SET seen_ms = excluded.seen_ms",
                params![key_id, to_i64(now_ms)],
            )
        })
        .await
        .map(drop)
    }

    async fn outbox_give_up_foreign(
        &self,
        key_id: &[u8],
        silent_for_ms: u64,
        now_ms: u64,
        error: &str,
    ) -> Result<u64, StoreError> {
        let key_id = key_id.to_vec();
        let error = error.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE broker_outbox SET failed_ms = ?3, sealed_text = NULL, last_error = ?4
                 WHERE sent_ms IS NULL AND failed_ms IS NULL AND created_ms < ?3 - ?2
                   AND (sealed_text IS NULL OR substr(sealed_text, 1, ?5) <> ?1)
                   AND NOT EXISTS (
                     SELECT 1 FROM broker_outbox_keys k
                     WHERE k.key_id = substr(broker_outbox.sealed_text, 1, ?5)
                       AND k.seen_ms > ?3 - ?2)",
                params![
                    key_id,
                    to_i64(silent_for_ms),
                    to_i64(now_ms),
                    error,
                    key_id.len() as i64
                ],
            )?;
            c.execute(
                "DELETE FROM broker_outbox_keys WHERE seen_ms < ?1 - 86400000",
                params![to_i64(now_ms)],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_stale(
        &self,
        finished_before_ms: u64,
        code_expired_before_ms: u64,
    ) -> Result<Stale, StoreError> {
        self.run(move |c| {
            let notifications = c.execute(
                "DELETE FROM broker_outbox
                 WHERE COALESCE(sent_ms, failed_ms) < ?1",
                params![to_i64(finished_before_ms)],
            )?;
            let accounts = c.execute(
                "DELETE FROM broker_accounts WHERE verified = 0 AND code_expires_ms < ?1",
                params![to_i64(code_expired_before_ms)],
            )?;
            Ok(Stale {
                notifications: notifications as u64,
                accounts: accounts as u64,
            })
        })
        .await
    }

    async fn outbox_pending_of(&self, key_id: &[u8]) -> Result<u64, StoreError> {
        let key_id = key_id.to_vec();
        self.run(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM broker_outbox WHERE sent_ms IS NULL AND failed_ms IS NULL
                   AND substr(sealed_text, 1, ?2) = ?1",
                params![key_id, key_id.len() as i64],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(to_u64)
    }

    async fn outbox_pending(&self) -> Result<u64, StoreError> {
        self.run(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM broker_outbox WHERE sent_ms IS NULL AND failed_ms IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(to_u64)
    }

    async fn audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let e = e.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO broker_audit (at_ms, tenant, actor, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    to_i64(e.at_ms),
                    e.tenant,
                    e.actor,
                    e.action,
                    e.target,
                    e.detail
                ],
            )
        })
        .await
        .map(drop)
    }

    async fn audit_events(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let tenant = tenant.to_owned();
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT at_ms, tenant, actor, action, target, detail FROM broker_audit
                 WHERE tenant = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![tenant, limit], |r| {
                Ok(AuditEvent {
                    at_ms: to_u64(r.get(0)?),
                    tenant: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}
