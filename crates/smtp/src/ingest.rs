//! From received bytes to stored mail: the message sink (memory, spilling to a spool file),
//! the checks on a complete message, and the one atomic, durable commit for all recipients.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use postern_directory::Destination;
use postern_store::{
    Account, BlobData, Delivery, DeliveryTarget, DsnRet, Flags, MailboxTarget, NewBlob,
    NewQueueEntry, QueueRecipient, RecipientState, SharedStore, StoreError, TraceEvent,
};

use crate::proto::{DataReport, MailFrom, RcptTo, Reply, Ret, Sink};

/// How much of the message start is kept for header checks even after spilling to a file.
const HEAD_KEEP: usize = 256 << 10;

/// A message arriving: in memory until it grows past the threshold, then in a spool file
/// next to the store (so taking it over is a rename).
pub struct MessageSink {
    mem: Vec<u8>,
    head: Vec<u8>,
    file: Option<(File, PathBuf)>,
    threshold: usize,
    spool_dir: PathBuf,
    /// Length of the trace headers we put first.
    pub prefix_len: usize,
    /// Length of the Return-Path line at the very start (not sent on to remote servers).
    pub return_path_len: usize,
    written: u64,
    error: Option<std::io::Error>,
}

impl MessageSink {
    pub fn new(prefix: &[u8], return_path_len: usize, threshold: usize, spool_dir: &Path) -> Self {
        let mut s = MessageSink {
            mem: Vec::with_capacity(prefix.len() + 4096),
            head: Vec::new(),
            file: None,
            threshold,
            spool_dir: spool_dir.to_path_buf(),
            prefix_len: prefix.len(),
            return_path_len,
            written: 0,
            error: None,
        };
        s.put(prefix);
        s
    }

    pub fn len(&self) -> u64 {
        self.written
    }

    /// The message without our trace headers, as far as kept in memory.
    pub fn original_head(&self) -> &[u8] {
        if self.file.is_some() {
            &self.head[self.prefix_len.min(self.head.len())..]
        } else {
            &self.mem[self.prefix_len..]
        }
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let path = self
            .spool_dir
            .join(format!("in-{}", postern_message::new_trace_id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(&self.mem)?;
        self.head = std::mem::take(&mut self.mem);
        self.head.truncate(HEAD_KEEP);
        self.head.shrink_to_fit();
        self.file = Some((f, path));
        Ok(())
    }

    /// The finished message: in memory, or an fsynced spool file.
    pub async fn finish(mut self) -> Result<BlobData, std::io::Error> {
        if let Some(e) = self.error.take() {
            self.discard();
            return Err(e);
        }
        match self.file.take() {
            None => Ok(BlobData::Memory(std::mem::take(&mut self.mem))),
            Some((f, path)) => {
                let p2 = path.clone();
                let r = tokio::task::spawn_blocking(move || f.sync_data())
                    .await
                    .map_err(std::io::Error::other)?;
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&p2);
                    return Err(e);
                }
                Ok(BlobData::File(path))
            }
        }
    }

    pub fn discard(&mut self) {
        if let Some((_, p)) = self.file.take() {
            let _ = std::fs::remove_file(p);
        }
        self.mem = Vec::new();
    }
}

impl Drop for MessageSink {
    fn drop(&mut self) {
        self.discard();
    }
}

impl Sink for MessageSink {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.written += bytes.len() as u64;
        if let Some((f, _)) = &mut self.file {
            if let Err(e) = f.write_all(bytes) {
                self.error = Some(e);
            }
            return;
        }
        self.mem.extend_from_slice(bytes);
        if self.mem.len() > self.threshold
            && let Err(e) = self.spill()
        {
            self.error = Some(e);
        }
    }
}

/// Finds bare CR or LF in content that arrives in chunks (BDAT).
#[derive(Default)]
pub struct BareScan {
    prev_cr: bool,
    pub found: bool,
}

impl BareScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.found {
            return;
        }
        for &c in bytes {
            if (c == b'\n') != self.prev_cr {
                self.found = true;
                return;
            }
            self.prev_cr = c == b'\r';
        }
    }

    pub fn finish(&mut self) -> bool {
        self.found || self.prev_cr
    }
}

/// A recipient accepted at RCPT time, with where it leads.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub rcpt: RcptTo,
    pub address: String,
    pub dests: Vec<Destination>,
}

/// The Message-ID of a message, from the start of its header.
pub fn message_id(head: &[u8]) -> Option<String> {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]);
    let mut value: Option<String> = None;
    for line in text.split("\r\n") {
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line.trim()),
            Some(_) => break,
            None if line
                .get(..11)
                .is_some_and(|n| n.eq_ignore_ascii_case("message-id:")) =>
            {
                value = Some(line[11..].trim().to_string())
            }
            None => {}
        }
    }
    value.filter(|v| !v.is_empty() && v.len() < 1000)
}

/// Why a complete message is refused, before it is stored.
pub fn check_content(
    report: &DataReport,
    received: usize,
    max_received: usize,
    reject_bare: bool,
    max_size: u64,
) -> Option<Reply> {
    if report.too_big {
        return Some(Reply::new(
            552,
            "5.3.4",
            format!("Message too big: the limit is {max_size} bytes"),
        ));
    }
    if reject_bare && (report.bare_lf || report.bare_cr) {
        return Some(Reply::new(
            550,
            "5.6.11",
            "Message contains a bare CR or LF; the sending program must end lines with CRLF (RFC 5321 2.3.8)",
        ));
    }
    if report.long_line {
        return Some(Reply::new(
            550,
            "5.6.0",
            "Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6); the sending program must encode it (quoted-printable or base64)",
        ));
    }
    if received > max_received {
        return Some(Reply::new(
            554,
            "5.4.6",
            format!(
                "Mail loop: the message has {received} Received headers (the limit is {max_received})"
            ),
        ));
    }
    None
}

/// Stores the message for every local destination and queues it for remote ones, in one
/// commit. Returns the reply for the client.
/// A complete message, ready to store.
pub struct Complete {
    pub data: BlobData,
    pub size: u64,
    /// Where the part sent on to remote servers starts (after our Return-Path).
    pub body_offset: u64,
    pub trace_id: String,
    /// How it arrived, for the trace ("from client.test [192.0.2.1] over TLS1.3 ...").
    pub arrival: String,
    pub message_id: Option<String>,
}

/// The trace of a message's arrival and of where it went.
fn trace_events(from: &MailFrom, rcpts: &[Accepted], msg: &Complete) -> Vec<TraceEvent> {
    let id = msg.trace_id.as_str();
    let sender = if from.address.is_empty() {
        "<>".to_string()
    } else {
        format!("<{}>", from.address)
    };
    let list: Vec<&str> = rcpts.iter().map(|a| a.address.as_str()).collect();
    let mut received = TraceEvent::new(
        id,
        "received",
        format!(
            "{}, {} bytes, sender {sender}, {} recipient(s): {}{}",
            msg.arrival,
            msg.size,
            list.len(),
            list.join(", "),
            msg.message_id
                .as_deref()
                .map(|m| format!(", Message-ID {m}"))
                .unwrap_or_default()
        ),
    )
    .key(format!("from:{}", from.address.to_ascii_lowercase()));
    if let Some(m) = &msg.message_id {
        received = received.key(format!("mid:{m}"));
    }
    for a in rcpts {
        received = received.key(format!("to:{}", a.address));
    }
    let mut events = vec![received];
    for a in rcpts {
        let names: Vec<String> = a
            .dests
            .iter()
            .map(|d| match d {
                Destination::Local(acc) => acc.address.clone(),
                Destination::Remote(r) => r.clone(),
            })
            .collect();
        if names.len() != 1 || names[0] != a.address {
            let mut e = TraceEvent::new(
                id,
                "routed",
                format!("{} → {}", a.address, names.join(", ")),
            );
            for n in &names {
                e = e.key(format!("to:{n}"));
            }
            events.push(e);
        }
    }
    events
}

pub async fn commit(
    store: &SharedStore,
    from: &MailFrom,
    rcpts: &[Accepted],
    msg: Complete,
    user: Option<&str>,
    queue_sender: Option<String>,
    folders: &std::collections::HashMap<postern_store::AccountId, String>,
) -> (Reply, Result<(), StoreError>) {
    let mut targets: Vec<DeliveryTarget> = Vec::new();
    let mut remote: Vec<QueueRecipient> = Vec::new();
    for a in rcpts {
        for d in &a.dests {
            match d {
                Destination::Local(acc) => {
                    if !targets.iter().any(|t| t.account == acc.id) {
                        targets.push(DeliveryTarget {
                            account: acc.id,
                            mailbox: MailboxTarget::Name {
                                name: folders
                                    .get(&acc.id)
                                    .cloned()
                                    .unwrap_or_else(|| postern_store::INBOX.into()),
                                create: false,
                            },
                            flags: Flags::default(),
                            enforce_quota: false,
                        });
                    }
                }
                Destination::Remote(addr) => {
                    if !remote.iter().any(|r| r.address == *addr) {
                        remote.push(QueueRecipient {
                            address: addr.clone(),
                            orcpt: a.rcpt.orcpt.clone(),
                            notify: a.rcpt.notify.clone(),
                            state: RecipientState::Pending,
                            last_error: None,
                        });
                    }
                }
            }
        }
    }
    let queue = (!remote.is_empty()).then(|| NewQueueEntry {
        sender: queue_sender.unwrap_or_else(|| from.address.clone()),
        recipients: remote,
        envid: from.envid.clone(),
        ret: from.ret.map(|r| match r {
            Ret::Full => DsnRet::Full,
            Ret::Hdrs => DsnRet::Headers,
        }),
        trace_id: msg.trace_id.clone(),
        authenticated: user.map(str::to_string),
        requiretls: false,
        body_offset: msg.body_offset,
    });
    let queued = queue.is_some();
    let local = targets.len();
    let mut trace = trace_events(from, rcpts, &msg);
    let mut seen = std::collections::HashSet::new();
    for a in rcpts {
        for d in &a.dests {
            let (kind, who) = match d {
                Destination::Local(acc) => ("delivered", acc.address.clone()),
                Destination::Remote(r) => ("queued", r.clone()),
            };
            if seen.insert(who.clone()) {
                let folder = match d {
                    Destination::Local(acc) => folders
                        .get(&acc.id)
                        .map_or(postern_store::INBOX, String::as_str),
                    Destination::Remote(_) => "",
                };
                let text = match kind {
                    "delivered" => format!("to {who}, folder {folder}"),
                    _ => format!("for {who}, to be sent on"),
                };
                trace.push(TraceEvent::new(&msg.trace_id, kind, text).key(format!("to:{who}")));
            }
        }
    }
    let (data, meta) = with_meta(msg.data).await;
    let trace_id = msg.trace_id;
    let delivery = Delivery {
        blob: NewBlob {
            data,
            size: msg.size,
            meta,
        },
        internal_date: postern_store::now(),
        targets,
        queue,
        trace,
    };
    let size = msg.size;
    match store.deliver(delivery).await {
        Ok(rep) => {
            for (t, r) in local_accounts(rcpts).iter().zip(&rep.targets) {
                if r.is_ok() {
                    quota_warning(store, t, size).await;
                }
            }
            let failed = rep.targets.iter().filter(|t| t.is_err()).count();
            if failed == local && !queued {
                let e = rep
                    .targets
                    .into_iter()
                    .find_map(|t| t.err())
                    .unwrap_or(StoreError::Backend("nothing stored".into()));
                (temp_failure(&e), Err(e))
            } else {
                let what = match (local > failed, queued) {
                    (true, true) => "delivered and queued",
                    (false, true) => "queued",
                    _ => "delivered",
                };
                (
                    Reply::new(250, "2.0.0", format!("OK: {what} as {trace_id}")),
                    Ok(()),
                )
            }
        }
        Err(e) => (temp_failure(&e), Err(e)),
    }
}

/// Local accounts in the order `commit` made their delivery targets.
fn local_accounts(rcpts: &[Accepted]) -> Vec<Account> {
    let mut out: Vec<Account> = Vec::new();
    for d in rcpts.iter().flat_map(|a| &a.dests) {
        if let Destination::Local(acc) = d
            && !out.iter().any(|a| a.id == acc.id)
        {
            out.push(acc.clone());
        }
    }
    out
}

/// Once a delivery takes a mailbox past 90% of its quota (bytes or messages), its owner
/// gets a note saying so, and what happens at 100%. Crossing is judged by this message
/// alone, so the note comes once per crossing without remembering anything.
pub async fn quota_warning(store: &SharedStore, acc: &Account, size: u64) {
    if acc.quota_bytes == 0 && acc.quota_messages == 0 {
        return;
    }
    let Ok(u) = store.account_usage(acc.id).await else {
        return;
    };
    let crossed = |used: u64, added: u64, quota: u64| {
        let mark = quota / 10 * 9;
        quota > 0 && used >= mark && used.saturating_sub(added) < mark
    };
    if !crossed(u.bytes, size, acc.quota_bytes) && !crossed(u.messages, 1, acc.quota_messages) {
        return;
    }
    let domain = postern_directory::domain_of(&acc.address);
    let mut limits = Vec::new();
    if acc.quota_bytes > 0 {
        limits.push(format!(
            "{} of {}",
            human_size(u.bytes),
            human_size(acc.quota_bytes)
        ));
    }
    if acc.quota_messages > 0 {
        limits.push(format!("{} of {} messages", u.messages, acc.quota_messages));
    }
    let text = format!(
        "From: Mail system <postmaster@{domain}>\r\nTo: <{to}>\r\nSubject: Your mailbox is 90% full\r\n\
         Date: {date}\r\nMessage-ID: <quota.{id}.{now}@{domain}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your mailbox {to} now uses {used}.\r\n\r\n\
         When it is full, new mail to you is held back by the senders' servers (\"mailbox full\")\r\n\
         and returned to them if it stays full for days. Delete mail you no longer need, and\r\n\
         empty the Trash and Junk folders, or ask your administrator for more space.\r\n",
        to = acc.address,
        used = limits.join(" and "),
        date = postern_message::trace::rfc5322_date(time::OffsetDateTime::now_utc()),
        id = acc.id,
        now = postern_store::now(),
    )
    .into_bytes();
    let (data, meta) = with_meta(BlobData::Memory(text.clone())).await;
    let r = store
        .deliver(Delivery {
            blob: NewBlob {
                data,
                size: text.len() as u64,
                meta,
            },
            internal_date: postern_store::now(),
            targets: vec![DeliveryTarget {
                account: acc.id,
                mailbox: MailboxTarget::Name {
                    name: postern_store::INBOX.into(),
                    create: false,
                },
                flags: Flags::default(),
                enforce_quota: false,
            }],
            queue: None,
            trace: vec![],
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(account = %acc.address, error = %e, "quota warning not delivered");
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KB", n as f64 / 1024.0),
    }
}

/// The parse-once metadata (structure for IMAP), computed off the async threads when the
/// message is large.
pub async fn with_meta(data: BlobData) -> (BlobData, Vec<u8>) {
    match data {
        BlobData::Memory(b) if b.len() < 64 << 10 => {
            let m = safe_meta(&b);
            (BlobData::Memory(b), m)
        }
        BlobData::Memory(b) => tokio::task::spawn_blocking(move || {
            let m = safe_meta(&b);
            (BlobData::Memory(b), m)
        })
        .await
        .expect("metadata task cannot panic"),
        BlobData::File(p) => {
            let p2 = p.clone();
            let m = tokio::task::spawn_blocking(move || {
                std::fs::read(&p2)
                    .map(|b| safe_meta(&b))
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            (BlobData::File(p), m)
        }
    }
}

/// Metadata, or none when the parser gives up on hostile input: readers then compute it
/// again; the message itself is never lost to a parser bug.
fn safe_meta(b: &[u8]) -> Vec<u8> {
    std::panic::catch_unwind(|| postern_message::meta::compute(b).encode()).unwrap_or_default()
}

pub fn temp_failure(e: &StoreError) -> Reply {
    match e {
        StoreError::DiskFull => Reply::new(
            452,
            "4.3.1",
            "Insufficient system storage: the server's disk is full; try again later",
        ),
        StoreError::QuotaExceeded => Reply::new(452, "4.2.2", "Mailbox full; try again later"),
        _ => Reply::new(451, "4.3.0", "Local error in processing; try again later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_beside_non_ascii_headers() {
        // A multi-byte character across byte 11 of a header line once panicked the session.
        let head = "Subject: T\u{fc}r zu\r\nMessage-ID: <a@b.test>\r\n\r\nbody".as_bytes();
        assert_eq!(message_id(head).as_deref(), Some("<a@b.test>"));
        assert_eq!(
            message_id(b"From: \xff\xfe\xc3(\xed\xa0\x80 <x@far.test>\r\n\r\n"),
            None
        );
    }
}
