#!/usr/bin/env bash
# Point-in-time recovery benchmark: WAL streaming by `pgbackup run`
# (BACKUP_WAL_ARCHIVE=true), `pgbackup basebackup` and
# `pgbackup restore --to-time`, against pgBackRest and PostgreSQL's own
# tools, on the benchmark database (a ~2.7 GB cluster at the default scale).
#
#   1. rpo: the recovery point under pgbench load. For each flush interval in
#      PITR_RPO_FLUSHES (BACKUP_WAL_FLUSH_SECONDS), the daemon streams while
#      pgbench runs PITR_RPO_SECONDS; every second the age of the newest
#      stored WAL, time() - backup_wal_last_archived_timestamp_seconds, is
#      sampled from /metrics. Target: 95th percentile <= flush + 5 s.
#   2. load: pgbench TPS without (off) and with (on) the daemon streaming,
#      interleaved (off on, off on, ...), BENCH_RUNS rounds of
#      PITR_LOAD_SECONDS. Target: on >= 0.95 x off (the median of the
#      per-round ratios).
#   3. base: a base backup of the whole cluster, interleaved rounds of
#      (p) pgbackup basebackup into Garage (pg_basebackup -Ft -X none,
#          zstd 1, single thread)
#      (r) pgBackRest full backup (compress-type=zst, compress-level=1,
#          process-max=2, start-fast=y) into a local repository
#      (z) pg_basebackup -Ft -X none -c fast -D - | zstd -1 -T2
#      (u) pg_basebackup -Ft -X none -c fast -D - > /dev/null (reference)
#      Targets: (p) <= 1.2 x the faster of (r) and (z); pgbackup's peak RSS
#      <= 64 MiB.
#   4. restore: after one base backup of each kind, PITR_RESTORE_LOAD_SECONDS
#      of pgbench (WAL to replay), a marker row and a WAL switch that both
#      archives hold, interleaved rounds of
#      (t) pgbackup restore --to-time latest --target-dir DIR --start
#          (until recovery has ended)
#      (b) pgbackrest restore into an empty DIR, pg_ctl start, until
#          recovery has ended (recovery.signal gone, as pgbackup waits)
#      (l) pgbackup restore latest --target-url URL --jobs 2, of a logical
#          dump of the benchmark database taken at the same point
#      Each restore is checked (the marker row is there) untimed, then
#      removed. Target: (t) <= 0.5 x (l).
#   5. memory while streaming: the daemon's own peak RSS (VmHWM at the end of
#      every streaming session of phases 1, 2 and 4) and, separately,
#      pg_receivewal's. Target: the daemon <= 64 MiB.
#
# The cluster is lib.sh's (fsync and synchronous_commit off), with
# full_page_writes on (the production default; it sets the WAL volume),
# wal_level replica and archive_mode on. Its archive_command runs
# `pgbackrest archive-push` only in phases 3 and 4 (a flag file), and
# otherwise returns at once. Every streaming session uses its own slot,
# spool directory and prefix; each slot is dropped when its session ends.
# The source's postgresql.auto.conf holds fsync = off, synchronous_commit =
# off and the socket directory, so the clusters restored in phase 4 run like
# the one the logical restore goes into.
#
# Environment:
#   BENCH_RUNS=3              rounds of phases 2, 3 and 4 (small: 1)
#   BENCH_SCALE=full          full (~2.7 GB cluster) or small (quick smoke
#                             run: small dataset, short phases)
#   BENCH_PGBENCH_SCALE, BENCH_EVENT_ROWS   override the dataset size
#   PITR_PHASES="rpo load base restore"     which phases to run
#   PITR_RPO_FLUSHES="60"     flush intervals of phase 1, e.g. "60 10"
#                             (small: 5)
#   PITR_RPO_SECONDS=300      pgbench duration per flush interval (small: 20)
#   PITR_RPO_RATE             optional pgbench -R (transactions/s) in phase 1;
#                             unset: as fast as it goes
#   PITR_LOAD_SECONDS=60      pgbench duration per run of phase 2 (small: 10)
#   PITR_PGBENCH_ARGS="-c 4 -j 2"   pgbench's clients and threads
#   PITR_LOAD_VARIANTS="off on rx rxm"  phase 2's variants: no streaming,
#                             the daemon streaming, pg_receivewal alone on a
#                             slot into a spool on disk (what the daemon runs,
#                             without the uploads), the same into a spool in
#                             memory (/dev/shm: no disk writes, no fsync):
#                             where the load comes from
#   PITR_BASE_VARIANTS="p d r z u"  phase 3's variants (p or d, and one of r,
#                             z are needed for the targets)
#   PITR_RESTORE_VARIANTS="t s b l" phase 4's variants (t and l are needed;
#                             w, replay alone, for reference)
#   PITR_RESTORE_LOAD_SECONDS=60    pgbench before the restores (small: 10)
#   BENCH_RESULTS             report path (default bench/results/pitr.md, or
#                             bench/results/pitr.small.md for small)
#   PGBACKUP_BIN              binary to test (default: cargo build --release);
#                             the postgres user must be able to run it (the
#                             restored servers' restore_command)
#   PGBACKUP_REV              what PGBACKUP_BIN was built from, for the report
#   BENCH_TMPDIR=/var/tmp     work dir: needs ~4x the cluster (~11 GB free)
#
# Needs: postgresql-15, pgbackrest (installed with apt-get when missing and
# run as root), zstd, GNU time, python3, curl, garage 2.5.0, the AWS CLI
# (lib.sh installs it when missing). Runs as root or as a user that can run
# postgres.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

SCALE=${BENCH_SCALE:-full}
case $SCALE in
  full) q= ;;
  small) q=1 ;;
  *) bench_die "BENCH_SCALE must be full or small, not '$SCALE'" ;;
esac
RUNS=${BENCH_RUNS:-${q:+1}}
RUNS=${RUNS:-3}
read -r -a PHASES <<<"${PITR_PHASES:-rpo load base restore}"
read -r -a FLUSHES <<<"${PITR_RPO_FLUSHES:-${q:+5}}"
((${#FLUSHES[@]})) || FLUSHES=(60)
RPO_S=${PITR_RPO_SECONDS:-${q:+20}}
RPO_S=${RPO_S:-300}
RPO_RATE=${PITR_RPO_RATE:-}
LOAD_S=${PITR_LOAD_SECONDS:-${q:+10}}
LOAD_S=${LOAD_S:-60}
read -r -a PGBENCH_ARGS <<<"${PITR_PGBENCH_ARGS:--c 4 -j 2}"
read -r -a VARIANTS <<<"${PITR_BASE_VARIANTS:-p d r z u}"
read -r -a LOAD_VARIANTS <<<"${PITR_LOAD_VARIANTS:-off on rx rxm}"
read -r -a RESTORE_VARIANTS <<<"${PITR_RESTORE_VARIANTS:-t s b l}"
RESTORE_LOAD_S=${PITR_RESTORE_LOAD_SECONDS:-${q:+10}}
RESTORE_LOAD_S=${RESTORE_LOAD_S:-60}
if [[ $SCALE == full ]]; then
  RESULTS=${BENCH_RESULTS:-$HERE/results/pitr.md}
else
  RESULTS=${BENCH_RESULTS:-$HERE/results/pitr.$SCALE.md}
fi
for n in "$RUNS" "$RPO_S" "$LOAD_S" "$RESTORE_LOAD_S" "${FLUSHES[@]}" ${RPO_RATE:+"$RPO_RATE"}; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || bench_die "rounds, durations, flush intervals and rates must be positive integers, not '$n'"
done
for p in "${PHASES[@]}"; do [[ $p =~ ^(rpo|load|base|restore)$ ]] || bench_die "unknown phase '$p' in PITR_PHASES"; done
for v in "${VARIANTS[@]}"; do [[ $v =~ ^[pdrzu]$ ]] || bench_die "unknown variant '$v' in PITR_BASE_VARIANTS"; done
for v in "${LOAD_VARIANTS[@]}"; do [[ $v =~ ^(off|on|rx|rxm)$ ]] || bench_die "unknown variant '$v' in PITR_LOAD_VARIANTS"; done
for v in "${RESTORE_VARIANTS[@]}"; do [[ $v =~ ^[tsblw]$ ]] || bench_die "unknown variant '$v' in PITR_RESTORE_VARIANTS"; done
# has WORD LIST...: whether WORD is one of LIST.
has() {
  local w=$1
  shift
  [[ " $* " == *" $w "* ]]
}
has_phase() { has "$1" "${PHASES[@]}"; }
PGBR_NEEDED=
if { has_phase restore && has b "${RESTORE_VARIANTS[@]}"; } || { has_phase base && has r "${VARIANTS[@]}"; }; then PGBR_NEEDED=1; fi
if [[ -n $PGBR_NEEDED ]] && ! command -v pgbackrest >/dev/null; then
  [[ $(id -u) -eq 0 ]] || bench_die "pgbackrest not found: apt-get install pgbackrest"
  bench_log "installing pgbackrest (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null || bench_die "apt-get install pgbackrest failed"
fi

DB=bench
BUCKET=pgbackup-pitr
SLOT_PREFIX=bench_
# Far away: the daemon takes no dump and no scheduled base backup.
FAR="0 3 1 1 *"
# Commands as the postgres user (initdb, pg_ctl and pgBackRest refuse root).
AS_PG=()
[[ $(id -u) -ne 0 ]] || AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)

bench_init pitr
# pgBackRest's directory exists before the cluster: its archive_command runs
# the wrapper there, which pushes to pgBackRest only while the flag exists.
PGBR=$BENCH_WORK/pgbackrest
PGBR_CONF=$PGBR/pgbackrest.conf
PGBR_FLAG=$PGBR/archive.on
mkdir -p "$PGBR"/{repo,log,lock,spool}
cat >"$PGBR/archive.sh" <<EOF
#!/bin/sh
[ -e '$PGBR_FLAG' ] || exit 0
exec pgbackrest --config='$PGBR_CONF' --stanza=bench archive-push "\$1"
EOF
chmod 755 "$PGBR/archive.sh"
[[ $(id -u) -ne 0 ]] || chown -R postgres: "$PGBR"
pg_start -c full_page_writes=on -c wal_level=replica -c archive_mode=on -c "archive_command=$PGBR/archive.sh %p"
# A restored server left running by a failed round; then every slot. Both
# run before pg_stop (cleanups run last registered first).
bench_on_exit "restored_stop_all"
bench_on_exit "slots_drop_all"
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
T0=$SECONDS
dataset_generate "$DB"
GEN_S=$((SECONDS - T0))
DB_SIZE=$(dataset_size "$DB")
pg_psql postgres -c "ALTER SYSTEM SET fsync = off" -c "ALTER SYSTEM SET synchronous_commit = off" \
  -c "ALTER SYSTEM SET unix_socket_directories = '$PG_SOCK'"
CLUSTER_SIZE=$(pg_psql postgres -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
bench_log "dataset ready in ${GEN_S}s: pg_database_size $(bench_fmt_bytes "$DB_SIZE"), cluster $(bench_fmt_bytes "$CLUSTER_SIZE")"
avail=$(df -B1 --output=avail "$BENCH_WORK" | tail -1)
((avail > 3 * CLUSTER_SIZE)) || bench_log "WARNING: $(bench_fmt_bytes "$avail") free in $BENCH_TMPDIR; the run needs about 4x the cluster"
# After the dataset: a build can overlap with its generation.
pgbackup_build
"${AS_PG[@]}" test -x "$PGBACKUP_BIN" ||
  bench_die "the postgres user cannot run $PGBACKUP_BIN (the restored servers' restore_command): put it where postgres can read it"
export PGPASSWORD=$PG_PASSWORD
RUNS_DIR=$BENCH_WORK/runs
TMP=$BENCH_WORK/tmp
mkdir -p "$RUNS_DIR" "$TMP" "$BENCH_WORK/restore" "$BENCH_WORK/spool"
PNAME=$(basename "$PGBACKUP_BIN")
PNAME=${PNAME:0:15}
PNAME=${PNAME// /_}
PGB_ENV=(env -i PATH="$PATH" HOME="$BENCH_WORK" TMPDIR="$TMP" BACKUP_LOG_FORMAT=json
  AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION"
  AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET"
  BACKUP_DATABASE_URL="$(pg_url "$DB")")

# (d): the same, into a local directory instead of Garage.
PGB_LOCAL_REPO=$BENCH_WORK/pgbackup-repo
PGB_LOCAL_ENV=(env -i PATH="$PATH" HOME="$BENCH_WORK" TMPDIR="$TMP" BACKUP_LOG_FORMAT=json
  BACKUP_LOCAL_DIR="$PGB_LOCAL_REPO" BACKUP_DATABASE_URL="$(pg_url "$DB")")

# ---- helpers ---------------------------------------------------------------------

sql() { pg_psql postgres -c "$1"; }
lsn() { sql "SELECT pg_current_wal_lsn()"; }
lsn_diff() { sql "SELECT pg_wal_lsn_diff('$1', '$2')::bigint"; }
slot_exists() { [[ $(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1'") == 1 ]]; }
slot_active() { [[ $(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND active") == 1 ]]; }
slot_idle() { ! slot_active "$1"; }
slot_drop() {
  slot_exists "$1" || return 0
  bench_wait_until 30 "slot $1 to be released" slot_idle "$1"
  sql "SELECT pg_drop_replication_slot('$1')" >/dev/null
}
slots_drop_all() {
  [[ -n ${PG_PID:-} ]] || return 0
  sql "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active" >/dev/null 2>&1 || true
}
# restored_stop_all: stops the servers of phase 4 still running (a failed round).
restored_stop_all() {
  local d
  for d in "$BENCH_WORK"/restore/*/; do
    [[ -f $d/postmaster.pid ]] || continue
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  done
}

# pgbench_run LOG SECONDS [ARGS...]: pgbench on the benchmark database.
pgbench_run() {
  local log=$1 secs=$2
  shift 2
  "$PG_BIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -T "$secs" "${PGBENCH_ARGS[@]}" "$@" "$DB" >"$log" 2>&1
}
# pgbench_tps LOG: the TPS pgbench reported.
pgbench_tps() { awk '/^tps = / { print $3; exit }' "$1"; }

# receivewal_pid: the daemon's pg_receivewal child, if running.
receivewal_pid() {
  local c n
  for c in $(_bench_children "$PGB_PID"); do
    n=$(cat "/proc/$c/comm" 2>/dev/null || true)
    [[ $n != pg_receivewal ]] || { echo "$c"; return 0; }
  done
}

# stream_start NAME FLUSH: `pgbackup run` streaming WAL with a slot, spool
# and prefix of its own (bench_NAME, spool/NAME, NAME/), no dumps scheduled;
# returns once the slot is streaming.
stream_start() {
  local sess=$1 flush=$2
  mkdir -p "$BENCH_WORK/spool/$sess"
  pgbackup_run_start "$DB" "$BUCKET" "$BENCH_WORK/daemon-$sess.log" BACKUP_WAL_ARCHIVE=true \
    BACKUP_WAL_SLOT="$SLOT_PREFIX$sess" BACKUP_WAL_SPOOL_DIR="$BENCH_WORK/spool/$sess" \
    BACKUP_WAL_FLUSH_SECONDS="$flush" BACKUP_FILE_PREFIX="$sess/" \
    BACKUP_CRON_SCHEDULE="$FAR" BACKUP_BASEBACKUP_CRON_SCHEDULE="$FAR"
  bench_wait_until 60 "the daemon's pg_receivewal on slot $SLOT_PREFIX$sess" slot_active "$SLOT_PREFIX$sess"
}

# stream_stop NAME [KEEP]: stops the daemon; writes the session's memory and
# CPU to $RUNS_DIR/stream.NAME (pg_receivewal's peak: the larger of its
# VmHWM now and RW_HWM, what a caller sampled before); drops the slot,
# removes the spool and (unless KEEP) the stored WAL.
stream_stop() {
  local sess=$1 keep=${2:-} rw rw_hwm=${RW_HWM:-0} rw_cpu=0 h m
  RW_HWM=0
  rw=$(receivewal_pid)
  if [[ -n $rw ]]; then
    h=$(proc_status_kb "$rw" VmHWM)
    ((h <= rw_hwm)) || rw_hwm=$h
    rw_cpu=$(_bench_proc_ticks "$rw" self)
  fi
  m=$(pgbackup_metrics || true)
  {
    echo "daemon_hwm_kb=$(proc_status_kb "$PGB_PID" VmHWM)"
    echo "daemon_rss_kb=$(proc_status_kb "$PGB_PID" VmRSS)"
    echo "daemon_cpu_s=$(bench_calc "$(_bench_proc_ticks "$PGB_PID" self) / $BENCH_CLK_TCK")"
    echo "receivewal_hwm_kb=$rw_hwm"
    echo "receivewal_cpu_s=$(bench_calc "$rw_cpu / $BENCH_CLK_TCK")"
    echo "segments=$(metric_sum backup_wal_archived_segments_total <<<"$m")"
  } >"$RUNS_DIR/stream.$sess"
  pgbackup_run_stop
  echo "exit=$PGB_EXIT" >>"$RUNS_DIR/stream.$sess"
  [[ $PGB_EXIT == 0 ]] || bench_log "WARNING: the daemon ($sess) exited with $PGB_EXIT: $(tail -2 "$BENCH_WORK/daemon-$sess.log")"
  slot_drop "$SLOT_PREFIX$sess"
  rm -rf "$BENCH_WORK/spool/$sess"
  [[ -n $keep ]] || s3 s3 rm --recursive --only-show-errors "s3://$BUCKET/$sess/"
}

# pgbr ARGS...: pgBackRest as the postgres user, with the bench's config.
pgbr() { "${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }
pgbr_setup() {
  cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$PGBR/repo
repo1-retention-full=9999
log-path=$PGBR/log
lock-path=$PGBR/lock
spool-path=$PGBR/spool
log-level-console=warn
log-level-file=off
compress-type=zst
compress-level=1
process-max=2
start-fast=y
archive-timeout=600

[bench]
pg1-path=$PG_DATA
pg1-port=$PG_PORT
pg1-socket-path=$PG_SOCK
EOF
  chmod 644 "$PGBR_CONF"
  pgbr stanza-create >/dev/null || bench_die "pgbackrest stanza-create failed"
  touch "$PGBR_FLAG"
  PGBR_VERSION=$(pgbackrest version | awk '{ print $2 }')
  bench_log "pgBackRest $PGBR_VERSION: stanza bench, repository $PGBR/repo; archiving on"
}
# pgbr_last_size: the repository size of the newest pgBackRest backup.
pgbr_last_size() {
  pgbr info --output=json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][-1]["info"]["repository"]["delta"])'
}

# ---- 1. the recovery point under load -------------------------------------------

# rpo_session FLUSH: streams with BACKUP_WAL_FLUSH_SECONDS=FLUSH while
# pgbench runs RPO_S seconds; samples /metrics every second into
# $RUNS_DIR/rpo.FLUSH/samples ("unix_time stored_at lag_bytes").
rpo_session() {
  local flush=$1 sess=rpo$1 dir=$RUNS_DIR/rpo.$1 l0 l1 pid rw h m now next wait_s
  local -a rate=()
  [[ -z $RPO_RATE ]] || rate=(-R "$RPO_RATE")
  mkdir -p "$dir"
  bench_log "rpo: flush ${flush}s, pgbench ${RPO_S}s ${PGBENCH_ARGS[*]} ${rate[*]}"
  stream_start "$sess" "$flush"
  RW_HWM=0
  # A completed segment gets stored first, so the series has a value.
  sql "SELECT pg_switch_wal()" >/dev/null
  bench_wait_until $((flush + 120)) "the first stored WAL" stored_once
  # The lag gauge is refreshed every 5 s; its value from before the first
  # upload is the server's whole WAL position.
  bench_wait_until 60 "the lag gauge to follow the first upload" lag_small
  l0=$(lsn)
  pgbench_run "$dir/pgbench.log" "$RPO_S" "${rate[@]}" &
  pid=$!
  next=${EPOCHREALTIME%[.,]*}
  while [[ $(_bench_proc_state "$pid") =~ ^[RSD]$ ]]; do
    now=$EPOCHREALTIME
    m=$(pgbackup_metrics 2>/dev/null) || m=
    if [[ -n $m ]]; then
      echo "${now/,/.} $(metric_sum backup_wal_last_archived_timestamp_seconds <<<"$m") $(metric_sum backup_wal_archive_lag_bytes <<<"$m")" >>"$dir/samples"
    else
      echo "${now/,/.} nan nan" >>"$dir/samples"
    fi
    rw=$(receivewal_pid)
    if [[ -n $rw ]]; then
      h=$(proc_status_kb "$rw" VmHWM)
      ((h <= RW_HWM)) || RW_HWM=$h
      echo "$rw" >>"$dir/receivewal_pids"
    fi
    # On the next whole second; after a slow scrape, from now.
    next=$((next + 1))
    wait_s=$(bench_calc "$next - ${EPOCHREALTIME/,/.}")
    if awk "BEGIN { exit !($wait_s > 0) }"; then _bench_nap "$wait_s"; else next=${EPOCHREALTIME%[.,]*}; fi
  done
  wait "$pid" || { tail -5 "$dir/pgbench.log" >&2; bench_die "pgbench failed (rpo, flush $flush)"; }
  l1=$(lsn)
  stream_stop "$sess"
  awk -v tps="$(pgbench_tps "$dir/pgbench.log")" -v wal="$(lsn_diff "$l1" "$l0")" -v secs="$RPO_S" \
    -v pids="$(sort -u "$dir/receivewal_pids" 2>/dev/null | wc -l)" '
    $2 == "nan" || $2 + 0 == 0 { missing++; next }
    { age[++n] = $1 - $2; lag[n] = $3 }
    function pct(a, k, p,   i, j, t) {
      for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      i = int(p * k + 0.999999); if (i < 1) i = 1; return a[i] }
    END {
      printf "samples=%d\nmissing=%d\n", n, missing + 0
      if (n) { printf "age_p50=%.1f\nage_p95=%.1f\nage_max=%.1f\n", pct(age, n, 0.5), pct(age, n, 0.95), pct(age, n, 1)
               printf "lag_p95=%.0f\nlag_max=%.0f\n", pct(lag, n, 0.95), pct(lag, n, 1) }
      printf "tps=%s\nwal_bytes=%s\nwal_rate=%.0f\nreceivewal_pids=%d\n", tps, wal, wal / secs, pids
    }' "$dir/samples" >"$dir/summary"
  cat "$RUNS_DIR/stream.$sess" >>"$dir/summary"
  bench_log "rpo: flush ${flush}s: p95 age $(bench_get "$dir/summary" age_p95)s, max $(bench_get "$dir/summary" age_max)s, $(bench_get "$dir/summary" tps) tps"
}
stored_once() { [[ $(pgbackup_metrics | metric_sum backup_wal_last_archived_timestamp_seconds) != 0 ]]; }
# walsender_ticks: CPU ticks used so far by the walsenders of active slots.
walsender_ticks() {
  local t=0 p
  for p in $(sql "SELECT active_pid FROM pg_replication_slots WHERE active"); do
    t=$((t + $(_bench_proc_ticks "$p" self)))
  done
  echo "$t"
}
lag_small() { awk -v l="$(pgbackup_metrics | metric_sum backup_wal_archive_lag_bytes)" 'BEGIN { exit !(l < 16777216) }'; }

# ---- 2. the load streaming puts on the server -------------------------------------

# rx_start [SPOOL] / rx_stop: pg_receivewal alone on a slot into a spool
# (default on disk), as the daemon runs it (same flags), with nothing
# reading the spool: the load of receiving WAL, without compression and
# uploads.
rx_start() {
  RX_SPOOL=${1:-$BENCH_WORK/spool/rx}
  mkdir -p "$RX_SPOOL"
  "$PG_BIN/pg_receivewal" -h 127.0.0.1 -p "$PG_PORT" -U postgres --no-password -S "${SLOT_PREFIX}rx" \
    --create-slot --if-not-exists >/dev/null 2>&1 || bench_die "pg_receivewal --create-slot failed"
  nice -n 10 "$PG_BIN/pg_receivewal" -h 127.0.0.1 -p "$PG_PORT" -U postgres --no-password -S "${SLOT_PREFIX}rx" \
    -D "$RX_SPOOL" --no-loop --status-interval=10 >"$BENCH_WORK/rx.log" 2>&1 &
  RX_PID=$!
  bench_wait_until 60 "pg_receivewal on slot ${SLOT_PREFIX}rx" slot_active "${SLOT_PREFIX}rx"
}
rx_stop() {
  echo "receivewal_hwm_kb=$(proc_status_kb "$RX_PID" VmHWM)"
  echo "receivewal_cpu_s=$(bench_calc "$(_bench_proc_ticks "$RX_PID" self) / $BENCH_CLK_TCK")"
  kill -TERM "$RX_PID" 2>/dev/null || true
  wait "$RX_PID" 2>/dev/null || true
  slot_drop "${SLOT_PREFIX}rx"
  rm -rf "$RX_SPOOL"
}

# load_run ROUND off|on|rx: one pgbench run, with nothing streaming, with
# the daemon streaming, or with pg_receivewal alone.
load_run() {
  local r=$1 v=$2 dir=$RUNS_DIR/load.$2.$1 l0 l1 s0 s1 g0 g1 p0 p1 w0 w1
  mkdir -p "$dir"
  sql "CHECKPOINT" >/dev/null
  case $v in
    on) stream_start "load$r" 60 ;;
    rx) rx_start ;;
    rxm) rx_start "/dev/shm/pgbackup-bench-rx.$$" ;;
  esac
  l0=$(lsn) s0=$(_bench_sys_ticks) g0=$(garage_cpu_ticks) p0=$(pg_cpu_ticks) w0=$(walsender_ticks)
  pgbench_run "$dir/pgbench.log" "$LOAD_S" || { tail -5 "$dir/pgbench.log" >&2; bench_die "pgbench failed (load, round $r, $v)"; }
  l1=$(lsn) s1=$(_bench_sys_ticks) g1=$(garage_cpu_ticks) p1=$(pg_cpu_ticks) w1=$(walsender_ticks)
  case $v in
    on) stream_stop "load$r" ;;
    rx | rxm) rx_stop >"$dir/rx" ;;
  esac
  {
    echo "tps=$(pgbench_tps "$dir/pgbench.log")"
    echo "wal_bytes=$(lsn_diff "$l1" "$l0")"
    echo "busy_pct=$(bench_calc "100 * (${s1% *} - ${s0% *}) / (${s1#* } - ${s0#* })")"
    echo "garage_cpu_s=$(bench_calc "($g1 - $g0) / $BENCH_CLK_TCK")"
    echo "pg_cpu_s=$(bench_calc "($p1 - $p0) / $BENCH_CLK_TCK")"
    echo "walsender_cpu_s=$(bench_calc "($w1 - $w0) / $BENCH_CLK_TCK")"
    [[ $v != on ]] || cat "$RUNS_DIR/stream.load$r"
    [[ $v != rx* ]] || cat "$dir/rx"
  } >"$dir/summary"
  bench_log "load round $r ($v): $(bench_get "$dir/summary" tps) tps"
}

# ---- 3. base backups ------------------------------------------------------------

# base_run VARIANT ROUND: writes $RUNS_DIR/base.V.R/summary (wall_s,
# stored_bytes, rss_kb, rss_what, CPU of the client, PostgreSQL, Garage).
base_run() {
  local v=$1 r=$2 dir=$RUNS_DIR/base.$1.$2 stored=0 rss what big
  # One changed row of a random length: no round's stream is byte for byte
  # the last one's, which Garage would partly deduplicate. Untimed.
  pg_psql "$DB" -c "UPDATE bench_events SET token = md5(random()::text) || repeat('x', (random() * 1000)::int) WHERE id = 1" >/dev/null
  case $v in
    p)
      bench_measure "$dir" -- "${PGB_ENV[@]}" BACKUP_FILE_PREFIX="base$r/" BACKUP_WAL_SLOT="${SLOT_PREFIX}base" \
        "$PGBACKUP_BIN" basebackup || bench_fail_run "$dir" "(p) pgbackup basebackup"
      stored=$(grep -o '"stored_bytes":[0-9]*' "$dir/stderr" | tail -1 | cut -d: -f2)
      [[ $r != 1 ]] || base_check "base$r/"
      slot_drop "${SLOT_PREFIX}base"
      s3 s3 rm --recursive --only-show-errors "s3://$BUCKET/base$r/"
      rss=$(bench_get "$dir/result" "proc.$PNAME.hwm_kb") what=pgbackup
      ;;
    d)
      rm -rf "$PGB_LOCAL_REPO"
      mkdir -p "$PGB_LOCAL_REPO"
      bench_measure "$dir" -- "${PGB_LOCAL_ENV[@]}" BACKUP_WAL_SLOT="${SLOT_PREFIX}base" \
        "$PGBACKUP_BIN" basebackup || bench_fail_run "$dir" "(d) pgbackup basebackup (local directory)"
      stored=$(grep -o '"stored_bytes":[0-9]*' "$dir/stderr" | tail -1 | cut -d: -f2)
      slot_drop "${SLOT_PREFIX}base"
      rm -rf "$PGB_LOCAL_REPO"
      rss=$(bench_get "$dir/result" "proc.$PNAME.hwm_kb") what=pgbackup
      ;;
    r)
      bench_measure "$dir" -- "${AS_PG[@]}" pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup ||
        bench_fail_run "$dir" "(r) pgbackrest backup"
      stored=$(pgbr_last_size)
      # Keep only the newest full backup (and its WAL): disk space. Untimed.
      pgbr expire --repo1-retention-full=1 >/dev/null
      ;;
    z)
      bench_measure "$dir" -- bash -c 'set -o pipefail; "$1/pg_basebackup" -h 127.0.0.1 -p "$2" -U postgres --no-password -Ft -X none -c fast -D - |
        zstd -1 -T2 -q | wc -c >"$3"' sh "$PG_BIN" "$PG_PORT" "$dir/bytes" || bench_fail_run "$dir" "(z) pg_basebackup | zstd"
      stored=$(cat "$dir/bytes")
      ;;
    u)
      bench_measure "$dir" -- sh -c 'exec "$@" >/dev/null' sh "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" \
        -U postgres --no-password -Ft -X none -c fast -D - || bench_fail_run "$dir" "(u) pg_basebackup"
      ;;
  esac
  if [[ -z ${rss:-} ]]; then
    big=$(bench_largest_process "$dir")
    rss=${big%% *} what=${big#* }
  fi
  {
    bench_summarize_phases "$dir"
    echo "stored_bytes=${stored:-0}"
    echo "rss_kb=$rss"
    echo "rss_what=$what"
  } >"$dir/summary"
  bench_log "base round $r ($v): $(bench_get "$dir/summary" wall_s)s, $(bench_fmt_bytes "${stored:-0}")"
}

# base_check PREFIX: the stored base backup's sha256 metadata matches its
# bytes, and they decompress into a tar with backup_manifest and pg_control.
base_check() {
  local key meta got
  key=$(s3_keys "$BUCKET" "${1}base/" | head -1)
  [[ -n $key ]] || bench_die "(p) no base backup under ${1}base/"
  meta=$(s3 s3api head-object --bucket "$BUCKET" --key "$key" --query Metadata.sha256 --output text)
  s3 s3 cp --only-show-errors "s3://$BUCKET/$key" "$TMP/base.tar.zst"
  got=$(sha256sum "$TMP/base.tar.zst" | cut -d' ' -f1)
  zstd -dcq "$TMP/base.tar.zst" | tar -t >"$TMP/base.toc"
  rm -f "$TMP/base.tar.zst"
  [[ $meta == "$got" ]] || bench_die "(p) $key: sha256 metadata $meta, bytes $got"
  if ! grep -qx backup_manifest "$TMP/base.toc" || ! grep -qx global/pg_control "$TMP/base.toc"; then
    bench_die "(p) $key is not a base backup: $(head -3 "$TMP/base.toc")"
  fi
  bench_log "(p) verified $key: sha256 matches, $(wc -l <"$TMP/base.toc") files in the tar"
}

# ---- 4. restores ------------------------------------------------------------------

# restore_prepare: a base backup of each kind and a logical dump, with
# RESTORE_LOAD_S of pgbench in between; a marker row both archives hold.
restore_prepare() {
  local l0 seg
  bench_log "restore: base backups, then ${RESTORE_LOAD_S}s of pgbench while streaming"
  local pgbr_on=
  ! has b "${RESTORE_VARIANTS[@]}" || pgbr_on=1
  [[ -z $pgbr_on || -e $PGBR_FLAG ]] || pgbr_setup
  stream_start pitr 60
  l0=$(lsn)
  bench_measure "$RUNS_DIR/prep.base" -- "${PGB_ENV[@]}" BACKUP_FILE_PREFIX=pitr/ BACKUP_WAL_SLOT="${SLOT_PREFIX}pitr" \
    "$PGBACKUP_BIN" basebackup || bench_fail_run "$RUNS_DIR/prep.base" "pgbackup basebackup (restore phase)"
  PREP_BASE=$(awk 'NR == 1 { print $1 }' "$RUNS_DIR/prep.base/stdout")
  [[ -z $pgbr_on ]] || pgbr --type=full backup || bench_die "pgbackrest backup (restore phase) failed"
  pgbench_run "$RUNS_DIR/prep.pgbench.log" "$RESTORE_LOAD_S" ||
    { tail -5 "$RUNS_DIR/prep.pgbench.log" >&2; bench_die "pgbench failed (restore phase)"; }
  MARK=$(bench_rand_hex 8)
  pg_psql "$DB" -c "CREATE TABLE IF NOT EXISTS pitr_marker (v text)" -c "INSERT INTO pitr_marker VALUES ('$MARK')"
  seg=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
  REPLAY_BYTES=$(lsn_diff "$(lsn)" "$l0")
  bench_wait_until 600 "pgbackup to store $seg" s3_has "pitr/wal/$seg.zst"
  [[ -z $pgbr_on ]] || bench_wait_until 600 "pgBackRest to archive $seg" pgbr_has "$seg"
  stream_stop pitr keep
  rm -f "$PGBR_FLAG"
  bench_log "restore: both archives hold $seg (marker $MARK); $(bench_fmt_bytes "$REPLAY_BYTES") of WAL since the base backups"
  bench_measure "$RUNS_DIR/prep.dump" -- "${PGB_ENV[@]}" BACKUP_FILE_PREFIX=logical/ "$PGBACKUP_BIN" backup ||
    bench_fail_run "$RUNS_DIR/prep.dump" "pgbackup backup (restore phase)"
  DUMP_KEY=$(s3_keys "$BUCKET" logical/ | grep -v '\.manifest\.json$' | head -1)
  DUMP_STORED=$(s3_size "$BUCKET" "$DUMP_KEY")
  PGBR_STORED=0
  [[ -z $pgbr_on ]] || PGBR_STORED=$(pgbr_last_size)
  SRC_ACCOUNTS=$(pg_psql "$DB" -c "SELECT count(*) FROM pgbench_accounts")
}
s3_has() { s3_keys "$BUCKET" "$1" | grep -qxF "$1"; }
pgbr_has() { compgen -G "$PGBR/repo/archive/bench/*/*/$1-*" >/dev/null; }
# marker_ok PORT DB: the marker row is there and the server is no standby.
marker_ok() {
  [[ $("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$1" -U postgres -d "$2" \
    -c "SELECT count(*) FILTER (WHERE v = '$MARK') || ' ' || pg_is_in_recovery() FROM pitr_marker") == "1 false" ]]
}

# A server started by a measured command outlives it. bench_measure waits
# for the command's output pipes to close, and the shell's own descriptors
# (those pipes among them) are not close-on-exec: they would pass through
# pgbackup or pg_ctl to the postmaster. So (t) and (b) run through this,
# which closes every descriptor above 2 and execs the command.
CLOSEFDS=(bash -c 'for f in /proc/$$/fd/*; do f=${f##*/}; ((f > 2)) && eval "exec $f>&-"; done; exec "$@"' closefds)

# replay_prepare DIR: the untimed part of (w). pgbackup unpacks the base
# backup, wal-fetch puts every stored segment into pg_wal, and the
# restore_command finds nothing, so recovery reads pg_wal alone: replay
# without any fetching, the floor for (t).
replay_prepare() {
  local t=$1 name
  "${PGB_ENV[@]}" BACKUP_FILE_PREFIX=pitr/ PG_BIN_DIR="$PG_BIN" "$PGBACKUP_BIN" restore --to-time latest \
    --target-dir "$t" >"$t.prepare.log" 2>&1 || bench_die "(w): unpacking failed: $(tail -1 "$t.prepare.log")"
  for name in $(s3_keys "$BUCKET" pitr/wal/ | sed -n 's|^pitr/wal/\([0-9A-F]\{24\}\).*|\1|p' | sort -u); do
    "${PGB_ENV[@]}" BACKUP_FILE_PREFIX=pitr/ BACKUP_WAL_PREFETCH_SEGMENTS=0 "$PGBACKUP_BIN" wal-fetch "$name" \
      "$t/pg_wal/$name" >>"$t.prepare.log" 2>&1 || bench_die "(w): wal-fetch $name failed"
  done
  echo "restore_command = 'false'" >>"$t/postgresql.auto.conf"
  [[ $(id -u) -ne 0 ]] || chown -R postgres: "$t"
  rm -f "$t.prepare.log"
  sync
}

# restore_run VARIANT ROUND
restore_run() {
  local v=$1 r=$2 dir=$RUNS_DIR/restore.$1.$2 target port line
  target=$BENCH_WORK/restore/$v.$r
  port=$(bench_free_port)
  if [[ $v != l ]]; then
    mkdir -m 700 "$target"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$target"
  fi
  case $v in
    t | s) bench_measure "$dir" -- "${CLOSEFDS[@]}" "${PGB_ENV[@]}" BACKUP_FILE_PREFIX=pitr/ PG_BIN_DIR="$PG_BIN" \
      BACKUP_WAL_PREFETCH_SEGMENTS="$([[ $v == t ]] && echo 8 || echo 0)" "$PGBACKUP_BIN" restore \
      --to-time latest --target-dir "$target" --start --port "$port" ;;
    b) bench_measure "$dir" -- "${CLOSEFDS[@]}" "${AS_PG[@]}" bash -c 'pgbackrest --config="$1" --stanza=bench --pg1-path="$2" restore &&
        "$3/pg_ctl" -D "$2" -l "$2/recovery.log" -o "-p $4" -w -t 3600 start >/dev/null &&
        while [ -e "$2/recovery.signal" ]; do [ -e "$2/postmaster.pid" ] || exit 1; sleep 0.2; done' \
      sh "$PGBR_CONF" "$target" "$PG_BIN" "$port" ;;
    w)
      replay_prepare "$target"
      bench_measure "$dir" -- "${CLOSEFDS[@]}" "${AS_PG[@]}" bash -c '"$1/pg_ctl" -D "$2" -l "$2/recovery.log" -o "-p $3" -w -t 3600 start >/dev/null &&
        while [ -e "$2/recovery.signal" ]; do [ -e "$2/postmaster.pid" ] || exit 1; sleep 0.2; done' \
        sh "$PG_BIN" "$target" "$port"
      ;;
    l) bench_measure "$dir" -- "${PGB_ENV[@]}" PGPASSWORD="$PG_PASSWORD" BACKUP_FILE_PREFIX=logical/ "$PGBACKUP_BIN" restore latest \
      --target-url "$(pg_url_nopw "restore_$r")" --jobs 2 ;;
  esac || {
    [[ ! -f $target/recovery.log ]] || tail -5 "$target/recovery.log" >&2
    bench_fail_run "$dir" "($v) restore, round $r"
  }
  if [[ $v == l ]]; then
    marker_ok "$PG_PORT" "restore_$r" || bench_die "(l) round $r: the restored database lacks the marker row"
    [[ $(pg_psql "restore_$r" -c "SELECT count(*) FROM pgbench_accounts") == "$SRC_ACCOUNTS" ]] ||
      bench_die "(l) round $r: pgbench_accounts differs"
    sql "DROP DATABASE restore_$r" >/dev/null
    sql "CHECKPOINT" >/dev/null
  else
    marker_ok "$port" "$DB" || bench_die "($v) round $r: the restored cluster lacks the marker row, or is still recovering"
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$target" -m fast -w stop >/dev/null
    rm -rf "$target" "$target.wal-fetch.env"
  fi
  if [[ $v == [ts] ]]; then
    # "unpacked ... in 12.3s; ..." and "recovery ended in 4.5s; ..." on stdout.
    line=$(grep -o '^unpacked .* in [0-9.]*s;' "$dir/stdout" | grep -o '[0-9.]*s;$' | tr -d 's;' || true)
    echo "unpack_s=${line:-nan}" >>"$dir/result"
    line=$(grep -o '^recovery ended in [0-9.]*s' "$dir/stdout" | grep -o '[0-9.]*s$' | tr -d 's' || true)
    echo "recover_s=${line:-nan}" >>"$dir/result"
  fi
  sync
  bench_log "restore round $r ($v): $(bench_get "$dir/result" wall_s)s, marker found"
}

# ---- the phases --------------------------------------------------------------------

if has_phase rpo; then
  for f in "${FLUSHES[@]}"; do rpo_session "$f"; done
fi
if has_phase load; then
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${LOAD_VARIANTS[@]}"; do load_run "$r" "$v"; done
  done
fi
if has_phase base; then
  ! has r "${VARIANTS[@]}" || pgbr_setup
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${VARIANTS[@]}"; do base_run "$v" "$r"; done
  done
fi
if has_phase restore; then
  restore_prepare
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${RESTORE_VARIANTS[@]}"; do restore_run "$v" "$r"; done
  done
fi
LEFT_SLOTS=$(sql "SELECT count(*) FROM pg_replication_slots")

# ---- report ------------------------------------------------------------------------

# vals FILE-PATTERN KEY: KEY over the rounds (the pattern's % is the round).
vals() {
  local r
  for ((r = 1; r <= RUNS; r++)); do bench_get "$RUNS_DIR/${1//%/$r}" "$2"; done
}
# median_of: the median of the numbers on stdin.
median_of() {
  local -a v
  mapfile -t v
  bench_median "${v[@]}"
}
med() { vals "$1" "$2" | median_of; }
spread() { vals "$1" "$2" | sort -g | awk -v f="${3:-%.1f}" 'NR == 1 { lo = $1 } { hi = $1 } END { printf f "–" f, lo, hi }'; }
fmt() { awk -v x="$2" -v f="$1" 'BEGIN { printf f, x }'; }
mib() { fmt "%.1f MiB" "$(bench_calc "$1 / 1024")"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
# ratios A B: the per-round ratios A / B (file patterns, key wall_s or tps).
ratios() {
  local r
  for ((r = 1; r <= RUNS; r++)); do
    bench_calc "$(bench_get "$RUNS_DIR/${1//%/$r}" "$3") / $(bench_get "$RUNS_DIR/${2//%/$r}" "$3")"
  done
}
rspread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f–%.2f", lo, hi }'; }

if [[ -n ${PGBACKUP_REV:-} ]]; then
  PGB_COMMIT=$PGBACKUP_REV
else
  PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"
fi
BUILD="release build"
[[ $PGBACKUP_BIN != */debug/* ]] || BUILD="DEBUG BUILD: the figures mean nothing"
STREAMS=()
for f in "$RUNS_DIR"/stream.*; do [[ -e $f ]] && STREAMS+=("$f"); done

label() {
  case $1 in
    p) echo '(p) `pgbackup basebackup` → Garage (zstd 1, two threads)' ;;
    d) echo '(d) `pgbackup basebackup` → local directory (zstd 1, two threads)' ;;
    r) echo '(r) pgBackRest full backup (zst 1, process-max 2), local repository' ;;
    z) echo '(z) `pg_basebackup -Ft -X none -c fast -D - | zstd -1 -T2`' ;;
    u) echo '(u) `pg_basebackup -Ft -X none -c fast -D - > /dev/null` (reference)' ;;
    t) echo '(t) `pgbackup restore --to-time latest --start` (read-ahead of 8 segments, the default)' ;;
    s) echo '(s) the same, one segment per request (`BACKUP_WAL_PREFETCH_SEGMENTS=0`)' ;;
    b) echo '(b) `pgbackrest restore`, start, until recovery has ended' ;;
    l) echo '(l) `pgbackup restore latest --jobs 2` (logical dump of the database)' ;;
    w) echo '(w) replay alone: start and recovery with the WAL already in pg_wal (untimed: unpacking, fetching)' ;;
  esac
}

targets() {
  local f s ratio faster fv m
  echo "| target | measured | |"
  echo "|---|---|---|"
  if has_phase rpo; then
    for f in "${FLUSHES[@]}"; do
      s=$RUNS_DIR/rpo.$f/summary
      echo "| recovery point: p95 age of the newest stored WAL ≤ $f + 5 s (flush $f s) | $(bench_get "$s" age_p95 nan) s (max $(bench_get "$s" age_max nan) s; $(bench_get "$s" samples) samples) | $(verdict "$(bench_get "$s" age_p95 1e9) <= $f + 5 && $(bench_get "$s" missing) == 0") |"
    done
  fi
  if has_phase load; then
    ratio=$(ratios load.on.%/summary load.off.%/summary tps | median_of)
    echo "| TPS while streaming ≥ 0.95 × without (median of the per-round ratios) | $(fmt %.3f "$ratio") × (rounds $(ratios load.on.%/summary load.off.%/summary tps | rspread); medians $(fmt %.0f "$(med load.on.%/summary tps)") vs $(fmt %.0f "$(med load.off.%/summary tps)") tps) | $(verdict "$ratio >= 0.95") |"
  fi
  if has_phase base; then
    faster=
    for fv in r z; do
      has "$fv" "${VARIANTS[@]}" || continue
      if [[ -z $faster ]] || awk "BEGIN { exit !($(med "base.$fv.%/summary" wall_s) < $(med "base.$faster.%/summary" wall_s)) }"; then faster=$fv; fi
    done
    for pv in d p; do
      has "$pv" "${VARIANTS[@]}" && [[ -n $faster ]] || continue
      ratio=$(bench_calc "$(med "base.$pv.%/summary" wall_s) / $(med "base.$faster.%/summary" wall_s)")
      echo "| base backup: ($pv) ≤ 1.2 × the faster of (r), (z) | $(fmt %.2f "$ratio") × ($faster) ($(fmt %.1f "$(med "base.$pv.%/summary" wall_s)") s vs $(fmt %.1f "$(med "base.$faster.%/summary" wall_s)") s) | $(verdict "$ratio <= 1.2") |"
    done
    m=$(for pv in p d; do has "$pv" "${VARIANTS[@]}" && vals "base.$pv.%/summary" rss_kb; done | sort -g | tail -1)
    [[ -z $m ]] || echo "| base backup: pgbackup's peak RSS ≤ 64 MiB | $(mib "$m") (max over rounds, VmHWM) | $(verdict "$m <= 65536") |"
  fi
  if has_phase restore; then
    ratio=$(bench_calc "$(med restore.t.%/result wall_s) / $(med restore.l.%/result wall_s)")
    echo "| point-in-time restore (t) ≤ 0.5 × logical restore (l) | $(fmt %.2f "$ratio") × ($(fmt %.1f "$(med restore.t.%/result wall_s)") s vs $(fmt %.1f "$(med restore.l.%/result wall_s)") s) | $(verdict "$ratio <= 0.5") |"
  fi
  if ((${#STREAMS[@]})); then
    m=$(for f in "${STREAMS[@]}"; do bench_get "$f" daemon_hwm_kb; done | sort -g | tail -1)
    echo "| streaming: the daemon's peak RSS ≤ 64 MiB | $(mib "$m") (max over ${#STREAMS[@]} sessions; pg_receivewal, separately: $(mib "$(for f in "${STREAMS[@]}"; do bench_get "$f" receivewal_hwm_kb; done | sort -g | tail -1)")) | $(verdict "$m <= 65536") |"
  fi
}

report() {
  local f s v r
  echo "# Point-in-time recovery benchmark"
  echo
  echo "- date: $STARTED; phases: ${PHASES[*]}; $RUNS interleaved round(s) in each of load, base and restore that ran; medians, spread min–max"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). The machine is shared with other users' builds and noisy:" \
    "compare the variants of one run (they run interleaved), not absolute times across runs"
  echo "- PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (fsync off, synchronous_commit off, full_page_writes on);" \
    "pgbackup $("$PGBACKUP_BIN" --version | awk '{print $2}') ($PGB_COMMIT, $BUILD);" \
    "${PGBR_VERSION:+pgBackRest $PGBR_VERSION; }Garage (single node, same machine, compression off)"
  echo "- dataset (BENCH_SCALE=$SCALE): pg_database_size $(bench_fmt_bytes "$DB_SIZE"), cluster $(bench_fmt_bytes "$CLUSTER_SIZE"), generated in $GEN_S s;" \
    "pgbench ${PGBENCH_ARGS[*]}"
  echo
  targets
  if has_phase rpo; then
    echo
    echo "## 1. Recovery point under load"
    echo
    echo "pgbench ${PGBENCH_ARGS[*]}${RPO_RATE:+ -R $RPO_RATE} for $RPO_S s per flush interval, the daemon streaming;" \
      "every second, the age of the newest stored WAL (now − \`backup_wal_last_archived_timestamp_seconds\`)." \
      "That gauge says when WAL was last stored, not how recent the stored WAL is: an archiver that falls behind" \
      "still stores something every few seconds. The cross-check is \`backup_wal_archive_lag_bytes\` (the server's" \
      "position minus the end of the stored WAL, refreshed by the daemon every 5 s), also given as seconds of WAL at" \
      "the run's average rate."
    echo
    echo "| BACKUP_WAL_FLUSH_SECONDS | tps | WAL written | age p50 | age p95 | age max | lag p95 (≈ s of WAL) | segments stored | samples (failed scrapes) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for f in "${FLUSHES[@]}"; do
      s=$RUNS_DIR/rpo.$f/summary
      echo "| $f | $(fmt %.0f "$(bench_get "$s" tps)") | $(bench_fmt_bytes "$(bench_get "$s" wal_bytes)") ($(bench_fmt_bytes "$(bench_get "$s" wal_rate)")/s) |" \
        "$(bench_get "$s" age_p50 nan) s | $(bench_get "$s" age_p95 nan) s | $(bench_get "$s" age_max nan) s |" \
        "$(bench_fmt_bytes "$(bench_get "$s" lag_p95)") ($(fmt %.1f "$(bench_calc "$(bench_get "$s" lag_p95) / ($(bench_get "$s" wal_rate) + 1)")") s) |" \
        "$(bench_get "$s" segments) | $(bench_get "$s" samples) ($(bench_get "$s" missing)) |"
    done
  fi
  if has_phase load; then
    echo
    echo "## 2. Load on the server"
    echo
    echo "\`pgbench -T $LOAD_S ${PGBENCH_ARGS[*]}\`, interleaved rounds of (off) nothing streaming, (on) the daemon streaming (flush 60 s)," \
      "(rx) \`pg_receivewal\` alone on a slot into a spool on disk, with the daemon's flags and priority and nothing reading the spool," \
      "(rxm) the same into a spool in memory (/dev/shm). A CHECKPOINT before each run."
    echo
    echo "| | tps, median (min–max) | × off | WAL per run | PostgreSQL CPU s (walsender) | daemon CPU s | pg_receivewal CPU s | Garage CPU s | machine busy |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for v in "${LOAD_VARIANTS[@]}"; do
      s=load.$v.%/summary
      echo "| $v | $(fmt %.0f "$(med "$s" tps)") ($(spread "$s" tps %.0f)) | $(fmt %.3f "$(ratios "$s" load.off.%/summary tps | median_of)") | $(bench_fmt_bytes "$(med "$s" wal_bytes)") |" \
        "$(fmt %.1f "$(med "$s" pg_cpu_s)") ($(fmt %.1f "$(med "$s" walsender_cpu_s)")) |" \
        "$([[ $v == on ]] && fmt %.1f "$(med "$s" daemon_cpu_s)" || echo —) | $([[ $v != off ]] && fmt %.1f "$(med "$s" receivewal_cpu_s)" || echo —) |" \
        "$(fmt %.1f "$(med "$s" garage_cpu_s)") | $(fmt %.0f "$(med "$s" busy_pct)") % |"
    done
    echo
    for v in "${LOAD_VARIANTS[@]}"; do
      [[ $v != off ]] || continue
      echo "Per round, $v / off: $(ratios "load.$v.%/summary" load.off.%/summary tps | awk '{ printf "%s%.3f", (NR > 1 ? ", " : ""), $1 }')."
    done
  fi
  if has_phase base; then
    echo
    echo "## 3. Base backup of the whole cluster"
    echo
    echo "| variant | wall, median (min–max) | × the faster of (r), (z) | stored | peak RSS | client CPU s | postgres CPU s | Garage CPU s |"
    echo "|---|---|---|---|---|---|---|---|"
    local best='' w
    for v in r z; do
      has "$v" "${VARIANTS[@]}" || continue
      w=$(med "base.$v.%/summary" wall_s)
      if [[ -z $best ]] || awk "BEGIN { exit !($w < $best) }"; then best=$w; fi
    done
    for v in "${VARIANTS[@]}"; do
      s=base.$v.%/summary
      echo "| $(label "$v") | $(fmt %.1f "$(med "$s" wall_s)") s ($(spread "$s" wall_s)) | $([[ -n $best ]] && fmt %.2f "$(bench_calc "$(med "$s" wall_s) / $best")" || echo —) |" \
        "$([[ $v == u ]] && echo — || bench_fmt_bytes "$(med "$s" stored_bytes)") | $(mib "$(vals "$s" rss_kb | sort -g | tail -1)") ($(bench_get "$RUNS_DIR/base.$v.1/summary" rss_what)) |" \
        "$(fmt %.1f "$(med "$s" client_cpu_s)") | $(fmt %.1f "$(med "$s" pg_cpu_s)") | $(fmt %.1f "$(med "$s" garage_cpu_s)") |"
    done
    echo
    echo "All rounds (wall s, machine busy):"
    echo
    echo "| round | $(for v in "${VARIANTS[@]}"; do printf '(%s) | ' "$v"; done)"
    echo "|---|$(for v in "${VARIANTS[@]}"; do printf -- '---|'; done)"
    for ((r = 1; r <= RUNS; r++)); do
      echo "| $r | $(for v in "${VARIANTS[@]}"; do s=$RUNS_DIR/base.$v.$r/summary; printf '%.1f (%.0f %%) | ' "$(bench_get "$s" wall_s)" "$(bench_calc "100 * $(bench_get "$s" sys_busy_s) / $(bench_get "$s" sys_total_s)")"; done)"
    done
  fi
  if has_phase restore; then
    echo
    echo "## 4. Restore to a point in time"
    echo
    echo "Base backups: pgbackup \`$PREP_BASE\` ($(bench_fmt_bytes "$(grep -o '"stored_bytes":[0-9]*' "$RUNS_DIR/prep.base/stderr" | tail -1 | cut -d: -f2)")), pgBackRest $(bench_fmt_bytes "$PGBR_STORED");" \
      "then $RESTORE_LOAD_S s of pgbench: $(bench_fmt_bytes "$REPLAY_BYTES") of WAL written after them, to replay."
    echo "Logical dump for (l): \`$DUMP_KEY\`, $(bench_fmt_bytes "$DUMP_STORED"), taken after the WAL switch (the same data)."
    echo
    echo "| variant | wall, median (min–max) | × (l) | × (b) | client CPU s | peak RSS |"
    echo "|---|---|---|---|---|---|"
    for v in "${RESTORE_VARIANTS[@]}"; do
      s=restore.$v.%/result
      local big
      big=$(bench_largest_process "$RUNS_DIR/restore.$v.1")
      echo "| $(label "$v") | $(fmt %.1f "$(med "$s" wall_s)") s ($(spread "$s" wall_s)) | $(fmt %.2f "$(bench_calc "$(med "$s" wall_s) / $(med restore.l.%/result wall_s)")") |" \
        "$(has b "${RESTORE_VARIANTS[@]}" && fmt %.2f "$(bench_calc "$(med "$s" wall_s) / $(med restore.b.%/result wall_s)")" || echo —) |" \
        "$(fmt %.1f "$(for ((r = 1; r <= RUNS; r++)); do bench_calc "$(bench_get "$RUNS_DIR/restore.$v.$r/result" time_user_s) + $(bench_get "$RUNS_DIR/restore.$v.$r/result" time_sys_s)"; done | median_of)") |" \
        "$(mib "${big%% *}") (${big#* }, round 1) |"
    done
    echo
    for v in t s; do
      has "$v" "${RESTORE_VARIANTS[@]}" || continue
      echo "($v) split, as pgbackup reports it: unpacking $(fmt %.1f "$(med "restore.$v.%/result" unpack_s)") s, then start and recovery $(fmt %.1f "$(med "restore.$v.%/result" recover_s)") s (medians)."
    done
    for v in s b; do
      has "$v" "${RESTORE_VARIANTS[@]}" || continue
      echo "Per round, (t) / ($v): $(ratios restore.t.%/result "restore.$v.%/result" wall_s | awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $1 }')."
    done
    echo "Per round, (t) / (l): $(ratios restore.t.%/result restore.l.%/result wall_s | awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $1 }')."
  fi
  if ((${#STREAMS[@]})); then
    echo
    echo "## 5. Memory while streaming"
    echo
    echo "| session | daemon peak RSS (VmHWM) | daemon RSS at the end | pg_receivewal peak RSS | daemon CPU s | segments stored | exit |"
    echo "|---|---|---|---|---|---|---|"
    for f in "${STREAMS[@]}"; do
      echo "| ${f##*/stream.} | $(mib "$(bench_get "$f" daemon_hwm_kb)") | $(mib "$(bench_get "$f" daemon_rss_kb)") | $(mib "$(bench_get "$f" receivewal_hwm_kb)") |" \
        "$(fmt %.1f "$(bench_get "$f" daemon_cpu_s)") | $(bench_get "$f" segments) | $(bench_get "$f" exit) |"
    done
  fi
  echo
  echo "How it is measured: wall time of the whole command; peak RSS is VmHWM from /proc/<pid>/status (sampled" \
    "every 0.1 s in phases 3 and 4, read at the end of each streaming session for the daemon and every second" \
    "for pg_receivewal in phase 1). pgbackup and \`pg_basebackup\` connect over TCP; pgBackRest reads the data" \
    "directory itself (its design) and talks to the server over the socket. All three base backups ask for a" \
    "fast checkpoint. pgBackRest's archive-push runs as the archive_command in phases 3 and 4 only; each base backup" \
    "ends with a WAL switch, so one push may overlap the next round. Restores: into an empty directory on a free" \
    "port, timed until the server has promoted (recovery.signal gone); the restored clusters inherit fsync = off" \
    "from the source's postgresql.auto.conf, as the logical restore's target runs with fsync off. Each restore was" \
    "checked untimed (the marker row written just before the WAL switch is there; for (l) also the row count of" \
    "pgbench_accounts) and removed before the next. Replication slots left at the end: $LEFT_SLOTS."
  echo "Run: \`bench/pitr.sh\` (BENCH_RUNS=$RUNS BENCH_SCALE=$SCALE PITR_PHASES=\"${PHASES[*]}\" PITR_RPO_FLUSHES=\"${FLUSHES[*]}\"" \
    "PITR_RPO_SECONDS=$RPO_S${RPO_RATE:+ PITR_RPO_RATE=$RPO_RATE} PITR_LOAD_SECONDS=$LOAD_S PITR_PGBENCH_ARGS=\"${PGBENCH_ARGS[*]}\"" \
    "PITR_LOAD_VARIANTS=\"${LOAD_VARIANTS[*]}\" PITR_BASE_VARIANTS=\"${VARIANTS[*]}\" PITR_RESTORE_VARIANTS=\"${RESTORE_VARIANTS[*]}\"" \
    "PITR_RESTORE_LOAD_SECONDS=$RESTORE_LOAD_S)."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
