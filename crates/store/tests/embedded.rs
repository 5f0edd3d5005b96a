//! The storage conformance suite, run against the embedded backend.

mod suite;

use std::sync::Arc;

use postern_store::embedded::{EmbeddedStore, Options};
use postern_store::*;

fn open(dir: &std::path::Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir, Options::default()).unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            suite::$name(store.clone()).await;
            store.close().await.unwrap();
        }
    )*};
}

conformance!(
    domains,
    accounts,
    aliases,
    mailboxes,
    shared_blob_delivery,
    flags_and_changes,
    copy_and_move,
    quota,
    queue,
    concurrent_writers,
    events,
    disabled_and_passwords,
    trace,
    sieve_scripts,
    deliver_many,
    sender_verdicts,
    queue_claims,
    maildrop_lock,
    crossing_writers,
    counters,
    web_sessions,
    reports,
    subscriptions,
    expunged_kept,
    stats_series,
    acl_lines,
    acl_granted_lists,
    readers_own_seen,
    shares_go_with_what_they_name,
    send_as_grants,
    shared_accounts,
    metadata_entries,
    metadata_limits,
    metadata_follows_mailboxes,
    metadata_shared_entries,
    metadata_events,
    save_dates,
    dav_collections,
    dav_resources,
    dav_sync_changes,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data"));
    suite::backups(store.clone() as Arc<dyn Store>, store.spool_dir()).await;
    store.close().await.unwrap();
}

/// A backup copies every table the store has.
#[test]
fn backups_copy_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let names = postern_store::embedded::backup::tables_for_test(dir.path());
    assert_eq!(names.0, names.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    suite::spooled_message(store.clone() as Arc<dyn Store>, store.spool_dir()).await;
    assert_eq!(
        store.blob_count().unwrap(),
        0,
        "the blob went with its last message"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    match EmbeddedStore::open(dir.path(), Options::default()) {
        Err(StoreError::Locked { pid, .. }) => {
            assert!(pid.contains(&std::process::id().to_string()), "{pid}")
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything_and_drops_uncommitted_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mb, uid, blob_len) = {
        let store = open(dir.path());
        let (a, _) = suite::setup_account(store.clone(), "keep@example.test").await;
        let rep = store
            .deliver(suite::delivery(b"Subject: keep\r\n\r\nme\r\n", &[a.id]))
            .await
            .unwrap();
        let (mb, uid) = rep.targets[0].as_ref().map(|x| *x).unwrap();
        store.close().await.unwrap();
        drop(store);
        (mb, uid, 21u64)
    };
    // Bytes of a batch that never committed, left at the end of the segment.
    let seg = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"garbage of a torn batch");
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), blob_len);
    let e = store.message_get(mb, uid).await.unwrap().unwrap();
    assert_eq!(
        store.blob_read(e.blob, 0, e.size).await.unwrap(),
        b"Subject: keep\r\n\r\nme\r\n"
    );
    store.close().await.unwrap();
}

/// A child process writes, reports what was acknowledged, and is killed with SIGKILL while it
/// keeps writing; everything acknowledged must be there after reopening.
#[test]
fn durable_across_kill_9() {
    if let Ok(dir) = std::env::var("POSTERN_STORE_CHILD") {
        child_writer(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durable_across_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POSTERN_STORE_CHILD", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut acked = Vec::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(l)) = lines.next() {
        if let Some(n) = l.strip_prefix("ACK ") {
            acked.push(n.parse::<u32>().unwrap());
            if acked.len() == 300 {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush.
    unsafe_kill(child.id());
    let _ = child.wait();
    assert_eq!(acked.len(), 300, "child acknowledged writes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(dir.path());
        let a = store
            .account_by_address("crash@example.test")
            .await
            .unwrap()
            .expect("account survived");
        let inbox = store.mailbox_by_name(a.id, "INBOX").await.unwrap().unwrap();
        let list = store.message_list(inbox.id).await.unwrap();
        let mut found = std::collections::HashSet::new();
        for e in &list {
            let b = store.blob_read(e.blob, 0, e.size).await.unwrap();
            let s = String::from_utf8(b).unwrap();
            let n: u32 = s
                .strip_prefix("Subject: n")
                .and_then(|r| r.split("\r\n").next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(found.insert(n), "message {n} stored twice");
        }
        for n in &acked {
            assert!(found.contains(n), "acknowledged message {n} lost");
        }
        assert_eq!(inbox.messages as usize, list.len());
        // The store keeps working after the crash.
        store
            .deliver(suite::delivery(b"Subject: after\r\n\r\nx\r\n", &[a.id]))
            .await
            .unwrap();
        store.close().await.unwrap();
    });
}

fn unsafe_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn child_writer(dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(dir);
        let (a, _) = suite::setup_account(store.clone(), "crash@example.test").await;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8u32 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    let n = w * 1_000_000 + i;
                    let msg = format!("Subject: n{n}\r\n\r\nbody {n}\r\n");
                    store
                        .deliver(suite::delivery(msg.as_bytes(), &[a.id]))
                        .await
                        .unwrap();
                    println!("ACK {n}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_scripts_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (a, _) = suite::setup_account(store.clone(), "a@example.test").await;
    store.sieve_put(a.id, "main", "keep;").await.unwrap();
    store.sieve_activate(a.id, Some("main")).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.sieve_active(a.id).await.unwrap(),
        Some(("main".into(), "keep;".into()))
    );
    store.sieve_activate(a.id, None).await.unwrap();
    assert_eq!(store.sieve_active(a.id).await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_survive_reopening() {
    use suite::stats::{DAY, buckets, max, sum};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .stats_add(vec![
            sum("mail.in", DAY + 10, 3),
            max("queue", DAY + 20, -2),
        ])
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    let want = buckets(&[("mail.in", DAY, 3), ("queue", DAY, -2)]);
    for step in [StatStep::Hour, StatStep::Day] {
        assert_eq!(
            store.stats_range(step, DAY, DAY + 86_400).await.unwrap(),
            want
        );
    }
    // And they are added to as before.
    store
        .stats_add(vec![
            sum("mail.in", DAY + 30, 1),
            max("queue", DAY + 40, -3),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .stats_range(StatStep::Day, DAY, DAY + 1)
            .await
            .unwrap(),
        buckets(&[("mail.in", DAY, 4), ("queue", DAY, -2)])
    );
    store.close().await.unwrap();
}

/// Counters are bounded per kind: a flood of made-up greylist senders is let through untracked
/// and never pushes out login failures, which keep being counted however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_bounded_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = now_ms();
    let start = move |c: Option<Counter>| {
        let mut c = c.unwrap_or(Counter {
            since: now,
            expires: now + 3_600_000,
            ..Default::default()
        });
        c.count += 1;
        Some(c)
    };
    let cap = 100_000;
    for i in 0..cap {
        store
            .counter_update(&format!("greylist:{i}"), &start)
            .await
            .unwrap();
    }
    assert!(
        store
            .counter_update("greylist:one-more", &start)
            .await
            .is_err(),
        "greylisting is full: the caller lets the newcomer through"
    );
    store.counter_update("login-ip:a", &start).await.unwrap();
    for i in 0..cap + 10 {
        store
            .counter_update(&format!("login-account:{i}"), &start)
            .await
            .unwrap();
    }
    let last = format!("login-account:{}", cap + 9);
    assert_eq!(store.counter_get(&last).await.unwrap().unwrap().count, 1);
    assert_eq!(
        store
            .counter_get("login-ip:a")
            .await
            .unwrap()
            .unwrap()
            .count,
        1
    );
    store.close().await.unwrap();
}

/// A store of schema 1 kept a `subscribed` flag in each mailbox record; opening it with this
/// build carries the flags over into subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_1_subscriptions_are_carried_over() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
    const SUBSCRIPTIONS: TableDefinition<(u64, &str), ()> = TableDefinition::new("subscriptions");
    let dir = tempfile::tempdir().unwrap();
    let account = {
        let store = open(dir.path());
        let (a, _) = suite::setup_account(store.clone(), "old@example.test").await;
        store.mailbox_create(a.id, "Work", None).await.unwrap();
        store.close().await.unwrap();
        a.id
    };
    {
        // Made back into schema 1: flags in the records (Junk unsubscribed), no table.
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            w.open_table(META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            w.open_table(SUBSCRIPTIONS)
                .unwrap()
                .retain(|_, _| false)
                .unwrap();
            let mut boxes = w.open_table(MAILBOXES).unwrap();
            let records: Vec<(u64, serde_json::Value)> = boxes
                .iter()
                .unwrap()
                .map(|x| {
                    let (k, v) = x.unwrap();
                    (k.value(), serde_json::from_slice(v.value()).unwrap())
                })
                .collect();
            for (id, mut rec) in records {
                rec["subscribed"] = (rec["name"] != "Junk").into();
                boxes
                    .insert(id, serde_json::to_vec(&rec).unwrap().as_slice())
                    .unwrap();
            }
        }
        w.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(
            r.open_table(SUBSCRIPTIONS).unwrap().iter().unwrap().count(),
            0
        );
    }
    let store = open(dir.path());
    assert_eq!(
        store.subscriptions(account).await.unwrap(),
        ["Archive", "Drafts", "INBOX", "Sent", "Trash", "Work"]
    );
    store.close().await.unwrap();
}
