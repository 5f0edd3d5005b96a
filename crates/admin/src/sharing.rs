//! Shared mailboxes (an account no one logs in as, whose folders its members use through
//! access lists), send-as grants, and what an account may use besides its own.

use std::collections::BTreeMap;

use postern_directory::{Directory, domain_of, normalize_address, validate_new_address};
use postern_store::{
    Account, AccountId, Mailbox, NewAccount, Rights, SendAs, SendAsGrant, StoreError,
    check_identifier, identifiers_of, rights_in,
};

use crate::{
    AdminError, AdminReply, MemberInfo, SharedMailboxInfo, SharedWith, done, require_local_domain,
};

/// What a member gets unless told otherwise: everything but administering (changing who
/// else may use it).
pub const DEFAULT_RIGHTS: &str = "lrswipkxte";

/// RFC 4314 letters, checked; `None` is [`DEFAULT_RIGHTS`].
pub fn parse_rights(rights: Option<&str>) -> Result<Rights, AdminError> {
    let letters = rights.map(str::trim).unwrap_or(DEFAULT_RIGHTS);
    match Rights::parse(letters) {
        Ok(r) if r.is_empty() => Err(AdminError::new(
            "give at least one right, e.g. lr (see and read) or lrswipkxte (all but a); to take every right away: postern mailbox revoke",
        )),
        Ok(r) => Ok(r),
        Err(c) => Err(AdminError::new(format!(
            "{c:?} is not a right; the rights (RFC 4314) are l (see the folder), r (read), s (keep \\Seen), w (other flags), i (add messages), p (post), k (create folders), x (delete the folder), t (mark deleted), e (expunge), a (administer)"
        ))),
    }
}

/// A member as access lists name it, checked: an account of ours that is not shared,
/// `$group@domain`, `$domain`, `anyone` or `authenticated`.
async fn member_id(d: &Directory, member: &str) -> Result<String, AdminError> {
    check_identifier(&**d.store(), member)
        .await
        .map_err(AdminError::new)
}

/// The shared mailbox at `address`, or what to do when there is none.
async fn require_shared(d: &Directory, address: &str) -> Result<Account, AdminError> {
    let address = normalize_address(address)?;
    match d.store().account_by_address(&address).await? {
        Some(a) if a.shared => Ok(a),
        Some(_) => Err(AdminError::refused(format!(
            "{address} is a personal account, not a shared mailbox: its owner shares folders from the web page (Sharing) or the mail program"
        ))),
        None => Err(AdminError::missing(format!(
            "there is no shared mailbox {address}; make one with: postern mailbox add {address} --members ADDRESS..."
        ))),
    }
}

/// The account's folders, INBOX first.
async fn folders(d: &Directory, account: AccountId) -> Result<Vec<Mailbox>, StoreError> {
    let mut f = d.store().mailbox_list(account).await?;
    f.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
    Ok(f)
}

/// Gives each identifier `rights` on every folder of the account; the number of folders.
async fn grant_all(
    d: &Directory,
    account: AccountId,
    ids: &[String],
    rights: Rights,
) -> Result<usize, StoreError> {
    let folders = folders(d, account).await?;
    for f in &folders {
        for id in ids {
            d.store().acl_set(f.id, id, Some(rights)).await?;
        }
    }
    Ok(folders.len())
}

pub(crate) async fn mailbox_add(
    d: &Directory,
    address: String,
    members: Vec<String>,
    rights: Option<String>,
    quota: Option<u64>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let address = validate_new_address(&address)?;
    require_local_domain(d, &address).await?;
    match store.account_by_address(&address).await? {
        Some(a) if a.shared => {
            return Err(AdminError::new(format!(
                "shared mailbox {address} already exists; add members with: postern mailbox grant {address} MEMBER"
            )));
        }
        Some(_) => {
            return Err(AdminError::new(format!(
                "{address} is a personal account; a shared mailbox needs an address of its own"
            )));
        }
        None => {}
    }
    if store.alias_get(&address).await?.is_some() {
        return Err(AdminError::new(format!(
            "{address} is an alias; delete it first with: postern alias del {address}"
        )));
    }
    if members.is_empty() {
        return Err(AdminError::new(format!(
            "a shared mailbox needs its members: postern mailbox add {address} --members alice@{} ...",
            domain_of(&address)
        )));
    }
    let rights = parse_rights(rights.as_deref())?;
    let mut ids: Vec<String> = Vec::new();
    for m in &members {
        let id = member_id(d, m).await?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let acc = match store
        .account_create(NewAccount {
            address: address.clone(),
            password_hash: String::new(),
            quota_bytes: quota.unwrap_or(0),
            quota_messages: 0,
            shared: true,
        })
        .await
    {
        Ok(a) => a,
        Err(StoreError::AlreadyExists(_)) => {
            return Err(AdminError::new(format!("{address} already exists")));
        }
        Err(e) => return Err(e.into()),
    };
    let n = match grant_all(d, acc.id, &ids, rights).await {
        Ok(n) => n,
        Err(e) => {
            // Half a shared mailbox (no one could use it) is worse than none.
            let _ = store.account_delete(acc.id).await;
            return Err(AdminError {
                message: format!("shared mailbox {address} not made: {e}"),
                ..AdminError::from(e)
            });
        }
    };
    done(format!(
        "shared mailbox {address} added: {} may use its {n} folders (rights {rights}); it appears in their mail program under Shared/{address}",
        ids.join(", ")
    ))
}

pub(crate) async fn mailbox_grant(
    d: &Directory,
    address: String,
    member: String,
    rights: Option<String>,
) -> Result<AdminReply, AdminError> {
    let acc = require_shared(d, &address).await?;
    let rights = parse_rights(rights.as_deref())?;
    let id = member_id(d, &member).await?;
    let n = grant_all(d, acc.id, std::slice::from_ref(&id), rights).await?;
    done(format!(
        "{id} may now use the {n} folders of {} (rights {rights}); they appear under Shared/{}",
        acc.address, acc.address
    ))
}

pub(crate) async fn mailbox_revoke(
    d: &Directory,
    address: String,
    member: String,
) -> Result<AdminReply, AdminError> {
    let acc = require_shared(d, &address).await?;
    let id = member.trim().to_ascii_lowercase();
    let store = d.store();
    let mut had = false;
    for f in folders(d, acc.id).await? {
        if store
            .acl_get(f.id)
            .await?
            .iter()
            .any(|e| e.identifier == id)
        {
            store.acl_set(f.id, &id, None).await?;
            had = true;
        }
    }
    if !had {
        return Err(AdminError::missing(format!(
            "{id} has no rights on {}; see who has: postern mailbox list",
            acc.address
        )));
    }
    done(format!("{id} no longer has access to {}", acc.address))
}

/// Who may use an account's folders, per identifier: the rights on INBOX (or the first
/// folder it has a line on), which folders have them, and the others.
async fn members(d: &Directory, account: AccountId) -> Result<Vec<MemberInfo>, StoreError> {
    let folders = folders(d, account).await?;
    // identifier → (folder, rights), in the folders' order.
    let mut lines: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for f in &folders {
        for e in d.store().acl_get(f.id).await? {
            let entry = match lines.iter_mut().find(|(i, _)| *i == e.identifier) {
                Some(x) => x,
                None => {
                    lines.push((e.identifier.clone(), Vec::new()));
                    lines.last_mut().expect("just pushed")
                }
            };
            entry.1.push((f.name.clone(), e.rights));
        }
    }
    Ok(lines
        .into_iter()
        .map(|(identifier, on)| {
            let rights = on[0].1.clone();
            let same: Vec<String> = on
                .iter()
                .filter(|(_, r)| *r == rights)
                .map(|(f, _)| f.clone())
                .collect();
            let elsewhere = on
                .iter()
                .filter(|(_, r)| *r != rights)
                .map(|(f, r)| format!("{f}: {r}"))
                .collect();
            MemberInfo {
                identifier,
                rights,
                folders: if same.len() == folders.len() {
                    Vec::new()
                } else {
                    same
                },
                elsewhere,
            }
        })
        .collect())
}

pub(crate) async fn mailbox_list(d: &Directory) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let mut mailboxes = Vec::new();
    for a in store.account_list().await?.into_iter().filter(|a| a.shared) {
        let u = store.account_usage(a.id).await?;
        mailboxes.push(SharedMailboxInfo {
            members: members(d, a.id).await?,
            address: a.address,
            quota_bytes: a.quota_bytes,
            used_bytes: u.bytes,
            messages: u.messages,
        });
    }
    mailboxes.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(AdminReply::SharedMailboxes { mailboxes })
}

pub(crate) async fn mailbox_del(d: &Directory, address: String) -> Result<AdminReply, AdminError> {
    let acc = require_shared(d, &address).await?;
    d.store().account_delete(acc.id).await?;
    let mut m = format!("shared mailbox {} deleted with all its mail", acc.address);
    if let Err(e) = forget(d, &acc.address).await {
        m.push_str(&format!(
            " (the send-as grants for it could not be removed: {e}; see postern send-as list)"
        ));
    }
    done(m)
}

/// After an account is deleted: the access-list lines that name it on other accounts'
/// folders and the send-as grants for or to it go too, so that a new account of the same
/// address inherits nothing.
pub(crate) async fn forget(d: &Directory, address: &str) -> Result<(), StoreError> {
    let store = d.store();
    for (mailbox, line) in store.acl_granted(&[address.to_string()]).await? {
        store.acl_set(mailbox.id, &line.identifier, None).await?;
    }
    for g in store.send_as_list().await? {
        if g.address == address || g.delegate == address {
            store.send_as_set(&g.address, &g.delegate, None).await?;
        }
    }
    Ok(())
}

pub(crate) async fn send_as_add(
    d: &Directory,
    address: String,
    delegate: String,
    on_behalf: bool,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let address = normalize_address(&address)?;
    let delegate = normalize_address(&delegate)?;
    if !d.is_local_domain(domain_of(&address)).await? {
        return Err(AdminError::new(format!(
            "{address} is not an address of this server: send-as grants are for our own accounts, shared mailboxes and aliases"
        )));
    }
    if store.account_by_address(&address).await?.is_none()
        && store.alias_get(&address).await?.is_none()
    {
        return Err(AdminError::missing(format!(
            "{address} is neither an account, a shared mailbox nor an alias here"
        )));
    }
    let who = match store.account_by_address(&delegate).await? {
        Some(a) if a.shared => {
            return Err(AdminError::new(format!(
                "{delegate} is a shared mailbox: no one logs in as it, so it sends nothing; name the person who sends"
            )));
        }
        Some(a) => a,
        None => {
            return Err(AdminError::missing(format!(
                "{delegate} is no account of this server; add it first with: postern user add {delegate}"
            )));
        }
    };
    if d.owns_address(&who, &address).await? {
        return Err(AdminError::new(format!(
            "{delegate} may send as {address} already: it is their own address or an alias that leads to them"
        )));
    }
    let mode = if on_behalf {
        SendAs::OnBehalf
    } else {
        SendAs::As
    };
    store.send_as_set(&address, &delegate, Some(mode)).await?;
    done(grant_words(&SendAsGrant {
        address,
        delegate,
        mode,
    }))
}

/// "alice@ may send as info@" / "... on behalf of manager@ (with Sender: assistant@)".
pub fn grant_words(g: &SendAsGrant) -> String {
    match g.mode {
        SendAs::As => format!(
            "{} may send as {} (From: {})",
            g.delegate, g.address, g.address
        ),
        SendAs::OnBehalf => format!(
            "{} may send on behalf of {} (From: {} with Sender: {})",
            g.delegate, g.address, g.address, g.delegate
        ),
    }
}

pub(crate) async fn send_as_del(
    d: &Directory,
    address: String,
    delegate: String,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let address = normalize_address(&address)?;
    let delegate = normalize_address(&delegate)?;
    if !store
        .send_as_of(&delegate)
        .await?
        .iter()
        .any(|g| g.address == address)
    {
        return Err(AdminError::missing(format!(
            "there is no send-as grant for {delegate} on {address}; see: postern send-as list"
        )));
    }
    store.send_as_set(&address, &delegate, None).await?;
    done(format!("{delegate} may no longer send as {address}"))
}

pub(crate) async fn send_as_list(d: &Directory) -> Result<AdminReply, AdminError> {
    Ok(AdminReply::SendAs {
        grants: d.store().send_as_list().await?,
    })
}

/// The folders of other accounts shared with `account`, by owner (INBOX first), with the
/// rights it has on each.
pub async fn shared_with(d: &Directory, account: &Account) -> Result<Vec<SharedWith>, StoreError> {
    let store = d.store();
    let ids = identifiers_of(&**store, account).await?;
    let mut by_mailbox: BTreeMap<u64, (Mailbox, Vec<postern_store::AclEntry>)> = BTreeMap::new();
    for (m, line) in store.acl_granted(&ids).await? {
        if m.account == account.id {
            continue;
        }
        by_mailbox
            .entry(m.id)
            .or_insert_with(|| (m.clone(), Vec::new()))
            .1
            .push(line);
    }
    let mut owners: BTreeMap<AccountId, Vec<(String, String)>> = BTreeMap::new();
    for (m, lines) in by_mailbox.into_values() {
        let r = rights_in(&lines, &ids);
        if !r.is_empty() {
            owners
                .entry(m.account)
                .or_default()
                .push((m.name, r.to_string()));
        }
    }
    let mut out = Vec::new();
    for (owner, mut folders) in owners {
        let Some(o) = store.account_get(owner).await? else {
            continue;
        };
        folders.sort_by(|a, b| (a.0 != "INBOX", &a.0).cmp(&(b.0 != "INBOX", &b.0)));
        out.push(SharedWith {
            owner: o.address,
            shared: o.shared,
            folders,
        });
    }
    out.sort_by(|a, b| a.owner.cmp(&b.owner));
    Ok(out)
}

pub(crate) async fn access(d: &Directory, address: String) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let acc = crate::require_user(d, &address).await?;
    Ok(AdminReply::Access {
        shared_with: shared_with(d, &acc).await?,
        send_as: d.store().send_as_of(&acc.address).await?,
        address: acc.address,
    })
}

/// Lines for `postern route`: who uses a shared mailbox, and who may send as the address.
pub(crate) async fn route_notes(d: &Directory, address: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(address) = normalize_address(address) else {
        return out;
    };
    let store = d.store();
    if let Ok(Some(a)) = store.account_by_address(&address).await
        && a.shared
    {
        match members(d, a.id).await {
            Ok(m) if m.is_empty() => out.push(format!(
                "{address} has no members: no one reads it; add one with: postern mailbox grant {address} MEMBER"
            )),
            Ok(m) => {
                out.push(format!(
                    "its members read it under Shared/{address} in their mail program:"
                ));
                for i in m {
                    out.push(format!("  {}", member_words(&i)));
                }
            }
            Err(e) => out.push(format!("its members could not be read: {e}")),
        }
    }
    match store.send_as_list().await {
        Ok(grants) => {
            for g in grants.iter().filter(|g| g.address == address) {
                out.push(grant_words(g));
            }
        }
        Err(e) => out.push(format!("the send-as grants could not be read: {e}")),
    }
    out
}

/// The folders someone may use of another account, with their rights: "rights lr" when the
/// same on each, else "INBOX (lr), Sent (l)".
pub fn folders_words(w: &SharedWith) -> String {
    match w.folders.first() {
        Some((_, r)) if w.folders.iter().all(|(_, x)| x == r) => {
            let n = w.folders.len();
            let which = if n == 1 {
                w.folders[0].0.clone()
            } else {
                format!("{n} folders")
            };
            format!("{which}, rights {r}")
        }
        _ => w
            .folders
            .iter()
            .map(|(f, r)| format!("{f} ({r})"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// "alice@example.com: lrswipkxte" with the folders when not all, and the other rights.
pub fn member_words(m: &MemberInfo) -> String {
    let mut s = format!("{}: {}", m.identifier, m.rights);
    if !m.folders.is_empty() {
        s.push_str(&format!(" on {}", m.folders.join(", ")));
    }
    if !m.elsewhere.is_empty() {
        s.push_str(&format!("; {}", m.elsewhere.join("; ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_default_checked_and_explained() {
        assert_eq!(parse_rights(None).unwrap().to_string(), "lrswipkxte");
        assert_eq!(parse_rights(Some(" rl ")).unwrap().to_string(), "lr");
        let e = parse_rights(Some("lrz")).unwrap_err().message;
        assert!(e.starts_with("'z' is not a right"), "{e}");
        assert!(
            parse_rights(Some(""))
                .unwrap_err()
                .message
                .contains("at least one right")
        );
    }

    #[test]
    fn members_and_grants_in_words() {
        let m = MemberInfo {
            identifier: "bob@example.test".into(),
            rights: "lr".into(),
            folders: vec!["INBOX".into(), "Sent".into()],
            elsewhere: vec!["Archive: lrs".into()],
        };
        assert_eq!(
            member_words(&m),
            "bob@example.test: lr on INBOX, Sent; Archive: lrs"
        );
        let g = SendAsGrant {
            address: "boss@example.test".into(),
            delegate: "pa@example.test".into(),
            mode: SendAs::OnBehalf,
        };
        let mut w = SharedWith {
            owner: "info@example.test".into(),
            shared: true,
            folders: vec![("INBOX".into(), "lr".into()), ("Sent".into(), "lr".into())],
        };
        assert_eq!(folders_words(&w), "2 folders, rights lr");
        w.folders[1].1 = "l".into();
        assert_eq!(folders_words(&w), "INBOX (lr), Sent (l)");
        assert_eq!(
            grant_words(&g),
            "pa@example.test may send on behalf of boss@example.test (From: boss@example.test with Sender: pa@example.test)"
        );
    }
}
