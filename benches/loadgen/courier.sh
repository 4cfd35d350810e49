# shellcheck shell=bash
# Sourced by benches/loadgen/run.sh and benches/compare/run.sh, from the repository root:
# builds the release binaries, starts a fresh courier with the load generator's settings
# (benches/loadgen/server.toml), waits until it listens, and stops it.

# Where cargo puts release binaries; CARGO_TARGET_DIR moves them, as it does for cargo.
bench_bin="${CARGO_TARGET_DIR:-target}/release"

# Builds courier, the load generator's binaries and the bare floor server in release.
bench_build() {
  cargo build --release --locked -p courier-server -p courier-loadgen -p courier-compare-bare >&2
}

# Open files for many connections, on both sides: children inherit the limit.
bench_raise_nofile() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# bench_alive PID: the process runs (a child that exited stays a zombie until waited for,
# and `kill -0` still finds it).
bench_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

# bench_port_free PORT: fails if something already listens on 127.0.0.1:PORT, which the
# load would otherwise reach instead of the server just started.
bench_port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "error: port $1 is already in use on 127.0.0.1: choose another port" >&2
    return 1
  fi
}

# bench_wait_for_port PORT PID LOG: returns once 127.0.0.1:PORT accepts connections; fails,
# showing the end of LOG, if PID exits first or after 60 s.
bench_wait_for_port() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 600); do
    if ! bench_alive "$pid"; then
      echo "error: the server (pid $pid) exited before it listened on port $port; end of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: the server (pid $pid) does not listen on port $port after 60 s; end of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# bench_start_courier PORT LOG [DATABASE_URL]: starts the release courier on a new data
# directory, with a new SQLite file there unless DATABASE_URL is given, and one node (no
# Redis). Sets courier_pid and courier_data; bench_stop_courier undoes it.
bench_start_courier() {
  local port=$1 log=$2 database_url=${3:-}
  bench_port_free "$port"
  courier_data=$(mktemp -d)
  local store=(env -u REDIS_URL -u COURIER_REDIS_URL -u DATABASE_URL -u COURIER_DATABASE_URL)
  if [ -n "$database_url" ]; then
    store+=("DATABASE_URL=$database_url")
  fi
  # `env` execs courier, so $! is courier's own pid, the one the load generator measures.
  "${store[@]}" COURIER_CONFIG=benches/loadgen/server.toml COURIER_LISTEN="127.0.0.1:$port" \
    COURIER_DATA_DIR="$courier_data" RUST_LOG=warn "$bench_bin/courier" serve >"$log" 2>&1 &
  courier_pid=$!
  bench_wait_for_port "$port" "$courier_pid" "$log"
}

# bench_stop PID: SIGTERM, then waits for it to exit; SIGKILL after 30 s (courier's own
# graceful shutdown gives connections 10 s).
bench_stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    bench_alive "$pid" || break
    sleep 0.1
  done
  if bench_alive "$pid"; then
    echo "warning: the server (pid $pid) did not stop within 30 s of SIGTERM: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Stops the courier bench_start_courier started, if any, and removes its data directory.
bench_stop_courier() {
  if [ -n "${courier_pid:-}" ]; then
    bench_stop "$courier_pid"
    courier_pid=
  fi
  if [ -n "${courier_data:-}" ]; then
    rm -rf "$courier_data"
    courier_data=
  fi
}
