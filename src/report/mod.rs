//! Measurement output: the tallies the loops fill ([`stats`]), the run's result ([`summary`]) as
//! text and as versioned JSON, and periodic progress lines ([`progress`]).
//!
//! Nothing here talks to Kafka; printers take `&mut impl Write` and are tested on hand-built
//! values.

pub mod progress;
pub mod stats;
pub mod summary;
