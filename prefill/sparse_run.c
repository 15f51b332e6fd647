/* prefill/sparse_run.c — sparse prefill configs and the prompt attention
 * that applies them (sparse_run.h). */
#include "prefill/sparse_run.h"

#include "core/tensor.h"
#include "kernels/ops.h"
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

vidi_sparse_rule vidi_sparse_rule_default(vidi_sparse_kind kind) {
    vidi_sparse_rule r;
    memset(&r, 0, sizeof r);
    r.head.kind = kind;
    r.head.sink = 64;
    r.head.local = 128;
    r.head.last = 64;
    r.head.n_vertical = 256;
    r.head.n_slash = 128;
    r.head.last_q = 64;
    r.head.stride = 2;
    r.head.v = 1;
    r.stride_ref = VIDI_STRIDE_FRAME;
    r.estimate_phase = 1;
    r.recall = r.density = -1;
    return r;
}

vidi_sparse_config *vidi_sparse_config_new(int n_layers, int n_heads) {
    if (n_layers < 1 || n_heads < 1) return NULL;
    vidi_sparse_config *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->rules = calloc((size_t)n_layers * (size_t)n_heads, sizeof *c->rules);
    if (!c->rules) {
        free(c);
        return NULL;
    }
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->target_recall = 0.95;
    c->min_enrichment = 2.0;
    c->device_max_share = VIDI_SPARSE_DEVICE_MAX_SHARE;
    for (int i = 0; i < n_layers * n_heads; i++) c->rules[i] = vidi_sparse_rule_default(VIDI_SPARSE_DENSE);
    return c;
}

void vidi_sparse_config_free(vidi_sparse_config *c) {
    if (!c) return;
    free(c->rules);
    free(c);
}

static int s_kind_of(const char *s, vidi_sparse_kind *k) {
    for (int i = VIDI_SPARSE_DENSE; i <= VIDI_SPARSE_GRID; i++)
        if (s && !strcmp(s, vidi_sparse_kind_name((vidi_sparse_kind)i))) {
            *k = (vidi_sparse_kind)i;
            return 0;
        }
    return -1;
}

/* Integer field in [lo, hi] into *out (unchanged when absent): 0, or -1. */
static int s_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) return -1;
    *out = json_integer_value(v);
    return 0;
}

vidi_status vidi_sparse_config_load(const char *path, int n_layers, int n_heads, vidi_sparse_config **out,
                                    vidi_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s:%d: %s", path, je.line, je.text);
    vidi_status rc = VIDI_OK;
    vidi_sparse_config *c = vidi_sparse_config_new(n_layers, n_heads);
    json_t *layers = json_object_get(root, "layers");
    if (!c) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse config: out of memory");
    else if (!json_is_integer(json_object_get(root, "version")) || json_integer_value(json_object_get(root, "version")) != 1)
        rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s: version must be 1", path);
    else if (!json_is_array(layers) || (int)json_array_size(layers) != n_layers)
        rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s: 'layers' must list %d layers", path, n_layers);
    json_t *tr = json_object_get(root, "target_recall");
    if (c && json_is_number(tr)) c->target_recall = json_number_value(tr);
    json_t *dms = json_object_get(root, "device_max_share");
    if (c && json_is_number(dms)) c->device_max_share = json_number_value(dms);
    for (int l = 0; rc == VIDI_OK && l < n_layers; l++) {
        json_t *hs = json_array_get(layers, (size_t)l);
        if (!json_is_array(hs) || (int)json_array_size(hs) != n_heads) {
            rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s: layer %d must list %d heads", path, l, n_heads);
            break;
        }
        for (int h = 0; rc == VIDI_OK && h < n_heads; h++) {
            json_t *o = json_array_get(hs, (size_t)h);
            vidi_sparse_kind k;
            if (!json_is_object(o) || s_kind_of(json_string_value(json_object_get(o, "pattern")), &k)) {
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s: layer %d head %d: unknown pattern", path, l, h);
                break;
            }
            vidi_sparse_rule r = vidi_sparse_rule_default(k);
            int64_t hv = r.head.h, vv = r.head.v;
            const int64_t big = (int64_t)1 << 30;
            if (s_int(o, "sink", 0, big, &r.head.sink) || s_int(o, "local", 1, big, &r.head.local) ||
                s_int(o, "last", 0, big, &r.head.last) || s_int(o, "n_vertical", 1, big, &r.head.n_vertical) ||
                s_int(o, "n_slash", 1, big, &r.head.n_slash) || s_int(o, "last_q", 1, 4096, &r.head.last_q) ||
                s_int(o, "h", 0, 1, &hv) || s_int(o, "v", 0, 1, &vv)) {
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config %s: layer %d head %d: a field is out of range",
                                  path, l, h);
                break;
            }
            r.head.h = (int)hv, r.head.v = (int)vv;
            json_t *st = json_object_get(o, "stride"), *ph = json_object_get(o, "phase");
            if (json_is_string(st)) {
                if (!strcmp(json_string_value(st), "frame")) r.stride_ref = VIDI_STRIDE_FRAME;
                else if (!strcmp(json_string_value(st), "row")) r.stride_ref = VIDI_STRIDE_ROW;
                else rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config: stride must be frame, row or a number");
            } else if (json_is_integer(st) && json_integer_value(st) >= 2) {
                r.stride_ref = VIDI_STRIDE_FIXED;
                r.head.stride = json_integer_value(st);
            } else if (st) {
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config: stride must be frame, row or a number >= 2");
            }
            if (json_is_integer(ph) && json_integer_value(ph) >= 0) {
                r.estimate_phase = 0;
                r.head.phase = json_integer_value(ph);
            } else if (ph && !(json_is_string(ph) && !strcmp(json_string_value(ph), "estimate"))) {
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config: phase must be estimate or a number >= 0");
            }
            json_t *bd = json_object_get(o, "boundary");
            if (json_is_string(bd) && !strcmp(json_string_value(bd), "2d")) r.head.boundary2d = 1;
            else if (bd && !(json_is_string(bd) && !strcmp(json_string_value(bd), "q")))
                rc = vidi_err_set(err, VIDI_ERR_FORMAT, "sparse config: boundary must be q or 2d");
            json_t *rv = json_object_get(o, "recall"), *dv = json_object_get(o, "density");
            if (json_is_number(rv)) r.recall = json_number_value(rv);
            if (json_is_number(dv)) r.density = json_number_value(dv);
            c->rules[l * n_heads + h] = r;
        }
    }
    json_decref(root);
    if (rc != VIDI_OK) {
        vidi_sparse_config_free(c);
        return rc;
    }
    *out = c;
    return VIDI_OK;
}

vidi_status vidi_sparse_config_save(const vidi_sparse_config *c, const char *path, const char *model,
                                    const char *calibration_json, vidi_err *err) {
    json_t *root = json_object(), *layers = json_array();
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "model", json_string(model ? model : ""));
    json_object_set_new(root, "target_recall", json_real(c->target_recall));
    json_t *cal = calibration_json ? json_loads(calibration_json, 0, NULL) : NULL;
    json_object_set_new(root, "calibration", cal ? cal : json_object());
    for (int l = 0; l < c->n_layers; l++) {
        json_t *hs = json_array();
        for (int h = 0; h < c->n_heads; h++) {
            const vidi_sparse_rule *r = &c->rules[l * c->n_heads + h];
            json_t *o = json_object();
            json_object_set_new(o, "pattern", json_string(vidi_sparse_kind_name(r->head.kind)));
            json_object_set_new(o, "sink", json_integer(r->head.sink));
            json_object_set_new(o, "local", json_integer(r->head.local));
            if (r->head.kind == VIDI_SPARSE_TRISHAPE) json_object_set_new(o, "last", json_integer(r->head.last));
            if (r->head.kind == VIDI_SPARSE_VSLASH || r->head.kind == VIDI_SPARSE_BLOCK) {
                json_object_set_new(o, "n_vertical", json_integer(r->head.n_vertical));
                json_object_set_new(o, "n_slash", json_integer(r->head.n_slash));
                json_object_set_new(o, "last_q", json_integer(r->head.last_q));
            }
            if (r->head.kind == VIDI_SPARSE_GRID) {
                json_object_set_new(o, "stride", r->stride_ref == VIDI_STRIDE_FRAME ? json_string("frame")
                                                 : r->stride_ref == VIDI_STRIDE_ROW ? json_string("row")
                                                                                    : json_integer(r->head.stride));
                json_object_set_new(o, "phase", r->estimate_phase ? json_string("estimate") : json_integer(r->head.phase));
                json_object_set_new(o, "h", json_integer(r->head.h));
                json_object_set_new(o, "v", json_integer(r->head.v));
                json_object_set_new(o, "last_q", json_integer(r->head.last_q));
                if (r->head.boundary2d) json_object_set_new(o, "boundary", json_string("2d"));
            }
            if (r->recall >= 0) json_object_set_new(o, "recall", json_real(round(r->recall * 1e4) / 1e4));
            if (r->density >= 0) json_object_set_new(o, "density", json_real(round(r->density * 1e4) / 1e4));
            json_array_append_new(hs, o);
        }
        json_array_append_new(layers, hs);
    }
    json_object_set_new(root, "layers", layers);
    int bad = json_dump_file(root, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return bad ? vidi_err_set(err, VIDI_ERR_IO, "sparse config: cannot write %s", path) : VIDI_OK;
}

/* ---- in a prefill ---- */

vidi_status vidi_sparse_resolve(const vidi_sparse_rule *r, const vidi_span *spans, int n_spans,
                                const vidi_sparse_qk *qk, double min_enrichment, vidi_sparse_head *out,
                                int *fell_back, vidi_err *err) {
    *out = r->head;
    *fell_back = 0;
    if (r->head.kind != VIDI_SPARSE_GRID) return VIDI_OK;
    const vidi_span *vid = vidi_sparse_video_span(spans, n_spans);
    int64_t stride = r->stride_ref == VIDI_STRIDE_FRAME ? (vid ? vid->frame_tokens : 0)
                     : r->stride_ref == VIDI_STRIDE_ROW ? (vid ? vid->row_tokens : 0)
                                                        : r->head.stride;
    if (!vid || stride < 2 || vid->end - vid->start < 2 * stride) {
        out->kind = VIDI_SPARSE_VSLASH;
        *fell_back = 1;
        return VIDI_OK;
    }
    out->stride = stride;
    if (r->estimate_phase) {
        int64_t s = 0, p = 0;
        double score = 0;
        vidi_status rc = vidi_sparse_estimate_grid(qk, vid, r->head.last_q, &stride, 1, &s, &p, &score, err);
        if (rc) return rc;
        if (score < min_enrichment) {
            out->kind = VIDI_SPARSE_VSLASH;
            *fell_back = 1;
            return VIDI_OK;
        }
        out->phase = p;
    } else {
        out->phase = r->head.phase % stride;
    }
    return VIDI_OK;
}

static int s_rule_estimates(const vidi_sparse_rule *r) {
    return r->head.kind == VIDI_SPARSE_VSLASH || r->head.kind == VIDI_SPARSE_BLOCK ||
           (r->head.kind == VIDI_SPARSE_GRID && r->estimate_phase);
}

static int s_rule_eq(const vidi_sparse_rule *a, const vidi_sparse_rule *b) {
    const vidi_sparse_head *x = &a->head, *y = &b->head;
    return x->kind == y->kind && x->sink == y->sink && x->local == y->local && x->last == y->last &&
           x->stride == y->stride && x->phase == y->phase && x->h == y->h && x->v == y->v &&
           x->n_vertical == y->n_vertical && x->n_slash == y->n_slash && x->last_q == y->last_q &&
           x->boundary2d == y->boundary2d && a->stride_ref == b->stride_ref && a->estimate_phase == b->estimate_phase;
}

/* A device tensor [n, h, d] (bf16 or f32) as host f32. */
static float *s_to_host_f32(vidi_backend *be, const vidi_tensor *x, vidi_err *err) {
    size_t n = (size_t)(x->shape[0] * x->shape[1] * x->shape[2]);
    if (x->dtype != be->act_dtype) {
        vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse prefill: q/k of %s, activations %s", vidi_dtype_name(x->dtype),
                     vidi_dtype_name(be->act_dtype));
        return NULL;
    }
    float *f = malloc(n * sizeof *f);
    if (!f) {
        vidi_err_set(err, VIDI_ERR_NOMEM, "sparse prefill: out of memory for q/k on the host");
        return NULL;
    }
    if (vidi_download_f32(be, f, x->data, n, err) == VIDI_OK) return f;
    free(f);
    return NULL;
}

/* One layer on a device backend: every head's plan (estimated heads from
 * host copies of q and k), packed, one sparse_attention launch; or the
 * dense attention when the plans would not save time. */
static vidi_status s_attend_device(vidi_sparse_ctx *ctx, int layer, const vidi_tensor *q, const vidi_tensor *k,
                                   const vidi_tensor *v, vidi_tensor *out, float scale, vidi_err *err) {
    const vidi_sparse_config *cfg = ctx->cfg;
    vidi_backend *be = ctx->be;
    int64_t n = q->shape[0];
    int hq = (int)q->shape[1], hkv = (int)k->shape[1], d = (int)q->shape[2];
    const vidi_sparse_rule *rules = &cfg->rules[layer * cfg->n_heads];
    int need = 0;
    for (int h = 0; h < hq; h++) need |= s_rule_estimates(&rules[h]);
    if (!need && ctx->plan_layer >= 0) { /* the plans of an earlier layer with the same rules */
        const vidi_sparse_rule *prev = &cfg->rules[ctx->plan_layer * cfg->n_heads];
        int same = 1;
        for (int h = 0; h < hq && same; h++) same = s_rule_eq(&rules[h], &prev[h]);
        if (same) {
            ctx->dense_pairs += n * (n + 1) / 2 * hq;
            ctx->pairs += ctx->plan_pairs;
            return be->ops->sparse_attention(be, q, k, v, out, ctx->d_rows, ctx->d_tiles, ctx->plan_tiles, ctx->d_segs,
                                             ctx->d_cols, scale, err);
        }
    }
    /* estimation: the last rows' mass on the device (ops sparse_mass) for
     * vertical-slash and grid heads; q and k on the host for block heads
     * (and for all estimated heads without sparse_mass), up to EST_MAX */
    int need_block = 0, lq = 0, same_lq = 1;
    for (int h = 0; h < hq; h++) {
        if (!s_rule_estimates(&rules[h])) continue;
        need_block |= rules[h].head.kind == VIDI_SPARSE_BLOCK;
        int64_t l = rules[h].head.last_q;
        if (rules[h].head.kind != VIDI_SPARSE_BLOCK) {
            if (lq && l != lq) same_lq = 0;
            lq = (int)l;
        }
    }
    int dev_mass = need && lq > 0 && lq <= 64 && same_lq && be->ops->sparse_mass;
    int host_qk = (dev_mass ? need_block : need) && n <= VIDI_SPARSE_DEVICE_EST_MAX;
    float *fq = NULL, *fk = NULL, *mcol = NULL, *mdiag = NULL, *scol = NULL;
    vidi_sparse_mass *m_last = NULL, *m_span = NULL;
    const vidi_span *vid = NULL;
    vidi_sparse_plan *plans = calloc((size_t)hq, sizeof *plans);
    int *heads = malloc((size_t)hq * sizeof *heads);
    vidi_sparse_packed pk = {0};
    vidi_status rc = VIDI_OK;
    int n_plans = 0;
    int64_t pairs = 0;
    if (!plans || !heads) {
        rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse prefill: out of memory");
        goto done;
    }
    if (dev_mass) {
        vid = vidi_sparse_video_span(ctx->spans, ctx->n_spans); /* where vidi_sparse_resolve estimates a grid */
        int64_t vend = vid ? vid->end : 0, vlq = vid ? (vid->end - vid->start < lq ? vid->end - vid->start : lq) : 0;
        size_t want = ((size_t)hq * (size_t)n * 2 + (size_t)hq * (size_t)vend) * sizeof(float);
        if (want > ctx->mass_bytes) {
            if (ctx->mass_dev) be->ops->buf_free(be, ctx->mass_dev);
            ctx->mass_dev = be->ops->buf_alloc(be, want);
            ctx->mass_bytes = ctx->mass_dev ? want : 0;
        }
        mcol = malloc((size_t)hq * (size_t)n * 2 * sizeof *mcol);
        scol = vend ? malloc((size_t)hq * (size_t)vend * sizeof *scol) : NULL;
        m_last = calloc((size_t)hq, sizeof *m_last);
        m_span = calloc((size_t)hq, sizeof *m_span);
        if (!ctx->mass_dev || !mcol || (vend && !scol) || !m_last || !m_span) {
            rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse prefill: out of memory for the estimation");
            goto done;
        }
        mdiag = mcol + (size_t)hq * (size_t)n;
        float *dcol = ctx->mass_dev, *ddiag = dcol + (size_t)hq * (size_t)n, *dspan = ddiag + (size_t)hq * (size_t)n;
        int64_t r0 = n - lq < 0 ? 0 : n - lq;
        rc = be->ops->sparse_mass(be, q, k, r0, n, scale, dcol, ddiag, err);
        if (rc == VIDI_OK && vend) rc = be->ops->sparse_mass(be, q, k, vend - vlq, vend, scale, dspan, NULL, err);
        if (rc == VIDI_OK) rc = be->ops->copy_to_host(be, mcol, dcol, (size_t)hq * (size_t)n * 2 * sizeof *mcol, err);
        if (rc == VIDI_OK && vend)
            rc = be->ops->copy_to_host(be, scol, dspan, (size_t)hq * (size_t)vend * sizeof *scol, err);
        if (rc) goto done;
        for (int h = 0; h < hq; h++) {
            m_last[h] = (vidi_sparse_mass){mcol + (size_t)h * n, mdiag + (size_t)h * n, r0, n};
            if (vend) m_span[h] = (vidi_sparse_mass){scol + (size_t)h * vend, NULL, vend - vlq, vend};
        }
    }
    if (host_qk) {
        fq = s_to_host_f32(be, q, err);
        fk = fq ? s_to_host_f32(be, k, err) : NULL;
        if (!fk) {
            rc = err->status;
            goto done;
        }
    }
    for (int h = 0; h < hq && rc == VIDI_OK; h++, n_plans++) {
        vidi_sparse_qk qk = {fq, fk, hq, hkv, d, h, m_last ? &m_last[h] : NULL, vid && m_span ? &m_span[h] : NULL};
        vidi_sparse_head hd;
        int fb = 0;
        heads[h] = h;
        int can = !s_rule_estimates(&rules[h]) || host_qk || (dev_mass && rules[h].head.kind != VIDI_SPARSE_BLOCK);
        if (!can) {
            hd = vidi_sparse_rule_default(VIDI_SPARSE_DENSE).head;
            ctx->est_skipped++;
        } else {
            rc = vidi_sparse_resolve(&rules[h], ctx->spans, ctx->n_spans, &qk, cfg->min_enrichment, &hd, &fb, err);
            if (rc) break;
            ctx->grid_fallbacks += fb;
        }
        rc = vidi_sparse_plan_build(&hd, ctx->spans, ctx->n_spans, n, host_qk || dev_mass ? &qk : NULL, &plans[h], err);
        if (rc == VIDI_OK) pairs += vidi_sparse_plan_pairs(&plans[h]);
    }
    if (rc) goto done;
    rc = vidi_sparse_pack(plans, heads, n_plans, &pk, err);
    if (rc) goto done;
    double dense = (double)hq * (double)n * (double)(n + 1) / 2.0;
    ctx->dense_pairs += (int64_t)dense;
    ctx->plan_layer = -1; /* dev is rewritten below (or not used) */
    if (cfg->device_max_share < 1.0 && (double)pk.pairs_computed > cfg->device_max_share * dense) {
        int32_t cu[2] = {0, (int32_t)n};
        vidi_attn_args args = {cu, cu, 1, 1, scale};
        rc = be->ops->attention(be, q, k, v, out, &args, err);
        if (rc == VIDI_OK) rc = be->ops->synchronize(be, err); /* cu lives on this stack */
        ctx->dense_layers++;
        ctx->pairs += (int64_t)dense;
        goto done;
    }
    /* a reused plan's launch may still read dev */
    if (ctx->dev && (rc = be->ops->synchronize(be, err)) != VIDI_OK) goto done;
    size_t b_rows = (size_t)pk.n_rows * 4, b_tiles = (size_t)pk.n_tiles * 32, b_segs = (size_t)pk.n_segs * 16;
    size_t b_cols = (size_t)pk.n_cols * 4, need_b = b_rows + b_tiles + b_segs + b_cols + 64;
    if (need_b > ctx->dev_bytes) {
        if (ctx->dev) be->ops->buf_free(be, ctx->dev);
        ctx->dev = be->ops->buf_alloc(be, need_b);
        ctx->dev_bytes = ctx->dev ? need_b : 0;
        if (!ctx->dev) {
            rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse prefill: %zu bytes of device memory for the plans", need_b);
            goto done;
        }
    }
    char *base = ctx->dev;
    int32_t *d_tiles = (int32_t *)base, *d_segs = (int32_t *)(base + b_tiles);
    int32_t *d_rows = (int32_t *)(base + b_tiles + b_segs), *d_cols = (int32_t *)(base + b_tiles + b_segs + b_rows);
    rc = be->ops->copy_to_device(be, d_tiles, pk.tiles, b_tiles, err);
    if (rc == VIDI_OK && b_segs) rc = be->ops->copy_to_device(be, d_segs, pk.segs, b_segs, err);
    if (rc == VIDI_OK) rc = be->ops->copy_to_device(be, d_rows, pk.rows, b_rows, err);
    if (rc == VIDI_OK && b_cols) rc = be->ops->copy_to_device(be, d_cols, pk.cols, b_cols, err);
    if (rc == VIDI_OK)
        rc = be->ops->sparse_attention(be, q, k, v, out, d_rows, d_tiles, pk.n_tiles, d_segs, d_cols, scale, err);
    /* the uploads read pk's host arrays, freed below */
    if (rc == VIDI_OK) rc = be->ops->synchronize(be, err);
    ctx->pairs += pairs;
    if (rc == VIDI_OK && !need) {
        ctx->plan_layer = layer, ctx->plan_tiles = pk.n_tiles, ctx->plan_pairs = pairs;
        ctx->d_rows = d_rows, ctx->d_tiles = d_tiles, ctx->d_segs = d_segs, ctx->d_cols = d_cols;
    }
done:
    for (int h = 0; h < n_plans; h++) vidi_sparse_plan_free(&plans[h]);
    free(plans);
    free(heads);
    vidi_sparse_packed_free(&pk);
    free(fq);
    free(fk);
    free(mcol);
    free(scol);
    free(m_last);
    free(m_span);
    return rc;
}

vidi_status vidi_sparse_prompt_attention(void *user, int layer, const vidi_tensor *q, const vidi_tensor *k,
                                         const vidi_tensor *v, vidi_tensor *out, float scale, vidi_err *err) {
    vidi_sparse_ctx *ctx = user;
    const vidi_sparse_config *cfg = ctx->cfg;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse prefill: q, k, v [T, H, D]");
    int64_t n = q->shape[0];
    int hq = (int)q->shape[1], hkv = (int)k->shape[1], d = (int)q->shape[2];
    if (layer < 0 || layer >= cfg->n_layers || hq != cfg->n_heads)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse prefill: layer %d / %d heads outside the config (%d x %d)",
                            layer, hq, cfg->n_layers, cfg->n_heads);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vidi_status rc = VIDI_OK;
    if (ctx->be && !ctx->be->host_memory) {
        rc = s_attend_device(ctx, layer, q, k, v, out, scale, err);
    } else {
        if (q->dtype != VIDI_DTYPE_F32 || k->dtype != VIDI_DTYPE_F32 || v->dtype != VIDI_DTYPE_F32)
            return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse prefill: f32 host tensors on the CPU");
        for (int h = 0; h < hq && rc == VIDI_OK; h++) {
            vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h, NULL, NULL};
            vidi_sparse_head hd;
            int fb = 0;
            rc = vidi_sparse_resolve(&cfg->rules[layer * cfg->n_heads + h], ctx->spans, ctx->n_spans, &qk,
                                     cfg->min_enrichment, &hd, &fb, err);
            if (rc) break;
            ctx->grid_fallbacks += fb;
            vidi_sparse_plan p;
            rc = vidi_sparse_plan_build(&hd, ctx->spans, ctx->n_spans, n, &qk, &p, err);
            if (rc) break;
            rc = vidi_sparse_attend_plan(&p, &qk, v->data, scale, out->data, err);
            ctx->pairs += vidi_sparse_plan_pairs(&p);
            ctx->dense_pairs += n * (n + 1) / 2;
            vidi_sparse_plan_free(&p);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ctx->ms += (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (rc) vidi_err_prefix(err, "sparse prefill, layer %d", layer);
    return rc;
}

vidi_status vidi_sparse_begin(vidi_text *t, const vidi_sparse_config *cfg, const int32_t *ids, int64_t n,
                              int32_t image_pad, int32_t video_pad, const int32_t (*grids)[3], int n_grids,
                              int merge, vidi_sparse_ctx *ctx, vidi_err *err) {
    memset(ctx, 0, sizeof *ctx);
    ctx->cfg = cfg;
    ctx->be = vidi_text_backend(t);
    ctx->plan_layer = -1;
    if (!ctx->be->host_memory && !ctx->be->ops->sparse_attention)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "sparse prefill: backend %s has no sparse attention",
                            ctx->be->name ? ctx->be->name : "?");
    vidi_status rc = vidi_sparse_spans(ids, n, image_pad, video_pad, grids, n_grids, merge, ctx->spans,
                                       (int)(sizeof ctx->spans / sizeof ctx->spans[0]), &ctx->n_spans, err);
    if (rc) return rc;
    vidi_text_set_prompt_attention(t, vidi_sparse_prompt_attention, ctx);
    return VIDI_OK;
}

void vidi_sparse_end(vidi_text *t, vidi_sparse_ctx *ctx) {
    if (ctx->mass_dev) ctx->be->ops->buf_free(ctx->be, ctx->mass_dev);
    ctx->mass_dev = NULL;
    ctx->mass_bytes = 0;
    if (ctx->dev) {
        vidi_err e = {0};
        ctx->be->ops->synchronize(ctx->be, &e); /* a reused plan's launch may still read dev */
        ctx->be->ops->buf_free(ctx->be, ctx->dev);
    }
    ctx->plan_layer = -1;
    ctx->dev = NULL;
    ctx->dev_bytes = 0;
    vidi_text_set_prompt_attention(t, NULL, NULL);
}
