//! Sending through librdkafka's topic handle. rust-rdkafka's `send` names the topic on every
//! call: a `CString` of the name, a varargs `rd_kafka_producev`, and librdkafka looking the
//! topic up by name under its lock and releasing it again, 0.07 of the 1.26 CPU-µs a 256 B
//! message cost the producer (docs/performance.md). A handle taken once per client skips all
//! of it. `rd_kafka_produce` copies the value and carries the same opaque pointer that
//! rust-rdkafka's `send` gives librdkafka, so the delivery reports reach the producer context
//! unchanged.
//!
//! The handle also carries kafka-workload's partitioner ([`Turns`]): partitions take turns of
//! one batch's worth of messages each, round the available partitions, instead of librdkafka's
//! sticky partitioner, which keeps a partition for 10 ms however many messages that is.

use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::types::RDKafkaErrorCode;

/// librdkafka's `RD_KAFKA_PARTITION_UA`: the partitioner picks.
const UNASSIGNED: i32 = -1;

/// librdkafka's handle on one topic of one client. It borrows the client: librdkafka's
/// `rd_kafka_destroy` must not run while a topic handle of its client is alive.
pub struct TopicHandle<'a> {
    rkt: NonNull<rd::rd_kafka_topic_t>,
    client: PhantomData<&'a ()>,
}

impl<'a> TopicHandle<'a> {
    /// The handle on `topic`, with the client's topic configuration (the same one rust-rdkafka's
    /// `send` gets) and, when `turns` is given, that partitioner in place of librdkafka's. It must
    /// be the client's first use of the topic: librdkafka keeps one topic object per name, and a
    /// configuration given after the first (a metadata request names the topic too) is dropped.
    /// Whether the partitioner took is logged.
    pub fn new<C: ClientContext>(
        client: &'a Client<C>,
        topic: &str,
        turns: Option<Turns>,
    ) -> anyhow::Result<Self> {
        let name = CString::new(topic)
            .map_err(|_| anyhow::anyhow!("topic name {topic:?} contains a NUL byte"))?;
        let rk = client.native_ptr();
        // Leaked: librdkafka may call the partitioner after this handle is gone (messages
        // waiting for the topic's metadata are partitioned by its main thread), for as long as
        // the client lives. One small allocation per client (a run, and one per rotation).
        let turns: Option<&'static Turns> = turns.map(|t| &*Box::leak(Box::new(t)));
        // SAFETY: a live client. The duplicate of its default topic configuration is handed to
        // rd_kafka_topic_new, which owns it from then on (and frees it if the topic exists).
        let rkt = unsafe {
            let conf = match turns {
                Some(t) => {
                    let conf = rd::rd_kafka_default_topic_conf_dup(rk);
                    rd::rd_kafka_topic_conf_set_partitioner_cb(conf, Some(take_turns));
                    rd::rd_kafka_topic_conf_set_opaque(conf, t as *const Turns as *mut c_void);
                    conf
                }
                None => std::ptr::null_mut(),
            };
            rd::rd_kafka_topic_new(rk, name.as_ptr(), conf)
        };
        let Some(rkt) = NonNull::new(rkt) else {
            // SAFETY: reads this thread's last librdkafka error.
            let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_last_error() }.into();
            anyhow::bail!("cannot open topic {topic}: {code}")
        };
        if let Some(t) = turns {
            // SAFETY: a live topic handle; the opaque is only read.
            let opaque = unsafe { rd::rd_kafka_topic_opaque(rkt.as_ptr()) };
            if std::ptr::eq(opaque as *const Turns, t) {
                tracing::debug!(topic, per_turn = t.per_turn, "partitions take turns");
            } else {
                tracing::warn!(topic, "the topic was opened before the producer's handle: librdkafka's own partitioner is in use");
            }
        }
        Ok(TopicHandle {
            rkt,
            client: PhantomData,
        })
    }

    /// Hands one value (copied) to librdkafka for a partition of its partitioner's choosing,
    /// with `opaque` for its delivery report; librdkafka's error (e.g. `QueueFull`) otherwise.
    pub fn send(&self, value: &[u8], opaque: usize) -> Result<(), RDKafkaErrorCode> {
        // SAFETY: a live topic handle; with RD_KAFKA_MSG_F_COPY librdkafka copies the value
        // before it returns and never writes through the pointer; the opaque is only carried.
        let rc = unsafe {
            rd::rd_kafka_produce(
                self.rkt.as_ptr(),
                UNASSIGNED,
                rd::RD_KAFKA_MSG_F_COPY,
                value.as_ptr() as *mut std::ffi::c_void,
                value.len(),
                std::ptr::null(),
                0,
                opaque as *mut std::ffi::c_void,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: reads this thread's last librdkafka error, which rd_kafka_produce just set.
        Err(unsafe { rd::rd_kafka_last_error() }.into())
    }
}

impl Drop for TopicHandle<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle is ours, and its client outlives it (the borrow).
        unsafe { rd::rd_kafka_topic_destroy(self.rkt.as_ptr()) }
    }
}

/// The partitioner's state: which partition has the turn, how many messages its turn has left,
/// and when the turn began. A turn is one batch's worth of messages (librdkafka's
/// `batch.num.messages` and `batch.size` for values of the run's size) or 10 ms, whichever ends
/// first, so a fast producer spreads over the partitions as fast as it fills batches and a slow
/// one still moves on every 10 ms like librdkafka's sticky partitioner (twice `linger.ms`).
///
/// librdkafka's sticky partitioner switches by time only. An unpaced kafka-workload hands it
/// over 2 million values a second, 20,000 and more in one 10 ms stint: the whole 25,000-message
/// queue on one partition, more than the idempotent producer's 5 requests in flight per
/// partition can carry, while the broker threads poll in a loop for the next one (its wakeup is
/// due already) and the other partitions wait. Turns keep every partition's share to a batch
/// at a time.
///
/// Read and written with relaxed atomics: the producing thread is the only caller but for
/// messages that waited for metadata, which librdkafka's main thread partitions; a race between
/// the two can only shorten or lengthen a turn.
#[derive(Debug)]
pub struct Turns {
    per_turn: u32,
    anchor: Instant,
    partition: AtomicI32,
    left: AtomicU32,
    began_us: AtomicU64,
}

/// A turn's longest time: librdkafka's `sticky.partitioning.linger.ms` default (2 x 5 ms linger).
const TURN_US: u64 = 10_000;

impl Turns {
    /// Turns for values of about `value_bytes` bytes, in batches of at most `batch_messages`
    /// messages and `batch_bytes` bytes (librdkafka's `batch.num.messages`, `batch.size`).
    pub fn new(value_bytes: usize, batch_messages: usize, batch_bytes: usize) -> Self {
        let per_turn =
            (batch_bytes / value_bytes.max(1)).clamp(1, batch_messages.clamp(1, 1 << 20)) as u32;
        Turns {
            per_turn,
            anchor: Instant::now(),
            partition: AtomicI32::new(-1),
            left: AtomicU32::new(0),
            began_us: AtomicU64::new(0),
        }
    }

    /// The partition for the next message of a topic with `count` partitions; `available`
    /// says whether a partition has a leader. The turn passes (to the next available
    /// partition in order) when it is used up, older than [`TURN_US`], or its partition lost
    /// its leader.
    fn next(&self, count: i32, now_us: u64, available: impl Fn(i32) -> bool) -> i32 {
        let current = self.partition.load(Ordering::Relaxed);
        let left = self.left.load(Ordering::Relaxed);
        if current >= 0
            && current < count
            && left > 0
            && now_us.saturating_sub(self.began_us.load(Ordering::Relaxed)) < TURN_US
            && available(current)
        {
            self.left.store(left - 1, Ordering::Relaxed);
            return current;
        }
        let start = if current < 0 { 0 } else { current + 1 };
        let next = (0..count)
            .map(|i| (start + i).rem_euclid(count))
            .find(|&p| available(p))
            // No partition has a leader: librdkafka queues the message on the next one.
            .unwrap_or(start.rem_euclid(count));
        self.partition.store(next, Ordering::Relaxed);
        self.left.store(self.per_turn - 1, Ordering::Relaxed);
        self.began_us.store(now_us, Ordering::Relaxed);
        next
    }
}

/// librdkafka's partitioner callback over [`Turns`].
unsafe extern "C" fn take_turns(
    rkt: *const rd::rd_kafka_topic_t,
    _key: *const c_void,
    _keylen: usize,
    partition_cnt: i32,
    rkt_opaque: *mut c_void,
    _msg_opaque: *mut c_void,
) -> i32 {
    if partition_cnt <= 0 {
        return 0;
    }
    // SAFETY: the opaque is the leaked, never freed `Turns` that TopicHandle::new set.
    let turns = unsafe { &*(rkt_opaque as *const Turns) };
    let now_us = turns.anchor.elapsed().as_micros() as u64;
    // SAFETY: called by librdkafka's partitioning, the one place this API may be used.
    turns.next(partition_cnt, now_us, |p| unsafe {
        rd::rd_kafka_topic_partition_available(rkt, p) == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_values(value_bytes: usize) -> Turns {
        Turns::new(value_bytes, 10_000, 1_000_000)
    }

    #[test]
    fn a_turn_is_one_batch_of_values_of_the_run_size() {
        assert_eq!(for_values(256).per_turn, 3_906);
        assert_eq!(for_values(1024).per_turn, 976);
        assert_eq!(for_values(10_240).per_turn, 97);
        assert_eq!(for_values(20).per_turn, 10_000);
        assert_eq!(for_values(5_000_000).per_turn, 1);
        assert_eq!(Turns::new(256, 100, 1_000_000).per_turn, 100);
        assert_eq!(Turns::new(256, 0, 0).per_turn, 1);
    }

    #[test]
    fn partitions_take_turns_of_a_batch_each_in_order() {
        let t = for_values(500_000); // two messages a turn
        let got: Vec<i32> = (0..8).map(|_| t.next(3, 0, |_| true)).collect();
        assert_eq!(got, [0, 0, 1, 1, 2, 2, 0, 0]);
    }

    #[test]
    fn a_turn_ends_after_ten_ms_however_few_messages_it_had() {
        let t = for_values(256);
        assert_eq!(t.next(4, 0, |_| true), 0);
        assert_eq!(t.next(4, 9_999, |_| true), 0);
        assert_eq!(t.next(4, 10_000, |_| true), 1);
        assert_eq!(t.next(4, 10_001, |_| true), 1);
    }

    #[test]
    fn partitions_without_a_leader_are_skipped_and_a_lost_leader_ends_the_turn() {
        let t = for_values(256);
        assert_eq!(t.next(4, 0, |p| p != 0), 1);
        assert_eq!(t.next(4, 1, |p| p != 1 && p != 2), 3);
        // None available: the next in order, where librdkafka holds it until a leader is known.
        assert_eq!(t.next(4, 2, |_| false), 0);
    }

    #[test]
    fn fewer_partitions_than_the_turn_pointed_at_start_over() {
        let t = for_values(256);
        for _ in 0..3 {
            t.next(8, 0, |p| p == 6);
        }
        assert_eq!(t.partition.load(Ordering::Relaxed), 6);
        assert_eq!(t.next(4, 1, |_| true), 3);
    }
}
