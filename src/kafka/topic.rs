//! Sending through librdkafka's topic handle. rust-rdkafka's `send` names the topic on every
//! call: a `CString` of the name, a varargs `rd_kafka_producev`, and librdkafka looking the
//! topic up by name under its lock and releasing it again, 0.07 of the 1.26 CPU-µs a 256 B
//! message cost the producer (docs/performance.md). A handle taken once per client skips all
//! of it. `rd_kafka_produce` copies the value and carries the same opaque pointer that
//! rust-rdkafka's `send` gives librdkafka, so the delivery reports reach the producer context
//! unchanged.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

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
    /// `send` gets, since it also names no configuration of its own).
    pub fn new<C: ClientContext>(client: &'a Client<C>, topic: &str) -> anyhow::Result<Self> {
        let name = CString::new(topic)
            .map_err(|_| anyhow::anyhow!("topic name {topic:?} contains a NUL byte"))?;
        // SAFETY: a live client; librdkafka copies the name; a null configuration takes the
        // client's default topic configuration.
        let rkt = unsafe {
            rd::rd_kafka_topic_new(client.native_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        match NonNull::new(rkt) {
            Some(rkt) => Ok(TopicHandle {
                rkt,
                client: PhantomData,
            }),
            None => {
                // SAFETY: reads this thread's last librdkafka error.
                let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_last_error() }.into();
                anyhow::bail!("cannot open topic {topic}: {code}")
            }
        }
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
