//! Calendars and address books: read from redb, changed through the writer.

use async_trait::async_trait;
use redb::ReadTransaction;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::*;

fn collection_of(r: &ReadTransaction, id: CollectionId) -> Result<Option<DavCollection>> {
    match r
        .open_table(DAV_COLLECTIONS)
        .map_err(db_err)?
        .get(id)
        .map_err(db_err)?
    {
        Some(v) => Ok(Some(from_json(v.value())?)),
        None => Ok(None),
    }
}

#[async_trait]
impl DavStore for EmbeddedStore {
    async fn dav_collections(&self, account: AccountId) -> Result<Vec<DavCollection>> {
        self.read(|r| {
            let by_name = r.open_table(DAV_COLLECTION_BY_NAME).map_err(db_err)?;
            let mut out = Vec::new();
            for x in by_name
                .range((account, 0u8, "")..(account + 1, 0u8, ""))
                .map_err(db_err)?
            {
                let id = x.map_err(db_err)?.1.value();
                out.extend(collection_of(r, id)?);
            }
            Ok(out)
        })
    }

    async fn dav_collection(
        &self,
        account: AccountId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>> {
        self.read(|r| {
            let by_name = r.open_table(DAV_COLLECTION_BY_NAME).map_err(db_err)?;
            match by_name.get((account, kind.code(), name)).map_err(db_err)? {
                Some(id) => collection_of(r, id.value()),
                None => Ok(None),
            }
        })
    }

    async fn dav_collection_create(
        &self,
        new: NewDavCollection,
        limits: DavLimits,
    ) -> Result<Result<DavCollection, DavRefused>> {
        expect_output!(
            self.write(Job::DavCollectionCreate(new, limits)).await?,
            DavCollection
        )
    }

    async fn dav_collection_update(
        &self,
        id: CollectionId,
        update: DavCollectionUpdate,
    ) -> Result<DavCollection> {
        expect_output!(
            self.write(Job::DavCollectionUpdate(id, update)).await?,
            DavCollection
        )?
        .map_err(|_| StoreError::Backend("unexpected writer output".into()))
    }

    async fn dav_collection_delete(&self, id: CollectionId) -> Result<()> {
        self.write(Job::DavCollectionDelete(id)).await.map(|_| ())
    }

    async fn dav_resources(
        &self,
        collection: CollectionId,
        span: Option<(i64, i64)>,
        content: bool,
    ) -> Result<Vec<DavResource>> {
        self.read(|r| {
            let t = r.open_table(DAV_RESOURCES).map_err(db_err)?;
            let bytes = r.open_table(DAV_CONTENT).map_err(db_err)?;
            let mut out = Vec::new();
            for x in t
                .range((collection, "")..(collection + 1, ""))
                .map_err(db_err)?
            {
                let (_, v) = x.map_err(db_err)?;
                let mut res: DavResource = from_json(v.value())?;
                if span.is_some_and(|(from, to)| !res.overlaps(from, to)) {
                    continue;
                }
                if content
                    && let Some(b) = bytes.get((collection, res.name.as_str())).map_err(db_err)?
                {
                    res.content = b.value().to_vec();
                }
                out.push(res);
            }
            Ok(out)
        })
    }

    async fn dav_resource(
        &self,
        collection: CollectionId,
        name: &str,
    ) -> Result<Option<DavResource>> {
        self.read(|r| {
            let t = r.open_table(DAV_RESOURCES).map_err(db_err)?;
            let Some(v) = t.get((collection, name)).map_err(db_err)? else {
                return Ok(None);
            };
            let mut res: DavResource = from_json(v.value())?;
            if let Some(b) = r
                .open_table(DAV_CONTENT)
                .map_err(db_err)?
                .get((collection, name))
                .map_err(db_err)?
            {
                res.content = b.value().to_vec();
            }
            Ok(Some(res))
        })
    }

    async fn dav_resource_put(
        &self,
        collection: CollectionId,
        put: DavPut,
        limits: DavLimits,
    ) -> Result<Result<DavResource, DavRefused>> {
        expect_output!(
            self.write(Job::DavResourcePut(collection, put, limits))
                .await?,
            DavResource
        )
    }

    async fn dav_resource_delete(
        &self,
        collection: CollectionId,
        name: &str,
        condition: DavCondition,
    ) -> Result<Result<(), DavRefused>> {
        expect_output!(
            self.write(Job::DavResourceDelete(
                collection,
                name.to_string(),
                condition
            ))
            .await?,
            DavDeleted
        )
    }

    async fn dav_changes(&self, collection: CollectionId, since: u64) -> Result<DavChanges> {
        self.read(|r| {
            let Some(c) = collection_of(r, collection)? else {
                return Err(StoreError::NotFound(format!("collection {collection}")));
            };
            if since > c.sync {
                return Err(StoreError::Invalid(format!("sync token {since}")));
            }
            let t = r.open_table(DAV_RESOURCES).map_err(db_err)?;
            let mut changed = Vec::new();
            for x in t
                .range((collection, "")..(collection + 1, ""))
                .map_err(db_err)?
            {
                let (_, v) = x.map_err(db_err)?;
                let res: DavResource = from_json(v.value())?;
                if res.modseq > since {
                    changed.push(res);
                }
            }
            let mut removed = Vec::new();
            if since > 0 {
                let gone = r.open_table(DAV_REMOVED).map_err(db_err)?;
                for x in gone
                    .range((collection, "")..(collection + 1, ""))
                    .map_err(db_err)?
                {
                    let (k, v) = x.map_err(db_err)?;
                    if v.value() > since {
                        removed.push(k.value().1.to_string());
                    }
                }
            }
            Ok(DavChanges {
                sync: c.sync,
                changed,
                removed,
            })
        })
    }
}
