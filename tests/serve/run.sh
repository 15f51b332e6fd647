#!/usr/bin/env bash
# tests/serve/run.sh VIDI VIDI_SERVE MODEL EXAMPLES — vidi-serve end to end
# (ctest e2e_serve): `vidi up` (all roles, CPU, speculating with the draft
# model) and vidi-serve with an API
# key, a file:// root and an 8 MiB body limit; tests/serve/test_serve.py
# checks OpenAI-style requests, streamed and not, with a plain HTTP client
# and with the `openai` package (from PyPI, in a venv under the build
# folder, made on first use), bad requests, /v1/models, /health, /metrics.
set -u -o pipefail
VIDI=$1 SERVE=$2 MODEL=$3 EXAMPLES=$4
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../e2e/lib.sh"
e2e_init serve

# the openai package, in a venv next to the build (made once)
PYENV=${VIDI_PYENV:-$(cd "$(dirname "$SERVE")/../.." && pwd)/pyenv}
if ! "$PYENV/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$PYENV" && "$PYENV/bin/pip" install -q 'openai>=1.0' ||
    { echo "e2e_serve: cannot install the openai package into $PYENV"; exit 1; }
fi

# expected answers: single-process vidi generate
gen() { "$VIDI" generate --model "$MODEL" "$1" "$EXAMPLES/$2" --prompt "$3" --max-tokens 64 --backend cpu --threads 2; }
export EXPECT_VIDEO EXPECT_IMAGE
EXPECT_VIDEO=$(gen --video video_500016.mp4 "What moves?") || exit 1
EXPECT_IMAGE=$(gen --image image_500001.png "What colour is the square?") || exit 1

# the worker speculates with the draft model: the answers stay vidi generate's, /metrics counts the drafts
e2e_up "$VIDI" "$MODEL" all cpu --worker-args "--spec draft:4 --draft $MODEL-draft"

PORT=$(( 20000 + RANDOM % 20000 ))
export VIDI_SERVE_URL="http://127.0.0.1:$PORT" VIDI_SERVE_KEY=e2e-key VIDI_EXAMPLES=$EXAMPLES
"$SERVE" --router "ipc://$RUN/front" --port "$PORT" --model "$MODEL" --api-key "$VIDI_SERVE_KEY" \
  --allowed-media-root "$EXAMPLES" --max-body-mb 8 --samples "$EXAMPLES" >"$RUN/serve.log" 2>&1 &
e2e_bg $!
for _ in $(seq 1 100); do grep -q 'listening on' "$RUN/serve.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'listening on' "$RUN/serve.log" || { echo "e2e_serve: vidi-serve did not start"; cat "$RUN/serve.log"; exit 1; }
# a second vidi-serve that may fetch media over HTTP, from a local file server
PORT2=$((PORT + 1)) PORT3=$((PORT + 2))
python3 -m http.server "$PORT3" --bind 127.0.0.1 --directory "$EXAMPLES" >"$RUN/http.log" 2>&1 &
e2e_bg $!
"$SERVE" --router "ipc://$RUN/front" --port "$PORT2" --model "$MODEL" --allow-remote-media >"$RUN/serve2.log" 2>&1 &
e2e_bg $!
for _ in $(seq 1 100); do grep -q 'listening on' "$RUN/serve2.log" 2>/dev/null && break; sleep 0.1; done
export VIDI_SERVE_REMOTE_URL="http://127.0.0.1:$PORT2" VIDI_MEDIA_HTTP="http://127.0.0.1:$PORT3"
"$PYENV/bin/python" "$HERE/test_serve.py" || { echo "--- vidi-serve log"; tail -20 "$RUN/serve.log"; exit 1; }
