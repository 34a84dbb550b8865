//! The errors that choose an exit code, and the exit-code table itself.
//!
//! Everything in the middle of the program uses `anyhow` with context; the typed errors here are
//! raised at the edges (settings, the first broker contact, the audit, thresholds) and found again
//! in the chain by [`exit_code`]. The table is documented in README.md under "Exit codes".

use std::path::PathBuf;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime failure with no more specific code (delivery failed, broker error).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line is wrong (clap uses 2 too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a setting is invalid: unreadable or malformed file, missing certificate.
pub const EXIT_CONFIG: u8 = 3;
/// Exit code: no broker answered within --connect-timeout.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: the brokers refused our identity: wrong password, bad certificate, TLS failure.
pub const EXIT_AUTHENTICATION: u8 = 5;
/// Exit code: an ACL denied an operation (topic, group, cluster).
pub const EXIT_AUTHORIZATION: u8 = 6;
/// Exit code: the audit found lost messages (or fewer than --expect arrived).
pub const EXIT_AUDIT: u8 = 7;
/// Exit code: an --assert condition did not hold.
pub const EXIT_ASSERT: u8 = 8;
/// Exit code: MongoDB could not be written after retries.
pub const EXIT_MONGO: u8 = 9;
/// Exit code: a transactional producer was fenced: another producer took its transactional id.
pub const EXIT_FENCED: u8 = 10;

/// A setting that cannot be used; each names the flag or file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named by a flag cannot be read.
    #[error("cannot read {what} {}: {cause}", path.display())]
    Unreadable {
        /// Which flag's file, e.g. "CA file (--cafile-path)".
        what: String,
        /// The path as given.
        path: PathBuf,
        /// The I/O error (in the message, not the cause chain, so it is printed once).
        cause: std::io::Error,
    },
    /// A credentials file that is not the expected YAML/JSON.
    #[error("malformed credentials file {}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, without any value from the file.
        reason: String,
    },
    /// A value that is not valid for its flag.
    #[error("invalid {flag}: {reason}")]
    Invalid {
        /// The flag, e.g. "--security-protocol".
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// Flags that cannot be used together, or a required one missing.
    #[error("{0}")]
    Usage(String),
}

/// A failure that maps to one of the exit codes above.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// No broker answered.
    #[error("cannot reach the Kafka brokers {servers} within {seconds:.0} s: {cause}")]
    Unreachable {
        /// The bootstrap list tried.
        servers: String,
        /// The timeout.
        seconds: f64,
        /// librdkafka's last word on it.
        cause: String,
    },
    /// The broker refused our credentials or certificate.
    #[error("authentication failed at {servers}: {cause}")]
    Authentication {
        /// The bootstrap list tried.
        servers: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// An ACL denied something.
    #[error("not authorized: {0}")]
    Authorization(String),
    /// The audit verdict is not clean.
    #[error("audit failed: {0}")]
    Audit(String),
    /// An --assert condition failed.
    #[error("assertion failed: {0}")]
    Assert(String),
    /// MongoDB failure after retries.
    #[error("MongoDB: {0}")]
    Mongo(String),
    /// Messages the brokers never acknowledged within --delivery-timeout. The run went to its
    /// end: a consumer alongside reads on, and its audit counts these as not delivered.
    #[error("{0}")]
    Undelivered(String),
    /// Another producer with the same transactional id started: this one may not go on.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Picks the exit code for an error by the first typed error in its chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Unreachable { .. } => EXIT_UNREACHABLE,
                Failure::Authentication { .. } => EXIT_AUTHENTICATION,
                Failure::Authorization(_) => EXIT_AUTHORIZATION,
                Failure::Audit(_) => EXIT_AUDIT,
                Failure::Assert(_) => EXIT_ASSERT,
                Failure::Mongo(_) => EXIT_MONGO,
                Failure::Undelivered(_) => EXIT_FAILURE,
                Failure::Fenced(_) => EXIT_FENCED,
            };
        }
        if let Some(c) = cause.downcast_ref::<ConfigError>() {
            return match c {
                ConfigError::Usage(_) => EXIT_USAGE,
                _ => EXIT_CONFIG,
            };
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_deep_in_a_context_chain_pick_their_exit_code() {
        let err = anyhow::Error::new(Failure::Authorization("topic t".into()))
            .context("producing")
            .context("run");
        assert_eq!(exit_code(&err), EXIT_AUTHORIZATION);
        let err = anyhow::Error::new(ConfigError::Usage("x".into())).context("settings");
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), EXIT_FAILURE);
    }
}
