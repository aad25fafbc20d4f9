#!/usr/bin/env bash
# Configures and builds traincache with CMake + Ninja (+ ccache) into build/.
# Usage: deploy/build.sh [extra ninja targets]
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keeps its default cache (~/.cache/ccache), shared by every clone on
# this machine; with paths made relative to the clone, a fresh CI clone
# rebuilds from that cache.
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
# Two cores and heavy generated gRPC code: keep memory in check with -j2.
ninja -C build -j"${TRAINCACHE_BUILD_JOBS:-2}" "$@"
