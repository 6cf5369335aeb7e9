#!/usr/bin/env bash
# Daemon benchmark: the cost of `pgbackup run` when it waits, and how fast it
# answers /metrics, idle and while a backup runs.
#
#   1. Idle: `pgbackup run` with a far-away schedule (BACKUP_CRON_SCHEDULE=
#      "0 3 1 1 *") and nothing to do. After DAEMON_IDLE_SECONDS (60) of
#      idling: VmRSS, and the CPU seconds it used over those seconds
#      (utime + stime from /proc/<pid>/stat, all threads).
#   2. /metrics under load with `wrk --latency` (DAEMON_WRK_ARGS, default
#      -t2 -c16 -d15s) on loopback, BENCH_RUNS (3) interleaved rounds:
#        busy: the daemon is started with RUN_ON_STARTUP=true; wrk starts once
#              backup_in_progress is 1, and the run only counts when it is
#              still 1 when wrk ends (the backup covered the whole run);
#        idle: the same daemon once that backup has finished.
#      Medians of requests/s, p50 and p99 latency.
#
# The machine has 2 cores. In the busy runs wrk (2 threads), the daemon,
# pg_dump, the PostgreSQL backend serving it and Garage all share them, so
# the busy numbers are a worst case for the HTTP server, not its ceiling.
#
# Targets: idle RSS < 20 MiB; idle CPU near 0; /metrics >= 5,000 requests/s
# with p99 < 10 ms.
#
# Environment:
#   BENCH_RUNS=3                 rounds of (busy, idle)
#   DAEMON_IDLE_SECONDS=60       idle period before RSS and over which CPU counts
#   DAEMON_WRK_ARGS="-t2 -c16 -d15s"
#   BENCH_PGBENCH_SCALE=100, BENCH_EVENT_ROWS=3000000  the database backed up
#                                during the busy runs (~2.5 GB, as in backup.sh;
#                                with zstd 1 a 0.9 GB database backed up in 9 s,
#                                shorter than a 15 s wrk run)
#   BENCH_RESULTS                report path (default bench/results/daemon.md)
#   PGBACKUP_BIN                 binary to test (default: cargo build --release)
#
# Needs: postgresql-15, garage 2.5.0, curl, wrk (apt-get install wrk).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-3}
IDLE_S=${DAEMON_IDLE_SECONDS:-60}
read -r -a WRK_ARGS <<<"${DAEMON_WRK_ARGS:--t2 -c16 -d15s}"
RESULTS=${BENCH_RESULTS:-$HERE/results/daemon.md}
export BENCH_SCALE=full BENCH_PGBENCH_SCALE=${BENCH_PGBENCH_SCALE:-100} BENCH_EVENT_ROWS=${BENCH_EVENT_ROWS:-3000000}
command -v wrk >/dev/null || bench_die "wrk not found: apt-get install -y wrk"

DB=bench
BUCKET=pgbackup-daemon
FAR="0 3 1 1 *"

bench_init daemon
pg_start
garage_start
garage_bucket "$BUCKET"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
T0=$SECONDS
dataset_generate "$DB"
GEN_S=$((SECONDS - T0))
DB_SIZE=$(dataset_size "$DB")
# After the dataset: a build can overlap with its generation.
pgbackup_build
RUNS_DIR=$BENCH_WORK/runs
mkdir -p "$RUNS_DIR"

cpu_ticks() { _bench_proc_ticks "$1" self; }
in_progress() { pgbackup_metrics | metric_sum backup_in_progress; }

# ---- 1. idle --------------------------------------------------------------------
bench_log "idle: $IDLE_S s with schedule '$FAR'"
pgbackup_run_start "$DB" "$BUCKET" "$BENCH_WORK/daemon-idle.log" BACKUP_CRON_SCHEDULE="$FAR"
# Start-up (the storage listing, the version probe) is not idling: give it a
# moment, then count from there.
sleep 2
IDLE_RSS0=$(proc_status_kb "$PGB_PID" VmRSS)
C0=$(cpu_ticks "$PGB_PID")
W0=$EPOCHREALTIME
sleep "$IDLE_S"
C1=$(cpu_ticks "$PGB_PID")
W1=$EPOCHREALTIME
IDLE_RSS=$(proc_status_kb "$PGB_PID" VmRSS)
IDLE_HWM=$(proc_status_kb "$PGB_PID" VmHWM)
IDLE_THREADS=$(proc_status_kb "$PGB_PID" Threads)
# What the resident pages are: anonymous (heap, stacks) or file-backed
# (mostly the binary's own code and read-only data, shared and evictable).
IDLE_ANON=$(proc_status_kb "$PGB_PID" RssAnon)
IDLE_FILE=$(proc_status_kb "$PGB_PID" RssFile)
IDLE_CPU=$(bench_calc "($C1 - $C0) / $BENCH_CLK_TCK")
IDLE_WALL=$(bench_calc "${W1/,/.} - ${W0/,/.}")
METRICS_BYTES=$(pgbackup_metrics | wc -c)
pgbackup_run_stop
IDLE_RC=$PGB_EXIT
bench_log "idle: RSS $IDLE_RSS kB (after 2 s: $IDLE_RSS0 kB), CPU ${IDLE_CPU}s over ${IDLE_WALL}s, exit $IDLE_RC"

# ---- 2. /metrics under wrk ---------------------------------------------------------

# run_wrk DIR: wrk against /metrics; DIR/summary gets rps, p50_ms, p99_ms,
# errors, the daemon's CPU seconds and the machine's busy share.
run_wrk() {
  local dir=$1 c0 c1 s0 s1
  mkdir -p "$dir"
  c0=$(cpu_ticks "$PGB_PID")
  s0=$(_bench_sys_ticks)
  wrk "${WRK_ARGS[@]}" --latency "$PGB_URL/metrics" >"$dir/wrk.txt" 2>&1 || bench_die "wrk failed: $(cat "$dir/wrk.txt")"
  c1=$(cpu_ticks "$PGB_PID")
  s1=$(_bench_sys_ticks)
  {
    awk '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; if (v ~ /m$/) return v * 60000; return v }
      $1 == "Requests/sec:" { print "rps=" $2 }
      $1 == "50%" { print "p50_ms=" ms($2) }
      $1 == "99%" { print "p99_ms=" ms($2) }
      / requests in / { print "requests=" $1 }
      /Socket errors/ { e = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i; print "socket_errors=" e }
      /Non-2xx/ { print "non2xx=" $NF }' "$dir/wrk.txt"
    echo "daemon_cpu_s=$(bench_calc "($c1 - $c0) / $BENCH_CLK_TCK")"
    echo "busy_pct=$(bench_calc "100 * (${s1% *} - ${s0% *}) / (${s1#* } - ${s0#* })")"
    echo "rss_kb=$(proc_status_kb "$PGB_PID" VmRSS)"
  } >"$dir/summary"
}

for ((r = 1; r <= RUNS; r++)); do
  bench_log "round $r: busy (a backup at start-up)"
  pgbackup_run_start "$DB" "$BUCKET" "$BENCH_WORK/daemon-$r.log" BACKUP_CRON_SCHEDULE="$FAR" RUN_ON_STARTUP=true
  bench_wait_until 60 "backup_in_progress 1" bash -c "curl -fsS '$PGB_URL/metrics' | grep -Eq '^backup_in_progress(\{[^}]*\})? 1'"
  run_wrk "$RUNS_DIR/busy.$r"
  still=$(in_progress)
  echo "backup_throughout=$still" >>"$RUNS_DIR/busy.$r/summary"
  ((still == 1)) || bench_log "WARNING: round $r: the backup ended before wrk did; this busy run is partly idle"
  deadline=$((SECONDS + 1800))
  until [[ $(in_progress) == 0 ]]; do
    ((SECONDS < deadline)) || bench_die "the backup did not finish"
    sleep 0.5
  done
  m=$(pgbackup_metrics)
  [[ $(metric_sum backup_last_status <<<"$m") == 1 ]] || bench_die "round $r: the backup failed: $(tail -3 "$BENCH_WORK/daemon-$r.log")"
  echo "backup_s=$(metric_sum backup_last_duration_seconds <<<"$m")" >>"$RUNS_DIR/busy.$r/summary"
  echo "stored_bytes=$(metric_sum backup_last_size_bytes <<<"$m")" >>"$RUNS_DIR/busy.$r/summary"
  echo "dump_bytes=$(metric_sum backup_last_dump_bytes <<<"$m")" >>"$RUNS_DIR/busy.$r/summary"
  bench_log "round $r: busy $(bench_get "$RUNS_DIR/busy.$r/summary" rps) req/s; backup took $(bench_get "$RUNS_DIR/busy.$r/summary" backup_s)s"
  sleep 2
  bench_log "round $r: idle"
  run_wrk "$RUNS_DIR/idle.$r"
  echo "backup_throughout=0" >>"$RUNS_DIR/idle.$r/summary"
  bench_log "round $r: idle $(bench_get "$RUNS_DIR/idle.$r/summary" rps) req/s"
  AFTER_RSS[r]=$(proc_status_kb "$PGB_PID" VmRSS)
  AFTER_HWM[r]=$(proc_status_kb "$PGB_PID" VmHWM)
  pgbackup_run_stop
done

# ---- report ------------------------------------------------------------------------
vals() { local r; for ((r = 1; r <= RUNS; r++)); do bench_get "$RUNS_DIR/$1.$r/summary" "$2"; done; }
med() { bench_median $(vals "$1" "$2"); }
range() { vals "$1" "$2" | sort -g | awk -v f="$3" 'NR == 1 { lo = $1 } { hi = $1 } END { printf f "–" f, lo, hi }'; }
mibk() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
pf() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')

report() {
  local v label
  echo "# Daemon benchmark"
  echo
  echo "- date: $STARTED; $RUNS interleaved rounds (busy, idle), medians"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- pgbackup $PGB_VERSION ($PGB_COMMIT, release build); PostgreSQL $("$BENCH_PG_BIN/postgres" --version | awk '{print $3}'); Garage (single node, same machine, compression off); wrk $WRK_VERSION"
  echo "- database: pgbench -s $BENCH_PGBENCH_SCALE + $BENCH_EVENT_ROWS event rows, pg_database_size $(bench_fmt_bytes "$DB_SIZE"), generated in ${GEN_S} s; a backup of it: dump $(bench_fmt_bytes "$(med busy dump_bytes)"), stored $(bench_fmt_bytes "$(med busy stored_bytes)") (defaults), $(printf '%.1f' "$(med busy backup_s)") s while wrk ran"
  echo "- /metrics response: $METRICS_BYTES bytes"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| idle RSS < 20 MiB | $(mibk "$IDLE_RSS") VmRSS after $IDLE_S s idle (peak so far, VmHWM: $(mibk "$IDLE_HWM"); $IDLE_THREADS threads) | $(pf "$IDLE_RSS < 20480") |"
  echo "| (of which) | anonymous (RssAnon) $(mibk "$IDLE_ANON"), file-backed (RssFile: the $(bench_fmt_bytes "$(stat -c %s "$PGBACKUP_BIN")") binary's pages and libraries) $(mibk "$IDLE_FILE") | |"
  echo "| idle CPU near 0 | $IDLE_CPU CPU s over $(printf '%.1f' "$IDLE_WALL") s ($(bench_calc "100 * $IDLE_CPU / $IDLE_WALL") % of one core) | $(pf "$IDLE_CPU <= 0.05") |"
  echo "| /metrics ≥ 5,000 req/s, idle | $(printf '%.0f' "$(med idle rps)") req/s | $(pf "$(med idle rps) >= 5000") |"
  echo "| /metrics p99 < 10 ms, idle | $(med idle p99_ms) ms | $(pf "$(med idle p99_ms) < 10") |"
  echo "| /metrics ≥ 5,000 req/s, during a backup | $(printf '%.0f' "$(med busy rps)") req/s | $(pf "$(med busy rps) >= 5000") |"
  echo "| /metrics p99 < 10 ms, during a backup | $(med busy p99_ms) ms | $(pf "$(med busy p99_ms) < 10") |"
  echo
  echo "\`wrk ${WRK_ARGS[*]} --latency\` on loopback, medians (min–max) over $RUNS runs:"
  echo
  echo "| daemon | requests/s | p50 | p99 | errors | daemon CPU during the run | machine busy |"
  echo "|---|---|---|---|---|---|---|"
  for v in idle busy; do
    [[ $v == idle ]] && label="idle (no backup)" || label="during a backup (pg_dump + zstd + upload to Garage)"
    echo "| $label | $(printf '%.0f' "$(med "$v" rps)") ($(range "$v" rps %.0f)) | $(med "$v" p50_ms) ms ($(range "$v" p50_ms %.2f)) | $(med "$v" p99_ms) ms ($(range "$v" p99_ms %.2f)) | $(vals "$v" socket_errors | awk '{ s += $1 } END { print s + 0 }') socket, $(vals "$v" non2xx | awk '{ s += $1 } END { print s + 0 }') non-2xx | $(printf '%.1f' "$(med "$v" daemon_cpu_s)") s | $(printf '%.0f' "$(med "$v" busy_pct)") % |"
  done
  echo
  echo "All runs:"
  echo
  echo "| round | daemon | requests/s | p50 ms | p99 ms | backup ran throughout | daemon RSS after |"
  echo "|---|---|---|---|---|---|---|"
  local r s
  for ((r = 1; r <= RUNS; r++)); do
    for v in busy idle; do
      s=$RUNS_DIR/$v.$r/summary
      echo "| $r | $v | $(printf '%.0f' "$(bench_get "$s" rps)") | $(bench_get "$s" p50_ms) | $(bench_get "$s" p99_ms) | $([[ $(bench_get "$s" backup_throughout) == 1 ]] && echo yes || echo no) | $(mibk "$(bench_get "$s" rss_kb)") |"
    done
  done
  echo
  echo "After each round's backup, idle again: RSS $(for ((r = 1; r <= RUNS; r++)); do printf '%s; ' "$(mibk "${AFTER_RSS[r]}")"; done)peak (VmHWM) $(for ((r = 1; r <= RUNS; r++)); do printf '%s; ' "$(mibk "${AFTER_HWM[r]}")"; done | sed 's/; $//')."
  echo
  echo "How it is measured: idle RSS is VmRSS from /proc/<pid>/status after $IDLE_S s of idling (counted from" \
    "2 s after /healthz first answered); idle CPU is utime + stime of all the daemon's threads over those" \
    "seconds. wrk runs on the same machine (2 threads, 16 connections, keep-alive) against" \
    "http://127.0.0.1:<port>/metrics; latencies are wrk's --latency percentiles. In the busy runs wrk," \
    "the daemon, pg_dump, its PostgreSQL backend and Garage share the 2 cores; a busy run counts only if" \
    "backup_in_progress was 1 both when wrk started and when it ended."
  echo "Run: \`bench/daemon.sh\` (BENCH_RUNS=$RUNS DAEMON_IDLE_SECONDS=$IDLE_S DAEMON_WRK_ARGS=\"${WRK_ARGS[*]}\")."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
