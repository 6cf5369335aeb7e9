#!/usr/bin/env bash
# Several databases: `pgbackup backup` with BACKUP_DATABASES=all, one dump
# at a time and two at once, against the way the peers back up a whole
# server: `pg_dumpall | gzip` into a file, then `aws s3 cp`. All in one run
# on the same services.
#
# Phase 1, BENCH_DATABASES (default 20) databases of about BENCH_DB_MB
# (default 100) MB each, generated once, untimed:
#   (p1)      pgbackup backup, BACKUP_DATABASES=all,
#             BACKUP_EXCLUDE_DATABASES=postgres, BACKUP_PARALLEL=1
#   (p2)      the same with BACKUP_PARALLEL=2
#   (dumpall) pg_dumpall | gzip > FILE; then `aws s3 cp FILE` into Garage
# Phase 2, the big databases dropped and BENCH_EMPTY_DATABASES (default
# 200) empty ones created in the same cluster (a second cluster would share
# the same 2 cores and add nothing): the same three variants, named e1, e2
# and edumpall, to show what each database costs on its own (connections,
# catalog queries, one pg_dump, one object and one manifest each), as total
# wall time and seconds per database.
#
# Variants run interleaved (p1 p2 dumpall p1 p2 dumpall ...) BENCH_RUNS
# times, since the machine may be shared and noisy; the report gives
# medians, min-max, and the per-round ratios (the variants of one round
# share the machine's load, so those are steadier than ratios of medians).
# Before the timed runs, one untimed `pg_dumpall > /dev/null` reads every
# database once (the page cache is then warm for all variants alike) and
# gives the size of the plain SQL dump.
#
# Targets, on the per-round ratios' median: (p2) wall <= 0.7 x (p1) and
# <= 0.5 x (dumpall); pgbackup's peak RSS <= 96 MiB (max over the rounds of
# p1 and p2); zero bytes of temporary files.
#
# Environment:
#   BENCH_RUNS=3            rounds (both phases)
#   BENCH_DATABASES=20      databases of phase 1
#   BENCH_DB_MB=100         their approximate pg_database_size, in MB: a
#                           pgbench part (-s N) and a bench_events part
#                           (lib.sh's dataset), each with its own seed
#   BENCH_PGBENCH_SCALE, BENCH_EVENT_ROWS   override the per-database sizes
#   BENCH_EMPTY_DATABASES=200   databases of phase 2 (0: no phase 2)
#   BENCH_VARIANTS="p1 p2 dumpall"   phase 1's variants and their order
#                           (phase 2 runs the same, as e1 e2 edumpall)
#   BENCH_RESULTS           report path (default bench/results/databases.md)
#   PGBACKUP_BIN            binary to test (default: cargo build --release)
#   PGBACKUP_REV            what it was built from, for the report (default:
#                           this checkout's HEAD)
#   BENCH_TMPDIR=/var/tmp   where the work dir goes (needs ~3x the databases:
#                           the cluster, Garage's copy, (dumpall)'s file)
#   BENCH_GARAGE_COMPRESSION=none   Garage's compression_level (see lib.sh)
#
# Needs: postgresql-15, zstd, gzip, GNU time, python3, garage 2.5.0
# (scripts/setup installs them), and the AWS CLI (installed into a venv with
# pip when missing). Runs as root or as a user that can run postgres.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

RUNS=${BENCH_RUNS:-3}
NDB=${BENCH_DATABASES:-20}
DB_MB=${BENCH_DB_MB:-100}
NEMPTY=${BENCH_EMPTY_DATABASES:-200}
RESULTS=${BENCH_RESULTS:-$HERE/results/databases.md}
read -r -a VARIANTS <<<"${BENCH_VARIANTS:-p1 p2 dumpall}"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_RUNS must be a positive integer"
[[ $NDB =~ ^[1-9][0-9]*$ && $NDB -le 999 ]] || bench_die "BENCH_DATABASES must be 1..999"
[[ $DB_MB =~ ^[1-9][0-9]*$ ]] || bench_die "BENCH_DB_MB must be a positive integer"
[[ $NEMPTY =~ ^[0-9]+$ && $NEMPTY -le 9999 ]] || bench_die "BENCH_EMPTY_DATABASES must be 0..9999"
for v in "${VARIANTS[@]}"; do
  [[ $v =~ ^(p1|p2|dumpall)$ ]] || bench_die "unknown variant '$v' in BENCH_VARIANTS (p1, p2, dumpall)"
done
# The targets compare p2 with both others.
for v in p1 p2 dumpall; do bench_has_variant "$v" || bench_die "BENCH_VARIANTS must include $v"; done

# The per-database dataset: lib.sh's (pgbench tables + bench_events), in the
# proportions of its full scale (about 60 % pgbench, 40 % events by size).
# Measured sizes: an empty database is ~7.5 MB of catalog, one pgbench scale
# unit ~15.6 MB, one bench_events row ~390 bytes with its index.
PGSCALE=${BENCH_PGBENCH_SCALE:-$(awk -v mb="$DB_MB" 'BEGIN { s = int((mb - 7.5) * 0.6 / 15.6 + 0.5); print (s < 1 ? 1 : s) }')}
EVENTS=${BENCH_EVENT_ROWS:-$(awk -v mb="$DB_MB" -v s="$PGSCALE" 'BEGIN { e = int((mb - 7.5 - s * 15.6) * 1e6 / 390); print (e < 10000 ? 10000 : e) }')}

BUCKET=pgbackup-bench
PG_DUMPALL=$BENCH_PG_BIN/pg_dumpall

bench_init databases
pgbackup_build
pg_start
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)
export PGPASSWORD=$PG_PASSWORD
RUNS_DIR=$BENCH_WORK/runs
mkdir -p "$RUNS_DIR" "$BENCH_WORK/files"

# db_name PREFIX I WIDTH: PREFIX_007 (zero-padded, so that `all`'s order and
# the listing's agree).
db_name() { printf '%s_%0*d' "$1" "$3" "$2"; }

# ---- helpers shared by both phases ------------------------------------------

# s3_listing PREFIX: "key size" per object under PREFIX (the CLI follows the
# pages of list-objects-v2 itself).
s3_listing() {
  s3 s3api list-objects-v2 --bucket "$BUCKET" --prefix "$1" --query 'Contents[].[Key,Size]' --output text |
    grep -v '^None$' || true
}

s3_delete_prefix() { s3 s3 rm --only-show-errors --recursive "s3://$BUCKET/$1" >/dev/null; }

# run_pgbackup VARIANT ROUND N PARALLEL: `pgbackup backup` of every database
# but postgres, PARALLEL at once, with a clean environment: TMPDIR and HOME
# point at empty directories and the working directory is an empty one
# (mode 0555), all checked to be still empty afterwards; pgbackup's
# write_bytes (/proc/<pid>/io, which includes the pg_dumps it reaped) and
# getrusage's block output must be 0. Checks exit 0, one "database" line
# per database and none FAILED, one globals line, and exactly N database
# objects (one per database folder, each with its manifest) and one globals
# object in the store; then deletes them.
run_pgbackup() {
  local v=$1 r=$2 n=$3 par=$4
  local dir=$RUNS_DIR/$v.$r prefix="$v/r$r/"
  local env_dir=$dir/env
  # Its process name in bench_measure's proc.<name>.* keys (the kernel's
  # comm: the file name, at most 15 characters).
  local pname
  pname=$(basename "$PGBACKUP_BIN")
  pname=${pname:0:15}
  pname=${pname// /_}
  mkdir -p "$env_dir/tmp" "$env_dir/home" "$env_dir/cwd"
  chmod 0555 "$env_dir/cwd"
  BENCH_CWD=$env_dir/cwd bench_measure "$dir/m" -- env -i PATH="$PATH" HOME="$env_dir/home" \
    TMPDIR="$env_dir/tmp" BACKUP_LOG_FORMAT=json BACKUP_DATABASE_URL="$(pg_url postgres)" \
    BACKUP_DATABASES=all BACKUP_EXCLUDE_DATABASES=postgres BACKUP_PARALLEL="$par" \
    BACKUP_FILE_PREFIX="$prefix" AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" \
    AWS_S3_REGION="$GARAGE_REGION" AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$PGBACKUP_BIN" backup ||
    bench_fail_run "$dir/m" "($v) pgbackup backup"
  local m=$dir/m/result out=$dir/m/stdout lines failed
  lines=$(grep -c '^database ' "$out" || true)
  failed=$(grep -c '^database .* FAILED ' "$out" || true)
  ((lines == n && failed == 0)) || bench_die "($v) expected $n database lines and no failure, got $lines lines, $failed failed"
  grep -q '^globals .* stored ' "$out" || bench_die "($v) no globals stored: $(grep '^globals' "$out")"
  # What the store holds: N database folders with one backup and one
  # manifest each, and one globals object.
  s3_listing "$prefix" >"$dir/listing"
  local dbs folders manifests globals stored
  dbs=$(awk -v p="${prefix}db/" 'index($1, p) == 1 && $1 !~ /\.manifest\.json$/' "$dir/listing" | wc -l)
  folders=$(awk -v p="${prefix}db/" 'index($1, p) == 1 { k = substr($1, length(p) + 1); sub(/\/.*/, "", k); print k }' "$dir/listing" | sort -u | wc -l)
  manifests=$(awk -v p="${prefix}db/" 'index($1, p) == 1 && $1 ~ /\.manifest\.json$/' "$dir/listing" | wc -l)
  globals=$(awk -v p="${prefix}globals/" 'index($1, p) == 1 && $1 !~ /\.manifest\.json$/' "$dir/listing" | wc -l)
  ((dbs == n && folders == n && manifests == n && globals == 1)) ||
    bench_die "($v) expected $n database objects in $n folders with $n manifests and 1 globals object; found $dbs in $folders folders, $manifests manifests, $globals globals"
  stored=$(awk '{ s += $2 } END { printf "%.0f\n", s }' "$dir/listing")
  local files wb_own wb_rusage
  files=$(find "$env_dir/tmp" "$env_dir/home" "$env_dir/cwd" -mindepth 1 | wc -l)
  wb_own=$(bench_get "$m" "proc.$pname.write_bytes")
  wb_rusage=$(($(bench_get "$m" time_fs_out_blocks) * 512))
  {
    bench_summarize_phases "$dir/m"
    echo "rss_kb=$(bench_get "$m" "proc.$pname.hwm_kb")"
    echo "rss_what=pgbackup"
    echo "pgdump_rss_kb=$(bench_get "$m" proc.pg_dump.hwm_kb)"
    echo "stored_bytes=$stored"
    echo "objects=$(wc -l <"$dir/listing")"
    echo "temp_files=$files"
    echo "temp_bytes=$((wb_own > wb_rusage ? wb_own : wb_rusage))"
    echo "own_cpu_s=$(bench_get "$m" "proc.$pname.cpu_s")"
    echo "pgdump_cpu_s=$(bench_get "$m" proc.pg_dump.cpu_s)"
  } >"$dir/summary"
  ((files == 0)) || bench_log "($v) WARNING: $files files appeared in TMPDIR/HOME/cwd"
  if [[ $r == 1 ]]; then
    # Untimed check of one database's object and of the globals: the sha256
    # in the metadata matches the stored bytes, which decompress into an
    # archive pg_restore reads (a SQL script with roles, for the globals).
    local key meta_sha got_sha
    key=$(awk -v p="${prefix}db/" 'index($1, p) == 1 && $1 !~ /\.manifest\.json$/ { print $1; exit }' "$dir/listing")
    meta_sha=$(s3 s3api head-object --bucket "$BUCKET" --key "$key" --query Metadata.sha256 --output text)
    s3 s3 cp --only-show-errors "s3://$BUCKET/$key" "$dir/check.dump.zst"
    got_sha=$(sha256sum "$dir/check.dump.zst" | cut -d' ' -f1)
    [[ $meta_sha == "$got_sha" ]] || bench_die "($v) $key: sha256 metadata $meta_sha != stored bytes $got_sha"
    # pg_restore -l stops reading after the TOC, so zstd may die of SIGPIPE:
    # judge by the TOC, not by the pipeline's status.
    zstd -dcq "$dir/check.dump.zst" | "$BENCH_PG_BIN/pg_restore" -l >"$dir/toc" 2>"$dir/toc.err" || true
    # (phase 2's databases are empty: a TOC is all there is)
    local want='TABLE DATA public bench_events'
    [[ $v == p* ]] || want='Dumped from database version: '
    grep -q "$want" "$dir/toc" ||
      bench_die "($v) $key is not a readable archive: $(head -3 "$dir/toc.err")"
    rm -f "$dir/check.dump.zst"
    key=$(awk -v p="${prefix}globals/" 'index($1, p) == 1 && $1 !~ /\.manifest\.json$/ { print $1; exit }' "$dir/listing")
    s3 s3 cp --only-show-errors "s3://$BUCKET/$key" - | zstd -dcq >"$dir/globals.sql"
    grep -q '^CREATE ROLE postgres;' "$dir/globals.sql" || bench_die "($v) the globals $key hold no CREATE ROLE"
    bench_log "($v) verified: $n database objects + globals; one archive's sha256 matches and pg_restore -l reads it ($(wc -l <"$dir/toc") TOC lines); the globals create roles"
  fi
  s3_delete_prefix "$prefix"
}

# run_dumpall VARIANT ROUND N: the peers' way, `pg_dumpall | gzip > FILE`
# (plain SQL, gzip 6), then `aws s3 cp FILE`, as backup.sh's (d) for one
# database. Round 1 checks the file (gzip -t, one CREATE DATABASE per
# database besides postgres).
run_dumpall() {
  local v=$1 r=$2 n=$3
  local dir=$RUNS_DIR/$v.$r file=$BENCH_WORK/files/all.sql.gz key
  key=$v/r$r/all.sql.gz
  bench_measure "$dir/dump" -- bash -c 'set -o pipefail; "$1" --no-password --dbname="$2" | gzip >"$3"' sh \
    "$PG_DUMPALL" "$(pg_url_nopw postgres)" "$file" || bench_fail_run "$dir/dump" "($v) pg_dumpall | gzip"
  local size
  size=$(stat -c %s "$file")
  bench_measure "$dir/upload" -- "$BENCH_S3" s3 cp --only-show-errors "$file" "s3://$BUCKET/$key" ||
    bench_fail_run "$dir/upload" "($v) upload"
  local stored
  stored=$(s3_size "$BUCKET" "$key")
  [[ $stored == "$size" ]] || bench_die "($v) uploaded $stored bytes of $size"
  if [[ $r == 1 ]]; then
    gzip -t "$file" || bench_die "($v) gzip -t failed"
    local created
    created=$(gzip -dc "$file" | grep -c '^CREATE DATABASE ' || true)
    ((created == n)) || bench_die "($v) expected $n CREATE DATABASE in the dump, found $created"
    bench_log "($v) verified: gzip -t passes, $created CREATE DATABASE, the upload has the file's size"
  fi
  local big
  big=$(bench_largest_process "$dir/dump" "$dir/upload")
  {
    bench_summarize_phases "$dir/dump" "$dir/upload"
    echo "rss_kb=${big%% *}"
    echo "rss_what=${big#* }"
    echo "stored_bytes=$stored"
    echo "objects=1"
    echo "temp_files=1"
    echo "temp_bytes=$size"
    echo "dump_s=$(bench_get "$dir/dump/result" wall_s)"
    echo "upload_s=$(bench_get "$dir/upload/result" wall_s)"
    echo "pgdump_cpu_s=$(bench_get "$dir/dump/result" proc.pg_dump.cpu_s)"
  } >"$dir/summary"
  rm -f "$file"
  s3_delete "$BUCKET" "$key"
}

# run_variant VARIANT ROUND N: VARIANT is p1, p2, dumpall (phase 1) or
# e1, e2, edumpall (phase 2), over N databases.
run_variant() {
  local v=$1 r=$2 n=$3
  case $v in
    p1 | e1) run_pgbackup "$v" "$r" "$n" 1 ;;
    p2 | e2) run_pgbackup "$v" "$r" "$n" 2 ;;
    dumpall | edumpall) run_dumpall "$v" "$r" "$n" ;;
  esac
  bench_log "round $r ($v): $(bench_get "$RUNS_DIR/$v.$r/summary" wall_s)s"
}

# ---- phase 1: the databases ---------------------------------------------------

T0=$SECONDS
bench_log "dataset: $NDB databases of pgbench -s $PGSCALE + $EVENTS event rows each (~$DB_MB MB)"
WIDTH=${#NDB}
((WIDTH >= 2)) || WIDTH=2
for ((i = 1; i <= NDB; i++)); do
  # Each database its own seed: identical databases would let Garage
  # deduplicate their blocks, which a real server's databases would not.
  # The per-batch progress lines are left out (NDB times the same lines);
  # with pipefail, a failure still ends the script.
  BENCH_DATASET_SEED=$i BENCH_PGBENCH_SCALE=$PGSCALE BENCH_EVENT_ROWS=$EVENTS \
    dataset_generate "$(db_name app "$i" "$WIDTH")" 2>&1 | sed '/bench_events: /d; /^$/d' >&2
done
GEN_S=$((SECONDS - T0))
# Sizes of every database but postgres and the templates: total, min, max.
read -r DB_TOTAL DB_MIN DB_MAX < <(pg_psql postgres -F ' ' -c \
  "SELECT sum(s), min(s), max(s) FROM (SELECT pg_database_size(datname) s FROM pg_database
   WHERE NOT datistemplate AND datname <> 'postgres') d")
bench_log "dataset ready in ${GEN_S}s: $NDB databases, $(bench_fmt_bytes "$DB_TOTAL") in all ($(bench_fmt_bytes "$DB_MIN")–$(bench_fmt_bytes "$DB_MAX") each)"

# The warm-up and size reference: the plain SQL of the whole server.
bench_log "reference: pg_dumpall > /dev/null (untimed in the comparison; warms the page cache)"
bench_measure "$RUNS_DIR/ref" -- sh -c 'set -e; "$1" --no-password --dbname="$2" | wc -c >"$3"' sh \
  "$PG_DUMPALL" "$(pg_url_nopw postgres)" "$RUNS_DIR/ref.bytes" || bench_fail_run "$RUNS_DIR/ref" "reference pg_dumpall"
REF_BYTES=$(tr -d ' ' <"$RUNS_DIR/ref.bytes")
REF_WALL=$(bench_get "$RUNS_DIR/ref/result" wall_s)
bench_log "reference: $(bench_fmt_bytes "$REF_BYTES") of SQL in ${REF_WALL}s"

for ((r = 1; r <= RUNS; r++)); do
  for v in "${VARIANTS[@]}"; do
    run_variant "$v" "$r" "$NDB"
  done
done

# ---- phase 2: empty databases ----------------------------------------------------

EVARIANTS=()
if ((NEMPTY > 0)); then
  for v in "${VARIANTS[@]}"; do
    case $v in
      p1) EVARIANTS+=(e1) ;;
      p2) EVARIANTS+=(e2) ;;
      dumpall) EVARIANTS+=(edumpall) ;;
    esac
  done
  bench_log "phase 2: dropping the $NDB databases, creating $NEMPTY empty ones"
  for ((i = 1; i <= NDB; i++)); do
    pg_psql postgres -c "DROP DATABASE $(db_name app "$i" "$WIDTH")"
  done
  T0=$SECONDS
  EWIDTH=${#NEMPTY}
  ((EWIDTH >= 3)) || EWIDTH=3
  # One psql for all: CREATE DATABASE cannot run in a transaction block, and
  # psql sends each line of -f on its own.
  for ((i = 1; i <= NEMPTY; i++)); do
    echo "CREATE DATABASE $(db_name empty "$i" "$EWIDTH");"
  done | pg_psql postgres
  EGEN_S=$((SECONDS - T0))
  read -r EDB_COUNT EDB_MIN EDB_MAX < <(pg_psql postgres -F ' ' -c \
    "SELECT count(*), min(s), max(s) FROM (SELECT pg_database_size(datname) s FROM pg_database
     WHERE NOT datistemplate AND datname <> 'postgres') d")
  ((EDB_COUNT == NEMPTY)) || bench_die "expected $NEMPTY databases, found $EDB_COUNT"
  pg_psql postgres -c CHECKPOINT
  bench_log "$NEMPTY empty databases created in ${EGEN_S}s ($(bench_fmt_bytes "$EDB_MIN")–$(bench_fmt_bytes "$EDB_MAX") each)"
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${EVARIANTS[@]}"; do
      run_variant "$v" "$r" "$NEMPTY"
    done
  done
fi

# ---- report ---------------------------------------------------------------------

# vals V KEY: the values of KEY over the rounds of variant V.
vals() {
  local r
  for ((r = 1; r <= RUNS; r++)); do bench_get "$RUNS_DIR/$1.$r/summary" "$2"; done
}
med() {
  local -a xs
  mapfile -t xs < <(vals "$1" "$2")
  bench_median "${xs[@]}"
}
maxv() { vals "$1" "$2" | awk 'NR == 1 || $1 + 0 > m { m = $1 + 0 } END { print m }'; }
minv() { vals "$1" "$2" | awk 'NR == 1 || $1 + 0 < m { m = $1 + 0 } END { print m }'; }
f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
f3() { awk -v x="$1" 'BEGIN { printf "%.3f", x }'; }
mib() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
pct() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f%%", 100 * b / t }'; }
pf() { if awk -v x="$1" -v l="$2" 'BEGIN { exit !(x <= l) }'; then echo PASS; else echo MISS; fi; }

# ratios A B: the per-round wall ratios A / B, one per line.
ratios() {
  local r
  for ((r = 1; r <= RUNS; r++)); do
    bench_calc "$(bench_get "$RUNS_DIR/$1.$r/summary" wall_s) / $(bench_get "$RUNS_DIR/$2.$r/summary" wall_s)"
  done
}
# ratio_text A B: "0.62 (0.60–0.65)", the median and range of the per-round ratios.
ratio_text() {
  local -a rs
  mapfile -t rs < <(ratios "$1" "$2")
  echo "$(f2 "$(bench_median "${rs[@]}")") ($(f2 "$(printf '%s\n' "${rs[@]}" | sort -g | head -1)")–$(f2 "$(printf '%s\n' "${rs[@]}" | sort -g | tail -1)"))"
}
ratio_med() {
  local -a rs
  mapfile -t rs < <(ratios "$1" "$2")
  bench_median "${rs[@]}"
}

label() {
  case $1 in
    p1 | e1) echo '`pgbackup backup`, `BACKUP_PARALLEL=1`' ;;
    p2 | e2) echo '`pgbackup backup`, `BACKUP_PARALLEL=2`' ;;
    # (a | inside a table cell must be escaped, even in a code span)
    dumpall | edumpall) echo '`pg_dumpall \| gzip > file`; `aws s3 cp`' ;;
  esac
}

PG_VERSION=$("$BENCH_PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //')
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
if [[ -n ${PGBACKUP_REV:-} ]]; then
  PGB_COMMIT=$PGBACKUP_REV
else
  PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"
fi
GARAGE_VERSION=$("$GARAGE_BIN" --version | awk '{sub(/^cargo:/, "", $2); print $2}')
AWS_VERSION=$("$BENCH_AWS" --version 2>&1 | awk '{print $1}')

# variants_table P1 DUMPALL V...: wall, ratios to P1 and DUMPALL (per round),
# peak RSS, local disk writes, stored bytes and objects.
variants_table() {
  local base=$1 peer=$2 v wall rss extra
  shift 2
  echo "| variant | wall, median (min–max) | × ($base) | × ($peer) | peak RSS | bytes written to local disk | stored (objects) |"
  echo "|---|---|---|---|---|---|---|"
  for v in "$@"; do
    wall=$(med "$v" wall_s)
    rss="$(mib "$(maxv "$v" rss_kb)") ($(bench_get "$RUNS_DIR/$v.1/summary" rss_what))"
    [[ $v != [pe][12] ]] || rss+="; pg_dump $(mib "$(maxv "$v" pgdump_rss_kb)")"
    extra=
    [[ $v != *dumpall ]] || extra=" (dump $(f1 "$(med "$v" dump_s)") s + upload $(f1 "$(med "$v" upload_s)") s)"
    echo "| ($v) $(label "$v") | $(f1 "$wall") s ($(f1 "$(minv "$v" wall_s)")–$(f1 "$(maxv "$v" wall_s)"))$extra |" \
      "$(ratio_text "$v" "$base") | $(ratio_text "$v" "$peer") | $rss | $(bench_fmt_bytes "$(maxv "$v" temp_bytes)") |" \
      "$(bench_fmt_bytes "$(med "$v" stored_bytes)") ($(med "$v" objects)) |"
  done
}

# cpu_table V...: CPU seconds per run (medians), as in backup.sh.
cpu_table() {
  local v cl pg ga pd own wall busy total sum other
  echo "| variant | client | of which pg_dump | of which pgbackup | postgres | Garage | sum / wall (cores) | machine busy | other load (cores) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for v in "$@"; do
    cl=$(med "$v" client_cpu_s) pg=$(med "$v" pg_cpu_s) ga=$(med "$v" garage_cpu_s) pd=$(med "$v" pgdump_cpu_s)
    wall=$(med "$v" wall_s)
    sum=$(bench_calc "($cl + $pg + $ga) / $wall")
    busy=$(med "$v" sys_busy_s) total=$(med "$v" sys_total_s)
    other=$(bench_calc "($busy - $cl - $pg - $ga) / ($total / $(nproc))")
    own="—"
    [[ $v == *dumpall ]] || own=$(f1 "$(med "$v" own_cpu_s)")
    echo "| ($v) | $(f1 "$cl") | $(f1 "$pd") | $own | $(f1 "$pg") | $(f1 "$ga") | $(f2 "$sum") | $(pct "$busy" "$total") | $(f2 "$other") |"
  done
}

# rounds_table V...: every round of the variants.
rounds_table() {
  local r v s
  echo "| round | variant | wall s | stored | peak RSS | client CPU s | postgres CPU s | Garage CPU s | machine busy |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for ((r = 1; r <= RUNS; r++)); do
    for v in "$@"; do
      s=$RUNS_DIR/$v.$r/summary
      echo "| $r | $v | $(f1 "$(bench_get "$s" wall_s)") | $(bench_fmt_bytes "$(bench_get "$s" stored_bytes)") | $(mib "$(bench_get "$s" rss_kb)") | $(f1 "$(bench_get "$s" client_cpu_s)") | $(f1 "$(bench_get "$s" pg_cpu_s)") | $(f1 "$(bench_get "$s" garage_cpu_s)") | $(pct "$(bench_get "$s" sys_busy_s)" "$(bench_get "$s" sys_total_s)") |"
    done
  done
}

report() {
  echo "# Several databases: \`BACKUP_DATABASES=all\` against \`pg_dumpall | gzip\`"
  echo
  echo "- date: $STARTED; $RUNS interleaved rounds (${VARIANTS[*]}) per phase; medians, (min–max) over the rounds"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- PostgreSQL $PG_VERSION; pgbackup $PGB_VERSION ($PGB_COMMIT, release build); Garage $GARAGE_VERSION (single node, same machine, compression off); $AWS_VERSION"
  echo "- dataset: $NDB databases, each pgbench -s $PGSCALE + $EVENTS bench_events rows (md5, jsonb, random bytea; a seed of its own);" \
    "pg_database_size $(bench_fmt_bytes "$DB_TOTAL") in all, $(bench_fmt_bytes "$DB_MIN")–$(bench_fmt_bytes "$DB_MAX") each;" \
    "plain SQL (\`pg_dumpall\`) $(bench_fmt_bytes "$REF_BYTES") in $(f1 "$REF_WALL") s; generated in ${GEN_S} s"
  ((NEMPTY == 0)) ||
    echo "- phase 2: the $NDB databases dropped, $NEMPTY empty databases (from template1, $(bench_fmt_bytes "$EDB_MIN") each) created in the same cluster in ${EGEN_S} s"
  echo "- pgbackup: \`BACKUP_DATABASES=all BACKUP_EXCLUDE_DATABASES=postgres\`, defaults otherwise (custom format, zstd 1, globals stored);" \
    "\`pg_dumpall\` includes the (empty) postgres database and the globals"
  echo
  echo "## $NDB databases of ~$DB_MB MB"
  echo
  echo "Ratios are the median (min–max) of the per-round ratios of wall times: the variants of one round share the machine's load."
  echo
  variants_table p1 dumpall "${VARIANTS[@]}"
  echo
  echo "Targets for (p2):"
  echo
  local r21 r2d rss files temp
  r21=$(ratio_med p2 p1)
  r2d=$(ratio_med p2 dumpall)
  rss=$(for v in p1 p2; do maxv "$v" rss_kb; done | sort -g | tail -1)
  temp=$(for v in p1 p2; do maxv "$v" temp_bytes; done | sort -g | tail -1)
  files=$(for v in p1 p2; do maxv "$v" temp_files; done | sort -g | tail -1)
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| wall ≤ 0.7 × (p1) | $(ratio_text p2 p1) × (medians $(f1 "$(med p2 wall_s)") s vs $(f1 "$(med p1 wall_s)") s) | $(pf "$r21" 0.7) |"
  echo "| wall ≤ 0.5 × (dumpall) | $(ratio_text p2 dumpall) × (medians $(f1 "$(med p2 wall_s)") s vs $(f1 "$(med dumpall wall_s)") s) | $(pf "$r2d" 0.5) |"
  echo "| peak RSS of pgbackup ≤ 96 MiB | $(mib "$rss") (max over the rounds of (p1) and (p2); (p2) alone $(mib "$(maxv p2 rss_kb)"); VmHWM of the pgbackup process) | $(pf "$rss" 98304) |"
  echo "| zero bytes of temporary files | $temp bytes written by pgbackup + pg_dump (max over (p1), (p2)); $files files in TMPDIR/HOME/cwd | $(pf "$((temp + files))" 0) |"
  echo
  echo "CPU seconds per run (medians). *client* is the command and its children (for pgbackup: pgbackup, every pg_dump" \
    "and the pg_dumpall of the globals); *postgres* is the whole cluster; *machine* is every process on the machine including" \
    "other users' work, as a share of all $(nproc) cores over the run's wall time. The per-process figures (pg_dump," \
    "pgbackup) are sampled every 0.1 s and miss processes that live less than that, as the empty databases' pg_dumps do."
  echo
  cpu_table "${VARIANTS[@]}"
  echo
  echo "All rounds:"
  echo
  rounds_table "${VARIANTS[@]}"
  if ((NEMPTY > 0)); then
    echo
    echo "## $NEMPTY empty databases"
    echo
    echo "What each database costs on its own: pgbackup connects, runs pg_dump (which reads the catalog), uploads an object" \
      "and its manifest; pg_dumpall connects to each database and runs its catalog queries."
    echo
    echo "| variant | wall, median (min–max) | s per database | × (e1) | × (edumpall) | peak RSS | bytes written to local disk | stored (objects) |"
    echo "|---|---|---|---|---|---|---|---|"
    local v wall
    for v in "${EVARIANTS[@]}"; do
      wall=$(med "$v" wall_s)
      echo "| ($v) $(label "$v") | $(f1 "$wall") s ($(f1 "$(minv "$v" wall_s)")–$(f1 "$(maxv "$v" wall_s)")) |" \
        "$(f3 "$(bench_calc "$wall / $NEMPTY")") ($(f3 "$(bench_calc "$(minv "$v" wall_s) / $NEMPTY")")–$(f3 "$(bench_calc "$(maxv "$v" wall_s) / $NEMPTY")")) |" \
        "$(ratio_text "$v" e1) | $(ratio_text "$v" edumpall) |" \
        "$(mib "$(maxv "$v" rss_kb)") ($(bench_get "$RUNS_DIR/$v.1/summary" rss_what)) | $(bench_fmt_bytes "$(maxv "$v" temp_bytes)") |" \
        "$(bench_fmt_bytes "$(med "$v" stored_bytes)") ($(med "$v" objects)) |"
    done
    echo
    cpu_table "${EVARIANTS[@]}"
    echo
    echo "All rounds:"
    echo
    rounds_table "${EVARIANTS[@]}"
  fi
  echo
  echo "How it is measured: wall time of the whole command (for (dumpall): dump + upload). Peak RSS: VmHWM from" \
    "/proc/<pid>/status sampled every 0.1 s (for pgbackup the pgbackup process alone; for (dumpall) the largest process" \
    "of either step). Local disk writes: /proc/<pid>/io write_bytes and getrusage's block output of the command and its" \
    "children; for pgbackup TMPDIR, HOME and the working directory are empty directories, checked to be still empty;" \
    "for (dumpall) the size of its file. Every pgbackup run is checked: exit 0, one line per database and none failed," \
    "exactly one object and one manifest per database and one globals object in the store. Round 1 of each variant is" \
    "verified untimed (pgbackup: one database's sha256 metadata and \`pg_restore -l\`, the globals' CREATE ROLE;" \
    "(dumpall): \`gzip -t\` and one CREATE DATABASE per database). The objects are deleted after each run."
  echo "Run: \`bench/databases.sh\` (BENCH_RUNS=$RUNS BENCH_DATABASES=$NDB BENCH_DB_MB=$DB_MB BENCH_EMPTY_DATABASES=$NEMPTY BENCH_VARIANTS=\"${VARIANTS[*]}\")."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
