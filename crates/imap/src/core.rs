//! The IMAP session without I/O: client bytes and store events in, responses and steps out.
//! It holds the session's state (login, the selected mailbox's view, enabled extensions) and
//! runs commands against the store; the listener around it only moves bytes, keeps time and
//! checks passwords. AUTHENTICATE continuations, IDLE, literals and long FETCH answers are
//! states of the core, so whole sessions can be driven (and fuzzed) without a socket.

use std::path::PathBuf;
use std::sync::Arc;

use postern_config::Config;
use postern_directory::{AuthOutcome, sasl};
use postern_ingest::MessageSink;
use postern_store::{Account, Mailbox, SharedStore, StoreError, StoreEvent, Uid};
use tracing::{info, warn};

use crate::fetch::FetchJob;
use crate::format;
use crate::framing::{Frame, Framer, Limits, Mode};
use crate::parse::{self, Command, ListOptions, SeqSet};

/// Output is handed to the socket in pieces of about this size.
pub const FLUSH_AT: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
}

/// What the core needs besides the store.
#[derive(Clone)]
pub struct CoreConfig {
    pub config: Arc<Config>,
    /// A certificate is there: STARTTLS can be offered.
    pub tls_available: bool,
    /// Where large APPEND messages are spooled as they arrive (beside the store).
    pub spool_dir: PathBuf,
}

/// What the I/O around the core must do next. Output is taken with [`ImapCore::take_output`]
/// before each step is carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the output; then wait for input (and, in IDLE, store events), within the time
    /// this wait allows.
    Read(Wait),
    /// Send the output, then call `step` again: a long answer is under way.
    Flush,
    /// Send the output, then start TLS and call [`ImapCore::tls_started`].
    StartTls,
    /// Check these credentials, then call [`ImapCore::login_result`].
    Authenticate { user: String, password: String },
    /// Send the output, then close the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// For a command (or the rest of one).
    Command,
    /// For literal data: it must keep coming at the minimum rate.
    Literal,
    /// In IDLE: for DONE, or a store event.
    Idle,
    /// For the client's AUTHENTICATE response.
    Response,
}

/// Where the session is between commands.
enum Phase {
    Ready,
    /// AUTHENTICATE sent "+": the next line is the response.
    Authenticating {
        tag: String,
    },
    /// Credentials handed to the listener.
    LoggingIn {
        tag: String,
        user: String,
        password: String,
    },
    Idling {
        tag: String,
        changed: bool,
    },
    Fetching(Box<FetchJob>),
    /// Telling NOTIFY's new messages' items; then back to `then`.
    Notifying {
        job: Box<FetchJob>,
        then: Box<Phase>,
    },
    /// "OK Begin TLS" said: the handshake comes next.
    StartingTls,
    Closed,
}

pub struct Selected {
    pub mailbox: Mailbox,
    pub read_only: bool,
    /// UID of each message, by sequence number - 1.
    pub uids: Vec<Uid>,
    /// Changes up to this modseq have been reported.
    pub modseq: u64,
    /// Expunges seen but not reported yet (not allowed during FETCH, STORE, SEARCH).
    pub pending_expunge: Vec<Uid>,
    /// Flag changes this session made itself, as (uid, modseq): already known to the client.
    pub own_changes: Vec<(Uid, u64)>,
    /// Messages recent to this session (RFC 3501 2.3.2: it is the first to be told of them),
    /// ascending. IMAP4rev2 sessions have none.
    pub recent: Vec<Uid>,
    /// Keywords the client was told of in FLAGS: one it has not heard of is announced before a
    /// message shows it (RFC 9051 7.3.5).
    pub keywords: Vec<String>,
    /// What the user may do here (all in their own folders).
    pub rights: postern_store::Rights,
    /// In another's folder: the UIDs this user has seen, ascending (\Seen is each reader's).
    pub private_seen: Option<Vec<Uid>>,
    /// The saved search result (`$`, RFC 5182) as UIDs, ascending; expunged ones name nothing.
    pub saved: Vec<Uid>,
    /// Searches telling of changes to their results (RFC 5267 4).
    pub updates: Vec<crate::context::Update>,
}

/// The FLAGS and PERMANENTFLAGS responses for a mailbox with these keywords.
pub fn flags_lines(out: &mut Vec<u8>, keywords: &[String]) {
    let kw: String = keywords.iter().map(|k| format!(" {k}")).collect();
    push(
        out,
        &format!("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw})\r\n"),
    );
    push(
        out,
        &format!(
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw} \\*)] Flags permitted\r\n"
        ),
    );
}

impl Selected {
    /// Announces keywords of `flags` the client has not been told of yet.
    pub fn announce(&mut self, out: &mut Vec<u8>, flags: &postern_store::Flags) {
        let mut new = false;
        for k in &flags.keywords {
            if !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                self.keywords.push(k.clone());
                new = true;
            }
        }
        if new {
            flags_lines(out, &self.keywords);
        }
    }

    pub fn is_recent(&self, uid: Uid) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    /// Messages named by a sequence set (or UID set), as (seq, uid), ascending.
    pub fn resolve(&self, set: &SeqSet, uid: bool) -> Vec<(u32, Uid)> {
        let mut out = Vec::new();
        if self.uids.is_empty() {
            return out;
        }
        if uid {
            let star = *self.uids.last().unwrap();
            for (lo, hi) in set.ranges(star) {
                let a = self.uids.partition_point(|&u| u < lo);
                let b = self.uids.partition_point(|&u| u <= hi);
                for i in a..b {
                    out.push((i as u32 + 1, self.uids[i]));
                }
            }
        } else {
            let star = self.uids.len() as u32;
            for (lo, hi) in set.ranges(star) {
                for s in lo.max(1)..=hi.min(star) {
                    out.push((s, self.uids[s as usize - 1]));
                }
            }
        }
        out
    }
}

/// The tagged OK text of a command, or how it failed.
pub type Res = Result<String, Fail>;

/// How a command ends when it does not succeed.
pub enum Fail {
    No(String),
    Bad(String),
    /// Close the connection after the untagged BYE.
    Bye(String),
}

pub fn ok(text: &str) -> Res {
    Ok(text.to_string())
}

pub fn no<T>(m: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::No(m.into()))
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        match e {
            StoreError::QuotaExceeded => Fail::No(
                "[OVERQUOTA] Quota exceeded: delete some messages or empty the Trash".into(),
            ),
            StoreError::DiskFull => {
                Fail::No("[UNAVAILABLE] The server's storage is full; try again later".into())
            }
            StoreError::Io(io) if postern_store::is_disk_full(&io) => {
                Fail::from(StoreError::DiskFull)
            }
            StoreError::NotFound(what) => Fail::No(format!("[NONEXISTENT] {what} does not exist")),
            StoreError::AlreadyExists(what) => {
                Fail::No(format!("[ALREADYEXISTS] {what} already exists"))
            }
            StoreError::Invalid(m) => Fail::No(format!("[CANNOT] {m}")),
            other => {
                warn!(error = %other, "storage error");
                Fail::No("[SERVERBUG] Internal error; try again later".into())
            }
        }
    }
}

pub fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

pub struct ImapCore {
    pub(crate) cfg: CoreConfig,
    pub(crate) store: SharedStore,
    tls: bool,
    pub state: State,
    pub account: Option<Account>,
    /// Access-list identifiers that cover the user (`share`), looked up after login.
    pub(crate) identifiers: Option<Vec<String>>,
    pub selected: Option<Selected>,
    pub rev2: bool,
    pub utf8: bool,
    pub condstore: bool,
    pub qresync: bool,
    pub errors: u32,
    /// What NOTIFY asked to be told (RFC 5465); `None` before any NOTIFY.
    pub(crate) notify: Option<crate::notify::Notify>,
    framer: Framer,
    phase: Phase,
    pub(crate) out: Vec<u8>,
}

impl ImapCore {
    pub fn new(cfg: CoreConfig, store: SharedStore, tls: bool) -> ImapCore {
        ImapCore {
            cfg,
            store,
            tls,
            state: State::NotAuthenticated,
            account: None,
            identifiers: None,
            selected: None,
            rev2: false,
            utf8: false,
            condstore: false,
            qresync: false,
            errors: 0,
            notify: None,
            framer: Framer::default(),
            phase: Phase::Ready,
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg.config
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The greeting, into the output.
    pub fn greet(&mut self) {
        let caps = self.capabilities();
        push(
            &mut self.out,
            &format!("* OK [CAPABILITY {caps}] Postern IMAP4rev2 ready\r\n"),
        );
    }

    /// What is to be sent to the client now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// What is to be sent to the client now, without giving up the buffer: a long FETCH
    /// reuses it for every piece.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The output was sent. The buffer is kept while a long answer is under way and given back
    /// when the session waits, so an idle connection holds little memory.
    pub fn output_sent(&mut self, idle: bool) {
        self.out.clear();
        if idle && self.out.capacity() > 8 << 10 {
            self.out = Vec::new();
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// A command (or a literal) has begun arriving and is not complete.
    pub fn in_command(&self) -> bool {
        self.framer.in_progress()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn capabilities(&self) -> String {
        let c = &self.cfg.config;
        let mut caps = vec!["IMAP4rev1", "IMAP4rev2"];
        let plain_ok = self.tls || c.auth.allow_plaintext;
        if self.state == State::NotAuthenticated {
            if !self.tls && self.cfg.tls_available {
                caps.push("STARTTLS");
            }
            if plain_ok {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
            caps.push("SASL-IR");
        }
        caps.extend([
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "CONDSTORE",
            "QRESYNC",
            "ESEARCH",
            "SORT",
            "SORT=DISPLAY",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "ESORT",
            "WITHIN",
            "PREVIEW",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "SPECIAL-USE",
            "STATUS=SIZE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            "BINARY",
            "UTF8=ACCEPT",
            "MULTIAPPEND",
            "ACL",
            "RIGHTS=texk",
            "OBJECTID",
            "SEARCHRES",
            "REPLACE",
            "METADATA",
            "METADATA-SERVER",
            "SAVEDATE",
            "CATENATE",
            "CONTEXT=SEARCH",
            "CONTEXT=SORT",
            "NOTIFY",
        ]);
        let mut s = caps.join(" ");
        s.push_str(&format!(" APPENDLIMIT={}", c.imap.max_literal.0));
        s
    }

    /// The literal size allowed now (small before login).
    pub fn max_literal(&self) -> u64 {
        if self.state == State::NotAuthenticated {
            self.cfg.config.imap.max_literal_unauth.0
        } else {
            self.cfg.config.imap.max_literal.0
        }
    }

    fn limits(&self) -> Limits {
        let c = &self.cfg.config;
        Limits {
            max_line: c.imap.max_line,
            max_literal: self.max_literal(),
            spool_threshold: c.storage.spool_threshold.0 as usize,
            spool_dir: self.cfg.spool_dir.clone(),
        }
    }

    /// Client bytes; returns how many were taken. Input is taken a command at a time: the
    /// rest waits (where it was read) until the command before has run.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let mode = match self.phase {
            Phase::Ready => Mode::Commands,
            Phase::Authenticating { .. } | Phase::Idling { .. } => Mode::Line,
            _ => return 0,
        };
        let limits = self.limits();
        self.framer.feed(data, mode, &limits, &mut self.out)
    }

    /// A store event arrived (the listener listens while the core is in IDLE, and between
    /// commands when NOTIFY asked: [`ImapCore::hears_events`]).
    pub fn store_event(&mut self, event: Option<StoreEvent>) {
        if self.notify_event(event.as_ref()) {
            return;
        }
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let relevant = match &event {
            Some(StoreEvent::Mailbox { mailbox, .. } | StoreEvent::Acl { mailbox, .. }) => {
                selected == Some(*mailbox)
            }
            Some(StoreEvent::Missed) => true,
            Some(_) => false,
            // Events were lost: anything may have changed.
            None => true,
        };
        if let Phase::Idling { changed, .. } = &mut self.phase
            && relevant
        {
            *changed = true;
        }
    }

    /// The wait for input ran out of time.
    pub fn timed_out(&mut self) {
        let text = match (&self.phase, self.state) {
            (Phase::Idling { .. }, _) => "Idle for too long; reconnect".to_string(),
            (_, State::NotAuthenticated) => format!(
                "Autologout: no login within {} seconds of connecting",
                self.cfg.config.imap.login_timeout.0
            ),
            _ => "Autologout: idle for too long".to_string(),
        };
        push(&mut self.out, &format!("* BYE {text}\r\n"));
        self.phase = Phase::Closed;
    }

    /// The server is shutting down.
    pub fn shutdown(&mut self) {
        push(
            &mut self.out,
            "* BYE [UNAVAILABLE] Server shutting down; reconnect in a moment\r\n",
        );
        self.phase = Phase::Closed;
    }

    /// The TLS handshake after STARTTLS succeeded: nothing sent before it counts.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.framer.clear();
        self.phase = Phase::Ready;
    }

    /// What the listener found for the credentials of [`Step::Authenticate`].
    pub fn login_result(&mut self, outcome: Result<AuthOutcome, StoreError>) {
        let Phase::LoggingIn { tag, .. } = std::mem::replace(&mut self.phase, Phase::Ready) else {
            return;
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.respond(&tag, Err(e.into()));
                return;
            }
        };
        let result = match outcome {
            AuthOutcome::Ok(acc) => {
                info!(user = %acc.address, "logged in");
                self.account = Some(acc);
                self.state = State::Authenticated;
                Ok(format!("[CAPABILITY {}] Logged in", self.capabilities()))
            }
            AuthOutcome::Failed => {
                postern_net::metrics::METRICS.auth_failures.add("imap", 1);
                self.errors += 1;
                no(
                    "[AUTHENTICATIONFAILED] Wrong user name or password: the user name is your full email address",
                )
            }
            AuthOutcome::Disabled => {
                no("[AUTHORIZATIONFAILED] This account is disabled; ask your mail administrator")
            }
            AuthOutcome::Shared(why) => no(format!("[AUTHORIZATIONFAILED] {why}")),
            AuthOutcome::LockedOut(w) => no(format!(
                "[UNAVAILABLE] Too many failed logins; try again in {} minute(s)",
                w.as_secs().div_ceil(60)
            )),
        };
        self.respond(&tag, result);
    }

    /// Runs what the input allows and says what the I/O must do next.
    pub async fn step(&mut self) -> Step {
        loop {
            match &mut self.phase {
                Phase::Closed => return Step::Close,
                Phase::StartingTls => return Step::StartTls,
                Phase::LoggingIn { user, password, .. } => {
                    return Step::Authenticate {
                        user: user.clone(),
                        password: password.clone(),
                    };
                }
                Phase::Fetching(_) => {
                    let Phase::Fetching(mut job) = std::mem::replace(&mut self.phase, Phase::Ready)
                    else {
                        unreachable!()
                    };
                    match Box::pin(job.run(self)).await {
                        Ok(false) => {
                            self.phase = Phase::Fetching(job);
                            return Step::Flush;
                        }
                        Ok(true) => {
                            let r = Box::pin(job.finish(self)).await;
                            Box::pin(self.finish(&job.tag, job.name(), r)).await;
                        }
                        Err(f) => Box::pin(self.finish(&job.tag, job.name(), Err(f))).await,
                    }
                    continue;
                }
                Phase::Notifying { .. } => {
                    let Phase::Notifying { mut job, then } =
                        std::mem::replace(&mut self.phase, Phase::Ready)
                    else {
                        unreachable!()
                    };
                    match Box::pin(job.run(self)).await {
                        Ok(false) => {
                            self.phase = Phase::Notifying { job, then };
                            return Step::Flush;
                        }
                        Ok(true) => self.phase = *then,
                        Err(f) => {
                            self.phase = *then;
                            if let Fail::Bye(_) = f {
                                self.respond("*", Err(f));
                            }
                        }
                    }
                    continue;
                }
                Phase::Idling { changed, .. } if *changed => {
                    *changed = false;
                    if self.state == State::Selected
                        && let Err(bye) = Box::pin(self.recheck_rights()).await
                    {
                        self.respond("*", Err(bye));
                        continue;
                    }
                    if self.state == State::Selected {
                        let mut out = std::mem::take(&mut self.out);
                        let r = Box::pin(self.sync(&mut out, true)).await;
                        self.out = out;
                        if let Err(e) = r {
                            warn!(error = %e, "mailbox sync failed");
                        }
                    }
                }
                _ => {}
            }
            if self.out.len() >= FLUSH_AT {
                return Step::Flush;
            }
            let Some(frame) = self.framer.take() else {
                let idling = matches!(self.phase, Phase::Idling { .. });
                if (idling || matches!(self.phase, Phase::Ready)) && self.notify_due() {
                    if let Some(job) = Box::pin(self.notify_flush(idling)).await {
                        let then = std::mem::replace(&mut self.phase, Phase::Ready);
                        self.phase = Phase::Notifying {
                            job: Box::new(job),
                            then: Box::new(then),
                        };
                    }
                    continue;
                }
                return Step::Read(self.wait());
            };
            // Boxed, as every await here: the future of a session waiting for input stays
            // small (it lives as long as the connection).
            Box::pin(self.handle(frame)).await;
        }
    }

    /// What the next input is awaited for.
    fn wait(&self) -> Wait {
        match self.phase {
            Phase::Idling { .. } => Wait::Idle,
            Phase::Authenticating { .. } => Wait::Response,
            _ if self.framer.in_literal() => Wait::Literal,
            _ => Wait::Command,
        }
    }

    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::TooLong => self.bad("*", "Command line too long"),
            Frame::LiteralTooBig { tag, non_sync } => {
                let max = self.max_literal();
                if non_sync {
                    // The client is sending it already: there is no way to skip it safely.
                    push(
                        &mut self.out,
                        &format!("* BYE [TOOBIG] Literal larger than {max} bytes\r\n"),
                    );
                    self.phase = Phase::Closed;
                } else {
                    let tag = tag.unwrap_or_else(|| "*".into());
                    push(
                        &mut self.out,
                        &format!("{tag} NO [TOOBIG] Literal larger than {max} bytes\r\n"),
                    );
                }
            }
            Frame::Line(line) => match std::mem::replace(&mut self.phase, Phase::Ready) {
                Phase::Authenticating { tag } => {
                    let resp = String::from_utf8_lossy(&line).into_owned();
                    self.sasl_plain(tag, &resp);
                }
                Phase::Idling { tag, .. } => {
                    let r = if line.eq_ignore_ascii_case(b"DONE") {
                        Ok("IDLE terminated".to_string())
                    } else {
                        Err(Fail::Bad("Expected DONE".into()))
                    };
                    self.finish(&tag, "IDLE", r).await;
                }
                other => self.phase = other,
            },
            Frame::Command { bytes, spooled } => {
                let at: Vec<usize> = spooled.iter().map(|s| s.0).collect();
                let sinks: Vec<MessageSink> = spooled.into_iter().map(|s| s.1).collect();
                let (tag, cmd) = parse::parse_framed(&bytes, &at, self.utf8);
                let Some(tag) = tag else {
                    self.bad("*", "Missing tag");
                    return;
                };
                match cmd {
                    Ok(Command::StartTls) => self.starttls(&tag),
                    Ok(cmd) => self.execute(&tag, cmd, sinks).await,
                    Err(e) => self.bad(&tag, &e.0),
                }
            }
        }
    }

    fn starttls(&mut self, tag: &str) {
        if self.tls {
            self.bad(tag, "TLS is already active");
        } else if self.state != State::NotAuthenticated {
            self.bad(tag, "STARTTLS is not allowed after login");
        } else if !self.cfg.tls_available {
            push(
                &mut self.out,
                &format!("{tag} NO TLS is not available: this server has no certificate\r\n"),
            );
        } else {
            push(
                &mut self.out,
                &format!("{tag} OK Begin TLS negotiation now\r\n"),
            );
            self.phase = Phase::StartingTls;
        }
    }

    /// A BAD reply, counted; past the limit the connection is closed.
    pub fn bad(&mut self, tag: &str, m: &str) {
        self.errors += 1;
        push(&mut self.out, &format!("{tag} BAD {m}\r\n"));
        if self.errors >= self.cfg.config.imap.max_errors {
            push(
                &mut self.out,
                "* BYE Too many errors; closing connection\r\n",
            );
            self.phase = Phase::Closed;
        }
    }

    async fn execute(&mut self, tag: &str, cmd: Command, sinks: Vec<MessageSink>) {
        let name = command_name(&cmd);
        let allowed = match (&cmd, self.state) {
            (Command::Capability | Command::Noop | Command::Logout | Command::Id, _) => true,
            (
                Command::StartTls | Command::Login(..) | Command::Authenticate(..),
                State::NotAuthenticated,
            ) => true,
            (Command::StartTls | Command::Login(..) | Command::Authenticate(..), _) => false,
            (
                Command::Check
                | Command::Close
                | Command::Unselect
                | Command::Expunge(_)
                | Command::CancelUpdate(_)
                | Command::Search { .. }
                | Command::Sort { .. }
                | Command::Thread { .. }
                | Command::Fetch { .. }
                | Command::Store { .. }
                | Command::Replace { .. }
                | Command::Copy { .. },
                s,
            ) => s == State::Selected,
            (_, s) => s != State::NotAuthenticated,
        };
        if !allowed {
            let why = match self.state {
                State::NotAuthenticated => format!("{name} needs you to log in first"),
                State::Authenticated => format!("{name} needs a selected mailbox (SELECT first)"),
                State::Selected => format!("{name} is not allowed now"),
            };
            self.finish(tag, name, Err(Fail::Bad(why))).await;
            return;
        }
        // Rights on another's folder may have changed since the last command (on any node).
        if self.state == State::Selected
            && let Err(bye) = self.recheck_rights().await
        {
            let why = "[NOPERM] You may no longer read the selected folder";
            self.finish(tag, name, Err(Fail::No(why.into()))).await;
            self.respond("*", Err(bye));
            return;
        }
        let mut cmd = cmd;
        if let Some(sel) = &self.selected {
            crate::search::put_saved(sel, &mut cmd);
        }
        let mut out = std::mem::take(&mut self.out);
        if !self.condstore && enables_condstore(&cmd) {
            // RFC 7162 3.1: the first command that uses CONDSTORE turns it on; a client that
            // selected before learns where the mailbox stands.
            self.condstore = true;
            if let Some(sel) = &self.selected {
                push(
                    &mut out,
                    &format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", sel.modseq),
                );
            }
        }
        let result = self.run(&mut out, tag, cmd, sinks).await;
        self.out = out;
        match result {
            // The command goes on in another phase; it answers when done.
            Ok(None) => {}
            Ok(Some(text)) => self.finish(tag, name, Ok(text)).await,
            Err(f) => self.finish(tag, name, Err(f)).await,
        }
    }

    /// Ends a command: updates from other sessions ride along (RFC 9051 7), then the tagged
    /// response.
    async fn finish(&mut self, tag: &str, name: &str, result: Res) {
        // EXPUNGE responses may not come during FETCH, STORE or SEARCH (their UID forms may).
        let expunge_ok = !matches!(name, "FETCH" | "STORE" | "SEARCH");
        if self.state == State::Selected && !matches!(result, Err(Fail::Bye(_))) {
            let mut out = std::mem::take(&mut self.out);
            let r = self.sync(&mut out, expunge_ok).await;
            self.out = out;
            if let Err(e) = r {
                warn!(error = %e, "mailbox sync failed");
            }
        }
        self.respond(tag, result);
    }

    /// The tagged response (or BYE) of a command.
    pub(crate) fn respond(&mut self, tag: &str, result: Res) {
        match result {
            Ok(text) => push(&mut self.out, &format!("{tag} OK {text}\r\n")),
            Err(Fail::No(m)) => push(&mut self.out, &format!("{tag} NO {m}\r\n")),
            Err(Fail::Bad(m)) => self.bad(tag, &m),
            Err(Fail::Bye(m)) => {
                info!(reason = %m, "closing the connection");
                if !m.is_empty() {
                    push(&mut self.out, &format!("* BYE {m}\r\n"));
                }
                self.phase = Phase::Closed;
            }
        }
    }

    /// Hands credentials to the listener; the command answers in `login_result`.
    fn log_in(
        &mut self,
        tag: &str,
        user: String,
        password: String,
    ) -> Result<Option<String>, Fail> {
        self.phase = Phase::LoggingIn {
            tag: tag.to_string(),
            user,
            password,
        };
        Ok(None)
    }

    fn sasl_plain(&mut self, tag: String, response: &str) {
        match sasl::decode_plain(response) {
            Ok((user, pass)) => {
                let _ = self.log_in(&tag, user, pass);
            }
            Err(sasl::SaslError::Cancelled) => {
                self.respond(&tag, Err(Fail::Bad("Authentication cancelled".into())))
            }
            Err(e) => self.respond(&tag, Err(Fail::Bad(format!("Malformed credentials: {e}")))),
        }
    }

    /// Runs one command; `Ok(None)` when it goes on in another phase.
    async fn run(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        cmd: Command,
        sinks: Vec<MessageSink>,
    ) -> Result<Option<String>, Fail> {
        let done = |text: &str| Ok(Some(text.to_string()));
        if self.account.is_some() && self.identifiers.is_none() {
            self.identifiers().await?;
        }
        match cmd {
            Command::Capability => {
                push(out, &format!("* CAPABILITY {}\r\n", self.capabilities()));
                done("CAPABILITY completed")
            }
            Command::Noop | Command::Check => done("NOOP completed"),
            Command::Logout => {
                push(out, "* BYE Postern logging out\r\n");
                push(out, &format!("{tag} OK LOGOUT completed\r\n"));
                // Already said goodbye: close without another BYE.
                Err(Fail::Bye(String::new()))
            }
            Command::Id => {
                push(
                    out,
                    &format!(
                        "* ID (\"name\" \"Postern\" \"version\" \"{}\")\r\n",
                        env!("CARGO_PKG_VERSION")
                    ),
                );
                done("ID completed")
            }
            Command::StartTls => Err(Fail::Bad("STARTTLS is not allowed now".into())),
            Command::Login(user, pass) => {
                if !self.tls && !self.cfg.config.auth.allow_plaintext {
                    return no(
                        "[PRIVACYREQUIRED] Plaintext login is disabled: choose SSL/TLS (port 993) or STARTTLS (port 143) for the incoming server in your mail program",
                    );
                }
                self.log_in(tag, user, pass)
            }
            Command::Authenticate(mech, initial) => {
                if mech != "PLAIN" {
                    return no("[CANNOT] Unsupported mechanism; use PLAIN");
                }
                if !self.tls && !self.cfg.config.auth.allow_plaintext {
                    return no(
                        "[PRIVACYREQUIRED] Plaintext authentication is disabled: choose SSL/TLS (port 993) or STARTTLS (port 143) for the incoming server in your mail program",
                    );
                }
                match initial {
                    Some(i) if i != "=" => match sasl::decode_plain(&i) {
                        Ok((user, pass)) => self.log_in(tag, user, pass),
                        Err(sasl::SaslError::Cancelled) => {
                            Err(Fail::Bad("Authentication cancelled".into()))
                        }
                        Err(e) => Err(Fail::Bad(format!("Malformed credentials: {e}"))),
                    },
                    _ => {
                        push(out, "+ \r\n");
                        self.phase = Phase::Authenticating {
                            tag: tag.to_string(),
                        };
                        Ok(None)
                    }
                }
            }
            Command::Enable(caps) => {
                let mut on = Vec::new();
                for c in caps {
                    match c.as_str() {
                        "CONDSTORE" => {
                            self.condstore = true;
                            on.push(c);
                        }
                        "QRESYNC" => {
                            self.qresync = true;
                            self.condstore = true;
                            on.push(c);
                        }
                        "IMAP4REV2" => {
                            self.rev2 = true;
                            self.utf8 = true;
                            on.push("IMAP4rev2".into());
                        }
                        "UTF8=ACCEPT" => {
                            self.utf8 = true;
                            on.push(c);
                        }
                        _ => {}
                    }
                }
                push(
                    out,
                    &format!("* ENABLED {}\r\n", on.join(" ")).replace("ENABLED \r", "ENABLED\r"),
                );
                done("ENABLE completed")
            }
            Command::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                if condstore {
                    self.condstore = true;
                }
                if qresync.is_some() && !self.qresync {
                    return Err(Fail::Bad("ENABLE QRESYNC first".into()));
                }
                self.select(out, &mailbox, read_only, qresync)
                    .await
                    .map(Some)
            }
            Command::Create(name) => self.create(&name).await.map(Some),
            Command::Delete(name) => self.delete(&name).await.map(Some),
            Command::Rename(from, to) => self.rename(&from, &to).await.map(Some),
            Command::Subscribe(name) => self.subscribe(&name, true).await.map(Some),
            Command::Unsubscribe(name) => self.subscribe(&name, false).await.map(Some),
            Command::List {
                reference,
                patterns,
                opts,
            } => self
                .list(out, &reference, &patterns, &opts, false)
                .await
                .map(Some),
            Command::Lsub(reference, pattern) => {
                let opts = ListOptions {
                    subscribed: true,
                    ..Default::default()
                };
                self.list(out, &reference, &[pattern], &opts, true)
                    .await
                    .map(Some)
            }
            Command::Namespace => {
                self.namespace(out);
                done("NAMESPACE completed")
            }
            Command::Status(name, items) => {
                let mb = self.mailbox_by_name(&name).await?;
                self.status_line(out, &mb, &items).await?;
                done("STATUS completed")
            }
            Command::Append(name, msgs) => self.append(&name, msgs, sinks).await.map(Some),
            Command::Replace {
                uid,
                target,
                mailbox,
                message,
            } => self
                .replace(out, uid, target, &mailbox, message, sinks)
                .await
                .map(Some),
            Command::Notify { status, groups } => {
                self.notify_command(out, status, groups).await.map(Some)
            }
            Command::Idle => {
                push(out, "+ idling\r\n");
                self.notify_idle_started();
                self.phase = Phase::Idling {
                    tag: tag.to_string(),
                    changed: false,
                };
                Ok(None)
            }
            Command::Close => self.close_selected(true).await.map(Some),
            Command::Unselect => self.close_selected(false).await.map(Some),
            Command::Expunge(uids) => self.expunge(out, uids).await.map(Some),
            Command::CancelUpdate(tags) => crate::context::cancel(self, &tags).map(Some),
            Command::Search { uid, ret, key } => {
                crate::search::search(self, out, tag, uid, ret, key)
                    .await
                    .map(Some)
            }
            Command::Sort {
                uid,
                ret,
                criteria,
                key,
            } => crate::sort::sort(self, out, tag, uid, ret, criteria, key)
                .await
                .map(Some),
            Command::Thread {
                uid,
                algorithm,
                key,
            } => crate::sort::thread(self, out, uid, algorithm, key)
                .await
                .map(Some),
            Command::Fetch {
                uid,
                set,
                atts,
                changed_since,
                vanished,
            } => {
                let job = FetchJob::start(self, out, tag, uid, &set, atts, changed_since, vanished)
                    .await?;
                self.phase = Phase::Fetching(Box::new(job));
                Ok(None)
            }
            Command::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => crate::fetch::store(self, out, uid, &set, op, silent, &flags, unchanged_since)
                .await
                .map(Some),
            Command::Copy {
                uid,
                set,
                mailbox,
                moving,
            } => self.copy(out, uid, &set, &mailbox, moving).await.map(Some),
            Command::GetQuotaRoot(name) => self.get_quota_root(out, &name).await.map(Some),
            Command::GetQuota(root) => self.get_quota(out, &root).await.map(Some),
            Command::SetQuota => no("[NOPERM] Quotas are set by the mail administrator"),
            Command::SetAcl(mailbox, id, rights) => {
                self.set_acl(&mailbox, &id, Some(&rights)).await.map(Some)
            }
            Command::DeleteAcl(mailbox, id) => self.set_acl(&mailbox, &id, None).await.map(Some),
            Command::GetAcl(mailbox) => self.get_acl(out, &mailbox).await.map(Some),
            Command::ListRights(mailbox, id) => {
                self.list_rights(out, &mailbox, &id).await.map(Some)
            }
            Command::MyRights(mailbox) => self.my_rights(out, &mailbox).await.map(Some),
            Command::GetMetadata {
                mailbox,
                entries,
                max_size,
                depth,
            } => self
                .get_metadata(out, &mailbox, &entries, max_size, depth)
                .await
                .map(Some),
            Command::SetMetadata(mailbox, changes) => {
                self.set_metadata(&mailbox, changes).await.map(Some)
            }
        }
    }

    pub fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or(0)
    }

    /// Brings the client's view of the selected mailbox up to date.
    pub async fn sync(&mut self, out: &mut Vec<u8>, allow_expunge: bool) -> Result<(), StoreError> {
        self.sync_with(out, allow_expunge, true).await
    }

    /// [`ImapCore::sync`]; without `report_flags`, flag changes are left for a later sync
    /// (NOTIFY without FlagChange): new and expunged messages are told, the modseq stays.
    pub(crate) async fn sync_with(
        &mut self,
        out: &mut Vec<u8>,
        allow_expunge: bool,
        report_flags: bool,
    ) -> Result<(), StoreError> {
        let account = self.account_id();
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        let mut ch = self
            .store
            .message_changes(sel.mailbox.id, sel.modseq)
            .await?;
        if sel.private_seen.is_some() && !ch.changed.is_empty() {
            // Another session of this reader may have changed their \Seen.
            sel.private_seen = Some(self.store.seen_private(sel.mailbox.id, account).await?);
            sel.view_all(&mut ch.changed);
        }
        for u in ch.expunged {
            if sel.uids.binary_search(&u).is_ok() && !sel.pending_expunge.contains(&u) {
                sel.pending_expunge.push(u);
            }
        }
        // Searches telling of changes look again at what changed and is still there.
        let mut changed: Vec<Uid> = ch
            .changed
            .iter()
            .map(|e| e.uid)
            .filter(|u| !sel.pending_expunge.contains(u))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        if allow_expunge && !sel.pending_expunge.is_empty() {
            let mut gone = std::mem::take(&mut sel.pending_expunge);
            gone.sort_unstable();
            crate::context::before_expunge(sel, out, &gone);
            if self.qresync {
                push(out, &format!("* VANISHED {}\r\n", format::seq_set(&gone)));
                sel.uids.retain(|u| gone.binary_search(u).is_err());
            } else {
                // The highest first, as Dovecot: each number is the message's own until then.
                for u in gone.into_iter().rev() {
                    if let Ok(i) = sel.uids.binary_search(&u) {
                        push(out, &format!("* {} EXPUNGE\r\n", i + 1));
                        sel.uids.remove(i);
                    }
                }
            }
        }
        sel.recent.retain(|u| sel.uids.binary_search(u).is_ok());
        let last = sel.uids.last().copied().unwrap_or(0);
        let mut added = false;
        for e in &ch.changed {
            if e.uid > last {
                sel.uids.push(e.uid);
                added = true;
            }
        }
        if added {
            sel.uids.sort_unstable();
            push(out, &format!("* {} EXISTS\r\n", sel.uids.len()));
            if !self.rev2 {
                // The new messages are recent to this session if no other saw them first.
                let (mailbox, read_only) = (sel.mailbox.id, sel.read_only);
                let upto = sel.uids.last().copied().unwrap_or(0) + 1;
                let from = if read_only {
                    recent_pointer(&self.store, mailbox).await
                } else {
                    claim_recent(&self.store, mailbox, upto).await
                };
                let sel = self.selected.as_mut().expect("selected");
                for &u in sel.uids.iter().filter(|&&u| u > last && u >= from) {
                    sel.recent.push(u);
                }
                push(out, &format!("* {} RECENT\r\n", sel.recent.len()));
            }
        }
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        if !report_flags {
            return Ok(());
        }
        for e in &ch.changed {
            if sel.own_changes.contains(&(e.uid, e.modseq)) {
                continue;
            }
            if e.uid <= last
                && let Ok(i) = sel.uids.binary_search(&e.uid)
            {
                sel.announce(out, &e.flags);
                push(out, &format!("* {} FETCH (", i + 1));
                if self.condstore {
                    push(out, &format!("UID {} ", e.uid));
                }
                push(out, "FLAGS ");
                format::flags_recent(out, &e.flags, sel.is_recent(e.uid));
                if self.condstore {
                    push(out, &format!(" MODSEQ ({})", e.modseq));
                }
                push(out, ")\r\n");
            }
        }
        sel.modseq = ch.highest_modseq.max(sel.modseq);
        sel.own_changes.clear();
        if let Err(Fail::No(m) | Fail::Bad(m) | Fail::Bye(m)) =
            crate::context::after_changes(self, out, &changed).await
        {
            warn!(error = %m, "search update failed");
        }
        Ok(())
    }
}

/// The counter that says where a mailbox's messages stop being recent: UIDs from its value on
/// have been seen by no session yet. Kept by the store, so sessions on every node agree.
fn recent_key(mailbox: u64) -> String {
    format!("recent:{mailbox}")
}

/// The first UID no session has been told of (0 when nothing is known: everything is recent,
/// as RFC 3501 2.3.2 asks when in doubt).
pub async fn recent_pointer(store: &SharedStore, mailbox: u64) -> Uid {
    store
        .counter_get(&recent_key(mailbox))
        .await
        .ok()
        .flatten()
        .map_or(0, |c| c.count)
}

/// Makes the messages below `upto` seen by this session; returns where the ones it is the first
/// to see begin (UIDs from there up to `upto` are recent to it).
pub async fn claim_recent(store: &SharedStore, mailbox: u64, upto: Uid) -> Uid {
    let before = std::sync::atomic::AtomicU32::new(0);
    let now = postern_store::now_ms();
    let step = |c: Option<postern_store::Counter>| {
        let c = c.unwrap_or_default();
        before.store(c.count, std::sync::atomic::Ordering::Relaxed);
        Some(postern_store::Counter {
            count: c.count.max(upto),
            // Forgotten after a year unused: its messages are then recent once more.
            expires: now + 366 * 86_400_000,
            ..c
        })
    };
    match store.counter_update(&recent_key(mailbox), &step).await {
        Ok(_) => before.load(std::sync::atomic::Ordering::Relaxed),
        // Unknown: no message is recent rather than every message.
        Err(_) => upto,
    }
}

/// Whether a command uses CONDSTORE, which turns it on for the session (RFC 7162 3.1).
fn enables_condstore(c: &Command) -> bool {
    match c {
        Command::Fetch {
            atts,
            changed_since,
            ..
        } => changed_since.is_some() || atts.contains(&crate::parse::FetchAtt::ModSeq),
        Command::Search { key, .. } | Command::Sort { key, .. } | Command::Thread { key, .. } => {
            crate::search::uses_modseq(key)
        }
        Command::Store {
            unchanged_since, ..
        } => unchanged_since.is_some(),
        Command::Status(_, items) => items.iter().any(|i| i == "HIGHESTMODSEQ"),
        _ => false,
    }
}

pub fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Capability => "CAPABILITY",
        Command::Noop => "NOOP",
        Command::Logout => "LOGOUT",
        Command::StartTls => "STARTTLS",
        Command::Login(..) => "LOGIN",
        Command::Authenticate(..) => "AUTHENTICATE",
        Command::Enable(_) => "ENABLE",
        Command::Id => "ID",
        Command::Select { .. } => "SELECT",
        Command::Create(_) => "CREATE",
        Command::Delete(_) => "DELETE",
        Command::Rename(..) => "RENAME",
        Command::Subscribe(_) => "SUBSCRIBE",
        Command::Unsubscribe(_) => "UNSUBSCRIBE",
        Command::List { .. } => "LIST",
        Command::Lsub(..) => "LSUB",
        Command::Namespace => "NAMESPACE",
        Command::Status(..) => "STATUS",
        Command::Append(..) => "APPEND",
        Command::Replace { uid, .. } => {
            if *uid {
                "UID REPLACE"
            } else {
                "REPLACE"
            }
        }
        Command::Idle => "IDLE",
        Command::Notify { .. } => "NOTIFY",
        Command::Check => "CHECK",
        Command::Close => "CLOSE",
        Command::Unselect => "UNSELECT",
        Command::Expunge(_) => "EXPUNGE",
        Command::CancelUpdate(_) => "CANCELUPDATE",
        Command::Search { uid, .. } => {
            if *uid {
                "UID SEARCH"
            } else {
                "SEARCH"
            }
        }
        Command::Sort { uid, .. } => {
            if *uid {
                "UID SORT"
            } else {
                "SORT"
            }
        }
        Command::Thread { uid, .. } => {
            if *uid {
                "UID THREAD"
            } else {
                "THREAD"
            }
        }
        Command::Fetch { uid, .. } => {
            if *uid {
                "UID FETCH"
            } else {
                "FETCH"
            }
        }
        Command::Store { uid, .. } => {
            if *uid {
                "UID STORE"
            } else {
                "STORE"
            }
        }
        Command::Copy { moving, .. } => {
            if *moving {
                "MOVE"
            } else {
                "COPY"
            }
        }
        Command::GetQuota(_) => "GETQUOTA",
        Command::GetQuotaRoot(_) => "GETQUOTAROOT",
        Command::SetQuota => "SETQUOTA",
        Command::SetAcl(..) => "SETACL",
        Command::DeleteAcl(..) => "DELETEACL",
        Command::GetAcl(_) => "GETACL",
        Command::ListRights(..) => "LISTRIGHTS",
        Command::MyRights(_) => "MYRIGHTS",
        Command::GetMetadata { .. } => "GETMETADATA",
        Command::SetMetadata(..) => "SETMETADATA",
    }
}
