#!/usr/bin/env bash
# Brings up (and down) Tend on this machine: real Kafka and PostgreSQL, migrations, topics,
# dev keys, and every service that exists. Used by the Makefile.
#
#   stack.sh up     everything in the background; returns once every service answers /readyz
#   stack.sh run    the same in the foreground; Ctrl-C stops everything it started
#   stack.sh down   stop the services and the local Kafka and PostgreSQL
#   stack.sh infra  only Kafka and PostgreSQL (prints the exports to reach them)
#   stack.sh bench  infrastructure up, the benchmark report (bench/report.md and .png)
#   stack.sh lint   ruff, mypy (strict) and the import rules
#   stack.sh screenshots  infrastructure up, the console's screenshots (docs/screenshots/)
#   stack.sh test [pytest args]   the lint, infrastructure up, the whole suite, then stop what
#                   it started
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_PORT=${TEND_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TEND_KAFKA_CONTROLLER_PORT:-9093}
PG_PORT=${TEND_PG_PORT:-5432}
RUN="$STATE/run"
LOGS="$STATE/logs"
VENV="$ROOT/.venv"
mkdir -p "$RUN" "$LOGS"

# name:port of each service, in start order; a service runs when its app.py exists.
SERVICES=("ingest:${TEND_INGEST_PORT:-8001}" "scoring:${TEND_SCORING_PORT:-8002}" "outreach:${TEND_OUTREACH_PORT:-8003}" "console:${TEND_CONSOLE_PORT:-8000}")
# Ingest's customer export gathers from scoring and outreach.
export TEND_INGEST_SCORING_URL=${TEND_INGEST_SCORING_URL:-http://127.0.0.1:${TEND_SCORING_PORT:-8002}}
export TEND_INGEST_OUTREACH_URL=${TEND_INGEST_OUTREACH_URL:-http://127.0.0.1:${TEND_OUTREACH_PORT:-8003}}

# The console calls the three APIs.
export TEND_CONSOLE_INGEST_URL=${TEND_CONSOLE_INGEST_URL:-http://127.0.0.1:${TEND_INGEST_PORT:-8001}}
export TEND_CONSOLE_SCORING_URL=${TEND_CONSOLE_SCORING_URL:-http://127.0.0.1:${TEND_SCORING_PORT:-8002}}
export TEND_CONSOLE_OUTREACH_URL=${TEND_CONSOLE_OUTREACH_URL:-http://127.0.0.1:${TEND_OUTREACH_PORT:-8003}}
CONSOLE="$ROOT/services/console"

STARTED=()   # what this invocation started, to stop on exit (run / test)

ensure_venv() {
  local stamp="$VENV/.installed"
  if [[ -f $stamp && $stamp -nt $ROOT/pyproject.toml ]]; then return 0; fi
  local py=${TEND_PYTHON:-}
  if [[ -z $py ]]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        py=$candidate; break
      fi
    done
  fi
  [[ -n $py ]] || die "Python 3.11 is required: apt-get install python3.11 python3.11-venv (or set TEND_PYTHON)"
  if [[ ! -x $VENV/bin/python ]]; then
    "$py" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; "$py" -m venv "$VENV"; } \
      || die "could not create $VENV: apt-get install python3.11-venv"
  fi
  say "tend: installing Python packages into .venv ..."
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]" >"$LOGS/pip.log" 2>&1 \
    || die "pip install failed (see $LOGS/pip.log)"
  touch "$stamp"
}

# The console's browser assets (htmx, Chart.js, axe-core), pinned by its package-lock.json and
# installed with the machine's npm; the console serves them itself (no CDN).
ensure_console_assets() {
  local stamp="$CONSOLE/node_modules/.package-lock.json"
  if [[ -f $stamp && $stamp -nt $CONSOLE/package-lock.json ]]; then return 0; fi
  command -v npm >/dev/null || apt_install npm
  say "tend: installing the console's browser assets (npm ci) ..."
  (cd "$CONSOLE" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm.log" 2>&1) \
    || die "npm ci failed in services/console (see $LOGS/npm.log)"
  touch "$stamp"
}

# Debian's Chromium and its driver, for the console's browser tests (never a downloaded build).
ensure_browser() {
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then return 0; fi
  apt_install chromium chromium-driver
}

# promtool checks the alert rules of deploy/monitoring/ in the suite (Debian's prometheus package
# carries it; the server it also installs is never started here).
ensure_promtool() {
  # promtool alone (it checks the alert rules), unpacked from Debian's prometheus package into
  # the state folder: the Prometheus server is never installed, let alone started.
  command -v promtool >/dev/null && return 0
  local dir="$STATE/promtool"
  if [[ ! -x $dir/usr/bin/promtool ]]; then
    say "tend: fetching promtool (from Debian's prometheus package, unpacked, not installed) ..."
    rm -rf "$dir" && mkdir -p "$dir/deb"
    if ! (cd "$dir/deb" && apt-get download prometheus >/dev/null 2>&1); then
      apt_refresh
      (cd "$dir/deb" && apt-get download prometheus >/dev/null) \
        || die "apt-get download prometheus failed: check the network, then retry"
    fi
    dpkg-deb -x "$dir"/deb/prometheus_*.deb "$dir" || die "could not unpack the prometheus package"
    rm -rf "$dir/deb"
  fi
  export PATH="$dir/usr/bin:$PATH"
}

infra_up() {
  if [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    local dir="$STATE/kafka/broker"
    if ! { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }; then
      say "tend: starting Kafka on 127.0.0.1:$KAFKA_PORT ..."
      "$ROOT/deploy/local/kafka.sh" start "$dir" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
      STARTED+=(kafka)
    fi
    export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
  fi
  if [[ -z ${DATABASE_URL:-} ]]; then
    local dir="$STATE/postgres"
    if ! [[ -f $dir/data/postmaster.pid ]]; then
      say "tend: starting PostgreSQL on 127.0.0.1:$PG_PORT ..."
      STARTED+=(postgres)
    fi
    # On a running server this only makes the role and the database tend where they are
    # missing (a demo database dropped to start afresh).
    "$ROOT/deploy/local/postgres.sh" start "$dir" "$PG_PORT"
    export DATABASE_URL="postgresql+asyncpg://tend:tend@127.0.0.1:$PG_PORT/tend"
  fi
}

infra_down() {
  "$ROOT/deploy/local/kafka.sh" stop "$STATE/kafka/broker"
  "$ROOT/deploy/local/postgres.sh" stop "$STATE/postgres"
}

prepare() {
  ensure_venv
  ensure_console_assets
  infra_up
  "$VENV/bin/tend" migrate >/dev/null
  "$VENV/bin/tend" topics >/dev/null
  "$VENV/bin/tend" dev-keys "$STATE/dev-keys.env"
  if [[ ! -s $STATE/sink-secret ]]; then
    "$VENV/bin/python" -c 'import base64, os; print("whsec_" + base64.b64encode(os.urandom(32)).decode())' >"$STATE/sink-secret"
    chmod 600 "$STATE/sink-secret"
  fi
  # The console's session cookies stay valid across its restarts.
  if [[ ! -s $STATE/console-secret ]]; then
    "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$STATE/console-secret"
    chmod 600 "$STATE/console-secret"
  fi
  export TEND_CONSOLE_SESSION_SECRET=${TEND_CONSOLE_SESSION_SECRET:-$(cat "$STATE/console-secret")}
  # Local development delivers to the sinks on loopback.
  export TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS=true
  export TEND_OUTREACH_SMTP_PORT=${TEND_SMTP_PORT:-8025}
  # The demo measures the whole program too: 5% of customers hear no promotion at all.
  export TEND_OUTREACH_GLOBAL_CONTROL_PERCENT=${TEND_OUTREACH_GLOBAL_CONTROL_PERCENT:-5}
}

start_sinks() {
  local pid port=${TEND_SINKS_PORT:-8004}
  pid=$(service_pid sinks)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then return 0; fi
  port_open "$port" && die "port $port is taken: stop that process or set TEND_SINKS_PORT"
  port_open "${TEND_SMTP_PORT:-8025}" && die "port ${TEND_SMTP_PORT:-8025} is taken: stop that process or set TEND_SMTP_PORT"
  (cd "$ROOT" && TEND_SINK_WEBHOOK_SECRET=$(cat "$STATE/sink-secret") exec "$VENV/bin/python" \
      deploy/local/sinks.py --dir "$STATE/sinks" --http-port "$port" \
      --smtp-port "${TEND_SMTP_PORT:-8025}" >>"$LOGS/sinks.log" 2>&1) &
  echo $! >"$RUN/sinks.pid"
  STARTED+=(sinks)
  wait_port "$port" 30 "$!" || die "the local sinks did not start (see $LOGS/sinks.log)"
}

lint() {
  cd "$ROOT"
  "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check . \
    && "$VENV/bin/mypy" shared services cli tests bench \
    && "$VENV/bin/lint-imports" --no-logo --cache-dir "$STATE/import-linter"
}

service_pid() { cat "$RUN/$1.pid" 2>/dev/null || true; }

# The console's address and a one-time sign-in link for the marketing key (15 minutes).
console_link() {
  [[ -f $ROOT/services/console/app.py ]] || return 0
  local link
  link=$(cd "$ROOT" && "$VENV/bin/tend" console-link --keys-file "$STATE/dev-keys.env" \
    --secret-file "$STATE/console-secret" --key-env TEND_MARKETING_KEY) || return 0
  echo
  echo "Console   http://127.0.0.1:${TEND_CONSOLE_PORT:-8000}/"
  echo "  sign in as dev-marketing with this link (once, within 15 minutes; \`tend console-link\` makes another):"
  echo "  $link"
}

start_services() {
  local entry name port pid workers
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}; port=${entry##*:}
    [[ -f $ROOT/services/$name/app.py ]] || continue
    pid=$(service_pid "$name")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    port_open "$port" && die "port $port is taken: stop that process or set TEND_${name^^}_PORT"
    say "tend: starting $name on 127.0.0.1:$port ..."
    # Ingest holds no state of its own, so TEND_INGEST_WORKERS may run more processes on a
    # bigger box (each keeps its own /metrics). On 2 cores shared with Kafka and PostgreSQL a
    # second one did not measurably help (bench.bench_ingest --workers), so 1 by default.
    # Scoring and outreach own Kafka consumers and schedulers: always one.
    workers=1
    [[ $name == ingest ]] && workers=${TEND_INGEST_WORKERS:-1}
    (cd "$ROOT" && exec "$VENV/bin/uvicorn" "services.$name.app:create_app" --factory \
        --host 127.0.0.1 --port "$port" --no-access-log --loop uvloop --http httptools \
        --workers "$workers" >>"$LOGS/$name.log" 2>&1) &
    echo $! >"$RUN/$name.pid"
    STARTED+=("$name")
  done
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}; port=${entry##*:}
    [[ -f $ROOT/services/$name/app.py ]] || continue
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
      kill -0 "$(service_pid "$name")" 2>/dev/null || die "$name exited at start (see $LOGS/$name.log)"
      ((SECONDS < deadline)) || die "$name is not ready after 60 s (see $LOGS/$name.log)"
      sleep 0.3
    done
  done
}

stop_services() {
  local entry name pid
  for entry in "${SERVICES[@]}" sinks:0; do
    name=${entry%%:*}
    pid=$(service_pid "$name")
    [[ -n $pid ]] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
  done
}

stop_started() {
  local what
  for what in "${STARTED[@]}"; do
    case $what in
      kafka) "$ROOT/deploy/local/kafka.sh" stop "$STATE/kafka/broker" ;;
      postgres) "$ROOT/deploy/local/postgres.sh" stop "$STATE/postgres" ;;
      *) local pid; pid=$(service_pid "$what"); [[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -f "$RUN/$what.pid" ;;
    esac
  done
  STARTED=()
}

banner() {
  local entry name port
  echo
  echo "Tend is up."
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*}; port=${entry##*:}
    [[ -f $ROOT/services/$name/app.py ]] || continue
    [[ $name == console ]] && continue
    printf '  %-9s http://127.0.0.1:%s/docs\n' "$name" "$port"
  done
  echo "  Console   http://127.0.0.1:${TEND_CONSOLE_PORT:-8000}/ (sign in with TEND_MARKETING_KEY or TEND_OPS_KEY below, or a one-time link: tend console-link)"
  echo "  Kafka     ${KAFKA_BOOTSTRAP_SERVERS}"
  echo "  Postgres  ${DATABASE_URL}"
  echo "  Sinks     http://127.0.0.1:${TEND_SINKS_PORT:-8004}/ (webhooks, SMS and email outreach sent)"
  echo "  Logs      $LOGS/"
  echo "Dev API keys ($STATE/dev-keys.env):"
  sed 's/^/  /' "$STATE/dev-keys.env"
  echo
  echo "Try:  source .tend/dev-keys.env && curl -s -X POST http://127.0.0.1:8001/v1/orders \\"
  echo "        -H \"Authorization: Bearer \$TEND_INGEST_KEY\" -H 'content-type: application/json' \\"
  echo "        -d '{\"order_id\":\"o-1\",\"customer_id\":\"c-1\",\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"status\":\"paid\",\"amount\":\"25.00\",\"currency\":\"USD\"}'"
}

cmd=${1:-}; shift || true
case $cmd in
  up)
    prepare
    start_sinks
    start_services
    banner
    console_link
    ;;
  run)
    trap 'echo; say "tend: stopping ..."; stop_started; exit 0' INT TERM
    prepare
    start_sinks
    start_services
    banner
    # The demo's history ends on the day it was first loaded: a later run re-posts the same
    # events (all duplicates) instead of a history shifted to a new day.
    [[ -s $STATE/demo-day ]] || date -u +%F >"$STATE/demo-day"
    (cd "$ROOT" && TEND_DEMO_DAY=$(cat "$STATE/demo-day") "$VENV/bin/python" deploy/local/demo.py) \
      || say "tend: the demo failed (see above); the services keep running"
    console_link
    echo "Ctrl-C stops everything this command started."
    while true; do sleep 1; done
    ;;
  down)
    stop_services
    infra_down
    say "tend: stopped"
    ;;
  infra)
    ensure_venv
    infra_up
    echo "export KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS DATABASE_URL=$DATABASE_URL"
    ;;
  bench)
    trap 'stop_started' EXIT
    prepare
    cd "$ROOT"
    # One run, every part side by side on the same broker and database: printed, and written
    # to bench/report.md with a chart in bench/report.png.
    "$VENV/bin/python" -m bench.report "$@"
    ;;
  screenshots)
    trap 'stop_started' EXIT
    ensure_venv
    ensure_console_assets
    ensure_browser
    infra_up
    # A stack of its own (fresh database and topics) on the demo's data, in Chromium.
    (cd "$ROOT" && "$VENV/bin/python" -m tests.browser.screenshots "$@")
    ;;
  lint)
    ensure_venv
    lint || die "the lint failed (see above)"
    ;;
  test)
    trap 'stop_started' EXIT
    ensure_venv
    ensure_console_assets
    ensure_browser
    ensure_promtool
    # Lint gates the suite, as it gates landing.
    (lint) || die "the lint failed (see above): fix it before the suite runs"
    infra_up
    (cd "$ROOT" && "$VENV/bin/pytest" "$@")
    ;;
  *) die "usage: stack.sh up | run | down | infra | lint | bench | screenshots | test [pytest args]" ;;
esac
