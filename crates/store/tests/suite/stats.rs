//! The dashboard's series (`StatsStore`).

use std::sync::Arc;

use postern_store::*;

/// The first second of a day (2023-11-14 UTC).
pub const DAY: i64 = 19_675 * 86_400;
const HOUR: i64 = 3600;

pub fn sum(series: &str, at: i64, value: i64) -> StatPoint {
    StatPoint {
        series: series.into(),
        at,
        value,
        kind: StatKind::Sum,
    }
}

pub fn max(series: &str, at: i64, value: i64) -> StatPoint {
    StatPoint {
        kind: StatKind::Max,
        ..sum(series, at, value)
    }
}

pub fn buckets(v: &[(&str, i64, i64)]) -> Vec<StatBucket> {
    v.iter()
        .map(|&(series, start, value)| StatBucket {
            series: series.into(),
            start,
            value,
        })
        .collect()
}

/// Points go to their hour's bucket and their day's: sums add up across calls, a maximum
/// keeps the largest (a negative one into an empty bucket too); ranges include `from`, not
/// `to`, ordered by series (bytes) then start; pruning drops only what is past each horizon.
pub async fn stats_series(store: Arc<dyn Store>) {
    store.stats_add(Vec::new()).await.unwrap();
    store
        .stats_add(vec![
            sum("mail.in", DAY + HOUR + 10, 3),
            sum("mail.in", DAY + 2 * HOUR + 5, 4),
            max("queue", DAY + HOUR + 1, -5),
            sum("Z", DAY, 1),
        ])
        .await
        .unwrap();
    store
        .stats_add(vec![
            sum("mail.in", DAY + HOUR + 20, 10),
            max("queue", DAY + HOUR + 2, -7),
            max("queue", DAY + 2 * HOUR, 2),
            max("queue", DAY + 2 * HOUR + 1, 1),
            sum("Z", DAY + 86_400, 1),
        ])
        .await
        .unwrap();
    let hours = |from, to| {
        let store = store.clone();
        async move { store.stats_range(StatStep::Hour, from, to).await.unwrap() }
    };
    let days = |from, to| {
        let store = store.clone();
        async move { store.stats_range(StatStep::Day, from, to).await.unwrap() }
    };
    assert_eq!(
        hours(DAY, DAY + 86_400).await,
        buckets(&[
            ("Z", DAY, 1),
            ("mail.in", DAY + HOUR, 13),
            ("mail.in", DAY + 2 * HOUR, 4),
            ("queue", DAY + HOUR, -5),
            ("queue", DAY + 2 * HOUR, 2),
        ]),
        "the next day's hour is past `to`"
    );
    assert_eq!(
        hours(DAY + HOUR, DAY + 2 * HOUR).await,
        buckets(&[("mail.in", DAY + HOUR, 13), ("queue", DAY + HOUR, -5)]),
        "`from` is in, `to` is out"
    );
    assert_eq!(
        days(DAY, DAY + 2 * 86_400).await,
        buckets(&[
            ("Z", DAY, 1),
            ("Z", DAY + 86_400, 1),
            ("mail.in", DAY, 17),
            ("queue", DAY, 2),
        ])
    );
    assert_eq!(
        days(DAY + 1, DAY + 86_400).await,
        buckets(&[]),
        "a bucket is in a range by its start"
    );

    // Concurrent adds to the same buckets lose nothing.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..5 {
                store
                    .stats_add(vec![sum("many", DAY + 5, 1), sum("many", DAY + HOUR, 2)])
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let many = |v: Vec<StatBucket>| -> Vec<StatBucket> {
        v.into_iter().filter(|b| b.series == "many").collect()
    };
    assert_eq!(
        many(hours(DAY, DAY + 86_400).await),
        buckets(&[("many", DAY, 40), ("many", DAY + HOUR, 80)])
    );
    assert_eq!(
        many(days(DAY, DAY + 86_400).await),
        buckets(&[("many", DAY, 120)])
    );

    // Hours kept back from the hour of `now`: the one at the horizon stays.
    let now = DAY + 2 * HOUR + STATS_HOURS_KEPT * HOUR + 100;
    assert_eq!(store.stats_prune(now).await.unwrap(), 5);
    assert_eq!(
        hours(i64::MIN, i64::MAX).await,
        buckets(&[
            ("Z", DAY + 86_400, 1),
            ("mail.in", DAY + 2 * HOUR, 4),
            ("queue", DAY + 2 * HOUR, 2),
        ])
    );
    assert_eq!(days(i64::MIN, i64::MAX).await.len(), 5, "days kept longer");
    assert_eq!(store.stats_prune(now).await.unwrap(), 0);
    // Days kept back from the day of `now`.
    let now = DAY + 86_400 + STATS_DAYS_KEPT * 86_400 + 5;
    assert_eq!(store.stats_prune(now).await.unwrap(), 3 + 4);
    assert!(hours(i64::MIN, i64::MAX).await.is_empty());
    assert_eq!(
        days(i64::MIN, i64::MAX).await,
        buckets(&[("Z", DAY + 86_400, 1)])
    );
}
