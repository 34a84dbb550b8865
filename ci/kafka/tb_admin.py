"""ci/kafka/tb_admin.py: the test bed's Kafka admin helper, run by scripts/test-bed.

Owns: waiting until brokers serve metadata, and creating, updating and deleting SCRAM users and
their Charmed-Kafka-style ACLs, each returning only once every broker applies the change.
It leaves processes, files and ports to scripts/test-bed, and reads every address and credential
from the env file that `scripts/test-bed up` writes ($TEST_BED_DIR/env), so no address lives here.

Why Python (confluent-kafka AdminClient) and not the JVM: tests call `test-bed user` once per
test; this starts in ~0.2 s where a JVM Admin client needs 2-3 s on 2 busy cores, and
librdkafka's AdminClient has AlterUserScramCredentials, CreateAcls, DescribeAcls and DeleteAcls.

"Effective on every broker": SCRAM credentials and ACLs reach each broker through the KRaft
metadata log, a little after the controller acknowledges them. A fresh librdkafka client whose
only bootstrap address is one broker sends its first Metadata request to that broker (the
response names the broker that answered; an answer from another is retried), so probing each broker that way
shows what that broker enforces: authentication passes with the new password, and the topic is
no longer TOPIC_AUTHORIZATION_FAILED. All of one user's ACLs are created in one CreateAcls call,
which the controller writes as one batch of records, so a broker that shows the topic DESCRIBE
ACL (listed last) also has the WRITE/READ/CREATE and group ones.

Exit codes: 0 done, 1 failed or timed out, 2 bad usage.
"""

import argparse
import fcntl
import os
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

SCRAM_ITERATIONS = 4096  # Kafka's minimum for SHA-512; clients hash this per connection.
PROBE_SUFFIX = "tb-probe"


class UsageError(Exception):
    """Bad arguments: exit code 2."""


class Failed(Exception):
    """A Kafka call failed: exit code 1."""


def read_env(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value.strip("'\"")
    return env


class TestBed:
    """Addresses and credentials of a running test bed, from its env file."""

    def __init__(self, env):
        self.env = env
        self.dir = env["TEST_BED_DIR"]
        self.nodes = list(range(1, int(env["KAFKA_BROKERS"]) + 1))
        self.scram_addrs = env["KAFKA_SASL_PLAINTEXT"].split(",")
        self.mtls_addrs = env["KAFKA_SSL"].split(",")
        self.plaintext_addrs = env["KAFKA_PLAINTEXT"].split(",")
        self.admin_user = env["KAFKA_ADMIN_USER"]
        self.admin_password = env["KAFKA_ADMIN_PASSWORD"]
        self.mtls_principal = env["KAFKA_MTLS_PRINCIPAL"]

    def scram_conf(self, user, password):
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
        }

    def mtls_conf(self):
        return {
            "security.protocol": "SSL",
            "ssl.ca.location": self.env["KAFKA_CA_FILE"],
            "ssl.certificate.location": self.env["KAFKA_CLIENT_CERT_FILE"],
            "ssl.key.location": self.env["KAFKA_CLIENT_KEY_FILE"],
        }

    def admin(self):
        conf = {"bootstrap.servers": ",".join(self.scram_addrs), "client.id": "test-bed-admin"}
        conf.update(self.scram_conf(self.admin_user, self.admin_password))
        return AdminClient(conf)

    def pid_alive(self, node):
        try:
            with open(os.path.join(self.dir, f"node{node}", "kafka.pid"), encoding="utf-8") as f:
                os.kill(int(f.read().strip()), 0)
            return True
        except (OSError, ValueError):
            return False


class Probe:
    """Outcome of one Metadata request answered by one broker."""

    def __init__(self, ok=False, auth_failed=False, brokers=(), topic_error=None, detail=""):
        self.ok = ok
        self.auth_failed = auth_failed
        self.brokers = set(brokers)
        self.topic_error = topic_error
        self.detail = detail


def probe(addr, security, topic=None, timeout=2.0):
    """Ask the broker at addr (and only it) for metadata, as the principal in `security`.

    A fresh client knows only its bootstrap broker, so its first Metadata request almost
    always goes there; the response names the broker that answered, and an answer from another
    broker (librdkafka had already connected to one it learned of) is retried with a new client.
    """
    port = addr.rsplit(":", 1)[1]
    deadline = time.monotonic() + timeout
    last = Probe(detail="no metadata answer")
    while time.monotonic() < deadline:
        last = probe_once(addr, port, security, topic, deadline)
        if last.ok or last.auth_failed or not last.detail.startswith("answered by"):
            return last
    return last


def probe_once(addr, port, security, topic, deadline):
    errors = []
    conf = {
        "bootstrap.servers": addr,
        "client.id": "test-bed-probe",
        "error_cb": errors.append,
        "log_level": 0,  # refused logins are expected while waiting; report them ourselves
        "socket.connection.setup.timeout.ms": 2000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
    }
    conf.update(security)
    client = AdminClient(conf)
    while True:
        remaining = deadline - time.monotonic()
        client.poll(0)  # error_cb (a refused login) only runs inside poll()
        if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
            return Probe(auth_failed=True, detail=str(errors[-1]))
        if remaining <= 0:
            return Probe(detail=str(errors[-1]) if errors else "no metadata answer")
        try:
            md = client.list_topics(topic=topic, timeout=min(0.5, remaining))
        except KafkaException as exc:
            errors.append(exc.args[0])
            continue
        if f":{port}/" not in (md.orig_broker_name or ""):
            return Probe(detail=f"answered by {md.orig_broker_name}, not {addr}")
        topic_error = None
        if topic is not None and topic in md.topics and md.topics[topic].error is not None:
            topic_error = md.topics[topic].error.code()
        return Probe(ok=True, brokers=md.brokers.keys(), topic_error=topic_error)


def wait_until(what, check, timeout):
    """Poll check() -> (done, detail) until done or timeout; returns (done, last detail)."""
    deadline = time.monotonic() + timeout
    detail = ""
    while time.monotonic() < deadline:
        done, detail = check()
        if done:
            return True, detail
        time.sleep(0.1)
    print(f"tb_admin: timed out after {timeout:.0f} s waiting for {what}: {detail}", file=sys.stderr)
    return False, detail


def cmd_wait_ready(tb, args):
    """Every queried broker answers metadata listing every running broker (registered, unfenced)."""
    query = [int(n) for n in args.nodes.split(",")] if args.nodes else tb.nodes
    admin_sec = tb.scram_conf(tb.admin_user, tb.admin_password)

    def check():
        for n in query:
            if not tb.pid_alive(n):
                return False, f"broker {n} is not running"
        expected = {n for n in tb.nodes if tb.pid_alive(n)}
        for n in query:
            p = probe(tb.scram_addrs[n - 1], admin_sec, timeout=2.0)
            if p.auth_failed:
                return False, f"broker {n}: refused the admin login: {p.detail}"
            if not p.ok:
                return False, f"broker {n}: {p.detail}"
            if not expected <= p.brokers:
                return False, f"broker {n} sees brokers {sorted(p.brokers)}, want {sorted(expected)}"
        return True, ""

    deadline = time.monotonic() + args.timeout
    healed = set()
    while time.monotonic() < deadline:
        done, detail = check()
        if done:
            return 0
        if "is not running" in detail:
            print(f"tb_admin: {detail}", file=sys.stderr)
            return 1
        refused = [n for n in query if n not in healed and detail.startswith(f"broker {n}: refused")]
        for n in refused:
            heal_credentials(tb, n)
            healed.add(n)
        time.sleep(0.25)
    print(f"tb_admin: brokers not ready after {args.timeout:.0f} s: {detail}", file=sys.stderr)
    return 1


def users_file(tb):
    return os.path.join(tb.dir, "users.tsv")


def remember_user(tb, name, password):
    """Keep name/password of users this bed created (mode 600), for heal_credentials.
    Tests create users in parallel, hence the lock around read-modify-write."""
    path = users_file(tb)
    with open(path + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        users = load_users(tb)
        if password is None:
            users.pop(name, None)
        else:
            users[name] = password
        tmp = path + f".{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(f"{n}\t{p}\n" for n, p in sorted(users.items()))
        os.replace(tmp, path)


def load_users(tb):
    try:
        with open(users_file(tb), encoding="utf-8") as f:
            return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    except FileNotFoundError:
        return {}


def heal_credentials(tb, node):
    """Work around a Kafka 4.1.2 fault: a restarted broker can come back refusing every SCRAM
    user that existed before its restart (users created afterwards work), admin and so the
    inter-broker login included. Seen with 1 and 3 nodes, after SIGKILL, once the bed has had
    some user/ACL/topic churn. Writing those credentials again puts fresh records into the
    metadata log, which the restarted broker applies. It goes through the open PLAINTEXT
    listener (a super user there), which needs no SCRAM login on any broker."""
    alive = [a for n, a in zip(tb.nodes, tb.plaintext_addrs) if tb.pid_alive(n)]
    users = {tb.admin_user: tb.admin_password, **load_users(tb)}
    print(f"tb_admin: broker {node} refuses SCRAM logins after its restart (a Kafka 4.1 fault); "
          f"writing {len(users)} SCRAM credential(s) again", file=sys.stderr)
    admin = AdminClient({"bootstrap.servers": ",".join(alive), "client.id": "test-bed-admin"})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    ups = [UserScramCredentialUpsertion(n, info, p.encode()) for n, p in users.items()]
    try:
        wait_futures(admin.alter_user_scram_credentials(ups), "SCRAM credential")
    except Failed as exc:
        print(f"tb_admin: {exc}", file=sys.stderr)


def resource_for(topic):
    """Charmed Kafka: a topic ending in '*' is a PREFIXED pattern of what precedes it."""
    if topic.endswith("*"):
        prefix = topic[:-1]
        if not prefix:
            raise UsageError("--topic '*' alone would grant every topic; name a prefix")
        return prefix, ResourcePatternType.PREFIXED, prefix + PROBE_SUFFIX
    return topic, ResourcePatternType.LITERAL, topic


def bindings_for(principal, topic, roles, group_prefix):
    name, pattern, _ = resource_for(topic)
    topic_ops = []
    group = []
    if "producer" in roles:
        topic_ops += [AclOperation.CREATE, AclOperation.WRITE]
    if "consumer" in roles:
        topic_ops += [AclOperation.READ]
        group = [AclBinding(ResourceType.GROUP, group_prefix, ResourcePatternType.PREFIXED,
                            principal, "*", AclOperation.READ, AclPermissionType.ALLOW)]
    # DESCRIBE last: the per-broker check looks for it (see the module docstring).
    topic_ops.append(AclOperation.DESCRIBE)
    return group + [
        AclBinding(ResourceType.TOPIC, name, pattern, principal, "*", op, AclPermissionType.ALLOW)
        for op in topic_ops
    ]


def wait_futures(futures, what, ignore=()):
    for key, fut in futures.items():
        try:
            fut.result(timeout=30)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() in ignore:
                continue
            raise Failed(f"{what} failed for {key}: {err}")


def cmd_user(tb, args):
    roles = set(args.roles.split(",")) if args.roles else set()
    if args.delete:
        return user_delete(tb, args)
    if not args.topic or not roles:
        raise UsageError("user needs --topic and --roles (or --delete)")
    unknown = roles - {"producer", "consumer"}
    if unknown:
        raise UsageError(f"unknown role(s) {sorted(unknown)}; use producer,consumer")
    if args.mtls:
        principal, security = tb.mtls_principal, tb.mtls_conf()
        addrs = tb.mtls_addrs
    else:
        if not args.password:
            raise UsageError("user NAME PASSWORD ... (or --mtls)")
        principal = f"User:{args.name}"
        security = tb.scram_conf(args.name, args.password)
        addrs = tb.scram_addrs

    admin = tb.admin()
    if not args.mtls:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        up = UserScramCredentialUpsertion(args.name, info, args.password.encode())
        wait_futures(admin.alter_user_scram_credentials([up]), "SCRAM credential")
        remember_user(tb, args.name, args.password)
    group_prefix = args.group_prefix if args.group_prefix is not None else f"{args.name}-"
    bindings = bindings_for(principal, args.topic, roles, group_prefix)
    wait_futures(admin.create_acls(bindings), "CreateAcls")

    probe_topic = resource_for(args.topic)[2]

    def effective():
        for n, addr in zip(tb.nodes, addrs):
            if not tb.pid_alive(n):
                continue  # a stopped broker catches up from the metadata log when it starts
            p = probe(addr, security, topic=probe_topic, timeout=2.0)
            if not p.ok:
                return False, f"broker {n}: {p.detail}"
            if p.topic_error == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                return False, f"broker {n}: ACLs for {principal} not applied yet"
        return True, ""

    done, _ = wait_until(f"{principal} to be effective on every broker", effective, args.timeout)
    return 0 if done else 1


def user_delete(tb, args):
    admin = tb.admin()
    principal = tb.mtls_principal if args.mtls else f"User:{args.name}"
    if not args.mtls:
        deletion = UserScramCredentialDeletion(args.name, ScramMechanism.SCRAM_SHA_512)
        wait_futures(admin.alter_user_scram_credentials([deletion]), "SCRAM deletion",
                     ignore=(KafkaError.RESOURCE_NOT_FOUND,))
        remember_user(tb, args.name, None)
    acl_filter = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal,
                                  None, AclOperation.ANY, AclPermissionType.ANY)
    wait_futures(admin.delete_acls([acl_filter]), "DeleteAcls")

    def gone():
        # DescribeAcls / DescribeUserScramCredentials are answered from the broker's own
        # metadata image; ask fresh clients of each broker so every one is consulted.
        for n, addr in zip(tb.nodes, tb.scram_addrs):
            if not tb.pid_alive(n):
                continue
            conf = {"bootstrap.servers": addr, "client.id": "test-bed-probe", "log_level": 0}
            conf.update(tb.scram_conf(tb.admin_user, tb.admin_password))
            one = AdminClient(conf)
            try:
                if one.describe_acls(acl_filter, request_timeout=5).result(timeout=5):
                    return False, f"broker {n} still lists ACLs of {principal}"
                if not args.mtls:
                    fut = one.describe_user_scram_credentials([args.name], request_timeout=5)
                    try:
                        fut[args.name].result(timeout=5)
                        return False, f"broker {n} still has a credential for {args.name}"
                    except KafkaException as exc:
                        if exc.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                            return False, str(exc.args[0])
            except KafkaException as exc:
                return False, f"broker {n}: {exc.args[0]}"
        return True, ""

    done, _ = wait_until(f"{principal} to be removed", gone, args.timeout)
    return 0 if done else 1


def main(argv):
    parser = argparse.ArgumentParser(prog="tb_admin.py", description=__doc__.split("\n")[0])
    parser.add_argument("--env-file", default=os.path.join(
        os.environ.get("TEST_BED_DIR", "/tmp/kafka-workload-testbed"), "env"))
    sub = parser.add_subparsers(dest="cmd", required=True)

    wait = sub.add_parser("wait-ready", help="wait until brokers serve metadata")
    wait.add_argument("--timeout", type=float, default=90)
    wait.add_argument("--nodes", help="comma-separated node ids to query (default: all)")

    user = sub.add_parser("user", help="create/update/delete a SCRAM user and its ACLs")
    user.add_argument("name")
    user.add_argument("password", nargs="?")
    user.add_argument("--topic")
    user.add_argument("--roles", help="producer,consumer")
    user.add_argument("--group-prefix")
    user.add_argument("--mtls", action="store_true", help="grant to the client certificate's principal")
    user.add_argument("--delete", action="store_true")
    user.add_argument("--timeout", type=float, default=30)

    args = parser.parse_args(argv)
    tb = TestBed(read_env(args.env_file))
    if args.cmd == "wait-ready":
        return cmd_wait_ready(tb, args)
    if args.mtls and args.password:
        raise UsageError("--mtls takes no password")
    return cmd_user(tb, args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as exc:
        print(f"tb_admin: {exc}", file=sys.stderr)
        sys.exit(2)
    except Failed as exc:
        print(f"tb_admin: {exc}", file=sys.stderr)
        sys.exit(1)
