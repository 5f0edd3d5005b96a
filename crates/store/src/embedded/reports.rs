//! DMARC and TLS reports in redb: counts by (kind, domain, day, row), received reports by
//! arrival time.

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::*;

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn report_tally(&self, tallies: Vec<ReportTally>) -> Result<()> {
        if tallies.is_empty() {
            return Ok(());
        }
        self.write(Job::ReportTally(tallies)).await.map(|_| ())
    }

    async fn report_pending(&self, kind: ReportKind) -> Result<Vec<(String, i64)>> {
        let k = kind.as_str();
        self.read(|r| {
            let t = r.open_table(REPORT_TALLY).map_err(db_err)?;
            let mut out: Vec<(String, i64)> = Vec::new();
            for x in t
                .range((k, "", i64::MIN, "")..=(k, "\u{10ffff}", i64::MAX, "\u{10ffff}"))
                .map_err(db_err)?
            {
                let (key, _) = x.map_err(db_err)?;
                let (_, domain, day, _) = key.value();
                if out.last().is_none_or(|(d, y)| d != domain || *y != day) {
                    out.push((domain.to_string(), day));
                }
            }
            Ok(out)
        })
    }

    async fn report_take(
        &self,
        kind: ReportKind,
        domain: &str,
        day: i64,
    ) -> Result<Vec<ReportTally>> {
        expect_output!(
            self.write(Job::ReportTake(kind, domain.to_string(), day))
                .await?,
            Tallies
        )
    }

    async fn report_put(&self, report: ReceivedReport) -> Result<bool> {
        expect_output!(self.write(Job::ReportPut(report)).await?, Bool)
    }

    async fn report_list(&self, domain: Option<&str>, since: i64) -> Result<Vec<ReceivedReport>> {
        self.read(|r| {
            let t = r.open_table(REPORTS).map_err(db_err)?;
            let mut out = Vec::new();
            for x in t.range((since, "")..).map_err(db_err)?.rev() {
                let report: ReceivedReport = from_json(x.map_err(db_err)?.1.value())?;
                if domain.is_none_or(|d| d.eq_ignore_ascii_case(&report.domain)) {
                    out.push(report);
                }
            }
            Ok(out)
        })
    }

    async fn report_prune(&self, before: i64) -> Result<u64> {
        expect_output!(self.write(Job::ReportPrune(before)).await?, Count)
    }
}
