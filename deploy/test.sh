#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (quick, integration and
# the slow ones, each bounded). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
cd build
# Tests start real servers (each on its own socket in a temp dir); each is bounded.
ctest --output-on-failure --timeout 600 -j2
