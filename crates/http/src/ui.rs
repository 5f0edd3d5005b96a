//! The web interface: one page and its script and style, built into the binary (no build step
//! anywhere). It logs in through `/api/v1/session` and then uses the same JSON API as scripts
//! do: administrators get the admin pages, every user their own account's page.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const COMMON: &str = include_str!("../ui/common.js");
const CHARTS: &str = include_str!("../ui/charts.js");
const STYLE: &str = include_str!("../ui/app.css");
const MAIL_PAGE: &str = include_str!("../ui/mail.html");
const MAIL_SCRIPT: &str = include_str!("../ui/mail.js");
const MAIL_STYLE: &str = include_str!("../ui/mail.css");

/// Nothing from elsewhere runs, frames or is posted to.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The webmail's page: the same, and frames of this server (a message's cleaned HTML).
const MAIL_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

fn served(body: &'static str, kind: &'static str) -> Response {
    served_with(body, kind, POLICY)
}

fn served_with(body: &'static str, kind: &'static str, policy: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) async fn page() -> Response {
    served(PAGE, "text/html; charset=utf-8")
}

/// The webmail (`/mail`).
pub(crate) async fn mail_page() -> Response {
    served_with(MAIL_PAGE, "text/html; charset=utf-8", MAIL_POLICY)
}

pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => served(SCRIPT, "text/javascript; charset=utf-8"),
        "common.js" => served(COMMON, "text/javascript; charset=utf-8"),
        "charts.js" => served(CHARTS, "text/javascript; charset=utf-8"),
        "app.css" => served(STYLE, "text/css; charset=utf-8"),
        "mail.js" => served(MAIL_SCRIPT, "text/javascript; charset=utf-8"),
        "mail.css" => served(MAIL_STYLE, "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
