#!/usr/bin/env bash
# Runs the same load-generator scenarios against courier on SQLite, courier on PostgreSQL
# and the socket.io + pg reference server in this folder, on this machine, each server
# started fresh (new data directory or new database) for each run and stopped after it.
# Courier is loaded over Socket.IO, the reference's protocol, and over its native
# protocol; the reference over Socket.IO. Each run's JSON line, tagged with its target,
# is appended to the results file; then compare-report prints the table of ratios and
# draws the chart.
#
#   benches/compare/run.sh                                   # all of it, about 10 minutes
#   COMPARE_QUICK=1 COMPARE_DURATION=3 benches/compare/run.sh  # a check that it all works
#   COMPARE_TARGETS=reference benches/compare/run.sh         # one target again
#
# COMPARE_DURATION     seconds of load per run (10); idle runs hold COMPARE_IDLE_DURATION (5)
# COMPARE_QUICK=1      fewer and smaller scenarios
# COMPARE_TARGETS      some of: courier-sqlite courier-postgres reference (these three by
#                      default) bare (benches/compare/bare: the actix-web-actors stack
#                      with room actors and nothing else, over the native protocol: the
#                      floor that courier's per-connection and per-delivery costs sit on)
# COMPARE_RESULTS      the results file, appended to (target/compare/results.jsonl); the
#                      report keeps the latest run of each target, protocol and scenario
# COMPARE_CHART        the chart compare-report draws (docs/compare.svg)
# COMPARE_PORT         the port every server listens on, one at a time (18290)
# ADMIN_DATABASE_URL   PostgreSQL to drop and create the databases courier_compare and
#                      reference_compare through (postgres://postgres@127.0.0.1:5432/test)
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/loadgen/courier.sh

duration="${COMPARE_DURATION:-10}"
idle_duration="${COMPARE_IDLE_DURATION:-5}"
targets="${COMPARE_TARGETS:-courier-sqlite courier-postgres reference}"
results="${COMPARE_RESULTS:-target/compare/results.jsonl}"
chart="${COMPARE_CHART:-docs/compare.svg}"
port="${COMPARE_PORT:-18290}"
admin_url="${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
logs="$(dirname "$results")/logs"

# Load-generator arguments, one run each; idle is given its own, shorter, duration below.
if [ "${COMPARE_QUICK:-0}" = 1 ]; then
  scenarios=("fanout --receivers 10" "fanout --receivers 100" "pairs --pairs 50"
    "idle --connections 500")
else
  scenarios=("fanout --receivers 10" "fanout --receivers 100" "fanout --receivers 1000"
    "pairs --pairs 500" "idle --connections 5000")
fi

fail() {
  echo "error: $*" >&2
  exit 1
}

for target in $targets; do
  case $target in
    courier-sqlite | courier-postgres | reference | bare) ;;
    *) fail "unknown target '$target' in COMPARE_TARGETS (courier-sqlite, courier-postgres, reference, bare)" ;;
  esac
done
case " $targets " in
  *" courier-postgres "* | *" reference "*)
    command -v psql >/dev/null || fail "psql is needed to create the PostgreSQL databases"
    ;;
esac
case " $targets " in
  *" reference "*)
    command -v node >/dev/null || fail "the reference server needs Node.js 20 or newer"
    ;;
esac

# The URL of database NAME on the server of ADMIN_DATABASE_URL (its query string kept).
database_url() {
  local base=${admin_url%%\?*} query=
  [ "$base" != "$admin_url" ] && query="?${admin_url#*\?}"
  local authority=${base#*://}
  if [ "$authority" != "${authority%%/*}" ]; then
    base=${base%/*}
  fi
  echo "$base/$1$query"
}

# Drops database NAME if it exists and creates it empty.
fresh_database() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$admin_url" \
    -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null \
    || fail "could not recreate database $1 through $admin_url"
}

other_pid=
# Stops whichever server is up; the EXIT trap calls it too, so no server outlives the script.
stop_servers() {
  bench_stop_courier
  if [ -n "$other_pid" ]; then
    bench_stop "$other_pid"
    other_pid=
  fi
}

cleanup() {
  local status=$?
  stop_servers
  if [ "$status" -ne 0 ]; then
    echo "benches/compare/run.sh failed; runs so far are in $results, logs in $logs" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_server TARGET LOG: a fresh server for TARGET; sets server_pid.
start_server() {
  local target=$1 log=$2
  case $target in
    courier-sqlite)
      bench_start_courier "$port" "$log"
      server_pid=$courier_pid
      ;;
    courier-postgres)
      fresh_database courier_compare
      bench_start_courier "$port" "$log" "$(database_url courier_compare)"
      server_pid=$courier_pid
      ;;
    reference)
      bench_port_free "$port"
      fresh_database reference_compare
      # `exec`, so that $! is node's own pid, the one the load generator measures.
      (cd benches/compare && PORT="$port" DATABASE_URL="$(database_url reference_compare)" \
        exec node server.js) >"$log" 2>&1 &
      other_pid=$!
      server_pid=$other_pid
      bench_wait_for_port "$port" "$other_pid" "$log"
      ;;
    bare)
      bench_port_free "$port"
      PORT="$port" "$bench_bin/bare" >"$log" 2>&1 &
      other_pid=$!
      server_pid=$other_pid
      bench_wait_for_port "$port" "$other_pid" "$log"
      ;;
  esac
}

# run TARGET PROTOCOL SCENARIO...: one run on a fresh server, its JSON line appended.
run() {
  local target=$1 protocol=$2
  shift 2
  local name
  name="$target-$protocol-$(echo "$*" | tr -c 'a-z0-9\n' '_' | tr -s '_')"
  echo "== $(date -u +%T) $target, $protocol: $*" >&2
  start_server "$target" "$logs/$name.server.log"
  if ! "$bench_bin/loadgen" --url "http://127.0.0.1:$port" --protocol "$protocol" \
    --server-pid "$server_pid" --quiet --report-only "$@" \
    >"$logs/$name.json" 2>"$logs/$name.log"; then
    sed 's/^/   /' "$logs/$name.log" >&2
    fail "the load generator failed against $target ($protocol: $*); server log: $logs/$name.server.log"
  fi
  sed 's/^/   /' "$logs/$name.log" >&2
  if ! bench_alive "$server_pid"; then
    fail "the $target server exited during the run; its log: $logs/$name.server.log"
  fi
  stop_servers
  local line
  line=$(tail -n 1 "$logs/$name.json")
  [ "${line:0:1}" = "{" ] || fail "no JSON line from the load generator in $logs/$name.json"
  printf '{"target":"%s",%s\n' "$target" "${line#\{}" >>"$results"
}

bench_build
if [[ " $targets " == *" reference "* ]] && [ ! -d benches/compare/node_modules ]; then
  (cd benches/compare && npm ci --no-audit --no-fund) >&2 || fail "npm ci failed in benches/compare"
fi
mkdir -p "$logs"
bench_raise_nofile

for target in $targets; do
  if [ "$target" = reference ]; then
    protocols=(socketio)
  elif [ "$target" = bare ]; then
    protocols=(native)
  else
    protocols=(socketio native)
  fi
  for scenario in "${scenarios[@]}"; do
    read -r -a args <<<"$scenario"
    if [ "${args[0]}" = idle ]; then
      args+=(--duration "$idle_duration")
    else
      args+=(--duration "$duration")
    fi
    for protocol in "${protocols[@]}"; do
      run "$target" "$protocol" "${args[@]}"
    done
  done
done

"$bench_bin/compare-report" "$results" --chart "$chart" | tee "$(dirname "$results")/report.md"
echo "chart: $chart" >&2
