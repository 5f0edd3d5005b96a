//! Message trace in PostgreSQL: one row an event, its search keys in an indexed array.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{PgStore, Prepared, from_json, json, pg};
use crate::rules;
use crate::*;

pub(super) async fn trace_append_tx<C: GenericClient + Sync>(
    c: &C,
    events: &[TraceEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.trace_id.as_str()).collect();
    let times: Vec<i64> = events.iter().map(|e| e.time).collect();
    let bodies: Vec<String> = events.iter().map(json).collect();
    // Arrays of arrays must be rectangular: the keys go as one text each, split again in SQL.
    let keys: Vec<String> = events.iter().map(|e| e.keys.join("\n")).collect();
    c.run(
        "INSERT INTO trace (trace_id, time, event, keys) \
         SELECT i, t, e, CASE WHEN k = '' THEN '{}'::text[] ELSE string_to_array(k, E'\\n') END \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS x(i, t, e, k)",
        &[&ids, &times, &bodies, &keys],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl TraceStore for PgStore {
    async fn trace_append(&self, events: Vec<TraceEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(tx!(|tx, _fx| trace_append_tx(tx, &events).await))
            .await
    }

    async fn trace_get(&self, trace_id: &str) -> Result<Vec<TraceEvent>> {
        let c = self.client().await?;
        let mut v: Vec<TraceEvent> = c
            .rows(
                "SELECT event FROM trace WHERE trace_id = $1 ORDER BY seq",
                &[&trace_id],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect::<Result<_>>()?;
        v.sort_by_key(|e| e.time);
        Ok(v)
    }

    async fn trace_find(&self, key: &str, since: i64, limit: usize) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT trace_id FROM trace WHERE keys @> ARRAY[$1::text] AND time >= $2 \
             GROUP BY trace_id ORDER BY max(time) DESC, trace_id DESC LIMIT $3",
            &[&key, &since, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn trace_recent(&self, since: i64, limit: usize) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT trace_id FROM trace WHERE time >= $1 \
             GROUP BY trace_id ORDER BY max(time) DESC, trace_id DESC LIMIT $2",
            &[&since, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn trace_prune(&self, before: i64) -> Result<u64> {
        self.write(tx!(|tx, _fx| {
            let n = tx
                .run("DELETE FROM trace WHERE time < $1", &[&before])
                .await
                .map_err(pg)?;
            tx.run(
                "DELETE FROM seen WHERE expires <= $1",
                &[&rules::seen_marks_expired_by(before)],
            )
            .await
            .map_err(pg)?;
            Ok(n)
        }))
        .await
    }
}
