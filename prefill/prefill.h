/* prefill/prefill.h — the prefill role, without sockets: a prompt whose
 * media items arrive as vision embeddings (from encode workers or the
 * MM-token cache) becomes a paged KV sequence and a first token.
 *
 * The router tokenizes the chat turn with one pad token per media item (it
 * does not know the grids before the media stage has run);
 * vidi_prefill_expand_pads turns each into its t*h*w/merge^2 run once the
 * grids are known, exactly as vidi_prompt_build does in one process.
 */
#ifndef VIDI_PREFILL_PREFILL_H
#define VIDI_PREFILL_PREFILL_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/mrope.h"
#include "model/text.h"

typedef struct vidi_prefill_item {
    vidi_media_kind kind;
    int32_t grid[3];          /* t, h, w in patches */
    float second_per_grid_t;  /* videos */
} vidi_prefill_item;

/* ids (n) hold exactly one image or video pad per item, in order and of the
 * item's kind; *out (malloc'd) gets each replaced by its run. Errors name the
 * item whose pad is missing or of the other kind. */
vidi_status vidi_prefill_expand_pads(const vidi_model_config *cfg, const int32_t *ids, int64_t n,
                                     const vidi_prefill_item *items, int n_items, int32_t **out, int64_t *n_out,
                                     vidi_err *err);

/* Merged vision rows of one item (t*h*w / merge^2). */
int64_t vidi_prefill_item_rows(const vidi_model_config *cfg, const vidi_prefill_item *item);

typedef struct vidi_prefill_result {
    int32_t first_token;
    int64_t rope_delta;       /* decode positions: vidi_mrope_decode_position(len, rope_delta) */
    int64_t prompt_tokens;
} vidi_prefill_result;

/* Prefill `ids` (pads already expanded, n tokens) into the empty sequence
 * `seq`: input embeddings with `vision` (backend tensor, act dtype, [sum of
 * the items' rows, hidden], items in prompt order; NULL when there are no
 * items) at the pads, M-RoPE positions, one paged forward, and the first
 * token sampled with `sample` from *rng. On failure the sequence is left
 * empty. */
vidi_status vidi_prefill_run(vidi_model *m, vidi_kv_seq *seq, const int32_t *ids, int64_t n,
                             const vidi_prefill_item *items, int n_items, const vidi_tensor *vision,
                             const vidi_sample_params *sample, uint64_t *rng, vidi_prefill_result *res,
                             vidi_err *err);

#endif
