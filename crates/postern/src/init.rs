//! `postern init` and `postern quickstart`: a new server with everything it needs.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use postern_config::{Config, InitValues};
use postern_directory::admin::AdminRequest;
use postern_directory::{Directory, validate_new_address};
use postern_store::Store;
use postern_store::embedded::{EmbeddedStore, Options};

use crate::admin_cmd::directory_config;
use crate::cli::{InitArgs, QuickstartArgs};

pub struct Initialized {
    pub config_path: PathBuf,
}

fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub fn dkim_selector() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // "p" + year and month, e.g. p202611: a new selector per rotation month.
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

/// A new DKIM key for `domain` under a new selector; prints the record to publish.
pub async fn dkim_rotate(cfg: &Config, domain: &str, algorithm: &str) -> anyhow::Result<()> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let dir = cfg.data_dir.join("dkim");
    std::fs::create_dir_all(&dir)?;
    // Selectors sort by age, so the newest signs: p202611, then p202611b, p202611c...
    let base = dkim_selector();
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
    let (pem, record) = match algorithm {
        "rsa" => generate_dkim_key()?,
        "ed25519" => generate_ed25519_key()?,
        other => bail!("unknown algorithm {other:?}; use rsa or ed25519"),
    };
    write_private(&dir.join(format!("{domain}.{selector}.pem")), &pem)?;
    // A running server signs with the new key from now on.
    let _ = crate::control::request(&cfg.data_dir, &AdminRequest::Reload).await;
    println!("New DKIM key for {domain}, selector {selector}. Publish this record:");
    println!("  {selector}._domainkey.{domain}.  TXT  \"{record}\"");
    println!(
        "Keep the old selector's record published for a few days, until mail signed with it is delivered."
    );
    Ok(())
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

/// An Ed25519 DKIM key (RFC 8463), PKCS#8 PEM, and its record.
pub fn generate_ed25519_key() -> anyhow::Result<(String, String)> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let record = format!(
        "v=DKIM1; k=ed25519; p={}",
        b64.encode(pair.public_key().as_ref())
    );
    Ok((pem, record))
}

/// A 2048-bit RSA DKIM key (PKCS#8 PEM) and its DNS record value.
pub fn generate_dkim_key() -> anyhow::Result<(String, String)> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?.to_string();
    let spki = key.to_public_key().to_public_key_der()?;
    let p = base64::engine::general_purpose::STANDARD.encode(spki.as_bytes());
    Ok((pem, format!("v=DKIM1; k=rsa; p={p}")))
}

fn canonical_dir(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    let p = p.canonicalize()?;
    let probe = p.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", p.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(p)
}

pub async fn init(args: InitArgs) -> anyhow::Result<Initialized> {
    let domain = args
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if validate_new_address(&format!("postmaster@{domain}")).is_err() {
        bail!("{domain:?} is not a domain name (e.g. example.com)");
    }
    let hostname = args.hostname.unwrap_or_else(|| format!("mail.{domain}"));
    if !postern_config::is_hostname(&hostname) {
        bail!("{hostname:?} is not a host name (e.g. mail.{domain})");
    }
    if args.listen_ip.parse::<std::net::IpAddr>().is_err() {
        bail!("--listen-ip {:?} is not an IP address", args.listen_ip);
    }
    if args.port_offset > 55000 {
        bail!(
            "--port-offset {} would put ports above 65535",
            args.port_offset
        );
    }
    let dir = canonical_dir(&args.data_dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let config_path = dir.join("postern.toml");
    if config_path.exists() {
        bail!(
            "{} already exists; remove it or choose another --data-dir",
            config_path.display()
        );
    }
    let tls_dir = dir.join("tls");
    let dkim_dir = dir.join("dkim");
    std::fs::create_dir_all(&tls_dir)?;
    std::fs::create_dir_all(&dkim_dir)?;
    let cert = tls_dir.join("cert.pem");
    let key = tls_dir.join("key.pem");
    if !cert.exists() {
        let (c, k) = postern_net::generate_self_signed(&hostname)?;
        let _ = std::fs::remove_file(&key);
        std::fs::write(&cert, c)?;
        write_private(&key, &k)?;
    }
    let selector = dkim_selector();
    let dkim_path = dkim_dir.join(format!("{domain}.{selector}.pem"));
    let dkim_record = if dkim_path.exists() {
        None
    } else {
        let (pem, record) = generate_dkim_key()?;
        write_private(&dkim_path, &pem)?;
        Some(record)
    };
    let text = postern_config::render_init(&InitValues {
        hostname: &hostname,
        data_dir: &dir,
        cert: &cert,
        key: &key,
        listen_ip: &args.listen_ip,
        port_offset: args.port_offset,
    });
    let config = Config::parse(&text, &config_path, &dir)?;
    // The domain first: a half-done init leaves no config behind.
    {
        let store = EmbeddedStore::open(&config.data_dir, Options::default())?;
        let d = Directory::new(store.clone(), directory_config(&config));
        let r = d
            .admin(AdminRequest::DomainAdd {
                name: domain.clone(),
            })
            .await;
        store.close().await?;
        match r {
            Ok(_) => {}
            Err(e) if e.message.contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    write_private(&config_path, &text)?;

    println!("Postern is set up in {}", dir.display());
    println!("  config       {}", config_path.display());
    println!(
        "  certificate  {} (self-signed for {hostname}; replace it with a real one, then send SIGHUP)",
        cert.display()
    );
    println!("  DKIM key     {}", dkim_path.display());
    println!();
    println!("DNS records to publish for {domain}:");
    println!("  {domain}.  MX  10 {hostname}.");
    println!("  {hostname}.  A  <this server's public IPv4 address>   (and AAAA for IPv6)");
    println!("  {domain}.  TXT  \"v=spf1 mx -all\"");
    if let Some(r) = &dkim_record {
        println!("  {selector}._domainkey.{domain}.  TXT  \"{r}\"");
    }
    println!("  _dmarc.{domain}.  TXT  \"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\"");
    println!(
        "  and a PTR record for the server's IP pointing to {hostname} (ask your hosting provider)"
    );
    println!();
    println!("Next steps:");
    println!(
        "  postern -c {} user add you@{domain} --password-stdin",
        config_path.display()
    );
    println!("  postern -c {} serve", config_path.display());
    Ok(Initialized { config_path })
}

fn generate_password() -> String {
    // No look-alikes (0/O, 1/l/I), so it can be read aloud and typed.
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub async fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
    let address = validate_new_address(&args.address)?;
    let domain = postern_directory::domain_of(&address).to_string();
    let config_path = args.data_dir.join("postern.toml");
    let (config_path, cfg) = if config_path.exists() {
        let cfg = Config::load(&config_path)?;
        (config_path, cfg)
    } else {
        let port_offset = args
            .port_offset
            .unwrap_or(if is_root() { 0 } else { 10000 });
        let init = init(InitArgs {
            domain: domain.clone(),
            hostname: args.hostname.clone(),
            data_dir: args.data_dir.clone(),
            listen_ip: args.listen_ip.clone(),
            port_offset,
        })
        .await?;
        // The first account administers the server in the web interface too.
        let text = std::fs::read_to_string(&init.config_path)?;
        let admins = format!("admins = [\"{address}\"]");
        std::fs::write(&init.config_path, text.replacen("admins = []", &admins, 1))?;
        let cfg = Config::load(&init.config_path)?;
        (init.config_path, cfg)
    };
    let password = generate_password();
    let created = {
        let store = crate::open_store::open(&cfg).await?.store;
        let dir = Directory::new(store.clone(), directory_config(&cfg));
        let _ = dir
            .admin(AdminRequest::DomainAdd {
                name: domain.clone(),
            })
            .await;
        let r = dir
            .admin(AdminRequest::UserAdd {
                address: address.clone(),
                password: password.clone(),
                quota: None,
            })
            .await;
        store.close().await?;
        match r {
            Ok(_) => true,
            Err(e) if e.message.contains("already exists") => false,
            Err(e) => return Err(e.into()),
        }
    };
    println!();
    println!("Your mail account is ready. Type these into your mail program:");
    println!();
    println!("  Email address   {address}");
    println!("  Username        {address}");
    if created {
        println!("  Password        {password}");
        println!(
            "                  (shown only now; change it with: postern -c {} user passwd {address} --password-stdin)",
            config_path.display()
        );
    } else {
        println!("  Password        (unchanged; the account existed already)");
    }
    print!("{}", settings_table(&cfg));
    if let Some(port) = cfg
        .listen
        .https
        .first()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p)
    {
        println!();
        if cfg
            .http
            .admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&address))
        {
            println!("Manage the server in your browser (log in with this address and password):");
        } else {
            println!(
                "Manage your account in your browser (log in with this address and password):"
            );
        }
        println!("  https://{}:{port}/admin", cfg.hostname);
        println!(
            "  (on this machine: https://127.0.0.1:{port}/admin; the certificate is self-signed)"
        );
    }
    println!();
    if args.no_serve {
        println!(
            "Start the server with: postern -c {} serve",
            config_path.display()
        );
        return Ok(());
    }
    crate::serve::serve(config_path, cfg).await
}

/// The incoming and outgoing server settings a person types by hand, from the listeners that
/// are actually configured (the same list autoconfig and the web page publish).
pub fn settings_table(cfg: &Config) -> String {
    use postern_config::settings::{Security, Service, endpoints};
    let eps = endpoints(cfg);
    let mut out = String::new();
    for (service, what, extra) in [
        (Service::Imap, "Incoming mail (IMAP)", ""),
        (Service::Pop3, "Incoming mail (POP3)", ""),
        (
            Service::Smtp,
            "Outgoing mail (SMTP)",
            ", authentication: normal password",
        ),
    ] {
        let mine: Vec<_> = eps.iter().filter(|e| e.service == service).collect();
        let Some(first) = mine.first() else { continue };
        out.push_str(&format!(
            "  {what:<22} server {}  port {}  security {}{extra}\n",
            first.host,
            first.port,
            first.security.label()
        ));
        for e in mine.iter().skip(1) {
            let how = match e.security {
                Security::StartTls => "with STARTTLS",
                Security::Tls => "with SSL/TLS",
            };
            out.push_str(&format!("  {:<22} (or port {} {how})\n", "", e.port));
        }
    }
    out
}
