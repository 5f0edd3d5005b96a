//! Replies as the command line prints them, with sizes, ages and times for people.

use std::fmt;

use crate::AdminReply;

impl fmt::Display for AdminReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminReply::Done { message } => writeln!(f, "{message}")?,
            AdminReply::Domains { names } => {
                for n in names {
                    writeln!(f, "{n}")?;
                }
            }
            AdminReply::Users { users } => {
                for u in users {
                    let quota = if u.quota_bytes == 0 {
                        "unlimited".to_string()
                    } else {
                        human_size(u.quota_bytes)
                    };
                    writeln!(
                        f,
                        "{}\t{} messages\t{} used\tquota {}{}{}",
                        u.address,
                        u.messages,
                        human_size(u.used_bytes),
                        quota,
                        if u.disabled { "\tdisabled" } else { "" },
                        if u.shared {
                            "\tshared mailbox (see postern mailbox list)"
                        } else {
                            ""
                        }
                    )?;
                }
            }
            AdminReply::Route {
                steps,
                destinations,
            } => {
                for s in steps {
                    writeln!(f, "{s}")?;
                }
                match destinations {
                    None => writeln!(
                        f,
                        "=> refused when the sender names it (550 5.1.1): no such address"
                    )?,
                    Some(ds) if ds.is_empty() => {
                        writeln!(f, "=> accepted, but delivered to nobody")?
                    }
                    Some(ds) => {
                        for d in ds {
                            match d.split_once(':') {
                                Some(("local", a)) => writeln!(f, "=> {a}: INBOX")?,
                                Some((_, a)) => writeln!(f, "=> {a}: outbound queue")?,
                                None => writeln!(f, "=> {d}")?,
                            }
                        }
                    }
                }
            }
            AdminReply::SharedMailboxes { mailboxes } => {
                if mailboxes.is_empty() {
                    writeln!(
                        f,
                        "no shared mailbox; add one with: postern mailbox add ADDRESS --members ADDRESS..."
                    )?;
                }
                for m in mailboxes {
                    let quota = if m.quota_bytes == 0 {
                        "unlimited".to_string()
                    } else {
                        human_size(m.quota_bytes)
                    };
                    writeln!(
                        f,
                        "{}\t{} messages\t{} used\tquota {quota}",
                        m.address,
                        m.messages,
                        human_size(m.used_bytes)
                    )?;
                    if m.members.is_empty() {
                        writeln!(f, "  no members")?;
                    }
                    for i in &m.members {
                        writeln!(f, "  {}", crate::sharing::member_words(i))?;
                    }
                }
            }
            AdminReply::SendAs { grants } => {
                if grants.is_empty() {
                    writeln!(
                        f,
                        "no send-as grants; add one with: postern send-as add ADDRESS DELEGATE"
                    )?;
                }
                for g in grants {
                    writeln!(f, "{}", crate::sharing::grant_words(g))?;
                }
            }
            AdminReply::Access {
                address,
                shared_with,
                send_as,
            } => {
                if shared_with.is_empty() && send_as.is_empty() {
                    writeln!(f, "{address} uses only its own folders and addresses")?;
                }
                for s in shared_with {
                    let what = if s.shared { "shared mailbox " } else { "" };
                    writeln!(
                        f,
                        "{what}{} under Shared/{}: {}",
                        s.owner,
                        s.owner,
                        crate::sharing::folders_words(s)
                    )?;
                }
                for g in send_as {
                    writeln!(f, "{}", crate::sharing::grant_words(g))?;
                }
            }
            AdminReply::Groups { groups } => {
                for (g, policy, members) in groups {
                    writeln!(f, "{g}\t({policy})\t-> {}", members.join(", "))?;
                }
            }
            AdminReply::Aliases { aliases } => {
                for (a, t) in aliases {
                    writeln!(f, "{a}\t-> {}", t.join(", "))?;
                }
            }
            AdminReply::Queue { entries } => {
                if entries.is_empty() {
                    writeln!(f, "the queue is empty")?;
                }
                let now = postern_store::now();
                for e in entries {
                    let when = if e.next_attempt <= now {
                        "now".to_string()
                    } else {
                        format!("in {}", human_duration(e.next_attempt - now))
                    };
                    writeln!(
                        f,
                        "{}\t{}\tfrom <{}>\t{}\tnext attempt {when}\t{} attempt(s)\tqueued {} ago",
                        e.id,
                        e.trace_id,
                        e.sender,
                        human_size(e.size),
                        e.attempts,
                        human_duration(now - e.created)
                    )?;
                    for (addr, state, err) in &e.recipients {
                        match err {
                            Some(err) => writeln!(f, "\t{addr}\t{state}\t{err}")?,
                            None => writeln!(f, "\t{addr}\t{state}")?,
                        }
                    }
                }
            }
            AdminReply::Traces { traces } => {
                if traces.is_empty() {
                    writeln!(f, "no message found")?;
                }
                for (id, events) in traces {
                    writeln!(f, "Message {id}")?;
                    for e in events {
                        writeln!(f, "  {}  {:<10} {}", ms_time(e.time), e.kind, e.text)?;
                    }
                    writeln!(f)?;
                }
            }
            AdminReply::Pong { pid } => writeln!(f, "server running (pid {pid})")?,
            AdminReply::Report { json } => writeln!(f, "{json}")?,
            AdminReply::Acme { status } => write!(f, "{status}")?,
            AdminReply::Stats { report } => write!(f, "{report}")?,
            AdminReply::Reports {
                domains,
                reports,
                days,
            } => write_reports(f, domains, reports.len(), *days)?,
        }
        Ok(())
    }
}

/// "1.5 MB": binary units, one decimal.
pub fn human_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// "45s", "12m", "3h05m", "2d4h".
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// "2026-11-28 10:20:25" (UTC) from milliseconds.
fn ms_time(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms / 1000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

/// "2026-12-03": the UTC day of a time in Unix seconds.
fn day(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

/// What the received reports say, per domain: who reported, what passed, where to look.
fn write_reports(
    f: &mut fmt::Formatter<'_>,
    domains: &[postern_reports::received::DomainSummary],
    count: usize,
    days: u32,
) -> fmt::Result {
    if domains.is_empty() {
        writeln!(
            f,
            "no DMARC or TLS reports received in the last {days} days (they come to the \
             addresses in your DMARC and TLSRPT records: see postern dns)"
        )?;
        return Ok(());
    }
    writeln!(f, "{count} reports received in the last {days} days")?;
    for d in domains {
        writeln!(f)?;
        writeln!(
            f,
            "{}: {} DMARC and {} TLS reports, {} to {}, from {}",
            d.domain,
            d.dmarc_reports,
            d.tls_reports,
            day(d.begin),
            day(d.end),
            d.reporters.join(", ")
        )?;
        if d.dmarc_reports > 0 {
            writeln!(
                f,
                "  {} messages sent as {}: DMARC pass {}, fail {} (SPF aligned pass {}, DKIM aligned pass {})",
                d.messages,
                d.domain,
                d.dmarc_pass,
                d.dmarc_fail,
                d.spf_aligned_pass,
                d.dkim_aligned_pass
            )?;
            for s in &d.sources {
                writeln!(
                    f,
                    "  {:<39} {:>6} messages, {:>6} failing DMARC, spf={} dkim={}{}",
                    s.ip,
                    s.messages,
                    s.dmarc_fail,
                    s.spf,
                    s.dkim,
                    if s.look_at {
                        "  <- look at this: if it is yours, add it to SPF or sign its mail \
                         with DKIM; if not, someone sends mail in your name"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if d.tls_reports > 0 {
            writeln!(
                f,
                "  TLS sessions to this domain's servers: {} fine, {} failed",
                d.tls_sessions_ok, d.tls_sessions_failed
            )?;
            for (kind, host, n) in &d.tls_failures {
                writeln!(f, "    {kind} at {host}: {n} sessions")?;
            }
        }
    }
    Ok(())
}
