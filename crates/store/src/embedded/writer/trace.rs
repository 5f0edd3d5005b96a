//! How the writer records and forgets trace events.

use redb::ReadableTable;

use super::super::db_err;
use super::super::tables::*;
use super::Tables;
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn trace_append(&mut self, events: &[TraceEvent]) -> Result<()> {
        for e in events {
            let seq = self.next_id(NEXT_TRACE)?;
            self.trace
                .insert((e.trace_id.as_str(), seq), json(e).as_slice())
                .map_err(db_err)?;
            self.trace_time
                .insert((e.time, e.trace_id.as_str(), seq), ())
                .map_err(db_err)?;
            for k in &e.keys {
                self.trace_keys
                    .insert((k.as_str(), e.time, e.trace_id.as_str()), ())
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }

    pub(super) fn trace_prune(&mut self, before: i64) -> Result<u64> {
        let old: Vec<(i64, String, u64)> = self
            .trace_time
            .range((i64::MIN, "", 0u64)..(before, "", 0u64))
            .map_err(db_err)?
            .map(|r| {
                r.map(|(k, _)| {
                    let (t, id, seq) = k.value();
                    (t, id.to_string(), seq)
                })
                .map_err(db_err)
            })
            .collect::<Result<_>>()?;
        for (t, id, seq) in &old {
            if let Some(v) = self.trace.remove((id.as_str(), *seq)).map_err(db_err)? {
                let e: TraceEvent = from_json(v.value())?;
                for k in &e.keys {
                    self.trace_keys
                        .remove((k.as_str(), e.time, id.as_str()))
                        .map_err(db_err)?;
                }
            }
            self.trace_time
                .remove((*t, id.as_str(), *seq))
                .map_err(db_err)?;
        }
        let now = rules::seen_marks_expired_by(before);
        self.seen
            .retain(|_, expires| expires > now)
            .map_err(db_err)?;
        Ok(old.len() as u64)
    }
}
