//! Mailbox commands (RFC 9051 6.3): SELECT/EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
//! LIST/LSUB (with LIST-EXTENDED and LIST-STATUS), STATUS, the QUOTA commands, and APPEND.

use postern_ingest::{MessageSink, Prepared};
use postern_store::{FlagOp, Flags, FlagsUpdate, INBOX, Mailbox, Rights, StoreError, Uid};

use crate::core::{Fail, ImapCore, Res, Selected, State, no, ok, push};
use crate::format;
use crate::parse::{self, ListOptions, MessageData};

impl ImapCore {
    /// A mailbox the user may read, named as the client sees it.
    pub async fn mailbox_by_name(&self, name: &str) -> Result<Mailbox, Fail> {
        Ok(self.open(name, Rights::READ).await?.mailbox)
    }

    pub(crate) async fn select(
        &mut self,
        out: &mut Vec<u8>,
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
        let v = self.open(name, Rights::READ).await?;
        // RFC 4314 4: without a right to change anything, the mailbox opens read-only.
        let read_only = read_only
            || ![
                Rights::SEEN,
                Rights::WRITE,
                Rights::DELETE_MESSAGES,
                Rights::EXPUNGE,
            ]
            .iter()
            .any(|r| v.rights.contains(*r));
        let rights = v.rights;
        let mb = v.mailbox;
        let mut sel = Selected {
            modseq: mb.highest_modseq,
            private_seen: self.private_seen(&mb).await?,
            mailbox: mb,
            read_only,
            uids: Vec::new(),
            pending_expunge: Vec::new(),
            own_changes: Vec::new(),
            recent: Vec::new(),
            keywords: Vec::new(),
            rights,
            saved: Vec::new(),
            updates: Vec::new(),
        };
        let mb = sel.mailbox.clone();
        let mut entries = self.store().message_list(mb.id).await?;
        sel.view_all(&mut entries);
        let uids: Vec<Uid> = entries.iter().map(|e| e.uid).collect();
        let mut keywords: Vec<String> = Vec::new();
        for e in &entries {
            for k in &e.flags.keywords {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.clone());
                }
            }
        }
        crate::core::flags_lines(out, &keywords);
        push(out, &format!("* {} EXISTS\r\n", uids.len()));
        // Recent to this session (IMAP4rev1 only): what no session was told of before; EXAMINE
        // shows them without taking them.
        let mut recent = Vec::new();
        if !self.rev2 {
            let upto = uids.last().copied().unwrap_or(0) + 1;
            let from = if read_only {
                crate::core::recent_pointer(self.store(), mb.id).await
            } else {
                crate::core::claim_recent(self.store(), mb.id, upto).await
            };
            recent = uids.iter().copied().filter(|&u| u >= from).collect();
        }
        if !self.rev2 {
            push(out, &format!("* {} RECENT\r\n", recent.len()));
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
        push(
            out,
            &format!("* OK [MAILBOXID ({})] Ok\r\n", format::mailbox_id(mb.id)),
        );
        if self.rev2 {
            push(out, "* LIST () \"/\" ");
            format::mailbox(out, &mb.name, self.utf8);
            push(out, "\r\n");
        }
        if let Some(q) = qresync
            && q.uidvalidity == mb.uidvalidity
        {
            let mut ch = self.store().message_changes(mb.id, q.modseq).await?;
            sel.view_all(&mut ch.changed);
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
                    format::flags_recent(out, &e.flags, recent.binary_search(&e.uid).is_ok());
                    push(out, &format!(" MODSEQ ({}))\r\n", e.modseq));
                }
            }
        }
        sel.uids = uids;
        sel.recent = recent;
        sel.keywords = keywords;
        self.selected = Some(sel);
        self.state = State::Selected;
        ok(if read_only {
            "[READ-ONLY] EXAMINE completed"
        } else {
            "[READ-WRITE] SELECT completed"
        })
    }

    pub(crate) async fn create(&mut self, name: &str) -> Res {
        if !valid_name(name) {
            return no("[CANNOT] Invalid mailbox name");
        }
        let name = name.trim_end_matches('/');
        if name == INBOX {
            return no("[ALREADYEXISTS] INBOX always exists");
        }
        if self.in_shared_namespace(name) {
            return self.create_shared(name).await;
        }
        let acc = self.account_id();
        if self.store().mailbox_by_name(acc, name).await?.is_some() {
            return no("[ALREADYEXISTS] Mailbox already exists");
        }
        // Superiors are created too (RFC 9051 6.3.4).
        let mut path = String::new();
        let mut made = None;
        for part in name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if self.store().mailbox_by_name(acc, &path).await?.is_none() {
                match self.store().mailbox_create(acc, &path, None).await {
                    Ok(m) => made = Some(m.id),
                    Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        created(made)
    }

    /// CREATE inside a folder another shares: needs `k` on the parent (RFC 4314 4); the new
    /// folder is the owner's and starts with the parent's access list.
    async fn create_shared(&mut self, name: &str) -> Res {
        let Some((parent, leaf)) = name.rsplit_once('/') else {
            return no("[CANNOT] Invalid mailbox name");
        };
        let Some(p) = self.visible(parent).await? else {
            return no(format!(
                "[NOPERM] You may make folders only inside folders shared with you, not in {parent}"
            ));
        };
        if !p.rights.contains(Rights::CREATE) {
            return crate::share::noperm(&p.mailbox.name, Rights::CREATE);
        }
        let own = format!("{}/{leaf}", p.own_name);
        let owner = p.mailbox.account;
        if self.store().mailbox_by_name(owner, &own).await?.is_some() {
            return no("[ALREADYEXISTS] Mailbox already exists");
        }
        let made = self.store().mailbox_create(owner, &own, None).await?;
        self.inherit_acl(p.mailbox.id, made.id).await?;
        created(Some(made.id))
    }

    pub(crate) async fn delete(&mut self, name: &str) -> Res {
        let v = self.open(name, Rights::DELETE_MAILBOX).await?;
        let (acc, mb) = (v.mailbox.account, v.mailbox);
        if v.own_name == INBOX {
            return no("[CANNOT] INBOX cannot be deleted");
        }
        let prefix = format!("{}/", v.own_name);
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
        ok("DELETE completed")
    }

    pub(crate) async fn rename(&mut self, from: &str, to: &str) -> Res {
        let to = to.trim_end_matches('/');
        if self.in_shared_namespace(from) || self.in_shared_namespace(to) {
            return no(
                "[CANNOT] Folders shared with you are renamed by their owner; names under the shared prefix are theirs",
            );
        }
        let mb = self.mailbox_by_name(from).await?;
        let acc = self.account_id();
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
            self.copy_metadata(mb.id, target.id).await?;
        } else {
            self.store().mailbox_rename(mb.id, to).await?;
            if let Some(s) = &mut self.selected
                && s.mailbox.id == mb.id
            {
                s.mailbox.name = to.to_string();
            }
        }
        ok("RENAME completed")
    }

    /// SUBSCRIBE and UNSUBSCRIBE: any name, whether or not a mailbox has it (RFC 9051 6.3.9).
    pub(crate) async fn subscribe(&mut self, name: &str, on: bool) -> Res {
        if on && !valid_name(name) {
            return no("[CANNOT] Invalid mailbox name");
        }
        let name = name.trim_end_matches('/');
        self.store()
            .subscription_set(self.account_id(), name, on)
            .await?;
        ok(if on {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        })
    }

    pub(crate) async fn list(
        &mut self,
        out: &mut Vec<u8>,
        reference: &str,
        patterns: &[String],
        opts: &ListOptions,
        lsub: bool,
    ) -> Res {
        let verb = if lsub { "LSUB" } else { "LIST" };
        if patterns.len() == 1 && patterns[0].is_empty() && !lsub {
            push(out, "* LIST (\\Noselect) \"/\" \"\"\r\n");
            return ok("LIST completed");
        }
        let acc = self.account_id();
        let mut boxes = self.store().mailbox_list(acc).await?;
        let shared = self.shared_mailboxes().await?;
        let levels = self.shared_levels(&shared);
        boxes.extend(shared);
        let subscribed = if lsub || opts.subscribed || opts.ret_subscribed {
            self.store().subscriptions(acc).await?
        } else {
            Vec::new()
        };
        let patterns: Vec<String> = patterns.iter().map(|p| format!("{reference}{p}")).collect();
        let listed = if lsub {
            crate::list::lsub(&boxes, &subscribed, &patterns)
        } else {
            crate::list::list(&boxes, &subscribed, &patterns, opts, &levels)
        };
        for l in listed {
            push(out, &format!("* {verb} ({}) \"/\" ", l.attrs.join(" ")));
            format::mailbox(out, l.name, self.utf8);
            if l.childinfo {
                push(out, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            push(out, "\r\n");
            if let (Some(items), Some(mb)) = (&opts.ret_status, l.mailbox) {
                self.status_line(out, mb, items).await?;
            }
        }
        ok(&format!("{verb} completed"))
    }

    pub(crate) async fn status_line(
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
                "UNSEEN" if mb.account != self.account_id() => {
                    let seen = self.private_seen(mb).await?.unwrap_or_default();
                    self.store()
                        .message_list(mb.id)
                        .await?
                        .iter()
                        .filter(|e| seen.binary_search(&e.uid).is_err())
                        .count() as u64
                }
                "UNSEEN" => mb.unseen as u64,
                "RECENT" => {
                    let from = crate::core::recent_pointer(self.store(), mb.id).await;
                    if from >= mb.uidnext {
                        0
                    } else {
                        self.store()
                            .message_list(mb.id)
                            .await?
                            .iter()
                            .filter(|e| e.uid >= from)
                            .count() as u64
                    }
                }
                "SIZE" => mb.size,
                "HIGHESTMODSEQ" => mb.highest_modseq,
                "MAILBOXID" => {
                    parts.push(format!("MAILBOXID ({})", format::mailbox_id(mb.id)));
                    continue;
                }
                "APPENDLIMIT" => self.cfg.config.imap.max_literal.0,
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

    pub(crate) async fn get_quota_root(&mut self, out: &mut Vec<u8>, name: &str) -> Res {
        let mb = self.mailbox_by_name(name).await?;
        let acc = self.account.clone().expect("logged in");
        push(out, "* QUOTAROOT ");
        format::mailbox(out, &mb.name, self.utf8);
        // Another's folder counts against their quota, not one this user has.
        if mb.account == acc.id && (acc.quota_bytes > 0 || acc.quota_messages > 0) {
            push(out, " \"\"\r\n");
            self.quota_line(out).await?;
        } else {
            push(out, "\r\n");
        }
        ok("GETQUOTAROOT completed")
    }

    pub(crate) async fn get_quota(&mut self, out: &mut Vec<u8>, root: &str) -> Res {
        let acc = self.account.clone().expect("logged in");
        if !root.is_empty() || (acc.quota_bytes == 0 && acc.quota_messages == 0) {
            return no("[NONEXISTENT] No such quota root");
        }
        self.quota_line(out).await?;
        ok("GETQUOTA completed")
    }

    /// APPEND and MULTIAPPEND (RFC 3502): all the messages are stored, or none.
    pub(crate) async fn append(
        &mut self,
        name: &str,
        msgs: Vec<parse::AppendMessage>,
        sinks: Vec<MessageSink>,
    ) -> Res {
        let mut sinks: Vec<Option<MessageSink>> = sinks.into_iter().map(Some).collect();
        let (mb, rights) = match self.visible(name).await? {
            Some(v) if v.rights.contains(Rights::INSERT) => (v.mailbox, v.rights),
            Some(v) => return crate::share::noperm(&v.mailbox.name, Rights::INSERT),
            None => return no("[TRYCREATE] Mailbox does not exist; create it first"),
        };
        // Into another's folder: their account, and \Seen is this reader's own.
        let acc = mb.account;
        let reader = (acc != self.account_id()).then(|| self.account_id());
        let mut seen_uids = Vec::new();
        let mut uids = Vec::new();
        for m in msgs {
            let mut flags = format::parse_flags(&m.flags).map_err(Fail::Bad)?;
            let wants_seen = flags.seen();
            if reader.is_some() {
                flags = permitted(flags, rights);
                flags.bits &= !Flags::SEEN;
            }
            let message = match self.prepare(m.data, m.binary, &mut sinks).await {
                Ok(p) => p,
                Err(e) => {
                    // MULTIAPPEND is all or nothing.
                    if !uids.is_empty() {
                        let _ = self.store().expunge(mb.id, uids).await;
                    }
                    return Err(e);
                }
            };
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
            if wants_seen && rights.contains(Rights::SEEN) {
                seen_uids.push(uid);
            }
        }
        if reader.is_some() && !seen_uids.is_empty() {
            self.store()
                .flags_update(FlagsUpdate {
                    mailbox: mb.id,
                    uids: seen_uids,
                    op: FlagOp::Add,
                    flags: Flags {
                        bits: Flags::SEEN,
                        keywords: Vec::new(),
                    },
                    unchanged_since: None,
                    reader,
                })
                .await?;
        }
        ok(&format!(
            "[APPENDUID {} {}] APPEND completed",
            mb.uidvalidity,
            format::seq_set(&uids)
        ))
    }
}

impl ImapCore {
    /// An APPEND message's bytes, ready to store.
    async fn prepare(
        &self,
        data: MessageData,
        binary: bool,
        sinks: &mut [Option<MessageSink>],
    ) -> Result<Prepared, Fail> {
        Ok(match data {
            MessageData::Inline(data) => {
                let data = if binary { data } else { crlf(data) };
                if data.len() as u64 > self.cfg.config.imap.max_literal.0 {
                    return no("[TOOBIG] Message larger than APPENDLIMIT");
                }
                match binary
                    .then(|| postern_message::binary_to_base64(&data))
                    .flatten()
                {
                    Some(encoded) => Prepared::new(encoded),
                    None => Prepared::new(data),
                }
            }
            // Spooled as it arrived (line ends made CRLF on the way, unless binary).
            MessageData::Spooled(i) => {
                let Some(sink) = sinks.get_mut(i).and_then(Option::take) else {
                    return Err(Fail::Bad("APPEND message missing".into()));
                };
                let mut raw = sink.finish().await.map_err(StoreError::from_io)?;
                let encoded = if binary {
                    raw.map().map_err(StoreError::from_io)?;
                    postern_message::binary_to_base64(raw.bytes())
                } else {
                    None
                };
                match encoded {
                    // Binary parts made readable by every mail program (RFC 3516 4.4).
                    Some(e) => Prepared::new(e),
                    None => Prepared::from_raw(raw).map_err(StoreError::from_io)?,
                }
            }
            MessageData::Catenate(parts) => self.catenate(parts, sinks).await?,
        })
    }
}

/// CREATE's answer, with the new mailbox's id (RFC 8474 4.1).
fn created(id: Option<u64>) -> Res {
    match id {
        Some(id) => ok(&format!(
            "[MAILBOXID ({})] CREATE completed",
            format::mailbox_id(id)
        )),
        None => ok("CREATE completed"),
    }
}

/// The flags a user with these rights may set (RFC 4314 4: `s` for \Seen, `t` for \Deleted,
/// `w` for the rest); the others are left out, as Dovecot does.
pub(crate) fn permitted(mut f: Flags, r: Rights) -> Flags {
    if !r.contains(Rights::SEEN) {
        f.bits &= !Flags::SEEN;
    }
    if !r.contains(Rights::DELETE_MESSAGES) {
        f.bits &= !Flags::DELETED;
    }
    if !r.contains(Rights::WRITE) {
        f.bits &= Flags::SEEN | Flags::DELETED;
        f.keywords.clear();
    }
    f
}

/// A name a mailbox can have: no wildcards, no control characters, no empty level.
fn valid_name(name: &str) -> bool {
    let name = name.trim_end_matches('/');
    !(name.is_empty()
        || name.len() > 512
        || name.contains("//")
        || name.starts_with('/')
        || name.chars().any(|c| c.is_control() || c == '*' || c == '%'))
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
