//! The embedded store's format version: a newer one is refused, an older one is upgraded after
//! a safety copy, and without that copy it is not upgraded at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_store::embedded::{
    EmbeddedStore, Options, PRE_UPGRADE_DIR, STORE_FORMAT, format_version, set_format_version,
};
use postern_store::*;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const SUBSCRIPTIONS: TableDefinition<(u64, &str), ()> = TableDefinition::new("subscriptions");

fn open(dir: &Path) -> Result<Arc<EmbeddedStore>> {
    EmbeddedStore::open(dir, Options::default())
}

/// A closed store with one account and a mailbox "Work"; returns the account.
async fn make_store(dir: &Path) -> AccountId {
    let store = open(dir).unwrap();
    store.domain_add("example.test").await.unwrap();
    let a = store
        .account_create(NewAccount {
            address: "old@example.test".into(),
            password_hash: "$argon2id$fake".into(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: false,
        })
        .await
        .unwrap();
    store.mailbox_create(a.id, "Work", None).await.unwrap();
    store.close().await.unwrap();
    a.id
}

fn subscription_rows(dir: &Path) -> usize {
    let db = redb::Database::open(dir.join("store.redb")).unwrap();
    let n = db
        .begin_read()
        .unwrap()
        .open_table(SUBSCRIPTIONS)
        .map(|t| t.iter().unwrap().count())
        .unwrap_or(0);
    db.close().unwrap();
    n
}

/// Back to format 1 as far as the upgrade can tell: the version, and no subscriptions table
/// rows (format 1 kept them in the mailbox records, where new records still have them).
fn mark_format_1(dir: &Path) {
    set_format_version(dir, 1).unwrap();
    let db = redb::Database::open(dir.join("store.redb")).unwrap();
    let w = db.begin_write().unwrap();
    w.open_table(SUBSCRIPTIONS)
        .unwrap()
        .retain(|_, _| false)
        .unwrap();
    w.commit().unwrap();
    db.close().unwrap();
}

fn copies(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(PRE_UPGRADE_DIR))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path()).await;
    set_format_version(dir.path(), STORE_FORMAT + 1).unwrap();
    let e = open(dir.path()).err().expect("a newer format is refused");
    assert!(
        matches!(e, StoreError::NewerStore { found, known } if found == STORE_FORMAT + 1 && known == STORE_FORMAT),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "this data directory was written by a newer Postern (store format {}; this version reads up to {STORE_FORMAT}): run that newer version, or restore a backup taken with this one",
            STORE_FORMAT + 1
        )
    );
    assert_eq!(
        format_version(dir.path()).unwrap(),
        Some(STORE_FORMAT + 1),
        "left as it was"
    );
    assert!(copies(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_format_is_copied_then_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let account = make_store(dir.path()).await;
    // A store already current makes no copy.
    open(dir.path()).unwrap().close().await.unwrap();
    assert!(copies(dir.path()).is_empty());

    mark_format_1(dir.path());
    let store = open(dir.path()).unwrap();
    assert!(
        store
            .subscriptions(account)
            .await
            .unwrap()
            .contains(&"Work".to_string())
    );
    store.close().await.unwrap();
    drop(store);
    assert_eq!(format_version(dir.path()).unwrap(), Some(STORE_FORMAT));
    let found = copies(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("store-schema-1-") && name.ends_with("Z.redb"),
        "{name}"
    );
    // The copy is the store as it was: format 1, a database redb opens without repair.
    let back = tempfile::tempdir().unwrap();
    std::fs::copy(&found[0], back.path().join("store.redb")).unwrap();
    assert_eq!(format_version(back.path()).unwrap(), Some(1));
    assert_eq!(subscription_rows(back.path()), 0);
    redb::ReadOnlyDatabase::open(back.path().join("store.redb")).expect("a clean file");

    open(dir.path()).unwrap().close().await.unwrap();
    assert_eq!(copies(dir.path()), found, "no second copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_safety_copy_leaves_the_store_unmigrated() {
    let dir = tempfile::tempdir().unwrap();
    let account = make_store(dir.path()).await;
    mark_format_1(dir.path());
    // Where the copy goes is a file: the copy cannot be made.
    std::fs::write(dir.path().join(PRE_UPGRADE_DIR), b"in the way").unwrap();
    let e = open(dir.path()).err().expect("no upgrade without a copy");
    assert!(
        matches!(e, StoreError::UpgradeCopy { from: 1, to, .. } if to == STORE_FORMAT),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot make the safety copy ")
            && msg.contains(&format!(
                "before upgrading the store from format 1 to {STORE_FORMAT}"
            ))
            && msg.contains("the store was left unchanged (format 1)"),
        "{msg}"
    );
    assert_eq!(format_version(dir.path()).unwrap(), Some(1));
    assert_eq!(subscription_rows(dir.path()), 0, "not migrated");

    std::fs::remove_file(dir.path().join(PRE_UPGRADE_DIR)).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(
        store
            .subscriptions(account)
            .await
            .unwrap()
            .contains(&"Work".to_string())
    );
    store.close().await.unwrap();
    assert_eq!(copies(dir.path()).len(), 1);
}

/// A store of format 2 had no sharing tables: it is copied, then opened with them empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_2_gets_the_sharing_tables() {
    let dir = tempfile::tempdir().unwrap();
    let account = make_store(dir.path()).await;
    set_format_version(dir.path(), 2).unwrap();
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let w = db.begin_write().unwrap();
        for t in [
            "acl",
            "acl_by_identifier",
            "seen_private",
            "seen_private_readers",
            "send_as",
            "send_as_by_delegate",
        ] {
            assert!(w.delete_table(TableDefinition::<(), ()>::new(t)).unwrap());
        }
        w.commit().unwrap();
        db.close().unwrap();
    }
    let store = open(dir.path()).unwrap();
    let inbox = store
        .mailbox_by_name(account, "INBOX")
        .await
        .unwrap()
        .unwrap();
    assert!(store.acl_get(inbox.id).await.unwrap().is_empty());
    store
        .acl_set(inbox.id, "bob@example.test", Rights::parse("lr").ok())
        .await
        .unwrap();
    assert_eq!(store.acl_get(inbox.id).await.unwrap().len(), 1);
    assert!(store.send_as_list().await.unwrap().is_empty());
    assert!(!store.account_get(account).await.unwrap().unwrap().shared);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(format_version(dir.path()).unwrap(), Some(STORE_FORMAT));
    let found = copies(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("store-schema-2-"), "{name}");
}

/// A store of format 3 had no save dates in its message records and no METADATA tables: its
/// messages are read as they are (no save date: the internal date stands in), and entries can
/// be kept once it is upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_3_messages_have_no_save_date() {
    const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
    let dir = tempfile::tempdir().unwrap();
    let account = make_store(dir.path()).await;
    let store = open(dir.path()).unwrap();
    let inbox = store
        .mailbox_by_name(account, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let mut d = Delivery {
        blob: NewBlob {
            data: BlobData::Memory(b"Subject: old\r\n\r\nold".to_vec()),
            size: 19,
            meta: Vec::new(),
        },
        internal_date: 1_600_000_000,
        targets: Vec::new(),
        queue: None,
        trace: Vec::new(),
    };
    d.targets.push(DeliveryTarget {
        account,
        mailbox: MailboxTarget::Id(inbox.id),
        flags: Flags {
            bits: Flags::SEEN,
            keywords: vec!["$old".into()],
        },
        enforce_quota: false,
    });
    store.deliver(d).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    set_format_version(dir.path(), 3).unwrap();
    {
        // Records as format 3 wrote them: the flag byte without the save-date bit, no date.
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(MESSAGES).unwrap();
            let rows: Vec<((u64, u32), Vec<u8>)> = t
                .iter()
                .unwrap()
                .map(|x| {
                    let (k, v) = x.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            for (k, v) in rows {
                let mut old = v[..33].to_vec();
                old[32] &= 0x7f;
                old.extend_from_slice(&v[41..]);
                t.insert(k, old.as_slice()).unwrap();
            }
        }
        for name in ["metadata", "metadata_by_mailbox"] {
            assert!(
                w.delete_table(TableDefinition::<(), ()>::new(name))
                    .unwrap()
            );
        }
        w.commit().unwrap();
        db.close().unwrap();
    }
    let store = open(dir.path()).unwrap();
    let e = &store.message_list(inbox.id).await.unwrap()[0];
    assert_eq!(e.saved, None);
    assert_eq!(e.save_date(), 1_600_000_000);
    assert_eq!(e.flags.bits, Flags::SEEN);
    assert_eq!(e.flags.keywords, ["$old"]);
    let limits = MetadataLimits {
        max_value: 10,
        max_entries: 10,
        max_total: 100,
    };
    store
        .metadata_set(
            account,
            Some(inbox.id),
            vec![("/private/comment".into(), Some(b"kept".to_vec()))],
            limits,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .metadata_get(account, Some(inbox.id), "/private/comment", None)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await.unwrap();
    drop(store);
    assert_eq!(format_version(dir.path()).unwrap(), Some(STORE_FORMAT));
    let found = copies(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
}

/// A store of format 4 had no calendar and address book tables: it is copied, then opened with
/// them empty, and an account of it can keep collections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_4_gets_the_dav_tables() {
    let dir = tempfile::tempdir().unwrap();
    let account = make_store(dir.path()).await;
    set_format_version(dir.path(), 4).unwrap();
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let w = db.begin_write().unwrap();
        for t in [
            "dav_collections",
            "dav_collection_by_name",
            "dav_resources",
            "dav_content",
            "dav_uids",
            "dav_removed",
        ] {
            assert!(w.delete_table(TableDefinition::<(), ()>::new(t)).unwrap());
        }
        w.commit().unwrap();
        db.close().unwrap();
    }
    let store = open(dir.path()).unwrap();
    assert!(store.dav_collections(account).await.unwrap().is_empty());
    let c = store
        .dav_collection_create(
            NewDavCollection {
                account,
                kind: DavKind::Calendar,
                name: "default".into(),
                display_name: "Calendar".into(),
                description: String::new(),
                color: String::new(),
                components: vec!["VEVENT".into()],
            },
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.dav_collections(account).await.unwrap(), [c]);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(format_version(dir.path()).unwrap(), Some(STORE_FORMAT));
    let found = copies(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("store-schema-4-"), "{name}");
}
