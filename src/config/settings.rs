//! [`Settings::resolve`]: raw flags (with clap's record of where each value came from), files and
//! defaults in, checked settings out. Every error names the flag or file at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use tracing::info;

use super::{credentials, Credentials, Secret};
use crate::cli::Cli;
use crate::error::ConfigError;

/// What the run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--producer`
    Produce,
    /// `--consumer`
    Consume,
    /// `--producer --consumer`: the consumer runs alongside the producer.
    Both,
}

impl Mode {
    /// Whether this mode produces.
    pub fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::Both)
    }
    /// Whether this mode consumes.
    pub fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::Both)
    }
}

/// Where the brokers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// No servers given: an in-process librdkafka mock cluster.
    Mock,
    /// A real cluster's bootstrap list.
    Brokers(String),
}

/// Kafka's security.protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// No TLS, no SASL.
    Plaintext,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
    /// TLS, with a client certificate (mTLS) when one is given.
    Ssl,
}

impl Protocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
            Protocol::Ssl => "SSL",
        }
    }
    /// Whether it authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
    /// Whether it runs over TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Protocol::SaslSsl | Protocol::Ssl)
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Protocol::Plaintext),
            "SASL_PLAINTEXT" => Ok(Protocol::SaslPlaintext),
            "SASL_SSL" => Ok(Protocol::SaslSsl),
            "SSL" => Ok(Protocol::Ssl),
            _ => Err(ConfigError::Invalid {
                flag: "--security-protocol",
                reason: format!("{text:?} is not one of SASL_PLAINTEXT, SASL_SSL, SSL, PLAINTEXT"),
            }),
        }
    }
}

/// SASL identity.
#[derive(Debug, Clone)]
pub struct Sasl {
    /// SCRAM-SHA-512 (Charmed Kafka), SCRAM-SHA-256 or PLAIN.
    pub mechanism: String,
    /// The user.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// Where the CA comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CaSource {
    /// `--cafile-path`.
    File(PathBuf),
    /// `tls-ca` of a credentials file, PEM text.
    Pem(Secret),
}

/// TLS material and checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// The CA; the system's store when `None`.
    pub ca: Option<CaSource>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
    /// Check the broker's hostname against its certificate.
    pub check_hostname: bool,
}

/// Where a setting's value came from; logged, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// `--password-file`.
    PasswordFile,
    /// `--credentials`.
    CredentialsFile,
    /// Derived from another setting (e.g. the group prefix from the username).
    Derived,
    /// The built-in default.
    Default,
}

impl Source {
    /// Human name for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::PasswordFile => "password file",
            Source::CredentialsFile => "credentials file",
            Source::Derived => "derived",
            Source::Default => "default",
        }
    }
}

/// How many per-message log lines to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLimit {
    /// Every message.
    All,
    /// The first N.
    First(u64),
}

impl LogLimit {
    /// Whether message number `n` (0-based) gets a line.
    #[inline]
    pub fn allows(self, n: u64) -> bool {
        match self {
            LogLimit::All => true,
            LogLimit::First(limit) => n < limit,
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// `-n`: messages to send; `None` (--duration without -n) sends until the duration ends.
    pub num_messages: Option<u64>,
    /// `--rate`: messages per second, or as fast as possible.
    pub rate: Option<f64>,
    /// `--message-size`: minimum value size in bytes.
    pub message_size: Option<usize>,
    /// `--acks`: all, 1 or 0.
    pub acks: String,
    /// `-r`: replication factor for topic creation.
    pub replication_factor: Option<i32>,
    /// `--num-partitions`: partitions for topic creation.
    pub num_partitions: Option<i32>,
    /// `--delivery-timeout`: how long a message may go unacknowledged before it fails.
    pub delivery_timeout: Duration,
    /// `--transactional`: send in transactions.
    pub transactions: Option<TransactionSettings>,
}

/// How a transactional producer groups its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionSettings {
    /// `--transactional-id`; `None` derives one from the run id.
    pub id: Option<String>,
    /// `--txn-size`: messages per transaction (at least 1).
    pub size: u64,
    /// `--abort-rate`: fraction of transactions aborted on purpose, in [0, 1].
    pub abort_rate: f64,
    /// `--transaction-timeout`: `transaction.timeout.ms`.
    pub timeout: Duration,
}

/// `--isolation`: which transactional records a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Only committed ones (librdkafka's default).
    #[default]
    ReadCommitted,
    /// Also those of open and aborted transactions.
    ReadUncommitted,
}

impl Isolation {
    /// The `isolation.level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The group id: `--group-id`, or `<prefix>1`.
    pub group_id: String,
    /// The prefix, recorded in MongoDB documents as client.py did.
    pub group_prefix: String,
    /// `--expect`: stop after this many distinct kafka-workload messages.
    pub expect: Option<u64>,
    /// `--max-records`: stop after this many records.
    pub max_records: Option<u64>,
    /// Stop after this long without a record.
    pub idle_timeout: Option<Duration>,
    /// With --producer: stop once every message of this run arrived.
    pub stop_when_run_complete: bool,
    /// `--isolation`.
    pub isolation: Isolation,
}

/// Output settings.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// `--log-file`.
    pub log_file: Option<PathBuf>,
    /// `--log-messages`.
    pub log_messages: LogLimit,
    /// `--report-interval`.
    pub report_interval: Duration,
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--html`.
    pub html: Option<PathBuf>,
    /// `--series-interval`.
    pub series_interval: Duration,
    /// `--assert` conditions, unparsed.
    pub asserts: Vec<String>,
    /// Whether a live progress bar may be drawn.
    pub progress: bool,
    /// `--metrics-addr`: where `/metrics` and `/healthz` are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// MongoDB sink settings.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    /// The URI (may hold a password).
    pub uri: Secret,
    /// The database name: `--mongo-db`, or the topic mapped by
    /// [`crate::sink::database_name_for_topic`].
    pub database: String,
    /// `--mongo-timeout`: how long a failing write is retried before the run fails.
    pub timeout: Duration,
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Produce, consume or both.
    pub mode: Mode,
    /// Where the brokers are.
    pub cluster: Cluster,
    /// The topic.
    pub topic: String,
    /// security.protocol.
    pub protocol: Protocol,
    /// SASL identity when the protocol uses SASL.
    pub sasl: Option<Sasl>,
    /// TLS settings when the protocol uses TLS.
    pub tls: Option<Tls>,
    /// The file the password came from, watched for rotation (none for flags and environment).
    pub password_source_file: Option<PasswordFile>,
    /// Whether the username came from that file too (`--credentials`), so a new user in it is
    /// a rotation to that user.
    pub username_from_file: bool,
    /// Producer settings.
    pub producer: ProducerSettings,
    /// Consumer settings.
    pub consumer: ConsumerSettings,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// Origin label for messages.
    pub origin: String,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
    /// `-X key=value` librdkafka overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// Output settings.
    pub output: OutputSettings,
    /// MongoDB sink, when `--mongo-uri` is given.
    pub mongo: Option<MongoSettings>,
    /// Which source each setting came from, for the start-up log.
    pub sources: Vec<(&'static str, Source)>,
}

impl Settings {
    /// The settings a report shows, by name, as typed (no secret: the user name, never the
    /// password, the TLS file paths, never their contents).
    pub fn describe(&self) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(
            "mode",
            match self.mode {
                Mode::Produce => "producer",
                Mode::Consume => "consumer",
                Mode::Both => "producer + consumer",
            }
            .into(),
        );
        put(
            "bootstrap",
            match &self.cluster {
                Cluster::Mock => "librdkafka mock cluster".into(),
                Cluster::Brokers(b) => b.clone(),
            },
        );
        put("topic", self.topic.clone());
        put("security.protocol", self.protocol.as_str().into());
        if let Some(sasl) = &self.sasl {
            put("sasl.mechanism", sasl.mechanism.clone());
            put("username", sasl.username.clone());
        }
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        if self.mode.produces() {
            let p = &self.producer;
            put("num_messages", opt(p.num_messages.map(|n| n.to_string())));
            put("rate", opt(p.rate.map(|r| format!("{r} msgs/s"))));
            put(
                "message_size",
                opt(p.message_size.map(|n| format!("{n} B"))),
            );
            put("acks", p.acks.clone());
            put(
                "num_partitions",
                opt(p.num_partitions.map(|n| n.to_string())),
            );
            put(
                "replication_factor",
                opt(p.replication_factor.map(|n| n.to_string())),
            );
            if let Some(t) = &p.transactions {
                put("txn_size", t.size.to_string());
                put("abort_rate", t.abort_rate.to_string());
            }
        }
        if self.mode.consumes() {
            put("group_id", self.consumer.group_id.clone());
            put("isolation", self.consumer.isolation.as_str().into());
        }
        if let Some(d) = self.duration {
            put("duration", format!("{} s", d.as_secs_f64()));
        }
        put(
            "series_interval",
            format!("{} s", self.output.series_interval.as_secs_f64()),
        );
        for (k, v) in &self.overrides {
            if !["password", "secret", "key", "jaas", "token"]
                .iter()
                .any(|w| k.contains(w))
            {
                put(&format!("-X {k}"), v.clone());
            }
        }
        m
    }
}

/// A file a password is read from, and re-read when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordFile {
    /// `--password-file`: the first line.
    Plain(PathBuf),
    /// `--credentials`: the `password` key.
    Credentials(PathBuf),
}

impl Settings {
    /// These settings with another SASL identity (after a rotation to a new user).
    pub fn with_identity(&self, identity: &super::rotation::Identity) -> Settings {
        let mut s = self.clone();
        if let Some(sasl) = s.sasl.as_mut() {
            sasl.username = identity.username.clone();
            sasl.password = identity.password.clone();
        }
        s
    }
}

impl PasswordFile {
    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            PasswordFile::Plain(p) | PasswordFile::Credentials(p) => p,
        }
    }

    /// Reads the password, and with `names_user` the username a credentials file gives.
    pub fn read_identity(&self, names_user: bool) -> Result<(Option<String>, Secret), ConfigError> {
        match self {
            PasswordFile::Plain(p) => Ok((None, read_password_file(p)?)),
            PasswordFile::Credentials(p) => {
                let creds = credentials::load(p)?;
                let password = creds.password.ok_or_else(|| ConfigError::Invalid {
                    flag: "--credentials",
                    reason: format!("{} has no password", p.display()),
                })?;
                Ok((creds.username.filter(|_| names_user), password))
            }
        }
    }
}

/// Reads a password file: its first line, without the line ending.
pub fn read_password_file(path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Unreadable {
        what: "password file (--password-file)".into(),
        path: path.to_path_buf(),
        cause,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(ConfigError::Invalid {
            flag: "--password-file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(Secret::new(line))
}

fn source_of(matches: &ArgMatches, id: &str) -> Option<Source> {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env),
        _ => None,
    }
}

/// Flag or environment, then the credentials file, then the default; records the winner.
fn pick_source(
    sources: &mut Vec<(&'static str, Source)>,
    matches: &ArgMatches,
    name: &'static str,
    id: &str,
    given: Option<String>,
    from_file: Option<String>,
) -> Option<String> {
    let (value, source) = match (source_of(matches, id), given, from_file) {
        (Some(src), Some(v), _) => (v, src),
        (_, _, Some(v)) => (v, Source::CredentialsFile),
        (_, Some(v), None) => (v, Source::Default),
        (_, None, None) => return None,
    };
    sources.push((name, source));
    Some(value)
}

fn check_readable(path: &Path, what: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut [0u8; 1]))
        .map(|_| ())
        .map_err(|cause| ConfigError::Unreadable {
            what: what.into(),
            path: path.to_path_buf(),
            cause,
        })
}

fn positive_secs(flag: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    if secs.is_finite() && secs > 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(ConfigError::Invalid {
            flag,
            reason: format!("{secs} is not a positive number of seconds"),
        })
    }
}

/// `--series-interval`: from 10 ms (finer costs a histogram per interval for little) to an hour.
fn series_interval(secs: f64) -> Result<Duration, ConfigError> {
    if secs.is_finite() && (0.01..=3600.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(ConfigError::Invalid {
            flag: "--series-interval",
            reason: format!("{secs} is not between 0.01 and 3600 seconds"),
        })
    }
}

/// The transaction settings, when --transactional or --transactional-id asks for them.
fn transactions(cli: &Cli, mode: Mode) -> Result<Option<TransactionSettings>, ConfigError> {
    if !cli.transactional && cli.transactional_id.is_none() {
        return Ok(None);
    }
    if !mode.produces() {
        return Err(ConfigError::Usage(
            "--transactional is a producer setting: add --producer".into(),
        ));
    }
    if !matches!(cli.acks.as_str(), "all" | "-1") {
        return Err(ConfigError::Invalid {
            flag: "--acks",
            reason: "a transactional producer needs --acks all (transactions require idempotence)"
                .into(),
        });
    }
    if let Some(id) = &cli.transactional_id {
        if id.trim().is_empty() {
            return Err(ConfigError::Invalid {
                flag: "--transactional-id",
                reason: "it is empty".into(),
            });
        }
    }
    if cli.txn_size == 0 {
        return Err(ConfigError::Invalid {
            flag: "--txn-size",
            reason: "a transaction needs at least 1 message".into(),
        });
    }
    if !(0.0..=1.0).contains(&cli.abort_rate) {
        return Err(ConfigError::Invalid {
            flag: "--abort-rate",
            reason: format!("{} is not a fraction between 0 and 1", cli.abort_rate),
        });
    }
    let timeout = positive_secs("--transaction-timeout", cli.transaction_timeout)?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(900) {
        return Err(ConfigError::Invalid {
            flag: "--transaction-timeout",
            reason: format!(
                "{} s is outside 1..900 s (the broker's transaction.max.timeout.ms is 15 minutes by default)",
                cli.transaction_timeout
            ),
        });
    }
    Ok(Some(TransactionSettings {
        id: cli.transactional_id.clone(),
        size: cli.txn_size,
        abort_rate: cli.abort_rate,
        timeout,
    }))
}

/// `--delivery-timeout`: whole milliseconds within librdkafka's range for `message.timeout.ms`.
fn delivery_timeout(secs: f64) -> Result<Duration, ConfigError> {
    let d = positive_secs("--delivery-timeout", secs)?;
    if d < Duration::from_millis(1) || d.as_millis() > i32::MAX as u128 {
        return Err(ConfigError::Invalid {
            flag: "--delivery-timeout",
            reason: format!("{secs} s is outside 0.001..{} s", i32::MAX / 1000),
        });
    }
    Ok(Duration::from_millis(d.as_millis() as u64))
}

/// `client.py`'s origin: `<hostname> (<ipv4>)`; a failed lookup gives `unknown` instead of a crash.
pub fn default_origin() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let ip = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0))
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()))
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("{host} ({ip})")
}

impl Settings {
    /// Resolves the command line (with `matches` telling which values were typed, which came from
    /// the environment and which are defaults) against the credentials file.
    pub fn resolve(cli: &Cli, matches: &ArgMatches) -> Result<Settings, ConfigError> {
        let mut sources = Vec::new();
        let creds: Credentials = match &cli.credentials {
            Some(path) => credentials::load(path)?,
            None => Credentials::default(),
        };
        let mode = match (cli.producer, cli.consumer) {
            (true, true) => Mode::Both,
            (true, false) => Mode::Produce,
            (false, true) => Mode::Consume,
            (false, false) => {
                return Err(ConfigError::Usage(
                    "No client type args found: give --producer, --consumer or both".into(),
                ))
            }
        };

        let servers = pick_source(
            &mut sources,
            matches,
            "servers",
            "servers",
            cli.servers.clone(),
            creds.endpoints.clone(),
        )
        .filter(|s| !s.trim().is_empty());
        let topic = pick_source(
            &mut sources,
            matches,
            "topic",
            "topic",
            Some(cli.topic.clone()),
            creds.topic.clone(),
        )
        .expect("topic has a default");
        if topic.trim().is_empty() {
            return Err(ConfigError::Invalid {
                flag: "--topic",
                reason: "empty topic name".into(),
            });
        }
        if topic.contains('*') {
            return Err(ConfigError::Invalid {
                flag: "--topic",
                reason: format!("{topic:?} is a wildcard; give a concrete topic name"),
            });
        }
        let username = pick_source(
            &mut sources,
            matches,
            "username",
            "username",
            cli.username.clone(),
            creds.username.clone(),
        );

        let password = match (
            source_of(matches, "password"),
            source_of(matches, "password_file"),
        ) {
            (Some(Source::Flag), Some(Source::Flag)) => {
                return Err(ConfigError::Usage(
                    "give either --password or --password-file, not both".into(),
                ))
            }
            (Some(Source::Flag), _) => {
                sources.push(("password", Source::Flag));
                cli.password.clone().map(Secret::new)
            }
            (_, Some(Source::Flag)) => {
                sources.push(("password", Source::PasswordFile));
                Some(read_password_file(
                    cli.password_file.as_deref().expect("given"),
                )?)
            }
            (Some(Source::Env), _) => {
                sources.push(("password", Source::Env));
                cli.password.clone().map(Secret::new)
            }
            (_, Some(Source::Env)) => {
                sources.push(("password", Source::PasswordFile));
                Some(read_password_file(
                    cli.password_file.as_deref().expect("given"),
                )?)
            }
            _ => creds.password.clone().inspect(|_| {
                sources.push(("password", Source::CredentialsFile));
            }),
        };

        let cluster = match &servers {
            None => Cluster::Mock,
            Some(s) => Cluster::Brokers(s.split(',').map(str::trim).collect::<Vec<_>>().join(",")),
        };

        let protocol = match (source_of(matches, "security_protocol"), creds.tls) {
            (Some(src), _) => {
                sources.push(("security-protocol", src));
                Protocol::parse(&cli.security_protocol)?
            }
            (None, Some(true)) => {
                sources.push(("security-protocol", Source::CredentialsFile));
                Protocol::SaslSsl
            }
            _ => {
                sources.push(("security-protocol", Source::Default));
                Protocol::parse(&cli.security_protocol)?
            }
        };
        // The mock cluster speaks neither SASL nor TLS.
        let protocol = if cluster == Cluster::Mock {
            Protocol::Plaintext
        } else {
            protocol
        };

        let sasl = if protocol.uses_sasl() {
            let username = username.clone().ok_or_else(|| {
                ConfigError::Usage(format!(
                    "{} needs a username: give -u/--username, KAFKA_WORKLOAD_USERNAME or --credentials",
                    protocol.as_str()
                ))
            })?;
            let password = password.clone().ok_or_else(|| {
                ConfigError::Usage(format!(
                    "{} needs a password: give --password-file, -p/--password, KAFKA_WORKLOAD_PASSWORD or --credentials",
                    protocol.as_str()
                ))
            })?;
            Some(Sasl {
                mechanism: cli.sasl_mechanism.clone(),
                username,
                password,
            })
        } else {
            None
        };

        let tls = if protocol.uses_tls() {
            let ca = match (&cli.cafile_path, &creds.tls_ca) {
                (Some(path), _) => {
                    check_readable(path, "CA file (--cafile-path)")?;
                    Some(CaSource::File(path.clone()))
                }
                (None, Some(pem)) => {
                    sources.push(("tls-ca", Source::CredentialsFile));
                    Some(CaSource::Pem(pem.clone()))
                }
                (None, None) => None,
            };
            if let Some(cert) = &cli.certfile_path {
                check_readable(cert, "certificate file (--certfile-path)")?;
            }
            if let Some(key) = &cli.keyfile_path {
                check_readable(key, "key file (--keyfile-path)")?;
            }
            match (&cli.certfile_path, &cli.keyfile_path) {
                (Some(_), None) => {
                    return Err(ConfigError::Usage(
                        "--certfile-path needs --keyfile-path (the client certificate's key)"
                            .into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Usage(
                        "--keyfile-path needs --certfile-path".into(),
                    ))
                }
                _ => {}
            }
            Some(Tls {
                ca,
                cert: cli.certfile_path.clone(),
                key: cli.keyfile_path.clone(),
                check_hostname: cli.ssl_check_hostname,
            })
        } else {
            None
        };

        // client.py's charm passes the literal string "None" when it has no prefix.
        let prefix_given = pick_source(
            &mut sources,
            matches,
            "consumer-group-prefix",
            "consumer_group_prefix",
            cli.consumer_group_prefix.clone(),
            creds.consumer_group_prefix.clone(),
        )
        .filter(|p| !p.is_empty() && p != "None");
        let group_prefix = match prefix_given {
            Some(p) => p,
            None => {
                sources.push(("consumer-group-prefix", Source::Derived));
                match &username {
                    Some(u) => format!("{u}-"),
                    None => "kafka-workload-".into(),
                }
            }
        };
        let group_id = cli
            .group_id
            .clone()
            .unwrap_or_else(|| format!("{group_prefix}1"));

        if cli.forever && !mode.produces() {
            return Err(ConfigError::Usage(
                "--forever is for the producer (give --producer); a consumer without a stop condition already runs until stopped".into(),
            ));
        }
        if let Some(rate) = cli.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::Invalid {
                    flag: "--rate",
                    reason: format!("{rate} is not a positive rate"),
                });
            }
        }
        for (flag, value) in [
            ("--num-partitions", cli.num_partitions),
            ("--replication-factor", cli.replication_factor),
        ] {
            if matches!(value, Some(v) if v < 1) {
                return Err(ConfigError::Invalid {
                    flag,
                    reason: "must be at least 1".into(),
                });
            }
        }

        let idle_timeout = match cli.idle_timeout {
            Some(secs) => Some(positive_secs("--idle-timeout", secs)?),
            None if cli.expect.is_some() || (mode == Mode::Both && !cli.consume_forever) => {
                Some(Duration::from_secs(15))
            }
            None => None,
        };

        let log_messages = match cli.log_messages.trim() {
            "all" => LogLimit::All,
            "none" => LogLimit::First(0),
            n => LogLimit::First(n.parse().map_err(|_| ConfigError::Invalid {
                flag: "--log-messages",
                reason: format!("{n:?} is not a number, `all` or `none`"),
            })?),
        };

        let mut overrides = Vec::new();
        for kv in &cli.kafka_config {
            let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::Invalid {
                flag: "-X/--kafka-config",
                reason: format!("{kv:?} is not KEY=VALUE"),
            })?;
            overrides.push((k.trim().to_string(), v.to_string()));
        }

        let mongo = match &cli.mongo_uri {
            None => None,
            Some(uri) => Some(MongoSettings {
                uri: Secret::new(uri.clone()),
                database: match &cli.mongo_db {
                    Some(db) => {
                        crate::sink::check_database_name(db).map_err(|reason| {
                            ConfigError::Invalid {
                                flag: "--mongo-db",
                                reason,
                            }
                        })?;
                        db.clone()
                    }
                    None => crate::sink::database_name_for_topic(&topic),
                },
                timeout: positive_secs("--mongo-timeout", cli.mongo_timeout)?,
            }),
        };

        let settings = Settings {
            mode,
            cluster,
            topic,
            protocol,
            sasl,
            tls,
            username_from_file: matches!(
                sources.iter().rev().find(|(n, _)| *n == "username"),
                Some((_, Source::CredentialsFile))
            ),
            password_source_file: match sources.iter().rev().find(|(n, _)| *n == "password") {
                Some((_, Source::PasswordFile)) => {
                    cli.password_file.clone().map(PasswordFile::Plain)
                }
                Some((_, Source::CredentialsFile)) => {
                    cli.credentials.clone().map(PasswordFile::Credentials)
                }
                _ => None,
            },
            producer: ProducerSettings {
                num_messages: match (cli.duration, source_of(matches, "num_messages")) {
                    _ if cli.forever => None,
                    (Some(_), None) => None,
                    _ => Some(cli.num_messages),
                },
                rate: cli.rate,
                message_size: cli.message_size,
                acks: if cli.acks == "-1" {
                    "all".into()
                } else {
                    cli.acks.clone()
                },
                replication_factor: cli.replication_factor,
                num_partitions: cli.num_partitions,
                delivery_timeout: delivery_timeout(cli.delivery_timeout)?,
                transactions: transactions(cli, mode)?,
            },
            consumer: ConsumerSettings {
                group_id,
                group_prefix,
                expect: cli.expect,
                max_records: cli.max_records,
                idle_timeout,
                stop_when_run_complete: mode == Mode::Both && !cli.consume_forever,
                isolation: if cli.isolation == "read_uncommitted" {
                    Isolation::ReadUncommitted
                } else {
                    Isolation::ReadCommitted
                },
            },
            duration: cli
                .duration
                .map(|d| positive_secs("--duration", d))
                .transpose()?,
            origin: cli.origin.clone().unwrap_or_else(default_origin),
            connect_timeout: positive_secs("--connect-timeout", cli.connect_timeout)?,
            overrides,
            output: OutputSettings {
                log_file: cli.log_file.clone(),
                log_messages,
                report_interval: positive_secs("--report-interval", cli.report_interval)?,
                json: cli.json.clone(),
                html: cli.html.clone(),
                series_interval: series_interval(cli.series_interval)?,
                asserts: cli.asserts.clone(),
                progress: !cli.no_progress,
                metrics_addr: cli.metrics_addr,
            },
            mongo,
            sources,
        };
        Ok(settings)
    }

    /// Logs which source each setting came from (never a value).
    pub fn log_sources(&self) {
        for (setting, source) in &self.sources {
            info!(setting, source = source.as_str(), "setting source");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["kafka-workload"];
        argv.extend_from_slice(args);
        let m = Cli::command().try_get_matches_from(argv).expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("parses");
        Settings::resolve(&cli, &m)
    }

    fn creds_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.yaml");
        std::fs::write(&path, text).unwrap();
        let p = path.to_string_lossy().into_owned();
        (dir, p)
    }

    fn source(s: &Settings, name: &str) -> Source {
        s.sources
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, src)| *src)
            .unwrap()
    }

    const CREDS: &str = "kafka:\n  endpoints: file-host:9092\n  username: file-user\n  password: file-pw\n  topic: file-topic\n  consumer-group-prefix: file-prefix-\n  tls: enabled\n";

    #[test]
    fn credentials_file_fills_what_flags_leave_out_and_flags_win() {
        let (_d, f) = creds_file(CREDS);
        let s = resolve(&["--producer", "--credentials", &f, "-t", "flag-topic"]).unwrap();
        assert_eq!(s.cluster, Cluster::Brokers("file-host:9092".into()));
        assert_eq!(s.topic, "flag-topic");
        assert_eq!(source(&s, "topic"), Source::Flag);
        assert_eq!(source(&s, "servers"), Source::CredentialsFile);
        assert_eq!(s.sasl.as_ref().unwrap().username, "file-user");
        assert_eq!(s.sasl.as_ref().unwrap().password.expose(), "file-pw");
        assert_eq!(
            s.protocol,
            Protocol::SaslSsl,
            "tls: enabled selects SASL_SSL"
        );
        assert_eq!(s.consumer.group_id, "file-prefix-1");
        assert_eq!(
            s.password_source_file,
            Some(PasswordFile::Credentials(f.clone().into()))
        );
    }

    #[test]
    fn an_explicit_protocol_beats_the_files_tls_flag() {
        let (_d, f) = creds_file(CREDS);
        let s = resolve(&["--producer", "--credentials", &f, "-x", "SASL_PLAINTEXT"]).unwrap();
        assert_eq!(s.protocol, Protocol::SaslPlaintext);
    }

    #[test]
    fn the_literal_none_prefix_falls_back_to_the_username() {
        let s = resolve(&[
            "--consumer",
            "-s",
            "h:1",
            "-u",
            "relation-8",
            "-p",
            "x",
            "-c",
            "None",
        ])
        .unwrap();
        assert_eq!(s.consumer.group_id, "relation-8-1");
        assert_eq!(s.consumer.group_prefix, "relation-8-");
    }

    #[test]
    fn defaults_match_client_py() {
        let s = resolve(&["--producer", "-s", "h:1", "-u", "u", "-p", "p"]).unwrap();
        assert_eq!(s.topic, "hot-topic");
        assert_eq!(s.protocol, Protocol::SaslPlaintext);
        assert_eq!(s.producer.num_messages, Some(15));
        assert_eq!(s.sasl.unwrap().mechanism, "SCRAM-SHA-512");
        assert_eq!(s.consumer.group_id, "u-1");
        assert_eq!(
            s.consumer.idle_timeout, None,
            "a consumer runs until stopped"
        );
    }

    #[test]
    fn sasl_without_a_username_or_password_is_a_usage_error() {
        assert!(
            matches!(resolve(&["--producer", "-s", "h:1"]), Err(ConfigError::Usage(m)) if m.contains("username"))
        );
        assert!(
            matches!(resolve(&["--producer", "-s", "h:1", "-u", "u"]), Err(ConfigError::Usage(m)) if m.contains("password"))
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let (_d, f) = creds_file("x");
        let err = resolve(&[
            "--producer",
            "-s",
            "h:1",
            "-x",
            "SSL",
            "--certfile-path",
            &f,
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--keyfile-path"), "{err}");
    }

    #[test]
    fn unknown_protocol_names_the_flag() {
        let err = resolve(&["--producer", "-s", "h:1", "-x", "KERBEROS"]).unwrap_err();
        assert!(err.to_string().contains("--security-protocol"), "{err}");
        assert_eq!(
            resolve(&["--producer", "-s", "h:1", "-x", "plaintext"])
                .unwrap()
                .protocol,
            Protocol::Plaintext
        );
    }

    #[test]
    fn duration_without_a_count_produces_until_it_ends_but_zero_means_zero() {
        let s = resolve(&["--producer", "--duration", "5"]).unwrap();
        assert_eq!(s.producer.num_messages, None);
        let s = resolve(&["--producer", "--duration", "5", "-n", "0"]).unwrap();
        assert_eq!(s.producer.num_messages, Some(0));
    }

    #[test]
    fn forever_produces_without_a_count_and_refuses_a_count_a_duration_or_no_producer() {
        let s = resolve(&["--producer", "--forever", "--rate", "10"]).unwrap();
        assert_eq!(s.producer.num_messages, None);
        assert_eq!(s.duration, None);
        let parse = |args: &[&str]| {
            let mut argv = vec!["kafka-workload"];
            argv.extend_from_slice(args);
            Cli::command().try_get_matches_from(argv).map(|_| ())
        };
        assert!(parse(&["--producer", "--forever", "-n", "5"]).is_err());
        assert!(parse(&["--producer", "--forever", "--duration", "5"]).is_err());
        assert!(matches!(
            resolve(&["--consumer", "--forever"]),
            Err(ConfigError::Usage(m)) if m.contains("--forever is for the producer")
        ));
    }

    #[test]
    fn metrics_addr_is_kept_and_librdkafka_statistics_are_on_for_the_clients() {
        let s = resolve(&["--producer", "--metrics-addr", "127.0.0.1:9464"]).unwrap();
        assert_eq!(
            s.output.metrics_addr,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let p = crate::kafka::config::properties(&s, crate::kafka::config::Role::Producer, "b:1")
            .unwrap();
        assert_eq!(
            p.get("statistics.interval.ms").map(String::as_str),
            Some("1000")
        );
        // Without --metrics-addr too: they feed the result's client counters.
        let s = resolve(&["--producer", "--consumer"]).unwrap();
        for role in [
            crate::kafka::config::Role::Producer,
            crate::kafka::config::Role::Consumer,
        ] {
            let p = crate::kafka::config::properties(&s, role, "b:1").unwrap();
            assert_eq!(
                p.get("statistics.interval.ms").map(String::as_str),
                Some("1000")
            );
        }
        let p =
            crate::kafka::config::properties(&s, crate::kafka::config::Role::Admin, "b:1").unwrap();
        assert_eq!(p.get("statistics.interval.ms"), None);
    }

    #[test]
    fn both_roles_stop_when_the_run_is_complete_unless_told_otherwise() {
        let s = resolve(&["--producer", "--consumer"]).unwrap();
        assert!(s.consumer.stop_when_run_complete);
        assert_eq!(s.consumer.idle_timeout, Some(Duration::from_secs(15)));
        let s = resolve(&["--producer", "--consumer", "--consume-forever"]).unwrap();
        assert!(!s.consumer.stop_when_run_complete);
        assert_eq!(s.consumer.idle_timeout, None);
    }

    #[test]
    fn password_flag_and_password_file_flag_conflict() {
        let (_d, f) = creds_file("pw\n");
        assert!(matches!(
            resolve(&[
                "--producer",
                "-s",
                "h:1",
                "-u",
                "u",
                "-p",
                "x",
                "--password-file",
                &f
            ]),
            Err(ConfigError::Usage(_))
        ));
        let s = resolve(&["--producer", "-s", "h:1", "-u", "u", "--password-file", &f]).unwrap();
        assert_eq!(s.sasl.unwrap().password.expose(), "pw");
    }

    #[test]
    fn transactions_are_a_producer_setting_with_acks_all_and_sane_values() {
        let s = resolve(&["--producer", "--transactional", "--abort-rate", "0.1"]).unwrap();
        let t = s.producer.transactions.unwrap();
        assert_eq!((t.id, t.size, t.abort_rate), (None, 100, 0.1));
        let s = resolve(&["--producer", "--transactional-id", "tx-1"]).unwrap();
        assert_eq!(s.producer.transactions.unwrap().id.as_deref(), Some("tx-1"));
        assert!(resolve(&["--producer"])
            .unwrap()
            .producer
            .transactions
            .is_none());
        let err = |args: &[&str]| resolve(args).unwrap_err().to_string();
        assert!(err(&["--consumer", "--transactional"]).contains("add --producer"));
        assert!(err(&["--producer", "--transactional", "--acks", "1"]).contains("--acks all"));
        assert!(
            err(&["--producer", "--transactional", "--abort-rate", "1.5"]).contains("--abort-rate")
        );
        assert!(err(&["--producer", "--transactional", "--txn-size", "0"]).contains("--txn-size"));
        assert!(err(&["--producer", "--transactional-id", " "]).contains("empty"));
        assert!(err(&[
            "--producer",
            "--transactional",
            "--transaction-timeout",
            "0.5"
        ])
        .contains("--transaction-timeout"));
    }

    #[test]
    fn isolation_defaults_to_read_committed() {
        let s = resolve(&["--consumer"]).unwrap();
        assert_eq!(s.consumer.isolation, Isolation::ReadCommitted);
        let s = resolve(&["--consumer", "--isolation", "read_uncommitted"]).unwrap();
        assert_eq!(s.consumer.isolation.as_str(), "read_uncommitted");
    }
}
