#!/usr/bin/env bash
# run-head.sh - build tests/gpu/gpu_head_q.c against kernels/head_q.cu (the
# row kernels of the head's Q path) compiled for the host emulation
# (emu.h, emu.cpp; see run.sh) and run it once (the kernels use warp
# shuffles only: no shared memory, barriers or asynchronous copies, so the
# scheduling modes of run.sh change nothing). A few seconds.
#   tests/gpu/emu/run-head.sh [BUILD_DIR]     (after make; needs g++)
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
o=$B/emu-head
mkdir -p "$o"
CXX=${CXX:-g++}
CC=${CC:-cc}
# -Wno-unused-function: kcommon.cuh's block_max, unused here (nvcc does not warn)
flags="-O2 -g -DATT_EMULATE -Itests/gpu/emu -Ilib -Ikernels"
flags="$flags -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi -Wno-unused-function"
$CXX -std=c++17 $flags -x c++ -c kernels/head_q.cu -o "$o/head_q.o"
$CXX -std=c++17 $flags -U_FORTIFY_SOURCE -c tests/gpu/emu/emu.cpp -o "$o/emu.o"
$CC -std=c11 -D_GNU_SOURCE -DGPT_EMU -O2 -g -Wall -Wextra -Wno-unused-parameter \
	-Itests/gpu/emu -Ilib -Ikernels -Itests/unit $(pkg-config --cflags check 2>/dev/null) \
	-c tests/gpu/gpu_head_q.c -o "$o/gpu_head_q.o"
$CXX -o "$o/gpu_head_q" "$o/gpu_head_q.o" "$o/head_q.o" "$o/emu.o" "$B/libgpt.a" \
	$(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) -lzstd -lm -pthread
exec "$o/gpu_head_q"
