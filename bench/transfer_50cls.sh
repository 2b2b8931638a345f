#!/usr/bin/env bash
# Class transfer with a frozen client: does a client trained on classes 0-49 serve
# classes 50-99 when only the server is retrained on its bytes?
#   A = classes 0-49 (the client's training classes), B = classes 50-99 (unseen by A's client)
# Steps (default: all, in this order; each skips what is already done, so a re-run resumes):
#   reference  ResNet-18 references on A and on B from raw pixels (5 epochs each)
#   baselines  ref B on B's 2,500 official-val images: raw, JPEG, WebP
#   codec      the split codec (layer4, hyperprior) at each λ, on A from ref A and on B from ref B
#              (B's is the upper bound: a client trained on the unseen classes themselves)
#   adapt      `taskcodec adapt`: A's frozen client on B's train images -> new server (g_s + tail,
#              from A's server with a new class layer), and a linear probe on the latent
#   finetune   the adoption baseline: ref A fine-tuned on B's raw pixels (new class layer, 2 epochs)
#   table      one rate-accuracy table on B's val images + results/transfer_50cls/transfer.{json,md}
#   probe      a linear probe on reference A's un-bottlenecked features (bench/transfer_probe.py)
# Usage: bash bench/transfer_50cls.sh [step...]     LAMBDAS (0.3,1) EPOCHS (2) ADAPT_EPOCHS (10)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
DATA=${DATA:-../shared/data/tiny-imagenet-100.zip}
LAMBDAS=${LAMBDAS:-0.3,1}; EPOCHS=${EPOCHS:-2}; ADAPT_EPOCHS=${ADAPT_EPOCHS:-10}
OUT=results/transfer_50cls
L=logs/transfer
steps=${*:-reference baselines codec adapt finetune table probe}
first_of() { [ "$1" = a ] && echo 0 || echo 50; }
ref_ckpt() { ls $L/reference_$1/checkpoints/epoch_*.ckpt | tail -1; }
export_of() { ls $L/codec_$1/lmbda_$2/export/$3-*.pt; }
for step in $steps; do
  case $step in
    reference)
      for side in a b; do
        dir=$L/reference_$side
        [ -f $dir/checkpoints/final.ckpt ] && continue
        resume=(); [ -f $dir/checkpoints/last.ckpt ] && resume=(ckpt_path=$dir/checkpoints/last.ckpt)
        $PY train.py experiment=reference data.num_classes=50 data.first_class=$(first_of $side) trainer.max_epochs=5 \
          logger=csv trainer.enable_progress_bar=false hydra.run.dir=$dir "${resume[@]}"
      done ;;
    codec)
      for side in a b; do
        for l in ${LAMBDAS//,/ }; do
          dir=$L/codec_$side/lmbda_$l
          ls $dir/export/decoder-*.pt >/dev/null 2>&1 && continue
          resume=(); [ -f $dir/checkpoints/last.ckpt ] && resume=(ckpt_path=$dir/checkpoints/last.ckpt)
          $PY train.py experiment=split_sweep hydra.mode=RUN data.num_classes=50 data.first_class=$(first_of $side) \
            model.reference_ckpt="$(ref_ckpt $side)" model.freeze=client model.lmbda=$l model.codec.split=layer4 \
            model.codec.entropy=hyperprior trainer.max_epochs=$EPOCHS logger=csv trainer.enable_progress_bar=false \
            hydra.run.dir=$dir reference_table=$([ $side = b ] && echo $OUT/baselines/rate_accuracy.csv || echo none) "${resume[@]}"
        done
      done ;;
    adapt)
      for l in ${LAMBDAS//,/ }; do
        [ -f $L/adapted/lmbda_$l/adapt.json ] || taskcodec adapt "$DATA" -m "$(export_of a $l encoder)" \
          --init-decoder "$(export_of a $l decoder)" -o $L/adapted/lmbda_$l --first-class 50 --num-classes 50 \
          --holdout-per-class 50 --epochs $ADAPT_EPOCHS -q
        [ -f $L/adapted_linear/lmbda_$l/adapt.json ] || taskcodec adapt "$DATA" -m "$(export_of a $l encoder)" \
          --server linear -o $L/adapted_linear/lmbda_$l --first-class 50 --num-classes 50 \
          --holdout-per-class 50 --epochs $ADAPT_EPOCHS -q
      done ;;
    finetune)
      dir=$L/finetune_raw
      [ -f $dir/checkpoints/final.ckpt ] && continue
      mkdir -p $dir
      $PY -c "import sys, torch; from taskcodec.models.classifier import reference_weights; torch.save(reference_weights(sys.argv[1])[2], sys.argv[2])" \
        "$(ref_ckpt a)" $dir/ref_a_timm.pth
      start=$(date +%s)
      $PY train.py experiment=reference data.num_classes=50 data.first_class=50 model.weights=$dir/ref_a_timm.pth \
        model.lr=0.01 model.warmup_epochs=0.3 trainer.max_epochs=2 logger=csv trainer.enable_progress_bar=false \
        hydra.run.dir=$dir
      echo "{\"wall_seconds\": $(( $(date +%s) - start ))}" > $dir/wall.json ;;
    baselines)
      $PY evaluate.py data.num_classes=50 data.first_class=50 classifier_ckpt="$(ref_ckpt b)" \
        "baselines={jpeg: [5, 10, 20, 30, 50, 75, 90], webp: [5, 10, 20, 30, 50, 75]}" \
        output_dir=$OUT/baselines ;;
    table)
      $PY evaluate.py data.num_classes=50 data.first_class=50 classifier_ckpt="$(ref_ckpt b)" \
        "codec_dirs=[$L/codec_b/*,$L/adapted/*,$L/adapted_linear/*]" reuse_baselines=$OUT/baselines output_dir=$OUT
      $PY bench/transfer_table.py --logs $L --table $OUT ;;
    probe) $PY bench/transfer_probe.py --reference-a "$(ref_ckpt a)" --table $OUT ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
