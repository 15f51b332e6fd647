#!/usr/bin/env bash
# tests/serve/browser/run.sh VIDI VIDI_SERVE MODEL EXAMPLES — the video QA
# page in a real browser (ctest e2e_serve_browser, label e2e): `vidi up`
# (one worker with every role, CPU), vidi-serve in front of it, and headless
# Chromium driven over the DevTools protocol (cdp.py, standard library only)
# by qa_page.py: upload examples/video_500016.mp4 through the page's file
# input, type a question, click Ask; the streamed answer must equal
# single-process `vidi generate`'s, grow while streaming, and the sampled
# frames must show as thumbnails.
#
# Chromium: $VIDI_CHROMIUM, default /usr/bin/chromium (Debian: apt-get install
# chromium). Missing, the test is skipped (77) unless VIDI_REQUIRE_BROWSER=1,
# where it fails.
set -u -o pipefail
VIDI=$1 SERVE=$2 MODEL=$3 EXAMPLES=$4
HERE=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${VIDI_CHROMIUM:-/usr/bin/chromium}
VIDEO=video_500016.mp4
QUESTION="Which shape moves?"   # examples/questions.tsv: "the yellow circle"

if [ ! -x "$CHROMIUM" ]; then
  if [ "${VIDI_REQUIRE_BROWSER:-0}" = 1 ]; then
    echo "browser: $CHROMIUM is missing and VIDI_REQUIRE_BROWSER=1 (apt-get install chromium)"; exit 1
  fi
  echo "browser: $CHROMIUM is missing: skipped (apt-get install chromium; VIDI_REQUIRE_BROWSER=1 makes this a failure)"
  exit 77
fi
command -v python3 >/dev/null || { echo "browser: python3 is missing"; exit 1; }

source "$HERE/../../e2e/lib.sh"
e2e_init browser
logs() {
  echo "--- vidi-serve log (tail)"; tail -20 "$RUN/serve.log" 2>/dev/null
  echo "--- vidi up log (tail)"; tail -20 "$RUN/up.log" 2>/dev/null
  echo "--- chromium log (tail)"; tail -20 "$RUN/chromium.log" 2>/dev/null
}

# the expected answer: single-process vidi generate
"$VIDI" generate --model "$MODEL" --video "$EXAMPLES/$VIDEO" --prompt "$QUESTION" --max-tokens 64 \
  --backend cpu --threads 2 >"$RUN/expected.txt" || { echo "browser: vidi generate failed"; exit 1; }
echo "browser: vidi generate answers \"$(cat "$RUN/expected.txt")\" to \"$QUESTION\" on $VIDEO"
[ -s "$RUN/expected.txt" ] || { echo "browser: vidi generate gave an empty answer"; exit 1; }

e2e_up "$VIDI" "$MODEL" all cpu

# vidi-serve on a random port (another one if that one is taken)
URL=
for _ in 1 2 3 4 5; do
  PORT=$(( 20000 + RANDOM % 20000 ))
  "$SERVE" --router "ipc://$RUN/front" --port "$PORT" --model "$MODEL" --samples "$EXAMPLES" >"$RUN/serve.log" 2>&1 &
  SERVE_PID=$!
  e2e_bg "$SERVE_PID"
  for _ in $(seq 1 100); do
    URL=$(sed -n 's|^vidi-serve: listening on \(http://[^ ]*\).*|\1|p' "$RUN/serve.log" 2>/dev/null)
    [ -n "$URL" ] && break 2
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null; SERVE_PID=
  echo "browser: vidi-serve did not start on port $PORT:"; tail -5 "$RUN/serve.log"
done
[ -n "$URL" ] || { echo "browser: vidi-serve did not start"; exit 1; }
echo "browser: vidi-serve at $URL"

python3 -B "$HERE/qa_page.py" "$URL" "$VIDEO" "$QUESTION" "$RUN/expected.txt" --chromium "$CHROMIUM" \
  --timeout 120 --log "$RUN/chromium.log"
rc=$?
[ $rc -eq 0 ] || logs
exit $rc
