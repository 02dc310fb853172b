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
. tests/gpu/emu/lib.sh
# -Wno-unused-function: kcommon.cuh's block_max, unused here (nvcc does not warn)
prog=$(EMU_TEST_FLAGS=-DGPT_EMU EMU_KERNEL_FLAGS=-Wno-unused-function emu_build "$B" emu-head \
	gpu_head_q head_q)
exec "$prog"
