#!/bin/sh
# Run the GPU elementwise test program against the host emulation of its
# kernels (elementwise_mock.c): checks the test program itself where there
# is no GPU. Run `make` first (it builds build/tests/gpu_elementwise.o).
#   tests/gpu/mock/run-elementwise.sh [BUILD_DIR]   (env: GPU_TEST_SEED, CK_RUN_CASE)
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
B=${1:-$top/build}
cuda=${CUDA_HOME:-/usr/local/cuda}
obj=$B/tests/gpu_elementwise.o
[ -f "$obj" ] || { echo "run-elementwise.sh: $obj missing: run make first" >&2; exit 2; }
mkdir -p "$B/mock"
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter \
	-I"$top/lib" -I"$top/kernels" -I"$cuda/include" \
	-c "$top/tests/gpu/mock/elementwise_mock.c" -o "$B/mock/elementwise_mock.o"
${CC:-cc} -o "$B/mock/gpu_elementwise_mock" "$obj" "$B/mock/elementwise_mock.o" "$B/libgpt.a" \
	$(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) -lzstd -lm -pthread
cd "$top" && exec "$B/mock/gpu_elementwise_mock"
