//! Postern's configuration: one TOML file, every key with a default, unknown keys rejected
//! with the line they are on.

mod acme;
mod backup;
mod dav;
pub mod settings;
mod stats;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use acme::{Acme, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use backup::Backup;
pub use dav::Dav;
use serde::Deserialize;
pub use stats::Stats;
pub use units::{ByteSize, Seconds, parse_seconds, parse_size};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Our name in banners, HELO and Received headers.
    pub hostname: String,
    /// Everything we store lives here.
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    pub acme: Acme,
    pub storage: Storage,
    pub dns: Dns,
    pub auth: Auth,
    pub smtp: Smtp,
    pub pop3: Pop3,
    pub imap: Imap,
    pub delivery: Delivery,
    pub relay: Relay,
    pub http: Http,
    pub mta_sts: MtaSts,
    pub trace: Trace,
    pub reports: Reports,
    pub stats: Stats,
    pub backup: Backup,
    pub dav: Dav,
    pub sendmail: Sendmail,
    pub routing: Routing,
    pub sieve: Sieve,
    pub inbound: Inbound,
    pub doctor: Doctor,
    pub log: Log,
}

/// Sieve filters (RFC 5228) and their management (ManageSieve, RFC 5804).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sieve {
    /// Largest script a user may store.
    pub max_script_size: ByteSize,
    /// Most scripts one account may keep.
    pub max_scripts: usize,
    /// Messages larger than this are not filtered (kept in the INBOX).
    pub max_message_size: ByteSize,
    /// Instructions one run may execute.
    pub max_instructions: usize,
    /// Redirects one message may cause.
    pub max_redirects: usize,
    /// Messages (vacation replies, notices) one run may send.
    pub max_out_messages: usize,
    /// Vacation's pause per sender when a script names none.
    pub vacation_default_days: u64,
    pub idle_timeout: Seconds,
    pub login_timeout: Seconds,
    /// A client that takes none of our output for this long is disconnected.
    pub write_timeout: Seconds,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_errors: u32,
}

impl Default for Sieve {
    fn default() -> Self {
        Sieve {
            max_script_size: ByteSize(64 << 10),
            max_scripts: 32,
            max_message_size: ByteSize(10 << 20),
            max_instructions: 5000,
            max_redirects: 4,
            max_out_messages: 3,
            vacation_default_days: 7,
            idle_timeout: Seconds(600),
            login_timeout: Seconds(180),
            write_timeout: Seconds(300),
            max_connections: 500,
            max_connections_per_ip: 20,
            max_errors: 10,
        }
    }
}

/// What `postern doctor` compares against.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Doctor {
    /// Outbound port 25 is tried against this domain's MX ("" to skip).
    pub probe_domain: String,
    /// "host:port" of an NTP server for the clock check ("" to skip).
    pub ntp_server: String,
    /// DNS blocklists our public IP is looked up in, e.g. ["zen.spamhaus.org"].
    pub dnsbl: Vec<String>,
    /// The IP other servers see mail come from [default: the addresses of the hostname].
    pub public_ip: String,
    /// Warn when the data directory has less free space than this.
    pub disk_warn_free: ByteSize,
    /// Warn when a message has waited in the queue longer than this.
    pub queue_warn_age: Seconds,
    /// Warn when the certificate expires within this.
    pub cert_warn: Seconds,
}

impl Default for Doctor {
    fn default() -> Self {
        Doctor {
            probe_domain: "gmail.com".into(),
            ntp_server: "pool.ntp.org:123".into(),
            dnsbl: Vec::new(),
            public_ip: String::new(),
            disk_warn_free: ByteSize(2 << 30),
            queue_warn_age: Seconds(3600),
            cert_warn: Seconds(14 * 86400),
        }
    }
}

/// How local addresses are resolved.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// `alice+news@` reaches `alice@` when no address `alice+news@` exists. One character;
    /// empty turns sub-addressing off.
    pub subaddress_separator: String,
    /// `alice+news@` is delivered into alice's folder "news" when she has one.
    pub subaddress_folder: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            subaddress_separator: "+".into(),
            subaddress_folder: false,
        }
    }
}

impl Routing {
    pub fn separator(&self) -> Option<char> {
        self.subaddress_separator.chars().next()
    }
}

/// The message trace (`postern trace`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Trace {
    /// Events older than this are forgotten.
    pub retention: Seconds,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            retention: Seconds(30 * 86400),
        }
    }
}

/// DMARC aggregate reports (RFC 7489 section 7.2) and SMTP TLS reports (RFC 8460): the ones we
/// send to domains that ask for them, and the ones others send about our domains.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Reports {
    /// Send each domain that asks (rua) a daily report of what we saw of its mail.
    pub send: bool,
    /// The reports' From address; "" = postmaster at the first local domain.
    pub from: String,
    /// Our name in the reports; "" = the hostname.
    pub org_name: String,
    /// Received reports larger than this (or expanding to more) are not read.
    pub max_received_size: ByteSize,
    /// Received reports are kept this long.
    pub keep: Seconds,
}

/// `postern sendmail`: mail from programs on this machine (cron, mail(1), PHP's mail()).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sendmail {
    /// The sender for local users without an entry in `users`; "" = the user's name at the
    /// first local domain.
    pub from: String,
    /// Local user name -> the address their mail is sent as.
    pub users: std::collections::BTreeMap<String, String>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            send: true,
            from: String::new(),
            org_name: String::new(),
            max_received_size: ByteSize(10 << 20),
            keep: Seconds(400 * 86400),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("/var/lib/postern"),
            listen: Listen::default(),
            tls: Tls::default(),
            acme: Acme::default(),
            storage: Storage::default(),
            dns: Dns::default(),
            auth: Auth::default(),
            smtp: Smtp::default(),
            pop3: Pop3::default(),
            imap: Imap::default(),
            delivery: Delivery::default(),
            relay: Relay::default(),
            http: Http::default(),
            mta_sts: MtaSts::default(),
            trace: Trace::default(),
            reports: Reports::default(),
            stats: Stats::default(),
            backup: Backup::default(),
            dav: Dav::default(),
            sendmail: Sendmail::default(),
            routing: Routing::default(),
            sieve: Sieve::default(),
            inbound: Inbound::default(),
            doctor: Doctor::default(),
            log: Log::default(),
        }
    }
}

/// Each listener is a list of `ip:port`; an empty or missing list turns it off.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub smtp: Vec<String>,
    pub submission: Vec<String>,
    pub submissions: Vec<String>,
    pub pop3: Vec<String>,
    pub pop3s: Vec<String>,
    pub imap: Vec<String>,
    pub imaps: Vec<String>,
    pub http: Vec<String>,
    pub https: Vec<String>,
    /// ManageSieve (RFC 5804): users edit their filters; STARTTLS.
    pub managesieve: Vec<String>,
}

/// The protocols a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    Smtp,
    Submission,
    Submissions,
    Pop3,
    Pop3s,
    Imap,
    Imaps,
    Http,
    Https,
    ManageSieve,
}

impl ListenerKind {
    pub const ALL: [ListenerKind; 10] = [
        ListenerKind::Smtp,
        ListenerKind::Submission,
        ListenerKind::Submissions,
        ListenerKind::Pop3,
        ListenerKind::Pop3s,
        ListenerKind::Imap,
        ListenerKind::Imaps,
        ListenerKind::Http,
        ListenerKind::Https,
        ListenerKind::ManageSieve,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
            ListenerKind::Pop3 => "pop3",
            ListenerKind::Pop3s => "pop3s",
            ListenerKind::Imap => "imap",
            ListenerKind::Imaps => "imaps",
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::ManageSieve => "managesieve",
        }
    }

    /// True when TLS starts with the connection (no STARTTLS step).
    pub fn implicit_tls(self) -> bool {
        matches!(
            self,
            ListenerKind::Submissions
                | ListenerKind::Pop3s
                | ListenerKind::Imaps
                | ListenerKind::Https
        )
    }

    pub fn standard_port(self) -> u16 {
        match self {
            ListenerKind::Smtp => 25,
            ListenerKind::Submission => 587,
            ListenerKind::Submissions => 465,
            ListenerKind::Pop3 => 110,
            ListenerKind::Pop3s => 995,
            ListenerKind::Imap => 143,
            ListenerKind::Imaps => 993,
            ListenerKind::Http => 80,
            ListenerKind::Https => 443,
            ListenerKind::ManageSieve => 4190,
        }
    }
}

impl Listen {
    pub fn addresses(&self, kind: ListenerKind) -> &[String] {
        match kind {
            ListenerKind::Smtp => &self.smtp,
            ListenerKind::Submission => &self.submission,
            ListenerKind::Submissions => &self.submissions,
            ListenerKind::Pop3 => &self.pop3,
            ListenerKind::Pop3s => &self.pop3s,
            ListenerKind::Imap => &self.imap,
            ListenerKind::Imaps => &self.imaps,
            ListenerKind::Http => &self.http,
            ListenerKind::Https => &self.https,
            ListenerKind::ManageSieve => &self.managesieve,
        }
    }

    /// Every configured (kind, address) pair, parsed.
    pub fn sockets(&self) -> Vec<(ListenerKind, SocketAddr)> {
        let mut out = Vec::new();
        for kind in ListenerKind::ALL {
            for a in self.addresses(kind) {
                if let Ok(addr) = a.parse() {
                    out.push((kind, addr));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; relative paths are relative to the config file.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// A TLS handshake (implicit TLS or STARTTLS) must finish within this.
    pub handshake_timeout: Seconds,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: String::new(),
            key: String::new(),
            handshake_timeout: Seconds(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// "embedded" (default, no other process) or "postgres".
    pub backend: String,
    /// postgres://... for the postgres backend.
    pub url: String,
    /// Most writes one commit may carry (group commit).
    pub max_batch: usize,
    /// Messages larger than this are spooled to a file while they arrive instead of kept in memory.
    pub spool_threshold: ByteSize,
    /// Memory the embedded store may use to cache its pages (the OS caches the file too).
    pub cache_size: ByteSize,
    /// Connections to PostgreSQL this node keeps at most.
    pub max_connections: usize,
    /// How long a POP3 maildrop stays locked for a node that stopped renewing it (postgres
    /// backend): a dead node's users get their maildrops back after this.
    pub maildrop_lease: Seconds,
    /// Expunged messages stay readable this long for IMAP sessions not yet told of the
    /// expunge (RFC 2180 4.1.2); their disk space comes back after it.
    pub keep_expunged: Seconds,
    /// Disk space the embedded store keeps free: new mail is refused (452 4.3.1) below it, so
    /// the store's own files always have room to change and deletions still work.
    pub min_free: ByteSize,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: "embedded".into(),
            url: String::new(),
            max_batch: 512,
            spool_threshold: ByteSize(1 << 20),
            cache_size: ByteSize(64 << 20),
            max_connections: 16,
            maildrop_lease: Seconds(60),
            keep_expunged: Seconds(3600),
            min_free: ByteSize(32 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// "ip:port" list; empty means the system resolver.
    pub nameservers: Vec<String>,
    /// How long one query may take (tried twice) before it counts as a temporary error.
    pub timeout: Seconds,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            nameservers: Vec::new(),
            timeout: Seconds(5),
        }
    }
}

/// Trust in mail from other servers (the MX listener): SPF, DKIM, DMARC, ARC, reverse DNS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Inbound {
    /// Check SPF, DKIM, DMARC, ARC and reverse DNS, and add Authentication-Results.
    pub check: bool,
    /// Refuse (550 5.7.1) mail that fails DMARC where its domain says p=reject.
    pub dmarc_reject: bool,
    /// Put mail that fails DMARC where its domain says p=quarantine into Junk.
    pub dmarc_quarantine: bool,
    /// What SPF "fail" (-all) alone does: "reject", "junk" or "accept".
    pub spf_fail: String,
    /// Score at which mail goes to Junk (X-Spam-Score).
    pub spam_threshold: f32,
    /// Larger messages get SPF, DMARC (by SPF) and iprev only, no DKIM check.
    pub max_verify_size: ByteSize,
    /// Whose mail is never refused or put in Junk for its authentication results: networks
    /// ("192.0.2.0/24": the connecting client), or addresses and domains (counted only when
    /// SPF or DMARC proves them, since anyone can claim them).
    pub allow: Vec<String>,
    /// Senders (addresses or domains) refused at MAIL FROM.
    pub block: Vec<String>,
    /// Delay mail from (network, sender, recipient) triples not seen before (RFC 6647).
    pub greylist: bool,
    /// How long a new triple waits before its retry is accepted.
    pub greylist_delay: Seconds,
    /// DNS blocklists (e.g. "zen.spamhaus.org") whose listed IPs are refused at MAIL FROM.
    pub dnsbl: Vec<String>,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            check: true,
            dmarc_reject: true,
            dmarc_quarantine: true,
            spf_fail: "junk".into(),
            spam_threshold: 5.0,
            max_verify_size: ByteSize(25 << 20),
            allow: Vec::new(),
            block: Vec::new(),
            greylist: false,
            greylist_delay: Seconds(300),
            dnsbl: Vec::new(),
        }
    }
}

impl Inbound {
    fn listed(list: &[String], sender: &str) -> bool {
        let sender = sender.to_ascii_lowercase();
        let domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
        list.iter().filter(|e| e.parse::<Cidr>().is_err()).any(|e| {
            let e = e.trim().to_ascii_lowercase();
            let e = e.strip_prefix('@').unwrap_or(&e);
            if e.contains('@') {
                e == sender
            } else {
                !domain.is_empty() && (domain == e || domain.ends_with(&format!(".{e}")))
            }
        })
    }

    /// An address or domain entry of `allow` (to be honoured only once proven).
    pub fn allowed(&self, sender: &str) -> bool {
        Self::listed(&self.allow, sender)
    }

    /// A network entry of `allow` holds the client.
    pub fn allowed_ip(&self, ip: std::net::IpAddr) -> bool {
        self.allow
            .iter()
            .filter_map(|e| e.parse::<Cidr>().ok())
            .any(|c| c.contains(ip))
    }

    pub fn blocked(&self, sender: &str) -> bool {
        Self::listed(&self.block, sender)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Accept passwords over connections without TLS. Off: a password never crosses the
    /// network in the clear.
    pub allow_plaintext: bool,
    /// Shortest password `user add` and `user passwd` accept.
    pub min_password_length: usize,
    /// Failed logins from one IP (or for one account) within `failure_window` before a lockout.
    pub max_failures: u32,
    pub failure_window: Seconds,
    /// How long the first lockout lasts; each further one within a day lasts twice as long.
    pub lockout: Seconds,
    /// The longest a lockout grows to.
    pub max_lockout: Seconds,
    /// Pause before answering a failed login.
    pub failure_delay_ms: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            allow_plaintext: false,
            min_password_length: 8,
            max_failures: 10,
            failure_window: Seconds(900),
            lockout: Seconds(900),
            max_lockout: Seconds(86400),
            failure_delay_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Largest message accepted (advertised in SIZE).
    pub max_message_size: ByteSize,
    pub max_recipients: usize,
    /// Command line length limit (RFC 5321 4.5.3.1.4: at least 512).
    pub max_command_line: usize,
    /// The line length (CRLF included) RFC 5321 4.5.3.1.6 allows: longer lines are accepted,
    /// and re-encoded in mail we sign or a next hop refuses for them.
    pub max_text_line: usize,
    /// More Received headers than this is a mail loop (554 5.4.6).
    pub max_received_headers: usize,
    /// Bad commands before the connection is closed.
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// RFC 5321 4.5.3.2 timeouts.
    pub timeout_command: Seconds,
    pub timeout_data: Seconds,
    /// Message data slower than this (bytes per second, after `timeout_data` of grace) is
    /// cut off: a client that dribbles a byte at a time holds no connection for long.
    pub min_data_rate: u64,
    /// Refuse mail whose DATA contains a bare CR or LF (SMTP smuggling defence).
    pub reject_bare_lf: bool,
    /// On the MX listener, wait this long before the banner; a client that talks in that time
    /// is dropped (RFC 5321 4.3.1: clients wait for the greeting). 0 turns it off.
    pub pregreet_wait_ms: u64,
    /// Networks ("10.0.0.0/8", "192.0.2.7") whose clients may relay through the MX listener
    /// without logging in (printers, application servers). Empty: nobody.
    pub relay_networks: Vec<String>,
    /// New connections one IP may open per minute (0: no limit).
    pub max_connection_rate_per_ip: u32,
    /// Messages one logged-in user may send per hour (0: no limit).
    pub max_messages_per_hour: u32,
    /// Recipients one logged-in user may send to per hour (0: no limit).
    pub max_recipients_per_hour: u32,
    /// The account that gets mail for postmaster and abuse at every local domain when no
    /// account or alias of that name exists. Empty: the first of `http.admins`, else the
    /// first account.
    pub postmaster: String,
}

/// An IP network, "192.0.2.0/24" or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Http {
    pub fn metrics_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.metrics_networks
            .iter()
            .filter_map(|n| n.parse::<Cidr>().ok())
            .any(|c| c.contains(ip))
    }
}

impl Smtp {
    pub fn relay_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.relay_networks
            .iter()
            .filter_map(|n| n.parse::<Cidr>().ok())
            .any(|c| c.contains(ip))
    }
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            max_message_size: ByteSize(50 << 20),
            max_recipients: 1000,
            max_command_line: 512,
            max_text_line: 1000,
            max_received_headers: 100,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 50,
            timeout_command: Seconds(300),
            timeout_data: Seconds(600),
            min_data_rate: 500,
            reject_bare_lf: true,
            pregreet_wait_ms: 100,
            relay_networks: Vec::new(),
            max_connection_rate_per_ip: 0,
            max_messages_per_hour: 1000,
            max_recipients_per_hour: 5000,
            postmaster: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3 {
    pub idle_timeout: Seconds,
    /// A client must log in this soon after connecting.
    pub login_timeout: Seconds,
    /// A client that takes none of our output for this long is disconnected.
    pub write_timeout: Seconds,
    pub max_line: usize,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            idle_timeout: Seconds(600),
            login_timeout: Seconds(180),
            write_timeout: Seconds(300),
            max_line: 512,
            max_errors: 10,
            max_connections: 2000,
            max_connections_per_ip: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Imap {
    pub idle_timeout: Seconds,
    /// A client must log in this soon after connecting.
    pub login_timeout: Seconds,
    /// A client that takes none of our output for this long is disconnected.
    pub write_timeout: Seconds,
    /// Literals slower than this (bytes per second, after `idle_timeout` of grace) are cut
    /// off.
    pub min_literal_rate: u64,
    /// Longest command line outside literals.
    pub max_line: usize,
    /// Largest literal (APPEND message) once logged in.
    pub max_literal: ByteSize,
    /// Largest literal before login.
    pub max_literal_unauth: ByteSize,
    /// FETCH PREVIEW reads at most this much of a message for its first text part.
    pub max_preview_read: ByteSize,
    pub max_errors: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Where folders others share appear: `PREFIX/owner@domain/folder` (RFC 2342).
    pub shared_prefix: String,
    /// METADATA (RFC 5464): the largest value, entries of one user per mailbox (or on the
    /// server), all of one user's entries together; the administrator's contact
    /// (`/shared/admin`; "" = postmaster at `hostname`).
    pub metadata_max_value: ByteSize,
    pub metadata_max_entries: u64,
    pub metadata_max_total: ByteSize,
    pub metadata_admin: String,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            idle_timeout: Seconds(1800),
            login_timeout: Seconds(180),
            write_timeout: Seconds(300),
            min_literal_rate: 500,
            max_line: 65536,
            max_literal: ByteSize(64 << 20),
            max_literal_unauth: ByteSize(8192),
            max_preview_read: ByteSize(4 << 20),
            max_errors: 20,
            max_connections: 20000,
            max_connections_per_ip: 100,
            shared_prefix: "Shared".into(),
            metadata_max_value: ByteSize(64 << 10),
            metadata_max_entries: 100,
            metadata_max_total: ByteSize(1 << 20),
            metadata_admin: String::new(),
        }
    }
}

/// Sending mail to other domains.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// The port of other domains' mail servers (25; other values are for tests).
    pub remote_port: u16,
    /// Simultaneous outgoing connections in all.
    pub max_concurrency: usize,
    /// Simultaneous outgoing connections to one domain.
    pub max_per_domain: usize,
    pub connect_timeout: Seconds,
    /// Waiting for any reply of the remote server (RFC 5321 4.5.3.2 suggests 5 to 10 minutes).
    pub command_timeout: Seconds,
    /// Pauses between attempts; the last one repeats.
    pub retry: Vec<Seconds>,
    /// Give up (and tell the sender) after this long.
    pub max_lifetime: Seconds,
    /// Tell senders who asked (NOTIFY=DELAY) that delivery is delayed after this long; 0 = never.
    pub delay_warning: Seconds,
    /// Honour DANE (RFC 7672) when the resolver validates DNSSEC (sets the AD bit).
    pub dane: bool,
    /// Honour MTA-STS policies (RFC 8461) of domains without DANE.
    pub mta_sts: bool,
    /// The HTTPS port of `mta-sts.<domain>` (443; other values are for tests).
    pub mta_sts_port: u16,
    /// More certificate authorities (PEM) trusted for MTA-STS, beside the system's.
    pub ca_file: String,
    /// How long a node's claim on a message it delivers lasts; when a node dies, another takes
    /// its messages over after this (several nodes on one database).
    pub claim_timeout: Seconds,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            remote_port: 25,
            max_concurrency: 50,
            max_per_domain: 5,
            connect_timeout: Seconds(30),
            command_timeout: Seconds(300),
            retry: vec![
                Seconds(300),
                Seconds(600),
                Seconds(1200),
                Seconds(2400),
                Seconds(3600),
                Seconds(7200),
                Seconds(14400),
            ],
            max_lifetime: Seconds(5 * 86400),
            delay_warning: Seconds(4 * 3600),
            dane: true,
            mta_sts: true,
            mta_sts_port: 443,
            ca_file: String::new(),
            claim_timeout: Seconds(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Seconds,
    /// Clients that may read `/metrics` (Prometheus).
    pub metrics_networks: Vec<String>,
    /// Mail accounts that log in to the web interface as administrators.
    pub admins: Vec<String>,
    /// A web session ends after this long without a request...
    pub session_idle: Seconds,
    /// ... and after this long in any case.
    pub session_max_age: Seconds,
    /// Web sessions kept at once; the least recently used goes first beyond this.
    pub max_sessions: usize,
    /// Messages one page of the webmail's message list shows at most.
    pub mail_page_max: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            max_connections: 2000,
            max_connections_per_ip: 100,
            header_timeout: Seconds(30),
            metrics_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            admins: Vec::new(),
            session_idle: Seconds(30 * 60),
            session_max_age: Seconds(12 * 3600),
            max_sessions: 10_000,
            mail_page_max: 200,
        }
    }
}

/// The MTA-STS policy (RFC 8461) served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MtaSts {
    /// "testing" (report only), "enforce", or "none".
    pub mode: String,
    pub max_age: Seconds,
}

impl Default for MtaSts {
    fn default() -> Self {
        MtaSts {
            mode: "testing".into(),
            max_age: Seconds(7 * 86400),
        }
    }
}

/// A smarthost: all outgoing mail goes through another server (where port 25 is blocked).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// "host:port"; empty = deliver directly to each domain's MX.
    pub host: String,
    pub username: String,
    pub password: String,
    /// "starttls" (required, the default), "tls" (implicit, port 465), "opportunistic", "none".
    pub tls: String,
    /// With "starttls" or "tls": the smarthost's certificate must be valid for its name (system
    /// authorities and `delivery.ca_file`).
    pub verify: bool,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            host: String::new(),
            username: String::new(),
            password: String::new(),
            tls: String::new(),
            verify: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace; RUST_LOG overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

impl Config {
    /// The most connections one listener may hold at once (each is an open file).
    pub fn most_connections(&self) -> usize {
        [
            self.smtp.max_connections,
            self.pop3.max_connections,
            self.imap.max_connections,
            self.http.max_connections,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// Reads, parses and validates a config file. Relative paths inside it are made
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base)
    }

    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        cfg.resolve_paths(base);
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.data_dir = abs(&self.data_dir);
        for s in [
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.delivery.ca_file,
            &mut self.acme.ca_file,
        ] {
            if !s.is_empty() {
                *s = abs(Path::new(s)).to_string_lossy().into_owned();
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let p = &self.imap.shared_prefix;
        if p.is_empty() || p.eq_ignore_ascii_case("INBOX") || p.contains(['/', '*', '%', '"']) {
            return Err(format!(
                "imap.shared_prefix {p:?} must be one folder name, not INBOX"
            ));
        }
        let i = &self.imap;
        if i.metadata_max_value.0 < 1024 || i.metadata_max_entries < 10 {
            return Err("imap.metadata_max_value must be at least 1K and imap.metadata_max_entries at least 10 (RFC 5464 4.1)".into());
        }
        if !is_hostname(&self.hostname) {
            return Err(format!(
                "hostname {:?} is not a valid host name (letters, digits, '-' and '.')",
                self.hostname
            ));
        }
        for kind in ListenerKind::ALL {
            for a in self.listen.addresses(kind) {
                if a.parse::<SocketAddr>().is_err() {
                    return Err(format!(
                        "listen.{}: {a:?} is not an ip:port address (e.g. \"0.0.0.0:{}\" or \"[::]:{}\")",
                        kind.name(),
                        kind.standard_port(),
                        kind.standard_port()
                    ));
                }
            }
        }
        let sep = &self.routing.subaddress_separator;
        if sep.chars().count() > 1
            || sep
                .chars()
                .any(|c| c.is_alphanumeric() || c.is_whitespace() || "@.\"<>".contains(c))
        {
            return Err(format!(
                "routing.subaddress_separator {sep:?} must be one character such as \"+\" or \"-\" (or \"\" for none)"
            ));
        }
        match self.storage.backend.as_str() {
            "embedded" => {}
            "postgres" => {
                if self.storage.url.is_empty() {
                    return Err(
                        "storage.backend is \"postgres\" but storage.url is empty (postgres://user@host/db)"
                            .into(),
                    );
                }
            }
            other => {
                return Err(format!(
                    "storage.backend {other:?} is unknown; use \"embedded\" or \"postgres\""
                ));
            }
        }
        for ns in &self.dns.nameservers {
            if ns.parse::<SocketAddr>().is_err() && ns.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("dns.nameservers: {ns:?} is not an ip or ip:port"));
            }
        }
        if !["reject", "junk", "accept"].contains(&self.inbound.spf_fail.as_str()) {
            return Err(format!(
                "inbound.spf_fail {:?} must be \"reject\", \"junk\" or \"accept\"",
                self.inbound.spf_fail
            ));
        }
        for n in &self.http.metrics_networks {
            if n.parse::<Cidr>().is_err() {
                return Err(format!(
                    "http.metrics_networks: {n:?} is not a network such as \"127.0.0.0/8\""
                ));
            }
        }
        for n in &self.inbound.allow {
            if n.contains('/') && n.parse::<Cidr>().is_err() {
                return Err(format!(
                    "inbound.allow: {n:?} is neither a network nor an address or domain"
                ));
            }
        }
        if self.dns.timeout.0 == 0 {
            return Err("dns.timeout must be at least 1s".into());
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err("tls.cert and tls.key must be given together".into());
        }
        if self.smtp.max_command_line < 512 {
            return Err("smtp.max_command_line must be at least 512 (RFC 5321 4.5.3.1.4)".into());
        }
        if self.smtp.max_text_line < 1000 {
            return Err("smtp.max_text_line must be at least 1000 (RFC 5321 4.5.3.1.6)".into());
        }
        for n in &self.smtp.relay_networks {
            let c: Cidr = n.parse().map_err(|e| format!("smtp.relay_networks: {e}"))?;
            if c.prefix == 0 {
                return Err(format!(
                    "smtp.relay_networks: {n:?} would let anyone on the internet send through this server (an open relay)"
                ));
            }
        }
        if !matches!(
            self.relay.tls.as_str(),
            "" | "starttls" | "tls" | "opportunistic" | "none"
        ) {
            return Err(format!(
                "relay.tls {:?} is unknown; use \"starttls\", \"tls\", \"opportunistic\" or \"none\"",
                self.relay.tls
            ));
        }
        if !matches!(self.mta_sts.mode.as_str(), "testing" | "enforce" | "none") {
            return Err(format!(
                "mta_sts.mode {:?} is unknown; use \"testing\", \"enforce\" or \"none\"",
                self.mta_sts.mode
            ));
        }
        if self.delivery.retry.is_empty() {
            return Err("delivery.retry needs at least one pause".into());
        }
        if self.storage.max_batch == 0 {
            return Err("storage.max_batch must be at least 1".into());
        }
        self.stats.validate()?;
        self.backup.validate()?;
        self.dav.validate()?;
        self.acme
            .validate(!self.listen.https.is_empty(), !self.listen.http.is_empty())?;
        Ok(())
    }

    /// True when a listener of this kind needs a certificate.
    pub fn needs_tls(&self) -> bool {
        ListenerKind::ALL
            .iter()
            .any(|k| !self.listen.addresses(*k).is_empty() && *k != ListenerKind::Http)
    }
}

pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Values `init` writes into a new config.
pub struct InitValues<'a> {
    pub hostname: &'a str,
    pub data_dir: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub listen_ip: &'a str,
    /// Added to every standard port (0 for the standard ports themselves).
    pub port_offset: u16,
    /// `[acme] enabled`.
    pub acme: bool,
}

/// The commented config file `postern init` writes.
pub fn render_init(v: &InitValues) -> String {
    let ip = if v.listen_ip.contains(':') {
        format!("[{}]", v.listen_ip)
    } else {
        v.listen_ip.to_string()
    };
    let l = |k: ListenerKind| format!("[\"{ip}:{}\"]", k.standard_port() + v.port_offset);
    format!(
        r#"# Postern configuration. Every key has a default; delete a key to get it back.
# Relative paths are relative to this file. Sizes take K/M/G suffixes, times s/m/h/d.

# Our name in SMTP banners, HELO/EHLO and Received headers; mail programs connect to it.
hostname = "{hostname}"
# Everything Postern stores: accounts, mailboxes, the outbound queue.
data_dir = "{data_dir}"

[listen]
# Each is a list of "ip:port"; an empty list turns the listener off.
smtp = {smtp}            # MX: mail from other servers
submission = {submission}      # users sending mail, STARTTLS
submissions = {submissions}     # users sending mail, implicit TLS
pop3 = {pop3}            # STLS
pop3s = {pop3s}
imap = {imap}            # STARTTLS
imaps = {imaps}
http = {http}           # the setup page, autoconfig, Autodiscover, MTA-STS
https = {https}
managesieve = {managesieve}  # users edit their Sieve filters (STARTTLS)

[tls]
# PEM files; reloaded on SIGHUP.
cert = "{cert}"
key = "{key}"
handshake_timeout = "30s"

{acme}
[storage]
backend = "embedded"     # or "postgres"
url = ""                 # postgres://user@host/db for the postgres backend
max_batch = 512          # most writes that share one commit (group commit)
max_connections = 16     # connections to PostgreSQL at most (postgres backend)
maildrop_lease = "60s"   # a POP3 maildrop held by a node that died is free after this
keep_expunged = "1h"     # expunged mail stays readable for IMAP sessions not yet told
min_free = "32M"         # new mail is refused (452 4.3.1) when less disk is free (embedded store)
spool_threshold = "1M"   # larger incoming messages go to a file while they arrive
cache_size = "64M"       # memory for the embedded store's page cache

[dns]
nameservers = []         # "ip:port"; empty = the system resolver
timeout = "5s"           # per query (tried twice); then a temporary error

[inbound]
# Mail from other servers (the MX listener): SPF, DKIM, DMARC, ARC and reverse DNS are checked
# and written into an Authentication-Results header.
check = true
dmarc_reject = true      # refuse (550 5.7.1) what fails DMARC when its domain says p=reject
dmarc_quarantine = true  # ... and put it in Junk when the domain says p=quarantine
spf_fail = "junk"        # what an SPF fail (-all) alone does: reject, junk or accept
spam_threshold = 5.0     # X-Spam-Score at which mail goes to Junk
max_verify_size = "25M"  # larger messages get no DKIM check
allow = []               # networks, or senders and domains proven by SPF or DMARC, never refused or put in Junk
block = []               # senders or domains refused at MAIL FROM
greylist = false         # delay mail from unknown (network, sender, recipient) once
greylist_delay = "5m"
dnsbl = []               # blocklists, e.g. ["zen.spamhaus.org"]: listed IPs are refused

[auth]
allow_plaintext = false  # passwords only over TLS
min_password_length = 8
max_failures = 10        # failed logins per IP or account within failure_window ...
failure_window = "15m"
lockout = "15m"          # ... lock it out this long (twice as long each time within a day)
max_lockout = "24h"
failure_delay_ms = 1000  # pause before a failed-login reply

[smtp]
max_message_size = "50M"
max_recipients = 1000
max_command_line = 512
max_text_line = 1000     # RFC line length incl. CRLF: longer lines are taken, and re-encoded in mail we sign
max_received_headers = 100
max_errors = 20
max_connections = 1000
max_connections_per_ip = 50
timeout_command = "5m"
timeout_data = "10m"
min_data_rate = 500      # bytes/s: slower message data is cut off (after timeout_data)
reject_bare_lf = true    # refuse bare CR/LF in message data (SMTP smuggling defence)
pregreet_wait_ms = 100   # MX: drop clients that talk before the banner (0 = off)
relay_networks = []      # networks that may send to any domain without logging in, e.g. ["10.0.0.0/8"]
max_connection_rate_per_ip = 0  # new connections per IP per minute (0 = no limit)
max_messages_per_hour = 1000    # per logged-in user (0 = no limit): a stolen password sends little
max_recipients_per_hour = 5000
postmaster = ""          # who gets postmaster@ and abuse@ mail when no account or alias has them ("": the first admin)

[pop3]
idle_timeout = "10m"
login_timeout = "3m"     # log in within this after connecting
write_timeout = "5m"     # a client that reads none of our output this long is dropped
max_line = 512
max_errors = 10
max_connections = 2000
max_connections_per_ip = 50

[imap]
idle_timeout = "30m"
login_timeout = "3m"     # log in within this after connecting
write_timeout = "5m"     # a client that reads none of our output this long is dropped
min_literal_rate = 500   # bytes/s: slower literals (APPEND) are cut off (after idle_timeout)
max_line = 65536
max_literal = "64M"
max_literal_unauth = "8K"
max_preview_read = "4M"  # FETCH PREVIEW looks this far into a message for its first text
max_errors = 20
max_connections = 20000
max_connections_per_ip = 100
shared_prefix = "Shared" # others' folders shared with you: Shared/owner@domain/folder
metadata_max_value = "64K"     # METADATA: one value at most
metadata_max_entries = 100     # ... entries of one user per folder (and on the server)
metadata_max_total = "1M"      # ... all of one user's entries together
metadata_admin = ""            # /shared/admin: how to reach you ("": mailto:postmaster@hostname)

[delivery]
remote_port = 25
max_concurrency = 50     # outgoing connections in all
max_per_domain = 5       # ... and to one domain
connect_timeout = "30s"
command_timeout = "5m"
retry = ["5m", "10m", "20m", "40m", "1h", "2h", "4h"]   # the last pause repeats
max_lifetime = "5d"      # then the sender is told
delay_warning = "4h"     # tell senders who asked for it (NOTIFY=DELAY)
dane = true              # DANE (RFC 7672) when the resolver validates DNSSEC
mta_sts = true           # MTA-STS policies (RFC 8461) of domains without DANE
mta_sts_port = 443
ca_file = ""             # more CAs (PEM) for MTA-STS, beside the system's
claim_timeout = "15m"    # a dead node's messages go to another node after this

[relay]
host = ""                # "smtp.provider.example:587": send all outgoing mail through it
username = ""
password = ""
tls = "starttls"         # starttls, tls (port 465), opportunistic, none
verify = true            # with starttls/tls: its certificate must be valid for its name

[http]
max_connections = 2000
max_connections_per_ip = 100
header_timeout = "30s"   # a request's headers must arrive within this
metrics_networks = ["127.0.0.0/8", "::1/128"]   # who may read /metrics (Prometheus)
admins = []              # accounts that log in to the web admin ("postmaster@example.com")
session_idle = "30m"     # a web session ends after this long unused
session_max_age = "12h"  # ... and after this long in any case
max_sessions = 10000
mail_page_max = 200      # messages on one page of the webmail's message list, at most

[mta_sts]
mode = "testing"         # policy served at /.well-known/mta-sts.txt: testing, enforce, none
max_age = "7d"

[trace]
retention = "30d"        # postern trace remembers messages this long

[reports]
send = true              # daily DMARC and TLS reports to domains that ask for them (rua)
from = ""                # their From ("" = postmaster at the first local domain)
org_name = ""            # our name in them ("" = the hostname)
max_received_size = "10M" # reports sent to us larger than this are not read
keep = "400d"            # reports sent to us are kept this long (postern reports list)

{stats}
{backup}
{dav}
[sendmail]
from = ""                # sender of mail from local programs ("" = the user's name at the first local domain)
users = {{}}               # per local user: {{ root = "admin@example.com", www-data = "web@example.com" }}

[routing]
subaddress_separator = "+"   # alice+news@ reaches alice@ ("" = off)
subaddress_folder = false    # ... into her folder "news" when she has one

[sieve]
max_script_size = "64K"
max_scripts = 32         # per account
max_message_size = "10M" # larger messages skip filters and go to the INBOX
max_instructions = 5000  # per run: a runaway script stops and the message is kept
max_redirects = 4        # per message
max_out_messages = 3     # vacation replies and notices per message
vacation_default_days = 7  # one vacation reply per sender this often, unless the script says
idle_timeout = "10m"     # ManageSieve sessions
login_timeout = "3m"
write_timeout = "5m"
max_connections = 500
max_connections_per_ip = 20
max_errors = 10

[doctor]
probe_domain = "gmail.com"     # postern doctor tries port 25 to this domain's MX ("" to skip)
ntp_server = "pool.ntp.org:123"  # clock check ("" to skip)
dnsbl = []               # blocklists to look our IP up in, e.g. ["zen.spamhaus.org"]
public_ip = ""           # default: the addresses the hostname resolves to
disk_warn_free = "2G"
queue_warn_age = "1h"
cert_warn = "14d"

[log]
level = "info"           # error, warn, info, debug, trace (RUST_LOG overrides)
"#,
        hostname = v.hostname,
        data_dir = toml_escape(&v.data_dir.to_string_lossy()),
        cert = toml_escape(&v.cert.to_string_lossy()),
        key = toml_escape(&v.key.to_string_lossy()),
        smtp = l(ListenerKind::Smtp),
        submission = l(ListenerKind::Submission),
        submissions = l(ListenerKind::Submissions),
        pop3 = l(ListenerKind::Pop3),
        pop3s = l(ListenerKind::Pop3s),
        imap = l(ListenerKind::Imap),
        imaps = l(ListenerKind::Imaps),
        http = l(ListenerKind::Http),
        https = l(ListenerKind::Https),
        managesieve = l(ListenerKind::ManageSieve),
        acme = acme::render(v.acme),
        stats = stats::RENDER,
        backup = backup::RENDER,
        dav = dav::RENDER,
    )
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests;
