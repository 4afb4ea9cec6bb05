#!/usr/bin/env bash
# One command, both implementations, the ratios (issue 4). Run it alone on the machine: every
# number is a median after warm-up, but a shared machine still moves them by ~15%; the ratios
# compare runs made minutes apart in this one invocation.
#
#   bench/run.sh                 # everything: step at batch 64 (+ per-op breakdown) and 256,
#                                # K=256 vs K=65536 (queue and memory bank), augmentation
#   bench/run.sh step 64         # one step comparison, with the per-op breakdown
#   bench/run.sh pairs 64 3      # ours and PyTorch alternately 3 times: each ratio and the median
#   PYTHON=/path/to/venv/bin/python bench/run.sh   # default: bench/.venv/bin/python
#
# Needs: cargo (builds target/release/moco) and a venv with torch + torchvision (`just bench-venv`).
# Reports land in bench/out/ (git-ignored) as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-bench/.venv/bin/python}
OUT=bench/out
mkdir -p "$OUT"
cargo build --release --quiet
MOCO=target/release/moco
STEPS=${STEPS:-5}
DATA=${DATA:-../shared/data/cifar10-jpeg}

have_torch() { "$PY" -c 'import torch, torchvision' 2>/dev/null; }

# The same step on each side (bench/step.toml's model: width 64, K 4096, τ 0.2, 4 BN groups).
ours_step() {  # ours_step BATCH JSON [--ops]
  "$MOCO" bench step bench/step.toml --set train.batch_size="$1" --steps "$STEPS" ${3:-} --json "$2" >/dev/null
}
torch_step() {  # torch_step BATCH JSON [--ops]
  "$PY" bench/torch_step.py --batch "$1" --width 64 --k 4096 --tau 0.2 --bn-splits 4 --steps "$STEPS" ${3:-} \
    --json "$2" >/dev/null
}

step() {  # step BATCH [--ops]: ours and PyTorch, same model and step, then the ratio
  local b=$1 ops=${2:-}
  echo "== step, batch $b =="
  ours_step "$b" "$OUT/ours-b$b.json" $ops
  if have_torch; then
    torch_step "$b" "$OUT/torch-b$b.json" $ops
    "$MOCO" bench compare "$OUT/ours-b$b.json" "$OUT/torch-b$b.json"
  else
    echo "(no torch at $PY: ours only; \`just bench-venv\` makes one)"; cat "$OUT/ours-b$b.json"
  fi
}

kcost() {  # kcost MODE: step time at K=65536 against K=256 (the paper: the queue costs little),
  # bench/step.toml's model at batch 64; the bank holds 50,000 rows (CIFAR-10's training set).
  local mode=$1
  echo "== K cost, $mode, batch 64 =="
  local big=65536; [ "$mode" = memory_bank ] && big=49152  # the bank holds 50,000 rows
  for k in 256 $big; do
    "$MOCO" bench step bench/step.toml --set data.synthetic_train=50000 --set dictionary.mode="$mode" \
      --set dictionary.size=$k --steps "$STEPS" --json "$OUT/k$k-$mode.json" >/dev/null
  done
  python3 - "$OUT/k256-$mode.json" "$OUT/k$big-$mode.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"  K=256: {a['step_s']:.3f} s/step  K={b['k']}: {b['step_s']:.3f} s/step  ratio {b['step_s'] / a['step_s']:.3f}"
      f"  peak RSS {a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} MB")
PY
}

augment() {
  echo "== augmentation, one core =="
  "$MOCO" bench augment bench/step.toml --data "$DATA" --json "$OUT/ours-augment.json" >/dev/null
  if have_torch; then
    "$PY" bench/torch_augment.py --data "$DATA" --json "$OUT/torch-augment.json" >/dev/null
    "$MOCO" bench compare --augment "$OUT/ours-augment.json" "$OUT/torch-augment.json"
  else
    cat "$OUT/ours-augment.json"
  fi
}

pairs() {  # pairs BATCH ROUNDS: ours and PyTorch alternately, ROUNDS times; every ratio and the
  # median. This machine's speed moves by up to 2x within minutes, so one pair can mislead.
  local b=$1 rounds=$2 i
  have_torch || { echo "pairs needs torch at $PY" >&2; exit 2; }
  echo "== step, batch $b, $rounds alternating pairs =="
  for i in $(seq "$rounds"); do
    ours_step "$b" "$OUT/pair-ours-$i.json"
    torch_step "$b" "$OUT/pair-torch-$i.json"
  done
  python3 - "$OUT" "$rounds" <<'PY'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = [(json.load(open(f"{out}/pair-ours-{i}.json")), json.load(open(f"{out}/pair-torch-{i}.json"))) for i in range(1, n + 1)]
for i, (o, t) in enumerate(rows, 1):
    print(f"  pair {i}: ours {o['img_per_s']:.1f} img/s {o['peak_rss_mb']:.0f} MB   pytorch {t['img_per_s']:.1f} img/s {t['peak_rss_mb']:.0f} MB"
          f"   ratio {o['img_per_s'] / t['img_per_s']:.2f}x")
r = [o['img_per_s'] / t['img_per_s'] for o, t in rows]
m = [o['peak_rss_mb'] / t['peak_rss_mb'] for o, t in rows]
print(f"  median ratio {statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f}); peak RSS ratio {statistics.median(m):.2f}x")
PY
}

echo "# $(date -u +%FT%TZ)  commit $(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)  $(nproc) cores  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
case "${1:-all}" in
  step) step "${2:-64}" --ops ;;
  k) kcost moco; kcost memory_bank ;;
  augment) augment ;;
  pairs) pairs "${2:-64}" "${3:-3}" ;;
  all) step 64 --ops; step 256; kcost moco; kcost memory_bank; augment ;;
  *) echo "usage: bench/run.sh [all | step BATCH | k | augment | pairs BATCH ROUNDS]" >&2; exit 2 ;;
esac
