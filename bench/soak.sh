#!/usr/bin/env bash
# Soak test of the daemon: `pgbackup run` backing up a small database every
# 10 seconds (BACKUP_CRON_SCHEDULE="*/10 * * * * *") for SOAK_MINUTES, with
# retention on, while its process is sampled every SOAK_SAMPLE_SECONDS:
# resident memory, open file descriptors, threads, zombie children, and from
# /metrics the attempts, failures, last status and stored objects.
#
# At the end it checks: every run succeeded (failures 0, attempts close to
# minutes x 6, none skipped), memory and descriptors flat, no zombie child,
# a clean exit on SIGTERM, and that the bucket holds exactly what the
# retention rules allow, each backup with its `<name>.manifest.json`.
#
# Retention during a short soak. Backup names carry the time to the second,
# and retention by age works in whole days: with BACKUP_RETENTION_DAYS >= 1
# every backup of the last 24 h is kept, and 0 keeps everything. Nothing the
# daemon writes in 30 minutes is therefore ever old enough to delete. So
# the bucket is seeded with old backup-shaped objects (and their manifests),
# and more old ones are added at every sample while the daemon runs; each
# retention pass after a backup must delete them. The settings:
#   BACKUP_RETENTION_DAYS=1        every backup of the last day (all of the
#                                  daemon's own) is kept
#   BACKUP_RETENTION_MIN_COUNT=5   the newest 5 (the daemon's) are kept
#   BACKUP_KEEP_DAILY=3            the newest backup of each of the 3 most
#                                  recent UTC days that have one: today (the
#                                  daemon's) and the two most recent seeded
#                                  days, whose 21:00 backups must survive
# Seeded: 4 backups a day (03, 09, 15, 21 h) on each of the 10 days from 2
# to 11 days ago; added while running: one per sample, 60 + days ago.
# Expected at the end, computed independently of pgbackup from the final
# listing: all of the daemon's backups, plus 2 seeded ones; every other
# seeded backup and its manifest deleted.
#
# Environment:
#   SOAK_MINUTES=30         how long the daemon runs
#   SOAK_SAMPLE_SECONDS=30  sampling interval
#   BENCH_PGBENCH_SCALE=1, BENCH_EVENT_ROWS=20000   the database (~20 MB)
#   BENCH_RESULTS           report path (default bench/results/soak.md)
#   PGBACKUP_BIN            binary to test (default: cargo build --release)
#
# Needs: postgresql-15, garage 2.5.0, curl, python3, the AWS CLI (see lib.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

MINUTES=${SOAK_MINUTES:-30}
INTERVAL=${SOAK_SAMPLE_SECONDS:-30}
RESULTS=${BENCH_RESULTS:-$HERE/results/soak.md}
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || bench_die "SOAK_MINUTES must be a positive integer"
[[ $INTERVAL =~ ^[1-9][0-9]*$ ]] || bench_die "SOAK_SAMPLE_SECONDS must be a positive integer"
export BENCH_SCALE=small BENCH_PGBENCH_SCALE=${BENCH_PGBENCH_SCALE:-1} BENCH_EVENT_ROWS=${BENCH_EVENT_ROWS:-20000}

DB=soak
BUCKET=pgbackup-soak
PREFIX=backup_
KEEP_DAILY=3

bench_init soak
pgbackup_build
pg_start
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
dataset_generate "$DB"
DB_SIZE=$(dataset_size "$DB")

# ---- seeded old backups ---------------------------------------------------------
SEED_DIR=$BENCH_WORK/seed
mkdir -p "$SEED_DIR"
seed_one() { # seed_one DIR EPOCH: an old backup-shaped object and its manifest
  local name
  name=$PREFIX$(date -u -d "@$2" '+%Y-%m-%d_%H-%M-%S').dump.zst
  printf 'seeded old backup\n' >"$1/$name"
  printf '{"seeded":true}\n' >"$1/$name.manifest.json"
}
TODAY0=$(date -u -d 'today 00:00' +%s)
for ((d = 2; d <= 11; d++)); do
  for h in 3 9 15 21; do seed_one "$SEED_DIR" $((TODAY0 - d * 86400 + h * 3600)); done
done
s3 s3 cp --only-show-errors --recursive "$SEED_DIR" "s3://$BUCKET/"
SEEDED=$(find "$SEED_DIR" -name '*.dump.zst' | wc -l)
bench_log "seeded $SEEDED old backups (with manifests)"
FED=0
feed_one() { # one more old backup, 60 days + FED minutes ago
  local dir=$BENCH_WORK/feed.$FED
  mkdir -p "$dir"
  seed_one "$dir" $((TODAY0 - 60 * 86400 + FED * 60))
  s3 s3 cp --only-show-errors --recursive "$dir" "s3://$BUCKET/" && FED=$((FED + 1))
  rm -rf "$dir"
}

# ---- the daemon -------------------------------------------------------------------
LOG=$BENCH_WORK/daemon.log
pgbackup_run_start "$DB" "$BUCKET" "$LOG" \
  BACKUP_CRON_SCHEDULE="*/10 * * * * *" BACKUP_FILE_PREFIX="$PREFIX" \
  BACKUP_RETENTION_DAYS=1 BACKUP_RETENTION_MIN_COUNT=5 BACKUP_KEEP_DAILY=$KEEP_DAILY
T_START=$EPOCHREALTIME
SAMPLES=$BENCH_WORK/samples.tsv
printf 't_s\trss_kb\tfds\tthreads\tzombies\tattempts\tfailures\tlast_status\tstored_objects\tretention_deleted\tskipped\tin_progress\n' >"$SAMPLES"
MAX_ZOMBIES=0
DIED=
LAST_SCRAPE=$BENCH_WORK/last.metrics

sample() {
  local m t
  m=$(pgbackup_metrics) && printf '%s\n' "$m" >"$LAST_SCRAPE" || m=""
  t=$(bench_calc "${EPOCHREALTIME/,/.} - ${T_START/,/.}")
  local z
  z=$(proc_zombie_children "$PGB_PID")
  ((z <= MAX_ZOMBIES)) || MAX_ZOMBIES=$z
  printf '%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" \
    "$(proc_status_kb "$PGB_PID" VmRSS)" "$(proc_fds "$PGB_PID")" \
    "$(proc_status_kb "$PGB_PID" Threads)" "$z" \
    "$(metric_sum backup_attempts_total <<<"$m")" "$(metric_sum backup_failures_total <<<"$m")" \
    "$(metric_sum backup_last_status <<<"$m")" "$(metric_sum backup_stored_objects <<<"$m")" \
    "$(metric_sum backup_retention_deleted_total <<<"$m")" "$(metric_sum backup_skipped_runs_total <<<"$m")" \
    "$(metric_sum backup_in_progress <<<"$m")" >>"$SAMPLES"
}

bench_log "soaking for $MINUTES min, sampling every ${INTERVAL}s"
END=$((SECONDS + MINUTES * 60))
sample
while ((SECONDS < END)); do
  next=$((SECONDS + INTERVAL))
  ((next <= END)) || next=$END
  feed_one || bench_log "WARNING: could not add an old backup"
  while ((SECONDS < next)); do
    [[ $(_bench_proc_state "$PGB_PID") =~ ^[RSDI]$ ]] || break
    sleep 1
  done
  if ! [[ $(_bench_proc_state "$PGB_PID") =~ ^[RSDI]$ ]]; then
    DIED=$(bench_calc "${EPOCHREALTIME/,/.} - ${T_START/,/.}")
    bench_log "ERROR: pgbackup run exited after ${DIED}s; its last lines: $(tail -3 "$LOG")"
    break
  fi
  sample
  bench_log "$(tail -1 "$SAMPLES" | awk -F'\t' '{ printf "t=%ss rss=%.1fMiB fds=%s threads=%s zombies=%s attempts=%s failures=%s stored=%s deleted=%s", $1, $2 / 1024, $3, $4, $5, $6, $7, $9, $10 }')"
done

# One more backup (and so one more retention pass) after the last old
# backup was added, then stop as soon as it has finished.
FINAL_METRICS=$BENCH_WORK/final.metrics
if [[ -z $DIED ]]; then
  A0=$(pgbackup_metrics | metric_sum backup_attempts_total)
  bench_log "waiting for one more backup after the last addition (attempts $A0)"
  deadline=$((SECONDS + 120))
  while :; do
    m=$(pgbackup_metrics)
    a=$(metric_sum backup_attempts_total <<<"$m")
    p=$(metric_sum backup_in_progress <<<"$m")
    ((a > A0 && p == 0)) && break
    ((SECONDS < deadline)) || bench_die "no backup finished within 120 s"
    sleep 0.2
  done
  sample
  pgbackup_metrics >"$FINAL_METRICS"
else
  # The daemon is gone: the last scrape is all there is.
  cp "$LAST_SCRAPE" "$FINAL_METRICS"
  DIED_LOG=$(grep -v '"level":"DEBUG"' "$LOG" | tail -3 | sed 's/|/\\|/g' | tr '\n' ' ')
fi
STOP_T0=$EPOCHREALTIME
pgbackup_run_stop
EXIT_RC=$PGB_EXIT
STOP_S=$(bench_calc "${EPOCHREALTIME/,/.} - ${STOP_T0/,/.}")
ELAPSED_MIN=$(bench_calc "(${STOP_T0/,/.} - ${T_START/,/.}) / 60")

# ---- the bucket against the rules ------------------------------------------------
s3_keys "$BUCKET" >"$BENCH_WORK/keys"
CHECK=$BENCH_WORK/check.txt
python3 - "$BENCH_WORK/keys" "$PREFIX" "$KEEP_DAILY" "$SEED_DIR" >"$CHECK" <<'PY'
# Independent check of the retention rules on the final listing: min count
# 5, days 1, the newest of each of the KEEP_DAILY most recent UTC days. (As
# long as the daemon has fewer than 5 backups, min count keeps seeded ones.)
import datetime as dt, os, re, sys
keys = [k for k in open(sys.argv[1]).read().split() if k]
prefix, keep_daily = sys.argv[2], int(sys.argv[3])
seeded_now = set(os.listdir(sys.argv[4]))
shape = re.compile(re.escape(prefix) + r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})\.(dump|sql)(\.zst|\.gz)?$")
backups = {}
for k in keys:
    m = shape.match(k)
    if m:
        backups[k] = dt.datetime.strptime(m.group(1), "%Y-%m-%d_%H-%M-%S").replace(tzinfo=dt.timezone.utc)
manifests = {k for k in keys if k.endswith(".manifest.json")}
other = [k for k in keys if k not in backups and k not in manifests]
now = dt.datetime.now(dt.timezone.utc)
old = {k for k, t in backups.items() if now - t > dt.timedelta(days=1)}
fresh = set(backups) - old
# What the rules allow of what is there now: fresh ones (days rule) plus the
# newest of each of the keep_daily most recent days (over all backups).
days_seen, allowed_old = [], set()
for i, (k, t) in enumerate(sorted(backups.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)):
    if i < 5 and k in old:  # min count
        allowed_old.add(k)
    d = t.date()
    if d not in days_seen and len(days_seen) < keep_daily:
        days_seen.append(d)
        if k in old:
            allowed_old.add(k)
# With KEEP_DAILY=3, today's backups and >= 5 of the daemon's: the two most
# recent seeded days keep their newest (21:00) backup, nothing else of the seed.
expected_old = allowed_old
without_manifest = [k for k in backups if k + ".manifest.json" not in manifests]
orphan_manifests = [k for k in manifests if k[: -len(".manifest.json")] not in backups]
print(f"backups={len(backups)}")
print(f"fresh={len(fresh)}")
print(f"old_kept={len(old)}")
print(f"old_expected={len(expected_old)}")
print(f"old_unexpected={' '.join(sorted(old - expected_old)) or '-'}")
print(f"old_kept_names={' '.join(sorted(old)) or '-'}")
print(f"manifests={len(manifests)}")
print(f"without_manifest={len(without_manifest)}")
print(f"orphan_manifests={len(orphan_manifests)}")
print(f"other_objects={len(other)}")
PY
bench_log "bucket: $(tr '\n' ' ' <"$CHECK")"
cget() { bench_get "$CHECK" "$1"; }

# ---- report -----------------------------------------------------------------------
fm() { metric_sum "$1" <"$FINAL_METRICS"; }
ATTEMPTS=$(fm backup_attempts_total)
FAILURES=$(fm backup_failures_total)
SKIPPED=$(fm backup_skipped_runs_total)
LAST_STATUS=$(fm backup_last_status)
STORED_METRIC=$(fm backup_stored_objects)
DELETED=$(fm backup_retention_deleted_total)
EXPECTED_ATTEMPTS=$(bench_calc "$ELAPSED_MIN * 6")
col() { awk -F'\t' -v c="$1" 'NR > 1 { print $c }' "$SAMPLES"; }
first() { col "$1" | head -1; }
last() { col "$1" | tail -1; }
maxc() { col "$1" | sort -g | tail -1; }
NS=$(($(wc -l <"$SAMPLES") - 1))
# Flatness: the median of the last quarter of the samples against the median
# of the first quarter after the first sample (start-up is not steady state).
Q=$(((NS - 1) / 4))
((Q >= 1)) || Q=1
qmed() { bench_median $(col "$1" | sed -n "$2"); }
RSS_EARLY=$(qmed 2 "2,$((1 + Q))p")
RSS_LATE=$(qmed 2 "$((NS - Q + 1)),\$p")
FD_EARLY=$(qmed 3 "2,$((1 + Q))p")
FD_LATE=$(qmed 3 "$((NS - Q + 1)),\$p")
mibk() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
pf() { if [[ $1 == 1 ]]; then echo PASS; else echo FAIL; fi; }
ok() { awk "BEGIN { exit !($*) }" && echo 1 || echo 0; }
BACKUPS=$(cget backups)
FRESH=$(cget fresh)
OLD_EXP=$(cget old_expected)
EXPECTED_OBJECTS=$((ATTEMPTS - FAILURES + OLD_EXP))
# Our backups that retention saw: the daemon's successes plus what it kept
# of the seed; deletions = seeded + fed - kept.
EXPECTED_DELETED=$((SEEDED + FED - OLD_EXP))
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"

report() {
  echo "# Daemon soak"
  echo
  echo "- date: $STARTED; \`pgbackup run\` for $(printf '%.1f' "$ELAPSED_MIN") min, a backup every 10 s, sampled every ${INTERVAL} s ($NS samples)"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- pgbackup $PGB_VERSION ($PGB_COMMIT, release build); PostgreSQL $("$BENCH_PG_BIN/postgres" --version | awk '{print $3}'); Garage (single node, same machine)"
  echo "- database: pgbench -s $BENCH_PGBENCH_SCALE + $BENCH_EVENT_ROWS event rows, pg_database_size $(bench_fmt_bytes "$DB_SIZE"); defaults otherwise (zstd)"
  echo "- settings: \`BACKUP_CRON_SCHEDULE=\"*/10 * * * * *\" BACKUP_RETENTION_DAYS=1 BACKUP_RETENTION_MIN_COUNT=5 BACKUP_KEEP_DAILY=$KEEP_DAILY\`"
  echo "- retention: $SEEDED old backups seeded before the start (4 a day, 2 to 11 days old) and $FED added during the run (one per sample, 60+ days old), each with a manifest"
  echo
  echo "| check | measured | |"
  echo "|---|---|---|"
  if [[ -n $DIED ]]; then
    echo "| ran to the end | **no**: exited after $(printf '%.0f' "$DIED") s (status $EXIT_RC); its last log lines: \`$DIED_LOG\`; the checks below cover the time until then | FAIL |"
  fi
  echo "| every run succeeded | $ATTEMPTS attempts (≈ $(printf '%.0f' "$EXPECTED_ATTEMPTS") expected: minutes × 6), $FAILURES failures, $SKIPPED skipped, last status $LAST_STATUS | $(pf "$(ok "$FAILURES == 0 && $LAST_STATUS == 1 && $SKIPPED == 0 && $ATTEMPTS >= $EXPECTED_ATTEMPTS - 2")") |"
  echo "| RSS flat | first $(mibk "$(first 2)"), last $(mibk "$(last 2)"), max $(mibk "$(maxc 2)"); median of the first quarter $(mibk "$RSS_EARLY") vs the last quarter $(mibk "$RSS_LATE") | $(pf "$(ok "$RSS_LATE <= $RSS_EARLY * 1.10 + 1024")") |"
  echo "| file descriptors flat | first $(first 3), last $(last 3), max $(maxc 3); first-quarter median $FD_EARLY vs last-quarter $FD_LATE | $(pf "$(ok "$FD_LATE <= $FD_EARLY + 2")") |"
  echo "| threads | first $(first 4), last $(last 4), max $(maxc 4) | $(pf "$(ok "$(last 4) <= $(first 4) + 2")") |"
  echo "| no zombie children | max $MAX_ZOMBIES in a sample | $(pf "$(ok "$MAX_ZOMBIES == 0")") |"
  echo "| clean stop | SIGTERM → exit status $EXIT_RC in $(printf '%.1f' "$STOP_S") s | $(pf "$(ok "$EXIT_RC == 0")") |"
  echo "| bucket holds what retention allows | $BACKUPS backups = $FRESH of the daemon's (all < 1 day old) + $(cget old_kept) seeded ($(cget old_kept_names)); expected $EXPECTED_OBJECTS ($((ATTEMPTS - FAILURES)) successes + $OLD_EXP seeded kept by the rules); unexpected old: $(cget old_unexpected) | $(pf "$(ok "$BACKUPS == $EXPECTED_OBJECTS && $FRESH == $ATTEMPTS - $FAILURES")") |"
  echo "| \`backup_stored_objects\` | $STORED_METRIC (listing: $BACKUPS) | $(pf "$(ok "$STORED_METRIC == $BACKUPS")") |"
  echo "| \`backup_retention_deleted_total\` | $DELETED (seeded + added − kept = $EXPECTED_DELETED) | $(pf "$(ok "$DELETED == $EXPECTED_DELETED")") |"
  echo "| manifests | $(cget manifests) \`.manifest.json\`; backups without one: $(cget without_manifest); manifests without a backup: $(cget orphan_manifests); other objects: $(cget other_objects) | $(pf "$(ok "$(cget without_manifest) == 0 && $(cget orphan_manifests) == 0 && $(cget other_objects) == 0")") |"
  echo
  echo "Samples:"
  echo
  echo "| t (s) | RSS | fds | threads | zombies | attempts | failures | last status | stored objects | retention deleted | in progress |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { printf "| %s | %.1f MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2 / 1024, $3, $4, $5, $6, $7, $8, $9, $10, $12 }' "$SAMPLES"
  echo
  echo "How it is measured: RSS is VmRSS and threads from /proc/<pid>/status, fds the entries of" \
    "/proc/<pid>/fd, zombies the children of the daemon in state Z (ps), the rest from /metrics (sums over" \
    "label sets). Each sample is taken wherever the 10 s cycle happens to be, so a backup may be in flight." \
    "At the end the script waits for one more backup to finish (so one more retention pass runs after the" \
    "last old object was added), scrapes /metrics, sends SIGTERM and lists the bucket. The expected content" \
    "is computed from the listing by a separate implementation of the rules (min count, days, daily)."
  echo "Run: \`bench/soak.sh\` (SOAK_MINUTES=$MINUTES SOAK_SAMPLE_SECONDS=$INTERVAL)."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
