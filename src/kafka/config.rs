//! The one mapping from [`Settings`] to librdkafka properties, per client role.
//!
//! Pure: it builds a sorted map that unit tests check for every protocol combination, and
//! [`client_config`] turns it into rdkafka's `ClientConfig`. Raw `-X` overrides are applied last;
//! an override of a security or identity property is an error rather than a silent change.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::{CaSource, Cluster, Settings};
use crate::error::ConfigError;

/// The producer's queue cap (`queue.buffering.max.messages`): it bounds the producer's memory
/// (see where it is set); the send loop waits for half of it to drain when it is full.
pub const PRODUCER_QUEUE_MESSAGES: u32 = 25_000;
/// The producer's `batch.num.messages` (librdkafka's default since 1.9, set so it stays).
pub const BATCH_MESSAGES: usize = 10_000;
/// librdkafka's default `batch.size`, which kafka-workload leaves as it is.
pub const BATCH_BYTES: usize = 1_000_000;

/// Which client the properties are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The admin client (topic creation, connectivity check).
    Admin,
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
}

/// librdkafka properties for `role`, with `bootstrap` as the servers (the mock cluster's own
/// address when there is no real cluster).
pub fn properties(
    settings: &Settings,
    role: Role,
    bootstrap: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut p = BTreeMap::new();
    set(&mut p, "bootstrap.servers", bootstrap);
    set(&mut p, "security.protocol", settings.protocol.as_str());
    set(&mut p, "client.id", "kafka-workload");
    if let Some(sasl) = &settings.sasl {
        set(&mut p, "sasl.mechanism", &sasl.mechanism);
        set(&mut p, "sasl.username", &sasl.username);
        set(&mut p, "sasl.password", sasl.password.expose());
    }
    if let Some(tls) = &settings.tls {
        match &tls.ca {
            Some(CaSource::File(path)) => set(&mut p, "ssl.ca.location", &path.to_string_lossy()),
            Some(CaSource::Pem(pem)) => set(&mut p, "ssl.ca.pem", pem.expose()),
            // The vendored OpenSSL knows no system store path of its own; let librdkafka look.
            None => set(&mut p, "ssl.ca.location", "probe"),
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            set(&mut p, "ssl.certificate.location", &cert.to_string_lossy());
            set(&mut p, "ssl.key.location", &key.to_string_lossy());
        }
        set(
            &mut p,
            "ssl.endpoint.identification.algorithm",
            if tls.check_hostname { "https" } else { "none" },
        );
    }
    let protected: Vec<String> = p.keys().cloned().collect();
    if role != Role::Admin {
        // Statistics feed the result's client counters (retries, disconnects, leader changes)
        // and, with --metrics-addr, /metrics (broker RTT, queue depth, lag) and /healthz.
        set(
            &mut p,
            "statistics.interval.ms",
            &crate::sidecar::health::STATS_INTERVAL
                .as_millis()
                .to_string(),
        );
    }
    if role != Role::Admin {
        // librdkafka backs reconnects off up to 10 s; a broker back from a restart or a network
        // cut then waits that long for its clients (fault suite: 3.4-8 s to recover from a 4 s
        // cut). 1 s is the Java client's bound too.
        set(&mut p, "reconnect.backoff.max.ms", "1000");
    }
    match role {
        Role::Admin => {}
        Role::Producer => {
            let acks = settings.producer.acks.as_str();
            set(&mut p, "acks", acks);
            set(
                &mut p,
                "enable.idempotence",
                if acks == "all" { "true" } else { "false" },
            );
            // Batching: a few ms of linger lets librdkafka fill batches at high rates without
            // adding visible latency at low ones.
            set(&mut p, "linger.ms", "5");
            // Retries go on until this runs out; then the delivery report says the message
            // timed out and it is counted as failed, with its sequence number.
            set(
                &mut p,
                "message.timeout.ms",
                &settings.producer.delivery_timeout.as_millis().to_string(),
            );
            set(&mut p, "batch.num.messages", &BATCH_MESSAGES.to_string());
            if let Some(txn) = &settings.producer.transactions {
                // The id is the run's (derived from its run id when not given): the caller sets
                // `transactional.id`. librdkafka refuses a message timeout longer than the
                // transaction timeout.
                let txn_ms = txn.timeout.as_millis();
                set(&mut p, "transaction.timeout.ms", &txn_ms.to_string());
                let msg_ms = settings.producer.delivery_timeout.as_millis().min(txn_ms);
                set(&mut p, "message.timeout.ms", &msg_ms.to_string());
            }
            // The queue bounds the producer's memory: an unpaced producer keeps it full, so
            // peak RSS is the queue's size whatever the run's length. 25,000 messages (~10 MB
            // with librdkafka's own per-message cost) went as fast as 100,000 (~40 MB) or
            // 500,000 (200 MB), and keep the RSS of a 10,000,000-message run within 10% of a
            // 100,000-message one (scripts/bench); 64 MB bounds it for large values.
            set(
                &mut p,
                "queue.buffering.max.messages",
                &PRODUCER_QUEUE_MESSAGES.to_string(),
            );
            set(&mut p, "queue.buffering.max.kbytes", "65536");
            if own_partitioner(settings) || settings.cluster == Cluster::Mock {
                // librdkafka hands a keyless message to its own sticky partitioner, not to the
                // configured one, unless stickiness is off: kafka-workload's partitioner
                // (src/kafka/topic.rs) sees every message only with this at 0. On the mock
                // cluster, which keeps only the newest 5 MB of each partition, it gives
                // librdkafka's partitioner a random partition for every message instead.
                set(&mut p, "sticky.partitioning.linger.ms", "0");
            }
        }
        Role::Consumer => {
            set(&mut p, "group.id", &settings.consumer.group_id);
            set(&mut p, "auto.offset.reset", "earliest");
            set(
                &mut p,
                "isolation.level",
                settings.consumer.isolation.as_str(),
            );
            // At-least-once: only offsets of processed records are stored, and stored offsets are
            // committed every second and on shutdown. With --json the consumer loop commits
            // them itself, each time right after writing the result file, so that after a
            // kill -9 the file covers every committed record (src/kafka/consumer.rs).
            let auto_commit = settings.output.json.is_none();
            set(
                &mut p,
                "enable.auto.commit",
                if auto_commit { "true" } else { "false" },
            );
            set(&mut p, "enable.auto.offset.store", "false");
            set(&mut p, "auto.commit.interval.ms", "1000");
            set(&mut p, "session.timeout.ms", "10000");
            set(&mut p, "enable.partition.eof", "false");
            set(&mut p, "fetch.wait.max.ms", "100");
            // librdkafka's default 1000 ms pause, taken whenever its prefetch queue is full,
            // leaves the connection idle most of the time once the consumer keeps up with a
            // backlog: 1,000,000 records took 5 s with it and 1 s without (scripts/bench).
            set(&mut p, "fetch.queue.backoff.ms", "10");
        }
    }
    for (k, v) in &settings.overrides {
        if protected.contains(k) || (role == Role::Consumer && k == "group.id") {
            return Err(ConfigError::Invalid {
                flag: "-X/--kafka-config",
                reason: format!("{k} is set from the security flags; change those instead"),
            });
        }
        p.insert(k.clone(), v.clone());
    }
    Ok(p)
}

/// Whether the producer partitions with kafka-workload's turns (src/kafka/topic.rs): on a real
/// cluster, unless `-X` sets librdkafka's `partitioner` or `sticky.partitioning.linger.ms`,
/// which then rule. The mock cluster keeps librdkafka's random spread, as before the turns: its
/// partitions drop their oldest records past 5 MB (runs of 300,000 lose some either way), and
/// what the turns are for (the brokers' requests in flight) is not what limits it.
pub fn own_partitioner(settings: &Settings) -> bool {
    settings.cluster != Cluster::Mock
        && !settings
            .overrides
            .iter()
            .any(|(k, _)| k == "partitioner" || k == "sticky.partitioning.linger.ms")
}

/// The batch limits kafka-workload's partitioner sizes its turns by (`batch.num.messages`,
/// `batch.size`, as `-X` leaves them), or `None` when librdkafka partitions
/// ([`own_partitioner`]).
pub fn partitioner_batch(settings: &Settings) -> Option<(usize, usize)> {
    if !own_partitioner(settings) {
        return None;
    }
    let limit = |key: &str, default: usize| {
        settings
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    Some((
        limit("batch.num.messages", BATCH_MESSAGES),
        limit("batch.size", BATCH_BYTES),
    ))
}

fn set(p: &mut BTreeMap<String, String>, k: &str, v: &str) {
    p.insert(k.to_string(), v.to_string());
}

/// rdkafka's `ClientConfig` for `role`.
pub fn client_config(
    settings: &Settings,
    role: Role,
    bootstrap: &str,
) -> Result<ClientConfig, ConfigError> {
    let mut cfg = ClientConfig::new();
    for (k, v) in properties(settings, role, bootstrap)? {
        cfg.set(k, v);
    }
    cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Info);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use clap::{CommandFactory, FromArgMatches};

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["kafka-workload"];
        argv.extend_from_slice(args);
        let m = crate::cli::Cli::command()
            .try_get_matches_from(argv)
            .unwrap();
        let cli = crate::cli::Cli::from_arg_matches(&m).unwrap();
        Settings::resolve(&cli, &m).unwrap()
    }

    fn tmp_file(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("kw-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, "-----BEGIN X-----\n").unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn sasl_plaintext_uses_scram_sha_512_and_no_tls() {
        let s = settings(&["--producer", "-s", "b:9092", "-u", "u", "-p", "pw"]);
        let p = properties(&s, Role::Producer, "b:9092").unwrap();
        assert_eq!(p["security.protocol"], "SASL_PLAINTEXT");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(p["sasl.username"], "u");
        assert_eq!(p["sasl.password"], "pw");
        assert!(!p.keys().any(|k| k.starts_with("ssl.")));
        assert_eq!(p["acks"], "all");
        assert_eq!(p["enable.idempotence"], "true");
    }

    #[test]
    fn the_producer_partitions_in_turns_unless_x_hands_partitioning_to_librdkafka() {
        let base = ["--producer", "-s", "b:9095", "-x", "PLAINTEXT"];
        let s = settings(&base);
        assert!(own_partitioner(&s));
        let mock = settings(&["--producer"]);
        assert!(
            !own_partitioner(&mock),
            "the mock cluster keeps librdkafka's random spread"
        );
        let p = properties(&mock, Role::Producer, "mock").unwrap();
        assert_eq!(p["sticky.partitioning.linger.ms"], "0");
        let p = properties(&s, Role::Producer, "b:9095").unwrap();
        assert_eq!(p["sticky.partitioning.linger.ms"], "0");
        for x in [
            "partitioner=murmur2_random",
            "sticky.partitioning.linger.ms=25",
        ] {
            let s = settings(&[&base[..], &["-X", x]].concat());
            assert!(!own_partitioner(&s), "{x}");
            let p = properties(&s, Role::Producer, "b:9095").unwrap();
            let (k, v) = x.split_once('=').unwrap();
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{x}");
            if k == "partitioner" {
                assert!(!p.contains_key("sticky.partitioning.linger.ms"), "{x}");
            }
        }
    }

    #[test]
    fn sasl_ssl_verifies_the_ca_but_not_the_hostname_and_honours_a_client_cert() {
        let (ca, cert, key) = (tmp_file("ca.pem"), tmp_file("c.pem"), tmp_file("c.key"));
        let s = settings(&[
            "--consumer",
            "-s",
            "b:9093",
            "-u",
            "u",
            "-p",
            "pw",
            "-x",
            "SASL_SSL",
            "--cafile-path",
            &ca,
            "--certfile-path",
            &cert,
            "--keyfile-path",
            &key,
        ]);
        let p = properties(&s, Role::Consumer, "b:9093").unwrap();
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["ssl.ca.location"], ca);
        assert_eq!(p["ssl.certificate.location"], cert);
        assert_eq!(p["ssl.key.location"], key);
        assert_eq!(p["ssl.endpoint.identification.algorithm"], "none");
        assert_eq!(p["group.id"], "u-1");
        assert_eq!(p["auto.offset.reset"], "earliest");
        assert_eq!(p["enable.auto.offset.store"], "false");
    }

    #[test]
    fn ssl_is_mtls_without_sasl_and_hostname_check_can_be_turned_on() {
        let (ca, cert, key) = (tmp_file("ca2.pem"), tmp_file("c2.pem"), tmp_file("c2.key"));
        let s = settings(&[
            "--producer",
            "-s",
            "b:9094",
            "-x",
            "SSL",
            "--cafile-path",
            &ca,
            "--certfile-path",
            &cert,
            "--keyfile-path",
            &key,
            "--ssl-check-hostname",
        ]);
        let p = properties(&s, Role::Producer, "b:9094").unwrap();
        assert_eq!(p["security.protocol"], "SSL");
        assert!(!p.keys().any(|k| k.starts_with("sasl.")));
        assert_eq!(p["ssl.certificate.location"], cert);
        assert_eq!(p["ssl.endpoint.identification.algorithm"], "https");
    }

    #[test]
    fn plaintext_has_neither_sasl_nor_tls() {
        let s = settings(&["--producer", "-s", "b:9095", "-x", "PLAINTEXT"]);
        let p = properties(&s, Role::Admin, "b:9095").unwrap();
        assert_eq!(p["security.protocol"], "PLAINTEXT");
        assert!(!p
            .keys()
            .any(|k| k.starts_with("sasl.") || k.starts_with("ssl.")));
    }

    #[test]
    fn no_servers_means_the_mock_cluster_in_plaintext_even_with_sasl_flags() {
        let s = settings(&["--producer", "-u", "u", "-p", "pw"]);
        assert_eq!(s.cluster, crate::config::Cluster::Mock);
        let p = properties(&s, Role::Producer, "127.0.0.1:1").unwrap();
        assert_eq!(p["security.protocol"], "PLAINTEXT");
        assert!(!p.contains_key("sasl.password"));
    }

    #[test]
    fn overrides_apply_last_but_may_not_touch_security() {
        let s = settings(&[
            "--producer",
            "-s",
            "b:1",
            "-x",
            "PLAINTEXT",
            "-X",
            "linger.ms=50",
            "-X",
            "compression.type=zstd",
        ]);
        let p = properties(&s, Role::Producer, "b:1").unwrap();
        assert_eq!(p["linger.ms"], "50");
        assert_eq!(p["compression.type"], "zstd");
        let s = settings(&[
            "--producer",
            "-s",
            "b:1",
            "-u",
            "u",
            "-p",
            "pw",
            "-X",
            "sasl.password=x",
        ]);
        let err = properties(&s, Role::Producer, "b:1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sasl.password") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn acks_one_turns_idempotence_off() {
        let s = settings(&["--producer", "-s", "b:1", "-x", "PLAINTEXT", "--acks", "1"]);
        let p = properties(&s, Role::Producer, "b:1").unwrap();
        assert_eq!(
            (p["acks"].as_str(), p["enable.idempotence"].as_str()),
            ("1", "false")
        );
    }

    #[test]
    fn a_transactional_producer_keeps_its_message_timeout_within_the_transaction_timeout() {
        let s = settings(&[
            "--producer",
            "--transactional",
            "--transaction-timeout",
            "30",
        ]);
        let p = properties(&s, Role::Producer, "b:9092").unwrap();
        assert_eq!(p["transaction.timeout.ms"], "30000");
        assert_eq!(p["message.timeout.ms"], "30000");
        assert!(!p.contains_key("transactional.id")); // set by the producer, from the run id
        let s = settings(&["--consumer", "--isolation", "read_uncommitted"]);
        let p = properties(&s, Role::Consumer, "b:9092").unwrap();
        assert_eq!(p["isolation.level"], "read_uncommitted");
    }
}
