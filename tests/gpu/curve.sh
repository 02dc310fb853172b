#!/usr/bin/env bash
# curve.sh - issue 6's check that gpt-train on the GPU follows the CPU
# reference's loss curve: a small configuration (4 blocks, 256 wide, 2 heads
# of 128, block 1 without attention, 2 value-embedding tables, the GPT-2
# vocabulary) trained for 50 steps of the record's schedule (compressed to 50)
# from the same weights on the same tokens (the shipped sample books), 2 x 1024
# tokens per step, once with --device cpu (fp32) and once with --device cuda
# (bf16 activations and matmuls, spec 9). Run by `make check-gpu` (needs a GPU);
# prints both curves.
# Tolerances (bf16 noise): every step's train loss within 0.05 absolute and
# their mean difference under 0.02; the validation losses (steps 0, 25, 50)
# within 1% relative.
. "$(dirname "$0")/../cli/lib.sh"
cd "$T" || exit 1
gpt-tokshard -q -o train.bin.zst "$TOP/data/sample/train.txt.zst"
gpt-tokshard -q -o val.bin.zst "$TOP/data/sample/val.txt.zst"
gpt-init -q --preset tiny --layers 4 --dim 256 --heads 2 --mlp-hidden 1024 --value-embeds 2 \
	--no-attn 1 --vocab 50304 -o init.safetensors
gpt-sched --preset record-2025-01-04 --steps 50 --eval-every 25 >sched.txt
common=(-w init.safetensors --train train.bin.zst --val val.bin.zst --batch-tokens 2048 --seq-len 1024
	--val-tokens 8192 -s sched.txt -q)
t_run "50 steps on the CPU" 0 gpt-train --device cpu "${common[@]}"
cp "$OUT" cpu.jsonl
t_run "50 steps on the GPU" 0 gpt-train --device cuda "${common[@]}"
cp "$OUT" gpu.jsonl
paste <(jq -r 'select(.type=="train") | "\(.step) \(.loss)"' cpu.jsonl) \
	<(jq -r 'select(.type=="train") | .loss' gpu.jsonl) >train.txt
paste <(jq -r 'select(.type=="val") | "\(.step) \(.val_loss)"' cpu.jsonl) \
	<(jq -r 'select(.type=="val") | .val_loss' gpu.jsonl) >val.txt
echo "  step  cpu loss  gpu loss" >&2
awk '$1 % 5 == 0 || $1 == 49 { printf "  %4d  %8.4f  %8.4f\n", $1, $2, $3 }' train.txt >&2
awk '{ printf "  val %d: cpu %.4f gpu %.4f\n", $1, $2, $3 }' val.txt >&2
t_true "50 train steps on both" test "$(wc -l <train.txt)" -eq 50
t_true "train losses within 0.05, mean difference < 0.02" awk '
	{ d = $2 - $3; if (d < 0) d = -d; if (d > m) m = d; s += d; n++ }
	END { printf "  train: max |cpu - gpu| %.4f, mean %.4f\n", m, s / n > "/dev/stderr"; exit !(n == 50 && m < 0.05 && s / n < 0.02) }' train.txt
t_true "validation losses within 1%" awk '
	{ d = ($2 - $3) / $2; if (d < 0) d = -d; if (d > m) m = d; n++ }
	END { printf "  val: max relative difference %.2e over %d evaluations\n", m, n > "/dev/stderr"; exit !(n == 3 && m < 0.01) }' val.txt
t_true "the loss fell" awk 'NR == 1 { a = $3 } END { exit !($3 < a - 1) }' val.txt
