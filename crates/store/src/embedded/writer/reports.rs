//! How the writer counts toward the reports we send and keeps the ones we receive.

use redb::ReadableTable;

use super::super::db_err;
use super::super::tables::*;
use super::Tables;
use crate::*;

impl Tables<'_> {
    pub(super) fn report_tally(&mut self, tallies: &[ReportTally]) -> Result<()> {
        for t in tallies {
            let key = (t.kind.as_str(), t.domain.as_str(), t.day, t.row.as_str());
            let was = self
                .report_tally
                .get(key)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            self.report_tally
                .insert(key, was.saturating_add(t.count))
                .map_err(db_err)?;
        }
        Ok(())
    }

    pub(super) fn report_take(
        &mut self,
        kind: ReportKind,
        domain: &str,
        day: i64,
    ) -> Result<Vec<ReportTally>> {
        let k = kind.as_str();
        let taken: Vec<ReportTally> = self
            .report_tally
            .range((k, domain, day, "")..=(k, domain, day, "\u{10ffff}"))
            .map_err(db_err)?
            .map(|x| {
                let (key, count) = x.map_err(db_err)?;
                Ok(ReportTally {
                    kind,
                    domain: domain.to_string(),
                    day,
                    row: key.value().3.to_string(),
                    count: count.value(),
                })
            })
            .collect::<Result<_>>()?;
        for t in &taken {
            self.report_tally
                .remove((k, domain, day, t.row.as_str()))
                .map_err(db_err)?;
        }
        Ok(taken)
    }

    pub(super) fn report_put(&mut self, r: &ReceivedReport) -> Result<bool> {
        let key = r.key();
        if self
            .report_keys
            .get(key.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Ok(false);
        }
        self.report_keys
            .insert(key.as_str(), r.received)
            .map_err(db_err)?;
        self.reports
            .insert((r.received, key.as_str()), json(r).as_slice())
            .map_err(db_err)?;
        Ok(true)
    }

    pub(super) fn report_prune(&mut self, before: i64) -> Result<u64> {
        let old: Vec<(i64, String)> = self
            .reports
            .range((i64::MIN, "")..(before, ""))
            .map_err(db_err)?
            .map(|x| {
                x.map(|(k, _)| (k.value().0, k.value().1.to_string()))
                    .map_err(db_err)
            })
            .collect::<Result<_>>()?;
        for (t, key) in &old {
            self.reports.remove((*t, key.as_str())).map_err(db_err)?;
            self.report_keys.remove(key.as_str()).map_err(db_err)?;
        }
        Ok(old.len() as u64)
    }
}
