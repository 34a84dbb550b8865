"""bench/pyclient.py: the kafka-python peer of scripts/bench, at full speed.

Owns: one produce or consume run with kafka-python (the library canonical/kafka-test-app's
client.py uses), timed the way the Java perf tools time themselves, printed as one JSON line.
It leaves topics, repetitions and CPU/RSS measurement to bench/bench.py, which runs this file
under the repo venv and reads the process's rusage when it exits.

"Full speed" means client.py's library without client.py's throttles: sends are not awaited
one by one and there is no sleep between them (client.py does `future.get()` then sleeps 0.5 s);
the consumer counts records from poll() batches and commits as kafka-python does by default.
All other settings are kafka-python's defaults, as client.py leaves them (acks set explicitly).

Usage:
  pyclient.py produce --servers S --topic T --num N --value-size B [--protocol P --user U]
  pyclient.py consume --servers S --topic T --num N --group G [--protocol P --user U]
The SASL password comes from $BENCH_SASL_PASSWORD, never argv.
"""

import argparse
import json
import os
import random
import string
import sys
import time


def security(args):
    if args.protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    return {
        "security_protocol": args.protocol,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": args.user,
        "sasl_plain_password": os.environ["BENCH_SASL_PASSWORD"],
    }


def produce(args):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=args.servers, acks="all", **security(args))
    # One value reused for every record: the cost measured is the client's, not value building.
    rnd = random.Random(0)
    value = "".join(rnd.choice(string.ascii_uppercase) for _ in range(args.value_size)).encode()
    failed = []

    def on_error(exc):
        failed.append(exc)

    start = time.monotonic()
    for _ in range(args.num):
        producer.send(args.topic, value).add_errback(on_error)
    producer.flush()
    end = time.monotonic()
    producer.close()
    return {
        "messages": args.num - len(failed),
        "failed": len(failed),
        "bytes": (args.num - len(failed)) * len(value),
        "seconds": end - start,
        "window": "first send to end of flush",
    }


def consume(args):
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    consumer = KafkaConsumer(
        bootstrap_servers=args.servers,
        group_id=args.group,
        auto_offset_reset="earliest",
        **security(args),
    )
    assigned = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, partitions):
            if not assigned:
                assigned.append(time.monotonic())

    consumer.subscribe([args.topic], listener=Listener())
    start = time.monotonic()
    count = 0
    nbytes = 0
    last = start
    idle_since = start
    while count < args.num:
        batches = consumer.poll(timeout_ms=100, max_records=10000)
        now = time.monotonic()
        if not batches:
            if now - idle_since > args.idle_timeout:
                break
            continue
        idle_since = now
        for records in batches.values():
            for r in records:
                count += 1
                nbytes += len(r.value)
        last = now
    consumer.close()
    t0 = assigned[0] if assigned else start
    return {
        "messages": count,
        "bytes": nbytes,
        "seconds": last - t0,
        "join_seconds": t0 - start,
        "window": "partition assignment to last record",
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["produce", "consume"])
    p.add_argument("--servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--group")
    p.add_argument("--protocol", default="PLAINTEXT")
    p.add_argument("--user")
    p.add_argument("--idle-timeout", type=float, default=30.0)
    args = p.parse_args()
    result = produce(args) if args.role == "produce" else consume(args)
    print(json.dumps(result))
    expected = args.num
    return 0 if result["messages"] >= expected else 1


if __name__ == "__main__":
    sys.exit(main())
