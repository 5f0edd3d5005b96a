//! Sharing: access lists, each reader's own \Seen, what goes with mailboxes and accounts,
//! send-as grants and shared-mailbox accounts.

use std::sync::Arc;
use std::time::Duration;

use postern_store::*;

use super::{delivery, setup_account};

fn rights(letters: &str) -> Option<Rights> {
    Some(Rights::parse(letters).unwrap())
}

fn line(identifier: &str, rights: &str) -> AclEntry {
    AclEntry {
        identifier: identifier.into(),
        rights: rights.into(),
    }
}

fn flags(bits: u8) -> Flags {
    Flags {
        bits,
        keywords: Vec::new(),
    }
}

fn store_flags(
    mailbox: MailboxId,
    uids: &[Uid],
    op: FlagOp,
    bits: u8,
    reader: Option<AccountId>,
) -> FlagsUpdate {
    FlagsUpdate {
        mailbox,
        uids: uids.to_vec(),
        op,
        flags: flags(bits),
        unchanged_since: None,
        reader,
    }
}

/// The next event `want` picks, within a few seconds.
async fn next_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<StoreEvent>,
    want: impl Fn(&StoreEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(e) = rx.recv().await
                && let Some(t) = want(&e)
            {
                return t;
            }
        }
    })
    .await
    .expect("the event came")
}

fn acl_event(e: &StoreEvent) -> Option<(AccountId, MailboxId)> {
    match e {
        StoreEvent::Acl { account, mailbox } => Some((*account, *mailbox)),
        _ => None,
    }
}

async fn deliver_n(store: &Arc<dyn Store>, account: AccountId, n: usize) {
    for i in 0..n {
        store
            .deliver(delivery(
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
                &[account],
            ))
            .await
            .unwrap();
    }
}

pub async fn acl_lines(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "owner@example.test").await;
    let work = store.mailbox_create(a.id, "Work", None).await.unwrap();
    let mut events = store.subscribe();
    assert!(store.acl_get(inbox.id).await.unwrap().is_empty());

    store
        .acl_set(inbox.id, "Bob@Example.TEST", rights("rl"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events, acl_event).await,
        (a.id, inbox.id),
        "sessions hear of it, with the owner's account"
    );
    store
        .acl_set(inbox.id, "anyone", rights("l"))
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "$team@example.test", rights("srl"))
        .await
        .unwrap();
    store
        .acl_set(work.id, "bob@example.test", rights("lrswipkxtea"))
        .await
        .unwrap();
    assert_eq!(
        store.acl_get(inbox.id).await.unwrap(),
        [
            line("$team@example.test", "lrs"),
            line("anyone", "l"),
            line("bob@example.test", "lr"),
        ],
        "by identifier, lower case, letters in RFC order"
    );

    // A line is replaced, not added to.
    store
        .acl_set(inbox.id, "bob@example.test", rights("lrswi"))
        .await
        .unwrap();
    assert_eq!(
        store.acl_get(inbox.id).await.unwrap()[2],
        line("bob@example.test", "lrswi")
    );

    // No rights, or none given: the line goes; a line that is not there goes quietly.
    store.acl_set(inbox.id, "anyone", None).await.unwrap();
    store
        .acl_set(inbox.id, "$Team@example.test", Some(Rights::NONE))
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "nobody@example.test", None)
        .await
        .unwrap();
    assert_eq!(
        store.acl_get(inbox.id).await.unwrap(),
        [line("bob@example.test", "lrswi")]
    );
    assert_eq!(
        store.acl_get(work.id).await.unwrap(),
        [line("bob@example.test", "lrswipkxtea")],
        "each mailbox has its own list"
    );

    assert!(matches!(
        store
            .acl_set(999_999, "bob@example.test", rights("l"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.acl_set(inbox.id, "", rights("l")).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn acl_granted_lists(store: Arc<dyn Store>) {
    let (a, inbox) = setup_account(store.clone(), "one@example.test").await;
    let (b, b_inbox) = setup_account(store.clone(), "two@example.test").await;
    let work = store.mailbox_create(a.id, "Work", None).await.unwrap();
    let b_lists = store.mailbox_create(b.id, "Lists", None).await.unwrap();
    store
        .acl_set(work.id, "bob@example.test", rights("lr"))
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "bob@example.test", rights("lrs"))
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "anyone", rights("l"))
        .await
        .unwrap();
    store
        .acl_set(b_inbox.id, "$example.test", rights("lr"))
        .await
        .unwrap();
    store
        .acl_set(b_inbox.id, "carol@example.test", rights("l"))
        .await
        .unwrap();
    store
        .acl_set(b_lists.id, "carol@example.test", rights("l"))
        .await
        .unwrap();

    let got = store
        .acl_granted(&[
            "anyone".into(),
            "Bob@Example.test".into(),
            "$example.test".into(),
            "nobody@example.test".into(),
        ])
        .await
        .unwrap();
    let mut want = vec![
        (inbox.id, line("anyone", "l")),
        (inbox.id, line("bob@example.test", "lrs")),
        (work.id, line("bob@example.test", "lr")),
        (b_inbox.id, line("$example.test", "lr")),
    ];
    want.sort_by(|x, y| (x.0, &x.1.identifier).cmp(&(y.0, &y.1.identifier)));
    assert_eq!(
        got.iter()
            .map(|(m, l)| (m.id, l.clone()))
            .collect::<Vec<_>>(),
        want,
        "by mailbox, then identifier; a mailbox once per line"
    );
    let named: Vec<&str> = got.iter().map(|(m, _)| m.name.as_str()).collect();
    assert!(named.contains(&"Work") && named.contains(&"INBOX"));
    assert!(
        got.iter()
            .all(|(m, _)| m.account == a.id || m.account == b.id)
    );

    assert!(store.acl_granted(&[]).await.unwrap().is_empty());
    store
        .acl_set(work.id, "bob@example.test", None)
        .await
        .unwrap();
    let bob: Vec<MailboxId> = store
        .acl_granted(&["bob@example.test".into()])
        .await
        .unwrap()
        .iter()
        .map(|(m, _)| m.id)
        .collect();
    assert_eq!(bob, [inbox.id]);
}

pub async fn readers_own_seen(store: Arc<dyn Store>) {
    let (owner, inbox) = setup_account(store.clone(), "shared@example.test").await;
    let (r1, _) = setup_account(store.clone(), "r1@example.test").await;
    let (r2, _) = setup_account(store.clone(), "r2@example.test").await;
    deliver_n(&store, owner.id, 3).await;
    for r in ["r1@example.test", "r2@example.test"] {
        store.acl_set(inbox.id, r, rights("lrswi")).await.unwrap();
    }
    let m0 = store.mailbox_get(inbox.id).await.unwrap().unwrap();
    assert_eq!(m0.unseen, 3);
    let m0 = m0.highest_modseq;
    let mut events = store.subscribe();
    let seen = |bits| flags(Flags::SEEN | bits);
    let counters = async |store: &Arc<dyn Store>| {
        let m = store.mailbox_get(inbox.id).await.unwrap().unwrap();
        (m.unseen, m.highest_modseq)
    };

    // Reader 1 reads messages 3 and 1: its own \Seen, one new modseq, the owner's counter.
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[3, 1],
            FlagOp::Add,
            Flags::SEEN,
            Some(r1.id),
        ))
        .await
        .unwrap();
    assert_eq!(res.updated, [(3, seen(0), m0 + 1), (1, seen(0), m0 + 1)]);
    assert_eq!(counters(&store).await, (3, m0 + 1));
    assert_eq!(
        next_event(&mut events, |e| match e {
            StoreEvent::Mailbox {
                mailbox,
                highest_modseq,
                ..
            } if *mailbox == inbox.id => Some(*highest_modseq),
            _ => None,
        })
        .await,
        m0 + 1
    );
    assert_eq!(store.seen_private(inbox.id, r1.id).await.unwrap(), [1, 3]);
    assert!(
        store
            .seen_private(inbox.id, r2.id)
            .await
            .unwrap()
            .is_empty()
    );
    let stored = store.message_list(inbox.id).await.unwrap();
    assert!(
        stored.iter().all(|e| !e.flags.seen()),
        "the stored \\Seen is the owner's"
    );
    assert_eq!(
        stored.iter().map(|e| e.modseq).collect::<Vec<_>>(),
        [m0 + 1, m0 - 1, m0 + 1]
    );

    // Reader 2 reads message 2 and flags message 3: \Flagged is everyone's.
    store
        .flags_update(store_flags(
            inbox.id,
            &[2],
            FlagOp::Add,
            Flags::SEEN,
            Some(r2.id),
        ))
        .await
        .unwrap();
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[3],
            FlagOp::Add,
            Flags::FLAGGED,
            Some(r2.id),
        ))
        .await
        .unwrap();
    assert_eq!(
        res.updated,
        [(3, flags(Flags::FLAGGED), m0 + 3)],
        "as reader 2 sees it: flagged, not seen"
    );
    assert_eq!(
        store.message_get(inbox.id, 3).await.unwrap().unwrap().flags,
        flags(Flags::FLAGGED)
    );

    // The owner reads message 3 (without a reader, or as its own reader): the stored \Seen.
    let res = store
        .flags_update(store_flags(inbox.id, &[3], FlagOp::Add, Flags::SEEN, None))
        .await
        .unwrap();
    assert_eq!(res.updated, [(3, seen(Flags::FLAGGED), m0 + 4)]);
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[1],
            FlagOp::Add,
            Flags::SEEN,
            Some(owner.id),
        ))
        .await
        .unwrap();
    assert_eq!(res.updated, [(1, seen(0), m0 + 5)]);
    assert_eq!(counters(&store).await, (1, m0 + 5));
    assert!(
        store
            .seen_private(inbox.id, owner.id)
            .await
            .unwrap()
            .is_empty()
    );

    // Reader 1 sees message 3 flagged already: nothing changes, no modseq.
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[3],
            FlagOp::Add,
            Flags::FLAGGED,
            Some(r1.id),
        ))
        .await
        .unwrap();
    assert!(res.updated.is_empty());
    assert_eq!(counters(&store).await, (1, m0 + 5));

    // Reader 1 marks message 1 unseen: for itself only.
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[1],
            FlagOp::Remove,
            Flags::SEEN,
            Some(r1.id),
        ))
        .await
        .unwrap();
    assert_eq!(res.updated, [(1, flags(0), m0 + 6)]);
    assert_eq!(store.seen_private(inbox.id, r1.id).await.unwrap(), [3]);
    assert!(
        store
            .message_get(inbox.id, 1)
            .await
            .unwrap()
            .unwrap()
            .flags
            .seen()
    );
    assert_eq!(counters(&store).await, (1, m0 + 6));

    // A reader's Replace keeps the owner's \Seen.
    let res = store
        .flags_update(store_flags(
            inbox.id,
            &[2],
            FlagOp::Replace,
            Flags::DRAFT,
            Some(r1.id),
        ))
        .await
        .unwrap();
    assert_eq!(res.updated, [(2, flags(Flags::DRAFT), m0 + 7)]);
    assert_eq!(store.seen_private(inbox.id, r2.id).await.unwrap(), [2]);

    // UNCHANGEDSINCE, for a reader as for anyone: message 1 changed after m0 + 4.
    let mut u = store_flags(inbox.id, &[1, 3], FlagOp::Add, Flags::SEEN, Some(r2.id));
    u.unchanged_since = Some(m0 + 4);
    let res = store.flags_update(u).await.unwrap();
    assert_eq!(res.modified, [1]);
    assert_eq!(res.updated, [(3, seen(Flags::FLAGGED), m0 + 8)]);
    assert_eq!(store.seen_private(inbox.id, r2.id).await.unwrap(), [2, 3]);

    let stored: Vec<Flags> = store
        .message_list(inbox.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.flags)
        .collect();
    assert_eq!(
        stored,
        [seen(0), flags(Flags::DRAFT), seen(Flags::FLAGGED)],
        "the owner's view"
    );
    assert_eq!(counters(&store).await, (1, m0 + 8));

    assert!(matches!(
        store
            .flags_update(store_flags(
                inbox.id,
                &[1],
                FlagOp::Add,
                Flags::SEEN,
                Some(999_999)
            ))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn shares_go_with_what_they_name(store: Arc<dyn Store>) {
    let (owner, inbox) = setup_account(store.clone(), "owner@example.test").await;
    let work = store.mailbox_create(owner.id, "Work", None).await.unwrap();
    let (bob, bob_inbox) = setup_account(store.clone(), "bob@example.test").await;
    let (carol, _) = setup_account(store.clone(), "carol@example.test").await;
    deliver_n(&store, owner.id, 2).await;
    deliver_n(&store, bob.id, 1).await;
    store
        .copy(inbox.id, vec![1, 2], work.id, false)
        .await
        .unwrap();
    store
        .acl_set(work.id, "bob@example.test", rights("lrs"))
        .await
        .unwrap();
    store
        .acl_set(work.id, "carol@example.test", rights("lrs"))
        .await
        .unwrap();
    store
        .acl_set(inbox.id, "bob@example.test", rights("lrs"))
        .await
        .unwrap();
    store
        .acl_set(bob_inbox.id, "owner@example.test", rights("lrs"))
        .await
        .unwrap();
    store
        .acl_set(bob_inbox.id, "carol@example.test", rights("lr"))
        .await
        .unwrap();
    let read = async |mailbox, uids: &[Uid], reader| {
        store
            .flags_update(store_flags(
                mailbox,
                uids,
                FlagOp::Add,
                Flags::SEEN,
                Some(reader),
            ))
            .await
            .unwrap();
    };
    read(work.id, &[1, 2], bob.id).await;
    read(inbox.id, &[1], bob.id).await;
    read(work.id, &[2], carol.id).await;
    read(bob_inbox.id, &[1], owner.id).await;
    store
        .send_as_set("owner@example.test", "bob@example.test", Some(SendAs::As))
        .await
        .unwrap();
    store
        .send_as_set(
            "bob@example.test",
            "carol@example.test",
            Some(SendAs::OnBehalf),
        )
        .await
        .unwrap();
    store
        .send_as_set("carol@example.test", "owner@example.test", Some(SendAs::As))
        .await
        .unwrap();

    // An expunged message leaves every reader's \Seen.
    store.expunge(work.id, vec![2]).await.unwrap();
    assert_eq!(store.seen_private(work.id, bob.id).await.unwrap(), [1]);
    assert!(
        store
            .seen_private(work.id, carol.id)
            .await
            .unwrap()
            .is_empty()
    );

    // A deleted mailbox takes its lines and its readers' \Seen.
    store.mailbox_delete(work.id).await.unwrap();
    assert!(store.acl_get(work.id).await.unwrap().is_empty());
    assert!(
        store
            .seen_private(work.id, bob.id)
            .await
            .unwrap()
            .is_empty()
    );
    let granted: Vec<(MailboxId, String)> = store
        .acl_granted(&["bob@example.test".into(), "carol@example.test".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|(m, l)| (m.id, l.identifier))
        .collect();
    let mut want = vec![
        (inbox.id, "bob@example.test".to_string()),
        (bob_inbox.id, "carol@example.test".to_string()),
    ];
    want.sort();
    assert_eq!(granted, want);

    // A deleted account takes its mailboxes' lines and readers' \Seen, its own \Seen
    // elsewhere, the lines for its address and its send-as grants.
    let mut events = store.subscribe();
    store.account_delete(bob.id).await.unwrap();
    assert_eq!(
        next_event(&mut events, acl_event).await,
        (owner.id, inbox.id),
        "the owner's sessions hear that bob's line went"
    );
    assert!(store.acl_get(inbox.id).await.unwrap().is_empty());
    assert!(
        store
            .seen_private(inbox.id, bob.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.acl_get(bob_inbox.id).await.unwrap().is_empty());
    assert!(
        store
            .seen_private(bob_inbox.id, owner.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .acl_granted(&[
                "bob@example.test".into(),
                "carol@example.test".into(),
                "owner@example.test".into()
            ])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.send_as_list().await.unwrap(),
        [SendAsGrant {
            address: "carol@example.test".into(),
            delegate: "owner@example.test".into(),
            mode: SendAs::As,
        }]
    );

    // A new account of the same address starts with nothing.
    let (again, _) = setup_account(store.clone(), "bob@example.test").await;
    assert_ne!(again.id, bob.id);
    assert!(
        store
            .acl_granted(&["bob@example.test".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .send_as_of("bob@example.test")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.seen_private(inbox.id, again.id).await.unwrap(),
        Vec::<Uid>::new()
    );
}

pub async fn send_as_grants(store: Arc<dyn Store>) {
    let grant = |address: &str, delegate: &str, mode| SendAsGrant {
        address: address.into(),
        delegate: delegate.into(),
        mode,
    };
    assert!(store.send_as_list().await.unwrap().is_empty());
    store
        .send_as_set("Info@Example.test", "bob@example.test", Some(SendAs::As))
        .await
        .unwrap();
    store
        .send_as_set(
            "info@example.test",
            "alice@example.test",
            Some(SendAs::OnBehalf),
        )
        .await
        .unwrap();
    store
        .send_as_set(
            "boss@example.test",
            "Bob@Example.TEST",
            Some(SendAs::OnBehalf),
        )
        .await
        .unwrap();
    assert_eq!(
        store.send_as_list().await.unwrap(),
        [
            grant("boss@example.test", "bob@example.test", SendAs::OnBehalf),
            grant("info@example.test", "alice@example.test", SendAs::OnBehalf),
            grant("info@example.test", "bob@example.test", SendAs::As),
        ],
        "by address, then delegate"
    );
    assert_eq!(
        store.send_as_of("BOB@example.test").await.unwrap(),
        [
            grant("boss@example.test", "bob@example.test", SendAs::OnBehalf),
            grant("info@example.test", "bob@example.test", SendAs::As),
        ]
    );

    // A grant is replaced, and taken away.
    store
        .send_as_set(
            "info@example.test",
            "bob@example.test",
            Some(SendAs::OnBehalf),
        )
        .await
        .unwrap();
    store
        .send_as_set("boss@example.test", "bob@example.test", None)
        .await
        .unwrap();
    store
        .send_as_set("nobody@example.test", "bob@example.test", None)
        .await
        .unwrap();
    assert_eq!(
        store.send_as_of("bob@example.test").await.unwrap(),
        [grant(
            "info@example.test",
            "bob@example.test",
            SendAs::OnBehalf
        )]
    );
    assert_eq!(store.send_as_list().await.unwrap().len(), 2);
    assert!(
        store
            .send_as_of("nobody@example.test")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .send_as_set("", "bob@example.test", Some(SendAs::As))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn shared_accounts(store: Arc<dyn Store>) {
    store.domain_add("example.test").await.unwrap();
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
    assert!(info.shared);
    let (bob, _) = setup_account(store.clone(), "bob@example.test").await;
    assert!(!bob.shared);
    assert!(store.account_get(info.id).await.unwrap().unwrap().shared);
    assert!(
        store
            .account_by_address("info@example.test")
            .await
            .unwrap()
            .unwrap()
            .shared
    );
    let listed: Vec<(String, bool)> = store
        .account_list()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.address, a.shared))
        .collect();
    assert_eq!(
        listed,
        [
            ("info@example.test".to_string(), true),
            ("bob@example.test".to_string(), false)
        ]
    );
    // An update keeps it.
    let up = store
        .account_update(
            info.id,
            AccountUpdate {
                quota_bytes: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(up.shared);
    assert!(store.account_get(info.id).await.unwrap().unwrap().shared);
    assert_eq!(
        store.mailbox_list(info.id).await.unwrap().len(),
        1 + SpecialUse::DEFAULTS.len(),
        "a shared mailbox has the usual folders"
    );
}
