/* model/text_paged.c — the decoder over a paged KV pool (see text.h): many
 * sequences share one pool of fixed-size blocks, prompts are appended by
 * vidi_text_forward_paged and the running sequences step together through
 * vidi_text_decode_batch (continuous batching).
 *
 * Rows of a layer's K (or V) plane are numbered block * block_size + offset
 * ("slots"); token j of a sequence lives in slot
 * blocks[j / block_size] * block_size + j % block_size. New keys and values
 * are scattered to their slots; a prompt with nothing before it attends to
 * its own new rows, a chunk after a prefix gathers the sequence's slots into
 * contiguous scratch first, and a decode step reads the blocks in place
 * through attention_paged.
 */
#include "model/text.h"

#include "model/text_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct vidi_kv_seq {
    vidi_kv_pool *pool;
    int32_t *blocks;             /* block ids, n_blocks of them */
    int64_t n_blocks, cap;
    int64_t len;                 /* tokens held */
};

/* Step inputs in pool->dec, i32, max_batch of each. */
enum { PG_IDS = 0, PG_POS = 1, PG_SLOTS = 4, PG_LENS = 5, PG_INTS = 6 };

struct vidi_kv_pool {
    vidi_text *t;
    int block_size, max_batch, max_blocks;
    int64_t n_blocks, max_seq_len, rows;
    void *buf;                   /* layer l K at l*2*plane, V at (l*2+1)*plane */
    size_t plane;
    int32_t *free_list;          /* free block ids; the next one handed out is the last */
    int64_t n_free;
    /* decode steps */
    void *dec;                   /* backend: ints [PG_INTS * max_batch], table, activations */
    int32_t *d_ints, *d_table;
    text_act act;
    int32_t *h_ints, *h_table;   /* host staging of the same */
    int32_t *h_off;              /* [max_batch]: a row's token after its sequence's length */
    vidi_kv_seq **h_rows;        /* [max_batch]: a chained step's sequence of each row */
    void *chain;                 /* backend: chained steps' inputs and tokens (grown on use) */
    int32_t *h_chain;            /* host staging of the same */
    size_t chain_ints;
    int32_t *chain_tok;          /* the last chain's tokens in `chain` (vidi_text_chain_tokens) */
    text_graph *graphs;          /* [max_batch + 1], the recorded step of each batch size */
    struct chain_graph *cg;      /* [CHAIN_GRAPHS]: recorded chained steps (dec_chain_launch) */
    int n_cg;
};

/* A recorded chained step: its rows, inputs and argmax output. */
#define CHAIN_GRAPHS 256
typedef struct chain_graph {
    int B, last;
    const int32_t *ints, *ids;
    int32_t *out;
    text_graph g;
} chain_graph;

/* ---- pool ---- */

vidi_status vidi_kv_pool_create(vidi_text *t, const vidi_kv_pool_params *p, vidi_kv_pool **out,
                                vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_kv_pool *pool = NULL;
    *out = NULL;
    VIDI_CHECK(t && p, err, VIDI_ERR_INVALID, "kv pool: no model or no parameters");
    VIDI_CHECK(p->block_size > 0 && p->block_size <= 4096, err, VIDI_ERR_INVALID,
               "kv pool: block size %d must be in [1, 4096]", p->block_size);
    VIDI_CHECK(p->n_blocks > 0 && p->n_blocks <= INT32_MAX / p->block_size, err, VIDI_ERR_INVALID,
               "kv pool: %lld blocks of %d tokens: the count must be positive and the tokens below 2^31",
               (long long)p->n_blocks, p->block_size);
    VIDI_CHECK(p->max_seq_len > 0 && p->max_seq_len <= INT32_MAX, err, VIDI_ERR_INVALID,
               "kv pool: max_seq_len %lld must be in [1, 2^31)", (long long)p->max_seq_len);
    VIDI_CHECK(p->max_batch > 0 && p->max_batch <= 65536, err, VIDI_ERR_INVALID,
               "kv pool: max_batch %d must be in [1, 65536]", p->max_batch);

    const vidi_text_config *c = &t->cfg;
    vidi_backend *be = t->be;
    size_t es = vidi_dtype_size(be->act_dtype);
    pool = calloc(1, sizeof *pool);
    VIDI_CHECK(pool, err, VIDI_ERR_NOMEM, "kv pool: out of memory");
    pool->t = t;
    pool->block_size = p->block_size;
    pool->n_blocks = p->n_blocks;
    pool->max_seq_len = p->max_seq_len;
    pool->max_batch = p->max_batch;
    pool->max_blocks = (int)((p->max_seq_len + p->block_size - 1) / p->block_size);
    pool->rows = p->n_blocks * p->block_size;
    pool->plane = (size_t)pool->rows * (size_t)c->num_kv_heads * (size_t)c->head_dim * es;
    size_t bytes = pool->plane * 2 * (size_t)c->num_layers;
    pool->buf = be->ops->buf_alloc(be, bytes);
    VIDI_CHECK(pool->buf, err, VIDI_ERR_NOMEM, "kv pool: cannot allocate %zu bytes of %s memory for %lld "
               "blocks of %d tokens", bytes, be->name, (long long)p->n_blocks, p->block_size);

    pool->free_list = malloc((size_t)p->n_blocks * sizeof *pool->free_list);
    VIDI_CHECK(pool->free_list, err, VIDI_ERR_NOMEM, "kv pool: out of memory");
    for (int64_t i = 0; i < p->n_blocks; i++) pool->free_list[i] = (int32_t)(p->n_blocks - 1 - i);
    pool->n_free = p->n_blocks;

    /* Decode-step buffers for max_batch rows. */
    int64_t Bm = p->max_batch;
    size_t table_ints = (size_t)Bm * (size_t)pool->max_blocks;
    void *d_ints = NULL, *d_table = NULL;
    for (int pass = 0; pass < 2; pass++) {
        text_carver cv = {pass ? pool->dec : NULL, 0};
        d_ints = text_carve(&cv, (size_t)(PG_INTS * Bm) * sizeof(int32_t));
        d_table = text_carve(&cv, table_ints * sizeof(int32_t));
        text_carve_act(&cv, c, Bm, es, &pool->act);
        if (!pass) {
            pool->dec = be->ops->buf_alloc(be, cv.off);
            VIDI_CHECK(pool->dec, err, VIDI_ERR_NOMEM, "kv pool: cannot allocate %zu bytes of %s memory for "
                       "decode steps of %d sequences", cv.off, be->name, p->max_batch);
        }
    }
    pool->d_ints = d_ints;
    pool->d_table = d_table;
    pool->h_ints = calloc((size_t)(PG_INTS * Bm), sizeof(int32_t));
    pool->h_table = malloc(table_ints * sizeof(int32_t));
    pool->h_off = malloc((size_t)Bm * sizeof(int32_t));
    pool->h_rows = malloc((size_t)Bm * sizeof *pool->h_rows);
    pool->graphs = calloc((size_t)Bm + 1, sizeof *pool->graphs);
    pool->cg = calloc(CHAIN_GRAPHS, sizeof *pool->cg);
    VIDI_CHECK(pool->h_ints && pool->h_table && pool->h_off && pool->h_rows && pool->graphs && pool->cg, err,
               VIDI_ERR_NOMEM, "kv pool: out of memory");
    *out = pool;
    return VIDI_OK;
fail:
    vidi_kv_pool_free(pool);
    return rc;
}

void vidi_kv_pool_free(vidi_kv_pool *pool) {
    if (!pool) return;
    vidi_backend *be = pool->t->be;
    if (pool->graphs)
        for (int b = 0; b <= pool->max_batch; b++)
            text_graph_free(be, &pool->graphs[b]);
    if (pool->cg)
        for (int i = 0; i < pool->n_cg; i++) text_graph_free(be, &pool->cg[i].g);
    free(pool->cg);
    if (pool->dec) be->ops->buf_free(be, pool->dec);
    if (pool->chain) be->ops->buf_free(be, pool->chain);
    if (pool->buf) be->ops->buf_free(be, pool->buf);
    free(pool->free_list);
    free(pool->h_ints);
    free(pool->h_table);
    free(pool->h_off);
    free(pool->h_rows);
    free(pool->h_chain);
    free(pool->graphs);
    free(pool);
}

int64_t vidi_kv_pool_free_blocks(const vidi_kv_pool *pool) { return pool->n_free; }

int vidi_kv_pool_max_batch(const vidi_kv_pool *pool) { return pool->max_batch; }

int64_t vidi_kv_pool_blocks_for(const vidi_kv_pool *pool, int64_t tokens) {
    return tokens <= 0 ? 0 : (tokens + pool->block_size - 1) / pool->block_size;
}

/* ---- sequences ---- */

vidi_status vidi_kv_seq_create(vidi_kv_pool *pool, vidi_kv_seq **out, vidi_err *err) {
    *out = NULL;
    if (!pool) return vidi_err_set(err, VIDI_ERR_INVALID, "kv sequence: no pool");
    vidi_kv_seq *s = calloc(1, sizeof *s);
    if (!s) return vidi_err_set(err, VIDI_ERR_NOMEM, "kv sequence: out of memory");
    s->pool = pool;
    *out = s;
    return VIDI_OK;
}

/* Give back the blocks from index `keep` on. */
static void seq_release(vidi_kv_seq *s, int64_t keep) {
    vidi_kv_pool *pool = s->pool;
    while (s->n_blocks > keep) pool->free_list[pool->n_free++] = s->blocks[--s->n_blocks];
}

void vidi_kv_seq_free(vidi_kv_seq *s) {
    if (!s) return;
    seq_release(s, 0);
    free(s->blocks);
    free(s);
}

int64_t vidi_kv_seq_len(const vidi_kv_seq *s) { return s->len; }

vidi_status vidi_kv_seq_truncate(vidi_kv_seq *s, int64_t len, vidi_err *err) {
    if (!s || len < 0 || len > s->len)
        return vidi_err_set(err, VIDI_ERR_INVALID, "kv sequence: cannot truncate %lld tokens to %lld",
                            s ? (long long)s->len : 0LL, (long long)len);
    s->len = len;
    seq_release(s, vidi_kv_pool_blocks_for(s->pool, len));
    return VIDI_OK;
}

/* Make room for `tokens` tokens in all: take the blocks missing. */
static vidi_status seq_reserve(vidi_kv_seq *s, int64_t tokens, vidi_err *err) {
    vidi_kv_pool *pool = s->pool;
    if (tokens > pool->max_seq_len)
        return vidi_err_set(err, VIDI_ERR_RANGE, "kv sequence: %lld tokens pass the pool's max_seq_len %lld",
                            (long long)tokens, (long long)pool->max_seq_len);
    int64_t need = vidi_kv_pool_blocks_for(pool, tokens);
    if (need <= s->n_blocks) return VIDI_OK;
    if (need - s->n_blocks > pool->n_free)
        return vidi_err_set(err, VIDI_ERR_RANGE, "kv pool exhausted: %lld more blocks wanted, %lld free of %lld",
                            (long long)(need - s->n_blocks), (long long)pool->n_free,
                            (long long)pool->n_blocks);
    if (need > s->cap) {
        int64_t cap = s->cap ? s->cap : 8;
        while (cap < need) cap *= 2;
        if (cap > pool->max_blocks) cap = pool->max_blocks;
        int32_t *n = realloc(s->blocks, (size_t)cap * sizeof *n);
        if (!n) return vidi_err_set(err, VIDI_ERR_NOMEM, "kv sequence: out of memory");
        s->blocks = n;
        s->cap = cap;
    }
    while (s->n_blocks < need) s->blocks[s->n_blocks++] = pool->free_list[--pool->n_free];
    return VIDI_OK;
}

static int32_t seq_slot(const vidi_kv_seq *s, int64_t j) {
    int bs = s->pool->block_size;
    return s->blocks[j / bs] * bs + (int32_t)(j % bs);
}

/* ---- prompts ---- */

vidi_status vidi_text_forward_paged(vidi_text *t, vidi_kv_seq *s, const vidi_tensor *embeds,
                                    const int32_t *pos, const vidi_text_out *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int32_t *h_slots = NULL;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    size_t es = vidi_dtype_size(adt);
    int64_t H = c->hidden_size, D = c->head_dim, Hkv = c->num_kv_heads;
    int64_t T = embeds ? vidi_tensor_rows(embeds) : 0;

    VIDI_CHECK(s && s->pool->t == t, err, VIDI_ERR_INVALID, "the sequence's pool belongs to another model");
    VIDI_CHECK(T > 0 && embeds->dtype == adt && vidi_tensor_cols(embeds) == H && pos, err, VIDI_ERR_INVALID,
               "embeddings must be %s [T > 0, %lld]", vidi_dtype_name(adt), (long long)H);
    int64_t R = 0;
    VIDI_TRY(text_out_rows(t, out, T, &R, err));
    VIDI_TRY(seq_reserve(s, s->len + T, err));

    int64_t L0 = s->len, Lk = L0 + T;
    /* Host slots: the new tokens' [T], then (after a prefix) all Lk keys'. */
    h_slots = malloc((size_t)(T + (L0 ? Lk : 0)) * sizeof *h_slots);
    VIDI_CHECK(h_slots, err, VIDI_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < T; j++) h_slots[j] = seq_slot(s, L0 + j);
    if (L0)
        for (int64_t j = 0; j < Lk; j++) h_slots[T + j] = seq_slot(s, j);

    text_act act;
    void *dpos, *dslots, *dgather, *gk, *gv, *drows, *sel;
    size_t kv_rows = L0 ? (size_t)Lk : 1;
    for (int pass = 0; pass < 2; pass++) {
        text_carver cv = {pass ? t->scratch : NULL, 0};
        text_carve_act(&cv, c, T, es, &act);
        dpos = text_carve(&cv, (size_t)(T * 3) * sizeof(int32_t));
        dslots = text_carve(&cv, (size_t)T * sizeof(int32_t));
        dgather = text_carve(&cv, kv_rows * sizeof(int32_t));
        gk = text_carve(&cv, kv_rows * (size_t)(Hkv * D) * es);
        gv = text_carve(&cv, kv_rows * (size_t)(Hkv * D) * es);
        drows = text_carve(&cv, (size_t)(R ? R : 1) * sizeof(int32_t));
        sel = text_carve(&cv, (size_t)((R ? R : 1) * H) * es);
        if (!pass) VIDI_TRY(text_scratch(t, cv.off, err));
    }
    VIDI_TRY(op->copy(be, act.x, embeds->data, (size_t)(T * H) * es, err));
    VIDI_TRY(op->copy_to_device(be, dpos, pos, (size_t)(T * 3) * sizeof(int32_t), err));
    VIDI_TRY(op->copy_to_device(be, dslots, h_slots, (size_t)T * sizeof(int32_t), err));
    if (L0) VIDI_TRY(op->copy_to_device(be, dgather, h_slots + T, (size_t)Lk * sizeof(int32_t), err));

    vidi_tensor tpos = vidi_tensor_2d(VIDI_DTYPE_I32, dpos, T, 3);
    vidi_tensor tslots = vidi_tensor_1d(VIDI_DTYPE_I32, dslots, T);
    vidi_tensor tgather = vidi_tensor_1d(VIDI_DTYPE_I32, dgather, Lk);
    int32_t cu_q[2] = {0, (int32_t)T}, cu_k[2] = {0, (int32_t)Lk};
    vidi_attn_args attn = {.cu_q = cu_q, .cu_k = cu_k, .n_seqs = 1, .causal = 1,
                           .scale = 1.0f / sqrtf((float)D)};
    text_kv_io io = {.base = s->pool->buf, .plane = s->pool->plane, .rows = s->pool->rows, .at = &tslots,
                     .attn = &attn, .Lk = Lk, .keys_new = L0 == 0, .gather = L0 ? &tgather : NULL,
                     .gk = gk, .gv = gv};
    VIDI_TRY(text_layers(t, T, &act, &tpos, &io, err));
    VIDI_TRY(text_head(t, act.x, T, out, R, act.h, drows, sel, err));
    s->len = Lk;
    free(h_slots);
    return VIDI_OK;
fail:
    free(h_slots);
    vidi_err_prefix(err, "paged text forward (%lld tokens after %lld)", (long long)T,
                    s ? (long long)s->len : 0LL);
    return rc;
}

/* ---- decode steps ---- */

/* The step's ops for B sequences: positions, slots and lengths from `ints`
 * (laid out as pool->d_ints), token ids from `ids`, the block table from
 * pool->d_table. */
static vidi_status dec_body(vidi_text *t, vidi_kv_pool *pool, int B, const int32_t *ints, const int32_t *ids,
                            vidi_tensor *logits, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_text_config *c = &t->cfg;
    vidi_dtype adt = be->act_dtype;
    int Bm = pool->max_batch;
    vidi_tensor tid = vidi_tensor_1d(VIDI_DTYPE_I32, (void *)ids, B);
    vidi_tensor tpos = vidi_tensor_2d(VIDI_DTYPE_I32, (void *)(ints + PG_POS * Bm), B, 3);
    vidi_tensor tslots = vidi_tensor_1d(VIDI_DTYPE_I32, (void *)(ints + PG_SLOTS * Bm), B);
    vidi_tensor tlens = vidi_tensor_1d(VIDI_DTYPE_I32, (void *)(ints + PG_LENS * Bm), B);
    vidi_tensor ttable = vidi_tensor_2d(VIDI_DTYPE_I32, pool->d_table, B, pool->max_blocks);
    vidi_tensor tx = vidi_tensor_2d(adt, pool->act.x, B, c->hidden_size);
    vidi_tensor tn = vidi_tensor_2d(adt, pool->act.h, B, c->hidden_size);
    text_kv_io io = {.base = pool->buf, .plane = pool->plane, .rows = pool->rows, .at = &tslots,
                     .block_size = pool->block_size, .table = &ttable, .lens = &tlens,
                     .scale = 1.0f / sqrtf((float)c->head_dim)};
    VIDI_TRY(be->ops->gather_rows(be, &t->embed, &tid, &tx, err));
    VIDI_TRY(text_layers(t, B, &pool->act, &tpos, &io, err));
    VIDI_TRY(be->ops->rms_norm(be, &tx, &t->norm, c->rms_norm_eps, &tn, err));
    VIDI_TRY(be->ops->matmul(be, &tn, &t->lm_head, NULL, logits, err));
fail:
    return rc;
}

typedef struct dec_ctx {
    vidi_text *t;
    vidi_kv_pool *pool;
    int B;
    const int32_t *ints, *ids;
    vidi_tensor *logits;
    int32_t *argmax;             /* NULL, or the argmax of rows [last, B) goes here (a chained step) */
    int last;
} dec_ctx;

static vidi_status dec_run(void *ctx, vidi_err *err) {
    dec_ctx *c = ctx;
    vidi_status rc = dec_body(c->t, c->pool, c->B, c->ints, c->ids, c->logits, err);
    if (rc != VIDI_OK || !c->argmax) return rc;
    vidi_backend *be = c->t->be;
    const int64_t V = c->t->cfg.vocab_size;
    vidi_tensor lr = vidi_tensor_2d(be->act_dtype,
                                    (char *)c->logits->data + (size_t)c->last * (size_t)V * vidi_dtype_size(be->act_dtype),
                                    c->B - c->last, V);
    vidi_tensor tk = vidi_tensor_1d(VIDI_DTYPE_I32, c->argmax, c->B - c->last);
    return be->ops->argmax_rows(be, &lr, &tk, err);
}

/* The arguments both kinds of step share: the pool, B rows, the logits,
 * each row's sequence and token id; a sequence's rows consecutive (a
 * step's several tokens of it) or, without several, each at most once. */
static vidi_status dec_check(vidi_text *t, vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs, const int32_t *ids,
                             const int32_t *pos, const vidi_tensor *logits, int several, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    int64_t V = t->cfg.vocab_size;
    VIDI_CHECK(pool && pool->t == t, err, VIDI_ERR_INVALID, "the pool belongs to another model");
    VIDI_CHECK(B >= 1 && B <= pool->max_batch, err, VIDI_ERR_INVALID,
               "%d sequences: a step takes 1 to %d (the pool's max_batch)", B, pool->max_batch);
    VIDI_CHECK(seqs && ids && pos, err, VIDI_ERR_INVALID, "no sequences, ids or positions");
    VIDI_CHECK(logits && logits->dtype == be->act_dtype && vidi_tensor_rows(logits) == B &&
                   vidi_tensor_cols(logits) == V, err, VIDI_ERR_INVALID, "logits must be %s [%d, %lld]",
               vidi_dtype_name(be->act_dtype), B, (long long)V);
    for (int b = 0; b < B; b++) {
        VIDI_CHECK(seqs[b] && seqs[b]->pool == pool, err, VIDI_ERR_INVALID,
                   "row %d: its sequence is missing or belongs to another pool", b);
        VIDI_CHECK(ids[b] >= 0 && ids[b] < V, err, VIDI_ERR_INVALID,
                   "row %d: token id %d is outside the vocabulary [0, %lld)", b, ids[b], (long long)V);
        if (several == 2) continue; /* rows of a sequence in any order (vidi_text_decode_rows checks them) */
        if (several && b > 0 && seqs[b - 1] == seqs[b]) continue; /* the sequence's next token */
        for (int j = 0; j < b; j++)
            VIDI_CHECK(seqs[j] != seqs[b], err, VIDI_ERR_INVALID,
                       several ? "rows %d and %d: a sequence's rows must be consecutive"
                               : "rows %d and %d are the same sequence", j, b);
    }
fail:
    return rc;
}

/* Row b of a step's inputs (hi laid out as pool->d_ints): token id at
 * positions pos[0..2], sequence s's token len + off (its slot; it attends
 * up to it). */
static void dec_row(const vidi_kv_pool *pool, int32_t *hi, int b, const vidi_kv_seq *s, int64_t off, int32_t id,
                    const int32_t *pos) {
    int Bm = pool->max_batch;
    hi[PG_IDS * Bm + b] = id;
    for (int a = 0; a < 3; a++) hi[PG_POS * Bm + 3 * b + a] = pos[a];
    hi[PG_SLOTS * Bm + b] = seq_slot(s, s->len + off);
    hi[PG_LENS * Bm + b] = (int32_t)(s->len + off + 1); /* causal: up to its own token */
}

/* The block table of B rows, uploaded. */
static vidi_status dec_table(vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs, vidi_err *err) {
    vidi_backend *be = pool->t->be;
    int mb = pool->max_blocks;
    for (int b = 0; b < B; b++) {
        int32_t *row = pool->h_table + (size_t)b * mb;
        memcpy(row, seqs[b]->blocks, (size_t)seqs[b]->n_blocks * sizeof *row);
        for (int64_t j = seqs[b]->n_blocks; j < mb; j++) row[j] = -1;
    }
    return be->ops->copy_to_device(be, pool->d_table, pool->h_table, (size_t)B * mb * sizeof(int32_t), err);
}

/* One step of B rows from pool->d_ints: replayed as a graph where the
 * backend has them (and use_graph), else queued op by op. */
static vidi_status dec_launch(vidi_text *t, vidi_kv_pool *pool, int B, vidi_tensor *logits, int use_graph,
                              vidi_err *err) {
    const vidi_backend_ops *op = t->be->ops;
    const int32_t *ints = pool->d_ints, *ids = pool->d_ints + PG_IDS * pool->max_batch;
    if (!(use_graph && op->graph_begin && op->graph_end && op->graph_launch && op->graph_free))
        return dec_body(t, pool, B, ints, ids, logits, err);
    dec_ctx ctx = {t, pool, B, ints, ids, logits, NULL, 0};
    return text_graph_step(t->be, &pool->graphs[B], dec_run, &ctx, logits, err);
}

/* A chained step (vidi_text_decode_chain) of B rows reading `ints` and
 * `ids` in the chain's buffer, its argmax of rows [last, B) into `out`:
 * replayed as a graph recorded for these pointers and sizes (kept in
 * pool->cg; all dropped when the cache is full), else queued op by op. */
static vidi_status dec_chain_launch(vidi_text *t, vidi_kv_pool *pool, int B, const int32_t *ints, const int32_t *ids,
                                    vidi_tensor *logits, int32_t *out, int last, vidi_err *err) {
    const vidi_backend_ops *op = t->be->ops;
    dec_ctx ctx = {t, pool, B, ints, ids, logits, out, last};
    if (!(op->graph_begin && op->graph_end && op->graph_launch && op->graph_free)) return dec_run(&ctx, err);
    chain_graph *g = NULL;
    for (int i = 0; i < pool->n_cg && !g; i++) {
        chain_graph *c = &pool->cg[i];
        if (c->B == B && c->last == last && c->ints == ints && c->ids == ids && c->out == out) g = c;
    }
    if (!g) {
        if (pool->n_cg == CHAIN_GRAPHS) {
            for (int i = 0; i < pool->n_cg; i++) text_graph_free(t->be, &pool->cg[i].g);
            pool->n_cg = 0;
        }
        g = &pool->cg[pool->n_cg++];
        *g = (chain_graph){.B = B, .last = last, .ints = ints, .ids = ids, .out = out};
    }
    return text_graph_step(t->be, &g->g, dec_run, &ctx, logits, err);
}

vidi_status vidi_text_decode_batch(vidi_text *t, vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs,
                                   const int32_t *ids, const int32_t *pos, vidi_tensor *logits,
                                   int use_graph, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    VIDI_TRY(dec_check(t, pool, B, seqs, ids, pos, logits, 1, err));
    /* rows of one sequence: its tokens len, len + 1, ... (off[b] after len) */
    int32_t *off = pool->h_off;
    for (int b = 0; b < B; b++) off[b] = b > 0 && seqs[b - 1] == seqs[b] ? off[b - 1] + 1 : 0;
    for (int b = 0; b < B; b++) {
        if (b + 1 < B && seqs[b + 1] == seqs[b]) continue; /* reserved at the sequence's last row */
        rc = seq_reserve(seqs[b], seqs[b]->len + off[b] + 1, err);
        if (rc != VIDI_OK) {
            vidi_err_prefix(err, "row %d", b);
            goto fail;
        }
    }
    for (int b = 0; b < B; b++) dec_row(pool, pool->h_ints, b, seqs[b], off[b], ids[b], pos + 3 * b);
    VIDI_TRY(be->ops->copy_to_device(be, pool->d_ints, pool->h_ints, (size_t)(PG_INTS * pool->max_batch) *
                                                                         sizeof(int32_t), err));
    VIDI_TRY(dec_table(pool, B, seqs, err));
    VIDI_TRY(dec_launch(t, pool, B, logits, use_graph, err));
    for (int b = 0; b < B; b++) seqs[b]->len += 1;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "decode step of %d rows", B);
    return rc;
}

/* Whether chain row b has a lag token (vidi_text_decode_chain). */
static int has_lag(const int32_t *lag, int b) { return lag && lag[b] >= 0; }

vidi_status vidi_text_decode_chain(vidi_text *t, vidi_kv_pool *pool, int B, vidi_kv_seq *const *seqs,
                                   const int32_t *lag, const int32_t *lag_pos, const int *n_steps,
                                   const int32_t *ids, const int32_t *pos, vidi_tensor *logits, int32_t *tokens,
                                   vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    const int64_t V = t->cfg.vocab_size;
    VIDI_CHECK(op->argmax_rows, err, VIDI_ERR_UNSUPPORTED, "backend %s has no argmax_rows", be->name);
    VIDI_CHECK(logits && vidi_tensor_rows(logits) >= B, err, VIDI_ERR_INVALID, "no logits for %d rows", B);
    {
        vidi_tensor lb = vidi_tensor_2d(logits->dtype, logits->data, B, vidi_tensor_cols(logits));
        VIDI_TRY(dec_check(t, pool, B, seqs, ids, pos, &lb, 0, err));
    }
    VIDI_CHECK(n_steps, err, VIDI_ERR_INVALID, "no step counts");
    VIDI_CHECK(!lag || lag_pos, err, VIDI_ERR_INVALID, "lag tokens without their positions");
    const int n = n_steps[0];
    int n_lag = 0;
    for (int b = 0; b < B; b++) {
        VIDI_CHECK(n_steps[b] >= 1 && n_steps[b] <= 64 && (b == 0 || n_steps[b] <= n_steps[b - 1]), err,
                   VIDI_ERR_INVALID, "row %d: %d steps (1..64, not more than the row before)", b, n_steps[b]);
        if (has_lag(lag, b)) {
            VIDI_CHECK(lag[b] < V, err, VIDI_ERR_INVALID, "row %d: lag token %d is outside the vocabulary [0, %lld)",
                       b, lag[b], (long long)V);
            n_lag++;
        }
    }
    const int R0 = B + n_lag; /* step 0's rows: the lag tokens, then every row's ids[b] */
    VIDI_CHECK(R0 <= pool->max_batch && vidi_tensor_rows(logits) >= R0, err, VIDI_ERR_INVALID,
               "step 0 has %d rows (%d lag tokens): the pool takes %d, the logits %lld", R0, n_lag, pool->max_batch,
               (long long)vidi_tensor_rows(logits));
    for (int b = 0; b < B; b++) {
        rc = seq_reserve(seqs[b], seqs[b]->len + has_lag(lag, b) + n_steps[b], err);
        if (rc != VIDI_OK) {
            vidi_err_prefix(err, "row %d", b);
            goto fail;
        }
    }
    {
        /* every step's inputs, laid out as pool->d_ints, then the tokens [n, B]; host staging beside */
        int Bm = pool->max_batch;
        const size_t seg = (size_t)(PG_INTS * Bm), ints = (size_t)n * seg + (size_t)n * B;
        if (pool->chain_ints < ints) {
            if (pool->chain) op->buf_free(be, pool->chain);
            free(pool->h_chain);
            pool->chain_ints = 0;
            pool->chain = op->buf_alloc(be, ints * sizeof(int32_t));
            pool->h_chain = malloc(ints * sizeof(int32_t));
            VIDI_CHECK(pool->chain && pool->h_chain, err, VIDI_ERR_NOMEM, "out of memory for %d chained steps", n);
            pool->chain_ints = ints;
        }
        int32_t *h = pool->h_chain;
        memset(h, 0, (size_t)n * seg * sizeof *h);
        /* step 0: the lag rows first, so that rows n_lag.. are every sequence's last, in order; the
         * table is per row, so step 0 puts the lagging sequences' rows in front too */
        int r = 0;
        for (int b = 0; b < B; b++)
            if (has_lag(lag, b)) dec_row(pool, h, r++, seqs[b], 0, lag[b], lag_pos + 3 * b);
        for (int b = 0; b < B; b++) dec_row(pool, h, r++, seqs[b], has_lag(lag, b), ids[b], pos + 3 * b);
        for (int j = 1; j < n; j++)
            for (int b = 0; b < B && n_steps[b] > j; b++) /* ids after step 0: the step before's argmax */
                dec_row(pool, h + (size_t)j * seg, b, seqs[b], has_lag(lag, b) + j, 0,
                        pos + 3 * ((size_t)j * B + b));
        int32_t *d_seg = pool->chain, *d_tok = (int32_t *)pool->chain + (size_t)n * seg;
        VIDI_TRY(op->copy_to_device(be, d_seg, h, (size_t)n * seg * sizeof *h, err));
        for (int pass = 0; pass < 2; pass++) { /* the block tables: step 0's rows, then the later steps' */
            vidi_kv_seq **rows = pool->h_rows;
            int nr = 0;
            if (pass == 0)
                for (int b = 0; b < B; b++)
                    if (has_lag(lag, b)) rows[nr++] = seqs[b];
            for (int b = 0; b < B; b++) rows[nr++] = seqs[b];
            if (pass == 1 && n < 2) break;
            if (pass == 0 || n_lag) VIDI_TRY(dec_table(pool, nr, rows, err)); /* else step 0's is theirs */
            for (int j = pass; j < (pass ? n : 1); j++) {
                int Bj = pass ? 0 : R0;
                while (pass && Bj < B && n_steps[Bj] > j) Bj++;
                /* step j reads its segment, its ids (step 0: the segment's; later: the step before's
                 * argmax) and writes its argmax of the rows that go on (step 0: after the lag rows) */
                const int32_t *sj = d_seg + (size_t)j * seg;
                const int32_t *ids_j = j == 0 ? sj + PG_IDS * Bm : d_tok + (size_t)(j - 1) * B;
                vidi_tensor lg = vidi_tensor_2d(be->act_dtype, logits->data, Bj, V);
                VIDI_TRY(dec_chain_launch(t, pool, Bj, sj, ids_j, &lg, d_tok + (size_t)j * B, pass ? 0 : n_lag, err));
            }
        }
        pool->chain_tok = d_tok;
        if (tokens) VIDI_TRY(op->copy_to_host(be, tokens, d_tok, (size_t)n * B * sizeof(int32_t), err));
        for (int b = 0; b < B; b++) seqs[b]->len += has_lag(lag, b) + n_steps[b];
    }
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "chained decode steps of %d sequences", B);
    return rc;
}

const int32_t *vidi_text_chain_tokens(const vidi_kv_pool *pool) { return pool ? pool->chain_tok : NULL; }

vidi_status vidi_text_decode_rows(vidi_text *t, vidi_kv_pool *pool, int R, vidi_kv_seq *const *seqs,
                                  const int32_t *offs, const int32_t *ids, const int32_t *pos, const vidi_dev_ids *dev,
                                  int n_dev, vidi_tensor *logits, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = t->be;
    const int Bm = pool ? pool->max_batch : 0;
    VIDI_TRY(dec_check(t, pool, R, seqs, ids, pos, logits, 2, err));
    VIDI_CHECK(offs && (n_dev == 0 || dev), err, VIDI_ERR_INVALID, "no offsets or device ids");
    /* each sequence's rows: offsets 0 .. c - 1, each once (c its row count, kept in h_off at its
     * offset-0 row, which takes its blocks and later its length) */
    int32_t *count = pool->h_off;
    for (int r = 0; r < R; r++) {
        int c = 0, seen = 0;
        for (int q = 0; q < R; q++)
            if (seqs[q] == seqs[r]) c++, seen += offs[q] == offs[r];
        VIDI_CHECK(offs[r] >= 0 && offs[r] < c && seen == 1, err, VIDI_ERR_INVALID,
                   "row %d: offset %d of a sequence with %d rows (each of 0 .. %d once)", r, offs[r], c, c - 1);
        count[r] = c;
    }
    for (int r = 0; r < R; r++) {
        if (offs[r]) continue;
        rc = seq_reserve(seqs[r], seqs[r]->len + count[r], err);
        if (rc != VIDI_OK) {
            vidi_err_prefix(err, "row %d", r);
            goto fail;
        }
    }
    for (int i = 0; i < n_dev; i++)
        VIDI_CHECK(dev[i].src && dev[i].row >= 0 && dev[i].n >= 0 && dev[i].row + dev[i].n <= R, err,
                   VIDI_ERR_INVALID, "device ids %d: rows [%d, %d + %d) outside the step's %d", i, dev[i].row,
                   dev[i].row, dev[i].n, R);
    for (int r = 0; r < R; r++) dec_row(pool, pool->h_ints, r, seqs[r], offs[r], ids[r], pos + 3 * r);
    VIDI_TRY(be->ops->copy_to_device(be, pool->d_ints, pool->h_ints, (size_t)(PG_INTS * Bm) * sizeof(int32_t), err));
    for (int i = 0; i < n_dev; i++)
        if (dev[i].n) VIDI_TRY(be->ops->copy(be, pool->d_ints + PG_IDS * Bm + dev[i].row, dev[i].src,
                                             (size_t)dev[i].n * sizeof(int32_t), err));
    VIDI_TRY(dec_table(pool, R, seqs, err));
    VIDI_TRY(dec_launch(t, pool, R, logits, 1, err));
    for (int r = 0; r < R; r++)
        if (!offs[r]) seqs[r]->len += count[r];
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "decode step of %d rows", R);
    return rc;
}

/* ---- KV hand-off ---- */

vidi_dtype vidi_kv_pool_dtype(const vidi_kv_pool *pool) { return pool->t->be->act_dtype; }

void vidi_kv_pool_layout(const vidi_kv_pool *pool, int *layers, int *kv_heads, int *head_dim) {
    const vidi_text_config *c = &pool->t->cfg;
    if (layers) *layers = c->num_layers;
    if (kv_heads) *kv_heads = c->num_kv_heads;
    if (head_dim) *head_dim = c->head_dim;
}

/* Bytes of one token's K (or V) in one layer: a plane row. */
static size_t kv_row_bytes(const vidi_kv_pool *pool) {
    const vidi_text_config *c = &pool->t->cfg;
    return (size_t)c->num_kv_heads * (size_t)c->head_dim * vidi_dtype_size(pool->t->be->act_dtype);
}

size_t vidi_kv_seq_export_bytes(const vidi_kv_pool *pool, int64_t n) {
    if (!pool || n <= 0) return 0;
    return (size_t)n * 2 * (size_t)pool->t->cfg.num_layers * kv_row_bytes(pool);
}

/* Tokens [start, start + n) of s (n > 0, their blocks held) between the
 * pool's planes and a buffer in the hand-off layout: host memory, or
 * backend memory when `dev`. Plane p = 2l (K of layer l) or 2l + 1 (V) is
 * the layout's p-th piece of n rows: its rows are gathered by slot (into
 * scratch, then to the host; or straight into `out` on the device) for an
 * export, or brought into scratch from `in` and scattered to their slots
 * for an import. */
static vidi_status seq_transfer(const vidi_kv_seq *s, int64_t start, int64_t n, void *out, const void *in, int dev,
                                vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_kv_pool *pool = s->pool;
    vidi_text *t = pool->t;
    vidi_backend *be = t->be;
    const vidi_backend_ops *op = be->ops;
    vidi_dtype adt = be->act_dtype;
    int64_t cols = (int64_t)t->cfg.num_kv_heads * t->cfg.head_dim;
    size_t bytes = (size_t)n * kv_row_bytes(pool);
    int32_t *h_slots = malloc((size_t)n * sizeof *h_slots);
    VIDI_CHECK(h_slots, err, VIDI_ERR_NOMEM, "out of memory for %lld slots", (long long)n);
    for (int64_t j = 0; j < n; j++) h_slots[j] = seq_slot(s, start + j);

    void *dslots = NULL, *drows = NULL;
    for (int pass = 0; pass < 2; pass++) {
        text_carver cv = {pass ? t->scratch : NULL, 0};
        dslots = text_carve(&cv, (size_t)n * sizeof(int32_t));
        drows = text_carve(&cv, bytes);
        if (!pass) VIDI_TRY(text_scratch(t, cv.off, err));
    }
    VIDI_TRY(op->copy_to_device(be, dslots, h_slots, (size_t)n * sizeof(int32_t), err));
    vidi_tensor tslots = vidi_tensor_1d(VIDI_DTYPE_I32, dslots, n);
    vidi_tensor trows = vidi_tensor_2d(adt, drows, n, cols);
    for (int64_t p = 0; p < 2 * (int64_t)t->cfg.num_layers; p++) {
        vidi_tensor plane = vidi_tensor_2d(adt, (char *)pool->buf + (size_t)p * pool->plane, pool->rows, cols);
        if (out && dev) {
            vidi_tensor to = vidi_tensor_2d(adt, (char *)out + (size_t)p * bytes, n, cols);
            VIDI_TRY(op->gather_rows(be, &plane, &tslots, &to, err));
        } else if (out) {
            VIDI_TRY(op->gather_rows(be, &plane, &tslots, &trows, err));
            VIDI_TRY(op->copy_to_host(be, (char *)out + (size_t)p * bytes, drows, bytes, err));
        } else {
            const char *src = (const char *)in + (size_t)p * bytes;
            VIDI_TRY(dev ? op->copy(be, drows, src, bytes, err) : op->copy_to_device(be, drows, src, bytes, err));
            VIDI_TRY(op->scatter_rows(be, &trows, &tslots, &plane, err));
        }
    }
fail:
    free(h_slots);
    return rc;
}

static vidi_status seq_export(const vidi_kv_seq *s, int64_t start, int64_t n, void *host, size_t host_bytes, int dev,
                              vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_CHECK(s, err, VIDI_ERR_INVALID, "no sequence");
    VIDI_CHECK(start >= 0 && n >= 0 && start <= s->len && n <= s->len - start, err, VIDI_ERR_INVALID,
               "tokens [%lld, %lld + %lld) are not within the sequence's %lld", (long long)start, (long long)start,
               (long long)n, (long long)s->len);
    size_t want = vidi_kv_seq_export_bytes(s->pool, n);
    VIDI_CHECK(host_bytes == want && (host || !n), err, VIDI_ERR_INVALID,
               "the host buffer has %zu bytes%s, %lld tokens take %zu", host_bytes, host ? "" : " (NULL)",
               (long long)n, want);
    if (n > 0) VIDI_TRY(seq_transfer(s, start, n, host, NULL, dev, err));
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "kv export");
    return rc;
}

vidi_status vidi_kv_seq_export(const vidi_kv_seq *s, int64_t start, int64_t n, void *host, size_t host_bytes,
                               vidi_err *err) {
    return seq_export(s, start, n, host, host_bytes, 0, err);
}

vidi_status vidi_kv_seq_export_dev(const vidi_kv_seq *s, int64_t start, int64_t n, void *dev, size_t bytes,
                                   vidi_err *err) {
    return seq_export(s, start, n, dev, bytes, 1, err);
}

static vidi_status seq_import(vidi_kv_seq *s, const void *host, size_t host_bytes, int64_t n, int dev, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    int64_t L0 = s ? s->len : 0, keep = s ? s->n_blocks : 0;
    VIDI_CHECK(s, err, VIDI_ERR_INVALID, "no sequence");
    VIDI_CHECK(n >= 0 && n <= INT32_MAX, err, VIDI_ERR_INVALID, "%lld tokens: must be in [0, 2^31)", (long long)n);
    size_t want = vidi_kv_seq_export_bytes(s->pool, n);
    VIDI_CHECK(host_bytes == want && (host || !n), err, VIDI_ERR_INVALID,
               "the host buffer has %zu bytes%s, %lld tokens take %zu (layers %d, kv heads %d, head dim %d, %s)",
               host_bytes, host ? "" : " (NULL)", (long long)n, want, s->pool->t->cfg.num_layers,
               s->pool->t->cfg.num_kv_heads, s->pool->t->cfg.head_dim, vidi_dtype_name(vidi_kv_pool_dtype(s->pool)));
    if (n == 0) return VIDI_OK;
    VIDI_TRY(seq_reserve(s, L0 + n, err));
    rc = seq_transfer(s, L0, n, NULL, host, dev, err);
    if (rc != VIDI_OK) {
        seq_release(s, keep);
        goto fail;
    }
    s->len = L0 + n;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "kv import (%lld tokens after %lld)", (long long)n, (long long)L0);
    return rc;
}

vidi_status vidi_kv_seq_import(vidi_kv_seq *s, const void *host, size_t host_bytes, int64_t n, vidi_err *err) {
    return seq_import(s, host, host_bytes, n, 0, err);
}

vidi_status vidi_kv_seq_import_dev(vidi_kv_seq *s, const void *dev, size_t bytes, int64_t n, vidi_err *err) {
    return seq_import(s, dev, bytes, n, 1, err);
}
