#!/usr/bin/env bash
# run.sh - build tests/gpu/gpu_attention.c against the attention kernels
# compiled for the host emulation (emu.h, emu.cpp) and run it: a check of
# the kernels' logic (indexing, fragment layouts, pipelines, masks) on a
# machine without a GPU. Slow: one coroutine per CUDA thread.
#   tests/gpu/emu/run.sh [BUILD_DIR]     (after make; needs g++)
# Runs the program four times: EMU_CP=defer EMU_SCHED=rr (a missing
# cp.async.wait_group or wgmma.wait_group, or an mbarrier wait of the wrong
# parity, reads stale data), EMU_CP=now EMU_SCHED=warp (a missing
# __syncthreads lets a warp overwrite a stage others still read),
# EMU_CP=now EMU_SCHED=wg (the same with a warpgroup running ahead of the
# other, as a TMA refill of a stage does) and EMU_CP=tma EMU_SCHED=wg (TMA
# loads at issue, wgmma deferred to its wait: a TMA refill of a stage that
# the other warpgroup's issued products still read); see emu.h and
# emu.cpp. Setting EMU_CP or EMU_SCHED runs that one only. Both the
# mma.sync and the wgmma (Hopper) kernels run: the "fast" rows are the
# wgmma ones (EMU_NO_WGMMA=1: the mma.sync ones).
# GPT_ATTN_MAX_T (default 512 here) limits the cases to small T;
# CK_RUN_CASE / CK_RUN_SUITE select tests as usual. About 4 x 3 minutes.
set -eu
B=${1:-build}
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
. tests/gpu/emu/lib.sh
prog=$(emu_build "$B" emu gpu_attention attention_mask attention_fwd attention_fwd_wg attention_bwd \
	attention_bwd_wg attention_bwd_fused attention_simple device)
export GPT_ATTN_MAX_T=${GPT_ATTN_MAX_T:-512}
emu_modes "$prog"
