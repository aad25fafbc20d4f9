"""Increments a counter file N times, each time under
filelock.FileLock(<counter>.lock): read it, add one, write it back, each step
through open/read-or-write/close (the lock is what keeps two processes from
interleaving those steps).

Exit codes: 0 done; 3 the counter held something that is not a number (a
writer ran while we held the lock: the lock did not exclude it).
"""
import argparse
import sys

import filelock

from gate import wait_gate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("counter")
    parser.add_argument("--times", type=int, default=200)
    parser.add_argument("--gate-fd", type=int)
    args = parser.parse_args()
    lock = filelock.FileLock(args.counter + ".lock")
    wait_gate(args.gate_fd)
    for _ in range(args.times):
        with lock:
            with open(args.counter) as f:
                text = f.read()
            try:
                value = int(text)
            except ValueError:
                print(f"counter holds {text!r} under the lock", file=sys.stderr)
                return 3
            with open(args.counter, "w") as f:
                f.write(str(value + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
