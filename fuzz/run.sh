#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) on its corpus and the hand-written
# seeds, without a sanitizer, on the stable toolchain. Exits non-zero on the first crash;
# the failing input is then in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [seconds]
#
# FUZZ_DEV=1 builds the targets unoptimised (with debug assertions), in well under half
# the time; they then run about 5,000 inputs a second (native_frame), enough for a short
# smoke run such as CI's.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler (libFuzzer is
# built from source by libfuzzer-sys).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
build=()
if [ "${FUZZ_DEV:-0}" = 1 ]; then
  build=(--dev)
fi
# The targets write new inputs to corpus/<target>; keep them out of the repository's
# minimized corpus unless asked (FUZZ_KEEP_CORPUS=1), so that a CI run leaves no changes.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Listed first: a failure inside `for ... in $(...)` would not stop the script.
targets=$(cargo fuzz list)
for target in $targets; do
  mkdir -p "corpus/$target" "seeds/$target"
  if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
    into="corpus/$target"
  else
    into="$work/$target"
    mkdir -p "$into"
  fi
  echo "== $target: ${seconds}s"
  cargo fuzz run "$target" "${build[@]}" --sanitizer none "$into" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1
done
echo "== no crash"
