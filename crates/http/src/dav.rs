//! CalDAV and CardDAV on the HTTP listeners: `/dav/` with HTTP Basic logins (the account's
//! address and password), and the `/.well-known/caldav` and `/.well-known/carddav` redirects
//! (RFC 6764 5). The protocol itself is `postern-dav`'s.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use postern_directory::AuthOutcome;

use crate::{AppState, Peer, text};

/// What a request body may add to the largest resource: the XML around it.
const BODY_MARGIN: usize = 256 << 10;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dav", any(serve))
        .route("/dav/", any(serve))
        .route("/dav/{*rest}", any(serve))
        .route("/.well-known/caldav", any(well_known))
        .route("/.well-known/carddav", any(well_known))
}

/// The service's context path (RFC 6764 5): clients find the principal from there.
async fn well_known(State(s): State<Arc<AppState>>) -> Response {
    if !s.config.dav.enabled {
        return crate::not_found().await;
    }
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, HeaderValue::from_static("/dav/"))],
    )
        .into_response()
}

fn challenge(status: StatusCode, why: &str) -> Response {
    let mut r = text(status, &format!("{why}\n"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Postern\", charset=\"UTF-8\""),
        );
    }
    r
}

fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The account these credentials log in, or the answer refusing them.
async fn login(
    s: &AppState,
    h: &HeaderMap,
    peer: &Peer,
) -> Result<postern_store::Account, Response> {
    let Peer(ip, tls) = *peer;
    // As for every password Postern takes: over TLS, from this machine, or when allowed.
    if !tls && !ip.is_loopback() && !s.config.auth.allow_plaintext {
        return Err(challenge(
            StatusCode::FORBIDDEN,
            "passwords are taken over HTTPS only: use the https:// address (auth.allow_plaintext is off)",
        ));
    }
    let Some((user, password)) = basic_credentials(h) else {
        return Err(challenge(
            StatusCode::UNAUTHORIZED,
            "log in with your email address and password",
        ));
    };
    match s.directory.authenticate(&user, &password, ip, "dav").await {
        Ok(AuthOutcome::Ok(a)) => Ok(a),
        Ok(AuthOutcome::Failed) => {
            postern_net::metrics::METRICS.auth_failures.add("http", 1);
            tokio::time::sleep(s.directory.failure_delay()).await;
            Err(challenge(
                StatusCode::UNAUTHORIZED,
                "wrong user name or password: the user name is your full email address",
            ))
        }
        Ok(AuthOutcome::Disabled) => Err(challenge(
            StatusCode::FORBIDDEN,
            "this account is disabled; ask your mail administrator",
        )),
        Ok(AuthOutcome::Shared(why)) => Err(challenge(StatusCode::FORBIDDEN, &why)),
        Ok(AuthOutcome::LockedOut(w)) => Err(challenge(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many failed logins; try again in {} minute(s)",
                w.as_secs().div_ceil(60)
            ),
        )),
        Err(e) => Err(challenge(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

pub(crate) fn settings(c: &postern_config::Dav) -> postern_dav::Settings {
    postern_dav::Settings {
        limits: postern_store::DavLimits {
            max_size: c.max_resource_size.0,
            max_resources: c.max_resources,
            max_collections: c.max_collections,
        },
        max_instances: c.max_instances,
    }
}

async fn serve(State(s): State<Arc<AppState>>, req: Request) -> Response {
    if !s.config.dav.enabled {
        return crate::not_found().await;
    }
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or(Peer(std::net::Ipv6Addr::UNSPECIFIED.into(), false));
    let (parts, body) = req.into_parts();
    // OPTIONS answers before a login: clients ask what the server is first.
    if parts.method == axum::http::Method::OPTIONS {
        return (
            StatusCode::OK,
            [
                (
                    header::HeaderName::from_static("dav"),
                    postern_dav::DAV_CLASSES,
                ),
                (header::ALLOW, postern_dav::ALLOW),
            ],
        )
            .into_response();
    }
    let account = match login(&s, &parts.headers, &peer).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let settings = settings(&s.config.dav);
    let limit = settings.limits.max_size as usize + BODY_MARGIN;
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request is larger than {} bytes allow (dav.max_resource_size)\n",
                settings.limits.max_size
            ),
        )
    };
    // Said before the body is read, when its length says so.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    let h = |n: header::HeaderName| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request = postern_dav::Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        depth: h(header::HeaderName::from_static("depth")),
        if_match: h(header::IF_MATCH),
        if_none_match: h(header::IF_NONE_MATCH),
        destination: h(header::HeaderName::from_static("destination")),
        overwrite: h(header::HeaderName::from_static("overwrite")),
        body: body.to_vec(),
    };
    let store = s.directory.store().clone();
    let dav = postern_dav::Dav {
        store: store.as_ref(),
        account: &account,
        settings: &settings,
    };
    let answer = dav.handle(request).await;
    let mut r = Response::new(Body::from(answer.body));
    *r.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut()
                .insert(header::HeaderName::from_static(name), v);
        }
    }
    r
}

/// The HTTPS port that serves `/dav/`, if any.
fn https_port(cfg: &postern_config::Config) -> Option<u16> {
    cfg.listen
        .addresses(postern_config::ListenerKind::Https)
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|_| cfg.dav.enabled)
}

/// The setup page with where calendar and contact programs connect.
pub(crate) fn with_setup_section(cfg: &postern_config::Config, page: String) -> String {
    let Some(port) = https_port(cfg) else {
        return page;
    };
    let host = crate::docs::xml_escape(&cfg.hostname);
    let url = if port == 443 {
        format!("https://{host}/")
    } else {
        format!("https://{host}:{port}/")
    };
    let section = format!(
        r#"    <h2 id="dav">Calendars and contacts</h2>
    <p>Calendar and contact programs (CalDAV and CardDAV: Apple Calendar and Contacts,
    Thunderbird, DAVx5, Evolution) take the server <code>{url}</code> with the same user name
    and password, and find your calendars and address books themselves. Those that ask for the
    full address: <code>{url}dav/</code>.</p>
"#
    );
    page.replacen(
        "    <h2>Automatic setup</h2>",
        &format!("{section}    <h2>Automatic setup</h2>"),
        1,
    )
}

/// An Apple profile with CalDAV and CardDAV accounts beside its mail account, when the HTTPS
/// listener serves them.
pub(crate) fn with_apple_payloads(
    cfg: &postern_config::Config,
    address: &str,
    profile: String,
) -> String {
    let Some(port) = https_port(cfg) else {
        return profile;
    };
    let a = crate::docs::xml_escape(address);
    let host = crate::docs::xml_escape(&cfg.hostname);
    let principal = crate::docs::xml_escape(&postern_dav::path::principal_href(address));
    let who = address.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let mut payloads = String::new();
    for (kind, what, id) in [
        ("CalDAV", "Calendars", "caldav"),
        ("CardDAV", "Contacts", "carddav"),
    ] {
        payloads.push_str(&format!(
            r#"    <dict>
      <key>{kind}AccountDescription</key><string>{what} of {a}</string>
      <key>{kind}HostName</key><string>{host}</string>
      <key>{kind}Port</key><integer>{port}</integer>
      <key>{kind}PrincipalURL</key><string>{principal}</string>
      <key>{kind}UseSSL</key><true/>
      <key>{kind}Username</key><string>{a}</string>
      <key>PayloadDescription</key><string>{what} of {a}</string>
      <key>PayloadDisplayName</key><string>{what} of {a}</string>
      <key>PayloadIdentifier</key><string>{host}.{id}.{who}</string>
      <key>PayloadType</key><string>com.apple.{id}.account</string>
      <key>PayloadUUID</key><string>{uuid}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
"#,
            uuid = crate::docs::uuid(),
        ));
    }
    profile.replacen("  </array>", &format!("{payloads}  </array>"), 1)
}
