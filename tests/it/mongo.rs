//! The MongoDB sink against the test bed's FerretDB: client.py's documents, one per message and
//! collection, replays absorbed, groups kept apart, outages ridden out or ended with exit code 9.
//!
//! Documents are read back with the `mongodb` crate and counted again with pymongo (the test
//! bed's venv) as an independent reader; Kafka's own content is read with kcat. Tests that stop
//! FerretDB hold an exclusive file lock, the others a shared one, so that no test (in this or a
//! concurrent test process) sees an outage it did not cause.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use crate::fixture::{bed, finish, kcat_read_all, repo, run, signal, spawn, unique, workload};

/// Held while a test uses FerretDB: shared, or exclusive for a test that stops it.
struct DbLock(#[allow(dead_code)] std::fs::File);

fn db_lock(exclusive: bool) -> DbLock {
    let path = std::env::temp_dir().join("kafka-workload-it-mongo.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("open the lock file");
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock(2) on a descriptor we own; released when the file is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    assert_eq!(rc, 0, "flock failed");
    DbLock(file)
}

/// Starts FerretDB again when dropped, so a failing test does not leave it stopped.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        test_bed(&["mongo-start"]);
    }
}

fn test_bed(args: &[&str]) {
    let out = Command::new(&bed().script)
        .args(args)
        .output()
        .expect("run scripts/test-bed");
    assert!(
        out.status.success(),
        "scripts/test-bed {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mongo_uri() -> &'static str {
    bed()
        .mongo_uri
        .as_deref()
        .expect("MONGO_URI is not set: the test bed has no FerretDB (scripts/test-bed up)")
}

/// Our binary on the open listener with the sink on.
fn with_mongo(topic: &str) -> Command {
    let mut cmd = workload();
    cmd.args(["-x", "PLAINTEXT", "-s", &bed().plaintext, "-t", topic])
        .args([
            "--no-progress",
            "--log-messages",
            "3",
            "--mongo-uri",
            mongo_uri(),
        ]);
    cmd
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every document of a collection, read with the mongodb crate.
fn documents(db: &str, collection: &str) -> Vec<Document> {
    block_on(async {
        let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
        let coll = client.database(db).collection::<Document>(collection);
        coll.find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    })
}

fn count(db: &str, collection: &str) -> u64 {
    block_on(async {
        let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
        let coll = client.database(db).collection::<Document>(collection);
        coll.count_documents(doc! {}).await.unwrap()
    })
}

/// The count pymongo sees, as an independent reader.
fn pymongo_count(db: &str, collection: &str) -> u64 {
    let script = "import sys, pymongo\n\
                  c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)\n\
                  print(c[sys.argv[2]][sys.argv[3]].count_documents({}))";
    let out = Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script, mongo_uri(), db, collection])
        .output()
        .expect("run pymongo");
    assert!(
        out.status.success(),
        "pymongo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Waits until `db.collection` holds `at_least` documents while `child` runs; if the child ends
/// first or the time runs out, kills it and fails with its output. Nobody reads the child's
/// pipes meanwhile, so it must log little (`--log-messages 3`) or it blocks on a full pipe.
fn wait_for_count(mut child: Child, db: &str, collection: &str, at_least: u64) -> Child {
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    loop {
        let n = count(db, collection);
        if n >= at_least {
            return child;
        }
        let exited = child.try_wait().expect("wait").is_some();
        if exited || started.elapsed() > limit {
            let _ = child.kill();
            let out = finish(child, Duration::from_secs(10));
            panic!(
                "{db}.{collection} has {n} of {at_least} documents after {:?}:\n{out}",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Drops a test's database once it has passed (a failed test leaves it to look at).
fn drop_database(db: &str) {
    block_on(async {
        let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
        client.database(db).drop().await.unwrap();
    })
}

/// The `_id`s of the JSON messages in the topic, read with kcat.
fn kafka_ids(topic: &str) -> BTreeSet<String> {
    kcat_read_all(topic)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["_id"].as_str().unwrap().to_string())
        .collect()
}

fn strings(docs: &[Document], field: &str) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d.get_str(field).unwrap().to_string())
        .collect()
}

fn json_result(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn every_acknowledged_and_consumed_message_has_one_document_in_each_collection() {
    let _lock = db_lock(false);
    let topic = unique("mongo-all");
    let group = unique("g");
    let mut cmd = with_mongo(&topic);
    cmd.args([
        "--producer",
        "--consumer",
        "-n",
        "500",
        "--num-partitions",
        "3",
        "-r",
        "1",
    ])
    .args(["--group-id", &group]);
    let out = run(cmd, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("insert message in collection"), "{out}");

    let produced = documents(&topic, "producer");
    let consumed = documents(&topic, "consumer");
    assert_eq!((produced.len(), consumed.len()), (500, 500));
    let in_kafka = kafka_ids(&topic);
    assert_eq!(strings(&produced, "_id"), in_kafka);
    assert_eq!(strings(&consumed, "message_id"), in_kafka);

    let keys: Vec<&str> = produced[0].keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "timestamp", "origin", "content"]);
    let produced_at: BTreeMap<String, f64> = produced
        .iter()
        .map(|d| {
            let id = d.get_str("_id").unwrap().to_string();
            (id, d.get_f64("timestamp").unwrap())
        })
        .collect();
    for d in &consumed {
        let id = d.get_str("message_id").unwrap();
        assert_eq!(d.get_str("_id").unwrap(), format!("{group}:{id}"));
        assert_eq!(d.get_str("consumer_group").unwrap(), group);
        assert!(d.get_str("destination").is_ok() && d.get_str("origin").is_ok());
        assert!(d.get_str("content").unwrap().starts_with("Message #"));
        assert_eq!(d.get_f64("timestamp").unwrap(), produced_at[id]);
        assert!(d.get_f64("consumed_at").unwrap() >= produced_at[id]);
    }
    assert_eq!(pymongo_count(&topic, "producer"), 500);
    assert_eq!(pymongo_count(&topic, "consumer"), 500);
    drop_database(&topic);
}

#[test]
fn a_consumer_killed_before_committing_replays_into_duplicates_not_new_documents() {
    let _lock = db_lock(false);
    let topic = unique("mongo-replay");
    let group = unique("g");
    let mut produce = workload();
    produce
        .args(["-x", "PLAINTEXT", "-s", &bed().plaintext, "-t", &topic])
        .args([
            "--producer",
            "-n",
            "300",
            "--num-partitions",
            "2",
            "-r",
            "1",
        ])
        .args(["--no-progress", "--log-messages", "0"]);
    let out = run(produce, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out}");

    // Stores every document, never commits (no auto commit for 10 min), then dies.
    let mut first = with_mongo(&topic);
    first
        .args(["--consumer", "--group-id", &group])
        .args(["-X", "auto.commit.interval.ms=600000"]);
    let child = wait_for_count(spawn(first), &topic, "consumer", 300);
    signal(&child, libc::SIGKILL);
    let _ = finish(child, Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let mut second = with_mongo(&topic);
    second
        .args(["--consumer", "--group-id", &group, "--expect", "300"])
        .arg("--json")
        .arg(&json);
    let out = run(second, Duration::from_secs(90));
    assert_eq!(out.code(), 0, "{out}");
    let sink = &json_result(&json)["mongo"]["consumer"];
    assert_eq!(
        (sink["written"].as_u64(), sink["duplicates"].as_u64()),
        (Some(0), Some(300)),
        "{out}"
    );
    assert!(out.stdout.contains("Duplicated key with id: "), "{out}");
    assert_eq!(count(&topic, "consumer"), 300);
    assert_eq!(pymongo_count(&topic, "consumer"), 300);
    drop_database(&topic);
}

#[test]
fn two_consumer_groups_on_one_topic_are_recorded_separately() {
    let _lock = db_lock(false);
    let topic = unique("mongo-groups");
    let mut produce = with_mongo(&topic);
    produce.args([
        "--producer",
        "-n",
        "200",
        "--num-partitions",
        "2",
        "-r",
        "1",
    ]);
    let out = run(produce, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out}");

    let groups = [unique("ga"), unique("gb")];
    for group in &groups {
        let mut consume = with_mongo(&topic);
        consume.args(["--consumer", "--group-id", group, "--expect", "200"]);
        let out = run(consume, Duration::from_secs(90));
        assert_eq!(out.code(), 0, "{out}");
    }

    let produced = strings(&documents(&topic, "producer"), "_id");
    assert_eq!(produced.len(), 200);
    let consumed = documents(&topic, "consumer");
    assert_eq!(consumed.len(), 400);
    for group in &groups {
        let mine: Vec<Document> = consumed
            .iter()
            .filter(|d| d.get_str("consumer_group").unwrap() == group)
            .cloned()
            .collect();
        assert_eq!(strings(&mine, "message_id"), produced, "group {group}");
    }
    assert_eq!(pymongo_count(&topic, "consumer"), 400);
    drop_database(&topic);
}

#[test]
fn a_topic_with_a_dot_is_recorded_in_the_database_named_with_an_underscore() {
    let _lock = db_lock(false);
    let topic = unique("mongo.dotted");
    let mut cmd = with_mongo(&topic);
    cmd.args(["--producer", "-n", "20", "--num-partitions", "1", "-r", "1"]);
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), 0, "{out}");
    let database = topic.replace('.', "_");
    assert_eq!(count(&database, "producer"), 20);
    assert_eq!(pymongo_count(&database, "producer"), 20);
    drop_database(&database);
}

#[test]
fn a_database_outage_shorter_than_the_bound_loses_no_document() {
    let _lock = db_lock(true);
    let topic = unique("mongo-outage");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let mut cmd = with_mongo(&topic);
    cmd.args(["--producer", "--consumer", "-n", "3000", "--rate", "300"])
        .args([
            "--num-partitions",
            "3",
            "-r",
            "1",
            "--group-id",
            &unique("g"),
        ])
        .arg("--json")
        .arg(&json);
    let child = wait_for_count(spawn(cmd), &topic, "producer", 300);
    {
        let _restart = RestartOnDrop;
        test_bed(&["mongo-stop"]);
        std::thread::sleep(Duration::from_secs(5));
    }
    let out = finish(child, Duration::from_secs(180));
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout.contains("MongoDB write failed; retrying"),
        "{out}"
    );

    let in_kafka = kafka_ids(&topic);
    assert_eq!(in_kafka.len(), 3000);
    assert_eq!(strings(&documents(&topic, "producer"), "_id"), in_kafka);
    assert_eq!(
        strings(&documents(&topic, "consumer"), "message_id"),
        in_kafka
    );
    assert_eq!(pymongo_count(&topic, "producer"), 3000);
    assert_eq!(pymongo_count(&topic, "consumer"), 3000);
    let result = json_result(&json);
    let retries = result["mongo"]["producer"]["retries"].as_u64().unwrap()
        + result["mongo"]["consumer"]["retries"].as_u64().unwrap();
    assert!(retries > 0, "the outage was not noticed: {result}");
    drop_database(&topic);
}

#[test]
fn a_database_down_past_the_bound_exits_9_with_one_line_without_the_password() {
    let _lock = db_lock(true);
    let topic = unique("mongo-down");
    let group = unique("g");
    let password = "Pw-s3cret-kw-it";
    // FerretDB's SQLite backend takes any PLAIN credentials: enough to put a password in the URI.
    let uri = format!(
        "mongodb://kw-user:{password}@{}",
        mongo_uri()
            .trim_start_matches("mongodb://")
            .replace('?', "?authMechanism=PLAIN&")
    );
    let mut cmd = workload();
    cmd.args(["-x", "PLAINTEXT", "-s", &bed().plaintext, "-t", &topic])
        .args(["--producer", "--consumer", "-n", "1000000", "--rate", "500"])
        .args(["--num-partitions", "2", "-r", "1", "--group-id", &group])
        .args([
            "--no-progress",
            "--log-messages",
            "3",
            "--mongo-uri",
            &uri,
            "--mongo-timeout",
            "3",
        ]);
    let child = wait_for_count(spawn(cmd), &topic, "consumer", 200);
    let out = {
        let _restart = RestartOnDrop;
        test_bed(&["mongo-stop"]);
        finish(child, Duration::from_secs(60))
    };
    assert_eq!(out.code(), 9, "{out}");
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 1, "{out}");
    assert!(
        stderr[0].starts_with("kafka-workload: error: MongoDB: ")
            && stderr[0].contains("--mongo-timeout"),
        "{out}"
    );
    assert!(!out.all().contains(password), "the password leaked:\n{out}");

    // Offsets of records never stored stayed uncommitted: the same group, run again, fills the
    // consumer collection with every message Kafka holds.
    let mut again = with_mongo(&topic);
    again.args(["--consumer", "--group-id", &group, "--idle-timeout", "5"]);
    let out = run(again, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out}");
    let stored = strings(&documents(&topic, "consumer"), "message_id");
    let in_kafka = kafka_ids(&topic);
    let missing: Vec<&String> = in_kafka.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} messages never stored",
        missing.len()
    );
    drop_database(&topic);
}

#[test]
fn refused_mongodb_credentials_fail_at_once_with_exit_9_without_the_password() {
    let _lock = db_lock(false);
    let password = "Pw-refused-kw-it";
    // FerretDB's SQLite backend refuses SCRAM, the driver's default mechanism.
    let uri = format!(
        "mongodb://kw-user:{password}@{}",
        mongo_uri().trim_start_matches("mongodb://")
    );
    let mut cmd = workload();
    cmd.args([
        "-x",
        "PLAINTEXT",
        "-s",
        &bed().plaintext,
        "-t",
        &unique("mongo-auth"),
    ])
    .args(["--producer", "-n", "10", "--num-partitions", "1", "-r", "1"])
    .args(["--no-progress", "--log-messages", "3", "--mongo-uri", &uri]);
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), 9, "{out}");
    assert!(
        out.elapsed < Duration::from_secs(30),
        "retried a refusal: {out}"
    );
    assert!(
        out.stderr.contains("AuthenticationFailed") || out.stderr.contains("authentication"),
        "{out}"
    );
    assert!(!out.all().contains(password), "the password leaked:\n{out}");
}
