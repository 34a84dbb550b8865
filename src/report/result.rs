//! The result of a run, as data: what was produced and consumed, how fast, with which latencies,
//! the audit verdict and the `--assert` checks. This is the one home of the result types: the
//! text summary ([`super::summary`]), the thresholds ([`super::assert`]), fleet merges
//! ([`super::merge`]) and the HTML report read them from here, and nothing here prints.
//!
//! Serialized as JSON (`--json`, schema `kafka-workload/result/v1`, documented in
//! docs/results-schema.md and docs/results.schema.json). The JSON carries everything needed to
//! combine results exactly: the latency histograms themselves (HdrHistogram V2, base64), the
//! audit's ranges of sequence numbers, and the wall-clock windows the throughput was measured
//! over. The tallies these are built from are filled in [`super::stats`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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

/// The outcome of one condition, as recorded in the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The condition as typed.
    pub condition: String,
    /// The metric it read, by canonical name (`ack_p99`, `lost`, `producer_rate`...).
    pub metric: String,
    /// The unit of `value`: `us`, `msgs/s` or `messages`.
    pub unit: String,
    /// The measured value; `null` when the result does not have it (which fails the check).
    pub value: Option<f64>,
    /// Whether the condition held.
    pub passed: bool,
}
