//! Accept loops with connection budgets (total and per client IP) and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Tells sessions to finish up. Cloned into every session.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub struct ShutdownHandle {
    tx: watch::Sender<bool>,
}

impl ShutdownHandle {
    pub fn new() -> (ShutdownHandle, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownHandle { tx }, Shutdown { rx })
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn wait(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                // The handle is gone: nobody can ask us to stop any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// New connections one IP may open per minute (0: no limit).
    pub max_rate_per_ip: u32,
    /// The protocol's name in metrics.
    pub protocol: &'static str,
}

/// Counts live sessions of every listener, so shutdown can wait for them.
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    live: Mutex<usize>,
    notify: tokio::sync::Notify,
}

pub struct TrackGuard {
    inner: Arc<TrackerInner>,
}

impl Tracker {
    pub fn enter(&self) -> TrackGuard {
        *self.inner.live.lock().unwrap() += 1;
        TrackGuard {
            inner: self.inner.clone(),
        }
    }

    pub fn live(&self) -> usize {
        *self.inner.live.lock().unwrap()
    }

    /// Waits until no session is left, or the time is up; returns how many remain.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.notify.notified();
            let n = self.live();
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live();
            }
        }
    }
}

impl Drop for TrackGuard {
    fn drop(&mut self) {
        let mut n = self.inner.live.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            self.inner.notify.notify_waiters();
        }
    }
}

/// Whether a new connection fits the budget; the session answers `TooMany` with its
/// protocol's way of saying "come back later".
pub enum Admission {
    Accepted,
    TooMany(&'static str),
}

struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
    protocol: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::METRICS.session_closed(self.protocol);
        let mut c = self.counts.lock().unwrap();
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Runs `handle` for each accepted connection until shutdown. Connections over the budget
/// still reach `handle`, with `Admission::TooMany`, so it can answer before closing.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    tracker: Tracker,
    mut shutdown: Shutdown,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Admission) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let counts = Arc::new(Mutex::new(Counts {
        total: 0,
        per_ip: HashMap::new(),
    }));
    let handle = Arc::new(handle);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical_ip(peer.ip());
        let too_fast = limits.max_rate_per_ip > 0 && {
            let now = Instant::now();
            let mut rates = RATES.lock().unwrap();
            if rates.len() > 100_000 {
                rates.retain(|_, (start, _)| now - *start < MINUTE);
            }
            let r = rates.entry((limits.protocol, ip)).or_insert((now, 0));
            if now - r.0 >= MINUTE {
                *r = (now, 0);
            }
            r.1 += 1;
            r.1 > limits.max_rate_per_ip
        };
        let admission = if too_fast {
            Admission::TooMany("too many new connections from your IP address this minute")
        } else {
            let mut c = counts.lock().unwrap();
            let per = c.per_ip.get(&ip).copied().unwrap_or(0);
            if c.total >= limits.max_connections {
                Admission::TooMany("too many connections to this server")
            } else if per >= limits.max_per_ip {
                Admission::TooMany("too many connections from your IP address")
            } else {
                c.total += 1;
                *c.per_ip.entry(ip).or_insert(0) += 1;
                Admission::Accepted
            }
        };
        let slot = matches!(admission, Admission::Accepted).then(|| {
            crate::metrics::METRICS.session_opened(limits.protocol);
            Slot {
                counts: counts.clone(),
                ip,
                protocol: limits.protocol,
            }
        });
        let guard = tracker.enter();
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _guard = guard;
            handle(stream, peer, admission).await;
        });
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// New connections per (protocol, IP) in the current minute, shared by every listener of a
/// protocol (SMTP on 25, 587 and 465 counts once).
static RATES: std::sync::LazyLock<Mutex<RateMap>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

/// (protocol, IP) → (start of the minute, connections in it).
type RateMap = HashMap<(&'static str, IpAddr), (Instant, u32)>;

/// IPv4 clients on a dual-stack socket arrive as ::ffff:a.b.c.d.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
