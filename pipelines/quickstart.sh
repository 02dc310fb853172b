#!/usr/bin/env bash
# quickstart.sh - the whole toolchain on the sample text that ships with gpt-*:
# tokenize, init a small model, make a schedule, train for about two minutes
# on whatever device there is, evaluate, and print a sample.
#
#   pipelines/quickstart.sh [WORKDIR]          (default: ./quickstart)
#
# Environment: STEPS (training steps, default 40 on the CPU, 300 on a GPU),
# SAMPLE (tokens to generate, default 60), DEVICE (cpu, cuda or auto),
# GPT_THREADS (CPU threads). Plot the run afterwards with
#   pipelines/plot-loss.sh WORKDIR/train.jsonl
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/build/bin:$PATH"
work=${1:-quickstart}
device=${DEVICE:-auto}
mkdir -p "$work"
cd "$work"
say() { printf '\n== %s\n' "$*" >&2; }

if [ "$device" = auto ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
	gpu=1
else
	gpu=0
fi
if [ "$device" = cuda ]; then gpu=1; fi

say "tokenizing the sample text (GPT-2 BPE) into shards"
gpt-tokshard -d -o train.bin.zst "$top/data/sample/train.txt.zst"
gpt-tokshard -d -o val.bin.zst "$top/data/sample/val.txt.zst"
gpt-tokshard --stats train.bin.zst val.bin.zst >&2

if [ $gpu = 1 ]; then
	steps=${STEPS:-300}
	say "initialising the record's model (12 layers, 768 wide)"
	gpt-init --preset record-2025-01-04 -o init.safetensors
	batch_tokens=131072 seq_len=65536 val_tokens=65536
else
	steps=${STEPS:-40}
	say "initialising a small model for the CPU (2 layers, 128 wide)"
	gpt-init --preset tiny --layers 2 -o init.safetensors
	batch_tokens=1024 seq_len=512 val_tokens=4096
fi

say "training for $steps steps (schedule: the record's, compressed to $steps steps)"
gpt-sched --preset record-2025-01-04 --steps "$steps" --eval-every $((steps / 6 > 0 ? steps / 6 : 1)) >schedule.txt
gpt-train -w init.safetensors --train train.bin.zst --val val.bin.zst \
	--batch-tokens $batch_tokens --seq-len $seq_len --val-tokens $val_tokens \
	--device "$device" -s schedule.txt -o final.safetensors --ckpt-dir ckpt | tee train.jsonl |
	jq -r 'select(.type == "val") | "step \(.step): validation loss \(.val_loss)"'

say "evaluating the final weights"
gpt-eval -q -w final.safetensors --val val.bin.zst --tokens $val_tokens --seq-len $seq_len \
	--device "$device" | jq -c .

say "a sample"
gpt-eval -w final.safetensors --device "$device" --sample "${SAMPLE:-60}" --prompt 'It was a' --seed 1
say "done: $work/train.jsonl holds the log; pipelines/plot-loss.sh $work/train.jsonl plots it"
