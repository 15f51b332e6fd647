/* prefill/sparse.c — sparse prefill patterns, plans, estimation and the
 * host reference kernels (sparse.h). */
#include "prefill/sparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *vidi_sparse_kind_name(vidi_sparse_kind k) {
    static const char *const names[] = {"dense", "ashape", "trishape", "vslash", "block", "grid"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

/* ---------------------------------------------------------------- spans */

vidi_status vidi_sparse_spans(const int32_t *ids, int64_t n, int32_t image_pad, int32_t video_pad,
                              const int32_t (*grids)[3], int n_grids, int merge, vidi_span *out, int cap, int *n_out,
                              vidi_err *err) {
    *n_out = 0;
    if (n <= 0 || !ids || merge <= 0) return vidi_err_set(err, VIDI_ERR_INVALID, "sparse spans: empty prompt");
    int g = 0;
    for (int64_t i = 0; i < n;) {
        int32_t t = ids[i];
        int64_t j = i + 1;
        vidi_span s = {i, 0, VIDI_SPAN_TEXT, 0, 0};
        if (t == image_pad || t == video_pad) {
            while (j < n && ids[j] == t) j++;
            s.kind = t == image_pad ? VIDI_SPAN_IMAGE : VIDI_SPAN_VIDEO;
            if (g >= n_grids)
                return vidi_err_set(err, VIDI_ERR_INVALID, "sparse spans: more runs of vision pads than grids (%d)",
                                    n_grids);
            int64_t mh = grids[g][1] / merge, mw = grids[g][2] / merge, want = (int64_t)grids[g][0] * mh * mw;
            if (want != j - i)
                return vidi_err_set(err, VIDI_ERR_INVALID, "sparse spans: vision run %d holds %lld tokens, grid %dx%dx%d "
                                                           "needs %lld", g, (long long)(j - i), grids[g][0], grids[g][1],
                                    grids[g][2], (long long)want);
            s.frame_tokens = mh * mw;
            s.row_tokens = mw;
            g++;
        } else {
            while (j < n && ids[j] != image_pad && ids[j] != video_pad) j++;
        }
        s.end = j;
        if (*n_out == cap) return vidi_err_set(err, VIDI_ERR_RANGE, "sparse spans: more than %d spans", cap);
        out[(*n_out)++] = s;
        i = j;
    }
    if (g != n_grids) return vidi_err_set(err, VIDI_ERR_INVALID, "sparse spans: %d grids for %d vision runs", n_grids, g);
    return VIDI_OK;
}

const vidi_span *vidi_sparse_video_span(const vidi_span *spans, int n_spans) {
    const vidi_span *v = NULL;
    for (int i = 0; i < n_spans; i++)
        if (spans[i].kind == VIDI_SPAN_VIDEO && (!v || spans[i].end - spans[i].start > v->end - v->start)) v = &spans[i];
    return v;
}

/* ---------------------------------------------------------------- plans */

void vidi_sparse_plan_free(vidi_sparse_plan *p) {
    if (!p) return;
    free(p->rows);
    free(p->segs);
    free(p->cols);
    free(p->tiles);
    memset(p, 0, sizeof *p);
}

static int s_grow(void **buf, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *b = realloc(*buf, (size_t)c * elem);
    if (!b) return -1;
    *buf = b;
    *cap = c;
    return 0;
}

static int cmp_seg(const void *a, const void *b) {
    const vidi_sparse_seg *x = a, *y = b;
    return x->a < y->a ? -1 : x->a > y->a;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Building one tile: rows, segments and columns are appended, then
 * s_tile_end sorts and merges the segments and drops the columns they
 * cover (so no key is counted twice). */
typedef struct builder {
    vidi_sparse_plan *p;
    int64_t n;
    int failed;
} builder;

static void b_begin(builder *b) {
    vidi_sparse_plan *p = b->p;
    if (s_grow((void **)&p->tiles, &p->cap_tiles, p->n_tiles + 1, sizeof *p->tiles)) {
        b->failed = 1;
        return;
    }
    p->tiles[p->n_tiles] = (vidi_sparse_tile){p->n_rows, 0, p->n_segs, 0, p->n_cols, 0};
}

static void b_row(builder *b, int64_t i) {
    vidi_sparse_plan *p = b->p;
    if (s_grow((void **)&p->rows, &p->cap_rows, p->n_rows + 1, sizeof *p->rows)) {
        b->failed = 1;
        return;
    }
    p->rows[p->n_rows++] = (int32_t)i;
    p->tiles[p->n_tiles].n_rows++;
}

/* Keys a, a + step, ... below e (clipped to [0, n)). */
static void b_sseg(builder *b, int64_t a, int64_t e, int64_t step) {
    if (a < 0) a += (-a + step - 1) / step * step;
    if (e > b->n) e = b->n;
    if (a >= e) return;
    vidi_sparse_plan *p = b->p;
    if (s_grow((void **)&p->segs, &p->cap_segs, p->n_segs + 1, sizeof *p->segs)) {
        b->failed = 1;
        return;
    }
    p->segs[p->n_segs++] = (vidi_sparse_seg){a, e, step};
    p->tiles[p->n_tiles].n_segs++;
}

static void b_seg(builder *b, int64_t a, int64_t e) { b_sseg(b, a, e, 1); }

static void b_col(builder *b, int64_t j) {
    if (j < 0 || j >= b->n) return;
    vidi_sparse_plan *p = b->p;
    if (s_grow((void **)&p->cols, &p->cap_cols, p->n_cols + 1, sizeof *p->cols)) {
        b->failed = 1;
        return;
    }
    p->cols[p->n_cols++] = (int32_t)j;
    p->tiles[p->n_tiles].n_cols++;
}

/* Is key j in segment g? */
static int s_in_seg(const vidi_sparse_seg *g, int64_t j) {
    return j >= g->a && j < g->e && (j - g->a) % g->step == 0;
}

/* The tile ends: its contiguous segments sorted and merged, then its
 * strided ones cut into the gaps between them (so no key is in two
 * segments; the builder never lays two strided ones over each other), and
 * the columns that a segment holds dropped. */
static void b_end(builder *b) {
    if (b->failed) return;
    vidi_sparse_plan *p = b->p;
    vidi_sparse_tile *t = &p->tiles[p->n_tiles];
    if (!t->n_rows) return; /* nothing: dropped */
    vidi_sparse_seg *sg = t->n_segs ? p->segs + t->seg0 : NULL;
    /* contiguous ones to the front (stable order is not needed: sorted below) */
    int64_t nc = 0;
    for (int64_t i = 0; i < t->n_segs; i++)
        if (sg[i].step == 1) {
            vidi_sparse_seg x = sg[nc];
            sg[nc++] = sg[i];
            sg[i] = x;
        }
    if (nc > 1) qsort(sg, (size_t)nc, sizeof *sg, cmp_seg);
    int64_t m = 0;
    for (int64_t i = 0; i < nc; i++) {
        if (m && sg[i].a <= sg[m - 1].e) {
            if (sg[i].e > sg[m - 1].e) sg[m - 1].e = sg[i].e;
        } else {
            sg[m++] = sg[i];
        }
    }
    /* the strided ones, cut into the gaps [g0, g1) around the m merged ranges */
    int64_t n_str = t->n_segs - nc, total = m;
    vidi_sparse_seg *str = n_str ? malloc((size_t)n_str * sizeof *str) : NULL;
    if (n_str && !str) {
        b->failed = 1;
        return;
    }
    if (n_str) memcpy(str, sg + nc, (size_t)n_str * sizeof *str);
    p->n_segs = t->seg0 + m;
    for (int64_t x = 0; x < n_str && !b->failed; x++) {
        const vidi_sparse_seg g = str[x];
        for (int64_t gap = 0; gap <= m; gap++) {
            int64_t g0 = gap ? sg[gap - 1].e : 0, g1 = gap < m ? sg[gap].a : b->n;
            int64_t lo = g.a > g0 ? g.a : g0, hi = g.e < g1 ? g.e : g1;
            lo = g.a + (lo - g.a + g.step - 1) / g.step * g.step; /* first key of g at or after lo */
            if (lo >= hi) continue;
            if (s_grow((void **)&p->segs, &p->cap_segs, p->n_segs + 1, sizeof *p->segs)) {
                b->failed = 1;
                break;
            }
            sg = p->segs + t->seg0; /* realloc may move it */
            p->segs[p->n_segs++] = hi - lo > g.step ? (vidi_sparse_seg){lo, hi, g.step} : (vidi_sparse_seg){lo, lo + 1, 1};
            total++;
        }
    }
    free(str);
    if (b->failed) return;
    t->n_segs = total;
    sg = total ? p->segs + t->seg0 : NULL;
    int32_t *c = t->n_cols ? p->cols + t->col0 : NULL;
    if (t->n_cols > 1) qsort(c, (size_t)t->n_cols, sizeof *c, cmp_i32);
    int64_t k = 0, s = 0;
    for (int64_t i = 0; i < t->n_cols; i++) {
        if (k && c[i] == c[k - 1]) continue;
        while (s < m && sg[s].e <= c[i]) s++;
        if (s < m && sg[s].a <= c[i]) continue; /* inside a contiguous segment */
        int in = 0;
        for (int64_t x = m; x < total && !in; x++) in = s_in_seg(&sg[x], c[i]);
        if (in) continue;
        c[k++] = c[i];
    }
    p->n_cols = t->col0 + k;
    t->n_cols = k;
    p->n_tiles++;
}

int64_t vidi_sparse_plan_pairs(const vidi_sparse_plan *p) {
    int64_t pairs = 0;
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const vidi_sparse_tile *tl = &p->tiles[t];
        for (int64_t r = 0; r < tl->n_rows; r++) {
            int64_t i = p->rows[tl->row0 + r];
            for (int64_t s = 0; s < tl->n_segs; s++) pairs += vidi_sparse_seg_keys_upto(&p->segs[tl->seg0 + s], i);
            /* the columns are sorted (b_end): how many are <= i */
            int64_t lo = 0, hi = tl->n_cols;
            while (lo < hi) {
                int64_t mid = (lo + hi) / 2;
                if (p->cols[tl->col0 + mid] <= i) lo = mid + 1;
                else hi = mid;
            }
            pairs += lo;
        }
    }
    return pairs;
}

double vidi_sparse_plan_density(const vidi_sparse_plan *p) {
    double dense = (double)p->n_tokens * (double)(p->n_tokens + 1) / 2.0;
    return dense > 0 ? (double)vidi_sparse_plan_pairs(p) / dense : 0.0;
}

int64_t vidi_sparse_row_keys(const vidi_sparse_plan *p, const vidi_sparse_tile *tl, int64_t i, int32_t *keys) {
    int64_t n = 0;
    for (int64_t s = 0; s < tl->n_segs; s++) {
        const vidi_sparse_seg *g = &p->segs[tl->seg0 + s];
        for (int64_t j = g->a; j < g->e && j <= i; j += g->step) keys[n++] = (int32_t)j;
    }
    for (int64_t c = 0; c < tl->n_cols; c++)
        if (p->cols[tl->col0 + c] <= i) keys[n++] = p->cols[tl->col0 + c];
    return n;
}

vidi_status vidi_sparse_plan_check(const vidi_sparse_plan *p, vidi_err *err) {
    if (p->n_rows != p->n_tokens)
        return vidi_err_set(err, VIDI_ERR_INVALID, "plan: %lld rows for %lld tokens", (long long)p->n_rows,
                            (long long)p->n_tokens);
    unsigned char *seen = calloc((size_t)p->n_tokens + 1, 1);
    if (!seen) return vidi_err_set(err, VIDI_ERR_NOMEM, "plan check: out of memory");
    vidi_status rc = VIDI_OK;
    for (int64_t t = 0; t < p->n_tiles && rc == VIDI_OK; t++) {
        const vidi_sparse_tile *tl = &p->tiles[t];
        if (tl->n_rows < 1 || tl->n_rows > VIDI_SPARSE_TILE)
            rc = vidi_err_set(err, VIDI_ERR_INVALID, "plan: tile %lld has %lld rows", (long long)t, (long long)tl->n_rows);
        for (int64_t r = 0; r < tl->n_rows && rc == VIDI_OK; r++) {
            int64_t i = p->rows[tl->row0 + r];
            if (i < 0 || i >= p->n_tokens || seen[i]++)
                rc = vidi_err_set(err, VIDI_ERR_INVALID, "plan: row %lld is out of range or in two tiles", (long long)i);
        }
        for (int64_t s = 0; s < tl->n_segs && rc == VIDI_OK; s++) {
            const vidi_sparse_seg *g = &p->segs[tl->seg0 + s];
            if (g->a < 0 || g->e > p->n_tokens || g->a >= g->e || g->step < 1)
                rc = vidi_err_set(err, VIDI_ERR_INVALID, "plan: segment [%lld, %lld) step %lld", (long long)g->a,
                                  (long long)g->e, (long long)g->step);
        }
        for (int64_t c = 0; c < tl->n_cols && rc == VIDI_OK; c++)
            if (p->cols[tl->col0 + c] < 0 || p->cols[tl->col0 + c] >= p->n_tokens)
                rc = vidi_err_set(err, VIDI_ERR_INVALID, "plan: column %d", p->cols[tl->col0 + c]);
    }
    free(seen);
    return rc;
}

/* ---------------------------------------------------------------- packing */

void vidi_sparse_packed_free(vidi_sparse_packed *p) {
    if (!p) return;
    free(p->rows);
    free(p->tiles);
    free(p->segs);
    free(p->cols);
    memset(p, 0, sizeof *p);
}

typedef struct pack_order {
    int64_t work;
    int plan;
    int64_t tile;
} pack_order;

static int cmp_work_desc(const void *a, const void *b) {
    const pack_order *x = a, *y = b;
    if (x->work != y->work) return x->work > y->work ? -1 : 1;
    if (x->plan != y->plan) return x->plan < y->plan ? -1 : 1;
    return x->tile < y->tile ? -1 : x->tile > y->tile;
}

vidi_status vidi_sparse_pack(const vidi_sparse_plan *plans, const int *heads, int n_plans, vidi_sparse_packed *out,
                             vidi_err *err) {
    memset(out, 0, sizeof *out);
    int64_t nr = 0, nt = 0, ns = 0, nc = 0;
    for (int k = 0; k < n_plans; k++) {
        nr += plans[k].n_rows, nt += plans[k].n_tiles, ns += plans[k].n_segs, nc += plans[k].n_cols;
        if (heads[k] < 0) return vidi_err_set(err, VIDI_ERR_INVALID, "sparse pack: head %d", heads[k]);
        if (plans[k].n_tokens > INT32_MAX) return vidi_err_set(err, VIDI_ERR_RANGE, "sparse pack: too many tokens");
    }
    if (nr > INT32_MAX || nt > INT32_MAX / 8 || ns > INT32_MAX / 4 || nc > INT32_MAX)
        return vidi_err_set(err, VIDI_ERR_RANGE, "sparse pack: plans too large for int32 indices");
    out->rows = malloc((size_t)(nr ? nr : 1) * 4);
    out->tiles = malloc((size_t)(nt ? nt : 1) * 32);
    out->segs = malloc((size_t)(ns ? ns : 1) * 16);
    out->cols = malloc((size_t)(nc ? nc : 1) * 4);
    pack_order *ord = malloc((size_t)(nt ? nt : 1) * sizeof *ord);
    if (!out->rows || !out->tiles || !out->segs || !out->cols || !ord) {
        free(ord);
        vidi_sparse_packed_free(out);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "sparse pack: out of memory");
    }
    int64_t t = 0;
    for (int k = 0; k < n_plans; k++)
        for (int64_t x = 0; x < plans[k].n_tiles; x++, t++) {
            const vidi_sparse_tile *tl = &plans[k].tiles[x];
            int64_t keys = tl->n_cols;
            for (int64_t s = 0; s < tl->n_segs; s++) {
                const vidi_sparse_seg *g = &plans[k].segs[tl->seg0 + s];
                keys += (g->e - g->a + g->step - 1) / g->step;
            }
            ord[t] = (pack_order){keys * tl->n_rows, k, x};
        }
    qsort(ord, (size_t)nt, sizeof *ord, cmp_work_desc);
    /* rows, segments and columns of each plan go in plan order; the tiles in work order */
    int64_t *row_base = malloc((size_t)(n_plans + 1) * 3 * sizeof *row_base);
    if (!row_base) {
        free(ord);
        vidi_sparse_packed_free(out);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "sparse pack: out of memory");
    }
    for (int k = 0; k < n_plans; k++) {
        const vidi_sparse_plan *p = &plans[k];
        row_base[3 * k] = out->n_rows, row_base[3 * k + 1] = out->n_segs, row_base[3 * k + 2] = out->n_cols;
        for (int64_t r = 0; r < p->n_rows; r++) out->rows[out->n_rows++] = p->rows[r];
        for (int64_t c = 0; c < p->n_cols; c++) out->cols[out->n_cols++] = p->cols[c];
        for (int64_t x = 0; x < p->n_tiles; x++) { /* segments with their running key counts */
            const vidi_sparse_tile *tl = &p->tiles[x];
            int64_t before = 0;
            for (int64_t s = 0; s < tl->n_segs; s++) {
                const vidi_sparse_seg *g = &p->segs[tl->seg0 + s];
                int32_t *o = out->segs + 4 * (row_base[3 * k + 1] + tl->seg0 + s);
                o[0] = (int32_t)g->a, o[1] = (int32_t)g->e, o[2] = (int32_t)g->step, o[3] = (int32_t)before;
                before += (g->e - g->a + g->step - 1) / g->step;
            }
        }
        out->n_segs += p->n_segs;
    }
    for (t = 0; t < nt; t++) {
        const vidi_sparse_plan *p = &plans[ord[t].plan];
        const vidi_sparse_tile *tl = &p->tiles[ord[t].tile];
        const int64_t *base = row_base + 3 * ord[t].plan;
        int32_t *o = out->tiles + 8 * t;
        o[0] = (int32_t)(base[0] + tl->row0), o[1] = (int32_t)tl->n_rows, o[2] = (int32_t)(base[1] + tl->seg0);
        o[3] = (int32_t)tl->n_segs, o[4] = (int32_t)(base[2] + tl->col0), o[5] = (int32_t)tl->n_cols;
        o[6] = heads[ord[t].plan], o[7] = (int32_t)(ord[t].work / tl->n_rows);
        out->pairs_computed += ord[t].work;
    }
    out->n_tiles = nt;
    free(row_base);
    free(ord);
    return VIDI_OK;
}

/* ---------------------------------------------------------------- estimation */

static const float *s_q(const vidi_sparse_qk *qk, int64_t i) {
    return qk->q + ((size_t)i * (size_t)qk->n_heads + (size_t)qk->head) * (size_t)qk->head_dim;
}

static const float *s_k(const vidi_sparse_qk *qk, int64_t j) {
    int kvh = qk->head / (qk->n_heads / qk->n_kv_heads);
    return qk->k + ((size_t)j * (size_t)qk->n_kv_heads + (size_t)kvh) * (size_t)qk->head_dim;
}

static float s_dot(const float *a, const float *b, int d) {
    float s = 0;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* Softmax of query i over keys [0, i] into p (i + 1 values). */
static void s_softmax_row(const vidi_sparse_qk *qk, int64_t i, float scale, float *p) {
    float mx = -INFINITY;
    for (int64_t j = 0; j <= i; j++) {
        p[j] = s_dot(s_q(qk, i), s_k(qk, j), qk->head_dim) * scale;
        if (p[j] > mx) mx = p[j];
    }
    double sum = 0;
    for (int64_t j = 0; j <= i; j++) sum += (p[j] = expf(p[j] - mx));
    for (int64_t j = 0; j <= i; j++) p[j] = (float)(p[j] / sum);
}

static vidi_status s_qk_check(const vidi_sparse_qk *qk, vidi_err *err) {
    if (!qk || !qk->q || !qk->k || qk->head_dim < 1 || qk->n_kv_heads < 1 || qk->n_heads % qk->n_kv_heads ||
        qk->head < 0 || qk->head >= qk->n_heads)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse: q/k missing or heads %d/%d (head %d) inconsistent",
                            qk ? qk->n_heads : 0, qk ? qk->n_kv_heads : 0, qk ? qk->head : 0);
    return VIDI_OK;
}

/* Indices of the k largest of score[0, n) (forced ones first: force[i] != 0),
 * sorted ascending into out; returns how many. */
typedef struct scored {
    double score;
    int32_t i;
} scored;

static int cmp_scored(const void *a, const void *b) { /* score descending, then index ascending */
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Indices of the k largest of score[0, n) (forced ones first: force[i] != 0;
 * ties to the lower index), sorted ascending into out; returns how many.
 * O(n log n). */
static int64_t s_topk(const double *score, const unsigned char *force, int64_t n, int64_t k, int32_t *out) {
    int64_t m = 0, nf = 0;
    scored *c = malloc((size_t)(n > 0 ? n : 1) * sizeof *c);
    if (!c) return 0;
    for (int64_t i = 0; i < n && m < k; i++)
        if (force && force[i]) out[m++] = (int32_t)i;
    for (int64_t i = 0; i < n; i++)
        if (!(force && force[i])) c[nf++] = (scored){score[i], (int32_t)i};
    qsort(c, (size_t)nf, sizeof *c, cmp_scored);
    for (int64_t x = 0; x < nf && m < k; x++) out[m++] = c[x].i;
    free(c);
    qsort(out, (size_t)m, sizeof *out, cmp_i32);
    return m;
}

vidi_status vidi_sparse_last_mass(const vidi_sparse_qk *qk, int64_t n, int64_t r0, int64_t r1, float scale,
                                  float *col, float *diag, vidi_err *err) {
    vidi_status rc = s_qk_check(qk, err);
    if (rc) return rc;
    if (r0 < 0 || r1 > n || r0 >= r1) return vidi_err_set(err, VIDI_ERR_INVALID, "mass: rows [%lld, %lld) of %lld",
                                                           (long long)r0, (long long)r1, (long long)n);
    float *p = malloc((size_t)n * sizeof *p);
    if (!p) return vidi_err_set(err, VIDI_ERR_NOMEM, "mass: out of memory");
    memset(col, 0, (size_t)n * sizeof *col);
    if (diag) memset(diag, 0, (size_t)n * sizeof *diag);
    for (int64_t i = r0; i < r1; i++) {
        s_softmax_row(qk, i, scale, p);
        for (int64_t j = 0; j <= i; j++) {
            col[j] += p[j];
            if (diag) diag[i - j] += p[j];
        }
    }
    free(p);
    return VIDI_OK;
}

/* The mass of the rows an estimator wants: given (m, checked to be those
 * rows), or computed here from q and k into owned buffers. */
static vidi_status s_mass(const vidi_sparse_qk *qk, const vidi_sparse_mass *m, int64_t n, int64_t r0, int64_t r1,
                          int want_diag, const float **col, const float **diag, float **owned, vidi_err *err) {
    *owned = NULL;
    if (m) {
        if (m->r0 != r0 || m->r1 != r1 || !m->col || (want_diag && !m->diag))
            return vidi_err_set(err, VIDI_ERR_INVALID, "estimate: mass of rows [%lld, %lld), wanted [%lld, %lld)%s",
                                (long long)m->r0, (long long)m->r1, (long long)r0, (long long)r1,
                                want_diag && !m->diag ? " with diagonals" : "");
        *col = m->col, *diag = m->diag;
        return VIDI_OK;
    }
    float *buf = malloc((size_t)n * (want_diag ? 2 : 1) * sizeof *buf);
    if (!buf) return vidi_err_set(err, VIDI_ERR_NOMEM, "estimate: out of memory");
    vidi_status rc = vidi_sparse_last_mass(qk, n, r0, r1, 1.0f / sqrtf((float)qk->head_dim), buf,
                                           want_diag ? buf + n : NULL, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *owned = buf, *col = buf, *diag = want_diag ? buf + n : NULL;
    return VIDI_OK;
}

vidi_status vidi_sparse_estimate_vslash(const vidi_sparse_qk *qk, int64_t n, int64_t last_q, int64_t sink,
                                        int64_t local, int64_t n_vertical, int64_t n_slash, int32_t *vert,
                                        int64_t *n_vert_out, int32_t *slash, int64_t *n_slash_out, vidi_err *err) {
    vidi_status rc = qk && qk->last_rows ? VIDI_OK : s_qk_check(qk, err);
    if (rc) return rc;
    if (n < 1 || last_q < 1) return vidi_err_set(err, VIDI_ERR_INVALID, "vslash: n %lld, last_q %lld", (long long)n,
                                                 (long long)last_q);
    if (last_q > n) last_q = n;
    const float *col = NULL, *dg = NULL;
    float *owned = NULL;
    double *vs = calloc((size_t)n, sizeof *vs), *ss = calloc((size_t)n, sizeof *ss);
    unsigned char *fv = calloc((size_t)n, 1), *fs = calloc((size_t)n, 1);
    if (!vs || !ss || !fv || !fs) {
        rc = vidi_err_set(err, VIDI_ERR_NOMEM, "vslash: out of memory");
        goto done;
    }
    rc = s_mass(qk, qk->last_rows, n, n - last_q, n, 1, &col, &dg, &owned, err);
    if (rc) goto done;
    for (int64_t j = 0; j < n; j++) vs[j] = col[j], ss[j] = dg[j];
    for (int64_t j = 0; j < n && j < sink; j++) fv[j] = 1;
    for (int64_t d = 0; d < n && d < local; d++) fs[d] = 1;
    int64_t kv = n_vertical > n ? n : n_vertical, ks = n_slash > n ? n : n_slash;
    if (kv < (sink < n ? sink : n)) kv = sink < n ? sink : n;
    if (ks < (local < n ? local : n)) ks = local < n ? local : n;
    *n_vert_out = s_topk(vs, fv, n, kv, vert);
    *n_slash_out = s_topk(ss, fs, n, ks, slash);
done:
    free(owned);
    free(vs);
    free(ss);
    free(fv);
    free(fs);
    return rc;
}

vidi_status vidi_sparse_estimate_grid(const vidi_sparse_qk *qk, const vidi_span *span, int64_t last_q,
                                      const int64_t *cands, int n_cands, int64_t *stride, int64_t *phase,
                                      double *score, vidi_err *err) {
    vidi_status rc = qk && qk->span_rows ? VIDI_OK : s_qk_check(qk, err);
    if (rc) return rc;
    int64_t len = span->end - span->start;
    if (len < 2 || last_q < 1 || n_cands < 1)
        return vidi_err_set(err, VIDI_ERR_INVALID, "grid estimate: a span of %lld tokens, last_q %lld, %d candidates",
                            (long long)len, (long long)last_q, n_cands);
    if (last_q > len) last_q = len;
    const float *col = NULL, *dg = NULL;
    float *owned = NULL;
    rc = s_mass(qk, qk->span_rows, span->end, span->end - last_q, span->end, 0, &col, &dg, &owned, err);
    if (rc) return rc;
    double total = 0;
    for (int64_t j = span->start; j < span->end; j++) total += col[j];
    *stride = 0, *phase = 0, *score = 0;
    for (int c = 0; c < n_cands; c++) {
        int64_t s = cands[c];
        if (s < 2 || s > len / 2) continue;
        for (int64_t ph = 0; ph < s; ph++) {
            double m = 0;
            for (int64_t j = span->start + ph; j < span->end; j += s) m += col[j];
            double e = total > 0 ? m * (double)s / total : 0;
            if (e > *score) *score = e, *stride = s, *phase = ph;
        }
    }
    free(owned);
    return VIDI_OK;
}

/* ---------------------------------------------------------------- building */

/* Rows [a, e) that are not grid lines (skip_s > 0: skip (i - base) % skip_s
 * == skip_p) in tiles, each with the pattern's keys. */
static void s_tiles_dense(builder *b, const int32_t *rows, int64_t nr) {
    for (int64_t r0 = 0; r0 < nr; r0 += VIDI_SPARSE_TILE) {
        int64_t k = nr - r0 < VIDI_SPARSE_TILE ? nr - r0 : VIDI_SPARSE_TILE, mx = 0;
        b_begin(b);
        for (int64_t r = 0; r < k; r++) {
            b_row(b, rows[r0 + r]);
            if (rows[r0 + r] > mx) mx = rows[r0 + r];
        }
        b_seg(b, 0, mx + 1);
        b_end(b);
    }
}

typedef struct vs_est {
    int32_t *vert, *slash;
    int64_t n_vert, n_slash;
} vs_est;

typedef struct block_est {
    const vidi_sparse_qk *qk;
    int64_t topk;
} block_est;

/* Contiguous rows [a, e) under a sparse pattern (ASHAPE, VSLASH, BLOCK, or
 * GRID's non-line rows), skipping the rows for which skip() holds. */
static void s_tiles_sparse(builder *b, const vidi_sparse_head *hd, int64_t a, int64_t e, int64_t sink,
                           const vs_est *vs, const block_est *bk, const vidi_span *grid_span) {
    int64_t i = a;
    while (i < e) {
        b_begin(b);
        int64_t rmin = -1, rmax = -1, k = 0;
        for (; i < e && k < VIDI_SPARSE_TILE; i++) {
            if (grid_span && hd->h && (i - grid_span->start) % hd->stride == hd->phase) continue;
            b_row(b, i);
            if (rmin < 0) rmin = i;
            rmax = i;
            k++;
        }
        if (!k) {
            b_end(b);
            continue;
        }
        b_seg(b, 0, sink);
        b_seg(b, rmin - hd->local + 1, rmax + 1);
        if (vs) {
            for (int64_t s = 0; s < vs->n_slash; s++) b_seg(b, rmin - vs->slash[s], rmax - vs->slash[s] + 1);
            for (int64_t c = 0; c < vs->n_vert && vs->vert[c] <= rmax; c++) b_col(b, vs->vert[c]);
        }
        if (bk) { /* pooled q of these rows against pooled k of each 64-key block */
            const vidi_sparse_qk *qk = bk->qk;
            int d = qk->head_dim;
            float qm[512];
            memset(qm, 0, sizeof qm);
            for (int64_t r = rmin; r <= rmax; r++)
                for (int x = 0; x < d && x < 512; x++) qm[x] += s_q(qk, r)[x];
            int64_t nb = rmax / VIDI_SPARSE_TILE + 1;
            double *sc = malloc((size_t)nb * sizeof *sc);
            int32_t *pick = malloc((size_t)nb * sizeof *pick);
            unsigned char *force = calloc((size_t)nb, 1);
            if (sc && pick && force) {
                for (int64_t kb = 0; kb < nb; kb++) {
                    double s = 0;
                    int64_t j1 = (kb + 1) * VIDI_SPARSE_TILE > rmax + 1 ? rmax + 1 : (kb + 1) * VIDI_SPARSE_TILE;
                    for (int64_t j = kb * VIDI_SPARSE_TILE; j < j1; j++) s += s_dot(qm, s_k(qk, j), d);
                    sc[kb] = s / (double)(j1 - kb * VIDI_SPARSE_TILE);
                }
                force[0] = force[nb - 1] = 1;
                int64_t m = s_topk(sc, force, nb, bk->topk < nb ? bk->topk : nb, pick);
                for (int64_t x = 0; x < m; x++) b_seg(b, (int64_t)pick[x] * VIDI_SPARSE_TILE, (int64_t)(pick[x] + 1) * VIDI_SPARSE_TILE);
            } else {
                b->failed = 1;
            }
            free(sc);
            free(pick);
            free(force);
        }
        if (grid_span && hd->v) /* the vertical lines: one strided segment */
            b_sseg(b, grid_span->start + hd->phase, rmax + 1 < grid_span->end ? rmax + 1 : grid_span->end, hd->stride);
        b_end(b);
    }
}

/* Text rows [a, e) of a 2D-boundary grid head: every text key before them
 * (T->T), the sink, the local window, and the vertical lines of each video
 * span (T->V). */
static void s_tiles_text2d(builder *b, const vidi_sparse_head *hd, int64_t a, int64_t e, const vidi_span *spans,
                           int n_spans) {
    for (int64_t r0 = a; r0 < e; r0 += VIDI_SPARSE_TILE) {
        int64_t r1 = r0 + VIDI_SPARSE_TILE < e ? r0 + VIDI_SPARSE_TILE : e;
        b_begin(b);
        for (int64_t i = r0; i < r1; i++) b_row(b, i);
        b_seg(b, 0, hd->sink);
        b_seg(b, r0 - hd->local + 1, r1);
        for (int s = 0; s < n_spans; s++) {
            const vidi_span *sp = &spans[s];
            if (sp->start >= r1) break;
            int64_t end = sp->end < r1 ? sp->end : r1;
            if (sp->kind == VIDI_SPAN_TEXT) b_seg(b, sp->start, end);
            else if (sp->kind == VIDI_SPAN_VIDEO && hd->v) b_sseg(b, sp->start + hd->phase % hd->stride, end, hd->stride);
            else b_seg(b, sp->start, end); /* an image: T->I stays dense */
        }
        b_end(b);
    }
}

vidi_status vidi_sparse_plan_build(const vidi_sparse_head *hd, const vidi_span *spans, int n_spans, int64_t n,
                                   const vidi_sparse_qk *qk, vidi_sparse_plan *out, vidi_err *err) {
    memset(out, 0, sizeof *out);
    out->n_tokens = n;
    if (n < 1 || n > INT32_MAX) return vidi_err_set(err, VIDI_ERR_INVALID, "sparse plan: %lld tokens", (long long)n);
    if (hd->kind == VIDI_SPARSE_GRID && (hd->stride < 1 || hd->phase < 0 || hd->phase >= hd->stride))
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse plan: grid stride %lld phase %lld", (long long)hd->stride,
                            (long long)hd->phase);
    if (hd->kind == VIDI_SPARSE_BLOCK && s_qk_check(qk, err) != VIDI_OK) return err->status;
    if (hd->kind == VIDI_SPARSE_VSLASH && !(qk && qk->last_rows) && s_qk_check(qk, err) != VIDI_OK) return err->status;
    if (hd->kind == VIDI_SPARSE_BLOCK && qk->head_dim > 512)
        return vidi_err_set(err, VIDI_ERR_INVALID, "sparse plan: block pooling takes head_dim <= 512, not %d", qk->head_dim);
    builder b = {out, n, 0};
    vs_est vs = {0};
    vidi_status rc = VIDI_OK;
    if (hd->kind == VIDI_SPARSE_VSLASH) {
        vs.vert = malloc((size_t)n * sizeof *vs.vert);
        vs.slash = malloc((size_t)n * sizeof *vs.slash);
        if (!vs.vert || !vs.slash) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse plan: out of memory");
        if (rc == VIDI_OK)
            rc = vidi_sparse_estimate_vslash(qk, n, hd->last_q ? hd->last_q : 64, hd->sink, hd->local, hd->n_vertical,
                                             hd->n_slash, vs.vert, &vs.n_vert, vs.slash, &vs.n_slash, err);
    }
    block_est bk = {qk, hd->n_vertical ? hd->n_vertical : 8};
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    if (!rows && rc == VIDI_OK) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse plan: out of memory");
    /* the spans in order; text and dense rows as dense tiles (Q-boundary: no tile mixes spans) */
    vidi_span whole = {0, n, VIDI_SPAN_VIDEO, 0, 0};
    int ns = n_spans > 0 ? n_spans : 1;
    for (int s = 0; s < ns && rc == VIDI_OK && !b.failed; s++) {
        const vidi_span *sp = n_spans > 0 ? &spans[s] : &whole;
        int64_t a = sp->start, e = sp->end < n ? sp->end : n;
        if (a >= e) continue;
        int vision = sp->kind != VIDI_SPAN_TEXT;
        int64_t nr = 0;
        if (!vision && hd->kind == VIDI_SPARSE_GRID && hd->boundary2d && n_spans > 0) {
            int after_video = 0; /* text after a video span: T->V is sparse */
            for (int s2 = 0; s2 < s; s2++) after_video |= spans[s2].kind == VIDI_SPAN_VIDEO;
            if (after_video) {
                s_tiles_text2d(&b, hd, a, e, spans, n_spans);
                continue;
            }
        }
        if (hd->kind == VIDI_SPARSE_DENSE || !vision) {
            for (int64_t i = a; i < e; i++) rows[nr++] = (int32_t)i;
            s_tiles_dense(&b, rows, nr);
            continue;
        }
        int64_t sink = hd->sink;
        switch (hd->kind) {
        case VIDI_SPARSE_ASHAPE:
        case VIDI_SPARSE_TRISHAPE: {
            int64_t dense_from = hd->kind == VIDI_SPARSE_TRISHAPE ? n - hd->last : e;
            if (dense_from < a) dense_from = a;
            if (dense_from > e) dense_from = e;
            s_tiles_sparse(&b, hd, a, dense_from, sink, NULL, NULL, NULL);
            for (int64_t i = dense_from; i < e; i++) rows[nr++] = (int32_t)i;
            s_tiles_dense(&b, rows, nr);
            break;
        }
        case VIDI_SPARSE_VSLASH: s_tiles_sparse(&b, hd, a, e, sink, &vs, NULL, NULL); break;
        case VIDI_SPARSE_BLOCK: s_tiles_sparse(&b, hd, a, e, sink, NULL, &bk, NULL); break;
        case VIDI_SPARSE_GRID:
            if (sp->kind != VIDI_SPAN_VIDEO || e - a < 2 * hd->stride) { /* no grid here: sink + local */
                s_tiles_sparse(&b, hd, a, e, sink > a ? sink : a, NULL, NULL, NULL);
                break;
            }
            /* the horizontal lines, grouped (the permutation): every key */
            if (hd->h) {
                for (int64_t i = a + hd->phase; i < e; i += hd->stride) rows[nr++] = (int32_t)i;
                s_tiles_dense(&b, rows, nr);
            }
            /* the other rows: the prefix as sink, the local window, the vertical lines */
            s_tiles_sparse(&b, hd, a, e, sink > a ? sink : a, NULL, NULL, sp);
            break;
        default: rc = vidi_err_set(err, VIDI_ERR_INVALID, "sparse plan: unknown pattern %d", (int)hd->kind);
        }
    }
    if (rc == VIDI_OK && b.failed) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse plan: out of memory");
    if (rc == VIDI_OK) rc = vidi_sparse_plan_check(out, err);
    free(rows);
    free(vs.vert);
    free(vs.slash);
    if (rc != VIDI_OK) vidi_sparse_plan_free(out);
    return rc;
}

/* ---------------------------------------------------------------- kernels */

static const float *s_v(const vidi_sparse_qk *qk, const float *v, int64_t j) {
    int kvh = qk->head / (qk->n_heads / qk->n_kv_heads);
    return v + ((size_t)j * (size_t)qk->n_kv_heads + (size_t)kvh) * (size_t)qk->head_dim;
}

static float *s_out(const vidi_sparse_qk *qk, float *out, int64_t i) {
    return out + ((size_t)i * (size_t)qk->n_heads + (size_t)qk->head) * (size_t)qk->head_dim;
}

/* Row i's softmax over its keys (nk of them, in keys) chunk by chunk of
 * VIDI_SPARSE_TILE: the chunk's scores, one rescale of (l, acc) to the new
 * maximum, then its probabilities times V. f32 throughout; acc[d] gets the
 * unnormalised output, the return value its normaliser (0: no key). */
static float s_row_attend(const vidi_sparse_qk *qk, const float *v, const float *q, const int32_t *keys, int64_t nk,
                          float scale, float *acc) {
    int d = qk->head_dim;
    float m = -INFINITY, l = 0, sc[VIDI_SPARSE_TILE];
    memset(acc, 0, (size_t)d * sizeof *acc);
    for (int64_t k0 = 0; k0 < nk; k0 += VIDI_SPARSE_TILE) {
        int64_t kn = nk - k0 < VIDI_SPARSE_TILE ? nk - k0 : VIDI_SPARSE_TILE;
        float cm = -INFINITY;
        for (int64_t k = 0; k < kn; k++) {
            sc[k] = s_dot(q, s_k(qk, keys[k0 + k]), d) * scale;
            if (sc[k] > cm) cm = sc[k];
        }
        float mn = m > cm ? m : cm;
        if (m != -INFINITY && mn != m) {
            float a = expf(m - mn);
            l *= a;
            for (int x = 0; x < d; x++) acc[x] *= a;
        }
        for (int64_t k = 0; k < kn; k++) {
            float pk = expf(sc[k] - mn);
            const float *vk = s_v(qk, v, keys[k0 + k]);
            l += pk;
            for (int x = 0; x < d; x++) acc[x] += pk * vk[x];
        }
        m = mn;
    }
    return l;
}

vidi_status vidi_sparse_attend_plan(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v, float scale,
                                    float *out, vidi_err *err) {
    vidi_status rc = s_qk_check(qk, err);
    if (rc) return rc;
    int d = qk->head_dim;
    float *acc = malloc((size_t)d * sizeof *acc);
    int32_t *keys = malloc((size_t)(p->n_tokens > 0 ? p->n_tokens : 1) * sizeof *keys);
    if (!acc || !keys) {
        free(acc);
        free(keys);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "sparse attend: out of memory");
    }
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const vidi_sparse_tile *tl = &p->tiles[t];
        for (int64_t r = 0; r < tl->n_rows; r++) {
            int64_t i = p->rows[tl->row0 + r];
            float l = s_row_attend(qk, v, s_q(qk, i), keys, vidi_sparse_row_keys(p, tl, i, keys), scale, acc);
            float *o = s_out(qk, out, i);
            for (int x = 0; x < d; x++) o[x] = l > 0 ? acc[x] / l : 0.0f;
        }
    }
    free(acc);
    free(keys);
    return VIDI_OK;
}

/* The plan's mask row by row: mask[i * n + j] for j <= i. */
static unsigned char *s_mask(const vidi_sparse_plan *p) {
    int64_t n = p->n_tokens;
    unsigned char *mask = calloc((size_t)(n * n), 1);
    int32_t *keys = malloc((size_t)(n > 0 ? n : 1) * sizeof *keys);
    if (!mask || !keys) {
        free(mask);
        free(keys);
        return NULL;
    }
    for (int64_t t = 0; t < p->n_tiles; t++) {
        const vidi_sparse_tile *tl = &p->tiles[t];
        for (int64_t r = 0; r < tl->n_rows; r++) {
            int64_t i = p->rows[tl->row0 + r], nk = vidi_sparse_row_keys(p, tl, i, keys);
            for (int64_t k = 0; k < nk; k++) mask[i * n + keys[k]] = 1;
        }
    }
    free(keys);
    return mask;
}

vidi_status vidi_sparse_attend_masked(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v, float scale,
                                      float *out, vidi_err *err) {
    vidi_status rc = s_qk_check(qk, err);
    if (rc) return rc;
    int64_t n = p->n_tokens;
    int d = qk->head_dim;
    unsigned char *mask = n <= 16384 ? s_mask(p) : NULL;
    float *sc = malloc((size_t)n * sizeof *sc);
    if (!mask || !sc) {
        free(mask);
        free(sc);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "masked attention: out of memory (n %lld; at most 16384)", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; j++)
            if (mask[i * n + j]) {
                sc[j] = s_dot(s_q(qk, i), s_k(qk, j), d) * scale;
                if (sc[j] > mx) mx = sc[j];
            }
        double l = 0;
        float *o = s_out(qk, out, i);
        for (int x = 0; x < d; x++) o[x] = 0;
        if (mx == -INFINITY) continue; /* no key: zeros */
        for (int64_t j = 0; j <= i; j++)
            if (mask[i * n + j]) l += exp((double)sc[j] - mx);
        for (int64_t j = 0; j <= i; j++)
            if (mask[i * n + j]) {
                double w = exp((double)sc[j] - mx) / l;
                const float *vj = s_v(qk, v, j);
                for (int x = 0; x < d; x++) o[x] += (float)(w * vj[x]);
            }
    }
    free(mask);
    free(sc);
    return VIDI_OK;
}

vidi_status vidi_sparse_recall(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, float scale, double *recall,
                               vidi_err *err) {
    return vidi_sparse_error(p, qk, NULL, scale, recall, NULL, err);
}

vidi_status vidi_sparse_error(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v, float scale,
                              double *recall, double *rel_err, vidi_err *err) {
    vidi_status rc = s_qk_check(qk, err);
    if (rc) return rc;
    int64_t n = p->n_tokens;
    int d = qk->head_dim;
    int64_t *tile_of = malloc((size_t)n * sizeof *tile_of);
    int32_t *keys = malloc((size_t)n * sizeof *keys);
    float *pr = malloc((size_t)n * sizeof *pr);
    double *od = malloc((size_t)d * sizeof *od), *os = malloc((size_t)d * sizeof *os);
    if (!tile_of || !keys || !pr || !od || !os) {
        rc = vidi_err_set(err, VIDI_ERR_NOMEM, "sparse error: out of memory");
        goto done;
    }
    for (int64_t t = 0; t < p->n_tiles; t++)
        for (int64_t r = 0; r < p->tiles[t].n_rows; r++) tile_of[p->rows[p->tiles[t].row0 + r]] = t;
    double rsum = 0, esum = 0;
    for (int64_t i = 0; i < n; i++) {
        s_softmax_row(qk, i, scale, pr);
        int64_t nk = vidi_sparse_row_keys(p, &p->tiles[tile_of[i]], i, keys);
        double mass = 0;
        if (v) memset(os, 0, (size_t)d * sizeof *os);
        /* the plan's keys of row i: their mass, and (v) the renormalised sparse output */
        for (int64_t k = 0; k < nk; k++) {
            mass += pr[keys[k]];
            if (v)
                for (int x = 0; x < d; x++) os[x] += pr[keys[k]] * s_v(qk, v, keys[k])[x];
        }
        rsum += mass;
        if (v) {
            memset(od, 0, (size_t)d * sizeof *od);
            for (int64_t j = 0; j <= i; j++)
                for (int x = 0; x < d; x++) od[x] += pr[j] * s_v(qk, v, j)[x];
            double num = 0, den = 0;
            for (int x = 0; x < d; x++) {
                double sx = mass > 0 ? os[x] / mass : 0.0;
                num += (sx - od[x]) * (sx - od[x]);
                den += od[x] * od[x];
            }
            esum += den > 0 ? sqrt(num / den) : sqrt(num);
        }
    }
    *recall = rsum / (double)n;
    if (rel_err) *rel_err = v ? esum / (double)n : 0.0;
done:
    free(tile_of);
    free(keys);
    free(pr);
    free(od);
    free(os);
    return rc;
}
