//! The webmail's API under `/me/mail`: the logged-in user's folders, the message list of one
//! (sorted, paged, searched), actions on messages, and the live events of the account. Reading
//! a message is in `read`, the event stream in `events`. Every folder named here must be the
//! user's own.

mod compose;
mod events;
mod read;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use postern_message::text::SearchText;
use postern_message::view::Summary;
use postern_store::{
    FlagOp, Flags, FlagsUpdate, Mailbox, MessageEntry, SharedStore, SpecialUse, StoreError, Uid,
};
use serde::Deserialize;

use super::{Call, error, json, refuse};
use crate::AppState;

pub(super) use compose::{contacts, draft, send};
pub(super) use events::events;
pub(super) use read::{html, part, raw, read, trust_images};

/// How much of a message the list reads for its preview and attachment mark.
const SUMMARY_BYTES: u64 = 64 << 10;

fn store(st: &AppState) -> &SharedStore {
    st.directory.store()
}

fn failed(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => error(StatusCode::NOT_FOUND, &format!("{m} not found")),
        StoreError::AlreadyExists(m) => error(StatusCode::CONFLICT, &format!("{m} already exists")),
        StoreError::Invalid(m) => error(StatusCode::BAD_REQUEST, &m),
        e => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The user's folder named by the `{folder}` of the path.
async fn folder(st: &AppState, c: &Call) -> Result<Mailbox, Response> {
    let id = c.param("folder");
    let missing = || error(StatusCode::NOT_FOUND, &format!("no folder {id}"));
    let Ok(n) = id.parse() else {
        return Err(missing());
    };
    match store(st).mailbox_get(n).await {
        Ok(Some(m)) if m.account == c.me().id => Ok(m),
        Ok(_) => Err(missing()),
        Err(e) => Err(failed(e)),
    }
}

/// The folder of a special use, made when the account has none.
async fn special(st: &AppState, c: &Call, using: SpecialUse) -> Result<Mailbox, StoreError> {
    let me = c.me().id;
    let store = store(st);
    let all = store.mailbox_list(me).await?;
    if let Some(m) = all.into_iter().find(|m| m.special_use == Some(using)) {
        return Ok(m);
    }
    let name = match using {
        SpecialUse::Drafts => "Drafts",
        SpecialUse::Sent => "Sent",
        SpecialUse::Trash => "Trash",
        SpecialUse::Junk => "Junk",
        SpecialUse::Archive => "Archive",
    };
    match store.mailbox_by_name(me, name).await? {
        Some(m) => Ok(m),
        None => store.mailbox_create(me, name, Some(using)).await,
    }
}

fn special_name(u: Option<SpecialUse>) -> Option<&'static str> {
    u.map(|u| match u {
        SpecialUse::Drafts => "drafts",
        SpecialUse::Sent => "sent",
        SpecialUse::Trash => "trash",
        SpecialUse::Junk => "junk",
        SpecialUse::Archive => "archive",
    })
}

/// Where a folder goes in the list: INBOX, then the special-use folders, then the tree.
fn rank(m: &Mailbox) -> u8 {
    if m.name == "INBOX" {
        return 0;
    }
    match m.special_use {
        Some(SpecialUse::Drafts) => 1,
        Some(SpecialUse::Sent) => 2,
        Some(SpecialUse::Archive) => 3,
        Some(SpecialUse::Junk) => 4,
        Some(SpecialUse::Trash) => 5,
        None => 6,
    }
}

fn folder_json(m: &Mailbox) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "name": m.name,
        "special_use": special_name(m.special_use),
        "messages": m.messages,
        "unseen": m.unseen,
    })
}

pub(super) async fn folders(st: Arc<AppState>, c: Call) -> Response {
    match store(&st).mailbox_list(c.me().id).await {
        Ok(mut list) => {
            list.sort_by(|a, b| (rank(a), &a.name).cmp(&(rank(b), &b.name)));
            let v: Vec<_> = list.iter().map(folder_json).collect();
            json(StatusCode::OK, &serde_json::json!({ "folders": v }))
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

/// A folder name a user may give: '/' separates levels, none empty.
fn valid_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 200
        || name.split('/').any(|p| p.trim().is_empty())
        || name.chars().any(|c| c.is_control() || c == '*' || c == '%')
    {
        return Err(
            "a folder name is up to 200 characters, levels separated by '/', none empty, without * or %",
        );
    }
    Ok(if name.eq_ignore_ascii_case("inbox") {
        "INBOX".into()
    } else {
        name.to_string()
    })
}

pub(super) async fn folder_create(st: Arc<AppState>, c: Call) -> Response {
    let b = match c.body::<NameBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let name = match valid_name(&b.name) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let store = store(&st);
    match store.mailbox_create(c.me().id, &name, None).await {
        Ok(m) => {
            let _ = store.subscription_set(c.me().id, &name, true).await;
            json(StatusCode::CREATED, &folder_json(&m))
        }
        Err(e) => failed(e),
    }
}

pub(super) async fn folder_rename(st: Arc<AppState>, c: Call) -> Response {
    let m = match folder(&st, &c).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let b = match c.body::<NameBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let name = match valid_name(&b.name) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if m.name == "INBOX" || m.special_use.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "INBOX and the special folders (Sent, Drafts, Trash, Junk, Archive) keep their names",
        );
    }
    let store = store(&st);
    match store.mailbox_rename(m.id, &name).await {
        Ok(()) => match store.mailbox_get(m.id).await {
            Ok(Some(m)) => json(StatusCode::OK, &folder_json(&m)),
            Ok(None) => error(StatusCode::NOT_FOUND, "the folder went meanwhile"),
            Err(e) => failed(e),
        },
        Err(e) => failed(e),
    }
}

pub(super) async fn folder_delete(st: Arc<AppState>, c: Call) -> Response {
    let m = match folder(&st, &c).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if m.name == "INBOX" || m.special_use.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "INBOX and the special folders (Sent, Drafts, Trash, Junk, Archive) cannot be deleted",
        );
    }
    let store = store(&st);
    match store.mailbox_delete(m.id).await {
        Ok(()) => {
            let _ = store.subscription_set(c.me().id, &m.name, false).await;
            json(
                StatusCode::OK,
                &serde_json::json!({"kind": "done", "message": format!("folder {} deleted", m.name)}),
            )
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize, Default)]
struct ListQuery {
    /// date (default), from, subject, size.
    sort: Option<String>,
    /// Oldest or smallest first.
    #[serde(default)]
    asc: bool,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Each conversation's messages together, where its first stands in the order.
    #[serde(default)]
    threads: bool,
    // Search keys: any given must match.
    from: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    /// Days, YYYY-MM-DD: arrived on or after `since`, before `before`.
    since: Option<String>,
    before: Option<String>,
}

/// The midnight (UTC) starting a YYYY-MM-DD day.
fn day_of(s: &str) -> Option<i64> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &f).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp())
}

fn flags_json(f: &Flags) -> serde_json::Value {
    serde_json::json!({
        "seen": f.seen(),
        "flagged": f.has(Flags::FLAGGED),
        "answered": f.has(Flags::ANSWERED),
        "draft": f.has(Flags::DRAFT),
    })
}

fn line_json(e: &MessageEntry, s: &Summary) -> serde_json::Value {
    let (thread, _) = postern_message::sort::base_subject(&s.subject);
    serde_json::json!({
        "uid": e.uid,
        "from": s.from,
        "to": s.to,
        "subject": s.subject,
        "date": s.date.unwrap_or(e.internal_date),
        "arrived": e.internal_date,
        "size": e.size,
        "flags": flags_json(&e.flags),
        "attachments": s.attachments,
        "preview": s.preview,
        "thread": thread,
    })
}

/// The page of a folder's messages: newest first unless asked otherwise. By date the store's
/// records alone give the order (arrival); only the page's messages are read.
pub(super) async fn messages(st: Arc<AppState>, c: Call) -> Response {
    let started = std::time::Instant::now();
    let m = match folder(&st, &c).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let q = match c.query::<ListQuery>() {
        Ok(q) => q,
        Err(r) => return refuse(r),
    };
    let store = store(&st);
    let mut all = match store.message_list(m.id).await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    all.retain(|e| !e.flags.deleted());
    let searching = q.from.is_some() || q.subject.is_some() || q.body.is_some();
    if let Some(d) = q.since.as_deref().and_then(day_of) {
        all.retain(|e| e.internal_date >= d);
    }
    if let Some(d) = q.before.as_deref().and_then(day_of) {
        all.retain(|e| e.internal_date < d);
    }
    if searching && let Err(e) = search(store, &mut all, &q).await {
        return failed(e);
    }
    let sort = q.sort.as_deref().unwrap_or("date");
    match sort {
        "date" => all.sort_by_key(|e| (e.internal_date, e.uid)),
        "size" => all.sort_by_key(|e| (e.size, e.uid)),
        "from" | "subject" => {
            if let Err(e) = sort_by_header(store, &mut all, sort == "from").await {
                return failed(e);
            }
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("sort by date, from, subject or size, not {other:?}"),
            );
        }
    }
    if !q.asc {
        all.reverse();
    }
    if q.threads
        && let Err(e) = by_thread(store, &mut all).await
    {
        return failed(e);
    }
    let total = all.len();
    let limit = q.limit.unwrap_or(50).clamp(1, st.config.http.mail_page_max);
    let page: Vec<&MessageEntry> = all.iter().skip(q.offset).take(limit).collect();
    let mut lines = Vec::with_capacity(page.len());
    for e in page {
        let head = store
            .blob_read(e.blob, 0, e.size.min(SUMMARY_BYTES))
            .await
            .unwrap_or_default();
        lines.push(line_json(e, &postern_message::view::summary(&head)));
    }
    let mut r = json(
        StatusCode::OK,
        &serde_json::json!({
            "folder": folder_json(&m),
            "total": total,
            "offset": q.offset,
            "messages": lines,
        }),
    );
    // The server's own time for the page (scripts/bench webmail reads it).
    let took = format!("list;dur={:.1}", started.elapsed().as_secs_f64() * 1000.0);
    if let Ok(v) = axum::http::HeaderValue::from_str(&took) {
        r.headers_mut().insert("server-timing", v);
    }
    r
}

/// Keeps the messages the search keys match, read as IMAP SEARCH reads them (FROM and
/// SUBJECT from the header, BODY from the text parts).
async fn search(
    store: &SharedStore,
    all: &mut Vec<MessageEntry>,
    q: &ListQuery,
) -> Result<(), StoreError> {
    let mut keep = Vec::with_capacity(all.len());
    for chunk in all.chunks(512) {
        let texts: Vec<SearchText> = if q.body.is_some() {
            let mut v = Vec::with_capacity(chunk.len());
            for e in chunk {
                v.push(SearchText::load(
                    &store.blob_read(e.blob, 0, e.size).await?,
                    true,
                ));
            }
            v
        } else {
            let blobs: Vec<u64> = chunk.iter().map(|e| e.blob).collect();
            store
                .blob_heads(&blobs, postern_message::MessageMeta::header_len_of)
                .await?
                .into_iter()
                .map(|h| h.map(|b| SearchText::load(&b, false)).unwrap_or_default())
                .collect()
        };
        for (e, t) in chunk.iter().zip(texts) {
            let hit = q.from.as_deref().is_none_or(|v| t.header_has("from", v))
                && q.subject
                    .as_deref()
                    .is_none_or(|v| t.header_has("subject", v))
                && q.body.as_deref().is_none_or(|v| t.body_has(v));
            if hit {
                keep.push(e.clone());
            }
        }
    }
    *all = keep;
    Ok(())
}

/// Sorts by sender or base subject as IMAP SORT compares them (i;unicode-casemap).
async fn sort_by_header(
    store: &SharedStore,
    all: &mut [MessageEntry],
    by_from: bool,
) -> Result<(), StoreError> {
    let mut keys = Vec::with_capacity(all.len());
    for chunk in all.chunks(512) {
        let blobs: Vec<u64> = chunk.iter().map(|e| e.blob).collect();
        for h in store
            .blob_heads(&blobs, postern_message::MessageMeta::header_len_of)
            .await?
        {
            let f = h
                .map(|b| postern_message::sort::sort_fields(&b))
                .unwrap_or_default();
            keys.push(if by_from { f.display_from } else { f.subject });
        }
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| (&keys[a], all[a].uid).cmp(&(&keys[b], all[b].uid)));
    let sorted: Vec<MessageEntry> = order.into_iter().map(|i| all[i].clone()).collect();
    all.clone_from_slice(&sorted);
    Ok(())
}

/// Gathers each conversation's messages (one base subject, as IMAP THREAD=ORDEREDSUBJECT
/// groups them) where its first message in the current order stands. Reads every header, as
/// THREAD does.
async fn by_thread(store: &SharedStore, all: &mut Vec<MessageEntry>) -> Result<(), StoreError> {
    let mut keys = Vec::with_capacity(all.len());
    for chunk in all.chunks(512) {
        let blobs: Vec<u64> = chunk.iter().map(|e| e.blob).collect();
        for h in store
            .blob_heads(&blobs, postern_message::MessageMeta::header_len_of)
            .await?
        {
            keys.push(
                h.map(|b| postern_message::sort::sort_fields(&b).subject)
                    .unwrap_or_default(),
            );
        }
    }
    let mut groups: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    let mut firsts: Vec<&str> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let g = groups.entry(k.as_str()).or_default();
        if g.is_empty() {
            firsts.push(k.as_str());
        }
        g.push(i);
    }
    let gathered: Vec<MessageEntry> = firsts
        .iter()
        .flat_map(|k| groups[k].iter().map(|&i| all[i].clone()))
        .collect();
    *all = gathered;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    uids: Vec<Uid>,
    /// seen, unseen, flag, unflag, move, delete, junk, notjunk.
    action: String,
    /// The folder of a move.
    #[serde(default)]
    to: Option<u64>,
}

/// One action on many messages of a folder.
pub(super) async fn act(st: Arc<AppState>, c: Call) -> Response {
    let m = match folder(&st, &c).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let b = match c.body::<ActionBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let mut uids = b.uids;
    uids.sort_unstable();
    uids.dedup();
    if uids.is_empty() {
        return error(StatusCode::BAD_REQUEST, "choose one or more messages");
    }
    let store = store(&st);
    let flag = |bits: u8, op: FlagOp| FlagsUpdate {
        mailbox: m.id,
        uids: uids.clone(),
        op,
        flags: Flags {
            bits,
            keywords: Vec::new(),
        },
        unchanged_since: None,
        reader: None,
    };
    let target = match b.action.as_str() {
        "seen" | "unseen" | "flag" | "unflag" => {
            let (bits, op) = match b.action.as_str() {
                "seen" => (Flags::SEEN, FlagOp::Add),
                "unseen" => (Flags::SEEN, FlagOp::Remove),
                "flag" => (Flags::FLAGGED, FlagOp::Add),
                _ => (Flags::FLAGGED, FlagOp::Remove),
            };
            return match store.flags_update(flag(bits, op)).await {
                Ok(r) => json(
                    StatusCode::OK,
                    &serde_json::json!({"kind": "done", "changed": r.updated.len()}),
                ),
                Err(e) => failed(e),
            };
        }
        "move" => {
            let Some(to) = b.to else {
                return error(StatusCode::BAD_REQUEST, "a move needs \"to\": a folder id");
            };
            match store.mailbox_get(to).await {
                Ok(Some(t)) if t.account == c.me().id => Ok(t),
                Ok(_) => return error(StatusCode::NOT_FOUND, &format!("no folder {to}")),
                Err(e) => Err(e),
            }
        }
        "delete" if m.special_use == Some(SpecialUse::Trash) => {
            return match store.expunge(m.id, uids).await {
                Ok(gone) => json(
                    StatusCode::OK,
                    &serde_json::json!({"kind": "done", "changed": gone.len()}),
                ),
                Err(e) => failed(e),
            };
        }
        "delete" => special(&st, &c, SpecialUse::Trash).await,
        "junk" => special(&st, &c, SpecialUse::Junk).await,
        "notjunk" => match store.mailbox_by_name(c.me().id, "INBOX").await {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err(StoreError::NotFound("INBOX".into())),
            Err(e) => Err(e),
        },
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "no action {other:?}: seen, unseen, flag, unflag, move, delete, junk, notjunk"
                ),
            );
        }
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    if target.id == m.id {
        return json(
            StatusCode::OK,
            &serde_json::json!({"kind": "done", "changed": 0}),
        );
    }
    match store.copy(m.id, uids, target.id, true).await {
        Ok(pairs) => {
            let moved: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
            postern_ingest::junk::learn(&**store, m.special_use, &target, &moved).await;
            json(
                StatusCode::OK,
                &serde_json::json!({"kind": "done", "changed": pairs.len(), "to": target.id}),
            )
        }
        Err(e) => failed(e),
    }
}
