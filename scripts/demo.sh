#!/usr/bin/env bash
# make demo: a real Directus (SQLite) with a demo collection, the broker, and a Directus Flow that
# posts every item event of that collection to the broker's webhook. Runs in the foreground;
# Ctrl-C stops everything it started.
#
# Environment (all optional):
#   DIRECTUS_VERSION  11.17.4 (default) or 12.3.1
#   DIRECTUS_PORT     8055 (a free port is picked if it is taken)
#   BROKER_PORT       8080 (likewise)
#   DEMO_DIR          .demo (state: database, logs, secret)
#   DEMO_EXIT=1       set everything up, check an event arrives, print the summary and stop
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO_DIR="${DEMO_DIR:-$ROOT/.demo}"
BIN="$ROOT/bin/directus-ws-broker"
TOKEN="admin-token" # the harness's admin token: for a local demo only
COLLECTION="articles"
mkdir -p "$DEMO_DIR"

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  if port_free "$1"; then echo "$1"; else python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; fi
}

broker_pid=""
cleanup() {
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null || true
  scripts/directus.sh stop --dir "$DEMO_DIR/directus" >/dev/null 2>&1 || true
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x "$BIN" ]] || go build -o "$BIN" .
[[ -f "$DEMO_DIR/secret" ]] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$DEMO_DIR/secret"
SECRET="$(cat "$DEMO_DIR/secret")"

# 1. Directus, fresh SQLite database each run.
scripts/directus.sh stop --dir "$DEMO_DIR/directus" >/dev/null 2>&1 || true
rm -rf "$DEMO_DIR/directus"
dport="$(pick_port "${DIRECTUS_PORT:-8055}")"
say "starting Directus ${DIRECTUS_VERSION:-11.17.4} on port $dport (the first run installs it: a few minutes)"
DIRECTUS_URL="$(scripts/directus.sh start --dir "$DEMO_DIR/directus" --port "$dport" ${DIRECTUS_VERSION:+--version "$DIRECTUS_VERSION"})"

api() { # api METHOD PATH [JSON]
  curl -fsS -X "$1" "$DIRECTUS_URL$2" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' ${3:+-d "$3"}
}

# 2. The demo collection with two items.
api POST /collections '{"collection":"'$COLLECTION'","schema":{},"meta":{"icon":"article"},"fields":[
  {"field":"id","type":"integer","schema":{"is_primary_key":true,"has_auto_increment":true},"meta":{"hidden":true}},
  {"field":"title","type":"string","schema":{},"meta":{"interface":"input"}},
  {"field":"status","type":"string","schema":{"default_value":"draft"},"meta":{"interface":"input"}}]}' >/dev/null
api POST "/items/$COLLECTION" '[{"title":"Hello from the demo","status":"published"},{"title":"A draft","status":"draft"}]' >/dev/null

# 3. The broker.
bport="$(pick_port "${BROKER_PORT:-8080}")"
BROKER_URL="http://127.0.0.1:$bport"
say "starting the broker on $BROKER_URL (log: $DEMO_DIR/broker.log)"
DIRECTUS_URL="$DIRECTUS_URL" LISTEN_ADDR="127.0.0.1:$bport" WEBHOOK_SECRET="$SECRET" LOG_FORMAT=console \
  "$BIN" >"$DEMO_DIR/broker.out" 2>"$DEMO_DIR/broker.log" &
broker_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$BROKER_URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$broker_pid" 2>/dev/null || { cat "$DEMO_DIR/broker.log" >&2; exit 1; }
  sleep 0.1
done

# 4. The Flow: Directus → broker webhook; --check-collection proves an event arrives.
"$BIN" flow install --directus-url "$DIRECTUS_URL" --token "$TOKEN" --broker-url "$BROKER_URL/webhook" \
  --secret "$SECRET" --collections "$COLLECTION" --check-collection "$COLLECTION"

cat <<EOF2

  ✔ Directus      $DIRECTUS_URL   (admin@example.com / admin-password, token: $TOKEN)
  ✔ Broker        $BROKER_URL
  ✔ Flow          "directus-ws-broker": $COLLECTION create/update/delete → $BROKER_URL/webhook

  Test page:      $BROKER_URL/example/test.html   (token: $TOKEN, then Connect, Subscribe)
  Change an item in Directus ($DIRECTUS_URL/admin/content/$COLLECTION) and watch it arrive.

  Post a test event yourself:
    curl -i -X POST $BROKER_URL/webhook -H 'X-Webhook-Secret: $SECRET' -H 'Content-Type: application/json' \\
      -d '{"event":"$COLLECTION.items.update","payload":{"title":"curl"},"keys":["1"],"collection":"$COLLECTION"}'

  Ctrl-C stops everything.
EOF2

if [[ "${DEMO_EXIT:-0}" == 1 ]]; then
  # Self-check (make test runs this): the printed curl line is accepted.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BROKER_URL/webhook" -H "X-Webhook-Secret: $SECRET" \
    -H 'Content-Type: application/json' \
    -d '{"event":"'$COLLECTION'.items.update","payload":{"title":"curl"},"keys":["1"],"collection":"'$COLLECTION'"}')
  [[ "$code" == 202 ]] || { say "the curl line got HTTP $code, want 202"; exit 1; }
  say "self-check passed: the Flow reached the broker and the curl line got 202"
  exit 0
fi
wait "$broker_pid"
