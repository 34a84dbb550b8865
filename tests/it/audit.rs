//! The audit, the results file, `merge` and `--assert` against the real broker: separate
//! producer and consumer processes, records injected by kcat, records deleted with the admin API,
//! and fleets merged from their JSON files. All on the open PLAINTEXT listener, a fresh topic each.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Our binary on the PLAINTEXT listener, quiet per message.
fn plain(topic: &str) -> Command {
    let mut cmd = workload();
    cmd.args(["-x", "PLAINTEXT", "-s", &bed().plaintext, "-t", topic])
        .args(["--log-messages", "none", "--no-progress"]);
    cmd
}

fn produce(topic: &str, n: u64, json: Option<&Path>) -> Output {
    let mut cmd = plain(topic);
    cmd.args(["--producer", "-n", &n.to_string()]);
    if let Some(path) = json {
        cmd.arg("--json").arg(path);
    }
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "producer failed: {out}");
    out
}

fn consume(topic: &str, expect: u64, json: &Path) -> Output {
    let mut cmd = plain(topic);
    cmd.args([
        "--consumer",
        "--expect",
        &expect.to_string(),
        "--idle-timeout",
        "5",
    ])
    .args(["--group-id", &unique("g")])
    .arg("--json")
    .arg(json);
    run(cmd, LIMIT)
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("result is JSON")
}

/// Fails the test with every violation if `value` does not follow docs/results.schema.json.
pub(crate) fn assert_follows_schema(value: &Value) {
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "result does not follow the schema: {errors:#?}"
    );
}

/// Deletes the records of partition 0 of `topic` below `offset`, as the super user.
fn delete_records_before(topic: &str, offset: i64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bed().plaintext)
        .create()
        .expect("admin client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let result =
        futures::executor::block_on(admin.delete_records(&tpl, &opts)).expect("delete_records");
    for e in result.elements() {
        assert!(
            e.error().is_ok(),
            "deleting records of {topic}/{}: {:?}",
            e.partition(),
            e.error()
        );
    }
}

#[test]
fn a_second_process_consuming_with_expect_n_reports_clean_and_exits_0() {
    let topic = unique("audit-clean");
    create_topic(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    produce(&topic, 2000, None);
    let json = dir.path().join("c.json");
    let out = consume(&topic, 2000, &json);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("audit: CLEAN"), "{out}");
    // Another process's messages: end-to-end latency from wall clocks, with the caveat.
    assert!(out.stdout.contains("end-to-end (wall clock)"), "{out}");
    assert!(
        out.stdout.contains("only as good as the clocks' sync"),
        "{out}"
    );
    let v = read_json(&json);
    assert_follows_schema(&v);
    let a = &v["consumer"]["audit"];
    assert_eq!(a["verdict"], "clean");
    assert_eq!(
        (
            a["distinct"].as_u64(),
            a["expected"].as_u64(),
            a["lost"].as_u64()
        ),
        (Some(2000), Some(2000), Some(0))
    );
    assert_eq!(
        (
            a["duplicates"].as_u64(),
            a["out_of_order"].as_u64(),
            a["foreign"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let runs = a["runs"].as_object().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs.values().next().unwrap()["seen"],
        serde_json::json!([[0, 2000]])
    );
    assert_eq!(v["consumer"]["e2e_latency_wall"]["count"], 2000);
    assert!(v["consumer"]["group_join_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn records_injected_by_kcat_are_counted_as_foreign_not_as_loss() {
    let topic = unique("audit-foreign");
    create_topic(&topic, 1);
    // client.py's JSON shape without run_id/seq, and plain text as the kafka-operator variant wrote.
    let lines: Vec<String> = vec![
        r#"{"timestamp": 1768919219.744478, "_id": "9f4da8c1df2547f18c4d3365f7fb1c54", "origin": "kcat", "content": "Message #0"}"#.into(),
        r#"{"timestamp": 1768919219.9, "_id": "0f4da8c1df2547f18c4d3365f7fb1c55", "origin": "kcat", "content": "Message #1"}"#.into(),
        "Message #2".into(),
        "Message #3".into(),
        "Message #4".into(),
    ];
    kcat_produce(&topic, &lines);
    produce(&topic, 300, None);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let out = consume(&topic, 300, &json);
    assert_eq!(out.code(), 0, "{out}");
    let v = read_json(&json);
    assert_follows_schema(&v);
    let a = &v["consumer"]["audit"];
    assert_eq!(
        (a["foreign"].as_u64(), a["not_json"].as_u64()),
        (Some(5), Some(3)),
        "{a}"
    );
    assert_eq!(
        (
            a["distinct"].as_u64(),
            a["lost"].as_u64(),
            a["verdict"].as_str()
        ),
        (Some(300), Some(0), Some("clean"))
    );
    assert_eq!(v["consumer"]["records"], 305);
    assert!(out.stdout.contains("5 foreign (3 not JSON)"), "{out}");
}

#[test]
fn expecting_more_than_was_produced_reports_the_shortfall_as_loss_and_exits_7() {
    let topic = unique("audit-short");
    create_topic(&topic, 3);
    produce(&topic, 500, None);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let out = consume(&topic, 600, &json);
    assert_eq!(out.code(), 7, "{out}");
    assert!(out.stdout.contains("audit: LOSS"), "{out}");
    assert!(
        out.stderr
            .contains("100 of 600 expected messages did not arrive"),
        "{out}"
    );
    let v = read_json(&json);
    assert_follows_schema(&v);
    let a = &v["consumer"]["audit"];
    assert_eq!(
        (a["lost"].as_u64(), a["verdict"].as_str()),
        (Some(100), Some("loss"))
    );
    assert!(v["consumer"]["stop_reason"]
        .as_str()
        .unwrap()
        .contains("no record for 5 s"));
}

#[test]
fn records_deleted_from_the_log_show_as_a_gap_and_exit_7() {
    let topic = unique("audit-gap");
    create_topic(&topic, 1);
    produce(&topic, 1000, None);
    // One partition, one idempotent producer: offset i holds seq i. The first 100 disappear.
    delete_records_before(&topic, 100);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let out = consume(&topic, 1000, &json);
    assert_eq!(out.code(), 7, "{out}");
    let v = read_json(&json);
    let a = &v["consumer"]["audit"];
    assert_eq!(
        (a["distinct"].as_u64(), a["lost"].as_u64()),
        (Some(900), Some(100)),
        "{a}"
    );
    let runs = a["runs"].as_object().unwrap();
    assert_eq!(
        runs.values().next().unwrap()["seen"],
        serde_json::json!([[100, 1000]])
    );
}

#[test]
fn merged_json_of_two_producers_equals_the_sum_of_both() {
    let topic = unique("audit-merge");
    create_topic(&topic, 3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.json"),
        dir.path().join("b.json"),
        dir.path().join("c.json"),
    );
    produce(&topic, 1000, Some(&a));
    produce(&topic, 1500, Some(&b));
    let out = consume(&topic, 2500, &c);
    assert_eq!(out.code(), 0, "{out}");

    let merged = dir.path().join("m.json");
    let mut cmd = workload();
    cmd.arg("merge")
        .arg(&a)
        .arg(&b)
        .arg(&c)
        .arg("--json")
        .arg(&merged);
    cmd.args([
        "--assert",
        "acked==2500",
        "--assert",
        "lost==0",
        "--assert",
        "p99<10s",
    ]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("merged from 3 results"), "{out}");
    assert!(out.stdout.contains("assert acked==2500: PASS"), "{out}");

    let (va, vb, m) = (read_json(&a), read_json(&b), read_json(&merged));
    assert_follows_schema(&m);
    let (pa, pb, pm) = (&va["producer"], &vb["producer"], &m["producer"]);
    for field in ["sent", "acked", "failed", "bytes"] {
        let sum = pa[field].as_u64().unwrap() + pb[field].as_u64().unwrap();
        assert_eq!(pm[field].as_u64(), Some(sum), "{field}");
    }
    assert_eq!(pm["acked"], 2500);
    assert_eq!(pm["ack_latency"]["count"], 2500);
    let max = pa["ack_latency"]["max_us"]
        .as_u64()
        .max(pb["ack_latency"]["max_us"].as_u64());
    assert_eq!(pm["ack_latency"]["max_us"].as_u64(), max);
    // The second producer started after the first ended: the busy time is the sum of both.
    let secs = pa["throughput"]["seconds"].as_f64().unwrap()
        + pb["throughput"]["seconds"].as_f64().unwrap();
    assert!(
        (pm["throughput"]["seconds"].as_f64().unwrap() - secs).abs() < 0.003,
        "{pm}"
    );
    let audit = &m["consumer"]["audit"];
    assert_eq!(
        (audit["distinct"].as_u64(), audit["lost"].as_u64()),
        (Some(2500), Some(0))
    );
    assert_eq!(audit["runs"].as_object().unwrap().len(), 2);
    let ids: Vec<&str> = m["merged_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        ids[..2],
        [
            va["run_id"].as_str().unwrap(),
            vb["run_id"].as_str().unwrap()
        ]
    );
}

#[test]
fn a_failed_assert_exits_8_and_a_bad_one_exits_3_before_connecting() {
    let topic = unique("audit-assert");
    create_topic(&topic, 1);
    let mut cmd = plain(&topic);
    cmd.args([
        "--producer",
        "-n",
        "100",
        "--assert",
        "acked>=1000",
        "--assert",
        "failed==0",
    ]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 8, "{out}");
    assert!(
        out.stdout
            .contains("assert acked>=1000: FAIL (acked = 100)"),
        "{out}"
    );
    assert!(out.stdout.contains("assert failed==0: PASS"), "{out}");

    // Refused at startup: an unreachable broker would otherwise take --connect-timeout.
    for bad in ["p99<20", "lost==0"] {
        let mut cmd = workload();
        cmd.args([
            "--producer",
            "-x",
            "PLAINTEXT",
            "-s",
            "127.0.0.1:1",
            "--assert",
            bad,
        ]);
        let out = run(cmd, Duration::from_secs(10));
        assert_eq!(out.code(), 3, "{bad}: {out}");
        assert!(out.stderr.contains("invalid --assert"), "{out}");
        assert!(out.elapsed < Duration::from_secs(5), "{out}");
    }
}

/// Hostile records, each written by kcat as one whole message: binary bytes, one of our values
/// cut short, our JSON with wrong types, a value of 1,000,000 bytes, deep nesting, NUL bytes.
/// (kcat sends no message for an empty file; empty values are covered by tests/prop.rs.)
/// The consumer counts them all as foreign and audits its own messages around them.
#[test]
fn truncated_binary_huge_and_mistyped_records_are_foreign_never_a_crash() {
    let topic = unique("audit-hostile");
    create_topic(&topic, 1);
    produce(&topic, 100, None);
    let ours = kcat_read_all(&topic)[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut binary: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    binary[0] = b'{';
    let huge = {
        let mut v = br#"{"timestamp": 1.5, "_id": "h", "origin": "kcat", "content": ""#.to_vec();
        v.resize(1_000_000 - 2, b'x');
        v.extend_from_slice(b"\"}");
        v
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("binary", binary),
        ("truncated", ours.as_bytes()[..ours.len() / 2].to_vec()),
        (
            "wrong-types",
            br#"{"timestamp": "now", "_id": 7, "run_id": 12, "seq": "x", "sent_ns": -1}"#.to_vec(),
        ),
        ("negative-seq", br#"{"run_id": "r", "seq": -5}"#.to_vec()),
        ("huge", huge),
        ("nested", [vec![b'['; 5000], vec![b']'; 5000]].concat()),
        ("nul", b"\0\0\0".to_vec()),
    ];
    let mut cmd = std::process::Command::new("kcat");
    cmd.args(["-b", &bed().plaintext, "-P", "-t", &topic])
        .args(["-X", "message.max.bytes=1100000"]);
    for (name, bytes) in &hostile {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        cmd.arg(&path);
    }
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "kcat produce failed: {out}");
    produce(&topic, 100, None);
    let json = dir.path().join("c.json");
    let out = consume(&topic, 200, &json);
    assert_eq!(out.code(), 0, "{out}");
    let v = read_json(&json);
    assert_follows_schema(&v);
    let a = &v["consumer"]["audit"];
    assert_eq!(a["foreign"].as_u64(), Some(hostile.len() as u64), "{a}");
    // binary, truncated, nested, nul; the other three are JSON objects, just not ours.
    assert_eq!(a["not_json"].as_u64(), Some(4), "{a}");
    assert_eq!(v["consumer"]["records"], 200 + hostile.len() as u64, "{v}");
    assert_eq!(a["lost"].as_u64(), Some(0), "{a}");
    assert_eq!(a["duplicates"].as_u64(), Some(0), "{a}");
    assert_eq!(a["runs"].as_object().map(|r| r.len()), Some(2), "{a}");
}
