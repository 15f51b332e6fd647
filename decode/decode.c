/* decode/decode.c — continuous batching over a paged KV pool (decode.h). */
#include "decode/decode.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tensor.h"
#include "model/mrope.h"

typedef struct dec_slot {
    uint64_t tag;
    vidi_kv_seq *seq;
    int32_t pending;         /* sampled, not yet in the KV */
    int n_out;
    int64_t rope_delta;
    uint64_t rng;
    int64_t joined;          /* order of arrival: the youngest is preempted first */
    vidi_decode_params p;
    int32_t *hist;           /* prompt lookup: the context, then the output (pending last) */
    int64_t n_hist, cap_hist;
    vidi_kv_seq *dseq;       /* draft model: its sequence (NULL: none) */
    int64_t drope;           /* its rope_delta */
    int32_t dlag;            /* a token the draft has not seen before `pending` (-1: none) */
    uint64_t drng;           /* the draft's random stream */
    int k;                   /* drafts next step: adapted to what was accepted, 1..spec.k */
} dec_slot;

/* A sequence swapped out to host memory: its slot (seq NULL) and its KV in
 * the hand-off layout of vidi_kv_seq_export. */
typedef struct dec_out {
    dec_slot slot;
    void *kv;
    int64_t len;
    size_t bytes;
} dec_out;

struct vidi_decoder {
    vidi_model *m;
    vidi_kv_pool *pool;
    int cap, n;
    int64_t arrivals;
    double acc_hit, acc_miss;       /* recent drafts: accepted ones, and steps that rejected one (s_k_start) */
    dec_slot *slots;
    dec_out *outs;           /* n_out swapped-out sequences (cap) */
    int n_out;
    uint64_t swap_budget, swap_used;
    vidi_decoder_stats st;
    /* a step's rows (up to the pool's max_batch): a plain sequence has one,
     * a speculative one its pending token and its drafts */
    int rows_max;
    vidi_kv_seq **seqs;
    int32_t *ids, *pos, *tok;       /* tok: the rows' greedy tokens */
    void *logit_buf;                /* backend [rows_max, V] */
    int *order;                     /* [cap]: the slots in row order */
    int *row0;                      /* [cap]: a slot's first row */
    /* speculative decoding */
    vidi_spec_params spec;
    int spec_batch;                 /* speculate while at most this many run (0: always) */
    float *spec_host;               /* [k + 1, V]: one sampled slot's rows */
    double *spec_prob;
    vidi_spec_cand *spec_cand;
    int32_t *spec_draft;            /* [cap, k] */
    int *spec_n;                    /* drafts per running slot this step */
    int *done;                      /* [cap]: the slot left the batch this step */
    /* the draft model (VIDI_SPEC_DRAFT) */
    vidi_model *dm;
    vidi_kv_pool *dpool;
    int d_rows_max;                 /* its pool's max_batch */
    vidi_kv_seq **d_seqs;
    int32_t *d_ids, *d_pos, *d_tok, *d_slot; /* [d_rows_max]: a draft step's rows, their slots */
    void *d_logits;                 /* backend: [d_rows_max, draft V] */
    float *d_host;                  /* [draft V] */
    double *d_q;                    /* [cap, k, V]: sampled slots' draft distributions */
    int *d_fed;                     /* [cap]: tokens a slot's draft took before its first proposal */
    int32_t *c_pos, *c_tok;         /* its chained steps (s_draft_chain): [k, cap, 3] positions, [k, cap] tokens */
    int32_t *c_lag, *c_lpos;        /* [cap] lag tokens, [cap, 3] their positions */
    int *c_steps;                   /* [cap] */
    int64_t *d_len0;                /* [cap]: the draft's length before the step */
    /* drafts that go to the target's step on the device (s_step_deferred) */
    int defer;                      /* this step's chain leaves its tokens on the device */
    int c_B;                        /* the chain's sequences (0: none ran) */
    int32_t *v_offs, *v_pack;       /* [rows_max]: a row's token offset; the rows' tokens per slot */
    int *v_row;                     /* [cap, k]: the target row of a slot's draft j */
    vidi_dev_ids *v_dev;            /* [k] */
    int32_t *v_dtok;                /* backend [k * cap + rows_max]: the chain's drafts, then the rows' argmax */
    int32_t *v_htok;                /* the same on the host: one copy, one wait per step */
};

vidi_status vidi_decoder_create(vidi_model *m, vidi_kv_pool *pool, int max_batch, vidi_decoder **out,
                                vidi_err *err) {
    vidi_status rc = VIDI_OK;
    *out = NULL;
    vidi_decoder *d = calloc(1, sizeof *d);
    VIDI_CHECK(d, err, VIDI_ERR_NOMEM, "decoder: out of memory");
    VIDI_CHECK(max_batch > 0, err, VIDI_ERR_INVALID, "decoder: max_batch %d must be positive", max_batch);
    VIDI_CHECK(max_batch <= vidi_kv_pool_max_batch(pool), err, VIDI_ERR_INVALID,
               "decoder: max_batch %d is above the pool's %d", max_batch, vidi_kv_pool_max_batch(pool));
    d->m = m;
    d->pool = pool;
    d->cap = max_batch;
    d->rows_max = vidi_kv_pool_max_batch(pool);
    size_t R = (size_t)d->rows_max;
    d->slots = calloc((size_t)max_batch, sizeof *d->slots);
    d->seqs = calloc(R, sizeof *d->seqs);
    d->ids = calloc(R, sizeof *d->ids);
    d->pos = calloc(R * 3, sizeof *d->pos);
    d->tok = calloc(R, sizeof *d->tok);
    d->order = calloc((size_t)max_batch, sizeof *d->order);
    d->row0 = calloc((size_t)max_batch, sizeof *d->row0);
    d->outs = calloc((size_t)max_batch, sizeof *d->outs);
    d->done = calloc((size_t)max_batch, sizeof *d->done);
    vidi_backend *be = m->be;
    d->logit_buf = be->ops->buf_alloc(be, R * (size_t)m->cfg.text.vocab_size * vidi_dtype_size(be->act_dtype));
    VIDI_CHECK(d->slots && d->seqs && d->ids && d->pos && d->tok && d->order && d->row0 && d->outs && d->done &&
                   d->logit_buf, err, VIDI_ERR_NOMEM, "decoder: out of memory for a batch of %d", max_batch);
    *out = d;
    return VIDI_OK;
fail:
    vidi_decoder_free(d);
    return rc;
}

static void s_spec_free(vidi_decoder *d) {
    free(d->spec_host);
    free(d->spec_prob);
    free(d->spec_cand);
    free(d->spec_draft);
    free(d->spec_n);
    if (d->dm && d->d_logits) d->dm->be->ops->buf_free(d->dm->be, d->d_logits);
    free(d->d_seqs);
    free(d->d_ids);
    free(d->d_pos);
    free(d->d_tok);
    free(d->d_slot);
    free(d->d_host);
    free(d->d_q);
    free(d->d_fed);
    free(d->d_len0);
    free(d->c_pos);
    free(d->c_tok);
    free(d->c_steps);
    free(d->c_lag);
    free(d->c_lpos);
    d->c_lag = d->c_lpos = NULL;
    free(d->v_offs);
    free(d->v_pack);
    free(d->v_row);
    free(d->v_dev);
    if (d->v_dtok) d->m->be->ops->buf_free(d->m->be, d->v_dtok);
    free(d->v_htok);
    d->v_offs = d->v_pack = NULL, d->v_row = NULL, d->v_dev = NULL, d->v_dtok = d->v_htok = NULL;
    d->d_fed = NULL, d->d_len0 = NULL, d->c_pos = d->c_tok = NULL, d->c_steps = NULL;
    d->d_logits = NULL, d->d_host = NULL, d->d_q = NULL, d->d_seqs = NULL;
    d->d_ids = d->d_pos = d->d_tok = d->d_slot = NULL;
    d->spec_host = NULL, d->spec_prob = NULL, d->spec_cand = NULL, d->spec_draft = NULL, d->spec_n = NULL;
}

void vidi_decoder_free(vidi_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++)
        vidi_kv_seq_free(d->slots[i].seq), free(d->slots[i].hist), vidi_kv_seq_free(d->slots[i].dseq);
    for (int i = 0; i < d->n_out; i++)
        free(d->outs[i].kv), free(d->outs[i].slot.hist), vidi_kv_seq_free(d->outs[i].slot.dseq);
    s_spec_free(d);
    free(d->done);
    free(d->outs);
    if (d->logit_buf) d->m->be->ops->buf_free(d->m->be, d->logit_buf);
    free(d->slots);
    free(d->seqs);
    free(d->ids);
    free(d->pos);
    free(d->tok);
    free(d->order);
    free(d->row0);
    free(d);
}

vidi_decode_state vidi_decode_check(const vidi_model_config *cfg, const vidi_decode_params *p, int32_t token,
                                    int n_out) {
    if (p->stop_at_eos)
        for (int i = 0; i < cfg->n_eos; i++)
            if (cfg->eos_token_ids[i] == token) return VIDI_DECODE_STOP;
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] == token) return VIDI_DECODE_STOP;
    return n_out >= p->max_tokens ? VIDI_DECODE_LENGTH : VIDI_DECODE_RUNNING;
}

/* Append n tokens to a slot's history (best effort: prompt lookup only
 * proposes less when memory is short). */
static void s_hist_push(dec_slot *s, const int32_t *t, int64_t n) {
    if (s->n_hist + n > s->cap_hist) {
        int64_t c = s->cap_hist ? s->cap_hist : 64;
        while (c < s->n_hist + n) c *= 2;
        int32_t *h = realloc(s->hist, (size_t)c * sizeof *h);
        if (!h) return;
        s->hist = h, s->cap_hist = c;
    }
    memcpy(s->hist + s->n_hist, t, (size_t)n * sizeof *t);
    s->n_hist += n;
}

/* The k a new sequence starts with: the longest draft (up to the
 * configured k) that the recent per-token acceptance a would accept whole
 * at least half the time (a^k >= 1/2; the chance of a whole draft when
 * each token is accepted with probability a); 1 until 8 drafts and misses are
 * on record, and for a poor draft. */
static int s_k_start(const vidi_decoder *d) {
    if (d->spec.mode == VIDI_SPEC_OFF || d->acc_hit + d->acc_miss < 8) return 1;
    double a = d->acc_hit / (d->acc_hit + d->acc_miss), p = a;
    int k = 1;
    while (k < d->spec.k && (p *= a) >= 0.5) k++;
    return k;
}

vidi_status vidi_decoder_add(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int32_t last_token, int n_out,
                             int64_t rope_delta, uint64_t rng, const vidi_decode_params *p, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_CHECK(p->n_stop_ids >= 0 && p->n_stop_ids <= VIDI_DECODE_MAX_STOP_IDS && p->max_tokens > 0, err,
               VIDI_ERR_INVALID, "decoder: bad parameters");
    VIDI_CHECK(vidi_decode_check(&d->m->cfg, p, last_token, n_out) == VIDI_DECODE_RUNNING, err, VIDI_ERR_INVALID,
               "decoder: the sequence is already done");
    VIDI_CHECK(d->n + d->n_out < d->cap, err, VIDI_ERR_RANGE, "decoder: the batch is full (%d sequences)", d->cap);
    dec_slot *s = &d->slots[d->n++];
    s->tag = tag;
    s->seq = seq;
    s->pending = last_token;
    s->n_out = n_out;
    s->rope_delta = rope_delta;
    s->rng = rng;
    s->joined = d->arrivals++;
    s->p = *p;
    s->hist = NULL, s->n_hist = s->cap_hist = 0;
    s->dseq = NULL, s->dlag = -1, s->drope = 0, s->drng = rng ^ 0x9e3779b97f4a7c15ull;
    s->k = s_k_start(d); /* then follows the sequence's own acceptance */
    s_hist_push(s, &last_token, 1);
    return VIDI_OK;
fail:
    vidi_kv_seq_free(seq);
    return rc;
}

int vidi_decoder_running(const vidi_decoder *d) { return d->n + d->n_out; }
int vidi_decoder_capacity(const vidi_decoder *d) { return d->cap; }

void vidi_decoder_set_swap(vidi_decoder *d, uint64_t host_bytes) { d->swap_budget = host_bytes; }

vidi_status vidi_decoder_set_spec(vidi_decoder *d, const vidi_spec_params *p, vidi_err *err) {
    vidi_status rc = vidi_spec_params_check(p, err);
    if (rc) return rc;
    s_spec_free(d);
    d->spec = *p;
    if (p->mode == VIDI_SPEC_OFF) return VIDI_OK;
    size_t rows = (size_t)p->k + 1, V = (size_t)d->m->cfg.text.vocab_size;
    d->spec_host = malloc(rows * V * sizeof *d->spec_host);
    d->spec_prob = malloc(V * sizeof *d->spec_prob);
    d->spec_cand = malloc(V * sizeof *d->spec_cand);
    d->spec_draft = malloc((size_t)d->cap * (size_t)p->k * sizeof *d->spec_draft);
    d->spec_n = calloc((size_t)d->cap, sizeof *d->spec_n);
    if (!d->spec_host || !d->spec_prob || !d->spec_cand || !d->spec_draft || !d->spec_n) {
        s_spec_free(d);
        d->spec.mode = VIDI_SPEC_OFF;
        return vidi_err_set(err, VIDI_ERR_NOMEM, "decoder: out of memory for speculative decoding (k %d)", p->k);
    }
    return VIDI_OK;
}

vidi_status vidi_decoder_add_context(vidi_decoder *d, uint64_t tag, const int32_t *ids, int64_t n, vidi_err *err) {
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        if (s->tag != tag) continue;
        int32_t *h = malloc((size_t)(n + s->n_hist + 1) * sizeof *h);
        if (!h) return vidi_err_set(err, VIDI_ERR_NOMEM, "decoder: out of memory for a context of %lld", (long long)n);
        memcpy(h, ids, (size_t)n * sizeof *h);
        memcpy(h + n, s->hist, (size_t)s->n_hist * sizeof *h);
        free(s->hist);
        s->cap_hist = n + s->n_hist + 1;
        s->hist = h, s->n_hist += n;
        return VIDI_OK;
    }
    return vidi_err_set(err, VIDI_ERR_NOTFOUND, "decoder: no running sequence %llu", (unsigned long long)tag);
}

vidi_status vidi_decoder_set_draft(vidi_decoder *d, vidi_model *draft, vidi_kv_pool *draft_pool, int k,
                                   vidi_err *err) {
    const vidi_model_config *tc = &d->m->cfg, *dc = &draft->cfg;
    vidi_status rc = vidi_spec_draft_check(tc, dc, err);
    if (rc) return rc;
    vidi_spec_params p = {VIDI_SPEC_DRAFT, k, 1, 1};
    rc = vidi_decoder_set_spec(d, &p, err);
    if (rc) return rc;
    d->dm = draft;
    d->dpool = draft_pool;
    vidi_backend *dbe = draft->be;
    size_t es = vidi_dtype_size(dbe->act_dtype), dv = (size_t)dc->text.vocab_size;
    size_t R = (size_t)(d->d_rows_max = vidi_kv_pool_max_batch(draft_pool));
    d->d_seqs = calloc(R, sizeof *d->d_seqs);
    d->d_ids = calloc(R, sizeof *d->d_ids);
    d->d_pos = calloc(3 * R, sizeof *d->d_pos);
    d->d_tok = calloc(R, sizeof *d->d_tok);
    d->d_slot = calloc(R, sizeof *d->d_slot);
    d->d_logits = dbe->ops->buf_alloc(dbe, R * dv * es);
    d->d_host = malloc(dv * sizeof *d->d_host);
    d->d_q = malloc((size_t)d->cap * (size_t)k * (size_t)tc->text.vocab_size * sizeof *d->d_q);
    d->d_fed = calloc((size_t)d->cap, sizeof *d->d_fed);
    d->c_pos = malloc((size_t)k * (size_t)d->cap * 3 * sizeof *d->c_pos);
    d->c_tok = malloc((size_t)k * (size_t)d->cap * sizeof *d->c_tok);
    d->c_steps = malloc((size_t)d->cap * sizeof *d->c_steps);
    d->v_offs = malloc((size_t)d->rows_max * sizeof *d->v_offs);
    d->v_pack = malloc((size_t)d->rows_max * sizeof *d->v_pack);
    d->v_row = malloc((size_t)d->cap * (size_t)k * sizeof *d->v_row);
    d->v_dev = malloc((size_t)k * sizeof *d->v_dev);
    size_t nv = (size_t)k * (size_t)d->cap + (size_t)d->rows_max;
    d->v_dtok = d->m->be->ops->buf_alloc(d->m->be, nv * sizeof(int32_t));
    d->v_htok = malloc(nv * sizeof *d->v_htok);
    d->c_lag = malloc((size_t)d->cap * sizeof *d->c_lag);
    d->c_lpos = malloc((size_t)d->cap * 3 * sizeof *d->c_lpos);
    d->d_len0 = calloc((size_t)d->cap, sizeof *d->d_len0);
    if (!d->d_fed || !d->d_len0 || !d->c_pos || !d->c_lag || !d->c_lpos || !d->v_offs || !d->v_pack || !d->v_row || !d->v_dev || !d->v_dtok || !d->v_htok || !d->c_tok || !d->c_steps || !d->d_seqs || !d->d_ids || !d->d_pos || !d->d_tok || !d->d_slot || !d->d_logits || !d->d_host || !d->d_q) {
        s_spec_free(d);
        d->spec.mode = VIDI_SPEC_OFF;
        return vidi_err_set(err, VIDI_ERR_NOMEM, "decoder: out of memory for the draft model");
    }
    return VIDI_OK;
}

vidi_status vidi_decoder_add_draft(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int64_t rope_delta,
                                   vidi_err *err) {
    return vidi_decoder_add_draft_lag(d, tag, seq, rope_delta, -1, err);
}

vidi_status vidi_decoder_add_draft_lag(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int64_t rope_delta, int32_t lag,
                                       vidi_err *err) {
    if (d->spec.mode != VIDI_SPEC_DRAFT) {
        vidi_kv_seq_free(seq);
        return vidi_err_set(err, VIDI_ERR_INVALID, "decoder: no draft model (vidi_decoder_set_draft)");
    }
    for (int i = 0; i < d->n; i++)
        if (d->slots[i].tag == tag) {
            vidi_kv_seq_free(d->slots[i].dseq);
            d->slots[i].dseq = seq;
            d->slots[i].drope = rope_delta;
            d->slots[i].dlag = lag >= 0 && lag < d->dm->cfg.text.vocab_size ? lag : -1;
            return VIDI_OK;
        }
    vidi_kv_seq_free(seq);
    return vidi_err_set(err, VIDI_ERR_NOTFOUND, "decoder: no running sequence %llu", (unsigned long long)tag);
}

void vidi_decoder_set_spec_batch(vidi_decoder *d, int n) { d->spec_batch = n > 0 ? n : 0; }

int vidi_decoder_max_events(const vidi_decoder *d) {
    return (d->n + d->n_out) * (d->spec.mode == VIDI_SPEC_OFF ? 1 : d->spec.k + 1);
}

vidi_decoder_stats vidi_decoder_get_stats(const vidi_decoder *d) {
    vidi_decoder_stats s = d->st;
    s.swapped_now = d->n_out;
    s.swap_bytes = d->swap_used;
    return s;
}

/* Slot i leaves the batch; its blocks go back (and its history unless it
 * is swapped out: keep_hist). */
static void s_remove_keep(vidi_decoder *d, int i, int keep_hist) {
    vidi_kv_seq_free(d->slots[i].seq);
    if (!keep_hist) free(d->slots[i].hist), vidi_kv_seq_free(d->slots[i].dseq);
    d->slots[i] = d->slots[--d->n];
}

static void s_remove(vidi_decoder *d, int i) { s_remove_keep(d, i, 0); }

static void s_drop_out(vidi_decoder *d, int i) {
    free(d->outs[i].kv);
    free(d->outs[i].slot.hist);
    vidi_kv_seq_free(d->outs[i].slot.dseq);
    d->swap_used -= d->outs[i].bytes;
    d->outs[i] = d->outs[--d->n_out];
}

int vidi_decoder_cancel(vidi_decoder *d, uint64_t tag) {
    for (int i = 0; i < d->n; i++)
        if (d->slots[i].tag == tag) {
            s_remove(d, i);
            return 1;
        }
    for (int i = 0; i < d->n_out; i++)
        if (d->outs[i].slot.tag == tag) {
            s_drop_out(d, i);
            return 1;
        }
    return 0;
}

int vidi_decoder_take(vidi_decoder *d, uint64_t tag, vidi_decoder_taken *out) {
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        if (s->tag != tag) continue;
        *out = (vidi_decoder_taken){.seq = s->seq, .pending = s->pending, .dlag = -1, .n_out = s->n_out,
                                    .rope_delta = s->rope_delta, .rng = s->rng, .drope = s->drope};
        int64_t behind = s->dseq ? vidi_kv_seq_len(s->seq) - vidi_kv_seq_len(s->dseq) : -1;
        if (s->dseq && behind == (s->dlag >= 0)) out->dseq = s->dseq, out->dlag = s->dlag;
        else vidi_kv_seq_free(s->dseq);
        free(s->hist);
        d->slots[i] = d->slots[--d->n];
        return 1;
    }
    return 0;
}

/* Blocks the running sequences need for their next token. */
static int64_t s_need(const vidi_decoder *d) {
    int64_t need = 0;
    for (int i = 0; i < d->n; i++) {
        int64_t len = vidi_kv_seq_len(d->slots[i].seq);
        need += vidi_kv_pool_blocks_for(d->pool, len + 1) - vidi_kv_pool_blocks_for(d->pool, len);
    }
    return need;
}

/* Running sequence i out to host memory (1), or not (0: no budget, or the
 * export failed; it stays as it was). */
static int s_swap_out(vidi_decoder *d, int i) {
    dec_slot *s = &d->slots[i];
    int64_t len = vidi_kv_seq_len(s->seq);
    size_t bytes = vidi_kv_seq_export_bytes(d->pool, len);
    if (!d->swap_budget || d->swap_used + bytes > d->swap_budget) return 0;
    void *kv = malloc(bytes ? bytes : 1);
    vidi_err err = {0};
    if (!kv || vidi_kv_seq_export(s->seq, 0, len, kv, bytes, &err) != VIDI_OK) {
        free(kv);
        return 0;
    }
    dec_out *o = &d->outs[d->n_out++];
    o->slot = *s;
    o->slot.seq = NULL;
    o->kv = kv;
    o->len = len;
    o->bytes = bytes;
    d->swap_used += bytes;
    d->st.swapped_out++;
    s_remove_keep(d, i, 1); /* frees its blocks; the history goes with o->slot */
    return 1;
}

/* The oldest swapped-out sequence back into the batch when its blocks fit
 * next to what the running ones need; 1 when one came back. */
static int s_swap_in(vidi_decoder *d) {
    if (!d->n_out || d->n == d->cap) return 0;
    int o = 0;
    for (int i = 1; i < d->n_out; i++)
        if (d->outs[i].slot.joined < d->outs[o].slot.joined) o = i;
    dec_out *x = &d->outs[o];
    if (s_need(d) + vidi_kv_pool_blocks_for(d->pool, x->len + 1) > vidi_kv_pool_free_blocks(d->pool)) return 0;
    vidi_kv_seq *seq = NULL;
    vidi_err err = {0};
    if (vidi_kv_seq_create(d->pool, &seq, &err) != VIDI_OK ||
        vidi_kv_seq_import(seq, x->kv, x->bytes, x->len, &err) != VIDI_OK) {
        vidi_kv_seq_free(seq);
        return 0;
    }
    dec_slot *s = &d->slots[d->n++];
    *s = x->slot;
    s->seq = seq;
    d->st.swapped_in++;
    x->slot.hist = NULL, x->slot.dseq = NULL; /* they moved into the batch */
    s_drop_out(d, o);
    return 1;
}

static const vidi_sample_params k_argmax = {0.0f, 1, 1.0f};

/* Slot i decodes plainly from now on: its draft sequence goes. */
static void s_drop_draft(vidi_decoder *d, int i) {
    vidi_kv_seq_free(d->slots[i].dseq);
    d->slots[i].dseq = NULL;
    d->spec_n[i] = 0;
}

/* Every slot's greedy drafts chained on the device (vidi_text_decode_chain):
 * step 0 feeds each slot what the draft has not seen (a lagging accepted
 * draft, then the pending token), each later step the step before's argmax
 * without a round trip to the host, one wait at the end; the slots in order
 * of their m, largest first. */
static vidi_status s_draft_chain(vidi_decoder *d) {
    vidi_model *dm = d->dm;
    int B = 0;
    for (int i = 0; i < d->n; i++)
        if (d->spec_n[i] > 0) d->d_slot[B++] = i;
    if (!B) return VIDI_OK;
    for (int a = 1; a < B; a++) /* insertion sort, m descending */
        for (int b = a; b > 0 && d->spec_n[d->d_slot[b]] > d->spec_n[d->d_slot[b - 1]]; b--) {
            int x = d->d_slot[b];
            d->d_slot[b] = d->d_slot[b - 1], d->d_slot[b - 1] = x;
        }
    int n = d->spec_n[d->d_slot[0]], *steps = d->c_steps;
    int32_t *pos = d->c_pos, *tok = d->c_tok;
    vidi_err err = {0};
    for (int b = 0; b < B; b++) {
        dec_slot *s = &d->slots[d->d_slot[b]];
        d->d_seqs[b] = s->dseq;
        d->d_ids[b] = s->pending;
        d->c_lag[b] = s->dlag;
        steps[b] = d->spec_n[d->d_slot[b]];
        int64_t len = vidi_kv_seq_len(s->dseq), has = s->dlag >= 0;
        if (has) vidi_mrope_decode_position(len, s->drope, d->c_lpos + 3 * b);
        for (int j = 0; j < n; j++) vidi_mrope_decode_position(len + has + j, s->drope, pos + 3 * ((size_t)j * B + b));
    }
    vidi_tensor lg = vidi_tensor_2d(dm->be->act_dtype, d->d_logits, d->d_rows_max, dm->cfg.text.vocab_size);
    vidi_status rc = vidi_text_decode_chain(dm->text, d->dpool, B, d->d_seqs, d->c_lag, d->c_lpos, steps, d->d_ids,
                                            pos, &lg, d->defer ? NULL : tok, &err);
    if (d->defer) { /* the tokens stay on the device for the target's step (s_step_deferred) */
        d->c_B = rc == VIDI_OK ? B : 0;
        return rc;
    }
    for (int b = 0; rc == VIDI_OK && b < B; b++) {
        int32_t *dr = d->spec_draft + (size_t)d->d_slot[b] * (size_t)d->spec.k;
        for (int j = 0; j < steps[b]; j++) dr[j] = tok[(size_t)j * B + b];
    }
    return rc;
}

/* The draft model's proposals for every slot with spec_n[i] > 0, in
 * batched steps over its pool (vidi_text_decode_batch, several rows per
 * sequence): step 0 feeds each slot what the draft has not seen (a lagging
 * accepted draft, then the pending token), step j its draft j - 1 (only
 * the slots drafting that far). A step's last row of a slot gives its next
 * draft: greedy slots from one argmax over the step's rows, sampled ones
 * drawn on the host from the warped draft distribution (kept in d_q for
 * verification). A slot the draft cannot serve this step (its pool is
 * short of blocks or rows) drops its draft sequence and decodes plainly
 * from now on; a failed draft step drops every drafting slot's. dfed[i]
 * and dlen0[i]: what step 0 fed and the draft's length before it. */
static void s_draft_all(vidi_decoder *d, int *dfed, int64_t *dlen0) {
    vidi_model *dm = d->dm;
    vidi_backend *dbe = dm->be;
    const int64_t Vt = d->m->cfg.text.vocab_size, Vd = dm->cfg.text.vocab_size;
    const size_t drow = (size_t)Vd * vidi_dtype_size(dbe->act_dtype);
    int64_t spare = vidi_kv_pool_free_blocks(d->dpool);
    int rows0 = 0, M = 0;
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        int m = d->spec_n[i];
        if (!m) continue;
        dfed[i] = s->dlag >= 0 ? 2 : 1;
        dlen0[i] = vidi_kv_seq_len(s->dseq);
        int64_t need = vidi_kv_pool_blocks_for(d->dpool, dlen0[i] + dfed[i] + m - 1) -
                       vidi_kv_pool_blocks_for(d->dpool, dlen0[i]);
        if (need > spare || rows0 + dfed[i] > d->d_rows_max) {
            s_drop_draft(d, i);
            continue;
        }
        spare -= need;
        rows0 += dfed[i];
        if (m > M) M = m;
    }
    vidi_err err = {0};
    int all_greedy = dbe->ops->argmax_rows != NULL;
    for (int i = 0; i < d->n; i++)
        if (d->spec_n[i] && !vidi_spec_greedy(&d->slots[i].p.sample)) all_greedy = 0;
    if (all_greedy) { /* every step chained on the device, one wait */
        if (s_draft_chain(d) != VIDI_OK)
            for (int i = 0; i < d->n; i++)
                if (d->spec_n[i]) s_drop_draft(d, i);
        M = 0;
    }
    for (int j = 0; j < M; j++) {
        int R = 0, any_greedy = 0;
        for (int i = 0; i < d->n; i++) {
            dec_slot *s = &d->slots[i];
            if (d->spec_n[i] <= j) continue;
            const int32_t *dr = d->spec_draft + (size_t)i * (size_t)d->spec.k;
            int32_t in[2];
            int n_in = 0;
            if (j == 0 && s->dlag >= 0) in[n_in++] = s->dlag;
            in[n_in++] = j == 0 ? s->pending : dr[j - 1];
            int64_t len = vidi_kv_seq_len(s->dseq);
            for (int x = 0; x < n_in; x++, R++) {
                d->d_seqs[R] = s->dseq;
                d->d_ids[R] = in[x];
                d->d_slot[R] = i;
                vidi_mrope_decode_position(len + x, s->drope, d->d_pos + 3 * R);
            }
            any_greedy |= vidi_spec_greedy(&s->p.sample);
        }
        vidi_tensor lg = vidi_tensor_2d(dbe->act_dtype, d->d_logits, R, Vd);
        vidi_status rc = vidi_text_decode_batch(dm->text, d->dpool, R, d->d_seqs, d->d_ids, d->d_pos, &lg, 1, &err);
        if (rc == VIDI_OK && any_greedy) rc = dbe->ops->sample(dbe, &lg, &k_argmax, NULL, d->d_tok, &err);
        for (int r = 0; rc == VIDI_OK && r < R; r++) {
            if (r + 1 < R && d->d_slot[r + 1] == d->d_slot[r]) continue; /* the slot's last row */
            int i = d->d_slot[r];
            dec_slot *s = &d->slots[i];
            int32_t *dr = d->spec_draft + (size_t)i * (size_t)d->spec.k;
            if (vidi_spec_greedy(&s->p.sample)) {
                dr[j] = d->d_tok[r];
                continue;
            }
            rc = vidi_download_f32(dbe, d->d_host, (const char *)d->d_logits + (size_t)r * drow, (size_t)Vd, &err);
            if (rc) break;
            double *qj = d->d_q + ((size_t)i * (size_t)d->spec.k + (size_t)j) * (size_t)Vt;
            dr[j] = vidi_spec_draft_token(d->d_host, Vd, &s->p.sample, &s->drng, qj, d->spec_cand);
            for (int64_t x = Vd; x < Vt; x++) qj[x] = 0; /* the target's padding rows: never drafted */
        }
        if (rc != VIDI_OK) {
            for (int i = 0; i < d->n; i++)
                if (d->spec_n[i]) s_drop_draft(d, i);
            return;
        }
    }
    for (int i = 0; i < d->n; i++)
        if (d->spec_n[i]) d->slots[i].dlag = -1;
}

/* The target's step when the draft's chain left its tokens on the device
 * (every slot greedy): rows are every slot's pending token, then draft j of
 * the chain's slots for j = 0, 1, ... (the chain's order, so that step j's
 * tokens are one device copy into the step's ids); the rows' argmax and the
 * drafts come to the host in one copy, one wait. The rows' greedy tokens are then
 * packed per slot (pending, draft 1, ...) into d->tok with row0 and order
 * as the plain path leaves them; *no: the slots. */
static vidi_status s_step_deferred(vidi_decoder *d, int *no, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = d->m->be;
    const int Bc = d->c_B, K = d->spec.k, n = d->spec_n[d->d_slot[0]];
    const int32_t *ctok = vidi_text_chain_tokens(d->dpool);
    int R = 0;
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        d->seqs[R] = s->seq, d->ids[R] = s->pending, d->v_offs[R] = 0;
        vidi_mrope_decode_position(vidi_kv_seq_len(s->seq), s->rope_delta, d->pos + 3 * R);
        d->row0[i] = R++;
    }
    for (int j = 0; j < n; j++) {
        int Bj = 0;
        while (Bj < Bc && d->c_steps[Bj] > j) Bj++;
        d->v_dev[j] = (vidi_dev_ids){R, ctok + (size_t)j * Bc, Bj};
        for (int b = 0; b < Bj; b++) {
            int i = d->d_slot[b];
            dec_slot *s = &d->slots[i];
            d->seqs[R] = s->seq, d->ids[R] = 0, d->v_offs[R] = j + 1;
            vidi_mrope_decode_position(vidi_kv_seq_len(s->seq) + j + 1, s->rope_delta, d->pos + 3 * R);
            d->v_row[(size_t)i * K + j] = R++;
        }
    }
    vidi_tensor logits = vidi_tensor_2d(be->act_dtype, d->logit_buf, R, d->m->cfg.text.vocab_size);
    VIDI_TRY(vidi_text_decode_rows(d->m->text, d->pool, R, d->seqs, d->v_offs, d->ids, d->pos, d->v_dev, n, &logits,
                                   err));
    /* the drafts and the rows' argmax side by side on the device: one copy to the host, one wait */
    const size_t nc = (size_t)n * (size_t)Bc;
    vidi_tensor am = vidi_tensor_1d(VIDI_DTYPE_I32, d->v_dtok + nc, R);
    VIDI_TRY(be->ops->argmax_rows(be, &logits, &am, err));
    VIDI_TRY(be->ops->copy(be, d->v_dtok, ctok, nc * sizeof(int32_t), err));
    VIDI_TRY(be->ops->copy_to_host(be, d->v_htok, d->v_dtok, (nc + (size_t)R) * sizeof(int32_t), err));
    memcpy(d->tok, d->v_htok + nc, (size_t)R * sizeof *d->tok);
    for (int b = 0; b < Bc; b++) {
        int32_t *dr = d->spec_draft + (size_t)d->d_slot[b] * (size_t)K;
        for (int j = 0; j < d->c_steps[b]; j++) dr[j] = d->v_htok[(size_t)j * Bc + b];
    }
    /* pack: slot i's rows at row0[i] .. row0[i] + m */
    int P = 0;
    for (int i = 0; i < d->n; i++) {
        int m = d->spec_n[i];
        d->v_pack[P] = d->tok[d->row0[i]];
        for (int j = 0; j < m; j++) d->v_pack[P + 1 + j] = d->tok[d->v_row[(size_t)i * K + j]];
        d->order[i] = i;
        d->row0[i] = P;
        P += m + 1;
    }
    memcpy(d->tok, d->v_pack, (size_t)P * sizeof *d->tok);
    *no = d->n;
fail:
    return rc;
}

vidi_status vidi_decoder_step(vidi_decoder *d, vidi_decode_event *ev, int *n_ev, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = d->m->be;
    int64_t V = d->m->cfg.text.vocab_size;
    size_t row = (size_t)V * vidi_dtype_size(be->act_dtype);
    *n_ev = 0;
    /* Swapped-out sequences come back first, oldest first, while they fit. */
    while (s_swap_in(d)) {
    }
    /* Preempt the youngest until every sequence has room for its next
     * token: swapped out to host memory while the budget lasts, else
     * dropped for the caller to recompute. */
    while (d->n > 0 && s_need(d) > vidi_kv_pool_free_blocks(d->pool)) {
        int y = 0;
        for (int i = 1; i < d->n; i++)
            if (d->slots[i].joined > d->slots[y].joined) y = i;
        if (s_swap_out(d, y)) continue;
        ev[*n_ev] = (vidi_decode_event){d->slots[y].tag, -1, d->slots[y].n_out, VIDI_DECODE_PREEMPTED};
        (*n_ev)++;
        d->st.preempted++;
        s_remove(d, y);
    }
    /* Nothing runs and the oldest swapped-out one still does not fit: the
     * blocks are held outside the decoder (or it outgrew the pool). Give it
     * up for recomputation so that the caller can make progress. */
    if (d->n == 0 && d->n_out > 0) {
        int o = 0;
        for (int i = 1; i < d->n_out; i++)
            if (d->outs[i].slot.joined < d->outs[o].slot.joined) o = i;
        ev[*n_ev] = (vidi_decode_event){d->outs[o].slot.tag, -1, d->outs[o].slot.n_out, VIDI_DECODE_PREEMPTED};
        (*n_ev)++;
        d->st.preempted++;
        s_drop_out(d, o);
    }
    if (d->n == 0) return VIDI_OK;
    /* drafts: prompt lookup over each sequence's history (or the draft
     * model's, below), while the pool has the blocks for them next to every
     * sequence's next token and the step has rows for them */
    int spec = d->spec.mode != VIDI_SPEC_OFF && (!d->spec_batch || d->n <= d->spec_batch);
    int64_t spare = vidi_kv_pool_free_blocks(d->pool) - s_need(d);
    int rows_left = d->rows_max - d->n;
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        d->done[i] = 0;
        if (!spec) {
            if (s->dseq) vidi_kv_seq_free(s->dseq), s->dseq = NULL; /* it would miss this step's token */
            continue;
        }
        int32_t *dr = d->spec_draft + (size_t)i * (size_t)d->spec.k;
        int kk = s->k >= 1 && s->k <= d->spec.k ? s->k : d->spec.k;
        int m = 0;
        if (d->spec.mode == VIDI_SPEC_DRAFT) m = s->dseq ? kk : 0;
        else m = vidi_spec_ngram_propose(s->hist, s->n_hist, d->spec.min_n, d->spec.max_n, kk, dr);
        if (m > rows_left) m = rows_left;
        int64_t len = vidi_kv_seq_len(s->seq);
        int64_t extra = vidi_kv_pool_blocks_for(d->pool, len + 1 + m) - vidi_kv_pool_blocks_for(d->pool, len + 1);
        if (m > 0 && extra <= spare) spare -= extra, rows_left -= m;
        else m = 0;
        /* a drafting sequence that cannot draft this step would leave the draft behind */
        if (!m && s->dseq) vidi_kv_seq_free(s->dseq), s->dseq = NULL;
        d->spec_n[i] = m;
    }
    /* greedy sequences only, the draft on the target's backend: the draft's
     * tokens go from its chain into the target's step without a wait */
    d->defer = 0, d->c_B = 0;
    if (spec && d->spec.mode == VIDI_SPEC_DRAFT && d->dm->be == be && be->ops->argmax_rows) {
        d->defer = 1;
        for (int i = 0; i < d->n; i++)
            if (!vidi_spec_greedy(&d->slots[i].p.sample)) d->defer = 0;
    }
    if (spec && d->spec.mode == VIDI_SPEC_DRAFT) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        s_draft_all(d, d->d_fed, d->d_len0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        d->st.draft_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    }

    /* one forward over every row: greedy slots first (one argmax over their
     * rows), then the sampled ones */
    int R = 0, Rg = 0, no = 0;
    if (d->defer && d->c_B > 0) {
        VIDI_TRY(s_step_deferred(d, &no, err));
        goto verify;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < d->n; i++) {
            dec_slot *s = &d->slots[i];
            if (vidi_spec_greedy(&s->p.sample) != (pass == 0)) continue;
            int m = spec ? d->spec_n[i] : 0;
            const int32_t *dr = spec ? d->spec_draft + (size_t)i * (size_t)d->spec.k : NULL;
            int64_t len = vidi_kv_seq_len(s->seq);
            d->order[no++] = i;
            d->row0[i] = R;
            for (int j = 0; j <= m; j++, R++) {
                d->seqs[R] = s->seq;
                d->ids[R] = j == 0 ? s->pending : dr[j - 1];
                vidi_mrope_decode_position(len + j, s->rope_delta, d->pos + 3 * R);
            }
        }
        if (pass == 0) Rg = R;
    }
    vidi_tensor logits = vidi_tensor_2d(be->act_dtype, d->logit_buf, R, V);
    VIDI_TRY(vidi_text_decode_batch(d->m->text, d->pool, R, d->seqs, d->ids, d->pos, &logits, 1, err));
    if (Rg) {
        vidi_tensor lg = vidi_tensor_2d(be->act_dtype, d->logit_buf, Rg, V);
        VIDI_TRY(be->ops->sample(be, &lg, &k_argmax, NULL, d->tok, err));
    }
verify:
    for (int o = 0; o < no; o++) {
        int i = d->order[o], r = d->row0[i];
        dec_slot *s = &d->slots[i];
        int m = spec ? d->spec_n[i] : 0, ne;
        const int32_t *dr = spec ? d->spec_draft + (size_t)i * (size_t)d->spec.k : NULL;
        int32_t emit[VIDI_SPEC_MAX_K + 1];
        if (vidi_spec_greedy(&s->p.sample)) {
            ne = vidi_spec_verify_tokens(d->tok + r, dr, m, emit);
        } else if (!m) {
            vidi_tensor one = vidi_tensor_2d(be->act_dtype, (char *)d->logit_buf + (size_t)r * row, 1, V);
            VIDI_TRY(be->ops->sample(be, &one, &s->p.sample, &s->rng, emit, err));
            ne = 1;
        } else {
            const int by_model = d->spec.mode == VIDI_SPEC_DRAFT;
            VIDI_TRY(vidi_download_f32(be, d->spec_host, (const char *)d->logit_buf + (size_t)r * row,
                                       (size_t)(m + 1) * (size_t)V, err));
            const double *q = by_model ? d->d_q + (size_t)i * (size_t)d->spec.k * (size_t)V : NULL;
            ne = vidi_spec_verify(d->spec_host, V, dr, q, m, &s->p.sample, &s->rng, d->spec_prob, d->spec_cand, emit);
        }
        if (m > 0) {
            /* the KV keeps the pending token and the accepted drafts (no copies) */
            VIDI_TRY(vidi_kv_seq_truncate(s->seq, vidi_kv_seq_len(s->seq) - (m + 1) + ne, err));
            if (s->dseq) {
                /* the draft keeps what it was fed and the accepted drafts it has seen; a last accepted
                 * draft it never took goes in first next time */
                int a = ne - 1;
                VIDI_TRY(vidi_kv_seq_truncate(s->dseq, d->d_len0[i] + d->d_fed[i] + (a < m - 1 ? a : m - 1), err));
                if (a == m) s->dlag = dr[m - 1];
            }
            /* k follows acceptance: one more after a fully accepted draft, one fewer
             * when less than half was accepted */
            if (ne - 1 == m && s->k < d->spec.k) s->k++;
            else if (2 * (ne - 1) < m && s->k > 1) s->k--;
            /* per-token acceptance over recent steps: accepted drafts against steps that rejected
             * one (a geometric run's estimate), older ones fading */
            d->acc_hit += ne - 1;
            d->acc_miss += ne - 1 < m;
            if (d->acc_hit + d->acc_miss > 512) d->acc_hit *= 0.5, d->acc_miss *= 0.5;
            d->st.spec_steps++;
            d->st.spec_proposed += (uint64_t)m;
            for (int j = 0; j < m; j++) d->st.spec_proposed_at[j]++;
        }
        for (int j = 0; j < ne; j++) {
            if (j < ne - 1) d->st.spec_accepted++, d->st.spec_accepted_at[j]++; /* none past a stop */
            int32_t tk = emit[j];
            s->pending = tk;
            s->n_out++;
            s_hist_push(s, &tk, 1);
            vidi_decode_state st = vidi_decode_check(&d->m->cfg, &s->p, tk, s->n_out);
            ev[(*n_ev)++] = (vidi_decode_event){s->tag, tk, s->n_out - 1, st};
            d->st.spec_emitted += m > 0; /* tokens delivered by speculative steps (not past a stop) */
            if (st != VIDI_DECODE_RUNNING) {
                d->done[i] = 1;
                break;
            }
        }
    }
    /* the finished leave (from the end, so indices stay valid) */
    for (int i = d->n - 1; i >= 0; i--)
        if (d->done[i]) s_remove(d, i);
fail:
    return rc;
}
