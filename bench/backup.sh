#!/usr/bin/env bash
# Backup benchmark: `pgbackup backup` against the dump alone and against the
# file-based pipelines it replaces, on a generated database (>= 2 GB at the
# default scale), all in one run on the same services.
#
#   (a) pg_dump -Fc -Z0 > /dev/null          the dump alone: the limit here
#   (b) pgbackup backup (defaults: zstd 1)   streamed into Garage (S3)
#   (c) pg_dump -Fc -Z9 -f FILE; then `aws s3 cp FILE` into Garage
#   (d) pg_dump | gzip > FILE;   then `aws s3 cp FILE` into Garage
#   (bbase) as (b), with the binary in PGBACKUP_BASELINE_BIN (e.g. a build
#           from before a change), to compare two binaries in one run
#   (benc)  as (b), encrypted with age (BACKUP_ENCRYPTION_RECIPIENTS: one
#           X25519 public key, generated with age-keygen once per run)
#
# Variants run interleaved (a b c d a b c d ...) BENCH_RUNS times, since the
# machine may be shared and noisy; the report gives medians, min-max and
# ratios to (a), with bbase the per-round ratio (b) / (bbase), and with benc
# the per-round ratio (benc) / (b). List a pair next to each other (a b benc
# ...) so that its two runs share the machine's load.
# Before the timed runs, one untimed `pg_dump -Fc` (default compression) gives
# the reference size for the size target, and warms the page cache.
#
# Targets for (b): wall time <= 1.15 x (a); pgbackup's own peak RSS <= 64 MiB;
# stored size <= 1.1 x `pg_dump -Fc`; zero bytes of temporary files.
# Targets for (benc), when (b) runs too: wall time <= 1.05 x (b) (the median
# of the per-round ratios); pgbackup's peak RSS <= (b)'s + 8 MiB (max over
# the rounds of each).
#
# Environment:
#   BENCH_RUNS=3            rounds
#   BENCH_SCALE=full        full (~2.5 GB database) or small (smoke run)
#   BENCH_PGBENCH_SCALE, BENCH_EVENT_ROWS   override the dataset size
#   BENCH_VARIANTS="a b c d"   also: bN (pgbackup with zstd level N),
#                           bnone (BACKUP_COMPRESSION=none), bgzip (gzip 6),
#                           bbase (defaults, PGBACKUP_BASELINE_BIN),
#                           benc (defaults + age encryption; needs age)
#   BENCH_RESULTS           report path (default bench/results/backup.md,
#                           or bench/results/backup.small.md for small)
#   PGBACKUP_BIN            binary to test (default: cargo build --release)
#   PGBACKUP_BASELINE_BIN   the binary bbase runs (required with bbase)
#   PGBACKUP_REV, PGBACKUP_BASELINE_REV   what each binary was built from,
#                           for the report (default: this checkout's HEAD
#                           for PGBACKUP_BIN, "unknown" for the baseline)
#   BENCH_TMPDIR=/var/tmp   where the work dir goes (needs ~3x the database)
#   BENCH_GARAGE_COMPRESSION=none   Garage's compression_level (see lib.sh)
#
# Needs: postgresql-15, zstd, gzip, GNU time, python3, garage 2.5.0
# (scripts/setup installs them), age and age-keygen for benc, and the AWS CLI (installed into a venv with
# pip when missing). Runs as root or as a user that can run postgres.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_SCALE:-full}
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-a b c d}"
if [[ $SCALE == full ]]; then
  RESULTS=${BENCH_RESULTS:-$HERE/results/backup.md}
else
  RESULTS=${BENCH_RESULTS:-$HERE/results/backup.$SCALE.md}
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_RUNS must be a positive integer"
for v in "${VARIANTS[@]}"; do
  [[ $v =~ ^(a|b|c|d|bnone|bgzip|bbase|benc|b([1-9]|1[0-9]))$ ]] || bench_die "unknown variant '$v' in BENCH_VARIANTS"
done
[[ ${VARIANTS[0]} == a ]] || bench_die "BENCH_VARIANTS must start with a (the baseline)"
if bench_has_variant bbase; then
  [[ -n ${PGBACKUP_BASELINE_BIN:-} ]] ||
    bench_die "variant bbase needs PGBACKUP_BASELINE_BIN (the binary to compare against)"
  [[ -x $PGBACKUP_BASELINE_BIN && -f $PGBACKUP_BASELINE_BIN ]] ||
    bench_die "PGBACKUP_BASELINE_BIN=$PGBACKUP_BASELINE_BIN is not an executable file"
fi
if bench_has_variant benc; then
  if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then
    bench_die "variant benc needs age and age-keygen (apt-get install age)"
  fi
fi

DB=bench
BUCKET=pgbackup-bench
PG_DUMP=$BENCH_PG_BIN/pg_dump

bench_init backup
pgbackup_build
if bench_has_variant bbase; then
  bench_log "baseline (bbase): $PGBACKUP_BASELINE_BIN ($("$PGBACKUP_BASELINE_BIN" --version))"
fi
if bench_has_variant benc; then
  # One key pair per run, in the work dir (removed with it): benc encrypts to
  # the public key, and only the untimed check of round 1 reads the secret.
  AGE_KEY=$BENCH_WORK/age/key.txt
  mkdir -p "$BENCH_WORK/age"
  age-keygen -o "$AGE_KEY" 2>/dev/null || bench_die "age-keygen failed"
  AGE_RECIPIENT=$(age-keygen -y "$AGE_KEY")
  bench_log "benc encrypts to $AGE_RECIPIENT"
fi
pg_start
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)

T0=$SECONDS
dataset_generate "$DB"
GEN_S=$((SECONDS - T0))
DB_SIZE=$(dataset_size "$DB")
bench_log "dataset ready in ${GEN_S}s: pg_database_size $(bench_fmt_bytes "$DB_SIZE")"
export PGPASSWORD=$PG_PASSWORD
URL=$(pg_url_nopw "$DB")
RUNS_DIR=$BENCH_WORK/runs
mkdir -p "$RUNS_DIR"

# ---- reference: pg_dump -Fc with its default compression -------------------
bench_log "reference: pg_dump -Fc (default compression), untimed in the comparison"
bench_measure "$RUNS_DIR/ref" -- "$PG_DUMP" -Fc --no-password --dbname="$URL" -f "$BENCH_WORK/ref.dump" ||
  { cat "$RUNS_DIR/ref/stderr" >&2; bench_die "reference pg_dump failed"; }
REF_SIZE=$(stat -c %s "$BENCH_WORK/ref.dump")
REF_WALL=$(bench_get "$RUNS_DIR/ref/result" wall_s)
rm -f "$BENCH_WORK/ref.dump"
bench_log "reference: $(bench_fmt_bytes "$REF_SIZE") in ${REF_WALL}s"

# ---- the variants -------------------------------------------------------------

# Each run_* writes $RUNS_DIR/<variant>.<round>/summary (key=value):
#   wall_s, stored_bytes, temp_bytes, rss_kb (headline peak RSS), rss_what,
#   time_rss_kb, client_cpu_s, pg_cpu_s, garage_cpu_s, sys_busy_s,
#   sys_total_s, and per-variant extras (dump_s, upload_s, own_cpu_s, ...).

run_a() {
  local dir=$RUNS_DIR/a.$1
  bench_measure "$dir/m" -- sh -c 'exec "$@" >/dev/null' sh \
    "$PG_DUMP" -Fc -Z0 --no-password --dbname="$URL" || bench_fail_run "$dir/m" "(a) pg_dump"
  {
    bench_summarize_phases "$dir/m"
    echo "rss_kb=$(bench_get "$dir/m/result" proc.pg_dump.hwm_kb)"
    echo "rss_what=pg_dump"
    echo "stored_bytes=0"
    echo "temp_bytes=$(($(bench_get "$dir/m/result" time_fs_out_blocks) * 512))"
    echo "pgdump_cpu_s=$(bench_get "$dir/m/result" proc.pg_dump.cpu_s)"
  } >"$dir/summary"
}

# run_pgbackup VARIANT ROUND [VAR=VALUE...]: pgbackup ($PGBACKUP_BIN, or
# $PGBACKUP_BASELINE_BIN for bbase) with a clean
# environment, TMPDIR and HOME pointing at empty directories and an empty
# working directory (mode 0555), all checked to be still empty afterwards;
# pgbackup's and pg_dump's write_bytes (storage writes, /proc/<pid>/io and
# getrusage) must be 0.
run_pgbackup() {
  local v=$1 r=$2
  shift 2
  local dir=$RUNS_DIR/$v.$r prefix="$v/r$r/"
  local env_dir=$dir/env bin=$PGBACKUP_BIN
  [[ $v != bbase ]] || bin=$PGBACKUP_BASELINE_BIN
  # Its process name in bench_measure's proc.<name>.* keys (the kernel's
  # comm: the file name, at most 15 characters).
  local pname
  pname=$(basename "$bin")
  pname=${pname:0:15}
  pname=${pname// /_}
  mkdir -p "$env_dir/tmp" "$env_dir/home" "$env_dir/cwd"
  chmod 0555 "$env_dir/cwd"
  # Garage stores a block once (by content hash) and keeps a deleted
  # object's blocks for a while, so an identical dump in the next round
  # would be deduplicated, while an encrypted one (a new file key each
  # time) never is. One changed row in the first table the dump writes
  # (bench_events), of a random length so that every later byte moves too,
  # makes every run's object new to the store, as a real
  # night's backup is. Untimed.
  pg_psql "$DB" -c "UPDATE bench_events SET token = md5(random()::text) || repeat('x', (random() * 1000)::int) WHERE id = 1" >/dev/null
  BENCH_CWD=$env_dir/cwd bench_measure "$dir/m" -- env -i PATH="$PATH" HOME="$env_dir/home" \
    TMPDIR="$env_dir/tmp" BACKUP_LOG_FORMAT=json BACKUP_DATABASE_URL="$(pg_url "$DB")" \
    BACKUP_FILE_PREFIX="$prefix" AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" \
    AWS_S3_REGION="$GARAGE_REGION" AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$@" "$bin" backup ||
    bench_fail_run "$dir/m" "($v) pgbackup backup"
  local m=$dir/m/result key stored dump files wb_own wb_rusage
  # The backup and its restore-drill manifest (<name>.manifest.json, or
  # <name without .age>.manifest.json.age when encrypted).
  key=$(s3_keys "$BUCKET" "$prefix" | grep -Ev '\.manifest\.json(\.age)?$' || true)
  [[ $(wc -l <<<"$key") -eq 1 && -n $key ]] || bench_die "($v) expected one backup under $prefix, found: $key"
  stored=$(s3_size "$BUCKET" "$key")
  dump=$(grep -o '"dump_bytes":[0-9]*' "$dir/m/stderr" | tail -1 | cut -d: -f2)
  files=$(find "$env_dir/tmp" "$env_dir/home" "$env_dir/cwd" -mindepth 1 | wc -l)
  wb_own=$(bench_get "$m" "proc.$pname.write_bytes")
  wb_rusage=$(($(bench_get "$m" time_fs_out_blocks) * 512))
  {
    bench_summarize_phases "$dir/m"
    echo "rss_kb=$(bench_get "$m" "proc.$pname.hwm_kb")"
    echo "rss_what=pgbackup"
    echo "pgdump_rss_kb=$(bench_get "$m" proc.pg_dump.hwm_kb)"
    echo "stored_bytes=$stored"
    echo "dump_bytes=${dump:-0}"
    echo "temp_files=$files"
    echo "temp_bytes=$((wb_own > wb_rusage ? wb_own : wb_rusage))"
    echo "own_cpu_s=$(bench_get "$m" "proc.$pname.cpu_s")"
    echo "pgdump_cpu_s=$(bench_get "$m" proc.pg_dump.cpu_s)"
  } >"$dir/summary"
  ((files == 0)) || bench_log "($v) WARNING: $files files appeared in TMPDIR/HOME/cwd"
  if [[ $r == 1 ]]; then
    # Untimed check of what was stored: the sha256 in the object's metadata
    # matches its bytes (for benc: the encrypted bytes, as stored), and the
    # bytes decrypt (with age itself, not pgbackup) and decompress into a
    # pg_restore archive.
    local meta_sha got_sha dec=(cat) decrypt=(cat)
    if [[ $v == benc ]]; then
      [[ $key == *.age ]] || bench_die "($v) expected an encrypted .age object, found $key"
      # An encrypted backup must not leave a readable manifest beside it.
      s3_keys "$BUCKET" "$prefix" | grep -qx "${key%.age}.manifest.json.age" ||
        bench_die "($v) no encrypted manifest ${key%.age}.manifest.json.age beside $key"
      decrypt=(age -d -i "$AGE_KEY")
    fi
    case ${key%.age} in
      *.zst) dec=(zstd -dcq) ;;
      *.gz) dec=(gzip -dc) ;;
    esac
    meta_sha=$(s3 s3api head-object --bucket "$BUCKET" --key "$key" --query Metadata.sha256 --output text)
    s3 s3 cp --only-show-errors "s3://$BUCKET/$key" - |
      tee -p >(sha256sum | cut -d' ' -f1 >"$dir/sha256") | "${decrypt[@]}" 2>"$dir/decrypt.err" | "${dec[@]}" |
      "$BENCH_PG_BIN/pg_restore" -l >"$dir/toc" 2>"$dir/toc.err" || true
    got_sha=$(cat "$dir/sha256" 2>/dev/null || true)
    # The process substitution may still be finishing.
    for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -n $got_sha ]] && break; sleep 0.5; got_sha=$(cat "$dir/sha256"); done
    [[ $meta_sha == "$got_sha" ]] || bench_die "($v) sha256 metadata $meta_sha != stored bytes $got_sha"
    grep -q 'TABLE DATA public bench_events' "$dir/toc" ||
      bench_die "($v) stored object is not a readable archive: $(head -3 "$dir/decrypt.err" "$dir/toc.err")"
    bench_log "($v) verified: sha256 matches,${decrypt[1]:+ age decrypts it,} archive readable ($(wc -l <"$dir/toc") TOC lines)"
  fi
  s3_delete "$BUCKET" "$key"
}

run_b() { run_pgbackup b "$1"; }
run_bbase() { run_pgbackup bbase "$1"; }
run_benc() { run_pgbackup benc "$1" BACKUP_ENCRYPTION_RECIPIENTS="$AGE_RECIPIENT"; }
run_bnone() { run_pgbackup bnone "$1" BACKUP_COMPRESSION=none; }
run_bgzip() { run_pgbackup bgzip "$1" BACKUP_COMPRESSION=gzip; }

# run_file VARIANT ROUND FILE DUMP-CMD...: dump into FILE, then upload it.
run_file() {
  local v=$1 r=$2 file=$3
  shift 3
  local dir=$RUNS_DIR/$v.$r key
  key=$v/r$r/$(basename "$file")
  bench_measure "$dir/dump" -- "$@" || bench_fail_run "$dir/dump" "($v) dump"
  local size
  size=$(stat -c %s "$file")
  bench_measure "$dir/upload" -- "$BENCH_S3" s3 cp --only-show-errors "$file" "s3://$BUCKET/$key" ||
    bench_fail_run "$dir/upload" "($v) upload"
  local stored
  stored=$(s3_size "$BUCKET" "$key")
  [[ $stored == "$size" ]] || bench_die "($v) uploaded $stored bytes of $size"
  if [[ $r == 1 ]]; then
    case $file in
      *.gz) gzip -t "$file" || bench_die "($v) gzip -t failed" ;;
      *) "$BENCH_PG_BIN/pg_restore" -l "$file" >/dev/null || bench_die "($v) pg_restore -l failed" ;;
    esac
    bench_log "($v) verified: the file is readable, the upload has its size"
  fi
  local big
  big=$(bench_largest_process "$dir/dump" "$dir/upload")
  {
    bench_summarize_phases "$dir/dump" "$dir/upload"
    echo "rss_kb=${big%% *}"
    echo "rss_what=${big#* }"
    echo "stored_bytes=$stored"
    echo "temp_bytes=$size"
    echo "dump_s=$(bench_get "$dir/dump/result" wall_s)"
    echo "upload_s=$(bench_get "$dir/upload/result" wall_s)"
    echo "pgdump_cpu_s=$(bench_get "$dir/dump/result" proc.pg_dump.cpu_s)"
  } >"$dir/summary"
  rm -f "$file"
  s3_delete "$BUCKET" "$key"
}

run_c() {
  mkdir -p "$BENCH_WORK/files"
  run_file c "$1" "$BENCH_WORK/files/bench.dump" \
    "$PG_DUMP" -Fc -Z9 --no-password --dbname="$URL" -f "$BENCH_WORK/files/bench.dump"
}

run_d() {
  mkdir -p "$BENCH_WORK/files"
  run_file d "$1" "$BENCH_WORK/files/bench.sql.gz" \
    bash -c 'set -o pipefail; "$1" --no-password --dbname="$2" | gzip >"$3"' sh \
    "$PG_DUMP" "$URL" "$BENCH_WORK/files/bench.sql.gz"
}

run_variant() {
  local v=$1 r=$2
  case $v in
    b[0-9]*) run_pgbackup "$v" "$r" BACKUP_COMPRESSION_LEVEL="${v#b}" ;;
    *) "run_$v" "$r" ;;
  esac
  bench_log "round $r ($v): $(bench_get "$RUNS_DIR/$v.$r/summary" wall_s)s"
}

for ((r = 1; r <= RUNS; r++)); do
  for v in "${VARIANTS[@]}"; do
    run_variant "$v" "$r"
  done
done

# ---- report ---------------------------------------------------------------------

# vals V KEY: the values of KEY over the rounds of variant V.
vals() {
  local r
  for ((r = 1; r <= RUNS; r++)); do bench_get "$RUNS_DIR/$1.$r/summary" "$2"; done
}
med() { bench_median $(vals "$1" "$2"); }
maxv() { vals "$1" "$2" | awk 'NR == 1 || $1 + 0 > m { m = $1 + 0 } END { print m }'; }
minv() { vals "$1" "$2" | awk 'NR == 1 || $1 + 0 < m { m = $1 + 0 } END { print m }'; }
f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
mib() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
# smib KB: a signed difference, "+1.2 MiB" or "-0.3 MiB".
smib() { awk -v x="$1" 'BEGIN { printf "%+.1f MiB", x / 1024 }'; }

label() {
  case $1 in
    a) echo '(a) `pg_dump -Fc -Z0 > /dev/null`' ;;
    b) echo '(b) `pgbackup backup` (defaults) → Garage' ;;
    bbase) echo '(bbase) as (b), baseline binary' ;;
    benc) echo '(benc) as (b), encrypted with age' ;;
    c) echo '(c) `pg_dump -Fc -Z9 -f file`; `aws s3 cp`' ;;
    d) echo '(d) `pg_dump | gzip > file`; `aws s3 cp`' ;;
    bnone) echo '`pgbackup backup`, `BACKUP_COMPRESSION=none`' ;;
    bgzip) echo '`pgbackup backup`, `BACKUP_COMPRESSION=gzip` (6)' ;;
    b*) echo "\`pgbackup backup\`, \`BACKUP_COMPRESSION_LEVEL=${1#b}\`" ;;
  esac
}

A_WALL=$(med a wall_s)
DUMP_BYTES=0
for v in "${VARIANTS[@]}"; do
  if [[ $v == b* ]]; then DUMP_BYTES=$(med "$v" dump_bytes); break; fi
done
PG_VERSION=$("$BENCH_PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //')
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
if [[ -n ${PGBACKUP_REV:-} ]]; then
  PGB_COMMIT=$PGBACKUP_REV
else
  PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"
fi
if bench_has_variant bbase; then
  BASE_VERSION=$("$PGBACKUP_BASELINE_BIN" --version | awk '{print $2}')
  BASE_COMMIT=${PGBACKUP_BASELINE_REV:-unknown}
fi
GARAGE_VERSION=$("$GARAGE_BIN" --version | awk '{sub(/^cargo:/, "", $2); print $2}')
AWS_VERSION=$("$BENCH_AWS" --version 2>&1 | awk '{print $1}')

# pair_table NEW OLD: the round-by-round table of NEW against OLD (wall,
# pgbackup CPU, peak RSS, stored) with the median and min-max of the
# per-round wall ratios NEW / OLD; leaves those ratios in PAIR_RATIOS.
pair_table() {
  local n=$1 o=$2 sn so r rmin rmax
  PAIR_RATIOS=()
  echo
  echo "| round | ($n) wall s | ($o) wall s | ($n) / ($o) | pgbackup CPU s ($n / $o) | peak RSS ($n / $o) | stored ($n / $o) |"
  echo "|---|---|---|---|---|---|---|"
  for ((r = 1; r <= RUNS; r++)); do
    sn=$RUNS_DIR/$n.$r/summary so=$RUNS_DIR/$o.$r/summary
    PAIR_RATIOS+=("$(bench_calc "$(bench_get "$sn" wall_s) / $(bench_get "$so" wall_s)")")
    echo "| $r | $(f1 "$(bench_get "$sn" wall_s)") | $(f1 "$(bench_get "$so" wall_s)") | $(f2 "${PAIR_RATIOS[-1]}") |" \
      "$(f1 "$(bench_get "$sn" own_cpu_s)") / $(f1 "$(bench_get "$so" own_cpu_s)") |" \
      "$(mib "$(bench_get "$sn" rss_kb)") / $(mib "$(bench_get "$so" rss_kb)") |" \
      "$(bench_fmt_bytes "$(bench_get "$sn" stored_bytes)") / $(bench_fmt_bytes "$(bench_get "$so" stored_bytes)") |"
  done
  rmin=$(printf '%s\n' "${PAIR_RATIOS[@]}" | sort -g | head -1)
  rmax=$(printf '%s\n' "${PAIR_RATIOS[@]}" | sort -g | tail -1)
  echo "| median | $(f1 "$(med "$n" wall_s)") | $(f1 "$(med "$o" wall_s)") | $(f2 "$(bench_median "${PAIR_RATIOS[@]}")") ($(f2 "$rmin")–$(f2 "$rmax")) |" \
    "$(f1 "$(med "$n" own_cpu_s)") / $(f1 "$(med "$o" own_cpu_s)") |" \
    "$(mib "$(med "$n" rss_kb)") / $(mib "$(med "$o" rss_kb)") |" \
    "$(bench_fmt_bytes "$(med "$n" stored_bytes)") / $(bench_fmt_bytes "$(med "$o" stored_bytes)") |"
}

report() {
  local v wall ratio
  echo "# Backup benchmark"
  echo
  echo "- date: $STARTED; $RUNS interleaved rounds (${VARIANTS[*]}), medians"
  echo "$MACHINE" | sed 's/^/- /'
  local pgb="pgbackup $PGB_VERSION ($PGB_COMMIT, release build)"
  ! bench_has_variant bbase || pgb+=" and, for (bbase), pgbackup $BASE_VERSION ($BASE_COMMIT, release build)"
  echo "- PostgreSQL $PG_VERSION; $pgb; Garage $GARAGE_VERSION (single node, same machine, compression off); $AWS_VERSION"
  echo "- dataset (BENCH_SCALE=$SCALE): pgbench tables + bench_events (md5, jsonb, random bytea);" \
    "pg_database_size $(bench_fmt_bytes "$DB_SIZE"); raw dump (\`pg_dump -Fc -Z0\`) $(bench_fmt_bytes "$DUMP_BYTES");" \
    "\`pg_dump -Fc\` (default compression) $(bench_fmt_bytes "$REF_SIZE") in $(f1 "$REF_WALL") s; generated in ${GEN_S} s"
  echo
  echo "| variant | wall, median (min–max) | × (a) | stored | × \`pg_dump -Fc\` | peak RSS | bytes written to local disk |"
  echo "|---|---|---|---|---|---|---|"
  for v in "${VARIANTS[@]}"; do
    wall=$(med "$v" wall_s)
    ratio=$(bench_calc "$wall / $A_WALL")
    local stored="— (discarded)" sratio="—" rss extra=""
    if [[ $v != a ]]; then
      stored=$(bench_fmt_bytes "$(med "$v" stored_bytes)")
      sratio=$(f2 "$(bench_calc "$(med "$v" stored_bytes) / $REF_SIZE")")
    fi
    rss="$(mib "$(maxv "$v" rss_kb)") ($(bench_get "$RUNS_DIR/$v.1/summary" rss_what))"
    [[ $v != b* ]] || rss+="; with pg_dump: $(mib "$(maxv "$v" time_rss_kb)")"
    [[ $v != [cd] ]] || extra=" (dump $(f1 "$(med "$v" dump_s)") s + upload $(f1 "$(med "$v" upload_s)") s)"
    echo "| $(label "$v") | $(f1 "$wall") s ($(f1 "$(minv "$v" wall_s)")–$(f1 "$(maxv "$v" wall_s)"))$extra | $(f2 "$ratio") | $stored | $sratio | $rss | $(bench_fmt_bytes "$(maxv "$v" temp_bytes)") |"
  done
  echo
  echo "CPU seconds per run (medians). *client* is the command and its children (for (b): pgbackup + pg_dump);" \
    "*postgres* is the whole cluster, mostly the backend serving the dump; *machine* is every process on the" \
    "machine including other users' work, as a share of all $(nproc) cores over the run's wall time."
  echo
  echo "| variant | client | of which pg_dump | of which pgbackup | postgres | Garage | sum / wall (cores) | machine busy | other load (cores) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for v in "${VARIANTS[@]}"; do
    local cl pg ga pd busy total sum other
    cl=$(med "$v" client_cpu_s) pg=$(med "$v" pg_cpu_s) ga=$(med "$v" garage_cpu_s) pd=$(med "$v" pgdump_cpu_s)
    wall=$(med "$v" wall_s)
    sum=$(bench_calc "($cl + $pg + $ga) / $wall")
    busy=$(med "$v" sys_busy_s) total=$(med "$v" sys_total_s)
    other=$(bench_calc "($busy - $cl - $pg - $ga) / ($total / $(nproc))")
    local own="—"
    [[ $v != b* ]] || own=$(f1 "$(med "$v" own_cpu_s)")
    echo "| $(label "$v") | $(f1 "$cl") | $(f1 "$pd") | $own | $(f1 "$pg") | $(f1 "$ga") | $(f2 "$sum") | $(awk -v b="$busy" -v t="$total" 'BEGIN { printf "%.0f%%", 100 * b / t }') | $(f2 "$other") |"
  done
  if bench_has_variant b && bench_has_variant bbase; then
    echo
    echo "(b) against (bbase), round by round. The two run back to back in each round, so they share the" \
      "machine's load; the per-round ratio is steadier than the ratio of medians."
    pair_table b bbase
  fi
  if bench_has_variant b && bench_has_variant benc; then
    echo
    echo "(benc) against (b), round by round: what encryption adds. Each round runs them in the order of" \
      "BENCH_VARIANTS (${VARIANTS[*]}); next to each other they share the machine's load, and the per-round" \
      "ratio is steadier than the ratio of medians."
    pair_table benc b
    ENC_RATIOS=("${PAIR_RATIOS[@]}")
  fi
  echo
  echo "Targets for (b) \`pgbackup backup\`:"
  echo
  local bw brss bstored bfiles btemp
  bw=$(bench_calc "$(med b wall_s) / $A_WALL")
  brss=$(maxv b rss_kb)
  bstored=$(bench_calc "$(med b stored_bytes) / $REF_SIZE")
  bfiles=$(maxv b temp_files)
  btemp=$(maxv b temp_bytes)
  pf() { if awk -v x="$1" -v l="$2" 'BEGIN { exit !(x <= l) }'; then echo PASS; else echo MISS; fi; }
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| wall time ≤ 1.15 × (a) | $(f2 "$bw") × (median $(f1 "$(med b wall_s)") s vs $(f1 "$A_WALL") s) | $(pf "$bw" 1.15) |"
  echo "| peak RSS of pgbackup ≤ 64 MiB | $(mib "$brss") (max over rounds, VmHWM of the pgbackup process) | $(pf "$brss" 65536) |"
  echo "| stored ≤ 1.1 × \`pg_dump -Fc\` | $(f2 "$bstored") × ($(bench_fmt_bytes "$(med b stored_bytes)") vs $(bench_fmt_bytes "$REF_SIZE")) | $(pf "$bstored" 1.1) |"
  echo "| zero bytes of temporary files | $btemp bytes written by pgbackup + pg_dump; $bfiles files in TMPDIR/HOME/cwd | $(pf "$((btemp + bfiles))" 0) |"
  if bench_has_variant b && bench_has_variant benc; then
    # The wall target is on the per-round ratios (the two share each round's
    # load); the memory target on each variant's worst round, as for (b).
    local eratio ermin ermax erss drss dmin='' dmax='' d efiles etemp
    eratio=$(bench_median "${ENC_RATIOS[@]}")
    ermin=$(printf '%s\n' "${ENC_RATIOS[@]}" | sort -g | head -1)
    ermax=$(printf '%s\n' "${ENC_RATIOS[@]}" | sort -g | tail -1)
    erss=$(maxv benc rss_kb)
    drss=$((erss - brss))
    for ((r = 1; r <= RUNS; r++)); do
      d=$(($(bench_get "$RUNS_DIR/benc.$r/summary" rss_kb) - $(bench_get "$RUNS_DIR/b.$r/summary" rss_kb)))
      [[ -n $dmin ]] && ((d >= dmin)) || dmin=$d
      [[ -n $dmax ]] && ((d <= dmax)) || dmax=$d
    done
    efiles=$(maxv benc temp_files)
    etemp=$(maxv benc temp_bytes)
    echo
    echo "Targets for (benc), encrypted, against (b) in the same run:"
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    echo "| wall time ≤ 1.05 × (b), median of the per-round ratios | $(f2 "$eratio") × (rounds $(f2 "$ermin")–$(f2 "$ermax"); medians $(f1 "$(med benc wall_s)") s vs $(f1 "$(med b wall_s)") s) | $(pf "$eratio" 1.05) |"
    echo "| peak RSS of pgbackup ≤ (b) + 8 MiB | $(mib "$erss") vs $(mib "$brss") (max over rounds): $(smib "$drss") (rounds $(smib "$dmin") to $(smib "$dmax")) | $(pf "$drss" 8192) |"
    echo "| zero bytes of temporary files (as for (b)) | $etemp bytes written by pgbackup + pg_dump; $efiles files in TMPDIR/HOME/cwd | $(pf "$((etemp + efiles))" 0) |"
  fi
  echo
  echo "All rounds:"
  echo
  echo "| round | variant | wall s | stored | peak RSS | client CPU s | postgres CPU s | Garage CPU s | machine busy |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${VARIANTS[@]}"; do
      local s=$RUNS_DIR/$v.$r/summary
      echo "| $r | $v | $(f1 "$(bench_get "$s" wall_s)") | $(bench_fmt_bytes "$(bench_get "$s" stored_bytes)") | $(mib "$(bench_get "$s" rss_kb)") | $(f1 "$(bench_get "$s" client_cpu_s)") | $(f1 "$(bench_get "$s" pg_cpu_s)") | $(f1 "$(bench_get "$s" garage_cpu_s)") | $(awk -v b="$(bench_get "$s" sys_busy_s)" -v t="$(bench_get "$s" sys_total_s)" 'BEGIN { printf "%.0f%%", 100 * b / t }') |"
    done
  done
  echo
  echo "How it is measured: wall time of the whole command (for (c), (d): dump + upload). Peak RSS: VmHWM from" \
    "/proc/<pid>/status sampled every 0.1 s (for (b) the pgbackup process alone; /usr/bin/time's figure is" \
    "the max over pgbackup *and* pg_dump, per getrusage). Local disk writes: /proc/<pid>/io write_bytes and" \
    "getrusage's block output of the command and its children; for (b) TMPDIR, HOME and the working directory" \
    "are empty directories, checked to be still empty. Uploads in (c), (d) use the AWS CLI's defaults" \
    "(8 MiB parts, 10 in flight). Round 1 of each variant is verified untimed (sha256 metadata, pg_restore -l)."
  ! bench_has_variant benc ||
    echo "For (benc) that is the sha256 of the encrypted bytes as stored, then \`age -d\` with the run's" \
      "identity before zstd -d; the object ends in .age and its manifest in .manifest.json.age."
  echo "Run: \`bench/backup.sh\` (BENCH_RUNS=$RUNS BENCH_SCALE=$SCALE BENCH_VARIANTS=\"${VARIANTS[*]}\")."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
