//! Backups asked for by hand: the whole store, or one account, and an account's folders
//! brought back.

use std::path::Path;

use postern_migrate::account_backup::{self, RestoreRequest};
use postern_migrate::backups;
use postern_store::SharedProgress;

use crate::{Admin, AdminError, AdminReply, done};

impl Admin {
    pub(crate) async fn backup(
        &self,
        dir: String,
        incremental: bool,
        user: Option<String>,
        progress: SharedProgress,
    ) -> Result<AdminReply, AdminError> {
        let store = self.directory.store();
        let dir = Path::new(&dir);
        let m = match user {
            Some(address) => account_backup::backup(store, dir, &address, &*progress).await?,
            None => backups::take(store, dir, incremental, progress).await?,
        };
        let mut text = backups::summary(&m, dir);
        if incremental && m.kind == postern_store::backup::BackupKind::Full {
            text.push_str(&format!(
                "\n(a full backup: {} held no earlier backup of this store to build on)",
                dir.display()
            ));
        }
        done(text)
    }

    pub(crate) async fn restore_account(
        &self,
        dir: &str,
        req: RestoreRequest<'_>,
        progress: SharedProgress,
    ) -> Result<AdminReply, AdminError> {
        let store = self.directory.store();
        done(account_backup::restore(store, Path::new(dir), req, &*progress).await?)
    }
}
