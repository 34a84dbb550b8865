//! Drop-in behaviour of client.py against the real test bed: every listener and security mode,
//! credential sources and their precedence, the error cases, and clean shutdown. What we produce
//! is read back by kcat (an independent client); what kcat produces is read by our consumer.

use std::process::Command;
use std::time::Duration;

use crate::fixture::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Our binary as a Charmed-style SCRAM user on the SASL_PLAINTEXT listener.
fn as_user(user: &User, servers: &str, topic: &str) -> Command {
    let mut cmd = workload();
    cmd.args([
        "-s",
        servers,
        "-u",
        &user.name,
        "-p",
        &user.password,
        "-t",
        topic,
    ]);
    cmd
}

fn produce_then_check_with_kcat(mut cmd: Command, topic: &str, n: usize) {
    cmd.args([
        "--producer",
        "--num-partitions",
        "3",
        "-r",
        "1",
        "-n",
        &n.to_string(),
    ]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "producer failed: {out}");
    let values = json_values(&kcat_read_all(topic));
    assert_eq!(values.len(), n, "kcat read {} of {n} records", values.len());
    let mut contents: Vec<String> = values
        .iter()
        .map(|v| v["content"].as_str().unwrap().to_string())
        .collect();
    contents.sort();
    contents.dedup();
    assert_eq!(contents.len(), n, "contents are not distinct");
    for v in &values {
        assert_eq!(
            v["_id"].as_str().unwrap().len(),
            32,
            "_id is not uuid4 hex: {v}"
        );
        assert!(v["timestamp"].as_f64().unwrap() > 1.7e9);
        assert!(v["origin"].is_string());
    }
}

fn consume_expecting(mut cmd: Command, n: u64) -> Output {
    cmd.args([
        "--consumer",
        "--expect",
        &n.to_string(),
        "--idle-timeout",
        "20",
    ]);
    run(cmd, LIMIT)
}

#[test]
fn scram_user_produces_on_9092_and_kcat_reads_every_message() {
    let topic = unique("t9092");
    let user = bed().user(&topic, "producer,consumer");
    produce_then_check_with_kcat(as_user(&user, &bed().sasl_plaintext, &topic), &topic, 500);
    let out = consume_expecting(as_user(&user, &bed().sasl_plaintext, &topic), 500);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("audit: CLEAN"), "{out}");
    assert!(
        out.stdout.contains(&format!("group={}-1", user.name)),
        "group id is not <username>-1: {out}"
    );
}

#[test]
fn scram_user_produces_and_consumes_over_sasl_ssl_on_9093_with_the_ca() {
    let topic = unique("t9093");
    let user = bed().user(&topic, "producer,consumer");
    let ca = bed().ca_file.to_string_lossy().into_owned();
    let mut cmd = as_user(&user, &bed().sasl_ssl, &topic);
    cmd.args(["-x", "SASL_SSL", "--cafile-path", &ca]);
    produce_then_check_with_kcat(cmd, &topic, 300);
    let mut cmd = as_user(&user, &bed().sasl_ssl, &topic);
    cmd.args(["-x", "SASL_SSL", "--cafile-path", &ca]);
    let out = consume_expecting(cmd, 300);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("protocol=SASL_SSL"), "{out}");
}

#[test]
fn mtls_principal_produces_and_consumes_on_9094() {
    let topic = unique("t9094");
    let grant = bed().grant_mtls(&topic, "producer,consumer");
    let tls = |cmd: &mut Command| {
        cmd.args(["-s", &bed().ssl, "-t", &topic, "-x", "SSL"]);
        cmd.arg("--cafile-path").arg(&bed().ca_file);
        cmd.arg("--certfile-path").arg(&bed().cert_file);
        cmd.arg("--keyfile-path").arg(&bed().key_file);
    };
    let mut cmd = workload();
    tls(&mut cmd);
    produce_then_check_with_kcat(cmd, &topic, 200);
    let mut cmd = workload();
    tls(&mut cmd);
    // No username under mTLS, so the group prefix must be given: the one the grant covers.
    cmd.args(["-c", &format!("{grant}-")]);
    let out = consume_expecting(cmd, 200);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("audit: CLEAN"), "{out}");
}

#[test]
fn our_consumer_reads_client_py_json_that_kcat_produced() {
    let topic = unique("tforeign");
    create_topic(&topic, 2);
    let lines: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"timestamp": 1768919219.{i:06}, "_id": "{:032x}", "origin": "kcat", "content": "Message #{i}"}}"#, i))
        .collect();
    kcat_produce(&topic, &lines);
    let user = bed().user(&topic, "consumer");
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args(["--consumer", "--max-records", "50", "--idle-timeout", "20"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("consumer: 50 records"), "{out}");
    assert!(out.stdout.contains("50 foreign"), "{out}");
    assert!(
        out.stdout.contains("content\\\": \\\"Message #0") || out.stdout.contains("Message #0"),
        "record lines missing: {out}"
    );
}

#[test]
fn juju_get_credentials_yaml_supplies_servers_user_password_and_topic() {
    let topic = unique("tjuju");
    let user = bed().user(&topic, "producer,consumer");
    let yaml = format!(
        "kafka:\n  consumer-group-prefix: {u}-\n  endpoints: {s}\n  password: {p}\n  tls: disabled\n  topic: {t}\n  username: {u}\n  version: v0\nok: \"True\"\n",
        u = user.name, s = bed().sasl_plaintext, p = user.password, t = topic
    );
    let (_dir, file) = temp_file("creds.yaml", &yaml);
    let mut cmd = workload();
    cmd.arg("--credentials")
        .arg(&file)
        .args(["--producer", "--consumer", "-n", "100"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout
            .contains("setting=servers source=credentials file"),
        "{out}"
    );
    assert!(out.stdout.contains("audit: CLEAN"), "{out}");
    assert!(!out.all().contains(&user.password), "password leaked");
    assert_eq!(json_values(&kcat_read_all(&topic)).len(), 100);
}

#[test]
fn relation_databag_json_with_tls_ca_selects_sasl_ssl_and_trusts_that_ca() {
    let topic = unique("tbag");
    let user = bed().user(&topic, "producer");
    let ca = std::fs::read_to_string(&bed().ca_file).unwrap();
    let bag = serde_json::json!({
        "endpoints": bed().sasl_ssl, "username": user.name, "password": user.password,
        "tls": "enabled", "tls-ca": ca, "topic": topic, "consumer-group-prefix": format!("{}-", user.name),
    });
    let (_dir, file) = temp_file("databag.json", &bag.to_string());
    let mut cmd = workload();
    cmd.arg("--credentials")
        .arg(&file)
        .args(["--producer", "-n", "40"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("protocol=SASL_SSL"), "{out}");
    assert_eq!(json_values(&kcat_read_all(&topic)).len(), 40);
}

#[test]
fn environment_beats_the_credentials_file_and_a_flag_beats_the_environment() {
    let topic = unique("tprec");
    let user = bed().user(&topic, "producer");
    let yaml = format!(
        "kafka:\n  endpoints: {}\n  username: {}\n  password: wrong-from-file\n  topic: {topic}\n",
        bed().sasl_plaintext,
        user.name
    );
    let (_dir, file) = temp_file("creds.yaml", &yaml);

    // env password over the file's wrong one: works.
    let mut cmd = workload();
    cmd.arg("--credentials")
        .arg(&file)
        .args(["--producer", "-n", "5"])
        .env("KAFKA_WORKLOAD_PASSWORD", &user.password);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout.contains("setting=password source=environment"),
        "{out}"
    );

    // a wrong flag over the right env: refused as an authentication failure.
    let mut cmd = workload();
    cmd.arg("--credentials").arg(&file).args([
        "--producer",
        "-n",
        "5",
        "-p",
        "wrong-from-flag",
        "--connect-timeout",
        "15",
    ]);
    cmd.env("KAFKA_WORKLOAD_PASSWORD", &user.password);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 5, "{out}");
    assert!(out.stdout.contains("setting=password source=flag"), "{out}");

    // a password file (flag) is a flag too.
    let (_d2, pwfile) = temp_file("pw", &format!("{}\n", user.password));
    let mut cmd = workload();
    cmd.arg("--credentials")
        .arg(&file)
        .arg("--password-file")
        .arg(&pwfile)
        .args(["--producer", "-n", "5"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout.contains("setting=password source=password file"),
        "{out}"
    );
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str, within: Duration) {
    assert_eq!(out.code(), code, "{out}");
    assert!(out.elapsed < within, "took {:?}: {out}", out.elapsed);
    let err_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("kafka-workload: error:"))
        .collect();
    assert_eq!(err_lines.len(), 1, "expected one error line: {out}");
    assert!(
        err_lines[0].to_lowercase().contains(needle),
        "error does not name {needle:?}: {}",
        err_lines[0]
    );
}

#[test]
fn unreachable_broker_fails_with_exit_4_within_30_seconds() {
    let mut cmd = workload();
    cmd.args([
        "--producer",
        "-s",
        "127.0.0.1:1",
        "-u",
        "u",
        "-p",
        "secret-pw",
        "--connect-timeout",
        "10",
    ]);
    let out = run(cmd, LIMIT);
    assert_one_line_error(&out, 4, "cannot reach", Duration::from_secs(30));
    assert!(!out.all().contains("secret-pw"));
}

#[test]
fn wrong_password_fails_with_exit_5_within_30_seconds() {
    let topic = unique("twrong");
    let user = bed().user(&topic, "producer");
    let mut cmd = workload();
    cmd.args([
        "--producer",
        "-s",
        &bed().sasl_plaintext,
        "-u",
        &user.name,
        "-p",
        "not-the-password",
        "-t",
        &topic,
    ]);
    let out = run(cmd, LIMIT);
    assert_one_line_error(&out, 5, "authentication", Duration::from_secs(30));
    assert!(
        !out.all().contains("not-the-password"),
        "password leaked: {out}"
    );
}

#[test]
fn topic_not_granted_fails_with_exit_6() {
    let topic = unique("tgranted");
    let user = bed().user(&topic, "producer");
    let other = unique("tother");
    let out = run(
        {
            let mut c = as_user(&user, &bed().sasl_plaintext, &other);
            c.args(["--producer", "-n", "5"]);
            c
        },
        LIMIT,
    );
    assert_one_line_error(&out, 6, "not authorized", Duration::from_secs(60));
}

#[test]
fn consumer_group_outside_the_granted_prefix_fails_with_exit_6() {
    let topic = unique("tgroup");
    let user = bed().user(&topic, "producer,consumer");
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args(["--producer", "-n", "3"]);
    assert_eq!(run(cmd, LIMIT).code(), 0);
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args(["--consumer", "-c", "someone-else-", "--idle-timeout", "30"]);
    let out = run(cmd, LIMIT);
    assert_one_line_error(&out, 6, "group", Duration::from_secs(60));
}

#[test]
fn missing_certificate_file_fails_with_exit_3_naming_the_flag() {
    let mut cmd = workload();
    cmd.args([
        "--producer",
        "-s",
        &bed().ssl,
        "-x",
        "SSL",
        "--cafile-path",
        "/nonexistent/ca.pem",
    ]);
    let out = run(cmd, LIMIT);
    assert_one_line_error(&out, 3, "--cafile-path", Duration::from_secs(5));
}

#[test]
fn malformed_credentials_file_fails_with_exit_3_without_echoing_it() {
    let (_dir, file) = temp_file("bad.yaml", "kafka:\n  password: [hunter2-secret\n");
    let mut cmd = workload();
    cmd.arg("--credentials").arg(&file).arg("--producer");
    let out = run(cmd, LIMIT);
    assert_one_line_error(
        &out,
        3,
        "malformed credentials file",
        Duration::from_secs(5),
    );
    assert!(!out.all().contains("hunter2"), "{out}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let mut cmd = workload();
    cmd.args(["--producer", "-n", "ten"]);
    assert_eq!(run(cmd, LIMIT).code(), 2);
    let mut cmd = workload();
    cmd.args(["-s", "x:1"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("No client type"), "{out}");
    let mut cmd = workload();
    cmd.arg("--help");
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0);
    for flag in [
        "--topic",
        "--username",
        "--password",
        "--consumer-group-prefix",
        "--servers",
        "--security-protocol",
        "--num-messages",
        "--replication-factor",
        "--num-partitions",
        "--producer",
        "--consumer",
        "--cafile-path",
        "--certfile-path",
        "--keyfile-path",
        "--mongo-uri",
        "--origin",
    ] {
        assert!(out.stdout.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn client_py_flag_forms_are_accepted_equals_abbreviations_and_repeats() {
    let topic = unique("tforms");
    let user = bed().user(&topic, "producer");
    let mut cmd = workload();
    cmd.arg(format!("--servers={}", bed().sasl_plaintext))
        .arg(format!("--username={}", user.name))
        .args([
            "-p",
            &user.password,
            "--topic",
            "ignored-first",
            "--topic",
            &topic,
        ])
        .args(["--num-m", "7", "--producer", "-n7"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert_eq!(json_values(&kcat_read_all(&topic)).len(), 7);
}

#[test]
fn sigterm_mid_run_flushes_and_loses_nothing_acknowledged() {
    let topic = unique("tterm");
    let user = bed().user(&topic, "producer");
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    cmd.args([
        "--producer",
        "--num-partitions",
        "3",
        "-r",
        "1",
        "-n",
        "1000000",
        "--rate",
        "3000",
    ])
    .arg("--json")
    .arg(&json);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(6));
    signal(&child, libc::SIGTERM);
    let out = finish(child, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let acked = result["producer"]["acked"].as_u64().unwrap();
    let sent = result["producer"]["sent"].as_u64().unwrap();
    assert!(acked > 1000 && acked < 1_000_000, "acked {acked}");
    assert_eq!(acked, sent, "not everything sent was flushed: {out}");
    let in_topic = json_values(&kcat_read_all(&topic)).len() as u64;
    assert_eq!(
        in_topic, acked,
        "topic holds {in_topic}, producer acknowledged {acked}"
    );
}

#[test]
fn consumer_resumes_from_committed_offsets_after_sigterm() {
    let topic = unique("tresume");
    let user = bed().user(&topic, "producer,consumer");
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args([
        "--producer",
        "--num-partitions",
        "3",
        "-r",
        "1",
        "-n",
        "20000",
    ]);
    assert_eq!(run(cmd, LIMIT).code(), 0);
    // The first consumer is slowed by logging every record, and stopped part-way.
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args(["--consumer", "--log-messages", "all"]);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(8));
    signal(&child, libc::SIGTERM);
    let first = finish(child, LIMIT);
    assert_eq!(first.code(), 0, "{first}");
    assert!(first.stdout.contains("offsets committed"), "{first}");
    let mut cmd = as_user(&user, &bed().sasl_plaintext, &topic);
    cmd.args(["--consumer", "--idle-timeout", "8"]);
    let second = run(cmd, LIMIT);
    assert_eq!(second.code(), 0, "{second}");
    let records = |o: &Output| -> u64 {
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with("consumer: "))
            .unwrap_or_else(|| panic!("{o}"));
        line["consumer: ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (a, b) = (records(&first), records(&second));
    assert!(
        a + b >= 20000,
        "first {a} + second {b} < 20000: lost records"
    );
    assert!(
        b < 20000,
        "the second consumer started from the beginning: {b}"
    );
}

#[test]
fn without_servers_it_runs_on_the_embedded_mock_cluster() {
    let mut cmd = workload();
    cmd.args(["--producer", "--consumer", "-n", "20000"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stdout.contains("mock cluster"), "{out}");
    assert!(
        out.stdout.contains("20000 distinct of 20000 expected"),
        "{out}"
    );
}

#[test]
fn log_file_gets_client_py_format_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("1700000000_producer.log");
    let mut cmd = workload();
    cmd.args(["--producer", "-n", "3"])
        .arg("--log-file")
        .arg(&log);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.contains("Message published to topic=hot-topic, message content: {\"timestamp\": ")
        })
        .unwrap_or_else(|| panic!("{text}"));
    // `2024-01-20 14:53:39,744 INFO [__main__] (<thread>) (produce_message) Message published ...`
    let re_ok =
        line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b' ' && line.as_bytes()[19] == b',';
    assert!(
        re_ok
            && line.contains(" INFO [__main__] (")
            && line.contains(") (produce_message) Message published"),
        "{line}"
    );
}

/// kill -9 in the middle of a run that logs every message: the log file ends with a whole line
/// (each line is one write), and the --json file of an earlier run at the same path is still
/// that whole earlier result (the new one would have replaced it by a rename, all at once).
#[test]
fn kill_9_leaves_whole_log_lines_and_the_previous_complete_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("1700000000_producer.log");
    let json = dir.path().join("result.json");
    let mut first = workload();
    first.args(["--producer", "-n", "50", "--log-messages", "none", "--json"]);
    first.arg(&json);
    let out = run(first, LIMIT);
    assert_eq!(out.code(), 0, "{out}");
    let before = std::fs::read(&json).unwrap();
    let mut cmd = workload();
    cmd.args(["--producer", "--rate", "20000", "-n", "10000000"])
        .args(["--log-messages", "all", "--no-progress", "--json"])
        .arg(&json)
        .arg("--log-file")
        .arg(&log);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(3));
    signal(&child, libc::SIGKILL);
    let out = finish(child, LIMIT);
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let published = text.matches("Message published to topic=").count();
    assert!(
        published > 50,
        "only {published} lines logged before the kill"
    );
    assert!(text.ends_with('\n'), "the log ends in a partial line");
    for line in text.lines() {
        assert!(
            line.len() > 24 && line.as_bytes()[19] == b',' && line.contains(" ["),
            "not a whole log line: {line:?}"
        );
    }
    assert_eq!(
        std::fs::read(&json).unwrap(),
        before,
        "the earlier result changed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Partitions take turns of one batch's worth of messages (src/kafka/topic.rs): 40,000 unpaced
/// values of 1 KiB (976 a turn: librdkafka's 1 MB batch.size) over 4 partitions, read back by
/// kcat with each record's partition. In sequence order, no run of consecutive messages on one
/// partition is longer than a turn, there are at least the 41 turns the count needs, and every
/// partition has its share. librdkafka's sticky partitioner, which keeps a partition for 10 ms,
/// would put ten thousand and more in a row on one partition at this rate.
#[test]
fn an_unpaced_producer_gives_the_partitions_turns_of_one_batch_each() {
    let topic = unique("turns");
    create_topic(&topic, 4);
    let n = 40_000usize;
    let mut cmd = workload();
    cmd.args([
        "-s",
        &bed().plaintext,
        "-x",
        "PLAINTEXT",
        "-t",
        &topic,
        "--producer",
    ])
    .args(["-n", &n.to_string(), "--message-size", "1024"])
    .args(["--log-messages", "none", "--no-progress"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.code(), 0, "producer failed: {out}");

    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &bed().plaintext, "-C", "-t", &topic, "-e", "-q"])
        .args(["-o", "beginning", "-f", "%p:%s\\n"]);
    let read = run(kcat, Duration::from_secs(60));
    assert!(read.status.success(), "kcat failed: {read}");
    let mut by_seq: Vec<(u64, i32)> = read
        .stdout
        .lines()
        .map(|line| {
            let (p, value) = line.split_once(':').expect("partition:value");
            let v: serde_json::Value = serde_json::from_str(value).expect("a JSON value");
            (
                v["seq"].as_u64().expect("seq"),
                p.parse().expect("partition"),
            )
        })
        .collect();
    assert_eq!(by_seq.len(), n, "kcat read {} of {n} records", by_seq.len());
    by_seq.sort_unstable();

    let mut runs = vec![1usize];
    for w in by_seq.windows(2) {
        if w[1].1 == w[0].1 {
            *runs.last_mut().unwrap() += 1;
        } else {
            runs.push(1);
        }
    }
    let longest = runs.iter().max().copied().unwrap_or(0);
    assert!(
        longest <= 976,
        "{longest} messages in a row on one partition (a turn is 976)"
    );
    assert!(
        runs.len() >= 41,
        "only {} turns for {n} messages of 976 a turn",
        runs.len()
    );
    for p in 0..4 {
        let share = by_seq.iter().filter(|(_, q)| *q == p).count();
        assert!(
            (n * 15 / 100..=n * 35 / 100).contains(&share),
            "partition {p} has {share} of {n} messages: {runs:?}"
        );
    }
}
