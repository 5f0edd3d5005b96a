//! Routing at delivery: which folder each local recipient's copy goes to (subaddress
//! folders, Junk) and each recipient account's Sieve filter, run on the message ingest parsed.
//! The outcome is a plan of where the message is stored and what is sent (redirects, vacation
//! replies, rejection notices). Nothing is written here: the plan is committed with the
//! message itself, all at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mail_parser::Message;
use postern_directory::{Destination, Directory, domain_of};
use postern_sieve::{Action, Engine, Envelope, Host};
use postern_store::{Account, AccountId, Flags, SharedStore};
use tracing::warn;

use crate::Recipient;

/// Where one account's copy goes, as its filter decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// (message, folder, flags, create): message 0 is the one that arrived, n is
    /// `Plans::messages` of this plan's index n-1.
    pub stores: Vec<(usize, String, Flags, bool)>,
    pub reject: Option<String>,
    /// Told to the sender when the message was rejected for some recipients only.
    pub reject_notice: Option<(Vec<u8>, Vec<Destination>)>,
    pub sends: Vec<Send>,
    /// Messages the script made (edited copies, vacation replies), without Return-Path.
    pub messages: Vec<Vec<u8>>,
    /// What the filter did, in words, for the trace.
    pub notes: Vec<String>,
}

#[derive(Debug)]
pub struct Send {
    /// 0: the message that arrived; n: `Plan::messages[n-1]`.
    pub message: usize,
    /// The envelope sender: empty for vacation replies and notices, SRS for redirects.
    pub sender: String,
    /// A vacation reply (ours), not a redirect (someone else's message).
    pub auto_reply: bool,
    pub dests: Vec<Destination>,
}

#[derive(Default)]
pub struct Plans {
    pub by_account: HashMap<AccountId, Plan>,
}

struct StoreHost {
    store: SharedStore,
    account: AccountId,
    handle: tokio::runtime::Handle,
    mailboxes: HashSet<String>,
    special_uses: HashSet<String>,
}

/// Seen-keys are kept short: long ones (vacation's include its reason) are hashed.
fn seen_key(id: &str) -> String {
    if id.len() <= 200 {
        return id.to_string();
    }
    // FNV-1a, 64 bits twice with different offsets: stable across builds and versions.
    let h = |seed: u64| {
        id.bytes()
            .fold(seed, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    };
    format!(
        "{}#{:016x}{:016x}",
        &id[..id.floor_char_boundary(120)],
        h(0xcbf29ce484222325),
        h(0x84222325cbf29ce4)
    )
}

impl Host for StoreHost {
    fn mailbox_exists(&self, name: &str) -> bool {
        self.mailboxes.contains(&name.to_lowercase())
    }
    fn special_use_exists(&self, special_use: &str) -> bool {
        self.special_uses
            .contains(&special_use.to_ascii_lowercase())
    }
    fn seen_before(&self, id: &str, expiry: u64) -> bool {
        let now = postern_store::now();
        let until = now.saturating_add(expiry.min(10 * 365 * 86400) as i64);
        let key = seen_key(id);
        // On a storage error, say "seen": better one vacation reply too few than a flood.
        self.handle
            .block_on(self.store.seen_mark(self.account, &key, now, until))
            .unwrap_or(true)
    }
    fn script(&self, name: &str, global: bool) -> Option<String> {
        if global {
            return None;
        }
        self.handle
            .block_on(self.store.sieve_get(self.account, name))
            .ok()
            .flatten()
    }
}

fn flags(names: &[String]) -> Flags {
    let mut f = Flags::default();
    for n in names {
        if let Some((bit, _)) = Flags::SYSTEM
            .iter()
            .find(|(_, s)| s.eq_ignore_ascii_case(n))
        {
            f.bits |= bit;
        } else if !n.is_empty()
            && !n.starts_with('\\')
            && n.len() <= 100
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"]".contains(&b))
            && !f.has_keyword(n)
        {
            f.keywords.push(n.clone());
        }
    }
    f
}

/// Runs the active filter of every local recipient account that has one, each on its own
/// copy of the parsed message (`message` makes one).
#[allow(clippy::too_many_arguments)]
pub async fn plan<'m>(
    engine: &Arc<Engine>,
    directory: &Directory,
    store: &SharedStore,
    max_size: u64,
    from: &str,
    rcpts: &[Recipient],
    message: &(dyn Fn() -> Message<'m> + Sync),
    size: u64,
    folders: &HashMap<AccountId, String>,
    junk: bool,
) -> Plans {
    let mut out = Plans::default();
    // Each account once, with the address the message came to it by.
    let mut accounts: Vec<(Account, String)> = Vec::new();
    for a in rcpts {
        for d in &a.dests {
            if let Destination::Local(acc) = d
                && !accounts.iter().any(|(x, _)| x.id == acc.id)
            {
                accounts.push((acc.clone(), a.address.clone()));
            }
        }
    }
    let mut scripts = Vec::new();
    for (acc, to) in accounts {
        match store.sieve_active(acc.id).await {
            Ok(Some((name, src))) => scripts.push((acc, to, name, src)),
            Ok(None) => {}
            Err(e) => warn!(account = %acc.address, error = %e, "cannot read Sieve script"),
        }
    }
    if scripts.is_empty() {
        return out;
    }
    if size > max_size {
        for (acc, ..) in scripts {
            out.by_account.insert(
                acc.id,
                Plan {
                    stores: vec![(0, keep_folder(folders, acc.id), Flags::default(), false)],
                    notes: vec![format!(
                        "{}: not filtered, the message is larger than sieve.max_message_size",
                        acc.address
                    )],
                    ..Default::default()
                },
            );
        }
        return out;
    }
    for (acc, to, name, src) in scripts {
        let script = match engine.compile(&src) {
            Ok(s) => s,
            Err(e) => {
                out.by_account.insert(
                    acc.id,
                    Plan {
                        stores: vec![(0, keep_folder(folders, acc.id), Flags::default(), false)],
                        notes: vec![format!(
                            "{}: Sieve script \"{name}\" does not compile ({e}); kept",
                            acc.address
                        )],
                        ..Default::default()
                    },
                );
                continue;
            }
        };
        let boxes = store.mailbox_list(acc.id).await.unwrap_or_default();
        let host = StoreHost {
            store: store.clone(),
            account: acc.id,
            handle: tokio::runtime::Handle::current(),
            mailboxes: boxes.iter().map(|m| m.name.to_lowercase()).collect(),
            special_uses: boxes
                .iter()
                .filter_map(|m| m.special_use.map(|s| s.attribute().to_ascii_lowercase()))
                .collect(),
        };
        let env = Envelope {
            from: from.to_string(),
            to,
            user: acc.address.clone(),
        };
        // The run answers storage questions (vacation's memory) by blocking on them: it runs
        // off the session's thread.
        let run = std::panic::AssertUnwindSafe(|| engine.run(script, message(), &env, &host));
        let outcome = match crate::blocking(|| std::panic::catch_unwind(run)) {
            Ok(o) => o,
            Err(_) => {
                warn!(account = %acc.address, "Sieve run failed");
                postern_sieve::Outcome {
                    actions: vec![Action::Keep {
                        flags: vec![],
                        message: 0,
                    }],
                    error: Some("the filter stopped unexpectedly".into()),
                    ..Default::default()
                }
            }
        };
        let p = to_plan(directory, junk, from, &acc, &name, outcome, &boxes, folders).await;
        out.by_account.insert(acc.id, p);
    }
    out
}

/// With `routing.subaddress_folder`: `alice+news@` goes into alice's folder "news" when she
/// has one (any case), else to her INBOX.
pub async fn subaddress_folders(
    store: &SharedStore,
    routing: &postern_config::Routing,
    rcpts: &[Recipient],
) -> HashMap<AccountId, String> {
    let mut out = HashMap::new();
    let Some(sep) = routing.separator().filter(|_| routing.subaddress_folder) else {
        return out;
    };
    for a in rcpts {
        let (local, domain) = a.address.rsplit_once('@').unwrap_or(("", ""));
        let Some((base, detail)) = local.split_once(sep) else {
            continue;
        };
        let base = format!("{base}@{domain}");
        for d in &a.dests {
            if let Destination::Local(acc) = d
                && acc.address == base
                && let Ok(boxes) = store.mailbox_list(acc.id).await
                // Not Sent, Drafts, Trash...: strangers must not file mail there.
                && let Some(mb) = boxes
                    .iter()
                    .find(|m| m.special_use.is_none() && m.name.eq_ignore_ascii_case(detail))
            {
                out.entry(acc.id).or_insert_with(|| mb.name.clone());
            }
        }
    }
    out
}

/// Mail the inbound checks judged junk goes into each recipient's Junk folder, unless the
/// recipient taught that its author is trusted (by moving such mail out of Junk); mail from an
/// author the recipient taught is junk goes there whatever the checks said.
pub async fn junk_folders(
    store: &SharedStore,
    rcpts: &[Recipient],
    out: &mut HashMap<AccountId, String>,
    junk: bool,
    author: &str,
    author_verified: bool,
) {
    for d in rcpts.iter().flat_map(|a| &a.dests) {
        let Destination::Local(acc) = d else { continue };
        let taught = if author.is_empty() {
            None
        } else {
            store.sender_verdict(acc.id, author).await.ok().flatten()
        };
        // Trust needs a proven From header: a forger must not borrow it.
        let to_junk = match taught {
            Some(true) => true,
            Some(false) if author_verified => false,
            _ => junk,
        };
        if !to_junk {
            continue;
        }
        if let Ok(boxes) = store.mailbox_list(acc.id).await
            && let Some(mb) = boxes
                .iter()
                .find(|m| m.special_use == Some(postern_store::SpecialUse::Junk))
        {
            out.insert(acc.id, mb.name.clone());
        }
    }
}

/// Mail from another domain that one of our addresses sends on to another domain
/// (forwarding, aliases) leaves with an SRS sender of ours, so SPF passes there.
pub async fn forwarding_sender(
    directory: &Directory,
    logged_in: bool,
    from: &str,
    rcpts: &[Recipient],
) -> Option<String> {
    if logged_in || from.is_empty() {
        return None;
    }
    if directory
        .is_local_domain(domain_of(from))
        .await
        .unwrap_or(true)
    {
        return None;
    }
    // A recipient whose expansion reaches another domain (not a relayed recipient itself).
    let via = rcpts.iter().find(|a| {
        a.dests
            .iter()
            .any(|d| matches!(d, Destination::Remote(r) if *r != a.address))
    })?;
    directory.forwarding_sender(from, domain_of(&via.address))
}

pub(crate) fn keep_folder(folders: &HashMap<AccountId, String>, id: AccountId) -> String {
    folders
        .get(&id)
        .cloned()
        .unwrap_or_else(|| postern_store::INBOX.into())
}

#[allow(clippy::too_many_arguments)]
async fn to_plan(
    directory: &Directory,
    junk: bool,
    from: &str,
    acc: &Account,
    script: &str,
    o: postern_sieve::Outcome,
    boxes: &[postern_store::Mailbox],
    folders: &HashMap<AccountId, String>,
) -> Plan {
    let who = &acc.address;
    // Redirected mail keeps its sender; another domain's leaves with our SRS address.
    let redirect_sender = match directory.is_local_domain(domain_of(from)).await {
        _ if from.is_empty() => String::new(),
        Ok(false) => directory
            .forwarding_sender(from, domain_of(who))
            .unwrap_or_else(|| from.to_string()),
        _ => from.to_string(),
    };
    let mut p = Plan {
        messages: o.messages,
        ..Default::default()
    };
    let mut keep_junk = false;
    if let Some(e) = &o.error {
        p.notes.push(format!(
            "{who}: Sieve script \"{script}\" failed ({e}); kept in INBOX"
        ));
    }
    for a in o.actions {
        match a {
            Action::Keep { flags: f, message } => {
                let folder = keep_folder(folders, acc.id);
                if o.error.is_none() {
                    p.notes.push(format!(
                        "{who}: Sieve script \"{script}\" keeps it in {folder}"
                    ));
                }
                p.stores.push((message, folder, flags(&f), false));
            }
            Action::FileInto {
                folder,
                flags: f,
                create,
                special_use,
                message,
            } => {
                let by_use = special_use.as_deref().and_then(|u| {
                    boxes.iter().find(|m| {
                        m.special_use
                            .is_some_and(|s| s.attribute().eq_ignore_ascii_case(u))
                    })
                });
                let existing =
                    by_use.or_else(|| boxes.iter().find(|m| m.name.eq_ignore_ascii_case(&folder)));
                let (name, note) = match existing {
                    Some(m) => (m.name.clone(), format!("files it into {}", m.name)),
                    None if create => (folder.clone(), format!("files it into {folder} (created)")),
                    None => (
                        postern_store::INBOX.to_string(),
                        format!("files it into {folder}, which does not exist: kept in INBOX"),
                    ),
                };
                p.notes
                    .push(format!("{who}: Sieve script \"{script}\" {note}"));
                p.stores.push((message, name, flags(&f), create));
            }
            Action::Reject { reason } => {
                p.notes.push(format!(
                    "{who}: Sieve script \"{script}\" rejects it: {reason}"
                ));
                // Junk has forged senders: telling them would be backscatter.
                if !from.is_empty() && !junk {
                    p.reject_notice = Some((
                        reject_notice(who, from, &reason),
                        resolve(directory, from).await,
                    ));
                }
                p.reject = Some(reason);
            }
            Action::Redirect { to, .. } if junk => {
                p.notes.push(format!(
                    "{who}: Sieve script \"{script}\" would redirect it to {to}; junk is not sent on, it is kept"
                ));
                keep_junk = true;
            }
            Action::Redirect { to, message } => {
                let dests = resolve(directory, &to).await;
                p.notes.push(format!(
                    "{who}: Sieve script \"{script}\" redirects it to {to}"
                ));
                p.sends.push(Send {
                    message,
                    sender: redirect_sender.clone(),
                    auto_reply: false,
                    dests,
                });
            }
            Action::Reply { .. } if junk => {
                p.notes.push(format!(
                    "{who}: no vacation reply: the message looks like junk"
                ));
            }
            Action::Reply { to, message } => {
                // A reply speaks for the user: it may come from the user's addresses only.
                let author = message
                    .checked_sub(1)
                    .and_then(|i| p.messages.get(i))
                    .and_then(|m| postern_message::first_from(m))
                    .unwrap_or_default();
                if !directory.owns_address(acc, &author).await.unwrap_or(false) {
                    p.notes.push(format!(
                        "{who}: no vacation reply: its From <{author}> is not one of the user's addresses"
                    ));
                    continue;
                }
                let dests = resolve(directory, &to).await;
                p.notes.push(format!(
                    "{who}: Sieve script \"{script}\" sends a vacation reply to {to}"
                ));
                p.sends.push(Send {
                    message,
                    sender: String::new(),
                    auto_reply: true,
                    dests,
                });
            }
        }
    }
    if keep_junk && p.stores.is_empty() && p.reject.is_none() {
        p.stores
            .push((0, keep_folder(folders, acc.id), Flags::default(), false));
    }
    // One copy per mailbox (RFC 5228 2.10.3): `keep; fileinto "INBOX"` stores once.
    let mut seen = HashSet::new();
    p.stores
        .retain(|(m, folder, _, _)| seen.insert((*m, folder.to_lowercase())));
    if p.stores.is_empty() && p.reject.is_none() && o.error.is_none() {
        p.notes
            .push(format!("{who}: Sieve script \"{script}\" discards it"));
    }
    p
}

/// What the sender hears when one recipient's filter rejects the message (RFC 5429) and it
/// could not be refused during the SMTP dialogue, because other recipients took it.
fn reject_notice(user: &str, sender: &str, reason: &str) -> Vec<u8> {
    let domain = domain_of(user);
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect::<String>()
        .replace('\n', "\r\n");
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\nTo: <{sender}>\r\n\
         Subject: Your message to {user} was rejected\r\n\
         Date: {date}\r\nMessage-ID: <reject.{now}.{rand}@{domain}>\r\n\
         Auto-Submitted: auto-replied (rejected)\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Your message to {user} was rejected by the recipient's mail filter.\r\n\r\n\
         The reason given:\r\n\r\n{reason}\r\n",
        date = postern_message::trace::rfc5322_date(time::OffsetDateTime::now_utc()),
        now = postern_store::now(),
        rand = postern_message::new_trace_id(),
    )
    .into_bytes()
}

/// Where a message the filter sends goes: our own users directly, everyone else via the queue.
pub async fn resolve(directory: &Directory, to: &str) -> Vec<Destination> {
    let Ok(addr) = postern_directory::normalize_address(to) else {
        return Vec::new();
    };
    match directory.is_local_domain(domain_of(&addr)).await {
        Ok(true) => directory
            .expand(&addr)
            .await
            .ok()
            .flatten()
            .unwrap_or_default(),
        Ok(false) => vec![Destination::Remote(addr)],
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_names() {
        let f = flags(&[
            "\\seen".into(),
            "\\Flagged".into(),
            "$Label1".into(),
            "bad(kw".into(),
            "\\Recent".into(),
        ]);
        assert_eq!(f.bits, Flags::SEEN | Flags::FLAGGED);
        assert_eq!(f.keywords, ["$Label1"]);
    }

    #[test]
    fn long_seen_keys_are_hashed() {
        let long = format!("_vbob@far.test{}", "ü".repeat(200));
        let k = seen_key(&long);
        assert!(k.len() < 200);
        assert_eq!(k, seen_key(&long));
        assert_ne!(k, seen_key(&format!("{long}x")));
        assert_eq!(seen_key("short"), "short");
    }
}
