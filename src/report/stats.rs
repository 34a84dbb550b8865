//! The tallies the Kafka loops fill: counts, bytes, latency histograms (µs) and the audit.
//!
//! Each tally has one writer (the producer's delivery-report thread, the consumer loop) and is
//! behind an uncontended mutex so that the progress reporter can take snapshots. Sending an event
//! per message down a channel would cost more than the work it reports.

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
