#!/usr/bin/env bash
# record_ops.sh - per-operation timings of the record's own PyTorch model on one
# GPU (tools/record_run.py --mode ops) at T = 65,536 Gutenberg tokens and
# windows WINDOWS (default "1 7 14"): the model's forward+backward, its no-grad
# forward, one Adam + Muon step, and FlexAttention's forward and
# forward+backward alone with the record's block mask, with TFLOP/s (spec 12)
# and peak memory; then gpt-*'s own attention kernels on the same sizes
# (bench/attention.sh: synthetic FineWeb-like documents), for comparison.
#
#   bench/record_ops.sh BUILD_DIR [RESULTS_DIR]
#
# RESULTS_DIR (default $OUT/record_ops, else ./record_ops) receives ops.jsonl,
# ops.stderr, attention.txt and table.md; SCRATCH (default
# /tmp/gpt-record-bench) holds the tokens (tools/record-data.sh, shared with
# bench/train_gpu.sh). TEXT: the text (default: the Gutenberg training text in
# .carry/, else ../shared/data, else data/sample). REPEAT: timed calls per op
# (default 10). About 3-4 minutes on an H200, most of it torch.compile.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "Usage: bench/record_ops.sh BUILD_DIR [RESULTS_DIR]" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd)
res=${2:-${OUT:-.}/record_ops}
mkdir -p "$res"
res=$(cd "$res" && pwd)
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
scratch=${SCRATCH:-/tmp/gpt-record-bench}
windows=${WINDOWS:-1 7 14}
text=${TEXT:-}
if [ -z "$text" ]; then
	for f in .carry/gutenberg_en_train_00.txt.zst ../shared/data/gutenberg_en_train_00.txt.zst data/sample/train.txt.zst; do
		[ -r "$f" ] && { text=$f; break; }
	done
fi
tools/record-data.sh -B "$B" "$scratch/data" $text
echo "record_ops: the record's model, T=65536, windows $windows" >&2
python3 tools/record_run.py --mode ops --tokens "$scratch/data/train_000000.bin" --seq-len 65536 \
	--windows "$(echo $windows | tr ' ' ,)" --repeat "${REPEAT:-10}" >"$res/ops.jsonl" 2> >(tee "$res/ops.stderr" >&2)
GPT_BENCH_WINDOWS="$windows" bench/attention.sh "$B" >"$res/attention.txt" 2>&1 || true
{
	echo "The record's PyTorch model (tools/record_run.py --mode ops), T = 65,536 Gutenberg tokens:"
	echo
	python3 bench/record_tables.py ops "$res/ops.jsonl"
	echo
	echo "gpt-*'s attention kernels (bench/attention.sh, synthetic documents):"
	echo
	sed 's/^/    /' "$res/attention.txt"
} | tee "$res/table.md"
