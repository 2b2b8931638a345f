#!/usr/bin/env bash
# The reference classifiers, trained to their plateau (configs/experiment/reference.yaml), and their
# learning curves. Every training step resumes from its last checkpoint when it is run again, so a
# 100-class run that a session ended goes on where it stopped: just run the same command again.
# Usage: bash bench/references.sh [step...]
#   steps: 10cls 10cls_jpeg 100cls curves   (default: all, in that order)
#   10cls_jpeg: the same recipe with JPEG re-coding (random quality 5..95) as an augmentation
# THREADS (default 2) sets the torch threads; logs go to logs/reference/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
steps=${*:-10cls 10cls_jpeg 100cls curves}
train() {  # name, then overrides
  local name=$1; shift
  local dir=logs/reference/$name resume=()
  if [ -f "$dir/checkpoints/done" ]; then echo "$name: trained already ($dir)"; return; fi
  [ -f "$dir/checkpoints/last.ckpt" ] && resume=(ckpt_path="$dir/checkpoints/last.ckpt")
  $PY train.py experiment=reference logger=csv trainer.enable_progress_bar=false hydra.run.dir="$dir" "$@" "${resume[@]}"
  touch "$dir/checkpoints/done"
}
for step in $steps; do
  case $step in
    10cls) train 10cls ;;
    10cls_jpeg) train 10cls_jpeg "data.jpeg_augment=[5,95]" ;;
    100cls) train 100cls data.num_classes=100 model.ema_decay=0.9995 ;;
    curves) $PY bench/reference_curves.py --out results/references logs/reference/10cls logs/reference/10cls_jpeg logs/reference/100cls ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
