//! Credential files: the YAML that `juju run data-integrator/leader get-credentials` prints, and the
//! `kafka_client` relation databag (provider side) as JSON or YAML.
//!
//! Both carry the same keys (`endpoints`, `username`, `password`, `tls`, `tls-ca`, `topic`,
//! `consumer-group-prefix`); the juju output nests them under `kafka:`. This module only reads and
//! validates a file; precedence against flags and environment is [`super::settings`]'s job.

use std::path::Path;

use serde::Deserialize;

use super::Secret;
use crate::error::ConfigError;

/// The fields kafka-workload uses from a credentials file. Unknown keys (`salt`, `resource`,
/// `version`, `data`, `ok`, ...) are ignored.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Credentials {
    /// `endpoints`: comma-separated bootstrap servers.
    pub endpoints: Option<String>,
    /// `username`: the SASL user (`relation-<id>`).
    pub username: Option<String>,
    /// `password`: the SASL password.
    pub password: Option<Secret>,
    /// `tls`: whether the cluster's client listeners use TLS.
    pub tls: Option<bool>,
    /// `tls-ca`: the CA (PEM) that signs the brokers' certificates.
    pub tls_ca: Option<Secret>,
    /// `topic`: the topic the relation was granted.
    pub topic: Option<String>,
    /// `consumer-group-prefix`: the prefix the consumer group ACL covers.
    pub consumer_group_prefix: Option<String>,
}

#[derive(Deserialize)]
struct RawCredentials {
    endpoints: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls: Option<serde_yaml::Value>,
    #[serde(rename = "tls-ca")]
    tls_ca: Option<String>,
    topic: Option<String>,
    #[serde(rename = "consumer-group-prefix")]
    consumer_group_prefix: Option<String>,
}

/// Reads and parses a credentials file; errors name the file, never a value from it.
pub fn load(path: &Path) -> Result<Credentials, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Unreadable {
        what: "credentials file (--credentials)".into(),
        path: path.to_path_buf(),
        cause,
    })?;
    parse(&text).map_err(|reason| ConfigError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// How deep `[` and `{` may nest, counted without regard to quoting. serde_yaml refuses more than
/// 128 levels, but only after libyaml has scanned the whole text, in time quadratic in the depth
/// (40,000 levels take 2 to 5 s, a megabyte of `[` some 25 minutes); no credentials file comes
/// close.
const MAX_FLOW_DEPTH: usize = 1000;

/// Parses the text of a credentials file. JSON is YAML, so one parser serves both formats.
pub fn parse(text: &str) -> Result<Credentials, String> {
    if flow_depth(text) > MAX_FLOW_DEPTH {
        return Err(format!(
            "`[` and `{{` nest more than {MAX_FLOW_DEPTH} levels deep: not a credentials file"
        ));
    }
    let doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        // `juju run` may have its progress lines in the captured text; start at the `kafka:` map.
        Err(first) => match text.find("\nkafka:") {
            Some(at) => serde_yaml::from_str(&text[at + 1..]).map_err(|e| describe(&e))?,
            None => return Err(describe(&first)),
        },
    };
    let map = match doc.get("kafka") {
        Some(inner) if inner.is_mapping() => inner.clone(),
        _ => doc,
    };
    if !map.is_mapping() {
        return Err("expected a map of credentials (a `kafka:` map or a relation databag)".into());
    }
    let raw: RawCredentials = serde_yaml::from_value(map).map_err(|e| describe(&e))?;
    let tls = match raw.tls {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::Bool(b)) => Some(b),
        Some(serde_yaml::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "enabled" | "true" | "yes" => Some(true),
            "disabled" | "false" | "no" | "" => Some(false),
            _ => return Err("`tls` must be enabled, disabled, true or false".into()),
        },
        Some(_) => return Err("`tls` must be enabled, disabled, true or false".into()),
    };
    let non_empty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    // An old provider bug put the word "enabled" into tls-ca instead of a certificate.
    let tls_ca = non_empty(raw.tls_ca).filter(|ca| ca.contains("-----BEGIN"));
    Ok(Credentials {
        endpoints: non_empty(raw.endpoints),
        username: non_empty(raw.username),
        password: non_empty(raw.password).map(Secret::new),
        tls,
        tls_ca: tls_ca.map(Secret::new),
        topic: non_empty(raw.topic),
        consumer_group_prefix: non_empty(raw.consumer_group_prefix),
    })
}

/// The deepest nesting of `[` and `{`, quotes and comments included.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A parse error with its position, but without the text serde quotes from the input, which may
/// be a secret: quoted in backticks (an integer, a float) or, with Rust's escapes, in double
/// quotes (a string of the wrong kind, a duplicate key).
fn describe(err: &serde_yaml::Error) -> String {
    let text = err.to_string();
    let mut cleaned = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '`' && c != '"' {
            cleaned.push(c);
            continue;
        }
        let mut escaped = false;
        for q in chars.by_ref() {
            match q {
                _ if escaped => escaped = false,
                '\\' if c == '"' => escaped = true,
                _ if q == c => break,
                _ => {}
            }
        }
        cleaned.push(c);
        cleaned.push('…');
        cleaned.push(c);
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUJU_OUTPUT: &str = r#"
kafka:
  consumer-group-prefix: relation-8-
  data: '{"extra-user-roles": "producer,consumer", "topic": "test-topic"}'
  endpoints: 10.1.2.3:9092,10.1.2.4:9092
  password: s3cr3t
  resource: test-topic
  salt: abcdef
  tls: disabled
  topic: test-topic
  username: relation-8
  version: v0
ok: "True"
"#;

    #[test]
    fn juju_get_credentials_yaml_is_read_from_its_kafka_map() {
        let c = parse(JUJU_OUTPUT).unwrap();
        assert_eq!(c.endpoints.as_deref(), Some("10.1.2.3:9092,10.1.2.4:9092"));
        assert_eq!(c.username.as_deref(), Some("relation-8"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("s3cr3t"));
        assert_eq!(c.tls, Some(false));
        assert_eq!(c.topic.as_deref(), Some("test-topic"));
        assert_eq!(c.consumer_group_prefix.as_deref(), Some("relation-8-"));
        assert_eq!(c.tls_ca, None);
    }

    #[test]
    fn juju_output_with_progress_lines_before_it_still_parses() {
        let text = format!("Running operation 1 with 1 task\n  - task 2 on unit-data-integrator-0\n\nWaiting for task 2...{JUJU_OUTPUT}");
        assert_eq!(
            parse(&text).unwrap().username.as_deref(),
            Some("relation-8")
        );
    }

    #[test]
    fn relation_databag_json_with_tls_ca_is_read() {
        let json = r#"{"endpoints": "k:9093", "username": "relation-3", "password": "pw",
            "tls": "enabled", "tls-ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "topic": "t", "consumer-group-prefix": "relation-3-"}"#;
        let c = parse(json).unwrap();
        assert_eq!(c.tls, Some(true));
        assert!(c
            .tls_ca
            .unwrap()
            .expose()
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn tls_ca_that_is_not_a_certificate_is_ignored() {
        let c = parse("username: u\ntls: true\ntls-ca: enabled\n").unwrap();
        assert_eq!(c.tls, Some(true));
        assert_eq!(c.tls_ca, None);
    }

    #[test]
    fn malformed_file_error_has_position_but_not_the_secret() {
        let err = parse("kafka:\n  password: [unclosed hunter2\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line"), "{err}");
        let err = parse("kafka:\n  password: {a: hunter2}\n").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_list_is_not_a_credentials_file() {
        assert!(parse("- a\n- b\n").is_err());
    }

    #[test]
    fn bad_tls_word_is_refused() {
        assert!(parse("tls: maybe\n").unwrap_err().contains("tls"));
    }
}
