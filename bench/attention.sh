#!/usr/bin/env bash
# attention.sh - time the GPU attention kernels (kernels/attention.cuh).
#   bench/attention.sh [BUILD_DIR]      (make bench runs it)
# Runs the "bench" case of build/tests/gpu_attention with GPT_BENCH=1:
# T = 65536 tokens, 6 heads, FineWeb-like documents (exponential lengths,
# mean 3000 tokens); for each window, forward and forward+backward times
# (CUDA events, median of 20 after 3 warm-up runs) and TFLOP/s by spec 12.2,
# mask-level (allowed pairs) and tile-level (visited 128x128 tiles), with
# fwd+bwd counted as 3 x forward. GPT_BENCH_WINDOWS="1 7 14" sets the
# windows, GPT_BENCH_T the token count. Without a CUDA build or device it
# says so and exits 0.
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bin=$B/tests/gpu_attention
if [ ! -x "$bin" ]; then
	echo "attention.sh: $bin not built (needs nvcc); skipped"
	exit 0
fi
GPT_BENCH=1 CK_RUN_CASE=bench CK_VERBOSITY=silent "$bin" | grep -E '^(attention bench|W=)'
