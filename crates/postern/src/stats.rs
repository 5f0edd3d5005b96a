//! The dashboard's series: what the counters of `/metrics` gained since the last flush, and
//! samples of the queue and the disk, added to the store's hour and day buckets every
//! `[stats] flush` and at shutdown. The hot paths only bump their atomics, as before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_store::{SharedStore, StatKind, StatPoint};

pub struct Flusher {
    store: SharedStore,
    cfg: Arc<Config>,
    /// The counters as last written; a failed write leaves them, so nothing is lost.
    last: BTreeMap<String, u64>,
    pruned: i64,
}

impl Flusher {
    pub fn new(store: SharedStore, cfg: Arc<Config>) -> Flusher {
        Flusher {
            store,
            cfg,
            // Counters start at zero with the process: everything since is new.
            last: BTreeMap::new(),
            pruned: 0,
        }
    }

    /// Flushes until shutdown, then hands itself back for the last flush, which comes once
    /// the sessions have ended (their counts included).
    pub async fn run(mut self, mut shutdown: postern_net::Shutdown) -> Flusher {
        let every = Duration::from_secs(self.cfg.stats.flush.0.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.flush().await,
                _ = shutdown.wait() => return self,
            }
        }
    }

    pub async fn flush(&mut self) {
        let at = postern_store::now();
        let totals = postern_net::metrics::series_totals();
        let mut points: Vec<StatPoint> = totals
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(*self.last.get(k).unwrap_or(&0));
                (d > 0).then(|| StatPoint {
                    series: k.clone(),
                    at,
                    value: d as i64,
                    kind: StatKind::Sum,
                })
            })
            .collect();
        let sample = |series: &str, value: i64| StatPoint {
            series: series.into(),
            at,
            value,
            kind: StatKind::Max,
        };
        if let Ok(q) = self.store.queue_list().await {
            let oldest = q.iter().map(|e| at - e.created).max().unwrap_or(0).max(0);
            points.push(sample("queue:messages", q.len() as i64));
            points.push(sample("queue:oldest_secs", oldest));
        }
        if let Some((free, total)) = postern_net::disk_space(&self.cfg.data_dir) {
            points.push(sample("disk:used_bytes", total.saturating_sub(free) as i64));
        }
        match self.store.stats_add(points).await {
            Ok(()) => self.last = totals,
            Err(e) => tracing::warn!(error = %e, "dashboard counts not written; added to the next"),
        }
        if at - self.pruned >= 3600 {
            match self.store.stats_prune(at).await {
                Ok(n) if n > 0 => tracing::info!(buckets = n, "old dashboard buckets forgotten"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dashboard pruning failed"),
            }
            self.pruned = at;
        }
    }
}
