//! The database's schema and its migrations, and what `postern doctor` reads of a database.

use tokio_postgres::NoTls;

use super::notify::CHANNEL;
use super::{PgStore, Prepared, pg};
use crate::*;

/// The schema, one migration per version; applied in order, each in its own transaction.
/// Forward only: a database migrated past what a build knows is refused by that build.
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
    // Subscriptions become names of their own, mailbox or not; mailboxes.subscribed is read no
    // more (it stays for nodes not yet upgraded). Expunged messages are kept a while.
    r#"
CREATE TABLE subscriptions (
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    PRIMARY KEY (account, name)
);
INSERT INTO subscriptions (account, name) SELECT account, name FROM mailboxes WHERE subscribed;
CREATE TABLE kept (
    mailbox bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid bigint NOT NULL,
    blob bigint NOT NULL,
    size bigint NOT NULL,
    internal_date bigint NOT NULL,
    modseq bigint NOT NULL,
    flags smallint NOT NULL,
    keywords text[] NOT NULL,
    expunged_at bigint NOT NULL,
    PRIMARY KEY (mailbox, uid)
);
CREATE INDEX kept_by_time ON kept (expunged_at);
"#,
    r#"
CREATE TABLE report_tallies (
    kind text NOT NULL,
    domain text NOT NULL,
    day bigint NOT NULL,
    row_key text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (kind, domain, day, row_key)
);
CREATE TABLE received_reports (
    key text PRIMARY KEY,
    kind text NOT NULL,
    domain text NOT NULL,
    received bigint NOT NULL,
    report text NOT NULL
);
CREATE INDEX received_reports_by_time ON received_reports (received);
CREATE INDEX received_reports_by_domain ON received_reports (domain, received);
"#,
    // The dashboard's buckets (step 0 hours, 1 days); series in byte order, as the embedded
    // store sorts them.
    r#"
CREATE TABLE stats (
    step smallint NOT NULL,
    series text COLLATE "C" NOT NULL,
    start bigint NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (step, series, start)
);
"#,
    // Sharing. Lines and readers' \Seen go with their mailbox and reader by cascade (even when
    // an older node deletes them); lines naming an address and send-as grants are deleted with
    // the account. Identifiers and addresses in byte order, as the embedded store sorts them.
    r#"
ALTER TABLE accounts ADD COLUMN shared boolean NOT NULL DEFAULT false;
CREATE TABLE acl (
    mailbox bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    identifier text COLLATE "C" NOT NULL,
    rights text NOT NULL,
    PRIMARY KEY (mailbox, identifier)
);
CREATE INDEX acl_by_identifier ON acl (identifier);
CREATE TABLE seen_private (
    mailbox bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    reader bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    uid bigint NOT NULL,
    PRIMARY KEY (mailbox, reader, uid)
);
CREATE INDEX seen_private_by_reader ON seen_private (reader);
CREATE TABLE send_as (
    address text COLLATE "C" NOT NULL,
    delegate text COLLATE "C" NOT NULL,
    mode text NOT NULL,
    PRIMARY KEY (address, delegate)
);
CREATE INDEX send_as_by_delegate ON send_as (delegate);
"#,
    // Save dates (RFC 8514; NULL for messages stored before) and IMAP METADATA entries: an
    // account's on a mailbox, or on the server (mailbox NULL). They go with their mailbox and
    // account by cascade. Names in byte order, as the embedded store sorts them.
    r#"
ALTER TABLE messages ADD COLUMN saved bigint;
ALTER TABLE kept ADD COLUMN saved bigint;
CREATE TABLE metadata (
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    mailbox bigint REFERENCES mailboxes(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    value bytea NOT NULL
);
CREATE UNIQUE INDEX metadata_key ON metadata (account, (coalesce(mailbox, 0)), name);
CREATE INDEX metadata_by_mailbox ON metadata (mailbox);
"#,
    // Calendars and address books (CalDAV, CardDAV): collections go with their account,
    // resources and the names removed (what sync-collection reports gone) with their
    // collection. `record` holds the collection's properties as JSON.
    r#"
CREATE TABLE dav_collections (
    id bigserial PRIMARY KEY,
    account bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind text NOT NULL,
    name text COLLATE "C" NOT NULL,
    record text NOT NULL,
    sync bigint NOT NULL,
    created bigint NOT NULL,
    UNIQUE (account, kind, name)
);
CREATE TABLE dav_resources (
    collection bigint NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    etag text NOT NULL,
    component text NOT NULL,
    uid text NOT NULL,
    span_start bigint,
    span_end bigint,
    modseq bigint NOT NULL,
    content bytea NOT NULL,
    PRIMARY KEY (collection, name)
);
CREATE INDEX dav_resources_by_uid ON dav_resources (collection, uid);
CREATE TABLE dav_removed (
    collection bigint NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    modseq bigint NOT NULL,
    PRIMARY KEY (collection, name)
);
"#,
];

/// An arbitrary number all nodes agree on: one of them migrates at a time.
const MIGRATION_LOCK: i64 = 0x706f_7374_6572_6e01;

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

impl PgStore {
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
            // Migrations only go forward: this build cannot know what a newer one changed.
            if version as usize > MIGRATIONS.len() {
                return Err(StoreError::NewerDatabase {
                    found: version as u64,
                    known: MIGRATIONS.len() as u64,
                });
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
}
