//! What the workload sends and checks: the message payload (client.py's JSON plus a run id and a
//! sequence number) and the audit that tracks which sequence numbers arrived.
//!
//! Pure code: no Kafka, no clocks beyond the values passed in.

pub mod audit;
pub mod message;
