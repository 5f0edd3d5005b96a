//! The command line: every subcommand and its arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "An all-in-one mail server: SMTP, POP3, IMAP, accounts, aliases",
    long_about = None
)]
pub struct Cli {
    /// Config file [default: ./postern.toml, then $POSTERN_CONFIG, then ./postern-data/postern.toml, then /etc/postern/postern.toml]
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a config, a certificate and a DKIM key for a new server
    Init(InitArgs),
    /// Set up a server and an account in one go, then serve
    Quickstart(QuickstartArgs),
    /// Run every configured listener until SIGTERM or SIGINT
    Serve,
    /// Check the config file
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage local domains
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Manage accounts
    #[command(subcommand)]
    User(UserCmd),
    /// Manage aliases (one address delivering to others)
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Inspect and manage the outbound queue
    #[command(subcommand)]
    Queue(QueueCmd),
    /// DKIM signing keys
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// DMARC and TLS reports: what other servers report about your domains, and sending ours
    #[command(subcommand)]
    Reports(ReportsCmd),
    /// Mail flow, refusals, queue, logins, latency and disk over time, per hour or day, with
    /// a sparkline per series; and the last day's busiest senders, recipients and hosts
    Stats {
        /// How far back: e.g. 24h, 7d, 30d, 1y
        #[arg(long, default_value = "24h")]
        range: String,
        /// hour or day [default: hour up to 3 days]
        #[arg(long)]
        step: Option<String>,
        /// Print as JSON (the same as GET /api/v1/stats)
        #[arg(long)]
        json: bool,
    },
    /// Certificates from Let's Encrypt (or another ACME CA): status, renewal, key rollover
    #[command(subcommand)]
    Acme(AcmeCmd),
    /// The sendmail(1) interface for local programs: message on stdin, recipients as
    /// arguments or -t; -f, -F, -i/-oi as sendmail takes them
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Make this binary the machine's sendmail and mailq (links in --sbin and --bin), and its
    /// config the one they find (/etc/postern/postern.toml)
    InstallSendmail {
        #[arg(long, default_value = "/usr/sbin")]
        sbin: std::path::PathBuf,
        #[arg(long, default_value = "/usr/bin")]
        bin: std::path::PathBuf,
    },
    /// Send an account's mail on to another address
    #[command(subcommand)]
    Forward(ForwardCmd),
    /// Groups (distribution lists) and who may send to them
    #[command(subcommand)]
    Group(GroupCmd),
    /// Shared mailboxes (info@, support@): read by their members, logged in as by no one
    #[command(subcommand)]
    Mailbox(MailboxCmd),
    /// Who may send as (or on behalf of) another address
    #[command(subcommand)]
    SendAs(SendAsCmd),
    /// A user's Sieve filters: folders, vacation replies, redirects
    #[command(subcommand)]
    Sieve(SieveCmd),
    /// A user's calendars and address books as .ics and .vcf files
    #[command(subcommand)]
    Dav(DavCmd),
    /// Tokens for the JSON API (/api/v1)
    #[command(subcommand)]
    Token(TokenCmd),
    /// Move mail in and out: Maildir trees (Dovecot, Courier)
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Back up the whole store while the server runs (or one account with --user);
    /// `postern backup list DIR` shows what DIR holds
    Backup(BackupArgs),
    /// A new data directory from a backup (--data-dir), or an account's folders back into
    /// the server (--user)
    Restore(RestoreArgs),
    /// Where mail to ADDRESS would go, step by step, and why
    Route { address: String },
    /// The story of messages: received, routed, delivered, queued, each delivery attempt...
    Trace(TraceArgs),
    /// Check this server as the internet sees it: listeners, certificate, DNS, reverse DNS,
    /// relaying, outbound port 25, clock, disk, queue, blocklists; each problem with its fix
    Doctor {
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
    /// Try an account's settings the way a mail program does, against any server, and say
    /// what is wrong and how to fix it
    Check(CheckArgs),
    /// Print the DNS records to publish (MX, SPF, DKIM, DMARC, MTA-STS, SRV...); --check compares
    /// them with what DNS answers
    Dns {
        /// One domain (default: every local domain)
        domain: Option<String>,
        /// Look each record up and mark it OK, MISSING or WRONG, with the fix
        #[arg(long)]
        check: bool,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub cmd: Option<BackupCmd>,
    /// Where: each backup is a new directory in it
    #[arg(required = true)]
    pub dir: Option<PathBuf>,
    /// Copy only the message bytes added since the newest backup in DIR (the records are
    /// copied whole each time)
    #[arg(long)]
    pub incremental: bool,
    /// Back up one account (works on every storage backend)
    #[arg(long, value_name = "ADDRESS")]
    pub user: Option<String>,
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// The finished backups in DIR, oldest first
    List {
        dir: PathBuf,
        /// Also read every file back and check its SHA-256
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup directory (as given to postern backup)
    pub dir: PathBuf,
    /// Make a new data directory here from a whole-store backup (the running server is not
    /// touched; point data_dir at it and start the server)
    #[arg(long, conflicts_with = "user")]
    pub data_dir: Option<PathBuf>,
    /// The newest backup taken at or before this time (UTC): 2026-12-04, 2026-12-04T17:05
    #[arg(long, conflicts_with = "name")]
    pub at: Option<String>,
    /// This backup, by the name postern backup list shows
    #[arg(long)]
    pub name: Option<String>,
    /// Bring this account's folders back into the server from its newest account backup
    #[arg(long, value_name = "ADDRESS")]
    pub user: Option<String>,
    /// Only this folder (and its subfolders)
    #[arg(long, requires = "user")]
    pub folder: Option<String>,
    /// Under this name instead of the old one
    #[arg(long = "as", value_name = "NAME", requires = "user")]
    pub as_name: Option<String>,
}

#[derive(Args)]
pub struct TraceArgs {
    /// The id from the 250 reply ("OK: delivered as ...")
    #[arg(long)]
    pub id: Option<String>,
    /// The Message-ID header
    #[arg(long)]
    pub message_id: Option<String>,
    /// Envelope sender
    #[arg(long)]
    pub from: Option<String>,
    /// Recipient
    #[arg(long)]
    pub to: Option<String>,
    /// Only messages seen in this time, e.g. 30m, 2h, 7d
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many messages
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The email address, e.g. you@example.com
    pub address: String,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// The user name set in the mail program [default: the address]
    #[arg(long)]
    pub username: Option<String>,
    /// Incoming IMAP server as set in the mail program: HOST[:PORT][:ssl|starttls|none]
    #[arg(long, value_name = "SERVER")]
    pub imap: Option<String>,
    /// Incoming POP3 server: HOST[:PORT][:ssl|starttls|none]
    #[arg(long, value_name = "SERVER")]
    pub pop3: Option<String>,
    /// Outgoing SMTP server: HOST[:PORT][:ssl|starttls|none]
    #[arg(long, value_name = "SERVER")]
    pub smtp: Option<String>,
    /// The mail program does not log in to the outgoing server
    #[arg(long)]
    pub smtp_no_auth: bool,
    /// Send a test message to the address and wait for it in the inbox
    #[arg(long)]
    pub roundtrip: bool,
    /// How long --roundtrip waits for the message, e.g. 30s, 2m
    #[arg(long, default_value = "60s")]
    pub wait: String,
    /// Do not look for the domain's published settings
    #[arg(long)]
    pub no_discover: bool,
    /// Fetch autoconfig from this URL instead of the usual ones
    #[arg(long, value_name = "URL")]
    pub autoconfig: Option<String>,
    /// Ask Autodiscover at this URL instead of the usual ones
    #[arg(long, value_name = "URL")]
    pub autodiscover: Option<String>,
    /// Ask this DNS server (IP or IP:PORT) instead of the system's
    #[arg(long, value_name = "SERVER")]
    pub dns: Vec<String>,
    /// Also trust the certificates in this PEM file
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// Seconds to wait for each connection and answer
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum QueueCmd {
    /// Messages waiting for delivery, with their next attempt and last error
    List,
    /// One queued message in detail
    Show { id: u64 },
    /// Try now (one message, or --all)
    Retry {
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a queued message without telling its sender
    Delete { id: u64 },
    /// Return a queued message to its sender now
    Bounce { id: u64 },
}

#[derive(Subcommand)]
pub enum ReportsCmd {
    /// Per domain: who sends mail as it, how much passes SPF, DKIM and DMARC, which sources
    /// to look at, and how TLS to its servers fares (from the reports other servers send)
    List {
        /// One domain (default: all)
        #[arg(long)]
        domain: Option<String>,
        /// Reports received in this many days
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Send the DMARC aggregate and TLS reports other domains ask for (sent daily anyway)
    Send {
        /// Everything counted so far, today's too
        #[arg(long)]
        now: bool,
    },
}

#[derive(Subcommand)]
pub enum AcmeCmd {
    /// Each certificate's names, days left, next renewal and last error; the TLSA record
    Status {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Order the certificates that are due now (the server renews by itself too)
    Renew {
        /// Every certificate, due or not (mind the CA's rate limits)
        #[arg(long)]
        force: bool,
    },
    /// A new certificate key for DANE in two steps: this makes it and prints its TLSA record
    /// to publish beside the current one; --finish, once DNS has it, puts it in use
    Rollover {
        #[arg(long)]
        finish: bool,
    },
}

#[derive(Subcommand)]
pub enum DkimCmd {
    /// Make a new key (new selector) for DOMAIN and print its DNS record
    Rotate {
        domain: String,
        /// rsa (2048 bits, read everywhere) or ed25519
        #[arg(long, default_value = "rsa")]
        algorithm: String,
    },
}

#[derive(Args)]
pub struct InitArgs {
    /// The mail domain, as in user@DOMAIN
    #[arg(long)]
    pub domain: String,
    /// This server's name [default: mail.DOMAIN]
    #[arg(long)]
    pub hostname: Option<String>,
    /// Where to put the config and all data
    #[arg(long, default_value = "postern-data")]
    pub data_dir: PathBuf,
    /// Address the listeners bind to
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_ip: String,
    /// Added to every standard port (e.g. 10000: SMTP on 10025), for running without root
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Get certificates from Let's Encrypt ([acme] enabled = true); the names must lead here
    #[arg(long)]
    pub acme: bool,
}

#[derive(Args)]
pub struct QuickstartArgs {
    /// The first account, e.g. you@example.com
    pub address: String,
    /// This server's name [default: mail.DOMAIN]
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long, default_value = "postern-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_ip: String,
    /// Added to every standard port [default: 0 as root, else 10000]
    #[arg(long)]
    pub port_offset: Option<u16>,
    /// Set up only; do not start serving
    #[arg(long)]
    pub no_serve: bool,
    /// Get certificates from Let's Encrypt ([acme] enabled = true); the names must lead here
    #[arg(long)]
    pub acme: bool,
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Parse and validate the config file
    Check,
}

#[derive(Subcommand)]
pub enum DomainCmd {
    /// Add a local domain
    Add { domain: String },
    /// List local domains
    List,
    /// Delete a local domain (it must have no users or aliases left)
    Del { domain: String },
}

#[derive(Args)]
pub struct PasswordArgs {
    /// The password (visible in the process list; prefer --password-stdin)
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add an account
    Add {
        address: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Storage quota, e.g. 2G or 500M (default: unlimited)
        #[arg(long)]
        quota: Option<String>,
    },
    /// List accounts with their usage
    List,
    /// Delete an account and all its mail
    Del { address: String },
    /// Change an account's password
    Passwd {
        address: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set an account's storage quota (0 = unlimited); the owner is told at 90%
    Quota {
        address: String,
        size: String,
        /// Also limit the number of messages (0 = unlimited)
        #[arg(long)]
        messages: Option<u64>,
    },
    /// Stop an account from logging in (its mail still arrives and is kept)
    Disable { address: String },
    /// Let a disabled account log in again
    Enable { address: String },
}

#[derive(Subcommand)]
pub enum ForwardCmd {
    /// Forward USER's mail to TARGET (with an SRS sender, so SPF passes there)
    Set {
        user: String,
        target: String,
        /// Keep a copy in USER's INBOX too
        #[arg(long)]
        keep_copy: bool,
    },
    /// Stop forwarding USER's mail
    Clear { user: String },
}

#[derive(Subcommand)]
pub enum StorageCmd {
    /// Copy a Maildir tree (e.g. Dovecot's ~/Maildir) into an account: folders, flags,
    /// keywords and received dates
    ImportMaildir { address: String, dir: PathBuf },
    /// Write an account's mail as a Maildir tree in a new directory
    ExportMaildir { address: String, dir: PathBuf },
    /// Create or update the database schema of storage.url (also done at every start)
    Migrate,
    /// Copy everything of this server's store into another, empty one (a postgres:// URL or
    /// an embedded store's directory), then compare the counts; stop the server first
    Export { target: String },
    /// Copy everything of another store (a postgres:// URL or a directory) into this server's
    /// empty store, then compare the counts; stop the server first
    Import { source: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// A new token named NAME; its secret is printed once, keep it
    Create {
        name: String,
    },
    List,
    /// The token no longer opens the API
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum DavCmd {
    /// Write USER's calendar NAME (or address book, with --addressbook) as one .ics (.vcf)
    /// file to FILE, or to standard output
    Export {
        user: String,
        name: String,
        #[arg(long)]
        addressbook: bool,
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Store every event, to-do or contact of FILE ("-" for standard input) in USER's
    /// calendar (or address book) NAME, made if new; an object with a UID already there
    /// replaces it
    Import {
        user: String,
        name: String,
        file: std::path::PathBuf,
        #[arg(long)]
        addressbook: bool,
    },
}

#[derive(Subcommand)]
pub enum SieveCmd {
    /// USER's scripts; the one that runs is marked ACTIVE
    List { user: String },
    /// Print script NAME of USER
    Get { user: String, name: String },
    /// Check and store FILE ("-" for standard input) as USER's script NAME
    Put {
        user: String,
        name: String,
        file: std::path::PathBuf,
        /// Make it the script that runs
        #[arg(long)]
        activate: bool,
    },
    /// Make script NAME the one that filters USER's mail
    Activate {
        user: String,
        #[arg(required_unless_present = "none")]
        name: Option<String>,
        /// Run no script for USER
        #[arg(long, conflicts_with = "name")]
        none: bool,
    },
    /// Delete script NAME of USER (not the active one)
    Delete { user: String, name: String },
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create a group (distribution list) delivering to each MEMBER
    Add {
        group: String,
        #[arg(required = true)]
        members: Vec<String>,
        /// Who may send to it: anyone, members, domain (logged-in users of the group's
        /// domain) or senders (those given with --sender)
        #[arg(long, default_value = "domain")]
        policy: String,
        /// With --policy senders: an address that may send (repeat it)
        #[arg(long = "sender")]
        senders: Vec<String>,
    },
    /// Delete a group
    Del { group: String },
    /// List groups, their policies and members
    List,
    /// List a group's members
    Members { group: String },
    /// Add members
    AddMember {
        group: String,
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove a member
    DelMember { group: String, member: String },
    /// Change who may send to a group
    Policy {
        group: String,
        /// anyone, members, domain or senders
        policy: String,
        #[arg(long = "sender")]
        senders: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum MailboxCmd {
    /// Create the shared mailbox ADDRESS (with its standard folders) and let each member use
    /// every folder of it; it appears in their mail program under Shared/ADDRESS
    Add {
        address: String,
        /// The accounts that use it (or $group@domain, $domain)
        #[arg(long, required = true, num_args = 1..)]
        members: Vec<String>,
        /// RFC 4314 rights of each member: l r s w i p k x t e a [default: lrswipkxte, all
        /// but a (administer)]
        #[arg(long)]
        rights: Option<String>,
        /// Storage quota, e.g. 2G or 500M (default: unlimited)
        #[arg(long)]
        quota: Option<String>,
    },
    /// Let MEMBER use every folder of the shared mailbox (replacing its rights)
    Grant {
        address: String,
        member: String,
        /// RFC 4314 rights [default: lrswipkxte]
        #[arg(long)]
        rights: Option<String>,
    },
    /// Take MEMBER's access to the shared mailbox away
    Revoke { address: String, member: String },
    /// Each shared mailbox, its members and their rights, and its size
    List,
    /// Delete a shared mailbox and all its mail
    #[command(visible_alias = "del")]
    Delete { address: String },
}

#[derive(Subcommand)]
pub enum SendAsCmd {
    /// Let DELEGATE (an account) send with From: ADDRESS (an account, a shared mailbox or an
    /// alias of this server)
    Add {
        address: String,
        delegate: String,
        /// Only on behalf of ADDRESS: From: ADDRESS with Sender: DELEGATE
        #[arg(long)]
        on_behalf: bool,
    },
    /// DELEGATE may no longer send as ADDRESS
    #[command(visible_alias = "del")]
    Remove { address: String, delegate: String },
    /// Every send-as grant
    List,
}

#[derive(Subcommand)]
pub enum AliasCmd {
    /// Make ALIAS deliver to each TARGET (added to existing targets). `@example.com TARGET...`
    /// is the domain's catch-all; `@example.org @example.com` makes example.org an alias of
    /// example.com
    Add {
        alias: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// List aliases
    List,
    /// Delete an alias, or only one of its targets
    Del {
        alias: String,
        target: Option<String>,
    },
}
