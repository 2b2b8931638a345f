#!/usr/bin/env bash
# Deployable on both ends: the torch-free ONNX client against the PyTorch one on the 100-class val
# set (5,000 images; threads 1/2, batches 1/64: identical records, label agreement, desynchronised
# records), and the HTTP server under load against the same design serving JPEG (10 classes).
# Usage: bash bench/deploy.sh [step...]     steps: train agreement load   (default: all)
#   train: a 100-class light client with the factorized entropy model (the kind the ONNX export takes),
#          one epoch from scratch with no teacher: a real model to measure runtime agreement on, not a
#          result on accuracy (its top-1 is in its log)
#   load:  the light client of bench/light_10cls.sh (c1, λ=1) and the 10-class reference
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
steps=${*:-train agreement load}
for step in $steps; do
  case $step in
    train)
      ls logs/deploy/light100-c1/export/decoder-*.pt >/dev/null 2>&1 || \
      $PY train.py model/codec=light model.codec.entropy=factorized model.codec.act=relu "model.codec.channels=[8,16,32]" \
        model.codec.kernel=3 data.num_classes=100 trainer.max_epochs=1 model.lmbda=1 logger=csv \
        trainer.enable_progress_bar=false hydra.run.dir=logs/deploy/light100-c1 reference_table=null ;;
    agreement)
      $PY bench/deploy_agreement.py logs/deploy/light100-c1/export --num-classes 100 --out results/deploy/agreement_100cls.json ;;
    load)
      enc=$(ls logs/light/10cls/c1-lmbda_1/task/export/encoder-*.pt)
      $PY bench/serve_load.py --encoder "$enc" --decoder "${enc/encoder-/decoder-}" \
        --reference "$(ls logs/reference/10cls/checkpoints/epoch_*.ckpt | head -1)" --requests 500 --out results/deploy/serve_load.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
