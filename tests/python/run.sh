#!/usr/bin/env bash
# tests/python/run.sh VIDI MODEL EXAMPLES PYDIR — the Python SDK (ipc/python,
# import name vidi_client) end to end (ctest label e2e): real `vidi up`
# processes (media, encode, prefill, decode) on the CPU with vidi-shapes, and
# tests/python/test_sdk.py (unittest) against their router, with PYTHONPATH at
# PYDIR (no install needed).
#
# The expected answers come from single-process `vidi generate` (greedy, 64
# tokens): the first question and the "Describe" question of every file of
# EXAMPLES/questions.tsv, and one question with a system turn.
#
# Then CURVE: a second router with an encrypted front answers a client with
# the keys, and a client without them gets nothing (a timeout, or a send no
# peer takes).
#
# Exit 77 (ctest: skipped) only when no python3 can import zmq and msgpack
# (Debian: python3-zmq python3-msgpack, see tools/install-deps).
# VIDI_E2E_BACKEND=cuda runs the workers and `vidi generate` on the GPU.
set -u -o pipefail
if [ $# -lt 4 ]; then echo "usage: $0 VIDI MODEL EXAMPLES PYDIR"; exit 2; fi
BACKEND=${VIDI_E2E_BACKEND:-cpu}
VIDI=$1 MODEL=$2 EXAMPLES=$3 PYDIR=$4
HERE=$(cd "$(dirname "$0")" && pwd)

# a python3 that has pyzmq and msgpack (a pyenv or venv python3 first on PATH
# may not see the Debian packages; /usr/bin/python3 does)
PY=
for cand in ${VIDI_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import zmq, msgpack' 2>/dev/null; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  echo "python-sdk: skipped: no python3 can import zmq and msgpack (apt-get install python3-zmq python3-msgpack)"
  exit 77
fi
echo "python-sdk: $("$PY" -c 'import sys, zmq, msgpack; print(sys.executable, sys.version.split()[0], "pyzmq", zmq.__version__, "libzmq", zmq.zmq_version(), "msgpack", ".".join(map(str, msgpack.version)))')"

source "$HERE/../e2e/lib.sh"
e2e_init py

gen() { # gen FILE QUESTION [SYSTEM]
  local kind=--image
  case $1 in video_*) kind=--video ;; esac
  "$VIDI" generate --model "$MODEL" "$kind" "$EXAMPLES/$1" --prompt "$2" ${3:+--system "$3"} --max-tokens 64 \
    --backend "$BACKEND" $([ "$BACKEND" = cpu ] && echo --threads 2)
}

# expected.tsv: file, system ('' for the template's), question, answer
: >"$RUN/expected.tsv"
declare -A seen=()
while IFS=$'\t' read -r file question _; do
  case $file in ''|'#'*) continue ;; esac
  case $question in Describe*) ;; *) [ -n "${seen[$file]:-}" ] && continue; seen[$file]=1 ;; esac
  answer=$(gen "$file" "$question") || { echo "python-sdk: vidi generate failed on $file: $question"; exit 1; }
  printf '%s\t\t%s\t%s\n' "$file" "$question" "$answer" >>"$RUN/expected.tsv"
done <"$EXAMPLES/questions.tsv"
SYSTEM="You answer questions about short videos of shapes."
answer=$(gen video_500018.webm "Which shape moves?" "$SYSTEM") || { echo "python-sdk: vidi generate failed"; exit 1; }
printf '%s\t%s\t%s\t%s\n' video_500018.webm "$SYSTEM" "Which shape moves?" "$answer" >>"$RUN/expected.tsv"
echo "python-sdk: $(wc -l <"$RUN/expected.tsv") expected answers from vidi generate:"
sed 's/^/  /' "$RUN/expected.tsv"

# the router and 4 workers
e2e_up "$VIDI" "$MODEL" media,encode,prefill,decode "$BACKEND"

VIDI_FRONT="ipc://$RUN/front" VIDI_EXAMPLES="$EXAMPLES" VIDI_EXPECTED="$RUN/expected.tsv" VIDI_FAKE_DIR="$RUN" \
  PYTHONPATH="$PYDIR${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
  "$PY" "$HERE/test_sdk.py" -v
rc=$?
if [ $rc != 0 ]; then echo "python-sdk: FAILED; the router's log:"; tail -n 50 "$RUN/up.log"; exit $rc; fi

# CURVE against a real router: a second router whose front is encrypted, one worker with every role
KEYS=$("$VIDI" keygen) && CKEYS=$("$VIDI" keygen) || { echo "python-sdk: vidi keygen failed"; exit 1; }
key() { awk -v k="$1" '$1 == k {print $2}' <<<"$2"; }
key secret "$KEYS" >"$RUN/server.key"
"$VIDI" router --front "ipc://$RUN/cfront" --back "ipc://$RUN/cback" --model "$MODEL" \
  --curve-secret-file "$RUN/server.key" >"$RUN/crouter.log" 2>&1 &
e2e_bg $!
"$VIDI" worker --router "ipc://$RUN/cback" --data "ipc://$RUN/cdata" --model "$MODEL" --role all --threads 1 \
  --backend "$BACKEND" >"$RUN/cworker.log" 2>&1 &
e2e_bg $!
for _ in $(seq 1 300); do grep -q joined "$RUN/crouter.log" 2>/dev/null && break; sleep 0.1; done
WANT=$(gen image_500001.png "What colour is the square?")
PYTHONPATH="$PYDIR" "$PY" - "ipc://$RUN/cfront" "$(key public "$KEYS")" "$(key public "$CKEYS")" \
  "$(key secret "$CKEYS")" "$EXAMPLES/image_500001.png" "$WANT" <<'PYEOF'
import sys
from vidi_client import Client, VidiError
front, spub, cpub, csec, image, want = sys.argv[1:7]
with Client(front, curve_server_key=spub, curve_public_key=cpub, curve_secret_key=csec) as c:
    got = c.ask("What colour is the square?", media=[image], max_tokens=64).result(timeout=60).text
print("python-sdk: curve: with the keys the encrypted router answers %r (vidi generate: %r)" % (got, want))
ok = got == want
with Client(front, timeout=3.0) as c:
    try:
        c.ask("What colour is the square?", media=[image]).result()
        ok = False
        print("python-sdk: curve: FAIL: a client without keys got an answer")
    except VidiError as e:  # a timeout, or a send that no peer takes: the handshake never completes
        print("python-sdk: curve: without keys nothing comes back (%s: %s)" % (type(e).__name__, e.code))
sys.exit(0 if ok else 1)
PYEOF
rc=$?
[ $rc = 0 ] || { echo "python-sdk: the CURVE case failed"; tail -5 "$RUN/crouter.log"; }
exit $rc
