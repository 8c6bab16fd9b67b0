#!/usr/bin/env bash
# Run the official @directus/sdk realtime suite (e2e/sdk/test/realtime.test.js) against the
# broker's realtime endpoint and against Directus's own /websocket, then the graphql-ws suite
# (e2e/sdk/test/graphql.test.js) against the broker's /graphql and Directus's own /graphql: the
# same tests must pass on both, so they test the protocol rather than the broker.
#
#   scripts/sdk-test.sh                          build, start a Directus and the broker, install
#                                                the Flow, run both suites against both targets,
#                                                stop everything (also on failure or Ctrl-C)
#   scripts/sdk-test.sh restart-broker STATE     restart the broker on its address  } used by the
#   scripts/sdk-test.sh restart-directus STATE   restart Directus on its port       } reconnect test
#
# Environment: SDK_TEST_TARGETS (default "broker directus"), SDK_TEST_SUITES (default "realtime
# graphql"), SDK_TEST_DIRECTUS_VERSION (default 11.17.4: the restricted-role tests need custom
# permissions, which 12.x refuses without a license), SDK_TEST_KEEP=1 keeps the state directory
# (logs) after the run.
#
# Needs: go, node >= 20 with npm (packages are cached in ~/.npm), and what scripts/directus.sh
# needs. Directus runs with WEBSOCKETS_ENABLED=true (its /websocket and /graphql) and 5-second
# access tokens (the suite waits for TOKEN_EXPIRED on a login session); the broker with realtime
# and GraphQL subscriptions in handshake mode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/sdk-test.sh"
BIN="$ROOT/bin/directus-ws-broker"
SECRET="sdk-test-webhook-secret"
TOKEN_TTL_S=5

log() { printf 'sdk-test: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# start_broker STATE ADDR: start the broker in the background on ADDR (port 0: any) and wait
# until it listens; records its pid and address in STATE. Its working directory is STATE, so no
# config.yaml of the caller's is read: the environment below is its whole configuration.
start_broker() {
  local state="$1" addr="$2" i
  : >"$state/broker.out"
  (cd "$state" && exec setsid env DIRECTUS_URL="$(cat "$state/directus-url")" LISTEN_ADDR="$addr" \
    WEBHOOK_SECRET="$SECRET" REALTIME_ENABLED=true REALTIME_AUTH_MODE=handshake \
    GRAPHQL_ENABLED=true GRAPHQL_AUTH_MODE=handshake LOG_LEVEL=warn LOG_FORMAT=json \
    "$BIN") </dev/null >"$state/broker.out" 2>>"$state/broker.log" &
  local pid=$!
  echo "$pid" >"$state/broker.pid"
  # Stop the broker when the run's main script is gone, even if it was killed (no trap ran).
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 2; done; kill -TERM "$2" 2>/dev/null' \
    sdk-test-watchdog "$(cat "$state/main-pid")" "$pid" </dev/null >/dev/null 2>&1 &
  for ((i = 0; i < 100; i++)); do
    if grep -q '^listening on ' "$state/broker.out"; then
      sed -n 's/^listening on //p' "$state/broker.out" | head -n1 >"$state/broker-addr"
      return 0
    fi
    kill -0 "$(cat "$state/broker.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$state/broker.log" >&2 || true
  die "the broker did not start"
}

stop_broker() {
  local state="$1" pid i
  [[ -s "$state/broker.pid" ]] || return 0
  pid="$(cat "$state/broker.pid")"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

start_directus() {
  local state="$1" port="${2:-0}" args=()
  mapfile -t args <"$state/directus-args"
  "$ROOT/scripts/directus.sh" start --dir "$state/directus" --port "$port" "${args[@]}" >"$state/directus-url"
}

cmd_restart_broker() {
  local state="${1:?restart-broker needs the state directory}"
  stop_broker "$state"
  start_broker "$state" "$(cat "$state/broker-addr")"
  log "broker restarted on $(cat "$state/broker-addr")"
}

cmd_restart_directus() {
  local state="${1:?restart-directus needs the state directory}"
  "$ROOT/scripts/directus.sh" stop --dir "$state/directus"
  start_directus "$state" "$(cat "$state/directus/port")"
  log "directus restarted on $(cat "$state/directus-url")"
}

# run_suite STATE TARGET REALTIME_URL RESTART_CMD RECONNECT_DELAY_MS
run_suite() {
  local state="$1" target="$2" url="$3" restart="$4" delay="$5" start=$SECONDS
  log "suite against $target ($url)"
  (cd "$ROOT/e2e/sdk" && DIRECTUS_URL="$(cat "$state/directus-url")" REALTIME_URL="$url" TARGET="$target" \
    TOKEN_TTL_MS=$((TOKEN_TTL_S * 1000)) RESTART_CMD="$restart" RECONNECT_DELAY_MS="$delay" \
    node --test --test-reporter=spec test/realtime.test.js)
  log "suite against $target passed in $((SECONDS - start)) s"
}

# run_graphql_suite STATE TARGET GRAPHQL_URL
run_graphql_suite() {
  local state="$1" target="$2" url="$3" start=$SECONDS
  log "graphql suite against $target ($url)"
  (cd "$ROOT/e2e/sdk" && DIRECTUS_URL="$(cat "$state/directus-url")" GRAPHQL_URL="$url" TARGET="$target" \
    node --test --test-reporter=spec test/graphql.test.js)
  log "graphql suite against $target passed in $((SECONDS - start)) s"
}

cmd_run() {
  local targets="${SDK_TEST_TARGETS:-broker directus}" suites=" ${SDK_TEST_SUITES:-realtime graphql} " version="${SDK_TEST_DIRECTUS_VERSION:-11.17.4}"
  local start=$SECONDS
  # STATE is global: the EXIT trap runs after this function's locals are gone.
  STATE="$(mktemp -d "${TMPDIR:-/tmp}/sdk-test.XXXXXX")"
  local state="$STATE"
  echo $$ >"$state/main-pid"
  cleanup() {
    local rc=$? state="$STATE"
    trap - EXIT INT TERM
    stop_broker "$state"
    "$ROOT/scripts/directus.sh" stop --dir "$state/directus" 2>/dev/null || true
    if ((rc != 0)); then
      log "failed; last lines of the logs in $state:"
      tail -n 20 "$state/broker.log" 2>/dev/null | sed 's/^/  broker: /' >&2 || true
      tail -n 20 "$state/directus/directus.log" 2>/dev/null | sed 's/^/  directus: /' >&2 || true
    fi
    if [[ "${SDK_TEST_KEEP:-}" == 1 ]]; then log "state kept in $state"; else rm -rf "$state"; fi
    exit "$rc"
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  log "building the broker"
  (cd "$ROOT" && go build -o "$BIN" .)
  log "installing the SDK suite's packages"
  (cd "$ROOT/e2e/sdk" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

  log "starting Directus $version"
  printf '%s\n' --version "$version" --watch-pid "$$" \
    --env WEBSOCKETS_ENABLED=true --env "ACCESS_TOKEN_TTL=${TOKEN_TTL_S}s" >"$state/directus-args"
  start_directus "$state"
  local dxurl
  dxurl="$(cat "$state/directus-url")"
  (cd "$ROOT/e2e/sdk" && DIRECTUS_URL="$dxurl" node fixture.js)

  start_broker "$state" 127.0.0.1:0
  local addr
  addr="$(cat "$state/broker-addr")"
  "$BIN" flow install --directus-url "$dxurl" --token admin-token --broker-url "http://$addr" \
    --secret "$SECRET" --collections sdk_articles,sdk_private,gql_countries,gql_states >/dev/null

  for target in $targets; do
    [[ "$suites" == *" realtime "* ]] || break
    case "$target" in
      # The SDK's reconnect delay must outlast the restart (see e2e/sdk/lib.js): the broker is
      # back within a second, Directus within about 10.
      broker) run_suite "$state" broker "ws://$addr/realtime" "'$SELF' restart-broker '$state'" 1000 ;;
      directus) run_suite "$state" directus "ws://${dxurl#http://}/websocket" "'$SELF' restart-directus '$state'" 20000 ;;
      *) die "unknown target $target (broker or directus)" ;;
    esac
  done
  for target in $targets; do
    [[ "$suites" == *" graphql "* ]] || break
    case "$target" in
      broker) run_graphql_suite "$state" broker "ws://$addr/graphql" ;;
      directus) run_graphql_suite "$state" directus "ws://${dxurl#http://}/graphql" ;;
    esac
  done
  log "all passed in $((SECONDS - start)) s"
}

case "${1:-run}" in
  run) cmd_run ;;
  restart-broker) shift; cmd_restart_broker "$@" ;;
  restart-directus) shift; cmd_restart_directus "$@" ;;
  -h | --help) sed -n '2,22p' "$SELF" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command $1 (see --help)" ;;
esac
