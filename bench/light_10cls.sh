#!/usr/bin/env bash
# The light client on the first 10 classes (CPU): the two-stage recipe (features, then a frozen
# client and a fine-tuned server) for clients of several sizes and rates, the one-stage recipe at
# the same number of epochs for comparison, one table with every baseline and the label row, and
# the client speed bench.
# Usage: bash bench/light_10cls.sh [step...]
#   steps: runs onestage split table speed longer   (default: all, in that order)
#   split: the layer4 split codec (hyperprior, λ=0.1, 4 epochs: the committed split_10cls recipe) distilled
#          from the same teacher, so the table sets the heavy client beside the light ones and the label row
# CLIENTS (names below) and LAMBDAS override the grid (ONESTAGE_CLIENTS/ONESTAGE_LAMBDAS the comparison);
# S1/S2 are the two stages' epochs.
# The teacher is the strong 10-class reference (bash bench/references.sh 10cls). Every run is skipped
# when its export exists, so an interrupted grid continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
steps=${*:-runs onestage split table speed longer}
CLIENTS=${CLIENTS:-c8 c2}; LAMBDAS=${LAMBDAS:-0.3 1}; S1=${S1:-20}; S2=${S2:-10}
ONESTAGE_CLIENTS=${ONESTAGE_CLIENTS:-c8}; ONESTAGE_LAMBDAS=${ONESTAGE_LAMBDAS:-1}
ref_ckpt() { ls logs/reference/10cls/checkpoints/epoch_*.ckpt | head -1; }
client() {  # name -> the codec overrides (client MACs at 64x64 in the results table)
  case $1 in
    c8) echo "model.codec.channels=[16,32,64] model.codec.kernel=5 model.codec.act=gdn model.codec.entropy=hyperprior" ;;
    c2) echo "model.codec.channels=[8,16,32] model.codec.kernel=3 model.codec.act=gdn model.codec.entropy=hyperprior" ;;
    c1) echo "model.codec.channels=[8,16,32] model.codec.kernel=3 model.codec.act=relu model.codec.entropy=factorized" ;;
    *) echo "unknown client $1" >&2; exit 2 ;;
  esac
}
run() {  # dir, then overrides: train.py unless the run exported already; resumes from last.ckpt
  local dir=$1; shift
  if ls "$dir"/export/decoder-*.pt >/dev/null 2>&1; then echo "done: $dir"; return; fi
  local resume=(); [ -f "$dir/checkpoints/last.ckpt" ] && resume=(ckpt_path="$dir/checkpoints/last.ckpt")
  $PY train.py logger=csv trainer.enable_progress_bar=false hydra.run.dir="$dir" reference_table=results/light_10cls/rate_accuracy.csv \
    model.reference_ckpt="$(ref_ckpt)" "$@" "${resume[@]}"
}
for step in $steps; do
  case $step in
    runs)
      for c in $CLIENTS; do for l in $LAMBDAS; do
        d=logs/light/10cls/$c-lmbda_$l
        # shellcheck disable=SC2046
        run "$d/features" experiment=light_features $(client "$c") model.lmbda="$l" trainer.max_epochs="$S1"
        # shellcheck disable=SC2046
        run "$d/task" experiment=light_task $(client "$c") model.init_codec="$d/features/checkpoints/final.ckpt" trainer.max_epochs="$S2"
      done; done ;;
    onestage)  # today's recipe (rate + λ·(CE/KD), everything trained at once) for the same S1+S2 epochs
      for c in $ONESTAGE_CLIENTS; do for l in $ONESTAGE_LAMBDAS; do
        # shellcheck disable=SC2046
        run "logs/light/10cls/$c-lmbda_$l/onestage" model/codec=light $(client "$c") model.lmbda="$l" model.distill=0.5 \
          model.entropy_lr=1e-2 model.aux_lr=1e-2 model.rate_warmup_epochs=1 trainer.max_epochs=$((S1 + S2))
      done; done ;;
    split)
      run logs/light/10cls/split-layer4/task experiment=split_sweep hydra.mode=RUN model.freeze=client \
        model.codec.split=layer4 model.codec.entropy=hyperprior model.lmbda=0.1 ;;
    table)
      $PY evaluate.py classifier_ckpt="$(ref_ckpt)" \
        "codec_dirs=[logs/light/10cls/*/features,logs/light/10cls/*/task,logs/light/10cls/*/onestage]" \
        output_dir=results/light_10cls "baselines={jpeg: [1, 3, 5, 10, 20, 30, 50, 75, 90, 95], webp: null, avif: null}" ;;
    longer)  # is the server's training the limit? stage 2 of c8 λ=1 again, 30 epochs with TrivialAugment
      d=logs/light/10cls/c8-lmbda_1
      # shellcheck disable=SC2046
      run "$d/task_long_ta" experiment=light_task $(client c8) model.init_codec="$d/features/checkpoints/final.ckpt" \
        trainer.max_epochs=30 data.augment_policy=trivialaugment
      $PY evaluate.py classifier_ckpt="$(ref_ckpt)" "codec_dirs=[$d/task_long_ta]" reuse_baselines=results/light_10cls \
        output_dir=results/light_10cls/longer_stage2 "baselines={jpeg: [1, 3, 5, 10, 20, 30, 50, 75, 90, 95]}" ;;
    speed)
      $PY bench/client_speed.py --out results/light_10cls/client_speed.json logs/light/10cls/*/task ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
