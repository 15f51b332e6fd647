/* prefill/prefill.c — pads expanded, embeddings, positions, one paged
 * forward and the first token (see prefill.h). */
#include "prefill/prefill.h"

#include <stdlib.h>
#include <string.h>

static vidi_mrope_item s_mrope_item(const vidi_prefill_item *it) {
    vidi_mrope_item m;
    memset(&m, 0, sizeof m);
    m.kind = it->kind;
    memcpy(m.grid, it->grid, sizeof m.grid);
    m.second_per_grid_t = it->second_per_grid_t;
    return m;
}

int64_t vidi_prefill_item_rows(const vidi_model_config *cfg, const vidi_prefill_item *item) {
    vidi_mrope_params mp = vidi_mrope_params_from_config(cfg);
    vidi_mrope_item m = s_mrope_item(item);
    return vidi_mrope_item_tokens(&mp, &m);
}

vidi_status vidi_prefill_expand_pads(const vidi_model_config *cfg, const int32_t *ids, int64_t n,
                                     const vidi_prefill_item *items, int n_items, int32_t **out, int64_t *n_out,
                                     vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int32_t *o = NULL;
    *out = NULL;
    *n_out = 0;
    int32_t img = cfg->image_token_id, vid = cfg->video_token_id;
    int64_t total = n;
    for (int i = 0; i < n_items; i++) {
        int64_t r = vidi_prefill_item_rows(cfg, &items[i]);
        VIDI_CHECK(r > 0, err, VIDI_ERR_INVALID, "prefill: media item %d has an empty grid", i);
        total += r - 1;
    }
    o = malloc((size_t)(total > 0 ? total : 1) * sizeof *o);
    VIDI_CHECK(o, err, VIDI_ERR_NOMEM, "prefill: out of memory");
    int64_t k = 0;
    int item = 0;
    for (int64_t j = 0; j < n; j++) {
        if (ids[j] != img && ids[j] != vid) {
            o[k++] = ids[j];
            continue;
        }
        VIDI_CHECK(item < n_items, err, VIDI_ERR_INVALID,
                   "prefill: the prompt has more media pads than the %d media items", n_items);
        int want = items[item].kind == VIDI_MEDIA_VIDEO ? vid : img;
        VIDI_CHECK(ids[j] == want, err, VIDI_ERR_INVALID, "prefill: media item %d is %s but its pad is not",
                   item, items[item].kind == VIDI_MEDIA_VIDEO ? "a video" : "an image");
        int64_t r = vidi_prefill_item_rows(cfg, &items[item]);
        for (int64_t q = 0; q < r; q++) o[k++] = want;
        item++;
    }
    VIDI_CHECK(item == n_items, err, VIDI_ERR_INVALID, "prefill: %d media items but %d pads in the prompt",
               n_items, item);
    *out = o;
    *n_out = k;
    return VIDI_OK;
fail:
    free(o);
    return rc;
}

vidi_status vidi_prefill_run(vidi_model *m, vidi_kv_seq *seq, const int32_t *ids, int64_t n,
                             const vidi_prefill_item *items, int n_items, const vidi_tensor *vision,
                             const vidi_sample_params *sample, uint64_t *rng, vidi_prefill_result *res,
                             vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = m->be;
    vidi_mrope_item *mi = NULL;
    int32_t *pos = NULL;
    void *emb_buf = NULL, *logit_buf = NULL;
    memset(res, 0, sizeof *res);
    VIDI_CHECK(n > 0 && vidi_kv_seq_len(seq) == 0, err, VIDI_ERR_INVALID,
               "prefill: needs a non-empty prompt and an empty sequence");
    const vidi_model_config *cfg = &m->cfg;
    int64_t H = cfg->text.hidden_size, V = cfg->text.vocab_size;
    size_t es = vidi_dtype_size(be->act_dtype);
    if (n_items) {
        mi = calloc((size_t)n_items, sizeof *mi);
        VIDI_CHECK(mi, err, VIDI_ERR_NOMEM, "prefill: out of memory");
    }
    int64_t n_vis = 0;
    for (int i = 0; i < n_items; i++) {
        mi[i] = s_mrope_item(&items[i]);
        n_vis += vidi_prefill_item_rows(cfg, &items[i]);
    }
    VIDI_CHECK(n_vis == 0 || (vision && vision->dtype == be->act_dtype && vidi_tensor_rows(vision) == n_vis &&
                              vidi_tensor_cols(vision) == H),
               err, VIDI_ERR_INVALID, "prefill: vision embeddings must be %s [%lld, %lld] for these items",
               vidi_dtype_name(be->act_dtype), (long long)n_vis, (long long)H);
    pos = malloc((size_t)n * 3 * sizeof *pos);
    VIDI_CHECK(pos, err, VIDI_ERR_NOMEM, "prefill: out of memory");
    vidi_mrope_params mp = vidi_mrope_params_from_config(cfg);
    VIDI_TRY(vidi_mrope_positions(&mp, ids, n, mi, n_items, pos, &res->rope_delta, err));
    emb_buf = be->ops->buf_alloc(be, (size_t)n * (size_t)H * es);
    logit_buf = be->ops->buf_alloc(be, (size_t)V * es);
    VIDI_CHECK(emb_buf && logit_buf, err, VIDI_ERR_NOMEM, "prefill: out of backend memory");
    vidi_tensor emb = vidi_tensor_2d(be->act_dtype, emb_buf, n, H);
    vidi_tensor logits = vidi_tensor_2d(be->act_dtype, logit_buf, 1, V);
    VIDI_TRY(vidi_text_embed(m->text, ids, n, n_vis ? vision : NULL, &emb, err));
    vidi_text_out o = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &logits};
    VIDI_TRY(vidi_text_forward_paged(m->text, seq, &emb, pos, &o, err));
    VIDI_TRY(be->ops->sample(be, &logits, sample, rng, &res->first_token, err));
    res->prompt_tokens = n;
fail:
    if (rc != VIDI_OK && vidi_kv_seq_len(seq) > 0) vidi_kv_seq_truncate(seq, 0, NULL);
    if (emb_buf) be->ops->buf_free(be, emb_buf);
    if (logit_buf) be->ops->buf_free(be, logit_buf);
    free(pos);
    free(mi);
    return rc;
}
