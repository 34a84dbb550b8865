//! Exactly-once workloads on the real broker: transactions with aborts on purpose audited in the
//! same run, read_committed and read_uncommitted consumers, a transactional producer killed with
//! SIGKILL mid-transaction, and fencing. What reached the log is checked again with
//! confluent-kafka (Python, librdkafka 2.x, its own client) in each isolation level.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::*;

/// Our binary on the SCRAM listener as the admin, producing to or consuming from `topic`.
fn as_admin(topic: &str) -> Command {
    let b = bed();
    let mut cmd = workload();
    cmd.args([
        "-s",
        &b.sasl_plaintext,
        "-u",
        &b.admin_user,
        "-p",
        &b.admin_password,
    ])
    .args(["-t", topic, "--log-messages", "none", "--no-progress"]);
    cmd
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `[[start, end), ...]` ranges from the result JSON as a set of sequence numbers.
fn seqs(ranges: &serde_json::Value) -> BTreeSet<u64> {
    ranges
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r[0].as_u64().unwrap()..r[1].as_u64().unwrap())
        .collect()
}

/// Every kafka-workload record of `topic` as confluent-kafka reads it in `isolation`, through
/// the open listener: run id -> sequence numbers (with duplicates kept out, counted apart).
fn confluent_read(topic: &str, isolation: &str) -> BTreeMap<String, BTreeSet<u64>> {
    let script = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
servers, topic, isolation = sys.argv[1:4]
c = Consumer({"bootstrap.servers": servers, "group.id": "independent-" + str(time.time()),
              "isolation.level": isolation, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": True})
md = c.list_topics(topic, timeout=30).topics[topic]
parts = sorted(md.partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
done, out, deadline = set(), {}, time.time() + 60
while len(done) < len(parts) and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        if m.error().code() == -191:  # _PARTITION_EOF
            done.add(m.partition())
            continue
        raise SystemExit("consume error: %s" % m.error())
    v = json.loads(m.value())
    out.setdefault(v["run_id"], []).append(v["seq"])
c.close()
if len(done) < len(parts):
    raise SystemExit("did not reach the end of every partition")
print(json.dumps(out))
"#;
    let out = Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script, &bed().plaintext, topic, isolation])
        .output()
        .expect("run confluent-kafka");
    assert!(
        out.status.success(),
        "confluent-kafka read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, Vec<u64>> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|(run, s)| (run, s.into_iter().collect()))
        .collect()
}

#[test]
fn a_transactional_round_trip_with_aborts_is_clean_and_names_committed_and_aborted_ranges() {
    let topic = unique("txn-rt");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut cmd = as_admin(&topic);
    cmd.args(["--producer", "--consumer", "-n", "2000", "--transactional"])
        .args(["--txn-size", "100", "--abort-rate", "0.1", "--json"])
        .arg(&json);
    let out = run(cmd, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("audit: CLEAN"), "{out}");
    assert!(
        out.stdout.contains("committed: 0-899, 1000-1899")
            && out.stdout.contains("aborted:   900-999, 1900-1999"),
        "{out}"
    );

    let r = read_json(&json);
    crate::audit::assert_follows_schema(&r);
    let t = &r["producer"]["transactions"];
    assert_eq!(
        (t["committed"].as_u64(), t["aborted"].as_u64()),
        (Some(18), Some(2))
    );
    assert_eq!(t["in_doubt_from"], serde_json::Value::Null);
    assert_eq!(t["commit_latency"]["count"], 18);
    let committed = seqs(&t["committed_seqs"]);
    let aborted = seqs(&t["aborted_seqs"]);
    assert_eq!((committed.len(), aborted.len()), (1800, 200));
    let a = &r["consumer"]["audit"];
    assert_eq!(a["verdict"], "clean");
    assert_eq!(r["consumer"]["isolation"], "read_committed");
    assert_eq!(
        (a["lost"].as_u64(), a["aborted_read"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["consumer"]["records"], 1800);

    // confluent-kafka agrees: read_committed sees exactly the committed ones, read_uncommitted
    // sees the aborted ones too (they reached the log before the abort).
    let run_id = r["run_id"].as_str().unwrap();
    let rc = confluent_read(&topic, "read_committed");
    assert_eq!(rc.get(run_id), Some(&committed));
    let ru = confluent_read(&topic, "read_uncommitted");
    let all: BTreeSet<u64> = committed.union(&aborted).copied().collect();
    assert_eq!(ru.get(run_id), Some(&all));
}

#[test]
fn a_read_uncommitted_consumer_counts_the_aborted_records_it_saw() {
    let topic = unique("txn-ru");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut cmd = as_admin(&topic);
    cmd.args(["--producer", "--consumer", "-n", "1000", "--transactional"])
        .args(["--txn-size", "50", "--abort-rate", "0.2"])
        .args(["--isolation", "read_uncommitted", "--json"])
        .arg(&json);
    let out = run(cmd, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out}");
    let r = read_json(&json);
    crate::audit::assert_follows_schema(&r);
    let a = &r["consumer"]["audit"];
    assert_eq!(a["verdict"], "clean", "{out}");
    assert_eq!(r["consumer"]["isolation"], "read_uncommitted");
    let aborted = r["producer"]["transactions"]["aborted_messages"]
        .as_u64()
        .unwrap();
    assert_eq!(aborted, 200);
    // Every aborted record was written before its abort; the consumer may stop as soon as the
    // committed ones are in, so it saw at most all of them, and says how many.
    let seen = a["aborted_read"].as_u64().unwrap();
    assert!(seen > 0 && seen <= aborted, "aborted_read {seen}: {out}");
    assert!(
        out.stdout
            .contains(&format!("{seen} records of {aborted} aborted read")),
        "{out}"
    );
}

#[test]
fn a_producer_killed_mid_transaction_leaves_it_to_the_broker_and_the_audit_says_it_was_aborted() {
    let topic = unique("txn-kill");
    let txn_id = unique("txn-id");
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, c) = (
        dir.path().join("p1.json"),
        dir.path().join("p2.json"),
        dir.path().join("c.json"),
    );
    let mut cmd = as_admin(&topic);
    cmd.args([
        "--producer",
        "--transactional-id",
        &txn_id,
        "--txn-size",
        "2000",
    ])
    .args(["--rate", "2000", "--duration", "60", "--json"])
    .arg(&p1);
    let child = spawn(cmd);
    // Transactions of 1 s of sends and a commit of a few ms: the checkpoint is written right
    // after each commit, so 300 ms after one appears the next transaction is surely open.
    let started = Instant::now();
    loop {
        let settled = std::fs::read(&p1)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["producer"]["transactions"]["committed"].as_u64())
            .unwrap_or(0);
        if settled >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no checkpoint with 2 committed transactions"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGKILL);
    let killed = finish(child, Duration::from_secs(10));
    assert!(killed.status.code().is_none(), "not killed: {killed}");
    let checkpoint = read_json(&p1);
    crate::audit::assert_follows_schema(&checkpoint);
    let run1 = checkpoint["run_id"].as_str().unwrap().to_string();
    let ct = &checkpoint["producer"]["transactions"];
    let in_doubt_from = ct["in_doubt_from"]
        .as_u64()
        .expect("a checkpoint is in doubt at its top");
    let recorded = seqs(&ct["committed_seqs"]);

    // Before anyone fences it, the open transaction's records are in the log but uncommitted.
    let uncommitted = confluent_read(&topic, "read_uncommitted")[&run1].clone();
    let top = *uncommitted.iter().max().unwrap();
    assert!(top >= in_doubt_from, "nothing written past the checkpoint");

    // A new producer with the same transactional id fences the dead one: the broker aborts its
    // open transaction.
    let mut cmd = as_admin(&topic);
    cmd.args([
        "--producer",
        "--transactional-id",
        &txn_id,
        "-n",
        "10",
        "--json",
    ])
    .arg(&p2);
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out}");

    let mut cmd = as_admin(&topic);
    cmd.args(["--consumer", "--idle-timeout", "4", "--json"])
        .arg(&c);
    let out = run(cmd, Duration::from_secs(90));
    assert_eq!(out.code(), 0, "{out}");

    let mut cmd = workload();
    cmd.arg("merge").args([&p1, &p2, &c]);
    let merged = run(cmd, Duration::from_secs(30));
    assert_eq!(merged.code(), 0, "{merged}");
    assert!(merged.stdout.contains("audit: CLEAN"), "{merged}");
    assert!(
        merged
            .stdout
            .contains(&format!("in doubt from {in_doubt_from}")),
        "{merged}"
    );
    assert!(merged.stdout.contains("aborted by the broker"), "{merged}");

    // confluent-kafka in read_committed: every recorded commit is there, the open transaction
    // (the top of what was written) is not; our consumer read exactly the same.
    let committed = confluent_read(&topic, "read_committed")[&run1].clone();
    assert!(recorded.is_subset(&committed));
    assert!(
        !committed.contains(&top),
        "the open transaction's last record {top} was committed"
    );
    let aborted_by_broker = uncommitted.difference(&committed).count();
    assert!(aborted_by_broker > 0);
    let consumer = read_json(&c);
    let ours = seqs(&consumer["consumer"]["audit"]["runs"][&run1]["seen"]);
    assert_eq!(ours, committed);
    eprintln!(
        "killed producer: {} recorded committed, in doubt from {in_doubt_from}, {} committed after it, {aborted_by_broker} aborted by the broker",
        recorded.len(),
        committed.len() - recorded.len()
    );
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first_with_exit_10() {
    let topic = unique("txn-fence");
    let txn_id = unique("txn-id");
    let mut cmd = as_admin(&topic);
    cmd.args([
        "--producer",
        "--transactional-id",
        &txn_id,
        "--rate",
        "1000",
    ])
    .args(["--duration", "30"]);
    let first = spawn(cmd);
    std::thread::sleep(Duration::from_secs(4));
    let mut cmd = as_admin(&topic);
    cmd.args(["--producer", "--transactional-id", &txn_id, "-n", "10"]);
    let second = run(cmd, Duration::from_secs(60));
    assert_eq!(second.code(), 0, "{second}");
    let first = finish(first, Duration::from_secs(30));
    assert_eq!(first.code(), 10, "{first}");
    let last = first.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kafka-workload: error:")
            && last.contains("fenced")
            && last.contains(&txn_id),
        "{first}"
    );
}

#[test]
fn a_user_without_a_transactional_id_grant_is_refused_with_exit_6() {
    let topic = unique("txn-acl");
    let user = bed().user(&topic, "producer");
    let mut cmd = workload();
    cmd.args([
        "-s",
        &bed().sasl_plaintext,
        "-u",
        &user.name,
        "-p",
        &user.password,
    ])
    .args(["-t", &topic, "--producer", "--transactional", "-n", "10"])
    .args(["--connect-timeout", "10"]);
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), 6, "{out}");
    assert!(
        out.all().contains("TransactionalIdAuthorizationFailed") || out.all().contains("authoriz"),
        "{out}"
    );
    assert!(!out.all().contains(&user.password));
}
