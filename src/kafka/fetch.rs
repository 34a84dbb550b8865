//! Batched reads for the consumer loop. rust-rdkafka's `BaseConsumer::poll` hands out one record
//! per call, and each call costs librdkafka three clock reads, an event and a queue pop, and
//! rust-rdkafka an `Arc` and a clock read: at 256 B that was more than the audit's own work.
//! librdkafka's `rd_kafka_consume_batch_queue` takes up to [`BATCH`] records per call, but on the
//! consumer queue it would also serve rebalances itself, bypassing the context's revoke
//! checkpoint. So the assigned partitions' fetch queues are forwarded to a queue of our own that
//! holds records only, read in batches, while rebalances, commits and errors stay on the
//! consumer queue that `poll` serves.
//!
//! librdkafka clears a partition's forwarding when it stops fetching it (revoke, unassign); the
//! context flags every rebalance and the loop forwards the assignment again, and again every
//! second in case a stop and a start passed between two looks. Records that reached the
//! consumer queue before a forward are older than those after it: the loop reads the consumer
//! queue dry before the next batch, so each partition's order holds.

use std::ffi::CString;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Records per batch: at a million records a second, a millisecond's worth.
pub const BATCH: usize = 1024;

/// One record of a batch, borrowed from librdkafka until the batch is released.
pub struct RawRecord<'a> {
    msg: &'a rd::rd_kafka_message_t,
}

impl<'a> RawRecord<'a> {
    /// librdkafka's error for this entry (a partition-level consumer error), if any.
    pub fn error(&self) -> Option<rd::rd_kafka_resp_err_t> {
        (self.msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then_some(self.msg.err)
    }

    /// The record's partition.
    pub fn partition(&self) -> i32 {
        self.msg.partition
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.msg.offset
    }

    /// The record's value; empty for none.
    pub fn payload(&self) -> &'a [u8] {
        if self.msg.payload.is_null() {
            return &[];
        }
        // SAFETY: librdkafka's payload pointer and length describe one allocation that lives as
        // long as the message, which outlives 'a (see `Batch`).
        unsafe { std::slice::from_raw_parts(self.msg.payload as *const u8, self.msg.len) }
    }

    /// The record's timestamp in ms since the epoch, -1 for none.
    pub fn timestamp_ms(&self) -> i64 {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message; librdkafka only reads it.
        unsafe { rd::rd_kafka_message_timestamp(self.msg, &mut kind) }
    }

    /// librdkafka's offset store for this record (`offset + 1` is what a commit then names).
    pub fn store_offset(&self) -> rd::rd_kafka_resp_err_t {
        // SAFETY: the message's topic handle lives as long as the message.
        unsafe { rd::rd_kafka_offset_store(self.msg.rkt, self.msg.partition, self.msg.offset) }
    }
}

/// The records queue of one consumer. It must be dropped before its consumer: librdkafka's
/// `rd_kafka_destroy` waits for every queue handle to go.
pub struct FetchQueue {
    rk: *mut rd::rd_kafka_t,
    queue: *mut rd::rd_kafka_queue_t,
    consumer_queue: *mut rd::rd_kafka_queue_t,
    topic: CString,
    messages: Vec<*mut rd::rd_kafka_message_t>,
    /// Partitions forwarded at the last look.
    forwarded: usize,
}

// SAFETY: librdkafka's queue handles may be used from any thread; the loop owns this one.
unsafe impl Send for FetchQueue {}

impl FetchQueue {
    /// A records queue for `consumer`, which reads `topic`; None if librdkafka has no queue to
    /// give (the loop then reads record by record).
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        let topic = CString::new(topic).ok()?;
        // SAFETY: `rk` is the live consumer's handle; both calls return new references.
        let (queue, consumer_queue) = unsafe {
            (
                rd::rd_kafka_queue_new(rk),
                rd::rd_kafka_queue_get_consumer(rk),
            )
        };
        if queue.is_null() || consumer_queue.is_null() {
            // SAFETY: each handle is destroyed at most once, and only when it exists.
            unsafe {
                if !queue.is_null() {
                    rd::rd_kafka_queue_destroy(queue);
                }
                if !consumer_queue.is_null() {
                    rd::rd_kafka_queue_destroy(consumer_queue);
                }
            }
            return None;
        }
        Some(FetchQueue {
            rk,
            queue,
            consumer_queue,
            topic,
            messages: vec![std::ptr::null_mut(); BATCH],
            forwarded: 0,
        })
    }

    /// Forwards the fetch queue of every partition the consumer holds to ours.
    pub fn forward<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut forwarded = 0;
        for e in assignment.elements_for_topic(self.topic.to_str().unwrap_or_default()) {
            // SAFETY: a live handle and a NUL-terminated topic; the partition queue handle is
            // a new reference, released right after the forward (the forward keeps its own).
            unsafe {
                let pq =
                    rd::rd_kafka_queue_get_partition(self.rk, self.topic.as_ptr(), e.partition());
                if pq.is_null() {
                    continue;
                }
                rd::rd_kafka_queue_forward(pq, self.queue);
                rd::rd_kafka_queue_destroy(pq);
            }
            forwarded += 1;
        }
        self.forwarded = forwarded;
    }

    /// Whether any partition was forwarded at the last look.
    pub fn active(&self) -> bool {
        self.forwarded > 0
    }

    /// Whether the consumer queue holds nothing (records from before a forward included).
    pub fn consumer_queue_empty(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { rd::rd_kafka_queue_length(self.consumer_queue) == 0 }
    }

    /// Waits up to `wait` for records and returns those that came (at most [`BATCH`]); they
    /// are released when the batch is dropped. None: librdkafka refused the call.
    pub fn batch(&mut self, wait: Duration) -> Option<Batch<'_>> {
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `messages` has room for BATCH pointers, which librdkafka fills.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue, ms, self.messages.as_mut_ptr(), BATCH)
        };
        let n = usize::try_from(n).ok()?;
        Some(Batch {
            messages: &self.messages[..n],
        })
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: both handles are ours, destroyed once. Partition queues still forwarded to
        // `queue` keep their own references to it.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_queue_destroy(self.consumer_queue);
        }
    }
}

/// The records of one `rd_kafka_consume_batch_queue` call.
pub struct Batch<'a> {
    messages: &'a [*mut rd::rd_kafka_message_t],
}

impl Batch<'_> {
    /// Whether the call returned nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The entries in the order librdkafka returned them (each partition's in offset order).
    pub fn iter(&self) -> impl Iterator<Item = RawRecord<'_>> {
        self.messages.iter().map(|&m| RawRecord {
            // SAFETY: librdkafka returned these n pointers to live messages, released only in
            // `drop`, after every borrow of the batch ended.
            msg: unsafe { &*m },
        })
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for &m in self.messages {
            // SAFETY: each message returned by the batch call is destroyed exactly once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}
