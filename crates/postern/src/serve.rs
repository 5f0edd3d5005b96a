//! `postern serve`: open the store, bind every listener, run until SIGTERM/SIGINT, then shut
//! down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use postern_admin::Admin;
use postern_config::{Config, ListenerKind};
use postern_directory::{Directory, DirectoryConfig};
use postern_net::{ShutdownHandle, TlsStore, Tracker};
use postern_store::SharedStore;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::control;

/// Everything a protocol listener needs.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub spool_dir: PathBuf,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub shutdown: postern_net::Shutdown,
    pub tracker: Tracker,
    pub trust: Option<Arc<postern_trust::Checker>>,
    pub abuse: Arc<postern_smtp::abuse::Abuse>,
    /// Where every complete message goes.
    pub ingest: Arc<postern_ingest::Ingest>,
    /// The admin dispatcher and the config file's path, for the JSON API.
    pub hooks: postern_http::Hooks,
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cfg.log.level.as_str()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn bind_error(kind: ListenerKind, addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or choose higher ports in [listen])"
        }
        std::io::ErrorKind::AddrInUse => " (is another mail server or postern running?)",
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr} for {}: {e}{hint}", kind.name())
}

/// Certificates and DKIM keys from disk again (SIGHUP, `postern dkim rotate`).
fn reload_all(
    tls: Option<&TlsStore>,
    dkim: &postern_queue::dkim::DkimKeys,
    dkim_dir: &std::path::Path,
) -> Result<String, String> {
    dkim.reload(dkim_dir);
    match tls {
        Some(t) => match t.reload() {
            Ok(()) => {
                tracing::info!(cert = %t.cert_path().display(), "TLS certificate and DKIM keys reloaded");
                Ok("certificate and DKIM keys reloaded".into())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the old certificate");
                Err(format!(
                    "TLS reload failed, the old certificate stays in use: {e}"
                ))
            }
        },
        None => {
            tracing::info!("DKIM keys reloaded");
            Ok("DKIM keys reloaded".into())
        }
    }
}

/// Every connection is a file descriptor: lift the soft limit to the hard one, and say so
/// when even that is below what one listener's connection limit allows.
fn raise_fd_limit(cfg: &Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let wanted = cfg.most_connections();
    if (lim.rlim_cur as usize) < wanted {
        tracing::warn!(
            limit = lim.rlim_cur,
            wanted,
            "the open-file limit is below a listener's max_connections; raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
    }
}

pub async fn serve(config_path: PathBuf, cfg: Config) -> anyhow::Result<()> {
    init_logging(&cfg);
    // Before anything answers: a SIGTERM sent as soon as the control socket appears waits
    // for the loop below instead of killing the process half started.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    raise_fd_limit(&cfg);
    let tls = if cfg.tls.cert.is_empty() && !cfg.acme.enabled {
        if let Some(k) = ListenerKind::ALL
            .into_iter()
            .find(|k| k.implicit_tls() && !cfg.listen.addresses(*k).is_empty())
        {
            bail!(
                "listen.{} needs a certificate: set [tls] cert and key (postern init makes a self-signed pair), or turn on [acme]",
                k.name()
            );
        }
        None
    } else {
        // The [tls] pair, and the certificates ACME obtained for the names they cover.
        Some(TlsStore::open(postern_net::tls::Sources {
            file: (!cfg.tls.cert.is_empty())
                .then(|| (PathBuf::from(&cfg.tls.cert), PathBuf::from(&cfg.tls.key))),
            acme_certs: cfg
                .acme
                .enabled
                .then(|| postern_acme::state::certs_dir(&cfg.data_dir)),
            hostname: cfg.hostname.clone(),
        })?)
    };
    // A command run by hand may hold the store for a moment (it opened it before we did): it
    // is waited for; another server holding it is not going away, and is reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let crate::open_store::Opened { store, spool_dir } = loop {
        match crate::open_store::open(&cfg).await {
            Ok(o) => break o,
            Err(e)
                if std::time::Instant::now() < deadline
                    && matches!(
                        e.root_cause().downcast_ref::<postern_store::StoreError>(),
                        Some(postern_store::StoreError::Locked { .. })
                    )
                    // A server answers on its control socket: that one is not going away.
                    && control::request(&cfg.data_dir, &postern_admin::AdminRequest::Ping)
                        .await
                        .ok()
                        .flatten()
                        .is_none() =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    };
    let directory = Directory::new(store.clone(), DirectoryConfig::from_config(&cfg));
    let (shutdown_handle, shutdown) = ShutdownHandle::new();
    let control_socket = control::socket_path(&cfg.data_dir);
    let tracker = Tracker::default();
    let resolver = postern_queue::route::resolver(&cfg.dns.nameservers)
        .map_err(|e| anyhow::anyhow!("cannot set up DNS: {e}"))?;
    let router = postern_queue::route::Router::new(resolver, cfg.delivery.remote_port);
    let dkim_dir = cfg.data_dir.join("dkim");
    let dkim = Arc::new(postern_queue::dkim::DkimKeys::load(&dkim_dir));
    let reload: postern_admin::Reloader = {
        let tls = tls.clone();
        let dkim = dkim.clone();
        let dkim_dir = dkim_dir.clone();
        Arc::new(move || reload_all(tls.as_deref(), &dkim, &dkim_dir))
    };
    // Set once the queue runs; `reports send` before that finds nothing to send with.
    let report_sender: Arc<std::sync::OnceLock<Arc<postern_queue::reports::ReportSender>>> =
        Arc::default();
    let send_reports: postern_admin::ReportSend = {
        let sender = report_sender.clone();
        Arc::new(move || {
            let sender = sender.get().cloned();
            Box::pin(async move {
                match sender {
                    Some(s) => s.send(true).await.lines,
                    None => vec!["the server is still starting; try again in a moment".into()],
                }
            })
        })
    };
    // Set once ingest exists; a message from `postern sendmail` before that is refused.
    let ingest_cell: Arc<std::sync::OnceLock<Arc<postern_ingest::Ingest>>> = Arc::default();
    let submit: postern_admin::Submit = {
        let cell = ingest_cell.clone();
        Arc::new(move |s| {
            let ingest = cell.get().cloned();
            Box::pin(async move {
                match ingest {
                    Some(i) => crate::sendmail::submit(&i, s).await,
                    None => Err("the server is still starting; try again in a moment".into()),
                }
            })
        })
    };
    // Set once the ACME manager runs.
    let acme_cell: Arc<std::sync::OnceLock<Arc<postern_acme::Manager>>> = Arc::default();
    let acme_hook: postern_admin::AcmeHook = {
        let cell = acme_cell.clone();
        Arc::new(move |action| {
            let manager = cell.get().cloned();
            Box::pin(async move {
                match manager {
                    Some(m) => m.act(action).await,
                    None => Err(
                        "ACME is off: set [acme] enabled = true in the config and restart".into(),
                    ),
                }
            })
        })
    };
    let admin = Arc::new(
        Admin::server(directory.clone(), Arc::new(cfg.clone()), reload.clone())
            .with_report_sender(send_reports)
            .with_submit(submit)
            .with_acme(acme_hook),
    );
    let mail_submit: postern_http::MailSubmit = {
        let cell = ingest_cell.clone();
        let abuse = Arc::new(postern_smtp::abuse::Abuse::new(store.clone()));
        Arc::new(move |out| {
            let ingest = cell.get().cloned();
            let abuse = abuse.clone();
            Box::pin(async move {
                match ingest {
                    Some(i) => crate::webmail::submit(&i, &abuse, out).await,
                    None => Err("the server is still starting; try again in a moment".into()),
                }
            })
        })
    };
    let hooks = postern_http::Hooks {
        admin: admin.clone(),
        config_path: Some(config_path.clone()),
        submit: Some(mail_submit),
    };
    // The data directory lock first, so a second server on it is told so; then the control
    // socket, so a command run as the server starts is answered; then every listener, before
    // anything runs.
    // A message from `postern sendmail` travels in one request line, base64.
    let max_line = (1 << 20) + cfg.smtp.max_message_size.0 / 3 * 4 + 4;
    control::listen(&cfg.data_dir, admin, max_line, shutdown.clone())?;
    let mut listeners = Vec::new();
    for (kind, addr) in cfg.listen.sockets() {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error(kind, addr, e))?;
        listeners.push((kind, addr, l));
    }
    let trust = if cfg.inbound.check || !cfg.inbound.dnsbl.is_empty() {
        let r = postern_queue::route::resolver_with_timeout(
            &cfg.dns.nameservers,
            cfg.dns.timeout.duration(),
        )
        .map_err(|e| anyhow::anyhow!("cannot set up DNS: {e}"))?;
        Some(Arc::new(postern_trust::Checker::new(
            r,
            &cfg.hostname,
            cfg.inbound.clone(),
        )))
    } else {
        None
    };
    let cfg = Arc::new(cfg);
    // Counted in memory, written every half minute and at shutdown by the report sender.
    let tallies = postern_reports::Tallies::new(store.clone());
    let counting = cfg.reports.send.then(|| tallies.clone());
    let ingest = Arc::new(postern_ingest::Ingest {
        store: store.clone(),
        directory: directory.clone(),
        trust: trust.clone(),
        config: cfg.clone(),
        reports: counting.clone(),
    });
    let _ = ingest_cell.set(ingest.clone());
    let services = Services {
        hooks,
        trust,
        ingest,
        abuse: Arc::new(postern_smtp::abuse::Abuse::new(store.clone())),
        config: cfg,
        store: store.clone(),
        spool_dir,
        directory,
        tls: tls.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    for (kind, addr, listener) in listeners {
        crate::listeners::spawn(kind, addr, listener, services.clone());
    }
    let runner = postern_queue::QueueRunner::new(
        services.config.clone(),
        store.clone(),
        services.directory.clone(),
        router.clone(),
        dkim,
        counting,
    );
    tokio::spawn(runner.clone().run(shutdown.clone()));
    let sender = postern_queue::reports::ReportSender::new(
        services.config.clone(),
        store.clone(),
        tallies,
        router.resolver().clone(),
        runner,
    );
    let _ = report_sender.set(sender.clone());
    let report_task = tokio::spawn(sender.run(shutdown.clone()));
    let stats_task = tokio::spawn(
        crate::stats::Flusher::new(store.clone(), services.config.clone()).run(shutdown.clone()),
    );
    if let (true, Some(tls)) = (services.config.acme.enabled, &tls) {
        let resolver = postern_queue::route::public_resolver(&services.config.dns.nameservers)
            .map_err(|e| anyhow::anyhow!("cannot set up DNS: {e}"))?;
        let m = postern_acme::Manager::new(
            services.config.clone(),
            store.clone(),
            tls.clone(),
            resolver,
        );
        let _ = acme_cell.set(m.clone());
        tokio::spawn(m.run(shutdown.clone()));
    }
    if services.config.backup.dir.is_some() {
        if services.config.storage.backend == "postgres" {
            tracing::warn!(
                "backup.dir is set, but PostgreSQL is backed up with its own tools (pg_dump, or base backups with WAL archiving): no scheduled backups are taken"
            );
        } else {
            let task =
                postern_migrate::backups::schedule(store.clone(), services.config.backup.clone());
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.wait() => {}
                    _ = task => {}
                }
            });
        }
    }
    {
        // Forget trace events past their retention, hourly.
        let store = store.clone();
        let keep = services.config.trace.retention.0 as i64 * 1000;
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let before = postern_store::now() * 1000 - keep;
                match store.trace_prune(before).await {
                    Ok(n) if n > 0 => tracing::info!(events = n, "old trace events forgotten"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "trace pruning failed"),
                }
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
            }
        });
    }
    {
        // Let go of expunged messages no session can still need, every few minutes.
        let store = store.clone();
        let keep = services.config.storage.keep_expunged.0 as i64;
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = store.expunged_purge(postern_store::now() - keep).await {
                    tracing::warn!(error = %e, "purging expunged messages failed");
                }
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                }
            }
        });
    }
    tracing::info!(
        config = %config_path.display(),
        hostname = %services.config.hostname,
        pid = std::process::id(),
        "postern started"
    );

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = reload();
            }
        }
    }
    tracing::info!(sessions = tracker.live(), "shutting down");
    shutdown_handle.trigger();
    let left = tracker.drain(Duration::from_secs(30)).await;
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "sessions still open after 30 s; closing anyway"
        );
    }
    // The report counts of the last moments are written before the store closes.
    let _ = tokio::time::timeout(Duration::from_secs(10), report_task).await;
    if let Ok(Ok(mut flusher)) = tokio::time::timeout(Duration::from_secs(10), stats_task).await {
        flusher.flush().await;
    }
    store.close().await?;
    // Here rather than only in the control task, which may not run again before we exit.
    let _ = std::fs::remove_file(control_socket);
    tracing::info!("stopped");
    Ok(())
}
