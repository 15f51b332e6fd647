/* prefill/sparse_run.h — sparse prefill in a model: a per-layer, per-head
 * pattern config (the JSON that ships beside a model, written by
 * vidi-sparse-search), and the prompt attention that applies it
 * (vidi_text_set_prompt_attention), with the share of pairs it computed.
 *
 * The config, `sparse_config.json` in the model folder:
 *   { "version": 1, "model": "vidi-shapes", "target_recall": 0.95,
 *     "calibration": { ... free text: inputs and how they were scored ... },
 *     "layers": [ [ HEAD, ... num_heads ], ... num_layers ] }
 * HEAD is { "pattern": "dense" | "ashape" | "trishape" | "vslash" | "block" | "grid",
 *           "sink": int, "local": int, "last": int, "n_vertical": int, "n_slash": int,
 *           "last_q": int,
 *           "stride": "frame" | "row" | int,   (grid: tokens per frame or per merged
 *                                               row of the prompt's video, or a number)
 *           "phase": "estimate" | int,         (grid: estimated online, or fixed)
 *           "h": 0 | 1, "v": 0 | 1,            (grid: horizontal / vertical lines)
 *           "boundary": "q" | "2d",            (grid: Q-boundary (default) or 2D-boundary,
 *                                               prefill/sparse.h)
 *           "recall": num, "density": num }    (what the search measured; read back only
 *                                               for the record)
 * Missing fields take the defaults of vidi_sparse_rule_default(). An optional
 * top-level "device_max_share" overrides VIDI_SPARSE_DEVICE_MAX_SHARE.
 * A grid head whose online estimate is weak (enrichment below
 * min_enrichment) or that finds no video span falls back to vertical-slash.
 */
#ifndef VIDI_PREFILL_SPARSE_RUN_H
#define VIDI_PREFILL_SPARSE_RUN_H

#include <stdint.h>

#include "core/err.h"
#include "model/text.h"
#include "prefill/sparse.h"

typedef enum vidi_sparse_stride_ref { VIDI_STRIDE_FIXED = 0, VIDI_STRIDE_FRAME = 1, VIDI_STRIDE_ROW = 2 } vidi_sparse_stride_ref;

typedef struct vidi_sparse_rule {
    vidi_sparse_head head;       /* stride/phase used when fixed */
    vidi_sparse_stride_ref stride_ref;
    int estimate_phase;
    double recall, density;      /* as searched */
} vidi_sparse_rule;

vidi_sparse_rule vidi_sparse_rule_default(vidi_sparse_kind kind);

typedef struct vidi_sparse_config {
    int n_layers, n_heads;
    vidi_sparse_rule *rules;     /* [n_layers * n_heads] */
    double target_recall;
    double min_enrichment;       /* grid fallback threshold (2.0) */
    double device_max_share;     /* "device_max_share" (VIDI_SPARSE_DEVICE_MAX_SHARE): see there */
} vidi_sparse_config;

/* Load and check a config for a model of n_layers x n_heads. */
vidi_status vidi_sparse_config_load(const char *path, int n_layers, int n_heads, vidi_sparse_config **out,
                                    vidi_err *err);
/* Write it (the search's output). calibration: a JSON text for the record (NULL: {}). */
vidi_status vidi_sparse_config_save(const vidi_sparse_config *c, const char *path, const char *model,
                                    const char *calibration_json, vidi_err *err);
vidi_sparse_config *vidi_sparse_config_new(int n_layers, int n_heads);
void vidi_sparse_config_free(vidi_sparse_config *c);

/* On a device backend (ops sparse_attention), a layer runs as one launch
 * over the packed plans of all its heads, unless the kernel would multiply
 * more than this share of the dense causal work: then the backend's dense
 * attention is faster (the sparse kernel's gathered tiles cost about 4-5x
 * a dense pair on the H100, bench/results/sparse-attention.json). 1 or
 * more: never (the sparse kernel for every layer). A layer whose rules
 * equal an earlier layer's and estimate nothing reuses that layer's plans,
 * already on the device. */
#define VIDI_SPARSE_DEVICE_MAX_SHARE 0.15
/* On a device backend, vertical-slash heads and a grid's phase are
 * estimated from the last rows' mass computed there (ops sparse_mass) and
 * copied to the host; block heads (pooled q and k), and every estimated
 * head of a backend without sparse_mass, copy q and k to the host: above
 * this many tokens those run dense instead (counted in est_skipped). */
#define VIDI_SPARSE_DEVICE_EST_MAX 65536

/* The prompt attention of one prefill: the config, the prompt's spans,
 * and what it did. */
typedef struct vidi_sparse_ctx {
    const vidi_sparse_config *cfg;
    vidi_backend *be;
    vidi_span spans[64];
    int n_spans;
    int64_t pairs, dense_pairs;  /* q·k pairs computed, and the dense causal count */
    int grid_fallbacks;          /* grid heads that fell back to vertical-slash */
    int dense_layers;            /* device: layers run dense (the plans would not have saved time) */
    int est_skipped;             /* device: estimated heads run dense (prompt too long to estimate on the host) */
    double ms;                   /* time in the sparse attention (estimation, plans, kernel) */
    void *dev;                   /* device: the packed plans' buffer */
    size_t dev_bytes;
    /* device: the plans in dev are layer plan_layer's (-1: none); a later
     * layer with the same rules and no estimated head launches them again */
    void *mass_dev;              /* device: the estimation's masses (ops sparse_mass) */
    size_t mass_bytes;
    int plan_layer;
    int64_t plan_tiles, plan_pairs;
    const int32_t *d_rows, *d_tiles, *d_segs, *d_cols;
} vidi_sparse_ctx;

/* Set t's prompt attention to the config's for the prompt ids (pads
 * expanded; grids of its vision items in order, patch units, merge the
 * spatial merge). ctx must live until vidi_sparse_end. Host-memory backends
 * run the CPU tile kernel; others need ops sparse_attention
 * (VIDI_ERR_UNSUPPORTED without it). */
vidi_status vidi_sparse_begin(vidi_text *t, const vidi_sparse_config *cfg, const int32_t *ids, int64_t n,
                              int32_t image_pad, int32_t video_pad, const int32_t (*grids)[3], int n_grids,
                              int merge, vidi_sparse_ctx *ctx, vidi_err *err);
void vidi_sparse_end(vidi_text *t, vidi_sparse_ctx *ctx);

/* The vidi_text_attn_fn behind it (user: a vidi_sparse_ctx). */
vidi_status vidi_sparse_prompt_attention(void *user, int layer, const vidi_tensor *q, const vidi_tensor *k,
                                         const vidi_tensor *v, vidi_tensor *out, float scale, vidi_err *err);

/* The head a rule becomes for a prompt with these spans, q and k: the
 * grid's stride from the video's geometry and its phase estimated; a
 * fallback to vertical-slash sets *fell_back. */
vidi_status vidi_sparse_resolve(const vidi_sparse_rule *r, const vidi_span *spans, int n_spans,
                                const vidi_sparse_qk *qk, double min_enrichment, vidi_sparse_head *out,
                                int *fell_back, vidi_err *err);

#endif
