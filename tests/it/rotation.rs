//! Password rotation while running: the broker's SASL_SSL listener makes sessions re-authenticate
//! every 15 s, so a producer that kept the old password would be refused after the change.

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
            .contains("password changed: new connections use it"),
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
