//! Who may call: API tokens and administrators' web sessions for admin routes; a mail user's
//! address and password, or their web session, for `/me`; logging in and out; and the CSRF
//! check of requests a browser makes with a session cookie.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::{Call, error, json, refuse};
use crate::session;
use crate::{AppState, Peer};

/// The session of `token` and its account, while the account exists, may log in and (for the
/// admin role) is still one of `http.admins`.
async fn web_session(
    st: &AppState,
    token: &str,
) -> Result<Option<(session::Session, postern_store::Account)>, String> {
    let store = st.directory.store();
    let Some(mut s) = session::get(&**store, token, &st.session_limits())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    match store.account_by_address(&s.address).await {
        Ok(Some(a)) if !a.disabled && session::password_digest(&a.password_hash) == s.password => {
            s.admin = s.admin && st.is_admin(&a.address);
            Ok(Some((s, a)))
        }
        Ok(_) => {
            session::remove(&**store, token)
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Requests that change something with a session cookie must carry the session's CSRF token
/// and, when the browser says where they come from, come from this site.
pub(crate) async fn csrf(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let h = req.headers();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let login = *req.method() == Method::POST && req.uri().path() == "/session";
    // A bearer token is never sent by a browser on its own; a cookie or Basic credentials are.
    if safe || bearer(h).is_some() {
        return next.run(req).await;
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, r)| r);
        if !origin_host.eq_ignore_ascii_case(host) {
            return error(
                StatusCode::FORBIDDEN,
                "this request comes from another site and is refused",
            );
        }
    }
    if login {
        return next.run(req).await;
    }
    if let Some(token) = session::token_of(h) {
        // Unchecked is refused: the handler could find the session a moment later.
        let s = match session::get(&**st.directory.store(), &token, &st.session_limits()).await {
            Ok(Some(s)) => s,
            Ok(None) => return next.run(req).await,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
        let sent = h
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !session::same(sent, &s.csrf) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token for this session; reload the page",
            );
        }
    }
    next.run(req).await
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Whether the request carries HTTP Basic credentials.
pub(super) fn basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The token's name, or the status and words refusing the request.
pub(super) async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<String, (StatusCode, String)> {
    let Peer(ip, tls) = peer;
    if !tls && !ip.is_loopback() && !st.config.auth.allow_plaintext {
        return Err((
            StatusCode::FORBIDDEN,
            "the API takes tokens over HTTPS only (or from this machine)".into(),
        ));
    }
    if bearer(headers).is_none()
        && let Some(token) = session::token_of(headers)
    {
        return match web_session(st, &token).await {
            Ok(Some((s, _))) if s.admin => Ok(format!("web session of {}", s.address)),
            Ok(Some(_)) => Err((
                StatusCode::FORBIDDEN,
                "this needs an administrator; you are logged in as a user".into(),
            )),
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                "your session has ended; log in again".into(),
            )),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e)),
        };
    }
    let token = bearer(headers).unwrap_or("");
    match st.directory.token_name(token).await {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err((
            StatusCode::UNAUTHORIZED,
            "a valid API token is needed: Authorization: Bearer <token> (postern token create)"
                .into(),
        )),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The logged-in account, or the status and words refusing the request.
pub(super) async fn user_login(
    st: &AppState,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<postern_store::Account, (StatusCode, String)> {
    let Peer(ip, tls) = peer;
    if !tls && !ip.is_loopback() && !st.config.auth.allow_plaintext {
        return Err((
            StatusCode::FORBIDDEN,
            "passwords are taken over HTTPS only (or from this machine)".into(),
        ));
    }
    if !basic(headers)
        && let Some(token) = session::token_of(headers)
    {
        return match web_session(st, &token).await {
            Ok(Some((_, a))) => Ok(a),
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                "your session has ended; log in again".into(),
            )),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e)),
        };
    }
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b)| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, password)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "log in with your email address and password (HTTP Basic)".into(),
        ));
    };
    check_password(st, user, password, ip).await
}

/// The account whose address and password these are; refusals say the same whether the
/// account exists or not.
pub(super) async fn check_password(
    st: &AppState,
    user: &str,
    password: &str,
    ip: std::net::IpAddr,
) -> Result<postern_store::Account, (StatusCode, String)> {
    use postern_directory::AuthOutcome;
    match st.directory.authenticate(user, password, ip, "http").await {
        Ok(AuthOutcome::Ok(a)) => Ok(a),
        Ok(AuthOutcome::Failed) => {
            postern_net::metrics::METRICS.auth_failures.add("http", 1);
            tokio::time::sleep(st.directory.failure_delay()).await;
            Err((
                StatusCode::UNAUTHORIZED,
                "wrong user name or password: the user name is your full email address".into(),
            ))
        }
        Ok(AuthOutcome::Disabled) => Err((
            StatusCode::UNAUTHORIZED,
            "this account is disabled; ask your mail administrator".into(),
        )),
        Ok(AuthOutcome::Shared(why)) => Err((StatusCode::UNAUTHORIZED, why)),
        Ok(AuthOutcome::LockedOut(w)) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins; try again in {} minute(s)",
                w.as_secs().div_ceil(60)
            ),
        )),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The refusal of a user route: a browser with a session cookie, or the page's own script,
/// must not be shown a password dialog.
pub(super) fn user_refusal(h: &HeaderMap, status: StatusCode, m: &str) -> Response {
    let mut r = error(status, m);
    let script = h
        .get("sec-fetch-mode")
        .is_some_and(|v| v.as_bytes() == b"cors");
    if status == StatusCode::UNAUTHORIZED && session::token_of(h).is_none() && !script {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"postern\""),
        );
    }
    r
}

// Web sessions: the admin interface and the self-service pages log in here with an address
// and password, over TLS (or from loopback), and get a session cookie and a CSRF token.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    address: String,
    password: String,
}

fn session_json(s: &session::Session) -> serde_json::Value {
    serde_json::json!({"address": s.address, "admin": s.admin, "csrf": s.csrf})
}

pub(super) async fn session_login(st: Arc<AppState>, c: Call) -> Response {
    let (h, Peer(ip, tls)) = (&c.headers, c.peer);
    if !tls && !ip.is_loopback() {
        // Even with auth.allow_plaintext: browsers keep the Secure cookie over HTTPS only.
        return error(
            StatusCode::FORBIDDEN,
            "log in to the web interface over HTTPS (https://this-server/admin)",
        );
    }
    // A form on another site cannot send JSON without asking first (CORS): no login CSRF.
    let json_body = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send {\"address\": ..., \"password\": ...} as application/json",
        );
    }
    let b = match c.body::<LoginBody>() {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    let a = match check_password(&st, &b.address, &b.password, ip).await {
        Ok(a) => a,
        Err((status, m)) => return error(status, &m),
    };
    let admin = st.is_admin(&a.address);
    let limits = st.session_limits();
    let store = st.directory.store();
    if let Some(old) = session::token_of(h) {
        let _ = session::remove(&**store, &old).await;
    }
    let (token, s) = match session::create(
        &**store,
        &a.address,
        admin,
        session::password_digest(&a.password_hash),
        &limits,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    tracing::info!(user = %a.address, admin, "web login");
    let mut r = json(StatusCode::OK, &session_json(&s));
    if let Ok(v) = header::HeaderValue::from_str(&session::cookie(Some(&token), limits.max_age)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn session_get(st: Arc<AppState>, c: Call) -> Response {
    let Some(token) = session::token_of(&c.headers) else {
        return error(StatusCode::UNAUTHORIZED, "not logged in");
    };
    match web_session(&st, &token).await {
        Ok(Some((s, _))) => json(StatusCode::OK, &session_json(&s)),
        Ok(None) => error(
            StatusCode::UNAUTHORIZED,
            "your session has ended; log in again",
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

pub(super) async fn session_logout(st: Arc<AppState>, c: Call) -> Response {
    if let Some(token) = session::token_of(&c.headers)
        && let Err(e) = session::remove(&**st.directory.store(), &token).await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let mut r = json(
        StatusCode::OK,
        &serde_json::json!({"kind": "done", "message": "logged out"}),
    );
    if let Ok(v) = header::HeaderValue::from_str(&session::cookie(None, Default::default())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
