/* kernels/cuda/cuda_backend.h — internal header shared by the CUDA backend's
 * files (cuda_backend.cu, cuda_attention.cu, cuda_sample.cu, ...). Not part
 * of the public interface: the rest of vidi sees only kernels/ops.h.
 *
 * Every kernel runs on the backend's one stream (vidi_cuda_stream). Entry
 * points check shapes and dtypes like their CPU twins and return a
 * vidi_status with a message in *err (vidi_err_set from core/err.h, which
 * this header brings in with C linkage); CUDA failures are reported with
 * cudaGetErrorString (vidi_cuda_check). */
#ifndef VIDI_KERNELS_CUDA_BACKEND_H
#define VIDI_KERNELS_CUDA_BACKEND_H

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ops.h (and core/err.h, core/tensor.h) have no extern "C" of their own. */
#include "kernels/ops.h"

/* The backend's private state, be->ctx. Created by vidi_backend_cuda_create,
 * freed by be->ops->destroy. */
typedef struct vidi_cuda_ctx {
    int device;                  /* CUDA device ordinal (made current at create) */
    cudaStream_t stream;         /* non-blocking stream every op runs on */
    cublasLtHandle_t lt;         /* cuBLASLt handle */
    void *lt_workspace;          /* cuBLASLt workspace of lt_workspace_bytes (32 MiB) */
    size_t lt_workspace_bytes;
    struct lt_plan *lt_plans;    /* cuBLASLt plan cache of VIDI_CUDA_LT_PLANS slots (LRU,
                                    allocated on first use, freed at destroy) */
    uint64_t lt_clock;           /* LRU stamp of the last plan used */
    int id_pending;              /* gather_rows / scatter_rows ran since the last wait:
                                    the next wait reads d_flag[1..3] (a bad id's record) */
    void *h_stage;               /* pinned staging ring for small copy_to_device:
                                    VIDI_CUDA_STAGE_SLOTS slots of VIDI_CUDA_STAGE_BYTES */
    cudaEvent_t stage_ev[16];    /* recorded after each slot's upload (VIDI_CUDA_STAGE_SLOTS) */
    int stage_next;              /* next slot to use */
    unsigned long long *d_flag;  /* device words of the id checks: [0] this op's first bad
                                    index, [1..3] first bad id since the last wait */
    unsigned long long *h_flag;  /* pinned host copy of the same size */
    void *h_big[2];              /* pinned slots of VIDI_CUDA_BIG_STAGE_BYTES for upload_convert
                                    (allocated on first use) */
    cudaEvent_t big_ev[2];       /* recorded after each big slot's upload */
    int big_next;
    int num_sms;                 /* multiprocessor count */
    int exact;                   /* batch-invariant kernels (vidi_backend_cuda_set_exact) */
    size_t smem_optin;           /* max dynamic shared memory per block after
                                    cudaFuncSetAttribute (sharedMemPerBlockOptin) */
} vidi_cuda_ctx;

#define VIDI_CUDA_FLAGS 4
#define VIDI_CUDA_LT_PLANS 64
#define VIDI_CUDA_STAGE_SLOTS 16          /* = the size of stage_ev */
#define VIDI_CUDA_STAGE_BYTES ((size_t)64 << 10)
#define VIDI_CUDA_BIG_STAGE_BYTES ((size_t)16 << 20)

/* Frees the cuBLASLt plan cache (cuda_destroy). */
void vidi_cuda_plans_free(vidi_cuda_ctx *c);

/* The backend's stream (be->ctx's stream). */
cudaStream_t vidi_cuda_stream(vidi_backend *be);

/* VIDI_OK when e == cudaSuccess; otherwise VIDI_ERR_INTERNAL (VIDI_ERR_NOMEM
 * for cudaErrorMemoryAllocation) with "<what>: <cudaGetErrorString(e)>". */
vidi_status vidi_cuda_check(cudaError_t e, const char *what, vidi_err *err);

/* Launch-error check after a kernel launch: vidi_cuda_check(cudaGetLastError(), what, err). */
vidi_status vidi_cuda_check_launch(const char *what, vidi_err *err);

/* ---- implemented in cuda_sparse.cu ---- */
vidi_status vidi_cuda_sparse_mass(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, int64_t r0,
                                  int64_t r1, float scale, float *col, float *diag, vidi_err *err);
vidi_status vidi_cuda_sparse_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                       const vidi_tensor *v, vidi_tensor *out, const int32_t *rows,
                                       const int32_t *tiles, int64_t n_tiles, const int32_t *segs,
                                       const int32_t *cols, float scale, vidi_err *err);

/* ---- implemented in cuda_attention.cu ---- */
vidi_status vidi_cuda_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                const vidi_tensor *v, vidi_tensor *out,
                                const vidi_attn_args *args, vidi_err *err);
vidi_status vidi_cuda_attention_paged(vidi_backend *be, const vidi_tensor *q,
                                      const vidi_tensor *k_cache, const vidi_tensor *v_cache,
                                      const vidi_tensor *block_table, const vidi_tensor *seq_lens,
                                      float scale, vidi_tensor *out, vidi_err *err);

/* ---- implemented in cuda_sample.cu ---- */
vidi_status vidi_cuda_argmax_rows(vidi_backend *be, const vidi_tensor *logits, vidi_tensor *out, vidi_err *err);
vidi_status vidi_cuda_sample(vidi_backend *be, const vidi_tensor *logits,
                             const vidi_sample_params *p, uint64_t *rng_state,
                             int32_t *out_tokens, vidi_err *err);

/* ---- implemented in cuda_attention.cu (ops.h attention_klen) ---- */
vidi_status vidi_cuda_attention_klen(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                     const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                                     const int32_t *k_len_dev, vidi_err *err);

/* ---- implemented in cuda_graph.cu (ops.h graph_*) ---- */
vidi_status vidi_cuda_graph_begin(vidi_backend *be, vidi_err *err);
vidi_status vidi_cuda_graph_end(vidi_backend *be, void **graph, vidi_err *err);
vidi_status vidi_cuda_graph_launch(vidi_backend *be, void *graph, vidi_err *err);
void vidi_cuda_graph_free(vidi_backend *be, void *graph);

/* ---- implemented in cuda_cudnn.cu (fused attention through cuDNN) ---- */
/* One attention shape: b sequences of sq queries / skv keys laid end to end
 * in [T, H, D] bf16 rows; hq a multiple of hkv. */
typedef struct vidi_cudnn_sdpa {
    int64_t b, hq, hkv, sq, skv, d;
    int causal; /* needs sq == skv */
} vidi_cudnn_sdpa;
typedef struct vidi_cudnn_plan vidi_cudnn_plan;
/* The cached plan for s (built on first use), or NULL when cuDNN has none
 * (or is off: VIDI_CUDNN=0, or absent at build time). *workspace: the device
 * bytes vidi_cudnn_sdpa_run needs. */
vidi_cudnn_plan *vidi_cudnn_sdpa_plan(const vidi_cudnn_sdpa *s, size_t *workspace);
/* Queues the attention on st; workspace (16-byte aligned) as asked. */
vidi_status vidi_cudnn_sdpa_run(vidi_cudnn_plan *p, cudaStream_t st, const void *q, const void *k,
                                const void *v, void *o, float scale, void *workspace, vidi_err *err);

#ifdef __cplusplus
}
#endif

#endif
