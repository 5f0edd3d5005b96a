//! The certificates ACME keeps: days left, the next renewal, the last error with its fix,
//! and the names left out because their DNS leads elsewhere.

use postern_config::Config;

use crate::report::Section;

pub(super) fn acme(cfg: &Config) -> Option<Section> {
    if !cfg.acme.enabled {
        return None;
    }
    let st = postern_acme::state::status(cfg);
    let mut s = Section::new(format!("ACME certificates ({})", cfg.acme.directory));
    let now = postern_acme::state::now();
    let date = postern_acme::state::format_time;
    if st.certificates.is_empty() && st.checked == 0 {
        s.warn(
            "no certificate ordered yet",
            "Start the server (postern serve): it orders them within a minute; postern acme status shows how it went.",
        );
    }
    for c in &st.certificates {
        let names = c.names.join(", ");
        let days = c.days_left(now);
        if c.not_after == 0 {
            s.fail(
                format!("{names}: no certificate yet"),
                c.fix.clone().unwrap_or_else(|| {
                    "The server orders it when it runs; see postern acme status.".into()
                }),
            );
        } else if c.not_after <= now {
            s.fail(
                format!("{names}: the certificate expired on {}", date(c.not_after)),
                c.fix
                    .clone()
                    .unwrap_or_else(|| "Run postern acme renew.".into()),
            );
        } else if c.not_after - now < cfg.doctor.cert_warn.0 as i64 && c.last_error.is_some() {
            s.warn(
                format!("{names}: {days} days left and renewal fails"),
                c.fix.clone().unwrap_or_default(),
            );
        } else {
            s.ok(format!(
                "{names}: valid until {} ({days} days left), renewed from {}",
                date(c.not_after),
                date(c.renew_at)
            ));
        }
        if let Some(e) = &c.last_error {
            s.warn(
                format!(
                    "{names}: the last order ({}) failed: {e}",
                    date(c.last_attempt)
                ),
                c.fix.clone().unwrap_or_default(),
            );
        }
    }
    for k in &st.skipped {
        s.warn(
            format!("{} is not requested: {}", k.name, k.reason),
            "Mail programs asking for this name get the hostname's certificate and warn.",
        );
    }
    Some(s)
}
