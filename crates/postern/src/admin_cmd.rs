//! Admin subcommands: through the running server's control socket when it runs, else on the
//! store directly. Either way the same operation runs.

use std::io::BufRead;

use std::sync::Arc;

use anyhow::{Context, bail};
use postern_admin::{Admin, AdminReply, AdminRequest, QueueInfo};
use postern_config::Config;
use postern_directory::{Directory, DirectoryConfig};
use postern_doctor::server::{Access, Queued};
use postern_store::{SharedStore, StoreError};

use crate::cli::{
    AliasCmd, DomainCmd, ForwardCmd, GroupCmd, PasswordArgs, QueueCmd, SieveCmd, TokenCmd, UserCmd,
};
use crate::control;

/// Runs one request: in the running server through its control socket, else on the store
/// opened here, answered by the same dispatcher.
pub async fn run(cfg: &Config, req: AdminRequest) -> anyhow::Result<AdminReply> {
    if let Some(r) = control::request(&cfg.data_dir, &req).await? {
        return Ok(r?);
    }
    let store = match crate::open_store::open(cfg).await {
        Ok(o) => o.store,
        Err(e) => match e.root_cause().downcast_ref::<StoreError>() {
            Some(l @ StoreError::Locked { .. }) => {
                bail!("{l}, and its control socket does not answer; is it still starting?")
            }
            _ => return Err(e),
        },
    };
    let r = local(cfg, &store).run(req).await;
    store.close().await?;
    Ok(r?)
}

/// The dispatcher of a command that opened the store itself.
pub fn local(cfg: &Config, store: &SharedStore) -> Admin {
    let directory = Directory::new(store.clone(), DirectoryConfig::from_config(cfg));
    Admin::local(directory, Arc::new(cfg.clone()))
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

fn print(reply: AdminReply) {
    match reply {
        AdminReply::Done { message } => println!("{message}"),
        AdminReply::Domains { names } => {
            for n in names {
                println!("{n}");
            }
        }
        AdminReply::Users { users } => {
            for u in users {
                let quota = if u.quota_bytes == 0 {
                    "unlimited".to_string()
                } else {
                    human_size(u.quota_bytes)
                };
                println!(
                    "{}\t{} messages\t{} used\tquota {}{}",
                    u.address,
                    u.messages,
                    human_size(u.used_bytes),
                    quota,
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
        }
        AdminReply::Route {
            steps,
            destinations,
        } => {
            for s in steps {
                println!("{s}");
            }
            match destinations {
                None => {
                    println!("=> refused when the sender names it (550 5.1.1): no such address")
                }
                Some(ds) if ds.is_empty() => println!("=> accepted, but delivered to nobody"),
                Some(ds) => {
                    for d in ds {
                        match d.split_once(':') {
                            Some(("local", a)) => println!("=> {a}: INBOX"),
                            Some((_, a)) => println!("=> {a}: outbound queue"),
                            None => println!("=> {d}"),
                        }
                    }
                }
            }
        }
        AdminReply::Groups { groups } => {
            for (g, policy, members) in groups {
                println!("{g}\t({policy})\t-> {}", members.join(", "));
            }
        }
        AdminReply::Aliases { aliases } => {
            for (a, t) in aliases {
                println!("{a}\t-> {}", t.join(", "));
            }
        }
        AdminReply::Queue { entries } => {
            if entries.is_empty() {
                println!("the queue is empty");
            }
            let now = postern_store::now();
            for e in entries {
                let when = if e.next_attempt <= now {
                    "now".to_string()
                } else {
                    format!("in {}", human_duration(e.next_attempt - now))
                };
                println!(
                    "{}\t{}\tfrom <{}>\t{}\tnext attempt {when}\t{} attempt(s)\tqueued {} ago",
                    e.id,
                    e.trace_id,
                    e.sender,
                    human_size(e.size),
                    e.attempts,
                    human_duration(now - e.created)
                );
                for (addr, state, err) in e.recipients {
                    match err {
                        Some(err) => println!("\t{addr}\t{state}\t{err}"),
                        None => println!("\t{addr}\t{state}"),
                    }
                }
            }
        }
        AdminReply::Traces { traces } => {
            if traces.is_empty() {
                println!("no message found");
            }
            for (id, events) in traces {
                println!("Message {id}");
                for e in events {
                    println!("  {}  {:<10} {}", ms_time(e.time), e.kind, e.text);
                }
                println!();
            }
        }
        AdminReply::Pong { pid } => println!("server running (pid {pid})"),
        AdminReply::Report { json } => println!("{json}"),
    }
}

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

#[allow(clippy::too_many_arguments)]
pub async fn trace(
    cfg: &Config,
    id: Option<String>,
    message_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since_secs: Option<u64>,
    limit: usize,
) -> anyhow::Result<()> {
    print(
        run(
            cfg,
            AdminRequest::Trace {
                id,
                message_id,
                from,
                to,
                since_secs,
                limit,
            },
        )
        .await?,
    );
    Ok(())
}

pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
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
    print(run(cfg, req).await?);
    Ok(())
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
    print(run(cfg, req).await?);
    Ok(())
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
    print(run(cfg, req).await?);
    Ok(())
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
            let s = crate::open_store::open(cfg).await?.store;
            s.close().await?;
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
    print(run(cfg, req).await?);
    Ok(())
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
    let r = postern_migrate::copy::copy(from, to).await;
    ours.close().await?;
    other.close().await?;
    let (a, b) = r?;
    let (table, same) = postern_migrate::copy::report(&a, &b);
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
    print(run(cfg, req).await?);
    Ok(())
}

pub async fn token(cfg: &Config, c: TokenCmd) -> anyhow::Result<()> {
    let req = match c {
        TokenCmd::Create { name } => AdminRequest::TokenCreate { name },
        TokenCmd::List => AdminRequest::TokenList,
        TokenCmd::Delete { name } => AdminRequest::TokenDelete { name },
    };
    print(run(cfg, req).await?);
    Ok(())
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
    print(run(cfg, req).await?);
    Ok(())
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
    print(run(cfg, req).await?);
    Ok(())
}

pub async fn route(cfg: &Config, address: String) -> anyhow::Result<()> {
    print(run(cfg, AdminRequest::Route { address }).await?);
    Ok(())
}

pub async fn alias(cfg: &Config, c: AliasCmd) -> anyhow::Result<()> {
    let req = match c {
        AliasCmd::Add { alias, targets } => AdminRequest::AliasAdd { alias, targets },
        AliasCmd::List => AdminRequest::AliasList,
        AliasCmd::Del { alias, target } => AdminRequest::AliasDel { alias, target },
    };
    print(run(cfg, req).await?);
    Ok(())
}

/// The domains `postern dns` shows: the one given, else every local domain.
pub async fn dns_domains(cfg: &Config, domain: Option<String>) -> anyhow::Result<Vec<String>> {
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
    Ok(domains)
}
