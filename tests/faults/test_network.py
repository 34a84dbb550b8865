"""tests/faults/test_network.py: the audit stays clean while the network to one broker fails.

Owns: network faults on the client path to one broker, injected with Toxiproxy
(`scripts/test-bed toxic`), under a paced, idempotent acks=all producer and a consumer in one
kafka-workload process (`--producer --consumer`) that connects through KAFKA_PROXIED, the SCRAM
listener that reaches every broker through a proxy of its own, on a 3-broker bed (RF 3,
min.insync.replicas 2):

  (a) cut: the proxy of the broker leading a partition is disabled (open connections cut, new
      ones refused) for a few seconds, then enabled again;
  (b) hang: a timeout toxic (data stops both ways, connections stay open) on that broker, then
      cleared;
  (c) latency: 200 ms +- 50 ms each way on that broker for several seconds;
  (d) bandwidth: 64 KB/s each way on that broker for several seconds.

Only the clients' path is faulty: the broker itself, its replication and the other listeners are
untouched, so leadership does not move and the broker stays in the ISR. The producer must ride
it out: nothing failed, every acknowledged message consumed once (the run's own audit), and the
independent reader (confluent-kafka on the PLAINTEXT listener, which bypasses Toxiproxy) finds
every acknowledged (run_id, seq) in the topic exactly once. A fault that must have cut or hung a
connection must show in the result's client counters: a cut as disconnects and error events
(BrokerTransportFailure), a hang as request timeouts and disconnects (librdkafka raises no error
event for a timed-out request, so none is required there). The victim is never the consumer group's coordinator: losing the coordinator for longer
than the session costs a rebalance and may replay up to a commit window, which is the
at-least-once case test_brokers.py bounds; here duplicates must be 0 on both sides.

Time to recover is measured from outside by the Probe on the open listener: from the heal until
every partition's acknowledgements advanced again (recover_ack_s) and until the acknowledged
count is back on the paced producer's schedule, i.e. the backlog the fault built is gone
(recover_schedule_s). Every toxic is removed when a test ends, even on failure.
"""

import time

import pytest

from conftest import LONG, SKIP_UNLESS_THREE, T, audit_topic, client_errors, wait_for_line, \
    wait_for_progress

CUT_S = 12 if LONG else 4            # (a) the proxy stays down this long
# (a) kafka-workload bounds librdkafka's reconnect back-off (reconnect.backoff.ms 100, doubling)
# at 1 s (reconnect.backoff.max.ms, librdkafka's default is 10 s): the producer keeps sending this
# much longer so the run goes on past its recovery, with margin for a loaded machine.
RECONNECT_S = 8
# (b) librdkafka's socket.timeout.ms for this case. Its default (60 s) means a connection that
# silently stops answering -- a hung path, no RST -- holds every request on it for a minute
# before the client gives up and reconnects. A Kafka engineer running a latency-sensitive
# producer on a LAN sets it to a few seconds: requests here answer in well under a second even
# on this loaded machine, so 5 s of silence means the path is dead. (librdkafka's default
# socket.max.fails=1 then closes the connection on the first timed-out request.)
# message.timeout.ms (--delivery-timeout, 300 s) stays far above it: retries, not failures.
HANG_SOCKET_TIMEOUT_MS = 5000
HANG_S = 20 if LONG else 7           # (b) longer than the socket timeout, so it must fire
LATENCY_MS, JITTER_MS = 200, 50       # (c) each way
LATENCY_S = 20 if LONG else 6         # (c) how long
BANDWIDTH_KBPS = 64                   # (d) each way
BANDWIDTH_S = 20 if LONG else 6       # (d) how long
PARTITIONS = 3
STALL_MARGIN_S = 1.5
SCHEDULE_SLACK_S = 0.5                # "on schedule": within this many seconds of the pre-fault lag


@pytest.fixture(scope="module")
def proxied(bed):
    """KAFKA_PROXIED (3 addresses) and Toxiproxy, or fail (skip with KW_FAULTS_SKIP=1)."""
    servers = bed.env.get("KAFKA_PROXIED", "")
    if len([s for s in servers.split(",") if s]) != 3 or not bed.env.get("TEST_BED_TOXIPROXY"):
        msg = (f"the network faults need the bed's Toxiproxy path (KAFKA_PROXIED with 3 "
               f"addresses, TEST_BED_TOXIPROXY), `scripts/test-bed env` says "
               f"KAFKA_PROXIED={servers or 'unset'}: `scripts/test-bed down && "
               "scripts/test-bed up --brokers 3`")
        if SKIP_UNLESS_THREE:
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    return servers


class Toxics:
    """`scripts/test-bed toxic ...` for this bed."""

    def __init__(self, bed):
        self.bed = bed

    def __call__(self, node, *action):
        self.bed.test_bed("toxic", node, *action, timeout=30)

    def clear_all(self):
        self.bed.test_bed("toxic", "all", "clear", timeout=30)


@pytest.fixture
def toxics(bed, proxied):
    """Toxic control; every proxy is cleared and enabled before and after the test, even when
    it failed (a failing clear fails the test's teardown loudly)."""
    t = Toxics(bed)
    t.clear_all()
    try:
        yield t
    finally:
        t.clear_all()


# --- the run --------------------------------------------------------------------------------

class Run:
    """One `--producer --consumer` run through the proxies with one fault on one broker."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def run_with_fault(*, bed, brokers, new_topic, new_user, workload, probe, proxied, hold,
                   apply, heal, extra=(), settle=0):
    """Starts the run, waits for T.before_fault s of acknowledged traffic, picks the victim (a
    partition leader that is not the group coordinator), apply(victim), holds `hold` s,
    heal(victim), and waits for the run's end. The producer sends for T.after_fault + `settle`
    s after the heal (settle: how long the client may take to get going again)."""
    topic = new_topic(PARTITIONS)
    user = new_user(topic)
    group = f"{user[2]}1"
    n = T.rate * (T.before_fault + 2 + hold + settle + T.after_fault)
    pr = probe(topic, PARTITIONS, group=group)
    w = workload("both", ["-s", proxied, "--producer", "--consumer", "-n", n, "--rate", T.rate,
                          "--log-messages", "none", *extra], user=user, topic=topic)
    t_start = wait_for_line(w, r"--producer - Starting", timeout=60)
    wait_for_progress(pr, "end", T.rate * T.before_fault, timeout=T.before_fault + 60,
                      what=f"{T.rate * T.before_fault} messages acknowledged before the fault")
    coordinator = brokers.coordinator_of(group)
    leaders = {p: brokers.leader_of(topic, p) for p in range(PARTITIONS)}
    victim = next((b for _, b in sorted(leaders.items()) if b != coordinator), None)
    assert victim is not None, f"every partition led by the coordinator {coordinator}: {leaders}"
    led = sorted(p for p, b in leaders.items() if b == victim)
    t_fault = time.monotonic()
    apply(victim)
    t_on = time.monotonic()
    time.sleep(hold)
    assert w.running(), f"the run ended during the fault\n{w.tail()}"
    # The heal takes effect inside the `scripts/test-bed toxic` call, before it returns: the
    # fault's window ends, and recovery is timed from, the moment the call starts.
    t_heal = time.monotonic()
    heal(victim)
    rc = w.wait(n / T.rate + 120)
    return Run(topic=topic, user=user, group=group, n=n, probe=pr, w=w, rc=rc, victim=victim,
               led=led, coordinator=coordinator, t_start=t_start, t_fault=t_fault, t_on=t_on,
               t_heal=t_heal)


def end_samples(pr):
    """The probe's end-offset samples with every partition present (the PLAINTEXT listener it
    reads bypasses Toxiproxy, so normally all of them)."""
    with pr.lock:
        return [(t, v) for t, v in pr.samples["end"] if len(v) == len(pr.tps)]


def advance(pr, partitions, t0, t1):
    """(messages acknowledged on `partitions` between the first sample at or after t0 and the
    last at or before t1, seconds between those samples)."""
    window = [(t, v) for t, v in end_samples(pr) if t0 <= t <= t1]
    if len(window) < 2:
        return None, None
    (ta, a), (tb, b) = window[0], window[-1]
    return sum(b[p] - a[p] for p in partitions), tb - ta


def schedule_figures(run):
    """The paced producer's acknowledged count against its schedule: lag(t) = min(n, rate *
    (t - t_start)) - acknowledged(t). t_start is when the producer said it started (seen within
    0.1 s); that error is the same in every sample before the schedule's end, so comparing lags
    cancels it. Returns (baseline lag before the fault, peak lag from the fault on, seconds from
    the heal until the lag is back within SCHEDULE_SLACK_S of the baseline, or None)."""
    lag = [(t, min(run.n, T.rate * (t - run.t_start)) - sum(v.values()))
           for t, v in end_samples(run.probe)]
    before = sorted(x for t, x in lag if run.t_start + 1.5 <= t <= run.t_fault)
    if not before:
        return None, None, None
    baseline = before[len(before) // 2]
    peak = max((x for t, x in lag if t >= run.t_fault), default=None)
    back = next((t for t, x in lag
                 if t >= run.t_heal and x <= baseline + SCHEDULE_SLACK_S * T.rate), None)
    return (round(baseline), None if peak is None else round(peak),
            None if back is None else round(back - run.t_heal, 2))


def finish(bed, run, figures, fault, problems, **more):
    """Figures first (so a failing run still shows them), then every check at once: the
    case-specific `problems` and the common ones (exit 0, nothing failed, a clean audit with no
    duplicates, the independent reader agreeing, the run having gone through the proxies)."""
    w, rc = run.w, run.rc
    res = w.result()
    assert res, f"no --json result (exit {rc})\n{w.tail()}"
    p, c = res["producer"], res["consumer"]
    audit = c["audit"]
    ta = audit_topic(bed, run.topic, p, res["run_id"])
    pc, cc = p.get("client") or {}, c.get("client") or {}
    baseline, peak, back = schedule_figures(run)
    # errors_from: one result holds both sides; giving it as producer and consumer would count
    # every error twice.
    figures(fault=fault, producer=res, consumer=res, errors_from=(res,),
            topic_records=ta.records,
            p_disconnects=pc.get("disconnects"), c_disconnects=cc.get("disconnects"),
            p_req_timeouts=pc.get("request_timeouts"), c_req_timeouts=cc.get("request_timeouts"),
            p_retries=pc.get("retries"),
            ack_p50_ms=round(p["ack_latency"]["p50_us"] / 1000, 1),
            ack_p99_ms=round(p["ack_latency"]["p99_us"] / 1000, 1),
            ack_max_ms=round(p["ack_latency"]["max_us"] / 1000, 1),
            recover_ack_s=run.probe.recovery(run.t_heal, run.t_heal, "end"),
            recover_consume_s=run.probe.recovery(run.t_heal, run.t_heal, "committed"),
            recover_schedule_s=back, lag_baseline=baseline, lag_peak=peak, **more)
    problems = list(problems)
    if rc != 0:
        problems.append(f"exit code {rc}")
    if not (p["sent"] == p["acked"] == run.n and p["failed"] == 0 and not p.get("failed_seqs")):
        problems.append(f"producer: {p['sent']} sent of {run.n}, {p['acked']} acknowledged, "
                        f"{p['failed']} failed ({p.get('errors')}, seqs {p.get('failed_seqs')})")
    if audit["verdict"] != "clean" or audit["lost"] != 0 or audit["duplicates"] != 0:
        problems.append(f"consumer audit: {audit['verdict']}, {audit['lost']} lost, "
                        f"{audit['duplicates']} duplicates")
    if audit["expected"] != p["acked"] or audit["distinct"] != p["acked"] \
            or c["records"] != p["acked"]:
        problems.append(f"consumer: {c['records']} records, {audit['distinct']} distinct of "
                        f"{audit['expected']} expected, {p['acked']} acknowledged")
    problems += [f"independent reader: {x}" for x in ta.problems()]
    if ta.records != p["acked"]:
        problems.append(f"independent reader: {ta.records} records in the topic, "
                        f"{p['acked']} acknowledged")
    if f"servers={bed.env['KAFKA_PROXIED']}" not in w.log():
        problems.append("the run did not connect through KAFKA_PROXIED")
    if back is None:
        problems.append(f"the acknowledged count never got back on the producer's schedule "
                        f"after the heal (lag baseline {baseline}, peak {peak})")
    assert not problems, "\n".join(problems) + "\n" + w.tail()
    return res


def stall_problems(run, what):
    """The victim's partitions must not have advanced while the fault was in place (from
    STALL_MARGIN_S after it on: a request the broker had before the fault still reaches the
    high watermark once the followers, which bypass Toxiproxy, fetch it): proof the fault cut
    the clients' path."""
    moved, secs = advance(run.probe, run.led, run.t_on + STALL_MARGIN_S, run.t_heal)
    if moved is None:
        return [f"{what}: too few probe samples during the fault"], None
    if moved != 0:
        return [f"{what}: partitions {run.led} of broker {run.victim} still got {moved} "
                f"messages acknowledged in {secs:.1f} s during the fault"], moved
    return [], moved


def rates(run, t0, t1):
    """msgs/s acknowledged on the victim's partitions and on the others' (per partition)."""
    others = [p for p in range(PARTITIONS) if p not in run.led]
    v, vs = advance(run.probe, run.led, t0, t1)
    o, os_ = advance(run.probe, others, t0, t1)
    if v is None or o is None or not vs or not os_:
        return None, None
    return v / vs / len(run.led), o / os_ / len(others)


# --- the cases ------------------------------------------------------------------------------

def test_cut_partition_leader(bed, brokers, toxics, proxied, new_topic, new_user, workload, probe,
                              figures):
    """`toxic N down`: the leader's open connections are cut and new ones refused for CUT_S,
    then `toxic N up`. The messages for its partitions wait in the producer (the delivery
    timeout, 300 s, is far above the cut) and go once librdkafka reconnects; whatever was in
    flight when the cut came is retried, and idempotence keeps the retries from doubling
    anything. kafka-workload's reconnect back-off is bounded at 1 s (see RECONNECT_S): the
    recovery time measured is what a kafka-workload client sees."""
    run = run_with_fault(bed=bed, brokers=brokers, new_topic=new_topic, new_user=new_user,
                         workload=workload, probe=probe, proxied=proxied, hold=CUT_S,
                         apply=lambda b: toxics(b, "down"), heal=lambda b: toxics(b, "up"),
                         settle=RECONNECT_S)
    res = run.w.result() or {}
    problems, moved = stall_problems(run, "cut")
    pc = (res.get("producer") or {}).get("client") or {}
    cc = (res.get("consumer") or {}).get("client") or {}
    # Both clients had a connection to the victim (the producer sends to its partitions, the
    # consumer fetches them): the cut must show.
    if res and not pc.get("disconnects"):
        problems.append(f"producer: the cut connection not counted (client {pc})")
    if res and not cc.get("disconnects"):
        problems.append(f"consumer: the cut connection not counted (client {cc})")
    if res and not client_errors(res):
        problems.append("no librdkafka error event counted for a cut connection and refused "
                        "reconnects")
    finish(bed, run, figures,
           f"proxy of broker {run.victim} (leader of p{run.led}; coordinator "
           f"{run.coordinator}) down {run.t_heal - run.t_on:.1f} s",
           problems, victim_acked_during=moved)


def test_hung_connection(bed, brokers, toxics, proxied, new_topic, new_user, workload, probe,
                         figures):
    """`toxic N timeout 0`: data stops both ways and the connections stay open (no RST, like a
    path that silently drops packets) for HANG_S, then cleared (Toxiproxy closes the
    connections the toxic held). Requests already at the broker may have been written with
    their answers lost: the retries must be recognised by the broker as duplicates of what it
    has (idempotence), not written twice. With socket.timeout.ms at 5 s (see
    HANG_SOCKET_TIMEOUT_MS) librdkafka must itself notice the silence within the hold."""
    run = run_with_fault(bed=bed, brokers=brokers, new_topic=new_topic, new_user=new_user,
                         workload=workload, probe=probe, proxied=proxied, hold=HANG_S,
                         apply=lambda b: toxics(b, "timeout", 0),
                         heal=lambda b: toxics(b, "clear"),
                         extra=("-X", f"socket.timeout.ms={HANG_SOCKET_TIMEOUT_MS}"))
    res = run.w.result() or {}
    problems, moved = stall_problems(run, "hang")
    pc = (res.get("producer") or {}).get("client") or {}
    cc = (res.get("consumer") or {}).get("client") or {}
    # A produce and a fetch request to the victim were outstanding through the whole hold,
    # longer than socket.timeout.ms: each client must have timed one out and dropped the
    # connection (socket.max.fails=1). librdkafka reports this only in its statistics
    # (req_timeouts, disconnects) and logs, not as an error event, so `errors` may stay 0.
    for side, cl in (("producer", pc), ("consumer", cc)):
        if res and not cl.get("request_timeouts"):
            problems.append(f"{side}: no request timeout counted for a {HANG_S} s hang with "
                            f"socket.timeout.ms={HANG_SOCKET_TIMEOUT_MS} (client {cl})")
        if res and not cl.get("disconnects"):
            problems.append(f"{side}: no disconnect counted after a timed-out request "
                            f"(client {cl})")
    finish(bed, run, figures,
           f"timeout toxic (data stops, connections held) on broker {run.victim} (leader of "
           f"p{run.led}; coordinator {run.coordinator}) for {run.t_heal - run.t_on:.1f} s, "
           f"socket.timeout.ms={HANG_SOCKET_TIMEOUT_MS}",
           problems, victim_acked_during=moved)


def test_latency_jitter(bed, brokers, toxics, proxied, new_topic, new_user, workload, probe,
                        figures):
    """`toxic N latency 200 50`: every request to the leader gains 300..500 ms (200 +- 50 each
    way) for LATENCY_S. Nothing times out (librdkafka's defaults are far above it); the run
    stays clean, and its ack p99 must show the fault: about 1/3 of the messages sent during
    it, ~10 % of the run, went to that broker and waited a full round trip more."""
    run = run_with_fault(bed=bed, brokers=brokers, new_topic=new_topic, new_user=new_user,
                         workload=workload, probe=probe, proxied=proxied, hold=LATENCY_S,
                         apply=lambda b: toxics(b, "latency", LATENCY_MS, JITTER_MS),
                         heal=lambda b: toxics(b, "clear"))
    res = run.w.result() or {}
    problems = []
    p99_ms = (((res.get("producer") or {}).get("ack_latency") or {}).get("p99_us") or 0) / 1000
    floor_ms = max(LATENCY_MS, 2 * (LATENCY_MS - JITTER_MS))
    if res and p99_ms <= floor_ms:
        problems.append(f"ack p99 {p99_ms:.1f} ms is not above the added latency: every request "
                        f"to broker {run.victim} took at least {floor_ms} ms more")
    v_rate, o_rate = rates(run, run.t_on + 1.0, run.t_heal)
    finish(bed, run, figures,
           f"latency {LATENCY_MS} +-{JITTER_MS} ms each way on broker {run.victim} (leader of "
           f"p{run.led}; coordinator {run.coordinator}) for {run.t_heal - run.t_on:.1f} s",
           problems, p99_floor_ms=floor_ms,
           victim_rate=None if v_rate is None else round(v_rate),
           other_rate=None if o_rate is None else round(o_rate))


def test_bandwidth_limit(bed, brokers, toxics, proxied, new_topic, new_user, workload, probe,
                         figures):
    """`toxic N bandwidth 64`: 64 KB/s each way to the leader for BANDWIDTH_S, about a third of
    what its partitions get at this pace (~1000 msgs/s of ~200 B each). Its partitions'
    acknowledgements must slow to what the link carries while the others keep the pace, the
    backlog shows in the ack latency, and once the limit is gone the backlog drains and the run
    ends clean. The requests stay far below librdkafka's 60 s socket timeout (a ~1 MB backlog
    at 64 KB/s is ~15 s), so nothing needs tuning."""
    run = run_with_fault(bed=bed, brokers=brokers, new_topic=new_topic, new_user=new_user,
                         workload=workload, probe=probe, proxied=proxied, hold=BANDWIDTH_S,
                         apply=lambda b: toxics(b, "bandwidth", BANDWIDTH_KBPS),
                         heal=lambda b: toxics(b, "clear"))
    res = run.w.result() or {}
    problems = []
    v_rate, o_rate = rates(run, run.t_on + 1.0, run.t_heal)
    if v_rate is None:
        problems.append("too few probe samples during the limit")
    elif not v_rate < 0.5 * o_rate:
        problems.append(f"broker {run.victim}'s partitions {run.led} got {v_rate:.0f} msgs/s "
                        f"acknowledged under {BANDWIDTH_KBPS} KB/s, the others {o_rate:.0f}: "
                        "the limit did not show")
    p99_ms = (((res.get("producer") or {}).get("ack_latency") or {}).get("p99_us") or 0) / 1000
    if res and p99_ms <= 1000:
        problems.append(f"ack p99 {p99_ms:.1f} ms: a {BANDWIDTH_S} s backlog on one broker "
                        "should have held its messages for over a second")
    finish(bed, run, figures,
           f"bandwidth {BANDWIDTH_KBPS} KB/s each way on broker {run.victim} (leader of "
           f"p{run.led}; coordinator {run.coordinator}) for {run.t_heal - run.t_on:.1f} s",
           problems, victim_rate=None if v_rate is None else round(v_rate),
           other_rate=None if o_rate is None else round(o_rate))
