//! `--assert` thresholds: a small grammar parsed at startup, evaluated on a finished (or merged)
//! result, turning a run into pass/fail.
//!
//! ```text
//! condition := metric op number [unit]
//! op        := "<" | "<=" | ">" | ">=" | "==" | "!="
//! unit      := "us" | "µs" | "ms" | "s"        (latency metrics only, and required there)
//! metric    := latency | rate | count
//! latency   := [source "_"] stat
//! source    := "ack" | "ack_uncorrected" | "e2e" | "e2e_wall"
//! stat      := "p50" | "p90" | "p99" | "p999" | "p99.9" | "max" | "mean"
//! rate      := "rate" | "producer_rate" | "consumer_rate"          (messages per second)
//! count     := "sent" | "acked" | "failed" | "records" | "distinct"
//!            | "lost" | "duplicates" | "out_of_order" | "foreign"
//! ```
//!
//! A bare stat (`p99`) is the ack latency when the run produced and the end-to-end latency
//! otherwise; `rate` likewise is the producer's rate, else the consumer's. `e2e` is the
//! same-process (monotonic) measurement when there is one, else the wall-clock one. Whitespace is
//! allowed between the parts; names are case-insensitive.
//!
//! Parsing never looks at a result, so a bad condition is a usage error before any broker is
//! contacted; what a condition needs (producer, consumer) is checked against the mode then too.
//! Exit codes are chosen in [`crate::error`].

use std::io::Write;

use super::result::{Check, Latency, RunResult};
use crate::error::ConfigError;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// Whose latency a latency metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Ack if the run produced, else end-to-end.
    Auto,
    /// Ack latency, coordinated omission corrected.
    Ack,
    /// Ack latency from the actual send time.
    AckUncorrected,
    /// End-to-end: monotonic when measured, else wall clock.
    E2e,
    /// End-to-end from wall clocks.
    E2eWall,
}

/// Which figure of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Maximum.
    Max,
    /// Mean.
    Mean,
}

/// Which rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOf {
    /// The producer's, else the consumer's.
    Auto,
    /// Acknowledged messages per second.
    Producer,
    /// Records per second.
    Consumer,
}

/// A count from the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Messages handed to librdkafka.
    Sent,
    /// Messages acknowledged.
    Acked,
    /// Deliveries that failed.
    Failed,
    /// Records consumed.
    Records,
    /// Distinct kafka-workload messages consumed.
    Distinct,
    /// Messages lost.
    Lost,
    /// Duplicate records.
    Duplicates,
    /// Out-of-order records.
    OutOfOrder,
    /// Foreign records.
    Foreign,
}

/// What a condition measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A latency figure, compared in µs.
    Latency(Source, Stat),
    /// Messages per second.
    Rate(RateOf),
    /// A count.
    Count(Count),
}

/// What part of a run a metric needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
    /// Either.
    Either,
}

impl Metric {
    /// What part of a run must exist for this metric to be measured.
    pub fn needs(self) -> Needs {
        match self {
            Metric::Latency(Source::Ack | Source::AckUncorrected, _)
            | Metric::Rate(RateOf::Producer)
            | Metric::Count(Count::Sent | Count::Acked | Count::Failed) => Needs::Producer,
            Metric::Latency(Source::Auto, _) | Metric::Rate(RateOf::Auto) => Needs::Either,
            _ => Needs::Consumer,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Latency(..) => "us",
            Metric::Rate(_) => "msgs/s",
            Metric::Count(_) => "messages",
        }
    }

    /// The canonical name and the measured value (µs for latencies), if the result has it.
    fn read(self, r: &RunResult) -> (String, Option<f64>) {
        let p = r.producer.as_ref();
        let c = r.consumer.as_ref();
        match self {
            Metric::Latency(source, stat) => {
                let (name, lat): (&str, Option<&Latency>) = match source {
                    Source::Auto if p.is_some() => ("ack", p.map(|p| &p.ack_latency)),
                    Source::Ack => ("ack", p.map(|p| &p.ack_latency)),
                    Source::AckUncorrected => {
                        ("ack_uncorrected", p.map(|p| &p.ack_latency_uncorrected))
                    }
                    Source::Auto | Source::E2e => match c {
                        Some(c) if c.e2e_latency.count == 0 => {
                            ("e2e_wall", Some(&c.e2e_latency_wall))
                        }
                        _ => ("e2e", c.map(|c| &c.e2e_latency)),
                    },
                    Source::E2eWall => ("e2e_wall", c.map(|c| &c.e2e_latency_wall)),
                };
                let (stat_name, value) = match stat {
                    Stat::P50 => ("p50", lat.map(|l| l.p50_us as f64)),
                    Stat::P90 => ("p90", lat.map(|l| l.p90_us as f64)),
                    Stat::P99 => ("p99", lat.map(|l| l.p99_us as f64)),
                    Stat::P999 => ("p999", lat.map(|l| l.p999_us as f64)),
                    Stat::Max => ("max", lat.map(|l| l.max_us as f64)),
                    Stat::Mean => ("mean", lat.map(|l| l.mean_us)),
                };
                // An empty histogram has no percentiles, not percentiles of zero.
                let value = value.filter(|_| lat.is_some_and(|l| l.count > 0));
                (format!("{name}_{stat_name}"), value)
            }
            Metric::Rate(which) => match (which, p, c) {
                (RateOf::Auto | RateOf::Producer, Some(p), _) => {
                    ("producer_rate".into(), Some(p.throughput.msgs_per_sec))
                }
                (RateOf::Auto | RateOf::Consumer, _, Some(c)) => {
                    ("consumer_rate".into(), Some(c.throughput.msgs_per_sec))
                }
                (RateOf::Consumer, _, None) => ("consumer_rate".into(), None),
                _ => ("producer_rate".into(), None),
            },
            Metric::Count(count) => {
                let (name, value) = match count {
                    Count::Sent => ("sent", p.map(|p| p.sent)),
                    Count::Acked => ("acked", p.map(|p| p.acked)),
                    Count::Failed => ("failed", p.map(|p| p.failed)),
                    Count::Records => ("records", c.map(|c| c.records)),
                    Count::Distinct => ("distinct", c.map(|c| c.audit.distinct)),
                    Count::Lost => ("lost", c.map(|c| c.audit.lost)),
                    Count::Duplicates => ("duplicates", c.map(|c| c.audit.duplicates)),
                    Count::OutOfOrder => ("out_of_order", c.map(|c| c.audit.out_of_order)),
                    Count::Foreign => ("foreign", c.map(|c| c.audit.foreign)),
                };
                (name.into(), value.map(|v| v as f64))
            }
        }
    }
}

/// One parsed `--assert` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// As typed.
    pub text: String,
    /// What it measures.
    pub metric: Metric,
    /// How it compares.
    pub op: Op,
    /// The threshold, in µs for latencies.
    pub threshold: f64,
}

fn parse_metric(name: &str) -> Option<Metric> {
    let name = name.to_ascii_lowercase();
    let count = match name.as_str() {
        "sent" => Some(Count::Sent),
        "acked" => Some(Count::Acked),
        "failed" => Some(Count::Failed),
        "records" => Some(Count::Records),
        "distinct" => Some(Count::Distinct),
        "lost" => Some(Count::Lost),
        "duplicates" => Some(Count::Duplicates),
        "out_of_order" => Some(Count::OutOfOrder),
        "foreign" => Some(Count::Foreign),
        _ => None,
    };
    if let Some(c) = count {
        return Some(Metric::Count(c));
    }
    match name.as_str() {
        "rate" => return Some(Metric::Rate(RateOf::Auto)),
        "producer_rate" => return Some(Metric::Rate(RateOf::Producer)),
        "consumer_rate" => return Some(Metric::Rate(RateOf::Consumer)),
        _ => {}
    }
    let (source, stat) = match name.rsplit_once('_') {
        Some((src, stat)) => (src, stat),
        None => ("", name.as_str()),
    };
    let source = match source {
        "" => Source::Auto,
        "ack" => Source::Ack,
        "ack_uncorrected" => Source::AckUncorrected,
        "e2e" => Source::E2e,
        "e2e_wall" => Source::E2eWall,
        _ => return None,
    };
    let stat = match stat {
        "p50" => Stat::P50,
        "p90" => Stat::P90,
        "p99" => Stat::P99,
        "p999" | "p99.9" => Stat::P999,
        "max" => Stat::Max,
        "mean" => Stat::Mean,
        _ => return None,
    };
    Some(Metric::Latency(source, stat))
}

const METRICS_HELP: &str =
    "metrics: [ack_|ack_uncorrected_|e2e_|e2e_wall_]{p50,p90,p99,p999,max,mean} \
     (with a unit us/ms/s), rate, producer_rate, consumer_rate, sent, acked, failed, records, \
     distinct, lost, duplicates, out_of_order, foreign";

impl Condition {
    /// Parses one condition; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let at = text
            .find(['<', '>', '=', '!'])
            .ok_or("no operator (one of < <= > >= == !=)")?;
        let name = text[..at].trim();
        let rest = &text[at..];
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (op, r)))
        .ok_or("the operator must be one of < <= > >= == !=")?;
        let metric =
            parse_metric(name).ok_or_else(|| format!("unknown metric `{name}`; {METRICS_HELP}"))?;
        let rest = rest.trim();
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        let (number, unit) = (rest[..split].replace('_', ""), rest[split..].trim());
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{rest}` does not start with a number"))?;
        let scale = match (metric, unit.to_ascii_lowercase().as_str()) {
            (Metric::Latency(..), "us" | "µs") => 1.0,
            (Metric::Latency(..), "ms") => 1e3,
            (Metric::Latency(..), "s") => 1e6,
            (Metric::Latency(..), "") => {
                return Err(format!("`{name}` is a latency: give a unit (us, ms or s)"))
            }
            (Metric::Latency(..), u) => return Err(format!("unknown unit `{u}` (us, ms or s)")),
            (_, "") => 1.0,
            (_, u) => return Err(format!("`{name}` takes a plain number, not `{u}`")),
        };
        Ok(Condition {
            text: text.trim().to_string(),
            metric,
            op,
            threshold: value * scale,
        })
    }

    /// Evaluates the condition on a result; an unmeasured metric fails.
    pub fn evaluate(&self, r: &RunResult) -> Check {
        let (metric, value) = self.metric.read(r);
        Check {
            condition: self.text.clone(),
            metric,
            unit: self.metric.unit().into(),
            value,
            passed: value.is_some_and(|v| self.op.holds(v, self.threshold)),
        }
    }
}

/// Parses every `--assert`; the first bad one is an error naming the flag.
pub fn parse_all(texts: &[String]) -> Result<Vec<Condition>, ConfigError> {
    texts
        .iter()
        .map(|t| {
            Condition::parse(t).map_err(|reason| ConfigError::Invalid {
                flag: "--assert",
                reason: format!("`{t}`: {reason}"),
            })
        })
        .collect()
}

/// Checks that every condition can be measured by a run that produces and/or consumes as given.
pub fn check_measurable(
    conditions: &[Condition],
    produces: bool,
    consumes: bool,
) -> Result<(), ConfigError> {
    for c in conditions {
        let missing = match c.metric.needs() {
            Needs::Producer if !produces => Some("--producer"),
            Needs::Consumer if !consumes => Some("--consumer"),
            _ => None,
        };
        if let Some(flag) = missing {
            return Err(ConfigError::Invalid {
                flag: "--assert",
                reason: format!("`{}` can only be measured with {flag}", c.text),
            });
        }
    }
    Ok(())
}

/// Evaluates every condition.
pub fn evaluate_all(conditions: &[Condition], r: &RunResult) -> Vec<Check> {
    conditions.iter().map(|c| c.evaluate(r)).collect()
}

/// Prints one line per check (nothing when there are none).
pub fn write_checks(w: &mut impl Write, checks: &[Check]) -> std::io::Result<()> {
    for c in checks {
        let value = match (c.value, c.unit.as_str()) {
            (None, _) => "not measured".to_string(),
            (Some(v), "us") => format!("{} = {:.3} ms", c.metric, v / 1000.0),
            (Some(v), "msgs/s") => format!("{} = {v:.0} msgs/s", c.metric),
            (Some(v), _) => format!("{} = {v}", c.metric),
        };
        let verdict = if c.passed { "PASS" } else { "FAIL" };
        writeln!(w, "assert {}: {verdict} ({value})", c.condition)?;
    }
    Ok(())
}

/// The failed checks as one message, or `None` when all held.
pub fn failures(checks: &[Check]) -> Option<String> {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.condition.as_str())
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::{AuditResult, ConsumerResult, ProducerResult, Throughput};

    fn result() -> RunResult {
        let mut h = crate::report::stats::latency_histogram();
        for v in 1..=100 {
            h.record(v * 1000).unwrap();
        }
        RunResult {
            producer: Some(ProducerResult {
                sent: 100,
                acked: 100,
                ack_latency: Latency::from_histogram(&h),
                throughput: Throughput::new(100, 0, std::time::Duration::from_millis(2)),
                ..Default::default()
            }),
            consumer: Some(ConsumerResult {
                records: 100,
                audit: AuditResult {
                    lost: 0,
                    duplicates: 3,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn conditions_parse_with_units_spaces_and_aliases() {
        let c = Condition::parse("p99<20ms").unwrap();
        assert_eq!(
            (c.metric, c.op, c.threshold),
            (Metric::Latency(Source::Auto, Stat::P99), Op::Lt, 20_000.0)
        );
        let c = Condition::parse(" e2e_p99.9 <= 1.5 s ").unwrap();
        assert_eq!(
            (c.metric, c.op, c.threshold),
            (
                Metric::Latency(Source::E2e, Stat::P999),
                Op::Le,
                1_500_000.0
            )
        );
        let c = Condition::parse("rate>=50_000").unwrap();
        assert_eq!(
            (c.metric, c.op, c.threshold),
            (Metric::Rate(RateOf::Auto), Op::Ge, 50_000.0)
        );
        let c = Condition::parse("LOST==0").unwrap();
        assert_eq!((c.metric, c.op), (Metric::Count(Count::Lost), Op::Eq));
        let c = Condition::parse("ack_uncorrected_max!=250us").unwrap();
        assert_eq!(
            (c.metric, c.op, c.threshold),
            (
                Metric::Latency(Source::AckUncorrected, Stat::Max),
                Op::Ne,
                250.0
            )
        );
        assert_eq!(Condition::parse("out_of_order > 2").unwrap().op, Op::Gt);
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (text, says) in [
            ("p99 20ms", "no operator"),
            ("p99=<20ms", "operator"),
            ("p98<20ms", "unknown metric"),
            ("p99<20", "give a unit"),
            ("p99<20min", "unknown unit"),
            ("lost==0ms", "plain number"),
            ("rate>=fast", "number"),
            ("bogus_p99<1ms", "unknown metric"),
        ] {
            let err = Condition::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = parse_all(&["lost==0".into(), "x<1".into()]).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid --assert: `x<1`"),
            "{err}"
        );
    }

    #[test]
    fn measurability_is_checked_against_the_mode() {
        let conds = parse_all(&["p99<1ms".into(), "rate>1".into()]).unwrap();
        assert!(check_measurable(&conds, false, true).is_ok());
        let conds = parse_all(&["lost==0".into()]).unwrap();
        assert!(check_measurable(&conds, true, false)
            .unwrap_err()
            .to_string()
            .contains("--consumer"));
        let conds = parse_all(&["ack_p99<1ms".into()]).unwrap();
        assert!(check_measurable(&conds, false, true).is_err());
    }

    #[test]
    fn conditions_evaluate_against_a_result() {
        let r = result();
        let checks = evaluate_all(
            &parse_all(&[
                "p99<=100ms".into(),
                "p50>51ms".into(),
                "lost==0".into(),
                "duplicates<3".into(),
                "rate>=50000".into(),
                "e2e_p99<1s".into(),
            ])
            .unwrap(),
            &r,
        );
        let passed: Vec<bool> = checks.iter().map(|c| c.passed).collect();
        assert_eq!(passed, [true, false, true, false, true, false]);
        assert_eq!(checks[0].metric, "ack_p99");
        let p99 = r.producer.as_ref().unwrap().ack_latency.p99_us;
        assert!((99_000..=99_100).contains(&p99));
        assert_eq!(checks[0].value, Some(p99 as f64));
        assert_eq!(checks[4].value, Some(50_000.0));
        // No end-to-end values were recorded: not measured, so it fails.
        assert_eq!(checks[5].value, None);
        assert_eq!(
            failures(&checks).unwrap(),
            "p50>51ms, duplicates<3, e2e_p99<1s"
        );
        let mut out = Vec::new();
        write_checks(&mut out, &checks).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = format!(
            "assert p99<=100ms: PASS (ack_p99 = {:.3} ms)",
            p99 as f64 / 1e3
        );
        assert!(text.contains(&line), "{text}");
        assert!(
            text.contains("assert e2e_p99<1s: FAIL (not measured)"),
            "{text}"
        );
    }
}
