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
o=$B/emu
mkdir -p "$o"
CXX=${CXX:-g++}
CC=${CC:-cc}
flags="-O2 -g -DATT_EMULATE -Itests/gpu/emu -Ilib -Ikernels"
flags="$flags -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi"
for f in attention_mask attention_fwd attention_fwd_wg attention_bwd attention_bwd_wg attention_bwd_fused attention_simple device; do
	$CXX -std=c++17 $flags -x c++ -c kernels/$f.cu -o "$o/$f.o"
done
$CXX -std=c++17 $flags -U_FORTIFY_SOURCE -c tests/gpu/emu/emu.cpp -o "$o/emu.o"
$CC -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wno-unused-parameter -Itests/gpu/emu -Ilib \
	-Ikernels -Itests/unit $(pkg-config --cflags check 2>/dev/null) \
	-c tests/gpu/gpu_attention.c -o "$o/gpu_attention.o"
$CXX -o "$o/gpu_attention" "$o"/gpu_attention.o "$o"/attention_*.o "$o/device.o" "$o/emu.o" \
	"$B/libgpt.a" $(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) \
	-lzstd -lm -pthread
export GPT_ATTN_MAX_T=${GPT_ATTN_MAX_T:-512}
if [ -n "${EMU_CP:-}${EMU_SCHED:-}" ]; then
	exec "$o/gpu_attention"
fi
rc=0
for mode in "defer rr" "now warp" "now wg" "tma wg"; do
	set -- $mode
	echo "== emulation: EMU_CP=$1 EMU_SCHED=$2"
	EMU_CP=$1 EMU_SCHED=$2 "$o/gpu_attention" || rc=1
done
exit $rc
