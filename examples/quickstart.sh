#!/usr/bin/env bash
# hpdm end to end on a CPU in about 10 minutes (2 cores): synthetic data -> train `tiny` -> sample -> scores of the
# samples by a classifier trained on the same data (accuracy of the requested class, FD in its features).
#
#   pip install torch==2.13.0 -e . && bash examples/quickstart.sh
#
# Everything goes to ./demo/ (DEMO_DIR). Run it again: finished stages are kept (data, the trained
# run), the rest is redone. Environment knobs (the defaults are the demo; tests shrink them):
#   DEMO_DIR=demo  TRAIN_STEPS=<tiny preset>  NUM_VIDEOS=256  NUM_SAMPLES=8  SAMPLE_STEPS=32
#   OVERLAP=hw  FVD_NUM=8  CLASSES=8  CLASSIFIER_STEPS=<train-classifier default>
#   EXTRA_SET="model.num_levels=2 ..."  (extra --set for training)
#   SCHEDULE=auto|cpu|gpu  (auto: gpu when torch sees CUDA)
# On a GPU a `tiny` step costs the same with 8 clips as with 64 (its time goes to launching kernels), so the
# gpu schedule spends the same minutes on ten times the clips: 4000 steps of 32, with loader workers to keep up
# (7 minutes on one H200; docs/quickstart.md, "On a GPU").
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-demo}
TRAIN_STEPS=${TRAIN_STEPS:-}
NUM_VIDEOS=${NUM_VIDEOS:-256}
NUM_SAMPLES=${NUM_SAMPLES:-8}
SAMPLE_STEPS=${SAMPLE_STEPS:-32}
OVERLAP=${OVERLAP:-hw}
FVD_NUM=${FVD_NUM:-8}
FRAMES=${FRAMES:-32}
CLASSES=${CLASSES:-8}
RESOLUTION=${RESOLUTION:-64}
EXTRA_SET=${EXTRA_SET:-}
CLASSIFIER_STEPS=${CLASSIFIER_STEPS:-}
HPDM=${HPDM:-hpdm}
read -r -a HPDM_CMD <<< "$HPDM"
SCHEDULE=${SCHEDULE:-auto}
if [[ "$SCHEDULE" == auto ]]; then
  SCHEDULE=$(python -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
fi
case "$SCHEDULE" in
  cpu) SCHEDULE_SET="" ;;
  gpu) TRAIN_STEPS=${TRAIN_STEPS:-4000}; SCHEDULE_SET="train.batch_size=32 data.num_workers=4" ;;
  *) echo "error: SCHEDULE must be auto, cpu or gpu, got '$SCHEDULE'" >&2; exit 2 ;;
esac

mkdir -p "$DEMO_DIR"
SECONDS=0
stage() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS" >&2; }

stage "1/6 prepare: $NUM_VIDEOS synthetic videos, ${FRAMES}x${RESOLUTION}x${RESOLUTION}, $CLASSES classes"
if [[ ! -f "$DEMO_DIR/data.h5" ]]; then
  "${HPDM_CMD[@]}" prepare synthetic --out "$DEMO_DIR/data.h5" --num-videos "$NUM_VIDEOS" \
    --frames "$FRAMES" --resolution "$RESOLUTION" --classes "$CLASSES"
else
  echo "kept $DEMO_DIR/data.h5" >&2
fi

stage "2/6 classifier: a small video classifier on the same data, the yardstick of stage 6"
if [[ ! -f "$DEMO_DIR/classifier.pt" ]]; then
  classifier_args=(--data "$DEMO_DIR/data.h5" --out "$DEMO_DIR/classifier.pt")
  [[ -n "$CLASSIFIER_STEPS" ]] && classifier_args+=(--steps "$CLASSIFIER_STEPS")
  "${HPDM_CMD[@]}" train-classifier "${classifier_args[@]}"
else
  echo "kept $DEMO_DIR/classifier.pt" >&2
fi

stage "3/6 train: preset tiny, $SCHEDULE schedule (resumes if interrupted)"
train_args=(--data "$DEMO_DIR/data.h5" --preset tiny --run-dir "$DEMO_DIR/run" --set "model.num_classes=$CLASSES")
[[ -n "$TRAIN_STEPS" ]] && train_args+=(--steps "$TRAIN_STEPS")
for kv in $SCHEDULE_SET $EXTRA_SET; do train_args+=(--set "$kv"); done  # EXTRA_SET last: it wins
"${HPDM_CMD[@]}" train "${train_args[@]}"

stage "4/6 sample: $NUM_SAMPLES videos, level by level, overlap $OVERLAP"
"${HPDM_CMD[@]}" sample --run "$DEMO_DIR/run" --num "$NUM_SAMPLES" --steps "$SAMPLE_STEPS" --overlap "$OVERLAP" \
  --out "$DEMO_DIR/samples.npz" --overwrite  # redone on every run, from the latest checkpoint

stage "5/6 render: mp4, gif and a frame-grid PNG"
python "$(dirname "$0")/render_samples.py" "$DEMO_DIR/samples.npz" "$DEMO_DIR/samples"

stage "6/6 evaluate: the classifier's accuracy and FD of the samples (+ a proxy FD with a random-weight I3D)"
echo "NOTE: the classifier's numbers are against its held-out real videos; the FD of a seeded random I3D is" \
  "a proxy, NOT comparable with published FVD (no pretrained weights here)." >&2
"${HPDM_CMD[@]}" eval-fvd --real "$DEMO_DIR/data.h5" --fake "$DEMO_DIR/samples.npz" \
  --classifier "$DEMO_DIR/classifier.pt" --random-i3d 0 \
  --num "$FVD_NUM" --frames 16 --batch-size 4 --cache-dir "$DEMO_DIR/cache"

printf '\ndone in %ds: %s/samples.mp4, %s/samples.gif, %s/samples_frames.png\n' \
  "$SECONDS" "$DEMO_DIR" "$DEMO_DIR" "$DEMO_DIR" >&2
