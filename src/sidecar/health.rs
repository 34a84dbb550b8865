//! What one Kafka client (our producer or our consumer) knows about its brokers, fed by its
//! librdkafka context: the latest statistics (which brokers are up, their round-trip times, queue
//! depth, consumer lag) and every error event, counted by kind, with the last one remembered.
//!
//! [`verdict`] turns the clients' reports into `/healthz`'s answer. It leaves the run's counts to
//! [`crate::report::stats`] and rendering to [`super::metrics`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::statistics::Statistics;

use crate::kafka::context::Trouble;
use crate::report::result::ClientEvents;

/// How often librdkafka emits statistics when metrics are served (`statistics.interval.ms`).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Statistics older than this mean the client is wedged or gone: unhealthy.
const STATS_STALE: Duration = Duration::from_secs(5);

/// One broker as the latest statistics describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerView {
    /// librdkafka's broker name, `host:port/id`.
    pub name: String,
    /// Whether the connection is up (`state == "UP"`).
    pub up: bool,
    /// Average round-trip time over librdkafka's last window, seconds (`None`: no requests).
    pub rtt_avg_secs: Option<f64>,
    /// p99 round-trip time over that window, seconds.
    pub rtt_p99_secs: Option<f64>,
}

/// What we keep of one statistics callback.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsDigest {
    /// When it arrived.
    pub at: Instant,
    /// The cluster's brokers (bootstrap placeholders left out).
    pub brokers: Vec<BrokerView>,
    /// Messages waiting in the producer's queues (librdkafka's `msg_cnt`).
    pub queue_messages: u64,
    /// Bytes of those messages (`msg_size`).
    pub queue_bytes: u64,
    /// Operations waiting to be served (`replyq`).
    pub reply_queue: i64,
    /// Sum of the consumer lag over the assigned partitions that report one.
    pub consumer_lag: Option<i64>,
    /// Requests retried, over every broker connection since the client started (`txretries`).
    pub retries: u64,
    /// Requests that timed out (`req_timeouts`).
    pub request_timeouts: u64,
    /// Connections lost (`disconnects`).
    pub disconnects: u64,
    /// The leader broker id of every partition the client knows, by (topic, partition).
    pub leaders: BTreeMap<(String, i32), i32>,
}

impl StatsDigest {
    /// A digest of brokers `b0, b1, ...` up or down as `up` says, all else zero.
    #[cfg(test)]
    pub fn for_tests(up: &[bool], at: Instant) -> StatsDigest {
        StatsDigest {
            at,
            brokers: up
                .iter()
                .enumerate()
                .map(|(i, &up)| BrokerView {
                    name: format!("b{i}"),
                    up,
                    rtt_avg_secs: None,
                    rtt_p99_secs: None,
                })
                .collect(),
            queue_messages: 0,
            queue_bytes: 0,
            reply_queue: 0,
            consumer_lag: None,
            retries: 0,
            request_timeouts: 0,
            disconnects: 0,
            leaders: BTreeMap::new(),
        }
    }

    /// Reads what matters from librdkafka's statistics.
    pub fn from_statistics(s: &Statistics, at: Instant) -> StatsDigest {
        let mut brokers: Vec<BrokerView> = s
            .brokers
            .values()
            // Bootstrap and coordinator placeholders have no node id; the real brokers do.
            .filter(|b| b.nodeid >= 0)
            .map(|b| BrokerView {
                name: b.name.clone(),
                up: b.state == "UP",
                rtt_avg_secs: b
                    .rtt
                    .as_ref()
                    .filter(|w| w.cnt > 0)
                    .map(|w| w.avg as f64 / 1e6),
                rtt_p99_secs: b
                    .rtt
                    .as_ref()
                    .filter(|w| w.cnt > 0)
                    .map(|w| w.p99 as f64 / 1e6),
            })
            .collect();
        brokers.sort_by(|a, b| a.name.cmp(&b.name));
        let lags: Vec<i64> = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .collect();
        let leaders = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values().map(move |p| (t, p)))
            .filter(|(_, p)| p.partition >= 0 && p.leader >= 0)
            .map(|(t, p)| ((t.topic.clone(), p.partition), p.leader))
            .collect();
        StatsDigest {
            at,
            brokers,
            queue_messages: s.msg_cnt,
            queue_bytes: s.msg_size,
            reply_queue: s.replyq,
            consumer_lag: (!lags.is_empty()).then(|| lags.iter().sum()),
            retries: s.brokers.values().map(|b| b.txretries).sum(),
            request_timeouts: s.brokers.values().map(|b| b.req_timeouts).sum(),
            disconnects: s
                .brokers
                .values()
                .map(|b| b.disconnects.unwrap_or(0).max(0) as u64)
                .sum(),
            leaders,
        }
    }

    /// Brokers whose connection is up.
    pub fn brokers_up(&self) -> usize {
        self.brokers.iter().filter(|b| b.up).count()
    }
}

/// The health reports of one client, written by its librdkafka context's callbacks.
#[derive(Debug, Default)]
pub struct ClientHealth {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stats: Option<StatsDigest>,
    /// Error events and delivery failures by kind (librdkafka's error code name).
    errors: BTreeMap<String, u64>,
    /// The last error event, with when it came.
    last_trouble: Option<(Trouble, Instant)>,
    /// Partitions whose leader differed from the previous statistics' (sampled once a second).
    leader_changes: u64,
}

impl ClientHealth {
    /// Records a statistics callback.
    pub fn record_stats(&self, digest: StatsDigest) {
        let mut inner = self.inner.lock().expect("poisoned");
        if let Some(prev) = &inner.stats {
            let changed = digest
                .leaders
                .iter()
                .filter(|(k, leader)| prev.leaders.get(*k).is_some_and(|was| was != *leader))
                .count() as u64;
            inner.leader_changes += changed;
        }
        inner.stats = Some(digest);
    }

    /// What the client went through, for the run's result: error events by kind and the
    /// connection counters of the latest statistics (at most one interval old).
    pub fn events(&self) -> ClientEvents {
        let inner = self.inner.lock().expect("poisoned");
        let stats = inner.stats.as_ref();
        ClientEvents {
            errors: inner.errors.clone(),
            retries: stats.map_or(0, |s| s.retries),
            request_timeouts: stats.map_or(0, |s| s.request_timeouts),
            disconnects: stats.map_or(0, |s| s.disconnects),
            leader_changes: inner.leader_changes,
        }
    }

    /// Counts an error of `kind` (an error code name such as `BrokerTransportFailure`); `trouble`
    /// is remembered when it is a client error event rather than a single message's failure.
    pub fn record_error(&self, kind: &str, trouble: Option<Trouble>) {
        let mut inner = self.inner.lock().expect("poisoned");
        *inner.errors.entry(kind.to_string()).or_insert(0) += 1;
        if let Some(t) = trouble {
            inner.last_trouble = Some((t, Instant::now()));
        }
    }

    /// The latest statistics.
    pub fn stats(&self) -> Option<StatsDigest> {
        self.inner.lock().expect("poisoned").stats.clone()
    }

    /// Errors counted so far, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.inner.lock().expect("poisoned").errors.clone()
    }

    /// This client's verdict at `now`: `Ok` when some broker connection is up in statistics that
    /// are fresh, else why not.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let inner = self.inner.lock().expect("poisoned");
        let trouble = inner.last_trouble.as_ref().map(|(t, _)| t);
        match &inner.stats {
            None => Err(match trouble {
                Some(t) => describe(t),
                None => "connecting: no statistics from librdkafka yet".into(),
            }),
            Some(s) if now.saturating_duration_since(s.at) > STATS_STALE => Err(format!(
                "no statistics from librdkafka for {:.0} s",
                now.saturating_duration_since(s.at).as_secs_f64()
            )),
            Some(s) if s.brokers_up() == 0 => Err(match trouble {
                // An error older than the broker list's last change may be stale, but with no
                // broker up it is still the best explanation there is.
                Some(t) => describe(t),
                None => format!("no broker connection is up (of {})", s.brokers.len()),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// One line for a trouble, naming its class; librdkafka's texts never carry a password.
fn describe(t: &Trouble) -> String {
    match t {
        Trouble::Authentication(m) => format!("credentials refused: {m}"),
        Trouble::Tls(m) => format!("TLS failure: {m}"),
        Trouble::Transport(m) => format!("brokers unreachable: {m}"),
    }
}

/// `/healthz`: healthy when every client is; otherwise the first client's reason, named.
pub fn verdict(clients: &[(&str, &ClientHealth)], ready: bool, now: Instant) -> Result<(), String> {
    if !ready {
        return Err("connecting to the brokers".into());
    }
    if clients.is_empty() {
        return Err("no Kafka client is running".into());
    }
    for (role, health) in clients {
        health.check(now).map_err(|why| format!("{role}: {why}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(up: &[bool], at: Instant) -> StatsDigest {
        StatsDigest::for_tests(up, at)
    }

    #[test]
    fn leader_changes_are_counted_between_statistics_and_counters_taken_from_the_latest() {
        let h = ClientHealth::default();
        let now = Instant::now();
        let mut d = digest(&[true, true], now);
        d.leaders.insert(("t".into(), 0), 1);
        d.leaders.insert(("t".into(), 1), 2);
        h.record_stats(d.clone());
        d.leaders.insert(("t".into(), 0), 2);
        d.leaders.insert(("t".into(), 2), 1); // a partition seen for the first time
        d.retries = 7;
        d.disconnects = 1;
        h.record_stats(d);
        h.record_error("AllBrokersDown", None);
        let e = h.events();
        assert_eq!((e.leader_changes, e.retries, e.disconnects), (1, 7, 1));
        assert_eq!(e.errors.get("AllBrokersDown"), Some(&1));
    }

    #[test]
    fn healthy_only_with_fresh_statistics_and_a_broker_up() {
        let now = Instant::now();
        let h = ClientHealth::default();
        assert!(h.check(now).unwrap_err().contains("no statistics"));
        h.record_stats(digest(&[false, true], now));
        assert_eq!(h.check(now), Ok(()));
        assert!(h
            .check(now + Duration::from_secs(10))
            .unwrap_err()
            .contains("no statistics from librdkafka for 10 s"));
        h.record_stats(digest(&[false, false], now));
        assert_eq!(
            h.check(now).unwrap_err(),
            "no broker connection is up (of 2)"
        );
    }

    #[test]
    fn the_last_error_explains_an_outage_and_errors_are_counted_by_kind() {
        let now = Instant::now();
        let h = ClientHealth::default();
        h.record_error(
            "Authentication",
            Some(Trouble::Authentication("SASL authentication error".into())),
        );
        assert!(h
            .check(now)
            .unwrap_err()
            .starts_with("credentials refused: SASL"));
        h.record_stats(digest(&[false], now));
        h.record_error(
            "BrokerTransportFailure",
            Some(Trouble::Transport("Connection refused".into())),
        );
        h.record_error("MessageTimedOut", None);
        assert_eq!(
            h.check(now).unwrap_err(),
            "brokers unreachable: Connection refused"
        );
        let errors = h.errors();
        assert_eq!(errors["Authentication"], 1);
        assert_eq!(errors["MessageTimedOut"], 1);
        let v = verdict(&[("producer", &h)], true, now).unwrap_err();
        assert!(v.starts_with("producer: brokers unreachable"), "{v}");
        assert_eq!(
            verdict(&[], false, now).unwrap_err(),
            "connecting to the brokers"
        );
    }
}
