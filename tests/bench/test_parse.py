"""tests/bench/test_parse.py: scripts/bench's parsing and summary helpers, on hand-made output.

Cheap and broker-free: it imports bench/bench.py and checks that each peer's result lines are
read right (ProducerPerformance, ConsumerPerformance, GNU time, bench/pyclient.py) and that
medians and kafka-workload's ratios come out of a hand-built set of runs as expected.
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
