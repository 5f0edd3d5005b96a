//! The PostgreSQL backend: every record in tables of a versioned schema (migrated at start),
//! reached through a connection pool. Each write is one transaction; rows that order writes
//! (an account for its quota, a mailbox for its UIDs and modseqs) are locked with FOR UPDATE,
//! always in id order, so concurrent writers never deadlock.
//!
//! Several nodes may share one database: every commit's events (new mail, flag changes,
//! queue work) go to the other nodes with NOTIFY, so IDLE and the queue runner see them at
//! once; queue entries are claimed for each attempt (`queue_claim`), and POP3 maildrops are
//! leased in the database.
//!
//! Each concern's module holds its queries; the rules shared with the embedded backend are in
//! `crate::rules`.

/// A transaction's body for [`PgStore::write`].
macro_rules! tx {
    (|$tx:ident, $fx:ident| $body:expr) => {
        move |$tx, $fx| Box::pin(async move { $body })
    };
}

mod backup;
mod dav;
mod delivery;
mod directory;
mod kept;
mod mail;
mod mailboxes;
mod maildrop;
mod metadata;
mod notify;
mod queue;
mod reports;
mod schema;
mod sessions;
mod share;
mod sieve;
mod stats;
mod subscriptions;
mod trace;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction,
};
use tokio::sync::broadcast;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::*;
pub use backup::backup_settings;
use notify::{Announced, listen};
pub use schema::{Health, inspect};

pub struct Options {
    pub max_connections: usize,
    /// A POP3 maildrop lock lasts this long unless renewed (every third of it while held): a
    /// node that dies frees its users' maildrops after this.
    pub maildrop_lease: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 16,
            maildrop_lease: std::time::Duration::from_secs(60),
        }
    }
}

pub struct PgStore {
    pool: Pool,
    events: broadcast::Sender<StoreEvent>,
    commits: AtomicU64,
    maildrops: Arc<Mutex<HashSet<AccountId>>>,
    /// This process, in the notifications it sends (its own come back and are skipped).
    node: String,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counter_writes: AtomicU64,
    announced: Announced,
    /// Numbers this node's transactions for their announcements.
    sequence: AtomicU64,
    /// Seconds, at least 3.
    maildrop_lease: i64,
}

/// Queries by their text, each prepared once per connection and kept (the pool's statement
/// cache): one round trip per query instead of a parse and then an execution.
#[async_trait]
trait Prepared: GenericClient + Sync {
    async fn rows(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, p).await
    }

    async fn row(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_one(&st, p).await
    }

    async fn maybe_row(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, p).await
    }

    async fn run(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.execute(&st, p).await
    }
}

impl<C: GenericClient + Sync> Prepared for C {}

/// The error with its causes: tokio-postgres says "db error", the server says what.
fn pg(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    StoreError::Backend(text)
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

/// Events of a transaction, sent once it committed.
#[derive(Default)]
struct Effects {
    events: Vec<StoreEvent>,
    /// Spool files whose bytes the transaction stored: removed once it committed.
    spools: Vec<std::path::PathBuf>,
}

impl PgStore {
    /// Connects to `url` (postgres://user@host/db) and brings the schema up to date.
    pub async fn connect(url: &str, options: Options) -> Result<Arc<PgStore>> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("storage.url: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .build()
            .map_err(pg)?;
        let events = broadcast::channel(4096).0;
        let node = format!("{}/{:016x}", std::process::id(), rand::random::<u64>());
        let announced: Announced = Default::default();
        let listener = tokio::spawn(listen(
            url.to_string(),
            node.clone(),
            events.clone(),
            announced.clone(),
        ));
        let store = Arc::new(PgStore {
            pool,
            events,
            commits: AtomicU64::new(0),
            maildrops: Arc::new(Mutex::new(HashSet::new())),
            node,
            listener: Mutex::new(Some(listener)),
            counter_writes: AtomicU64::new(0),
            announced,
            sequence: AtomicU64::new(0),
            maildrop_lease: (options.maildrop_lease.as_secs() as i64).max(3),
        });
        if let Err(e) = store.migrate().await {
            // The listener would otherwise outlive a store nobody can use.
            let _ = store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Runs `f` in one transaction and sends its events after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: for<'a> FnOnce(
            &'a Transaction<'a>,
            &'a mut Effects,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>,
    {
        let mut c = self.pool.get().await.map_err(pg)?;
        let tx = c.transaction().await.map_err(pg)?;
        let mut fx = Effects::default();
        let out = f(&tx, &mut fx).await?;
        let commit = self.sequence.fetch_add(1, Ordering::Relaxed);
        notify::announce(&tx, &self.node, commit, &fx.events).await?;
        tx.commit().await.map_err(pg)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        // No await between the commit and passing its events on.
        if !fx.events.is_empty() {
            notify::passed_on(&self.announced, commit);
        }
        for e in fx.events {
            let _ = self.events.send(e);
        }
        for p in fx.spools {
            let _ = tokio::fs::remove_file(p).await;
        }
        Ok(out)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pg)
    }
}

/// Whether the query finds a row.
async fn exists<C: GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool> {
    Ok(c.maybe_row(sql, params).await.map_err(pg)?.is_some())
}

/// Runs a statement that must touch a row: NotFound(`what`) when it touches none.
async fn one_row(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: impl FnOnce() -> String,
) -> Result<()> {
    if tx.run(sql, params).await.map_err(pg)? == 0 {
        return Err(StoreError::NotFound(what()));
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    fn stats(&self) -> StoreStats {
        let commits = self.commits.load(Ordering::Relaxed);
        StoreStats {
            commits,
            writes: commits,
            // The database's own: not counted here.
            fsyncs: 0,
        }
    }

    async fn close(&self) -> Result<()> {
        if let Some(l) = self.listener.lock().unwrap().take() {
            l.abort();
        }
        self.pool.close();
        Ok(())
    }
}
