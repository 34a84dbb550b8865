"""tests/testbed/test_admin_and_plaintext.py: the admin super user can do everything over SCRAM,
and the PLAINTEXT listener is open (User:ANONYMOUS is a super user) for independent checks."""

from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

from conftest import CLIENT_TIMEOUT_S, consume, kcat, produce, unique, wait_for_leaders


def test_admin_can_create_topic_produce_consume_and_describe_acls(bed, new_user):
    topic = unique("tb-admin")
    for conf in (bed.admin_scram(), {**bed.scram_ssl(bed.admin_user, bed.admin_password)}):
        admin = AdminClient(conf)
        name = f"{topic}-{conf['security.protocol'].lower()}"
        admin.create_topics([NewTopic(name, 2)])[name].result(timeout=CLIENT_TIMEOUT_S)
        try:  # keep `admin` referenced: a destroyed client fails its pending futures
            wait_for_leaders(admin, name, 2)
            assert produce(conf, name, ["adm"]).errors == []
            out = consume(conf, name, unique("any-group"), 1)
            assert out.errors == [] and out.values == ["adm"]
        finally:
            admin.delete_topics([name])[name].result(timeout=CLIENT_TIMEOUT_S)
    granted_topic = unique("tb-acl")
    user, _ = new_user(granted_topic, "producer,consumer")
    acl_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}",
                                  None, AclOperation.ANY, AclPermissionType.ANY)
    admin = AdminClient(bed.admin_scram())
    acls = admin.describe_acls(acl_filter).result(timeout=CLIENT_TIMEOUT_S)
    got = {(a.restype, a.name, a.resource_pattern_type, a.operation) for a in acls}
    lit, pre = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    assert got == {
        (ResourceType.TOPIC, granted_topic, lit, AclOperation.CREATE),
        (ResourceType.TOPIC, granted_topic, lit, AclOperation.WRITE),
        (ResourceType.TOPIC, granted_topic, lit, AclOperation.READ),
        (ResourceType.TOPIC, granted_topic, lit, AclOperation.DESCRIBE),
        (ResourceType.GROUP, f"{user}-", pre, AclOperation.READ),
    }


def test_plaintext_listener_is_open_to_kcat_for_produce_metadata_and_consume(bed, new_topic):
    topic = new_topic()
    res = kcat(["-b", bed.plaintext, "-P", "-t", topic, "-m", "15"], stdin="p1\np2\n")
    assert res.returncode == 0, res.stderr
    meta = kcat(["-b", bed.plaintext, "-L", "-m", "10"])
    assert meta.returncode == 0 and f'topic "{topic}"' in meta.stdout
    assert f"{bed.brokers} brokers:" in meta.stdout
    res = kcat(["-b", bed.plaintext, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-m", "15"])
    assert res.returncode == 0 and sorted(res.stdout.split()) == ["p1", "p2"]


def test_every_broker_is_listed_in_metadata_from_each_secured_listener(bed):
    admin = AdminClient(bed.admin_scram())
    md = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    assert len(md.brokers) == bed.brokers
    for listener in (bed.sasl_plaintext, bed.sasl_ssl, bed.ssl, bed.plaintext):
        assert len(listener.split(",")) == bed.brokers
