"""tests/testbed/test_consumer_groups.py: the consumer role reads its topic only in groups under
its prefix (Charmed Kafka's GROUP READ ACL, PREFIXED), with both group protocols."""

from confluent_kafka import KafkaError

from conftest import consume, produce


def test_consumer_user_can_read_in_group_with_its_default_prefix(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "consumer")
    assert produce(bed.open(), topic, ["m1", "m2"]).errors == []
    out = consume(bed.scram(user, password), topic, f"{user}-group", 2)
    assert out.errors == [] and sorted(out.values) == ["m1", "m2"]


def test_consumer_user_can_read_in_group_with_custom_prefix_over_sasl_ssl(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "consumer", group_prefix="team-a.")
    assert produce(bed.open(), topic, ["s1"]).errors == []
    out = consume(bed.scram_ssl(user, password), topic, "team-a.readers", 1)
    assert out.errors == [] and out.values == ["s1"]


def test_consumer_user_is_refused_with_group_authorization_failed_outside_prefix(
        bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "consumer")
    assert produce(bed.open(), topic, ["m"]).errors == []
    out = consume(bed.scram(user, password), topic, "someone-elses-group", 1, timeout=10)
    assert out.values == []
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in out.codes(), out.errors


def test_consumer_user_can_read_with_kip848_consumer_group_protocol(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "consumer")
    assert produce(bed.open(), topic, ["k1", "k2", "k3"]).errors == []
    conf = {**bed.scram(user, password), "group.protocol": "consumer"}
    out = consume(conf, topic, f"{user}-848", 3)
    assert out.errors == [] and sorted(out.values) == ["k1", "k2", "k3"]


def test_producer_consumer_user_round_trips_its_own_messages(bed, new_topic, new_user):
    topic = new_topic()
    user, password = new_user(topic, "producer,consumer")
    conf = bed.scram(user, password)
    assert produce(conf, topic, [f"r{i}" for i in range(10)]).errors == []
    out = consume(conf, topic, f"{user}-rt", 10)
    assert out.errors == [] and sorted(out.values) == sorted(f"r{i}" for i in range(10))
