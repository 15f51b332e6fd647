/* tools/sparse-search/search.c — vidi-sparse-search: the offline pattern
 * search of sparse prefill (prefill/sparse_run.h).
 *
 *   vidi-sparse-search --model DIR --video FILE --prompt TEXT [--video ... --prompt ...]
 *                      [--out FILE] [--target-recall 0.95] [--nframes N | --fps F] [--threads N]
 *                      [--sample-rows N] [--loop N]
 *
 * Runs the model (CPU) on the calibration inputs. In every layer, for every
 * head, each candidate pattern (grid by frame and by row, vertical lines
 * only or with the horizontal lines, the frame grid with 2D-boundary,
 * A-shape, vertical-slash, block top-k)
 * is compiled to its plan for that input (a grid's phase estimated online,
 * as at run time) and scored row by row (one dense causal softmax row at a
 * time, O(n) memory, so long videos fit): attention recall (the share of
 * the softmax mass its pairs hold, averaged over rows) and density (its
 * pairs over the dense triangle). --sample-rows N scores N rows spread
 * evenly over the prompt and its last 64 rows instead of every row (an
 * unbiased estimate of the recall for long prompts and large models).
 * --loop N plays each video N times in a row (a long video from a short
 * file). A head gets the candidate of least mean density whose mean recall
 * over the inputs reaches the target, dense when none does. The config
 * (default DIR/sparse_config.json) records each head's recall and density
 * and the calibration inputs.
 *
 * Online against offline: for every head where the frame grid applies, the
 * phase estimated online from the last queries (what runs at serving time)
 * is compared with the offline phase, the one whose columns hold the most
 * softmax mass over the scored rows, and both plans' recalls are reported
 * (stdout and the config's calibration record).
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
#define N_CANDS 8

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
    int64_t sample_rows;      /* 0: every row */
    float *prob;              /* n: one row's dense softmax */
    int32_t *keys;            /* n: one row's keys (vidi_sparse_row_keys) */
    int32_t *rows;            /* the scored rows */
    int32_t *tile_of;         /* [N_CANDS + 1][n]: each plan's tile of a row */
    double *colmass;          /* a video span's column mass over the scored rows */
    int64_t cap;
    double min_enrichment;
    /* online (estimated) against offline (best on the scored rows) grid phase */
    int phase_heads, phase_same;
    double rec_online, rec_offline;
} search;

static double *s_at(search *s, double *a, int l, int h, int c) {
    return &a[((size_t)l * (size_t)s->n_heads + (size_t)h) * N_CANDS + (size_t)c];
}

/* Room for prompts of n tokens. */
static int s_reserve(search *s, int64_t n) {
    if (n <= s->cap) return 0;
    float *p = realloc(s->prob, (size_t)n * sizeof *p);
    if (p) s->prob = p;
    int32_t *k = realloc(s->keys, (size_t)n * sizeof *k);
    if (k) s->keys = k;
    int32_t *r = realloc(s->rows, (size_t)n * sizeof *r);
    if (r) s->rows = r;
    int32_t *t = realloc(s->tile_of, (size_t)n * (N_CANDS + 1) * sizeof *t);
    if (t) s->tile_of = t;
    double *c = realloc(s->colmass, (size_t)n * sizeof *c);
    if (c) s->colmass = c;
    if (!p || !k || !r || !t || !c) return -1;
    s->cap = n;
    return 0;
}

/* The rows to score: every row, or sample_rows spread evenly and the last 64. */
static int64_t s_pick_rows(search *s, int64_t n) {
    int64_t m = 0;
    if (!s->sample_rows || n <= s->sample_rows + 64) {
        for (int64_t i = 0; i < n; i++) s->rows[m++] = (int32_t)i;
        return m;
    }
    int64_t last = n - 64;
    for (int64_t k = 0; k < s->sample_rows; k++) {
        int64_t i = k * last / s->sample_rows;
        if (!m || s->rows[m - 1] != i) s->rows[m++] = (int32_t)i;
    }
    for (int64_t i = last; i < n; i++) s->rows[m++] = (int32_t)i;
    return m;
}

/* Dense causal softmax of row i of one head into s->prob[0..i]. */
static void s_softmax_row(search *s, const vidi_sparse_qk *qk, int64_t i, float scale) {
    int kvh = qk->head / (qk->n_heads / qk->n_kv_heads), d = qk->head_dim;
    const float *q = qk->q + ((size_t)i * (size_t)qk->n_heads + (size_t)qk->head) * (size_t)d;
    float mx = -INFINITY, *row = s->prob;
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

/* Each row's tile in plan p into tile_of[n]. */
static void s_tiles_of(const vidi_sparse_plan *p, int32_t *tile_of) {
    for (int64_t t = 0; t < p->n_tiles; t++)
        for (int64_t r = 0; r < p->tiles[t].n_rows; r++) tile_of[p->rows[p->tiles[t].row0 + r]] = (int32_t)t;
}

/* The mass of row i's softmax (in s->prob) on plan p's keys of that row. */
static double s_row_mass(search *s, const vidi_sparse_plan *p, const int32_t *tile_of, int64_t i) {
    int64_t nk = vidi_sparse_row_keys(p, &p->tiles[tile_of[i]], i, s->keys);
    double m = 0;
    for (int64_t k = 0; k < nk; k++) m += s->prob[s->keys[k]];
    return m;
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
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h, NULL, NULL};
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
    if (!s->eval && s_reserve(s, n)) return vidi_err_set(err, VIDI_ERR_NOMEM, "search: out of memory");
    int64_t n_rows = s->eval ? 0 : s_pick_rows(s, n);
    for (int h = 0; h < hq && rc == VIDI_OK && !s->eval; h++) {
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h, NULL, NULL};
        vidi_sparse_plan plans[N_CANDS + 1];
        vidi_sparse_head hds[N_CANDS];
        int built = 0, have_off = 0;
        memset(plans, 0, sizeof plans);
        for (int c = 0; c < N_CANDS && rc == VIDI_OK; c++, built++) {
            int fb = 0;
            rc = vidi_sparse_resolve(&s->cands[c], s->spans, s->n_spans, &qk, s->min_enrichment, &hds[c], &fb, err);
            if (rc == VIDI_OK) rc = vidi_sparse_plan_build(&hds[c], s->spans, s->n_spans, n, &qk, &plans[c], err);
            if (rc == VIDI_OK) s_tiles_of(&plans[c], s->tile_of + (size_t)c * (size_t)n);
            if (rc) break;
        }
        /* the offline phase of the frame grid (candidate 0): the most column mass over the scored rows */
        const vidi_span *vid = vidi_sparse_video_span(s->spans, s->n_spans);
        vidi_sparse_head off = hds[0];
        if (rc == VIDI_OK && vid && hds[0].kind == VIDI_SPARSE_GRID) {
            int64_t len = vid->end - vid->start, st = hds[0].stride;
            memset(s->colmass, 0, (size_t)len * sizeof *s->colmass);
            for (int64_t r = 0; r < n_rows; r++) {
                int64_t i = s->rows[r];
                if (i < vid->start) continue;
                s_softmax_row(s, &qk, i, scale);
                for (int64_t j = vid->start; j <= i && j < vid->end; j++) s->colmass[j - vid->start] += s->prob[j];
            }
            double best = -1;
            for (int64_t ph = 0; ph < st; ph++) {
                double m = 0;
                for (int64_t j = ph; j < len; j += st) m += s->colmass[j];
                if (m > best) best = m, off.phase = ph;
            }
            rc = vidi_sparse_plan_build(&off, s->spans, s->n_spans, n, &qk, &plans[N_CANDS], err);
            if (rc == VIDI_OK) {
                have_off = 1;
                s_tiles_of(&plans[N_CANDS], s->tile_of + (size_t)N_CANDS * (size_t)n);
            }
        }
        /* score: one softmax row at a time */
        double mass[N_CANDS + 1] = {0};
        for (int64_t r = 0; r < n_rows && rc == VIDI_OK; r++) {
            int64_t i = s->rows[r];
            s_softmax_row(s, &qk, i, scale);
            for (int c = 0; c < built; c++) mass[c] += s_row_mass(s, &plans[c], s->tile_of + (size_t)c * (size_t)n, i);
            if (have_off) mass[N_CANDS] += s_row_mass(s, &plans[N_CANDS], s->tile_of + (size_t)N_CANDS * (size_t)n, i);
        }
        for (int c = 0; c < built && rc == VIDI_OK; c++) {
            *s_at(s, s->recall, layer, h, c) += mass[c] / (double)n_rows;
            *s_at(s, s->density, layer, h, c) += vidi_sparse_plan_density(&plans[c]);
            s->count[(layer * s->n_heads + h) * N_CANDS + c]++;
        }
        if (have_off && rc == VIDI_OK) {
            s->phase_heads++;
            s->phase_same += off.phase == hds[0].phase;
            s->rec_online += mass[0] / (double)n_rows;
            s->rec_offline += mass[N_CANDS] / (double)n_rows;
        }
        for (int c = 0; c <= N_CANDS; c++) vidi_sparse_plan_free(&plans[c]);
    }
    /* the dense answer, so that the next layers see the real activations */
    for (int h = 0; h < hq && rc == VIDI_OK; h++) {
        vidi_sparse_qk qk = {q->data, k->data, hq, hkv, d, h, NULL, NULL};
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
               "                          [--target-recall R] [--nframes N | --fps F] [--threads N]\n"
               "                          [--sample-rows N] [--loop N] [--evaluate CONFIG]\n");
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *out_path = NULL, *eval_path = NULL, *videos[MAX_INPUTS], *prompts[MAX_INPUTS];
    int n_in = 0, n_prompts = 0, threads = 0, nframes = 0, loop = 1;
    int64_t sample_rows = 0;
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
        else if (!strcmp(a, "--sample-rows")) sample_rows = atoll(v);
        else if (!strcmp(a, "--loop")) loop = atoi(v);
        else {
            fprintf(stderr, "vidi-sparse-search: unknown option %s\n", a);
            s_usage(stderr);
            return 2;
        }
    }
    if (!model_dir || !n_in || n_prompts != n_in || !(target > 0 && target <= 1) || sample_rows < 0 || loop < 1 ||
        loop > 1000) {
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
    s.sample_rows = sample_rows;
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
                                               "vslash",       "block",          "dense",      "grid frame v 2d"};
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
    s.cands[7] = s.cands[0];
    s.cands[7].head.boundary2d = 1;
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
        if (loop > 1) { /* the video N times in a row: N times the temporal patches */
            size_t bytes = (size_t)item.rows * (size_t)item.cols * sizeof *item.pixels;
            float *px = malloc(bytes * (size_t)loop);
            if (!px) {
                fprintf(stderr, "vidi-sparse-search: --loop %d: out of memory\n", loop);
                vidi_media_item_free(&item);
                goto done;
            }
            for (int r = 0; r < loop; r++) memcpy((char *)px + bytes * (size_t)r, item.pixels, bytes);
            free(item.pixels);
            item.pixels = px;
            item.rows *= loop;
            item.grid[0] *= loop;
        }
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
    if (s.phase_heads)
        printf("online grid phase (last queries) = offline phase (most column mass) for %d of %d heads; mean recall "
               "%.4f online, %.4f offline\n", s.phase_same, s.phase_heads, s.rec_online / s.phase_heads,
               s.rec_offline / s.phase_heads);
    if (cl < sizeof cal)
        snprintf(cal + cl, sizeof cal - cl,
                 "], \"candidates\": [\"grid frame v\", \"grid frame h+v\", \"grid row v\", \"ashape\", \"vslash\", "
                 "\"block\", \"dense\", \"grid frame v 2d\"], \"rule\": \"least mean density with mean recall >= target\", "
                 "\"rows\": \"%s\", \"loop\": %d, \"online_vs_offline_phase\": {\"heads\": %d, \"same\": %d, "
                 "\"recall_online\": %.4f, \"recall_offline\": %.4f}, \"backend\": \"cpu f32\"}",
                 s.sample_rows ? "sampled" : "all", loop, s.phase_heads, s.phase_same,
                 s.phase_heads ? s.rec_online / s.phase_heads : 0.0, s.phase_heads ? s.rec_offline / s.phase_heads : 0.0);
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
    free(s.prob);
    free(s.keys);
    free(s.rows);
    free(s.tile_of);
    free(s.colmass);
    vidi_tokenizer_free(tok);
    vidi_model_free(m);
    be->ops->destroy(be);
    return rc;
}
