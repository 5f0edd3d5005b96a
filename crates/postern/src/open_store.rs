//! The store the configuration names: the embedded one in the data directory, or PostgreSQL.

use std::path::PathBuf;

use anyhow::Context;
use postern_config::Config;
use postern_store::SharedStore;
use postern_store::embedded::{EmbeddedStore, Options};

pub struct Opened {
    pub store: SharedStore,
    /// Where large incoming messages are written while they arrive.
    pub spool_dir: PathBuf,
}

pub async fn open(cfg: &Config) -> anyhow::Result<Opened> {
    if cfg.storage.backend == "postgres" {
        let store = postern_store::postgres::PgStore::connect(
            &cfg.storage.url,
            postern_store::postgres::Options {
                max_connections: cfg.storage.max_connections,
                maildrop_lease: std::time::Duration::from_secs(cfg.storage.maildrop_lease.0),
            },
        )
        .await
        .with_context(|| "cannot use the PostgreSQL database of storage.url".to_string())?;
        let spool_dir = cfg.data_dir.join("spool");
        std::fs::create_dir_all(&spool_dir)
            .with_context(|| format!("cannot create {}", spool_dir.display()))?;
        return Ok(Opened { store, spool_dir });
    }
    let store = EmbeddedStore::open(
        &cfg.data_dir,
        Options {
            max_batch: cfg.storage.max_batch,
            cache_size: cfg.storage.cache_size.0 as usize,
            min_free: cfg.storage.min_free.0,
            ..Options::default()
        },
    )
    .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let spool_dir = store.spool_dir().to_path_buf();
    Ok(Opened { store, spool_dir })
}
