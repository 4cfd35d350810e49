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

cargo build --release --locked -p courier-server -p courier-loadgen >&2
data=$(mktemp -d)
port="${LOADGEN_PORT:-18080}"
# One node: no Redis. The store: a new SQLite file, or DATABASE_URL.
if [ "${LOADGEN_STORE:-sqlite}" = postgres ]; then
  store=(env -u REDIS_URL -u COURIER_REDIS_URL
    "DATABASE_URL=${DATABASE_URL:?LOADGEN_STORE=postgres needs DATABASE_URL}")
else
  store=(env -u REDIS_URL -u COURIER_REDIS_URL -u DATABASE_URL -u COURIER_DATABASE_URL)
fi
"${store[@]}" \
  COURIER_CONFIG=benches/loadgen/server.toml COURIER_LISTEN="127.0.0.1:$port" \
  COURIER_DATA_DIR="$data" RUST_LOG=warn target/release/courier serve >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
# Open files for many connections, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
target/release/loadgen --url "http://127.0.0.1:$port" --server-pid "$server" "$@"
