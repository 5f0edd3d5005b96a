//! The TLS certificate of `[tls]`: readable, matching its key, valid now and for a while,
//! naming our host, and trusted.

use postern_config::Config;

use crate::probe;
use crate::report::Section;

pub(super) fn certificate(cfg: &Config) -> Section {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    // With ACME, the certificate served for the hostname is the one it obtained.
    let acme_file =
        postern_acme::state::certs_dir(&cfg.data_dir).join(format!("{}.pem", cfg.hostname));
    let (cert_file, key_file) = if cfg.acme.enabled && acme_file.exists() {
        let f = acme_file.to_string_lossy().into_owned();
        (f.clone(), f)
    } else {
        (cfg.tls.cert.clone(), cfg.tls.key.clone())
    };
    let mut s = Section::new(format!("TLS certificate ({cert_file})"));
    if cert_file.is_empty() {
        s.fail(
            "no certificate is configured: mail programs cannot connect securely",
            "Set [tls] cert and key (postern init makes a self-signed pair; Let's Encrypt gives a trusted one).",
        );
        return s;
    }
    let (cert, key) = (
        std::path::Path::new(&cert_file),
        std::path::Path::new(&key_file),
    );
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(cert) {
        Ok(it) => it.flatten().collect(),
        Err(e) => {
            s.fail(
                format!("cannot read the certificate: {e}"),
                "Set [tls] cert to the PEM file of the certificate (with its intermediates), or create a self-signed one with postern init.",
            );
            return s;
        }
    };
    if let Err(e) = postern_net::tls::TlsStore::load(cert, key) {
        s.fail(
            format!("the certificate and key cannot be used: {e}"),
            "Check that [tls] key is the private key of this certificate (PEM, not encrypted).",
        );
        return s;
    }
    let report = match probe::assess_chain(&chain, &cfg.hostname, probe::roots(&[])) {
        Ok(r) => r,
        Err(e) => {
            s.fail(
                format!("cannot read the certificate: {e}"),
                "Set [tls] cert to a PEM file.",
            );
            return s;
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let names = report.names.join(", ");
    let until = report.facts.as_ref().map(|f| f.not_after);
    let date = |t: i64| crate::der::format_date(t);
    match until {
        Some(t) if t < now => s.fail(
            format!("the certificate expired on {}", date(t)),
            "Renew it (certbot renew, or your provider's tool), then: postern reload or send SIGHUP.",
        ),
        Some(t) if t - now < cfg.doctor.cert_warn.0 as i64 => s.warn(
            format!("the certificate expires on {}", date(t)),
            "Renew it now; Postern picks up the new file on SIGHUP without a restart.",
        ),
        Some(t) => s.ok(format!("valid until {}", date(t))),
        None => s.warn(
            "cannot read the certificate's dates",
            "Check the file is a PEM certificate.",
        ),
    }
    if report.name_ok {
        s.ok(format!("covers {}", cfg.hostname));
    } else {
        s.fail(
            format!("the certificate is for {names}, not for {}", cfg.hostname),
            format!(
                "Get a certificate that covers {} (e.g. certbot certonly -d {}), or set hostname to a name the certificate covers.",
                cfg.hostname, cfg.hostname
            ),
        );
    }
    match &report.trust_error {
        None => s.ok("issued by a trusted authority, chain complete"),
        Some(e) if report.facts.as_ref().is_some_and(|f| f.self_signed) => s.warn(
            format!("the certificate is not trusted: {e}"),
            "Mail programs will warn until you install a certificate from a public authority (Let's Encrypt is free); servers sending you mail accept it.",
        ),
        Some(e) => s.fail(
            format!("the certificate is not trusted: {e}"),
            if chain.len() == 1 {
                "The file holds only the server's certificate: append the intermediate certificates (certbot's fullchain.pem, not cert.pem)."
            } else {
                "Check the chain in the file: the server's certificate first, then each intermediate, from a trusted authority."
            },
        ),
    }
    s
}
