"""tests/faults/test_consumers.py: the group's audit stays clean while its consumers fail.

Owns: consumer faults on a 3-broker bed (RF 3, min.insync.replicas 2): one paced, idempotent
acks=all `--producer` process and `--consumer` processes of one group, each through the SCRAM
listener as the test's user, each with its own `--json`. The group's verdict is
`kafka-workload merge` of the producer's and every consumer's results:

  (d) kill -9 the consumer mid-run and start it again in the same group;
  (e) a second consumer joins the group mid-run and leaves (SIGTERM) before the end.

The merged audit must show 0 lost and every acknowledged message, and at most
T.replay_bound() duplicates (one commit window of records, with margin: see conftest.Timings);
the duplicates are printed. The independent reader (confluent-kafka on the PLAINTEXT listener)
then checks the topic itself: every acknowledged (run_id, seq) is there, none twice.
"""

import re
import signal
import time

from conftest import (T, audit_topic, merge, wait_for_line, wait_for_progress, wait_until)

ASSIGNED = r"partitions assigned partitions=\[\d"
RECORD = re.compile(r"ConsumerRecord\(topic='[^']*', partition=(\d+), offset=(\d+),")


def start_producer(workload, user, topic, n):
    return workload("producer", ["--producer", "-n", n, "--rate", T.rate, "--log-messages",
                                 "none"], user=user, topic=topic)


def start_consumer(workload, name, user, topic, *extra):
    return workload(name, ["--consumer", *extra], user=user, topic=topic)


def processed_offsets(log):
    """{partition: highest offset} of the records a consumer logged (--log-messages all)."""
    out = {}
    for p, o in RECORD.findall(log):
        out[int(p)] = max(out.get(int(p), -1), int(o))
    return out


def committed_now(probe):
    """The group's committed offsets, read once now ({partition: offset})."""
    return wait_until(lambda: probe._committed() or None, 20, interval=0.5,
                      what="the group's committed offsets")


def group_verdict(kw_bin, bed, tmp_path, topic, producer, consumers):
    """Merges the producer's and the consumers' --json; reads the topic independently."""
    pres = producer.result()
    assert pres, f"the producer left no --json (exit {producer.rc})\n{producer.tail()}"
    files = [producer.json_path] + [c.json_path for c in consumers if c.result()]
    rc, merged, out = merge(kw_bin, files, tmp_path / "merged.json")
    assert rc == 0 and merged, f"merge {files} exited {rc}:\n{out}"
    ta = audit_topic(bed, topic, pres["producer"], pres["run_id"])
    return pres, merged, ta, out


def group_problems(pres, merged, ta, procs):
    """Every check of a consumer fault, as a list of problems (empty when all hold)."""
    problems = [f"{w.name} exited {w.rc}" for w in procs if w.rc != 0]
    p, c = pres["producer"], merged["consumer"]
    a = c["audit"]
    if not (p["sent"] == p["acked"] and p["failed"] == 0):
        problems.append(f"producer: {p['sent']} sent, {p['acked']} acknowledged, "
                        f"{p['failed']} failed ({p.get('errors')})")
    if a["verdict"] != "clean" or a["lost"] != 0 or a["distinct"] != p["acked"]:
        problems.append(f"merged audit: {a['verdict']}, {a['lost']} lost, {a['distinct']} "
                        f"distinct of {p['acked']} acknowledged")
    if a["duplicates"] > T.replay_bound():
        problems.append(f"merged audit: {a['duplicates']} duplicates, more than one commit "
                        f"window allows ({T.replay_bound()})")
    if a["out_of_order"] or a["foreign"]:
        problems.append(f"merged audit: {a['out_of_order']} out of order, {a['foreign']} foreign")
    problems += [f"independent reader: {x}" for x in ta.problems()]
    if ta.records != p["acked"]:
        problems.append(f"independent reader: {ta.records} records, {p['acked']} acknowledged")
    return problems


def test_consumer_kill9_and_restart(bed, kw_bin, new_topic, new_user, workload, probe, figures,
                                    tmp_path):
    """The group's only consumer is SIGKILLed mid-run and started again in the same group: the
    new one resumes from the last commit (after the dead member's session times out), so the
    records processed since that commit are read twice; nothing may be missing."""
    partitions = 6
    topic = new_topic(partitions)
    user = new_user(topic)
    group = f"{user[2]}1"
    pr = probe(topic, partitions, group=group)
    # Every record logged, so that what it processed can be compared with what it committed.
    c1 = start_consumer(workload, "consumer-1", user, topic, "--log-messages", "all")
    wait_for_line(c1, ASSIGNED, 60)
    n = T.rate * (T.before_fault + T.session_timeout + T.after_fault)
    prod = start_producer(workload, user, topic, n)
    wait_for_progress(pr, "committed", T.rate * T.before_fault, T.before_fault + 60,
                      f"consumer-1 committed {T.rate * T.before_fault} records", [c1, prod])
    t_fault = time.monotonic()
    c1.kill9()
    t_dead = time.monotonic()
    # Nobody commits for the group until consumer-2 is assigned: this is where it resumes.
    resume_at = committed_now(pr)
    processed = processed_offsets(c1.log())
    replayed = sum(max(0, processed[p] + 1 - resume_at.get(p, 0)) for p in processed)
    c2 = start_consumer(workload, "consumer-2", user, topic, "--idle-timeout", 6)
    t_assigned = wait_for_line(c2, ASSIGNED, T.session_timeout + 60)
    prod.wait(n / T.rate + 120)
    c2.wait(n / T.rate + 120)
    pr.settle()
    pres, merged, ta, out = group_verdict(kw_bin, bed, tmp_path, topic, prod, [c1, c2])
    figures(fault=f"kill -9 the group's only consumer after {T.before_fault} s, restarted",
            producer=pres, consumer=merged, errors_from=[pres, c1.result(), c2.result()],
            topic_records=ta.records, replayed_by_offsets=replayed,
            replay_bound=T.replay_bound(), consumer1_json=int(c1.result() is not None),
            reassigned_after_s=round(t_assigned - t_fault, 2),
            recover_consume_s=pr.resumed(t_fault, "committed", t_dead))
    problems = group_problems(pres, merged, ta, [prod, c2])
    if replayed > T.replay_bound():
        problems.append(f"consumer-1 had processed {replayed} records beyond its last commit, "
                        f"more than one commit window ({T.replay_bound()})")
    if c1.result() is None:
        problems.insert(0, "consumer-1 (SIGKILLed) left no --json: kafka-workload writes its "
                        "result only when it exits, so the records it consumed and committed "
                        "are in nobody's audit and the group's merged audit counts them lost")
    assert not problems, "\n".join(problems) + f"\n{out}\n{c2.tail()}"


def test_rebalance_consumer_joins_and_leaves(bed, kw_bin, new_topic, new_user, workload, probe,
                                             figures, tmp_path):
    """consumer-b joins the group of consumer-a mid-run (the partitions are split) and leaves
    with SIGTERM (it commits, the partitions go back to consumer-a) before the run ends."""
    partitions = 6
    topic = new_topic(partitions)
    user = new_user(topic)
    group = f"{user[2]}1"
    pr = probe(topic, partitions, group=group)
    a = start_consumer(workload, "consumer-a", user, topic, "--idle-timeout", 6)
    wait_for_line(a, ASSIGNED, 60)
    n = T.rate * (T.before_fault + 2 * T.down + 8 + T.after_fault)
    prod = start_producer(workload, user, topic, n)
    wait_for_progress(pr, "committed", T.rate * T.before_fault, T.before_fault + 60,
                      f"consumer-a committed {T.rate * T.before_fault} records", [a, prod])
    t_join = time.monotonic()
    b = start_consumer(workload, "consumer-b", user, topic)
    t_b_assigned = wait_for_line(b, ASSIGNED, 60)
    time.sleep(T.down + 3)
    assert prod.running(), "the producer finished before consumer-b left: lengthen the run"
    t_leave = time.monotonic()
    b.signal(signal.SIGTERM)
    b.wait(60)
    t_left = time.monotonic()
    prod.wait(n / T.rate + 120)
    a.wait(n / T.rate + 120)
    pr.settle()
    pres, merged, ta, out = group_verdict(kw_bin, bed, tmp_path, topic, prod, [a, b])
    bres = b.result() or {}
    b_records = (bres.get("consumer") or {}).get("records")
    figures(fault=f"consumer-b joins after {T.before_fault} s, SIGTERM "
            f"{t_leave - t_b_assigned:.1f} s after its assignment",
            producer=pres, consumer=merged, errors_from=[pres, a.result(), bres],
            topic_records=ta.records, consumer_b_records=b_records,
            replay_bound=T.replay_bound(),
            join_assigned_after_s=round(t_b_assigned - t_join, 2),
            recover_join_consume_s=pr.resumed(t_join, "committed", t_b_assigned,
                                              until=t_leave),
            recover_leave_consume_s=pr.resumed(t_leave, "committed", t_left))
    problems = group_problems(pres, merged, ta, [prod, a, b])
    if not b_records:
        problems.append(f"consumer-b read nothing while in the group ({b_records})")
    assert not problems, "\n".join(problems) + f"\n{out}\n{a.tail()}\n{b.tail()}"
