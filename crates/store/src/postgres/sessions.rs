//! Rate-limit counters and web sessions in PostgreSQL, shared by every node.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, Prepared, pg};
use crate::rules::{self, counter_key};
use crate::*;

/// Expired rate-limit counters are swept after this many counter writes of a node.
const COUNTER_SWEEP_EVERY: u64 = 1000;

const WEB_SESSION_COLS: &str = "id, address, admin, csrf, password, created, used, expires";

fn web_session_of(r: &Row) -> WebSession {
    WebSession {
        id: r.get(0),
        address: r.get(1),
        admin: r.get(2),
        csrf: r.get(3),
        password: r.get::<_, i64>(4) as u64,
        created: r.get(5),
        used: r.get(6),
        expires: r.get(7),
    }
}

fn counter_of(r: &Row) -> Counter {
    Counter {
        since: r.get(0),
        count: r.get::<_, i32>(1).max(0) as u32,
        until: r.get(2),
        strikes: r.get::<_, i32>(3).max(0) as u32,
        at: r.get(4),
        expires: r.get(5),
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn counter_update(&self, key: &str, step: CounterStep<'_>) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Inserted when missing and locked in one statement: two nodes never both start one.
        let row = tx
            .row(
                "INSERT INTO counters (key, expires) VALUES ($1, 0) \
                 ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key \
                 RETURNING since_ms, hits, blocked_until, strikes, at_ms, expires",
                &[&key],
            )
            .await
            .map_err(pg)?;
        // The time of the step, once the row is ours: what it returns already expired is gone.
        let now = now_ms();
        let next = rules::counter_next(Some(counter_of(&row)), step, now);
        match &next {
            Some(n) => {
                tx.run(
                    "UPDATE counters SET since_ms = $2, hits = $3, blocked_until = $4, \
                     strikes = $5, at_ms = $6, expires = $7 WHERE key = $1",
                    &[
                        &key,
                        &n.since,
                        &(n.count.min(i32::MAX as u32) as i32),
                        &n.until,
                        &(n.strikes.min(i32::MAX as u32) as i32),
                        &n.at,
                        &n.expires,
                    ],
                )
                .await
                .map_err(pg)?;
            }
            None => {
                tx.run("DELETE FROM counters WHERE key = $1", &[&key])
                    .await
                    .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)?;
        if self
            .counter_writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(COUNTER_SWEEP_EVERY)
            && let Err(e) = c
                .run("DELETE FROM counters WHERE expires <= $1", &[&now])
                .await
        {
            // The update itself is committed: only the sweep waits for another time.
            tracing::warn!(error = %pg(e), "expired rate-limit counters not swept");
        }
        Ok(next)
    }

    async fn counter_get(&self, key: &str) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT since_ms, hits, blocked_until, strikes, at_ms, expires FROM counters \
                 WHERE key = $1 AND expires > $2",
            &[&key, &now_ms()],
        )
        .await
        .map_err(pg)?
        .map(|r| counter_of(&r)))
    }

    async fn web_session_put(&self, session: WebSession, limit: Option<usize>) -> Result<()> {
        let c = self.client().await?;
        if limit.is_none() {
            c.run(
                "UPDATE web_sessions SET address = $2, admin = $3, csrf = $4, password = $5, \
                 used = $6, expires = $7 WHERE id = $1",
                &[
                    &session.id,
                    &session.address,
                    &session.admin,
                    &session.csrf,
                    &(session.password as i64),
                    &session.used,
                    &session.expires,
                ],
            )
            .await
            .map_err(pg)?;
            return Ok(());
        }
        c.run(
            "INSERT INTO web_sessions (id, address, admin, csrf, password, created, used, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             address = EXCLUDED.address, admin = EXCLUDED.admin, csrf = EXCLUDED.csrf, \
             password = EXCLUDED.password, used = EXCLUDED.used, expires = EXCLUDED.expires",
            &[
                &session.id,
                &session.address,
                &session.admin,
                &session.csrf,
                &(session.password as i64),
                &session.created,
                &session.used,
                &session.expires,
            ],
        )
        .await
        .map_err(pg)?;
        if let Some(limit) = limit {
            // At logins only: the expired go, then the least recently used beyond the limit.
            c.run("DELETE FROM web_sessions WHERE expires <= $1", &[&now_ms()])
                .await
                .map_err(pg)?;
            c.run(
                "DELETE FROM web_sessions WHERE id IN \
                 (SELECT id FROM web_sessions ORDER BY used DESC, id OFFSET $1)",
                &[&(rules::session_limit(limit) as i64)],
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }

    async fn web_session_get(&self, id: &str) -> Result<Option<WebSession>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE id = $1 AND expires > $2"),
            &[&id, &now_ms()],
        )
        .await
        .map_err(pg)?
        .map(|r| web_session_of(&r)))
    }

    async fn web_session_delete(&self, id: &str) -> Result<()> {
        let c = self.client().await?;
        c.run("DELETE FROM web_sessions WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn web_session_list(&self, address: &str) -> Result<Vec<WebSession>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!(
                "SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE address = $1 AND expires > $2"
            ),
            &[&address, &now_ms()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(web_session_of)
        .collect())
    }
}
