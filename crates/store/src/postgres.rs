//! The PostgreSQL backend: every record in tables of a versioned schema (migrated at start),
//! reached through a connection pool. Each write is one transaction; rows that order writes
//! (an account for its quota, a mailbox for its UIDs and modseqs) are locked with FOR UPDATE,
//! always in id order, so concurrent writers never deadlock.
//!
//! Several nodes may share one database: every commit's events (new mail, flag changes,
//! queue work) go to the other nodes with NOTIFY, so IDLE and the queue runner see them at
//! once; queue entries are claimed for each attempt (`queue_claim`), and POP3 maildrops are
//! leased in the database.

use std::collections::{HashMap, HashSet};
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

/// The schema, one migration per version; applied in order, each in its own transaction.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO meta VALUES ('last_uidvalidity', 0);
CREATE TABLE domains (name text PRIMARY KEY, created bigint NOT NULL);
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    address text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    quota_bytes bigint NOT NULL,
    quota_messages bigint NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    created bigint NOT NULL,
    forward_to text,
    forward_keep boolean NOT NULL DEFAULT false
);
CREATE TABLE aliases (address text PRIMARY KEY, targets text[] NOT NULL, created bigint NOT NULL, policy text);
CREATE TABLE mailboxes (
    id bigserial PRIMARY KEY,
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext bigint NOT NULL DEFAULT 1,
    highest_modseq bigint NOT NULL DEFAULT 1,
    special_use text,
    subscribed boolean NOT NULL DEFAULT true,
    messages bigint NOT NULL DEFAULT 0,
    unseen bigint NOT NULL DEFAULT 0,
    size bigint NOT NULL DEFAULT 0,
    UNIQUE (account, name)
);
CREATE TABLE blobs (id bigserial PRIMARY KEY, size bigint NOT NULL, meta bytea NOT NULL, data bytea NOT NULL, refs integer NOT NULL);
CREATE TABLE messages (
    mailbox bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid bigint NOT NULL,
    blob bigint NOT NULL,
    size bigint NOT NULL,
    internal_date bigint NOT NULL,
    modseq bigint NOT NULL,
    flags smallint NOT NULL,
    keywords text[] NOT NULL,
    PRIMARY KEY (mailbox, uid)
);
CREATE INDEX messages_by_modseq ON messages (mailbox, modseq);
CREATE TABLE expunged (
    mailbox bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    modseq bigint NOT NULL,
    uid bigint NOT NULL
);
CREATE INDEX expunged_by_modseq ON expunged (mailbox, modseq);
CREATE TABLE queue (id bigserial PRIMARY KEY, entry text NOT NULL);
CREATE TABLE trace (
    seq bigserial PRIMARY KEY,
    trace_id text NOT NULL,
    time bigint NOT NULL,
    event text NOT NULL,
    keys text[] NOT NULL
);
CREATE INDEX trace_by_id ON trace (trace_id, seq);
CREATE INDEX trace_by_time ON trace (time);
CREATE INDEX trace_by_key ON trace USING gin (keys);
CREATE TABLE sieve (
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    source text NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE sieve_active (account bigint PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE, name text NOT NULL);
CREATE TABLE seen (account bigint NOT NULL, key text NOT NULL, expires bigint NOT NULL, PRIMARY KEY (account, key));
CREATE TABLE senders (
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    sender text NOT NULL,
    junk boolean NOT NULL,
    PRIMARY KEY (account, sender)
);
CREATE TABLE tokens (name text PRIMARY KEY, token text NOT NULL);
"#,
    r#"
ALTER TABLE queue ADD COLUMN claim_holder text, ADD COLUMN claim_until bigint NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE maildrop_locks (account bigint PRIMARY KEY, holder text NOT NULL, until bigint NOT NULL);
"#,
    r#"
CREATE TABLE counters (
    key text PRIMARY KEY,
    since_ms bigint NOT NULL DEFAULT 0,
    hits integer NOT NULL DEFAULT 0,
    blocked_until bigint NOT NULL DEFAULT 0,
    strikes integer NOT NULL DEFAULT 0,
    at_ms bigint NOT NULL DEFAULT 0,
    expires bigint NOT NULL
);
CREATE INDEX counters_expires ON counters (expires);
CREATE TABLE web_sessions (
    id text PRIMARY KEY,
    address text NOT NULL,
    admin boolean NOT NULL,
    csrf text NOT NULL,
    password bigint NOT NULL,
    created bigint NOT NULL,
    used bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX web_sessions_address ON web_sessions (address);
CREATE INDEX web_sessions_used ON web_sessions (used);
"#,
];

/// Expired rate-limit counters are swept after this many counter writes of a node.
const COUNTER_SWEEP_EVERY: u64 = 1000;

/// The database's clock in seconds: leases are timed by one clock, whatever the nodes' say.
const DB_NOW: &str = "floor(extract(epoch from clock_timestamp()))::bigint";

/// An arbitrary number all nodes agree on: one of them migrates at a time.
const MIGRATION_LOCK: i64 = 0x706f_7374_6572_6e01;

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

/// What `postern doctor` reports of a database, read without changing anything.
#[derive(Debug, Clone)]
pub struct Health {
    pub server_version: String,
    /// The schema version of the database, and the one this build migrates to.
    pub schema: usize,
    pub schema_wanted: usize,
    /// Nodes listening for each other's events (one connection each).
    pub nodes: i64,
    pub connections: i64,
    pub max_connections: i64,
}

/// Connects once and reads the database's state (no migration).
pub async fn inspect(url: &str) -> Result<Health> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
    let driver = tokio::spawn(conn);
    let r = async {
        let version: String = c
            .query_one("SHOW server_version", &[])
            .await
            .map_err(pg)?
            .get(0);
        let schema: i64 = match c
            .query_one("SELECT count(*) FROM postern_schema", &[])
            .await
        {
            Ok(r) => r.get(0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => return Err(pg(e)),
        };
        let nodes: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query = $1",
                &[&format!("LISTEN {CHANNEL}")],
            )
            .await
            .map_err(pg)?
            .get(0);
        let connections: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        let max: String = c
            .query_one("SHOW max_connections", &[])
            .await
            .map_err(pg)?
            .get(0);
        Ok(Health {
            server_version: version,
            schema: schema.max(0) as usize,
            schema_wanted: MIGRATIONS.len(),
            nodes,
            connections,
            max_connections: max.parse().unwrap_or(0),
        })
    }
    .await;
    driver.abort();
    r
}

/// The channel commits announce their events on.
const CHANNEL: &str = "postern_events";
/// Events per notification: a payload stays well under PostgreSQL's 8000 bytes.
const EVENTS_PER_NOTIFY: usize = 40;

#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    node: String,
    /// This node's number for the commit.
    #[serde(default)]
    commit: u64,
    events: Vec<StoreEvent>,
}

/// Commits whose events this node passed on itself, by number, and when.
type Announced = Arc<Mutex<HashMap<u64, std::time::Instant>>>;

/// How long an own commit's announcement waits for the writer to have passed its events on.
const OWN_EVENTS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Listens for other nodes' events and passes them on as if they were ours; reconnects when
/// the connection drops. This node's own events are passed on by the writer after its commit;
/// when the writer was cancelled while committing, its announcement passes them on instead.
async fn listen(
    url: String,
    node: String,
    events: broadcast::Sender<StoreEvent>,
    announced: Announced,
) {
    let mut reconnecting = false;
    loop {
        if let Ok((client, mut conn)) = tokio_postgres::connect(&url, NoTls).await {
            // The connection is driven here, in this task: aborting it ends both.
            let sql = format!("LISTEN {CHANNEL}");
            let mut listening = std::pin::pin!(client.batch_execute(&sql));
            let mut listened = false;
            loop {
                tokio::select! {
                    r = &mut listening, if !listened => {
                        if r.is_err() {
                            break;
                        }
                        listened = true;
                        // What other nodes announced while this node was not listening is
                        // lost: every session looks again.
                        if reconnecting {
                            let _ = events.send(StoreEvent::Missed);
                        }
                    }
                    m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let Ok(a) = serde_json::from_str::<Announcement>(n.payload()) else {
                                continue;
                            };
                            if a.node != node {
                                for e in a.events {
                                    let _ = events.send(e);
                                }
                            } else if !announced.lock().unwrap().contains_key(&a.commit) {
                                let (events, announced) = (events.clone(), announced.clone());
                                tokio::spawn(async move {
                                    tokio::time::sleep(OWN_EVENTS_GRACE).await;
                                    if !announced.lock().unwrap().contains_key(&a.commit) {
                                        for e in a.events {
                                            let _ = events.send(e);
                                        }
                                    }
                                });
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
        }
        reconnecting = true;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
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

fn special_use_name(s: SpecialUse) -> &'static str {
    match s {
        SpecialUse::Drafts => "Drafts",
        SpecialUse::Sent => "Sent",
        SpecialUse::Trash => "Trash",
        SpecialUse::Junk => "Junk",
        SpecialUse::Archive => "Archive",
    }
}

fn special_use_of(s: Option<&str>) -> Option<SpecialUse> {
    Some(match s? {
        "Drafts" => SpecialUse::Drafts,
        "Sent" => SpecialUse::Sent,
        "Trash" => SpecialUse::Trash,
        "Junk" => SpecialUse::Junk,
        "Archive" => SpecialUse::Archive,
        _ => return None,
    })
}

const ACCOUNT_COLS: &str = "id, address, password_hash, quota_bytes, quota_messages, disabled, \
                            created, forward_to, forward_keep";
const MAILBOX_COLS: &str = "id, account, name, uidvalidity, uidnext, highest_modseq, \
                            special_use, subscribed, messages, unseen, size";
const MESSAGE_COLS: &str = "uid, blob, size, internal_date, modseq, flags, keywords";

fn account_of(r: &Row) -> Account {
    let forward_to: Option<String> = r.get(7);
    Account {
        id: r.get::<_, i64>(0) as u64,
        address: r.get(1),
        password_hash: r.get(2),
        quota_bytes: r.get::<_, i64>(3) as u64,
        quota_messages: r.get::<_, i64>(4) as u64,
        disabled: r.get(5),
        created: r.get(6),
        forward: forward_to.map(|to| Forward {
            to,
            keep_copy: r.get(8),
        }),
    }
}

fn mailbox_of(r: &Row) -> Mailbox {
    Mailbox {
        id: r.get::<_, i64>(0) as u64,
        account: r.get::<_, i64>(1) as u64,
        name: r.get(2),
        uidvalidity: r.get::<_, i64>(3) as u32,
        uidnext: r.get::<_, i64>(4) as u32,
        highest_modseq: r.get::<_, i64>(5) as u64,
        special_use: special_use_of(r.get::<_, Option<&str>>(6)),
        subscribed: r.get(7),
        messages: r.get::<_, i64>(8) as u32,
        unseen: r.get::<_, i64>(9) as u32,
        size: r.get::<_, i64>(10) as u64,
    }
}

fn message_of(r: &Row) -> MessageEntry {
    MessageEntry {
        uid: r.get::<_, i64>(0) as u32,
        blob: r.get::<_, i64>(1) as u64,
        size: r.get::<_, i64>(2) as u64,
        internal_date: r.get(3),
        modseq: r.get::<_, i64>(4) as u64,
        flags: Flags {
            bits: r.get::<_, i16>(5) as u8,
            keywords: r.get(6),
        },
    }
}

fn alias_of(r: &Row) -> Result<Alias> {
    let policy: Option<String> = r.get(3);
    Ok(Alias {
        address: r.get(0),
        targets: r.get(1),
        created: r.get(2),
        policy: policy.map(|p| from_json(&p)).transpose()?,
    })
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
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations this database has not had yet; returns the schema version.
    pub async fn migrate(&self) -> Result<usize> {
        let mut c = self.pool.get().await.map_err(pg)?;
        c.run("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let r = async {
            c.batch_execute("CREATE TABLE IF NOT EXISTS postern_schema (version integer NOT NULL)")
                .await
                .map_err(pg)?;
            let version: i64 = c
                .row("SELECT count(*) FROM postern_schema", &[])
                .await
                .map_err(pg)?
                .get(0);
            if version as usize > MIGRATIONS.len() {
                tracing::warn!(
                    database = version,
                    this_build = MIGRATIONS.len(),
                    "the database's schema is newer than this build's: upgrade this node"
                );
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let tx = c.transaction().await.map_err(pg)?;
                tx.batch_execute(m).await.map_err(pg)?;
                tx.run(
                    "INSERT INTO postern_schema (version) VALUES ($1)",
                    &[&(i as i32 + 1)],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
            }
            Ok(MIGRATIONS.len())
        }
        .await;
        let _ = c
            .run("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        r
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
        // Delivered to the listening nodes when (and only if) the transaction commits.
        let commit = self.sequence.fetch_add(1, Ordering::Relaxed);
        for chunk in fx.events.chunks(EVENTS_PER_NOTIFY) {
            let a = Announcement {
                node: self.node.clone(),
                commit,
                events: chunk.to_vec(),
            };
            tx.run("SELECT pg_notify($1, $2)", &[&CHANNEL, &json(&a)])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        // No await between the commit and passing its events on.
        if !fx.events.is_empty() {
            let now = std::time::Instant::now();
            let mut announced = self.announced.lock().unwrap();
            if announced.len() >= 4096 {
                announced.retain(|_, at| now.duration_since(*at) < OWN_EVENTS_GRACE * 10);
            }
            announced.insert(commit, now);
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

const WEB_SESSION_COLS: &str = "id, address, admin, csrf, password, created, used, expires";

fn web_session_of(r: &Row) -> WebSession {
    WebSession {
        id: r.get(0),
        address: r.get(1),
        admin: r.get(2),
        csrf: r.get(3),
        password: r.get::<_, i64>(4) as u64,
        created: r.get(5),
        used: r.get(6),
        expires: r.get(7),
    }
}

fn counter_of(r: &Row) -> Counter {
    Counter {
        since: r.get(0),
        count: r.get::<_, i32>(1).max(0) as u32,
        until: r.get(2),
        strikes: r.get::<_, i32>(3).max(0) as u32,
        at: r.get(4),
        expires: r.get(5),
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

/// The domain of `address` must be ours; its row stays locked until the transaction ends, so
/// an account and an alias of one address are never made at once.
async fn require_domain(tx: &Transaction<'_>, address: &str) -> Result<()> {
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !exists(
        tx,
        "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE",
        &[&domain],
    )
    .await?
    {
        return Err(StoreError::NotFound(format!("domain {domain}")));
    }
    Ok(())
}

async fn account<C: GenericClient + Sync>(c: &C, id: AccountId, lock: bool) -> Result<Account> {
    let q = format!(
        "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.maybe_row(&q, &[&(id as i64)]).await.map_err(pg)? {
        Some(r) => Ok(account_of(&r)),
        None => Err(StoreError::NotFound(format!("account {id}"))),
    }
}

async fn mailbox<C: GenericClient + Sync>(c: &C, id: MailboxId, lock: bool) -> Result<Mailbox> {
    let q = format!(
        "SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.maybe_row(&q, &[&(id as i64)]).await.map_err(pg)? {
        Some(r) => Ok(mailbox_of(&r)),
        None => Err(StoreError::NotFound(format!("mailbox {id}"))),
    }
}

async fn mailbox_id_by_name<C: GenericClient + Sync>(
    c: &C,
    account: AccountId,
    name: &str,
) -> Result<Option<MailboxId>> {
    Ok(c.maybe_row(
        "SELECT id FROM mailboxes WHERE account = $1 AND name = $2",
        &[&(account as i64), &name],
    )
    .await
    .map_err(pg)?
    .map(|r| r.get::<_, i64>(0) as u64))
}

async fn put_mailbox_counts(tx: &Transaction<'_>, mb: &Mailbox) -> Result<()> {
    tx.run(
        "UPDATE mailboxes SET uidnext = $2, highest_modseq = $3, messages = $4, unseen = $5, \
         size = $6 WHERE id = $1",
        &[
            &(mb.id as i64),
            &(mb.uidnext as i64),
            &(mb.highest_modseq as i64),
            &(mb.messages as i64),
            &(mb.unseen as i64),
            &(mb.size as i64),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn usage<C: GenericClient + Sync>(c: &C, account: AccountId) -> Result<Usage> {
    let r = c
        .row(
            "SELECT coalesce(sum(size), 0)::bigint, coalesce(sum(messages), 0)::bigint \
             FROM mailboxes WHERE account = $1",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?;
    Ok(Usage {
        bytes: r.get::<_, i64>(0) as u64,
        messages: r.get::<_, i64>(1) as u64,
    })
}

async fn mailbox_create_tx(
    tx: &Transaction<'_>,
    account: AccountId,
    name: &str,
    su: Option<SpecialUse>,
) -> Result<Mailbox> {
    let name = crate::embedded::normalize_mailbox_name(name);
    if mailbox_id_by_name(tx, account, &name).await?.is_some() {
        return Err(StoreError::AlreadyExists(format!("mailbox {name}")));
    }
    let uidvalidity: i64 = tx
        .row(
            "UPDATE meta SET value = greatest($1, value + 1) & 4294967295 \
             WHERE key = 'last_uidvalidity' RETURNING value",
            &[&now()],
        )
        .await
        .map_err(pg)?
        .get(0);
    let r = tx
        .row(
            &format!(
                "INSERT INTO mailboxes (account, name, uidvalidity, special_use) \
                 VALUES ($1, $2, $3, $4) RETURNING {MAILBOX_COLS}"
            ),
            &[
                &(account as i64),
                &name,
                &uidvalidity.max(1),
                &su.map(special_use_name),
            ],
        )
        .await
        .map_err(pg)?;
    Ok(mailbox_of(&r))
}

/// One reference fewer to each blob (once per occurrence); blobs nobody holds go.
async fn release_blobs(tx: &Transaction<'_>, blobs: &[BlobId]) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = blobs.iter().map(|&b| b as i64).collect();
    tx.run(
        "UPDATE blobs SET refs = refs - c.n FROM \
         (SELECT id, count(*)::int AS n FROM unnest($1::bigint[]) AS id GROUP BY id) c \
         WHERE blobs.id = c.id",
        &[&ids],
    )
    .await
    .map_err(pg)?;
    tx.run(
        "DELETE FROM blobs WHERE id = ANY($1) AND refs <= 0",
        &[&ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Removes a mailbox and its messages, releasing their blobs.
async fn mailbox_remove(tx: &Transaction<'_>, id: MailboxId) -> Result<()> {
    let blobs: Vec<BlobId> = tx
        .rows(
            "SELECT blob FROM messages WHERE mailbox = $1",
            &[&(id as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect();
    release_blobs(tx, &blobs).await?;
    tx.run("DELETE FROM mailboxes WHERE id = $1", &[&(id as i64)])
        .await
        .map_err(pg)?;
    Ok(())
}

async fn append_entry(
    tx: &Transaction<'_>,
    mb: &mut Mailbox,
    blob: BlobId,
    size: u64,
    internal_date: i64,
    flags: Flags,
) -> Result<Uid> {
    let uid = mb.uidnext;
    mb.uidnext += 1;
    mb.highest_modseq += 1;
    mb.messages += 1;
    mb.size += size;
    if !flags.seen() {
        mb.unseen += 1;
    }
    // The row and the counters in one round trip.
    let row = (
        mb.id as i64,
        uid as i64,
        blob as i64,
        size as i64,
        mb.highest_modseq as i64,
        flags.bits as i16,
    );
    let params: [&(dyn ToSql + Sync); 8] = [
        &row.0,
        &row.1,
        &row.2,
        &row.3,
        &internal_date,
        &row.4,
        &row.5,
        &flags.keywords,
    ];
    let (inserted, counted) = tokio::join!(
        tx.run(
            "INSERT INTO messages (mailbox, uid, blob, size, internal_date, modseq, flags, keywords) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &params,
        ),
        put_mailbox_counts(tx, mb),
    );
    inserted.map_err(pg)?;
    counted?;
    Ok(uid)
}

async fn entries_of<C: GenericClient + Sync>(
    c: &C,
    mailbox: MailboxId,
    uids: &[Uid],
) -> Result<Vec<MessageEntry>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    Ok(c.rows(
        &format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND uid = ANY($2) ORDER BY uid"
        ),
        &[&(mailbox as i64), &uids],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(message_of)
    .collect())
}

async fn expunge_tx(
    tx: &Transaction<'_>,
    mb: &mut Mailbox,
    uids: &[Uid],
    fx: &mut Effects,
) -> Result<Vec<Uid>> {
    let found = entries_of(tx, mb.id, uids).await?;
    // In the order asked, as the embedded store answers.
    let by_uid: HashMap<Uid, &MessageEntry> = found.iter().map(|e| (e.uid, e)).collect();
    let mut gone = Vec::new();
    let mut seen_uids = HashSet::new();
    for &uid in uids {
        let Some(e) = by_uid.get(&uid) else { continue };
        if !seen_uids.insert(uid) {
            continue;
        }
        gone.push((uid, *e));
    }
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    mb.highest_modseq += 1;
    let m = mb.highest_modseq as i64;
    let list: Vec<i64> = gone.iter().map(|(u, _)| *u as i64).collect();
    tx.run(
        "DELETE FROM messages WHERE mailbox = $1 AND uid = ANY($2)",
        &[&(mb.id as i64), &list],
    )
    .await
    .map_err(pg)?;
    tx.run(
        "INSERT INTO expunged (mailbox, modseq, uid) SELECT $1, $2, unnest($3::bigint[])",
        &[&(mb.id as i64), &m, &list],
    )
    .await
    .map_err(pg)?;
    for (_, e) in &gone {
        mb.messages = mb.messages.saturating_sub(1);
        mb.size = mb.size.saturating_sub(e.size);
        if !e.flags.seen() {
            mb.unseen = mb.unseen.saturating_sub(1);
        }
    }
    let blobs: Vec<BlobId> = gone.iter().map(|(_, e)| e.blob).collect();
    release_blobs(tx, &blobs).await?;
    put_mailbox_counts(tx, mb).await?;
    fx.events.push(StoreEvent::Mailbox {
        account: mb.account,
        mailbox: mb.id,
        highest_modseq: mb.highest_modseq,
    });
    Ok(gone.into_iter().map(|(u, _)| u).collect())
}

async fn trace_append_tx<C: GenericClient + Sync>(c: &C, events: &[TraceEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.trace_id.as_str()).collect();
    let times: Vec<i64> = events.iter().map(|e| e.time).collect();
    let bodies: Vec<String> = events.iter().map(json).collect();
    // Arrays of arrays must be rectangular: the keys go as one text each, split again in SQL.
    let keys: Vec<String> = events.iter().map(|e| e.keys.join("\n")).collect();
    c.run(
        "INSERT INTO trace (trace_id, time, event, keys) \
         SELECT i, t, e, CASE WHEN k = '' THEN '{}'::text[] ELSE string_to_array(k, E'\\n') END \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS x(i, t, e, k)",
        &[&ids, &times, &bodies, &keys],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The mailbox a delivery target names (resolved, checked against the account), or why not.
async fn target_mailbox(
    tx: &Transaction<'_>,
    t: &DeliveryTarget,
    fx: &mut Effects,
) -> Result<MailboxId> {
    match &t.mailbox {
        MailboxTarget::Id(id) => {
            let mb = mailbox(tx, *id, false).await?;
            if mb.account != t.account {
                return Err(StoreError::NotFound(format!("mailbox {id}")));
            }
            Ok(mb.id)
        }
        MailboxTarget::Name { name, create } => {
            let n = crate::embedded::normalize_mailbox_name(name);
            match mailbox_id_by_name(tx, t.account, &n).await? {
                Some(id) => Ok(id),
                None if *create => {
                    let mb = mailbox_create_tx(tx, t.account, &n, None).await?;
                    fx.events
                        .push(StoreEvent::MailboxList { account: t.account });
                    Ok(mb.id)
                }
                None => mailbox_id_by_name(tx, t.account, INBOX)
                    .await?
                    .ok_or_else(|| StoreError::NotFound("INBOX".into())),
            }
        }
    }
}

async fn deliver_tx(tx: &Transaction<'_>, d: Delivery, fx: &mut Effects) -> Result<DeliveryReport> {
    let size = d.blob.size;
    let queued = d.queue.is_some();
    let (bytes, spool) = match d.blob.data {
        BlobData::Memory(b) => (b, None),
        BlobData::File(p) => (
            tokio::fs::read(&p).await.map_err(StoreError::from_io)?,
            Some(p),
        ),
    };
    // What needs no lock goes first, the bytes and the trace in one round trip (statements
    // sent together run in order), so the locks below are held for as short a time as can be.
    let refs = d.targets.len() as i32 + queued as i32;
    let stored_size = size as i64;
    let params: [&(dyn ToSql + Sync); 4] = [&stored_size, &d.blob.meta, &bytes, &refs];
    let (blob, traced) = tokio::join!(
        tx.row(
            "INSERT INTO blobs (size, meta, data, refs) VALUES ($1, $2, $3, $4) RETURNING id",
            &params,
        ),
        trace_append_tx(tx, &d.trace),
    );
    let blob = blob.map_err(pg)?.get::<_, i64>(0) as u64;
    traced?;
    drop(bytes);
    // Accounts first, in id order: a quota is checked against a stable usage. For one account
    // and no mailbox to create (most deliveries), its mailboxes are looked up in the same round
    // trip; else after the locks, for the accounts that are there.
    let mut ids: Vec<AccountId> = d.targets.iter().map(|t| t.account).collect();
    ids.sort_unstable();
    ids.dedup();
    let creates = d
        .targets
        .iter()
        .any(|t| matches!(t.mailbox, MailboxTarget::Name { create: true, .. }));
    let pipelined = ids.len() == 1 && !creates;
    let lock_accounts = async {
        let mut accounts: HashMap<AccountId, Account> = HashMap::new();
        for id in ids {
            match account(tx, id, true).await {
                Ok(a) => {
                    accounts.insert(id, a);
                }
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(accounts)
    };
    let (accounts, found) = if pipelined {
        let resolve = async {
            let mut found = Vec::with_capacity(d.targets.len());
            for t in &d.targets {
                found.push(target_mailbox(tx, t, fx).await);
            }
            found
        };
        let (accounts, found) = tokio::join!(lock_accounts, resolve);
        (accounts?, found)
    } else {
        let accounts = lock_accounts.await?;
        let mut found = Vec::with_capacity(d.targets.len());
        for t in &d.targets {
            found.push(if accounts.contains_key(&t.account) {
                target_mailbox(tx, t, fx).await
            } else {
                Err(StoreError::NotFound(format!("account {}", t.account)))
            });
        }
        (accounts, found)
    };
    let mut targets: Vec<Result<MailboxId>> = Vec::with_capacity(d.targets.len());
    let mut pending: Vec<(AccountId, u64)> = Vec::new();
    let mut usages: HashMap<AccountId, Usage> = HashMap::new();
    for (t, mb) in d.targets.iter().zip(found) {
        let r = async {
            let Some(a) = accounts.get(&t.account) else {
                return Err(StoreError::NotFound(format!("account {}", t.account)));
            };
            let mb = mb?;
            if t.enforce_quota && (a.quota_bytes > 0 || a.quota_messages > 0) {
                let u = match usages.get(&a.id) {
                    Some(u) => *u,
                    None => {
                        let u = usage(tx, a.id).await?;
                        usages.insert(a.id, u);
                        u
                    }
                };
                let extra: u64 = pending.iter().filter(|p| p.0 == a.id).map(|p| p.1).sum();
                let count = pending.iter().filter(|p| p.0 == a.id).count() as u64;
                if (a.quota_bytes > 0 && u.bytes + extra + size > a.quota_bytes)
                    || (a.quota_messages > 0 && u.messages + count + 1 > a.quota_messages)
                {
                    return Err(StoreError::QuotaExceeded);
                }
            }
            pending.push((a.id, size));
            Ok(mb)
        }
        .await;
        targets.push(r);
    }
    let ok = targets.iter().filter(|t| t.is_ok()).count() as i32;
    if ok == 0 && !queued {
        // Stored for nobody: the bytes go again (rare: every target refused).
        tx.run("DELETE FROM blobs WHERE id = $1", &[&(blob as i64)])
            .await
            .map_err(pg)?;
        return Ok(DeliveryReport {
            blob: 0,
            targets: targets.into_iter().map(|t| t.map(|_| (0, 0))).collect(),
            queue_id: None,
        });
    }
    if ok + queued as i32 != refs {
        tx.run(
            "UPDATE blobs SET refs = $2 WHERE id = $1",
            &[&(blob as i64), &(ok + queued as i32)],
        )
        .await
        .map_err(pg)?;
    }
    // Mailboxes in id order too.
    let mut order: Vec<MailboxId> = targets
        .iter()
        .filter_map(|t| t.as_ref().ok())
        .copied()
        .collect();
    order.sort_unstable();
    order.dedup();
    let mut boxes: HashMap<MailboxId, Mailbox> = HashMap::new();
    for id in order {
        boxes.insert(id, mailbox(tx, id, true).await?);
    }
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.into_iter().enumerate() {
        match t {
            Ok(id) => {
                let mb = boxes.get_mut(&id).expect("locked above");
                let flags = d.targets[i].flags.clone();
                let uid = append_entry(tx, mb, blob, size, d.internal_date, flags).await?;
                fx.events.push(StoreEvent::Mailbox {
                    account: mb.account,
                    mailbox: mb.id,
                    highest_modseq: mb.highest_modseq,
                });
                out.push(Ok((mb.id, uid)));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let queue_id = match d.queue {
        Some(q) => {
            let created = now();
            let id: i64 = tx
                .row("SELECT nextval('queue_id_seq')", &[])
                .await
                .map_err(pg)?
                .get(0);
            let entry = QueueEntry {
                id: id as u64,
                blob,
                size,
                sender: q.sender,
                recipients: q.recipients,
                envid: q.envid,
                ret: q.ret,
                trace_id: q.trace_id,
                authenticated: q.authenticated,
                requiretls: q.requiretls,
                body_offset: q.body_offset,
                created,
                next_attempt: created,
                attempts: 0,
                last_error: None,
                warned: false,
                bounce: false,
            };
            tx.run(
                "INSERT INTO queue (id, entry) VALUES ($1, $2)",
                &[&id, &json(&entry)],
            )
            .await
            .map_err(pg)?;
            fx.events.push(StoreEvent::Queue);
            Some(id as u64)
        }
        None => None,
    };
    fx.spools.extend(spool);
    Ok(DeliveryReport {
        blob,
        targets: out,
        queue_id,
    })
}

macro_rules! tx {
    (|$tx:ident, $fx:ident| $body:expr) => {
        move |$tx, $fx| Box::pin(async move { $body })
    };
}

#[async_trait]
impl Store for PgStore {
    async fn domain_add(&self, name: &str) -> Result<Domain> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            let d = Domain {
                name,
                created: now(),
            };
            let n = tx
                .run(
                    "INSERT INTO domains (name, created) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&d.name, &d.created],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("domain {}", d.name)));
            }
            fx.events.push(StoreEvent::Directory);
            Ok(d)
        }))
        .await
    }

    async fn domain_delete(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            if !exists(tx, "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE", &[&name]).await? {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            let suffix = format!("@{name}");
            let r = tx
                .row(
                    "SELECT (SELECT count(*) FROM accounts WHERE right(address, length($1)) = $1), \
                            (SELECT count(*) FROM aliases WHERE right(address, length($1)) = $1)",
                    &[&suffix],
                )
                .await
                .map_err(pg)?;
            let (users, aliases): (i64, i64) = (r.get(0), r.get(1));
            if users + aliases > 0 {
                return Err(StoreError::Invalid(format!(
                    "domain {name} still has {users} account(s) and {aliases} alias(es); delete them first"
                )));
            }
            tx.run("DELETE FROM domains WHERE name = $1", &[&name])
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            Ok(())
        }))
        .await
    }

    async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT name, created FROM domains WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(pg)?
        .map(|r| Domain {
            name: r.get(0),
            created: r.get(1),
        }))
    }

    async fn domain_list(&self) -> Result<Vec<Domain>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT name, created FROM domains ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| Domain {
            name: r.get(0),
            created: r.get(1),
        })
        .collect())
    }

    async fn account_create(&self, new: NewAccount) -> Result<Account> {
        self.write(tx!(|tx, fx| {
            let address = new.address;
            require_domain(tx, &address).await?;
            if exists(tx, "SELECT 1 FROM aliases WHERE address = $1", &[&address]).await? {
                return Err(StoreError::AlreadyExists(format!("alias {address}")));
            }
            let r = tx
                .row(
                    &format!(
                        "INSERT INTO accounts (address, password_hash, quota_bytes, \
                         quota_messages, created) VALUES ($1, $2, $3, $4, $5) \
                         RETURNING {ACCOUNT_COLS}"
                    ),
                    &[
                        &address,
                        &new.password_hash,
                        &(new.quota_bytes as i64),
                        &(new.quota_messages as i64),
                        &now(),
                    ],
                )
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::AlreadyExists(format!("account {address}"))
                    } else {
                        pg(e)
                    }
                })?;
            let a = account_of(&r);
            mailbox_create_tx(tx, a.id, INBOX, None).await?;
            for (name, su) in SpecialUse::DEFAULTS {
                mailbox_create_tx(tx, a.id, name, Some(su)).await?;
            }
            fx.events.push(StoreEvent::Directory);
            Ok(a)
        }))
        .await
    }

    async fn account_get(&self, id: AccountId) -> Result<Option<Account>> {
        let c = self.client().await?;
        match account(&c, id, false).await {
            Ok(a) => Ok(Some(a)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE address = $1"),
            &[&address],
        )
        .await
        .map_err(pg)?
        .map(|r| account_of(&r)))
    }

    async fn account_list(&self) -> Result<Vec<Account>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id"),
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(account_of)
        .collect())
    }

    async fn account_update(&self, id: AccountId, up: AccountUpdate) -> Result<Account> {
        self.write(tx!(|tx, fx| {
            let mut a = account(tx, id, true).await?;
            if let Some(h) = up.password_hash {
                a.password_hash = h;
            }
            if let Some(q) = up.quota_bytes {
                a.quota_bytes = q;
            }
            if let Some(q) = up.quota_messages {
                a.quota_messages = q;
            }
            if let Some(d) = up.disabled {
                a.disabled = d;
            }
            if let Some(f) = up.forward {
                a.forward = f;
            }
            tx.run(
                "UPDATE accounts SET password_hash = $2, quota_bytes = $3, quota_messages = $4, \
                 disabled = $5, forward_to = $6, forward_keep = $7 WHERE id = $1",
                &[
                    &(id as i64),
                    &a.password_hash,
                    &(a.quota_bytes as i64),
                    &(a.quota_messages as i64),
                    &a.disabled,
                    &a.forward.as_ref().map(|f| f.to.clone()),
                    &a.forward.as_ref().is_some_and(|f| f.keep_copy),
                ],
            )
            .await
            .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            Ok(a)
        }))
        .await
    }

    async fn account_delete(&self, id: AccountId) -> Result<()> {
        self.write(tx!(|tx, fx| {
            account(tx, id, true).await?;
            let boxes: Vec<MailboxId> = tx
                .rows(
                    "SELECT id FROM mailboxes WHERE account = $1 ORDER BY id FOR UPDATE",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get::<_, i64>(0) as u64)
                .collect();
            for mb in boxes {
                mailbox_remove(tx, mb).await?;
            }
            tx.run("DELETE FROM seen WHERE account = $1", &[&(id as i64)])
                .await
                .map_err(pg)?;
            tx.run("DELETE FROM accounts WHERE id = $1", &[&(id as i64)])
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            fx.events.push(StoreEvent::MailboxList { account: id });
            Ok(())
        }))
        .await
    }

    async fn account_usage(&self, id: AccountId) -> Result<Usage> {
        let c = self.client().await?;
        usage(&c, id).await
    }

    async fn alias_set(&self, address: &str, targets: Vec<String>) -> Result<Alias> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            require_domain(tx, &address).await?;
            if exists(tx, "SELECT 1 FROM accounts WHERE address = $1", &[&address]).await? {
                return Err(StoreError::AlreadyExists(format!("account {address}")));
            }
            let r = tx
                .row(
                    "INSERT INTO aliases (address, targets, created) VALUES ($1, $2, $3) \
                     ON CONFLICT (address) DO UPDATE SET targets = EXCLUDED.targets \
                     RETURNING address, targets, created, policy",
                    &[&address, &targets, &now()],
                )
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            alias_of(&r)
        }))
        .await
    }

    async fn alias_set_policy(&self, address: &str, policy: Option<SendPolicy>) -> Result<Alias> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            let r = tx
                .maybe_row(
                    "UPDATE aliases SET policy = $2 WHERE address = $1 \
                     RETURNING address, targets, created, policy",
                    &[&address, &policy.as_ref().map(json)],
                )
                .await
                .map_err(pg)?;
            let Some(r) = r else {
                return Err(StoreError::NotFound(format!("alias {address}")));
            };
            fx.events.push(StoreEvent::Directory);
            alias_of(&r)
        }))
        .await
    }

    async fn alias_get(&self, address: &str) -> Result<Option<Alias>> {
        let c = self.client().await?;
        c.maybe_row(
            "SELECT address, targets, created, policy FROM aliases WHERE address = $1",
            &[&address],
        )
        .await
        .map_err(pg)?
        .map(|r| alias_of(&r))
        .transpose()
    }

    async fn alias_list(&self) -> Result<Vec<Alias>> {
        let c = self.client().await?;
        c.rows(
            "SELECT address, targets, created, policy FROM aliases ORDER BY address COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(alias_of)
        .collect()
    }

    async fn alias_delete(&self, address: &str) -> Result<()> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            one_row(
                tx,
                "DELETE FROM aliases WHERE address = $1",
                &[&address],
                || format!("alias {address}"),
            )
            .await?;
            fx.events.push(StoreEvent::Directory);
            Ok(())
        }))
        .await
    }

    async fn mailbox_list(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!(
                "SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = $1 ORDER BY name COLLATE \"C\""
            ),
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(mailbox_of)
        .collect())
    }

    async fn mailbox_get(&self, id: MailboxId) -> Result<Option<Mailbox>> {
        let c = self.client().await?;
        match mailbox(&c, id, false).await {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn mailbox_by_name(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
        let name = crate::embedded::normalize_mailbox_name(name);
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = $1 AND name = $2"),
            &[&(account as i64), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| mailbox_of(&r)))
    }

    async fn mailbox_create(
        &self,
        account_id: AccountId,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            account(tx, account_id, true).await?;
            let mb = mailbox_create_tx(tx, account_id, &name, special_use).await?;
            fx.events.push(StoreEvent::MailboxList {
                account: account_id,
            });
            Ok(mb)
        }))
        .await
    }

    async fn mailbox_delete(&self, id: MailboxId) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let mb = mailbox(tx, id, true).await?;
            if mb.name == INBOX {
                return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
            }
            mailbox_remove(tx, id).await?;
            fx.events.push(StoreEvent::MailboxList {
                account: mb.account,
            });
            fx.events.push(StoreEvent::Mailbox {
                account: mb.account,
                mailbox: mb.id,
                highest_modseq: mb.highest_modseq + 1,
            });
            Ok(())
        }))
        .await
    }

    async fn mailbox_rename(&self, id: MailboxId, new_name: &str) -> Result<()> {
        let new_name = crate::embedded::normalize_mailbox_name(new_name);
        self.write(tx!(|tx, fx| {
            // The account first, then the mailbox and its children in id order: the order
            // every writer locks in.
            let owner = mailbox(tx, id, false).await?.account;
            account(tx, owner, true).await?;
            let mb = mailbox(tx, id, false).await?;
            if mb.name == INBOX {
                return Err(StoreError::Invalid("INBOX cannot be renamed here".into()));
            }
            if new_name == mb.name {
                return Err(StoreError::AlreadyExists(format!("mailbox {new_name}")));
            }
            if new_name == INBOX || new_name.starts_with(&format!("{}/", mb.name)) {
                return Err(StoreError::Invalid(format!(
                    "cannot rename {} to {new_name}",
                    mb.name
                )));
            }
            let prefix = format!("{}/", mb.name);
            let mut moves = vec![(mb.id, new_name.clone())];
            let locked = tx
                .rows(
                    "SELECT id, name FROM mailboxes WHERE account = $1 \
                     AND (id = $3 OR left(name, length($2)) = $2) ORDER BY id FOR UPDATE",
                    &[&(mb.account as i64), &prefix, &(mb.id as i64)],
                )
                .await
                .map_err(pg)?;
            for r in locked.iter().filter(|r| r.get::<_, i64>(0) as u64 != mb.id) {
                let name: String = r.get(1);
                moves.push((
                    r.get::<_, i64>(0) as u64,
                    format!("{new_name}/{}", &name[prefix.len()..]),
                ));
            }
            let moving: HashSet<MailboxId> = moves.iter().map(|m| m.0).collect();
            for (_, n) in &moves {
                if let Some(other) = mailbox_id_by_name(tx, mb.account, n).await?
                    && !moving.contains(&other)
                {
                    return Err(StoreError::AlreadyExists(format!("mailbox {n}")));
                }
            }
            // Through temporary names, so a child and its new name never collide midway.
            for (id, _) in &moves {
                tx.run(
                    "UPDATE mailboxes SET name = '\u{1}' || id::text WHERE id = $1",
                    &[&(*id as i64)],
                )
                .await
                .map_err(pg)?;
            }
            for (id, n) in &moves {
                tx.run(
                    "UPDATE mailboxes SET name = $2 WHERE id = $1",
                    &[&(*id as i64), n],
                )
                .await
                .map_err(pg)?;
            }
            fx.events.push(StoreEvent::MailboxList {
                account: mb.account,
            });
            Ok(())
        }))
        .await
    }

    async fn mailbox_subscribe(&self, id: MailboxId, subscribed: bool) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let mb = mailbox(tx, id, true).await?;
            tx.run(
                "UPDATE mailboxes SET subscribed = $2 WHERE id = $1",
                &[&(id as i64), &subscribed],
            )
            .await
            .map_err(pg)?;
            fx.events.push(StoreEvent::MailboxList {
                account: mb.account,
            });
            Ok(())
        }))
        .await
    }

    async fn deliver(&self, delivery: Delivery) -> Result<DeliveryReport> {
        let spool = match &delivery.blob.data {
            BlobData::File(p) => Some(p.clone()),
            BlobData::Memory(_) => None,
        };
        let r = self
            .write(tx!(|tx, fx| deliver_tx(tx, delivery, fx).await))
            .await;
        if let (Some(p), Ok(rep)) = (&spool, &r)
            && rep.blob == 0
        {
            let _ = tokio::fs::remove_file(p).await;
        }
        r
    }

    async fn deliver_many(&self, deliveries: Vec<Delivery>) -> Result<Vec<DeliveryReport>> {
        let spools: Vec<Option<std::path::PathBuf>> = deliveries
            .iter()
            .map(|d| match &d.blob.data {
                BlobData::File(p) => Some(p.clone()),
                BlobData::Memory(_) => None,
            })
            .collect();
        let r = self
            .write(tx!(|tx, fx| {
                // Every account of every delivery first, in id order, as single deliveries do.
                let mut ids: Vec<i64> = deliveries
                    .iter()
                    .flat_map(|d| d.targets.iter().map(|t| t.account as i64))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                tx.rows(
                    "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await
                .map_err(pg)?;
                let mut out = Vec::with_capacity(deliveries.len());
                for d in deliveries {
                    out.push(deliver_tx(tx, d, fx).await?);
                }
                Ok(out)
            }))
            .await;
        if let Ok(reps) = &r {
            for (p, rep) in spools.iter().zip(reps) {
                if let Some(p) = p
                    && rep.blob == 0
                {
                    let _ = tokio::fs::remove_file(p).await;
                }
            }
        }
        r
    }

    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!("SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 ORDER BY uid"),
            &[&(mailbox as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(message_of)
        .collect())
    }

    async fn message_get(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND uid = $2"),
            &[&(mailbox as i64), &(uid as i64)],
        )
        .await
        .map_err(pg)?
        .map(|r| message_of(&r)))
    }

    async fn message_changes(&self, mailbox_id: MailboxId, since: ModSeq) -> Result<Changes> {
        let mut c = self.client().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let mb = mailbox(&tx, mailbox_id, false).await?;
        let changed = tx
            .rows(
                &format!(
                    "SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND modseq > $2 \
                     ORDER BY uid"
                ),
                &[&(mailbox_id as i64), &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(message_of)
            .collect();
        let expunged = tx
            .rows(
                "SELECT uid FROM expunged WHERE mailbox = $1 AND modseq > $2 ORDER BY uid",
                &[&(mailbox_id as i64), &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(Changes {
            changed,
            expunged,
            highest_modseq: mb.highest_modseq,
        })
    }

    async fn flags_update(&self, u: FlagsUpdate) -> Result<FlagsResult> {
        self.write(tx!(|tx, fx| {
            let mut mb = mailbox(tx, u.mailbox, true).await?;
            let entries = entries_of(tx, mb.id, &u.uids).await?;
            let by_uid: HashMap<Uid, MessageEntry> =
                entries.into_iter().map(|e| (e.uid, e)).collect();
            let mut res = FlagsResult::default();
            let mut modseq = None;
            let mut done = HashSet::new();
            for uid in u.uids {
                let Some(e) = by_uid.get(&uid) else { continue };
                if !done.insert(uid) {
                    continue;
                }
                if let Some(since) = u.unchanged_since
                    && e.modseq > since
                {
                    res.modified.push(uid);
                    continue;
                }
                let flags = e.flags.apply(u.op, &u.flags);
                if flags == e.flags {
                    continue;
                }
                let m = *modseq.get_or_insert_with(|| {
                    mb.highest_modseq += 1;
                    mb.highest_modseq
                });
                match (e.flags.seen(), flags.seen()) {
                    (false, true) => mb.unseen = mb.unseen.saturating_sub(1),
                    (true, false) => mb.unseen += 1,
                    _ => {}
                }
                tx.run(
                    "UPDATE messages SET flags = $3, keywords = $4, modseq = $5 \
                     WHERE mailbox = $1 AND uid = $2",
                    &[
                        &(mb.id as i64),
                        &(uid as i64),
                        &(flags.bits as i16),
                        &flags.keywords,
                        &(m as i64),
                    ],
                )
                .await
                .map_err(pg)?;
                res.updated.push((uid, flags, m));
            }
            if modseq.is_some() {
                put_mailbox_counts(tx, &mb).await?;
                fx.events.push(StoreEvent::Mailbox {
                    account: mb.account,
                    mailbox: mb.id,
                    highest_modseq: mb.highest_modseq,
                });
            }
            Ok(res)
        }))
        .await
    }

    async fn expunge(&self, mailbox_id: MailboxId, uids: Vec<Uid>) -> Result<Vec<Uid>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(tx!(|tx, fx| {
            let mut mb = mailbox(tx, mailbox_id, true).await?;
            expunge_tx(tx, &mut mb, &uids, fx).await
        }))
        .await
    }

    async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(Uid, Uid)>> {
        self.write(tx!(|tx, fx| {
            // The accounts first (in id order), then both mailboxes, as deliveries lock them.
            let src_account = mailbox(tx, from, false).await?.account;
            let dst_account = mailbox(tx, to, false).await?.account;
            tx.rows(
                "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&vec![src_account as i64, dst_account as i64]],
            )
            .await
            .map_err(pg)?;
            let (first, second) = (from.min(to), from.max(to));
            let mut locked = vec![mailbox(tx, first, true).await?];
            if second != first {
                locked.push(mailbox(tx, second, true).await?);
            }
            let take = |id: MailboxId| locked.iter().find(|m| m.id == id).cloned().expect("locked");
            let mut src = take(from);
            let mut dst = take(to);
            let found = entries_of(tx, from, &uids).await?;
            let by_uid: HashMap<Uid, MessageEntry> =
                found.into_iter().map(|e| (e.uid, e)).collect();
            let entries: Vec<MessageEntry> =
                uids.iter().filter_map(|u| by_uid.get(u).cloned()).collect();
            let a = account(tx, dst.account, true).await?;
            if a.quota_bytes > 0 || a.quota_messages > 0 {
                let u = usage(tx, a.id).await?;
                let (add_bytes, add_msgs) = if remove_source && src.account == dst.account {
                    (0, 0)
                } else {
                    (
                        entries.iter().map(|e| e.size).sum::<u64>(),
                        entries.len() as u64,
                    )
                };
                if (a.quota_bytes > 0 && add_bytes > 0 && u.bytes + add_bytes > a.quota_bytes)
                    || (a.quota_messages > 0
                        && add_msgs > 0
                        && u.messages + add_msgs > a.quota_messages)
                {
                    return Err(StoreError::QuotaExceeded);
                }
            }
            let mut pairs = Vec::with_capacity(entries.len());
            if !entries.is_empty() {
                let blobs: Vec<i64> = entries.iter().map(|e| e.blob as i64).collect();
                tx.run(
                    "UPDATE blobs SET refs = refs + c.n FROM \
                     (SELECT id, count(*)::int AS n FROM unnest($1::bigint[]) AS id GROUP BY id) c \
                     WHERE blobs.id = c.id",
                    &[&blobs],
                )
                .await
                .map_err(pg)?;
            }
            for e in &entries {
                let uid = append_entry(
                    tx,
                    &mut dst,
                    e.blob,
                    e.size,
                    e.internal_date,
                    e.flags.clone(),
                )
                .await?;
                pairs.push((e.uid, uid));
            }
            if !pairs.is_empty() {
                fx.events.push(StoreEvent::Mailbox {
                    account: dst.account,
                    mailbox: dst.id,
                    highest_modseq: dst.highest_modseq,
                });
            }
            if remove_source {
                let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
                if from == to {
                    src = dst.clone();
                }
                expunge_tx(tx, &mut src, &moved, fx).await?;
            }
            Ok(pairs)
        }))
        .await
    }

    async fn blob_info(&self, id: BlobId) -> Result<BlobInfo> {
        let c = self.client().await?;
        match c
            .maybe_row(
                "SELECT size, meta FROM blobs WHERE id = $1",
                &[&(id as i64)],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => Ok(BlobInfo {
                id,
                size: r.get::<_, i64>(0) as u64,
                meta: Arc::new(r.get(1)),
            }),
            None => Err(StoreError::NotFound(format!("blob {id}"))),
        }
    }

    async fn blob_read(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let c = self.client().await?;
        // substring counts from 1; a length beyond the end stops at the end.
        match c
            .maybe_row(
                "SELECT substring(data FROM $2 FOR $3) FROM blobs WHERE id = $1",
                &[
                    &(id as i64),
                    &(offset.min(i32::MAX as u64 - 1) as i32 + 1),
                    &(len.min(i32::MAX as u64) as i32),
                ],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => Ok(r.get(0)),
            None => Err(StoreError::NotFound(format!("blob {id}"))),
        }
    }

    async fn blob_head(
        &self,
        id: BlobId,
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<u8>> {
        self.blob_heads(&[id], head_len)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::NotFound(format!("blob {id}"))))
    }

    async fn blob_heads(
        &self,
        ids: &[BlobId],
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let c = self.client().await?;
        let list: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        // Two queries for any number of blobs: their metadata, then the heads it measures.
        let metas: HashMap<u64, (u64, Vec<u8>)> = c
            .rows(
                "SELECT id, size, meta FROM blobs WHERE id = ANY($1)",
                &[&list],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    (r.get::<_, i64>(1) as u64, r.get::<_, Vec<u8>>(2)),
                )
            })
            .collect();
        let mut want_ids = Vec::new();
        let mut want_lens = Vec::new();
        for (id, (size, meta)) in &metas {
            want_ids.push(*id as i64);
            want_lens.push(
                head_len(meta)
                    .unwrap_or(*size)
                    .min(*size)
                    .min(i32::MAX as u64) as i32,
            );
        }
        let heads: HashMap<u64, Vec<u8>> = c
            .rows(
                "SELECT b.id, substring(b.data FROM 1 FOR w.n) FROM blobs b \
                 JOIN unnest($1::bigint[], $2::int[]) AS w(id, n) ON b.id = w.id",
                &[&want_ids, &want_lens],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                heads
                    .get(id)
                    .cloned()
                    .ok_or_else(|| StoreError::NotFound(format!("blob {id}")))
            })
            .collect())
    }

    async fn blob_infos(&self, ids: &[BlobId]) -> Result<Vec<Result<BlobInfo>>> {
        let c = self.client().await?;
        let list: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let found: HashMap<u64, (u64, Arc<Vec<u8>>)> = c
            .rows(
                "SELECT id, size, meta FROM blobs WHERE id = ANY($1)",
                &[&list],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    (r.get::<_, i64>(1) as u64, Arc::new(r.get::<_, Vec<u8>>(2))),
                )
            })
            .collect();
        Ok(ids
            .iter()
            .map(|&id| match found.get(&id) {
                Some((size, meta)) => Ok(BlobInfo {
                    id,
                    size: *size,
                    meta: meta.clone(),
                }),
                None => Err(StoreError::NotFound(format!("blob {id}"))),
            })
            .collect())
    }

    async fn queue_list(&self) -> Result<Vec<QueueEntry>> {
        let c = self.client().await?;
        c.rows("SELECT entry FROM queue ORDER BY id", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        let c = self.client().await?;
        c.maybe_row("SELECT entry FROM queue WHERE id = $1", &[&(id as i64)])
            .await
            .map_err(pg)?
            .map(|r| from_json(r.get::<_, &str>(0)))
            .transpose()
    }

    async fn queue_update(&self, entry: QueueEntry) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let Some(r) = tx
                .maybe_row(
                    "SELECT entry FROM queue WHERE id = $1 FOR UPDATE",
                    &[&(entry.id as i64)],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("queue entry {}", entry.id)));
            };
            let stored: QueueEntry = from_json(r.get::<_, &str>(0))?;
            let entry = entry.keeping_outcomes_of(&stored);
            one_row(
                tx,
                "UPDATE queue SET entry = $2 WHERE id = $1",
                &[&(entry.id as i64), &json(&entry)],
                || format!("queue entry {}", entry.id),
            )
            .await?;
            fx.events.push(StoreEvent::Queue);
            Ok(())
        }))
        .await
    }

    async fn queue_delete(&self, id: QueueId) -> Result<()> {
        self.write(tx!(|tx, _fx| {
            let Some(r) = tx
                .maybe_row(
                    "DELETE FROM queue WHERE id = $1 RETURNING entry",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("queue entry {id}")));
            };
            let entry: QueueEntry = from_json(r.get::<_, &str>(0))?;
            release_blobs(tx, &[entry.blob]).await
        }))
        .await
    }

    async fn queue_claim(&self, id: QueueId, holder: &str, until: i64) -> Result<bool> {
        let holder = holder.to_string();
        self.write(tx!(|tx, _fx| {
            let now = now();
            let Some(r) = tx
                .maybe_row(
                    "SELECT claim_holder, claim_until FROM queue WHERE id = $1 FOR UPDATE",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("queue entry {id}")));
            };
            let (h, u): (Option<String>, i64) = (r.get(0), r.get(1));
            if u > now && h.as_deref() != Some(holder.as_str()) {
                return Ok(false);
            }
            tx.run(
                "UPDATE queue SET claim_holder = $2, claim_until = $3 WHERE id = $1",
                &[&(id as i64), &holder, &until.max(0)],
            )
            .await
            .map_err(pg)?;
            Ok(true)
        }))
        .await
    }

    async fn trace_append(&self, events: Vec<TraceEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(tx!(|tx, _fx| trace_append_tx(tx, &events).await))
            .await
    }

    async fn trace_get(&self, trace_id: &str) -> Result<Vec<TraceEvent>> {
        let c = self.client().await?;
        let mut v: Vec<TraceEvent> = c
            .rows(
                "SELECT event FROM trace WHERE trace_id = $1 ORDER BY seq",
                &[&trace_id],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect::<Result<_>>()?;
        v.sort_by_key(|e| e.time);
        Ok(v)
    }

    async fn trace_find(&self, key: &str, since: i64, limit: usize) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT trace_id FROM trace WHERE keys @> ARRAY[$1::text] AND time >= $2 \
             GROUP BY trace_id ORDER BY max(time) DESC, trace_id DESC LIMIT $3",
            &[&key, &since, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn trace_recent(&self, since: i64, limit: usize) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT trace_id FROM trace WHERE time >= $1 \
             GROUP BY trace_id ORDER BY max(time) DESC, trace_id DESC LIMIT $2",
            &[&since, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn trace_prune(&self, before: i64) -> Result<u64> {
        self.write(tx!(|tx, _fx| {
            let n = tx
                .run("DELETE FROM trace WHERE time < $1", &[&before])
                .await
                .map_err(pg)?;
            tx.run("DELETE FROM seen WHERE expires <= $1", &[&(before / 1000)])
                .await
                .map_err(pg)?;
            Ok(n)
        }))
        .await
    }

    async fn sieve_put(&self, account_id: AccountId, name: &str, source: &str) -> Result<()> {
        let (name, source) = (name.to_string(), source.to_string());
        self.write(tx!(|tx, _fx| {
            account(tx, account_id, false).await?;
            tx.run(
                "INSERT INTO sieve (account, name, source) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, name) DO UPDATE SET source = EXCLUDED.source",
                &[&(account_id as i64), &name, &source],
            )
            .await
            .map_err(pg)?;
            Ok(())
        }))
        .await
    }

    async fn sieve_get(&self, account: AccountId, name: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT source FROM sieve WHERE account = $1 AND name = $2",
            &[&(account as i64), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0)))
    }

    async fn sieve_list(&self, account: AccountId) -> Result<Vec<SieveScript>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT s.name, octet_length(s.source)::bigint, a.name IS NOT NULL FROM sieve s \
             LEFT JOIN sieve_active a ON a.account = s.account AND a.name = s.name \
             WHERE s.account = $1 ORDER BY s.name COLLATE \"C\"",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| SieveScript {
            name: r.get(0),
            size: r.get::<_, i64>(1) as u64,
            active: r.get(2),
        })
        .collect())
    }

    async fn sieve_activate(&self, account_id: AccountId, name: Option<&str>) -> Result<()> {
        let name = name.map(str::to_string);
        self.write(tx!(|tx, _fx| {
            account(tx, account_id, true).await?;
            match name {
                Some(n) => {
                    if !exists(
                        tx,
                        "SELECT 1 FROM sieve WHERE account = $1 AND name = $2",
                        &[&(account_id as i64), &n],
                    )
                    .await?
                    {
                        return Err(StoreError::NotFound(format!("script {n}")));
                    }
                    tx.run(
                        "INSERT INTO sieve_active (account, name) VALUES ($1, $2) \
                         ON CONFLICT (account) DO UPDATE SET name = EXCLUDED.name",
                        &[&(account_id as i64), &n],
                    )
                    .await
                    .map_err(pg)?;
                }
                None => {
                    tx.run(
                        "DELETE FROM sieve_active WHERE account = $1",
                        &[&(account_id as i64)],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            Ok(())
        }))
        .await
    }

    async fn sieve_active(&self, account: AccountId) -> Result<Option<(String, String)>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT s.name, s.source FROM sieve_active a JOIN sieve s \
             ON s.account = a.account AND s.name = a.name WHERE a.account = $1",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .map(|r| (r.get(0), r.get(1))))
    }

    async fn sieve_delete(&self, account_id: AccountId, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, _fx| {
            if exists(
                tx,
                "SELECT 1 FROM sieve_active WHERE account = $1 AND name = $2",
                &[&(account_id as i64), &name],
            )
            .await?
            {
                return Err(StoreError::Invalid(format!("script {name} is active")));
            }
            one_row(
                tx,
                "DELETE FROM sieve WHERE account = $1 AND name = $2",
                &[&(account_id as i64), &name],
                || format!("script {name}"),
            )
            .await?;
            Ok(())
        }))
        .await
    }

    async fn sieve_rename(&self, account_id: AccountId, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(tx!(|tx, _fx| {
            let a = account_id as i64;
            if exists(
                tx,
                "SELECT 1 FROM sieve WHERE account = $1 AND name = $2",
                &[&a, &to],
            )
            .await?
            {
                return Err(StoreError::AlreadyExists(format!("script {to}")));
            }
            // The active pointer follows the script (no foreign key holds it back).
            let active = tx
                .maybe_row(
                    "DELETE FROM sieve_active WHERE account = $1 AND name = $2 RETURNING 1",
                    &[&a, &from],
                )
                .await
                .map_err(pg)?
                .is_some();
            one_row(
                tx,
                "UPDATE sieve SET name = $3 WHERE account = $1 AND name = $2",
                &[&a, &from, &to],
                || format!("script {from}"),
            )
            .await?;
            if active {
                tx.run(
                    "INSERT INTO sieve_active (account, name) VALUES ($1, $2)",
                    &[&a, &to],
                )
                .await
                .map_err(pg)?;
            }
            Ok(())
        }))
        .await
    }

    async fn seen_mark(
        &self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        let key = key.to_string();
        self.write(tx!(|tx, _fx| {
            // Inserted or taken over when expired; a live mark is left as it is.
            let took = tx
                .maybe_row(
                    "INSERT INTO seen (account, key, expires) VALUES ($1, $2, $4) \
                     ON CONFLICT (account, key) DO UPDATE SET expires = EXCLUDED.expires \
                     WHERE seen.expires <= $3 RETURNING 1",
                    &[&(account as i64), &key, &now, &expires],
                )
                .await
                .map_err(pg)?;
            Ok(took.is_none())
        }))
        .await
    }

    async fn sender_verdict_set(
        &self,
        account_id: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<()> {
        let sender = sender.to_ascii_lowercase();
        self.write(tx!(|tx, _fx| {
            match junk {
                Some(j) => {
                    account(tx, account_id, false).await?;
                    tx.run(
                        "INSERT INTO senders (account, sender, junk) VALUES ($1, $2, $3) \
                         ON CONFLICT (account, sender) DO UPDATE SET junk = EXCLUDED.junk",
                        &[&(account_id as i64), &sender, &j],
                    )
                    .await
                    .map_err(pg)?;
                }
                None => {
                    tx.run(
                        "DELETE FROM senders WHERE account = $1 AND sender = $2",
                        &[&(account_id as i64), &sender],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            Ok(())
        }))
        .await
    }

    async fn sender_verdict(&self, account: AccountId, sender: &str) -> Result<Option<bool>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT junk FROM senders WHERE account = $1 AND sender = $2",
            &[&(account as i64), &sender.to_ascii_lowercase()],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0)))
    }

    async fn sender_verdict_list(&self, account: AccountId) -> Result<Vec<(String, bool)>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT sender, junk FROM senders WHERE account = $1 ORDER BY sender",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    async fn token_put(&self, token: ApiToken) -> Result<()> {
        self.write(tx!(|tx, _fx| {
            let n = tx
                .run(
                    "INSERT INTO tokens (name, token) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&token.name, &json(&token)],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("token {}", token.name)));
            }
            Ok(())
        }))
        .await
    }

    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        let c = self.client().await?;
        c.rows("SELECT token FROM tokens ORDER BY name COLLATE \"C\"", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn token_delete(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, _fx| {
            one_row(tx, "DELETE FROM tokens WHERE name = $1", &[&name], || {
                format!("token {name}")
            })
            .await?;
            Ok(())
        }))
        .await
    }

    async fn counter_update(&self, key: &str, step: CounterStep<'_>) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let now = now_ms();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Inserted when missing and locked in one statement: two nodes never both start one.
        let row = tx
            .row(
                "INSERT INTO counters (key, expires) VALUES ($1, 0) \
                 ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key \
                 RETURNING since_ms, hits, blocked_until, strikes, at_ms, expires",
                &[&key],
            )
            .await
            .map_err(pg)?;
        let current = Some(counter_of(&row)).filter(|c| c.expires > now);
        let next = step(current).filter(|c| c.expires > now);
        match &next {
            Some(n) => {
                tx.run(
                    "UPDATE counters SET since_ms = $2, hits = $3, blocked_until = $4, \
                     strikes = $5, at_ms = $6, expires = $7 WHERE key = $1",
                    &[
                        &key,
                        &n.since,
                        &(n.count.min(i32::MAX as u32) as i32),
                        &n.until,
                        &(n.strikes.min(i32::MAX as u32) as i32),
                        &n.at,
                        &n.expires,
                    ],
                )
                .await
                .map_err(pg)?;
            }
            None => {
                tx.run("DELETE FROM counters WHERE key = $1", &[&key])
                    .await
                    .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)?;
        if self
            .counter_writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(COUNTER_SWEEP_EVERY)
            && let Err(e) = c
                .run("DELETE FROM counters WHERE expires <= $1", &[&now])
                .await
        {
            // The update itself is committed: only the sweep waits for another time.
            tracing::warn!(error = %pg(e), "expired rate-limit counters not swept");
        }
        Ok(next)
    }

    async fn counter_get(&self, key: &str) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT since_ms, hits, blocked_until, strikes, at_ms, expires FROM counters \
                 WHERE key = $1 AND expires > $2",
            &[&key, &now_ms()],
        )
        .await
        .map_err(pg)?
        .map(|r| counter_of(&r)))
    }

    async fn web_session_put(&self, session: WebSession, limit: Option<usize>) -> Result<()> {
        let c = self.client().await?;
        if limit.is_none() {
            c.run(
                "UPDATE web_sessions SET address = $2, admin = $3, csrf = $4, password = $5, \
                 used = $6, expires = $7 WHERE id = $1",
                &[
                    &session.id,
                    &session.address,
                    &session.admin,
                    &session.csrf,
                    &(session.password as i64),
                    &session.used,
                    &session.expires,
                ],
            )
            .await
            .map_err(pg)?;
            return Ok(());
        }
        c.run(
            "INSERT INTO web_sessions (id, address, admin, csrf, password, created, used, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             address = EXCLUDED.address, admin = EXCLUDED.admin, csrf = EXCLUDED.csrf, \
             password = EXCLUDED.password, used = EXCLUDED.used, expires = EXCLUDED.expires",
            &[
                &session.id,
                &session.address,
                &session.admin,
                &session.csrf,
                &(session.password as i64),
                &session.created,
                &session.used,
                &session.expires,
            ],
        )
        .await
        .map_err(pg)?;
        if let Some(limit) = limit {
            // At logins only: the expired go, then the least recently used beyond the limit.
            c.run("DELETE FROM web_sessions WHERE expires <= $1", &[&now_ms()])
                .await
                .map_err(pg)?;
            c.run(
                "DELETE FROM web_sessions WHERE id IN \
                 (SELECT id FROM web_sessions ORDER BY used DESC, id OFFSET $1)",
                &[&(limit.max(1) as i64)],
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }

    async fn web_session_get(&self, id: &str) -> Result<Option<WebSession>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE id = $1 AND expires > $2"),
            &[&id, &now_ms()],
        )
        .await
        .map_err(pg)?
        .map(|r| web_session_of(&r)))
    }

    async fn web_session_delete(&self, id: &str) -> Result<()> {
        let c = self.client().await?;
        c.run("DELETE FROM web_sessions WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn web_session_list(&self, address: &str) -> Result<Vec<WebSession>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!(
                "SELECT {WEB_SESSION_COLS} FROM web_sessions WHERE address = $1 AND expires > $2"
            ),
            &[&address, &now_ms()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(web_session_of)
        .collect())
    }

    async fn lock_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>> {
        let set = self.maildrops.clone();
        if !set.lock().unwrap().insert(account) {
            return Ok(None);
        }
        let local = {
            let set = set.clone();
            move || {
                set.lock().unwrap().remove(&account);
            }
        };
        let holder = format!("{}/{:08x}", self.node, rand::random::<u32>());
        let lease = self.maildrop_lease;
        let took = async {
            let c = self.client().await?;
            c.maybe_row(
                &format!(
                    "INSERT INTO maildrop_locks (account, holder, until) VALUES ($1, $2, {DB_NOW} + $3) \
                     ON CONFLICT (account) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until \
                     WHERE maildrop_locks.until <= {DB_NOW} RETURNING 1"
                ),
                &[&(account as i64), &holder, &lease],
            )
            .await
            .map_err(pg)
            .map(|r| r.is_some())
        }
        .await;
        match took {
            Ok(true) => {}
            Ok(false) => {
                local();
                return Ok(None);
            }
            Err(e) => {
                local();
                return Err(e);
            }
        }
        // Renewed every third of the lease while held; released (and the renewal stopped) when
        // the lock is dropped. Held until a lease counted from before the last renewal that got
        // through, less a margin (the database rounds its clock down to the second), runs out,
        // or until another holder has it.
        let lease_ms = lease as u64 * 1000;
        let margin_ms = (lease_ms / 6).max(1500);
        let base = std::time::Instant::now();
        let valid_until = Arc::new(AtomicU64::new(lease_ms.saturating_sub(margin_ms)));
        let pool = self.pool.clone();
        let renew = {
            let (pool, holder, valid_until) = (pool.clone(), holder.clone(), valid_until.clone());
            tokio::spawn(async move {
                let every = std::time::Duration::from_millis(lease_ms / 3);
                loop {
                    tokio::time::sleep(every).await;
                    let started = base.elapsed().as_millis() as u64;
                    let r = tokio::time::timeout(every, async {
                        let c = pool.get().await.map_err(pg)?;
                        c.run(
                            &format!(
                                "UPDATE maildrop_locks SET until = {DB_NOW} + $3 \
                                 WHERE account = $1 AND holder = $2"
                            ),
                            &[&(account as i64), &holder, &lease],
                        )
                        .await
                        .map_err(pg)
                    })
                    .await;
                    match r {
                        Ok(Ok(1)) => valid_until.store(
                            started + lease_ms.saturating_sub(margin_ms),
                            Ordering::SeqCst,
                        ),
                        Ok(Ok(_)) => {
                            tracing::warn!(account, "POP3 maildrop lock taken over");
                            valid_until.store(0, Ordering::SeqCst);
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(account, error = %e, "POP3 maildrop lock not renewed")
                        }
                        Err(_) => tracing::warn!(account, "POP3 maildrop lock renewal timed out"),
                    }
                }
            })
        };
        let held = move || (base.elapsed().as_millis() as u64) < valid_until.load(Ordering::SeqCst);
        Ok(Some(MaildropLock::with_check(
            move || {
                renew.abort();
                local();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Ok(c) = pool.get().await {
                            let _ = c
                                .run(
                                    "DELETE FROM maildrop_locks WHERE account = $1 AND holder = $2",
                                    &[&(account as i64), &holder],
                                )
                                .await;
                        }
                    });
                }
            },
            held,
        )))
    }

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
