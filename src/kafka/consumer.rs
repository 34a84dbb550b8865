//! The consumer loop: joins `<prefix>1` (or --group-id), reads from the earliest offset, decodes
//! and audits every record, and stores a record's offset only after it has been processed, so
//! the periodic and final commits never cover unprocessed records (at-least-once).
//!
//! It ends on cancellation, --duration, --idle-timeout, --expect, --max-records, or (alongside
//! this process's producer) once every acknowledged message of the run has arrived.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{client_config, Role};
use super::context::{Trouble, WorkloadContext};
use super::fetch::{FetchQueue, RawRecord};
use crate::config::Settings;
use crate::error::Failure;
use crate::report::stats::{record_latency, ConsumerShared, ProducerShared};
use crate::sink::mongo::ConsumerFeed;
use crate::workload::message::{decode, Decoded};

struct ConsumerCtx {
    base: WorkloadContext,
    shared: Arc<ConsumerShared>,
    subscribed_at: Instant,
    /// auto.offset.reset is earliest (ours, unless -X changed it).
    reset_earliest: bool,
    /// The topic consumed.
    topic: String,
    /// With `--json`: our own commits, each after a checkpoint of the result.
    checkpoint: Option<Checkpoint>,
    /// With `--json`: per partition, the offset to commit next (what processing stored) and the
    /// one last committed; -1 for none. Commits name these offsets explicitly, so a commit
    /// covers what was stored when the checkpoint was written, not what librdkafka holds by
    /// the time its thread gets to the request.
    offsets: std::sync::Mutex<Vec<(i64, i64)>>,
    /// Set by each rebalance: the loop forwards the assignment to its batch queue again.
    reforward: AtomicBool,
}

impl ConsumerCtx {
    /// Notes that processing stored `next` (a record's offset + 1) for `partition`.
    fn note_stored(&self, partition: i32, next: i64) {
        if let Ok(p) = usize::try_from(partition) {
            self.note_stored_all(p, &[next]);
        }
    }

    /// [`Self::note_stored`] for consecutive partitions from `first`: `next[i]` for partition
    /// `first + i`, -1 where nothing was read.
    fn note_stored_all(&self, first: usize, next: &[i64]) {
        if self.checkpoint.is_none() || next.is_empty() {
            return;
        }
        let mut offsets = self.offsets.lock().expect("poisoned");
        if offsets.len() < first + next.len() {
            offsets.resize(first + next.len(), (-1, -1));
        }
        for (o, &n) in offsets[first..].iter_mut().zip(next) {
            o.0 = o.0.max(n);
        }
    }

    /// The offsets to commit (all stored ones with `all`, else those stored since the last
    /// commit), marked committed.
    fn take_commit(&self, topic: &str, all: bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let mut offsets = self.offsets.lock().expect("poisoned");
        for (partition, (stored, committed)) in offsets.iter_mut().enumerate() {
            if *stored >= 0 && (all || *stored > *committed) {
                let _ = tpl.add_partition_offset(topic, partition as i32, Offset::Offset(*stored));
                *committed = *stored;
            }
        }
        tpl
    }
}

impl ClientContext for ConsumerCtx {
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

impl ConsumerContext for ConsumerCtx {
    /// rdkafka's default (assign or unassign, then `post_rebalance`), except that with
    /// auto.offset.reset=earliest the partitions that have no committed offset are assigned at
    /// the beginning explicitly: left to the reset, librdkafka starts them through a 100 ms
    /// retry timer, a tenth of reading a million records (scripts/bench).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.reset_earliest {
                    start_uncommitted_at_beginning(consumer, tpl);
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    warn!(error = %e, "cannot take the assigned partitions");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            _ => {
                if let Some(checkpoint) = &self.checkpoint {
                    // Our own commits (auto-commit is off): the processed records' offsets go
                    // before the partitions do, or their next owner reads them again. What is
                    // given up is forgotten: a later commit must not move its next owner back.
                    checkpoint_and_commit(consumer, checkpoint, &self.topic, CommitMode::Sync);
                    self.offsets.lock().expect("poisoned").clear();
                }
                let unassigned = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    warn!(error = %e, "cannot give up the revoked partitions");
                }
                let rebalance = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    Rebalance::Revoke(tpl)
                } else {
                    Rebalance::Error(KafkaError::Rebalance(err.into()))
                };
                self.post_rebalance(consumer, &rebalance);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // An assignment, even an empty one, is the group's answer: the idle clock may run. After
        // a revoke it waits for the next one, unless an incremental revoke left partitions.
        let holds = match rebalance {
            Rebalance::Assign(_) => Some(true),
            Rebalance::Revoke(_) => Some(consumer.assignment().is_ok_and(|a| a.count() > 0)),
            Rebalance::Error(_) => None,
        };
        if let Some(holds) = holds {
            self.shared.holding.store(holds, Ordering::SeqCst);
        }
        self.reforward.store(true, Ordering::SeqCst);
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(partitions = ?partitions, "partitions assigned");
                if !self.shared.assigned.swap(true, Ordering::SeqCst) {
                    let mut t = self.shared.tally.lock().expect("poisoned");
                    t.join_time = Some(self.subscribed_at.elapsed());
                }
            }
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// Sets the offset of each partition in `tpl` that has no committed offset to the beginning.
/// On any error `tpl` stays as it is, and auto.offset.reset does the same, only later.
fn start_uncommitted_at_beginning<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &mut TopicPartitionList,
) {
    let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(e) => {
            debug!(error = %e, "no committed offsets; auto.offset.reset applies");
            return;
        }
    };
    for e in committed.elements() {
        if e.offset() == Offset::Invalid {
            let _ = tpl.set_partition_offset(e.topic(), e.partition(), Offset::Beginning);
        }
    }
}

/// This process's producer, when the consumer runs alongside it.
pub struct OwnRun {
    /// The producer's run id.
    pub run_id: String,
    /// The producer's counters (done flag, acked count).
    pub producer: Arc<ProducerShared>,
}

/// Everything the consumer loop needs.
pub struct ConsumerJob {
    /// The run's settings.
    pub settings: Settings,
    /// bootstrap.servers.
    pub bootstrap: String,
    /// The process's monotonic anchor (for this process's own messages).
    pub anchor: Instant,
    /// The wall clock (epoch seconds) when `anchor` was taken.
    pub anchor_epoch_secs: f64,
    /// Shared tally.
    pub shared: Arc<ConsumerShared>,
    /// Stop when cancelled.
    pub cancel: CancellationToken,
    /// A rotating password, when it comes from a file.
    pub password: Option<Arc<crate::config::PasswordWatch>>,
    /// The producer of this process, if any.
    pub own: Option<OwnRun>,
    /// With `--mongo-uri`: records go to MongoDB, and an offset is stored only once the sink
    /// reports its record's document stored.
    pub mongo: Option<ConsumerFeed>,
    /// With `--json`: writes the result as it stands; called right before every commit, which
    /// the loop then makes itself (librdkafka's auto-commit is off).
    pub checkpoint: Option<Checkpoint>,
}

/// Writes the run's result file as it stands (see [`ConsumerJob::checkpoint`]).
pub type Checkpoint = Arc<dyn Fn() + Send + Sync>;

/// How many records in a row the consumer loop reads before its checks that need no record
/// (stop requested, deadline, idle, authentication, rotation); a fraction of a millisecond at
/// full speed.
const HOUSEKEEPING_EVERY: u32 = 64;

/// How often the loop forwards the assignment to its batch queue again when no rebalance asked.
const FORWARD_INTERVAL: Duration = Duration::from_secs(1);

/// How long an idle loop waits for a batch before it looks at the consumer queue again
/// (rebalances, errors): the delay a rebalance may see.
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// How often processed offsets are committed (librdkafka's auto-commit interval when it
/// commits; ours, after a checkpoint, with `--json`).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the checkpoint, then commits the stored offsets: a commit never covers a record the
/// file does not. Offsets stored after the write wait for the next one.
fn checkpoint_and_commit(
    consumer: &BaseConsumer<ConsumerCtx>,
    checkpoint: &Checkpoint,
    topic: &str,
    mode: CommitMode,
) {
    checkpoint();
    // A synchronous commit (revoke, the end) names every stored offset; the periodic one only
    // what changed.
    let tpl = consumer
        .context()
        .take_commit(topic, matches!(mode, CommitMode::Sync));
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        debug!(error = %e, "offset commit failed; the next one covers it");
    }
}

/// Commits every processed record's offset now, synchronously: after a checkpoint, naming the
/// offsets, with `--json`; librdkafka's stored offsets otherwise.
fn commit_processed(consumer: &BaseConsumer<ConsumerCtx>, topic: &str) -> KafkaResult<()> {
    let ctx = consumer.context();
    let Some(checkpoint) = &ctx.checkpoint else {
        return consumer.commit_consumer_state(CommitMode::Sync);
    };
    checkpoint();
    let tpl = ctx.take_commit(topic, true);
    if tpl.count() == 0 {
        return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset));
    }
    consumer.commit(&tpl, CommitMode::Sync)
}

fn fatal_consume_error(err: &KafkaError, group: &str, topic: &str) -> Option<Failure> {
    match err.rdkafka_error_code()? {
        RDKafkaErrorCode::GroupAuthorizationFailed => Some(Failure::Authorization(format!(
            "consumer group {group} ({err}); the user needs READ on a group prefix that covers it"
        ))),
        RDKafkaErrorCode::TopicAuthorizationFailed => Some(Failure::Authorization(format!(
            "reading topic {topic} ({err}); the user needs READ on it"
        ))),
        _ => None,
    }
}

/// A consumer client for `settings` (the job's, or the job's with a rotated identity).
fn create(job: &ConsumerJob, settings: &Settings) -> anyhow::Result<BaseConsumer<ConsumerCtx>> {
    let ctx = ConsumerCtx {
        base: WorkloadContext::with_health(job.shared.health.clone()),
        shared: job.shared.clone(),
        subscribed_at: Instant::now(),
        checkpoint: job.checkpoint.clone(),
        offsets: Default::default(),
        reforward: AtomicBool::new(true),
        topic: settings.topic.clone(),
        reset_earliest: matches!(
            super::config::properties(settings, Role::Consumer, &job.bootstrap)?
                .get("auto.offset.reset")
                .map(String::as_str),
            Some("earliest" | "smallest" | "beginning")
        ),
    };
    client_config(settings, Role::Consumer, &job.bootstrap)?
        .create_with_context(ctx)
        .context("cannot create the consumer")
}

/// Moves to a new user: a client for it is made and must reach the topic's metadata; then the
/// old client commits what was processed (synchronously), leaves the group, and the new one
/// joins it in its place, resuming from those commits. On any failure the old client is kept.
fn switch_user(
    job: &ConsumerJob,
    old: BaseConsumer<ConsumerCtx>,
    identity: &crate::config::Identity,
    mongo: Option<&ConsumerFeed>,
    fetch: &mut Option<FetchQueue>,
) -> (BaseConsumer<ConsumerCtx>, bool) {
    let s = job.settings.with_identity(identity);
    let Some(fresh) =
        super::context::client_for_new_user("consumer", &s, || create(job, &s), |c| c.client())
    else {
        return (old, false);
    };
    if let Some(feed) = mongo {
        for (partition, offset) in feed.stored() {
            store_stored(&old, &s.topic, partition, offset);
        }
    }
    match commit_processed(&old, &s.topic) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            warn!(error = %e, "commit before moving to the new user failed; the new client replays from the last commit")
        }
    }
    old.unsubscribe();
    // The old client's batch queue goes before it does (librdkafka's destroy waits for it);
    // the caller makes the new client's.
    *fetch = None;
    drop(old);
    if let Err(e) = fresh.subscribe(&[&s.topic]) {
        // Not expected after the metadata answer; the run ends on the idle timeout if it happens.
        warn!(error = %e, "the new user's consumer cannot subscribe");
    }
    info!(user = %identity.username, group = %s.consumer.group_id, "consumer moved to the new user: rejoining the group");
    (fresh, true)
}

/// Consumes until a stop condition; blocking: run it on a blocking thread.
pub fn run(mut job: ConsumerJob) -> anyhow::Result<()> {
    let mongo = job.mongo.take();
    let s = &job.settings;
    let group = s.consumer.group_id.clone();
    let mut consumer = create(&job, s)?;
    let mut client_user = s
        .sasl
        .as_ref()
        .map(|a| a.username.clone())
        .unwrap_or_default();
    info!(func = "<module>", "--consumer - Starting...");
    consumer
        .subscribe(&[&s.topic])
        .with_context(|| format!("cannot subscribe to {}", s.topic))?;
    info!(topic = %s.topic, group = %group, "subscribed");
    job.shared.tally.lock().expect("poisoned").subscribed_at =
        Some(consumer.context().subscribed_at);

    let started = Instant::now();
    // Alongside this run's producer, --duration bounds the sending; the consumer reads on until
    // every acknowledged message arrived (or --idle-timeout), so late acknowledgements count.
    let reads_own_run = s.consumer.stop_when_run_complete && job.own.is_some();
    let deadline = s.duration.filter(|_| !reads_own_run).map(|d| started + d);
    let mut last_activity = Instant::now();
    let mut rotation_seen = 0;
    let mut lockout = super::context::Lockout::new(s.connect_timeout);
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    let log_limit = s.output.log_messages;
    let own_run_id = job.own.as_ref().map(|o| o.run_id.clone());
    let mut result: anyhow::Result<()> = Ok(());
    let mut had_record = false;
    let mut unchecked = 0u32;
    // The batch path; not with a MongoDB sink, whose feed paces the loop record by record.
    let batch_queue = |c: &BaseConsumer<ConsumerCtx>| {
        mongo
            .is_none()
            .then(|| FetchQueue::new(c, &s.topic))
            .flatten()
    };
    let mut fetch = batch_queue(&consumer);
    let mut next_forward = Instant::now();
    let mut drain_first = false;
    let mut batch_next: Vec<i64> = Vec::new();
    let stop_reason: String = loop {
        // While records flow, the checks that need no record run every HOUSEKEEPING_EVERY
        // records, and the poll does not wait: per record, their clock reads and locks were a
        // tenth of a backlog's read (perf).
        let flowing = had_record;
        let checks_due = !flowing || unchecked >= HOUSEKEEPING_EVERY;
        unchecked = if checks_due { 0 } else { unchecked + 1 };
        if checks_due {
            if job.cancel.is_cancelled() {
                break "stop requested".into();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break "duration reached".into();
            }
            // Right after a record the idle clock has just been reset.
            if let (Some(idle), false) = (s.consumer.idle_timeout, flowing) {
                if last_activity.elapsed() >= idle {
                    break format!("no record for {:.0} s", idle.as_secs_f64());
                }
            }
            if !job.shared.holding.load(Ordering::Relaxed) {
                // The idle clock runs only while the group has given us partitions: not before the
                // first assignment, nor while a lost session or a rebalance waits to rejoin.
                last_activity = Instant::now();
            }
            if !job.shared.assigned.load(Ordering::Relaxed) {
                if let Some(Trouble::Authentication(cause) | Trouble::Tls(cause)) =
                    consumer.context().base.trouble()
                {
                    result = Err(Failure::Authentication {
                        servers: job.bootstrap.clone(),
                        cause,
                    }
                    .into());
                    break "authentication failed".into();
                }
            }
            if let Some(identity) = super::context::apply_rotation(
                consumer.client(),
                job.password.as_deref(),
                &mut rotation_seen,
                &client_user,
            ) {
                let moved;
                (consumer, moved) =
                    switch_user(&job, consumer, &identity, mongo.as_ref(), &mut fetch);
                if moved {
                    client_user = identity.username;
                    fetch = batch_queue(&consumer);
                }
            }
            if let Some(cause) = lockout.check(&consumer.context().base) {
                result = Err(Failure::Authentication {
                    servers: job.bootstrap.clone(),
                    cause: format!(
                        "{cause} (no broker connection has worked for {} s)",
                        s.connect_timeout.as_secs()
                    ),
                }
                .into());
                break "authentication failed".into();
            }
        }
        had_record = false;
        if let Some(f) = fetch.as_mut() {
            let rebalanced = consumer.context().reforward.swap(false, Ordering::SeqCst);
            if rebalanced || (checks_due && Instant::now() >= next_forward) {
                f.forward(&consumer);
                next_forward = Instant::now() + FORWARD_INTERVAL;
                drain_first = true;
            }
        }
        let batching = fetch.as_ref().is_some_and(FetchQueue::active);
        let wait = if flowing || batching {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait) {
            None => {}
            Some(Err(e)) => {
                let mut t = job.shared.tally.lock().expect("poisoned");
                if let Some(f) = consume_error(&e, &job, Instant::now(), &mut t) {
                    result = Err(f.into());
                    break "not authorized".into();
                }
            }
            Some(Ok(msg)) => {
                // One clock read per record serves the idle timer, the window and the latency.
                let now = Instant::now();
                last_activity = now;
                let mut t = job.shared.tally.lock().expect("poisoned");
                process(&msg, now, &mut t, &job, own_run_id.as_deref(), log_limit);
                let done = finished(&job, &t, own_run_id.as_deref());
                drop(t);
                match &mongo {
                    // With --json our commits name the offsets that note_stored keeps;
                    // librdkafka's offset store serves its auto-commit, which is off then.
                    None if job.checkpoint.is_some() => consumer
                        .context()
                        .note_stored(msg.partition(), msg.offset() + 1),
                    None => {
                        if let Err(e) = consumer.store_offset_from_message(&msg) {
                            warn!(error = %e, "cannot store offset");
                        }
                    }
                    Some(feed) => {
                        let payload = msg.payload().unwrap_or(&[]);
                        if feed.record(payload, msg.partition(), msg.offset()).is_err() {
                            break "the MongoDB sink stopped".into();
                        }
                    }
                }
                if let Some(reason) = done {
                    break reason;
                }
                if let (Some(checkpoint), true) = (&job.checkpoint, now >= next_commit) {
                    checkpoint_and_commit(&consumer, checkpoint, &s.topic, CommitMode::Async);
                    next_commit = now + COMMIT_INTERVAL;
                }
                had_record = true;
                continue;
            }
        }
        if let Some(f) = fetch.as_mut().filter(|f| f.active()) {
            if drain_first && !f.consumer_queue_empty() {
                // Records that reached the consumer queue before the forward go first.
                had_record = true;
                continue;
            }
            drain_first = false;
            let wait = if flowing { Duration::ZERO } else { BATCH_WAIT };
            match f.batch(wait) {
                Some(batch) if !batch.is_empty() => {
                    // One clock read per batch: the time its records reached the loop.
                    let now = Instant::now();
                    last_activity = now;
                    let end = process_batch(
                        &consumer,
                        batch.iter(),
                        now,
                        &job,
                        own_run_id.as_deref(),
                        log_limit,
                        &mut batch_next,
                    );
                    drop(batch);
                    match end {
                        BatchEnd::Read => {}
                        BatchEnd::Stop(reason) => break reason,
                        BatchEnd::Fatal(f) => {
                            result = Err(f.into());
                            break "not authorized".into();
                        }
                    }
                    if let (Some(checkpoint), true) = (&job.checkpoint, now >= next_commit) {
                        checkpoint_and_commit(&consumer, checkpoint, &s.topic, CommitMode::Async);
                        next_commit = now + COMMIT_INTERVAL;
                    }
                    had_record = true;
                    continue;
                }
                Some(_) => {}
                None => warn!("cannot read a batch of records"),
            }
        }
        if let Some(feed) = &mongo {
            for (partition, offset) in feed.stored() {
                store_stored(&consumer, &s.topic, partition, offset);
            }
        }
        if let Some(checkpoint) = &job.checkpoint {
            let now = Instant::now();
            if now >= next_commit {
                checkpoint_and_commit(&consumer, checkpoint, &s.topic, CommitMode::Async);
                next_commit = now + COMMIT_INTERVAL;
            }
        }
        let done = finished(
            &job,
            &job.shared.tally.lock().expect("poisoned"),
            own_run_id.as_deref(),
        );
        if let Some(reason) = done {
            break reason;
        }
    };
    info!(reason = %stop_reason, "consumer stopping");
    if let Some(feed) = mongo {
        // Wait for the sink to store what it holds, so that the final commit covers it.
        for (partition, offset) in feed.finish() {
            store_stored(&consumer, &s.topic, partition, offset);
        }
    }
    // With --json, a checkpoint goes first; the final result replaces it at the end, and a kill
    // before then leaves it.
    match commit_processed(&consumer, &s.topic) {
        Ok(()) => info!(group = %group, "offsets committed"),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, "final offset commit failed"),
    }
    consumer.unsubscribe();
    // Before the consumer: librdkafka's destroy waits for every queue handle.
    drop(fetch);
    let mut t = job.shared.tally.lock().expect("poisoned");
    t.stop_reason = Some(stop_reason);
    result
}

/// Stores the offset of a record whose MongoDB document is stored. `offset` is the record's own
/// offset: rdkafka's `store_offset` calls `rd_kafka_offset_store`, which stores `offset + 1`.
fn store_stored(consumer: &BaseConsumer<ConsumerCtx>, topic: &str, partition: i32, offset: i64) {
    match consumer.store_offset(topic, partition, offset) {
        Ok(()) => consumer.context().note_stored(partition, offset + 1),
        // The partition was revoked meanwhile; its next owner replays from the last commit.
        Err(e) => debug!(partition, offset, error = %e, "cannot store offset"),
    }
}

/// Whether a stop condition holds, judged on the tally the caller has locked.
fn finished(
    job: &ConsumerJob,
    t: &crate::report::stats::ConsumerTally,
    own_run: Option<&str>,
) -> Option<String> {
    let s = &job.settings;
    if let Some(expect) = s.consumer.expect {
        if t.audit.distinct() >= expect {
            return Some(format!("{expect} distinct messages arrived"));
        }
    }
    if let Some(max) = s.consumer.max_records {
        if t.records >= max {
            return Some(format!("{max} records read"));
        }
    }
    if let (true, Some(own), Some(run)) = (s.consumer.stop_when_run_complete, &job.own, own_run) {
        if own.producer.done.load(Ordering::SeqCst) {
            if let Some(txn) = own.producer.transactions.lock().expect("poisoned").as_ref() {
                // Owed: the committed messages (aborted ones are read only under
                // read_uncommitted, and do not stand in for committed ones).
                let read = seen_within(t, run, &txn.committed_seqs);
                if read >= txn.committed_seqs.len() {
                    return Some("every committed message of this run arrived".into());
                }
                return None;
            }
            let p = own.producer.tally.lock().expect("poisoned");
            let distinct = t.audit.distinct_of(run);
            // Failed messages may have reached the log all the same (a timeout after the broker
            // wrote them); those that arrived do not stand in for acknowledged ones.
            if distinct >= p.acked
                && (p.failed == 0 || distinct - seen_within(t, run, &p.failed_seqs) >= p.acked)
            {
                return Some("every message of this run arrived".into());
            }
        }
    }
    None
}

/// How many of the sequence numbers in `set` arrived in `run` (failed ones that arrived all
/// the same, committed ones that arrived).
fn seen_within(
    t: &crate::report::stats::ConsumerTally,
    run: &str,
    set: &crate::workload::audit::RangeSet,
) -> u64 {
    let Some(seen) = t.audit.runs.get(run).map(|r| &r.seen) else {
        return 0;
    };
    set.ranges().map(|(s, e)| seen.count_within(s, e)).sum()
}

/// What the loop reads of a record, polled or from a batch.
trait RecordView {
    /// (partition, offset)
    fn position(&self) -> (i32, i64);
    fn value(&self) -> &[u8];
    fn timestamp_ms(&self) -> i64;
}

impl RecordView for BorrowedMessage<'_> {
    fn position(&self) -> (i32, i64) {
        (self.partition(), self.offset())
    }
    fn value(&self) -> &[u8] {
        self.payload().unwrap_or(&[])
    }
    fn timestamp_ms(&self) -> i64 {
        self.timestamp().to_millis().unwrap_or(-1)
    }
}

impl RecordView for RawRecord<'_> {
    fn position(&self) -> (i32, i64) {
        (self.partition(), self.offset())
    }
    fn value(&self) -> &[u8] {
        self.payload()
    }
    fn timestamp_ms(&self) -> i64 {
        RawRecord::timestamp_ms(self)
    }
}

/// A consumer error, polled or in a batch: the fatal ones (authorization) end the run; the
/// others are counted in the series and logged.
fn consume_error(
    e: &KafkaError,
    job: &ConsumerJob,
    at: Instant,
    t: &mut crate::report::stats::ConsumerTally,
) -> Option<Failure> {
    let s = &job.settings;
    if let Some(f) = fatal_consume_error(e, &s.consumer.group_id, &s.topic) {
        return Some(f);
    }
    let at_us = at.saturating_duration_since(job.anchor).as_micros();
    t.series.error(at_us as u64);
    warn!(error = %e, "consumer error");
    None
}

/// How a batch ended.
enum BatchEnd {
    Read,
    Stop(String),
    Fatal(Failure),
}

/// Processes a batch under one lock of the tally, stops at the record that completes a stop
/// condition (the rest are neither counted nor stored: the next reader gets them), and stores
/// what it processed: per record for librdkafka's auto-commit, per partition for our commits.
fn process_batch<'a>(
    consumer: &BaseConsumer<ConsumerCtx>,
    records: impl Iterator<Item = RawRecord<'a>>,
    now: Instant,
    job: &ConsumerJob,
    own_run: Option<&str>,
    log_limit: crate::config::LogLimit,
    next: &mut Vec<i64>,
) -> BatchEnd {
    let ours = job.checkpoint.is_some();
    next.clear();
    let mut end = BatchEnd::Read;
    let mut t = job.shared.tally.lock().expect("poisoned");
    for rec in records {
        if let Some(code) = rec.error() {
            let e = KafkaError::MessageConsumption(code.into());
            if let Some(f) = consume_error(&e, job, now, &mut t) {
                end = BatchEnd::Fatal(f);
                break;
            }
            continue;
        }
        process(&rec, now, &mut t, job, own_run, log_limit);
        if ours {
            let p = rec.partition().max(0) as usize;
            if next.len() <= p {
                next.resize(p + 1, -1);
            }
            next[p] = next[p].max(rec.offset() + 1);
        } else {
            let err = rec.store_offset();
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                warn!(error = %KafkaError::StoreOffset(err.into()), "cannot store offset");
            }
        }
        if let Some(reason) = finished(job, &t, own_run) {
            end = BatchEnd::Stop(reason);
            break;
        }
    }
    drop(t);
    consumer.context().note_stored_all(0, next);
    end
}

fn process(
    msg: &impl RecordView,
    now: Instant,
    t: &mut crate::report::stats::ConsumerTally,
    job: &ConsumerJob,
    own_run: Option<&str>,
    log_limit: crate::config::LogLimit,
) {
    if t.window.start.is_none() {
        t.window.start = Some(now);
        if let (Some(join), Some(subscribed)) = (t.join_time, t.subscribed_at) {
            t.first_record_after_join = Some(
                now.saturating_duration_since(subscribed)
                    .saturating_sub(join),
            );
        }
    }
    t.window.end = Some(now);
    let payload = msg.value();
    let (partition, offset) = msg.position();
    if log_limit.allows(t.records) {
        log_record(msg, &job.settings.topic, payload);
    }
    t.records += 1;
    t.bytes += payload.len() as u64;
    let now_us = now.saturating_duration_since(job.anchor).as_micros() as u64;
    let latency = match decode(payload) {
        Decoded::Ours(f) => {
            let run = f.run_id.expect("ours has a run id");
            t.audit
                .record(run, partition, f.seq.expect("ours has a seq"));
            match (own_run == Some(run), f.sent_ns) {
                (true, Some(sent_ns)) => {
                    let us = (now_us * 1000).saturating_sub(sent_ns) / 1000;
                    record_latency(&mut t.e2e_monotonic, us);
                    Some(us)
                }
                _ => record_wall_latency(t, f.timestamp, job, now),
            }
        }
        Decoded::ForeignJson(f) => {
            t.audit.record_foreign();
            record_wall_latency(t, f.timestamp, job, now)
        }
        Decoded::NotJson => {
            t.audit.record_foreign();
            t.not_json += 1;
            if t.not_json <= 10 {
                warn!(
                    partition,
                    offset, "record is not a JSON object; counted as foreign"
                );
            }
            None
        }
    };
    t.series.consumed(now_us, payload.len() as u64, latency);
}

/// Wall-clock latency against another process's timestamp. The wall clock is derived from the
/// monotonic one and the epoch read when the job started, which saves a clock read per record.
fn record_wall_latency(
    t: &mut crate::report::stats::ConsumerTally,
    producer_ts: Option<f64>,
    job: &ConsumerJob,
    now: Instant,
) -> Option<u64> {
    let ts = producer_ts?;
    let now = job.anchor_epoch_secs + now.saturating_duration_since(job.anchor).as_secs_f64();
    let us = ((now - ts) * 1e6).max(0.0) as u64;
    record_latency(&mut t.e2e_wall, us);
    Some(us)
}

/// client.py logged kafka-python's ConsumerRecord repr for each record; keep that shape.
fn log_record(msg: &impl RecordView, topic: &str, payload: &[u8]) {
    let ts = msg.timestamp_ms();
    let (partition, offset) = msg.position();
    let value = payload.escape_ascii();
    info!(
        target: "__main__",
        func = "<module>",
        "ConsumerRecord(topic='{}', partition={}, offset={}, timestamp={}, timestamp_type=0, key=None, value=b'{}', headers=[], checksum=None, serialized_key_size=-1, serialized_value_size={}, serialized_header_size=-1)",
        topic,
        partition,
        offset,
        ts,
        value,
        payload.len()
    );
}
