"""tests/testbed/test_user_management.py: `scripts/test-bed user` semantics that tests rely on:
prefixed topic grants, password updates, deletion, and that a grant is effective on return."""

import subprocess
from confluent_kafka import KafkaError

from conftest import auth_errors, consume, produce, unique


def test_topic_ending_in_star_grants_every_topic_with_that_prefix(bed, new_topic, new_user):
    prefix = unique("tb-pre") + "."
    inside, outside = new_topic(prefix + "one"), new_topic()
    user, password = new_user(prefix + "*", "producer")
    assert produce(bed.scram(user, password), inside, ["in"]).errors == []
    out = produce(bed.scram(user, password), outside, ["out"], timeout=10)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in out.codes(), out.errors


def test_user_grant_is_effective_as_soon_as_the_command_returns(bed, new_topic, new_user):
    for _ in range(3):
        topic = new_topic()
        user, password = new_user(topic, "producer")
        out = produce(bed.scram(user, password), topic, ["now"], timeout=10)
        assert out.errors == [] and out.values == ["now"]


def test_user_password_update_replaces_the_old_password(bed, new_topic, new_user):
    topic = new_topic()
    user, old = new_user(topic, "producer")
    new_user(topic, "producer", name=user)  # same name, new random password
    assert auth_errors(bed.scram(user, old)), "old password still accepted"


def test_user_delete_removes_login_and_acls(bed, new_topic):
    topic = new_topic()
    user, password = unique("tb-del"), "pw-" + unique("x")
    bed.test_bed("user", user, password, "--topic", topic, "--roles", "producer,consumer")
    assert produce(bed.scram(user, password), topic, ["before"]).errors == []
    bed.test_bed("user", user, "--delete")
    assert auth_errors(bed.scram(user, password)), "deleted user can still log in"
    out = bed.test_bed("user", user, "--delete")  # deleting twice is fine
    assert out.returncode == 0


def test_user_command_rejects_unknown_role(bed):
    res = subprocess.run([bed.script, "user", unique("u"), "pw", "--topic", "t", "--roles", "owner"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "unknown role" in res.stderr
