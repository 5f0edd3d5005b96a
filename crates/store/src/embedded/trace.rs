//! Message trace: events in redb, indexed by search key and by time.

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::*;

#[async_trait]
impl TraceStore for EmbeddedStore {
    async fn trace_append(&self, events: Vec<TraceEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(Job::Trace(events)).await.map(|_| ())
    }

    async fn trace_get(&self, trace_id: &str) -> Result<Vec<TraceEvent>> {
        let mut v: Vec<TraceEvent> = self.read(|r| {
            let t = r.open_table(TRACE).map_err(db_err)?;
            t.range((trace_id, 0u64)..=(trace_id, u64::MAX))
                .map_err(db_err)?
                .map(|x| from_json(x.map_err(db_err)?.1.value()))
                .collect()
        })?;
        v.sort_by_key(|e| e.time);
        Ok(v)
    }

    async fn trace_find(&self, key: &str, since: i64, limit: usize) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(TRACE_KEYS).map_err(db_err)?;
            let mut out: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for x in t
                .range((key, since, "")..=(key, i64::MAX, "\u{10ffff}"))
                .map_err(db_err)?
                .rev()
            {
                let id = x.map_err(db_err)?.0.value().2.to_string();
                if seen.insert(id.clone()) {
                    out.push(id);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn trace_recent(&self, since: i64, limit: usize) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(TRACE_TIME).map_err(db_err)?;
            let mut out: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for x in t.range((since, "", 0u64)..).map_err(db_err)?.rev() {
                let id = x.map_err(db_err)?.0.value().1.to_string();
                if seen.insert(id.clone()) {
                    out.push(id);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn trace_prune(&self, before: i64) -> Result<u64> {
        expect_output!(self.write(Job::TracePrune(before)).await?, Count)
    }
}
