#!/usr/bin/env bash
# tests/caption/run.sh VIDI VIDI_CAPTION CAPTION_CHECK MODEL SHAPES CASE — one
# end-to-end test of vidi-caption (ctest label e2e): real `vidi up` processes
# (media, encode, prefill, decode) on the CPU with vidi-shapes, vidi-caption
# over ZeroMQ, the held-out scenes of tests/data/shapes (SHAPES: 60 images,
# 60 videos, manifest.json with questions, answers and reference captions),
# and caption_check for the JSON.
#
# CASE:
#   answers   --manifest of the 426 held-out questions, 4 in flight: accuracy
#             against the scenes' ground truth >= 0.90, and transformers'
#             answer (reference_answers.json) on >= 99 % of them
#   captions  the folder SHAPES with the default prompts, 4 in flight: its 120
#             media files (not its .json / .md) captioned once each; captions
#             equal to the reference caption word for word >= 0.25 (the model
#             gets about a third, models/vidi-shapes/README.md; files mixed up
#             would get ~0); four captions (png, jpg, mp4, webm) equal to
#             single-process `vidi generate` with "Describe the image." /
#             "Describe the video."; the progress lines and the summary
#   resume    48 files; vidi-caption killed with -9 when about half the lines
#             are written; --resume: the lines written before are unchanged,
#             every file has exactly one line, and the router received exactly
#             one request per missing item (STATS requests); then a torn last
#             line is cut off and only the lines after it are redone; a third
#             --resume sends nothing
#   bad       a corrupt .mp4 and an empty .png among good files: error lines,
#             the other items captioned, exit status 1
#   batch     OpenAI batch JSONL (file:// and data: URLs, a system message,
#             max_tokens, 3 bad lines): OpenAI batch output lines with
#             transformers' answers, finish "length" after 2 tokens, and
#             status 400 for the bad lines; exit status 1
#   overload  a router that admits 2 requests at a time, 8 in flight: it answers
#             "overloaded" (STATS overloaded > 0), vidi-caption lowers its limit
#             and retries, and every item is captioned; exit status 0
#   sidecar   --sidecar (with and without --recursive, --caption-extension)
#   usage     exit status 2 and a message on bad options and inputs (no router)
set -u -o pipefail
BACKEND=${VIDI_E2E_BACKEND:-cpu}
VIDI=$1 CAP=$2 CHECK=$3 MODEL=$4 SHAPES=$5 CASE=$6
source "$(dirname "$0")/../e2e/lib.sh"
e2e_init caption

fail() { echo "caption e2e ($CASE): FAIL: $*"; exit 1; }

# start the router and media, encode, prefill, decode (extra `vidi up` args);
# wait until all joined
up() { e2e_up "$VIDI" "$MODEL" media,encode,prefill,decode "$BACKEND" "$@"; }

FRONT="ipc://$RUN/front"
# the router's STATS counter NAME
stat_of() { "$VIDI" ask --router "$FRONT" --stats | awk -v k="$1" '$1 == k { print $2 }'; }
lines_of() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

case $CASE in
  answers)
    up
    "$CHECK" questions "$SHAPES" "$RUN/questions.jsonl" || exit 1
    "$CAP" --manifest "$RUN/questions.jsonl" --router "$FRONT" --output "$RUN/answers.jsonl" --concurrency 4 \
      --max-tokens 32 --progress-s 10 || fail "vidi-caption exited with $?"
    "$CHECK" answers "$SHAPES" "$RUN/answers.jsonl" 0.90 0.99 ;;

  captions)
    up
    "$CAP" "$SHAPES" --router "$FRONT" --output "$RUN/captions.jsonl" --concurrency 4 --progress-s 2 \
      2>"$RUN/captions.err"
    rc=$?
    cat "$RUN/captions.err"
    [ $rc -eq 0 ] || fail "vidi-caption exited with $rc"
    "$CHECK" captions "$SHAPES" "$RUN/captions.jsonl" 0.25 || exit 1
    grep -Eq '^caption: [0-9]+/120 done, [0-9.]+ items/s, ETA ' "$RUN/captions.err" || fail "no progress lines"
    grep -Eq '^caption: 120 done, 0 failed, 0 skipped \(resumed\) in .*, [0-9.]+ items/s$' "$RUN/captions.err" ||
      fail "no summary line"
    for f in image_1.png image_3.jpg video_0.mp4 video_2.webm; do
      case $f in video_*) kind=--video prompt="Describe the video." ;; *) kind=--image prompt="Describe the image." ;; esac
      want=$("$VIDI" generate --model "$MODEL" "$kind" "$SHAPES/$f" --prompt "$prompt" --max-tokens 128 \
             --backend "$BACKEND" $([ "$BACKEND" = cpu ] && echo --threads 2) 2>/dev/null)
      got=$(grep -F "\"path\":\"$SHAPES/$f\"" "$RUN/captions.jsonl" | sed 's/.*"caption":"\([^"]*\)".*/\1/')
      [ -n "$want" ] && [ "$got" = "$want" ] || fail "$f: vidi-caption \"$got\", vidi generate \"$want\""
      echo "captions: $f: \"$got\" (= vidi generate \"$prompt\")"
    done ;;

  resume)
    up
    mkdir -p "$RUN/media"
    # the scenes of seeds 0..47: 24 videos (mp4, webm) and 24 images (png, jpg)
    for i in $(seq 0 2 46); do cp "$SHAPES"/video_"$i".* "$SHAPES"/image_"$((i + 1))".* "$RUN/media/"; done
    N=$(ls "$RUN/media" | wc -l)
    [ "$N" -eq 48 ] || fail "expected 48 files, got $N"
    OUT=$RUN/resume.jsonl
    R0=$(stat_of requests)
    "$CAP" "$RUN/media" --router "$FRONT" --output "$OUT" --concurrency 4 --quiet &
    PID=$!
    for _ in $(seq 1 3000); do
      [ "$(lines_of "$OUT")" -ge $((N / 2)) ] && break
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    BEFORE=$(lines_of "$OUT")
    echo "resume: killed with $BEFORE of $N lines written ($(stat -c %s "$OUT") bytes)"
    [ "$BEFORE" -ge 1 ] && [ "$BEFORE" -le $((N - 8)) ] || fail "killed at $BEFORE lines: not part way"
    head -n "$BEFORE" "$OUT" >"$RUN/before.jsonl"
    sleep 1   # the killed client's requests have all reached the router
    R1=$(stat_of requests)
    "$CAP" "$RUN/media" --router "$FRONT" --output "$OUT" --concurrency 4 --resume 2>"$RUN/resume.err"
    rc=$?
    cat "$RUN/resume.err"
    [ $rc -eq 0 ] || fail "vidi-caption --resume exited with $rc"
    R2=$(stat_of requests)
    echo "resume: router requests: $((R1 - R0)) before the kill, $((R2 - R1)) by --resume for $((N - BEFORE)) missing items"
    [ $((R2 - R1)) -eq $((N - BEFORE)) ] || fail "--resume sent $((R2 - R1)) requests for $((N - BEFORE)) missing items"
    grep -q "^caption: $((N - BEFORE)) done, 0 failed, $BEFORE skipped (resumed) in " "$RUN/resume.err" ||
      fail "the summary does not say $BEFORE skipped"
    head -c "$(stat -c %s "$RUN/before.jsonl")" "$OUT" | cmp -s - "$RUN/before.jsonl" ||
      fail "the lines written before the kill changed"
    "$CHECK" lines "$OUT" "$N" || exit 1
    # a torn last line: 45 whole lines and the start of the 46th
    head -n 45 "$OUT" >"$RUN/torn.jsonl"
    sed -n 46p "$OUT" | head -c 30 >>"$RUN/torn.jsonl"
    R3=$(stat_of requests)
    "$CAP" "$RUN/media" --router "$FRONT" --output "$RUN/torn.jsonl" --concurrency 4 --resume 2>"$RUN/torn.err" ||
      { cat "$RUN/torn.err"; fail "--resume after a torn line exited with $?"; }
    R4=$(stat_of requests)
    grep -q 'cutting off a torn last line (30 bytes)' "$RUN/torn.err" || { cat "$RUN/torn.err"; fail "the torn line was not cut off"; }
    [ $((R4 - R3)) -eq $((N - 45)) ] || fail "after a torn line --resume sent $((R4 - R3)) requests, expected $((N - 45))"
    head -n 45 "$OUT" | cmp -s - <(head -n 45 "$RUN/torn.jsonl") || fail "the 45 whole lines changed"
    "$CHECK" lines "$RUN/torn.jsonl" "$N" || exit 1
    echo "resume: a torn last line was cut off; $((R4 - R3)) items redone"
    "$CAP" "$RUN/media" --router "$FRONT" --output "$OUT" --resume 2>"$RUN/again.err" || fail "a complete --resume exited with $?"
    R5=$(stat_of requests)
    [ "$R5" -eq "$R4" ] && grep -q "^caption: 0 done, 0 failed, $N skipped (resumed)" "$RUN/again.err" ||
      fail "--resume of a complete output sent $((R5 - R4)) requests"
    "$CHECK" lines "$OUT" "$N" ;;

  bad)
    up
    mkdir -p "$RUN/bad"
    cp "$SHAPES"/image_1.png "$SHAPES"/image_3.jpg "$SHAPES"/video_0.mp4 "$SHAPES"/video_2.webm "$RUN/bad/"
    for _ in $(seq 1 200); do echo "this is not a video"; done >"$RUN/bad/a_corrupt.mp4"
    : >"$RUN/bad/c_empty.png"
    "$CAP" "$RUN/bad" --router "$FRONT" --output "$RUN/bad.jsonl" --concurrency 2 2>"$RUN/bad.err"
    rc=$?
    cat "$RUN/bad.err"
    [ $rc -eq 1 ] || fail "exit status $rc with failed items, expected 1"
    [ "$(lines_of "$RUN/bad.jsonl")" -eq 6 ] || fail "$(lines_of "$RUN/bad.jsonl") lines for 6 files"
    "$CHECK" item "$RUN/bad.jsonl" a_corrupt.mp4 error bad_media || exit 1
    "$CHECK" item "$RUN/bad.jsonl" c_empty.png error "file: " || exit 1
    for f in image_1.png image_3.jpg video_0.mp4 video_2.webm; do "$CHECK" item "$RUN/bad.jsonl" "$f" ok || exit 1; done
    grep -q '^caption: 4 done, 2 failed, 0 skipped (resumed)' "$RUN/bad.err" || fail "the summary does not say 2 failed"
    echo "bad: 2 error lines, 4 captions, exit status 1" ;;

  batch)
    up
    "$CHECK" batch-make "$SHAPES" "$RUN/batch.jsonl" || exit 1
    "$CAP" --manifest "$RUN/batch.jsonl" --router "$FRONT" --output "$RUN/batch.out.jsonl" --concurrency 4 \
      2>"$RUN/batch.err"
    rc=$?
    cat "$RUN/batch.err"
    [ $rc -eq 1 ] || fail "exit status $rc with 3 bad lines, expected 1"
    "$CHECK" batch-check "$SHAPES" "$RUN/batch.out.jsonl" || exit 1
    # --resume of a batch: by custom_id, only the failed lines again
    R1=$(stat_of requests)
    "$CAP" --manifest "$RUN/batch.jsonl" --router "$FRONT" --output "$RUN/batch.out.jsonl" --resume 2>"$RUN/batch2.err"
    R2=$(stat_of requests)
    grep -q '^caption: 0 done, 3 failed, 7 skipped (resumed)' "$RUN/batch2.err" || { cat "$RUN/batch2.err"; fail "batch --resume"; }
    [ "$R2" -eq "$R1" ] || fail "batch --resume sent $((R2 - R1)) requests (the 3 bad lines fail before sending)" ;;

  overload)
    up --router-args "--max-requests 2"
    mkdir -p "$RUN/media"
    for i in $(seq 0 2 38); do cp "$SHAPES"/video_"$i".* "$SHAPES"/image_"$((i + 1))".* "$RUN/media/"; done
    "$CAP" "$RUN/media" --router "$FRONT" --output "$RUN/over.jsonl" --concurrency 8 --retries 1 2>"$RUN/over.err"
    rc=$?
    cat "$RUN/over.err"
    [ $rc -eq 0 ] || fail "exit status $rc"
    OVER=$(stat_of overloaded)
    echo "overload: the router answered overloaded $OVER times"
    [ "${OVER:-0}" -gt 0 ] || fail "the router never said overloaded: nothing was tested"
    "$CHECK" lines "$RUN/over.jsonl" 40 ;;

  sidecar)
    up
    mkdir -p "$RUN/side/sub"
    cp "$SHAPES"/image_1.png "$SHAPES"/image_3.jpg "$SHAPES"/video_0.mp4 "$SHAPES"/video_2.webm "$RUN/side/"
    cp "$SHAPES"/image_5.png "$SHAPES"/video_4.mp4 "$RUN/side/sub/"
    "$CAP" "$RUN/side" --recursive --sidecar --router "$FRONT" --output "$RUN/side.jsonl" --concurrency 4 ||
      fail "vidi-caption --sidecar exited with $?"
    [ "$(lines_of "$RUN/side.jsonl")" -eq 6 ] || fail "--recursive: $(lines_of "$RUN/side.jsonl") lines for 6 files"
    "$CHECK" sidecar "$RUN/side.jsonl" .txt || exit 1
    [ "$(find "$RUN/side" -name '*.txt' | wc -l)" -eq 6 ] || fail "expected 6 .txt files"
    "$CAP" "$RUN/side" --sidecar --caption-extension .caption --router "$FRONT" --output "$RUN/side2.jsonl" --quiet ||
      fail "vidi-caption --caption-extension exited with $?"
    [ "$(lines_of "$RUN/side2.jsonl")" -eq 4 ] || fail "without --recursive: $(lines_of "$RUN/side2.jsonl") lines for 4 files"
    "$CHECK" sidecar "$RUN/side2.jsonl" .caption || exit 1
    [ "$(find "$RUN/side" -name '*.caption' | wc -l)" -eq 4 ] || fail "expected 4 .caption files" ;;

  usage)
    mkdir -p "$RUN/empty" "$RUN/one"
    cp "$SHAPES/image_1.png" "$RUN/one/"
    echo '{"path": "a.png"}' >"$RUN/m.jsonl"
    echo '{"path": "b.png", "prompt": 3}' >>"$RUN/m.jsonl"
    echo '{"x": 1}' >"$RUN/exists.jsonl"
    expect2() {
      local want=$1; shift
      "$CAP" "$@" --router "ipc://$RUN/nobody" >"$RUN/u.out" 2>"$RUN/u.err"
      local rc=$?
      [ $rc -eq 2 ] || fail "vidi-caption $*: exit status $rc, expected 2 ($(cat "$RUN/u.err"))"
      grep -q -- "$want" "$RUN/u.err" || fail "vidi-caption $*: the message does not say '$want': $(cat "$RUN/u.err")"
      echo "usage: vidi-caption $* -> 2: $(head -n 1 "$RUN/u.err")"
    }
    expect2 'give a folder or --manifest'
    expect2 'expected an integer in \[1, 256\]' "$RUN/one" --concurrency 0
    expect2 'No such file' "$RUN/missing"
    expect2 'no items' "$RUN/empty"
    expect2 '--resume needs --output' "$RUN/one" --resume
    expect2 'not an image or video extension' "$RUN/one" --ext png,txt
    expect2 'm.jsonl:2: "prompt" must be a string' --manifest "$RUN/m.jsonl"
    expect2 'exists: --resume to go on with it' "$RUN/one" --output "$RUN/exists.jsonl"
    expect2 'unknown option --bogus' "$RUN/one" --bogus 1
    "$CAP" --help | grep -q '^usage: vidi-caption' || fail "--help" ;;

  *) echo "unknown case $CASE"; exit 2 ;;
esac
