//! The broker's metadata: accounts, files, shares, the outbox of notifications and the
//! audit log, behind [`BrokerStore`], on SQLite ([`SqliteBrokerStore`], the default) or
//! PostgreSQL ([`PostgresBrokerStore`], shared by instances).
//!
//! Nothing here is key material the broker could use alone: passwords are Argon2id
//! strings, verification codes HMACs under a key the database does not hold, share codes
//! verifiers, key shares and data keys are never stored, and notifications (which carry
//! codes until they are sent) are sealed by the caller and wiped once delivered.
//!
//! Every step that must not race is one statement or one transaction: a verification
//! try is taken before the code is compared, a share open is claimed by the update that
//! counts it, the first login's verifier is set only where none is, and a registration
//! or share is written together with the notifications it sends.

mod postgres;
mod sqlite;

pub use postgres::PostgresBrokerStore;
pub use sqlite::{lock_for_serving, SqliteBrokerStore};

use async_trait::async_trait;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row exists already (an account with this address in this tenant).
    #[error("already exists")]
    Exists,
    /// A row this one depends on is gone (a share's file was deleted meanwhile).
    #[error("no longer exists")]
    Gone,
    /// The database failed (the message never carries a password).
    #[error("broker database: {0}")]
    Database(String),
    /// The store address is not usable.
    #[error("broker store address: {0}")]
    BadAddress(String),
    /// Another running broker serves this SQLite database.
    #[error("another broker is serving {0} (it holds the lock on {0}.serve-lock): stop it first, or use PostgreSQL for several instances")]
    InUse(String),
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user id (random; files and wraps are bound to it, not to the address).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The e-mail address (lower case).
    pub email: String,
    /// The password as an Argon2id PHC string.
    pub password_phc: String,
    /// Whether the verification code was entered.
    pub verified: bool,
    /// The key verifier, committed once the client showed it kept its encrypted data
    /// key (`None` before).
    pub key_verifier: Option<[u8; 32]>,
    /// The verifier of a first login whose encrypted data key the client has not yet
    /// shown back (its answer may have been lost; another first login replaces it).
    pub pending_verifier: Option<[u8; 32]>,
    /// When the account was made (Unix ms).
    pub created_ms: u64,
    /// Until verified: the digest of the registration key the registering client holds
    /// (`/verify` must show it, so a code verifies only the registration it was mailed
    /// for).
    pub registration_digest: Option<[u8; 32]>,
}

/// A registration: the account and its verification code's digest.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The account (`verified` false, no verifier).
    pub account: Account,
    /// HMAC of the verification code (see `password::VerificationCode::digest`).
    pub code_digest: [u8; 32],
    /// When the code expires (Unix ms).
    pub code_expires_ms: u64,
    /// Tries the code allows.
    pub code_tries: u32,
}

/// A stored file (its body is an object, sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// The file id.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The owner's user id.
    pub owner: String,
    /// The name it was uploaded with.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// When it was stored (Unix ms).
    pub created_ms: u64,
    /// The object holding it.
    pub object_key: String,
}

/// A share: a copy of a file sealed under a key derived from a one-time code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRow {
    /// The share id.
    pub id: String,
    /// The sharer's tenant.
    pub tenant: String,
    /// The sharer's user id.
    pub owner: String,
    /// The file shared.
    pub file_id: String,
    /// Who it was shared with (an e-mail address or a phone number).
    pub recipient: String,
    /// The one-time code's verifier.
    pub verifier: [u8; 32],
    /// The object holding the shared copy.
    pub object_key: String,
    /// The file's name.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it stops opening (Unix ms).
    pub expires_ms: u64,
    /// Opens allowed.
    pub max_opens: u32,
    /// Opens so far.
    pub opens: u32,
    /// Wrong codes tried so far.
    pub failed_tries: u32,
    /// When it was revoked (Unix ms), if it was.
    pub revoked_ms: Option<u64>,
}

impl ShareRow {
    /// Whether it still opens at `now_ms` (not revoked, expired, used up or locked by
    /// wrong codes).
    pub fn opens_at(&self, now_ms: u64, max_failures: u32) -> bool {
        self.revoked_ms.is_none()
            && now_ms < self.expires_ms
            && self.opens < self.max_opens
            && self.failed_tries < max_failures
    }
}

/// What one user keeps (for the quotas).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files.
    pub files: u64,
    /// Plaintext bytes of the files and of the shares' copies not yet deleted.
    pub bytes: u64,
    /// Shares that still open.
    pub open_shares: u64,
}

/// What [`BrokerStore::delete_stale`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stale {
    /// Finished notifications.
    pub notifications: u64,
    /// Unverified accounts.
    pub accounts: u64,
}

/// A notification to queue.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    /// The recipient (an e-mail address or a phone number).
    pub recipient: String,
    /// The subject.
    pub subject: String,
    /// The text, sealed by the caller (it carries codes until it is sent).
    pub sealed_text: Vec<u8>,
}

/// A queued notification, claimed for delivery.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its id.
    pub id: i64,
    /// The recipient.
    pub recipient: String,
    /// The subject.
    pub subject: String,
    /// The sealed text.
    pub sealed_text: Vec<u8>,
    /// Delivery attempts before this one.
    pub attempts: u32,
}

/// One audit event: who did what to what, when. Never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The tenant.
    pub tenant: String,
    /// Who: a user id, `anonymous`, or `share:ID` for a recipient.
    pub actor: String,
    /// What, e.g. `login`, `file.upload`, `share.open.refused`.
    pub action: String,
    /// On what, e.g. a file or share id.
    pub target: String,
    /// More, e.g. a size or a reason.
    pub detail: String,
}

/// How a claim on a share open ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareClaim {
    /// The open is counted; serve it.
    Granted(Box<ShareRow>),
    /// No such share.
    Missing,
    /// It does not open any more (revoked, expired, used up or locked).
    Closed,
}

/// The broker's metadata store.
#[async_trait]
pub trait BrokerStore: Send + Sync {
    /// Creates the tables if needed.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Registers an account and queues its mail in one transaction. An address
    /// registered before is refused with [`StoreError::Exists`] unless that account was
    /// never verified: then the new registration replaces it (new id, password, code
    /// and registration key), so the earlier registration's code verifies nothing.
    async fn create_account(&self, a: &NewAccount, mail: &[NewOutbox]) -> Result<(), StoreError>;

    /// Queues notifications.
    async fn enqueue(&self, mail: &[NewOutbox], now_ms: u64) -> Result<(), StoreError>;

    /// The account of `email` in `tenant`.
    async fn account(&self, tenant: &str, email: &str) -> Result<Option<Account>, StoreError>;

    /// Takes one verification try of an unverified account, before the code is
    /// compared: returns the code's digest and expiry, or `None` when there is no code or
    /// no try left.
    async fn take_verification_try(
        &self,
        account_id: &str,
    ) -> Result<Option<([u8; 32], u64)>, StoreError>;

    /// Marks the account verified and forgets its code and registration key; `false`
    /// when no unverified account has this id (a new registration replaced it).
    async fn mark_verified(&self, account_id: &str) -> Result<bool, StoreError>;

    /// Records a first login's verifier as pending; `false` if a verifier is committed
    /// already.
    async fn set_pending_verifier(
        &self,
        account_id: &str,
        v: &[u8; 32],
    ) -> Result<bool, StoreError>;

    /// Commits the pending verifier `v` (the client showed the encrypted data key of that
    /// first login); `false` if `v` is not the pending one or one is committed already.
    async fn commit_verifier(&self, account_id: &str, v: &[u8; 32]) -> Result<bool, StoreError>;

    /// What one user keeps: files, the plaintext bytes of their files and of their
    /// shares' copies not yet deleted, and shares that still open at `now_ms`.
    async fn usage(
        &self,
        tenant: &str,
        owner: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<Usage, StoreError>;

    /// Records a stored file (after its object is complete).
    async fn insert_file(&self, f: &FileRow) -> Result<(), StoreError>;

    /// The files of one user, oldest first.
    async fn files(&self, tenant: &str, owner: &str) -> Result<Vec<FileRow>, StoreError>;

    /// One file of one user (none for another tenant's or user's id).
    async fn file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<FileRow>, StoreError>;

    /// Whether a file row with this id exists (any tenant or owner).
    async fn file_exists(&self, id: &str) -> Result<bool, StoreError>;

    /// Deletes a file and its shares; returns the file and the shares' objects, to delete.
    async fn delete_file(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
    ) -> Result<Option<(FileRow, Vec<String>)>, StoreError>;

    /// Records a share (after its object is complete) and queues its mail in one
    /// transaction, only while its file still exists ([`StoreError::Gone`] if it was
    /// deleted meanwhile: a share of a deleted file must not stay open).
    async fn insert_share(&self, s: &ShareRow, mail: &[NewOutbox]) -> Result<(), StoreError>;

    /// The shares one user made, newest first.
    async fn shares(&self, tenant: &str, owner: &str) -> Result<Vec<ShareRow>, StoreError>;

    /// Revokes a share of this user; returns it (`None` when it is not theirs).
    async fn revoke_share(
        &self,
        tenant: &str,
        owner: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<Option<ShareRow>, StoreError>;

    /// The share, as it is now (for checking a code before claiming an open).
    async fn share(&self, id: &str) -> Result<Option<ShareRow>, StoreError>;

    /// Takes one code try of a share before its code is compared (counted as a wrong
    /// code until [`BrokerStore::refund_share_try`]): the tries so far, or `None` when
    /// the share has none left (or is gone). Concurrent guesses cannot share a try.
    async fn take_share_try(&self, id: &str, max_failures: u32) -> Result<Option<u32>, StoreError>;

    /// Gives back a try taken for a code that was right.
    async fn refund_share_try(&self, id: &str) -> Result<(), StoreError>;

    /// Claims one open of a share in the statement that counts it.
    async fn claim_share_open(
        &self,
        id: &str,
        now_ms: u64,
        max_failures: u32,
    ) -> Result<ShareClaim, StoreError>;

    /// Shares that no longer open and whose object is not yet deleted.
    async fn spent_shares(
        &self,
        now_ms: u64,
        max_failures: u32,
        limit: u32,
    ) -> Result<Vec<ShareRow>, StoreError>;

    /// Marks a share's object deleted.
    async fn mark_share_purged(&self, id: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Claims up to `limit` due notifications whose sealed text starts with `key_id`
    /// (those this instance sealed; no other can open them) for `lease_ms`: another
    /// worker does not take them meanwhile; one that died releases them when the lease
    /// ends.
    async fn outbox_claim(
        &self,
        key_id: &[u8],
        now_ms: u64,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Records that the instance sealing under `key_id` is alive (PostgreSQL: at the
    /// database's clock; SQLite, one instance: at `now_ms`).
    async fn outbox_heartbeat(&self, key_id: &[u8], now_ms: u64) -> Result<(), StoreError>;

    /// Gives up, with `error`, the pending notifications whose sealed text does not
    /// start with `key_id`, made at least `silent_for_ms` ago, whose key's instance has
    /// not beaten for `silent_for_ms` (or never did): texts sealed by an instance that
    /// is gone, which nothing can open any more. Returns how many.
    async fn outbox_give_up_foreign(
        &self,
        key_id: &[u8],
        silent_for_ms: u64,
        now_ms: u64,
        error: &str,
    ) -> Result<u64, StoreError>;

    /// Marks a notification sent and wipes its text.
    async fn outbox_sent(&self, id: i64, now_ms: u64) -> Result<(), StoreError>;

    /// Schedules another attempt.
    async fn outbox_retry(&self, id: i64, next_ms: u64, error: &str) -> Result<(), StoreError>;

    /// Gives a notification up and wipes its text.
    async fn outbox_give_up(&self, id: i64, now_ms: u64, error: &str) -> Result<(), StoreError>;

    /// Notifications not yet sent nor given up.
    async fn outbox_pending(&self) -> Result<u64, StoreError>;

    /// Notifications not yet sent nor given up that were sealed under `key_id` (one
    /// instance's: what is lost if it stops now).
    async fn outbox_pending_of(&self, key_id: &[u8]) -> Result<u64, StoreError>;

    /// Deletes what is kept for no one: notifications sent or given up before
    /// `finished_before_ms` (their texts are wiped already; recipient and subject
    /// remain), and unverified accounts whose code expired before
    /// `code_expired_before_ms`.
    async fn delete_stale(
        &self,
        finished_before_ms: u64,
        code_expired_before_ms: u64,
    ) -> Result<Stale, StoreError>;

    /// Makes wiped notification texts unrecoverable from the store's own files: on
    /// SQLite the write-ahead log keeps the pages as they were until a checkpoint, so
    /// this checkpoints and truncates it. (PostgreSQL's WAL and backups are the
    /// database operator's to manage.)
    async fn compact(&self) -> Result<(), StoreError>;

    /// Appends an audit event.
    async fn audit(&self, e: &AuditEvent) -> Result<(), StoreError>;

    /// The newest audit events of a tenant, newest first.
    async fn audit_events(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Opens the store an address names: `sqlite:PATH` or `postgres://…`.
pub async fn open(address: &str) -> Result<std::sync::Arc<dyn BrokerStore>, StoreError> {
    let lower = address.to_ascii_lowercase();
    let store: std::sync::Arc<dyn BrokerStore> =
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            std::sync::Arc::new(PostgresBrokerStore::connect(address).await?)
        } else if let Some(path) = address.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::BadAddress("sqlite: needs a path".into()));
            }
            std::sync::Arc::new(SqliteBrokerStore::open(path.as_ref()).await?)
        } else {
            return Err(StoreError::BadAddress(
                "expected sqlite:PATH or postgres://USER@HOST/DB".into(),
            ));
        };
    store.migrate().await?;
    Ok(store)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX })
}

pub(crate) fn digest(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Database("a stored digest is not 32 bytes".into()))
}
