//! The dashboard's series in redb: one row a bucket, keyed (step, series, start).

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::rules;
use crate::*;

#[async_trait]
impl StatsStore for EmbeddedStore {
    async fn stats_add(&self, points: Vec<StatPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.write(Job::StatsAdd(points)).await.map(|_| ())
    }

    async fn stats_range(&self, step: StatStep, from: i64, to: i64) -> Result<Vec<StatBucket>> {
        let s = rules::stat_step_code(step);
        self.read(|r| {
            let t = r.open_table(STATS).map_err(db_err)?;
            let mut out = Vec::new();
            // Keys run by series, then start: the step's rows, those in the window kept.
            for x in t
                .range((s, "", i64::MIN)..(s + 1, "", i64::MIN))
                .map_err(db_err)?
            {
                let (key, value) = x.map_err(db_err)?;
                let (_, series, start) = key.value();
                if (from..to).contains(&start) {
                    out.push(StatBucket {
                        series: series.to_string(),
                        start,
                        value: value.value(),
                    });
                }
            }
            Ok(out)
        })
    }

    async fn stats_prune(&self, now: i64) -> Result<u64> {
        expect_output!(self.write(Job::StatsPrune(now)).await?, Count)
    }
}
