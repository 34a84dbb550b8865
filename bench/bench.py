"""bench/bench.py: kafka-workload against its peers on one broker, in one run, as ratios.

Owns: the benchmark plan (which client produces or consumes what, in which order), running each
client as a child process and reading its CPU time and peak RSS from wait4(2), parsing each
tool's own result lines, medians and ratios, and the Markdown/JSON/commands output.
It leaves installing and starting the broker to scripts/test-bed (and scripts/install-deps
behind it), building to cargo, and the kafka-python client to bench/pyclient.py.
scripts/bench is the entry point; it runs this file with the repo venv's Python.

Method (also printed under the table):
* Produce: N values to a fresh 6-partition topic per client, acks=all, over each protocol.
  ProducerPerformance and kafka-python send 100-byte values, kcat sends 100-byte lines;
  kafka-workload sends its client.py-shaped JSON padded with --message-size 100 (the JSON is
  longer than 100 bytes, so MB/s is shown beside msgs/s and the value size is in the table).
* Consume: each consumer reads kafka-workload's topic of that repetition from the start with a
  fresh group, so every consumer reads the same records and bytes.
* Each repetition runs every client once per phase and protocol, in an order that rotates from
  one repetition to the next, so that drift (other builds on the machine) hits everyone alike.
  Figures are medians over repetitions; a ratio is the median of the per-repetition ratios.
* Rates are over each tool's own measurement window where it has one (ProducerPerformance:
  start to close; ConsumerPerformance and our consumers: partition assignment to last record,
  i.e. its "fetch" rate; kafka-workload's and kafka-python's producers: first send to end of
  flush); kcat has none, so its rate is over its whole process lifetime (which favours nobody
  but kcat's peers, by milliseconds). Wall time of every process is in the JSON.
* CPU seconds (user + system) and peak RSS are the client process's own, from wait4(2).
"""

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import string
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCERS = ["kafka-workload", "ProducerPerformance", "kcat", "kafka-python"]
CONSUMERS = ["kafka-workload", "ConsumerPerformance", "kcat", "kafka-python"]
SHORT = {
    "kafka-workload": "kw",
    "ProducerPerformance": "java",
    "ConsumerPerformance": "java",
    "kcat": "kcat",
    "kafka-python": "py",
}
PEER_OF_JAVA = {"produce": "ProducerPerformance", "consume": "ConsumerPerformance"}
PROTOCOLS = {"PLAINTEXT": "KAFKA_PLAINTEXT", "SASL_PLAINTEXT": "KAFKA_SASL_PLAINTEXT"}
PARTITIONS = 6
VALUE_SIZE = 100
# kafka-run-class.sh's JVM flags, and the heap kafka-{producer,consumer}-perf-test.sh give it.
JAVA_OPTS = [
    "-Xmx512M",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]


# ----- parsing (pure; tests/bench/test_parse.py) -----------------------------------------------


def parse_producer_performance(stdout):
    """ProducerPerformance's final summary line -> dict, or None if there is none.

    `N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P50 ms 50th,
    P95 ms 95th, P99 ms 99th, P999 ms 99.9th.` (MB there is MiB.)
    """
    for line in reversed(stdout.splitlines()):
        if "records sent" in line and "50th" in line:
            parts = [p.strip() for p in line.strip().rstrip(".").split(",")]
            head = parts[0].split()
            rate = parts[1].split()
            return {
                "records": int(head[0]),
                "msgs_per_s": float(rate[0]),
                "mib_per_s": float(rate[2].lstrip("(")),
                "avg_latency_ms": float(parts[2].split()[0]),
                "max_latency_ms": float(parts[3].split()[0]),
                "p50_ms": float(parts[4].split()[0]),
                "p99_ms": float(parts[6].split()[0]),
            }
    return None


def parse_consumer_performance(stdout):
    """ConsumerPerformance's CSV result row (after its header) -> dict, or None.

    Header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    """
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time,"):
            header = [h.strip() for h in line.split(",")]
            if i + 1 >= len(lines):
                return None
            values = [v.strip() for v in lines[i + 1].split(",")]
            if len(values) != len(header):
                return None
            row = dict(zip(header, values))
            return {
                "mib": float(row["data.consumed.in.MB"]),
                "records": int(row["data.consumed.in.nMsg"]),
                "msgs_per_s_total": float(row["nMsg.sec"]),
                "rebalance_ms": int(row["rebalance.time.ms"]),
                "fetch_ms": int(row["fetch.time.ms"]),
                "fetch_msgs_per_s": float(row["fetch.nMsg.sec"]),
                "fetch_mib_per_s": float(row["fetch.MB.sec"]),
            }
    return None


def parse_last_json_line(stdout):
    """The last line of `stdout` that is a JSON object (bench/pyclient.py's result)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


# ----- processes -------------------------------------------------------------------------------


@dataclass
class Measured:
    """One child process: exit code, wall time and its own resource use."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int
    timed_out: bool = False

    @property
    def cpu_s(self):
        return self.user_s + self.sys_s


TIME_FORMAT = "%e %U %S %M %x"


def parse_time_output(text):
    """GNU time's `-f "%e %U %S %M %x"` line -> (wall s, user s, sys s, max RSS KiB, exit code)."""
    for line in reversed(text.strip().splitlines()):
        parts = line.split()
        if len(parts) == 5:
            try:
                return (float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3]), int(parts[4]))
            except ValueError:
                continue
    return None


def run_measured(argv, env, stdout_path, stderr_path, time_path, timeout, stdin_path=None):
    """Runs argv under GNU time, which forks it from a small process and reads its rusage.

    Not wait4() from here: a child's peak RSS starts from its parent's RSS at fork (Linux
    carries the parent's high-water mark over exec), and this Python process is larger than
    some of the clients measured.
    """
    wrapped = ["/usr/bin/time", "-o", time_path, "-f", TIME_FORMAT, *argv]
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    out = open(stdout_path, "wb") if stdout_path != os.devnull else subprocess.DEVNULL
    try:
        with open(stderr_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                wrapped, env=env, stdout=out, stderr=err, stdin=stdin, start_new_session=True
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                timed_out = True
            wall = time.monotonic() - start
    finally:
        for f in (stdin, out):
            if hasattr(f, "close"):
                f.close()
    t = parse_time_output(read(time_path))
    if t is None:
        return Measured(proc.returncode or -1, wall, 0.0, 0.0, 0, timed_out)
    return Measured(
        returncode=t[4],
        wall_s=wall,
        user_s=t[1],
        sys_s=t[2],
        max_rss_kib=t[3],
        timed_out=timed_out,
    )


def read(path, tail=None):
    """A text file's content (its last `tail` bytes only, if given); empty if unreadable."""
    try:
        with open(path, "rb") as f:
            if tail:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - tail))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


# ----- the environment: broker addresses, tools --------------------------------------------------


@dataclass
class Bed:
    servers: dict  # protocol -> bootstrap
    admin_user: str
    admin_password: str
    kafka_version: str
    kafka_lib: str


def load_bed(use_env):
    if use_env:
        env = dict(os.environ)
    else:
        out = subprocess.run(
            [os.path.join(REPO, "scripts", "test-bed"), "env"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    version = env.get("KAFKA_VERSION") or kafka_version_from_pom()
    cache = os.environ.get("TEST_BED_CACHE", os.path.expanduser("~/.cache/kafka-workload"))
    return Bed(
        servers={p: env[k] for p, k in PROTOCOLS.items()},
        admin_user=env["KAFKA_ADMIN_USER"],
        admin_password=env["KAFKA_ADMIN_PASSWORD"],
        kafka_version=version,
        kafka_lib=os.path.join(cache, f"kafka-{version}", "lib"),
    )


def kafka_version_from_pom():
    text = read(os.path.join(REPO, "ci", "kafka", "pom.xml"))
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


class Admin:
    """Topic creation and deletion over the open PLAINTEXT listener (confluent-kafka)."""

    def __init__(self, bootstrap):
        from confluent_kafka.admin import AdminClient

        # Errors only: deleted topics make librdkafka log a notice per topic.
        self.client = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})

    def create(self, topic, partitions):
        from confluent_kafka.admin import NewTopic

        futures = self.client.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=-1)],
            operation_timeout=30,
        )
        futures[topic].result()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.client.list_topics(topic, timeout=10).topics.get(topic)
            if md and md.error is None and len(md.partitions) == partitions:
                if all(p.leader >= 0 for p in md.partitions.values()):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"topic {topic} has no leaders after 30 s")

    def delete(self, topics):
        if not topics:
            return
        for f in self.client.delete_topics(list(topics), operation_timeout=30).values():
            try:
                f.result()
            except Exception:  # already gone: nothing to clean
                pass


def wheel_librdkafka():
    """The librdkafka that the venv's confluent-kafka wheel bundles, or None."""
    import glob

    hits = glob.glob(
        os.path.join(REPO, ".venv", "lib", "python3*", "site-packages", "confluent_kafka.libs", "librdkafka*.so*")
    )
    return sorted(hits)[0] if hits else None


def kcat_library_env(work):
    """kcat runs on the confluent-kafka wheel's librdkafka: Debian 12's librdkafka 2.0.2 fails
    SCRAM authentication against Kafka 4 brokers (fixed in librdkafka 2.6.1; edenhill/kcat#462),
    and one library for both protocols keeps kcat's two rows comparable."""
    lib = wheel_librdkafka()
    if not lib:
        return {}
    d = os.path.join(work, "kcat-lib")
    os.makedirs(d, exist_ok=True)
    link = os.path.join(d, "librdkafka.so.1")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(lib, link)
    return {"LD_LIBRARY_PATH": d}


# ----- the clients -------------------------------------------------------------------------------


@dataclass
class Plan:
    """One client run: its command, and how to read its result."""

    phase: str
    protocol: str
    client: str
    topic: str
    argv: list
    env_extra: dict = field(default_factory=dict)
    stdin_path: str = None
    discard_stdout: bool = False


class Clients:
    """Builds each client's command line for a phase, protocol and topic."""

    def __init__(self, bed, kw_bin, venv_python, work, messages):
        self.bed = bed
        self.kw = kw_bin
        self.py = venv_python
        self.work = work
        self.n = messages
        self.props = {}
        self.kcat_values = None
        os.makedirs(work, exist_ok=True)
        self.kcat_env = kcat_library_env(work)
        for proto in PROTOCOLS:
            path = os.path.join(work, f"client-{proto.lower()}.properties")
            lines = [f"bootstrap.servers={bed.servers[proto]}", f"security.protocol={proto}"]
            if proto.startswith("SASL"):
                lines += [
                    "sasl.mechanism=SCRAM-SHA-512",
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
                    f'required username="{bed.admin_user}" password="{bed.admin_password}";',
                ]
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            self.props[proto] = path

    def sasl(self, proto):
        return proto.startswith("SASL")

    def java(self, main, args):
        log4j = os.path.join(REPO, "bench", "tools-log4j2.properties")
        return (
            ["java", *JAVA_OPTS, f"-Dlog4j2.configurationFile={log4j}"]
            + ["-cp", os.path.join(self.bed.kafka_lib, "*"), main]
            + args
        )

    def kcat_security(self, proto):
        x = ["-X", f"security.protocol={proto}"]
        if self.sasl(proto):
            x += [
                "-X",
                "sasl.mechanisms=SCRAM-SHA-512",
                "-X",
                f"sasl.username={self.bed.admin_user}",
                "-X",
                f"sasl.password={self.bed.admin_password}",
            ]
        return x

    def kw_common(self, proto, topic, json_path):
        argv = [self.kw, "-s", self.bed.servers[proto], "-x", proto, "-t", topic]
        env = {}
        if self.sasl(proto):
            argv += ["-u", self.bed.admin_user]
            env["KAFKA_WORKLOAD_PASSWORD"] = self.bed.admin_password
        argv += ["--log-messages", "none", "--no-progress", "--json", json_path]
        return argv, env

    def ensure_kcat_values(self):
        """kcat reads values from a file: N lines of 100 uppercase letters, like
        ProducerPerformance's --record-size payloads."""
        if self.kcat_values:
            return self.kcat_values
        path = os.path.join(self.work, "kcat-values.txt")
        rnd = random.Random(0)
        lines = [
            "".join(rnd.choice(string.ascii_uppercase) for _ in range(VALUE_SIZE))
            for _ in range(1000)
        ]
        with open(path, "w", encoding="ascii") as f:
            for i in range(self.n):
                f.write(lines[i % 1000])
                f.write("\n")
        self.kcat_values = path
        return path

    def producer(self, client, proto, topic, json_path, n=None):
        n = n or self.n
        if client == "kafka-workload":
            argv, env = self.kw_common(proto, topic, json_path)
            argv += ["--producer", "--num-partitions", str(PARTITIONS), "-n", str(n)]
            argv += ["--message-size", str(VALUE_SIZE), "--acks", "all"]
            return Plan("produce", proto, client, topic, argv, env)
        if client == "ProducerPerformance":
            argv = self.java(
                "org.apache.kafka.tools.ProducerPerformance",
                ["--topic", topic, "--num-records", str(n), "--record-size", str(VALUE_SIZE)]
                + ["--throughput", "-1", "--producer.config", self.props[proto]]
                + ["--producer-props", "acks=all"],
            )
            return Plan("produce", proto, client, topic, argv)
        if client == "kcat":
            argv = ["kcat", "-P", "-b", self.bed.servers[proto], "-t", topic]
            argv += self.kcat_security(proto) + ["-X", "acks=all"]
            return Plan(
                "produce", proto, client, topic, argv, self.kcat_env, self.ensure_kcat_values()
            )
        if client == "kafka-python":
            argv = [self.py, os.path.join(REPO, "bench", "pyclient.py"), "produce"]
            argv += ["--servers", self.bed.servers[proto], "--topic", topic, "--num", str(n)]
            argv += ["--value-size", str(VALUE_SIZE), "--protocol", proto]
            env = {}
            if self.sasl(proto):
                argv += ["--user", self.bed.admin_user]
                env["BENCH_SASL_PASSWORD"] = self.bed.admin_password
            return Plan("produce", proto, client, topic, argv, env)
        raise ValueError(client)

    def consumer(self, client, proto, topic, group, json_path):
        n = self.n
        if client == "kafka-workload":
            argv, env = self.kw_common(proto, topic, json_path)
            argv += ["--consumer", "--group-id", group, "--expect", str(n)]
            argv += ["--idle-timeout", "30"]
            return Plan("consume", proto, client, topic, argv, env)
        if client == "ConsumerPerformance":
            argv = self.java(
                "org.apache.kafka.tools.ConsumerPerformance",
                ["--bootstrap-server", self.bed.servers[proto], "--topic", topic]
                + ["--messages", str(n), "--group", group, "--timeout", "30000"]
                + ["--consumer.config", self.props[proto]],
            )
            return Plan("consume", proto, client, topic, argv)
        if client == "kcat":
            # Assign mode (no group) from the beginning, exit at the end; values to /dev/null.
            argv = ["kcat", "-C", "-b", self.bed.servers[proto], "-t", topic, "-o", "beginning"]
            argv += ["-e", "-q", "-c", str(n)] + self.kcat_security(proto)
            return Plan("consume", proto, client, topic, argv, self.kcat_env, discard_stdout=True)
        if client == "kafka-python":
            argv = [self.py, os.path.join(REPO, "bench", "pyclient.py"), "consume"]
            argv += ["--servers", self.bed.servers[proto], "--topic", topic, "--num", str(n)]
            argv += ["--group", group, "--protocol", proto]
            env = {}
            if self.sasl(proto):
                argv += ["--user", self.bed.admin_user]
                env["BENCH_SASL_PASSWORD"] = self.bed.admin_password
            return Plan("consume", proto, client, topic, argv, env)
        raise ValueError(client)


def interpret(plan, m, stdout, json_path, n, topic_bytes=None):
    """The client's own figures: messages, bytes, seconds of its measurement window."""
    r = {"messages": None, "bytes": None, "seconds": None, "basis": None, "error": None}
    if m.timed_out:
        r["error"] = "timed out"
        return r
    if plan.client == "kafka-workload":
        data = json.loads(read(json_path) or "null") or {}
        if plan.phase in ("produce", "memory"):
            p = data.get("producer") or {}
            r.update(messages=p.get("acked"), bytes=p.get("bytes"))
            r["seconds"] = (p.get("throughput") or {}).get("seconds")
            r["basis"] = "first send to end of flush"
        else:
            c = data.get("consumer") or {}
            r.update(messages=c.get("records"), bytes=c.get("bytes"))
            window = (c.get("throughput") or {}).get("seconds")
            first = c.get("first_record_ms")
            if window is not None:
                # ConsumerPerformance's fetch window starts at the assignment, not at the first
                # record: count the wait for the first record too.
                r["seconds"] = window + (first or 0) / 1000.0
            r["basis"] = "partition assignment to last record"
    elif plan.client == "ProducerPerformance":
        p = parse_producer_performance(stdout)
        if p:
            r.update(messages=p["records"], bytes=p["records"] * VALUE_SIZE)
            r["seconds"] = p["records"] / p["msgs_per_s"] if p["msgs_per_s"] else None
            r["basis"] = "tool's own: start to close"
            r["latency_ms"] = {k: p[k] for k in ("avg_latency_ms", "p50_ms", "p99_ms")}
    elif plan.client == "ConsumerPerformance":
        c = parse_consumer_performance(stdout)
        if c:
            r.update(messages=c["records"], bytes=topic_bytes)
            r["seconds"] = c["fetch_ms"] / 1000.0
            r["basis"] = "tool's own fetch time: assignment to last record"
            r["rebalance_ms"] = c["rebalance_ms"]
    elif plan.client == "kcat":
        r.update(messages=n, bytes=n * VALUE_SIZE if plan.phase == "produce" else topic_bytes)
        r["seconds"] = m.wall_s
        r["basis"] = "process lifetime"
    elif plan.client == "kafka-python":
        j = parse_last_json_line(stdout)
        if j:
            r.update(messages=j["messages"], bytes=j["bytes"], seconds=j["seconds"])
            r["basis"] = j["window"]
    if m.returncode != 0:
        r["error"] = f"exit code {m.returncode}"
    elif r["messages"] is None or r["seconds"] is None:
        r["error"] = "no result in the output"
    elif r["messages"] < n:
        r["error"] = f"only {r['messages']} of {n} messages"
    return r


# ----- the run ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, bed, out):
        self.args = args
        self.bed = bed
        self.out = out
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.kw = os.path.join(out, "kafka-workload")
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        # A copy, so that a rebuild during the run changes nothing measured.
        shutil.copy2(os.path.join(target, "release", "kafka-workload"), self.kw)
        self.py = os.path.join(REPO, ".venv", "bin", "python")
        self.clients = Clients(bed, self.kw, self.py, os.path.join(out, "work"), args.messages)
        self.admin = Admin(bed.servers["PLAINTEXT"])
        self.stamp = dt.datetime.now().strftime("%H%M%S")
        self.records = []
        self.commands = []
        self.seq = 0

    def log(self, msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def topic(self, *parts):
        return "bench-" + self.stamp + "-" + "-".join(parts)

    def execute(self, plan, n, topic_bytes=None, rep=0):
        self.seq += 1
        tag = f"{self.seq:03d}-{plan.phase}-{plan.protocol.lower()}-{plan.client}"
        stdout_path = os.path.join(self.logs, tag + ".out")
        stderr_path = os.path.join(self.logs, tag + ".err")
        json_path = os.path.join(self.logs, tag + ".json")
        # The JSON path was fixed when the plan was built; point it here.
        argv = [json_path if a == "@JSON@" else a for a in plan.argv]
        env = dict(os.environ)
        env.update(plan.env_extra)
        cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env_extra.items())
        cmd = (cmd + " " if cmd else "") + shlex.join(argv)
        if plan.stdin_path:
            cmd += f" < {shlex.quote(plan.stdin_path)}"
        self.commands.append(cmd)
        timeout = 60 + n / 10000
        out_path = os.devnull if plan.discard_stdout else stdout_path
        time_path = os.path.join(self.logs, tag + ".time")
        m = run_measured(argv, env, out_path, stderr_path, time_path, timeout, plan.stdin_path)
        r = interpret(plan, m, read(stdout_path, tail=65536), json_path, n, topic_bytes)
        rec = {
            "rep": rep,
            "phase": plan.phase,
            "protocol": plan.protocol,
            "client": plan.client,
            "topic": plan.topic,
            "expected": n,
            **r,
            "msgs_per_s": (r["messages"] / r["seconds"]) if r["seconds"] else None,
            "mb_per_s": (r["bytes"] / r["seconds"] / 1e6) if r["seconds"] and r["bytes"] else None,
            "value_bytes": (r["bytes"] / r["messages"]) if r["messages"] and r["bytes"] else None,
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "user_s": m.user_s,
            "sys_s": m.sys_s,
            "max_rss_mib": m.max_rss_kib / 1024.0,
            "exit_code": m.returncode,
            "command": cmd,
            "log": stdout_path,
        }
        if r["error"]:
            tail = read(stderr_path, tail=600) or read(stdout_path, tail=600)
            rec["error_tail"] = tail
            self.log(f"  {plan.client}: FAILED ({r['error']}); see {stdout_path}")
        else:
            self.log(
                f"  {plan.client:20s} {rec['msgs_per_s']:>12,.0f} msgs/s {rec['mb_per_s']:7.1f} MB/s"
                f"  cpu {m.cpu_s:6.2f} s  rss {rec['max_rss_mib']:7.1f} MiB  wall {m.wall_s:6.2f} s"
            )
        self.records.append(rec)
        return rec

    def warm_up(self):
        topic = self.topic("warmup")
        self.admin.create(topic, PARTITIONS)
        n = min(self.args.messages, 100000)
        for proto in self.args.protocols:
            plan = self.clients.producer("kafka-workload", proto, topic, "@JSON@", n)
            self.log(f"warm-up over {proto} ({n} messages, not counted)")
            argv = [a if a != "@JSON@" else os.devnull for a in plan.argv]
            env = dict(os.environ)
            env.update(plan.env_extra)
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.admin.delete([topic])

    def repetition(self, rep):
        for pi, proto in enumerate(self.args.protocols):
            order = rotate(self.args.producers, rep + pi)
            self.log(f"rep {rep + 1}/{self.args.reps} {proto}: produce ({', '.join(order)})")
            topics = {}
            kw_bytes = None
            for client in order:
                topic = self.topic(str(rep), proto.lower()[:4], SHORT[client], "p")
                self.admin.create(topic, PARTITIONS)
                topics[client] = topic
                plan = self.clients.producer(client, proto, topic, "@JSON@")
                rec = self.execute(plan, self.args.messages, rep=rep)
                if client == "kafka-workload" and not rec["error"]:
                    kw_bytes = rec["bytes"]
            source = topics.get("kafka-workload")
            if self.args.consumers and (source is None or kw_bytes is None):
                self.log("  kafka-workload's topic is incomplete: consumers skipped this time")
            elif self.args.consumers:
                order = rotate(self.args.consumers, rep + pi)
                self.log(f"rep {rep + 1}/{self.args.reps} {proto}: consume ({', '.join(order)})")
                for client in order:
                    group = self.topic(str(rep), proto.lower()[:4], SHORT[client], "g")
                    plan = self.clients.consumer(client, proto, source, group, "@JSON@")
                    self.execute(plan, self.args.messages, topic_bytes=kw_bytes, rep=rep)
            self.admin.delete(topics.values())

    def memory(self):
        """Peak RSS of kafka-workload producing each count, median of --memory-reps runs; the
        counts alternate so that drift hits each alike."""
        peaks = {str(n): [] for n in self.args.memory}
        for rep in range(self.args.memory_reps):
            for n in self.args.memory:
                topic = self.topic("mem", str(rep), str(n))
                self.admin.create(topic, PARTITIONS)
                self.log(f"memory {rep + 1}/{self.args.memory_reps}: kafka-workload producing {n:,} messages")
                plan = self.clients.producer("kafka-workload", "PLAINTEXT", topic, "@JSON@", n)
                plan.phase = "memory"
                rec = self.execute(plan, n, rep=rep)
                if not rec["error"]:
                    peaks[str(n)].append(rec["max_rss_mib"])
                self.admin.delete([topic])
        self.memory_runs = peaks
        return {n: median(v) for n, v in peaks.items()}


def rotate(items, k):
    k %= len(items) if items else 1
    return items[k:] + items[:k]


# ----- summary -----------------------------------------------------------------------------------


def summarize(records, phases_clients):
    """Medians per (phase, protocol, client) and kafka-workload's median ratios to each peer."""
    rows = []
    for phase, clients in phases_clients:
        protos = sorted({r["protocol"] for r in records if r["phase"] == phase})
        for proto in protos:
            ok = [r for r in records if r["phase"] == phase and r["protocol"] == proto]
            by_client = {c: [r for r in ok if r["client"] == c and not r["error"]] for c in clients}
            kw_by_rep = {r["rep"]: r for r in by_client.get("kafka-workload", [])}
            for client in clients:
                runs = by_client[client]
                failed = [r for r in ok if r["client"] == client and r["error"]]
                row = {
                    "phase": phase,
                    "protocol": proto,
                    "client": client,
                    "runs": len(runs),
                    "failed_runs": len(failed),
                }
                for k in ("value_bytes", "msgs_per_s", "mb_per_s", "cpu_s", "max_rss_mib", "wall_s"):
                    row[k] = median([r[k] for r in runs])
                if client != "kafka-workload":
                    for k in ("msgs_per_s", "mb_per_s", "cpu_s", "max_rss_mib"):
                        pairs = [
                            ratio(kw_by_rep[r["rep"]][k], r[k]) for r in runs if r["rep"] in kw_by_rep
                        ]
                        row["kw_ratio_" + k] = median(pairs)
                rows.append(row)
    return rows


def verdict(rows, memory, mem_sizes):
    checks = []
    for row in rows:
        if row["client"] in PEER_OF_JAVA.values():
            r = row.get("kw_ratio_msgs_per_s")
            checks.append(
                {
                    "check": f"{row['phase']} {row['protocol']}: kafka-workload msgs/s >= {row['client']}",
                    "value": r,
                    "pass": r is not None and r >= 1.0,
                }
            )
    if len(mem_sizes) >= 2:
        small, large = memory.get(str(min(mem_sizes))), memory.get(str(max(mem_sizes)))
        g = ratio(large, small)
        checks.append(
            {
                "check": f"peak RSS at {max(mem_sizes):,} messages within 20% of at {min(mem_sizes):,}",
                "value": g,
                "pass": g is not None and g <= 1.2,
            }
        )
    return checks


def markdown(rows, memory, checks, meta):
    out = []
    out.append(
        f"kafka-workload vs peers: {meta['messages']:,} messages per run, {meta['reps']} repetition(s), "
        f"{PARTITIONS}-partition topics, acks=all, medians; Kafka {meta['kafka_version']} "
        f"(1 KRaft broker on the same host)."
    )
    out.append("")
    out.append(
        "| phase | protocol | client | value B | msgs/s | MB/s | CPU s | peak RSS MiB "
        "| kw÷peer msgs/s | kw÷peer MB/s | kw÷peer CPU | kw÷peer RSS |"
    )
    out.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        failed = f" ({r['failed_runs']} failed)" if r["failed_runs"] else ""
        out.append(
            f"| {r['phase']} | {r['protocol']} | {r['client']}{failed} | {fmt(r['value_bytes'])} "
            f"| {fmt(r['msgs_per_s'])} | {fmt(r['mb_per_s'], 1)} | {fmt(r['cpu_s'], 2)} "
            f"| {fmt(r['max_rss_mib'], 1)} "
            f"| {fmt_ratio(r.get('kw_ratio_msgs_per_s')) if r['client'] != 'kafka-workload' else ''} "
            f"| {fmt_ratio(r.get('kw_ratio_mb_per_s')) if r['client'] != 'kafka-workload' else ''} "
            f"| {fmt_ratio(r.get('kw_ratio_cpu_s')) if r['client'] != 'kafka-workload' else ''} "
            f"| {fmt_ratio(r.get('kw_ratio_max_rss_mib')) if r['client'] != 'kafka-workload' else ''} |"
        )
    if memory:
        out.append("")
        out.append("| kafka-workload producing | peak RSS MiB (median) | runs |")
        out.append("|--:|--:|--|")
        for n, mib in memory.items():
            runs = ", ".join(fmt(x, 1) for x in meta.get("memory_runs", {}).get(n, []))
            out.append(f"| {int(n):,} messages | {fmt(mib, 1)} | {runs} |")
    if checks:
        out.append("")
        for c in checks:
            v = "—" if c["value"] is None else f"{c['value']:.2f}"
            out.append(f"- {'PASS' if c['pass'] else 'FAIL'}: {c['check']} ({v})")
    out.append("")
    out.append(
        "kw÷peer: kafka-workload's figure divided by the peer's, median of per-repetition ratios "
        "(above 1 means kafka-workload is faster for msgs/s and MB/s, costlier for CPU and RSS). "
        "Consumers all read kafka-workload's topic, so their value size is its JSON's. "
        "MB = 10^6 bytes of values."
    )
    out.append("")
    if meta.get("bench_command"):
        out.append(f"Run with `{meta['bench_command']}`; every client command is in commands.sh.")
        out.append("")
    out.append(f"Machine: {meta['machine']}")
    out.append(f"Clients: {meta['versions']}")
    return "\n".join(out)


def machine_info():
    cpu = "unknown CPU"
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 1048576:.0f} GiB RAM, "
        f"Linux {platform.release()}, broker and clients sharing the cores"
    )


def versions(bed, kcat_env):
    def first_line(argv, extra=None):
        try:
            env = dict(os.environ, **(extra or {}))
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            return (p.stdout + p.stderr).strip().splitlines()
        except (OSError, subprocess.TimeoutExpired):
            return []

    kcat = " ".join(ln for ln in first_line(["kcat", "-V"], kcat_env) if "version" in ln.lower())
    java = (first_line(["java", "-version"]) or ["java ?"])[0]
    kp = first_line(
        [os.path.join(REPO, ".venv", "bin", "python"), "-c", "import kafka; print(kafka.__version__)"]
    )
    rev = first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", REPO, "status", "--porcelain", "--", "src"])
    return (
        f"kafka-workload {rev[0] if rev else '?'}{'+local changes' if dirty else ''} (librdkafka "
        f"vendored by rdkafka); Kafka {bed.kafka_version} tools on {java}; "
        f"kcat: {kcat or '?'}; kafka-python {kp[0] if kp else '?'}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200,000 messages, one repetition, memory at 100k and 1M")
    p.add_argument("--messages", type=int, help="messages per run (default 1,000,000)")
    p.add_argument("--reps", type=int, help="repetitions (default 3)")
    p.add_argument("--protocols", default="PLAINTEXT,SASL_PLAINTEXT")
    p.add_argument("--producers", default=",".join(PRODUCERS), help="clients in the produce phase")
    p.add_argument("--consumers", default=",".join(CONSUMERS), help="clients in the consume phase ('' for none)")
    p.add_argument("--memory", help="message counts for the RSS growth check (default 100000,10000000; '' for none)")
    p.add_argument("--memory-reps", type=int, help="runs per memory count, median taken (default 3, --quick 1)")
    p.add_argument("--out", help="output directory (default target/bench/<timestamp>)")
    p.add_argument("--json", help="also write the JSON result here")
    p.add_argument("--no-setup", action="store_true", help="skip `scripts/test-bed up` and `cargo build --release`")
    p.add_argument("--env", action="store_true", help="take KAFKA_* addresses from the environment, not scripts/test-bed env")
    p.add_argument("--no-warm-up", action="store_true")
    args = p.parse_args(argv)
    args.messages = args.messages or (200_000 if args.quick else 1_000_000)
    args.reps = args.reps or (1 if args.quick else 3)
    if args.memory is None:
        args.memory = "100000,1000000" if args.quick else "100000,10000000"
    args.memory = [int(x) for x in args.memory.split(",") if x]
    args.memory_reps = args.memory_reps or (1 if args.quick else 3)
    args.protocols = [x for x in args.protocols.split(",") if x]
    for proto in args.protocols:
        if proto not in PROTOCOLS:
            p.error(f"--protocols: {proto} is not one of {', '.join(PROTOCOLS)}")
    args.producers = [x for x in args.producers.split(",") if x]
    args.consumers = [x for x in args.consumers.split(",") if x]
    if "kafka-workload" not in args.producers:
        p.error("--producers must include kafka-workload (its topic feeds the consumers)")

    if not args.no_setup:
        subprocess.run([os.path.join(REPO, "scripts", "test-bed"), "up"], check=True, stdout=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True, stdout=sys.stderr)
    bed = load_bed(args.env)
    started = dt.datetime.now()
    out = args.out or os.path.join(REPO, "target", "bench", started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    bench = Bench(args, bed, out)
    bench.log(f"writing to {out}")
    if not args.no_warm_up:
        bench.warm_up()
    t0 = time.monotonic()
    for rep in range(args.reps):
        bench.repetition(rep)
    memory = bench.memory() if args.memory else {}
    if bench.clients.kcat_values:
        os.unlink(bench.clients.kcat_values)
    # The copy of the binary is 100+ MB with its line tables; commands.sh says what it was.
    os.unlink(bench.kw)

    phases = [("produce", args.producers)]
    if args.consumers:
        phases.append(("consume", args.consumers))
    rows = summarize(bench.records, phases)
    checks = verdict(rows, memory, args.memory)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "messages": args.messages,
        "reps": args.reps,
        "partitions": PARTITIONS,
        "value_size": VALUE_SIZE,
        "kafka_version": bed.kafka_version,
        "machine": machine_info(),
        "versions": versions(bed, bench.clients.kcat_env),
        "memory_runs": getattr(bench, "memory_runs", {}),
        "bench_command": ("scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
    }
    table = markdown(rows, memory, checks, meta)
    result = {
        "schema": "kafka-workload/bench/v1",
        "meta": meta,
        "summary": rows,
        "memory_peak_rss_mib": memory,
        "memory_peak_rss_mib_runs": getattr(bench, "memory_runs", {}),
        "checks": checks,
        "runs": bench.records,
        "commands": bench.commands,
    }
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "commands.sh"), "w", encoding="utf-8") as f:
        f.write("# The exact commands scripts/bench ran, in order. Each topic was created beforehand\n")
        f.write(f"# with {PARTITIONS} partitions over the PLAINTEXT listener. kcat-values.txt (deleted\n")
        f.write(f"# after the run) held {args.messages} lines of {VALUE_SIZE} uppercase letters; each\n")
        f.write("# command ran under `/usr/bin/time -f '%e %U %S %M %x'`. kafka-workload here was a copy\n")
        f.write(f"# of target/release/kafka-workload ({meta['versions'].split(' (')[0]}), deleted after the run.\n")
        f.write("\n".join(bench.commands) + "\n")
    latest = os.path.join(os.path.dirname(out), "latest")
    try:
        if os.path.islink(latest):
            os.unlink(latest)
        os.symlink(out, latest)
    except OSError:
        pass
    print(table)
    print()
    print(f"Commands: {os.path.join(out, 'commands.sh')}  JSON: {os.path.join(out, 'results.json')}")
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
