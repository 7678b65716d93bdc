#!/usr/bin/env bash
# The README's GPU figures in one run of at most 8 minutes on one GPU (never needed: everything else
# runs on a CPU). Each step has its own time limit, so a slow step costs its figures, not the others':
#   1. bench-train: SIGReg pretraining throughput (ViT-S, 4 views, bf16) and data wait, one process;
#   2. bench --section pipeline: end-to-end detector windows/s against the bare model on the GPU;
#   3. experiment --scale paper-short: random init vs SIGReg (sonar and natural augmentations), linear and
#      fine-tuned, the fine-tuned ones as detectors on 26 test surveys; then, as long as the step's limit
#      lasts, the supervised peer (FCOS, ResNet-18 from scratch) and the same FCOS on a SIGReg ResNet-18.
# Results go to $OUT (default gpu_out/): bench_train.json, bench.json, experiment.md, experiment.json, log.
# On a machine without this package's dependencies, put their wheels in .whl/ (see
# scripts/gpu_wheels.txt): they are installed into /tmp/site first, nothing else is fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec > >(tee "$OUT/log") 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@"
  local code=$?
  echo "== $name: exit $code after $((SECONDS - start)) s (limit $limit s)"
}
step bench-train 90 sh -c "'$PY' -m mine_jepa_ros.cli bench-train --device '$DEVICE' --arch vit_small --views 4 \
  --batch-size 512 --steps 20 --processes 1 --json > '$OUT/bench_train.json'"
step bench 90 sh -c "'$PY' -m mine_jepa_ros.cli bench --section pipeline --device '$DEVICE' --json > '$OUT/bench.json'"
step experiment 290 "$PY" -m mine_jepa_ros.cli experiment --scale paper-short --out /tmp/gpu_experiment \
  --device "$DEVICE" --only "random init,SIGReg,peer"
# the rows that finished within the limit, tabled (each row's result is cached as it finishes)
"$PY" -m mine_jepa_ros.cli experiment --scale paper-short --out /tmp/gpu_experiment --only "random init,SIGReg,peer" \
  --report-only >/dev/null 2>&1
cp /tmp/gpu_experiment/results.md "$OUT/experiment.md" 2>/dev/null
cp /tmp/gpu_experiment/results.json "$OUT/experiment.json" 2>/dev/null
ls -l "$OUT"
