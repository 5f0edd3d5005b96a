//! Sharing: access lists, readers' own \Seen and send-as grants, read from redb and changed
//! through the writer.

use async_trait::async_trait;
use redb::ReadableTable;

use super::tables::*;
use super::writer::Job;
use super::{EmbeddedStore, db_err};
use crate::rules;
use crate::*;

/// The second parts of the keys `(first, _)` of a table keyed by two strings, in order.
pub(super) fn second_keys<V: redb::Value + 'static>(
    t: &impl ReadableTable<(&'static str, &'static str), V>,
    first: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for x in t.range((first, "")..).map_err(db_err)? {
        let (k, _) = x.map_err(db_err)?;
        let (a, b) = k.value();
        if a != first {
            break;
        }
        out.push(b.to_string());
    }
    Ok(out)
}

#[async_trait]
impl ShareStore for EmbeddedStore {
    async fn acl_get(&self, mailbox: MailboxId) -> Result<Vec<AclEntry>> {
        self.read(|r| {
            let t = r.open_table(ACL).map_err(db_err)?;
            t.range((mailbox, "")..(mailbox + 1, ""))
                .map_err(db_err)?
                .map(|x| {
                    let (k, v) = x.map_err(db_err)?;
                    Ok(AclEntry {
                        identifier: k.value().1.to_string(),
                        rights: v.value().to_string(),
                    })
                })
                .collect()
        })
    }

    async fn acl_set(
        &self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<Rights>,
    ) -> Result<()> {
        let identifier = rules::share_key(identifier)?;
        self.write(Job::AclSet(mailbox, identifier, rights))
            .await
            .map(|_| ())
    }

    async fn acl_granted(&self, identifiers: &[String]) -> Result<Vec<(Mailbox, AclEntry)>> {
        let identifiers = rules::share_keys(identifiers);
        self.read(|r| {
            let by_id = r.open_table(ACL_BY_IDENTIFIER).map_err(db_err)?;
            let acl = r.open_table(ACL).map_err(db_err)?;
            let boxes = r.open_table(MAILBOXES).map_err(db_err)?;
            let mut out = Vec::new();
            for id in &identifiers {
                for x in by_id
                    .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                    .map_err(db_err)?
                {
                    let mailbox = x.map_err(db_err)?.0.value().1;
                    let Some(rights) = acl.get((mailbox, id.as_str())).map_err(db_err)? else {
                        continue;
                    };
                    let Some(mb) = boxes.get(mailbox).map_err(db_err)? else {
                        continue;
                    };
                    out.push((
                        from_json::<Mailbox>(mb.value())?,
                        AclEntry {
                            identifier: id.clone(),
                            rights: rights.value().to_string(),
                        },
                    ));
                }
            }
            out.sort_by(|a, b| (a.0.id, &a.1.identifier).cmp(&(b.0.id, &b.1.identifier)));
            Ok(out)
        })
    }

    async fn seen_private(&self, mailbox: MailboxId, reader: AccountId) -> Result<Vec<Uid>> {
        self.read(|r| {
            let t = r.open_table(SEEN_PRIVATE).map_err(db_err)?;
            t.range((mailbox, reader, 0u32)..=(mailbox, reader, u32::MAX))
                .map_err(db_err)?
                .map(|x| Ok(x.map_err(db_err)?.0.value().2))
                .collect()
        })
    }

    async fn send_as_set(&self, address: &str, delegate: &str, mode: Option<SendAs>) -> Result<()> {
        let (address, delegate) = (rules::share_key(address)?, rules::share_key(delegate)?);
        self.write(Job::SendAsSet(address, delegate, mode))
            .await
            .map(|_| ())
    }

    async fn send_as_list(&self) -> Result<Vec<SendAsGrant>> {
        self.read(|r| {
            let t = r.open_table(SEND_AS).map_err(db_err)?;
            t.iter()
                .map_err(db_err)?
                .map(|x| {
                    let (k, v) = x.map_err(db_err)?;
                    let (address, delegate) = k.value();
                    Ok(SendAsGrant {
                        address: address.to_string(),
                        delegate: delegate.to_string(),
                        mode: rules::send_as_of_name(v.value())?,
                    })
                })
                .collect()
        })
    }

    async fn send_as_of(&self, delegate: &str) -> Result<Vec<SendAsGrant>> {
        let Ok(delegate) = rules::share_key(delegate) else {
            return Ok(Vec::new());
        };
        self.read(|r| {
            let by_delegate = r.open_table(SEND_AS_BY_DELEGATE).map_err(db_err)?;
            let t = r.open_table(SEND_AS).map_err(db_err)?;
            let mut out = Vec::new();
            for address in second_keys(&by_delegate, &delegate)? {
                if let Some(v) = t
                    .get((address.as_str(), delegate.as_str()))
                    .map_err(db_err)?
                {
                    out.push(SendAsGrant {
                        mode: rules::send_as_of_name(v.value())?,
                        address,
                        delegate: delegate.clone(),
                    });
                }
            }
            Ok(out)
        })
    }
}
