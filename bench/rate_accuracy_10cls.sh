#!/usr/bin/env bash
# Every number in results/*_10cls: reference classifier, standard-codec curves, λ sweeps of both
# heads, and the combined rate-accuracy table. CPU, first 10 classes of tiny-imagenet-100.
# PIXEL=1 adds the pixel sweep's runs to the table.
# Usage: bash bench/rate_accuracy_10cls.sh [step...]   (steps: reference baselines latent pixel table)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
steps=${*:-reference baselines latent table}  # pixel: run by hand, see README
ref_dir=logs/reference/10cls
ref_ckpt() { ls "$ref_dir"/checkpoints/epoch_*.ckpt | head -1; }
for step in $steps; do
  case $step in
    reference) $PY train.py experiment=reference hydra.run.dir=$ref_dir ;;
    baselines) $PY evaluate.py classifier_ckpt="$(ref_ckpt)" output_dir=results/baselines_10cls ;;
    latent)    $PY train.py experiment=lambda_sweep model.reference_ckpt="$(ref_ckpt)" hydra.sweep.dir=logs/lambda_sweep/10cls ;;
    pixel)     $PY train.py experiment=pixel_sweep model.reference_ckpt="$(ref_ckpt)" hydra.sweep.dir=logs/pixel_sweep/10cls ;;
    table)     $PY evaluate.py classifier_ckpt="$(ref_ckpt)" \
                 "codec_dirs=[logs/lambda_sweep/10cls/*${PIXEL:+,logs/pixel_sweep/10cls/*}]" output_dir=results/sweep_10cls ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
