# bench/roles/lib.sh — sourced by calibrate.sh and switch.sh: one `vidi up` at a time in $RUN.
#   up_start LOG WORKERS ROUTER_ARGS: start it (VIDI, MODEL, BACKEND, DEVICES, WORKER_ARGS) and
#     wait until every worker has joined (3 min: a 2B model loads per worker); exit 1 if not
#   stop_up: stop it and whatever it started
#   place WORKERS: the list with a device per worker (round robin over DEVICES), unchanged without
# and the settings both take: VIDI_BUILD (build), BACKEND (cpu), MODEL (models/vidi-shapes),
# MEDIA_MAX / TEXT_MAX (64: max_tokens of the questions with media / without), MAX_REQUESTS (4096:
# the router's requests in flight, --max-requests; its default, 256, refuses a loaded GPU's
# text phase, whose sequences live a second or more each, below what the decoders could take)
B=${VIDI_BUILD:-build}
VIDI=$B/vidi LOADGEN=$B/bench/epd/epd_loadgen
BACKEND=${BACKEND:-cpu} MODEL=${MODEL:-models/vidi-shapes} MEDIA_MAX=${MEDIA_MAX:-64} TEXT_MAX=${TEXT_MAX:-64}
MAX_REQUESTS=${MAX_REQUESTS:-4096}
UP=
stop_up() {
  [ -n "$UP" ] && kill -TERM "$UP" 2>/dev/null && for _ in $(seq 1 50); do kill -0 "$UP" 2>/dev/null || break; sleep 0.1; done
  [ -f "$RUN/pids" ] && awk '{print $NF}' "$RUN/pids" | xargs -r kill -KILL 2>/dev/null
  rm -f "$RUN/pids"
  UP=
}

place() {
  [ -z "${DEVICES:-}" ] && { echo "$1"; return; }
  local out= i=0 d
  IFS=, read -ra devs <<<"$DEVICES"
  IFS=, read -ra ws <<<"$1"
  for w in "${ws[@]}"; do d=${devs[$((i % ${#devs[@]}))]}; out+="${out:+,}$w@$d"; i=$((i + 1)); done
  echo "$out"
}

up_start() {
  local log=$1 workers=$2 rargs=$3 want
  "$VIDI" up --run-dir "$RUN" --model "$MODEL" --workers "$(place "$workers")" --threads 1 \
    --backend "$BACKEND" --heartbeat-ms 250 ${WORKER_ARGS:+--worker-args "$WORKER_ARGS"} --router-args "--max-requests $MAX_REQUESTS $rargs" \
    >"$log" 2>&1 &
  UP=$!
  want=$(awk -F, '{print NF}' <<<"$workers")
  for _ in $(seq 1 1800); do [ "$(grep -c joined "$log")" -ge "$want" ] && break; sleep 0.1; done
  [ "$(grep -c joined "$log")" -ge "$want" ] || { cat "$log"; exit 1; }
}
