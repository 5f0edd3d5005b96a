//! Abuse limits shared by all SMTP listeners: messages and recipients per logged-in user per
//! hour, and greylisting (RFC 6647) of (network, sender, recipient) triples on the MX.
//! Memory stays bounded: old entries are dropped when a map grows large.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 200_000;
/// A triple that got through is let through at once for this long.
const GREYLIST_PASS: Duration = Duration::from_secs(35 * 86400);
/// A triple whose sender never came back is forgotten after this.
const GREYLIST_FORGET: Duration = Duration::from_secs(86400);

struct Window {
    start: Instant,
    messages: u32,
    recipients: u32,
}

struct Triple {
    first: Instant,
    passed: Option<Instant>,
}

#[derive(Default)]
pub struct Abuse {
    hourly: Mutex<HashMap<String, Window>>,
    greylist: Mutex<Greylist>,
}

#[derive(Default)]
struct Greylist {
    triples: HashMap<(String, String, String), Triple>,
    pruned: Option<Instant>,
}

/// Why a limit said no, and until when.
#[derive(Debug, PartialEq)]
pub struct Wait {
    pub count: u32,
    pub left: Duration,
}

impl Abuse {
    fn count(&self, who: &str, max: u32, recipient: bool) -> Result<(), Wait> {
        if max == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut m = self.hourly.lock().unwrap();
        if m.len() > MAX_ENTRIES {
            m.retain(|_, w| now - w.start < HOUR);
        }
        let w = m.entry(who.to_ascii_lowercase()).or_insert(Window {
            start: now,
            messages: 0,
            recipients: 0,
        });
        if now - w.start >= HOUR {
            *w = Window {
                start: now,
                messages: 0,
                recipients: 0,
            };
        }
        let n = if recipient {
            &mut w.recipients
        } else {
            &mut w.messages
        };
        if *n >= max {
            return Err(Wait {
                count: *n,
                left: HOUR.saturating_sub(now - w.start),
            });
        }
        *n += 1;
        Ok(())
    }

    /// One more message from `who` this hour, or how long until it may send again.
    pub fn message(&self, who: &str, max: u32) -> Result<(), Wait> {
        self.count(who, max, false)
    }

    pub fn recipient(&self, who: &str, max: u32) -> Result<(), Wait> {
        self.count(who, max, true)
    }

    /// `None` when the triple may pass; else how long until its retry is accepted.
    pub fn greylist(
        &self,
        ip: IpAddr,
        from: &str,
        rcpt: &str,
        delay: Duration,
    ) -> Option<Duration> {
        let now = Instant::now();
        let key = (
            network(ip),
            from.to_ascii_lowercase(),
            rcpt.to_ascii_lowercase(),
        );
        let mut g = self.greylist.lock().unwrap();
        // Pruned at most once a minute; when still full, new triples pass untracked rather
        // than grow the table (a flood of made-up senders costs no memory).
        if g.triples.len() >= MAX_ENTRIES && g.pruned.is_none_or(|p| now - p > MINUTE) {
            g.triples.retain(|_, t| match t.passed {
                Some(p) => now - p < GREYLIST_PASS,
                None => now - t.first < GREYLIST_FORGET,
            });
            g.pruned = Some(now);
        }
        if g.triples.len() >= MAX_ENTRIES && !g.triples.contains_key(&key) {
            return None;
        }
        let t = g.triples.entry(key).or_insert(Triple {
            first: now,
            passed: None,
        });
        if let Some(p) = t.passed
            && now - p < GREYLIST_PASS
        {
            t.passed = Some(now);
            return None;
        }
        if now - t.first > GREYLIST_FORGET {
            t.first = now;
        }
        let waited = now - t.first;
        if waited >= delay {
            t.passed = Some(now);
            None
        } else {
            Some(delay - waited)
        }
    }
}

/// Senders' servers retry from other addresses of their pool: a /24 (IPv4) or /64 (IPv6).
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}", o[0], o[1], o[2])
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
        }
    }
}

/// "in 12 minutes", for replies that say until when.
pub fn in_words(d: Duration) -> String {
    let s = d.as_secs().max(1);
    if s < 90 {
        format!("in {s} seconds")
    } else {
        format!("in {} minutes", s.div_ceil(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_counts_per_user() {
        let a = Abuse::default();
        assert!(a.message("Alice@x.test", 2).is_ok());
        assert!(a.message("alice@x.test", 2).is_ok());
        let w = a.message("alice@x.test", 2).unwrap_err();
        assert_eq!(w.count, 2);
        assert!(w.left <= HOUR && w.left > HOUR - Duration::from_secs(5));
        assert!(a.message("bob@x.test", 2).is_ok());
        assert!(a.recipient("alice@x.test", 1).is_ok());
        assert!(a.recipient("alice@x.test", 1).is_err());
        assert!(a.message("carol@x.test", 0).is_ok(), "0 is no limit");
    }

    #[test]
    fn greylist_by_network() {
        let a = Abuse::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let d = Duration::from_millis(50);
        assert!(a.greylist(ip, "s@far.test", "r@x.test", d).is_some());
        assert!(
            a.greylist(ip, "s@far.test", "r@x.test", d).is_some(),
            "too soon"
        );
        std::thread::sleep(d);
        let other: IpAddr = "192.0.2.99".parse().unwrap();
        assert!(
            a.greylist(other, "S@far.test", "r@x.test", d).is_none(),
            "same /24, later"
        );
        assert!(
            a.greylist(ip, "s@far.test", "r@x.test", d).is_none(),
            "passed stays passed"
        );
        assert!(
            a.greylist(ip, "t@far.test", "r@x.test", d).is_some(),
            "another sender"
        );
    }
}
