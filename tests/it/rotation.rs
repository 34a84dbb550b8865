//! Credential rotation while running: the broker's SASL_SSL listener makes sessions
//! re-authenticate every 15 s, so a client that kept the old password would be refused after
//! the change. Also data-integrator's rotation to a new user, and credentials that do not work.

use std::time::Duration;

use crate::fixture::*;

#[test]
fn producer_keeps_running_across_a_password_rotation_from_its_password_file() {
    let topic = unique("trotate");
    let user = bed().user(&topic, "producer");
    let (dir, pwfile) = temp_file("pw", &format!("{}\n", user.password));
    let json = dir.path().join("r.json");
    let mut cmd = workload();
    cmd.args([
        "--producer",
        "-s",
        &bed().sasl_ssl,
        "-x",
        "SASL_SSL",
        "-u",
        &user.name,
        "-t",
        &topic,
    ])
    .arg("--cafile-path")
    .arg(&bed().ca_file)
    .arg("--password-file")
    .arg(&pwfile)
    .args([
        "--num-partitions",
        "2",
        "-r",
        "1",
        "--rate",
        "200",
        "-n",
        "7000",
    ])
    .arg("--json")
    .arg(&json);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(5));
    let new_password = format!("rotated-{}", unique("pw"));
    bed().set_password(&user, &topic, "producer", &new_password);
    std::fs::write(&pwfile, format!("{new_password}\n")).unwrap();
    let out = finish(child, Duration::from_secs(180));
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout
            .contains("password changed and accepted by the brokers: new connections use it"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("rotated password applied to the client"),
        "{out}"
    );
    assert!(
        !out.all().contains(&new_password) && !out.all().contains(&user.password),
        "a password was logged"
    );
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(result["producer"]["acked"], 7000, "{out}");
    assert_eq!(json_values(&kcat_read_all(&topic)).len(), 7000);
}

/// data-integrator's credentials YAML for `user`.
fn credentials_yaml(user: &User, topic: &str, prefix: &str) -> String {
    format!(
        "kafka:\n  endpoints: {}\n  username: {}\n  password: {}\n  topic: {topic}\n  consumer-group-prefix: {prefix}\n  tls: disabled\n",
        bed().sasl_plaintext, user.name, user.password
    )
}

/// Rewrites `path` all at once, as an agent writing a new databag would.
fn replace_file(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn producer_and_consumer_move_to_a_new_user_and_survive_the_old_ones_removal() {
    let topic = unique("tnewuser");
    create_topic(&topic, 3);
    let prefix = format!("{}-", unique("g"));
    let old = bed().user_with_group_prefix(&topic, "producer,consumer", &prefix);
    let new = bed().user_with_group_prefix(&topic, "producer,consumer", &prefix);
    let (dir, creds) = temp_file("creds.yaml", &credentials_yaml(&old, &topic, &prefix));
    let json = dir.path().join("r.json");
    let mut cmd = workload();
    cmd.args(["--producer", "--consumer", "--credentials"])
        .arg(&creds)
        // Output is read only at the end: few lines, so the pipe never fills and blocks us.
        .args([
            "--rate",
            "400",
            "-n",
            "6000",
            "--log-messages",
            "none",
            "--json",
        ])
        .arg(&json);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(4));
    replace_file(&creds, &credentials_yaml(&new, &topic, &prefix));
    // The watch reads the file within 2 s and tries the new user; the loops move within a
    // second of that. Then the old user goes, grants and all.
    std::thread::sleep(Duration::from_secs(5));
    bed().delete_user(&old);
    let out = finish(child, Duration::from_secs(120));
    assert_eq!(out.code(), 0, "{out}");
    for line in [
        "new user accepted by the brokers: the clients move to it",
        "producer moved to the new user",
        "consumer moved to the new user: rejoining the group",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in\n{out}");
    }
    assert!(
        !out.all().contains(&old.password) && !out.all().contains(&new.password),
        "a password was logged"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["producer"]["acked"], 6000, "{out}");
    assert_eq!(r["producer"]["failed"], 0, "{out}");
    let audit = &r["consumer"]["audit"];
    assert_eq!(audit["verdict"], "clean", "{out}");
    assert_eq!(audit["lost"], 0, "{out}");
    // The old client committed synchronously before leaving: nothing is read twice.
    assert_eq!(audit["duplicates"], 0, "{out}");
    // The independent reader finds every message once.
    let values = json_values(&kcat_read_all(&topic));
    let seqs: std::collections::BTreeSet<u64> =
        values.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert_eq!((values.len(), seqs.len()), (6000, 6000));
}

#[test]
fn refused_new_credentials_keep_the_working_connections_and_then_exit_5_once_nothing_works() {
    let topic = unique("tbadrot");
    let user = bed().user(&topic, "producer");
    let (dir, pwfile) = temp_file("pw", &format!("{}\n", user.password));
    let json = dir.path().join("r.json");
    let mut cmd = workload();
    cmd.args([
        "--producer",
        "-s",
        &bed().sasl_ssl,
        "-x",
        "SASL_SSL",
        "-u",
        &user.name,
        "-t",
        &topic,
        "--num-partitions",
        "1",
        "-r",
        "1",
        "--rate",
        "100",
        "-n",
        "100000",
        "--connect-timeout",
        "5",
        "--delivery-timeout",
        "8",
        "--log-messages",
        "none",
    ])
    .arg("--cafile-path")
    .arg(&bed().ca_file)
    .arg("--password-file")
    .arg(&pwfile)
    .arg("--json")
    .arg(&json);
    let child = spawn(cmd);
    std::thread::sleep(Duration::from_secs(4));
    // A wrong password in the file: refused by the brokers, so not applied; sending goes on.
    let wrong = format!("wrong-{}", unique("pw"));
    replace_file(&pwfile, &format!("{wrong}\n"));
    std::thread::sleep(Duration::from_secs(4));
    // Now the brokers change the password to one neither the client nor the file has: the
    // re-authentication the listener asks for every 15 s fails, no connection works any more,
    // and the run ends with exit 5.
    let third = format!("third-{}", unique("pw"));
    bed().set_password(&user, &topic, "producer", &third);
    let out = finish(child, Duration::from_secs(120));
    assert_eq!(out.code(), 5, "{out}");
    assert!(
        out.stdout
            .contains("the brokers refuse the new credentials"),
        "{out}"
    );
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kafka-workload: error: producer: authentication failed"),
        "{out}"
    );
    assert!(
        !out.all().contains(&wrong)
            && !out.all().contains(&user.password)
            && !out.all().contains(&third)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let (sent, acked, failed) = (
        r["producer"]["sent"].as_u64().unwrap(),
        r["producer"]["acked"].as_u64().unwrap(),
        r["producer"]["failed"].as_u64().unwrap(),
    );
    // Sending went on after the refused change (8 s at 100/s), and nothing is unaccounted for.
    assert!(acked > 600, "{out}");
    assert_eq!(sent, acked + failed, "{out}");
}
