"""tests/faults/test_brokers.py: the audit stays clean while brokers fail.

Owns: broker faults under a paced, idempotent acks=all producer and a consumer in one
kafka-workload process (`--producer --consumer`: the consumer joins first, then the producer
sends; the run ends once every acknowledged message arrived) on a 3-broker bed (RF 3,
min.insync.replicas 2), through the SCRAM listener as a user the test creates:

  (a) kill -9 the leader of a partition (not the group's coordinator) mid-run, start it again;
  (b) SIGTERM (controlled shutdown) the group's coordinator mid-run, start it again;
  (c) stop all three brokers at once while the producer keeps trying, start them again.

Each run must end with exit 0, a clean audit (0 lost, every acknowledged message consumed, 0
duplicates) and nothing failed; then the independent reader (confluent-kafka on the PLAINTEXT
listener) reads the whole topic: every acknowledged (run_id, seq) is there, none twice. The one
allowance: when the consumer's 10 s group session is lost (always in (c), whose outage outlasts
it; sometimes in (a) and (b) on a loaded machine, when the fault holds up the coordinator's
answers), librdkafka revokes its partitions and the group resumes from its last commit, so the
records processed after that commit arrive twice (at-least-once): up to T.session_replay_bound()
consumer duplicates are accepted, only when the log shows the session was lost. What is not
allowed is the run giving up meanwhile: if the rejoin outlasts --producer --consumer's 15 s idle
timeout, kafka-workload stops consuming while its producer still sends and exits 7 with a loss
verdict (its idle clock keeps running while it holds no partitions), and these tests fail.
Time to recover is measured from outside by the Probe (end offsets for acknowledgements, the
group's committed offsets for consumption) and printed with the other figures.
"""

import time

from conftest import T, audit_topic, wait_for_line, wait_for_progress

RESTART_S = 12  # a broker JVM's start on this 2-core machine, roughly


def start_both_roles(workload, user, topic, n, *extra):
    return workload("both", ["--producer", "--consumer", "-n", n, "--rate", T.rate,
                             "--log-messages", "none", *extra], user=user, topic=topic)


def wait_producing(w, probe, seconds):
    """The consumer is assigned and the producer has had `seconds` of traffic acknowledged."""
    wait_for_line(w, r"--producer - Starting", timeout=60)
    wait_for_progress(probe, "end", T.rate * seconds, timeout=seconds + 60,
                      what=f"{T.rate * seconds} messages acknowledged before the fault",
                      procs=[w])


SESSION_LOST = "Consumer group session timed out"


def check_clean(bed, w, rc, topic, figures, *, fault, probe, **more):
    """Figures first (so a failing run still shows them), then every check at once.

    Consumer duplicates must be 0, unless the consumer's log shows its group session was lost
    (librdkafka: "Consumer group session timed out ... revoking assignment and rejoining"):
    then the group resumes from the last commit and the records processed after it arrive
    again (at-least-once), and up to T.session_replay_bound() duplicates are accepted."""
    probe.settle()
    more = {k: (v() if callable(v) else v) for k, v in more.items()}
    res = w.result()
    assert res, f"no --json result (exit {rc})\n{w.tail()}"
    p, c = res["producer"], res["consumer"]
    audit = c["audit"]
    ta = audit_topic(bed, topic, p, res["run_id"])
    figures(fault=fault, producer=res, consumer=res, topic_records=ta.records,
            session_lost=int(SESSION_LOST in w.log()), **more)
    problems = []
    if rc != 0:
        problems.append(f"exit code {rc}")
    if not (p["sent"] == p["acked"] and p["failed"] == 0):
        problems.append(f"producer: {p['sent']} sent, {p['acked']} acknowledged, "
                        f"{p['failed']} failed ({p.get('errors')})")
    session_lost = SESSION_LOST in w.log()
    dup_limit = T.session_replay_bound() if session_lost else 0
    if audit["verdict"] != "clean" or audit["lost"] != 0 or audit["duplicates"] > dup_limit:
        problems.append(f"consumer audit: {audit['verdict']}, {audit['lost']} lost, "
                        f"{audit['duplicates']} duplicates (allowed {dup_limit}; group "
                        f"session {'lost' if session_lost else 'kept'})")
    if audit["expected"] != p["acked"] or audit["distinct"] != p["acked"]:
        problems.append(f"consumer: {audit['distinct']} distinct of {audit['expected']} "
                        f"expected, {p['acked']} acknowledged")
    problems += [f"independent reader: {x}" for x in ta.problems()]
    if ta.records != p["acked"]:
        problems.append(f"independent reader: {ta.records} records in the topic, "
                        f"{p['acked']} acknowledged")
    assert not problems, "\n".join(problems) + "\n" + w.tail()


def test_partition_leader_kill9(bed, brokers, new_topic, new_user, workload, probe, figures):
    """The broker killed leads a partition but is not the group's coordinator: leadership
    moves (after the controller fences the dead broker) and nothing may be lost. The run
    keeps the binary's defaults for the consumer (the 15 s idle timeout of --producer
    --consumer included)."""
    partitions = 3
    topic = new_topic(partitions)
    user = new_user(topic)
    group = f"{user[2]}1"
    n = T.rate * (T.before_fault + T.down + RESTART_S + T.after_fault)
    pr = probe(topic, partitions, group=group)
    w = start_both_roles(workload, user, topic, n)
    wait_producing(w, pr, T.before_fault)
    coordinator = brokers.coordinator_of(group)
    leaders = {p: brokers.leader_of(topic, p) for p in range(partitions)}
    victim = next((p for p, b in sorted(leaders.items()) if b != coordinator), None)
    assert victim is not None, f"every partition led by the coordinator {coordinator}: {leaders}"
    leader = leaders[victim]
    t_fault = time.monotonic()
    brokers.kill(leader)
    t_down = time.monotonic()
    time.sleep(T.down)
    brokers.start(leader)
    t_up = time.monotonic()
    rc = w.wait(n / T.rate + 150)
    check_clean(bed, w, rc, topic, figures, probe=pr,
                fault=f"kill -9 broker {leader} (leader of p{victim}; coordinator {coordinator}), "
                f"down {t_up - t_down:.1f} s",
                recover_ack_s=lambda: pr.resumed(t_fault, "end", t_down),
                recover_consume_s=lambda: pr.resumed(t_fault, "committed", t_down))


def test_broker_sigterm_stop(bed, brokers, new_topic, new_user, workload, probe, figures):
    """The broker stopped is the consumer group's coordinator: the commits move too."""
    partitions = 6
    topic = new_topic(partitions)
    user = new_user(topic)
    group = f"{user[2]}1"
    n = T.rate * (T.before_fault + T.down + RESTART_S + T.after_fault)
    pr = probe(topic, partitions, group=group)
    w = start_both_roles(workload, user, topic, n)
    wait_producing(w, pr, T.before_fault)
    node = brokers.coordinator_of(group)
    led = [p for p in range(partitions) if brokers.leader_of(topic, p) == node]
    t_fault = time.monotonic()
    brokers.stop(node)
    t_down = time.monotonic()
    time.sleep(T.down)
    brokers.start(node)
    t_up = time.monotonic()
    rc = w.wait(n / T.rate + 150)
    check_clean(bed, w, rc, topic, figures, probe=pr,
                fault=f"SIGTERM broker {node} (group coordinator, leader of p{led}), "
                f"stop took {t_down - t_fault:.1f} s, down {t_up - t_down:.1f} s",
                recover_ack_s=lambda: pr.resumed(t_fault, "end", t_down),
                recover_consume_s=lambda: pr.resumed(t_fault, "committed", t_down))


def test_whole_cluster_restart(bed, brokers, new_topic, new_user, workload, probe, figures):
    """All three brokers stop (controlled shutdown, at once; the last one's cannot finish
    without a quorum and it gets SIGKILL 30 s later) and start again while the
    producer keeps sending. --delivery-timeout (librdkafka's message.timeout.ms) is far above
    the outage, so nothing may fail; --idle-timeout keeps the consumer waiting through it. The
    consumer's group session expires meanwhile: bounded duplicates (see check_clean)."""
    partitions = 3
    topic = new_topic(partitions)
    user = new_user(topic)
    n = T.rate * (T.before_fault + 8 + T.down + RESTART_S + T.after_fault)
    pr = probe(topic, partitions, group=f"{user[2]}1")
    w = start_both_roles(workload, user, topic, n, "--delivery-timeout", 240,
                         "--idle-timeout", 120)
    wait_producing(w, pr, T.before_fault)
    t_fault = time.monotonic()
    killed = brokers.stop_all()
    t_down = time.monotonic()
    time.sleep(T.down)
    assert w.running(), f"the run ended while the cluster was down\n{w.tail()}"
    brokers.start(1, 2, 3)
    t_up = time.monotonic()
    rc = w.wait(n / T.rate + 200)
    check_clean(bed, w, rc, topic, figures, probe=pr,
                fault=f"SIGTERM all 3 brokers at once (took {t_down - t_fault:.1f} s"
                f"{f', SIGKILL for {sorted(killed)} after 30 s' if killed else ''}), all down "
                f"{T.down} s, restart took {t_up - t_down - T.down:.1f} s",
                recover_ack_s=lambda: pr.resumed(t_fault, "end", t_down),
                recover_consume_s=lambda: pr.resumed(t_fault, "committed", t_down),
                recover_after_restart_ack_s=lambda: pr.resumed(t_up, "end"),
                recover_after_restart_consume_s=lambda: pr.resumed(t_up, "committed"))
