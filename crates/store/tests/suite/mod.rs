//! Behaviour every storage backend must have. Each function takes a fresh, empty store.

#![allow(dead_code)]

use std::sync::Arc;

use postern_store::*;

pub mod backup;
pub mod dav;
pub mod metadata;
pub mod share;
pub mod stats;
pub use backup::backups;
pub use dav::*;
pub use metadata::*;
pub use share::*;
pub use stats::stats_series;

pub fn delivery(bytes: &[u8], accounts: &[AccountId]) -> Delivery {
    Delivery {
        blob: NewBlob {
            data: BlobData::Memory(bytes.to_vec()),
            size: bytes.len() as u64,
            meta: b"meta".to_vec(),
        },
        internal_date: 1_700_000_000,
        targets: accounts
            .iter()
            .map(|&account| DeliveryTarget {
                account,
                mailbox: MailboxTarget::Name {
                    name: "INBOX".into(),
                    create: false,
                },
                flags: Flags::default(),
                enforce_quota: true,
            })
            .collect(),
        queue: None,
        trace: Vec::new(),
    }
}

pub fn delivery_file(path: &std::path::Path, size: u64, accounts: &[AccountId]) -> Delivery {
    let mut d = delivery(b"", accounts);
    d.blob = NewBlob {
        data: BlobData::File(path.to_path_buf()),
        size,
        meta: Vec::new(),
    };
    d
}

/// A message spooled to a file while it arrived: the store takes the file over (or streams it
/// in), never reading it whole; it reads back whole and by ranges, and the file is gone.
pub async fn spooled_message(store: Arc<dyn Store>, spool_dir: &std::path::Path) {
    let (a, _) = setup_account(store.clone(), "big@example.test").await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let spool = spool_dir.join("incoming-1");
    std::fs::write(&spool, &body).unwrap();
    let rep = store
        .deliver(delivery_file(&spool, body.len() as u64, &[a.id]))
        .await
        .unwrap();
    assert!(!spool.exists(), "the spool file was taken over");
    let (mb, uid) = rep.targets[0].as_ref().map(|x| *x).unwrap();
    let e = store.message_get(mb, uid).await.unwrap().unwrap();
    assert_eq!(e.size, body.len() as u64);
    let back = store.blob_read(e.blob, 0, e.size).await.unwrap();
    assert!(back == body, "the stored bytes differ");
    let part = store.blob_read(e.blob, 1_000_000, 10).await.unwrap();
    assert_eq!(part, &body[1_000_000..1_000_010]);
    assert_eq!(
        store.blob_info(e.blob).await.unwrap().size,
        body.len() as u64
    );
    store.expunge(mb, vec![uid]).await.unwrap();
    store.expunged_purge(now() + 1).await.unwrap();
}

pub async fn setup_account<S: Store + ?Sized>(store: Arc<S>, address: &str) -> (Account, Mailbox) {
    let domain = address.rsplit_once('@').unwrap().1;
    match store.domain_add(domain).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let a = store
        .account_create(NewAccount {
            address: address.into(),
            password_hash: "$argon2id$fake".into(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: false,
        })
        .await
        .unwrap();
    let inbox = store.mailbox_by_name(a.id, "INBOX").await.unwrap().unwrap();
    (a, inbox)
}

pub async fn domains(store: Arc<dyn Store>) {
    store.domain_add("example.test").await.unwrap();
    assert!(matches!(
        store.domain_add("example.test").await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.domain_add("other.test").await.unwrap();
    let names: Vec<String> = store
        .domain_list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["example.test", "other.test"]);
    assert!(store.domain_get("example.test").await.unwrap().is_some());
    setup_account(store.clone(), "a@example.test").await;
    assert!(matches!(
        store.domain_delete("example.test").await,
        Err(StoreError::Invalid(_))
    ));
    store.domain_delete("other.test").await.unwrap();
    assert!(store.domain_get("other.test").await.unwrap().is_none());
    assert!(matches!(
        store.domain_delete("other.test").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn accounts(store: Arc<dyn Store>) {
    let new = |a: &str| NewAccount {
        address: a.into(),
        password_hash: "h".into(),
        quota_bytes: 0,
        quota_messages: 0,
        shared: false,
    };
    assert!(matches!(
        store.account_create(new("x@nowhere.test")).await,
        Err(StoreError::NotFound(_))
    ));
    store.domain_add("example.test").await.unwrap();
    let a = store
        .account_create(new("alice@example.test"))
        .await
        .unwrap();
    assert!(matches!(
        store.account_create(new("alice@example.test")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let b = store.account_create(new("bob@example.test")).await.unwrap();
    assert_ne!(a.id, b.id);
    let got = store
        .account_by_address("alice@example.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, a);
    assert_eq!(
        store.account_get(b.id).await.unwrap().unwrap().address,
        "bob@example.test"
    );
    let boxes = store.mailbox_list(a.id).await.unwrap();
    let mut names: Vec<(String, Option<SpecialUse>)> = boxes
        .iter()
        .map(|m| (m.name.clone(), m.special_use))
        .collect();
    names.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        names,
        [
            ("Archive".to_string(), Some(SpecialUse::Archive)),
            ("Drafts".to_string(), Some(SpecialUse::Drafts)),
            ("INBOX".to_string(), None),
            ("Junk".to_string(), Some(SpecialUse::Junk)),
            ("Sent".to_string(), Some(SpecialUse::Sent)),
            ("Trash".to_string(), Some(SpecialUse::Trash)),
        ]
    );
    let up = store
        .account_update(
            a.id,
            AccountUpdate {
                password_hash: Some("h2".into()),
                quota_bytes: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((up.password_hash.as_str(), up.quota_bytes), ("h2", 1000));
    assert_eq!(store.account_list().await.unwrap().len(), 2);
    store.deliver(delivery(b"x\r\n", &[a.id])).await.unwrap();
    store.account_delete(a.id).await.unwrap();
    assert!(store.account_get(a.id).await.unwrap().is_none());
    assert!(
        store
            .account_by_address("alice@example.test")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.mailbox_list(a.id).await.unwrap().is_empty());
    assert_eq!(store.account_list().await.unwrap().len(), 1);
    assert!(matches!(
        store.account_delete(a.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn disabled_and_passwords(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "d@example.test").await;
    let up = store
        .account_update(
            a.id,
            AccountUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(up.disabled);
    assert!(store.account_get(a.id).await.unwrap().unwrap().disabled);
}

pub async fn aliases(store: Arc<dyn Store>) {
    assert!(matches!(
        store.alias_set("x@nowhere.test", vec!["a@b".into()]).await,
        Err(StoreError::NotFound(_))
    ));
    setup_account(store.clone(), "alice@example.test").await;
    assert!(matches!(
        store
            .alias_set("alice@example.test", vec!["bob@example.test".into()])
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let al = store
        .alias_set(
            "team@example.test",
            vec!["alice@example.test".into(), "carol@far.test".into()],
        )
        .await
        .unwrap();
    assert_eq!(al.targets.len(), 2);
    let al2 = store
        .alias_set("team@example.test", vec!["alice@example.test".into()])
        .await
        .unwrap();
    assert_eq!(al2.created, al.created);
    assert_eq!(
        store
            .alias_get("team@example.test")
            .await
            .unwrap()
            .unwrap()
            .targets,
        ["alice@example.test"]
    );
    assert_eq!(store.alias_list().await.unwrap().len(), 1);
    assert!(matches!(
        store
            .account_create(NewAccount {
                address: "team@example.test".into(),
                password_hash: "h".into(),
                quota_bytes: 0,
                quota_messages: 0,
                shared: false,
            })
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.alias_delete("team@example.test").await.unwrap();
    assert!(
        store
            .alias_get("team@example.test")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.alias_delete("team@example.test").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn mailboxes(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "m@example.test").await;
    assert_eq!(
        store
            .mailbox_by_name(a.id, "inbox")
            .await
            .unwrap()
            .unwrap()
            .id,
        inbox.id
    );
    let w = store.mailbox_create(a.id, "Work", None).await.unwrap();
    let p = store
        .mailbox_create(a.id, "Work/Projects", None)
        .await
        .unwrap();
    assert!(matches!(
        store.mailbox_create(a.id, "Work", None).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_ne!(w.uidvalidity, p.uidvalidity);
    store.mailbox_rename(w.id, "Job").await.unwrap();
    assert!(store.mailbox_by_name(a.id, "Work").await.unwrap().is_none());
    assert_eq!(
        store
            .mailbox_by_name(a.id, "Job")
            .await
            .unwrap()
            .unwrap()
            .id,
        w.id
    );
    assert_eq!(
        store
            .mailbox_by_name(a.id, "Job/Projects")
            .await
            .unwrap()
            .unwrap()
            .id,
        p.id
    );
    assert!(matches!(
        store.mailbox_rename(w.id, "Trash").await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.mailbox_delete(inbox.id).await,
        Err(StoreError::Invalid(_))
    ));
    let d = store
        .deliver(delivery(b"hello\r\n", &[a.id]))
        .await
        .unwrap();
    let (_, uid) = d.targets[0].as_ref().map(|x| *x).unwrap();
    store.copy(inbox.id, vec![uid], p.id, false).await.unwrap();
    store.mailbox_delete(p.id).await.unwrap();
    assert!(store.mailbox_get(p.id).await.unwrap().is_none());
    // The copy's blob reference went with the mailbox; the original remains readable.
    let e = store.message_get(inbox.id, uid).await.unwrap().unwrap();
    assert_eq!(store.blob_read(e.blob, 0, 100).await.unwrap(), b"hello\r\n");
}

pub async fn shared_blob_delivery(store: Arc<dyn Store>) {
    let (a, ia) = setup_account(store.clone(), "a@example.test").await;
    let (b, ib) = setup_account(store.clone(), "b@example.test").await;
    let msg = b"Subject: hi\r\n\r\nhello both\r\n";
    let rep = store.deliver(delivery(msg, &[a.id, b.id])).await.unwrap();
    let (ma, ua) = rep.targets[0].as_ref().map(|x| *x).unwrap();
    let (mb, ub) = rep.targets[1].as_ref().map(|x| *x).unwrap();
    assert_eq!((ma, mb), (ia.id, ib.id));
    assert_eq!((ua, ub), (1, 1));
    let ea = store.message_get(ia.id, 1).await.unwrap().unwrap();
    let eb = store.message_get(ib.id, 1).await.unwrap().unwrap();
    assert_eq!(ea.blob, eb.blob, "one blob for both recipients");
    assert_eq!(ea.size, msg.len() as u64);
    assert_eq!(
        store.blob_info(ea.blob).await.unwrap().meta.as_slice(),
        b"meta"
    );
    assert_eq!(store.blob_read(ea.blob, 0, 1 << 20).await.unwrap(), msg);
    assert_eq!(store.blob_read(ea.blob, 9, 2).await.unwrap(), b"hi");
    let mbox = store.mailbox_get(ia.id).await.unwrap().unwrap();
    assert_eq!(
        (mbox.messages, mbox.unseen, mbox.size, mbox.uidnext),
        (1, 1, msg.len() as u64, 2)
    );
    assert_eq!(store.expunge(ia.id, vec![1, 99]).await.unwrap(), [1]);
    assert_eq!(store.blob_read(eb.blob, 0, 5).await.unwrap(), b"Subje");
    store.expunge(ib.id, vec![1]).await.unwrap();
    assert_eq!(
        store.blob_read(eb.blob, 0, 5).await.unwrap(),
        b"Subje",
        "kept for sessions not yet told of the expunge"
    );
    assert_eq!(store.expunged_purge(now() + 1).await.unwrap(), 2);
    assert!(
        store.blob_info(eb.blob).await.is_err(),
        "blob freed with its last reference"
    );
    let mbox = store.mailbox_get(ia.id).await.unwrap().unwrap();
    assert_eq!((mbox.messages, mbox.size, mbox.uidnext), (0, 0, 2));
    // UIDs are never reused.
    let rep = store.deliver(delivery(msg, &[a.id])).await.unwrap();
    assert_eq!(rep.targets[0].as_ref().unwrap().1, 2);
}

pub async fn flags_and_changes(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "f@example.test").await;
    for i in 0..3 {
        store
            .deliver(delivery(format!("m{i}\r\n").as_bytes(), &[a.id]))
            .await
            .unwrap();
    }
    let before = store.mailbox_get(inbox.id).await.unwrap().unwrap();
    assert_eq!(before.unseen, 3);
    let seen = Flags {
        bits: Flags::SEEN,
        keywords: vec!["$Work".into()],
    };
    let r = store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![1, 2],
            op: FlagOp::Add,
            flags: seen.clone(),
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    assert_eq!(r.updated.len(), 2);
    let m = r.updated[0].2;
    assert!(m > before.highest_modseq);
    let after = store.mailbox_get(inbox.id).await.unwrap().unwrap();
    assert_eq!((after.unseen, after.highest_modseq), (1, m));
    // Adding the same flags again changes nothing.
    let r = store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![1],
            op: FlagOp::Add,
            flags: seen.clone(),
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    assert!(r.updated.is_empty());
    // UNCHANGEDSINCE refuses messages modified later.
    let r = store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![1, 3],
            op: FlagOp::Remove,
            flags: seen.clone(),
            unchanged_since: Some(m - 1),
            reader: None,
        })
        .await
        .unwrap();
    assert_eq!(r.modified, [1]);
    let ch = store
        .message_changes(inbox.id, before.highest_modseq)
        .await
        .unwrap();
    let uids: Vec<Uid> = ch.changed.iter().map(|e| e.uid).collect();
    assert_eq!(uids, [1, 2]);
    assert!(ch.changed[0].flags.has_keyword("$work"));
    store.expunge(inbox.id, vec![2]).await.unwrap();
    let ch = store.message_changes(inbox.id, m).await.unwrap();
    assert!(ch.changed.is_empty());
    assert_eq!(ch.expunged, [2]);
    assert!(ch.highest_modseq > m);
    let list = store.message_list(inbox.id).await.unwrap();
    assert_eq!(list.iter().map(|e| e.uid).collect::<Vec<_>>(), [1, 3]);
    let r = store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![1, 3],
            op: FlagOp::Replace,
            flags: Flags {
                bits: Flags::FLAGGED,
                keywords: vec![],
            },
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    assert_eq!(r.updated.len(), 2);
    let e = store.message_get(inbox.id, 1).await.unwrap().unwrap();
    assert_eq!(e.flags.bits, Flags::FLAGGED);
    assert!(e.flags.keywords.is_empty());
    assert_eq!(
        store.mailbox_get(inbox.id).await.unwrap().unwrap().unseen,
        2
    );
}

pub async fn copy_and_move(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "c@example.test").await;
    let arch = store
        .mailbox_by_name(a.id, "Archive")
        .await
        .unwrap()
        .unwrap();
    for i in 0..3 {
        store
            .deliver(delivery(format!("m{i}\r\n").as_bytes(), &[a.id]))
            .await
            .unwrap();
    }
    let pairs = store
        .copy(inbox.id, vec![1, 3], arch.id, false)
        .await
        .unwrap();
    assert_eq!(pairs, [(1, 1), (3, 2)]);
    assert_eq!(store.message_list(inbox.id).await.unwrap().len(), 3);
    let pairs = store.copy(inbox.id, vec![2], arch.id, true).await.unwrap();
    assert_eq!(pairs, [(2, 3)]);
    assert_eq!(store.message_list(inbox.id).await.unwrap().len(), 2);
    let e = store.message_get(arch.id, 3).await.unwrap().unwrap();
    assert_eq!(store.blob_read(e.blob, 0, 10).await.unwrap(), b"m1\r\n");
    let ab = store.mailbox_get(arch.id).await.unwrap().unwrap();
    assert_eq!((ab.messages, ab.uidnext), (3, 4));
}

pub async fn quota(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "q@example.test").await;
    store
        .account_update(
            a.id,
            AccountUpdate {
                quota_bytes: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let msg = [b'x'; 60];
    let r = store.deliver(delivery(&msg, &[a.id])).await.unwrap();
    assert!(r.targets[0].is_ok());
    let r = store.deliver(delivery(&msg, &[a.id])).await.unwrap();
    assert!(matches!(r.targets[0], Err(StoreError::QuotaExceeded)));
    assert_eq!(r.blob, 0, "refused everywhere: nothing stored");
    assert_eq!(store.account_usage(a.id).await.unwrap().bytes, 60);
    store.expunge(inbox.id, vec![1]).await.unwrap();
    let r = store.deliver(delivery(&msg, &[a.id])).await.unwrap();
    assert!(r.targets[0].is_ok(), "deliverable again after deletion");
    // Taken by one of two accounts: the bytes belong to that one message alone, and go with it.
    let (b, b_inbox) = setup_account(store.clone(), "q2@example.test").await;
    let r = store.deliver(delivery(&msg, &[a.id, b.id])).await.unwrap();
    assert!(matches!(r.targets[0], Err(StoreError::QuotaExceeded)));
    let (mb, uid) = *r.targets[1].as_ref().unwrap();
    assert_eq!(mb, b_inbox.id);
    assert_eq!(store.blob_read(r.blob, 0, 3).await.unwrap(), b"xxx");
    store.expunge(mb, vec![uid]).await.unwrap();
    store.expunged_purge(now() + 1).await.unwrap();
    assert!(
        store.blob_info(r.blob).await.is_err(),
        "the bytes went with their last message"
    );
}

pub async fn queue(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "s@example.test").await;
    let mut d = delivery(b"Subject: out\r\n\r\nbody\r\n", &[a.id]);
    d.queue = Some(NewQueueEntry {
        sender: "s@example.test".into(),
        recipients: vec![QueueRecipient {
            address: "r@far.test".into(),
            orcpt: Some("rfc822;r@far.test".into()),
            notify: Some("FAILURE".into()),
            state: RecipientState::Pending,
            last_error: None,
        }],
        envid: Some("env1".into()),
        ret: Some(DsnRet::Headers),
        trace_id: "T1".into(),
        authenticated: Some("s@example.test".into()),
        requiretls: false,
        body_offset: 0,
    });
    let rep = store.deliver(d).await.unwrap();
    let qid = rep.queue_id.unwrap();
    let list = store.queue_list().await.unwrap();
    assert_eq!(list.len(), 1);
    let mut e = store.queue_get(qid).await.unwrap().unwrap();
    assert_eq!(e.blob, rep.blob);
    assert_eq!(e.recipients[0].orcpt.as_deref(), Some("rfc822;r@far.test"));
    assert_eq!(e.envid.as_deref(), Some("env1"));
    e.attempts = 1;
    e.last_error = Some("451 try later".into());
    store.queue_update(e.clone()).await.unwrap();
    assert_eq!(store.queue_get(qid).await.unwrap().unwrap(), e);
    // A writer holding an older copy (a node whose claim ran out, an administrator's retry)
    // cannot undo a recorded outcome.
    let stale = e.clone();
    e.recipients[0].state = RecipientState::Delivered;
    e.recipients[0].last_error = Some("250 2.0.0 taken".into());
    e.warned = true;
    store.queue_update(e.clone()).await.unwrap();
    let mut retried = stale.clone();
    retried.next_attempt = 12345;
    store.queue_update(retried).await.unwrap();
    let now = store.queue_get(qid).await.unwrap().unwrap();
    assert_eq!(now.recipients[0].state, RecipientState::Delivered);
    assert_eq!(
        now.recipients[0].last_error.as_deref(),
        Some("250 2.0.0 taken")
    );
    assert!(now.warned);
    assert_eq!(now.next_attempt, 12345, "the rest of the update is applied");
    // The local copy and the queue share the blob; dropping one keeps the other readable.
    let inbox = store.mailbox_by_name(a.id, "INBOX").await.unwrap().unwrap();
    store.expunge(inbox.id, vec![1]).await.unwrap();
    assert_eq!(store.blob_read(e.blob, 0, 7).await.unwrap(), b"Subject");
    store.queue_delete(qid).await.unwrap();
    assert!(store.queue_get(qid).await.unwrap().is_none());
    assert!(
        store.blob_info(e.blob).await.is_ok(),
        "the expunged copy is still kept"
    );
    store
        .expunged_purge(postern_store::now() + 1)
        .await
        .unwrap();
    assert!(store.blob_info(e.blob).await.is_err());
    // A queue-only delivery (no local targets).
    let mut d = delivery(b"x\r\n", &[]);
    d.queue = Some(NewQueueEntry {
        sender: "".into(),
        recipients: vec![],
        envid: None,
        ret: None,
        trace_id: "T2".into(),
        authenticated: None,
        requiretls: false,
        body_offset: 0,
    });
    assert!(store.deliver(d).await.unwrap().queue_id.is_some());
}

/// Many concurrent writers share commits: far fewer fsyncs than writes.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "many@example.test").await;
    let before = store.stats();
    let n = 400u32;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        tasks.spawn(async move {
            let msg = format!("Subject: {i}\r\n\r\nbody\r\n");
            store
                .deliver(delivery(msg.as_bytes(), &[a.id]))
                .await
                .unwrap()
        });
    }
    let mut uids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        uids.push(r.unwrap().targets[0].as_ref().unwrap().1);
    }
    uids.sort_unstable();
    assert_eq!(
        uids,
        (1..=n).collect::<Vec<_>>(),
        "every append got its own UID"
    );
    let after = store.stats();
    let commits = after.commits - before.commits;
    let fsyncs = after.fsyncs - before.fsyncs;
    println!(
        "group commit: {n} concurrent appends in {commits} commits with {fsyncs} fsyncs ({:.1} appends per fsync)",
        n as f64 / fsyncs.max(1) as f64
    );
    // Group commit is the embedded backend's own (it makes its fsyncs); a database server
    // commits each transaction and shares its log flushes among them itself.
    if fsyncs > 0 {
        assert!(fsyncs < n as u64 / 4, "{fsyncs} fsyncs for {n} appends");
        assert!(commits < n as u64 / 4, "{commits} commits for {n} appends");
    }
    assert_eq!(
        store.mailbox_get(inbox.id).await.unwrap().unwrap().messages,
        n
    );
}

pub async fn events(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "e@example.test").await;
    let mut rx = store.subscribe();
    store.deliver(delivery(b"x\r\n", &[a.id])).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if let StoreEvent::Mailbox {
                mailbox,
                highest_modseq,
                ..
            } = rx.recv().await.unwrap()
            {
                return (mailbox, highest_modseq);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev.0, inbox.id);
    assert_eq!(
        ev.1,
        store
            .mailbox_get(inbox.id)
            .await
            .unwrap()
            .unwrap()
            .highest_modseq
    );
}

pub async fn trace(store: Arc<dyn Store>) {
    let e = |id: &str, kind: &str, t: i64, keys: &[&str]| TraceEvent {
        trace_id: id.into(),
        time: t,
        kind: kind.into(),
        text: format!("{kind} {id}"),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    };
    store
        .trace_append(vec![
            e(
                "A",
                "received",
                1000,
                &["from:a@x.test", "to:b@y.test", "mid:<1@x>"],
            ),
            e("A", "delivered", 1001, &["to:b@y.test"]),
            e("B", "received", 2000, &["from:c@x.test", "to:b@y.test"]),
        ])
        .await
        .unwrap();
    // Events committed with a delivery are there too.
    let (acc, _) = setup_account(store.clone(), "t@example.test").await;
    let mut d = delivery(b"x\r\n", &[acc.id]);
    d.trace = vec![e("C", "received", 3000, &["to:t@example.test"])];
    store.deliver(d).await.unwrap();
    let a = store.trace_get("A").await.unwrap();
    assert_eq!(
        a.iter().map(|x| x.kind.as_str()).collect::<Vec<_>>(),
        ["received", "delivered"]
    );
    assert_eq!(
        store.trace_find("to:b@y.test", 0, 10).await.unwrap(),
        ["B", "A"]
    );
    assert_eq!(
        store.trace_find("to:b@y.test", 1500, 10).await.unwrap(),
        ["B"]
    );
    assert_eq!(store.trace_find("mid:<1@x>", 0, 10).await.unwrap(), ["A"]);
    assert_eq!(
        store.trace_find("to:t@example.test", 0, 10).await.unwrap(),
        ["C"]
    );
    assert_eq!(store.trace_recent(0, 2).await.unwrap(), ["C", "B"]);
    assert_eq!(store.trace_prune(2500).await.unwrap(), 3);
    assert!(store.trace_get("A").await.unwrap().is_empty());
    assert!(
        store
            .trace_find("from:a@x.test", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.trace_recent(0, 10).await.unwrap(), ["C"]);
}

pub async fn sieve_scripts(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "a@example.test").await;
    let (b, _) = setup_account(store.clone(), "b@example.test").await;
    assert!(store.sieve_list(a.id).await.unwrap().is_empty());
    assert_eq!(store.sieve_active(a.id).await.unwrap(), None);
    store.sieve_put(a.id, "main", "keep;").await.unwrap();
    store.sieve_put(a.id, "other", "discard;").await.unwrap();
    store.sieve_put(b.id, "main", "stop;").await.unwrap();
    assert!(matches!(
        store.sieve_activate(a.id, Some("nope")).await,
        Err(StoreError::NotFound(_))
    ));
    store.sieve_activate(a.id, Some("main")).await.unwrap();
    let l = store.sieve_list(a.id).await.unwrap();
    assert_eq!(
        l.iter()
            .map(|s| (s.name.as_str(), s.active, s.size))
            .collect::<Vec<_>>(),
        [("main", true, 5), ("other", false, 8)]
    );
    assert_eq!(
        store.sieve_active(a.id).await.unwrap(),
        Some(("main".into(), "keep;".into()))
    );
    assert_eq!(store.sieve_active(b.id).await.unwrap(), None, "per account");
    // Replacing keeps it active; the active one cannot be deleted.
    store
        .sieve_put(a.id, "main", "fileinto \"x\";")
        .await
        .unwrap();
    assert_eq!(
        store.sieve_active(a.id).await.unwrap().unwrap().1,
        "fileinto \"x\";"
    );
    assert!(matches!(
        store.sieve_delete(a.id, "main").await,
        Err(StoreError::Invalid(_))
    ));
    // Renaming the active script keeps it active under its new name.
    assert!(matches!(
        store.sieve_rename(a.id, "main", "other").await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.sieve_rename(a.id, "main", "filters").await.unwrap();
    assert_eq!(
        store.sieve_active(a.id).await.unwrap().unwrap().0,
        "filters"
    );
    assert_eq!(store.sieve_get(a.id, "main").await.unwrap(), None);
    store.sieve_activate(a.id, None).await.unwrap();
    store.sieve_delete(a.id, "filters").await.unwrap();
    assert!(matches!(
        store.sieve_delete(a.id, "filters").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.sieve_get(a.id, "other").await.unwrap().as_deref(),
        Some("discard;")
    );
    // Seen marks: per account, until they expire.
    assert!(!store.seen_mark(a.id, "k", 100, 200).await.unwrap());
    assert!(store.seen_mark(a.id, "k", 150, 250).await.unwrap());
    assert!(!store.seen_mark(b.id, "k", 150, 250).await.unwrap());
    assert!(
        !store.seen_mark(a.id, "k", 200, 300).await.unwrap(),
        "expired"
    );
    // Deleting the account forgets its scripts.
    store.sieve_activate(b.id, Some("main")).await.unwrap();
    store.account_delete(b.id).await.unwrap();
    let (b2, _) = setup_account(store.clone(), "b2@example.test").await;
    assert!(store.sieve_list(b2.id).await.unwrap().is_empty());
}

pub async fn deliver_many(store: Arc<dyn Store>) {
    let (a, ia) = setup_account(store.clone(), "a@example.test").await;
    let (b, ib) = setup_account(store.clone(), "b@example.test").await;
    let reps = store
        .deliver_many(vec![
            delivery(b"Subject: one\r\n\r\n1\r\n", &[a.id]),
            delivery(b"Subject: two\r\n\r\n2\r\n", &[a.id, b.id]),
        ])
        .await
        .unwrap();
    assert_eq!(reps.len(), 2);
    assert_ne!(reps[0].blob, reps[1].blob);
    assert_eq!(store.message_list(ia.id).await.unwrap().len(), 2);
    assert_eq!(store.message_list(ib.id).await.unwrap().len(), 1);
    let e = store.message_get(ib.id, 1).await.unwrap().unwrap();
    assert_eq!(
        store.blob_read(e.blob, 0, 100).await.unwrap(),
        b"Subject: two\r\n\r\n2\r\n"
    );
}

pub async fn sender_verdicts(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "a@example.test").await;
    let (b, _) = setup_account(store.clone(), "b@example.test").await;
    assert_eq!(
        store.sender_verdict(a.id, "x@far.test").await.unwrap(),
        None
    );
    store
        .sender_verdict_set(a.id, "X@Far.test", Some(true))
        .await
        .unwrap();
    assert_eq!(
        store.sender_verdict(a.id, "x@far.test").await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store.sender_verdict(b.id, "x@far.test").await.unwrap(),
        None
    );
    store
        .sender_verdict_set(a.id, "x@far.test", Some(false))
        .await
        .unwrap();
    assert_eq!(
        store.sender_verdict(a.id, "x@far.test").await.unwrap(),
        Some(false)
    );
    store
        .sender_verdict_set(a.id, "Y@far.test", Some(true))
        .await
        .unwrap();
    assert_eq!(
        store.sender_verdict_list(a.id).await.unwrap(),
        vec![
            ("x@far.test".to_string(), false),
            ("y@far.test".to_string(), true)
        ]
    );
    store
        .sender_verdict_set(a.id, "y@far.test", None)
        .await
        .unwrap();
    store
        .sender_verdict_set(a.id, "x@far.test", None)
        .await
        .unwrap();
    assert_eq!(
        store.sender_verdict(a.id, "x@far.test").await.unwrap(),
        None
    );
}

pub async fn queue_claims(store: Arc<dyn Store>) {
    let (_, _) = setup_account(store.clone(), "q@example.test").await;
    let mut d = delivery(b"x\r\n", &[]);
    d.queue = Some(NewQueueEntry {
        sender: "q@example.test".into(),
        recipients: vec![QueueRecipient {
            address: "r@far.test".into(),
            state: RecipientState::Pending,
            notify: None,
            orcpt: None,
            last_error: None,
        }],
        envid: None,
        ret: None,
        trace_id: "t1".into(),
        authenticated: None,
        requiretls: false,
        body_offset: 0,
    });
    let id = store.deliver(d).await.unwrap().queue_id.unwrap();
    let t = now();
    assert!(store.queue_claim(id, "node-a", t + 60).await.unwrap());
    assert!(
        !store.queue_claim(id, "node-b", t + 60).await.unwrap(),
        "A holds it"
    );
    assert!(
        store.queue_claim(id, "node-a", t + 120).await.unwrap(),
        "A may renew"
    );
    assert!(
        store.queue_claim(id, "node-a", 0).await.unwrap(),
        "A releases it"
    );
    assert!(
        store.queue_claim(id, "node-b", t + 1).await.unwrap(),
        "free again"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(
        store.queue_claim(id, "node-c", t + 60).await.unwrap(),
        "B's claim ran out"
    );
    store.queue_delete(id).await.unwrap();
    assert!(matches!(
        store.queue_claim(id, "node-c", t + 60).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn maildrop_lock(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "pop@example.test").await;
    let first = store.lock_maildrop(a.id).await.unwrap();
    assert!(first.is_some());
    assert!(
        store.lock_maildrop(a.id).await.unwrap().is_none(),
        "one session at a time"
    );
    drop(first);
    // Released; a backend may release in the background, so allow it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if store.lock_maildrop(a.id).await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the maildrop stays locked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn crossing_writers(store: Arc<dyn Store>) {
    // Deliveries naming accounts in opposite orders, and copies between them, all at once:
    // every one must succeed (no deadlock between them).
    let (a, a_inbox) = setup_account(store.clone(), "x1@example.test").await;
    let (b, b_inbox) = setup_account(store.clone(), "x2@example.test").await;
    store.deliver(delivery(b"seed\r\n", &[a.id])).await.unwrap();
    store.deliver(delivery(b"seed\r\n", &[b.id])).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u32 {
        let store = store.clone();
        tasks.spawn(async move {
            match i % 3 {
                0 => store
                    .deliver_many(vec![
                        delivery(b"1\r\n", &[a.id]),
                        delivery(b"2\r\n", &[b.id]),
                    ])
                    .await
                    .map(|_| ()),
                1 => store
                    .deliver_many(vec![
                        delivery(b"3\r\n", &[b.id]),
                        delivery(b"4\r\n", &[a.id]),
                    ])
                    .await
                    .map(|_| ()),
                _ => store
                    .copy(a_inbox.id, vec![1], b_inbox.id, false)
                    .await
                    .and(store.copy(b_inbox.id, vec![1], a_inbox.id, false).await)
                    .map(|_| ()),
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let total = store
        .mailbox_get(a_inbox.id)
        .await
        .unwrap()
        .unwrap()
        .messages
        + store
            .mailbox_get(b_inbox.id)
            .await
            .unwrap()
            .unwrap()
            .messages;
    assert_eq!(total, 2 + 40 * 2 + 20 * 2);
}

pub async fn counters(store: Arc<dyn Store>) {
    let now = now_ms();
    let bump = move |c: Option<Counter>| {
        let mut c = c.unwrap_or(Counter {
            since: now,
            expires: now + 60_000,
            ..Default::default()
        });
        c.count += 1;
        Some(c)
    };
    assert_eq!(store.counter_get("k").await.unwrap(), None);
    let first = store.counter_update("k", &bump).await.unwrap().unwrap();
    assert_eq!((first.count, first.since), (1, now));
    assert_eq!(store.counter_get("k").await.unwrap(), Some(first));
    // Every increment counts, however many writers at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..10 {
                store.counter_update("k", &bump).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(store.counter_get("k").await.unwrap().unwrap().count, 101);
    // An expired counter is gone for readers and for the next step.
    let expired = |_: Option<Counter>| {
        Some(Counter {
            count: 7,
            expires: now_ms() - 60_000,
            ..Default::default()
        })
    };
    assert_eq!(store.counter_update("old", &expired).await.unwrap(), None);
    assert_eq!(store.counter_get("old").await.unwrap(), None);
    let seen = std::sync::Mutex::new(Vec::new());
    store
        .counter_update("old", &|c| {
            seen.lock().unwrap().push(c.clone());
            c
        })
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    // A step returning None forgets the counter; others are untouched.
    store.counter_update("other", &bump).await.unwrap();
    assert_eq!(store.counter_update("k", &|_| None).await.unwrap(), None);
    assert_eq!(store.counter_get("k").await.unwrap(), None);
    assert_eq!(store.counter_get("other").await.unwrap().unwrap().count, 1);
    // Every field is kept as given.
    let full = Counter {
        since: now - 5,
        count: 3,
        until: now + 9_000,
        strikes: 2,
        at: now - 7,
        expires: now + 86_400_000,
    };
    let f2 = full.clone();
    store
        .counter_update("full", &move |_| Some(f2.clone()))
        .await
        .unwrap();
    assert_eq!(store.counter_get("full").await.unwrap(), Some(full));
    // Keys of any length (they may carry an address of any length), each its own counter.
    let long = format!("greylist:{}", "x".repeat(6000));
    let longer = format!("{long}y");
    store.counter_update(&long, &bump).await.unwrap();
    store.counter_update(&long, &bump).await.unwrap();
    store.counter_update(&longer, &bump).await.unwrap();
    assert_eq!(store.counter_get(&long).await.unwrap().unwrap().count, 2);
    assert_eq!(store.counter_get(&longer).await.unwrap().unwrap().count, 1);
}

pub async fn web_sessions(store: Arc<dyn Store>) {
    let now = now_ms();
    let session = |id: &str, address: &str, used: i64| WebSession {
        id: id.into(),
        address: address.into(),
        admin: id.starts_with("admin"),
        csrf: format!("csrf-{id}"),
        password: u64::MAX - 5,
        created: now - 1000,
        used,
        expires: now + 60_000,
    };
    store
        .web_session_put(session("admin-1", "a@x.test", now - 30), Some(3))
        .await
        .unwrap();
    assert_eq!(
        store.web_session_get("admin-1").await.unwrap(),
        Some(session("admin-1", "a@x.test", now - 30)),
        "every field comes back as it was"
    );
    store
        .web_session_put(session("s2", "b@x.test", now - 20), Some(3))
        .await
        .unwrap();
    store
        .web_session_put(session("s3", "b@x.test", now - 10), Some(3))
        .await
        .unwrap();
    // Used again: no longer the least recently used; a touch keeps the limit as it is.
    store
        .web_session_put(session("admin-1", "a@x.test", now), None)
        .await
        .unwrap();
    store
        .web_session_put(session("s4", "c@x.test", now), Some(3))
        .await
        .unwrap();
    assert_eq!(
        store.web_session_get("s2").await.unwrap(),
        None,
        "least recently used"
    );
    let mut of_b: Vec<String> = store
        .web_session_list("b@x.test")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    of_b.sort();
    assert_eq!(of_b, ["s3"]);
    store.web_session_delete("s3").await.unwrap();
    assert_eq!(store.web_session_get("s3").await.unwrap(), None);
    // A touch racing a logout does not bring the session back.
    store
        .web_session_put(session("s3", "b@x.test", now + 5), None)
        .await
        .unwrap();
    assert_eq!(store.web_session_get("s3").await.unwrap(), None);
    assert!(store.web_session_get("admin-1").await.unwrap().is_some());
    // An expired session is gone for readers.
    let mut old = session("old", "b@x.test", now - 50);
    old.expires = now - 1;
    store.web_session_put(old, None).await.unwrap();
    assert_eq!(store.web_session_get("old").await.unwrap(), None);
    assert!(store.web_session_list("b@x.test").await.unwrap().is_empty());
}

/// Counts toward the reports we send add up per (kind, domain, day, row) and are taken once;
/// received reports are kept once each, listed newest first by domain, and pruned by age.
pub async fn reports(store: Arc<dyn Store>) {
    let t = |kind, domain: &str, day, row: &str, count| ReportTally {
        kind,
        domain: domain.into(),
        day,
        row: row.into(),
        count,
    };
    use ReportKind::{Dmarc, Tls};
    store
        .report_tally(vec![
            t(Dmarc, "a.test", 20000, "r1", 1),
            t(Dmarc, "a.test", 20000, "r1", 2),
            t(Dmarc, "a.test", 20000, "r2", 1),
            t(Dmarc, "b.test", 20001, "r1", 5),
            t(Tls, "a.test", 20000, "r1", 7),
        ])
        .await
        .unwrap();
    store
        .report_tally(vec![t(Dmarc, "a.test", 20000, "r2", 10)])
        .await
        .unwrap();
    assert_eq!(
        store.report_pending(Dmarc).await.unwrap(),
        vec![("a.test".to_string(), 20000), ("b.test".to_string(), 20001)]
    );
    assert_eq!(
        store.report_pending(Tls).await.unwrap(),
        vec![("a.test".to_string(), 20000)]
    );
    let taken = store.report_take(Dmarc, "a.test", 20000).await.unwrap();
    assert_eq!(
        taken,
        vec![
            t(Dmarc, "a.test", 20000, "r1", 3),
            t(Dmarc, "a.test", 20000, "r2", 11)
        ]
    );
    assert!(
        store
            .report_take(Dmarc, "a.test", 20000)
            .await
            .unwrap()
            .is_empty(),
        "taken once"
    );
    assert_eq!(
        store.report_pending(Dmarc).await.unwrap(),
        vec![("b.test".to_string(), 20001)]
    );
    assert_eq!(
        store.report_take(Tls, "a.test", 20000).await.unwrap(),
        vec![t(Tls, "a.test", 20000, "r1", 7)],
        "kinds apart"
    );

    let r = |domain: &str, org: &str, id: &str, received| ReceivedReport {
        kind: Dmarc,
        domain: domain.into(),
        org: org.into(),
        report_id: id.into(),
        begin: 1_700_000_000,
        end: 1_700_086_399,
        received,
        body: format!("{{\"id\":\"{id}\"}}"),
    };
    assert!(
        store
            .report_put(r("a.test", "google.com", "1", 100))
            .await
            .unwrap()
    );
    assert!(
        !store
            .report_put(r("a.test", "google.com", "1", 150))
            .await
            .unwrap(),
        "the same report again"
    );
    assert!(
        store
            .report_put(r("a.test", "yahoo.com", "1", 200))
            .await
            .unwrap()
    );
    assert!(
        store
            .report_put(r("b.test", "google.com", "1", 300))
            .await
            .unwrap()
    );
    let mut tls = r("a.test", "google.com", "1", 400);
    tls.kind = Tls;
    assert!(store.report_put(tls.clone()).await.unwrap(), "kinds apart");
    let all = store.report_list(None, 0).await.unwrap();
    assert_eq!(
        all.iter().map(|x| x.received).collect::<Vec<_>>(),
        vec![400, 300, 200, 100]
    );
    assert_eq!(all[0], tls);
    let a: Vec<i64> = store
        .report_list(Some("a.test"), 0)
        .await
        .unwrap()
        .iter()
        .map(|x| x.received)
        .collect();
    assert_eq!(a, vec![400, 200, 100]);
    assert_eq!(
        store.report_list(Some("a.test"), 200).await.unwrap().len(),
        2
    );
    assert_eq!(store.report_prune(250).await.unwrap(), 2);
    assert_eq!(store.report_list(None, 0).await.unwrap().len(), 2);
    assert!(
        store
            .report_put(r("a.test", "google.com", "1", 500))
            .await
            .unwrap(),
        "forgotten, so kept again"
    );
}

/// Subscriptions are names: a new account's mailboxes are subscribed, a created one is not,
/// deletion keeps the name, a rename carries it and its children's along, delivery into a
/// folder it creates subscribes it, and the account's deletion forgets them all.
pub async fn subscriptions(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "s@example.test").await;
    let subs = |store: Arc<dyn Store>, id| async move { store.subscriptions(id).await.unwrap() };
    assert_eq!(
        subs(store.clone(), a.id).await,
        ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    );
    let w = store.mailbox_create(a.id, "Work", None).await.unwrap();
    store
        .mailbox_create(a.id, "Work/Projects", None)
        .await
        .unwrap();
    assert!(!subs(store.clone(), a.id).await.contains(&"Work".into()));
    for name in ["Work", "Work/Projects", "Work/Gone/x", "Elsewhere", "inbox"] {
        store.subscription_set(a.id, name, true).await.unwrap();
    }
    store.subscription_set(a.id, "Work", true).await.unwrap();
    store.subscription_set(a.id, "Junk", false).await.unwrap();
    store.subscription_set(a.id, "Never", false).await.unwrap();
    assert_eq!(
        subs(store.clone(), a.id).await,
        [
            "Archive",
            "Drafts",
            "Elsewhere",
            "INBOX",
            "Sent",
            "Trash",
            "Work",
            "Work/Gone/x",
            "Work/Projects"
        ]
    );
    store.mailbox_rename(w.id, "Job").await.unwrap();
    let now_subs = subs(store.clone(), a.id).await;
    assert!(
        now_subs.iter().all(|n| !n.starts_with("Work")),
        "{now_subs:?}"
    );
    for moved in ["Job", "Job/Gone/x", "Job/Projects"] {
        assert!(
            now_subs.contains(&moved.to_string()),
            "{moved}: {now_subs:?}"
        );
    }
    let p = store
        .mailbox_by_name(a.id, "Job/Projects")
        .await
        .unwrap()
        .unwrap();
    store.mailbox_delete(p.id).await.unwrap();
    assert!(
        subs(store.clone(), a.id)
            .await
            .contains(&"Job/Projects".into()),
        "a deleted mailbox stays subscribed"
    );
    assert!(matches!(
        store.subscription_set(a.id, "", true).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.subscription_set(a.id + 1000, "X", true).await,
        Err(StoreError::NotFound(_))
    ));
    let mut d = delivery(b"Subject: filed\r\n\r\nx\r\n", &[a.id]);
    d.targets[0].mailbox = MailboxTarget::Name {
        name: "Lists/rust".into(),
        create: true,
    };
    let rep = store.deliver(d).await.unwrap();
    assert!(rep.targets[0].is_ok());
    assert!(
        subs(store.clone(), a.id)
            .await
            .contains(&"Lists/rust".into())
    );
    let (b, _) = setup_account(store.clone(), "t@example.test").await;
    store.account_delete(a.id).await.unwrap();
    assert!(subs(store.clone(), a.id).await.is_empty());
    assert_eq!(
        subs(store.clone(), b.id).await.len(),
        6,
        "another account's stay"
    );
}

/// An expunged message is kept, bytes and all, for sessions not yet told of the expunge; a
/// purge lets it go, and so does the deletion of its mailbox.
pub async fn expunged_kept(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "k@example.test").await;
    for i in 0..3 {
        store
            .deliver(delivery(
                format!("Subject: {i}\r\n\r\nm{i}\r\n").as_bytes(),
                &[a.id],
            ))
            .await
            .unwrap();
    }
    store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![2],
            op: FlagOp::Add,
            flags: Flags {
                bits: Flags::DELETED,
                keywords: vec!["$Done".into()],
            },
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    let before = store.message_get(inbox.id, 2).await.unwrap().unwrap();
    assert_eq!(store.expunge(inbox.id, vec![2, 3]).await.unwrap(), [2, 3]);
    assert!(store.message_get(inbox.id, 2).await.unwrap().is_none());
    assert!(
        store.expunged_get(inbox.id, &[1]).await.unwrap().is_empty(),
        "1 is not expunged"
    );
    let kept = store.expunged_get(inbox.id, &[3, 2, 9]).await.unwrap();
    assert_eq!(kept.iter().map(|e| e.uid).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(kept[0], before, "kept as it was");
    assert_eq!(
        store.blob_read(kept[0].blob, 0, 100).await.unwrap(),
        b"Subject: 1\r\n\r\nm1\r\n"
    );
    let mb = store.mailbox_get(inbox.id).await.unwrap().unwrap();
    assert_eq!(mb.messages, 1, "kept messages count for nothing");
    assert_eq!(store.account_usage(a.id).await.unwrap().messages, 1);
    assert_eq!(
        store.expunged_purge(now() - 3600).await.unwrap(),
        0,
        "too recent"
    );
    assert_eq!(
        store.expunged_get(inbox.id, &[2, 3]).await.unwrap().len(),
        2
    );
    assert_eq!(store.expunged_purge(now() + 1).await.unwrap(), 2);
    assert!(
        store
            .expunged_get(inbox.id, &[2, 3])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.blob_info(kept[0].blob).await.is_err());
    // A kept message of a deleted mailbox goes with the mailbox.
    let f = store.mailbox_create(a.id, "F", None).await.unwrap();
    let pairs = store.copy(inbox.id, vec![1], f.id, true).await.unwrap();
    store.expunge(f.id, vec![pairs[0].1]).await.unwrap();
    let gone = store.expunged_get(f.id, &[pairs[0].1]).await.unwrap();
    assert_eq!(gone.len(), 1);
    store.mailbox_delete(f.id).await.unwrap();
    assert!(
        store.blob_info(gone[0].blob).await.is_ok(),
        "still kept for INBOX's move"
    );
    assert_eq!(store.expunged_purge(now() + 1).await.unwrap(), 1);
    assert!(store.blob_info(gone[0].blob).await.is_err());
}
