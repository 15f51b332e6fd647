/* tools/sparse-search/search.c — vidi-sparse-search: the offline pattern
 * search of sparse prefill (prefill/sparse_run.h).
 *
 *   vidi-sparse-search --model DIR --video FILE --prompt TEXT [--video ... --prompt ...]
 *                      [--out FILE] [--target-recall 0.95] [--nframes N | --fps F] [--threads N]
 *
 * Runs the model (CPU) on the calibration inputs. In every layer, for every
 * head, the dense causal softmax is computed once and each candidate
 * pattern (grid by frame and by row, vertical lines only or with the
 * horizontal lines, A-shape, vertical-slash, block top-k) is compiled to
 * its plan for that input (a grid's phase estimated online, as at run
 * time) and scored: attention recall (the share of the softmax mass its
 * pairs hold, averaged over rows) and density (its pairs over the dense
 * triangle). A head gets the candidate of least mean density whose mean
 * recall over the inputs reaches the target, dense when none does. The
 * config (default DIR/sparse_config.json) records each head's recall and
 * density and the calibration inputs.
 *
 *   vidi-sparse-search --model DIR --evaluate CONFIG (--video FILE --prompt TEXT)...
 *
 * instead measures a config on the inputs, row by row (so long videos fit):
 * per layer and overall, the attention recall, the relative output error
 * against dense attention and the share of pairs computed. One JSON line.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "media/media.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/sparse_run.h"

#define MAX_INPUTS 32
#define N_CANDS 7

typedef struct search {
    const vidi_sparse_config *eval; /* --evaluate: measure this config */
    double e_recall, e_err, e_pairs, e_dense;
    double *l_recall, *l_err;       /* per layer sums */
    int e_heads;
    vidi_sparse_rule cands[N_CANDS];
    const char *cand_names[N_CANDS];
    int n_layers, n_heads;
    double *recall, *density; /* [layer][head][cand] sums */
    int *count;
    vidi_span spans[64];
    int n_spans;
    float *probs;             /* n x n, the dense softmax of one head */
    int32_t *keys;            /* n: one row's keys (vidi_sparse_row_keys) */
    int64_t probs_cap;
    double min_enrichment;
} search;

static double *s_at(search *s, double *a, int l, int h, int c) {
    return &a[((size_t)l * (size_t)s->n_heads + (size_t)h) * N_CANDS + (size_t)c];
}

/* Dense causal softmax of one head into s->probs (row i holds keys 0..i). */
static int s_dense_probs(search *s, const vidi_sparse_qk *qk, int64_t n, float scale) {
    if (n * n > s->probs_cap) {
        float *p = realloc(s->probs, (size_t)(n * n) * sizeof *p);
        int32_t *k = realloc(s->keys, (size_t)n * sizeof *k);
        if (p) s->probs = p;
        if (k) s->keys = k;
        if (!p || !k) return -1;
        s->probs_cap = n * n;
    }
    int kvh = qk->head / (qk->n_heads / qk->n_kv_heads), d = qk->head_dim;
    for (int64_t i = 0; i < n; i++) {
        float *row = s->probs + i * n, mx = -INFINITY;
        const float *q = qk->q + ((size_t)i * (size_t)qk->n_heads + (size_t)qk->head) * (size_t)d;
        for (int64_t j = 0; j <= i; j++) {
            const float *k = qk->k + ((size_t)j * (size_t)qk->n_kv_heads + (size_t)kvh) * (size_t)d;
            float dot = 0;
            for (int x = 0; x < d; x++) dot += q[x] * k[x];
            row[j] = dot * scale;
            if (row[j] > mx) mx = row[j];
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; j++) sum += (row[j] = expf(row[j] - mx));
        for (int64_t j = 0; j <= i; j++) row[j] = (float)(row[j] / sum);
    }
    return 0;
}

/* Recall of a plan from the dense softmax: the mass on its pairs, averaged over rows. */
static double s_plan_recall(search *s, const vidi_sparse_plan *p) {
    int64_t n = p->n_tokens;
    double sum = 0;
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const vidi_sparse_tile *tl = &p->tiles[t];
        for (int64_t r = 0; r < tl->n_rows; r++) {
            int64_t i = p->rows[tl->row0 + r], nk = vidi_sparse_row_keys(p, tl, i, s->keys);
            const float *row = s->probs + i * n;
            for (int64_t k = 0; k < nk; k++) sum += row[s->keys[k]];
        }
    }
    return sum / (double)n;
}

/* The prompt attention during the search: score the candidates, then the
 * dense answer (so the next layers see the real activations). */
static vidi_status s_hook(void *user, int layer, const vidi_tensor *q, const vidi_tensor *k, const vidi_tensor *v,
                          vidi_tensor *out, float scale, vidi_err *err) {
    search *s = user;
    int64_t n = q->shape[0];
    int hq = (int)q->shape[1], hkv = (int)k->shape[1], d = (int)q->shape[2];
    vidi_status rc = VIDI_OK;
    for (int h = 0; h < hq && rc == VIDI_OK && s->eval; h++) {
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h};
        vidi_sparse_head hd;
        int fb = 0;
        vidi_sparse_plan p;
        double r = 0, e = 0;
        rc = vidi_sparse_resolve(&s->eval->rules[layer * s->eval->n_heads + h], s->spans, s->n_spans, &qk,
                                 s->eval->min_enrichment, &hd, &fb, err);
        if (rc == VIDI_OK) rc = vidi_sparse_plan_build(&hd, s->spans, s->n_spans, n, &qk, &p, err);
        if (rc) break;
        rc = vidi_sparse_error(&p, &qk, v->data, scale, &r, &e, err);
        s->e_recall += r, s->e_err += e, s->l_recall[layer] += r, s->l_err[layer] += e, s->e_heads++;
        s->e_pairs += (double)vidi_sparse_plan_pairs(&p);
        s->e_dense += (double)n * (double)(n + 1) / 2.0;
        vidi_sparse_plan_free(&p);
    }
    for (int h = 0; h < hq && rc == VIDI_OK && !s->eval; h++) {
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h};
        if (s_dense_probs(s, &qk, n, scale)) return vidi_err_set(err, VIDI_ERR_NOMEM, "search: out of memory");
        for (int c = 0; c < N_CANDS && rc == VIDI_OK; c++) {
            vidi_sparse_head hd;
            int fb = 0;
            rc = vidi_sparse_resolve(&s->cands[c], s->spans, s->n_spans, &qk, s->min_enrichment, &hd, &fb, err);
            if (rc) break;
            vidi_sparse_plan p;
            rc = vidi_sparse_plan_build(&hd, s->spans, s->n_spans, n, &qk, &p, err);
            if (rc) break;
            *s_at(s, s->recall, layer, h, c) += s_plan_recall(s, &p);
            *s_at(s, s->density, layer, h, c) += vidi_sparse_plan_density(&p);
            s->count[(layer * s->n_heads + h) * N_CANDS + c]++;
            vidi_sparse_plan_free(&p);
        }
    }
    /* the dense answer, so that the next layers see the real activations */
    for (int h = 0; h < hq && rc == VIDI_OK; h++) {
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h};
        vidi_sparse_head dh = vidi_sparse_rule_default(VIDI_SPARSE_DENSE).head;
        vidi_sparse_plan p;
        rc = vidi_sparse_plan_build(&dh, s->spans, s->n_spans, n, &qk, &p, err);
        if (rc == VIDI_OK) {
            rc = vidi_sparse_attend_plan(&p, &qk, v->data, scale, out->data, err);
            vidi_sparse_plan_free(&p);
        }
    }
    return rc;
}

static void s_usage(FILE *f) {
    fprintf(f, "usage: vidi-sparse-search --model DIR (--video FILE --prompt TEXT)... [--out FILE]\n"
               "                          [--target-recall R] [--nframes N | --fps F] [--threads N]\n");
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *out_path = NULL, *eval_path = NULL, *videos[MAX_INPUTS], *prompts[MAX_INPUTS];
    int n_in = 0, n_prompts = 0, threads = 0, nframes = 0;
    double target = 0.95, fps = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            s_usage(stdout);
            return 0;
        }
        if (!v) {
            s_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--video") && n_in < MAX_INPUTS) videos[n_in++] = v;
        else if (!strcmp(a, "--prompt") && n_prompts < MAX_INPUTS) prompts[n_prompts++] = v;
        else if (!strcmp(a, "--target-recall")) target = atof(v);
        else if (!strcmp(a, "--nframes")) nframes = atoi(v);
        else if (!strcmp(a, "--fps")) fps = atof(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--evaluate")) eval_path = v;
        else {
            fprintf(stderr, "vidi-sparse-search: unknown option %s\n", a);
            s_usage(stderr);
            return 2;
        }
    }
    if (!model_dir || !n_in || n_prompts != n_in || !(target > 0 && target <= 1)) {
        fprintf(stderr, "vidi-sparse-search: --model, and as many --prompt as --video (at most %d); a target in (0, 1]\n",
                MAX_INPUTS);
        return 2;
    }
    char def_out[4096];
    if (!out_path) {
        snprintf(def_out, sizeof def_out, "%s/sparse_config.json", model_dir);
        out_path = def_out;
    }
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cpu_create(threads, &err);
    vidi_model *m = NULL;
    vidi_tokenizer *tok = NULL;
    vidi_preproc_config pp;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (!be || vidi_model_load(model_dir, be, &m, &err) || vidi_preproc_config_load(model_dir, &pp, &err) ||
        vidi_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "vidi-sparse-search: %s\n", err.msg);
        return 1;
    }
    const vidi_model_config *cfg = &m->cfg;
    search s;
    memset(&s, 0, sizeof s);
    s.n_layers = cfg->text.num_layers;
    s.n_heads = cfg->text.num_heads;
    s.min_enrichment = 2.0;
    size_t cells = (size_t)s.n_layers * (size_t)s.n_heads * N_CANDS;
    vidi_sparse_config *eval_cfg = NULL;
    if (eval_path && vidi_sparse_config_load(eval_path, s.n_layers, s.n_heads, &eval_cfg, &err) != VIDI_OK) {
        fprintf(stderr, "vidi-sparse-search: %s\n", err.msg);
        return 1;
    }
    s.eval = eval_cfg;
    s.l_recall = calloc((size_t)s.n_layers, sizeof *s.l_recall);
    s.l_err = calloc((size_t)s.n_layers, sizeof *s.l_err);
    s.recall = calloc(cells, sizeof *s.recall);
    s.density = calloc(cells, sizeof *s.density);
    s.count = calloc(cells, sizeof *s.count);
    /* the candidates, cheapest kinds first */
    static const char *const names[N_CANDS] = {"grid frame v", "grid frame h+v", "grid row v", "ashape",
                                               "vslash",       "block",          "dense"};
    for (int c = 0; c < N_CANDS; c++) s.cand_names[c] = names[c];
    s.cands[0] = vidi_sparse_rule_default(VIDI_SPARSE_GRID);
    s.cands[1] = s.cands[0];
    s.cands[1].head.h = 1;
    s.cands[2] = s.cands[0];
    s.cands[2].stride_ref = VIDI_STRIDE_ROW;
    s.cands[3] = vidi_sparse_rule_default(VIDI_SPARSE_ASHAPE);
    s.cands[4] = vidi_sparse_rule_default(VIDI_SPARSE_VSLASH);
    s.cands[5] = vidi_sparse_rule_default(VIDI_SPARSE_BLOCK);
    s.cands[5].head.n_vertical = 4;
    s.cands[6] = vidi_sparse_rule_default(VIDI_SPARSE_DENSE);
    int rc = 1;
    char cal[8192];
    size_t cl = (size_t)snprintf(cal, sizeof cal, "{\"inputs\": [");
    for (int in = 0; in < n_in; in++) {
        uint8_t *data = NULL;
        size_t size = 0;
        vidi_media_options opt = vidi_media_options_default();
        vidi_media_limits lim = vidi_media_limits_default();
        if (nframes) opt.video.nframes = nframes;
        if (fps > 0) opt.video.fps = fps;
        vidi_media_item item = {0};
        if (vidi_media_read_file(videos[in], NULL, 0, lim.max_bytes, &data, &size, &err) ||
            vidi_media_video_to_item(data, size, &pp, &opt, &lim, &item, &err)) {
            fprintf(stderr, "vidi-sparse-search: %s: %s\n", videos[in], err.msg);
            free(data);
            goto done;
        }
        free(data);
        vidi_media md = {.kind = VIDI_MEDIA_VIDEO, .pixels = item.pixels, .n_rows = item.rows,
                         .second_per_grid_t = (float)item.second_per_grid_t};
        memcpy(md.grid, item.grid, sizeof md.grid);
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        if (vidi_prompt_build(cfg, tok, NULL, prompts[in], &md, 1, &ids, &n_ids, &err) ||
            vidi_sparse_spans(ids, n_ids, cfg->image_token_id, cfg->video_token_id, (const int32_t(*)[3])md.grid, 1,
                              cfg->vision.spatial_merge_size, s.spans, 64, &s.n_spans, &err)) {
            fprintf(stderr, "vidi-sparse-search: %s: %s\n", videos[in], err.msg);
            free(ids);
            vidi_media_item_free(&item);
            goto done;
        }
        vidi_text_set_prompt_attention(m->text, s_hook, &s);
        vidi_generate_params gp = vidi_generate_params_default();
        gp.max_tokens = 1;
        vidi_generate_result res;
        vidi_status st = vidi_generate(m, ids, n_ids, &md, 1, &gp, &res, &err);
        vidi_text_set_prompt_attention(m->text, NULL, NULL);
        fprintf(stderr, "vidi-sparse-search: %s (%lld tokens, grid %dx%dx%d): %s\n", videos[in], (long long)n_ids,
                md.grid[0], md.grid[1], md.grid[2], st == VIDI_OK ? "scored" : err.msg);
        if (st == VIDI_OK) vidi_generate_result_free(&res);
        if (cl < sizeof cal)
            cl += (size_t)snprintf(cal + cl, sizeof cal - cl, "%s{\"video\": \"%s\", \"prompt\": \"%s\", \"tokens\": %lld}",
                                   in ? ", " : "", strrchr(videos[in], '/') ? strrchr(videos[in], '/') + 1 : videos[in],
                                   prompts[in], (long long)n_ids);
        free(ids);
        vidi_media_item_free(&item);
        if (st != VIDI_OK) goto done;
    }
    if (eval_cfg) { /* the measurement, not a search */
        int per = s.e_heads / s.n_layers > 0 ? s.e_heads / s.n_layers : 1;
        printf("{\"config\": \"%s\", \"inputs\": %d, \"recall\": %.4f, \"relative_output_error\": %.4f, "
               "\"pairs_share\": %.4f, \"per_layer_recall\": [",
               eval_path, n_in, s.e_recall / s.e_heads, s.e_err / s.e_heads, s.e_pairs / s.e_dense);
        for (int l = 0; l < s.n_layers; l++) printf("%s%.4f", l ? ", " : "", s.l_recall[l] / per);
        printf("], \"per_layer_error\": [");
        for (int l = 0; l < s.n_layers; l++) printf("%s%.4f", l ? ", " : "", s.l_err[l] / per);
        printf("]}\n");
        rc = 0;
        goto done;
    }
    if (cl < sizeof cal)
        snprintf(cal + cl, sizeof cal - cl,
                 "], \"candidates\": [\"grid frame v\", \"grid frame h+v\", \"grid row v\", \"ashape\", \"vslash\", "
                 "\"block\", \"dense\"], \"rule\": \"least mean density with mean recall >= target\", "
                 "\"backend\": \"cpu f32\"}");
    vidi_sparse_config *out = vidi_sparse_config_new(s.n_layers, s.n_heads);
    if (!out) goto done;
    out->target_recall = target;
    int chosen[N_CANDS] = {0};
    for (int l = 0; l < s.n_layers; l++)
        for (int h = 0; h < s.n_heads; h++) {
            int best = N_CANDS - 1;
            double best_d = 2;
            for (int c = 0; c < N_CANDS; c++) {
                int k = s.count[(l * s.n_heads + h) * N_CANDS + c];
                if (!k) continue;
                double r = *s_at(&s, s.recall, l, h, c) / k, d = *s_at(&s, s.density, l, h, c) / k;
                if (r >= target && d < best_d) best = c, best_d = d;
            }
            int k = s.count[(l * s.n_heads + h) * N_CANDS + best];
            vidi_sparse_rule r = s.cands[best];
            r.recall = k ? *s_at(&s, s.recall, l, h, best) / k : -1;
            r.density = k ? *s_at(&s, s.density, l, h, best) / k : -1;
            out->rules[l * s.n_heads + h] = r;
            chosen[best]++;
            printf("layer %d head %d: %-14s recall %.4f density %.4f\n", l, h, s.cand_names[best], r.recall, r.density);
        }
    const char *slash = strrchr(model_dir, '/');
    if (vidi_sparse_config_save(out, out_path, slash && slash[1] ? slash + 1 : model_dir, cal, &err) != VIDI_OK) {
        fprintf(stderr, "vidi-sparse-search: %s\n", err.msg);
        vidi_sparse_config_free(out);
        goto done;
    }
    printf("vidi-sparse-search: %s:", out_path);
    for (int c = 0; c < N_CANDS; c++)
        if (chosen[c]) printf(" %s x%d", s.cand_names[c], chosen[c]);
    printf("\n");
    vidi_sparse_config_free(out);
    rc = 0;
done:
    vidi_sparse_config_free(eval_cfg);
    free(s.l_recall);
    free(s.l_err);
    free(s.recall);
    free(s.density);
    free(s.count);
    free(s.probs);
    free(s.keys);
    vidi_tokenizer_free(tok);
    vidi_model_free(m);
    be->ops->destroy(be);
    return rc;
}
