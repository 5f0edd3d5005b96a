//! The queue runner: picks up queued messages when they are due, delivers each recipient group
//! (one per destination domain, or everything through the smarthost), records every remote
//! answer before doing anything else, retries temporary failures on a backoff schedule, and
//! sends the notifications (RFC 3464) the sender asked for.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_config::Config;
use postern_directory::{Destination, Directory};
use postern_store::{
    Flags, NewQueueEntry, QueueEntry, QueueId, QueueRecipient, RecipientState, SharedStore,
    StoreEvent, TraceEvent, now,
};
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use crate::client::{ClientError, RemoteReply, SmtpClient, Timeouts, TlsMode, Transaction};
use crate::dkim::{self, DkimKeys};
use crate::dsn::{self, Action, Report};
use crate::route::{Host, RouteError, Router};
use crate::tls_policy::{Security, Target, TlsPolicy};
use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails, PolicyType, ResultType};
use postern_reports::{Tallies, tls};

pub struct QueueRunner {
    config: Arc<Config>,
    store: SharedStore,
    directory: Arc<Directory>,
    router: Arc<Router>,
    tls_policy: TlsPolicy,
    /// Checks the smarthost's certificate (relay.verify with TLS required).
    relay_verifier: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>>,
    pub dkim: Arc<DkimKeys>,
    in_flight: Mutex<HashSet<QueueId>>,
    slots: Arc<Semaphore>,
    domains: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// This node's name in queue claims (several nodes may share one database).
    node: String,
    /// Open connections kept a few seconds for the next message to the same host.
    /// Keyed by address and whether it is the smarthost; only connections whose certificate
    /// nobody had to check are kept, so none is reused where a policy needs a checked one.
    idle: Mutex<HashMap<PoolKey, Vec<(SmtpClient, Instant)>>>,
    wake: Notify,
    /// Counts toward the TLS reports we send (RFC 8460).
    reports: Option<Arc<Tallies>>,
}

/// An idle connection's address, and whether it is the smarthost.
type PoolKey = (SocketAddr, bool);

/// How long an idle connection waits for another message.
const IDLE_REUSE: Duration = Duration::from_secs(5);

/// The smarthost's certificate is checked when TLS with it is required and relay.verify is on.
fn relay_verifier(config: &Config) -> Option<Arc<dyn rustls::client::danger::ServerCertVerifier>> {
    let r = &config.relay;
    if r.host.is_empty() || !r.verify || !matches!(r.tls.as_str(), "" | "starttls" | "tls") {
        return None;
    }
    let roots = match crate::mta_sts::roots(&config.delivery.ca_file) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "the smarthost's certificate cannot be checked: no authorities");
            rustls::RootCertStore::empty()
        }
    };
    match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        postern_net::tls::provider(),
    )
    .build()
    {
        Ok(v) => Some(v),
        Err(e) => {
            // Fail closed: with no authority every certificate is refused, and the queue says so.
            warn!(error = %e, "the smarthost's certificate cannot be checked");
            Some(Arc::new(crate::client::NoAuthorities))
        }
    }
}

/// DANE and MTA-STS as the configuration asks.
fn tls_policy(config: &Config, router: &Router) -> TlsPolicy {
    let d = &config.delivery;
    let dns = d
        .dane
        .then(|| {
            crate::secure_dns::SecureDns::new(
                &config.dns.nameservers,
                config.dns.timeout.duration(),
            )
        })
        .filter(|dns| {
            if !dns.is_usable() {
                warn!("DANE is off: no resolver to ask (set [dns] nameservers)");
            }
            dns.is_usable()
        });
    let sts = if d.mta_sts {
        match crate::mta_sts::roots(&d.ca_file) {
            Ok(roots) => Some(crate::mta_sts::MtaSts::new(
                router.resolver().clone(),
                Arc::new(roots),
                d.mta_sts_port,
                d.connect_timeout.duration(),
                Some(config.data_dir.join("mta-sts.json")),
            )),
            Err(e) => {
                warn!(error = %e, "MTA-STS is off");
                None
            }
        }
    } else {
        None
    };
    TlsPolicy::new(dns, sts, d.remote_port)
}

/// What became of one recipient in one attempt.
enum Outcome {
    Delivered(String),
    Failed {
        status: String,
        remote: Option<String>,
        text: String,
    },
    Deferred(String),
}

impl QueueRunner {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        directory: Arc<Directory>,
        router: Arc<Router>,
        dkim: Arc<DkimKeys>,
        reports: Option<Arc<Tallies>>,
    ) -> Arc<QueueRunner> {
        let slots = Arc::new(Semaphore::new(config.delivery.max_concurrency.max(1)));
        let tls_policy = tls_policy(&config, &router);
        let relay_verifier = relay_verifier(&config);
        let node = format!(
            "{}/{}/{:08x}",
            config.hostname,
            std::process::id(),
            rand::random::<u32>()
        );
        Arc::new(QueueRunner {
            node,
            config,
            store,
            directory,
            router,
            tls_policy,
            relay_verifier,
            dkim,
            in_flight: Mutex::new(HashSet::new()),
            slots,
            domains: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            reports,
        })
    }

    /// Looks at the queue again now (after `queue retry`, say).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self: Arc<Self>, mut shutdown: postern_net::Shutdown) {
        let mut events = self.store.subscribe();
        loop {
            let next = match self.dispatch().await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "queue scan failed");
                    now() + 30
                }
            };
            self.close_idle().await;
            let wait = Duration::from_secs((next - now()).clamp(1, 60) as u64);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                ev = events.recv() => {
                    if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    if !matches!(ev, Ok(StoreEvent::Queue | StoreEvent::Missed) | Err(_)) {
                        continue;
                    }
                    // Let a burst of new mail gather before scanning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Starts every due entry; returns when the next one is due.
    async fn dispatch(self: &Arc<Self>) -> Result<i64, postern_store::StoreError> {
        let t = now();
        let mut next = t + 60;
        for e in self.store.queue_list().await? {
            if e.next_attempt > t {
                next = next.min(e.next_attempt);
                continue;
            }
            {
                let mut in_flight = self.in_flight.lock().unwrap();
                // No more claims than can be worked on: the rest is left to other nodes.
                if in_flight.len() >= self.config.delivery.max_concurrency.max(1) {
                    next = t;
                    break;
                }
                if !in_flight.insert(e.id) {
                    continue;
                }
            }
            let me = self.clone();
            tokio::spawn(async move {
                let id = e.id;
                me.claimed_attempt(id).await;
                me.in_flight.lock().unwrap().remove(&id);
                me.wake.notify_one();
            });
        }
        Ok(next)
    }

    /// One attempt, if no other node is making it: claimed first, then read again (another
    /// node may have delivered or rescheduled it since the list was read), released after.
    async fn claimed_attempt(&self, id: QueueId) {
        let until = now() + self.config.delivery.claim_timeout.0 as i64;
        match self.store.queue_claim(id, &self.node, until).await {
            Ok(true) => {}
            Ok(false) | Err(postern_store::StoreError::NotFound(_)) => return,
            Err(e) => {
                warn!(error = %e, "cannot claim a queued message");
                return;
            }
        }
        match self.store.queue_get(id).await {
            Ok(Some(e)) if e.next_attempt <= now() => self.attempt(e).await,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "queued message unreadable"),
        }
        if let Err(e) = self.store.queue_claim(id, &self.node, 0).await
            && !matches!(e, postern_store::StoreError::NotFound(_))
        {
            warn!(error = %e, "cannot release a queued message");
        }
    }

    fn domain_slot(&self, domain: &str) -> Arc<Semaphore> {
        self.domains
            .lock()
            .unwrap()
            .entry(domain.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.delivery.max_per_domain.max(1))))
            .clone()
    }

    /// One delivery attempt of a queue entry, for all its pending recipients.
    async fn attempt(&self, mut entry: QueueEntry) {
        let pending: Vec<usize> = entry
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RecipientState::Pending)
            .map(|(i, _)| i)
            .collect();
        let mut notices: Vec<(usize, Outcome)> = Vec::new();
        if entry.bounce {
            for i in pending {
                let text = "returned to the sender by the mail administrator".to_string();
                entry.recipients[i].state = RecipientState::Failed;
                entry.recipients[i].last_error = Some(text.clone());
                notices.push((
                    i,
                    Outcome::Failed {
                        status: "5.0.0".into(),
                        remote: None,
                        text,
                    },
                ));
            }
        } else if !pending.is_empty() {
            let body = match self
                .store
                .blob_read(
                    entry.blob,
                    entry.body_offset,
                    entry.size.saturating_sub(entry.body_offset),
                )
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    warn!(id = %entry.trace_id, error = %e, "queued message unreadable");
                    return;
                }
            };
            let body = self.signed(&entry, body);
            let smarthost = !self.config.relay.host.is_empty();
            let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
            for i in pending {
                let d = if smarthost {
                    String::new()
                } else {
                    postern_directory::domain_of(&entry.recipients[i].address).to_ascii_lowercase()
                };
                groups.entry(d).or_default().push(i);
            }
            let mut groups_left = groups.len();
            for (domain, idx) in groups {
                groups_left -= 1;
                // The claim is renewed for each destination; lost, the attempt stops here.
                let until = now() + self.config.delivery.claim_timeout.0 as i64;
                if let Ok(false) = self.store.queue_claim(entry.id, &self.node, until).await {
                    warn!(id = %entry.trace_id, "another node took this message over");
                    return;
                }
                let started = std::time::Instant::now();
                let mut outcomes = self.deliver_group(&entry, &domain, &idx, &body).await;
                // Sent as it came; a server that refuses its long lines gets it once more with
                // those lines re-encoded (quoted-printable), rather than the sender a bounce.
                let max_line = self.config.smtp.max_text_line.saturating_sub(2);
                if outcomes.iter().all(refused_for_long_lines)
                    && postern_message::has_long_lines(&body, max_line)
                    && let Some(encoded) = postern_message::reencode_long_lines(&body, max_line)
                {
                    info!(id = %entry.trace_id, %domain, "refused for long lines; sending it again re-encoded");
                    outcomes = self.deliver_group(&entry, &domain, &idx, &encoded).await;
                }
                let m = &postern_net::metrics::METRICS;
                m.delivery.observe(started.elapsed());
                for (i, o) in idx.iter().zip(outcomes) {
                    m.outbound.add(
                        match &o {
                            Outcome::Delivered(_) => "delivered",
                            Outcome::Failed { .. } => "bounced",
                            Outcome::Deferred(_) => "deferred",
                        },
                        1,
                    );
                    let r = &mut entry.recipients[*i];
                    match &o {
                        Outcome::Delivered(reply) => {
                            r.state = RecipientState::Delivered;
                            r.last_error = Some(reply.clone());
                        }
                        Outcome::Failed { text, .. } => {
                            r.state = RecipientState::Failed;
                            r.last_error = Some(text.clone());
                        }
                        Outcome::Deferred(why) => r.last_error = Some(why.clone()),
                    }
                    notices.push((*i, o));
                }
                // The remote answers are recorded before anything else happens, so a crash
                // now never sends the message twice to those recipients. When all went and
                // nobody asked to be told, removing the entry (next) records it instead.
                let done = groups_left == 0
                    && entry.recipients.iter().all(|r| {
                        r.state == RecipientState::Delivered
                            && !r
                                .notify
                                .as_deref()
                                .is_some_and(|n| n.split(',').any(|x| x == "SUCCESS"))
                    });
                if done {
                    continue;
                }
                if let Err(e) = self.store.queue_update(entry.clone()).await {
                    warn!(id = %entry.trace_id, error = %e, "cannot record delivery results");
                    return;
                }
            }
        }
        entry.attempts += 1;
        self.settle(entry, notices).await;
    }

    /// DKIM-signs mail from our domains (the From domain, else the envelope sender's) that we
    /// vouch for: sent by a logged-in user or a relay network, or written by us. Mail passing
    /// through (aliases, forwards, redirects) keeps its own signatures and gets none of ours.
    fn signed(&self, entry: &QueueEntry, body: Vec<u8>) -> Vec<u8> {
        if entry.authenticated.is_none() {
            return body;
        }
        let domain = dkim::from_domain(&body)
            .filter(|d| self.dkim.selector(d).is_some())
            .or_else(|| Some(postern_directory::domain_of(&entry.sender).to_ascii_lowercase()));
        match domain.and_then(|d| self.dkim.sign(&d, &body)) {
            Some(h) => {
                let mut v = h.into_bytes();
                v.extend_from_slice(&body);
                v
            }
            None => body,
        }
    }

    async fn hosts(&self, domain: &str) -> Result<Vec<Host>, RouteError> {
        if domain.is_empty() {
            self.router.smarthost(&self.config.relay.host).await
        } else {
            self.router.route(domain).await
        }
    }

    async fn deliver_group(
        &self,
        entry: &QueueEntry,
        domain: &str,
        idx: &[usize],
        body: &[u8],
    ) -> Vec<Outcome> {
        let all = |o: &dyn Fn() -> Outcome| idx.iter().map(|_| o()).collect::<Vec<_>>();
        let targets = match self.hosts(domain).await {
            Ok(h) if domain.is_empty() => Ok(TlsPolicy::none(h)),
            Ok(h) => self
                .tls_policy
                .plan(domain, h)
                .await
                .map_err(RouteError::Temporary),
            Err(e) => Err(e),
        };
        let targets = match targets {
            Ok(h) => h,
            Err(RouteError::Permanent(why)) => {
                return all(&|| Outcome::Failed {
                    status: "5.1.2".into(),
                    remote: None,
                    text: why.clone(),
                });
            }
            Err(RouteError::Temporary(why)) => return all(&|| Outcome::Deferred(why.clone())),
        };
        // RFC 8689 4.2.1: a message that requires TLS goes only to hosts whose certificate a
        // policy (DANE, MTA-STS) proves, or to a smarthost whose certificate is checked.
        let targets = if entry.requiretls {
            let proven = |t: &Target| {
                if domain.is_empty() {
                    self.relay_verifier.is_some()
                } else {
                    t.security.is_verified()
                }
            };
            let kept: Vec<Target> = targets.into_iter().filter(proven).collect();
            if kept.is_empty() {
                let text = if domain.is_empty() {
                    "the message requires TLS (REQUIRETLS), and the smarthost's certificate is \
                     not checked (relay.tls, relay.verify)"
                        .to_string()
                } else {
                    format!(
                        "the message requires TLS (REQUIRETLS), and no mail server of {domain} \
                         has a DANE or MTA-STS policy that proves its certificate"
                    )
                };
                return all(&|| Outcome::Failed {
                    status: "5.7.30".into(),
                    remote: None,
                    text: text.clone(),
                });
            }
            kept
        } else {
            targets
        };
        let _global = self.slots.clone().acquire_owned().await;
        let _per_domain = self.domain_slot(domain).acquire_owned().await;
        let c = &self.config.delivery;
        let smarthost = domain.is_empty();
        let mode = if smarthost {
            match self.config.relay.tls.as_str() {
                "tls" => TlsMode::Implicit,
                "none" => TlsMode::Off,
                "opportunistic" => TlsMode::Opportunistic,
                _ => TlsMode::Required,
            }
        } else {
            TlsMode::Opportunistic
        };
        let recipients: Vec<&QueueRecipient> = idx.iter().map(|&i| &entry.recipients[i]).collect();
        let smtputf8 = !entry.sender.is_ascii()
            || recipients.iter().any(|r| !r.address.is_ascii())
            || header_is_utf8(body);
        let t = Transaction {
            sender: &entry.sender,
            recipients: recipients
                .iter()
                .map(|r| (r.address.as_str(), r.notify.as_deref(), r.orcpt.as_deref()))
                .collect(),
            envid: entry.envid.as_deref(),
            ret: entry.ret.map(|r| match r {
                postern_store::DsnRet::Full => "FULL",
                postern_store::DsnRet::Headers => "HDRS",
            }),
            body,
            smtputf8,
            eight_bit: body.iter().any(|&b| b >= 0x80),
            requiretls: entry.requiretls,
        };
        let mut requiretls_refused = None;
        let mut last = String::from("no mail server answered");
        for Target {
            host: h,
            security,
            report,
        } in &targets
        {
            let verifier = match security {
                Security::Verified { verifier, .. } => Some(verifier.clone()),
                Security::Opportunistic if smarthost => self.relay_verifier.clone(),
                Security::Opportunistic => None,
            };
            for addr in &h.addrs {
                let timeouts = Timeouts {
                    connect: c.connect_timeout.duration(),
                    command: c.command_timeout.duration(),
                    data: c.command_timeout.duration(),
                };
                let pool = (*addr, smarthost);
                let reused = if security.is_verified() {
                    None
                } else {
                    self.take_idle(pool).await
                };
                let fresh = reused.is_none();
                let connected = match reused {
                    Some(c) => Ok(c),
                    None => {
                        SmtpClient::connect(
                            *addr,
                            &h.name,
                            &self.config.hostname,
                            mode,
                            verifier.clone(),
                            timeouts,
                        )
                        .await
                    }
                };
                if fresh && let Some(policy) = report {
                    self.count_tls(domain, policy, &h.name, addr.ip(), &connected);
                }
                let mut client = match connected {
                    Ok(cl) => cl,
                    Err(ClientError::Rejected { host, reply })
                        if reply.is_permanent() && !smarthost =>
                    {
                        // A 5xx greeting: this host refuses us; another MX may not.
                        last = format!("{host} said: {}", reply.text());
                        continue;
                    }
                    Err(e) => {
                        last = match security {
                            Security::Verified { why, .. }
                                if matches!(
                                    e,
                                    ClientError::Tls(..) | ClientError::Rejected { .. }
                                ) =>
                            {
                                format!("{e} (TLS with a checked certificate is required by {why})")
                            }
                            _ => e.to_string(),
                        };
                        continue;
                    }
                };
                if fresh
                    && smarthost
                    && !self.config.relay.username.is_empty()
                    && client.tls.is_none()
                    && self.config.relay.tls != "none"
                {
                    client.quit().await;
                    let text = "the smarthost offered no TLS, so our password was not sent in \
                                the clear (relay.tls = \"none\" allows it)"
                        .to_string();
                    return all(&|| Outcome::Deferred(text.clone()));
                }
                if fresh
                    && smarthost
                    && !self.config.relay.username.is_empty()
                    && let Err(e) = client
                        .auth_plain(&self.config.relay.username, &self.config.relay.password)
                        .await
                {
                    let text = format!("the smarthost refused our login: {e}");
                    client.quit().await;
                    return all(&|| Outcome::Deferred(text.clone()));
                }
                if entry.requiretls && !client.caps.requiretls {
                    // It could not pass the requirement on (RFC 8689 4.2.1); another MX may.
                    requiretls_refused = Some(client.host.clone());
                    client.quit().await;
                    continue;
                }
                let host_label = client.host.clone();
                let result = client.deliver(&t).await;
                match &result {
                    Ok(_) if !security.is_verified() => self.put_idle(pool, client),
                    _ => client.quit().await,
                }
                return match result {
                    Ok(replies) => replies
                        .into_iter()
                        .map(|r| outcome(&host_label, &r))
                        .collect(),
                    Err(ClientError::Rejected { host, reply }) => {
                        let o = |r: &RemoteReply| outcome(&host, r);
                        idx.iter().map(|_| o(&reply)).collect()
                    }
                    Err(e) => {
                        let text = e.to_string();
                        all(&|| Outcome::Deferred(text.clone()))
                    }
                };
            }
        }
        if let Some(host) = requiretls_refused {
            let text = format!(
                "the message requires TLS (REQUIRETLS), and {host} does not support REQUIRETLS"
            );
            return all(&|| Outcome::Failed {
                status: "5.7.30".into(),
                remote: Some(host.clone()),
                text: text.clone(),
            });
        }
        all(&|| Outcome::Deferred(last.clone()))
    }

    /// Counts a new session with a domain's host toward its TLS report: TLS or not, and how
    /// the handshake failed. Sessions that failed before TLS was in question are not counted.
    fn count_tls(
        &self,
        domain: &str,
        policy: &PolicyDetails,
        host: &str,
        ip: std::net::IpAddr,
        connected: &Result<SmtpClient, ClientError>,
    ) {
        let Some(tallies) = &self.reports else {
            return;
        };
        let failed = |kind: ResultType, why: &str| FailureDetails {
            result_type: kind,
            sending_mta_ip: None,
            receiving_mx_hostname: Some(host.to_string()),
            receiving_mx_helo: None,
            receiving_ip: Some(ip),
            failed_session_count: 0,
            additional_information: None,
            failure_reason_code: Some(why.to_string()),
        };
        let t = now();
        let tally = match connected {
            Ok(c) if c.tls.is_some() => tls::success(domain, policy.clone(), t),
            Ok(_) => tls::failure(
                domain,
                policy.clone(),
                failed(ResultType::StartTlsNotSupported, "STARTTLS is not offered"),
                t,
            ),
            Err(ClientError::Tls(_, why)) => tls::failure(
                domain,
                policy.clone(),
                failed(tls_failure_kind(policy, why), why),
                t,
            ),
            Err(_) => return,
        };
        tallies.add(tally);
    }

    /// A connection left open by an earlier delivery to `addr`, still willing (RSET answered).
    async fn take_idle(&self, addr: PoolKey) -> Option<SmtpClient> {
        loop {
            let (client, since) = {
                let mut idle = self.idle.lock().unwrap();
                let list = idle.get_mut(&addr)?;
                let c = list.pop();
                if list.is_empty() {
                    idle.remove(&addr);
                }
                c?
            };
            if since.elapsed() < IDLE_REUSE {
                let mut client = client;
                if client.reset().await {
                    return Some(client);
                }
            } else {
                client.quit().await;
            }
        }
    }

    fn put_idle(&self, addr: PoolKey, client: SmtpClient) {
        let max = self.config.delivery.max_per_domain.max(1);
        let mut idle = self.idle.lock().unwrap();
        let list = idle.entry(addr).or_default();
        list.retain(|(_, t)| t.elapsed() < IDLE_REUSE);
        if list.len() < max {
            list.push((client, Instant::now()));
        }
    }

    /// Closes connections nobody reused in time.
    async fn close_idle(&self) {
        let stale: Vec<SmtpClient> = {
            let mut idle = self.idle.lock().unwrap();
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (keep, old): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|(_, t)| t.elapsed() < IDLE_REUSE);
                *list = keep;
                out.extend(old.into_iter().map(|(c, _)| c));
            }
            idle.retain(|_, l| !l.is_empty());
            out
        };
        for c in stale {
            c.quit().await;
        }
    }

    /// After an attempt: notifications, then the entry is removed (all settled) or rescheduled.
    async fn settle(&self, mut entry: QueueEntry, notices: Vec<(usize, Outcome)>) {
        let c = &self.config.delivery;
        let mut events: Vec<TraceEvent> = Vec::new();
        // Told after the outcomes it reports.
        let mut notice_event: Option<TraceEvent> = None;
        let age = now() - entry.created;
        let expired = age > c.max_lifetime.0 as i64;
        let mut reports: Vec<Report> = Vec::new();
        let mut expired_reports: Vec<(usize, String)> = Vec::new();
        if expired {
            for (i, r) in entry.recipients.iter_mut().enumerate() {
                if r.state == RecipientState::Pending {
                    r.state = RecipientState::Failed;
                    let why = format!(
                        "could not be delivered for {} days; last error: {}",
                        age / 86400,
                        r.last_error.clone().unwrap_or_default()
                    );
                    r.last_error = Some(why.clone());
                    expired_reports.push((i, why));
                }
            }
        }
        let wants = |r: &QueueRecipient, what: &str| match &r.notify {
            None => what == "FAILURE",
            Some(n) => n.split(',').any(|x| x == what),
        };
        for (i, o) in &notices {
            let r = &entry.recipients[*i];
            match o {
                Outcome::Failed {
                    status,
                    remote,
                    text,
                } if wants(r, "FAILURE") => reports.push(Report {
                    address: &r.address,
                    orcpt: r.orcpt.as_deref(),
                    action: Action::Failed,
                    status: status.clone(),
                    remote: remote.clone(),
                    diagnostic: text.clone(),
                }),
                Outcome::Delivered(reply) if wants(r, "SUCCESS") => reports.push(Report {
                    address: &r.address,
                    orcpt: r.orcpt.as_deref(),
                    action: Action::Delivered,
                    status: "2.0.0".into(),
                    remote: None,
                    diagnostic: reply.clone(),
                }),
                _ => {}
            }
        }
        for (i, why) in &expired_reports {
            let r = &entry.recipients[*i];
            if wants(r, "FAILURE") {
                reports.push(Report {
                    address: &r.address,
                    orcpt: r.orcpt.as_deref(),
                    action: Action::Failed,
                    status: "4.4.7".into(),
                    remote: None,
                    diagnostic: why.clone(),
                });
            }
        }
        let pending = entry
            .recipients
            .iter()
            .any(|r| r.state == RecipientState::Pending);
        let warn_delay =
            pending && !entry.warned && age > c.delay_warning.0 as i64 && c.delay_warning.0 > 0;
        if warn_delay {
            for r in entry
                .recipients
                .iter()
                .filter(|r| r.state == RecipientState::Pending)
            {
                if wants(r, "DELAY") {
                    reports.push(Report {
                        address: &r.address,
                        orcpt: r.orcpt.as_deref(),
                        action: Action::Delayed,
                        status: "4.0.0".into(),
                        remote: None,
                        diagnostic: r.last_error.clone().unwrap_or_default(),
                    });
                }
            }
        }
        if !reports.is_empty() && !entry.sender.is_empty() {
            let original = self
                .store
                .blob_read(
                    entry.blob,
                    entry.body_offset,
                    entry.size.saturating_sub(entry.body_offset),
                )
                .await
                .unwrap_or_default();
            let msg = dsn::build(&self.config.hostname, &entry, &reports, &original);
            match self
                .send_notification(&entry.sender, msg, &entry.trace_id)
                .await
            {
                Err(e) => {
                    warn!(id = %entry.trace_id, error = %e, "cannot send the delivery notification");
                    notice_event = Some(TraceEvent::new(
                        &entry.trace_id,
                        "notify-failed",
                        format!("no notification could be sent to <{}>: {e}", entry.sender),
                    ));
                }
                Ok(dsn_id) => {
                    info!(id = %entry.trace_id, to = %entry.sender, reports = reports.len(), "delivery notification sent");
                    notice_event = Some(
                        TraceEvent::new(
                            &entry.trace_id,
                            "notified",
                            format!(
                                "delivery status notification {dsn_id} sent to <{}>",
                                entry.sender
                            ),
                        )
                        .key(format!("to:{}", entry.sender)),
                    );
                }
            }
        }
        drop(reports);
        for (i, o) in &notices {
            let r = &entry.recipients[*i];
            let (kind, text) = match o {
                Outcome::Delivered(reply) => {
                    info!(id = %entry.trace_id, to = %r.address, %reply, "delivered");
                    ("delivered", format!("to {}: {reply}", r.address))
                }
                Outcome::Failed { text, .. } => {
                    info!(id = %entry.trace_id, to = %r.address, error = %text, "bounced");
                    ("bounced", format!("to {}: {text}", r.address))
                }
                Outcome::Deferred(why) => {
                    info!(id = %entry.trace_id, to = %r.address, error = %why, "deferred");
                    ("deferred", format!("to {}: {why}", r.address))
                }
            };
            let mut e =
                TraceEvent::new(&entry.trace_id, kind, text).key(format!("to:{}", r.address));
            // The receiving host, for the dashboard's busiest remote hosts.
            if let Outcome::Delivered(reply) = o
                && let Some((host, _)) = reply.split_once(" said: ")
            {
                e = e.key(format!("host:{}", host.to_ascii_lowercase()));
            }
            events.push(e);
        }
        for (i, why) in &expired_reports {
            let r = &entry.recipients[*i];
            events.push(
                TraceEvent::new(
                    &entry.trace_id,
                    "expired",
                    format!("to {}: {why}", r.address),
                )
                .key(format!("to:{}", r.address)),
            );
        }
        events.extend(notice_event);
        if !pending || expired {
            // Removed first: once it is gone nothing is sent again, whatever becomes of the
            // trace.
            if let Err(e) = self.store.queue_delete(entry.id).await {
                warn!(id = %entry.trace_id, error = %e, "cannot remove a finished queue entry");
            }
            if let Err(e) = self.store.trace_append(events).await {
                warn!(id = %entry.trace_id, error = %e, "cannot record the trace");
            }
            return;
        }
        if let Err(e) = self.store.trace_append(events).await {
            warn!(id = %entry.trace_id, error = %e, "cannot record the trace");
        }
        entry.warned |= warn_delay;
        entry.last_error = entry
            .recipients
            .iter()
            .find(|r| r.state == RecipientState::Pending)
            .and_then(|r| r.last_error.clone());
        let steps = &c.retry;
        let step = steps
            .get((entry.attempts as usize).saturating_sub(1))
            .or(steps.last())
            .map(|s| s.0)
            .unwrap_or(300);
        entry.next_attempt = now() + step as i64;
        if let Err(e) = self.store.queue_update(entry.clone()).await {
            warn!(id = %entry.trace_id, error = %e, "cannot reschedule a queue entry");
        }
    }

    /// A notification from `<>` to `to`: straight into a local mailbox, or onto the queue.
    /// Returns its own trace id.
    async fn send_notification(
        &self,
        to: &str,
        msg: Vec<u8>,
        about: &str,
    ) -> Result<String, String> {
        let what = format!("a delivery status notification about message {about}");
        self.send_own(to, msg, &what).await
    }

    /// A message we wrote (`what` it is, for the trace), from `<>` to `to`: straight into a
    /// local mailbox, or onto the queue, DKIM-signed. Returns its own trace id.
    pub(crate) async fn send_own(
        &self,
        to: &str,
        msg: Vec<u8>,
        what: &str,
    ) -> Result<String, String> {
        let dests = self
            .directory
            .expand(to)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let mut targets = Vec::new();
        let mut remote = Vec::new();
        for d in dests {
            match d {
                Destination::Local(a) => targets.push(postern_ingest::into_folder(
                    a.id,
                    postern_store::INBOX,
                    Flags::default(),
                    false,
                )),
                Destination::Remote(r) => remote.push(QueueRecipient {
                    address: r,
                    orcpt: None,
                    // Never a notification about a notification.
                    notify: Some("NEVER".into()),
                    state: RecipientState::Pending,
                    last_error: None,
                }),
            }
        }
        if targets.is_empty() && remote.is_empty() {
            return Err(format!("{to} cannot be reached"));
        }
        // Local copies get the Return-Path every delivered message has; a remote copy is sent
        // from after it.
        let return_path = b"Return-Path: <>\r\n";
        let mut msg = msg;
        msg.splice(0..0, return_path.iter().copied());
        let trace_id = postern_message::new_trace_id();
        let mut trace = vec![
            TraceEvent::new(&trace_id, "received", format!("{what}, from <> to <{to}>"))
                .key(format!("to:{to}"))
                .key("from:".to_string()),
        ];
        if !targets.is_empty() {
            trace.push(
                TraceEvent::new(&trace_id, "delivered", format!("to {to}, folder INBOX"))
                    .key(format!("to:{to}")),
            );
        }
        for r in &remote {
            trace.push(
                TraceEvent::new(
                    &trace_id,
                    "queued",
                    format!("for {}, to be sent on", r.address),
                )
                .key(format!("to:{}", r.address)),
            );
        }
        let id = trace_id.clone();
        self.store
            .deliver(postern_ingest::Prepared::new(msg).deliver(
                now(),
                targets,
                (!remote.is_empty()).then(|| NewQueueEntry {
                    sender: String::new(),
                    recipients: remote,
                    envid: None,
                    ret: None,
                    trace_id,
                    // Our own message: ours to sign.
                    authenticated: Some("postern (our own message)".into()),
                    requiretls: false,
                    body_offset: return_path.len() as u64,
                }),
                trace,
            ))
            .await
            .map(|_| id)
            .map_err(|e| e.to_string())
    }
}

/// The RFC 8460 result type of a failed TLS handshake, from rustls's words.
fn tls_failure_kind(policy: &PolicyDetails, why: &str) -> ResultType {
    let w = why.to_ascii_lowercase();
    if w.contains("starttls is not offered") {
        ResultType::StartTlsNotSupported
    } else if policy.policy_type == PolicyType::Tlsa {
        ResultType::ValidationFailure
    } else if w.contains("expired") {
        ResultType::CertificateExpired
    } else if w.contains("notvalidforname") || w.contains("not valid for") {
        ResultType::CertificateHostMismatch
    } else if w.contains("unknownissuer") || w.contains("unknown issuer") || w.contains("trust") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}

/// A permanent refusal that names the message's line length (RFC 5321 4.5.3.1.6).
fn refused_for_long_lines(o: &Outcome) -> bool {
    let Outcome::Failed { text, .. } = o else {
        return false;
    };
    let t = text.to_ascii_lowercase();
    t.contains("line") && (t.contains("long") || t.contains("length"))
}

fn outcome(host: &str, r: &RemoteReply) -> Outcome {
    let text = r.text();
    if r.is_ok() {
        Outcome::Delivered(format!("{host} said: {text}"))
    } else if r.is_permanent() {
        Outcome::Failed {
            status: r.enhanced().unwrap_or_else(|| "5.0.0".into()),
            remote: Some(host.to_string()),
            text,
        }
    } else {
        Outcome::Deferred(format!("{host} said: {text}"))
    }
}

/// Non-ASCII in the header section needs SMTPUTF8 on the way out (RFC 6532).
fn header_is_utf8(body: &[u8]) -> bool {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len());
    body[..end].iter().any(|&b| b >= 0x80)
}
