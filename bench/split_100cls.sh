#!/usr/bin/env bash
# The headline on all 100 classes of tiny-imagenet-100 (5,000 official-val images; CPU):
# the reference classifier, a λ sweep of the split codec at the split point chosen on 10 classes,
# and one table with JPEG/WebP/AVIF and paired statistics.
# Usage: bash bench/split_100cls.sh [step...]      steps: reference baselines sweep table long long_table (default: the first four)
# (baselines: the reference and JPEG/WebP/AVIF on the 5,000 images, reused by table)
# SPLIT/ENTROPY/DOWNSAMPLE/LAMBDAS/EPOCHS override the sweep; every run resumes from its last checkpoint
# when restarted with RESUME=1 (a 100-class run can span sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
SPLIT=${SPLIT:-layer4}; ENTROPY=${ENTROPY:-hyperprior}; DOWNSAMPLE=${DOWNSAMPLE:-0}; LAMBDAS=${LAMBDAS:-0.03,0.1,0.3,1,3}; EPOCHS=${EPOCHS:-1}
steps=${*:-reference baselines sweep table}
ref_dir=logs/reference/100cls
ref_ckpt() { ls "$ref_dir"/checkpoints/epoch_*.ckpt | head -1; }
for step in $steps; do
  case $step in
    reference)
      resume=(); [ "${RESUME:-0}" = 1 ] && [ -f $ref_dir/checkpoints/last.ckpt ] && resume=(ckpt_path=$ref_dir/checkpoints/last.ckpt)
      $PY train.py experiment=reference data.num_classes=100 trainer.max_epochs=6 logger=csv \
        trainer.enable_progress_bar=false hydra.run.dir=$ref_dir "${resume[@]}" ;;
    sweep)
      for l in ${LAMBDAS//,/ }; do
        dir=logs/split_sweep/100cls/$SPLIT-$ENTROPY/lmbda_$l
        [ -f $dir/export/decoder-*.pt ] 2>/dev/null && continue  # done already
        resume=(); [ -f $dir/checkpoints/last.ckpt ] && resume=(ckpt_path=$dir/checkpoints/last.ckpt)
        $PY train.py experiment=split_sweep hydra.mode=RUN data.num_classes=100 model.reference_ckpt="$(ref_ckpt)" \
          model.freeze=client model.lmbda=$l model.codec.split=$SPLIT model.codec.entropy=$ENTROPY model.codec.downsample=$DOWNSAMPLE \
          trainer.max_epochs=$EPOCHS logger=csv trainer.enable_progress_bar=false hydra.run.dir=$dir \
          reference_table=results/split_100cls/rate_accuracy.csv "${resume[@]}"
      done ;;
    baselines)
      $PY evaluate.py data.num_classes=100 classifier_ckpt="$(ref_ckpt)" \
        "baselines={jpeg: [1, 3, 5, 10, 20, 30, 50, 75, 90], webp: [5, 10, 20, 30, 50, 75], avif: [10, 25, 40, 50, 60, 70]}" \
        output_dir=results/baselines_100cls ;;
    long)  # λ=1 for 3 epochs: is the 100-class gap training length? (its own table)
      dir=logs/split_long/100cls/layer4-hyperprior/lmbda_1
      resume=(); [ -f $dir/checkpoints/last.ckpt ] && resume=(ckpt_path=$dir/checkpoints/last.ckpt)
      $PY train.py experiment=split_sweep hydra.mode=RUN data.num_classes=100 model.reference_ckpt="$(ref_ckpt)" \
        model.freeze=client model.lmbda=1 model.codec.split=layer4 model.codec.entropy=hyperprior \
        trainer.max_epochs=3 logger=csv trainer.enable_progress_bar=false hydra.run.dir=$dir "${resume[@]}" ;;
    long_table)
      $PY evaluate.py data.num_classes=100 classifier_ckpt="$(ref_ckpt)" "codec_dirs=[logs/split_long/100cls/*/*]" \
        reuse_baselines=results/baselines_100cls output_dir=results/split_100cls_long ;;
    table)
      $PY evaluate.py data.num_classes=100 classifier_ckpt="$(ref_ckpt)" "codec_dirs=[logs/split_sweep/100cls/*/*]" \
        reuse_baselines=results/baselines_100cls output_dir=results/split_100cls ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
