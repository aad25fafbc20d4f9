#!/usr/bin/env bash
# Installs everything traincache needs to build, test and run, from Debian 12
# packages only. Idempotent: safe to run again; apt-get skips what is present.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build ccache pkg-config git
  # runtime libraries and their headers
  libfuse3-dev fuse3
  librocksdb-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev libfmt-dev
  libssl-dev
  libcli11-dev
  libtomlplusplus-dev
  libsystemd-dev
  prometheus-cpp-dev
  # tests (programs_test runs these real programs through the mounts, and git)
  libgtest-dev libgmock-dev
  python3 procps util-linux
  openssl
  python3-filelock python3-torch python3-numpy sqlite3 tar diffutils
  # benchmarks (tests/bench/run.sh): random 4 KiB reads
  fio
  # fuzzing (tests/fuzz/run.sh): clang and its libFuzzer/sanitizer runtimes
  clang-14 libclang-rt-14-dev
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (apt-get needs it)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
