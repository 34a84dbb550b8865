"""tests/testbed/test_toxiproxy.py: the proxied listener (CLIENT_PROXIED, SASL_PLAINTEXT with
SCRAM-SHA-512, advertised at Toxiproxy's proxy broker-N) carries a granted user's traffic, and
`scripts/test-bed toxic` faults it for one broker while the direct listeners keep working.

Reads KAFKA_PROXIED and TEST_BED_TOXIPROXY from `scripts/test-bed env`. Every test that sets a
toxic clears all of them afterwards (`toxic all clear`), pass or fail, so later tests see a clean
path. Clients: confluent-kafka (librdkafka); never the Rust crate."""

import json
import os
import socket
import time
import urllib.request

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from conftest import CLIENT_TIMEOUT_S, auth_errors, consume, produce

#: How long a metadata request through a cut proxy may take to fail, and its client timeout.
CUT_TIMEOUT_S = 3.0
LATENCY_MS = 300


@pytest.fixture(scope="module")
def proxied(bed):
    """Broker N's proxied address (index N-1) and the Toxiproxy API URL, from the environment."""
    addrs, api = os.environ.get("KAFKA_PROXIED"), os.environ.get("TEST_BED_TOXIPROXY")
    if not addrs or not api:
        pytest.fail("KAFKA_PROXIED / TEST_BED_TOXIPROXY missing from the environment: the bed "
                    "predates the proxied listener (scripts/test-bed down && up) or its env was "
                    "not exported", pytrace=False)
    addrs = addrs.split(",")
    assert len(addrs) == bed.brokers, f"KAFKA_PROXIED={addrs} for {bed.brokers} broker(s)"
    return addrs, api


@pytest.fixture
def toxic(bed):
    """Run `scripts/test-bed toxic ARGS...`; `toxic all clear` after the test, pass or fail."""
    def run(*args):
        return bed.test_bed("toxic", *args, timeout=30)

    yield run
    bed.test_bed("toxic", "all", "clear", timeout=30)


def scram_proxied(bootstrap, user, password):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password}


def metadata(conf, timeout):
    """One metadata request from a fresh client; returns (metadata or None, error, elapsed s)."""
    admin = AdminClient({**conf, "log_level": 0, "socket.connection.setup.timeout.ms": 2000})
    start = time.monotonic()
    try:
        md = admin.list_topics(timeout=timeout)
        return md, None, time.monotonic() - start
    except KafkaException as exc:
        return None, exc.args[0], time.monotonic() - start


def connect_refused(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def proxy_state(api, node):
    with urllib.request.urlopen(f"{api}/proxies/broker-{node}", timeout=5) as resp:
        return json.load(resp)


def test_proxied_listener_round_trips_a_scram_users_messages_through_toxiproxy(
        bed, proxied, new_topic, new_user):
    addrs, api = proxied
    topic = new_topic()
    user, password = new_user(topic, "producer,consumer")
    conf = scram_proxied(",".join(addrs), user, password)

    # Every broker is advertised at its proxy, so no connection of this client bypasses Toxiproxy.
    md, err, _ = metadata(conf, CLIENT_TIMEOUT_S)
    assert err is None, err
    advertised = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())
    assert advertised == sorted(addrs)
    for node in range(1, bed.brokers + 1):
        state = proxy_state(api, node)
        assert state["enabled"] and state["listen"] == addrs[node - 1], state

    values = [f"p{i}" for i in range(5)]
    out = produce(conf, topic, values)
    assert out.errors == [] and sorted(out.values) == values
    got = consume(conf, topic, f"{user}-proxied", len(values))
    assert got.errors == [] and sorted(got.values) == values


def test_proxied_listener_refuses_a_bad_password(bed, proxied, new_topic, new_user):
    addrs, _ = proxied
    topic = new_topic()
    user, _ = new_user(topic, "producer")
    assert auth_errors(scram_proxied(addrs[0], user, "not-the-password"), seconds=10)


def test_toxic_down_cuts_only_the_proxied_path_and_up_restores_it(bed, proxied, toxic):
    addrs, api = proxied
    admin = scram_proxied(addrs[0], bed.admin_user, bed.admin_password)
    _, err, _ = metadata(admin, CLIENT_TIMEOUT_S)
    assert err is None, f"proxied metadata failed before any toxic: {err}"

    toxic("1", "down")
    assert proxy_state(api, 1)["enabled"] is False
    assert connect_refused(addrs[0]), f"{addrs[0]} still accepts connections after toxic 1 down"
    md, err, elapsed = metadata(admin, CUT_TIMEOUT_S)
    assert md is None, "metadata arrived through a disabled proxy"
    assert elapsed < CUT_TIMEOUT_S + 2, f"the failed metadata request took {elapsed:.1f} s"

    # The same broker, straight to its PLAINTEXT listener, is unaffected.
    plain = bed.plaintext.split(",")[0]
    md, err, _ = metadata({"bootstrap.servers": plain}, CLIENT_TIMEOUT_S)
    assert err is None, f"PLAINTEXT {plain} failed while only the proxy was down: {err}"
    assert 1 in md.brokers

    toxic("1", "up")
    assert proxy_state(api, 1)["enabled"] is True
    md, err, _ = metadata(admin, CLIENT_TIMEOUT_S)
    # Its only bootstrap address is broker 1's proxy: whatever answered was reached through it.
    assert err is None, f"proxied metadata still failing after toxic 1 up: {err}"
    assert not connect_refused(addrs[0])


def test_toxic_latency_slows_a_produce_round_trip(bed, proxied, new_topic, new_user, toxic):
    addrs, _ = proxied
    topic = new_topic(partitions=1)
    user, password = new_user(topic, "producer")
    # The produce request goes to the partition leader: put the latency on that broker's proxy.
    leader = AdminClient(bed.open()).list_topics(topic=topic, timeout=10).topics[topic] \
        .partitions[0].leader
    assert 1 <= leader <= bed.brokers, leader

    errors = []
    producer = Producer({**scram_proxied(",".join(addrs), user, password), "acks": "all",
                         "linger.ms": 0, "error_cb": errors.append, "log_level": 2,
                         "message.timeout.ms": int(CLIENT_TIMEOUT_S * 1000)})

    def round_trip(value):
        delivered = []
        start = time.monotonic()
        producer.produce(topic, value=value.encode(),
                         on_delivery=lambda err, msg: delivered.append(err))
        assert producer.flush(CLIENT_TIMEOUT_S) == 0, f"{value} not delivered: {errors}"
        assert delivered == [None], delivered
        return time.monotonic() - start

    round_trip("warm-up")  # connections and metadata in place before measuring
    baseline = min(round_trip(f"base-{i}") for i in range(3))

    out = toxic(str(leader), "latency", str(LATENCY_MS), "0")
    assert f"broker-{leader}" in out.stdout
    slowed = min(round_trip(f"slow-{i}") for i in range(2))
    assert slowed >= LATENCY_MS / 1000, \
        f"round trip {slowed * 1000:.0f} ms with a {LATENCY_MS} ms latency toxic (baseline " \
        f"{baseline * 1000:.0f} ms)"
    assert slowed - baseline >= 0.8 * LATENCY_MS / 1000, (baseline, slowed)
    print(f"produce round trip: {baseline * 1000:.0f} ms, {slowed * 1000:.0f} ms with "
          f"latency {LATENCY_MS} 0 on broker-{leader}")

    toxic(str(leader), "clear")
    cleared = min(round_trip(f"clear-{i}") for i in range(3))
    assert cleared < LATENCY_MS / 1000, f"round trip still {cleared * 1000:.0f} ms after clear"
