//! The result printed: as text (the summary at the end of a run or a merge) and as pretty JSON.
//! The types themselves live in [`super::result`].

use std::io::Write;

use super::result::{ClientEvents, Latency, RunResult, TxnAudit, TxnResult};
use crate::workload::audit::RangeSet;

/// Writes the result as pretty JSON with a final newline.
pub fn write_json(w: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, r)?;
    writeln!(w)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn write_latency(w: &mut impl Write, label: &str, l: &Latency) -> std::io::Result<()> {
    if l.count == 0 {
        return writeln!(w, "  {label:<22} (none)");
    }
    writeln!(
        w,
        "  {label:<22} p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} samples)",
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.count
    )
}

/// `a-b, c, d-e` for the first `limit` ranges of `set` (inclusive ends), and how many more.
pub fn describe_ranges(set: &RangeSet, limit: usize) -> String {
    let mut parts: Vec<String> = set
        .ranges()
        .take(limit)
        .map(|(s, e)| {
            if e - s == 1 {
                s.to_string()
            } else {
                format!("{s}-{}", e - 1)
            }
        })
        .collect();
    let total = set.range_count();
    if total > limit {
        parts.push(format!("and {} more ranges", total - limit));
    }
    if parts.is_empty() {
        return "unknown (not kafka-workload values)".into();
    }
    parts.join(", ")
}

/// One line of a client's events, e.g. `3 retries, 2 disconnects, 1 leader change; errors:
/// BrokerTransportFailure 4, AllBrokersDown 1`.
fn write_client(w: &mut impl Write, c: &ClientEvents) -> std::io::Result<()> {
    if c.is_quiet() {
        return Ok(());
    }
    let mut line = format!(
        "  client: {} retries, {} disconnects, {} request timeouts, {} leader changes",
        c.retries, c.disconnects, c.request_timeouts, c.leader_changes
    );
    if !c.errors.is_empty() {
        let errors: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line.push_str("; errors: ");
        line.push_str(&errors.join(", "));
    }
    writeln!(w, "{line}")
}

/// The producer's transactions: counts, ranges and commit / abort latency.
fn write_transactions(w: &mut impl Write, t: &TxnResult) -> std::io::Result<()> {
    writeln!(
        w,
        "  transactions ({}): {} committed ({} messages), {} aborted ({} messages, {} of them failed commits), {} per transaction, abort rate {}",
        t.transactional_id, t.committed, t.committed_messages, t.aborted, t.aborted_messages, t.failed_commits, t.size, t.abort_rate
    )?;
    if !t.committed_seqs.is_empty() {
        writeln!(
            w,
            "    committed: {}",
            describe_ranges(&t.committed_seqs, 5)
        )?;
    }
    if !t.aborted_seqs.is_empty() {
        writeln!(w, "    aborted:   {}", describe_ranges(&t.aborted_seqs, 5))?;
    }
    if let Some(d) = t.in_doubt_from {
        writeln!(
            w,
            "    in doubt from sequence number {d}: the producer did not record how its last transactions ended"
        )?;
    }
    write_latency(w, "commit latency", &t.commit_latency)?;
    if t.abort_latency.count > 0 {
        write_latency(w, "abort latency", &t.abort_latency)?;
    }
    Ok(())
}

/// What the audit made of one transactional run.
fn write_txn_audit(w: &mut impl Write, run: &str, t: &TxnAudit) -> std::io::Result<()> {
    let committed = t.committed.len();
    writeln!(
        w,
        "  transactions of run {run} ({}): {} of {committed} committed messages read ({}), {} records of {} aborted read ({})",
        t.isolation,
        committed - t.committed_missing,
        if committed == 0 { "none".to_string() } else { describe_ranges(&t.committed, 5) },
        t.aborted_read,
        t.aborted.len(),
        if t.aborted.is_empty() { "none".to_string() } else { describe_ranges(&t.aborted, 5) },
    )?;
    if let Some(d) = t.in_doubt_from {
        let fate = match t.in_doubt_last_read {
            Some(last) => format!(
                "{} read up to {last} (committed before the producer stopped); anything after it was aborted by the broker",
                t.in_doubt_read
            ),
            None => "none read: the open transaction was aborted by the broker".to_string(),
        };
        writeln!(
            w,
            "    in doubt from {d} (the producer stopped without saying): {fate}"
        )?;
    }
    Ok(())
}

/// Prints the human summary.
pub fn write_text(w: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    writeln!(
        w,
        "== kafka-workload summary (topic {}, run {}) ==",
        r.topic, r.run_id
    )?;
    if r.mock_cluster {
        writeln!(w, "  cluster: in-process librdkafka mock cluster")?;
    }
    if !r.merged_from.is_empty() {
        writeln!(
            w,
            "  merged from {} results: {}",
            r.merged_from.len(),
            r.merged_from.join(", ")
        )?;
    }
    if let Some(p) = &r.producer {
        writeln!(
            w,
            "producer: {} sent, {} acknowledged, {} failed, {} bytes in {:.3} s: {:.0} msgs/s, {:.2} MB/s ({:.2} MiB/s)",
            p.sent, p.acked, p.failed, p.bytes, p.throughput.seconds, p.throughput.msgs_per_sec, p.throughput.mb_per_sec, p.throughput.mib_per_sec
        )?;
        write_latency(w, "ack latency", &p.ack_latency)?;
        if p.ack_latency_uncorrected != p.ack_latency {
            write_latency(w, "ack (uncorrected)", &p.ack_latency_uncorrected)?;
        }
        if p.failed > 0 {
            writeln!(
                w,
                "  not delivered: sequence numbers {}",
                describe_ranges(&p.failed_seqs, 10)
            )?;
        }
        if let Some(t) = &p.transactions {
            write_transactions(w, t)?;
        }
        write_client(w, &p.client)?;
    }
    if let Some(c) = &r.consumer {
        writeln!(
            w,
            "consumer: {} records, {} bytes in {:.3} s: {:.0} msgs/s, {:.2} MB/s ({:.2} MiB/s)",
            c.records,
            c.bytes,
            c.throughput.seconds,
            c.throughput.msgs_per_sec,
            c.throughput.mb_per_sec,
            c.throughput.mib_per_sec
        )?;
        if let Some(join) = c.group_join_ms {
            writeln!(
                w,
                "  group join {join:.0} ms, first record {:.0} ms after it",
                c.first_record_ms.unwrap_or(0.0)
            )?;
        }
        write_latency(w, "end-to-end latency", &c.e2e_latency)?;
        if c.e2e_latency_wall.count > 0 {
            write_latency(w, "end-to-end (wall clock)", &c.e2e_latency_wall)?;
            writeln!(
                w,
                "  (wall-clock latency across processes is only as good as the clocks' sync)"
            )?;
        }
        let a = &c.audit;
        writeln!(
            w,
            "audit: {} — {} distinct{}, {} lost, {} duplicates, {} out of order, {} foreign ({} not JSON), {} producer run(s)",
            a.verdict.to_uppercase(),
            a.distinct,
            a.expected.map(|e| format!(" of {e} expected")).unwrap_or_default(),
            a.lost,
            a.duplicates,
            a.out_of_order,
            a.foreign,
            a.not_json,
            a.runs.len()
        )?;
        if a.not_delivered > 0 {
            writeln!(
                w,
                "  {} gaps are messages the producer reported as not delivered (not lost)",
                a.not_delivered
            )?;
        }
        for (run, t) in &a.transactions {
            write_txn_audit(w, run, t)?;
        }
        if a.not_committed > 0 {
            writeln!(
                w,
                "  {} gaps are messages of transactions that did not commit (not lost)",
                a.not_committed
            )?;
        }
        if let Some(reason) = &c.stop_reason {
            writeln!(w, "  consumer stopped: {reason}")?;
        }
        write_client(w, &c.client)?;
    }
    if let Some(m) = &r.mongo {
        crate::sink::write_text(w, m)?;
    }
    super::assert::write_checks(w, &r.checks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::*;
    use crate::report::stats::{ConsumerTally, ProducerTally, Window};
    use crate::workload::audit::Audit;
    use std::time::Duration;

    #[test]
    fn failed_ranges_are_described_with_inclusive_ends_and_a_limit() {
        let mut set = RangeSet::default();
        set.insert_range(10, 20);
        set.insert(25);
        set.insert_range(30, 32);
        assert_eq!(describe_ranges(&set, 5), "10-19, 25, 30-31");
        assert_eq!(describe_ranges(&set, 2), "10-19, 25, and 1 more ranges");
    }

    #[test]
    fn failed_seqs_excused_are_not_loss_but_other_gaps_still_are() {
        let mut a = Audit::default();
        for s in (0..100).filter(|s| !(10..20).contains(s) && *s != 50) {
            a.record("r", 0, s);
        }
        let mut r = AuditResult::from_audit(&a, 0, Some(89));
        assert_eq!((r.lost, r.verdict.as_str()), (11, "loss"));
        let mut failed = RangeSet::default();
        failed.insert_range(10, 20);
        failed.insert(500); // beyond what arrived: not a gap, nothing to excuse
        r.excuse_failed("r", &failed);
        assert_eq!(
            (r.lost, r.not_delivered, r.verdict.as_str()),
            (1, 10, "loss")
        );
        failed.insert(50);
        let mut r = AuditResult::from_audit(&a, 0, Some(89));
        r.excuse_failed("r", &failed);
        assert_eq!(
            (r.lost, r.not_delivered, r.verdict.as_str()),
            (0, 11, "clean")
        );
    }

    #[test]
    fn client_events_print_one_line_only_when_something_happened() {
        let mut out = Vec::new();
        write_client(&mut out, &ClientEvents::default()).unwrap();
        assert!(out.is_empty());
        let mut c = ClientEvents {
            retries: 3,
            disconnects: 2,
            leader_changes: 1,
            ..Default::default()
        };
        c.errors.insert("AllBrokersDown".into(), 1);
        write_client(&mut out, &c).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  client: 3 retries, 2 disconnects, 0 request timeouts, 1 leader changes; errors: AllBrokersDown 1\n"
        );
    }

    #[test]
    fn throughput_labels_mb_and_mib_separately() {
        let t = Throughput::new(1000, 2_097_152, Duration::from_secs(2));
        assert_eq!(t.msgs_per_sec, 500.0);
        assert_eq!(t.mib_per_sec, 1.0);
        assert_eq!(t.mb_per_sec, 1.049);
    }

    #[test]
    fn audit_verdict_counts_gaps_and_shortfall_as_loss() {
        let mut a = Audit::default();
        for s in [0, 1, 3] {
            a.record("r", 0, s);
        }
        let r = AuditResult::from_audit(&a, 0, None);
        assert_eq!((r.lost, r.verdict.as_str()), (1, "loss"));
        let r = AuditResult::from_audit(&a, 0, Some(10));
        assert_eq!(r.lost, 7);
        a.record("r", 0, 2);
        let r = AuditResult::from_audit(&a, 0, Some(4));
        assert_eq!((r.lost, r.verdict.as_str()), (0, "clean"));
    }

    /// A result built the way a `--producer --consumer` run builds it, with a gap, a duplicate,
    /// a foreign record and a check.
    fn realistic() -> RunResult {
        use crate::report::stats::record_latency;
        let mut p = ProducerTally::default();
        let mut c = ConsumerTally::default();
        for seq in 0..1000u64 {
            p.acked += 1;
            p.bytes += 200;
            record_latency(&mut p.ack_latency, 900 + seq);
            record_latency(&mut p.ack_latency_uncorrected, 800 + seq);
            if seq != 500 {
                c.audit.record("run1", (seq % 3) as i32, seq);
                record_latency(&mut c.e2e_monotonic, 2000 + seq);
            }
        }
        c.audit.record("run1", 0, 7);
        c.audit.record_foreign();
        c.not_json = 1;
        c.records = 1001;
        c.join_time = Some(Duration::from_millis(3100));
        c.stop_reason = Some("no record for 15 s".into());
        p.errors.insert("Local: Message timed out".into(), 2);
        let started = std::time::Instant::now() - Duration::from_secs(3);
        let w = Window {
            start: Some(started),
            end: Some(started + Duration::from_secs(2)),
        };
        c.window = w;
        let mut r = RunResult {
            schema: SCHEMA.into(),
            version: "0.1.0".into(),
            run_id: "run1".into(),
            topic: "t".into(),
            producer: Some(producer_result(1000, &p, &w, Default::default())),
            consumer: Some(consumer_result(&c, Some(1000), "g1", Default::default())),
            ..Default::default()
        };
        let conds =
            crate::report::assert::parse_all(&["p99<20ms".into(), "lost==0".into()]).unwrap();
        r.checks = crate::report::assert::evaluate_all(&conds, &r);
        r
    }

    fn schema_validator() -> jsonschema::Validator {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/results.schema.json")).unwrap();
        jsonschema::validator_for(&schema).expect("the schema itself is valid")
    }

    #[test]
    fn json_result_validates_against_the_published_schema() {
        let v = schema_validator();
        let mut out = Vec::new();
        write_json(&mut out, &realistic()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let errors: Vec<String> = v
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // Producer-only and consumer-only results validate too.
        let mut only = realistic();
        only.consumer = None;
        assert!(v.is_valid(&serde_json::to_value(&only).unwrap()));
        only = realistic();
        only.producer = None;
        assert!(v.is_valid(&serde_json::to_value(&only).unwrap()));
    }

    #[test]
    fn schema_rejects_a_result_missing_a_field_or_with_a_wrong_type() {
        let v = schema_validator();
        let good = serde_json::to_value(realistic()).unwrap();
        let mut missing = good.clone();
        missing["consumer"]["audit"]
            .as_object_mut()
            .unwrap()
            .remove("lost");
        assert!(!v.is_valid(&missing));
        let mut wrong = good.clone();
        wrong["producer"]["ack_latency"]["p99_us"] = serde_json::json!("fast");
        assert!(!v.is_valid(&wrong));
        let mut extra = good.clone();
        extra["surprise"] = serde_json::json!(1);
        assert!(!v.is_valid(&extra));
        // The MongoDB section is optional but checked when present.
        let mut mongo = good;
        mongo["mongo"] = serde_json::json!({"database": "t", "producer": {"collection": "producer",
            "written": 3, "duplicates": 0, "batches": 1, "retries": 0, "unstored": 0}, "consumer": null});
        assert!(v.is_valid(&mongo));
        mongo["mongo"]["producer"]["written"] = serde_json::json!(-1);
        assert!(!v.is_valid(&mongo));
    }

    #[test]
    fn json_roundtrip_keeps_every_field_and_the_histograms() {
        let r = realistic();
        let mut out = Vec::new();
        write_json(&mut out, &r).unwrap();
        let back: RunResult = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, r);
        let p = back.producer.unwrap();
        let h = p.ack_latency.histogram().unwrap();
        assert_eq!(h.len(), 1000);
        assert_eq!(Latency::from_histogram(&h), p.ack_latency);
        let c = back.consumer.unwrap();
        assert_eq!(
            (c.audit.lost, c.audit.duplicates, c.audit.foreign),
            (1, 1, 1)
        );
        assert_eq!(c.audit.runs["run1"].seen.range_count(), 2);
        assert_eq!(back.checks.len(), 2);
        assert!(back.checks[0].passed && !back.checks[1].passed);
        let w = p.window.unwrap();
        assert_eq!(w.end_unix_us - w.start_unix_us, 2_000_000);
        assert_eq!(p.throughput.seconds, 2.0);
    }

    #[test]
    fn text_summary_names_throughput_latency_and_verdict() {
        let mut h = crate::report::stats::latency_histogram();
        h.record(1500).unwrap();
        let r = RunResult {
            schema: SCHEMA.into(),
            topic: "t".into(),
            run_id: "r".into(),
            producer: Some(ProducerResult {
                sent: 1,
                acked: 1,
                bytes: 100,
                throughput: Throughput::new(1, 100, Duration::from_millis(10)),
                ack_latency: Latency::from_histogram(&h),
                ack_latency_uncorrected: Latency::from_histogram(&h),
                ..Default::default()
            }),
            consumer: Some(ConsumerResult {
                audit: AuditResult {
                    verdict: "clean".into(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_text(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("100 msgs/s"), "{text}");
        assert!(text.contains("p50 1.500 ms"), "{text}");
        assert!(text.contains("audit: CLEAN"), "{text}");
    }
}
