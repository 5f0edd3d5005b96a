//! Moving mail between servers and stores: Maildir trees in and out of an account, and
//! everything of one store copied into another. Messages enter through
//! `postern_ingest::Prepared`, as every delivery does.

pub mod account_backup;
pub mod backups;
pub mod copy;
pub mod maildir;

use postern_store::StoreError;

/// Why moving mail failed: the store (perhaps only for now), or what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Refused or impossible as asked, in words for a person.
    #[error("{0}")]
    Refused(String),
}
