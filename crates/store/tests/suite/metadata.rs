//! IMAP METADATA entries (RFC 5464) and save dates (RFC 8514).

use std::sync::Arc;

use postern_store::*;

use super::{delivery, setup_account};

pub const LIMITS: MetadataLimits = MetadataLimits {
    max_value: 100,
    max_entries: 3,
    max_total: 300,
};

fn set(name: &str, value: &str) -> (String, Option<Vec<u8>>) {
    (name.into(), Some(value.as_bytes().to_vec()))
}

fn unset(name: &str) -> (String, Option<Vec<u8>>) {
    (name.into(), None)
}

fn entry(name: &str, value: &str) -> MetadataEntry {
    MetadataEntry {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    }
}

async fn get(
    store: &Arc<dyn Store>,
    account: AccountId,
    mailbox: Option<MailboxId>,
    name: &str,
    depth: Option<u32>,
) -> Vec<MetadataEntry> {
    store
        .metadata_get(account, mailbox, name, depth)
        .await
        .unwrap()
}

async fn put(
    store: &Arc<dyn Store>,
    account: AccountId,
    mailbox: Option<MailboxId>,
    changes: Vec<(String, Option<Vec<u8>>)>,
) -> Result<(), MetadataRefused> {
    store
        .metadata_set(account, mailbox, changes, LIMITS)
        .await
        .unwrap()
}

/// Entries on a mailbox and on the server: set, read by name and depth, replaced, removed;
/// names are case-insensitive and checked.
pub async fn metadata_entries(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "meta@example.test").await;
    let big = MetadataLimits {
        max_entries: 100,
        max_total: 10_000,
        ..LIMITS
    };
    store
        .metadata_set(
            a.id,
            Some(inbox.id),
            vec![
                set("/private/comment", "mine"),
                set("/Shared/Comment", "ours"),
                set("/private/filters/values/small", "SMALLER 5000"),
                set("/private/filters/values/boss", "FROM boss"),
                set("/private/filters/values/boss/deep", "x"),
                set("/private/filtersx", "not below"),
            ],
            big,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get(&store, a.id, Some(inbox.id), "/PRIVATE/comment", Some(0)).await,
        [entry("/private/comment", "mine")]
    );
    assert_eq!(
        get(&store, a.id, Some(inbox.id), "/shared/comment", Some(0)).await,
        [entry("/shared/comment", "ours")]
    );
    let f = "/private/filters/values";
    assert_eq!(get(&store, a.id, Some(inbox.id), f, Some(0)).await, []);
    assert_eq!(
        get(&store, a.id, Some(inbox.id), f, Some(1)).await,
        [
            entry("/private/filters/values/boss", "FROM boss"),
            entry("/private/filters/values/small", "SMALLER 5000"),
        ]
    );
    assert_eq!(get(&store, a.id, Some(inbox.id), f, None).await.len(), 3);
    assert_eq!(
        get(&store, a.id, Some(inbox.id), "/private/filters", None)
            .await
            .len(),
        3
    );
    // The server's entries are apart from the mailbox's.
    assert_eq!(get(&store, a.id, None, "/private/comment", None).await, []);
    put(&store, a.id, None, vec![set("/private/comment", "server")])
        .await
        .unwrap();
    assert_eq!(
        get(&store, a.id, None, "/private/comment", None).await,
        [entry("/private/comment", "server")]
    );
    // Replaced, then removed (removing what is not there is fine).
    put(
        &store,
        a.id,
        Some(inbox.id),
        vec![set("/private/comment", "new"), unset("/private/nothing")],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&store, a.id, Some(inbox.id), "/private/comment", None).await,
        [entry("/private/comment", "new")]
    );
    put(
        &store,
        a.id,
        Some(inbox.id),
        vec![unset("/private/comment")],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&store, a.id, Some(inbox.id), "/private/comment", None).await,
        []
    );
    // Values are bytes.
    let binary = vec![0u8, 255, 13, 10];
    put(
        &store,
        a.id,
        None,
        vec![("/private/bin".into(), Some(binary.clone()))],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&store, a.id, None, "/private/bin", None).await[0].value,
        binary
    );
    // All of one kind may be asked for, not set.
    assert_eq!(
        get(&store, a.id, None, "/private", None)
            .await
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["/private/bin", "/private/comment"]
    );
    assert!(matches!(
        store
            .metadata_set(a.id, None, vec![set("/private", "v")], LIMITS)
            .await,
        Err(StoreError::Invalid(_))
    ));
    for bad in ["/other/x", "/privatex", "/private//x", "/private/x*"] {
        assert!(matches!(
            store
                .metadata_set(a.id, None, vec![set(bad, "v")], LIMITS)
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.metadata_get(a.id, None, bad, None).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(
        store
            .metadata_set(a.id, Some(999_999), vec![set("/private/x", "v")], LIMITS)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .metadata_set(999_999, None, vec![set("/private/x", "v")], LIMITS)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Each limit refuses with its own answer, and a refused change leaves every entry as it was.
pub async fn metadata_limits(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "limits@example.test").await;
    let mb = Some(inbox.id);
    let long = "x".repeat(101);
    // One value too large: nothing of the command is kept.
    assert_eq!(
        put(
            &store,
            a.id,
            mb,
            vec![set("/private/a", "fine"), set("/private/b", &long)]
        )
        .await,
        Err(MetadataRefused::TooLarge { max: 100 })
    );
    assert_eq!(get(&store, a.id, mb, "/private/a", None).await, []);
    put(
        &store,
        a.id,
        mb,
        vec![
            set("/private/a", "1"),
            set("/private/b", "2"),
            set("/private/c", "3"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        put(&store, a.id, mb, vec![set("/private/d", "4")]).await,
        Err(MetadataRefused::TooMany { max: 3 })
    );
    // At the limit, replacing and swapping are fine.
    put(
        &store,
        a.id,
        mb,
        vec![
            set("/private/a", "11"),
            unset("/private/b"),
            set("/private/d", "4"),
        ],
    )
    .await
    .unwrap();
    // The count is per mailbox: the server has room.
    put(&store, a.id, None, vec![set("/private/a", "1")])
        .await
        .unwrap();
    // The total is per account, names and values: 3 entries of ~110 bytes pass 300.
    let (b, binbox) = setup_account(store.clone(), "total@example.test").await;
    let v = "y".repeat(90);
    put(&store, b.id, Some(binbox.id), vec![set("/private/one", &v)])
        .await
        .unwrap();
    put(&store, b.id, None, vec![set("/private/two", &v)])
        .await
        .unwrap();
    assert_eq!(
        put(&store, b.id, None, vec![set("/private/three", &v)]).await,
        Err(MetadataRefused::TotalTooLarge { max: 300 })
    );
    assert_eq!(get(&store, b.id, None, "/private/three", None).await, []);
    // Removing is always allowed.
    put(&store, b.id, None, vec![unset("/private/two")])
        .await
        .unwrap();
    put(&store, b.id, None, vec![set("/private/three", &v)])
        .await
        .unwrap();
}

/// A mailbox's entries follow it through a rename and go when it goes, whoever kept them; an
/// account's go with it, so a new account of the same address starts with none.
pub async fn metadata_follows_mailboxes(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "owner@example.test").await;
    let (b, _) = setup_account(store.clone(), "reader@example.test").await;
    let mb = store.mailbox_create(a.id, "Projects", None).await.unwrap();
    let child = store
        .mailbox_create(a.id, "Projects/Old", None)
        .await
        .unwrap();
    put(
        &store,
        a.id,
        Some(mb.id),
        vec![set("/private/comment", "p")],
    )
    .await
    .unwrap();
    put(
        &store,
        a.id,
        Some(child.id),
        vec![set("/shared/comment", "c")],
    )
    .await
    .unwrap();
    put(
        &store,
        b.id,
        Some(mb.id),
        vec![set("/private/comment", "b's")],
    )
    .await
    .unwrap();
    store.mailbox_rename(mb.id, "Work").await.unwrap();
    let renamed = store.mailbox_by_name(a.id, "Work").await.unwrap().unwrap();
    assert_eq!(renamed.id, mb.id);
    assert_eq!(
        get(&store, a.id, Some(mb.id), "/private/comment", None).await,
        [entry("/private/comment", "p")]
    );
    assert_eq!(
        get(&store, a.id, Some(child.id), "/shared/comment", None).await,
        [entry("/shared/comment", "c")]
    );
    store.mailbox_delete(mb.id).await.unwrap();
    assert_eq!(
        get(&store, a.id, Some(mb.id), "/private/comment", None).await,
        []
    );
    assert_eq!(
        get(&store, b.id, Some(mb.id), "/private/comment", None).await,
        []
    );
    let again = store.mailbox_create(a.id, "Work", None).await.unwrap();
    assert_eq!(
        get(&store, a.id, Some(again.id), "/private/comment", None).await,
        []
    );
    // The reader's own entry went with the mailbox: it no longer counts against it.
    for i in 0..3 {
        put(
            &store,
            b.id,
            Some(again.id),
            vec![set(&format!("/private/{i}"), "v")],
        )
        .await
        .unwrap();
    }
    put(&store, a.id, None, vec![set("/private/server", "s")])
        .await
        .unwrap();
    store.account_delete(a.id).await.unwrap();
    // The reader's entries on the owner's mailbox went with it.
    assert_eq!(
        get(&store, b.id, Some(again.id), "/private/0", None).await,
        []
    );
    let (a2, inbox2) = setup_account(store.clone(), "owner@example.test").await;
    assert_eq!(get(&store, a2.id, None, "/private/server", None).await, []);
    assert_eq!(
        get(&store, a2.id, Some(inbox2.id), "/private/comment", None).await,
        []
    );
}

/// On a mailbox shared with another account: its /shared entries are one value for everyone
/// (kept by the owner, counted against the owner's limits), its /private ones each reader's.
pub async fn metadata_shared_entries(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "alice@example.test").await;
    let (b, _) = setup_account(store.clone(), "bob@example.test").await;
    let mb = Some(inbox.id);
    put(
        &store,
        b.id,
        mb,
        vec![
            set("/shared/comment", "from bob"),
            set("/private/comment", "bob's"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&store, a.id, mb, "/shared/comment", None).await,
        [entry("/shared/comment", "from bob")]
    );
    assert_eq!(get(&store, a.id, mb, "/private/comment", None).await, []);
    assert_eq!(
        get(&store, b.id, mb, "/private/comment", None).await,
        [entry("/private/comment", "bob's")]
    );
    put(&store, a.id, mb, vec![set("/private/comment", "alice's")])
        .await
        .unwrap();
    assert_eq!(
        get(&store, b.id, mb, "/private/comment", None).await,
        [entry("/private/comment", "bob's")]
    );
    // The owner's count: two shared entries more reach the limit of three with alice's own.
    put(&store, a.id, mb, vec![set("/shared/x", "1")])
        .await
        .unwrap();
    assert_eq!(
        put(&store, b.id, mb, vec![set("/shared/y", "1")]).await,
        Err(MetadataRefused::TooMany { max: 3 })
    );
    // A refused shared entry keeps bob's private one of the same command out too.
    assert_eq!(
        put(
            &store,
            b.id,
            mb,
            vec![set("/private/other", "1"), set("/shared/y", "1")]
        )
        .await,
        Err(MetadataRefused::TooMany { max: 3 })
    );
    assert_eq!(get(&store, b.id, mb, "/private/other", None).await, []);
    // Bob leaving takes his private entries, not the shared ones he set.
    store.account_delete(b.id).await.unwrap();
    assert_eq!(
        get(&store, a.id, mb, "/shared/comment", None).await,
        [entry("/shared/comment", "from bob")]
    );
}

/// A change of entries is told to sessions (RFC 5465 5.6, 5.7): one event per account that
/// keeps the entries, naming them; a refused change tells nothing.
pub async fn metadata_events(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "alice@example.test").await;
    let (b, _) = setup_account(store.clone(), "bob@example.test").await;
    let mut rx = store.subscribe();
    put(
        &store,
        b.id,
        Some(inbox.id),
        vec![set("/shared/comment", "x"), set("/private/note", "y")],
    )
    .await
    .unwrap();
    put(&store, a.id, None, vec![unset("/private/gone")])
        .await
        .unwrap();
    let refused = put(
        &store,
        a.id,
        None,
        vec![set("/private/big", &"v".repeat(200))],
    )
    .await;
    assert!(refused.is_err());
    put(&store, a.id, None, vec![set("/shared/admin", "z")])
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("the event came")
            .unwrap();
        if let StoreEvent::Metadata { .. } = e {
            seen.push(e);
        }
    }
    let ev = |keeper, mailbox, names: &[&str]| StoreEvent::Metadata {
        keeper,
        mailbox,
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    seen[..2].sort_by_key(|e| match e {
        StoreEvent::Metadata { keeper, .. } => *keeper,
        _ => 0,
    });
    assert_eq!(
        seen,
        [
            ev(a.id, Some(inbox.id), &["/shared/comment"]),
            ev(b.id, Some(inbox.id), &["/private/note"]),
            ev(a.id, None, &["/private/gone"]),
            ev(a.id, None, &["/shared/admin"]),
        ]
    );
}

/// Every message records when it was saved into its mailbox: delivery, and COPY or MOVE into
/// another (a new date there); flag changes and expunges keep it.
pub async fn save_dates(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "saved@example.test").await;
    let before = now();
    let rep = store
        .deliver(delivery(b"Subject: s\r\n\r\nbody", &[a.id]))
        .await
        .unwrap();
    let uid = rep.targets[0].as_ref().unwrap().1;
    let e = store.message_get(inbox.id, uid).await.unwrap().unwrap();
    let saved = e.saved.expect("a save date");
    assert!(saved >= before && saved <= now());
    // The internal date is the delivery's (2023), the save date now.
    assert_eq!(e.internal_date, 1_700_000_000);
    assert_eq!(e.save_date(), saved);
    assert_eq!(
        store.message_list(inbox.id).await.unwrap()[0].saved,
        Some(saved)
    );
    store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![uid],
            op: FlagOp::Add,
            flags: Flags {
                bits: Flags::SEEN,
                keywords: vec!["$work".into()],
            },
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    let changed = store.message_changes(inbox.id, 0).await.unwrap();
    assert_eq!(changed.changed[0].saved, Some(saved));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let other = store.mailbox_create(a.id, "Kept", None).await.unwrap();
    let pairs = store
        .copy(inbox.id, vec![uid], other.id, false)
        .await
        .unwrap();
    let copied = store
        .message_get(other.id, pairs[0].1)
        .await
        .unwrap()
        .unwrap();
    assert!(copied.saved.unwrap() > saved, "a copy is saved anew");
    assert_eq!(copied.internal_date, e.internal_date);
    assert_eq!(copied.flags.keywords, ["$work"]);
    let moved = store
        .copy(other.id, vec![pairs[0].1], inbox.id, true)
        .await
        .unwrap();
    let back = store
        .message_get(inbox.id, moved[0].1)
        .await
        .unwrap()
        .unwrap();
    assert!(back.saved.unwrap() >= copied.saved.unwrap());
    // Kept after an expunge, with its save date.
    store.expunge(inbox.id, vec![uid]).await.unwrap();
    let kept = store.expunged_get(inbox.id, &[uid]).await.unwrap();
    assert_eq!(kept[0].saved, Some(saved));
    // An entry without one answers its internal date.
    let old = MessageEntry { saved: None, ..e };
    assert_eq!(old.save_date(), 1_700_000_000);
}
