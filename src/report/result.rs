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

use super::stats::{
    decode_histogram, encode_histogram, ClosedLatency, ConsumerTally, Percentiles, ProducerTally,
    SeriesTally, TxnTally, Window,
};
use crate::workload::audit::{add_count, Audit, RangeSet, RunAudit};

/// Schema identifier written into every JSON result.
pub const SCHEMA: &str = "kafka-workload/result/v2";

/// The schemas `merge` and `report` read: this one, and v1 (no time series), which v2 only
/// extends.
pub const READABLE_SCHEMAS: [&str; 2] = [SCHEMA, "kafka-workload/result/v1"];

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
        Latency::from_parts(Percentiles::of(h), encode_histogram(h))
    }

    fn from_parts(p: Percentiles, histogram: String) -> Latency {
        Latency {
            count: p.count,
            mean_us: p.mean,
            p50_us: p.p50,
            p90_us: p.p90,
            p99_us: p.p99,
            p999_us: p.p999,
            max_us: p.max,
            histogram,
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

/// A time series: what happened in each interval of the run (`--series-interval`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The interval, µs. Intervals are aligned on the Unix epoch, so the series of several
    /// instances with the same interval line up.
    pub interval_us: u64,
    /// The intervals, oldest first, without holes (an interval that saw nothing has zeros).
    pub points: Vec<Point>,
}

/// One interval of a [`Series`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When the interval starts, µs since the epoch (a multiple of the interval).
    pub start_unix_us: u64,
    /// Messages sent in it (producer; counted at their send time).
    #[serde(default)]
    pub sent: u64,
    /// Messages acknowledged in it (producer).
    #[serde(default)]
    pub acked: u64,
    /// Records consumed in it (consumer).
    #[serde(default)]
    pub consumed: u64,
    /// Value bytes acknowledged (producer) or consumed (consumer).
    #[serde(default)]
    pub bytes: u64,
    /// Failed deliveries (producer) or consumer errors (consumer).
    #[serde(default)]
    pub errors: u64,
    /// Ack latency of the messages acknowledged in it (producer; coordinated omission
    /// corrected); its histogram has 2 significant figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Latency>,
    /// End-to-end latency of the records consumed in it (consumer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<Latency>,
}

impl Series {
    /// The series a tally holds; `None` when it is disabled or saw nothing. `producer` says
    /// whether its latencies are ack latencies (else end-to-end).
    pub fn from_tally(t: &SeriesTally, producer: bool) -> Option<Series> {
        if t.interval_us() == 0 {
            return None;
        }
        let latency =
            |l: Option<ClosedLatency>| l.map(|l| Latency::from_parts(l.percentiles, l.histogram));
        let points: Vec<Point> = t
            .points()
            .into_iter()
            .map(|(start, p)| {
                let lat = latency(p.latency);
                let (ack, e2e) = if producer { (lat, None) } else { (None, lat) };
                Point {
                    start_unix_us: start,
                    sent: p.counts.sent,
                    acked: p.counts.acked,
                    consumed: p.counts.consumed,
                    bytes: p.counts.bytes,
                    errors: p.counts.errors,
                    ack,
                    e2e,
                }
            })
            .collect();
        (!points.is_empty()).then_some(Series {
            interval_us: t.interval_us(),
            points,
        })
    }

    /// The interval in seconds.
    pub fn interval_secs(&self) -> f64 {
        self.interval_us as f64 / 1e6
    }
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
    /// With --transactional: its transactions, which sequence numbers they committed and which
    /// they aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TxnResult>,
    /// Sent, acked, failed, bytes and ack latency per interval (absent in v1 results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
}

/// A transactional producer's transactions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxnResult {
    /// The `transactional.id` (a merge lists them, comma-separated).
    pub transactional_id: String,
    /// Messages per transaction (--txn-size).
    pub size: u64,
    /// Fraction aborted on purpose (--abort-rate).
    pub abort_rate: f64,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted.
    pub aborted: u64,
    /// Of `aborted`, those --abort-rate did not ask for: their commit failed.
    pub failed_commits: u64,
    /// Messages of the committed transactions.
    pub committed_messages: u64,
    /// Messages of the aborted transactions.
    pub aborted_messages: u64,
    /// Sequence numbers the committed transactions hold, as `[start, end)` ranges (empty in a
    /// merge of several producers: sequence numbers belong to their run).
    pub committed_seqs: RangeSet,
    /// Sequence numbers the aborted transactions held.
    pub aborted_seqs: RangeSet,
    /// Messages librdkafka purged from its queue when their transaction was aborted.
    pub purged: u64,
    /// Set when the producer was still running (a checkpoint) or could not end its last
    /// transaction: from this sequence number on, the outcome is the broker's to tell (a
    /// read_committed consumer reads what was committed; the rest was aborted).
    pub in_doubt_from: Option<u64>,
    /// `commit_transaction` call to return (flushing its last messages included).
    pub commit_latency: Latency,
    /// `abort_transaction` call to return.
    pub abort_latency: Latency,
}

impl TxnResult {
    /// From the producer's tally; `running` marks a checkpoint (the transactions from the
    /// first unsettled sequence number on are in doubt).
    pub fn from_tally(t: &TxnTally, running: bool) -> TxnResult {
        TxnResult {
            transactional_id: t.id.clone(),
            size: t.size,
            abort_rate: t.abort_rate,
            committed: t.committed,
            aborted: t.aborted,
            failed_commits: t.failed_commits,
            committed_messages: t.committed_seqs.len(),
            aborted_messages: t.aborted_seqs.len(),
            committed_seqs: t.committed_seqs.clone(),
            aborted_seqs: t.aborted_seqs.clone(),
            purged: t.purged,
            in_doubt_from: (running || t.open_from.is_some()).then_some(t.settled_below),
            commit_latency: Latency::from_histogram(&t.commit_latency),
            abort_latency: Latency::from_histogram(&t.abort_latency),
        }
    }
}

/// What one transactional producer run's outcomes mean for the consumers that read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxnAudit {
    /// The consumers' `isolation.level`.
    pub isolation: String,
    /// The committed sequence numbers (the producer's word).
    pub committed: RangeSet,
    /// The aborted sequence numbers (the producer's word).
    pub aborted: RangeSet,
    /// Committed messages that were not read: lost.
    pub committed_missing: u64,
    /// Records of aborted transactions that were read (a failure under read_committed).
    pub aborted_read: u64,
    /// From this sequence number on the producer did not record the outcome (it was killed):
    /// what a read_committed consumer read there was committed, the rest aborted by the broker.
    pub in_doubt_from: Option<u64>,
    /// Records read at or above `in_doubt_from`.
    pub in_doubt_read: u64,
    /// The highest sequence number read at or above `in_doubt_from`.
    pub in_doubt_last_read: Option<u64>,
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

    /// Adds another client's events (for fleet merges); an error when a count would pass
    /// u64::MAX.
    pub fn add(&mut self, other: &ClientEvents) -> anyhow::Result<()> {
        for (k, &n) in &other.errors {
            let total = self.errors.entry(k.clone()).or_insert(0);
            *total = add_count(*total, n, "client errors")?;
        }
        self.retries = add_count(self.retries, other.retries, "retries")?;
        self.request_timeouts = add_count(
            self.request_timeouts,
            other.request_timeouts,
            "request timeouts",
        )?;
        self.disconnects = add_count(self.disconnects, other.disconnects, "disconnects")?;
        self.leader_changes =
            add_count(self.leader_changes, other.leader_changes, "leader changes")?;
        Ok(())
    }
}

/// The consumer's side of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerResult {
    /// The consumer group.
    pub group_id: String,
    /// `isolation.level`: `read_committed` or `read_uncommitted` (empty in results written
    /// before transactions were audited: librdkafka's default, read_committed).
    #[serde(default)]
    pub isolation: String,
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
    /// Records, bytes, errors and end-to-end latency per interval (absent in v1 results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
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
    /// Gaps that aborted (or in-doubt, not committed) transactions account for: not lost.
    #[serde(default)]
    pub not_committed: u64,
    /// Records of aborted transactions that were read. Under read_committed the verdict is then
    /// `aborted_read`; under read_uncommitted they are only counted.
    #[serde(default)]
    pub aborted_read: u64,
    /// Per transactional producer run id: its committed and aborted ranges and what of them
    /// was read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transactions: BTreeMap<String, TxnAudit>,
    /// Set when the consumer ran beside its producer and stopped once that run was complete:
    /// the verdict judges this run only. Other producers' runs on the topic were read only as
    /// far as it got; they are listed in `runs`, but their gaps are not losses (a fleet merge
    /// judges every run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_run: Option<String>,
}

impl AuditResult {
    /// The verdict for an audit, against an expected count when there is one.
    pub fn from_audit(audit: &Audit, not_json: u64, expected: Option<u64>) -> AuditResult {
        let mut r = AuditResult {
            verdict: String::new(),
            distinct: audit.distinct(),
            expected,
            lost: 0,
            duplicates: audit.duplicates(),
            out_of_order: audit.out_of_order(),
            foreign: audit.foreign,
            not_json,
            runs: audit.runs.clone(),
            not_delivered: 0,
            not_committed: 0,
            aborted_read: 0,
            transactions: BTreeMap::new(),
            judged_run: None,
        };
        r.judge();
        r
    }

    /// Judges run `run_id` only (see `judged_run`); the verdict is recomputed.
    pub fn judge_only(&mut self, run_id: &str) {
        self.judged_run = Some(run_id.to_string());
        self.judge();
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
        self.judge();
    }

    /// Takes a transactional producer's word for run `run_id`: its committed messages must all
    /// have been read, its aborted ones must not have been under read_committed, and the gaps
    /// aborted transactions leave are not losses. Replaces any earlier word on the run; the
    /// verdict is recomputed.
    pub fn apply_transactions(&mut self, run_id: &str, txn: &TxnResult, isolation: &str) {
        let empty = RangeSet::default();
        let seen = self.runs.get(run_id).map_or(&empty, |r| &r.seen);
        let read_of =
            |set: &RangeSet| -> u64 { set.ranges().map(|(s, e)| seen.count_within(s, e)).sum() };
        let in_doubt_read = txn
            .in_doubt_from
            .map_or(0, |d| seen.count_within(d, u64::MAX));
        let audit = TxnAudit {
            isolation: isolation.to_string(),
            committed: txn.committed_seqs.clone(),
            aborted: txn.aborted_seqs.clone(),
            committed_missing: txn.committed_seqs.len() - read_of(&txn.committed_seqs),
            aborted_read: read_of(&txn.aborted_seqs),
            in_doubt_from: txn.in_doubt_from,
            in_doubt_read,
            in_doubt_last_read: seen
                .max()
                .filter(|&m| txn.in_doubt_from.is_some_and(|d| m >= d)),
        };
        self.transactions.insert(run_id.to_string(), audit);
        self.judge();
    }

    /// Recomputes `lost`, `not_committed`, `aborted_read` and the verdict from the ranges and
    /// the producers' words. For a transactional run only its committed messages count: the
    /// gaps below its highest sequence number read that are not committed messages are
    /// excused, and committed messages above it are lost too.
    fn judge(&mut self) {
        let mut judged = self.audit();
        if let Some(run) = &self.judged_run {
            judged.runs.retain(|id, _| id == run);
        }
        let mut gaps = judged.gaps();
        let (mut not_committed, mut tail, mut aborted_read) = (0, 0, 0);
        let mut read_committed = false;
        for (run, t) in &self.transactions {
            aborted_read += t.aborted_read;
            read_committed |= t.isolation != "read_uncommitted";
            let seen = self.runs.get(run).map(|r| &r.seen);
            let top = seen.and_then(|s| s.max()).map_or(0, |m| m + 1);
            let run_gaps = seen.map_or(0, |s| s.missing_below(top));
            // Committed messages below `top` that were not read: the run's real gaps.
            let missing_below: u64 = t
                .committed
                .ranges()
                .filter(|&(s, _)| s < top)
                .map(|(s, e)| {
                    let e = e.min(top);
                    (e - s) - seen.map_or(0, |seen| seen.count_within(s, e))
                })
                .sum();
            not_committed += run_gaps.saturating_sub(missing_below);
            tail += t.committed_missing.saturating_sub(missing_below);
        }
        gaps = gaps.saturating_sub(not_committed) + tail;
        self.not_committed = not_committed;
        self.aborted_read = aborted_read;
        let gaps = gaps.saturating_sub(self.not_delivered);
        // Aborted records that were read do not stand in for expected (committed) ones.
        let distinct = match &self.judged_run {
            Some(_) => judged.distinct(),
            None => self.distinct,
        };
        let counted = distinct.saturating_sub(aborted_read);
        let shortfall = self.expected.map_or(0, |e| e.saturating_sub(counted));
        self.lost = gaps.max(shortfall);
        self.verdict = if aborted_read > 0 && read_committed {
            "aborted_read"
        } else if self.lost > 0 {
            "loss"
        } else {
            "clean"
        }
        .into();
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
    /// The run's settings by name, as a report shows them (no secrets); absent in v1 results
    /// and merges.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
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
        transactions: None,
        series: Series::from_tally(&t.series, true),
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
        isolation: String::new(),
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
        series: Series::from_tally(&t.series, false),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(pairs: &[(u64, u64)]) -> RangeSet {
        let mut set = RangeSet::default();
        for &(s, e) in pairs {
            set.insert_range(s, e);
        }
        set
    }

    /// Transactions of 10: [0,10) [20,30) committed, [10,20) aborted.
    fn txn() -> TxnResult {
        TxnResult {
            transactional_id: "tx".into(),
            size: 10,
            committed: 2,
            aborted: 1,
            committed_messages: 20,
            aborted_messages: 10,
            committed_seqs: ranges(&[(0, 10), (20, 30)]),
            aborted_seqs: ranges(&[(10, 20)]),
            ..Default::default()
        }
    }

    fn audit_of(seqs: impl Iterator<Item = u64>, expected: Option<u64>) -> AuditResult {
        let mut a = Audit::default();
        for s in seqs {
            a.record("r", 0, s);
        }
        AuditResult::from_audit(&a, 0, expected)
    }

    #[test]
    fn committed_all_read_and_aborted_none_is_clean_with_the_aborted_gap_excused() {
        let mut r = audit_of((0..10).chain(20..30), Some(20));
        assert_eq!(r.verdict, "loss"); // before the producer's word: a gap of 10
        r.apply_transactions("r", &txn(), "read_committed");
        assert_eq!(
            (r.verdict.as_str(), r.lost, r.not_committed),
            ("clean", 0, 10)
        );
        assert_eq!(r.transactions["r"].committed_missing, 0);
        assert_eq!(r.transactions["r"].aborted_read, 0);
    }

    #[test]
    fn an_aborted_record_read_under_read_committed_fails_the_verdict() {
        let mut r = audit_of((0..10).chain(20..30).chain([15]), Some(20));
        r.apply_transactions("r", &txn(), "read_committed");
        assert_eq!(
            (r.verdict.as_str(), r.aborted_read, r.lost),
            ("aborted_read", 1, 0)
        );
    }

    #[test]
    fn read_uncommitted_counts_aborted_records_without_failing() {
        let mut r = audit_of(0..30, Some(20));
        r.apply_transactions("r", &txn(), "read_uncommitted");
        assert_eq!(
            (r.verdict.as_str(), r.aborted_read, r.lost),
            ("clean", 10, 0)
        );
    }

    #[test]
    fn a_missing_committed_record_is_lost_below_and_above_the_highest_read() {
        // 5 is missing (a gap), and 25..30 (past the highest read) too.
        let mut r = audit_of((0..5).chain(6..10).chain(20..25), None);
        r.apply_transactions("r", &txn(), "read_committed");
        assert_eq!((r.verdict.as_str(), r.lost), ("loss", 6));
        assert_eq!(r.transactions["r"].committed_missing, 6);
        assert_eq!(r.not_committed, 10);
    }

    #[test]
    fn records_past_an_in_doubt_point_were_committed_by_the_broker_and_the_rest_excused() {
        let mut t = txn();
        t.in_doubt_from = Some(30);
        // The producer died after 30; the broker committed 30..40 and aborted what came after.
        let mut r = audit_of((0..10).chain(20..40), None);
        r.apply_transactions("r", &t, "read_committed");
        let a = &r.transactions["r"];
        assert_eq!((a.in_doubt_read, a.in_doubt_last_read), (10, Some(39)));
        assert_eq!((r.verdict.as_str(), r.lost), ("clean", 0));
    }

    #[test]
    fn judging_one_run_leaves_the_gaps_of_runs_read_part_way_out() {
        let mut a = Audit::default();
        for s in 0..100 {
            a.record("mine", 0, s);
        }
        // Another producer's run, read only as far as partition 0 got: gaps.
        for s in (0..300).step_by(3) {
            a.record("theirs", 0, s);
        }
        let mut r = AuditResult::from_audit(&a, 0, Some(100));
        assert_eq!((r.verdict.as_str(), r.lost), ("loss", 198));
        r.judge_only("mine");
        assert_eq!((r.verdict.as_str(), r.lost), ("clean", 0));
        // Its own gaps still count.
        let mut b = Audit::default();
        for s in (0..100).filter(|s| *s != 42) {
            b.record("mine", 0, s);
        }
        let mut r = AuditResult::from_audit(&b, 0, Some(100));
        r.judge_only("mine");
        assert_eq!((r.verdict.as_str(), r.lost), ("loss", 1));
    }

    #[test]
    fn a_transactional_result_survives_json() {
        let mut r = audit_of((0..10).chain(20..30), Some(20));
        r.apply_transactions("r", &txn(), "read_committed");
        let back: AuditResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let p = ProducerResult {
            transactions: Some(txn()),
            ..Default::default()
        };
        let back: ProducerResult =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
