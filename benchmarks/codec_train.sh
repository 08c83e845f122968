#!/usr/bin/env bash
# Train the learned-codec benchmark points one after another (one CPU thread, nice 5), each with
# `qcompile codec train`, then copy its small outputs (bundles, codec.json, the log) into
# benchmarks/results/codec/<arm>-<lambda>/. Run directories (checkpoints) stay in $RUNS.
# Usage: [CROP=64] [LR=5e-4] [INIT=RUN_DIR] [RUNS=DIR] benchmarks/codec_train.sh STEPS "un:0.0067 uq-sr:0.0067 ..."
# (INIT: every point starts from that finished run's weights, e.g. one long noise-trained run.)
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STEPS=${1:?steps}; POINTS=${2:?points}; CROP=${CROP:-128}; LR=${LR:-5e-4}; INIT=${INIT:-}
RUNS=${RUNS:-runs/codec}
QC=${QC:-qcompile}
mkdir -p "$RUNS" benchmarks/results/codec
for point in $POINTS; do
  arm=${point%%:*}; lambda=${point##*:}; name="$arm-$lambda"; dir="$RUNS/$name"
  resume=(); [ -f "$dir/codec.json" ] && resume=(--resume)
  if [ -f "$dir/codec-universal.qcodec" ]; then echo "skip $name (done)"; continue; fi
  cmd=(nice -n 5 "$QC" codec train --quantization "$arm" --lambda "$lambda" --steps "$STEPS" --crop "$CROP" --lr "$LR" ${INIT:+--init "$INIT"}
       --data ../shared/data/photos --kodak ../shared/data/kodak --out "$dir" "${resume[@]}" --json)
  echo "$(date +%T) ${cmd[*]}"
  "${cmd[@]}" > "$RUNS/$name.json" 2> "$RUNS/$name.log"
  mkdir -p "benchmarks/results/codec/$name"
  cp "$dir"/codec-*.qcodec "$dir/codec.json" "benchmarks/results/codec/$name/"
  cp "$RUNS/$name.json" "benchmarks/results/codec/$name/train.json"
  echo "$(date +%T) done $name"
done
