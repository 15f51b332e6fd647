/* kernels/ops.h — the op interface: one table of functions per backend.
 *
 * Models are written once against this table; the CPU backend (kernels/cpu)
 * is the readable reference and the CI path, the CUDA backend implements the
 * same table later. Every op works on vidi_tensor views whose data live in
 * the backend's memory (host memory for CPU, device memory for CUDA).
 *
 * Conventions
 *  - Shapes are PyTorch order, row-major, contiguous. "rows" means the product
 *    of all dimensions but the last.
 *  - Activations have dtype be->act_dtype (F32 on CPU). Weights may be F32,
 *    BF16 or F16; arithmetic accumulates in fp32.
 *  - Ops may run asynchronously (CUDA); copy_to_host and synchronize wait.
 *  - In-place use (y == x) is allowed where an op says so.
 *  - Ops check shapes and dtypes and return VIDI_ERR_INVALID /
 *    VIDI_ERR_UNSUPPORTED with a message in *err; they never abort.
 */
#ifndef VIDI_KERNELS_OPS_H
#define VIDI_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

typedef struct vidi_backend vidi_backend;

/* Rotary embedding, general form. For head dimension D there are D/2 pairs
 * (i, i + D/2) rotated NeoX-style (rotate_half). Pair i uses the position on
 * axis pair_axis[i] of its token and the inverse frequency pair_inv_freq[i]:
 *     angle = (float)pos[t * n_axes + pair_axis[i]] * pair_inv_freq[i]
 *     x'[i]       = x[i] * cos(angle) - x[i + D/2] * sin(angle)
 *     x'[i + D/2] = x[i + D/2] * cos(angle) + x[i] * sin(angle)
 * This one form covers 1-D rope (n_axes 1), the vision tower's 2-D rope
 * (n_axes 2: row, column; frequencies restart per axis) and the text
 * model's 3-section M-RoPE (n_axes 3: t, h, w by mrope_section). The
 * pair tables are host memory, length head_dim / 2. angle is computed in
 * fp32 and cos/sin of it in fp32, as the reference does. */
typedef struct vidi_rope_spec {
    int head_dim;
    int n_axes;                  /* 1..3 */
    const int32_t *pair_axis;    /* [head_dim/2] */
    const float *pair_inv_freq;  /* [head_dim/2] */
} vidi_rope_spec;

/* Variable-length attention over packed sequences.
 *   q: [Tq, Hq, D], k and v: [Tk, Hkv, D], out: [Tq, Hq, D]; Hq % Hkv == 0,
 *   query head h reads kv head h / (Hq / Hkv) (GQA).
 *   cu_q / cu_k: host arrays of n_seqs + 1 offsets (cu[0] = 0, cu[n] = T).
 *   Sequence s has queries [cu_q[s], cu_q[s+1]) and keys [cu_k[s], cu_k[s+1]).
 *   causal: query j of a sequence with Lq queries and Lk keys sits at
 *   position Lk - Lq + j and sees keys 0..Lk - Lq + j (a KV cache prefix
 *   followed by the new tokens). Non-causal: sees all Lk keys.
 *   scale multiplies q·k before the softmax (usually 1/sqrt(D)).
 *   A query that sees no key gets a zero output. */
typedef struct vidi_attn_args {
    const int32_t *cu_q;
    const int32_t *cu_k;
    int n_seqs;
    int causal;
    float scale;
} vidi_attn_args;

/* Sampling. temperature <= 0 or top_k == 1 is greedy (argmax, lowest index
 * on ties). Otherwise: logits / temperature, keep the top_k (0 = all), then
 * the smallest set whose probability reaches top_p (1 = all), renormalise
 * and draw with the caller's RNG state (xoshiro-style 64-bit state advanced
 * by the op; same seed, same draw on every backend). */
typedef struct vidi_sample_params {
    float temperature;
    int top_k;
    float top_p;
} vidi_sample_params;

typedef enum vidi_act {
    VIDI_ACT_GELU_ERF = 0,   /* 0.5 x (1 + erf(x / sqrt 2)), nn.GELU() */
    VIDI_ACT_GELU_TANH = 1,  /* tanh approximation */
    VIDI_ACT_QUICK_GELU = 2, /* x * sigmoid(1.702 x) */
    VIDI_ACT_SILU = 3,       /* x * sigmoid(x) */
} vidi_act;

typedef struct vidi_backend_ops {
    /* ---- memory ---- */
    /* Backend memory of `bytes` bytes (NULL on failure); freed by buf_free. */
    void *(*buf_alloc)(vidi_backend *be, size_t bytes);
    void (*buf_free)(vidi_backend *be, void *p);
    /* host_src may be freed or reused as soon as copy_to_device returns (the
     * backend has copied or staged it); the device copy itself may still be
     * in flight, ordered before every later op. */
    vidi_status (*copy_to_device)(vidi_backend *be, void *dst, const void *host_src, size_t bytes, vidi_err *err);
    vidi_status (*copy_to_host)(vidi_backend *be, void *host_dst, const void *src, size_t bytes, vidi_err *err);
    /* device-to-device copy of raw bytes (ranges must not overlap) */
    vidi_status (*copy)(vidi_backend *be, void *dst, const void *src, size_t bytes, vidi_err *err);
    vidi_status (*synchronize)(vidi_backend *be, vidi_err *err);
    /* Optional (NULL where absent: callers convert on the host and use
     * copy_to_device): n host values of src_dtype into backend memory dst
     * as dst_dtype (both float dtypes: F32, BF16, F16), converted on the
     * way. The host source may be reused when this returns; the copy may
     * still be in flight, ordered before later ops like copy_to_device. */
    vidi_status (*upload_convert)(vidi_backend *be, void *dst, vidi_dtype dst_dtype, const void *src,
                                  vidi_dtype src_dtype, size_t n, vidi_err *err);

    /* ---- dense algebra ---- */
    /* y[M,N] = x[M,K] · w[N,K]^T (+ bias[N]); w in any weight dtype, bias
     * may be NULL. x may have any leading shape (rows = M). */
    vidi_status (*matmul)(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                          const vidi_tensor *bias, vidi_tensor *y, vidi_err *err);
    /* y[M,N] += x[M,K] · w[N,K]^T (+ bias[N]): a residual add fused into
     * the product (y must not alias x, w or bias). Optional: NULL where
     * absent (callers then use matmul and add). */
    vidi_status (*matmul_acc)(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                              const vidi_tensor *bias, vidi_tensor *y, vidi_err *err);
    /* y = a + b, same shape (y may alias a or b). */
    vidi_status (*add)(vidi_backend *be, const vidi_tensor *a, const vidi_tensor *b,
                       vidi_tensor *y, vidi_err *err);

    /* ---- normalisation (per row over the last dimension; y may alias x) ---- */
    /* y = x / sqrt(mean(x^2) + eps) * w */
    vidi_status (*rms_norm)(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                            float eps, vidi_tensor *y, vidi_err *err);
    /* y = (x - mean) / sqrt(var + eps) * w + b (biased variance; b may be NULL) */
    vidi_status (*layer_norm)(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                              const vidi_tensor *b, float eps, vidi_tensor *y, vidi_err *err);

    /* ---- activations ---- */
    /* y = act(x), elementwise (y may alias x). */
    vidi_status (*act)(vidi_backend *be, vidi_act kind, const vidi_tensor *x, vidi_tensor *y,
                       vidi_err *err);
    /* y = act(gate) * up, elementwise; kind is usually SILU (y may alias either). */
    vidi_status (*act_mul)(vidi_backend *be, vidi_act kind, const vidi_tensor *gate,
                           const vidi_tensor *up, vidi_tensor *y, vidi_err *err);
    /* Row-wise softmax over the last dimension (y may alias x). */
    vidi_status (*softmax)(vidi_backend *be, const vidi_tensor *x, vidi_tensor *y, vidi_err *err);

    /* ---- rotary ---- */
    /* In place on x: [T, H, D]. pos: backend i32 tensor [T, n_axes]. */
    vidi_status (*rope)(vidi_backend *be, vidi_tensor *x, const vidi_tensor *pos,
                        const vidi_rope_spec *spec, vidi_err *err);

    /* Optional (NULL where absent): the attention inputs of one layer from
     * a fused q/k/v projection, in one pass (decode steps).
     *   qkv: [T, (Hq + 2 Hkv) * D], each row the q heads, then the k heads,
     *        then the v heads; pos: backend i32 [T, spec->n_axes];
     *   q_out: [T, Hq, D] gets the q heads rotated (as rope does);
     *   k_cache, v_cache: [R, Hkv * D]; slots: backend i32 [T], distinct:
     *   row slots[t] of k_cache gets token t's k heads rotated, of v_cache
     *   its v heads as they are.
     * A slot outside [0, R) is an error reported as for scatter_rows (on
     * CUDA at the next wait): no cache row is written (q_out may be). */
    vidi_status (*qkv_rope_store)(vidi_backend *be, const vidi_tensor *qkv, const vidi_tensor *pos,
                                  const vidi_rope_spec *spec, vidi_tensor *q_out, const vidi_tensor *slots,
                                  vidi_tensor *k_cache, vidi_tensor *v_cache, vidi_err *err);

    /* ---- attention ---- */
    vidi_status (*attention)(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                             const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                             vidi_err *err);

    /* Optional (NULL where absent; backends with graphs have it): attention
     * with n_seqs 1 whose key count is read at run time from k_len_dev
     * (backend i32 [1], clamped to [0, k's rows]), so that a recorded graph
     * stays valid as a KV cache grows; cu_k[1] (= k's rows) only bounds it.
     * Otherwise exactly `attention` (same kernel). */
    vidi_status (*attention_klen)(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                  const vidi_tensor *v, vidi_tensor *out, const vidi_attn_args *args,
                                  const int32_t *k_len_dev, vidi_err *err);

    /* Decode attention over a paged KV cache: one query per sequence.
     *   q: [B, Hq, D]; k_cache, v_cache: [n_blocks, block_size, Hkv, D];
     *   block_table: backend i32 [B, max_blocks] (block ids, -1 unused);
     *   seq_lens: backend i32 [B], keys of each sequence (its new token
     *   included, already written to the cache); out: [B, Hq, D].
     *   Key j of sequence b is row j % block_size of block
     *   block_table[b][j / block_size]. A sequence of 0 keys gives zeros.
     *   May be NULL in a backend without paged attention. */
    vidi_status (*attention_paged)(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k_cache,
                                   const vidi_tensor *v_cache, const vidi_tensor *block_table,
                                   const vidi_tensor *seq_lens, float scale, vidi_tensor *out,
                                   vidi_err *err);

    /* ---- gather / scatter of rows ---- */
    /* out[i, :] = table[ids[i], :] for a backend i32 ids [N]; the table may
     * be a weight (any weight dtype), out has act dtype. Ids out of range
     * are an error: nothing is written, and the error (VIDI_ERR_INVALID,
     * message naming gather_rows) is returned either by this call or, on
     * asynchronous backends (CUDA checks on the device without waiting), by
     * the next synchronize / copy_to_host / waiting copy_to_device. Used for
     * token embeddings and row permutations. */
    vidi_status (*gather_rows)(vidi_backend *be, const vidi_tensor *table, const vidi_tensor *ids,
                               vidi_tensor *out, vidi_err *err);
    /* dst[idx[i], :] = src[i, :] for a backend i32 idx [N] (vision
     * embeddings into image/video pad positions). An idx out of range is
     * reported as for gather_rows (possibly at the next wait). */
    vidi_status (*scatter_rows)(vidi_backend *be, const vidi_tensor *src, const vidi_tensor *idx,
                                vidi_tensor *dst, vidi_err *err);

    /* ---- sampling ---- */
    /* logits: [B, V] act dtype (backend memory); out_tokens: host [B]. One
     * RNG state per row (host, advanced in place). */
    vidi_status (*sample)(vidi_backend *be, const vidi_tensor *logits,
                          const vidi_sample_params *params, uint64_t *rng_state,
                          int32_t *out_tokens, vidi_err *err);
    /* The greedy token of each row of logits ([B, V] act dtype) by sample's
     * greedy rule (the largest, lowest index on ties, NaN skipped) into out
     * (backend memory, i32 [B]); nothing waits for it (the draft model's
     * steps chained on the device, decode/decode.c). */
    vidi_status (*argmax_rows)(vidi_backend *be, const vidi_tensor *logits, vidi_tensor *out, vidi_err *err);

    /* ---- graphs (optional: NULL where the backend has none, e.g. CPU) ----
     * graph_begin starts recording the ops queued after it (nothing runs);
     * graph_end stops and returns an executable graph in *graph (on failure
     * recording is still ended and *graph is NULL); graph_launch replays it
     * on the backend's stream, ordered after earlier ops, with the device
     * pointers and sizes it was recorded with: inputs that change between
     * replays must be read by the recorded ops from device memory (written
     * e.g. by copy_to_device before the launch). Ops queued while recording
     * must not wait (no copy_to_host, synchronize, sample) nor upload from
     * the host. graph_free releases a graph (NULL is fine). */
    vidi_status (*graph_begin)(vidi_backend *be, vidi_err *err);
    vidi_status (*graph_end)(vidi_backend *be, void **graph, vidi_err *err);
    vidi_status (*graph_launch)(vidi_backend *be, void *graph, vidi_err *err);
    void (*graph_free)(vidi_backend *be, void *graph);

    /* ---- memory shared with other processes (optional: NULL where the
     * backend has none, e.g. CPU; CUDA IPC on CUDA) ----
     * ipc_alloc: `bytes` of backend memory that other processes on this
     * host can map, and its 64-byte handle; freed by ipc_free. ipc_open
     * maps another process's ipc_alloc memory (not this process's own) and
     * gives its base address here and its size in bytes, also when it
     * lives on another device of the host (peer access is enabled as
     * needed); ipc_close unmaps it.
     * `copy` reads and writes mapped memory like the backend's own. */
    void *(*ipc_alloc)(vidi_backend *be, size_t bytes, uint8_t handle[64], vidi_err *err);
    void (*ipc_free)(vidi_backend *be, void *p);
    vidi_status (*ipc_open)(vidi_backend *be, const uint8_t handle[64], void **base, size_t *bytes, vidi_err *err);
    void (*ipc_close)(vidi_backend *be, void *base);

    /* Optional (NULL where absent; CUDA has it): attention over packed
     * sparse prefill plans (vidi_sparse_pack, prefill/sparse.h) in backend
     * memory as i32 arrays: rows [.], tiles [n_tiles, 8] (row0, n_rows,
     * seg0, n_segs, col0, n_cols, head, keys; n_rows <= 64), segs [., 4]
     * (a, e, step, keys of the tile's segments before it), cols [.].
     * q [T, Hq, D], k and v [T, Hkv, D], out like q (D 64 or 128; only the
     * tiles' rows of their heads are written). Row i of a tile attends to
     * the tile's keys j <= i; a row without keys gets zeros. The CPU twin
     * is vidi_sparse_attend_plan. */
    vidi_status (*sparse_attention)(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k,
                                    const vidi_tensor *v, vidi_tensor *out, const int32_t *rows,
                                    const int32_t *tiles, int64_t n_tiles, const int32_t *segs,
                                    const int32_t *cols, float scale, vidi_err *err);

    /* Optional (CUDA has it): the attention mass of query rows [r0, r1)
     * (at most 64) of every query head, for online estimation (CPU twin:
     * vidi_sparse_last_mass, prefill/sparse.h). q [T, Hq, D], k [T, Hkv, D]
     * (keys [0, r1) are read), scale the q·k multiplier; col and diag
     * [Hq, r1] f32 in backend memory, overwritten: col[h][j] = the sum over
     * the rows i >= j of p_ij, diag[h][d] the sum of the p_ij with i - j = d
     * (diag NULL: not computed). D 64 or 128. */
    vidi_status (*sparse_mass)(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k, int64_t r0, int64_t r1,
                               float scale, float *col, float *diag, vidi_err *err);

    void (*destroy)(vidi_backend *be);
} vidi_backend_ops;

struct vidi_backend {
    const char *name;        /* "cpu", "cuda" */
    const vidi_backend_ops *ops;
    vidi_dtype act_dtype;    /* dtype of activations */
    int host_memory;         /* 1: buffers are host memory, so mapped weights
                                and host arrays can be used in place */
    vidi_dtype weight_dtype; /* dtype weights are uploaded in when they are
                                copied (not host_memory): BF16 on CUDA */
    void *ctx;               /* backend private state */
};

/* res += x · w^T (+ bias): the backend's matmul_acc where it has one, else
 * matmul into tmp (shaped like res) and add. */
static inline vidi_status vidi_matmul_residual(vidi_backend *be, const vidi_tensor *x, const vidi_tensor *w,
                                               const vidi_tensor *bias, vidi_tensor *res, vidi_tensor *tmp,
                                               vidi_err *err) {
    if (be->ops->matmul_acc) return be->ops->matmul_acc(be, x, w, bias, res, err);
    vidi_status rc = be->ops->matmul(be, x, w, bias, tmp, err);
    return rc != VIDI_OK ? rc : be->ops->add(be, res, tmp, res, err);
}

/* Seed an RNG state for `sample` (splitmix64 of the seed). */
uint64_t vidi_rng_seed(uint64_t seed);
/* Next 64 random bits (xorshift64*), advancing *state. */
uint64_t vidi_rng_next(uint64_t *state);
/* Uniform float in [0, 1) with 24 random bits. */
float vidi_rng_uniform(uint64_t *state);

/* The CPU backend. threads <= 0 uses the default pool. NULL on failure (err
 * filled). Freed by be->ops->destroy(be). */
vidi_backend *vidi_backend_cpu_create(int threads, vidi_err *err);

/* The CUDA backend on device `device` (kernels/cuda; only in builds with
 * VIDI_HAVE_CUDA): bf16 activations, bf16 weights, fp32 accumulation. NULL
 * with err filled when there is no such device or CUDA fails. Freed by
 * be->ops->destroy(be). */
vidi_backend *vidi_backend_cuda_create(int device, vidi_err *err);
/* Exact mode on (1) or off (0) for the CUDA backend `be`: batch-invariant
 * kernels, so that a row's result does not depend on how many rows an op
 * has: matmul through a plain fixed-order kernel instead of cuBLASLt, the
 * split count of attention_paged from the table's capacity alone. Then a
 * speculative step's rows equal plain decode steps bit for bit (greedy
 * speculation gives plain greedy's tokens). Much slower matmuls: for tests
 * and for whoever needs the guarantee. Set it before running anything (a
 * recorded graph keeps the kernels it was recorded with); also on at create
 * when the environment has VIDI_CUDA_EXACT=1. VIDI_ERR_INVALID for another
 * backend. */
vidi_status vidi_backend_cuda_set_exact(vidi_backend *be, int on, vidi_err *err);

#endif
