#!/usr/bin/env bash
# step_kernels.sh - every kernel of one training micro-batch of the record
# configuration (gpt-train --device cuda), each timed alone by Nsight Compute:
# GPU time and DRAM bytes per launch, summed per kernel, as a table (ms per
# micro-batch and per step of 8, the share of the total, DRAM TB/s).
#
#   bench/step_kernels.sh BUILD_DIR [RESULTS_DIR]
#
# For each window of WINDOWS (default "1 14"): two steps at that window write a
# checkpoint (the GEMM algorithms are chosen by timing in the first step, and
# the checkpoint carries the choices), then gpt-train --resume runs one more
# step under ncu, which times the first LAUNCHES kernels (default 1200: the
# engine's start-up and one micro-batch of the record configuration, ~500
# kernels). The table takes the launches from the first micro-batch's first
# kernel (rmsnorm_fwd_kernel: the token embedding's gather and norm) up to the
# next one's; the optimizer's kernels, which run once per step, are not in it.
# Each kernel runs alone and at the clock the GPU gives it then: the sum is
# what the micro-batch would take without the gaps between kernels and at
# that clock; in training a GPU at its power limit runs slower (see the clock
# lines of bench/train_gpu.sh).
# Environment: WINDOWS, LAUNCHES, NCU (default: ncu on PATH, else
# /usr/local/cuda/bin/ncu), TEXT, SCRATCH (as bench/train_gpu.sh: the
# Gutenberg training text, tokenized once; the record preset's weights).
# RESULTS_DIR (default $OUT/step_kernels, else ./step_kernels) receives
# ncu-W.csv (ncu's raw CSV) and table-W.md per window. About 30 s per window
# on an H200.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "Usage: bench/step_kernels.sh BUILD_DIR [RESULTS_DIR]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd)
res=${2:-${OUT:-.}/step_kernels}
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
windows=${WINDOWS:-1 14} launches=${LAUNCHES:-1200}
case "$windows $launches" in *[!0-9\ ]*) echo "step_kernels.sh: WINDOWS and LAUNCHES are integers" >&2; exit 2 ;; esac
ncu=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
[ -x "$ncu" ] || { echo "step_kernels.sh: Nsight Compute (ncu) not found: set NCU" >&2; exit 1; }
scratch=${SCRATCH:-/tmp/gpt-record-bench}
mkdir -p "$res"
res=$(cd "$res" && pwd)
. bench/inputs.sh
record_inputs "$B" "$scratch"
for w in $windows; do
	ck=$scratch/ckpt-w$w
	rm -rf "$ck"
	printf '#gpt-sched 1\nstep lr_scale momentum window ckpt train\n0 1 0.85 %d 0 1\n1 1 0.85 %d 0 1\n2 1 0.85 %d 1 0\n' \
		"$w" "$w" "$w" >"$scratch/sched-a"
	printf '#gpt-sched 1\nstep lr_scale momentum window\n2 1 0.85 %d\n' "$w" >"$scratch/sched-b"
	echo "step_kernels: W=$w: two steps, then one under ncu" >&2
	gpt-train -q -w "$scratch/init.safetensors" --train "$scratch/data/train_*.bin.zst" --device cuda \
		-s "$scratch/sched-a" --ckpt-dir "$ck" >/dev/null
	"$ncu" --clock-control none --cache-control none --launch-count "$launches" --csv \
		--metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
		--log-file "$res/ncu-$w.csv" gpt-train -q --resume "$(ls "$ck"/*.safetensors | tail -1)" \
		--train "$scratch/data/train_*.bin.zst" --device cuda -s "$scratch/sched-b" >/dev/null ||
		{ rm -f "$res/ncu-$w.csv"; echo "step_kernels.sh: W=$w: the profiled step failed" >&2; exit 1; }
	rm -rf "$ck"
	{ echo "W = $w"; echo; python3 bench/record_tables.py kernels "$res/ncu-$w.csv"; } | tee "$res/table-$w.md"
done
