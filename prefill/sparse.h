/* prefill/sparse.h — modality-aware permutation sparse attention for
 * prefill (MMInference's patterns; ../shared/reference/mminference.md):
 * the patterns, the plan they compile to, online estimation, and the CPU
 * reference kernels.
 *
 * A plan is what a kernel computes, for one head of one sequence of N
 * tokens: a list of row tiles. A tile holds up to VIDI_SPARSE_TILE rows (any
 * token positions, in any order: a permutation groups a grid head's rows
 * of one phase together) and a key set shared by its rows, given as
 * segments (keys a, a + step, ... below e: step 1 is a contiguous range, a
 * larger step a grid head's vertical lines, which is the permutation of the
 * keys: a kernel gathers them into dense tiles) and gathered single columns. Row i of a tile attends to
 * the keys j of the set with j <= i (causal). Every row is in exactly one
 * tile. A row whose key set is empty gets zeros. So "the mask" of a plan is
 * exact by construction: vidi_sparse_attend_plan (tile loop, online
 * softmax) and vidi_sparse_attend_masked (dense softmax under the plan's
 * element mask) compute the same thing, and the CUDA kernel is checked
 * against them.
 *
 * Patterns (vidi_sparse_head) over the spans of a prompt:
 *  - DENSE: every key.
 *  - ASHAPE: sink columns [0, sink) and the local window of `local` keys.
 *  - TRISHAPE: ASHAPE, and the last `last` rows dense.
 *  - VSLASH: vertical columns and slash diagonals (MInference), estimated
 *    from the last queries (vidi_sparse_estimate_vslash); slashes become
 *    bands of tile width, verticals gathered columns; sink and local forced.
 *  - BLOCK: per row tile the top-k key blocks by pooled q·k, the diagonal
 *    block and sink forced.
 *  - GRID: in a video span, stride s and phase p: rows of the phase (the
 *    horizontal lines, `h`) attend to every key; other rows attend to the
 *    sink, their local window and the columns of the phase in the span
 *    (the vertical lines, `v`). Rows are permuted by phase.
 * Modality boundaries: rows are tiled per span (Q-boundary: a tile never
 * mixes text and vision rows); text rows are dense; the head's pattern
 * applies to the rows of its span kind. 2D-boundary (GRID, boundary2d):
 * keys are split by modality too, a pattern per quadrant: vision rows as
 * above (V->V the grid, V->T the sink and local window); text rows T->T
 * dense (every text key before them) and T->V only the grid's vertical
 * lines of each video span and the local window, where Q-boundary gives
 * text rows every key.
 *
 * Host f32, one sequence: q [N, Hq, D], k and v [N, Hkv, D], out [N, Hq, D]
 * (GQA: query head h reads kv head h / (Hq / Hkv)).
 */
#ifndef VIDI_PREFILL_SPARSE_H
#define VIDI_PREFILL_SPARSE_H

#include <stdint.h>

#include "core/err.h"

#define VIDI_SPARSE_TILE 64

/* ---- spans ---- */

typedef enum vidi_span_kind { VIDI_SPAN_TEXT = 0, VIDI_SPAN_IMAGE = 1, VIDI_SPAN_VIDEO = 2 } vidi_span_kind;

typedef struct vidi_span {
    int64_t start, end;          /* tokens [start, end) */
    vidi_span_kind kind;
    int64_t frame_tokens;        /* vision: tokens per temporal step (merged h * w) */
    int64_t row_tokens;          /* vision: tokens per row of merged patches (merged w) */
} vidi_span;

/* The spans of a prompt: runs of image pads, runs of video pads, and the
 * text between them. grids: the vision items' (t, h, w) in prompt order
 * (patch grid, before the 2x2 merge), used for frame and row sizes; a run
 * of pads must hold t * h * w / merge^2 tokens. Writes at most cap spans. */
vidi_status vidi_sparse_spans(const int32_t *ids, int64_t n, int32_t image_pad, int32_t video_pad,
                              const int32_t (*grids)[3], int n_grids, int merge, vidi_span *out, int cap, int *n_out,
                              vidi_err *err);

/* The longest video span (the first of equal ones), NULL when there is
 * none: where a grid head's stride and phase come from. */
const vidi_span *vidi_sparse_video_span(const vidi_span *spans, int n_spans);

/* ---- patterns ---- */

typedef enum vidi_sparse_kind {
    VIDI_SPARSE_DENSE = 0,
    VIDI_SPARSE_ASHAPE = 1,
    VIDI_SPARSE_TRISHAPE = 2,
    VIDI_SPARSE_VSLASH = 3,
    VIDI_SPARSE_BLOCK = 4,
    VIDI_SPARSE_GRID = 5,
} vidi_sparse_kind;

const char *vidi_sparse_kind_name(vidi_sparse_kind k);

typedef struct vidi_sparse_head {
    vidi_sparse_kind kind;
    int64_t sink, local;         /* ASHAPE, TRISHAPE, VSLASH, GRID: sink columns, local window */
    int64_t last;                /* TRISHAPE: dense last rows */
    int64_t stride, phase;       /* GRID: phase in [0, stride), relative to the span's start */
    int h, v;                    /* GRID: horizontal lines (rows), vertical lines (columns) */
    int64_t n_vertical, n_slash; /* VSLASH: budgets; BLOCK: n_vertical = top-k blocks */
    int64_t last_q;              /* VSLASH, GRID estimation: queries used (64) */
    int boundary2d;              /* GRID: 2D-boundary (see above) instead of Q-boundary */
} vidi_sparse_head;

/* ---- plans ---- */

typedef struct vidi_sparse_tile {
    int64_t row0, n_rows;        /* rows[row0, row0 + n_rows) */
    int64_t seg0, n_segs;        /* segs[seg0, seg0 + n_segs): contiguous ones first (sorted, disjoint),
                                    then strided ones (disjoint from every other segment) */
    int64_t col0, n_cols;        /* cols[col0, col0 + n_cols): single keys */
} vidi_sparse_tile;

/* Keys a, a + step, a + 2 step, ... below e (step >= 1, a < e). */
typedef struct vidi_sparse_seg {
    int64_t a, e, step;
} vidi_sparse_seg;

/* How many keys of segment s are <= i. */
static inline int64_t vidi_sparse_seg_keys_upto(const vidi_sparse_seg *s, int64_t i) {
    int64_t e = s->e < i + 1 ? s->e : i + 1;
    return e > s->a ? (e - s->a + s->step - 1) / s->step : 0;
}

typedef struct vidi_sparse_plan {
    int64_t n_tokens;
    int32_t *rows;               /* a permutation of [0, n_tokens) */
    vidi_sparse_seg *segs;
    int32_t *cols;
    vidi_sparse_tile *tiles;
    int64_t n_rows, n_segs, n_cols, n_tiles;
    int64_t cap_rows, cap_segs, cap_cols, cap_tiles;
} vidi_sparse_plan;

void vidi_sparse_plan_free(vidi_sparse_plan *p);

/* Query-key pairs the plan computes (causal, deduplicated per row), and
 * the share of the dense causal triangle n (n + 1) / 2 they are. */
int64_t vidi_sparse_plan_pairs(const vidi_sparse_plan *p);
double vidi_sparse_plan_density(const vidi_sparse_plan *p);

/* Row i's keys in its tile tl (the segments' keys, then the columns, j <= i;
 * no key twice) into keys (room for i + 1); returns how many. */
int64_t vidi_sparse_row_keys(const vidi_sparse_plan *p, const vidi_sparse_tile *tl, int64_t i, int32_t *keys);

/* Checks that every row is in exactly one tile and every key in range. */
vidi_status vidi_sparse_plan_check(const vidi_sparse_plan *p, vidi_err *err);

/* The plan of one head. q and k (host f32, [n, Hq, D] / [n, Hkv, D]) are
 * read for the estimated patterns (VSLASH, BLOCK) of head `head`; NULL for
 * the others. */
/* The attention mass of some query rows [r0, r1) of one head (the softmax
 * of each row over its keys j <= i): col[j] sums p_ij over the rows,
 * diag[d] the p_ij with i - j = d (NULL where not needed); n entries each.
 * Computed on the host (vidi_sparse_last_mass) or by a backend's
 * sparse_mass op, and given to the estimators through vidi_sparse_qk. */
typedef struct vidi_sparse_mass {
    const float *col, *diag;
    int64_t r0, r1;
} vidi_sparse_mass;

typedef struct vidi_sparse_qk {
    const float *q, *k;
    int n_heads, n_kv_heads, head_dim, head;
    /* optional, for the estimators instead of q and k: the mass of the
     * prompt's last rows (VSLASH: col and diag) and of a video span's last
     * rows (GRID phase: col). Rows must be the ones the estimator would
     * use (last_q of them). */
    const vidi_sparse_mass *last_rows, *span_rows;
} vidi_sparse_qk;

vidi_status vidi_sparse_plan_build(const vidi_sparse_head *hd, const vidi_span *spans, int n_spans, int64_t n,
                                   const vidi_sparse_qk *qk, vidi_sparse_plan *out, vidi_err *err);

/* ---- packed plans (what the GPU kernel reads) ----
 *
 * The plans of several heads of one sequence as int32 arrays, the tiles
 * ordered by work (rows x keys, most first, so the longest tiles start
 * first): rows (every plan's rows, plan after plan), tiles [n_tiles][8]
 * (row0, n_rows, seg0, n_segs, col0, n_cols, head, keys: the tile's key
 * count), segs [n_segs][4] (a, e, step, keys of the tile's segments before
 * this one), cols [n_cols]. Row i of a tile attends to the tile's keys
 * j <= i. */
typedef struct vidi_sparse_packed {
    int32_t *rows, *tiles, *segs, *cols;
    int64_t n_rows, n_tiles, n_segs, n_cols;
    int64_t pairs_computed;      /* sum over tiles of rows x keys (what a kernel multiplies) */
} vidi_sparse_packed;

vidi_status vidi_sparse_pack(const vidi_sparse_plan *plans, const int *heads, int n_plans, vidi_sparse_packed *out,
                             vidi_err *err);
void vidi_sparse_packed_free(vidi_sparse_packed *p);

/* ---- estimation (from the last queries of a span) ---- */

/* The mass of rows [r0, r1) of head qk->head (softmax scale `scale`) into
 * col and diag (n entries each, zeroed first; diag may be NULL). The CPU
 * twin of ops sparse_mass. */
vidi_status vidi_sparse_last_mass(const vidi_sparse_qk *qk, int64_t n, int64_t r0, int64_t r1, float scale,
                                  float *col, float *diag, vidi_err *err);

/* Vertical columns and slash diagonals of a head (MInference 1.0): the last
 * `last_q` queries of [0, n) against every key, softmax with the causal
 * mask; the n_vertical columns and n_slash diagonals of the most mass (the
 * first `sink` columns and `local` diagonals forced in). Sorted ascending
 * into vert (n_vertical entries at most) and slash. */
vidi_status vidi_sparse_estimate_vslash(const vidi_sparse_qk *qk, int64_t n, int64_t last_q, int64_t sink,
                                        int64_t local, int64_t n_vertical, int64_t n_slash, int32_t *vert,
                                        int64_t *n_vert_out, int32_t *slash, int64_t *n_slash_out, vidi_err *err);

/* A grid head's stride and phase in a vision span, online: the last last_q
 * queries of the span attend (softmax over keys [0, q]) and each candidate
 * stride s (of `cands`) and phase p gets the attention mass of the span's
 * columns j with (j - span.start) % s == p; its enrichment is that mass
 * times s over the span's mass (1 for uniform attention). The best (s, p)
 * goes to *stride, *phase and its enrichment to *score. */
vidi_status vidi_sparse_estimate_grid(const vidi_sparse_qk *qk, const vidi_span *span, int64_t last_q,
                                      const int64_t *cands, int n_cands, int64_t *stride, int64_t *phase,
                                      double *score, vidi_err *err);

/* ---- kernels (host f32 references) ---- */

/* One head: the plan's tiles, online softmax in f32 (scale: q·k multiplier). */
vidi_status vidi_sparse_attend_plan(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v,
                                    float scale, float *out, vidi_err *err);
/* The same head dense, under the plan's element mask (the reference). */
vidi_status vidi_sparse_attend_masked(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v,
                                      float scale, float *out, vidi_err *err);

/* Attention recall of a plan for one head: the share of the dense causal
 * softmax's mass that falls on the plan's pairs, averaged over rows. */
vidi_status vidi_sparse_recall(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, float scale, double *recall,
                               vidi_err *err);
/* The same, and (v non-NULL) the relative output error ||o_plan - o_dense|| /
 * ||o_dense|| averaged over rows. Row by row in O(n) memory, so long
 * prompts fit (time O(n^2 d)). */
vidi_status vidi_sparse_error(const vidi_sparse_plan *p, const vidi_sparse_qk *qk, const float *v, float scale,
                              double *recall, double *rel_err, vidi_err *err);

#endif
