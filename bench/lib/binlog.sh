# shellcheck shell=bash
# Sourced by scripts/bench-decode and scripts/bench-filter-cost: builds sluice-bench, starts a
# throwaway MariaDB and fills its binlog with sysbench oltp_write_only traffic.
#
#   source bench/lib/binlog.sh
#   bench_build                      # sets BENCH_BIN
#   bench_start_source "$WORK"       # sets BENCH_PORT, BENCH_SERVER_PID, BENCH_DATA_DIR
#   bench_fill_binlog SIZE_MB        # sets BENCH_FILES (array), BENCH_FIRST_FILE, BENCH_BYTES
#   bench_save_binlog DIR            # copies the measured files to DIR
#   bench_pin_server                 # moves mariadbd to core 0 (measured programs use core 1)
#   bench_stop_source                # also run by the EXIT trap that bench_start_source sets
#
# Settings (environment): BENCH_TABLES (4), BENCH_TABLE_SIZE (100000), BENCH_THREADS (4).

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
BENCH_TABLES=${BENCH_TABLES:-4}
BENCH_TABLE_SIZE=${BENCH_TABLE_SIZE:-100000}
BENCH_THREADS=${BENCH_THREADS:-4}

bench_log() {
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# The command prefix that pins a measured process to core 1 (empty without taskset or with
# a single core).
bench_pin() {
  if command -v taskset >/dev/null 2>&1 && (($(nproc) > 1)); then
    printf 'taskset -c 1'
  fi
}

bench_build() {
  bench_log "building sluice-bench (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$BENCH_ROOT" && cargo build --release -q -p sluice-bench) || return 1
  BENCH_BIN="$CARGO_TARGET_DIR/release/sluice-bench"
}

_bench_sql() {
  mariadb --no-defaults -h127.0.0.1 -P"$BENCH_PORT" -uroot --batch --skip-column-names -e "$1"
}

bench_start_source() {
  local work=$1
  mkdir -p "$work"
  rm -f "$work/source.hold" "$work/source.out"
  mkfifo "$work/source.hold"
  # The server lives as long as this script holds the fifo open (fd 8).
  "$BENCH_BIN" source --dir "$work" --server-arg=--innodb-buffer-pool-size=1G \
    --server-arg=--max-binlog-size=1G <"$work/source.hold" >"$work/source.out" 2>"$work/source.err" &
  BENCH_SOURCE_PID=$!
  exec 8>"$work/source.hold"
  trap bench_stop_source EXIT
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q '^data_dir=' "$work/source.out" 2>/dev/null && break
    if ! kill -0 "$BENCH_SOURCE_PID" 2>/dev/null; then
      cat "$work/source.err" >&2
      echo "error: the throwaway MariaDB did not start" >&2
      return 1
    fi
    sleep 0.1
  done
  BENCH_PORT=$(sed -n 's/^port=//p' "$work/source.out")
  BENCH_SERVER_PID=$(sed -n 's/^pid=//p' "$work/source.out")
  BENCH_DATA_DIR=$(sed -n 's/^data_dir=//p' "$work/source.out")
  [[ -n $BENCH_DATA_DIR ]] || {
    echo "error: the throwaway MariaDB did not report its data dir" >&2
    return 1
  }
  bench_log "throwaway MariaDB on 127.0.0.1:$BENCH_PORT (pid $BENCH_SERVER_PID), data in $BENCH_DATA_DIR"
}

bench_stop_source() {
  if [[ -n ${BENCH_SYSBENCH_PID:-} ]] && kill -0 "$BENCH_SYSBENCH_PID" 2>/dev/null; then
    kill "$BENCH_SYSBENCH_PID" 2>/dev/null || true
    wait "$BENCH_SYSBENCH_PID" 2>/dev/null || true
  fi
  BENCH_SYSBENCH_PID=
  if [[ -n ${BENCH_SOURCE_PID:-} ]]; then
    exec 8>&- || true
    wait "$BENCH_SOURCE_PID" 2>/dev/null || true
    BENCH_SOURCE_PID=
  fi
}

_bench_sysbench_args() {
  BENCH_SYSBENCH_ARGS=(oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$BENCH_PORT"
    --mysql-user=root --mysql-password= --mysql-db=sbtest --tables="$BENCH_TABLES"
    --table-size="$BENCH_TABLE_SIZE")
}

# Binlog files from $1 (a file name) on, in order, as full paths.
_bench_binlogs_from() {
  local first=$1 name
  local started=0
  while read -r name _; do
    [[ $name == "$first" ]] && started=1
    ((started)) && printf '%s\n' "$BENCH_DATA_DIR/$name"
  done < <(_bench_sql "SHOW BINARY LOGS")
}

_bench_size_of() {
  local total=0 f
  for f in "$@"; do
    total=$((total + $(stat -c %s "$f")))
  done
  echo "$total"
}

bench_fill_binlog() {
  local size_mb=$1
  local target=$((size_mb * 1000 * 1000))
  _bench_sql "CREATE DATABASE sbtest"
  bench_log "sysbench prepare: $BENCH_TABLES tables x $BENCH_TABLE_SIZE rows"
  _bench_sysbench_args
  sysbench "${BENCH_SYSBENCH_ARGS[@]}" prepare >"$BENCH_WORK/sysbench-prepare.log"
  # Measure only oltp_write_only traffic: start a new binlog file after the bulk load.
  _bench_sql "FLUSH BINARY LOGS"
  BENCH_FIRST_FILE=$(_bench_sql "SHOW MASTER STATUS" | cut -f1)
  bench_log "sysbench oltp_write_only run ($BENCH_THREADS threads) until the binlog from $BENCH_FIRST_FILE holds ${size_mb} MB"
  # sysbench itself (not a subshell) is the background job, so that killing $! stops it.
  sysbench "${BENCH_SYSBENCH_ARGS[@]}" --threads="$BENCH_THREADS" --time=0 --events=0 \
    --report-interval=0 run >"$BENCH_WORK/sysbench-run.log" 2>&1 &
  BENCH_SYSBENCH_PID=$!
  local -a files
  local size=0 start=$SECONDS
  while :; do
    mapfile -t files < <(_bench_binlogs_from "$BENCH_FIRST_FILE")
    size=$(_bench_size_of "${files[@]}")
    ((size >= target)) && break
    if ! kill -0 "$BENCH_SYSBENCH_PID" 2>/dev/null; then
      cat "$BENCH_WORK/sysbench-run.log" >&2
      echo "error: sysbench stopped early" >&2
      return 1
    fi
    sleep 0.5
  done
  kill "$BENCH_SYSBENCH_PID" 2>/dev/null || true
  wait "$BENCH_SYSBENCH_PID" 2>/dev/null || true
  BENCH_SYSBENCH_PID=
  # Close the file being written, so every measured file is complete, and make sure that
  # nothing writes to the binlog any more (the peers must all read the same bytes).
  local writers i
  for ((i = 0; i < 100; i++)); do
    writers=$(_bench_sql "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'sbtest'")
    ((writers == 0)) && break
    sleep 0.1
  done
  if ((writers > 0)); then
    echo "error: $writers sysbench connections are still open after stopping sysbench" >&2
    return 1
  fi
  _bench_sql "FLUSH BINARY LOGS"
  mapfile -t BENCH_FILES < <(_bench_binlogs_from "$BENCH_FIRST_FILE")
  # The server appends a BINLOG_CHECKPOINT event to the new file shortly after the flush:
  # wait until the sizes stop changing.
  local last=-1
  BENCH_BYTES=$(_bench_size_of "${BENCH_FILES[@]}")
  for ((i = 0; i < 50 && BENCH_BYTES != last; i++)); do
    last=$BENCH_BYTES
    sleep 0.2
    BENCH_BYTES=$(_bench_size_of "${BENCH_FILES[@]}")
  done
  bench_log "binlog ready in $((SECONDS - start)) s: ${#BENCH_FILES[@]} files, $BENCH_BYTES bytes"
}

# Copies the measured binlog files into $1 (for profiling or re-running sluice-bench by hand).
bench_save_binlog() {
  local dest=$1
  mkdir -p "$dest"
  cp "${BENCH_FILES[@]}" "$dest/"
  bench_log "binlog files copied to $dest"
}

bench_pin_server() {
  if [[ -n $(bench_pin) && -n ${BENCH_SERVER_PID:-} ]]; then
    taskset -a -pc 0 "$BENCH_SERVER_PID" >/dev/null
    bench_log "mariadbd pinned to core 0; measured programs run on core 1"
  fi
}

# Facts about the run for the JSON record.
bench_env_json() {
  local commit dirty cpu
  commit=$(git -C "$BENCH_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  dirty=false
  [[ -n $(git -C "$BENCH_ROOT" status --porcelain 2>/dev/null) ]] && dirty=true
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
  python3 -c 'import json,sys; print(json.dumps({"commit": sys.argv[1], "worktree_dirty": sys.argv[2] == "true", "cpu": sys.argv[3], "cores": int(sys.argv[4]), "load_avg_before": sys.argv[5], "mariadb": sys.argv[6], "sysbench": sys.argv[7]}))' \
    "$commit" "$dirty" "$cpu" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(_bench_sql 'SELECT VERSION()' 2>/dev/null || echo unknown)" "$(sysbench --version)"
}
