//! Sharing under `/me/sharing`: who else may use each of the user's folders (RFC 4314 access
//! lists: give rights, take a line away), what others share with the user, and who the user
//! may send as.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use postern_store::{StoreError, check_identifier};
use serde::Deserialize;

use super::{Call, error, json, refuse};
use crate::AppState;

fn unavailable(e: StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

fn done(m: String) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"kind": "done", "message": m}),
    )
}

/// Each of the user's folders with its access list, what other accounts share with the user
/// (and where the mail program shows it), and the user's send-as grants.
pub(super) async fn get(st: Arc<AppState>, c: Call) -> Response {
    let a = c.me();
    let store = st.directory.store();
    let mut folders = match store.mailbox_list(a.id).await {
        Ok(f) => f,
        Err(e) => return unavailable(e),
    };
    folders.sort_by(|x, y| (x.name != "INBOX", &x.name).cmp(&(y.name != "INBOX", &y.name)));
    let mut out = Vec::new();
    for f in folders {
        let acl = match store.acl_get(f.id).await {
            Ok(l) => l,
            Err(e) => return unavailable(e),
        };
        out.push(serde_json::json!({"name": f.name, "acl": acl}));
    }
    let shared_with = match postern_admin::sharing::shared_with(&st.directory, a).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let send_as = match store.send_as_of(&a.address).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "address": a.address,
            "folders": out,
            "shared_with": shared_with,
            "send_as": send_as,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    folder: String,
    identifier: String,
    rights: String,
}

#[derive(Deserialize)]
struct LineQuery {
    folder: String,
    identifier: String,
}

/// The user's folder named so, or the refusal.
async fn own_folder(st: &AppState, c: &Call, name: &str) -> Result<u64, Response> {
    match st.directory.store().mailbox_by_name(c.me().id, name).await {
        Ok(Some(m)) => Ok(m.id),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            &format!("you have no folder {name:?}"),
        )),
        Err(e) => Err(unavailable(e)),
    }
}

/// Gives an identifier rights on one of the user's folders, replacing what it had.
pub(super) async fn set(st: Arc<AppState>, c: Call) -> Response {
    let b = match c.body::<LineBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let me = &c.me().address;
    let mailbox = match own_folder(&st, &c, &b.folder).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let id = match check_identifier(&**st.directory.store(), &b.identifier).await {
        Ok(id) => id,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    if id == *me {
        return error(
            StatusCode::BAD_REQUEST,
            "that is you: you have every right on your own folders",
        );
    }
    let rights = match postern_admin::sharing::parse_rights(Some(&b.rights)) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.message),
    };
    match st
        .directory
        .store()
        .acl_set(mailbox, &id, Some(rights))
        .await
    {
        Ok(()) => done(format!(
            "{id} now has the rights {rights} on your folder {}",
            b.folder
        )),
        Err(e) => unavailable(e),
    }
}

/// Takes an identifier's line away from one of the user's folders.
pub(super) async fn remove(st: Arc<AppState>, c: Call) -> Response {
    let q = match c.query::<LineQuery>() {
        Ok(q) => q,
        Err(r) => return refuse(r),
    };
    let mailbox = match own_folder(&st, &c, &q.folder).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let id = q.identifier.trim().to_ascii_lowercase();
    let store = st.directory.store();
    match store.acl_get(mailbox).await {
        Ok(l) if l.iter().any(|e| e.identifier == id) => {}
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("{id} has no rights on your folder {}", q.folder),
            );
        }
        Err(e) => return unavailable(e),
    }
    match store.acl_set(mailbox, &id, None).await {
        Ok(()) => done(format!(
            "{id} no longer has rights on your folder {}",
            q.folder
        )),
        Err(e) => unavailable(e),
    }
}
