//! The IMAP listener: moves bytes between a socket and the [`ImapCore`], keeps time (login
//! deadline, whole-command deadline, the literal rate, IDLE), does the TLS handshakes, checks
//! passwords, and listens for store events while the core idles.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::{AuthOutcome, Directory};
use postern_net::{
    Admission, ConnLimits, Io, LineError, Pace, Shutdown, TlsSetup, TlsStore, Tracker,
};
use postern_store::SharedStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{Instrument, info};

use crate::core::{CoreConfig, ImapCore, State, Step, Wait};

pub struct ImapServer {
    pub config: Arc<Config>,
    pub implicit_tls: bool,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub shutdown: Shutdown,
    /// Where large APPEND messages are spooled while they arrive.
    pub spool_dir: PathBuf,
}

/// The deadlines of the wait in progress.
#[derive(Default)]
struct Clock {
    /// The command being received must be complete by then.
    command_by: Option<Instant>,
    /// The literal being received must keep this rate.
    literal: Option<Pace>,
    /// IDLE ends then.
    idle_by: Option<Instant>,
}

impl ImapServer {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        let c = &self.config.imap;
        let limits = ConnLimits {
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            max_rate_per_ip: 0,
            protocol: "imap",
        };
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            self.shutdown.clone(),
            move |stream, peer, adm| {
                let me = me.clone();
                let span =
                    tracing::info_span!("imap", sid = %postern_net::session_id(), peer = %peer);
                async move { me.session(stream, peer, adm).await }.instrument(span)
            },
        )
        .await;
    }

    async fn session(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, adm: Admission) {
        let ip = postern_net::listener::canonical_ip(peer.ip());
        let tls = TlsSetup {
            store: self.tls.as_deref(),
            implicit: self.implicit_tls,
            handshake_timeout: self.config.tls.handshake_timeout.duration(),
        };
        let refusal =
            |why: &str| format!("* BYE [UNAVAILABLE] {why}; try again later\r\n").into_bytes();
        let Some(mut io) = postern_net::accept(stream, adm, tls, refusal).await else {
            return;
        };
        let cfg = CoreConfig {
            config: self.config.clone(),
            tls_available: self.tls.is_some(),
            spool_dir: self.spool_dir.clone(),
        };
        let mut core = ImapCore::new(cfg, self.store.clone(), io.is_tls());
        core.greet();
        info!(tls = io.is_tls(), "connected");
        io.set_write_timeout(self.config.imap.write_timeout.duration());
        self.drive(&mut core, &mut io, ip).await;
        io.shutdown().await;
        info!("disconnected");
    }

    /// Runs the core until it closes or the connection goes.
    async fn drive(&self, core: &mut ImapCore, io: &mut Io, ip: IpAddr) {
        let c = &self.config.imap;
        let idle = c.idle_timeout.duration();
        let login_by = Instant::now().checked_add(c.login_timeout.duration());
        let mut events = self.store.subscribe();
        let mut shutdown = self.shutdown.clone();
        let mut clock = Clock::default();
        loop {
            let n = core.feed(io.buffered_input());
            if let Some(p) = &mut clock.literal {
                p.add(n);
            }
            io.consume(n);
            let step = core.step().await;
            if let Step::Flush = step {
                // A piece of a long answer: straight from the core's buffer to the socket.
                if let Err(e) = io.send_now(core.output()).await {
                    info!(error = %e, "output not delivered; disconnecting");
                    return;
                }
                core.output_sent(false);
                continue;
            }
            io.write(core.output());
            core.output_sent(matches!(step, Step::Read(_)));
            match step {
                Step::Close => {
                    let _ = io.flush().await;
                    return;
                }
                Step::Flush => unreachable!("sent above"),
                Step::StartTls => {
                    let Some(tls) = &self.tls else { return };
                    let limit = self.config.tls.handshake_timeout.duration();
                    if Box::pin(io.upgrade(tls, limit)).await.is_err() {
                        return;
                    }
                    core.tls_started();
                }
                Step::Authenticate { user, password } => {
                    let d = &self.directory;
                    let outcome = Box::pin(d.authenticate(&user, &password, ip, "imap")).await;
                    if matches!(outcome, Ok(AuthOutcome::Failed | AuthOutcome::Disabled)) {
                        tokio::time::sleep(d.failure_delay()).await;
                    }
                    core.login_result(outcome);
                }
                Step::Read(wait) => {
                    if io.should_flush()
                        && let Err(e) = io.flush().await
                    {
                        info!(error = %e, "output not delivered; disconnecting");
                        return;
                    }
                    if io.has_buffered() {
                        // Pipelined input: the next command is here already.
                        continue;
                    }
                    let logged_in = core.state != State::NotAuthenticated;
                    let fresh = if logged_in {
                        idle
                    } else {
                        postern_net::time_left(login_by, idle)
                    };
                    let limit = clock.limit(wait, core.in_command(), fresh, c.min_literal_rate);
                    tokio::select! {
                        biased;
                        r = io.wait_readable(limit) => match r {
                            Ok(()) => {}
                            Err(LineError::Timeout) => core.timed_out(),
                            Err(_) => return,
                        },
                        ev = events.recv(), if core.hears_events(wait == Wait::Idle) => match ev {
                            Ok(e) => core.store_event(Some(e)),
                            Err(RecvError::Lagged(_)) => core.store_event(None),
                            Err(RecvError::Closed) => core.shutdown(),
                        },
                        _ = shutdown.wait() => core.shutdown(),
                    }
                }
            }
        }
    }
}

impl Clock {
    /// How long the next read may wait. A command must be complete within `fresh` of its
    /// first byte, literals included, and literal data must keep `min_rate` (a client that
    /// dribbles a byte now and then is cut off even though no single read times out).
    fn limit(&mut self, wait: Wait, in_command: bool, fresh: Duration, min_rate: u64) -> Duration {
        if wait != Wait::Idle {
            self.idle_by = None;
        }
        if wait != Wait::Literal {
            self.literal = None;
        }
        if !in_command {
            self.command_by = None;
        } else if self.command_by.is_none() {
            self.command_by = Instant::now().checked_add(fresh);
        }
        let command_left = postern_net::time_left(self.command_by, fresh);
        match wait {
            Wait::Idle => {
                let by = *self.idle_by.get_or_insert_with(|| Instant::now() + fresh);
                by.saturating_duration_since(Instant::now())
            }
            Wait::Literal => self
                .literal
                .get_or_insert_with(|| Pace::new(command_left, min_rate))
                .limit(command_left),
            Wait::Command | Wait::Response => command_left,
        }
    }
}
