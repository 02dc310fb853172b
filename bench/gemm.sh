#!/usr/bin/env bash
# gemm.sh - time the matrix products of one record training step through
# kernels/gemm.cuh (cuBLASLt), at each of the heuristic's first algorithms.
#   bench/gemm.sh [BUILD_DIR]      (make bench runs it)
# Runs the "bench" case of build/tests/gpu_head_optim with
# GPT_BENCH=1: for every product shape of the record's micro-batch (T =
# 65,536 tokens; q/k/v/o, MLP fc and proj, the head in chunks; forward, dx
# and dW), ms per product and TFLOP/s at the heuristic's rank 0 (what
# gpt-train runs) and at the best of ranks 0..GPT_BENCH_RANKS-1 (default
# 8), and the ms per step (8 micro-batches). A markdown table. With
# GPT_BENCH_SUSTAIN=S in the environment, a second table: each product the
# engine runs, S seconds back to back and then timed for S more: the GPU at
# its power limit, as in training (about 30 S seconds more). Without a
# CUDA build or device it says so and exits 0.
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bin=$B/tests/gpu_head_optim
if [ ! -x "$bin" ]; then
	echo "gemm.sh: $bin not built (needs nvcc); skipped"
	exit 0
fi
GPT_BENCH=1 CK_RUN_CASE=bench CK_VERBOSITY=silent "$bin" |
	grep -E '^(gemm bench|\||record step)'
