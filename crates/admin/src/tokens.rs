//! API tokens: made (the secret shown once), listed, deleted.

use postern_directory::Directory;
use postern_store::StoreError;

use crate::{AdminError, AdminReply, done};

pub(crate) async fn create(d: &Directory, name: String) -> Result<AdminReply, AdminError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(AdminError::new(
            "a token name is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
    let token = format!(
        "pst_{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)
    );
    match d
        .store()
        .token_put(postern_store::ApiToken {
            name: name.clone(),
            hash: postern_directory::token_hash(&token),
            created: postern_store::now(),
        })
        .await
    {
        Ok(()) => done(token),
        Err(StoreError::AlreadyExists(_)) => Err(AdminError::new(format!(
            "a token named {name} exists; delete it first (postern token delete {name})"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn list(d: &Directory) -> Result<AdminReply, AdminError> {
    let mut l = d.store().token_list().await?;
    l.sort_by(|a, b| a.name.cmp(&b.name));
    done(if l.is_empty() {
        "no API tokens".to_string()
    } else {
        l.iter()
            .map(|t| format!("{}  created {}", t.name, t.created))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub(crate) async fn delete(d: &Directory, name: String) -> Result<AdminReply, AdminError> {
    match d.store().token_delete(&name).await {
        Ok(()) => done(format!("token {name} deleted: it no longer opens the API")),
        Err(StoreError::NotFound(_)) => {
            Err(AdminError::new(format!("there is no token named {name}")))
        }
        Err(e) => Err(e.into()),
    }
}
