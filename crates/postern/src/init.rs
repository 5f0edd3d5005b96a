//! `postern init`, `postern quickstart` and `postern dkim rotate`: the command line side of
//! setting up (the work is in `postern_admin::setup` and `postern_admin::dkim`).

use postern_admin::setup::{self, InitOptions, QuickstartOptions};
use postern_admin::{AdminRequest, dkim};
use postern_config::Config;

use crate::cli::{InitArgs, QuickstartArgs};

fn init_options(a: InitArgs) -> InitOptions {
    InitOptions {
        domain: a.domain,
        hostname: a.hostname,
        data_dir: a.data_dir,
        listen_ip: a.listen_ip,
        port_offset: a.port_offset,
        acme: a.acme,
    }
}

pub async fn init(args: InitArgs) -> anyhow::Result<()> {
    print!("{}", setup::init(init_options(args)).await?);
    Ok(())
}

pub async fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
    let o = QuickstartOptions {
        address: args.address,
        hostname: args.hostname,
        data_dir: args.data_dir,
        listen_ip: args.listen_ip,
        port_offset: args.port_offset,
        acme: args.acme,
    };
    let (config_path, cfg, init) = setup::quickstart_server(&o).await?;
    if let Some(init) = init {
        print!("{init}");
    }
    let password = {
        let store = crate::open_store::open(&cfg).await?.store;
        let r = setup::first_account(&crate::admin_cmd::local(&cfg, &store), &o.address).await;
        store.close().await?;
        r?
    };
    let serve = !args.no_serve;
    print!(
        "{}",
        setup::welcome(&cfg, &config_path, &o.address, password.as_deref(), serve)
    );
    if !serve {
        return Ok(());
    }
    crate::serve::serve(config_path, cfg).await
}

/// A new DKIM key for `domain` under a new selector; prints the record to publish.
pub async fn dkim_rotate(cfg: &Config, domain: &str, algorithm: &str) -> anyhow::Result<()> {
    let k = dkim::rotate(cfg, domain, algorithm)?;
    // A running server signs with the new key from now on.
    let _ = crate::control::request(&cfg.data_dir, &AdminRequest::Reload).await;
    let (domain, selector) = (&k.domain, &k.selector);
    println!("New DKIM key for {domain}, selector {selector}. Publish this record:");
    println!("  {selector}._domainkey.{domain}.  TXT  \"{}\"", k.record);
    println!(
        "Keep the old selector's record published for a few days, until mail signed with it is delivered."
    );
    Ok(())
}
