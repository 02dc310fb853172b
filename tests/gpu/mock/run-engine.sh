#!/bin/sh
# Run tests/gpu/gpu_engine.c with lib/engine_cuda.c against host emulations
# of the launchers (elementwise_mock.c, engine_mock.c): checks the engine's
# wiring and the test program where there is no GPU, on a small vocabulary
# and T (GPU_ENGINE_VOCAB, GPU_ENGINE_MAX_T). Run `make` first (a CUDA
# build: libgpt.a must contain engine_cuda.o compiled with GPT_CUDA).
#   tests/gpu/mock/run-engine.sh [BUILD_DIR]   (env: CK_RUN_CASE)
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
B=${1:-$top/build}
cuda=${CUDA_HOME:-/usr/local/cuda}
obj=$B/tests/gpu_engine.o
[ -f "$obj" ] || { echo "run-engine.sh: $obj missing: run make first" >&2; exit 2; }
mkdir -p "$B/mock"
for m in elementwise_mock engine_mock; do
	${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter \
		-I"$top/lib" -I"$top/kernels" -I"$cuda/include" \
		-c "$top/tests/gpu/mock/$m.c" -o "$B/mock/$m.o"
done
${CC:-cc} -o "$B/mock/gpu_engine_mock" "$obj" "$B/mock/elementwise_mock.o" "$B/mock/engine_mock.o" \
	"$B/libgpt.a" $(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) \
	-lzstd -lm -pthread
cd "$top" && GPU_ENGINE_VOCAB=${GPU_ENGINE_VOCAB:-2048} GPU_ENGINE_MAX_T=${GPU_ENGINE_MAX_T:-256} \
	exec "$B/mock/gpu_engine_mock"
