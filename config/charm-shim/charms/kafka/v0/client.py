"""charms.kafka.v0.client: runs kafka-workload in place of kafka-test-app's Python client.

Drop this file into the kafka-test-app charm as lib/charms/kafka/v0/client.py (replacing the
Python client) and the charm's unchanged `nohup python3 -m charms.kafka.v0.client <args>` runs
the kafka-workload binary with the same arguments (see docs/sidecar.md in the kafka-workload
repository). The process is replaced with exec, so the PID the charm records is kafka-workload's
and the charm's stdout/stderr files receive its output.

One thing is changed on the way: a password given as `--password P`, `--password=P`, `-p P` or
`-pP` is taken out of the argument list and handed over in the environment
(KAFKA_WORKLOAD_PASSWORD), so it no longer shows in `ps` or /proc/<pid>/cmdline (the environment
of a process is readable only by its user and root). Everything else passes through untouched.

The binary is $KAFKA_WORKLOAD_BIN, else `kafka-workload` on PATH, else
/usr/local/bin/kafka-workload. Without it, the shim exits 127 with one line on stderr.
"""

import os
import shutil
import sys

DEFAULT_BINARY = "/usr/local/bin/kafka-workload"


def find_binary(environ):
    """The kafka-workload executable to run, or None."""
    explicit = environ.get("KAFKA_WORKLOAD_BIN")
    if explicit:
        return explicit
    found = shutil.which("kafka-workload", path=environ.get("PATH"))
    if found:
        return found
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return None


def split_password(args):
    """(args without the password options, the last password given or None).

    A repeated option's last value wins, as with argparse. A `--password` or `-p` at the very
    end, without a value, is left for kafka-workload to reject as a usage error.
    """
    kept, password = [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--password", "-p") and i + 1 < len(args):
            password = args[i + 1]
            i += 2
            continue
        if arg.startswith("--password="):
            password = arg[len("--password="):]
        elif arg.startswith("-p") and not arg.startswith("--") and len(arg) > 2:
            password = arg[2:]
        else:
            kept.append(arg)
        i += 1
    return kept, password


def main():
    binary = find_binary(os.environ)
    if binary is None:
        sys.stderr.write("charms.kafka.v0.client: kafka-workload not found: set KAFKA_WORKLOAD_BIN "
                         f"or install it as {DEFAULT_BINARY}\n")
        sys.stderr.flush()
        return 127
    args, password = split_password(sys.argv[1:])
    env = dict(os.environ)
    if password is not None:
        env["KAFKA_WORKLOAD_PASSWORD"] = password
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(binary, [binary, *args], env)
    except OSError as e:
        sys.stderr.write(f"charms.kafka.v0.client: cannot run {binary}: {e.strerror}\n")
        sys.stderr.flush()
        return 127


if __name__ == "__main__":
    sys.exit(main())
