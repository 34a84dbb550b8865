//! The command line, flag for flag as `client.py` has it, plus kafka-workload's own flags.
//!
//! This module only describes what can be typed: it parses nothing from files or the environment
//! beyond what clap's `env` attributes do, and it checks no flag against another beyond what clap
//! expresses. [`crate::config::Settings::resolve`] turns these raw values into settings.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// `kafka-workload`: an Apache Kafka client that produces and consumes as a test and load workload.
///
/// A drop-in for kafka-test-app's `python3 -m charms.kafka.v0.client`: the same flags and defaults,
/// with measurement, a loss/duplicate/order audit and clean shutdown on top.
#[derive(Debug, Parser)]
#[command(
    name = "kafka-workload",
    version,
    about = "Handler for running a Kafka client: produce and consume as a test and load workload",
    infer_long_args = true,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, the client runs as `--producer` and/or `--consumer` say.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Topic to produce to and subscribe to; also the MongoDB database name.
    #[arg(
        short = 't',
        long,
        env = "KAFKA_WORKLOAD_TOPIC",
        default_value = "hot-topic"
    )]
    pub topic: String,

    /// SASL username.
    #[arg(short = 'u', long, env = "KAFKA_WORKLOAD_USERNAME")]
    pub username: Option<String>,

    /// SASL password (prefer --password-file or the environment: argv is visible in `ps`).
    #[arg(
        short = 'p',
        long,
        env = "KAFKA_WORKLOAD_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// Consumer group prefix; the group id is `<prefix>1`. Defaults to `<username>-`.
    #[arg(short = 'c', long, env = "KAFKA_WORKLOAD_CONSUMER_GROUP_PREFIX")]
    pub consumer_group_prefix: Option<String>,

    /// Comma-separated bootstrap servers (`host:port,...`). Without it, an in-process mock cluster.
    #[arg(short = 's', long, env = "KAFKA_WORKLOAD_SERVERS")]
    pub servers: Option<String>,

    /// Security protocol: SASL_PLAINTEXT, SASL_SSL, SSL or PLAINTEXT.
    #[arg(
        short = 'x',
        long,
        env = "KAFKA_WORKLOAD_SECURITY_PROTOCOL",
        default_value = "SASL_PLAINTEXT"
    )]
    pub security_protocol: String,

    /// Number of messages the producer sends.
    #[arg(
        short = 'n',
        long,
        env = "KAFKA_WORKLOAD_NUM_MESSAGES",
        default_value_t = 15
    )]
    pub num_messages: u64,

    /// replication.factor for created topics (the broker's default when not given).
    #[arg(short = 'r', long)]
    pub replication_factor: Option<i32>,

    /// Partitions for created topics (the broker's default when not given).
    #[arg(long)]
    pub num_partitions: Option<i32>,

    /// Run the producer.
    #[arg(long)]
    pub producer: bool,

    /// Run the consumer (with --producer, alongside it).
    #[arg(long)]
    pub consumer: bool,

    /// CA certificate (PEM) that the broker's certificate must chain to.
    #[arg(long, env = "KAFKA_WORKLOAD_CAFILE_PATH")]
    pub cafile_path: Option<PathBuf>,

    /// Client certificate (PEM) for mTLS, and for SASL_SSL when the broker asks for one.
    #[arg(long, env = "KAFKA_WORKLOAD_CERTFILE_PATH")]
    pub certfile_path: Option<PathBuf>,

    /// Client private key (PEM) that goes with --certfile-path.
    #[arg(long, env = "KAFKA_WORKLOAD_KEYFILE_PATH")]
    pub keyfile_path: Option<PathBuf>,

    /// MongoDB URI: record every produced and consumed message there.
    #[arg(long, env = "KAFKA_WORKLOAD_MONGO_URI", hide_env_values = true)]
    pub mongo_uri: Option<String>,

    /// Origin label written into every message (default `<hostname> (<ipv4>)`).
    #[arg(long)]
    pub origin: Option<String>,

    // ----- kafka-workload's own flags -----
    /// Credentials file: `juju run data-integrator/leader get-credentials` output, or the
    /// kafka_client relation databag as JSON or YAML.
    #[arg(long, env = "KAFKA_WORKLOAD_CREDENTIALS", help_heading = "Credentials")]
    pub credentials: Option<PathBuf>,

    /// File whose first line is the SASL password; re-read when it changes (rotation).
    #[arg(
        long,
        env = "KAFKA_WORKLOAD_PASSWORD_FILE",
        help_heading = "Credentials"
    )]
    pub password_file: Option<PathBuf>,

    /// SASL mechanism used when the protocol contains SASL.
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"], help_heading = "Credentials")]
    pub sasl_mechanism: String,

    /// Verify the broker's hostname against its certificate (client.py never does).
    #[arg(long, help_heading = "Credentials")]
    pub ssl_check_hostname: bool,

    /// Producer acks: all (default, with idempotence), 1 or 0.
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"], help_heading = "Producer")]
    pub acks: String,

    /// Pace the producer to this many messages per second (default: as fast as the broker allows).
    #[arg(long, help_heading = "Producer")]
    pub rate: Option<f64>,

    /// Pad each message's value to at least this many bytes (the `content` field grows).
    #[arg(long, help_heading = "Producer")]
    pub message_size: Option<usize>,

    /// Producer: how long a message may wait for its acknowledgement, retries included, before
    /// it is given up and counted as failed (librdkafka's `message.timeout.ms`).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300.0,
        help_heading = "Producer"
    )]
    pub delivery_timeout: f64,

    /// Producer: send in Kafka transactions (exactly-once writes). The result records which
    /// sequence numbers were committed and which aborted, and a consumer alongside audits them.
    #[arg(long, help_heading = "Transactions")]
    pub transactional: bool,

    /// The producer's `transactional.id` (implies --transactional). Default: `kafka-workload-`
    /// and the run id, distinct for every run; give the same id to a restarted producer so it
    /// fences the old one and the broker aborts its open transaction.
    #[arg(long, value_name = "ID", help_heading = "Transactions")]
    pub transactional_id: Option<String>,

    /// Messages per transaction.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        help_heading = "Transactions"
    )]
    pub txn_size: u64,

    /// Fraction of transactions aborted on purpose, spread evenly (0.1: every tenth). An
    /// aborted transaction's messages are written to the log first, then aborted.
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.0,
        help_heading = "Transactions"
    )]
    pub abort_rate: f64,

    /// How long the broker lets a transaction stay open before it aborts it
    /// (`transaction.timeout.ms`); a producer killed mid-transaction leaves it open this long,
    /// unless a producer with the same --transactional-id starts first.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        help_heading = "Transactions"
    )]
    pub transaction_timeout: f64,

    /// Consumer: read only committed transactional records (`read_committed`, the default) or
    /// also the records of open and aborted transactions (`read_uncommitted`, which the audit
    /// then counts).
    #[arg(long, default_value = "read_committed", value_parser = ["read_committed", "read_uncommitted"], help_heading = "Consumer")]
    pub isolation: String,

    /// Stop after this many seconds (producer: stop sending; consumer: stop consuming, except
    /// alongside --producer, where it reads on until this run's messages have all arrived).
    #[arg(long, value_name = "SECS", help_heading = "Run length")]
    pub duration: Option<f64>,

    /// Consumer: stop once this many distinct kafka-workload messages have arrived; the exit code
    /// then says whether any were lost.
    #[arg(long, value_name = "N", help_heading = "Run length")]
    pub expect: Option<u64>,

    /// Consumer: stop after this many records of any kind.
    #[arg(long, value_name = "N", help_heading = "Run length")]
    pub max_records: Option<u64>,

    /// Consumer: stop after this many seconds without a record (default: never, or 15 with
    /// --expect or --producer).
    #[arg(long, value_name = "SECS", help_heading = "Run length")]
    pub idle_timeout: Option<f64>,

    /// With --producer --consumer: keep consuming after this run's messages have all arrived,
    /// as client.py does.
    #[arg(long, help_heading = "Run length")]
    pub consume_forever: bool,

    /// Producer: send until stopped (SIGTERM), paced by --rate: the sidecar's continuous writes.
    #[arg(long, env = "KAFKA_WORKLOAD_FOREVER", conflicts_with_all = ["duration", "num_messages"], help_heading = "Run length")]
    pub forever: bool,

    /// Consumer group id, overriding `<prefix>1`.
    #[arg(long, help_heading = "Consumer")]
    pub group_id: Option<String>,

    /// Seconds to wait for the first broker answer before failing (unreachable broker, wrong
    /// password, bad certificate).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 20.0,
        help_heading = "Connection"
    )]
    pub connect_timeout: f64,

    /// Raw librdkafka property `key=value`, applied last; may not override security settings.
    #[arg(short = 'X', long = "kafka-config", value_name = "KEY=VALUE", action = ArgAction::Append, help_heading = "Connection")]
    pub kafka_config: Vec<String>,

    /// Also write the log lines to this file (the charm's `/tmp/<epoch>_<role>.log`).
    #[arg(long, help_heading = "Output")]
    pub log_file: Option<PathBuf>,

    /// How many per-message lines (`Message published ...`, consumed records) to log: a number,
    /// `all` or `none`. Lines past the limit are not formatted at all.
    #[arg(long, default_value = "100", help_heading = "Output")]
    pub log_messages: String,

    /// Seconds between progress lines.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5.0,
        help_heading = "Output"
    )]
    pub report_interval: f64,

    /// Log line format: `text` (client.py's lines) or `json` (one JSON object per line, for log
    /// shippers).
    #[arg(long, env = "KAFKA_WORKLOAD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], help_heading = "Output")]
    pub log_format: String,

    /// Serve Prometheus `/metrics` and `/healthz` over HTTP on this address, e.g. `0.0.0.0:9464`.
    #[arg(
        long,
        value_name = "ADDR",
        env = "KAFKA_WORKLOAD_METRICS_ADDR",
        help_heading = "Output"
    )]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Write the results as JSON (schema in docs/results-schema.md).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML report of the run here at the end (see `report`).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub html: Option<PathBuf>,

    /// Seconds per interval of the result's time series (0.01 to 3600).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1.0,
        help_heading = "Output"
    )]
    pub series_interval: f64,

    /// Threshold that must hold at the end, e.g. `p99<20ms`, `lost==0`, `rate>=50000`; repeatable.
    #[arg(long = "assert", value_name = "COND", action = ArgAction::Append, help_heading = "Output")]
    pub asserts: Vec<String>,

    /// No live progress bar even on a terminal.
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,

    /// MongoDB database name (default: the topic, mapped to a valid name).
    #[arg(long, help_heading = "MongoDB")]
    pub mongo_db: Option<String>,

    /// Seconds a failing MongoDB write is retried (Kafka offsets stay uncommitted meanwhile)
    /// before the run stops with exit code 9.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        help_heading = "MongoDB"
    )]
    pub mongo_timeout: f64,
}

/// Subcommands beside the default client run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Combine the `--json` results of several instances into one exact result.
    Merge {
        /// Result files written with --json.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the merged result as JSON here too.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Threshold that must hold for the merged result, e.g. `p99<20ms`; repeatable.
        #[arg(long = "assert", value_name = "COND", action = ArgAction::Append)]
        asserts: Vec<String>,
    },
    /// Write one self-contained HTML file (no network, no script) of one run or a fleet: its
    /// settings, summary, audit verdict and plots of throughput and latency over time and of
    /// the latency distribution; several results get a line each and one for the merged fleet.
    Report {
        /// Result files written with --json.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The HTML file to write.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
}
