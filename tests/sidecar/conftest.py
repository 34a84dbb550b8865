"""tests/sidecar/conftest.py: fixtures for running the kafka-workload binary as a sidecar.

Owns: finding the release binary (KAFKA_WORKLOAD_BIN, else target/release/kafka-workload under
CARGO_TARGET_DIR or the repo), the test bed's environment (exported by scripts/test), fresh topics
and SCRAM users per test, and starting the binary as a child process that is always stopped
(SIGTERM, then SIGKILL) when the test ends. Every wait has a deadline, so nothing hangs.
"""

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ["TEST_BED_SCRIPT", "KAFKA_SASL_PLAINTEXT", "KAFKA_PLAINTEXT", "KAFKA_SASL_SSL",
            "KAFKA_CA_FILE"]


class Bed:
    """The running test bed as `scripts/test-bed env` describes it."""

    def __init__(self, env):
        self.env = env
        self.script = env["TEST_BED_SCRIPT"]
        self.sasl_plaintext = env["KAFKA_SASL_PLAINTEXT"]
        self.sasl_ssl = env["KAFKA_SASL_SSL"]
        self.plaintext = env["KAFKA_PLAINTEXT"]
        self.ca = env["KAFKA_CA_FILE"]

    def test_bed(self, *args, timeout=120):
        return subprocess.run([self.script, *args], capture_output=True, text=True,
                              timeout=timeout, check=True)


@pytest.fixture(scope="session")
def bed():
    missing = [k for k in REQUIRED if not os.environ.get(k)]
    if missing:
        pytest.fail(f"test bed environment missing {missing}: run scripts/test, or "
                    "`scripts/test-bed up && set -a && . <(scripts/test-bed env) && set +a`",
                    pytrace=False)
    return Bed(dict(os.environ))


@pytest.fixture(scope="session")
def kw_bin():
    """Path of the kafka-workload release binary (scripts/test builds it before this suite)."""
    explicit = os.environ.get("KAFKA_WORKLOAD_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "release" / "kafka-workload"
    if not path.is_file():
        pytest.fail(f"{path} not found: build it with `cargo build --release`", pytrace=False)
    return str(path)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_topic(bed):
    """Factory: a fresh topic made through the open listener; deleted after the test."""
    admin = AdminClient({"bootstrap.servers": bed.plaintext})
    made = []

    def make(partitions=3):
        name = unique("sc-topic")
        admin.create_topics([NewTopic(name, partitions)], request_timeout=15)[name].result(20)
        made.append(name)
        return name

    yield make
    if made:
        for fut in admin.delete_topics(made, request_timeout=15).values():
            try:
                fut.result(20)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


@pytest.fixture
def new_user(bed):
    """Factory: a fresh SCRAM user with Charmed-style grants; deleted after the test."""
    made = []

    def make(topic, roles="producer,consumer", group_prefix=None):
        name = unique("sc-user")
        password = uuid.uuid4().hex
        args = ["user", name, password, "--topic", topic, "--roles", roles]
        if group_prefix is not None:
            args += ["--group-prefix", group_prefix]
        bed.test_bed(*args)
        made.append(name)
        return name, password

    yield make
    for name in made:
        subprocess.run([bed.script, "user", name, "--delete"], capture_output=True, timeout=60)


class Running:
    """A kafka-workload child process; output goes to files so no pipe can fill and block it."""

    def __init__(self, argv, env, workdir):
        self.argv = argv
        self.stdout_path = workdir / f"{unique('out')}.log"
        self.stderr_path = workdir / f"{unique('err')}.log"
        self._out = open(self.stdout_path, "w")
        self._err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, env=env,
                                     stdin=subprocess.DEVNULL)

    def stop(self, timeout=60):
        """SIGTERM, wait (SIGKILL after `timeout`); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.argv[0]} ignored SIGTERM for {timeout} s")

    def wait(self, timeout):
        return self.proc.wait(timeout)

    def stdout(self):
        self._out.flush()
        return self.stdout_path.read_text()

    def stderr(self):
        self._err.flush()
        return self.stderr_path.read_text()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()


@pytest.fixture
def spawn(tmp_path):
    """Factory: start a command (argv list, extra env); every child is killed at the end."""
    children = []

    def start(argv, env=None):
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        child = Running([str(a) for a in argv], full_env, tmp_path)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


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
