//! The reports other organizations send about our domains (`postern reports list`), and
//! sending ours now (`postern reports send`).

use postern_directory::Directory;
use postern_reports::received::summarize;

use crate::{Admin, AdminError, AdminReply, Place, ReportInfo, done};

pub(crate) async fn list(
    d: &Directory,
    domain: Option<String>,
    days: u32,
) -> Result<AdminReply, AdminError> {
    let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let since = postern_store::now() - i64::from(days) * 86_400;
    let kept = d.store().report_list(domain.as_deref(), since).await?;
    let reports = kept
        .iter()
        .map(|r| ReportInfo {
            kind: r.kind.as_str().to_string(),
            domain: r.domain.clone(),
            org: r.org.clone(),
            report_id: r.report_id.clone(),
            begin: r.begin,
            end: r.end,
            received: r.received,
        })
        .collect();
    Ok(AdminReply::Reports {
        domains: summarize(&kept),
        reports,
        days,
    })
}

impl Admin {
    pub(crate) async fn send_reports(&self) -> Result<AdminReply, AdminError> {
        let Place::Server {
            send_reports: Some(send),
            ..
        } = &self.place
        else {
            return Err(AdminError::new(
                "sending reports needs the running server (postern serve): it queues them",
            ));
        };
        let lines = send().await;
        if lines.is_empty() {
            return done("no reports to send: nothing counted since the last ones");
        }
        done(lines.join("\n"))
    }
}
