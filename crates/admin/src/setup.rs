//! A new server with everything it needs (`postern init`), and a first account for it
//! (`postern quickstart`): configuration, certificate, DKIM key, domain, and what to tell the
//! person setting it up.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use postern_config::{Config, InitValues};
use postern_directory::{Directory, DirectoryConfig, validate_new_address};
use postern_store::Store;
use postern_store::embedded::{EmbeddedStore, Options};

use crate::{Admin, AdminRequest, dkim};

/// Writes a new file only its owner may read.
pub(crate) fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
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

fn canonical_dir(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    let p = p.canonicalize()?;
    let probe = p.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", p.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(p)
}

/// What `postern init` is asked for.
pub struct InitOptions {
    pub domain: String,
    /// Default: mail.DOMAIN.
    pub hostname: Option<String>,
    pub data_dir: PathBuf,
    pub listen_ip: String,
    /// Added to every standard port.
    pub port_offset: u16,
    /// Certificates from Let's Encrypt (`[acme] enabled`).
    pub acme: bool,
}

/// A server set up by [`init`]; shown, it is what to do next.
pub struct Initialized {
    pub config_path: PathBuf,
    dir: PathBuf,
    domain: String,
    hostname: String,
    cert: PathBuf,
    dkim_path: PathBuf,
    selector: String,
    /// `None` when the key existed already.
    dkim_record: Option<String>,
    acme: bool,
    /// Made by quickstart, which adds the account and starts serving itself: no next steps.
    pub by_quickstart: bool,
}

pub async fn init(o: InitOptions) -> anyhow::Result<Initialized> {
    let domain = o.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if validate_new_address(&format!("postmaster@{domain}")).is_err() {
        bail!("{domain:?} is not a domain name (e.g. example.com)");
    }
    let hostname = o.hostname.unwrap_or_else(|| format!("mail.{domain}"));
    if !postern_config::is_hostname(&hostname) {
        bail!("{hostname:?} is not a host name (e.g. mail.{domain})");
    }
    if o.listen_ip.parse::<std::net::IpAddr>().is_err() {
        bail!("--listen-ip {:?} is not an IP address", o.listen_ip);
    }
    if o.port_offset > 55000 {
        bail!(
            "--port-offset {} would put ports above 65535",
            o.port_offset
        );
    }
    let dir = canonical_dir(&o.data_dir)?;
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
    let selector = dkim::selector();
    let dkim_path = dkim_dir.join(format!("{domain}.{selector}.pem"));
    let dkim_record = if dkim_path.exists() {
        None
    } else {
        let (pem, record) = dkim::generate("rsa")?;
        write_private(&dkim_path, &pem)?;
        Some(record)
    };
    let text = postern_config::render_init(&InitValues {
        hostname: &hostname,
        data_dir: &dir,
        cert: &cert,
        key: &key,
        listen_ip: &o.listen_ip,
        port_offset: o.port_offset,
        acme: o.acme,
    });
    let config = Config::parse(&text, &config_path, &dir)?;
    // The domain first: a half-done init leaves no config behind.
    {
        let store = EmbeddedStore::open(&config.data_dir, Options::default())?;
        let d = Directory::new(store.clone(), DirectoryConfig::from_config(&config));
        let r = Admin::local(d, Arc::new(config))
            .run(AdminRequest::DomainAdd {
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
    Ok(Initialized {
        config_path,
        dir,
        domain,
        hostname,
        cert,
        dkim_path,
        selector,
        dkim_record,
        acme: o.acme,
        by_quickstart: false,
    })
}

impl fmt::Display for Initialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (domain, hostname, config) = (&self.domain, &self.hostname, self.config_path.display());
        writeln!(f, "Postern is set up in {}", self.dir.display())?;
        writeln!(f, "  config       {config}")?;
        if self.acme {
            writeln!(
                f,
                "  certificate  {} (self-signed for {hostname} until Let's Encrypt issues one: [acme] in the config)",
                self.cert.display()
            )?;
        } else {
            writeln!(
                f,
                "  certificate  {} (self-signed for {hostname}; set [acme] enabled = true for a real one, or replace it and send SIGHUP)",
                self.cert.display()
            )?;
        }
        writeln!(f, "  DKIM key     {}", self.dkim_path.display())?;
        writeln!(f)?;
        writeln!(f, "DNS records to publish for {domain}:")?;
        writeln!(f, "  {domain}.  MX  10 {hostname}.")?;
        writeln!(
            f,
            "  {hostname}.  A  <this server's public IPv4 address>   (and AAAA for IPv6)"
        )?;
        writeln!(f, "  {domain}.  TXT  \"v=spf1 mx -all\"")?;
        if let Some(r) = &self.dkim_record {
            writeln!(f, "  {}._domainkey.{domain}.  TXT  \"{r}\"", self.selector)?;
        }
        writeln!(
            f,
            "  _dmarc.{domain}.  TXT  \"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\""
        )?;
        writeln!(
            f,
            "  and a PTR record for the server's IP pointing to {hostname} (ask your hosting provider)"
        )?;
        if self.by_quickstart {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(f, "Next steps:")?;
        writeln!(
            f,
            "  postern -c {config} user add you@{domain} --password-stdin"
        )?;
        writeln!(f, "  postern -c {config} serve")
    }
}

/// What `postern quickstart` is asked for.
pub struct QuickstartOptions {
    /// The first account.
    pub address: String,
    pub hostname: Option<String>,
    pub data_dir: PathBuf,
    pub listen_ip: String,
    /// Default: 0 as root, else 10000.
    pub port_offset: Option<u16>,
    pub acme: bool,
}

/// The server of `postern quickstart`: the one in the data directory, else a new one whose
/// first account administers it (then also what [`init`] made).
pub async fn quickstart_server(
    o: &QuickstartOptions,
) -> anyhow::Result<(PathBuf, Config, Option<Initialized>)> {
    let address = validate_new_address(&o.address)?;
    let domain = postern_directory::domain_of(&address).to_string();
    let config_path = o.data_dir.join("postern.toml");
    if config_path.exists() {
        let cfg = Config::load(&config_path)?;
        return Ok((config_path, cfg, None));
    }
    let port_offset = o.port_offset.unwrap_or(if is_root() { 0 } else { 10000 });
    let init = init(InitOptions {
        domain,
        hostname: o.hostname.clone(),
        data_dir: o.data_dir.clone(),
        listen_ip: o.listen_ip.clone(),
        port_offset,
        acme: o.acme,
    })
    .await?;
    // The first account administers the server in the web interface too.
    let text = std::fs::read_to_string(&init.config_path)?;
    let admins = format!("admins = [\"{address}\"]");
    std::fs::write(&init.config_path, text.replacen("admins = []", &admins, 1))?;
    let cfg = Config::load(&init.config_path)?;
    let init = Initialized {
        by_quickstart: true,
        ..init
    };
    Ok((init.config_path.clone(), cfg, Some(init)))
}

/// The account of `address` with a new password, and its domain; the password, or `None`
/// when the account existed already.
pub async fn first_account(admin: &Admin, address: &str) -> anyhow::Result<Option<String>> {
    let address = validate_new_address(address)?;
    let domain = postern_directory::domain_of(&address).to_string();
    let password = generate_password();
    let _ = admin.run(AdminRequest::DomainAdd { name: domain }).await;
    let r = admin
        .run(AdminRequest::UserAdd {
            address,
            password: password.clone(),
            quota: None,
        })
        .await;
    match r {
        Ok(_) => Ok(Some(password)),
        Err(e) if e.message.contains("already exists") => Ok(None),
        Err(e) => Err(e.into()),
    }
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

/// What `postern quickstart` tells the person: the account's settings for a mail program
/// and where to manage it; `password` is `None` when the account existed already.
pub fn welcome(
    cfg: &Config,
    config_path: &Path,
    address: &str,
    password: Option<&str>,
    serve: bool,
) -> String {
    use std::fmt::Write;
    let address = validate_new_address(address).unwrap_or_else(|_| address.to_string());
    let config = config_path.display();
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Your mail account is ready. Type these into your mail program:"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  Email address   {address}");
    let _ = writeln!(out, "  Username        {address}");
    match password {
        Some(p) => {
            let _ = writeln!(out, "  Password        {p}");
            let _ = writeln!(
                out,
                "                  (shown only now; change it with: postern -c {config} user passwd {address} --password-stdin)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  Password        (unchanged; the account existed already)"
            );
        }
    }
    out.push_str(&settings_table(cfg));
    if let Some(port) = cfg
        .listen
        .https
        .first()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p)
    {
        let _ = writeln!(out);
        if cfg
            .http
            .admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&address))
        {
            let _ = writeln!(
                out,
                "Manage the server in your browser (log in with this address and password):"
            );
        } else {
            let _ = writeln!(
                out,
                "Manage your account in your browser (log in with this address and password):"
            );
        }
        let _ = writeln!(out, "  https://{}:{port}/admin", cfg.hostname);
        let _ = writeln!(
            out,
            "  (on this machine: https://127.0.0.1:{port}/admin; the certificate is self-signed)"
        );
    }
    let _ = writeln!(out);
    if !serve {
        let _ = writeln!(out, "Start the server with: postern -c {config} serve");
    }
    out
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
