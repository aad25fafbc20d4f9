#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (quick, integration and
# the slow ones, each bounded) and the fuzz targets (bounded in time). Exits
# non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
# The libFuzzer targets (a clang build of their own in build-fuzz/), each run
# for a bounded time: $TRAINCACHE_FUZZ_SECONDS (30) per target, ~3 minutes
# with the build.
bash tests/fuzz/run.sh
cd build
# Tests start real servers (each on its own socket in a temp dir); each is bounded.
ctest --output-on-failure --timeout 600 -j2 -LE soak
# The soak (README, "Soak"): two nodes, server restarts, a node kill; bounded
# by $TRAINCACHE_SOAK_SECONDS (120 here, at most 600).
TRAINCACHE_SOAK_SECONDS="${TRAINCACHE_SOAK_SECONDS:-120}" \
  ctest --output-on-failure --timeout 900 -L soak
