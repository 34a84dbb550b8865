"""tests/sidecar/test_image.py: the container image, run against the test bed.

Owns: proving the image that `scripts/image build` makes from ./Dockerfile (scripts/test's step
"image build"): its configuration (non-root, SIGTERM stop signal, the binary as ENTRYPOINT,
stripped, CA certificates), a producer+consumer run in it against the SASL_PLAINTEXT listener with
the password only in the environment, checked by an independent reader, and SIGTERM to the
container's PID 1 (own PID namespace) ending a long consumer cleanly: exit 0, summary printed.
A control shows that the namespace is real: a PID 1 without handlers ignores the same SIGTERM.

Containers run through `scripts/image run` (podman with the repo's storage and runtime flags,
host network). Skips only when scripts/test was told not to build the image (--no-image sets
KW_IMAGE_SKIP); a failed build (KW_IMAGE_BUILD_FAILED) or a missing image fails.
"""

import json
import os
import signal
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from conftest import REPO, unique, wait_until

IMAGE_SCRIPT = str(REPO / "scripts" / "image")
TAG = os.environ.get("KW_IMAGE_TAG", "localhost/kafka-workload:test")
BINARY = "/usr/local/bin/kafka-workload"


def image_cmd(*args, timeout=60, check=True):
    return subprocess.run([IMAGE_SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image():
    """The built image's podman inspect record."""
    skip = os.environ.get("KW_IMAGE_SKIP")
    if skip:
        pytest.skip(f"image not built: {skip}")
    failed = os.environ.get("KW_IMAGE_BUILD_FAILED")
    if failed:
        pytest.fail(failed, pytrace=False)
    found = image_cmd("podman", "image", "exists", TAG, check=False)
    if found.returncode != 0:
        pytest.fail(f"no image {TAG}: build it with scripts/image build (scripts/test does) "
                    f"[{found.stderr.strip()}]", pytrace=False)
    (record,) = json.loads(image_cmd("podman", "image", "inspect", TAG).stdout)
    return record


@pytest.fixture
def containers():
    """Names for containers; each is removed at the end even if its podman client was killed."""
    names = []

    def name():
        n = unique("kw-img")
        names.append(n)
        return n

    yield name
    for n in names:
        subprocess.run([IMAGE_SCRIPT, "podman", "rm", "--force", "--time", "0", n],
                       capture_output=True, timeout=60)


def container_pid(name, timeout=60):
    """Host PID of the container's PID 1, once it runs."""
    def pid():
        r = image_cmd("podman", "inspect", "--format", "{{.State.Pid}}", name, check=False)
        value = r.stdout.strip()
        return int(value) if r.returncode == 0 and value.isdigit() and int(value) > 0 else None
    return wait_until(pid, timeout, interval=0.2, what=f"container {name} running")


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def elf_section_names(path):
    """Section names of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not an ELF64 LE file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size
    _, str_off, str_size = header(shstrndx)
    strtab = data[str_off:str_off + str_size]
    names = []
    for i in range(shnum):
        name = header(i)[0]
        names.append(strtab[name:strtab.index(b"\0", name)].decode())
    return names


def read_topic(bed, topic, want, timeout=60):
    """Every record value of the topic, read through the open listener with confluent-kafka."""
    consumer = Consumer({"bootstrap.servers": bed.plaintext, "group.id": unique("img-reader"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    values = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(values) < want and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is None:
                    values.append(msg.value())
        # Anything beyond `want` would be a duplicate: give it a moment to show up.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            values += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    return values


def test_image_config(image, tmp_path):
    config = image["Config"]
    assert config["Entrypoint"] == [BINARY]
    assert config.get("StopSignal") == "SIGTERM"
    user = config.get("User", "")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"runs as {user!r}"
    # What the image really has: the user, Debian's CA bundle and nothing of this machine's CAs.
    probe = image_cmd("run", "--entrypoint", "/bin/sh", "--", "-c",
                      "id -u; test -s /etc/ssl/certs/ca-certificates.crt && echo ca-bundle; "
                      "ls -A /usr/local/share/ca-certificates | wc -l", timeout=120)
    uid, ca, local_cas = probe.stdout.split()
    assert uid == user.split(":")[0] and uid != "0"
    assert ca == "ca-bundle"
    assert local_cas == "0", "machine-local CAs leaked into the runtime image"
    # The binary: stripped (no symbol table, no debug info), and it runs.
    copy = tmp_path / "kafka-workload"
    with open(copy, "wb") as out:
        subprocess.run([IMAGE_SCRIPT, "run", "--entrypoint", "/bin/cat", "--", BINARY],
                       stdout=out, stderr=subprocess.PIPE, timeout=120, check=True)
    sections = elf_section_names(copy)
    assert ".text" in sections
    assert ".symtab" not in sections
    assert not [s for s in sections if s.startswith(".debug")], sections
    version = image_cmd("run", "--", "--version", timeout=120)
    assert version.stdout.startswith("kafka-workload "), version.stdout


def test_producer_consumer_in_image(image, bed, new_topic, new_user, spawn, containers, tmp_path):
    topic = new_topic(3)
    user, password = new_user(topic)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user (uid 10001) writes the JSON result here
    child = spawn([IMAGE_SCRIPT, "run", "--name", containers(), "-e", "KAFKA_WORKLOAD_PASSWORD",
                   "-v", f"{out}:/out", "--",
                   "--producer", "--consumer", "-n", "2000", "-s", bed.sasl_plaintext,
                   "-u", user, "-t", topic, "--json", "/out/result.json", "--no-progress"],
                  env={"KAFKA_WORKLOAD_PASSWORD": password})
    assert not [a for a in child.argv if password in a], "password in argv"
    try:
        rc = child.wait(180)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within 180 s; stdout tail: {child.stdout()[-2000:]}")
    stdout, stderr = child.stdout(), child.stderr()
    assert rc == 0, f"exit {rc}\nstdout tail: {stdout[-3000:]}\nstderr: {stderr[-2000:]}"
    assert password not in stdout + stderr
    assert "setting=password source=environment" in stdout
    assert "== kafka-workload summary" in stdout
    assert "audit: CLEAN" in stdout

    result = json.loads((out / "result.json").read_text())
    assert result["schema"] == "kafka-workload/result/v2"
    assert result["topic"] == topic and result["mock_cluster"] is False
    producer, consumer = result["producer"], result["consumer"]
    assert producer["sent"] == 2000 and producer["acked"] == 2000 and producer["failed"] == 0
    audit = consumer["audit"]
    assert audit["verdict"] == "clean"
    assert audit["expected"] == 2000 and audit["distinct"] == 2000 and audit["lost"] == 0
    assert audit["runs"][result["run_id"]]["seen"] == [[0, 2000]]

    # An independent client sees exactly those 2000 messages on the topic.
    values = read_topic(bed, topic, 2000)
    assert len(values) == 2000, f"{len(values)} records on {topic}"
    messages = [json.loads(v) for v in values]
    assert {m["run_id"] for m in messages} == {result["run_id"]}
    assert sorted(m["seq"] for m in messages) == list(range(2000))


@pytest.mark.parametrize("how", ["kill-pid1", "podman-stop"])
def test_sigterm_to_pid1_stops_cleanly(image, bed, new_topic, new_user, spawn, containers, how):
    topic = new_topic(3)
    user, password = new_user(topic)
    name = containers()
    # A consumer with no stop condition: only a signal ends it.
    child = spawn([IMAGE_SCRIPT, "run", "--name", name, "-e", "KAFKA_WORKLOAD_PASSWORD", "--",
                   "--consumer", "-s", bed.sasl_plaintext, "-u", user, "-t", topic,
                   "--no-progress"],
                  env={"KAFKA_WORKLOAD_PASSWORD": password})
    pid = container_pid(name)
    status = proc_status(pid)
    # Its own PID namespace, in which it is PID 1; the image's user; the binary itself, no init.
    assert status["NSpid"] == [str(pid), "1"], status["NSpid"]
    assert status["Uid"][0] == image["Config"]["User"].split(":")[0]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == BINARY.encode()

    # Consuming: records written by another client arrive and are logged.
    wait_until(lambda: "partitions assigned" in child.stdout(), 60, what="partitions assigned")
    producer = Producer({"bootstrap.servers": bed.plaintext})
    for i in range(20):
        producer.produce(topic, f"plain record {i} {uuid.uuid4().hex}".encode())
    assert producer.flush(30) == 0
    wait_until(lambda: child.stdout().count("ConsumerRecord(") >= 20, 60, what="20 records consumed")
    assert child.proc.poll() is None, "consumer stopped by itself"

    t0 = time.monotonic()
    if how == "kill-pid1":
        os.kill(pid, signal.SIGTERM)
    else:
        # podman sends the image's STOPSIGNAL; it would SIGKILL (exit 137) after 30 s.
        image_cmd("podman", "stop", "--time", "30", name, timeout=60)
    try:
        rc = child.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 30 s after SIGTERM ({how})")
    took = time.monotonic() - t0
    stdout = child.stdout()
    assert rc == 0, f"exit {rc} after SIGTERM ({how})\nstdout tail: {stdout[-3000:]}\n" \
                    f"stderr: {child.stderr()[-2000:]}"
    assert took < 10, f"took {took:.1f} s to stop"
    assert "== kafka-workload summary" in stdout
    assert "consumer stopped: stop requested" in stdout
    assert "consumer: 20 records" in stdout


def test_pid1_without_handlers_ignores_sigterm(image, spawn, containers):
    """Control: the PID namespace is real, so SIGTERM proves the binary's own handling above."""
    name = containers()
    child = spawn([IMAGE_SCRIPT, "run", "--name", name, "--entrypoint", "/bin/sleep", "--", "120"])
    pid = container_pid(name)
    assert proc_status(pid)["NSpid"] == [str(pid), "1"]
    os.kill(pid, signal.SIGTERM)
    time.sleep(2)
    assert child.proc.poll() is None, "a PID 1 without a SIGTERM handler was terminated"
    image_cmd("podman", "rm", "--force", "--time", "0", name, timeout=60)
    assert child.wait(30) != 0
