/* model/checkpoint.h — the weights of a Hugging Face folder, memory-mapped.
 *
 * Opens model.safetensors, or model.safetensors.index.json and its shards,
 * validates every header (see safetensors.h) and looks tensors up by their
 * canonical Hub name ("model.layers.0.self_attn.q_proj.weight",
 * "visual.blocks.0.attn.qkv.weight", "lm_head.weight"), also trying the
 * names of checkpoints re-saved by newer transformers
 * ("model.language_model.layers...", "model.visual.blocks...").
 * Tensor views point into the mapping and live until vidi_checkpoint_close.
 */
#ifndef VIDI_MODEL_CHECKPOINT_H
#define VIDI_MODEL_CHECKPOINT_H

#include <stdint.h>

#include "core/err.h"
#include "core/tensor.h"

typedef struct vidi_checkpoint vidi_checkpoint;

/* Open the weights of a model folder. Freed by vidi_checkpoint_close.
 * model.safetensors is used when present, else model.safetensors.index.json,
 * whose shards are opened once each. A missing folder, weight file or shard
 * is VIDI_ERR_NOTFOUND; a malformed index, a shard name that is not a plain
 * file name (a '/' or "..") or a weight_map entry absent from its shard is
 * VIDI_ERR_FORMAT; shard errors are those of vidi_st_open. */
vidi_status vidi_checkpoint_open(const char *model_dir, vidi_checkpoint **out, vidi_err *err);
void vidi_checkpoint_close(vidi_checkpoint *ck);

/* 1 when a tensor of that canonical name (or an alias) exists. */
int vidi_checkpoint_has(const vidi_checkpoint *ck, const char *name);

/* A view of the tensor `name` (F32, F16 or BF16; other dtypes give
 * VIDI_ERR_UNSUPPORTED). When ndim > 0 the shape must equal `shape`, else
 * VIDI_ERR_FORMAT naming the file, the tensor, and both shapes. `shape` is
 * compared with the file's full shape (ndim up to VIDI_ST_MAX_DIMS = 8);
 * a tensor of more than VIDI_MAX_DIMS dimensions comes back with the
 * trailing ones folded into the last (the Conv3d patch embedding
 * [1280,3,2,14,14] as [1280,3,2,196]). A missing tensor
 * gives VIDI_ERR_NOTFOUND naming the folder and the tensor. */
vidi_status vidi_checkpoint_get(const vidi_checkpoint *ck, const char *name, int ndim,
                                const int64_t *shape, vidi_tensor *out, vidi_err *err);

/* Number of tensors over all shards. */
int vidi_checkpoint_count(const vidi_checkpoint *ck);
/* The name (as stored in the file) of tensor i, 0 <= i < count, in sorted
 * order; NULL when out of range. Lives until vidi_checkpoint_close. */
const char *vidi_checkpoint_name(const vidi_checkpoint *ck, int i);

#endif
