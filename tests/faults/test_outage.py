"""tests/faults/test_outage.py: an outage longer than the delivery timeout.

Owns: the case where the whole cluster stays down past `--delivery-timeout` (librdkafka's
message.timeout.ms) while a paced producer and a consumer run in one process. Messages still
unacknowledged when their timeout runs out must be reported, never dropped silently: counted as
failed, named by sequence number in the summary, in `--json` (`failed_seqs`) and in the one-line
error, and the run exits 1. The consumer reads on until every acknowledged message arrived; its
audit must not call the failed ones' gaps lost (they are `not_delivered`), and every
acknowledged message must be in the topic (independent reader). Copies in the topic are
allowed here, and must be counted (see below).
"""

import re
import time

from conftest import T, audit_topic, ranges_to_set, wait_for_line, wait_for_progress

DELIVERY_TIMEOUT_S = 4
RATE = 1000


def test_outage_longer_than_the_delivery_timeout(bed, brokers, new_topic, new_user, workload,
                                                  probe, figures):
    partitions = 3
    topic = new_topic(partitions)
    user = new_user(topic)
    down_s = DELIVERY_TIMEOUT_S + 4 + (10 if T.before_fault > 4 else 0)
    # Brokers take ~10-25 s to stop and start on 2 cores; 40 s more of sending shows recovery.
    seconds = T.before_fault + down_s + 40 + T.after_fault
    pr = probe(topic, partitions)
    w = workload("outage", ["--producer", "--consumer", "-n", RATE * seconds, "--rate", RATE,
                            "--delivery-timeout", DELIVERY_TIMEOUT_S, "--idle-timeout", 120,
                            "--log-messages", "none"], user=user, topic=topic)
    wait_for_line(w, r"--producer - Starting", timeout=60)
    wait_for_progress(pr, "end", RATE * T.before_fault, timeout=T.before_fault + 60,
                      what="acknowledgements before the outage", procs=[w])
    t_fault = time.monotonic()
    killed = brokers.stop_all()
    t_down = time.monotonic()
    time.sleep(down_s)
    assert w.running(), f"the run ended during the outage\n{w.tail()}"
    brokers.start(1, 2, 3)
    t_up = time.monotonic()
    rc = w.wait(seconds + 240)
    pr.settle()
    res = w.result()
    assert res, f"no --json result (exit {rc})\n{w.tail()}"
    p, c = res["producer"], res["consumer"]
    audit = c["audit"]
    failed = ranges_to_set(p["failed_seqs"])
    ta = audit_topic(bed, topic, p, res["run_id"])
    figures(fault=f"all 3 brokers down {t_up - t_down:.1f} s (stop took {t_down - t_fault:.1f} "
            f"s{f', SIGKILL for {sorted(killed)}' if killed else ''}) with --delivery-timeout {DELIVERY_TIMEOUT_S} s",
            producer=res, consumer=res, not_delivered=audit.get("not_delivered"),
            failed_ranges=len(p["failed_seqs"]), topic_records=ta.records,
            topic_duplicates=ta.duplicates,
            recover_ack_s=pr.recovery(t_up, t_up, "end"))
    err_lines = [ln for ln in w.stderr().splitlines() if ln.strip()]
    problems = []
    if rc != 1:
        problems.append(f"exit {rc}, expected 1")
    if p["failed"] == 0:
        problems.append("nothing failed, though the outage outlasted the delivery timeout")
    if len(failed) != p["failed"]:
        problems.append(f"failed_seqs name {len(failed)} messages, failed says {p['failed']}")
    if p["sent"] != p["acked"] + p["failed"]:
        problems.append(f"{p['sent']} sent != {p['acked']} acked + {p['failed']} failed")
    if p["client"]["errors"].get("MessageTimedOut", 0) != p["failed"]:
        problems.append(f"client errors {p['client']['errors']} do not count the timeouts")
    want = rf"^kafka-workload: error: producer: {p['failed']} of {p['sent']} messages were not " \
        rf"delivered within --delivery-timeout \({DELIVERY_TIMEOUT_S} s\): sequence numbers \d"
    if len(err_lines) != 1 or not re.match(want, err_lines[0]):
        problems.append(f"stderr is not the one expected line: {err_lines[-3:]}")
    if "not delivered: sequence numbers" not in w.log():
        problems.append("the summary does not name the undelivered messages")
    if audit["lost"] != 0 or audit["verdict"] != "clean":
        problems.append(f"consumer audit {audit['verdict']}: {audit['lost']} lost")
    if audit.get("not_delivered", 0) == 0:
        problems.append("the consumer's audit does not count the producer's undelivered gaps")
    if audit["distinct"] < p["acked"]:
        problems.append(f"consumer: {audit['distinct']} distinct < {p['acked']} acknowledged")
    # The reader: every acknowledged message is in the topic. A failed message may still have
    # reached the log (a timeout after the broker wrote it but before the answer came back).
    # And once messages time out in flight, librdkafka must bump the idempotent producer's
    # epoch; batches it sends again under the new epoch cannot be recognised by the broker as
    # already written, so the topic can hold copies (KIP-360's limit, seen: 1,207 of 16,285).
    # Those are no loss, and our consumer must count each: its duplicates >= the topic's.
    problems += [f"independent reader: {x}" for x in ta.problems()
                 if not x.split(" ", 1)[1].startswith("duplicate records")]
    if audit["duplicates"] < ta.duplicates:
        problems.append(f"the topic holds {ta.duplicates} duplicates, the consumer counted "
                        f"{audit['duplicates']}")
    assert not problems, "\n".join(problems) + "\n" + w.tail()
