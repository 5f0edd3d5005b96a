//! Maildir trees in and out: Dovecot's (and Courier's) Maildir++ layout, where INBOX is the
//! root and `.Work.Projects` is the folder Work/Projects. Folders, flags, keywords and received
//! dates (the files' mtimes) survive the trip both ways.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use postern_directory::normalize_address;
use postern_store::{AccountId, Delivery, Flags, Progress, SharedStore};

use crate::Error;

/// Messages stored per commit while importing.
const BATCH: usize = 64;
const BATCH_BYTES: u64 = 16 << 20;

/// Maildir info letters (https://cr.yp.to/proto/maildir.html) and the IMAP flags they mean;
/// P (passed) is the $Forwarded keyword, which Dovecot keeps as a keyword letter instead: an
/// export writes both.
const LETTERS: [(char, u8); 5] = [
    ('D', Flags::DRAFT),
    ('F', Flags::FLAGGED),
    ('R', Flags::ANSWERED),
    ('S', Flags::SEEN),
    ('T', Flags::DELETED),
];
const FORWARDED: &str = "$Forwarded";

fn io_error(what: &Path, e: std::io::Error) -> Error {
    Error::Refused(format!("{}: {e}", what.display()))
}

async fn account_id(store: &SharedStore, address: &str) -> Result<AccountId, Error> {
    let address = normalize_address(address).map_err(|e| Error::Refused(e.to_string()))?;
    store
        .account_by_address(&address)
        .await?
        .map(|a| a.id)
        .ok_or_else(|| Error::Refused(format!("user {address} does not exist; add it first")))
}

/// The folders of a Maildir++ tree: (mailbox name, directory), INBOX first.
fn folders(root: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = vec![("INBOX".to_string(), root.to_path_buf())];
    let mut sub = Vec::new();
    for e in std::fs::read_dir(root).map_err(|e| io_error(root, e))? {
        let e = e.map_err(|e| io_error(root, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(folder) = name.strip_prefix('.') else {
            continue;
        };
        if folder.is_empty() || folder == "." || !e.path().join("cur").is_dir() {
            continue;
        }
        let decoded = postern_imap::utf7::decode(folder).unwrap_or_else(|| folder.to_string());
        sub.push((decoded.split('.').collect::<Vec<_>>().join("/"), e.path()));
    }
    sub.sort();
    out.extend(sub);
    Ok(out)
}

/// `dovecot-keywords`: "0 $Label1" lines, letter a = 0.
fn keyword_names(dir: &Path) -> HashMap<char, String> {
    std::fs::read_to_string(dir.join("dovecot-keywords"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (i, name) = l.split_once(' ')?;
            let i: u8 = i.parse().ok().filter(|i| *i < 26)?;
            Some(((b'a' + i) as char, name.trim().to_string()))
        })
        .collect()
}

/// `dovecot-uidlist`: the UID of each file (by its name before ':'), to keep the order.
fn uid_order(dir: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(dir.join("dovecot-uidlist"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let uid: u64 = l.split_whitespace().next()?.parse().ok()?;
            let (_, name) = l.split_once(':')?;
            Some((name.to_string(), uid))
        })
        .collect()
}

fn flags_of(info: &str, keywords: &HashMap<char, String>) -> Flags {
    let mut f = Flags::default();
    for c in info.chars() {
        if let Some((_, bit)) = LETTERS.iter().find(|(l, _)| *l == c) {
            f.bits |= bit;
        } else if let Some(k) = if c == 'P' {
            Some(FORWARDED)
        } else {
            keywords.get(&c).map(String::as_str)
        } && !f.keywords.iter().any(|x| x == k)
        {
            f.keywords.push(k.to_string());
        }
    }
    f
}

/// LF line ends (as Maildir keeps them) to CRLF (as mail is sent and as we keep it).
fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 40);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

async fn ensure_mailbox(
    store: &SharedStore,
    account: AccountId,
    name: &str,
) -> Result<postern_store::MailboxId, Error> {
    if let Some(m) = store.mailbox_by_name(account, name).await? {
        return Ok(m.id);
    }
    // Parents first, so the hierarchy is whole.
    let parts: Vec<&str> = name.split('/').collect();
    for i in 1..parts.len() {
        let parent = parts[..i].join("/");
        if store.mailbox_by_name(account, &parent).await?.is_none() {
            store.mailbox_create(account, &parent, None).await?;
            store.subscription_set(account, &parent, true).await?;
        }
    }
    let m = store.mailbox_create(account, name, None).await?;
    store.subscription_set(account, name, true).await?;
    Ok(m.id)
}

struct Found {
    path: PathBuf,
    uid: u64,
    mtime: i64,
    size: u64,
    flags: Flags,
}

/// The messages of one Maildir folder, in the order to store them.
fn messages_in(dir: &Path) -> Vec<Found> {
    let keywords = keyword_names(dir);
    let order = uid_order(dir);
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with('.') {
                continue;
            }
            let (base, info) = match file.split_once(":2,") {
                Some((b, i)) if sub == "cur" => (b.to_string(), i.to_string()),
                _ => (
                    file.split(':').next().unwrap_or(&file).to_string(),
                    String::new(),
                ),
            };
            let meta = e.metadata().ok();
            let mtime = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or_else(postern_store::now, |d| d.as_secs() as i64);
            found.push(Found {
                path: e.path(),
                uid: order.get(&base).copied().unwrap_or(u64::MAX),
                mtime,
                size: meta.map_or(0, |m| m.len()),
                flags: flags_of(&info, &keywords),
            });
        }
    }
    found.sort_by(|a, b| (a.uid, a.mtime, &a.path).cmp(&(b.uid, b.mtime, &b.path)));
    found
}

/// Copies the Maildir++ tree at `root` into the account of `address`; says what it stored.
/// Progress counts the files' bytes as they are on disk.
pub async fn import(
    store: &SharedStore,
    address: &str,
    root: &Path,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let account = account_id(store, address).await?;
    if !root.join("cur").is_dir() && !root.join("new").is_dir() {
        return Err(Error::Refused(format!(
            "{} is not a Maildir: it has no cur/ or new/ (point at the Maildir itself, e.g. ~/Maildir)",
            root.display()
        )));
    }
    progress.phase("reading the Maildir");
    let all: Vec<(String, Vec<Found>)> = folders(root)?
        .into_iter()
        .map(|(name, dir)| (name, messages_in(&dir)))
        .collect();
    progress.phase("importing");
    let files = all.iter().flat_map(|(_, found)| found);
    progress.total(files.clone().count() as u64, files.map(|f| f.size).sum());
    let (mut messages, mut skipped, folder_count) = (0usize, Vec::new(), all.len());
    for (name, found) in all {
        let mailbox = ensure_mailbox(store, account, &name).await?;
        let mut batch = Batch::default();
        for f in found {
            let data = match std::fs::read(&f.path) {
                Ok(d) => d,
                Err(e) => {
                    skipped.push(format!("{}: {e}", f.path.display()));
                    progress.add(1, f.size);
                    continue;
                }
            };
            batch.file_bytes += data.len() as u64;
            let message = postern_ingest::Prepared::new(to_crlf(&data));
            batch.bytes += message.size();
            batch.deliveries.push(message.deliver(
                f.mtime,
                vec![postern_ingest::into_mailbox(
                    account, mailbox, f.flags, false,
                )],
                None,
                Vec::new(),
            ));
            if batch.deliveries.len() >= BATCH || batch.bytes >= BATCH_BYTES {
                messages += batch.store(store, progress).await?;
            }
        }
        messages += batch.store(store, progress).await?;
    }
    let mut msg =
        format!("{messages} message(s) in {folder_count} folder(s) imported into {address}");
    if !skipped.is_empty() {
        msg.push_str(&format!(
            "; {} file(s) could not be read: {}",
            skipped.len(),
            skipped.join("; ")
        ));
    }
    Ok(msg)
}

/// Messages waiting to be stored in one commit.
#[derive(Default)]
struct Batch {
    deliveries: Vec<Delivery>,
    /// As stored (CRLF), for the batch limit.
    bytes: u64,
    /// As read, for progress.
    file_bytes: u64,
}

impl Batch {
    /// Stores what waits; how many messages that was.
    async fn store(
        &mut self,
        store: &SharedStore,
        progress: &dyn Progress,
    ) -> Result<usize, Error> {
        if self.deliveries.is_empty() {
            return Ok(0);
        }
        let Batch {
            deliveries,
            file_bytes,
            ..
        } = std::mem::take(self);
        let n = store_batch(store, deliveries).await?;
        progress.add(n as u64, file_bytes);
        Ok(n)
    }
}

/// Stores deliveries in one commit; any refused target fails the whole import.
pub(crate) async fn store_batch(store: &SharedStore, batch: Vec<Delivery>) -> Result<usize, Error> {
    if batch.is_empty() {
        return Ok(0);
    }
    let reports = store.deliver_many(batch).await?;
    for r in &reports {
        for t in &r.targets {
            if let Err(e) = t {
                return Err(Error::Refused(format!("storing a message failed: {e}")));
            }
        }
    }
    Ok(reports.len())
}

/// The Maildir++ directory name of a mailbox: '/' becomes '.', other dots '_', and names that
/// are not ASCII are in modified UTF-7, as Dovecot writes them.
fn folder_dir(name: &str) -> String {
    let parts: Vec<String> = name
        .split('/')
        .map(|p| postern_imap::utf7::encode(&p.replace('.', "_")))
        .collect();
    format!(".{}", parts.join("."))
}

fn create_maildir(dir: &Path) -> Result<(), Error> {
    for sub in ["cur", "new", "tmp"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io_error(&d, e))?;
    }
    Ok(())
}

/// Writes the account of `address` as a Maildir++ tree into the new directory `root`.
/// Progress counts the messages' bytes as stored.
pub async fn export(
    store: &SharedStore,
    hostname: &str,
    address: &str,
    root: &Path,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let account = account_id(store, address).await?;
    if root.exists()
        && std::fs::read_dir(root)
            .map_err(|e| io_error(root, e))?
            .next()
            .is_some()
    {
        return Err(Error::Refused(format!(
            "{} exists and is not empty; export into a new directory",
            root.display()
        )));
    }
    create_maildir(root)?;
    let mut mailboxes = store.mailbox_list(account).await?;
    mailboxes.sort_by(|a, b| a.name.cmp(&b.name));
    progress.phase("exporting");
    progress.total(
        mailboxes.iter().map(|m| m.messages as u64).sum(),
        mailboxes.iter().map(|m| m.size).sum(),
    );
    let (mut messages, mut subscriptions) = (0usize, Vec::new());
    for mb in &mailboxes {
        let dir = if mb.name == "INBOX" {
            root.to_path_buf()
        } else {
            root.join(folder_dir(&mb.name))
        };
        create_maildir(&dir)?;
        let entries = store.message_list(mb.id).await?;
        // Keywords become letters a..z of this folder's dovecot-keywords.
        let mut letters: Vec<String> = Vec::new();
        for e in &entries {
            for k in &e.flags.keywords {
                if !letters.contains(k) && letters.len() < 26 {
                    letters.push(k.clone());
                }
            }
        }
        if !letters.is_empty() {
            let text: String = letters
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{i} {k}\n"))
                .collect();
            let p = dir.join("dovecot-keywords");
            std::fs::write(&p, text).map_err(|e| io_error(&p, e))?;
        }
        for e in entries {
            let data = to_lf(&store.blob_read(e.blob, 0, e.size).await?);
            let mut info: Vec<char> = LETTERS
                .iter()
                .filter(|(_, bit)| e.flags.bits & bit != 0)
                .map(|(l, _)| *l)
                .collect();
            if e.flags.keywords.iter().any(|k| k == FORWARDED) {
                info.push('P');
            }
            for k in &e.flags.keywords {
                if let Some(i) = letters.iter().position(|l| l == k) {
                    info.push((b'a' + i as u8) as char);
                }
            }
            info.sort_unstable();
            let base = format!(
                "{}.M{}P{}.{hostname},S={}",
                e.internal_date,
                e.uid,
                mb.id,
                data.len()
            );
            let tmp = dir.join("tmp").join(&base);
            let dest = dir
                .join("cur")
                .join(format!("{base}:2,{}", info.iter().collect::<String>()));
            std::fs::write(&tmp, &data).map_err(|err| io_error(&tmp, err))?;
            let when = UNIX_EPOCH + Duration::from_secs(e.internal_date.max(0) as u64);
            std::fs::File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(when)))
                .map_err(|err| io_error(&tmp, err))?;
            std::fs::rename(&tmp, &dest).map_err(|err| io_error(&dest, err))?;
            messages += 1;
            progress.add(1, e.size);
            // Reading and writing here never waits on the runtime: without a pause now and
            // then the server's other tasks (and its timers) would wait for the whole export.
            tokio::task::yield_now().await;
        }
    }
    // Courier's and Dovecot's list of subscribed folders, one per line.
    for name in store.subscriptions(account).await? {
        if name != "INBOX" {
            subscriptions.push(folder_dir(&name)[1..].to_string());
        }
    }
    let p = root.join("subscriptions");
    let mut text = subscriptions.join("\n");
    text.push('\n');
    std::fs::write(&p, text).map_err(|e| io_error(&p, e))?;
    Ok(format!(
        "{messages} message(s) in {} folder(s) of {address} written to {}",
        mailboxes.len(),
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_names_map_both_ways() {
        let kw: HashMap<char, String> =
            [('a', "$Label1".to_string()), ('b', FORWARDED.to_string())].into();
        let f = flags_of("FPSab", &kw);
        assert_eq!(f.bits, Flags::FLAGGED | Flags::SEEN);
        assert_eq!(
            f.keywords,
            vec![FORWARDED.to_string(), "$Label1".to_string()]
        );
        assert_eq!(folder_dir("Work/Projects"), ".Work.Projects");
        assert_eq!(folder_dir("Café"), ".Caf&AOk-");
        assert_eq!(folder_dir("v1.2"), ".v1_2");
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(to_lf(b"a\r\nb\nc\r"), b"a\nb\nc\r");
    }
}
