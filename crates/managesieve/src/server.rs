//! The ManageSieve listener: assembles commands with their literals, checks logins, and runs
//! script operations against the store, compiling every script before it is kept.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::{AuthOutcome, Directory};
use postern_net::{
    Admission, ConnLimits, Io, LineError, Pace, Shutdown, TlsSetup, TlsStore, Tracker,
};
use postern_sieve::Engine;
use postern_store::{Account, SharedStore, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use crate::proto::{self, Action, Core, CoreConfig, Op, State, no, ok, response};

/// Longest command line, literals apart.
const MAX_LINE: usize = 8192;
/// Bytes per second a literal must at least arrive at.
const MIN_LITERAL_RATE: u64 = 500;

pub struct ManageSieveServer {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub sieve: Arc<Engine>,
    pub shutdown: Shutdown,
}

enum Flow {
    Continue,
    Close,
}

enum Read {
    Command(Vec<u8>),
    /// A literal past the largest script, read and thrown away.
    TooBig(u64),
}

impl ManageSieveServer {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        let c = &self.config.sieve;
        let limits = ConnLimits {
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            max_rate_per_ip: 0,
            protocol: "managesieve",
        };
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            self.shutdown.clone(),
            move |stream, peer, adm| {
                let me = me.clone();
                let span = tracing::info_span!("managesieve", sid = %postern_net::session_id(), peer = %peer);
                async move { me.session(stream, peer, adm).await }.instrument(span)
            },
        )
        .await;
    }

    async fn session(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, adm: Admission) {
        let ip = postern_net::listener::canonical_ip(peer.ip());
        let tls = TlsSetup {
            store: self.tls.as_deref(),
            implicit: false,
            handshake_timeout: self.config.tls.handshake_timeout.duration(),
        };
        let refusal =
            |why: &str| response("BYE", Some("TRYLATER"), &format!("{why}; try again later"));
        let Some(mut io) = postern_net::accept(stream, adm, tls, refusal).await else {
            return;
        };
        let c = &self.config;
        let mut core = Core::new(
            CoreConfig {
                tls_available: self.tls.is_some(),
                allow_plaintext: c.auth.allow_plaintext,
                max_errors: c.sieve.max_errors,
                extensions: self.sieve.extensions(),
                max_redirects: c.sieve.max_redirects,
            },
            false,
        );
        io.write(&core.capabilities());
        info!("connected");
        let idle = c.sieve.idle_timeout.duration();
        io.set_write_timeout(c.sieve.write_timeout.duration());
        let login_by = Instant::now().checked_add(c.sieve.login_timeout.duration());
        let mut account: Option<Account> = None;
        let mut shutdown = self.shutdown.clone();
        loop {
            if let Err(e) = io.flush().await {
                info!(error = %e, "output not delivered; disconnecting");
                break;
            }
            let logged_in = core.state() == State::Authenticated;
            let timeout = if logged_in {
                idle
            } else {
                postern_net::time_left(login_by, idle)
            };
            let read = tokio::select! {
                biased;
                r = self.read_command(&mut io, timeout) => r,
                _ = shutdown.wait() => {
                    let _ = io.send(&response("BYE", None, "Server shutting down"), Duration::from_secs(5)).await;
                    break;
                }
            };
            let action = match read {
                Ok(Read::Command(buf)) => core.command(&buf),
                Ok(Read::TooBig(n)) => Action::Reply(no(
                    Some("QUOTA/MAXSIZE"),
                    &format!(
                        "{n} bytes is more than the largest script this server keeps ({} bytes)",
                        c.sieve.max_script_size.0
                    ),
                )),
                Err(LineError::TooLong) => core.line_too_long(),
                Err(LineError::Timeout) => {
                    let why = if logged_in {
                        "Idle for too long; closing connection"
                    } else {
                        "No login in time; closing connection"
                    };
                    let _ = io
                        .send(&response("BYE", None, why), Duration::from_secs(5))
                        .await;
                    break;
                }
                Err(_) => break,
            };
            match self.act(action, &mut core, &mut io, ip, &mut account).await {
                Flow::Continue => {}
                Flow::Close => break,
            }
        }
        io.shutdown().await;
        info!("disconnected");
    }

    /// A command line and the literals it announces.
    async fn read_command(&self, io: &mut Io, timeout: Duration) -> Result<Read, LineError> {
        let max_script = self.config.sieve.max_script_size.0;
        let mut buf = Vec::new();
        let mut too_big = None;
        let mut pace = Pace::new(timeout, MIN_LITERAL_RATE);
        loop {
            let line = io.read_line(MAX_LINE, pace.limit(timeout)).await?;
            pace.add(line.len());
            if too_big.is_none() {
                buf.extend_from_slice(&line);
                buf.extend_from_slice(b"\r\n");
            }
            // Lines chained by literals count too: a whole command stays bounded.
            if buf.len() as u64 > max_script + 2 * MAX_LINE as u64 {
                return Err(LineError::TooLong);
            }
            let Some(n) = proto::literal_len(&line) else {
                break;
            };
            if buf.len() as u64 + n > max_script + MAX_LINE as u64 {
                // Read and drop it, so the next command is where the client thinks it is;
                // one too big to bother with ends the session.
                if n > max_script.saturating_mul(16).max(16 << 20) {
                    return Err(LineError::TooLong);
                }
                let mut left = n;
                while left > 0 {
                    let k = io
                        .peek_chunk(left.min(64 << 10) as usize, pace.limit(timeout))
                        .await?
                        .len();
                    io.consume(k);
                    pace.add(k);
                    left -= k as u64;
                }
                too_big = Some(n);
            } else {
                buf.extend(io.read_exact(n as usize, timeout, &mut pace).await?);
            }
        }
        Ok(match too_big {
            Some(n) => Read::TooBig(n),
            None => Read::Command(buf),
        })
    }

    async fn act(
        &self,
        action: Action,
        core: &mut Core,
        io: &mut Io,
        ip: IpAddr,
        account: &mut Option<Account>,
    ) -> Flow {
        match action {
            Action::Reply(b) => {
                if core.state() != State::Authenticated {
                    *account = None;
                }
                io.write(&b);
            }
            Action::Close(b) => {
                io.write(&b);
                let _ = io.flush().await;
                return Flow::Close;
            }
            Action::StartTls => {
                let Some(tls) = &self.tls else {
                    return Flow::Close;
                };
                io.write(&ok("Begin TLS negotiation now"));
                let limit = self.config.tls.handshake_timeout.duration();
                if io.upgrade(tls, limit).await.is_err() {
                    return Flow::Close;
                }
                core.tls_started();
                io.write(&core.capabilities());
            }
            Action::Login { user, password } => {
                let (ok, why) = match self
                    .directory
                    .authenticate(&user, &password, ip, "managesieve")
                    .await
                {
                    Ok(AuthOutcome::Ok(a)) => {
                        info!(user = %a.address, "logged in");
                        *account = Some(a);
                        (true, String::new())
                    }
                    Ok(AuthOutcome::Failed) => {
                        postern_net::metrics::METRICS
                            .auth_failures
                            .add("managesieve", 1);
                        tokio::time::sleep(self.directory.failure_delay()).await;
                        (
                            false,
                            "Wrong user name or password: the user name is your full email address"
                                .to_string(),
                        )
                    }
                    Ok(AuthOutcome::Disabled) => {
                        tokio::time::sleep(self.directory.failure_delay()).await;
                        (
                            false,
                            "This account is disabled; ask your mail administrator".into(),
                        )
                    }
                    Ok(AuthOutcome::Shared(why)) => (false, why),
                    Ok(AuthOutcome::LockedOut(w)) => (
                        false,
                        format!(
                            "Too many failed logins; try again in {} minute(s)",
                            w.as_secs().div_ceil(60)
                        ),
                    ),
                    Err(e) => {
                        warn!(error = %e, "login lookup failed");
                        (false, "Temporary server error; try again later".into())
                    }
                };
                let temporary = why.starts_with("Too many") || why.starts_with("Temporary");
                io.write(&core.login_done(ok, &why, temporary));
            }
            Action::Op(op) => {
                let Some(a) = account.as_ref() else {
                    io.write(&no(None, "Log in first"));
                    return Flow::Continue;
                };
                let reply = match self.op(a, op).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "script operation failed");
                        no(Some("TRYLATER"), "Temporary server error; try again later")
                    }
                };
                io.write(&reply);
            }
        }
        Flow::Continue
    }

    async fn op(&self, a: &Account, op: Op) -> Result<Vec<u8>, StoreError> {
        let s = &self.store;
        Ok(match op {
            Op::List => {
                let l: Vec<(String, bool)> = s
                    .sieve_list(a.id)
                    .await?
                    .into_iter()
                    .map(|x| (x.name, x.active))
                    .collect();
                proto::list_reply(&l)
            }
            Op::Get { name } => match s.sieve_get(a.id, &name).await? {
                Some(src) => proto::script_reply(&src),
                None => no(Some("NONEXISTENT"), &format!("There is no script {name}")),
            },
            Op::HaveSpace { name, size } => match self.room_for(a, &name, size).await? {
                None => ok("Putscript would succeed"),
                Some(r) => r,
            },
            Op::Put { name, script } => {
                if let Some(r) = self.room_for(a, &name, script.len() as u64).await? {
                    return Ok(r);
                }
                let Ok(src) = String::from_utf8(script) else {
                    return Ok(no(None, "Scripts are UTF-8 text"));
                };
                match self.sieve.compile(&src) {
                    Err(e) => no(None, &format!("Script not kept: {e}")),
                    Ok(_) => {
                        s.sieve_put(a.id, &name, &src).await?;
                        info!(user = %a.address, script = %name, "script stored");
                        ok("Stored")
                    }
                }
            }
            Op::Check { script } => match String::from_utf8(script) {
                Err(_) => no(None, "Scripts are UTF-8 text"),
                Ok(src) => match self.sieve.compile(&src) {
                    Ok(_) => ok("Script is valid"),
                    Err(e) => no(None, &e),
                },
            },
            Op::SetActive { name } => {
                let target = (!name.is_empty()).then_some(name.as_str());
                match s.sieve_activate(a.id, target).await {
                    Ok(()) => {
                        info!(user = %a.address, script = %name, "active script set");
                        ok(if name.is_empty() {
                            "No script is active"
                        } else {
                            "Active"
                        })
                    }
                    Err(StoreError::NotFound(_)) => {
                        no(Some("NONEXISTENT"), &format!("There is no script {name}"))
                    }
                    Err(e) => return Err(e),
                }
            }
            Op::Delete { name } => match s.sieve_delete(a.id, &name).await {
                Ok(()) => ok("Deleted"),
                Err(StoreError::NotFound(_)) => {
                    no(Some("NONEXISTENT"), &format!("There is no script {name}"))
                }
                Err(StoreError::Invalid(_)) => no(
                    Some("ACTIVE"),
                    "That script is active: make another one active (or none) first",
                ),
                Err(e) => return Err(e),
            },
            Op::Rename { from, to } => match s.sieve_rename(a.id, &from, &to).await {
                Ok(()) => ok("Renamed"),
                Err(StoreError::NotFound(_)) => {
                    no(Some("NONEXISTENT"), &format!("There is no script {from}"))
                }
                Err(StoreError::AlreadyExists(_)) => no(
                    Some("ALREADYEXISTS"),
                    &format!("A script {to} exists already"),
                ),
                Err(e) => return Err(e),
            },
        })
    }

    /// `None` when a script of this size fits; else the NO to send.
    async fn room_for(
        &self,
        a: &Account,
        name: &str,
        size: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let c = &self.config.sieve;
        if size > c.max_script_size.0 {
            return Ok(Some(no(
                Some("QUOTA/MAXSIZE"),
                &format!(
                    "Scripts may be at most {} bytes on this server",
                    c.max_script_size.0
                ),
            )));
        }
        let l = self.store.sieve_list(a.id).await?;
        if !l.iter().any(|x| x.name == name) && l.len() >= c.max_scripts {
            return Ok(Some(no(
                Some("QUOTA/MAXSCRIPTS"),
                &format!(
                    "You have {} scripts, the most this server keeps; delete one first",
                    l.len()
                ),
            )));
        }
        Ok(None)
    }
}
