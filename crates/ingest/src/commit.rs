//! The commit of an arrived message: one atomic, durable write for every local recipient's
//! copy, the remote recipients' queue entry, what filters send, and the trace.

use std::collections::HashMap;

use postern_directory::Destination;
use postern_store::{
    Account, AccountId, Delivery, DeliveryTarget, DsnRet, Flags, NewQueueEntry, QueueRecipient,
    RecipientState, SharedStore, StoreError, TraceEvent,
};

use crate::prepared::{Prepared, into_folder};
use crate::raw::Raw;
use crate::route::{Plans, keep_folder};
use crate::send_as::SentAs;
use crate::{Recipient, Status};

/// The envelope of an arrived message.
pub struct Envelope {
    /// The sender; empty for the null sender.
    pub from: String,
    pub envid: Option<String>,
    pub ret: Option<DsnRet>,
    pub rcpts: Vec<Recipient>,
    /// RFC 8689: the message goes on only over TLS with a checked certificate.
    pub requiretls: bool,
}

/// What the trace says about how a message arrived.
pub struct Arrival {
    pub trace_id: String,
    /// "on the MX listener from client.test [192.0.2.1] over TLS1.3 (...)".
    pub text: String,
    pub message_id: Option<String>,
    /// What the inbound checks found (mail from other servers).
    pub checks: Option<String>,
}

/// The arrival's trace: received (with search keys), checked, and routed through aliases.
pub fn arrival_events(env: &Envelope, arrival: &Arrival, size: u64) -> Vec<TraceEvent> {
    let id = arrival.trace_id.as_str();
    let sender = if env.from.is_empty() {
        "<>".to_string()
    } else {
        format!("<{}>", env.from)
    };
    let list: Vec<&str> = env.rcpts.iter().map(|a| a.address.as_str()).collect();
    let mut received = TraceEvent::new(
        id,
        "received",
        format!(
            "{}, {size} bytes, sender {sender}, {} recipient(s): {}{}",
            arrival.text,
            list.len(),
            list.join(", "),
            arrival
                .message_id
                .as_deref()
                .map(|m| format!(", Message-ID {m}"))
                .unwrap_or_default()
        ),
    )
    .key(format!("from:{}", env.from.to_ascii_lowercase()));
    if let Some(m) = &arrival.message_id {
        received = received.key(format!("mid:{m}"));
    }
    for a in &env.rcpts {
        received = received.key(format!("to:{}", a.address));
    }
    let mut events = vec![received];
    if let Some(c) = &arrival.checks {
        events.push(TraceEvent::new(id, "checked", c.clone()));
    }
    for a in &env.rcpts {
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

/// A refusal after the message arrived, in the trace (the client got an id).
pub fn refusal_event(env: &Envelope, trace_id: &str, text: String) -> TraceEvent {
    let mut e = TraceEvent::new(trace_id, "refused", text)
        .key(format!("from:{}", env.from.to_ascii_lowercase()));
    for a in &env.rcpts {
        e = e.key(format!("to:{}", a.address));
    }
    e
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

/// A message a filter sends (redirect, vacation reply, rejection notice): stored for our own
/// users, queued for the rest, committed together with the message that caused it.
#[allow(clippy::too_many_arguments)]
fn send_delivery(
    ours: bool,
    message: Prepared,
    return_path_len: usize,
    sender: &str,
    dests: &[Destination],
    trace_id: &str,
    what: &str,
    trace: &mut Vec<TraceEvent>,
) -> Option<Delivery> {
    let mut targets: Vec<DeliveryTarget> = Vec::new();
    let mut recipients: Vec<QueueRecipient> = Vec::new();
    for d in dests {
        match d {
            Destination::Local(acc) => {
                if !targets.iter().any(|t| t.account == acc.id) {
                    targets.push(into_folder(
                        acc.id,
                        postern_store::INBOX,
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
    let queue = (!recipients.is_empty()).then(|| NewQueueEntry {
        sender: sender.to_string(),
        recipients,
        envid: None,
        ret: None,
        trace_id: trace_id.to_string(),
        // Vacation replies and notices are ours to sign; redirected mail is not.
        authenticated: ours.then(|| "postern (automatic reply)".to_string()),
        requiretls: false,
        body_offset: return_path_len as u64,
    });
    Some(message.deliver(postern_store::now(), targets, queue, Vec::new()))
}

/// The Return-Path line local copies of a filter's own messages start with.
fn with_return_path(sender: &str, body: &[u8]) -> (Vec<u8>, usize) {
    let rp = postern_message::return_path_header(sender);
    let mut v = Vec::with_capacity(rp.len() + body.len());
    v.extend_from_slice(rp.as_bytes());
    v.extend_from_slice(body);
    (v, rp.len())
}

/// The message as it will be stored: its final bytes and structure.
pub struct Stored {
    pub raw: Raw,
    pub meta: Vec<u8>,
    /// The Return-Path field it starts with (empty when no local copy needs one).
    pub return_path: Vec<u8>,
}

/// Who else is involved in the commit.
pub struct Commit<'a> {
    pub store: &'a SharedStore,
    /// Who vouches for the message (a logged-in user, a relay network): queued copies are
    /// signed as ours.
    pub submitter: Option<&'a str>,
    /// The envelope sender of queued copies when not the original (SRS).
    pub queue_sender: Option<String>,
    pub folders: &'a HashMap<AccountId, String>,
    pub plans: Plans,
    /// Who the user sent it as, and the Sent copies of shared mailboxes it was sent as.
    pub sent_as: SentAs,
}

/// Stores the message for every local destination and queues it for remote ones, in one
/// commit. Returns the status for the client, and the storage error if any.
pub async fn commit(
    c: Commit<'_>,
    env: &Envelope,
    arrival: &Arrival,
    msg: Stored,
) -> (Status, Result<(), StoreError>) {
    let Commit {
        store,
        submitter,
        queue_sender,
        folders,
        plans,
        sent_as,
    } = c;
    let rp_len = msg.return_path.len();
    let size = msg.raw.len();
    let mut targets: Vec<DeliveryTarget> = Vec::new();
    // The account of each target, in order (for the quota note).
    let mut target_accounts: Vec<Account> = Vec::new();
    let mut remote: Vec<QueueRecipient> = Vec::new();
    let mut handled: Vec<AccountId> = Vec::new();
    let mut extra: Vec<Delivery> = Vec::new();
    let mut trace = arrival_events(env, arrival, size);
    trace.extend(sent_as.events(&arrival.trace_id));
    let mut rejections: Vec<(String, String)> = Vec::new();
    let mut taken = false;
    let trace_id = arrival.trace_id.clone();
    for a in &env.rcpts {
        for d in &a.dests {
            match d {
                Destination::Local(acc) => {
                    if handled.contains(&acc.id) {
                        continue;
                    }
                    handled.push(acc.id);
                    let Some(p) = plans.by_account.get(&acc.id) else {
                        let folder = keep_folder(folders, acc.id);
                        trace.push(delivered(&trace_id, &acc.address, &folder));
                        targets.push(into_folder(acc.id, &folder, Flags::default(), false));
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
                            targets.push(into_folder(acc.id, folder, flags.clone(), *create));
                            target_accounts.push(acc.clone());
                        } else if let Some(body) = p.messages.get(m - 1) {
                            // An edited copy, with the original's Return-Path line.
                            let mut bytes = msg.return_path.clone();
                            bytes.extend_from_slice(body);
                            extra.push(Prepared::new(bytes).deliver(
                                postern_store::now(),
                                vec![into_folder(acc.id, folder, flags.clone(), *create)],
                                None,
                                Vec::new(),
                            ));
                        }
                    }
                    for snd in &p.sends {
                        let what = if snd.auto_reply {
                            "vacation reply"
                        } else {
                            "redirected copy"
                        };
                        let (message, rp) = match snd.message {
                            // The message itself: the same bytes again (a spool file linked).
                            0 => match msg.raw.duplicate() {
                                Ok(dup) => (
                                    Prepared::parsed(dup.into_blob(), size, msg.meta.clone()),
                                    rp_len,
                                ),
                                Err(e) => {
                                    let e = StoreError::from_io(e);
                                    return (Status::temporary(&e), Err(e));
                                }
                            },
                            n => match p.messages.get(n - 1) {
                                Some(b) => {
                                    let (bytes, rp) = with_return_path(&snd.sender, b);
                                    (Prepared::new(bytes), rp)
                                }
                                None => continue,
                            },
                        };
                        if let Some(d) = send_delivery(
                            snd.auto_reply,
                            message,
                            rp,
                            &snd.sender,
                            &snd.dests,
                            &trace_id,
                            what,
                            &mut trace,
                        ) {
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
                            orcpt: a.orcpt.clone(),
                            notify: a.notify.clone(),
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
        let status = Status::new(
            550,
            "5.7.1",
            format!("Rejected by the recipient's mail filter: {reason}"),
        );
        trace.push(TraceEvent::new(&trace_id, "refused", status.summary()));
        let _ = store.trace_append(trace).await;
        return (status, Ok(()));
    }
    // Rejected for some only: the sender is told by a notice.
    for p in plans.by_account.values() {
        if let Some((n, dests)) = &p.reject_notice {
            let (bytes, rp) = with_return_path("", n);
            if let Some(d) = send_delivery(
                true,
                Prepared::new(bytes),
                rp,
                "",
                dests,
                &trace_id,
                "rejection notice",
                &mut trace,
            ) {
                extra.push(d);
            }
        }
    }
    let queue = (!remote.is_empty()).then(|| NewQueueEntry {
        sender: queue_sender.unwrap_or_else(|| env.from.clone()),
        recipients: remote,
        envid: env.envid.clone(),
        ret: env.ret,
        trace_id: trace_id.clone(),
        authenticated: submitter.map(str::to_string),
        requiretls: env.requiretls,
        body_offset: rp_len as u64,
    });
    let queued = queue.is_some();
    let local = targets.len();
    // Copies in the Sent folders of shared mailboxes it was sent as: after the recipients'
    // copies, which alone decide the reply.
    for c in sent_as.copies {
        trace.push(
            TraceEvent::new(
                &trace_id,
                "delivered",
                format!(
                    "a copy to {}, folder {} (sent as it), seen",
                    c.account.address, c.folder
                ),
            )
            .key(format!("to:{}", c.account.address)),
        );
        targets.push(c.target);
    }
    let delivery = Prepared::parsed(msg.raw.into_blob(), size, msg.meta).deliver(
        postern_store::now(),
        targets,
        queue,
        trace,
    );
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
            let mut rep = reps.swap_remove(0);
            if let Some(t) = rep.targets.get(local..)
                && let Some(Err(e)) = t.iter().find(|t| t.is_err())
            {
                tracing::warn!(id = %trace_id, error = %e, "no copy in a shared mailbox's Sent folder");
            }
            rep.targets.truncate(local);
            let stored = rep.targets.iter().filter(|t| t.is_ok()).count() as u64;
            let m = &postern_net::metrics::METRICS;
            m.delivered_local
                .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
            let mut domains: Vec<&str> = target_accounts
                .iter()
                .zip(&rep.targets)
                .filter(|(_, r)| r.is_ok())
                .filter_map(|(t, _)| t.address.rsplit_once('@').map(|(_, d)| d))
                .collect();
            domains.sort_unstable();
            domains.dedup();
            for d in domains {
                m.domains.add(&format!("in:{d}"), 1);
            }
            for (t, r) in target_accounts.iter().zip(&rep.targets) {
                if r.is_ok() {
                    crate::notice::quota_warning(store, t, size).await;
                }
            }
            let failed = rep.targets.iter().filter(|t| t.is_err()).count();
            if nothing_to_store {
                (
                    Status::new(250, "2.0.0", format!("OK: filtered as {trace_id}")),
                    Ok(()),
                )
            } else if failed == local && !queued {
                let e = rep
                    .targets
                    .into_iter()
                    .find_map(|t| t.err())
                    .unwrap_or(StoreError::Backend("nothing stored".into()));
                (Status::temporary(&e), Err(e))
            } else {
                let what = match (local > failed, queued) {
                    (true, true) => "delivered and queued",
                    (false, true) => "queued",
                    _ => "delivered",
                };
                (
                    Status::new(250, "2.0.0", format!("OK: {what} as {trace_id}")),
                    Ok(()),
                )
            }
        }
        Err(e) => (Status::temporary(&e), Err(e)),
    }
}
