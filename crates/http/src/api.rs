//! The JSON API under `/api/v1` (docs/openapi.yaml), as one table: each route says who may
//! call it and how the call becomes the [`AdminRequest`] the CLI sends, answered by the same
//! dispatcher; the few that are not admin operations (sessions, the dashboard, `/me` pages)
//! name a handler of their own. Admin routes take tokens from `postern token create`
//! (`Authorization: Bearer pst_...`) or an administrator's web session, over TLS or from
//! loopback only. Under `/me`, a mail user manages their own account with their address and
//! password instead.

mod auth;
mod mail;
mod me;
mod overview;
mod sharing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter as M, on};
use postern_admin::{AdminReply, AdminRequest};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{AppState, Peer};

pub(crate) use auth::csrf;

/// Who may call a route.
#[derive(Clone, Copy)]
enum Who {
    /// An API token, or an administrator's web session.
    Admin,
    /// A mail user: address and password (HTTP Basic), or their web session.
    User,
    /// Anyone: logging in and out.
    Anyone,
}

/// A status and the words of a refusal.
type Refusal = (StatusCode, String);
type Ask = Box<dyn Fn(&Call) -> Result<AdminRequest, Refusal> + Send + Sync>;
type Handler = Box<
    dyn Fn(Arc<AppState>, Call) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync,
>;

/// What a route does with a call.
struct Action {
    /// Whether the call's body is read (before the caller is checked, as for every route).
    reads_body: bool,
    /// Reads a body as large as a message may be (the webmail's uploads), not `MAX_BODY`.
    message_body: bool,
    answer: Answer,
}

enum Answer {
    /// The admin request made from the call; the dispatcher's reply, with this status on
    /// success, is the answer.
    Ask(StatusCode, Ask),
    /// A handler of its own.
    Own(Handler),
}

struct Route {
    method: M,
    path: &'static str,
    who: Who,
    action: Action,
}

/// An admin request made from the path and query.
fn ask(ok: StatusCode, make: fn(&Call) -> Result<AdminRequest, Refusal>) -> Action {
    Action {
        reads_body: false,
        message_body: false,
        answer: Answer::Ask(ok, Box::new(make)),
    }
}

/// An admin request made from the JSON body (of type `B`), the path and the query.
fn ask_body<B: DeserializeOwned + 'static>(
    ok: StatusCode,
    make: fn(&Call, B) -> Result<AdminRequest, Refusal>,
) -> Action {
    let ask = move |c: &Call| make(c, c.body::<B>()?);
    Action {
        reads_body: true,
        message_body: false,
        answer: Answer::Ask(ok, Box::new(ask)),
    }
}

/// A handler of its own, which reads the body if `reads_body`.
fn own<F, Fut>(reads_body: bool, f: F) -> Action
where
    F: Fn(Arc<AppState>, Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Action {
        reads_body,
        message_body: false,
        answer: Answer::Own(Box::new(move |st, c| Box::pin(f(st, c)))),
    }
}

/// A handler of its own whose body may be as large as a message with its attachments.
fn own_message<F, Fut>(f: F) -> Action
where
    F: Fn(Arc<AppState>, Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Action {
        message_body: true,
        ..own(true, f)
    }
}

#[derive(Default)]
struct Table(Vec<Route>);

impl Table {
    fn route(mut self, path: &'static str, method: M, who: Who, action: Action) -> Table {
        self.0.push(Route {
            method,
            path,
            who,
            action,
        });
        self
    }
}

/// Every route of the API: adding an endpoint is adding a row (and documenting it in
/// docs/openapi.yaml).
fn table() -> Table {
    use AdminRequest as R;
    use StatusCode as S;
    use Who::{Admin, Anyone, User};
    Table::default()
        .route("/domains", M::GET, Admin, ask(S::OK, |_| Ok(R::DomainList)))
        .route(
            "/domains",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: NameBody| {
                Ok(R::DomainAdd { name: b.name })
            }),
        )
        .route(
            "/domains/{name}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::DomainDel {
                    name: c.param("name"),
                })
            }),
        )
        .route("/users", M::GET, Admin, ask(S::OK, |_| Ok(R::UserList)))
        .route(
            "/users",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: UserBody| {
                Ok(R::UserAdd {
                    address: b.address,
                    password: b.password,
                    quota: b.quota,
                })
            }),
        )
        // Its web sessions end at their next request (`web_session` checks the account).
        .route(
            "/users/{address}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::UserDel {
                    address: c.param("address"),
                })
            }),
        )
        .route(
            "/users/{address}/password",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: PasswordBody| {
                Ok(R::UserPasswd {
                    address: c.param("address"),
                    password: b.password,
                })
            }),
        )
        .route(
            "/users/{address}/quota",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: QuotaBody| {
                Ok(R::UserQuota {
                    address: c.param("address"),
                    quota: b.bytes,
                    messages: b.messages,
                })
            }),
        )
        .route(
            "/users/{address}/disabled",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: DisabledBody| {
                Ok(R::UserDisable {
                    address: c.param("address"),
                    disabled: b.disabled,
                })
            }),
        )
        .route(
            "/users/{address}/forward",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: ForwardBody| {
                Ok(R::Forward {
                    address: c.param("address"),
                    to: Some(b.to),
                    keep_copy: b.keep_copy,
                })
            }),
        )
        .route(
            "/users/{address}/forward",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::Forward {
                    address: c.param("address"),
                    to: None,
                    keep_copy: false,
                })
            }),
        )
        .route(
            "/users/{address}/sieve",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                Ok(R::SieveList {
                    address: c.param("address"),
                })
            }),
        )
        .route(
            "/users/{address}/sieve-active",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: ActiveBody| {
                Ok(R::SieveActivate {
                    address: c.param("address"),
                    name: b.name,
                })
            }),
        )
        .route(
            "/users/{address}/sieve/{name}",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                Ok(R::SieveGet {
                    address: c.param("address"),
                    name: c.param("name"),
                })
            }),
        )
        .route(
            "/users/{address}/sieve/{name}",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: ScriptBody| {
                Ok(R::SievePut {
                    address: c.param("address"),
                    name: c.param("name"),
                    source: b.source,
                    activate: b.activate,
                })
            }),
        )
        .route(
            "/users/{address}/sieve/{name}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::SieveDelete {
                    address: c.param("address"),
                    name: c.param("name"),
                })
            }),
        )
        .route("/aliases", M::GET, Admin, ask(S::OK, |_| Ok(R::AliasList)))
        .route(
            "/aliases",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: AliasBody| {
                Ok(R::AliasAdd {
                    alias: b.alias,
                    targets: b.targets,
                })
            }),
        )
        .route(
            "/aliases/{alias}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::AliasDel {
                    alias: c.param("alias"),
                    target: c.query::<TargetQuery>()?.target,
                })
            }),
        )
        .route("/groups", M::GET, Admin, ask(S::OK, |_| Ok(R::GroupList)))
        .route(
            "/groups",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: GroupBody| {
                Ok(R::GroupAdd {
                    group: b.group,
                    members: b.members,
                    policy: b.policy,
                    senders: b.senders,
                })
            }),
        )
        .route(
            "/groups/{group}/policy",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: PolicyBody| {
                Ok(R::GroupPolicy {
                    group: c.param("group"),
                    policy: b.policy,
                    senders: b.senders,
                })
            }),
        )
        .route(
            "/users/{address}/access",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                Ok(R::Access {
                    address: c.param("address"),
                })
            }),
        )
        .route(
            "/shared-mailboxes",
            M::GET,
            Admin,
            ask(S::OK, |_| Ok(R::MailboxList)),
        )
        .route(
            "/shared-mailboxes",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: SharedBody| {
                Ok(R::MailboxAdd {
                    address: b.address,
                    members: b.members,
                    rights: b.rights,
                    quota: b.quota,
                })
            }),
        )
        .route(
            "/shared-mailboxes/{address}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::MailboxDel {
                    address: c.param("address"),
                })
            }),
        )
        .route(
            "/shared-mailboxes/{address}/members/{member}",
            M::PUT,
            Admin,
            ask_body(S::OK, |c, b: RightsBody| {
                Ok(R::MailboxGrant {
                    address: c.param("address"),
                    member: c.param("member"),
                    rights: b.rights,
                })
            }),
        )
        .route(
            "/shared-mailboxes/{address}/members/{member}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::MailboxRevoke {
                    address: c.param("address"),
                    member: c.param("member"),
                })
            }),
        )
        .route("/send-as", M::GET, Admin, ask(S::OK, |_| Ok(R::SendAsList)))
        .route(
            "/send-as",
            M::POST,
            Admin,
            ask_body(S::CREATED, |_, b: SendAsBody| {
                Ok(R::SendAsAdd {
                    address: b.address,
                    delegate: b.delegate,
                    on_behalf: b.on_behalf,
                })
            }),
        )
        .route(
            "/send-as/{address}/{delegate}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| {
                Ok(R::SendAsDel {
                    address: c.param("address"),
                    delegate: c.param("delegate"),
                })
            }),
        )
        .route(
            "/route/{address}",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                Ok(R::Route {
                    address: c.param("address"),
                })
            }),
        )
        .route("/queue", M::GET, Admin, ask(S::OK, |_| Ok(R::QueueList)))
        .route(
            "/queue/retry",
            M::POST,
            Admin,
            ask(S::OK, |_| Ok(R::QueueRetry { id: None })),
        )
        .route(
            "/queue/{id}",
            M::GET,
            Admin,
            ask(S::OK, |c| Ok(R::QueueShow { id: c.queue_id()? })),
        )
        .route(
            "/queue/{id}",
            M::DELETE,
            Admin,
            ask(S::OK, |c| Ok(R::QueueDelete { id: c.queue_id()? })),
        )
        .route(
            "/queue/{id}/retry",
            M::POST,
            Admin,
            ask(S::OK, |c| {
                Ok(R::QueueRetry {
                    id: Some(c.queue_id()?),
                })
            }),
        )
        .route(
            "/queue/{id}/bounce",
            M::POST,
            Admin,
            ask(S::OK, |c| Ok(R::QueueBounce { id: c.queue_id()? })),
        )
        .route(
            "/trace",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                let q = c.query::<TraceQuery>()?;
                Ok(R::Trace {
                    id: q.id,
                    message_id: q.message_id,
                    from: q.from,
                    to: q.to,
                    since_secs: q.since_secs,
                    limit: q.limit.unwrap_or(20).min(1000),
                })
            }),
        )
        .route(
            "/reports",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                let q = c.query::<ReportsQuery>()?;
                Ok(R::ReportsList {
                    domain: q.domain.filter(|d| !d.is_empty()),
                    days: q.days.unwrap_or(30).clamp(1, 3660),
                })
            }),
        )
        .route(
            "/reports/send",
            M::POST,
            Admin,
            ask(S::OK, |_| Ok(R::ReportsSend)),
        )
        .route("/acme", M::GET, Admin, ask(S::OK, |_| Ok(R::AcmeStatus)))
        .route(
            "/stats",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                let q = c.query::<StatsQuery>()?;
                let now = postern_store::now() + 1;
                let range = match q.range.as_deref() {
                    Some(r) => postern_config::parse_seconds(r).ok_or_else(|| {
                        (
                            StatusCode::BAD_REQUEST,
                            format!("range {r:?} is not a duration (24h, 7d)"),
                        )
                    })? as i64,
                    None => 86_400,
                };
                let to = q.to.unwrap_or(now);
                let step = match q.step.as_deref() {
                    Some(s) => Some(
                        postern_admin::stats::parse_step(s)
                            .map_err(|e| (StatusCode::BAD_REQUEST, e))?,
                    ),
                    None => None,
                };
                Ok(R::Stats {
                    from: q.from.unwrap_or(to - range),
                    to,
                    step,
                    top_hours: q.top_hours,
                })
            }),
        )
        .route(
            "/acme/renew",
            M::POST,
            Admin,
            ask(S::OK, |c| {
                let q = c.query::<AcmeRenewQuery>()?;
                Ok(R::AcmeRenew {
                    force: q.force.unwrap_or(false),
                })
            }),
        )
        .route("/doctor", M::GET, Admin, ask(S::OK, |_| Ok(R::Doctor)))
        .route(
            "/dns/{domain}",
            M::GET,
            Admin,
            ask(S::OK, |c| {
                Ok(R::Dns {
                    domain: c.param("domain"),
                    check: c.query::<CheckQuery>()?.check,
                })
            }),
        )
        .route("/dashboard", M::GET, Admin, own(false, overview::dashboard))
        .route("/settings", M::GET, Admin, own(false, overview::settings))
        .route("/reload", M::POST, Admin, ask(S::OK, |_| Ok(R::Reload)))
        .route("/session", M::GET, Anyone, own(false, auth::session_get))
        .route("/session", M::POST, Anyone, own(true, auth::session_login))
        .route(
            "/session",
            M::DELETE,
            Anyone,
            own(false, auth::session_logout),
        )
        .route("/me", M::GET, User, own(false, me::get))
        .route("/me/password", M::PUT, User, own(true, me::password))
        .route(
            "/me/forward",
            M::PUT,
            User,
            ask_body(S::OK, |c, b: ForwardBody| {
                Ok(R::Forward {
                    address: c.me().address.clone(),
                    to: Some(b.to),
                    keep_copy: b.keep_copy,
                })
            }),
        )
        .route(
            "/me/forward",
            M::DELETE,
            User,
            ask(S::OK, |c| {
                Ok(R::Forward {
                    address: c.me().address.clone(),
                    to: None,
                    keep_copy: false,
                })
            }),
        )
        .route("/me/sharing", M::GET, User, own(false, sharing::get))
        .route("/me/sharing", M::PUT, User, own(true, sharing::set))
        .route("/me/sharing", M::DELETE, User, own(false, sharing::remove))
        .route("/me/vacation", M::PUT, User, own(true, me::vacation_set))
        .route(
            "/me/vacation",
            M::DELETE,
            User,
            own(false, me::vacation_clear),
        )
        // The webmail (mail.rs).
        .route("/me/mail/folders", M::GET, User, own(false, mail::folders))
        .route(
            "/me/mail/folders",
            M::POST,
            User,
            own(true, mail::folder_create),
        )
        .route(
            "/me/mail/folders/{folder}",
            M::PUT,
            User,
            own(true, mail::folder_rename),
        )
        .route(
            "/me/mail/folders/{folder}",
            M::DELETE,
            User,
            own(false, mail::folder_delete),
        )
        .route(
            "/me/mail/folders/{folder}/messages",
            M::GET,
            User,
            own(false, mail::messages),
        )
        .route(
            "/me/mail/folders/{folder}/actions",
            M::POST,
            User,
            own(true, mail::act),
        )
        .route(
            "/me/mail/folders/{folder}/messages/{uid}",
            M::GET,
            User,
            own(false, mail::read),
        )
        .route(
            "/me/mail/folders/{folder}/messages/{uid}/html",
            M::GET,
            User,
            own(false, mail::html),
        )
        .route(
            "/me/mail/folders/{folder}/messages/{uid}/raw",
            M::GET,
            User,
            own(false, mail::raw),
        )
        .route(
            "/me/mail/folders/{folder}/messages/{uid}/parts/{part}",
            M::GET,
            User,
            own(false, mail::part),
        )
        .route("/me/mail/events", M::GET, User, own(false, mail::events))
        .route("/me/mail/send", M::POST, User, own_message(mail::send))
        .route("/me/mail/drafts", M::POST, User, own_message(mail::draft))
        .route(
            "/me/mail/contacts",
            M::GET,
            User,
            own(false, mail::contacts),
        )
        .route(
            "/me/mail/image-senders",
            M::POST,
            User,
            own(true, mail::trust_images),
        )
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for route in table().0 {
        let (method, path) = (route.method, route.path);
        let route = Arc::new(route);
        let handler = move |State(st): State<Arc<AppState>>, req: Request| async move {
            handle(&route, st, req).await
        };
        router = router.route(path, on(method, handler));
    }
    router
}

/// What a handler gets of a call.
pub(crate) struct Call {
    headers: HeaderMap,
    peer: Peer,
    uri: Uri,
    params: Vec<(String, String)>,
    body: Bytes,
    /// The logged-in account, on user routes.
    account: Option<postern_store::Account>,
}

impl Call {
    /// A parameter of the route's path (percent-decoded).
    fn param(&self, name: &str) -> String {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn body<T: DeserializeOwned>(&self) -> Result<T, Refusal> {
        serde_json::from_slice(&self.body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
    }

    fn query<T: DeserializeOwned>(&self) -> Result<T, Refusal> {
        match Query::<T>::try_from_uri(&self.uri) {
            Ok(Query(q)) => Ok(q),
            Err(e) => Err((StatusCode::BAD_REQUEST, e.body_text())),
        }
    }

    /// The `{id}` of a queue route: anything but a number names nothing.
    fn queue_id(&self) -> Result<u64, Refusal> {
        let id = self.param("id");
        id.parse()
            .map_err(|_| (StatusCode::NOT_FOUND, format!("no queued message {id}")))
    }

    /// The account of a user route.
    fn me(&self) -> &postern_store::Account {
        self.account
            .as_ref()
            .expect("user routes have a logged-in account")
    }
}

/// The one handler of every route: the path, the body when the route reads one, the
/// caller's rights, then the route's action.
async fn handle(route: &Route, st: Arc<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let params = match RawPathParams::from_request_parts(&mut parts, &st).await {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(e) => return e.into_response(),
    };
    let peer = match axum::Extension::<Peer>::from_request_parts(&mut parts, &st).await {
        Ok(axum::Extension(p)) => p,
        Err(e) => return e.into_response(),
    };
    let (headers, uri) = (parts.headers.clone(), parts.uri.clone());
    let body = if route.action.message_body {
        // Base64 in JSON: a third more than the message, and room for the rest.
        let limit = st.config.smtp.max_message_size.0 as usize / 3 * 4 + (1 << 20);
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too large: a message with its attachments may be at most smtp.max_message_size",
            )
        };
        // Refused before it is read when its length says so.
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return too_large();
        }
        match axum::body::to_bytes(body, limit).await {
            Ok(b) => b,
            Err(_) => return too_large(),
        }
    } else if route.action.reads_body {
        match Bytes::from_request(Request::from_parts(parts, body), &st).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        }
    } else {
        Bytes::new()
    };
    let account = match route.who {
        Who::Admin => match auth::authorize(&st, &headers, peer).await {
            Ok(name) => {
                tracing::info!(token = %name, "api request");
                None
            }
            Err(r) => return refuse(r),
        },
        Who::User => match auth::user_login(&st, &headers, peer).await {
            Ok(a) => Some(a),
            Err((status, m)) => return auth::user_refusal(&headers, status, &m),
        },
        Who::Anyone => None,
    };
    let call = Call {
        headers,
        peer,
        uri,
        params,
        body,
        account,
    };
    match &route.action.answer {
        Answer::Ask(ok, make) => match make(&call) {
            Ok(req) => answer(&st, req, *ok).await,
            Err(r) => refuse(r),
        },
        Answer::Own(handler) => handler(st, call).await,
    }
}

/// The dispatcher's answer: `ok` and the reply (a report as it is); 404 for what does not
/// exist, 503 when storage failed for now, 400 for any other refusal.
async fn answer(st: &AppState, req: AdminRequest, ok: StatusCode) -> Response {
    match st.hooks.admin.run(req).await {
        Ok(AdminReply::Report { json }) => {
            (ok, [(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Ok(reply) => json(ok, &reply),
        Err(e) if e.temporary => error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
        Err(e) if e.is_not_found() => error(StatusCode::NOT_FOUND, &e.message),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.message),
    }
}

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

fn refuse((status, message): Refusal) -> Response {
    error(status, &message)
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
#[serde(deny_unknown_fields)]
struct SharedBody {
    address: String,
    members: Vec<String>,
    #[serde(default)]
    rights: Option<String>,
    #[serde(default)]
    quota: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RightsBody {
    #[serde(default)]
    rights: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendAsBody {
    address: String,
    delegate: String,
    #[serde(default)]
    on_behalf: bool,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisabledBody {
    disabled: bool,
}

#[derive(Deserialize)]
struct StatsQuery {
    from: Option<i64>,
    to: Option<i64>,
    range: Option<String>,
    step: Option<String>,
    top_hours: Option<u32>,
}

#[derive(Deserialize)]
struct AcmeRenewQuery {
    force: Option<bool>,
}

#[derive(Deserialize)]
struct ReportsQuery {
    domain: Option<String>,
    days: Option<u32>,
}

#[derive(Deserialize)]
struct CheckQuery {
    #[serde(default)]
    check: bool,
}
