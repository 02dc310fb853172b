#!/usr/bin/env bash
# record-parity.sh - gpt-*'s CUDA engine against the record's own PyTorch code
# (tools/record_run.py --mode grad: its compiled model, FlexAttention, bf16
# casts), on the same weights and the same real tokens: the loss and every
# parameter's gradient of one micro-batch. Runs on the GPU machine.
#
#   tools/record-parity.sh BUILD_DIR [T] [W]
#
# T: tokens (default 65536, the record's micro-batch; a multiple of 128);
# W: attention window in 128-token blocks (default 14).
# Weights: the record preset, made by gpt-init (default) or, with
# INIT=record, by the record's own PyTorch initialisation (record_run.py
# --save-init); either way the zero-initialised tensors (attn.c_proj,
# mlp.c_proj, lm_head) are then replaced by N(0, 0.02^2) and the scalars
# jittered (seeded; record_run.py --perturb-out, as tools/parity.sh does), so
# that every gradient is nonzero.
# Tokens: the first T+1 tokens of the Gutenberg training text
# (TEXT, default .carry/gutenberg_en_train_00.txt.zst, else
# ../shared/data/gutenberg_en_train_00.txt.zst, else data/sample/train.txt.zst).
# Prints the per-parameter table of tools/compare_grads.py (relative max error,
# relative L2 error, cosine) and the loss of each. Passes (exit 0) when the
# losses agree within 1% (LOSS_TOL) and every gradient's cosine is at least 0.99
# (MIN_COS); exit 1 otherwise. KEEP=DIR keeps the files there (default: a
# temporary directory, removed). About 2 minutes on an H200, most of it
# torch.compile.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 3 ] || { echo "Usage: tools/record-parity.sh BUILD_DIR [T] [W]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd)
T=${2:-65536} W=${3:-14}
case $T$W in *[!0-9]*) echo "record-parity.sh: T and W are integers" >&2; exit 2 ;; esac
if [ $((T % 128)) -ne 0 ] || [ "$T" -lt 128 ] || [ "$T" -gt 65536 ] || [ "$W" -lt 1 ]; then
	echo "record-parity.sh: T must be a multiple of 128 up to 65536, W >= 1" >&2
	exit 2
fi
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
say() { echo "record-parity: $*" >&2; }
text=${TEXT:-}
if [ -z "$text" ]; then
	for f in .carry/gutenberg_en_train_00.txt.zst ../shared/data/gutenberg_en_train_00.txt.zst data/sample/train.txt.zst; do
		[ -r "$f" ] && { text=$f; break; }
	done
fi
if [ -n "${KEEP:-}" ]; then
	d=$KEEP; mkdir -p "$d"
else
	d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
fi

say "tokens: the first $T+1 of $text"
gpt-tokshard -q -d -o "$d/tok.bin.zst" "$text"
gpt-tokshard -q --export -o "$d/tok.bin" "$d/tok.bin.zst"
init=${INIT:-gpt-init}
case $init in
gpt-init)
	gpt-init -q --preset record-2025-01-04 -o "$d/init.safetensors"
	initarg=(--init-weights "$d/init.safetensors") ;;
record)
	initarg=(--save-init "$d/init.safetensors") ;;
*) echo "record-parity.sh: INIT is gpt-init or record" >&2; exit 2 ;;
esac
say "PyTorch (the record's code, compiled): T=$T W=$W, weights from $init, perturbed"
t0=$(date +%s.%N)
python3 tools/record_run.py --mode grad "${initarg[@]}" --perturb-out "$d/w.safetensors" \
	--tokens "$d/tok.bin" --seq-len "$T" --window "$W" --out "$d/ref.safetensors" >"$d/ref.json"
t1=$(date +%s.%N)
say "gpt-eval --device cuda"
gpt-eval -q --device cuda -w "$d/w.safetensors" --val "$d/tok.bin.zst" --seq-len "$T" --tokens "$T" \
	--window "$W" --grad-out "$d/ours.safetensors" >"$d/ours.json"
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v T="$T" -v W="$W" -v i="$init" 'BEGIN {
	printf "record parity: T=%s, W=%s, weights %s (perturbed): record_run.py %.1f s, gpt-eval %.1f s\n", T, W, i, b - a, c - b }'
python3 tools/compare_grads.py "$d/ours.safetensors" "$d/ref.safetensors" --tol inf \
	--loss-tol "${LOSS_TOL:-0.01}" --min-cos "${MIN_COS:-0.99}"
