//! Failed-login counting per client IP and per account, with temporary lockouts that grow:
//! each lockout within a day of the last lasts twice as long, up to a maximum.
//!
//! The counts live in the store, so every node on one database sees the same failures and
//! lockouts. When the store cannot keep them, logins are not refused for that reason.

use std::net::IpAddr;
use std::time::Duration;

use postern_store::{Counter, SharedStore, now_ms};

pub struct LoginLimiter {
    store: SharedStore,
    max_failures: u32,
    window: i64,
    lockout: Duration,
    max_lockout: Duration,
}

const DAY: i64 = 86_400_000;

impl LoginLimiter {
    pub fn new(
        store: SharedStore,
        max_failures: u32,
        window: Duration,
        lockout: Duration,
        max_lockout: Duration,
    ) -> Self {
        LoginLimiter {
            store,
            max_failures: max_failures.max(1),
            window: window.as_millis() as i64,
            lockout,
            max_lockout: max_lockout.max(lockout),
        }
    }

    /// How long the IP (or the account) stays locked out, if it is. A lockout found over is
    /// said so in the security log, once.
    pub async fn locked(&self, ip: IpAddr, account: &str, protocol: &str) -> Option<Duration> {
        let ip_wait = self.wait(&ip_key(ip), ip, account, protocol).await;
        let acc_wait = self
            .wait(&account_key(account), ip, account, protocol)
            .await;
        ip_wait.max(acc_wait)
    }

    /// Whether this IP is locked out, whatever account it tries.
    pub async fn ip_locked(&self, ip: IpAddr) -> Option<Duration> {
        self.wait(&ip_key(ip), ip, "", "").await
    }

    async fn wait(&self, key: &str, ip: IpAddr, account: &str, protocol: &str) -> Option<Duration> {
        let c = match self.store.counter_get(key).await {
            Ok(c) => c?,
            Err(e) => {
                tracing::warn!(%key, error = %e, "login limits unavailable");
                return None;
            }
        };
        let left = c.until - now_ms();
        if c.until > 0 && left <= 0 {
            // Over: marked so (the strikes stay, for the next lockout's length), and logged.
            let over = |c: Option<Counter>| c.map(|c| Counter { until: 0, ..c });
            if self.store.counter_update(key, &over).await.is_ok() {
                security_event("lockout ended", ip, protocol, account, scope(key));
            }
        }
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    pub async fn failure(&self, ip: IpAddr, account: &str, protocol: &str) {
        self.strike(&ip_key(ip), ip, account, protocol).await;
        if !account.is_empty() {
            self.strike(&account_key(account), ip, account, protocol)
                .await;
        }
    }

    async fn strike(&self, key: &str, ip: IpAddr, account: &str, protocol: &str) {
        let now = now_ms();
        let step = |c: Option<Counter>| Some(self.next(c, now));
        match self.store.counter_update(key, &step).await {
            Ok(Some(c)) if c.at == now && c.until > now => {
                let secs = ((c.until - now) as u64).div_ceil(1000);
                security_event(
                    "lockout started",
                    ip,
                    protocol,
                    account,
                    &format!("{} for {secs} s", scope(key)),
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%key, error = %e, "login failure not counted"),
        }
    }

    /// The record after one more failure at `now`.
    fn next(&self, c: Option<Counter>, now: i64) -> Counter {
        let mut c = c.unwrap_or_default();
        if c.count == 0 || now - c.since > self.window {
            c.since = now;
            c.count = 0;
        }
        c.count += 1;
        if c.count >= self.max_failures {
            if now - c.at > DAY {
                c.strikes = 0;
            }
            let d = self
                .lockout
                .saturating_mul(1 << c.strikes.min(16))
                .min(self.max_lockout);
            c.strikes += 1;
            c.at = now;
            c.until = now + d.as_millis() as i64;
            c.count = 0;
        }
        // Kept while it still matters: a running window, a lockout, or a lockout within a day.
        c.expires = (c.since + self.window)
            .max(c.until)
            .max(if c.strikes > 0 { c.at + DAY } else { 0 })
            .max(now + 1);
        c
    }

    pub async fn success(&self, ip: IpAddr, account: &str) {
        let _ = ip;
        let key = account_key(account);
        // Most logins succeed with nothing to forget: a read spares the write.
        if let Ok(None) = self.store.counter_get(&key).await {
            return;
        }
        if let Err(e) = self.store.counter_update(&key, &|_| None).await {
            tracing::warn!(%key, error = %e, "login failures not reset");
        }
    }
}

/// What a lockout key locks: the client's address or the account.
fn scope(key: &str) -> &'static str {
    if key.starts_with("login-ip:") {
        "client address"
    } else {
        "account"
    }
}

/// One line of the security log, in the fixed format fail2ban and its like read
/// (contrib/fail2ban): `security: EVENT ip=IP protocol=P account=A reason="..."`.
pub fn security_event(event: &str, ip: IpAddr, protocol: &str, account: &str, reason: &str) {
    let protocol = if protocol.is_empty() { "-" } else { protocol };
    let account: String = account
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .take(200)
        .collect();
    let account = if account.is_empty() {
        "-".into()
    } else {
        account
    };
    let reason = reason.replace('"', "'");
    tracing::warn!(
        "security: {event} ip={ip} protocol={protocol} account={account} reason=\"{reason}\""
    );
}

fn ip_key(ip: IpAddr) -> String {
    format!("login-ip:{ip}")
}

fn account_key(account: &str) -> String {
    format!("login-account:{}", account.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_store::embedded::{EmbeddedStore, Options};

    fn limiter(
        dir: &std::path::Path,
        max: u32,
        lockout: Duration,
        max_lockout: Duration,
    ) -> LoginLimiter {
        let store = EmbeddedStore::open(dir, Options::default()).unwrap();
        LoginLimiter::new(store, max, Duration::from_secs(60), lockout, max_lockout)
    }

    #[tokio::test]
    async fn locks_after_max_failures() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(
            dir.path(),
            3,
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        l.failure(ip, "a@x.test", "imap").await;
        l.failure(ip, "b@x.test", "imap").await;
        assert!(l.locked(ip, "c@x.test", "imap").await.is_none());
        l.failure(ip, "c@x.test", "imap").await;
        assert!(
            l.locked(ip, "d@x.test", "imap").await.is_some(),
            "the IP is locked"
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.locked(other, "d@x.test", "imap").await.is_none());
        for _ in 0..3 {
            l.failure(other, "victim@x.test", "imap").await;
        }
        let third: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(
            l.locked(third, "Victim@x.test", "imap").await.is_some(),
            "the account is locked"
        );
    }

    #[tokio::test]
    async fn lockouts_grow_to_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let l = limiter(
            dir.path(),
            1,
            Duration::from_millis(40),
            Duration::from_millis(100),
        );
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let mut waits = Vec::new();
        for _ in 0..4 {
            l.failure(ip, "", "imap").await;
            let w = l.ip_locked(ip).await.unwrap();
            waits.push(w.as_millis());
            tokio::time::sleep(w + Duration::from_millis(5)).await;
        }
        assert!(
            waits[0] <= 40 && waits[1] > 40 && waits[1] <= 80,
            "{waits:?}"
        );
        assert!(waits[2] > 80 && waits[3] <= 100, "{waits:?}");
    }
}
