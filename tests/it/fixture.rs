//! The broker fixture every integration test uses: the test bed's addresses and credentials (from
//! the environment that `scripts/test-bed env` prints, or from that command itself), fresh topic and
//! user names, our binary with a bounded run time, and kcat as an independent client.
//!
//! Broker tests need the test bed: without it they fail and say how to start it, rather than
//! pass without checking anything.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The running test bed.
#[derive(Debug, Clone)]
pub struct Bed {
    /// 9092: SASL_PLAINTEXT, SCRAM-SHA-512.
    pub sasl_plaintext: String,
    /// 9093: SASL_SSL, SCRAM-SHA-512.
    pub sasl_ssl: String,
    /// 9094: SSL with client certificates.
    pub ssl: String,
    /// The open PLAINTEXT listener for independent reads.
    pub plaintext: String,
    /// Super user.
    pub admin_user: String,
    /// Its password.
    pub admin_password: String,
    /// CA that signed the broker certificate.
    pub ca_file: PathBuf,
    /// Client certificate for mTLS.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// MongoDB-wire URI.
    pub mongo_uri: Option<String>,
    /// scripts/test-bed.
    pub script: PathBuf,
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_map() -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    if !vars.contains_key("KAFKA_SASL_PLAINTEXT") {
        let out = Command::new(repo().join("scripts/test-bed"))
            .arg("env")
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        let v = v.trim().trim_matches('\'').trim_matches('"');
                        vars.insert(
                            k.trim().trim_start_matches("export ").to_string(),
                            v.to_string(),
                        );
                    }
                }
            }
        }
    }
    vars
}

/// The test bed, or a panic that says how to start it.
pub fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let vars = env_map();
        let get = |k: &str| -> String {
            vars.get(k).cloned().unwrap_or_else(|| {
                panic!("{k} is not set and `scripts/test-bed env` gave none: start the test bed with `scripts/test-bed up` (or run scripts/test)")
            })
        };
        Bed {
            sasl_plaintext: get("KAFKA_SASL_PLAINTEXT"),
            sasl_ssl: get("KAFKA_SASL_SSL"),
            ssl: get("KAFKA_SSL"),
            plaintext: get("KAFKA_PLAINTEXT"),
            admin_user: get("KAFKA_ADMIN_USER"),
            admin_password: get("KAFKA_ADMIN_PASSWORD"),
            ca_file: get("KAFKA_CA_FILE").into(),
            cert_file: get("KAFKA_CLIENT_CERT_FILE").into(),
            key_file: get("KAFKA_CLIENT_KEY_FILE").into(),
            mongo_uri: vars.get("MONGO_URI").cloned(),
            script: vars.get("TEST_BED_SCRIPT").map(PathBuf::from).unwrap_or_else(|| repo().join("scripts/test-bed")),
        }
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!(
        "{prefix}-{t}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A SCRAM user created for one test.
#[derive(Debug, Clone)]
pub struct User {
    /// Name.
    pub name: String,
    /// Password.
    pub password: String,
}

impl Bed {
    /// Creates a SCRAM user with Charmed-style grants for `roles` on `topic`.
    pub fn user(&self, topic: &str, roles: &str) -> User {
        let name = unique("u");
        let password = format!("pw-{}", unique("p"));
        self.script_ok(&["user", &name, &password, "--topic", topic, "--roles", roles]);
        User { name, password }
    }

    /// Creates a SCRAM user whose consumer grants are on the group prefix `prefix`.
    pub fn user_with_group_prefix(&self, topic: &str, roles: &str, prefix: &str) -> User {
        let name = unique("u");
        let password = format!("pw-{}", unique("p"));
        self.script_ok(&[
            "user",
            &name,
            &password,
            "--topic",
            topic,
            "--roles",
            roles,
            "--group-prefix",
            prefix,
        ]);
        User { name, password }
    }

    /// Removes a SCRAM user and its ACLs from the brokers.
    pub fn delete_user(&self, user: &User) {
        self.script_ok(&["user", &user.name, "--delete"]);
    }

    /// Grants `roles` on `topic` to the mTLS client certificate's principal; consumer groups are
    /// granted under the prefix `<returned name>-`.
    pub fn grant_mtls(&self, topic: &str, roles: &str) -> String {
        let name = unique("mtls");
        self.script_ok(&["user", &name, "--mtls", "--topic", topic, "--roles", roles]);
        name
    }

    /// Changes a user's SCRAM password on the brokers (its grants stay).
    pub fn set_password(&self, user: &User, topic: &str, roles: &str, password: &str) {
        self.script_ok(&[
            "user", &user.name, password, "--topic", topic, "--roles", roles,
        ]);
    }

    fn script_ok(&self, args: &[&str]) {
        let out = Command::new(&self.script)
            .args(args)
            .output()
            .expect("run scripts/test-bed");
        assert!(
            out.status.success(),
            "scripts/test-bed {:?} failed: {}{}",
            args.first(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a finished process printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Output {
    /// The exit code (panics on death by signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self}"))
    }
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        write!(
            f,
            "status {:?} after {:?}\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
            self.status,
            self.elapsed,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Our binary with no KAFKA_WORKLOAD_* variables inherited.
pub fn workload() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafka-workload"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KAFKA_WORKLOAD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd
}

/// Spawns with piped output.
pub fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Waits for a spawned child, killing it (and failing the test) after `limit`.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            let out = Output {
                status: st,
                stdout: out_t.join().unwrap(),
                stderr: err_t.join().unwrap(),
                elapsed: started.elapsed(),
            };
            panic!("process ran past {limit:?} and was killed:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

/// Runs to completion within `limit`.
pub fn run(cmd: Command, limit: Duration) -> Output {
    finish(spawn(cmd), limit)
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Reads every record of `topic` through the open PLAINTEXT listener with kcat (librdkafka 2.0,
/// Debian's build: independent of our code), stopping at the end of the partitions.
pub fn kcat_read_all(topic: &str) -> Vec<String> {
    let mut cmd = Command::new("kcat");
    cmd.args([
        "-b",
        &bed().plaintext,
        "-C",
        "-t",
        topic,
        "-e",
        "-q",
        "-o",
        "beginning",
        "-f",
        "%s\\n",
    ]);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "kcat failed: {out}");
    out.stdout.lines().map(str::to_string).collect()
}

/// Produces `lines` to `topic` through the open PLAINTEXT listener with kcat.
pub fn kcat_produce(topic: &str, lines: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &bed().plaintext, "-P", "-t", topic, "-l"])
        .arg(&file);
    let out = run(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "kcat produce failed: {out}");
}

/// Creates a topic with `partitions` partitions (RF 1) through the open listener, as a setup step.
pub fn create_topic(topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bed().plaintext)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results =
        futures::executor::block_on(admin.create_topics([&new], &opts)).expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(name, code)| panic!("creating {name}: {code}"));
    }
}

/// Writes a file in a temp dir that lives as long as the returned guard.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// Parses the JSON lines kcat read into values, skipping non-JSON.
pub fn json_values(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
