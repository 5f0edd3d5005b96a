//! How the writer keeps calendars and address books: collections, resources with their UID
//! index, and the names removed that sync-collection reports.

use redb::ReadableTable;

use super::super::db_err;
use super::super::tables::*;
use super::Tables;
use crate::dav::{dav_apply_update, dav_check_put, dav_resource_of};
use crate::*;

impl Tables<'_> {
    fn dav_collection_get(&self, id: CollectionId) -> Result<DavCollection> {
        match self.dav_collections.get(id).map_err(db_err)? {
            Some(v) => from_json(v.value()),
            None => Err(StoreError::NotFound(format!("collection {id}"))),
        }
    }

    fn dav_collection_save(&mut self, c: &DavCollection) -> Result<()> {
        self.dav_collections
            .insert(c.id, json(c).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    pub(super) fn dav_collection_create(
        &mut self,
        new: NewDavCollection,
        limits: &DavLimits,
    ) -> Result<Result<DavCollection, DavRefused>> {
        let name = dav_name(&new.name)?;
        self.account(new.account)?;
        let key = (new.account, new.kind.code(), name.as_str());
        if self
            .dav_collection_by_name
            .get(key)
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!(
                "{} {name}",
                new.kind.as_str()
            )));
        }
        let count = self
            .dav_collection_by_name
            .range((new.account, 0u8, "")..(new.account + 1, 0u8, ""))
            .map_err(db_err)?
            .count() as u64;
        if count >= limits.max_collections {
            return Ok(Err(DavRefused::TooManyCollections {
                max: limits.max_collections,
            }));
        }
        let id = self.next_id(NEXT_DAV_COLLECTION)?;
        let c = DavCollection {
            id,
            account: new.account,
            kind: new.kind,
            name: name.clone(),
            display_name: new.display_name,
            description: new.description,
            color: new.color,
            components: new.components,
            props: Vec::new(),
            sync: 1,
            created: now(),
        };
        self.dav_collection_by_name
            .insert((new.account, new.kind.code(), name.as_str()), id)
            .map_err(db_err)?;
        self.dav_collection_save(&c)?;
        Ok(Ok(c))
    }

    pub(super) fn dav_collection_update(
        &mut self,
        id: CollectionId,
        update: DavCollectionUpdate,
    ) -> Result<DavCollection> {
        let mut c = self.dav_collection_get(id)?;
        dav_apply_update(&mut c, update);
        self.dav_collection_save(&c)?;
        Ok(c)
    }

    pub(super) fn dav_collection_delete(&mut self, id: CollectionId) -> Result<()> {
        let c = self.dav_collection_get(id)?;
        let lo = (id, "");
        let hi = (id + 1, "");
        self.dav_resources
            .retain_in(lo..hi, |_, _| false)
            .map_err(db_err)?;
        self.dav_content
            .retain_in(lo..hi, |_, _| false)
            .map_err(db_err)?;
        self.dav_uids
            .retain_in(lo..hi, |_, _| false)
            .map_err(db_err)?;
        self.dav_removed
            .retain_in(lo..hi, |_, _| false)
            .map_err(db_err)?;
        self.dav_collection_by_name
            .remove((c.account, c.kind.code(), c.name.as_str()))
            .map_err(db_err)?;
        self.dav_collections.remove(id).map_err(db_err)?;
        Ok(())
    }

    fn dav_resource_meta(
        &self,
        collection: CollectionId,
        name: &str,
    ) -> Result<Option<DavResource>> {
        match self.dav_resources.get((collection, name)).map_err(db_err)? {
            Some(v) => Ok(Some(from_json(v.value())?)),
            None => Ok(None),
        }
    }

    /// The collection's sync raised by one: the new change's number.
    fn dav_bump(&mut self, collection: CollectionId) -> Result<u64> {
        let mut c = self.dav_collection_get(collection)?;
        c.sync += 1;
        self.dav_collection_save(&c)?;
        Ok(c.sync)
    }

    pub(super) fn dav_resource_put(
        &mut self,
        collection: CollectionId,
        put: DavPut,
        limits: &DavLimits,
    ) -> Result<Result<DavResource, DavRefused>> {
        let name = dav_name(&put.name)?;
        self.dav_collection_get(collection)?;
        let old = self.dav_resource_meta(collection, &name)?;
        let count = self
            .dav_resources
            .range((collection, "")..(collection + 1, ""))
            .map_err(db_err)?
            .count() as u64;
        let holder = match put.uid.as_str() {
            "" => None,
            uid => self
                .dav_uids
                .get((collection, uid))
                .map_err(db_err)?
                .map(|v| v.value().to_string()),
        };
        if let Err(refused) = dav_check_put(
            &put,
            old.as_ref().map(|r| r.etag.as_str()),
            count,
            holder.as_deref(),
            limits,
        ) {
            return Ok(Err(refused));
        }
        let modseq = self.dav_bump(collection)?;
        if let Some(old) = &old
            && !old.uid.is_empty()
        {
            self.dav_uids
                .remove((collection, old.uid.as_str()))
                .map_err(db_err)?;
        }
        let r = dav_resource_of(collection, put, modseq);
        if !r.uid.is_empty() {
            self.dav_uids
                .insert((collection, r.uid.as_str()), name.as_str())
                .map_err(db_err)?;
        }
        self.dav_resources
            .insert((collection, name.as_str()), json(&r).as_slice())
            .map_err(db_err)?;
        self.dav_content
            .insert((collection, name.as_str()), r.content.as_slice())
            .map_err(db_err)?;
        self.dav_removed
            .remove((collection, name.as_str()))
            .map_err(db_err)?;
        Ok(Ok(r))
    }

    pub(super) fn dav_resource_delete(
        &mut self,
        collection: CollectionId,
        name: &str,
        condition: &DavCondition,
    ) -> Result<Result<(), DavRefused>> {
        let Some(old) = self.dav_resource_meta(collection, name)? else {
            return Err(StoreError::NotFound(format!("resource {name}")));
        };
        if !condition.holds(Some(&old.etag)) {
            return Ok(Err(DavRefused::Precondition));
        }
        let modseq = self.dav_bump(collection)?;
        self.dav_resources
            .remove((collection, name))
            .map_err(db_err)?;
        self.dav_content
            .remove((collection, name))
            .map_err(db_err)?;
        if !old.uid.is_empty() {
            self.dav_uids
                .remove((collection, old.uid.as_str()))
                .map_err(db_err)?;
        }
        self.dav_removed
            .insert((collection, name), modseq)
            .map_err(db_err)?;
        Ok(Ok(()))
    }

    /// Every collection of an account that goes.
    pub(super) fn forget_account_dav(&mut self, account: AccountId) -> Result<()> {
        let ids: Vec<u64> = self
            .dav_collection_by_name
            .range((account, 0u8, "")..(account + 1, 0u8, ""))
            .map_err(db_err)?
            .map(|x| x.map(|(_, v)| v.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        for id in ids {
            self.dav_collection_delete(id)?;
        }
        Ok(())
    }
}
