//! Self-service under `/me`: a mail user sees their account and changes their password and
//! vacation reply (forwarding is plain admin requests, in the route table).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use postern_admin::AdminRequest;
use serde::Deserialize;

use super::auth::{basic, check_password};
use super::{Call, answer, error, json, refuse};
use crate::AppState;
use crate::session;

/// The account: usage, quota, forwarding, vacation, and the settings for a mail program.
pub(super) async fn get(st: Arc<AppState>, c: Call) -> Response {
    let a = c.me();
    let store = st.directory.store();
    let usage = store.account_usage(a.id).await.ok();
    let active = store.sieve_active(a.id).await.ok().flatten();
    let settings: Vec<serde_json::Value> = postern_config::settings::endpoints(&st.config)
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "service": e.service.label(),
                "host": e.host,
                "port": e.port,
                "security": e.security.label(),
                "username": a.address,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "address": a.address,
            "quota_bytes": a.quota_bytes,
            "quota_messages": a.quota_messages,
            "used_bytes": usage.as_ref().map(|u| u.bytes),
            "messages": usage.as_ref().map(|u| u.messages),
            "forward": a.forward.as_ref().map(|f| serde_json::json!({"to": f.to, "keep_copy": f.keep_copy})),
            "vacation": active.as_ref().is_some_and(|(n, _)| n == VACATION),
            "sieve_active": active.map(|(n, _)| n),
            "settings": settings,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MePasswordBody {
    password: String,
    /// Needed with a session cookie (a session left open is not the password).
    #[serde(default)]
    current: Option<String>,
}

pub(super) async fn password(st: Arc<AppState>, c: Call) -> Response {
    let a = c.me();
    let b = match c.body::<MePasswordBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    if !basic(&c.headers) {
        let Some(current) = b.current.as_deref() else {
            return error(
                StatusCode::BAD_REQUEST,
                "give your current password too (\"current\")",
            );
        };
        if let Err((status, m)) = check_password(&st, &a.address, current, c.peer.0).await {
            let status = if status == StatusCode::UNAUTHORIZED {
                StatusCode::FORBIDDEN
            } else {
                status
            };
            let m = if status == StatusCode::FORBIDDEN {
                "your current password is not right".to_string()
            } else {
                m
            };
            return error(status, &m);
        }
    }
    let req = AdminRequest::UserPasswd {
        address: a.address.clone(),
        password: b.password,
    };
    let r = answer(&st, req, StatusCode::OK).await;
    if r.status().is_success() {
        // Sessions made with the old password end (`web_session` compares digests); this
        // one, if the change came with one, goes on.
        if let (Some(t), Ok(Some(now))) = (
            session::token_of(&c.headers),
            st.directory.store().account_by_address(&a.address).await,
        ) {
            let digest = session::password_digest(&now.password_hash);
            if let Err(e) = session::set_password(&**st.directory.store(), &t, digest).await {
                tracing::warn!(error = %e, "session not kept after a password change");
            }
        }
    }
    r
}

/// The name of the script `PUT /me/vacation` writes: one a user is unlikely to choose.
const VACATION: &str = "postern-vacation";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VacationBody {
    text: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default = "default_days")]
    days: u32,
}

fn default_days() -> u32 {
    7
}

/// A Sieve string literal.
fn sieve_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Turns on a vacation reply: a script that replies, then runs the script that was active
/// before (kept by name in its first line, so turning vacation off brings it back).
pub(super) async fn vacation_set(st: Arc<AppState>, c: Call) -> Response {
    let a = c.me();
    let b = match c.body::<VacationBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let store = st.directory.store();
    let previous = match store.sieve_active(a.id).await {
        Ok(Some((n, src))) if n == VACATION => previous_of(&src),
        Ok(Some((n, _))) => Some(n),
        Ok(None) => None,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut src = format!(
        "# previous: {}\r\nrequire [\"vacation\", \"include\"];\r\nvacation :days {}",
        previous.as_deref().unwrap_or(""),
        b.days.clamp(1, 365)
    );
    if let Some(s) = &b.subject {
        src.push_str(&format!(" :subject {}", sieve_string(s)));
    }
    src.push_str(&format!(" {};\r\n", sieve_string(&b.text)));
    if let Some(prev) = &previous {
        src.push_str(&format!(
            "include :personal :optional {};\r\n",
            sieve_string(prev)
        ));
    }
    let req = AdminRequest::SievePut {
        address: a.address.clone(),
        name: VACATION.into(),
        source: src,
        activate: true,
    };
    answer(&st, req, StatusCode::OK).await
}

/// The script the vacation script runs after its reply (names may have spaces at the ends).
fn previous_of(src: &str) -> Option<String> {
    src.split("\r\n")
        .next()
        .and_then(|l| l.strip_prefix("# previous: "))
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// Turns the vacation reply off and makes the script active before it active again.
pub(super) async fn vacation_clear(st: Arc<AppState>, c: Call) -> Response {
    let a = c.me();
    let store = st.directory.store();
    let done = |m: &str| {
        json(
            StatusCode::OK,
            &serde_json::json!({"kind": "done", "message": m}),
        )
    };
    let (name, src) = match store.sieve_active(a.id).await {
        Ok(Some(x)) => x,
        Ok(None) => return done("no vacation reply was on"),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    if name != VACATION {
        return done("no vacation reply was on");
    }
    // The script it ran after may be gone meanwhile (deleted over ManageSieve): then none.
    let previous = previous_of(&src);
    let r = async {
        match store.sieve_activate(a.id, previous.as_deref()).await {
            Err(postern_store::StoreError::NotFound(_)) => store.sieve_activate(a.id, None).await,
            r => r,
        }?;
        store.sieve_delete(a.id, VACATION).await
    }
    .await;
    match r {
        Ok(()) => done("vacation reply off"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
