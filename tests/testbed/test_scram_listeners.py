"""tests/testbed/test_scram_listeners.py: SCRAM-SHA-512 on 9092 (SASL_PLAINTEXT) and 9093
(SASL_SSL) admits a granted user, refuses what it was not granted, and refuses bad logins.
Clients: confluent-kafka (librdkafka 2.16) and kafka-python; never the Rust crate."""

import time

from confluent_kafka import KafkaError

from conftest import auth_errors, consume, produce, unique


def test_producer_user_can_produce_on_sasl_plaintext_listener(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "producer")
    out = produce(bed.scram(user, password), topic, ["a", "b", "c"])
    assert out.errors == [] and sorted(out.values) == ["a", "b", "c"]
    assert sorted(consume(bed.open(), topic, unique("reader"), 3).values) == ["a", "b", "c"]


def test_producer_user_can_produce_on_sasl_ssl_listener_with_ca_verified(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "producer")
    out = produce(bed.scram_ssl(user, password), topic, ["tls-1", "tls-2"])
    assert out.errors == [] and sorted(out.values) == ["tls-1", "tls-2"]


def test_sasl_ssl_listener_is_refused_by_client_that_does_not_trust_the_ca(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "producer")
    conf = bed.scram_ssl(user, password)
    del conf["ssl.ca.location"]  # fall back to the system CA store, which lacks the bed's CA
    out = produce(conf, topic, ["never"], timeout=8)
    assert out.values == []
    assert any("certificate verify failed" in e.str() for e in out.errors), out.errors


def test_producer_user_is_refused_with_topic_authorization_failed_on_ungranted_topic(
        bed, new_topic, new_user):
    granted, other = new_topic(), new_topic()
    user, password = new_user(granted, "producer")
    for conf in (bed.scram(user, password), bed.scram_ssl(user, password)):
        out = produce(conf, other, ["forbidden"], timeout=10)
        assert out.values == []
        assert KafkaError.TOPIC_AUTHORIZATION_FAILED in out.codes(), out.errors


def test_producer_user_cannot_consume_without_consumer_role(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "producer")
    assert produce(bed.open(), topic, ["x"]).errors == []
    out = consume(bed.scram(user, password), topic, f"{user}-g", 1, timeout=10)
    assert out.values == []
    assert out.codes() & {KafkaError.TOPIC_AUTHORIZATION_FAILED,
                          KafkaError.GROUP_AUTHORIZATION_FAILED}, out.errors


def test_wrong_password_is_refused_within_bounded_time(bed, new_topic, new_user):
    topic = new_topic()
    user, _ = new_user(topic, "producer")
    for conf in (bed.scram(user, "not-the-password"), bed.scram_ssl(user, "not-the-password")):
        start = time.monotonic()
        refused = auth_errors(conf, seconds=10)
        elapsed = time.monotonic() - start
        assert refused, f"no authentication error on {conf['bootstrap.servers']}"
        assert elapsed < 10, f"authentication error took {elapsed:.1f} s"


def test_unknown_user_is_refused(bed):
    assert auth_errors(bed.scram(unique("nobody"), "x"), seconds=10)


def test_kafka_python_scram_client_can_produce_as_granted_user(bed, new_topic, new_user):
    """A second, pure-Python SCRAM implementation agrees with librdkafka's."""
    from kafka import KafkaProducer

    topic = new_topic()
    user, password = new_user(topic, "producer")
    producer = KafkaProducer(
        bootstrap_servers=bed.sasl_plaintext.split(","), security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user, sasl_plain_password=password,
        acks="all", request_timeout_ms=10000, max_block_ms=15000)
    try:
        producer.send(topic, b"from-kafka-python").get(timeout=15)
    finally:
        producer.close(timeout=5)
    assert consume(bed.open(), topic, unique("reader"), 1).values == ["from-kafka-python"]
