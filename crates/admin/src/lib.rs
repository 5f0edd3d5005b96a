//! The admin command set: one dispatcher, [`Admin::run_with`], behind the command line, the control
//! socket and the HTTP API, so every request is answered the same way wherever it comes from.
//! One module per concern; what only the running server can do (reload) comes in as a hook.
//! Also here: setting up a new server (`postern init`, `quickstart`) and its DKIM keys.

mod accounts;
mod aliases;
mod backup;
mod dav;
pub mod dkim;
mod queue;
mod reports;
mod request;
mod server;
pub mod setup;
pub mod sharing;
mod sieve;
pub mod stats;
pub mod text;
mod tokens;

use std::sync::Arc;

use postern_config::Config;
use postern_directory::{Directory, domain_of};
use postern_store::{NoProgress, SharedProgress};

pub use request::{
    AdminError, AdminReply, AdminRequest, MemberInfo, QueueInfo, ReportInfo, SharedMailboxInfo,
    SharedWith, Submission, UserInfo,
};

/// Re-reads what the running server keeps from disk (certificates, DKIM keys).
pub type Reloader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Sends the reports counted so far (the running server's queue does); lines say what went.
pub type ReportSend = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send>>
        + Send
        + Sync,
>;

/// Takes a message from a local program (the running server's ingest does); the text says
/// what became of it.
pub type Submit = Arc<
    dyn Fn(
            Submission,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// Renews or rolls over the ACME certificates (the running server's manager does).
pub type AcmeHook = Arc<
    dyn Fn(
            postern_acme::Action,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send>,
        > + Send
        + Sync,
>;

/// Where requests are answered.
enum Place {
    /// Inside the running server, which can reload, send reports and take local mail.
    Server {
        reload: Reloader,
        send_reports: Option<ReportSend>,
        submit: Option<Submit>,
        acme: Option<AcmeHook>,
    },
    /// In a command that opened the store itself while no server runs.
    Local,
}

pub struct Admin {
    directory: Arc<Directory>,
    config: Arc<Config>,
    place: Place,
}

impl Admin {
    /// The dispatcher of the running server.
    pub fn server(directory: Arc<Directory>, config: Arc<Config>, reload: Reloader) -> Admin {
        Admin {
            directory,
            config,
            place: Place::Server {
                reload,
                send_reports: None,
                submit: None,
                acme: None,
            },
        }
    }

    /// The running server's way in for `postern sendmail`.
    pub fn with_submit(mut self, hook: Submit) -> Admin {
        if let Place::Server { submit, .. } = &mut self.place {
            *submit = Some(hook);
        }
        self
    }

    /// The running server's ACME manager, for `postern acme renew|rollover`.
    pub fn with_acme(mut self, hook: AcmeHook) -> Admin {
        if let Place::Server { acme, .. } = &mut self.place {
            *acme = Some(hook);
        }
        self
    }

    /// The running server's report sender, for `postern reports send`.
    pub fn with_report_sender(mut self, send: ReportSend) -> Admin {
        if let Place::Server { send_reports, .. } = &mut self.place {
            *send_reports = Some(send);
        }
        self
    }

    /// The dispatcher of a command that opened the store itself.
    pub fn local(directory: Arc<Directory>, config: Arc<Config>) -> Admin {
        Admin {
            directory,
            config,
            place: Place::Local,
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Answers any admin request.
    pub async fn run(&self, req: AdminRequest) -> Result<AdminReply, AdminError> {
        self.run_with(req, Arc::new(NoProgress)).await
    }

    /// Answers any admin request, telling `progress` how a long one (an import, a backup) goes.
    pub async fn run_with(
        &self,
        req: AdminRequest,
        progress: SharedProgress,
    ) -> Result<AdminReply, AdminError> {
        use AdminRequest as R;
        let d = &*self.directory;
        match req {
            R::Ping => Ok(AdminReply::Pong {
                pid: std::process::id(),
            }),
            R::DomainAdd { name } => accounts::domain_add(d, name).await,
            R::DomainDel { name } => accounts::domain_del(d, name).await,
            R::DomainList => Ok(AdminReply::Domains {
                names: accounts::domain_names(d).await?,
            }),
            R::UserAdd {
                address,
                password,
                quota,
            } => accounts::user_add(d, address, password, quota).await,
            R::UserDel { address } => accounts::user_del(d, address).await,
            R::UserList => accounts::user_list(d).await,
            R::UserPasswd { address, password } => {
                accounts::user_passwd(d, address, password).await
            }
            R::UserDisable { address, disabled } => {
                accounts::user_disable(d, address, disabled).await
            }
            R::UserQuota {
                address,
                quota,
                messages,
            } => accounts::user_quota(d, address, quota, messages).await,
            R::Forward {
                address,
                to,
                keep_copy,
            } => accounts::forward(d, address, to, keep_copy).await,
            R::AliasAdd { alias, targets } => aliases::alias_add(d, alias, targets).await,
            R::AliasDel { alias, target } => aliases::alias_del(d, alias, target).await,
            R::AliasList => aliases::alias_list(d).await,
            R::GroupAdd {
                group,
                members,
                policy,
                senders,
            } => aliases::group_add(d, group, members, policy, senders).await,
            R::GroupPolicy {
                group,
                policy,
                senders,
            } => aliases::group_policy(d, group, policy, senders).await,
            R::GroupList => aliases::group_list(d).await,
            R::Route { address } => aliases::route(d, address).await,
            R::MailboxAdd {
                address,
                members,
                rights,
                quota,
            } => sharing::mailbox_add(d, address, members, rights, quota).await,
            R::MailboxGrant {
                address,
                member,
                rights,
            } => sharing::mailbox_grant(d, address, member, rights).await,
            R::MailboxRevoke { address, member } => {
                sharing::mailbox_revoke(d, address, member).await
            }
            R::MailboxList => sharing::mailbox_list(d).await,
            R::MailboxDel { address } => sharing::mailbox_del(d, address).await,
            R::SendAsAdd {
                address,
                delegate,
                on_behalf,
            } => sharing::send_as_add(d, address, delegate, on_behalf).await,
            R::SendAsDel { address, delegate } => sharing::send_as_del(d, address, delegate).await,
            R::SendAsList => sharing::send_as_list(d).await,
            R::Access { address } => sharing::access(d, address).await,
            R::SieveList { address } => sieve::list(d, address).await,
            R::SieveGet { address, name } => sieve::get(d, address, name).await,
            R::SievePut {
                address,
                name,
                source,
                activate,
            } => sieve::put(d, address, name, source, activate).await,
            R::SieveActivate { address, name } => sieve::activate(d, address, name).await,
            R::SieveDelete { address, name } => sieve::delete(d, address, name).await,
            R::DavExport {
                address,
                name,
                addressbook,
            } => dav::export(d, address, name, addressbook).await,
            R::DavImport {
                address,
                name,
                addressbook,
                data,
            } => dav::import(d, &self.config.dav, address, name, addressbook, data).await,
            R::TokenCreate { name } => tokens::create(d, name).await,
            R::TokenList => tokens::list(d).await,
            R::TokenDelete { name } => tokens::delete(d, name).await,
            R::QueueList => Ok(AdminReply::Queue {
                entries: queue::list(d).await?,
            }),
            R::QueueShow { id } => queue::show(d, id).await,
            R::QueueRetry { id } => queue::retry(d, id).await,
            R::QueueDelete { id } => queue::delete(d, id).await,
            R::QueueBounce { id } => queue::bounce(d, id).await,
            R::Trace {
                id,
                message_id,
                from,
                to,
                since_secs,
                limit,
            } => queue::trace(d, id, message_id, from, to, since_secs, limit).await,
            R::Reload => self.reload().await,
            R::Doctor => self.doctor().await,
            R::Dns { domain, check } => self.dns(domain, check).await,
            R::MaildirImport { address, path } => {
                self.maildir_import(address, path, &*progress).await
            }
            R::MaildirExport { address, path } => {
                self.maildir_export(address, path, &*progress).await
            }
            R::Backup {
                dir,
                incremental,
                user,
            } => self.backup(dir, incremental, user, progress).await,
            R::RestoreAccount {
                dir,
                address,
                name,
                folder,
                as_name,
            } => {
                let req = postern_migrate::account_backup::RestoreRequest {
                    address: &address,
                    name: name.as_deref(),
                    folder: folder.as_deref(),
                    as_name: as_name.as_deref(),
                };
                self.restore_account(&dir, req, progress).await
            }
            R::ReportsList { domain, days } => reports::list(d, domain, days).await,
            R::ReportsSend => self.send_reports().await,
            R::Stats {
                from,
                to,
                step,
                top_hours,
            } => stats::stats(d, &self.config, from, to, step, top_hours).await,
            R::AcmeStatus => Ok(AdminReply::Acme {
                status: postern_acme::state::status(&self.config),
            }),
            R::AcmeRenew { force } => self.acme(postern_acme::Action::Renew { force }).await,
            R::AcmeRollover { finish } => {
                let a = if finish {
                    postern_acme::Action::RolloverFinish
                } else {
                    postern_acme::Action::Rollover
                };
                self.acme(a).await
            }
            R::Submit(s) => match &self.place {
                Place::Server {
                    submit: Some(hook), ..
                } => hook(s)
                    .await
                    .map(|m| AdminReply::Done { message: m })
                    .map_err(AdminError::refused),
                _ => Err(AdminError::new(
                    "postern sendmail needs the running server (postern serve): it takes the mail",
                )),
            },
        }
    }
}

impl Admin {
    async fn acme(&self, action: postern_acme::Action) -> Result<AdminReply, AdminError> {
        let Place::Server {
            acme: Some(hook), ..
        } = &self.place
        else {
            return Err(AdminError::new(
                "this needs the running server (postern serve): it orders the certificates",
            ));
        };
        hook(action)
            .await
            .map(|lines| AdminReply::Done {
                message: lines.join("\n"),
            })
            .map_err(AdminError::refused)
    }
}

fn done(m: impl Into<String>) -> Result<AdminReply, AdminError> {
    Ok(AdminReply::Done { message: m.into() })
}

async fn require_user(d: &Directory, address: &str) -> Result<postern_store::Account, AdminError> {
    d.store()
        .account_by_address(address)
        .await?
        .ok_or_else(|| AdminError::new(format!("user {address} does not exist")))
}

async fn require_local_domain(d: &Directory, address: &str) -> Result<(), AdminError> {
    let domain = domain_of(address);
    if !d.is_local_domain(domain).await? {
        return Err(AdminError::new(format!(
            "domain {domain} is not local; add it with: postern domain add {domain}"
        )));
    }
    Ok(())
}
