//! Web sessions: a random token in a cookie (`__Host-` prefixed: HttpOnly, Secure,
//! SameSite=Strict, no Domain) names who logged in and with which role; every state change
//! made with it must also carry the session's CSRF token in `X-CSRF-Token`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;

pub const COOKIE: &str = "__Host-postern_session";

/// Sessions one account keeps at once (browsers, devices).
const PER_ACCOUNT: usize = 10;

#[derive(Debug, Clone)]
pub struct Session {
    pub address: String,
    pub admin: bool,
    pub csrf: String,
    /// A digest of the account's password hash at login: a session ends when the password
    /// changes, however it was changed.
    pub password: u64,
    created: Instant,
    used: Instant,
}

pub struct Limits {
    pub idle: Duration,
    pub max_age: Duration,
    pub max_sessions: usize,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// Every listener of the server shares one set of sessions.
pub static SESSIONS: LazyLock<Sessions> = LazyLock::new(Sessions::default);

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn alive(s: &Session, l: &Limits, now: Instant) -> bool {
    now.duration_since(s.used) < l.idle && now.duration_since(s.created) < l.max_age
}

impl Sessions {
    /// A new session; returns its token (for the cookie) and the session.
    pub fn create(
        &self,
        address: &str,
        admin: bool,
        password: u64,
        l: &Limits,
    ) -> (String, Session) {
        let now = Instant::now();
        let token = random_token();
        let s = Session {
            address: address.to_string(),
            admin,
            csrf: random_token(),
            password,
            created: now,
            used: now,
        };
        let mut map = self.map.lock().unwrap();
        // One account cannot push everyone else out: its own oldest sessions go first.
        let mut own: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, s)| s.address == address)
            .map(|(t, s)| (s.used, t.clone()))
            .collect();
        if own.len() >= PER_ACCOUNT {
            own.sort();
            for (_, t) in own.iter().take(own.len() + 1 - PER_ACCOUNT) {
                map.remove(t);
            }
        }
        if map.len() >= l.max_sessions.max(1) {
            map.retain(|_, s| alive(s, l, now));
        }
        while map.len() >= l.max_sessions.max(1) {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(token.clone(), s.clone());
        (token, s)
    }

    /// The live session of `token`, marked as used now.
    pub fn get(&self, token: &str, l: &Limits) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap();
        let s = map.get_mut(token)?;
        if !alive(s, l, now) {
            map.remove(token);
            return None;
        }
        s.used = now;
        Some(s.clone())
    }

    /// Keeps the session of `token` after its own password change.
    pub fn set_password(&self, token: &str, password: u64) {
        if let Some(s) = self.map.lock().unwrap().get_mut(token) {
            s.password = password;
        }
    }

    pub fn remove(&self, token: &str) {
        self.map.lock().unwrap().remove(token);
    }
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

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::default();
        let l = limits(60_000, 2);
        let (a, _) = s.create("a@x", false, 0, &l);
        let (b, _) = s.create("b@x", true, 0, &l);
        assert!(s.get(&a, &l).is_some());
        let (c, _) = s.create("c@x", false, 0, &l);
        assert!(s.get(&b, &l).is_none(), "the least recently used went");
        assert!(s.get(&a, &l).is_some() && s.get(&c, &l).is_some());
        s.remove(&a);
        assert!(s.get(&a, &l).is_none());
        let short = limits(1, 10);
        let (d, _) = s.create("d@x", false, 0, &short);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.get(&d, &short).is_none(), "idle too long");
        let many = limits(60_000, 1000);
        let first = s.create("e@x", false, 0, &many).0;
        for _ in 0..PER_ACCOUNT {
            s.create("e@x", false, 0, &many);
        }
        assert!(
            s.get(&first, &many).is_none(),
            "an account's oldest session makes room"
        );
        assert!(s.get(&c, &l).is_some(), "other accounts' sessions stay");
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
