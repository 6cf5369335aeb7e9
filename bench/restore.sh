#!/usr/bin/env bash
# Restore benchmark: `pgbackup restore` from Garage against pg_restore from a
# local file, on the benchmark dataset (>= 2 GB at the default scale).
#
#   (x) pgbackup restore latest --target-url URL            streamed, one
#       transaction: download, sha256, zstd -d, pg_restore --single-transaction
#   (y) pgbackup restore latest --target-url URL --jobs 2   spooled to an
#       unlinked temp file, checked, then pg_restore -j2
#   (z) CREATE DATABASE; pg_restore -j2 --exit-on-error FILE, from a local
#       uncompressed `pg_dump -Fc -Z0` file prepared beforehand (not timed):
#       the baseline, with nothing to download, check or decompress
#   (w) the same file with pg_restore --single-transaction (serial): the
#       restore mode of (x) without the download, checksum and decompression,
#       to tell what (x) pays for its pipeline from what it pays for being
#       serial
#   (xe) as (x), from an encrypted backup of the same data (age, one X25519
#       recipient), with BACKUP_ENCRYPTION_IDENTITY_FILE: what decryption adds
#   (ye) as (y) (--jobs 2), from the encrypted backup
#
# Before the rounds, untimed: one `pgbackup backup` (its defaults) and
# the local dump file; with xe or ye, also an age key pair (age-keygen) and
# one encrypted `pgbackup backup` under its own BACKUP_FILE_PREFIX (enc/),
# so that `latest` is the plain backup for (x), (y) and the encrypted one for
# (xe), (ye). The variants then run interleaved (x y z w x y z w ...)
# BENCH_RUNS times, each into a fresh database that is checked (row counts of
# every table against the source) and dropped before the next run. After the
# rounds, BENCH_VERIFY_RUNS times: `pgbackup verify latest` (checksum,
# decompression, the archive read to its end) and `pgbackup verify latest
# --restore` (the restore drill into a scratch database; its log line gives
# the time to recover).
#
# Targets: pgbackup restore at most 1.25 x (z); from the encrypted backup at
# most 1.05 x the same restore from the plain one ((xe) / (x), (ye) / (y):
# the median of the per-round ratios).
#
# Environment:
#   BENCH_RUNS=3            rounds
#   BENCH_VERIFY_RUNS=1     runs of verify and of verify --restore
#   BENCH_VARIANTS="x y z w"   which variants (z is needed: the baseline);
#                           also xe, ye (list them next to x, y: x xe y ye z w)
#   BENCH_SCALE=full        full (~2.5 GB database) or small (smoke run)
#   BENCH_PGBENCH_SCALE, BENCH_EVENT_ROWS   override the dataset size
#   BENCH_RESULTS           report path (default bench/results/restore.md,
#                           or bench/results/restore.small.md for small)
#   PGBACKUP_BIN            binary to test (default: cargo build --release)
#   PGBACKUP_REV            what PGBACKUP_BIN was built from, for the report
#   BENCH_TMPDIR=/var/tmp   work dir (needs ~3x the database: the cluster,
#                           the dump file, --jobs' temp file, Garage's copy)
#
# Needs: postgresql-15, GNU time, python3, garage 2.5.0; age-keygen for xe, ye.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-3}
VRUNS=${BENCH_VERIFY_RUNS:-1}
SCALE=${BENCH_SCALE:-full}
if [[ $SCALE == full ]]; then
  RESULTS=${BENCH_RESULTS:-$HERE/results/restore.md}
else
  RESULTS=${BENCH_RESULTS:-$HERE/results/restore.$SCALE.md}
fi
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-x y z w}"
for v in "${VARIANTS[@]}"; do [[ $v =~ ^([xyzw]|xe|ye)$ ]] || bench_die "unknown variant '$v' in BENCH_VARIANTS"; done
[[ " ${VARIANTS[*]} " == *" z "* ]] || bench_die "BENCH_VARIANTS must include z (the baseline)"
ENCRYPTED=
if bench_has_variant xe || bench_has_variant ye; then
  ENCRYPTED=1
  command -v age-keygen >/dev/null || bench_die "variants xe, ye need age-keygen (apt-get install age)"
fi

DB=bench
BUCKET=pgbackup-restore
PG_DUMP=$BENCH_PG_BIN/pg_dump
PG_RESTORE=$BENCH_PG_BIN/pg_restore

bench_init restore
pg_start
garage_start
garage_bucket "$BUCKET"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
T0=$SECONDS
dataset_generate "$DB"
GEN_S=$((SECONDS - T0))
DB_SIZE=$(dataset_size "$DB")
bench_log "dataset ready in ${GEN_S}s: pg_database_size $(bench_fmt_bytes "$DB_SIZE")"
# After the dataset: a build can overlap with its generation.
pgbackup_build
export PGPASSWORD=$PG_PASSWORD
RUNS_DIR=$BENCH_WORK/runs
TMP=$BENCH_WORK/tmp
mkdir -p "$RUNS_DIR" "$TMP"

# Row counts of every user table: the check of each restore.
counts() {
  pg_psql "$1" <<'SQL'
SELECT string_agg(format('%s=%s', c.relname,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text),
       ' ' ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
SQL
}
SRC_COUNTS=$(counts "$DB")
bench_log "source: $SRC_COUNTS"

# pgbackup's environment: the storage settings, nothing else of ours.
PGB_ENV=(env -i PATH="$PATH" HOME="$BENCH_WORK" TMPDIR="$TMP" BACKUP_LOG_FORMAT=json
  AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION"
  AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET")
SRC_URL=$(pg_url "$DB")
pgb() { "${PGB_ENV[@]}" BACKUP_DATABASE_URL="$SRC_URL" "$PGBACKUP_BIN" "$@"; }
# pgbackup's process name in bench_measure's proc.<name>.* keys (the
# kernel's comm: the file name, at most 15 characters).
PNAME=$(basename "$PGBACKUP_BIN")
PNAME=${PNAME:0:15}
PNAME=${PNAME// /_}
# The encrypted backup lives under its own prefix: `latest` under the default
# prefix stays the plain backup, and under this one is the encrypted one.
ENC_PREFIX=enc/backup_

# ---- preparation (untimed in the comparison) --------------------------------------
bench_log "backup with pgbackup"
bench_measure "$RUNS_DIR/backup" -- "${PGB_ENV[@]}" BACKUP_DATABASE_URL="$SRC_URL" "$PGBACKUP_BIN" backup ||
  { tail -5 "$RUNS_DIR/backup/stderr" >&2; bench_die "pgbackup backup failed"; }
BACKUP_S=$(bench_get "$RUNS_DIR/backup/result" wall_s)
pgb list --json >"$BENCH_WORK/list.json"
# list_one FILE: "name size" of the one backup in a `pgbackup list --json`.
list_one() {
  python3 -c 'import json,sys; l=json.load(open(sys.argv[1])); assert len(l) == 1, l; print(l[0]["name"], l[0]["size"])' "$1"
}
read -r OBJECT STORED < <(list_one "$BENCH_WORK/list.json") || bench_die "expected one backup: $(cat "$BENCH_WORK/list.json")"
[[ $OBJECT != *.age ]] || bench_die "the plain backup is encrypted: $OBJECT"
DUMP_BYTES=$(grep -o '"dump_bytes":[0-9]*' "$RUNS_DIR/backup/stderr" | tail -1 | cut -d: -f2)
bench_log "backup: $OBJECT, $(bench_fmt_bytes "$STORED") stored, in ${BACKUP_S}s"
if [[ -n $ENCRYPTED ]]; then
  # One key pair per run, in the work dir (removed with it).
  AGE_KEY=$BENCH_WORK/age/key.txt
  mkdir -p "$BENCH_WORK/age"
  age-keygen -o "$AGE_KEY" 2>/dev/null || bench_die "age-keygen failed"
  AGE_RECIPIENT=$(age-keygen -y "$AGE_KEY")
  bench_log "encrypted backup with pgbackup (to $AGE_RECIPIENT, prefix $ENC_PREFIX)"
  bench_measure "$RUNS_DIR/backup-enc" -- "${PGB_ENV[@]}" BACKUP_DATABASE_URL="$SRC_URL" \
    BACKUP_FILE_PREFIX="$ENC_PREFIX" BACKUP_ENCRYPTION_RECIPIENTS="$AGE_RECIPIENT" "$PGBACKUP_BIN" backup ||
    { tail -5 "$RUNS_DIR/backup-enc/stderr" >&2; bench_die "encrypted pgbackup backup failed"; }
  ENC_BACKUP_S=$(bench_get "$RUNS_DIR/backup-enc/result" wall_s)
  pgb list --json >"$BENCH_WORK/list.json"
  [[ $(list_one "$BENCH_WORK/list.json") == "$OBJECT $STORED" ]] ||
    bench_die "under the default prefix, latest is no longer the plain backup: $(cat "$BENCH_WORK/list.json")"
  "${PGB_ENV[@]}" BACKUP_DATABASE_URL="$SRC_URL" BACKUP_FILE_PREFIX="$ENC_PREFIX" "$PGBACKUP_BIN" list --json >"$BENCH_WORK/list-enc.json"
  read -r ENC_OBJECT ENC_STORED < <(list_one "$BENCH_WORK/list-enc.json") ||
    bench_die "expected one encrypted backup: $(cat "$BENCH_WORK/list-enc.json")"
  [[ $ENC_OBJECT == *.age ]] || bench_die "the backup under $ENC_PREFIX has no .age: $ENC_OBJECT"
  bench_log "encrypted backup: $ENC_OBJECT, $(bench_fmt_bytes "$ENC_STORED") stored, in ${ENC_BACKUP_S}s"
fi
bench_log "local dump file: pg_dump -Fc -Z0"
FILE=$BENCH_WORK/bench.dump
bench_measure "$RUNS_DIR/dumpfile" -- "$PG_DUMP" -Fc -Z0 --no-password --dbname="$(pg_url_nopw "$DB")" -f "$FILE" ||
  { cat "$RUNS_DIR/dumpfile/stderr" >&2; bench_die "pg_dump failed"; }
FILE_BYTES=$(stat -c %s "$FILE")
bench_log "dump file: $(bench_fmt_bytes "$FILE_BYTES") in $(bench_get "$RUNS_DIR/dumpfile/result" wall_s)s"

# ---- the variants ---------------------------------------------------------------

run_variant() {
  local v=$1 r=$2 target dir
  target=restore_${v}_$r
  dir=$RUNS_DIR/$v.$r
  case $v in
    x) bench_measure "$dir" -- "${PGB_ENV[@]}" PGPASSWORD="$PG_PASSWORD" "$PGBACKUP_BIN" restore latest --target-url "$(pg_url_nopw "$target")" ;;
    y) bench_measure "$dir" -- "${PGB_ENV[@]}" PGPASSWORD="$PG_PASSWORD" "$PGBACKUP_BIN" restore latest --target-url "$(pg_url_nopw "$target")" --jobs 2 ;;
    xe) bench_measure "$dir" -- "${PGB_ENV[@]}" PGPASSWORD="$PG_PASSWORD" BACKUP_FILE_PREFIX="$ENC_PREFIX" BACKUP_ENCRYPTION_IDENTITY_FILE="$AGE_KEY" \
      "$PGBACKUP_BIN" restore latest --target-url "$(pg_url_nopw "$target")" ;;
    ye) bench_measure "$dir" -- "${PGB_ENV[@]}" PGPASSWORD="$PG_PASSWORD" BACKUP_FILE_PREFIX="$ENC_PREFIX" BACKUP_ENCRYPTION_IDENTITY_FILE="$AGE_KEY" \
      "$PGBACKUP_BIN" restore latest --target-url "$(pg_url_nopw "$target")" --jobs 2 ;;
    z) bench_measure "$dir" -- bash -c '"$1/psql" -X -q -h 127.0.0.1 -p "$2" -U postgres -d postgres -c "CREATE DATABASE $3 TEMPLATE template0" &&
        exec "$1/pg_restore" --no-password --exit-on-error -j2 -h 127.0.0.1 -p "$2" -U postgres -d "$3" "$4"' \
      sh "$BENCH_PG_BIN" "$PG_PORT" "$target" "$FILE" ;;
    w) bench_measure "$dir" -- bash -c '"$1/psql" -X -q -h 127.0.0.1 -p "$2" -U postgres -d postgres -c "CREATE DATABASE $3 TEMPLATE template0" &&
        exec "$1/pg_restore" --no-password --exit-on-error --single-transaction -h 127.0.0.1 -p "$2" -U postgres -d "$3" "$4"' \
      sh "$BENCH_PG_BIN" "$PG_PORT" "$target" "$FILE" ;;
  esac || { tail -5 "$dir/stderr" >&2; bench_die "($v) round $r failed"; }
  # pgbackup restored the backup meant for the variant ("restored <key> into
  # ..." on stdout): the plain one for (x), (y), the encrypted one for (xe), (ye).
  local want=
  case $v in
    x | y) want=$OBJECT ;;
    xe | ye) want=$ENC_OBJECT ;;
  esac
  [[ -z $want ]] || grep -qF "restored $want " "$dir/stdout" ||
    bench_die "($v) round $r did not restore $want: $(head -1 "$dir/stdout")"
  local got
  got=$(counts "$target")
  [[ $got == "$SRC_COUNTS" ]] || bench_die "($v) round $r: restored counts differ: $got"
  pg_psql postgres -c "DROP DATABASE $target"
  # Leave nothing of the run in the page cache's dirty list for the next one.
  pg_psql postgres -c "CHECKPOINT"
  sync
  bench_log "round $r ($v): $(bench_get "$dir/result" wall_s)s, counts match"
}

for ((r = 1; r <= RUNS; r++)); do
  for v in "${VARIANTS[@]}"; do run_variant "$v" "$r"; done
done

for ((r = 1; r <= VRUNS; r++)); do
  bench_log "verify latest ($r)"
  bench_measure "$RUNS_DIR/verify.$r" -- "${PGB_ENV[@]}" "$PGBACKUP_BIN" verify latest || { tail -5 "$RUNS_DIR/verify.$r/stderr" >&2; bench_die "verify failed"; }
  bench_log "verify latest --restore ($r)"
  bench_measure "$RUNS_DIR/drill.$r" -- "${PGB_ENV[@]}" BACKUP_DATABASE_URL="$SRC_URL" "$PGBACKUP_BIN" verify latest --restore || { tail -5 "$RUNS_DIR/drill.$r/stderr" >&2; bench_die "verify --restore failed"; }
  # "drill ok: ... in 42.0s (time to recover); ...", on stdout.
  ttr=$(grep -o 'in [0-9.]*s (time to recover)' "$RUNS_DIR/drill.$r/stdout" | grep -o '[0-9.]*' | head -1 || true)
  echo "ttr_s=${ttr:-nan}" >>"$RUNS_DIR/drill.$r/result"
  grep 'drill ok' "$RUNS_DIR/drill.$r/stdout" | head -1 >"$RUNS_DIR/drill.$r/line" || true
  bench_log "verify $(bench_get "$RUNS_DIR/verify.$r/result" wall_s)s; drill $(bench_get "$RUNS_DIR/drill.$r/result" wall_s)s (time to recover ${ttr:-?}s)"
done
LEFT=$(pg_psql postgres -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgbackup_drill%' OR datname LIKE 'restore_%'")
TMP_LEFT=$(find "$TMP" -mindepth 1 | wc -l)

# ---- report ---------------------------------------------------------------------
vals() { local r n=$RUNS; [[ $1 != verify && $1 != drill ]] || n=$VRUNS; for ((r = 1; r <= n; r++)); do bench_get "$RUNS_DIR/$1.$r/result" "$2"; done; }
med() { bench_median $(vals "$1" "$2"); }
range() { vals "$1" "$2" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.1f–%.1f", lo, hi }'; }
cpu() { local r n=$RUNS; [[ $1 != verify && $1 != drill ]] || n=$VRUNS; bench_median $(for ((r = 1; r <= n; r++)); do bench_calc "$(bench_get "$RUNS_DIR/$1.$r/result" time_user_s) + $(bench_get "$RUNS_DIR/$1.$r/result" time_sys_s)"; done); }
f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
mib() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
Z=$(med z wall_s)
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
# PGBACKUP_REV names what a given PGBACKUP_BIN was built from (as in backup.sh).
if [[ -n ${PGBACKUP_REV:-} ]]; then
  PGB_COMMIT=$PGBACKUP_REV
else
  PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"
fi
label() {
  case $1 in
    x) echo '(x) `pgbackup restore latest` (streamed, single transaction)' ;;
    y) echo '(y) `pgbackup restore latest --jobs 2`' ;;
    xe) echo '(xe) as (x), from the encrypted backup' ;;
    ye) echo '(ye) as (y), from the encrypted backup' ;;
    z) echo '(z) `pg_restore -j2` from a local `pg_dump -Fc -Z0` file' ;;
    w) echo '(w) `pg_restore --single-transaction` (serial) from the same file' ;;
    verify) echo '`pgbackup verify latest`' ;;
    drill) echo '`pgbackup verify latest --restore` (drill)' ;;
  esac
}

# pair_ratios NEW OLD: the per-round wall ratios NEW / OLD in PAIR_RATIOS,
# their median, min and max in PAIR_MED, PAIR_MIN, PAIR_MAX.
pair_ratios() {
  local r
  PAIR_RATIOS=()
  for ((r = 1; r <= RUNS; r++)); do
    PAIR_RATIOS+=("$(bench_calc "$(bench_get "$RUNS_DIR/$1.$r/result" wall_s) / $(bench_get "$RUNS_DIR/$2.$r/result" wall_s)")")
  done
  PAIR_MED=$(bench_median "${PAIR_RATIOS[@]}")
  PAIR_MIN=$(printf '%s\n' "${PAIR_RATIOS[@]}" | sort -g | head -1)
  PAIR_MAX=$(printf '%s\n' "${PAIR_RATIOS[@]}" | sort -g | tail -1)
}

# pair_table NEW OLD: NEW (from the encrypted backup) against OLD, round by
# round: wall, client CPU (pgbackup + pg_restore), pgbackup's peak RSS.
pair_table() {
  local n=$1 o=$2 r sn so
  pair_ratios "$n" "$o"
  echo
  echo "($n) against ($o), round by round: what decryption adds to the same restore. Each round runs the" \
    "variants in the order of BENCH_VARIANTS (${VARIANTS[*]}); next to each other the two share the machine's" \
    "load, and the per-round ratio is steadier than the ratio of medians."
  echo
  echo "| round | ($n) wall s | ($o) wall s | ($n) / ($o) | client CPU s ($n / $o) | pgbackup peak RSS ($n / $o) |"
  echo "|---|---|---|---|---|---|"
  for ((r = 1; r <= RUNS; r++)); do
    sn=$RUNS_DIR/$n.$r/result so=$RUNS_DIR/$o.$r/result
    echo "| $r | $(f1 "$(bench_get "$sn" wall_s)") | $(f1 "$(bench_get "$so" wall_s)") | $(f2 "${PAIR_RATIOS[r - 1]}") |" \
      "$(f1 "$(bench_calc "$(bench_get "$sn" time_user_s) + $(bench_get "$sn" time_sys_s)")") / $(f1 "$(bench_calc "$(bench_get "$so" time_user_s) + $(bench_get "$so" time_sys_s)")") |" \
      "$(mib "$(bench_get "$sn" "proc.$PNAME.hwm_kb")") / $(mib "$(bench_get "$so" "proc.$PNAME.hwm_kb")") |"
  done
  echo "| median | $(f1 "$(med "$n" wall_s)") | $(f1 "$(med "$o" wall_s)") | $(f2 "$PAIR_MED") ($(f2 "$PAIR_MIN")–$(f2 "$PAIR_MAX")) |" \
    "$(f1 "$(cpu "$n")") / $(f1 "$(cpu "$o")") |" \
    "$(mib "$(med "$n" "proc.$PNAME.hwm_kb")") / $(mib "$(med "$o" "proc.$PNAME.hwm_kb")") |"
}

report() {
  local v
  echo "# Restore benchmark"
  echo
  echo "- date: $STARTED; $RUNS interleaved rounds (${VARIANTS[*]}), medians; verify and the drill $VRUNS time(s) after the rounds"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- PostgreSQL $("$BENCH_PG_BIN/postgres" --version | awk '{print $3}') (fsync off); pgbackup $PGB_VERSION ($PGB_COMMIT, release build); Garage (single node, same machine, compression off)"
  echo "- dataset (BENCH_SCALE=$SCALE): pg_database_size $(bench_fmt_bytes "$DB_SIZE"), generated in ${GEN_S} s; backup \`$OBJECT\`: $(bench_fmt_bytes "$STORED") stored (defaults), dump $(bench_fmt_bytes "${DUMP_BYTES:-0}"), made in $(f1 "$BACKUP_S") s; local \`pg_dump -Fc -Z0\` file $(bench_fmt_bytes "$FILE_BYTES")"
  [[ -z $ENCRYPTED ]] ||
    echo "- encrypted backup for (xe), (ye) \`$ENC_OBJECT\`: $(bench_fmt_bytes "$ENC_STORED") stored (defaults + age, one X25519 recipient), made in $(f1 "$ENC_BACKUP_S") s"
  echo
  echo "| variant | wall, median (min–max) | × (z) | client CPU s | postgres CPU s | Garage CPU s | peak RSS (pgbackup / pg_restore) |"
  echo "|---|---|---|---|---|---|---|"
  for v in "${VARIANTS[@]}" verify drill; do
    local extra=""
    [[ $v != drill ]] || extra=" (time to recover $(f1 "$(med drill ttr_s)") s)"
    [[ $v != y && $v != ye ]] || extra=" (of which spooling, until pg_restore starts: $(f1 "$(med "$v" proc.pg_restore.start_s)") s)"
    echo "| $(label "$v") | $(f1 "$(med "$v" wall_s)") s ($(range "$v" wall_s))$extra | $(f2 "$(bench_calc "$(med "$v" wall_s) / $Z")") | $(f1 "$(cpu "$v")") | $(f1 "$(med "$v" pg_cpu_s)") | $(f1 "$(med "$v" garage_cpu_s)") | $(awk -v a="$(bench_median $(vals "$v" "proc.$PNAME.hwm_kb"))" -v b="$(bench_median $(vals "$v" proc.pg_restore.hwm_kb))" 'BEGIN { printf "%.1f MiB / %.1f MiB", a / 1024, b / 1024 }') |"
  done
  echo
  local px py
  px=$(bench_calc "$(med x wall_s) / $Z")
  py=$(bench_calc "$(med y wall_s) / $Z")
  pf() { if awk -v x="$1" -v l="${2:-1.25}" 'BEGIN { exit !(x <= l) }'; then echo PASS; else echo MISS; fi; }
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| (x) ≤ 1.25 × (z) | $(f2 "$px") × ($(f1 "$(med x wall_s)") s vs $(f1 "$Z") s) | $(pf "$px") |"
  echo "| (y) ≤ 1.25 × (z) | $(f2 "$py") × ($(f1 "$(med y wall_s)") s vs $(f1 "$Z") s) | $(pf "$py") |"
  # Decryption's cost: the per-round ratio to the same restore from the plain
  # backup (the two share the round's load when listed next to each other).
  local p n o
  for p in "xe x" "ye y"; do
    read -r n o <<<"$p"
    bench_has_variant "$n" || continue
    bench_has_variant "$o" || continue
    pair_ratios "$n" "$o"
    echo "| ($n) ≤ 1.05 × ($o) (median of the per-round ratios) | $(f2 "$PAIR_MED") × (rounds $(f2 "$PAIR_MIN")–$(f2 "$PAIR_MAX"); medians $(f1 "$(med "$n" wall_s)") s vs $(f1 "$(med "$o" wall_s)") s) | $(pf "$PAIR_MED" 1.05) |"
  done
  for p in "xe x" "ye y"; do
    read -r n o <<<"$p"
    bench_has_variant "$n" || continue
    bench_has_variant "$o" || continue
    pair_table "$n" "$o"
  done
  if [[ " ${VARIANTS[*]} " == *" w "* ]]; then
    echo
    echo "For (x), the same serial restore from the local file, (w), takes $(f1 "$(med w wall_s)") s:" \
      "(x) / (w) = $(f2 "$(bench_calc "$(med x wall_s) / $(med w wall_s)")"), (w) / (z) = $(f2 "$(bench_calc "$(med w wall_s) / $Z")")."
  fi
  echo
  echo "All runs:"
  echo
  echo "| round | variant | wall s | client CPU s | postgres CPU s | machine busy |"
  echo "|---|---|---|---|---|---|"
  local r s
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${VARIANTS[@]}"; do
      s=$RUNS_DIR/$v.$r/result
      echo "| $r | $v | $(f1 "$(bench_get "$s" wall_s)") | $(f1 "$(bench_calc "$(bench_get "$s" time_user_s) + $(bench_get "$s" time_sys_s)")") | $(f1 "$(bench_get "$s" pg_cpu_s)") | $(awk -v b="$(bench_get "$s" sys_busy_s)" -v t="$(bench_get "$s" sys_total_s)" 'BEGIN { printf "%.0f%%", 100 * b / t }') |"
    done
  done
  for ((r = 1; r <= VRUNS; r++)); do
    for v in verify drill; do
      s=$RUNS_DIR/$v.$r/result
      echo "| after | $v | $(f1 "$(bench_get "$s" wall_s)") | $(f1 "$(bench_calc "$(bench_get "$s" time_user_s) + $(bench_get "$s" time_sys_s)")") | $(f1 "$(bench_get "$s" pg_cpu_s)") | $(awk -v b="$(bench_get "$s" sys_busy_s)" -v t="$(bench_get "$s" sys_total_s)" 'BEGIN { printf "%.0f%%", 100 * b / t }') |"
    done
  done
  echo
  echo "Drill report: \`$(cat "$RUNS_DIR/drill.1/line")\`"
  echo
  echo "Every restore was checked untimed (row counts of all tables equal the source's) and its database" \
    "dropped before the next run. Left over after all runs: $LEFT restore/drill databases, $TMP_LEFT files in TMPDIR."
  echo
  echo "How it is measured: wall time of the whole command (for (z) including CREATE DATABASE; pgbackup" \
    "creates the target itself). Client CPU is the command and its children (pgbackup + pg_restore) per" \
    "getrusage; postgres CPU is the whole cluster (the backends doing the restore, index builds). Peak RSS" \
    "is VmHWM sampled every 0.1 s. The backup object and the dump file were written just before the rounds," \
    "so both are likely in the page cache. pg_restore -j2 runs two workers; on 2 cores that shared with" \
    "Garage and pgbackup for (x), (y). For (y) the dump is first spooled to an unlinked file in TMPDIR" \
    "(same disk as the cluster)."
  [[ -z $ENCRYPTED ]] ||
    echo "(xe), (ye) restore \`latest\` under BACKUP_FILE_PREFIX=$ENC_PREFIX, the encrypted backup made right" \
      "after the plain one (so likely in the page cache too), with BACKUP_ENCRYPTION_IDENTITY_FILE set;" \
      "pgbackup decrypts the stream between the download and zstd -d. Each run checks that pgbackup names the backup" \
      "meant for it (plain or encrypted) in its \"restored ...\" line."
  echo "Run: \`bench/restore.sh\` (BENCH_RUNS=$RUNS BENCH_VERIFY_RUNS=$VRUNS BENCH_SCALE=$SCALE BENCH_VARIANTS=\"${VARIANTS[*]}\")."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
