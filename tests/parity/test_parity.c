/* tests/parity/test_parity.c <case dir> — the text side of one reference
 * case of tools/golden against PyTorch + transformers (fp32, CPU):
 *   (a) M-RoPE positions from input_ids + media equal position_ids and
 *       rope_delta exactly (original rule);
 *   (b) prompt logits at logits_positions and at the last position, with the
 *       reference's vision embeddings scattered in (the text model alone);
 *   (c) vidi_generate, 32 greedy tokens without an end-of-sequence stop,
 *       first with the reference's vision embeddings, then (cases with
 *       media) from pixels through our vision tower: tokens equal the
 *       reference's, or the first difference is a near-tie; the first
 *       logits of each run are compared with logits_last too;
 *   (d) the manifest's templated prompt, tokenized and pad-expanded, gives
 *       input_ids (when the model folder has a tokenizer.json).
 * (b), (c) and the vision embeddings run twice: on the CPU backend as it is
 * (fp32, mapped weights) and on "cpu-as-device-bf16", the CPU ops behind a
 * backend that says its memory is not host memory and takes bf16 weights:
 * the path of the CUDA backend's weights (converted from the checkpoint's
 * dtype, copied once), checked here with bf16 tolerances.
 * tests/gpu/test_gpu_parity.c includes this file (PARITY_NO_MAIN) and runs
 * the same checks on the CUDA backend.
 * Prints the numbers per case. Exit 77 when the case or its model is not
 * there (reference data not generated), 1 on any failure.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/npy.h"
#include "kernels/ops.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/mrope.h"
#include "model/text.h"
#include "model/tokenizer.h"
#include "test_util.h"

/* A tolerance of the form rel * max|reference| + abs. */
typedef struct parity_tol {
    double rel, abs;
} parity_tol;

/* What one backend must reach. */
typedef struct parity_profile {
    const char *name;
    parity_tol logits;      /* text model alone (reference vision embeddings) */
    parity_tol e2e;         /* whole pipeline (our vision tower feeds the text model) */
    parity_tol vision;      /* our vision embeddings against the reference's */
    /* A greedy divergence is accepted only where the reference's top-2 gap
     * is below this (a near-tie that rounding may break either way) and our
     * logits of the two tokens are as close, give or take twice the logit
     * tolerance. */
    double near_tie;
    /* Chunked prefill against one-shot: first logits within this (relative
     * to the one-shot logits), and (when chunk_tokens_equal) the same greedy
     * tokens. */
    parity_tol chunk;
    int chunk_tokens_equal;
} parity_profile;

/* CPU, fp32 end to end with the checkpoint's weights: the text model alone
 * and the whole pipeline (our vision tower's error, measured below 1e-5 on
 * every case) both within 1e-4; near-ties below 1e-3. */
static const parity_profile PROFILE_CPU = {
    .name = "cpu",
    .logits = {0, 1e-4},
    .e2e = {0, 1e-4},
    .vision = {0, 1e-4},
    .near_tie = 1e-3,
    .chunk = {0, 1e-4},
    .chunk_tokens_equal = 1,
};

static const parity_profile *P = &PROFILE_CPU;

static double max_abs(const float *x, long n) {
    double m = 0;
    for (long i = 0; i < n; i++)
        if (fabs((double)x[i]) > m) m = fabs((double)x[i]);
    return m;
}

static double tol_of(parity_tol t, const float *ref, long n) {
    return t.rel > 0 ? t.rel * max_abs(ref, n) + t.abs : t.abs;
}

#define MAX_MEDIA 16

typedef struct pcase {
    char dir[2048];
    char name[256];
    char model_dir[2048];
    json_t *manifest;
    vidi_npy input_ids, position_ids, logits_last, logits, greedy;
    int n_media;
    vidi_media_kind kind[MAX_MEDIA];
    int32_t grid[MAX_MEDIA][3];
    float spgt[MAX_MEDIA];
    vidi_npy pixels[MAX_MEDIA], vision[MAX_MEDIA];
    int32_t *logit_rows;
    int n_logit_rows;
    long long rope_delta;
    const char *prompt;
    int max_new_tokens;
    double *gaps;               /* greedy_top2_gaps: the reference's top-2 gap per step */
    int n_gaps;
} pcase;

static int path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int load_npy(const pcase *c, const char *file, vidi_dtype dt, int ndim, vidi_npy *out) {
    char p[4096];
    vidi_err err;
    snprintf(p, sizeof p, "%s/%s", c->dir, file);
    if (vidi_npy_read(p, out, &err) != VIDI_OK) {
        test_fail(__FILE__, __LINE__, "%s", err.msg);
        return -1;
    }
    if (out->dtype != dt || out->ndim != ndim) {
        test_fail(__FILE__, __LINE__, "%s: want %d-D %s, got %d-D %s", p, ndim,
                  vidi_dtype_name(dt), out->ndim, vidi_dtype_name(out->dtype));
        return -1;
    }
    return 0;
}

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Returns 0 ok, 77 data missing, 1 broken. */
static int case_load(pcase *c, const char *dir) {
    char p[4096];
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    if (!path_exists(p)) {
        /* A build run on another host: the case of that name under
         * test_data_dir() ($VIDI_TEST_DATA). */
        const char *base = strrchr(dir, '/');
        base = base ? base + 1 : dir;
        snprintf(c->dir, sizeof c->dir, "%s/golden/cases/%s", test_data_dir(), base);
        snprintf(p, sizeof p, "%s/manifest.json", c->dir);
    }
    dir = c->dir;
    if (!path_exists(p)) {
        printf("skip: no reference case at %s (run tools/golden)\n", dir);
        return 77;
    }
    json_error_t je;
    c->manifest = json_load_file(p, JSON_ALLOW_NUL, &je);
    if (!c->manifest) {
        test_fail(__FILE__, __LINE__, "%s:%d: %s", p, je.line, je.text);
        return 1;
    }
    json_t *m = c->manifest;
    const char *name = jstr(m, "name"), *model = jstr(m, "model");
    c->prompt = jstr(m, "prompt");
    if (!name || !model || !jstr(m, "input_ids") || !jstr(m, "position_ids") ||
        !jstr(m, "logits_last") || !jstr(m, "greedy_tokens")) {
        test_fail(__FILE__, __LINE__, "%s: missing name/model/input_ids/position_ids/logits_last/"
                  "greedy_tokens", p);
        return 1;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    /* The model path is relative to the data root, three levels above the
     * case (<root>/golden/cases/<name>); else the configured tests/data. */
    int n = snprintf(c->model_dir, sizeof c->model_dir, "%s/../../../%s", dir, model);
    if (n >= (int)sizeof c->model_dir || snprintf(p, sizeof p, "%s/config.json", c->model_dir) >= (int)sizeof p ||
        !path_exists(p))
        n = snprintf(c->model_dir, sizeof c->model_dir, "%s/%s", test_data_dir(), model);
    if (n >= (int)sizeof c->model_dir || snprintf(p, sizeof p, "%s/config.json", c->model_dir) >= (int)sizeof p ||
        !path_exists(p)) {
        printf("skip: model %s is not there (run tools/golden)\n", c->model_dir);
        return 77;
    }
    c->rope_delta = json_integer_value(json_object_get(m, "rope_delta"));
    json_t *mnt = json_object_get(m, "max_new_tokens");
    c->max_new_tokens = json_is_integer(mnt) ? (int)json_integer_value(mnt) : 32;

    if (load_npy(c, jstr(m, "input_ids"), VIDI_DTYPE_I32, 1, &c->input_ids) ||
        load_npy(c, jstr(m, "position_ids"), VIDI_DTYPE_I32, 2, &c->position_ids) ||
        load_npy(c, jstr(m, "logits_last"), VIDI_DTYPE_F32, 1, &c->logits_last) ||
        load_npy(c, jstr(m, "greedy_tokens"), VIDI_DTYPE_I32, 1, &c->greedy))
        return 1;
    if (jstr(m, "logits") && load_npy(c, jstr(m, "logits"), VIDI_DTYPE_F32, 2, &c->logits)) return 1;
    json_t *lp = json_object_get(m, "logits_positions");
    if (json_is_array(lp) && json_array_size(lp) > 0) {
        c->n_logit_rows = (int)json_array_size(lp);
        c->logit_rows = calloc((size_t)c->n_logit_rows, sizeof *c->logit_rows);
        for (int i = 0; i < c->n_logit_rows; i++)
            c->logit_rows[i] = (int32_t)json_integer_value(json_array_get(lp, (size_t)i));
        if (!c->logits.data || c->logits.shape[0] != c->n_logit_rows) {
            test_fail(__FILE__, __LINE__, "%s: %d logits_positions but logits has %lld rows", c->dir,
                      c->n_logit_rows, c->logits.data ? (long long)c->logits.shape[0] : 0LL);
            return 1;
        }
    }

    json_t *gaps = json_object_get(m, "greedy_top2_gaps");
    if (json_is_array(gaps) && json_array_size(gaps) > 0) {
        c->n_gaps = (int)json_array_size(gaps);
        c->gaps = calloc((size_t)c->n_gaps, sizeof *c->gaps);
        for (int i = 0; i < c->n_gaps; i++)
            c->gaps[i] = json_number_value(json_array_get(gaps, (size_t)i));
    }

    json_t *media = json_object_get(m, "media");
    c->n_media = json_is_array(media) ? (int)json_array_size(media) : 0;
    if (c->n_media > MAX_MEDIA) {
        test_fail(__FILE__, __LINE__, "%d media items (at most %d)", c->n_media, MAX_MEDIA);
        return 1;
    }
    for (int i = 0; i < c->n_media; i++) {
        json_t *it = json_array_get(media, (size_t)i);
        const char *kind = jstr(it, "kind");
        json_t *grid = json_object_get(it, "grid");
        if (!kind || !json_is_array(grid) || json_array_size(grid) != 3 || !jstr(it, "pixels")) {
            test_fail(__FILE__, __LINE__, "%s: media %d lacks kind/grid/pixels", c->dir, i);
            return 1;
        }
        c->kind[i] = !strcmp(kind, "video") ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE;
        for (int a = 0; a < 3; a++)
            c->grid[i][a] = (int32_t)json_integer_value(json_array_get(grid, (size_t)a));
        json_t *s = json_object_get(it, "second_per_grid_t");
        c->spgt[i] = json_is_number(s) ? (float)json_number_value(s) : 0.0f;
        if (load_npy(c, jstr(it, "pixels"), VIDI_DTYPE_F32, 2, &c->pixels[i])) return 1;
        if (jstr(it, "vision_embeds") &&
            load_npy(c, jstr(it, "vision_embeds"), VIDI_DTYPE_F32, 2, &c->vision[i]))
            return 1;
    }
    return 0;
}

static void case_free(pcase *c) {
    vidi_npy_free(&c->input_ids);
    vidi_npy_free(&c->position_ids);
    vidi_npy_free(&c->logits_last);
    vidi_npy_free(&c->logits);
    vidi_npy_free(&c->greedy);
    for (int i = 0; i < c->n_media; i++) {
        vidi_npy_free(&c->pixels[i]);
        vidi_npy_free(&c->vision[i]);
    }
    free(c->logit_rows);
    free(c->gaps);
    json_decref(c->manifest);
}

static void case_items(const pcase *c, vidi_mrope_item *items) {
    for (int i = 0; i < c->n_media; i++) {
        items[i].kind = c->kind[i];
        memcpy(items[i].grid, c->grid[i], sizeof items[i].grid);
        items[i].second_per_grid_t = c->spgt[i];
    }
}

/* ---- (a) positions ---- */
static void check_positions(const pcase *c, const vidi_model *m) {
    int64_t L = c->input_ids.shape[0];
    vidi_mrope_item items[MAX_MEDIA];
    case_items(c, items);
    int32_t *pos = malloc((size_t)L * 3 * sizeof *pos);
    int64_t delta = 0;
    vidi_err err;
    vidi_mrope_params mp = vidi_mrope_params_from_config(&m->cfg);
    vidi_status st = vidi_mrope_positions(&mp, c->input_ids.data, L, items, c->n_media, pos, &delta,
                                          &err);
    CHECK(st == VIDI_OK, "positions: %s", err.msg);
    CHECK(c->position_ids.shape[0] == 3 && c->position_ids.shape[1] == L,
          "position_ids shape [%lld, %lld], want [3, %lld]", (long long)c->position_ids.shape[0],
          (long long)c->position_ids.shape[1], (long long)L);
    if (st == VIDI_OK && c->position_ids.shape[1] == L) {
        const int32_t *ref = c->position_ids.data;
        int64_t bad = -1;
        for (int64_t i = 0; i < L && bad < 0; i++)
            for (int a = 0; a < 3; a++)
                if (pos[i * 3 + a] != ref[a * L + i]) bad = i;
        CHECK(bad < 0, "positions differ first at token %lld: ours (%d, %d, %d), reference "
              "(%d, %d, %d)", (long long)bad, bad >= 0 ? pos[bad * 3] : 0,
              bad >= 0 ? pos[bad * 3 + 1] : 0, bad >= 0 ? pos[bad * 3 + 2] : 0,
              bad >= 0 ? ref[bad] : 0, bad >= 0 ? ref[L + bad] : 0,
              bad >= 0 ? ref[2 * L + bad] : 0);
        CHECK(delta == c->rope_delta, "rope_delta %lld, reference %lld", (long long)delta,
              c->rope_delta);
        printf("  positions: %s (L %lld, rope_delta %lld)\n", bad < 0 ? "equal" : "DIFFER",
               (long long)L, (long long)delta);
    }
    free(pos);
}

/* ---- (d) template + tokenizer ---- */
static void check_tokenizer(const pcase *c, const vidi_model *m) {
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", c->model_dir);
    if (!path_exists(p) || !c->prompt) {
        printf("  tokenizer: not checked (no tokenizer.json or prompt)\n");
        return;
    }
    vidi_tokenizer *tok = NULL;
    vidi_err err;
    int32_t *ids = NULL;
    size_t n = 0;
    if (vidi_tokenizer_load(p, &tok, &err) != VIDI_OK) {
        CHECK(0, "tokenizer: %s", err.msg);
        return;
    }
    if (vidi_tokenizer_encode(tok, c->prompt, strlen(c->prompt), &ids, &n, &err) != VIDI_OK) {
        CHECK(0, "tokenizer: encoding the prompt: %s", err.msg);
        vidi_tokenizer_free(tok);
        return;
    }
    int64_t L = c->input_ids.shape[0];
    const int32_t *ref = c->input_ids.data;
    vidi_mrope_params mp = vidi_mrope_params_from_config(&m->cfg);
    vidi_mrope_item items[MAX_MEDIA];
    case_items(c, items);
    int64_t k = 0, bad = -1;
    int item = 0;
    for (size_t i = 0; i < n && bad < 0; i++) {
        int64_t copies = 1;
        if (ids[i] == m->cfg.image_token_id || ids[i] == m->cfg.video_token_id) {
            if (item >= c->n_media) {
                bad = k;
                break;
            }
            copies = vidi_mrope_item_tokens(&mp, &items[item++]);
        }
        for (int64_t j = 0; j < copies; j++, k++)
            if (k >= L || ref[k] != ids[i]) {
                bad = k;
                break;
            }
    }
    if (bad < 0 && k != L) bad = k;
    CHECK(bad < 0, "tokenizer: the expanded prompt differs from input_ids at %lld (ours %lld "
          "tokens before expansion, reference %lld after)", (long long)bad, (long long)n,
          (long long)L);
    printf("  tokenizer: %s (%zu tokens, %lld expanded)\n", bad < 0 ? "equal" : "DIFFER", n,
           (long long)L);
    free(ids);
    vidi_tokenizer_free(tok);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Run the prompt (ids, pos host [L*3], vis backend rows or NULL) and then,
 * when n_gen > 0, the generated tokens gen[0..n_gen) one chunk after it.
 * Returns malloc'd host logits: of `rows` of the prompt when n_gen == 0
 * ([n_rows, V]), else of the last generated token ([1, V]). NULL on error. */
static float *run_logits(vidi_model *m, const int32_t *ids, int64_t L, const int32_t *pos,
                         const vidi_tensor *vis, const int32_t *gen, int n_gen, int64_t rope_delta,
                         const int32_t *rows, int n_rows, vidi_err *err) {
    vidi_backend *be = m->be;
    vidi_dtype adt = be->act_dtype;
    size_t es = vidi_dtype_size(adt);
    int64_t H = m->cfg.text.hidden_size, V = m->cfg.text.vocab_size;
    int64_t R = n_gen > 0 ? 1 : n_rows;
    int64_t T2 = n_gen > 0 ? n_gen : 1;
    vidi_kv_cache *kv = NULL;
    float *out = malloc((size_t)(R * V) * sizeof(float));
    int32_t *gpos = malloc((size_t)T2 * 3 * sizeof *gpos);
    void *emb = be->ops->buf_alloc(be, (size_t)(L * H) * es);
    void *gemb = be->ops->buf_alloc(be, (size_t)(T2 * H) * es);
    void *lg = be->ops->buf_alloc(be, (size_t)(R * V) * es);
    vidi_status st = VIDI_ERR_NOMEM;
    if (!out || !gpos || !emb || !gemb || !lg) {
        vidi_err_set(err, VIDI_ERR_NOMEM, "out of memory");
        goto fail;
    }
    vidi_tensor te = vidi_tensor_2d(adt, emb, L, H);
    vidi_tensor tg = vidi_tensor_2d(adt, gemb, T2, H);
    vidi_tensor tl = vidi_tensor_2d(adt, lg, R, V);
    if ((st = vidi_text_embed(m->text, ids, L, vis, &te, err)) != VIDI_OK) goto fail;
    if ((st = vidi_kv_cache_create(m->text, L + n_gen, &kv, err)) != VIDI_OK) goto fail;
    vidi_text_out o = {.which = VIDI_TEXT_LOGITS_ROWS, .rows = rows, .n_rows = n_rows, .logits = &tl};
    if (n_gen > 0) o = (vidi_text_out){.which = VIDI_TEXT_LOGITS_NONE};
    if ((st = vidi_text_forward(m->text, kv, &te, pos, &o, err)) != VIDI_OK) goto fail;
    if (n_gen > 0) {
        if ((st = vidi_text_embed(m->text, gen, n_gen, NULL, &tg, err)) != VIDI_OK) goto fail;
        for (int i = 0; i < n_gen; i++) vidi_mrope_decode_position(L + i, rope_delta, gpos + i * 3);
        o = (vidi_text_out){.which = VIDI_TEXT_LOGITS_LAST, .logits = &tl};
        if ((st = vidi_text_forward(m->text, kv, &tg, gpos, &o, err)) != VIDI_OK) goto fail;
    }
    st = vidi_download_f32(be, out, lg, (size_t)(R * V), err);
fail:
    vidi_kv_cache_free(kv);
    if (emb) be->ops->buf_free(be, emb);
    if (gemb) be->ops->buf_free(be, gemb);
    if (lg) be->ops->buf_free(be, lg);
    free(gpos);
    if (st != VIDI_OK) {
        free(out);
        return NULL;
    }
    return out;
}

/* Our positions of the case's input_ids (checked against the reference in (a)). */
static int32_t *case_positions(const pcase *c, const vidi_model *m, int64_t *delta) {
    int64_t L = c->input_ids.shape[0];
    vidi_mrope_item items[MAX_MEDIA];
    case_items(c, items);
    int32_t *pos = malloc((size_t)L * 3 * sizeof *pos);
    vidi_err err;
    vidi_mrope_params mp = vidi_mrope_params_from_config(&m->cfg);
    if (!pos || vidi_mrope_positions(&mp, c->input_ids.data, L, items, c->n_media, pos, delta,
                                     &err) != VIDI_OK) {
        free(pos);
        return NULL;
    }
    return pos;
}

/* Vision rows of every item in one backend buffer: the reference's
 * (ours == 0) or our tower's (ours == 1). *buf receives the memory. */
static int case_vision(const pcase *c, vidi_model *m, int ours, void **buf, vidi_tensor *t) {
    vidi_backend *be = m->be;
    int64_t H = m->cfg.text.hidden_size, rows = 0;
    vidi_err err;
    vidi_mrope_params mp = vidi_mrope_params_from_config(&m->cfg);
    vidi_mrope_item items[MAX_MEDIA];
    case_items(c, items);
    *buf = NULL;
    for (int i = 0; i < c->n_media; i++) rows += vidi_mrope_item_tokens(&mp, &items[i]);
    if (rows == 0) return 0;
    vidi_dtype adt = be->act_dtype;
    size_t es = vidi_dtype_size(adt);
    *buf = be->ops->buf_alloc(be, (size_t)(rows * H) * es);
    if (!*buf) return -1;
    int64_t off = 0;
    for (int i = 0; i < c->n_media; i++) {
        int64_t r = vidi_mrope_item_tokens(&mp, &items[i]);
        char *dst = (char *)*buf + (size_t)(off * H) * es;
        if (ours) {
            vidi_tensor part = vidi_tensor_2d(adt, dst, r, H);
            const int32_t(*grid)[3] = &c->grid[i];
            if (vidi_vision_encode(m->vision, c->pixels[i].data, c->pixels[i].shape[0], grid, 1,
                                   &part, &err) != VIDI_OK) {
                test_fail(__FILE__, __LINE__, "vision encode of item %d: %s", i, err.msg);
                return -1;
            }
        } else {
            if (!c->vision[i].data || c->vision[i].shape[0] != r || c->vision[i].shape[1] != H) {
                test_fail(__FILE__, __LINE__, "media %d: reference vision embeddings must be "
                          "[%lld, %lld]", i, (long long)r, (long long)H);
                return -1;
            }
            /* f32 from the reference, converted to the act dtype */
            if (vidi_upload_f32(be, dst, c->vision[i].data, (size_t)(r * H), &err) != VIDI_OK) {
                test_fail(__FILE__, __LINE__, "%s", err.msg);
                return -1;
            }
        }
        off += r;
    }
    *t = vidi_tensor_2d(adt, *buf, rows, H);
    return 0;
}

/* ---- vision embeddings of every item against the reference ---- */
static void check_vision(const pcase *c, vidi_model *m) {
    int64_t H = m->cfg.text.hidden_size;
    void *buf = NULL;
    vidi_tensor vis;
    vidi_err err;
    if (c->n_media == 0) return;
    if (case_vision(c, m, 1, &buf, &vis)) {
        CHECK(0, "vision: encoding failed");
        if (buf) m->be->ops->buf_free(m->be, buf);
        return;
    }
    int64_t rows = vidi_tensor_rows(&vis), off = 0;
    float *ours = malloc((size_t)(rows * H) * sizeof *ours);
    CHECK(ours && vidi_download_f32(m->be, ours, buf, (size_t)(rows * H), &err) == VIDI_OK,
          "vision: reading the embeddings back failed");
    for (int i = 0; ours && i < c->n_media; i++) {
        const vidi_npy *ref = &c->vision[i];
        if (!ref->data) continue;
        long n = (long)(ref->shape[0] * ref->shape[1]);
        if (off + ref->shape[0] > rows || ref->shape[1] != H) {
            CHECK(0, "vision: reference item %d does not fit our rows", i);
            break;
        }
        double d = test_max_abs_diff(ours + off * H, ref->data, n);
        double tol = tol_of(P->vision, ref->data, n);
        printf("  vision item %d: max|d| %.3g (tolerance %.3g)\n", i, d, tol);
        CHECK(d <= tol, "vision item %d differs by %.3g (> %.3g)", i, d, tol);
        off += ref->shape[0];
    }
    free(ours);
    m->be->ops->buf_free(m->be, buf);
}

/* ---- (b) prompt logits, text model alone ---- */
static void check_logits(const pcase *c, vidi_model *m) {
    int64_t L = c->input_ids.shape[0], V = m->cfg.text.vocab_size;
    int64_t delta;
    vidi_err err;
    void *vbuf = NULL;
    vidi_tensor vis;
    int32_t *pos = case_positions(c, m, &delta);
    int n_rows = c->n_logit_rows + 1;
    int32_t *rows = malloc((size_t)n_rows * sizeof *rows);
    float *lg = NULL;
    if (!pos || !rows) {
        CHECK(0, "logits: no positions");
        goto done;
    }
    CHECK(c->logits_last.shape[0] == V, "logits_last has %lld values, the model's vocab is %lld",
          (long long)c->logits_last.shape[0], (long long)V);
    if (c->logits_last.shape[0] != V) goto done;
    if (c->n_logit_rows) memcpy(rows, c->logit_rows, (size_t)c->n_logit_rows * sizeof *rows);
    rows[n_rows - 1] = (int32_t)(L - 1);
    if (case_vision(c, m, 0, &vbuf, &vis)) goto done;
    lg = run_logits(m, c->input_ids.data, L, pos, vbuf ? &vis : NULL, NULL, 0, delta, rows, n_rows,
                    &err);
    CHECK(lg, "logits: %s", err.msg);
    if (!lg) goto done;
    double d_rows = 0;
    if (c->n_logit_rows) {
        CHECK(c->logits.shape[1] == V, "logits has %lld columns, vocab %lld",
              (long long)c->logits.shape[1], (long long)V);
        d_rows = test_max_abs_diff(lg, c->logits.data, (long long)c->n_logit_rows * V);
    }
    double d_last = test_max_abs_diff(lg + (size_t)(n_rows - 1) * V, c->logits_last.data, V);
    double tol_rows = c->n_logit_rows ? tol_of(P->logits, c->logits.data, (long)c->n_logit_rows * (long)V) : 0;
    double tol_last = tol_of(P->logits, c->logits_last.data, (long)V);
    int am = argmax(lg + (size_t)(n_rows - 1) * V, (int)V);
    int am_ref = argmax(c->logits_last.data, (int)V);
    printf("  logits (reference vision embeds): max|d| %.3g over %d positions (tolerance %.3g), "
           "%.3g at the last (tolerance %.3g); argmax %d / ref %d\n", d_rows, c->n_logit_rows,
           tol_rows, d_last, tol_last, am, am_ref);
    CHECK(d_rows <= tol_rows, "prompt logits differ by %.3g (> %.3g)", d_rows, tol_rows);
    CHECK(d_last <= tol_last, "last-position logits differ by %.3g (> %.3g)", d_last, tol_last);
done:
    if (vbuf) m->be->ops->buf_free(m->be, vbuf);
    free(lg);
    free(rows);
    free(pos);
}

/* ---- (c) greedy tokens and (b') first logits of vidi_generate ----
 * ours == 0: with the reference's vision embeddings (the text side alone);
 * ours == 1: the whole pipeline from pixels (our vision tower). */
static void check_generate(const pcase *c, vidi_model *m, int ours) {
    int64_t L = c->input_ids.shape[0], V = m->cfg.text.vocab_size;
    int n_ref = (int)c->greedy.shape[0];
    const int32_t *ref = c->greedy.data;
    vidi_media media[MAX_MEDIA];
    vidi_err err;
    vidi_generate_result res = {0};
    void *vbuf = NULL;
    int32_t *pos = NULL;
    float *lg = NULL;
    for (int i = 0; i < c->n_media; i++) {
        media[i] = (vidi_media){.kind = c->kind[i], .pixels = c->pixels[i].data,
                                .n_rows = c->pixels[i].shape[0],
                                .second_per_grid_t = c->spgt[i]};
        memcpy(media[i].grid, c->grid[i], sizeof media[i].grid);
    }
    const char *what = ours ? "whole pipeline (our vision)" : "reference vision embeds";
    double tol = tol_of(ours ? P->e2e : P->logits, c->logits_last.data, (long)V);
    vidi_tensor ref_vis;
    vidi_generate_params gp = vidi_generate_params_default();
    gp.max_tokens = n_ref;
    gp.stop_at_eos = 0;
    gp.want_first_logits = 1;
    if (!ours) {
        if (case_vision(c, m, 0, &vbuf, &ref_vis)) goto done;
        gp.vision_embeds = vbuf ? &ref_vis : NULL;
    }
    if (vidi_generate(m, c->input_ids.data, L, media, c->n_media, &gp, &res, &err) != VIDI_OK) {
        CHECK(0, "generate (%s): %s", what, err.msg);
        goto done;
    }
    if (vbuf) {
        m->be->ops->buf_free(m->be, vbuf);
        vbuf = NULL;
    }
    double d_first = test_max_abs_diff(res.first_logits, c->logits_last.data, V);
    printf("  generate, %s: first logits max|d| %.3g (tolerance %.3g)\n", what, d_first, tol);
    CHECK(d_first <= tol, "generate (%s): first logits differ by %.3g (> %.3g)", what, d_first,
          tol);

    CHECK(res.n_tokens == n_ref, "generated %d tokens, reference %d", res.n_tokens, n_ref);
    int j = 0;
    while (j < res.n_tokens && j < n_ref && res.tokens[j] == ref[j]) j++;
    if (j == n_ref) {
        printf("  greedy, %s: %d/%d tokens equal\n", what, j, n_ref);
        goto done;
    }
    if (j >= res.n_tokens) goto done;
    /* First difference at step j. The reference's top-2 gap there decides
     * (greedy_top2_gaps, from the reference's own logits); our gap between
     * the two tokens after the common prefix is shown beside it. */
    double ref_gap = j < c->n_gaps ? c->gaps[j] : NAN;
    float our_gap = NAN;
    if (j == 0) {
        const float *l = res.first_logits;
        our_gap = l[res.tokens[0]] - l[ref[0]];
        if (isnan(ref_gap)) ref_gap = ((const float *)c->logits_last.data)[ref[0]] -
                                      ((const float *)c->logits_last.data)[res.tokens[0]];
    } else {
        int64_t delta;
        vidi_tensor vis;
        pos = case_positions(c, m, &delta);
        if (pos && !case_vision(c, m, ours, &vbuf, &vis))
            lg = run_logits(m, c->input_ids.data, L, pos, vbuf ? &vis : NULL, ref, j, delta, NULL,
                            0, &err);
        if (lg) our_gap = lg[res.tokens[j]] - lg[ref[j]];
    }
    printf("  greedy, %s: %d/%d tokens equal; step %d: ours %d, reference %d; reference top-2 "
           "gap %.3g, our logit(ours) - logit(ref) %.3g (near-tie below %.3g)\n", what, j, n_ref,
           j, res.tokens[j], ref[j], ref_gap, (double)our_gap, P->near_tie);
    CHECK(ref_gap < P->near_tie, "greedy tokens differ at step %d (ours %d, reference %d) and it "
          "is not a near-tie (reference top-2 gap %.3g)", j, res.tokens[j], ref[j], ref_gap);
    /* A true near-tie is one in our logits too (within the logit tolerance). */
    CHECK(fabsf(our_gap) <= P->near_tie + 2 * tol, "greedy tokens differ at step %d: our logits "
          "separate the two tokens by %.3g, more than a near-tie", j, (double)our_gap);
done:
    if (vbuf) m->be->ops->buf_free(m->be, vbuf);
    free(lg);
    free(pos);
    vidi_generate_result_free(&res);
}

/* Chunked prefill (7 tokens a forward) gives the one-shot prefill's greedy
 * tokens and first logits; a prompt that does not fit the KV cache is a
 * clean VIDI_ERR_RANGE that leaves the cache as it was. */
static void check_chunked_and_kv_limit(const pcase *c, vidi_model *m) {
    int64_t L = c->input_ids.shape[0], V = m->cfg.text.vocab_size, H = m->cfg.text.hidden_size;
    vidi_media media[MAX_MEDIA];
    vidi_err err;
    vidi_generate_result one = {0}, chunked = {0};
    vidi_kv_cache *kv = NULL;
    void *vbuf = NULL, *emb = NULL;
    int32_t *pos = NULL;
    vidi_tensor vis;
    for (int i = 0; i < c->n_media; i++) {
        media[i] = (vidi_media){.kind = c->kind[i], .second_per_grid_t = c->spgt[i]};
        memcpy(media[i].grid, c->grid[i], sizeof media[i].grid);
    }
    if (case_vision(c, m, 0, &vbuf, &vis)) goto done;
    vidi_generate_params gp = vidi_generate_params_default();
    gp.max_tokens = 8;
    gp.stop_at_eos = 0;
    gp.want_first_logits = 1;
    gp.vision_embeds = vbuf ? &vis : NULL;
    vidi_status a = vidi_generate(m, c->input_ids.data, L, media, c->n_media, &gp, &one, &err);
    CHECK(a == VIDI_OK, "generate: %s", err.msg);
    gp.prefill_chunk = 7;
    vidi_status b = vidi_generate(m, c->input_ids.data, L, media, c->n_media, &gp, &chunked, &err);
    CHECK(b == VIDI_OK, "generate, chunked prefill: %s", err.msg);
    if (a == VIDI_OK && b == VIDI_OK) {
        double d = test_max_abs_diff(one.first_logits, chunked.first_logits, V);
        double ctol = tol_of(P->chunk, one.first_logits, (long)V);
        int same = one.n_tokens == chunked.n_tokens &&
                   !memcmp(one.tokens, chunked.tokens, (size_t)one.n_tokens * sizeof *one.tokens);
        printf("  chunked prefill (7): first logits max|d| %.3g vs one shot (tolerance %.3g), "
               "tokens %s%s\n", d, ctol, same ? "equal" : "DIFFER",
               same || P->chunk_tokens_equal ? "" : " (accepted: bf16 activations)");
        CHECK(d <= ctol && (same || !P->chunk_tokens_equal),
              "chunked prefill differs from one-shot (max|d| %.3g)", d);
    }

    int64_t delta;
    pos = case_positions(c, m, &delta);
    emb = m->be->ops->buf_alloc(m->be, (size_t)(L * H) * vidi_dtype_size(m->be->act_dtype));
    if (!pos || !emb || vidi_kv_cache_create(m->text, L - 1, &kv, &err) != VIDI_OK) {
        CHECK(0, "kv limit: setup failed");
        goto done;
    }
    vidi_tensor te = vidi_tensor_2d(m->be->act_dtype, emb, L, H);
    vidi_text_out o = {.which = VIDI_TEXT_LOGITS_NONE};
    CHECK(vidi_text_embed(m->text, c->input_ids.data, L, vbuf ? &vis : NULL, &te, &err) == VIDI_OK,
          "embed: %s", err.msg);
    vidi_status st = vidi_text_forward(m->text, kv, &te, pos, &o, &err);
    CHECK(st == VIDI_ERR_RANGE && strstr(err.msg, "do not fit") && vidi_kv_cache_len(kv) == 0,
          "a prompt of %lld tokens in a cache of %lld: status %d, length %lld, '%s'", (long long)L,
          (long long)(L - 1), (int)st, (long long)vidi_kv_cache_len(kv), err.msg);
done:
    vidi_kv_cache_free(kv);
    if (emb) m->be->ops->buf_free(m->be, emb);
    if (vbuf) m->be->ops->buf_free(m->be, vbuf);
    free(pos);
    vidi_generate_result_free(&one);
    vidi_generate_result_free(&chunked);
}

/* The checks of one case on one backend under profile p (the model is
 * loaded onto be here and freed after); with_host also the checks that do
 * not depend on the backend (positions, tokenizer). */
static void run_profile(const pcase *c, vidi_backend *be, const parity_profile *p, int with_host) {
    vidi_err err;
    vidi_model *m = NULL;
    P = p;
    printf(" backend %s (act %s, weights %s%s):\n", be->name, vidi_dtype_name(be->act_dtype),
           be->host_memory ? "mapped" : "copied as ",
           be->host_memory ? "" : vidi_dtype_name(be->weight_dtype));
    if (vidi_model_load(c->model_dir, be, &m, &err) != VIDI_OK) {
        CHECK(0, "%s: %s", be->name, err.msg);
        return;
    }
    if (with_host) {
        check_positions(c, m);
        check_tokenizer(c, m);
    }
    check_vision(c, m);
    check_logits(c, m);
    check_generate(c, m, 0);
    check_chunked_and_kv_limit(c, m);
    if (c->n_media > 0) check_generate(c, m, 1);
    vidi_model_free(m);
}

#ifndef PARITY_NO_MAIN
/* The CPU ops with bf16 weights (fp32 activations): a weight rounded to bf16
 * moves by up to 2^-9 relative, and the error grows through the layers.
 * Stated, as for the CUDA backend: logits and vision embeddings within
 * 5e-2 * max|ref| + 2e-2, greedy near-ties below a reference top-2 gap of
 * 0.1. The chunked prefill stays fp32 arithmetic, so 1e-4 and equal tokens
 * still hold there. */
static const parity_profile PROFILE_CPU_BF16_WEIGHTS = {
    .name = "cpu-as-device-bf16",
    .logits = {5e-2, 2e-2},
    .e2e = {5e-2, 2e-2},
    .vision = {5e-2, 2e-2},
    .near_tie = 0.1,
    .chunk = {0, 1e-4},
    .chunk_tokens_equal = 1,
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_parity <case dir>\n");
        return 2;
    }
    static pcase c;
    int r = case_load(&c, argv[1]);
    if (r) {
        case_free(&c);
        return r == 77 ? 77 : 1;
    }
    printf("parity %s (%s)\n", c.name, c.model_dir);
    vidi_err err;
    vidi_backend *be = vidi_backend_cpu_create(0, &err);
    if (!be) {
        CHECK(0, "cpu backend: %s", err.msg);
    } else {
        run_profile(&c, be, &PROFILE_CPU, 1);
        /* the copied-bf16-weights path of non-host backends, on the CPU ops */
        vidi_backend alias = *be;
        alias.name = "cpu-as-device-bf16";
        alias.host_memory = 0;
        alias.weight_dtype = VIDI_DTYPE_BF16;
        run_profile(&c, &alias, &PROFILE_CPU_BF16_WEIGHTS, 0);
        be->ops->destroy(be);
    }
    printf("%s: %d checks, %d failed\n", c.name, test_checks, test_failures);
    case_free(&c);
    return test_failures ? 1 : 0;
}
#endif
