//! Web sessions: a random token in a cookie (`__Host-` prefixed: HttpOnly, Secure,
//! SameSite=Strict, no Domain) names who logged in and with which role; every state change
//! made with it must also carry the session's CSRF token in `X-CSRF-Token`.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use postern_store::{Result, Store, WebSession, now_ms};

pub const COOKIE: &str = "__Host-postern_session";

/// Sessions one account keeps at once (browsers, devices).
const PER_ACCOUNT: usize = 10;

pub type Session = WebSession;

pub struct Limits {
    pub idle: Duration,
    pub max_age: Duration,
    pub max_sessions: usize,
}

impl Limits {
    fn expires(&self, created: i64, used: i64) -> i64 {
        (used + self.idle.as_millis() as i64).min(created + self.max_age.as_millis() as i64)
    }

    /// How stale the last-use time may get before it is written again: a request need not
    /// cost a write.
    fn touch_every(&self) -> i64 {
        (self.idle.as_millis() as i64 / 10).clamp(1, 60_000)
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store knows a token by.
fn id_of(token: &str) -> String {
    postern_store::sha256_hex(token)
}

/// A new session; returns its token (for the cookie) and the session.
pub async fn create(
    store: &dyn Store,
    address: &str,
    admin: bool,
    password: u64,
    l: &Limits,
) -> Result<(String, Session)> {
    let now = now_ms();
    let token = random_token();
    let s = WebSession {
        id: id_of(&token),
        address: address.to_string(),
        admin,
        csrf: random_token(),
        password,
        created: now,
        used: now,
        expires: l.expires(now, now),
    };
    // One account cannot push everyone else out: its own oldest sessions go first.
    let mut own = store.web_session_list(address).await?;
    if own.len() >= PER_ACCOUNT {
        own.sort_by_key(|s| s.used);
        for old in own.iter().take(own.len() + 1 - PER_ACCOUNT) {
            store.web_session_delete(&old.id).await?;
        }
    }
    store
        .web_session_put(s.clone(), Some(l.max_sessions.max(1)))
        .await?;
    Ok((token, s))
}

/// The live session of `token`, marked as used now.
pub async fn get(store: &dyn Store, token: &str, l: &Limits) -> Result<Option<Session>> {
    let now = now_ms();
    let Some(mut s) = store.web_session_get(&id_of(token)).await? else {
        return Ok(None);
    };
    // Limits may have been lowered since the session began.
    if l.expires(s.created, s.used) <= now {
        store.web_session_delete(&s.id).await?;
        return Ok(None);
    }
    if now - s.used >= l.touch_every() {
        s.used = now;
        s.expires = l.expires(s.created, now);
        store.web_session_put(s.clone(), None).await?;
    }
    Ok(Some(s))
}

/// Keeps the session of `token` after its own password change.
pub async fn set_password(store: &dyn Store, token: &str, password: u64) -> Result<()> {
    if let Some(mut s) = store.web_session_get(&id_of(token)).await? {
        s.password = password;
        store.web_session_put(s, None).await?;
    }
    Ok(())
}

pub async fn remove(store: &dyn Store, token: &str) -> Result<()> {
    store.web_session_delete(&id_of(token)).await
}

/// The digest sessions keep of a password hash (never the hash itself).
pub fn password_digest(hash: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
    u64::from_be_bytes(d.as_ref()[..8].try_into().expect("32 bytes"))
}

/// The session token the request's cookies carry, if any.
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

/// The Set-Cookie value that starts (or, with no token, ends) a session.
pub fn cookie(token: Option<&str>, max_age: Duration) -> String {
    match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            max_age.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    }
}

/// Equal strings, compared in time that depends on their length only.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: u64, max: usize) -> Limits {
        Limits {
            idle: Duration::from_millis(idle),
            max_age: Duration::from_secs(3600),
            max_sessions: max,
        }
    }

    #[tokio::test]
    async fn sessions_expire_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            postern_store::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let s = &*store;
        let l = limits(60_000, 2);
        let (a, _) = create(s, "a@x", false, 0, &l).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (b, sb) = create(s, "b@x", true, 0, &l).await.unwrap();
        assert!(
            sb.admin && !sb.csrf.is_empty() && sb.id != b,
            "the store keeps no token"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (c, _) = create(s, "c@x", false, 0, &l).await.unwrap();
        assert!(
            get(s, &a, &l).await.unwrap().is_none(),
            "the least recently used went"
        );
        assert!(get(s, &b, &l).await.unwrap().is_some() && get(s, &c, &l).await.unwrap().is_some());
        remove(s, &b).await.unwrap();
        assert!(get(s, &b, &l).await.unwrap().is_none());
        let short = limits(1, 10);
        let (d, _) = create(s, "d@x", false, 0, &short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(get(s, &d, &short).await.unwrap().is_none(), "idle too long");
        let many = limits(60_000, 1000);
        let first = create(s, "e@x", false, 0, &many).await.unwrap().0;
        for _ in 0..PER_ACCOUNT {
            tokio::time::sleep(Duration::from_millis(2)).await;
            create(s, "e@x", false, 0, &many).await.unwrap();
        }
        assert!(
            get(s, &first, &many).await.unwrap().is_none(),
            "an account's oldest session makes room"
        );
        assert!(
            get(s, &c, &l).await.unwrap().is_some(),
            "other accounts' sessions stay"
        );
    }

    #[test]
    fn cookies_are_found_and_strict() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("a=1; {COOKIE}=tok; b=2").parse().unwrap(),
        );
        assert_eq!(token_of(&h).as_deref(), Some("tok"));
        let c = cookie(Some("tok"), Duration::from_secs(60));
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
