//! `postern check ADDRESS`: the client-side settings checker.

use std::time::Duration;

use anyhow::Context;
use postern_admin::{AdminReply, AdminRequest};
use postern_config::Config;
use postern_doctor::check::{self, Options};
use postern_doctor::discover::{Proto, Target};
use postern_doctor::net::Net;
use postern_doctor::report::Section;

use crate::admin_cmd;
use crate::cli::CheckArgs;

/// Prints the report; false when something failed. With this server's config (`cfg`), the
/// report also says what is shared with the account here.
pub async fn run(a: CheckArgs, cfg: Option<Config>) -> anyhow::Result<bool> {
    let address = a.address.trim().to_string();
    if !address.contains('@') {
        anyhow::bail!("{address:?} is not an email address (expected you@example.com)");
    }
    let mut given = Vec::new();
    for (proto, v) in [
        (Proto::Imap, &a.imap),
        (Proto::Pop3, &a.pop3),
        (Proto::Smtp, &a.smtp),
    ] {
        if let Some(v) = v {
            given.push(Target::parse(proto, v).map_err(|e| anyhow::anyhow!(e))?);
        }
    }
    let wait = postern_config::parse_seconds(&a.wait)
        .with_context(|| format!("{:?} is not a duration (e.g. 30s, 2m)", a.wait))?;
    let password = admin_cmd::password(a.password)?;
    let net = Net::new(&a.dns, &a.ca, Duration::from_secs(a.timeout.max(1)))
        .map_err(|e| anyhow::anyhow!(e))?;
    let o = Options {
        address,
        password,
        username: a.username,
        given,
        discover: !a.no_discover,
        autoconfig: a.autoconfig,
        autodiscover: a.autodiscover,
        smtp_auth: !a.smtp_no_auth,
        roundtrip: a.roundtrip,
        wait: Duration::from_secs(wait),
    };
    let mut report = check::run(&net, &o).await;
    if let Some(cfg) = &cfg
        && let Some(s) = sharing(cfg, &o.address).await
    {
        report.sections.push(s);
    }
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(!report.failed())
}

/// What the account may use here besides its own folders and addresses: the shared
/// mailboxes and folders it is a member of, where its mail program shows them, and its
/// send-as grants. None when the address is no account of this server, or has nothing more.
async fn sharing(cfg: &Config, address: &str) -> Option<Section> {
    // A config whose server has never run here has nothing to say (and no store to make).
    if !cfg.data_dir.is_dir() {
        return None;
    }
    let req = AdminRequest::Access {
        address: address.to_string(),
    };
    let Ok(AdminReply::Access {
        address,
        shared_with,
        send_as,
    }) = crate::admin_cmd::run(cfg, req).await
    else {
        return None;
    };
    if shared_with.is_empty() && send_as.is_empty() {
        return None;
    }
    let mut s = Section::new(format!("Shared with {address} on this server"));
    for w in &shared_with {
        let what = if w.shared {
            format!("member of the shared mailbox {}", w.owner)
        } else {
            format!("folders of {} shared with you", w.owner)
        };
        s.info(format!(
            "{what}: your mail program shows it under Shared/{} ({})",
            w.owner,
            postern_admin::sharing::folders_words(w)
        ));
    }
    for g in &send_as {
        s.info(postern_admin::sharing::grant_words(g));
    }
    Some(s)
}
