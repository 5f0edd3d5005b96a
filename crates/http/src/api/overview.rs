//! What the admin's pages show beyond admin requests: the dashboard, and the configuration
//! file with its secrets masked.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;

use super::{Call, error, json};
use crate::AppState;

/// What the admin's first page shows: traffic since the server started, today's messages,
/// the queue, disk space and open sessions.
pub(super) async fn dashboard(st: Arc<AppState>, _: Call) -> Response {
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
pub(super) async fn settings(st: Arc<AppState>, _: Call) -> Response {
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
