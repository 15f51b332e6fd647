/* model/text.h — the Qwen2 decoder of Qwen2-VL / Qwen2.5-VL, written once
 * against the op interface (kernels/ops.h).
 *
 * Per layer: RMSNorm, q/k/v projections with bias, M-RoPE (3 axes split by
 * mrope_section), causal GQA attention over a KV cache, o_proj, residual,
 * RMSNorm, SwiGLU MLP, residual. Then the final RMSNorm and lm_head (the
 * embedding matrix when the embeddings are tied).
 *
 * A forward pass takes input embeddings (text embeddings with the vision
 * embeddings already scattered in: vidi_text_embed) and positions, appends
 * the new tokens' keys and values to a KV cache and returns the logits of
 * the rows asked for. Prefill is one forward over the prompt; decode is one
 * forward per token.
 *
 * Not thread-safe per model: embeddings and forwards share one scratch
 * buffer of backend memory that grows to the largest call and is freed with
 * the model. KV caches are per sequence.
 */
#ifndef VIDI_MODEL_TEXT_H
#define VIDI_MODEL_TEXT_H

#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"

typedef struct vidi_text vidi_text;

/* A replacement for the attention of a prompt (one sequence, every key new:
 * a prefill from the start) on a backend whose buffers are host memory:
 * layer l's q [T, Hq, D] (rotated), k and v [T, Hkv, D], into out [T, Hq,
 * D], causal, scale the q·k multiplier. The sparse prefill
 * (prefill/sparse.h) and the pattern search set it. Decode steps, prompts
 * after a prefix and device backends always use the backend's attention. */
typedef vidi_status (*vidi_text_attn_fn)(void *user, int layer, const vidi_tensor *q, const vidi_tensor *k,
                                         const vidi_tensor *v, vidi_tensor *out, float scale, vidi_err *err);
/* fn NULL: the backend's attention again. */
void vidi_text_set_prompt_attention(vidi_text *t, vidi_text_attn_fn fn, void *user);
/* The backend the model runs on. */
vidi_backend *vidi_text_backend(const vidi_text *t);
typedef struct vidi_kv_cache vidi_kv_cache;

/* Bind the text model's weights ("model.embed_tokens.weight",
 * "model.layers.N.*", "model.norm.weight", "lm_head.weight" unless tied)
 * from the checkpoint onto `be`: on the CPU backend the mapped tensors are
 * used in place, elsewhere they are uploaded. A missing tensor or a shape
 * that disagrees with cfg is an error naming the tensor. The checkpoint must
 * outlive the model. Freed by vidi_text_free. */
vidi_status vidi_text_load(const vidi_model_config *cfg, const vidi_checkpoint *ck,
                           vidi_backend *be, vidi_text **out, vidi_err *err);
void vidi_text_free(vidi_text *t);

int vidi_text_hidden_size(const vidi_text *t);
int vidi_text_vocab_size(const vidi_text *t);  /* rows of lm_head (config vocab_size) */

/* A KV cache for one sequence: per layer, K and V of `capacity` tokens,
 * contiguous in backend memory (act dtype). Freed by vidi_kv_cache_free. */
vidi_status vidi_kv_cache_create(const vidi_text *t, int64_t capacity, vidi_kv_cache **out,
                                 vidi_err *err);
void vidi_kv_cache_free(vidi_kv_cache *kv);
/* Tokens held / tokens that fit. */
int64_t vidi_kv_cache_len(const vidi_kv_cache *kv);
int64_t vidi_kv_cache_capacity(const vidi_kv_cache *kv);
/* Forget every token from `len` on (len <= the current length): rolls back
 * rejected draft tokens or restarts a sequence (len 0). */
vidi_status vidi_kv_cache_truncate(vidi_kv_cache *kv, int64_t len, vidi_err *err);

/* Input embeddings of n tokens into `out` (backend, act dtype, [n, hidden],
 * allocated by the caller): the embed_tokens rows of `ids` (host), then,
 * when `vision` (backend [n_vision, hidden]) is given, its rows written in
 * order over the tokens equal to the image or video pad id of the
 * configuration; their number must equal the vision rows (else
 * VIDI_ERR_INVALID). With vision NULL every token, pad ids included, gets
 * its embed_tokens row (decode steps). Ids outside the vocabulary are an
 * error. */
vidi_status vidi_text_embed(vidi_text *t, const int32_t *ids, int64_t n, const vidi_tensor *vision,
                            vidi_tensor *out, vidi_err *err);

/* Which rows of the new tokens get logits. */
typedef enum vidi_text_logits {
    VIDI_TEXT_LOGITS_NONE = 0, /* none (a prefill chunk that is not the last) */
    VIDI_TEXT_LOGITS_LAST = 1, /* the last new token: logits [1, V] */
    VIDI_TEXT_LOGITS_ALL = 2,  /* every new token: logits [T, V] */
    VIDI_TEXT_LOGITS_ROWS = 3, /* the rows listed in `rows`: logits [n_rows, V] */
} vidi_text_logits;

typedef struct vidi_text_out {
    vidi_text_logits which;
    const int32_t *rows;       /* ROWS only: host indices in [0, T) */
    int n_rows;                /* ROWS only */
    vidi_tensor *logits;       /* backend, act dtype, [rows, V], allocated by the caller;
                                * NULL only with NONE */
} vidi_text_out;

/* One forward pass over T new tokens.
 *   embeds: backend [T, hidden] (act dtype), not modified;
 *   pos: host int32 [T * 3], token-major (t, h, w) as vidi_mrope_positions
 *        writes them;
 * appends T tokens to `kv` (VIDI_ERR_RANGE when they do not fit; the cache
 * is left as it was) and writes the logits asked for in *out. On any error
 * the cache length is unchanged. Results may still be in flight on
 * asynchronous backends: copy_to_host waits. */
vidi_status vidi_text_forward(vidi_text *t, vidi_kv_cache *kv, const vidi_tensor *embeds,
                              const int32_t *pos, const vidi_text_out *out, vidi_err *err);

/* One decode step: the token `id` at positions pos (host [3], t h w) is
 * appended to `kv` and its logits written to `logits` (backend, act dtype,
 * [1, V]); equal to vidi_text_embed of the id followed by
 * vidi_text_forward of it with VIDI_TEXT_LOGITS_LAST, kernel for kernel.
 * With use_graph on a backend with graphs (ops.h graph_*), the step reads
 * its inputs from device buffers owned by the cache: the first step runs
 * eagerly, the second records a graph of the step that later steps replay
 * (recorded again when `logits` moves). Results may still be in flight. */
vidi_status vidi_text_decode_step(vidi_text *t, vidi_kv_cache *kv, int32_t id, const int32_t pos[3],
                                  vidi_tensor *logits, int use_graph, vidi_err *err);

/* ---- paged KV cache: many sequences, continuous batching ----
 *
 * A pool holds, per layer, K and V planes of n_blocks blocks of block_size
 * tokens (backend memory, act dtype). A sequence owns a list of blocks
 * (its block table) that grows as tokens are appended and shrinks when it
 * is truncated or freed; blocks are handed out from a host free list, so a
 * sequence never holds more than ceil(len / block_size) blocks plus what the
 * last failed append reserved. Not thread-safe: one thread drives a pool. */
typedef struct vidi_kv_pool vidi_kv_pool;
typedef struct vidi_kv_seq vidi_kv_seq;

typedef struct vidi_kv_pool_params {
    int block_size;        /* tokens per block (> 0; 16 is usual) */
    int64_t n_blocks;      /* blocks in the pool */
    int64_t max_seq_len;   /* tokens one sequence may hold (the block table's width) */
    int max_batch;         /* sequences one vidi_text_decode_batch may take */
} vidi_kv_pool_params;

/* Allocates the planes and the decode-step buffers. The model must outlive
 * the pool. Freed by vidi_kv_pool_free (sequences first). */
vidi_status vidi_kv_pool_create(vidi_text *t, const vidi_kv_pool_params *p, vidi_kv_pool **out,
                                vidi_err *err);
void vidi_kv_pool_free(vidi_kv_pool *pool);
int64_t vidi_kv_pool_free_blocks(const vidi_kv_pool *pool);
/* Rows a decode step of this pool takes at most (its max_batch). */
int vidi_kv_pool_max_batch(const vidi_kv_pool *pool);
/* Blocks a sequence of `tokens` tokens holds. */
int64_t vidi_kv_pool_blocks_for(const vidi_kv_pool *pool, int64_t tokens);

/* An empty sequence in the pool; vidi_kv_seq_free gives its blocks back. */
vidi_status vidi_kv_seq_create(vidi_kv_pool *pool, vidi_kv_seq **out, vidi_err *err);
void vidi_kv_seq_free(vidi_kv_seq *s);
int64_t vidi_kv_seq_len(const vidi_kv_seq *s);
/* Forget every token from `len` on (len <= the current length) and give
 * back the blocks no longer needed. */
vidi_status vidi_kv_seq_truncate(vidi_kv_seq *s, int64_t len, vidi_err *err);

/* vidi_text_forward for a sequence of a pool: T new tokens (a prompt or a
 * chunk of one) appended to `s`, logits as `out` asks. Blocks are taken
 * from the pool first: VIDI_ERR_RANGE when the pool has too few free blocks
 * or the sequence would pass max_seq_len (nothing is appended). */
vidi_status vidi_text_forward_paged(vidi_text *t, vidi_kv_seq *s, const vidi_tensor *embeds,
                                    const int32_t *pos, const vidi_text_out *out, vidi_err *err);

/* One decode step of B rows of one pool (1 <= B <= max_batch): token
 * ids[b] at positions pos[3b .. 3b+2] (t, h, w) is appended to seqs[b], and
 * its logits are row b of `logits` (backend, act dtype, [B, V]). A sequence
 * may have several rows, consecutive: its next tokens in order, each row
 * attending to the sequence's keys up to its own (speculative verification
 * and drafting, in the same kernels as a plain step). Each sequence's new
 * blocks, when it needs them, are taken first; VIDI_ERR_RANGE when the pool
 * runs out (no sequence is appended to; blocks taken stay with their
 * sequences). With use_graph on a backend with
 * graphs, the step is recorded once per batch size (and `logits` buffer)
 * after one eager step, and replayed. Results may still be in flight. */
vidi_status vidi_text_decode_batch(vidi_text *t, vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs,
                                   const int32_t *ids, const int32_t *pos, vidi_tensor *logits,
                                   int use_graph, vidi_err *err);

/* Greedy decode steps of B sequences chained on the device, with one wait
 * at the end (the draft model's proposals, decode/decode.c): row b (a
 * sequence at most once) runs n_steps[b] steps (1..64, non-increasing over
 * the rows: step j has the rows with n_steps[b] > j); its step 0 appends
 * lag[b] at lag_pos[3b ..] when lag is given and lag[b] >= 0 (a token the
 * sequence has not seen yet; no argmax is taken there), then ids[b]; each
 * later step appends the argmax of the step before (the backend's
 * argmax_rows, sample's greedy rule); positions pos[3 (j B + b) ..] for
 * step j. tokens[j B + b] (host, [n_steps[0], B]) gets step j's argmax of
 * row b, after a wait; with tokens NULL nothing waits (vidi_text_chain_tokens).
 * logits: backend memory of at least B rows plus the lag tokens
 * [R, V] that the steps write (a fixed buffer keeps the recorded graphs);
 * step 0's rows (B plus the lag tokens) must fit the pool's max_batch.
 * Blocks are taken first (VIDI_ERR_RANGE as for vidi_text_decode_batch). */
vidi_status vidi_text_decode_chain(vidi_text *t, vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs,
                                   const int32_t *lag, const int32_t *lag_pos, const int *n_steps,
                                   const int32_t *ids, const int32_t *pos, vidi_tensor *logits, int32_t *tokens,
                                   vidi_err *err);
/* The device tokens [n_steps[0], B] of the pool's last vidi_text_decode_chain
 * (valid until its next chain): with tokens NULL the chain does not wait,
 * and a later step of the same backend reads them (vidi_text_decode_rows). */
const int32_t *vidi_text_chain_tokens(const vidi_kv_pool *pool);

/* Token ids of a step that come from backend memory: rows [row, row + n)
 * get src[0 .. n) (i32), copied on the device after the host's ids. */
typedef struct vidi_dev_ids {
    int row;
    const int32_t *src;
    int n;
} vidi_dev_ids;

/* vidi_text_decode_batch with the rows in any order: row r is token
 * len + offs[r] of seqs[r] (a sequence's rows have the offsets 0 .. c - 1,
 * each once), with ids[r] from the host or, for the rows dev lists, from
 * backend memory (the draft model's chained tokens going straight into the
 * target's verification, decode/decode.c). Recorded graphs as use_graph. */
vidi_status vidi_text_decode_rows(vidi_text *t, vidi_kv_pool *pool, int R, vidi_kv_seq *const *seqs,
                                  const int32_t *offs, const int32_t *ids, const int32_t *pos, const vidi_dev_ids *dev,
                                  int n_dev, vidi_tensor *logits, vidi_err *err);

/* ---- KV hand-off between pools ----
 *
 * A sequence's keys and values leave one pool and enter another (a prefill
 * worker's and a decode worker's, possibly in another process, with another
 * block size, block table or max_batch) through a host buffer of one layout.
 * For n tokens, row-major, no padding, in vidi_kv_pool_dtype:
 *     for layer l = 0 .. layers - 1:
 *         K of layer l: [n, kv_heads, head_dim]
 *         V of layer l: [n, kv_heads, head_dim]
 * that is vidi_kv_seq_export_bytes(pool, n) = layers * 2 * n * kv_heads *
 * head_dim * dtype size bytes. K is stored as the cache holds it, rotary
 * embedding applied: the tokens keep the positions they were computed at,
 * and the receiver must go on with the positions that follow (for M-RoPE
 * the next t position is the sender's, not the token count). The values
 * only make sense to a pool of the same model weights; a receiver checks
 * at least that dtype and layout agree before importing. */

/* The dtype of the pool's keys and values: the backend's act dtype (F32 on
 * the CPU, BF16 on CUDA). */
vidi_dtype vidi_kv_pool_dtype(const vidi_kv_pool *pool);
/* The pool's layers, kv heads and head dim (any pointer may be NULL). */
void vidi_kv_pool_layout(const vidi_kv_pool *pool, int *layers, int *kv_heads, int *head_dim);
/* Bytes of n tokens in the hand-off layout (0 when n <= 0). */
size_t vidi_kv_seq_export_bytes(const vidi_kv_pool *pool, int64_t n);

/* Copy tokens [start, start + n) of `s`, every layer's K and V, into `host`
 * (host memory of host_bytes = vidi_kv_seq_export_bytes(pool, n) bytes) in
 * the layout above; complete when this returns. n = 0 copies nothing.
 * VIDI_ERR_INVALID when the range is not within the sequence's length or
 * host_bytes differs; the sequence is never changed. Uses the model's
 * scratch buffer (not while another call on the model runs). */
vidi_status vidi_kv_seq_export(const vidi_kv_seq *s, int64_t start, int64_t n, void *host, size_t host_bytes,
                               vidi_err *err);

/* Append n tokens given in the layout above (`host`, host_bytes =
 * vidi_kv_seq_export_bytes(pool, n)) to the end of `s`; afterwards the
 * sequence continues (vidi_text_forward_paged, vidi_text_decode_batch)
 * exactly as if the tokens had been computed into it. Blocks are taken from
 * the pool first: VIDI_ERR_RANGE when it has too few free blocks or the
 * sequence would pass max_seq_len; VIDI_ERR_INVALID when host_bytes
 * differs. On any error nothing is appended and no block is kept. `host`
 * may be reused when this returns; the copies may still be in flight,
 * ordered before later ops. Uses the model's scratch buffer. */
vidi_status vidi_kv_seq_import(vidi_kv_seq *s, const void *host, size_t host_bytes, int64_t n, vidi_err *err);

/* The same with the hand-off buffer in backend memory (or memory mapped
 * into it, such as another process's CUDA IPC range, which `copy` reads).
 * Both may return with the copies still in flight on the backend's
 * stream: synchronize before handing `dev` to someone else (export) or
 * letting its owner reuse it (import). */
vidi_status vidi_kv_seq_export_dev(const vidi_kv_seq *s, int64_t start, int64_t n, void *dev, size_t bytes,
                                   vidi_err *err);
vidi_status vidi_kv_seq_import_dev(vidi_kv_seq *s, const void *dev, size_t bytes, int64_t n, vidi_err *err);

#endif
