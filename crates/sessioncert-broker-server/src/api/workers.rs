//! Background work: delivering the outbox, deleting spent shares' copies, forgetting
//! logins whose session ended.

use super::Broker;
use crate::notify::{Notification, NotifyError, Recipient};
use crate::store::OutboxRow;
use sessioncert_server::now_ms;
use std::time::Duration;

/// How long a claimed notification stays with its worker before another may take it.
const LEASE: Duration = Duration::from_secs(120);
/// Notifications claimed at once.
const BATCH: u32 = 16;
/// Attempts before a notification is given up.
pub(crate) const MAX_ATTEMPTS: u32 = 10;
/// How often an instance records that it is alive (and so that the mail sealed under
/// its key is still its to deliver).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// How long an instance may be silent before the mail sealed under its key is given up
/// by the others: its key died with its process.
pub(crate) const FOREIGN_SILENT_FOR: Duration = Duration::from_secs(300);
/// How often logins are checked against their sessions.
const LOGIN_SWEEP: Duration = Duration::from_secs(1);
/// How often spent shares are looked for.
const PURGE_EVERY: Duration = Duration::from_secs(15);
/// How often objects no row names are looked for (the first time a minute after start).
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How old such an object must be to go: an upload's object is complete a moment
/// before its row is written, on this instance or another.
pub(crate) const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);

/// The wait before attempt `attempts + 1`: 2 s doubling, at most 15 minutes.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(10) + 1).min(900))
}

pub(super) fn spawn(b: Broker) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let heartbeat = tokio::spawn(heartbeat_loop(b.clone()));
        let outbox = tokio::spawn(outbox_loop(b.clone()));
        let purge = tokio::spawn(purge_loop(b.clone()));
        let orphans = tokio::spawn(orphan_loop(b.clone()));
        let logins = tokio::spawn(login_loop(b));
        // Aborting this task aborts its children with it.
        struct AbortAll(Vec<tokio::task::JoinHandle<()>>);
        impl Drop for AbortAll {
            fn drop(&mut self) {
                for h in &self.0 {
                    h.abort();
                }
            }
        }
        let all = AbortAll(vec![heartbeat, outbox, purge, orphans, logins]);
        std::future::pending::<()>().await;
        drop(all);
    })
}

/// Beats this instance's heartbeat and gives up stopped instances' mail. A task of its
/// own: a delivery stuck on a slow mail server must not make the instance look dead.
async fn heartbeat_loop(b: Broker) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tick.tick().await;
        match b
            .inner
            .store
            .outbox_heartbeat(b.inner.outbox_key.id(), now_ms())
            .await
        {
            Ok(()) => {
                give_up_foreign(&b, FOREIGN_SILENT_FOR).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record this instance's outbox heartbeat")
            }
        }
    }
}

async fn outbox_loop(b: Broker) {
    loop {
        let delivered = match b
            .inner
            .store
            .outbox_claim(
                b.inner.outbox_key.id(),
                now_ms(),
                LEASE.as_millis() as u64,
                BATCH,
            )
            .await
        {
            Ok(rows) => {
                let n = rows.len();
                for row in rows {
                    deliver(&b, row).await;
                }
                if n > 0 {
                    // The texts just wiped must not live on in the database's log.
                    if let Err(e) = b.inner.store.compact().await {
                        tracing::warn!(error = %e, "could not compact the broker database");
                    }
                }
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the outbox");
                0
            }
        };
        // After every pass, busy or not: what an operator waits to reach 0 before
        // stopping this instance (its queued mail dies with it).
        if let Ok(n) = b.inner.store.outbox_pending().await {
            metrics::gauge!("sessioncert_broker_outbox_pending").set(n as f64);
        }
        if let Ok(n) = b
            .inner
            .store
            .outbox_pending_of(b.inner.outbox_key.id())
            .await
        {
            metrics::gauge!("sessioncert_broker_outbox_pending_here").set(n as f64);
        }
        if delivered == 0 {
            // New mail wakes the worker; retries come due on their own.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), b.inner.outbox_wake.notified()).await;
        }
    }
}

/// Gives up the pending notifications sealed under the key of an instance silent for
/// `silent_for` (one that stopped before delivering them, this one before a restart
/// included). Returns how many.
pub(crate) async fn give_up_foreign(b: &Broker, silent_for: Duration) -> u64 {
    match b
        .inner
        .store
        .outbox_give_up_foreign(
            b.inner.outbox_key.id(),
            silent_for.as_millis() as u64,
            now_ms(),
            "sealed by an instance that stopped before delivering it; its key is gone",
        )
        .await
    {
        Ok(0) => 0,
        Ok(n) => {
            metrics::counter!("sessioncert_broker_notifications_total", "outcome" => "failed")
                .increment(n);
            tracing::warn!(
                given_up = n,
                "notifications queued by a stopped instance given up: their sealing key lived only in its memory (re-share, or register again, to send new codes)"
            );
            n
        }
        Err(e) => {
            tracing::error!(error = %e, "could not look for notifications of stopped instances");
            0
        }
    }
}

async fn deliver(b: &Broker, row: OutboxRow) {
    let now = now_ms();
    let give_up = |why: String| async move {
        tracing::error!(notification = row.id, error = %why, "notification given up");
        if let Err(e) = b.inner.store.outbox_give_up(row.id, now_ms(), &why).await {
            tracing::error!(error = %e, "could not record a notification given up");
        }
    };
    let Some(text) = b.inner.outbox_key.open(&row.recipient, &row.sealed_text) else {
        give_up("its sealed text does not open under this instance's outbox key".into()).await;
        return;
    };
    let to = match Recipient::parse(&row.recipient) {
        Ok(to) => to,
        Err(e) => {
            give_up(e.to_string()).await;
            return;
        }
    };
    let n = Notification {
        to,
        subject: row.subject.clone(),
        text: text.to_string(),
    };
    match b.inner.notifier.deliver(&n).await {
        Ok(()) => {
            metrics::counter!("sessioncert_broker_notifications_total", "outcome" => "sent")
                .increment(1);
            if let Err(e) = b.inner.store.outbox_sent(row.id, now).await {
                // It went out; a retry would send it twice, which the lease limits.
                tracing::error!(error = %e, "could not mark a notification sent");
            }
        }
        Err(NotifyError::Transient(why)) if row.attempts + 1 < MAX_ATTEMPTS => {
            metrics::counter!("sessioncert_broker_notifications_total", "outcome" => "retry")
                .increment(1);
            let wait = backoff(row.attempts);
            tracing::warn!(notification = row.id, error = %why, retry_in_s = wait.as_secs(), "notification not delivered; will retry");
            let next = now.saturating_add(wait.as_millis() as u64);
            if let Err(e) = b.inner.store.outbox_retry(row.id, next, &why).await {
                tracing::error!(error = %e, "could not reschedule a notification");
            }
        }
        Err(e) => {
            metrics::counter!("sessioncert_broker_notifications_total", "outcome" => "failed")
                .increment(1);
            give_up(e.to_string()).await;
        }
    }
}

async fn purge_loop(b: Broker) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        purge_spent_shares(&b).await;
    }
}

/// Deletes the copies of shares that no longer open; returns how many.
pub(crate) async fn purge_spent_shares(b: &Broker) -> usize {
    let now = now_ms();
    let spent = match b
        .inner
        .store
        .spent_shares(now, b.inner.settings.share_max_failures, 256)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not look for spent shares");
            return 0;
        }
    };
    let mut n = 0;
    for s in spent {
        match b.inner.objects.delete(&s.object_key).await {
            Ok(()) => {
                if b.inner.store.mark_share_purged(&s.id, now).await.is_ok() {
                    n += 1;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, share = %s.id, "could not delete a spent share's copy; will retry")
            }
        }
    }
    n
}

async fn orphan_loop(b: Broker) {
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut tick = tokio::time::interval(ORPHAN_SWEEP_EVERY);
    loop {
        tick.tick().await;
        let n = sweep_orphans(&b, ORPHAN_MIN_AGE).await;
        if n > 0 {
            tracing::info!(deleted = n, "objects no file or share names deleted");
        }
        delete_stale(&b, KEEP_STALE).await;
    }
}

/// How long finished notifications' rows, and unverified accounts after their code
/// expired, are kept.
const KEEP_STALE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes finished notifications and unverified accounts whose code expired, `keep`
/// after the fact.
async fn delete_stale(b: &Broker, keep: Duration) -> crate::store::Stale {
    let before = now_ms().saturating_sub(keep.as_millis() as u64);
    match b.inner.store.delete_stale(before, before).await {
        Ok(s) => {
            if s != crate::store::Stale::default() {
                tracing::info!(
                    notifications = s.notifications,
                    unverified_accounts = s.accounts,
                    "stale records deleted"
                );
            }
            s
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not delete stale records");
            crate::store::Stale::default()
        }
    }
}

/// Deletes objects at least `min_age` old that no file or share row names: what a crash
/// between an object's completion and its row leaves behind. Returns how many.
pub(crate) async fn sweep_orphans(b: &Broker, min_age: Duration) -> usize {
    let mut n = 0;
    for prefix in ["files", "shares"] {
        let keys = match b.inner.objects.list_older_than(prefix, min_age).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "could not list objects to sweep");
                continue;
            }
        };
        for key in keys {
            // files/TENANT/ID and shares/ID: the id is the last segment.
            let id = key.rsplit('/').next().unwrap_or_default();
            let named = if prefix == "files" {
                b.inner
                    .store
                    .file_exists(id)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                b.inner
                    .store
                    .share(id)
                    .await
                    .map(|s| s.is_some())
                    .map_err(|e| e.to_string())
            };
            match named {
                Ok(true) => {}
                Ok(false) => match b.inner.objects.delete(&key).await {
                    Ok(()) => n += 1,
                    Err(e) => tracing::warn!(error = %e, "could not delete an orphan object"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "could not check an object against the database");
                    return n;
                }
            }
        }
    }
    n
}

async fn login_loop(b: Broker) {
    let mut tick = tokio::time::interval(LOGIN_SWEEP);
    loop {
        tick.tick().await;
        let manager = b.inner.manager.clone();
        let before = b.inner.logins.len();
        // A login lives exactly as long as its session: the data key goes with it.
        b.inner.logins.retain(|session, _| manager.is_live(session));
        let forgotten = before.saturating_sub(b.inner.logins.len());
        if forgotten > 0 {
            tracing::debug!(forgotten, "logins of ended sessions forgotten");
        }
        metrics::gauge!("sessioncert_broker_logins").set(b.inner.logins.len() as f64);
    }
}
