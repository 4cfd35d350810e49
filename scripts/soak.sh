#!/usr/bin/env bash
# The long run of the fault, hostile-client and cluster tests, in a release build: more
# crashes, more connections, a longer fuzz soak. Figures go to target/soak.log; the
# summary lines are printed. Needs what `cargo test` needs (DATABASE_URL for the
# PostgreSQL variants, redis-server for the cluster).
#   scripts/soak.sh                        # about 15 minutes on 2 cores
#   COURIER_FAULT_CRASHES=100 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export COURIER_FAULT_CRASHES="${COURIER_FAULT_CRASHES:-30}"
# Five connections per user: 9,500 by default, within a 20,000 open-file limit.
export COURIER_STORM_USERS="${COURIER_STORM_USERS:-1900}"
export COURIER_SOAK_SECS="${COURIER_SOAK_SECS:-600}"

mkdir -p target
cargo test --release -p courier-server --test faults --test hostile_clients --test cluster \
  -- --include-ignored --nocapture --test-threads=1 2>&1 | tee target/soak.log \
  | grep -E '^(Kill|Terminate|slow consumer|storm|soak|test result)|panicked'
