"""bench/bench.py: kafka-workload against its peers on the test bed, in one run, as ratios.

Owns: the benchmark plan (which client produces or consumes what, in which order, on which bed),
running each client as a child process under GNU time (CPU time, peak RSS), parsing each tool's
own result lines, medians and ratios, and the Markdown/JSON/commands output.
It leaves installing, starting and resizing the broker bed to scripts/test-bed (and
scripts/install-deps behind it), building kafka-workload to cargo, building librdkafka's
rdkafka_performance to bench/build-rdkafka-performance, and the kafka-python client to
bench/pyclient.py. scripts/bench is the entry point; it runs this file with the repo venv's Python.

Sections (`--plan default`: rows and memory on 1 broker; `--latency` adds the latency section;
`--brokers 3`: rows and the curve on a 3-broker bed; `--plan full`: all of them, in this order):
* rows: every producer sends N values of each --value-sizes size (256 and 1024 bytes by
  default; the same size for every tool) to a fresh 6-partition topic of its own, acks=all, over
  each protocol; then every consumer reads kafka-workload's topic of that size from the start
  (fresh group or assign mode), so every consumer reads the same records and bytes.
* memory: kafka-workload's peak RSS producing 100k vs 10M messages (1 broker only).
* latency: kafka-workload's unpaced rate on PLAINTEXT (the broker's max, by our client), then
  kafka-workload --rate, ProducerPerformance --throughput and rdkafka_performance -r at 50% and
  90% of it, each with the latency percentiles it reports itself.
* curve (3 brokers, RF 3): partitions (1, 6, 24) x value size (256 B, 1 KiB, 10 KiB) over
  PLAINTEXT, produce and consume, with CPU seconds per million messages and peak RSS per tool.

Method (also in docs/performance.md):
* kafka-workload's --message-size pads its JSON value to exactly N bytes when N is at least the
  unpadded JSON (~200 B); so sizes below 256 are refused, and a kafka-workload run whose values
  are not exactly N bytes counts as failed.
* Each repetition runs every client once per size, protocol and phase, in an order that rotates
  from one to the next, so that drift (other work on the machine) hits everyone alike. Figures
  are medians over repetitions; a ratio is the median of the per-repetition ratios.
* Rates are over each tool's own measurement window where it has one (ProducerPerformance:
  start to close; ConsumerPerformance and our consumers: partition assignment to last record;
  rdkafka_performance: start of sending to last delivery report / first record to last;
  kafka-workload's and kafka-python's producers: first send to end of flush); kcat has none, so
  its rate is over its whole process lifetime. Wall time of every process is in the JSON.
* CPU seconds (user + system) and peak RSS are the client process's own, read by GNU time.
"""

import argparse
import collections
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_BED = os.path.join(REPO, "scripts", "test-bed")
PRODUCERS = ["kafka-workload", "ProducerPerformance", "rdkafka_performance", "kcat", "kafka-python"]
CONSUMERS = ["kafka-workload", "ConsumerPerformance", "rdkafka_performance", "kcat", "kafka-python"]
# The latency section: the producers that pace themselves and report latencies.
LATENCY_CLIENTS = ["kafka-workload", "ProducerPerformance", "rdkafka_performance"]
# The curve leaves kafka-python out by default: at ~1/30 of the others' rate it would take
# most of the curve's time (--curve-producers/--curve-consumers add it).
CURVE_PRODUCERS = ["kafka-workload", "ProducerPerformance", "rdkafka_performance", "kcat"]
CURVE_CONSUMERS = ["kafka-workload", "ConsumerPerformance", "rdkafka_performance", "kcat"]
SHORT = {
    "kafka-workload": "kw",
    "ProducerPerformance": "java",
    "ConsumerPerformance": "java",
    "rdkafka_performance": "rkp",
    "kcat": "kcat",
    "kafka-python": "py",
}
PRODUCE_PHASES = ("produce", "memory", "latency", "latency-max")
FIRST_TO_LAST = "first record to last"
PEER_OF_JAVA = {"produce": "ProducerPerformance", "consume": "ConsumerPerformance"}
PROTOCOLS = {"PLAINTEXT": "KAFKA_PLAINTEXT", "SASL_PLAINTEXT": "KAFKA_SASL_PLAINTEXT"}
PARTITIONS = 6
VALUE_SIZES = [256, 1024]
# kafka-workload's unpadded JSON value is ~200 bytes; --message-size below it cannot be exact.
MIN_VALUE_SIZE = 256
CURVE_PARTITIONS = [1, 6, 24]
CURVE_SIZES = [256, 1024, 10240]
LATENCY_LOADS = [50, 90]
# The warm-up (Bench.warm_up): rounds of this many messages until the median rate of the last
# three is within 10% of the three before (at least six rounds), or the time limit per bed size.
WARM_UP_ROUND = 200_000
WARM_UP_LIMIT_S = {1: 90, 3: 240}
# rdkafka_performance sets linger.ms=1000 for itself, and waits for its last delivery reports
# without a flush, so the last partial batch of every run would wait up to a second inside its
# own window: it gets librdkafka's (and Kafka's, and kafka-workload's) 5 ms instead.
# Every producer runs with the delivery guarantee kafka-workload's audit relies on: acks=all with
# the idempotent producer (no duplicates or reordering from retries). kafka-workload turns
# idempotence on with acks=all and ProducerPerformance's Java client does by default; librdkafka
# (rdkafka_performance, kcat) does not, and without it skips the producer-id handshake and the
# in-flight sequence bookkeeping: on this bed 1.3-2x the msgs/s of the same tool with it.
IDEMPOTENT_X = ["-X", "enable.idempotence=true"]
RKP_PRODUCER_X = ["-X", "acks=all", "-X", "linger.ms=5"] + IDEMPOTENT_X
# Unless told otherwise rdkafka_performance hands librdkafka one buffer for every message, without
# a copy (msgflags 0): the same bytes, already in cache, a million times. -S writes a sequence
# number into each value, so each is its own allocation and copy (RD_KAFKA_MSG_F_FREE), as with
# every other producer here (kafka-workload's values differ in seq, id and timestamps; kcat's
# come from a file). With -l (the paced latency runs) it copies each value anyway.
RKP_DISTINCT_VALUES = ["-S", "1"]
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


class BenchError(Exception):
    pass


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
                "p95_ms": float(parts[5].split()[0]),
                "p99_ms": float(parts[6].split()[0]),
                "p999_ms": float(parts[7].split()[0]),
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


RKP_PRODUCED = re.compile(
    r"^% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset -?\d+, (\d+) failed\) "
    r"in (\d+)ms: (\d+) msgs/s and ([\d.]+) MB/s"
)
RKP_CONSUMED = re.compile(
    r"^% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s \(([\d.]+) MB/s\)"
    r"(?:, latency curr/avg/lo/hi ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)ms)?"
)


def parse_rdkafka_performance(stdout):
    """rdkafka_performance's last summary line (it prints one a second and a final one) -> dict.

    Producer: `% N messages produced (B bytes), D delivered (offset O, F failed) in Tms: R msgs/s
    and M MB/s, ...` -- T is the start of sending to the last delivery report, R and M count the
    delivered messages (M is 10^6 bytes). Consumer: `% N messages (B bytes) consumed in Tms: R
    msgs/s (M MB/s)` -- T is the first record to the last. `% INTERVAL: ...` lines (-M) are not
    summaries. None when there is no summary line.
    """
    for line in reversed(stdout.splitlines()):
        m = RKP_PRODUCED.match(line.strip())
        if m:
            produced, nbytes, delivered, failed, ms, rate, mb = m.groups()
            produced, delivered = int(produced), int(delivered)
            return {
                "mode": "produce",
                "produced": produced,
                "messages": delivered,
                "failed": int(failed),
                "bytes": int(nbytes) * delivered // produced if produced else 0,
                "ms": int(ms),
                "msgs_per_s": float(rate),
                "mb_per_s": float(mb),
            }
        m = RKP_CONSUMED.match(line.strip())
        if m:
            g = m.groups()
            r = {
                "mode": "consume",
                "messages": int(g[0]),
                "bytes": int(g[1]),
                "ms": int(g[2]),
                "msgs_per_s": float(g[3]),
                "mb_per_s": float(g[4]),
            }
            if g[5] is not None:
                r["latency_ms"] = dict(zip(("curr", "avg", "lo", "hi"), map(float, g[5:9])))
            return r
    return None


def warmed_up(rates):
    """True once the warm-up's rate has stopped climbing: the median of the last three rounds is
    at most 10% above the median of the three before."""
    if len(rates) < 6:
        return False
    return median(rates[-3:]) <= 1.10 * median(rates[-6:-3])


WARM_UP_RULE = "the median of the last 3 rounds is within 10% of the 3 before (at least 6 rounds)"


def rkp_seconds(p):
    """rdkafka_performance's window in seconds: from its integer msgs/s (computed from µs) when
    it has one, which is finer than its integer milliseconds."""
    if p["msgs_per_s"] > 0 and p["messages"] > 0:
        return p["messages"] / p["msgs_per_s"]
    return p["ms"] / 1000.0 if p["ms"] else None


def count_values(lines):
    """Integer values, one a line (rdkafka_performance -A: one latency in µs per message) ->
    {value: count}. Blank and non-numeric lines are skipped."""
    counts = collections.Counter()
    for line in lines:
        line = line.strip()
        if line.lstrip("-").isdigit():
            counts[int(line)] += 1
    return counts


def latency_summary_us(counts):
    """{µs: count} -> mean, p50, p99, p99.9 and max in ms (nearest rank: the smallest value with
    at least q of all values at or below it), or None when empty."""
    total = sum(counts.values())
    if not total:
        return None
    keys = sorted(counts)
    out = {"count": total, "mean_ms": sum(k * counts[k] for k in keys) / total / 1000.0}
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for k in keys:
            seen += counts[k]
            if seen >= rank:
                out[name] = k / 1000.0
                break
    out["max_ms"] = keys[-1] / 1000.0
    return out


def kw_latency(lat):
    """kafka-workload's --json latency object (µs) -> the bench's latency dict (ms)."""
    if not lat or not lat.get("count"):
        return None
    return {
        "count": lat["count"],
        "mean_ms": lat["mean_us"] / 1000.0,
        "p50_ms": lat["p50_us"] / 1000.0,
        "p99_ms": lat["p99_us"] / 1000.0,
        "p999_ms": lat["p999_us"] / 1000.0,
        "max_ms": lat["max_us"] / 1000.0,
    }


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


def parse_sizes(text, minimum=MIN_VALUE_SIZE):
    """'256,1k,10KiB' -> [256, 1024, 10240]; ValueError below `minimum` or on nonsense."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(k|kib|kb)?", part.lower())
        if not m:
            raise ValueError(f"not a size: {part!r}")
        n = int(m.group(1)) * (1024 if m.group(2) else 1)
        if n < minimum:
            raise ValueError(
                f"{n} B is below {minimum} B: kafka-workload's unpadded JSON value is ~200 B, so "
                "--message-size cannot make it exactly that size"
            )
        sizes.append(n)
    if not sizes:
        raise ValueError("no sizes")
    return sizes


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


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_size(n):
    if n is None:
        return "—"
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


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
    brokers: int = 1
    port_offset: str = "0"


def test_bed_env():
    """`scripts/test-bed env` as a dict (it honours TEST_BED_PORT_OFFSET), or None when the bed
    is not up."""
    p = subprocess.run([TEST_BED, "env"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def load_bed(use_env):
    if use_env:
        env = dict(os.environ)
    else:
        env = test_bed_env()
        if env is None:
            raise BenchError("the test bed is not up (scripts/test-bed up)")
    version = env.get("KAFKA_VERSION") or kafka_version_from_pom()
    cache = os.environ.get("TEST_BED_CACHE", os.path.expanduser("~/.cache/kafka-workload"))
    brokers = env.get("KAFKA_BROKERS") or str(len(env["KAFKA_PLAINTEXT"].split(",")))
    return Bed(
        servers={p: env[k] for p, k in PROTOCOLS.items()},
        admin_user=env["KAFKA_ADMIN_USER"],
        admin_password=env["KAFKA_ADMIN_PASSWORD"],
        kafka_version=version,
        kafka_lib=os.path.join(cache, f"kafka-{version}", "lib"),
        brokers=int(brokers),
        port_offset=env.get("TEST_BED_PORT_OFFSET", os.environ.get("TEST_BED_PORT_OFFSET", "0")),
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

    def create(self, topic, partitions, replication=-1):
        from confluent_kafka.admin import NewTopic

        futures = self.client.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication)],
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


def build_rdkafka_performance():
    """bench/build-rdkafka-performance: the cached rdkafka_performance of the librdkafka that
    Cargo.lock's rdkafka-sys vendors (built on first use, about a minute)."""
    p = subprocess.run(
        [os.path.join(REPO, "bench", "build-rdkafka-performance")], stdout=subprocess.PIPE, text=True
    )
    if p.returncode != 0 or not p.stdout.strip():
        raise BenchError("bench/build-rdkafka-performance failed (see above)")
    return p.stdout.strip().splitlines()[-1]


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
    size: int = None  # the value size it was asked for
    rate: int = None  # msgs/s it was paced to (latency section), None when unpaced
    tags: dict = field(default_factory=dict)  # section, brokers, partitions, load: into the record


class Clients:
    """Builds each client's command line for a phase, protocol, topic and value size."""

    def __init__(self, bed, kw_bin, rkp_bin, venv_python, work, kcat_values=None):
        self.bed = bed
        self.kw = kw_bin
        self.rkp = rkp_bin
        self.py = venv_python
        self.work = work
        self.props = {}
        self.rk_props = {}
        # (size, n) -> the file kcat reads its values from; shared across beds.
        self.kcat_values = {} if kcat_values is None else kcat_values
        os.makedirs(work, exist_ok=True)
        self.kcat_env = kcat_library_env(work)
        tag = f"{bed.brokers}b"
        for proto in PROTOCOLS:
            path = os.path.join(work, f"client-{proto.lower()}-{tag}.properties")
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
            # rdkafka_performance -X file=: librdkafka property names.
            path = os.path.join(work, f"librdkafka-{proto.lower()}.properties")
            lines = [f"security.protocol={proto}"]
            if proto.startswith("SASL"):
                lines += [
                    "sasl.mechanisms=SCRAM-SHA-512",
                    f"sasl.username={bed.admin_user}",
                    f"sasl.password={bed.admin_password}",
                ]
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            self.rk_props[proto] = path

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

    def kcat_file(self, size, n):
        """kcat reads values from a file: n lines of `size` uppercase letters (1000 distinct
        ones, cycled), like ProducerPerformance's --record-size payloads."""
        key = (size, n)
        if key in self.kcat_values:
            return self.kcat_values[key]
        path = os.path.join(self.work, f"kcat-values-{size}-{n}.txt")
        rnd = random.Random(0)
        lines = ["".join(rnd.choice(string.ascii_uppercase) for _ in range(size)) for _ in range(1000)]
        block = "\n".join(lines) + "\n"
        with open(path, "w", encoding="ascii") as f:
            for _ in range(n // 1000):
                f.write(block)
            for i in range(n % 1000):
                f.write(lines[i] + "\n")
        self.kcat_values[key] = path
        return path

    def producer(self, client, proto, topic, json_path, n, size, partitions=PARTITIONS, rate=None):
        """`rate` paces the producer with its own option (kafka-workload --rate,
        ProducerPerformance --throughput, rdkafka_performance -r, with -l -A for latencies)."""
        if client == "kafka-workload":
            argv, env = self.kw_common(proto, topic, json_path)
            argv += ["--producer", "--num-partitions", str(partitions), "-n", str(n)]
            argv += ["--message-size", str(size), "--acks", "all"]
            if rate:
                argv += ["--rate", str(rate)]
            return Plan("produce", proto, client, topic, argv, env, size=size, rate=rate)
        if client == "ProducerPerformance":
            argv = self.java(
                "org.apache.kafka.tools.ProducerPerformance",
                ["--topic", topic, "--num-records", str(n), "--record-size", str(size)]
                + ["--throughput", str(rate or -1), "--producer.config", self.props[proto]]
                + ["--producer-props", "acks=all"],
            )
            return Plan("produce", proto, client, topic, argv, size=size, rate=rate)
        if client == "rdkafka_performance":
            argv = [self.rkp, "-P", "-t", topic, "-b", self.bed.servers[proto], "-s", str(size)]
            argv += ["-c", str(n), "-X", f"file={self.rk_props[proto]}"] + RKP_PRODUCER_X
            if not rate:
                argv += RKP_DISTINCT_VALUES
            else:
                # -l: per-message latency (payload "LATENCY:<µs wall clock>", delivery report);
                # -A: every message's latency in µs to a file, which the bench summarizes.
                argv += ["-r", str(rate), "-l", "-A", "@LAT@"]
            return Plan("produce", proto, client, topic, argv, size=size, rate=rate)
        if rate:
            raise ValueError(f"{client} has no pacing option in this bench")
        if client == "kcat":
            argv = ["kcat", "-P", "-b", self.bed.servers[proto], "-t", topic]
            argv += self.kcat_security(proto) + ["-X", "acks=all"] + IDEMPOTENT_X
            return Plan(
                "produce", proto, client, topic, argv, self.kcat_env, self.kcat_file(size, n), size=size
            )
        if client == "kafka-python":
            argv = [self.py, os.path.join(REPO, "bench", "pyclient.py"), "produce"]
            argv += ["--servers", self.bed.servers[proto], "--topic", topic, "--num", str(n)]
            argv += ["--value-size", str(size), "--protocol", proto]
            env = {}
            if self.sasl(proto):
                argv += ["--user", self.bed.admin_user]
                env["BENCH_SASL_PASSWORD"] = self.bed.admin_password
            return Plan("produce", proto, client, topic, argv, env, size=size)
        raise ValueError(client)

    def consumer(self, client, proto, topic, group, json_path, n, size):
        if client == "kafka-workload":
            argv, env = self.kw_common(proto, topic, json_path)
            argv += ["--consumer", "--group-id", group, "--expect", str(n)]
            argv += ["--idle-timeout", "30"]
            return Plan("consume", proto, client, topic, argv, env, size=size)
        if client == "ConsumerPerformance":
            argv = self.java(
                "org.apache.kafka.tools.ConsumerPerformance",
                ["--bootstrap-server", self.bed.servers[proto], "--topic", topic]
                + ["--messages", str(n), "--group", group, "--timeout", "30000"]
                + ["--consumer.config", self.props[proto]],
            )
            return Plan("consume", proto, client, topic, argv, size=size)
        if client == "rdkafka_performance":
            # -G: the high-level (group) consumer, from the beginning (its auto.offset.reset is
            # earliest); -c: stop at n records; -e: or at the end of every partition.
            argv = [self.rkp, "-G", group, "-t", topic, "-b", self.bed.servers[proto]]
            argv += ["-c", str(n), "-e", "-X", f"file={self.rk_props[proto]}"]
            return Plan("consume", proto, client, topic, argv, size=size)
        if client == "kcat":
            # Assign mode (no group) from the beginning, exit at the end; values to /dev/null.
            argv = ["kcat", "-C", "-b", self.bed.servers[proto], "-t", topic, "-o", "beginning"]
            argv += ["-e", "-q", "-c", str(n)] + self.kcat_security(proto)
            return Plan(
                "consume", proto, client, topic, argv, self.kcat_env, discard_stdout=True, size=size
            )
        if client == "kafka-python":
            argv = [self.py, os.path.join(REPO, "bench", "pyclient.py"), "consume"]
            argv += ["--servers", self.bed.servers[proto], "--topic", topic, "--num", str(n)]
            argv += ["--group", group, "--protocol", proto]
            env = {}
            if self.sasl(proto):
                argv += ["--user", self.bed.admin_user]
                env["BENCH_SASL_PASSWORD"] = self.bed.admin_password
            return Plan("consume", proto, client, topic, argv, env, size=size)
        raise ValueError(client)


def interpret(plan, m, stdout, json_path, n, topic_bytes=None, latency_path=None):
    """The client's own figures: messages, bytes, seconds of its measurement window, and for a
    paced producer the latencies it reports."""
    r = {"messages": None, "bytes": None, "seconds": None, "basis": None, "error": None}
    if m.timed_out:
        r["error"] = "timed out"
        return r
    size = plan.size
    if plan.client == "kafka-workload":
        data = json.loads(read(json_path) or "null") or {}
        if plan.phase in PRODUCE_PHASES:
            p = data.get("producer") or {}
            r.update(messages=p.get("acked"), bytes=p.get("bytes"))
            r["seconds"] = (p.get("throughput") or {}).get("seconds")
            r["basis"] = "first send to end of flush"
            r["latency"] = kw_latency(p.get("ack_latency"))
            r["latency_uncorrected"] = kw_latency(p.get("ack_latency_uncorrected"))
            if size and r["messages"] and r["bytes"] != r["messages"] * size:
                r["error"] = f"values of {r['bytes'] / r['messages']:.1f} B on average, not {size} B"
                return r
        else:
            c = data.get("consumer") or {}
            r.update(messages=c.get("records"), bytes=c.get("bytes"))
            window = (c.get("throughput") or {}).get("seconds")
            first = c.get("first_record_ms")
            if window is not None:
                # ConsumerPerformance's fetch window starts at the assignment, not at the first
                # record: count the wait for the first record too.
                r["seconds"] = window + (first or 0) / 1000.0
                # rdkafka_performance's consumer window starts at its first record: the ratio
                # to it uses this one.
                r["alt_seconds"] = {FIRST_TO_LAST: window}
            r["basis"] = "partition assignment to last record"
    elif plan.client == "ProducerPerformance":
        p = parse_producer_performance(stdout)
        if p:
            r.update(messages=p["records"], bytes=p["records"] * size)
            r["seconds"] = p["records"] / p["msgs_per_s"] if p["msgs_per_s"] else None
            r["basis"] = "tool's own: start to close"
            r["latency"] = {
                "mean_ms": p["avg_latency_ms"],
                "p50_ms": p["p50_ms"],
                "p95_ms": p["p95_ms"],
                "p99_ms": p["p99_ms"],
                "p999_ms": p["p999_ms"],
                "max_ms": p["max_latency_ms"],
            }
    elif plan.client == "ConsumerPerformance":
        c = parse_consumer_performance(stdout)
        if c:
            r.update(messages=c["records"], bytes=topic_bytes)
            r["seconds"] = c["fetch_ms"] / 1000.0
            r["basis"] = "tool's own fetch time: assignment to last record"
            r["rebalance_ms"] = c["rebalance_ms"]
    elif plan.client == "rdkafka_performance":
        p = parse_rdkafka_performance(stdout)
        if p:
            r.update(messages=p["messages"], bytes=p["bytes"], seconds=rkp_seconds(p))
            if p["mode"] == "produce":
                r["basis"] = "tool's own: start of sending to last delivery report"
                r["failed"] = p["failed"]
            else:
                r["basis"] = "tool's own: first record to last"
                r["window"] = FIRST_TO_LAST
        if latency_path:
            try:
                with open(latency_path, encoding="ascii", errors="replace") as f:
                    r["latency"] = latency_summary_us(count_values(f))
            except OSError:
                r["latency"] = None
    elif plan.client == "kcat":
        r.update(messages=n, bytes=n * size if plan.phase == "produce" else topic_bytes)
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
    def __init__(self, args, out, rkp_bin):
        self.args = args
        self.out = out
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.kw = os.path.join(out, "kafka-workload")
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        # A copy, so that a rebuild during the run changes nothing measured.
        shutil.copy2(os.path.join(target, "release", "kafka-workload"), self.kw)
        self.rkp = rkp_bin
        self.py = os.path.join(REPO, ".venv", "bin", "python")
        self.work = os.path.join(out, "work")
        self.bed = None
        self.beds = []  # every bed used, in order (for the report)
        self.warm_ups = []  # one per bed: the warm-up rounds' rates
        self.clients = None
        self.admin = None
        self.kcat_values = {}
        self.stamp = dt.datetime.now().strftime("%H%M%S")
        self.records = []
        self.commands = []
        self.seq = 0
        self.latency_max = None

    def log(self, msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def use_bed(self, brokers):
        """Points the clients at a bed of `brokers` brokers, bringing it up (or down and up with
        the other size: scripts/test-bed keeps one size per port offset) unless --no-setup/--env."""
        if self.bed is not None and self.bed.brokers == brokers:
            return
        if self.args.no_setup or self.args.env:
            bed = load_bed(self.args.env)
            if bed.brokers != brokers:
                raise BenchError(
                    f"this section needs a {brokers}-broker bed and the one given has {bed.brokers} "
                    f"(without --no-setup/--env the bench resizes the test bed itself)"
                )
        else:
            env = test_bed_env()
            running = int(env.get("KAFKA_BROKERS", "1")) if env else None
            if running is not None and running != brokers:
                self.log(f"the test bed is up with {running} broker(s), this section needs {brokers}: scripts/test-bed down")
                subprocess.run([TEST_BED, "down"], check=True, stdout=sys.stderr)
            subprocess.run([TEST_BED, "up", "--brokers", str(brokers)], check=True, stdout=sys.stderr)
            bed = load_bed(False)
        self.bed = bed
        self.beds.append(brokers)
        self.clients = Clients(bed, self.kw, self.rkp, self.py, self.work, self.kcat_values)
        self.admin = Admin(bed.servers["PLAINTEXT"])
        self.log(f"{brokers}-broker bed (TEST_BED_PORT_OFFSET={bed.port_offset}): PLAINTEXT {bed.servers['PLAINTEXT']}")
        if not self.args.no_warm_up:
            self.warm_up()

    @property
    def replication(self):
        return 3 if self.bed.brokers >= 3 else 1

    def topic(self, *parts):
        return "bench-" + self.stamp + "-" + "-".join(str(p) for p in parts)

    def create(self, topic, partitions):
        self.admin.create(topic, partitions, self.replication)

    def execute(self, plan, n, topic_bytes=None, rep=0):
        self.seq += 1
        tag = f"{self.seq:03d}-{plan.phase}-{plan.protocol.lower()}-{plan.client}"
        stdout_path = os.path.join(self.logs, tag + ".out")
        stderr_path = os.path.join(self.logs, tag + ".err")
        json_path = os.path.join(self.logs, tag + ".json")
        latency_path = os.path.join(self.logs, tag + ".latency-us")
        # The JSON and latency paths were fixed when the plan was built; point them here.
        subst = {"@JSON@": json_path, "@LAT@": latency_path}
        argv = [subst.get(a, a) for a in plan.argv]
        uses_latency_file = "@LAT@" in plan.argv
        env = dict(os.environ)
        env.update(plan.env_extra)
        cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env_extra.items())
        cmd = (cmd + " " if cmd else "") + shlex.join(argv)
        if plan.stdin_path:
            cmd += f" < {shlex.quote(plan.stdin_path)}"
        self.commands.append(cmd)
        # Generous: kafka-python's producer manages ~3,000 msgs/s of 1 KiB on 2 busy cores.
        timeout = 120 + n / 2000 + (3 * n / plan.rate if plan.rate else 0)
        out_path = os.devnull if plan.discard_stdout else stdout_path
        time_path = os.path.join(self.logs, tag + ".time")
        m = run_measured(argv, env, out_path, stderr_path, time_path, timeout, plan.stdin_path)
        r = interpret(
            plan, m, read(stdout_path, tail=65536), json_path, n, topic_bytes,
            latency_path if uses_latency_file else None,
        )
        if uses_latency_file and os.path.exists(latency_path):
            os.unlink(latency_path)  # one line per message; its summary is in the record
        rec = {
            "rep": rep,
            "phase": plan.phase,
            "protocol": plan.protocol,
            "client": plan.client,
            "topic": plan.topic,
            "size": plan.size,
            "rate": plan.rate,
            "brokers": self.bed.brokers,
            **plan.tags,
            "expected": n,
            **r,
            "msgs_per_s": (r["messages"] / r["seconds"]) if r["seconds"] else None,
            "mb_per_s": (r["bytes"] / r["seconds"] / 1e6) if r["seconds"] and r["bytes"] else None,
            "value_bytes": (r["bytes"] / r["messages"]) if r["messages"] and r["bytes"] else None,
            "alt_rates": {
                w: {"msgs_per_s": r["messages"] / sec, "mb_per_s": (r["bytes"] or 0) / sec / 1e6}
                for w, sec in (r.get("alt_seconds") or {}).items()
                if sec and r["messages"]
            },
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "cpu_s_per_m": (m.cpu_s * 1e6 / r["messages"]) if r["messages"] else None,
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
            lat = r.get("latency") if plan.rate else None
            extra = f"  p99 {lat['p99_ms']:.1f} ms" if lat else ""
            self.log(
                f"  {plan.client:20s} {rec['msgs_per_s']:>12,.0f} msgs/s {rec['mb_per_s'] or 0:7.1f} MB/s"
                f"  cpu {m.cpu_s:6.2f} s  rss {rec['max_rss_mib']:7.1f} MiB  wall {m.wall_s:6.2f} s{extra}"
            )
        self.records.append(rec)
        return rec

    def warm_up(self):
        """Rounds of kafka-workload producing until the brokers' rate stops climbing, then one
        round over each other protocol. A freshly started broker is a cold JVM: on the 3-broker
        bed the first million messages ran at a fifth to a half of the rate reached later, and a
        fixed 100,000-message warm-up left the first section measuring the JIT compiler."""
        topic = self.topic(f"{self.bed.brokers}b", "warmup")
        self.create(topic, PARTITIONS)
        size = self.args.value_sizes[0]
        limit = WARM_UP_LIMIT_S[self.bed.brokers]
        rates = []
        t0 = time.monotonic()
        self.log(
            f"warm-up: rounds of {WARM_UP_ROUND:,} x {size} B over PLAINTEXT until {WARM_UP_RULE}"
            f" (at most {limit} s; not counted)"
        )
        while not warmed_up(rates) and time.monotonic() - t0 < limit:
            rate = self.warm_up_round(topic, "PLAINTEXT", size)
            if rate is None:
                break
            rates.append(rate)
            self.log(f"  warm-up round {len(rates)}: {rate:,.0f} msgs/s")
        for proto in self.args.protocols:
            if proto != "PLAINTEXT":
                self.log(f"warm-up over {proto} (one round, not counted)")
                self.warm_up_round(topic, proto, size)
        self.warm_ups.append({
            "brokers": self.bed.brokers,
            "rounds_msgs_per_s": [round(r) for r in rates],
            "seconds": round(time.monotonic() - t0, 1),
            "converged": warmed_up(rates),
        })
        self.admin.delete([topic])

    def warm_up_round(self, topic, proto, size):
        """One warm-up run; its producer msgs/s (None if it failed)."""
        path = os.path.join(self.work, "warm-up.json")
        plan = self.clients.producer("kafka-workload", proto, topic, path, WARM_UP_ROUND, size)
        env = dict(os.environ)
        env.update(plan.env_extra)
        done = subprocess.run(plan.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with open(path, encoding="utf-8") as f:
                rate = json.load(f)["producer"]["throughput"]["msgs_per_sec"]
        except (OSError, ValueError, KeyError, TypeError):
            rate = None
        if done.returncode != 0 or not rate:
            self.log(f"  warm-up over {proto} failed (exit {done.returncode}); measuring anyway")
            return None
        return rate

    def produce_then_consume(self, k, rep, proto, size, partitions, n, producers, consumers, tags, label):
        """Every producer once to a topic of its own, then every consumer once over
        kafka-workload's topic; both orders rotated by k."""
        b = f"{self.bed.brokers}b"
        order = rotate(producers, k)
        self.log(f"{label}: produce ({', '.join(order)})")
        topics = {}
        kw_bytes = None
        for client in order:
            topic = self.topic(b, rep, partitions, size, proto.lower()[:4], SHORT[client], "p")
            self.create(topic, partitions)
            topics[client] = topic
            plan = self.clients.producer(client, proto, topic, "@JSON@", n, size, partitions)
            plan.tags = dict(tags, partitions=partitions)
            rec = self.execute(plan, n, rep=rep)
            if client == "kafka-workload" and not rec["error"]:
                kw_bytes = rec["bytes"]
        source = topics.get("kafka-workload")
        if consumers and (source is None or kw_bytes is None):
            self.log("  kafka-workload's topic is incomplete: consumers skipped this time")
        elif consumers:
            order = rotate(consumers, k)
            self.log(f"{label}: consume ({', '.join(order)})")
            for client in order:
                group = self.topic(b, rep, partitions, size, proto.lower()[:4], SHORT[client], "g")
                plan = self.clients.consumer(client, proto, source, group, "@JSON@", n, size)
                plan.tags = dict(tags, partitions=partitions)
                self.execute(plan, n, topic_bytes=kw_bytes, rep=rep)
        self.admin.delete(topics.values())

    def rows(self, rep):
        """The produce/consume rows: every value size, protocol and client."""
        a = self.args
        for si, size in enumerate(a.value_sizes):
            for pi, proto in enumerate(a.protocols):
                label = f"{self.bed.brokers}b rep {rep + 1}/{a.reps} {fmt_size(size)} {proto}"
                self.produce_then_consume(
                    rep + si + pi, rep, proto, size, PARTITIONS, a.messages, a.producers,
                    a.consumers, {"section": "rows"}, label,
                )

    def curve(self, rep):
        """Partitions x value size on PLAINTEXT, produce and consume."""
        a = self.args
        for pi, partitions in enumerate(a.curve_partitions):
            for si, size in enumerate(a.curve_sizes):
                n = curve_messages(a, size)
                label = f"curve rep {rep + 1}/{a.curve_reps}: {plural(partitions, 'partition')}, {fmt_size(size)}, {n:,} messages"
                self.produce_then_consume(
                    rep + pi + si, rep, "PLAINTEXT", size, partitions, n, a.curve_producers,
                    a.curve_consumers, {"section": "curve"}, label,
                )

    def memory(self):
        """Peak RSS of kafka-workload producing each count, median of --memory-reps runs; the
        counts alternate so that drift hits each alike."""
        peaks = {str(n): [] for n in self.args.memory}
        size = self.args.value_sizes[0]
        for rep in range(self.args.memory_reps):
            for n in self.args.memory:
                topic = self.topic("mem", rep, n)
                self.create(topic, PARTITIONS)
                self.log(f"memory {rep + 1}/{self.args.memory_reps}: kafka-workload producing {n:,} messages")
                plan = self.clients.producer("kafka-workload", "PLAINTEXT", topic, "@JSON@", n, size)
                plan.phase = "memory"
                plan.tags = {"section": "memory", "partitions": PARTITIONS}
                rec = self.execute(plan, n, rep=rep)
                if not rec["error"]:
                    peaks[str(n)].append(rec["max_rss_mib"])
                self.admin.delete([topic])
        self.memory_runs = peaks
        return {n: median(v) for n, v in peaks.items()}

    def latency(self):
        """The broker's max produce rate by kafka-workload unpaced, then each pacing producer
        at each --latency-loads percentage of it, --latency-seconds long, rotated per repetition."""
        a = self.args
        size = a.value_sizes[0]
        proto = "PLAINTEXT"
        topic = self.topic(f"{self.bed.brokers}b", "lat", "max")
        self.create(topic, PARTITIONS)
        self.log(f"latency: max rate, kafka-workload unpaced ({a.messages:,} messages of {fmt_size(size)})")
        plan = self.clients.producer("kafka-workload", proto, topic, "@JSON@", a.messages, size)
        plan.phase = "latency-max"
        plan.tags = {"section": "latency", "partitions": PARTITIONS}
        rec = self.execute(plan, a.messages)
        self.admin.delete([topic])
        if rec["error"] or not rec["msgs_per_s"]:
            self.log("latency: no max rate (kafka-workload's unpaced run failed): section skipped")
            return
        self.latency_max = rec["msgs_per_s"]
        clients = [c for c in LATENCY_CLIENTS if c in a.producers]
        for rep in range(a.reps):
            for li, load in enumerate(a.latency_loads):
                rate = max(1, round(self.latency_max * load / 100))
                n = max(1000, round(rate * a.latency_seconds))
                order = rotate(clients, rep + li)
                self.log(
                    f"latency rep {rep + 1}/{a.reps}: {load}% of {self.latency_max:,.0f} = {rate:,} msgs/s, "
                    f"{n:,} messages ({', '.join(order)})"
                )
                topics = []
                for client in order:
                    topic = self.topic(f"{self.bed.brokers}b", "lat", rep, load, SHORT[client])
                    self.create(topic, PARTITIONS)
                    topics.append(topic)
                    plan = self.clients.producer(client, proto, topic, "@JSON@", n, size, rate=rate)
                    plan.phase = "latency"
                    plan.tags = {"section": "latency", "partitions": PARTITIONS, "load": load}
                    self.execute(plan, n, rep=rep)
                self.admin.delete(topics)

    def cleanup(self):
        for path in self.kcat_values.values():
            if os.path.exists(path):
                os.unlink(path)
        self.kcat_values.clear()


def curve_messages(args, size):
    """Messages per curve run: --curve-messages, capped at --curve-bytes of values."""
    return max(1000, min(args.curve_messages, args.curve_bytes // size))


def rotate(items, k):
    k %= len(items) if items else 1
    return items[k:] + items[:k]


# ----- summary -----------------------------------------------------------------------------------

METRICS = ("value_bytes", "msgs_per_s", "mb_per_s", "cpu_s", "cpu_s_per_m", "max_rss_mib", "wall_s")
RATIO_METRICS = ("msgs_per_s", "mb_per_s", "cpu_s", "cpu_s_per_m", "max_rss_mib")


def kw_value(kw, peer, k):
    """kafka-workload's figure `k` for a ratio to `peer`: over the peer's window when the peer's
    differs from ours and we have that one too (rdkafka_performance's consumer: first record to
    last), else our own."""
    alt = (kw.get("alt_rates") or {}).get(peer.get("window"))
    if alt and k in alt:
        return alt[k]
    return kw.get(k)


def summarize(records, phases_clients, section=None, brokers=None):
    """Medians per (phase, partitions, value size, protocol, client) and kafka-workload's median
    ratios to each peer, for the records of one section and bed (None: any). Groups come in the
    order the run produced them."""
    records = [
        r
        for r in records
        if (section is None or r.get("section") == section) and (brokers is None or r.get("brokers") == brokers)
    ]
    rows = []
    for phase, clients in phases_clients:
        in_phase = [r for r in records if r["phase"] == phase]
        groups = []
        for r in in_phase:
            g = (r.get("partitions"), r.get("size"), r["protocol"])
            if g not in groups:
                groups.append(g)
        for partitions, size, proto in groups:
            ok = [r for r in in_phase if (r.get("partitions"), r.get("size"), r["protocol"]) == (partitions, size, proto)]
            by_client = {c: [r for r in ok if r["client"] == c and not r["error"]] for c in clients}
            kw_by_rep = {r["rep"]: r for r in by_client.get("kafka-workload", [])}
            for client in clients:
                runs = by_client[client]
                failed = [r for r in ok if r["client"] == client and r["error"]]
                row = {
                    "phase": phase,
                    "protocol": proto,
                    "client": client,
                    "size": size,
                    "partitions": partitions,
                    "brokers": brokers,
                    "messages": median([r.get("expected") for r in runs + failed]),
                    "runs": len(runs),
                    "failed_runs": len(failed),
                }
                for k in METRICS:
                    row[k] = median([r.get(k) for r in runs])
                if client != "kafka-workload":
                    for k in RATIO_METRICS:
                        pairs = [
                            ratio(kw_value(kw_by_rep[r["rep"]], r, k), r.get(k)) for r in runs if r["rep"] in kw_by_rep
                        ]
                        row["kw_ratio_" + k] = median(pairs)
                rows.append(row)
    return rows


# What each latency row's figures are, as the tool reports them.
LATENCY_VARIANTS = [
    ("kafka-workload", "latency", "kafka-workload", "--json ack_latency: scheduled send → ack (coordinated omission corrected)"),
    ("kafka-workload", "latency_uncorrected", "kafka-workload, uncorrected", "--json ack_latency_uncorrected: actual send → ack"),
    ("ProducerPerformance", "latency", "ProducerPerformance", "its summary line: send() → callback, whole ms"),
    ("rdkafka_performance", "latency", "rdkafka_performance", "its -l -A per-message µs (stamped in the payload before produce → delivery report); percentiles by the bench"),
]
LATENCY_KEYS = ("p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")


def rkp_rate_note(rate):
    """rdkafka_performance -r R sleeps int(10^6/R) µs after each message: what that allows."""
    if not rate:
        return None
    sleep_us = int(1e6 / rate)
    if sleep_us == 0:
        return "-r above 1,000,000 rounds its sleep to 0 µs: unpaced"
    return f"-r sleeps {sleep_us} µs per message (at most {1e6 / sleep_us:,.0f} msgs/s)"


def summarize_latency(records):
    """Medians per load and latency variant; kw÷peer p99 is kafka-workload's uncorrected p99
    (actual send → ack, as the peers measure) over the peer's, median of per-repetition ratios."""
    lat = [r for r in records if r["phase"] == "latency"]
    loads = []
    for r in lat:
        if r.get("load") not in loads:
            loads.append(r.get("load"))
    rows = []
    for load in loads:
        at = [r for r in lat if r.get("load") == load]
        kw_by_rep = {
            r["rep"]: r for r in at if r["client"] == "kafka-workload" and not r["error"] and r.get("latency_uncorrected")
        }
        for client, key, label, basis in LATENCY_VARIANTS:
            mine = [r for r in at if r["client"] == client]
            if not mine:
                continue
            runs = [r for r in mine if not r["error"] and r.get(key)]
            target = median([r.get("rate") for r in mine])
            row = {
                "load": load,
                "target_msgs_per_s": target,
                "client": client,
                "variant": label,
                "basis": basis,
                "runs": len(runs),
                "failed_runs": len(mine) - len(runs),
                "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
                "cpu_s": median([r["cpu_s"] for r in runs]),
                "max_rss_mib": median([r["max_rss_mib"] for r in runs]),
            }
            for k in LATENCY_KEYS:
                row[k] = median([r[key].get(k) for r in runs])
            if client == "rdkafka_performance":
                row["note"] = rkp_rate_note(target)
            if client != "kafka-workload":
                row["kw_ratio_p99"] = median(
                    [
                        ratio(kw_by_rep[r["rep"]]["latency_uncorrected"]["p99_ms"], r[key]["p99_ms"])
                        for r in runs
                        if r["rep"] in kw_by_rep
                    ]
                )
            rows.append(row)
    return rows


def verdict(rows, memory, mem_sizes, label=""):
    checks = []
    for row in rows:
        if row["client"] in PEER_OF_JAVA.values():
            r = row.get("kw_ratio_msgs_per_s")
            size = f" {fmt_size(row['size'])}" if row.get("size") else ""
            checks.append(
                {
                    "check": f"{label}{row['phase']} {row['protocol']}{size}: kafka-workload msgs/s >= {row['client']}",
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


def peer_cells(r, keys):
    if r["client"] == "kafka-workload":
        return ["" for _ in keys]
    return [fmt_ratio(r.get("kw_ratio_" + k)) for k in keys]


def rows_table(rows):
    out = [
        "| phase | protocol | client | value B | msgs/s | MB/s | CPU s | peak RSS MiB "
        "| kw÷peer msgs/s | kw÷peer MB/s | kw÷peer CPU | kw÷peer RSS |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        failed = f" ({r['failed_runs']} failed)" if r["failed_runs"] else ""
        # The value size asked of every client; the measured one when a run shows another.
        vb = r["value_bytes"] if r.get("size") is None or r["value_bytes"] is None else r["size"]
        if r.get("size") and r["value_bytes"] is not None and abs(r["value_bytes"] - r["size"]) > 0.5:
            vb_s = f"{fmt(r['value_bytes'])} (asked {r['size']})"
        else:
            vb_s = fmt(vb)
        cells = [
            r["phase"], r["protocol"], r["client"] + failed, vb_s, fmt(r["msgs_per_s"]),
            fmt(r["mb_per_s"], 1), fmt(r["cpu_s"], 2), fmt(r["max_rss_mib"], 1),
            *peer_cells(r, ("msgs_per_s", "mb_per_s", "cpu_s", "max_rss_mib")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def curve_table(rows):
    out = [
        "| partitions | value B | phase | client | messages | msgs/s | MB/s | CPU s per 1M msgs "
        "| peak RSS MiB | kw÷peer msgs/s | kw÷peer CPU per msg | kw÷peer RSS |",
        "|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        failed = f" ({r['failed_runs']} failed)" if r["failed_runs"] else ""
        cells = [
            fmt(r["partitions"]), fmt(r["size"]), r["phase"], r["client"] + failed, fmt(r["messages"]),
            fmt(r["msgs_per_s"]), fmt(r["mb_per_s"], 1), fmt(r["cpu_s_per_m"], 2), fmt(r["max_rss_mib"], 1),
            *peer_cells(r, ("msgs_per_s", "cpu_s_per_m", "max_rss_mib")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def latency_table(rows):
    out = [
        "| load | target msgs/s | client | latency as the tool reports it | achieved msgs/s | p50 ms | p99 ms "
        "| p99.9 ms | max ms | mean ms | CPU s | peak RSS MiB | kw÷peer p99 |",
        "|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        failed = f" ({r['failed_runs']} failed)" if r["failed_runs"] else ""
        basis = r["basis"] + (f"; {r['note']}" if r.get("note") else "")
        cells = [
            f"{r['load']}%", fmt(r["target_msgs_per_s"]), r["variant"] + failed, basis, fmt(r["msgs_per_s"]),
            *(fmt(r[k], 2) for k in LATENCY_KEYS), fmt(r["cpu_s"], 2), fmt(r["max_rss_mib"], 1),
            "" if r["client"] == "kafka-workload" else fmt_ratio(r.get("kw_ratio_p99")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def rows_heading(meta, brokers):
    sizes = meta.get("value_sizes")
    sizes = " and ".join(fmt_size(s) for s in sizes) + " values (every client the same size), " if sizes else ""
    bed = (
        "3 KRaft brokers on the same host, replication factor 3, min.insync.replicas 2"
        if brokers == 3
        else "1 KRaft broker on the same host"
    )
    return (
        f"kafka-workload vs peers: {meta['messages']:,} messages per run, {meta['reps']} repetition(s), "
        f"{sizes}{PARTITIONS}-partition topics, acks=all, medians; Kafka {meta['kafka_version']} ({bed})."
    )


def markdown(rows, memory, checks, meta, extra=()):
    """`rows`: the 1-broker produce/consume rows; `extra`: (kind, payload) for the other
    sections in run order: ("latency", rows), ("rows3", rows), ("curve", rows)."""
    out = []
    if rows:
        out += [rows_heading(meta, 1), ""] + rows_table(rows)
    if memory:
        out.append("")
        out.append("| kafka-workload producing | peak RSS MiB (median) | runs |")
        out.append("|--:|--:|--|")
        for n, mib in memory.items():
            runs = ", ".join(fmt(x, 1) for x in meta.get("memory_runs", {}).get(n, []))
            out.append(f"| {int(n):,} messages | {fmt(mib, 1)} | {runs} |")
    for kind, payload in extra:
        out.append("")
        if kind == "latency":
            lm = meta.get("latency", {})
            out.append(
                f"Latency at fixed load ({plural(lm.get('brokers') or 1, 'broker')}, PLAINTEXT, {fmt_size(lm.get('size'))} values, "
                f"6 partitions, acks=all): max = {fmt(lm.get('max_msgs_per_s'))} msgs/s, kafka-workload unpaced "
                f"({lm.get('max_messages', 0):,} messages); each paced run lasts ~{lm.get('seconds')} s at its "
                "target, with the producer's own pacing option. Figures as each tool reports them (see the "
                "fourth column); medians over repetitions."
            )
            out.append("")
            out += latency_table(payload)
            out.append("")
            out.append(
                "kw÷peer p99: kafka-workload's uncorrected p99 (from the actual send, as the peers measure) "
                "over the peer's, median of per-repetition ratios; below 1 means kafka-workload's is lower. "
                "Only kafka-workload corrects for coordinated omission: a peer that falls behind its "
                "schedule reports latencies from its late sends."
            )
        elif kind == "rows3":
            out += [rows_heading(meta, 3), ""] + rows_table(payload)
        elif kind == "curve":
            c = meta.get("curve", {})
            out.append(
                f"Curve (3 brokers, RF 3, PLAINTEXT, acks=all): partitions × value size, produce then consume "
                f"of kafka-workload's topic; {c.get('messages', 0):,} messages per run, at most "
                f"{c.get('bytes', 0) / 1e6:,.0f} MB of values; {c.get('reps', 1)} repetition(s), medians. "
                "CPU s per 1M msgs includes each process's start-up (a JVM's is ~1-2 CPU-s)."
            )
            out.append("")
            out += curve_table(payload)
    if checks:
        out.append("")
        for c in checks:
            v = "—" if c["value"] is None else f"{c['value']:.2f}"
            out.append(f"- {'PASS' if c['pass'] else 'FAIL'}: {c['check']} ({v})")
    out.append("")
    out.append(
        "kw÷peer: kafka-workload's figure divided by the peer's, median of per-repetition ratios "
        "(above 1 means kafka-workload is faster for msgs/s and MB/s, costlier for CPU and RSS). "
        "Every producer sends values of the row's size; consumers all read kafka-workload's topic. "
        "Against rdkafka_performance's consumer, whose window starts at its first record, "
        "kafka-workload's side of the ratio is over the same window (its first record to its last). "
        "MB = 10^6 bytes of values."
    )
    out.append("")
    if meta.get("bench_command"):
        out.append(f"Run with `{meta['bench_command']}`; every client command is in commands.sh.")
        out.append("")
    for w in meta.get("warm_ups", []):
        out.append(warm_up_line(w))
        out.append("")
    out.append(f"Machine: {meta['machine']}")
    out.append(f"Clients: {meta['versions']}")
    return "\n".join(out)


def warm_up_line(w):
    rounds = w["rounds_msgs_per_s"]
    how = "" if w["converged"] else f"; stopped by its {WARM_UP_LIMIT_S[w['brokers']]} s limit, still climbing"
    return (
        f"Warm-up on the {w['brokers']}-broker bed, not counted: {len(rounds)} rounds of "
        f"{WARM_UP_ROUND:,} messages by kafka-workload in {w['seconds']:.0f} s until "
        f"{WARM_UP_RULE}{how}; msgs/s per round: {', '.join(f'{r:,}' for r in rounds) or 'none'}."
    )


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
        f"Linux {platform.release()}, broker(s) and clients sharing the cores"
    )


def versions(bed, kcat_env, rkp):
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
    text = (
        f"kafka-workload {rev[0] if rev else '?'}{'+local changes' if dirty else ''} (librdkafka "
        f"vendored by rdkafka); Kafka {bed.kafka_version} tools on {java}; "
    )
    if rkp:
        lib = [ln.split()[2] for ln in first_line([rkp, "-h"]) if ln.startswith("librdkafka version")]
        ssl = (first_line(["openssl", "version"]) or ["OpenSSL ?"])[0].split(" ")[:2]
        text += (
            f"rdkafka_performance of librdkafka {lib[0] if lib else '?'} ({os.path.basename(os.path.dirname(rkp))} "
            f"sources, {' '.join(ssl)} from Debian); "
        )
    return text + f"kcat: {kcat or '?'}; kafka-python {kp[0] if kp else '?'}"


def plan_sections(args):
    """[(section, brokers)] in run order."""
    if args.plan == "full":
        s = [("rows", 1)]
        if args.memory:
            s.append(("memory", 1))
        return s + [("latency", 1), ("rows", 3), ("curve", 3)]
    if args.brokers == 3:
        s = [("rows", 3), ("curve", 3)]
        return s + ([("latency", 3)] if args.latency else [])
    s = [("rows", 1)]
    if args.memory:
        s.append(("memory", 1))
    return s + ([("latency", 1)] if args.latency else [])


def client_list(p, text, known, what):
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in known:
            p.error(f"{what}: unknown client {x} (one of {', '.join(known)})")
    return items


def main(argv=None):
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="200,000 messages, one repetition, memory at 100k and 1M, 5 s latency runs, curve runs of at most 100 MB")
    p.add_argument("--plan", choices=["default", "full"], default="default",
                   help="default: produce/consume rows (+ memory) on 1 broker; full: those, the latency section, "
                        "then the rows and the curve on 3 brokers (every row of docs/performance.md)")
    p.add_argument("--brokers", type=int, choices=[1, 3], default=1,
                   help="3: the produce/consume rows and the partitions x size curve on a 3-broker bed (RF 3)")
    p.add_argument("--latency", action="store_true", help="add the latency-at-fixed-load section")
    p.add_argument("--messages", type=int, help="messages per run (default 1,000,000)")
    p.add_argument("--reps", type=int, help="repetitions (default 3)")
    p.add_argument("--value-sizes", default="256,1024",
                   help=f"value sizes of the produce/consume rows, bytes, >= {MIN_VALUE_SIZE} (default 256,1024)")
    p.add_argument("--protocols", default="PLAINTEXT,SASL_PLAINTEXT", help="protocols of the rows (the latency section and the curve use PLAINTEXT)")
    p.add_argument("--producers", default=",".join(PRODUCERS), help="clients in the produce phase")
    p.add_argument("--consumers", default=",".join(CONSUMERS), help="clients in the consume phase ('' for none)")
    p.add_argument("--memory", help="message counts for the RSS growth check (default 100000,10000000; '' for none)")
    p.add_argument("--memory-reps", type=int, help="runs per memory count, median taken (default 3, --quick 1)")
    p.add_argument("--latency-loads", default=",".join(map(str, LATENCY_LOADS)),
                   help="percentages of the max rate (default 50,90)")
    p.add_argument("--latency-seconds", type=float, help="length of each paced run (default 10, --quick 5)")
    p.add_argument("--curve-partitions", default=",".join(map(str, CURVE_PARTITIONS)), help="curve partition counts (default 1,6,24)")
    p.add_argument("--curve-sizes", default=",".join(map(str, CURVE_SIZES)), help="curve value sizes (default 256,1024,10240)")
    p.add_argument("--curve-messages", type=int, help="messages per curve run (default --messages)")
    p.add_argument("--curve-bytes", type=int, help="cap on value bytes per curve run (default 1e9, --quick 1e8)")
    p.add_argument("--curve-reps", type=int, help="curve repetitions (default --reps)")
    p.add_argument("--curve-producers", default=",".join(CURVE_PRODUCERS), help="curve producers (default: all but kafka-python)")
    p.add_argument("--curve-consumers", default=",".join(CURVE_CONSUMERS), help="curve consumers (default: all but kafka-python)")
    p.add_argument("--out", help="output directory (default target/bench/<timestamp>)")
    p.add_argument("--json", help="also write the JSON result here")
    p.add_argument("--no-setup", action="store_true",
                   help="skip `scripts/test-bed up` and `cargo build --release`; the bed must have the brokers each section needs")
    p.add_argument("--no-build", action="store_true", help="skip `cargo build --release` (use target/release/kafka-workload as it is)")
    p.add_argument("--env", action="store_true", help="take KAFKA_* addresses from the environment, not scripts/test-bed env")
    p.add_argument("--no-warm-up", action="store_true")
    args = p.parse_args(argv)
    args.messages = args.messages or (200_000 if args.quick else 1_000_000)
    args.reps = args.reps or (1 if args.quick else 3)
    if args.memory is None:
        args.memory = "100000,1000000" if args.quick else "100000,10000000"
    args.memory = [int(x) for x in args.memory.split(",") if x]
    args.memory_reps = args.memory_reps or (1 if args.quick else 3)
    try:
        args.value_sizes = parse_sizes(args.value_sizes)
        args.curve_sizes = parse_sizes(args.curve_sizes)
    except ValueError as e:
        p.error(f"value size: {e}")
    args.curve_partitions = [int(x) for x in args.curve_partitions.split(",") if x]
    args.curve_messages = args.curve_messages or args.messages
    args.curve_bytes = args.curve_bytes or (100_000_000 if args.quick else 1_000_000_000)
    args.curve_reps = args.curve_reps or args.reps
    args.latency_loads = [int(x) for x in args.latency_loads.split(",") if x]
    args.latency_seconds = args.latency_seconds or (5 if args.quick else 10)
    args.protocols = [x for x in args.protocols.split(",") if x]
    for proto in args.protocols:
        if proto not in PROTOCOLS:
            p.error(f"--protocols: {proto} is not one of {', '.join(PROTOCOLS)}")
    args.producers = client_list(p, args.producers, PRODUCERS, "--producers")
    args.consumers = client_list(p, args.consumers, CONSUMERS, "--consumers")
    args.curve_producers = client_list(p, args.curve_producers, PRODUCERS, "--curve-producers")
    args.curve_consumers = client_list(p, args.curve_consumers, CONSUMERS, "--curve-consumers")
    if "kafka-workload" not in args.producers or "kafka-workload" not in args.curve_producers:
        p.error("the producers must include kafka-workload (its topic feeds the consumers)")
    sections = plan_sections(args)

    try:
        return run(args, argv, sections)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2


def run(args, argv, sections):
    if not (args.no_setup or args.no_build):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True, stdout=sys.stderr)
    wanted = set(args.producers + args.consumers)
    if any(s == "curve" for s, _ in sections):
        wanted |= set(args.curve_producers + args.curve_consumers)
    rkp = build_rdkafka_performance() if "rdkafka_performance" in wanted else None
    started = dt.datetime.now()
    out = args.out or os.path.join(REPO, "target", "bench", started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    bench = Bench(args, out, rkp)
    names = ", ".join(f"{s} ({plural(b, 'broker')})" for s, b in sections)
    bench.log(f"writing to {out}; sections: {names}")
    t0 = time.monotonic()
    memory = {}
    try:
        for section, brokers in sections:
            bench.use_bed(brokers)
            if section == "rows":
                for rep in range(args.reps):
                    bench.rows(rep)
            elif section == "memory":
                memory = bench.memory()
            elif section == "latency":
                bench.latency()
            elif section == "curve":
                for rep in range(args.curve_reps):
                    bench.curve(rep)
    finally:
        bench.cleanup()
        # The copy of the binary is 100+ MB with its line tables; commands.sh says what it was.
        if os.path.exists(bench.kw):
            os.unlink(bench.kw)
    if bench.beds and bench.beds[-1] != 1 and not (args.no_setup or args.env):
        bench.log(f"the test bed is left up with {bench.beds[-1]} brokers (scripts/test-bed down, or up again with 1)")

    phases = [("produce", args.producers)]
    if args.consumers:
        phases.append(("consume", args.consumers))
    curve_phases = [("produce", args.curve_producers)]
    if args.curve_consumers:
        curve_phases.append(("consume", args.curve_consumers))
    rows1 = summarize(bench.records, phases, section="rows", brokers=1)
    rows3 = summarize(bench.records, phases, section="rows", brokers=3)
    curve = summarize(bench.records, curve_phases, section="curve", brokers=3)
    lat = summarize_latency(bench.records)
    checks = verdict(rows1, memory, args.memory if memory else [])
    checks += verdict(rows3, {}, [], label="3 brokers: ")
    lat_brokers = next((b for s, b in sections if s == "latency"), None)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "sections": [f"{s}@{b}" for s, b in sections],
        "messages": args.messages,
        "reps": args.reps,
        "partitions": PARTITIONS,
        "value_sizes": args.value_sizes,
        "kafka_version": bench.bed.kafka_version if bench.bed else "?",
        "test_bed_port_offset": bench.bed.port_offset if bench.bed else None,
        "machine": machine_info(),
        "versions": versions(bench.bed, bench.clients.kcat_env, rkp) if bench.bed else "?",
        "memory_runs": getattr(bench, "memory_runs", {}),
        "warm_ups": bench.warm_ups,
        "latency": {
            "brokers": lat_brokers,
            "size": args.value_sizes[0],
            "max_msgs_per_s": bench.latency_max,
            "max_messages": args.messages,
            "loads": args.latency_loads,
            "seconds": args.latency_seconds,
        },
        "curve": {
            "partitions": args.curve_partitions,
            "sizes": args.curve_sizes,
            "messages": args.curve_messages,
            "bytes": args.curve_bytes,
            "reps": args.curve_reps,
        },
        "bench_command": ("scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
    }
    extra = []
    for section, brokers in sections:
        if section == "latency" and lat:
            extra.append(("latency", lat))
        elif section == "rows" and brokers == 3:
            extra.append(("rows3", rows3))
        elif section == "curve":
            extra.append(("curve", curve))
    table = markdown(rows1, memory, checks, meta, extra)
    result = {
        "schema": "kafka-workload/bench/v2",
        "meta": meta,
        "summary": rows1,
        "summary_3_brokers": rows3,
        "curve": curve,
        "latency": lat,
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
        f.write("# The exact commands scripts/bench ran, in order. Each topic was created beforehand over the\n")
        f.write("# PLAINTEXT listener (6 partitions, or the curve's count; replication factor 1 on the 1-broker\n")
        f.write("# bed, 3 on the 3-broker one). kcat-values-SIZE-N.txt (deleted after the run) held N lines of\n")
        f.write("# SIZE uppercase letters. rdkafka_performance's -A files (one latency in µs per message) were\n")
        f.write("# summarized into results.json and deleted. Each command ran under\n")
        f.write("# `/usr/bin/time -f '%e %U %S %M %x'`. kafka-workload here was a copy of\n")
        f.write(f"# target/release/kafka-workload ({meta['versions'].split(' (')[0]}), deleted after the run.\n")
        f.write("\n".join(bench.commands) + "\n")
    if not args.out:  # target/bench/latest: only among the bench's own run directories
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
