#!/usr/bin/env bash
# time-to-loss.sh - the short speedrun twice, on the same tokens and the same
# initial weights: gpt-* (pipelines/speedrun-short.sh: gpt-train --device cuda)
# and the record's own PyTorch code (tools/record_run.py --mode steps), STEPS
# steps of the record's compressed schedules, validation every EVAL_EVERY steps
# on VAL_TOKENS tokens. Prints both validation curves and training times side by
# side (with the PyTorch reference measured elsewhere, for the default sizes).
#
#   bench/time-to-loss.sh BUILD_DIR [RESULTS_DIR]
#   bench/time-to-loss.sh --table RESULTS_DIR      (the table again, from the logs)
#
# With two or more GPUs visible (CUDA_VISIBLE_DEVICES, else nvidia-smi -L) the two
# runs go in parallel, gpt-* on the first and PyTorch on the second; with one,
# one after the other, which takes longer than 10 minutes: then run WHICH=gpt and
# WHICH=torch as two calls (same RESULTS_DIR, or put gpt.jsonl and torch.jsonl of
# both in one directory and use --table). Where only the working tree survives
# between the calls, put SCRATCH and RESULTS_DIR in it (build/ttl, build/ttlres:
# RESULTS.md, session 11), so that the second call reuses the first's tokens and
# weights.
# Environment: STEPS [300], EVAL_EVERY [50], VAL_TOKENS [1179648], TRAIN_TEXT,
# VAL_TEXT (as pipelines/speedrun-short.sh: .carry/ Gutenberg files first),
# INIT (weights; default gpt-init's record preset), WHICH [both | gpt | torch],
# PARALLEL [auto | 0 | 1], SCRATCH [/tmp/gpt-record-ttl: tokens and weights,
# reused]. RESULTS_DIR [$OUT/time-to-loss, else ./time-to-loss] receives
# gpt.jsonl, torch.jsonl, their stderr, the gpt-* run's schedule and table.md.
# Time on H200s: about 6 minutes for gpt-*, 7-9 for PyTorch (2-3 of them
# torch.compile).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --table ]; then
	[ $# -eq 2 ] || { echo "Usage: bench/time-to-loss.sh --table RESULTS_DIR" >&2; exit 2; }
	ref=()
	[ "${STEPS:-300}/${EVAL_EVERY:-50}/${VAL_TOKENS:-1179648}" = 300/50/1179648 ] && ref=(--reference)
	python3 "$top/bench/record_tables.py" time-to-loss "$2/gpt.jsonl" "$2/torch.jsonl" "${ref[@]}"
	exit
fi
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "Usage: bench/time-to-loss.sh BUILD_DIR [RESULTS_DIR]" >&2; exit 2; }
B=$(cd "$1" && pwd)
res=${2:-${OUT:-.}/time-to-loss}
mkdir -p "$res"
res=$(cd "$res" && pwd)
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
steps=${STEPS:-300} every=${EVAL_EVERY:-50} vtok=${VAL_TOKENS:-1179648} which=${WHICH:-both}
case $which in both | gpt | torch) ;; *) echo "time-to-loss.sh: WHICH is both, gpt or torch" >&2; exit 2 ;; esac
scratch=${SCRATCH:-/tmp/gpt-record-ttl}
say() { echo "time-to-loss: $*" >&2; }

# tokens, weights and schedule, once, for both
mkdir -p "$scratch"
STAGE=prepare BUILD="$B" DATA_DIR= INIT="${INIT:-}" STEPS=$steps EVAL_EVERY=$every VAL_TOKENS=$vtok \
	pipelines/speedrun-short.sh "$scratch"
init=${INIT:-$scratch/init.safetensors}
data=$scratch/data

# GPUs
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
	IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
else
	mapfile -t gpus < <(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9]*\):.*/\1/p')
fi
[ ${#gpus[@]} -ge 1 ] || gpus=(0)
par=${PARALLEL:-auto}
[ "$par" = auto ] && { [ ${#gpus[@]} -ge 2 ] && [ "$which" = both ] && par=1 || par=0; }
g_gpt=${gpus[0]} g_torch=${gpus[0]}
[ "$par" = 1 ] && g_torch=${gpus[1]:-${gpus[0]}}

run_gpt() {
	say "gpt-*: GPU $g_gpt, $steps steps"
	CUDA_VISIBLE_DEVICES=$g_gpt BUILD="$B" DATA_DIR="$data" INIT="$init" STEPS=$steps EVAL_EVERY=$every \
		VAL_TOKENS=$vtok pipelines/speedrun-short.sh "$res/gpt" >"$res/gpt.txt"
	cp "$res/gpt/train.jsonl" "$res/gpt.jsonl"
	say "gpt-* done"
}
run_torch() {
	say "PyTorch (the record's code): GPU $g_torch, $steps steps"
	CUDA_VISIBLE_DEVICES=$g_torch python3 tools/record_run.py --mode steps --train-bin "$data/train_*.bin" \
		--val-bin "$data/val.bin" --steps "$steps" --val-every "$every" --val-tokens "$vtok" \
		--init-weights "$init" >"$res/torch.jsonl" 2>"$res/torch.stderr" || { tail -20 "$res/torch.stderr" >&2; return 1; }
	say "PyTorch done"
}
rc=0
if [ "$par" = 1 ] && [ "$which" = both ]; then
	run_gpt & p1=$!
	run_torch & p2=$!
	wait $p1 || rc=1
	wait $p2 || rc=1
else
	if [ "$which" != torch ]; then run_gpt || rc=1; fi
	if [ "$which" != gpt ]; then run_torch || rc=1; fi
fi
ref=()
[ "$steps/$every/$vtok" = 300/50/1179648 ] && ref=(--reference)
python3 bench/record_tables.py time-to-loss "$res/gpt.jsonl" "$res/torch.jsonl" "${ref[@]}" | tee "$res/table.md"
exit $rc
