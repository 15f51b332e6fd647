/* model/vision.c — the Qwen2-VL and Qwen2.5-VL vision towers on the op
 * interface (see vision.h).
 *
 * One encode call runs every item through the tower at once: attention is
 * block-diagonal (cu_seqlens per temporal slice, or per window for the
 * Qwen2.5-VL window blocks), so items never see each other. The host only
 * builds small index tables — rotary positions, sequence offsets, the
 * window permutation — everything else is backend ops on backend memory.
 *
 * Row order. The processor lays patches out (t, h-block, w-block,
 * h-in-merge, w-in-merge), so every merge^2 consecutive rows are one merged
 * cell. Qwen2.5-VL permutes whole cells into window order before the blocks
 * (windows of window_size / merge / patch cells per side, padding cells
 * dropped) and restores the original order after the merger.
 */
#include "model/vision.h"

#include "model/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VISION_ROPE_THETA 10000.0
#define VISION_ALIGN 256

typedef struct vision_block {
    vidi_tensor norm1_w, norm1_b, norm2_w, norm2_b; /* *_b only for LayerNorm (2-VL) */
    vidi_tensor q_w, k_w, v_w, q_b, k_b, v_b;       /* row slices of attn.qkv */
    vidi_tensor proj_w, proj_b;
    vidi_tensor fc1_w, fc1_b, fc2_w, fc2_b;         /* 2-VL */
    vidi_tensor gate_w, gate_b, up_w, up_b, down_w, down_b; /* 2.5-VL */
    int full_attention;                             /* 2.5-VL: attends over whole slices */
} vision_block;

struct vidi_vision {
    vidi_backend *be;
    vidi_arch arch;
    vidi_vision_config cfg;
    int patch_dim;          /* in_channels * temporal_patch_size * patch_size^2 */

    vidi_tensor patch_w;    /* [hidden, patch_dim] */
    vision_block *blocks;   /* [depth] */
    vidi_tensor ln_q_w, ln_q_b, mlp0_w, mlp0_b, mlp2_w, mlp2_b;

    int32_t *rope_axis;     /* [head_dim / 2] host */
    float *rope_inv_freq;   /* [head_dim / 2] host */

    void **owned;           /* backend copies of the weights (non-CPU backends) */
    int n_owned, cap_owned;

    void *scratch;          /* activations, grown to the largest request */
    size_t scratch_bytes;
};

/* ---------------------------------------------------------------- weights */

static vidi_status vision_own(vidi_vision *v, void *p, vidi_err *err) {
    if (v->n_owned == v->cap_owned) {
        int cap = v->cap_owned ? v->cap_owned * 2 : 64;
        void **n = realloc(v->owned, (size_t)cap * sizeof *n);
        if (!n) return vidi_err_set(err, VIDI_ERR_NOMEM, "vision: out of host memory");
        v->owned = n;
        v->cap_owned = cap;
    }
    v->owned[v->n_owned++] = p;
    return VIDI_OK;
}

/* A checkpoint tensor as a view in backend memory. The CPU backend uses the
 * mapping directly (so the checkpoint must outlive the tower); others get a
 * copy in be->weight_dtype (bf16 on CUDA, whatever the checkpoint holds),
 * owned by the tower. */
static vidi_status vision_upload(vidi_vision *v, vidi_tensor *t, vidi_err *err) {
    vidi_backend *be = v->be;
    if (be->host_memory) return VIDI_OK;
    void *dev = NULL;
    vidi_status rc = vidi_weight_upload(be, t, &dev, err);
    if (rc != VIDI_OK) {
        vidi_err_prefix(err, "vision");
        return rc;
    }
    rc = vision_own(v, dev, err);
    if (rc != VIDI_OK) be->ops->buf_free(be, dev);
    return rc;
}

/* Bind visual.<name> with the expected shape (ndim 1 or 2). */
static vidi_status vision_bind_as(vidi_vision *v, const vidi_checkpoint *ck, int upload, vidi_tensor *out,
                                  int64_t n0, int64_t n1, vidi_err *err, const char *fmt, va_list ap)
    __attribute__((format(printf, 8, 0)));

/* Bind visual.<name> with the expected shape (ndim 1 or 2), uploaded or
 * (upload 0) as the checkpoint's view. */
static vidi_status vision_bind_as(vidi_vision *v, const vidi_checkpoint *ck, int upload, vidi_tensor *out,
                                  int64_t n0, int64_t n1, vidi_err *err, const char *fmt, va_list ap) {
    char name[256];
    int off = snprintf(name, sizeof name, "visual.");
    vsnprintf(name + off, sizeof name - (size_t)off, fmt, ap);
    int64_t shape[2] = {n0, n1};
    vidi_status rc = vidi_checkpoint_get(ck, name, n1 > 0 ? 2 : 1, shape, out, err);
    if (rc != VIDI_OK) return rc;
    return upload ? vision_upload(v, out, err) : VIDI_OK;
}

static vidi_status vision_bind(vidi_vision *v, const vidi_checkpoint *ck, vidi_tensor *out, int64_t n0,
                               int64_t n1, vidi_err *err, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static vidi_status vision_bind(vidi_vision *v, const vidi_checkpoint *ck, vidi_tensor *out, int64_t n0,
                               int64_t n1, vidi_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vidi_status rc = vision_bind_as(v, ck, 1, out, n0, n1, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* The checkpoint's view only (its slices are uploaded one by one). */
static vidi_status vision_bind_mapped(vidi_vision *v, const vidi_checkpoint *ck, vidi_tensor *out, int64_t n0,
                                      int64_t n1, vidi_err *err, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static vidi_status vision_bind_mapped(vidi_vision *v, const vidi_checkpoint *ck, vidi_tensor *out, int64_t n0,
                                      int64_t n1, vidi_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vidi_status rc = vision_bind_as(v, ck, 0, out, n0, n1, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* Rows [r0, r0 + n) of a 2-D weight or elements [r0, r0 + n) of a bias. */
static vidi_tensor vision_slice(const vidi_tensor *t, int64_t r0, int64_t n) {
    vidi_tensor s = *t;
    int64_t row = t->ndim == 2 ? t->shape[1] : 1;
    s.shape[0] = n;
    s.data = (char *)t->data + (size_t)(r0 * row) * vidi_dtype_size(t->dtype);
    return s;
}

static vidi_status vision_check_config(const vidi_model_config *mc, vidi_err *err) {
    const vidi_vision_config *c = &mc->vision;
    if (mc->arch != VIDI_ARCH_QWEN2_VL && mc->arch != VIDI_ARCH_QWEN2_5_VL)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "vision: unknown architecture %d", (int)mc->arch);
    if (c->depth <= 0 || c->hidden_size <= 0 || c->num_heads <= 0 || c->intermediate_size <= 0 ||
        c->in_channels <= 0 || c->patch_size <= 0 || c->spatial_merge_size <= 0 ||
        c->temporal_patch_size <= 0 || c->out_hidden_size <= 0)
        return vidi_err_set(err, VIDI_ERR_INVALID, "vision: vision_config has a non-positive size");
    if (c->head_dim * c->num_heads != c->hidden_size || c->head_dim % 4 != 0)
        return vidi_err_set(err, VIDI_ERR_INVALID,
                            "vision: head_dim %d x %d heads must equal hidden %d, head_dim a multiple of 4 "
                            "(2-D rotary)", c->head_dim, c->num_heads, c->hidden_size);
    if (mc->arch == VIDI_ARCH_QWEN2_5_VL) {
        if (c->window_size / c->spatial_merge_size / c->patch_size <= 0)
            return vidi_err_set(err, VIDI_ERR_INVALID,
                                "vision: window_size %d is smaller than one merged cell (%d px)",
                                c->window_size, c->spatial_merge_size * c->patch_size);
        for (int i = 0; i < c->n_fullatt; i++)
            if (c->fullatt_block_indexes[i] < 0 || c->fullatt_block_indexes[i] >= c->depth)
                return vidi_err_set(err, VIDI_ERR_INVALID, "vision: fullatt_block_indexes[%d] = %d outside 0..%d",
                                    i, c->fullatt_block_indexes[i], c->depth - 1);
    }
    return VIDI_OK;
}

static vidi_status vision_load_block(vidi_vision *v, const vidi_checkpoint *ck, int i, vidi_err *err) {
    const vidi_vision_config *c = &v->cfg;
    vision_block *b = &v->blocks[i];
    int64_t D = c->hidden_size, I = c->intermediate_size;
    vidi_tensor qkv_w, qkv_b;
    vidi_status rc;
    int layer_norm = v->arch == VIDI_ARCH_QWEN2_VL;

    VIDI_TRY(vision_bind(v, ck, &b->norm1_w, D, 0, err, "blocks.%d.norm1.weight", i));
    VIDI_TRY(vision_bind(v, ck, &b->norm2_w, D, 0, err, "blocks.%d.norm2.weight", i));
    if (layer_norm) {
        VIDI_TRY(vision_bind(v, ck, &b->norm1_b, D, 0, err, "blocks.%d.norm1.bias", i));
        VIDI_TRY(vision_bind(v, ck, &b->norm2_b, D, 0, err, "blocks.%d.norm2.bias", i));
    }
    /* q, k and v are row slices of the fused qkv; copies are made per slice
     * so each starts a fresh (aligned) backend buffer */
    VIDI_TRY(vision_bind_mapped(v, ck, &qkv_w, 3 * D, D, err, "blocks.%d.attn.qkv.weight", i));
    VIDI_TRY(vision_bind_mapped(v, ck, &qkv_b, 3 * D, 0, err, "blocks.%d.attn.qkv.bias", i));
    b->q_w = vision_slice(&qkv_w, 0, D);
    b->k_w = vision_slice(&qkv_w, D, D);
    b->v_w = vision_slice(&qkv_w, 2 * D, D);
    b->q_b = vision_slice(&qkv_b, 0, D);
    b->k_b = vision_slice(&qkv_b, D, D);
    b->v_b = vision_slice(&qkv_b, 2 * D, D);
    vidi_tensor *slices[6] = {&b->q_w, &b->k_w, &b->v_w, &b->q_b, &b->k_b, &b->v_b};
    for (int s = 0; s < 6; s++) VIDI_TRY(vision_upload(v, slices[s], err));
    VIDI_TRY(vision_bind(v, ck, &b->proj_w, D, D, err, "blocks.%d.attn.proj.weight", i));
    VIDI_TRY(vision_bind(v, ck, &b->proj_b, D, 0, err, "blocks.%d.attn.proj.bias", i));
    if (v->arch == VIDI_ARCH_QWEN2_VL) {
        VIDI_TRY(vision_bind(v, ck, &b->fc1_w, I, D, err, "blocks.%d.mlp.fc1.weight", i));
        VIDI_TRY(vision_bind(v, ck, &b->fc1_b, I, 0, err, "blocks.%d.mlp.fc1.bias", i));
        VIDI_TRY(vision_bind(v, ck, &b->fc2_w, D, I, err, "blocks.%d.mlp.fc2.weight", i));
        VIDI_TRY(vision_bind(v, ck, &b->fc2_b, D, 0, err, "blocks.%d.mlp.fc2.bias", i));
    } else {
        VIDI_TRY(vision_bind(v, ck, &b->gate_w, I, D, err, "blocks.%d.mlp.gate_proj.weight", i));
        VIDI_TRY(vision_bind(v, ck, &b->gate_b, I, 0, err, "blocks.%d.mlp.gate_proj.bias", i));
        VIDI_TRY(vision_bind(v, ck, &b->up_w, I, D, err, "blocks.%d.mlp.up_proj.weight", i));
        VIDI_TRY(vision_bind(v, ck, &b->up_b, I, 0, err, "blocks.%d.mlp.up_proj.bias", i));
        VIDI_TRY(vision_bind(v, ck, &b->down_w, D, I, err, "blocks.%d.mlp.down_proj.weight", i));
        VIDI_TRY(vision_bind(v, ck, &b->down_b, D, 0, err, "blocks.%d.mlp.down_proj.bias", i));
        for (int j = 0; j < c->n_fullatt; j++)
            if (c->fullatt_block_indexes[j] == i) b->full_attention = 1;
    }
    return VIDI_OK;
fail:
    return rc;
}

/* The Conv3d patch embedding [D, C, tp, p, p] read as a matmul weight
 * [D, C*tp*p*p]: the processor's row layout is (C, t, row, col), the
 * kernel's flattening order, and the stride equals the kernel. The view
 * holds at most VIDI_MAX_DIMS dims, so only its element count is checked
 * here; the checkpoint compares the full 5-D shape. */
static vidi_status vision_load_patch_embed(vidi_vision *v, const vidi_checkpoint *ck, vidi_err *err) {
    const vidi_vision_config *c = &v->cfg;
    const char *name = "visual.patch_embed.proj.weight";
    int64_t want[5] = {c->hidden_size, c->in_channels, c->temporal_patch_size, c->patch_size, c->patch_size};
    vidi_tensor w;
    vidi_status rc = vidi_checkpoint_get(ck, name, 5, want, &w, err);
    if (rc != VIDI_OK) return rc;
    if (vidi_tensor_numel(&w) != (int64_t)c->hidden_size * v->patch_dim)
        return vidi_err_set(err, VIDI_ERR_INTERNAL, "vision: %s: the view holds %lld elements, expected %lld",
                            name, (long long)vidi_tensor_numel(&w), (long long)c->hidden_size * v->patch_dim);
    v->patch_w = vidi_tensor_2d(w.dtype, w.data, c->hidden_size, v->patch_dim);
    return vision_upload(v, &v->patch_w, err);
}

vidi_status vidi_vision_load(const vidi_model_config *cfg, const vidi_checkpoint *ck, vidi_backend *be,
                             vidi_vision **out, vidi_err *err) {
    vidi_status rc;
    vidi_vision *v = NULL;
    *out = NULL;
    VIDI_TRY(vision_check_config(cfg, err));
    v = calloc(1, sizeof *v);
    VIDI_CHECK(v, err, VIDI_ERR_NOMEM, "vision: out of host memory");
    v->be = be;
    v->arch = cfg->arch;
    v->cfg = cfg->vision;
    const vidi_vision_config *c = &v->cfg;
    v->patch_dim = c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size;

    /* 2-D rotary: the first half of the pairs rotate by the row, the second
     * by the column, each with inv_freq[j] = theta^(-2j / (head_dim/2)),
     * computed in fp32 as the reference does */
    int half = c->head_dim / 2, quarter = c->head_dim / 4;
    v->rope_axis = malloc((size_t)half * sizeof *v->rope_axis);
    v->rope_inv_freq = malloc((size_t)half * sizeof *v->rope_inv_freq);
    VIDI_CHECK(v->rope_axis && v->rope_inv_freq, err, VIDI_ERR_NOMEM, "vision: out of host memory");
    for (int j = 0; j < quarter; j++) {
        float e = (float)(2 * j) / (float)half;
        float f = 1.0f / (float)pow(VISION_ROPE_THETA, (double)e);
        v->rope_axis[j] = 0;
        v->rope_inv_freq[j] = f;
        v->rope_axis[quarter + j] = 1;
        v->rope_inv_freq[quarter + j] = f;
    }

    v->blocks = calloc((size_t)c->depth, sizeof *v->blocks);
    VIDI_CHECK(v->blocks, err, VIDI_ERR_NOMEM, "vision: out of host memory");
    VIDI_TRY(vision_load_patch_embed(v, ck, err));
    for (int i = 0; i < c->depth; i++) VIDI_TRY(vision_load_block(v, ck, i, err));

    int64_t D = c->hidden_size, Dm = D * c->spatial_merge_size * c->spatial_merge_size;
    VIDI_TRY(vision_bind(v, ck, &v->ln_q_w, D, 0, err, "merger.ln_q.weight"));
    if (v->arch == VIDI_ARCH_QWEN2_VL) VIDI_TRY(vision_bind(v, ck, &v->ln_q_b, D, 0, err, "merger.ln_q.bias"));
    VIDI_TRY(vision_bind(v, ck, &v->mlp0_w, Dm, Dm, err, "merger.mlp.0.weight"));
    VIDI_TRY(vision_bind(v, ck, &v->mlp0_b, Dm, 0, err, "merger.mlp.0.bias"));
    VIDI_TRY(vision_bind(v, ck, &v->mlp2_w, c->out_hidden_size, Dm, err, "merger.mlp.2.weight"));
    VIDI_TRY(vision_bind(v, ck, &v->mlp2_b, c->out_hidden_size, 0, err, "merger.mlp.2.bias"));
    *out = v;
    return VIDI_OK;
fail:
    vidi_vision_free(v);
    return rc;
}

void vidi_vision_free(vidi_vision *v) {
    if (!v) return;
    for (int i = 0; i < v->n_owned; i++) v->be->ops->buf_free(v->be, v->owned[i]);
    if (v->scratch) v->be->ops->buf_free(v->be, v->scratch);
    free(v->owned);
    free(v->blocks);
    free(v->rope_axis);
    free(v->rope_inv_freq);
    free(v);
}

int64_t vidi_vision_out_rows(const vidi_vision *v, const int32_t (*grids)[3], int n_items) {
    int64_t m2 = (int64_t)v->cfg.spatial_merge_size * v->cfg.spatial_merge_size, n = 0;
    for (int i = 0; i < n_items; i++) n += (int64_t)grids[i][0] * grids[i][1] * grids[i][2] / m2;
    return n;
}

/* ------------------------------------------------------------ index tables */

/* Host tables for one encode call. */
typedef struct vision_plan {
    int64_t n_rows, n_cells;  /* patches, merged cells */
    int32_t *pos;             /* [n_rows, 2] (row, col) in patches, in processing order */
    int32_t *cu_slices;       /* [n_slices + 1] one sequence per temporal slice */
    int n_slices;
    /* Qwen2.5-VL only */
    int32_t *window_cells;    /* [n_cells] processing position -> original cell */
    int32_t *row_ids;         /* [n_rows] processing row -> original row */
    int32_t *cell_inverse;    /* [n_cells] original cell -> processing position */
    int32_t *cu_windows;      /* [n_windows + 1] */
    int n_windows;
} vision_plan;

static void vision_plan_free(vision_plan *p) {
    free(p->pos);
    free(p->cu_slices);
    free(p->window_cells);
    free(p->row_ids);
    free(p->cell_inverse);
    free(p->cu_windows);
    memset(p, 0, sizeof *p);
}

/* Cell order of get_window_index: per item and temporal slice, windows of
 * win x win cells in row-major window order, cells row-major inside a
 * window, cells past the grid (the padding) left out; empty windows add no
 * sequence. */
static void vision_plan_windows(vision_plan *p, const vidi_vision_config *c, const int32_t (*grids)[3],
                                int n_items) {
    int m = c->spatial_merge_size, win = c->window_size / m / c->patch_size;
    int64_t n = 0, base = 0;
    p->n_windows = 0;
    p->cu_windows[0] = 0;
    for (int it = 0; it < n_items; it++) {
        int gt = grids[it][0], mh = grids[it][1] / m, mw = grids[it][2] / m;
        int nwh = (mh + win - 1) / win, nww = (mw + win - 1) / win;
        for (int t = 0; t < gt; t++) {
            int64_t slice = base + (int64_t)t * mh * mw;
            for (int wy = 0; wy < nwh; wy++)
                for (int wx = 0; wx < nww; wx++) {
                    int64_t start = n;
                    for (int y = wy * win; y < (wy + 1) * win && y < mh; y++)
                        for (int x = wx * win; x < (wx + 1) * win && x < mw; x++)
                            p->window_cells[n++] = (int32_t)(slice + (int64_t)y * mw + x);
                    if (n > start) p->cu_windows[++p->n_windows] = (int32_t)(n * m * m);
                }
        }
        base += (int64_t)gt * mh * mw;
    }
}

static vidi_status vision_plan_build(vision_plan *p, const vidi_vision *v, const int32_t (*grids)[3], int n_items,
                                     vidi_err *err) {
    const vidi_vision_config *c = &v->cfg;
    int m = c->spatial_merge_size, m2 = m * m;
    vidi_status rc;
    memset(p, 0, sizeof *p);
    int64_t n_rows = 0;
    int n_slices = 0;
    for (int i = 0; i < n_items; i++) {
        int64_t t = grids[i][0], h = grids[i][1], w = grids[i][2];
        VIDI_CHECK(t > 0 && h > 0 && w > 0 && h % m == 0 && w % m == 0, err, VIDI_ERR_INVALID,
                   "vision: item %d has grid (%lld, %lld, %lld); t, h, w must be positive and h, w multiples "
                   "of the merge size %d", i, (long long)t, (long long)h, (long long)w, m);
        n_rows += t * h * w;
        n_slices += (int)t;
    }
    VIDI_CHECK(n_rows <= INT32_MAX, err, VIDI_ERR_RANGE, "vision: %lld patches in one call exceed 2^31",
               (long long)n_rows);
    p->n_rows = n_rows;
    p->n_cells = n_rows / m2;
    p->n_slices = n_slices;
    p->pos = malloc((size_t)n_rows * 2 * sizeof *p->pos);
    p->cu_slices = malloc((size_t)(n_slices + 1) * sizeof *p->cu_slices);
    VIDI_CHECK(p->pos && p->cu_slices, err, VIDI_ERR_NOMEM, "vision: out of host memory");

    int k = 0;
    p->cu_slices[0] = 0;
    for (int i = 0; i < n_items; i++)
        for (int t = 0; t < grids[i][0]; t++, k++) p->cu_slices[k + 1] = p->cu_slices[k] + grids[i][1] * grids[i][2];

    /* the original cell of every processing position (identity for 2-VL) */
    int32_t *cells = NULL;
    if (v->arch == VIDI_ARCH_QWEN2_5_VL) {
        p->window_cells = malloc((size_t)p->n_cells * sizeof *p->window_cells);
        p->row_ids = malloc((size_t)n_rows * sizeof *p->row_ids);
        p->cell_inverse = malloc((size_t)p->n_cells * sizeof *p->cell_inverse);
        p->cu_windows = malloc((size_t)(p->n_cells + 1) * sizeof *p->cu_windows);
        VIDI_CHECK(p->window_cells && p->row_ids && p->cell_inverse && p->cu_windows, err, VIDI_ERR_NOMEM,
                   "vision: out of host memory");
        vision_plan_windows(p, c, grids, n_items);
        for (int64_t j = 0; j < p->n_cells; j++) {
            p->cell_inverse[p->window_cells[j]] = (int32_t)j;
            for (int r = 0; r < m2; r++) p->row_ids[j * m2 + r] = (int32_t)(p->window_cells[j] * m2 + r);
        }
        cells = p->window_cells;
    }

    /* (row, col) of each patch: the cell at processing position j is
     * original cell u = cells[j]; cell s of a slice with mw cells per row
     * sits at cell row s / mw, column s % mw, and its m x m patches follow
     * row-major. The original cells are walked item by item. */
    int32_t *cell_yx = malloc((size_t)p->n_cells * 2 * sizeof *cell_yx);
    VIDI_CHECK(cell_yx, err, VIDI_ERR_NOMEM, "vision: out of host memory");
    int64_t u = 0;
    for (int i = 0; i < n_items; i++) {
        int64_t mh = grids[i][1] / m, mw = grids[i][2] / m;
        for (int64_t t = 0; t < grids[i][0]; t++)
            for (int64_t s = 0; s < mh * mw; s++, u++) {
                cell_yx[u * 2 + 0] = (int32_t)(s / mw);
                cell_yx[u * 2 + 1] = (int32_t)(s % mw);
            }
    }
    for (int64_t j = 0; j < p->n_cells; j++) {
        int64_t cu = cells ? cells[j] : j;
        for (int r = 0; r < m2; r++) {
            p->pos[(j * m2 + r) * 2 + 0] = cell_yx[cu * 2 + 0] * m + r / m;
            p->pos[(j * m2 + r) * 2 + 1] = cell_yx[cu * 2 + 1] * m + r % m;
        }
    }
    free(cell_yx);
    return VIDI_OK;
fail:
    vision_plan_free(p);
    return rc;
}

/* ---------------------------------------------------------------- forward */

/* Activation buffers of one call, carved from v->scratch. */
typedef struct vision_bufs {
    void *x, *h, *q, *k, *v;  /* [T, D] each: residual, normed, q/k/v */
    void *mlp;                /* [T, I] (x2 for SwiGLU), also the pixel copy */
    void *merged;             /* [T/m^2, out] before the inverse window order (2.5-VL) */
    int32_t *pos;             /* [T, 2] */
    int32_t *row_ids;         /* [T] (2.5-VL) */
    int32_t *cell_inverse;    /* [T/m^2] (2.5-VL) */
} vision_bufs;

static size_t vision_round(size_t n) { return (n + VISION_ALIGN - 1) / VISION_ALIGN * VISION_ALIGN; }

/* Lay out (and with `base` non-NULL, place) the buffers; returns the bytes
 * needed. */
static size_t vision_layout(const vidi_vision *v, const vision_plan *p, int copy_pixels, char *base,
                            vision_bufs *b) {
    const vidi_vision_config *c = &v->cfg;
    size_t es = vidi_dtype_size(v->be->act_dtype), T = (size_t)p->n_rows, Tm = (size_t)p->n_cells;
    size_t D = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    int swiglu = v->arch == VIDI_ARCH_QWEN2_5_VL;
    size_t mlp = T * I * es * (swiglu ? 2 : 1);
    if (copy_pixels && T * (size_t)v->patch_dim * es > mlp) mlp = T * (size_t)v->patch_dim * es;
    size_t sizes[9] = {T * D * es, T * D * es, T * D * es, T * D * es, T * D * es, mlp,
                       swiglu ? Tm * (size_t)c->out_hidden_size * es : 0, T * 2 * sizeof(int32_t),
                       swiglu ? (T + Tm) * sizeof(int32_t) : 0};
    void **dst[7] = {&b->x, &b->h, &b->q, &b->k, &b->v, &b->mlp, &b->merged};
    size_t off = 0;
    for (int i = 0; i < 9; i++) {
        if (base && i < 7) *dst[i] = base + off;
        if (base && i == 7) b->pos = (int32_t *)(base + off);
        if (base && i == 8) {
            b->row_ids = (int32_t *)(base + off);
            b->cell_inverse = b->row_ids + T;
        }
        off += vision_round(sizes[i]);
    }
    return off;
}

static vidi_status vision_reserve(vidi_vision *v, size_t bytes, vidi_err *err) {
    if (bytes <= v->scratch_bytes) return VIDI_OK;
    vidi_backend *be = v->be;
    if (v->scratch) be->ops->buf_free(be, v->scratch);
    v->scratch_bytes = 0;
    v->scratch = be->ops->buf_alloc(be, bytes);
    if (!v->scratch)
        return vidi_err_set(err, VIDI_ERR_NOMEM, "vision: backend %s: cannot allocate %zu bytes of activations",
                            be->name, bytes);
    v->scratch_bytes = bytes;
    return VIDI_OK;
}

/* One block: x += proj(attn(norm1 x)); x += mlp(norm2 x). */
static vidi_status vision_block_forward(vidi_vision *v, const vision_block *blk, const vision_plan *p,
                                        const vision_bufs *b, vidi_err *err) {
    vidi_backend *be = v->be;
    const vidi_backend_ops *ops = be->ops;
    const vidi_vision_config *c = &v->cfg;
    vidi_dtype dt = be->act_dtype;
    int64_t T = p->n_rows, D = c->hidden_size, I = c->intermediate_size, H = c->num_heads, hd = c->head_dim;
    vidi_tensor x = vidi_tensor_2d(dt, b->x, T, D), h = vidi_tensor_2d(dt, b->h, T, D);
    vidi_tensor q = vidi_tensor_3d(dt, b->q, T, H, hd), k = vidi_tensor_3d(dt, b->k, T, H, hd);
    vidi_tensor val = vidi_tensor_3d(dt, b->v, T, H, hd), out = vidi_tensor_3d(dt, b->h, T, H, hd);
    vidi_tensor pos = vidi_tensor_2d(VIDI_DTYPE_I32, b->pos, T, 2);
    vidi_tensor y = vidi_tensor_2d(dt, b->q, T, D);
    vidi_rope_spec rope = {.head_dim = (int)hd, .n_axes = 2, .pair_axis = v->rope_axis,
                           .pair_inv_freq = v->rope_inv_freq};
    int windowed = v->arch == VIDI_ARCH_QWEN2_5_VL && !blk->full_attention;
    vidi_attn_args attn = {.cu_q = windowed ? p->cu_windows : p->cu_slices,
                           .cu_k = windowed ? p->cu_windows : p->cu_slices,
                           .n_seqs = windowed ? p->n_windows : p->n_slices,
                           .causal = 0,
                           .scale = 1.0f / sqrtf((float)hd)};
    int layer_norm = v->arch == VIDI_ARCH_QWEN2_VL;
    vidi_status rc;

    if (layer_norm) VIDI_TRY(ops->layer_norm(be, &x, &blk->norm1_w, &blk->norm1_b, c->norm_eps, &h, err));
    else VIDI_TRY(ops->rms_norm(be, &x, &blk->norm1_w, c->norm_eps, &h, err));
    vidi_tensor q2 = vidi_tensor_2d(dt, b->q, T, D), k2 = vidi_tensor_2d(dt, b->k, T, D);
    vidi_tensor v2 = vidi_tensor_2d(dt, b->v, T, D);
    VIDI_TRY(ops->matmul(be, &h, &blk->q_w, &blk->q_b, &q2, err));
    VIDI_TRY(ops->matmul(be, &h, &blk->k_w, &blk->k_b, &k2, err));
    VIDI_TRY(ops->matmul(be, &h, &blk->v_w, &blk->v_b, &v2, err));
    VIDI_TRY(ops->rope(be, &q, &pos, &rope, err));
    VIDI_TRY(ops->rope(be, &k, &pos, &rope, err));
    VIDI_TRY(ops->attention(be, &q, &k, &val, &out, &attn, err));
    VIDI_TRY(vidi_matmul_residual(be, &h, &blk->proj_w, &blk->proj_b, &x, &y, err));

    if (layer_norm) VIDI_TRY(ops->layer_norm(be, &x, &blk->norm2_w, &blk->norm2_b, c->norm_eps, &h, err));
    else VIDI_TRY(ops->rms_norm(be, &x, &blk->norm2_w, c->norm_eps, &h, err));
    vidi_tensor m1 = vidi_tensor_2d(dt, b->mlp, T, I);
    if (v->arch == VIDI_ARCH_QWEN2_VL) {
        VIDI_TRY(ops->matmul(be, &h, &blk->fc1_w, &blk->fc1_b, &m1, err));
        VIDI_TRY(ops->act(be, c->hidden_act, &m1, &m1, err));
        VIDI_TRY(vidi_matmul_residual(be, &m1, &blk->fc2_w, &blk->fc2_b, &x, &y, err));
    } else {
        vidi_tensor m2 = vidi_tensor_2d(dt, (char *)b->mlp + (size_t)(T * I) * vidi_dtype_size(dt), T, I);
        VIDI_TRY(ops->matmul(be, &h, &blk->gate_w, &blk->gate_b, &m1, err));
        VIDI_TRY(ops->matmul(be, &h, &blk->up_w, &blk->up_b, &m2, err));
        VIDI_TRY(ops->act_mul(be, c->hidden_act, &m1, &m2, &m1, err));
        VIDI_TRY(vidi_matmul_residual(be, &m1, &blk->down_w, &blk->down_b, &x, &y, err));
    }
    return VIDI_OK;
fail:
    return rc;
}

/* The patch embedding into b->x (processing order). The CPU backend with
 * f32 activations reads the caller's pixels in place; otherwise they are
 * converted to the activation dtype and copied into b->mlp. */
static vidi_status vision_embed(vidi_vision *v, const float *pixels, const vision_plan *p, const vision_bufs *b,
                                int copy_pixels, vidi_err *err) {
    vidi_backend *be = v->be;
    vidi_dtype dt = be->act_dtype;
    int64_t T = p->n_rows, D = v->cfg.hidden_size;
    size_t n = (size_t)T * (size_t)v->patch_dim;
    vidi_status rc;
    vidi_tensor px = vidi_tensor_2d(VIDI_DTYPE_F32, (void *)pixels, T, v->patch_dim);
    if (copy_pixels) {
        /* converted on the host when the activations are not f32; waits */
        VIDI_TRY(vidi_upload_f32(be, b->mlp, pixels, n, err));
        px = vidi_tensor_2d(dt, b->mlp, T, v->patch_dim);
    }
    if (v->arch == VIDI_ARCH_QWEN2_5_VL) {
        /* embed in the original order, then move whole cells into window order */
        vidi_tensor e = vidi_tensor_2d(dt, b->h, T, D), x = vidi_tensor_2d(dt, b->x, T, D);
        vidi_tensor ids = vidi_tensor_1d(VIDI_DTYPE_I32, b->row_ids, T);
        VIDI_TRY(be->ops->matmul(be, &px, &v->patch_w, NULL, &e, err));
        VIDI_TRY(be->ops->gather_rows(be, &e, &ids, &x, err));
    } else {
        vidi_tensor x = vidi_tensor_2d(dt, b->x, T, D);
        VIDI_TRY(be->ops->matmul(be, &px, &v->patch_w, NULL, &x, err));
    }
    return VIDI_OK;
fail:
    return rc;
}

/* ln_q, then per merged cell (m^2 consecutive rows read as one row of
 * D*m^2) Linear -> GELU -> Linear into `out`, restoring the original cell
 * order for Qwen2.5-VL. */
static vidi_status vision_merge(vidi_vision *v, const vision_plan *p, const vision_bufs *b, vidi_tensor *out,
                                vidi_err *err) {
    vidi_backend *be = v->be;
    const vidi_backend_ops *ops = be->ops;
    const vidi_vision_config *c = &v->cfg;
    vidi_dtype dt = be->act_dtype;
    int64_t T = p->n_rows, Tm = p->n_cells, D = c->hidden_size;
    int64_t Dm = D * c->spatial_merge_size * c->spatial_merge_size;
    vidi_tensor x = vidi_tensor_2d(dt, b->x, T, D), h = vidi_tensor_2d(dt, b->h, T, D);
    vidi_tensor hm = vidi_tensor_2d(dt, b->h, Tm, Dm), y = vidi_tensor_2d(dt, b->q, Tm, Dm);
    vidi_status rc;
    if (v->arch == VIDI_ARCH_QWEN2_VL) VIDI_TRY(ops->layer_norm(be, &x, &v->ln_q_w, &v->ln_q_b, c->norm_eps, &h, err));
    else VIDI_TRY(ops->rms_norm(be, &x, &v->ln_q_w, c->norm_eps, &h, err));
    VIDI_TRY(ops->matmul(be, &hm, &v->mlp0_w, &v->mlp0_b, &y, err));
    VIDI_TRY(ops->act(be, VIDI_ACT_GELU_ERF, &y, &y, err));
    if (v->arch == VIDI_ARCH_QWEN2_VL) {
        VIDI_TRY(ops->matmul(be, &y, &v->mlp2_w, &v->mlp2_b, out, err));
    } else {
        vidi_tensor merged = vidi_tensor_2d(dt, b->merged, Tm, c->out_hidden_size);
        vidi_tensor inv = vidi_tensor_1d(VIDI_DTYPE_I32, b->cell_inverse, Tm);
        VIDI_TRY(ops->matmul(be, &y, &v->mlp2_w, &v->mlp2_b, &merged, err));
        VIDI_TRY(ops->gather_rows(be, &merged, &inv, out, err));
    }
    return VIDI_OK;
fail:
    return rc;
}

vidi_status vidi_vision_encode(vidi_vision *v, const float *pixels, int64_t n_rows, const int32_t (*grids)[3],
                               int n_items, vidi_tensor *out, vidi_err *err) {
    vidi_backend *be = v->be;
    const vidi_vision_config *c = &v->cfg;
    vision_plan p;
    vision_bufs b;
    vidi_status rc;
    memset(&p, 0, sizeof p);
    memset(&b, 0, sizeof b);
    VIDI_CHECK(n_items > 0 && pixels && grids && out, err, VIDI_ERR_INVALID,
               "vision: encode needs pixels, grids and an output for at least one item");
    VIDI_TRY(vision_plan_build(&p, v, grids, n_items, err));
    VIDI_CHECK(p.n_rows == n_rows, err, VIDI_ERR_INVALID,
               "vision: the grids cover %lld patches but %lld pixel rows were given", (long long)p.n_rows,
               (long long)n_rows);
    VIDI_CHECK(out->dtype == be->act_dtype && vidi_tensor_rows(out) == p.n_cells &&
                   vidi_tensor_cols(out) == c->out_hidden_size,
               err, VIDI_ERR_INVALID, "vision: output is %s [%lld, %lld], expected %s [%lld, %d]",
               vidi_dtype_name(out->dtype), (long long)vidi_tensor_rows(out), (long long)vidi_tensor_cols(out),
               vidi_dtype_name(be->act_dtype), (long long)p.n_cells, c->out_hidden_size);

    int copy_pixels = !(be->host_memory && be->act_dtype == VIDI_DTYPE_F32);
    VIDI_TRY(vision_reserve(v, vision_layout(v, &p, copy_pixels, NULL, &b), err));
    vision_layout(v, &p, copy_pixels, v->scratch, &b);
    VIDI_TRY(be->ops->copy_to_device(be, b.pos, p.pos, (size_t)p.n_rows * 2 * sizeof(int32_t), err));
    if (v->arch == VIDI_ARCH_QWEN2_5_VL) {
        VIDI_TRY(be->ops->copy_to_device(be, b.row_ids, p.row_ids, (size_t)p.n_rows * sizeof(int32_t), err));
        VIDI_TRY(be->ops->copy_to_device(be, b.cell_inverse, p.cell_inverse, (size_t)p.n_cells * sizeof(int32_t),
                                         err));
    }

    VIDI_TRY(vision_embed(v, pixels, &p, &b, copy_pixels, err));
    for (int i = 0; i < c->depth; i++) {
        rc = vision_block_forward(v, &v->blocks[i], &p, &b, err);
        if (rc != VIDI_OK) {
            vidi_err_prefix(err, "vision block %d", i);
            goto fail;
        }
    }
    rc = vision_merge(v, &p, &b, out, err);
    if (rc != VIDI_OK) {
        vidi_err_prefix(err, "vision merger");
        goto fail;
    }
    /* the host tables must outlive any queued op that reads them */
    VIDI_TRY(be->ops->synchronize(be, err));
    vision_plan_free(&p);
    return VIDI_OK;
fail:
    if (p.pos) {
        vidi_err e2;
        be->ops->synchronize(be, &e2);
    }
    vision_plan_free(&p);
    return rc;
}
