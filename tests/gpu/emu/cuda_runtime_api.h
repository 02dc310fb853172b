/*
 * cuda_runtime_api.h (emulation) - the same as cuda_runtime.h here (the
 * C headers of kernels/ include this name). Host emulation build only.
 */
#ifndef EMU_CUDA_RUNTIME_API_H
#define EMU_CUDA_RUNTIME_API_H

#include "cuda_runtime.h"

#endif
