//! Backups: the embedded store takes them while in use and a data directory made from one is
//! the store as it was; PostgreSQL refuses, naming its own tools.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use postern_store::backup::BackupKind;
use postern_store::*;

use super::{delivery, delivery_file, setup_account};

/// Every mailbox of every account: (address, name) → (uidvalidity, highest modseq, messages
/// as (uid, flags, modseq, bytes), access list, each other account's own \Seen); which
/// accounts are shared mailboxes, and the send-as grants.
#[derive(Debug, PartialEq)]
struct State {
    mailboxes: BTreeMap<(String, String), Folder>,
    shared: Vec<(String, bool)>,
    send_as: Vec<SendAsGrant>,
    /// Each account's calendars and address books, with their resources (content included).
    dav: Vec<(String, DavCollection, Vec<DavResource>)>,
}

type Folder = (
    u32,
    u64,
    Vec<(u32, Flags, u64, Vec<u8>)>,
    Vec<AclEntry>,
    Vec<(String, Vec<Uid>)>,
);

async fn state(store: &dyn Store) -> State {
    let mut mailboxes = BTreeMap::new();
    let accounts = store.account_list().await.unwrap();
    let mut dav = Vec::new();
    for a in &accounts {
        for c in store.dav_collections(a.id).await.unwrap() {
            let mut res = store.dav_resources(c.id, None, true).await.unwrap();
            for r in &mut res {
                // Listed contents are what a read of each gives.
                let one = store.dav_resource(c.id, &r.name).await.unwrap().unwrap();
                assert_eq!(one.content, r.content);
            }
            res.sort_by(|x, y| x.name.cmp(&y.name));
            dav.push((a.address.clone(), c, res));
        }
    }
    for a in &accounts {
        for m in store.mailbox_list(a.id).await.unwrap() {
            let mut msgs = Vec::new();
            for e in store.message_list(m.id).await.unwrap() {
                let bytes = store.blob_read(e.blob, 0, e.size).await.unwrap();
                msgs.push((e.uid, e.flags.clone(), e.modseq, bytes));
            }
            let mut seen = Vec::new();
            for r in accounts.iter().filter(|r| r.id != a.id) {
                let uids = store.seen_private(m.id, r.id).await.unwrap();
                if !uids.is_empty() {
                    seen.push((r.address.clone(), uids));
                }
            }
            mailboxes.insert(
                (a.address.clone(), m.name.clone()),
                (
                    m.uidvalidity,
                    m.highest_modseq,
                    msgs,
                    store.acl_get(m.id).await.unwrap(),
                    seen,
                ),
            );
        }
    }
    State {
        mailboxes,
        shared: accounts
            .iter()
            .map(|a| (a.address.clone(), a.shared))
            .collect(),
        send_as: store.send_as_list().await.unwrap(),
        dav,
    }
}

fn restore(backups: &Path, name: &str, target: &Path) -> State {
    let all = backup::list(backups).unwrap();
    let m = embedded::backup::pick(&all, Some(name), None).unwrap();
    embedded::backup::restore(backups, &all, &m, target, &NoProgress).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = embedded::EmbeddedStore::open(target, Default::default()).unwrap();
        let st = state(&*s).await;
        s.close().await.unwrap();
        st
    })
}

pub async fn backups(store: Arc<dyn Store>, spool: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    if let BackupSupport::Database { detail, .. } = store.backup_support().await.unwrap() {
        assert!(detail.contains("archive_mode"), "{detail}");
        let e = store
            .backup(&backups, false, Arc::new(NoProgress))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg_dump") && e.contains("WAL archiving"), "{e}");
        return;
    }
    let (a, inbox) = setup_account(store.clone(), "keep@example.test").await;
    for i in 0..20 {
        store
            .deliver(delivery(
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
                &[a.id],
            ))
            .await
            .unwrap();
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(spool.join("big-1"), &big).unwrap();
    store
        .deliver(delivery_file(
            &spool.join("big-1"),
            big.len() as u64,
            &[a.id],
        ))
        .await
        .unwrap();
    store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![1, 2],
            op: FlagOp::Add,
            flags: Flags {
                bits: 1,
                keywords: vec!["$Label1".into()],
            },
            unchanged_since: None,
            reader: None,
        })
        .await
        .unwrap();
    // Shared with a reader, who has read a message; and a shared mailbox one may send as.
    let (reader, _) = setup_account(store.clone(), "reader@example.test").await;
    let info = store
        .account_create(NewAccount {
            address: "info@example.test".into(),
            password_hash: String::new(),
            quota_bytes: 0,
            quota_messages: 0,
            shared: true,
        })
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "reader@example.test", Rights::parse("lrs").ok())
        .await
        .unwrap();
    store
        .flags_update(FlagsUpdate {
            mailbox: inbox.id,
            uids: vec![4],
            op: FlagOp::Add,
            flags: Flags {
                bits: Flags::SEEN,
                keywords: vec![],
            },
            unchanged_since: None,
            reader: Some(reader.id),
        })
        .await
        .unwrap();
    store
        .send_as_set(&info.address, "keep@example.test", Some(SendAs::OnBehalf))
        .await
        .unwrap();
    // A calendar with an event, and one removed (sync-collection reports it gone).
    let cal = store
        .dav_collection_create(
            NewDavCollection {
                account: a.id,
                kind: DavKind::Calendar,
                name: "work".into(),
                display_name: "Work".into(),
                description: String::new(),
                color: "#123456".into(),
                components: vec!["VEVENT".into()],
            },
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    for n in ["a.ics", "b.ics"] {
        store
            .dav_resource_put(
                cal.id,
                super::dav::put(n, n, n, (Some(5), None)),
                DavLimits::NONE,
            )
            .await
            .unwrap()
            .unwrap();
    }
    store
        .dav_resource_delete(cal.id, "b.ics", DavCondition::Always)
        .await
        .unwrap()
        .unwrap();
    let before = state(&*store).await;
    assert_eq!(before.dav.len(), 1);
    assert_eq!(before.dav[0].2.len(), 1);
    assert_eq!(before.send_as.len(), 1);
    assert!(before.shared.contains(&(info.address.clone(), true)));
    assert_eq!(
        before.mailboxes[&(a.address.clone(), "INBOX".to_string())].4,
        [("reader@example.test".to_string(), vec![4])]
    );

    let full = store
        .backup(&backups, true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(full.kind, BackupKind::Full, "nothing to build on yet");
    assert_eq!(full.counts.messages, 21);
    assert_eq!(full.big.len(), 1);

    // Later: more mail, a message gone, flags changed.
    for i in 20..30 {
        store
            .deliver(delivery(
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
                &[a.id],
            ))
            .await
            .unwrap();
    }
    store.expunge(inbox.id, vec![3]).await.unwrap();
    store.expunged_purge(now() + 1).await.unwrap();
    let after = state(&*store).await;
    let incr = store
        .backup(&backups, true, Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(incr.kind, BackupKind::Incremental);
    assert_eq!(incr.base.as_deref(), Some(full.name.as_str()));
    assert!(
        incr.big.is_empty(),
        "the large message is in the full backup"
    );
    let new_bytes: u64 = incr.segments.iter().map(|p| p.to - p.from).sum();
    let all_bytes: u64 = full.segments.iter().map(|p| p.to - p.from).sum();
    assert!(
        new_bytes > 0 && new_bytes < all_bytes,
        "only the new bytes: {new_bytes} of {all_bytes}"
    );
    assert_eq!(backup::list(&backups).unwrap().len(), 2);

    let (f, i) = (full.name.clone(), incr.name.clone());
    let (b2, d1, d2) = (
        backups.clone(),
        dir.path().join("r1"),
        dir.path().join("r2"),
    );
    let (r1, r2) =
        tokio::task::spawn_blocking(move || (restore(&b2, &f, &d1), restore(&b2, &i, &d2)))
            .await
            .unwrap();
    assert_eq!(
        r1, before,
        "the full backup restores the state it was taken in"
    );
    assert_eq!(r2, after, "the incremental one restores the later state");

    // A damaged byte is found by the restore, not served later.
    let seg = std::fs::read_dir(backups.join(&incr.name))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .unwrap()
        .path();
    let mut b = std::fs::read(&seg).unwrap();
    b[0] ^= 1;
    std::fs::write(&seg, b).unwrap();
    let all = backup::list(&backups).unwrap();
    let e = embedded::backup::restore(&backups, &all, &incr, &dir.path().join("r3"), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged"), "{e}");
    assert!(backup::verify_files(&backups.join(&incr.name), &incr, |_| {}).is_err());
}
