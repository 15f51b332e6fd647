// kernels/cuda/cuda_sample.cu — the `sample` op on the GPU, with the CPU
// twin's exact rules (kernels/cpu/cpu_backend.c, sample_row / sample_greedy).
//
// Greedy (temperature <= 0 or top_k == 1): one CTA per row, a block-wide
// argmax; NaN never wins, ties go to the lowest index, an all-NaN row gives
// 0. No random number is consumed, as on the CPU.
//
// Sampling: every row's candidates (logits that are neither NaN nor -inf)
// become 64-bit keys that sort ascending in the CPU's candidate order
// (larger logit first, lower id on ties), and cub::DeviceSegmentedRadixSort
// sorts the rows. A second kernel (one CTA per row) keeps the first
// min(top_k, m) candidates, weighs them exp((l - top) / T) in double, finds
// the top-p prefix and the drawn index with block-wide prefix sums. The
// uniform of each row is drawn on the HOST with vidi_rng_uniform, so the
// RNG is the CPU's own; a row without any candidate falls back to greedy on
// the CPU without consuming a draw, so the kernel reports which rows used
// their draw and the host puts back the state of the others.
//
// Equality with the CPU: the keys, the kept set and the weights are the
// same values; only the order of the double-precision prefix sums differs
// (block scans instead of a left-to-right loop), which can move a draw only
// when it lands within a few ulps of a boundary between two candidates.
#include "kernels/cuda/cuda_backend.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_BLOCK 256
#define SAMPLE_ITEMS 4
// Keys sorted per pass of the segmented sort (rows are grouped so that one
// group holds at most this many; a row longer than this is its own group).
#define SAMPLE_GROUP_KEYS (1 << 22)

// ---- logits in either activation dtype -------------------------------------

__device__ __forceinline__ float sample_load(const float *l, int64_t i) { return l[i]; }
__device__ __forceinline__ float sample_load(const uint16_t *l, int64_t i) {
    return __uint_as_float((uint32_t)l[i] << 16);
}

// ---- greedy ---------------------------------------------------------------

struct sample_best {
    float val;
    int32_t idx;  // -1: nothing seen yet (or only NaN)
};

struct sample_best_op {
    __device__ __forceinline__ sample_best operator()(const sample_best &a, const sample_best &b) const {
        if (b.idx < 0) return a;
        if (a.idx < 0) return b;
        if (b.val > a.val || (b.val == a.val && b.idx < a.idx)) return b;
        return a;
    }
};

// Argmax of row l[0..n) by the whole block; the result is valid in thread 0.
template <typename T>
__device__ int32_t sample_row_argmax(const T *l, int64_t n) {
    typedef cub::BlockReduce<sample_best, SAMPLE_BLOCK> reduce_t;
    __shared__ typename reduce_t::TempStorage tmp;
    sample_best best = {0.0f, -1};
    for (int64_t i = threadIdx.x; i < n; i += SAMPLE_BLOCK) {
        float v = sample_load(l, i);
        // indices rise within a thread, so a strict > keeps the lowest
        if (!isnan(v) && (best.idx < 0 || v > best.val)) best = sample_best{v, (int32_t)i};
    }
    best = reduce_t(tmp).Reduce(best, sample_best_op());
    return best.idx < 0 ? 0 : best.idx;
}

template <typename T>
__global__ void sample_greedy_kernel(const T *logits, int64_t V, int32_t *tokens) {
    const int64_t b = blockIdx.x;
    int32_t tok = sample_row_argmax(logits + b * V, V);
    if (threadIdx.x == 0) tokens[b] = tok;
}

// ---- sort keys --------------------------------------------------------------

// A float mapped to an unsigned integer of the same order (-0 folded into +0,
// which the CPU's comparisons treat as equal).
__device__ __forceinline__ uint32_t sample_ord(float f) {
    uint32_t u = f == 0.0f ? 0u : __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float sample_unord(uint32_t o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7FFFFFFFu) : ~o);
}

// key = (~ord(logit) << id_bits) | id: ascending keys are descending logits,
// then ascending ids. A non-candidate is all ones (sorts last; the sort
// looks only at the low 32 + id_bits bits, where no candidate is all ones
// because ord(-inf) is never formed).
__device__ __forceinline__ uint64_t sample_key(float f, int64_t id, int id_bits) {
    if (isnan(f) || f == -INFINITY) return ~0ull;
    return ((uint64_t)(~sample_ord(f)) << id_bits) | (uint64_t)id;
}
__device__ __forceinline__ float sample_key_logit(uint64_t k, int id_bits) {
    return sample_unord(~(uint32_t)(k >> id_bits));
}
__device__ __forceinline__ int32_t sample_key_id(uint64_t k, int id_bits) {
    return (int32_t)(k & ((1ull << id_bits) - 1));
}

// Block r of a group: keys of row r, its candidate count, its segment offset.
template <typename T>
__global__ void sample_keys_kernel(const T *logits, int64_t V, int id_bits, int rows, uint64_t *keys,
                                   int *counts, int *offsets) {
    typedef cub::BlockReduce<int, SAMPLE_BLOCK> reduce_t;
    __shared__ typename reduce_t::TempStorage tmp;
    const int r = blockIdx.x;
    const T *l = logits + (int64_t)r * V;
    uint64_t *k = keys + (int64_t)r * V;
    int m = 0;
    for (int64_t i = threadIdx.x; i < V; i += SAMPLE_BLOCK) {
        uint64_t key = sample_key(sample_load(l, i), i, id_bits);
        m += key != ~0ull;
        k[i] = key;
    }
    m = reduce_t(tmp).Sum(m);
    if (threadIdx.x == 0) {
        counts[r] = m;
        offsets[r] = (int)((int64_t)r * V);
        if (r == rows - 1) offsets[rows] = (int)((int64_t)rows * V);
    }
}

// ---- the draw ---------------------------------------------------------------

struct sample_find {
    int64_t idx;   // first index whose inclusive prefix sum passes, or -1
    double cum;    // that prefix sum
    double total;  // sum of all n weights (valid when idx < 0)
};

enum { SAMPLE_FIND_NONE = 0, SAMPLE_FIND_GE = 1, SAMPLE_FIND_GT = 2 };

struct sample_scan_smem {
    typename cub::BlockScan<double, SAMPLE_BLOCK>::TempStorage scan;
    unsigned long long found;
    double found_cum;
};

// Weight of sorted candidate i, exactly as the CPU forms it.
__device__ __forceinline__ double sample_weight(uint64_t key, int id_bits, float top, double inv_t) {
    float l = sample_key_logit(key, id_bits);
    return l == top ? 1.0 : exp(((double)l - (double)top) * inv_t);
}

// Walks the prefix sums of the first n weights of a sorted row, a block
// chunk at a time, and returns the first index whose inclusive sum is
// >= thr (GE) or > thr (GT); NONE only sums. Every thread gets the result.
__device__ sample_find sample_scan(const uint64_t *keys, int64_t n, int id_bits, float top, double inv_t,
                                   int mode, double thr, sample_scan_smem *sm) {
    const int64_t chunk = (int64_t)SAMPLE_BLOCK * SAMPLE_ITEMS;
    double carry = 0.0;
    for (int64_t c = 0; c < n; c += chunk) {
        const int64_t i0 = c + (int64_t)threadIdx.x * SAMPLE_ITEMS;
        double w[SAMPLE_ITEMS], own = 0.0;
#pragma unroll
        for (int j = 0; j < SAMPLE_ITEMS; j++) {
            w[j] = i0 + j < n ? sample_weight(keys[i0 + j], id_bits, top, inv_t) : 0.0;
            own += w[j];
        }
        double before, chunk_sum;
        if (threadIdx.x == 0) sm->found = ULLONG_MAX;
        cub::BlockScan<double, SAMPLE_BLOCK>(sm->scan).ExclusiveSum(own, before, chunk_sum);
        __syncthreads();  // found reset visible; scan storage free again
        if (mode != SAMPLE_FIND_NONE) {
            double run = carry + before;
#pragma unroll
            for (int j = 0; j < SAMPLE_ITEMS; j++) {
                if (i0 + j >= n) break;
                run += w[j];
                if (mode == SAMPLE_FIND_GE ? run >= thr : run > thr) {
                    atomicMin(&sm->found, (unsigned long long)(i0 + j));
                    break;
                }
            }
            __syncthreads();
            // the owner of the first index publishes its prefix sum
            if (sm->found != ULLONG_MAX && (int64_t)sm->found >= i0 && (int64_t)sm->found < i0 + SAMPLE_ITEMS) {
                double r = carry + before;
                for (int64_t j = i0; j <= (int64_t)sm->found; j++) r += w[j - i0];
                sm->found_cum = r;
            }
            __syncthreads();
            if (sm->found != ULLONG_MAX) {
                sample_find f = {(int64_t)sm->found, sm->found_cum, 0.0};
                __syncthreads();  // everyone has read sm before it is reused
                return f;
            }
        }
        carry += chunk_sum;
    }
    sample_find f = {-1, 0.0, carry};
    return f;
}

// One CTA per row of the group: keep, weigh, top-p, draw.
template <typename T>
__global__ void sample_draw_kernel(const T *logits, int64_t V, int id_bits, const uint64_t *sorted,
                                   const int *counts, const float *uniform, double inv_t, int top_k,
                                   float top_p, int32_t *tokens, int32_t *used) {
    __shared__ sample_scan_smem sm;
    const int r = blockIdx.x;
    const uint64_t *keys = sorted + (int64_t)r * V;
    const int64_t m = counts[r];
    if (m == 0) {  // no finite candidate: the greedy rule, no draw
        int32_t tok = sample_row_argmax(logits + (int64_t)r * V, V);
        if (threadIdx.x == 0) tokens[r] = tok, used[r] = 0;
        return;
    }
    const int64_t n = top_k > 0 && top_k < m ? top_k : m;
    const float top = sample_key_logit(keys[0], id_bits);
    const sample_find all = sample_scan(keys, n, id_bits, top, inv_t, SAMPLE_FIND_NONE, 0.0, &sm);
    int64_t keep = n;
    double total = all.total;
    if (top_p < 1.0f) {
        const sample_find p = sample_scan(keys, n, id_bits, top, inv_t, SAMPLE_FIND_GE, (double)top_p * all.total, &sm);
        if (p.idx >= 0) keep = p.idx + 1, total = p.cum;
    }
    const double target = (double)uniform[r] * total;
    const sample_find d = sample_scan(keys, keep, id_bits, top, inv_t, SAMPLE_FIND_GT, target, &sm);
    const int64_t pick = d.idx >= 0 ? d.idx : keep - 1;
    if (threadIdx.x == 0) tokens[r] = sample_key_id(keys[pick], id_bits), used[r] = 1;
}

// ---- the op -----------------------------------------------------------------

template <typename T>
static vidi_status sample_launch_greedy(cudaStream_t s, const T *l, int64_t B, int64_t V, int32_t *d_tok,
                                        vidi_err *err) {
    sample_greedy_kernel<T><<<(unsigned)B, SAMPLE_BLOCK, 0, s>>>(l, V, d_tok);
    return vidi_cuda_check_launch("sample: greedy kernel", err);
}

// Sorts and draws rows [r0, r0 + rows) of the logits.
template <typename T>
static vidi_status sample_launch_group(cudaStream_t s, const T *l, int64_t r0, int rows, int64_t V, int id_bits,
                                       uint64_t *k_in, uint64_t *k_out, int *counts, int *offsets, void *tmp,
                                       size_t tmp_bytes, const float *d_u, double inv_t,
                                       const vidi_sample_params *p, int32_t *d_tok, int32_t *d_used,
                                       vidi_err *err) {
    vidi_status rc;
    const T *lg = l + r0 * V;
    sample_keys_kernel<T><<<rows, SAMPLE_BLOCK, 0, s>>>(lg, V, id_bits, rows, k_in, counts, offsets);
    if ((rc = vidi_cuda_check_launch("sample: key kernel", err)) != VIDI_OK) return rc;
    rc = vidi_cuda_check(cub::DeviceSegmentedRadixSort::SortKeys(tmp, tmp_bytes, k_in, k_out, (int)(rows * V), rows,
                                                                 offsets, offsets + 1, 0, 32 + id_bits, s),
                         "sample: segmented sort", err);
    if (rc != VIDI_OK) return rc;
    sample_draw_kernel<T><<<rows, SAMPLE_BLOCK, 0, s>>>(lg, V, id_bits, k_out, counts, d_u + r0, inv_t, p->top_k,
                                                        p->top_p, d_tok + r0, d_used + r0);
    return vidi_cuda_check_launch("sample: draw kernel", err);
}

extern "C" vidi_status vidi_cuda_sample(vidi_backend *be, const vidi_tensor *logits, const vidi_sample_params *p,
                                        uint64_t *rng_state, int32_t *out_tokens, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    cudaStream_t s = vidi_cuda_stream(be);
    void *dev = NULL;        // one stream-ordered allocation for everything
    uint64_t *saved = NULL;  // RNG states before the draw
    float *u = NULL;
    int32_t *h_used = NULL;
    int greedy = 0, drawn = 0;
    int64_t B = 0, V = 0;
    VIDI_CHECK(logits && logits->ndim >= 1 && logits->ndim <= VIDI_MAX_DIMS, err, VIDI_ERR_INVALID,
               "sample: logits must be a tensor of 1..%d dimensions", VIDI_MAX_DIMS);
    VIDI_CHECK(logits->dtype == VIDI_DTYPE_BF16 || logits->dtype == VIDI_DTYPE_F32, err, VIDI_ERR_INVALID,
               "sample: logits must be bf16 or f32, not %s", vidi_dtype_name(logits->dtype));
    VIDI_CHECK(p, err, VIDI_ERR_INVALID, "sample: params must be given");
    B = vidi_tensor_rows(logits);
    V = vidi_tensor_cols(logits);
    VIDI_CHECK(V >= 1 && V <= INT32_MAX, err, VIDI_ERR_INVALID, "sample: logits need 1..2^31-1 columns, not %lld",
               (long long)V);
    VIDI_CHECK(B <= INT32_MAX, err, VIDI_ERR_UNSUPPORTED, "sample: %lld rows exceed the grid", (long long)B);
    VIDI_CHECK(p->top_k >= 0, err, VIDI_ERR_INVALID, "sample: top_k %d must be >= 0", p->top_k);
    VIDI_CHECK(!isnan(p->top_p), err, VIDI_ERR_INVALID, "sample: top_p is NaN");
    VIDI_CHECK(out_tokens || B == 0, err, VIDI_ERR_INVALID, "sample: out_tokens must be given");
    greedy = !(p->temperature > 0.0f) || p->top_k == 1;
    VIDI_CHECK(greedy || rng_state || B == 0, err, VIDI_ERR_INVALID,
               "sample: rng_state must be given unless sampling is greedy");
    VIDI_CHECK(B == 0 || logits->data, err, VIDI_ERR_INVALID, "sample: logits have no data");
    if (B == 0) return VIDI_OK;

    if (greedy) {
        VIDI_TRY(vidi_cuda_check(cudaMallocAsync(&dev, (size_t)B * sizeof(int32_t), s), "sample: token buffer", err));
        int32_t *d_tok = (int32_t *)dev;
        if (logits->dtype == VIDI_DTYPE_BF16)
            VIDI_TRY(sample_launch_greedy(s, (const uint16_t *)logits->data, B, V, d_tok, err));
        else
            VIDI_TRY(sample_launch_greedy(s, (const float *)logits->data, B, V, d_tok, err));
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(out_tokens, d_tok, (size_t)B * sizeof(int32_t),
                                                 cudaMemcpyDeviceToHost, s),
                                 "sample: token copy", err));
        VIDI_TRY(vidi_cuda_check(cudaStreamSynchronize(s), "sample", err));
        goto fail;  // the common cleanup
    }

    {
        // Host draws, one per row, exactly as the CPU consumes them.
        saved = (uint64_t *)malloc((size_t)B * sizeof *saved);
        u = (float *)malloc((size_t)B * sizeof *u);
        h_used = (int32_t *)malloc((size_t)B * sizeof *h_used);
        VIDI_CHECK(saved && u && h_used, err, VIDI_ERR_NOMEM, "sample: out of memory for %lld rows", (long long)B);
        memcpy(saved, rng_state, (size_t)B * sizeof *saved);
        for (int64_t b = 0; b < B; b++) u[b] = vidi_rng_uniform(&rng_state[b]);
        drawn = 1;

        int id_bits = 1;
        while (id_bits < 31 && (1ll << id_bits) < V) id_bits++;
        const int64_t group = V >= SAMPLE_GROUP_KEYS ? 1 : (B < SAMPLE_GROUP_KEYS / V ? B : SAMPLE_GROUP_KEYS / V);
        const int64_t last = B % group ? B % group : group;

        // the sort's scratch, for a full group and for the last one
        size_t tmp_bytes = 0, t2 = 0;
        VIDI_TRY(vidi_cuda_check(cub::DeviceSegmentedRadixSort::SortKeys(
                                     NULL, tmp_bytes, (const uint64_t *)NULL, (uint64_t *)NULL, (int)(group * V),
                                     (int)group, (const int *)NULL, (const int *)NULL, 0, 32 + id_bits, s),
                                 "sample: sort size", err));
        VIDI_TRY(vidi_cuda_check(cub::DeviceSegmentedRadixSort::SortKeys(
                                     NULL, t2, (const uint64_t *)NULL, (uint64_t *)NULL, (int)(last * V), (int)last,
                                     (const int *)NULL, (const int *)NULL, 0, 32 + id_bits, s),
                                 "sample: sort size", err));
        if (t2 > tmp_bytes) tmp_bytes = t2;

        // layout: keys in, keys out, sort scratch, counts, offsets, u, tokens, used
        const size_t keys_bytes = (size_t)(group * V) * sizeof(uint64_t);
        const size_t tmp_off = 2 * keys_bytes, small_off = tmp_off + ((tmp_bytes + 255) & ~(size_t)255);
        const size_t small_bytes = (size_t)(group + 1) * sizeof(int) * 2 + (size_t)B * (sizeof(float) + 2 * sizeof(int32_t));
        VIDI_TRY(vidi_cuda_check(cudaMallocAsync(&dev, small_off + small_bytes, s), "sample: scratch", err));
        char *base = (char *)dev;
        uint64_t *k_in = (uint64_t *)base, *k_out = (uint64_t *)(base + keys_bytes);
        void *tmp = base + tmp_off;
        int *counts = (int *)(base + small_off), *offsets = counts + (group + 1);
        float *d_u = (float *)(offsets + (group + 1));
        int32_t *d_tok = (int32_t *)(d_u + B), *d_used = d_tok + B;
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(d_u, u, (size_t)B * sizeof(float), cudaMemcpyHostToDevice, s),
                                 "sample: uniform copy", err));

        const double inv_t = 1.0 / (double)p->temperature;
        for (int64_t r0 = 0; r0 < B; r0 += group) {
            const int rows = (int)(B - r0 < group ? B - r0 : group);
            if (logits->dtype == VIDI_DTYPE_BF16)
                VIDI_TRY(sample_launch_group(s, (const uint16_t *)logits->data, r0, rows, V, id_bits, k_in, k_out,
                                             counts, offsets, tmp, tmp_bytes, d_u, inv_t, p, d_tok, d_used, err));
            else
                VIDI_TRY(sample_launch_group(s, (const float *)logits->data, r0, rows, V, id_bits, k_in, k_out,
                                             counts, offsets, tmp, tmp_bytes, d_u, inv_t, p, d_tok, d_used, err));
        }
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(out_tokens, d_tok, (size_t)B * sizeof(int32_t),
                                                 cudaMemcpyDeviceToHost, s),
                                 "sample: token copy", err));
        VIDI_TRY(vidi_cuda_check(cudaMemcpyAsync(h_used, d_used, (size_t)B * sizeof(int32_t),
                                                 cudaMemcpyDeviceToHost, s),
                                 "sample: flag copy", err));
        VIDI_TRY(vidi_cuda_check(cudaStreamSynchronize(s), "sample", err));
        for (int64_t b = 0; b < B; b++)
            if (!h_used[b]) rng_state[b] = saved[b];  // the CPU draws nothing for such a row
    }

fail:
    if (rc != VIDI_OK && drawn) memcpy(rng_state, saved, (size_t)B * sizeof *saved);
    if (dev) cudaFreeAsync(dev, s);
    free(saved);
    free(u);
    free(h_used);
    return rc;
}

extern "C" vidi_status vidi_cuda_argmax_rows(vidi_backend *be, const vidi_tensor *logits, vidi_tensor *out,
                                             vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int64_t B = 0, V = 0;
    VIDI_CHECK(logits && logits->ndim >= 1 && logits->ndim <= VIDI_MAX_DIMS &&
                   (logits->dtype == VIDI_DTYPE_BF16 || logits->dtype == VIDI_DTYPE_F32),
               err, VIDI_ERR_INVALID, "argmax_rows: logits must be bf16 or f32 of 1..%d dimensions", VIDI_MAX_DIMS);
    B = vidi_tensor_rows(logits);
    V = vidi_tensor_cols(logits);
    VIDI_CHECK(V >= 1 && V <= INT32_MAX && B <= INT32_MAX, err, VIDI_ERR_INVALID, "argmax_rows: logits of %lld x %lld",
               (long long)B, (long long)V);
    VIDI_CHECK(out && out->dtype == VIDI_DTYPE_I32 && vidi_tensor_numel(out) == B && (out->data || B == 0), err,
               VIDI_ERR_INVALID, "argmax_rows: out must be i32 [%lld]", (long long)B);
    if (B == 0) return VIDI_OK;
    if (logits->dtype == VIDI_DTYPE_BF16)
        return sample_launch_greedy(vidi_cuda_stream(be), (const uint16_t *)logits->data, B, V, (int32_t *)out->data,
                                    err);
    return sample_launch_greedy(vidi_cuda_stream(be), (const float *)logits->data, B, V, (int32_t *)out->data, err);
fail:
    return rc;
}
