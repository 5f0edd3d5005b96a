//! Events between nodes: a commit announces its events with NOTIFY, and every node listens
//! and passes other nodes' events on as if they were its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Transaction;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;

use super::{Prepared, json, pg};
use crate::*;

/// The channel commits announce their events on.
pub(super) const CHANNEL: &str = "postern_events";
/// Events per notification: a payload stays well under PostgreSQL's 8000 bytes.
const EVENTS_PER_NOTIFY: usize = 40;
/// Bytes of events per notification.
const NOTIFY_BYTES: usize = 6000;

#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    node: String,
    /// This node's number for the commit.
    #[serde(default)]
    commit: u64,
    events: Vec<StoreEvent>,
}

/// Commits whose events this node passed on itself, by number, and when.
pub(super) type Announced = Arc<Mutex<HashMap<u64, std::time::Instant>>>;

/// How long an own commit's announcement waits for the writer to have passed its events on.
const OWN_EVENTS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Listens for other nodes' events and passes them on as if they were ours; reconnects when
/// the connection drops. This node's own events are passed on by the writer after its commit;
/// when the writer was cancelled while committing, its announcement passes them on instead.
pub(super) async fn listen(
    url: String,
    node: String,
    events: broadcast::Sender<StoreEvent>,
    announced: Announced,
) {
    let mut reconnecting = false;
    loop {
        if let Ok((client, mut conn)) = tokio_postgres::connect(&url, NoTls).await {
            // The connection is driven here, in this task: aborting it ends both.
            let sql = format!("LISTEN {CHANNEL}");
            let mut listening = std::pin::pin!(client.batch_execute(&sql));
            let mut listened = false;
            loop {
                tokio::select! {
                    r = &mut listening, if !listened => {
                        if r.is_err() {
                            break;
                        }
                        listened = true;
                        // What other nodes announced while this node was not listening is
                        // lost: every session looks again.
                        if reconnecting {
                            let _ = events.send(StoreEvent::Missed);
                        }
                    }
                    m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let Ok(a) = serde_json::from_str::<Announcement>(n.payload()) else {
                                continue;
                            };
                            if a.node != node {
                                for e in a.events {
                                    let _ = events.send(e);
                                }
                            } else if !announced.lock().unwrap().contains_key(&a.commit) {
                                let (events, announced) = (events.clone(), announced.clone());
                                tokio::spawn(async move {
                                    tokio::time::sleep(OWN_EVENTS_GRACE).await;
                                    if !announced.lock().unwrap().contains_key(&a.commit) {
                                        for e in a.events {
                                            let _ = events.send(e);
                                        }
                                    }
                                });
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
        }
        reconnecting = true;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Sends a transaction's events to every listening node: delivered when (and only if) it
/// commits.
pub(super) async fn announce(
    tx: &Transaction<'_>,
    node: &str,
    commit: u64,
    events: &[StoreEvent],
) -> Result<()> {
    // A node of an older build cannot read an Acl or Metadata event, and drops the whole
    // notification holding one: those go in notifications of their own.
    let (acl, others): (Vec<StoreEvent>, Vec<StoreEvent>) = events
        .iter()
        .cloned()
        .partition(|e| matches!(e, StoreEvent::Acl { .. } | StoreEvent::Metadata { .. }));
    for chunk in chunks(&others).into_iter().chain(chunks(&acl)) {
        let a = Announcement {
            node: node.to_string(),
            commit,
            events: chunk,
        };
        tx.run("SELECT pg_notify($1, $2)", &[&CHANNEL, &json(&a)])
            .await
            .map_err(pg)?;
    }
    Ok(())
}

/// Events split for notifications: at most [`EVENTS_PER_NOTIFY`] and about
/// [`NOTIFY_BYTES`] of them in each (an event larger than that goes alone: PostgreSQL refuses
/// a payload of 8000 bytes or more, and the listeners are told `Missed` instead).
fn chunks(events: &[StoreEvent]) -> Vec<Vec<StoreEvent>> {
    let mut out: Vec<Vec<StoreEvent>> = Vec::new();
    let mut size = 0;
    for e in events {
        let n = json(e).len();
        let e = if n >= NOTIFY_BYTES {
            StoreEvent::Missed
        } else {
            e.clone()
        };
        match out.last_mut() {
            Some(last) if last.len() < EVENTS_PER_NOTIFY && size + n < NOTIFY_BYTES => {
                size += n;
                last.push(e);
            }
            _ => {
                size = n;
                out.push(vec![e]);
            }
        }
    }
    out
}

/// This node passed the commit's events on itself: its own announcement is not passed on again.
pub(super) fn passed_on(announced: &Announced, commit: u64) {
    let now = std::time::Instant::now();
    let mut announced = announced.lock().unwrap();
    if announced.len() >= 4096 {
        announced.retain(|_, at| now.duration_since(*at) < OWN_EVENTS_GRACE * 10);
    }
    announced.insert(commit, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_events_are_split_and_an_oversized_one_becomes_missed() {
        let meta = |n: usize| StoreEvent::Metadata {
            keeper: 1,
            mailbox: Some(2),
            names: vec![format!("/private/{}", "x".repeat(n))],
        };
        let events: Vec<StoreEvent> = (0..10).map(|_| meta(1000)).collect();
        let c = chunks(&events);
        assert!(c.len() >= 2, "{}", c.len());
        assert!(c.iter().all(|c| json(c).len() < NOTIFY_BYTES + 1100));
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 10);
        let c = chunks(&[meta(9000)]);
        assert_eq!(c, vec![vec![StoreEvent::Missed]]);
    }

    #[test]
    fn acl_events_go_through() {
        let a = Announcement {
            node: "n".into(),
            commit: 7,
            events: vec![StoreEvent::Acl {
                account: 3,
                mailbox: 9,
            }],
        };
        let back: Announcement = serde_json::from_str(&json(&a)).unwrap();
        assert_eq!(back.events, a.events);
        assert_eq!(back.commit, 7);
    }
}
