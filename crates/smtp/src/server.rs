//! The SMTP listener: drives [`SmtpCore`] over a socket, does the lookups and the storage.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::{
    AuthOutcome, Destination, Directory, Routed, domain_of, normalize_address, sasl,
};
use postern_ingest::{Arrival, Client, Incoming, Ingest, MessageSink, Outcome, Recipient};
use postern_net::{
    Admission, ConnLimits, Io, LineError, Pace, Shutdown, TlsSetup, TlsStore, Tracker,
};
use postern_store::{DsnRet, SharedStore, TraceEvent};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, info, warn};

use crate::content::{self, temp_failure};
use crate::proto::{
    Action, CoreConfig, DataDecoder, MailFrom, RcptTo, Reply, Ret, Role, Sink, SmtpCore,
};

/// RFC 4954 4: an AUTH line (with its initial response) may be up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;

#[derive(Clone)]
pub struct SmtpSettings {
    pub role: Role,
    pub implicit_tls: bool,
}

pub struct SmtpServer {
    pub config: Arc<Config>,
    /// Clients that waited for the banner once are trusted to wait for a day (like Postfix's
    /// postscreen cache), so the pregreet pause costs each client only once.
    pub pregreet_passed: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
    pub settings: SmtpSettings,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub spool_dir: PathBuf,
    pub shutdown: Shutdown,
    /// SPF, DKIM, DMARC, ARC and iprev for mail from other servers (`inbound.check`), and
    /// the DNS blocklists.
    pub trust: Option<Arc<postern_trust::Checker>>,
    /// Hourly sending limits and greylisting, shared by every listener.
    pub abuse: Arc<crate::abuse::Abuse>,
    /// Where complete messages go.
    pub ingest: Arc<Ingest>,
}

type Core = SmtpCore<Recipient>;

/// The message sink writes what the DATA decoder gives it.
struct SinkOf<'a>(&'a mut MessageSink);

impl Sink for SinkOf<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.put(bytes)
    }
}

enum Flow {
    Continue,
    Close,
}

/// An incoming message between its first and last byte.
struct Receiving {
    sink: MessageSink,
    trace_id: String,
    bare: content::BareScan,
    /// BDAT content normalized to CRLF ends with a CR: the next chunk may begin with its LF.
    cr: bool,
}

impl SmtpServer {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        let c = &self.config.smtp;
        let limits = ConnLimits {
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            max_rate_per_ip: c.max_connection_rate_per_ip,
            protocol: "smtp",
        };
        let shutdown = self.shutdown.clone();
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            shutdown,
            move |stream, peer, adm| {
                let me = me.clone();
                let sid = postern_net::session_id();
                let span = tracing::info_span!("smtp", sid = %sid, peer = %peer);
                async move { me.session(stream, peer, adm).await }.instrument(span)
            },
        )
        .await;
    }

    fn pregreet_trusted(&self, ip: IpAddr) -> bool {
        const TTL: Duration = Duration::from_secs(86400);
        self.pregreet_passed
            .lock()
            .unwrap()
            .get(&ip)
            .is_some_and(|t| t.elapsed() < TTL)
    }

    fn pregreet_pass(&self, ip: IpAddr) {
        let mut m = self.pregreet_passed.lock().unwrap();
        if m.len() >= 100_000 {
            m.clear();
        }
        m.insert(ip, std::time::Instant::now());
    }

    fn core_config(&self) -> CoreConfig {
        let c = &self.config;
        CoreConfig {
            role: self.settings.role,
            hostname: c.hostname.clone(),
            max_size: c.smtp.max_message_size.0,
            max_recipients: c.smtp.max_recipients,
            max_errors: c.smtp.max_errors,
            tls_available: self.tls.is_some(),
            allow_plaintext_auth: c.auth.allow_plaintext,
        }
    }

    async fn session(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, adm: Admission) {
        let ip = postern_net::listener::canonical_ip(peer.ip());
        let host = self.config.hostname.clone();
        let tls = TlsSetup {
            store: self.tls.as_deref(),
            implicit: self.settings.implicit_tls,
            handshake_timeout: self.config.tls.handshake_timeout.duration(),
        };
        let refusal = |why: &str| {
            Reply::new(421, "4.7.0", format!("{host} {why}; try again later")).to_bytes()
        };
        let Some(mut io) = postern_net::accept(stream, adm, tls, refusal).await else {
            return;
        };
        io.set_write_timeout(self.config.smtp.timeout_command.duration());
        // A client that talks before our banner is not a mail server: RFC 5321 4.3.1 says
        // it must wait. Mostly spambots.
        let wait = self.config.smtp.pregreet_wait_ms;
        if self.settings.role == Role::Mx && wait > 0 && !self.pregreet_trusted(ip) {
            match io.wait_readable(Duration::from_millis(wait)).await {
                Ok(()) => {
                    let r = Reply::new(
                        554,
                        "5.5.0",
                        format!("{host} Talking before the greeting is not allowed; goodbye"),
                    );
                    let _ = io.send(&r.to_bytes(), Duration::from_secs(5)).await;
                    info!("client talked before the greeting; dropped");
                    return;
                }
                Err(LineError::Timeout) => self.pregreet_pass(ip),
                Err(_) => return,
            }
        }
        let mut core: Core = SmtpCore::new(self.core_config(), io.is_tls());
        io.write(&core.greeting().to_bytes());
        info!(tls = io.is_tls(), "connected");
        let mut receiving: Option<Receiving> = None;
        // Why this client's mail is refused (a blocked sender, a blocklisted address): said at
        // RCPT to every recipient but postmaster and abuse, which take mail from anyone.
        let mut refused: Option<Reply> = None;
        let mut shutdown = self.shutdown.clone();
        loop {
            if io.should_flush()
                && let Err(e) = io.flush().await
            {
                info!(error = %e, "output not delivered; disconnecting");
                break;
            }
            // Once shutdown begins, no new command is served (a message under way is finished).
            if receiving.is_none() && shutdown.is_triggered() {
                let r = Reply::new(
                    421,
                    "4.3.2",
                    format!("{host} Service shutting down; try again later"),
                );
                let _ = io.send(&r.to_bytes(), Duration::from_secs(5)).await;
                break;
            }
            let read = tokio::select! {
                biased;
                r = io.read_line(MAX_AUTH_LINE, self.config.smtp.timeout_command.duration()) => r,
                _ = shutdown.wait(), if receiving.is_none() => {
                    let r = Reply::new(421, "4.3.2", format!("{host} Service shutting down; try again later"));
                    let _ = io.send(&r.to_bytes(), Duration::from_secs(5)).await;
                    break;
                }
            };
            let action = match read {
                Ok(line) => {
                    let is_auth = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"AUTH");
                    if line.len() + 2 > self.config.smtp.max_command_line && !is_auth {
                        core.line_too_long()
                    } else {
                        core.command(&line)
                    }
                }
                Err(LineError::TooLong) => core.line_too_long(),
                Err(LineError::Timeout) => {
                    let r = Reply::new(
                        421,
                        "4.4.2",
                        format!("{host} Timeout waiting for a command; closing connection"),
                    );
                    let _ = io.send(&r.to_bytes(), Duration::from_secs(5)).await;
                    info!("command timeout");
                    break;
                }
                Err(_) => break,
            };
            match self
                .act(action, &mut core, &mut io, ip, &mut receiving, &mut refused)
                .await
            {
                Flow::Continue => {}
                Flow::Close => break,
            }
        }
        io.shutdown().await;
        info!("disconnected");
    }

    /// Performs one action of the core, feeding results back until there is a reply.
    async fn act(
        &self,
        mut action: Action,
        core: &mut Core,
        io: &mut Io,
        ip: IpAddr,
        receiving: &mut Option<Receiving>,
        refused: &mut Option<Reply>,
    ) -> Flow {
        loop {
            action = match action {
                Action::Reply(r) => {
                    io.write(&r.to_bytes());
                    return Flow::Continue;
                }
                Action::Close(r) => {
                    io.write(&r.to_bytes());
                    let _ = io.flush().await;
                    return Flow::Close;
                }
                Action::RefuseData(r) => {
                    io.write(&r.to_bytes());
                    if io.has_buffered() {
                        let r = Reply::new(
                            421,
                            "4.5.0",
                            format!(
                                "{} Message content sent before the reply to DATA (RFC 2920); closing connection",
                                self.config.hostname
                            ),
                        );
                        io.write(&r.to_bytes());
                        let _ = io.flush().await;
                        warn!("content pipelined after a refused DATA; connection closed");
                        return Flow::Close;
                    }
                    return Flow::Continue;
                }
                Action::Quit => {
                    let r = Reply::new(
                        221,
                        "2.0.0",
                        format!("{} closing connection", self.config.hostname),
                    );
                    io.write(&r.to_bytes());
                    let _ = io.flush().await;
                    return Flow::Close;
                }
                Action::CheckSender(m) => {
                    let mut r = self.check_sender(core, &m).await;
                    if r.is_ok() {
                        r = self.sender_limits(core, ip).await;
                    }
                    *refused = None;
                    // Mail from other servers that the sender checks refuse is refused at
                    // RCPT instead, so postmaster and abuse still take it (RFC 5321 4.5.1).
                    if core.user().is_none()
                        && self.settings.role == Role::Mx
                        && let Err(reply) = r
                    {
                        *refused = Some(reply);
                        r = Ok(());
                    }
                    core.sender_checked(m, r)
                }
                Action::CheckRecipient(r) => {
                    let mut res = self.check_recipient(core, r, ip).await;
                    if let Ok(a) = &res
                        && !a.role
                        && let Some(reply) = refused.clone()
                    {
                        res = Err(reply);
                    }
                    if let Ok(a) = &res
                        && let Err(reply) = self.recipient_limits(core, a, ip).await
                    {
                        res = Err(reply);
                    }
                    core.recipient_checked(res)
                }
                Action::Authenticate { mechanism, initial } => {
                    return self.authenticate(core, io, ip, &mechanism, initial).await;
                }
                Action::StartTls => {
                    let Some(tls) = &self.tls else {
                        return Flow::Close;
                    };
                    io.write(&Reply::new(220, "2.0.0", "Ready to start TLS").to_bytes());
                    // RFC 3207 5: commands sent with STARTTLS are never executed.
                    let limit = self.config.tls.handshake_timeout.duration();
                    if io.upgrade(tls, limit).await.is_err() {
                        return Flow::Close;
                    }
                    core.tls_started();
                    return Flow::Continue;
                }
                Action::ReceiveData => return self.receive_data(core, io, ip).await,
                Action::ReceiveBdat { size, last } => {
                    return self.receive_bdat(core, io, ip, receiving, size, last).await;
                }
                Action::DiscardBdat { size, reply } => {
                    *receiving = None;
                    if size > self.config.smtp.max_message_size.0 {
                        io.write(&reply.to_bytes());
                        let _ = io.flush().await;
                        return Flow::Close;
                    }
                    if discard(
                        io,
                        size,
                        self.config.smtp.timeout_data.duration(),
                        self.config.smtp.min_data_rate,
                    )
                    .await
                    .is_err()
                    {
                        return Flow::Close;
                    }
                    io.write(&reply.to_bytes());
                    return Flow::Continue;
                }
            }
        }
    }

    async fn check_sender(&self, core: &Core, m: &MailFrom) -> Result<(), Reply> {
        let Some(user) = core.user() else {
            // MX: any well-formed sender not blocked (SPF and friends judge it later).
            if !m.address.is_empty() && self.config.inbound.blocked(&m.address) {
                return Err(Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "Mail from <{}> is refused by this server's administrator",
                        m.address
                    ),
                ));
            }
            return Ok(());
        };
        if m.address.is_empty() {
            return Err(Reply::new(
                553,
                "5.7.1",
                format!("Use your own address as the sender ({user})"),
            ));
        }
        let account = match self.directory.store().account_by_address(user).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(Reply::new(
                    451,
                    "4.3.0",
                    "Your account is gone; log in again",
                ));
            }
            Err(e) => return Err(temp_failure(&e)),
        };
        match self.directory.may_send_as(&account, &m.address).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let ours = self
                    .directory
                    .is_local_domain(domain_of(&m.address))
                    .await
                    .unwrap_or(false);
                let ask = if ours {
                    format!(
                        ", or ask the administrator: postern send-as add {} {user}",
                        m.address
                    )
                } else {
                    String::new()
                };
                Err(Reply::new(
                    553,
                    "5.7.1",
                    format!(
                        "Sender address <{}> is not yours: you are logged in as {user}; send as that address or one of its aliases{ask}",
                        m.address
                    ),
                ))
            }
            Err(e) => Err(temp_failure(&e)),
        }
    }

    /// Hourly limits of logged-in users; blocklists on the MX.
    async fn sender_limits(&self, core: &Core, ip: IpAddr) -> Result<(), Reply> {
        if let Some(user) = core.user() {
            let max = self.config.smtp.max_messages_per_hour;
            return self.abuse.message(user, max).await.map_err(|w| {
                Reply::new(
                    451,
                    "4.7.1",
                    format!(
                        "{user} has sent {} messages in the last hour, the most this server allows (smtp.max_messages_per_hour); try again {}",
                        w.count,
                        crate::abuse::in_words(w.left)
                    ),
                )
            });
        }
        if self.settings.role == Role::Mx
            && !self.config.smtp.relay_allowed(ip)
            && !self.config.inbound.allowed_ip(ip)
            && let Some(checker) = &self.trust
            && let Some((zone, code)) = checker.dnsbl(ip).await
        {
            info!(%ip, %zone, %code, "refused: listed on a DNS blocklist");
            return Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "Your server's address {ip} is listed on the blocklist {zone} ({code}); mail from it is refused. Its administrator can ask {zone} to remove it"
                ),
            ));
        }
        Ok(())
    }

    /// Hourly recipient limits of logged-in users; greylisting on the MX.
    async fn recipient_limits(&self, core: &Core, a: &Recipient, ip: IpAddr) -> Result<(), Reply> {
        if let Some(user) = core.user() {
            let max = self.config.smtp.max_recipients_per_hour;
            return self.abuse.recipient(user, max).await.map_err(|w| {
                Reply::new(
                    451,
                    "4.7.1",
                    format!(
                        "{user} has sent to {} recipients in the last hour, the most this server allows (smtp.max_recipients_per_hour); try again {}",
                        w.count,
                        crate::abuse::in_words(w.left)
                    ),
                )
            });
        }
        let inbound = &self.config.inbound;
        let from = core
            .envelope()
            .map(|e| e.from.address.clone())
            .unwrap_or_default();
        if inbound.greylist
            && !a.role
            && self.settings.role == Role::Mx
            && !self.config.smtp.relay_allowed(ip)
            && !inbound.allowed_ip(ip)
            && let Some(left) = self
                .abuse
                .greylist(ip, &from, &a.address, inbound.greylist_delay.duration())
                .await
        {
            return Err(Reply::new(
                451,
                "4.7.1",
                format!(
                    "Greylisted: this server delays mail from senders it has not seen before; retry {} and it will be accepted",
                    crate::abuse::in_words(left)
                ),
            ));
        }
        Ok(())
    }

    /// Where postmaster and abuse mail goes when no account or alias takes the address:
    /// `smtp.postmaster`, else the first web admin, else the first account.
    async fn postmaster_account(&self) -> Option<String> {
        let c = &self.config;
        if !c.smtp.postmaster.is_empty() {
            return Some(c.smtp.postmaster.clone());
        }
        if let Some(a) = c.http.admins.first() {
            return Some(a.clone());
        }
        let mut all = self.directory.store().account_list().await.ok()?;
        all.sort_by(|a, b| a.address.cmp(&b.address));
        all.first().map(|a| a.address.clone())
    }

    /// The domain a bare `postmaster` (RFC 5321 4.5.1) stands for: our hostname's, or the
    /// first one.
    async fn postmaster_domain(&self) -> Option<String> {
        let domains = self.directory.store().domain_list().await.ok()?;
        let host = &self.config.hostname;
        let d = domains
            .iter()
            .find(|d| host.ends_with(&format!(".{}", d.name)) || *host == d.name)
            .or(domains.first())?;
        Some(d.name.clone())
    }

    async fn check_recipient(
        &self,
        core: &Core,
        r: RcptTo,
        ip: IpAddr,
    ) -> Result<Recipient, Reply> {
        let raw = if r.address == "postmaster" {
            match self.postmaster_domain().await {
                Some(d) => format!("postmaster@{d}"),
                None => return Err(Reply::new(550, "5.1.1", "No postmaster here")),
            }
        } else {
            r.address.clone()
        };
        let not_ours = || {
            Reply::new(
                554,
                "5.7.1",
                format!(
                    "<{raw}>: Relay access denied: this server only accepts mail for its own domains"
                ),
            )
        };
        let domain = domain_of(&raw).to_ascii_lowercase();
        if domain.starts_with('[') {
            // Address literals: never one of our domains.
            return if core.user().is_some() {
                Err(Reply::new(
                    550,
                    "5.1.2",
                    "Address literals are not accepted; use a domain name",
                ))
            } else {
                Err(not_ours())
            };
        }
        let local = match self.directory.is_local_domain(&domain).await {
            Ok(l) => l,
            Err(e) => return Err(temp_failure(&e)),
        };
        if !local {
            if core.user().is_none()
                && !(self.settings.role == Role::Mx && self.config.smtp.relay_allowed(ip))
            {
                return Err(not_ours());
            }
            let address =
                normalize_address(&raw).map_err(|e| Reply::new(553, "5.1.3", e.to_string()))?;
            return Ok(Recipient {
                address: address.clone(),
                orcpt: r.orcpt,
                notify: r.notify,
                dests: vec![Destination::Remote(address)],
                role: false,
            });
        }
        // postmaster and abuse at each of our domains take mail from anyone (RFC 5321 4.5.1,
        // RFC 2142); with no account or alias of that name they reach the postmaster account.
        let role = matches!(
            raw.rsplit_once('@')
                .map(|(l, _)| l.to_ascii_lowercase())
                .as_deref(),
            Some("postmaster" | "abuse")
        );
        let (sender, logged_in) = match core.user() {
            Some(u) => (u.to_string(), true),
            None => (
                core.envelope()
                    .map(|e| e.from.address.clone())
                    .unwrap_or_default(),
                false,
            ),
        };
        let mut routed = self.directory.expand_from(&raw, &sender, logged_in).await;
        if role
            && matches!(&routed, Ok(Routed::Unknown) | Ok(Routed::To(_)))
            && !matches!(&routed, Ok(Routed::To(d)) if !d.is_empty())
            && let Some(pm) = self.postmaster_account().await
        {
            routed = self
                .directory
                .expand(&pm)
                .await
                .map(|d| d.map_or(Routed::Unknown, Routed::To));
        }
        match routed {
            Ok(Routed::Denied(why)) => Err(Reply::new(
                550,
                "5.7.1",
                format!("<{raw}>: Sender not allowed: {why}"),
            )),
            Ok(Routed::To(dests)) if !dests.is_empty() => {
                for d in &dests {
                    if let Destination::Local(a) = d
                        && (a.quota_bytes > 0 || a.quota_messages > 0)
                        && let Ok(u) = self.store.account_usage(a.id).await
                        && ((a.quota_bytes > 0 && u.bytes >= a.quota_bytes)
                            || (a.quota_messages > 0 && u.messages >= a.quota_messages))
                    {
                        return Err(Reply::new(
                            452,
                            "4.2.2",
                            format!("<{raw}>: Mailbox full; try again later"),
                        ));
                    }
                }
                let address = normalize_address(&raw).unwrap_or(raw);
                Ok(Recipient {
                    address,
                    orcpt: r.orcpt,
                    notify: r.notify,
                    dests,
                    role,
                })
            }
            Ok(Routed::To(_) | Routed::Unknown) => Err(Reply::new(
                550,
                "5.1.1",
                format!("<{raw}>: Recipient address rejected: no mailbox by this name at {domain}"),
            )),
            Err(e) => Err(temp_failure(&e)),
        }
    }

    async fn authenticate(
        &self,
        core: &mut Core,
        io: &mut Io,
        ip: IpAddr,
        mechanism: &str,
        initial: Option<String>,
    ) -> Flow {
        let t = self.config.smtp.timeout_command.duration();
        let reply = |io: &mut Io, r: Reply| io.write(&r.to_bytes());
        // "=" is an empty initial response (RFC 4954 4).
        let initial = initial.map(|s| if s == "=" { String::new() } else { s });
        async fn ask(io: &mut Io, challenge: &str, t: Duration) -> Result<String, Flow> {
            io.write(format!("334 {challenge}\r\n").as_bytes());
            if io.flush().await.is_err() {
                return Err(Flow::Close);
            }
            match io.read_line(MAX_AUTH_LINE, t).await {
                Ok(l) => Ok(String::from_utf8_lossy(&l).into_owned()),
                Err(LineError::TooLong) => Ok("!".into()),
                Err(_) => Err(Flow::Close),
            }
        }
        let creds: Result<(String, String), sasl::SaslError> = if mechanism == "PLAIN" {
            let resp = match initial {
                Some(i) if !i.is_empty() => i,
                _ => match ask(io, "", t).await {
                    Ok(r) => r,
                    Err(f) => return f,
                },
            };
            sasl::decode_plain(&resp)
        } else {
            let user = match initial {
                Some(i) if !i.is_empty() => sasl::decode_login_step(&i),
                _ => match ask(io, "VXNlcm5hbWU6", t).await {
                    Ok(r) => sasl::decode_login_step(&r),
                    Err(f) => return f,
                },
            };
            match user {
                Ok(u) => match ask(io, "UGFzc3dvcmQ6", t).await {
                    Ok(r) => sasl::decode_login_step(&r).map(|p| (u, p)),
                    Err(f) => return f,
                },
                Err(e) => Err(e),
            }
        };
        let (user, pass) = match creds {
            Ok(c) => c,
            Err(sasl::SaslError::Cancelled) => {
                reply(io, Reply::new(501, "5.0.0", "Authentication cancelled"));
                return Flow::Continue;
            }
            Err(e) => {
                reply(
                    io,
                    Reply::new(501, "5.5.2", format!("Malformed authentication data: {e}")),
                );
                return self.count_error(core, io);
            }
        };
        match self.directory.authenticate(&user, &pass, ip, "smtp").await {
            Ok(AuthOutcome::Ok(account)) => {
                info!(user = %account.address, "authenticated");
                core.authenticated(Some(account.address));
                reply(io, Reply::new(235, "2.7.0", "Authentication successful"));
                Flow::Continue
            }
            Ok(AuthOutcome::Failed) => {
                postern_net::metrics::METRICS.auth_failures.add("smtp", 1);
                tokio::time::sleep(self.directory.failure_delay()).await;
                reply(
                    io,
                    Reply::new(
                        535,
                        "5.7.8",
                        "Authentication failed: check the user name (your full email address) and the password",
                    ),
                );
                self.count_error(core, io)
            }
            Ok(AuthOutcome::Disabled) => {
                tokio::time::sleep(self.directory.failure_delay()).await;
                reply(
                    io,
                    Reply::new(
                        535,
                        "5.7.8",
                        "This account is disabled; ask your mail administrator",
                    ),
                );
                self.count_error(core, io)
            }
            Ok(AuthOutcome::Shared(why)) => {
                reply(io, Reply::new(535, "5.7.8", why));
                self.count_error(core, io)
            }
            Ok(AuthOutcome::LockedOut(wait)) => {
                let mins = wait.as_secs().div_ceil(60);
                reply(
                    io,
                    Reply::new(
                        454,
                        "4.7.0",
                        format!("Too many failed logins; try again in {mins} minute(s)"),
                    ),
                );
                self.count_error(core, io)
            }
            Err(e) => {
                reply(io, temp_failure(&e));
                Flow::Continue
            }
        }
    }

    fn count_error(&self, core: &mut Core, io: &mut Io) -> Flow {
        match core.note_error() {
            Some(Action::Close(r)) => {
                io.write(&r.to_bytes());
                Flow::Close
            }
            _ => Flow::Continue,
        }
    }

    fn new_receiving(&self, core: &Core, ip: IpAddr, io: &Io) -> Receiving {
        let tx = core.envelope().expect("a transaction");
        let trace_id = postern_message::new_trace_id();
        let has_local = tx
            .rcpts
            .iter()
            .any(|a| a.dests.iter().any(|d| matches!(d, Destination::Local(_))));
        let single = (tx.rcpts.len() == 1).then(|| tx.rcpts[0].address.as_str());
        let received = postern_message::received_header(&postern_message::ReceivedInfo {
            helo: core.helo_name().unwrap_or("unknown"),
            ip,
            hostname: &self.config.hostname,
            protocol: postern_message::trace::protocol_name(
                core.is_esmtp(),
                io.is_tls(),
                core.user().is_some(),
                tx.from.smtputf8,
            ),
            id: &trace_id,
            tls: io.tls().map(|t| (t.version.as_str(), t.cipher.as_str())),
            user: core.user(),
            for_rcpt: single,
            date: time::OffsetDateTime::now_utc(),
        });
        let return_path = if has_local {
            postern_message::return_path_header(&tx.from.address)
        } else {
            String::new()
        };
        let prefix = format!("{return_path}{received}");
        Receiving {
            sink: MessageSink::new(
                prefix.as_bytes(),
                return_path.len(),
                self.config.storage.spool_threshold.0 as usize,
                &self.spool_dir,
            ),
            trace_id,
            bare: content::BareScan::default(),
            cr: false,
        }
    }

    /// Message data stopped coming: a timeout is said (421), a lost connection only logged.
    async fn data_lost(&self, io: &mut Io, e: LineError, phase: &str) {
        if let LineError::Timeout = e {
            let c = &self.config.smtp;
            let r = Reply::new(
                421,
                "4.4.2",
                format!(
                    "{} Message data too slow (under {} bytes a second after {} seconds); nothing was stored",
                    self.config.hostname, c.min_data_rate, c.timeout_data.0
                ),
            );
            let _ = io.send(&r.to_bytes(), Duration::from_secs(5)).await;
        }
        info!(error = %e, "{phase} stopped; nothing stored");
    }

    async fn receive_data(&self, core: &mut Core, io: &mut Io, ip: IpAddr) -> Flow {
        let mut rx = self.new_receiving(core, ip, io);
        io.write(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>").to_bytes());
        if io.flush().await.is_err() {
            return Flow::Close;
        }
        let c = &self.config.smtp;
        let mut dec = DataDecoder::new(c.max_text_line, c.max_message_size.0);
        if !c.reject_bare_lf {
            dec = dec.normalizing();
        }
        let t = c.timeout_data.duration();
        let mut pace = Pace::new(t, c.min_data_rate);
        loop {
            let chunk = match io.peek_chunk(64 << 10, pace.limit(t)).await {
                Ok(c) => c,
                Err(e) => {
                    self.data_lost(io, e, "DATA").await;
                    core.abort_transaction();
                    return Flow::Close;
                }
            };
            let n = chunk.len();
            match dec.feed(chunk, &mut SinkOf(&mut rx.sink)) {
                Some(end) => {
                    io.consume(end);
                    break;
                }
                None => {
                    io.consume(n);
                    pace.add(n);
                }
            }
        }
        let report = dec.into_report();
        let received = postern_message::count_received(rx.sink.original_head());
        if let Some(r) = content::check_content(
            &report,
            received,
            c.max_received_headers,
            c.reject_bare_lf,
            c.max_message_size.0,
        ) {
            info!(id = %rx.trace_id, reply = %r.summary(), size = report.size, "message refused");
            self.trace_refusal(core, io, ip, &rx.trace_id, &r).await;
            core.transaction_done();
            io.write(&r.to_bytes());
            return self.count_error(core, io);
        }
        self.store_message(core, io, rx, ip).await
    }

    async fn receive_bdat(
        &self,
        core: &mut Core,
        io: &mut Io,
        ip: IpAddr,
        receiving: &mut Option<Receiving>,
        size: u64,
        last: bool,
    ) -> Flow {
        let c = &self.config.smtp;
        let max = c.max_message_size.0;
        if receiving.is_none() {
            *receiving = Some(self.new_receiving(core, ip, io));
        }
        let rx = receiving.as_mut().expect("just set");
        let body_so_far = rx.sink.len() - rx.sink.prefix_len as u64;
        if body_so_far + size > max {
            // Reading a chunk we will never store could take forever: say so and hang up.
            let r = Reply::new(
                552,
                "5.3.4",
                format!("Message too big: the limit is {max} bytes"),
            );
            io.write(&r.to_bytes());
            let _ = io.flush().await;
            *receiving = None;
            core.abort_transaction();
            return Flow::Close;
        }
        let t = c.timeout_data.duration();
        let mut pace = Pace::new(t, c.min_data_rate);
        let mut left = size;
        while left > 0 {
            let chunk = match io
                .peek_chunk(left.min(64 << 10) as usize, pace.limit(t))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    self.data_lost(io, e, "BDAT").await;
                    *receiving = None;
                    core.abort_transaction();
                    return Flow::Close;
                }
            };
            let n = chunk.len();
            rx.bare.feed(chunk);
            if c.reject_bare_lf {
                rx.sink.put(chunk);
            } else {
                rx.sink.put_crlf(chunk, &mut rx.cr);
            }
            io.consume(n);
            pace.add(n);
            left -= n as u64;
        }
        if !last {
            io.write(&Reply::new(250, "2.0.0", format!("{size} octets received")).to_bytes());
            return Flow::Continue;
        }
        let mut rx = receiving.take().expect("receiving");
        let received = postern_message::count_received(rx.sink.original_head());
        let report = crate::proto::DataReport {
            bare_lf: rx.bare.finish(),
            ..Default::default()
        };
        if let Some(r) = content::check_content(
            &report,
            received,
            c.max_received_headers,
            c.reject_bare_lf,
            max,
        ) {
            info!(id = %rx.trace_id, reply = %r.summary(), "message refused");
            self.trace_refusal(core, io, ip, &rx.trace_id, &r).await;
            core.transaction_done();
            io.write(&r.to_bytes());
            return self.count_error(core, io);
        }
        self.store_message(core, io, rx, ip).await
    }

    /// "from HELO [IP] as USER over TLS..." for the trace.
    fn arrival(&self, core: &Core, io: &Io, ip: IpAddr) -> String {
        let mut s = format!(
            "on {} from {} [{ip}]",
            match self.settings.role {
                Role::Mx => "the MX listener",
                Role::Submission => "submission",
            },
            core.helo_name().unwrap_or("unknown")
        );
        if let Some(u) = core.user() {
            s.push_str(&format!(" as {u}"));
        }
        match io.tls() {
            Some(t) => s.push_str(&format!(" over {} ({})", t.version, t.cipher)),
            None => s.push_str(" without TLS"),
        }
        s
    }

    /// A message refused after its data: told in the trace, since the client got an id.
    async fn trace_refusal(&self, core: &Core, io: &Io, ip: IpAddr, trace_id: &str, reply: &Reply) {
        let Some(tx) = core.envelope() else { return };
        let mut e = TraceEvent::new(
            trace_id,
            "refused",
            format!("{}: {}", self.arrival(core, io, ip), reply.summary()),
        )
        .key(format!("from:{}", tx.from.address.to_ascii_lowercase()));
        for a in &tx.rcpts {
            e = e.key(format!("to:{}", a.address));
        }
        let _ = self.store.trace_append(vec![e]).await;
    }

    async fn store_message(&self, core: &mut Core, io: &mut Io, rx: Receiving, ip: IpAddr) -> Flow {
        let started = std::time::Instant::now();
        let arrival = self.arrival(core, io, ip);
        let helo = core.helo_name().unwrap_or("").to_string();
        let Some(tx) = core.transaction_done() else {
            return Flow::Continue;
        };
        let return_path_len = rx.sink.return_path_len;
        let raw = match rx.sink.finish().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot spool message");
                let r = temp_failure(&postern_store::StoreError::from_io(e));
                io.write(&r.to_bytes());
                return Flow::Continue;
            }
        };
        let size = raw.len();
        let from = tx.from.address.clone();
        let logged_in = core.user().is_some();
        // The header's From and Sender are checked against what the user may send as.
        let sent_by = match core.user() {
            None => None,
            Some(u) => match self.directory.store().account_by_address(u).await {
                Ok(a) => a,
                Err(e) => {
                    io.write(&temp_failure(&e).to_bytes());
                    return Flow::Continue;
                }
            },
        };
        // Mail from other servers is checked; logged-in users and relay networks are ours.
        let check = (self.trust.is_some()
            && self.config.inbound.check
            && self.settings.role == Role::Mx
            && core.user().is_none()
            && !self.config.smtp.relay_allowed(ip))
        .then_some(Client { ip, helo });
        // Who vouches for it (and gets it DKIM-signed): a logged-in user or a relay network.
        let submitter = core.user().map(str::to_string).or_else(|| {
            (self.settings.role == Role::Mx && self.config.smtp.relay_allowed(ip))
                .then(|| format!("relay network client {ip}"))
        });
        let outcome = self
            .ingest
            .accept(Incoming {
                raw,
                return_path_len,
                ours: 1,
                envelope: postern_ingest::Envelope {
                    requiretls: tx.from.requiretls,
                    from: tx.from.address,
                    envid: tx.from.envid,
                    ret: tx.from.ret.map(|r| match r {
                        Ret::Full => DsnRet::Full,
                        Ret::Hdrs => DsnRet::Headers,
                    }),
                    rcpts: tx.rcpts,
                },
                arrival: Arrival {
                    trace_id: rx.trace_id.clone(),
                    text: arrival,
                    message_id: None,
                    checks: None,
                },
                check,
                submitter,
                logged_in,
                sent_by,
            })
            .await;
        let m = &postern_net::metrics::METRICS;
        match &outcome {
            Outcome::Taken(_) => {
                info!(id = %rx.trace_id, %from, size, "message accepted");
                m.received.add(self.role_name(), 1);
                // Only a logged-in user's domain: others could name any domain at all.
                if logged_in && let Some((_, d)) = from.rsplit_once('@') {
                    m.domains.add(&format!("out:{}", d.to_ascii_lowercase()), 1);
                }
            }
            Outcome::Refused { status, why } => {
                info!(id = %rx.trace_id, %from, reply = %status.summary(), "message refused");
                m.refused.add(why, 1);
            }
            Outcome::Failed { status, error } => {
                warn!(id = %rx.trace_id, %error, reply = %status.summary(), "message not stored");
                m.refused.add("storage", 1);
            }
        }
        m.smtp_accept.observe(started.elapsed());
        io.write(&content::reply(outcome.status()).to_bytes());
        Flow::Continue
    }

    fn role_name(&self) -> &'static str {
        match self.settings.role {
            Role::Mx => "mx",
            Role::Submission => "submission",
        }
    }
}

async fn discard(io: &mut Io, mut left: u64, t: Duration, min_rate: u64) -> Result<(), LineError> {
    let mut pace = Pace::new(t, min_rate);
    while left > 0 {
        let n = io
            .peek_chunk(left.min(64 << 10) as usize, pace.limit(t))
            .await?
            .len();
        io.consume(n);
        pace.add(n);
        left -= n as u64;
    }
    Ok(())
}
