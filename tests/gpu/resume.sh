#!/usr/bin/env bash
# resume.sh - gpt-train --device cuda resumes with the same bits: a small
# configuration (4 blocks, 256 wide, the GPT-2 vocabulary, so the GEMMs have
# algorithms to choose from) trained 8 steps with checkpoints at 4 and 8,
# then resumed from step 4 in a new process: identical final weights and
# step-8 validation loss. The checkpoint carries the process's GEMM algorithm
# choices (gemm.cuh; metadata engine_tuning), without which the resumed
# process would time them again and might pick others. Run by
# `make check-gpu` (needs a GPU).
. "$(dirname "$0")/../cli/lib.sh"
cd "$T" || exit 1
gpt-tokshard -q -o train.bin.zst "$TOP/data/sample/train.txt.zst"
gpt-tokshard -q -o val.bin.zst "$TOP/data/sample/val.txt.zst"
gpt-init -q --preset tiny --layers 4 --dim 256 --heads 2 --mlp-hidden 1024 --value-embeds 2 \
	--no-attn 1 --vocab 50304 -o init.safetensors
gpt-sched --preset record-2025-01-04 --steps 8 --eval-every 4 --ckpt-every 4 >sched8.txt
common=(--train train.bin.zst --val val.bin.zst --batch-tokens 2048 --seq-len 1024
	--val-tokens 8192 -s sched8.txt --device cuda -q)
t_run "8 steps on the GPU" 0 gpt-train -w init.safetensors "${common[@]}" --ckpt-dir ckpt \
	-o final.safetensors
cp "$OUT" log.jsonl
t_true "checkpoint holds the GEMM choices" grep -aq '"engine_tuning":"gemm-algos 1 ' \
	ckpt/ckpt_00000004.safetensors
t_run "resume from step 4" 0 gpt-train --resume ckpt/ckpt_00000004.safetensors "${common[@]}" \
	-o resumed.safetensors
t_true "resumed weights identical" cmp final.safetensors resumed.safetensors
v1=$(jq -r 'select(.type == "val" and .step == 8) | .val_loss' log.jsonl)
v2=$(jq -r 'select(.type == "val" and .step == 8) | .val_loss' "$OUT")
t_true "resumed val loss identical ($v1)" test -n "$v1" -a "$v1" = "$v2"
