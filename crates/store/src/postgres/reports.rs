//! DMARC and TLS reports in PostgreSQL: counts added with ON CONFLICT, taken with DELETE ...
//! RETURNING (one node gets them); received reports keyed by what makes them the same.

use async_trait::async_trait;

use super::{PgStore, Prepared, from_json, json, pg};
use crate::*;

#[async_trait]
impl ReportStore for PgStore {
    async fn report_tally(&self, tallies: Vec<ReportTally>) -> Result<()> {
        if tallies.is_empty() {
            return Ok(());
        }
        self.write(tx!(|tx, _fx| {
            let kinds: Vec<&str> = tallies.iter().map(|t| t.kind.as_str()).collect();
            let domains: Vec<&str> = tallies.iter().map(|t| t.domain.as_str()).collect();
            let days: Vec<i64> = tallies.iter().map(|t| t.day).collect();
            let rows: Vec<&str> = tallies.iter().map(|t| t.row.as_str()).collect();
            let counts: Vec<i64> = tallies
                .iter()
                .map(|t| i64::try_from(t.count).unwrap_or(i64::MAX))
                .collect();
            // One statement may not touch a row twice: equal rows are summed first.
            tx.run(
                "INSERT INTO report_tallies (kind, domain, day, row_key, count) \
                 SELECT k, d, y, r, sum(n) FROM unnest($1::text[], $2::text[], $3::bigint[], \
                 $4::text[], $5::bigint[]) AS x(k, d, y, r, n) GROUP BY k, d, y, r \
                 ON CONFLICT (kind, domain, day, row_key) \
                 DO UPDATE SET count = report_tallies.count + excluded.count",
                &[&kinds, &domains, &days, &rows, &counts],
            )
            .await
            .map_err(pg)?;
            Ok(())
        }))
        .await
    }

    async fn report_pending(&self, kind: ReportKind) -> Result<Vec<(String, i64)>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT DISTINCT domain, day FROM report_tallies WHERE kind = $1 ORDER BY domain, day",
            &[&kind.as_str()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    async fn report_take(
        &self,
        kind: ReportKind,
        domain: &str,
        day: i64,
    ) -> Result<Vec<ReportTally>> {
        let domain = domain.to_string();
        self.write(tx!(|tx, _fx| {
            let rows = tx
                .rows(
                    "DELETE FROM report_tallies WHERE kind = $1 AND domain = $2 AND day = $3 \
                     RETURNING row_key, count",
                    &[&kind.as_str(), &domain, &day],
                )
                .await
                .map_err(pg)?;
            let mut out: Vec<ReportTally> = rows
                .iter()
                .map(|r| ReportTally {
                    kind,
                    domain: domain.clone(),
                    day,
                    row: r.get(0),
                    count: r.get::<_, i64>(1).max(0) as u64,
                })
                .collect();
            out.sort_by(|a, b| a.row.cmp(&b.row));
            Ok(out)
        }))
        .await
    }

    async fn report_put(&self, report: ReceivedReport) -> Result<bool> {
        self.write(tx!(|tx, _fx| {
            let n = tx
                .run(
                    "INSERT INTO received_reports (key, kind, domain, received, report) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                    &[
                        &report.key(),
                        &report.kind.as_str(),
                        &report.domain.to_ascii_lowercase(),
                        &report.received,
                        &json(&report),
                    ],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        }))
        .await
    }

    async fn report_list(&self, domain: Option<&str>, since: i64) -> Result<Vec<ReceivedReport>> {
        let c = self.client().await?;
        let domain = domain.map(|d| d.to_ascii_lowercase());
        c.rows(
            "SELECT report FROM received_reports WHERE received >= $1 \
             AND ($2::text IS NULL OR domain = $2) ORDER BY received DESC, key DESC",
            &[&since, &domain],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| from_json(r.get::<_, &str>(0)))
        .collect()
    }

    async fn report_prune(&self, before: i64) -> Result<u64> {
        self.write(tx!(|tx, _fx| {
            tx.run(
                "DELETE FROM received_reports WHERE received < $1",
                &[&before],
            )
            .await
            .map_err(pg)
        }))
        .await
    }
}
