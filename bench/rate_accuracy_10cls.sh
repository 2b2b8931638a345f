#!/usr/bin/env bash
# Every number in results/*_10cls: reference classifier, standard-codec curves, λ sweeps of both
# heads, and the combined rate-accuracy table. CPU, first 10 classes of tiny-imagenet-100.
# Usage: bash bench/rate_accuracy_10cls.sh [step...]
#   steps: reference baselines latent latent_nokd pixel table long long_table
#   (default: all of them, in that order)
# latent: the λ sweep with distillation (experiment=lambda_sweep); latent_nokd: the same runs
# without it (the ablation); pixel: the pixel head in front of the frozen reference.
# table gathers whichever sweeps exist into results/sweep_10cls. long: one λ=4 run of 25 epochs
# (otherwise as in the latent sweep); long_table: its own table, results/long_10cls.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
steps=${*:-reference baselines latent latent_nokd pixel table long long_table}
ref_dir=logs/reference/10cls
ref_ckpt() { ls "$ref_dir"/checkpoints/epoch_*.ckpt | head -1; }
for step in $steps; do
  case $step in
    reference) $PY train.py experiment=reference hydra.run.dir=$ref_dir ;;
    baselines) $PY evaluate.py classifier_ckpt="$(ref_ckpt)" output_dir=results/baselines_10cls ;;
    latent)    $PY train.py experiment=lambda_sweep model.reference_ckpt="$(ref_ckpt)" hydra.sweep.dir=logs/lambda_sweep/10cls ;;
    latent_nokd) $PY train.py experiment=lambda_sweep model.reference_ckpt="$(ref_ckpt)" model.distill=0 \
                 model.lmbda=0.25,1,4 task_name=lambda_sweep_nokd hydra.sweep.dir=logs/lambda_sweep_nokd/10cls ;;
    pixel)     $PY train.py experiment=pixel_sweep model.reference_ckpt="$(ref_ckpt)" hydra.sweep.dir=logs/pixel_sweep/10cls ;;
    table)     $PY evaluate.py classifier_ckpt="$(ref_ckpt)" \
                 "codec_dirs=[$(ls -d logs/{lambda_sweep,lambda_sweep_nokd,pixel_sweep}/10cls 2>/dev/null | sed 's|$|/*|' | paste -sd,)]" output_dir=results/sweep_10cls ;;
    long)      $PY train.py experiment=lambda_sweep model.reference_ckpt="$(ref_ckpt)" model.lmbda=4 trainer.max_epochs=25 \
                 task_name=lambda_long hydra.sweep.dir=logs/lambda_long/10cls ;;
    long_table) $PY evaluate.py classifier_ckpt="$(ref_ckpt)" "codec_dirs=[logs/lambda_long/10cls/*]" output_dir=results/long_10cls ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
