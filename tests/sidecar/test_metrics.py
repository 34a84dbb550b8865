"""tests/sidecar/test_metrics.py: --metrics-addr, /healthz and --log-format json, as a sidecar.

Proves: /metrics parses with prometheus_client's own text-format parser and its counts equal the
run's --json summary; /healthz turns 503 (with a reason) when the broker is stopped and 200 when
it is back; every line of --log-format json is a JSON object with the documented keys.
"""

import json
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    """(status, body) of a GET; connection errors give (None, reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def scrape(port):
    """{sample name with sorted labels: value} from /metrics, through prometheus_client's parser."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_metrics_counts_equal_the_summary_of_the_same_run(bed, kw_bin, new_topic, spawn, tmp_path):
    topic = new_topic(partitions=3)
    port = free_port()
    result = tmp_path / "result.json"
    run = spawn([kw_bin, "--producer", "--consumer", "--consume-forever", "-s", bed.plaintext,
                 "-x", "PLAINTEXT", "-t", topic, "-n", "3000", "--rate", "1500",
                 "--metrics-addr", f"127.0.0.1:{port}", "--log-messages", "0",
                 "--json", result])
    # Everything sent has been acknowledged and read back; the process keeps consuming.
    m = wait_until(lambda: (lambda m: m if m.get("kafka_workload_records_consumed_total") == 3000
                            and m.get("kafka_workload_messages_acked_total") == 3000 else None)(
                                scrape(port)), 60, what="3000 acked and consumed in /metrics")
    assert run.stop() == 0, run.stderr()
    r = json.loads(result.read_text())
    p, c = r["producer"], r["consumer"]
    assert m["kafka_workload_messages_sent_total"] == p["sent"] == 3000
    assert m["kafka_workload_messages_acked_total"] == p["acked"]
    assert m["kafka_workload_messages_failed_total"] == p["failed"] == 0
    assert m["kafka_workload_produced_bytes_total"] == p["bytes"]
    assert m["kafka_workload_records_consumed_total"] == c["records"]
    assert m["kafka_workload_consumed_bytes_total"] == c["bytes"]
    assert m["kafka_workload_audit_distinct_total"] == c["audit"]["distinct"] == 3000
    assert m["kafka_workload_audit_duplicates_total"] == c["audit"]["duplicates"]
    assert m["kafka_workload_audit_foreign_total"] == c["audit"]["foreign"]
    assert m["kafka_workload_audit_lost"] == c["audit"]["lost"] == 0
    assert m["kafka_workload_ack_latency_seconds_count{schedule=intended}"] == \
        p["ack_latency"]["count"]
    assert m["kafka_workload_ack_latency_seconds_bucket{le=+Inf,schedule=intended}"] == 3000
    assert m["kafka_workload_e2e_latency_seconds_count{clock=monotonic}"] == \
        c["e2e_latency"]["count"]
    assert m["kafka_workload_brokers_up{role=consumer}"] >= 1
    assert any(k.startswith("kafka_workload_broker_rtt_seconds{") for k in m)
    assert any(k.startswith("kafka_workload_build_info{") for k in m)


def test_healthz_is_503_while_the_broker_is_stopped_and_200_when_it_is_back(
        bed, kw_bin, new_topic, new_user, spawn, tmp_path):
    topic = new_topic(partitions=3)
    user, password = new_user(topic, roles="producer")
    port = free_port()
    result = tmp_path / "result.json"
    run = spawn([kw_bin, "--producer", "--forever", "--rate", "200", "-s", bed.sasl_plaintext,
                 "-u", user, "-t", topic, "--metrics-addr", f"127.0.0.1:{port}",
                 "--log-messages", "0", "--json", result],
                env={"KAFKA_WORKLOAD_PASSWORD": password})
    health = f"http://127.0.0.1:{port}/healthz"
    wait_until(lambda: get(health)[0] == 200, 30, what="/healthz 200")
    try:
        bed.test_bed("stop", "1")
        status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(get(health)),
                                  30, what="/healthz 503 with the broker stopped")
        assert body.strip().startswith("producer:"), body
        assert "\n" not in body.strip(), "the reason is one line"
        assert password not in body
    finally:
        bed.test_bed("start", "1", timeout=180)
    wait_until(lambda: get(health)[0] == 200, 90, what="/healthz 200 after the restart")
    assert run.stop() == 0, run.stderr()
    r = json.loads(result.read_text())
    assert r["producer"]["failed"] == 0
    assert r["producer"]["acked"] == r["producer"]["sent"] > 0


def test_json_log_lines_are_objects_with_time_level_target_message_fields(
        bed, kw_bin, new_topic, spawn):
    topic = new_topic(partitions=1)
    run = spawn([kw_bin, "--producer", "-s", bed.plaintext, "-x", "PLAINTEXT", "-t", topic,
                 "-n", "20", "--log-format", "json", "--log-messages", "3"])
    assert run.wait(60) == 0, run.stderr()
    lines = [l for l in run.stdout().splitlines() if l.startswith("{")]
    objects = [json.loads(l) for l in lines]
    assert len(objects) >= 5
    for o in objects:
        assert {"time", "level", "target", "message", "fields"} <= o.keys(), o
        assert o["level"] in {"ERROR", "WARNING", "INFO", "DEBUG", "TRACE"}
        assert isinstance(o["fields"], dict)
    published = [o for o in objects if o["message"].startswith("Message published to topic=")]
    assert len(published) == 3
    assert any(o["message"] == "--producer - Starting..." for o in objects)
