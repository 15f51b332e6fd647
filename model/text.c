/* model/text.c — the Qwen2 decoder over the op interface (see text.h).
 *
 * Memory: weights are the checkpoint's mapped tensors on the CPU backend and
 * copies in be->weight_dtype elsewhere (vidi_weight_upload); activations live in one scratch buffer of
 * backend memory that grows to the largest forward seen; each KV cache owns
 * one buffer holding K and V of every layer.
 */
#include "model/text.h"

#include "model/model.h"
#include "model/text_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vidi_kv_cache {
    const vidi_text *t;
    void *buf;                   /* backend: layer l K at l*2*plane, V at (l*2+1)*plane */
    size_t plane;                /* bytes of one layer's K (capacity * kv_heads * head_dim) */
    int64_t capacity, len;
    /* vidi_text_decode_step: backend buffers of one token (step inputs,
     * then activations), allocated on first use, and the recorded step. */
    void *dec;
    text_graph dg;               /* the recorded step (text_graph_step) */
};

/* ---- weights ---- */

static vidi_status text_own(vidi_text *t, void *p, vidi_err *err) {
    if (t->n_owned == t->cap_owned) {
        int cap = t->cap_owned ? t->cap_owned * 2 : 64;
        void **n = realloc(t->owned, (size_t)cap * sizeof *n);
        if (!n) return vidi_err_set(err, VIDI_ERR_NOMEM, "text: out of memory");
        t->owned = n;
        t->cap_owned = cap;
    }
    t->owned[t->n_owned++] = p;
    return VIDI_OK;
}

/* Look up `name` with the expected shape and make it usable by the backend. */
static vidi_status text_weight(vidi_text *t, const vidi_checkpoint *ck, const char *name, int ndim,
                               int64_t d0, int64_t d1, vidi_tensor *out, vidi_err *err) {
    int64_t shape[2] = {d0, d1};
    vidi_status rc = vidi_checkpoint_get(ck, name, ndim, shape, out, err);
    if (rc != VIDI_OK) return rc;
    if (t->weights_in_place) return VIDI_OK;
    /* Uploaded once, converted to the backend's weight dtype (bf16 on CUDA,
     * whatever the checkpoint holds), norm weights and biases included. */
    void *p = NULL;
    rc = vidi_weight_upload(t->be, out, &p, err);
    if (rc != VIDI_OK) {
        vidi_err_prefix(err, "text: uploading %s", name);
        return rc;
    }
    rc = text_own(t, p, err);
    if (rc != VIDI_OK) t->be->ops->buf_free(t->be, p);
    return rc;
}

static vidi_status text_layer_weight(vidi_text *t, const vidi_checkpoint *ck, int layer,
                                     const char *suffix, int ndim, int64_t d0, int64_t d1,
                                     vidi_tensor *out, vidi_err *err) {
    char name[256];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    return text_weight(t, ck, name, ndim, d0, d1, out, err);
}

/* Upload layer l's q/k/v projections into one weight and one bias buffer
 * (rows q, then k, then v), wq..bv pointing at their row blocks. */
static vidi_status text_qkv_upload(vidi_text *t, const vidi_checkpoint *ck, int l, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    const vidi_text_config *c = &t->cfg;
    text_layer *L = &t->layers[l];
    vidi_backend *be = t->be;
    const int64_t H = c->hidden_size, qd = (int64_t)c->num_heads * c->head_dim;
    const int64_t kvd = (int64_t)c->num_kv_heads * c->head_dim, N = qd + 2 * kvd;
    const size_t es = vidi_dtype_size(be->weight_dtype);
    void *w = be->ops->buf_alloc(be, (size_t)(N * H) * es), *b = NULL;
    VIDI_CHECK(w, err, VIDI_ERR_NOMEM, "text: cannot allocate %lld bytes of %s memory for layer %d's q/k/v",
               (long long)(N * H) * (long long)es, be->name, l);
    VIDI_TRY(text_own(t, w, err));
    b = be->ops->buf_alloc(be, (size_t)N * es);
    VIDI_CHECK(b, err, VIDI_ERR_NOMEM, "text: out of %s memory for layer %d's q/k/v bias", be->name, l);
    VIDI_TRY(text_own(t, b, err));
    static const char *const names[3][2] = {{"self_attn.q_proj.weight", "self_attn.q_proj.bias"},
                                            {"self_attn.k_proj.weight", "self_attn.k_proj.bias"},
                                            {"self_attn.v_proj.weight", "self_attn.v_proj.bias"}};
    vidi_tensor *dst[3][2] = {{&L->wq, &L->bq}, {&L->wk, &L->bk}, {&L->wv, &L->bv}};
    const int64_t rows[3] = {qd, kvd, kvd};
    int64_t at = 0;
    for (int i = 0; i < 3; i++) {
        char name[256];
        int64_t ws[2] = {rows[i], H}, bs[2] = {rows[i], 0};
        snprintf(name, sizeof name, "model.layers.%d.%s", l, names[i][0]);
        VIDI_TRY(vidi_checkpoint_get(ck, name, 2, ws, dst[i][0], err));
        VIDI_TRY(vidi_weight_upload_to(be, dst[i][0], (char *)w + (size_t)(at * H) * es, err));
        snprintf(name, sizeof name, "model.layers.%d.%s", l, names[i][1]);
        VIDI_TRY(vidi_checkpoint_get(ck, name, 1, bs, dst[i][1], err));
        VIDI_TRY(vidi_weight_upload_to(be, dst[i][1], (char *)b + (size_t)at * es, err));
        at += rows[i];
    }
    L->wqkv = vidi_tensor_2d(be->weight_dtype, w, N, H);
    L->bqkv = vidi_tensor_1d(be->weight_dtype, b, N);
fail:
    if (rc != VIDI_OK) vidi_err_prefix(err, "text: layer %d q/k/v", l);
    return rc;
}

static vidi_status text_check_config(const vidi_text_config *c, vidi_err *err) {
    if (c->hidden_size <= 0 || c->num_heads <= 0 || c->num_kv_heads <= 0 || c->head_dim <= 0 ||
        c->num_layers <= 0 || c->intermediate_size <= 0 || c->vocab_size <= 0)
        return vidi_err_set(err, VIDI_ERR_INVALID, "text: configuration has a non-positive size "
                            "(hidden %d, heads %d, kv heads %d, head_dim %d, layers %d, "
                            "intermediate %d, vocab %d)", c->hidden_size, c->num_heads,
                            c->num_kv_heads, c->head_dim, c->num_layers, c->intermediate_size,
                            c->vocab_size);
    if (c->num_heads % c->num_kv_heads)
        return vidi_err_set(err, VIDI_ERR_INVALID, "text: %d attention heads is not a multiple of "
                            "%d key/value heads", c->num_heads, c->num_kv_heads);
    if (c->head_dim % 2)
        return vidi_err_set(err, VIDI_ERR_INVALID, "text: head_dim %d is odd", c->head_dim);
    int s0 = c->mrope_section[0], s1 = c->mrope_section[1], s2 = c->mrope_section[2];
    if (s0 < 0 || s1 < 0 || s2 < 0 || s0 + s1 + s2 != c->head_dim / 2)
        return vidi_err_set(err, VIDI_ERR_INVALID, "text: mrope_section [%d, %d, %d] must sum to "
                            "head_dim / 2 = %d", s0, s1, s2, c->head_dim / 2);
    if (!(c->rope_theta > 0))
        return vidi_err_set(err, VIDI_ERR_INVALID, "text: rope_theta %g is not positive",
                            c->rope_theta);
    return VIDI_OK;
}

vidi_status vidi_text_load(const vidi_model_config *cfg, const vidi_checkpoint *ck,
                           vidi_backend *be, vidi_text **out, vidi_err *err) {
    vidi_status rc;
    vidi_text *t = NULL;
    *out = NULL;
    VIDI_TRY(text_check_config(&cfg->text, err));
    t = calloc(1, sizeof *t);
    VIDI_CHECK(t, err, VIDI_ERR_NOMEM, "text: out of memory");
    t->cfg = cfg->text;
    t->image_token_id = cfg->image_token_id;
    t->video_token_id = cfg->video_token_id;
    t->be = be;
    /* The CPU backend computes on host memory, which the mapping is. */
    t->weights_in_place = be->host_memory;

    const vidi_text_config *c = &t->cfg;
    int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    int64_t qd = (int64_t)c->num_heads * D, kvd = (int64_t)c->num_kv_heads * D;

    VIDI_TRY(text_weight(t, ck, "model.embed_tokens.weight", 2, c->vocab_size, H, &t->embed, err));
    VIDI_TRY(text_weight(t, ck, "model.norm.weight", 1, H, 0, &t->norm, err));
    if (c->tie_word_embeddings) {
        t->lm_head = t->embed;
    } else {
        VIDI_CHECK(vidi_checkpoint_has(ck, "lm_head.weight"), err, VIDI_ERR_NOTFOUND,
                   "text: the configuration does not tie the word embeddings "
                   "(tie_word_embeddings false) but the checkpoint has no lm_head.weight");
        VIDI_TRY(text_weight(t, ck, "lm_head.weight", 2, c->vocab_size, H, &t->lm_head, err));
    }

    t->layers = calloc((size_t)c->num_layers, sizeof *t->layers);
    VIDI_CHECK(t->layers, err, VIDI_ERR_NOMEM, "text: out of memory");
    for (int l = 0; l < c->num_layers; l++) {
        text_layer *L = &t->layers[l];
        VIDI_TRY(text_layer_weight(t, ck, l, "input_layernorm.weight", 1, H, 0, &L->ln1, err));
        if (t->weights_in_place) {
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.q_proj.weight", 2, qd, H, &L->wq, err));
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.q_proj.bias", 1, qd, 0, &L->bq, err));
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.k_proj.weight", 2, kvd, H, &L->wk, err));
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.k_proj.bias", 1, kvd, 0, &L->bk, err));
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.v_proj.weight", 2, kvd, H, &L->wv, err));
            VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.v_proj.bias", 1, kvd, 0, &L->bv, err));
        } else {
            VIDI_TRY(text_qkv_upload(t, ck, l, err));
        }
        VIDI_TRY(text_layer_weight(t, ck, l, "self_attn.o_proj.weight", 2, H, qd, &L->wo, err));
        VIDI_TRY(text_layer_weight(t, ck, l, "post_attention_layernorm.weight", 1, H, 0, &L->ln2,
                                   err));
        VIDI_TRY(text_layer_weight(t, ck, l, "mlp.gate_proj.weight", 2, I, H, &L->wg, err));
        VIDI_TRY(text_layer_weight(t, ck, l, "mlp.up_proj.weight", 2, I, H, &L->wu, err));
        VIDI_TRY(text_layer_weight(t, ck, l, "mlp.down_proj.weight", 2, H, I, &L->wd, err));
    }

    /* M-RoPE tables: pair i rotates by axis section(i) at theta^(-2i/D), in
     * fp32 as the reference computes inv_freq. */
    int half = (int)(D / 2);
    t->pair_axis = malloc((size_t)half * sizeof *t->pair_axis);
    t->pair_inv_freq = malloc((size_t)half * sizeof *t->pair_inv_freq);
    VIDI_CHECK(t->pair_axis && t->pair_inv_freq, err, VIDI_ERR_NOMEM, "text: out of memory");
    for (int i = 0; i < half; i++) {
        int axis = i < c->mrope_section[0] ? 0 : (i < c->mrope_section[0] + c->mrope_section[1] ? 1 : 2);
        t->pair_axis[i] = axis;
        float e = (float)(2 * i) / (float)D;
        t->pair_inv_freq[i] = 1.0f / powf((float)c->rope_theta, e);
    }
    t->rope = (vidi_rope_spec){.head_dim = (int)D, .n_axes = 3, .pair_axis = t->pair_axis,
                               .pair_inv_freq = t->pair_inv_freq};
    *out = t;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "loading the text model");
    vidi_text_free(t);
    return rc;
}

void vidi_text_free(vidi_text *t) {
    if (!t) return;
    for (int i = 0; i < t->n_owned; i++) t->be->ops->buf_free(t->be, t->owned[i]);
    if (t->scratch) t->be->ops->buf_free(t->be, t->scratch);
    free(t->owned);
    free(t->layers);
    free(t->pair_axis);
    free(t->pair_inv_freq);
    free(t);
}

int vidi_text_hidden_size(const vidi_text *t) { return t->cfg.hidden_size; }
int vidi_text_vocab_size(const vidi_text *t) { return t->cfg.vocab_size; }

/* ---- scratch ---- */

vidi_status text_scratch(vidi_text *t, size_t bytes, vidi_err *err) {
    if (bytes <= t->scratch_bytes) return VIDI_OK;
    if (t->scratch) {
        t->be->ops->buf_free(t->be, t->scratch);
        t->scratch = NULL;
        t->scratch_bytes = 0;
    }
    size_t want = text_align(bytes + bytes / 4);
    t->scratch = t->be->ops->buf_alloc(t->be, want);
    if (!t->scratch)
        return vidi_err_set(err, VIDI_ERR_NOMEM, "text: cannot allocate %zu bytes of %s scratch "
                            "memory", want, t->be->name);
    t->scratch_bytes = want;
    return VIDI_OK;
}

void text_carve_act(text_carver *cv, const vidi_text_config *c, int64_t T, size_t es, text_act *b) {
    const int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    const int64_t Hq = c->num_heads, Hkv = c->num_kv_heads;
    b->x = text_carve(cv, (size_t)(T * H) * es);
    b->h = text_carve(cv, (size_t)(T * H) * es);
    b->q = text_carve(cv, (size_t)(T * Hq * D) * es);
    b->k = text_carve(cv, (size_t)(T * Hkv * D) * es);
    b->v = text_carve(cv, (size_t)(T * Hkv * D) * es);
    b->a = text_carve(cv, (size_t)(T * Hq * D) * es);
    b->g = text_carve(cv, (size_t)(T * I) * es);
    b->u = text_carve(cv, (size_t)(T * I) * es);
}

/* ---- recorded decode steps ---- */

void text_graph_free(vidi_backend *be, text_graph *g) {
    if (g->graph) be->ops->graph_free(be, g->graph);
    g->graph = NULL;
    g->eager = 0;
}

vidi_status text_graph_step(vidi_backend *be, text_graph *g, vidi_status (*body)(void *ctx, vidi_err *err),
                            void *ctx, const vidi_tensor *logits, vidi_err *err) {
    const vidi_backend_ops *op = be->ops;
    if (g->graph && g->logits != logits->data) text_graph_free(be, g);
    if (!g->graph && !g->eager) {
        vidi_status rc = body(ctx, err);
        if (rc == VIDI_OK) g->eager = 1;
        return rc;
    }
    if (!g->graph) {
        vidi_status rc = op->graph_begin(be, err);
        if (rc != VIDI_OK) return rc;
        vidi_status brc = body(ctx, err);
        vidi_err e2;
        void *graph = NULL;
        vidi_status erc = op->graph_end(be, &graph, brc == VIDI_OK ? err : &e2);
        if (brc != VIDI_OK) {
            if (graph) op->graph_free(be, graph);
            return brc;
        }
        if (erc != VIDI_OK) return erc;
        g->graph = graph;
        g->logits = logits->data;
    }
    return op->graph_launch(be, g->graph, err);
}

/* ---- KV cache ---- */

vidi_status vidi_kv_cache_create(const vidi_text *t, int64_t capacity, vidi_kv_cache **out,
                                 vidi_err *err) {
    *out = NULL;
    if (capacity <= 0 || capacity > INT32_MAX)
        return vidi_err_set(err, VIDI_ERR_INVALID, "kv cache: capacity %lld must be in [1, %d]",
                            (long long)capacity, INT32_MAX);
    vidi_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return vidi_err_set(err, VIDI_ERR_NOMEM, "kv cache: out of memory");
    kv->t = t;
    kv->capacity = capacity;
    kv->plane = (size_t)capacity * (size_t)t->cfg.num_kv_heads * (size_t)t->cfg.head_dim *
                vidi_dtype_size(t->be->act_dtype);
    size_t bytes = kv->plane * 2 * (size_t)t->cfg.num_layers;
    kv->buf = t->be->ops->buf_alloc(t->be, bytes);
    if (!kv->buf) {
        free(kv);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "kv cache: cannot allocate %zu bytes of %s memory "
                            "for %lld tokens", bytes, t->be->name, (long long)capacity);
    }
    *out = kv;
    return VIDI_OK;
}

void vidi_kv_cache_free(vidi_kv_cache *kv) {
    if (!kv) return;
    vidi_backend *be = kv->t->be;
    text_graph_free(be, &kv->dg);
    if (kv->dec) be->ops->buf_free(be, kv->dec);
    kv->t->be->ops->buf_free(kv->t->be, kv->buf);
    free(kv);
}

int64_t vidi_kv_cache_len(const vidi_kv_cache *kv) { return kv->len; }
int64_t vidi_kv_cache_capacity(const vidi_kv_cache *kv) { return kv->capacity; }

vidi_status vidi_kv_cache_truncate(vidi_kv_cache *kv, int64_t len, vidi_err *err) {
    if (len < 0 || len > kv->len)
        return vidi_err_set(err, VIDI_ERR_INVALID, "kv cache: cannot truncate %lld tokens to %lld",
                            (long long)kv->len, (long long)len);
    kv->len = len;
    return VIDI_OK;
}

/* ---- embeddings ---- */

vidi_status vidi_text_embed(vidi_text *t, const int32_t *ids, int64_t n, const vidi_tensor *vision,
                            vidi_tensor *out, vidi_err *err) {
    vidi_status rc;
    vidi_backend *be = t->be;
    int32_t *idx = NULL;
    int64_t H = t->cfg.hidden_size;
    VIDI_CHECK(n > 0 && ids, err, VIDI_ERR_INVALID, "text embed: no tokens");
    VIDI_CHECK(out && out->dtype == be->act_dtype && vidi_tensor_rows(out) == n &&
                   vidi_tensor_cols(out) == H, err, VIDI_ERR_INVALID,
               "text embed: output must be %s [%lld, %lld]", vidi_dtype_name(be->act_dtype),
               (long long)n, (long long)H);
    int64_t n_pad = 0;
    for (int64_t i = 0; i < n; i++) {
        VIDI_CHECK(ids[i] >= 0 && ids[i] < t->cfg.vocab_size, err, VIDI_ERR_INVALID,
                   "text embed: token %lld has id %d outside the vocabulary [0, %d)",
                   (long long)i, ids[i], t->cfg.vocab_size);
        if (ids[i] == t->image_token_id || ids[i] == t->video_token_id) n_pad++;
    }
    int64_t n_vis = vision ? vidi_tensor_rows(vision) : 0;
    if (vision)
        VIDI_CHECK(n_pad == n_vis, err, VIDI_ERR_INVALID,
                   "text embed: %lld image/video pad tokens but %lld vision embedding rows",
                   (long long)n_pad, (long long)n_vis);
    if (vision && n_vis > 0)
        VIDI_CHECK(vidi_tensor_cols(vision) == H && vision->dtype == be->act_dtype, err,
                   VIDI_ERR_INVALID, "text embed: vision embeddings must be %s [rows, %lld], got "
                   "%s with %lld columns", vidi_dtype_name(be->act_dtype), (long long)H,
                   vidi_dtype_name(vision->dtype), (long long)vidi_tensor_cols(vision));

    size_t id_bytes = text_align((size_t)n * sizeof(int32_t));
    VIDI_TRY(text_scratch(t, id_bytes * 2, err));
    int32_t *d_ids = t->scratch;
    int32_t *d_idx = (int32_t *)((char *)t->scratch + id_bytes);
    VIDI_TRY(be->ops->copy_to_device(be, d_ids, ids, (size_t)n * sizeof(int32_t), err));
    vidi_tensor tid = vidi_tensor_1d(VIDI_DTYPE_I32, d_ids, n);
    VIDI_TRY(be->ops->gather_rows(be, &t->embed, &tid, out, err));
    if (n_vis > 0) {
        idx = malloc((size_t)n_vis * sizeof *idx);
        VIDI_CHECK(idx, err, VIDI_ERR_NOMEM, "text embed: out of memory");
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (ids[i] == t->image_token_id || ids[i] == t->video_token_id) idx[k++] = (int32_t)i;
        VIDI_TRY(be->ops->copy_to_device(be, d_idx, idx, (size_t)n_vis * sizeof(int32_t), err));
        vidi_tensor tidx = vidi_tensor_1d(VIDI_DTYPE_I32, d_idx, n_vis);
        VIDI_TRY(be->ops->scatter_rows(be, vision, &tidx, out, err));
        /* The upload above must finish before idx is freed. */
        VIDI_TRY(be->ops->synchronize(be, err));
    }
    free(idx);
    return VIDI_OK;
fail:
    free(idx);
    return rc;
}

/* ---- forward ---- */

void vidi_text_set_prompt_attention(vidi_text *t, vidi_text_attn_fn fn, void *user) {
    t->prompt_attn = fn;
    t->prompt_attn_user = user;
}

vidi_backend *vidi_text_backend(const vidi_text *t) { return t->be; }

/* Layer l: the new keys and values into the cache (unless `write` is 0:
 * already there), then attention into b->a (see text_kv_io). */
static vidi_status text_attend(vidi_text *t, int l, int64_t T, const text_act *b, const text_kv_io *io,
                               int write, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    int64_t D = c->head_dim, Hq = c->num_heads, Hkv = c->num_kv_heads;
    size_t row_kv = (size_t)(Hkv * D) * vidi_dtype_size(adt);
    char *kc = io->base + (size_t)l * 2 * io->plane;
    char *vc = kc + io->plane;
    vidi_tensor tq = vidi_tensor_3d(adt, b->q, T, Hq, D);
    vidi_tensor ta = vidi_tensor_3d(adt, b->a, T, Hq, D);

    if (!write) {
        /* the keys and values are in the cache already (qkv_rope_store) */
    } else if (io->at) {
        vidi_tensor tk2 = vidi_tensor_2d(adt, b->k, T, Hkv * D);
        vidi_tensor tv2 = vidi_tensor_2d(adt, b->v, T, Hkv * D);
        vidi_tensor kc2 = vidi_tensor_2d(adt, kc, io->rows, Hkv * D);
        vidi_tensor vc2 = vidi_tensor_2d(adt, vc, io->rows, Hkv * D);
        VIDI_TRY(op->scatter_rows(be, &tk2, io->at, &kc2, err));
        VIDI_TRY(op->scatter_rows(be, &tv2, io->at, &vc2, err));
    } else {
        VIDI_TRY(op->copy(be, kc + (size_t)io->append_at * row_kv, b->k, (size_t)T * row_kv, err));
        VIDI_TRY(op->copy(be, vc + (size_t)io->append_at * row_kv, b->v, (size_t)T * row_kv, err));
    }

    if (io->block_size > 0) {
        int64_t nb = io->rows / io->block_size;
        vidi_tensor k4 = {.dtype = adt, .ndim = 4, .shape = {nb, io->block_size, Hkv, D}, .data = kc};
        vidi_tensor v4 = {.dtype = adt, .ndim = 4, .shape = {nb, io->block_size, Hkv, D}, .data = vc};
        VIDI_TRY(op->attention_paged(be, &tq, &k4, &v4, io->table, io->lens, io->scale, &ta, err));
        return VIDI_OK;
    }
    void *kp = kc, *vp = vc;
    if (io->keys_new) {
        kp = b->k;
        vp = b->v;
    } else if (io->gather) {
        vidi_tensor kc2 = vidi_tensor_2d(adt, kc, io->rows, Hkv * D);
        vidi_tensor vc2 = vidi_tensor_2d(adt, vc, io->rows, Hkv * D);
        vidi_tensor gk2 = vidi_tensor_2d(adt, io->gk, io->Lk, Hkv * D);
        vidi_tensor gv2 = vidi_tensor_2d(adt, io->gv, io->Lk, Hkv * D);
        VIDI_TRY(op->gather_rows(be, &kc2, io->gather, &gk2, err));
        VIDI_TRY(op->gather_rows(be, &vc2, io->gather, &gv2, err));
        kp = io->gk;
        vp = io->gv;
    }
    vidi_tensor tkc = vidi_tensor_3d(adt, kp, io->Lk, Hkv, D);
    vidi_tensor tvc = vidi_tensor_3d(adt, vp, io->Lk, Hkv, D);
    /* a prompt from the start: its keys are the new ones (paged) or the cache's first T rows */
    int whole_prompt = io->Lk == T && (io->keys_new || (!io->at && io->append_at == 0 && !io->gather));
    if (t->prompt_attn && whole_prompt && io->attn && io->attn->n_seqs == 1 && !io->k_len)
        VIDI_TRY(t->prompt_attn(t->prompt_attn_user, l, &tq, &tkc, &tvc, &ta, io->attn->scale, err));
    else if (io->k_len)
        VIDI_TRY(op->attention_klen(be, &tq, &tkc, &tvc, &ta, io->attn, io->k_len, err));
    else
        VIDI_TRY(op->attention(be, &tq, &tkc, &tvc, &ta, io->attn, err));
fail:
    return rc;
}

vidi_status text_layers(vidi_text *t, int64_t T, const text_act *b, const vidi_tensor *tpos,
                        const text_kv_io *io, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    int64_t H = c->hidden_size, I = c->intermediate_size, D = c->head_dim;
    int64_t Hq = c->num_heads, Hkv = c->num_kv_heads;

    vidi_tensor tx = vidi_tensor_2d(adt, b->x, T, H);
    vidi_tensor th = vidi_tensor_2d(adt, b->h, T, H);
    vidi_tensor tq = vidi_tensor_3d(adt, b->q, T, Hq, D);
    vidi_tensor tk = vidi_tensor_3d(adt, b->k, T, Hkv, D);
    vidi_tensor ta2 = vidi_tensor_2d(adt, b->a, T, Hq * D);
    vidi_tensor tq2 = vidi_tensor_2d(adt, b->q, T, Hq * D);
    vidi_tensor tk2 = vidi_tensor_2d(adt, b->k, T, Hkv * D);
    vidi_tensor tv2 = vidi_tensor_2d(adt, b->v, T, Hkv * D);
    vidi_tensor tg = vidi_tensor_2d(adt, b->g, T, I);
    vidi_tensor tu = vidi_tensor_2d(adt, b->u, T, I);

    /* Forwards that scatter their keys and read them back from the cache use
     * the fused q/k/v weight where there is one: one product, then
     * qkv_rope_store rotates q into b->q and writes k and v to their cache
     * rows (b->g holds the fused rows). */
    const int64_t qkvd = (Hq + 2 * Hkv) * D;
    const int fused = io->at && !io->keys_new && op->qkv_rope_store && t->layers[0].wqkv.data && qkvd <= I;
    vidi_tensor tqkv = vidi_tensor_2d(adt, b->g, T, qkvd);
    for (int l = 0; l < c->num_layers; l++) {
        const text_layer *L = &t->layers[l];
        VIDI_TRY(op->rms_norm(be, &tx, &L->ln1, c->rms_norm_eps, &th, err));
        if (fused) {
            char *kc = io->base + (size_t)l * 2 * io->plane;
            vidi_tensor kc2 = vidi_tensor_2d(adt, kc, io->rows, Hkv * D);
            vidi_tensor vc2 = vidi_tensor_2d(adt, kc + io->plane, io->rows, Hkv * D);
            VIDI_TRY(op->matmul(be, &th, &L->wqkv, &L->bqkv, &tqkv, err));
            VIDI_TRY(op->qkv_rope_store(be, &tqkv, tpos, &t->rope, &tq, io->at, &kc2, &vc2, err));
            VIDI_TRY(text_attend(t, l, T, b, io, 0, err));
        } else {
            VIDI_TRY(op->matmul(be, &th, &L->wq, &L->bq, &tq2, err));
            VIDI_TRY(op->matmul(be, &th, &L->wk, &L->bk, &tk2, err));
            VIDI_TRY(op->matmul(be, &th, &L->wv, &L->bv, &tv2, err));
            VIDI_TRY(op->rope(be, &tq, tpos, &t->rope, err));
            VIDI_TRY(op->rope(be, &tk, tpos, &t->rope, err));
            VIDI_TRY(text_attend(t, l, T, b, io, 1, err));
        }
        VIDI_TRY(vidi_matmul_residual(be, &ta2, &L->wo, NULL, &tx, &th, err));

        VIDI_TRY(op->rms_norm(be, &tx, &L->ln2, c->rms_norm_eps, &th, err));
        VIDI_TRY(op->matmul(be, &th, &L->wg, NULL, &tg, err));
        VIDI_TRY(op->matmul(be, &th, &L->wu, NULL, &tu, err));
        VIDI_TRY(op->act_mul(be, VIDI_ACT_SILU, &tg, &tu, &tg, err));
        VIDI_TRY(vidi_matmul_residual(be, &tg, &L->wd, NULL, &tx, &th, err));
    }
fail:
    return rc;
}

vidi_status text_out_rows(const vidi_text *t, const vidi_text_out *out, int64_t T, int64_t *R_out,
                          vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_dtype adt = t->be->act_dtype;
    int64_t V = t->cfg.vocab_size, R = 0;
    VIDI_CHECK(out, err, VIDI_ERR_INVALID, "no output description");
    switch (out->which) {
    case VIDI_TEXT_LOGITS_NONE: R = 0; break;
    case VIDI_TEXT_LOGITS_LAST: R = 1; break;
    case VIDI_TEXT_LOGITS_ALL: R = T; break;
    case VIDI_TEXT_LOGITS_ROWS:
        R = out->n_rows;
        VIDI_CHECK(R > 0 && out->rows, err, VIDI_ERR_INVALID, "no rows listed");
        for (int64_t i = 0; i < R; i++)
            VIDI_CHECK(out->rows[i] >= 0 && out->rows[i] < T, err, VIDI_ERR_INVALID,
                       "logits row %d is outside [0, %lld)", out->rows[i], (long long)T);
        break;
    default:
        VIDI_CHECK(0, err, VIDI_ERR_INVALID, "unknown logits selection %d", (int)out->which);
    }
    if (R > 0)
        VIDI_CHECK(out->logits && out->logits->dtype == adt && vidi_tensor_rows(out->logits) == R &&
                       vidi_tensor_cols(out->logits) == V, err, VIDI_ERR_INVALID,
                   "logits must be %s [%lld, %lld]", vidi_dtype_name(adt), (long long)R, (long long)V);
    *R_out = R;
fail:
    return rc;
}

vidi_status text_head(vidi_text *t, void *x, int64_t T, const vidi_text_out *out, int64_t R, void *h,
                      void *drows, void *sel, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    vidi_dtype adt = be->act_dtype;
    size_t es = vidi_dtype_size(adt);
    int64_t H = t->cfg.hidden_size, V = t->cfg.vocab_size;
    if (R == 0) return VIDI_OK;
    /* The final norm is per row, so only the selected rows need it. */
    vidi_tensor tx = vidi_tensor_2d(adt, x, T, H);
    vidi_tensor tsrc = tx;
    if (out->which == VIDI_TEXT_LOGITS_LAST) {
        tsrc = vidi_tensor_2d(adt, (char *)x + (size_t)((T - 1) * H) * es, 1, H);
    } else if (out->which == VIDI_TEXT_LOGITS_ROWS) {
        VIDI_TRY(op->copy_to_device(be, drows, out->rows, (size_t)R * sizeof(int32_t), err));
        vidi_tensor trows = vidi_tensor_1d(VIDI_DTYPE_I32, drows, R);
        tsrc = vidi_tensor_2d(adt, sel, R, H);
        VIDI_TRY(op->gather_rows(be, &tx, &trows, &tsrc, err));
    }
    vidi_tensor tn = vidi_tensor_2d(adt, h, R, H);
    VIDI_TRY(op->rms_norm(be, &tsrc, &t->norm, t->cfg.rms_norm_eps, &tn, err));
    vidi_tensor tl = vidi_tensor_2d(adt, out->logits->data, R, V);
    VIDI_TRY(op->matmul(be, &tn, &t->lm_head, NULL, &tl, err));
fail:
    return rc;
}

vidi_status vidi_text_forward(vidi_text *t, vidi_kv_cache *kv, const vidi_tensor *embeds,
                              const int32_t *pos, const vidi_text_out *out, vidi_err *err) {
    vidi_status rc;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    size_t es = vidi_dtype_size(adt);
    int64_t H = c->hidden_size, D = c->head_dim;
    int64_t T = embeds ? vidi_tensor_rows(embeds) : 0;

    VIDI_CHECK(kv && kv->t == t, err, VIDI_ERR_INVALID, "the KV cache belongs to "
               "another model");
    VIDI_CHECK(T > 0 && embeds->dtype == adt && vidi_tensor_cols(embeds) == H && pos, err,
               VIDI_ERR_INVALID, "embeddings must be %s [T > 0, %lld]",
               vidi_dtype_name(adt), (long long)H);
    VIDI_CHECK(kv->len + T <= kv->capacity, err, VIDI_ERR_RANGE,
               "%lld new tokens do not fit in the KV cache (%lld of %lld used)",
               (long long)T, (long long)kv->len, (long long)kv->capacity);
    int64_t R = 0;
    VIDI_TRY(text_out_rows(t, out, T, &R, err));

    /* Scratch layout: first measured with a NULL base, then carved. */
    text_act act;
    void *dpos, *drows, *sel;
    for (int pass = 0; pass < 2; pass++) {
        text_carver cv = {pass ? t->scratch : NULL, 0};
        text_carve_act(&cv, c, T, es, &act);
        dpos = text_carve(&cv, (size_t)(T * 3) * sizeof(int32_t));
        drows = text_carve(&cv, (size_t)(R ? R : 1) * sizeof(int32_t));
        sel = text_carve(&cv, (size_t)((R ? R : 1) * H) * es);
        if (!pass) VIDI_TRY(text_scratch(t, cv.off, err));
    }

    vidi_tensor tpos = vidi_tensor_2d(VIDI_DTYPE_I32, dpos, T, 3);

    VIDI_TRY(op->copy(be, act.x, embeds->data, (size_t)(T * H) * es, err));
    VIDI_TRY(op->copy_to_device(be, dpos, pos, (size_t)(T * 3) * sizeof(int32_t), err));

    int64_t Lk = kv->len + T;
    int32_t cu_q[2] = {0, (int32_t)T}, cu_k[2] = {0, (int32_t)Lk};
    vidi_attn_args attn = {.cu_q = cu_q, .cu_k = cu_k, .n_seqs = 1, .causal = 1,
                           .scale = 1.0f / sqrtf((float)D)};
    text_kv_io io = {.base = kv->buf, .plane = kv->plane, .rows = kv->capacity, .append_at = kv->len,
                     .attn = &attn, .Lk = Lk};
    VIDI_TRY(text_layers(t, T, &act, &tpos, &io, err));

    VIDI_TRY(text_head(t, act.x, T, out, R, act.h, drows, sel, err));
    /* No wait here: copy_to_device has taken its own copy of the host inputs
     * (positions, rows) when it returns, and results may stay in flight (see
     * text.h); the caller's next copy_to_host / synchronize / sample waits. */
    kv->len += T;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "text forward (%lld tokens after %lld)", (long long)T,
                    kv ? (long long)kv->len : 0LL);
    return rc;
}

/* ---- one decode step ---- */

/* Step inputs at the start of kv->dec (i32): the token id, its 3 positions,
 * the cache row it goes to and the key count after it. */
enum { DEC_ID = 0, DEC_POS = 1, DEC_ROW = 4, DEC_LK = 5, DEC_INTS = 8 };

/* kv->dec: the step ints, then the activations of one token. */
static vidi_status text_dec_bufs(vidi_text *t, vidi_kv_cache *kv, text_act *b, vidi_err *err) {
    const vidi_text_config *c = &t->cfg;
    size_t es = vidi_dtype_size(t->be->act_dtype);
    for (int pass = 0; pass < 2; pass++) {
        text_carver cv = {pass ? kv->dec : NULL, 0};
        text_carve(&cv, DEC_INTS * sizeof(int32_t));
        text_carve_act(&cv, c, 1, es, b);
        if (!pass && !kv->dec) {
            kv->dec = t->be->ops->buf_alloc(t->be, cv.off);
            if (!kv->dec)
                return vidi_err_set(err, VIDI_ERR_NOMEM, "decode step: cannot allocate %zu bytes of "
                                    "%s memory", cv.off, t->be->name);
        }
    }
    return VIDI_OK;
}

/* The step's ops, all inputs read from kv->dec (recordable): embedding of
 * the id, the layers with the cache row and key count from device memory,
 * the final norm and lm_head into `logits`. */
static vidi_status text_dec_body(vidi_text *t, vidi_kv_cache *kv, const text_act *b,
                                 vidi_tensor *logits, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    int32_t *ints = kv->dec;
    vidi_tensor tid = vidi_tensor_1d(VIDI_DTYPE_I32, ints + DEC_ID, 1);
    vidi_tensor tpos = vidi_tensor_2d(VIDI_DTYPE_I32, ints + DEC_POS, 1, 3);
    vidi_tensor trow = vidi_tensor_1d(VIDI_DTYPE_I32, ints + DEC_ROW, 1);
    vidi_tensor tx = vidi_tensor_2d(adt, b->x, 1, c->hidden_size);
    vidi_tensor tn = vidi_tensor_2d(adt, b->h, 1, c->hidden_size);
    /* The whole cache is the key view; the key count comes from ints[DEC_LK]. */
    int32_t cu_q[2] = {0, 1}, cu_k[2] = {0, (int32_t)kv->capacity};
    vidi_attn_args attn = {.cu_q = cu_q, .cu_k = cu_k, .n_seqs = 1, .causal = 1,
                           .scale = 1.0f / sqrtf((float)c->head_dim)};
    VIDI_TRY(be->ops->gather_rows(be, &t->embed, &tid, &tx, err));
    text_kv_io io = {.base = kv->buf, .plane = kv->plane, .rows = kv->capacity, .at = &trow,
                     .attn = &attn, .Lk = kv->capacity, .k_len = ints + DEC_LK};
    VIDI_TRY(text_layers(t, 1, b, &tpos, &io, err));
    VIDI_TRY(be->ops->rms_norm(be, &tx, &t->norm, c->rms_norm_eps, &tn, err));
    VIDI_TRY(be->ops->matmul(be, &tn, &t->lm_head, NULL, logits, err));
fail:
    return rc;
}

typedef struct text_dec_ctx {
    vidi_text *t;
    vidi_kv_cache *kv;
    const text_act *b;
    vidi_tensor *logits;
} text_dec_ctx;

static vidi_status text_dec_run(void *ctx, vidi_err *err) {
    text_dec_ctx *c = ctx;
    return text_dec_body(c->t, c->kv, c->b, c->logits, err);
}

vidi_status vidi_text_decode_step(vidi_text *t, vidi_kv_cache *kv, int32_t id, const int32_t pos[3],
                                  vidi_tensor *logits, int use_graph, vidi_err *err) {
    vidi_status rc;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    int64_t V = t->cfg.vocab_size, H = t->cfg.hidden_size;
    VIDI_CHECK(kv && kv->t == t, err, VIDI_ERR_INVALID, "the KV cache belongs to another model");
    VIDI_CHECK(kv->len + 1 <= kv->capacity, err, VIDI_ERR_RANGE,
               "1 new token does not fit in the KV cache (%lld of %lld used)", (long long)kv->len,
               (long long)kv->capacity);
    VIDI_CHECK(id >= 0 && id < t->cfg.vocab_size, err, VIDI_ERR_INVALID,
               "token id %d is outside the vocabulary [0, %d)", id, t->cfg.vocab_size);
    VIDI_CHECK(pos, err, VIDI_ERR_INVALID, "no positions");
    VIDI_CHECK(logits && logits->dtype == be->act_dtype && vidi_tensor_rows(logits) == 1 &&
                   vidi_tensor_cols(logits) == V, err, VIDI_ERR_INVALID,
               "logits must be %s [1, %lld]", vidi_dtype_name(be->act_dtype), (long long)V);
    int graphs = use_graph && op->graph_begin && op->graph_end && op->graph_launch && op->graph_free &&
                 op->attention_klen;
    text_act b;
    VIDI_TRY(text_dec_bufs(t, kv, &b, err));
    if (!graphs) {
        /* The plain path: embed, then the general forward of one token. */
        vidi_tensor emb = vidi_tensor_2d(be->act_dtype, b.x, 1, H);
        VIDI_TRY(vidi_text_embed(t, &id, 1, NULL, &emb, err));
        vidi_text_out o = {.which = VIDI_TEXT_LOGITS_LAST, .logits = logits};
        return vidi_text_forward(t, kv, &emb, pos, &o, err);
    }
    int32_t ints[DEC_INTS] = {id, pos[0], pos[1], pos[2], (int32_t)kv->len, (int32_t)(kv->len + 1), 0, 0};
    VIDI_TRY(op->copy_to_device(be, kv->dec, ints, sizeof ints, err));
    text_dec_ctx ctx = {t, kv, &b, logits};
    VIDI_TRY(text_graph_step(be, &kv->dg, text_dec_run, &ctx, logits, err));
    kv->len += 1;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "decode step (after %lld tokens)", kv ? (long long)kv->len : 0LL);
    return rc;
}
