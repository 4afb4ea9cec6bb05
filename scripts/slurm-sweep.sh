#!/usr/bin/env bash
# Share one sweep across a SLURM array: task i of n runs every n-th point of the sweep, each
# writing only its own run directories under results/<sweep>/; a final `--collect` merges them
# into runs.csv, plots and README. Submit from the repository root on a shared filesystem:
#
#   sbatch --array=0-3 scripts/slurm-sweep.sh experiments/momentum.toml   # or --array=1-4
#   # when all tasks are done:
#   cargo run --release -- sweep experiments/momentum.toml --collect
#
# Size --time from `moco sweep SWEEP.toml --dry-run --img-per-s N` (steps and hours per run).
#SBATCH --job-name=moco-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
SWEEP=${1:?usage: sbatch --array=0-(N-1) scripts/slurm-sweep.sh SWEEP.toml}
N=${SLURM_ARRAY_TASK_COUNT:?run as an array job}
ID=${SLURM_ARRAY_TASK_ID:?run as an array job}
# The shard index counts from the array's first task, so --array=1-4 shards like --array=0-3
# (and --array=0-6:2 like --array=0-3).
MIN=${SLURM_ARRAY_TASK_MIN:-0}
STEP=${SLURM_ARRAY_TASK_STEP:-1}
I=$(((ID - MIN) / STEP))
if (((ID - MIN) % STEP != 0 || I < 0 || I >= N)); then
    echo "slurm-sweep.sh: task $ID of an array with $N tasks from $MIN step $STEP gives shard $I/$N;" \
        "submit a contiguous range such as --array=0-$((N - 1))" >&2
    exit 1
fi
# A task that is requeued after a kill resumes its unfinished run from the checkpoint and
# skips the runs it already finished.
exec ./target/release/moco sweep "$SWEEP" --shard "$I/$N" --no-progress
