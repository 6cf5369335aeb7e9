# shellcheck shell=bash
# Shared helpers for the benchmarks in bench/: throwaway PostgreSQL 15 and
# Garage (S3) services on free loopback ports, buckets and keys, the dataset,
# a plain S3 client for the baselines, and process measurement.
#
# Usage, from a bench script:
#
#   source "$(dirname "$0")/lib.sh"
#   bench_init backup            # work dir + EXIT/INT/TERM cleanup
#   pg_start                     # sets PG_PORT, PG_SOCK, PG_PASSWORD, ...
#   garage_start                 # sets GARAGE_ENDPOINT, GARAGE_KEY_ID, ...
#   garage_bucket bench          # creates a bucket the key owns
#   dataset_generate bench       # database "bench", size from BENCH_SCALE
#   bench_measure "$dir" -- cmd args...   # wall, CPU, RSS, bytes written
#
# Everything lives under one directory, $BENCH_WORK (in $BENCH_TMPDIR, default
# /var/tmp: a real disk, not a tmpfs). The services are started with a
# parent-death signal, so they stop even if the bench script is killed with
# SIGKILL (a measured command in flight then fails or finishes on its own).
# On any other ending (including Ctrl-C and SIGTERM) the EXIT trap stops the
# command in flight and the services, and removes $BENCH_WORK (kept with
# BENCH_KEEP_WORK=1 for debugging). Directories of runs that were killed are
# swept at the next start.
#
# Running as root is fine: initdb and postgres run as the `postgres` user.
#
# Conventions: functions are prefixed by what they act on (bench_, pg_,
# garage_, s3_, dataset_); they print progress to stderr and results to
# stdout; failures call bench_die.

BENCH_PG_MAJOR=${BENCH_PG_MAJOR:-15}
BENCH_PG_BIN=${BENCH_PG_BIN:-/usr/lib/postgresql/$BENCH_PG_MAJOR/bin}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
BENCH_PREFIX=pgbackup-bench-
BENCH_CLK_TCK=$(getconf CLK_TCK)

# ---- logging, errors, cleanup ---------------------------------------------

bench_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

_BENCH_CLEANUPS=()

# bench_on_exit CMD...: runs CMD (as one string, eval'd) at exit, last
# registered first.
bench_on_exit() { _BENCH_CLEANUPS+=("$*"); }

_bench_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM HUP ERR
  # A measured command still running (the script was interrupted): stop it
  # and its descendants first.
  if [[ -n ${_BENCH_MEASURED:-} ]] && kill -0 "$_BENCH_MEASURED" 2>/dev/null; then
    _bench_tree "$_BENCH_MEASURED"
    local -a tree=("$_BENCH_MEASURED" "${_BENCH_TREE[@]}")
    kill -TERM "${tree[@]}" 2>/dev/null || true
    # Give them 10 s to finish (pgbackup aborts its upload), then SIGKILL.
    for ((i = 0; i < 100; i++)); do
      kill -0 "${tree[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${tree[@]}" 2>/dev/null || true
    wait "$_BENCH_MEASURED" 2>/dev/null || true
  fi
  for ((i = ${#_BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${_BENCH_CLEANUPS[i]}" || true
  done
  _BENCH_CLEANUPS=()
  return "$rc"
}

# bench_init NAME: creates $BENCH_WORK and installs the cleanup traps.
bench_init() {
  local name=${1:-bench}
  set -euo pipefail
  _bench_sweep_stale
  BENCH_WORK=$(mktemp -d "$BENCH_TMPDIR/$BENCH_PREFIX$$-$name.XXXXXX")
  chmod 755 "$BENCH_WORK"
  export BENCH_WORK
  trap _bench_cleanup EXIT
  # set -e ends the script on an unchecked failure; say where.
  set -E
  trap '[[ -n ${_BENCH_ERR:-} ]] || { _BENCH_ERR=1; bench_log "failed (status $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"; }' ERR
  # An interrupt ends the script; the EXIT trap then cleans up.
  trap '_BENCH_ERR=1; bench_log "interrupted"; exit 130' INT
  trap '_BENCH_ERR=1; bench_log "terminated"; exit 143' TERM HUP
  if [[ -n ${BENCH_KEEP_WORK:-} ]]; then
    bench_on_exit "bench_log 'kept $BENCH_WORK (BENCH_KEEP_WORK)'"
  else
    bench_on_exit "rm -rf '$BENCH_WORK'"
  fi
  bench_log "work dir $BENCH_WORK"
}

# Removes work dirs of earlier runs whose script is gone (killed with -9).
_bench_sweep_stale() {
  local d pid
  for d in "$BENCH_TMPDIR/$BENCH_PREFIX"*; do
    [[ -d $d ]] || continue
    pid=${d#"$BENCH_TMPDIR/$BENCH_PREFIX"}
    pid=${pid%%-*}
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if ! kill -0 "$pid" 2>/dev/null; then
      bench_log "removing stale $d"
      rm -rf "$d"
    fi
  done
}

# ---- small utilities -------------------------------------------------------

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_rand_hex() { head -c "${1:-16}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# bench_wait_until TIMEOUT_S WHAT CMD...: polls CMD every 0.1 s.
bench_wait_until() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || bench_die "timed out after ${timeout}s waiting for $what"
    sleep 0.1
  done
}

# bench_median N...: the median (mean of the middle two for an even count).
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_calc EXPR: floating-point arithmetic (awk), e.g. bench_calc "2/3".
bench_calc() { awk "BEGIN { printf \"%.6g\n\", $* }"; }

# bench_fmt_bytes N: 1234567 -> "1.18 MiB".
bench_fmt_bytes() {
  awk -v n="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
    while (n >= 1024 && i < 5) { n /= 1024; i++ }
    if (i == 1) printf "%d B\n", n; else printf "%.2f %s\n", n, u[i] }'
}

# Machine description: one line per fact, "key: value".
bench_machine_info() {
  local cpu mem
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  echo "cpus: $(nproc) ($cpu)"
  echo "memory: $mem"
  echo "kernel: $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Runs CMD as the postgres user when we are root (initdb/postgres refuse root).
_bench_as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

# ---- PostgreSQL ------------------------------------------------------------

# pg_start: initdb into $BENCH_WORK/pg and start a postmaster on a free port.
# Sets PG_BIN, PG_DIR, PG_DATA, PG_SOCK, PG_PORT, PG_PASSWORD, PG_PID.
# Settings favour a fast throwaway cluster (no fsync); extra `-c` settings can
# be passed as arguments, e.g. pg_start -c shared_buffers=1GB.
pg_start() {
  PG_BIN=$BENCH_PG_BIN
  [[ -x $PG_BIN/postgres ]] ||
    bench_die "PostgreSQL $BENCH_PG_MAJOR not found in $PG_BIN: apt-get install postgresql-$BENCH_PG_MAJOR"
  PG_DIR=$BENCH_WORK/pg
  PG_DATA=$PG_DIR/data
  PG_SOCK=$PG_DIR/sock
  mkdir -p "$PG_SOCK"
  PG_PASSWORD=$(bench_rand_hex 12)
  printf '%s\n' "$PG_PASSWORD" >"$PG_DIR/pw"
  [[ $(id -u) -ne 0 ]] || chown -R postgres: "$PG_DIR"
  _bench_as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$PG_DIR/pw" \
    -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
    --no-sync --no-instructions >"$PG_DIR/initdb.log" 2>&1 ||
    { cat "$PG_DIR/initdb.log" >&2; bench_die "initdb failed"; }
  rm -f "$PG_DIR/pw"
  PG_PORT=$(bench_free_port)
  # The parent-death signal (SIGINT: fast shutdown) stops the cluster even
  # if this script is killed without running its traps.
  local -a as=()
  [[ $(id -u) -ne 0 ]] || as=(--reuid=postgres --regid=postgres --init-groups)
  # A simple command (not a function) in the background: $! is postgres.
  setpriv "${as[@]}" --pdeathsig INT -- "$PG_BIN/postgres" -D "$PG_DATA" \
    -p "$PG_PORT" -k "$PG_SOCK" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=100 -c logging_collector=off "$@" \
    </dev/null >/dev/null 2>"$PG_DIR/postgres.log" &
  PG_PID=$!
  bench_on_exit "pg_stop"
  bench_wait_until 60 "PostgreSQL to accept connections" \
    "$PG_BIN/pg_isready" -q -h "$PG_SOCK" -p "$PG_PORT"
  export PG_BIN PG_DIR PG_DATA PG_SOCK PG_PORT PG_PASSWORD PG_PID
  bench_log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (pid $PG_PID)"
}

# pg_stop: fast shutdown, then SIGKILL after 30 s. Idempotent.
pg_stop() {
  [[ -n ${PG_PID:-} ]] || return 0
  if kill -0 "$PG_PID" 2>/dev/null; then
    kill -INT "$PG_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
      kill -0 "$PG_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$PG_PID" 2>/dev/null || true
  fi
  wait "$PG_PID" 2>/dev/null || true
  PG_PID=
}

# pg_psql DB [psql args...]: superuser psql over the socket, unaligned output.
pg_psql() {
  local db=$1
  shift
  "$PG_BIN/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"
}

# pg_url DB: postgres:// URL over TCP with the password (what pgbackup gets).
pg_url() { echo "postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/$1"; }

# pg_url_nopw DB: the same without the password; pass PGPASSWORD separately.
pg_url_nopw() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"; }

# pg_cpu_ticks: CPU ticks used so far by the whole cluster: the postmaster,
# its live children, and the children it has reaped (exited backends, e.g.
# the one that served a finished pg_dump). Differences measure a run.
pg_cpu_ticks() {
  local total p
  total=$(_bench_proc_ticks "$PG_PID" all)
  for p in $(_bench_children "$PG_PID"); do
    total=$((total + $(_bench_proc_ticks "$p" all)))
  done
  echo "$total"
}

# ---- Garage (S3) -----------------------------------------------------------

bench_garage_bin() {
  local c
  for c in "${GARAGE_BIN:-}" "$(command -v garage 2>/dev/null || true)" \
    "${CARGO_HOME:-$HOME/.cargo}/bin/garage" /usr/local/bin/garage; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  bench_die "garage not found: cargo install --locked garage --version 2.5.0 (or set GARAGE_BIN)"
}

# garage_start: a single Garage node on free loopback ports with one access
# key. Sets GARAGE_BIN, GARAGE_DIR, GARAGE_CONFIG, GARAGE_ENDPOINT,
# GARAGE_REGION, GARAGE_KEY_ID, GARAGE_SECRET, GARAGE_PID.
#
# BENCH_GARAGE_COMPRESSION (default "none") is Garage's compression_level for
# stored blocks. Garage's own default is zstd level 1; on a shared 2-core box
# that would bill the store's compression to whatever is being measured, while
# in production the store runs elsewhere. Data is not fsync'd (Garage default).
garage_start() {
  GARAGE_BIN=$(bench_garage_bin)
  GARAGE_DIR=$BENCH_WORK/garage
  mkdir -p "$GARAGE_DIR"
  local s3 rpc
  s3=$(bench_free_port)
  rpc=$(bench_free_port)
  GARAGE_CONFIG=$GARAGE_DIR/garage.toml
  GARAGE_REGION=garage
  cat >"$GARAGE_CONFIG" <<EOF
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "${BENCH_GARAGE_COMPRESSION:-none}"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(bench_rand_hex 32)"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
  RUST_LOG=warn setpriv --pdeathsig INT -- "$GARAGE_BIN" -c "$GARAGE_CONFIG" server \
    </dev/null >/dev/null 2>"$GARAGE_DIR/garage.log" &
  GARAGE_PID=$!
  bench_on_exit "garage_stop"
  local node=""
  local deadline=$((SECONDS + 60))
  until node=$(garage_cli node id -q 2>/dev/null) && [[ -n $node ]]; do
    kill -0 "$GARAGE_PID" 2>/dev/null || { cat "$GARAGE_DIR/garage.log" >&2; bench_die "garage exited"; }
    ((SECONDS < deadline)) || bench_die "timed out waiting for garage"
    sleep 0.2
  done
  node=${node%%@*}
  # The node id is readable before the RPC server listens: wait for that too.
  until garage_cli status >/dev/null 2>&1; do
    ((SECONDS < deadline)) || bench_die "timed out waiting for garage's RPC"
    sleep 0.2
  done
  garage_cli layout assign -z dc1 -c 100G "$node" >/dev/null
  garage_cli layout apply --version 1 >/dev/null
  GARAGE_KEY_ID=GK$(bench_rand_hex 12)
  GARAGE_SECRET=$(bench_rand_hex 32)
  garage_cli key import --yes -n bench "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null
  GARAGE_ENDPOINT=http://127.0.0.1:$s3
  bench_wait_until 30 "garage S3 port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$s3"
  export GARAGE_BIN GARAGE_DIR GARAGE_CONFIG GARAGE_ENDPOINT GARAGE_REGION GARAGE_KEY_ID GARAGE_SECRET GARAGE_PID
  bench_log "Garage $("$GARAGE_BIN" --version 2>/dev/null | awk '{sub(/^cargo:/, "", $2); print $2}') S3 on $GARAGE_ENDPOINT (pid $GARAGE_PID)"
}

# garage_stop: SIGINT (a clean shutdown; SIGTERM makes it abort), then
# SIGKILL after 10 s. Idempotent.
garage_stop() {
  [[ -n ${GARAGE_PID:-} ]] || return 0
  kill -INT "$GARAGE_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$GARAGE_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$GARAGE_PID" 2>/dev/null || true
  wait "$GARAGE_PID" 2>/dev/null || true
  GARAGE_PID=
}

garage_cli() { RUST_LOG=warn "$GARAGE_BIN" -c "$GARAGE_CONFIG" "$@"; }

# garage_bucket NAME: creates a bucket owned by the bench key.
garage_bucket() {
  garage_cli bucket create "$1" >/dev/null
  garage_cli bucket allow --read --write --owner "$1" --key "$GARAGE_KEY_ID" >/dev/null
}

# garage_cpu_ticks: CPU ticks used so far by the Garage server (all threads).
garage_cpu_ticks() { _bench_proc_ticks "$GARAGE_PID" self; }

# pgbackup_s3_env BUCKET: exports the variables pgbackup needs for BUCKET.
pgbackup_s3_env() {
  export AWS_S3_BUCKET=$1 AWS_S3_ENDPOINT=$GARAGE_ENDPOINT AWS_S3_REGION=$GARAGE_REGION
  export AWS_S3_FORCE_PATH_STYLE=true
  export AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET
}

# ---- a plain S3 client (baselines, checks) ---------------------------------
#
# The AWS CLI (`aws s3 cp`): what a cron-and-shell backup would use. It is
# taken from PATH, or installed once with pip into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/pgbackup-bench. Its own config file (inside
# $BENCH_WORK) points it at Garage; the user's ~/.aws is not read. Uploads use
# the CLI's defaults: multipart above 8 MiB, 8 MiB parts, 10 in flight.
# Checksums are "when_required": since botocore 1.36 the default CRC32
# trailers are not accepted by every S3-compatible store.

s3_setup() {
  if [[ -n ${BENCH_AWS:-} ]]; then
    :
  elif command -v aws >/dev/null 2>&1 && aws --version >/dev/null 2>&1; then
    BENCH_AWS=$(command -v aws)
  else
    local venv=${XDG_CACHE_HOME:-$HOME/.cache}/pgbackup-bench/venv
    if [[ ! -x $venv/bin/aws ]]; then
      bench_log "installing the AWS CLI into $venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q awscli
    fi
    BENCH_AWS=$venv/bin/aws
  fi
  cat >"$BENCH_WORK/aws-config" <<EOF
[default]
region = $GARAGE_REGION
request_checksum_calculation = when_required
response_checksum_validation = when_required
s3 =
    addressing_style = path
EOF
  # The same as an executable, for /usr/bin/time and bench_measure.
  mkdir -p "$BENCH_WORK/bin"
  BENCH_S3=$BENCH_WORK/bin/s3
  {
    echo '#!/bin/sh'
    echo "exec env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN \\"
    echo "  AWS_CONFIG_FILE='$BENCH_WORK/aws-config' AWS_SHARED_CREDENTIALS_FILE=/dev/null \\"
    echo "  AWS_ACCESS_KEY_ID='$GARAGE_KEY_ID' AWS_SECRET_ACCESS_KEY='$GARAGE_SECRET' \\"
    echo "  '$BENCH_AWS' --endpoint-url '$GARAGE_ENDPOINT' \"\$@\""
  } >"$BENCH_S3"
  chmod 700 "$BENCH_S3"
  export BENCH_AWS BENCH_S3
  bench_log "S3 client: $("$BENCH_AWS" --version 2>&1 | awk '{print $1}')"
}

# s3 ARGS...: the AWS CLI against Garage with the bench key ($BENCH_S3 is
# the same command as an executable).
s3() { "$BENCH_S3" "$@"; }

# s3_upload FILE BUCKET KEY
s3_upload() { s3 s3 cp --only-show-errors "$1" "s3://$2/$3"; }

# s3_size BUCKET KEY: the stored object's size in bytes.
s3_size() { s3 s3api head-object --bucket "$1" --key "$2" --query ContentLength --output text; }

# s3_keys BUCKET [PREFIX]: keys, one per line.
s3_keys() {
  s3 s3api list-objects-v2 --bucket "$1" --prefix "${2:-}" --query 'Contents[].Key' --output text |
    tr '\t' '\n' | grep -v '^None$' || true
}

s3_delete() { s3 s3 rm --only-show-errors "s3://$1/$2"; }

# ---- dataset ----------------------------------------------------------------
#
# dataset_generate DB: a database with realistic, partly incompressible rows:
#   - pgbench's tables (`pgbench -i -s SCALE`, server-side generation):
#     narrow, very compressible rows (pgbench_accounts: 100k rows per unit);
#   - bench_events: EVENT_ROWS rows of an application table: timestamps,
#     an md5 token, a jsonb document (random numbers, choices, a session id)
#     and 48 random bytes as bytea. Random values make it partly
#     incompressible. Generated with a fixed seed, so it is reproducible.
# Then VACUUM (FREEZE, ANALYZE) and CHECKPOINT, so that no dump pays for
# setting hint bits.
#
# Sizes (BENCH_SCALE; BENCH_PGBENCH_SCALE and BENCH_EVENT_ROWS override):
#   small: pgbench -s 5,   200k events: ~0.15 GB, for a smoke run
#   full:  pgbench -s 100, 3M events:   ~2.5 GB
# BENCH_DATASET_SEED (optional, 1..9999) gives bench_events other random
# rows, so that several databases of one run differ (identical databases
# would let the store deduplicate their blocks); unset, the seed is the
# historical one and the rows are the same as always.
dataset_generate() {
  local db=$1 pgscale events seed=${BENCH_DATASET_SEED:-}
  [[ -z $seed || $seed =~ ^[1-9][0-9]{0,3}$ ]] || bench_die "BENCH_DATASET_SEED must be 1..9999, not '$seed'"
  case ${BENCH_SCALE:-full} in
    small) pgscale=5 events=200000 ;;
    full) pgscale=100 events=3000000 ;;
    *) bench_die "BENCH_SCALE must be small or full, not '${BENCH_SCALE}'" ;;
  esac
  pgscale=${BENCH_PGBENCH_SCALE:-$pgscale}
  events=${BENCH_EVENT_ROWS:-$events}
  bench_log "dataset: pgbench -i -s $pgscale + $events event rows into '$db'"
  pg_psql postgres -c "CREATE DATABASE $db"
  "$PG_BIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -i -q -s "$pgscale" \
    -I dtGp "$db" >"$BENCH_WORK/pgbench-init.log" 2>&1 ||
    { cat "$BENCH_WORK/pgbench-init.log" >&2; bench_die "pgbench -i failed"; }
  pg_psql "$db" <<'SQL'
CREATE TABLE bench_events (
  id         bigint PRIMARY KEY,
  created_at timestamptz NOT NULL,
  account_id int NOT NULL,
  kind       text NOT NULL,
  token      text NOT NULL,
  payload    jsonb NOT NULL,
  blob       bytea NOT NULL
);
SQL
  # In batches of 500k rows, for progress and bounded transactions.
  local batch=500000 from=1 to
  while ((from <= events)); do
    to=$((from + batch - 1))
    ((to <= events)) || to=$events
    local seed_sql="${from}::float8 / ${events} / 2"
    [[ -z $seed ]] || seed_sql="($seed + $seed_sql) / 10000"
    pg_psql "$db" <<SQL
SELECT setseed($seed_sql);
INSERT INTO bench_events
SELECT g,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '7 seconds' + random() * interval '5 seconds',
       (random() * 1000000)::int,
       (ARRAY['login', 'logout', 'purchase', 'view', 'search', 'refund'])[1 + (random() * 5)::int],
       md5(random()::text),
       jsonb_build_object(
         'ip', format('%s.%s.%s.%s', (random() * 255)::int, (random() * 255)::int,
                      (random() * 255)::int, (random() * 255)::int),
         'user_agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
                              'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15',
                              'curl/8.5.0', 'okhttp/4.12.0'])[1 + (random() * 3)::int],
         'amount', round((random() * 1000)::numeric, 2),
         'items', (random() * 20)::int,
         'session', md5(random()::text),
         'flags', jsonb_build_array(random() < 0.5, random() < 0.1, random() < 0.01)),
       decode(md5(random()::text) || md5(random()::text) || substr(md5(random()::text), 1, 32), 'hex')
FROM generate_series($from, $to) g;
SQL
    bench_log "  bench_events: $to / $events"
    from=$((to + 1))
  done
  pg_psql "$db" -c "VACUUM (FREEZE, ANALYZE)"
  pg_psql "$db" -c "CHECKPOINT"
}

# dataset_size DB: pg_database_size in bytes.
dataset_size() { pg_psql "$1" -c "SELECT pg_database_size(current_database())"; }

# ---- process measurement ----------------------------------------------------

# _bench_proc_ticks PID self|all: utime+stime (self), plus the reaped
# children's cutime+cstime (all), in clock ticks; 0 if the process is gone.
_bench_proc_ticks() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || { echo 0; return 0; }
  # After "pid (comm) " come state (field 3) ... utime (14), stime (15),
  # cutime (16), cstime (17): indexes 11..14 here.
  local -a f=(${stat##*) })
  if [[ $2 == all ]]; then
    echo $((f[11] + f[12] + f[13] + f[14]))
  else
    echo $((f[11] + f[12]))
  fi
}

# _bench_children PID: the children of every thread of PID, one per line.
_bench_children() {
  local t c
  for t in /proc/"$1"/task/*/children; do
    c=
    read -r c 2>/dev/null <"$t" || true
    [[ -z $c ]] || printf '%s\n' $c
  done
}

# _bench_tree PID: sets the array _BENCH_TREE to all descendants of PID
# (without forking: the sampler calls this ten times a second).
_bench_tree() {
  _BENCH_TREE=()
  local -a queue=("$1")
  local t c p
  while ((${#queue[@]})); do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    for t in /proc/"$p"/task/*/children; do
      c=
      read -r c 2>/dev/null <"$t" || true
      [[ -z $c ]] && continue
      # shellcheck disable=SC2206
      queue+=($c)
      _BENCH_TREE+=($c)
    done
  done
}

# _bench_sys_ticks: "busy total" CPU ticks of the whole machine (/proc/stat).
_bench_sys_ticks() {
  local cpu user nice system idle iowait irq softirq steal rest
  read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# A sleep that does not fork: read with a timeout on a FIFO nobody writes.
_bench_nap() {
  if [[ -z ${_BENCH_NAP_FD:-} ]]; then
    mkfifo "$BENCH_WORK/.nap"
    exec {_BENCH_NAP_FD}<>"$BENCH_WORK/.nap"
  fi
  read -r -t "$1" -u "$_BENCH_NAP_FD" _ || true
}

# bench_measure DIR [--] CMD...: runs CMD under /usr/bin/time -v (stdout and
# stderr piped into DIR/stdout, DIR/stderr; in directory $BENCH_CWD if set;
# DIR must be absolute then) and samples its process tree every
# BENCH_SAMPLE_INTERVAL seconds (default 0.1). Writes DIR/result, one
# key=value per line:
#   rc, wall_s                       exit status, wall time
#   time_maxrss_kb                   /usr/bin/time's "Maximum resident set
#       size": getrusage semantics, i.e. the max over CMD *and* the
#       descendants it waited for (e.g. pg_dump under pgbackup), not a sum
#   time_user_s, time_sys_s          CPU of CMD and its waited-for descendants
#   time_fs_out_blocks               "File system outputs" (512-byte blocks
#       written to storage by CMD and its waited-for descendants)
#   pg_cpu_s, garage_cpu_s           CPU of the PostgreSQL cluster (incl. the
#       backend serving the dump) and of Garage during the run
#   sys_busy_s, sys_total_s          CPU of the whole machine (all cores)
#   proc.<name>.hwm_kb               VmHWM (peak RSS) of each process of the
#       tree by command name (max over processes of that name), as last
#       sampled from /proc/<pid>/status: the process's *own* peak
#   proc.<name>.cpu_s                its CPU (utime+stime, last sample)
#   proc.<name>.start_s              when the first process of that name was
#       first seen, in seconds from the start (to within the interval)
#   proc.<name>.write_bytes          /proc/<pid>/io write_bytes: bytes it
#       caused to be written to storage (max over processes of that name);
#       like getrusage, this includes the children it has reaped
# The sampled values can miss what happens in the last interval before a
# process exits; /usr/bin/time's numbers are exact (but aggregated).
bench_measure() {
  local dir=$1
  shift
  [[ ${1:-} != -- ]] || shift
  mkdir -p "$dir"
  local interval=${BENCH_SAMPLE_INTERVAL:-0.1}
  local pg0=0 pg1=0 g0=0 g1=0 s0 s1 t0 t1 rc=0 tpid
  [[ -z ${PG_PID:-} ]] || pg0=$(pg_cpu_ticks)
  [[ -z ${GARAGE_PID:-} ]] || g0=$(garage_cpu_ticks)
  s0=$(_bench_sys_ticks)
  t0=$EPOCHREALTIME
  # The command's output goes through pipes to `cat`s outside the measured
  # tree: its own log lines must not count as local disk writes.
  local out_fd err_fd out_pid err_pid
  exec {out_fd}> >(exec cat >"$dir/stdout")
  out_pid=$!
  exec {err_fd}> >(exec cat >"$dir/stderr")
  err_pid=$!
  if [[ -n ${BENCH_CWD:-} ]]; then
    (cd "$BENCH_CWD" && exec /usr/bin/time -v -o "$dir/time.txt" "$@") >&"$out_fd" 2>&"$err_fd" &
  else
    /usr/bin/time -v -o "$dir/time.txt" "$@" >&"$out_fd" 2>&"$err_fd" &
  fi
  tpid=$!
  _BENCH_MEASURED=$tpid
  exec {out_fd}>&- {err_fd}>&-
  local -A name hwm wb cpu seen
  local stat p key val
  local -a f
  while :; do
    read -r stat 2>/dev/null <"/proc/$tpid/stat" || break
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]] || break
    _bench_tree "$tpid"
    for p in "${_BENCH_TREE[@]}"; do
      [[ -n ${seen[$p]:-} ]] || seen[$p]=$EPOCHREALTIME
      while read -r key val _; do
        case $key in
          Name:) name[$p]=$val ;;
          VmHWM:) ((val <= ${hwm[$p]:-0})) || hwm[$p]=$val ;;
        esac
      done 2>/dev/null <"/proc/$p/status" || true
      while read -r key val; do
        [[ $key != write_bytes: ]] || { ((val <= ${wb[$p]:-0})) || wb[$p]=$val; }
      done 2>/dev/null <"/proc/$p/io" || true
      if read -r stat 2>/dev/null <"/proc/$p/stat"; then
        # shellcheck disable=SC2206
        f=(${stat##*) })
        val=$((f[11] + f[12]))
        ((val <= ${cpu[$p]:-0})) || cpu[$p]=$val
      fi
    done
    _bench_nap "$interval"
  done
  wait "$tpid" || rc=$?
  t1=$EPOCHREALTIME
  _BENCH_MEASURED=
  wait "$out_pid" "$err_pid" 2>/dev/null || true
  s1=$(_bench_sys_ticks)
  [[ -z ${GARAGE_PID:-} ]] || g1=$(garage_cpu_ticks)
  # Let the postmaster reap the backend that served the run.
  _bench_nap 0.3
  [[ -z ${PG_PID:-} ]] || pg1=$(pg_cpu_ticks)
  {
    echo "rc=$rc"
    echo "wall_s=$(bench_calc "${t1/,/.} - ${t0/,/.}")"
    awk -F': ' '
      /Maximum resident set size/ { print "time_maxrss_kb=" $2 }
      /User time \(seconds\)/ { print "time_user_s=" $2 }
      /System time \(seconds\)/ { print "time_sys_s=" $2 }
      /File system outputs/ { print "time_fs_out_blocks=" $2 }' "$dir/time.txt"
    echo "pg_cpu_s=$(bench_calc "($pg1 - $pg0) / $BENCH_CLK_TCK")"
    echo "garage_cpu_s=$(bench_calc "($g1 - $g0) / $BENCH_CLK_TCK")"
    echo "sys_busy_s=$(bench_calc "(${s1% *} - ${s0% *}) / $BENCH_CLK_TCK")"
    echo "sys_total_s=$(bench_calc "(${s1#* } - ${s0#* }) / $BENCH_CLK_TCK")"
    local -A n_hwm n_wb n_cpu n_start
    for p in "${!name[@]}"; do
      key=${name[$p]// /_}
      val=$(bench_calc "${seen[$p]/,/.} - ${t0/,/.}")
      [[ -n ${n_start[$key]:-} ]] && awk -v a="$val" -v b="${n_start[$key]}" 'BEGIN { exit !(a >= b) }' || n_start[$key]=$val
      ((${hwm[$p]:-0} <= ${n_hwm[$key]:-0})) || n_hwm[$key]=${hwm[$p]}
      ((${wb[$p]:-0} <= ${n_wb[$key]:--1})) || n_wb[$key]=${wb[$p]:-0}
      n_cpu[$key]=$((${n_cpu[$key]:-0} + ${cpu[$p]:-0}))
    done
    for key in "${!n_wb[@]}"; do
      echo "proc.$key.hwm_kb=${n_hwm[$key]:-0}"
      echo "proc.$key.write_bytes=${n_wb[$key]}"
      echo "proc.$key.cpu_s=$(bench_calc "${n_cpu[$key]} / $BENCH_CLK_TCK")"
      echo "proc.$key.start_s=${n_start[$key]:-0}"
    done
  } >"$dir/result"
  return "$rc"
}

# bench_get FILE KEY [DEFAULT]: a value from a bench_measure result file.
bench_get() {
  local v
  v=$(awk -F= -v k="$2" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$1")
  echo "${v:-${3:-0}}"
}

# ---- pgbackup ---------------------------------------------------------------

# pgbackup_build: sets PGBACKUP_BIN. When it is not set already, builds the
# release binary of this checkout (`cargo build --release`; a no-op when up
# to date) and uses target/release/pgbackup.
pgbackup_build() {
  if [[ -n ${PGBACKUP_BIN:-} ]]; then
    [[ -x $PGBACKUP_BIN ]] || bench_die "PGBACKUP_BIN=$PGBACKUP_BIN is not executable"
  else
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    bench_log "cargo build --release"
    (cd "$root" && cargo build --release --quiet) || bench_die "cargo build --release failed"
    PGBACKUP_BIN=$root/target/release/pgbackup
  fi
  export PGBACKUP_BIN
  bench_log "pgbackup: $PGBACKUP_BIN ($("$PGBACKUP_BIN" --version))"
}

# ---- the daemon (`pgbackup run`) ---------------------------------------------

# pgbackup_run_start DB BUCKET LOG [VAR=VALUE...]: starts `pgbackup run`
# (with a parent-death signal) against database DB and bucket BUCKET, in a
# clean environment (PATH, HOME and TMPDIR under $BENCH_WORK, JSON logs),
# listening on a free loopback port; extra VAR=VALUE settings override.
# Waits for /healthz. Sets PGB_PID, PGB_PORT, PGB_URL (http://127.0.0.1:port).
pgbackup_run_start() {
  local db=$1 bucket=$2 log=$3
  shift 3
  PGB_PORT=$(bench_free_port)
  mkdir -p "$BENCH_WORK/daemon/tmp" "$BENCH_WORK/daemon/home"
  env -i PATH="$PATH" HOME="$BENCH_WORK/daemon/home" TMPDIR="$BENCH_WORK/daemon/tmp" \
    BACKUP_LOG_FORMAT=json BACKUP_DATABASE_URL="$(pg_url "$db")" \
    BACKUP_LISTEN_ADDRESS="127.0.0.1:$PGB_PORT" \
    AWS_S3_BUCKET="$bucket" AWS_S3_ENDPOINT="$GARAGE_ENDPOINT" AWS_S3_REGION="$GARAGE_REGION" \
    AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" "$@" \
    setpriv --pdeathsig TERM -- "$PGBACKUP_BIN" run </dev/null >>"$log" 2>&1 &
  PGB_PID=$!
  PGB_URL=http://127.0.0.1:$PGB_PORT
  export PGB_PID PGB_PORT PGB_URL
  bench_on_exit "pgbackup_run_stop"
  local deadline=$((SECONDS + 60))
  until curl -fs -o /dev/null "$PGB_URL/healthz"; do
    kill -0 "$PGB_PID" 2>/dev/null || { tail -20 "$log" >&2; bench_die "pgbackup run exited"; }
    ((SECONDS < deadline)) || bench_die "timed out waiting for pgbackup run's /healthz"
    sleep 0.1
  done
  bench_log "pgbackup run on $PGB_URL (pid $PGB_PID)"
}

# pgbackup_run_stop: SIGTERM, then SIGKILL after 20 s; sets PGB_EXIT to the
# exit status (143 or 137 for a death by signal). Idempotent. Not in a
# subshell: the daemon must be this shell's child.
pgbackup_run_stop() {
  [[ -n ${PGB_PID:-} ]] || return 0
  local i
  PGB_EXIT=0
  kill -TERM "$PGB_PID" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    [[ $(_bench_proc_state "$PGB_PID") =~ ^[RSDI]$ ]] || break
    sleep 0.1
  done
  kill -KILL "$PGB_PID" 2>/dev/null || true
  wait "$PGB_PID" 2>/dev/null || PGB_EXIT=$?
  PGB_PID=
}

# pgbackup_metrics: one scrape of /metrics on stdout.
pgbackup_metrics() { curl -fsS --max-time 5 "$PGB_URL/metrics"; }

# metric_sum NAME < SCRAPE: the sum of the values of every series of NAME
# (all label sets), 0 when absent.
metric_sum() {
  awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.15g\n", s + 0 }'
}

# _bench_proc_state PID: the one-letter state (R, S, Z, ...), empty if gone.
_bench_proc_state() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 0
  stat=${stat##*) }
  echo "${stat:0:1}"
}

# proc_status_kb PID FIELD: a /proc/<pid>/status value (VmRSS, VmHWM,
# Threads, ...), 0 if the process is gone.
proc_status_kb() {
  awk -v f="$2:" '$1 == f { print $2; found = 1; exit } END { if (!found) print 0 }' \
    "/proc/$1/status" 2>/dev/null || echo 0
}

# proc_fds PID: open file descriptors.
proc_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# proc_zombie_children PID: children of PID in state Z.
proc_zombie_children() { ps -o stat= --ppid "$1" 2>/dev/null | grep -c '^Z' || true; }

# ---- shared by the benchmark scripts --------------------------------------

# bench_has_variant V: whether V is in the script's VARIANTS array.
bench_has_variant() {
  local v
  for v in "${VARIANTS[@]}"; do [[ $v != "$1" ]] || return 0; done
  return 1
}

# bench_summarize_phases DIR...: the wall time and CPU of the measured
# phases (bench_measure results), summed, as key=value lines.
bench_summarize_phases() {
  local wall=0 ccpu=0 pg=0 g=0 busy=0 total=0 trss=0 d r t
  for d in "$@"; do
    r=$d/result
    wall=$(bench_calc "$wall + $(bench_get "$r" wall_s)")
    ccpu=$(bench_calc "$ccpu + $(bench_get "$r" time_user_s) + $(bench_get "$r" time_sys_s)")
    pg=$(bench_calc "$pg + $(bench_get "$r" pg_cpu_s)")
    g=$(bench_calc "$g + $(bench_get "$r" garage_cpu_s)")
    busy=$(bench_calc "$busy + $(bench_get "$r" sys_busy_s)")
    total=$(bench_calc "$total + $(bench_get "$r" sys_total_s)")
    t=$(bench_get "$r" time_maxrss_kb)
    ((t <= trss)) || trss=$t
  done
  echo "wall_s=$wall"
  echo "client_cpu_s=$ccpu"
  echo "pg_cpu_s=$pg"
  echo "garage_cpu_s=$g"
  echo "sys_busy_s=$busy"
  echo "sys_total_s=$total"
  echo "time_rss_kb=$trss"
}

# bench_largest_process DIR...: the largest process seen in the phases,
# "<kB> <name>".
bench_largest_process() {
  local d
  for d in "$@"; do cat "$d/result"; done | awk -F'[.=]' '/^proc\..*\.hwm_kb=/ { n = $0; sub(/^proc\./, "", n); sub(/\.hwm_kb=.*/, "", n)
      if ($NF + 0 > best) { best = $NF + 0; name = n } } END { print best + 0, name }'
}

# bench_fail_run DIR WHAT: a measured command failed: show its output, stop.
bench_fail_run() {
  local dir=$1 what=$2
  bench_log "$what failed; its stdout and stderr:"
  tail -20 "$dir/stdout" "$dir/stderr" >&2 || true
  bench_die "$what failed"
}
