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

#endif
