"""tests/bench/test_parse.py: scripts/bench's parsing and summary helpers, on hand-made output.

Cheap and broker-free: it imports bench/bench.py and checks that each peer's result lines are
read right (ProducerPerformance, ConsumerPerformance, rdkafka_performance, GNU time,
bench/pyclient.py), that latencies are summarized as documented, and that medians and
kafka-workload's ratios come out of a hand-built set of runs as expected (per value size, per
latency load, over the peer's window where it differs).
Run: .venv/bin/python -m pytest tests/bench -q
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

import bench  # noqa: E402


def test_producer_performance_final_line_is_read_and_progress_lines_are_not():
    out = (
        "507776 records sent, 101535.2 records/sec (9.68 MB/sec), 34.4 ms avg latency, 292.0 ms max latency.\n"
        "1000000 records sent, 99108.0 records/sec (9.45 MB/sec), 135.58 ms avg latency, "
        "1345.00 ms max latency, 65 ms 50th, 361 ms 95th, 375 ms 99th, 392 ms 99.9th.\n"
    )
    p = bench.parse_producer_performance(out)
    assert p["records"] == 1000000
    assert p["msgs_per_s"] == 99108.0
    assert p["mib_per_s"] == 9.45
    assert p["p99_ms"] == 375.0
    assert (p["p50_ms"], p["p95_ms"], p["p999_ms"], p["avg_latency_ms"]) == (65.0, 361.0, 392.0, 135.58)
    assert bench.parse_producer_performance(out.splitlines()[0]) is None


def test_consumer_performance_row_is_read_after_its_header():
    out = (
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
        "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n"
        "2023-02-23 11:00:27:431, 2023-02-23 11:00:31:063, 3.2949, 0.9072, 3455, 951.2665, 3557, 75, 43.9326, 46066.6667\n"
    )
    c = bench.parse_consumer_performance(out)
    assert c["records"] == 3455
    assert c["rebalance_ms"] == 3557
    assert c["fetch_ms"] == 75
    assert c["fetch_msgs_per_s"] == 46066.6667
    assert bench.parse_consumer_performance("WARNING: Exiting before consuming\n") is None


def test_gnu_time_line_and_pyclient_json_are_read():
    assert bench.parse_time_output("Command exited with non-zero status 1\n1.52 0.41 0.13 42920 1\n") == (
        1.52,
        0.41,
        0.13,
        42920,
        1,
    )
    assert bench.parse_time_output("") is None
    out = 'noise\n{"messages": 10, "bytes": 1000, "seconds": 0.5, "window": "w"}\n'
    assert bench.parse_last_json_line(out)["bytes"] == 1000


def run(rep, client, rate, cpu, phase="produce", error=None):
    return {
        "rep": rep,
        "phase": phase,
        "protocol": "PLAINTEXT",
        "client": client,
        "error": error,
        "value_bytes": 100,
        "msgs_per_s": rate,
        "mb_per_s": rate and rate * 100 / 1e6,
        "cpu_s": cpu,
        "max_rss_mib": 50.0,
        "wall_s": 1.0,
    }


def test_ratios_are_medians_of_per_repetition_ratios_and_failures_are_counted_not_used():
    records = [
        run(0, "kafka-workload", 300, 1.0),
        run(0, "ProducerPerformance", 100, 4.0),
        run(1, "kafka-workload", 200, 1.0),
        run(1, "ProducerPerformance", 200, 2.0),
        run(2, "kafka-workload", 400, 1.0),
        run(2, "ProducerPerformance", 100, 4.0),
        run(3, "kafka-workload", 900, 1.0),
        run(3, "ProducerPerformance", None, None, error="exit code 1"),
    ]
    rows = bench.summarize(records, [("produce", ["kafka-workload", "ProducerPerformance"])])
    kw, pp = rows
    assert kw["msgs_per_s"] == 350  # median of 300, 200, 400, 900
    assert pp["runs"] == 3 and pp["failed_runs"] == 1
    assert pp["kw_ratio_msgs_per_s"] == 3.0  # median of 3, 1, 4
    assert pp["kw_ratio_cpu_s"] == 0.25
    checks = bench.verdict(rows, {"100000": 50.0, "10000000": 59.0}, [100000, 10000000])
    assert [c["pass"] for c in checks] == [True, True]
    table = bench.markdown(
        rows, {}, checks, {"messages": 10, "reps": 4, "kafka_version": "4.1.2", "machine": "m", "versions": "v"}
    )
    assert "| produce | PLAINTEXT | ProducerPerformance (1 failed) | 100 | 100 |" in table


def test_rotation_gives_each_client_each_position():
    clients = ["a", "b", "c"]
    assert [bench.rotate(clients, k)[0] for k in range(3)] == ["a", "b", "c"]


# Captured from bench/build-rdkafka-performance's binary (librdkafka 2.12.1) on the test bed:
# `-P -s 256 -c 200000 -X acks=all -X linger.ms=5` (progress lines, then the final one) ...
RKP_PRODUCER_OUT = """\
% Sending 200000 messages of size 256 bytes
% 100000 messages produced (25600000 bytes), 0 delivered (offset 0, 0 failed) in 1101ms: 0 msgs/s and 0.00 MB/s, 55 produce failures, 100000 in queue, no compression
% 200000 messages produced (51200000 bytes), 120448 delivered (offset 15028, 0 failed) in 6128ms: 19652 msgs/s and 5.03 MB/s, 476 produce failures, 79552 in queue, no compression
% 476 backpressures for 200000 produce calls: 0.238% backpressure rate
% 200000 messages produced (51200000 bytes), 200000 delivered (offset 33423, 0 failed) in 6875ms: 29089 msgs/s and 7.45 MB/s, 476 produce failures, 0 in queue, no compression
"""
# ... and `-G group -c 200000 -e` (stdout; the rebalance lines go to stderr).
RKP_CONSUMER_OUT = """\
% 0 messages (0 bytes) consumed in 0ms: 0 msgs/s (0.00 MB/s)
% Consumer reached end of rkp-kw1 [1] message queue at offset 22092
% Consumer reached end of rkp-kw1 [4] message queue at offset 27098
% 199463 messages (51062528 bytes) consumed in 1037ms: 192228 msgs/s (49.21 MB/s)
% 200000 messages (51200000 bytes) consumed in 1037ms: 192719 msgs/s (49.34 MB/s)
% Average application fetch latency: 13us
"""


def test_rdkafka_performance_producer_final_summary_is_read():
    p = bench.parse_rdkafka_performance(RKP_PRODUCER_OUT)
    assert p["mode"] == "produce"
    assert (p["produced"], p["messages"], p["failed"]) == (200000, 200000, 0)
    assert p["bytes"] == 51200000
    assert (p["ms"], p["msgs_per_s"], p["mb_per_s"]) == (6875, 29089.0, 7.45)
    assert abs(bench.rkp_seconds(p) - 200000 / 29089) < 1e-9
    # A run cut short: only the delivered messages' bytes count.
    partial = bench.parse_rdkafka_performance(RKP_PRODUCER_OUT.splitlines()[2])
    assert partial["messages"] == 120448 and partial["bytes"] == 120448 * 256


def test_rdkafka_performance_consumer_summary_is_read_and_interval_lines_are_not():
    c = bench.parse_rdkafka_performance(RKP_CONSUMER_OUT)
    assert c["mode"] == "consume"
    assert (c["messages"], c["bytes"], c["ms"], c["msgs_per_s"]) == (200000, 51200000, 1037, 192719.0)
    # -M interval lines come after the summaries and are not one; -l adds latencies.
    out = (
        "% 5000 messages (1280000 bytes) consumed in 20ms: 250000 msgs/s (64.00 MB/s), "
        "latency curr/avg/lo/hi 1.20/3.40/0.50/9.90ms\n"
        "% INTERVAL: 1000 messages (256000 bytes) consumed in 1000ms: 1000 msgs/s (0.26 MB/s)\n"
    )
    c = bench.parse_rdkafka_performance(out)
    assert c["messages"] == 5000
    assert c["latency_ms"] == {"curr": 1.2, "avg": 3.4, "lo": 0.5, "hi": 9.9}
    assert bench.parse_rdkafka_performance("% Sending 10 messages of size 256 bytes\n") is None


def test_rdkafka_performance_run_is_interpreted_with_its_latency_file(tmp_path):
    lat = tmp_path / "lat"
    lat.write_text("".join(f"{v}\n" for v in range(1, 1001)))
    plan = bench.Plan("produce", "PLAINTEXT", "rdkafka_performance", "t", [], size=256, rate=1000)
    m = bench.Measured(0, 7.0, 0.1, 0.05, 30000)
    r = bench.interpret(plan, m, RKP_PRODUCER_OUT, None, 200000, latency_path=str(lat))
    assert r["error"] is None and r["messages"] == 200000 and r["bytes"] == 51200000
    assert r["latency"]["p99_ms"] == 0.99 and r["latency"]["max_ms"] == 1.0
    r = bench.interpret(plan, m, RKP_PRODUCER_OUT, None, 300000)
    assert r["error"] == "only 200000 of 300000 messages"


def test_latencies_are_summarized_by_nearest_rank():
    counts = bench.count_values(["1000", "", "oops", "2000", "2000", "-5"])
    assert counts == {1000: 1, 2000: 2, -5: 1}
    s = bench.latency_summary_us(bench.count_values(str(v) for v in range(1, 1001)))
    assert (s["count"], s["p50_ms"], s["p99_ms"], s["p999_ms"], s["max_ms"]) == (1000, 0.5, 0.99, 0.999, 1.0)
    assert abs(s["mean_ms"] - 0.5005) < 1e-9
    assert bench.latency_summary_us({}) is None
    kw = bench.kw_latency(
        {"count": 3, "mean_us": 1500.0, "p50_us": 1000, "p90_us": 2000, "p99_us": 2000, "p999_us": 2000, "max_us": 2001}
    )
    assert (kw["p50_ms"], kw["p99_ms"], kw["max_ms"]) == (1.0, 2.0, 2.001)
    assert bench.kw_latency({"count": 0}) is None


def test_value_sizes_and_rdkafka_performance_pacing_note():
    assert bench.parse_sizes("256, 1k,10KiB") == [256, 1024, 10240]
    for bad in ("100", "abc", ""):
        try:
            bench.parse_sizes(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    assert "2 µs" in bench.rkp_rate_note(450000)
    assert "unpaced" in bench.rkp_rate_note(1_200_000)


def test_rows_are_per_value_size_and_the_ratio_to_rdkafka_performance_consumer_uses_its_window():
    def rec(client, size, rate, **extra):
        r = run(0, client, rate, 1.0, phase="consume")
        r.update(size=size, value_bytes=size, section="rows", brokers=1, partitions=6, expected=10, **extra)
        return r

    alt = {bench.FIRST_TO_LAST: {"msgs_per_s": 400.0, "mb_per_s": 0.1}}
    records = [
        rec("kafka-workload", 256, 300, alt_rates=alt),
        rec("rdkafka_performance", 256, 800, window=bench.FIRST_TO_LAST),
        rec("ConsumerPerformance", 256, 100),
        rec("kafka-workload", 1024, 200),
        rec("rdkafka_performance", 1024, 100, window=bench.FIRST_TO_LAST),
        rec("ConsumerPerformance", 1024, 50),
    ]
    records.append(dict(records[0], brokers=3))  # another bed: not in this summary
    clients = ["kafka-workload", "rdkafka_performance", "ConsumerPerformance"]
    rows = bench.summarize(records, [("consume", clients)], section="rows", brokers=1)
    assert [(r["size"], r["client"]) for r in rows] == [(256, c) for c in clients] + [(1024, c) for c in clients]
    assert rows[0]["runs"] == 1
    assert rows[1]["kw_ratio_msgs_per_s"] == 0.5  # 400 (kw, first record to last) / 800
    assert rows[2]["kw_ratio_msgs_per_s"] == 3.0  # 300 (kw, assignment to last) / 100
    assert rows[4]["kw_ratio_msgs_per_s"] == 2.0  # no alternative window: kw's own
    checks = bench.verdict(rows, {}, [])
    assert [c["check"] for c in checks] == [
        "consume PLAINTEXT 256 B: kafka-workload msgs/s >= ConsumerPerformance",
        "consume PLAINTEXT 1 KiB: kafka-workload msgs/s >= ConsumerPerformance",
    ]
    table = "\n".join(bench.rows_table(rows))
    assert "| consume | PLAINTEXT | rdkafka_performance | 256 | 800 |" in table
    assert "| consume | PLAINTEXT | kafka-workload | 1,024 | 200 |" in table


def test_latency_rows_keep_each_tools_figures_and_compare_p99_like_for_like():
    def lat(p99):
        return {"p50_ms": 1.0, "p99_ms": p99, "p999_ms": p99 * 2, "max_ms": p99 * 3, "mean_ms": 1.5}

    def rec(rep, client, **extra):
        return {
            "rep": rep, "phase": "latency", "client": client, "load": 50, "rate": 1000, "error": None,
            "msgs_per_s": 990.0, "cpu_s": 1.0, "max_rss_mib": 20.0, **extra,
        }

    records = [
        rec(0, "kafka-workload", latency=lat(8.0), latency_uncorrected=lat(4.0)),
        rec(0, "ProducerPerformance", latency=lat(2.0)),
        rec(0, "rdkafka_performance", latency=lat(16.0)),
        rec(1, "kafka-workload", latency=lat(8.0), latency_uncorrected=lat(6.0)),
        rec(1, "ProducerPerformance", latency=lat(3.0)),
        rec(1, "rdkafka_performance", latency=None, error="timed out"),
    ]
    rows = bench.summarize_latency(records)
    assert [r["variant"] for r in rows] == [
        "kafka-workload", "kafka-workload, uncorrected", "ProducerPerformance", "rdkafka_performance"
    ]
    kw, kwu, pp, rkp = rows
    assert (kw["p99_ms"], kwu["p99_ms"], pp["p99_ms"]) == (8.0, 5.0, 2.5)
    assert pp["kw_ratio_p99"] == 2.0  # median of 4/2 and 6/3: uncorrected kw over the peer
    assert (rkp["runs"], rkp["failed_runs"], rkp["kw_ratio_p99"]) == (1, 1, 0.25)
    assert "1000 µs" in rkp["note"]
    meta = {"messages": 10, "reps": 2, "kafka_version": "4.1.2", "machine": "m", "versions": "v",
            "latency": {"brokers": 1, "size": 256, "max_msgs_per_s": 2000, "max_messages": 10, "seconds": 5}}
    table = bench.markdown([], {}, [], meta, [("latency", rows)])
    assert "| 50% | 1,000 | ProducerPerformance | its summary line" in table
    assert "max = 2,000 msgs/s" in table


def test_sections_of_each_plan():
    import argparse

    def sections(**kw):
        a = dict(plan="default", brokers=1, latency=False, memory=[100000, 1000000])
        a.update(kw)
        return bench.plan_sections(argparse.Namespace(**a))

    assert sections() == [("rows", 1), ("memory", 1)]
    assert sections(latency=True, memory=[]) == [("rows", 1), ("latency", 1)]
    assert sections(brokers=3) == [("rows", 3), ("curve", 3)]
    assert sections(plan="full") == [("rows", 1), ("memory", 1), ("latency", 1), ("rows", 3), ("curve", 3)]


def test_warm_up_ends_when_the_rate_stops_climbing_and_says_how_it_ended():
    # Fewer than six rounds never suffice, however flat.
    assert not bench.warmed_up([100_000] * 5)
    # Still climbing: the last three's median (150k) is 50% above the three before (100k).
    assert not bench.warmed_up([20_000, 100_000, 120_000, 140_000, 150_000, 160_000])
    # A plateau with noise: 110k is within 10% of 105k.
    assert bench.warmed_up([21_775, 50_361, 145_309, 104_185, 131_457, 110_000, 157_007, 90_000])
    # A drop after a plateau also counts as no longer climbing.
    assert bench.warmed_up([300_000] * 3 + [150_000] * 3)
    line = bench.warm_up_line(
        {"brokers": 3, "rounds_msgs_per_s": [21775, 50361], "seconds": 240.4, "converged": False}
    )
    assert "3-broker bed" in line and "2 rounds" in line and "240 s" in line
    assert "stopped by its 240 s limit, still climbing" in line and "21,775, 50,361" in line
    done = bench.warm_up_line(
        {"brokers": 1, "rounds_msgs_per_s": [700_000] * 6, "seconds": 3.2, "converged": True}
    )
    assert "limit" not in done and "6 rounds" in done
