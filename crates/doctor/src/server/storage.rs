//! The data directory and what fills it: free space, open files, the PostgreSQL database
//! when there is one, and the outbound queue.

use postern_config::Config;

use super::Access;
use crate::report::Section;

pub(super) async fn storage(cfg: &Config, pid: Option<u32>, access: &impl Access) -> Section {
    let mut s = Section::new(format!("Storage and queue ({})", cfg.data_dir.display()));
    match free_space(&cfg.data_dir) {
        Some(free) => {
            let gib = free as f64 / (1u64 << 30) as f64;
            if free < cfg.smtp.max_message_size.0 {
                s.fail(
                    format!("{gib:.2} GiB free: less than one message of the largest size"),
                    "Free space now: Postern answers 452 (try later) to every message until then.",
                );
            } else if free < cfg.doctor.disk_warn_free.0 {
                s.warn(
                    format!("only {gib:.2} GiB free"),
                    "Free space or grow the disk before it fills up ([doctor] disk_warn_free sets this threshold).",
                );
            } else {
                s.ok(format!("{gib:.1} GiB free"));
            }
        }
        None => s.warn(
            "cannot read the free space of the data directory",
            "Check that the data directory exists and is readable.",
        ),
    }
    let wanted = cfg.most_connections() as u64;
    match open_file_limit(pid) {
        Some(n) if n < wanted => s.warn(
            format!(
                "the server may have {n} files open at once, but a listener allows {wanted} connections (each is a file)"
            ),
            "Raise the limit (LimitNOFILE= in the systemd unit, or ulimit -n before postern serve) or lower max_connections; past it, new connections fail.",
        ),
        Some(n) => s.ok(format!(
            "open-file limit {n}: room for {wanted} connections on a listener"
        )),
        None => {}
    }
    if cfg.storage.backend == "postgres" {
        database(cfg, &mut s).await;
    }
    let entries = match access.queue().await {
        Ok(entries) => entries,
        Err(e) => {
            s.warn(
                format!("cannot read the queue: {e}"),
                "Check the server's log.",
            );
            return s;
        }
    };
    if entries.is_empty() {
        s.ok("the outgoing queue is empty");
        return s;
    }
    let now = postern_store::now();
    let oldest = entries.iter().map(|e| e.created).min().unwrap_or(now);
    let age = now.saturating_sub(oldest).max(0) as u64;
    let deferred = entries.iter().filter(|e| e.attempts > 0).count();
    let mut errors: Vec<(String, usize)> = Vec::new();
    for e in &entries {
        if let Some(err) = &e.last_error {
            match errors.iter_mut().find(|(x, _)| x == err) {
                Some((_, n)) => *n += 1,
                None => errors.push((err.clone(), 1)),
            }
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let summary = format!(
        "{} message(s) waiting, {deferred} after failed attempts, the oldest for {}",
        entries.len(),
        human_age(age)
    );
    if age > cfg.doctor.queue_warn_age.0 {
        let common = errors
            .iter()
            .take(3)
            .map(|(e, n)| format!("{n}x {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        s.warn(
            if common.is_empty() {
                summary
            } else {
                format!("{summary}; most common errors: {common}")
            },
            "See each message with postern queue list / postern queue show ID and postern trace --id; the remote reply says why (blocklisted IP, wrong DNS, full mailbox...).",
        );
    } else {
        s.ok(summary);
    }
    s
}

/// The PostgreSQL database of `storage.url`: reachable, its schema this build's, room for
/// every node's connections.
async fn database(cfg: &Config, s: &mut Section) {
    let h = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        postern_store::postgres::inspect(&cfg.storage.url),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            s.fail(
                format!("cannot use the PostgreSQL database of storage.url: {e}"),
                "Check storage.url (host, port, user, database name), that PostgreSQL runs and accepts this host in pg_hba.conf, and the password.",
            );
            return;
        }
        Err(_) => {
            s.fail(
                "the PostgreSQL server of storage.url does not answer within 10 s",
                "Check that PostgreSQL runs and that a firewall lets this host reach its port.",
            );
            return;
        }
    };
    let version = format!("PostgreSQL {}", h.server_version);
    if h.schema > h.schema_wanted {
        s.fail(
            format!("{version}: the database's schema (version {}) is newer than this node's (version {})", h.schema, h.schema_wanted),
            "A newer Postern migrated it, and this one refuses to start on it: upgrade this node to that version (docs/upgrades.md).",
        );
    } else if h.schema < h.schema_wanted {
        s.ok(format!(
            "{version}: schema version {} (this node updates it to {} when it starts; postern storage migrate does it now)",
            h.schema, h.schema_wanted
        ));
    } else {
        s.ok(format!(
            "{version}: schema version {}; nodes running on this database: {}",
            h.schema, h.nodes
        ));
    }
    let per_node = cfg.storage.max_connections as i64 + 1;
    let room = h.max_connections - h.connections;
    if h.max_connections > 0 && room < per_node {
        s.warn(
            format!(
                "{} of PostgreSQL's {} connections in use: not enough left for another node's {per_node}",
                h.connections, h.max_connections
            ),
            "Raise max_connections in postgresql.conf, or lower storage.max_connections on each node (each node keeps that many plus one for events).",
        );
    } else if h.max_connections > 0 {
        s.ok(format!(
            "{} of PostgreSQL's {} connections in use",
            h.connections, h.max_connections
        ));
    }
}

/// The running server's open-file limit (from /proc), or, with no server running, the
/// limit it would get (it raises its soft limit to the hard one at start).
fn open_file_limit(server_pid: Option<u32>) -> Option<u64> {
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let own = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) } == 0).then_some(own);
    match server_pid {
        Some(pid) if pid == std::process::id() => own.map(|l| l.rlim_cur),
        Some(pid) => {
            let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        }
        None => own.map(|l| l.rlim_max),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn free_space(path: &std::path::Path) -> Option<u64> {
    postern_net::disk_space(path).map(|(free, _)| free)
}
