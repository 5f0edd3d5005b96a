//! What the ACME manager knows, kept in `DATA_DIR/acme/state.json` so that `postern acme
//! status`, the doctor and the web admin tell the same story, with or without a server.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One certificate the server wants: its names, what it has on file, how the last try went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertState {
    /// The file stem under `acme/certs/`: the first name, or the domain the names belong to.
    pub id: String,
    pub names: Vec<String>,
    /// Of the certificate on file; 0 when none.
    pub not_before: i64,
    pub not_after: i64,
    /// When it is renewed: two thirds into its lifetime, or earlier when the CA says so.
    pub renew_at: i64,
    /// The CA's suggested renewal window opens (RFC 9773), when it publishes one.
    #[serde(default)]
    pub ari_start: Option<i64>,
    pub issued_at: i64,
    pub last_attempt: i64,
    pub last_error: Option<String>,
    /// What to do about the last error.
    pub fix: Option<String>,
    pub failures: u32,
    /// No order before this (backoff after failures).
    pub next_try: i64,
}

/// A name left out of the orders, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub enabled: bool,
    pub directory: String,
    pub challenge: String,
    pub certificates: Vec<CertState>,
    pub skipped: Vec<Skipped>,
    /// Unix seconds of the last check.
    pub checked: i64,
    /// A key made by `postern acme rollover`, used from the next `rollover --finish`.
    #[serde(default)]
    pub next_key: bool,
    /// `TLSA 3 1 1` data of the current key (and the next one), for DANE.
    #[serde(default)]
    pub tlsa: Vec<String>,
}

/// The status as the commands show it: the file, with what the config says now.
pub fn status(cfg: &postern_config::Config) -> Status {
    let mut s = read(&cfg.data_dir);
    s.enabled = cfg.acme.enabled;
    s.directory = cfg.acme.directory.clone();
    s.challenge = cfg.acme.challenge.clone();
    s.tlsa = crate::keys::tlsa_records(&cfg.data_dir)
        .into_iter()
        .map(|(d, which)| {
            format!(
                "_25._tcp.{}.  TLSA  3 1 1 {d}   ({which} key)",
                cfg.hostname
            )
        })
        .collect();
    s
}

pub fn acme_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

pub fn certs_dir(data_dir: &Path) -> PathBuf {
    acme_dir(data_dir).join("certs")
}

fn state_path(data_dir: &Path) -> PathBuf {
    acme_dir(data_dir).join("state.json")
}

/// The status on file; empty when nothing was ever tried.
pub fn read(data_dir: &Path) -> Status {
    std::fs::read(state_path(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(crate) fn write(data_dir: &Path, s: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&state_path(data_dir), &json, 0o644)
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl CertState {
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.enabled {
            writeln!(
                f,
                "ACME is off: set [acme] enabled = true (and contact) in the config, then restart."
            )?;
        } else {
            writeln!(f, "ACME: {} ({})", self.directory, self.challenge)?;
        }
        let now = now();
        if self.certificates.is_empty() && self.enabled {
            writeln!(
                f,
                "  no certificate yet: the server orders them when it runs"
            )?;
        }
        for c in &self.certificates {
            writeln!(f, "  {}", c.names.join(", "))?;
            if c.not_after > 0 {
                writeln!(
                    f,
                    "    valid until {} ({} days left), renewed from {}",
                    format_time(c.not_after),
                    c.days_left(now),
                    format_time(c.renew_at)
                )?;
            } else {
                writeln!(f, "    not issued yet")?;
            }
            if let Some(e) = &c.last_error {
                writeln!(
                    f,
                    "    last attempt {} failed: {e}",
                    format_time(c.last_attempt)
                )?;
                if let Some(fix) = &c.fix {
                    writeln!(f, "    fix: {fix}")?;
                }
                if c.next_try > now {
                    writeln!(f, "    next attempt {}", format_time(c.next_try))?;
                }
            }
        }
        for s in &self.skipped {
            writeln!(f, "  not requested: {}: {}", s.name, s.reason)?;
        }
        for t in &self.tlsa {
            writeln!(f, "  DANE: {t}")?;
        }
        if self.next_key {
            writeln!(
                f,
                "  a new key waits (postern acme rollover): publish its TLSA record, then run postern acme rollover --finish"
            )?;
        }
        Ok(())
    }
}
