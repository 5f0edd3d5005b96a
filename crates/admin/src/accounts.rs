//! Domains and accounts: adding and removing them, passwords, quotas, disabling, forwarding.

use postern_directory::{
    Directory, domain_of, is_domain, normalize_address, password_problem, validate_new_address,
};
use postern_store::{AccountUpdate, NewAccount, StoreError};

use crate::{AdminError, AdminReply, UserInfo, done, require_local_domain, require_user};

pub(crate) async fn domain_add(d: &Directory, name: String) -> Result<AdminReply, AdminError> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_domain(&name) {
        return Err(AdminError::new(format!(
            "{name:?} is not a domain name (e.g. example.com)"
        )));
    }
    match d.store().domain_add(&name).await {
        Ok(_) => done(format!("domain {name} added")),
        Err(StoreError::AlreadyExists(_)) => {
            Err(AdminError::new(format!("domain {name} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn domain_del(d: &Directory, name: String) -> Result<AdminReply, AdminError> {
    let name = name.trim().to_ascii_lowercase();
    match d.store().domain_delete(&name).await {
        Ok(()) => done(format!("domain {name} deleted")),
        Err(StoreError::NotFound(_)) => Err(AdminError::new(format!("domain {name} is not local"))),
        Err(StoreError::Invalid(m)) => Err(AdminError::new(m)),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn domain_names(d: &Directory) -> Result<Vec<String>, AdminError> {
    Ok(d.store()
        .domain_list()
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect())
}

pub(crate) async fn user_add(
    d: &Directory,
    address: String,
    password: String,
    quota: Option<u64>,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let address = validate_new_address(&address)?;
    require_local_domain(d, &address).await?;
    if let Some(p) = password_problem(&password, &address, d.config().min_password_length) {
        return Err(AdminError::new(p));
    }
    if store.account_by_address(&address).await?.is_some() {
        return Err(AdminError::new(format!("user {address} already exists")));
    }
    if store.alias_get(&address).await?.is_some() {
        return Err(AdminError::new(format!(
            "{address} is an alias; delete it first with: postern alias del {address}"
        )));
    }
    let hash = hash_blocking(password).await;
    match store
        .account_create(NewAccount {
            address: address.clone(),
            password_hash: hash,
            quota_bytes: quota.unwrap_or(0),
            quota_messages: 0,
            shared: false,
        })
        .await
    {
        Ok(_) => done(format!("user {address} added")),
        Err(StoreError::AlreadyExists(_)) => {
            Err(AdminError::new(format!("user {address} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn user_del(d: &Directory, address: String) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let a = require_user(d, &address).await?;
    d.store().account_delete(a.id).await?;
    let mut m = format!("user {address} deleted with all its mail");
    if let Err(e) = crate::sharing::forget(d, &address).await {
        m.push_str(&format!(
            " (the access-list lines and send-as grants naming it could not be removed: {e})"
        ));
    }
    done(m)
}

pub(crate) async fn user_list(d: &Directory) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let mut users = Vec::new();
    for a in store.account_list().await? {
        let u = store.account_usage(a.id).await?;
        users.push(UserInfo {
            address: a.address,
            quota_bytes: a.quota_bytes,
            used_bytes: u.bytes,
            messages: u.messages,
            disabled: a.disabled,
            shared: a.shared,
        });
    }
    users.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(AdminReply::Users { users })
}

pub(crate) async fn user_passwd(
    d: &Directory,
    address: String,
    password: String,
) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let a = require_user(d, &address).await?;
    if a.shared {
        return Err(AdminError::refused(format!(
            "{address} is a shared mailbox: no one logs in as it, so it has no password; its members log in as themselves (see: postern mailbox list)"
        )));
    }
    if let Some(p) = password_problem(&password, &address, d.config().min_password_length) {
        return Err(AdminError::new(p));
    }
    let hash = hash_blocking(password).await;
    let update = AccountUpdate {
        password_hash: Some(hash),
        ..Default::default()
    };
    d.store().account_update(a.id, update).await?;
    done(format!("password of {address} changed"))
}

pub(crate) async fn user_disable(
    d: &Directory,
    address: String,
    disabled: bool,
) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let a = require_user(d, &address).await?;
    let update = AccountUpdate {
        disabled: Some(disabled),
        ..Default::default()
    };
    d.store().account_update(a.id, update).await?;
    done(format!(
        "{address} {}",
        if disabled { "disabled" } else { "enabled" }
    ))
}

pub(crate) async fn user_quota(
    d: &Directory,
    address: String,
    quota: u64,
    messages: Option<u64>,
) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let a = require_user(d, &address).await?;
    let update = AccountUpdate {
        quota_bytes: Some(quota),
        quota_messages: messages,
        ..Default::default()
    };
    d.store().account_update(a.id, update).await?;
    done(format!("quota of {address} set"))
}

/// Sends an account's mail on to `to` (`None`: stops).
pub(crate) async fn forward(
    d: &Directory,
    address: String,
    to: Option<String>,
    keep_copy: bool,
) -> Result<AdminReply, AdminError> {
    let address = normalize_address(&address)?;
    let a = require_user(d, &address).await?;
    let forward = match to {
        None => None,
        Some(t) => {
            let t = normalize_address(&t)?;
            if t == a.address {
                return Err(AdminError::new(format!(
                    "{address} cannot forward to itself"
                )));
            }
            if d.is_local_domain(domain_of(&t)).await? && d.expand(&t).await?.is_none() {
                return Err(AdminError::new(format!(
                    "{t} is neither a user nor an alias here"
                )));
            }
            Some(postern_store::Forward { to: t, keep_copy })
        }
    };
    let msg = match &forward {
        None => format!("{address} no longer forwards; mail stays in its INBOX"),
        Some(f) if f.keep_copy => {
            format!(
                "mail to {address} now goes to {} and stays in its INBOX too",
                f.to
            )
        }
        Some(f) => format!("mail to {address} now goes to {} only", f.to),
    };
    let update = AccountUpdate {
        forward: Some(forward),
        ..Default::default()
    };
    d.store().account_update(a.id, update).await?;
    done(msg)
}

/// Argon2 takes a while and 19 MiB: off the async threads.
async fn hash_blocking(password: String) -> String {
    tokio::task::spawn_blocking(move || postern_directory::hash_password(&password))
        .await
        .expect("hashing task")
}
