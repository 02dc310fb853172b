/*
 * cudaTypedefs.h (emulation) - the driver-API function pointer type of
 * cuTensorMapEncodeTiled (PFN_cuTensorMapEncodeTiled_v12000), as in the
 * real header. Host emulation build only (see cuda.h here).
 */
#ifndef EMU_CUDATYPEDEFS_H
#define EMU_CUDATYPEDEFS_H

#include "cuda.h"

typedef CUresult(CUDAAPI *PFN_cuTensorMapEncodeTiled_v12000)(
	CUtensorMap *tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
	void *globalAddress, const cuuint64_t *globalDim, const cuuint64_t *globalStrides,
	const cuuint32_t *boxDim, const cuuint32_t *elementStrides, CUtensorMapInterleave interleave,
	CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2Promotion,
	CUtensorMapFloatOOBfill oobFill);

#endif
