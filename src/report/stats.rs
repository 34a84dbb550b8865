//! The tallies the Kafka loops fill: counts, bytes, latency histograms (µs) and the audit.
//!
//! Each tally has one writer (the producer's delivery-report thread, the consumer loop) and is
//! behind an uncontended mutex so that the progress reporter can take snapshots. Sending an event
//! per message down a channel would cost more than the work it reports.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::sidecar::health::ClientHealth;
use crate::workload::audit::Audit;

/// Highest latency the histograms track, in µs (1 hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in µs with 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds")
}

/// Records `us` into `h`, clamped to the histogram's range.
#[inline]
pub fn record_latency(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// The figures read from one latency histogram, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean, rounded to one decimal.
    pub mean: f64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl Percentiles {
    /// Reads them from `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Encodes a histogram the way HdrHistogram's tools exchange them: V2 deflate serialization in
/// standard base64 (the `HISTFAAA...` strings that HdrHistogram's log processors read).
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::Serializer as _;
    let mut bytes = Vec::new();
    hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes what [`encode_histogram`] wrote (plain V2 serialization is read too); an empty string
/// is an empty histogram.
pub fn decode_histogram(encoded: &str) -> anyhow::Result<Histogram<u64>> {
    use anyhow::Context as _;
    use base64::Engine as _;
    if encoded.is_empty() {
        return Ok(latency_histogram());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .context("histogram is not base64")?;
    refuse_oversized_claim(&bytes)?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| anyhow::anyhow!("histogram is not an HdrHistogram V2 serialization: {e:?}"))
}

/// hdrhistogram sizes its read buffer from the length the header claims, before reading: an
/// 80-byte input claiming 4 GiB would have it allocate 4 GiB. A claim beyond the bytes present is
/// refused here. (A compressed histogram's inner header is checked by hdrhistogram only after
/// inflating, which bounds it by what the deflate stream really holds.)
fn refuse_oversized_claim(bytes: &[u8]) -> anyhow::Result<()> {
    const V2: u32 = 0x1c84_9313;
    const V2_COMPRESSED: u32 = 0x1c84_9314;
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (Some(cookie), Some(claimed)) = (word(0), word(4)) else {
        return Ok(());
    };
    let header = match cookie as u32 {
        V2 => 40,
        V2_COMPRESSED => 8,
        _ => return Ok(()),
    };
    anyhow::ensure!(
        claimed <= bytes.len().saturating_sub(header),
        "histogram header claims {claimed} bytes, but {} follow it",
        bytes.len().saturating_sub(header)
    );
    Ok(())
}

/// What the producer's delivery reports add up to.
#[derive(Debug, Clone)]
pub struct ProducerTally {
    /// Messages acknowledged by the brokers.
    pub acked: u64,
    /// Messages whose delivery failed.
    pub failed: u64,
    /// Value bytes acknowledged.
    pub bytes: u64,
    /// Ack latency from the scheduled send time (coordinated omission corrected), µs.
    pub ack_latency: Histogram<u64>,
    /// Ack latency from the actual send time, µs.
    pub ack_latency_uncorrected: Histogram<u64>,
    /// Delivery errors by name, with counts.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Sequence numbers of the messages whose delivery failed.
    pub failed_seqs: crate::workload::audit::RangeSet,
    /// The time series: sent (by send time), acked, failed, bytes and ack latency per interval.
    pub series: SeriesTally,
}

impl Default for ProducerTally {
    fn default() -> Self {
        ProducerTally {
            acked: 0,
            failed: 0,
            bytes: 0,
            ack_latency: latency_histogram(),
            ack_latency_uncorrected: latency_histogram(),
            errors: Default::default(),
            failed_seqs: Default::default(),
            series: SeriesTally::default(),
        }
    }
}

/// The producer's shared state: the send loop counts `sent`, the delivery thread fills `tally`.
#[derive(Debug, Default)]
pub struct ProducerShared {
    /// Messages handed to librdkafka.
    pub sent: AtomicU64,
    /// Set when the producer has finished (flushed or given up).
    pub done: AtomicBool,
    /// Delivery-report tally.
    pub tally: Mutex<ProducerTally>,
    /// When sending started and ended.
    pub window: Mutex<Window>,
    /// What the producer's librdkafka client reports about its brokers (for `--metrics-addr`).
    pub health: Arc<ClientHealth>,
    /// With --transactional: the transactions so far (written by the send loop, and by the
    /// delivery thread for purged messages).
    pub transactions: Mutex<Option<TxnTally>>,
}

/// What a transactional producer's transactions add up to.
#[derive(Debug, Clone)]
pub struct TxnTally {
    /// The `transactional.id`.
    pub id: String,
    /// Messages per transaction (--txn-size).
    pub size: u64,
    /// --abort-rate.
    pub abort_rate: f64,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted (on purpose, or because a commit failed).
    pub aborted: u64,
    /// Of `aborted`, those not planned by --abort-rate: a commit that failed and was aborted.
    pub failed_commits: u64,
    /// Sequence numbers of the committed transactions' messages.
    pub committed_seqs: crate::workload::audit::RangeSet,
    /// Sequence numbers of the aborted transactions' messages.
    pub aborted_seqs: crate::workload::audit::RangeSet,
    /// The first sequence number of the transaction in progress, if one is open.
    pub open_from: Option<u64>,
    /// Everything below this sequence number belongs to a finished transaction.
    pub settled_below: u64,
    /// Messages librdkafka purged from its queue when a transaction was aborted.
    pub purged: u64,
    /// `commit_transaction` call → return, µs (flushing the transaction's last messages included).
    pub commit_latency: Histogram<u64>,
    /// `abort_transaction` call → return, µs.
    pub abort_latency: Histogram<u64>,
}

impl TxnTally {
    /// An empty tally for the producer with transactional id `id`.
    pub fn new(id: &str, size: u64, abort_rate: f64) -> Self {
        TxnTally {
            id: id.to_string(),
            size,
            abort_rate,
            committed: 0,
            aborted: 0,
            failed_commits: 0,
            committed_seqs: Default::default(),
            aborted_seqs: Default::default(),
            open_from: None,
            settled_below: 0,
            purged: 0,
            commit_latency: latency_histogram(),
            abort_latency: latency_histogram(),
        }
    }

    /// Records the end of the transaction of sequence numbers `[from, to)`, committed or not,
    /// after `took`.
    pub fn finish(&mut self, from: u64, to: u64, committed: bool, took: Duration) {
        let us = took.as_micros() as u64;
        if committed {
            self.committed += 1;
            self.committed_seqs.insert_range(from, to);
            record_latency(&mut self.commit_latency, us);
        } else {
            self.aborted += 1;
            self.aborted_seqs.insert_range(from, to);
            record_latency(&mut self.abort_latency, us);
        }
        self.open_from = None;
        self.settled_below = self.settled_below.max(to);
    }
}

/// Decides which transactions are aborted on purpose: a fraction `rate` of them, spread evenly
/// (with 0.1, the 10th, 20th, 30th ...), so a run is reproducible and its audit predictable.
#[derive(Debug, Clone)]
pub struct AbortPlan {
    rate: f64,
    owed: f64,
}

impl AbortPlan {
    /// A plan aborting the fraction `rate` (0..=1) of transactions.
    pub fn new(rate: f64) -> Self {
        AbortPlan {
            rate: rate.clamp(0.0, 1.0),
            owed: 0.0,
        }
    }

    /// Whether the next transaction is to be aborted.
    pub fn next_aborts(&mut self) -> bool {
        self.owed += self.rate;
        // The tolerance absorbs the rounding of repeated additions (0.1 ten times is 0.9999...).
        if self.owed >= 1.0 - 1e-9 {
            self.owed -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The most intervals a series keeps (a day of 1 s intervals); older ones are dropped first, so
/// a `--forever` sidecar's memory stays bounded.
pub const MAX_SERIES_POINTS: usize = 86_400;

/// One interval's counts, as the loops add them up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointCounts {
    /// Messages handed to librdkafka (counted at their send time).
    pub sent: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Records consumed.
    pub consumed: u64,
    /// Value bytes acknowledged or consumed.
    pub bytes: u64,
    /// Failed deliveries (producer) or consumer errors (consumer).
    pub errors: u64,
}

/// A closed interval's latency: its figures, read once when it closed, and its histogram
/// encoded with [`encode_histogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClosedLatency {
    /// The figures.
    pub percentiles: Percentiles,
    /// The histogram, encoded.
    pub histogram: String,
}

/// An interval of a series: its counts and, when latencies were recorded in it, their histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointTally {
    /// The counts.
    pub counts: PointCounts,
    /// The latency of the interval (ack latency for a producer, end-to-end for a consumer).
    pub latency: Option<ClosedLatency>,
}

/// Per-interval tallies for the time series: counts, bytes and one small latency histogram per
/// interval. Intervals are aligned on the Unix epoch (1 s intervals start on whole seconds), so
/// the series of several instances line up and merge exactly, histogram by histogram.
///
/// Only the interval latencies are being recorded in keeps a live histogram (latencies arrive
/// in time order from one thread); a closed interval keeps its figures and its encoded
/// histogram, a few hundred bytes. Disabled (records nothing) until [`SeriesTally::new`] gives
/// it an interval.
#[derive(Debug, Clone, Default)]
pub struct SeriesTally {
    interval_us: u64,
    /// The Unix time, µs, of the instant the loops' `at_us` count from.
    anchor_unix_us: u64,
    /// The interval index (start time / interval) of `points[0]`.
    first: u64,
    /// The intervals from `first` on, without holes: a lookup is an index, not a search (the
    /// delivery thread does two per acknowledgement).
    points: VecDeque<PointTally>,
    /// The interval whose latency histogram is open, with the histogram.
    open: Option<(u64, Histogram<u64>)>,
}

/// A latency histogram for one interval: µs, 2 significant figures (1%), a quarter the size of
/// the run's 3-figure ones.
pub fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid bounds")
}

impl SeriesTally {
    /// A series of `interval` (at least 1 ms), with `at_us` counted from the instant whose Unix
    /// time is `anchor_unix_us`.
    pub fn new(interval: Duration, anchor_unix_us: u64) -> SeriesTally {
        SeriesTally {
            interval_us: (interval.as_micros() as u64).max(1000),
            anchor_unix_us,
            ..Default::default()
        }
    }

    /// The interval, µs; 0 when disabled.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    fn index(&self, at_us: u64) -> u64 {
        (self.anchor_unix_us + at_us) / self.interval_us
    }

    fn counts(&mut self, at_us: u64) -> Option<&mut PointCounts> {
        if self.interval_us == 0 {
            return None;
        }
        let index = self.index(at_us);
        if self.points.is_empty() {
            self.first = index;
        }
        if index < self.first {
            // An earlier interval (a message sent before the first acknowledgement): grow at
            // the front, unless that would pass the cap.
            let more = (self.first - index) as usize;
            if self.points.len() + more > MAX_SERIES_POINTS {
                return None;
            }
            for _ in 0..more {
                self.points.push_front(PointTally::default());
            }
            self.first = index;
        }
        let mut at = (index - self.first) as usize;
        if at >= MAX_SERIES_POINTS {
            // Further on than the series holds: what there was is all older than the cap.
            self.points.clear();
            self.first = index;
            at = 0;
        }
        if at >= self.points.len() {
            self.points.resize(at + 1, PointTally::default());
        }
        let at = if self.points.len() > MAX_SERIES_POINTS {
            let drop = self.points.len() - MAX_SERIES_POINTS;
            self.points.drain(..drop);
            self.first += drop as u64;
            at - drop
        } else {
            at
        };
        Some(&mut self.points[at].counts)
    }

    /// A message sent at `at_us`.
    pub fn sent(&mut self, at_us: u64) {
        if let Some(c) = self.counts(at_us) {
            c.sent += 1;
        }
    }

    /// A message of `bytes` acknowledged at `at_us`, `latency_us` after it was (due to be) sent.
    pub fn acked(&mut self, at_us: u64, bytes: u64, latency_us: u64) {
        if let Some(c) = self.counts(at_us) {
            c.acked += 1;
            c.bytes += bytes;
            self.latency(at_us, latency_us);
        }
    }

    /// A record of `bytes` consumed at `at_us`, with its end-to-end latency when known.
    pub fn consumed(&mut self, at_us: u64, bytes: u64, latency_us: Option<u64>) {
        if let Some(c) = self.counts(at_us) {
            c.consumed += 1;
            c.bytes += bytes;
            if let Some(us) = latency_us {
                self.latency(at_us, us);
            }
        }
    }

    /// A failed delivery or a consumer error at `at_us`.
    pub fn error(&mut self, at_us: u64) {
        if let Some(c) = self.counts(at_us) {
            c.errors += 1;
        }
    }

    fn latency(&mut self, at_us: u64, us: u64) {
        let index = self.index(at_us);
        match &mut self.open {
            // A latency for an interval already closed (clocks do not go back, but be safe)
            // joins the open one rather than reopening a closed one.
            Some((open, h)) if *open >= index => record_latency(h, us),
            _ => {
                self.close();
                let mut h = interval_histogram();
                record_latency(&mut h, us);
                self.open = Some((index, h));
            }
        }
    }

    /// Closes the open interval's histogram into its point.
    fn close(&mut self) {
        if let Some((index, h)) = self.open.take() {
            if let Some(p) = index
                .checked_sub(self.first)
                .and_then(|at| self.points.get_mut(at as usize))
            {
                p.latency = Some(ClosedLatency {
                    percentiles: Percentiles::of(&h),
                    histogram: encode_histogram(&h),
                });
            }
        }
    }

    /// The intervals so far, oldest first, as (start, Unix µs; the point), the open one
    /// included; the intervals between the first and the last that saw nothing are there with
    /// zero counts.
    pub fn points(&self) -> Vec<(u64, PointTally)> {
        self.points
            .iter()
            .enumerate()
            .map(|(at, p)| {
                let index = self.first + at as u64;
                let mut p = p.clone();
                if let Some((open, h)) = &self.open {
                    if *open == index {
                        p.latency = Some(ClosedLatency {
                            percentiles: Percentiles::of(h),
                            histogram: encode_histogram(h),
                        });
                    }
                }
                (index * self.interval_us, p)
            })
            .collect()
    }
}

/// When a loop started and stopped doing its work.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    /// First send / first record.
    pub start: Option<Instant>,
    /// Last ack / last record.
    pub end: Option<Instant>,
}

impl Window {
    /// Time between start and end (or now).
    pub fn elapsed(&self) -> Duration {
        match (self.start, self.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            (Some(s), None) => s.elapsed(),
            _ => Duration::ZERO,
        }
    }
}

impl ProducerShared {
    /// A snapshot of the tally.
    pub fn snapshot(&self) -> ProducerTally {
        self.tally.lock().expect("poisoned").clone()
    }
    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// A snapshot of the transactions, with --transactional.
    pub fn transactions(&self) -> Option<TxnTally> {
        self.transactions.lock().expect("poisoned").clone()
    }
}

/// What the consumer has seen.
#[derive(Debug, Clone)]
pub struct ConsumerTally {
    /// Records received, of any kind.
    pub records: u64,
    /// Value bytes received.
    pub bytes: u64,
    /// Records that were not JSON objects.
    pub not_json: u64,
    /// The audit of kafka-workload messages.
    pub audit: Audit,
    /// End-to-end latency of this process's own messages, from a monotonic clock, µs.
    pub e2e_monotonic: Histogram<u64>,
    /// End-to-end latency of other processes' messages, from wall clocks, µs.
    pub e2e_wall: Histogram<u64>,
    /// When the consumer subscribed.
    pub subscribed_at: Option<Instant>,
    /// Time from subscribing to the first partition assignment.
    pub join_time: Option<Duration>,
    /// Time from the assignment to the first record.
    pub first_record_after_join: Option<Duration>,
    /// First and last record.
    pub window: Window,
    /// Why the consumer stopped.
    pub stop_reason: Option<String>,
    /// The time series: records, bytes, errors and end-to-end latency per interval.
    pub series: SeriesTally,
}

impl Default for ConsumerTally {
    fn default() -> Self {
        ConsumerTally {
            records: 0,
            bytes: 0,
            not_json: 0,
            audit: Audit::default(),
            e2e_monotonic: latency_histogram(),
            e2e_wall: latency_histogram(),
            subscribed_at: None,
            join_time: None,
            first_record_after_join: None,
            window: Window::default(),
            stop_reason: None,
            series: SeriesTally::default(),
        }
    }
}

/// The consumer's shared state.
#[derive(Debug, Default)]
pub struct ConsumerShared {
    /// The tally, written by the consumer loop.
    pub tally: Mutex<ConsumerTally>,
    /// Set once the consumer has its first assignment.
    pub assigned: AtomicBool,
    /// Whether it holds partitions now (cleared while a rebalance has taken them away).
    pub holding: AtomicBool,
    /// What the consumer's librdkafka client reports about its brokers (for `--metrics-addr`).
    pub health: Arc<ClientHealth>,
}

impl ConsumerShared {
    /// A snapshot of the tally.
    pub fn snapshot(&self) -> ConsumerTally {
        self.tally.lock().expect("poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abort_plan_spreads_its_fraction_evenly() {
        let picks = |rate: f64, n: usize| -> Vec<usize> {
            let mut plan = AbortPlan::new(rate);
            (0..n).filter(|_| plan.next_aborts()).collect()
        };
        assert_eq!(picks(0.1, 30), vec![9, 19, 29]);
        assert_eq!(picks(0.25, 8), vec![3, 7]);
        assert_eq!(picks(0.0, 100), Vec::<usize>::new());
        assert_eq!(picks(1.0, 3), vec![0, 1, 2]);
        assert_eq!(picks(0.3, 1000).len(), 300);
    }

    #[test]
    fn a_finished_transaction_lands_in_its_set_and_settles_what_is_below_it() {
        let mut t = TxnTally::new("tx", 10, 0.5);
        t.open_from = Some(0);
        t.finish(0, 10, true, Duration::from_millis(3));
        t.open_from = Some(10);
        t.finish(10, 20, false, Duration::from_millis(1));
        assert_eq!((t.committed, t.aborted, t.settled_below), (1, 1, 20));
        assert_eq!(t.committed_seqs.ranges().collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(t.aborted_seqs.ranges().collect::<Vec<_>>(), vec![(10, 20)]);
        assert_eq!(t.open_from, None);
        assert_eq!(t.commit_latency.len(), 1);
        assert!(t.commit_latency.max() >= 2_990);
    }

    #[test]
    fn a_series_buckets_on_the_epoch_and_keeps_one_live_histogram() {
        // Anchor 0.5 s past a whole second: at_us 400_000 is still in second 10, 600_000 not.
        let mut s = SeriesTally::new(Duration::from_secs(1), 10_500_000);
        s.acked(400_000, 5, 1_000);
        s.acked(600_000, 5, 2_000);
        s.acked(700_000, 5, 3_000);
        s.error(2_600_000);
        s.sent(100);
        let points = s.points();
        let starts: Vec<u64> = points.iter().map(|(t, _)| *t).collect();
        assert_eq!(starts, vec![10_000_000, 11_000_000, 12_000_000, 13_000_000]);
        assert_eq!(points[0].1.counts.sent, 1);
        assert_eq!(points[1].1.counts.acked, 2);
        assert_eq!(points[1].1.counts.bytes, 10);
        assert_eq!(points[2].1.counts, PointCounts::default());
        assert_eq!(points[3].1.counts.errors, 1);
        // The closed interval kept its figures; the open one is read live.
        assert_eq!(points[0].1.latency.as_ref().unwrap().percentiles.count, 1);
        let open = points[1].1.latency.as_ref().unwrap();
        assert_eq!(open.percentiles.count, 2);
        assert!(decode_histogram(&open.histogram).unwrap().len() == 2);
        assert!(SeriesTally::default().points().is_empty());
        // The cap holds whichever way the series grows.
        let mut long = SeriesTally::new(Duration::from_millis(1), 0);
        long.sent(5_000);
        long.sent(5_000 + (MAX_SERIES_POINTS as u64 + 10) * 1000);
        assert_eq!(long.points().len(), 1);
        long.sent(10_000 + (MAX_SERIES_POINTS as u64) * 1000);
        long.sent(0);
        assert!(long.points().len() <= MAX_SERIES_POINTS);
        let mut off = SeriesTally::default();
        off.acked(1, 1, 1);
        assert!(off.points().is_empty());
    }

    #[test]
    fn histograms_survive_encoding_and_merge_exactly() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for v in 1..=1000 {
            record_latency(&mut a, v * 10);
            record_latency(&mut b, v * 1000);
        }
        let a2 = decode_histogram(&encode_histogram(&a)).unwrap();
        assert_eq!(a2, a);
        let mut merged = decode_histogram("").unwrap();
        merged.add(&a2).unwrap();
        merged
            .add(decode_histogram(&encode_histogram(&b)).unwrap())
            .unwrap();
        let mut direct = latency_histogram();
        direct.add(&a).unwrap();
        direct.add(&b).unwrap();
        assert_eq!(merged.len(), 2000);
        assert_eq!(merged, direct);
        assert_eq!(
            merged.value_at_quantile(0.99),
            direct.value_at_quantile(0.99)
        );
        assert!(encode_histogram(&a).starts_with("HISTF"));
        assert!(decode_histogram("not base64!").is_err());
    }
}
