/* model/mrope.h — M-RoPE position ids (t, h, w) of a prompt with image and
 * video pad runs, by the original Qwen2-VL / Qwen2.5-VL rule.
 *
 * The rule (transformers 4.x get_rope_index and vLLM; transformers 5.x
 * differs for videos, see the fidelity notes of the project):
 *  - a text token takes the same value p on all three axes, where p is the
 *    previous maximum position + 1 (0 for the first token);
 *  - a vision block that starts where the next text position would be s
 *    covers t*h*w / merge^2 pad tokens laid out t-major over the merged grid
 *    (T = t, H = h / merge, W = w / merge); the token at (k, row, col) gets
 *        (s + tidx(k), s + row, s + col)
 *    with tidx(k) = k for Qwen2-VL (images and videos) and, for Qwen2.5-VL,
 *    tidx(k) = trunc(k * second_per_grid_t * tokens_per_second) for videos
 *    and 0 for images;
 *  - text after the block continues from the maximum of all the block's
 *    values + 1 (s + max(tidx(T-1), H-1, W-1) + 1), so a video long in time
 *    pushes the following text past its temporal extent;
 *  - rope_delta = max position + 1 - L; a decoded token at cache position c
 *    (its index in the whole sequence) takes c + rope_delta on all axes.
 *
 * Qwen2.5-VL's temporal product is evaluated in fp32 in the order
 * ((float)k * second_per_grid_t) * tokens_per_second and then truncated,
 * as PyTorch does it on the reference side.
 */
#ifndef VIDI_MODEL_MROPE_H
#define VIDI_MODEL_MROPE_H

#include <stdint.h>

#include "core/err.h"
#include "model/config.h"

typedef enum vidi_media_kind {
    VIDI_MEDIA_IMAGE = 0,
    VIDI_MEDIA_VIDEO = 1,
} vidi_media_kind;

/* One image or video as the position rule sees it. */
typedef struct vidi_mrope_item {
    vidi_media_kind kind;
    int32_t grid[3];           /* (t, h, w) in patches, before merging */
    float second_per_grid_t;   /* Qwen2.5-VL videos: seconds per temporal grid step */
} vidi_mrope_item;

typedef struct vidi_mrope_params {
    vidi_arch arch;
    int32_t image_token_id;
    int32_t video_token_id;
    int spatial_merge_size;
    float tokens_per_second;   /* Qwen2.5-VL only */
} vidi_mrope_params;

/* The parameters a model configuration implies. */
vidi_mrope_params vidi_mrope_params_from_config(const vidi_model_config *cfg);

/* Pad tokens one item occupies: t * h * w / merge^2, or -1 when the grid is
 * not valid (a non-positive side, h or w not a multiple of merge). */
int64_t vidi_mrope_item_tokens(const vidi_mrope_params *p, const vidi_mrope_item *item);

/* Positions of the n tokens `ids`.
 *
 * Items are matched, in order, to the image/video pad tokens of `ids`: at
 * the first pad token not yet covered, the next item must be of that kind
 * (image pad <-> VIDI_MEDIA_IMAGE) and the next vidi_mrope_item_tokens(item)
 * tokens must all be that pad token. A pad run longer or shorter than its
 * item, a kind mismatch, more items than runs or pad tokens left over are
 * VIDI_ERR_INVALID with a message saying which item and which token.
 *
 * pos: host int32 [n * 3], token-major (pos[i*3 + a], a = t, h, w: the
 * layout the rope op takes). rope_delta (may be NULL) receives
 * max position + 1 - n. Positions beyond INT32_MAX are VIDI_ERR_RANGE. */
vidi_status vidi_mrope_positions(const vidi_mrope_params *p, const int32_t *ids, int64_t n,
                                 const vidi_mrope_item *items, int n_items, int32_t *pos,
                                 int64_t *rope_delta, vidi_err *err);

/* Positions of a token decoded at cache position `cache_pos` (0-based index
 * in the whole sequence): cache_pos + rope_delta on all three axes. */
void vidi_mrope_decode_position(int64_t cache_pos, int64_t rope_delta, int32_t out[3]);

#endif
