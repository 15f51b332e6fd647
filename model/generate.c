/* model/generate.c — one request end to end in one process (see generate.h). */
#include "model/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/text.h"

static double generate_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

vidi_generate_params vidi_generate_params_default(void) {
    vidi_generate_params p = {
        .max_tokens = 128,
        .sample = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f},
        .seed = 0,
        .stop_at_eos = 1,
        .prefill_chunk = 0,
        .want_first_logits = 0,
        .on_token = NULL,
        .user = NULL,
        .vision_embeds = NULL,
        .no_graphs = 0,
    };
    return p;
}

void vidi_generate_result_free(vidi_generate_result *res) {
    if (!res) return;
    free(res->tokens);
    free(res->first_logits);
    memset(res, 0, sizeof *res);
}

int64_t vidi_media_patch_dim(const vidi_model_config *cfg) {
    const vidi_vision_config *v = &cfg->vision;
    return (int64_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
}

vidi_status vidi_media_check(const vidi_model_config *cfg, const vidi_media *item, int index,
                             int need_pixels, vidi_err *err) {
    const char *kind = item->kind == VIDI_MEDIA_VIDEO ? "video" : "image";
    int m = cfg->vision.spatial_merge_size;
    int32_t t = item->grid[0], h = item->grid[1], w = item->grid[2];
    if (item->kind != VIDI_MEDIA_IMAGE && item->kind != VIDI_MEDIA_VIDEO)
        return vidi_err_set(err, VIDI_ERR_INVALID, "media item %d: unknown kind %d", index,
                            (int)item->kind);
    if (t <= 0 || h <= 0 || w <= 0 || m <= 0 || h % m || w % m)
        return vidi_err_set(err, VIDI_ERR_INVALID, "media item %d (%s): grid %d,%d,%d must have "
                            "positive sides with h and w multiples of the merge size %d", index,
                            kind, t, h, w, m);
    int64_t rows = (int64_t)t * h * w;
    if (need_pixels && item->n_rows != rows)
        return vidi_err_set(err, VIDI_ERR_INVALID, "media item %d (%s): %lld pixel rows but grid "
                            "%d,%d,%d needs t*h*w = %lld", index, kind, (long long)item->n_rows,
                            t, h, w, (long long)rows);
    if (need_pixels && !item->pixels)
        return vidi_err_set(err, VIDI_ERR_INVALID, "media item %d (%s): no pixels", index, kind);
    if (item->kind == VIDI_MEDIA_VIDEO && !(item->second_per_grid_t >= 0.0f))
        return vidi_err_set(err, VIDI_ERR_INVALID, "media item %d (video): second_per_grid_t %g "
                            "must be a non-negative number", index,
                            (double)item->second_per_grid_t);
    return VIDI_OK;
}

/* A backend tensor [rows, cols] of act dtype; *buf receives the memory. */
static vidi_status generate_alloc(vidi_backend *be, int64_t rows, int64_t cols, void **buf,
                                  vidi_tensor *t, vidi_err *err) {
    size_t bytes = (size_t)rows * (size_t)cols * vidi_dtype_size(be->act_dtype);
    *buf = be->ops->buf_alloc(be, bytes ? bytes : 1);
    if (!*buf)
        return vidi_err_set(err, VIDI_ERR_NOMEM, "generate: cannot allocate %zu bytes of %s memory",
                            bytes, be->name);
    *t = vidi_tensor_2d(be->act_dtype, *buf, rows, cols);
    return VIDI_OK;
}

static int generate_is_eos(const vidi_model_config *cfg, int32_t tok) {
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == tok) return 1;
    return 0;
}

vidi_status vidi_generate(vidi_model *m, const int32_t *ids, int64_t n_ids, const vidi_media *media,
                          int n_media, const vidi_generate_params *params,
                          vidi_generate_result *res, vidi_err *err) {
    vidi_status rc;
    vidi_backend *be = m ? m->be : NULL;
    vidi_mrope_item *items = NULL;
    int32_t *pos = NULL;
    void *vis_buf = NULL, *emb_buf = NULL, *logit_buf = NULL;
    vidi_kv_cache *kv = NULL;
    memset(res, 0, sizeof *res);

    VIDI_CHECK(m && ids && n_ids > 0 && params, err, VIDI_ERR_INVALID,
               "generate: a model, a non-empty prompt and parameters are required");
    VIDI_CHECK(params->max_tokens > 0, err, VIDI_ERR_INVALID,
               "generate: max_tokens %d must be positive", params->max_tokens);
    VIDI_CHECK(n_media >= 0 && (n_media == 0 || media), err, VIDI_ERR_INVALID,
               "generate: %d media items but no array", n_media);
    VIDI_CHECK(params->prefill_chunk >= 0, err, VIDI_ERR_INVALID,
               "generate: prefill_chunk %d must be >= 0", params->prefill_chunk);
    const vidi_model_config *cfg = &m->cfg;
    int64_t H = cfg->text.hidden_size, V = cfg->text.vocab_size;

    /* ---- positions (also validates that the pad runs match the media) ---- */
    if (n_media) {
        items = calloc((size_t)n_media, sizeof *items);
        VIDI_CHECK(items, err, VIDI_ERR_NOMEM, "generate: out of memory");
    }
    for (int i = 0; i < n_media; i++) {
        VIDI_TRY(vidi_media_check(cfg, &media[i], i, params->vision_embeds == NULL, err));
        items[i].kind = media[i].kind;
        memcpy(items[i].grid, media[i].grid, sizeof items[i].grid);
        items[i].second_per_grid_t = media[i].second_per_grid_t;
    }
    pos = malloc((size_t)n_ids * 3 * sizeof *pos);
    VIDI_CHECK(pos, err, VIDI_ERR_NOMEM, "generate: out of memory");
    vidi_mrope_params mp = vidi_mrope_params_from_config(cfg);
    VIDI_TRY(vidi_mrope_positions(&mp, ids, n_ids, items, n_media, pos, &res->rope_delta, err));
    res->prompt_tokens = n_ids;

    /* ---- vision: each item encoded on its own into its rows of the block ---- */
    double t0 = generate_now();
    vidi_tensor vis = {0};
    int64_t n_vis = 0;
    for (int i = 0; i < n_media; i++) n_vis += vidi_mrope_item_tokens(&mp, &items[i]);
    if (params->vision_embeds) {
        const vidi_tensor *pv = params->vision_embeds;
        VIDI_CHECK(pv->dtype == be->act_dtype && vidi_tensor_rows(pv) == n_vis &&
                       vidi_tensor_cols(pv) == H, err, VIDI_ERR_INVALID,
                   "generate: precomputed vision embeddings must be %s [%lld, %lld] for these "
                   "media, got %s with %lld rows of %lld", vidi_dtype_name(be->act_dtype),
                   (long long)n_vis, (long long)H, vidi_dtype_name(pv->dtype),
                   (long long)vidi_tensor_rows(pv), (long long)vidi_tensor_cols(pv));
        vis = *pv;
    } else if (n_vis > 0) {
        VIDI_TRY(generate_alloc(be, n_vis, H, &vis_buf, &vis, err));
        int64_t row = 0;
        size_t row_bytes = (size_t)H * vidi_dtype_size(be->act_dtype);
        for (int i = 0; i < n_media; i++) {
            int64_t r = vidi_mrope_item_tokens(&mp, &items[i]);
            vidi_tensor part = vidi_tensor_2d(be->act_dtype, (char *)vis_buf + (size_t)row * row_bytes,
                                              r, H);
            const int32_t(*grid)[3] = &media[i].grid;
            rc = vidi_vision_encode(m->vision, media[i].pixels, media[i].n_rows, grid, 1, &part, err);
            if (rc != VIDI_OK) {
                vidi_err_prefix(err, "generate: encoding media item %d", i);
                goto fail;
            }
            row += r;
        }
    }
    double t1 = generate_now();
    res->encode_s = t1 - t0;

    /* ---- input embeddings, prefill ---- */
    vidi_tensor emb;
    VIDI_TRY(generate_alloc(be, n_ids, H, &emb_buf, &emb, err));
    VIDI_TRY(vidi_text_embed(m->text, ids, n_ids, n_vis > 0 ? &vis : NULL, &emb, err));
    if (vis_buf) {
        be->ops->buf_free(be, vis_buf);
        vis_buf = NULL;
    }
    VIDI_TRY(vidi_kv_cache_create(m->text, n_ids + params->max_tokens, &kv, err));
    vidi_tensor logits;
    VIDI_TRY(generate_alloc(be, 1, V, &logit_buf, &logits, err));
    int64_t chunk = params->prefill_chunk > 0 ? params->prefill_chunk : n_ids;
    size_t row_bytes = (size_t)H * vidi_dtype_size(be->act_dtype);
    for (int64_t off = 0; off < n_ids; off += chunk) {
        int64_t c = n_ids - off < chunk ? n_ids - off : chunk;
        int last = off + c == n_ids;
        vidi_tensor part = vidi_tensor_2d(be->act_dtype, (char *)emb_buf + (size_t)off * row_bytes, c, H);
        vidi_text_out o = {.which = last ? VIDI_TEXT_LOGITS_LAST : VIDI_TEXT_LOGITS_NONE,
                           .logits = last ? &logits : NULL};
        VIDI_TRY(vidi_text_forward(m->text, kv, &part, pos + off * 3, &o, err));
    }
    be->ops->buf_free(be, emb_buf);
    emb_buf = NULL;
    if (params->want_first_logits) {
        res->first_logits = malloc((size_t)V * sizeof(float));
        VIDI_CHECK(res->first_logits, err, VIDI_ERR_NOMEM, "generate: out of memory");
        res->vocab = (int)V;
        /* act dtype (bf16 on CUDA) read back as f32 */
        VIDI_TRY(vidi_download_f32(be, res->first_logits, logit_buf, (size_t)V, err));
    }
    /* The forward passes may still be in flight: wait, so prefill_s is their time. */
    VIDI_TRY(be->ops->synchronize(be, err));
    double t2 = generate_now();
    res->prefill_s = t2 - t1;

    /* ---- sampling loop ---- */
    res->tokens = malloc((size_t)params->max_tokens * sizeof *res->tokens);
    VIDI_CHECK(res->tokens, err, VIDI_ERR_NOMEM, "generate: out of memory");
    uint64_t rng = vidi_rng_seed(params->seed);
    /* VIDI_NO_GRAPHS=1 in the environment turns graphs off too (timing the plain path). */
    const char *ng = getenv("VIDI_NO_GRAPHS");
    int use_graph = !params->no_graphs && !(ng && *ng && strcmp(ng, "0"));
    res->finish = VIDI_FINISH_LENGTH;
    for (;;) {
        int32_t tok;
        VIDI_TRY(be->ops->sample(be, &logits, &params->sample, &rng, &tok, err));
        int index = res->n_tokens;
        res->tokens[res->n_tokens++] = tok;
        int stop_cb = params->on_token ? params->on_token(params->user, tok, index) : 0;
        if (params->stop_at_eos && generate_is_eos(cfg, tok)) {
            res->finish = VIDI_FINISH_EOS;
            break;
        }
        if (stop_cb) {
            res->finish = VIDI_FINISH_CALLBACK;
            break;
        }
        if (res->n_tokens >= params->max_tokens) break;
        int32_t p3[3];
        vidi_mrope_decode_position(vidi_kv_cache_len(kv), res->rope_delta, p3);
        VIDI_TRY(vidi_text_decode_step(m->text, kv, tok, p3, &logits, use_graph, err));
    }
    res->decode_s = generate_now() - t2;
    rc = VIDI_OK;
    goto done;
fail:
    vidi_generate_result_free(res);
done:
    if (be) {
        if (vis_buf) be->ops->buf_free(be, vis_buf);
        if (emb_buf) be->ops->buf_free(be, emb_buf);
        if (logit_buf) be->ops->buf_free(be, logit_buf);
    }
    vidi_kv_cache_free(kv);
    free(pos);
    free(items);
    return rc;
}

vidi_status vidi_prompt_build(const vidi_model_config *cfg, const vidi_tokenizer *tok, const char *system,
                              const char *text, const vidi_media *media, int n_media, int32_t **ids_out,
                              int64_t *n_out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_chat_part *parts = NULL;
    char *rendered = NULL;
    int32_t *ids = NULL, *expanded = NULL;
    *ids_out = NULL;
    *n_out = 0;
    VIDI_CHECK(cfg && tok && text && n_media >= 0 && (media || n_media == 0), err, VIDI_ERR_INVALID,
               "prompt: no configuration, tokenizer or text");
    parts = calloc((size_t)n_media + 1, sizeof *parts);
    VIDI_CHECK(parts, err, VIDI_ERR_NOMEM, "prompt: out of memory");
    for (int i = 0; i < n_media; i++) {
        VIDI_CHECK(media[i].kind == VIDI_MEDIA_IMAGE || media[i].kind == VIDI_MEDIA_VIDEO, err,
                   VIDI_ERR_INVALID, "prompt: media %d is neither an image nor a video", i);
        parts[i].kind = media[i].kind == VIDI_MEDIA_VIDEO ? VIDI_CHAT_VIDEO : VIDI_CHAT_IMAGE;
    }
    parts[n_media].kind = VIDI_CHAT_TEXT;
    parts[n_media].text = text;
    vidi_chat_part sys_part = {.kind = VIDI_CHAT_TEXT, .text = system};
    vidi_chat_message msgs[2];
    int n_msgs = 0;
    if (system) msgs[n_msgs++] = (vidi_chat_message){.role = "system", .parts = &sys_part, .n_parts = 1};
    msgs[n_msgs++] = (vidi_chat_message){.role = "user", .parts = parts, .n_parts = n_media + 1};
    VIDI_TRY(vidi_chat_template_render(msgs, n_msgs, 1, &rendered, err));
    size_t n_ids = 0;
    VIDI_TRY(vidi_tokenizer_encode(tok, rendered, strlen(rendered), &ids, &n_ids, err));

    /* Each pad token becomes its item's merged token count. */
    vidi_mrope_params mp = vidi_mrope_params_from_config(cfg);
    int64_t total = 0;
    int seen = 0;
    for (int pass = 0; pass < 2; pass++) {
        int64_t k = 0;
        seen = 0;
        for (size_t i = 0; i < n_ids; i++) {
            if (ids[i] != cfg->image_token_id && ids[i] != cfg->video_token_id) {
                if (pass) expanded[k] = ids[i];
                k++;
                continue;
            }
            VIDI_CHECK(seen < n_media, err, VIDI_ERR_INVALID,
                       "prompt: more image/video pad tokens than the %d media given (a pad written in the "
                       "text?)", n_media);
            vidi_mrope_item it = {.kind = media[seen].kind};
            memcpy(it.grid, media[seen].grid, sizeof it.grid);
            int64_t c = vidi_mrope_item_tokens(&mp, &it);
            VIDI_CHECK(c > 0, err, VIDI_ERR_INVALID, "prompt: media %d has an empty grid", seen);
            if (pass)
                for (int64_t j = 0; j < c; j++) expanded[k + j] = ids[i];
            k += c;
            seen++;
        }
        VIDI_CHECK(seen == n_media, err, VIDI_ERR_INVALID, "prompt: %d media given but the rendered prompt "
                   "has %d pad tokens", n_media, seen);
        if (!pass) {
            total = k;
            expanded = malloc((size_t)total * sizeof *expanded);
            VIDI_CHECK(expanded, err, VIDI_ERR_NOMEM, "prompt: out of memory");
        }
    }
    *ids_out = expanded;
    *n_out = total;
    expanded = NULL;
fail:
    free(expanded);
    free(ids);
    free(rendered);
    free(parts);
    return rc;
}
