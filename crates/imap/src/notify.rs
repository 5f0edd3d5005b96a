//! NOTIFY (RFC 5465): the client names mailboxes and the events it wants to hear of, and is
//! told of them as they happen, between commands and in IDLE, without asking: the selected
//! mailbox by EXISTS, EXPUNGE and FETCH, others by STATUS, mailbox names and subscriptions by
//! LIST, METADATA entries by METADATA. The store's events say where something changed; what
//! changed is read from the store and compared with what the client was last told.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use postern_store::{INBOX, Mailbox, Rights, StoreEvent, Uid};
use tracing::warn;

use crate::core::{Fail, ImapCore, Res, State, ok, push};
use crate::fetch::FetchJob;
use crate::format;
use crate::parse::{FetchAtt, NotifyEvent, NotifyFilter, NotifyGroup, SeqNum, SeqSet};

/// What the BADEVENT response code names: every event we tell of (RFC 5465 8).
const SUPPORTED: &str = "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange \
    MailboxMetadataChange ServerMetadataChange";

/// Kinds of event, as a group is matched for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any message event: MessageNew, MessageExpunge, FlagChange.
    Message,
    Flag,
    Name,
    Subscription,
    MailboxMetadata,
    ServerMetadata,
}

fn has(events: &[NotifyEvent], kind: Kind) -> bool {
    events.iter().any(|e| {
        matches!(
            (e, kind),
            (
                NotifyEvent::MessageNew(_) | NotifyEvent::MessageExpunge | NotifyEvent::FlagChange,
                Kind::Message
            ) | (NotifyEvent::FlagChange, Kind::Flag)
                | (NotifyEvent::MailboxName, Kind::Name)
                | (NotifyEvent::SubscriptionChange, Kind::Subscription)
                | (NotifyEvent::MailboxMetadataChange, Kind::MailboxMetadata)
                | (NotifyEvent::ServerMetadataChange, Kind::ServerMetadata)
        )
    })
}

/// What the session was asked to tell, and what it last told.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    groups: Vec<NotifyGroup>,
    /// STATUS last sent per mailbox: messages, UIDNEXT, highest modseq.
    told: HashMap<u64, (u32, Uid, u64)>,
    /// The user's mailboxes (id → name) and subscriptions as last told, when names or
    /// subscriptions are watched.
    names: Option<(BTreeMap<u64, String>, BTreeSet<String>)>,
    pending: Pending,
}

/// Events heard and not yet told.
#[derive(Debug, Default)]
struct Pending {
    selected: bool,
    /// Mailboxes whose messages changed, with their owners.
    mailboxes: BTreeMap<u64, u64>,
    list: bool,
    /// (keeper, mailbox or None for the server, entry names).
    metadata: Vec<(u64, Option<u64>, Vec<String>)>,
    /// Events were lost: every watched mailbox is looked at again.
    all: bool,
}

impl Pending {
    fn any(&self) -> bool {
        self.selected
            || self.list
            || self.all
            || !self.mailboxes.is_empty()
            || !self.metadata.is_empty()
    }
}

/// Where a mailbox stands for matching: its name as the client writes it, and whether it is
/// in the user's own namespace.
struct Place<'a> {
    name: &'a str,
    personal: bool,
}

impl Notify {
    /// The selected-mailbox group (at most one), when it asks for message events.
    fn selected_group(&self) -> Option<(&NotifyFilter, &[NotifyEvent])> {
        self.groups
            .iter()
            .find(|g| g.filter.is_selected())
            .and_then(|g| Some((&g.filter, g.events.as_deref()?)))
            .filter(|(_, ev)| has(ev, Kind::Message))
    }

    /// The events of the first group that matches a mailbox other than the selected one for
    /// this kind (a NONE group that matches ends the search: nothing is told).
    fn group_for(
        &self,
        at: &Place,
        kind: Kind,
        selected: bool,
        subscribed: &BTreeSet<String>,
    ) -> Option<&[NotifyEvent]> {
        let message = matches!(kind, Kind::Message | Kind::Flag);
        for g in &self.groups {
            // The selected mailbox's message events come from SELECTED only.
            if g.filter.is_selected() || (selected && message) {
                continue;
            }
            let name = at.name;
            let under = |n: &String| {
                name == n
                    || name
                        .strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            };
            let matched = match &g.filter {
                NotifyFilter::Selected | NotifyFilter::SelectedDelayed => false,
                NotifyFilter::Inboxes => at.personal && name == INBOX,
                NotifyFilter::Personal => at.personal,
                NotifyFilter::Subscribed => subscribed.contains(name),
                NotifyFilter::Subtree(names) => names.iter().any(under),
                NotifyFilter::Mailboxes(names) => names.iter().any(|n| n == name),
            };
            if !matched {
                continue;
            }
            match &g.events {
                None => return None,
                Some(ev) if has(ev, kind) => return Some(ev),
                Some(_) => {}
            }
        }
        None
    }

    fn wants(&self, kind: Kind) -> bool {
        self.groups
            .iter()
            .any(|g| g.events.as_deref().is_some_and(|ev| has(ev, kind)))
    }

    fn uses_subscriptions(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.filter == NotifyFilter::Subscribed)
    }
}

/// The checks of RFC 5465 3.1 and 8 on a NOTIFY SET: NO with BADEVENT for events we do not
/// tell of, BAD for groups the syntax does not allow. MessageNew, MessageExpunge and
/// FlagChange are taken alone too, as Dovecot takes them (RFC 5465 5 asks clients to give
/// them together; telling more than asked harms no client).
fn check(groups: &[NotifyGroup]) -> Result<(), Fail> {
    for g in groups {
        for e in g.events.iter().flatten() {
            if let NotifyEvent::Other(name) = e {
                return Err(Fail::No(format!(
                    "[BADEVENT ({SUPPORTED})] {name} events are not told here"
                )));
            }
        }
    }
    let mut selected = 0;
    for g in groups {
        let ev = g.events.as_deref().unwrap_or_default();
        if g.filter.is_selected() {
            selected += 1;
            if ev.iter().any(|e| {
                !matches!(
                    e,
                    NotifyEvent::MessageNew(_)
                        | NotifyEvent::MessageExpunge
                        | NotifyEvent::FlagChange
                )
            }) {
                return Err(Fail::Bad(
                    "SELECTED and SELECTED-DELAYED take message events only".into(),
                ));
            }
        } else if ev
            .iter()
            .any(|e| matches!(e, NotifyEvent::MessageNew(a) if !a.is_empty()))
        {
            return Err(Fail::Bad(
                "FETCH items with MessageNew are for SELECTED or SELECTED-DELAYED only".into(),
            ));
        }
    }
    if selected > 1 {
        return Err(Fail::Bad(
            "At most one SELECTED or SELECTED-DELAYED group".into(),
        ));
    }
    Ok(())
}

impl ImapCore {
    /// NOTIFY NONE (no groups) or SET (RFC 5465 3.1): replaces what was asked before.
    pub(crate) async fn notify_command(
        &mut self,
        out: &mut Vec<u8>,
        status: bool,
        groups: Vec<NotifyGroup>,
    ) -> Res {
        check(&groups)?;
        let mut n = Notify {
            groups,
            ..Default::default()
        };
        if n.wants(Kind::Name) || n.wants(Kind::Subscription) {
            n.names = Some(self.names_now().await?);
        }
        let watched = self.watched().await?;
        let subscribed = self.subscribed_if(&n).await?;
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        for (mb, personal) in watched {
            let at = Place {
                name: &mb.name,
                personal,
            };
            if Some(mb.id) == selected {
                continue;
            }
            let Some(ev) = n.group_for(&at, Kind::Message, false, &subscribed) else {
                continue;
            };
            let items = self.notify_items(has(ev, Kind::Flag));
            n.told
                .insert(mb.id, (mb.messages, mb.uidnext, mb.highest_modseq));
            if status {
                self.status_line(out, &mb, &items).await?;
            }
        }
        self.notify = Some(n);
        ok("NOTIFY completed")
    }

    /// Whether store events are to be heard while waiting for `wait`'s input: in IDLE always,
    /// and between commands when NOTIFY asked for any.
    pub fn hears_events(&self, idle: bool) -> bool {
        idle || (self.state != State::NotAuthenticated
            && !self.in_command()
            && self.notify.as_ref().is_some_and(|n| !n.groups.is_empty()))
    }

    /// Notes a store event for what NOTIFY asked; `true` when the session takes store events
    /// through NOTIFY (and IDLE's own handling is off).
    pub(crate) fn notify_event(&mut self, event: Option<&StoreEvent>) -> bool {
        let me = self.account_id();
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let Some(n) = &mut self.notify else {
            return false;
        };
        let watch_selected = n.selected_group().is_some();
        let p = &mut n.pending;
        match event {
            Some(StoreEvent::Mailbox { mailbox, .. }) if Some(*mailbox) == selected => {
                p.selected |= watch_selected;
            }
            // Rights are looked at again whatever is told: losing them ends the session.
            Some(StoreEvent::Acl { mailbox, .. }) if Some(*mailbox) == selected => {
                p.selected = true;
            }
            Some(StoreEvent::Mailbox {
                account, mailbox, ..
            }) => {
                p.mailboxes.insert(*mailbox, *account);
            }
            Some(StoreEvent::MailboxList { account }) if *account == me => p.list = true,
            Some(StoreEvent::Metadata {
                keeper,
                mailbox,
                names,
            }) => p.metadata.push((*keeper, *mailbox, names.clone())),
            Some(StoreEvent::Missed) | None => {
                p.all = true;
                p.list = true;
                p.selected |= watch_selected;
            }
            Some(_) => {}
        }
        true
    }

    /// IDLE began: expunges SELECTED-DELAYED held back are told now (RFC 5465 3.2).
    pub(crate) fn notify_idle_started(&mut self) {
        let held = self
            .selected
            .as_ref()
            .is_some_and(|s| !s.pending_expunge.is_empty());
        if let Some(n) = &mut self.notify
            && held
            && n.selected_group().is_some()
        {
            n.pending.selected = true;
        }
    }

    /// Whether events wait to be told now: between commands or in IDLE.
    pub(crate) fn notify_due(&self) -> bool {
        !self.in_command() && self.notify.as_ref().is_some_and(|n| n.pending.any())
    }

    /// Tells what the events heard since the last time call for. A FETCH of new messages'
    /// items (MessageNew with items) comes back as a job to run.
    pub(crate) async fn notify_flush(&mut self, idling: bool) -> Option<FetchJob> {
        let Some(n) = &mut self.notify else {
            return None;
        };
        let pending = std::mem::take(&mut n.pending);
        let mut out = std::mem::take(&mut self.out);
        let r = self.tell(&mut out, pending, idling).await;
        self.out = out;
        match r {
            Ok(job) => job,
            Err(Fail::Bye(m)) => {
                self.respond("*", Err(Fail::Bye(m)));
                None
            }
            Err(Fail::No(m) | Fail::Bad(m)) => {
                warn!(error = %m, "notification failed");
                None
            }
        }
    }

    async fn tell(
        &mut self,
        out: &mut Vec<u8>,
        p: Pending,
        idling: bool,
    ) -> Result<Option<FetchJob>, Fail> {
        let mut job = None;
        if p.selected && self.state == State::Selected {
            self.recheck_rights().await?;
            job = self.tell_selected(out, idling).await?;
        }
        if p.list {
            self.tell_names(out).await?;
        }
        let mailboxes = self.readable(&p.mailboxes).await?;
        if p.all || !mailboxes.is_empty() {
            self.tell_status(out, if p.all { None } else { Some(&mailboxes) })
                .await?;
        }
        for (keeper, mailbox, names) in p.metadata {
            self.tell_metadata(out, keeper, mailbox, &names).await?;
        }
        Ok(job)
    }

    /// The selected mailbox (RFC 5465 5.2-5.3): new messages and flag changes at once;
    /// expunges at once with SELECTED, with SELECTED-DELAYED only in IDLE (otherwise at the
    /// end of the next command that may tell of them).
    async fn tell_selected(
        &mut self,
        out: &mut Vec<u8>,
        idling: bool,
    ) -> Result<Option<FetchJob>, Fail> {
        let Some((filter, events)) = self.notify.as_ref().and_then(|n| n.selected_group()) else {
            return Ok(None);
        };
        let expunge = idling || *filter == NotifyFilter::Selected;
        let flags = has(events, Kind::Flag);
        let atts: Vec<FetchAtt> = events
            .iter()
            .find_map(|e| match e {
                NotifyEvent::MessageNew(a) => Some(a.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let last = self
            .selected
            .as_ref()
            .and_then(|s| s.uids.last().copied())
            .unwrap_or(0);
        self.sync_with(out, expunge, flags).await?;
        let first_new = self
            .selected
            .as_ref()
            .and_then(|s| s.uids.iter().copied().find(|&u| u > last));
        match first_new {
            Some(from) if !atts.is_empty() => {
                let set = SeqSet(vec![(SeqNum::Num(from), SeqNum::Star)]);
                let job = FetchJob::start(self, out, "", true, &set, atts, None, false).await?;
                Ok(Some(job.telling()))
            }
            _ => Ok(None),
        }
    }

    /// The items of a STATUS told by NOTIFY (RFC 5465 5.2-5.3; the modseq with FlagChange,
    /// 5.1, or CONDSTORE).
    fn notify_items(&self, flags: bool) -> Vec<String> {
        let mut items: Vec<String> = ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
            .map(String::from)
            .to_vec();
        if flags || self.condstore {
            items.push("HIGHESTMODSEQ".into());
        }
        items
    }

    /// STATUS for each watched mailbox (all, or those named) whose messages changed since it
    /// was last told, or whose flags did when FlagChange was asked.
    async fn tell_status(
        &mut self,
        out: &mut Vec<u8>,
        only: Option<&BTreeSet<u64>>,
    ) -> Result<(), Fail> {
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let mut watched = self.watched().await?;
        if let Some(only) = only {
            watched.retain(|(mb, _)| only.contains(&mb.id));
        }
        let Some(n) = self.notify.take() else {
            return Ok(());
        };
        let subscribed = self.subscribed_if(&n).await;
        let mut n = n;
        let r = async {
            let subscribed = subscribed?;
            for (mb, personal) in watched {
                if Some(mb.id) == selected {
                    continue;
                }
                let at = Place {
                    name: &mb.name,
                    personal,
                };
                let Some(ev) = n.group_for(&at, Kind::Message, false, &subscribed) else {
                    continue;
                };
                let watch_flags = has(ev, Kind::Flag);
                let now = (mb.messages, mb.uidnext, mb.highest_modseq);
                let before = n.told.insert(mb.id, now);
                let counts = before.is_none_or(|b| (b.0, b.1) != (now.0, now.1));
                let flags = watch_flags && before.is_none_or(|b| b.2 != now.2);
                if counts || flags {
                    self.status_line(out, &mb, &self.notify_items(watch_flags))
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        self.notify = Some(n);
        r
    }

    /// LIST for mailboxes made, renamed and deleted (RFC 5465 5.4), and for subscriptions
    /// taken or dropped (5.5), from the names last told.
    async fn tell_names(&mut self, out: &mut Vec<u8>) -> Result<(), Fail> {
        let Some(n) = &self.notify else {
            return Ok(());
        };
        let Some((old, old_subs)) = n.names.clone() else {
            return Ok(());
        };
        let (new, new_subs) = self.names_now().await?;
        let Some(mut n) = self.notify.take() else {
            return Ok(());
        };
        n.names = Some((new.clone(), new_subs.clone()));
        let mut lines: Vec<(String, &str, Option<String>)> = Vec::new();
        let mut renamed: BTreeSet<&str> = BTreeSet::new();
        let subs = &new_subs;
        let said = |at: &str, kind: Kind| {
            let place = Place {
                name: at,
                personal: true,
            };
            n.group_for(&place, kind, false, subs).is_some()
        };
        for (id, name) in &new {
            match old.get(id) {
                None if said(name, Kind::Name) => lines.push((name.clone(), "", None)),
                Some(was) if was != name => {
                    renamed.insert(was);
                    renamed.insert(name);
                    if said(name, Kind::Name) || said(was, Kind::Name) {
                        lines.push((name.clone(), "", Some(was.clone())));
                    }
                }
                _ => {}
            }
        }
        for (id, name) in &old {
            if !new.contains_key(id) && said(name, Kind::Name) {
                lines.push((name.clone(), "\\NonExistent", None));
            }
        }
        let exists = |name: &str| new.values().any(|n| n == name);
        for name in new_subs.symmetric_difference(&old_subs) {
            if renamed.contains(name.as_str()) || !said(name, Kind::Subscription) {
                continue;
            }
            let attrs = match (new_subs.contains(name), exists(name)) {
                (true, true) => "\\Subscribed",
                (true, false) => "\\NonExistent \\Subscribed",
                (false, true) => "",
                (false, false) => "\\NonExistent",
            };
            lines.push((name.clone(), attrs, None));
        }
        for (name, attrs, was) in lines {
            push(out, &format!("* LIST ({attrs}) \"/\" "));
            format::mailbox(out, &name, self.utf8);
            if let Some(was) = was {
                push(out, " (\"OLDNAME\" (");
                format::mailbox(out, &was, self.utf8);
                push(out, "))");
            }
            push(out, "\r\n");
        }
        self.notify = Some(n);
        Ok(())
    }

    /// METADATA naming the entries that changed (RFC 5465 5.6, 5.7; RFC 5464 4.4.2): on the
    /// server, the user's own; on a mailbox they may read, its shared entries and their own
    /// private ones.
    async fn tell_metadata(
        &mut self,
        out: &mut Vec<u8>,
        keeper: u64,
        mailbox: Option<u64>,
        names: &[String],
    ) -> Result<(), Fail> {
        let me = self.account_id();
        let mine = |n: &&String| keeper == me || n.starts_with("/shared/");
        let Some(n) = &self.notify else {
            return Ok(());
        };
        let (name, names): (String, Vec<&String>) = match mailbox {
            None => {
                if keeper != me || !n.wants(Kind::ServerMetadata) {
                    return Ok(());
                }
                (String::new(), names.iter().collect())
            }
            Some(id) => {
                let Some((mb, personal)) = self.watched_one(id).await? else {
                    return Ok(());
                };
                let subscribed = self
                    .subscribed_if(self.notify.as_ref().expect("set"))
                    .await?;
                let n = self.notify.as_ref().expect("set");
                let at = Place {
                    name: &mb.name,
                    personal,
                };
                if n.group_for(&at, Kind::MailboxMetadata, false, &subscribed)
                    .is_none()
                {
                    return Ok(());
                }
                (mb.name, names.iter().filter(mine).collect())
            }
        };
        if names.is_empty() {
            return Ok(());
        }
        push(out, "* METADATA ");
        format::mailbox(out, &name, self.utf8);
        for e in names {
            push(out, " ");
            format::string(out, e.as_bytes());
        }
        push(out, "\r\n");
        Ok(())
    }

    /// Of the mailboxes changed, those the user may read: their own, and others' that grant
    /// them `r` (one look at the access list each: mail for other accounts costs little).
    async fn readable(&mut self, changed: &BTreeMap<u64, u64>) -> Result<BTreeSet<u64>, Fail> {
        let me = self.account_id();
        let mut out = BTreeSet::new();
        for (&mailbox, &owner) in changed {
            if owner == me {
                out.insert(mailbox);
                continue;
            }
            let acl = self.store().acl_get(mailbox).await?;
            let ids = self.identifiers.as_deref().unwrap_or_default();
            if postern_store::rights_in(&acl, ids).contains(Rights::READ) {
                out.insert(mailbox);
            }
        }
        Ok(out)
    }

    /// The user's mailbox names by id, and their subscriptions.
    async fn names_now(&self) -> Result<(BTreeMap<u64, String>, BTreeSet<String>), Fail> {
        let me = self.account_id();
        let boxes = self.store().mailbox_list(me).await?;
        let subs = self.store().subscriptions(me).await?;
        Ok((
            boxes.into_iter().map(|m| (m.id, m.name)).collect(),
            subs.into_iter().collect(),
        ))
    }

    async fn subscribed_if(&self, n: &Notify) -> Result<BTreeSet<String>, Fail> {
        if !n.uses_subscriptions() {
            return Ok(BTreeSet::new());
        }
        Ok(self
            .store()
            .subscriptions(self.account_id())
            .await?
            .into_iter()
            .collect())
    }

    /// Every mailbox the user may read, named as they see it, and whether it is their own.
    async fn watched(&mut self) -> Result<Vec<(Mailbox, bool)>, Fail> {
        let mut out: Vec<(Mailbox, bool)> = self
            .store()
            .mailbox_list(self.account_id())
            .await?
            .into_iter()
            .map(|m| (m, true))
            .collect();
        for (mb, rights) in self.shared_with_rights().await? {
            if rights.contains(Rights::READ) {
                out.push((mb, false));
            }
        }
        Ok(out)
    }

    async fn watched_one(&mut self, id: u64) -> Result<Option<(Mailbox, bool)>, Fail> {
        match self.store().mailbox_get(id).await? {
            Some(mb) if mb.account == self.account_id() => Ok(Some((mb, true))),
            Some(_) => Ok(self.watched().await?.into_iter().find(|(m, _)| m.id == id)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(filter: NotifyFilter, events: Option<Vec<NotifyEvent>>) -> NotifyGroup {
        NotifyGroup { filter, events }
    }

    fn msg() -> Vec<NotifyEvent> {
        vec![NotifyEvent::MessageNew(vec![]), NotifyEvent::MessageExpunge]
    }

    #[test]
    fn the_first_matching_group_decides_and_none_silences() {
        let n = Notify {
            groups: vec![
                group(NotifyFilter::Mailboxes(vec!["Spam".into()]), None),
                group(NotifyFilter::Subtree(vec!["Work".into()]), Some(msg())),
                group(NotifyFilter::Personal, Some(vec![NotifyEvent::MailboxName])),
            ],
            ..Default::default()
        };
        let subs = BTreeSet::new();
        let at = |name| Place {
            name,
            personal: true,
        };
        assert!(
            n.group_for(&at("Spam"), Kind::Message, false, &subs)
                .is_none()
        );
        assert!(n.group_for(&at("Spam"), Kind::Name, false, &subs).is_none());
        assert!(
            n.group_for(&at("Work"), Kind::Message, false, &subs)
                .is_some()
        );
        assert!(
            n.group_for(&at("Work/a"), Kind::Message, false, &subs)
                .is_some()
        );
        assert!(
            n.group_for(&at("Workshop"), Kind::Message, false, &subs)
                .is_none()
        );
        assert!(
            n.group_for(&at("Workshop"), Kind::Name, false, &subs)
                .is_some()
        );
        // The selected mailbox's message events are SELECTED's only.
        assert!(
            n.group_for(&at("Work"), Kind::Message, true, &subs)
                .is_none()
        );
        assert!(
            n.group_for(&at("Work/a"), Kind::Name, true, &subs)
                .is_some()
        );
    }

    #[test]
    fn groups_are_checked_as_rfc_5465_says() {
        let bad = |g: Vec<NotifyGroup>| matches!(check(&g), Err(Fail::Bad(_)));
        assert!(check(&[group(NotifyFilter::Selected, Some(msg()))]).is_ok());
        assert!(
            check(&[group(
                NotifyFilter::Personal,
                Some(vec![NotifyEvent::FlagChange])
            )])
            .is_ok()
        );
        assert!(bad(vec![
            group(NotifyFilter::Selected, Some(msg())),
            group(NotifyFilter::SelectedDelayed, Some(msg()))
        ]));
        assert!(bad(vec![group(
            NotifyFilter::Selected,
            Some(vec![NotifyEvent::MailboxName])
        )]));
        assert!(bad(vec![group(
            NotifyFilter::Inboxes,
            Some(vec![
                NotifyEvent::MessageNew(vec![FetchAtt::Uid]),
                NotifyEvent::MessageExpunge
            ])
        )]));
        let r = check(&[group(
            NotifyFilter::Personal,
            Some(vec![NotifyEvent::Other("AnnotationChange".into())]),
        )]);
        assert!(matches!(r, Err(Fail::No(m)) if m.starts_with("[BADEVENT (MessageNew ")));
    }
}
