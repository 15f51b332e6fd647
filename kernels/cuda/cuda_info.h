/* kernels/cuda/cuda_info.h — what CUDA devices this process can see.
 * Only compiled when the CUDA backend is built (VIDI_HAVE_CUDA). */
#ifndef VIDI_KERNELS_CUDA_INFO_H
#define VIDI_KERNELS_CUDA_INFO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no driver or no device
 * (never an error: the CPU backend is the fallback). */
int vidi_cuda_device_count(void);
/* One line describing device i ("NVIDIA H100 80GB HBM3, sm_90, 79 GiB"), or
 * a line saying why it cannot be described. */
void vidi_cuda_device_describe(int i, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
