//! Admin subcommands: through the running server's control socket when it runs, else on the
//! store directly. Either way the same operation runs.

use std::io::BufRead;

use anyhow::{Context, bail};
use postern_config::Config;
use postern_directory::admin::{AdminReply, AdminRequest};
use postern_directory::{Directory, DirectoryConfig};
use postern_store::StoreError;

use crate::cli::{
    AliasCmd, DomainCmd, ForwardCmd, GroupCmd, PasswordArgs, QueueCmd, SieveCmd, TokenCmd, UserCmd,
};
use crate::control;

pub fn directory_config(cfg: &Config) -> DirectoryConfig {
    DirectoryConfig {
        min_password_length: cfg.auth.min_password_length,
        max_failures: cfg.auth.max_failures,
        failure_window: cfg.auth.failure_window.duration(),
        lockout: cfg.auth.lockout.duration(),
        max_lockout: cfg.auth.max_lockout.duration(),
        failure_delay: std::time::Duration::from_millis(cfg.auth.failure_delay_ms),
        subaddress_separator: cfg.routing.separator(),
        srs_secret: srs_secret(&cfg.data_dir),
        sieve: postern_sieve::Limits::from(&cfg.sieve),
        max_scripts: cfg.sieve.max_scripts,
        hostname: cfg.hostname.clone(),
    }
}

/// The Sender Rewriting Scheme key, made on first use and kept in the data directory (it
/// must outlive restarts: bounces come back days later).
fn srs_secret(data_dir: &std::path::Path) -> Vec<u8> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("srs.key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() >= 32
    {
        return k;
    }
    if !data_dir.is_dir() {
        return Vec::new();
    }
    let mut k = vec![0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k).is_err() {
        return Vec::new();
    }
    // Written whole under another name, then linked into place: never seen half-written,
    // and if another process got there first, theirs is used.
    let tmp = data_dir.join(format!("srs.key.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&k)?;
            f.sync_all()
        })
        .and_then(|()| {
            // A short file left by an older, interrupted write is replaced.
            if std::fs::metadata(&path).is_ok_and(|m| m.len() < 32) {
                let _ = std::fs::remove_file(&path);
            }
            std::fs::hard_link(&tmp, &path)
        });
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => k,
        Err(_) => std::fs::read(&path)
            .ok()
            .filter(|k| k.len() >= 32)
            .unwrap_or_default(),
    }
}

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
    let dir = Directory::new(store.clone(), directory_config(cfg));
    let r = dir.admin(req).await;
    store.close().await?;
    Ok(r?)
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

/// Maildir import and export: in the running server (through its control socket), else with
/// the store opened here.
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
    if let Some(r) = control::request(&cfg.data_dir, &req).await? {
        print(r?);
        return Ok(());
    }
    let store = crate::open_store::open(cfg).await?.store;
    let r = crate::maildir::run(&store, &cfg.hostname, req).await;
    store.close().await?;
    print(r?);
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
        Some(spec) => crate::copy_store::open_other(cfg, spec).await?,
        None => unreachable!("export or import names another store"),
    };
    let (from, to) = if source.is_some() {
        (&other, &ours)
    } else {
        (&ours, &other)
    };
    let r = crate::copy_store::copy(from, to).await;
    ours.close().await?;
    other.close().await?;
    let (a, b) = r?;
    let (table, same) = crate::copy_store::report(&a, &b);
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
