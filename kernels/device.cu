/*
 * device.cu - CUDA device discovery for engine selection (--device auto).
 *
 * defines: engine_cuda_available
 */
#include <cuda_runtime.h>

extern "C" int engine_cuda_available(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError(); /* clear the sticky "no device" error */
		return 0;
	}
	return n > 0;
}
