//! HTTP and HTTPS: client autoconfiguration (Thunderbird autoconfig, Outlook Autodiscover,
//! Apple profiles), the MTA-STS policy, the setup page for people, the JSON API, and the web
//! interface for administrators and users.

mod api;
mod dav;
pub mod docs;
pub mod session;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use postern_config::Config;
use postern_directory::{Directory, domain_of, normalize_address};
use postern_net::{Admission, ConnLimits, Shutdown, TlsStore, Tracker};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, info};

pub struct HttpServer {
    pub config: Arc<Config>,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub implicit_tls: bool,
    pub shutdown: Shutdown,
    pub hooks: Hooks,
}

/// What the API reaches beyond this crate.
#[derive(Clone)]
pub struct Hooks {
    /// Answers the API's admin requests, as it answers the control socket's.
    pub admin: Arc<postern_admin::Admin>,
    /// The configuration file the server was started with.
    pub config_path: Option<std::path::PathBuf>,
    /// Sends what the webmail's users write, as authenticated SMTP submission does.
    pub submit: Option<MailSubmit>,
}

/// A message a webmail user sends, and to whom.
pub struct Outgoing {
    pub account: postern_store::Account,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

/// Takes an [`Outgoing`] message; the text is its trace id, or why it was refused.
pub type MailSubmit = Arc<
    dyn Fn(
            Outgoing,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

pub(crate) struct AppState {
    config: Arc<Config>,
    directory: Arc<Directory>,
    hooks: Hooks,
    /// Answers to an ACME CA's http-01 challenges.
    challenges: Option<Arc<postern_net::tls::Challenges>>,
    /// Ends the webmail's event streams, which would hold connections open.
    shutdown: Shutdown,
}

#[derive(Deserialize)]
struct AddressQuery {
    emailaddress: Option<String>,
}

const MAX_BODY: usize = 64 << 10;

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// When this server started serving HTTP (Unix time).
static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

pub(crate) fn started() -> i64 {
    *STARTED.get_or_init(postern_store::now)
}

impl AppState {
    fn session_limits(&self) -> session::Limits {
        let h = &self.config.http;
        session::Limits {
            idle: h.session_idle.duration(),
            max_age: h.session_max_age.duration(),
            max_sessions: h.max_sessions,
        }
    }

    /// Whether `address` logs in to the web interface as an administrator.
    fn is_admin(&self, address: &str) -> bool {
        self.config
            .http
            .admins
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(address))
    }

    fn endpoints(&self) -> Vec<postern_config::settings::Endpoint> {
        postern_config::settings::endpoints(&self.config)
    }

    /// The domain an address belongs to, when it is one of ours.
    async fn our_domain(&self, address: &str) -> Option<String> {
        let a = normalize_address(address).ok()?;
        let d = domain_of(&a).to_string();
        self.directory.is_local_domain(&d).await.ok()?.then_some(d)
    }

    async fn first_domain(&self) -> Option<String> {
        let domains = self.directory.store().domain_list().await.ok()?;
        let host = &self.config.hostname;
        domains
            .iter()
            .find(|d| host.ends_with(&format!(".{}", d.name)))
            .or(domains.first())
            .map(|d| d.name.clone())
    }
}

async fn autoconfig(
    State(s): State<Arc<AppState>>,
    q: Query<AddressQuery>,
    headers: HeaderMap,
) -> Response {
    // Thunderbird asks autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=...; the address may
    // be missing on the .well-known path, then the Host names the domain.
    let domain = match &q.emailaddress {
        Some(a) => match s.our_domain(a).await {
            Some(d) => d,
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    "no mail service for that address here\n",
                );
            }
        },
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| {
                    h.split(':')
                        .next()
                        .unwrap_or(h)
                        .trim_start_matches("autoconfig.")
                        .to_string()
                });
            match host {
                Some(h) if s.directory.is_local_domain(&h).await.unwrap_or(false) => h,
                _ => match s.first_domain().await {
                    Some(d) => d,
                    None => return text(StatusCode::NOT_FOUND, "no mail domain is set up\n"),
                },
            }
        }
    };
    xml(docs::autoconfig(&domain, &s.endpoints()))
}

async fn autodiscover(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let bad = |code: StatusCode, msg: &str| {
        let mut r = xml(docs::autodiscover_error(600, msg));
        *r.status_mut() = code;
        r
    };
    if body.len() > MAX_BODY {
        return bad(StatusCode::PAYLOAD_TOO_LARGE, "Request too large");
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return bad(StatusCode::BAD_REQUEST, "Invalid Request");
    };
    let Some(address) = docs::autodiscover_request(body) else {
        return bad(StatusCode::BAD_REQUEST, "Invalid Request");
    };
    // Every address of our domains gets the same settings, whether or not it exists, so the
    // answer tells nobody which accounts there are.
    match s.our_domain(&address).await {
        Some(_) => xml(docs::autodiscover(&address, &s.endpoints())),
        None => xml(docs::autodiscover_error(600, "Invalid Request")),
    }
}

async fn apple(State(s): State<Arc<AppState>>, q: Query<AddressQuery>) -> Response {
    let Some(address) = q
        .emailaddress
        .as_deref()
        .and_then(|a| normalize_address(a).ok())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "give your address: ?emailaddress=you@example.com\n",
        );
    };
    if s.our_domain(&address).await.is_none() {
        return text(
            StatusCode::NOT_FOUND,
            "no mail service for that address here\n",
        );
    }
    match docs::mobileconfig(&address, &s.endpoints()) {
        Some(p) => {
            let mut r = dav::with_apple_payloads(&s.config, &address, p).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-apple-aspen-config; charset=utf-8"),
            );
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""),
            );
            r
        }
        None => text(
            StatusCode::NOT_FOUND,
            "this server has no incoming and outgoing mail listeners\n",
        ),
    }
}

/// http-01 (RFC 8555 8.3): the key authorization for a token of an order in progress.
async fn acme_challenge(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match s.challenges.as_ref().and_then(|c| c.http(&token)) {
        Some(ka) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            ka,
        )
            .into_response(),
        None => text(StatusCode::NOT_FOUND, "no such challenge\n"),
    }
}

async fn mta_sts(State(s): State<Arc<AppState>>) -> Response {
    let c = &s.config.mta_sts;
    text(
        StatusCode::OK,
        &docs::mta_sts_policy(&c.mode, &s.config.hostname, c.max_age.0),
    )
}

async fn index(State(s): State<Arc<AppState>>) -> Response {
    let domains: Vec<String> = s
        .directory
        .store()
        .domain_list()
        .await
        .map(|v| v.into_iter().map(|d| d.name).collect())
        .unwrap_or_default();
    let page = docs::index_page(&s.config.hostname, &s.endpoints(), &domains);
    let mut r = dav::with_setup_section(&s.config, page).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The client's address, for handlers that serve some networks only, and whether the
/// connection is TLS.
#[derive(Clone, Copy)]
struct Peer(std::net::IpAddr, bool);

/// Prometheus metrics: what the counters say, plus storage and queue state read now.
async fn metrics(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    axum::Extension(Peer(ip, _)): axum::Extension<Peer>,
) -> Response {
    if !st.config.http.metrics_allowed(ip) {
        return text(
            StatusCode::FORBIDDEN,
            "metrics are served to http.metrics_networks only\n",
        );
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(8192);
    postern_net::metrics::METRICS.render(&mut out);
    let store = st.directory.store();
    let s = store.stats();
    let _ = writeln!(
        out,
        "# HELP postern_storage_commits_total Write transactions committed.\n\
         # TYPE postern_storage_commits_total counter\npostern_storage_commits_total {}\n\
         # HELP postern_storage_writes_total Write requests carried by those commits.\n\
         # TYPE postern_storage_writes_total counter\npostern_storage_writes_total {}\n\
         # HELP postern_storage_fsyncs_total fsync calls.\n\
         # TYPE postern_storage_fsyncs_total counter\npostern_storage_fsyncs_total {}",
        s.commits, s.writes, s.fsyncs
    );
    if let Ok(q) = store.queue_list().await {
        let now = postern_store::now();
        let oldest = q.iter().map(|e| now - e.created).max().unwrap_or(0).max(0);
        let recipients: usize = q
            .iter()
            .map(|e| {
                e.recipients
                    .iter()
                    .filter(|r| r.state == postern_store::RecipientState::Pending)
                    .count()
            })
            .sum();
        let _ = writeln!(
            out,
            "# HELP postern_queue_messages Messages on the outbound queue.\n\
             # TYPE postern_queue_messages gauge\npostern_queue_messages {}\n\
             # HELP postern_queue_recipients Recipients still to be delivered.\n\
             # TYPE postern_queue_recipients gauge\npostern_queue_recipients {recipients}\n\
             # HELP postern_queue_oldest_seconds Age of the oldest queued message.\n\
             # TYPE postern_queue_oldest_seconds gauge\npostern_queue_oldest_seconds {oldest}",
            q.len()
        );
    }
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route(
            "/autodiscover/autodiscover.xml",
            axum::routing::post(autodiscover),
        )
        .route(
            "/Autodiscover/Autodiscover.xml",
            axum::routing::post(autodiscover),
        )
        .route("/apple/profile.mobileconfig", get(apple))
        .route("/.well-known/mta-sts.txt", get(mta_sts))
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .route("/metrics", get(metrics))
        .route("/account", get(ui::page))
        .route("/admin", get(ui::page))
        .route("/mail", get(ui::mail_page))
        .route("/ui/{file}", get(ui::asset))
        .merge(dav::routes())
        .nest(
            "/api/v1",
            api::router().layer(axum::middleware::from_fn_with_state(
                state.clone(),
                api::csrf,
            )),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

impl HttpServer {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        started();
        let app = router(Arc::new(AppState {
            config: self.config.clone(),
            directory: self.directory.clone(),
            hooks: self.hooks.clone(),
            challenges: self.tls.as_ref().map(|t| t.challenges()),
            shutdown: self.shutdown.clone(),
        }));
        let limits = ConnLimits {
            max_connections: self.config.http.max_connections,
            max_per_ip: self.config.http.max_connections_per_ip,
            max_rate_per_ip: 0,
            protocol: "http",
        };
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            self.shutdown.clone(),
            move |stream, peer, adm| {
                let me = me.clone();
                let app = app.clone();
                let span = tracing::info_span!("http", peer = %peer);
                async move { me.connection(stream, peer, adm, app).await }.instrument(span)
            },
        )
        .await;
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        adm: Admission,
        app: Router,
    ) {
        if let Admission::TooMany(_) = adm {
            return;
        }
        let app = app.layer(axum::Extension(Peer(
            postern_net::listener::canonical_ip(peer.ip()),
            self.implicit_tls,
        )));
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app);
        let mut shutdown = self.shutdown.clone();
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(self.config.http.header_timeout.duration())
                .max_buf_size(64 << 10);
            b
        };
        if self.implicit_tls {
            let Some(tls) = &self.tls else { return };
            // A CA checking a tls-alpn-01 challenge is answered in the handshake, and done.
            let tls_stream = match tokio::time::timeout(
                self.config.tls.handshake_timeout.duration(),
                tls.accept_https(stream),
            )
            .await
            {
                Ok(Ok(Some(s))) => s,
                _ => return,
            };
            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        } else {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
        info!("http connection closed");
    }
}
