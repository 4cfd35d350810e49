#!/usr/bin/env bash
# Runs one load-generator scenario against a fresh release build of courier on this
# machine, and stops the server afterwards. The server gets its own data directory (a new
# SQLite file) and the limits of benches/loadgen/server.toml; with LOADGEN_STORE=postgres
# it uses DATABASE_URL instead. Arguments go to the load generator, its JSON line to
# stdout, its summary to stderr.
#
#   benches/loadgen/run.sh fanout --receivers 1000 --duration 20
#   benches/loadgen/run.sh pairs --pairs 500 --protocol socketio
#   LOADGEN_STORE=postgres DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#     benches/loadgen/run.sh pairs --pairs 500
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/loadgen/courier.sh

bench_build
port="${LOADGEN_PORT:-18080}"
database_url=
if [ "${LOADGEN_STORE:-sqlite}" = postgres ]; then
  database_url="${DATABASE_URL:?LOADGEN_STORE=postgres needs DATABASE_URL}"
fi
log=$(mktemp)
trap 'bench_stop_courier; rm -f "$log"' EXIT
bench_raise_nofile
bench_start_courier "$port" "$log" "$database_url"
"$bench_bin/loadgen" --url "http://127.0.0.1:$port" --server-pid "$courier_pid" "$@"
