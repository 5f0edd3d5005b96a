//! `[backup]`: backups the server takes itself.

use std::path::PathBuf;

use serde::Deserialize;

use crate::Seconds;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// Where scheduled backups go; none are taken when unset.
    pub dir: Option<PathBuf>,
    /// How often.
    pub every: Seconds,
    /// How many whole-store backups to keep (and the ones they build on).
    pub keep: usize,
    /// A full backup after this many incremental ones.
    pub full_every: usize,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            dir: None,
            every: Seconds(86400),
            keep: 14,
            full_every: 7,
        }
    }
}

impl Backup {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.every.0 < 60 {
            return Err("backup.every must be at least 1m".into());
        }
        if self.keep == 0 {
            return Err("backup.keep must be at least 1".into());
        }
        if self.dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err("backup.dir must be an absolute path".into());
        }
        Ok(())
    }
}

pub(crate) const RENDER: &str = r#"[backup]
# Backups the server takes itself while it runs (postern backup DIR does one by hand).
# dir = "/var/backups/postern"  # where; none are taken while unset
every = "1d"                   # how often
keep = 14                      # whole-store backups kept (with the ones they build on)
full_every = 7                 # a full backup after this many incremental ones
"#;
