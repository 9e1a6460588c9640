#!/usr/bin/env bash
# hpdm end to end on a CPU in under 10 minutes: synthetic data -> train `tiny` -> sample -> proxy FD.
#
#   pip install torch==2.13.0 -e . && bash examples/quickstart.sh
#
# Everything goes to ./demo/ (DEMO_DIR). Run it again: finished stages are kept (data, the trained
# run), the rest is redone. Environment knobs (the defaults are the demo; tests shrink them):
#   DEMO_DIR=demo  TRAIN_STEPS=<tiny preset>  NUM_VIDEOS=256  NUM_SAMPLES=8  SAMPLE_STEPS=64
#   OVERLAP=hw  FVD_NUM=8  EXTRA_SET="model.num_levels=2 ..."  (extra --set for training)
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-demo}
TRAIN_STEPS=${TRAIN_STEPS:-}
NUM_VIDEOS=${NUM_VIDEOS:-256}
NUM_SAMPLES=${NUM_SAMPLES:-8}
SAMPLE_STEPS=${SAMPLE_STEPS:-64}
OVERLAP=${OVERLAP:-hw}
FVD_NUM=${FVD_NUM:-8}
FRAMES=${FRAMES:-32}
RESOLUTION=${RESOLUTION:-64}
EXTRA_SET=${EXTRA_SET:-}
HPDM=${HPDM:-hpdm}
read -r -a HPDM_CMD <<< "$HPDM"

mkdir -p "$DEMO_DIR"
SECONDS=0
stage() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS" >&2; }

stage "1/5 prepare: $NUM_VIDEOS synthetic videos, ${FRAMES}x${RESOLUTION}x${RESOLUTION}, 8 classes"
if [[ ! -f "$DEMO_DIR/data.h5" ]]; then
  "${HPDM_CMD[@]}" prepare synthetic --out "$DEMO_DIR/data.h5" --num-videos "$NUM_VIDEOS" \
    --frames "$FRAMES" --resolution "$RESOLUTION" --classes 8
else
  echo "kept $DEMO_DIR/data.h5" >&2
fi

stage "2/5 train: preset tiny (resumes if interrupted)"
train_args=(--data "$DEMO_DIR/data.h5" --preset tiny --run-dir "$DEMO_DIR/run")
[[ -n "$TRAIN_STEPS" ]] && train_args+=(--steps "$TRAIN_STEPS")
for kv in $EXTRA_SET; do train_args+=(--set "$kv"); done
"${HPDM_CMD[@]}" train "${train_args[@]}"

stage "3/5 sample: $NUM_SAMPLES videos, level by level, overlap $OVERLAP"
"${HPDM_CMD[@]}" sample --run "$DEMO_DIR/run" --num "$NUM_SAMPLES" --steps "$SAMPLE_STEPS" --overlap "$OVERLAP" \
  --out "$DEMO_DIR/samples.npz"

stage "4/5 render: mp4, gif and a frame-grid PNG"
python "$(dirname "$0")/render_samples.py" "$DEMO_DIR/samples.npz" "$DEMO_DIR/samples"

stage "5/5 evaluate: proxy FD with a random-weight I3D (no pretrained weights here)"
echo "NOTE: a Fréchet distance in the feature space of a seeded random I3D; NOT comparable with published FVD." >&2
"${HPDM_CMD[@]}" eval-fvd --real "$DEMO_DIR/data.h5" --fake "$DEMO_DIR/samples.npz" --random-i3d 0 \
  --num "$FVD_NUM" --frames 16 --batch-size 4 --cache-dir "$DEMO_DIR/cache"

printf '\ndone in %ds: %s/samples.mp4, %s/samples.gif, %s/samples_frames.png\n' \
  "$SECONDS" "$DEMO_DIR" "$DEMO_DIR" "$DEMO_DIR" >&2
