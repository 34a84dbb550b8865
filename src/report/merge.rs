//! `kafka-workload merge`: combines the `--json` results of a fleet into the exact result one
//! observer of the whole fleet would have reported.
//!
//! Counts and bytes add up; latency percentiles are recomputed from the merged histograms (never
//! averaged); audits are merged range by range, so a sequence number that two consumers both saw
//! counts as a duplicate and a gap one consumer filled is not lost; throughput is taken over the
//! union of the inputs' wall-clock windows. What each rule means is documented in
//! docs/results-schema.md ("Merging"). Reading files and combining values only: printing and
//! thresholds are done by the caller with [`super::summary`] and [`super::assert`].

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::result::{
    AuditResult, ClientEvents, ConsumerResult, Latency, Point, ProducerResult, RunResult, Series,
    Span, Throughput, TxnResult, READABLE_SCHEMAS, SCHEMA,
};
use super::stats::{interval_histogram, latency_histogram};
use crate::workload::audit::{add_count, sum_counts, Audit};

/// Reads one `--json` result, checking its schema: v2, or v1 (read as a v2 result without
/// time series or settings).
pub fn read_result(path: &Path) -> anyhow::Result<RunResult> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let schema = value
        .get("schema")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    if !READABLE_SCHEMAS.contains(&schema.as_str()) {
        anyhow::bail!(
            "{} has schema `{schema}`, not `{SCHEMA}` or v1: not a kafka-workload result this version can read",
            path.display()
        );
    }
    serde_json::from_value(value)
        .with_context(|| format!("{} does not follow {schema}", path.display()))
}

/// Reads and merges result files.
pub fn merge_files(paths: &[impl AsRef<Path>]) -> anyhow::Result<RunResult> {
    let results = paths
        .iter()
        .map(|p| read_result(p.as_ref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    merge(&results)
}

/// Adds the histograms behind several latency summaries and reads the percentiles again.
fn merge_latency<'a>(parts: impl Iterator<Item = &'a Latency>) -> anyhow::Result<Latency> {
    add_histograms(latency_histogram(), parts)
}

/// Adds the histograms behind `parts` into `total` and reads the percentiles of the sum.
fn add_histograms<'a>(
    mut total: hdrhistogram::Histogram<u64>,
    parts: impl Iterator<Item = &'a Latency>,
) -> anyhow::Result<Latency> {
    // Inputs written by other builds may have other bounds; let the sum grow to hold them.
    total.auto(true);
    for part in parts {
        let h = part.histogram().context("reading a latency histogram")?;
        total
            .add(&h)
            .map_err(|e| anyhow::anyhow!("cannot add latency histograms: {e:?}"))?;
    }
    Ok(Latency::from_histogram(&total))
}

/// Adds up time series interval by interval (counts summed, histograms added), when they all
/// have one interval; `None` when no input has a series or their intervals differ (their
/// intervals would not line up).
pub fn merge_series<'a>(
    parts: impl Iterator<Item = Option<&'a Series>>,
) -> anyhow::Result<Option<Series>> {
    let parts: Vec<&Series> = parts.flatten().collect();
    let Some(interval_us) = parts.first().map(|s| s.interval_us) else {
        return Ok(None);
    };
    if parts.iter().any(|s| s.interval_us != interval_us) {
        return Ok(None);
    }
    let mut by_start: std::collections::BTreeMap<u64, Vec<&Point>> = Default::default();
    for s in &parts {
        for p in &s.points {
            by_start.entry(p.start_unix_us).or_default().push(p);
        }
    }
    let (Some(&first), Some(&last)) = (by_start.keys().next(), by_start.keys().last()) else {
        return Ok(None);
    };
    // An interval's histograms have 2 significant figures; their sum keeps that precision.
    let merge_lat = |ls: Vec<&Latency>| -> anyhow::Result<Option<Latency>> {
        if ls.is_empty() {
            return Ok(None);
        }
        add_histograms(interval_histogram(), ls.into_iter()).map(Some)
    };
    let mut points = Vec::new();
    let mut start = first;
    while start <= last {
        let here = by_start.get(&start).map(Vec::as_slice).unwrap_or(&[]);
        let sum = |what, f: fn(&Point) -> u64| sum_counts(here.iter().map(|p| f(p)), what);
        points.push(Point {
            start_unix_us: start,
            sent: sum("series' sent", |p| p.sent)?,
            acked: sum("series' acked", |p| p.acked)?,
            consumed: sum("series' consumed", |p| p.consumed)?,
            bytes: sum("series' bytes", |p| p.bytes)?,
            errors: sum("series' errors", |p| p.errors)?,
            ack: merge_lat(here.iter().filter_map(|p| p.ack.as_ref()).collect())?,
            e2e: merge_lat(here.iter().filter_map(|p| p.e2e.as_ref()).collect())?,
        });
        start += interval_us;
    }
    Ok(Some(Series {
        interval_us,
        points,
    }))
}

/// The outer span of the windows, and the busy time throughput is computed over.
fn windows<'a>(spans: impl Iterator<Item = &'a Option<Span>>) -> (Option<Span>, Duration) {
    let spans: Vec<Span> = spans.flatten().copied().collect();
    let outer = (!spans.is_empty()).then(|| Span {
        start_unix_us: spans.iter().map(|s| s.start_unix_us).min().unwrap_or(0),
        end_unix_us: spans.iter().map(|s| s.end_unix_us).max().unwrap_or(0),
    });
    (outer, Span::union_duration(&spans))
}

fn merge_producers(parts: &[&ProducerResult]) -> anyhow::Result<ProducerResult> {
    let sum = |what, f: fn(&ProducerResult) -> u64| sum_counts(parts.iter().map(|p| f(p)), what);
    let (acked, bytes) = (sum("acked", |p| p.acked)?, sum("bytes", |p| p.bytes)?);
    let (window, busy) = windows(parts.iter().map(|p| &p.window));
    let mut errors = std::collections::BTreeMap::new();
    for p in parts {
        for (e, &n) in &p.errors {
            let total: &mut u64 = errors.entry(e.clone()).or_insert(0);
            *total = add_count(*total, n, "producer errors")?;
        }
    }
    let mut client = ClientEvents::default();
    for p in parts {
        client.add(&p.client)?;
    }
    Ok(ProducerResult {
        sent: sum("sent", |p| p.sent)?,
        acked,
        failed: sum("failed", |p| p.failed)?,
        bytes,
        window,
        throughput: Throughput::new(acked, bytes, busy),
        ack_latency: merge_latency(parts.iter().map(|p| &p.ack_latency))?,
        ack_latency_uncorrected: merge_latency(parts.iter().map(|p| &p.ack_latency_uncorrected))?,
        errors,
        // Sequence numbers belong to their producer run: a union across runs would name nothing.
        failed_seqs: match parts {
            [one] => one.failed_seqs.clone(),
            _ => Default::default(),
        },
        client,
        transactions: merge_transactions(parts.iter().filter_map(|p| p.transactions.as_ref()))?,
        series: merge_series(parts.iter().map(|p| p.series.as_ref()))?,
    })
}

/// Sums the transactional producers' transactions; their sequence numbers stay with their own
/// runs (the merged audit takes them from each input), so a merge of several lists none.
fn merge_transactions<'a>(
    parts: impl Iterator<Item = &'a TxnResult>,
) -> anyhow::Result<Option<TxnResult>> {
    let parts: Vec<&TxnResult> = parts.collect();
    let first = match parts.as_slice() {
        [] => return Ok(None),
        [one] => return Ok(Some((*one).clone())),
        [first, ..] => first,
    };
    let sum = |what, f: fn(&TxnResult) -> u64| sum_counts(parts.iter().map(|t| f(t)), what);
    Ok(Some(TxnResult {
        transactional_id: join_distinct(parts.iter().map(|t| t.transactional_id.as_str())),
        size: first.size,
        abort_rate: first.abort_rate,
        committed: sum("committed transactions", |t| t.committed)?,
        aborted: sum("aborted transactions", |t| t.aborted)?,
        failed_commits: sum("failed commits", |t| t.failed_commits)?,
        committed_messages: sum("committed messages", |t| t.committed_messages)?,
        aborted_messages: sum("aborted messages", |t| t.aborted_messages)?,
        committed_seqs: Default::default(),
        aborted_seqs: Default::default(),
        purged: sum("purged messages", |t| t.purged)?,
        in_doubt_from: None,
        commit_latency: merge_latency(parts.iter().map(|t| &t.commit_latency))?,
        abort_latency: merge_latency(parts.iter().map(|t| &t.abort_latency))?,
    }))
}

/// The isolation a merged audit judges by: the consumers' one when they agree, else
/// read_committed (the stricter judgement: an aborted record read then fails the verdict).
fn merged_isolation(parts: &[&ConsumerResult]) -> String {
    match parts.split_first() {
        Some((first, rest)) if rest.iter().all(|c| c.isolation == first.isolation) => {
            first.isolation.clone()
        }
        _ => "read_committed".into(),
    }
}

/// Joins the distinct non-empty values in order of first appearance.
fn join_distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !v.is_empty() && !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(",")
}

fn max_opt(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values.flatten().reduce(f64::max)
}

fn merge_consumers(parts: &[&ConsumerResult]) -> anyhow::Result<ConsumerResult> {
    let records = sum_counts(parts.iter().map(|c| c.records), "records")?;
    let bytes = sum_counts(parts.iter().map(|c| c.bytes), "bytes")?;
    let (window, busy) = windows(parts.iter().map(|c| &c.window));
    // Consumers of one group share its records: what two of them both read arrived twice.
    // Different groups each read everything: overlap between them is expected.
    let mut groups: Vec<(&str, Audit)> = Vec::new();
    for c in parts {
        match groups.iter_mut().find(|(g, _)| *g == c.group_id) {
            Some((_, audit)) => audit.merge(&c.audit.audit())?,
            None => groups.push((&c.group_id, c.audit.audit())),
        }
    }
    let mut audit = Audit::default();
    for (_, group) in &groups {
        audit.merge_group(group)?;
    }
    // Each consumer's expectation was about what it alone would read; together they add up.
    let expected = match parts.iter().any(|c| c.audit.expected.is_some()) {
        true => Some(sum_counts(
            parts.iter().filter_map(|c| c.audit.expected),
            "expected records",
        )?),
        false => None,
    };
    let not_json = sum_counts(parts.iter().map(|c| c.audit.not_json), "non-JSON records")?;
    let mut client = ClientEvents::default();
    for c in parts {
        client.add(&c.client)?;
    }
    let reasons: Vec<String> = parts.iter().filter_map(|c| c.stop_reason.clone()).collect();
    Ok(ConsumerResult {
        group_id: join_distinct(parts.iter().map(|c| c.group_id.as_str())),
        isolation: merged_isolation(parts),
        records,
        bytes,
        window,
        throughput: Throughput::new(records, bytes, busy),
        group_join_ms: max_opt(parts.iter().map(|c| c.group_join_ms)),
        first_record_ms: max_opt(parts.iter().map(|c| c.first_record_ms)),
        e2e_latency: merge_latency(parts.iter().map(|c| &c.e2e_latency))?,
        e2e_latency_wall: merge_latency(parts.iter().map(|c| &c.e2e_latency_wall))?,
        stop_reason: (!reasons.is_empty())
            .then(|| join_distinct(reasons.iter().map(String::as_str)).replace(',', "; ")),
        audit: AuditResult::from_audit(&audit, not_json, expected),
        client,
        series: merge_series(parts.iter().map(|c| c.series.as_ref()))?,
    })
}

/// Merges results into one. The merged result's checks are empty: conditions given to `merge`
/// are evaluated on it afterwards.
pub fn merge(results: &[RunResult]) -> anyhow::Result<RunResult> {
    anyhow::ensure!(!results.is_empty(), "nothing to merge");
    let producers: Vec<&ProducerResult> =
        results.iter().filter_map(|r| r.producer.as_ref()).collect();
    let consumers: Vec<&ConsumerResult> =
        results.iter().filter_map(|r| r.consumer.as_ref()).collect();
    Ok(RunResult {
        schema: SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        run_id: "merged".into(),
        topic: join_distinct(results.iter().map(|r| r.topic.as_str())),
        mock_cluster: results.iter().any(|r| r.mock_cluster),
        merged_from: results.iter().map(|r| r.run_id.clone()).collect(),
        producer: if producers.is_empty() {
            None
        } else {
            Some(merge_producers(&producers)?)
        },
        consumer: if consumers.is_empty() {
            None
        } else {
            let mut merged = merge_consumers(&consumers)?;
            // Each producer's undelivered messages are gaps it accounted for, not losses; a
            // transactional producer's word on its committed and aborted ones decides for its
            // run (its failed messages are in aborted transactions).
            for r in results {
                let Some(p) = r.producer.as_ref() else {
                    continue;
                };
                match &p.transactions {
                    Some(t) => {
                        let isolation = merged.isolation.clone();
                        merged.audit.apply_transactions(&r.run_id, t, &isolation);
                    }
                    None if !p.failed_seqs.is_empty() => {
                        merged.audit.excuse_failed(&r.run_id, &p.failed_seqs);
                    }
                    None => {}
                }
            }
            Some(merged)
        },
        checks: Vec::new(),
        mongo: crate::sink::MongoResult::merged(results.iter().filter_map(|r| r.mongo.as_ref()))?,
        settings: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::{consumer_result, producer_result};
    use crate::report::stats::{record_latency, ConsumerTally, ProducerTally, Window};
    use std::time::Instant;

    /// A producer result with `n` acks of latencies `base..base+n` µs over a window of `secs`
    /// that started `ago` before `now`.
    fn producer(n: u64, base: u64, now: Instant, ago: Duration, secs: u64) -> ProducerResult {
        let mut t = ProducerTally::default();
        for i in 0..n {
            t.acked += 1;
            t.bytes += 100;
            record_latency(&mut t.ack_latency, base + i);
            record_latency(&mut t.ack_latency_uncorrected, base + i);
        }
        let start = now - ago;
        let w = Window {
            start: Some(start),
            end: Some(start + Duration::from_secs(secs)),
        };
        producer_result(n, &t, &w, Default::default())
    }

    fn consumer(run: &str, seqs: std::ops::Range<u64>, expected: Option<u64>) -> ConsumerResult {
        let mut t = ConsumerTally::default();
        for s in seqs {
            t.records += 1;
            t.bytes += 100;
            t.audit.record(run, 0, s);
            record_latency(&mut t.e2e_monotonic, 1000 + s);
        }
        t.audit.record_foreign();
        t.not_json = 1;
        consumer_result(&t, expected, "g1", Default::default())
    }

    fn run(id: &str, p: Option<ProducerResult>, c: Option<ConsumerResult>) -> RunResult {
        RunResult {
            schema: SCHEMA.into(),
            run_id: id.into(),
            topic: "t".into(),
            producer: p,
            consumer: c,
            ..Default::default()
        }
    }

    #[test]
    fn merged_producers_are_the_sum_with_percentiles_from_the_merged_histogram() {
        // Two producers working over the same 10 s: the fleet's rate is the sum of the rates.
        let now = Instant::now();
        let a = producer(1000, 1000, now, Duration::from_secs(60), 10);
        let b = producer(3000, 5000, now, Duration::from_secs(60), 10);
        let m = merge(&[
            run("a", Some(a.clone()), None),
            run("b", Some(b.clone()), None),
        ])
        .unwrap();
        let p = m.producer.unwrap();
        assert_eq!((p.sent, p.acked, p.bytes), (4000, 4000, 400_000));
        assert_eq!(p.throughput.seconds, 10.0);
        assert_eq!(
            p.throughput.msgs_per_sec,
            a.throughput.msgs_per_sec + b.throughput.msgs_per_sec
        );
        let mut direct = a.ack_latency.histogram().unwrap();
        direct.add(b.ack_latency.histogram().unwrap()).unwrap();
        assert_eq!(p.ack_latency, Latency::from_histogram(&direct));
        assert_eq!(p.ack_latency.count, 4000);
        assert_eq!(p.ack_latency.max_us, b.ack_latency.max_us);
        assert_eq!(m.merged_from, ["a", "b"]);
        assert!(m.consumer.is_none());
    }

    #[test]
    fn throughput_is_over_the_union_of_windows() {
        // [0, 10) and [5, 15) overlap: 15 s busy. A third [100, 110) adds 10 s, not the gap.
        let now = Instant::now();
        let a = producer(1500, 1, now, Duration::from_secs(200), 10);
        let b = producer(1500, 1, now, Duration::from_secs(195), 10);
        let c = producer(2500, 1, now, Duration::from_secs(100), 10);
        let m = merge(&[
            run("a", Some(a), None),
            run("b", Some(b), None),
            run("c", Some(c), None),
        ])
        .unwrap();
        let p = m.producer.unwrap();
        assert!(
            (p.throughput.seconds - 25.0).abs() < 0.01,
            "{}",
            p.throughput.seconds
        );
        assert!(
            (p.throughput.msgs_per_sec - 220.0).abs() < 0.5,
            "{}",
            p.throughput.msgs_per_sec
        );
        let w = p.window.unwrap();
        assert!((w.duration().as_secs_f64() - 110.0).abs() < 0.01);
    }

    #[test]
    fn merged_consumers_union_their_audits() {
        // Two consumers of one group split a run: 0..600 and 600..1000 — clean, 1000 distinct.
        let a = consumer("r", 0..600, Some(600));
        let b = consumer("r", 600..1000, Some(400));
        let m = merge(&[run("a", None, Some(a)), run("b", None, Some(b))]).unwrap();
        let c = m.consumer.unwrap();
        assert_eq!(c.records, 1000);
        assert_eq!(c.audit.distinct, 1000);
        assert_eq!(c.audit.expected, Some(1000));
        assert_eq!((c.audit.lost, c.audit.duplicates), (0, 0));
        assert_eq!((c.audit.foreign, c.audit.not_json), (2, 2));
        assert_eq!(c.audit.verdict, "clean");
        assert_eq!(c.audit.runs["r"].seen.range_count(), 1);
        assert_eq!(c.e2e_latency.count, 1000);
        assert_eq!(c.group_id, "g1");

        // Overlap is duplicated; a hole nobody filled is lost.
        let a = consumer("r", 0..600, None);
        let b = consumer("r", 500..900, None);
        let d = consumer("r", 950..1000, None);
        let m = merge(&[
            run("a", None, Some(a)),
            run("b", None, Some(b)),
            run("d", None, Some(d)),
        ])
        .unwrap();
        let c = m.consumer.unwrap();
        assert_eq!(
            (c.audit.distinct, c.audit.duplicates, c.audit.lost),
            (950, 100, 50)
        );
        assert_eq!(c.audit.verdict, "loss");
    }

    #[test]
    fn consumers_of_different_groups_each_read_everything_without_duplicating() {
        let a = consumer("r", 0..1000, None);
        let mut b = consumer("r", 0..1000, None);
        b.group_id = "g2".into();
        // A third consumer shares g2 with b: what it reads again is a duplicate.
        let mut d = consumer("r", 900..1000, None);
        d.group_id = "g2".into();
        let m = merge(&[
            run("a", None, Some(a)),
            run("b", None, Some(b)),
            run("d", None, Some(d)),
        ])
        .unwrap();
        let c = m.consumer.unwrap();
        assert_eq!(
            (c.audit.distinct, c.audit.duplicates, c.audit.lost),
            (1000, 100, 0)
        );
        // Each consumer read one foreign record: g2's two add up, g1's one is the same again.
        assert_eq!((c.audit.verdict.as_str(), c.audit.foreign), ("clean", 2));
        assert_eq!(c.group_id, "g1,g2");
    }

    #[test]
    fn series_of_several_instances_add_up_interval_by_interval() {
        use crate::report::stats::SeriesTally;
        let series = |acks: &[(u64, u64)]| {
            // (at_us, latency_us) pairs on an anchor at Unix second 1000.
            let mut t = SeriesTally::new(Duration::from_secs(1), 1_000_000_000);
            for &(at, lat) in acks {
                t.sent(at.saturating_sub(lat));
                t.acked(at, 10, lat);
            }
            Series::from_tally(&t, true).unwrap()
        };
        let a = series(&[(100_000, 1_000), (1_200_000, 5_000), (3_500_000, 2_000)]);
        let b = series(&[(1_900_000, 9_000), (2_100_000, 100)]);
        // a: seconds 1000, 1001, (1002 empty), 1003; b: 1001, 1002.
        assert_eq!(a.points.len(), 4);
        assert_eq!(a.points[2].acked, 0);
        assert_eq!(a.points[0].start_unix_us, 1_000_000_000);
        let m = merge_series([Some(&a), Some(&b), None].into_iter())
            .unwrap()
            .unwrap();
        let acked: Vec<u64> = m.points.iter().map(|p| p.acked).collect();
        assert_eq!(acked, vec![1, 2, 1, 1]);
        assert_eq!(m.points.iter().map(|p| p.bytes).sum::<u64>(), 50);
        let second = m.points[1].ack.as_ref().unwrap();
        assert_eq!(second.count, 2);
        // 5 ms and 9 ms in one interval: the max is 9 ms (within 1%).
        assert!((8_900..=9_100).contains(&second.max_us), "{second:?}");
        assert!(m.points[2].ack.as_ref().unwrap().max_us <= 101);
        // Other intervals do not line up: no merged series.
        let mut c = b.clone();
        c.interval_us = 500_000;
        assert!(merge_series([Some(&a), Some(&c)].into_iter())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_v1_result_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.json");
        let mut v =
            serde_json::to_value(run("old", None, Some(consumer("r", 0..10, None)))).unwrap();
        v["schema"] = "kafka-workload/result/v1".into();
        v["consumer"].as_object_mut().unwrap().remove("series");
        std::fs::write(&path, v.to_string()).unwrap();
        let r = read_result(&path).unwrap();
        assert_eq!(r.consumer.unwrap().series, None);
    }

    #[test]
    fn merging_one_result_through_json_reproduces_it() {
        let r = run(
            "x",
            Some(producer(
                500,
                300,
                Instant::now(),
                Duration::from_secs(5),
                2,
            )),
            Some(consumer("x", 0..500, Some(500))),
        );
        let json = serde_json::to_string(&r).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let mut m = merge(&[back]).unwrap();
        assert_eq!(m.merged_from, ["x"]);
        m.run_id = "x".into();
        m.merged_from.clear();
        m.version = r.version.clone();
        assert_eq!(m, r);
    }

    #[test]
    fn files_of_another_schema_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"schema": "something/else", "x": 1}"#).unwrap();
        let err = merge_files(&[&path]).unwrap_err();
        assert!(
            format!("{err:#}").contains("schema `something/else`"),
            "{err:#}"
        );
    }
}
