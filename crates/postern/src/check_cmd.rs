//! `postern check ADDRESS`: the client-side settings checker.

use std::time::Duration;

use anyhow::Context;
use postern_doctor::check::{self, Options};
use postern_doctor::discover::{Proto, Target};
use postern_doctor::net::Net;

use crate::admin_cmd;
use crate::cli::CheckArgs;

/// Prints the report; false when something failed.
pub async fn run(a: CheckArgs) -> anyhow::Result<bool> {
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
    let report = check::run(&net, &o).await;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(!report.failed())
}
