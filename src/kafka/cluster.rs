//! Reaching the cluster before any work starts: the embedded mock cluster when no servers are
//! given, the first-contact check that turns "librdkafka retries forever" into a one-line error
//! within --connect-timeout, and topic creation.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::config::{client_config, Role};
use super::context::{Trouble, WorkloadContext};
use crate::config::{Cluster, Settings};
use crate::error::Failure;

/// The cluster a run talks to.
pub struct Connection {
    /// What clients get as bootstrap.servers.
    pub bootstrap: String,
    /// Keeps the in-process mock cluster alive; `None` for a real cluster.
    mock: Option<BaseProducer>,
}

impl Connection {
    /// Starts the mock cluster, or checks that the real one answers and accepts us.
    pub async fn open(settings: &Settings) -> anyhow::Result<Connection> {
        match &settings.cluster {
            Cluster::Mock => Self::mock(),
            Cluster::Brokers(servers) => {
                let owned = settings.clone();
                let bootstrap = servers.clone();
                tokio::task::spawn_blocking(move || check_contact(&owned, &owned_servers(&owned)))
                    .await
                    .context("connectivity check panicked")??;
                Ok(Connection {
                    bootstrap,
                    mock: None,
                })
            }
        }
    }

    fn mock() -> anyhow::Result<Connection> {
        let anchor: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "3")
            .set("log_level", "3")
            .create()
            .context("cannot start librdkafka's mock cluster")?;
        let bootstrap = anchor
            .client()
            .mock_cluster()
            .context("librdkafka made no mock cluster")?
            .bootstrap_servers();
        // SAFETY: the handle belongs to `anchor`, which outlives this call; the mock cluster's
        // default 3 s initial rebalance delay would otherwise stall every consumer start.
        unsafe {
            let mc = rdkafka::bindings::rd_kafka_handle_mock_cluster(anchor.client().native_ptr());
            if !mc.is_null() {
                rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(mc, 0);
            }
        }
        info!(
            bootstrap = %bootstrap,
            "no --servers given: running against an in-process librdkafka mock cluster (3 brokers, PLAINTEXT, data lives only as long as this process)"
        );
        Ok(Connection {
            bootstrap,
            mock: Some(anchor),
        })
    }

    /// Whether this is the embedded mock cluster.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// Creates the topic with the requested partitions and replication (the broker's defaults
    /// when not given). An existing topic is fine.
    pub async fn create_topic(&self, settings: &Settings) -> anyhow::Result<()> {
        let topic = settings.topic.as_str();
        info!(func = "<module>", "Creating new topic - {topic}");
        let partitions = settings.producer.num_partitions.unwrap_or(-1);
        let replication = settings.producer.replication_factor.unwrap_or(-1);
        if let Some(anchor) = &self.mock {
            let mock = anchor
                .client()
                .mock_cluster()
                .context("mock cluster gone")?;
            let partitions = if partitions > 0 { partitions } else { 6 };
            let replication = if replication > 0 {
                replication.min(3)
            } else {
                3
            };
            mock.create_topic(topic, partitions, replication)
                .with_context(|| format!("creating topic {topic} on the mock cluster"))?;
            return Ok(());
        }
        let admin: AdminClient<WorkloadContext> =
            client_config(settings, Role::Admin, &self.bootstrap)?
                .create_with_context(WorkloadContext::default())
                .context("cannot create the admin client")?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new_topic], &opts)
            .await
            .with_context(|| format!("creating topic {topic}"))?;
        for result in results {
            match result {
                Ok(_) => info!(
                    func = "<module>",
                    topic, partitions, replication, "topic created"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    info!(func = "<module>", "Topic already exists")
                }
                Err((
                    _,
                    code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed),
                )) => {
                    // Without CREATE the topic may still exist and be writable.
                    let exists = admin
                        .inner()
                        .fetch_metadata(Some(topic), Duration::from_secs(10))
                        .map(|md| {
                            md.topics()
                                .iter()
                                .any(|t| t.name() == topic && t.error().is_none())
                        })
                        .unwrap_or(false);
                    if exists {
                        warn!(topic, error = %code, "not allowed to create the topic; it exists, so it is used as it is");
                    } else {
                        return Err(Failure::Authorization(format!(
                            "creating topic {topic} was refused ({code}); the user needs CREATE on it"
                        ))
                        .into());
                    }
                }
                Err((_, code)) => anyhow::bail!("creating topic {topic} failed: {code}"),
            }
        }
        Ok(())
    }
}

fn owned_servers(settings: &Settings) -> String {
    match &settings.cluster {
        Cluster::Brokers(s) => s.clone(),
        Cluster::Mock => String::new(),
    }
}

/// Tries `identity` against the brokers as the start does (metadata until it answers, a refusal,
/// or --connect-timeout): `Err` is a one-line reason, without the password.
pub fn try_identity(settings: &Settings, identity: &crate::config::Identity) -> Result<(), String> {
    let s = settings.with_identity(identity);
    check_contact(&s, &owned_servers(&s)).map_err(|e| format!("{e:#}"))
}

/// Asks for cluster metadata until it answers, an authentication/TLS failure is reported, or
/// --connect-timeout passes.
fn check_contact(settings: &Settings, servers: &str) -> anyhow::Result<()> {
    // A producer handle, because it lets us serve librdkafka's error events (poll), which is how
    // authentication and TLS failures are reported.
    let client: BaseProducer<WorkloadContext> = client_config(settings, Role::Admin, servers)?
        .create_with_context(WorkloadContext::default())
        .map_err(|e| anyhow::anyhow!(client_creation_error(&e.to_string())))
        .map_err(|e| {
            anyhow::Error::new(crate::error::ConfigError::Invalid {
                flag: "TLS/SASL settings",
                reason: e.to_string(),
            })
        })?;
    let deadline = Instant::now() + settings.connect_timeout;
    let started = Instant::now();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = client.client().fetch_metadata(
            None,
            left.min(Duration::from_secs(1))
                .max(Duration::from_millis(100)),
        );
        client.poll(Duration::ZERO);
        match (attempt, client.context().trouble()) {
            (Ok(md), _) => {
                info!(
                    servers,
                    brokers = md.brokers().len(),
                    protocol = settings.protocol.as_str(),
                    ms = started.elapsed().as_millis() as u64,
                    "connected to the Kafka cluster"
                );
                return Ok(());
            }
            (Err(_), Some(Trouble::Authentication(cause))) => {
                return Err(Failure::Authentication {
                    servers: servers.into(),
                    cause,
                }
                .into())
            }
            (Err(_), Some(Trouble::Tls(cause))) => {
                return Err(Failure::Authentication {
                    servers: servers.into(),
                    cause: format!("TLS: {cause}"),
                }
                .into())
            }
            (Err(e), trouble) if Instant::now() >= deadline => {
                let cause = match trouble {
                    Some(Trouble::Transport(t)) => t,
                    _ => e.to_string(),
                };
                return Err(Failure::Unreachable {
                    servers: servers.into(),
                    seconds: settings.connect_timeout.as_secs_f64(),
                    cause,
                }
                .into());
            }
            (Err(_), _) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// librdkafka refuses to create a client whose TLS files it cannot load; say which.
fn client_creation_error(text: &str) -> String {
    if text.contains("ssl.ca.location") || text.contains("CA certificate") {
        format!("the CA file could not be loaded: {text}")
    } else if text.contains("ssl.certificate.location")
        || text.contains("ssl.key.location")
        || text.contains("private key")
    {
        format!("the client certificate or key could not be loaded: {text}")
    } else {
        text.to_string()
    }
}
