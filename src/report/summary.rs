//! The result of a run: what was produced and consumed, how fast, with which latencies, and the
//! audit verdict. Serialized as JSON (`--json`, schema `kafka-workload/result/v1`, documented in
//! docs/results-schema.md) and printed as text.

use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stats::{ConsumerTally, ProducerTally};
use crate::workload::audit::Audit;

/// Schema identifier written into every JSON result.
pub const SCHEMA: &str = "kafka-workload/result/v1";

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of values recorded.
    pub count: u64,
    /// Mean, µs.
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
}

impl Latency {
    /// Reads the percentiles from a histogram.
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
        }
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
    /// Rates of acknowledged messages over the sending window.
    pub throughput: Throughput,
    /// Send → acknowledgement, from the scheduled send time (coordinated omission corrected).
    pub ack_latency: Latency,
    /// Send → acknowledgement, from the actual send time.
    pub ack_latency_uncorrected: Latency,
}

/// The consumer's side of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsumerResult {
    /// Records read, of any kind.
    pub records: u64,
    /// Value bytes read.
    pub bytes: u64,
    /// Rates over the window from the first to the last record (fetch time, join excluded).
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
}

/// The audit's verdict and counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// Distinct kafka-workload messages.
    pub distinct: u64,
    /// Messages expected (--expect, or this run's acknowledged count).
    pub expected: Option<u64>,
    /// Messages known lost: gaps below each run's highest sequence number, plus the shortfall
    /// against `expected`.
    pub lost: u64,
    /// Records that repeated a sequence number.
    pub duplicates: u64,
    /// Records that arrived after a higher sequence number on their partition.
    pub out_of_order: u64,
    /// Records from other producers (client.py JSON, plain text).
    pub foreign: u64,
    /// Foreign records that were not JSON at all.
    pub not_json: u64,
    /// Producer runs seen.
    pub runs: usize,
    /// `clean` or `loss`.
    pub verdict: String,
}

impl AuditResult {
    /// The verdict for an audit, against an expected count when there is one.
    pub fn from_audit(audit: &Audit, not_json: u64, expected: Option<u64>) -> AuditResult {
        let distinct = audit.distinct();
        let gaps = audit.gaps();
        let shortfall = expected.map_or(0, |e| e.saturating_sub(distinct));
        let lost = gaps.max(shortfall);
        AuditResult {
            distinct,
            expected,
            lost,
            duplicates: audit.duplicates(),
            out_of_order: audit.out_of_order(),
            foreign: audit.foreign,
            not_json,
            runs: audit.runs.len(),
            verdict: if lost == 0 { "clean" } else { "loss" }.into(),
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
    /// The producer run id (also in every message).
    pub run_id: String,
    /// The topic.
    pub topic: String,
    /// Whether this ran on the in-process mock cluster.
    pub mock_cluster: bool,
    /// The producer's result, when it produced.
    pub producer: Option<ProducerResult>,
    /// The consumer's result, when it consumed.
    pub consumer: Option<ConsumerResult>,
}

/// Builds the producer result from its tally.
pub fn producer_result(sent: u64, t: &ProducerTally, elapsed: Duration) -> ProducerResult {
    ProducerResult {
        sent,
        acked: t.acked,
        failed: t.failed,
        bytes: t.bytes,
        throughput: Throughput::new(t.acked, t.bytes, elapsed),
        ack_latency: Latency::from_histogram(&t.ack_latency),
        ack_latency_uncorrected: Latency::from_histogram(&t.ack_latency_uncorrected),
    }
}

/// Builds the consumer result from its tally.
pub fn consumer_result(t: &ConsumerTally, expected: Option<u64>) -> ConsumerResult {
    ConsumerResult {
        records: t.records,
        bytes: t.bytes,
        throughput: Throughput::new(t.records, t.bytes, t.window.elapsed()),
        group_join_ms: t.join_time.map(|d| d.as_secs_f64() * 1000.0),
        first_record_ms: t.first_record_after_join.map(|d| d.as_secs_f64() * 1000.0),
        e2e_latency: Latency::from_histogram(&t.e2e_monotonic),
        e2e_latency_wall: Latency::from_histogram(&t.e2e_wall),
        stop_reason: t.stop_reason.clone(),
        audit: AuditResult::from_audit(&t.audit, t.not_json, expected),
    }
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
            a.runs
        )?;
        if let Some(reason) = &c.stop_reason {
            writeln!(w, "  consumer stopped: {reason}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
