//! Reading a message: the view (addresses, text, attachments, authentication results), its
//! HTML cleaned and served to a sandboxed frame under a policy of its own, its parts as
//! downloads or inline images, and its source.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_message::view::{self, View};
use postern_store::{FlagOp, Flags, FlagsUpdate, Mailbox, MessageEntry};
use serde::Deserialize;

use super::{failed, folder, store};
use crate::AppState;
use crate::api::{Call, error, json};

/// Senders whose remote images the reader allowed for good.
const IMAGE_SENDERS: &str = "/private/vendor/postern/webmail/image-senders";
const IMAGE_SENDERS_KEPT: usize = 500;

/// Whether the reader allowed the remote images of the message's sender for good.
async fn images_trusted(st: &AppState, c: &Call, v: &View) -> bool {
    let Some(from) = v.from.first().map(|p| p.address.to_ascii_lowercase()) else {
        return false;
    };
    super::compose::list_get(st, c, IMAGE_SENDERS)
        .await
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&from))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderBody {
    address: String,
}

/// Allows the remote images of a sender's messages from now on.
pub(in crate::api) async fn trust_images(st: Arc<AppState>, c: Call) -> Response {
    let b = match c.body::<SenderBody>() {
        Ok(b) => b,
        Err(r) => return crate::api::refuse(r),
    };
    let a = b.address.trim().to_ascii_lowercase();
    if !a.contains('@') || a.len() > 254 {
        return error(StatusCode::BAD_REQUEST, "give the sender's address");
    }
    if super::compose::list_add(
        &st,
        &c,
        IMAGE_SENDERS,
        std::slice::from_ref(&a),
        IMAGE_SENDERS_KEPT,
    )
    .await
    {
        json(
            StatusCode::OK,
            &serde_json::json!({"kind": "done", "message": format!("images from {a} are shown from now on")}),
        )
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sender could not be kept",
        )
    }
}

/// The folder of the path and its message `{uid}`, with the message's bytes.
async fn message(st: &AppState, c: &Call) -> Result<(Mailbox, MessageEntry, Vec<u8>), Response> {
    let m = folder(st, c).await?;
    let uid = c.param("uid");
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            &format!("no message {uid} in this folder"),
        )
    };
    let Ok(n) = uid.parse() else {
        return Err(missing());
    };
    let store = store(st);
    let e = match store.message_get(m.id, n).await {
        Ok(Some(e)) => e,
        Ok(None) => return Err(missing()),
        Err(e) => return Err(failed(e)),
    };
    match store.blob_read(e.blob, 0, e.size).await {
        Ok(raw) => Ok((m, e, raw)),
        Err(e) => Err(failed(e)),
    }
}

/// Where the parts of a message are served from (inline images refer to it).
fn part_path(m: &Mailbox, uid: u32) -> String {
    format!("/api/v1/me/mail/folders/{}/messages/{uid}/parts/", m.id)
}

/// A message to read: marked read, its HTML left to the frame (`has_html`).
pub(in crate::api) async fn read(st: Arc<AppState>, c: Call) -> Response {
    let (m, e, raw) = match message(&st, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !e.flags.seen() {
        let u = FlagsUpdate {
            mailbox: m.id,
            uids: vec![e.uid],
            op: FlagOp::Add,
            flags: Flags {
                bits: Flags::SEEN,
                keywords: Vec::new(),
            },
            unchanged_since: None,
            reader: None,
        };
        if let Err(err) = store(&st).flags_update(u).await {
            tracing::warn!(error = %err, "a message read in the webmail stays unread");
        }
    }
    let v = view::view(&raw);
    let checks: Vec<view::AuthCheck> = v
        .authentication_results
        .iter()
        .filter_map(|r| view::auth_checks(r, &st.config.hostname))
        .next()
        .unwrap_or_default();
    let failed_checks = checks
        .iter()
        .any(|c| matches!(c.result.as_str(), "fail" | "softfail" | "permerror"));
    let remote_images = v.html.as_deref().map(|h| clean(h, &v, "", false).1);
    let trusted = images_trusted(&st, &c, &v).await;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "uid": e.uid,
            "folder": m.id,
            "size": e.size,
            "arrived": e.internal_date,
            "flags": super::flags_json(&e.flags),
            "message": v,
            "has_html": v.html.is_some(),
            "remote_images": remote_images.unwrap_or(0),
            "images_trusted": trusted,
            "checks": checks,
            "checks_failed": failed_checks,
        }),
    )
}

/// HTML a reader may see: no script, no event handler, no style sheet, no form, no frame; links
/// open elsewhere; cid: images point at this message's parts; remote images only when
/// `remote` (else removed and counted). Returns the HTML and how many remote images it had.
pub(crate) fn clean(html: &str, v: &View, parts: &str, remote: bool) -> (String, usize) {
    let cids: HashMap<String, u32> = v
        .attachments
        .iter()
        .filter_map(|a| a.content_id.clone().map(|c| (c, a.part)))
        .collect();
    let blocked = Arc::new(AtomicUsize::new(0));
    let counted = blocked.clone();
    let prefix = parts.to_string();
    let own = parts.to_string();
    let mut b = ammonia::Builder::default();
    b.url_schemes(["http", "https", "mailto", "cid"].into_iter().collect())
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .strip_comments(true)
        .attribute_filter(move |element, attribute, value| {
            if element != "img" || attribute != "src" {
                return Some(Cow::Borrowed(value));
            }
            let lower = value.trim().to_ascii_lowercase();
            if let Some(cid) = value
                .trim()
                .strip_prefix("cid:")
                .or(value.strip_prefix("CID:"))
            {
                return cids
                    .get(cid)
                    .map(|p| Cow::Owned(format!("{prefix}{p}?inline=1")));
            }
            if lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")
            {
                counted.fetch_add(1, Ordering::Relaxed);
                return remote.then_some(Cow::Borrowed(value));
            }
            Some(Cow::Borrowed(value))
        })
        // Relative addresses mean nothing in mail: only the parts of this message remain.
        .url_relative(ammonia::UrlRelative::Custom(Box::new(only_under(own))));
    let out = b.clean(html).to_string();
    let n = blocked.load(Ordering::Relaxed);
    (out, n)
}

/// Keeps the relative addresses under `prefix` (none when it is empty).
fn only_under(prefix: String) -> impl Fn(&str) -> Option<Cow<'_, str>> + Send + Sync {
    move |u| (!prefix.is_empty() && u.starts_with(&prefix)).then_some(Cow::Borrowed(u))
}

#[derive(Deserialize, Default)]
struct HtmlQuery {
    #[serde(default)]
    images: bool,
}

/// The policy of a message's HTML: nothing runs, nothing is fetched but this server's images
/// (and, when allowed, remote images), and the frame is a sandbox without scripts.
fn frame_policy(remote: bool) -> String {
    format!(
        "default-src 'none'; img-src 'self'{}; style-src 'unsafe-inline'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'self'; \
         sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox",
        if remote { " https: http:" } else { "" }
    )
}

fn guarded(mut r: Response, policy: &str) -> Response {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(policy) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    r
}

/// The cleaned HTML of a message, as a page for a sandboxed frame.
pub(in crate::api) async fn html(st: Arc<AppState>, c: Call) -> Response {
    let (m, e, raw) = match message(&st, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q = c.query::<HtmlQuery>().unwrap_or_default();
    let v = view::view(&raw);
    let Some(h) = v.html.as_deref() else {
        return error(StatusCode::NOT_FOUND, "this message has no HTML");
    };
    let remote = q.images || images_trusted(&st, &c, &v).await;
    let (body, _) = clean(h, &v, &part_path(&m, e.uid), remote);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>body{{font:14px/1.45 \
         system-ui,sans-serif;margin:8px;color:#222;word-wrap:break-word}}img{{max-width:100%;\
         height:auto}}</style></head><body>{body}</body></html>"
    );
    let mut r = (StatusCode::OK, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    guarded(r, &frame_policy(remote))
}

#[derive(Deserialize, Default)]
struct PartQuery {
    #[serde(default)]
    inline: bool,
}

/// Images a browser may show inline: raster formats only (an SVG may carry script).
const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// `filename*` (RFC 6266, RFC 8187) with a plain-ASCII `filename` beside it.
fn disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// One part of a message: an attachment to save, or (`?inline=1`, raster images only) an
/// image to show.
pub(in crate::api) async fn part(st: Arc<AppState>, c: Call) -> Response {
    let (_, _, raw) = match message(&st, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q = c.query::<PartQuery>().unwrap_or_default();
    let n = c.param("part");
    let Some(p) = n.parse().ok().and_then(|i| view::part_content(&raw, i)) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no part {n} in this message"),
        );
    };
    let inline = q.inline && INLINE_TYPES.contains(&p.content_type.as_str());
    let named =
        p.content_type.contains('/') && p.content_type.bytes().all(|b| b.is_ascii_graphic());
    let kind = if inline || named {
        p.content_type.clone()
    } else {
        "application/octet-stream".into()
    };
    let mut r = (StatusCode::OK, p.bytes).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&kind) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let d = disposition(if inline { "inline" } else { "attachment" }, &p.name);
    if let Ok(v) = HeaderValue::from_str(&d) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    guarded(r, "default-src 'none'; sandbox")
}

/// The message as it is stored, as text.
pub(in crate::api) async fn raw(st: Arc<AppState>, c: Call) -> Response {
    let (_, _, raw) = match message(&st, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut r = (StatusCode::OK, raw).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    guarded(r, "default-src 'none'; sandbox")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(html: &str, remote: bool) -> (String, usize) {
        let raw = format!(
            "Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n{html}\r\n--r\r\n\
Content-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--r--\r\n"
        );
        let v = view::view(raw.as_bytes());
        clean(
            v.html.as_deref().unwrap(),
            &v,
            "/api/v1/me/mail/folders/1/messages/2/parts/",
            remote,
        )
    }

    #[test]
    fn scripts_and_remote_loads_go() {
        let (h, n) = cleaned(
            "<script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">j</a>\
<img src=\"https://far.test/t.png\"><img src=\"data:image/png;base64,AA\"><base href=\"https://far.test/\">\
<meta http-equiv=refresh content=\"0;url=https://far.test\"><svg onload=alert(4)></svg><style>@import url(https://far.test/s.css)</style>\
<div style=\"background:url(https://far.test/b.png)\">s</div><img src=\"/api/v1/admin\"><form action=https://far.test><input></form>",
            false,
        );
        for bad in [
            "script",
            "onerror",
            "javascript",
            "far.test",
            "data:",
            "<base",
            "<meta",
            "onload",
            "<style",
            "style=",
            "/api/v1/admin",
            "<form",
            "<input",
        ] {
            assert!(!h.contains(bad), "{bad} in {h}");
        }
        assert_eq!(n, 1);
        let (h, _) = cleaned("<img src=\"https://far.test/t.png\">", true);
        assert!(h.contains("https://far.test/t.png"), "{h}");
    }

    #[test]
    fn cid_images_and_links() {
        let (h, _) = cleaned(
            "<img src=\"cid:logo@x\"><a href=\"https://far.test/\">l</a>",
            false,
        );
        assert!(
            h.contains("src=\"/api/v1/me/mail/folders/1/messages/2/parts/2?inline=1\""),
            "{h}"
        );
        assert!(
            h.contains("target=\"_blank\"") && h.contains("noopener"),
            "{h}"
        );
    }

    #[test]
    fn download_names() {
        assert_eq!(
            disposition("attachment", "Bericht ä.pdf"),
            "attachment; filename=\"Bericht _.pdf\"; filename*=UTF-8''Bericht%20%C3%A4.pdf"
        );
    }
}
