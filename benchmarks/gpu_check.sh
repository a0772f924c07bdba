#!/usr/bin/env bash
# The CUDA paths, end to end, in under 5 minutes: train (bf16, fp16; 2-process DDP when there are
# two GPUs), synthesize and evaluate on a GPU with small settings, printing each step's time.
#
#   bash benchmarks/gpu_check.sh [WORK_FOLDER]      (default: a new temporary folder)
#
# Needs geospade installed (make install) and a CUDA device; stops at the first failure with the
# failing command's exit status. The data is the demo's generated landscape (no download).
# DEVICE=cpu STEPS=20 runs the same commands on a CPU (without fp16) to check the script itself.
set -euo pipefail

PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d -t geospade-gpu-XXXX)}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$DEVICE" = cuda ] && [ "$GPUS" -lt 1 ]; then
    echo "gpu_check: no CUDA device (torch.cuda.device_count() == 0)" >&2
    exit 2
fi
$PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '| GPUs:', \
torch.cuda.device_count(), '| device: $DEVICE')"
echo "work folder: $WORK"

step() {  # step NAME COMMAND...: run, time, stop on failure
    local name=$1; shift
    local t0; t0=$(date +%s.%N)
    if ! "$@" > "$WORK/$name.log" 2>&1; then
        echo "FAIL  $name  (log: $WORK/$name.log)"; tail -20 "$WORK/$name.log"; exit 1
    fi
    printf 'ok    %-22s %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)"
}

TRAIN=(--steps $STEPS --batch-size 16 --ngf 32 --ndf 32 --num-d 1 --n-layers-d 3 --lambda-vgg 0
       --vgg-weights off --checkpoint-every 100 --preview-every 100 --val-every 100 --device $DEVICE)

step landscape $PY -c "
from geospade.landscape import make_landscape
make_landscape('$WORK/landcover.tif', '$WORK/imagery.tif', width=1024, height=1024, seed=0)"
step tile $PY -m geospade tile "$WORK/landcover.tif" "$WORK/imagery.tif" \
    -o "$WORK/chips" --size 64 --scheme chesapeake7 --val-fraction 0.2 -q
step train-fp32 $PY -m geospade train "$WORK/chips" -o "$WORK/run-fp32" "${TRAIN[@]}" --amp none -q
step train-bf16 $PY -m geospade train "$WORK/chips" -o "$WORK/run-bf16" "${TRAIN[@]}" --amp bf16 \
    --channels-last -q
if [ "$DEVICE" = cuda ]; then
    step train-fp16 $PY -m geospade train "$WORK/chips" -o "$WORK/run-fp16" "${TRAIN[@]}" \
        --amp fp16 -q
fi
step resume-bf16 $PY -m geospade train "$WORK/chips" -o "$WORK/run-bf16" "${TRAIN[@]}" --amp bf16 \
    --channels-last --steps $((STEPS + 50)) --resume -q
NPROC=$(( GPUS >= 2 ? 2 : 1 ))
step "train-ddp-x$NPROC" torchrun --standalone --nproc-per-node "$NPROC" -m geospade train \
    "$WORK/chips" -o "$WORK/run-ddp" "${TRAIN[@]}" --amp bf16 -q
step synthesize $PY -m geospade synthesize "$WORK/run-bf16/checkpoint.pt" \
    "$WORK/landcover.tif" -o "$WORK/synthetic.tif" --cog --device $DEVICE -q
step synthesize-fp32 $PY -m geospade synthesize "$WORK/run-fp32/checkpoint.pt" \
    "$WORK/landcover.tif" -o "$WORK/synthetic-fp32.tif" --amp none --device $DEVICE -q
step evaluate $PY -m geospade evaluate "$WORK/run-bf16/checkpoint.pt" "$WORK/chips" \
    -o "$WORK/report.json" --device $DEVICE -q
$PY -m geospade info "$WORK/synthetic.tif" | head -20
echo "all CUDA checks passed"
