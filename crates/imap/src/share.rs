//! Sharing (RFC 4314 ACL, RFC 2342 NAMESPACE): folders others share with this user appear as
//! `PREFIX/owner@domain/folder`, each command limited by the rights the owner gave; in them
//! \Seen is the user's own (the store keeps it per reader).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use postern_store::{AclEntry, Mailbox, MessageEntry, Rights, Uid};

use crate::core::{Fail, ImapCore, Res, Selected, State, no, ok, push};
use crate::format;

/// A mailbox as this session sees it: its name as the client writes it, and what it may do.
#[derive(Debug, Clone)]
pub struct Visible {
    /// `name` is the client's (under the shared prefix for another's folder).
    pub mailbox: Mailbox,
    /// All for the user's own folders.
    pub rights: Rights,
    /// The name in the owner's account.
    pub own_name: String,
}

/// What each command needs (RFC 4314 4), for the NO that names it.
fn right_name(r: Rights) -> &'static str {
    match r {
        r if r == Rights::LOOKUP => "see it (l)",
        r if r == Rights::READ => "read it (r)",
        r if r == Rights::SEEN => "mark messages read (s)",
        r if r == Rights::WRITE => "change flags (w)",
        r if r == Rights::INSERT => "add messages (i)",
        r if r == Rights::CREATE => "make folders in it (k)",
        r if r == Rights::DELETE_MAILBOX => "delete or rename it (x)",
        r if r == Rights::DELETE_MESSAGES => "delete messages (t)",
        r if r == Rights::EXPUNGE => "expunge (e)",
        r if r == Rights::ADMINISTER => "share it (a)",
        _ => "do that",
    }
}

pub(crate) fn noperm<T>(name: &str, need: Rights) -> Result<T, Fail> {
    no(format!(
        "[NOPERM] You may not {} in {name}: ask its owner for that right",
        right_name(need)
    ))
}

impl Selected {
    /// The flags as this session's user sees them: in another's folder, their own \Seen.
    pub fn view(&self, e: &mut MessageEntry) {
        if let Some(seen) = &self.private_seen {
            let bit = postern_store::Flags::SEEN;
            if seen.binary_search(&e.uid).is_ok() {
                e.flags.bits |= bit;
            } else {
                e.flags.bits &= !bit;
            }
        }
    }

    pub fn view_all(&self, entries: &mut [MessageEntry]) {
        if self.private_seen.is_some() {
            for e in entries {
                self.view(e);
            }
        }
    }

    /// Notes what a STORE by this session left of \Seen.
    pub fn saw(&mut self, uid: Uid, seen: bool) {
        if let Some(set) = &mut self.private_seen {
            match (set.binary_search(&uid), seen) {
                (Err(i), true) => set.insert(i, uid),
                (Ok(i), false) => {
                    set.remove(i);
                }
                _ => {}
            }
        }
    }
}

impl ImapCore {
    fn prefix(&self) -> &str {
        &self.cfg.config.imap.shared_prefix
    }

    /// `PREFIX/owner/folder` as (owner, folder); `None` for the user's own names.
    fn split_shared<'n>(&self, name: &'n str) -> Option<(&'n str, Option<&'n str>)> {
        let rest = name.strip_prefix(self.prefix())?.strip_prefix('/')?;
        Some(match rest.split_once('/') {
            Some((owner, folder)) => (owner, Some(folder)),
            None => (rest, None),
        })
    }

    /// Whether the name lies in the shared namespace (or is its root): not a name for the
    /// user's own folders.
    pub(crate) fn in_shared_namespace(&self, name: &str) -> bool {
        name == self.prefix() || self.split_shared(name).is_some()
    }

    fn shown_name(&self, owner: &str, folder: &str) -> String {
        format!("{}/{owner}/{folder}", self.prefix())
    }

    /// The access-list identifiers that cover this user, looked up once a session.
    pub(crate) async fn identifiers(&mut self) -> Result<Vec<String>, Fail> {
        if let Some(ids) = &self.identifiers {
            return Ok(ids.clone());
        }
        let Some(acc) = self.account.clone() else {
            return Ok(Vec::new());
        };
        let ids = postern_store::identifiers_of(self.store().as_ref(), &acc).await?;
        self.identifiers = Some(ids.clone());
        Ok(ids)
    }

    fn rights_from(&self, acl: &[AclEntry]) -> Rights {
        postern_store::rights_in(acl, self.identifiers.as_deref().unwrap_or_default())
    }

    /// The mailbox a name gives, with this user's rights; `None` when there is none or the
    /// user has no right at all on it (it is not theirs to know of).
    pub(crate) async fn visible(&self, name: &str) -> Result<Option<Visible>, Fail> {
        let Some((owner, folder)) = self.split_shared(name) else {
            return Ok(self
                .store()
                .mailbox_by_name(self.account_id(), name)
                .await?
                .map(|mb| Visible {
                    own_name: mb.name.clone(),
                    mailbox: mb,
                    rights: Rights::ALL,
                }));
        };
        let Some(folder) = folder else {
            return Ok(None);
        };
        let folder = postern_store::embedded::normalize_mailbox_name(folder);
        let Some(owner) = self.store().account_by_address(owner).await? else {
            return Ok(None);
        };
        if owner.id == self.account_id() {
            return Ok(None);
        }
        let Some(mut mb) = self.store().mailbox_by_name(owner.id, &folder).await? else {
            return Ok(None);
        };
        let rights = self.rights_from(&self.store().acl_get(mb.id).await?);
        if rights.is_empty() {
            return Ok(None);
        }
        let own_name = std::mem::replace(&mut mb.name, self.shown_name(&owner.address, &folder));
        Ok(Some(Visible {
            mailbox: mb,
            rights,
            own_name,
        }))
    }

    /// The named mailbox if the user may do `need` there: NONEXISTENT when they cannot know
    /// of it, NOPERM when they may not.
    pub(crate) async fn open(&self, name: &str, need: Rights) -> Result<Visible, Fail> {
        match self.visible(name).await? {
            Some(v) if v.rights.contains(need) => Ok(v),
            Some(v) => noperm(&v.mailbox.name, need),
            None => no(format!("[NONEXISTENT] Mailbox {name:?} does not exist")),
        }
    }

    /// The folders others share with this user (those it may look up), named as it sees them.
    pub(crate) async fn shared_mailboxes(&mut self) -> Result<Vec<Mailbox>, Fail> {
        Ok(self
            .shared_with_rights()
            .await?
            .into_iter()
            .map(|(mb, _)| mb)
            .collect())
    }

    /// [`ImapCore::shared_mailboxes`], each with the user's rights on it.
    pub(crate) async fn shared_with_rights(&mut self) -> Result<Vec<(Mailbox, Rights)>, Fail> {
        let ids = self.identifiers().await?;
        let me = self.account_id();
        let mut rights: BTreeMap<u64, (Mailbox, Rights)> = BTreeMap::new();
        for (mb, line) in self.store().acl_granted(&ids).await? {
            if mb.account == me {
                continue;
            }
            let r = Rights::parse(&line.rights).unwrap_or_default();
            rights
                .entry(mb.id)
                .and_modify(|e| e.1 = e.1 | r)
                .or_insert((mb, r));
        }
        let mut owners: HashMap<u64, Option<String>> = HashMap::new();
        let mut out = Vec::new();
        for (_, (mut mb, r)) in rights {
            if !r.contains(Rights::LOOKUP) {
                continue;
            }
            if let Entry::Vacant(v) = owners.entry(mb.account) {
                let a = self.store().account_get(mb.account).await?;
                v.insert(a.map(|a| a.address));
            }
            if let Some(Some(owner)) = owners.get(&mb.account) {
                mb.name = self.shown_name(owner, &mb.name);
                out.push((mb, r));
            }
        }
        Ok(out)
    }

    /// Who changes flags, for the store: set in another's folder, where \Seen is this user's.
    pub(crate) fn reader(&self) -> Option<u64> {
        self.selected
            .as_ref()
            .filter(|s| s.private_seen.is_some())
            .map(|_| self.account_id())
    }

    /// The \Seen of a reader in another's folder, for [`Selected::private_seen`].
    pub(crate) async fn private_seen(&self, mb: &Mailbox) -> Result<Option<Vec<Uid>>, Fail> {
        if mb.account == self.account_id() {
            return Ok(None);
        }
        Ok(Some(
            self.store().seen_private(mb.id, self.account_id()).await?,
        ))
    }

    /// Called before each response to a selected mailbox of another's: the rights may have
    /// changed (on any node). `Err` ends the session when the user may read it no longer
    /// (RFC 4314 4: the server may close the mailbox).
    pub(crate) async fn recheck_rights(&mut self) -> Result<(), Fail> {
        let Some(sel) = &self.selected else {
            return Ok(());
        };
        if sel.mailbox.account == self.account_id() {
            return Ok(());
        }
        let (id, name) = (sel.mailbox.id, sel.mailbox.name.clone());
        let acl = self.store().acl_get(id).await?;
        let rights = self.rights_from(&acl);
        if !rights.contains(Rights::READ) {
            self.selected = None;
            self.state = State::Authenticated;
            return Err(Fail::Bye(format!(
                "[NOPERM] Your access to {name} was withdrawn by its owner; reconnect to go on with your other folders"
            )));
        }
        if let Some(sel) = &mut self.selected {
            sel.rights = rights;
        }
        Ok(())
    }

    /// SETACL and DELETEACL (`rights` None). RFC 4314 3.1, 3.2.
    pub(crate) async fn set_acl(
        &mut self,
        name: &str,
        identifier: &str,
        rights: Option<&str>,
    ) -> Res {
        self.identifiers().await?;
        let v = self.open(name, Rights::ADMINISTER).await?;
        let (op, letters) = match rights.map(|r| r.split_at(r.starts_with(['+', '-']) as usize)) {
            Some((op, letters)) => (op, Some(letters)),
            None => ("", None),
        };
        let asked = match letters.map(Rights::parse) {
            Some(Ok(r)) => Some(r),
            // RFC 4314 3.1: an unknown right is a BAD.
            Some(Err(c)) => return Err(Fail::Bad(format!("{c:?} is no right of RFC 4314"))),
            None => None,
        };
        let owner = self.store().account_get(v.mailbox.account).await?;
        if owner.is_some_and(|o| o.address.eq_ignore_ascii_case(identifier.trim())) {
            return no("[CANNOT] The owner always has every right on their folders");
        }
        let id = match postern_store::check_identifier(self.store().as_ref(), identifier).await {
            Ok(id) => id,
            // Taking away what was never there is fine.
            Err(_) if asked.is_none() || op == "-" => identifier.trim().to_ascii_lowercase(),
            Err(why) => return no(format!("[CANNOT] {why}")),
        };
        let acl = self.store().acl_get(v.mailbox.id).await?;
        let had = acl
            .iter()
            .find(|e| e.identifier == id)
            .map(|e| Rights::parse(&e.rights).unwrap_or_default())
            .unwrap_or_default();
        let new = match (op, asked) {
            (_, None) => None,
            ("+", Some(r)) => Some(had | r),
            ("-", Some(r)) => Some(had.without(r)),
            (_, Some(r)) => Some(r),
        };
        self.store()
            .acl_set(v.mailbox.id, &id, new.filter(|r| !r.is_empty()))
            .await?;
        ok(if rights.is_some() {
            "SETACL completed"
        } else {
            "DELETEACL completed"
        })
    }

    /// GETACL (RFC 4314 3.3): the owner first, with every right, then the lines kept.
    pub(crate) async fn get_acl(&mut self, out: &mut Vec<u8>, name: &str) -> Res {
        self.identifiers().await?;
        let v = self.open(name, Rights::ADMINISTER).await?;
        push(out, "* ACL ");
        format::mailbox(out, &v.mailbox.name, self.utf8);
        if let Some(owner) = self.store().account_get(v.mailbox.account).await? {
            push(out, " ");
            format::string(out, owner.address.as_bytes());
            push(out, &format!(" {}", Rights::ALL.imap()));
        }
        for e in self.store().acl_get(v.mailbox.id).await? {
            push(out, " ");
            format::string(out, e.identifier.as_bytes());
            let r = Rights::parse(&e.rights).unwrap_or_default().imap();
            push(out, " ");
            format::string(out, r.as_bytes());
        }
        push(out, "\r\n");
        ok("GETACL completed")
    }

    /// LISTRIGHTS (RFC 4314 3.4): the owner has every right always; others may get any.
    pub(crate) async fn list_rights(
        &mut self,
        out: &mut Vec<u8>,
        name: &str,
        identifier: &str,
    ) -> Res {
        self.identifiers().await?;
        let v = self.open(name, Rights::ADMINISTER).await?;
        let owner = self.store().account_get(v.mailbox.account).await?;
        push(out, "* LISTRIGHTS ");
        format::mailbox(out, &v.mailbox.name, self.utf8);
        push(out, " ");
        format::string(out, identifier.as_bytes());
        if owner.is_some_and(|o| o.address.eq_ignore_ascii_case(identifier)) {
            push(out, &format!(" {}", Rights::ALL));
        } else {
            push(out, " \"\"");
            for c in Rights::LETTERS.chars() {
                push(out, &format!(" {c}"));
            }
        }
        push(out, "\r\n");
        ok("LISTRIGHTS completed")
    }

    /// MYRIGHTS (RFC 4314 3.5).
    pub(crate) async fn my_rights(&mut self, out: &mut Vec<u8>, name: &str) -> Res {
        self.identifiers().await?;
        let v = self.open(name, Rights::NONE).await?;
        push(out, "* MYRIGHTS ");
        format::mailbox(out, &v.mailbox.name, self.utf8);
        push(out, " ");
        format::string(out, v.rights.imap().as_bytes());
        push(out, "\r\n");
        ok("MYRIGHTS completed")
    }

    /// NAMESPACE (RFC 2342): personal folders at the root, others' under the prefix.
    pub(crate) fn namespace(&self, out: &mut Vec<u8>) {
        push(out, "* NAMESPACE ((\"\" \"/\")) ((");
        format::string(out, format!("{}/", self.prefix()).as_bytes());
        push(out, " \"/\")) NIL\r\n");
    }

    /// The levels of the shared namespace: its root and each owner, listed as `\Noselect`.
    pub(crate) fn shared_levels(&self, shared: &[Mailbox]) -> Vec<String> {
        let mut levels: Vec<String> = Vec::new();
        for mb in shared {
            if let Some((owner, _)) = self.split_shared(&mb.name) {
                let level = format!("{}/{owner}", self.prefix());
                if !levels.contains(&level) {
                    levels.push(level);
                }
            }
        }
        if !levels.is_empty() {
            levels.push(self.prefix().to_string());
        }
        levels
    }

    /// A folder made in another's account starts with its parent's access list (so the
    /// people who share the parent share it), as Dovecot does.
    pub(crate) async fn inherit_acl(&self, parent: u64, child: u64) -> Result<(), Fail> {
        for e in self.store().acl_get(parent).await? {
            let r = Rights::parse(&e.rights).unwrap_or_default();
            self.store().acl_set(child, &e.identifier, Some(r)).await?;
        }
        Ok(())
    }
}
