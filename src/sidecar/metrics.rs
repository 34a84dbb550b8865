//! `/metrics`: the run's tallies and its clients' health as Prometheus metrics, rendered at scrape
//! time by a prometheus-client [`Collector`] in the Prometheus text format (0.0.4).
//!
//! Counters are read from the same tallies the summary is built from, so a scrape after the run's
//! last record shows the summary's numbers. Latency histograms are the tallies' HdrHistograms
//! folded into fixed Prometheus buckets. The current rate comes from [`RateWindow`], which the
//! server samples once a second. Names are `kafka_workload_*`; counters get `_total`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::health::ClientHealth;
use crate::report::stats::{ConsumerShared, ProducerShared};

/// Upper bounds of the latency buckets, seconds: 100 µs to 2 min.
const LATENCY_BUCKETS_SECS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 120.0,
];

/// How far back the current rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Recent (time, acked, consumed) readings, for the current rates.
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl RateWindow {
    /// Adds a reading and forgets those older than the window (keeping one just outside it).
    pub fn sample(&mut self, at: Instant, acked: u64, consumed: u64) {
        self.samples.push_back((at, acked, consumed));
        while self.samples.len() > 2
            && at.saturating_duration_since(self.samples[1].0) >= RATE_WINDOW
        {
            self.samples.pop_front();
        }
    }

    /// (acked, consumed) per second over the window; `None` before two readings.
    pub fn rates(&self) -> Option<(f64, f64)> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let secs = last.0.saturating_duration_since(first.0).as_secs_f64();
        (secs > 0.0).then(|| {
            (
                last.1.saturating_sub(first.1) as f64 / secs,
                last.2.saturating_sub(first.2) as f64 / secs,
            )
        })
    }
}

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The producer's tallies, when this run produces.
    pub producer: Option<Arc<ProducerShared>>,
    /// The consumer's tallies, when this run consumes.
    pub consumer: Option<Arc<ConsumerShared>>,
    /// The current rates.
    pub rates: Arc<Mutex<RateWindow>>,
}

impl Sources {
    /// (acked, consumed) now.
    pub fn counts(&self) -> (u64, u64) {
        let acked = self
            .producer
            .as_ref()
            .map_or(0, |p| p.tally.lock().expect("poisoned").acked);
        let consumed = self
            .consumer
            .as_ref()
            .map_or(0, |c| c.tally.lock().expect("poisoned").records);
        (acked, consumed)
    }

    /// The running clients that report health, by role.
    pub fn clients(&self) -> Vec<(&'static str, &ClientHealth)> {
        let mut v: Vec<(&'static str, &ClientHealth)> = Vec::new();
        // A producer that has finished (flushed, its client gone) no longer reports.
        if let Some(p) = self
            .producer
            .as_ref()
            .filter(|p| !p.done.load(std::sync::atomic::Ordering::SeqCst))
        {
            v.push(("producer", &p.health));
        }
        if let Some(c) = &self.consumer {
            v.push(("consumer", &c.health));
        }
        v
    }
}

/// A registry holding only the workload's collector.
pub fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(WorkloadCollector { sources }));
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct WorkloadCollector {
    sources: Sources,
}

/// A histogram folded into Prometheus buckets: (sum seconds, count, (bound, count) per bucket).
fn buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let count = h.len();
    let sum = if count == 0 {
        0.0
    } else {
        h.mean() * count as f64 / 1e6
    };
    // Each recorded value counts in the first bucket whose bound it does not exceed.
    let mut per_bucket = [0u64; LATENCY_BUCKETS_SECS.len()];
    for v in h.iter_recorded() {
        let us = v.value_iterated_to();
        if let Some(i) = LATENCY_BUCKETS_SECS
            .iter()
            .position(|&bound| us as f64 <= bound * 1e6)
        {
            per_bucket[i] += v.count_at_value();
        }
    }
    // prometheus-client's encoder takes per-bucket counts and writes them cumulatively.
    let per_bucket = LATENCY_BUCKETS_SECS
        .iter()
        .copied()
        .zip(per_bucket)
        .collect();
    (sum, count, per_bucket)
}

fn encode_counter(m: &mut MetricEncoder<'_>, v: u64) -> fmt::Result {
    m.encode_counter::<NoLabelSet, _, f64>(&v, None)
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    encode_counter(
        &mut e.encode_descriptor(name, help, None, MetricType::Counter)?,
        v,
    )
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn gauge_family<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, V)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram_family(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[([(&'static str, &'static str); 1], &Histogram<u64>)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let (sum, count, b) = buckets(h);
        m.encode_family(labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &b, None)?;
    }
    Ok(())
}

impl Collector for WorkloadCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.sources;
        let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
        gauge_family(
            &mut e,
            "kafka_workload_build_info",
            "kafka-workload's version and the librdkafka it links; always 1",
            &[(
                [
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("librdkafka", librdkafka),
                ],
                1i64,
            )],
        )?;
        let clients = s.clients();
        let now = Instant::now();
        gauge_family(
            &mut e,
            "kafka_workload_healthy",
            "1 when the client has a broker connection up (as /healthz says), else 0",
            &clients
                .iter()
                .map(|(role, h)| ([("role", *role)], i64::from(h.check(now).is_ok())))
                .collect::<Vec<_>>(),
        )?;
        if let Some(p) = &s.producer {
            counter(
                &mut e,
                "kafka_workload_messages_sent",
                "Messages handed to librdkafka",
                p.sent(),
            )?;
            let t = p.tally.lock().expect("poisoned");
            counter(
                &mut e,
                "kafka_workload_messages_acked",
                "Messages the brokers acknowledged",
                t.acked,
            )?;
            counter(
                &mut e,
                "kafka_workload_messages_failed",
                "Messages whose delivery failed",
                t.failed,
            )?;
            counter(
                &mut e,
                "kafka_workload_produced_bytes",
                "Value bytes of the acknowledged messages",
                t.bytes,
            )?;
            histogram_family(
                &mut e,
                "kafka_workload_ack_latency_seconds",
                "Send-to-acknowledgement latency; schedule=intended is corrected for coordinated omission under --rate",
                &[
                    ([("schedule", "intended")], &t.ack_latency),
                    ([("schedule", "actual")], &t.ack_latency_uncorrected),
                ],
            )?;
        }
        if let Some(c) = &s.consumer {
            let t = c.tally.lock().expect("poisoned");
            counter(
                &mut e,
                "kafka_workload_records_consumed",
                "Records received, of any kind",
                t.records,
            )?;
            counter(
                &mut e,
                "kafka_workload_consumed_bytes",
                "Value bytes of the records received",
                t.bytes,
            )?;
            counter(
                &mut e,
                "kafka_workload_audit_distinct",
                "Distinct kafka-workload messages received",
                t.audit.distinct(),
            )?;
            counter(
                &mut e,
                "kafka_workload_audit_duplicates",
                "kafka-workload messages received more than once",
                t.audit.duplicates(),
            )?;
            counter(
                &mut e,
                "kafka_workload_audit_out_of_order",
                "kafka-workload messages that arrived below a higher sequence number of their partition",
                t.audit.out_of_order(),
            )?;
            counter(
                &mut e,
                "kafka_workload_audit_foreign",
                "Records that are not kafka-workload messages",
                t.audit.foreign,
            )?;
            gauge(
                &mut e,
                "kafka_workload_audit_lost",
                "Sequence numbers missing below the highest one received, per producer run, summed (gaps a late record can still fill)",
                t.audit.gaps(),
            )?;
            histogram_family(
                &mut e,
                "kafka_workload_e2e_latency_seconds",
                "Produce-to-consume latency; clock=monotonic for this process's own messages, wall for others'",
                &[
                    ([("clock", "monotonic")], &t.e2e_monotonic),
                    ([("clock", "wall")], &t.e2e_wall),
                ],
            )?;
        }
        if let Some((acked, consumed)) = s.rates.lock().expect("poisoned").rates() {
            let mut rows = Vec::new();
            if s.producer.is_some() {
                rows.push(([("what", "acked")], acked));
            }
            if s.consumer.is_some() {
                rows.push(([("what", "consumed")], consumed));
            }
            gauge_family(
                &mut e,
                "kafka_workload_rate",
                "Messages per second over the last 5 s",
                &rows,
            )?;
        }

        // Errors, then librdkafka's own view of its brokers and queues.
        let mut errors = e.encode_descriptor(
            "kafka_workload_errors",
            "Errors seen, by client role and librdkafka error code: client error events (disconnects, refused logins) and failed deliveries",
            None,
            MetricType::Counter,
        )?;
        for (role, h) in &clients {
            for (kind, n) in h.errors() {
                encode_counter(
                    &mut errors.encode_family(&[("role", role.to_string()), ("kind", kind)])?,
                    n,
                )?;
            }
        }
        let digests: Vec<_> = clients
            .iter()
            .filter_map(|(role, h)| h.stats().map(|d| (*role, d)))
            .collect();
        gauge_family(
            &mut e,
            "kafka_workload_brokers_up",
            "Brokers the client has a connection up to (librdkafka statistics)",
            &digests
                .iter()
                .map(|(role, d)| ([("role", *role)], d.brokers_up() as i64))
                .collect::<Vec<_>>(),
        )?;
        let mut rtt = Vec::new();
        for (role, d) in &digests {
            for b in &d.brokers {
                for (stat, v) in [("avg", b.rtt_avg_secs), ("p99", b.rtt_p99_secs)] {
                    if let Some(v) = v {
                        rtt.push((
                            [
                                ("role", role.to_string()),
                                ("broker", b.name.clone()),
                                ("stat", stat.to_string()),
                            ],
                            v,
                        ));
                    }
                }
            }
        }
        gauge_family(
            &mut e,
            "kafka_workload_broker_rtt_seconds",
            "Broker round-trip time over librdkafka's last statistics window",
            &rtt,
        )?;
        gauge_family(
            &mut e,
            "kafka_workload_queue_messages",
            "Messages waiting in librdkafka's producer queue",
            &digests
                .iter()
                .filter(|(role, _)| *role == "producer")
                .map(|(role, d)| ([("role", *role)], d.queue_messages as i64))
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            &mut e,
            "kafka_workload_queue_bytes",
            "Bytes of the messages waiting in librdkafka's producer queue",
            &digests
                .iter()
                .filter(|(role, _)| *role == "producer")
                .map(|(role, d)| ([("role", *role)], d.queue_bytes as i64))
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            &mut e,
            "kafka_workload_consumer_lag",
            "Records between the consumer's position and the partitions' high watermarks, summed",
            &digests
                .iter()
                .filter_map(|(role, d)| d.consumer_lag.map(|lag| ([("role", *role)], lag)))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::record_latency;

    fn sources() -> Sources {
        Sources {
            producer: Some(Arc::new(ProducerShared::default())),
            consumer: Some(Arc::new(ConsumerShared::default())),
            rates: Arc::default(),
        }
    }

    fn sample<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
            .map(|l| l.rsplit(' ').next().unwrap())
    }

    #[test]
    fn counters_show_the_tallies_and_histograms_fold_into_cumulative_buckets() {
        let s = sources();
        let p = s.producer.clone().unwrap();
        p.sent.store(7, std::sync::atomic::Ordering::Relaxed);
        {
            let mut t = p.tally.lock().unwrap();
            t.acked = 5;
            t.failed = 2;
            t.bytes = 1000;
            for us in [50, 800, 3_000, 40_000, 2_000_000] {
                record_latency(&mut t.ack_latency, us);
            }
        }
        {
            let c = s.consumer.clone().unwrap();
            let mut t = c.tally.lock().unwrap();
            t.records = 4;
            t.audit.record("r", 0, 0);
            t.audit.record("r", 0, 0);
            t.audit.record("r", 0, 3);
            t.audit.record_foreign();
        }
        p.health.record_error("MessageTimedOut", None);
        let text = render(&registry(s));
        assert_eq!(
            sample(&text, "kafka_workload_messages_sent_total"),
            Some("7")
        );
        assert_eq!(
            sample(&text, "kafka_workload_messages_acked_total"),
            Some("5")
        );
        assert_eq!(
            sample(&text, "kafka_workload_messages_failed_total"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "kafka_workload_produced_bytes_total"),
            Some("1000")
        );
        assert_eq!(
            sample(&text, "kafka_workload_records_consumed_total"),
            Some("4")
        );
        assert_eq!(
            sample(&text, "kafka_workload_audit_distinct_total"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "kafka_workload_audit_duplicates_total"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "kafka_workload_audit_foreign_total"),
            Some("1")
        );
        assert_eq!(sample(&text, "kafka_workload_audit_lost"), Some("2"));
        assert_eq!(
            sample(
                &text,
                "kafka_workload_errors_total{role=\"producer\",kind=\"MessageTimedOut\"}"
            ),
            Some("1")
        );
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(
                    "kafka_workload_ack_latency_seconds_bucket{{schedule=\"intended\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(bucket("0.0001"), Some("1"));
        assert_eq!(bucket("0.001"), Some("2"));
        assert_eq!(bucket("0.05"), Some("4"));
        assert_eq!(bucket("+Inf"), Some("5"));
        assert_eq!(
            sample(
                &text,
                "kafka_workload_ack_latency_seconds_count{schedule=\"intended\"}"
            ),
            Some("5")
        );
        assert!(text.contains("# TYPE kafka_workload_ack_latency_seconds histogram"));
        assert!(text.contains("kafka_workload_build_info{version=\""));
        assert!(text.contains("kafka_workload_healthy{role=\"producer\"} 0"));
    }

    #[test]
    fn rate_window_measures_over_its_last_five_seconds() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        assert_eq!(w.rates(), None);
        for i in 0..=10u64 {
            w.sample(t0 + Duration::from_secs(i), i * 100, i * 10);
        }
        let (acked, consumed) = w.rates().unwrap();
        assert!((acked - 100.0).abs() < 1e-9 && (consumed - 10.0).abs() < 1e-9);
        assert!(w.samples.len() <= 7, "{}", w.samples.len());
    }
}
