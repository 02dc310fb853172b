#!/usr/bin/env bash
# train_gpu.sh - training speed of the record configuration on one GPU:
# gpt-train --device cuda beside the record's own PyTorch code
# (tools/record_run.py --mode steps), same tokens, same initial weights, same
# learning-rate and momentum rows, the attention window held at each of
# WINDOWS in turn. Prints a markdown table: median ms/step, tokens/s, MFU
# (spec 12, tools/flops.py), peak memory.
#
#   bench/train_gpu.sh BUILD_DIR [RESULTS_DIR]
#
# Each step is the record's: 8 micro-batches of 65,536 tokens, gradients
# summed, one Adam + Muon update. Per tool, STEPS steps at each window (default
# 10; WINDOWS default "1 7 14"), in one process each (PyTorch compiles once);
# the first SKIP steps of each window (default 3) are left out of the medians.
# The row for step s (of N = STEPS x windows) has the lr_scale and momentum of
# the record's schedules compressed to N steps, written by awk (gpt-sched(5)).
# Tokens: the Gutenberg training text (TEXT, default
# .carry/gutenberg_en_train_00.txt.zst, else ../shared/data's copy, else
# data/sample: too small for a 524,288-token step), tokenized once by
# tools/record-data.sh. Weights: gpt-init's record preset (seed 0).
# WHICH=gpt or WHICH=torch runs one side only (the table shows "-" for the other).
# RESULTS_DIR (default $OUT/train_gpu, else ./train_gpu) receives gpt.jsonl,
# torch.jsonl, the stderr logs, the GPU's clock and power sampled while each
# side ran (gpt.smi.csv, torch.smi.csv: nvidia-smi every 100 ms) and table.md; SCRATCH (default
# /tmp/gpt-record-bench) holds the data and the weights and is reused.
# Runs on whatever GPU CUDA_VISIBLE_DEVICES shows first. About 1 minute for
# gpt-train and 3-5 minutes for PyTorch (mostly torch.compile) on an H200.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "Usage: bench/train_gpu.sh BUILD_DIR [RESULTS_DIR]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd)
res=${2:-${OUT:-.}/train_gpu}
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
scratch=${SCRATCH:-/tmp/gpt-record-bench}
windows=${WINDOWS:-1 7 14}
K=${STEPS:-10} skip=${SKIP:-3} which=${WHICH:-both}
case $which in both | gpt | torch) ;; *) echo "train_gpu.sh: WHICH is both, gpt or torch" >&2; exit 2 ;; esac
case "$K $skip $windows" in *[!0-9\ ]*) echo "train_gpu.sh: STEPS, SKIP and WINDOWS are integers" >&2; exit 2 ;; esac
say() { echo "train_gpu: $*" >&2; }
mkdir -p "$res"
res=$(cd "$res" && pwd)
. bench/inputs.sh
record_inputs "$B" "$scratch"
nw=$(echo $windows | wc -w)
N=$((K * nw))

# the schedule rows, both tools: record_run.py computes the same lr and momentum
awk -v n="$N" -v k="$K" -v ws="$windows" 'BEGIN {
	split(ws, w, " ")
	print "#gpt-sched 1"
	print "step lr_scale momentum window"
	for (s = 0; s < n; s++) {
		t = 1 - s / n; lr = t >= 0.4 ? 1 : t / 0.4
		f = s / 300; if (f > 1) f = 1
		printf "%d %.17g %.17g %d\n", s, lr, 0.85 * (1 - f) + 0.95 * f, w[int(s / k) + 1]
	}
}' >"$res/gpt.sched"

# the GPU's SM clock, power and clock-event reasons every 100 ms while a side
# runs (nvidia-smi; nothing when it is missing or cannot be queried): under its
# power limit a GPU lowers its clock, which the table's last lines show
gpu_id=${CUDA_VISIBLE_DEVICES:-0}
gpu_id=${gpu_id%%,*}
smi_pid=
smi_start() { # FILE
	rm -f "$1"
	command -v nvidia-smi >/dev/null 2>&1 || return 0
	local q=timestamp,clocks.sm,power.draw,power.limit,clocks_event_reasons.active
	nvidia-smi -i "$gpu_id" --query-gpu=$q --format=csv,noheader,nounits >/dev/null 2>&1 ||
		q=timestamp,clocks.sm,power.draw,power.limit,clocks_throttle_reasons.active
	nvidia-smi -i "$gpu_id" --query-gpu=$q --format=csv,noheader,nounits -lms 100 >"$1" 2>/dev/null &
	smi_pid=$!
}
smi_stop() {
	[ -n "$smi_pid" ] && { kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null || true; }
	smi_pid=
}
trap smi_stop EXIT

if [ "$which" != torch ]; then
	say "gpt-train --device cuda: $K steps at each window of $windows"
	smi_start "$res/gpt.smi.csv"
	gpt-train -w "$scratch/init.safetensors" --train "$scratch/data/train_*.bin.zst" --device cuda \
		-s "$res/gpt.sched" >"$res/gpt.jsonl" 2>"$res/gpt.stderr" || { tail -5 "$res/gpt.stderr" >&2; exit 1; }
	smi_stop
fi
if [ "$which" != gpt ]; then
	say "the record's PyTorch code: $K steps at each window of $windows (torch.compile first)"
	smi_start "$res/torch.smi.csv"
	python3 tools/record_run.py --mode steps --train-bin "$scratch/data/train_*.bin" --steps "$N" \
		--fixed-window "$(echo $windows | tr ' ' ,)" --val-tokens 0 --skip "$skip" \
		--init-weights "$scratch/init.safetensors" >"$res/torch.jsonl" 2> >(tee "$res/torch.stderr" >&2)
	smi_stop
fi
python3 bench/record_tables.py train-gpu "$res/gpt.jsonl" "$res/torch.jsonl" --skip "$skip" \
	--smi "$res/gpt.smi.csv" "$res/torch.smi.csv" | tee "$res/table.md"
