//! `[stats]`: the dashboard's series over time, kept in the store.

use serde::Deserialize;

use crate::Seconds;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stats {
    /// Counts gather in memory and reach the store this often (and at shutdown).
    pub flush: Seconds,
    /// The top senders, recipients and hosts are read from at most this many messages.
    pub max_top_messages: usize,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            flush: Seconds(60),
            max_top_messages: 5000,
        }
    }
}

impl Stats {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.flush.0 == 0 {
            return Err("stats.flush must be at least 1s".into());
        }
        Ok(())
    }
}

pub(crate) const RENDER: &str = r#"[stats]
# The dashboard's charts: counts per hour (14 days) and per day (400 days), in the store.
flush = "60s"            # counts gather in memory and are written this often, and at shutdown
max_top_messages = 5000  # the last day's top senders/recipients/hosts are read from this many
"#;
