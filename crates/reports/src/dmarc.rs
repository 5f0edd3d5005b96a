//! DMARC aggregate reports we send: one row per like outcome of a checked message (source,
//! identifiers, results, what we did), counted per policy domain and day, built into the
//! report of RFC 9990 (mail-auth writes its XML).

use mail_auth::report::{
    ActionDisposition, DmarcResult, PolicyOverride, PolicyOverrideReason, PolicyPublished, Record,
    Report,
};
use postern_store::{ReportKind, ReportTally};
use serde::{Deserialize, Serialize};

use crate::{DAY, day_of, row_json};

/// What became of a checked message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Delivered,
    /// Into the recipients' Junk folders.
    Junk,
    Refused,
}

#[derive(Serialize, Deserialize)]
struct Row {
    policy: PolicyPublished,
    record: Record,
    /// The record's `rua`: addresses and size limits.
    rua: Vec<(String, usize)>,
}

/// A count of one toward `domain`'s report: `record` as the checks made it (mail-auth's
/// `Record::with_dmarc_output` and the rest), its disposition set to what was done; `rua` is
/// where the domain's record asks the report to go.
pub fn tally(
    domain: &str,
    policy: PolicyPublished,
    mut record: Record,
    rua: Vec<(String, usize)>,
    applied: Applied,
    now: i64,
) -> ReportTally {
    let evaluated = &mut record.row.policy_evaluated;
    let passed = evaluated.dkim == DmarcResult::Pass || evaluated.spf == DmarcResult::Pass;
    if !passed {
        let asked = evaluated.disposition;
        let did = match applied {
            Applied::Delivered => ActionDisposition::None,
            Applied::Junk => ActionDisposition::Quarantine,
            Applied::Refused => ActionDisposition::Reject,
        };
        evaluated.disposition = did;
        if did != asked {
            let why = if policy.testing {
                PolicyOverride::PolicyTestMode
            } else {
                PolicyOverride::LocalPolicy
            };
            evaluated.reason.push(PolicyOverrideReason::new(why));
        }
    }
    record.row.count = 0;
    ReportTally {
        kind: ReportKind::Dmarc,
        domain: domain.to_ascii_lowercase(),
        day: day_of(now),
        row: row_json(&Row {
            policy,
            record,
            rua,
        }),
        count: 1,
    }
}

/// Who we are in the reports we send.
pub struct Reporter<'a> {
    pub org_name: &'a str,
    /// The address to write to about them.
    pub email: &'a str,
}

/// The report for one domain and day, from its counts, with where it goes (the `rua` most of
/// the day's mail found); `None` when there are no counts.
pub fn build(
    who: &Reporter,
    domain: &str,
    day: i64,
    tallies: &[ReportTally],
    report_id: &str,
) -> Option<(Report, Vec<(String, usize)>)> {
    let mut records = Vec::new();
    let mut policies: Vec<(PolicyPublished, u64)> = Vec::new();
    let mut destinations: Vec<(Vec<(String, usize)>, u64)> = Vec::new();
    for t in tallies {
        let Ok(row) = serde_json::from_str::<Row>(&t.row) else {
            continue;
        };
        match destinations.iter_mut().find(|(r, _)| *r == row.rua) {
            Some((_, n)) => *n += t.count,
            None => destinations.push((row.rua, t.count)),
        }
        match policies.iter_mut().find(|(p, _)| *p == row.policy) {
            Some((_, n)) => *n += t.count,
            None => policies.push((row.policy, t.count)),
        }
        let mut r = row.record;
        r.row.count = u32::try_from(t.count).unwrap_or(u32::MAX);
        records.push(r);
    }
    // The policy most of the day's mail met (a domain rarely changes it within a day).
    let (policy, _) = policies.into_iter().max_by_key(|(_, n)| *n)?;
    let mut report = Report::new()
        .with_version(1.0)
        .with_org_name(who.org_name)
        .with_email(who.email)
        .with_report_id(report_id)
        .with_date_range_begin((day * DAY) as u64)
        .with_date_range_end((day * DAY + DAY - 1) as u64)
        .with_generator("Postern")
        .with_policy_published(PolicyPublished {
            domain: domain.to_string(),
            ..policy
        });
    for r in records {
        report = report.with_record(r);
    }
    let (rua, _) = destinations.into_iter().max_by_key(|(_, n)| *n)?;
    Some((report, rua))
}
