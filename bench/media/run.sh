#!/usr/bin/env bash
# bench/media/run.sh — the media benchmark (CPU), issue 3 item 8.
#
# Generates its inputs (not committed) under $BUILD/media-bench:
#   clip.mp4   60 s, 1920x1080, 30 fps H.264 (libx264 preset veryfast,
#              default GOP 250), a moving testsrc2 pattern
#   photo.jpg  4032x3024 JPEG, quality 90, testsrc2 with grain (textured)
# then times, in this one run, $ROUNDS rounds in which every case runs once
# after its own warm-up, the cases taking turns (the machine is shared: load
# from other jobs then falls on every case alike); the median per case:
#   vidi: 32 frames sampled by seeking, to RGB and to patches; the JPEG to patches
#   FFmpeg libavcodec decoding every frame (decode_all.c), without and with RGB
#   PyAV sampling as qwen-vl-utils does it, and its full path to patches;
#   Pillow + transformers' Qwen2VLImageProcessorPil for the JPEG
# and writes bench/results/media-sampling.json and bench/results/media-image.json.
#
# Environment: BUILD (build dir, default <repo>/build-bench), THREADS (decoder
# and torch threads, default 2), ROUNDS (default 5), PY (a Python with av,
# torch, torchvision, transformers, qwen-vl-utils; default /opt/golden/bin/python).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$REPO/build-bench}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
PY=${PY:-/opt/golden/bin/python}
DATA=$BUILD/media-bench
mkdir -p "$DATA"

# ---- build vidi's media library and the two bench programs ----
cmake -S "$REPO" -B "$BUILD" -DVIDI_CUDA=OFF -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j"$THREADS" --target vidi_media >/dev/null
CFLAGS="-std=c11 -O2 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter"
LIBS="$(pkg-config --libs jansson libpcre2-8 libutf8proc openblas libavformat libavcodec libavutil libswscale libturbojpeg) -lm -pthread"
cc $CFLAGS -I"$REPO" "$REPO/bench/media/bench_media.c" -o "$DATA/bench_media" \
    "$BUILD/libvidi_media.a" "$BUILD/libvidi_engine.a" $LIBS
cc $CFLAGS -I"$REPO" "$REPO/bench/media/decode_all.c" -o "$DATA/decode_all" \
    $(pkg-config --libs libavformat libavcodec libavutil libswscale)

# ---- inputs ----
CLIP=$DATA/clip.mp4
JPEG=$DATA/photo.jpg
if [ ! -s "$CLIP" ]; then
    ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=60 \
        -c:v libx264 -preset veryfast -pix_fmt yuv420p "$CLIP"
fi
# the same picture with a keyframe every 2 s (x264 -g 60), as phone cameras and
# streaming encoders write them; the clip above keeps x264's default GOP (250)
CLIP2=$DATA/clip_gop60.mp4
if [ ! -s "$CLIP2" ]; then
    ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=60 \
        -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p "$CLIP2"
fi
if [ ! -s "$JPEG" ]; then
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=4032x3024:rate=1,noise=alls=24:allf=u" \
        -frames:v 1 "$DATA/photo.png"
    "$PY" -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2], quality=90)' \
        "$DATA/photo.png" "$JPEG"
fi

# ---- time everything in this run ----
RAW=$DATA/raw.jsonl
: >"$RAW"
echo "media bench: threads $THREADS, $ROUNDS rounds; inputs in $DATA" >&2
for round in $(seq 1 "$ROUNDS"); do
    echo "-- round $round of $ROUNDS" >&2
    "$DATA/bench_media" --clip "$CLIP" --jpeg "$JPEG" --threads "$THREADS" --runs 1 --nframes 32 | tee -a "$RAW" >&2
    "$DATA/decode_all" "$CLIP" --threads "$THREADS" --runs 1 | tee -a "$RAW" >&2
    "$DATA/decode_all" "$CLIP" --threads "$THREADS" --runs 1 --rgb | tee -a "$RAW" >&2
    { "$DATA/bench_media" --clip "$CLIP2" --jpeg "$JPEG" --threads "$THREADS" --runs 1 --nframes 32 --sample-only
      "$DATA/decode_all" "$CLIP2" --threads "$THREADS" --runs 1
      "$DATA/decode_all" "$CLIP2" --threads "$THREADS" --runs 1 --rgb
    } | sed -E 's/"case":"([a-z_]+)"/"case":"\1_gop60"/' | tee -a "$RAW" >&2
    "$PY" "$REPO/bench/media/py_baselines.py" --clip "$CLIP" --jpeg "$JPEG" --threads "$THREADS" \
        --runs 1 --nframes 32 | tee -a "$RAW" >&2
done

"$PY" "$REPO/bench/media/report.py" --raw "$RAW" --clip "$CLIP" --jpeg "$JPEG" \
    --threads "$THREADS" --rounds "$ROUNDS" --out "$REPO/bench/results" \
    --command "${BENCH_COMMAND:-ROUNDS=$ROUNDS THREADS=$THREADS bench/media/run.sh}"
