//! Calendars and address books (CalDAV, CardDAV): collections, resources, preconditions,
//! limits and the changes sync-collection reads.

use std::sync::Arc;

use postern_store::*;

use super::setup_account;

pub const DAV_LIMITS: DavLimits = DavLimits {
    max_size: 100,
    max_resources: 3,
    max_collections: 3,
};

fn calendar(account: AccountId, name: &str) -> NewDavCollection {
    NewDavCollection {
        account,
        kind: DavKind::Calendar,
        name: name.into(),
        display_name: format!("{name} calendar"),
        description: String::new(),
        color: String::new(),
        components: vec!["VEVENT".into(), "VTODO".into()],
    }
}

pub fn put(name: &str, uid: &str, content: &str, span: (Option<i64>, Option<i64>)) -> DavPut {
    DavPut {
        name: name.into(),
        content: content.as_bytes().to_vec(),
        component: "VEVENT".into(),
        uid: uid.into(),
        start: span.0,
        end: span.1,
        condition: DavCondition::Always,
    }
}

async fn names(store: &Arc<dyn Store>, c: CollectionId, span: Option<(i64, i64)>) -> Vec<String> {
    store
        .dav_resources(c, span, false)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

pub async fn dav_collections(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "cal@example.test").await;
    let (b, _) = setup_account(store.clone(), "other@example.test").await;
    let work = store
        .dav_collection_create(calendar(a.id, "work"), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(work.kind, DavKind::Calendar);
    assert_eq!(work.display_name, "work calendar");
    assert_eq!(work.components, ["VEVENT", "VTODO"]);
    let book = store
        .dav_collection_create(
            NewDavCollection {
                kind: DavKind::AddressBook,
                components: Vec::new(),
                ..calendar(a.id, "work")
            },
            DAV_LIMITS,
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(book.id, work.id, "one name may serve both kinds");
    assert!(matches!(
        store
            .dav_collection_create(calendar(a.id, "work"), DAV_LIMITS)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store
            .dav_collection_create(calendar(a.id, "a/b"), DAV_LIMITS)
            .await,
        Err(StoreError::Invalid(_))
    ));
    // Another account's names are its own.
    store
        .dav_collection_create(calendar(b.id, "work"), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    store
        .dav_collection_create(calendar(a.id, "home"), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .dav_collection_create(calendar(a.id, "fourth"), DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::TooManyCollections { max: 3 })
    );
    let listed: Vec<(DavKind, String)> = store
        .dav_collections(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.name))
        .collect();
    assert_eq!(
        listed,
        [
            (DavKind::Calendar, "home".to_string()),
            (DavKind::Calendar, "work".to_string()),
            (DavKind::AddressBook, "work".to_string()),
        ]
    );
    let changed = store
        .dav_collection_update(
            work.id,
            DavCollectionUpdate {
                display_name: Some("Work".into()),
                color: Some("#FF0000FF".into()),
                props: vec![
                    ("{urn:x}order".into(), Some("<x:order>2</x:order>".into())),
                    ("{urn:x}gone".into(), None),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.display_name, "Work");
    assert_eq!(changed.color, "#FF0000FF");
    assert_eq!(changed.description, "");
    assert_eq!(
        store
            .dav_collection(a.id, DavKind::Calendar, "work")
            .await
            .unwrap()
            .unwrap(),
        changed
    );
    let cleared = store
        .dav_collection_update(
            work.id,
            DavCollectionUpdate {
                props: vec![("{urn:x}order".into(), None)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(cleared.props.is_empty());
    assert!(
        store
            .dav_collection(a.id, DavKind::AddressBook, "home")
            .await
            .unwrap()
            .is_none()
    );
    // A collection goes with what is in it; its name is free again.
    store
        .dav_resource_put(work.id, put("e.ics", "u1", "x", (None, None)), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    store.dav_collection_delete(work.id).await.unwrap();
    assert!(
        store
            .dav_resource(work.id, "e.ics")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.dav_collection_delete(work.id).await,
        Err(StoreError::NotFound(_))
    ));
    let again = store
        .dav_collection_create(calendar(a.id, "work"), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    assert!(names(&store, again.id, None).await.is_empty());
    // An account that goes takes its collections with it.
    store.account_delete(a.id).await.unwrap();
    assert!(store.dav_collections(a.id).await.unwrap().is_empty());
    assert!(
        store
            .dav_resources(again.id, None, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.dav_collections(b.id).await.unwrap().len(), 1);
}

pub async fn dav_resources(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "res@example.test").await;
    let c = store
        .dav_collection_create(calendar(a.id, "default"), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    let one = store
        .dav_resource_put(
            c.id,
            put(
                "one.ics",
                "uid-1",
                "BEGIN:VCALENDAR",
                (Some(100), Some(200)),
            ),
            DAV_LIMITS,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.etag, dav_etag(b"BEGIN:VCALENDAR"));
    assert_eq!(one.size, 15);
    let got = store.dav_resource(c.id, "one.ics").await.unwrap().unwrap();
    assert_eq!(got.content, b"BEGIN:VCALENDAR");
    assert_eq!(got.uid, "uid-1");
    assert_eq!((got.start, got.end), (Some(100), Some(200)));
    assert_eq!(got.etag, one.etag);
    // Preconditions: nothing changes when one fails.
    let create_only = DavPut {
        condition: DavCondition::Absent,
        ..put("one.ics", "uid-1", "changed", (None, None))
    };
    assert_eq!(
        store
            .dav_resource_put(c.id, create_only, DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::Precondition)
    );
    let stale = DavPut {
        condition: DavCondition::Etag(vec!["not-it".into()]),
        ..put("one.ics", "uid-1", "changed", (None, None))
    };
    assert_eq!(
        store
            .dav_resource_put(c.id, stale, DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::Precondition)
    );
    let must_exist = DavPut {
        condition: DavCondition::Exists,
        ..put("new.ics", "uid-9", "x", (None, None))
    };
    assert_eq!(
        store
            .dav_resource_put(c.id, must_exist, DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::Precondition)
    );
    let current = DavPut {
        condition: DavCondition::Etag(vec![one.etag.clone()]),
        ..put("one.ics", "uid-1", "changed", (Some(100), None))
    };
    let two = store
        .dav_resource_put(c.id, current, DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(two.etag, one.etag);
    assert!(two.modseq > one.modseq);
    assert_eq!(
        store
            .dav_resource(c.id, "one.ics")
            .await
            .unwrap()
            .unwrap()
            .content,
        b"changed"
    );
    // One resource per UID in a collection.
    assert_eq!(
        store
            .dav_resource_put(c.id, put("dup.ics", "uid-1", "x", (None, None)), DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::UidConflict("one.ics".into()))
    );
    // Limits: size, then count.
    let big = "x".repeat(101);
    assert_eq!(
        store
            .dav_resource_put(c.id, put("big.ics", "b", &big, (None, None)), DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::TooLarge { max: 100 })
    );
    for (n, span) in [("a.ics", (Some(1000), Some(2000))), ("b.ics", (None, None))] {
        store
            .dav_resource_put(c.id, put(n, n, "x", span), DAV_LIMITS)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        store
            .dav_resource_put(c.id, put("d.ics", "d", "x", (None, None)), DAV_LIMITS)
            .await
            .unwrap(),
        Err(DavRefused::TooMany { max: 3 })
    );
    // Replacing one is not one more.
    store
        .dav_resource_put(
            c.id,
            put("a.ics", "a.ics", "y", (Some(1000), Some(2000))),
            DAV_LIMITS,
        )
        .await
        .unwrap()
        .unwrap();
    // Time spans pre-filter: open ends meet every range.
    assert_eq!(
        names(&store, c.id, None).await,
        ["a.ics", "b.ics", "one.ics"]
    );
    assert_eq!(names(&store, c.id, Some((0, 50))).await, ["b.ics"]);
    assert_eq!(
        names(&store, c.id, Some((150, 1000))).await,
        ["b.ics", "one.ics"]
    );
    assert_eq!(
        names(&store, c.id, Some((1999, 5000))).await,
        ["a.ics", "b.ics", "one.ics"]
    );
    assert_eq!(
        names(&store, c.id, Some((2000, 5000))).await,
        ["b.ics", "one.ics"]
    );
    let with = store.dav_resources(c.id, None, true).await.unwrap();
    assert_eq!(with[0].content, b"y");
    let without = store.dav_resources(c.id, None, false).await.unwrap();
    assert!(without[0].content.is_empty());
    assert_eq!(without[0].size, 1);
    // Deletes: conditions, then the UID is free again.
    assert_eq!(
        store
            .dav_resource_delete(c.id, "one.ics", DavCondition::Etag(vec![one.etag.clone()]))
            .await
            .unwrap(),
        Err(DavRefused::Precondition)
    );
    store
        .dav_resource_delete(c.id, "one.ics", DavCondition::Etag(vec![two.etag.clone()]))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store
            .dav_resource_delete(c.id, "one.ics", DavCondition::Always)
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .dav_resource_put(c.id, put("dup.ics", "uid-1", "x", (None, None)), DAV_LIMITS)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store
            .dav_resource_put(9999, put("x.ics", "x", "x", (None, None)), DAV_LIMITS)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn dav_sync_changes(store: Arc<dyn Store>) {
    let (a, _) = setup_account(store.clone(), "sync@example.test").await;
    let c = store
        .dav_collection_create(calendar(a.id, "default"), DavLimits::NONE)
        .await
        .unwrap()
        .unwrap();
    let start = store.dav_changes(c.id, 0).await.unwrap();
    assert!(start.changed.is_empty() && start.removed.is_empty());
    for n in ["a.ics", "b.ics", "c.ics"] {
        store
            .dav_resource_put(c.id, put(n, n, n, (None, None)), DavLimits::NONE)
            .await
            .unwrap()
            .unwrap();
    }
    let first = store.dav_changes(c.id, 0).await.unwrap();
    assert!(first.sync > start.sync);
    let listed: Vec<&str> = first.changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(listed, ["a.ics", "b.ics", "c.ics"]);
    assert!(first.removed.is_empty(), "a first sync lists no removals");
    assert_eq!(
        store
            .dav_collection(a.id, DavKind::Calendar, "default")
            .await
            .unwrap()
            .unwrap()
            .sync,
        first.sync,
        "the token is the collection's sync (its CTag)"
    );
    let nothing = store.dav_changes(c.id, first.sync).await.unwrap();
    assert_eq!(nothing.sync, first.sync);
    assert!(nothing.changed.is_empty() && nothing.removed.is_empty());
    store
        .dav_resource_put(
            c.id,
            put("b.ics", "b.ics", "B", (None, None)),
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .dav_resource_delete(c.id, "c.ics", DavCondition::Always)
        .await
        .unwrap()
        .unwrap();
    store
        .dav_resource_put(
            c.id,
            put("d.ics", "d.ics", "D", (None, None)),
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    let second = store.dav_changes(c.id, first.sync).await.unwrap();
    let listed: Vec<&str> = second.changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(listed, ["b.ics", "d.ics"]);
    assert_eq!(second.removed, ["c.ics"]);
    assert!(second.changed.iter().all(|r| r.content.is_empty()));
    // A name written again after its removal is a change, not a removal.
    store
        .dav_resource_put(
            c.id,
            put("c.ics", "c.ics", "C", (None, None)),
            DavLimits::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    let third = store.dav_changes(c.id, first.sync).await.unwrap();
    let listed: Vec<&str> = third.changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(listed, ["b.ics", "c.ics", "d.ics"]);
    assert!(third.removed.is_empty());
    // Property changes are not member changes.
    store
        .dav_collection_update(
            c.id,
            DavCollectionUpdate {
                description: Some("d".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.dav_changes(c.id, third.sync).await.unwrap().sync,
        third.sync
    );
    assert!(matches!(
        store.dav_changes(c.id, third.sync + 1).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.dav_changes(9999, 0).await,
        Err(StoreError::NotFound(_))
    ));
}
