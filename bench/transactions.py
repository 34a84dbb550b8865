#!/usr/bin/env python3
"""bench/transactions.py: what transactions cost. Runs kafka-workload plain (idempotent, acks=all)
and transactional (several --txn-size values, one with --abort-rate) against the same broker of
the test bed, alternating, and prints a Markdown table of producer throughput, its ratio to the
plain run, and commit latency percentiles, from each run's --json result. Every transactional
row is a round trip with a read_committed consumer, so each also proves its audit is clean.

Usage: bench/transactions.py [--messages N] [--reps R] [--sizes 100,1000] [--value-size B]
Needs the test bed up (scripts/test-bed up) and a release build (cargo build --release).
Not part of the test suite (speed is measured here, not asserted).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KW = os.path.join(REPO, "target", "release", "kafka-workload")


def bed_env():
    p = subprocess.run([os.path.join(REPO, "scripts", "test-bed"), "env"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("bench/transactions.py: the test bed is not up (scripts/test-bed up)")
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def run(env, label, extra, n, value_size, work, rep):
    topic = f"bench-txn-{label.replace(' ', '-').replace('=', '')}-{rep}-{int(time.time() * 1000)}"
    out = os.path.join(work, f"{topic}.json")
    argv = [KW, "-s", env["KAFKA_SASL_PLAINTEXT"], "-u", env["KAFKA_ADMIN_USER"], "-t", topic,
            "--producer", "--consumer", "-n", str(n), "--message-size", str(value_size),
            "--num-partitions", "6", "--log-messages", "none", "--no-progress", "--json", out] + extra
    child_env = dict(os.environ, KAFKA_WORKLOAD_PASSWORD=env["KAFKA_ADMIN_PASSWORD"])
    p = subprocess.run(argv, capture_output=True, text=True, env=child_env, timeout=600)
    if p.returncode != 0:
        sys.exit(f"bench/transactions.py: {label} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    with open(out) as f:
        r = json.load(f)
    t = (r["producer"].get("transactions") or {})
    return {
        "rate": r["producer"]["throughput"]["msgs_per_sec"],
        "verdict": r["consumer"]["audit"]["verdict"],
        "commit": t.get("commit_latency"),
        "aborted": t.get("aborted", 0),
        "committed": t.get("committed", 0),
    }


def ms(us):
    return f"{us / 1000:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    env = bed_env()
    cases = [("plain", [])]
    for size in [int(s) for s in args.sizes.split(",")]:
        cases.append((f"txn {size}", ["--transactional", "--txn-size", str(size)]))
    biggest = max(int(s) for s in args.sizes.split(","))
    cases.append((f"txn {biggest} abort=0.1",
                  ["--transactional", "--txn-size", str(biggest), "--abort-rate", "0.1"]))
    results = {label: [] for label, _ in cases}
    with tempfile.TemporaryDirectory() as work:
        for rep in range(args.reps):
            for label, extra in cases:
                results[label].append(run(env, label, extra, args.messages, args.value_size, work, rep))
                print(f"  {label} rep {rep + 1}: {results[label][-1]['rate']:.0f} msgs/s", file=sys.stderr)
    plain = statistics.median(r["rate"] for r in results["plain"])
    print(f"\n{args.messages} messages of {args.value_size} B, 6 partitions, acks=all, "
          f"broker {env['KAFKA_SASL_PLAINTEXT']} (SASL_PLAINTEXT), median of {args.reps}\n")
    print("| run | producer msgs/s | vs plain | transactions (committed/aborted) | commit p50 ms | p99 ms | max ms | audit |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, _ in cases:
        rs = results[label]
        rate = statistics.median(r["rate"] for r in rs)
        last = rs[-1]
        c = last["commit"]
        lat = (ms(c["p50_us"]), ms(c["p99_us"]), ms(c["max_us"])) if c and c["count"] else ("", "", "")
        txns = f"{last['committed']}/{last['aborted']}" if c else ""
        verdicts = ",".join(sorted({r["verdict"] for r in rs}))
        print(f"| {label} | {rate:,.0f} | {rate / plain:.2f}x | {txns} | {lat[0]} | {lat[1]} | {lat[2]} | {verdicts} |")


if __name__ == "__main__":
    main()
