//! The producer loop: builds each value in a reused buffer, hands it to librdkafka without waiting
//! for the acknowledgement, paces to --rate from a fixed schedule, and records every delivery
//! report's latency in the tally from librdkafka's delivery thread.
//!
//! It leaves topic creation to [`super::cluster`] and printing to [`crate::report`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{client_config, Role};
use super::context::WorkloadContext;
use super::topic::{TopicHandle, Turns};
use crate::config::{LogLimit, Settings};
use crate::error::Failure;
use crate::report::stats::{record_latency, ProducerShared};
use crate::report::summary::describe_ranges;
use crate::sink::mongo::ProducerFeed;
use crate::workload::message::MessageWriter;

/// A send time packed into librdkafka's per-message opaque pointer, so a delivery report knows its
/// message's schedule without a per-message allocation: the scheduled send time in µs modulo 2^40
/// (wrapping subtraction keeps latencies right for runs of any length) and how far behind that
/// schedule the real send was, in µs, saturating at 2^24-1 (16.7 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendStamp(u64);

const STAMP_TIME_BITS: u32 = 40;
const STAMP_LAG_BITS: u32 = 24;
const STAMP_TIME_MASK: u64 = (1 << STAMP_TIME_BITS) - 1;
const STAMP_LAG_MAX: u64 = (1 << STAMP_LAG_BITS) - 1;

impl SendStamp {
    /// Packs the scheduled and actual send times (µs since the process anchor).
    pub fn new(scheduled_us: u64, sent_us: u64) -> Self {
        let lag = sent_us.saturating_sub(scheduled_us).min(STAMP_LAG_MAX);
        SendStamp(((scheduled_us & STAMP_TIME_MASK) << STAMP_LAG_BITS) | lag)
    }

    /// (corrected, uncorrected) latency in µs for an acknowledgement at `now_us`.
    pub fn latencies(self, now_us: u64) -> (u64, u64) {
        let scheduled = self.0 >> STAMP_LAG_BITS;
        let lag = self.0 & STAMP_LAG_MAX;
        let corrected = (now_us & STAMP_TIME_MASK).wrapping_sub(scheduled) & STAMP_TIME_MASK;
        (corrected, corrected.saturating_sub(lag))
    }
}

/// Delivery reports land here.
struct ProducerCtx {
    base: WorkloadContext,
    shared: Arc<ProducerShared>,
    anchor: Instant,
    topic: String,
    log_limit: LogLimit,
    /// A delivery error that makes further sending pointless (authorization, authentication).
    fatal: Mutex<Option<Failure>>,
    has_fatal: AtomicBool,
    /// The MongoDB writer's feed: acknowledged messages only, so the `producer` collection never
    /// holds a message Kafka did not take.
    mongo: Option<ProducerFeed>,
    /// Whether the producer sends in transactions.
    transactional: bool,
    /// Its `transactional.id`, with --transactional.
    transactional_id: Option<String>,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.base.record_stats(&statistics)
    }
}

fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let now_us = self.anchor.elapsed().as_micros() as u64;
        let stamp = SendStamp(opaque as u64);
        match result {
            Ok(msg) => {
                let (corrected, uncorrected) = stamp.latencies(now_us);
                let len = msg.payload_len() as u64;
                let acked = {
                    let mut t = self.shared.tally.lock().expect("poisoned");
                    t.acked += 1;
                    t.bytes += len;
                    record_latency(&mut t.ack_latency, corrected);
                    record_latency(&mut t.ack_latency_uncorrected, uncorrected);
                    t.series.sent(now_us.saturating_sub(uncorrected));
                    t.series.acked(now_us, len, corrected);
                    t.acked
                };
                if let Some(feed) = &self.mongo {
                    // Blocks while the writer's buffer is full: back-pressure on librdkafka's
                    // queue and so on the send loop. A stopped writer has reported its error.
                    feed.record(msg.payload().unwrap_or(&[]), msg.partition(), msg.offset());
                }
                if self.log_limit.allows(acked - 1) {
                    let content = msg
                        .payload()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    info!(
                        target: "__main__",
                        func = "produce_message",
                        "Message published to topic={}, message content: {}",
                        self.topic,
                        content
                    );
                }
            }
            Err((err, _))
                if matches!(
                    err.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                ) && self.transactional =>
            {
                // An aborted transaction's message librdkafka had not sent: not a failed
                // delivery, the abort's doing (its sequence number is in the aborted range).
                if let Some(t) = self.shared.transactions.lock().expect("poisoned").as_mut() {
                    t.purged += 1;
                }
                let (_, uncorrected) = stamp.latencies(now_us);
                let mut t = self.shared.tally.lock().expect("poisoned");
                t.series.sent(now_us.saturating_sub(uncorrected));
            }
            Err((err, msg)) => {
                self.base.count_delivery_error(err);
                // Our own value: its sequence number names the message in the result.
                let seq = match msg.payload().map(crate::workload::message::decode) {
                    Some(crate::workload::message::Decoded::Ours(f)) => f.seq,
                    _ => None,
                };
                let (_, uncorrected) = stamp.latencies(now_us);
                let first = {
                    let mut t = self.shared.tally.lock().expect("poisoned");
                    t.failed += 1;
                    t.series.sent(now_us.saturating_sub(uncorrected));
                    t.series.error(now_us);
                    if let Some(seq) = seq {
                        t.failed_seqs.insert(seq);
                    }
                    let n = t.errors.entry(err.to_string()).or_insert(0);
                    *n += 1;
                    *n == 1
                };
                if first {
                    warn!(error = %err, "delivery failed");
                }
                if let Some(code) = err.rdkafka_error_code() {
                    if is_fatal(code) && !self.has_fatal.swap(true, Ordering::SeqCst) {
                        let what = format!("producing to topic {}: {err}", self.topic);
                        let failure = match code {
                            // Named precisely at the end of the run, from the client's fatal error.
                            RDKafkaErrorCode::Fatal
                            | RDKafkaErrorCode::Fenced
                            | RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch => Failure::Fenced(format!(
                                "{what}: another producer took the transactional id"
                            )),
                            RDKafkaErrorCode::Authentication
                            | RDKafkaErrorCode::SaslAuthenticationFailed => {
                                Failure::Authentication {
                                    servers: String::from("the brokers"),
                                    cause: what,
                                }
                            }
                            _ => Failure::Authorization(what),
                        };
                        *self.fatal.lock().expect("poisoned") = Some(failure);
                    }
                }
            }
        }
    }
}

/// Everything the producer loop needs.
pub struct ProducerJob {
    /// The run's settings.
    pub settings: Settings,
    /// bootstrap.servers.
    pub bootstrap: String,
    /// This run's id, written into every message.
    pub run_id: String,
    /// The process's monotonic anchor.
    pub anchor: Instant,
    /// Shared counters.
    pub shared: Arc<ProducerShared>,
    /// Stop sending when cancelled.
    pub cancel: CancellationToken,
    /// A rotating password, when it comes from a file.
    pub password: Option<Arc<crate::config::PasswordWatch>>,
    /// Where acknowledged messages are recorded in MongoDB, with `--mongo-uri`.
    pub mongo: Option<ProducerFeed>,
    /// With --json and --transactional: writes the result as it stands, between transactions.
    pub checkpoint: Option<super::consumer::Checkpoint>,
}

impl ProducerJob {
    /// The `transactional.id`, with --transactional: the one given, or one from the run id.
    pub fn transactional_id(&self) -> Option<String> {
        let t = self.settings.producer.transactions.as_ref()?;
        Some(
            t.id.clone()
                .unwrap_or_else(|| format!("kafka-workload-{}", self.run_id)),
        )
    }
}

/// A producer client for `settings` (the job's, or the job's with a rotated identity).
fn create(job: &ProducerJob, settings: &Settings) -> anyhow::Result<ThreadedProducer<ProducerCtx>> {
    let ctx = ProducerCtx {
        base: WorkloadContext::with_health(job.shared.health.clone()),
        shared: job.shared.clone(),
        anchor: job.anchor,
        topic: settings.topic.clone(),
        log_limit: settings.output.log_messages,
        fatal: Mutex::new(None),
        has_fatal: AtomicBool::new(false),
        mongo: job.mongo.clone(),
        transactional: settings.producer.transactions.is_some(),
        transactional_id: job.transactional_id(),
    };
    let mut config = client_config(settings, Role::Producer, &job.bootstrap)?;
    if let Some(id) = job.transactional_id() {
        config.set("transactional.id", id);
    }
    config
        .create_with_context(ctx)
        .context("cannot create the producer")
}

/// The failure a transactional call ended with: fencing and authorization get their own exit
/// codes; everything else names the call.
fn txn_failure(call: &str, id: &str, e: &KafkaError) -> anyhow::Error {
    let what = format!("{call} for transactional id {id}: {e}");
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced,
        ) => Failure::Fenced(format!(
            "{what} (another producer started with the same --transactional-id)"
        ))
        .into(),
        Some(
            RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => Failure::Authorization(what).into(),
        _ => anyhow::anyhow!(what),
    }
}

/// librdkafka's fatal error, if the producer has one (fencing, an idempotence failure): it says
/// what really happened where the failed call says only "Fatal".
fn fatal_failure(producer: &ThreadedProducer<ProducerCtx>) -> Option<anyhow::Error> {
    let (code, reason) = producer.client().fatal_error()?;
    let id = producer.context().transactional_id.as_deref().unwrap_or("");
    Some(match code {
        RDKafkaErrorCode::Fenced
        | RDKafkaErrorCode::ProducerFenced
        | RDKafkaErrorCode::InvalidProducerEpoch => Failure::Fenced(format!(
            "transactional id {id}: {reason} (another producer started with the same --transactional-id)"
        ))
        .into(),
        _ => anyhow::anyhow!("the producer hit a fatal error ({code:?}): {reason}"),
    })
}

/// The transaction in progress, and how the next ones end.
struct Transactions {
    id: String,
    size: u64,
    timeout: Duration,
    plan: crate::report::stats::AbortPlan,
    /// The first sequence number of the open transaction.
    open_from: Option<u64>,
    /// When the last checkpoint was written.
    checkpointed: Instant,
}

impl Transactions {
    /// Registers the producer as `id` with the transaction coordinator, which fences any older
    /// producer with the id and aborts its open transaction.
    fn init(
        producer: &ThreadedProducer<ProducerCtx>,
        id: &str,
        wait: Duration,
    ) -> anyhow::Result<()> {
        producer
            .init_transactions(wait)
            .map_err(|e| txn_failure("cannot initialize transactions", id, &e))
    }

    /// Begins a transaction at `seq` unless one is open.
    fn begin_if_closed(
        &mut self,
        producer: &ThreadedProducer<ProducerCtx>,
        shared: &ProducerShared,
        seq: u64,
    ) -> anyhow::Result<()> {
        if self.open_from.is_some() {
            return Ok(());
        }
        producer
            .begin_transaction()
            .map_err(|e| txn_failure("cannot begin a transaction", &self.id, &e))?;
        self.open_from = Some(seq);
        if let Some(t) = shared.transactions.lock().expect("poisoned").as_mut() {
            t.open_from = Some(seq);
        }
        Ok(())
    }

    /// Ends the open transaction (its messages are `[from, next_seq)`): committed, or aborted
    /// when the plan says so (after flushing, so its messages reach the log first) or when the
    /// commit fails in a way that requires it. Fencing and other fatal errors end the run.
    fn end(
        &mut self,
        producer: &ThreadedProducer<ProducerCtx>,
        shared: &ProducerShared,
        next_seq: u64,
    ) -> anyhow::Result<()> {
        let Some(from) = self.open_from else {
            return Ok(());
        };
        let planned_abort = self.plan.next_aborts();
        let started = Instant::now();
        let mut failed_commit = false;
        let committed = if planned_abort {
            if let Err(e) = drain(producer, self.timeout) {
                warn!(error = %e, "an aborted transaction's messages did not all reach the log before the abort");
            }
            self.abort(producer)?;
            false
        } else {
            // rust-rdkafka's commit flushes first, polling in 100 ms steps that the producer's
            // own polling thread leaves idle: every commit took 100 ms. Drained here, the
            // commit finds nothing to flush.
            if let Err(e) = drain(producer, self.timeout) {
                warn!(error = %e, "the transaction's messages were not all acknowledged before the commit");
            }
            let mut attempt = 0;
            loop {
                match producer.commit_transaction(self.timeout) {
                    Ok(()) => break true,
                    Err(KafkaError::Transaction(ref e)) if e.is_retriable() && attempt < 3 => {
                        attempt += 1;
                        warn!(error = %e, attempt, "commit failed; retrying it");
                    }
                    Err(KafkaError::Transaction(ref e)) if e.txn_requires_abort() => {
                        warn!(error = %e, from, to = next_seq, "commit failed; aborting the transaction");
                        self.abort(producer)?;
                        failed_commit = true;
                        break false;
                    }
                    Err(e) => return Err(txn_failure("cannot commit", &self.id, &e)),
                }
            }
        };
        self.open_from = None;
        let mut guard = shared.transactions.lock().expect("poisoned");
        if let Some(t) = guard.as_mut() {
            t.finish(from, next_seq, committed, started.elapsed());
            t.failed_commits += u64::from(failed_commit);
        }
        Ok(())
    }

    fn abort(&self, producer: &ThreadedProducer<ProducerCtx>) -> anyhow::Result<()> {
        producer
            .abort_transaction(self.timeout)
            .map_err(|e| txn_failure("cannot abort", &self.id, &e))
    }

    /// Writes the checkpoint, at most five times a second: between transactions, so the file
    /// names every transaction whose outcome is settled below its `in_doubt_from`.
    fn checkpoint(&mut self, job: &ProducerJob) {
        if let Some(write) = &job.checkpoint {
            if self.checkpointed.elapsed() >= Duration::from_millis(200) {
                write();
                self.checkpointed = Instant::now();
            }
        }
    }
}

/// Moves to a new user: a client for it is made and must reach the topic's metadata, then the
/// old one is flushed (its messages are acknowledged under the old identity, still valid) and
/// dropped. On any failure the old client is kept and the reason logged.
fn switch_user(
    job: &ProducerJob,
    old: ThreadedProducer<ProducerCtx>,
    identity: &crate::config::Identity,
) -> (ThreadedProducer<ProducerCtx>, bool) {
    let s = job.settings.with_identity(identity);
    let Some(fresh) =
        super::context::client_for_new_user("producer", &s, || create(job, &s), |p| p.client())
    else {
        return (old, false);
    };
    let started = Instant::now();
    if let Err(e) = drain(&old, FLUSH_TIMEOUT) {
        warn!(error = %e, in_flight = old.in_flight_count(), "the old producer did not flush in time; its messages are reported as they end");
    }
    if let Some(fatal) = old.context().fatal.lock().expect("poisoned").take() {
        *fresh.context().fatal.lock().expect("poisoned") = Some(fatal);
        fresh.context().has_fatal.store(true, Ordering::SeqCst);
    }
    drop(old);
    info!(user = %identity.username, flush_ms = started.elapsed().as_millis() as u64, "producer moved to the new user");
    (fresh, true)
}

/// Waits until librdkafka holds nothing of ours: every message acknowledged or failed and its
/// delivery report served (by the producer's polling thread). `flush` does the same but polls
/// in 100 ms steps alongside that thread, so it returns up to 100 ms late; here the wait is
/// checked every quarter millisecond.
fn drain(producer: &ThreadedProducer<ProducerCtx>, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    Ok(())
}

/// kafka-workload's partitioner (partitions take turns of a batch each) for values of
/// `value_bytes`, unless `-X` chose librdkafka's.
fn turns(s: &Settings, value_bytes: usize) -> Option<Turns> {
    super::config::partitioner_batch(s)
        .map(|(messages, bytes)| Turns::new(value_bytes, messages, bytes))
}

/// Sets the producer's `done` flag when dropped, on every way out of [`run`].
struct DoneOnDrop(Arc<ProducerShared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0
            .window
            .lock()
            .expect("poisoned")
            .end
            .get_or_insert_with(Instant::now);
        self.0.done.store(true, Ordering::SeqCst);
    }
}

/// How long a flush may take at the end before unacknowledged messages are given up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Produces until the count, the duration, a fatal error or cancellation ends it, then flushes.
/// Blocking: run it on a blocking thread.
pub fn run(job: ProducerJob) -> anyhow::Result<()> {
    let s = &job.settings;
    // However the loop ends, a consumer alongside must learn that no more will come.
    let _done = DoneOnDrop(job.shared.clone());
    let mut producer = create(&job, s)?;
    let mut txns = match (job.transactional_id(), &s.producer.transactions) {
        (Some(id), Some(t)) => {
            *job.shared.transactions.lock().expect("poisoned") = Some(
                crate::report::stats::TxnTally::new(&id, t.size, t.abort_rate),
            );
            Transactions::init(&producer, &id, s.connect_timeout.max(t.timeout))
                .inspect_err(|_| job.shared.done.store(true, Ordering::SeqCst))?;
            info!(transactional_id = %id, size = t.size, abort_rate = t.abort_rate, "transactions initialized");
            Some(Transactions {
                id,
                size: t.size,
                timeout: t.timeout,
                plan: crate::report::stats::AbortPlan::new(t.abort_rate),
                open_from: None,
                checkpointed: Instant::now(),
            })
        }
        _ => None,
    };
    let mut client_user = s
        .sasl
        .as_ref()
        .map(|a| a.username.clone())
        .unwrap_or_default();
    info!(func = "<module>", "--producer - Starting...");

    let mut writer = MessageWriter::new(&s.origin, &job.run_id, s.producer.message_size);
    let total = s.producer.num_messages;
    let interval = s.producer.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let window_start = Instant::now();
    // Sends go through a handle on the topic, renewed with the client (a rotation replaces it).
    // It is opened first: the metadata requests below name the topic too, and librdkafka takes
    // the partitioner from the first opening.
    let value_bytes = writer.write(0, 0, &[b'0'; 32], 0).len();
    let mut topic = TopicHandle::new(producer.client(), &s.topic, turns(s, value_bytes))?;
    // Two metadata round trips before the first send. librdkafka asks for the idempotent
    // producer's id when a metadata answer arrives, but only if a broker connection is up then;
    // the bootstrap connection closes once the first answer names the real brokers, so without
    // a second answer (from a real broker) the id waits for a 500 ms retry timer, and so does
    // every message. The round trips count in the throughput window; a --rate schedule starts
    // after them.
    for _ in 0..2 {
        if let Err(e) = producer
            .client()
            .fetch_metadata(Some(&s.topic), s.connect_timeout)
        {
            warn!(error = %e, "no metadata for the topic yet; sending anyway");
            break;
        }
    }
    let started = Instant::now();
    let start_us = job.anchor.elapsed().as_micros() as u64;
    // The wall clock is read once: each message's `timestamp` is this plus the monotonic clock,
    // which saves a clock read per message (a third of the send loop's time without it).
    let anchor_epoch_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
        .saturating_sub(start_us);
    let deadline = s.duration.map(|d| started + d);
    job.shared.window.lock().expect("poisoned").start = Some(window_start);
    let mut id_hex = [0u8; 32];
    let mut seq: u64 = 0;
    let mut rotation_seen = 0;
    let mut lockout = super::context::Lockout::new(s.connect_timeout);
    let locked_out = |cause: String| -> anyhow::Error {
        job.shared.done.store(true, Ordering::SeqCst);
        Failure::Authentication {
            servers: job.bootstrap.clone(),
            cause: format!(
                "{cause} (no broker connection has worked for {} s)",
                s.connect_timeout.as_secs()
            ),
        }
        .into()
    };
    while total.is_none_or(|t| seq < t) {
        if seq % 256 == 0 {
            if let Some(identity) = super::context::apply_rotation(
                producer.client(),
                job.password.as_deref(),
                &mut rotation_seen,
                &client_user,
            ) {
                // A transaction belongs to its client: it ends before the client is replaced,
                // and the new client registers the id again (fencing the old one).
                if let Some(t) = txns.as_mut() {
                    t.end(&producer, &job.shared, seq)?;
                }
                let moved;
                drop(topic);
                (producer, moved) = switch_user(&job, producer, &identity);
                // Kept on the old client, whose topic keeps the partitioner it was opened with:
                // a configuration given now would be dropped.
                let partitioner = if moved { turns(s, value_bytes) } else { None };
                topic = TopicHandle::new(producer.client(), &s.topic, partitioner)?;
                if moved {
                    client_user = identity.username;
                }
                if let Some(t) = &txns {
                    let wait = s.connect_timeout.max(t.timeout);
                    Transactions::init(&producer, &t.id, wait)?;
                }
            }
            if let Some(cause) = lockout.check(&producer.context().base) {
                return Err(locked_out(cause));
            }
            if job.cancel.is_cancelled() {
                info!(sent = seq, "stop requested: no more messages will be sent");
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        if producer.context().has_fatal.load(Ordering::Relaxed) {
            break;
        }
        let scheduled_us = match interval {
            Some(iv) => {
                let due = started + iv.mul_f64(seq as f64);
                let now = Instant::now();
                if due > now {
                    // At low rates the every-256-messages check above comes seconds apart.
                    if job.cancel.is_cancelled() {
                        info!(sent = seq, "stop requested: no more messages will be sent");
                        break;
                    }
                    // Sleep in short slices so cancellation stays prompt at low rates.
                    let wait = due - now;
                    if wait > Duration::from_millis(200) {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    std::thread::sleep(wait);
                }
                Some(start_us + (iv.as_nanos() as u64 * seq) / 1000)
            }
            None => None,
        };
        if let Some(t) = txns.as_mut() {
            t.begin_if_closed(&producer, &job.shared, seq)?;
        }
        let sent_at = job.anchor.elapsed();
        let sent_us = sent_at.as_micros() as u64;
        // Unpaced, a message is due when it is sent.
        let scheduled_us = scheduled_us.unwrap_or(sent_us);
        let epoch_us = anchor_epoch_us + sent_us;
        uuid::Uuid::new_v4().simple().encode_lower(&mut id_hex);
        let value = writer.write(seq, epoch_us, &id_hex, sent_at.as_nanos() as u64);
        let stamp = SendStamp::new(scheduled_us, sent_us);
        let mut waits: u32 = 0;
        let handed_over = loop {
            match topic.send(value, stamp.0 as usize) {
                Ok(()) => break true,
                Err(RDKafkaErrorCode::QueueFull) => {
                    if job.cancel.is_cancelled()
                        || producer.context().has_fatal.load(Ordering::Relaxed)
                    {
                        break false;
                    }
                    // A full queue that does not drain may be brokers refusing us: look once
                    // a second.
                    waits += 1;
                    if waits % 2000 == 0 {
                        if let Some(cause) = lockout.check(&producer.context().base) {
                            return Err(locked_out(cause));
                        }
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err(code) => {
                    let e = KafkaError::MessageProduction(code);
                    job.shared.done.store(true, Ordering::SeqCst);
                    if let Some(fatal) = fatal_failure(&producer) {
                        return Err(fatal);
                    }
                    let what = format!("cannot send to topic {}: {e}", s.topic);
                    return Err(match e.rdkafka_error_code() {
                        Some(
                            RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::ClusterAuthorizationFailed,
                        ) => Failure::Authorization(what).into(),
                        _ => anyhow::anyhow!(what),
                    });
                }
            }
        };
        if !handed_over {
            // Stopped while librdkafka's queue was full: this message was never sent.
            info!(sent = seq, "stop requested: no more messages will be sent");
            break;
        }
        seq += 1;
        job.shared.sent.store(seq, Ordering::Relaxed);
        if let Some(t) = txns.as_mut() {
            if t.open_from.is_some_and(|from| seq - from >= t.size) {
                t.end(&producer, &job.shared, seq)?;
                t.checkpoint(&job);
            }
        }
    }
    if let Some(t) = txns.as_mut() {
        // The last transaction, however short, ends as planned: a stop request or the end of
        // --duration commits what it sent (or aborts it, if it was to be aborted).
        if !producer.context().has_fatal.load(Ordering::Relaxed) {
            t.end(&producer, &job.shared, seq)?;
        }
    }

    // Delivery reports wait on the MongoDB writer, which may retry for up to --mongo-timeout.
    let flush_timeout = FLUSH_TIMEOUT + s.mongo.as_ref().map_or(Duration::ZERO, |m| m.timeout);
    let flushed = drain(&producer, flush_timeout);
    job.shared.window.lock().expect("poisoned").end = Some(Instant::now());
    job.shared.done.store(true, Ordering::SeqCst);
    if let Some(fatal) = producer.context().fatal.lock().expect("poisoned").clone() {
        return Err(fatal_failure(&producer).unwrap_or_else(|| fatal.into()));
    }
    if let Err(e) = flushed {
        let in_flight = producer.in_flight_count();
        anyhow::bail!(
            "{in_flight} messages were not acknowledged within {} s of the end: {e}",
            flush_timeout.as_secs()
        );
    }
    let (failed, ranges) = {
        let t = job.shared.tally.lock().expect("poisoned");
        (t.failed, describe_ranges(&t.failed_seqs, 5))
    };
    if failed > 0 {
        return Err(Failure::Undelivered(format!(
            "{failed} of {seq} messages were not delivered within --delivery-timeout ({} s): \
             sequence numbers {ranges}",
            s.producer.delivery_timeout.as_secs_f64()
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_stamp_gives_corrected_and_uncorrected_latency() {
        let s = SendStamp::new(1_000, 1_250);
        assert_eq!(s.latencies(2_000), (1_000, 750));
    }

    #[test]
    fn send_stamp_survives_the_40_bit_wrap() {
        let scheduled = (1u64 << 40) - 10;
        let s = SendStamp::new(scheduled, scheduled);
        assert_eq!(s.latencies(scheduled + 30), (30, 30));
    }

    #[test]
    fn send_stamp_lag_saturates_instead_of_overflowing() {
        let s = SendStamp::new(0, 100_000_000);
        let (corrected, uncorrected) = s.latencies(100_000_100);
        assert_eq!(corrected, 100_000_100);
        assert_eq!(uncorrected, 100_000_100 - STAMP_LAG_MAX);
    }
}
