/* bench/sparse/bench_sparse.c — sparse prefill attention on the GPU against
 * our dense kernel, one layer (bench/sparse/run.sh; results in
 * bench/results/sparse-*.json).
 *
 *   bench_sparse N HQ HKV D FRAME [REPS]
 *
 * A prompt of 512 text tokens, a video of N - 1024 tokens (FRAME tokens per
 * frame) and 512 text tokens; random bf16 q, k, v (uniform in [-1, 1]) with
 * a planted grid: every query after the text prefix leans along the
 * all-ones direction by 1 and the keys of the frame starts by 1.1 (about 12
 * more logit for those keys), so the grid plan's recall can be measured
 * (recall: the mass its keys hold for 8 row tiles spread over the video,
 * every head, by ops sparse_mass; -1 without it). Speed does not depend on
 * the values. Every head is a grid
 * head (vertical lines at the frame starts, sink = the text prefix, local
 * window 1024; no horizontal lines); the plan is built on the host once
 * (timed apart: one head's plan, packing all heads, the upload) and run by
 * the backend's sparse_attention, all heads in one launch; the baseline is
 * the backend's dense causal attention over all heads. Prints one JSON
 * line: ms of dense and sparse (kernel), plan building, packing, upload,
 * the share of causal pairs the plan keeps (density) and the share of the
 * dense work the kernel multiplies (computed: tile rows x tile keys), and
 * the online estimation of every head's grid phase (estimate_ms: the last
 * 64 rows' mass on the GPU by ops sparse_mass, copied to the host, the
 * phase picked; the last run, -1 without sparse_mass). Times are medians of REPS (3) runs after a
 * warm-up, with a synchronize before each clock read.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "prefill/sparse.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: bench_sparse N HQ HKV D FRAME [REPS]\n");
        return 2;
    }
    int64_t n = atoll(argv[1]);
    int hq = atoi(argv[2]), hkv = atoi(argv[3]), d = atoi(argv[4]), frame = atoi(argv[5]);
    int reps = argc > 6 ? atoi(argv[6]) : 3;
    if (n < 4096 || hq < 1 || hkv < 1 || hq % hkv || (d != 64 && d != 128) || frame < 2 || reps < 1 || reps > 20) {
        fprintf(stderr, "bench_sparse: N >= 4096, HQ %% HKV == 0, D 64 or 128, FRAME >= 2, REPS 1..20\n");
        return 2;
    }
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cuda_create(0, &err);
    if (!be || !be->ops->sparse_attention) {
        fprintf(stderr, "bench_sparse: %s\n", be ? "no sparse_attention" : err.msg);
        return 77;
    }
    size_t nq = (size_t)n * hq * d, nk = (size_t)n * hkv * d;
    uint16_t *h = malloc(nq * 2);
    void *dq = be->ops->buf_alloc(be, nq * 2), *dk = be->ops->buf_alloc(be, nk * 2), *dv = be->ops->buf_alloc(be, nk * 2);
    void *da = be->ops->buf_alloc(be, nq * 2), *ds = be->ops->buf_alloc(be, nq * 2);
    if (!h || !dq || !dk || !dv || !da || !ds) {
        fprintf(stderr, "bench_sparse: out of memory\n");
        return 1;
    }
    unsigned long long x = 88172645463325252ull;
    void *bufs[3] = {dq, dk, dv};
    size_t sizes[3] = {nq, nk, nk};
    for (int b = 0; b < 3; b++) {
        for (size_t i = 0; i < sizes[b]; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            float val = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
            /* the planted grid: every query leans along the all-ones direction, and so do the keys
             * of the video's frame starts, by 1.1: about 12 more logit for those keys */
            int64_t tok = (int64_t)(i / (size_t)((b ? hkv : hq) * d));
            if (b == 0 && tok >= 512) val += 1.0f;
            if (b == 1 && tok >= 512 && tok < n - 512 && (tok - 512) % frame == 0) val += 1.1f;
            h[i] = vidi_f32_to_bf16(val);
        }
        be->ops->copy_to_device(be, bufs[b], h, sizes[b] * 2, &err);
        be->ops->synchronize(be, &err);
    }
    vidi_tensor tq = vidi_tensor_3d(VIDI_DTYPE_BF16, dq, n, hq, d), tk = vidi_tensor_3d(VIDI_DTYPE_BF16, dk, n, hkv, d);
    vidi_tensor tv = vidi_tensor_3d(VIDI_DTYPE_BF16, dv, n, hkv, d), ta = vidi_tensor_3d(VIDI_DTYPE_BF16, da, n, hq, d);
    vidi_tensor ts = vidi_tensor_3d(VIDI_DTYPE_BF16, ds, n, hq, d);
    float scale = 1.0f / sqrtf((float)d);
    int32_t cu[2] = {0, (int32_t)n};
    vidi_attn_args args = {cu, cu, 1, 1, scale};

    /* the plan (the same for every head: fixed stride and phase), packed for all heads */
    vidi_span spans[3] = {{0, 512, VIDI_SPAN_TEXT, 0, 0}, {512, n - 512, VIDI_SPAN_VIDEO, frame, 16},
                          {n - 512, n, VIDI_SPAN_TEXT, 0, 0}};
    vidi_sparse_head hd = {.kind = VIDI_SPARSE_GRID, .sink = 512, .local = 1024, .stride = frame, .phase = 0, .h = 0,
                           .v = 1};
    double t0 = now_ms();
    vidi_sparse_plan p;
    if (vidi_sparse_plan_build(&hd, spans, 3, n, NULL, &p, &err) != VIDI_OK) {
        fprintf(stderr, "bench_sparse: %s\n", err.msg);
        return 1;
    }
    double plan_ms = now_ms() - t0;
    vidi_sparse_plan *plans = malloc((size_t)hq * sizeof *plans);
    int *heads = malloc((size_t)hq * sizeof *heads);
    for (int i = 0; i < hq; i++) plans[i] = p, heads[i] = i;
    vidi_sparse_packed pk;
    t0 = now_ms();
    if (vidi_sparse_pack(plans, heads, hq, &pk, &err) != VIDI_OK) {
        fprintf(stderr, "bench_sparse: %s\n", err.msg);
        return 1;
    }
    double pack_ms = now_ms() - t0;
    int32_t *drows = be->ops->buf_alloc(be, (size_t)pk.n_rows * 4), *dtiles = be->ops->buf_alloc(be, (size_t)pk.n_tiles * 32);
    int32_t *dsegs = be->ops->buf_alloc(be, (size_t)(pk.n_segs + 1) * 16), *dcols = be->ops->buf_alloc(be, (size_t)(pk.n_cols + 1) * 4);
    t0 = now_ms();
    be->ops->copy_to_device(be, drows, pk.rows, (size_t)pk.n_rows * 4, &err);
    be->ops->copy_to_device(be, dtiles, pk.tiles, (size_t)pk.n_tiles * 32, &err);
    be->ops->copy_to_device(be, dsegs, pk.segs, (size_t)pk.n_segs * 16, &err);
    if (pk.n_cols) be->ops->copy_to_device(be, dcols, pk.cols, (size_t)pk.n_cols * 4, &err);
    be->ops->synchronize(be, &err);
    double upload_ms = now_ms() - t0;
    double density = vidi_sparse_plan_density(&p);
    /* what the kernel multiplies (tile rows x tile keys) over the dense causal work */
    double computed = (double)pk.pairs_computed / ((double)hq * (double)n * (double)(n + 1) / 2.0);

    /* online estimation of every head's grid phase, timed apart: the last 64 rows of the video's
     * mass on the GPU (ops sparse_mass), copied to the host, the phase picked per head */
    double est_ms = -1;
    if (be->ops->sparse_mass) {
        int64_t vend = n - 512, r0 = vend - 64;
        float *dmass = be->ops->buf_alloc(be, (size_t)hq * (size_t)vend * 4), *hmass = malloc((size_t)hq * (size_t)vend * 4);
        if (dmass && hmass) {
            int64_t cand = frame, stride = 0, phase = 0;
            double score = 0;
            for (int r = -1; r < reps && est_ms != -2; r++) {
                be->ops->synchronize(be, &err);
                double a = now_ms();
                vidi_status est = be->ops->sparse_mass(be, &tq, &tk, r0, vend, scale, dmass, NULL, &err);
                if (est == VIDI_OK) est = be->ops->copy_to_host(be, hmass, dmass, (size_t)hq * (size_t)vend * 4, &err);
                for (int h = 0; h < hq && est == VIDI_OK; h++) {
                    vidi_sparse_mass m = {hmass + (size_t)h * vend, NULL, r0, vend};
                    vidi_sparse_qk qk = {NULL, NULL, hq, hkv, d, h, NULL, &m};
                    est = vidi_sparse_estimate_grid(&qk, &spans[1], 64, &cand, 1, &stride, &phase, &score, &err);
                }
                if (est != VIDI_OK) {
                    fprintf(stderr, "bench_sparse: estimation: %s\n", err.msg);
                    est_ms = -2;
                } else if (r == reps - 1) {
                    est_ms = now_ms() - a;
                }
            }
        }
        if (dmass) be->ops->buf_free(be, dmass);
        free(hmass);
    }

    /* attention recall of the plan on 8 row tiles spread over the video (rows [512 + 64 t, + 64),
     * each one plan tile): the rows' column mass by ops sparse_mass over the tile's keys */
    double recall = -1;
    if (be->ops->sparse_mass) {
        int64_t ntile = (n - 1024) / 64, cnt = 0;
        float *dm = be->ops->buf_alloc(be, (size_t)hq * (size_t)n * 4), *hm = malloc((size_t)hq * (size_t)n * 4);
        int32_t *keys = malloc((size_t)n * 4);
        double sum = 0;
        for (int s8 = 0; s8 < 8 && dm && hm && keys; s8++) {
            int64_t t = (ntile - 1) * (s8 + 1) / 8, r0 = 512 + 64 * t, r1 = r0 + 64;
            const vidi_sparse_tile *tl = NULL;
            for (int64_t x2 = 0; x2 < p.n_tiles && !tl; x2++)
                if (p.tiles[x2].n_rows == 64 && p.rows[p.tiles[x2].row0] == r0) tl = &p.tiles[x2];
            if (!tl || be->ops->sparse_mass(be, &tq, &tk, r0, r1, scale, dm, NULL, &err) != VIDI_OK ||
                be->ops->copy_to_host(be, hm, dm, (size_t)hq * (size_t)r1 * 4, &err) != VIDI_OK)
                break;
            int64_t nkeys = vidi_sparse_row_keys(&p, tl, r1 - 1, keys);
            for (int hh = 0; hh < hq; hh++, cnt++) {
                double m = 0;
                for (int64_t kk = 0; kk < nkeys; kk++) m += hm[(size_t)hh * (size_t)r1 + (size_t)keys[kk]];
                sum += m / 64.0;
            }
        }
        if (cnt == 8 * hq) recall = sum / (double)cnt;
        if (dm) be->ops->buf_free(be, dm);
        free(hm);
        free(keys);
    }

    double td[20], tsp[20];
    vidi_status st = VIDI_OK;
    for (int r = -1; r < reps && st == VIDI_OK; r++) {
        be->ops->synchronize(be, &err);
        double a = now_ms();
        st = be->ops->attention(be, &tq, &tk, &tv, &ta, &args, &err);
        if (st == VIDI_OK) st = be->ops->synchronize(be, &err);
        double b = now_ms();
        if (st == VIDI_OK)
            st = be->ops->sparse_attention(be, &tq, &tk, &tv, &ts, drows, dtiles, pk.n_tiles, dsegs, dcols, scale, &err);
        if (st == VIDI_OK) st = be->ops->synchronize(be, &err);
        double c = now_ms();
        if (r >= 0) td[r] = b - a, tsp[r] = c - b;
    }
    if (st != VIDI_OK) {
        fprintf(stderr, "bench_sparse: %s\n", err.msg);
        return 1;
    }
    qsort(td, (size_t)reps, sizeof *td, cmp_d);
    qsort(tsp, (size_t)reps, sizeof *tsp, cmp_d);
    printf("{\"n\": %lld, \"hq\": %d, \"hkv\": %d, \"d\": %d, \"frame\": %d, \"dense_ms\": %.3f, \"sparse_ms\": %.3f, "
           "\"plan_ms_per_head\": %.3f, \"estimate_ms\": %.3f, \"pack_ms\": %.3f, \"upload_ms\": %.3f, \"tiles\": %lld, \"density\": %.5f, "
           "\"computed\": %.5f, \"recall\": %.4f, \"speedup\": %.3f}\n",
           (long long)n, hq, hkv, d, frame, td[reps / 2], tsp[reps / 2], plan_ms, est_ms, pack_ms, upload_ms,
           (long long)pk.n_tiles, density, computed, recall, td[reps / 2] / tsp[reps / 2]);
    vidi_sparse_packed_free(&pk);
    vidi_sparse_plan_free(&p);
    free(plans);
    free(heads);
    be->ops->destroy(be);
    return 0;
}
