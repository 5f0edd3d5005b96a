//! Abuse limits shared by all SMTP listeners: messages and recipients per logged-in user per
//! hour, and greylisting (RFC 6647) of (network, sender, recipient) triples on the MX.
//! The counts live in the store, so every node on one database applies the same limits; when
//! the store cannot keep them, mail is let through rather than refused for that reason.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postern_store::{Counter, SharedStore, now_ms};

const HOUR: i64 = 3_600_000;
/// A triple that got through is let through at once for this long.
const GREYLIST_PASS: i64 = 35 * 86_400_000;
/// A triple whose sender never came back is forgotten after this.
const GREYLIST_FORGET: i64 = 86_400_000;

pub struct Abuse {
    store: SharedStore,
}

/// Why a limit said no, and until when.
#[derive(Debug, PartialEq)]
pub struct Wait {
    pub count: u32,
    pub left: Duration,
}

impl Abuse {
    pub fn new(store: SharedStore) -> Self {
        Abuse { store }
    }

    async fn count(&self, key: String, max: u32) -> Result<(), Wait> {
        if max == 0 {
            return Ok(());
        }
        let now = now_ms();
        let refused = AtomicBool::new(false);
        let step = |c: Option<Counter>| {
            let mut c = c.filter(|c| now - c.since < HOUR).unwrap_or(Counter {
                since: now,
                expires: now + HOUR,
                ..Default::default()
            });
            let full = c.count >= max;
            refused.store(full, Ordering::Relaxed);
            if !full {
                c.count += 1;
            }
            Some(c)
        };
        match self.store.counter_update(&key, &step).await {
            Ok(Some(c)) if refused.load(Ordering::Relaxed) => Err(Wait {
                count: c.count,
                left: Duration::from_millis((c.since + HOUR - now).max(0) as u64),
            }),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(%key, error = %e, "sending limits unavailable");
                Ok(())
            }
        }
    }

    /// One more message from `who` this hour, or how long until it may send again.
    pub async fn message(&self, who: &str, max: u32) -> Result<(), Wait> {
        self.count(format!("hourly-messages:{}", who.to_ascii_lowercase()), max)
            .await
    }

    pub async fn recipient(&self, who: &str, max: u32) -> Result<(), Wait> {
        self.count(
            format!("hourly-recipients:{}", who.to_ascii_lowercase()),
            max,
        )
        .await
    }

    /// `None` when the triple may pass; else how long until its retry is accepted.
    pub async fn greylist(
        &self,
        ip: IpAddr,
        from: &str,
        rcpt: &str,
        delay: Duration,
    ) -> Option<Duration> {
        let now = now_ms();
        let delay = delay.as_millis() as i64;
        let key = format!(
            "greylist:{}|{}|{}",
            network(ip),
            from.to_ascii_lowercase(),
            rcpt.to_ascii_lowercase()
        );
        // `since`: first seen; `at`: last let through.
        let step = |c: Option<Counter>| {
            let mut t = c.unwrap_or(Counter {
                since: now,
                ..Default::default()
            });
            // Let through: it passed before (and recently), or it waited long enough now.
            let passes = (t.at > 0 && now - t.at < GREYLIST_PASS) || now - t.since >= delay;
            t.at = if passes { now } else { 0 };
            t.expires = if t.at > 0 {
                t.at + GREYLIST_PASS
            } else {
                t.since + GREYLIST_FORGET
            };
            Some(t)
        };
        match self.store.counter_update(&key, &step).await {
            Ok(Some(t)) if t.at == 0 => Some(Duration::from_millis(
                (delay - (now - t.since)).max(1) as u64,
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "greylisting unavailable: mail let through");
                None
            }
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
    use postern_store::embedded::{EmbeddedStore, Options};

    fn abuse(dir: &std::path::Path) -> Abuse {
        Abuse::new(EmbeddedStore::open(dir, Options::default()).unwrap())
    }

    #[tokio::test]
    async fn hourly_counts_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let a = abuse(dir.path());
        assert!(a.message("Alice@x.test", 2).await.is_ok());
        assert!(a.message("alice@x.test", 2).await.is_ok());
        let w = a.message("alice@x.test", 2).await.unwrap_err();
        assert_eq!(w.count, 2);
        let hour = Duration::from_millis(HOUR as u64);
        assert!(w.left <= hour && w.left > hour - Duration::from_secs(5));
        assert!(a.message("bob@x.test", 2).await.is_ok());
        assert!(a.recipient("alice@x.test", 1).await.is_ok());
        assert!(a.recipient("alice@x.test", 1).await.is_err());
        assert!(a.message("carol@x.test", 0).await.is_ok(), "0 is no limit");
    }

    #[tokio::test]
    async fn greylist_by_network() {
        let dir = tempfile::tempdir().unwrap();
        let a = abuse(dir.path());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let d = Duration::from_millis(50);
        assert!(a.greylist(ip, "s@far.test", "r@x.test", d).await.is_some());
        assert!(
            a.greylist(ip, "s@far.test", "r@x.test", d).await.is_some(),
            "too soon"
        );
        tokio::time::sleep(d).await;
        let other: IpAddr = "192.0.2.99".parse().unwrap();
        assert!(
            a.greylist(other, "S@far.test", "r@x.test", d)
                .await
                .is_none(),
            "same /24, later"
        );
        assert!(
            a.greylist(ip, "s@far.test", "r@x.test", d).await.is_none(),
            "passed stays passed"
        );
        assert!(
            a.greylist(ip, "t@far.test", "r@x.test", d).await.is_some(),
            "another sender"
        );
    }
}
