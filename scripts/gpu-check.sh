#!/usr/bin/env bash
# The GPU check of issue 5, one call on the GPU machine (no Rust, no internet there):
#   1. the GPU and driver;
#   2. `moco device-check --device cuda`: every op of the step against the CPU path (< 1e-4);
#   3. the MoCo step at batch 256 and 512: ours (bench/step.toml) and PyTorch (bench/torch_step.py)
#      on the same GPU, img/s and peak GPU memory (nvidia-smi, sampled), then ours / pytorch;
#   4. a short CIFAR-10 run (experiments/gpu-check.toml: ResNet-18, 5 epochs on the packed
#      subset), printing kNN top-1 and seconds per epoch.
#
# Prepare here (CPU machine):   just build-cuda            # dist-cuda/moco.xz + run.sh
#                               cargo run --release -- data pack --data ../shared/data/cifar10-jpeg --out data/cifar10-subset
# Run there:                    bash scripts/gpu-check.sh [DIST=dist-cuda]   (carry dist-cuda, data)
# Dry run here against the CPU build (no GPU: steps 1 and 3's PyTorch side are skipped, the rest
# runs on CPU with tiny sizes):  DRY_RUN=1 bash scripts/gpu-check.sh
#
# Env: PYTHON (PyTorch for the reference; default /opt/torch/.venv/bin/python), OUT (reports;
# default $OUT or /tmp/gpu-check), STEPS (timed steps, default 10), EPOCHS (default 5).
set -uo pipefail
cd "$(dirname "$0")/.."
DIST=${1:-dist-cuda}
OUT=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-/opt/torch/.venv/bin/python}
STEPS=${STEPS:-10}
EPOCHS=${EPOCHS:-5}
mkdir -p "$OUT"
fail=0
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

if [ -n "${DRY_RUN:-}" ]; then
  DEV=cpu
  moco() { ./target/release/moco "$@"; }
  BATCHES="16 32"
  SIZE=(--set model.width=8)
  TRAIN=(--set model.width=8 --set train.batch_size=128 --set model.bn_splits=4 --set train.max_steps=5
         --set data.train_limit=2000 --set data.test_limit=500)
  TORCH_WIDTH=8
else
  DEV=cuda
  moco() { bash "$DIST/run.sh" moco "$@"; }
  BATCHES="256 512"
  SIZE=()
  TRAIN=()
  TORCH_WIDTH=64
fi

stamp "== 1. device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
else
  echo "no nvidia-smi (dry run on $(nproc) CPU cores)"
fi
moco --version

stamp "== 2. device-check"
moco device-check --device "$DEV" || fail=1

peak_gpu() {  # peak_gpu FILE CMD...: run CMD while sampling GPU memory into FILE; echo the peak MB
  local f=$1; shift
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$f" & local pid=$!
    "$@"; local rc=$?
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    echo "  peak GPU memory (nvidia-smi, whole GPU): $(sort -n "$f" | tail -1) MiB"
    return $rc
  else
    "$@"
  fi
}

stamp "== 3. step benchmark"
for b in $BATCHES; do
  stamp "-- batch $b"
  peak_gpu "$OUT/mem-ours-$b.txt" moco bench step bench/step.toml --device "$DEV" "${SIZE[@]}" \
    --set train.batch_size="$b" --warmup 3 --steps "$STEPS" --json "$OUT/ours-b$b.json" > /dev/null || fail=1
  if [ -z "${DRY_RUN:-}" ] && "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    peak_gpu "$OUT/mem-torch-$b.txt" "$PY" bench/torch_step.py --device cuda --batch "$b" --width $TORCH_WIDTH \
      --k 4096 --tau 0.2 --bn-splits 4 --warmup 3 --steps "$STEPS" --json "$OUT/torch-b$b.json" > /dev/null || fail=1
    moco bench compare "$OUT/ours-b$b.json" "$OUT/torch-b$b.json"
  else
    echo "  (no PyTorch with CUDA at $PY: ours only)"
    grep -E '"(img_per_s|step_s)"' "$OUT/ours-b$b.json"
  fi
done

stamp "== 4. short CIFAR-10 run"
rm -rf "$OUT/run"
moco train experiments/gpu-check.toml --device "$DEV" "${TRAIN[@]}" --out "$OUT/run" --knn-at-init --no-progress \
  > "$OUT/train.out" 2> "$OUT/train.err" || { fail=1; tail -20 "$OUT/train.err"; }
if [ -f "$OUT/run/metrics.csv" ]; then
  echo "epoch  loss      kNN top-1  img/s    s/epoch"
  awk -F, 'NR > 1 { printf "%5s  %-8.4f  %-9s  %-7.0f  %.1f\n", $1, $4, $6, $7, $8 - prev; prev = $8 }' "$OUT/run/metrics.csv"
  grep -E '"knn_top1(_at_init)?"' "$OUT/run/summary.json" || true
fi
stamp "done (exit $fail); reports in $OUT"
exit $fail
