"""tests/sidecar/test_charm_commands.py: kafka-test-app's exact command lines, run through the shim.

Owns: proof that the charm's unchanged `_start_process` works with kafka-workload in place of the
Python client. Each test builds the command string exactly as the charm's `_build_cmd` does
(reference/client-py.md §2: same order, same double spaces, the literal `None` prefix, the TLS
form against the bed's SASL_SSL listener), splits it with shlex and starts it with Popen, stdout
to `<t0>_<role>.log` and stderr to `<t0>_<role>.err`, with the shim
config/charm-shim/charms/kafka/v0/client.py found through PYTHONPATH (as the charm's lib/ is)
and the binary found on PATH. It is stopped with `kill -TERM` (the proposed change) or
`kill -9` (what the charm does today), and what must survive is checked with confluent-kafka
on the bed's open listener: the producer's acknowledged messages, the consumer's committed
offsets.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import REPO, unique, wait_until

SHIM_ROOT = REPO / "config" / "charm-shim"
SHIM = SHIM_ROOT / "charms" / "kafka" / "v0" / "client.py"
PUBLISHED = "Message published to topic="
RECORD = "ConsumerRecord(topic="


def build_cmd(role, username, password, servers, topic, *, prefix=None, tls=None,
              replication_factor=1, partitions=3, num_messages=15):
    """The string kafka-test-app's `_build_cmd` produces (no MongoDB relation)."""
    cmd = ("nohup python3 -m charms.kafka.v0.client "
           f"--username {username} "
           f"--password {password} "
           f"--servers {servers} "
           f"--topic {topic} ")
    if tls:
        cmd = (f"{cmd} --cafile-path {tls['ca']} --certfile-path {tls['cert']} "
               f"--keyfile-path {tls['key']} --security-protocol SASL_SSL ")
    if role == "consumer":
        # An unset prefix is formatted as the string "None", as in the charm.
        return f"{cmd} --consumer --consumer-group-prefix {prefix}"
    assert role == "producer"
    return (f"{cmd} --producer "
            f"--replication-factor {replication_factor} "
            f"--num-partitions {partitions} "
            f"--num-messages {num_messages}")


class CharmProcess:
    """What `_start_process` does: Popen(shlex.split(cmd)), output to /tmp-style files."""

    def __init__(self, cmd, role, workdir, env):
        t0 = int(time.time())
        self.log_path = workdir / f"{t0}_{role}.log"
        self.err_path = workdir / f"{t0}_{role}.err"
        charm_dir = workdir / "charm"
        charm_dir.mkdir(exist_ok=True)
        self._out = open(self.log_path, "w")
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen(shlex.split(cmd), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=charm_dir, env=env)
        self.pid = self.proc.pid

    def kill(self, sig):
        """The charm's way: a `kill` process, not os.kill."""
        subprocess.run(["kill", f"-{sig}", str(self.pid)], timeout=10, check=True)

    def wait(self, timeout):
        return self.proc.wait(timeout)

    def log(self):
        self._out.flush()
        return self.log_path.read_text()

    def err(self):
        self._err.flush()
        return self.err_path.read_text()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()


@pytest.fixture
def charm(kw_bin, tmp_path):
    """Factory: launch a charm command line; every process is killed at the end."""
    started = []
    bin_dir = tmp_path / "usr-local-bin"
    bin_dir.mkdir()
    (bin_dir / "kafka-workload").symlink_to(kw_bin)
    # The hook's environment: the charm's lib/ on PYTHONPATH, kafka-workload on PATH, none of
    # kafka-workload's own settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KAFKA_WORKLOAD_") and k != "PYTHONPATH"}
    env.update({"PYTHONPATH": str(SHIM_ROOT), "NO_COLOR": "1",
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"})

    def launch(cmd, role):
        p = CharmProcess(cmd, role, tmp_path, env)
        started.append(p)
        return p

    launch.env = env
    yield launch
    for p in started:
        p.close()


def assert_exec_replaced(p, kw_bin, password):
    """The PID the charm records is kafka-workload's own, and its argv holds no password."""
    exe = wait_until(lambda: _exe(p.pid) == os.path.realpath(kw_bin) and _exe(p.pid),
                     timeout=20, what=f"pid {p.pid} exec'ing kafka-workload")
    assert exe
    cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")
    assert password.encode() not in b" ".join(cmdline), "password visible in /proc/<pid>/cmdline"
    assert b"--username" in cmdline


def _exe(pid):
    try:
        return os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return None


def tls_files(bed, tmp_path):
    """The charm's /tmp/ca.pem, /tmp/server.pem and /tmp/server.key, from the bed's CA and a
    client certificate it signed (the charm's own certificate comes from the same CA)."""
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem",
             "key": tmp_path / "server.key"}
    shutil.copyfile(bed.ca, files["ca"])
    shutil.copyfile(bed.env["KAFKA_CLIENT_CERT_FILE"], files["cert"])
    shutil.copyfile(bed.env["KAFKA_CLIENT_KEY_FILE"], files["key"])
    return files


def servers_for(bed, tls):
    return bed.sasl_ssl if tls else bed.sasl_plaintext


def read_topic(bed, topic, timeout=60):
    """Every record of `topic` (values as bytes), read to the end on the open listener."""
    consumer = Consumer({"bootstrap.servers": bed.plaintext, "group.id": unique("sc-check"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=20)
        ends = {}
        for p in meta.topics[topic].partitions:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p for p, high in ends.items() if high > 0}
        values = []
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            values.append(msg.value())
            if msg.offset() + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        assert not remaining, f"partitions {remaining} of {topic} not read to the end"
        return values
    finally:
        consumer.close()


def end_offsets(bed, topic):
    consumer = Consumer({"bootstrap.servers": bed.plaintext, "group.id": unique("sc-check")})
    try:
        meta = consumer.list_topics(topic, timeout=20)
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                for p in meta.topics[topic].partitions}
    finally:
        consumer.close()


def committed(bed, topic, group, partitions):
    """{partition: committed offset} of `group` (-1001 when it has none)."""
    consumer = Consumer({"bootstrap.servers": bed.plaintext, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def produce_client_py_messages(bed, topic, n):
    """n messages as the Python client wrote them (its JSON, no run_id/seq), via the open
    listener; returns their _ids."""
    producer = Producer({"bootstrap.servers": bed.plaintext, "acks": "all"})
    ids = []
    for i in range(n):
        _id = unique("m").replace("-", "")
        value = json.dumps({"timestamp": time.time(), "_id": _id, "origin": "test (127.0.0.1)",
                            "content": f"Message #{i}"})
        producer.produce(topic, value.encode())
        ids.append(_id)
    assert producer.flush(30) == 0
    return ids


@pytest.fixture
def fresh_topic_name(bed):
    """A topic name nobody has created yet; deleted after the test if something created it."""
    name = unique("sc-charm")
    yield name
    admin = AdminClient({"bootstrap.servers": bed.plaintext})
    if name in admin.list_topics(timeout=20).topics:
        for fut in admin.delete_topics([name], request_timeout=15).values():
            try:
                fut.result(20)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


def published_contents(log, topic):
    """The JSON objects of the log's `Message published` lines."""
    prefix = f"{PUBLISHED}{topic}, message content: "
    return [json.loads(line.split(prefix, 1)[1]) for line in log.splitlines() if prefix in line]


def producer_summary(log):
    """(sent, acknowledged, failed) from the end-of-run summary's producer line."""
    found = re.findall(r"^producer: (\d+) sent, (\d+) acknowledged, (\d+) failed", log, re.M)
    assert found, f"no producer summary line:\n{log[-3000:]}"
    return tuple(int(n) for n in found[-1])


# --- producer role ----------------------------------------------------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["sasl_plaintext", "sasl_ssl"])
def test_producer_command_runs_to_completion(bed, kw_bin, new_user, charm, fresh_topic_name,
                                             tmp_path, tls):
    topic = fresh_topic_name
    user, password = new_user(topic, "producer")
    cmd = build_cmd("producer", user, password, servers_for(bed, tls), topic,
                    tls=tls_files(bed, tmp_path) if tls else None,
                    replication_factor=1, partitions=3, num_messages=20)
    assert "  --producer --replication-factor 1 --num-partitions 3 --num-messages 20" in cmd
    p = charm(cmd, "producer")
    assert_exec_replaced(p, kw_bin, password)
    rc = p.wait(90)
    log, err = p.log(), p.err()
    assert rc == 0, f"exit {rc}\n{log[-3000:]}\n{err[-3000:]}"
    assert password not in log + err
    assert f"Creating new topic - {topic}" in log
    assert "--producer - Starting..." in log
    published = published_contents(log, topic)
    # Acknowledgements come back per partition, so the log's order may differ from the send order.
    assert sorted(m["content"] for m in published) == sorted(f"Message #{i}" for i in range(20))
    assert all(list(m)[:4] == ["timestamp", "_id", "origin", "content"] for m in published)
    # The topic was created with the charm's --num-partitions, and holds exactly those messages.
    assert len(end_offsets(bed, topic)) == 3
    stored = [json.loads(v) for v in read_topic(bed, topic)]
    assert sorted(m["_id"] for m in stored) == sorted(m["_id"] for m in published)


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_producer_stopped_mid_run_keeps_every_acked_message(bed, kw_bin, new_user, charm,
                                                            fresh_topic_name, sig):
    """The charm's big --num-messages run, stopped midway. SIGTERM (proposed): exit 0, a
    summary, and the topic holds exactly the acknowledged count. SIGKILL (today): every message
    the log reported published (they are logged on acknowledgement) is in the topic."""
    topic = fresh_topic_name
    user, password = new_user(topic, "producer")
    cmd = build_cmd("producer", user, password, bed.sasl_plaintext, topic,
                    num_messages=10_000_000)
    p = charm(cmd, "producer")
    assert_exec_replaced(p, kw_bin, password)
    wait_until(lambda: p.log().count(PUBLISHED) >= 50 or p.proc.poll() is not None, timeout=60,
               what="50 messages published")
    assert p.proc.poll() is None, f"exited {p.proc.returncode}: {p.err()[-3000:]}"
    p.kill(sig)
    rc = p.wait(30)
    log = p.log()
    stored = [json.loads(v) for v in read_topic(bed, topic)]
    assert stored, "nothing in the topic"
    stored_ids = {m["_id"] for m in stored}
    published = published_contents(log, topic)
    assert published and {m["_id"] for m in published} <= stored_ids
    if sig == "TERM":
        assert rc == 0, f"exit {rc} after SIGTERM\n{log[-3000:]}\n{p.err()[-3000:]}"
        sent, acked, failed = producer_summary(log)
        assert len(stored_ids) == len(stored), "duplicates in the topic"
        assert len(stored) == acked, f"{len(stored)} in the topic, summary: {sent} sent, " \
            f"{acked} acknowledged, {failed} failed"
        # Every message handed to librdkafka was acknowledged or reported failed.
        assert sent == acked + failed, \
            f"{sent} sent, {acked} acknowledged, {failed} failed"
    else:
        assert rc == -signal.SIGKILL
        assert len(stored) >= len(published)


# --- consumer role ----------------------------------------------------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["sasl_plaintext", "sasl_ssl"])
@pytest.mark.parametrize("prefix_kind", ["prefix", "None"])
def test_consumer_command_sigterm_commits(bed, kw_bin, new_topic, new_user, charm, tmp_path,
                                          prefix_kind, tls):
    """`--consumer --consumer-group-prefix P` reads the topic into its log and, on SIGTERM,
    commits and exits 0. The literal prefix `None` falls back to `<username>-`."""
    topic = new_topic(partitions=3)
    if prefix_kind == "prefix":
        prefix = unique("sc-grp") + "-"
        user, password = new_user(topic, "consumer", group_prefix=prefix)
        group = f"{prefix}1"
    else:
        prefix = None
        user, password = new_user(topic, "consumer")  # grants <user>- as Charmed Kafka does
        group = f"{user}-1"
    ids = produce_client_py_messages(bed, topic, 30)
    cmd = build_cmd("consumer", user, password, servers_for(bed, tls), topic, prefix=prefix,
                    tls=tls_files(bed, tmp_path) if tls else None)
    assert cmd.endswith(f"  --consumer --consumer-group-prefix {prefix}")
    p = charm(cmd, "consumer")
    assert_exec_replaced(p, kw_bin, password)
    wait_until(lambda: p.log().count(RECORD) >= 30 or p.proc.poll() is not None, timeout=60,
               what="30 records consumed")
    assert p.proc.poll() is None, f"exited {p.proc.returncode}: {p.err()[-3000:]}"
    assert "--consumer - Starting..." in p.log()
    p.kill("TERM")
    rc = p.wait(30)
    log, err = p.log(), p.err()
    assert rc == 0, f"exit {rc} after SIGTERM\n{log[-3000:]}\n{err[-3000:]}"
    assert password not in log + err
    assert sorted(i for i in ids if i in log) == sorted(ids), "a record missing from the log"
    assert log.count(RECORD) == 30
    ends = end_offsets(bed, topic)
    got = committed(bed, topic, group, ends)
    # Every partition with records is committed at its end. An empty partition has offset 0
    # committed once librdkafka has looked its start up, and none (-1001) if the SIGTERM came
    # first (seen in CI under load); either way there is nothing to read again.
    assert {p: o for p, o in got.items() if ends[p] > 0} == {p: e for p, e in ends.items() if e > 0}
    assert all(got[p] in (0, -1001) for p, e in ends.items() if e == 0), got
    if prefix is None:
        assert set(committed(bed, topic, "None1", ends).values()) == {-1001}


def test_consumer_sigkill_keeps_committed_offsets(bed, kw_bin, new_topic, new_user, charm, spawn):
    """Today's `kill -9`: offsets of processed records are committed within a second, so after
    the kill the group resumes where it was: a second consumer reads nothing again."""
    topic = new_topic(partitions=3)
    prefix = unique("sc-grp") + "-"
    user, password = new_user(topic, "consumer", group_prefix=prefix)
    produce_client_py_messages(bed, topic, 40)
    p = charm(build_cmd("consumer", user, password, bed.sasl_plaintext, topic, prefix=prefix),
              "consumer")
    assert_exec_replaced(p, kw_bin, password)
    wait_until(lambda: p.log().count(RECORD) >= 40 or p.proc.poll() is not None, timeout=60,
               what="40 records consumed")
    ends = end_offsets(bed, topic)
    group = f"{prefix}1"
    # The periodic commit (every second) has happened before the kill.
    wait_until(lambda: committed(bed, topic, group, ends) == ends, timeout=45,
               what="offsets committed while running")
    p.kill("KILL")
    assert p.wait(10) == -signal.SIGKILL
    assert committed(bed, topic, group, ends) == ends
    # The group's next member starts after them (the killed member's session times out first).
    pw_env = {"KAFKA_WORKLOAD_PASSWORD": password}
    second = spawn([kw_bin, "--consumer", "-s", bed.sasl_plaintext, "-u", user, "-t", topic,
                    "-c", prefix, "--idle-timeout", "5", "--no-progress"], env=pw_env)
    rc = second.wait(90)
    assert rc == 0, second.stderr()[-3000:]
    assert second.stdout().count(RECORD) == 0


# --- the shim itself --------------------------------------------------------------------------

def test_shim_without_binary_exits_127(tmp_path):
    if Path("/usr/local/bin/kafka-workload").exists():
        pytest.skip("/usr/local/bin/kafka-workload exists on this machine")
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(SHIM_ROOT), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "charms.kafka.v0.client", "--producer"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 127
    assert "kafka-workload not found" in proc.stderr


@pytest.mark.parametrize("argv, kept, password", [
    (["--username", "u", "--password", "pw", "--servers", "s"], ["--username", "u", "--servers", "s"], "pw"),
    (["--password=a=b", "-t", "t"], ["-t", "t"], "a=b"),
    (["-p", "x", "-pY"], [], "Y"),
    (["--password-file", "/f", "--producer"], ["--password-file", "/f", "--producer"], None),
    (["--producer", "--password"], ["--producer", "--password"], None),
])
def test_shim_moves_the_password_to_the_environment(argv, kept, password):
    namespace = {}
    exec(compile(SHIM.read_text(), str(SHIM), "exec"), namespace)  # noqa: S102 - our own file
    assert namespace["split_password"](argv) == (kept, password)
