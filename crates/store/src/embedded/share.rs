//! Sharing: access lists, readers' own \Seen and send-as grants.

use async_trait::async_trait;

use super::EmbeddedStore;
use crate::*;

fn unbuilt() -> StoreError {
    StoreError::Backend("sharing is not built yet".into())
}

#[async_trait]
impl ShareStore for EmbeddedStore {
    async fn acl_get(&self, _mailbox: MailboxId) -> Result<Vec<AclEntry>> {
        Err(unbuilt())
    }
    async fn acl_set(
        &self,
        _mailbox: MailboxId,
        _identifier: &str,
        _rights: Option<Rights>,
    ) -> Result<()> {
        Err(unbuilt())
    }
    async fn acl_granted(&self, _identifiers: &[String]) -> Result<Vec<(Mailbox, AclEntry)>> {
        Err(unbuilt())
    }
    async fn seen_private(&self, _mailbox: MailboxId, _reader: AccountId) -> Result<Vec<Uid>> {
        Err(unbuilt())
    }
    async fn send_as_set(
        &self,
        _address: &str,
        _delegate: &str,
        _mode: Option<SendAs>,
    ) -> Result<()> {
        Err(unbuilt())
    }
    async fn send_as_list(&self) -> Result<Vec<SendAsGrant>> {
        Err(unbuilt())
    }
    async fn send_as_of(&self, _delegate: &str) -> Result<Vec<SendAsGrant>> {
        Err(unbuilt())
    }
}
