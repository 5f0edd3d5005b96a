//! How the writer adds to the dashboard's buckets and forgets old ones.

use redb::ReadableTable;

use super::super::db_err;
use super::Tables;
use crate::rules::{self, StatKey};
use crate::*;

impl Tables<'_> {
    pub(super) fn stats_add(&mut self, points: &[StatPoint]) -> Result<()> {
        let (sums, maxima) = rules::stat_changes(points);
        self.stats_merge(StatKind::Sum, &sums)?;
        self.stats_merge(StatKind::Max, &maxima)
    }

    fn stats_merge(
        &mut self,
        kind: StatKind,
        changes: &std::collections::BTreeMap<StatKey, i64>,
    ) -> Result<()> {
        for ((step, series, start), value) in changes {
            let key = (*step, series.as_str(), *start);
            let stored = self.stats.get(key).map_err(db_err)?.map(|v| v.value());
            self.stats
                .insert(key, rules::stat_merge(kind, stored, *value))
                .map_err(db_err)?;
        }
        Ok(())
    }

    pub(super) fn stats_prune(&mut self, now: i64) -> Result<u64> {
        let (hours, days) = rules::stat_horizons(now);
        let hour = rules::stat_step_code(StatStep::Hour);
        let mut gone = 0;
        self.stats
            .retain(|(step, _, start), _| {
                let horizon = if step == hour { hours } else { days };
                let keep = start >= horizon;
                gone += u64::from(!keep);
                keep
            })
            .map_err(db_err)?;
        Ok(gone)
    }
}
