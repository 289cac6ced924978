#!/usr/bin/env bash
# dsv32-decode in 8 shards as a Slurm job array: one array task per host, every GPU of that host
# (docs/multi-gpu.md). Submit with:   sbatch docs/slurm-dsv32-decode.sh
# Resubmit failed tasks into the same run (their finished points are kept and skipped):
#   RUN_ID=slurm-<first job's array id> sbatch --array=3,5 docs/slurm-dsv32-decode.sh
#SBATCH --job-name=dsv32-decode
#SBATCH --array=0-7
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --exclusive
#SBATCH --gres=gpu:8
#SBATCH --time=00:30:00
#SBATCH --signal=B:TERM@60
#SBATCH --output=topkbench-%x-%A_%a.log
set -euo pipefail

# A folder every host sees, on a file system with flock (NFS v4, GPFS, Lustre mounted with -o flock).
# Without one, give each task its own folder (--out "$RESULTS/task-$SLURM_ARRAY_TASK_ID") and read
# the folders together later: the shards are disjoint either way.
RESULTS=${RESULTS:-$HOME/topkbench-results}

# The shard count, kept equal to the array's size: a resubmitted subset (--array=3,5) has another
# SLURM_ARRAY_TASK_COUNT, and the partition must not change.
export TOPKBENCH_SHARD_COUNT=8
# One run for the whole array. --shard auto would derive slurm-$SLURM_ARRAY_JOB_ID itself; naming it
# here lets a resubmission (a new array job id) continue the first job's run.
RUN_ID=${RUN_ID:-slurm-${SLURM_ARRAY_JOB_ID}}

# Slurm sets CUDA_VISIBLE_DEVICES to the allocated GPUs; --devices all means exactly those.
# exec: Slurm's SIGTERM (time limit, scancel) reaches topkbench, which stops every worker and
# keeps what was measured.
exec topkbench sweep dsv32-decode --out "$RESULTS" --devices all --shard auto --run-id "$RUN_ID"
