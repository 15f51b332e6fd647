// kernels/cuda/cuda_sparse.cu — attention over packed sparse prefill plans
// (prefill/sparse.h, vidi_sparse_pack) on the tensor cores. CPU twin:
// vidi_sparse_attend_plan (prefill/sparse.c).
//
// One CTA of 4 warps per packed tile (one query head, up to 64 rows at any
// positions: a grid head's permuted rows). Warp w owns the tile's rows
// 16w .. 16w + 15 and keeps their Q fragments in registers. The tile's key
// list (its segments, contiguous or strided, then its gathered columns)
// streams through shared memory in blocks of 64 keys, gathered row by row
// (each key row of K and V is contiguous) in a 3-stage cp.async pipeline:
// the thread that loads key position p of a block works its index out
// itself (a binary search over the tile's segments by their running key
// counts, then the columns), so the loads need no barrier of their own.
// S = Q K^T and O += P V are mma.sync m16n8k16 (bf16 operands, fp32
// accumulators), the softmax the online one in fp32 (log2 domain) — the
// dense kernel's loop (cuda_attention.cu) over gathered keys. The causal
// rule is per element (key <= row, both arbitrary positions), applied only
// to blocks where some key is past the tile's first row (one
// __syncthreads_or at the barrier the pipeline needs anyway). A row without
// keys writes zeros. All query heads' tiles go in one launch, the longest
// first (the pack's order).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_mma.cuh"

#include <cuda_bf16.h>
#include <math.h>

namespace {

constexpr int kSpWarps = 4;
constexpr int kSpRows = kSpWarps * 16;  // rows per tile (VIDI_SPARSE_TILE)
static_assert(kSpRows == 64, "a tile holds VIDI_SPARSE_TILE (64) rows");
constexpr int kSpBN = 64;               // keys per block
constexpr int kSpThreads = kSpWarps * 32;
constexpr int kSpStages = 3;

template <int D> __host__ __device__ constexpr int sp_row() { return D + 8; }
template <int D> constexpr size_t sp_smem_bytes() {
    return (size_t)2 * kSpStages * kSpBN * sp_row<D>() * sizeof(__nv_bfloat16) + (size_t)kSpStages * kSpBN * 4;
}

struct sp_params {
    const int32_t *rows, *tiles, *segs, *cols;
    int hq, hkv;
    float scale_log2;
    bool vec;
};

// The key at position pos of a tile's list, -1 past its end.
__device__ __forceinline__ int sp_key(const int32_t *__restrict__ segs, int seg0, int n_segs,
                                      const int32_t *__restrict__ cols, int col0, int n_seg_keys, int n_keys,
                                      int pos) {
    if (pos >= n_keys) return -1;
    if (pos >= n_seg_keys) return cols[col0 + pos - n_seg_keys];
    int lo = 0, hi = n_segs - 1;  // the last segment whose running count is <= pos
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (__ldg(segs + 4 * (seg0 + mid) + 3) <= pos) lo = mid;
        else hi = mid - 1;
    }
    const int32_t *g = segs + 4 * (seg0 + lo);
    return __ldg(g) + (pos - __ldg(g + 3)) * __ldg(g + 2);
}

// Block b of the key list into one stage: thread x loads key position
// b * 64 + x % 64, half x / 64 of its row; returns the key (-1: none, zeros).
template <typename T, int D>
__device__ __forceinline__ int sp_load(__nv_bfloat16 *ks, __nv_bfloat16 *vs, int32_t *kidx, const T *__restrict__ k,
                                       const T *__restrict__ v, const int32_t *__restrict__ segs, int seg0,
                                       int n_segs, const int32_t *__restrict__ cols, int col0, int n_seg_keys,
                                       int n_keys, int b, int64_t k_stride, int kvh, bool vec) {
    constexpr int KP = sp_row<D>(), kChunks = D / 8, kHalf = kChunks / 2;
    constexpr bool kBf16 = sizeof(T) == 2;
    const int r = threadIdx.x % kSpBN, half = threadIdx.x / kSpBN;
    const int key = sp_key(segs, seg0, n_segs, cols, col0, n_seg_keys, n_keys, b * kSpBN + r);
    if (half == 0) kidx[r] = key;
    const int64_t base = (int64_t)(key < 0 ? 0 : key) * k_stride + (int64_t)kvh * D;
#pragma unroll
    for (int cc = 0; cc < kHalf; cc++) {
        const int c = (half * kHalf + cc) * 8;
        if (kBf16 && vec) {
            cp_async16(smem_u32(ks + r * KP + c), k + base + c, key >= 0);
            cp_async16(smem_u32(vs + r * KP + c), v + base + c, key >= 0);
        } else {
            float kx[8], vx[8];
            if (key >= 0) {
                load8(k + base + c, vec, kx);
                load8(v + base + c, vec, vx);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) kx[i] = vx[i] = 0.f;
            }
            uint4 ku, vu;
            ku.x = pack_bf16(kx[0], kx[1]), ku.y = pack_bf16(kx[2], kx[3]);
            ku.z = pack_bf16(kx[4], kx[5]), ku.w = pack_bf16(kx[6], kx[7]);
            vu.x = pack_bf16(vx[0], vx[1]), vu.y = pack_bf16(vx[2], vx[3]);
            vu.z = pack_bf16(vx[4], vx[5]), vu.w = pack_bf16(vx[6], vx[7]);
            *reinterpret_cast<uint4 *>(ks + r * KP + c) = ku;
            *reinterpret_cast<uint4 *>(vs + r * KP + c) = vu;
        }
    }
    return key;
}

template <typename T, int D>
__global__ void __launch_bounds__(kSpThreads, 2) sparse_tc_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                                  const T *__restrict__ v, T *__restrict__ out,
                                                                  sp_params p) {
    static_assert(D % 16 == 0 && (D / 8) % 2 == 0, "head dim must be a multiple of 16");
    constexpr int KP = sp_row<D>();
    constexpr int kTile = kSpBN * KP;
    extern __shared__ __align__(16) unsigned char sp_smem[];
    __nv_bfloat16 *ks = reinterpret_cast<__nv_bfloat16 *>(sp_smem);  // [kSpStages][kSpBN][KP]
    __nv_bfloat16 *vs = ks + kSpStages * kTile;                       // [kSpStages][kSpBN][KP]
    int32_t *kidx = reinterpret_cast<int32_t *>(vs + kSpStages * kTile);  // [kSpStages][kSpBN]
    __shared__ int row_min_sh;

    const int32_t *tl = p.tiles + 8 * (size_t)blockIdx.x;
    const int row0 = tl[0], n_rows = tl[1], seg0 = tl[2], n_segs = tl[3], col0 = tl[4], n_cols = tl[5];
    const int head = tl[6], n_keys = tl[7], n_seg_keys = n_keys - n_cols;
    const int kvh = head / (p.hq / p.hkv);
    const int64_t k_stride = (int64_t)p.hkv * D;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int n_kb = (n_keys + kSpBN - 1) / kSpBN;

    if (threadIdx.x == 0) row_min_sh = 0x7fffffff;
    __syncthreads();
    // This thread's two rows (token positions; -1: none).
    const int lr0 = warp * 16 + g, lr1 = lr0 + 8;
    const int i0 = lr0 < n_rows ? p.rows[row0 + lr0] : -1, i1 = lr1 < n_rows ? p.rows[row0 + lr1] : -1;
    if (t == 0) {
        if (i0 >= 0) atomicMin(&row_min_sh, i0);
        if (i1 >= 0) atomicMin(&row_min_sh, i1);
    }

    // Start the first kSpStages - 1 blocks while Q goes to registers; kq0
    // and kq1 hold this thread's keys of the blocks in flight.
    int kq0 = -1, kq1 = -1;
    if (0 < n_kb)
        kq0 = sp_load<T, D>(ks, vs, kidx, k, v, p.segs, seg0, n_segs, p.cols, col0, n_seg_keys, n_keys, 0, k_stride,
                            kvh, p.vec);
    cp_async_commit();
    if (1 < n_kb)
        kq1 = sp_load<T, D>(ks + kTile, vs + kTile, kidx + kSpBN, k, v, p.segs, seg0, n_segs, p.cols, col0,
                            n_seg_keys, n_keys, 1, k_stride, kvh, p.vec);
    cp_async_commit();

    uint32_t qf[D / 16][4];
    {
        const T *q0p = q + ((int64_t)(i0 < 0 ? 0 : i0) * p.hq + head) * D;
        const T *q1p = q + ((int64_t)(i1 < 0 ? 0 : i1) * p.hq + head) * D;
        const bool ok0 = i0 >= 0, ok1 = i1 >= 0;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c = kk * 16 + 2 * t;
            qf[kk][0] = ok0 ? pack_bf16(to_f32(q0p[c]), to_f32(q0p[c + 1])) : 0u;
            qf[kk][1] = ok1 ? pack_bf16(to_f32(q1p[c]), to_f32(q1p[c + 1])) : 0u;
            qf[kk][2] = ok0 ? pack_bf16(to_f32(q0p[c + 8]), to_f32(q0p[c + 9])) : 0u;
            qf[kk][3] = ok1 ? pack_bf16(to_f32(q1p[c + 8]), to_f32(q1p[c + 9])) : 0u;
        }
    }
    __syncthreads();  // row_min_sh
    const int row_min = row_min_sh;

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const float sl = p.scale_log2;
    const int mi = lane / 8, mr = lane % 8;
    const uint32_t k_off = (uint32_t)((((mi >> 1) * 8 + mr) * KP + (mi & 1) * 8) * 2);
    const uint32_t v_off = (uint32_t)((((mi & 1) * 8 + mr) * KP + (mi >> 1) * 8) * 2);
    const uint32_t ks_u = smem_u32(ks), vs_u = smem_u32(vs);
    const bool w_active = warp * 16 < n_rows;

    for (int j = 0; j < n_kb; j++) {
        const int st = j % kSpStages;
        cp_async_wait<kSpStages - 2>();
        // block j has landed everywhere; does any of its keys need the causal test?
        const int need_mask = __syncthreads_or(kq0 < 0 || kq0 > row_min);
        {
            const int jn = j + kSpStages - 1, sn = jn % kSpStages;
            int kn = -1;
            if (jn < n_kb)
                kn = sp_load<T, D>(ks + sn * kTile, vs + sn * kTile, kidx + sn * kSpBN, k, v, p.segs, seg0, n_segs,
                                   p.cols, col0, n_seg_keys, n_keys, jn, k_stride, kvh, p.vec);
            cp_async_commit();
            kq0 = kq1;
            kq1 = kn;
        }
        if (!w_active) continue;
        const uint32_t kb = ks_u + (uint32_t)(st * kTile * 2) + k_off;
        const uint32_t vb = vs_u + (uint32_t)(st * kTile * 2) + v_off;

        float sc[kSpBN / 8][4];
#pragma unroll
        for (int nt = 0; nt < kSpBN / 8; nt++) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
            for (int np = 0; np < kSpBN / 16; np++) {
                uint32_t b[4];
                ldsm_x4(b, kb + (uint32_t)((np * 16 * KP + kk * 16) * 2));
                mma_bf16(sc[2 * np], qf[kk], b[0], b[1]);
                mma_bf16(sc[2 * np + 1], qf[kk], b[2], b[3]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < kSpBN / 8; nt++) {
            sc[nt][0] *= sl, sc[nt][1] *= sl, sc[nt][2] *= sl, sc[nt][3] *= sl;
        }
        if (need_mask) {
            const int32_t *kx = kidx + st * kSpBN;
#pragma unroll
            for (int nt = 0; nt < kSpBN / 8; nt++) {
                const int2 kk2 = *reinterpret_cast<const int2 *>(kx + nt * 8 + 2 * t);
                if (kk2.x < 0 || kk2.x > i0) sc[nt][0] = -INFINITY;
                if (kk2.y < 0 || kk2.y > i0) sc[nt][1] = -INFINITY;
                if (kk2.x < 0 || kk2.x > i1) sc[nt][2] = -INFINITY;
                if (kk2.y < 0 || kk2.y > i1) sc[nt][3] = -INFINITY;
            }
        }
        float tmax0 = m0, tmax1 = m1;
#pragma unroll
        for (int nt = 0; nt < kSpBN / 8; nt++) {
            tmax0 = fmaxf(tmax0, fmaxf(sc[nt][0], sc[nt][1]));
            tmax1 = fmaxf(tmax1, fmaxf(sc[nt][2], sc[nt][3]));
        }
        tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
        tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
        tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
        tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
        const float mu0 = tmax0 == -INFINITY ? 0.f : tmax0, mu1 = tmax1 == -INFINITY ? 0.f : tmax1;
        const float alpha0 = fast_exp2(m0 - mu0), alpha1 = fast_exp2(m1 - mu1);
        m0 = tmax0;
        m1 = tmax1;
        uint32_t pf[kSpBN / 16][4];
        float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
        for (int nt = 0; nt < kSpBN / 8; nt++) {
            const float p0 = fast_exp2(sc[nt][0] - mu0), p1 = fast_exp2(sc[nt][1] - mu0);
            const float p2 = fast_exp2(sc[nt][2] - mu1), p3 = fast_exp2(sc[nt][3] - mu1);
            rs0 += p0 + p1;
            rs1 += p2 + p3;
            pf[nt / 2][(nt % 2) * 2 + 0] = pack_bf16(p0, p1);
            pf[nt / 2][(nt % 2) * 2 + 1] = pack_bf16(p2, p3);
        }
        l0 = l0 * alpha0 + rs0;
        l1 = l1 * alpha1 + rs1;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= alpha0;
            o[dt][1] *= alpha0;
            o[dt][2] *= alpha1;
            o[dt][3] *= alpha1;
        }
#pragma unroll
        for (int kk = 0; kk < kSpBN / 16; kk++) {
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t b[4];
                ldsm_x4_t(b, vb + (uint32_t)((kk * 16 * KP + dp * 16) * 2));
                mma_bf16(o[2 * dp], pf[kk], b[0], b[1]);
                mma_bf16(o[2 * dp + 1], pf[kk], b[2], b[3]);
            }
        }
    }
    cp_async_wait<0>();

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        const int c = dt * 8 + 2 * t;
        if (i0 >= 0) {
            T *o0p = out + ((int64_t)i0 * p.hq + head) * D;
            o0p[c] = from_f32<T>(o[dt][0] * inv0);
            o0p[c + 1] = from_f32<T>(o[dt][1] * inv0);
        }
        if (i1 >= 0) {
            T *o1p = out + ((int64_t)i1 * p.hq + head) * D;
            o1p[c] = from_f32<T>(o[dt][2] * inv1);
            o1p[c + 1] = from_f32<T>(o[dt][3] * inv1);
        }
    }
}

template <typename T, int D>
vidi_status launch_d(cudaStream_t s, const T *q, const T *k, const T *v, T *o, const sp_params &p, int64_t n_tiles,
                     vidi_err *err) {
    const size_t smem = sp_smem_bytes<D>();
    static bool attr_set = false;  // once per instantiation (a repeated set is harmless)
    if (!attr_set) {
        vidi_status rc = vidi_cuda_check(
            cudaFuncSetAttribute(sparse_tc_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "sparse_attention: shared memory size", err);
        if (rc != VIDI_OK) return rc;
        attr_set = true;
    }
    sparse_tc_kernel<T, D><<<dim3((unsigned)n_tiles), kSpThreads, smem, s>>>(q, k, v, o, p);
    return vidi_cuda_check_launch("sparse_attention", err);
}

template <typename T>
vidi_status launch(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v, vidi_tensor *o,
                   const sp_params &p, int64_t n_tiles, vidi_err *err) {
    cudaStream_t s = vidi_cuda_stream(be);
    const T *qp = (const T *)q->data, *kp = (const T *)k->data, *vp = (const T *)v->data;
    T *op = (T *)o->data;
    switch ((int)q->shape[2]) {
    case 64: return launch_d<T, 64>(s, qp, kp, vp, op, p, n_tiles, err);
    case 128: return launch_d<T, 128>(s, qp, kp, vp, op, p, n_tiles, err);
    default:
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse_attention: head_dim %d (64 or 128)", (int)q->shape[2]);
    }
}

}  // namespace

extern "C" vidi_status vidi_cuda_sparse_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                                  const vidi_tensor *v, vidi_tensor *out, const int32_t *rows,
                                                  const int32_t *tiles, int64_t n_tiles, const int32_t *segs,
                                                  const int32_t *cols, float scale, vidi_err *err) {
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || out->ndim != 3 || q->dtype != k->dtype ||
        q->dtype != v->dtype || q->dtype != out->dtype || k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] ||
        k->shape[2] != q->shape[2] || v->shape[2] != q->shape[2] || k->shape[1] != v->shape[1] || k->shape[1] < 1 ||
        q->shape[1] % k->shape[1] || out->shape[0] != q->shape[0] || out->shape[1] != q->shape[1] ||
        out->shape[2] != q->shape[2])
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse_attention: q [T, Hq, D], k and v [T, Hkv, D], out like q, "
                                                   "one dtype");
    if (n_tiles <= 0) return VIDI_OK;
    if (n_tiles > 0x7fffffff) return vidi_err_set(err, VIDI_ERR_RANGE, "sparse_attention: %lld tiles", (long long)n_tiles);
    sp_params p;
    p.rows = rows, p.tiles = tiles, p.segs = segs, p.cols = cols;
    p.hq = (int)q->shape[1], p.hkv = (int)k->shape[1];
    p.scale_log2 = scale * kLog2e;
    const int esz = q->dtype == VIDI_DTYPE_BF16 ? 2 : 4;
    p.vec = ((uintptr_t)q->data % 16 == 0) && ((uintptr_t)k->data % 16 == 0) && ((uintptr_t)v->data % 16 == 0) &&
            ((uintptr_t)out->data % 16 == 0) && (q->shape[2] * esz) % 16 == 0;
    if (q->dtype == VIDI_DTYPE_BF16) return launch<__nv_bfloat16>(be, q, k, v, out, p, n_tiles, err);
    if (q->dtype == VIDI_DTYPE_F32) return launch<float>(be, q, k, v, out, p, n_tiles, err);
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse_attention: bf16 or f32");
}

// ---------------------------------------------------------------------------
// The attention mass of the last query rows (online estimation). CPU twin:
// vidi_sparse_last_mass (prefill/sparse.c).
//
// Rows [r0, r1) (at most 64) of every query head against keys [0, r1), in
// fp32 on the CUDA cores. Pass 1: a CTA per (block of 256 keys, head); each
// thread owns one key and scores it against all rows (the rows' q in shared
// memory, read as broadcasts), then the CTA writes each row's (max, sum) over
// its keys. Pass 2 merges the blocks' pairs per row. Pass 3 scores again and
// writes col[h][j] = sum over rows of p_ij (each key one thread, no atomics)
// and adds p_ij into diag[h][i - j] (atomics).

namespace {

constexpr int kMsRows = 64;
constexpr int kMsKeys = 256;

template <typename T, int D>
__device__ __forceinline__ void ms_scores(const T *__restrict__ k, int j, int kvh, int hkv, const float (*qs)[D],
                                          int r0, int R, float (&s)[kMsRows]) {
#pragma unroll
    for (int r = 0; r < kMsRows; r++) s[r] = 0.f;
    const T *kp = k + ((int64_t)j * hkv + kvh) * D;
    for (int d = 0; d < D; d += 8) {
        float kx[8];
#pragma unroll
        for (int x = 0; x < 8; x++) kx[x] = to_f32(kp[d + x]);
#pragma unroll
        for (int r = 0; r < kMsRows; r++) {
            float a = s[r];
#pragma unroll
            for (int x = 0; x < 8; x++) a += qs[r][d + x] * kx[x];
            s[r] = a;
        }
    }
#pragma unroll
    for (int r = 0; r < kMsRows; r++)
        if (r >= R || j > r0 + r) s[r] = -INFINITY;
}

template <typename T, int D>
__device__ __forceinline__ void ms_load_q(const T *__restrict__ q, int hq, int h, int r0, int R, float scale,
                                          float (*qs)[D]) {
    for (int e = threadIdx.x; e < kMsRows * D; e += blockDim.x) {
        const int r = e / D, x = e % D;
        qs[r][x] = r < R ? to_f32(q[((int64_t)(r0 + r) * hq + h) * D + x]) * scale : 0.f;
    }
    __syncthreads();
}

template <typename T, int D>
__global__ void __launch_bounds__(kMsKeys) mass_stats_kernel(const T *__restrict__ q, const T *__restrict__ k, int hq,
                                                             int hkv, int r0, int r1, float scale,
                                                             float2 *__restrict__ part) {
    __shared__ float qs[kMsRows][D];
    __shared__ float red[kMsKeys / 32][kMsRows];
    __shared__ float mx[kMsRows];
    const int h = blockIdx.y, kvh = h / (hq / hkv), R = r1 - r0, nblk = gridDim.x;
    const int j = blockIdx.x * kMsKeys + threadIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    ms_load_q<T, D>(q, hq, h, r0, R, scale, qs);
    float s[kMsRows];
    if (j < r1) ms_scores<T, D>(k, j, kvh, hkv, qs, r0, R, s);
    else
#pragma unroll
        for (int r = 0; r < kMsRows; r++) s[r] = -INFINITY;
#pragma unroll
    for (int r = 0; r < kMsRows; r++) {
        float v = s[r];
        for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) red[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < kMsRows) {
        float v = -INFINITY;
        for (int w = 0; w < kMsKeys / 32; w++) v = fmaxf(v, red[w][threadIdx.x]);
        mx[threadIdx.x] = v;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kMsRows; r++) {
        float v = s[r] == -INFINITY ? 0.f : __expf(s[r] - mx[r]);
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < kMsRows) {
        float l = 0.f;
        for (int w = 0; w < kMsKeys / 32; w++) l += red[w][threadIdx.x];
        part[((size_t)h * kMsRows + threadIdx.x) * nblk + blockIdx.x] = make_float2(mx[threadIdx.x], l);
    }
}

__global__ void mass_merge_kernel(const float2 *__restrict__ part, int nblk, float2 *__restrict__ stats) {
    const int h = blockIdx.x, r = threadIdx.x;
    float m = -INFINITY, l = 0.f;
    for (int b = 0; b < nblk; b++) {
        const float2 p = part[((size_t)h * kMsRows + r) * nblk + b];
        if (p.x == -INFINITY) continue;
        const float mn = fmaxf(m, p.x);
        l = (m == -INFINITY ? 0.f : l * __expf(m - mn)) + p.y * __expf(p.x - mn);
        m = mn;
    }
    stats[h * kMsRows + r] = make_float2(m, l);
}

template <typename T, int D>
__global__ void __launch_bounds__(kMsKeys) mass_write_kernel(const T *__restrict__ q, const T *__restrict__ k, int hq,
                                                             int hkv, int r0, int r1, float scale,
                                                             const float2 *__restrict__ stats, float *__restrict__ col,
                                                             float *__restrict__ diag) {
    __shared__ float qs[kMsRows][D];
    const int h = blockIdx.y, kvh = h / (hq / hkv), R = r1 - r0;
    const int j = blockIdx.x * kMsKeys + threadIdx.x;
    ms_load_q<T, D>(q, hq, h, r0, R, scale, qs);
    if (j >= r1) return;
    float s[kMsRows];
    ms_scores<T, D>(k, j, kvh, hkv, qs, r0, R, s);
    float c = 0.f;
#pragma unroll
    for (int r = 0; r < kMsRows; r++) {
        if (s[r] == -INFINITY) continue;
        const float2 st = stats[h * kMsRows + r];
        const float p = st.y > 0.f ? __expf(s[r] - st.x) / st.y : 0.f;
        c += p;
        if (diag) atomicAdd(diag + (size_t)h * r1 + (r0 + r - j), p);
    }
    col[(size_t)h * r1 + j] = c;
}

template <typename T, int D>
vidi_status mass_launch(cudaStream_t st, const vidi_tensor *q, const vidi_tensor *k, int r0, int r1, float scale,
                        float *col, float *diag, vidi_err *err) {
    const int hq = (int)q->shape[1], hkv = (int)k->shape[1], nblk = (r1 + kMsKeys - 1) / kMsKeys;
    float2 *part = NULL, *stats = NULL;
    size_t pb = (size_t)hq * kMsRows * nblk * sizeof(float2), sb = (size_t)hq * kMsRows * sizeof(float2);
    vidi_status rc = vidi_cuda_check(cudaMallocAsync((void **)&part, pb + sb, st), "sparse_mass: scratch", err);
    if (rc != VIDI_OK) return rc;
    stats = part + (size_t)hq * kMsRows * nblk;
    if (diag) rc = vidi_cuda_check(cudaMemsetAsync(diag, 0, (size_t)hq * r1 * sizeof(float), st), "sparse_mass", err);
    const T *qp = (const T *)q->data, *kp = (const T *)k->data;
    if (rc == VIDI_OK) {
        mass_stats_kernel<T, D><<<dim3(nblk, hq), kMsKeys, 0, st>>>(qp, kp, hq, hkv, r0, r1, scale, part);
        mass_merge_kernel<<<hq, kMsRows, 0, st>>>(part, nblk, stats);
        mass_write_kernel<T, D><<<dim3(nblk, hq), kMsKeys, 0, st>>>(qp, kp, hq, hkv, r0, r1, scale, stats, col, diag);
        rc = vidi_cuda_check_launch("sparse_mass", err);
    }
    cudaFreeAsync(part, st);
    return rc;
}

}  // namespace

extern "C" vidi_status vidi_cuda_sparse_mass(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, int64_t r0,
                                             int64_t r1, float scale, float *col, float *diag, vidi_err *err) {
    if (q->ndim != 3 || k->ndim != 3 || q->dtype != k->dtype || k->shape[0] != q->shape[0] ||
        k->shape[2] != q->shape[2] || k->shape[1] < 1 || q->shape[1] % k->shape[1] || !col)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse_mass: q [T, Hq, D], k [T, Hkv, D], one dtype, col");
    if (r0 < 0 || r1 > q->shape[0] || r0 >= r1 || r1 - r0 > kMsRows || r1 > 0x7fffffff)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse_mass: rows [%lld, %lld) of %lld (at most %d rows)",
                            (long long)r0, (long long)r1, (long long)q->shape[0], kMsRows);
    cudaStream_t st = vidi_cuda_stream(be);
    const int d = (int)q->shape[2];
    if (q->dtype == VIDI_DTYPE_BF16) {
        if (d == 64) return mass_launch<__nv_bfloat16, 64>(st, q, k, (int)r0, (int)r1, scale, col, diag, err);
        if (d == 128) return mass_launch<__nv_bfloat16, 128>(st, q, k, (int)r0, (int)r1, scale, col, diag, err);
    } else if (q->dtype == VIDI_DTYPE_F32) {
        if (d == 64) return mass_launch<float, 64>(st, q, k, (int)r0, (int)r1, scale, col, diag, err);
        if (d == 128) return mass_launch<float, 128>(st, q, k, (int)r0, (int)r1, scale, col, diag, err);
    }
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse_mass: bf16 or f32, head_dim 64 or 128");
}
