//! Counts made between flushes: every checked message and every delivery touches memory
//! only; a flush writes what was counted in one store write. A crash loses at most the counts
//! since the last flush: statistics, never mail.

use std::collections::HashMap;
use std::sync::Mutex;

use postern_store::{ReportKind, ReportTally, SharedStore, StoreError};

/// Distinct outcomes held before a flush is started without waiting for the next one.
const FLUSH_AT: usize = 10_000;

type Key = (ReportKind, String, i64, String);

pub struct Tallies {
    store: SharedStore,
    pending: Mutex<HashMap<Key, u64>>,
}

impl Tallies {
    pub fn new(store: SharedStore) -> std::sync::Arc<Tallies> {
        std::sync::Arc::new(Tallies {
            store,
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub fn add(self: &std::sync::Arc<Self>, t: ReportTally) {
        let full = {
            let mut p = self.pending.lock().unwrap();
            *p.entry((t.kind, t.domain, t.day, t.row)).or_insert(0) += t.count;
            p.len() >= FLUSH_AT
        };
        if full && let Ok(h) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            h.spawn(async move { me.flush().await });
        }
    }

    /// Writes what was counted; on failure it is kept for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let taken: Vec<ReportTally> = {
            let mut p = self.pending.lock().unwrap();
            p.drain()
                .map(|((kind, domain, day, row), count)| ReportTally {
                    kind,
                    domain,
                    day,
                    row,
                    count,
                })
                .collect()
        };
        if taken.is_empty() {
            return Ok(());
        }
        match self.store.report_tally(taken.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut p = self.pending.lock().unwrap();
                for t in taken {
                    *p.entry((t.kind, t.domain, t.day, t.row)).or_insert(0) += t.count;
                }
                Err(e)
            }
        }
    }
}
