#!/usr/bin/env bash
# hpdm text-to-video on a CPU (about 15 minutes on 2 cores): a captioned synthetic set with held-out
# (colour, shape) pairs -> a small T5 encoder with RANDOM weights (built locally; no download) -> its
# embeddings of every caption in the data file -> train `tiny-t2v` -> sample from prompts of seen and
# unseen pairs -> how often the samples show the prompted colour and shape, measured from the pixels.
#
#   pip install torch==2.13.0 -e ".[text]" && bash examples/quickstart_t2v.sh
#
# Everything goes to ./demo_t2v/ (DEMO_DIR); finished stages are kept on a re-run. Knobs:
#   DEMO_DIR=demo_t2v  TRAIN_STEPS=<tiny-t2v preset>  NUM_VIDEOS=256  HOLDOUT=2  COLOURS=4  SHAPES=4
#   PER_SEEN=2  PER_UNSEEN=2  SAMPLE_STEPS=32  OVERLAP=hw  TEXT_ENCODER=<a T5 folder; default: the random one>
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-demo_t2v}
TRAIN_STEPS=${TRAIN_STEPS:-}
NUM_VIDEOS=${NUM_VIDEOS:-256}
HOLDOUT=${HOLDOUT:-2}
COLOURS=${COLOURS:-4}
SHAPES=${SHAPES:-4}
PER_SEEN=${PER_SEEN:-2}
PER_UNSEEN=${PER_UNSEEN:-2}
SAMPLE_STEPS=${SAMPLE_STEPS:-32}
OVERLAP=${OVERLAP:-hw}
FRAMES=${FRAMES:-32}
RESOLUTION=${RESOLUTION:-64}
EXTRA_SET=${EXTRA_SET:-}
TEXT_ENCODER=${TEXT_ENCODER:-}
HPDM=${HPDM:-hpdm}
read -r -a HPDM_CMD <<< "$HPDM"
HERE=$(dirname "$0")

mkdir -p "$DEMO_DIR"
SECONDS=0
stage() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS" >&2; }

stage "1/6 prepare: $NUM_VIDEOS captioned videos, $COLOURS colours x $SHAPES shapes, $HOLDOUT pairs held out"
if [[ ! -f "$DEMO_DIR/data.h5" ]]; then
  "${HPDM_CMD[@]}" prepare synthetic --captions --out "$DEMO_DIR/data.h5" --num-videos "$NUM_VIDEOS" \
    --frames "$FRAMES" --resolution "$RESOLUTION" --colours "$COLOURS" --shapes "$SHAPES" --holdout-pairs "$HOLDOUT"
else
  echo "kept $DEMO_DIR/data.h5" >&2
fi

stage "2/6 text encoder and embeddings"
if [[ -z "$TEXT_ENCODER" ]]; then
  TEXT_ENCODER="$DEMO_DIR/text_encoder"
  echo "NOTE: a T5 encoder with RANDOM weights (a stand-in: no pretrained T5 can be downloaded here)." >&2
  [[ -d "$TEXT_ENCODER" ]] || "${HPDM_CMD[@]}" random-text-encoder --out "$TEXT_ENCODER"
fi
if ! "${HPDM_CMD[@]}" info "$DEMO_DIR/data.h5" --json | grep -q '"text_encoder"'; then
  "${HPDM_CMD[@]}" encode-text --data "$DEMO_DIR/data.h5" --text-encoder "$TEXT_ENCODER"
else
  echo "kept the embeddings in $DEMO_DIR/data.h5" >&2
fi

stage "3/6 train: preset tiny-t2v (resumes if interrupted)"
train_args=(--data "$DEMO_DIR/data.h5" --preset tiny-t2v --run-dir "$DEMO_DIR/run")
[[ -n "$TRAIN_STEPS" ]] && train_args+=(--steps "$TRAIN_STEPS")
for kv in $EXTRA_SET; do train_args+=(--set "$kv"); done
"${HPDM_CMD[@]}" train "${train_args[@]}"

stage "4/6 sample: prompts of seen pairs ($PER_SEEN each) and of unseen pairs ($PER_UNSEEN each)"
python "$HERE/t2v_report.py" prompts "$DEMO_DIR/data.h5" "$DEMO_DIR/prompts.txt" \
  --per-seen "$PER_SEEN" --per-unseen "$PER_UNSEEN"
"${HPDM_CMD[@]}" sample --run "$DEMO_DIR/run" --prompts "$DEMO_DIR/prompts.txt" --steps "$SAMPLE_STEPS" \
  --overlap "$OVERLAP" --text-encoder "$TEXT_ENCODER" --out "$DEMO_DIR/samples.npz" --overwrite

stage "5/6 render: mp4, gif and a frame-grid PNG"
python "$HERE/render_samples.py" "$DEMO_DIR/samples.npz" "$DEMO_DIR/samples" --rows 32

stage "6/6 does it listen? colour and shape of every sample, measured from the pixels"
python "$HERE/t2v_report.py" score "$DEMO_DIR/data.h5" "$DEMO_DIR/samples.npz" "$DEMO_DIR/prompts.json" \
  --grid "$DEMO_DIR/samples_prompts.png" --json "$DEMO_DIR/report.json"

printf '\ndone in %ds: %s/samples_prompts.png (the prompts beside their samples), %s/report.json\n' \
  "$SECONDS" "$DEMO_DIR" "$DEMO_DIR" >&2
