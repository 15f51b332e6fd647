// kernels/cuda/cuda_info.cu — CUDA device discovery (see cuda_info.h).
#include "kernels/cuda/cuda_info.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int vidi_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" void vidi_cuda_device_describe(int i, char *buf, size_t len) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, i);
    if (e != cudaSuccess) {
        snprintf(buf, len, "device %d: %s", i, cudaGetErrorString(e));
        return;
    }
    snprintf(buf, len, "%s, sm_%d%d, %.0f GiB, %d SMs", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.multiProcessorCount);
}
