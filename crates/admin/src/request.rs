//! What an admin request asks and what it gets back: serde types, so they cross the control
//! socket unchanged, and the HTTP API answers with the same JSON.

use postern_directory::AddressError;
use postern_store::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    DomainAdd {
        name: String,
    },
    DomainDel {
        name: String,
    },
    DomainList,
    UserAdd {
        address: String,
        password: String,
        quota: Option<u64>,
    },
    UserDel {
        address: String,
    },
    UserList,
    UserPasswd {
        address: String,
        password: String,
    },
    /// Stop (or allow again) an account's logins; its mail still arrives.
    UserDisable {
        address: String,
        disabled: bool,
    },
    UserQuota {
        address: String,
        quota: u64,
        /// Message count limit; `None` leaves it as it is.
        #[serde(default)]
        messages: Option<u64>,
    },
    AliasAdd {
        alias: String,
        targets: Vec<String>,
    },
    AliasDel {
        alias: String,
        target: Option<String>,
    },
    AliasList,
    /// A group: an alias with a sending policy ("anyone", "members", "domain", "senders").
    GroupAdd {
        group: String,
        members: Vec<String>,
        policy: String,
        senders: Vec<String>,
    },
    GroupPolicy {
        group: String,
        policy: String,
        senders: Vec<String>,
    },
    GroupList,
    /// Send an account's mail on to another address (`None`: stop forwarding).
    Forward {
        address: String,
        to: Option<String>,
        keep_copy: bool,
    },
    /// A shared mailbox (info@, support@): an account no one logs in as, whose folders its
    /// members use. Each member gets `rights` (RFC 4314 letters; default all but `a`) on every
    /// folder.
    MailboxAdd {
        address: String,
        members: Vec<String>,
        #[serde(default)]
        rights: Option<String>,
        #[serde(default)]
        quota: Option<u64>,
    },
    /// Gives `member` these rights (default all but `a`) on every folder of the shared
    /// mailbox, replacing what it had.
    MailboxGrant {
        address: String,
        member: String,
        #[serde(default)]
        rights: Option<String>,
    },
    /// Takes `member`'s rights away on every folder of the shared mailbox.
    MailboxRevoke {
        address: String,
        member: String,
    },
    /// Every shared mailbox, its members with their rights, and its size.
    MailboxList,
    /// Deletes a shared mailbox with all its mail, and the send-as grants for it.
    MailboxDel {
        address: String,
    },
    /// Lets `delegate` send as `address` (`on_behalf`: on behalf of it, with `Sender:` the
    /// delegate); replaces the grant it had.
    SendAsAdd {
        address: String,
        delegate: String,
        #[serde(default)]
        on_behalf: bool,
    },
    SendAsDel {
        address: String,
        delegate: String,
    },
    SendAsList,
    /// What an account may use besides its own: the folders shared with it (by owner) and
    /// its send-as grants.
    Access {
        address: String,
    },
    /// Where mail to an address goes, step by step.
    Route {
        address: String,
    },
    /// A user's Sieve scripts, by name, with the active one marked.
    SieveList {
        address: String,
    },
    SieveGet {
        address: String,
        name: String,
    },
    /// Checks and stores a script; `activate` makes it the one that runs.
    SievePut {
        address: String,
        name: String,
        source: String,
        activate: bool,
    },
    /// `None`: no script runs for the user.
    SieveActivate {
        address: String,
        name: Option<String>,
    },
    SieveDelete {
        address: String,
        name: String,
    },
    /// A calendar (or an address book) as one .ics (.vcf) file.
    DavExport {
        address: String,
        name: String,
        addressbook: bool,
    },
    /// Stores each object of an .ics (.vcf) file in the calendar (address book), made if new.
    DavImport {
        address: String,
        name: String,
        addressbook: bool,
        data: String,
    },
    /// A new API token; the reply is the only time its secret is shown.
    TokenCreate {
        name: String,
    },
    TokenList,
    TokenDelete {
        name: String,
    },
    QueueList,
    QueueShow {
        id: u64,
    },
    /// Try now: one entry, or all of them.
    QueueRetry {
        id: Option<u64>,
    },
    QueueDelete {
        id: u64,
    },
    QueueBounce {
        id: u64,
    },
    /// Re-read certificates and DKIM keys (only the running server has them).
    Reload,
    /// Copy a Maildir tree (Dovecot, Courier) into an account.
    MaildirImport {
        address: String,
        path: String,
    },
    /// Write an account's mail as a Maildir tree.
    MaildirExport {
        address: String,
        path: String,
    },
    /// A backup of the whole store, or of one account, into a new directory under `dir`.
    Backup {
        dir: String,
        incremental: bool,
        user: Option<String>,
    },
    /// An account's folders brought back from an account backup in `dir`.
    RestoreAccount {
        dir: String,
        address: String,
        name: Option<String>,
        folder: Option<String>,
        as_name: Option<String>,
    },
    /// Run postern doctor inside the running server; the reply is its report.
    Doctor,
    /// The DNS records a local domain needs (`postern dns`), each judged against DNS when
    /// `check` is set; the reply is a report.
    Dns {
        domain: String,
        check: bool,
    },
    /// Messages and their stories, by any of: trace id, Message-ID, sender, recipient.
    Trace {
        id: Option<String>,
        message_id: Option<String>,
        from: Option<String>,
        to: Option<String>,
        since_secs: Option<u64>,
        limit: usize,
    },
    Ping,
    /// What the DMARC and TLS reports received in the last `days` days say, per domain.
    ReportsList {
        domain: Option<String>,
        days: u32,
    },
    /// Send the DMARC and TLS reports counted so far, today's included.
    ReportsSend,
    /// A message from a program on this machine (`postern sendmail`).
    Submit(Submission),
    /// The ACME certificates: names, days left, the last error.
    AcmeStatus,
    /// The dashboard's series from `from` to `to` (Unix seconds), per hour or day (default:
    /// hours up to three days), and the busiest senders, recipients and hosts of the last
    /// `top_hours`.
    Stats {
        from: i64,
        to: i64,
        step: Option<postern_store::StatStep>,
        top_hours: Option<u32>,
    },
    /// Order the certificates that are due now (`force`: all of them).
    AcmeRenew {
        force: bool,
    },
    /// A new certificate key in two steps (DANE): make it, then (`finish`) use it.
    AcmeRollover {
        finish: bool,
    },
}

/// What `postern sendmail` hands the running server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    /// The local user who ran it: set by the server from the socket's peer, never trusted
    /// from the request.
    #[serde(default)]
    pub local_user: String,
    /// `-f`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for a From field the message lacks.
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// `-t`: recipients from To, Cc and Bcc too (Bcc then removed).
    pub extract: bool,
    /// The message, base64.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueInfo {
    pub id: u64,
    pub trace_id: String,
    pub sender: String,
    /// (address, state, last error)
    pub recipients: Vec<(String, String, Option<String>)>,
    pub size: u64,
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// One received report, without its body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportInfo {
    pub kind: String,
    pub domain: String,
    pub org: String,
    pub report_id: String,
    pub begin: i64,
    pub end: i64,
    pub received: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    pub address: String,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub messages: u64,
    pub disabled: bool,
    /// A shared mailbox (`postern mailbox`): no one logs in as it.
    #[serde(default)]
    pub shared: bool,
}

/// A shared mailbox, with who may use it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedMailboxInfo {
    pub address: String,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub messages: u64,
    pub members: Vec<MemberInfo>,
}

/// One identifier of a shared mailbox's access lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberInfo {
    /// An address, `$group@domain`, `$domain`, `anyone` or `authenticated`.
    pub identifier: String,
    /// RFC 4314 letters, as on INBOX (or on the first folder it has a line on).
    pub rights: String,
    /// The folders with these rights; empty: every folder.
    #[serde(default)]
    pub folders: Vec<String>,
    /// Other rights on some folders, as "folder: letters".
    #[serde(default)]
    pub elsewhere: Vec<String>,
}

/// Another account's folders someone may use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedWith {
    /// The account the folders belong to.
    pub owner: String,
    /// Whether that account is a shared mailbox.
    pub shared: bool,
    /// (folder, rights), by folder.
    pub folders: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminReply {
    Done {
        message: String,
    },
    Domains {
        names: Vec<String>,
    },
    Users {
        users: Vec<UserInfo>,
    },
    Aliases {
        aliases: Vec<(String, Vec<String>)>,
    },
    Queue {
        entries: Vec<QueueInfo>,
    },
    Traces {
        traces: Vec<(String, Vec<postern_store::TraceEvent>)>,
    },
    Pong {
        pid: u32,
    },
    /// A report (the doctor's, the DNS records), as JSON.
    Report {
        json: String,
    },
    Groups {
        /// (address, policy in words, members)
        groups: Vec<(String, String, Vec<String>)>,
    },
    /// Received reports summed up per domain, and the reports themselves.
    Reports {
        domains: Vec<postern_reports::received::DomainSummary>,
        reports: Vec<ReportInfo>,
        days: u32,
    },
    Acme {
        status: postern_acme::Status,
    },
    Stats {
        report: crate::stats::StatsReport,
    },
    Route {
        steps: Vec<String>,
        /// Accounts ("local:" address) and remote addresses ("remote:" address); `None`:
        /// refused at RCPT.
        destinations: Option<Vec<String>>,
    },
    SharedMailboxes {
        mailboxes: Vec<SharedMailboxInfo>,
    },
    SendAs {
        grants: Vec<postern_store::SendAsGrant>,
    },
    Access {
        address: String,
        shared_with: Vec<SharedWith>,
        send_as: Vec<postern_store::SendAsGrant>,
    },
}

/// A one-line error for a person, with the fix when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub message: String,
    /// The storage failed for now: worth trying again (HTTP 503), not a refusal.
    #[serde(default)]
    pub temporary: bool,
    /// Whether what was named does not exist, when the wording cannot tell (a file the
    /// server could not read is not a missing account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<bool>,
}

impl AdminError {
    pub fn new(m: impl Into<String>) -> Self {
        AdminError {
            message: m.into(),
            temporary: false,
            not_found: None,
        }
    }

    /// A refusal, whatever its words say.
    pub fn refused(m: impl Into<String>) -> Self {
        AdminError {
            not_found: Some(false),
            ..AdminError::new(m)
        }
    }

    /// What was named does not exist, whatever the words say.
    pub fn missing(m: impl Into<String>) -> Self {
        AdminError {
            not_found: Some(true),
            ..AdminError::new(m)
        }
    }

    /// The storage or the server failed for now: worth trying again.
    pub fn temporary(m: impl Into<String>) -> Self {
        AdminError {
            temporary: true,
            ..AdminError::new(m)
        }
    }

    /// Whether the error says that what was named does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        if let Some(n) = self.not_found {
            return n;
        }
        let m = self.message.to_ascii_lowercase();
        [
            "does not exist",
            "no such",
            "not found",
            "has no script",
            "there is no",
            "no queued",
        ]
        .iter()
        .any(|w| m.contains(w))
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError {
            temporary: e.is_temporary(),
            ..AdminError::new(e.to_string())
        }
    }
}

impl From<AddressError> for AdminError {
    fn from(e: AddressError) -> Self {
        AdminError::new(e.to_string())
    }
}

impl From<postern_migrate::Error> for AdminError {
    fn from(e: postern_migrate::Error) -> Self {
        match e {
            postern_migrate::Error::Store(e) => e.into(),
            postern_migrate::Error::Refused(m) => AdminError::new(m),
        }
    }
}
