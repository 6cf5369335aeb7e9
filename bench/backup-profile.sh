#!/usr/bin/env bash
# Where the time of `pgbackup backup` goes, next to `pg_dump -Fc -Z0 > /dev/null`
# (the companion of backup.sh, for when (b) misses its wall-time target).
#
# On the same generated database as backup.sh (BENCH_SCALE), it reports:
#   1. a timeline of each run: start-up before pg_dump starts, the dump, and
#      the tail after pg_dump exits (last parts, complete, metadata copy);
#   2. what each process was doing, sampled every 50 ms from /proc: running
#      ("R") or waiting, and on what (wchan): pg_dump blocked in pipe_write
#      means pgbackup is slower than the dump; the backend waiting on its
#      socket means pg_dump is the slow reader;
#   3. pgbackup's CPU per thread (the compressor thread vs the async workers);
#   4. single-core throughput of the codecs on the raw dump (zstd -1/-3,
#      gzip -6, sha256), i.e. CPU seconds per GB of dump;
#   5. pgbackup's peak RSS with glibc's mmap threshold pinned or not, with
#      and without compression (BENCH_PROFILE_MEMORY=0 skips it);
#   6. with perf: one more pgbackup run sampled system-wide, CPU by command
#      and pgbackup's hottest symbols.
# Variants run interleaved BENCH_RUNS times (default 2). Results go to
# bench/results/backup-profile.md (or BENCH_RESULTS).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-2}
SCALE=${BENCH_SCALE:-full}
if [[ $SCALE == full ]]; then
  RESULTS=${BENCH_RESULTS:-$HERE/results/backup-profile.md}
else
  RESULTS=${BENCH_RESULTS:-$HERE/results/backup-profile.$SCALE.md}
fi
DB=bench
BUCKET=pgbackup-profile
INTERVAL=0.05

bench_init profile
pgbackup_build
pg_start
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
dataset_generate "$DB"
DB_SIZE=$(dataset_size "$DB")
export PGPASSWORD=$PG_PASSWORD
URL=$(pg_url_nopw "$DB")
PG_DUMP=$BENCH_PG_BIN/pg_dump
OUT=$BENCH_WORK/profile
mkdir -p "$OUT"

# The raw dump, for the codec measurements (also warms the page cache).
bench_log "raw dump to a file for the codec measurements"
"$PG_DUMP" -Fc -Z0 --no-password --dbname="$URL" -f "$BENCH_WORK/raw.dump"
RAW=$(stat -c %s "$BENCH_WORK/raw.dump")

# ---- sampled runs -------------------------------------------------------------

# _state PATH: "state wchan" of a process or thread directory in /proc.
_state() {
  local stat w=""
  read -r stat 2>/dev/null <"$1/stat" || return 1
  stat=${stat##*) }
  read -r w 2>/dev/null <"$1/wchan" || true
  [[ $w != 0 ]] || w=""
  _STATE="${stat:0:1}${w:+:$w}"
}

# _sched PATH: "run_ns wait_ns" of a task from its schedstat (time on a CPU,
# time runnable but waiting for one); sets _SCHED.
_sched() {
  local run wait _n
  read -r run wait _n 2>/dev/null <"$1/schedstat" || return 1
  _SCHED="$run $wait"
}

# _garage_sched: schedstat summed over Garage's threads; sets _SCHED.
_garage_sched() {
  local t run=0 wait=0
  for t in /proc/"$GARAGE_PID"/task/*; do
    _sched "$t" || continue
    run=$((run + ${_SCHED% *})) wait=$((wait + ${_SCHED#* }))
  done
  _SCHED="$run $wait"
}

# profiled_run NAME CMD...: runs CMD (stdout to /dev/null) and, while its
# pg_dump runs, samples pg_dump, the backend serving it, Garage and (if CMD
# is pgbackup) pgbackup's threads. Writes $OUT/NAME.timeline (key=value),
# $OUT/NAME.states ("count entity state") and $OUT/NAME.sched ("entity
# run_ns wait_ns").
profiled_run() {
  local name=$1
  shift
  local t0 t_dump0="" t_dump1="" t1 pid dump_pid="" be_pid="" p c now t tid comm g0=""
  local -A states=() sched=()
  local -a args
  t0=$EPOCHREALTIME
  "$@" >/dev/null 2>"$OUT/$name.stderr" &
  pid=$!
  while :; do
    _state "/proc/$pid" || break
    [[ $_STATE != Z* ]] || break
    now=$EPOCHREALTIME
    # pg_dump: the child that is not `pg_dump --version`.
    if [[ -z $dump_pid ]]; then
      _bench_tree "$pid"
      for p in "$pid" "${_BENCH_TREE[@]}"; do
        mapfile -d '' args 2>/dev/null <"/proc/$p/cmdline" || continue
        [[ ${args[0]:-} == *pg_dump && " ${args[*]} " != *" --version "* ]] || continue
        dump_pid=$p t_dump0=$now
        _garage_sched
        g0=$_SCHED
      done
    fi
    if [[ -n $dump_pid && -z $t_dump1 ]]; then
      if ! _state "/proc/$dump_pid" || [[ $_STATE == Z* ]]; then
        t_dump1=$now
        _garage_sched
        sched[garage]="$((${_SCHED% *} - ${g0% *})) $((${_SCHED#* } - ${g0#* }))"
      fi
    fi
    if [[ -n $dump_pid && -z $t_dump1 ]]; then
      states["pg_dump $_STATE"]=$((${states["pg_dump $_STATE"]:-0} + 1))
      ! _sched "/proc/$dump_pid" || sched[pg_dump]=$_SCHED
      # The backend serving it: a child of the postmaster titled with our database.
      if [[ -z $be_pid ]]; then
        for c in $(_bench_children "$PG_PID"); do
          mapfile -d '' args 2>/dev/null <"/proc/$c/cmdline" || continue
          [[ ${args[0]:-} != "postgres: postgres $DB 127.0.0.1"* ]] || be_pid=$c
        done
      fi
      if [[ -n $be_pid ]] && _state "/proc/$be_pid"; then
        states["backend $_STATE"]=$((${states["backend $_STATE"]:-0} + 1))
        ! _sched "/proc/$be_pid" || sched[backend]=$_SCHED
      fi
      if [[ $dump_pid != "$pid" ]]; then
        for t in /proc/"$pid"/task/*; do
          tid=${t##*/}
          read -r comm 2>/dev/null <"$t/comm" || continue
          _state "$t" || continue
          states["pgbackup:${comm// /_}/$tid $_STATE"]=$((${states["pgbackup:${comm// /_}/$tid $_STATE"]:-0} + 1))
          ! _sched "$t" || sched["pgbackup:${comm// /_}/$tid"]=$_SCHED
        done
      fi
    fi
    _bench_nap "$INTERVAL"
  done
  wait "$pid" || bench_die "$name failed: $(tail -3 "$OUT/$name.stderr")"
  t1=$EPOCHREALTIME
  if [[ -z $t_dump1 ]]; then
    t_dump1=$t1
    _garage_sched
    sched[garage]="$((${_SCHED% *} - ${g0% *})) $((${_SCHED#* } - ${g0#* }))"
  fi
  {
    echo "total_s=$(bench_calc "$t1 - $t0")"
    echo "startup_s=$(bench_calc "${t_dump0:-$t0} - $t0")"
    echo "dump_s=$(bench_calc "$t_dump1 - ${t_dump0:-$t0}")"
    echo "tail_s=$(bench_calc "$t1 - $t_dump1")"
  } >"$OUT/$name.timeline"
  local k
  for k in "${!states[@]}"; do echo "${states[$k]} $k"; done | sort -k2,2 -k1,1nr >"$OUT/$name.states"
  for k in "${!sched[@]}"; do echo "$k ${sched[$k]}"; done | sort -k2,2nr >"$OUT/$name.sched"
}

run_a() { profiled_run "a.$1" "$PG_DUMP" -Fc -Z0 --no-password --dbname="$URL"; }
run_b() {
  profiled_run "b.$1" env BACKUP_DATABASE_URL="$(pg_url "$DB")" BACKUP_FILE_PREFIX="b$1/" \
    AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION" \
    AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$PGBACKUP_BIN" backup
  local key
  key=$(s3_keys "$BUCKET" "b$1/" | grep -v '\.manifest\.json$' || true)
  s3_delete "$BUCKET" "$key"
}

for ((r = 1; r <= RUNS; r++)); do
  run_a "$r"
  bench_log "a.$r: $(tr '\n' ' ' <"$OUT/a.$r.timeline")"
  run_b "$r"
  bench_log "b.$r: $(tr '\n' ' ' <"$OUT/b.$r.timeline")"
done

# ---- codecs, one core, from the page cache ---------------------------------------

codec() {
  local label=$1
  shift
  /usr/bin/time -f '%U %S %e' -o "$OUT/codec.time" "$@" <"$BENCH_WORK/raw.dump" >"$OUT/codec.out"
  local u s e size
  read -r u s e <"$OUT/codec.time"
  size=$(stat -c %s "$OUT/codec.out")
  echo "| $label | $(bench_calc "$u + $s") | $e | $(awk -v b="$RAW" -v c="$(bench_calc "$u + $s")" 'BEGIN { printf "%.0f", b / c / 1048576 }') | $(bench_fmt_bytes "$size") |"
}
bench_log "codecs"
CODECS=$(
  codec '`zstd -1 -T1`' zstd -q -1 -T1 -c
  codec '`zstd -2 -T1`' zstd -q -2 -T1 -c
  codec '`zstd -3 -T1`' zstd -q -3 -T1 -c
  codec '`zstd --fast=1 -T1`' zstd -q --fast=1 -T1 -c
  codec '`zstd --fast=4 -T1`' zstd -q --fast=4 -T1 -c
  codec '`gzip -6` (what `pg_dump -Fc` does by default)' gzip -6 -c
  zstd -q -3 -T1 -c <"$BENCH_WORK/raw.dump" >"$BENCH_WORK/raw.zst"
  /usr/bin/time -f '%U %S %e' -o "$OUT/sha.time" sha256sum "$BENCH_WORK/raw.zst" >/dev/null
  read -r u s e <"$OUT/sha.time"
  echo "| \`sha256sum\` of the zstd -3 output ($(bench_fmt_bytes "$(stat -c %s "$BENCH_WORK/raw.zst")")) | $(bench_calc "$u + $s") | $e | — | — |"
)
rm -f "$BENCH_WORK/raw.zst" "$OUT/codec.out"

# ---- memory: pgbackup's peak RSS and glibc malloc ---------------------------------
#
# Parts are 8 MiB buffers allocated and freed continuously from several
# threads. glibc raises its mmap threshold dynamically (up to 32 MiB) once
# such a block is freed, after which parts come from the heap arenas and freed
# memory is not necessarily returned. Compare the peak RSS with the threshold
# pinned (GLIBC_TUNABLES), with and without compression.
MEMORY=""
mem_run() {
  local label=$1
  shift
  bench_measure "$OUT/mem.$label" -- env BACKUP_DATABASE_URL="$(pg_url "$DB")" BACKUP_FILE_PREFIX="mem/" \
    AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION" \
    AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$@" "$PGBACKUP_BIN" backup || bench_die "pgbackup ($label) failed"
  s3_delete "$BUCKET" "$(s3_keys "$BUCKET" mem/)"
  local m=$OUT/mem.$label/result
  echo "| $label | $(awk -v k="$(bench_get "$m" proc.pgbackup.hwm_kb)" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $(awk -v x="$(bench_get "$m" wall_s)" 'BEGIN { printf "%.1f", x }') |"
}
if [[ ${BENCH_PROFILE_MEMORY:-1} == 1 ]]; then
  bench_log "memory: peak RSS with and without a pinned mmap threshold"
  MEMORY=$(
    pinned=GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576
    mem_run "default compression"
    mem_run "default compression, $pinned" "$pinned"
    mem_run "no compression" BACKUP_COMPRESSION=none
    mem_run "no compression, $pinned" BACKUP_COMPRESSION=none "$pinned"
  )
fi

# ---- perf: one more pgbackup run, whole system -----------------------------------

PERF=""
if command -v perf >/dev/null 2>&1; then
  bench_log "perf record -a during one more pgbackup run"
  perf record -q -a -F 199 -o "$OUT/perf.data" 2>"$OUT/perf.stderr" &
  perf_pid=$!
  sleep 1
  env BACKUP_DATABASE_URL="$(pg_url "$DB")" BACKUP_FILE_PREFIX="perf/" \
    AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION" \
    AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$PGBACKUP_BIN" backup >/dev/null 2>"$OUT/perf-run.stderr" &
  pgb_pid=$!
  wait "$pgb_pid" || bench_log "pgbackup under perf failed: $(tail -2 "$OUT/perf-run.stderr")"
  kill -TERM "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" || true
  if [[ -s $OUT/perf.data ]]; then
    preport() {
      perf report -i "$OUT/perf.data" --stdio --no-children "$@" 2>/dev/null | grep -v -e '^#' -e '^$' |
        sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' -e 's/[[:space:]]*$//' | sed -n 1,16p
    }
    PERF=$(
      echo "CPU samples by command over the run, whole machine (other users' work included):"
      echo
      echo '```'
      preport --sort comm
      echo '```'
      echo
      echo "pgbackup (all its threads; pg_dump is a separate process) — hottest symbols, as shares of all samples:"
      echo
      echo '```'
      preport --pid "$pgb_pid" --sort dso,symbol
      echo '```'
      echo
      echo "The backend and pg_dump:"
      echo
      echo '```'
      preport --comm postgres,pg_dump --sort comm,dso,symbol
      echo '```'
    )
  fi
  s3_delete "$BUCKET" "$(s3_keys "$BUCKET" perf/)" || true
fi

# ---- report ----------------------------------------------------------------------

f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
{
  echo "# Backup profile: where \`pgbackup backup\`'s time goes"
  echo
  echo "- date: $STARTED; $RUNS interleaved rounds; sampled every ${INTERVAL}s from /proc"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- pgbackup $("$PGBACKUP_BIN" --version | awk '{print $2}'); database $(bench_fmt_bytes "$DB_SIZE"), raw dump $(bench_fmt_bytes "$RAW") (BENCH_SCALE=$SCALE)"
  echo
  echo "## Timeline (seconds)"
  echo
  echo "| run | total | before pg_dump starts | pg_dump running | after pg_dump exits |"
  echo "|---|---|---|---|---|"
  for ((r = 1; r <= RUNS; r++)); do
    for v in a b; do
      t=$OUT/$v.$r.timeline
      echo "| $v.$r | $(f1 "$(bench_get "$t" total_s)") | $(f1 "$(bench_get "$t" startup_s)") | $(f1 "$(bench_get "$t" dump_s)") | $(f1 "$(bench_get "$t" tail_s)") |"
    done
  done
  echo
  echo "## While pg_dump ran: CPU time, time waiting for a CPU, and states"
  echo
  echo "From /proc/<pid>/schedstat (on a CPU / runnable but waiting for a CPU) and /proc/<pid>/stat +"
  echo "wchan sampled every ${INTERVAL}s: R = running or runnable; S:<function> = sleeping in that kernel"
  echo "function (anon_pipe_write: a writer blocked on a full pipe; poll/epoll: waiting for input)."
  echo "pgbackup's threads are listed separately (the busiest one is the compressor). a = (a), b = (b)."
  echo
  for ((r = 1; r <= RUNS; r++)); do
    for v in a b; do
      echo "| $v.$r | on CPU s | waiting for a CPU s | states (share of samples) |"
      echo "|---|---|---|---|"
      awk -v B="$OUT/$v.$r.states" '
        BEGIN { while ((getline l < B) > 0) { split(l, a, " "); n[a[2]] += a[1]; cnt[a[2], a[3]] = a[1]; st[a[2]] = st[a[2]] " " a[3] } }
        { e = $1; desc = ""; m = split(st[e], s, " ")
          for (i = 1; i <= m; i++) { pct = 100 * cnt[e, s[i]] / n[e]; if (pct >= 3) desc = desc sprintf("%s%s %.0f%%", (desc == "" ? "" : ", "), s[i], pct) }
          if ($2 / 1e9 < 0.05 && desc !~ /R/) next
          printf "| %s | %.1f | %.1f | %s |\n", e, $2 / 1e9, $3 / 1e9, desc }' "$OUT/$v.$r.sched"
      echo
    done
  done
  echo "## Codecs on one core (input: the raw dump from the page cache)"
  echo
  echo "| codec | CPU s | wall s | MiB of dump per CPU second | output |"
  echo "|---|---|---|---|---|"
  echo "$CODECS"
  echo
  if [[ -n $MEMORY ]]; then
    echo "## pgbackup's peak RSS (VmHWM) and glibc's mmap threshold"
    echo
    echo "| run | peak RSS | wall s |"
    echo "|---|---|---|"
    echo "$MEMORY"
    echo
  fi
  if [[ -n $PERF ]]; then
    echo "## perf (one extra run of pgbackup, \`perf record -a -F 199\`)"
    echo
    echo "$PERF"
  fi
  echo
  echo "Run: \`BENCH_RUNS=$RUNS bench/backup-profile.sh\`."
} >"$RESULTS"
cat "$RESULTS"
bench_log "written to $RESULTS"
