#!/usr/bin/env bash
# model_cpu.sh - tokens/s of the CPU reference model (lib/model.h).
#   bench/model_cpu.sh [BUILD_DIR]      (make bench runs it)
# Runs the "bench" case of build/tests/check_model: one forward-only step,
# then REPS forward+backward steps on random weights and tokens, and prints
# one line per configuration. GPT_THREADS sets the thread count.
# Each configuration is "T layers dim heads vocab window reps" (mlp 4 x dim;
# value embeddings and the no-attention layer as in the record where the
# depth allows); GPT_MODEL_BENCH_CONFIGS replaces the list.
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$B/tests/check_model
[ -x "$bin" ] || { echo "model_cpu.sh: $bin not built (make $bin)" >&2; exit 2; }
configs=${GPT_MODEL_BENCH_CONFIGS:-"1024 4 128 2 50304 8 3
1024 4 128 2 4096 8 3
256 12 768 6 50304 2 1"}
cd "$top"
printf '%s\n' "$configs" | while read -r cfg; do
	[ -n "$cfg" ] || continue
	GPT_MODEL_BENCH="$cfg" CK_RUN_CASE=bench CK_VERBOSITY=silent "$bin" | grep '^model_cpu:'
done
