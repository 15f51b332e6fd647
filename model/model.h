/* model/model.h — a loaded Qwen2-VL / Qwen2.5-VL model: configuration,
 * mapped checkpoint, vision tower and text model on one backend.
 */
#ifndef VIDI_MODEL_MODEL_H
#define VIDI_MODEL_MODEL_H

#include "core/err.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/vision.h"

typedef struct vidi_text vidi_text; /* model/text.c */

typedef struct vidi_model {
    vidi_model_config cfg;
    vidi_backend *be;        /* not owned */
    vidi_checkpoint *ck;     /* owned */
    vidi_vision *vision;     /* owned */
    vidi_text *text;         /* owned */
} vidi_model;

/* Load config, checkpoint and both towers from a Hugging Face folder onto
 * `be`. Freed by vidi_model_free. */
vidi_status vidi_model_load(const char *model_dir, vidi_backend *be, vidi_model **out, vidi_err *err);
void vidi_model_free(vidi_model *m);

/* ---- moving data between the host and any backend ----
 * The model code is written once for every backend: activations have
 * be->act_dtype (F32 on CPU, BF16 on CUDA) and, where the backend's memory is
 * not host memory (be->host_memory 0), weights are copied in be->weight_dtype.
 * These helpers do the conversions on the host side. */

/* Make the checkpoint view *t usable by `be`. With host memory it is used in
 * place (nothing is copied; *owned is NULL). Otherwise a backend buffer is
 * allocated, the values are converted from t->dtype (F32, BF16 or F16) to
 * be->weight_dtype and copied in, and t is rewritten to point at it with the
 * new dtype; *owned receives the buffer for the caller to buf_free. The copy
 * has landed when this returns (the host staging is freed). */
vidi_status vidi_weight_upload(vidi_backend *be, vidi_tensor *t, void **owned, vidi_err *err);

/* As vidi_weight_upload into caller-owned backend memory `dst` (room for
 * the tensor in be->weight_dtype), e.g. one part of a fused weight; *t is
 * rewritten to point at it. Not for host-memory backends. */
vidi_status vidi_weight_upload_to(vidi_backend *be, vidi_tensor *t, void *dst, vidi_err *err);

/* Copy n host floats into backend memory `dst` as be->act_dtype (converted
 * on the host when that is not F32). Waits for the copy. */
vidi_status vidi_upload_f32(vidi_backend *be, void *dst, const float *src, size_t n, vidi_err *err);

/* Copy n values of be->act_dtype from backend memory `src` to host floats
 * (waits for pending work, as copy_to_host does). */
vidi_status vidi_download_f32(vidi_backend *be, float *dst, const void *src, size_t n, vidi_err *err);

#endif
