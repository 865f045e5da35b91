#!/usr/bin/env bash
# The demo of `make run` / `make stop`, on top of the services of `make services`.
#   scripts/run.sh start   register the demo client and a token (kept in the run dir, so the
#                          same one across restarts), start worker, API and a demo
#                          producer in the background, wait for /readyz, print a ready curl
#   scripts/run.sh stop    stop those three (the services are stopped by `make services-down`)
# Pid files and logs go to the run dir (DEVACT_RUN_DIR, default .run).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
RUN_DIR=${DEVACT_RUN_DIR:-.run}
DEVACT=$VENV/bin/devact
API_PORT=${DEVACT_API_PORT:-8000}
CLIENT_ID=aa7cf840-9ca9-46a3-9778-9015d6580d50
CLIENT_TZ=America/New_York
DEVICE_ID=f1e2d3c4-b5a6-7890-abcd-ef1234567890
READY_DEADLINE_S=60
STOP_DEADLINE_S=30

alive() { # alive NAME: the pid file of NAME names a live process
  local pid_file=$RUN_DIR/$1.pid
  [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_bg() { # start_bg NAME COMMAND...: run COMMAND detached, log and pid file in the run dir
  local name=$1
  shift
  if alive "$name"; then
    echo "$name: already running (pid $(cat "$RUN_DIR/$name.pid"))" >&2
    return
  fi
  nohup "$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  echo "$name: started (pid $!, log $RUN_DIR/$name.log)" >&2
}

stop_bg() { # stop_bg NAME: SIGTERM, wait, then SIGKILL
  local name=$1 pid_file=$RUN_DIR/$1.pid pid waited=0
  if ! alive "$name"; then
    rm -f "$pid_file"
    return
  fi
  pid=$(cat "$pid_file")
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_DEADLINE_S * 5)); do
    sleep 0.2
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: pid $pid ignored SIGTERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  echo "$name: stopped" >&2
}

wait_ready() { # wait_ready URL: poll until it answers 2xx, or fail with the API log
  local url=$1 deadline=$((SECONDS + READY_DEADLINE_S))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ((SECONDS >= deadline)) || ! alive api; then
      echo "the API is not ready at $url; last lines of $RUN_DIR/api.log:" >&2
      tail -n 30 "$RUN_DIR/api.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

port_taken() { # port_taken PORT: something accepts connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

demo_token() { # the demo token of an earlier start while it is still listed, else a new one
  local file=$RUN_DIR/demo-token token id
  if [[ -s $file ]]; then
    token=$(cat "$file")
    id=$(printf %s "$token" | sha256sum | cut -c1-12)
    if "$DEVACT" token list --client "$CLIENT_ID" --json | grep -q "\"id\":\"$id\""; then
      echo "$token"
      return
    fi
  fi
  token=$("$DEVACT" token create --client "$CLIENT_ID" --name demo)
  (umask 077 && echo "$token" >"$file")
  echo "$token"
}

start() {
  # Otherwise /readyz of whatever holds the port would pass for ours.
  if ! alive api && port_taken "$API_PORT"; then
    echo "port $API_PORT is taken by another process: set DEVACT_API_PORT" >&2
    exit 1
  fi
  if [[ ! -f $RUN_DIR/env ]]; then
    echo "no $RUN_DIR/env: start the services first (make services)" >&2
    exit 1
  fi
  set -a
  # shellcheck source=/dev/null
  source "$RUN_DIR/env"
  set +a

  "$DEVACT" client add "$CLIENT_ID" --timezone "$CLIENT_TZ" --name demo >&2
  local token
  token=$(demo_token)

  # A stable instance id: a restarted worker takes its partitions back at once (static membership).
  DEVACT_WORKER_INSTANCE_ID=${DEVACT_WORKER_INSTANCE_ID:-worker-1} start_bg worker "$DEVACT" worker
  start_bg api "$DEVACT" api --host 127.0.0.1 --port "$API_PORT"
  wait_ready "http://127.0.0.1:$API_PORT/readyz"
  # After the API is ready the worker has had time to declare the topics it consumes.
  start_bg producer "$DEVACT" produce --demo

  # The range is in the client's own calendar, as the API reads it.
  local today start_date
  today=$(TZ=$CLIENT_TZ date +%F)
  start_date=$(TZ=$CLIENT_TZ date -d "$today -14 days" +%F)
  cat <<MSG

device-activity is running: http://127.0.0.1:$API_PORT (docs: http://127.0.0.1:$API_PORT/docs)
Try:

curl -X GET "http://127.0.0.1:$API_PORT/v2/clients/$CLIENT_ID/analytics/devices/$DEVICE_ID/activity?start_date=$start_date&end_date=$today&metric=activity-count" -H "Authorization: Bearer $token"

Stop everything with: make stop
MSG
}

stop() {
  local name
  for name in producer api worker; do
    stop_bg "$name"
  done
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
