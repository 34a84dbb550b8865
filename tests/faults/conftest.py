"""tests/faults/conftest.py: fixtures for the fault suite (`pytest tests/faults`).

Owns: the three-broker test bed as `scripts/test-bed env` describes it, fresh RF-3 topics and
SCRAM users per test, running the kafka-workload binary with `--json` (and always reaping it),
broker faults that are always undone, an outside probe that measures recovery times, the
independent reader that audits a whole topic on the open PLAINTEXT listener, and the one-line
figures each test prints and appends to the summary file. test_brokers.py and test_consumers.py
use them; so can other fault modules (e.g. test_network.py).

Running it (the default bed on ports 9092... is used when TEST_BED_PORT_OFFSET is unset):

    export TEST_BED_PORT_OFFSET=1000            # optional: a bed of its own beside the default
    scripts/test-bed up --brokers 3
    set -a; eval "$(scripts/test-bed env)"; set +a
    .venv/bin/python -m pytest tests/faults -v -s

Environment:

    TEST_BED_PORT_OFFSET  which bed; passed through to every `scripts/test-bed` call
    KW_BIN                the binary (else KAFKA_WORKLOAD_BIN, else
                          $CARGO_TARGET_DIR/release/kafka-workload, else target/release/...)
    KW_FAULTS_LONG=1      longer runs: the producer runs ~3x as long before, during and after each
                          fault and brokers stay down longer (default timings fit the whole suite
                          in a few minutes on 2 cores)
    KW_FAULTS_SKIP=1      skip, instead of failing, when the bed does not have 3 brokers
    KW_FAULTS_SUMMARY     the summary file (default: $TEST_BED_DIR/faults-last-run.txt); it is
                          emptied at the start of a session and gets one figures line per test

Every wait has a deadline; a stopped or killed broker is started again when the test ends, even
on failure; every kafka-workload process a test starts is killed if still running at its end.
"""

import json
import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
LONG = bool(os.environ.get("KW_FAULTS_LONG"))
SKIP_UNLESS_THREE = bool(os.environ.get("KW_FAULTS_SKIP"))
# The suite's own clients log nothing: brokers going away is the point, not news.
QUIET = {"log_level": 0}


class Timings:
    """Run lengths (s) and the producer's pace. KW_FAULTS_LONG=1 stretches every phase.

    replay_bound(): the most duplicates one consumer restart or rebalance may cause. The
    consumer stores an offset after processing its record and commits stored offsets every
    `commit_interval` (README: "committed every second"), so what a consumer processed but had
    not committed when it died is at most one commit window: rate x commit_interval records.
    Doubled for margin (a consumer catching up reads faster than the producer's rate), plus
    1000 for the commit that was in flight.
    """

    rate = 3000                        # msgs/s, the paced producer
    before_fault = 12 if LONG else 4   # s of producing before the fault
    down = 15 if LONG else 3           # s a broker (or the cluster) stays down
    after_fault = 30 if LONG else 8    # s of producing after the recovery
    commit_interval = 1.0              # s, the consumer's auto-commit (src/kafka/config.rs)
    session_timeout = 10               # s, the consumer's session.timeout.ms (same place)

    @classmethod
    def replay_bound(cls):
        return int(2 * cls.rate * cls.commit_interval) + 1000

    @classmethod
    def session_replay_bound(cls):
        """After a lost group session: the coordinator that stopped answering heartbeats
        stopped answering commits too, so the last commit that took may be up to a session
        timeout old (seen on the loaded 2-core bed: 4,972 after a leader kill)."""
        return int(cls.rate * (cls.session_timeout + cls.commit_interval)) + 1000


T = Timings


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout, interval=0.2, what="condition"):
    """Polls predicate() until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


# --- the bed ------------------------------------------------------------------------------------

class Bed:
    """The running test bed, from `scripts/test-bed env` (run with this environment's
    TEST_BED_PORT_OFFSET)."""

    def __init__(self, script, env):
        self.script = script
        self.env = env
        self.dir = Path(env["TEST_BED_DIR"])
        self.brokers = int(env["KAFKA_BROKERS"])
        self.sasl_plaintext = env["KAFKA_SASL_PLAINTEXT"]
        self.plaintext = env["KAFKA_PLAINTEXT"]

    def test_bed(self, *args, timeout=120, check=True):
        proc = subprocess.run([self.script, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"scripts/test-bed {' '.join(map(str, args))} exited "
                                 f"{proc.returncode}:\n{proc.stdout[-2000:]}\n"
                                 f"{proc.stderr[-2000:]}")
        return proc

    def admin(self):
        return AdminClient({**QUIET, "bootstrap.servers": self.plaintext})

    def running_nodes(self):
        """Node numbers whose process runs, from `scripts/test-bed status`."""
        out = self.test_bed("status", check=False, timeout=30).stdout
        return {int(n) for n in re.findall(r"node (\d+): running", out)}


def parse_env(text):
    env = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def _bed_problem(msg):
    if SKIP_UNLESS_THREE:
        pytest.skip(f"{msg} (KW_FAULTS_SKIP is set)")
    pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def bed():
    script = os.environ.get("TEST_BED_SCRIPT") or str(REPO / "scripts" / "test-bed")
    offset = os.environ.get("TEST_BED_PORT_OFFSET", "")
    try:
        proc = subprocess.run([script, "env"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        _bed_problem(f"cannot run {script} env: {e}")
    if proc.returncode != 0:
        _bed_problem(f"the test bed (TEST_BED_PORT_OFFSET={offset or 'unset'}) is not up: "
                     f"{proc.stderr.strip()}; start it with `scripts/test-bed up --brokers 3`")
    env = parse_env(proc.stdout)
    missing = [k for k in ("TEST_BED_DIR", "KAFKA_BROKERS", "KAFKA_SASL_PLAINTEXT",
                           "KAFKA_PLAINTEXT") if k not in env]
    if missing:
        _bed_problem(f"`scripts/test-bed env` did not print {missing}")
    return Bed(script, env)


def wait_healthy(bed, timeout=90):
    """Three brokers in the metadata and every partition of every topic fully in sync."""
    admin = bed.admin()

    def healthy():
        try:
            md = admin.list_topics(timeout=5)
        except KafkaException as e:
            return f"metadata: {e}"
        if len(md.brokers) != 3:
            return f"brokers {sorted(md.brokers)}"
        lagging = [f"{t}/{p.id}" for t, tm in md.topics.items() for p in tm.partitions.values()
                   if p.leader < 0 or len(p.isrs) < len(p.replicas)]
        return True if not lagging else f"under-replicated: {lagging[:5]}"

    wait_until(lambda: healthy() is True, timeout, interval=0.5,
               what="three brokers with every partition in sync")


@pytest.fixture(scope="module", autouse=True)
def three_brokers(bed):
    """Every module here needs a three-broker bed (RF 3, min.insync.replicas 2): fail
    otherwise (skip with KW_FAULTS_SKIP=1). A broker left stopped by an aborted run is started."""
    lists = {k: bed.env[k].split(",") for k in ("KAFKA_SASL_PLAINTEXT", "KAFKA_PLAINTEXT")}
    if bed.brokers != 3 or any(len(v) != 3 for v in lists.values()):
        _bed_problem(f"the fault suite needs a 3-broker test bed, but `scripts/test-bed env` "
                     f"(TEST_BED_PORT_OFFSET={bed.env.get('TEST_BED_PORT_OFFSET', '0')}) says "
                     f"KAFKA_BROKERS={bed.brokers}, SASL_PLAINTEXT={bed.sasl_plaintext}: run "
                     "`scripts/test-bed down && scripts/test-bed up --brokers 3`")
    stopped = {1, 2, 3} - bed.running_nodes()
    if stopped:
        start_nodes(bed, stopped)
    wait_healthy(bed)


def start_nodes(bed, nodes, timeout=200, attempts=3):
    """`scripts/test-bed start N` for every node at once (a node alone cannot finish starting
    while the others that form the controller quorum are down), then waits until each one is
    in the cluster's metadata. Retried: a start can fail while scripts/test-bed is being
    edited; a node whose start failed but whose process runs is only waited for."""
    pending = set(nodes)
    errors = []
    for attempt in range(attempts):
        procs = {n: subprocess.Popen([bed.script, "start", str(n)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for n in pending}
        for n, p in procs.items():
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            if p.returncode == 0:
                pending.discard(n)
            else:
                errors.append(f"start {n} (attempt {attempt + 1}): exit {p.returncode}: "
                              f"{out[-500:]}")
        pending &= {1, 2, 3} - bed.running_nodes()
        if not pending:
            break
        time.sleep(3)
    if pending:
        raise AssertionError(f"could not start nodes {sorted(pending)}: {errors}")
    wait_serving(bed, nodes, timeout=120 if errors else 60)


def wait_serving(bed, nodes, timeout):
    """Every node in `nodes` is a broker of the cluster's metadata (on the open listener)."""
    admin = bed.admin()

    def serving():
        try:
            return set(nodes) <= set(admin.list_topics(timeout=5).brokers)
        except KafkaException:
            return False

    wait_until(serving, timeout, interval=0.5, what=f"nodes {sorted(nodes)} in the metadata")


class Brokers:
    """Broker faults through scripts/test-bed; whatever was stopped is started by restore()."""

    def __init__(self, bed):
        self.bed = bed
        self.touched = set()
        self.admin = bed.admin()

    def leader_of(self, topic, partition=0):
        md = self.admin.list_topics(topic, timeout=10)
        return md.topics[topic].partitions[partition].leader

    def coordinator_of(self, group):
        desc = self.admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        return desc.coordinator.id

    def kill(self, node):
        """SIGKILL broker `node`; returns once its process is gone."""
        self.touched.add(node)
        self.bed.test_bed("kill", node, timeout=30)

    def stop(self, node):
        """SIGTERM (controlled shutdown) broker `node`; returns once its process is gone."""
        self.touched.add(node)
        self.bed.test_bed("stop", node, timeout=90)

    def stop_all(self):
        """SIGTERM to all three at once; returns once all are gone. A broker whose controlled
        shutdown still waits 30 s later is waiting for a controller quorum that has already
        gone (the others stopped first): it gets SIGKILL, as a whole-cluster outage would give
        it. Returns the nodes that needed it."""
        self.touched |= {1, 2, 3}
        procs = [subprocess.Popen([self.bed.script, "stop", str(n), "--kill-after", "30"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for n in (1, 2, 3)]
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=90)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate()[0])
        left = self.bed.running_nodes()
        assert not left, f"nodes {left} still running after stop: {outs}"
        return {n for n, out in zip((1, 2, 3), outs) if "SIGKILL" in out}

    def start(self, *nodes):
        start_nodes(self.bed, nodes)

    def restore(self):
        down = {1, 2, 3} - self.bed.running_nodes()
        if down:
            start_nodes(self.bed, down)
        if self.touched:
            wait_healthy(self.bed, timeout=120)


@pytest.fixture
def brokers(bed):
    """Broker fault control; every broker the test stopped or killed is started again, and the
    cluster is back in sync, before the next test (even when this one failed)."""
    b = Brokers(bed)
    try:
        yield b
    finally:
        b.restore()


# --- topics and users ---------------------------------------------------------------------------

@pytest.fixture
def new_topic(bed):
    """Factory: a fresh topic, replication factor 3, made through the open listener (leaders
    elected before it returns); deleted after the test."""
    admin = bed.admin()
    made = []

    def make(partitions=3, prefix="flt-topic"):
        name = unique(prefix)
        admin.create_topics([NewTopic(name, partitions, 3)], request_timeout=15)[name].result(20)
        made.append(name)

        def ready():
            md = admin.list_topics(name, timeout=5).topics.get(name)
            return (md is not None and md.error is None and len(md.partitions) == partitions
                    and all(p.leader >= 0 and len(p.isrs) == 3 for p in md.partitions.values()))

        wait_until(ready, 30, what=f"topic {name} with {partitions} in-sync partitions")
        return name

    yield make
    if made:
        try:
            for fut in admin.delete_topics(made, request_timeout=15).values():
                fut.result(20)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


@pytest.fixture
def new_user(bed):
    """Factory: a fresh SCRAM user with producer/consumer grants on `topic` and a group
    prefix; returns (name, password, prefix). Deleted after the test."""
    made = []

    def make(topic, roles="producer,consumer"):
        name = unique("flt-user")
        password = uuid.uuid4().hex
        prefix = f"{name}-"
        bed.test_bed("user", name, password, "--topic", topic, "--roles", roles,
                     "--group-prefix", prefix, timeout=120)
        made.append(name)
        return name, password, prefix

    yield make
    for name in made:
        subprocess.run([bed.script, "user", name, "--delete"], capture_output=True, timeout=60)


# --- the binary ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kw_bin():
    """The kafka-workload binary: KW_BIN, else KAFKA_WORKLOAD_BIN, else the release build."""
    explicit = os.environ.get("KW_BIN") or os.environ.get("KAFKA_WORKLOAD_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "release" / "kafka-workload"
    if not path.is_file():
        pytest.fail(f"{path} not found: build it with `cargo build --release` or set KW_BIN",
                    pytrace=False)
    return str(path)


class Workload:
    """One kafka-workload process with `--json`; output goes to files, so no pipe can fill."""

    def __init__(self, argv, env, workdir, name):
        self.name = name
        self.json_path = workdir / f"{name}.json"
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self.argv = [*argv, "--json", str(self.json_path)]
        self._out = open(self.out_path, "w")
        self._err = open(self.err_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=self._err, env=env,
                                     stdin=subprocess.DEVNULL)
        self.rc = None

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        """Waits for the exit; a process still running at the deadline is killed and the
        test fails, naming it."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} still running after {timeout} s; killed.\n"
                                 f"{self.tail()}") from None
        return self.rc

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def kill9(self):
        """SIGKILL; returns once the process is reaped."""
        self.proc.kill()
        self.rc = self.proc.wait(10)
        return self.rc

    def log(self):
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def tail(self, n=3000):
        return (f"--- {self.name} stdout (tail) ---\n{self.log()[-n:]}\n"
                f"--- {self.name} stderr (tail) ---\n{self.stderr()[-n:]}")

    def result(self):
        """The --json result, or None if the process left none (e.g. SIGKILL)."""
        try:
            return json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return None

    def close(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()


@pytest.fixture
def workload(kw_bin, bed, tmp_path):
    """Factory: start kafka-workload against the bed's SASL_PLAINTEXT (SCRAM) listener as
    `user`, password in the environment, with `--json`; every process is killed at the end.

        workload("pc", ["--producer", "--consumer", "-n", 1000], user=(name, pw, prefix), topic=t)
    """
    started = []

    def start(name, args, *, user, topic, env=None):
        username, password, prefix = user
        argv = [kw_bin, "-s", bed.sasl_plaintext, "-u", username, "-t", topic,
                "-c", prefix, "--no-progress", "--report-interval", "1",
                *map(str, args)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_WORKLOAD_")}
        full_env.update({"NO_COLOR": "1", "KAFKA_WORKLOAD_PASSWORD": password, **(env or {})})
        w = Workload(argv, full_env, tmp_path, name)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def merge(kw_bin, files, out_path):
    """`kafka-workload merge FILES --json OUT`; returns (exit code, merged result, output)."""
    proc = subprocess.run([kw_bin, "merge", *map(str, files), "--json", str(out_path)],
                          capture_output=True, text=True, timeout=60)
    merged = json.loads(Path(out_path).read_text()) if Path(out_path).exists() else None
    return proc.returncode, merged, proc.stdout + proc.stderr


def wait_for_line(w, pattern, timeout):
    """Waits until the process's stdout has a line matching `pattern` (regex); returns the
    monotonic time it was seen. Fails early if the process exits first."""
    rx = re.compile(pattern, re.M)

    def seen():
        if rx.search(w.log()):
            return time.monotonic()
        if not w.running():
            raise AssertionError(f"{w.name} exited {w.proc.returncode} before /{pattern}/\n"
                                 f"{w.tail()}")
        return None

    return wait_until(seen, timeout, interval=0.1, what=f"{w.name}: /{pattern}/")


# --- recovery probe -----------------------------------------------------------------------------

class Probe(threading.Thread):
    """Samples, from outside, every partition's end offset (high watermark: what acks=all
    producers have had acknowledged) and the group's committed offsets, a few times a second,
    over the open listener. A failed sample (cluster down) is simply missing.

    recovery(t_fault, t_effective, kind) -> seconds from t_fault until every partition's value
    went above the first value sampled at or after t_effective (the fault in place), i.e. until
    acknowledgements ("end") or consumption ("committed") resumed on every partition; None if
    not seen. resumed(t_fault, kind) -> seconds from t_fault to the end of the longest pause in
    progress around it (see there). Resolution: the sample interval, plus the 1 s commit
    interval for "committed".
    """

    def __init__(self, bed, topic, partitions, group=None, interval=0.25):
        super().__init__(daemon=True)
        self.topic, self.group, self.interval = topic, group, interval
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        # Consumer calls, not AdminClient.list_offsets: with a partition's leader dead, that one
        # busy-loops in librdkafka 2.16 (seen: 6 s of CPU per 10 s), starving the brokers.
        # Neither consumer subscribes, so neither joins the group. Metadata is refreshed every
        # second, or a partition whose leader died would be asked of the dead broker for
        # minutes.
        fresh = {**QUIET, "topic.metadata.refresh.interval.ms": 1000}
        self.end_client = Consumer({**fresh, "bootstrap.servers": bed.plaintext,
                                    "group.id": unique("flt-probe"),
                                    "enable.auto.commit": False})
        self.group_client = group and Consumer({**fresh, "bootstrap.servers": bed.plaintext,
                                                "group.id": group,
                                                "enable.auto.commit": False})
        self.samples = {"end": [], "committed": []}
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def _end(self):
        out = {}
        for tp in self.tps:
            try:
                high = self.end_client.get_watermark_offsets(tp, timeout=1.5, cached=False)[1]
            except Exception:  # noqa: BLE001 - a partition without a leader right now
                continue
            if high >= 0:
                out[tp.partition] = high
        return out

    def _committed(self):
        try:
            tps = self.group_client.committed(self.tps, timeout=1.5)
        except Exception:  # noqa: BLE001 - coordinator unavailable right now
            return {}
        return {tp.partition: tp.offset for tp in tps if tp.error is None and tp.offset >= 0}

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                end = self._end()
            except Exception:  # noqa: BLE001
                end = {}
            committed = self._committed() if self.group else {}
            with self.lock:
                if end:
                    self.samples["end"].append((t, end))
                if committed:
                    self.samples["committed"].append((t, committed))
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self):
        self.halt.set()
        self.join(15)
        for c in (self.end_client, self.group_client):
            if c:
                c.close()

    def recovery(self, t_fault, t_effective=None, kind="end"):
        t_effective = t_fault if t_effective is None else t_effective
        with self.lock:
            series = list(self.samples[kind])
        base, advanced = {}, set()
        for t, values in series:
            if t < t_effective:
                continue
            for p, v in values.items():
                if p not in base:
                    base[p] = v
                elif v > base[p]:
                    advanced.add(p)
            if len(advanced) == len(self.tps):
                return round(t - t_fault, 2)
        return None

    def resumed(self, t_fault, kind="end", t_effective=None, until=None):
        """Seconds from t_fault until every partition made progress again after the pause the
        fault caused. Per partition, a pause runs from one advance of its value to the next; the
        pauses that count begin by `t_effective` (when the fault was complete: the broker gone,
        the new member assigned; default t_fault) and end after t_fault (and, with `until`, by
        then). The longest of them ends at the partition's recovery; the result is the worst
        partition's, minus t_fault. None if some partition never advanced after t_fault.
        Unlike recovery(), a fault that did not stall anything (a controlled shutdown) gives
        about the time the fault itself took, not a later unrelated hiccup."""
        t_effective = t_fault if t_effective is None else t_effective
        with self.lock:
            series = list(self.samples[kind])
        worst = 0.0
        for tp in self.tps:
            prev_v = last_advance = first_seen = best = None
            for t, values in series:
                v = values.get(tp.partition)
                if v is None:
                    continue
                first_seen = t if first_seen is None else first_seen
                if prev_v is not None and v > prev_v:
                    start = last_advance if last_advance is not None else first_seen
                    if (t > t_fault and start <= t_effective
                            and (until is None or t <= until)
                            and (best is None or t - start > best[0])):
                        best = (t - start, t)
                    last_advance = t
                prev_v = v
            if best is None:
                return None
            worst = max(worst, best[1] - t_fault)
        return round(worst, 2)

    def settle(self, samples=2, timeout=15):
        """Waits until `samples` more samples of each kind came in (after a process ended, so
        that its last commit is seen)."""
        with self.lock:
            want = {k: len(v) + samples for k, v in self.samples.items()}
        kinds = ["end", "committed"] if self.group else ["end"]

        def enough():
            with self.lock:
                return all(len(self.samples[k]) >= want[k] for k in kinds)

        try:
            wait_until(enough, timeout, interval=0.1, what="probe samples")
        except AssertionError:
            pass  # the cluster may be unreachable; recovery() then reports what it has

    def latest(self, kind="end"):
        with self.lock:
            return dict(self.samples[kind][-1][1]) if self.samples[kind] else {}


@pytest.fixture
def probe(bed, tmp_path):
    """Factory: probe(topic, partitions, group=None) starts a Probe; stopped at the end, its
    samples kept in the test's tmp_path (probe-N.json) for a look after a failure."""
    made = []

    def start(topic, partitions, group=None):
        p = Probe(bed, topic, partitions, group)
        p.start()
        made.append(p)
        return p

    yield start
    for i, p in enumerate(made):
        p.stop()
        (tmp_path / f"probe-{i}.json").write_text(json.dumps(p.samples))


def wait_for_progress(probe, kind, at_least, timeout, what, procs=()):
    """Waits until the probe's sum over partitions of `kind` offsets reaches `at_least`;
    fails at once if one of `procs` (Workloads) exits meanwhile."""

    def reached():
        for w in procs:
            if not w.running():
                raise AssertionError(f"{w.name} exited {w.proc.returncode} while waiting for "
                                     f"{what}\n{w.tail()}")
        return sum(probe.latest(kind).values()) >= at_least

    return wait_until(reached, timeout, interval=0.2, what=what)


# --- the independent reader ---------------------------------------------------------------------

def read_topic(bed, topic, timeout=90):
    """Every record of `topic`, read to the end on the open PLAINTEXT listener with
    confluent-kafka: a list of (partition, offset, value bytes)."""
    consumer = Consumer({**QUIET, "bootstrap.servers": bed.plaintext,
                         "group.id": unique("flt-check"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": False})
    try:
        meta = consumer.list_topics(topic, timeout=20)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                for p in meta.topics[topic].partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p for p, high in ends.items() if high > 0}
        records = []
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    continue
                records.append((msg.partition(), msg.offset(), msg.value()))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    remaining.discard(msg.partition())
        assert not remaining, f"partitions {sorted(remaining)} of {topic} not read to the end " \
            f"within {timeout} s (ends {ends})"
        return records
    finally:
        consumer.close()


def ranges_to_set(ranges):
    """[[start, end), ...] (the JSON's range lists) as a set of ints."""
    out = set()
    for r in ranges or []:
        start, end = r
        out.update(range(start, end))
    return out


class TopicAudit:
    """What the independent reader found, checked against the producer's --json."""

    def __init__(self, records, producer_result, run_id):
        self.records = len(records)
        self.foreign = 0
        self.other_runs = 0
        self.by_seq = {}
        ids = set()
        self.duplicate_ids = 0
        for _, _, value in records:
            try:
                m = json.loads(value)
                run, seq, _id = m["run_id"], m["seq"], m["_id"]
            except (ValueError, TypeError, KeyError):
                self.foreign += 1
                continue
            if run != run_id:
                self.other_runs += 1
                continue
            self.by_seq[seq] = self.by_seq.get(seq, 0) + 1
            if _id in ids:
                self.duplicate_ids += 1
            ids.add(_id)
        self.duplicates = sum(n - 1 for n in self.by_seq.values())
        sent = producer_result["sent"]
        failed = ranges_to_set(producer_result.get("failed_seqs"))
        self.acked_seqs = set(range(sent)) - failed
        self.missing = sorted(self.acked_seqs - set(self.by_seq))
        self.unexpected = sorted(s for s in self.by_seq if s >= sent or s < 0)

    def problems(self):
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} acknowledged messages missing from the topic "
                       f"(first seqs {self.missing[:10]})")
        if self.duplicates or self.duplicate_ids:
            dup = sorted(s for s, n in self.by_seq.items() if n > 1)
            out.append(f"{self.duplicates} duplicate records by (run_id, seq), "
                       f"{self.duplicate_ids} by _id (first seqs {dup[:10]})")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} records with seqs the producer never sent "
                       f"({self.unexpected[:10]})")
        if self.foreign or self.other_runs:
            out.append(f"{self.foreign} foreign records, {self.other_runs} of other runs")
        return out


def audit_topic(bed, topic, producer_result, run_id):
    return TopicAudit(read_topic(bed, topic), producer_result, run_id)


# --- figures ------------------------------------------------------------------------------------

def summary_path(bed):
    return Path(os.environ.get("KW_FAULTS_SUMMARY") or bed.dir / "faults-last-run.txt")


@pytest.fixture(scope="session")
def _summary_file(bed, kw_bin):
    path = summary_path(bed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# tests/faults run {time.strftime('%Y-%m-%d %H:%M:%S')} binary {kw_bin} "
                    f"bed {bed.dir} long={int(LONG)}\n")
    return path


def client_errors(*results):
    """librdkafka error events and delivery errors by name, summed over the results' producer
    and consumer sides (the `client.errors` and `producer.errors` maps of the --json)."""
    out = {}
    for r in results:
        if not r:
            continue
        for side in ("producer", "consumer"):
            part = r.get(side) or {}
            for k, n in ((part.get("client") or {}).get("errors") or {}).items():
                out[k] = out.get(k, 0) + n
            if side == "producer":
                for k, n in (part.get("errors") or {}).items():
                    out[f"delivery:{k}"] = out.get(f"delivery:{k}", 0) + n
    return out


@pytest.fixture
def figures(request, _summary_file):
    """figures(fault=..., producer=result, consumer=result, recover=..., **more): prints one
    line of figures and appends it to the summary file.

    sent/acked/failed come from the producer's --json, consumed/lost/duplicates from the
    consumer's (or the merged) --json, errors from the client error maps of every result given
    in `errors_from` (default: producer and consumer)."""

    def record(*, fault, producer, consumer, errors_from=None, **more):
        p = (producer or {}).get("producer") or {}
        c = (consumer or {}).get("consumer") or {}
        a = c.get("audit") or {}
        # One --producer --consumer result given as both sides counts once.
        sources = errors_from if errors_from is not None else \
            tuple({id(r): r for r in (producer, consumer) if r}.values())
        errs = client_errors(*sources)
        fields = {
            "sent": p.get("sent"), "acked": p.get("acked"), "failed": p.get("failed"),
            "consumed": c.get("records"), "lost": a.get("lost"),
            "duplicates": a.get("duplicates"),
            "errors": sum(errs.values()),
            "error_kinds": ",".join(f"{k}:{n}" for k, n in sorted(errs.items())) or "-",
            **more,
        }
        line = f"{request.node.name}: fault=[{fault}] " + " ".join(
            f"{k}={'-' if v is None else v}" for k, v in fields.items())
        print(f"\nFIGURES {line}")
        with open(_summary_file, "a") as f:
            f.write(line + "\n")
        return line

    return record


def pytest_collection_modifyitems(config, items):
    if LONG:
        for item in items:
            item.add_marker(pytest.mark.timeout(900))
