//! Rate-limit counters and web sessions: one process, so in its memory, bounded.

use async_trait::async_trait;

use super::EmbeddedStore;
use crate::rules::{self, counter_key};
use crate::*;

/// Rate-limit counters kept at most of one kind (the key's part before ':'), about 150 bytes
/// each.
const MAX_COUNTERS: usize = 100_000;

/// The counters of one kind: a flood of one kind (made-up senders to greylist) never pushes
/// out another (login failures).
#[derive(Default)]
pub(super) struct CounterFamily {
    map: std::collections::HashMap<String, Counter>,
    pruned: Option<std::time::Instant>,
}

impl CounterFamily {
    /// Room for one more: the expired go (at most once a minute); then greylisting lets the
    /// newcomer through untracked, while other kinds (logins, sending limits) drop the counter
    /// that would expire soonest, so they never stop counting.
    fn make_room(&mut self, key: &str, now: i64) -> Result<()> {
        if self
            .pruned
            .is_none_or(|p| p.elapsed() > std::time::Duration::from_secs(60))
        {
            self.map.retain(|_, c| c.expires > now);
            self.pruned = Some(std::time::Instant::now());
        }
        if self.map.len() < MAX_COUNTERS {
            return Ok(());
        }
        if key.starts_with("greylist:") {
            return Err(StoreError::Backend("too many greylisted senders".into()));
        }
        if let Some(soonest) = self
            .map
            .iter()
            .min_by_key(|(_, c)| c.expires)
            .map(|(k, _)| k.clone())
        {
            self.map.remove(&soonest);
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn counter_update(&self, key: &str, step: CounterStep<'_>) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let now = now_ms();
        let mut counters = self.counters.lock().unwrap();
        let family = counters
            .entry(key.split(':').next().unwrap_or(key).to_string())
            .or_default();
        let next = rules::counter_next(family.map.get(key).cloned(), step, now);
        match &next {
            Some(c) => {
                if !family.map.contains_key(key) && family.map.len() >= MAX_COUNTERS {
                    family.make_room(key, now)?;
                }
                family.map.insert(key.to_string(), c.clone());
            }
            None => {
                family.map.remove(key);
            }
        }
        Ok(next)
    }

    async fn counter_get(&self, key: &str) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let now = now_ms();
        let counters = self.counters.lock().unwrap();
        Ok(counters
            .get(key.split(':').next().unwrap_or(key))
            .and_then(|f| f.map.get(key))
            .filter(|c| c.expires > now)
            .cloned())
    }

    async fn web_session_put(&self, session: WebSession, limit: Option<usize>) -> Result<()> {
        let now = now_ms();
        let mut map = self.web_sessions.lock().unwrap();
        if limit.is_none() {
            if let Some(s) = map.get_mut(&session.id) {
                *s = session;
            }
            return Ok(());
        }
        map.insert(session.id.clone(), session);
        if let Some(limit) = limit.map(rules::session_limit)
            && map.len() > limit
        {
            map.retain(|_, s| s.expires > now);
            if map.len() > limit {
                let mut by_use: Vec<(i64, String)> =
                    map.values().map(|s| (s.used, s.id.clone())).collect();
                by_use.sort();
                for (_, id) in by_use.iter().take(map.len() - limit) {
                    map.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn web_session_get(&self, id: &str) -> Result<Option<WebSession>> {
        let now = now_ms();
        Ok(self
            .web_sessions
            .lock()
            .unwrap()
            .get(id)
            .filter(|s| s.expires > now)
            .cloned())
    }

    async fn web_session_delete(&self, id: &str) -> Result<()> {
        self.web_sessions.lock().unwrap().remove(id);
        Ok(())
    }

    async fn web_session_list(&self, address: &str) -> Result<Vec<WebSession>> {
        let now = now_ms();
        Ok(self
            .web_sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.address == address && s.expires > now)
            .cloned()
            .collect())
    }
}
