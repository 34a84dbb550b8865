//! The MongoDB sink (`--mongo-uri`): client.py's record of every produced and consumed message,
//! written in batches behind a bounded channel, so a slow database slows the workload instead of
//! growing memory, and losing nothing.
//!
//! The contract kept from client.py: one database per topic (see [`super::database_name_for_topic`],
//! or `--mongo-db`), collections `producer` and `consumer`, and these documents:
//!
//! * `producer`: `{_id, timestamp, origin, content}`, the message's own fields; `_id` is the
//!   message's uuid hex and `timestamp` its produce time (epoch seconds, a double). Written only
//!   after Kafka acknowledged the message.
//! * `consumer`: `{_id, message_id, timestamp, origin, content, destination, consumer_group,
//!   consumed_at}`. Unlike client.py, `timestamp` keeps the producer's time and the consume time
//!   goes into `consumed_at` (epoch seconds, a double), so `consumed_at - timestamp` is the
//!   end-to-end latency; `consumer_group` is the real group id, not the prefix; and `_id` is
//!   `"<group id>:<message _id>"` with the message's id in `message_id`, so two groups reading one
//!   topic each record every message (client.py used the message id, and a second group's
//!   inserts all failed as duplicates). A record that is not a JSON object with a string `_id`
//!   (a foreign producer) gets the message id `"<partition>-<offset>"` and its raw value as
//!   `content`.
//!
//! Lossless ordering: the producer's delivery callback hands a message over only once Kafka has
//! acknowledged it. The consumer hands each record over instead of storing its offset; the
//! writer task keeps one batch in flight, in arrival order, and reports a batch's per-partition
//! highest offsets back only once every document of the batch is stored (or was already there),
//! so what the consumer then stores with `store_offset` is always the highest contiguous stored
//! offset of each partition, and librdkafka's auto commit never covers an unstored record.
//!
//! Failures: a write that fails is retried with back-off (Kafka offsets stay uncommitted
//! meanwhile) until `--mongo-timeout` has passed since the failure began; then the run stops with
//! [`Failure::Mongo`] (exit code 9). Duplicate keys inside a batch (E11000, a replay after a
//! restart or rebalance) are counted, not fatal. After an attempt whose outcome is unknown (a
//! connection dropped mid-write), a duplicate key on the retry is taken to be that attempt's own
//! write and counted as written. Authentication and authorization failures do not get better by
//! waiting and fail at once. The URI may hold a password: it is never logged, and driver
//! messages are scrubbed of it before they are shown.
//!
//! Kafka stays in [`crate::kafka`]: this module never touches a Kafka client; the consumer loop
//! stores the offsets [`ConsumerFeed`] gives back.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::MongoCollectionResult;
use crate::config::{LogLimit, MongoSettings};
use crate::error::Failure;

/// Most documents in one `insert_many`.
pub const MAX_BATCH: usize = 1000;
/// Records a feed holds before the Kafka side blocks: one batch in flight, the next one ready.
pub const CHANNEL_CAPACITY: usize = 2 * MAX_BATCH;
/// Longest any single driver step (server selection, connecting) may take, so retries stay
/// regular during an outage; a URI that sets its own values keeps them.
const DRIVER_STEP: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// Unauthorized, AuthenticationFailed: waiting does not help.
const FATAL_CODES: [i32; 2] = [13, 18];

/// One acknowledged or consumed Kafka record on its way to the database.
#[derive(Debug)]
pub struct Record {
    /// The record's value.
    pub payload: Vec<u8>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When it was consumed, µs since the epoch (0 for produced messages).
    pub consumed_us: u64,
}

/// Which collection a writer fills and how its documents look.
#[derive(Debug, Clone)]
pub enum Side {
    /// `producer`: the message's own fields.
    Producer,
    /// `consumer`: the message's fields plus who consumed it and when.
    Consumer {
        /// The real consumer group id.
        group: String,
        /// This process's origin label.
        destination: String,
    },
}

impl Side {
    fn collection(&self) -> &'static str {
        match self {
            Side::Producer => "producer",
            Side::Consumer { .. } => "consumer",
        }
    }
}

/// The fields of client.py's message that the documents carry.
#[derive(Debug, Default, Deserialize)]
struct MessageFields {
    timestamp: Option<f64>,
    #[serde(rename = "_id")]
    id: Option<String>,
    origin: Option<String>,
    content: Option<String>,
}

/// The document a record becomes in `side`'s collection.
pub fn document(side: &Side, r: &Record) -> Document {
    let parsed = if r.payload.first() == Some(&b'{') {
        serde_json::from_slice::<MessageFields>(&r.payload)
            .ok()
            .filter(|f| f.id.is_some())
    } else {
        None
    };
    let f = parsed.unwrap_or_else(|| MessageFields {
        id: Some(format!("{}-{}", r.partition, r.offset)),
        content: Some(String::from_utf8_lossy(&r.payload).into_owned()),
        ..Default::default()
    });
    let message_id = f.id.unwrap_or_default();
    let mut d = match side {
        Side::Producer => doc! { "_id": message_id },
        Side::Consumer { group, .. } => {
            doc! { "_id": format!("{group}:{message_id}"), "message_id": message_id }
        }
    };
    if let Some(ts) = f.timestamp {
        d.insert("timestamp", ts);
    }
    if let Some(origin) = f.origin {
        d.insert("origin", origin);
    }
    if let Some(content) = f.content {
        d.insert("content", content);
    }
    if let Side::Consumer { group, destination } = side {
        d.insert("destination", destination.as_str());
        d.insert("consumer_group", group.as_str());
        d.insert("consumed_at", r.consumed_us as f64 / 1e6);
    }
    d
}

/// Removes a URI's password (and the URI itself) from text shown to the user, and keeps it on
/// one line.
#[derive(Debug, Clone)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// A scrubber for the secrets in `uri`: the whole URI, its password as written and
    /// percent-decoded.
    pub fn new(uri: &str) -> Scrubber {
        let mut secrets = vec![uri.to_string()];
        let authority = uri
            .split_once("://")
            .map_or(uri, |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_string());
                secrets.push(percent_decode(password));
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    /// `text` without any secret, on one line.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(['\n', '\r'], " ");
        for s in &self.secrets {
            out = out.replace(s.as_str(), "(redacted)");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an error is one that retrying cannot fix.
fn is_fatal(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::Authentication { .. } | ErrorKind::InvalidArgument { .. } => true,
        ErrorKind::Command(c) => FATAL_CODES.contains(&c.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| FATAL_CODES.contains(&w.code)),
        _ => false,
    }
}

/// A connected MongoDB sink.
pub struct Mongo {
    client: Client,
    database: String,
    timeout: Duration,
    scrubber: Scrubber,
}

impl Mongo {
    /// Connects and pings, retrying with back-off for up to `--mongo-timeout`.
    pub async fn connect(m: &MongoSettings) -> anyhow::Result<Mongo> {
        let scrubber = Scrubber::new(m.uri.expose());
        let mut opts = ClientOptions::parse(m.uri.expose()).await.map_err(|e| {
            Failure::Mongo(format!(
                "invalid --mongo-uri: {}",
                scrubber.scrub(&e.to_string())
            ))
        })?;
        let step = m.timeout.min(DRIVER_STEP);
        opts.server_selection_timeout.get_or_insert(step);
        opts.connect_timeout.get_or_insert(step);
        opts.app_name.get_or_insert_with(|| "kafka-workload".into());
        let hosts: Vec<String> = opts.hosts.iter().map(|h| h.to_string()).collect();
        let client = Client::with_options(opts).map_err(|e| {
            Failure::Mongo(format!(
                "invalid --mongo-uri: {}",
                scrubber.scrub(&e.to_string())
            ))
        })?;
        let admin = client.database("admin");
        let started = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            let left = m.timeout.saturating_sub(started.elapsed());
            let err = match tokio::time::timeout(left, admin.run_command(doc! { "ping": 1 })).await
            {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            let cause = err
                .as_ref()
                .map_or_else(|| "no answer".to_string(), describe);
            let why = if err.as_ref().is_some_and(is_fatal) {
                String::new()
            } else if started.elapsed() + backoff >= m.timeout {
                format!(" within {:.0} s (--mongo-timeout)", m.timeout.as_secs_f64())
            } else {
                if backoff == BACKOFF_MIN {
                    warn!(hosts = %hosts.join(","), error = %scrubber.scrub(&cause), "MongoDB does not answer yet; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            };
            return Err(Failure::Mongo(format!(
                "cannot connect to {}{why}: {}",
                hosts.join(","),
                scrubber.scrub(&cause)
            ))
            .into());
        }
        info!(
            hosts = %hosts.join(","),
            database = %m.database,
            "MongoDB sink: recording messages in collections producer and consumer"
        );
        Ok(Mongo {
            client,
            database: m.database.clone(),
            timeout: m.timeout,
            scrubber,
        })
    }

    /// The database written to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Starts the writer of the `producer` collection.
    pub fn producer_writer(
        &self,
        log_limit: LogLimit,
        cancel: CancellationToken,
    ) -> (ProducerFeed, WriterHandle) {
        let (tx, handle) = self.spawn(Side::Producer, None, log_limit, cancel);
        (ProducerFeed { tx }, handle)
    }

    /// Starts the writer of the `consumer` collection for `group`.
    pub fn consumer_writer(
        &self,
        group: &str,
        destination: &str,
        log_limit: LogLimit,
        cancel: CancellationToken,
    ) -> (ConsumerFeed, WriterHandle) {
        let (stored_tx, stored_rx) = std_mpsc::channel();
        let side = Side::Consumer {
            group: group.to_string(),
            destination: destination.to_string(),
        };
        let (tx, handle) = self.spawn(side, Some(stored_tx), log_limit, cancel);
        (
            ConsumerFeed {
                tx: Some(tx),
                stored: stored_rx,
            },
            handle,
        )
    }

    fn spawn(
        &self,
        side: Side,
        stored: Option<std_mpsc::Sender<Vec<(i32, i64)>>>,
        log_limit: LogLimit,
        cancel: CancellationToken,
    ) -> (mpsc::Sender<Record>, WriterHandle) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let writer = Writer {
            collection: self
                .client
                .database(&self.database)
                .collection(side.collection()),
            tally: MongoCollectionResult {
                collection: side.collection().into(),
                ..Default::default()
            },
            side,
            rx,
            stored,
            timeout: self.timeout,
            log_limit,
            cancel,
            scrubber: self.scrubber.clone(),
            database: self.database.clone(),
        };
        (tx, WriterHandle(tokio::spawn(writer.run())))
    }
}

/// The producer's way in: called from librdkafka's delivery-report thread.
#[derive(Debug, Clone)]
pub struct ProducerFeed {
    tx: mpsc::Sender<Record>,
}

impl ProducerFeed {
    /// Hands over an acknowledged message, blocking while the buffer is full (back-pressure on
    /// the delivery thread, hence on librdkafka's queue, hence on the send loop). False once the
    /// writer has stopped.
    pub fn record(&self, payload: &[u8], partition: i32, offset: i64) -> bool {
        self.tx
            .blocking_send(Record {
                payload: payload.to_vec(),
                partition,
                offset,
                consumed_us: 0,
            })
            .is_ok()
    }
}

/// The writer has stopped (it failed, and said why); nothing more can be stored.
#[derive(Debug)]
pub struct WriterStopped;

/// The consumer's way in and the stored offsets' way back.
#[derive(Debug)]
pub struct ConsumerFeed {
    tx: Option<mpsc::Sender<Record>>,
    stored: std_mpsc::Receiver<Vec<(i32, i64)>>,
}

impl ConsumerFeed {
    /// Hands over a consumed record, blocking while the buffer is full.
    pub fn record(&self, payload: &[u8], partition: i32, offset: i64) -> Result<(), WriterStopped> {
        let consumed_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let tx = self.tx.as_ref().ok_or(WriterStopped)?;
        tx.blocking_send(Record {
            payload: payload.to_vec(),
            partition,
            offset,
            consumed_us,
        })
        .map_err(|_| WriterStopped)
    }

    /// `(partition, offset)` of records now stored, in order, without waiting: each is the
    /// highest contiguous stored offset of its partition so far (the record's own offset, as
    /// `Consumer::store_offset` takes it).
    pub fn stored(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.stored.try_iter().flatten()
    }

    /// Closes the feed and waits until the writer has stored (or given up on) everything handed
    /// over, yielding the rest of the stored offsets.
    pub fn finish(mut self) -> impl Iterator<Item = (i32, i64)> {
        self.tx = None;
        self.stored.into_iter().flatten()
    }
}

/// A running writer; [`WriterHandle::finish`] waits for it once its feed is closed.
pub struct WriterHandle(JoinHandle<(MongoCollectionResult, anyhow::Result<()>)>);

impl WriterHandle {
    /// The writer's counts and whether it stored everything.
    pub async fn finish(self) -> (MongoCollectionResult, anyhow::Result<()>) {
        match self.0.await {
            Ok(r) => r,
            Err(e) => (
                MongoCollectionResult::default(),
                Err(anyhow::anyhow!("MongoDB writer panicked: {e}")),
            ),
        }
    }
}

/// The highest offset of each partition in a batch, in first-seen order.
pub fn highest_offsets(batch: &[Record]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for r in batch {
        match out.iter_mut().find(|(p, _)| *p == r.partition) {
            Some((_, o)) => *o = (*o).max(r.offset),
            None => out.push((r.partition, r.offset)),
        }
    }
    out
}

/// Owns one collection: receives records, writes them in batches, reports stored offsets.
struct Writer {
    collection: Collection<Document>,
    side: Side,
    rx: mpsc::Receiver<Record>,
    stored: Option<std_mpsc::Sender<Vec<(i32, i64)>>>,
    timeout: Duration,
    log_limit: LogLimit,
    cancel: CancellationToken,
    scrubber: Scrubber,
    database: String,
    tally: MongoCollectionResult,
}

impl Writer {
    async fn run(mut self) -> (MongoCollectionResult, anyhow::Result<()>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // No linger: whatever arrived while the previous batch was being written forms the next
        // one, so batches grow with the load and stay small (fast) when it is light.
        while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let docs: Vec<Document> = batch.iter().map(|r| document(&self.side, r)).collect();
            if let Err(message) = self.store(&docs).await {
                // Stop the run first, then stop taking records: the Kafka side sees a closed feed.
                self.cancel.cancel();
                self.rx.close();
                let mut unstored = batch.len() as u64;
                while self.rx.try_recv().is_ok() {
                    unstored += 1;
                }
                self.tally.unstored = unstored;
                return (self.tally, Err(Failure::Mongo(message).into()));
            }
            if let Some(stored) = &self.stored {
                // The consumer may already be gone (it stopped on an error); nothing to tell then.
                let _ = stored.send(highest_offsets(&batch));
            }
            batch.clear();
        }
        (self.tally, Ok(()))
    }

    /// Writes `docs` until each is stored or already present; the error is the one-line reason.
    async fn store(&mut self, docs: &[Document]) -> Result<(), String> {
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut trouble_since: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        let mut uncertain = false;
        loop {
            let started = Instant::now();
            let limit = match trouble_since {
                None => self.timeout,
                Some(t) => (t + self.timeout)
                    .saturating_duration_since(started)
                    .max(BACKOFF_MIN),
            };
            let attempt = self
                .collection
                .insert_many(pending.iter().map(|&i| &docs[i]))
                .ordered(false);
            let cause = match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if is_fatal(&e) => {
                    return Err(self.reason("the server refused the write", &describe(&e)));
                }
                Ok(Err(e)) => match self.settle(docs, &mut pending, &e, uncertain) {
                    Settled::Done => Ok(()),
                    Settled::Retry => Err(describe(&e)),
                    Settled::Unknown => {
                        // The write may have been applied in part: a duplicate key on the retry
                        // may be our own.
                        uncertain = true;
                        Err(describe(&e))
                    }
                },
                Err(_) => {
                    uncertain = true;
                    Err(format!("no answer within {:.1} s", limit.as_secs_f64()))
                }
            };
            let cause = match cause {
                Ok(()) => {
                    self.written(pending.len());
                    self.tally.batches += 1;
                    if let Some(t) = trouble_since {
                        info!(
                            collection = self.side.collection(),
                            after_s = format!("{:.1}", t.elapsed().as_secs_f64()),
                            "MongoDB writes resumed"
                        );
                    }
                    return Ok(());
                }
                Err(cause) => cause,
            };
            let since = *trouble_since.get_or_insert(started);
            if since.elapsed() + backoff >= self.timeout {
                let what = format!(
                    "not written for {:.0} s (--mongo-timeout)",
                    self.timeout.as_secs_f64()
                );
                return Err(self.reason(&what, &cause));
            }
            if backoff == BACKOFF_MIN {
                warn!(
                    collection = self.side.collection(),
                    pending = pending.len(),
                    error = %self.scrubber.scrub(&cause),
                    "MongoDB write failed; retrying with back-off, Kafka offsets stay uncommitted"
                );
            }
            self.tally.retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sorts an insert_many error's per-document failures: inserted and duplicate documents are
    /// done, others stay in `pending`. On [`Settled::Done`] `pending` is what remains to count as
    /// written (nothing).
    fn settle(
        &mut self,
        docs: &[Document],
        pending: &mut Vec<usize>,
        e: &DriverError,
        uncertain: bool,
    ) -> Settled {
        let ErrorKind::InsertMany(m) = &*e.kind else {
            return Settled::Unknown;
        };
        let Some(errors) = &m.write_errors else {
            return Settled::Unknown;
        };
        let mut failed = vec![false; pending.len()];
        let mut retry = Vec::new();
        let mut own = 0;
        for w in errors {
            let Some(&doc_index) = pending.get(w.index) else {
                continue;
            };
            failed[w.index] = true;
            if w.code != DUPLICATE_KEY {
                retry.push(doc_index);
            } else if uncertain {
                own += 1;
            } else {
                if self.log_limit.allows(self.tally.duplicates) {
                    let id = docs[doc_index].get("_id").cloned().unwrap_or(Bson::Null);
                    error!(target: "__main__", func = "<module>", "Duplicated key with id: {}", display_id(&id));
                }
                self.tally.duplicates += 1;
            }
        }
        let inserted: Vec<usize> = pending
            .iter()
            .zip(&failed)
            .filter(|(_, f)| !**f)
            .map(|(i, _)| *i)
            .collect();
        // A write concern error leaves the inserted documents' durability unknown: write again.
        if m.write_concern_error.is_some() {
            retry.extend(inserted);
            self.written(own);
        } else {
            self.written(own + inserted.len());
        }
        *pending = retry;
        if pending.is_empty() {
            Settled::Done
        } else {
            Settled::Retry
        }
    }

    /// Counts `n` more stored documents, logging client.py's line for the producer's first ones.
    fn written(&mut self, n: usize) {
        if matches!(self.side, Side::Producer) {
            for k in 0..n as u64 {
                if !self.log_limit.allows(self.tally.written + k) {
                    break;
                }
                info!(target: "__main__", func = "produce_message", "insert message in collection");
            }
        }
        self.tally.written += n as u64;
    }

    fn reason(&self, what: &str, cause: &str) -> String {
        format!(
            "database {} collection {}: {what}: {}",
            self.database,
            self.side.collection(),
            self.scrubber.scrub(cause)
        )
    }
}

/// What an insert_many error left to do.
enum Settled {
    /// Every document is stored or was already there.
    Done,
    /// Some documents failed one by one; the rest are done.
    Retry,
    /// The outcome of the attempt is unknown: write them all again.
    Unknown,
}

/// The driver's own description of what went wrong, without its wrapping of labels and sources.
fn describe(e: &DriverError) -> String {
    e.kind.to_string()
}

fn display_id(id: &Bson) -> String {
    match id {
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &str, partition: i32, offset: i64) -> Record {
        Record {
            payload: payload.as_bytes().to_vec(),
            partition,
            offset,
            consumed_us: 1_700_000_001_250_000,
        }
    }

    const MSG: &str = r#"{"timestamp": 1700000000.5, "_id": "9f4da8c1df2547f18c4d3365f7fb1c54", "origin": "h\u00e9st (10.0.0.1)", "content": "Message #3", "run_id": "r", "seq": 3, "sent_ns": 1}"#;

    #[test]
    fn producer_documents_carry_client_py_fields_only() {
        let d = document(&Side::Producer, &record(MSG, 0, 7));
        assert_eq!(
            d,
            doc! {
                "_id": "9f4da8c1df2547f18c4d3365f7fb1c54",
                "timestamp": 1700000000.5,
                "origin": "h\u{e9}st (10.0.0.1)",
                "content": "Message #3",
            }
        );
    }

    #[test]
    fn consumer_documents_are_keyed_by_group_and_keep_the_producer_timestamp() {
        let side = Side::Consumer {
            group: "relation-8-1".into(),
            destination: "me (10.0.0.2)".into(),
        };
        let d = document(&side, &record(MSG, 0, 7));
        assert_eq!(
            d.get_str("_id").unwrap(),
            "relation-8-1:9f4da8c1df2547f18c4d3365f7fb1c54"
        );
        assert_eq!(
            d.get_str("message_id").unwrap(),
            "9f4da8c1df2547f18c4d3365f7fb1c54"
        );
        assert_eq!(d.get_f64("timestamp").unwrap(), 1700000000.5);
        assert_eq!(d.get_f64("consumed_at").unwrap(), 1700000001.25);
        assert_eq!(d.get_str("consumer_group").unwrap(), "relation-8-1");
        assert_eq!(d.get_str("destination").unwrap(), "me (10.0.0.2)");
        assert_eq!(d.get_str("content").unwrap(), "Message #3");
    }

    #[test]
    fn records_without_a_message_id_are_keyed_by_partition_and_offset() {
        let side = Side::Consumer {
            group: "g".into(),
            destination: "d".into(),
        };
        let d = document(&side, &record("Message #1", 2, 40));
        assert_eq!(d.get_str("_id").unwrap(), "g:2-40");
        assert_eq!(d.get_str("content").unwrap(), "Message #1");
        assert!(d.get("timestamp").is_none());
        let d = document(&side, &record(r#"{"_id": 5, "content": "x"}"#, 0, 1));
        assert_eq!(d.get_str("message_id").unwrap(), "0-1");
    }

    #[test]
    fn scrubber_removes_the_password_as_written_and_decoded_and_joins_lines() {
        let s = Scrubber::new("mongodb://app:p%40ss-w0rd@db1:27017,db2/admin?tls=true");
        let text = s.scrub("auth failed for p@ss-w0rd\nand p%40ss-w0rd in mongodb://app:p%40ss-w0rd@db1:27017,db2/admin?tls=true");
        assert!(!text.contains("ss-w0rd"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(
            Scrubber::new("mongodb://127.0.0.1:27017/?directConnection=true").scrub("x"),
            "x"
        );
    }

    #[test]
    fn stored_offsets_are_the_highest_of_each_partition_in_a_batch() {
        let batch = [
            record("a", 0, 5),
            record("b", 1, 9),
            record("c", 0, 6),
            record("d", 1, 10),
        ];
        assert_eq!(highest_offsets(&batch), vec![(0, 6), (1, 10)]);
    }
}
