//! The dashboard's series in PostgreSQL: one row a bucket, added to with ON CONFLICT so nodes
//! sharing the database add to the same buckets without losing each other's counts.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::{PgStore, Prepared, pg};
use crate::rules::{self, StatKey};
use crate::*;

/// Upserts of each kind; `changes` are in key order, so concurrent nodes lock rows alike.
const SUM: &str = "INSERT INTO stats (step, series, start, value) \
     SELECT * FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bigint[]) \
     ON CONFLICT (step, series, start) DO UPDATE SET value = LEAST(GREATEST(\
     stats.value::numeric + excluded.value, -9223372036854775808), 9223372036854775807)::bigint";
const MAX: &str = "INSERT INTO stats (step, series, start, value) \
     SELECT * FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bigint[]) \
     ON CONFLICT (step, series, start) DO UPDATE SET value = GREATEST(stats.value, excluded.value)";

async fn upsert(tx: &Transaction<'_>, sql: &str, changes: &BTreeMap<StatKey, i64>) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let steps: Vec<i16> = changes.keys().map(|k| i16::from(k.0)).collect();
    let series: Vec<&str> = changes.keys().map(|k| k.1.as_str()).collect();
    let starts: Vec<i64> = changes.keys().map(|k| k.2).collect();
    let values: Vec<i64> = changes.values().copied().collect();
    tx.run(sql, &[&steps, &series, &starts, &values])
        .await
        .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl StatsStore for PgStore {
    async fn stats_add(&self, points: Vec<StatPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let (sums, maxima) = rules::stat_changes(&points);
        self.write(tx!(|tx, _fx| {
            upsert(tx, SUM, &sums).await?;
            upsert(tx, MAX, &maxima).await
        }))
        .await
    }

    async fn stats_range(&self, step: StatStep, from: i64, to: i64) -> Result<Vec<StatBucket>> {
        let c = self.client().await?;
        let step = i16::from(rules::stat_step_code(step));
        Ok(c.rows(
            "SELECT series, start, value FROM stats \
             WHERE step = $1 AND start >= $2 AND start < $3 ORDER BY series, start",
            &[&step, &from, &to],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| StatBucket {
            series: r.get(0),
            start: r.get(1),
            value: r.get(2),
        })
        .collect())
    }

    async fn stats_prune(&self, now: i64) -> Result<u64> {
        let (hours, days) = rules::stat_horizons(now);
        let hour = i16::from(rules::stat_step_code(StatStep::Hour));
        self.write(tx!(|tx, _fx| {
            tx.run(
                "DELETE FROM stats \
                 WHERE start < CASE WHEN step = $1 THEN $2::bigint ELSE $3::bigint END",
                &[&hour, &hours, &days],
            )
            .await
            .map_err(pg)
        }))
        .await
    }
}
