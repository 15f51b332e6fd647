/* bench/gpu/bench_gpu.c — vidi's side of the GPU benchmark (issue 4 item 5).
 *
 * The cases of bench/gpu/baselines.py, with the same names, shapes and
 * counting, run by vidi's engine on one backend (CUDA by default). One JSON
 * line per case on stdout, progress on stderr; report.py pairs the lines.
 * Each case: a warm-up, then --runs timed runs, the backend synchronised
 * (be->ops->synchronize) before every clock read; the median is reported
 * by report.py from runs_ms.
 *
 *   bench_gpu --model DIR --name qwen2vl-2b-shape [--cases vision,prefill,video,attention,gemm,decode]
 *             [--runs 3] [--quick] [--backend cuda|cpu]
 *
 * Sizes (defaults = the GPU benchmark; smaller ones for a CPU smoke test):
 *   --vision-images 32   448x448 images (grid 1x32x32) in one vidi_vision_encode
 *   --prefill 8192,32768 text prefill lengths
 *   --video-frames 64    448x448 frames of the video prompt (grid frames/2 x 32 x 32)
 *   --attn 8192,32768,131072 (--quick: 8192,32768) attention lengths
 *   --gemm-m 8192        rows of the GEMM cases
 *   --decode-tokens 128  new tokens of the decode case
 *
 * What each case times (vidi's path, counted like the baseline):
 *   vision_448_b<N>   vidi_vision_encode of N images from host f32 pixels
 *                     (the upload included; the baseline's pixels are already
 *                     on the GPU) into a backend tensor
 *   prefill_text_<S>  vidi_text_embed + vidi_text_forward of S ids into a KV
 *                     cache of capacity S (made once, truncated to 0 before
 *                     each run), logits of the last row, greedy sample (which
 *                     copies the token to the host)
 *   video<F>_448      vidi_generate(max_tokens 1): vision tower, embeddings,
 *                     M-RoPE positions, prefill, first token
 *   attn_causal_<S>   be->ops->attention, q [S,12,128], k/v [S,2,128] (GQA,
 *                     not expanded), causal, one sequence; FLOPs 4*S*S*D*Hq/2
 *   gemm_<name>       be->ops->matmul x[M,K] · w[N,K]^T, weight in the
 *                     backend's weight dtype; FLOPs 2*M*N*K
 *   decode_b1         vidi_generate greedy, 16 random prompt ids, no stop at
 *                     eos; tokens/s = (N-1) / (t(N new) - t(1 new))
 *   decode_b1_paged   the same over a paged KV pool: vidi_text_forward_paged, then
 *                     vidi_text_decode_batch steps of one sequence (graphs)
 *   decode_b64        64 such sequences stepping together (continuous batching)
 *   sparse_prefill_<S> (--cases sparse; --sparse-prefill 131072,262144) a prompt
 *                     of S tokens: 512 text, a video of (S - 1024) / 256 frames
 *                     of 16x16 merged tokens, 512 text; prefill_text_<S>'s path
 *                     timed dense and with sparse prefill (prefill/sparse_run.h:
 *                     every head a grid head, stride = the frame, phase 0,
 *                     vertical lines, sink = the text prefix, local 1024;
 *                     bench/sparse/qwen2vl-2b-grid.json holds the same rules;
 *                     --sparse-config FILE runs another config) in the
 *                     same run; the line has both, the share of the dense
 *                     query-key pairs kept and the layers run dense
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/text.h"
#include "model/vision.h"
#include "prefill/sparse_run.h"
#ifdef VIDI_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

#define MAX_RUNS 32
#define MAX_SIZES 8
#define TEXT_VOCAB 151643 /* ids below the special tokens */

/* ---------------------------------------------------------------- utils */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double s[MAX_RUNS];
    for (int i = 0; i < n; i++) s[i] = v[i];
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
/* uniform in [-1, 1) */
static float rndf(void) { return (float)((rnd() >> 40) * (1.0 / 8388608.0)) - 1.0f; }

static vidi_backend *g_be;

/* Prints s as a JSON string. */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void line_begin(const char *kase, const char *model) {
    printf("{\"case\":");
    json_str(kase);
    printf(",\"impl\":\"vidi\",\"backend\":");
    json_str(g_be ? g_be->name : "?");
    printf(",\"model\":");
    json_str(model);
}

static void line_runs(const double *ms, int n) {
    printf(",\"median_ms\":%.4f,\"runs_ms\":[", median(ms, n));
    for (int i = 0; i < n; i++) printf("%s%.4f", i ? "," : "", ms[i]);
    printf("]");
}

static void line_end(void) {
    printf("}\n");
    fflush(stdout);
}

static void emit_error(const char *kase, const char *model, const vidi_err *e) {
    line_begin(kase, model);
    printf(",\"error\":");
    json_str(e->msg[0] ? e->msg : vidi_status_name(e->status));
    line_end();
    fprintf(stderr, "bench_gpu: %s: %s\n", kase, e->msg);
}

static vidi_status sync_be(vidi_err *err) { return g_be->ops->synchronize(g_be, err); }

/* Backend buffer of n values of dtype dt, random in [-scale, scale): a host
 * block of at most 4 Mi values, copied over the buffer as many times as
 * needed (the values only have to be finite and not degenerate). */
static void *dev_random(vidi_dtype dt, int64_t n, float scale, vidi_err *err) {
    size_t es = vidi_dtype_size(dt);
    void *d = g_be->ops->buf_alloc(g_be, (size_t)n * es);
    if (!d) {
        vidi_err_set(err, VIDI_ERR_NOMEM, "out of backend memory for %lld values", (long long)n);
        return NULL;
    }
    int64_t blk = n < (1 << 22) ? n : (1 << 22);
    float *f = malloc((size_t)blk * sizeof *f);
    void *h = malloc((size_t)blk * es);
    if (!f || !h) {
        free(f);
        free(h);
        g_be->ops->buf_free(g_be, d);
        vidi_err_set(err, VIDI_ERR_NOMEM, "out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < blk; i++) f[i] = rndf() * scale;
    vidi_convert_from_f32(dt, f, h, (size_t)blk);
    for (int64_t off = 0; off < n; off += blk) {
        int64_t c = n - off < blk ? n - off : blk;
        if (g_be->ops->copy_to_device(g_be, (char *)d + (size_t)off * es, h, (size_t)c * es, err) != VIDI_OK) {
            g_be->ops->buf_free(g_be, d);
            d = NULL;
            break;
        }
    }
    free(f);
    free(h);
    return d;
}

static float *host_pixels(int64_t rows, int64_t dim) {
    float *p = malloc((size_t)rows * (size_t)dim * sizeof *p);
    if (!p) return NULL;
    for (int64_t i = 0; i < rows * dim; i++) p[i] = rndf() * 2.0f;
    return p;
}

static void random_ids(int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(rnd() % TEXT_VOCAB);
}

static int parse_sizes(const char *s, int64_t *out) {
    int n = 0;
    while (s && *s && n < MAX_SIZES) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v <= 0) break;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static int has_case(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* Calls per timed run for a short op so that one run lasts >= min_ms. */
static int reps_for(double one_ms, double min_ms) {
    int r = (int)(min_ms / (one_ms > 1e-3 ? one_ms : 1e-3)) + 1;
    return r < 1 ? 1 : r > 200 ? 200 : r;
}

/* ---------------------------------------------------------------- cases */

typedef struct opts {
    const char *model_dir, *name, *cases, *backend;
    int runs, quick, vision_images, video_frames, decode_tokens;
    int64_t gemm_m;
    int64_t prefill[MAX_SIZES], attn[MAX_SIZES], sparse[MAX_SIZES];
    int n_prefill, n_attn, n_sparse;
    const char *sparse_config;   /* --sparse-config FILE (NULL: every head the grid rule below) */
} opts;

static void case_vision(vidi_model *m, const opts *o) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "vision_448_b%d", o->vision_images);
    int n = o->vision_images, side = 32;
    int64_t rows = (int64_t)n * side * side, dim = vidi_media_patch_dim(&m->cfg);
    int32_t(*grids)[3] = malloc((size_t)n * sizeof *grids);
    float *pix = host_pixels(rows, dim);
    void *outb = NULL;
    double ms[MAX_RUNS];
    if (!grids || !pix) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) grids[i][0] = 1, grids[i][1] = side, grids[i][2] = side;
    int64_t orows = vidi_vision_out_rows(m->vision, (const int32_t(*)[3])grids, n);
    int ocols = m->cfg.vision.out_hidden_size;
    outb = g_be->ops->buf_alloc(g_be, (size_t)orows * ocols * vidi_dtype_size(g_be->act_dtype));
    if (!outb) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of backend memory for the output");
        goto fail;
    }
    vidi_tensor out = vidi_tensor_2d(g_be->act_dtype, outb, orows, ocols);
    for (int r = -1; r < o->runs; r++) {
        if (sync_be(&err)) goto fail;
        double t0 = now_ms();
        if (vidi_vision_encode(m->vision, pix, rows, (const int32_t(*)[3])grids, n, &out, &err)) goto fail;
        if (sync_be(&err)) goto fail;
        if (r >= 0) ms[r] = now_ms() - t0;
    }
    line_begin(kase, o->name);
    printf(",\"items\":%d,\"patch_rows\":%lld,\"out_rows\":%lld", n, (long long)rows, (long long)orows);
    line_runs(ms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    if (outb) g_be->ops->buf_free(g_be, outb);
    free(grids);
    free(pix);
}

/* A text prefill of S tokens into a KV cache of capacity S: the buffers of
 * prefill_text_<S> and sparse_prefill_<S>. */
typedef struct text_run {
    void *embb, *logb;
    vidi_kv_cache *kv;
    vidi_tensor emb, logits;
} text_run;

static void text_run_close(text_run *tr) {
    vidi_kv_cache_free(tr->kv);
    if (tr->embb) g_be->ops->buf_free(g_be, tr->embb);
    if (tr->logb) g_be->ops->buf_free(g_be, tr->logb);
    memset(tr, 0, sizeof *tr);
}

static vidi_status text_run_open(vidi_model *m, int64_t S, text_run *tr, vidi_err *err) {
    memset(tr, 0, sizeof *tr);
    int H = vidi_text_hidden_size(m->text), V = vidi_text_vocab_size(m->text);
    size_t es = vidi_dtype_size(g_be->act_dtype);
    tr->embb = g_be->ops->buf_alloc(g_be, (size_t)S * H * es);
    tr->logb = g_be->ops->buf_alloc(g_be, (size_t)V * es);
    if (!tr->embb || !tr->logb) {
        text_run_close(tr);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "out of backend memory");
    }
    if (vidi_kv_cache_create(m->text, S, &tr->kv, err)) {
        text_run_close(tr);
        return err->status;
    }
    tr->emb = vidi_tensor_2d(g_be->act_dtype, tr->embb, S, H);
    tr->logits = vidi_tensor_2d(g_be->act_dtype, tr->logb, 1, V);
    return VIDI_OK;
}

/* Sparse prefill for text_run_once: the config and the prompt's ids with
 * the video as pads (the spans); ctx gets what it did. */
typedef struct sparse_req {
    const vidi_sparse_config *cfg;
    const int32_t *pads;
    const int32_t (*grid)[3];
    vidi_sparse_ctx ctx;
} sparse_req;

/* One timed run: the cache emptied, then embeddings, the forward pass
 * (sparse prompt attention when sp), the last row's logits and a greedy
 * token, the backend synchronised; *ms its time. */
static vidi_status text_run_once(vidi_model *m, text_run *tr, const int32_t *ids, const int32_t *pos, int64_t S,
                                 sparse_req *sp, double *ms, vidi_err *err) {
    if (vidi_kv_cache_truncate(tr->kv, 0, err) || sync_be(err)) return err->status;
    double t0 = now_ms();
    if (sp && vidi_sparse_begin(m->text, sp->cfg, sp->pads, S, m->cfg.image_token_id, m->cfg.video_token_id,
                                sp->grid, 1, m->cfg.vision.spatial_merge_size, &sp->ctx, err))
        return err->status;
    vidi_status st = vidi_text_embed(m->text, ids, S, NULL, &tr->emb, err);
    vidi_text_out to = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &tr->logits};
    if (st == VIDI_OK) st = vidi_text_forward(m->text, tr->kv, &tr->emb, pos, &to, err);
    if (sp) vidi_sparse_end(m->text, &sp->ctx);
    if (st) return st;
    vidi_sample_params greedy = {.temperature = 0.0f, .top_k = 1, .top_p = 1.0f};
    uint64_t rs = vidi_rng_seed(0);
    int32_t tok;
    if (g_be->ops->sample(g_be, &tr->logits, &greedy, &rs, &tok, err) || sync_be(err)) return err->status;
    *ms = now_ms() - t0;
    return VIDI_OK;
}

static void case_prefill(vidi_model *m, const opts *o, int64_t S) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "prefill_text_%lld", (long long)S);
    int32_t *ids = malloc((size_t)S * sizeof *ids), *pos = malloc((size_t)S * 3 * sizeof *pos);
    text_run tr = {0};
    double ms[MAX_RUNS], t;
    if (!ids || !pos) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    random_ids(ids, S);
    for (int64_t i = 0; i < S; i++) pos[i * 3] = pos[i * 3 + 1] = pos[i * 3 + 2] = (int32_t)i;
    if (text_run_open(m, S, &tr, &err)) goto fail;
    for (int r = -1; r < o->runs; r++) {
        if (text_run_once(m, &tr, ids, pos, S, NULL, &t, &err)) goto fail;
        if (r >= 0) ms[r] = t;
    }
    line_begin(kase, o->name);
    printf(",\"tokens\":%lld", (long long)S);
    line_runs(ms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    text_run_close(&tr);
    free(ids);
    free(pos);
}

static void case_sparse_prefill(vidi_model *m, const opts *o, int64_t S) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "sparse_prefill_%lld", (long long)S);
    const int64_t pre = 512, frame = 256;
    int64_t frames = (S - 2 * pre) / frame;
    int32_t *ids = malloc((size_t)S * sizeof *ids), *pads = malloc((size_t)S * sizeof *pads);
    int32_t *pos = malloc((size_t)S * 3 * sizeof *pos);
    text_run tr = {0};
    vidi_sparse_config *cfg = NULL;
    double dms[MAX_RUNS], sms[MAX_RUNS], t;
    if (frames < 2 || pre * 2 + frames * frame != S) {
        vidi_err_set(&err, VIDI_ERR_INVALID, "sparse prefill: S - 1024 must be a multiple of 256 (>= 512)");
        goto fail;
    }
    if (!ids || !pads || !pos) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    random_ids(ids, S);
    /* the spans: the same ids with the video's tokens as pads (the embeddings stay the text ones) */
    for (int64_t i = 0; i < S; i++) {
        pads[i] = i >= pre && i < S - pre ? m->cfg.video_token_id : ids[i];
        if (pads[i] == m->cfg.video_token_id && (i < pre || i >= S - pre)) pads[i] = 0;
        if (pads[i] == m->cfg.image_token_id) pads[i] = 0;
        pos[i * 3] = pos[i * 3 + 1] = pos[i * 3 + 2] = (int32_t)i;
    }
    const int32_t grid[1][3] = {{(int32_t)frames, 32, 32}};
    int L = m->cfg.text.num_layers, NH = m->cfg.text.num_heads;
    if (o->sparse_config) {
        if (vidi_sparse_config_load(o->sparse_config, L, NH, &cfg, &err)) goto fail;
    } else if (!(cfg = vidi_sparse_config_new(L, NH))) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    for (int r = 0; r < L * NH && !o->sparse_config; r++) {
        vidi_sparse_rule *ru = &cfg->rules[r];
        *ru = vidi_sparse_rule_default(VIDI_SPARSE_GRID);
        ru->stride_ref = VIDI_STRIDE_FRAME;
        ru->estimate_phase = 0;
        ru->head.phase = 0, ru->head.h = 0, ru->head.v = 1, ru->head.sink = pre, ru->head.local = 1024;
    }
    if (text_run_open(m, S, &tr, &err)) goto fail;
    sparse_req sp = {cfg, pads, grid, {0}};
    for (int sparse = 0; sparse < 2; sparse++)
        for (int r = -1; r < o->runs; r++) {
            if (text_run_once(m, &tr, ids, pos, S, sparse ? &sp : NULL, &t, &err)) goto fail;
            if (r >= 0) (sparse ? sms : dms)[r] = t;
        }
    line_begin(kase, o->name);
    printf(",\"tokens\":%lld,\"frames\":%lld,\"frame_tokens\":%lld,\"kept\":%.5f,\"dense_layers\":%d,"
           "\"sparse_attention_ms\":%.3f",
           (long long)S, (long long)frames, (long long)frame,
           sp.ctx.dense_pairs ? (double)sp.ctx.pairs / (double)sp.ctx.dense_pairs : 0.0, sp.ctx.dense_layers, sp.ctx.ms);
    printf(",\"dense_runs_ms\":[");
    for (int r = 0; r < o->runs; r++) printf("%s%.3f", r ? "," : "", dms[r]);
    printf("]");
    line_runs(sms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    vidi_sparse_config_free(cfg);
    text_run_close(&tr);
    free(ids);
    free(pads);
    free(pos);
}

static void case_video(vidi_model *m, const opts *o) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "video%d_448", o->video_frames);
    int t = o->video_frames / m->cfg.vision.temporal_patch_size, side = 32, pre = 8, post = 8;
    int merge = m->cfg.vision.spatial_merge_size;
    int64_t nvis = (int64_t)t * side * side / (merge * merge);
    int64_t n_ids = pre + 1 + nvis + 1 + post;
    int64_t rows = (int64_t)t * side * side, dim = vidi_media_patch_dim(&m->cfg);
    int32_t *ids = malloc((size_t)n_ids * sizeof *ids);
    float *pix = host_pixels(rows, dim);
    double ms[MAX_RUNS], enc[MAX_RUNS], pre_s[MAX_RUNS];
    if (!ids || !pix) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    random_ids(ids, pre);
    ids[pre] = m->cfg.vision_start_token_id;
    for (int64_t i = 0; i < nvis; i++) ids[pre + 1 + i] = m->cfg.video_token_id;
    ids[pre + 1 + nvis] = m->cfg.vision_end_token_id;
    random_ids(ids + pre + 2 + nvis, post);
    vidi_media item = {.kind = VIDI_MEDIA_VIDEO, .pixels = pix, .n_rows = rows,
                       .grid = {t, side, side}, .second_per_grid_t = 1.0f};
    vidi_generate_params gp = vidi_generate_params_default();
    gp.max_tokens = 1;
    gp.stop_at_eos = 0;
    gp.sample.temperature = 0.0f;
    for (int r = -1; r < o->runs; r++) {
        vidi_generate_result res;
        if (sync_be(&err)) goto fail;
        double t0 = now_ms();
        if (vidi_generate(m, ids, n_ids, &item, 1, &gp, &res, &err)) goto fail;
        if (sync_be(&err)) goto fail;
        double dt = now_ms() - t0;
        if (r >= 0) ms[r] = dt, enc[r] = res.encode_s * 1e3, pre_s[r] = res.prefill_s * 1e3;
        vidi_generate_result_free(&res);
    }
    line_begin(kase, o->name);
    printf(",\"tokens\":%lld,\"patch_rows\":%lld,\"encode_ms\":%.3f,\"prefill_ms\":%.3f", (long long)n_ids,
           (long long)rows, median(enc, o->runs), median(pre_s, o->runs));
    line_runs(ms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    free(ids);
    free(pix);
}

static void case_decode(vidi_model *m, const opts *o) {
    vidi_err err = {0};
    const char *kase = "decode_b1";
    int32_t ids[16];
    random_ids(ids, 16);
    vidi_generate_params gp = vidi_generate_params_default();
    gp.stop_at_eos = 0;
    gp.sample.temperature = 0.0f;
    double t1[MAX_RUNS], tn[MAX_RUNS];
    int N = o->decode_tokens;
    for (int pass = 0; pass < 2; pass++) {
        gp.max_tokens = pass == 0 ? 1 : N;
        double *dst = pass == 0 ? t1 : tn;
        for (int r = -1; r < o->runs; r++) {
            vidi_generate_result res;
            if (sync_be(&err)) goto fail;
            double t0 = now_ms();
            if (vidi_generate(m, ids, 16, NULL, 0, &gp, &res, &err)) goto fail;
            if (sync_be(&err)) goto fail;
            double dt = now_ms() - t0;
            int got = res.n_tokens;
            vidi_generate_result_free(&res);
            if (got != gp.max_tokens) {
                vidi_err_set(&err, VIDI_ERR_INTERNAL, "generate gave %d tokens, asked %d", got, gp.max_tokens);
                goto fail;
            }
            if (r >= 0) dst[r] = dt;
        }
    }
    double d = median(tn, o->runs) - median(t1, o->runs);
    line_begin(kase, o->name);
    printf(",\"batch\":1,\"prompt\":16,\"new_tokens\":%d,\"t1_ms\":%.3f,\"tn_ms\":%.3f,\"tokens_per_s\":%.3f", N,
           median(t1, o->runs), median(tn, o->runs), (N - 1) / (d / 1e3));
    line_runs(tn, o->runs);
    line_end();
    return;
fail:
    emit_error(kase, o->name, &err);
}

/* B sequences of 16 random prompt ids over a paged KV pool: each prompt
 * prefilled (vidi_text_forward_paged), then greedy steps of the whole batch
 * (vidi_text_decode_batch with graphs + sample on the GPU) until each has
 * `new_tokens`. Timed as the transformers baseline is: (run of N tokens -
 * run of 1 token) gives B * (N - 1) tokens. The kase name says "paged" for
 * batch 1, to tell it from decode_b1 (vidi_generate, contiguous cache). */
static void case_decode_batch(vidi_model *m, const opts *o, int B) {
    vidi_err err = {0};
    char kase[64];
    if (B == 1)
        snprintf(kase, sizeof kase, "decode_b1_paged");
    else
        snprintf(kase, sizeof kase, "decode_b%d", B);
    vidi_backend *be = g_be;
    vidi_text *t = m->text;
    const int P = 16, N = o->decode_tokens;
    int64_t H = vidi_text_hidden_size(t), V = vidi_text_vocab_size(t);
    size_t es = vidi_dtype_size(be->act_dtype);
    vidi_kv_pool *pool = NULL;
    vidi_kv_seq **seqs = calloc((size_t)B, sizeof *seqs);
    int32_t *ids = malloc((size_t)B * P * sizeof *ids), *tok = malloc((size_t)B * sizeof *tok);
    int32_t *pos = malloc((size_t)(P > B ? P : B) * 3 * sizeof *pos);
    uint64_t *rng = calloc((size_t)B, sizeof *rng);
    void *emb = be->ops->buf_alloc(be, (size_t)(P * H) * es), *lg = be->ops->buf_alloc(be, (size_t)(B * V) * es);
    double t1[MAX_RUNS], tn[MAX_RUNS];
    if (!seqs || !ids || !tok || !pos || !rng || !emb || !lg) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of memory");
        goto fail;
    }
    random_ids(ids, B * P);
    vidi_kv_pool_params pp = {.block_size = 16, .max_seq_len = P + N + 1, .max_batch = B};
    pp.n_blocks = (int64_t)B * ((pp.max_seq_len + 15) / 16);
    if (vidi_kv_pool_create(t, &pp, &pool, &err)) goto fail;
    vidi_sample_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
    for (int pass = 0; pass < 2; pass++) {
        int n_new = pass == 0 ? 1 : N;
        double *dst = pass == 0 ? t1 : tn;
        for (int r = -1; r < o->runs; r++) {
            if (sync_be(&err)) goto fail;
            double t0 = now_ms();
            for (int b = 0; b < B; b++) {
                if (vidi_kv_seq_create(pool, &seqs[b], &err)) goto fail;
                vidi_tensor te = vidi_tensor_2d(be->act_dtype, emb, P, H);
                vidi_tensor tl = vidi_tensor_2d(be->act_dtype, (char *)lg + (size_t)(b * V) * es, 1, V);
                vidi_text_out out = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &tl};
                for (int i = 0; i < P; i++) pos[3 * i] = pos[3 * i + 1] = pos[3 * i + 2] = i;
                if (vidi_text_embed(t, ids + b * P, P, NULL, &te, &err) ||
                    vidi_text_forward_paged(t, seqs[b], &te, pos, &out, &err))
                    goto fail;
            }
            vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, B, V);
            if (be->ops->sample(be, &tl, &sp, rng, tok, &err)) goto fail;
            for (int k = 1; k < n_new; k++) {
                for (int b = 0; b < B; b++) pos[3 * b] = pos[3 * b + 1] = pos[3 * b + 2] = P + k - 1;
                if (vidi_text_decode_batch(t, pool, B, seqs, tok, pos, &tl, 1, &err)) goto fail;
                if (be->ops->sample(be, &tl, &sp, rng, tok, &err)) goto fail;
            }
            if (sync_be(&err)) goto fail;
            double dt = now_ms() - t0;
            for (int b = 0; b < B; b++) {
                vidi_kv_seq_free(seqs[b]);
                seqs[b] = NULL;
            }
            if (r >= 0) dst[r] = dt;
        }
    }
    double d = median(tn, o->runs) - median(t1, o->runs);
    line_begin(kase, o->name);
    printf(",\"batch\":%d,\"prompt\":%d,\"new_tokens\":%d,\"t1_ms\":%.3f,\"tn_ms\":%.3f,\"tokens_per_s\":%.3f",
           B, P, N, median(t1, o->runs), median(tn, o->runs), (double)B * (N - 1) / (d / 1e3));
    line_runs(tn, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    if (seqs)
        for (int b = 0; b < B; b++) vidi_kv_seq_free(seqs[b]);
    vidi_kv_pool_free(pool);
    if (emb) be->ops->buf_free(be, emb);
    if (lg) be->ops->buf_free(be, lg);
    free(seqs);
    free(ids);
    free(tok);
    free(pos);
    free(rng);
}

static void case_attention(const opts *o, int64_t S) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "attn_causal_%lld", (long long)S);
    const int hq = 12, hkv = 2, D = 128;
    vidi_dtype dt = g_be->act_dtype;
    void *q = dev_random(dt, S * hq * D, 1.0f, &err), *k = NULL, *v = NULL, *ob = NULL;
    double ms[MAX_RUNS];
    if (!q) goto fail;
    if (!(k = dev_random(dt, S * hkv * D, 1.0f, &err))) goto fail;
    if (!(v = dev_random(dt, S * hkv * D, 1.0f, &err))) goto fail;
    ob = g_be->ops->buf_alloc(g_be, (size_t)S * hq * D * vidi_dtype_size(dt));
    if (!ob) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of backend memory");
        goto fail;
    }
    vidi_tensor tq = vidi_tensor_3d(dt, q, S, hq, D), tk = vidi_tensor_3d(dt, k, S, hkv, D),
                tv = vidi_tensor_3d(dt, v, S, hkv, D), to = vidi_tensor_3d(dt, ob, S, hq, D);
    int32_t cu[2] = {0, (int32_t)S};
    vidi_attn_args args = {.cu_q = cu, .cu_k = cu, .n_seqs = 1, .causal = 1, .scale = 1.0f / sqrtf((float)D)};
    /* warm-up, also sizes the repetitions */
    if (sync_be(&err)) goto fail;
    double t0 = now_ms();
    if (g_be->ops->attention(g_be, &tq, &tk, &tv, &to, &args, &err)) goto fail;
    if (sync_be(&err)) goto fail;
    t0 = now_ms();
    if (g_be->ops->attention(g_be, &tq, &tk, &tv, &to, &args, &err)) goto fail;
    if (sync_be(&err)) goto fail;
    int reps = reps_for(now_ms() - t0, 25.0);
    for (int r = 0; r < o->runs; r++) {
        t0 = now_ms();
        for (int i = 0; i < reps; i++)
            if (g_be->ops->attention(g_be, &tq, &tk, &tv, &to, &args, &err)) goto fail;
        if (sync_be(&err)) goto fail;
        ms[r] = (now_ms() - t0) / reps;
    }
    line_begin(kase, "op");
    printf(",\"seq\":%lld,\"heads_q\":%d,\"heads_kv\":%d,\"head_dim\":%d,\"flops\":%.1f,\"reps\":%d", (long long)S,
           hq, hkv, D, 4.0 * (double)S * (double)S * D * hq / 2, reps);
    line_runs(ms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, "op", &err);
done:
    if (q) g_be->ops->buf_free(g_be, q);
    if (k) g_be->ops->buf_free(g_be, k);
    if (v) g_be->ops->buf_free(g_be, v);
    if (ob) g_be->ops->buf_free(g_be, ob);
}

static void case_gemm(const opts *o, const char *pname, int64_t N, int64_t K) {
    vidi_err err = {0};
    char kase[64];
    snprintf(kase, sizeof kase, "gemm_%s", pname);
    int64_t M = o->gemm_m;
    vidi_dtype at = g_be->act_dtype, wt = g_be->weight_dtype;
    if (wt != VIDI_DTYPE_F32 && wt != VIDI_DTYPE_F16 && wt != VIDI_DTYPE_BF16) wt = VIDI_DTYPE_BF16;
    void *x = dev_random(at, M * K, 1.0f, &err), *w = NULL, *y = NULL;
    double ms[MAX_RUNS];
    if (!x) goto fail;
    if (!(w = dev_random(wt, N * K, 0.05f, &err))) goto fail;
    y = g_be->ops->buf_alloc(g_be, (size_t)M * N * vidi_dtype_size(at));
    if (!y) {
        vidi_err_set(&err, VIDI_ERR_NOMEM, "out of backend memory");
        goto fail;
    }
    vidi_tensor tx = vidi_tensor_2d(at, x, M, K), tw = vidi_tensor_2d(wt, w, N, K), ty = vidi_tensor_2d(at, y, M, N);
    if (g_be->ops->matmul(g_be, &tx, &tw, NULL, &ty, &err)) goto fail;
    if (sync_be(&err)) goto fail;
    double t0 = now_ms();
    if (g_be->ops->matmul(g_be, &tx, &tw, NULL, &ty, &err)) goto fail;
    if (sync_be(&err)) goto fail;
    int reps = reps_for(now_ms() - t0, 25.0);
    for (int r = 0; r < o->runs; r++) {
        t0 = now_ms();
        for (int i = 0; i < reps; i++)
            if (g_be->ops->matmul(g_be, &tx, &tw, NULL, &ty, &err)) goto fail;
        if (sync_be(&err)) goto fail;
        ms[r] = (now_ms() - t0) / reps;
    }
    line_begin(kase, o->name);
    printf(",\"m\":%lld,\"n\":%lld,\"k\":%lld,\"flops\":%.1f,\"reps\":%d", (long long)M, (long long)N,
           (long long)K, 2.0 * M * N * K, reps);
    line_runs(ms, o->runs);
    line_end();
    goto done;
fail:
    emit_error(kase, o->name, &err);
done:
    if (x) g_be->ops->buf_free(g_be, x);
    if (w) g_be->ops->buf_free(g_be, w);
    if (y) g_be->ops->buf_free(g_be, y);
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: bench_gpu --model DIR [--name NAME] [--cases vision,prefill,video,attention,gemm,decode]\n"
            "       (decode = decode_b1,decode_b1_paged,decode_b64, each also on its own)\n"
            "       [--runs 3] [--quick] [--backend cuda|cpu] [--vision-images 32] [--prefill 8192,32768]\n"
            "       [--video-frames 64] [--attn 8192,32768,131072] [--gemm-m 8192] [--decode-tokens 128]\n"
            "       [--sparse-prefill 131072,262144] [--sparse-config FILE] (case sparse: not in the default list)\n");
    exit(2);
}

int main(int argc, char **argv) {
    opts o = {.model_dir = NULL, .name = NULL, .cases = "vision,prefill,video,attention,gemm,decode",
              .backend = "cuda", .runs = 3, .vision_images = 32, .video_frames = 64, .decode_tokens = 128,
              .gemm_m = 8192};
    const char *prefill = "8192,32768", *attn = NULL, *sparse = "131072,262144";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(s) (!strcmp(a, s) && v && (i++, 1))
        if (ARG("--model")) o.model_dir = v;
        else if (ARG("--name")) o.name = v;
        else if (ARG("--cases")) o.cases = v;
        else if (ARG("--backend")) o.backend = v;
        else if (ARG("--runs")) o.runs = atoi(v);
        else if (ARG("--vision-images")) o.vision_images = atoi(v);
        else if (ARG("--video-frames")) o.video_frames = atoi(v);
        else if (ARG("--decode-tokens")) o.decode_tokens = atoi(v);
        else if (ARG("--gemm-m")) o.gemm_m = atoll(v);
        else if (ARG("--prefill")) prefill = v;
        else if (ARG("--attn")) attn = v;
        else if (ARG("--sparse-prefill")) sparse = v;
        else if (ARG("--sparse-config")) o.sparse_config = v;
        else if (!strcmp(a, "--quick")) o.quick = 1;
        else usage();
#undef ARG
    }
    if (!o.model_dir || o.runs < 1 || o.runs > MAX_RUNS || o.vision_images < 1 || o.video_frames < 2 ||
        o.decode_tokens < 2 || o.gemm_m < 1)
        usage();
    if (!o.name) {
        const char *s = strrchr(o.model_dir, '/');
        o.name = s && s[1] ? s + 1 : o.model_dir;
    }
    o.n_prefill = parse_sizes(prefill, o.prefill);
    o.n_attn = parse_sizes(attn ? attn : o.quick ? "8192,32768" : "8192,32768,131072", o.attn);
    o.n_sparse = parse_sizes(sparse, o.sparse);

    vidi_err err = {0};
    if (!strcmp(o.backend, "cpu")) {
        g_be = vidi_backend_cpu_create(0, &err);
    } else if (!strcmp(o.backend, "cuda")) {
#ifdef VIDI_HAVE_CUDA
        g_be = vidi_backend_cuda_create(0, &err);
#else
        vidi_err_set(&err, VIDI_ERR_UNSUPPORTED, "this build has no CUDA backend");
#endif
    } else {
        usage();
    }
    if (!g_be) {
        fprintf(stderr, "bench_gpu: backend %s: %s\n", o.backend, err.msg);
        line_begin("backend", o.name);
        printf(",\"error\":");
        json_str(err.msg);
        line_end();
        return 1;
    }
    {
        char dev[256] = "host CPU";
#ifdef VIDI_HAVE_CUDA
        if (!strcmp(o.backend, "cuda")) vidi_cuda_device_describe(0, dev, sizeof dev);
#endif
        line_begin("env", o.name);
        printf(",\"device\":");
        json_str(dev);
        printf(",\"act_dtype\":\"%s\",\"weight_dtype\":\"%s\"", vidi_dtype_name(g_be->act_dtype),
               vidi_dtype_name(g_be->weight_dtype));
        line_end();
    }

    vidi_model_config cfg;
    if (vidi_model_config_load(o.model_dir, &cfg, &err)) {
        emit_error("config", o.name, &err);
        g_be->ops->destroy(g_be);
        return 1;
    }

    /* op-level cases first: they need no weights */
    if (has_case(o.cases, "attention") && strstr(o.name, "7b") == NULL)
        for (int i = 0; i < o.n_attn; i++) {
            fprintf(stderr, "bench_gpu: attention %lld\n", (long long)o.attn[i]);
            case_attention(&o, o.attn[i]);
        }
    if (has_case(o.cases, "gemm")) {
        const vidi_text_config *t = &cfg.text;
        const vidi_vision_config *vc = &cfg.vision;
        struct { const char *n; int64_t N, K; } g[] = {
            {"q_proj", t->hidden_size, t->hidden_size},
            {"kv_proj", (int64_t)t->num_kv_heads * t->head_dim, t->hidden_size},
            {"o_proj", t->hidden_size, t->hidden_size},
            {"gate_up_proj", t->intermediate_size, t->hidden_size},
            {"down_proj", t->hidden_size, t->intermediate_size},
            {"vis_qkv", 3 * (int64_t)vc->hidden_size, vc->hidden_size},
            {"vis_proj", vc->hidden_size, vc->hidden_size},
            {"vis_fc1", vc->intermediate_size, vc->hidden_size},
            {"vis_fc2", vc->hidden_size, vc->intermediate_size},
        };
        int is7b = strstr(o.name, "7b") != NULL; /* the vision tower is the same in both models */
        for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
            if (is7b && !strncmp(g[i].n, "vis_", 4)) continue;
            fprintf(stderr, "bench_gpu: gemm %s\n", g[i].n);
            case_gemm(&o, g[i].n, g[i].N, g[i].K);
        }
    }

    int need_model = has_case(o.cases, "vision") || has_case(o.cases, "prefill") || has_case(o.cases, "video") ||
                     has_case(o.cases, "sparse") ||
                     has_case(o.cases, "decode") || has_case(o.cases, "decode_b1") ||
                     has_case(o.cases, "decode_b1_paged") || has_case(o.cases, "decode_b64");
    if (need_model) {
        vidi_model *m = NULL;
        fprintf(stderr, "bench_gpu: loading %s\n", o.model_dir);
        double t0 = now_ms();
        if (vidi_model_load(o.model_dir, g_be, &m, &err) || sync_be(&err)) {
            emit_error("load", o.name, &err);
        } else {
            line_begin("load", o.name);
            printf(",\"load_s\":%.3f", (now_ms() - t0) / 1e3);
            line_end();
            if (has_case(o.cases, "vision")) {
                fprintf(stderr, "bench_gpu: vision tower\n");
                case_vision(m, &o);
            }
            if (has_case(o.cases, "prefill"))
                for (int i = 0; i < o.n_prefill; i++) {
                    fprintf(stderr, "bench_gpu: prefill %lld\n", (long long)o.prefill[i]);
                    case_prefill(m, &o, o.prefill[i]);
                }
            if (has_case(o.cases, "sparse"))
                for (int i = 0; i < o.n_sparse; i++) {
                    fprintf(stderr, "bench_gpu: sparse prefill %lld\n", (long long)o.sparse[i]);
                    case_sparse_prefill(m, &o, o.sparse[i]);
                }
            if (has_case(o.cases, "video")) {
                fprintf(stderr, "bench_gpu: video prompt\n");
                case_video(m, &o);
            }
            int all_dec = has_case(o.cases, "decode");
            if (all_dec || has_case(o.cases, "decode_b1")) {
                fprintf(stderr, "bench_gpu: decode batch 1\n");
                case_decode(m, &o);
            }
            if (all_dec || has_case(o.cases, "decode_b1_paged")) {
                fprintf(stderr, "bench_gpu: decode batch 1, paged\n");
                case_decode_batch(m, &o, 1);
            }
            if (all_dec || has_case(o.cases, "decode_b64")) {
                fprintf(stderr, "bench_gpu: decode batch 64\n");
                case_decode_batch(m, &o, 64);
            }
            vidi_model_free(m);
        }
    }
    g_be->ops->destroy(g_be);
    return 0;
}
