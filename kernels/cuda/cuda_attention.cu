// kernels/cuda/cuda_attention.cu — attention on the GPU: the varlen
// FlashAttention-style kernel (prefill and the vision tower) and paged decode
// attention. CPU twins: cpu_attention (kernels/cpu/cpu_backend.c) and
// vidi_cpu_attention_paged (kernels/cpu/cpu_paged.c).
//
// Varlen kernel. One CTA of 8 warps owns 128 query rows of one (sequence,
// query head); each warp owns 16 rows and keeps its Q fragments in
// registers. Keys and values stream through shared memory in tiles of 64
// rows (row-major, rows padded by 16 bytes so ldmatrix is conflict-free),
// in a 3-stage cp.async pipeline with one barrier per tile: tiles j + 1 and
// j + 2 load while tile j is used. S = Q K^T and O += P V run on the tensor
// cores (mma.sync m16n8k16, bf16 operands, fp32 accumulators; B operands by
// ldmatrix, .trans for V); the softmax is the online one in fp32 registers
// (running max and sum per row, in the log2 domain, ex2.approx). A warp
// skips key tiles wholly past its rows' causal limits and masks only the
// tiles that reach past its first row's limit (the diagonal and the ragged
// last tile). Q, K and V are rounded to bf16 on the way in (F32 inputs too,
// converted through registers; so are unaligned bf16 inputs), P is rounded
// to bf16 for the PV product, everything else is fp32. The host builds a
// CTA -> (sequence, query tile) map, longest causal tiles first, and
// uploads it with the cu offsets in one copy.
//
// Paged decode. One CTA of 4 warps owns (sequence, kv head, up to 8 query
// heads of that kv head's group, one split of the keys). Lanes work in
// groups of 2^k that each hold one key: every lane loads 8 elements of K
// and V, so each key is read from memory once for all query heads of the
// group. Partial (max, sum, unnormalised output) are merged across lane
// groups, then warps; with several splits a second kernel merges the splits
// by log-sum-exp. All arithmetic fp32.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_mma.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

// ---------------------------------------------------------------------------
// Varlen attention.

#ifndef VIDI_ATTN_WARPS
#define VIDI_ATTN_WARPS 8
#endif
#ifndef VIDI_ATTN_MINB
#define VIDI_ATTN_MINB 2
#endif
constexpr int kWarps = VIDI_ATTN_WARPS;  // each warp owns 16 query rows
constexpr int kBM = kWarps * 16;         // query rows per CTA
constexpr int kBN = 64;                  // keys per shared-memory tile
constexpr int kThreads = kWarps * 32;
#ifndef VIDI_ATTN_STAGES
#define VIDI_ATTN_STAGES 3
#endif
constexpr int kStages = VIDI_ATTN_STAGES;  // K/V pipeline stages (kStages - 1 tiles in flight)

// Padded row of a K or V tile, in bf16: D + 8 makes the stride an odd
// multiple of 16 bytes modulo 128, so the 8 row addresses of an ldmatrix
// (and the 16-byte stores of the loader) fall into distinct banks.
template <int D> __host__ __device__ constexpr int attn_row() { return D + 8; }
template <int D> constexpr size_t attn_smem_bytes() {
    return (size_t)2 * kStages * kBN * attn_row<D>() * sizeof(__nv_bfloat16);
}

struct attn_tile {
    int seq;  // sequence
    int q0;   // first query row of the tile, within the sequence
};

struct attn_params {
    const int32_t *cu_q, *cu_k;  // device, n_seqs + 1 (NULL: one sequence, see below)
    const attn_tile *tiles;      // device, gridDim.x (NULL: one sequence, see below)
    // One sequence (tiles NULL): no tables. lq1 queries, lk1 keys or, when
    // lk_dev is set, *lk_dev keys read at run time (a graph records the
    // pointer, not the count); CTA x takes tile gridDim.x - 1 - x (the
    // causally longest first, as the table would order them).
    const int32_t *lk_dev;
    int lq1, lk1;
    int hq, hkv;
    int causal;
    float scale_log2;            // scale * log2(e)
    bool vec;                    // q, k, v, out 16-byte aligned
};

// Stage keys kt0 .. kt0 + kBN - 1 of K and V (row-major, bf16, zeros past lk)
// into one pipeline stage. bf16 with 16-byte alignment goes by cp.async;
// anything else (f32, unaligned) is converted through registers.
template <typename T, int D>
__device__ __forceinline__ void attn_load_kv(__nv_bfloat16 *ks, __nv_bfloat16 *vs, const T *__restrict__ k,
                                             const T *__restrict__ v, int64_t row0, int64_t k_stride, int kt0,
                                             int lk, bool vec) {
    constexpr int KP = attn_row<D>(), kChunks = D / 8;
    constexpr bool kBf16 = sizeof(T) == 2;
    for (int idx = threadIdx.x; idx < kBN * kChunks; idx += kThreads) {
        const int r = idx / kChunks, c = (idx % kChunks) * 8;
        const int key = kt0 + r;
        const bool ok = key < lk;
        const int64_t off = (row0 + (ok ? key : 0)) * k_stride + c;
        if (kBf16 && vec) {
            cp_async16(smem_u32(ks + r * KP + c), k + off, ok);
            cp_async16(smem_u32(vs + r * KP + c), v + off, ok);
        } else {
            float kx[8], vx[8];
            if (ok) {
                load8(k + off, vec, kx);
                load8(v + off, vec, vx);
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
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, D <= 80 ? VIDI_ATTN_MINB : 1)
    attn_varlen_kernel(const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                       T *__restrict__ out, attn_params p) {
    static_assert(D % 16 == 0, "head dim must be a multiple of 16");
    constexpr int KP = attn_row<D>();
    constexpr int kTile = kBN * KP;  // bf16 elements of one K or V stage
    extern __shared__ __align__(16) unsigned char attn_smem[];
    __nv_bfloat16 *ks = reinterpret_cast<__nv_bfloat16 *>(attn_smem);  // [kStages][kBN][KP]
    __nv_bfloat16 *vs = ks + kStages * kTile;                          // [kStages][kBN][KP]

    attn_tile tile;
    int q_base, k_base, lq, lk;
    if (p.tiles) {
        tile = p.tiles[blockIdx.x];
        const int s = tile.seq;
        q_base = p.cu_q[s], k_base = p.cu_k[s];
        lq = p.cu_q[s + 1] - q_base, lk = p.cu_k[s + 1] - k_base;
    } else {
        tile = attn_tile{0, (int)(gridDim.x - 1 - blockIdx.x) * kBM};
        q_base = 0, k_base = 0, lq = p.lq1;
        lk = p.lk_dev ? min(max(*p.lk_dev, 0), p.lk1) : p.lk1;
    }
    const int h = blockIdx.y;
    const int kvh = h / (p.hq / p.hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int w0 = tile.q0 + warp * 16;   // this warp's first row
    const int r0 = w0 + g, r1 = r0 + 8;   // this thread's two rows (in the sequence)
    const int64_t k_stride = (int64_t)p.hkv * D;

    // Keys this CTA needs: causal row i sees keys [0, lk - lq + i].
    const int last_row = min(tile.q0 + kBM, lq) - 1;
    int n_keys = lk;
    if (p.causal) n_keys = max(0, min(lk, lk - lq + last_row + 1));
    const int n_kt = (n_keys + kBN - 1) / kBN;
    // Row limits (exclusive) for this thread's rows, and this warp's range:
    // tiles at or past w_hi are skipped, tiles past w_lo need the mask.
    const int lim0 = p.causal ? min(lk, lk - lq + r0 + 1) : lk;
    const int lim1 = p.causal ? min(lk, lk - lq + r1 + 1) : lk;
    const bool w_active = w0 < lq;
    const int w_lo = p.causal ? min(lk, lk - lq + w0 + 1) : lk;
    const int w_hi = p.causal ? min(lk, lk - lq + w0 + 16) : lk;

    // Start the first kStages - 1 K/V tiles while Q goes to registers.
    const T *kh = k + (int64_t)kvh * D, *vh = v + (int64_t)kvh * D;
#pragma unroll
    for (int st = 0; st < kStages - 1; st++) {
        if (st < n_kt)
            attn_load_kv<T, D>(ks + st * kTile, vs + st * kTile, kh, vh, k_base, k_stride, st * kBN, lk, p.vec);
        cp_async_commit();
    }

    // Q fragments straight from global memory, bf16, zero beyond the sequence.
    uint32_t qf[D / 16][4];
    {
        const T *q0p = q + ((int64_t)(q_base + r0) * p.hq + h) * D;
        const T *q1p = q + ((int64_t)(q_base + r1) * p.hq + h) * D;
        const bool ok0 = r0 < lq, ok1 = r1 < lq;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const int c = kk * 16 + 2 * t;
            qf[kk][0] = ok0 ? pack_bf16(to_f32(q0p[c]), to_f32(q0p[c + 1])) : 0u;
            qf[kk][1] = ok1 ? pack_bf16(to_f32(q1p[c]), to_f32(q1p[c + 1])) : 0u;
            qf[kk][2] = ok0 ? pack_bf16(to_f32(q0p[c + 8]), to_f32(q0p[c + 9])) : 0u;
            qf[kk][3] = ok1 ? pack_bf16(to_f32(q1p[c + 8]), to_f32(q1p[c + 9])) : 0u;
        }
    }

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running max (log2 domain) of rows r0, r1
    float l0 = 0.f, l1 = 0.f;              // this thread's share of the running sums
    const float sl = p.scale_log2;

    // ldmatrix lane offsets (bf16 elements). Matrix i = lane / 8, row lane % 8.
    // K (non-transposed): matrices (keys +0, d +0) (keys +0, d +8) (keys +8, d +0) (keys +8, d +8).
    // V (transposed):     matrices (keys +0, d +0) (keys +8, d +0) (keys +0, d +8) (keys +8, d +8).
    const int mi = lane / 8, mr = lane % 8;
    const uint32_t k_off = (uint32_t)((((mi >> 1) * 8 + mr) * KP + (mi & 1) * 8) * 2);
    const uint32_t v_off = (uint32_t)((((mi & 1) * 8 + mr) * KP + (mi >> 1) * 8) * 2);
    const uint32_t ks_u = smem_u32(ks), vs_u = smem_u32(vs);

    for (int j = 0; j < n_kt; j++) {
        const int kt0 = j * kBN;
        cp_async_wait<kStages - 2>();  // tile j has landed (this thread's part)
        __syncthreads();               // ... and everyone's; and all are done with tile j - 1
        {
            // Refill the stage tile j - 1 used with tile j + kStages - 1.
            const int jn = j + kStages - 1;
            if (jn < n_kt)
                attn_load_kv<T, D>(ks + (jn % kStages) * kTile, vs + (jn % kStages) * kTile, kh, vh, k_base,
                                   k_stride, jn * kBN, lk, p.vec);
            cp_async_commit();
        }

        if (w_active && kt0 < w_hi) {
            const uint32_t kb = ks_u + (uint32_t)((j % kStages) * kTile * 2) + k_off;
            const uint32_t vb = vs_u + (uint32_t)((j % kStages) * kTile * 2) + v_off;

            // S = Q K^T for 16 rows x 64 keys.
            float sc[kBN / 8][4];
#pragma unroll
            for (int nt = 0; nt < kBN / 8; nt++) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
                for (int np = 0; np < kBN / 16; np++) {
                    uint32_t b[4];
                    ldsm_x4(b, kb + (uint32_t)((np * 16 * KP + kk * 16) * 2));
                    mma_bf16(sc[2 * np], qf[kk], b[0], b[1]);
                    mma_bf16(sc[2 * np + 1], qf[kk], b[2], b[3]);
                }
            }

            // Scale, mask (only tiles that reach past this warp's first row's limit), row max.
#pragma unroll
            for (int nt = 0; nt < kBN / 8; nt++) {
                sc[nt][0] *= sl, sc[nt][1] *= sl, sc[nt][2] *= sl, sc[nt][3] *= sl;
            }
            if (kt0 + kBN > w_lo) {
#pragma unroll
                for (int nt = 0; nt < kBN / 8; nt++) {
                    const int jj = kt0 + nt * 8 + 2 * t;
                    if (jj >= lim0) sc[nt][0] = -INFINITY;
                    if (jj + 1 >= lim0) sc[nt][1] = -INFINITY;
                    if (jj >= lim1) sc[nt][2] = -INFINITY;
                    if (jj + 1 >= lim1) sc[nt][3] = -INFINITY;
                }
            }
            float tmax0 = m0, tmax1 = m1;
#pragma unroll
            for (int nt = 0; nt < kBN / 8; nt++) {
                tmax0 = fmaxf(tmax0, fmaxf(sc[nt][0], sc[nt][1]));
                tmax1 = fmaxf(tmax1, fmaxf(sc[nt][2], sc[nt][3]));
            }
            tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
            tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
            tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
            tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
            // A row with no visible key yet keeps max -inf; subtract 0 then so exp2 gives 0, not NaN.
            const float mu0 = tmax0 == -INFINITY ? 0.f : tmax0, mu1 = tmax1 == -INFINITY ? 0.f : tmax1;
            const float alpha0 = fast_exp2(m0 - mu0), alpha1 = fast_exp2(m1 - mu1);
            m0 = tmax0;
            m1 = tmax1;

            // P = exp2(S - max) as bf16 A fragments; the sums use the fp32 values.
            uint32_t pf[kBN / 16][4];
            float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < kBN / 8; nt++) {
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

            // O += P V.
#pragma unroll
            for (int kk = 0; kk < kBN / 16; kk++) {
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t b[4];
                    ldsm_x4_t(b, vb + (uint32_t)((kk * 16 * KP + dp * 16) * 2));
                    mma_bf16(o[2 * dp], pf[kk], b[0], b[1]);
                    mma_bf16(o[2 * dp + 1], pf[kk], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // Finish the sums across the quad and write; rows that saw no key get 0.
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    T *o0p = out + ((int64_t)(q_base + r0) * p.hq + h) * D;
    T *o1p = out + ((int64_t)(q_base + r1) * p.hq + h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        const int c = dt * 8 + 2 * t;
        if (r0 < lq) {
            o0p[c] = from_f32<T>(o[dt][0] * inv0);
            o0p[c + 1] = from_f32<T>(o[dt][1] * inv0);
        }
        if (r1 < lq) {
            o1p[c] = from_f32<T>(o[dt][2] * inv1);
            o1p[c + 1] = from_f32<T>(o[dt][3] * inv1);
        }
    }
}

// ---------------------------------------------------------------------------
// Paged decode attention.

constexpr int kPgWarps = 4;
constexpr int kPgThreads = kPgWarps * 32;
constexpr int kPgMaxGroup = 8;   // query heads per CTA
constexpr int kPgMinChunk = 128; // fewest keys worth a split of their own

struct paged_params {
    const int32_t *block_table;  // [B, max_blocks]
    const int32_t *seq_lens;     // [B]
    int hq, hkv, group;          // group = hq / hkv
    int n_hgroups;               // ceil(group / kPgMaxGroup)
    int max_blocks, block_size, n_blocks;
    int n_splits;
    float scale_log2;
    bool vec;
    float *part_o;               // [B, hq, n_splits, D] when n_splits > 1
    float *part_ml;              // [B, hq, n_splits, 2] (max, sum)
};

// Merge (m2, l2, o2) into (m, l, o); maxima in the log2 domain, -inf = empty.
__device__ __forceinline__ void lse_merge(float &m, float &l, float (&o)[8], float m2, float l2,
                                          const float (&o2)[8]) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;  // both empty
    const float a = exp2f(m - mn), b = exp2f(m2 - mn);
    l = l * a + l2 * b;
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] = o[i] * a + o2[i] * b;
    m = mn;
}

// LANES lanes (a power of two, >= D / 8) share one key; 32 / LANES keys per
// warp step. Lane c of a lane group holds elements 8c .. 8c + 7.
template <typename T, int D, int LANES>
__global__ void __launch_bounds__(kPgThreads) attn_paged_kernel(const T *__restrict__ q,
                                                                  const T *__restrict__ kc,
                                                                  const T *__restrict__ vc, T *__restrict__ out,
                                                                  paged_params p) {
    constexpr int kChunks = D / 8;
    constexpr int kSlots = 32 / LANES;  // keys per warp step
    static_assert(D % 8 == 0 && LANES >= kChunks && LANES <= 32 && (LANES & (LANES - 1)) == 0, "bad lanes");
    __shared__ float sm_ml[kPgWarps][kPgMaxGroup][2];
    __shared__ float sm_o[kPgWarps][kPgMaxGroup][D];

    const int b = blockIdx.x;
    const int kvh = blockIdx.y / p.n_hgroups, hg = blockIdx.y % p.n_hgroups;
    const int split = blockIdx.z;
    const int h0 = kvh * p.group + hg * kPgMaxGroup;           // first query head of this CTA
    const int nh = min(kPgMaxGroup, p.group - hg * kPgMaxGroup);  // its query heads
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int slot = lane / LANES, c = lane % LANES;
    const bool has_chunk = c < kChunks;

    int len = p.seq_lens[b];
    len = max(0, min(len, p.max_blocks * p.block_size));
    const int per_split = (len + p.n_splits - 1) / p.n_splits;
    const int k_begin = min(len, split * per_split), k_end = min(len, k_begin + per_split);

    // This lane's slice of each query head, pre-scaled into the log2 domain.
    float qv[kPgMaxGroup][8];
#pragma unroll
    for (int gi = 0; gi < kPgMaxGroup; gi++) {
        if (gi < nh && has_chunk) {
            load8(q + ((int64_t)b * p.hq + h0 + gi) * D + 8 * c, p.vec, qv[gi]);
#pragma unroll
            for (int i = 0; i < 8; i++) qv[gi][i] *= p.scale_log2;
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) qv[gi][i] = 0.f;
        }
    }

    float m[kPgMaxGroup], l[kPgMaxGroup], o[kPgMaxGroup][8];
#pragma unroll
    for (int gi = 0; gi < kPgMaxGroup; gi++) {
        m[gi] = -INFINITY;
        l[gi] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) o[gi][i] = 0.f;
    }

    const int32_t *table = p.block_table + (int64_t)b * p.max_blocks;
    const int64_t row_stride = (int64_t)p.hkv * D, block_stride = (int64_t)p.block_size * row_stride;
    for (int j0 = k_begin + (warp * kSlots); j0 < k_end; j0 += kPgWarps * kSlots) {
        const int j = j0 + slot;
        // Keys past the range or in a block id outside the cache are skipped
        // (the host cannot see the table; the CPU twin reports such ids).
        bool valid = j < k_end;
        float kx[8], vx[8];
        if (valid) {
            const int blk = table[j / p.block_size];
            valid = blk >= 0 && blk < p.n_blocks;
            if (valid && has_chunk) {
                const int64_t off = blk * block_stride + (j % p.block_size) * row_stride + (int64_t)kvh * D + 8 * c;
                load8(kc + off, p.vec, kx);
                load8(vc + off, p.vec, vx);
            }
        }
        if (!(valid && has_chunk)) {
#pragma unroll
            for (int i = 0; i < 8; i++) kx[i] = vx[i] = 0.f;
        }
#pragma unroll
        for (int gi = 0; gi < kPgMaxGroup; gi++) {
            if (gi >= nh) break;  // uniform across the CTA
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < 8; i++) s = fmaf(qv[gi][i], kx[i], s);
#pragma unroll
            for (int w = LANES / 2; w >= 1; w /= 2) s += __shfl_xor_sync(0xffffffffu, s, w);
            if (valid) {
                const float mn = fmaxf(m[gi], s);
                const float a = exp2f(m[gi] - mn), e = exp2f(s - mn);
                l[gi] = l[gi] * a + e;
#pragma unroll
                for (int i = 0; i < 8; i++) o[gi][i] = o[gi][i] * a + e * vx[i];
                m[gi] = mn;
            }
        }
    }

    // Merge the slots of the warp (lanes with the same c), then the warps.
#pragma unroll
    for (int gi = 0; gi < kPgMaxGroup; gi++) {
        if (gi >= nh) break;
#pragma unroll
        for (int w = LANES; w < 32; w *= 2) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m[gi], w);
            const float l2 = __shfl_xor_sync(0xffffffffu, l[gi], w);
            float o2[8];
#pragma unroll
            for (int i = 0; i < 8; i++) o2[i] = __shfl_xor_sync(0xffffffffu, o[gi][i], w);
            lse_merge(m[gi], l[gi], o[gi], m2, l2, o2);
        }
        if (slot == 0) {
            if (c == 0) {
                sm_ml[warp][gi][0] = m[gi];
                sm_ml[warp][gi][1] = l[gi];
            }
            if (has_chunk)
#pragma unroll
                for (int i = 0; i < 8; i++) sm_o[warp][gi][8 * c + i] = o[gi][i];
        }
    }
    __syncthreads();

    // Thread (gi, d) pairs combine the warps and write.
    for (int idx = threadIdx.x; idx < nh * D; idx += kPgThreads) {
        const int gi = idx / D, d = idx % D;
        float mm = -INFINITY;
#pragma unroll
        for (int w = 0; w < kPgWarps; w++) mm = fmaxf(mm, sm_ml[w][gi][0]);
        float ll = 0.f, oo = 0.f;
        if (mm != -INFINITY) {
#pragma unroll
            for (int w = 0; w < kPgWarps; w++) {
                const float a = exp2f(sm_ml[w][gi][0] - mm);
                ll += sm_ml[w][gi][1] * a;
                oo += sm_o[w][gi][d] * a;
            }
        }
        const int h = h0 + gi;
        if (p.n_splits == 1) {
            out[((int64_t)b * p.hq + h) * D + d] = from_f32<T>(ll > 0.f ? oo / ll : 0.f);
        } else {
            const int64_t part = ((int64_t)b * p.hq + h) * p.n_splits + split;
            p.part_o[part * D + d] = oo;
            if (d == 0) {
                p.part_ml[part * 2] = mm;
                p.part_ml[part * 2 + 1] = ll;
            }
        }
    }
}

// One CTA per (sequence, query head): merge the splits by log-sum-exp.
template <typename T>
__global__ void attn_paged_merge_kernel(const float *__restrict__ part_o, const float *__restrict__ part_ml,
                                        int n_splits, int D, T *__restrict__ out) {
    const int64_t bh = blockIdx.x;
    const float *ml = part_ml + bh * n_splits * 2;
    float mm = -INFINITY;
    for (int sp = 0; sp < n_splits; sp++) mm = fmaxf(mm, ml[2 * sp]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float ll = 0.f, oo = 0.f;
        if (mm != -INFINITY)
            for (int sp = 0; sp < n_splits; sp++) {
                const float a = exp2f(ml[2 * sp] - mm);
                ll += ml[2 * sp + 1] * a;
                oo += part_o[(bh * n_splits + sp) * D + d] * a;
            }
        out[bh * D + d] = from_f32<T>(ll > 0.f ? oo / ll : 0.f);
    }
}

// ---------------------------------------------------------------------------
// Host side.

const char *shape_str(const vidi_tensor *t, char *buf, size_t len) {
    int off = snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && i < VIDI_MAX_DIMS && off < (int)len; i++)
        off += snprintf(buf + off, len - (size_t)off, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (off < (int)len) snprintf(buf + off, len - (size_t)off, "] %s", vidi_dtype_name(t->dtype));
    return buf;
}

vidi_status check_view(const char *op, const char *name, const vidi_tensor *t, int ndim, vidi_err *err) {
    if (!t) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s is NULL", op, name);
    if (t->ndim != ndim)
        return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has %d dimensions, must have %d", op, name, t->ndim,
                            ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] < 0) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has a negative dimension", op, name);
    if (!t->data && vidi_tensor_numel(t) > 0) return vidi_err_set(err, VIDI_ERR_INVALID, "%s: %s has no data", op, name);
    return VIDI_OK;
}

bool overlaps(const vidi_tensor *a, const vidi_tensor *b) {
    const char *pa = (const char *)a->data, *pb = (const char *)b->data;
    const size_t na = vidi_tensor_nbytes(a), nb = vidi_tensor_nbytes(b);
    return na && nb && pa < pb + nb && pb < pa + na;
}

bool aligned16(const void *x) { return ((uintptr_t)x & 15u) == 0; }

vidi_status check_offsets(const int32_t *cu, int n, int64_t total, const char *name, vidi_err *err) {
    if (cu[0] != 0) return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[0] = %d, must be 0", name, (int)cu[0]);
    for (int s = 0; s < n; s++)
        if (cu[s + 1] < cu[s])
            return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[%d] = %d is below %s[%d] = %d", name, s + 1,
                                (int)cu[s + 1], name, s, (int)cu[s]);
    if (cu[n] != total)
        return vidi_err_set(err, VIDI_ERR_INVALID, "attention: %s[%d] = %d but the tensor has %lld rows", name, n,
                            (int)cu[n], (long long)total);
    return VIDI_OK;
}

// Device memory for `bytes` of per-call data: a stream-ordered allocation
// (the device's memory pool makes it cheap after the first call), released
// by release_scratch once the kernels that use it are queued.
vidi_status get_scratch(vidi_backend *be, size_t bytes, void **owned, const char *op, vidi_err *err) {
    *owned = NULL;
    return vidi_cuda_check(cudaMallocAsync(owned, bytes, vidi_cuda_stream(be)), op, err);
}

void release_scratch(vidi_backend *be, void *owned) {
    if (owned) cudaFreeAsync(owned, vidi_cuda_stream(be));
}

template <typename T, int D>
vidi_status launch_varlen(const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v, vidi_tensor *out,
                          const attn_params &p, int n_tiles, cudaStream_t st, vidi_err *err) {
    constexpr size_t smem = attn_smem_bytes<D>();
    static bool attr_set = false;  // once per instantiation (a repeated set is harmless)
    if (smem > 48 * 1024 && !attr_set) {
        vidi_status rc = vidi_cuda_check(
            cudaFuncSetAttribute(attn_varlen_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "attention: shared memory size", err);
        if (rc != VIDI_OK) return rc;
        attr_set = true;
    }
    dim3 grid((unsigned)n_tiles, (unsigned)p.hq);
    attn_varlen_kernel<T, D><<<grid, kThreads, smem, st>>>((const T *)q->data, (const T *)k->data, (const T *)v->data,
                                                       (T *)out->data, p);
    return vidi_cuda_check_launch("attention: kernel launch", err);
}

template <typename T>
vidi_status launch_varlen_d(int D, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v,
                            vidi_tensor *out, const attn_params &p, int n_tiles, cudaStream_t st, vidi_err *err) {
    switch (D) {
    case 16: return launch_varlen<T, 16>(q, k, v, out, p, n_tiles, st, err);
    case 64: return launch_varlen<T, 64>(q, k, v, out, p, n_tiles, st, err);
    case 80: return launch_varlen<T, 80>(q, k, v, out, p, n_tiles, st, err);
    case 128: return launch_varlen<T, 128>(q, k, v, out, p, n_tiles, st, err);
    default: return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "attention: head dim %d (16, 64, 80, 128 supported)", D);
    }
}

template <typename T, int D, int LANES>
vidi_status launch_paged(const vidi_tensor *q, const vidi_tensor *kc, const vidi_tensor *vc, vidi_tensor *out,
                         const paged_params &p, int B, cudaStream_t st, vidi_err *err) {
    dim3 grid((unsigned)B, (unsigned)(p.hkv * p.n_hgroups), (unsigned)p.n_splits);
    attn_paged_kernel<T, D, LANES><<<grid, kPgThreads, 0, st>>>((const T *)q->data, (const T *)kc->data,
                                                               (const T *)vc->data, (T *)out->data, p);
    vidi_status rc = vidi_cuda_check_launch("attention_paged: kernel launch", err);
    if (rc != VIDI_OK || p.n_splits == 1) return rc;
    attn_paged_merge_kernel<T><<<(unsigned)(B * p.hq), D < 128 ? D : 128, 0, st>>>(p.part_o, p.part_ml, p.n_splits,
                                                                                  D, (T *)out->data);
    return vidi_cuda_check_launch("attention_paged: merge launch", err);
}

template <typename T>
vidi_status launch_paged_d(int D, const vidi_tensor *q, const vidi_tensor *kc, const vidi_tensor *vc,
                           vidi_tensor *out, const paged_params &p, int B, cudaStream_t st, vidi_err *err) {
    switch (D) {
    case 16: return launch_paged<T, 16, 2>(q, kc, vc, out, p, B, st, err);
    case 64: return launch_paged<T, 64, 8>(q, kc, vc, out, p, B, st, err);
    case 80: return launch_paged<T, 80, 16>(q, kc, vc, out, p, B, st, err);
    case 128: return launch_paged<T, 128, 16>(q, kc, vc, out, p, B, st, err);
    default:
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "attention_paged: head dim %d (16, 64, 80, 128 supported)", D);
    }
}

}  // namespace

// Varlen attention (ops.h attention). q, k, v, out: BF16 or F32, all one
// dtype, device memory; cu_q / cu_k are host arrays. Queues the kernel on the
// backend's stream; the small offset/tile tables go up in one async copy.
static vidi_status attention_impl(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v,
                                  vidi_tensor *out, const vidi_attn_args *args, const int32_t *k_len_dev,
                                  vidi_err *err) {
    const char *op = "attention";
    vidi_status rc = VIDI_OK;
    int32_t *host = NULL;
    void *owned = NULL;
    char s1[96], s2[96];
    VIDI_TRY(check_view(op, "q", q, 3, err));
    VIDI_TRY(check_view(op, "k", k, 3, err));
    VIDI_TRY(check_view(op, "v", v, 3, err));
    VIDI_TRY(check_view(op, "out", out, 3, err));
    VIDI_CHECK(args && args->cu_q && args->cu_k && args->n_seqs >= 0, err, VIDI_ERR_INVALID,
               "attention: args with cu_q, cu_k and n_seqs >= 0 must be given");
    VIDI_CHECK(q->dtype == VIDI_DTYPE_BF16 || q->dtype == VIDI_DTYPE_F32, err, VIDI_ERR_UNSUPPORTED,
               "attention: q %s must be bf16 or f32", shape_str(q, s1, sizeof s1));
    VIDI_CHECK(k->dtype == q->dtype && v->dtype == q->dtype && out->dtype == q->dtype, err, VIDI_ERR_INVALID,
               "attention: q, k, v and out must share one dtype (q is %s)", vidi_dtype_name(q->dtype));
    for (int i = 0; i < 3; i++) {
        VIDI_CHECK(k->shape[i] == v->shape[i], err, VIDI_ERR_INVALID, "attention: k %s and v %s differ",
                   shape_str(k, s1, sizeof s1), shape_str(v, s2, sizeof s2));
        VIDI_CHECK(q->shape[i] == out->shape[i], err, VIDI_ERR_INVALID, "attention: q %s and out %s differ",
                   shape_str(q, s1, sizeof s1), shape_str(out, s2, sizeof s2));
    }
    {
        const int64_t hq = q->shape[1], hkv = k->shape[1], D = q->shape[2];
        VIDI_CHECK(k->shape[2] == D, err, VIDI_ERR_INVALID, "attention: head dims differ: q %s, k %s",
                   shape_str(q, s1, sizeof s1), shape_str(k, s2, sizeof s2));
        VIDI_CHECK(hq > 0 && hkv > 0 && hq % hkv == 0 && hq <= 65535, err, VIDI_ERR_INVALID,
                   "attention: %lld query heads are not a multiple of %lld kv heads", (long long)hq, (long long)hkv);
        VIDI_CHECK(q->shape[0] <= INT32_MAX && k->shape[0] <= INT32_MAX, err, VIDI_ERR_RANGE,
                   "attention: more than 2^31 tokens");
        VIDI_TRY(check_offsets(args->cu_q, args->n_seqs, q->shape[0], "cu_q", err));
        VIDI_TRY(check_offsets(args->cu_k, args->n_seqs, k->shape[0], "cu_k", err));
        VIDI_CHECK(!overlaps(out, q) && !overlaps(out, k) && !overlaps(out, v), err, VIDI_ERR_INVALID,
                   "attention: out overlaps q, k or v");
        if (D != 16 && D != 64 && D != 80 && D != 128)
            VIDI_CHECK(0, err, VIDI_ERR_UNSUPPORTED, "attention: head dim %lld (16, 64, 80, 128 supported)",
                       (long long)D);
        const int n = args->n_seqs;
        VIDI_CHECK(!k_len_dev || n == 1, err, VIDI_ERR_INVALID,
                   "attention: a run-time key count needs exactly one sequence (n_seqs %d)", n);
        if (n == 0 || q->shape[0] == 0) goto fail;
        cudaStream_t st = vidi_cuda_stream(be);
        {
            // cuDNN's fused attention first (on unless VIDI_CUDNN=0): bf16, aligned, sequences of one
            // length (a causal one square), key count known on the host, and
            // not while a graph is being captured (plans build outside one).
            cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
            const int lq = args->cu_q[1] - args->cu_q[0], lk = args->cu_k[1] - args->cu_k[0];
            bool uniform = q->dtype == VIDI_DTYPE_BF16 && !k_len_dev && args->cu_q[0] == 0 && args->cu_k[0] == 0 &&
                           lq > 0 && lk > 0 && aligned16(q->data) && aligned16(k->data) && aligned16(v->data) &&
                           aligned16(out->data) && cudaStreamIsCapturing(st, &cap) == cudaSuccess &&
                           cap == cudaStreamCaptureStatusNone;
            for (int s = 1; uniform && s < n; s++)
                uniform = args->cu_q[s + 1] - args->cu_q[s] == lq && args->cu_k[s + 1] - args->cu_k[s] == lk;
            size_t ws = 0;
            vidi_cudnn_sdpa shape = {n, hq, hkv, lq, lk, D, args->causal != 0};
            vidi_cudnn_plan *plan = uniform ? vidi_cudnn_sdpa_plan(&shape, &ws) : NULL;
            if (plan) {
                if (ws) VIDI_TRY(get_scratch(be, ws, &owned, "attention: cuDNN workspace", err));
                VIDI_TRY(vidi_cudnn_sdpa_run(plan, st, q->data, k->data, v->data, out->data, args->scale, owned,
                                             err));
                goto fail;
            }
        }
        attn_params p;
        p.hq = (int)hq;
        p.hkv = (int)hkv;
        p.causal = args->causal != 0;
        p.scale_log2 = args->scale * kLog2e;
        p.vec = aligned16(q->data) && aligned16(k->data) && aligned16(v->data) && aligned16(out->data);
        p.lk_dev = k_len_dev;
        p.lq1 = p.lk1 = 0;
        if (n == 1) {
            // One sequence (decode, a single prompt): sizes go by value and
            // the tile order follows from blockIdx, so nothing is uploaded or
            // allocated and the launch can be recorded into a graph.
            p.cu_q = p.cu_k = NULL;
            p.tiles = NULL;
            p.lq1 = args->cu_q[1];
            p.lk1 = args->cu_k[1];
            const int64_t n1 = ((int64_t)p.lq1 + kBM - 1) / kBM;
            if (n1 == 0) goto fail;
            if (q->dtype == VIDI_DTYPE_BF16)
                VIDI_TRY(launch_varlen_d<__nv_bfloat16>((int)D, q, k, v, out, p, (int)n1, st, err));
            else
                VIDI_TRY(launch_varlen_d<float>((int)D, q, k, v, out, p, (int)n1, st, err));
            goto fail;
        }

        // Host table: cu_q[n + 1], cu_k[n + 1], then tiles (seq, q0), each
        // sequence's last (causally longest) tile first.
        int64_t n_tiles = 0;
        for (int s = 0; s < n; s++) n_tiles += (args->cu_q[s + 1] - args->cu_q[s] + kBM - 1) / kBM;
        VIDI_CHECK(n_tiles <= INT32_MAX, err, VIDI_ERR_RANGE, "attention: %lld query tiles", (long long)n_tiles);
        if (n_tiles == 0) goto fail;
        const size_t n_ints = 2 * (size_t)(n + 1) + 2 * (size_t)n_tiles;
        host = (int32_t *)malloc(n_ints * sizeof *host);
        VIDI_CHECK(host, err, VIDI_ERR_NOMEM, "attention: out of memory for %lld tiles", (long long)n_tiles);
        memcpy(host, args->cu_q, (size_t)(n + 1) * sizeof *host);
        memcpy(host + n + 1, args->cu_k, (size_t)(n + 1) * sizeof *host);
        attn_tile *tiles = (attn_tile *)(host + 2 * (n + 1));
        int64_t ti = 0;
        for (int s = 0; s < n; s++) {
            const int lq = args->cu_q[s + 1] - args->cu_q[s];
            for (int t = (lq + kBM - 1) / kBM - 1; t >= 0; t--) tiles[ti++] = attn_tile{s, t * kBM};
        }
        VIDI_TRY(get_scratch(be, n_ints * sizeof *host, &owned, "attention: table", err));
        const void *dev = owned;
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(owned, host, n_ints * sizeof *host, cudaMemcpyHostToDevice, st),
                                 "attention: table upload", err));
        p.cu_q = (const int32_t *)dev;
        p.cu_k = (const int32_t *)dev + n + 1;
        p.tiles = (const attn_tile *)((const int32_t *)dev + 2 * (n + 1));
        if (q->dtype == VIDI_DTYPE_BF16)
            VIDI_TRY(launch_varlen_d<__nv_bfloat16>((int)D, q, k, v, out, p, (int)n_tiles, st, err));
        else
            VIDI_TRY(launch_varlen_d<float>((int)D, q, k, v, out, p, (int)n_tiles, st, err));
    }
fail:
    release_scratch(be, owned);
    free(host);  // the pageable upload has been staged when cudaMemcpyAsync returns
    return rc;
}

extern "C" vidi_status vidi_cuda_attention(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                           const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                                           vidi_err *err) {
    return attention_impl(be, q, k, v, out, args, NULL, err);
}

// ops.h attention_klen: one sequence, its key count read on the device.
extern "C" vidi_status vidi_cuda_attention_klen(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                                const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                                                const int32_t *k_len_dev, vidi_err *err) {
    if (!k_len_dev) return vidi_err_set(err, VIDI_ERR_INVALID, "attention_klen: no key count");
    return attention_impl(be, q, k, v, out, args, k_len_dev, err);
}

// Paged decode attention (ops.h attention_paged). q, caches, out: BF16 or
// F32, one dtype; block_table and seq_lens: I32; all device memory. The host
// cannot see seq_lens or the table, so it picks the split count from the
// table's capacity; a block id outside the cache makes its keys skipped
// (not reported: the CPU twin reports it). Partial results of the splits
// live in scratch for the merge kernel.
extern "C" vidi_status vidi_cuda_attention_paged(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k_cache,
                                                 const vidi_tensor *v_cache, const vidi_tensor *block_table,
                                                 const vidi_tensor *seq_lens, float scale, vidi_tensor *out,
                                                 vidi_err *err) {
    const char *op = "attention_paged";
    vidi_status rc = VIDI_OK;
    void *owned = NULL;
    VIDI_TRY(check_view(op, "q", q, 3, err));
    VIDI_TRY(check_view(op, "k_cache", k_cache, 4, err));
    VIDI_TRY(check_view(op, "v_cache", v_cache, 4, err));
    VIDI_TRY(check_view(op, "block_table", block_table, 2, err));
    VIDI_TRY(check_view(op, "seq_lens", seq_lens, 1, err));
    VIDI_TRY(check_view(op, "out", out, 3, err));
    VIDI_CHECK(q->dtype == VIDI_DTYPE_BF16 || q->dtype == VIDI_DTYPE_F32, err, VIDI_ERR_UNSUPPORTED,
               "attention_paged: q is %s, must be bf16 or f32", vidi_dtype_name(q->dtype));
    VIDI_CHECK(k_cache->dtype == q->dtype && v_cache->dtype == q->dtype && out->dtype == q->dtype, err,
               VIDI_ERR_INVALID, "attention_paged: q, caches and out must share one dtype (q is %s)",
               vidi_dtype_name(q->dtype));
    VIDI_CHECK(block_table->dtype == VIDI_DTYPE_I32 && seq_lens->dtype == VIDI_DTYPE_I32, err, VIDI_ERR_INVALID,
               "attention_paged: block_table and seq_lens must be i32");
    {
        const int64_t B = q->shape[0], hq = q->shape[1], D = q->shape[2];
        const int64_t n_blocks = k_cache->shape[0], bs = k_cache->shape[1], hkv = k_cache->shape[2];
        const int64_t max_blocks = block_table->shape[1];
        for (int i = 0; i < 4; i++)
            VIDI_CHECK(k_cache->shape[i] == v_cache->shape[i], err, VIDI_ERR_INVALID,
                       "attention_paged: k_cache and v_cache shapes differ in dimension %d", i);
        VIDI_CHECK(k_cache->shape[3] == D, err, VIDI_ERR_INVALID, "attention_paged: q head dim %lld, cache %lld",
                   (long long)D, (long long)k_cache->shape[3]);
        VIDI_CHECK(out->shape[0] == B && out->shape[1] == hq && out->shape[2] == D, err, VIDI_ERR_INVALID,
                   "attention_paged: out must have q's shape");
        VIDI_CHECK(block_table->shape[0] == B && seq_lens->shape[0] == B, err, VIDI_ERR_INVALID,
                   "attention_paged: block_table and seq_lens must have %lld rows", (long long)B);
        VIDI_CHECK(hq > 0 && hkv > 0 && hq % hkv == 0, err, VIDI_ERR_INVALID,
                   "attention_paged: %lld query heads are not a multiple of %lld kv heads", (long long)hq,
                   (long long)hkv);
        VIDI_CHECK(bs > 0, err, VIDI_ERR_INVALID, "attention_paged: block size is 0");
        VIDI_CHECK(B <= INT32_MAX && n_blocks <= INT32_MAX && max_blocks * bs <= INT32_MAX && hkv <= 65535, err,
                   VIDI_ERR_RANGE, "attention_paged: sizes beyond 2^31");
        VIDI_CHECK(!overlaps(out, q) && !overlaps(out, k_cache) && !overlaps(out, v_cache), err, VIDI_ERR_INVALID,
                   "attention_paged: out overlaps an input");
        if (D != 16 && D != 64 && D != 80 && D != 128)
            VIDI_CHECK(0, err, VIDI_ERR_UNSUPPORTED, "attention_paged: head dim %lld (16, 64, 80, 128 supported)",
                       (long long)D);
        if (B == 0) goto fail;

        vidi_cuda_ctx *ctx = (vidi_cuda_ctx *)be->ctx;
        cudaStream_t st = vidi_cuda_stream(be);
        paged_params p;
        p.block_table = (const int32_t *)block_table->data;
        p.seq_lens = (const int32_t *)seq_lens->data;
        p.hq = (int)hq;
        p.hkv = (int)hkv;
        p.group = (int)(hq / hkv);
        p.n_hgroups = (p.group + kPgMaxGroup - 1) / kPgMaxGroup;
        p.max_blocks = (int)max_blocks;
        p.block_size = (int)bs;
        p.n_blocks = (int)n_blocks;
        p.scale_log2 = scale * kLog2e;
        p.vec = aligned16(q->data) && aligned16(k_cache->data) && aligned16(v_cache->data) && aligned16(out->data);
        p.part_o = p.part_ml = NULL;
        // Splits: enough CTAs for two waves, none with fewer than kPgMinChunk
        // keys at the table's full capacity, at most 64.
        // In exact mode the count ignores B: a row's sum does not depend on
        // how many rows the step has (batch invariance).
        const int64_t ctas = (ctx && ctx->exact ? 1 : B) * hkv * p.n_hgroups, cap = max_blocks * bs;
        const int sms = ctx && ctx->num_sms > 0 ? ctx->num_sms : 132;
        int64_t n_splits = (2 * sms + ctas - 1) / ctas;
        const int64_t by_len = (cap + kPgMinChunk - 1) / kPgMinChunk;
        if (n_splits > by_len) n_splits = by_len;
        if (n_splits > 64) n_splits = 64;
        if (n_splits < 1) n_splits = 1;
        p.n_splits = (int)n_splits;
        if (p.n_splits > 1) {
            const size_t parts = (size_t)B * (size_t)hq * (size_t)n_splits;
            const size_t o_bytes = parts * (size_t)D * sizeof(float), ml_bytes = parts * 2 * sizeof(float);
            VIDI_TRY(get_scratch(be, o_bytes + ml_bytes, &owned, "attention_paged: split scratch", err));
            p.part_o = (float *)owned;
            p.part_ml = (float *)((char *)owned + o_bytes);
        }
        if (q->dtype == VIDI_DTYPE_BF16)
            VIDI_TRY(launch_paged_d<__nv_bfloat16>((int)D, q, k_cache, v_cache, out, p, (int)B, st, err));
        else
            VIDI_TRY(launch_paged_d<float>((int)D, q, k_cache, v_cache, out, p, (int)B, st, err));
    }
fail:
    release_scratch(be, owned);
    return rc;
}
