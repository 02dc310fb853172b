/*
 * cuda_bf16.h (emulation) - the bf16 conversions kernels/kcommon.cuh uses,
 * on emu.h's __nv_bfloat16 (round to nearest even, emu.cpp). Only for the
 * host emulation builds (tests/gpu/emu/run*.sh): found before the real
 * header through -Itests/gpu/emu. C++ only.
 */
#ifndef EMU_CUDA_BF16_H
#define EMU_CUDA_BF16_H

#include "emu.h"

inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
	__nv_bfloat16 b;
	b.r = emu_f2bf(f);
	return b;
}
inline uint16_t __bfloat16_as_ushort(__nv_bfloat16 b) { return b.r; }

#endif
