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
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{client_config, Role};
use super::context::WorkloadContext;
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
            Err((err, msg)) => {
                self.base.count_delivery_error(err);
                // Our own value: its sequence number names the message in the result.
                let seq = match msg.payload().map(crate::workload::message::decode) {
                    Some(crate::workload::message::Decoded::Ours(f)) => f.seq,
                    _ => None,
                };
                let first = {
                    let mut t = self.shared.tally.lock().expect("poisoned");
                    t.failed += 1;
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
    };
    client_config(settings, Role::Producer, &job.bootstrap)?
        .create_with_context(ctx)
        .context("cannot create the producer")
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
    if let Err(e) = old.flush(FLUSH_TIMEOUT) {
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

/// How long a flush may take at the end before unacknowledged messages are given up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Produces until the count, the duration, a fatal error or cancellation ends it, then flushes.
/// Blocking: run it on a blocking thread.
pub fn run(job: ProducerJob) -> anyhow::Result<()> {
    let s = &job.settings;
    let mut producer = create(&job, s)?;
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
                let moved;
                (producer, moved) = switch_user(&job, producer, &identity);
                if moved {
                    client_user = identity.username;
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
        let sent_at = job.anchor.elapsed();
        let sent_us = sent_at.as_micros() as u64;
        // Unpaced, a message is due when it is sent.
        let scheduled_us = scheduled_us.unwrap_or(sent_us);
        let epoch_us = anchor_epoch_us + sent_us;
        uuid::Uuid::new_v4().simple().encode_lower(&mut id_hex);
        let value = writer.write(seq, epoch_us, &id_hex, sent_at.as_nanos() as u64);
        let stamp = SendStamp::new(scheduled_us, sent_us);
        let mut record: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(&s.topic, stamp.0 as usize).payload(value);
        let mut waits: u32 = 0;
        let handed_over = loop {
            match producer.send(record) {
                Ok(()) => break true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
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
                Err((e, _)) => {
                    job.shared.done.store(true, Ordering::SeqCst);
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
    }

    // Delivery reports wait on the MongoDB writer, which may retry for up to --mongo-timeout.
    let flush_timeout = FLUSH_TIMEOUT + s.mongo.as_ref().map_or(Duration::ZERO, |m| m.timeout);
    let flushed = producer.flush(flush_timeout);
    job.shared.window.lock().expect("poisoned").end = Some(Instant::now());
    job.shared.done.store(true, Ordering::SeqCst);
    if let Some(fatal) = producer.context().fatal.lock().expect("poisoned").clone() {
        return Err(fatal.into());
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
