//! One IMAP session: states, commands against the store, and the untagged updates that keep
//! the client's view in step with other sessions (EXISTS, EXPUNGE/VANISHED, FETCH FLAGS).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::{AuthOutcome, Directory, sasl};
use postern_net::{Io, LineError, TlsStore};
use postern_store::{
    Account, INBOX, Mailbox, SharedStore, SpecialUse, StoreError, StoreEvent, Uid,
};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::format;
use crate::parse::{self, Command, ListOptions, SeqSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
}

pub enum Flow {
    Continue,
    Close,
}

pub struct Shared {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
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
}

impl Selected {
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

pub struct Session {
    pub sh: Arc<Shared>,
    pub ip: IpAddr,
    pub state: State,
    pub account: Option<Account>,
    pub selected: Option<Selected>,
    pub rev2: bool,
    pub utf8: bool,
    pub condstore: bool,
    pub qresync: bool,
    pub errors: u32,
    pub events: broadcast::Receiver<StoreEvent>,
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

impl Session {
    pub fn new(sh: Arc<Shared>, ip: IpAddr) -> Session {
        let events = sh.store.subscribe();
        Session {
            sh,
            ip,
            state: State::NotAuthenticated,
            account: None,
            selected: None,
            rev2: false,
            utf8: false,
            condstore: false,
            qresync: false,
            errors: 0,
            events,
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.sh.store
    }

    pub fn capabilities(&self, tls: bool) -> String {
        let c = &self.sh.config;
        let mut caps = vec!["IMAP4rev1", "IMAP4rev2"];
        let plain_ok = tls || c.auth.allow_plaintext;
        if self.state == State::NotAuthenticated {
            if !tls && self.sh.tls.is_some() {
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
            "SEARCHRES",
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
        ]);
        let mut s = caps.join(" ");
        s.push_str(&format!(" APPENDLIMIT={}", c.imap.max_literal.0));
        s
    }

    /// The literal size allowed now (small before login).
    pub fn max_literal(&self) -> u64 {
        if self.state == State::NotAuthenticated {
            self.sh.config.imap.max_literal_unauth.0
        } else {
            self.sh.config.imap.max_literal.0
        }
    }

    pub async fn execute(&mut self, io: &mut Io, tag: &str, cmd: Command) -> Flow {
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
                | Command::Search { .. }
                | Command::Fetch { .. }
                | Command::Store { .. }
                | Command::Copy { .. },
                s,
            ) => s == State::Selected,
            (_, s) => s != State::NotAuthenticated,
        };
        let mut out = Vec::new();
        let result = if !allowed {
            Err(Fail::Bad(match self.state {
                State::NotAuthenticated => format!("{name} needs you to log in first"),
                State::Authenticated => format!("{name} needs a selected mailbox (SELECT first)"),
                State::Selected => format!("{name} is not allowed now"),
            }))
        } else {
            self.run(io, &mut out, tag, cmd).await
        };
        // Updates from other sessions ride along with most commands (RFC 9051 7).
        let expunge_ok = !matches!(name, "FETCH" | "STORE" | "SEARCH");
        if self.state == State::Selected
            && !matches!(result, Err(Fail::Bye(_)))
            && let Err(e) = self.sync(&mut out, expunge_ok).await
        {
            warn!(error = %e, "mailbox sync failed");
        }
        io.write(&out);
        match result {
            Ok(text) => {
                io.write(format!("{tag} OK {text}\r\n").as_bytes());
                Flow::Continue
            }
            Err(Fail::No(m)) => {
                io.write(format!("{tag} NO {m}\r\n").as_bytes());
                Flow::Continue
            }
            Err(Fail::Bad(m)) => self.bad(io, tag, &m),
            Err(Fail::Bye(m)) => {
                info!(reason = %m, "closing the connection");
                if !m.is_empty() {
                    io.write(format!("* BYE {m}\r\n").as_bytes());
                }
                Flow::Close
            }
        }
    }

    /// A BAD reply, counted; past the limit the connection is closed.
    pub fn bad(&mut self, io: &mut Io, tag: &str, m: &str) -> Flow {
        self.errors += 1;
        io.write(format!("{tag} BAD {m}\r\n").as_bytes());
        if self.errors >= self.sh.config.imap.max_errors {
            io.write(b"* BYE Too many errors; closing connection\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn run(&mut self, io: &mut Io, out: &mut Vec<u8>, tag: &str, cmd: Command) -> Res {
        match cmd {
            Command::Capability => {
                push(
                    out,
                    &format!("* CAPABILITY {}\r\n", self.capabilities(io.is_tls())),
                );
                self.ok(out, tag, "CAPABILITY completed")
            }
            Command::Noop | Command::Check => self.ok(out, tag, "NOOP completed"),
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
                self.ok(out, tag, "ID completed")
            }
            Command::StartTls => Err(Fail::Bad("STARTTLS is handled by the connection".into())),
            Command::Login(user, pass) => {
                if !io.is_tls() && !self.sh.config.auth.allow_plaintext {
                    return no(
                        "[PRIVACYREQUIRED] Plaintext login is disabled: choose SSL/TLS (port 993) or STARTTLS (port 143) for the incoming server in your mail program",
                    );
                }
                self.login(io, out, tag, &user, &pass).await
            }
            Command::Authenticate(mech, initial) => {
                if mech != "PLAIN" {
                    return no("[CANNOT] Unsupported mechanism; use PLAIN");
                }
                if !io.is_tls() && !self.sh.config.auth.allow_plaintext {
                    return no(
                        "[PRIVACYREQUIRED] Plaintext authentication is disabled: choose SSL/TLS (port 993) or STARTTLS (port 143) for the incoming server in your mail program",
                    );
                }
                let resp = match initial {
                    Some(i) if i != "=" => i,
                    _ => {
                        io.write(b"+ \r\n");
                        io.flush()
                            .await
                            .map_err(|_| Fail::Bye("connection lost".into()))?;
                        match io.read_line(8192, Duration::from_secs(120)).await {
                            Ok(l) => String::from_utf8_lossy(&l).into_owned(),
                            Err(_) => return Err(Fail::Bye("connection lost".into())),
                        }
                    }
                };
                match sasl::decode_plain(&resp) {
                    Ok((user, pass)) => self.login(io, out, tag, &user, &pass).await,
                    Err(sasl::SaslError::Cancelled) => {
                        Err(Fail::Bad("Authentication cancelled".into()))
                    }
                    Err(e) => Err(Fail::Bad(format!("Malformed credentials: {e}"))),
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
                self.ok(out, tag, "ENABLE completed")
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
                self.select(out, tag, &mailbox, read_only, qresync).await
            }
            Command::Create(name) => self.create(out, tag, &name).await,
            Command::Delete(name) => {
                let acc = self.account_id();
                let mb = self.mailbox_by_name(&name).await?;
                if mb.name == INBOX {
                    return no("[CANNOT] INBOX cannot be deleted");
                }
                let prefix = format!("{}/", mb.name);
                if self
                    .store()
                    .mailbox_list(acc)
                    .await?
                    .iter()
                    .any(|m| m.name.starts_with(&prefix))
                {
                    return no("[HASCHILDREN] Delete the folders inside it first");
                }
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.mailbox.id == mb.id)
                {
                    self.selected = None;
                    self.state = State::Authenticated;
                }
                self.store().mailbox_delete(mb.id).await?;
                self.ok(out, tag, "DELETE completed")
            }
            Command::Rename(from, to) => self.rename(out, tag, &from, &to).await,
            Command::Subscribe(name) => self.subscribe(out, tag, &name, true).await,
            Command::Unsubscribe(name) => self.subscribe(out, tag, &name, false).await,
            Command::List {
                reference,
                patterns,
                opts,
            } => {
                self.list(out, tag, &reference, &patterns, &opts, false)
                    .await
            }
            Command::Lsub(reference, pattern) => {
                let opts = ListOptions {
                    subscribed: true,
                    ..Default::default()
                };
                self.list(out, tag, &reference, &[pattern], &opts, true)
                    .await
            }
            Command::Namespace => {
                push(out, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                self.ok(out, tag, "NAMESPACE completed")
            }
            Command::Status(name, items) => {
                let mb = self.mailbox_by_name(&name).await?;
                self.status_line(out, &mb, &items).await?;
                self.ok(out, tag, "STATUS completed")
            }
            Command::Append(name, msgs) => self.append(out, tag, &name, msgs).await,
            Command::Idle => self.idle(io, out, tag).await,
            Command::Close => self.close_selected(out, tag, true).await,
            Command::Unselect => self.close_selected(out, tag, false).await,
            Command::Expunge(uids) => self.expunge(out, tag, uids).await,
            Command::Search { uid, ret, key } => {
                crate::search::search(self, out, tag, uid, ret, key).await
            }
            Command::Fetch {
                uid,
                set,
                atts,
                changed_since,
                vanished,
            } => {
                crate::fetch::fetch(self, io, out, tag, uid, &set, atts, changed_since, vanished)
                    .await
            }
            Command::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                crate::fetch::store(
                    self,
                    out,
                    tag,
                    uid,
                    &set,
                    op,
                    silent,
                    &flags,
                    unchanged_since,
                )
                .await
            }
            Command::Copy {
                uid,
                set,
                mailbox,
                moving,
            } => self.copy(out, tag, uid, &set, &mailbox, moving).await,
            Command::GetQuotaRoot(name) => {
                let mb = self.mailbox_by_name(&name).await?;
                let acc = self.account.clone().expect("logged in");
                if acc.quota_bytes > 0 || acc.quota_messages > 0 {
                    push(out, "* QUOTAROOT ");
                    format::mailbox(out, &mb.name, self.utf8);
                    push(out, " \"\"\r\n");
                    self.quota_line(out).await?;
                } else {
                    push(out, "* QUOTAROOT ");
                    format::mailbox(out, &mb.name, self.utf8);
                    push(out, "\r\n");
                }
                self.ok(out, tag, "GETQUOTAROOT completed")
            }
            Command::GetQuota(root) => {
                let acc = self.account.clone().expect("logged in");
                if !root.is_empty() || (acc.quota_bytes == 0 && acc.quota_messages == 0) {
                    return no("[NONEXISTENT] No such quota root");
                }
                self.quota_line(out).await?;
                self.ok(out, tag, "GETQUOTA completed")
            }
            Command::SetQuota => no("[NOPERM] Quotas are set by the mail administrator"),
        }
    }

    /// Success: the tagged OK is written after any untagged updates.
    pub fn ok(&self, _out: &mut Vec<u8>, _tag: &str, text: &str) -> Res {
        Ok(text.to_string())
    }

    pub fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or(0)
    }

    async fn login(
        &mut self,
        io: &mut Io,
        out: &mut Vec<u8>,
        tag: &str,
        user: &str,
        pass: &str,
    ) -> Res {
        let d = &self.sh.directory;
        match d.authenticate(user, pass, self.ip).await? {
            AuthOutcome::Ok(acc) => {
                info!(user = %acc.address, "logged in");
                self.account = Some(acc);
                self.state = State::Authenticated;
                let caps = self.capabilities(io.is_tls());
                self.ok(out, tag, &format!("[CAPABILITY {caps}] Logged in"))
            }
            AuthOutcome::Failed => {
                postern_net::metrics::METRICS.auth_failures.add("imap", 1);
                tokio::time::sleep(d.failure_delay()).await;
                self.errors += 1;
                no(
                    "[AUTHENTICATIONFAILED] Wrong user name or password: the user name is your full email address",
                )
            }
            AuthOutcome::Disabled => {
                tokio::time::sleep(d.failure_delay()).await;
                no("[AUTHORIZATIONFAILED] This account is disabled; ask your mail administrator")
            }
            AuthOutcome::LockedOut(w) => no(format!(
                "[UNAVAILABLE] Too many failed logins; try again in {} minute(s)",
                w.as_secs().div_ceil(60)
            )),
        }
    }

    pub async fn mailbox_by_name(&self, name: &str) -> Result<Mailbox, Fail> {
        match self
            .store()
            .mailbox_by_name(self.account_id(), name)
            .await?
        {
            Some(m) => Ok(m),
            None => no(format!("[NONEXISTENT] Mailbox {name:?} does not exist")),
        }
    }

    async fn select(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        name: &str,
        read_only: bool,
        qresync: Option<parse::Qresync>,
    ) -> Res {
        if self.selected.take().is_some() {
            self.state = State::Authenticated;
            if self.qresync || self.rev2 {
                push(out, "* OK [CLOSED] Previous mailbox closed\r\n");
            }
        }
        let mb = self.mailbox_by_name(name).await?;
        let entries = self.store().message_list(mb.id).await?;
        let uids: Vec<Uid> = entries.iter().map(|e| e.uid).collect();
        let mut keywords: Vec<String> = Vec::new();
        for e in &entries {
            for k in &e.flags.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.clone());
                }
            }
        }
        let kw = if keywords.is_empty() {
            String::new()
        } else {
            format!(" {}", keywords.join(" "))
        };
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
        push(out, &format!("* {} EXISTS\r\n", uids.len()));
        if !self.rev2 {
            push(out, "* 0 RECENT\r\n");
            if let Some(i) = entries.iter().position(|e| !e.flags.seen()) {
                push(
                    out,
                    &format!("* OK [UNSEEN {}] First unseen message\r\n", i + 1),
                );
            }
        }
        push(
            out,
            &format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", mb.uidvalidity),
        );
        push(
            out,
            &format!("* OK [UIDNEXT {}] Predicted next UID\r\n", mb.uidnext),
        );
        push(
            out,
            &format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", mb.highest_modseq),
        );
        if self.rev2 {
            push(out, "* LIST () \"/\" ");
            format::mailbox(out, &mb.name, self.utf8);
            push(out, "\r\n");
        }
        if let Some(q) = qresync
            && q.uidvalidity == mb.uidvalidity
        {
            let ch = self.store().message_changes(mb.id, q.modseq).await?;
            let known = |u: Uid| {
                q.known_uids
                    .as_ref()
                    .is_none_or(|k| k.contains(u, u32::MAX))
            };
            let vanished: Vec<Uid> = ch.expunged.iter().copied().filter(|&u| known(u)).collect();
            if !vanished.is_empty() {
                push(
                    out,
                    &format!("* VANISHED (EARLIER) {}\r\n", format::seq_set(&vanished)),
                );
            }
            for e in &ch.changed {
                if let Ok(i) = uids.binary_search(&e.uid) {
                    push(out, &format!("* {} FETCH (UID {} FLAGS ", i + 1, e.uid));
                    format::flags(out, &e.flags);
                    push(out, &format!(" MODSEQ ({}))\r\n", e.modseq));
                }
            }
        }
        self.selected = Some(Selected {
            modseq: mb.highest_modseq,
            mailbox: mb,
            read_only,
            uids,
            pending_expunge: Vec::new(),
            own_changes: Vec::new(),
        });
        self.state = State::Selected;
        self.ok(
            out,
            tag,
            if read_only {
                "[READ-ONLY] EXAMINE completed"
            } else {
                "[READ-WRITE] SELECT completed"
            },
        )
    }

    async fn create(&mut self, out: &mut Vec<u8>, tag: &str, name: &str) -> Res {
        let name = name.trim_end_matches('/');
        if name.is_empty()
            || name.len() > 512
            || name.contains("//")
            || name.starts_with('/')
            || name.chars().any(|c| c.is_control() || c == '*' || c == '%')
        {
            return no("[CANNOT] Invalid mailbox name");
        }
        if name == INBOX {
            return no("[ALREADYEXISTS] INBOX always exists");
        }
        let acc = self.account_id();
        if self.store().mailbox_by_name(acc, name).await?.is_some() {
            return no("[ALREADYEXISTS] Mailbox already exists");
        }
        // Superiors are created too (RFC 9051 6.3.4).
        let mut path = String::new();
        for part in name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if self.store().mailbox_by_name(acc, &path).await?.is_none() {
                match self.store().mailbox_create(acc, &path, None).await {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.ok(out, tag, "CREATE completed")
    }

    async fn rename(&mut self, out: &mut Vec<u8>, tag: &str, from: &str, to: &str) -> Res {
        let mb = self.mailbox_by_name(from).await?;
        let acc = self.account_id();
        let to = to.trim_end_matches('/');
        if to.is_empty() || to.chars().any(|c| c.is_control() || c == '*' || c == '%') {
            return no("[CANNOT] Invalid mailbox name");
        }
        if self.store().mailbox_by_name(acc, to).await?.is_some() {
            return no("[ALREADYEXISTS] The new name is taken");
        }
        if mb.name == INBOX {
            // RFC 9051 6.3.6: renaming INBOX moves its messages; INBOX stays, empty.
            let target = self.store().mailbox_create(acc, to, None).await?;
            let uids: Vec<Uid> = self
                .store()
                .message_list(mb.id)
                .await?
                .iter()
                .map(|e| e.uid)
                .collect();
            self.store().copy(mb.id, uids, target.id, true).await?;
        } else {
            self.store().mailbox_rename(mb.id, to).await?;
            if let Some(s) = &mut self.selected
                && s.mailbox.id == mb.id
            {
                s.mailbox.name = to.to_string();
            }
        }
        self.ok(out, tag, "RENAME completed")
    }

    pub async fn subscribe(&mut self, out: &mut Vec<u8>, tag: &str, name: &str, on: bool) -> Res {
        let mb = self.mailbox_by_name(name).await?;
        self.store().mailbox_subscribe(mb.id, on).await?;
        self.ok(
            out,
            tag,
            if on {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            },
        )
    }

    async fn list(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        reference: &str,
        patterns: &[String],
        opts: &ListOptions,
        lsub: bool,
    ) -> Res {
        let verb = if lsub { "LSUB" } else { "LIST" };
        if patterns.len() == 1 && patterns[0].is_empty() && !lsub {
            push(out, "* LIST (\\Noselect) \"/\" \"\"\r\n");
            return self.ok(out, tag, "LIST completed");
        }
        let mut boxes = self.store().mailbox_list(self.account_id()).await?;
        boxes.sort_by(|a, b| (a.name != INBOX, &a.name).cmp(&(b.name != INBOX, &b.name)));
        let names: Vec<String> = boxes.iter().map(|m| m.name.clone()).collect();
        for mb in &boxes {
            let full_match = patterns.iter().any(|p| {
                let pat = format!("{reference}{p}");
                wildcard(&pat, &mb.name)
            });
            if !full_match {
                continue;
            }
            if opts.subscribed && !mb.subscribed {
                continue;
            }
            if opts.special_use && mb.special_use.is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            let prefix = format!("{}/", mb.name);
            let children = names.iter().any(|n| n.starts_with(&prefix));
            if !lsub {
                attrs.push(if children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
                if let Some(su) = mb.special_use {
                    attrs.push(su.attribute());
                }
                if (opts.ret_subscribed || opts.subscribed) && mb.subscribed {
                    attrs.push("\\Subscribed");
                }
            }
            push(out, &format!("* {verb} ({}) \"/\" ", attrs.join(" ")));
            format::mailbox(out, &mb.name, self.utf8);
            push(out, "\r\n");
            if let Some(items) = &opts.ret_status {
                self.status_line(out, mb, items).await?;
            }
        }
        self.ok(out, tag, &format!("{verb} completed"))
    }

    async fn status_line(
        &self,
        out: &mut Vec<u8>,
        mb: &Mailbox,
        items: &[String],
    ) -> Result<(), Fail> {
        let mut parts = Vec::new();
        let mut deleted = None;
        for it in items {
            let v = match it.as_str() {
                "MESSAGES" => mb.messages as u64,
                "UIDNEXT" => mb.uidnext as u64,
                "UIDVALIDITY" => mb.uidvalidity as u64,
                "UNSEEN" => mb.unseen as u64,
                "RECENT" => 0,
                "SIZE" => mb.size,
                "HIGHESTMODSEQ" => mb.highest_modseq,
                "APPENDLIMIT" => self.sh.config.imap.max_literal.0,
                "DELETED" => {
                    if deleted.is_none() {
                        let n = self
                            .store()
                            .message_list(mb.id)
                            .await?
                            .iter()
                            .filter(|e| e.flags.deleted())
                            .count();
                        deleted = Some(n as u64);
                    }
                    deleted.unwrap_or(0)
                }
                other => return Err(Fail::Bad(format!("unknown STATUS item {other}"))),
            };
            parts.push(format!("{it} {v}"));
        }
        push(out, "* STATUS ");
        format::mailbox(out, &mb.name, self.utf8);
        push(out, &format!(" ({})\r\n", parts.join(" ")));
        Ok(())
    }

    async fn quota_line(&self, out: &mut Vec<u8>) -> Result<(), Fail> {
        let acc = self.account.clone().expect("logged in");
        let u = self.store().account_usage(acc.id).await?;
        let mut res = Vec::new();
        if acc.quota_bytes > 0 {
            res.push(format!(
                "STORAGE {} {}",
                u.bytes.div_ceil(1024),
                acc.quota_bytes / 1024
            ));
        }
        if acc.quota_messages > 0 {
            res.push(format!("MESSAGE {} {}", u.messages, acc.quota_messages));
        }
        push(out, &format!("* QUOTA \"\" ({})\r\n", res.join(" ")));
        Ok(())
    }

    async fn append(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        name: &str,
        msgs: Vec<parse::AppendMessage>,
    ) -> Res {
        let mb = match self
            .store()
            .mailbox_by_name(self.account_id(), name)
            .await?
        {
            Some(m) => m,
            None => return no("[TRYCREATE] Mailbox does not exist; create it first"),
        };
        let acc = self.account_id();
        let mut uids = Vec::new();
        for m in msgs {
            let flags = format::parse_flags(&m.flags).map_err(Fail::Bad)?;
            let data = crlf(m.data);
            if data.len() as u64 > self.sh.config.imap.max_literal.0 {
                return no("[TOOBIG] Message larger than APPENDLIMIT");
            }
            let message = postern_ingest::Prepared::new(data);
            let r = self
                .store()
                .deliver(message.deliver(
                    m.date.unwrap_or_else(postern_store::now),
                    vec![postern_ingest::into_mailbox(acc, mb.id, flags, true)],
                    None,
                    Vec::new(),
                ))
                .await;
            let uid = match r.map(|mut rep| rep.targets.remove(0)) {
                Ok(Ok((_, uid))) => uid,
                Ok(Err(e)) | Err(e) => {
                    // MULTIAPPEND is all or nothing.
                    if !uids.is_empty() {
                        let _ = self.store().expunge(mb.id, uids).await;
                    }
                    return Err(e.into());
                }
            };
            uids.push(uid);
        }
        self.ok(
            out,
            tag,
            &format!(
                "[APPENDUID {} {}] APPEND completed",
                mb.uidvalidity,
                format::seq_set(&uids)
            ),
        )
    }

    async fn idle(&mut self, io: &mut Io, out: &mut Vec<u8>, tag: &str) -> Res {
        io.write(out);
        out.clear();
        io.write(b"+ idling\r\n");
        io.flush()
            .await
            .map_err(|_| Fail::Bye("connection lost".into()))?;
        let timeout = self.sh.config.imap.idle_timeout.duration();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                r = io.read_line(1024, timeout) => {
                    return match r {
                        Ok(l) if l.eq_ignore_ascii_case(b"DONE") => self.ok(out, tag, "IDLE terminated"),
                        Ok(_) => Err(Fail::Bad("Expected DONE".into())),
                        Err(LineError::Timeout) => Err(Fail::Bye("Idle for too long; reconnect".into())),
                        Err(_) => Err(Fail::Bye("connection lost".into())),
                    };
                }
                ev = self.events.recv() => {
                    let relevant = match &ev {
                        Ok(StoreEvent::Mailbox { mailbox, .. }) => self.selected.as_ref().is_some_and(|s| s.mailbox.id == *mailbox),
                        Ok(StoreEvent::Missed) => true,
                        Ok(_) => false,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return Err(Fail::Bye("Server shutting down".into())),
                    };
                    if relevant && self.state == State::Selected {
                        let mut upd = Vec::new();
                        if self.sync(&mut upd, true).await.is_ok() && !upd.is_empty() {
                            io.write(&upd);
                            io.flush().await.map_err(|_| Fail::Bye("connection lost".into()))?;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Fail::Bye("Idle for too long; reconnect".into()));
                }
            }
        }
    }

    async fn expunge(&mut self, out: &mut Vec<u8>, tag: &str, uids: Option<SeqSet>) -> Res {
        let sel = self.selected.as_ref().expect("selected");
        if sel.read_only {
            return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
        }
        let mbid = sel.mailbox.id;
        let entries = self.store().message_list(mbid).await?;
        let doomed: Vec<Uid> = entries
            .iter()
            .filter(|e| e.flags.deleted())
            .filter(|e| uids.as_ref().is_none_or(|s| s.contains(e.uid, u32::MAX)))
            .map(|e| e.uid)
            .collect();
        self.store().expunge(mbid, doomed).await?;
        self.sync(out, true).await?;
        self.ok(out, tag, "EXPUNGE completed")
    }

    pub async fn close_selected(&mut self, out: &mut Vec<u8>, tag: &str, expunge: bool) -> Res {
        if let Some(sel) = self.selected.take()
            && expunge
            && !sel.read_only
        {
            let doomed: Vec<Uid> = self
                .store()
                .message_list(sel.mailbox.id)
                .await?
                .iter()
                .filter(|e| e.flags.deleted())
                .map(|e| e.uid)
                .collect();
            self.store().expunge(sel.mailbox.id, doomed).await?;
        }
        self.state = State::Authenticated;
        self.ok(
            out,
            tag,
            if expunge {
                "CLOSE completed"
            } else {
                "UNSELECT completed"
            },
        )
    }

    async fn copy(
        &mut self,
        out: &mut Vec<u8>,
        tag: &str,
        uid: bool,
        set: &SeqSet,
        name: &str,
        moving: bool,
    ) -> Res {
        let sel = self.selected.as_ref().expect("selected");
        if moving && sel.read_only {
            return no("[READ-ONLY] The mailbox is open read-only (EXAMINE)");
        }
        let target = match self
            .store()
            .mailbox_by_name(self.account_id(), name)
            .await?
        {
            Some(m) => m,
            None => return no("[TRYCREATE] Mailbox does not exist; create it first"),
        };
        let from = sel.mailbox.id;
        let msgs = sel.resolve(set, uid);
        if msgs.is_empty() {
            return self.ok(
                out,
                tag,
                if moving {
                    "MOVE completed"
                } else {
                    "COPY completed"
                },
            );
        }
        let uids: Vec<Uid> = msgs.iter().map(|m| m.1).collect();
        let source_use = sel.mailbox.special_use;
        let pairs = self.store().copy(from, uids, target.id, moving).await?;
        self.learn_junk(source_use, &target, &pairs).await;
        let src: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "[COPYUID {} {} {}]",
            target.uidvalidity,
            format::seq_set(&src),
            format::seq_set(&dst)
        );
        if moving {
            push(out, &format!("* OK {code} Moved\r\n"));
            self.sync(out, true).await?;
            self.ok(out, tag, "MOVE completed")
        } else {
            self.ok(out, tag, &format!("{code} COPY completed"))
        }
    }

    /// Mail moved into Junk teaches that its sender sends junk; mail moved out of Junk (but not
    /// to the Trash) that its sender is trusted. Delivery follows what the user taught.
    async fn learn_junk(&self, source: Option<SpecialUse>, target: &Mailbox, pairs: &[(Uid, Uid)]) {
        let junk = SpecialUse::Junk;
        let verdict = match (source == Some(junk), target.special_use) {
            (false, Some(SpecialUse::Junk)) => true,
            (true, Some(SpecialUse::Junk | SpecialUse::Trash)) => return,
            (true, _) => false,
            (false, _) => return,
        };
        let store = self.store();
        let mut blobs = Vec::new();
        // Bounded: a folder of thousands moved at once teaches by its first hundred.
        for (_, uid) in pairs.iter().take(100) {
            if let Ok(Some(e)) = store.message_get(target.id, *uid).await {
                blobs.push(e.blob);
            }
        }
        let Ok(heads) = store
            .blob_heads(&blobs, postern_message::MessageMeta::header_len_of)
            .await
        else {
            return;
        };
        let mut senders: Vec<String> = Vec::new();
        for head in heads.into_iter().flatten() {
            let from = postern_message::parse(&head).and_then(|m| {
                m.from()
                    .and_then(|f| f.first())
                    .and_then(|a| a.address())
                    .map(str::to_ascii_lowercase)
            });
            if let Some(f) = from
                && !senders.contains(&f)
            {
                senders.push(f);
            }
        }
        for s in senders {
            let _ = store
                .sender_verdict_set(self.account_id(), &s, Some(verdict))
                .await;
        }
    }

    /// Brings the client's view of the selected mailbox up to date.
    pub async fn sync(&mut self, out: &mut Vec<u8>, allow_expunge: bool) -> Result<(), StoreError> {
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        let ch = self
            .sh
            .store
            .message_changes(sel.mailbox.id, sel.modseq)
            .await?;
        for u in ch.expunged {
            if sel.uids.binary_search(&u).is_ok() && !sel.pending_expunge.contains(&u) {
                sel.pending_expunge.push(u);
            }
        }
        if allow_expunge && !sel.pending_expunge.is_empty() {
            let mut gone = std::mem::take(&mut sel.pending_expunge);
            gone.sort_unstable();
            if self.qresync {
                push(out, &format!("* VANISHED {}\r\n", format::seq_set(&gone)));
                sel.uids.retain(|u| gone.binary_search(u).is_err());
            } else {
                for u in gone {
                    if let Ok(i) = sel.uids.binary_search(&u) {
                        push(out, &format!("* {} EXPUNGE\r\n", i + 1));
                        sel.uids.remove(i);
                    }
                }
            }
        }
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
        }
        for e in &ch.changed {
            if sel.own_changes.contains(&(e.uid, e.modseq)) {
                continue;
            }
            if e.uid <= last
                && let Ok(i) = sel.uids.binary_search(&e.uid)
            {
                push(out, &format!("* {} FETCH (", i + 1));
                if self.condstore {
                    push(out, &format!("UID {} ", e.uid));
                }
                push(out, "FLAGS ");
                format::flags(out, &e.flags);
                if self.condstore {
                    push(out, &format!(" MODSEQ ({})", e.modseq));
                }
                push(out, ")\r\n");
            }
        }
        sel.modseq = ch.highest_modseq.max(sel.modseq);
        sel.own_changes.clear();
        Ok(())
    }
}

/// Normalises bare LF (and bare CR) line endings to CRLF, as stored messages have.
pub fn crlf(data: Vec<u8>) -> Vec<u8> {
    let needs = data
        .windows(2)
        .any(|w| (w[1] == b'\n' && w[0] != b'\r') || (w[0] == b'\r' && w[1] != b'\n'))
        || data.first() == Some(&b'\n')
        || data.last() == Some(&b'\r');
    if !needs {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// IMAP LIST wildcards: `*` matches anything, `%` anything but the separator. Dynamic
/// programming over (pattern, name) suffixes: a pattern like `*a*a*a*…b` costs
/// |pattern|·|name| steps, not exponential backtracking.
pub fn wildcard(pat: &str, name: &str) -> bool {
    // INBOX matches case-insensitively.
    if name == INBOX && pat.eq_ignore_ascii_case(INBOX) {
        return true;
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // next[j]: p[i+1..] matches n[j..]; cur[j]: p[i..] matches n[j..].
    let mut next = vec![false; n.len() + 1];
    next[n.len()] = true;
    let mut cur = vec![false; n.len() + 1];
    for &c in p.iter().rev() {
        for j in (0..=n.len()).rev() {
            cur[j] = match c {
                '*' => next[j] || (j < n.len() && cur[j + 1]),
                '%' => next[j] || (j < n.len() && n[j] != '/' && cur[j + 1]),
                c => j < n.len() && n[j] == c && next[j + 1],
            };
        }
        std::mem::swap(&mut cur, &mut next);
    }
    next[0]
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
        Command::Idle => "IDLE",
        Command::Check => "CHECK",
        Command::Close => "CLOSE",
        Command::Unselect => "UNSELECT",
        Command::Expunge(_) => "EXPUNGE",
        Command::Search { uid, .. } => {
            if *uid {
                "UID SEARCH"
            } else {
                "SEARCH"
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "Work/Projects"));
        assert!(!wildcard("%", "Work/Projects"));
        assert!(wildcard("Work/%", "Work/Projects"));
        assert!(wildcard("inbox", "INBOX"));
        assert!(!wildcard("Work", "Work/Projects"));
        assert!(wildcard("W*s", "Work/Projects"));
        assert!(wildcard("%/%", "Work/Projects"));
        assert!(!wildcard("%s", "Work/Projects"));
        assert!(wildcard("", ""));
        assert!(!wildcard("", "x"));
        // Backtracking would take ages here; the table takes microseconds.
        let t = std::time::Instant::now();
        assert!(!wildcard(
            &"*a".repeat(200).replace("a*a", "a*b"),
            &"a".repeat(300)
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(crlf(b"a\nb\r\nc\rd".to_vec()), b"a\r\nb\r\nc\r\nd");
        assert_eq!(crlf(b"a\r\nb\r\n".to_vec()), b"a\r\nb\r\n");
    }
}
