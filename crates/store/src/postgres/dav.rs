//! Calendars and address books in PostgreSQL. A write locks its collection's row first, so
//! changes to one collection take their sync numbers in order, on any node.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{PgStore, Prepared, from_json, json, pg};
use crate::dav::{dav_apply_update, dav_check_put, dav_resource_of};
use crate::*;

const COLLECTION: &str =
    "SELECT id, account, kind, name, record, sync, created FROM dav_collections";
const RESOURCE: &str = "SELECT collection, name, etag, component, uid, span_start, span_end, \
                        modseq, octet_length(content), content FROM dav_resources";
const RESOURCE_META: &str = "SELECT collection, name, etag, component, uid, span_start, \
                             span_end, modseq, octet_length(content) FROM dav_resources";

fn collection_row(r: &Row) -> Result<DavCollection> {
    let kind: String = r.get(2);
    let mut c: DavCollection = from_json(r.get(4))?;
    c.id = r.get::<_, i64>(0) as u64;
    c.account = r.get::<_, i64>(1) as u64;
    c.kind = DavKind::parse(&kind)
        .ok_or_else(|| StoreError::Backend(format!("corrupt collection kind {kind}")))?;
    c.name = r.get(3);
    c.sync = r.get::<_, i64>(5) as u64;
    c.created = r.get(6);
    Ok(c)
}

fn resource_row(r: &Row) -> DavResource {
    DavResource {
        collection: r.get::<_, i64>(0) as u64,
        name: r.get(1),
        etag: r.get(2),
        component: r.get(3),
        uid: r.get(4),
        start: r.get(5),
        end: r.get(6),
        modseq: r.get::<_, i64>(7) as u64,
        size: r.get::<_, i32>(8) as u64,
        content: if r.len() > 9 { r.get(9) } else { Vec::new() },
    }
}

/// The collection, its row locked until the transaction ends.
async fn lock_collection(tx: &Transaction<'_>, id: CollectionId) -> Result<DavCollection> {
    let row = tx
        .maybe_row(
            &format!("{COLLECTION} WHERE id = $1 FOR UPDATE"),
            &[&(id as i64)],
        )
        .await
        .map_err(pg)?
        .ok_or_else(|| StoreError::NotFound(format!("collection {id}")))?;
    collection_row(&row)
}

async fn save_collection(tx: &Transaction<'_>, c: &DavCollection) -> Result<()> {
    tx.run(
        "UPDATE dav_collections SET record = $2, sync = $3 WHERE id = $1",
        &[&(c.id as i64), &json(c), &(c.sync as i64)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl DavStore for PgStore {
    async fn dav_collections(&self, account: AccountId) -> Result<Vec<DavCollection>> {
        let c = self.client().await?;
        let rows = c
            .rows(
                &format!("{COLLECTION} WHERE account = $1"),
                &[&(account as i64)],
            )
            .await
            .map_err(pg)?;
        let mut out = rows
            .iter()
            .map(collection_row)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    async fn dav_collection(
        &self,
        account: AccountId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>> {
        let c = self.client().await?;
        c.maybe_row(
            &format!("{COLLECTION} WHERE account = $1 AND kind = $2 AND name = $3"),
            &[&(account as i64), &kind.as_str(), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| collection_row(&r))
        .transpose()
    }

    async fn dav_collection_create(
        &self,
        new: NewDavCollection,
        limits: DavLimits,
    ) -> Result<Result<DavCollection, DavRefused>> {
        let name = dav_name(&new.name)?;
        self.write(tx!(|tx, _fx| {
            let account = new.account as i64;
            // The account's row orders its collection creations: the limit holds on any node.
            if tx
                .maybe_row(
                    "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
                    &[&account],
                )
                .await
                .map_err(pg)?
                .is_none()
            {
                return Err(StoreError::NotFound(format!("account {account}")));
            }
            let rows = tx
                .rows(
                    "SELECT kind, name FROM dav_collections WHERE account = $1",
                    &[&account],
                )
                .await
                .map_err(pg)?;
            if rows
                .iter()
                .any(|r| r.get::<_, &str>(0) == new.kind.as_str() && r.get::<_, &str>(1) == name)
            {
                return Err(StoreError::AlreadyExists(format!(
                    "{} {name}",
                    new.kind.as_str()
                )));
            }
            if rows.len() as u64 >= limits.max_collections {
                return Ok(Err(DavRefused::TooManyCollections {
                    max: limits.max_collections,
                }));
            }
            let mut c = DavCollection {
                id: 0,
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
            let id: i64 = tx
                .row(
                    "INSERT INTO dav_collections (account, kind, name, record, sync, created) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &account,
                        &new.kind.as_str(),
                        &name,
                        &json(&c),
                        &(c.sync as i64),
                        &c.created,
                    ],
                )
                .await
                .map_err(pg)?
                .get(0);
            c.id = id as u64;
            Ok(Ok(c))
        }))
        .await
    }

    async fn dav_collection_update(
        &self,
        id: CollectionId,
        update: DavCollectionUpdate,
    ) -> Result<DavCollection> {
        self.write(tx!(|tx, _fx| {
            let mut c = lock_collection(tx, id).await?;
            dav_apply_update(&mut c, update);
            save_collection(tx, &c).await?;
            Ok(c)
        }))
        .await
    }

    async fn dav_collection_delete(&self, id: CollectionId) -> Result<()> {
        self.write(tx!(|tx, _fx| {
            super::one_row(
                tx,
                "DELETE FROM dav_collections WHERE id = $1",
                &[&(id as i64)],
                || format!("collection {id}"),
            )
            .await
        }))
        .await
    }

    async fn dav_resources(
        &self,
        collection: CollectionId,
        span: Option<(i64, i64)>,
        content: bool,
    ) -> Result<Vec<DavResource>> {
        let c = self.client().await?;
        let select = if content { RESOURCE } else { RESOURCE_META };
        let rows = match span {
            None => c
                .rows(
                    &format!("{select} WHERE collection = $1 ORDER BY name"),
                    &[&(collection as i64)],
                )
                .await
                .map_err(pg)?,
            Some((from, to)) => c
                .rows(
                    &format!(
                        "{select} WHERE collection = $1 \
                         AND (span_start IS NULL OR span_start < $3) \
                         AND (span_end IS NULL OR span_end > $2) ORDER BY name"
                    ),
                    &[&(collection as i64), &from, &to],
                )
                .await
                .map_err(pg)?,
        };
        Ok(rows.iter().map(resource_row).collect())
    }

    async fn dav_resource(
        &self,
        collection: CollectionId,
        name: &str,
    ) -> Result<Option<DavResource>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("{RESOURCE} WHERE collection = $1 AND name = $2"),
            &[&(collection as i64), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| resource_row(&r)))
    }

    async fn dav_resource_put(
        &self,
        collection: CollectionId,
        put: DavPut,
        limits: DavLimits,
    ) -> Result<Result<DavResource, DavRefused>> {
        let name = dav_name(&put.name)?;
        self.write(tx!(|tx, _fx| {
            let mut c = lock_collection(tx, collection).await?;
            let id = collection as i64;
            let current: Option<String> = tx
                .maybe_row(
                    "SELECT etag FROM dav_resources WHERE collection = $1 AND name = $2",
                    &[&id, &name],
                )
                .await
                .map_err(pg)?
                .map(|r| r.get(0));
            let count: i64 = tx
                .row(
                    "SELECT count(*) FROM dav_resources WHERE collection = $1",
                    &[&id],
                )
                .await
                .map_err(pg)?
                .get(0);
            let holder: Option<String> = if put.uid.is_empty() {
                None
            } else {
                tx.maybe_row(
                    "SELECT name FROM dav_resources WHERE collection = $1 AND uid = $2 \
                     ORDER BY name LIMIT 1",
                    &[&id, &put.uid],
                )
                .await
                .map_err(pg)?
                .map(|r| r.get(0))
            };
            if let Err(refused) = dav_check_put(
                &put,
                current.as_deref(),
                count as u64,
                holder.as_deref(),
                &limits,
            ) {
                return Ok(Err(refused));
            }
            c.sync += 1;
            save_collection(tx, &c).await?;
            let r = dav_resource_of(collection, put, c.sync);
            tx.run(
                "INSERT INTO dav_resources (collection, name, etag, component, uid, span_start, \
                 span_end, modseq, content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (collection, name) DO UPDATE SET etag = $3, component = $4, \
                 uid = $5, span_start = $6, span_end = $7, modseq = $8, content = $9",
                &[
                    &id,
                    &name,
                    &r.etag,
                    &r.component,
                    &r.uid,
                    &r.start,
                    &r.end,
                    &(r.modseq as i64),
                    &r.content,
                ],
            )
            .await
            .map_err(pg)?;
            tx.run(
                "DELETE FROM dav_removed WHERE collection = $1 AND name = $2",
                &[&id, &name],
            )
            .await
            .map_err(pg)?;
            Ok(Ok(r))
        }))
        .await
    }

    async fn dav_resource_delete(
        &self,
        collection: CollectionId,
        name: &str,
        condition: DavCondition,
    ) -> Result<Result<(), DavRefused>> {
        let name = name.to_string();
        self.write(tx!(|tx, _fx| {
            let mut c = lock_collection(tx, collection).await?;
            let id = collection as i64;
            let Some(row) = tx
                .maybe_row(
                    "SELECT etag FROM dav_resources WHERE collection = $1 AND name = $2",
                    &[&id, &name],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("resource {name}")));
            };
            if !condition.holds(Some(row.get(0))) {
                return Ok(Err(DavRefused::Precondition));
            }
            c.sync += 1;
            save_collection(tx, &c).await?;
            tx.run(
                "DELETE FROM dav_resources WHERE collection = $1 AND name = $2",
                &[&id, &name],
            )
            .await
            .map_err(pg)?;
            tx.run(
                "INSERT INTO dav_removed (collection, name, modseq) VALUES ($1, $2, $3) \
                 ON CONFLICT (collection, name) DO UPDATE SET modseq = $3",
                &[&id, &name, &(c.sync as i64)],
            )
            .await
            .map_err(pg)?;
            Ok(Ok(()))
        }))
        .await
    }

    async fn dav_changes(&self, collection: CollectionId, since: u64) -> Result<DavChanges> {
        let mut c = self.client().await?;
        // One snapshot: the token read matches the changes listed.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let id = collection as i64;
        let sync: i64 = tx
            .maybe_row("SELECT sync FROM dav_collections WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
            .ok_or_else(|| StoreError::NotFound(format!("collection {collection}")))?
            .get(0);
        if since > sync as u64 {
            return Err(StoreError::Invalid(format!("sync token {since}")));
        }
        let changed = tx
            .rows(
                &format!("{RESOURCE_META} WHERE collection = $1 AND modseq > $2 ORDER BY name"),
                &[&id, &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(resource_row)
            .collect();
        let removed = if since == 0 {
            Vec::new()
        } else {
            tx.rows(
                "SELECT name FROM dav_removed WHERE collection = $1 AND modseq > $2 ORDER BY name",
                &[&id, &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        tx.commit().await.map_err(pg)?;
        Ok(DavChanges {
            sync: sync as u64,
            changed,
            removed,
        })
    }
}
