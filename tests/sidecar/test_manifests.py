"""tests/sidecar/test_manifests.py: config/k8s/*.yaml and config/pebble-layer.yaml are valid and do
what they say.

Owns: the schema check of the Kubernetes manifests with kubeconform (-strict, Kubernetes JSON
schemas from PyPI that scripts/install-deps puts in the cache, since kubeconform's default
source, GitHub, is not reachable), proof that the check can fail, the fleet's conventions
(Indexed Jobs, distinct result files, non-root, no password in argv or env), a run of the fleet's
exact container command lines against the test bed (as the kubelet would expand them, with the
volumes mapped to temporary directories), and the Pebble layer: its fields as Pebble reads them,
and its service command run as Pebble would run it, with its health check polled.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import REPO, unique, wait_until

K8S_DIR = REPO / "config" / "k8s"
PEBBLE_LAYER = REPO / "config" / "pebble-layer.yaml"
NAMESPACE = "kafka-workload"
IMAGE = "kafka-workload:latest"
IMAGE_ENTRYPOINT = "/usr/local/bin/kafka-workload"  # the Dockerfile's ENTRYPOINT
METRICS_PORT = 9464


# --- kubeconform ------------------------------------------------------------------------------

def kubeconform_binary():
    explicit = os.environ.get("KUBECONFORM")
    if explicit:
        return explicit
    found = shutil.which("kubeconform")
    if found:
        return found
    try:
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gopath = str(Path.home() / "go")
    candidate = Path(gopath) / "bin" / "kubeconform"
    return str(candidate) if candidate.is_file() else None


def schema_root():
    cache = Path(os.environ.get("TEST_BED_CACHE", Path.home() / ".cache" / "kafka-workload"))
    return cache / "kubernetes-json-schema"


@pytest.fixture(scope="session")
def kubeconform():
    """(binary, [flags]) for a strict, offline kubeconform run."""
    binary = kubeconform_binary()
    root = schema_root()
    strict_dirs = sorted(root.glob("v*-local-strict"))
    if binary is None or len(strict_dirs) != 1:
        pytest.fail(f"kubeconform ({binary}) or exactly one schema set under {root} "
                    f"(found {[d.name for d in strict_dirs]}) missing: run "
                    "`scripts/install-deps --only venv,kubeconform`", pytrace=False)
    version = strict_dirs[0].name[: -len("-local-strict")].lstrip("v")
    # NormalizedKubernetesVersion is "v" + the version given: the directory's name.
    template = str(root / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}"
                   / "{{ .ResourceKind }}{{ .KindSuffix }}.json")
    flags = ["-strict", "-summary", "-verbose", "-output", "json", "-kubernetes-version", version,
             "-schema-location", template]
    return binary, flags


def run_kubeconform(kubeconform, paths):
    binary, flags = kubeconform
    proc = subprocess.run([binary, *flags, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"kubeconform printed no JSON (exit {proc.returncode}): "
                             f"{proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return proc.returncode, report


def manifest_files():
    files = sorted(K8S_DIR.glob("*.yaml"))
    assert files, f"no manifests in {K8S_DIR}"
    return files


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def all_resources():
    return [(path, doc) for path in manifest_files() for doc in load_docs(path)]


def test_kubeconform_validates_every_resource(kubeconform):
    resources = all_resources()
    rc, report = run_kubeconform(kubeconform, manifest_files())
    summary = report["summary"]
    listed = report["resources"]
    problems = [r for r in listed if r["status"] != "statusValid"]
    assert rc == 0 and not problems, f"kubeconform exit {rc}: {json.dumps(problems, indent=1)}"
    assert summary == {"valid": len(resources), "invalid": 0, "errors": 0, "skipped": 0}, summary
    # Every resource of every file, and nothing else, was validated against a schema.
    want = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in resources)
    got = sorted((r["kind"], r["name"]) for r in listed)
    assert got == want


BREAKAGES = {
    # -strict: a field the schema does not have.
    "typo in a container field": ("30-producers.yaml", "imagePullPolicy:", "imagePullPolicyy:"),
    "typo in the Job spec": ("31-consumers.yaml", "completionMode:", "completionMod:"),
    # A wrong type.
    "string where an int belongs": ("30-producers.yaml", "parallelism: 3", "parallelism: three"),
    # YAML 1.1 reads an unquoted yes as a boolean, which a Secret's stringData cannot hold.
    "unquoted boolean password": ("10-secret.yaml", 'password: "CHANGE-ME"', "password: yes"),
    # An unknown kind has no schema: an error, not a silent skip.
    "unknown kind": ("20-results-pvc.yaml", "kind: PersistentVolumeClaim",
                     "kind: PersistentVolumeClaimm"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_kubeconform_rejects_a_broken_manifest(kubeconform, tmp_path, case):
    name, old, new = BREAKAGES[case]
    text = (K8S_DIR / name).read_text()
    assert text.count(old) == 1, f"{old!r} not once in {name}"
    broken = tmp_path / name
    broken.write_text(text.replace(old, new))
    rc, report = run_kubeconform(kubeconform, [broken])
    summary = report["summary"]
    assert rc != 0
    assert summary["valid"] == len(load_docs(K8S_DIR / name)) - 1, summary
    assert summary["invalid"] + summary["errors"] == 1, summary
    assert summary["skipped"] == 0, summary


# --- the fleet's conventions ------------------------------------------------------------------

def by_kind(kind):
    return {doc["metadata"]["name"]: doc for _, doc in all_resources() if doc["kind"] == kind}


def settings():
    (cm,) = by_kind("ConfigMap").values()
    return cm


def secret():
    (s,) = by_kind("Secret").values()
    return s


def jobs():
    return by_kind("Job")


def job_by_component(component):
    (job,) = [j for j in jobs().values()
              if j["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return job


def test_fleet_shape():
    producers, consumers = job_by_component("producer"), job_by_component("consumer")
    data = settings()["data"]
    for job, count_key in ((producers, "PRODUCERS"), (consumers, "CONSUMERS")):
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == spec["parallelism"] == int(data[count_key]), job["metadata"]
        (container,) = spec["template"]["spec"]["containers"]
        args = container["args"]
        json_args = [a for a in args if a.startswith("--json=")]
        assert len(json_args) == 1 and "$(JOB_COMPLETION_INDEX)" in json_args[0], args
    assert int(data["CONSUMERS"]) <= int(data["PARTITIONS"])
    for _, doc in all_resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    # Result files of producers and consumers do not collide, and the merge reads both.
    p_json = next(a for a in producers["spec"]["template"]["spec"]["containers"][0]["args"]
                  if a.startswith("--json="))
    c_json = next(a for a in consumers["spec"]["template"]["spec"]["containers"][0]["args"]
                  if a.startswith("--json="))
    assert p_json != c_json
    script = job_by_component("merge")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "kafka-workload merge" in script and "--json" in script


def test_pods_are_hardened_and_keep_the_password_out_of_argv_and_env():
    password = secret()["stringData"]["password"]
    for name, job in jobs().items():
        pod = job["spec"]["template"]["spec"]
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, name
        assert pod["restartPolicy"] == "Never"
        assert pod["terminationGracePeriodSeconds"] >= 10, name
        for c in pod["containers"]:
            assert c["image"] == IMAGE
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(c["resources"]), name
            words = " ".join(c.get("command", []) + c.get("args", []))
            assert password not in words and "--password " not in words \
                and "--password=" not in words and "-p " not in words, name
            env_names = {e["name"] for e in c.get("env", [])}
            assert "KAFKA_WORKLOAD_PASSWORD" not in env_names, name
    for name in ("producer", "consumer"):
        pod = job_by_component(name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        mount = Path(env["KAFKA_WORKLOAD_PASSWORD_FILE"]["value"])
        vol = next(m for m in c["volumeMounts"] if m["mountPath"] == str(mount.parent))
        source = next(v for v in pod["volumes"] if v["name"] == vol["name"])
        assert source["secret"]["secretName"] == secret()["metadata"]["name"]
        assert any(i["path"] == mount.name and i["key"] == "password"
                   for i in source["secret"]["items"])
    assert "password" not in settings()["data"] and not any(
        "PASSWORD" in k and not k.endswith("_FILE") for k in settings()["data"])


# --- the fleet's command lines, run against the test bed -------------------------------------

def kubelet_expand(text, env):
    """$(NAME) -> env[NAME] when defined, $$ -> $, anything else unchanged (the kubelet's rules
    for command, args and env values)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            name = text[i + 2:end] if end != -1 else None
            if name is not None and name in env:
                out.append(env[name])
                i = end + 1
            else:
                out.append("$(")
                i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_kubelet_expand_rules():
    env = {"A": "1", "B": "x y"}
    assert kubelet_expand("--n=$(A) $(B)", env) == "--n=1 x y"
    assert kubelet_expand("$((A + 1)) $(date +%s) $(C) $$(A) $(A", env) == \
        "$((A + 1)) $(date +%s) $(C) $(A) $(A"


class PodRun:
    """One pod of a Job, run locally: its container's command line and environment as the
    kubelet would build them, its volumes mapped to directories under `root`."""

    def __init__(self, job, index, root, shared, overrides, secret_data, kw_bin):
        pod = job["spec"]["template"]["spec"]
        (self.container,) = pod["containers"]
        c = self.container
        self.mounts = {}
        for m in c.get("volumeMounts", []):
            vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
            if "persistentVolumeClaim" in vol:
                where = shared / vol["persistentVolumeClaim"]["claimName"]
            else:
                where = root / f"{job['metadata']['name']}-{index}" / m["name"]
            where.mkdir(parents=True, exist_ok=True)
            if "secret" in vol:
                for item in vol["secret"]["items"]:
                    (where / item["path"]).write_text(secret_data[item["key"]] + "\n")
            self.mounts[m["mountPath"]] = str(where)
        env = {}
        for source in c.get("envFrom", []):
            name = source["configMapRef"]["name"]
            (cm,) = [d for n, d in by_kind("ConfigMap").items() if n == name]
            env.update({k: overrides.get(k, v) for k, v in cm["data"].items()})
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = self.local(kubelet_expand(e["value"], env))
            elif "secretKeyRef" in e["valueFrom"]:
                env[e["name"]] = secret_data[e["valueFrom"]["secretKeyRef"]["key"]]
            else:
                path = e["valueFrom"]["fieldRef"]["fieldPath"]
                assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                env[e["name"]] = str(index)
        if job["spec"].get("completionMode") == "Indexed":
            env.setdefault("JOB_COMPLETION_INDEX", str(index))
        self.env = env
        command = c.get("command") or [IMAGE_ENTRYPOINT]
        argv = [self.local(kubelet_expand(a, env)) for a in command + c.get("args", [])]
        if argv[0] == IMAGE_ENTRYPOINT:
            argv[0] = kw_bin
        self.argv = argv

    def local(self, text):
        """Mount paths in `text` (at the start of a word, after `=` or a quote) made local."""
        if not self.mounts:
            return text
        alternatives = "|".join(re.escape(p) for p in sorted(self.mounts, key=len, reverse=True))
        pattern = re.compile(rf"(^|[\s=\"']){'(' + alternatives + ')'}(?=/|$|[\s\"'])")
        return pattern.sub(lambda m: m.group(1) + self.mounts[m.group(2)], text)


def count_run_messages(bootstrap, topic, timeout=60):
    """{run_id: number of records} for every kafka-workload message in the topic, read through
    the open listener by confluent-kafka."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("sc-check"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=20)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=20)
            ends[tp.partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        remaining = {p for p, high in ends.items() if high > 0}
        counts = {}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            try:
                run_id = json.loads(msg.value()).get("run_id")
            except (ValueError, AttributeError):
                run_id = None  # not a kafka-workload message
            counts[run_id] = counts.get(run_id, 0) + 1
            if msg.offset() + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        assert not remaining, f"partitions {remaining} not read to their end in {timeout} s"
        return counts
    finally:
        consumer.close()


def test_fleet_runs_against_the_bed(bed, kw_bin, new_topic, new_user, spawn, tmp_path):
    """3 producers and 2 consumers as the Jobs define them, then the merge Job's script."""
    topic = new_topic(partitions=3)
    user, password = new_user(topic)
    per_producer = 200
    overrides = {
        "KAFKA_WORKLOAD_SERVERS": bed.sasl_plaintext,
        "KAFKA_WORKLOAD_TOPIC": topic,
        "KAFKA_WORKLOAD_NUM_MESSAGES": str(per_producer),
        "PRODUCER_RATE": "500",
        "PARTITIONS": "3",
        "REPLICATION_FACTOR": "1",
        "CONSUMER_IDLE_TIMEOUT": "10",
        "MERGE_WAIT_SECONDS": "60",
    }
    secret_data = {"username": user, "password": password}
    shared = tmp_path / "pvc"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kafka-workload").symlink_to(kw_bin)
    path_env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def pods(component):
        job = job_by_component(component)
        return [PodRun(job, i, tmp_path, shared, overrides, secret_data, kw_bin)
                for i in range(job["spec"]["completions"])]

    def start(pod):
        # Only what the pod would have: its own environment (plus PATH and HOME to run at all).
        env = {**pod.env, **path_env, "HOME": str(tmp_path)}
        return pod, spawn(pod.argv, env=env | {"NO_COLOR": "1"})

    for pod in pods("producer") + pods("consumer"):
        assert not any(password in a for a in pod.argv), "password in argv"
        assert password not in pod.env.values(), "password in the environment"
    consumers = [start(p) for p in pods("consumer")]
    producers = [start(p) for p in pods("producer")]
    n_producers = len(producers)
    for pod, run in producers + consumers:
        rc = run.wait(90)
        assert rc == 0, f"{pod.argv} exit {rc}\n{run.stdout()[-3000:]}\n{run.stderr()[-3000:]}"
    results = shared / "kafka-workload-results"
    assert sorted(p.name for p in results.iterdir()) == sorted(
        [f"producer-{i}.json" for i in range(n_producers)]
        + [f"consumer-{i}.json" for i in range(len(consumers))])
    (merge_pod,) = pods("merge")
    merge_pod, merge = start(merge_pod)
    rc = merge.wait(90)
    out = merge.stdout()
    assert rc == 0, f"merge exit {rc}\n{out[-4000:]}\n{merge.stderr()[-3000:]}"
    merged = json.loads((results / "merged.json").read_text())
    total = n_producers * per_producer
    assert merged["producer"]["acked"] == total and merged["producer"]["failed"] == 0
    audit = merged["consumer"]["audit"]
    assert audit["distinct"] == total and audit["lost"] == 0, audit
    assert len(merged["merged_from"]) == n_producers + len(consumers)
    assert [c["passed"] for c in merged["checks"]] == [True, True, True], merged["checks"]
    # Each producer run is in the topic, complete, as an independent reader sees it.
    counts = count_run_messages(bed.plaintext, topic)
    runs = [json.loads((results / f"producer-{i}.json").read_text())["run_id"]
            for i in range(n_producers)]
    assert {r: counts.get(r) for r in runs} == {r: per_producer for r in runs}


# --- the Pebble layer -------------------------------------------------------------------------

DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
ACTIONS = {"restart", "shutdown", "failure-shutdown", "success-shutdown", "ignore"}
SERVICE_KEYS = {"summary", "description", "startup", "override", "command", "after", "before",
                "requires", "environment", "user", "user-id", "group", "group-id",
                "working-dir", "on-success", "on-failure", "on-check-failure", "backoff-delay",
                "backoff-factor", "backoff-limit", "kill-delay"}
CHECK_KEYS = {"override", "level", "startup", "period", "timeout", "threshold", "http", "tcp",
              "exec"}


def seconds(duration):
    assert DURATION.match(duration), f"not a Go duration: {duration!r}"
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)",
                                                           duration))


def pebble_layer():
    return yaml.safe_load(PEBBLE_LAYER.read_text())


def layer_service():
    (name, service), = pebble_layer()["services"].items()
    return name, service


def pebble_argv(command):
    """The argv Pebble runs: the command split like a shell would, without an optional trailing
    `[ default args ]` group's brackets."""
    words = shlex.split(command)
    if "[" in words:
        start = words.index("[")
        assert words[-1] == "]", command
        words = words[:start] + words[start + 1:-1]
    return words


def test_pebble_layer_fields():
    layer = pebble_layer()
    assert set(layer) <= {"summary", "description", "services", "checks", "log-targets"}
    checks = layer.get("checks", {})
    name, svc = layer_service()
    assert set(svc) <= SERVICE_KEYS, set(svc) - SERVICE_KEYS
    assert svc["override"] == "replace" and svc["startup"] == "enabled"
    argv = pebble_argv(svc["command"])
    assert argv[0] == IMAGE_ENTRYPOINT
    assert svc["on-failure"] == "restart" and svc["on-success"] in ACTIONS
    assert seconds(svc["backoff-delay"]) >= 1 and seconds(svc["backoff-limit"]) >= 10
    assert isinstance(svc["backoff-factor"], (int, float)) and svc["backoff-factor"] >= 1
    assert seconds(svc["kill-delay"]) >= 10, "SIGTERM needs time to flush before SIGKILL"
    env = svc["environment"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()), \
        "Pebble environment values must be strings"
    # No password in argv or environment: only a file that the charm writes.
    assert not any(w in ("-p", "--password") or w.startswith(("--password=", "-p"))
                   for w in argv[1:])
    assert "KAFKA_WORKLOAD_PASSWORD" not in env and env["KAFKA_WORKLOAD_PASSWORD_FILE"]
    assert "--credentials" not in argv or "KAFKA_WORKLOAD_CREDENTIALS" not in env
    # The health check: on the metrics port's /healthz, and the service reacts to it.
    host, _, port = env["KAFKA_WORKLOAD_METRICS_ADDR"].rpartition(":")
    assert int(port) == METRICS_PORT and host
    assert checks, "no health check"
    for check_name, check in checks.items():
        assert set(check) <= CHECK_KEYS and check["override"] == "replace"
        assert check.get("level", "alive") in {"alive", "ready"}
        assert sum(k in check for k in ("http", "tcp", "exec")) == 1
        assert seconds(check["timeout"]) < seconds(check["period"])
        assert isinstance(check["threshold"], int) and check["threshold"] >= 1
    (check,) = [c for c in checks.values() if "http" in c]
    assert check["http"]["url"] == f"http://localhost:{METRICS_PORT}/healthz"
    for target, action in svc.get("on-check-failure", {}).items():
        assert target in checks and action in ACTIONS


def http_status(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return None, ""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce_plain(bed, topic, n):
    producer = Producer({"bootstrap.servers": bed.plaintext, "acks": "all"})
    for i in range(n):
        producer.produce(topic, f"plain record {i}".encode())
    assert producer.flush(30) == 0


def group_committed_everything(bootstrap, topic, group):
    """Whether `group`'s committed offsets equal the end of every partition of `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=20).topics[topic].partitions
        tps = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=20)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                for p in parts}
        return {tp.partition: tp.offset for tp in tps} == ends
    finally:
        consumer.close()


def binary_has(kw_bin, flag):
    out = subprocess.run([kw_bin, "--help"], capture_output=True, text=True, timeout=30).stdout
    return flag in out


@pytest.mark.parametrize("role", ["producer", "consumer"])
def test_pebble_layer_command_runs_until_sigterm(bed, kw_bin, new_topic, new_user, spawn,
                                                 tmp_path, role):
    """The layer's service as Pebble starts it (its command, only its environment), pointed at
    the bed; its check URL turns 200, and SIGTERM ends it cleanly well within kill-delay."""
    for flag in ("--metrics-addr", "--forever"):
        if not binary_has(kw_bin, flag):
            pytest.skip(f"{kw_bin} has no {flag} yet (being added with the sidecar flags)")
    _, svc = layer_service()
    (check,) = [c for c in pebble_layer()["checks"].values() if "http" in c]
    topic = new_topic(partitions=3)
    prefix = unique("sc-pebble") + "-"
    user, password = new_user(topic, group_prefix=prefix)
    pw_file = tmp_path / "password"
    pw_file.write_text(password + "\n")
    port = free_port()
    env = dict(svc["environment"])
    env.update({
        "KAFKA_WORKLOAD_SERVERS": bed.sasl_plaintext,
        "KAFKA_WORKLOAD_USERNAME": user,
        "KAFKA_WORKLOAD_PASSWORD_FILE": str(pw_file),
        "KAFKA_WORKLOAD_TOPIC": topic,
        "KAFKA_WORKLOAD_CONSUMER_GROUP_PREFIX": prefix,
        "KAFKA_WORKLOAD_METRICS_ADDR": f"127.0.0.1:{port}",
    })
    argv = pebble_argv(svc["command"])
    argv[0] = kw_bin
    if "--replication-factor" in argv:  # one broker in the bed
        argv[argv.index("--replication-factor") + 1] = "1"
    if role == "consumer":  # the substitution the layer's comment describes
        i = argv.index("--producer")
        assert argv[i:i + 4] == ["--producer", "--forever", "--rate", "10"], argv
        argv[i:i + 4] = ["--consumer"]
    url = check["http"]["url"].replace(f":{METRICS_PORT}/", f":{port}/")
    env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    if role == "consumer":
        produce_plain(bed, topic, 20)
    run = spawn(argv, env=env)
    status = wait_until(lambda: http_status(url)[0] == 200 or run.proc.poll() is not None,
                        timeout=40, what=f"{url} answering 200")
    assert run.proc.poll() is None, f"exited {run.proc.returncode}: {run.stderr()[-3000:]}"
    assert status
    if role == "producer":
        wait_until(lambda: run.stdout().count("Message published to topic=") >= 5, timeout=30,
                   what="5 messages published")
    else:
        wait_until(lambda: run.stdout().count("ConsumerRecord(topic=") >= 20, timeout=30,
                   what="20 records consumed")
    started = time.monotonic()
    rc = run.stop(timeout=seconds(svc["kill-delay"]))
    took = time.monotonic() - started
    out = run.stdout()
    assert rc == 0, f"exit {rc} after SIGTERM\n{out[-3000:]}\n{run.stderr()[-3000:]}"
    assert took < seconds(svc["kill-delay"]) / 2, f"SIGTERM took {took:.1f} s"
    assert password not in out + run.stderr()
    if role == "producer":
        found = re.findall(r"^producer: (\d+) sent, (\d+) acknowledged, (\d+) failed", out, re.M)
        assert found, out[-3000:]
        sent, acked, failed = map(int, found[-1])
        assert acked >= 5 and failed == 0 and sent == acked
        assert list(count_run_messages(bed.plaintext, topic).values()) == [acked]
    else:
        prefix_group = env["KAFKA_WORKLOAD_CONSUMER_GROUP_PREFIX"] + "1"
        assert group_committed_everything(bed.plaintext, topic, prefix_group)
