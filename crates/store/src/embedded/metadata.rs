//! IMAP METADATA entries: read from redb, changed through the writer.

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::metadata::metadata_changes;
use crate::*;

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn metadata_get(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: Option<u32>,
    ) -> Result<Vec<MetadataEntry>> {
        let entry = metadata_prefix(entry)?;
        let mb = mailbox.unwrap_or(0);
        self.read(|r| {
            let owner = match mailbox {
                Some(id) => match r
                    .open_table(MAILBOXES)
                    .map_err(db_err)?
                    .get(id)
                    .map_err(db_err)?
                {
                    Some(v) => Some(from_json::<Mailbox>(v.value())?.account),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let account = metadata_keeper(account, owner, &entry);
            let t = r.open_table(METADATA).map_err(db_err)?;
            let mut out = Vec::new();
            // Names below the entry sort right after it, among others that share its start.
            for x in t
                .range((account, mb, entry.as_str())..(account, mb + 1, ""))
                .map_err(db_err)?
            {
                let (k, v) = x.map_err(db_err)?;
                let name = k.value().2;
                if !name.starts_with(entry.as_str()) {
                    break;
                }
                if metadata_within(name, &entry, depth) {
                    out.push(MetadataEntry {
                        name: name.to_string(),
                        value: v.value().to_vec(),
                    });
                }
            }
            Ok(out)
        })
    }

    async fn metadata_set(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        changes: MetadataChanges,
        limits: MetadataLimits,
    ) -> Result<Result<(), MetadataRefused>> {
        let changes = metadata_changes(changes)?;
        expect_output!(
            self.write(Job::MetadataSet {
                account,
                mailbox,
                changes,
                limits,
            })
            .await?,
            Metadata
        )
    }
}
