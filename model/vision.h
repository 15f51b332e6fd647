/* model/vision.h — the Qwen2-VL and Qwen2.5-VL vision towers.
 *
 * Input: patches as the HF processor lays them out — rows ordered (t,
 * h-block, w-block, h-in-merge, w-in-merge), each C*temporal*patch*patch
 * values (1176 with the defaults) — for n_items images/videos, item i having
 * grid (t, h, w) in patches and t*h*w rows. Output: one row per merged
 * token (t*h*w / merge^2 per item, items in order) of out_hidden_size.
 *
 * Qwen2-VL: patch embedding (a matmul), 2-D rotary over (row, column),
 * attention per temporal slice, LayerNorm blocks with a quick-GELU MLP,
 * merger. Qwen2.5-VL: RMSNorm, SwiGLU, window attention in window order
 * (full attention in fullatt_block_indexes), merger, inverse window order.
 */
#ifndef VIDI_MODEL_VISION_H
#define VIDI_MODEL_VISION_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"

typedef struct vidi_vision vidi_vision;

/* Bind (and upload) the tower's weights from the checkpoint. Wrong or
 * missing tensors are errors naming the tensor. Freed by vidi_vision_free.
 * On the "cpu" backend the tower reads the checkpoint's mapping in place,
 * so close the checkpoint only after vidi_vision_free; other backends get
 * copies. */
vidi_status vidi_vision_load(const vidi_model_config *cfg, const vidi_checkpoint *ck,
                             vidi_backend *be, vidi_vision **out, vidi_err *err);
void vidi_vision_free(vidi_vision *v);

/* Number of merged output rows for these grids. */
int64_t vidi_vision_out_rows(const vidi_vision *v, const int32_t (*grids)[3], int n_items);

/* Encode. pixels: host f32 [n_rows, patch_dim] with n_rows = sum t*h*w;
 * grids: n_items (t, h, w) with h and w multiples of the merge size; out:
 * backend tensor (act dtype) [vidi_vision_out_rows, out_hidden_size]
 * allocated by the caller. Each item is independent of the others (so items
 * and temporal slices may be encoded separately and concatenated). */
/* Not thread-safe per tower: activations live in one scratch buffer that
 * grows to the largest request and is freed with the tower. Returns
 * VIDI_ERR_INVALID for grids that do not match n_rows or the merge size
 * and for an output of the wrong shape or dtype. */
vidi_status vidi_vision_encode(vidi_vision *v, const float *pixels, int64_t n_rows,
                               const int32_t (*grids)[3], int n_items, vidi_tensor *out,
                               vidi_err *err);

#endif
