//! From received bytes to stored mail: the message sink (memory, spilling to a spool file),
//! the checks on a complete message, and the one atomic, durable commit for all recipients.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use postern_directory::Destination;
use postern_store::{
    Account, AccountId, BlobData, Delivery, DeliveryTarget, DsnRet, Flags, MailboxTarget, NewBlob,
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
    /// What the inbound checks found (mail from other servers).
    pub checks: Option<String>,
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
    if let Some(c) = &msg.checks {
        events.push(TraceEvent::new(id, "checked", c.clone()));
    }
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

/// The trace event of a copy stored in an account's folder.
fn delivered(trace_id: &str, address: &str, folder: &str) -> TraceEvent {
    TraceEvent::new(
        trace_id,
        "delivered",
        format!("to {address}, folder {folder}"),
    )
    .key(format!("to:{address}"))
}

fn inbox_target(account: AccountId, folder: String, flags: Flags, create: bool) -> DeliveryTarget {
    DeliveryTarget {
        account,
        mailbox: MailboxTarget::Name {
            name: folder,
            create,
        },
        flags,
        enforce_quota: false,
    }
}

/// A message a filter sends (redirect, vacation reply, rejection notice): stored for our own
/// users, queued for the rest, committed together with the message that caused it.
#[allow(clippy::too_many_arguments)]
async fn send_delivery(
    ours: bool,
    bytes: Vec<u8>,
    return_path_len: usize,
    sender: &str,
    dests: &[Destination],
    trace_id: &str,
    what: &str,
    trace: &mut Vec<TraceEvent>,
) -> Option<Delivery> {
    let mut targets = Vec::new();
    let mut recipients: Vec<QueueRecipient> = Vec::new();
    for d in dests {
        match d {
            Destination::Local(acc) => {
                if !targets.iter().any(|t: &DeliveryTarget| t.account == acc.id) {
                    targets.push(inbox_target(
                        acc.id,
                        postern_store::INBOX.into(),
                        Flags::default(),
                        false,
                    ));
                    trace.push(
                        TraceEvent::new(
                            trace_id,
                            "delivered",
                            format!("{what} to {}, folder INBOX", acc.address),
                        )
                        .key(format!("to:{}", acc.address)),
                    );
                }
            }
            Destination::Remote(r) => {
                if !recipients.iter().any(|x| x.address == *r) {
                    recipients.push(QueueRecipient {
                        address: r.clone(),
                        orcpt: None,
                        notify: None,
                        state: RecipientState::Pending,
                        last_error: None,
                    });
                    trace.push(
                        TraceEvent::new(
                            trace_id,
                            "queued",
                            format!("{what} for {r}, to be sent on"),
                        )
                        .key(format!("to:{r}")),
                    );
                }
            }
        }
    }
    if targets.is_empty() && recipients.is_empty() {
        return None;
    }
    let size = bytes.len() as u64;
    let (data, meta) = with_meta(BlobData::Memory(bytes)).await;
    Some(Delivery {
        blob: NewBlob { data, size, meta },
        internal_date: postern_store::now(),
        targets,
        queue: (!recipients.is_empty()).then(|| NewQueueEntry {
            sender: sender.to_string(),
            recipients,
            envid: None,
            ret: None,
            trace_id: trace_id.to_string(),
            // Vacation replies and notices are ours to sign; redirected mail is not.
            authenticated: ours.then(|| "postern (automatic reply)".to_string()),
            requiretls: false,
            body_offset: return_path_len as u64,
        }),
        trace: Vec::new(),
    })
}

/// The Return-Path line local copies of a filter's own messages start with.
fn with_return_path(sender: &str, body: &[u8]) -> (Vec<u8>, usize) {
    let rp = postern_message::return_path_header(sender);
    let mut v = Vec::with_capacity(rp.len() + body.len());
    v.extend_from_slice(rp.as_bytes());
    v.extend_from_slice(body);
    (v, rp.len())
}

#[allow(clippy::too_many_arguments)]
pub async fn commit(
    store: &SharedStore,
    from: &MailFrom,
    rcpts: &[Accepted],
    msg: Complete,
    user: Option<&str>,
    queue_sender: Option<String>,
    folders: &std::collections::HashMap<postern_store::AccountId, String>,
    plans: crate::filter::Plans,
    return_path_len: usize,
) -> (Reply, Result<(), StoreError>) {
    let mut targets: Vec<DeliveryTarget> = Vec::new();
    // The account of each target, in order (for the quota note).
    let mut target_accounts: Vec<Account> = Vec::new();
    let mut remote: Vec<QueueRecipient> = Vec::new();
    let mut handled: Vec<AccountId> = Vec::new();
    let mut extra: Vec<Delivery> = Vec::new();
    let mut trace = trace_events(from, rcpts, &msg);
    let mut rejections: Vec<(String, String)> = Vec::new();
    let mut taken = false;
    let trace_id = msg.trace_id.clone();
    for a in rcpts {
        for d in &a.dests {
            match d {
                Destination::Local(acc) => {
                    if handled.contains(&acc.id) {
                        continue;
                    }
                    handled.push(acc.id);
                    let Some(p) = plans.by_account.get(&acc.id) else {
                        let folder = crate::filter::keep_folder(folders, acc.id);
                        trace.push(delivered(&trace_id, &acc.address, &folder));
                        targets.push(inbox_target(acc.id, folder, Flags::default(), false));
                        target_accounts.push(acc.clone());
                        taken = true;
                        continue;
                    };
                    for n in &p.notes {
                        trace.push(
                            TraceEvent::new(&trace_id, "filtered", n.clone())
                                .key(format!("to:{}", acc.address)),
                        );
                    }
                    if let Some(r) = &p.reject {
                        rejections.push((acc.address.clone(), r.clone()));
                    } else {
                        taken = true;
                    }
                    for (m, folder, flags, create) in &p.stores {
                        trace.push(delivered(&trace_id, &acc.address, folder));
                        if *m == 0 {
                            targets.push(inbox_target(
                                acc.id,
                                folder.clone(),
                                flags.clone(),
                                *create,
                            ));
                            target_accounts.push(acc.clone());
                        } else if let (Some(body), Some(raw)) = (p.messages.get(m - 1), &plans.raw)
                        {
                            // An edited copy, with the original's Return-Path line.
                            let mut bytes = raw[..return_path_len.min(raw.len())].to_vec();
                            bytes.extend_from_slice(body);
                            let size = bytes.len() as u64;
                            let (data, meta) = with_meta(BlobData::Memory(bytes)).await;
                            extra.push(Delivery {
                                blob: NewBlob { data, size, meta },
                                internal_date: postern_store::now(),
                                targets: vec![inbox_target(
                                    acc.id,
                                    folder.clone(),
                                    flags.clone(),
                                    *create,
                                )],
                                queue: None,
                                trace: Vec::new(),
                            });
                        }
                    }
                    for snd in &p.sends {
                        let what = if snd.auto_reply {
                            "vacation reply"
                        } else {
                            "redirected copy"
                        };
                        let (bytes, rp) = match (snd.message, &plans.raw) {
                            (0, Some(raw)) => (raw.to_vec(), return_path_len),
                            (0, None) => continue,
                            (n, _) => match p.messages.get(n - 1) {
                                Some(b) => with_return_path(&snd.sender, b),
                                None => continue,
                            },
                        };
                        if let Some(d) = send_delivery(
                            snd.auto_reply,
                            bytes,
                            rp,
                            &snd.sender,
                            &snd.dests,
                            &trace_id,
                            what,
                            &mut trace,
                        )
                        .await
                        {
                            extra.push(d);
                        }
                    }
                }
                Destination::Remote(addr) => {
                    taken = true;
                    if !remote.iter().any(|r| r.address == *addr) {
                        trace.push(
                            TraceEvent::new(
                                &trace_id,
                                "queued",
                                format!("for {addr}, to be sent on"),
                            )
                            .key(format!("to:{addr}")),
                        );
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
    // Every recipient's filter rejected it: refuse it now, so the sender's server tells them.
    if !taken && !rejections.is_empty() {
        // The script's words, as one short ASCII line (RFC 5321 4.5.3.1.5).
        let reason: String = rejections
            .iter()
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("; ")
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    ' '
                }
            })
            .take(300)
            .collect();
        let reply = Reply::new(
            550,
            "5.7.1",
            format!("Rejected by the recipient's mail filter: {reason}"),
        );
        trace.push(TraceEvent::new(&trace_id, "refused", reply.summary()));
        let _ = store.trace_append(trace).await;
        if let BlobData::File(p) = &msg.data {
            let _ = std::fs::remove_file(p);
        }
        return (reply, Ok(()));
    }
    // Rejected for some only: the sender is told by a notice.
    for p in plans.by_account.values() {
        if let Some((n, dests)) = &p.reject_notice {
            let (bytes, rp) = with_return_path("", n);
            if let Some(d) = send_delivery(
                true,
                bytes,
                rp,
                "",
                dests,
                &trace_id,
                "rejection notice",
                &mut trace,
            )
            .await
            {
                extra.push(d);
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
    let (data, meta) = with_meta(msg.data).await;
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
    let nothing_to_store = local == 0 && !queued;
    let result = if extra.is_empty() {
        store.deliver(delivery).await.map(|r| vec![r])
    } else {
        let mut all = vec![delivery];
        all.append(&mut extra);
        store.deliver_many(all).await
    };
    match result {
        Ok(mut reps) => {
            let rep = reps.swap_remove(0);
            let stored = rep.targets.iter().filter(|t| t.is_ok()).count() as u64;
            postern_net::metrics::METRICS
                .delivered_local
                .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
            for (t, r) in target_accounts.iter().zip(&rep.targets) {
                if r.is_ok() {
                    quota_warning(store, t, size).await;
                }
            }
            let failed = rep.targets.iter().filter(|t| t.is_err()).count();
            if nothing_to_store {
                (
                    Reply::new(250, "2.0.0", format!("OK: filtered as {trace_id}")),
                    Ok(()),
                )
            } else if failed == local && !queued {
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
