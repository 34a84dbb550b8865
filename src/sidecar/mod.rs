//! The sidecar's HTTP side (`--metrics-addr`): `/metrics` in Prometheus text format and `/healthz`,
//! for the Canonical Observability Stack, Pebble checks and Kubernetes probes.
//!
//! [`health`] owns what each Kafka client tells us about its brokers (librdkafka statistics and
//! error events) and turns it into a verdict; [`metrics`] renders the run's tallies and that
//! health as Prometheus metrics at scrape time; [`server`] answers HTTP. Nothing here is on the
//! per-message path: a scrape takes the tallies' locks once, as the progress reporter does.

pub mod health;
pub mod metrics;
pub mod server;
