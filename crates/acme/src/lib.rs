//! Certificates from an ACME CA (RFC 8555; Let's Encrypt): the server orders them for its
//! names, answers the CA's challenge on its own listeners (tls-alpn-01, RFC 8737, or
//! http-01), keeps them under `DATA_DIR/acme/`, renews them two thirds into their lifetime
//! (earlier when the CA's renewal information, RFC 9773, says so) and hands them to every
//! listener without a restart. A failed order keeps what is served, and is retried later.

mod files;
pub mod keys;
pub mod plan;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use postern_config::Config;
use postern_net::TlsStore;
use postern_store::SharedStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use state::{CertState, Status};
use state::{Skipped, certs_dir, now};

const DAY: i64 = 86_400;
/// Even with nothing due, DNS and the local domains are looked at again this often.
const RECHECK: i64 = 6 * 3600;

/// What `postern acme renew` and `rollover` ask of the running server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Order what is due (`force`: every certificate).
    Renew { force: bool },
    /// Step one of a key change: a new key, to publish beside the current one.
    Rollover,
    /// Step two: certificates for the new key, which becomes the key.
    RolloverFinish,
}

pub struct Manager {
    cfg: Arc<Config>,
    store: SharedStore,
    tls: Arc<TlsStore>,
    resolver: TokioResolver,
    /// One pass at a time: the timer's and one asked for by hand.
    busy: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
}

/// A failed order: what happened, and what to do about it.
struct Failure {
    error: String,
    fix: String,
    /// At least this long before the next try (the CA's rate limits).
    wait: i64,
}

impl Failure {
    fn new(error: impl Into<String>, fix: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            fix: fix.into(),
            wait: 0,
        }
    }
}

/// Facts of a certificate on file.
struct OnFile {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    der: Vec<u8>,
}

fn on_file(path: &Path) -> Option<OnFile> {
    let pem = std::fs::read(path).ok()?;
    let cert = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    use x509_parser::prelude::*;
    let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let (names, not_after) = postern_net::tls::cert_names(cert.as_ref());
    Some(OnFile {
        names,
        not_before: x.validity().not_before.timestamp(),
        not_after,
        der: cert.as_ref().to_vec(),
    })
}

/// What is known of the certificate `w` asks for, under its current names.
fn entry(st: &Status, w: &plan::Wanted) -> CertState {
    let mut c = st
        .certificates
        .iter()
        .find(|c| c.id == w.id)
        .cloned()
        .unwrap_or_default();
    c.id = w.id.clone();
    c.names = w.names.clone();
    c
}

fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

fn cert_path(data_dir: &Path, id: &str) -> PathBuf {
    certs_dir(data_dir).join(format!("{id}.pem"))
}

/// Words and a fix for an error of the ACME client.
fn explain(e: &instant_acme::Error, directory: &str) -> Failure {
    match e {
        instant_acme::Error::Api(p) => {
            let kind = p.r#type.as_deref().unwrap_or("");
            let detail = p.to_string();
            if kind.ends_with(":rateLimited") {
                Failure {
                    error: format!("the CA's rate limit: {detail}"),
                    fix: "Nothing to do: Postern tries again after the limit's window (hours). Use the staging directory while testing.".into(),
                    wait: 3 * 3600,
                }
            } else if kind.ends_with(":dns") || kind.ends_with(":connection") {
                Failure::new(
                    format!("the CA could not reach this server: {detail}"),
                    "Check that the names lead to this server in public DNS and that ports 443 (tls-alpn-01) or 80 (http-01) are open from the internet.",
                )
            } else if kind.ends_with(":unauthorized") || kind.ends_with(":incorrectResponse") {
                Failure::new(
                    format!("the CA refused the challenge: {detail}"),
                    "Another server answers for these names on port 443/80 (a proxy or an old host?): point them here, or change [acme] challenge.",
                )
            } else {
                Failure::new(
                    format!("the CA refused: {detail}"),
                    "Read the CA's message; postern acme renew tries again at once.",
                )
            }
        }
        instant_acme::Error::Timeout(_) => Failure::new(
            "the CA did not finish in time",
            "Nothing to do: Postern tries again later.",
        ),
        other => Failure::new(
            format!("cannot reach the ACME directory {directory}: {other}"),
            "Check the server's outbound HTTPS (port 443) and [acme] directory; for a test CA set [acme] ca_file.",
        ),
    }
}

impl Manager {
    pub fn new(
        cfg: Arc<Config>,
        store: SharedStore,
        tls: Arc<TlsStore>,
        resolver: TokioResolver,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            cfg,
            store,
            tls,
            resolver,
            busy: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// Orders and renews until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: postern_net::Shutdown) {
        loop {
            let next = {
                let _g = self.busy.lock().await;
                self.pass(false, &mut Vec::new()).await
            };
            let wait = Duration::from_secs((next - now()).clamp(1, RECHECK) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Does what `postern acme renew|rollover` asks; the lines say what happened.
    pub async fn act(&self, action: Action) -> Result<Vec<String>, String> {
        let _g = self.busy.lock().await;
        let dir = self.data_dir().to_path_buf();
        let mut lines = Vec::new();
        match action {
            Action::Renew { force } => {
                self.pass(force, &mut lines).await;
            }
            Action::Rollover => {
                let k = keys::make_next(&dir)?;
                let mut st = state::read(&dir);
                st.next_key = true;
                state::write(&dir, &st).map_err(|e| e.to_string())?;
                let host = &self.cfg.hostname;
                lines.push(format!(
                    "A new key is ready. Publish its TLSA record beside the current one:\n  _25._tcp.{host}.  TLSA  3 1 1 {}",
                    keys::tlsa_311(&k)
                ));
                lines.push("Wait until both have reached every resolver (twice the record's TTL), then run: postern acme rollover --finish".into());
                return Ok(lines);
            }
            Action::RolloverFinish => {
                if keys::next(&dir).is_none() {
                    return Err("no new key waits: run postern acme rollover first".into());
                }
                let failed = self.pass_with_next_key(&mut lines).await;
                if failed {
                    lines.push("The current key stays; fix the error and run postern acme rollover --finish again.".into());
                    return Err(lines.join("\n"));
                }
                keys::promote_next(&dir)?;
                let mut st = state::read(&dir);
                st.next_key = false;
                state::write(&dir, &st).map_err(|e| e.to_string())?;
                let k = keys::current(&dir)?;
                lines.push(format!(
                    "The new key is in use. Remove the old TLSA record; keep:\n  _25._tcp.{}.  TLSA  3 1 1 {}",
                    self.cfg.hostname,
                    keys::tlsa_311(&k)
                ));
            }
        }
        Ok(lines)
    }

    /// Wakes the timer (a local domain was added, say).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    async fn wanted(&self) -> (Vec<plan::Wanted>, Vec<Skipped>) {
        let domains: Vec<String> = match self.store.domain_list().await {
            Ok(d) => d.into_iter().map(|d| d.name).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "ACME: cannot list the local domains");
                Vec::new()
            }
        };
        let a = &self.cfg.acme;
        let host = self.cfg.hostname.to_ascii_lowercase();
        let names = plan::names(&host, &a.domains, &domains);
        let (names, skipped) = if a.check_dns {
            let public_ip = self.cfg.doctor.public_ip.parse().ok();
            plan::check_dns(&self.resolver, &host, public_ip, names).await
        } else {
            (names, Vec::new())
        };
        for s in &skipped {
            tracing::warn!(name = %s.name, reason = %s.reason, "ACME: name not requested");
        }
        (plan::group(&host, &names, &domains), skipped)
    }

    /// One look at every certificate, ordering what is due; returns when to look again.
    async fn pass(&self, force: bool, lines: &mut Vec<String>) -> i64 {
        let dir = self.data_dir().to_path_buf();
        let (wanted, skipped) = self.wanted().await;
        let old = state::read(&dir);
        let mut st = Status {
            enabled: true,
            directory: self.cfg.acme.directory.clone(),
            challenge: self.cfg.acme.challenge.clone(),
            skipped,
            next_key: old.next_key,
            ..Status::default()
        };
        let mut next = now() + RECHECK;
        let mut account = None;
        for w in &wanted {
            let mut c = entry(&old, w);
            let path = cert_path(&dir, &w.id);
            let file = on_file(&path);
            if let Some(f) = &file {
                c.not_before = f.not_before;
                c.not_after = f.not_after;
                c.renew_at = renew_at(f.not_before, f.not_after);
            }
            let covers = file
                .as_ref()
                .is_some_and(|f| w.names.iter().all(|n| f.names.contains(n)));
            let t = now();
            let mut due = force || !covers || t >= c.renew_at;
            if !due
                && let Some(f) = &file
                && let Some(acct) = self.account(&mut account).await.ok()
            {
                c.ari_start = ari_start(acct, &f.der).await;
                due = c.ari_start.is_some_and(|s| t >= s);
            }
            if due && !force && c.next_try > t {
                next = next.min(c.next_try);
                st.certificates.push(c);
                continue;
            }
            if !due {
                next = next.min(c.ari_start.unwrap_or(c.renew_at).min(c.renew_at));
                st.certificates.push(c);
                continue;
            }
            c.last_attempt = t;
            let result = match (keys::current(&dir), self.account(&mut account).await) {
                (Ok(key), Ok(acct)) => self.order(acct, w, &key).await,
                (Err(e), _) => Err(Failure::new(
                    format!("the certificate key: {e}"),
                    "Remove the broken acme/key.pem: a new key is made (publish its TLSA record).",
                )),
                (_, Err(f)) => Err(f),
            };
            match result {
                Ok(f) => {
                    self.installed(&mut c, &f, lines);
                    next = next.min(c.renew_at);
                }
                Err(f) => {
                    self.failed(&mut c, f, lines);
                    next = next.min(c.next_try);
                }
            }
            st.certificates.push(c);
        }
        st.checked = now();
        if let Err(e) = state::write(&dir, &st) {
            tracing::warn!(error = %e, "ACME: cannot write the status file");
        }
        if lines.is_empty() {
            lines.push(if wanted.is_empty() {
                "no names to request (see postern acme status)".into()
            } else {
                "nothing is due; --force renews anyway".into()
            });
        }
        next
    }

    /// Certificates for the next key, every one; true when one failed.
    async fn pass_with_next_key(&self, lines: &mut Vec<String>) -> bool {
        let dir = self.data_dir().to_path_buf();
        let Some(key) = keys::next(&dir) else {
            return true;
        };
        let (wanted, _) = self.wanted().await;
        let mut st = state::read(&dir);
        let mut account = None;
        let mut failed = false;
        let mut issued = Vec::new();
        for w in &wanted {
            let mut c = entry(&st, w);
            c.last_attempt = now();
            let r = match self.account(&mut account).await {
                Ok(acct) => self.order(acct, w, &key).await,
                Err(f) => Err(f),
            };
            match r {
                Ok(f) => {
                    self.installed(&mut c, &f, lines);
                    issued.push(c);
                }
                Err(f) => {
                    self.failed(&mut c, f, lines);
                    failed = true;
                    issued.push(c);
                }
            }
        }
        for c in issued {
            st.certificates.retain(|o| o.id != c.id);
            st.certificates.push(c);
        }
        let _ = state::write(&dir, &st);
        failed
    }

    fn installed(&self, c: &mut CertState, f: &OnFile, lines: &mut Vec<String>) {
        c.not_before = f.not_before;
        c.not_after = f.not_after;
        c.renew_at = renew_at(f.not_before, f.not_after);
        c.issued_at = now();
        c.last_error = None;
        c.fix = None;
        c.failures = 0;
        c.next_try = 0;
        c.ari_start = None;
        let msg = format!(
            "{}: issued, valid until {}",
            c.names.join(", "),
            state::format_time(c.not_after)
        );
        tracing::info!(names = %c.names.join(","), not_after = c.not_after, "ACME: certificate issued");
        match self.tls.reload() {
            Ok(()) => lines.push(msg),
            Err(e) => {
                tracing::warn!(error = %e, "ACME: the new certificate is not served");
                lines.push(format!("{msg}, but it cannot be served: {e}"));
            }
        }
    }

    fn failed(&self, c: &mut CertState, f: Failure, lines: &mut Vec<String>) {
        c.failures += 1;
        let backoff = (self.cfg.acme.retry_min.0 as i64)
            .saturating_mul(1 << (c.failures - 1).min(20))
            .min(DAY);
        c.next_try = now() + backoff.max(f.wait);
        tracing::warn!(
            names = %c.names.join(","),
            error = %f.error,
            next_try = c.next_try,
            "ACME: order failed; the certificate served stays"
        );
        lines.push(format!(
            "{}: failed: {} (fix: {})",
            c.names.join(", "),
            f.error,
            f.fix
        ));
        c.last_error = Some(f.error);
        c.fix = Some(f.fix);
    }

    /// The ACME account, made on first use and kept in `acme/account-*.json`.
    async fn account<'a>(&self, slot: &'a mut Option<Account>) -> Result<&'a Account, Failure> {
        if slot.is_none() {
            *slot = Some(self.load_account().await?);
        }
        Ok(slot.as_ref().expect("set above"))
    }

    async fn load_account(&self) -> Result<Account, Failure> {
        let a = &self.cfg.acme;
        let path = account_path(self.data_dir(), &a.directory);
        let builder = || {
            http_client(&a.ca_file)
                .map(Account::builder_with_http)
                .map_err(|e| {
                    Failure::new(
                        format!("cannot read [acme] ca_file: {e}"),
                        "Set ca_file to a PEM root certificate, or \"\".",
                    )
                })
        };
        if let Ok(b) = std::fs::read(&path)
            && let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&b)
        {
            return builder()?
                .from_credentials(creds)
                .await
                .map_err(|e| explain(&e, &a.directory));
        }
        let contact = a.contact_url();
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                a.directory.clone(),
                None,
            )
            .await
            .map_err(|e| explain(&e, &a.directory))?;
        let json = serde_json::to_vec(&creds).map_err(|e| Failure::new(e.to_string(), ""))?;
        files::write_atomic(&path, &json, 0o600).map_err(|e| {
            Failure::new(
                format!("cannot write {}: {e}", path.display()),
                "Check the data directory is writable.",
            )
        })?;
        tracing::info!(id = account.id(), "ACME: account created");
        Ok(account)
    }

    /// One order: challenges answered, CSR for `key`, certificate written; the file's facts.
    async fn order(
        &self,
        account: &Account,
        w: &plan::Wanted,
        key: &rcgen::KeyPair,
    ) -> Result<OnFile, Failure> {
        let r = self.order_inner(account, w, key).await;
        self.tls.challenges().clear();
        r
    }

    async fn order_inner(
        &self,
        account: &Account,
        w: &plan::Wanted,
        key: &rcgen::KeyPair,
    ) -> Result<OnFile, Failure> {
        let directory = &self.cfg.acme.directory;
        let err = |e: instant_acme::Error| explain(&e, directory);
        let ids: Vec<Identifier> = w.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(err)?;
        let kind = if self.cfg.acme.challenge == "http-01" {
            ChallengeType::Http01
        } else {
            ChallengeType::TlsAlpn01
        };
        let challenges = self.tls.challenges();
        let mut authz = order.authorizations();
        while let Some(a) = authz.next().await {
            let mut a = a.map_err(err)?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => {
                    return Err(Failure::new(
                        format!("the CA's authorization is {s:?}"),
                        "postern acme renew --force starts a new order.",
                    ));
                }
            }
            let name = a.identifier().to_string();
            let Some(mut ch) = a.challenge(kind.clone()) else {
                return Err(Failure::new(
                    format!(
                        "the CA offers no {} challenge for {name}",
                        self.cfg.acme.challenge
                    ),
                    "Change [acme] challenge to the other kind.",
                ));
            };
            let ka = ch.key_authorization();
            if kind == ChallengeType::Http01 {
                challenges.set_http(&ch.token, ka.as_str());
            } else {
                challenges
                    .set_alpn(&name, ka.digest().as_ref())
                    .map_err(|e| Failure::new(e.to_string(), ""))?;
            }
            ch.set_ready().await.map_err(err)?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.map_err(err)?;
        if status != OrderStatus::Ready {
            return Err(self.why_invalid(&mut order).await);
        }
        let mut params = rcgen::CertificateParams::new(w.names.clone())
            .map_err(|e| Failure::new(e.to_string(), ""))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(key)
            .map_err(|e| Failure::new(e.to_string(), ""))?;
        order.finalize_csr(csr.der()).await.map_err(err)?;
        let chain = order.poll_certificate(&retry).await.map_err(err)?;
        let path = cert_path(self.data_dir(), &w.id);
        let combined = format!("{}{}", key.serialize_pem(), chain);
        files::write_atomic(&path, combined.as_bytes(), 0o600).map_err(|e| {
            Failure::new(
                format!("cannot write {}: {e}", path.display()),
                "Check the data directory's disk space and permissions.",
            )
        })?;
        on_file(&path).ok_or_else(|| {
            Failure::new(
                "the CA's certificate cannot be read",
                "postern acme renew --force orders again.",
            )
        })
    }

    /// The challenge errors of an order that went invalid.
    async fn why_invalid(&self, order: &mut instant_acme::Order) -> Failure {
        let mut errors = Vec::new();
        let mut authz = order.authorizations();
        while let Some(Ok(a)) = authz.next().await {
            for c in &a.challenges {
                if let Some(p) = &c.error {
                    errors.push((a.identifier().to_string(), p.clone()));
                }
            }
        }
        match errors.first() {
            Some((name, p)) => {
                let mut f = explain(&instant_acme::Error::Api(p.clone()), "");
                f.error = format!("{name}: {}", f.error);
                f
            }
            None => Failure::new(
                "the CA marked the order invalid without saying why",
                "postern acme renew --force orders again.",
            ),
        }
    }
}

/// When the CA suggests renewing (RFC 9773), if it says.
async fn ari_start(account: &Account, der: &[u8]) -> Option<i64> {
    let cert = CertificateDer::from(der);
    let id = instant_acme::CertificateIdentifier::try_from(&cert).ok()?;
    let (info, _) = account.renewal_info(&id).await.ok()?;
    Some(info.suggested_window.start.unix_timestamp())
}

fn account_path(data_dir: &Path, directory: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    let id: String = d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    state::acme_dir(data_dir).join(format!("account-{id}.json"))
}

/// HTTPS to the CA: the system's roots, and `ca_file`'s.
fn http_client(ca_file: &str) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if !ca_file.is_empty() {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("{ca_file}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{ca_file}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{ca_file}: no certificate in the file"));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("{ca_file}: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(postern_net::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Box::new(client))
}
