//! The JSON API under `/api/v1` (docs/openapi.yaml): every admin operation of the CLI, each a
//! thin mapping onto the same [`AdminRequest`] the CLI sends, so both share one
//! implementation. Authenticated with tokens from `postern token create`
//! (`Authorization: Bearer pst_...`), over TLS or from loopback only.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use postern_directory::admin::AdminRequest;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{AppState, Peer};

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
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
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

/// Runs one admin request for an authorized caller.
async fn run(st: St, headers: HeaderMap, peer: Ext, req: AdminRequest, ok: StatusCode) -> Response {
    let name = match authorize(&st, &headers, peer.0).await {
        Ok(n) => n,
        Err((status, m)) => return error(status, &m),
    };
    tracing::info!(token = %name, "api request");
    match st.directory.admin(req).await {
        Ok(reply) => json(ok, &reply),
        Err(e) => {
            let m = e.message.to_ascii_lowercase();
            let status = if m.contains("does not exist")
                || m.contains("no such")
                || m.contains("not found")
                || m.contains("has no script")
                || m.contains("there is no")
                || m.starts_with("no queued")
            {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, &e.message)
        }
    }
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
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
struct UserBody {
    address: String,
    password: String,
    #[serde(default)]
    quota: Option<u64>,
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
struct QuotaBody {
    bytes: u64,
    #[serde(default)]
    messages: Option<u64>,
}

#[derive(Deserialize)]
struct ForwardBody {
    to: String,
    #[serde(default)]
    keep_copy: bool,
}

#[derive(Deserialize)]
struct AliasBody {
    alias: String,
    targets: Vec<String>,
}

#[derive(Deserialize)]
struct TargetQuery {
    target: Option<String>,
}

#[derive(Deserialize)]
struct GroupBody {
    group: String,
    members: Vec<String>,
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default)]
    senders: Vec<String>,
}

#[derive(Deserialize)]
struct PolicyBody {
    policy: String,
    #[serde(default)]
    senders: Vec<String>,
}

fn default_policy() -> String {
    "domain".into()
}

#[derive(Deserialize)]
struct ScriptBody {
    source: String,
    #[serde(default)]
    activate: bool,
}

#[derive(Deserialize)]
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
        .route(
            "/users/{address}/forward",
            put(forward_set).delete(forward_clear),
        )
        .route("/users/{address}/sieve", get(sieve_list))
        .route("/users/{address}/sieve/active", put(sieve_activate))
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
}

async fn domains(st: St, h: HeaderMap, p: Ext) -> Response {
    run(st, h, p, AdminRequest::DomainList, StatusCode::OK).await
}

async fn domain_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let b = with_body!(b, NameBody);
    run(
        st,
        h,
        p,
        AdminRequest::DomainAdd { name: b.name },
        StatusCode::CREATED,
    )
    .await
}

async fn domain_del(st: St, h: HeaderMap, p: Ext, Path(name): Path<String>) -> Response {
    run(st, h, p, AdminRequest::DomainDel { name }, StatusCode::OK).await
}

async fn users(st: St, h: HeaderMap, p: Ext) -> Response {
    run(st, h, p, AdminRequest::UserList, StatusCode::OK).await
}

async fn user_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let b = with_body!(b, UserBody);
    let req = AdminRequest::UserAdd {
        address: b.address,
        password: b.password,
        quota: b.quota,
    };
    run(st, h, p, req, StatusCode::CREATED).await
}

async fn user_del(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    run(st, h, p, AdminRequest::UserDel { address }, StatusCode::OK).await
}

async fn user_password(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    let b = with_body!(b, PasswordBody);
    let req = AdminRequest::UserPasswd {
        address,
        password: b.password,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn user_quota(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    let b = with_body!(b, QuotaBody);
    let req = AdminRequest::UserQuota {
        address,
        quota: b.bytes,
        messages: b.messages,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn forward_set(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(address): Path<String>,
    b: Bytes,
) -> Response {
    let b = with_body!(b, ForwardBody);
    let req = AdminRequest::Forward {
        address,
        to: Some(b.to),
        keep_copy: b.keep_copy,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn forward_clear(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    let req = AdminRequest::Forward {
        address,
        to: None,
        keep_copy: false,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn sieve_list(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    run(
        st,
        h,
        p,
        AdminRequest::SieveList { address },
        StatusCode::OK,
    )
    .await
}

async fn sieve_get(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path((address, name)): Path<(String, String)>,
) -> Response {
    run(
        st,
        h,
        p,
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
    let b = with_body!(b, ScriptBody);
    let req = AdminRequest::SievePut {
        address,
        name,
        source: b.source,
        activate: b.activate,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn sieve_delete(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path((address, name)): Path<(String, String)>,
) -> Response {
    run(
        st,
        h,
        p,
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
    let b = with_body!(b, ActiveBody);
    run(
        st,
        h,
        p,
        AdminRequest::SieveActivate {
            address,
            name: b.name,
        },
        StatusCode::OK,
    )
    .await
}

async fn aliases(st: St, h: HeaderMap, p: Ext) -> Response {
    run(st, h, p, AdminRequest::AliasList, StatusCode::OK).await
}

async fn alias_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let b = with_body!(b, AliasBody);
    let req = AdminRequest::AliasAdd {
        alias: b.alias,
        targets: b.targets,
    };
    run(st, h, p, req, StatusCode::CREATED).await
}

async fn alias_del(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(alias): Path<String>,
    Query(q): Query<TargetQuery>,
) -> Response {
    let req = AdminRequest::AliasDel {
        alias,
        target: q.target,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn groups(st: St, h: HeaderMap, p: Ext) -> Response {
    run(st, h, p, AdminRequest::GroupList, StatusCode::OK).await
}

async fn group_add(st: St, h: HeaderMap, p: Ext, b: Bytes) -> Response {
    let b = with_body!(b, GroupBody);
    let req = AdminRequest::GroupAdd {
        group: b.group,
        members: b.members,
        policy: b.policy,
        senders: b.senders,
    };
    run(st, h, p, req, StatusCode::CREATED).await
}

async fn group_policy(
    st: St,
    h: HeaderMap,
    p: Ext,
    Path(group): Path<String>,
    b: Bytes,
) -> Response {
    let b = with_body!(b, PolicyBody);
    let req = AdminRequest::GroupPolicy {
        group,
        policy: b.policy,
        senders: b.senders,
    };
    run(st, h, p, req, StatusCode::OK).await
}

async fn route(st: St, h: HeaderMap, p: Ext, Path(address): Path<String>) -> Response {
    run(st, h, p, AdminRequest::Route { address }, StatusCode::OK).await
}

async fn queue(st: St, h: HeaderMap, p: Ext) -> Response {
    run(st, h, p, AdminRequest::QueueList, StatusCode::OK).await
}

async fn queue_show(st: St, h: HeaderMap, p: Ext, Path(id): Path<u64>) -> Response {
    run(st, h, p, AdminRequest::QueueShow { id }, StatusCode::OK).await
}

async fn queue_retry(st: St, h: HeaderMap, p: Ext, Path(id): Path<u64>) -> Response {
    run(
        st,
        h,
        p,
        AdminRequest::QueueRetry { id: Some(id) },
        StatusCode::OK,
    )
    .await
}

async fn queue_retry_all(st: St, h: HeaderMap, p: Ext) -> Response {
    run(
        st,
        h,
        p,
        AdminRequest::QueueRetry { id: None },
        StatusCode::OK,
    )
    .await
}

async fn queue_delete(st: St, h: HeaderMap, p: Ext, Path(id): Path<u64>) -> Response {
    run(st, h, p, AdminRequest::QueueDelete { id }, StatusCode::OK).await
}

async fn queue_bounce(st: St, h: HeaderMap, p: Ext, Path(id): Path<u64>) -> Response {
    run(st, h, p, AdminRequest::QueueBounce { id }, StatusCode::OK).await
}

async fn trace(st: St, h: HeaderMap, p: Ext, Query(q): Query<TraceQuery>) -> Response {
    let req = AdminRequest::Trace {
        id: q.id,
        message_id: q.message_id,
        from: q.from,
        to: q.to,
        since_secs: q.since_secs,
        limit: q.limit.unwrap_or(20).min(1000),
    };
    run(st, h, p, req, StatusCode::OK).await
}
