# tests/e2e/lib.sh — what the end-to-end scripts share (sourced, not run):
# a run folder, `vidi up` started and waited for, other background processes,
# and everything stopped and removed at exit.
#
#   source "$(dirname "$0")/../e2e/lib.sh"      (or the right relative path)
#   e2e_init NAME             RUN=/tmp/vidi-NAME.XXXXXX; the cleanup runs at exit
#   e2e_up VIDI MODEL WORKERS BACKEND [vidi up args...]
#                             start `vidi up --run-dir $RUN` (log $RUN/up.log) and
#                             wait until every worker of the comma list joined;
#                             on failure print the log and exit 1
#   e2e_bg PID                a background process to stop at exit (TERM, then KILL)

e2e_init() {
  RUN=$(mktemp -d "/tmp/vidi-$1.XXXXXX")
  E2E_UP_PID=
  E2E_PIDS=()
  trap e2e_cleanup EXIT
}

# TERM, wait up to 5 s, then KILL
e2e_stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null
}

e2e_cleanup() {
  for p in "${E2E_PIDS[@]}"; do e2e_stop "$p"; done
  if [ -n "${E2E_UP_PID:-}" ]; then
    e2e_stop "$E2E_UP_PID"
    # anything left of this run's workers and router
    [ -f "$RUN/pids" ] && awk '{print $NF}' "$RUN/pids" | xargs -r kill -KILL 2>/dev/null
  fi
  rm -rf "$RUN"
}

e2e_bg() { E2E_PIDS+=("$1"); }

e2e_up() {
  local vidi=$1 model=$2 workers=$3 backend=$4
  shift 4
  "$vidi" up --run-dir "$RUN" --model "$model" --workers "$workers" --threads 1 --backend "$backend" "$@" \
    >"$RUN/up.log" 2>&1 &
  E2E_UP_PID=$!
  local want
  want=$(awk -F, '{print NF}' <<<"$workers")
  for _ in $(seq 1 300); do
    [ "$(grep -c 'joined' "$RUN/up.log" 2>/dev/null)" -ge "$want" ] && return 0
    kill -0 "$E2E_UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "e2e: the workers did not join:"
  cat "$RUN/up.log"
  exit 1
}
