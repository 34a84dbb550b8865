"""tests/faults/test_transactions.py: exactly-once stays exact while a broker dies.

A transactional round trip (`--producer --consumer --transactional --txn-size 500 --abort-rate
0.1`, read_committed) on the 3-broker bed (RF 3, min.insync.replicas 2, the transaction state log
RF 3 with min ISR 2), paced at T.rate; mid-run the leader of one of the topic's partitions that
is not the consumer group's coordinator (it may be the producer's transaction coordinator) is
killed with -9 and started again. The run must end with exit 0 and a CLEAN verdict: every committed
message read, no aborted record read. A transaction the fault broke (its commit failed and it
was aborted) is the producer's word like the planned aborts. Then confluent-kafka, an independent
reader, reads the topic read_committed on the PLAINTEXT listener: what it finds is exactly the
producer's committed sequence numbers, each once.

The producer runs as the bed's admin user: Charmed Kafka's producer role has no grant on the
TransactionalId resource (README, "Exactly-once").
"""

import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from conftest import QUIET, T, ranges_to_set, wait_for_line

RESTART_S = 12


def read_committed(bed, topic, timeout=90):
    """(run_id, seq) of every record a read_committed reader finds in `topic`, with duplicates."""
    c = Consumer({**QUIET, "bootstrap.servers": bed.plaintext,
                  "group.id": f"flt-txn-check-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        parts = sorted(c.list_topics(topic, timeout=20).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        done, out, deadline = set(), [], time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    done.add(m.partition())
                continue
            v = json.loads(m.value())
            out.append((v["run_id"], v["seq"]))
        assert len(done) == len(parts), f"{topic}: not every partition read to its end"
        return out
    finally:
        c.close()


def test_transactional_round_trip_survives_a_partition_leader_kill9(bed, brokers, new_topic,
                                                                   workload, figures):
    partitions = 3
    topic = new_topic(partitions)
    group = f"flt-txn-{uuid.uuid4().hex[:8]}"
    txn_id = f"flt-txn-{uuid.uuid4().hex[:8]}"
    user = (bed.env["KAFKA_ADMIN_USER"], bed.env["KAFKA_ADMIN_PASSWORD"], "unused-")
    n = T.rate * (T.before_fault + T.down + RESTART_S + T.after_fault)
    w = workload("txn", ["--producer", "--consumer", "-n", n, "--rate", T.rate,
                         "--transactional-id", txn_id, "--txn-size", 500, "--abort-rate", 0.1,
                         "--group-id", group, "--log-messages", "none"], user=user, topic=topic)
    wait_for_line(w, r"--producer - Starting", timeout=60)
    time.sleep(T.before_fault)
    assert w.running(), w.tail()
    coordinator = brokers.coordinator_of(group)
    leaders = {p: brokers.leader_of(topic, p) for p in range(partitions)}
    victim = next((b for _, b in sorted(leaders.items()) if b != coordinator), None)
    assert victim is not None, f"every partition led by the coordinator {coordinator}: {leaders}"
    brokers.kill(victim)
    time.sleep(T.down)
    brokers.start(victim)
    rc = w.wait(n / T.rate + 150)

    res = w.result()
    assert res, f"no --json result (exit {rc})\n{w.tail()}"
    p, c = res["producer"], res["consumer"]
    t, a = p["transactions"], c["audit"]
    committed = ranges_to_set(t["committed_seqs"])
    aborted = ranges_to_set(t["aborted_seqs"])
    found = [s for run, s in read_committed(bed, topic) if run == res["run_id"]]
    figures(fault=f"kill -9 broker {victim} (partition leader; group coordinator {coordinator})",
            producer=res, consumer=res, topic_records=len(found),
            txn_committed=t["committed"], txn_aborted=t["aborted"],
            txn_failed_commits=t["failed_commits"],
            commit_p99_ms=t["commit_latency"]["p99_us"] / 1000)
    problems = []
    if rc != 0:
        problems.append(f"exit code {rc}")
    if a["verdict"] != "clean" or a["lost"] != 0 or a["aborted_read"] != 0:
        problems.append(f"audit: {a['verdict']}, {a['lost']} lost, {a['aborted_read']} aborted "
                        f"records read")
    if len(committed) + len(aborted) != n or committed & aborted:
        problems.append(f"the producer's word: {len(committed)} committed + {len(aborted)} "
                        f"aborted of {n}")
    if t["aborted"] < n // 500 // 10:
        problems.append(f"only {t['aborted']} transactions aborted; --abort-rate 0.1 plans "
                        f"{n // 500 // 10}")
    if sorted(found) != sorted(committed):
        extra = sorted(set(found) - committed)[:10]
        missing = sorted(committed - set(found))[:10]
        problems.append(f"read_committed reader: {len(found)} records ({len(set(found))} "
                        f"distinct), {len(committed)} committed; not committed but read "
                        f"{extra}, committed but missing {missing}")
    assert not problems, "\n".join(problems) + "\n" + w.tail()
