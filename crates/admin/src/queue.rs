//! The outbound queue (list, show, retry, delete, bounce) and the message trace.

use postern_directory::{Directory, normalize_address};
use postern_store::QueueEntry;

use crate::{AdminError, AdminReply, QueueInfo, done};

/// The queue, by id.
pub(crate) async fn list(d: &Directory) -> Result<Vec<QueueInfo>, AdminError> {
    let mut entries: Vec<QueueInfo> = d.store().queue_list().await?.iter().map(info).collect();
    entries.sort_by_key(|e| e.id);
    Ok(entries)
}

pub(crate) async fn show(d: &Directory, id: u64) -> Result<AdminReply, AdminError> {
    let e = entry(d, id).await?;
    Ok(AdminReply::Queue {
        entries: vec![info(&e)],
    })
}

/// Try now: one entry, or all of them.
pub(crate) async fn retry(d: &Directory, id: Option<u64>) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let entries = match id {
        Some(id) => vec![entry(d, id).await?],
        None => store.queue_list().await?,
    };
    let n = entries.len();
    for mut e in entries {
        e.next_attempt = postern_store::now();
        store.queue_update(e).await?;
    }
    done(format!("{n} queued message(s) will be tried now"))
}

pub(crate) async fn delete(d: &Directory, id: u64) -> Result<AdminReply, AdminError> {
    entry(d, id).await?;
    d.store().queue_delete(id).await?;
    done(format!(
        "queued message {id} deleted without notice to the sender"
    ))
}

pub(crate) async fn bounce(d: &Directory, id: u64) -> Result<AdminReply, AdminError> {
    let mut e = entry(d, id).await?;
    e.bounce = true;
    e.next_attempt = postern_store::now();
    d.store().queue_update(e).await?;
    done(format!(
        "queued message {id} will be returned to its sender"
    ))
}

async fn entry(d: &Directory, id: u64) -> Result<QueueEntry, AdminError> {
    d.store()
        .queue_get(id)
        .await?
        .ok_or_else(|| AdminError::new(format!("no queued message {id}; see: postern queue list")))
}

fn info(e: &QueueEntry) -> QueueInfo {
    QueueInfo {
        id: e.id,
        trace_id: e.trace_id.clone(),
        sender: e.sender.clone(),
        recipients: e
            .recipients
            .iter()
            .map(|r| {
                let state = match r.state {
                    postern_store::RecipientState::Pending => "pending",
                    postern_store::RecipientState::Delivered => "delivered",
                    postern_store::RecipientState::Failed => "failed",
                };
                (r.address.clone(), state.to_string(), r.last_error.clone())
            })
            .collect(),
        size: e.size,
        created: e.created,
        next_attempt: e.next_attempt,
        attempts: e.attempts,
        last_error: e.last_error.clone(),
    }
}

/// Messages and their stories, by any of: trace id, Message-ID, sender, recipient; each
/// given one narrows the search.
pub(crate) async fn trace(
    d: &Directory,
    id: Option<String>,
    message_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since_secs: Option<u64>,
    limit: usize,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let now_ms = postern_store::now() * 1000;
    let since = since_secs
        .map(|s| now_ms.saturating_sub((s.min(1 << 40) as i64).saturating_mul(1000)))
        .unwrap_or(0);
    let limit = limit.clamp(1, 1000);
    let norm = |a: String| normalize_address(&a).unwrap_or_else(|_| a.to_ascii_lowercase());
    let mut sets: Vec<Vec<String>> = Vec::new();
    if let Some(id) = id {
        sets.push(vec![id.trim().to_ascii_uppercase()]);
    }
    if let Some(m) = message_id {
        let m = m.trim().trim_start_matches('<').trim_end_matches('>');
        sets.push(
            store
                .trace_find(&format!("mid:<{m}>"), since, limit)
                .await?,
        );
    }
    if let Some(f) = from {
        let key = format!("from:{}", norm(f));
        sets.push(store.trace_find(&key, since, limit).await?);
    }
    if let Some(t) = to {
        let key = format!("to:{}", norm(t));
        sets.push(store.trace_find(&key, since, limit).await?);
    }
    let ids: Vec<String> = match sets.split_first() {
        None => store.trace_recent(since, limit).await?,
        Some((first, rest)) => first
            .iter()
            .filter(|id| rest.iter().all(|s| s.contains(id)))
            .cloned()
            .collect(),
    };
    let mut traces = Vec::new();
    for id in ids.into_iter().take(limit) {
        let events = store.trace_get(&id).await?;
        if !events.is_empty() {
            traces.push((id, events));
        }
    }
    Ok(AdminReply::Traces { traces })
}
