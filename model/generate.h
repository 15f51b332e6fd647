/* model/generate.h — one request, in one process: vision encoding, input
 * embeddings, M-RoPE positions, prefill and the sampling loop.
 *
 * The caller gives the prompt as token ids with every image/video pad
 * already expanded to t*h*w / merge^2 copies (as the reference processor
 * does) and the media items in the order their pad runs appear.
 */
#ifndef VIDI_MODEL_GENERATE_H
#define VIDI_MODEL_GENERATE_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/mrope.h"
#include "model/tokenizer.h"

/* One image or video, preprocessed (media/ or the reference processor). */
typedef struct vidi_media {
    vidi_media_kind kind;
    const float *pixels;        /* host f32 [n_rows, patch_dim], rows as vision.h describes */
    int64_t n_rows;             /* must equal t * h * w */
    int32_t grid[3];            /* (t, h, w) in patches */
    float second_per_grid_t;    /* videos: temporal_patch_size / sample fps (Qwen2.5-VL positions) */
} vidi_media;

/* Called once per generated token, in order (index 0 is the first). The
 * end-of-sequence token, when one ends the run, is passed too. Return
 * nonzero to stop after this token. */
typedef int (*vidi_generate_token_fn)(void *user, int32_t token, int index);

typedef struct vidi_generate_params {
    int max_tokens;             /* at most this many new tokens (> 0) */
    vidi_sample_params sample;  /* temperature <= 0: greedy */
    uint64_t seed;              /* for vidi_rng_seed */
    int stop_at_eos;            /* 1: stop after an end-of-sequence id of the configuration */
    int prefill_chunk;          /* tokens per prefill forward; 0 = the whole prompt at once */
    int want_first_logits;      /* 1: return the logits of the first generated position */
    vidi_generate_token_fn on_token; /* may be NULL */
    void *user;
    /* Precomputed vision embeddings (an encode worker's or a cache's):
     * backend, act dtype, [sum of the items' merged tokens, hidden], items
     * in prompt order. When given, the vision tower is not run and the
     * items' pixels may be NULL (grids are still needed for positions). */
    const vidi_tensor *vision_embeds;
    /* 1: decode without graphs even where the backend has them (the plain
     * path, for checks); the results are the same either way. */
    int no_graphs;
} vidi_generate_params;

/* max_tokens 128, greedy, seed 0, stop at eos, whole-prompt prefill, no
 * first logits, no callback, vision computed from pixels, graphs on. */
vidi_generate_params vidi_generate_params_default(void);

typedef enum vidi_finish {
    VIDI_FINISH_LENGTH = 0,     /* max_tokens reached */
    VIDI_FINISH_EOS = 1,        /* an end-of-sequence token was generated (it is the last token) */
    VIDI_FINISH_CALLBACK = 2,   /* on_token asked to stop */
} vidi_finish;

typedef struct vidi_generate_result {
    int32_t *tokens;            /* malloc'd [n_tokens] */
    int n_tokens;
    vidi_finish finish;
    float *first_logits;        /* malloc'd f32 [vocab] when want_first_logits, else NULL */
    int vocab;
    int64_t prompt_tokens;
    int64_t rope_delta;
    double encode_s, prefill_s, decode_s; /* wall-clock seconds per phase */
} vidi_generate_result;

/* Run one request on a loaded model. ids: host [n_ids]; media: n_media items
 * in prompt order (may be NULL when 0). Pixel rows, grids, pad runs and
 * token ids are validated with messages naming the item. On success *res is
 * filled (free it with vidi_generate_result_free); on failure *res holds
 * nothing to free. */
vidi_status vidi_generate(vidi_model *m, const int32_t *ids, int64_t n_ids, const vidi_media *media,
                          int n_media, const vidi_generate_params *params,
                          vidi_generate_result *res, vidi_err *err);
void vidi_generate_result_free(vidi_generate_result *res);

/* The pixel row width the vision tower of `cfg` expects
 * (in_channels * temporal_patch_size * patch_size^2, 1176 by default). */
int64_t vidi_media_patch_dim(const vidi_model_config *cfg);

/* Check one item against the model: kind, a grid with positive sides and
 * h, w multiples of the merge size, and, when need_pixels, pixels present
 * with n_rows == t*h*w. */
vidi_status vidi_media_check(const vidi_model_config *cfg, const vidi_media *item, int index,
                             int need_pixels, vidi_err *err);

/* The prompt of one chat turn as the reference processor builds it: the
 * chat template rendered with an optional system message and one user
 * message holding the n_media items (images and videos, in order) and then
 * `text`, with the generation prompt added; tokenized; each image/video pad
 * repeated t*h*w / merge^2 times for its item. *ids is malloc'd (free it).
 * A pad written inside `text` or `system` makes the pad count disagree with
 * the media: an error saying so. */
vidi_status vidi_prompt_build(const vidi_model_config *cfg, const vidi_tokenizer *tok, const char *system,
                              const char *text, const vidi_media *media, int n_media, int32_t **ids,
                              int64_t *n_ids, vidi_err *err);

#endif
