//! Everything that talks to Kafka: the librdkafka property mapping, the client context, reaching
//! the cluster (mock or real), and the producer and consumer loops.
//!
//! The loops turn broker I/O into tallies ([`crate::report::stats`]); they print nothing but log
//! lines.

pub mod cluster;
pub mod config;
pub mod consumer;
pub mod context;
pub mod fetch;
pub mod producer;
pub mod topic;

pub use config::{client_config, properties, Role};
