# bench/specdec/setup.sh — what run.sh and ksweep.sh share (sourced): the build (VIDI_BUILD, default
# .devlibs/build), OUT_DIR (bench/results), a RAW folder for the raw lines (default a new one), the
# data (DATA, tests/data/shapes) and its questions in $RAW/questions.tsv.
set -u -o pipefail
B=${VIDI_BUILD:-.devlibs/build}
OUT_DIR=${OUT_DIR:-bench/results}
RAW=${RAW:-$(mktemp -d)}
mkdir -p "$RAW" || exit 1
DATA=${DATA:-tests/data/shapes}
python3 bench/specdec/questions.py "$DATA/manifest.json" >"$RAW/questions.tsv" || exit 1
