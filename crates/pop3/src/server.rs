//! The POP3 listener: drives [`Pop3Core`] over a socket, with the maildrop lock, streaming
//! RETR and the durable UPDATE.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::{AuthOutcome, Directory};
use postern_net::{Admission, ConnLimits, Io, LineError, Shutdown, TlsSetup, TlsStore, Tracker};
use postern_store::{
    FlagOp, Flags, FlagsUpdate, INBOX, MailboxId, MaildropLock, MessageEntry, SharedStore,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use crate::proto::{Action, CoreConfig, DotStuffer, DropMessage, Pop3Core, State};

const CHUNK: u64 = 64 << 10;

pub struct Pop3Server {
    pub config: Arc<Config>,
    pub implicit_tls: bool,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub shutdown: Shutdown,
}

/// The logged-in user's maildrop: held locked for the session.
struct Maildrop {
    mailbox: MailboxId,
    entries: Vec<MessageEntry>,
    lock: MaildropLock,
}

enum Flow {
    Continue,
    Close,
}

/// UIDL: unique per mailbox and stable forever (the UID and the mailbox's UIDVALIDITY, which
/// IMAP sees too).
pub fn uidl(uid: u32, uidvalidity: u32) -> String {
    format!("{uid:08x}{uidvalidity:08x}")
}

impl Pop3Server {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        let c = &self.config.pop3;
        let limits = ConnLimits {
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            max_rate_per_ip: 0,
            protocol: "pop3",
        };
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            self.shutdown.clone(),
            move |stream, peer, adm| {
                let me = me.clone();
                let span =
                    tracing::info_span!("pop3", sid = %postern_net::session_id(), peer = %peer);
                async move { me.session(stream, peer, adm).await }.instrument(span)
            },
        )
        .await;
    }

    async fn session(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, adm: Admission) {
        let ip = postern_net::listener::canonical_ip(peer.ip());
        let tls = TlsSetup {
            store: self.tls.as_deref(),
            implicit: self.implicit_tls,
            handshake_timeout: self.config.tls.handshake_timeout.duration(),
        };
        let refusal =
            |why: &str| format!("-ERR [SYS/TEMP] {why}; try again later\r\n").into_bytes();
        let Some(mut io) = postern_net::accept(stream, adm, tls, refusal).await else {
            return;
        };
        let c = &self.config;
        let mut core = Pop3Core::new(
            CoreConfig {
                tls_available: self.tls.is_some(),
                allow_plaintext: c.auth.allow_plaintext,
                max_errors: c.pop3.max_errors,
            },
            io.is_tls(),
        );
        io.write(&core.greeting());
        info!(tls = io.is_tls(), "connected");
        let mut drop: Option<Maildrop> = None;
        let mut shutdown = self.shutdown.clone();
        let idle = c.pop3.idle_timeout.duration();
        io.set_write_timeout(c.pop3.write_timeout.duration());
        let login_by = Instant::now().checked_add(c.pop3.login_timeout.duration());
        loop {
            if io.should_flush()
                && let Err(e) = io.flush().await
            {
                info!(error = %e, "output not delivered; disconnecting");
                break;
            }
            let logged_in = core.state() != State::Authorization;
            let timeout = if logged_in {
                idle
            } else {
                postern_net::time_left(login_by, idle)
            };
            if shutdown.is_triggered() {
                let _ = io
                    .send(
                        b"-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n",
                        Duration::from_secs(5),
                    )
                    .await;
                break;
            }
            let read = tokio::select! {
                biased;
                r = io.read_line(c.pop3.max_line, timeout) => r,
                _ = shutdown.wait() => {
                    let _ = io.send(b"-ERR [SYS/TEMP] Server shutting down; nothing was deleted\r\n", Duration::from_secs(5)).await;
                    break;
                }
            };
            let action = match read {
                Ok(line) => core.command(&line),
                Err(LineError::TooLong) => core.line_too_long(),
                Err(LineError::Timeout) if !logged_in => {
                    let msg = format!(
                        "-ERR No login within {} seconds of connecting; closing connection\r\n",
                        c.pop3.login_timeout.0
                    );
                    let _ = io.send(msg.as_bytes(), Duration::from_secs(5)).await;
                    info!("login timeout");
                    break;
                }
                Err(LineError::Timeout) => {
                    let _ = io
                        .send(
                            b"-ERR Idle for too long; closing connection (nothing was deleted)\r\n",
                            Duration::from_secs(5),
                        )
                        .await;
                    info!("idle timeout");
                    break;
                }
                Err(_) => break,
            };
            match self.act(action, &mut core, &mut io, ip, &mut drop).await {
                Flow::Continue => {}
                Flow::Close => break,
            }
        }
        io.shutdown().await;
        info!("disconnected");
    }

    async fn act(
        &self,
        action: Action,
        core: &mut Pop3Core,
        io: &mut Io,
        ip: IpAddr,
        drop: &mut Option<Maildrop>,
    ) -> Flow {
        match action {
            Action::Send(b) => io.write(&b),
            Action::Close(b) => {
                io.write(&b);
                let _ = io.flush().await;
                return Flow::Close;
            }
            Action::SaslContinue => io.write(b"+ \r\n"),
            Action::StartTls => {
                let Some(tls) = &self.tls else {
                    return Flow::Close;
                };
                io.write(b"+OK Begin TLS negotiation\r\n");
                if io
                    .upgrade(tls, self.config.tls.handshake_timeout.duration())
                    .await
                    .is_err()
                {
                    return Flow::Close;
                }
                core.tls_started();
            }
            Action::Authenticate { user, password } => {
                let a = self.login(core, &user, &password, ip, drop).await;
                return self.act_simple(a, io).await;
            }
            Action::Retr { index } => {
                let Some(d) = drop else { return Flow::Close };
                let e = d.entries[index].clone();
                return self
                    .send_message(io, &e, None, core.message(index).size)
                    .await;
            }
            Action::Top { index, lines } => {
                let Some(d) = drop else { return Flow::Close };
                let e = d.entries[index].clone();
                return self.send_message(io, &e, Some(lines), 0).await;
            }
            Action::Update { delete, seen } => {
                let Some(d) = drop.take() else {
                    return Flow::Close;
                };
                if !d.lock.held() {
                    // Another session may own the maildrop now: change nothing.
                    warn!("maildrop lock lost during the session; nothing deleted");
                    io.write(b"-ERR [IN-USE] This session lost its lock on the maildrop; nothing was deleted, log in again\r\n");
                    let _ = io.flush().await;
                    return Flow::Close;
                }
                let result = async {
                    if !seen.is_empty() {
                        self.store
                            .flags_update(FlagsUpdate {
                                mailbox: d.mailbox,
                                uids: seen,
                                op: FlagOp::Add,
                                flags: Flags {
                                    bits: Flags::SEEN,
                                    keywords: vec![],
                                },
                                unchanged_since: None,
                                reader: None,
                            })
                            .await?;
                    }
                    self.store.expunge(d.mailbox, delete.clone()).await
                }
                .await;
                // Released before the goodbye, so the client may reconnect at once.
                std::mem::drop(d);
                let reply = match result {
                    Ok(_) => {
                        info!(deleted = delete.len(), "update done");
                        format!(
                            "+OK Postern POP3 server signing off ({} messages deleted)\r\n",
                            delete.len()
                        )
                    }
                    Err(e) => {
                        warn!(error = %e, "update failed");
                        "-ERR [SYS/TEMP] Could not delete the messages; they are still on the server\r\n".to_string()
                    }
                };
                io.write(reply.as_bytes());
                let _ = io.flush().await;
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn act_simple(&self, action: Action, io: &mut Io) -> Flow {
        match action {
            Action::Send(b) => {
                io.write(&b);
                Flow::Continue
            }
            Action::Close(b) => {
                io.write(&b);
                let _ = io.flush().await;
                Flow::Close
            }
            _ => Flow::Close,
        }
    }

    async fn login(
        &self,
        core: &mut Pop3Core,
        user: &str,
        password: &str,
        ip: IpAddr,
        drop: &mut Option<Maildrop>,
    ) -> Action {
        let account = match self
            .directory
            .authenticate(user, password, ip, "pop3")
            .await
        {
            Ok(AuthOutcome::Ok(a)) => a,
            Ok(AuthOutcome::Failed) => {
                postern_net::metrics::METRICS.auth_failures.add("pop3", 1);
                tokio::time::sleep(self.directory.failure_delay()).await;
                return core.login_failed(
                    "[AUTH] Wrong user name or password: the user name is your full email address",
                );
            }
            Ok(AuthOutcome::Disabled) => {
                tokio::time::sleep(self.directory.failure_delay()).await;
                return core
                    .login_failed("[AUTH] This account is disabled; ask your mail administrator");
            }
            Ok(AuthOutcome::Shared(why)) => {
                return core.login_failed(&format!("[AUTH] {why}"));
            }
            Ok(AuthOutcome::LockedOut(w)) => {
                return core.login_failed(&format!(
                    "[SYS/TEMP] Too many failed logins; try again in {} minute(s)",
                    w.as_secs().div_ceil(60)
                ));
            }
            Err(e) => {
                warn!(error = %e, "login lookup failed");
                return core.login_failed("[SYS/TEMP] Temporary server error; try again later");
            }
        };
        let lock = match self.store.lock_maildrop(account.id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                info!(user = %account.address, "maildrop in use");
                return core.login_failed(
                    "[IN-USE] Your mailbox is open in another POP3 session: close the other mail program, or wait for it to finish",
                );
            }
            Err(e) => {
                warn!(error = %e, "maildrop lock failed");
                return core.login_failed("[SYS/TEMP] Temporary server error; try again later");
            }
        };
        let loaded = async {
            let inbox = self
                .store
                .mailbox_by_name(account.id, INBOX)
                .await?
                .ok_or_else(|| postern_store::StoreError::NotFound("INBOX".into()))?;
            let entries = self.store.message_list(inbox.id).await?;
            Ok::<_, postern_store::StoreError>((inbox, entries))
        }
        .await;
        let (inbox, entries) = match loaded {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot load maildrop");
                return core.login_failed(
                    "[SYS/TEMP] Cannot open your mailbox right now; try again later",
                );
            }
        };
        let list = entries
            .iter()
            .map(|e| DropMessage {
                uid: e.uid,
                size: e.size,
                uidl: uidl(e.uid, inbox.uidvalidity),
            })
            .collect();
        info!(user = %account.address, messages = entries.len(), "logged in");
        *drop = Some(Maildrop {
            mailbox: inbox.id,
            entries,
            lock,
        });
        core.logged_in(list)
    }

    /// Streams a message (or its header and `top` body lines), dot-stuffed.
    async fn send_message(
        &self,
        io: &mut Io,
        e: &MessageEntry,
        top: Option<u64>,
        size: u64,
    ) -> Flow {
        let limit = self.config.pop3.write_timeout.duration();
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(CHUNK as usize + 1024);
        match top {
            None => out.extend_from_slice(format!("+OK {size} octets\r\n").as_bytes()),
            Some(_) => out.extend_from_slice(b"+OK top of message follows\r\n"),
        }
        // For TOP: state of the cut (in header; blank line seen; body lines left).
        let mut in_header = true;
        let mut prev_lf = true;
        let mut lines_left = top.unwrap_or(0);
        let mut offset = 0;
        'read: while offset < e.size {
            let chunk = match self.store.blob_read(e.blob, offset, CHUNK).await {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => break,
                Err(err) => {
                    warn!(error = %err, uid = e.uid, "cannot read message");
                    // The reply has started: the connection cannot be saved.
                    return Flow::Close;
                }
            };
            offset += chunk.len() as u64;
            let mut cut = chunk.len();
            let mut done = false;
            if top.is_some() {
                for (i, &b) in chunk.iter().enumerate() {
                    if b != b'\n' {
                        if b != b'\r' {
                            prev_lf = false;
                        }
                        continue;
                    }
                    if in_header {
                        if prev_lf {
                            in_header = false;
                            if lines_left == 0 {
                                cut = i + 1;
                                done = true;
                                break;
                            }
                        }
                    } else {
                        lines_left -= 1;
                        if lines_left == 0 {
                            cut = i + 1;
                            done = true;
                            break;
                        }
                    }
                    prev_lf = true;
                }
            }
            stuffer.push(&chunk[..cut], &mut out);
            if done {
                break 'read;
            }
            if out.len() >= CHUNK as usize
                && io.send(&std::mem::take(&mut out), limit).await.is_err()
            {
                return Flow::Close;
            }
        }
        stuffer.finish(&mut out);
        io.write(&out);
        Flow::Continue
    }
}
