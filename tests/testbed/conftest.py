"""tests/testbed/conftest.py: fixtures that prove the test bed with independent clients.

Owns: reading the test bed's environment (the KEY=VALUE lines of `scripts/test-bed env`,
exported by scripts/test), fresh random users and topics per test, and small bounded
produce/consume helpers built on confluent-kafka (librdkafka 2.16 wheel), kcat and kafka-python.
It never touches the Rust crate. Every network wait here has a deadline, so nothing hangs.
"""

import os
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REQUIRED = [
    "TEST_BED_DIR", "TEST_BED_SCRIPT", "KAFKA_BROKERS", "KAFKA_VERSION", "KAFKA_SASL_PLAINTEXT",
    "KAFKA_SASL_SSL", "KAFKA_SSL", "KAFKA_PLAINTEXT", "KAFKA_ADMIN_USER", "KAFKA_ADMIN_PASSWORD",
    "KAFKA_CA_FILE", "KAFKA_CLIENT_CERT_FILE", "KAFKA_CLIENT_KEY_FILE", "KAFKA_MTLS_PRINCIPAL",
    "MONGO_URI",
]

#: Upper bound for any single client wait (connect, deliver, first message).
CLIENT_TIMEOUT_S = 20.0


class Bed:
    """The running test bed as the environment describes it."""

    def __init__(self, env):
        self.env = env
        self.brokers = int(env["KAFKA_BROKERS"])
        self.sasl_plaintext = env["KAFKA_SASL_PLAINTEXT"]
        self.sasl_ssl = env["KAFKA_SASL_SSL"]
        self.ssl = env["KAFKA_SSL"]
        self.plaintext = env["KAFKA_PLAINTEXT"]
        self.admin_user = env["KAFKA_ADMIN_USER"]
        self.admin_password = env["KAFKA_ADMIN_PASSWORD"]
        self.ca = env["KAFKA_CA_FILE"]
        self.client_cert = env["KAFKA_CLIENT_CERT_FILE"]
        self.client_key = env["KAFKA_CLIENT_KEY_FILE"]
        self.mtls_principal = env["KAFKA_MTLS_PRINCIPAL"]
        self.script = env["TEST_BED_SCRIPT"]
        self.mongo_uri = env["MONGO_URI"]

    # librdkafka configurations, one per listener
    def scram(self, user, password):
        return {"bootstrap.servers": self.sasl_plaintext, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password}

    def scram_ssl(self, user, password):
        return {"bootstrap.servers": self.sasl_ssl, "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
                "ssl.ca.location": self.ca,
                # librdkafka's default, spelled out: the broker's name/IP must match its certificate.
                "ssl.endpoint.identification.algorithm": "https"}

    def mtls(self, with_cert=True):
        conf = {"bootstrap.servers": self.ssl, "security.protocol": "SSL", "ssl.ca.location": self.ca}
        if with_cert:
            conf.update({"ssl.certificate.location": self.client_cert,
                         "ssl.key.location": self.client_key})
        return conf

    def open(self):
        return {"bootstrap.servers": self.plaintext}

    def admin_scram(self):
        return self.scram(self.admin_user, self.admin_password)

    def test_bed(self, *args, timeout=60):
        """Run scripts/test-bed with args; returns the CompletedProcess (check=True)."""
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


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def new_topic(bed):
    """Factory: create a fresh topic as the open PLAINTEXT super user; deleted after the test."""
    admin = AdminClient(bed.open())
    created = []

    def make(name=None, partitions=3):
        name = name or unique("tb-topic")
        futures = admin.create_topics([NewTopic(name, partitions)], request_timeout=15)
        futures[name].result(timeout=CLIENT_TIMEOUT_S)
        created.append(name)
        wait_for_leaders(admin, name, partitions)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, request_timeout=15).values():
            try:
                fut.result(timeout=CLIENT_TIMEOUT_S)
            except KafkaException:
                pass


def wait_for_leaders(admin, topic, partitions, timeout=CLIENT_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if md and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} has no leader for every partition after {timeout} s")


@pytest.fixture
def new_user(bed):
    """Factory: a fresh SCRAM user granted roles via `scripts/test-bed user`; deleted after."""
    made = []

    def make(topic, roles, group_prefix=None, name=None):
        name = name or unique("tb-user")
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


@pytest.fixture
def mtls_grant(bed):
    """Factory: grant roles to the client certificate's principal; its ACLs are removed after."""
    granted = []

    def grant(topic, roles, group_prefix=None):
        args = ["user", "mtls", "--mtls", "--topic", topic, "--roles", roles]
        if group_prefix is not None:
            args += ["--group-prefix", group_prefix]
        bed.test_bed(*args)
        granted.append(topic)

    yield grant
    if granted:
        subprocess.run([bed.script, "user", "mtls", "--mtls", "--delete"], capture_output=True,
                       timeout=60)


class Outcome:
    """What a bounded client run saw: delivered/received values and every error code."""

    def __init__(self):
        self.values = []
        self.errors = []  # KafkaError objects, from callbacks and message errors
        self.elapsed = 0.0

    def codes(self):
        return {e.code() for e in self.errors}


def produce(conf, topic, values, timeout=CLIENT_TIMEOUT_S):
    """Produce values with acks=all; returns an Outcome with the delivered values and errors."""
    out = Outcome()
    start = time.monotonic()

    def on_delivery(err, msg):
        if err is not None:
            out.errors.append(err)
        else:
            out.values.append(msg.value().decode())

    producer = Producer({**conf, "acks": "all", "error_cb": out.errors.append,
                         "message.timeout.ms": int(timeout * 1000) - 2000, "log_level": 2})
    for v in values:
        producer.produce(topic, value=v.encode(), on_delivery=on_delivery)
    left = producer.flush(timeout)
    out.elapsed = time.monotonic() - start
    if left:
        out.errors.append(KafkaError(KafkaError._TIMED_OUT, f"{left} message(s) undelivered"))
    return out


def consume(conf, topic, group, expect, timeout=CLIENT_TIMEOUT_S, stop_on_error=True):
    """Read from the beginning in `group` until `expect` messages arrive, an error, or timeout."""
    out = Outcome()
    start = time.monotonic()
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                         "error_cb": out.errors.append, "log_level": 2,
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        while len(out.values) < expect and time.monotonic() - start < timeout:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                out.errors.append(msg.error())
                if stop_on_error:
                    break
                continue
            out.values.append(msg.value().decode())
        if out.values and not out.errors:
            consumer.commit(asynchronous=False)
    except KafkaException as exc:
        out.errors.append(exc.args[0])
    finally:
        consumer.close()
    out.elapsed = time.monotonic() - start
    return out


def auth_errors(conf, seconds=10.0):
    """Connect with conf; return the _AUTHENTICATION errors seen (empty if metadata arrived).

    librdkafka reports a refused login through error_cb, which only runs inside poll()."""
    errors = []
    admin = AdminClient({**conf, "error_cb": errors.append, "log_level": 0})
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        admin.poll(0.1)
        refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if refused:
            return refused
        try:
            admin.list_topics(timeout=0.5)
            return []
        except KafkaException:
            pass
    return []


def kcat(args, stdin="", timeout=30):
    """Run Debian's kcat (librdkafka 2.0.2) with a hard timeout."""
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
