// kernels/cuda/cuda_sparse.cu — attention of one query head over a sparse
// prefill plan (prefill/sparse.h) on the GPU. CPU twin:
// vidi_sparse_attend_plan (prefill/sparse.c).
//
// One CTA of 64 threads per plan tile: thread r owns the tile's r-th row
// (its q row and output accumulator in registers, fp32). The tile's keys
// (its segments, then its gathered columns) stream through shared memory in
// chunks of 32: thread 0 lists the chunk's key indices, all threads load
// the K and V rows (bf16 or f32, converted to fp32), then each row thread
// scores the chunk's causal keys (j <= its row), rescales once to the new
// maximum and accumulates P·V (the online softmax of the CPU twin, chunk by
// chunk). A row without keys writes zeros. This first version runs on the
// CUDA cores; the tensor-core version (gathered tiles through mma) is the
// next step.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_bf16.h>
#include <math.h>

namespace {

constexpr int kRows = 64;
constexpr int kChunk = 32;

__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float *p, float x) { *p = x; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

template <typename T, int D>
__global__ void __launch_bounds__(kRows) sparse_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                       const T *__restrict__ v, T *__restrict__ out, int hq, int hkv,
                                                       int head, const int32_t *__restrict__ rows,
                                                       const int32_t *__restrict__ tiles,
                                                       const int32_t *__restrict__ segs,
                                                       const int32_t *__restrict__ cols, float scale) {
    __shared__ float ks[kChunk][D], vs[kChunk][D];
    __shared__ int32_t kidx[kChunk];
    __shared__ int nk_sh;
    const int32_t *t = tiles + 6 * (size_t)blockIdx.x;
    const int row0 = t[0], n_rows = t[1], seg0 = t[2], n_segs = t[3], col0 = t[4], n_cols = t[5];
    const int r = threadIdx.x, kvh = head / (hq / hkv);
    const bool active = r < n_rows;
    const int i = active ? rows[row0 + r] : -1;
    float qr[D], acc[D];
#pragma unroll
    for (int x = 0; x < D; x++) {
        qr[x] = active ? ld(q + ((size_t)i * hq + head) * D + x) * scale : 0.f;
        acc[x] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    // the key list: segments in order, then columns; (s, off) walks it
    int s = 0, off = 0, c = 0;
    for (;;) {
        if (r == 0) {
            int n = 0;
            while (n < kChunk && s < n_segs) {
                int a = segs[2 * (seg0 + s)] + off, e = segs[2 * (seg0 + s) + 1];
                if (a >= e) {
                    s++, off = 0;
                    continue;
                }
                kidx[n++] = a;
                off++;
            }
            while (n < kChunk && c < n_cols) kidx[n++] = cols[col0 + c++];
            nk_sh = n;
        }
        __syncthreads();
        const int nk = nk_sh;
        if (nk == 0) break;
        for (int e = r; e < nk * D; e += kRows) {
            int kk = e / D, x = e % D;
            size_t at = ((size_t)kidx[kk] * hkv + kvh) * D + x;
            ks[kk][x] = ld(k + at);
            vs[kk][x] = ld(v + at);
        }
        __syncthreads();
        if (active) {
            float sc[kChunk], cm = -INFINITY;
            for (int kk = 0; kk < nk; kk++) {
                float d = -INFINITY;
                if (kidx[kk] <= i) {
                    d = 0.f;
#pragma unroll
                    for (int x = 0; x < D; x++) d += qr[x] * ks[kk][x];
                }
                sc[kk] = d;
                cm = fmaxf(cm, d);
            }
            if (cm > -INFINITY) {
                float mn = fmaxf(m, cm);
                float a = m == -INFINITY ? 0.f : __expf(m - mn);
                l *= a;
#pragma unroll
                for (int x = 0; x < D; x++) acc[x] *= a;
                for (int kk = 0; kk < nk; kk++) {
                    if (sc[kk] == -INFINITY) continue;
                    float p = __expf(sc[kk] - mn);
                    l += p;
#pragma unroll
                    for (int x = 0; x < D; x++) acc[x] += p * vs[kk][x];
                }
                m = mn;
            }
        }
        __syncthreads(); // before thread 0 lists the next chunk
    }
    if (active) {
        float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
        for (int x = 0; x < D; x++) st(out + ((size_t)i * hq + head) * D + x, acc[x] * inv);
    }
}

template <typename T>
vidi_status launch(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v, vidi_tensor *o,
                   int head, const int32_t *rows, const int32_t *tiles, int64_t n_tiles, const int32_t *segs,
                   const int32_t *cols, float scale, vidi_err *err) {
    int hq = (int)q->shape[1], hkv = (int)k->shape[1], d = (int)q->shape[2];
    cudaStream_t s = vidi_cuda_stream(be);
    dim3 grid((unsigned)n_tiles);
    const T *qp = (const T *)q->data, *kp = (const T *)k->data, *vp = (const T *)v->data;
    T *op = (T *)o->data;
    switch (d) {
    case 64:
        sparse_kernel<T, 64><<<grid, kRows, 0, s>>>(qp, kp, vp, op, hq, hkv, head, rows, tiles, segs, cols, scale);
        break;
    case 128:
        sparse_kernel<T, 128><<<grid, kRows, 0, s>>>(qp, kp, vp, op, hq, hkv, head, rows, tiles, segs, cols, scale);
        break;
    default: return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse_attention: head_dim %d (64 or 128)", d);
    }
    return vidi_cuda_check_launch("sparse_attention", err);
}

} // namespace

extern "C" vidi_status vidi_cuda_sparse_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                                  const vidi_tensor *v, vidi_tensor *out, int head, const int32_t *rows,
                                                  const int32_t *tiles, int64_t n_tiles, const int32_t *segs,
                                                  const int32_t *cols, float scale, vidi_err *err) {
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || out->ndim != 3 || q->dtype != k->dtype ||
        q->dtype != v->dtype || q->dtype != out->dtype || k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] ||
        k->shape[2] != q->shape[2] || k->shape[1] != v->shape[1] || k->shape[1] < 1 || q->shape[1] % k->shape[1] ||
        head < 0 || head >= q->shape[1] || out->shape[0] != q->shape[0] || out->shape[1] != q->shape[1])
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse_attention: q [T, Hq, D], k and v [T, Hkv, D], out like q, "
                                                   "one dtype, head in [0, Hq)");
    if (n_tiles <= 0) return VIDI_OK;
    if (n_tiles > 0x7fffffff) return vidi_err_set(err, VIDI_ERR_RANGE, "sparse_attention: %lld tiles", (long long)n_tiles);
    if (q->dtype == VIDI_DTYPE_BF16)
        return launch<__nv_bfloat16>(be, q, k, v, out, head, rows, tiles, n_tiles, segs, cols, scale, err);
    if (q->dtype == VIDI_DTYPE_F32) return launch<float>(be, q, k, v, out, head, rows, tiles, n_tiles, segs, cols, scale, err);
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse_attention: bf16 or f32");
}
