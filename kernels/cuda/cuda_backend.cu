// kernels/cuda/cuda_backend.cu — the CUDA backend: memory, cuBLASLt matrix
// products and the elementwise, normalisation, rotary and row ops of
// kernels/ops.h. Attention lives in cuda_attention.cu, sampling in
// cuda_sample.cu; both share cuda_backend.h.
//
// Every op mirrors its CPU twin (kernels/cpu/cpu_backend.c): the same
// argument checks and messages, the same formulas in fp32. Activations may
// be BF16 (the backend's act dtype) or F32 (so the CPU-twin tests can feed
// either); weights F32, BF16 or F16. Kernels load any float dtype, compute
// in fp32 and round once on store. All work is queued on the backend's one
// stream; only copy_to_host, synchronize and copy_to_device of more than
// VIDI_CUDA_STAGE_BYTES wait for it (and sample, in cuda_sample.cu). Bad ids
// of gather_rows / scatter_rows are reported at the next of those waits.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/check.h"
extern "C" {
#include "core/pool.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define CUDA_EW_THREADS 256   // threads per block of elementwise kernels
#define CUDA_ROW_THREADS 256  // threads per block of one-row-per-block kernels
#define CUDA_ROPE_MAX_PAIRS 128

static vidi_cuda_ctx *cuda_ctx(vidi_backend *be) { return (vidi_cuda_ctx *)be->ctx; }

extern "C" cudaStream_t vidi_cuda_stream(vidi_backend *be) { return cuda_ctx(be)->stream; }

extern "C" vidi_status vidi_cuda_check(cudaError_t e, const char *what, vidi_err *err) {
    if (e == cudaSuccess) return VIDI_OK;
    return vidi_err_set(err, e == cudaErrorMemoryAllocation ? VIDI_ERR_NOMEM : VIDI_ERR_INTERNAL, "%s: %s (%s)",
                        what, cudaGetErrorString(e), cudaGetErrorName(e));
}

extern "C" vidi_status vidi_cuda_check_launch(const char *what, vidi_err *err) {
    return vidi_cuda_check(cudaGetLastError(), what, err);
}

static vidi_status lt_check(cublasStatus_t s, const char *what, vidi_err *err) {
    if (s == CUBLAS_STATUS_SUCCESS) return VIDI_OK;
    return vidi_err_set(err, s == CUBLAS_STATUS_ALLOC_FAILED ? VIDI_ERR_NOMEM : VIDI_ERR_INTERNAL, "%s: %s", what,
                        cublasGetStatusName(s));
}

// ------------------------------------------------------------------------
// Argument checks, worded as the CPU twin's. Every message starts with the
// op name.

// Activations: BF16 (the act dtype) or F32.
#define BACKEND_ACTS (VIDI_ACTS(VIDI_DTYPE_BF16) | VIDI_ACTS(VIDI_DTYPE_F32))

static vidi_status check_act(const char *op, const char *name, const vidi_tensor *t, vidi_err *err) {
    return vidi_check_act(op, name, t, BACKEND_ACTS, err);
}

// ------------------------------------------------------------------------
// Device helpers: any float dtype in, fp32 math, one rounding out.

__device__ __forceinline__ float ld_f(const void *p, int dt, int64_t i) {
    if (dt == VIDI_DTYPE_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dt == VIDI_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

__device__ __forceinline__ void st_f(void *p, int dt, int64_t i, float v) {
    if (dt == VIDI_DTYPE_BF16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else if (dt == VIDI_DTYPE_F16) ((__half *)p)[i] = __float2half_rn(v);
    else ((float *)p)[i] = v;
}

// v rounded to dtype dt and widened back (the value a store would keep).
__device__ __forceinline__ float round_to(int dt, float v) {
    if (dt == VIDI_DTYPE_BF16) return __bfloat162float(__float2bfloat16_rn(v));
    if (dt == VIDI_DTYPE_F16) return __half2float(__float2half_rn(v));
    return v;
}

// The formulas and operation order of the CPU twin (torch's CPU kernels),
// with the precise libdevice erff / tanhf / expf.
__device__ __forceinline__ float act_apply(int kind, float x) {
    switch (kind) {
    case VIDI_ACT_GELU_ERF: return x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
    case VIDI_ACT_GELU_TANH: {
        const float beta = 0.79788456080286535588f, kappa = 0.044715f;  // sqrt(2 / pi)
        float inner = beta * (x + kappa * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    case VIDI_ACT_QUICK_GELU: return x * (1.0f / (1.0f + expf(-1.702f * x)));
    case VIDI_ACT_SILU: return x / (1.0f + expf(-x));
    }
    return x;
}

// Sum / max of v over the block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. red is shared scratch of 32 floats; the function
// begins and ends with a barrier so red can be reused by the next call.
__device__ float block_sum(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

__device__ float block_max(float v, float *red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    return v;
}

// Blocks for a grid-stride loop over n items.
static unsigned ew_blocks(vidi_backend *be, int64_t n) {
    int64_t b = (n + CUDA_EW_THREADS - 1) / CUDA_EW_THREADS, cap = (int64_t)cuda_ctx(be)->num_sms * 16;
    if (b > cap) b = cap;
    return (unsigned)(b < 1 ? 1 : b);
}

// Threads of a one-row-per-block kernel: a multiple of 32 up to CUDA_ROW_THREADS.
static unsigned row_threads(int64_t cols) {
    int64_t t = (cols + 31) / 32 * 32;
    if (t > CUDA_ROW_THREADS) t = CUDA_ROW_THREADS;
    return (unsigned)(t < 32 ? 32 : t);
}

// Whether these bf16 buffers (NULL ones skipped) can take the 8-wide path
// for n values: n a multiple of 8, every address 16-byte aligned.
static int vec8_ok(int64_t n, const void *a, const void *b = NULL, const void *c = NULL, const void *d = NULL) {
    const uintptr_t m = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d;
    return n > 0 && n % 8 == 0 && (m & 15) == 0;
}

// Rows are spread over at most this many blocks (grid-stride over rows).
static unsigned row_blocks(int64_t rows) { return (unsigned)(rows < 65535 * 16 ? (rows < 1 ? 1 : rows) : 65535 * 16); }

// ------------------------------------------------------------------------
// Kernels.

__global__ void k_convert(const void *src, int sdt, void *dst, int ddt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f(dst, ddt, i, ld_f(src, sdt, i));
}

// y[m, :] = bias (or 0 without one) for M rows of N.
__global__ void k_fill_rows(void *y, int ydt, const void *bias, int bdt, int64_t M, int64_t N) {
    const int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f(y, ydt, i, bias ? ld_f(bias, bdt, i % N) : 0.0f);
}

// y[m, :] += bias for M rows of N.
__global__ void k_add_rows(void *y, int ydt, const void *bias, int bdt, int64_t M, int64_t N) {
    const int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f(y, ydt, i, ld_f(y, ydt, i) + ld_f(bias, bdt, i % N));
}

__global__ void k_add(const void *a, int adt, const void *b, int bdt, void *y, int ydt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f(y, ydt, i, ld_f(a, adt, i) + ld_f(b, bdt, i));
}

// y = act(x), or act(x) * up when up is given.
__global__ void k_act(int kind, const void *x, int xdt, const void *up, int udt, void *y, int ydt, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = act_apply(kind, ld_f(x, xdt, i));
        if (up) v *= ld_f(up, udt, i);
        st_f(y, ydt, i, v);
    }
}

// Qwen2RMSNorm: var = mean(x^2) in fp32, h = x * rsqrt(var + eps) rounded to
// x's dtype (hidden_states.to(input_dtype)), y = w * h.
__global__ void k_rms_norm(const void *x, int xdt, const void *w, int wdt, void *y, int ydt, int64_t rows,
                           int64_t cols, float eps) {
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t base = r * cols;
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = ld_f(x, xdt, base + c);
            ss += v * v;
        }
        ss = block_sum(ss, red);
        const float rs = 1.0f / sqrtf(ss / (float)cols + eps);
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float h = round_to(xdt, ld_f(x, xdt, base + c) * rs);
            st_f(y, ydt, base + c, ld_f(w, wdt, c) * h);
        }
    }
}

// nn.LayerNorm: mean, then the biased variance of (x - mean), both in fp32.
__global__ void k_layer_norm(const void *x, int xdt, const void *w, int wdt, const void *b, int bdt, void *y,
                             int ydt, int64_t rows, int64_t cols, float eps) {
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t base = r * cols;
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += ld_f(x, xdt, base + c);
        const float mean = block_sum(s, red) / (float)cols;
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = ld_f(x, xdt, base + c) - mean;
            ss += d * d;
        }
        const float rstd = 1.0f / sqrtf(block_sum(ss, red) / (float)cols + eps);
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = (ld_f(x, xdt, base + c) - mean) * rstd * ld_f(w, wdt, c);
            if (b) v += ld_f(b, bdt, c);
            st_f(y, ydt, base + c, v);
        }
    }
}

// torch's last-dimension softmax: max, exp(x - max), sum, multiply by 1/sum.
__global__ void k_softmax(const void *x, int xdt, void *y, int ydt, int64_t rows, int64_t cols) {
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t base = r * cols;
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, ld_f(x, xdt, base + c));
        mx = block_max(mx, red);
        float s = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += expf(ld_f(x, xdt, base + c) - mx);
        const float inv = 1.0f / block_sum(s, red);
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            st_f(y, ydt, base + c, expf(ld_f(x, xdt, base + c) - mx) * inv);
    }
}

// The pair tables of a vidi_rope_spec, passed by value.
typedef struct rope_tables {
    float inv_freq[CUDA_ROPE_MAX_PAIRS];
    int8_t axis[CUDA_ROPE_MAX_PAIRS];
} rope_tables;

// One thread per (token, head, pair): x [T, H, D] in place, pos [T, n_axes].
__global__ void k_rope(void *x, int xdt, const int32_t *pos, int n_axes, int64_t T, int64_t H, int half,
                       const rope_tables tab) {
    const int64_t n = T * H * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int p = (int)(i % half);
        const int64_t th = i / half, t = th / H;
        const float angle = (float)pos[t * n_axes + tab.axis[p]] * tab.inv_freq[p];
        const float c = cosf(angle), s = sinf(angle);
        const int64_t o = th * 2 * half + p;
        const float a = ld_f(x, xdt, o), b = ld_f(x, xdt, o + half);
        st_f(x, xdt, o, a * c - b * s);
        st_f(x, xdt, o + half, b * c + a * s);
    }
}


// ------------------------------------------------------------------------
// BF16 fast paths: every operand bf16, 16-byte aligned, a multiple of 8
// values, so each thread moves 8 values per 16-byte load / store and the
// dtype (and activation) is fixed at compile time. Same fp32 formulas and
// one rounding on store as the generic kernels above; the row reductions
// may sum in another order (differences of fp32 rounding only).

__device__ __forceinline__ void unpack8(const uint4 &u, float *f) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ uint4 pack8(const float *f) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return u;
}

__device__ __forceinline__ float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

__global__ void k_add8(const uint4 *a, const uint4 *b, uint4 *y, int64_t n8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        float fa[8], fb[8];
        unpack8(a[i], fa);
        unpack8(b[i], fb);
#pragma unroll
        for (int k = 0; k < 8; k++) fa[k] += fb[k];
        y[i] = pack8(fa);
    }
}

template <int KIND, bool UP>
__global__ void k_act8(const uint4 *x, const uint4 *up, uint4 *y, int64_t n8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        float f[8], u[8];
        unpack8(x[i], f);
        if (UP) unpack8(up[i], u);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            f[k] = act_apply(KIND, f[k]);
            if (UP) f[k] *= u[k];
        }
        y[i] = pack8(f);
    }
}

// One row per block; the row stays in registers (NV vectors per thread).
template <int NV>
__global__ void k_rms_norm8(const uint4 *x, const uint4 *w, uint4 *y, int64_t rows, int c8, float eps) {
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const uint4 *xr = x + r * c8;
        uint4 *yr = y + r * c8;
        float v[NV][8];
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = threadIdx.x + j * blockDim.x;
            if (c < c8) {
                unpack8(xr[c], v[j]);
#pragma unroll
                for (int k = 0; k < 8; k++) ss += v[j][k] * v[j][k];
            }
        }
        ss = block_sum(ss, red);
        const float rs = 1.0f / sqrtf(ss / (float)(c8 * 8) + eps);
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = threadIdx.x + j * blockDim.x;
            if (c < c8) {
                float wf[8];
                unpack8(w[c], wf);
#pragma unroll
                for (int k = 0; k < 8; k++) wf[k] *= bf16_round(v[j][k] * rs);
                yr[c] = pack8(wf);
            }
        }
    }
}

template <int NV>
__global__ void k_layer_norm8(const uint4 *x, const uint4 *w, const uint4 *b, uint4 *y, int64_t rows, int c8,
                              float eps) {
    __shared__ float red[32];
    const float cols = (float)(c8 * 8);
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const uint4 *xr = x + r * c8;
        uint4 *yr = y + r * c8;
        float v[NV][8];
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = threadIdx.x + j * blockDim.x;
            if (c < c8) {
                unpack8(xr[c], v[j]);
#pragma unroll
                for (int k = 0; k < 8; k++) s += v[j][k];
            }
        }
        const float mean = block_sum(s, red) / cols;
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = threadIdx.x + j * blockDim.x;
            if (c < c8) {
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const float d = v[j][k] - mean;
                    ss += d * d;
                }
            }
        }
        const float rstd = 1.0f / sqrtf(block_sum(ss, red) / cols + eps);
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = threadIdx.x + j * blockDim.x;
            if (c < c8) {
                float wf[8], bf[8];
                unpack8(w[c], wf);
                if (b) unpack8(b[c], bf);
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    float o = (v[j][k] - mean) * rstd * wf[k];
                    if (b) o += bf[k];
                    wf[k] = o;
                }
                yr[c] = pack8(wf);
            }
        }
    }
}

// 8 pairs per thread: x [T, H, D] bf16 in place, half a multiple of 8.
__global__ void k_rope8(__nv_bfloat16 *x, const int32_t *pos, int n_axes, int64_t T, int64_t H, int half,
                        const rope_tables tab) {
    const int g8 = half / 8;
    const int64_t n = T * H * g8;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int p0 = (int)(i % g8) * 8;
        const int64_t th = i / g8, t = th / H;
        uint4 *pa = reinterpret_cast<uint4 *>(x + th * 2 * half + p0);
        uint4 *pb = reinterpret_cast<uint4 *>(x + th * 2 * half + p0 + half);
        float a[8], b[8], ra[8], rb[8];
        unpack8(*pa, a);
        unpack8(*pb, b);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int p = p0 + k;
            const float angle = (float)pos[t * n_axes + tab.axis[p]] * tab.inv_freq[p];
            const float c = cosf(angle), s = sinf(angle);
            ra[k] = a[k] * c - b[k] * s;
            rb[k] = b[k] * c + a[k] * s;
        }
        *pa = pack8(ra);
        *pb = pack8(rb);
    }
}

// Id checks of gather_rows / scatter_rows run on the device and report late:
// flag[0] = the lowest bad i of the op being queued (reset before each big
// check); flag[1..3] = the first bad id since the host last looked: index,
// value, limit << 2 | op (0 gather, 1 scatter, 2 qkv_rope_store), flag[1] = ~0 when none. An op
// with a bad id writes nothing; the host reports flag[1..3] at its next wait.
#define CUDA_ID_NONE (~0ull)
#define CUDA_ID_SELF_MAX 256  // up to this many ids each block scans them itself

// Whether the ids of this op are bad (same answer in every block): from
// flag[0] (self == 0, set by k_check_ids) or by scanning them (self == 1).
// Block 0 records the first bad id in flag[1..3] if nothing is recorded yet.
// Every thread of the block must call it.
__device__ bool ids_rejected(const int32_t *ids, int64_t n, int64_t limit, unsigned long long *flag, int self,
                             int opcode) {
    __shared__ unsigned long long first;
    if (threadIdx.x == 0) first = self ? CUDA_ID_NONE : flag[0];
    __syncthreads();
    if (self) {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            if (ids[i] < 0 || ids[i] >= limit) atomicMin(&first, (unsigned long long)i);
        __syncthreads();
    }
    const unsigned long long f = first;
    if (f != CUDA_ID_NONE && blockIdx.x == 0 && threadIdx.x == 0 && flag[1] == CUDA_ID_NONE) {
        flag[1] = f;
        flag[2] = (unsigned long long)(uint32_t)ids[f];
        flag[3] = ((unsigned long long)limit << 2) | (unsigned long long)opcode;
    }
    return f != CUDA_ID_NONE;
}

// flag[0] = the lowest i with ids[i] outside [0, limit) (unchanged if none).
__global__ void k_check_ids(const int32_t *ids, int64_t n, int64_t limit, unsigned long long *flag) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        if (ids[i] < 0 || ids[i] >= limit) atomicMin(flag, (unsigned long long)i);
}

// out[i, :] = table[ids[i], :], one block per row (grid-stride over rows).
__global__ void k_gather(const void *table, int tdt, const int32_t *ids, void *out, int odt, int64_t n,
                         int64_t cols, int64_t limit, unsigned long long *flag, int self) {
    if (ids_rejected(ids, n, limit, flag, self, 0)) return;
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const int64_t src = (int64_t)ids[r] * cols, dst = r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) st_f(out, odt, dst + c, ld_f(table, tdt, src + c));
    }
}

// winner[idx[i]] = the largest i writing that row (the CPU twin writes rows
// in order, so with a repeated index the last row wins).
__global__ void k_scatter_winner(const int32_t *idx, int64_t n, int *winner, const unsigned long long *flag) {
    if (flag[0] != CUDA_ID_NONE) return;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        atomicMax(&winner[idx[i]], (int)i);
}

// dst[idx[i], :] = src[i, :] for the rows that win (all when winner is NULL).
__global__ void k_scatter(const void *src, int sdt, const int32_t *idx, const int *winner, void *dst, int ddt,
                          int64_t n, int64_t cols, int64_t limit, unsigned long long *flag) {
    if (ids_rejected(idx, n, limit, flag, 0, 1)) return;
    for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        if (winner && winner[idx[r]] != (int)r) continue;
        const int64_t d = (int64_t)idx[r] * cols, s = r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) st_f(dst, ddt, d + c, ld_f(src, sdt, s + c));
    }
}

// qkv_rope_store: block (t, h) handles head h of token t, one thread per
// rotated pair (v heads: two values per thread). With self set, every block
// first scans all T slots (small T); else k_check_ids has put the lowest bad
// index in flag[0]. With a bad slot no cache row is written (q still is) and
// block (0, 0) records it for the next wait.
__global__ void k_qkv_rope_store(const void *qkv, int dt, const int32_t *pos, int n_axes, const int32_t *slots,
                                 int64_t T, int64_t R, int hq, int hkv, int half, const rope_tables tab, void *q,
                                 void *kc, void *vc, unsigned long long *flag, int self) {
    __shared__ unsigned long long first;
    if (threadIdx.x == 0) first = self ? CUDA_ID_NONE : flag[0];
    __syncthreads();
    if (self) {
        for (int64_t i = threadIdx.x; i < T; i += blockDim.x)
            if (slots[i] < 0 || slots[i] >= R) atomicMin(&first, (unsigned long long)i);
        __syncthreads();
    }
    const bool bad = first != CUDA_ID_NONE;
    if (bad && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0 &&
        atomicCAS(&flag[1], CUDA_ID_NONE, first) == CUDA_ID_NONE) {
        flag[2] = (unsigned long long)(uint32_t)slots[first];
        flag[3] = ((unsigned long long)R << 2) | 2ull;
    }
    const int h = blockIdx.y, D = 2 * half;
    if (h >= hq && bad) return;
    const int64_t row = (int64_t)(hq + 2 * hkv) * D, kvd = (int64_t)hkv * D;
    for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
        const int64_t src = t * row + (int64_t)h * D;
        if (h >= hq + hkv) {  // a v head: copied
            const int64_t o = (int64_t)slots[t] * kvd + (int64_t)(h - hq - hkv) * D;
            for (int i = threadIdx.x; i < D; i += blockDim.x) st_f(vc, dt, o + i, ld_f(qkv, dt, src + i));
            continue;
        }
        void *dst = h < hq ? q : kc;
        const int64_t o = h < hq ? (t * hq + h) * D : (int64_t)slots[t] * kvd + (int64_t)(h - hq) * D;
        for (int p = threadIdx.x; p < half; p += blockDim.x) {
            const float angle = (float)pos[t * n_axes + tab.axis[p]] * tab.inv_freq[p];
            const float c = cosf(angle), s = sinf(angle);
            const float a = ld_f(qkv, dt, src + p), b = ld_f(qkv, dt, src + p + half);
            st_f(dst, dt, o + p, a * c - b * s);
            st_f(dst, dt, o + p + half, b * c + a * s);
        }
    }
}

// ------------------------------------------------------------------------
// Memory. Buffers come from the device's stream-ordered pool on the
// backend's stream (cudaMallocAsync), so allocating and freeing between
// steps costs no device-wide synchronisation.

static void *cuda_buf_alloc(vidi_backend *be, size_t bytes) {
    if (bytes > SIZE_MAX - 256) return NULL;
    void *p = NULL;
    size_t n = ((bytes ? bytes : 1) + 255) & ~(size_t)255;
    if (cudaMallocAsync(&p, n, cuda_ctx(be)->stream) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_buf_free(vidi_backend *be, void *p) {
    if (p) cudaFreeAsync(p, cuda_ctx(be)->stream);
}

static vidi_status copy_args(const char *op, void *dst, const void *src, size_t bytes, vidi_err *err) {
    if (!dst || !src) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: NULL pointer for %zu bytes", op, bytes);
    if (vidi_bytes_overlap(dst, bytes, src, bytes))
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: source and destination ranges overlap", op);
    return VIDI_OK;
}

// Waits for the stream; first queues a read of the id-check record when
// gather_rows / scatter_rows ran since the last wait, and reports a bad id
// found there (VIDI_ERR_INVALID, the record then cleared).
static vidi_status cuda_wait(vidi_backend *be, const char *what, vidi_err *err) {
    vidi_cuda_ctx *c = cuda_ctx(be);
    vidi_status rc = VIDI_OK;
    const int look = c->id_pending;
    if (look)
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(c->h_flag + 1, c->d_flag + 1, 3 * sizeof *c->h_flag,
                                                 cudaMemcpyDeviceToHost, c->stream),
                                 what, err));
    VIDI_TRY(vidi_cuda_check(cudaStreamSynchronize(c->stream), what, err));
    if (!look) return VIDI_OK;
    c->id_pending = 0;
    if (c->h_flag[1] == CUDA_ID_NONE) return VIDI_OK;
    {
        const int opcode = (int)(c->h_flag[3] & 3);
        const long long index = (long long)c->h_flag[1], limit = (long long)(c->h_flag[3] >> 2);
        static const char *const ops[] = {"gather_rows", "scatter_rows", "qkv_rope_store", "?"};
        static const char *const args[] = {"ids", "idx", "slots", "?"};
        const int bad = (int)(uint32_t)c->h_flag[2];
        c->h_flag[1] = CUDA_ID_NONE;
        VIDI_TRY(vidi_cuda_check(cudaMemsetAsync(c->d_flag + 1, 0xff, sizeof *c->d_flag, c->stream), what, err));
        rc = vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s[%lld] = %d is out of range [0, %lld) (reported at %s)",
                          ops[opcode], args[opcode], index, bad, limit, what);
    }
fail:
    return rc;
}

// Small copies go through a ring of pinned staging slots and do not wait:
// host_src is copied into the slot before this returns, so the caller may
// free or reuse it at once (a slot is reused only after its earlier copy
// has run). Larger copies wait until they are done.
static vidi_status cuda_copy_to_device(vidi_backend *be, void *dst, const void *host_src, size_t bytes,
                                       vidi_err *err) {
    if (bytes == 0) return VIDI_OK;
    vidi_status rc = copy_args("copy_to_device", dst, host_src, bytes, err);
    if (rc != VIDI_OK) return rc;
    vidi_cuda_ctx *c = cuda_ctx(be);
    cudaStream_t s = c->stream;
    if (bytes <= VIDI_CUDA_STAGE_BYTES && c->h_stage) {
        const int k = c->stage_next;
        char *slot = (char *)c->h_stage + (size_t)k * VIDI_CUDA_STAGE_BYTES;
        VIDI_TRY(vidi_cuda_check(cudaEventSynchronize(c->stage_ev[k]), "copy_to_device", err));
        memcpy(slot, host_src, bytes);
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, s), "copy_to_device",
                                 err));
        VIDI_TRY(vidi_cuda_check(cudaEventRecord(c->stage_ev[k], s), "copy_to_device", err));
        c->stage_next = (k + 1) % VIDI_CUDA_STAGE_SLOTS;
        return VIDI_OK;
    }
    rc = vidi_cuda_check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s), "copy_to_device", err);
    if (rc != VIDI_OK) return rc;
    return cuda_wait(be, "copy_to_device", err);
fail:
    return rc;
}

// upload_convert: the source is converted by the host's thread pool
// straight into one of two pinned slots while the other slot's copy runs.
typedef struct upconv_job {
    const char *src;
    vidi_dtype sdt, ddt;
    char *dst;
} upconv_job;

static void upconv_task(void *ctx, int64_t i0, int64_t i1) {
    const upconv_job *j = (const upconv_job *)ctx;
    const size_t ss = vidi_dtype_size(j->sdt), ds = vidi_dtype_size(j->ddt);
    if (j->sdt == j->ddt) {
        memcpy(j->dst + (size_t)i0 * ds, j->src + (size_t)i0 * ss, (size_t)(i1 - i0) * ds);
        return;
    }
    float tmp[1024];
    for (int64_t i = i0; i < i1; i += 1024) {
        const size_t m = (size_t)(i1 - i < 1024 ? i1 - i : 1024);
        const float *f = (const float *)(j->src + (size_t)i * ss);
        if (j->sdt != VIDI_DTYPE_F32) {
            vidi_convert_to_f32(j->sdt, j->src + (size_t)i * ss, tmp, m);
            f = tmp;
        }
        vidi_convert_from_f32(j->ddt, f, j->dst + (size_t)i * ds, m);
    }
}

static int float_dtype(vidi_dtype dt) {
    return dt == VIDI_DTYPE_F32 || dt == VIDI_DTYPE_BF16 || dt == VIDI_DTYPE_F16;
}

static vidi_status cuda_upload_convert(vidi_backend *be, void *dst, vidi_dtype ddt, const void *src, vidi_dtype sdt,
                                       size_t n, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_cuda_ctx *c = cuda_ctx(be);
    if (!float_dtype(ddt) || !float_dtype(sdt))
        return vidi_err_set(err, VIDI_ERR_INVALID, "upload_convert: %s to %s (float dtypes only)",
                            vidi_dtype_name(sdt), vidi_dtype_name(ddt));
    if (n == 0) return VIDI_OK;
    if (!dst || !src) return vidi_err_set(err, VIDI_ERR_INVALID, "upload_convert: NULL pointer");
    for (int k = 0; k < 2; k++)
        if (!c->h_big[k]) {
            VIDI_TRY(vidi_cuda_check(cudaMallocHost(&c->h_big[k], VIDI_CUDA_BIG_STAGE_BYTES),
                                     "upload_convert: pinned staging", err));
            VIDI_TRY(vidi_cuda_check(cudaEventCreateWithFlags(&c->big_ev[k], cudaEventDisableTiming),
                                     "upload_convert: staging event", err));
        }
    {
        const size_t ds = vidi_dtype_size(ddt), ss = vidi_dtype_size(sdt);
        const size_t chunk = VIDI_CUDA_BIG_STAGE_BYTES / ds;
        for (size_t i = 0; i < n; i += chunk) {
            const size_t m = n - i < chunk ? n - i : chunk;
            const int k = c->big_next;
            VIDI_TRY(vidi_cuda_check(cudaEventSynchronize(c->big_ev[k]), "upload_convert", err));
            upconv_job job = {(const char *)src + i * ss, sdt, ddt, (char *)c->h_big[k]};
            vidi_pool_for(vidi_pool_default(), (int64_t)m, 1 << 16, upconv_task, &job);
            VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync((char *)dst + i * ds, c->h_big[k], m * ds,
                                                     cudaMemcpyHostToDevice, c->stream),
                                     "upload_convert", err));
            VIDI_TRY(vidi_cuda_check(cudaEventRecord(c->big_ev[k], c->stream), "upload_convert", err));
            c->big_next = 1 - k;
        }
    }
fail:
    return rc;
}

static vidi_status cuda_copy_to_host(vidi_backend *be, void *host_dst, const void *src, size_t bytes,
                                     vidi_err *err) {
    if (bytes == 0) return VIDI_OK;
    vidi_status rc = copy_args("copy_to_host", host_dst, src, bytes, err);
    if (rc != VIDI_OK) return rc;
    cudaStream_t s = cuda_ctx(be)->stream;
    rc = vidi_cuda_check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s), "copy_to_host", err);
    if (rc != VIDI_OK) return rc;
    return cuda_wait(be, "copy_to_host", err);
}

static vidi_status cuda_copy(vidi_backend *be, void *dst, const void *src, size_t bytes, vidi_err *err) {
    if (bytes == 0) return VIDI_OK;
    vidi_status rc = copy_args("copy", dst, src, bytes, err);
    if (rc != VIDI_OK) return rc;
    return vidi_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda_ctx(be)->stream), "copy",
                           err);
}

static vidi_status cuda_synchronize(vidi_backend *be, vidi_err *err) {
    return cuda_wait(be, "synchronize", err);
}

// Stream-ordered scratch for one op; freed with scratch_free on the stream.
static vidi_status scratch_alloc(vidi_backend *be, const char *op, size_t bytes, void **p, vidi_err *err) {
    cudaError_t e = cudaMallocAsync(p, bytes ? bytes : 1, cuda_ctx(be)->stream);
    if (e == cudaSuccess) return VIDI_OK;
    *p = NULL;
    cudaGetLastError();
    return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: cannot allocate %zu bytes of device scratch: %s", op, bytes,
                        cudaGetErrorString(e));
}

static void scratch_free(vidi_backend *be, void *p) {
    if (p) cudaFreeAsync(p, cuda_ctx(be)->stream);
}

static vidi_status launch_convert(vidi_backend *be, const char *op, const void *src, vidi_dtype sdt, void *dst,
                                  vidi_dtype ddt, int64_t n, vidi_err *err) {
    if (n <= 0) return VIDI_OK;
    k_convert<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(src, sdt, dst, ddt, n);
    return vidi_cuda_check_launch(op, err);
}

// ------------------------------------------------------------------------
// matmul through cuBLASLt. Row-major y[M,N] = x[M,K] · w[N,K]^T is, read
// column-major, y^T[N,M] = op_T(w as K×N) · (x^T as K×M): A = w with
// TRANSA = T, B = x, C = D = y with leading dimension N.

static cudaDataType lt_type(vidi_dtype dt) {
    return dt == VIDI_DTYPE_BF16 ? CUDA_R_16BF : dt == VIDI_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

// Largest power of two (<= 256) that divides the address.
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

// A cached plan: the descriptors and the algorithm the heuristic chose for
// one (M, N, K, types, pointer alignments). The heuristic does not see beta
// (bias or not), so one plan serves both.
struct lt_plan {
    int64_t M, N, K;
    vidi_dtype ab, cd;
    uint32_t al_a, al_b, al_d;
    int bias;       // 1: the BIAS epilogue (bias of D's type added before the one rounding)
    uint64_t used;  // LRU stamp; 0 = empty slot
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
};

static void lt_plan_clear(lt_plan *p) {
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof *p);
}

extern "C" void vidi_cuda_plans_free(vidi_cuda_ctx *c) {
    if (!c->lt_plans) return;
    for (int i = 0; i < VIDI_CUDA_LT_PLANS; i++) lt_plan_clear(&c->lt_plans[i]);
    free(c->lt_plans);
    c->lt_plans = NULL;
}

// Builds a plan into *p (cleared on failure).
static vidi_status lt_plan_build(vidi_cuda_ctx *c, lt_plan *p, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    cublasLtMatmulPreference_t pref = NULL;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cudaDataType tab = lt_type(p->ab), tcd = lt_type(p->cd);
    const int64_t M = p->M, N = p->N, K = p->K;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    memset(&heur, 0, sizeof heur);
    VIDI_TRY(lt_check(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                      "matmul: cublasLtMatmulDescCreate", err));
    VIDI_TRY(lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
                      "matmul: cublasLtMatmulDescSetAttribute(TRANSA)", err));
    VIDI_TRY(lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
                      "matmul: cublasLtMatmulDescSetAttribute(TRANSB)", err));
    if (p->bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        VIDI_TRY(lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
                          "matmul: cublasLtMatmulDescSetAttribute(EPILOGUE)", err));
    }
    VIDI_TRY(lt_check(cublasLtMatrixLayoutCreate(&p->la, tab, (uint64_t)K, (uint64_t)N, K), "matmul: layout of w",
                      err));
    VIDI_TRY(lt_check(cublasLtMatrixLayoutCreate(&p->lb, tab, (uint64_t)K, (uint64_t)M, K), "matmul: layout of x",
                      err));
    VIDI_TRY(lt_check(cublasLtMatrixLayoutCreate(&p->ld, tcd, (uint64_t)N, (uint64_t)M, N), "matmul: layout of y",
                      err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceCreate(&pref), "matmul: cublasLtMatmulPreferenceCreate", err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &c->lt_workspace_bytes, sizeof c->lt_workspace_bytes),
                      "matmul: workspace preference", err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &p->al_a,
                                                           sizeof p->al_a),
                      "matmul: alignment preference", err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &p->al_b,
                                                           sizeof p->al_b),
                      "matmul: alignment preference", err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &p->al_d,
                                                           sizeof p->al_d),
                      "matmul: alignment preference", err));
    VIDI_TRY(lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &p->al_d,
                                                           sizeof p->al_d),
                      "matmul: alignment preference", err));
    VIDI_TRY(lt_check(cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->ld, p->ld, pref, 1, &heur, &found),
                      "matmul: cublasLtMatmulAlgoGetHeuristic", err));
    VIDI_CHECK(found > 0, err, VIDI_ERR_UNSUPPORTED,
               "matmul: cuBLASLt has no algorithm for M=%lld N=%lld K=%lld (%s x %s -> %s)", (long long)M,
               (long long)N, (long long)K, vidi_dtype_name(p->ab), vidi_dtype_name(p->ab), vidi_dtype_name(p->cd));
    p->algo = heur.algo;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (rc != VIDI_OK) lt_plan_clear(p);
    return rc;
}

// The plan for this product: from the cache, else built into the least
// recently used slot.
static vidi_status lt_plan_get(vidi_cuda_ctx *c, vidi_dtype ab, vidi_dtype cd, int64_t M, int64_t N, int64_t K,
                               uint32_t al_a, uint32_t al_b, uint32_t al_d, int bias, const lt_plan **out,
                               vidi_err *err) {
    lt_plan *victim = NULL;
    if (!c->lt_plans) {
        c->lt_plans = (lt_plan *)calloc(VIDI_CUDA_LT_PLANS, sizeof(lt_plan));
        if (!c->lt_plans) return vidi_err_set(err, VIDI_ERR_NOMEM, "matmul: out of memory for the plan cache");
    }
    for (int i = 0; i < VIDI_CUDA_LT_PLANS; i++) {
        lt_plan *p = &c->lt_plans[i];
        if (p->used && p->M == M && p->N == N && p->K == K && p->ab == ab && p->cd == cd && p->al_a == al_a &&
            p->al_b == al_b && p->al_d == al_d && p->bias == bias) {
            p->used = ++c->lt_clock;
            *out = p;
            return VIDI_OK;
        }
        if (!victim || p->used < victim->used) victim = p;
    }
    lt_plan_clear(victim);
    victim->M = M, victim->N = N, victim->K = K;
    victim->ab = ab, victim->cd = cd;
    victim->al_a = al_a, victim->al_b = al_b, victim->al_d = al_d;
    victim->bias = bias;
    vidi_status rc = lt_plan_build(c, victim, err);
    if (rc != VIDI_OK) return rc;
    victim->used = ++c->lt_clock;
    *out = victim;
    return VIDI_OK;
}

// Exact mode (vidi_backend_cuda_set_exact): one warp per output element,
// the lanes' strided partial sums over K in order, then a fixed butterfly.
// Nothing depends on M, so a row's result is the same in a product of any
// number of rows (batch invariance); slow next to cuBLASLt.
static __device__ __forceinline__ float ex_ld(const float *p) { return *p; }
static __device__ __forceinline__ float ex_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ float ex_ld(const __half *p) { return __half2float(*p); }
static __device__ __forceinline__ void ex_st(float *p, float v) { *p = v; }
static __device__ __forceinline__ void ex_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
static __device__ __forceinline__ void ex_st(__half *p, float v) { *p = __float2half(v); }

template <typename TA, typename TD>
__global__ void k_matmul_exact(const TA *__restrict__ w, const TA *__restrict__ x, TD *d, const TD *__restrict__ bias,
                               int64_t M, int64_t N, int64_t K, float beta) {
    const int64_t o = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (o >= M * N) return;
    const int64_t m = o / N, n = o % N;
    const int lane = threadIdx.x & 31;
    const TA *xr = x + m * K, *wr = w + n * K;
    float acc = 0.0f;
    for (int64_t k = lane; k < K; k += 32) acc = fmaf(ex_ld(xr + k), ex_ld(wr + k), acc);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
        float v = acc;
        if (beta != 0.0f) v = fmaf(beta, ex_ld(d + o), v);
        if (bias) v += ex_ld(bias + n);
        ex_st(d + o, v);
    }
}

template <typename TA>
static vidi_status ex_launch(cudaStream_t s, vidi_dtype cd, const void *w, const void *x, void *d, const void *bias,
                             int64_t M, int64_t N, int64_t K, float beta, vidi_err *err) {
    const int64_t outs = M * N, per = 256 / 32;
    const unsigned blocks = (unsigned)((outs + per - 1) / per);
    if (cd == VIDI_DTYPE_F32)
        k_matmul_exact<TA, float><<<blocks, 256, 0, s>>>((const TA *)w, (const TA *)x, (float *)d, (const float *)bias,
                                                         M, N, K, beta);
    else if (cd == VIDI_DTYPE_BF16)
        k_matmul_exact<TA, __nv_bfloat16><<<blocks, 256, 0, s>>>((const TA *)w, (const TA *)x, (__nv_bfloat16 *)d,
                                                                 (const __nv_bfloat16 *)bias, M, N, K, beta);
    else
        k_matmul_exact<TA, __half><<<blocks, 256, 0, s>>>((const TA *)w, (const TA *)x, (__half *)d,
                                                          (const __half *)bias, M, N, K, beta);
    return vidi_cuda_check_launch("matmul (exact mode)", err);
}

// D = w·x^T + beta·D with A/B of type ab, D of type cd (column-major view);
// with bias (of type cd, [N]) the BIAS epilogue adds it per row of y.
static vidi_status lt_matmul(vidi_backend *be, vidi_dtype ab, vidi_dtype cd, const void *w, const void *x, void *d,
                             int64_t M, int64_t N, int64_t K, float beta, const void *bias, vidi_err *err) {
    vidi_cuda_ctx *c = cuda_ctx(be);
    if (c->exact) {
        if (M * N > (int64_t)UINT_MAX * 8)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "matmul (exact mode): %lld outputs", (long long)(M * N));
        if (ab == VIDI_DTYPE_BF16) return ex_launch<__nv_bfloat16>(c->stream, cd, w, x, d, bias, M, N, K, beta, err);
        if (ab == VIDI_DTYPE_F16) return ex_launch<__half>(c->stream, cd, w, x, d, bias, M, N, K, beta, err);
        return ex_launch<float>(c->stream, cd, w, x, d, bias, M, N, K, beta, err);
    }
    const float alpha = 1.0f;
    const lt_plan *p = NULL;
    vidi_status rc = lt_plan_get(c, ab, cd, M, N, K, ptr_align(w), ptr_align(x), ptr_align(d), bias != NULL, &p, err);
    if (rc != VIDI_OK) return rc;
    if (bias) {
        rc = lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
                      "matmul: cublasLtMatmulDescSetAttribute(BIAS_POINTER)", err);
        if (rc != VIDI_OK) return rc;
    }
    return lt_check(cublasLtMatmul(c->lt, p->op, &alpha, w, p->la, x, p->lb, &beta, d, p->ld, d, p->ld, &p->algo,
                                   c->lt_workspace, c->lt_workspace_bytes, c->stream),
                    "matmul: cublasLtMatmul", err);
}

// Operand types: x and w of one dtype go to cuBLASLt as they are; mixed
// ones are both widened to f32 in scratch. The product is written straight
// into y when cuBLASLt has that output type for the inputs (bf16/f16 into
// their own type or f32, f32 into f32), else into f32 scratch and converted.
// The bias (or nothing) is stored into the output first and added with
// beta = 1, as the CPU twin does, so there is one rounding of the sum.
// With acc the product is added to y (beta = 1, no bias): y is the input of
// the sum, widened to f32 scratch first when y is not written directly.
static vidi_status cuda_matmul_impl(vidi_backend *be, const char *op, const vidi_tensor *x, const vidi_tensor *w,
                                    const vidi_tensor *bias, vidi_tensor *y, int acc, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    void *xs = NULL, *ws = NULL, *ds = NULL;
    VIDI_TRY(vidi_check_matmul(op, BACKEND_ACTS, x, w, bias, y, err));
    {
        const int64_t M = vidi_tensor_rows(x), K = vidi_tensor_cols(x), N = w->shape[0];
        if (M == 0 || N == 0) goto fail;

        cudaStream_t s = cuda_ctx(be)->stream;
        const void *bd = bias ? bias->data : NULL;
        const int bdt = bias ? (int)bias->dtype : 0;
        if (K == 0) {  // an empty sum: y = bias or 0 (acc: y += bias or nothing)
            if (acc && bias)
                k_add_rows<<<ew_blocks(be, M * N), CUDA_EW_THREADS, 0, s>>>(y->data, y->dtype, bd, bdt, M, N);
            else if (!acc)
                k_fill_rows<<<ew_blocks(be, M * N), CUDA_EW_THREADS, 0, s>>>(y->data, y->dtype, bd, bdt, M, N);
            VIDI_TRY(vidi_cuda_check_launch("matmul: fill", err));
            goto fail;
        }
        vidi_dtype ab = x->dtype;
        const void *xp = x->data, *wp = w->data;
        if (x->dtype != w->dtype) {
            ab = VIDI_DTYPE_F32;
            if (x->dtype != VIDI_DTYPE_F32) {
                VIDI_TRY(scratch_alloc(be, op, (size_t)(M * K) * sizeof(float), &xs, err));
                VIDI_TRY(launch_convert(be, "matmul: widen x", x->data, x->dtype, xs, VIDI_DTYPE_F32, M * K, err));
                xp = xs;
            }
            if (w->dtype != VIDI_DTYPE_F32) {
                VIDI_TRY(scratch_alloc(be, op, (size_t)(N * K) * sizeof(float), &ws, err));
                VIDI_TRY(launch_convert(be, "matmul: widen w", w->data, w->dtype, ws, VIDI_DTYPE_F32, N * K, err));
                wp = ws;
            }
        }
        const int direct = y->dtype == VIDI_DTYPE_F32 || y->dtype == ab;
        vidi_dtype cd = direct ? y->dtype : VIDI_DTYPE_F32;
        void *dp = y->data;
        if (!direct) {
            VIDI_TRY(scratch_alloc(be, op, (size_t)(M * N) * sizeof(float), &ds, err));
            dp = ds;
            if (acc) VIDI_TRY(launch_convert(be, "matmul: widen y", y->data, y->dtype, ds, VIDI_DTYPE_F32, M * N, err));
        }
        if (acc) {
            // y + bias + x·w^T: the bias through the BIAS epilogue where it
            // fits (as for matmul), else added to y by a pass first.
            int fused_bias = 0;
            if (bias && direct && cd == ab && cd != VIDI_DTYPE_F32 && bias->dtype == cd && ptr_align(bd) >= 16) {
                vidi_err e2;
                memset(&e2, 0, sizeof e2);
                fused_bias = lt_matmul(be, ab, cd, wp, xp, dp, M, N, K, 1.0f, bd, &e2) == VIDI_OK;
            }
            if (!fused_bias) {
                if (bias) {
                    k_add_rows<<<ew_blocks(be, M * N), CUDA_EW_THREADS, 0, s>>>(dp, cd, bd, bdt, M, N);
                    VIDI_TRY(vidi_cuda_check_launch("matmul: bias", err));
                }
                VIDI_TRY(lt_matmul(be, ab, cd, wp, xp, dp, M, N, K, 1.0f, NULL, err));
            }
            if (!direct)
                VIDI_TRY(launch_convert(be, "matmul: narrow y", ds, VIDI_DTYPE_F32, y->data, y->dtype, M * N, err));
            goto fail;
        }
        // A bf16 / f16 bias of the output's type goes in through the BIAS
        // epilogue (no separate pass; the same one rounding of the sum);
        // should cuBLASLt refuse it, the bias is stored first as below.
        int fused = 0;
        if (bias && direct && cd == ab && cd != VIDI_DTYPE_F32 && bias->dtype == cd && ptr_align(bd) >= 16) {
            vidi_err e2;
            memset(&e2, 0, sizeof e2);
            fused = lt_matmul(be, ab, cd, wp, xp, dp, M, N, K, 0.0f, bd, &e2) == VIDI_OK;
        }
        if (!fused) {
            if (bias) {
                k_fill_rows<<<ew_blocks(be, M * N), CUDA_EW_THREADS, 0, s>>>(dp, cd, bd, bdt, M, N);
                VIDI_TRY(vidi_cuda_check_launch("matmul: bias", err));
            }
            VIDI_TRY(lt_matmul(be, ab, cd, wp, xp, dp, M, N, K, bias ? 1.0f : 0.0f, NULL, err));
        }
        if (!direct) VIDI_TRY(launch_convert(be, "matmul: narrow y", ds, VIDI_DTYPE_F32, y->data, y->dtype, M * N, err));
    }
fail:
    scratch_free(be, xs);
    scratch_free(be, ws);
    scratch_free(be, ds);
    return rc;
}

static vidi_status cuda_matmul(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w, const vidi_tensor *bias,
                               vidi_tensor *y, vidi_err *err) {
    return cuda_matmul_impl(be, "matmul", x, w, bias, y, 0, err);
}

static vidi_status cuda_matmul_acc(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                                   const vidi_tensor *bias, vidi_tensor *y, vidi_err *err) {
    return cuda_matmul_impl(be, "matmul_acc", x, w, bias, y, 1, err);
}

// ------------------------------------------------------------------------
// Elementwise ops.

static vidi_status cuda_add(vidi_backend *be, const vidi_tensor *a, const vidi_tensor *b, vidi_tensor *y,
                            vidi_err *err) {
    const char *op = "add";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_binary(op, BACKEND_ACTS, "a", a, "b", b, y, err));
    {
        const int64_t n = vidi_tensor_numel(y);
        if (n > 0) {
            if (a->dtype == VIDI_DTYPE_BF16 && b->dtype == VIDI_DTYPE_BF16 && y->dtype == VIDI_DTYPE_BF16 &&
                vec8_ok(n, a->data, b->data, y->data))
                k_add8<<<ew_blocks(be, n / 8), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(
                    (const uint4 *)a->data, (const uint4 *)b->data, (uint4 *)y->data, n / 8);
            else
                k_add<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(a->data, a->dtype, b->data,
                                                                                      b->dtype, y->data, y->dtype, n);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
        }
    }
fail:
    return rc;
}

// The 8-wide bf16 act / act_mul kernel for this activation.
template <bool UP>
static void launch_act8(vidi_backend *be, vidi_act kind, const void *x, const void *up, void *y, int64_t n8) {
    const unsigned g = ew_blocks(be, n8);
    cudaStream_t s = cuda_ctx(be)->stream;
    const uint4 *xp = (const uint4 *)x, *upp = (const uint4 *)up;
    uint4 *yp = (uint4 *)y;
    switch (kind) {
    case VIDI_ACT_GELU_ERF: k_act8<VIDI_ACT_GELU_ERF, UP><<<g, CUDA_EW_THREADS, 0, s>>>(xp, upp, yp, n8); break;
    case VIDI_ACT_GELU_TANH: k_act8<VIDI_ACT_GELU_TANH, UP><<<g, CUDA_EW_THREADS, 0, s>>>(xp, upp, yp, n8); break;
    case VIDI_ACT_QUICK_GELU: k_act8<VIDI_ACT_QUICK_GELU, UP><<<g, CUDA_EW_THREADS, 0, s>>>(xp, upp, yp, n8); break;
    case VIDI_ACT_SILU: k_act8<VIDI_ACT_SILU, UP><<<g, CUDA_EW_THREADS, 0, s>>>(xp, upp, yp, n8); break;
    }
}

static vidi_status cuda_act(vidi_backend *be, vidi_act kind, const vidi_tensor *x, vidi_tensor *y, vidi_err *err) {
    const char *op = "act";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act_kind(op, kind, err));
    VIDI_TRY(vidi_check_unary(op, BACKEND_ACTS, x, y, err));
    {
        const int64_t n = vidi_tensor_numel(y);
        if (n > 0) {
            if (x->dtype == VIDI_DTYPE_BF16 && y->dtype == VIDI_DTYPE_BF16 && vec8_ok(n, x->data, y->data))
                launch_act8<false>(be, kind, x->data, NULL, y->data, n / 8);
            else
                k_act<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(
                    (int)kind, x->data, x->dtype, NULL, 0, y->data, y->dtype, n);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
        }
    }
fail:
    return rc;
}

static vidi_status cuda_act_mul(vidi_backend *be, vidi_act kind, const vidi_tensor *gate, const vidi_tensor *up,
                                vidi_tensor *y, vidi_err *err) {
    const char *op = "act_mul";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_act_kind(op, kind, err));
    VIDI_TRY(vidi_check_binary(op, BACKEND_ACTS, "gate", gate, "up", up, y, err));
    {
        const int64_t n = vidi_tensor_numel(y);
        if (n > 0) {
            if (gate->dtype == VIDI_DTYPE_BF16 && up->dtype == VIDI_DTYPE_BF16 && y->dtype == VIDI_DTYPE_BF16 &&
                vec8_ok(n, gate->data, up->data, y->data))
                launch_act8<true>(be, kind, gate->data, up->data, y->data, n / 8);
            else
                k_act<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(
                    (int)kind, gate->data, gate->dtype, up->data, up->dtype, y->data, y->dtype, n);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
        }
    }
fail:
    return rc;
}

// ------------------------------------------------------------------------
// Normalisation and softmax: one block per row.

// Shared checks of rms_norm / layer_norm: x, y [.., D]; w (and b) [D].
// Threads and vectors per thread of the 8-wide row kernels for cols
// values; 0 when cols is too wide (more than 4 vectors a thread).
static int norm8_plan(int64_t cols, unsigned *threads) {
    const int64_t c8 = cols / 8;
    *threads = row_threads(c8);
    const int64_t nv = (c8 + *threads - 1) / *threads;
    return nv <= 1 ? 1 : nv <= 2 ? 2 : nv <= 4 ? 4 : 0;
}

static vidi_status cuda_rms_norm(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w, float eps,
                                 vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_norm("rms_norm", BACKEND_ACTS, x, w, NULL, eps, y, err));
    if (vidi_tensor_cols(x) > 0 && vidi_tensor_rows(x) > 0) {
        unsigned th = 0;
        const int nv = norm8_plan(vidi_tensor_cols(x), &th);
        const int64_t rows = vidi_tensor_rows(x);
        const int c8 = (int)(vidi_tensor_cols(x) / 8);
        cudaStream_t s = cuda_ctx(be)->stream;
        if (x->dtype == VIDI_DTYPE_BF16 && w->dtype == VIDI_DTYPE_BF16 && y->dtype == VIDI_DTYPE_BF16 && nv &&
            vec8_ok(vidi_tensor_cols(x), x->data, w->data, y->data)) {
            const uint4 *xp = (const uint4 *)x->data, *wp = (const uint4 *)w->data;
            uint4 *yp = (uint4 *)y->data;
            if (nv == 1) k_rms_norm8<1><<<row_blocks(rows), th, 0, s>>>(xp, wp, yp, rows, c8, eps);
            else if (nv == 2) k_rms_norm8<2><<<row_blocks(rows), th, 0, s>>>(xp, wp, yp, rows, c8, eps);
            else k_rms_norm8<4><<<row_blocks(rows), th, 0, s>>>(xp, wp, yp, rows, c8, eps);
        } else {
            k_rms_norm<<<row_blocks(rows), row_threads(vidi_tensor_cols(x)), 0, s>>>(x->data, x->dtype, w->data, w->dtype,
                                                                           y->data, y->dtype, rows, vidi_tensor_cols(x), eps);
        }
        VIDI_TRY(vidi_cuda_check_launch("rms_norm", err));
    }
fail:
    return rc;
}

static vidi_status cuda_layer_norm(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                                   const vidi_tensor *b, float eps, vidi_tensor *y, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_norm("layer_norm", BACKEND_ACTS, x, w, b, eps, y, err));
    if (vidi_tensor_cols(x) > 0 && vidi_tensor_rows(x) > 0) {
        unsigned th = 0;
        const int nv = norm8_plan(vidi_tensor_cols(x), &th);
        const int64_t rows = vidi_tensor_rows(x);
        const int c8 = (int)(vidi_tensor_cols(x) / 8);
        cudaStream_t s = cuda_ctx(be)->stream;
        if (x->dtype == VIDI_DTYPE_BF16 && w->dtype == VIDI_DTYPE_BF16 && y->dtype == VIDI_DTYPE_BF16 &&
            (!b || b->dtype == VIDI_DTYPE_BF16) && nv &&
            vec8_ok(vidi_tensor_cols(x), x->data, w->data, y->data, b ? b->data : NULL)) {
            const uint4 *xp = (const uint4 *)x->data, *wp = (const uint4 *)w->data;
            const uint4 *bp = b ? (const uint4 *)b->data : NULL;
            uint4 *yp = (uint4 *)y->data;
            if (nv == 1) k_layer_norm8<1><<<row_blocks(rows), th, 0, s>>>(xp, wp, bp, yp, rows, c8, eps);
            else if (nv == 2) k_layer_norm8<2><<<row_blocks(rows), th, 0, s>>>(xp, wp, bp, yp, rows, c8, eps);
            else k_layer_norm8<4><<<row_blocks(rows), th, 0, s>>>(xp, wp, bp, yp, rows, c8, eps);
        } else {
            k_layer_norm<<<row_blocks(rows), row_threads(vidi_tensor_cols(x)), 0, s>>>(
                x->data, x->dtype, w->data, w->dtype, b ? b->data : NULL, b ? (int)b->dtype : 0, y->data, y->dtype,
                rows, vidi_tensor_cols(x), eps);
        }
        VIDI_TRY(vidi_cuda_check_launch("layer_norm", err));
    }
fail:
    return rc;
}

static vidi_status cuda_softmax(vidi_backend *be, const vidi_tensor *x, vidi_tensor *y, vidi_err *err) {
    const char *op = "softmax";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_unary(op, BACKEND_ACTS, x, y, err));
    if (vidi_tensor_cols(x) > 0 && vidi_tensor_rows(x) > 0) {
        k_softmax<<<row_blocks(vidi_tensor_rows(x)), row_threads(vidi_tensor_cols(x)), 0, cuda_ctx(be)->stream>>>(
            x->data, x->dtype, y->data, y->dtype, vidi_tensor_rows(x), vidi_tensor_cols(x));
        VIDI_TRY(vidi_cuda_check_launch(op, err));
    }
fail:
    return rc;
}

// ------------------------------------------------------------------------
// Rotary embedding.

static vidi_status cuda_rope(vidi_backend *be, vidi_tensor *x, const vidi_tensor *pos, const vidi_rope_spec *spec,
                             vidi_err *err) {
    const char *op = "rope";
    vidi_status rc = VIDI_OK;
    rope_tables tab;
    VIDI_TRY(check_act(op, "x", x, err));
    VIDI_TRY(vidi_check_dtype(op, "pos", pos, VIDI_DTYPE_I32, err));
    VIDI_CHECK(spec && spec->pair_axis && spec->pair_inv_freq, err, VIDI_ERR_INVALID,
               "rope: spec and its pair tables must be given");
    VIDI_CHECK(x->ndim == 3, err, VIDI_ERR_INVALID, "rope: x %s must be [T, H, D]", vidi_shape_of(x).s);
    VIDI_CHECK(spec->head_dim > 0 && spec->head_dim % 2 == 0 && x->shape[2] == spec->head_dim, err,
               VIDI_ERR_INVALID, "rope: spec head_dim %d must be even and match x %s", spec->head_dim, vidi_shape_of(x).s);
    VIDI_CHECK(spec->head_dim / 2 <= CUDA_ROPE_MAX_PAIRS, err, VIDI_ERR_UNSUPPORTED,
               "rope: head_dim %d is above the CUDA backend's %d", spec->head_dim, 2 * CUDA_ROPE_MAX_PAIRS);
    VIDI_CHECK(spec->n_axes >= 1 && spec->n_axes <= 3, err, VIDI_ERR_INVALID, "rope: n_axes %d must be 1..3",
               spec->n_axes);
    {
        const int64_t T = x->shape[0];
        VIDI_CHECK((pos->ndim == 2 && pos->shape[0] == T && pos->shape[1] == spec->n_axes) ||
                       (pos->ndim == 1 && spec->n_axes == 1 && pos->shape[0] == T),
                   err, VIDI_ERR_INVALID, "rope: pos %s must be [%lld, %d] for x %s", vidi_shape_of(pos).s, (long long)T,
                   spec->n_axes, vidi_shape_of(x).s);
        memset(&tab, 0, sizeof tab);
        const int half = spec->head_dim / 2;
        for (int i = 0; i < half; i++) {
            VIDI_CHECK(spec->pair_axis[i] >= 0 && spec->pair_axis[i] < spec->n_axes, err, VIDI_ERR_INVALID,
                       "rope: pair_axis[%d] = %d is not an axis of %d", i, (int)spec->pair_axis[i], spec->n_axes);
            tab.axis[i] = (int8_t)spec->pair_axis[i];
            tab.inv_freq[i] = spec->pair_inv_freq[i];
        }
        VIDI_TRY(vidi_check_alias(op, "x", x, "pos", pos, 0, err));
        const int64_t n = T * x->shape[1] * half;
        if (n > 0) {
            if (x->dtype == VIDI_DTYPE_BF16 && half % 8 == 0 && vec8_ok(8, x->data))
                k_rope8<<<ew_blocks(be, n / 8), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(
                    (__nv_bfloat16 *)x->data, (const int32_t *)pos->data, spec->n_axes, T, x->shape[1], half, tab);
            else
                k_rope<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, cuda_ctx(be)->stream>>>(
                    x->data, x->dtype, (const int32_t *)pos->data, spec->n_axes, T, x->shape[1], half, tab);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
        }
    }
fail:
    return rc;
}

static vidi_status queue_row_id_check(vidi_backend *be, const char *op, const vidi_tensor *ids, int64_t limit,
                                      vidi_err *err);

static vidi_status cuda_qkv_rope_store(vidi_backend *be, const vidi_tensor *qkv, const vidi_tensor *pos,
                                       const vidi_rope_spec *spec, vidi_tensor *q_out, const vidi_tensor *slots,
                                       vidi_tensor *k_cache, vidi_tensor *v_cache, vidi_err *err) {
    const char *op = "qkv_rope_store";
    vidi_status rc = VIDI_OK;
    int64_t hq = 0, hkv = 0;
    rope_tables tab;
    VIDI_TRY(vidi_check_qkv_rope_store(op, BACKEND_ACTS, qkv, pos, spec, q_out, slots, k_cache, v_cache, &hq, &hkv,
                                       err));
    VIDI_CHECK(spec->head_dim / 2 <= CUDA_ROPE_MAX_PAIRS, err, VIDI_ERR_UNSUPPORTED,
               "%s: head_dim %d is above the CUDA backend's %d", op, spec->head_dim, 2 * CUDA_ROPE_MAX_PAIRS);
    VIDI_CHECK(qkv->dtype == q_out->dtype && qkv->dtype == k_cache->dtype && qkv->dtype == v_cache->dtype, err,
               VIDI_ERR_INVALID, "%s: qkv, q_out and the caches must share one dtype", op);
    {
        const int64_t T = qkv->shape[0];
        if (T == 0) goto fail;
        memset(&tab, 0, sizeof tab);
        const int half = spec->head_dim / 2;
        for (int i = 0; i < half; i++) {
            tab.axis[i] = (int8_t)spec->pair_axis[i];
            tab.inv_freq[i] = spec->pair_inv_freq[i];
        }
        vidi_cuda_ctx *c = cuda_ctx(be);
        const int self = T <= CUDA_ID_SELF_MAX;
        if (!self) VIDI_TRY(queue_row_id_check(be, op, slots, k_cache->shape[0], err));
        const dim3 grid((unsigned)(T < 65535 ? T : 65535), (unsigned)(hq + 2 * hkv));
        const unsigned threads = (unsigned)(half < 32 ? 32 : half > 128 ? 128 : half);
        k_qkv_rope_store<<<grid, threads, 0, c->stream>>>(qkv->data, qkv->dtype, (const int32_t *)pos->data,
                                                         spec->n_axes, (const int32_t *)slots->data, T,
                                                         k_cache->shape[0], (int)hq, (int)hkv, half, tab, q_out->data,
                                                         k_cache->data, v_cache->data, c->d_flag, self);
        VIDI_TRY(vidi_cuda_check_launch(op, err));
        c->id_pending = 1;
    }
fail:
    return rc;
}

// ------------------------------------------------------------------------
// Gather / scatter of rows. The ids are checked on the device without a
// wait (see ids_rejected): an op with a bad id writes nothing, and the error
// is returned by the next synchronize / copy_to_host (or waiting
// copy_to_device), naming the op, the position and the id, as the CPU twin's
// message does. Up to CUDA_ID_SELF_MAX ids the gather kernel checks them
// itself; more are checked by k_check_ids into flag[0] first.

// Queues the separate check of flag[0] (large id counts, scatter).
static vidi_status queue_row_id_check(vidi_backend *be, const char *op, const vidi_tensor *ids, int64_t limit,
                                      vidi_err *err) {
    vidi_cuda_ctx *c = cuda_ctx(be);
    vidi_status rc = VIDI_OK;
    const int64_t n = vidi_tensor_numel(ids);
    VIDI_TRY(vidi_cuda_check(cudaMemsetAsync(c->d_flag, 0xff, sizeof *c->d_flag, c->stream), op, err));  // none
    if (n > 0) {
        k_check_ids<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, c->stream>>>((const int32_t *)ids->data, n, limit,
                                                                          c->d_flag);
        VIDI_TRY(vidi_cuda_check_launch(op, err));
    }
fail:
    return rc;
}

static vidi_status cuda_gather_rows(vidi_backend *be, const vidi_tensor *table, const vidi_tensor *ids,
                                    vidi_tensor *out, vidi_err *err) {
    const char *op = "gather_rows";
    vidi_status rc = VIDI_OK;
    VIDI_TRY(vidi_check_gather_rows(op, BACKEND_ACTS, table, ids, out, err));
    {
        const int64_t n = vidi_tensor_numel(ids), cols = table->shape[1];
        if (n > 0) {  // checked even with no columns to copy
            vidi_cuda_ctx *c = cuda_ctx(be);
            const int self = n <= CUDA_ID_SELF_MAX;
            if (!self) VIDI_TRY(queue_row_id_check(be, op, ids, table->shape[0], err));
            k_gather<<<row_blocks(n), row_threads(cols), 0, c->stream>>>(table->data, table->dtype,
                                                                        (const int32_t *)ids->data, out->data,
                                                                        out->dtype, n, cols, table->shape[0],
                                                                        c->d_flag, self);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
            c->id_pending = 1;
        }
    }
fail:
    return rc;
}

// With a repeated index the last row wins, as in the CPU twin: a first
// kernel records the winning row of each destination row.
static vidi_status cuda_scatter_rows(vidi_backend *be, const vidi_tensor *src, const vidi_tensor *idx,
                                     vidi_tensor *dst, vidi_err *err) {
    const char *op = "scatter_rows";
    vidi_status rc = VIDI_OK;
    void *winner = NULL;
    VIDI_TRY(vidi_check_scatter_rows(op, BACKEND_ACTS, src, idx, dst, err));
    {
        const int64_t n = vidi_tensor_numel(idx), cols = vidi_tensor_cols(dst), rows = vidi_tensor_rows(dst);
        cudaStream_t s = cuda_ctx(be)->stream;
        VIDI_CHECK(n <= INT_MAX, err, VIDI_ERR_UNSUPPORTED, "scatter_rows: %lld rows exceed the int range",
                   (long long)n);
        if (n == 0) goto fail;
        VIDI_TRY(queue_row_id_check(be, op, idx, rows, err));
        if (n > 1) {
            VIDI_TRY(scratch_alloc(be, op, (size_t)rows * sizeof(int), &winner, err));
            VIDI_TRY(vidi_cuda_check(cudaMemsetAsync(winner, 0xff, (size_t)rows * sizeof(int), s), op, err));  // -1
            k_scatter_winner<<<ew_blocks(be, n), CUDA_EW_THREADS, 0, s>>>((const int32_t *)idx->data, n,
                                                                          (int *)winner, cuda_ctx(be)->d_flag);
            VIDI_TRY(vidi_cuda_check_launch(op, err));
        }
        k_scatter<<<row_blocks(n), row_threads(cols), 0, s>>>(src->data, src->dtype, (const int32_t *)idx->data,
                                                              (const int *)winner, dst->data, dst->dtype, n, cols,
                                                              rows, cuda_ctx(be)->d_flag);
        VIDI_TRY(vidi_cuda_check_launch(op, err));
        cuda_ctx(be)->id_pending = 1;
    }
fail:
    scratch_free(be, winner);
    return rc;
}

// ------------------------------------------------------------------------
// The table.

static void cuda_destroy(vidi_backend *be) {
    if (!be) return;
    vidi_cuda_ctx *c = cuda_ctx(be);
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        vidi_cuda_plans_free(c);
        if (c->lt_workspace) cudaFree(c->lt_workspace);
        if (c->d_flag) cudaFree(c->d_flag);
        if (c->h_flag) cudaFreeHost(c->h_flag);
        for (int i = 0; i < VIDI_CUDA_STAGE_SLOTS; i++)
            if (c->stage_ev[i]) cudaEventDestroy(c->stage_ev[i]);
        if (c->h_stage) cudaFreeHost(c->h_stage);
        for (int k = 0; k < 2; k++) {
            if (c->h_big[k]) cudaFreeHost(c->h_big[k]);
            if (c->big_ev[k]) cudaEventDestroy(c->big_ev[k]);
        }
        if (c->lt) cublasLtDestroy(c->lt);
        if (c->stream) cudaStreamDestroy(c->stream);
        cudaGetLastError();
        free(c);
    }
    free(be);
}

// ---- CUDA IPC ----
// Plain cudaMalloc memory: cudaIpcGetMemHandle does not take stream-ordered
// (cudaMallocAsync) allocations.
static void *cuda_ipc_alloc(vidi_backend *be, size_t bytes, uint8_t handle[64], vidi_err *err) {
    static_assert(sizeof(cudaIpcMemHandle_t) == 64, "cudaIpcMemHandle_t is 64 bytes");
    cudaSetDevice(cuda_ctx(be)->device);
    void *p = NULL;
    if (vidi_cuda_check(cudaMalloc(&p, bytes ? bytes : 1), "ipc_alloc", err) != VIDI_OK) return NULL;
    cudaIpcMemHandle_t h;
    if (vidi_cuda_check(cudaIpcGetMemHandle(&h, p), "ipc_alloc: cudaIpcGetMemHandle", err) != VIDI_OK) {
        cudaFree(p);
        return NULL;
    }
    memcpy(handle, &h, sizeof h);
    return p;
}

static void cuda_ipc_free(vidi_backend *be, void *p) {
    if (!p) return;
    cudaStreamSynchronize(cuda_ctx(be)->stream);
    cudaFree(p);
}

// cuMemGetAddressRange, found through the runtime (no link to libcuda).
typedef int (*mem_range_fn)(unsigned long long *base, size_t *size, unsigned long long ptr);

static vidi_status cuda_ipc_open(vidi_backend *be, const uint8_t handle[64], void **base, size_t *bytes,
                                 vidi_err *err) {
    static mem_range_fn range = NULL;
    cudaSetDevice(cuda_ctx(be)->device);
    cudaIpcMemHandle_t h;
    memcpy(&h, handle, sizeof h);
    *base = NULL;
    *bytes = 0;
    if (!range) {
        void *fn = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess || !fn) {
            cudaGetLastError();
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "ipc_open: the driver has no cuMemGetAddressRange");
        }
        range = (mem_range_fn)fn;
    }
    vidi_status rc = vidi_cuda_check(cudaIpcOpenMemHandle(base, h, cudaIpcMemLazyEnablePeerAccess), "ipc_open", err);
    if (rc != VIDI_OK) {
        *base = NULL;
        return rc;
    }
    unsigned long long b0 = 0;
    size_t n = 0;
    if (range(&b0, &n, (unsigned long long)(uintptr_t)*base) != 0 || b0 != (unsigned long long)(uintptr_t)*base) {
        cudaIpcCloseMemHandle(*base);
        *base = NULL;
        return vidi_err_set(err, VIDI_ERR_INTERNAL, "ipc_open: cannot tell the size of the mapped memory");
    }
    *bytes = n;
    return VIDI_OK;
}

static void cuda_ipc_close(vidi_backend *be, void *base) {
    if (!base) return;
    cudaStreamSynchronize(cuda_ctx(be)->stream);
    cudaIpcCloseMemHandle(base);
}

static vidi_backend_ops cuda_make_ops(void) {
    vidi_backend_ops o;
    memset(&o, 0, sizeof o);
    o.buf_alloc = cuda_buf_alloc;
    o.buf_free = cuda_buf_free;
    o.copy_to_device = cuda_copy_to_device;
    o.copy_to_host = cuda_copy_to_host;
    o.copy = cuda_copy;
    o.synchronize = cuda_synchronize;
    o.upload_convert = cuda_upload_convert;
    o.matmul = cuda_matmul;
    o.matmul_acc = cuda_matmul_acc;
    o.qkv_rope_store = cuda_qkv_rope_store;
    o.add = cuda_add;
    o.rms_norm = cuda_rms_norm;
    o.layer_norm = cuda_layer_norm;
    o.act = cuda_act;
    o.act_mul = cuda_act_mul;
    o.softmax = cuda_softmax;
    o.rope = cuda_rope;
    o.attention = vidi_cuda_attention;
    o.attention_paged = vidi_cuda_attention_paged;
    o.gather_rows = cuda_gather_rows;
    o.scatter_rows = cuda_scatter_rows;
    o.sample = vidi_cuda_sample;
    o.argmax_rows = vidi_cuda_argmax_rows;
    o.attention_klen = vidi_cuda_attention_klen;
    o.graph_begin = vidi_cuda_graph_begin;
    o.graph_end = vidi_cuda_graph_end;
    o.graph_launch = vidi_cuda_graph_launch;
    o.graph_free = vidi_cuda_graph_free;
    o.ipc_alloc = cuda_ipc_alloc;
    o.ipc_free = cuda_ipc_free;
    o.ipc_open = cuda_ipc_open;
    o.ipc_close = cuda_ipc_close;
    o.sparse_attention = vidi_cuda_sparse_attention;
    o.sparse_mass = vidi_cuda_sparse_mass;
    o.destroy = cuda_destroy;
    return o;
}

static const vidi_backend_ops cuda_ops = cuda_make_ops();

extern "C" vidi_backend *vidi_backend_cuda_create(int device, vidi_err *err) {
    vidi_backend *be = (vidi_backend *)calloc(1, sizeof *be);
    vidi_cuda_ctx *c = (vidi_cuda_ctx *)calloc(1, sizeof *c);
    vidi_status rc = VIDI_OK;
    int n = 0;
    cudaDeviceProp prop;
    cudaMemPool_t pool;
    uint64_t keep = UINT64_MAX;
    if (!be || !c) {
        free(be);
        free(c);
        vidi_err_set(err, VIDI_ERR_NOMEM, "cuda backend: out of memory");
        return NULL;
    }
    be->ctx = c;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        n = 0;
    }
    VIDI_CHECK(device >= 0 && device < n, err, VIDI_ERR_NOTFOUND, "cuda backend: no CUDA device %d (%d visible)",
               device, n);
    c->device = device;
    VIDI_TRY(vidi_cuda_check(cudaSetDevice(device), "cuda backend: cudaSetDevice", err));
    VIDI_TRY(vidi_cuda_check(cudaGetDeviceProperties(&prop, device), "cuda backend: cudaGetDeviceProperties", err));
    c->num_sms = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    // Keep freed pool memory for reuse instead of handing it back at each sync.
    VIDI_TRY(vidi_cuda_check(cudaDeviceGetDefaultMemPool(&pool, device), "cuda backend: cudaDeviceGetDefaultMemPool",
                             err));
    VIDI_TRY(vidi_cuda_check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
                             "cuda backend: cudaMemPoolSetAttribute", err));
    VIDI_TRY(vidi_cuda_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking),
                             "cuda backend: cudaStreamCreateWithFlags", err));
    VIDI_TRY(lt_check(cublasLtCreate(&c->lt), "cuda backend: cublasLtCreate", err));
    c->lt_workspace_bytes = CUDA_LT_WORKSPACE_BYTES;
    VIDI_TRY(vidi_cuda_check(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes),
                             "cuda backend: cuBLASLt workspace", err));
    VIDI_TRY(vidi_cuda_check(cudaMalloc((void **)&c->d_flag, VIDI_CUDA_FLAGS * sizeof *c->d_flag),
                             "cuda backend: flag buffer", err));
    VIDI_TRY(vidi_cuda_check(cudaMallocHost((void **)&c->h_flag, VIDI_CUDA_FLAGS * sizeof *c->h_flag),
                             "cuda backend: pinned flag buffer", err));
    VIDI_TRY(vidi_cuda_check(cudaMemset(c->d_flag, 0xff, VIDI_CUDA_FLAGS * sizeof *c->d_flag),
                             "cuda backend: flag buffer", err));  // no bad id recorded
    for (int i = 0; i < VIDI_CUDA_STAGE_SLOTS; i++)
        VIDI_TRY(vidi_cuda_check(cudaEventCreateWithFlags(&c->stage_ev[i], cudaEventDisableTiming),
                                 "cuda backend: staging event", err));
    VIDI_TRY(vidi_cuda_check(cudaMallocHost(&c->h_stage, (size_t)VIDI_CUDA_STAGE_SLOTS * VIDI_CUDA_STAGE_BYTES),
                             "cuda backend: pinned staging buffer", err));
    {
        const char *ex = getenv("VIDI_CUDA_EXACT");
        c->exact = ex && !strcmp(ex, "1");
    }
    be->name = "cuda";
    be->ops = &cuda_ops;
    be->act_dtype = VIDI_DTYPE_BF16;
    be->weight_dtype = VIDI_DTYPE_BF16;
    be->host_memory = 0;
    return be;
fail:
    cuda_destroy(be);
    (void)rc;
    return NULL;
}

extern "C" vidi_status vidi_backend_cuda_set_exact(vidi_backend *be, int on, vidi_err *err) {
    if (!be || be->ops != &cuda_ops) return vidi_err_set(err, VIDI_ERR_INVALID, "exact mode: not a CUDA backend");
    cuda_ctx(be)->exact = on != 0;
    return VIDI_OK;
}
