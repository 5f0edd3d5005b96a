//! Failed-login counting per client IP and per account, with temporary lockouts that grow:
//! each lockout within a day of the last lasts twice as long, up to a maximum.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Record {
    failures: u32,
    window_start: Option<Instant>,
    locked_until: Option<Instant>,
    /// Lockouts so far, and when the last one began.
    bans: u32,
    last_ban: Option<Instant>,
}

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    max_lockout: Duration,
    ips: Mutex<HashMap<IpAddr, Record>>,
    accounts: Mutex<HashMap<String, Record>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Self {
        Self::with_max(
            max_failures,
            window,
            lockout,
            lockout.max(Duration::from_secs(86400)),
        )
    }

    pub fn with_max(
        max_failures: u32,
        window: Duration,
        lockout: Duration,
        max_lockout: Duration,
    ) -> Self {
        LoginLimiter {
            max_failures: max_failures.max(1),
            window,
            lockout,
            max_lockout: max_lockout.max(lockout),
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
                    || r.last_ban.is_some_and(|b| now - b < DAY)
            });
        }
        let r = map.entry(key).or_default();
        if r.window_start.is_none_or(|s| now - s > self.window) {
            r.window_start = Some(now);
            r.failures = 0;
        }
        r.failures += 1;
        if r.failures >= self.max_failures {
            if r.last_ban.is_none_or(|b| now - b > DAY) {
                r.bans = 0;
            }
            let d = self
                .lockout
                .saturating_mul(1 << r.bans.min(16))
                .min(self.max_lockout);
            r.bans += 1;
            r.last_ban = Some(now);
            r.locked_until = Some(now + d);
            r.failures = 0;
            r.window_start = None;
        }
    }

    pub fn success(&self, ip: IpAddr, account: &str) {
        let _ = ip;
        self.accounts.lock().unwrap().remove(account);
    }
}

const DAY: Duration = Duration::from_secs(86400);

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

    #[test]
    fn lockouts_grow_to_the_maximum() {
        let l = LoginLimiter::with_max(
            1,
            Duration::from_secs(60),
            Duration::from_millis(20),
            Duration::from_millis(50),
        );
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let mut waits = Vec::new();
        for _ in 0..4 {
            l.failure(ip, "");
            let w = l.ip_locked(ip).unwrap();
            waits.push(w.as_millis());
            std::thread::sleep(w + Duration::from_millis(5));
        }
        assert!(
            waits[0] <= 20 && waits[1] > 20 && waits[1] <= 40,
            "{waits:?}"
        );
        assert!(waits[2] > 40 && waits[3] <= 50, "{waits:?}");
    }
}
