//! Whole-store backups by hand and on a schedule, and what is said about them.

use std::path::Path;
use std::time::Duration;

use postern_config::Backup;
use postern_store::backup::{self, BackupKind, Manifest};
use postern_store::{NoProgress, SharedProgress, SharedStore};

use crate::Error;

/// One line on a finished backup.
pub fn summary(m: &Manifest, dir: &Path) -> String {
    let mib = m.bytes as f64 / (1 << 20) as f64;
    let what = match m.kind {
        BackupKind::Account => format!("of {}", m.account.as_deref().unwrap_or("")),
        BackupKind::Incremental => {
            format!("(incremental, on {})", m.base.as_deref().unwrap_or(""))
        }
        BackupKind::Full => "(full)".to_string(),
    };
    format!(
        "backup {} {what} written to {} and verified: {} message(s) in {} folder(s), {mib:.1} MiB copied in {:.1} s ({:.0} MiB/s)",
        m.name,
        dir.join(&m.name).display(),
        m.counts.messages,
        m.counts.mailboxes,
        m.seconds,
        m.megabytes_per_second()
    )
}

/// Takes a whole-store backup into `dir`.
pub async fn take(
    store: &SharedStore,
    dir: &Path,
    incremental: bool,
    progress: SharedProgress,
) -> Result<Manifest, Error> {
    Ok(store.backup(dir, incremental, progress).await?)
}

/// The table `postern backup list` prints.
pub fn table(dir: &Path) -> Result<String, Error> {
    let all = backup::list(dir)?;
    if all.is_empty() {
        return Ok(format!("no finished backups in {}\n", dir.display()));
    }
    let mut out = format!(
        "{:<40} {:<12} {:<24} {:>9} {:>10}  based on / account\n",
        "NAME", "KIND", "TAKEN", "MESSAGES", "MiB"
    );
    for m in &all {
        let whole: u64 = m.files.iter().map(|f| f.size).sum();
        out.push_str(&format!(
            "{:<40} {:<12} {:<24} {:>9} {:>10.1}  {}\n",
            m.name,
            m.kind.to_string(),
            backup::show_time(m.created),
            m.counts.messages,
            whole as f64 / (1 << 20) as f64,
            m.base.as_deref().or(m.account.as_deref()).unwrap_or("")
        ));
    }
    Ok(out)
}

/// Deletes the backups `keep` no longer needs; returns their names.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<String>, Error> {
    let all = backup::list(dir)?;
    let gone = backup::prune_plan(&all, keep);
    for name in &gone {
        std::fs::remove_dir_all(dir.join(name)).map_err(postern_store::StoreError::from_io)?;
    }
    Ok(gone)
}

/// The newest whole-store backup in `dir`.
pub fn newest(dir: &Path) -> Option<Manifest> {
    backup::list(dir)
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.kind != BackupKind::Account)
}

/// Backups the server takes itself: when the newest one is `every` old, another (a full one
/// after `full_every` incremental ones), then the oldest beyond `keep` go.
pub async fn schedule(store: SharedStore, cfg: Backup) {
    let Some(dir) = cfg.dir.clone() else { return };
    // Backups cut short when the server stopped.
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let every = cfg.every.0 as i64;
    loop {
        let all = backup::list(&dir).unwrap_or_default();
        let whole: Vec<&Manifest> = all
            .iter()
            .filter(|m| m.kind != BackupKind::Account)
            .collect();
        let due = whole
            .last()
            .map_or(0, |m| m.created + every - postern_store::now());
        if due > 0 {
            tokio::time::sleep(Duration::from_secs(due.min(3600) as u64)).await;
            continue;
        }
        let since_full = whole
            .iter()
            .rev()
            .take_while(|m| m.kind == BackupKind::Incremental)
            .count();
        let incremental = !whole.is_empty() && since_full < cfg.full_every;
        match take(
            &store,
            &dir,
            incremental,
            std::sync::Arc::new(NoProgress) as SharedProgress,
        )
        .await
        {
            Ok(m) => {
                tracing::info!("{}", summary(&m, &dir));
                match prune(&dir, cfg.keep) {
                    Ok(gone) if !gone.is_empty() => {
                        tracing::info!(removed = %gone.join(", "), "old backups removed (backup.keep)")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot remove old backups"),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "scheduled backup failed; trying again in 10 minutes");
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        }
    }
}
