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
o=$B/emu-mlp
mkdir -p "$o"
CXX=${CXX:-g++}
CC=${CC:-cc}
flags="-O2 -g -DATT_EMULATE -Itests/gpu/emu -Ilib -Ikernels"
flags="$flags -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi"
for f in mlp_gemm attention_mask device; do
	$CXX -std=c++17 $flags -x c++ -c kernels/$f.cu -o "$o/$f.o"
done
$CXX -std=c++17 $flags -U_FORTIFY_SOURCE -c tests/gpu/emu/emu.cpp -o "$o/emu.o"
$CC -std=c11 -D_GNU_SOURCE -DGPT_EMU -O2 -g -Wall -Wextra -Wno-unused-parameter \
	-Itests/gpu/emu -Ilib -Ikernels -Itests/unit $(pkg-config --cflags check 2>/dev/null) \
	-c tests/gpu/gpu_mlp.c -o "$o/gpu_mlp.o"
$CXX -o "$o/gpu_mlp" "$o/gpu_mlp.o" "$o/mlp_gemm.o" "$o/attention_mask.o" "$o/device.o" "$o/emu.o" "$B/libgpt.a" \
	$(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) -lzstd -lm -pthread
if [ -n "${EMU_CP:-}${EMU_SCHED:-}" ]; then
	exec "$o/gpu_mlp"
fi
rc=0
for mode in "defer rr" "now warp" "now wg" "tma wg"; do
	set -- $mode
	echo "== emulation: EMU_CP=$1 EMU_SCHED=$2"
	EMU_CP=$1 EMU_SCHED=$2 "$o/gpu_mlp" || rc=1
done
exit $rc
