//! `postern backup` and `postern restore`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use postern_admin::{AdminReply, AdminRequest};
use postern_config::Config;
use postern_store::backup::{self, BackupKind};
use postern_store::embedded::backup as embedded;

use crate::admin_cmd;
use crate::cli::{BackupArgs, BackupCmd, RestoreArgs};
use crate::progress::Reporter;

fn abs(p: &Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(p)?.to_string_lossy().into_owned())
}

fn print(reply: AdminReply) {
    print!("{reply}");
}

pub async fn backup(cfg: &Config, a: BackupArgs) -> anyhow::Result<()> {
    if let Some(BackupCmd::List { dir, verify }) = a.cmd {
        print!("{}", postern_migrate::backups::table(&dir)?);
        if verify {
            let mut bad = 0;
            for m in backup::list(&dir)? {
                match backup::verify_files(&dir.join(&m.name), &m, |_| {}) {
                    Ok(()) => println!("{}: every file checks", m.name),
                    Err(e) => {
                        bad += 1;
                        println!("{e}");
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} backup(s) are damaged");
            }
        }
        return Ok(());
    }
    let dir: PathBuf = a.dir.context("name the backup directory")?;
    if a.user.is_some() && a.incremental {
        bail!("--incremental is for whole-store backups; an account backup is always whole");
    }
    let req = AdminRequest::Backup {
        dir: abs(&dir)?,
        incremental: a.incremental,
        user: a.user,
    };
    print(admin_cmd::run(cfg, req).await?);
    Ok(())
}

pub async fn restore(cfg: &Config, a: RestoreArgs) -> anyhow::Result<()> {
    let at = match &a.at {
        Some(t) => Some(backup::parse_time(t).with_context(|| {
            format!(
                "{t:?} is not a time: give 2026-12-04, 2026-12-04T17:05 (UTC) or a backup's name"
            )
        })?),
        None => None,
    };
    if let Some(address) = a.user {
        // The account backup to use, by name or time.
        let name = match (&a.name, at) {
            (Some(n), _) => Some(n.clone()),
            (None, Some(t)) => Some(
                backup::list(&a.dir)?
                    .into_iter()
                    .rfind(|m| {
                        m.kind == BackupKind::Account
                            && m.account.as_deref() == Some(address.as_str())
                            && m.created <= t
                    })
                    .with_context(|| {
                        format!(
                            "no backup of {address} taken at or before {}",
                            backup::show_time(t)
                        )
                    })?
                    .name,
            ),
            (None, None) => None,
        };
        let req = AdminRequest::RestoreAccount {
            dir: abs(&a.dir)?,
            address,
            name,
            folder: a.folder,
            as_name: a.as_name,
        };
        print(admin_cmd::run(cfg, req).await?);
        return Ok(());
    }
    let Some(target) = a.data_dir else {
        bail!(
            "say where: --data-dir NEW makes a new data directory from a whole-store backup; --user ADDRESS brings an account's folders back into the server"
        );
    };
    if cfg.storage.backend == "postgres" {
        bail!(
            "this server keeps its store in PostgreSQL: restore the database with its own tools (pg_restore, or a base backup and its WAL); postern restore --user still restores an account"
        );
    }
    let (dir, target2) = (a.dir.clone(), target.clone());
    let name = a.name.clone();
    let reporter = std::sync::Arc::new(Reporter::new("restored"));
    let shown = reporter.clone();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let all = backup::list(&dir)?;
        let m = embedded::pick(&all, name.as_deref(), at)?;
        embedded::restore(&dir, &all, &m, &target2, &*shown)?;
        let counts = embedded::count_dir(&target2)?;
        Ok((m, counts))
    })
    .await?;
    match &r {
        Ok(_) => reporter.finish(),
        Err(_) => reporter.abandon(),
    }
    let (m, counts) = r?;
    if counts != m.counts {
        bail!(
            "the restored directory counts {counts:?} where backup {} says {:?}",
            m.name,
            m.counts
        );
    }
    println!(
        "restored backup {} ({}, taken {}) into {}: {} message(s) in {} folder(s) of {} account(s), checked against the backup",
        m.name,
        m.kind,
        backup::show_time(m.created),
        target.display(),
        m.counts.messages,
        m.counts.mailboxes,
        m.counts.accounts
    );
    println!(
        "next: stop the server, set data_dir = \"{}\" in the config (or move it into place), and start it; mail programs see the same folders, UIDs and flags",
        abs(&target)?
    );
    Ok(())
}
