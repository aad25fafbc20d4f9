#!/usr/bin/env bash
# The file-system benchmark in one command (README: Benchmarks). Installs the
# dependencies, builds the programs it runs, then runs tests/bench/fs_bench.py
# under Debian's python3 (numpy). Every option goes to fs_bench.py:
#   bash tests/bench/run.sh [--quick] [--only w1,w5] [--work-dir D] [--node-arg=--flag] ...
#   bash tests/bench/run.sh --help
# Needs root: it mounts FUSE file systems and drops the page cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
for arg in "$@"; do
  if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
    exec /usr/bin/python3 tests/bench/fs_bench.py --help
  fi
done
bash deploy/install-deps.sh
bash deploy/build.sh traincache-server traincache-node traincache bench_fill_dir
exec /usr/bin/python3 tests/bench/fs_bench.py "$@"
