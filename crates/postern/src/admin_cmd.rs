//! Admin subcommands: through the running server's control socket when it runs, else on the
//! store directly. Either way the same operation runs.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, bail};
use postern_admin::{Admin, AdminReply, AdminRequest, QueueInfo};
use postern_config::Config;
use postern_directory::{Directory, DirectoryConfig};
use postern_doctor::server::{Access, Queued};
use postern_store::{Progress, SharedStore, StoreError};

use crate::cli::{
    AcmeCmd, AliasCmd, DomainCmd, ForwardCmd, GroupCmd, MailboxCmd, PasswordArgs, QueueCmd,
    ReportsCmd, SendAsCmd, SieveCmd, TokenCmd, TraceArgs, UserCmd,
};
use crate::control;
use crate::progress::Reporter;

/// Runs one request: in the running server through its control socket, else on the store
/// opened here, answered by the same dispatcher. A long one shows its progress on stderr.
pub async fn run(cfg: &Config, req: AdminRequest) -> anyhow::Result<AdminReply> {
    let reporter = Arc::new(Reporter::new(verb(&req)));
    let r = run_with_progress(cfg, req, reporter.clone()).await;
    match &r {
        Ok(_) => reporter.finish(),
        Err(_) => reporter.abandon(),
    }
    r
}

/// What the summary line says was done.
fn verb(req: &AdminRequest) -> &'static str {
    match req {
        AdminRequest::MaildirImport { .. } => "imported",
        AdminRequest::MaildirExport { .. } => "exported",
        AdminRequest::Backup { .. } => "backed up",
        AdminRequest::RestoreAccount { .. } => "restored",
        _ => "done",
    }
}

/// [`run`] reporting to `reporter`, which the caller finishes or abandons (so several requests
/// can share one).
pub(crate) async fn run_with_progress(
    cfg: &Config,
    req: AdminRequest,
    reporter: Arc<Reporter>,
) -> anyhow::Result<AdminReply> {
    // A server that holds the store but does not answer yet is starting: it is waited for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let store = loop {
        if let Some(r) = control::request_with(&cfg.data_dir, &req, &*reporter).await? {
            return Ok(r?);
        }
        match crate::open_store::open(cfg).await {
            Ok(o) => break o.store,
            Err(e) => match e.root_cause().downcast_ref::<StoreError>() {
                Some(l @ StoreError::Locked { .. }) if std::time::Instant::now() >= deadline => {
                    bail!("{l}, and its control socket does not answer; is it stuck?")
                }
                Some(StoreError::Locked { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                _ => return Err(e),
            },
        }
    };
    let r = local(cfg, &store).run_with(req, reporter).await;
    store.close().await?;
    Ok(r?)
}

/// The dispatcher of a command that opened the store itself.
pub fn local(cfg: &Config, store: &SharedStore) -> Admin {
    let directory = Directory::new(store.clone(), DirectoryConfig::from_config(cfg));
    Admin::local(directory, Arc::new(cfg.clone()))
}

/// Runs the request and prints the reply.
async fn show(cfg: &Config, req: AdminRequest) -> anyhow::Result<()> {
    print!("{}", run(cfg, req).await?);
    Ok(())
}

/// The doctor's view of the server from the command line.
pub struct FromCli<'a>(pub &'a Config);

impl Access for FromCli<'_> {
    async fn server_pid(&self) -> Option<u32> {
        match control::request(&self.0.data_dir, &AdminRequest::Ping).await {
            Ok(Some(Ok(AdminReply::Pong { pid }))) => Some(pid),
            _ => None,
        }
    }

    async fn domains(&self) -> Result<Vec<String>, String> {
        match run(self.0, AdminRequest::DomainList).await {
            Ok(AdminReply::Domains { names }) => Ok(names),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn queue(&self) -> Result<Vec<Queued>, String> {
        match run(self.0, AdminRequest::QueueList).await {
            Ok(AdminReply::Queue { entries }) => {
                Ok(entries.iter().map(QueueInfo::queued).collect())
            }
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `postern trace`: messages and their stories.
pub async fn trace(cfg: &Config, t: TraceArgs) -> anyhow::Result<()> {
    let since_secs = match t.since {
        Some(s) => Some(
            postern_config::parse_seconds(&s)
                .ok_or_else(|| anyhow::anyhow!("{s:?} is not a duration (e.g. 30m, 2h, 7d)"))?,
        ),
        None => None,
    };
    let req = AdminRequest::Trace {
        id: t.id,
        message_id: t.message_id,
        from: t.from,
        to: t.to,
        since_secs,
        limit: t.limit,
    };
    show(cfg, req).await
}

pub async fn queue(cfg: &Config, c: QueueCmd) -> anyhow::Result<()> {
    let req = match c {
        QueueCmd::List => AdminRequest::QueueList,
        QueueCmd::Show { id } => AdminRequest::QueueShow { id },
        QueueCmd::Retry { id, all } => {
            if id.is_none() && !all {
                bail!("give a queue id (see: postern queue list) or --all");
            }
            AdminRequest::QueueRetry { id }
        }
        QueueCmd::Delete { id } => AdminRequest::QueueDelete { id },
        QueueCmd::Bounce { id } => AdminRequest::QueueBounce { id },
    };
    show(cfg, req).await
}

pub async fn reports(cfg: &Config, c: ReportsCmd) -> anyhow::Result<()> {
    match c {
        ReportsCmd::List { domain, days, json } => {
            let reply = run(cfg, AdminRequest::ReportsList { domain, days }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                print!("{reply}");
            }
            Ok(())
        }
        ReportsCmd::Send { now } => {
            if !now {
                bail!(
                    "reports are sent once a day by the server; --now sends what is counted so far"
                );
            }
            show(cfg, AdminRequest::ReportsSend).await
        }
    }
}

pub async fn stats(
    cfg: &Config,
    range: &str,
    step: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let secs = postern_config::parse_seconds(range)
        .ok_or_else(|| anyhow::anyhow!("{range:?} is not a duration (e.g. 24h, 7d, 1y)"))?;
    let step = match step.as_deref() {
        None => None,
        Some(s) => Some(postern_admin::stats::parse_step(s).map_err(|e| anyhow::anyhow!(e))?),
    };
    let to = postern_store::now() + 1;
    let req = AdminRequest::Stats {
        from: to - secs as i64,
        to,
        step,
        top_hours: Some(24),
    };
    let reply = run(cfg, req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{reply}");
    }
    Ok(())
}

pub async fn acme(cfg: &Config, c: AcmeCmd) -> anyhow::Result<()> {
    match c {
        // The status file is read here: no server needed.
        AcmeCmd::Status { json } => {
            let status = postern_acme::state::status(cfg);
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(())
        }
        AcmeCmd::Renew { force } => show(cfg, AdminRequest::AcmeRenew { force }).await,
        AcmeCmd::Rollover { finish } => show(cfg, AdminRequest::AcmeRollover { finish }).await,
    }
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    postern_config::parse_size(s).with_context(|| format!("{s:?} is not a size (e.g. 500M, 2G)"))
}

pub fn password(p: PasswordArgs) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    match (p.password, p.password_stdin) {
        (Some(pw), _) => Ok(pw),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, false) if std::io::stdin().is_terminal() => prompt_password("Password: "),
        (None, false) => bail!("give the password with --password PW or --password-stdin"),
    }
}

/// Reads a line from the terminal without showing it.
fn prompt_password(prompt: &str) -> anyhow::Result<String> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: termios is plain data; fd 0 is a terminal (checked by the caller); the old
    // settings are restored before returning.
    let old = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            bail!("cannot read the terminal settings");
        }
        let old = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        libc::tcsetattr(0, libc::TCSANOW, &t);
        old
    };
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: as above.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, &old);
    }
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn domain(cfg: &Config, c: DomainCmd) -> anyhow::Result<()> {
    let req = match c {
        DomainCmd::Add { domain } => AdminRequest::DomainAdd { name: domain },
        DomainCmd::List => AdminRequest::DomainList,
        DomainCmd::Del { domain } => AdminRequest::DomainDel { name: domain },
    };
    show(cfg, req).await
}

pub async fn user(cfg: &Config, c: UserCmd) -> anyhow::Result<()> {
    let req = match c {
        UserCmd::Add {
            address,
            password: p,
            quota,
        } => AdminRequest::UserAdd {
            address,
            password: password(p)?,
            quota: quota.map(|q| parse_size(&q)).transpose()?,
        },
        UserCmd::List => AdminRequest::UserList,
        UserCmd::Del { address } => AdminRequest::UserDel { address },
        UserCmd::Passwd {
            address,
            password: p,
        } => AdminRequest::UserPasswd {
            address,
            password: password(p)?,
        },
        UserCmd::Quota {
            address,
            size,
            messages,
        } => AdminRequest::UserQuota {
            address,
            quota: parse_size(&size)?,
            messages,
        },
        UserCmd::Disable { address } => AdminRequest::UserDisable {
            address,
            disabled: true,
        },
        UserCmd::Enable { address } => AdminRequest::UserDisable {
            address,
            disabled: false,
        },
    };
    show(cfg, req).await
}

/// Storage: the database schema, copies between stores, Maildir import and export (in the
/// running server through its control socket, else with the store opened here).
pub async fn storage(cfg: &Config, c: crate::cli::StorageCmd) -> anyhow::Result<()> {
    use crate::cli::StorageCmd;
    let abs = |p: std::path::PathBuf| -> anyhow::Result<String> {
        Ok(std::path::absolute(&p)?.to_string_lossy().into_owned())
    };
    let req = match c {
        StorageCmd::Migrate => {
            if cfg.storage.backend != "postgres" {
                println!(
                    "the embedded store needs no migration: it is brought up to date when opened"
                );
                return Ok(());
            }
            let reporter = Reporter::new("migrated");
            reporter.phase("bringing the database schema of storage.url up to date");
            let s = crate::open_store::open(cfg).await?.store;
            s.close().await?;
            reporter.finish();
            println!("the database schema of storage.url is up to date");
            return Ok(());
        }
        StorageCmd::Export { target } => return copy_stores(cfg, None, Some(&target)).await,
        StorageCmd::Import { source } => return copy_stores(cfg, Some(&source), None).await,
        StorageCmd::ImportMaildir { address, dir } => AdminRequest::MaildirImport {
            address,
            path: abs(dir)?,
        },
        StorageCmd::ExportMaildir { address, dir } => AdminRequest::MaildirExport {
            address,
            path: abs(dir)?,
        },
    };
    show(cfg, req).await
}

/// Export (this store into `target`) or import (`source` into this store).
async fn copy_stores(
    cfg: &Config,
    source: Option<&str>,
    target: Option<&str>,
) -> anyhow::Result<()> {
    let ours = match crate::open_store::open(cfg).await {
        Ok(o) => o.store,
        Err(e) => match e.root_cause().downcast_ref::<StoreError>() {
            Some(StoreError::Locked { .. }) => {
                bail!("the server is running on this store; stop it first (postern serve)")
            }
            _ => return Err(e),
        },
    };
    let other = match source.or(target) {
        Some(spec) => postern_migrate::copy::open_other(cfg, spec).await?,
        None => unreachable!("export or import names another store"),
    };
    let (from, to) = if source.is_some() {
        (&other, &ours)
    } else {
        (&ours, &other)
    };
    let reporter = Reporter::new("copied");
    let r = postern_migrate::copy::copy(from, to, &reporter).await;
    ours.close().await?;
    other.close().await?;
    let (a, b) = r?;
    let (table, same) = postern_migrate::copy::report(&a, &b);
    if same {
        reporter.finish();
    }
    print!("{table}");
    if !same {
        bail!("the copy differs from its source (see above)");
    }
    println!("copied; the counts agree");
    Ok(())
}

pub async fn forward(cfg: &Config, c: ForwardCmd) -> anyhow::Result<()> {
    let req = match c {
        ForwardCmd::Set {
            user,
            target,
            keep_copy,
        } => AdminRequest::Forward {
            address: user,
            to: Some(target),
            keep_copy,
        },
        ForwardCmd::Clear { user } => AdminRequest::Forward {
            address: user,
            to: None,
            keep_copy: false,
        },
    };
    show(cfg, req).await
}

pub async fn token(cfg: &Config, c: TokenCmd) -> anyhow::Result<()> {
    let req = match c {
        TokenCmd::Create { name } => AdminRequest::TokenCreate { name },
        TokenCmd::List => AdminRequest::TokenList,
        TokenCmd::Delete { name } => AdminRequest::TokenDelete { name },
    };
    show(cfg, req).await
}

pub async fn sieve(cfg: &Config, c: SieveCmd) -> anyhow::Result<()> {
    let req = match c {
        SieveCmd::List { user } => AdminRequest::SieveList { address: user },
        SieveCmd::Get { user, name } => AdminRequest::SieveGet {
            address: user,
            name,
        },
        SieveCmd::Put {
            user,
            name,
            file,
            activate,
        } => {
            let source = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            AdminRequest::SievePut {
                address: user,
                name,
                source,
                activate,
            }
        }
        SieveCmd::Activate { user, name, .. } => AdminRequest::SieveActivate {
            address: user,
            name,
        },
        SieveCmd::Delete { user, name } => AdminRequest::SieveDelete {
            address: user,
            name,
        },
    };
    show(cfg, req).await
}

pub async fn dav(cfg: &Config, c: crate::cli::DavCmd) -> anyhow::Result<()> {
    use crate::cli::DavCmd;
    match c {
        DavCmd::Export {
            user,
            name,
            addressbook,
            output,
        } => {
            let req = AdminRequest::DavExport {
                address: user,
                name,
                addressbook,
            };
            match output {
                None => show(cfg, req).await,
                Some(path) => {
                    let text = run(cfg, req).await?.to_string();
                    std::fs::write(&path, text.replace("\r\n", "\n").replace('\n', "\r\n"))
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
                }
            }
        }
        DavCmd::Import {
            user,
            name,
            file,
            addressbook,
        } => {
            let data = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            show(
                cfg,
                AdminRequest::DavImport {
                    address: user,
                    name,
                    addressbook,
                    data,
                },
            )
            .await
        }
    }
}

pub async fn group(cfg: &Config, c: GroupCmd) -> anyhow::Result<()> {
    let req = match c {
        GroupCmd::Add {
            group,
            members,
            policy,
            senders,
        } => AdminRequest::GroupAdd {
            group,
            members,
            policy,
            senders,
        },
        GroupCmd::Del { group } => AdminRequest::AliasDel {
            alias: group,
            target: None,
        },
        GroupCmd::List => AdminRequest::GroupList,
        GroupCmd::Members { group } => {
            let AdminReply::Groups { groups } = run(cfg, AdminRequest::GroupList).await? else {
                anyhow::bail!("unexpected reply");
            };
            let want = group.trim().to_lowercase();
            let Some((_, _, members)) = groups.into_iter().find(|g| g.0 == want) else {
                anyhow::bail!("no group {group}; see: postern group list");
            };
            for m in members {
                println!("{m}");
            }
            return Ok(());
        }
        GroupCmd::AddMember { group, members } => AdminRequest::AliasAdd {
            alias: group,
            targets: members,
        },
        GroupCmd::DelMember { group, member } => AdminRequest::AliasDel {
            alias: group,
            target: Some(member),
        },
        GroupCmd::Policy {
            group,
            policy,
            senders,
        } => AdminRequest::GroupPolicy {
            group,
            policy,
            senders,
        },
    };
    show(cfg, req).await
}

pub async fn mailbox(cfg: &Config, c: MailboxCmd) -> anyhow::Result<()> {
    let req = match c {
        MailboxCmd::Add {
            address,
            members,
            rights,
            quota,
        } => AdminRequest::MailboxAdd {
            address,
            members,
            rights,
            quota: quota.map(|q| parse_size(&q)).transpose()?,
        },
        MailboxCmd::Grant {
            address,
            member,
            rights,
        } => AdminRequest::MailboxGrant {
            address,
            member,
            rights,
        },
        MailboxCmd::Revoke { address, member } => AdminRequest::MailboxRevoke { address, member },
        MailboxCmd::List => AdminRequest::MailboxList,
        MailboxCmd::Delete { address } => AdminRequest::MailboxDel { address },
    };
    show(cfg, req).await
}

pub async fn send_as(cfg: &Config, c: SendAsCmd) -> anyhow::Result<()> {
    let req = match c {
        SendAsCmd::Add {
            address,
            delegate,
            on_behalf,
        } => AdminRequest::SendAsAdd {
            address,
            delegate,
            on_behalf,
        },
        SendAsCmd::Remove { address, delegate } => AdminRequest::SendAsDel { address, delegate },
        SendAsCmd::List => AdminRequest::SendAsList,
    };
    show(cfg, req).await
}

pub async fn route(cfg: &Config, address: String) -> anyhow::Result<()> {
    show(cfg, AdminRequest::Route { address }).await
}

pub async fn alias(cfg: &Config, c: AliasCmd) -> anyhow::Result<()> {
    let req = match c {
        AliasCmd::Add { alias, targets } => AdminRequest::AliasAdd { alias, targets },
        AliasCmd::List => AdminRequest::AliasList,
        AliasCmd::Del { alias, target } => AdminRequest::AliasDel { alias, target },
    };
    show(cfg, req).await
}

/// `postern dns`: the records of one domain, else of every local domain, with `check` judged
/// against DNS.
pub async fn dns(cfg: &Config, domain: Option<String>, check: bool) -> anyhow::Result<()> {
    let domains = match domain {
        Some(d) => vec![d.trim_end_matches('.').to_ascii_lowercase()],
        None => match run(cfg, AdminRequest::DomainList).await {
            Ok(AdminReply::Domains { names }) => names,
            _ => {
                let store = crate::open_store::open(cfg).await?.store;
                let n = store
                    .domain_list()
                    .await?
                    .into_iter()
                    .map(|d| d.name)
                    .collect();
                store.close().await?;
                n
            }
        },
    };
    if domains.is_empty() {
        bail!("no local domain; add one with: postern domain add example.com");
    }
    let mut out = std::io::stdout();
    let all_ok = postern_doctor::records::write(cfg, &domains, check, &mut out)
        .await
        .map_err(anyhow::Error::msg)?;
    if !all_ok {
        bail!("some DNS records are missing or wrong: publish the ones marked above");
    }
    Ok(())
}
