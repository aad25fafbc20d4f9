"""Concurrent writers of one SQLite database in rollback-journal mode
(journal_mode=DELETE: each transaction writes <db>-journal, fsyncs, writes the
database, fsyncs, deletes the journal), serialized by SQLite's own fcntl locks.

`init` creates the table. `write` inserts --rows rows as writer --writer, one
transaction each (BEGIN IMMEDIATE), waiting on SQLITE_BUSY (the connection's
busy timeout) and retrying a transaction that still failed with "database is
locked". The test checks the rows and PRAGMA integrity_check with the sqlite3
program afterwards.

Exit codes: 0 every row committed; 3 gave up on a row.
"""
import argparse
import random
import sqlite3
import sys
import time

from gate import wait_gate


def connect(path):
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    if mode != "delete":
        raise RuntimeError(f"journal_mode is {mode}")
    return conn


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["init", "write"])
    parser.add_argument("db")
    parser.add_argument("--writer", type=int, default=0)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--gate-fd", type=int)
    args = parser.parse_args()
    if args.mode == "init":
        conn = connect(args.db)
        conn.execute("CREATE TABLE rows (writer INTEGER, seq INTEGER, payload BLOB,"
                     " PRIMARY KEY (writer, seq))")
        conn.close()
        return 0

    conn = connect(args.db)
    rng = random.Random(args.writer)
    wait_gate(args.gate_fd)
    retries = 0
    for seq in range(args.rows):
        for attempt in range(100):
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO rows VALUES (?, ?, ?)",
                             (args.writer, seq, rng.randbytes(200 + rng.randrange(800))))
                conn.execute("COMMIT")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                retries += 1
                time.sleep(rng.uniform(0.001, 0.02))
        else:
            print(f"writer {args.writer}: gave up on row {seq}", file=sys.stderr)
            return 3
    conn.close()
    print(f"writer {args.writer}: {args.rows} rows, {retries} retries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
