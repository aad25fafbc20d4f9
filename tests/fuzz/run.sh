#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 in build-fuzz/ (only them and the
# sources they exercise) and runs each for a bounded time over its seed
# corpus in tests/fuzz/corpus/<target>. New inputs the fuzzer finds go to
# build-fuzz/corpus/<target>; a crash leaves build-fuzz/crash-<target>-* and
# fails the run.
# Usage: tests/fuzz/run.sh [seconds per target]   (default 30, or $TRAINCACHE_FUZZ_SECONDS)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-${TRAINCACHE_FUZZ_SECONDS:-30}}"
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRAINCACHE_FUZZ=ON
fi
ninja -C build-fuzz -j"${TRAINCACHE_BUILD_JOBS:-2}"

passed=0
failed=0
for target in key_codec request_validation config; do
  mkdir -p "build-fuzz/corpus/$target"
  echo "== ${target}_fuzz: ${seconds} s"
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: a decoder that
  # allocates past 2 GiB is a bug (they never allocate more than their input).
  if build-fuzz/tests/fuzz/"${target}_fuzz" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/crash-$target-" \
      "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target" \
      > "build-fuzz/$target.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^stat::number_of_executed_units|^Done' "build-fuzz/$target.log" || true
  else
    failed=$((failed + 1))
    echo "${target}_fuzz FAILED; its output:"
    tail -n 60 "build-fuzz/$target.log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
