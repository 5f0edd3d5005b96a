//! The `postern` binary: command line and the wiring of the parts.

mod admin_cmd;
mod backup_cmd;
mod check_cmd;
mod cli;
mod control;
mod init;
mod listeners;
mod open_store;
mod progress;
mod sendmail;
mod serve;
mod stats;
mod webmail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// glibc raises its mmap threshold after large frees, so the 19 MiB argon2 buffers of a burst
/// of logins would then stay in the heap of every thread that hashed. A fixed threshold keeps
/// large buffers in mmap, returned to the system when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// A failure whose explanation is already printed: exit non-zero, say nothing more.
#[derive(Debug)]
struct Quiet;

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Quiet {}

fn main() -> ExitCode {
    tune_allocator();
    // Called as sendmail or mailq (postern install-sendmail links it so): sendmail's own
    // command line, which clap's rules do not fit.
    let mut argv = std::env::args();
    let name = argv
        .next()
        .map(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let cli = match name.as_str() {
        "sendmail" => Cli {
            config: None,
            command: Command::Sendmail {
                args: argv.collect(),
            },
        },
        "mailq" => Cli {
            config: None,
            command: Command::Sendmail {
                args: vec!["-bp".into()],
            },
        },
        _ => Cli::parse(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Quiet>() => ExitCode::FAILURE,
        Err(e) => {
            // One line a person can act on.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = || load_config(cli.config.clone());
    let cfg = || config().map(|(_, cfg)| cfg);
    match cli.command {
        Command::Init(args) => init::init(args).await,
        Command::Quickstart(args) => init::quickstart(args).await,
        Command::Serve => {
            let (path, cfg) = config()?;
            serve::serve(path, cfg).await
        }
        Command::Config(cli::ConfigCmd::Check) => {
            let (path, _) = config()?;
            println!("{} is valid", path.display());
            Ok(())
        }
        Command::Domain(c) => admin_cmd::domain(&cfg()?, c).await,
        Command::User(c) => admin_cmd::user(&cfg()?, c).await,
        Command::Alias(c) => admin_cmd::alias(&cfg()?, c).await,
        Command::Forward(c) => admin_cmd::forward(&cfg()?, c).await,
        Command::Storage(c) => admin_cmd::storage(&cfg()?, c).await,
        Command::Backup(a) => backup_cmd::backup(&cfg()?, a).await,
        Command::Restore(a) => backup_cmd::restore(&cfg()?, a).await,
        Command::Token(c) => admin_cmd::token(&cfg()?, c).await,
        Command::Sieve(c) => admin_cmd::sieve(&cfg()?, c).await,
        Command::Dav(c) => admin_cmd::dav(&cfg()?, c).await,
        Command::Group(c) => admin_cmd::group(&cfg()?, c).await,
        Command::Mailbox(c) => admin_cmd::mailbox(&cfg()?, c).await,
        Command::SendAs(c) => admin_cmd::send_as(&cfg()?, c).await,
        Command::Route { address } => admin_cmd::route(&cfg()?, address).await,
        Command::Queue(c) => admin_cmd::queue(&cfg()?, c).await,
        Command::Reports(c) => admin_cmd::reports(&cfg()?, c).await,
        Command::Acme(c) => admin_cmd::acme(&cfg()?, c).await,
        Command::Stats { range, step, json } => admin_cmd::stats(&cfg()?, &range, step, json).await,
        Command::Sendmail { args } => sendmail::run(&cfg()?, &args).await,
        Command::InstallSendmail { sbin, bin } => {
            let (path, _) = config()?;
            sendmail::install(&path, &sbin, &bin)
        }
        Command::Trace(t) => admin_cmd::trace(&cfg()?, t).await,
        Command::Doctor { json } => {
            let report = match config() {
                Ok((path, cfg)) => {
                    let access = admin_cmd::FromCli(&cfg);
                    postern_doctor::server::run_with_config(&path, &cfg, &access).await
                }
                Err(e) => postern_doctor::server::invalid_config(&format!("{e:#}")),
            };
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.failed() {
                return Err(Quiet.into());
            }
            Ok(())
        }
        Command::Check(args) => {
            // This server's config, when there is one: it knows what is shared with the
            // account. Checking another server needs none.
            if !check_cmd::run(args, cfg().ok()).await? {
                return Err(Quiet.into());
            }
            Ok(())
        }
        Command::Dns { domain, check } => admin_cmd::dns(&cfg()?, domain, check).await,
        Command::Dkim(cli::DkimCmd::Rotate { domain, algorithm }) => {
            init::dkim_rotate(&cfg()?, &domain, &algorithm).await
        }
    }
}

/// `-c FILE`, else ./postern.toml, else $POSTERN_CONFIG, else ./postern-data/postern.toml
/// (where `postern init` puts it by default).
pub fn find_config(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let local = PathBuf::from("postern.toml");
    if local.exists() {
        return Ok(local);
    }
    if let Some(p) = std::env::var_os("POSTERN_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let init_default = PathBuf::from("postern-data/postern.toml");
    if init_default.exists() {
        return Ok(init_default);
    }
    // Where install-sendmail points programs that run postern as sendmail from anywhere.
    let system = PathBuf::from(sendmail::SYSTEM_CONFIG);
    if system.exists() {
        return Ok(system);
    }
    anyhow::bail!(
        "no config file: pass -c FILE, set POSTERN_CONFIG, or create one with: postern init --domain example.com"
    )
}

fn load_config(explicit: Option<PathBuf>) -> anyhow::Result<(PathBuf, postern_config::Config)> {
    let path = find_config(explicit)?;
    let cfg = postern_config::Config::load(&path)?;
    Ok((path, cfg))
}
