//! Failed-login counting per client IP and per account, with temporary lockouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Record {
    failures: u32,
    window_start: Option<Instant>,
    locked_until: Option<Instant>,
}

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    ips: Mutex<HashMap<IpAddr, Record>>,
    accounts: Mutex<HashMap<String, Record>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Self {
        LoginLimiter {
            max_failures: max_failures.max(1),
            window,
            lockout,
            ips: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// How long the IP (or the account) stays locked out, if it is.
    pub fn locked(&self, ip: IpAddr, account: &str) -> Option<Duration> {
        let now = Instant::now();
        let ip_wait = Self::wait(self.ips.lock().unwrap().get(&ip), now);
        let acc_wait = Self::wait(self.accounts.lock().unwrap().get(account), now);
        ip_wait.max(acc_wait)
    }

    /// Whether this IP is locked out, whatever account it tries.
    pub fn ip_locked(&self, ip: IpAddr) -> Option<Duration> {
        Self::wait(self.ips.lock().unwrap().get(&ip), Instant::now())
    }

    fn wait(r: Option<&Record>, now: Instant) -> Option<Duration> {
        r.and_then(|r| r.locked_until)
            .filter(|&u| u > now)
            .map(|u| u - now)
    }

    pub fn failure(&self, ip: IpAddr, account: &str) {
        let now = Instant::now();
        self.bump(&mut self.ips.lock().unwrap(), ip, now);
        if !account.is_empty() {
            self.bump(&mut self.accounts.lock().unwrap(), account.to_string(), now);
        }
    }

    fn bump<K: std::hash::Hash + Eq>(&self, map: &mut HashMap<K, Record>, key: K, now: Instant) {
        if map.len() > 100_000 {
            // Bounded memory under a spray of addresses: drop records that no longer matter.
            map.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now)
                    || r.window_start.is_some_and(|s| now - s < self.window)
            });
        }
        let r = map.entry(key).or_default();
        if r.window_start.is_none_or(|s| now - s > self.window) {
            r.window_start = Some(now);
            r.failures = 0;
        }
        r.failures += 1;
        if r.failures >= self.max_failures {
            r.locked_until = Some(now + self.lockout);
            r.failures = 0;
            r.window_start = None;
        }
    }

    pub fn success(&self, ip: IpAddr, account: &str) {
        let _ = ip;
        self.accounts.lock().unwrap().remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures() {
        let l = LoginLimiter::new(3, Duration::from_secs(60), Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        l.failure(ip, "a@x.test");
        l.failure(ip, "b@x.test");
        assert!(l.locked(ip, "c@x.test").is_none());
        l.failure(ip, "c@x.test");
        assert!(l.locked(ip, "d@x.test").is_some(), "the IP is locked");
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(l.locked(other, "d@x.test").is_none());
        for _ in 0..3 {
            l.failure(other, "victim@x.test");
        }
        let third: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(
            l.locked(third, "victim@x.test").is_some(),
            "the account is locked"
        );
    }
}
