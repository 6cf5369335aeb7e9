#!/usr/bin/env bash
# One big backup: a single `pgbackup backup` of a database whose dump is
# >= 5 GiB, into Garage, with the resident memory of pgbackup (and of
# pg_dump) sampled every second. The claim under test: memory stays flat
# however large the dump, because the dump is streamed through the
# compressor into a multipart upload with a bounded number of parts in
# flight, never buffered whole and never written to local disk.
#
# The database: BIG_ROWS (default 2,700,000) rows of 1 KiB of random bytes
# (pgcrypto's gen_random_bytes) in one bytea column. COPY writes bytea as hex,
# so the dump is ~2 bytes per byte: ~5.2 GiB of dump from ~2.7 GB of table,
# generated in a few minutes. Hex of random bytes compresses to about half,
# so the stored object is ~2.7 GB: hundreds of 8 MiB parts.
#
# Reports: first, median and max RSS over the samples, the final VmHWM, the
# dump and stored sizes, the parts (from the stored size and from the ETag's
# "-N" suffix), wall time and throughput.
#
# Environment:
#   BIG_ROWS=2700000        rows of 1 KiB
#   BENCH_RESULTS           report path (default bench/results/big-backup.md)
#   PGBACKUP_BIN            binary to test (default: cargo build --release)
#   BENCH_TMPDIR=/var/tmp   work dir (needs ~6 GB: the table and Garage's copy)
#
# Needs: postgresql-15 (with pgcrypto), garage 2.5.0, the AWS CLI (lib.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

ROWS=${BIG_ROWS:-2700000}
RESULTS=${BENCH_RESULTS:-$HERE/results/big-backup.md}
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || bench_die "BIG_ROWS must be a positive integer"
DB=big
BUCKET=pgbackup-big
PART=$((8 * 1024 * 1024))

bench_init big-backup
pg_start
garage_start
garage_bucket "$BUCKET"
s3_setup
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine_info)

T0=$SECONDS
bench_log "dataset: $ROWS rows of 1 KiB random bytea into '$DB'"
pg_psql postgres -c "CREATE DATABASE $DB"
pg_psql "$DB" -c "CREATE EXTENSION pgcrypto" -c "CREATE TABLE big_blobs (id bigint PRIMARY KEY, payload bytea NOT NULL)"
batch=500000
for ((from = 1; from <= ROWS; from += batch)); do
  to=$((from + batch - 1))
  ((to <= ROWS)) || to=$ROWS
  pg_psql "$DB" -c "INSERT INTO big_blobs SELECT g, gen_random_bytes(1024) FROM generate_series($from, $to) g"
  bench_log "  big_blobs: $to / $ROWS"
done
pg_psql "$DB" -c "VACUUM (FREEZE, ANALYZE)"
pg_psql "$DB" -c "CHECKPOINT"
GEN_S=$((SECONDS - T0))
DB_SIZE=$(dataset_size "$DB")
bench_log "dataset ready in ${GEN_S}s: pg_database_size $(bench_fmt_bytes "$DB_SIZE")"
# After the dataset: a build can overlap with its generation.
pgbackup_build

# ---- the backup, sampled every second ----------------------------------------
mkdir -p "$BENCH_WORK/pgb/tmp" "$BENCH_WORK/pgb/home"
LOG=$BENCH_WORK/backup.log
SAMPLES=$BENCH_WORK/samples.tsv
printf 't_s\tpgbackup_rss_kb\tpg_dump_rss_kb\n' >"$SAMPLES"
S0=$(_bench_sys_ticks)
W0=$EPOCHREALTIME
env -i PATH="$PATH" HOME="$BENCH_WORK/pgb/home" TMPDIR="$BENCH_WORK/pgb/tmp" BACKUP_LOG_FORMAT=json \
  BACKUP_DATABASE_URL="$(pg_url "$DB")" \
  AWS_S3_BUCKET="$BUCKET" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION" \
  AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" \
  "$PGBACKUP_BIN" backup </dev/null >"$LOG" 2>&1 &
PID=$!
HWM=0
while [[ $(_bench_proc_state "$PID") =~ ^[RSDI]$ ]]; do
  dump_rss=0
  for c in $(_bench_children "$PID"); do
    [[ $(awk '$1 == "Name:" { print $2 }' "/proc/$c/status" 2>/dev/null) == pg_dump ]] &&
      dump_rss=$(proc_status_kb "$c" VmRSS)
  done
  rss=$(proc_status_kb "$PID" VmRSS)
  h=$(proc_status_kb "$PID" VmHWM)
  ((h <= HWM)) || HWM=$h
  printf '%s\t%s\t%s\n' "$(bench_calc "${EPOCHREALTIME/,/.} - ${W0/,/.}")" "$rss" "$dump_rss" >>"$SAMPLES"
  sleep 1
done
RC=0
wait "$PID" || RC=$?
W1=$EPOCHREALTIME
S1=$(_bench_sys_ticks)
((RC == 0)) || { tail -5 "$LOG" >&2; bench_die "pgbackup backup exited $RC"; }
WALL=$(bench_calc "${W1/,/.} - ${W0/,/.}")
KEY=$(s3_keys "$BUCKET" | grep -v '\.manifest\.json$' | head -1)
STORED=$(s3_size "$BUCKET" "$KEY")
ETAG=$(s3 s3api head-object --bucket "$BUCKET" --key "$KEY" --query ETag --output text)
ETAG_PARTS=$(sed -n 's/.*-\([0-9]*\)"*$/\1/p' <<<"$ETAG")
DUMP_BYTES=$(grep -o '"dump_bytes":[0-9]*' "$LOG" | tail -1 | cut -d: -f2)
TMP_FILES=$(find "$BENCH_WORK/pgb" -mindepth 2 | wc -l)

# ---- report -----------------------------------------------------------------------
col() { awk -F'\t' -v c="$1" 'NR > 1 && $c > 0 { print $c }' "$SAMPLES"; }
NS=$(($(wc -l <"$SAMPLES") - 1))
mibk() { awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }'; }
RSS_FIRST=$(col 2 | head -1)
RSS_MED=$(bench_median $(col 2))
RSS_MAX=$(col 2 | sort -g | tail -1)
# After the first 10 % of the run (start-up, the first parts in flight).
RSS_STEADY=$(col 2 | tail -n +$((NS / 10 + 1)))
STEADY_MIN=$(sort -g <<<"$RSS_STEADY" | head -1)
STEADY_MAX=$(sort -g <<<"$RSS_STEADY" | tail -1)
PARTS=$(((STORED + PART - 1) / PART))
PGB_VERSION=$("$PGBACKUP_BIN" --version | awk '{print $2}')
PGB_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || PGB_COMMIT+="+local changes"

report() {
  echo "# One big backup"
  echo
  echo "- date: $STARTED; one run"
  echo "$MACHINE" | sed 's/^/- /'
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- pgbackup $PGB_VERSION ($PGB_COMMIT, release build; defaults); PostgreSQL $("$BENCH_PG_BIN/postgres" --version | awk '{print $3}'); Garage (single node, same machine, compression off)"
  echo "- database: $ROWS rows of 1 KiB random bytea, pg_database_size $(bench_fmt_bytes "$DB_SIZE"), generated in ${GEN_S} s"
  echo
  echo "| measure | value |"
  echo "|---|---|"
  echo "| dump (uncompressed, \`dump_bytes\`) | $(bench_fmt_bytes "${DUMP_BYTES:-0}") |"
  echo "| stored | $(bench_fmt_bytes "$STORED") (\`$KEY\`) |"
  echo "| parts | $PARTS (stored size / 8 MiB, rounded up); the ETag says ${ETAG_PARTS:-?} |"
  echo "| wall time | $(printf '%.1f' "$WALL") s ($(awk -v b="${DUMP_BYTES:-0}" -v w="$WALL" 'BEGIN { printf "%.0f", b / w / 1048576 }') MiB/s of dump); machine busy $(awk -v a="${S0% *}" -v b="${S1% *}" -v c="${S0#* }" -v d="${S1#* }" 'BEGIN { printf "%.0f%%", 100 * (b - a) / (d - c) }') |"
  echo "| pgbackup RSS, first sample | $(mibk "$RSS_FIRST") |"
  echo "| pgbackup RSS, median | $(mibk "$RSS_MED") |"
  echo "| pgbackup RSS, max of the samples | $(mibk "$RSS_MAX") |"
  echo "| pgbackup RSS after the first 10 % of the run, min–max | $(mibk "$STEADY_MIN") – $(mibk "$STEADY_MAX") |"
  echo "| pgbackup peak (VmHWM, last seen) | $(mibk "$HWM") |"
  echo "| pg_dump RSS, median / max | $(mibk "$(bench_median $(col 3))") / $(mibk "$(col 3 | sort -g | tail -1)") |"
  echo "| files left in TMPDIR/HOME | $TMP_FILES |"
  echo
  echo "RSS over time (every ${NS}/20-th of the $NS one-second samples):"
  echo
  echo "| t (s) | pgbackup RSS | pg_dump RSS |"
  echo "|---|---|---|"
  awk -F'\t' -v n="$NS" 'BEGIN { step = int(n / 20); if (step < 1) step = 1 }
    NR > 1 && ((NR - 2) % step == 0 || NR == n + 1) { printf "| %.0f | %.1f MiB | %.1f MiB |\n", $1, $2 / 1024, $3 / 1024 }' "$SAMPLES"
  echo
  echo "How it is measured: VmRSS of the pgbackup process and of its pg_dump child from /proc/<pid>/status" \
    "once a second; VmHWM is the kernel's own peak for pgbackup. Parts: pgbackup uploads 8 MiB parts (the" \
    "part size doubles only after 1,000 parts); the ETag of a multipart object ends in -<parts>."
  echo "Run: \`bench/big-backup.sh\` (BIG_ROWS=$ROWS)."
}

mkdir -p "$(dirname "$RESULTS")"
report >"$RESULTS"
echo
cat "$RESULTS"
bench_log "written to $RESULTS"
