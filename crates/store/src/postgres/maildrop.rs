//! POP3 maildrop locks across nodes: a lease in the database, renewed while a session holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{PgStore, Prepared, pg};
use crate::*;

/// The database's clock in seconds: leases are timed by one clock, whatever the nodes' say.
const DB_NOW: &str = "floor(extract(epoch from clock_timestamp()))::bigint";

impl PgStore {
    /// A lease in the database, renewed while held, as well as this node's own lock.
    pub(super) async fn lease_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>> {
        let set = self.maildrops.clone();
        if !set.lock().unwrap().insert(account) {
            return Ok(None);
        }
        let local = {
            let set = set.clone();
            move || {
                set.lock().unwrap().remove(&account);
            }
        };
        let holder = format!("{}/{:08x}", self.node, rand::random::<u32>());
        let lease = self.maildrop_lease;
        let took = async {
            let c = self.client().await?;
            c.maybe_row(
                &format!(
                    "INSERT INTO maildrop_locks (account, holder, until) VALUES ($1, $2, {DB_NOW} + $3) \
                     ON CONFLICT (account) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until \
                     WHERE maildrop_locks.until <= {DB_NOW} RETURNING 1"
                ),
                &[&(account as i64), &holder, &lease],
            )
            .await
            .map_err(pg)
            .map(|r| r.is_some())
        }
        .await;
        match took {
            Ok(true) => {}
            Ok(false) => {
                local();
                return Ok(None);
            }
            Err(e) => {
                local();
                return Err(e);
            }
        }
        // Renewed every third of the lease while held; released (and the renewal stopped) when
        // the lock is dropped. Held until a lease counted from before the last renewal that got
        // through, less a margin (the database rounds its clock down to the second), runs out,
        // or until another holder has it.
        let lease_ms = lease as u64 * 1000;
        let margin_ms = (lease_ms / 6).max(1500);
        let base = std::time::Instant::now();
        let valid_until = Arc::new(AtomicU64::new(lease_ms.saturating_sub(margin_ms)));
        let pool = self.pool.clone();
        let renew = {
            let (pool, holder, valid_until) = (pool.clone(), holder.clone(), valid_until.clone());
            tokio::spawn(async move {
                let every = std::time::Duration::from_millis(lease_ms / 3);
                loop {
                    tokio::time::sleep(every).await;
                    let started = base.elapsed().as_millis() as u64;
                    let r = tokio::time::timeout(every, async {
                        let c = pool.get().await.map_err(pg)?;
                        c.run(
                            &format!(
                                "UPDATE maildrop_locks SET until = {DB_NOW} + $3 \
                                 WHERE account = $1 AND holder = $2"
                            ),
                            &[&(account as i64), &holder, &lease],
                        )
                        .await
                        .map_err(pg)
                    })
                    .await;
                    match r {
                        Ok(Ok(1)) => valid_until.store(
                            started + lease_ms.saturating_sub(margin_ms),
                            Ordering::SeqCst,
                        ),
                        Ok(Ok(_)) => {
                            tracing::warn!(account, "POP3 maildrop lock taken over");
                            valid_until.store(0, Ordering::SeqCst);
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(account, error = %e, "POP3 maildrop lock not renewed")
                        }
                        Err(_) => tracing::warn!(account, "POP3 maildrop lock renewal timed out"),
                    }
                }
            })
        };
        let held = move || (base.elapsed().as_millis() as u64) < valid_until.load(Ordering::SeqCst);
        Ok(Some(MaildropLock::with_check(
            move || {
                renew.abort();
                local();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Ok(c) = pool.get().await {
                            let _ = c
                                .run(
                                    "DELETE FROM maildrop_locks WHERE account = $1 AND holder = $2",
                                    &[&(account as i64), &holder],
                                )
                                .await;
                        }
                    });
                }
            },
            held,
        )))
    }
}
