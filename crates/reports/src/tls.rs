//! SMTP TLS reports we send (RFC 8460): each delivery session to a domain counted as a
//! success or a failure of a kind, under the policy that applied (DANE, MTA-STS or none),
//! per day, built into the report's JSON (mail-auth writes it).

use std::collections::BTreeMap;

use mail_auth::mta_sts::ReportUri;
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, Summary, TlsReport,
};
use postern_store::{ReportKind, ReportTally};
use serde::{Deserialize, Serialize};

use crate::{DAY, day_of, row_json};

pub use mail_auth::report::tlsrpt::{PolicyType, ResultType};

#[derive(Serialize, Deserialize)]
struct Row {
    policy: PolicyDetails,
    failure: Option<FailureDetails>,
}

/// A session to `domain` that used TLS as its policy asks.
pub fn success(domain: &str, policy: PolicyDetails, now: i64) -> ReportTally {
    count(domain, policy, None, now)
}

/// A session to `domain` that failed: `failure` says how and with which host.
pub fn failure(
    domain: &str,
    policy: PolicyDetails,
    failure: FailureDetails,
    now: i64,
) -> ReportTally {
    count(domain, policy, Some(failure), now)
}

fn count(
    domain: &str,
    policy: PolicyDetails,
    failure: Option<FailureDetails>,
    now: i64,
) -> ReportTally {
    ReportTally {
        kind: ReportKind::Tls,
        domain: domain.to_ascii_lowercase(),
        day: day_of(now),
        row: row_json(&Row { policy, failure }),
        count: 1,
    }
}

/// The report for one domain and day; `None` when there are no counts.
pub fn build(
    org_name: &str,
    contact: &str,
    day: i64,
    tallies: &[ReportTally],
    report_id: &str,
) -> Option<TlsReport> {
    // One entry per policy, its failures summed by kind and host.
    let mut policies: BTreeMap<String, (PolicyDetails, u32, u32, Vec<FailureDetails>)> =
        BTreeMap::new();
    for t in tallies {
        let Ok(row) = serde_json::from_str::<Row>(&t.row) else {
            continue;
        };
        let n = u32::try_from(t.count).unwrap_or(u32::MAX);
        let e = policies
            .entry(row_json(&row.policy))
            .or_insert_with(|| (row.policy.clone(), 0, 0, Vec::new()));
        match row.failure {
            None => e.1 = e.1.saturating_add(n),
            Some(mut f) => {
                e.2 = e.2.saturating_add(n);
                f.failed_session_count = n;
                e.3.push(f);
            }
        }
    }
    if policies.is_empty() {
        return None;
    }
    let time = |secs: i64| mail_parser::DateTime::from_timestamp(secs);
    Some(TlsReport {
        organization_name: Some(org_name.to_string()),
        date_range: DateRange {
            start_datetime: time(day * DAY),
            end_datetime: time(day * DAY + DAY - 1),
        },
        contact_info: Some(contact.to_string()),
        report_id: report_id.to_string(),
        policies: policies
            .into_values()
            .map(|(policy, ok, failed, failure_details)| Policy {
                policy,
                summary: Summary {
                    total_success: ok,
                    total_failure: failed,
                },
                failure_details,
            })
            .collect(),
    })
}

/// The mailto: addresses of a TLSRPT record's rua (RFC 8460 3); https: ones are not used.
pub fn mail_destinations(rua: &[ReportUri]) -> Vec<String> {
    rua.iter()
        .filter_map(|u| match u {
            ReportUri::Mail(a) => Some(a.clone()),
            ReportUri::Http(_) => None,
        })
        .collect()
}
