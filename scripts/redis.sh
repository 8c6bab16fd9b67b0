#!/usr/bin/env bash
# redis.sh — a private, throw-away redis-server for tests and demos.
#
#   scripts/redis.sh start  --dir D [--port P] [--watch-pid PID]   prints redis://127.0.0.1:PORT/0
#   scripts/redis.sh stop   --dir D
#   scripts/redis.sh status --dir D                                  prints the URL when running
#
# start runs redis-server bound to 127.0.0.1 on a free port (or P; a restart passes the old
# port), keeping nothing on disk (--save "" --appendonly no): a restart loses every key, which is
# exactly the fault the broker's Redis tests provoke. It never uses the machine's shared Redis
# on 6379. Everything it writes stays in D: redis.pid, redis.log, port.
# --watch-pid PID: the server is stopped as soon as PID exits (test binaries pass their own pid,
# so a killed `go test` leaves no Redis behind).
#
# Needs redis-server 6.2 or newer (the broker's Redis bus uses XTRIM MINID).
# When it is missing and we are root with apt-get, it is installed; otherwise the script says
# how to install it. REDIS_SERVER=/path/to/redis-server overrides the lookup.
set -euo pipefail

log() { printf 'redis.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# redis_server: the path of redis-server, installing it when possible.
redis_server() {
  if [[ -n "${REDIS_SERVER:-}" ]]; then
    [[ -x "$REDIS_SERVER" ]] || die "REDIS_SERVER=$REDIS_SERVER is not executable"
    printf '%s\n' "$REDIS_SERVER"
    return
  fi
  if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    return
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "redis-server not found; installing it with apt-get"
    # A lock file serialises parallel test binaries that both find it missing.
    (
      flock 9
      command -v redis-server >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 ||
          { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2; }; }
    ) 9>/tmp/redis-sh-install.lock || die "apt-get install redis-server failed"
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
    command -v redis-server
    return
  fi
  die "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or set REDIS_SERVER=/path/to/redis-server"
}

# free_port: a port nothing listens on now, never 6379. Bash's /dev/tcp connect fails on a free
# port; start retries with another port when the server still cannot bind.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 40000))
    [[ "$p" == 6379 ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      printf '%s\n' "$p"
      return
    fi
  done
  die "no free port found"
}

# pid_alive PID: true when PID runs and is not a zombie (an orphaned daemon's parent may never
# reap it).
pid_alive() {
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != Z ]]
}

# running_pid D: the pid of D's redis-server when it runs (checking the command line, so a
# recycled pid is never killed).
running_pid() {
  local dir="$1" pid cmdline
  [[ -f "$dir/redis.pid" ]] || return 1
  pid="$(cat "$dir/redis.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *redis-server* ]] || return 1
  printf '%s\n' "$pid"
}

# pong PORT: true when the server on PORT answers PING (plain bash, no redis-cli needed).
pong() {
  local port="$1" line
  {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 line <&3 || { exec 3>&-; return 1; }
    exec 3>&-
    [[ "$line" == +PONG* ]]
  } 2>/dev/null
}

parse_dir() {
  local dir=""
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n "$dir" ]] || die "--dir is required"
  printf '%s\n' "$dir"
}

cmd_start() {
  local dir="" port="" watch="" server try pid i
  while (($#)); do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --port) port="${2:?--port needs a value}"; shift 2 ;;
      --watch-pid) watch="${2:?--watch-pid needs a value}"; shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  [[ -n "$dir" ]] || die "start: --dir is required"
  [[ -z "$port" || "$port" =~ ^[0-9]+$ ]] || die "start: --port must be a number"
  [[ "$port" != 6379 ]] || die "start: refusing port 6379 (the machine's shared Redis)"
  server="$(redis_server)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if pid="$(running_pid "$dir")"; then
    die "start: a redis-server (pid $pid) already runs for $dir; stop it first"
  fi
  local fixed="$port"
  for try in 1 2 3 4 5; do
    [[ -n "$fixed" ]] || port="$(free_port)"
    rm -f "$dir/redis.pid"
    # Not daemonized: setsid puts the server in its own process group (stop kills the group,
    # the watchdog included) and the wrapper execs it, so redis.pid is the server's pid.
    # stdin/stdout/stderr are redirected so no caller's pipe is held open (Go's exec waits for
    # those to close).
    (cd "$dir" && exec setsid bash -c 'if [[ -n "$1" ]]; then
          (while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -TERM 0) </dev/null >/dev/null 2>&1 &
        fi
        shift; exec "$@"' redis-launch "$watch" \
      "$server" --port "$port" --bind 127.0.0.1 --protected-mode yes \
      --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" --daemonize no) \
      </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid" >"$dir/redis.pid"
    for ((i = 0; i < 100; i++)); do
      if pong "$port"; then
        echo "$port" >"$dir/port"
        printf 'redis://127.0.0.1:%s/0\n' "$port"
        return 0
      fi
      pid_alive "$pid" || break
      sleep 0.05
    done
    if pid_alive "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      die "start: redis-server did not answer PING within 5s; see $dir/redis.log"
    fi
    # It exited: most likely the port was taken meanwhile. Retry elsewhere unless told the port.
    if [[ -n "$fixed" ]] || ! grep -q -i 'address already in use' "$dir/redis.log" 2>/dev/null; then
      tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
      die "start: redis-server exited; see $dir/redis.log"
    fi
    log "port $port taken meanwhile; retrying"
  done
  die "start: could not find a free port"
}

cmd_stop() {
  local dir pid i
  dir="$(parse_dir "$@")"
  pid="$(running_pid "$dir")" || { rm -f "$dir/redis.pid"; return 0; }
  # SIGTERM: redis-server shuts down at once (nothing to save: --save "").
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || break
    sleep 0.05
  done
  if pid_alive "$pid"; then
    log "redis-server (pid $pid) ignored SIGTERM for 5s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/redis.pid"
}

cmd_status() {
  local dir
  dir="$(parse_dir "$@")"
  running_pid "$dir" >/dev/null || die "not running"
  printf 'redis://127.0.0.1:%s/0\n' "$(cat "$dir/port")"
}

main() {
  (($#)) || usage
  local cmd="$1"
  shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) log "unknown command $cmd"; usage ;;
  esac
}

main "$@"
