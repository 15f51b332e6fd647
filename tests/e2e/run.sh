#!/usr/bin/env bash
# tests/e2e/run.sh VIDI E2E_CLIENT MODEL EXAMPLES CASE — one end-to-end test
# (ctest label e2e): real `vidi up` processes (router and workers) on the
# CPU with vidi-shapes, a client over ZeroMQ, and a check.
#
# CASE:
#   answers-ipc  media, 2 encoders, prefill, decode as 5 processes over ipc://:
#                every question of examples/questions.tsv gets the answer of
#                single-process `vidi generate` (videos split over 2 encoders,
#                KV handed from prefill to decode; on CUDA through CUDA IPC,
#                asserted through the workers' ipc counters)
#   answers-tcp  the same over tcp://127.0.0.1 (front, back and data sockets)
#   colocated    one worker with every role (`--role all`, the baseline)
#   spec         colocated workers with speculative decoding by prompt lookup
#                (`--worker-args "--spec ngram:4"`): the same answers as `vidi
#                generate`, and the workers' spec counters show drafts proposed,
#                some accepted
#   spec-draft   media, encode, prefill, decode as 4 processes with the draft model
#                (`--spec draft:4 --draft MODEL-draft`): its vision tower in the
#                encoder, its prefill, its KV handed to decode beside the target's
#                (PROTOCOL.md §5.5); every question twice (the second time from the
#                MM-token cache, the draft's rows with it): the answers of `vidi
#                generate` both times, every request prefilled by the draft too,
#                drafts proposed and accepted
#   cache        a repeated video hits the MM-token cache: no media, no encode
#   bad          malformed messages get ERROR replies; the router goes on
#   gone         a client that goes away with 40 requests open: they are cancelled
#   batch        24 requests at once: the encoder batches WORKs across requests
#   chat         REQUEST's messages form (one turn = the prompt form; three turns)
#   sdk          the C SDK (CLIENT = tests/sdk/e2e_sdk): answers, streaming, errors
#   sdk-curve    the C SDK against a router whose front is CURVE-encrypted
#   monitor      the router's load monitor (label roles): per stage its workers, queue,
#                busy share and time per unit of work while 40 requests run 8 at a time,
#                then the latency window against loose targets (all met) and, after a
#                restart with --ttft-ms 1 --tpot-ms 1, against targets nothing meets
#   roles-shift  role switching by load (label roles): media, two encode, prefill and two
#                decode workers under `--switch-ms 1000`; an image-heavy phase (every question
#                of examples/questions.tsv, short answers) and then a text-heavy one
#                (questions without media) on decoders of 4 sequences a step, TPOT target
#                20 ms; a worker moves to the first phase's bottleneck (an encoder or prefill
#                here), one more to prefill or decode in the second (unless the first left
#                media and encode one worker each), no request is lost or
#                answered wrongly, and a watcher sees every stage with a worker that is not
#                draining throughout
#   roles-share  `--switch-share 1` (label roles): one worker a stage under the same two phases;
#                workers take starved roles besides their own (more roles than workers; a
#                stage of one worker gives by keeping its role), nothing lost, every answer
#                right, no stage ever without a worker
#   roles-judge  a move to decode for TPOT judged by its effect (label roles): every process
#                on one core, a TPOT target no decoder meets (1 ms) under questions without
#                media 2 at a time; encoders move to decode, one such move is found unhelpful
#                (`switches_unhelpful`; the router keeps TPOT in µs: whole milliseconds let a
#                move pass by rounding), and for the next 8 s no other worker moves to decode; nothing
#                lost, every answer right
#   roles-forced forced switches (`vidi role --wait`) while 60 image and video questions
#                and 600 questions without media run (decoders of 2 sequences a step, so
#                that sequences wait there; speculating with the draft model): a decode
#                worker becomes an encoder (its sequences, running and waiting, go on at
#                the other decoder with their KV and the draft's), the
#                first encoder a prefill worker, the first prefill worker a decoder;
#                nothing lost, every answer right; bad switches refused with their reason;
#                the switched decoder, killed, comes back (vidi up) as an encoder
#   chaos        200 requests while a random worker is killed with -9 every
#                2-4 s (vidi up restarts it): prints lost=0 hung=0 errors=N
#
# VIDI_E2E_BACKEND=cuda runs the workers and the reference `vidi generate`
# on the GPU instead (the answers are compared backend with backend).
set -u -o pipefail
BACKEND=${VIDI_E2E_BACKEND:-cpu}
VIDI=$1 CLIENT=$2 MODEL=$3 EXAMPLES=$4 CASE=$5
source "$(dirname "$0")/lib.sh"
e2e_init e2e

# up WORKERS [extra vidi up args]: start and wait until every worker joined
up() { local workers=$1; shift; e2e_up "$VIDI" "$MODEL" "$workers" "$BACKEND" "$@"; }

# text-only questions (file "-" for e2e_client) and their answers from vidi generate
text_expected() {
  printf -- '-\t%s\n' "Tell me a long story about shapes." "Describe the video." "What is in the picture?" \
    "List every colour you know." "Count the shapes one by one." "Which shapes move and where do they go?" \
    >"$RUN/text.tsv"
  while IFS=$'\t' read -r file question; do
    answer=$("$VIDI" generate --model "$MODEL" --prompt "$question" --max-tokens 64 --backend "$BACKEND" \
             $([ "$BACKEND" = cpu ] && echo --threads 2))
    printf '%s\t%s\t%s\n' "$file" "$question" "$answer"
  done <"$RUN/text.tsv" >"$RUN/text_expected.tsv"
}

# watch_stages: every 0.3 s until $RUN/watch.stop exists, the least number of workers
# (not draining) any stage had goes to $RUN/watch.min
watch_stages() {
  local min=99
  while [ ! -f "$RUN/watch.stop" ]; do
    local s
    s=$("$VIDI" stats --router "$FRONT" 2>/dev/null | awk '/^stage_[a-z]*\.workers /{ if (m == "" || $2 < m) m = $2 } END { print m }')
    [ -n "$s" ] && [ "$s" -lt "$min" ] && min=$s
    echo "$min" >"$RUN/watch.min"
    sleep 0.3
  done
}

# roles-shift and roles-share: WORKERS started with the switching router (and ARGS more), decoders
# of 4 sequences a step (the text phase's answers wait for decode), TPOT target 20 ms, a watcher
# of the stages' workers; two phases of load; then what both check
roles_up() {
  expected
  text_expected
  up "$1" --heartbeat-ms 250 --worker-args "--max-batch 4" \
    --router-args "--switch-ms 1000 --switch-windows 2 --switch-cooldown-ms 2000 --ttft-ms 600000 --tpot-ms 20 ${*:2}"
  watch_stages &
  WATCH=$!
  e2e_bg $WATCH
}
# image-heavy: every question with its image or video, 8 at a time
roles_phase1() {
  "$CLIENT" "$FRONT" load 84 8 "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" 300 >"$RUN/load1.txt"
  RC1=$?
  tail -1 "$RUN/load1.txt"
}
# text-heavy: questions without media, 32 at a time (more than the decoders take a step)
roles_phase2() {
  "$CLIENT" "$FRONT" load 1200 32 "$RUN/text.tsv" "$EXAMPLES" "$RUN/text_expected.tsv" 300 >"$RUN/load2.txt"
  RC2=$?
  tail -1 "$RUN/load2.txt"
}
# nothing lost, failed or answered wrongly; every stage had a worker taking work throughout
roles_done() {
  touch "$RUN/watch.stop"
  wait $WATCH
  "$VIDI" stats --router "$FRONT" | grep -E '^(switch|stage_.*busy_pct|stage_.*workers|stage_decode|slo.tpot|roles)' | tr '\n' ' '; echo
  grep -E 'router: worker .*(switch|refused)' "$RUN/up.log"
  [ $RC1 = 0 ] && [ $RC2 = 0 ] || { cat "$RUN/load1.txt" "$RUN/load2.txt" | grep -v '^lost'; exit 1; }
  grep -q ' errors=0 ' "$RUN/load1.txt" && grep -q ' errors=0 ' "$RUN/load2.txt" || { echo "e2e: requests failed"; exit 1; }
  echo "$CASE: the fewest workers any stage had: $(cat "$RUN/watch.min")"
  [ "$(cat "$RUN/watch.min")" -ge 1 ] || exit 1
}

# expected answers: single-process vidi generate on every question
expected() {
  while IFS=$'\t' read -r file question _; do
    case $file in ''|'#'*) continue ;; esac
    case $file in video_*) kind=--video ;; *) kind=--image ;; esac
    answer=$("$VIDI" generate --model "$MODEL" "$kind" "$EXAMPLES/$file" --prompt "$question" --max-tokens 64 \
             --backend "$BACKEND" $([ "$BACKEND" = cpu ] && echo --threads 2))
    printf '%s\t%s\t%s\n' "$file" "$question" "$answer"
  done <"$EXAMPLES/questions.tsv" >"$RUN/expected.tsv"
}

FRONT="ipc://$RUN/front"
case $CASE in
  answers-ipc)
    expected
    up media,encode,encode,prefill,decode
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" || exit 1
    # on CUDA, rows and KV went through CUDA IPC (every request has rows to hand over
    # at least); on the CPU through host frames, never CUDA IPC
    N=$(grep -vc '^#\|^$' "$EXAMPLES/questions.tsv")
    if [ "$BACKEND" = cuda ]; then
      "$CLIENT" "$FRONT" stats "workers_ipc_sent>=$N" "workers_ipc_received>=$N" "workers_decode_in>=1"
    else
      # on the CPU the prefill worker uses the model's sparse_config.json (sparse prefill)
      "$CLIENT" "$FRONT" stats "workers_decode_in>=1" "workers_sparse_prefills>=$N" "workers_sparse_pairs>=1" &&
        ! "$CLIENT" "$FRONT" stats "workers_ipc_sent>=1" >/dev/null
    fi ;;
  answers-tcp)
    expected
    P=$(( 20000 + RANDOM % 20000 ))
    FRONT="tcp://127.0.0.1:$P"
    up media,encode,encode,prefill,decode --front "$FRONT" --back "tcp://127.0.0.1:$((P + 1))" --tcp-data
    grep -q 'data tcp://127.0.0.1:' "$RUN/up.log" || { echo "e2e: data sockets are not on tcp"; cat "$RUN/up.log"; exit 1; }
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" ;;
  colocated)
    expected
    up all
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" ;;
  spec)
    expected
    up media,encode,prefill+decode --worker-args "--spec ngram:4"
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" || exit 1
    "$CLIENT" "$FRONT" stats "workers_spec_steps>=1" "workers_spec_proposed>=1" "workers_spec_accepted>=1" ;;
  spec-draft)
    # bad settings: refused at start with a message, before joining
    W="$VIDI worker --router ipc://$RUN/none --data ipc://$RUN/none-data --model $MODEL"
    $W --spec draft:4 2>"$RUN/refused.txt"; rc=$?
    [ $rc = 2 ] && grep -q 'needs --draft' "$RUN/refused.txt" || { echo "e2e: --spec draft without --draft: rc $rc"; cat "$RUN/refused.txt"; exit 1; }
    $W --spec draft:17 --draft "$MODEL-draft" 2>"$RUN/refused.txt"; rc=$?
    [ $rc = 2 ] && grep -q 'k 17' "$RUN/refused.txt" || { echo "e2e: --spec draft:17: rc $rc"; cat "$RUN/refused.txt"; exit 1; }
    $W --spec draft:4 --draft "$(dirname "$0")/../data/models/tiny-qwen2vl" 2>"$RUN/refused.txt"; rc=$?
    [ $rc != 0 ] && grep -q 'vocabulary\|vision input' "$RUN/refused.txt" ||
      { echo "e2e: a draft of another vocabulary: rc $rc"; cat "$RUN/refused.txt"; exit 1; }
    echo "spec-draft: bad settings refused ($(tr '\n' ' ' <"$RUN/refused.txt"))"
    expected
    up media,encode,prefill,decode --worker-args "--spec draft:4 --draft $MODEL-draft"
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" || exit 1
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" || exit 1
    N=$(grep -vc '^#\|^$' "$EXAMPLES/questions.tsv")
    "$CLIENT" "$FRONT" stats "workers_draft_prefills>=$((2 * N))" "workers_draft_encodes>=1" \
      "workers_encode_cached>=1" "workers_decode_in>=$((2 * N))" "workers_spec_steps>=1" "workers_spec_accepted>=1" \
      "workers_spec_proposed_at_0>=1" "workers_spec_accepted_at_0>=1" "workers_spec_proposed_at_3>=1" ;;
  cache)
    up media,encode,prefill,decode
    "$CLIENT" "$FRONT" cache "$EXAMPLES" video_500016.mp4 ;;
  bad)
    up all
    "$CLIENT" "$FRONT" bad ;;
  chat)
    up all
    "$CLIENT" "$FRONT" chat "$EXAMPLES" image_500001.png ;;
  batch)
    up media,encode,prefill,decode
    "$CLIENT" "$FRONT" batch "$EXAMPLES" image_500003.jpg 24 ;;
  gone)
    up media,encode,prefill,decode
    "$CLIENT" "$FRONT" gone "$EXAMPLES" video_500016.mp4 ;;
  monitor)
    expected
    N=$(grep -vc '^#\|^$' "$EXAMPLES/questions.tsv")
    up media,encode,prefill,decode --router-args "--ttft-ms 600000 --tpot-ms 600000"
    "$CLIENT" "$FRONT" load 40 8 "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" 300 >"$RUN/load.txt" &
    LOAD=$!
    sleep 4
    # while it runs: every stage has its worker, requests are at the stages, the busiest
    # stage (the bottleneck: on the CPU encode or prefill) works most of the time
    "$CLIENT" "$FRONT" stats "stage_media.workers>=1" "stage_encode.workers>=1" "stage_prefill.workers>=1" \
      "stage_decode.workers>=1" || { kill $LOAD; exit 1; }
    for try in 1 2 3 4 5; do # a second's share: a few looks while the load runs
      S=$("$VIDI" stats --router "$FRONT")
      busiest=$(awk '/^stage_.*\.busy_pct /{ if ($2 > m) { m = $2; k = $1 } } END { print m + 0, k }' <<<"$S")
      at=$(awk '/^stage_.*\.queue /{ s += $2 } END { print s + 0 }' <<<"$S")
      echo "monitor: busiest stage ${busiest#* } at ${busiest%% *} %, $at requests at the stages"
      [ "${busiest%% *}" -ge 50 ] && [ "$at" -ge 1 ] && break
      [ $try = 5 ] && { echo "$S" | grep '^stage_'; kill $LOAD; exit 1; }
      sleep 1.1
    done
    wait $LOAD || { cat "$RUN/load.txt"; exit 1; }
    tail -1 "$RUN/load.txt"
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" >/dev/null || exit 1
    "$VIDI" stats --router "$FRONT" | grep -E '^(requests|done|active|running|waiting|retries|errors) ' | tr '\n' ' '
    echo
    "$CLIENT" "$FRONT" stats "workers_media_us>=1" "workers_encode_us>=1" "workers_prefill_us>=1" \
      "workers_decode_us>=1" "stage_media.service_us>=1" "stage_encode.service_us>=1" \
      "stage_prefill.service_us>=1" "stage_decode.service_us>=1" "stage_prefill.queue<=0" "stage_decode.queue<=0" \
      "workers_encode_tokens>=1" "workers_prefill_tokens>=1" "stage_encode.token_us>=1" "stage_prefill.token_us>=1" \
      "stage_media.token_us<=0" "slo.window>=$N" "slo.ttft_target_ms>=600000" "slo.ttft_p90_ms>=1" "slo.ttft_slack_ms>=1" \
      "slo.ttft_over_ms<=0" "slo.tpot_over_ms<=0" "slo.attained_pct>=100" || exit 1
    e2e_stop "$E2E_UP_PID"
    up media,encode,prefill,decode --router-args "--ttft-ms 1 --tpot-ms 1"
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" >/dev/null || exit 1
    "$CLIENT" "$FRONT" stats "slo.window>=$N" "slo.ttft_target_ms<=1" "slo.ttft_over_ms>=1" "slo.ttft_slack_ms<=0" \
      "slo.attained_pct<=0" ;;
  roles-shift)
    roles_up media,encode,encode,prefill,decode,decode
    roles_phase1
    "$VIDI" stats --router "$FRONT" | grep -E '^(switch|stage_.*busy_pct|stage_.*workers|stage_decode|slo.tpot|roles)' | tr '\n' ' '; echo
    "$CLIENT" "$FRONT" stats "switches>=1" || { grep -E 'switch' "$RUN/up.log"; exit 1; }
    text_side() { "$VIDI" stats --router "$FRONT" | awk '/^switched_to\.(prefill|decode) /{ n += $2 } END { print n + 0 }'; }
    image_side() { "$VIDI" stats --router "$FRONT" | awk '/^roles\.(media|encode) /{ n += $2 } END { print n + 0 }'; }
    before=$(text_side) image_before=$(image_side)
    roles_phase2
    roles_done
    # the second phase's bottleneck is the text side (decode when its tokens come slower than the
    # TPOT target allows, or prefill): a worker goes there (from the image side, or between
    # prefill and decode), unless the first phase already left the image side one worker a stage
    # and the text side's bottleneck is its busier stage (a slow host: prefill there in both phases)
    echo "roles-shift: switches to prefill or decode: $before after the first phase, $(text_side) after the second;" \
      "media and encode workers after the first phase: $image_before"
    [ "$(text_side)" -gt "$before" ] || [ "$image_before" -le 2 ] || { grep 'router: ' "$RUN/up.log" | tail -20; exit 1; }
    "$CLIENT" "$FRONT" stats "switches>=2" ;;
  roles-share)
    # one worker a stage, `--switch-share 1`: a worker takes a starved role besides its own
    roles_up media,encode,prefill,decode --switch-share 1
    roles_phase1
    roles_phase2
    roles_done
    # workers gathered roles: more roles than workers, and a switch that kept the worker's role
    # (a stage of one worker cannot spare it)
    roles=$("$VIDI" stats --router "$FRONT" | awk '/^roles\.(media|encode|prefill|decode) /{ n += $2 } END { print n + 0 }')
    echo "roles-share: $roles roles over 4 workers"
    [ "$roles" -ge 5 ] || exit 1
    grep -q 'router: worker .*switching from .* over 1, kept)' "$RUN/up.log" || exit 1
    "$CLIENT" "$FRONT" stats "switches>=1" ;;
  roles-judge)
    text_expected
    # every process on one core: a second decoder adds no compute, it only takes turns with the
    # first (as decoders sharing a GPU with prefill do), so the move cannot lower TPOT
    taskset -cp 0 $$ >/dev/null || exit 1
    up media,encode,encode,encode,prefill,decode --heartbeat-ms 250 \
      --router-args "--switch-ms 500 --switch-windows 2 --switch-cooldown-ms 1000 --ttft-ms 600000 --tpot-ms 1"
    "$CLIENT" "$FRONT" load 1500 2 "$RUN/text.tsv" "$EXAMPLES" "$RUN/text_expected.tsv" 300 >"$RUN/load.txt" &
    LOAD=$!
    e2e_bg $LOAD
    stat() { "$VIDI" stats --router "$FRONT" | awk -v k="$1" '$1 == k { print $2 }'; }
    for _ in $(seq 1 200); do [ "$(stat switches_unhelpful)" = 1 ] && break; sleep 0.2; done
    kill -0 $LOAD 2>/dev/null || { echo "roles-judge: the load ended before a move was judged"
                                   "$VIDI" stats --router "$FRONT" | grep -E '^(switch|stage_|slo)' | tr '\n' ' '
                                   grep -E 'router: (worker|decode)' "$RUN/up.log"; exit 1; }
    [ "$(stat switches_unhelpful)" = 1 ] || { grep -E 'router: worker' "$RUN/up.log"; exit 1; }
    d0=$(stat switched_to.decode)
    sleep 8
    d1=$(stat switched_to.decode)
    kill -0 $LOAD 2>/dev/null || { echo "roles-judge: the load ended within the 8 s"; exit 1; }
    wait $LOAD || { cat "$RUN/load.txt"; exit 1; }
    tail -1 "$RUN/load.txt"
    grep -E 'router: worker .*(switch|decoding did not)' "$RUN/up.log"
    grep -q ' errors=0 ' "$RUN/load.txt" || { echo "e2e: requests failed"; exit 1; }
    echo "roles-judge: moves to decode when judged: $d0, 8 s later: $d1"
    [ "$d0" -ge 1 ] && [ "$d1" = "$d0" ] || exit 1 ;;
  roles-forced)
    expected
    text_expected
    # two sequences a decode step: decode is the bottleneck, sequences wait at the decoders; they
    # speculate with the draft model, whose KV moves with them
    up media,encode,prefill,decode,decode --heartbeat-ms 250 \
      --worker-args "--max-batch 2 --spec draft:4 --draft $MODEL-draft"
    # bad switches are refused with a reason, nothing changes
    "$VIDI" role --router "$FRONT" w2 media 2>"$RUN/r.txt" && exit 1
    grep -q 'last worker of stage prefill' "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    "$VIDI" role --router "$FRONT" nobody encode 2>"$RUN/r.txt" && exit 1
    grep -q "no worker named 'nobody'" "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    "$VIDI" role --router "$FRONT" w4 decode 2>"$RUN/r.txt" && exit 1
    grep -q 'holds those roles already' "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    "$VIDI" role --router "$FRONT" w4 painter 2>"$RUN/r.txt" && exit 1
    grep -q 'roles are media, encode, prefill and decode' "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    # bad switching settings: the router refuses to start, naming the setting
    "$VIDI" router --model "$MODEL" --switch-hi 200 2>"$RUN/r.txt" && exit 1
    grep -q -- '--switch-hi 200: a whole number, 0 to 100' "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    "$VIDI" router --model "$MODEL" --switch-lo 80 --switch-hi 50 2>"$RUN/r.txt" && exit 1
    grep -q -- '--switch-lo at most --switch-hi' "$RUN/r.txt" || { cat "$RUN/r.txt"; exit 1; }
    echo "roles-forced: bad switches and settings refused"
    "$CLIENT" "$FRONT" load 600 24 "$RUN/text.tsv" "$EXAMPLES" "$RUN/text_expected.tsv" 300 >"$RUN/load_text.txt" &
    LOAD2=$!
    # a decoder with sequences in flight (requests at decode) leaves decode: they go on at the
    # other decoder (their answers are checked). Where w4 held none when its drain began (a slow
    # host: prefill the bottleneck, the decoders empty between its prompts) nothing was tested:
    # it goes back to decode and leaves again, up to three times
    stat() { "$VIDI" stats --router "$FRONT" | awk -v k="$1" '$1 == k { print $2 }'; }
    for try in 1 2 3; do
      for _ in $(seq 1 100); do
        [ "$(stat stage_decode.queue)" -ge 8 ] && break
        sleep 0.2
      done
      "$VIDI" role --router "$FRONT" --wait w4 encode || { kill $LOAD2; exit 1; }
      sleep 0.6 # w4's counters come with its heartbeats (every 250 ms)
      [ "$(stat workers_decode_moved)" -ge 1 ] && break
      echo "roles-forced: w4 held no sequence when it left decode (try $try)"
      [ $try = 3 ] || "$VIDI" role --router "$FRONT" --wait w4 decode || { kill $LOAD2; exit 1; }
    done
    "$CLIENT" "$FRONT" load 60 12 "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" 300 >"$RUN/load.txt" &
    LOAD=$!
    sleep 2
    "$VIDI" role --router "$FRONT" --wait w1 prefill || { kill $LOAD $LOAD2; exit 1; }
    "$VIDI" role --router "$FRONT" --wait w2 decode || { kill $LOAD $LOAD2; exit 1; }
    wait $LOAD || { cat "$RUN/load.txt"; exit 1; }
    wait $LOAD2 || { cat "$RUN/load_text.txt"; exit 1; }
    tail -1 "$RUN/load.txt"
    tail -1 "$RUN/load_text.txt"
    grep -q ' errors=0 ' "$RUN/load.txt" && grep -q ' errors=0 ' "$RUN/load_text.txt" ||
      { cat "$RUN/load.txt" "$RUN/load_text.txt"; exit 1; }
    grep -E 'router: worker .*(switch|refused)|sequences go on' "$RUN/up.log"
    "$CLIENT" "$FRONT" stats "switches>=3" "switches_aborted<=0" "switched_to.decode>=1" "switched_to.prefill>=1" \
      "workers_decode_moved>=1" "stage_decode.workers>=2" "stage_prefill.workers>=1" "stage_encode.workers>=1" \
      "draining<=0" || exit 1
    # a switched worker that dies comes back (vidi up) with the roles it had since its switch
    kill -9 "$(awk '$2 == "w4" { print $NF }' "$RUN/pids")"
    for _ in $(seq 1 150); do grep -qE 'router: worker w4 (re)?joined \(roles 0x2,' "$RUN/up.log" && break; sleep 0.2; done
    grep -q 'worker w4 (decode) restarts as encode' "$RUN/up.log" && grep -qE 'router: worker w4 (re)?joined \(roles 0x2,' "$RUN/up.log" ||
      { grep w4 "$RUN/up.log"; exit 1; }
    echo "roles-forced: w4 (decode, then encode), killed, came back as an encoder" ;;
  chaos)
    expected
    up media,media,encode,encode,prefill+decode,prefill+decode --heartbeat-ms 300
    (
      sleep 2
      while [ -f "$RUN/pids" ]; do
        victim=$(grep '^worker' "$RUN/pids" | awk '$NF > 0' | shuf -n 1)
        pid=${victim##* }
        if [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; then echo "chaos: kill -9 ${victim% *} (pid $pid)"; fi
        sleep $(( 2 + RANDOM % 3 ))
      done
    ) &
    KILLER=$!
    "$CLIENT" "$FRONT" load 200 8 "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" 120
    rc=$?
    kill "$KILLER" 2>/dev/null
    grep -c 'restarting' "$RUN/up.log" | sed 's/^/chaos: workers restarted by vidi up: /'
    exit $rc ;;
  sdk)   # CLIENT is tests/sdk/e2e_sdk (the C SDK through its public header)
    expected
    up media,encode,prefill,decode
    "$CLIENT" "$FRONT" answers "$EXAMPLES/questions.tsv" "$EXAMPLES" "$RUN/expected.tsv" ;;
  sdk-curve)
    KEYS=$("$VIDI" keygen) || exit 1
    SPUB=$(awk '/^public/ {print $2}' <<<"$KEYS")
    awk '/^secret/ {print $2}' <<<"$KEYS" >"$RUN/server.key"
    CKEYS=$("$VIDI" keygen) || exit 1
    up all --router-args "--curve-secret-file $RUN/server.key"
    "$CLIENT" "$FRONT" curve "$SPUB" "$(awk '/^public/ {print $2}' <<<"$CKEYS")" \
      "$(awk '/^secret/ {print $2}' <<<"$CKEYS")" "$EXAMPLES" ;;
  *) echo "unknown case $CASE"; exit 2 ;;
esac
