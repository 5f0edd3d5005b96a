//! The dashboard's series (`postern stats`, `GET /api/v1/stats`): the store's buckets made into
//! one row of numbers per series, latency percentiles worked out from the histogram buckets,
//! and the last day's busiest senders, recipients and remote hosts from the trace.

use std::collections::BTreeMap;

use postern_directory::Directory;
use postern_store::{StatBucket, StatStep};
use serde::{Deserialize, Serialize};

use crate::{AdminError, AdminReply};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub name: String,
    /// The chart it belongs on: flow, refused, verdicts, queue, logins, latency, disk, domains.
    pub group: String,
    /// One per bucket start; `None` where a sampled value was not taken.
    pub values: Vec<Option<i64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Top {
    pub hours: u32,
    /// Messages looked at (at most `[stats] max_top_messages`).
    pub messages: usize,
    pub senders: Vec<(String, u64)>,
    pub recipients: Vec<(String, u64)>,
    pub hosts: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsReport {
    pub step: StatStep,
    /// Bucket starts (Unix seconds, UTC).
    pub starts: Vec<i64>,
    pub series: Vec<Series>,
    pub top: Option<Top>,
}

pub fn parse_step(s: &str) -> Result<StatStep, String> {
    match s {
        "hour" => Ok(StatStep::Hour),
        "day" => Ok(StatStep::Day),
        _ => Err(format!("step {s:?} is unknown: use hour or day")),
    }
}

fn group_of(name: &str) -> Option<&'static str> {
    let prefix = name.split(':').next().unwrap_or("");
    Some(match prefix {
        "received" | "stored" | "outbound" => "flow",
        "refused" => "refused",
        "verdict" => "verdicts",
        "queue" => "queue",
        "auth_failures" => "logins",
        "disk" => "disk",
        "domain" => "domains",
        _ => return None,
    })
}

/// Bucket starts from `from` to `to` (at most 1,000).
fn starts(step: StatStep, from: i64, to: i64) -> Vec<i64> {
    let s = step.secs();
    let mut v = Vec::new();
    let mut t = step.start(from);
    while t < to && v.len() < 1000 {
        v.push(t);
        t += s;
    }
    v
}

/// The `q` quantile (0..1) in milliseconds from cumulative (bound ms, count) pairs.
fn quantile(buckets: &[(u64, i64)], count: i64, q: f64) -> Option<i64> {
    if count <= 0 {
        return None;
    }
    let want = (q * count as f64).ceil() as i64;
    buckets
        .iter()
        .find(|(_, n)| *n >= want)
        .map(|(le, _)| *le as i64)
        // Beyond the last bound: say so with the last bound.
        .or_else(|| buckets.last().map(|(le, _)| *le as i64))
}

pub fn report(buckets: Vec<StatBucket>, step: StatStep, from: i64, to: i64) -> StatsReport {
    let starts = starts(step, from, to);
    let index: BTreeMap<i64, usize> = starts.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut raw: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    for b in buckets {
        if let Some(&i) = index.get(&b.start) {
            raw.entry(b.series)
                .or_insert_with(|| vec![None; starts.len()])[i] = Some(b.value);
        }
    }
    let mut series = Vec::new();
    for (name, mut values) in raw.iter().map(|(k, v)| (k.clone(), v.clone())) {
        let Some(group) = group_of(&name) else {
            continue;
        };
        // Counts are zero where nothing was counted; samples stay unknown.
        if !matches!(group, "queue" | "disk") {
            for v in &mut values {
                v.get_or_insert(0);
            }
        }
        series.push(Series {
            name,
            group: group.into(),
            values,
        });
    }
    for h in ["smtp_accept", "delivery"] {
        let count = raw.get(&format!("latency:{h}:count"));
        let mut bounds: Vec<(u64, &Vec<Option<i64>>)> = raw
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&format!("latency:{h}:le_"))?.parse().ok()?;
                Some((le, v))
            })
            .collect();
        bounds.sort_by_key(|(le, _)| *le);
        let Some(count) = count else { continue };
        for (q, label) in [(0.5, "p50_ms"), (0.95, "p95_ms")] {
            let values = (0..starts.len())
                .map(|i| {
                    let at: Vec<(u64, i64)> = bounds
                        .iter()
                        .map(|(le, v)| (*le, v[i].unwrap_or(0)))
                        .collect();
                    quantile(&at, count[i].unwrap_or(0), q)
                })
                .collect();
            series.push(Series {
                name: format!("latency:{h}:{label}"),
                group: "latency".into(),
                values,
            });
        }
    }
    StatsReport {
        step,
        starts,
        series,
        top: None,
    }
}

/// The busiest senders, recipients and remote hosts of the last `hours`, from the trace.
pub async fn top(d: &Directory, hours: u32, limit: usize) -> Result<Top, AdminError> {
    let store = d.store();
    let since = (postern_store::now() - i64::from(hours) * 3600) * 1000;
    let ids = store.trace_recent(since, limit).await?;
    let (mut senders, mut recipients, mut hosts) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for id in &ids {
        let events = store.trace_get(id).await?;
        let mut keys: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == "received" || e.kind == "delivered")
            .flat_map(|e| e.keys.iter().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            let (map, v) = match k.split_once(':') {
                Some(("from", v)) if !v.is_empty() => (&mut senders, v),
                Some(("to", v)) => (&mut recipients, v),
                Some(("host", v)) => (&mut hosts, v),
                _ => continue,
            };
            *map.entry(v.to_string()).or_insert(0u64) += 1;
        }
    }
    let best = |m: BTreeMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(10);
        v
    };
    Ok(Top {
        hours,
        messages: ids.len(),
        senders: best(senders),
        recipients: best(recipients),
        hosts: best(hosts),
    })
}

pub(crate) async fn stats(
    d: &Directory,
    cfg: &postern_config::Config,
    from: i64,
    to: i64,
    step: Option<StatStep>,
    top_hours: Option<u32>,
) -> Result<AdminReply, AdminError> {
    if to <= from {
        return Err(AdminError::new(
            "the range is empty: from must be before to",
        ));
    }
    let step = step.unwrap_or(if to - from <= 3 * 86_400 {
        StatStep::Hour
    } else {
        StatStep::Day
    });
    if (to - from) / step.secs() > 1000 {
        return Err(AdminError::new(
            "more than 1000 points: use step=day, or a shorter range",
        ));
    }
    let buckets = d.store().stats_range(step, step.start(from), to).await?;
    let mut r = report(buckets, step, from, to);
    if let Some(h) = top_hours {
        r.top = Some(top(d, h.clamp(1, 24 * 14), cfg.stats.max_top_messages).await?);
    }
    Ok(AdminReply::Stats { report: r })
}

/// ▁▂▃▄▅▆▇█ scaled to the series' largest value; a space where nothing is known.
pub fn sparkline(values: &[Option<i64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().flatten().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) => BARS[((*v).max(0) * 7 / max) as usize],
        })
        .collect()
}

impl std::fmt::Display for StatsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Some(first), Some(last)) = (self.starts.first(), self.starts.last()) else {
            return writeln!(f, "no time in the range");
        };
        let fmt = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:00"
                    ))
                    .ok()
                })
                .unwrap_or_default()
        };
        let per = match self.step {
            StatStep::Hour => "hour",
            StatStep::Day => "day",
        };
        writeln!(
            f,
            "{} to {} UTC, one point per {per}",
            fmt(*first),
            fmt(*last)
        )?;
        if self.series.is_empty() {
            writeln!(f, "nothing counted in this time")?;
        }
        let width = self.series.iter().map(|s| s.name.len()).max().unwrap_or(0);
        writeln!(
            f,
            "{:width$}  {:>9}  {:>9}  over time",
            "series", "total", "most"
        )?;
        for s in &self.series {
            let known: Vec<i64> = s.values.iter().flatten().copied().collect();
            let most = known.iter().copied().max().unwrap_or(0);
            // Samples and latencies do not add up: their total is left out.
            let total = if matches!(s.group.as_str(), "queue" | "disk" | "latency") {
                "-".to_string()
            } else {
                known.iter().sum::<i64>().to_string()
            };
            writeln!(
                f,
                "{:width$}  {total:>9}  {most:>9}  {}",
                s.name,
                sparkline(&s.values)
            )?;
        }
        if let Some(t) = &self.top {
            writeln!(
                f,
                "\nThe last {} hours ({} messages; postern trace --from/--to ADDRESS tells each story):",
                t.hours, t.messages
            )?;
            for (title, list) in [
                ("senders", &t.senders),
                ("recipients", &t.recipients),
                ("remote hosts", &t.hosts),
            ] {
                writeln!(f, "  top {title}:")?;
                if list.is_empty() {
                    writeln!(f, "    none")?;
                }
                for (k, n) in list {
                    writeln!(f, "    {n:>6}  {k}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_buckets_and_gaps_for_samples() {
        let b = |series: &str, start: i64, value: i64| StatBucket {
            series: series.into(),
            start,
            value,
        };
        let buckets = vec![
            b("received:mx", 3600, 4),
            b("queue:messages", 7200, 2),
            b("latency:smtp_accept:le_10", 3600, 1),
            b("latency:smtp_accept:le_50", 3600, 3),
            b("latency:smtp_accept:le_100", 3600, 4),
            b("latency:smtp_accept:count", 3600, 4),
        ];
        let r = report(buckets, StatStep::Hour, 3600, 3 * 3600);
        assert_eq!(r.starts, vec![3600, 7200]);
        let get = |n: &str| {
            r.series
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .values
                .clone()
        };
        assert_eq!(get("received:mx"), vec![Some(4), Some(0)]);
        assert_eq!(get("queue:messages"), vec![None, Some(2)]);
        assert_eq!(get("latency:smtp_accept:p50_ms"), vec![Some(50), None]);
        assert_eq!(get("latency:smtp_accept:p95_ms"), vec![Some(100), None]);
        assert!(r.series.iter().all(|s| !s.name.contains("le_")));
    }
}
