//! A copy of a store keeps what is shared: shared-mailbox accounts, access lists, what each
//! reader has seen (under the messages' new UIDs) and send-as grants.

use postern_store::embedded::EmbeddedStore;
use postern_store::*;

async fn account(store: &SharedStore, address: &str, shared: bool) -> Account {
    store
        .account_create(NewAccount {
            address: address.into(),
            password_hash: String::new(),
            quota_bytes: 0,
            quota_messages: 0,
            shared,
        })
        .await
        .unwrap()
}

fn message(i: usize, account: AccountId) -> Delivery {
    let bytes = format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes();
    Delivery {
        blob: NewBlob {
            size: bytes.len() as u64,
            data: BlobData::Memory(bytes),
            meta: Vec::new(),
        },
        internal_date: 1_700_000_000 + i as i64,
        targets: vec![DeliveryTarget {
            account,
            mailbox: MailboxTarget::Name {
                name: INBOX.into(),
                create: false,
            },
            flags: Flags::default(),
            enforce_quota: false,
        }],
        queue: None,
        trace: Vec::new(),
    }
}

fn read(mailbox: MailboxId, uids: &[Uid], reader: AccountId) -> FlagsUpdate {
    FlagsUpdate {
        mailbox,
        uids: uids.to_vec(),
        op: FlagOp::Add,
        flags: Flags {
            bits: Flags::SEEN,
            keywords: Vec::new(),
        },
        unchanged_since: None,
        reader: Some(reader),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_is_copied() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from: SharedStore = EmbeddedStore::open(dirs.0.path(), Default::default()).unwrap();
    let to: SharedStore = EmbeddedStore::open(dirs.1.path(), Default::default()).unwrap();
    from.domain_add("example.test").await.unwrap();
    // Account ids and UIDs differ in the copy: an account that went, a message expunged.
    let gone = account(&from, "gone@example.test", false).await;
    from.account_delete(gone.id).await.unwrap();
    let team = account(&from, "team@example.test", true).await;
    let bob = account(&from, "bob@example.test", false).await;
    let carol = account(&from, "carol@example.test", false).await;
    for i in 0..4 {
        from.deliver(message(i, team.id)).await.unwrap();
    }
    let inbox = from.mailbox_by_name(team.id, INBOX).await.unwrap().unwrap();
    from.expunge(inbox.id, vec![1]).await.unwrap();
    from.acl_set(inbox.id, "bob@example.test", Rights::parse("lrs").ok())
        .await
        .unwrap();
    from.acl_set(inbox.id, "$example.test", Rights::parse("lr").ok())
        .await
        .unwrap();
    from.flags_update(read(inbox.id, &[2, 4], bob.id))
        .await
        .unwrap();
    from.flags_update(read(inbox.id, &[3], carol.id))
        .await
        .unwrap();
    from.send_as_set(
        "team@example.test",
        "bob@example.test",
        Some(SendAs::OnBehalf),
    )
    .await
    .unwrap();

    let limits = MetadataLimits {
        max_value: 1024,
        max_entries: 10,
        max_total: 4096,
    };
    let note = |n: &str, v: &str| vec![(n.to_string(), Some(v.as_bytes().to_vec()))];
    for (who, mailbox, name, value) in [
        (bob.id, Some(inbox.id), "/private/comment", "bob's note"),
        (bob.id, Some(inbox.id), "/shared/comment", "the team's"),
        (team.id, None, "/private/vendor/x/y", "server"),
    ] {
        from.metadata_set(who, mailbox, note(name, value), limits)
            .await
            .unwrap()
            .unwrap();
    }

    let (a, b) = postern_migrate::copy::copy(&from, &to, &NoProgress)
        .await
        .unwrap();
    let (table, same) = postern_migrate::copy::report(&a, &b);
    assert!(same, "{table}");
    assert!(table.contains("access-list lines") && table.contains("send-as grants"));
    assert!(table.contains("METADATA entries"));

    let by = async |address: &str| to.account_by_address(address).await.unwrap().unwrap();
    let (team2, bob2, carol2) = (
        by("team@example.test").await,
        by("bob@example.test").await,
        by("carol@example.test").await,
    );
    assert!(team2.shared && !bob2.shared);
    assert_ne!(bob2.id, bob.id, "the copy numbers accounts afresh");
    let inbox2 = to.mailbox_by_name(team2.id, INBOX).await.unwrap().unwrap();
    let value = async |who: u64, mailbox: Option<u64>, name: &str| {
        let e = to.metadata_get(who, mailbox, name, None).await.unwrap();
        String::from_utf8(e.first().map(|e| e.value.clone()).unwrap_or_default()).unwrap()
    };
    assert_eq!(
        value(bob2.id, Some(inbox2.id), "/private/comment").await,
        "bob's note"
    );
    assert_eq!(
        value(team2.id, Some(inbox2.id), "/shared/comment").await,
        "the team's"
    );
    assert_eq!(
        value(team2.id, Some(inbox2.id), "/private/comment").await,
        ""
    );
    assert_eq!(value(team2.id, None, "/private/vendor/x/y").await, "server");
    assert_eq!(
        to.acl_get(inbox2.id).await.unwrap(),
        from.acl_get(inbox.id).await.unwrap()
    );
    // Source UIDs 2, 3, 4 are 1, 2, 3 in the copy.
    assert_eq!(to.seen_private(inbox2.id, bob2.id).await.unwrap(), [1, 3]);
    assert_eq!(to.seen_private(inbox2.id, carol2.id).await.unwrap(), [2]);
    assert!(
        to.message_list(inbox2.id)
            .await
            .unwrap()
            .iter()
            .all(|e| !e.flags.seen()),
        "the owner has seen none"
    );
    assert_eq!(
        to.send_as_list().await.unwrap(),
        from.send_as_list().await.unwrap()
    );
    from.close().await.unwrap();
    to.close().await.unwrap();
}

/// Calendars and address books come along with what is in them, their properties and spans;
/// their sync tokens start anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendars_and_address_books_are_copied() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from: SharedStore = EmbeddedStore::open(dirs.0.path(), Default::default()).unwrap();
    let to: SharedStore = EmbeddedStore::open(dirs.1.path(), Default::default()).unwrap();
    from.domain_add("example.test").await.unwrap();
    let ann = account(&from, "ann@example.test", false).await;
    let new = |kind, name: &str| NewDavCollection {
        account: ann.id,
        kind,
        name: name.into(),
        display_name: format!("{name}!"),
        description: "d".into(),
        color: "#112233".into(),
        components: vec!["VEVENT".into()],
    };
    let work = from
        .dav_collection_create(new(DavKind::Calendar, "work"), DavLimits::NONE)
        .await
        .unwrap()
        .unwrap();
    let book = from
        .dav_collection_create(new(DavKind::AddressBook, "friends"), DavLimits::NONE)
        .await
        .unwrap()
        .unwrap();
    from.dav_collection_update(
        work.id,
        DavCollectionUpdate {
            props: vec![("{urn:x}order".into(), Some("4".into()))],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let put = |name: &str, uid: &str, span| DavPut {
        name: name.into(),
        content: format!("content of {name}").into_bytes(),
        component: "VEVENT".into(),
        uid: uid.into(),
        start: span,
        end: None,
        condition: DavCondition::Always,
    };
    for (c, name, span) in [
        (work.id, "a.ics", Some(100)),
        (work.id, "b.ics", None),
        (book.id, "c.vcf", None),
    ] {
        from.dav_resource_put(c, put(name, name, span), DavLimits::NONE)
            .await
            .unwrap()
            .unwrap();
    }
    from.dav_resource_delete(work.id, "b.ics", DavCondition::Always)
        .await
        .unwrap()
        .unwrap();

    let (a, b) = postern_migrate::copy::copy(&from, &to, &NoProgress)
        .await
        .unwrap();
    let (table, same) = postern_migrate::copy::report(&a, &b);
    assert!(same, "{table}");
    assert!(
        table.contains("DAV collections") && table.contains("DAV resources"),
        "{table}"
    );
    let ann2 = to
        .account_by_address("ann@example.test")
        .await
        .unwrap()
        .unwrap();
    let copied = to.dav_collections(ann2.id).await.unwrap();
    let originals = from.dav_collections(ann.id).await.unwrap();
    assert_eq!(copied.len(), 2);
    for (c, o) in copied.iter().zip(&originals) {
        assert_eq!(
            (
                &c.kind,
                &c.name,
                &c.display_name,
                &c.description,
                &c.color,
                &c.components,
                &c.props
            ),
            (
                &o.kind,
                &o.name,
                &o.display_name,
                &o.description,
                &o.color,
                &o.components,
                &o.props
            )
        );
        let mine = to.dav_resources(c.id, None, true).await.unwrap();
        let theirs = from.dav_resources(o.id, None, true).await.unwrap();
        let view = |v: &[DavResource]| {
            v.iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.etag.clone(),
                        r.uid.clone(),
                        r.start,
                        r.content.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&mine), view(&theirs));
    }
    from.close().await.unwrap();
    to.close().await.unwrap();
}
