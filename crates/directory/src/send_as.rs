//! Who may send as an address: the account it belongs to (its own address, an alias leading to
//! it), and the delegates the administrator named (`postern send-as add`).

use postern_store::{Account, SendAs, StoreError};

use crate::{Destination, Directory, normalize_address};

/// Why an account may send as an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRight {
    /// The account's own address, or an alias that leads to it.
    Own,
    /// A send-as grant: as the address itself, or on behalf of it (with `Sender:` the
    /// delegate).
    Granted(SendAs),
}

impl Directory {
    /// Whether `from` is the account's own: its address (with any detail), an alias that
    /// leads to it, or its address in an alias domain. Never through a catch-all.
    pub async fn owns_address(&self, account: &Account, from: &str) -> Result<bool, StoreError> {
        let Ok(from) = normalize_address(from) else {
            return Ok(false);
        };
        if from == account.address {
            return Ok(true);
        }
        Ok(self
            .route(&from, false, &mut None)
            .await?
            .unwrap_or_default()
            .iter()
            .any(|d| matches!(d, Destination::Local(a) if a.id == account.id)))
    }

    /// The grant that lets the account send for `address` (or for it without its detail,
    /// `info+news@` → `info@`), if any.
    pub async fn send_as_grant(
        &self,
        account: &Account,
        address: &str,
    ) -> Result<Option<SendAs>, StoreError> {
        let Ok(address) = normalize_address(address) else {
            return Ok(None);
        };
        let mut wanted = vec![address.clone()];
        if let Some(sep) = self.config.subaddress_separator
            && let Some((local, domain)) = address.rsplit_once('@')
            && let Some((base, _)) = local.split_once(sep)
            && !base.is_empty()
        {
            wanted.push(format!("{base}@{domain}"));
        }
        let grants = self.store.send_as_of(&account.address).await?;
        Ok(wanted
            .iter()
            .find_map(|w| grants.iter().find(|g| g.address == *w).map(|g| g.mode)))
    }

    /// Why the account may send as `from`, if it may: its own address first, else a grant.
    pub async fn sending_right(
        &self,
        account: &Account,
        from: &str,
    ) -> Result<Option<SendRight>, StoreError> {
        if self.owns_address(account, from).await? {
            return Ok(Some(SendRight::Own));
        }
        Ok(self
            .send_as_grant(account, from)
            .await?
            .map(SendRight::Granted))
    }

    /// Whether the account may name `from` as the envelope sender: one of its own addresses
    /// ([`Directory::owns_address`]), or one it has a send-as grant for (either way).
    pub async fn may_send_as(&self, account: &Account, from: &str) -> Result<bool, StoreError> {
        Ok(self.sending_right(account, from).await?.is_some())
    }
}
