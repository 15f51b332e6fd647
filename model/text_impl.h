/* model/text_impl.h — what model/text.c (one sequence, contiguous KV cache)
 * and model/text_paged.c (many sequences over a paged KV pool) share: the
 * model's state, the scratch carver, the decoder layers and the logits
 * head. Private to model/.
 */
#ifndef VIDI_MODEL_TEXT_IMPL_H
#define VIDI_MODEL_TEXT_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/text.h"

typedef struct text_layer {
    vidi_tensor ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd;
    /* Where weights are uploaded: q, k and v in one buffer ([Hq*D + 2*Hkv*D,
     * H] and its bias), wq/wk/wv and their biases being row blocks of it;
     * data NULL on backends that use the checkpoint in place. */
    vidi_tensor wqkv, bqkv;
} text_layer;

struct vidi_text {
    vidi_text_config cfg;
    int32_t image_token_id, video_token_id;
    vidi_backend *be;
    int weights_in_place;        /* 1: tensors point into the checkpoint mapping */
    vidi_tensor embed, norm, lm_head;
    text_layer *layers;
    void **owned;                /* uploaded weight buffers (freed with the model) */
    int n_owned, cap_owned;
    int32_t *pair_axis;          /* [head_dim / 2] */
    float *pair_inv_freq;        /* [head_dim / 2] */
    vidi_rope_spec rope;
    void *scratch;               /* backend memory */
    size_t scratch_bytes;
    vidi_text_attn_fn prompt_attn; /* vidi_text_set_prompt_attention */
    void *prompt_attn_user;
};

/* ---- scratch ---- */

#define TEXT_ALIGN 256

static inline size_t text_align(size_t n) { return (n + TEXT_ALIGN - 1) & ~(size_t)(TEXT_ALIGN - 1); }

/* Grow t->scratch to at least `bytes` (contents undefined). */
vidi_status text_scratch(vidi_text *t, size_t bytes, vidi_err *err);

/* Carves consecutive aligned pieces out of a buffer; with a NULL base it
 * only measures (pointers NULL, off the total). */
typedef struct text_carver {
    char *base;
    size_t off;
} text_carver;

static inline void *text_carve(text_carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->off : NULL;
    c->off += text_align(bytes);
    return p;
}

/* Activation buffers of T tokens (backend memory). */
typedef struct text_act {
    void *x, *h, *q, *k, *v, *a, *g, *u;
} text_act;

/* Carve the activation buffers of T rows (x, h, q, k, v, a, g, u) for the
 * model's shapes, es bytes a value. */
void text_carve_act(text_carver *cv, const vidi_text_config *c, int64_t T, size_t es, text_act *b);

/* A recorded decode step: its graph, the logits buffer it writes, and
 * whether the eager first run has happened. */
typedef struct text_graph {
    void *graph;
    void *logits;
    int eager;
} text_graph;

/* Run a decode step's ops through *g: the first run eagerly (one-time
 * set-up such as GEMM plans stays outside any recording), the next one
 * recorded, later ones replayed; recorded again when `logits` moves. The
 * backend must have the graph ops. */
vidi_status text_graph_step(vidi_backend *be, text_graph *g, vidi_status (*body)(void *ctx, vidi_err *err),
                            void *ctx, const vidi_tensor *logits, vidi_err *err);
void text_graph_free(vidi_backend *be, text_graph *g);

/* Where the decoder layers put the new tokens' keys and values and which
 * keys their attention reads. Layer l's K plane starts at
 * base + l * 2 * plane and its V plane one plane later; a plane holds `rows`
 * rows of kv_heads * head_dim.
 *   write: with `at` (backend i32 [T]) the new rows are scattered to those
 *          plane rows, else copied to rows append_at .. append_at + T - 1.
 *   read:  paged (block_size > 0): attention_paged over the plane seen as
 *          [rows / block_size, block_size, Hkv, D] with `table` and `lens`;
 *          else dense attention (attn, and k_len for attention_klen) over
 *          keys that are the new rows themselves (keys_new), or the plane
 *          rows listed in `gather` (backend i32 [Lk]) copied to gk / gv, or
 *          the first Lk plane rows. */
typedef struct text_kv_io {
    char *base;
    size_t plane;
    int64_t rows;
    const vidi_tensor *at;
    int64_t append_at;
    int block_size;
    const vidi_tensor *table, *lens;
    float scale;
    const vidi_attn_args *attn;
    int64_t Lk;
    const int32_t *k_len;
    int keys_new;
    const vidi_tensor *gather;
    void *gk, *gv;
} text_kv_io;

/* The decoder layers over T new tokens in b->x (updated in place) at
 * positions tpos (backend i32 [T, 3]). */
vidi_status text_layers(vidi_text *t, int64_t T, const text_act *b, const vidi_tensor *tpos,
                        const text_kv_io *io, vidi_err *err);

/* Rows of logits `out` asks for over T new tokens (0 for NONE), checking
 * the selection and the logits tensor. */
vidi_status text_out_rows(const vidi_text *t, const vidi_text_out *out, int64_t T, int64_t *R,
                          vidi_err *err);

/* The final norm and lm_head over the rows `out` selects of x [T, H]:
 * h ([R, H]), drows ([R] i32) and sel ([R, H]) are backend scratch. */
vidi_status text_head(vidi_text *t, void *x, int64_t T, const vidi_text_out *out, int64_t R, void *h,
                      void *drows, void *sel, vidi_err *err);

#endif
