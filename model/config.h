/* model/config.h — what a Qwen2-VL / Qwen2.5-VL Hugging Face folder says
 * about the model: config.json (flat or with nested text_config /
 * vision_config), preprocessor_config.json and generation_config.json.
 */
#ifndef VIDI_MODEL_CONFIG_H
#define VIDI_MODEL_CONFIG_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"

typedef enum vidi_arch {
    VIDI_ARCH_QWEN2_VL = 0,   /* model_type qwen2_vl */
    VIDI_ARCH_QWEN2_5_VL = 1, /* model_type qwen2_5_vl */
} vidi_arch;

#define VIDI_MAX_EOS 8
#define VIDI_MAX_FULLATT 64

typedef struct vidi_text_config {
    int hidden_size;
    int intermediate_size;
    int num_layers;          /* num_hidden_layers */
    int num_heads;           /* num_attention_heads */
    int num_kv_heads;        /* num_key_value_heads */
    int head_dim;            /* hidden_size / num_heads */
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;
    double rope_theta;
    int mrope_section[3];    /* rope_scaling.mrope_section, sums to head_dim/2 */
    int tie_word_embeddings;
} vidi_text_config;

typedef struct vidi_vision_config {
    int depth;
    int hidden_size;         /* embed_dim (2-VL) / hidden_size (2.5-VL) */
    int num_heads;
    int head_dim;            /* hidden_size / num_heads */
    int intermediate_size;   /* 2-VL: hidden * mlp_ratio; 2.5-VL: intermediate_size */
    int in_channels;
    int patch_size;
    int spatial_merge_size;
    int temporal_patch_size;
    int out_hidden_size;     /* merger output = text hidden size */
    vidi_act hidden_act;     /* quick_gelu (2-VL), silu (2.5-VL) */
    float norm_eps;          /* 1e-6 */
    /* Qwen2.5-VL only */
    int window_size;         /* pixels, e.g. 112 */
    int n_fullatt;
    int fullatt_block_indexes[VIDI_MAX_FULLATT];
    float tokens_per_second;
} vidi_vision_config;

typedef struct vidi_model_config {
    vidi_arch arch;
    vidi_text_config text;
    vidi_vision_config vision;
    int32_t image_token_id;
    int32_t video_token_id;
    int32_t vision_start_token_id;
    int32_t vision_end_token_id;
    int n_eos;                     /* from config.json and generation_config.json */
    int32_t eos_token_ids[VIDI_MAX_EOS];
} vidi_model_config;

typedef struct vidi_preproc_config {
    int64_t min_pixels;
    int64_t max_pixels;
    int patch_size;
    int merge_size;
    int temporal_patch_size;
    double rescale_factor;   /* 1/255 */
    float image_mean[3];
    float image_std[3];
} vidi_preproc_config;

typedef struct vidi_generation_config {
    int do_sample;
    float temperature;       /* 1.0 when absent */
    int top_k;               /* 0 when absent (= all) */
    float top_p;             /* 1.0 when absent */
    float repetition_penalty;
    int n_eos;
    int32_t eos_token_ids[VIDI_MAX_EOS];
} vidi_generation_config;

/* Parse <dir>/config.json (and generation_config.json for end-of-sequence
 * ids when present). Missing required fields, wrong types, values out of
 * range and an unknown model_type are errors naming the file and field:
 * VIDI_ERR_NOTFOUND (no config.json), VIDI_ERR_FORMAT (bad JSON, missing
 * field, wrong type, inconsistent sizes such as heads not dividing hidden or
 * mrope_section not summing to head_dim/2), VIDI_ERR_RANGE (a number
 * outside its range), VIDI_ERR_UNSUPPORTED (model_type, activation, rope
 * type or sliding window we do not run). Text fields are read from
 * text_config when present, else from the top level; rope settings from
 * rope_parameters or rope_scaling. */
vidi_status vidi_model_config_load(const char *model_dir, vidi_model_config *out, vidi_err *err);
/* The Qwen2-VL processor defaults (min 3136, max 12845056 pixels, patch 14,
 * merge 2, temporal 2, rescale 1/255, CLIP mean/std), for media without a
 * model folder. */
vidi_preproc_config vidi_preproc_config_default(void);
/* Parse <dir>/preprocessor_config.json; a missing file gives the Qwen2-VL
 * defaults (min 3136, max 12845056, CLIP mean/std). */
vidi_status vidi_preproc_config_load(const char *model_dir, vidi_preproc_config *out, vidi_err *err);
/* Parse <dir>/generation_config.json; a missing file gives the defaults. */
vidi_status vidi_generation_config_load(const char *model_dir, vidi_generation_config *out, vidi_err *err);

#endif
