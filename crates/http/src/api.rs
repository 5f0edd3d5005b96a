//! The JSON API under `/api/v1` (docs/openapi.yaml): every admin operation of the CLI, each a
//! thin mapping onto the same [`AdminRequest`] the CLI sends, so both share one
//! implementation. Authenticated with tokens from `postern token create`
//! (`Authorization: Bearer pst_...`), over TLS or from loopback only. Under `/me`, a mail
//! user manages their own account with their address and password instead.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use postern_directory::admin::AdminRequest;
use serde::Deserialize;
use serde::de::DeserializeOwned;

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

type St = State<Arc<AppState>>;
type Ext = axum::Extension<Peer>;

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut r = json(status, &serde_json::json!({ "error": message }));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"postern\""),
        );
    }
    r
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
fn basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// The token's name, or the status and words refusing the request.
async fn authorize(
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

/// The reply to an admin request: 404 for what does not exist, 503 when storage failed for
/// now, 400 for any other refusal.
async fn exec(st: &AppState, req: AdminRequest, ok: StatusCode) -> Response {
    match st.directory.admin(req).await {
        Ok(reply) => json(ok, &reply),
        Err(e) if e.temporary => error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
        Err(e) if e.is_not_found() => error(StatusCode::NOT_FOUND, &e.message),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.message),
    }
}

/// Authenticates the token before anything of the request is looked at.
macro_rules! auth {
    ($st:expr, $h:expr, $p:expr) => {
        match authorize(&$st, &$h, $p.0).await {
            Ok(name) => tracing::info!(token = %name, "api request"),
            Err((status, m)) => return error(status, &m),
        }
    };
}

/// An extractor's result, after authentication: a JSON 400 when it failed.
macro_rules! extracted {
    ($r:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
        }
    };
}

/// A numeric id from the path: anything else names nothing.
fn id_of(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("no queued message {s}"))
}

fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("bad JSON body: {e}"))
}

macro_rules! with_body {
    ($b:expr, $t:ty) => {
        match body::<$t>(&$b) {
            Ok(v) => v,
            Err(m) => return error(StatusCode::BAD_REQUEST, &m),
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    address: String,
    password: String,
    #[serde(default)]
    quota: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    bytes: u64,
    #[serde(default)]
    messages: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardBody {
    to: String,
    #[serde(default)]
    keep_copy: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    alias: String,
    targets: Vec<String>,
}

#[derive(Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    group: String,
    members: Vec<String>,
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default)]
    senders: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    policy: String,
    #[serde(default)]
    senders: Vec<String>,
}

fn default_policy() -> String {
    "domain".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptBody {
    source: String,
    #[serde(default)]
    activate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveBody {
    name: Option<String>,
}

#[derive(Deserialize)]
struct TraceQuery {
    id: Option<String>,
    message_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since_secs: Option<u64>,
    limit: Option<usize>,
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/domains", get(domains).post(domain_add))
        .route("/domains/{name}", axum::routing::delete(domain_del))
        .route("/users", get(users).post(user_add))
        .route("/users/{address}", axum::routing::delete(user_del))
        .route("/users/{address}/password", put(user_password))
        .route("/users/{address}/quota", put(user_quota))
        .route("/users/{address}/disabled", put(user_disabled))
        .route(
            "/users/{address}/forward",
            put(forward_set).delete(forward_clear),
        )
        .route("/users/{address}/sieve", get(sieve_list))
        .route("/users/{address}/sieve-active", put(sieve_activate))
        .route(
            "/users/{address}/sieve/{name}",
            get(sieve_get).put(sieve_put).delete(sieve_delete),
        )
        .route("/aliases", get(aliases).post(alias_add))
        .route("/aliases/{alias}", axum::routing::delete(alias_del))
        .route("/groups", get(groups).post(group_add))
        .route("/groups/{group}/policy", put(group_policy))
        .route("/route/{address}", get(route))
        .route("/queue", get(queue))
        .route("/queue/retry", post(queue_retry_all))
        .route("/queue/{id}", get(queue_show).delete(queue_delete))
        .route("/queue/{id}/retry", post(queue_retry))
        .route("/queue/{id}/bounce", post(queue_bounce))
        .route("/trace", get(trace))
        .route("/doctor", get(doctor))
        .route("/dns/{domain}", get(dns))
        .route("/dashboard", get(dashboard))
        .route("/settings", get(settings))
        .route("/reload", post(reload))
        .route(
            "/session",
            get(session_get).post(session_login).delete(session_logout),
        )
        .route("/me", get(me_get))
        .route("/me/password", put(me_password))
        .route("/me/forward", put(me_forward_set).delete(me_forward_clear))
        .route(
            "/me/vacation",
            put(me_vacation_set).delete(me_vacation_clear),
        )
}

async fn domains(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::DomainList, StatusCode::OK).await
}

async fn domain_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, NameBody);
    exec(
        &st,
        AdminRequest::DomainAdd { name: b.name },
        StatusCode::CREATED,
    )
    .await
}

async fn domain_del(st: St, h: HeaderMap, p: Ext, Path(name): Path<String>) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::DomainDel { name }, StatusCode::OK).await
}

async fn users(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::UserList, StatusCode::OK).await
}

async fn user_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, UserBody);
    let req = AdminRequest::UserAdd {
        address: b.address,
        password: b.password,
        quota: b.quota,
    };
    exec(&st, req, StatusCode::CREATED).await
}

async fn user_del(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    auth!(st, h, p);
    // Its web sessions end at their next request (`web_session` checks the account).
    let req = AdminRequest::UserDel { address };
    exec(&st, req, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisabledBody {
    disabled: bool,
}

async fn user_disabled(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, DisabledBody);
    let req = AdminRequest::UserDisable {
        address,
        disabled: b.disabled,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn user_password(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, PasswordBody);
    let req = AdminRequest::UserPasswd {
        address,
        password: b.password,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn user_quota(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, QuotaBody);
    let req = AdminRequest::UserQuota {
        address,
        quota: b.bytes,
        messages: b.messages,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn forward_set(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, ForwardBody);
    let req = AdminRequest::Forward {
        address,
        to: Some(b.to),
        keep_copy: b.keep_copy,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn forward_clear(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    auth!(st, h, p);
    let req = AdminRequest::Forward {
        address,
        to: None,
        keep_copy: false,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn sieve_list(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::SieveList { address }, StatusCode::OK).await
}

async fn sieve_get(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path((address, name)): Path<(String, String)>,
) -> Response {
    auth!(st, h, p);
    exec(
        &st,
        AdminRequest::SieveGet { address, name },
        StatusCode::OK,
    )
    .await
}

async fn sieve_put(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path((address, name)): Path<(String, String)>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, ScriptBody);
    let req = AdminRequest::SievePut {
        address,
        name,
        source: b.source,
        activate: b.activate,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn sieve_delete(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path((address, name)): Path<(String, String)>,
) -> Response {
    auth!(st, h, p);
    exec(
        &st,
        AdminRequest::SieveDelete { address, name },
        StatusCode::OK,
    )
    .await
}

async fn sieve_activate(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, ActiveBody);
    exec(
        &st,
        AdminRequest::SieveActivate {
            address,
            name: b.name,
        },
        StatusCode::OK,
    )
    .await
}

async fn aliases(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::AliasList, StatusCode::OK).await
}

async fn alias_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, AliasBody);
    let req = AdminRequest::AliasAdd {
        alias: b.alias,
        targets: b.targets,
    };
    exec(&st, req, StatusCode::CREATED).await
}

async fn alias_del(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(alias): Path<String>,
    q: Result<Query<TargetQuery>, QueryRejection>,
) -> Response {
    auth!(st, h, p);
    let Query(q) = extracted!(q);
    let req = AdminRequest::AliasDel {
        alias,
        target: q.target,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn groups(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::GroupList, StatusCode::OK).await
}

async fn group_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, GroupBody);
    let req = AdminRequest::GroupAdd {
        group: b.group,
        members: b.members,
        policy: b.policy,
        senders: b.senders,
    };
    exec(&st, req, StatusCode::CREATED).await
}

async fn group_policy(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(group): Path<String>,
    b: Bytes,
) -> Response {
    auth!(st, h, p);
    let b = with_body!(b, PolicyBody);
    let req = AdminRequest::GroupPolicy {
        group,
        policy: b.policy,
        senders: b.senders,
    };
    exec(&st, req, StatusCode::OK).await
}

async fn route(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::Route { address }, StatusCode::OK).await
}

async fn queue(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::QueueList, StatusCode::OK).await
}

async fn queue_show(st: St, h: HeaderMap, p: Ext, Path(id): Path<String>) -> Response {
    auth!(st, h, p);
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(m) => return error(StatusCode::NOT_FOUND, &m),
    };
    exec(&st, AdminRequest::QueueShow { id }, StatusCode::OK).await
}

async fn queue_retry(st: St, h: HeaderMap, p: Ext, Path(id): Path<String>) -> Response {
    auth!(st, h, p);
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(m) => return error(StatusCode::NOT_FOUND, &m),
    };
    exec(
        &st,
        AdminRequest::QueueRetry { id: Some(id) },
        StatusCode::OK,
    )
    .await
}

async fn queue_retry_all(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    exec(&st, AdminRequest::QueueRetry { id: None }, StatusCode::OK).await
}

async fn queue_delete(st: St, h: HeaderMap, p: Ext, Path(id): Path<String>) -> Response {
    auth!(st, h, p);
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(m) => return error(StatusCode::NOT_FOUND, &m),
    };
    exec(&st, AdminRequest::QueueDelete { id }, StatusCode::OK).await
}

async fn queue_bounce(st: St, h: HeaderMap, p: Ext, Path(id): Path<String>) -> Response {
    auth!(st, h, p);
    let id = match id_of(&id) {
        Ok(i) => i,
        Err(m) => return error(StatusCode::NOT_FOUND, &m),
    };
    exec(&st, AdminRequest::QueueBounce { id }, StatusCode::OK).await
}

async fn trace(
    st: St,
    h: HeaderMap,
    p: Ext,
    q: Result<Query<TraceQuery>, QueryRejection>,
) -> Response {
    auth!(st, h, p);
    let Query(q) = extracted!(q);
    let req = AdminRequest::Trace {
        id: q.id,
        message_id: q.message_id,
        from: q.from,
        to: q.to,
        since_secs: q.since_secs,
        limit: q.limit.unwrap_or(20).min(1000),
    };
    exec(&st, req, StatusCode::OK).await
}

/// A JSON report from a hook, for a caller with a token.
async fn report(
    st: &AppState,
    h: &HeaderMap,
    p: Peer,
    make: Option<crate::JsonFuture>,
) -> Response {
    if let Err((status, m)) = authorize(st, h, p).await {
        return error(status, &m);
    }
    match make {
        Some(f) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            f.await,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not available in this server"),
    }
}

async fn doctor(st: St, h: HeaderMap, p: Ext) -> Response {
    let f = st.hooks.doctor.as_ref().map(|d| d());
    report(&st, &h, p.0, f).await
}

#[derive(Deserialize)]
struct CheckQuery {
    #[serde(default)]
    check: bool,
}

async fn dns(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(domain): Path<String>,
    q: Result<Query<CheckQuery>, QueryRejection>,
) -> Response {
    if let Err((status, m)) = authorize(&st, &h, p.0).await {
        return error(status, &m);
    }
    let Query(q) = extracted!(q);
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match st.directory.is_local_domain(&domain).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("{domain} is not a domain of this server"),
            );
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    let f = st.hooks.dns.as_ref().map(|d| d(domain, q.check));
    report(&st, &h, p.0, f).await
}

// Self-service: a mail user with their own address and password (HTTP Basic), over TLS or
// from loopback. These endpoints reach that account only; admin endpoints take tokens only.

/// The logged-in account, or the status and words refusing the request.
async fn user_login(
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
async fn check_password(
    st: &AppState,
    user: &str,
    password: &str,
    ip: std::net::IpAddr,
) -> Result<postern_store::Account, (StatusCode, String)> {
    use postern_directory::AuthOutcome;
    match st.directory.authenticate(user, password, ip).await {
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

macro_rules! me {
    ($st:expr, $h:expr, $p:expr) => {
        match user_login(&$st, &$h, $p.0).await {
            Ok(a) => a,
            Err((status, m)) => {
                let mut r = error(status, &m);
                // A browser with a session cookie, or the page's own script, must not be shown
                // a password dialog.
                let script = $h
                    .get("sec-fetch-mode")
                    .is_some_and(|v| v.as_bytes() == b"cors");
                if status == StatusCode::UNAUTHORIZED && session::token_of(&$h).is_none() && !script
                {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic realm=\"postern\""),
                    );
                }
                return r;
            }
        }
    };
}

async fn as_user(st: &AppState, req: AdminRequest) -> Response {
    exec(st, req, StatusCode::OK).await
}

/// The account: usage, quota, forwarding, vacation, and the settings for a mail program.
async fn me_get(st: St, h: HeaderMap, p: Ext) -> Response {
    let a = me!(st, h, p);
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

async fn me_password(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let a = me!(st, h, p);
    let b = with_body!(b, MePasswordBody);
    if !basic(&h) {
        let Some(current) = b.current.as_deref() else {
            return error(
                StatusCode::BAD_REQUEST,
                "give your current password too (\"current\")",
            );
        };
        if let Err((status, m)) = check_password(&st, &a.address, current, p.0.0).await {
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
    let r = as_user(
        &st,
        AdminRequest::UserPasswd {
            address: a.address.clone(),
            password: b.password,
        },
    )
    .await;
    if r.status().is_success() {
        // Sessions made with the old password end (`web_session` compares digests); this
        // one, if the change came with one, goes on.
        if let (Some(t), Ok(Some(now))) = (
            session::token_of(&h),
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

async fn me_forward_set(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let a = me!(st, h, p);
    let b = with_body!(b, ForwardBody);
    as_user(
        &st,
        AdminRequest::Forward {
            address: a.address,
            to: Some(b.to),
            keep_copy: b.keep_copy,
        },
    )
    .await
}

async fn me_forward_clear(st: St, h: HeaderMap, p: Ext) -> Response {
    let a = me!(st, h, p);
    as_user(
        &st,
        AdminRequest::Forward {
            address: a.address,
            to: None,
            keep_copy: false,
        },
    )
    .await
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
async fn me_vacation_set(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let a = me!(st, h, p);
    let b = with_body!(b, VacationBody);
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
    as_user(
        &st,
        AdminRequest::SievePut {
            address: a.address,
            name: VACATION.into(),
            source: src,
            activate: true,
        },
    )
    .await
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
async fn me_vacation_clear(st: St, h: HeaderMap, p: Ext) -> Response {
    let a = me!(st, h, p);
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

async fn session_login(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let Peer(ip, tls) = p.0;
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
    let b = with_body!(b, LoginBody);
    let a = match check_password(&st, &b.address, &b.password, ip).await {
        Ok(a) => a,
        Err((status, m)) => return error(status, &m),
    };
    let admin = st.is_admin(&a.address);
    let limits = st.session_limits();
    let store = st.directory.store();
    if let Some(old) = session::token_of(&h) {
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

async fn session_get(st: St, h: HeaderMap) -> Response {
    let Some(token) = session::token_of(&h) else {
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

async fn session_logout(st: St, h: HeaderMap) -> Response {
    if let Some(token) = session::token_of(&h)
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

/// What the admin's first page shows: traffic since the server started, today's messages,
/// the queue, disk space and open sessions.
async fn dashboard(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    let m = &postern_net::metrics::METRICS;
    let store = st.directory.store();
    let now = postern_store::now();
    let midnight = now - now.rem_euclid(86400);
    let today = store
        .trace_recent(midnight * 1000, 10_000)
        .await
        .map(|v| v.len())
        .ok();
    let queue = store.queue_list().await.ok().map(|q| {
        let oldest = q.iter().map(|e| now - e.created).max().unwrap_or(0).max(0);
        let failing = q.iter().filter(|e| e.attempts > 0).count();
        serde_json::json!({"messages": q.len(), "oldest_secs": oldest, "retrying": failing})
    });
    let disk = postern_net::disk_space(&st.config.data_dir);
    json(
        StatusCode::OK,
        &serde_json::json!({
            "hostname": st.config.hostname,
            "started": crate::started(),
            "received": m.received.snapshot(),
            "refused": m.refused.snapshot(),
            "delivered_local": m.delivered_local.load(std::sync::atomic::Ordering::Relaxed),
            "outbound": m.outbound.snapshot(),
            "auth_failures": m.auth_failures.snapshot(),
            "sessions": m.sessions(),
            "messages_today": today,
            "queue": queue,
            "disk": disk.map(|(free, total)| serde_json::json!({"free_bytes": free, "total_bytes": total})),
        }),
    )
}

/// The configuration file in use, with passwords and secrets masked.
async fn settings(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    let Some(path) = st.hooks.config_path.clone() else {
        return error(StatusCode::NOT_FOUND, "not available in this server");
    };
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => mask_secrets(&t).unwrap_or_else(|| {
            "(the file does not parse as TOML now; it is not shown)".to_string()
        }),
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{}: {e}", path.display()),
            );
        }
    };
    json(
        StatusCode::OK,
        &serde_json::json!({"path": path.display().to_string(), "text": text}),
    )
}

/// The configuration text with the value of every key naming a password or secret hidden,
/// at any depth (inline tables, multi-line strings); None when it does not parse.
fn mask_secrets(text: &str) -> Option<String> {
    fn secret(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        k.contains("password") || k.contains("secret")
    }
    fn collect(t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            match v {
                toml::Value::String(s) if secret(k) => out.push(s.clone()),
                toml::Value::Table(t) => collect(t, out),
                toml::Value::Array(a) => a.iter().for_each(|v| {
                    if let toml::Value::Table(t) = v {
                        collect(t, out)
                    }
                }),
                _ => {}
            }
        }
    }
    let table: toml::Table = text.parse().ok()?;
    let mut values = Vec::new();
    collect(&table, &mut values);
    let mut out: String = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if secret(k) => format!("{k}= \"********\""),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    for v in values.iter().filter(|v| !v.is_empty()) {
        for quoted in [format!("\"{v}\""), format!("'{v}'")] {
            out = out.replace(&quoted, "\"********\"");
        }
        // Multi-line and escaped forms: the bare text, when it is long enough to be unambiguous.
        if v.len() >= 8 {
            out = out.replace(v.as_str(), "********");
        }
    }
    Some(out)
}

/// Reloads the TLS certificate and the DKIM keys now.
async fn reload(st: St, h: HeaderMap, p: Ext) -> Response {
    auth!(st, h, p);
    let Some(hook) = st.hooks.reload.clone() else {
        return error(StatusCode::NOT_FOUND, "not available in this server");
    };
    // Reading certificate and key files blocks.
    match tokio::task::spawn_blocking(move || hook()).await.ok() {
        Some(Ok(m)) => json(
            StatusCode::OK,
            &serde_json::json!({"kind": "done", "message": m}),
        ),
        Some(Err(m)) => error(StatusCode::BAD_REQUEST, &m),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the reload did not finish"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_masked() {
        let t = "[relay]\nhost = \"smtp.example\"\npassword = \"hunter2\"\n  client_secret=\"x\"";
        let m = super::mask_secrets(t).unwrap();
        let inline = "[relay]\nx = { password = \"in-line-secret\" }\ny = \"\"\"\nok\"\"\"\n";
        assert!(
            !super::mask_secrets(inline)
                .unwrap()
                .contains("in-line-secret")
        );
        assert!(super::mask_secrets("password = ").is_none());
        assert!(!m.contains("hunter2") && !m.contains("\"x\""), "{m}");
        assert!(m.contains("host = \"smtp.example\"") && m.contains("password = \"********\""));
    }
}
