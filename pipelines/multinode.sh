#!/usr/bin/env bash
# multinode.sh - one rank of the speedrun's training on a cluster. A launcher
# starts it once per GPU; gpt-train reads the rank from the launcher's
# variables (Slurm srun, OpenMPI or MPICH mpirun, torchrun-style RANK /
# WORLD_SIZE / LOCAL_RANK: gpt-train(1), DISTRIBUTED).
#
#   pipelines/multinode.sh WORKDIR
#
# WORKDIR must be on a filesystem every node sees, prepared once beforehand:
#   STAGE=prepare pipelines/speedrun.sh WORKDIR     (tokens, weights, schedule)
# Then, with Slurm (2 nodes of 8 GPUs):
#   srun --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 pipelines/multinode.sh WORKDIR
# or in an sbatch script:
#   #SBATCH --nodes=2 --ntasks-per-node=8 --gpus-per-node=8
#   srun pipelines/multinode.sh /shared/speedrun
# With OpenMPI:
#   mpirun -np 16 --npernode 8 -x PATH -x NCCL_NVLS_ENABLE=0 pipelines/multinode.sh /shared/speedrun
# The ranks meet through a file in WORKDIR named after the job (DIST_INIT
# overrides: file:PATH or tcp:HOST:PORT of the first rank's node); rank 0
# writes WORKDIR/train.jsonl and WORKDIR/final.safetensors, checkpoints go to
# WORKDIR/ckpt when the schedule asks (CKPT_EVERY at prepare time).
# Environment: BUILD [build], DEVICE [cuda], INIT [WORKDIR/init.safetensors],
# VAL_TOKENS [10485760], BATCH_TOKENS [524288], SEQ_LEN [65536],
# DIST_TIMEOUT [600].
set -euo pipefail
[ $# -eq 1 ] || { echo "Usage: pipelines/multinode.sh WORKDIR" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
work=$1
B=$(cd "${BUILD:-$top/build}" && pwd) || { echo "multinode.sh: no build directory (run make)" >&2; exit 2; }
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
[ -s "$work/schedule.txt" ] ||
	{ echo "multinode.sh: $work/schedule.txt missing: run STAGE=prepare pipelines/speedrun.sh $work first" >&2; exit 1; }
if compgen -G "$work/data/fineweb_train_*.bin.zst" >/dev/null; then
	train="$work/data/fineweb_train_*.bin.zst" val="$work/data/fineweb_val_*.bin.zst"
else
	train="$work/data/train_*.bin.zst" val="$work/data/val*.bin.zst"
fi
job=${SLURM_JOB_ID:+slurm-$SLURM_JOB_ID${SLURM_STEP_ID:+.$SLURM_STEP_ID}}
job=${job:-${PMIX_NAMESPACE:-${OMPI_MCA_ess_base_jobid:-}}}
job=${job//[^A-Za-z0-9._-]/_}
init=${DIST_INIT:-${job:+file:$work/rendezvous-$job}}
[ -n "$init" ] || { echo "multinode.sh: no job id from the launcher: set DIST_INIT (file:PATH or tcp:HOST:PORT)" >&2; exit 2; }
exec gpt-train --device "${DEVICE:-cuda}" -w "${INIT:-$work/init.safetensors}" --train "$train" --val "$val" \
	--batch-tokens "${BATCH_TOKENS:-524288}" --seq-len "${SEQ_LEN:-65536}" \
	--val-tokens "${VAL_TOKENS:-10485760}" -s "$work/schedule.txt" --ckpt-dir "$work/ckpt" \
	--dist-init "$init" --dist-timeout "${DIST_TIMEOUT:-600}" -o "$work/final.safetensors" >>"$work/train.jsonl"
