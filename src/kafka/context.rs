//! The librdkafka client context shared by our clients: librdkafka's log lines go to tracing, and
//! its errors are remembered so that a connection attempt that times out can say why (wrong
//! password, TLS failure, connection refused) instead of only "timed out".

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, error, info, warn};

use crate::sidecar::health::{ClientHealth, StatsDigest};

/// An error's librdkafka code name (`BrokerTransportFailure`, `MessageTimedOut`, ...), the
/// `kind` label of the error metrics.
pub fn code_name(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "Other".into(),
    }
}

/// What went wrong with the brokers, as far as librdkafka told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// SASL authentication failed (wrong password, unknown user, wrong mechanism).
    Authentication(String),
    /// TLS handshake or certificate failure.
    Tls(String),
    /// Anything else (connection refused, all brokers down, resolution failures).
    Transport(String),
}

/// Logs librdkafka through tracing and remembers the worst recent error.
#[derive(Default)]
pub struct WorkloadContext {
    /// Where errors and statistics are reported for `/metrics` and `/healthz`, when served.
    health: Option<Arc<ClientHealth>>,
    trouble: Mutex<Option<Trouble>>,
    /// The last error logged and when: librdkafka repeats the same error event.
    last_logged: Mutex<Option<(String, std::time::Instant)>>,
}

impl WorkloadContext {
    /// A context that also reports to `health`.
    pub fn with_health(health: Arc<ClientHealth>) -> Self {
        WorkloadContext {
            health: Some(health),
            ..Default::default()
        }
    }

    /// Counts a failed delivery of one message in the health report.
    pub fn count_delivery_error(&self, error: &KafkaError) {
        if let Some(h) = &self.health {
            h.record_error(&code_name(error), None);
        }
    }

    /// Keeps what matters of librdkafka's statistics (emitted only with `--metrics-addr`).
    pub fn record_stats(&self, statistics: &Statistics) {
        if let Some(h) = &self.health {
            h.record_stats(StatsDigest::from_statistics(
                statistics,
                std::time::Instant::now(),
            ));
        }
    }

    /// The remembered error, if any.
    pub fn trouble(&self) -> Option<Trouble> {
        self.trouble.lock().expect("poisoned").clone()
    }

    /// Forgets the remembered error (after a successful contact).
    pub fn clear(&self) {
        *self.trouble.lock().expect("poisoned") = None;
    }

    fn remember(&self, t: Trouble) {
        let mut slot = self.trouble.lock().expect("poisoned");
        // An authentication or TLS failure explains more than the transport errors that follow it.
        let keep_old = matches!(
            (&*slot, &t),
            (
                Some(Trouble::Authentication(_) | Trouble::Tls(_)),
                Trouble::Transport(_)
            )
        );
        if !keep_old {
            *slot = Some(t);
        }
    }
}

/// Hands a new SASL password to a running client; connections made from now on use it.
pub fn set_sasl_password<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    identity: &crate::config::Identity,
) -> Result<(), String> {
    let user = std::ffi::CString::new(identity.username.as_str())
        .map_err(|_| "username has a NUL byte".to_string())?;
    let pw = std::ffi::CString::new(identity.password.expose())
        .map_err(|_| "password has a NUL byte".to_string())?;
    // SAFETY: the handle is alive for the borrow of `client`; librdkafka copies both strings.
    unsafe {
        let err = rdkafka::bindings::rd_kafka_sasl_set_credentials(
            client.native_ptr(),
            user.as_ptr(),
            pw.as_ptr(),
        );
        if err.is_null() {
            return Ok(());
        }
        let text = std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_error_string(err))
            .to_string_lossy()
            .into_owned();
        rdkafka::bindings::rd_kafka_error_destroy(err);
        Err(text)
    }
}

/// A client of `role` for a new user: made by `create`, and kept only if it reaches the cluster's
/// metadata within --connect-timeout. `None` (the reason logged) keeps the caller on its
/// current client.
pub fn client_for_new_user<T, C: ClientContext>(
    role: &str,
    settings: &crate::config::Settings,
    create: impl FnOnce() -> anyhow::Result<T>,
    client: impl Fn(&T) -> &rdkafka::client::Client<C>,
) -> Option<T> {
    let user = settings.sasl.as_ref().map_or("", |a| a.username.as_str());
    let fresh = match create() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %format!("{e:#}"), user, "cannot create a {role} for the new user; keeping the current one");
            return None;
        }
    };
    // Metadata of all topics, not of the one named: naming it would open the topic in the new
    // client before the producer opens it with its partitioner (the first opening's
    // configuration is the one librdkafka keeps). Either request fails the same way for a user
    // who cannot authenticate.
    if let Err(e) = client(&fresh).fetch_metadata(None, settings.connect_timeout) {
        warn!(error = %e, user, "the {role} cannot reach the topic as the new user; keeping the current one");
        return None;
    }
    Some(fresh)
}

/// Applies a rotation once the watch's generation moved past `applied`: a new password for
/// `client_user` is handed to `client`; a new user is returned, for the caller to replace its
/// client (a connection cannot re-authenticate as another principal).
pub fn apply_rotation<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    watch: Option<&crate::config::PasswordWatch>,
    applied: &mut u64,
    client_user: &str,
) -> Option<crate::config::Identity> {
    let w = watch?;
    let generation = w.generation();
    if generation == *applied {
        return None;
    }
    *applied = generation;
    let identity = w.identity();
    if identity.username != client_user {
        return Some(identity);
    }
    match set_sasl_password(client, &identity) {
        Ok(()) => info!(generation, "rotated password applied to the client"),
        Err(e) => warn!(error = %e, "cannot apply the rotated password"),
    }
    None
}

/// Watches for a client that nothing works for any more: its last error is an authentication
/// or TLS refusal and its statistics show no broker connection up, for longer than `limit`
/// (the run's --connect-timeout). Until then the client keeps trying; a rotation may still
/// bring credentials that work.
#[derive(Debug)]
pub struct Lockout {
    limit: std::time::Duration,
    since: Option<std::time::Instant>,
}

impl Lockout {
    /// A watch that gives up after `limit`.
    pub fn new(limit: std::time::Duration) -> Self {
        Lockout { limit, since: None }
    }

    /// The refusal, once it has lasted `limit` with no broker up.
    pub fn check(&mut self, ctx: &WorkloadContext) -> Option<String> {
        self.observe(
            ctx.trouble(),
            ctx.health.as_ref().and_then(|h| h.stats()),
            std::time::Instant::now(),
        )
    }

    fn observe(
        &mut self,
        trouble: Option<Trouble>,
        stats: Option<StatsDigest>,
        now: std::time::Instant,
    ) -> Option<String> {
        let refused = match trouble {
            Some(Trouble::Authentication(cause)) => cause,
            Some(Trouble::Tls(cause)) => format!("TLS: {cause}"),
            _ => {
                self.since = None;
                return None;
            }
        };
        // Fresh statistics with a broker up mean something still works.
        let none_up = stats.is_none_or(|s| {
            s.brokers_up() == 0 || now.saturating_duration_since(s.at) > self.limit
        });
        if !none_up {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        (now.saturating_duration_since(since) >= self.limit).then_some(refused)
    }
}

/// Classifies a librdkafka error by its code and text.
pub fn classify(code: Option<RDKafkaErrorCode>, text: &str) -> Trouble {
    let lower = text.to_ascii_lowercase();
    match code {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            Trouble::Authentication(text.to_string())
        }
        Some(RDKafkaErrorCode::SSL) => Trouble::Tls(text.to_string()),
        _ if lower.contains("sasl authentication") || lower.contains("authentication failed") => {
            Trouble::Authentication(text.to_string())
        }
        _ if lower.contains("ssl handshake")
            || lower.contains("certificate verify")
            || lower.contains("ssl:") =>
        {
            Trouble::Tls(text.to_string())
        }
        _ => Trouble::Transport(text.to_string()),
    }
}

impl ClientContext for WorkloadContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let trouble = classify(error.rdkafka_error_code(), reason);
        let repeated = {
            let mut last = self.last_logged.lock().expect("poisoned");
            let now = std::time::Instant::now();
            let same = matches!(&*last, Some((r, at)) if r == reason && now.duration_since(*at).as_secs() < 2);
            *last = Some((reason.to_string(), now));
            same
        };
        match &trouble {
            _ if repeated => {}
            Trouble::Transport(_) => warn!(target: "librdkafka", error = %error, "{reason}"),
            _ => error!(target: "librdkafka", error = %error, "{reason}"),
        }
        if let Some(h) = &self.health {
            h.record_error(&code_name(&error), Some(trouble.clone()));
        }
        self.remember(trouble);
    }

    fn stats(&self, statistics: Statistics) {
        self.record_stats(&statistics);
    }
}

// Lets a plain producer handle serve as the connectivity probe.
impl rdkafka::producer::ProducerContext for WorkloadContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockout_needs_a_refusal_and_no_broker_up_for_the_whole_limit() {
        let t0 = std::time::Instant::now();
        let secs = std::time::Duration::from_secs;
        let stats = |up: bool, at| StatsDigest::for_tests(&[up], at);
        let refused = || Some(Trouble::Authentication("SASL authentication error".into()));
        let mut l = Lockout::new(secs(10));
        // Refused, but a connection is still up (made with the old credentials): keep going.
        assert_eq!(
            l.observe(refused(), Some(stats(true, t0)), t0 + secs(5)),
            None
        );
        assert_eq!(l.observe(refused(), Some(stats(false, t0)), t0), None);
        // Statistics that stopped coming count as nothing up.
        let mut stale = Lockout::new(secs(10));
        assert_eq!(
            stale.observe(refused(), Some(stats(true, t0)), t0 + secs(11)),
            None
        );
        assert!(stale
            .observe(refused(), Some(stats(true, t0)), t0 + secs(21))
            .is_some());
        assert_eq!(
            l.observe(refused(), Some(stats(false, t0 + secs(9))), t0 + secs(9)),
            None
        );
        assert_eq!(
            l.observe(refused(), Some(stats(false, t0 + secs(10))), t0 + secs(10))
                .as_deref(),
            Some("SASL authentication error")
        );
        // Transport trouble alone is an outage, not a lockout.
        let mut l = Lockout::new(secs(10));
        let down = Some(Trouble::Transport("connection refused".into()));
        assert_eq!(l.observe(down.clone(), None, t0), None);
        assert_eq!(l.observe(down, None, t0 + secs(60)), None);
    }

    #[test]
    fn sasl_failures_are_authentication_and_outlive_later_transport_errors() {
        let ctx = WorkloadContext::default();
        ctx.remember(classify(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        ));
        ctx.remember(classify(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        ));
        assert!(matches!(ctx.trouble(), Some(Trouble::Authentication(_))));
    }

    #[test]
    fn tls_and_transport_errors_are_told_apart() {
        assert!(matches!(
            classify(
                Some(RDKafkaErrorCode::SSL),
                "SSL handshake failed: certificate verify failed"
            ),
            Trouble::Tls(_)
        ));
        assert!(matches!(
            classify(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "Connect to ipv4#127.0.0.1:1 failed: Connection refused"
            ),
            Trouble::Transport(_)
        ));
    }
}
