//! Writing: a message made from what the user wrote (a reply or forward of one of theirs, with
//! files), sent through the server's submission path and kept in Sent; drafts kept in Drafts
//! as they are written; the addresses the user wrote to, for completion.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use postern_message::write::{File, Letter};
use postern_store::{FlagOp, Flags, FlagsUpdate, MetadataLimits, SpecialUse};
use serde::Deserialize;

use super::{failed, special, store};
use crate::api::{Call, error, json, refuse};
use crate::{AppState, Outgoing};

/// Where the addresses a user wrote to are kept: an account entry of the server's METADATA
/// (RFC 5464), so the store's format stays as it is.
const CONTACTS: &str = "/private/vendor/postern/webmail/contacts";
/// Addresses kept for completion, the most recent first.
const CONTACTS_KEPT: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRef {
    folder: u64,
    uid: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    name: String,
    #[serde(default, rename = "type")]
    content_type: String,
    /// Base64.
    data: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeBody {
    /// An address the user may send as; their own by default.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    /// Simple formatting: cleaned as a received message's HTML is.
    #[serde(default)]
    html: Option<String>,
    /// The message this answers: its thread fields, and \Answered once sent.
    #[serde(default)]
    reply_to: Option<MessageRef>,
    /// A message attached whole (forward as attachment).
    #[serde(default)]
    attach: Option<MessageRef>,
    /// A message whose attachments go along (an inline forward).
    #[serde(default)]
    files_of: Option<MessageRef>,
    #[serde(default)]
    attachments: Vec<Upload>,
    /// The draft this replaces (its UID in Drafts), removed once sent or saved again.
    #[serde(default)]
    draft: Option<u32>,
}

/// An address list's entries as header text: one address each, line breaks gone.
fn entries(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|e| e.split([',', ';']))
        .map(|e| e.replace(['\r', '\n'], " ").trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// The addresses (local@domain) of header entries.
fn addresses(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|e| postern_message::address::parse_list(e))
        .filter_map(|a| Some(format!("{}@{}", a.mailbox?, a.host?)))
        .collect()
}

async fn original(
    st: &AppState,
    c: &Call,
    r: &MessageRef,
) -> Result<(u64, u32, Vec<u8>), Response> {
    let store = store(st);
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            "the message answered or attached is gone",
        )
    };
    match store.mailbox_get(r.folder).await {
        Ok(Some(m)) if m.account == c.me().id => {}
        Ok(_) => return Err(missing()),
        Err(e) => return Err(failed(e)),
    }
    let e = match store.message_get(r.folder, r.uid).await {
        Ok(Some(e)) => e,
        Ok(None) => return Err(missing()),
        Err(e) => return Err(failed(e)),
    };
    match store.blob_read(e.blob, 0, e.size).await {
        Ok(raw) => Ok((r.folder, r.uid, raw)),
        Err(e) => Err(failed(e)),
    }
}

/// The letter the body describes, and the To, Cc and Bcc addresses.
async fn letter(
    st: &AppState,
    c: &Call,
    b: ComposeBody,
) -> Result<(Letter, Vec<String>), Response> {
    let me = c.me();
    let mut l = Letter {
        from: (
            b.name.unwrap_or_default(),
            b.from
                .filter(|f| !f.trim().is_empty())
                .unwrap_or_else(|| me.address.clone()),
        ),
        to: entries(&b.to),
        cc: entries(&b.cc),
        bcc: entries(&b.bcc),
        subject: b.subject,
        text: b.text,
        html: b
            .html
            .filter(|h| !h.trim().is_empty())
            .map(|h| super::read::clean(&h, &Default::default(), "", false).0),
        ..Letter::default()
    };
    let recipients: Vec<String> = addresses(&l.to)
        .into_iter()
        .chain(addresses(&l.cc))
        .chain(addresses(&l.bcc))
        .collect();
    if let Some(r) = &b.reply_to {
        let (_, _, raw) = original(st, c, r).await?;
        let v = postern_message::view::view(&raw);
        if let Some(id) = v.message_id {
            l.references = v.references;
            l.references.push(id.clone());
            l.in_reply_to = Some(id);
        }
    }
    if let Some(r) = &b.attach {
        let (_, _, raw) = original(st, c, r).await?;
        let v = postern_message::view::view(&raw);
        let name = if v.subject.is_empty() {
            "message.eml".to_string()
        } else {
            format!("{}.eml", v.subject.replace(['/', '\\'], "_"))
        };
        l.messages.push((name, raw));
    }
    if let Some(r) = &b.files_of {
        let (_, _, raw) = original(st, c, r).await?;
        let v = postern_message::view::view(&raw);
        for a in v.attachments.iter().filter(|a| !a.inline) {
            if let Some(p) = postern_message::view::part_content(&raw, a.part) {
                l.files.push(File {
                    name: p.name,
                    content_type: p.content_type,
                    bytes: p.bytes,
                });
            }
        }
    }
    for u in b.attachments {
        let bytes = match base64::engine::general_purpose::STANDARD.decode(u.data.as_bytes()) {
            Ok(b) => b,
            Err(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    &format!("the file {} did not arrive whole (not base64)", u.name),
                ));
            }
        };
        l.files.push(File {
            name: u.name,
            content_type: u.content_type,
            bytes,
        });
    }
    Ok((l, recipients))
}

fn stamp(st: &AppState) -> (String, String) {
    let date = postern_message::rfc5322_date(time::OffsetDateTime::now_utc());
    let id = format!("{}@{}", postern_message::new_trace_id(), st.config.hostname);
    (date, id)
}

/// Keeps a message in one of the user's own folders; its UID there.
async fn keep(
    st: &AppState,
    c: &Call,
    folder: u64,
    raw: Vec<u8>,
    bits: u8,
) -> Result<u32, Response> {
    let flags = Flags {
        bits,
        keywords: Vec::new(),
    };
    let d = postern_ingest::Prepared::new(raw).deliver(
        postern_store::now(),
        vec![postern_ingest::into_mailbox(c.me().id, folder, flags, true)],
        None,
        Vec::new(),
    );
    match store(st).deliver(d).await {
        Ok(mut rep) => match rep.targets.remove(0) {
            Ok((_, uid)) => Ok(uid),
            Err(e) => Err(failed(e)),
        },
        Err(e) => Err(failed(e)),
    }
}

/// Sends what the user wrote, keeps it in Sent, marks what it answers, forgets its draft.
pub(in crate::api) async fn send(st: Arc<AppState>, c: Call) -> Response {
    let b = match c.body::<ComposeBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let Some(submit) = st.hooks.submit.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server takes no mail from the webmail",
        );
    };
    let (reply, draft) = (b.reply_to.as_ref().map(|r| (r.folder, r.uid)), b.draft);
    let (mut l, recipients) = match letter(&st, &c, b).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if recipients.is_empty() {
        return error(StatusCode::BAD_REQUEST, "give at least one recipient");
    }
    let (date, id) = stamp(&st);
    let copy = postern_message::write::build(&l, &date, &id);
    let bcc = std::mem::take(&mut l.bcc);
    let message = postern_message::write::build(&l, &date, &id);
    l.bcc = bcc;
    let out = Outgoing {
        account: c.me().clone(),
        recipients: recipients.clone(),
        message,
    };
    let trace = match submit(out).await {
        Ok(t) => t,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let sent = match special(&st, &c, SpecialUse::Sent).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let kept = keep(&st, &c, sent.id, copy, Flags::SEEN).await;
    let store = store(&st);
    if let Some((folder, uid)) = reply {
        let _ = store
            .flags_update(FlagsUpdate {
                mailbox: folder,
                uids: vec![uid],
                op: FlagOp::Add,
                flags: Flags {
                    bits: Flags::ANSWERED,
                    keywords: Vec::new(),
                },
                unchanged_since: None,
                reader: None,
            })
            .await;
    }
    if let Some(uid) = draft
        && let Ok(d) = special(&st, &c, SpecialUse::Drafts).await
    {
        let _ = store.expunge(d.id, vec![uid]).await;
    }
    remember(&st, &c, &recipients).await;
    if let Err(r) = kept {
        tracing::warn!(status = %r.status(), "a message sent from the webmail was not kept in Sent");
    }
    json(
        StatusCode::OK,
        &serde_json::json!({"kind": "done", "message": format!("sent ({trace})"), "trace_id": trace}),
    )
}

/// Saves what the user is writing in Drafts, in place of its previous draft.
pub(in crate::api) async fn draft(st: Arc<AppState>, c: Call) -> Response {
    let b = match c.body::<ComposeBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let previous = b.draft;
    let (l, _) = match letter(&st, &c, b).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (date, id) = stamp(&st);
    let raw = postern_message::write::build(&l, &date, &id);
    if raw.len() as u64 > st.config.smtp.max_message_size.0 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the draft is larger than a message may be (smtp.max_message_size)",
        );
    }
    let drafts = match special(&st, &c, SpecialUse::Drafts).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let uid = match keep(&st, &c, drafts.id, raw, Flags::DRAFT | Flags::SEEN).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Some(old) = previous {
        let _ = store(&st).expunge(drafts.id, vec![old]).await;
    }
    json(
        StatusCode::OK,
        &serde_json::json!({"kind": "done", "message": "draft saved", "folder": drafts.id, "uid": uid}),
    )
}

fn limits(st: &AppState) -> MetadataLimits {
    let i = &st.config.imap;
    MetadataLimits {
        max_value: i.metadata_max_value.0,
        max_entries: i.metadata_max_entries,
        max_total: i.metadata_max_total.0,
    }
}

/// A list of addresses kept in an account entry of the server's METADATA.
pub(super) async fn list_get(st: &AppState, c: &Call, entry: &str) -> Vec<String> {
    store(st)
        .metadata_get(c.me().id, None, entry, Some(0))
        .await
        .ok()
        .and_then(|v| v.into_iter().find(|e| e.name == entry))
        .and_then(|e| serde_json::from_slice(&e.value).ok())
        .unwrap_or_default()
}

/// Puts `first` at the head of a kept list of addresses, keeping at most `max`.
pub(super) async fn list_add(
    st: &AppState,
    c: &Call,
    entry: &str,
    first: &[String],
    max: usize,
) -> bool {
    let mut list = list_get(st, c, entry).await;
    for a in first.iter().rev() {
        list.retain(|x| !x.eq_ignore_ascii_case(a));
        list.insert(0, a.clone());
    }
    list.truncate(max);
    let value = serde_json::to_vec(&list).unwrap_or_default();
    let r = store(st)
        .metadata_set(
            c.me().id,
            None,
            vec![(entry.to_string(), Some(value))],
            limits(st),
        )
        .await;
    matches!(r, Ok(Ok(())))
}

/// Puts the addresses written to first in the list kept for completion.
async fn remember(st: &AppState, c: &Call, written: &[String]) {
    if !list_add(st, c, CONTACTS, written, CONTACTS_KEPT).await {
        tracing::warn!("the addresses written to were not kept for completion");
    }
}

#[derive(Deserialize, Default)]
struct ContactsQuery {
    #[serde(default)]
    q: String,
}

/// Addresses the user wrote to that hold `q`, the most recent first.
pub(in crate::api) async fn contacts(st: Arc<AppState>, c: Call) -> Response {
    let q = c
        .query::<ContactsQuery>()
        .unwrap_or_default()
        .q
        .to_lowercase();
    let found: Vec<String> = list_get(&st, &c, CONTACTS)
        .await
        .into_iter()
        .filter(|a| a.to_lowercase().contains(&q))
        .take(10)
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "addresses": found }))
}
