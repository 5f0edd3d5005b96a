//! The storage conformance suite, run against the PostgreSQL backend: each test in a database
//! of its own, made for it and dropped after. PostgreSQL is found at $POSTERN_TEST_POSTGRES
//! (a URL of a database whose user may create databases), else postgres://postgres@127.0.0.1:5432/postgres.

mod suite;

use std::sync::Arc;

use postern_store::postgres::{Options, PgStore};
use postern_store::*;

fn admin_url() -> String {
    std::env::var("POSTERN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database; dropped when the guard goes.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> TestDb {
        let name = format!("postern_test_{:016x}", rand::random::<u64>());
        let (c, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL at $POSTERN_TEST_POSTGRES or 127.0.0.1:5432 (user postgres)");
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("bad URL {base}"),
        };
        TestDb { name, url }
    }

    async fn drop_db(self) {
        let (c, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await
        .unwrap();
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let db = TestDb::new().await;
            let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
            suite::$name(store.clone() as Arc<dyn Store>).await;
            store.close().await.unwrap();
            db.drop_db().await;
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
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    suite::backups(store.clone() as Arc<dyn Store>, spool.path()).await;
    store.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_message() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    suite::spooled_message(store.clone() as Arc<dyn Store>, spool.path()).await;
    store.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_again_safely() {
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    // A second node starting on the same database finds the schema up to date.
    let b = PgStore::connect(&db.url, Options::default()).await.unwrap();
    assert_eq!(b.migrate().await.unwrap(), a.migrate().await.unwrap());
    a.domain_add("example.test").await.unwrap();
    assert_eq!(b.domain_list().await.unwrap().len(), 1);
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

/// A database a newer Postern migrated further than this build knows is refused, and left as
/// it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let known = a.migrate().await.unwrap() as u64;
    a.close().await.unwrap();
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.execute(
        "INSERT INTO postern_schema (version) VALUES ($1)",
        &[&(known as i32 + 1)],
    )
    .await
    .unwrap();
    let e = PgStore::connect(&db.url, Options::default())
        .await
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(e, StoreError::NewerDatabase { found, known: k } if found == known + 1 && k == known),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "this database was written by a newer Postern (schema version {}; this version reads up to {known}): run that newer version, or restore the dump taken before the upgrade",
            known + 1
        )
    );
    let rows: i64 = c
        .query_one("SELECT count(*) FROM postern_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as u64, known + 1);
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_other_nodes() {
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let b = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let mut on_b = b.subscribe();
    // The listener connects in the background: wait until B hears A.
    let (acct, inbox) = suite::setup_account(a.clone(), "n@example.test").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        a.deliver(suite::delivery(b"x\r\n", &[acct.id]))
            .await
            .unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(500), async {
            loop {
                if let Ok(StoreEvent::Mailbox { mailbox, .. }) = on_b.recv().await
                    && mailbox == inbox.id
                {
                    return;
                }
            }
        })
        .await
        {
            Ok(()) => break,
            Err(_) if std::time::Instant::now() < deadline => continue,
            Err(_) => panic!("node B never heard of node A's delivery"),
        }
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

/// A change of an access list reaches the other nodes, so their sessions see what was shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_events_reach_the_other_nodes() {
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let b = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let mut on_b = b.subscribe();
    let (acct, inbox) = suite::setup_account(a.clone(), "s@example.test").await;
    // The listener connects in the background: set the line until B hears of it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        a.acl_set(inbox.id, "bob@example.test", Rights::parse("lr").ok())
            .await
            .unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(500), async {
            loop {
                if let Ok(StoreEvent::Acl { account, mailbox }) = on_b.recv().await {
                    return (account, mailbox);
                }
            }
        })
        .await
        {
            Ok(got) => {
                assert_eq!(got, (acct.id, inbox.id));
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => continue,
            Err(_) => panic!("node B never heard of node A's access-list change"),
        }
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildrop_lock_holds_across_nodes() {
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let b = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let (acct, _) = suite::setup_account(a.clone(), "p@example.test").await;
    let held = a.lock_maildrop(acct.id).await.unwrap();
    assert!(held.is_some());
    assert!(
        b.lock_maildrop(acct.id).await.unwrap().is_none(),
        "node B sees node A's POP3 session"
    );
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.lock_maildrop(acct.id).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maildrop_lease_is_renewed_and_its_loss_is_noticed() {
    let db = TestDb::new().await;
    let options = || Options {
        maildrop_lease: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let a = PgStore::connect(&db.url, options()).await.unwrap();
    let b = PgStore::connect(&db.url, options()).await.unwrap();
    let (acct, _) = suite::setup_account(a.clone(), "lease@example.test").await;
    let lock = a.lock_maildrop(acct.id).await.unwrap().unwrap();
    // Held past two lease lengths: renewed, and no other node gets it.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert!(lock.held());
    assert!(b.lock_maildrop(acct.id).await.unwrap().is_none());
    // Taken away (an operator's DELETE, a node that thought it had expired): the holder
    // learns at its next renewal, and changes nothing after that.
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute("DELETE FROM maildrop_locks").await.unwrap();
    let other = b.lock_maildrop(acct.id).await.unwrap();
    assert!(other.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!lock.held(), "the lost lease is noticed");
    assert!(other.unwrap().held());
    drop(lock);
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

/// Nodes adding to the same buckets at once lose none of each other's counts, and the
/// largest of their samples is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_add_up_across_nodes() {
    use suite::stats::{DAY, buckets, max, sum};
    let db = TestDb::new().await;
    let a = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let b = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16i64 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            for j in 0..10 {
                node.stats_add(vec![
                    sum("in", DAY + 3600, 1),
                    sum("out", DAY + 7200, 2),
                    max("queue", DAY + 3600, i * 10 + j),
                ])
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(
        a.stats_range(StatStep::Day, DAY, DAY + 86_400)
            .await
            .unwrap(),
        buckets(&[("in", DAY, 160), ("out", DAY, 320), ("queue", DAY, 159)])
    );
    assert_eq!(
        b.stats_range(StatStep::Hour, DAY, DAY + 86_400)
            .await
            .unwrap(),
        buckets(&[
            ("in", DAY + 3600, 160),
            ("out", DAY + 7200, 320),
            ("queue", DAY + 3600, 159)
        ])
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
    db.drop_db().await;
}

/// A writer cancelled while its commit is on the way (a client that went away) still has its
/// events passed on to this node's sessions, as the embedded store's writer thread does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_cancelled_writer_still_arrive() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let (acct, inbox) = suite::setup_account(store.clone(), "c@example.test").await;
    let mut events = store.subscribe();
    let mut caught = 0;
    let mut micros = 50u64;
    for _ in 0..400 {
        let before = store.mailbox_get(inbox.id).await.unwrap().unwrap().messages;
        while events.try_recv().is_ok() {}
        let cut = tokio::time::timeout(
            std::time::Duration::from_micros(micros),
            store.deliver(suite::delivery(b"Subject: cut\r\n\r\nx\r\n", &[acct.id])),
        )
        .await
        .is_err();
        // Whatever commits was announced: wait for the mailbox's event when it did.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let after = store.mailbox_get(inbox.id).await.unwrap().unwrap().messages;
        if after > before {
            let got = tokio::time::timeout(std::time::Duration::from_secs(3), async {
                loop {
                    if let Ok(StoreEvent::Mailbox { mailbox, .. }) = events.recv().await
                        && mailbox == inbox.id
                    {
                        break;
                    }
                }
            })
            .await;
            assert!(
                got.is_ok(),
                "a committed delivery's event went missing (cut: {cut})"
            );
            if cut {
                caught += 1;
                if caught >= 3 {
                    break;
                }
            }
        } else {
            micros += 50;
        }
    }
    eprintln!("cancelled after committing: {caught} time(s)");
    store.close().await.unwrap();
    db.drop_db().await;
}

/// When the connection that hears other nodes drops, what they said meanwhile is lost: the
/// node says so (`Missed`), and sessions look again, once it listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_connection_is_reported() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let mut events = store.subscribe();
    let (c, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The listener connects in the background; cut it once it is there.
    loop {
        let n = c
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND query LIKE 'LISTEN%'",
                &[&db.name],
            )
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no listening connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Ok(StoreEvent::Missed) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "no Missed event after the listener reconnected"
    );
    store.close().await.unwrap();
    db.drop_db().await;
}

/// Messages stored before schema 9 have no save date (the internal date stands in); entries
/// can be kept once it is migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_to_save_dates_and_metadata() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let (a, inbox) = suite::setup_account(store.clone(), "old@example.test").await;
    store
        .deliver(suite::delivery(b"Subject: old\r\n\r\nold", &[a.id]))
        .await
        .unwrap();
    store.close().await.unwrap();
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Back to schema 8.
    c.batch_execute(
        "DROP TABLE metadata; ALTER TABLE messages DROP COLUMN saved; \
         ALTER TABLE kept DROP COLUMN saved; \
         DROP TABLE dav_removed; DROP TABLE dav_resources; DROP TABLE dav_collections; \
         DELETE FROM postern_schema WHERE version >= 9",
    )
    .await
    .unwrap();
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let e = &store.message_list(inbox.id).await.unwrap()[0];
    assert_eq!(e.saved, None);
    assert_eq!(e.save_date(), 1_700_000_000);
    store
        .metadata_set(
            a.id,
            None,
            vec![("/private/comment".into(), Some(b"kept".to_vec()))],
            suite::metadata::LIMITS,
        )
        .await
        .unwrap()
        .unwrap();
    store.close().await.unwrap();
    drop(c);
    db.drop_db().await;
}

/// A database of schema 9 gets the calendar and address book tables, empty, when migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_to_dav_collections() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let (a, _) = suite::setup_account(store.clone(), "old@example.test").await;
    store.close().await.unwrap();
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(
        "DROP TABLE dav_removed; DROP TABLE dav_resources; DROP TABLE dav_collections; \
         DELETE FROM postern_schema WHERE version >= 10",
    )
    .await
    .unwrap();
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    assert!(store.dav_collections(a.id).await.unwrap().is_empty());
    let col = store
        .dav_collection_create(
            NewDavCollection {
                account: a.id,
                kind: DavKind::AddressBook,
                name: "default".into(),
                display_name: "Contacts".into(),
                description: String::new(),
                color: String::new(),
                components: Vec::new(),
            },
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.dav_collections(a.id).await.unwrap(), [col]);
    store.close().await.unwrap();
    drop(c);
    db.drop_db().await;
}

/// A database from before subscriptions had a table of their own (a `subscribed` column per
/// mailbox) gets its subscriptions from that column when migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_carries_subscriptions_over() {
    let db = TestDb::new().await;
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    let (a, _) = suite::setup_account(store.clone(), "old@example.test").await;
    store.mailbox_create(a.id, "Work", None).await.unwrap();
    store.close().await.unwrap();
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Back to schema 4: the flags in the mailbox rows (Junk unsubscribed), no tables.
    c.batch_execute(
        "DROP TABLE subscriptions; DROP TABLE kept; \
         DROP TABLE report_tallies; DROP TABLE received_reports; DROP TABLE stats; \
         DROP TABLE acl; DROP TABLE seen_private; DROP TABLE send_as; \
         DROP TABLE metadata; ALTER TABLE messages DROP COLUMN saved; \
         DROP TABLE dav_removed; DROP TABLE dav_resources; DROP TABLE dav_collections; \
         ALTER TABLE accounts DROP COLUMN shared; \
         DELETE FROM postern_schema WHERE version >= 5; \
         UPDATE mailboxes SET subscribed = (name <> 'Junk')",
    )
    .await
    .unwrap();
    let store = PgStore::connect(&db.url, Options::default()).await.unwrap();
    assert_eq!(
        store.subscriptions(a.id).await.unwrap(),
        ["Archive", "Drafts", "INBOX", "Sent", "Trash", "Work"]
    );
    store.close().await.unwrap();
    drop(c);
    db.drop_db().await;
}
