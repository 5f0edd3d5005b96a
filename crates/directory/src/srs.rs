//! Sender Rewriting Scheme: mail we forward to another domain leaves with an envelope sender
//! of ours (`srs0=HASH=TT=domain=local@our.domain`), so the destination's SPF check sees our
//! server sending for our domain; a bounce to that address comes back to us and goes on to
//! the original sender. The hash (keyed with a secret of this server) and the day stamp stop
//! anyone from using it to relay to addresses of their choosing.

use ring::hmac;

/// The key of this server, made on first use and kept in the data directory as `srs.key`
/// (it must outlive restarts: bounces come back days later). Empty when it cannot be kept.
pub fn secret(data_dir: &std::path::Path) -> Vec<u8> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("srs.key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() >= 32
    {
        return k;
    }
    if !data_dir.is_dir() {
        return Vec::new();
    }
    let mut k = vec![0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k).is_err() {
        return Vec::new();
    }
    // Written whole under another name, then linked into place: never seen half-written,
    // and if another process got there first, theirs is used.
    let tmp = data_dir.join(format!("srs.key.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&k)?;
            f.sync_all()
        })
        .and_then(|()| {
            // A short file left by an older, interrupted write is replaced.
            if std::fs::metadata(&path).is_ok_and(|m| m.len() < 32) {
                let _ = std::fs::remove_file(&path);
            }
            std::fs::hard_link(&tmp, &path)
        });
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => k,
        Err(_) => std::fs::read(&path)
            .ok()
            .filter(|k| k.len() >= 32)
            .unwrap_or_default(),
    }
}

/// How long a rewritten address is honoured for bounces.
const MAX_AGE_DAYS: u64 = 21;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub struct Srs {
    key: hmac::Key,
}

impl Srs {
    pub fn new(secret: &[u8]) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn hash(&self, stamp: &str, domain: &str, local: &str) -> String {
        let tag = hmac::sign(
            &self.key,
            format!("{stamp}={domain}={local}")
                .to_lowercase()
                .as_bytes(),
        );
        tag.as_ref()[..6]
            .iter()
            .map(|b| BASE32[(b & 31) as usize] as char)
            .collect()
    }

    /// `sender` rewritten as an address of `our_domain`; `day` is days since 1970. `None`
    /// for a sender whose domain could not be read back unambiguously (empty, or with '=').
    pub fn forward(&self, sender: &str, our_domain: &str, day: u64) -> Option<String> {
        let (local, domain) = sender.rsplit_once('@')?;
        if domain.is_empty() || domain.contains('=') || local.is_empty() {
            return None;
        }
        let stamp: String = [(day / 32) % 32, day % 32]
            .iter()
            .map(|&v| BASE32[v as usize] as char)
            .collect();
        let h = self.hash(&stamp, domain, local);
        let rewritten = format!("srs0={h}={stamp}={domain}={local}");
        // A longer local part would not come back to us (RFC 5321's 64 octets).
        (rewritten.len() <= 64).then(|| format!("{rewritten}@{our_domain}"))
    }

    /// The original sender behind a rewritten local part, if the hash is ours and the
    /// stamp at most 21 days old.
    pub fn reverse(&self, local_part: &str, day: u64) -> Option<String> {
        let rest = local_part
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("srs0="))
            .map(|_| &local_part[5..])?;
        let mut parts = rest.splitn(4, '=');
        let (h, stamp, domain, local) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if stamp.len() != 2 || domain.is_empty() || local.is_empty() {
            return None;
        }
        let expect = self.hash(stamp, domain, local);
        let given = h.to_ascii_lowercase();
        // Compared in constant time: the hash is what keeps this from being a relay.
        let diff = expect
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if given.len() != expect.len() || diff != 0 {
            return None;
        }
        let v = |c: u8| BASE32.iter().position(|&b| b == c.to_ascii_lowercase());
        let b = stamp.as_bytes();
        let then = (v(b[0])? * 32 + v(b[1])?) as u64;
        let age = (day % 1024 + 1024 - then) % 1024;
        (age <= MAX_AGE_DAYS).then(|| format!("{local}@{domain}"))
    }
}

pub fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_tamper_and_age() {
        let s = Srs::new(b"secret");
        let a = s
            .forward("Bob.Smith@far.test", "example.test", 20_000)
            .unwrap();
        assert_eq!(s.forward("a@b=c", "example.test", 20_000), None);
        let long = format!("{}@far.test", "x".repeat(50));
        assert_eq!(s.forward(&long, "example.test", 20_000), None);
        let (local, domain) = a.rsplit_once('@').unwrap();
        assert_eq!(domain, "example.test");
        assert!(local.starts_with("srs0="));
        assert_eq!(
            s.reverse(local, 20_000).as_deref(),
            Some("Bob.Smith@far.test")
        );
        // Case-insensitive, as our addresses are.
        assert_eq!(
            s.reverse(&local.to_lowercase(), 20_010).as_deref(),
            Some("bob.smith@far.test")
        );
        assert_eq!(s.reverse(local, 20_022), None, "too old");
        assert_eq!(Srs::new(b"other").reverse(local, 20_000), None);
        let forged = local.replace("far.test", "victim.test");
        assert_eq!(s.reverse(&forged, 20_000), None);
        assert_eq!(s.reverse("srs0=x", 20_000), None);
        assert_eq!(s.reverse("alice", 20_000), None);
    }
}
