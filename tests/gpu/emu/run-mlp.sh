#!/usr/bin/env bash
# run-mlp.sh - build tests/gpu/gpu_mlp.c against kernels/mlp_gemm.cu
# compiled for the host emulation (emu.h, emu.cpp; see run.sh) and run it
# in the four modes of run.sh: EMU_CP=defer EMU_SCHED=rr (a missing wgmma
# or mbarrier wait, or a wrong parity, reads stale data), now/warp,
# now/wg (a warpgroup runs ahead: the producer refills a stage the
# consumers have not released) and tma/wg (TMA at issue, wgmma deferred to
# its wait: a stage released before the products reading it retired).
# Setting EMU_CP or EMU_SCHED runs that one only. The cases: gpu_mlp.c's
# "mlp" case at M <= 256 (GPT_EMU), about 20 s a mode.
#   tests/gpu/emu/run-mlp.sh [BUILD_DIR]     (after make; needs g++)
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
. tests/gpu/emu/lib.sh
prog=$(EMU_TEST_FLAGS=-DGPT_EMU emu_build "$B" emu-mlp gpu_mlp mlp_gemm attention_mask device)
emu_modes "$prog"
