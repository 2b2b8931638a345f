#!/usr/bin/env bash
# The split codec on the first 10 classes of tiny-imagenet-100 (CPU): λ sweeps at every split
# point, the two entropy models at layer4, and one table with every baseline and paired statistics.
# Usage: bash bench/split_10cls.sh [step...]
#   steps: reference layer4 layer4_hi layer3 layer4_hyper layer1 layer2 layer4_hyper_hi default table   (default: all, in that order)
# Each split point's latent is 4x4 (layer4: 2x2); the client's reference stages are frozen
# (model.freeze=client), so the client is the reference's own first stages and only the
# bottleneck and the server's stages train. THREADS=1 runs each job on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export OMP_NUM_THREADS=${THREADS:-2}
steps=${*:-reference layer4 layer4_hi layer3 layer4_hyper layer1 layer2 layer4_hyper_hi default table}
ref_dir=logs/reference/10cls
ref_ckpt() { ls "$ref_dir"/checkpoints/epoch_*.ckpt | head -1; }
sweep() {  # name, then overrides
  local name=$1; shift
  $PY train.py experiment=split_sweep model.reference_ckpt="$(ref_ckpt)" model.freeze=client logger=csv \
    trainer.enable_progress_bar=false hydra.sweep.dir=logs/split_sweep/10cls/$name "$@"
}
for step in $steps; do
  case $step in
    reference) $PY train.py experiment=reference hydra.run.dir=$ref_dir ;;
    layer1) sweep layer1 model.codec.split=layer1 model.codec.downsample=2 ;;
    layer2) sweep layer2 model.codec.split=layer2 model.codec.downsample=1 ;;
    layer3) sweep layer3 model.codec.split=layer3 ;;
    layer4) sweep layer4 model.codec.split=layer4 model.lmbda=0.001,0.003,0.01,0.03 ;;
    layer4_hi) sweep layer4_hi model.codec.split=layer4 model.lmbda=0.1 ;;
    layer4_hyper) sweep layer4_hyper model.codec.split=layer4 model.codec.entropy=hyperprior model.lmbda=0.01,0.03 ;;
    layer4_hyper_hi) sweep layer4_hyper_hi model.codec.split=layer4 model.codec.entropy=hyperprior model.lmbda=0.1 ;;
    default) $PY train.py hydra.run.dir=logs/default/10cls trainer.enable_progress_bar=false ;;
    table)  # + the seeds' studies' baselines and the fair peer (JPEG read by a JPEG-fine-tuned
            # classifier, from bench/train_test_grid.py); rows of an earlier table are reused, not re-measured
      reuse=(); [ -f results/split_10cls/provenance.json ] && reuse=(reuse_baselines=results/split_10cls)
      enc=$(ls logs/split_sweep/10cls/layer4_hyper_hi/0/export/encoder-*.pt)
      $PY evaluate.py classifier_ckpt="$(ref_ckpt)" "codec_dirs=[logs/split_sweep/10cls/*/*,logs/default/10cls]" \
        output_dir=results/split_10cls "${reuse[@]}" "extra_rows=[results/train_test_grid_10cls/finetuned_rows.json]" \
        "+baselines.block_average=[{factor: 2, levels: 4, small: webp, quality: 50}, {factor: 3, levels: 4, small: webp, quality: 50}, {factor: 4, levels: 4, small: webp_lossless}]" \
        "+baselines.roi_jpeg=[{source: variance, fraction: 0.5, quality: 30, background: blur}, {source: gradient, fraction: 0.5, quality: 30, background: blur, checkpoint: '$(ref_ckpt)'}, {source: bitmap, fraction: 0.5, quality: 30, background: blur, checkpoint: '$enc'}]" \
        "+baselines.jpeg_qtable=[{quality: 10, tables: results/frequency_10cls/qtables.json}, {quality: 20, tables: results/frequency_10cls/qtables.json}, {quality: 50, tables: results/frequency_10cls/qtables.json}]" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
