//! Counters, gauges and histograms for Prometheus (`/metrics`), kept in atomics so that
//! counting costs a few nanoseconds and no lock on the hot paths.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (upper bound in milliseconds), and the total.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64) {
        let b = BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| ((b * 1000.0).round() as u64, c.load(Ordering::Relaxed)))
            .collect();
        (b, self.count.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// Counters with one label, for the few label values that exist (protocols, outcomes).
#[derive(Default)]
pub struct Labeled(Mutex<BTreeMap<String, u64>>);

impl Labeled {
    pub fn add(&self, label: &str, n: u64) {
        let mut m = self.0.lock().unwrap();
        // Label values come from our own code, never from clients: the map stays small.
        match m.get_mut(label) {
            Some(v) => *v += n,
            None => {
                m.insert(label.to_string(), n);
            }
        }
    }

    /// Every label with its count now.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str, kind: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (v, n) in self.0.lock().unwrap().iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
        }
    }
}

pub struct Metrics {
    /// Messages accepted with 250 after DATA, by listener role ("mx", "submission").
    pub received: Labeled,
    /// Messages refused after their data, by reason ("dmarc", "filter", "storage"...).
    pub refused: Labeled,
    /// Deliveries to local mailboxes.
    pub delivered_local: AtomicU64,
    /// Outbound delivery outcomes per recipient ("delivered", "deferred", "bounced").
    pub outbound: Labeled,
    /// Failed logins, by protocol.
    pub auth_failures: Labeled,
    /// What the inbound checks said ("junk", "dmarc_fail").
    pub verdicts: Labeled,
    /// Messages per local domain: "in:DOMAIN" stored for it, "out:DOMAIN" sent by its users.
    pub domains: Labeled,
    /// Open sessions, by protocol.
    sessions: Mutex<BTreeMap<&'static str, AtomicI64>>,
    /// From the end of a message's data to our reply.
    pub smtp_accept: Histogram,
    /// One outbound delivery attempt.
    pub delivery: Histogram,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    received: Labeled::default(),
    refused: Labeled::default(),
    delivered_local: AtomicU64::new(0),
    outbound: Labeled::default(),
    auth_failures: Labeled::default(),
    verdicts: Labeled::default(),
    domains: Labeled::default(),
    sessions: Mutex::new(BTreeMap::new()),
    smtp_accept: Histogram::new(),
    delivery: Histogram::new(),
});

impl Metrics {
    /// Open sessions per protocol now.
    pub fn sessions(&self) -> BTreeMap<&'static str, i64> {
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn session_opened(&self, protocol: &'static str) {
        let mut m = self.sessions.lock().unwrap();
        m.entry(protocol)
            .or_insert_with(|| AtomicI64::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_closed(&self, protocol: &'static str) {
        if let Some(g) = self.sessions.lock().unwrap().get(protocol) {
            g.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of everything counted here.
    pub fn render(&self, out: &mut String) {
        self.received.render(
            out,
            "postern_messages_received_total",
            "role",
            "Messages accepted (250 after DATA), by listener role.",
            "counter",
        );
        self.refused.render(
            out,
            "postern_messages_refused_total",
            "reason",
            "Messages refused after their data, by reason.",
            "counter",
        );
        let _ = writeln!(
            out,
            "# HELP postern_messages_delivered_local_total Copies stored in local mailboxes.\n\
             # TYPE postern_messages_delivered_local_total counter\n\
             postern_messages_delivered_local_total {}",
            self.delivered_local.load(Ordering::Relaxed)
        );
        self.outbound.render(
            out,
            "postern_outbound_recipients_total",
            "outcome",
            "Outbound delivery attempts per recipient, by outcome.",
            "counter",
        );
        self.auth_failures.render(
            out,
            "postern_auth_failures_total",
            "protocol",
            "Failed logins, by protocol.",
            "counter",
        );
        let _ = writeln!(
            out,
            "# HELP postern_sessions Open sessions, by protocol.\n# TYPE postern_sessions gauge"
        );
        for (p, n) in self.sessions.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "postern_sessions{{protocol=\"{p}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        self.smtp_accept.render(
            out,
            "postern_smtp_accept_seconds",
            "From the end of a message's data to the reply (storing it durably).",
        );
        self.delivery.render(
            out,
            "postern_delivery_attempt_seconds",
            "One outbound delivery attempt to a destination.",
        );
    }
}

/// Every count as a dashboard series name and its value now; the difference of two of these
/// is what happened in between (see `postern_store::StatsStore`).
pub fn series_totals() -> BTreeMap<String, u64> {
    let m = &*METRICS;
    let mut out = BTreeMap::new();
    let mut labeled = |prefix: &str, l: &Labeled| {
        for (k, v) in l.snapshot() {
            out.insert(format!("{prefix}:{k}"), v);
        }
    };
    labeled("received", &m.received);
    labeled("refused", &m.refused);
    labeled("outbound", &m.outbound);
    labeled("auth_failures", &m.auth_failures);
    labeled("verdict", &m.verdicts);
    labeled("domain", &m.domains);
    out.insert("stored".into(), m.delivered_local.load(Ordering::Relaxed));
    for (name, h) in [("smtp_accept", &m.smtp_accept), ("delivery", &m.delivery)] {
        let (buckets, count) = h.snapshot();
        for (le, n) in buckets {
            out.insert(format!("latency:{name}:le_{le}"), n);
        }
        out.insert(format!("latency:{name}:count"), count);
    }
    out
}
