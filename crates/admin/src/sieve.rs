//! Users' Sieve scripts: listed, read, checked and stored, made active, deleted.

use postern_directory::{Directory, normalize_address};
use postern_store::StoreError;

use crate::{AdminError, AdminReply, done, require_user};

pub(crate) async fn list(d: &Directory, address: String) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    let l = d.store().sieve_list(a.id).await?;
    if l.is_empty() {
        return done(format!("{} has no Sieve scripts", a.address));
    }
    done(
        l.iter()
            .map(|s| {
                format!(
                    "{}{}  ({} bytes)",
                    s.name,
                    if s.active { "  ACTIVE" } else { "" },
                    s.size
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

pub(crate) async fn get(
    d: &Directory,
    address: String,
    name: String,
) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    match d.store().sieve_get(a.id, &name).await? {
        Some(source) => done(source),
        None => Err(no_script(&a.address, &name)),
    }
}

/// Checks and stores a script; `activate` makes it the one that runs.
pub(crate) async fn put(
    d: &Directory,
    address: String,
    name: String,
    source: String,
    activate: bool,
) -> Result<AdminReply, AdminError> {
    let store = d.store();
    let a = require_user(d, &normalize_address(&address)?).await?;
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(AdminError::new(
            "a script name is 1 to 128 characters, none of them control characters",
        ));
    }
    let limits = &d.config().sieve;
    if source.len() > limits.max_script_size {
        return Err(AdminError::new(format!(
            "the script is {} bytes; sieve.max_script_size allows {}",
            source.len(),
            limits.max_script_size
        )));
    }
    let existing = store.sieve_list(a.id).await?;
    if !existing.iter().any(|s| s.name == name) && existing.len() >= d.config().max_scripts {
        return Err(AdminError::new(format!(
            "{} has {} scripts, the most sieve.max_scripts allows; delete one first",
            a.address,
            existing.len()
        )));
    }
    d.sieve
        .compile(&source)
        .map_err(|e| AdminError::new(format!("the script has an error: {e}")))?;
    store.sieve_put(a.id, &name, &source).await?;
    if activate {
        store.sieve_activate(a.id, Some(&name)).await?;
    }
    let active = activate
        || store
            .sieve_active(a.id)
            .await?
            .is_some_and(|(n, _)| n == name);
    done(if active {
        format!(
            "script {name} stored for {}; it filters their mail now",
            a.address
        )
    } else {
        format!(
            "script {name} stored for {}; not active (postern sieve activate {} {name})",
            a.address, a.address
        )
    })
}

/// `None`: no script runs for the user.
pub(crate) async fn activate(
    d: &Directory,
    address: String,
    name: Option<String>,
) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    match d.store().sieve_activate(a.id, name.as_deref()).await {
        Ok(()) => done(match name {
            Some(n) => format!("script {n} now filters mail to {}", a.address),
            None => format!("no script filters mail to {} now", a.address),
        }),
        Err(StoreError::NotFound(_)) => Err(no_script(&a.address, &name.unwrap_or_default())),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn delete(
    d: &Directory,
    address: String,
    name: String,
) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    match d.store().sieve_delete(a.id, &name).await {
        Ok(()) => done(format!("script {name} of {} deleted", a.address)),
        Err(StoreError::NotFound(_)) => Err(no_script(&a.address, &name)),
        Err(StoreError::Invalid(_)) => Err(AdminError::new(format!(
            "script {name} is active; deactivate it first (postern sieve activate {} --none)",
            a.address
        ))),
        Err(e) => Err(e.into()),
    }
}

fn no_script(address: &str, name: &str) -> AdminError {
    AdminError::new(format!("{address} has no script named {name}"))
}
