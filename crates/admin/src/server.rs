//! The requests answered beyond the directory: reloading the running server, the doctor
//! inside it, the DNS records of a domain, and Maildir import and export.

use std::path::Path;

use postern_doctor::server::{Access, Queued};
use postern_store::Progress;

use crate::{Admin, AdminError, AdminReply, Place, QueueInfo, accounts, done, queue};

impl Admin {
    pub(crate) async fn reload(&self) -> Result<AdminReply, AdminError> {
        let Place::Server { reload, .. } = &self.place else {
            return Err(AdminError::new(
                "reload needs a running server (postern serve)",
            ));
        };
        let reload = reload.clone();
        // Reading certificate and key files blocks.
        match tokio::task::spawn_blocking(move || reload()).await {
            Ok(Ok(message)) => done(message),
            Ok(Err(message)) => Err(AdminError::refused(message)),
            Err(_) => Err(AdminError::temporary("the reload did not finish")),
        }
    }

    pub(crate) async fn doctor(&self) -> Result<AdminReply, AdminError> {
        if let Place::Local = self.place {
            return Err(AdminError::new(
                "the doctor over the admin API needs a running server; run postern doctor",
            ));
        }
        // Boxed: the doctor's state is large, and most requests need none of it.
        let report = Box::pin(postern_doctor::server::run(&self.config, &Inside(self))).await;
        Ok(AdminReply::Report {
            json: report.to_json(),
        })
    }

    pub(crate) async fn dns(&self, domain: String, check: bool) -> Result<AdminReply, AdminError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        match self.directory.is_local_domain(&domain).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(AdminError::missing(format!(
                    "{domain} is not a domain of this server"
                )));
            }
            Err(e) => return Err(AdminError::temporary(e.to_string())),
        }
        let json = postern_doctor::records::records_json(&self.config, &domain, check).await;
        Ok(AdminReply::Report { json })
    }

    pub(crate) async fn maildir_import(
        &self,
        address: String,
        path: String,
        progress: &dyn Progress,
    ) -> Result<AdminReply, AdminError> {
        let store = self.directory.store();
        let path = Path::new(&path);
        done(postern_migrate::maildir::import(store, &address, path, progress).await?)
    }

    pub(crate) async fn maildir_export(
        &self,
        address: String,
        path: String,
        progress: &dyn Progress,
    ) -> Result<AdminReply, AdminError> {
        let (store, host) = (self.directory.store(), &self.config.hostname);
        let path = Path::new(&path);
        done(postern_migrate::maildir::export(store, host, &address, path, progress).await?)
    }
}

/// The doctor's view from inside the running server.
struct Inside<'a>(&'a Admin);

impl Access for Inside<'_> {
    async fn server_pid(&self) -> Option<u32> {
        Some(std::process::id())
    }

    async fn domains(&self) -> Result<Vec<String>, String> {
        accounts::domain_names(&self.0.directory)
            .await
            .map_err(|e| e.message)
    }

    async fn queue(&self) -> Result<Vec<Queued>, String> {
        match queue::list(&self.0.directory).await {
            Ok(entries) => Ok(entries.iter().map(QueueInfo::queued).collect()),
            Err(e) => Err(e.message),
        }
    }
}

impl QueueInfo {
    /// What the doctor needs to know of a queued message.
    pub fn queued(&self) -> Queued {
        Queued {
            created: self.created,
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }
}
