//! DKIM signing keys in the data directory (`dkim/DOMAIN.SELECTOR.pem`): made for a new domain
//! or a rotation, under a selector named by the month, newest signing.

use std::path::Path;

use anyhow::bail;
use base64::Engine;
use postern_config::Config;

use crate::setup::write_private;

/// "p" + year and month, e.g. p202611: a new selector per rotation month.
pub fn selector() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = now / 86400;
    let (y, m) = civil_year_month(days as i64);
    format!("p{y:04}{m:02}")
}

/// Days since 1970-01-01 to (year, month), proleptic Gregorian.
fn civil_year_month(days: i64) -> (i64, u32) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m)
}

/// A new key: "rsa" (2048 bits) or "ed25519" (RFC 8463); PKCS#8 PEM and its DNS record.
pub fn generate(algorithm: &str) -> anyhow::Result<(String, String)> {
    let pem = match algorithm {
        "rsa" => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
            key.to_pkcs8_pem(LineEnding::LF)?.to_string()
        }
        "ed25519" => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for chunk in body.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(chunk).unwrap_or(""));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            pem
        }
        other => bail!("unknown algorithm {other:?}; use rsa or ed25519"),
    };
    let record = postern_doctor::records::dkim_record_of(&pem)
        .ok_or_else(|| anyhow::anyhow!("key generation failed"))?;
    Ok((pem, record))
}

/// A key made by [`rotate`], and where to publish it.
pub struct Rotated {
    pub domain: String,
    pub selector: String,
    /// The TXT record's value.
    pub record: String,
}

/// A new key for `domain` under a new selector; a running server signs with it once reloaded.
pub fn rotate(cfg: &Config, domain: &str, algorithm: &str) -> anyhow::Result<Rotated> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let dir = cfg.data_dir.join("dkim");
    std::fs::create_dir_all(&dir)?;
    // Selectors sort by age, so the newest signs: p202611, then p202611b, p202611c...
    let base = selector();
    let existing = existing_selectors(&dir, &domain);
    let mut selector = base.clone();
    let mut suffix = b'a';
    while existing.iter().any(|s| *s >= selector) {
        suffix += 1;
        if suffix > b'z' {
            bail!("too many DKIM keys made this month for {domain}");
        }
        selector = format!("{base}{}", suffix as char);
    }
    let (pem, record) = generate(algorithm)?;
    write_private(&dir.join(format!("{domain}.{selector}.pem")), &pem)?;
    Ok(Rotated {
        domain,
        selector,
        record,
    })
}

fn existing_selectors(dir: &Path, domain: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix(&format!("{domain}."))
                        .and_then(|s| s.strip_suffix(".pem"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}
