//! The result of a run: what was produced and consumed, how fast, with which latencies, and the
//! audit verdict. Serialized as JSON (`--json`, schema `kafka-workload/result/v1`, documented in
//! docs/results-schema.md and docs/results.schema.json) and printed as text.
//!
//! The JSON carries everything needed to combine results exactly ([`super::merge`]): the latency
//! histograms themselves (HdrHistogram V2, base64), the audit's ranges of sequence numbers, and
//! the wall-clock windows the throughput was measured over. Building and printing only: the
//! tallies are filled in [`super::stats`], thresholds live in [`super::assert`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::assert::Check;
use super::stats::{decode_histogram, encode_histogram, ConsumerTally, ProducerTally, Window};
use crate::workload::audit::{Audit, RangeSet, RunAudit};

/// Schema identifier written into every JSON result.
pub const SCHEMA: &str = "kafka-workload/result/v1";

/// Percentiles of one latency histogram, in microseconds, with the histogram itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of values recorded.
    pub count: u64,
    /// Mean, µs (one decimal).
    pub mean_us: f64,
    /// 50th percentile, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Maximum, µs.
    pub max_us: u64,
    /// The histogram (µs, 3 significant figures): HdrHistogram V2 deflate serialization, base64.
    /// Empty means no values.
    pub histogram: String,
}

impl Latency {
    /// Reads the percentiles from a histogram and keeps the histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            histogram: encode_histogram(h),
        }
    }

    /// The histogram these figures were read from.
    pub fn histogram(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.histogram)
    }
}

/// A stretch of wall-clock time, in microseconds since the Unix epoch.
///
/// The end is the start plus the monotonic clock's elapsed time, so the length is immune to
/// wall-clock steps during the run; only the position depends on the wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// When the work started, µs since the epoch.
    pub start_unix_us: u64,
    /// When the work ended, µs since the epoch.
    pub end_unix_us: u64,
}

impl Span {
    /// Places a monotonic window on the wall clock; `None` if the work never started.
    pub fn from_window(w: &Window) -> Option<Span> {
        let start = w.start?;
        let (now_wall, now_mono) = (SystemTime::now(), Instant::now());
        let ago = now_mono.saturating_duration_since(start);
        let start_unix_us = now_wall
            .checked_sub(ago)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as u64);
        Some(Span {
            start_unix_us,
            end_unix_us: start_unix_us + w.elapsed().as_micros() as u64,
        })
    }

    /// Its length.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.end_unix_us.saturating_sub(self.start_unix_us))
    }

    /// The total length of the union of `spans`: overlapping time counts once, and time when
    /// none of them was working does not count.
    pub fn union_duration(spans: &[Span]) -> Duration {
        let mut sorted = spans.to_vec();
        sorted.sort_by_key(|s| s.start_unix_us);
        let mut total = 0u64;
        let mut current: Option<(u64, u64)> = None;
        for s in sorted {
            current = match current {
                Some((a, b)) if s.start_unix_us <= b => Some((a, b.max(s.end_unix_us))),
                Some((a, b)) => {
                    total += b - a;
                    Some((s.start_unix_us, s.end_unix_us.max(s.start_unix_us)))
                }
                None => Some((s.start_unix_us, s.end_unix_us.max(s.start_unix_us))),
            };
        }
        if let Some((a, b)) = current {
            total += b - a;
        }
        Duration::from_micros(total)
    }
}

/// Throughput figures for a count of messages and bytes over a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Seconds the work took.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Mebibytes (2^20 bytes) per second.
    pub mib_per_sec: f64,
}

impl Throughput {
    /// Rates for `msgs` and `bytes` over `elapsed`.
    pub fn new(msgs: u64, bytes: u64, elapsed: Duration) -> Throughput {
        let secs = elapsed.as_secs_f64();
        let per = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        Throughput {
            seconds: round3(secs),
            msgs_per_sec: round3(per(msgs as f64)),
            mb_per_sec: round3(per(bytes as f64) / 1e6),
            mib_per_sec: round3(per(bytes as f64) / 1048576.0),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The producer's side of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProducerResult {
    /// Messages handed to librdkafka.
    pub sent: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages whose delivery failed.
    pub failed: u64,
    /// Value bytes acknowledged.
    pub bytes: u64,
    /// From the first send to the end of the final flush; `None` if nothing was sent.
    pub window: Option<Span>,
    /// Rates of acknowledged messages over the window.
    pub throughput: Throughput,
    /// Send → acknowledgement, from the scheduled send time (coordinated omission corrected).
    pub ack_latency: Latency,
    /// Send → acknowledgement, from the actual send time.
    pub ack_latency_uncorrected: Latency,
    /// Delivery errors by librdkafka's description, with counts.
    pub errors: BTreeMap<String, u64>,
    /// The sequence numbers of the messages whose delivery failed, as `[start, end)` ranges.
    #[serde(default)]
    pub failed_seqs: RangeSet,
    /// What the producer's client went through (errors, retries, disconnects, leader changes).
    #[serde(default)]
    pub client: ClientEvents,
}

/// What one Kafka client went through during the run: librdkafka's error events by kind (and,
/// for the producer, its failed deliveries), and its connection counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientEvents {
    /// Error events and failed deliveries by librdkafka's error code name
    /// (`BrokerTransportFailure`, `AllBrokersDown`, `MessageTimedOut`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Requests librdkafka retried (`txretries` over all brokers).
    pub retries: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
    /// Broker connections lost.
    pub disconnects: u64,
    /// Partition leader changes the client saw (sampled once a second).
    pub leader_changes: u64,
}

impl ClientEvents {
    /// Whether anything at all happened.
    pub fn is_quiet(&self) -> bool {
        *self == ClientEvents::default()
    }

    /// Adds another client's events (for fleet merges).
    pub fn add(&mut self, other: &ClientEvents) {
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
        self.retries += other.retries;
        self.request_timeouts += other.request_timeouts;
        self.disconnects += other.disconnects;
        self.leader_changes += other.leader_changes;
    }
}

/// The consumer's side of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerResult {
    /// The consumer group.
    pub group_id: String,
    /// Records read, of any kind.
    pub records: u64,
    /// Value bytes read.
    pub bytes: u64,
    /// From the first record to the last; `None` if no record arrived.
    pub window: Option<Span>,
    /// Rates over the window (fetch time: the group join is excluded).
    pub throughput: Throughput,
    /// Milliseconds from subscribing to the first partition assignment.
    pub group_join_ms: Option<f64>,
    /// Milliseconds from the assignment to the first record.
    pub first_record_ms: Option<f64>,
    /// End-to-end latency of this process's own messages (monotonic clock).
    pub e2e_latency: Latency,
    /// End-to-end latency of other processes' messages (wall clocks: only as good as clock sync).
    pub e2e_latency_wall: Latency,
    /// Why the consumer stopped.
    pub stop_reason: Option<String>,
    /// The audit.
    pub audit: AuditResult,
    /// What the consumer's client went through (errors, retries, disconnects, leader changes).
    #[serde(default)]
    pub client: ClientEvents,
}

/// The audit's verdict and counts, and the ranges they were computed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// `clean` (nothing lost) or `loss`.
    pub verdict: String,
    /// Distinct kafka-workload messages.
    pub distinct: u64,
    /// Messages expected (--expect, or this run's acknowledged count).
    pub expected: Option<u64>,
    /// Messages known lost: gaps below each run's highest sequence number, or the shortfall
    /// against `expected` when that is larger.
    pub lost: u64,
    /// Records that repeated a sequence number.
    pub duplicates: u64,
    /// Records that arrived after a higher sequence number on their partition.
    pub out_of_order: u64,
    /// Records from other producers (client.py JSON, plain text).
    pub foreign: u64,
    /// Foreign records that were not JSON at all.
    pub not_json: u64,
    /// Per producer run id: the sequence numbers that arrived, as `[start, end)` ranges, with
    /// that run's duplicates and out-of-order arrivals.
    pub runs: BTreeMap<String, RunAudit>,
    /// Gaps the producer accounted for: messages it reported as failed (never acknowledged), so
    /// not counted as lost.
    #[serde(default)]
    pub not_delivered: u64,
}

impl AuditResult {
    /// The verdict for an audit, against an expected count when there is one.
    pub fn from_audit(audit: &Audit, not_json: u64, expected: Option<u64>) -> AuditResult {
        let distinct = audit.distinct();
        let gaps = audit.gaps();
        let shortfall = expected.map_or(0, |e| e.saturating_sub(distinct));
        let lost = gaps.max(shortfall);
        AuditResult {
            verdict: if lost == 0 { "clean" } else { "loss" }.into(),
            distinct,
            expected,
            lost,
            duplicates: audit.duplicates(),
            out_of_order: audit.out_of_order(),
            foreign: audit.foreign,
            not_json,
            runs: audit.runs.clone(),
            not_delivered: 0,
        }
    }

    /// Takes the producer's word for the messages of `run_id` whose delivery failed: the gaps
    /// they leave are not losses. The verdict is recomputed.
    pub fn excuse_failed(&mut self, run_id: &str, failed: &RangeSet) {
        let Some(max) = self.runs.get(run_id).and_then(|r| r.seen.max()) else {
            return;
        };
        let seen = &self.runs[run_id].seen;
        let excused: u64 = failed
            .ranges()
            .filter(|&(s, _)| s <= max)
            .map(|(s, e)| {
                let e = e.min(max + 1);
                (e - s) - seen.count_within(s, e)
            })
            .sum();
        self.not_delivered += excused;
        let audit = self.audit();
        let gaps = audit.gaps().saturating_sub(self.not_delivered);
        let shortfall = self.expected.map_or(0, |e| e.saturating_sub(self.distinct));
        self.lost = gaps.max(shortfall);
        self.verdict = if self.lost == 0 { "clean" } else { "loss" }.into();
    }

    /// The audit these figures were computed from.
    pub fn audit(&self) -> Audit {
        Audit {
            runs: self.runs.clone(),
            foreign: self.foreign,
        }
    }
}

/// A run's whole result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// kafka-workload's version.
    pub version: String,
    /// The producer run id (also in every message); `merged` for a merge.
    pub run_id: String,
    /// The topic (a merge of several topics lists them, comma-separated).
    pub topic: String,
    /// Whether this ran on the in-process mock cluster.
    pub mock_cluster: bool,
    /// For a merge: the run ids of the results combined, in order; empty for a single run.
    #[serde(default)]
    pub merged_from: Vec<String>,
    /// The producer's result, when it produced.
    pub producer: Option<ProducerResult>,
    /// The consumer's result, when it consumed.
    pub consumer: Option<ConsumerResult>,
    /// The --assert conditions and whether each held.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// What the MongoDB sink stored, with `--mongo-uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongo: Option<crate::sink::MongoResult>,
}

/// Builds the producer result from its tally, its sending window and its client's events.
pub fn producer_result(
    sent: u64,
    t: &ProducerTally,
    window: &Window,
    client: ClientEvents,
) -> ProducerResult {
    let span = Span::from_window(window);
    ProducerResult {
        sent,
        acked: t.acked,
        failed: t.failed,
        bytes: t.bytes,
        window: span,
        throughput: Throughput::new(
            t.acked,
            t.bytes,
            span.map_or(Duration::ZERO, |s| s.duration()),
        ),
        ack_latency: Latency::from_histogram(&t.ack_latency),
        ack_latency_uncorrected: Latency::from_histogram(&t.ack_latency_uncorrected),
        errors: t.errors.clone(),
        failed_seqs: t.failed_seqs.clone(),
        client,
    }
}

/// Builds the consumer result from its tally and its client's events.
pub fn consumer_result(
    t: &ConsumerTally,
    expected: Option<u64>,
    group_id: &str,
    client: ClientEvents,
) -> ConsumerResult {
    let span = Span::from_window(&t.window);
    ConsumerResult {
        group_id: group_id.to_string(),
        records: t.records,
        bytes: t.bytes,
        window: span,
        throughput: Throughput::new(
            t.records,
            t.bytes,
            span.map_or(Duration::ZERO, |s| s.duration()),
        ),
        group_join_ms: t.join_time.map(|d| d.as_secs_f64() * 1000.0),
        first_record_ms: t.first_record_after_join.map(|d| d.as_secs_f64() * 1000.0),
        e2e_latency: Latency::from_histogram(&t.e2e_monotonic),
        e2e_latency_wall: Latency::from_histogram(&t.e2e_wall),
        stop_reason: t.stop_reason.clone(),
        audit: AuditResult::from_audit(&t.audit, t.not_json, expected),
        client,
    }
}

/// Writes the result as pretty JSON with a final newline.
pub fn write_json(w: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, r)?;
    writeln!(w)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn write_latency(w: &mut impl Write, label: &str, l: &Latency) -> std::io::Result<()> {
    if l.count == 0 {
        return writeln!(w, "  {label:<22} (none)");
    }
    writeln!(
        w,
        "  {label:<22} p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} samples)",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.count
    )
}

/// `a-b, c, d-e` for the first `limit` ranges of `set` (inclusive ends), and how many more.
pub fn describe_ranges(set: &RangeSet, limit: usize) -> String {
    let mut parts: Vec<String> = set
        .ranges()
        .take(limit)
        .map(|(s, e)| {
            if e - s == 1 {
                s.to_string()
            } else {
                format!("{s}-{}", e - 1)
            }
        })
        .collect();
    let total = set.range_count();
    if total > limit {
        parts.push(format!("and {} more ranges", total - limit));
    }
    if parts.is_empty() {
        return "unknown (not kafka-workload values)".into();
    }
    parts.join(", ")
}

/// One line of a client's events, e.g. `3 retries, 2 disconnects, 1 leader change; errors:
/// BrokerTransportFailure 4, AllBrokersDown 1`.
fn write_client(w: &mut impl Write, c: &ClientEvents) -> std::io::Result<()> {
    if c.is_quiet() {
        return Ok(());
    }
    let mut line = format!(
        "  client: {} retries, {} disconnects, {} request timeouts, {} leader changes",
        c.retries, c.disconnects, c.request_timeouts, c.leader_changes
    );
    if !c.errors.is_empty() {
        let errors: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line.push_str("; errors: ");
        line.push_str(&errors.join(", "));
    }
    writeln!(w, "{line}")
}

/// Prints the human summary.
pub fn write_text(w: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    writeln!(
        w,
        "== kafka-workload summary (topic {}, run {}) ==",
        r.topic, r.run_id
    )?;
    if r.mock_cluster {
        writeln!(w, "  cluster: in-process librdkafka mock cluster")?;
    }
    if !r.merged_from.is_empty() {
        writeln!(
            w,
            "  merged from {} results: {}",
            r.merged_from.len(),
            r.merged_from.join(", ")
        )?;
    }
    if let Some(p) = &r.producer {
        writeln!(
            w,
            "producer: {} sent, {} acknowledged, {} failed, {} bytes in {:.3} s: {:.0} msgs/s, {:.2} MB/s ({:.2} MiB/s)",
            p.sent, p.acked, p.failed, p.bytes, p.throughput.seconds, p.throughput.msgs_per_sec, p.throughput.mb_per_sec, p.throughput.mib_per_sec
        )?;
        write_latency(w, "ack latency", &p.ack_latency)?;
        if p.ack_latency_uncorrected != p.ack_latency {
            write_latency(w, "ack (uncorrected)", &p.ack_latency_uncorrected)?;
        }
        if p.failed > 0 {
            writeln!(
                w,
                "  not delivered: sequence numbers {}",
                describe_ranges(&p.failed_seqs, 10)
            )?;
        }
        write_client(w, &p.client)?;
    }
    if let Some(c) = &r.consumer {
        writeln!(
            w,
            "consumer: {} records, {} bytes in {:.3} s: {:.0} msgs/s, {:.2} MB/s ({:.2} MiB/s)",
            c.records,
            c.bytes,
            c.throughput.seconds,
            c.throughput.msgs_per_sec,
            c.throughput.mb_per_sec,
            c.throughput.mib_per_sec
        )?;
        if let Some(join) = c.group_join_ms {
            writeln!(
                w,
                "  group join {join:.0} ms, first record {:.0} ms after it",
                c.first_record_ms.unwrap_or(0.0)
            )?;
        }
        write_latency(w, "end-to-end latency", &c.e2e_latency)?;
        if c.e2e_latency_wall.count > 0 {
            write_latency(w, "end-to-end (wall clock)", &c.e2e_latency_wall)?;
            writeln!(
                w,
                "  (wall-clock latency across processes is only as good as the clocks' sync)"
            )?;
        }
        let a = &c.audit;
        writeln!(
            w,
            "audit: {} — {} distinct{}, {} lost, {} duplicates, {} out of order, {} foreign ({} not JSON), {} producer run(s)",
            a.verdict.to_uppercase(),
            a.distinct,
            a.expected.map(|e| format!(" of {e} expected")).unwrap_or_default(),
            a.lost,
            a.duplicates,
            a.out_of_order,
            a.foreign,
            a.not_json,
            a.runs.len()
        )?;
        if a.not_delivered > 0 {
            writeln!(
                w,
                "  {} gaps are messages the producer reported as not delivered (not lost)",
                a.not_delivered
            )?;
        }
        if let Some(reason) = &c.stop_reason {
            writeln!(w, "  consumer stopped: {reason}")?;
        }
        write_client(w, &c.client)?;
    }
    if let Some(m) = &r.mongo {
        crate::sink::write_text(w, m)?;
    }
    super::assert::write_checks(w, &r.checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_ranges_are_described_with_inclusive_ends_and_a_limit() {
        let mut set = RangeSet::default();
        set.insert_range(10, 20);
        set.insert(25);
        set.insert_range(30, 32);
        assert_eq!(describe_ranges(&set, 5), "10-19, 25, 30-31");
        assert_eq!(describe_ranges(&set, 2), "10-19, 25, and 1 more ranges");
    }

    #[test]
    fn failed_seqs_excused_are_not_loss_but_other_gaps_still_are() {
        let mut a = Audit::default();
        for s in (0..100).filter(|s| !(10..20).contains(s) && *s != 50) {
            a.record("r", 0, s);
        }
        let mut r = AuditResult::from_audit(&a, 0, Some(89));
        assert_eq!((r.lost, r.verdict.as_str()), (11, "loss"));
        let mut failed = RangeSet::default();
        failed.insert_range(10, 20);
        failed.insert(500); // beyond what arrived: not a gap, nothing to excuse
        r.excuse_failed("r", &failed);
        assert_eq!(
            (r.lost, r.not_delivered, r.verdict.as_str()),
            (1, 10, "loss")
        );
        failed.insert(50);
        let mut r = AuditResult::from_audit(&a, 0, Some(89));
        r.excuse_failed("r", &failed);
        assert_eq!(
            (r.lost, r.not_delivered, r.verdict.as_str()),
            (0, 11, "clean")
        );
    }

    #[test]
    fn client_events_print_one_line_only_when_something_happened() {
        let mut out = Vec::new();
        write_client(&mut out, &ClientEvents::default()).unwrap();
        assert!(out.is_empty());
        let mut c = ClientEvents {
            retries: 3,
            disconnects: 2,
            leader_changes: 1,
            ..Default::default()
        };
        c.errors.insert("AllBrokersDown".into(), 1);
        write_client(&mut out, &c).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  client: 3 retries, 2 disconnects, 0 request timeouts, 1 leader changes; errors: AllBrokersDown 1\n"
        );
    }

    #[test]
    fn throughput_labels_mb_and_mib_separately() {
        let t = Throughput::new(1000, 2_097_152, Duration::from_secs(2));
        assert_eq!(t.msgs_per_sec, 500.0);
        assert_eq!(t.mib_per_sec, 1.0);
        assert_eq!(t.mb_per_sec, 1.049);
    }

    #[test]
    fn audit_verdict_counts_gaps_and_shortfall_as_loss() {
        let mut a = Audit::default();
        for s in [0, 1, 3] {
            a.record("r", 0, s);
        }
        let r = AuditResult::from_audit(&a, 0, None);
        assert_eq!((r.lost, r.verdict.as_str()), (1, "loss"));
        let r = AuditResult::from_audit(&a, 0, Some(10));
        assert_eq!(r.lost, 7);
        a.record("r", 0, 2);
        let r = AuditResult::from_audit(&a, 0, Some(4));
        assert_eq!((r.lost, r.verdict.as_str()), (0, "clean"));
    }

    /// A result built the way a `--producer --consumer` run builds it, with a gap, a duplicate,
    /// a foreign record and a check.
    fn realistic() -> RunResult {
        use crate::report::stats::record_latency;
        let mut p = ProducerTally::default();
        let mut c = ConsumerTally::default();
        for seq in 0..1000u64 {
            p.acked += 1;
            p.bytes += 200;
            record_latency(&mut p.ack_latency, 900 + seq);
            record_latency(&mut p.ack_latency_uncorrected, 800 + seq);
            if seq != 500 {
                c.audit.record("run1", (seq % 3) as i32, seq);
                record_latency(&mut c.e2e_monotonic, 2000 + seq);
            }
        }
        c.audit.record("run1", 0, 7);
        c.audit.record_foreign();
        c.not_json = 1;
        c.records = 1001;
        c.join_time = Some(Duration::from_millis(3100));
        c.stop_reason = Some("no record for 15 s".into());
        p.errors.insert("Local: Message timed out".into(), 2);
        let started = std::time::Instant::now() - Duration::from_secs(3);
        let w = Window {
            start: Some(started),
            end: Some(started + Duration::from_secs(2)),
        };
        c.window = w;
        let mut r = RunResult {
            schema: SCHEMA.into(),
            version: "0.1.0".into(),
            run_id: "run1".into(),
            topic: "t".into(),
            producer: Some(producer_result(1000, &p, &w, Default::default())),
            consumer: Some(consumer_result(&c, Some(1000), "g1", Default::default())),
            ..Default::default()
        };
        let conds =
            crate::report::assert::parse_all(&["p99<20ms".into(), "lost==0".into()]).unwrap();
        r.checks = crate::report::assert::evaluate_all(&conds, &r);
        r
    }

    fn schema_validator() -> jsonschema::Validator {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/results.schema.json")).unwrap();
        jsonschema::validator_for(&schema).expect("the schema itself is valid")
    }

    #[test]
    fn json_result_validates_against_the_published_schema() {
        let v = schema_validator();
        let mut out = Vec::new();
        write_json(&mut out, &realistic()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let errors: Vec<String> = v
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // Producer-only and consumer-only results validate too.
        let mut only = realistic();
        only.consumer = None;
        assert!(v.is_valid(&serde_json::to_value(&only).unwrap()));
        only = realistic();
        only.producer = None;
        assert!(v.is_valid(&serde_json::to_value(&only).unwrap()));
    }

    #[test]
    fn schema_rejects_a_result_missing_a_field_or_with_a_wrong_type() {
        let v = schema_validator();
        let good = serde_json::to_value(realistic()).unwrap();
        let mut missing = good.clone();
        missing["consumer"]["audit"]
            .as_object_mut()
            .unwrap()
            .remove("lost");
        assert!(!v.is_valid(&missing));
        let mut wrong = good.clone();
        wrong["producer"]["ack_latency"]["p99_us"] = serde_json::json!("fast");
        assert!(!v.is_valid(&wrong));
        let mut extra = good.clone();
        extra["surprise"] = serde_json::json!(1);
        assert!(!v.is_valid(&extra));
        // The MongoDB section is optional but checked when present.
        let mut mongo = good;
        mongo["mongo"] = serde_json::json!({"database": "t", "producer": {"collection": "producer",
            "written": 3, "duplicates": 0, "batches": 1, "retries": 0, "unstored": 0}, "consumer": null});
        assert!(v.is_valid(&mongo));
        mongo["mongo"]["producer"]["written"] = serde_json::json!(-1);
        assert!(!v.is_valid(&mongo));
    }

    #[test]
    fn json_roundtrip_keeps_every_field_and_the_histograms() {
        let r = realistic();
        let mut out = Vec::new();
        write_json(&mut out, &r).unwrap();
        let back: RunResult = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, r);
        let p = back.producer.unwrap();
        let h = p.ack_latency.histogram().unwrap();
        assert_eq!(h.len(), 1000);
        assert_eq!(Latency::from_histogram(&h), p.ack_latency);
        let c = back.consumer.unwrap();
        assert_eq!(
            (c.audit.lost, c.audit.duplicates, c.audit.foreign),
            (1, 1, 1)
        );
        assert_eq!(c.audit.runs["run1"].seen.range_count(), 2);
        assert_eq!(back.checks.len(), 2);
        assert!(back.checks[0].passed && !back.checks[1].passed);
        let w = p.window.unwrap();
        assert_eq!(w.end_unix_us - w.start_unix_us, 2_000_000);
        assert_eq!(p.throughput.seconds, 2.0);
    }

    #[test]
    fn text_summary_names_throughput_latency_and_verdict() {
        let mut h = crate::report::stats::latency_histogram();
        h.record(1500).unwrap();
        let r = RunResult {
            schema: SCHEMA.into(),
            topic: "t".into(),
            run_id: "r".into(),
            producer: Some(ProducerResult {
                sent: 1,
                acked: 1,
                bytes: 100,
                throughput: Throughput::new(1, 100, Duration::from_millis(10)),
                ack_latency: Latency::from_histogram(&h),
                ack_latency_uncorrected: Latency::from_histogram(&h),
                ..Default::default()
            }),
            consumer: Some(ConsumerResult {
                audit: AuditResult {
                    verdict: "clean".into(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_text(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("100 msgs/s"), "{text}");
        assert!(text.contains("p50 1.500 ms"), "{text}");
        assert!(text.contains("audit: CLEAN"), "{text}");
    }
}
