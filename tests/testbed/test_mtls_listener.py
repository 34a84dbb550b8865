"""tests/testbed/test_mtls_listener.py: the SSL listener on 9094 requires a client certificate,
maps CN=client to the principal in KAFKA_MTLS_PRINCIPAL, and authorizes it by ACL only.
Clients: kcat (Debian's librdkafka 2.0.2) and confluent-kafka."""

from confluent_kafka import KafkaError

from conftest import consume, kcat, produce, unique


def kcat_mtls(bed, with_cert=True):
    args = ["-b", bed.ssl, "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={bed.ca}"]
    if with_cert:
        args += ["-X", f"ssl.certificate.location={bed.client_cert}",
                 "-X", f"ssl.key.location={bed.client_key}"]
    return args


def test_mtls_principal_is_refused_on_topic_it_was_not_granted(bed, new_topic):
    topic = new_topic()
    out = produce(bed.mtls(), topic, ["no-acl"], timeout=10)
    assert out.values == []
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in out.codes(), out.errors


def test_mtls_principal_can_produce_with_kcat_once_granted(bed, new_topic, mtls_grant):
    topic = new_topic()
    mtls_grant(topic, "producer")
    res = kcat([*kcat_mtls(bed), "-P", "-t", topic, "-m", "15"], stdin="cert-1\ncert-2\n")
    assert res.returncode == 0, res.stderr
    assert sorted(consume(bed.open(), topic, unique("reader"), 2).values) == ["cert-1", "cert-2"]


def test_mtls_principal_can_consume_in_its_group_prefix_once_granted(bed, new_topic, mtls_grant):
    topic = new_topic()
    mtls_grant(topic, "consumer", group_prefix="mtls-")
    assert produce(bed.open(), topic, ["for-cert"]).errors == []
    out = consume(bed.mtls(), topic, unique("mtls"), 1)
    assert out.errors == [] and out.values == ["for-cert"]


def test_mtls_listener_refuses_client_without_certificate(bed, new_topic, mtls_grant):
    topic = new_topic()
    mtls_grant(topic, "producer")
    res = kcat([*kcat_mtls(bed, with_cert=False), "-P", "-t", topic, "-m", "10"], stdin="x\n")
    assert res.returncode != 0
    out = produce(bed.mtls(with_cert=False), topic, ["no-cert"], timeout=8)
    assert out.values == []
    assert any(e.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
               for e in out.errors), out.errors
